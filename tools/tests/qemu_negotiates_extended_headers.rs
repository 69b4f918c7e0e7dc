//! Each client gets the reply style it asks for, and the data does not depend on it:
//! QEMU 10 negotiates extended headers, libnbd 1.14 (nbdinfo, nbdcopy) compact
//! structured replies, our own client simple replies (sheep logs the style at debug
//! level). Bytes written in one style read back identically in the others, block
//! status agrees between BLOCK_STATUS (nbdinfo) and BLOCK_STATUS_EXT (qemu-img map),
//! and its boundaries sit on 512-byte sectors, which qemu-img convert relies on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::clients::{qemu_img_read, qemu_io_ok};
use support::map::{nbdinfo_map, qemu_img_data, ranges_of};
use support::nbd_client::NbdClient;
use support::*;

use std::process::Command;

const SIZE: u64 = 16 * MIB;

/// Reads the "nbd client attached" lines logged since the last call.
struct Attachments<'a> {
    sheep: &'a Sheep,
    seen: usize,
}

impl Attachments<'_> {
    /// Asserts that at least one client attached to `export` since the last call and
    /// that every one of them got `style` and `structured`.
    fn expect(&mut self, who: &str, export: &str, style: &str, structured: bool) {
        let log = self.sheep.log();
        let new = &log[self.seen..];
        self.seen = log.len();
        let lines: Vec<&str> = new
            .lines()
            .filter(|l| l.contains("nbd client attached"))
            .collect();
        assert!(
            !lines.is_empty(),
            "{who}: no 'nbd client attached' line:\n{new}"
        );
        for l in lines {
            assert!(
                l.contains("DEBUG")
                    && l.contains(&format!("export={export} "))
                    && l.contains(&format!("style={style} "))
                    && l.contains(&format!("structured={structured}")),
                "{who}: expected style={style} structured={structured} on {export}, got:\n{l}"
            );
        }
    }
}

#[test]
fn qemu_negotiates_extended_headers() {
    for tool in ["qemu-io", "qemu-img", "nbdinfo", "nbdcopy"] {
        require(tool);
    }
    let sheep = Sheep::start_with_env("extended-headers", &[], &[("COLLIE_LOG", "debug")]);
    sheep.dog_ok(&["cluster", "format", "-c", "1"]);
    sheep.create_vdi("styles", "16M");
    let uri = sheep.uri("styles");
    let mut att = Attachments {
        sheep: &sheep,
        seen: 0,
    };
    let mut model = vec![0u8; SIZE as usize];

    // QEMU writes with extended headers ...
    qemu_io_ok(&uri, &["write -P 0x5a 4193000 2000", "write -P 0x3c 1 513"]);
    att.expect("qemu-io", "styles", "Extended", true);
    model[4_193_000..4_195_000].fill(0x5a);
    model[1..514].fill(0x3c);

    // ... our client reads them with simple replies, and writes its own.
    let mut c = NbdClient::connect(sheep.nbd_port, "styles").unwrap();
    assert_eq!(c.size, SIZE);
    assert_eq!(
        c.read(4_192_999, 2002).unwrap(),
        model[4_192_999..4_195_001]
    );
    assert_eq!(c.read(0, 515).unwrap(), model[..515]);
    let random = pattern(3, 3 * MIB as usize + 7);
    let at = 9 * MIB - 3;
    c.write(at, &random).unwrap();
    model[at as usize..at as usize + random.len()].copy_from_slice(&random);
    c.write(8 * MIB - 100, &[0xc3; 200]).unwrap();
    model[(8 * MIB - 100) as usize..(8 * MIB + 100) as usize].fill(0xc3);
    c.disconnect();
    att.expect("NbdClient", "styles", "Compact", false);

    // QEMU reads our client's bytes with read -P.
    qemu_io_ok(
        &uri,
        &[
            "read -P 0xc3 8388508 200",
            "read -P 0 8388708 1000",
            "read -P 0x5a 4193000 2000",
        ],
    );
    att.expect("qemu-io", "styles", "Extended", true);

    // libnbd reads it all with compact structured replies.
    let dir = test_dir("extended-headers-files");
    let by_libnbd = dir.path().join("libnbd.raw");
    run(Command::new("nbdcopy").arg(&uri).arg(&by_libnbd));
    att.expect("nbdcopy", "styles", "Compact", true);
    assert_bytes_eq("nbdcopy", &std::fs::read(&by_libnbd).unwrap(), &model);

    // Block status in both encodings names the same data ranges, and they cover every
    // written byte ...
    let compact = ranges_of(&nbdinfo_map(&uri), |t| t & 1 == 0); // not a hole
    att.expect("nbdinfo", "styles", "Compact", true);
    let extended = qemu_img_data(&uri);
    att.expect("qemu-img map", "styles", "Extended", true);
    assert_eq!(
        compact, extended,
        "BLOCK_STATUS and BLOCK_STATUS_EXT disagree"
    );
    for (i, &b) in model.iter().enumerate() {
        if b != 0 {
            let i = i as u64;
            assert!(
                compact.iter().any(|&(s, e)| s <= i && i < e),
                "byte {i} holds data but is not in a data extent: {compact:?}"
            );
        }
    }
    // ... and nothing else, to 4 KiB (never-written objects are holes).
    let written = [
        (1, 514),
        (4_193_000, 4_195_000),
        (8 * MIB - 100, 8 * MIB + 100),
    ]
    .into_iter()
    .chain([(at, at + random.len() as u64)]);
    let allowed: Vec<(u64, u64)> = written
        .map(|(s, e)| (s / 4096 * 4096, e.div_ceil(4096) * 4096))
        .collect();
    for &(s, e) in &compact {
        assert!(
            allowed.iter().any(|&(a, b)| a <= s && e <= b),
            "data extent {s}..{e} where nothing was written: {compact:?}"
        );
    }

    // QEMU reads everything back through qemu-img convert, which trusts block status
    // in 512-byte sectors: a zero extent reported at a sector's start zeroes the whole
    // sector. The spec: "The server SHOULD use descriptor lengths that are an integer
    // multiple of 512 bytes where possible (the first and last descriptor of an
    // unaligned query being the most obvious places for an exception)". nbdinfo's
    // query starts at 0, so every boundary it shows should be on a sector.
    let converted = qemu_img_read(&uri, &dir.path().join("qemu.raw"));
    att.expect("qemu-img convert", "styles", "Extended", true);
    let unaligned: Vec<u64> = compact
        .iter()
        .flat_map(|&(s, e)| [s, e])
        .filter(|b| b % 512 != 0 && *b != SIZE)
        .collect();
    assert!(
        unaligned.is_empty() && converted == model,
        "block status boundaries off 512-byte sectors: {unaligned:?}; qemu-img convert: {}",
        first_difference(&converted, &model)
    );
}
