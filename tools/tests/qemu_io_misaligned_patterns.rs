//! qemu-io (QEMU's NBD client, extended headers) writes byte patterns at misaligned
//! offsets and lengths from 1 byte to 9 MiB, across 4 MiB object boundaries, over
//! earlier writes (the later one wins), then zeroes (`write -z`, with and without
//! unmap) and discards ranges: every range reads back its pattern or zeros, every
//! neighbour keeps its bytes, and the whole export matches a byte model, checked both
//! with `read -P` and with our own client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::clients::{qemu_io, qemu_io_ok};
use support::nbd_client::NbdClient;
use support::*;

const OBJ: u64 = 4 * MIB;
const SIZE: u64 = 48 * MIB;

#[derive(Clone, Copy, Debug)]
enum Op {
    Write {
        off: u64,
        len: u64,
        pat: u8,
    },
    /// `write -z`: NBD_CMD_WRITE_ZEROES, with NO_HOLE unless `unmap`.
    Zero {
        off: u64,
        len: u64,
        unmap: bool,
    },
    /// NBD_CMD_TRIM. The spec leaves trimmed contents unspecified; sheep promises
    /// zeros (`BlockExport::trim`), and that is what is checked.
    Discard {
        off: u64,
        len: u64,
    },
}

impl Op {
    fn range(self) -> (u64, u64) {
        match self {
            Op::Write { off, len, .. } | Op::Zero { off, len, .. } | Op::Discard { off, len } => {
                (off, len)
            }
        }
    }

    fn command(self) -> String {
        match self {
            Op::Write { off, len, pat } => format!("write -P {pat:#04x} {off} {len}"),
            Op::Zero { off, len, unmap } => {
                format!("write -z{} {off} {len}", if unmap { " -u" } else { "" })
            }
            Op::Discard { off, len } => format!("discard {off} {len}"),
        }
    }

    fn apply(self, model: &mut [u8]) {
        let (off, len) = self.range();
        let fill = match self {
            Op::Write { pat, .. } => pat,
            _ => 0,
        };
        model[off as usize..(off + len) as usize].fill(fill);
    }
}

/// `read -P` commands for the runs of equal bytes in `model[from..to]`.
fn verify_cmds(model: &[u8], from: u64, to: u64) -> Vec<String> {
    let mut cmds = Vec::new();
    let mut start = from as usize;
    while start < to as usize {
        let b = model[start];
        let end = model[start..to as usize]
            .iter()
            .position(|&x| x != b)
            .map_or(to as usize, |n| start + n);
        cmds.push(format!("read -P {b:#04x} {start} {}", end - start));
        start = end;
    }
    cmds
}

/// Runs `ops` in one qemu-io connection, each followed by a `read -P` of its range and
/// of the runs on either side of it (up to 64 KiB each way), as the model says.
fn run_ops(uri: &str, model: &mut [u8], ops: &[Op]) {
    let mut cmds = Vec::new();
    for &op in ops {
        op.apply(model);
        let (off, len) = op.range();
        cmds.push(op.command());
        let from = off.saturating_sub(64 << 10);
        let to = (off + len + (64 << 10)).min(SIZE);
        cmds.extend(verify_cmds(model, from, to));
    }
    qemu_io_ok(uri, &cmds);
}

/// Checks the test's own layout: a zeroed or discarded range must have data on both
/// sides, or "the neighbours keep their bytes" would check nothing.
fn assert_data_around(model: &[u8], ops: &[Op]) {
    for &op in ops {
        let (off, len) = op.range();
        let (before, after) = (off as usize - 1, (off + len) as usize);
        assert!(
            model[before] != 0 && model[after] != 0,
            "test layout: {op:?} must have written neighbours ({:#x}, {:#x})",
            model[before],
            model[after]
        );
    }
}

fn verify_all(uri: &str, model: &[u8]) {
    qemu_io_ok(uri, &verify_cmds(model, 0, SIZE));
}

