//! Recovery (auto-healing) with real sheep and fio's verified I/O.
//!
//! - 3 copies: a seventh node joins a loaded six-node cluster while fio reads through
//!   another node; afterwards every object's copies are exactly on its targets (the
//!   new node took its share, the others dropped theirs). A node dies and a second one
//!   dies during the recovery that follows; once it settles every object again has 3
//!   identical copies on distinct zones, and after two more deaths every byte still
//!   reads back. Finally writes go through a gateway during recovery and the gateway
//!   is killed: nothing it acknowledged is lost.
//! - 4:2 on seven nodes: a node dies, recovery rebuilds its fragments on the others
//!   (`dog vdi check` finds every stripe consistent and placed), then two more die and
//!   every byte reads back.
//! - A node that missed writes comes back, catches up, and then serves the newest data
//!   alone when every other holder is gone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::clients::qemu_io_ok;
use support::fio::{assert_clean, fio};
use support::*;

use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(180);

/// fio's verified random writes over the first `size` of `vdi` through `node`.
fn write_verified(files: &std::path::Path, name: &str, node: &Sheep, vdi: &str, size: &str) {
    let size = format!("--size={size}");
    let job = ["--rw=randwrite", "--bs=64k", "--iodepth=16", size.as_str()];
    let (out, report) = fio(files, name, &node.uri(vdi), &job);
    assert_clean(&out, report.get("jobs").at(0), name);
}

/// Reads back and checks what [`write_verified`] wrote, through `node`.
fn verify(files: &std::path::Path, name: &str, node: &Sheep, vdi: &str, size: &str) {
    let size = format!("--size={size}");
    let job = [
        "--rw=randwrite",
        "--bs=64k",
        "--iodepth=16",
        size.as_str(),
        "--verify_only",
    ];
    let (out, report) = fio(files, name, &node.uri(vdi), &job);
    assert_clean(&out, report.get("jobs").at(0), name);
}

/// Every object `0..objects` of a replicated `vdi` has exactly `copies` copies, all on
/// its targets, on distinct zones, with equal contents.
fn assert_fully_placed(node: &Sheep, vdi: &str, objects: u32, copies: usize) {
    for i in 0..objects {
        let loc = node.dog_ok(&["vdi", "object", "location", "-r", vdi, &i.to_string()]);
        let rows: Vec<Vec<&str>> = loc
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        let targets: Vec<&Vec<&str>> = rows.iter().filter(|r| r[4] == "target").collect();
        assert_eq!(
            (targets.len(), rows.len()),
            (copies, copies),
            "object {i} of {vdi}:\n{loc}"
        );
        let mut zones: Vec<&str> = targets.iter().map(|r| r[1]).collect();
        zones.sort_unstable();
        zones.dedup();
        assert_eq!(zones.len(), copies, "zones of object {i}:\n{loc}");
        assert!(
            targets.iter().all(|r| r[3] == targets[0][3]),
            "copies of object {i} differ:\n{loc}"
        );
    }
}

#[test]
fn three_copies_heal_after_joins_and_deaths() {
    require("fio");
    let mut c = Cluster::formatted("recovery-c3", 6, 3, &["-n"]);
    c.nodes[0].dog_ok(&["vdi", "create", "-c", "3", "replica", "256M"]);
    let files = test_dir("recovery-c3-files");
    let f = files.path();
    write_verified(f, "load", &c.nodes[0], "replica", "96M");

    // A seventh node joins while a client reads through node 1.
    let mut n7 = c.next_node();
    std::thread::scope(|sc| {
        let reader = sc.spawn(|| verify(f, "load", &c.nodes[1], "replica", "96M"));
        std::thread::sleep(Duration::from_millis(300));
        n7.launch();
        reader.join().unwrap();
    });
    c.adopt(n7);
    c.wait_members(7);
    c.wait_recovered(SETTLE);
    assert_fully_placed(&c.nodes[0], "replica", 24, 3);
    eprintln!(
        "dog node info after the join:\n{}",
        c.nodes[0].dog_ok(&["node", "info"])
    );
    let new_addr = format!("127.0.0.1:{} ", c.nodes[6].port);
    let moved = (0..24)
        .filter(|i| {
            let i = i.to_string();
            let loc = c.nodes[0].dog_ok(&["vdi", "object", "location", "-r", "replica", &i]);
            loc.contains(&new_addr)
        })
        .count();
    assert!(moved > 0, "no object moved onto the new node");

    // A node dies; another dies while the recovery that follows runs.
    c.nodes[2].kill9();
    std::thread::sleep(Duration::from_millis(400));
    c.nodes[3].kill9();
    c.wait_recovered(SETTLE);
    assert_fully_placed(&c.nodes[0], "replica", 24, 3);
    verify(f, "load", &c.nodes[1], "replica", "96M");

    // Two more die: every object still has a copy.
    c.nodes[4].kill9();
    c.nodes[5].kill9();
    verify(f, "load", &c.nodes[0], "replica", "96M");

    // The dead come back with old copies; while recovery runs, a client writes new
    // data through node 6, which is killed after fio finished: every acknowledged
    // write is still there, read through another node.
    for i in 2..6 {
        c.nodes[i].launch();
    }
    c.wait_members(7);
    write_verified(f, "second", &c.nodes[6], "replica", "64M");
    c.nodes[6].kill9();
    verify(f, "second", &c.nodes[0], "replica", "64M");
    c.wait_recovered(SETTLE);
    verify(f, "second", &c.nodes[3], "replica", "64M");
    assert_fully_placed(&c.nodes[0], "replica", 24, 3);
    // `dog vdi check` compares every copy: all identical, nothing to repair; `dog
    // cluster check` does so for every VDI.
    let [objects, _, consistent, repaired, lost, unplaced] = c.nodes[1].vdi_check("replica");
    assert_eq!(
        (objects, consistent, repaired, lost, unplaced),
        (24, 24, 0, 0, 0)
    );
    assert_eq!(
        c.nodes[2].dog_ok(&["cluster", "check", "-r"]),
        "replica 24 0 24 0 0 0\n"
    );
}

