//! Block-status maps as the clients print them (`nbdinfo --map`, `qemu-img map`) and
//! the half-open byte-range arithmetic the tests check them with.

use super::clients::{json_u64, qemu_img};
use super::run;
use std::process::Command;

/// Half-open byte range `(start, end)`.
pub type Range = (u64, u64);

/// `nbdinfo --map URI`: its (offset, length, type) lines, in order. Type bit 0 is
/// NBD_STATE_HOLE, bit 1 NBD_STATE_ZERO.
pub fn nbdinfo_map(uri: &str) -> Vec<(u64, u64, u32)> {
    let text = run(Command::new("nbdinfo").args(["--map", uri]));
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 3, "bad map line {l:?}\n{text}");
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

/// The ranges of the `extents` whose type passes `keep`, sorted and merged.
pub fn ranges_of(extents: &[(u64, u64, u32)], keep: impl Fn(u32) -> bool) -> Vec<Range> {
    normalize(
        extents
            .iter()
            .filter(|e| keep(e.2))
            .map(|e| (e.0, e.0 + e.1))
            .collect(),
    )
}

/// Data ranges, merged, from `qemu-img map --output=json` ("data": true).
pub fn qemu_img_data(uri: &str) -> Vec<Range> {
    let text = qemu_img(&["map", "--output=json", "-f", "raw", uri]);
    let num = |entry: &str, key: &str| -> u64 {
        let at = entry.find(key).unwrap_or_else(|| panic!("{entry}")) + key.len();
        json_u64(&entry[at..])
    };
    normalize(
        text.split('{')
            .skip(1)
            .filter_map(|e| {
                let start = num(e, "\"start\":");
                let len = num(e, "\"length\":");
                e.contains("\"data\": true").then_some((start, start + len))
            })
            .collect(),
    )
}

/// Ranges sorted and merged (overlapping or touching ones become one); empty ones go.
pub fn normalize(mut v: Vec<Range>) -> Vec<Range> {
    v.retain(|r| r.0 < r.1);
    v.sort_unstable();
    let mut out: Vec<Range> = Vec::new();
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// `a` minus `b`.
pub fn subtract(a: &[Range], b: &[Range]) -> Vec<Range> {
    let mut out = Vec::new();
    for &(mut s, e) in a {
        for &(bs, be) in b {
            if be <= s || bs >= e {
                continue;
            }
            if bs > s {
                out.push((s, bs));
            }
            s = s.max(be);
        }
        if s < e {
            out.push((s, e));
        }
    }
    normalize(out)
}

/// Whether every byte of `r` lies in `by`.
pub fn covered(by: &[Range], r: Range) -> bool {
    subtract(&[r], by).is_empty()
}
