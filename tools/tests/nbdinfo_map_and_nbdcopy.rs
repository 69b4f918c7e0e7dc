//! libnbd's tools against a VDI: nbdinfo reports the export size; after writes at known
//! ranges and trims, `nbdinfo --map` (base:allocation over structured replies) lists
//! data where the bytes are and hole,zero over never-written and trimmed objects;
//! nbdcopy copies a file into a VDI, the VDI out to a file and one VDI into another,
//! byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::map::{covered, nbdinfo_map, normalize, ranges_of, subtract};
use support::nbd_client::NbdClient;
use support::*;

use std::process::Command;

const OBJ: u64 = 4 * MIB;
const MAP_SIZE: u64 = 64 * MIB;
/// Block-status granularity the test tolerates: a data extent may reach to the 4 KiB
/// blocks around written bytes, no further.
const GRAIN: u64 = 4096;

/// `nbdinfo --map`: (offset, length, type) lines, checked to tile the export.
fn map(uri: &str, size: u64) -> Vec<(u64, u64, u32)> {
    let extents = nbdinfo_map(uri);
    let mut next = 0;
    for e in &extents {
        assert_eq!(e.0, next, "extents must be contiguous: {extents:?}");
        assert!(e.1 > 0, "empty extent: {extents:?}");
        next = e.0 + e.1;
    }
    assert_eq!(next, size, "extents must cover the export: {extents:?}");
    extents
}

/// The whole VDI `name`, through our own client.
fn read_vdi(port: u16, name: &str) -> Vec<u8> {
    let mut c = NbdClient::connect(port, name).unwrap();
    let out = c.read_all().unwrap();
    c.disconnect();
    out
}

#[test]
fn nbdinfo_map_and_nbdcopy() {
    require("nbdinfo");
    require("nbdcopy");
    let sheep = Sheep::formatted("nbdinfo-nbdcopy", &[]);
    sheep.create_vdi("map", "64M");
    let uri = sheep.uri("map");

    // Size, in JSON and plain.
    let json = run(Command::new("nbdinfo").args(["--json", &uri]));
    assert!(
        json.contains(&format!("\"export-size\": {MAP_SIZE},")),
        "{json}"
    );
    let plain = run(Command::new("nbdinfo").args(["--size", &uri]));
    assert_eq!(plain.trim(), MAP_SIZE.to_string());
    // A fresh VDI is one hole.
    assert_eq!(map(&uri, MAP_SIZE), [(0, MAP_SIZE, 3)]);

    let written = [
        (5000, 3000),               // inside object 0
        (OBJ - 100, 200),           // across objects 0 and 1
        (3 * OBJ, OBJ),             // all of object 3: trimmed below
        (5 * OBJ + 12345, 3 * MIB), // object 5
        (9 * OBJ + 65536, 1),       // one byte in object 9
        (10 * OBJ - 1, 1),          // last byte of object 9
    ];
    let trimmed = [
        (3 * OBJ, OBJ),       // a whole object
        (5 * OBJ + MIB, MIB), // the middle of the object 5 data
    ];
    let mut c = NbdClient::connect(sheep.nbd_port, "map").unwrap();
    for (i, &(off, len)) in written.iter().enumerate() {
        c.write(off, &pattern(i as u64 + 1, len as usize)).unwrap();
    }
    for &(off, len) in &trimmed {
        c.trim(off, len)
            .unwrap_or_else(|e| panic!("TRIM {off}+{len}: {e}"));
    }
    c.disconnect();

    let w = normalize(written.iter().map(|&(o, l)| (o, o + l)).collect());
    let t = normalize(trimmed.iter().map(|&(o, l)| (o, o + l)).collect());
    let data = subtract(&w, &t);
    let data_grain = normalize(
        data.iter()
            .map(|&(s, e)| (s / GRAIN * GRAIN, e.div_ceil(GRAIN) * GRAIN))
            .collect(),
    );
    let extents = map(&uri, MAP_SIZE);
    let data_extents = ranges_of(&extents, |t| t & 1 == 0); // not a hole
    let holes = ranges_of(&extents, |t| t == 3);
    for &r in &data {
        assert!(
            covered(&data_extents, r),
            "written {r:?} not listed as data: {extents:?}"
        );
    }
    for &r in &data_extents {
        assert!(
            covered(&data_grain, r),
            "data extent {r:?} where nothing was written: {extents:?}"
        );
    }
    // Never-written objects and the trimmed whole object are hole,zero.
    let touched: Vec<u64> = w
        .iter()
        .flat_map(|&(s, e)| s / OBJ..e.div_ceil(OBJ))
        .collect();
    for obj in (0..MAP_SIZE / OBJ).filter(|o| *o == 3 || !touched.contains(o)) {
        let r = (obj * OBJ, (obj + 1) * OBJ);
        assert!(
            covered(&holes, r),
            "object {obj} is not hole,zero: {extents:?}"
        );
    }
    // The trimmed middle of object 5 is a hole too (sheep frees partial ranges).
    assert!(covered(&holes, t[1]), "trimmed {:?}: {extents:?}", t[1]);

    // nbdcopy: file -> VDI -> file, and VDI -> VDI, over data, zeros and a hole.
    let dir = test_dir("nbdcopy-files");
    let size = 32 * MIB;
    let mut src = pattern(99, size as usize);
    src[(8 * MIB) as usize..(12 * MIB) as usize].fill(0); // a whole object of zeros
    src[(20 * MIB + 3) as usize..(21 * MIB + 7) as usize].fill(0);
    let src_path = write_file(dir.path(), "src.bin", &src);
    sheep.create_vdi("a", "32M");
    sheep.create_vdi("b", "32M");
    // Dirty both VDIs where the source is zero: only a real zeroing leaves zeros there.
    for name in ["a", "b"] {
        let mut c = NbdClient::connect(sheep.nbd_port, name).unwrap();
        c.write(8 * MIB, &[0xee; 4 << 20]).unwrap();
        c.write(20 * MIB, &[0xee; 2 << 20]).unwrap();
        c.write(0, &[0xee; 4096]).unwrap();
        c.disconnect();
    }
    let (a, b) = (sheep.uri("a"), sheep.uri("b"));
    run(Command::new("nbdcopy")
        .arg("--flush")
        .arg(&src_path)
        .arg(&a));
    let out = dir.path().join("out.bin");
    run(Command::new("nbdcopy").arg(&a).arg(&out));
    assert_file_is(&out, &src);
    assert_bytes_eq("VDI a", &read_vdi(sheep.nbd_port, "a"), &src);

    run(Command::new("nbdcopy").args(["--flush", &a, &b]));
    assert_bytes_eq("VDI b", &read_vdi(sheep.nbd_port, "b"), &src);
    let out_b = dir.path().join("out-b.bin");
    run(Command::new("nbdcopy").arg(&b).arg(&out_b));
    assert_file_is(&out_b, &src);
}
