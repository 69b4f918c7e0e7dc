//! Erasure-coded VDIs (2:1, 4:2 and 8:3) beside a 3-copy one in one eleven-node
//! cluster: misaligned qemu-io patterns, a 256 MiB qemu-img convert and compare, and
//! fio's verified random writes, each written through one node and read through
//! another; `dog vdi list` shows the scheme, `dog vdi object location` the fragment
//! holders in order on distinct zones, and `dog vdi check` finds every stripe
//! consistent. Then a 4:2 VDI on six nodes loses two holders of every stripe: every
//! byte still reads back, writes go on, `dog vdi check` repairs what the dead nodes'
//! absence left behind, and the stripes stay consistent once the nodes are back.
//! Last, bit rot: one holder's store is damaged all over, reads decode around it and
//! `dog vdi check` rewrites what it finds damaged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::clients::{qemu_img, qemu_img_read, qemu_img_write, qemu_io_ok};
use support::fio::{assert_clean, fio};
use support::*;

use std::collections::HashSet;
use std::time::Duration;

const OBJECT: u64 = 4 * MIB;

/// Starts 4 KiB sequential writes at QD32 over the first object of `uri` (over and
/// over) and SIGKILLs the client after a second, with writes in flight. Through the
/// object's primary, the writes run in the dying connection itself, not in a peer's
/// request, and are dropped with it.
fn killed_mid_stream(uri: &str) {
    let mut child = std::process::Command::new("fio")
        .args(["--name=killed", "--ioengine=nbd", &format!("--uri={uri}")])
        .args(["--rw=write", "--bs=4k", "--size=4M", "--iodepth=32"])
        // --thread: one process, so the kill takes the job (a forked job would go on).
        .args(["--thread", "--time_based", "--runtime=30"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Runs `f` on a thread of its own; panics naming `what` if it takes longer than
/// `limit` (a hang becomes a failure, not a test that never ends).
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what}: no end after {limit:?}"))
}

/// Misaligned writes that cross chunk, stripe and object boundaries, through `w`, read
/// back through `r` (every other byte of the touched stripes must be intact).
fn misaligned_patterns(w: &str, r: &str) {
    let o = OBJECT;
    let writes = [
        format!("write -P 0x11 0 {}", 3 * MIB),
        "write -P 0x22 4095 2".to_string(),
        format!("write -P 0x33 {} 12345", 64 * 1024 - 7),
        format!("write -P 0x44 {} {}", o - 5000, 10000),
        format!("write -P 0x55 {} 512", 2 * o + 4096 * 3 + 100),
    ];
    qemu_io_ok(w, &writes);
    let reads = [
        "read -P 0x11 0 4095".to_string(),
        "read -P 0x22 4095 2".into(),
        format!("read -P 0x11 4097 {}", 64 * 1024 - 7 - 4097),
        format!("read -P 0x33 {} 12345", 64 * 1024 - 7),
        format!(
            "read -P 0x11 {} {}",
            64 * 1024 - 7 + 12345,
            3 * MIB - (64 * 1024 - 7 + 12345)
        ),
        format!("read -P 0 {} {}", 3 * MIB, o - 5000 - 3 * MIB),
        format!("read -P 0x44 {} {}", o - 5000, 10000),
        format!("read -P 0 {} {}", o + 5000, o - 5000),
        format!("read -P 0 {} {}", 2 * o, 4096 * 3 + 100),
        format!("read -P 0x55 {} 512", 2 * o + 4096 * 3 + 100),
        format!("read -P 0 {} {}", 2 * o + 4096 * 3 + 612, 65536),
    ];
    qemu_io_ok(r, &reads);
}

#[test]
fn erasure_coded_vdis_live_beside_a_replicated_one() {
    require("fio");
    let mut c = Cluster::formatted("ec-vdis", 11, 3, &["-n"]);
    let n0 = &c.nodes[0];
    let files = test_dir("ec-vdis-files");
    let vdis = [
        ("c3", "3"),
        ("ec21", "2:1"),
        ("ec42", "4:2"),
        ("ec83", "8:3"),
    ];
    for (name, copies) in vdis {
        n0.dog_ok(&["vdi", "create", "-c", copies, name, "256M"]);
    }
    let list = n0.dog_ok(&["vdi", "list", "-r"]);
    for (name, copies) in vdis {
        let row = list
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("{name} missing from\n{list}"));
        assert_eq!(
            row.split_whitespace().nth(8),
            Some(copies),
            "copies of {name}: {row}"
        );
    }

    let image = pattern(0xec, 256 * MIB as usize);
    let src = write_file(files.path(), "image", &image);
    for (i, (name, copies)) in vdis.into_iter().enumerate() {
        let (w, r) = (&c.nodes[i + 1], &c.nodes[10 - i]);
        eprintln!("{name} ({copies}): patterns, convert, compare, fio");
        misaligned_patterns(&w.uri(name), &r.uri(name));

        qemu_img_write(&src, &w.uri(name));
        qemu_img(&[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            src.to_str().unwrap(),
            &r.uri(name),
        ]);

        // Verified random writes of mixed sizes through one node, verified again
        // through another.
        let job = [
            "--rw=randwrite",
            "--bsrange=4k-64k",
            "--size=64M",
            "--iodepth=16",
        ];
        let (out, report) = fio(files.path(), name, &w.uri(name), &job);
        assert_clean(&out, report.get("jobs").at(0), name);
        let verify = [
            "--rw=randwrite",
            "--bsrange=4k-64k",
            "--size=64M",
            "--verify_only",
        ];
        let (out, report) = fio(files.path(), name, &r.uri(name), &verify);
        assert_clean(&out, report.get("jobs").at(0), name);
        // Sequential 4 KiB writes, 32 in flight: several writes of one stripe at once,
        // which the primary writes together (ec::write, combining_write). First a
        // client killed in the middle of them (its connection's writes are dropped
        // mid-way), then a verified run over the same stripes, which must not wait on
        // anything the dead client left behind.
        let loc = n0.dog_ok(&["vdi", "object", "location", "-r", name, "0"]);
        let zone: u32 = loc.split_whitespace().nth(1).unwrap().parse().unwrap();
        let primary = c.nodes.iter().find(|n| n.zone == zone).unwrap();
        killed_mid_stream(&primary.uri(name));
        let seq = ["--rw=write", "--bs=4k", "--size=16M", "--iodepth=32"];
        let (out, report) = within(Duration::from_secs(180), "fio after a killed client", {
            let (dir, uri) = (files.path().to_path_buf(), w.uri(name));
            move || fio(&dir, name, &uri, &seq)
        });
        assert_clean(&out, report.get("jobs").at(0), name);
        let verify = ["--rw=write", "--bs=4k", "--size=16M", "--verify_only"];
        let (out, report) = fio(files.path(), name, &r.uri(name), &verify);
        assert_clean(&out, report.get("jobs").at(0), name);
    }

    for (name, copies) in &vdis[1..] {
        let (d, p): (u64, u64) = {
            let (d, p) = copies.split_once(':').unwrap();
            (d.parse().unwrap(), p.parse().unwrap())
        };
        let [objects, stripes, consistent, repaired, lost, unplaced] = n0.vdi_check(name);
        assert_eq!(objects, 64, "{name}: objects");
        assert_eq!(stripes, 64 * OBJECT / (d * 4096), "{name}: stripes");
        assert_eq!(
            (consistent, repaired, lost, unplaced),
            (stripes, 0, 0, 0),
            "{name}: check"
        );
        // The fragment holders, in order, all placed, on d + p distinct zones.
        let loc = n0.dog_ok(&["vdi", "object", "location", "-r", name, "5"]);
        let zones: HashSet<&str> = loc
            .lines()
            .map(|l| {
                assert!(l.ends_with(" target"), "{name}: {l}");
                l.split_whitespace().nth(1).unwrap()
            })
            .collect();
        assert_eq!(
            zones.len() as u64,
            d + p,
            "{name}: zones of object 5\n{loc}"
        );
    }
    // `dog vdi check` of the replicated VDI compares its copies: all identical.
    let [objects, _, consistent, repaired, lost, unplaced] = n0.vdi_check("c3");
    assert!(objects > 0);
    assert_eq!((consistent, repaired, lost, unplaced), (objects, 0, 0, 0));

    // 8:3 data survives three dead zones, and so must its inode: it keeps P + 1 = 4
    // copies. The first three nodes holding it die; the VDI still opens and every
    // byte fio wrote still verifies, through a node that held no copy.
    let holders = c.inode_targets("ec83");
    assert_eq!(holders.len(), 4, "copies of ec83's inode: {holders:?}");
    for &i in &holders[..3] {
        c.nodes[i].kill9();
    }
    c.wait_members(8);
    let r = (0..11).find(|i| !holders.contains(i)).unwrap();
    let verify = [
        "--rw=randwrite",
        "--bsrange=4k-64k",
        "--size=64M",
        "--verify_only",
    ];
    let (out, report) = fio(files.path(), "ec83", &c.nodes[r].uri("ec83"), &verify);
    assert_clean(&out, report.get("jobs").at(0), "ec83");
}