#[test]
fn erasure_coded_fragments_are_rebuilt() {
    require("fio");
    let mut c = Cluster::formatted("recovery-ec", 7, 3, &["-n"]);
    c.nodes[0].dog_ok(&["vdi", "create", "-c", "4:2", "ec", "128M"]);
    let files = test_dir("recovery-ec-files");
    let f = files.path();
    write_verified(f, "ec", &c.nodes[0], "ec", "64M");
    c.wait_recovered(SETTLE);

    c.nodes[3].kill9();
    c.wait_recovered(SETTLE);
    // Recovery rebuilt what node 3 held: every stripe is whole where it is placed.
    let [objects, stripes, consistent, repaired, lost, unplaced] = c.nodes[0].vdi_check("ec");
    assert_eq!(objects, 16);
    assert_eq!(
        (consistent, repaired, lost, unplaced),
        (stripes, 0, 0, 0),
        "after recovery"
    );
    c.nodes[1].kill9();
    c.nodes[5].kill9();
    verify(f, "ec", &c.nodes[2], "ec", "64M");

    // Below D: one more zone dies, one holding no copy of the inode (so the VDI stays
    // known). With three zones nothing of a 4:2 object can be rebuilt: recovery counts
    // the objects lost and completes, rather than retrying them forever.
    let inode = c.inode_targets("ec");
    let victim = [0, 2, 4, 6]
        .into_iter()
        .find(|i| !inode.contains(i))
        .unwrap_or_else(|| panic!("every live node holds the inode: {inode:?}"));
    c.nodes[victim].kill9();
    c.wait_members(3);
    c.wait_recovered(SETTLE);
    let s = c.live().next().unwrap();
    // IDX ADDR EPOCH STATE DONE TOTAL BYTES LOST
    let rec = s.dog_ok(&["node", "recovery", "-r"]);
    let lost_objects: u64 = rec
        .lines()
        .map(|l| l.split_whitespace().nth(7).unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(lost_objects > 0, "{rec}");
    let info = s.dog_ok(&["cluster", "info"]);
    assert!(info.contains("complete, objects lost on"), "{info}");
    let check = s.dog(&["vdi", "check", "ec"]);
    assert!(
        !check.status.success() && text(&check.stderr).contains("needs at least 4 zones"),
        "{}",
        text(&check.stderr)
    );
}

#[test]
fn a_node_that_missed_writes_catches_up() {
    let mut c = Cluster::formatted("recovery-rejoin", 3, 3, &["-n"]);
    c.nodes[0].dog_ok(&["vdi", "create", "-c", "3", "vm", "64M"]);
    let uri = c.nodes[0].uri("vm");
    qemu_io_ok(&uri, &["write -P 0x11 0 24M"]);
    c.nodes[2].kill9();
    // Written while node 2 is down: it has to catch up on these.
    qemu_io_ok(&uri, &["write -P 0x22 4M 8M", "write -P 0x33 20M 12M"]);
    c.nodes[2].launch();
    c.wait_members(3);
    c.wait_recovered(SETTLE);
    assert!(
        c.nodes[2].log().contains("catching up"),
        "{}",
        c.nodes[2].log()
    );
    // It copied the five objects written while it was away (IDX ADDR EPOCH STATE DONE
    // TOTAL BYTES).
    let rec = c.nodes[0].dog_ok(&["node", "recovery", "-r"]);
    eprintln!("{}", c.nodes[0].dog_ok(&["node", "recovery"]));
    let addr = format!("127.0.0.1:{}", c.nodes[2].port);
    let row: Vec<&str> = rec
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(addr.as_str()))
        .unwrap_or_else(|| panic!("no row for node 2:\n{rec}"))
        .split_whitespace()
        .collect();
    let copied: u64 = row[6].parse().unwrap();
    assert!(copied >= 5 << 22, "node 2 copied {copied} bytes:\n{rec}");
    // Every other holder goes: node 2's copies alone serve the newest data.
    c.nodes[0].kill9();
    c.nodes[1].kill9();
    let only = &c.nodes[2];
    qemu_io_ok(
        &only.uri("vm"),
        &[
            "read -P 0x11 0 4M",
            "read -P 0x22 4M 8M",
            "read -P 0x11 12M 8M",
            "read -P 0x33 20M 12M",
            "read -P 0 32M 32M",
        ],
    );
}
