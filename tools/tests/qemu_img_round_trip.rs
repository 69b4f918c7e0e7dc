//! qemu-img against a VDI: `info` shows the VDI's size; a 256 MiB raw image (random
//! bytes with zeroed stretches) converts into a VDI and back out byte for byte; a qcow2
//! image created inside another VDI takes the same data, compares equal to the raw
//! file and checks clean.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::clients::{json_u64, qemu_img, qemu_io_ok};
use support::*;

use std::process::Command;

const IMAGE: u64 = 256 * MIB;

/// Zeroed stretches of the source image: aligned whole objects and a misaligned run.
/// `qemu-img convert` turns them into WRITE_ZEROES (or skips them), so the VDI is
/// dirtied there first: only a real zeroing leaves them zero.
const ZEROED: [(u64, u64); 2] = [(64 * MIB, 8 * MIB), (200 * MIB + 3, MIB + 5)];

/// `qemu-img compare`: exit 0 identical, 1 different, anything else an error.
fn compare_status(args: &[&str]) -> i32 {
    let out = Command::new("qemu-img")
        .arg("compare")
        .args(args)
        .output()
        .unwrap();
    out.status.code().unwrap_or(-1)
}

/// Every "virtual-size" in `qemu-img info --output=json`: the child nodes' first (for
/// an NBD export, the export's length), the image's own last.
fn virtual_sizes(info_json: &str) -> Vec<u64> {
    info_json
        .split("\"virtual-size\":")
        .skip(1)
        .map(json_u64)
        .collect()
}

#[test]
fn qemu_img_round_trip() {
    require("qemu-img");
    require("qemu-io");
    let sheep = Sheep::formatted("qemu-img", &[]);
    sheep.create_vdi("raw", "256M");
    sheep.create_vdi("qcow", "300M");
    let (raw_uri, qcow_uri) = (sheep.uri("raw"), sheep.uri("qcow"));
    let dir = test_dir("qemu-img-files");

    // info: the VDI's virtual size, as the NBD export reports it.
    let info = qemu_img(&["info", "--output=json", "-f", "raw", &raw_uri]);
    assert_eq!(virtual_sizes(&info), [IMAGE, IMAGE], "{info}");
    let info = qemu_img(&["info", "--output=json", "-f", "raw", &qcow_uri]);
    assert_eq!(virtual_sizes(&info), [300 * MIB, 300 * MIB], "{info}");

    let mut data = pattern(0x1a2b, IMAGE as usize);
    for (off, len) in ZEROED {
        data[off as usize..(off + len) as usize].fill(0);
    }
    let src = write_file(dir.path(), "src.raw", &data);
    let src = src.to_str().unwrap();

    // Raw in and out.
    let dirty = ZEROED.map(|(off, len)| format!("write -P 0xee {off} {len}"));
    qemu_io_ok(&raw_uri, &dirty);
    qemu_img(&["convert", "-n", "-f", "raw", "-O", "raw", src, &raw_uri]);
    let out = dir.path().join("out.raw");
    let out_s = out.to_str().unwrap();
    qemu_img(&["convert", "-f", "raw", "-O", "raw", &raw_uri, out_s]);
    assert_file_is(&out, &data);
    assert_eq!(compare_status(&["-f", "raw", "-F", "raw", src, out_s]), 0);
    assert_eq!(
        compare_status(&["-f", "raw", "-F", "raw", &raw_uri, src]),
        0
    );
    // ... and compare does notice one changed byte.
    let mut off_by_one = data.clone();
    off_by_one[(IMAGE / 2) as usize] ^= 1;
    let other = write_file(dir.path(), "other.raw", &off_by_one);
    drop(off_by_one);
    let other = other.to_str().unwrap();
    assert_eq!(
        compare_status(&["-f", "raw", "-F", "raw", &raw_uri, other]),
        1
    );

    // qcow2 inside a VDI.
    let local_qcow = dir.path().join("src.qcow2");
    let local_qcow = local_qcow.to_str().unwrap();
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", src, local_qcow]);
    qemu_img(&["create", "-f", "qcow2", &qcow_uri, "256M"]);
    let info = qemu_img(&["info", "--output=json", "-f", "qcow2", &qcow_uri]);
    // The image is 256 MiB; the VDI under it (the NBD export) stays 300 MiB.
    assert_eq!(virtual_sizes(&info), [300 * MIB, IMAGE], "{info}");
    qemu_img(&[
        "convert", "-n", "-f", "qcow2", "-O", "qcow2", local_qcow, &qcow_uri,
    ]);
    assert_eq!(
        compare_status(&["-f", "qcow2", "-F", "raw", &qcow_uri, src]),
        0
    );
    assert_eq!(
        compare_status(&["-f", "qcow2", "-F", "raw", &qcow_uri, other]),
        1
    );
    let check = qemu_img(&["check", "-f", "qcow2", &qcow_uri]);
    assert!(
        check.contains("No errors were found on the image."),
        "{check}"
    );
    // The raw VDI was not touched by the qcow2 work.
    assert_eq!(
        compare_status(&["-f", "raw", "-F", "raw", &raw_uri, src]),
        0
    );
}