#[test]
fn a_4_2_vdi_reads_every_byte_with_two_holders_dead() {
    let mut c = Cluster::formatted("ec-two-dead", 6, 3, &["-n"]);
    let files = test_dir("ec-two-dead-files");
    c.nodes[0].dog_ok(&["vdi", "create", "-c", "4:2", "ec", "128M"]);
    let mut image = pattern(42, 128 * MIB as usize);
    let src = write_file(files.path(), "image", &image);
    qemu_img_write(&src, &c.nodes[0].uri("ec"));

    // With 6 nodes and 4:2, every node holds a fragment of every object.
    for i in [2, 4] {
        c.nodes[i].kill9();
    }
    c.wait_members(4);
    let compare = |s: &Sheep, file: &std::path::Path| {
        qemu_img(&[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            file.to_str().unwrap(),
            &s.uri("ec"),
        ]);
    };
    compare(&c.nodes[0], &src);
    compare(&c.nodes[5], &src);

    // Writes go on: 4 fragments per stripe (no zone for parity), every one readable.
    let part = pattern(7, 8 * MIB as usize);
    let part_file = write_file(files.path(), "part", &part);
    qemu_io_ok(
        &c.nodes[1].uri("ec"),
        &[format!("write -s {} 0 {}", part_file.display(), part.len())],
    );
    image[..part.len()].copy_from_slice(&part);
    qemu_io_ok(&c.nodes[3].uri("ec"), &["write -P 0x5c 70001 9000"]);
    image[70001..79001].fill(0x5c);
    let src = write_file(files.path(), "image2", &image);
    compare(&c.nodes[5], &src);

    // Objects whose fragments moved with the membership are repaired onto the nodes
    // that hold them now; afterwards every stripe is consistent where it is placed.
    let [objects, stripes, _, _, lost, unplaced] = c.nodes[0].vdi_check("ec");
    assert_eq!((objects, lost), (32, 0));
    assert_eq!(
        unplaced,
        2 * stripes,
        "two fragments of each stripe have no zone"
    );
    let [_, _, consistent, repaired, lost, _] = c.nodes[0].vdi_check("ec");
    assert_eq!((consistent, repaired, lost), (stripes, 0, 0));
    compare(&c.nodes[0], &src);

    // The dead nodes come back having missed writes. Reads through them are right at
    // once (their fragments do not answer for the newest version until recovered), and
    // once recovery has rebuilt their fragments every stripe is consistent and placed.
    for i in [2, 4] {
        c.nodes[i].launch();
    }
    c.wait_members(6);
    compare(&c.nodes[2], &src);
    c.wait_recovered(Duration::from_secs(180));
    let [_, _, consistent, repaired, lost, unplaced] = c.nodes[4].vdi_check("ec");
    assert_eq!((consistent, repaired, lost, unplaced), (stripes, 0, 0, 0));
}

