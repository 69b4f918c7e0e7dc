//! fio's nbd engine (simple replies, 32 requests in flight on one connection) writes
//! 256 MiB of random 4 KiB blocks, then of 512 B..64 KiB blocks mixed with reads, and
//! verifies every block by CRC32C; one corrupted byte in the VDI makes a
//! verify-only rerun fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::fio::{assert_clean, fio};
use support::*;

const SIZE: u64 = 256 * MIB;

#[test]
fn fio_verify_random_writes_qd32() {
    require("fio");
    let sheep = Sheep::formatted("fio-verify", &[]);
    sheep.create_vdi("qd32", "256M");
    sheep.create_vdi("mixed", "256M");
    let dir = test_dir("fio-verify-files");
    let uri = sheep.uri("qd32");
    let job4k = ["--rw=randwrite", "--bs=4k"];

    // 4 KiB random writes, every block once, then every block read and checked.
    let (out, report) = fio(dir.path(), "rand4k", &uri, &job4k);
    let job = report.get("jobs").at(0);
    assert_clean(&out, job, "rand4k");
    assert_eq!(job.get("write").get("io_bytes").u64(), SIZE);
    assert_eq!(job.get("write").get("total_ios").u64(), SIZE / 4096);
    assert_eq!(job.get("read").get("io_bytes").u64(), SIZE, "verify read");

    // Verify-only reruns the same offsets (same seed): clean while the data is intact...
    let verify_only = ["--rw=randwrite", "--bs=4k", "--verify_only"];
    let (out, report) = fio(dir.path(), "rand4k", &uri, &verify_only);
    let job = report.get("jobs").at(0);
    assert_clean(&out, job, "rand4k");
    assert_eq!(job.get("read").get("io_bytes").u64(), SIZE, "verify read");

    // ... and fails once one byte inside one block's data is changed.
    let victim = 100 * MIB;
    let mut c = nbd_client::NbdClient::connect(sheep.nbd_port, "qd32").unwrap();
    let mut block = c.read(victim, 4096).unwrap();
    block[2000] ^= 0x40;
    c.write(victim, &block).unwrap();
    c.disconnect();
    let (out, report) = fio(dir.path(), "rand4k", &uri, &verify_only);
    let job = report.get("jobs").at(0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && job.get("error").u64() != 0,
        "a corrupted block must fail verification ({}):\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains("verify") && stderr.contains(&victim.to_string()),
        "fio must name the corrupted block at {victim}:\n{stderr}"
    );

    // Mixed sizes and directions: 512 B..64 KiB, reads and writes interleaved.
    let (out, report) = fio(
        dir.path(),
        "mixed",
        &sheep.uri("mixed"),
        &["--rw=randrw", "--bsrange=512-64k"],
    );
    let job = report.get("jobs").at(0);
    assert_clean(&out, job, "mixed");
    let written = job.get("write").get("io_bytes").u64();
    assert!(
        written > SIZE / 4 && written < SIZE,
        "wrote {written} bytes"
    );
    // The mixed phase moves SIZE bytes (reads + writes); the verify phase then reads
    // back every written byte, so reads total exactly SIZE.
    assert_eq!(job.get("read").get("io_bytes").u64(), SIZE);
}
