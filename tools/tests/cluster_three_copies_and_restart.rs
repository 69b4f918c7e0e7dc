//! Sheepdog's quick start on six nodes (zones 0..5): 256 MiB of random data written
//! through node 0 into a 3-copy VDI lands as exactly three identical copies per object
//! in three distinct zones (checked through `dog vdi object location`, which asks every
//! node's store), reads back through every node, and survives the whole cluster being
//! shut down and started again, which first waits for every member to come back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::clients::{self, qemu_img_read, qemu_img_write, qemu_io_ok};
use support::*;

use std::collections::HashSet;
use std::time::Duration;

const SIZE: u64 = 256 * MIB;
const OBJECT: u64 = 4 * MIB;

/// One line of `dog vdi object location -r`: ADDR ZONE USED CRC target|misplaced.
struct CopyLine {
    addr: String,
    zone: u32,
    crc: u32,
    placed: bool,
}

fn locations(s: &Sheep, vdi: &str, index: u64) -> Vec<CopyLine> {
    s.dog_ok(&["vdi", "object", "location", "-r", vdi, &index.to_string()])
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 5, "location line {l:?}");
            CopyLine {
                addr: f[0].to_owned(),
                zone: f[1].parse().unwrap(),
                crc: u32::from_str_radix(f[3], 16).unwrap(),
                placed: f[4] == "target",
            }
        })
        .collect()
}

fn check_three_copies(s: &Sheep, data: &[u8]) {
    for index in 0..SIZE / OBJECT {
        let copies = locations(s, "replica", index);
        let at = (index * OBJECT) as usize;
        let want = crc32c::crc32c(&data[at..at + OBJECT as usize]);
        assert_eq!(copies.len(), 3, "object {index}: {} copies", copies.len());
        let zones: HashSet<u32> = copies.iter().map(|c| c.zone).collect();
        assert_eq!(zones.len(), 3, "object {index}: zones {zones:?}");
        for c in &copies {
            assert!(c.placed, "object {index}: copy on {} is misplaced", c.addr);
            assert_eq!(
                c.crc, want,
                "object {index}: the copy on {} differs from what was written",
                c.addr
            );
        }
    }
}

#[test]
fn six_nodes_keep_three_copies_in_three_zones_and_survive_a_restart() {
    require("qemu-img");
    require("qemu-io");
    let mut c = Cluster::formatted("three-copies", 6, 3, &["-n"]);
    let files = test_dir("three-copies-files");
    let n0 = &c.nodes[0];

    // Never silently under-replicated: more copies than zones is refused.
    let out = n0.dog(&["vdi", "create", "-c", "7", "seven", "1G"]);
    assert!(!out.status.success(), "7 copies on 6 zones must fail");
    assert!(
        text(&out.stderr).contains("needs 7 zones but the cluster has 6"),
        "{}",
        text(&out.stderr)
    );
    n0.dog_ok(&["vdi", "create", "-c", "3", "replica", "256M"]);
    let list = n0.dog_ok(&["node", "list", "-r"]);
    assert_eq!(list.lines().count(), 6, "{list}");

    let data = pattern(7, SIZE as usize);
    let src = write_file(files.path(), "src", &data);
    qemu_img_write(&src, &n0.uri("replica"));
    check_three_copies(&c.nodes[2], &data);
    assert_bytes_eq(
        "read through node 5",
        &qemu_img_read(&c.nodes[5].uri("replica"), &files.path().join("n5")),
        &data,
    );

    // Written through one node, the same bytes through every node.
    qemu_io_ok(&c.nodes[3].uri("replica"), &["write -P 0x5a 1048576 65536"]);
    for s in &c.nodes {
        qemu_io_ok(&s.uri("replica"), &["read -P 0x5a 1048576 65536"]);
    }
    let mut data = data;
    data[MIB as usize..(MIB + 65536) as usize].fill(0x5a);

    // The largest VDI opens through every node, also those that hold no copy of its
    // inode: its owner table (16 MiB) is more than one peer frame carries.
    n0.dog_ok(&["vdi", "create", "-c", "3", "huge", "16T"]);
    let last = (16u64 << 40) - 4096;
    qemu_io_ok(
        &c.nodes[1].uri("huge"),
        &[format!("write -P 0x3c {last} 4096")],
    );
    for s in &c.nodes {
        qemu_io_ok(&s.uri("huge"), &[format!("read -P 0x3c {last} 4096")]);
    }
    n0.dog_ok(&["vdi", "delete", "huge"]);

    // Shut the whole cluster down and start it again.
    c.nodes[2].dog_ok(&["cluster", "shutdown"]);
    for s in &mut c.nodes {
        let pid = s.forget();
        assert!(
            wait_exit(pid, Duration::from_secs(30)),
            "sheep {pid} did not stop"
        );
        s.wait_ports_free(Duration::from_secs(10));
    }
    for s in &mut c.nodes[..5] {
        s.launch();
    }
    // Five of six are back: the cluster must wait for the sixth before serving.
    let missing = format!("127.0.0.1:{}", c.nodes[5].port);
    let info = c.nodes[0].dog_ok(&["cluster", "info"]);
    assert!(
        info.contains("Waiting for other nodes") && info.contains(&missing),
        "{info}"
    );
    let refused = c.nodes[1].dog(&["vdi", "list"]);
    assert!(
        !refused.status.success(),
        "vdi list must wait for the sixth node"
    );
    assert!(clients::qemu_io(&c.nodes[1].uri("replica"), &["read 0 4096"]).is_err());

    c.nodes[5].launch();
    c.wait_running();
    let vdis = c.nodes[4].dog_ok(&["vdi", "list", "-r"]);
    assert!(vdis.contains("replica"), "{vdis}");
    check_three_copies(&c.nodes[1], &data);
    assert_bytes_eq(
        "read after restart",
        &qemu_img_read(&c.nodes[1].uri("replica"), &files.path().join("n1")),
        &data,
    );
}
