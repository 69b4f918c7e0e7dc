//! Each client gets the reply style it asks for, and the data does not depend on it:
//! QEMU 10 negotiates extended headers, libnbd 1.14 (nbdinfo, nbdcopy) compact
//! structured replies, our own client simple replies (sheep logs the style at debug
//! level). Bytes written in one style read back identically in the others, block
//! status agrees between BLOCK_STATUS (nbdinfo) and BLOCK_STATUS_EXT (qemu-img map),
//! and its boundaries sit on 512-byte sectors, which qemu-img convert relies on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const SIZE: u64 = 16 * MIB;

/// A sheep started with COLLIE_LOG=debug. The fixture's `Sheep` passes no environment;
/// this is the small part of it this test needs (see the report: `Sheep::start_with_env`).
struct DebugSheep {
    dir: PathBuf,
    port: u16,
    nbd_port: u16,
    pid: i32,
    _guard: tempfile::TempDir,
}

impl DebugSheep {
    fn start(name: &str) -> DebugSheep {
        let guard = test_dir(name);
        let dir = guard.path().join("store");
        let (port, nbd_port) = (free_port(), free_port());
        run(Command::new(SHEEP)
            .env("COLLIE_LOG", "debug")
            .args(["-p", &port.to_string(), "--nbd-port", &nbd_port.to_string()])
            .arg(&dir));
        let pid = std::fs::read_to_string(dir.join("sheep.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(pid_alive(pid));
        let s = DebugSheep {
            dir,
            port,
            nbd_port,
            pid,
            _guard: guard,
        };
        s.dog(&["cluster", "format", "-c", "1"]);
        s
    }

    fn dog(&self, args: &[&str]) -> String {
        run(Command::new(DOG)
            .args(args)
            .args(["-p", &self.port.to_string()]))
    }

    fn uri(&self, vdi: &str) -> String {
        format!("nbd://127.0.0.1:{}/{vdi}", self.nbd_port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sheep.log")).unwrap_or_default()
    }
}

impl Drop for DebugSheep {
    fn drop(&mut self) {
        signal(self.pid, libc::SIGKILL);
        wait_exit(self.pid, Duration::from_secs(10));
    }
}

/// Reads the "nbd client attached" lines logged since the last call.
struct Attachments<'a> {
    sheep: &'a DebugSheep,
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

fn qemu_io(uri: &str, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = run(c.arg(uri));
    let done = out
        .lines()
        .filter(|l| l.contains(" bytes at offset "))
        .count();
    assert!(
        !out.to_lowercase().contains("failed") && done == cmds.len(),
        "qemu-io {cmds:?}:\n{out}"
    );
}

/// Data ranges, merged, from `nbdinfo --map` (type bit 0 clear: allocated).
fn nbdinfo_data(uri: &str) -> Vec<(u64, u64)> {
    let text = run(Command::new("nbdinfo").args(["--map", uri]));
    merge(text.lines().filter_map(|l| {
        let f: Vec<u64> = l
            .split_whitespace()
            .take(3)
            .map(|x| x.parse().unwrap())
            .collect();
        (f[2] & 1 == 0).then_some((f[0], f[0] + f[1]))
    }))
}

/// Data ranges, merged, from `qemu-img map --output=json` ("data": true).
fn qemu_img_data(uri: &str) -> Vec<(u64, u64)> {
    let text = run(Command::new("qemu-img").args(["map", "--output=json", "-f", "raw", uri]));
    let num = |entry: &str, key: &str| -> u64 {
        let at = entry.find(key).unwrap_or_else(|| panic!("{entry}")) + key.len();
        entry[at..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    merge(text.split('{').skip(1).filter_map(|e| {
        let start = num(e, "\"start\":");
        let len = num(e, "\"length\":");
        e.contains("\"data\": true").then_some((start, start + len))
    }))
}

/// The first run of differing bytes, for a failure message.
fn first_difference(got: &[u8], want: &[u8]) -> String {
    if got.len() != want.len() {
        return format!("{} bytes, expected {}", got.len(), want.len());
    }
    match (0..got.len()).find(|&i| got[i] != want[i]) {
        None => "identical".into(),
        Some(i) => {
            let end = (i..got.len())
                .find(|&j| got[j] == want[j])
                .unwrap_or(got.len());
            let count = (0..got.len()).filter(|&j| got[j] != want[j]).count();
            format!(
                "{count} bytes differ, first {i}..{end} ({:#04x}, expected {:#04x})",
                got[i], want[i]
            )
        }
    }
}

fn assert_same(who: &str, got: &[u8], want: &[u8]) {
    assert!(got == want, "{who}: {}", first_difference(got, want));
}

fn merge(ranges: impl Iterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if last.1 == s => last.1 = e,
            _ => out.push((s, e)),
        }
    }
    out
}

#[test]
fn qemu_negotiates_extended_headers() {
    for tool in ["qemu-io", "qemu-img", "nbdinfo", "nbdcopy"] {
        require(tool);
    }
    let sheep = DebugSheep::start("extended-headers");
    sheep.dog(&["vdi", "create", "-c", "1", "styles", "16M"]);
    let uri = sheep.uri("styles");
    let mut att = Attachments {
        sheep: &sheep,
        seen: 0,
    };
    let mut model = vec![0u8; SIZE as usize];

    // QEMU writes with extended headers ...
    qemu_io(&uri, &["write -P 0x5a 4193000 2000", "write -P 0x3c 1 513"]);
    att.expect("qemu-io", "styles", "Extended", true);
    model[4_193_000..4_195_000].fill(0x5a);
    model[1..514].fill(0x3c);

    // ... our client reads them with simple replies, and writes its own.
    let mut c = nbd_client::NbdClient::connect(sheep.nbd_port, "styles").unwrap();
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
    qemu_io(
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
    assert_same("nbdcopy", &std::fs::read(&by_libnbd).unwrap(), &model);

    // Block status in both encodings names the same data ranges, and they cover every
    // written byte ...
    let compact = nbdinfo_data(&uri);
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
    let by_qemu = dir.path().join("qemu.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw", &uri])
        .arg(&by_qemu));
    att.expect("qemu-img convert", "styles", "Extended", true);
    let unaligned: Vec<u64> = compact
        .iter()
        .flat_map(|&(s, e)| [s, e])
        .filter(|b| b % 512 != 0 && *b != SIZE)
        .collect();
    let converted = std::fs::read(&by_qemu).unwrap();
    assert!(
        unaligned.is_empty() && converted == model,
        "block status boundaries off 512-byte sectors: {unaligned:?}; qemu-img convert: {}",
        first_difference(&converted, &model)
    );
}