/// Flips one byte every ~16 KiB of every log segment of the store in `dir`, where a
/// sheep keeps its fragments: chunks, headers and vectors alike. Returns the flips made.
fn rot(dir: &std::path::Path, seed: u64) -> usize {
    use std::os::unix::fs::FileExt;
    let mut x = seed | 1;
    let mut flips = 0;
    for p in std::fs::read_dir(dir.join("partitions")).unwrap() {
        for f in std::fs::read_dir(p.unwrap().path()).unwrap() {
            let path = f.unwrap().path();
            if path.extension().is_none_or(|e| e != "log") {
                continue;
            }
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            let len = file.metadata().unwrap().len();
            for _ in 0..len / (16 << 10) {
                // xorshift: positions spread over the whole segment.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = x % len;
                let mut b = [0u8; 1];
                file.read_exact_at(&mut b, at).unwrap();
                b[0] ^= 0x10;
                file.write_all_at(&b, at).unwrap();
                flips += 1;
            }
        }
    }
    flips
}

#[test]
fn rotten_fragments_are_decoded_around_and_repaired() {
    let c = Cluster::formatted("ec-rot", 6, 3, &["-n"]);
    let files = test_dir("ec-rot-files");
    c.nodes[0].dog_ok(&["vdi", "create", "-c", "4:2", "ec", "32M"]);
    let mut image = pattern(11, 32 * MIB as usize);
    qemu_img_write(
        &write_file(files.path(), "image", &image),
        &c.nodes[0].uri("ec"),
    );
    // Small writes as well: their parity slots carry a vector beside the chunk.
    let small: Vec<String> = (0..64u64)
        .map(|i| {
            let o = (i * 7919 % 8192 * 4096) as usize;
            image[o..o + 4096].fill(0x77);
            format!("write -P 0x77 {o} 4096")
        })
        .collect();
    qemu_io_ok(&c.nodes[1].uri("ec"), &small);

    // Node 3 holds a fragment of every object (six nodes, 4:2).
    let flips = rot(&c.nodes[3].dir, 0x5eed);
    assert!(flips > 100, "only {flips} bytes flipped");
    for (i, via) in [0, 3].into_iter().enumerate() {
        let got = qemu_img_read(
            &c.nodes[via].uri("ec"),
            &files.path().join(format!("read{i}")),
        );
        assert_bytes_eq(&format!("read through node {via}"), &got, &image);
    }
    assert!(
        pid_alive(c.nodes[3].pid()),
        "the damaged node must go on running"
    );
    let [objects, stripes, consistent, repaired, lost, _] = c.nodes[0].vdi_check("ec");
    assert_eq!((objects, lost), (8, 0));
    assert!(
        repaired > 0 && consistent + repaired == stripes,
        "check after {flips} flips: {consistent} consistent, {repaired} repaired of {stripes}"
    );
    let [_, _, consistent, repaired, lost, _] = c.nodes[0].vdi_check("ec");
    assert_eq!((consistent, repaired, lost), (stripes, 0, 0));
    let got = qemu_img_read(&c.nodes[3].uri("ec"), &files.path().join("repaired"));
    assert_bytes_eq("read after the repair", &got, &image);
}
