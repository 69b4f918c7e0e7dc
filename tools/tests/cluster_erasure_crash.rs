//! No write hole: sheep processes are SIGKILLed in the middle of erasure-coded writes
//! (the node serving the writer, which is also the primary of some objects, and plain
//! fragment holders), round after round. The writes mix 64 KiB ones that straddle
//! stripes (read-modify-write of whole stripes) with 4 KiB ones (one data chunk and a
//! parity delta each). After each round every 4 KiB block holds
//! either what it held before the round or what the round wrote (and what qemu-io saw
//! acknowledged is there), `dog vdi check` finds no stripe that cannot be decoded, and
//! once it has repaired, a second check finds every stripe consistent. At the end two
//! more holders die and the degraded reads return the same bytes as the normal ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::clients::qemu_img_read;
use support::*;

use std::process::{Command, Stdio};
use std::time::Duration;

const SIZE: u64 = 32 * MIB;
const BLOCK: usize = 4096;
const WRITE: u64 = 64 * 1024;
const SMALL: u64 = 4096;
const PASSES: usize = 6;

/// The byte every byte of `block` is, or `None` if it is a mix.
fn uniform(block: &[u8]) -> Option<u8> {
    block.iter().all(|&b| b == block[0]).then_some(block[0])
}

#[test]
fn killed_writers_and_holders_leave_old_or_new_blocks_and_consistent_stripes() {
    let mut c = Cluster::formatted("ec-crash", 10, 3, &["-n"]);
    let files = test_dir("ec-crash-files");
    c.nodes[0].dog_ok(&["vdi", "create", "-c", "4:2", "ec", "32M"]);
    let mut blocks = vec![0u8; (SIZE as usize) / BLOCK];
    // (NBD node the writer uses, node killed in the middle of its writes)
    let rounds = [(9, 9), (0, 8), (7, 7), (1, 6)];
    for (r, &(via, victim)) in rounds.iter().enumerate() {
        let fill = 0x10 + r as u8;
        // 64 KiB writes, shifted by a few blocks each round so they straddle stripes
        // and objects: read-modify-write everywhere.
        // Several passes over the VDI, so the kill lands in the middle of the writes.
        let shift = (r as u64 + 1) * 4096 * 3 % WRITE;
        let pass: Vec<u64> = (0..SIZE / WRITE - 1).map(|i| i * WRITE + shift).collect();
        let mut offsets: Vec<u64> = pass
            .iter()
            .cycle()
            .take(PASSES * pass.len())
            .copied()
            .collect();
        let n = offsets.len();
        for i in 0..n {
            offsets.swap(i, (i * 7919 + r * 31) % n);
        }
        // After each large write a 4 KiB one somewhere else.
        let writes: Vec<(u64, u64)> = offsets
            .iter()
            .enumerate()
            .flat_map(|(i, &o)| {
                let small = (i as u64 * 7919 + r as u64 * 104729) % (SIZE / SMALL) * SMALL;
                [(o, WRITE), (small, SMALL)]
            })
            .collect();
        let n = writes.len();
        let mut writer = Command::new("qemu-io");
        writer.args(["-f", "raw"]);
        for (o, len) in &writes {
            writer.args(["-c", &format!("write -P {fill} {o} {len}")]);
        }
        let child = writer
            .arg(c.nodes[via].uri("ec"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500 + 250 * r as u64));
        eprintln!("round {r}: killing node {victim} (the writer uses node {via})");
        c.nodes[victim].kill9();
        let out = child.wait_with_output().unwrap();
        let log = text(&out.stdout);
        // "wrote 4096/4096 bytes at offset 8192"
        let acked: Vec<(u64, u64)> = log
            .lines()
            .filter_map(|l| {
                let (len, o) = l.strip_prefix("wrote ")?.split_once(" bytes at offset ")?;
                let len = len.split_once('/')?.0.parse().ok()?;
                Some((o.trim().parse().unwrap(), len))
            })
            .collect();
        eprintln!("round {r}: {} of {n} writes acknowledged", acked.len());
        // A dead NBD server ends the writer; a dead holder only delays it.
        if victim == via {
            assert!(
                !acked.is_empty() && acked.len() < n,
                "round {r}: the kill did not land in the middle of the writes:\n{}",
                text(&out.stderr)
            );
        } else {
            assert_eq!(
                acked.len(),
                n,
                "round {r}: writes failed:\n{}",
                text(&out.stderr)
            );
        }
        c.wait_members(c.live().count());

        let reader = c.live().next().unwrap();
        let got = qemu_img_read(&reader.uri("ec"), &files.path().join(format!("round{r}")));
        let mut must_be_new = vec![false; blocks.len()];
        for &(o, len) in &acked {
            must_be_new[o as usize / BLOCK..(o + len) as usize / BLOCK].fill(true);
        }
        for (b, block) in got.chunks(BLOCK).enumerate() {
            let v = uniform(block)
                .unwrap_or_else(|| panic!("round {r}: block {b} is a mix of old and new bytes"));
            assert!(
                v == fill || (v == blocks[b] && !must_be_new[b]),
                "round {r}: block {b} reads {v:#x}; before the round {:#x}, the round wrote \
                 {fill:#x} (acknowledged: {})",
                blocks[b],
                must_be_new[b]
            );
            blocks[b] = v;
        }

        let [objects, stripes, _, _, lost, _] = reader.vdi_check("ec");
        assert_eq!((objects, lost), (8, 0), "round {r}: check");
        let [_, _, consistent, repaired, lost, _] = reader.vdi_check("ec");
        assert_eq!(
            (consistent, repaired, lost),
            (stripes, 0, 0),
            "round {r}: a repaired VDI checks clean"
        );
    }

    // Six nodes are left, one per fragment. Reads that must decode (two holders of
    // every stripe gone) return what the normal reads returned.
    let want: Vec<u8> = blocks.iter().flat_map(|&v| [v; BLOCK]).collect();
    for i in [4, 5] {
        c.nodes[i].kill9();
    }
    c.wait_members(4);
    let got = std::panic::catch_unwind(|| {
        qemu_img_read(&c.nodes[0].uri("ec"), &files.path().join("degraded"))
    })
    .unwrap_or_else(|_| {
        let logs: Vec<String> = c.live().map(|s| s.log()).collect();
        panic!("degraded read failed; logs:\n{}", logs.join("\n----\n"))
    });
    assert_bytes_eq("degraded read", &got, &want);
}