#[test]
fn qemu_io_misaligned_patterns() {
    require("qemu-io");
    let sheep = Sheep::formatted("qemu-io-patterns", &[]);
    sheep.create_vdi("pat", "48M");
    let uri = sheep.uri("pat");
    let mut model = vec![0u8; SIZE as usize];

    // The checker itself: a wrong pattern must be caught (qemu-io prints "Pattern
    // verification failed"; this version also exits 1, older ones exit 0).
    // Object 11 is written later only at its last byte.
    let probe = 46 * MIB + 1;
    qemu_io_ok(&uri, &[format!("write -P 0x5a {probe} 1000")]);
    qemu_io_ok(&uri, &[format!("read -P 0x5a {probe} 1000")]);
    let wrong = qemu_io(&uri, &[format!("read -P 0x5b {probe} 1000")])
        .expect_err("a wrong pattern must fail the check");
    assert!(wrong.contains("Pattern verification failed"), "{wrong}");
    let one_off = qemu_io(&uri, &[format!("read -P 0x5a {} 1000", probe - 1)])
        .expect_err("one never-written byte in the range must fail the check");
    assert!(one_off.contains("Pattern verification failed"), "{one_off}");
    qemu_io_ok(&uri, &[format!("discard {probe} 1000")]);

    // 1. Misaligned writes into never-written objects, 1 byte to 9 MiB.
    let w = |off, len, pat| Op::Write { off, len, pat };
    let fresh = [
        w(1, 1, 0x01),
        w(513, 511, 0x02),
        w(4095, 4098, 0x03),
        w(65537, MIB + 3, 0x04),
        w(2 * MIB + 7, 2 * MIB - 13, 0x05),
        w(OBJ - 1, 2, 0x06), // one byte either side of the first boundary
        w(OBJ + 4097, OBJ - 8193, 0x07),
        w(2 * OBJ - 1, 4097, 0x08),
        w(2 * OBJ + 65535, 7, 0x09),
        w(3 * OBJ - 1, 9 * MIB, 0x0a), // 12582911: spans objects 2..=5
        w(6 * OBJ - 1, OBJ + 2, 0x0b), // crosses two boundaries
        w(8 * OBJ - 3, 3, 0x0c),       // ends exactly on a boundary
        w(11 * OBJ - 1, 2, 0x0d),
        w(SIZE - 1, 1, 0x0e), // the export's last byte
    ];
    run_ops(&uri, &mut model, &fresh);
    verify_all(&uri, &model);

    // 2. Overlapping writes: the later pattern wins, byte for byte.
    let overlapping = [
        w(OBJ - 304, 1000, 0x21),
        w(OBJ - 4, 10, 0x22),
        w(OBJ - 1, 1, 0x23),
        w(4 * OBJ - 100, 200, 0x24),
        w(0, 2 * MIB + 3, 0x25),
        w(1, 1, 0x26),
        w(5 * OBJ - 5, 5 * MIB + 10, 0x27),
        w(26 * MIB, 18 * MIB + 5, 0x28),
        w(30 * MIB + 1, 3, 0x29),
    ];
    run_ops(&uri, &mut model, &overlapping);
    verify_all(&uri, &model);

    // 3. Zeroes: small, across a boundary, spanning whole objects; NO_HOLE and unmap.
    let z = |off, len, unmap| Op::Zero { off, len, unmap };
    let zeroes = [
        z(OBJ - 2, 4, false),
        z(3, 1, false),
        z(3 * OBJ + 1, 8 * MIB, false), // objects 3 and 4, into 5
        z(8 * OBJ - 1, 2 * MIB + 5, true),
        z(5 * MIB + 3, 3 * MIB + 10, true),
    ];
    assert_data_around(&model, &zeroes);
    run_ops(&uri, &mut model, &zeroes);
    verify_all(&uri, &model);

    // 4. Discards: part of an object, whole objects, part+whole+part, one byte.
    let d = |off, len| Op::Discard { off, len };
    let discards = [
        d(2 * OBJ + 92, 1000),
        d(9 * OBJ, 2 * OBJ),      // objects 9 and 10, whole
        d(6 * OBJ - 7, OBJ + 20), // tail of 5, all of 6, head of 7
        d(MIB + 65537, 1),
    ];
    assert_data_around(&model, &discards);
    run_ops(&uri, &mut model, &discards);
    verify_all(&uri, &model);

    // The same bytes through our own client (simple replies), 4 MiB at a time.
    let mut c = NbdClient::connect(sheep.nbd_port, "pat").unwrap();
    assert_eq!(c.size, SIZE);
    let got = c.read_all().unwrap();
    c.disconnect();
    assert_bytes_eq("our client against the model", &got, &model);
}
