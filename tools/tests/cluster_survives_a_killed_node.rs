//! A 3-copy VDI on six nodes keeps serving while one node is killed with SIGKILL in the
//! middle of fio's verified writes: the others notice within about a second (each polls
//! the membership every 200 ms), the epoch advances and `dog cluster info` shows it,
//! and fio's writes and verify pass without one error. A verify-only rerun through
//! another node then reads every block back, and so does one through the killed node
//! once it is back (it catches up on the writes it missed). `dog node kill` then stops
//! another node cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::fio::{assert_clean, fio};
use support::*;

use std::time::{Duration, Instant};

#[test]
fn killing_a_node_does_not_stop_a_three_copy_vdi() {
    require("fio");
    let mut c = Cluster::formatted("kill-node", 6, 3, &["-n"]);
    c.nodes[0].dog_ok(&["vdi", "create", "-c", "3", "replica", "256M"]);
    let files = test_dir("kill-node-files");
    let epoch = c.epoch(0);
    let uri = c.nodes[0].uri("replica");
    let job = ["--rw=randwrite", "--bs=4k", "--size=128M", "--iodepth=16"];

    // fio writes through node 0 while node 3 dies under it.
    let (result, noticed) = std::thread::scope(|s| {
        let writer = s.spawn(|| fio(files.path(), "during", &uri, &job));
        std::thread::sleep(Duration::from_secs(2));
        let victim = c.nodes[3].pid();
        let killed = Instant::now();
        signal(victim, libc::SIGKILL);
        assert!(wait_exit(victim, Duration::from_secs(10)));
        let end = killed + Duration::from_secs(10);
        while c.epoch(0) == epoch {
            assert!(Instant::now() < end, "node 0 never noticed the dead node");
            std::thread::sleep(Duration::from_millis(20));
        }
        let noticed = killed.elapsed();
        (writer.join().unwrap(), noticed)
    });
    c.nodes[3].forget();
    eprintln!("the death of node 3 was noticed after {noticed:?}");
    let (out, report) = result;
    assert_clean(&out, report.get("jobs").at(0), "during");

    // Every survivor's newest epoch leaves the dead node out.
    let dead = format!("127.0.0.1:{}", c.nodes[3].port);
    for (i, s) in c.nodes.iter().enumerate().filter(|&(i, _)| i != 3) {
        let info = s.dog_ok(&["cluster", "info"]);
        let newest = info
            .lines()
            .find(|l| l.starts_with(char::is_numeric))
            .unwrap_or_else(|| panic!("node {i}: no epoch in\n{info}"));
        assert!(
            !newest.contains(&dead),
            "node {i} still lists {dead}: {newest}"
        );
        assert!(c.epoch(i) > epoch, "node {i}: epoch did not advance");
    }

    // The same blocks, read and checked through another node.
    let verify = ["--rw=randwrite", "--bs=4k", "--size=128M", "--verify_only"];
    let (out, report) = fio(files.path(), "during", &c.nodes[5].uri("replica"), &verify);
    assert_clean(&out, report.get("jobs").at(0), "during");

    // The killed node comes back having missed writes. It joins with its capacity and
    // catches up: each copy placed on it is brought up to date before it serves it.
    c.nodes[3].launch();
    c.wait_members(6);
    let list = c.nodes[0].dog_ok(&["node", "list", "-r"]);
    let row = list.lines().find(|l| l.contains(&dead)).unwrap();
    assert_ne!(
        row.split_whitespace().nth(2),
        Some("0"),
        "vnodes of {dead}: {list}"
    );
    assert!(
        c.nodes[3].log().contains("catching up"),
        "{}",
        c.nodes[3].log()
    );
    let (out, report) = fio(files.path(), "during", &c.nodes[3].uri("replica"), &verify);
    assert_clean(&out, report.get("jobs").at(0), "during");

    // `dog node kill ID` through node 0 stops node 4 cleanly; the others see it go.
    let addr4 = format!("127.0.0.1:{}", c.nodes[4].port);
    let list = c.nodes[0].dog_ok(&["node", "list", "-r"]);
    let id = list
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(addr4.as_str()))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{addr4} not in\n{list}"))
        .to_owned();
    let pid = c.nodes[4].forget();
    c.nodes[0].dog_ok(&["node", "kill", &id]);
    assert!(
        wait_exit(pid, Duration::from_secs(30)),
        "node 4 did not stop"
    );
    assert!(
        c.nodes[4].log().contains("clean shutdown"),
        "{}",
        c.nodes[4].log()
    );
    c.wait_members(5);
}
