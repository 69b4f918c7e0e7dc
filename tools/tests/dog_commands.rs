//! `dog` against one formatted sheep, command by command: `vdi create` (sizes with and
//! without suffixes, bad sizes, duplicates), `vdi list` in Sheepdog's columns and raw,
//! `vdi resize` (grow only), `vdi delete` (data gone too), `vdi write`/`vdi read`
//! through stdin/stdout, `node info`, `cluster info`; then an unformatted sheep, a
//! redundancy wider than the zones, and a port where nobody listens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::nbd_client::NbdClient;
use support::*;

use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

const GIB: u64 = 1 << 30;

/// A failed dog run: `code`, and stderr is `dog: ...` whose first line contains `want`.
/// With `one_line`, stderr is that single line (no usage appended).
fn failed(out: &Output, code: i32, want: &str, one_line: bool) -> String {
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "want exit {code}: stdout {:?} stderr {err:?}",
        text(&out.stdout)
    );
    let first = err.lines().next().unwrap_or_default();
    assert!(first.starts_with("dog: "), "{err:?}");
    assert!(first.contains(want), "want '{want}' in {err:?}");
    if one_line {
        assert_eq!(err.lines().count(), 1, "{err:?}");
    }
    assert!(out.stdout.is_empty(), "{:?}", text(&out.stdout));
    err
}

/// The raw `vdi list -r` line of `name`, split on spaces.
fn raw_row(sheep: &Sheep, name: &str) -> Option<Vec<String>> {
    sheep
        .dog_ok(&["vdi", "list", "-r"])
        .lines()
        .map(|l| l.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .find(|f| f.get(1).map(String::as_str) == Some(name))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn dog_commands() {
    let sheep = Sheep::formatted("dog", &[]);
    let t0 = now();

    // vdi create: suffixed and plain sizes.
    let sizes: &[(&str, &str, u64)] = &[
        ("half", "512M", 512 * MIB),
        ("twenty", "20G", 20 * GIB),
        ("tera", "1T", 1 << 40),
        ("tiny", "4096", 4096),
    ];
    for (name, size, _) in sizes {
        assert_eq!(sheep.dog_ok(&["vdi", "create", "-c", "1", name, size]), "");
    }
    // Without -c: the cluster's default redundancy (1 from `format -c 1`).
    sheep.dog_ok(&["vdi", "create", "plain", "64M"]);

    // Bad sizes: refused by dog's parser (exit 2, message then the usage line) ...
    for bad in ["1.5G", "abc", "12Q", "1GiB", "99999P"] {
        let out = sheep.dog(&["vdi", "create", "bad", bad]);
        let err = failed(&out, 2, "size", false);
        assert!(err.contains(&format!("'{bad}'")), "{err}");
        assert!(err
            .lines()
            .nth(1)
            .unwrap_or_default()
            .starts_with("usage: dog vdi create"));
    }
    // ... or by the sheep (exit 1, one line).
    for bad in ["0", "17T", "16385T"] {
        let out = sheep.dog(&["vdi", "create", "bad", bad]);
        failed(&out, 1, "size", true);
    }
    assert!(
        raw_row(&sheep, "bad").is_none(),
        "a refused create left a VDI"
    );
    // A negative size is an unknown option to dog.
    failed(
        &sheep.dog(&["vdi", "create", "bad", "-1"]),
        2,
        "unknown option '-1'",
        false,
    );

    // Duplicate create fails and leaves the first one as it was.
    let before = raw_row(&sheep, "half").unwrap();
    let out = sheep.dog(&["vdi", "create", "half", "1G"]);
    failed(&out, 1, "vdi 'half' already exists", true);
    assert_eq!(raw_row(&sheep, "half").unwrap(), before);

    // vdi list: Sheepdog's header and one row per VDI.
    let list = sheep.dog_ok(&["vdi", "list"]);
    let mut lines = list.lines();
    let header = lines.next().unwrap();
    let cols = [
        "Name",
        "Id",
        "Size",
        "Used",
        "Shared",
        "Creation time",
        "VDI id",
        "Copies",
        "Tag",
    ];
    let mut at = 0;
    for c in cols {
        let i = header[at..]
            .find(c)
            .unwrap_or_else(|| panic!("column {c} missing or out of order: {header:?}"));
        at += i + c.len();
    }
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 5, "{list}");
    let want_size = [
        ("half", "512 MB"),
        ("twenty", "20 GB"),
        ("tera", "1.0 TB"),
        ("tiny", "0.0 MB"),
        ("plain", "64 MB"),
    ];
    let raw = sheep.dog_ok(&["vdi", "list", "-r"]);
    for (name, size) in want_size {
        let row = rows
            .iter()
            .find(|r| r.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}: {list}"));
        assert!(
            row.starts_with("  "),
            "a working VDI's row starts blank: {row:?}"
        );
        let f: Vec<&str> = row.split_whitespace().collect();
        // name id size unit used unit shared unit date time vid copies
        assert_eq!(f.len(), 12, "{row:?}");
        assert_eq!(f[1], "0", "{row:?}");
        assert_eq!(format!("{} {}", f[2], f[3]), size, "{row:?}");
        assert_eq!(
            format!("{} {}", f[4], f[5]),
            "0.0 MB",
            "nothing written yet: {row:?}"
        );
        assert_eq!(format!("{} {}", f[6], f[7]), "0.0 MB", "{row:?}");
        assert!(
            f[8].len() == 10 && f[8].as_bytes()[4] == b'-' && f[9].len() == 5,
            "creation time as YYYY-MM-DD HH:MM: {row:?}"
        );
        assert_eq!(f[11], "1", "{row:?}");
        // The raw line: "= name snap size used shared ctime vid copies".
        let r = raw_row(&sheep, name).unwrap();
        assert_eq!(r.len(), 9, "{r:?}");
        assert_eq!(r[0], "=");
        assert_eq!(r[2], "0");
        assert_eq!(r[4], "0");
        assert_eq!(r[5], "0");
        let ctime: u64 = r[6].parse().unwrap();
        assert!(ctime >= t0.saturating_sub(5) && ctime <= now() + 5, "{r:?}");
        assert_eq!(r[7].len(), 6, "vid as 6 hex digits: {r:?}");
        assert_eq!(
            u32::from_str_radix(&r[7], 16).unwrap(),
            u32::from_str_radix(f[10], 16).unwrap(),
            "vid differs between list and list -r"
        );
        assert_eq!(r[8], "1");
        assert!(raw.lines().any(|l| l == r.join(" ")));
    }
    for (name, _, bytes) in sizes {
        assert_eq!(
            raw_row(&sheep, name).unwrap()[3],
            bytes.to_string(),
            "{name}"
        );
    }
    // The raw listing has no header; a name filter shows one row (or none).
    assert_eq!(raw.lines().count(), 5, "{raw}");
    assert!(raw.lines().all(|l| l.starts_with("= ")), "{raw}");
    let one = sheep.dog_ok(&["vdi", "list", "tiny"]);
    assert_eq!(one.lines().count(), 2, "{one}");
    assert_eq!(sheep.dog_ok(&["vdi", "list", "-r", "nope"]), "");

    // vdi write from stdin / vdi read to stdout: unaligned, several MiB, crossing the
    // 4, 8 and 12 MiB object boundaries.
    let data = pattern(42, (9 * MIB + 12_345) as usize);
    let off = 3 * MIB + 777;
    let (off_s, len_s) = (off.to_string(), data.len().to_string());
    let out = sheep.dog_with_stdin(&["vdi", "write", "half", &off_s, &len_s], data.clone());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let back = sheep.dog(&["vdi", "read", "half", &off_s, &len_s]);
    assert!(back.status.success(), "{}", text(&back.stderr));
    assert!(
        back.stdout == data,
        "vdi read differs from what vdi write wrote"
    );
    // The same bytes through NBD, and zeros around them.
    let mut c = NbdClient::connect(sheep.nbd_port, "half").unwrap();
    assert_eq!(c.size, 512 * MIB);
    assert!(c.read(off, data.len()).unwrap() == data);
    assert_eq!(c.read(off - 4096, 4096).unwrap(), vec![0u8; 4096]);
    let end = off + data.len() as u64;
    assert_eq!(c.read(end, 5000).unwrap(), vec![0u8; 5000]);
    // And the other way: NBD writes, dog reads (a window cutting through both).
    let nbd_data = pattern(43, 300_000);
    c.write(end - 100_000, &nbd_data).unwrap();
    c.disconnect();
    let win_off = end - 200_000;
    let back = sheep.dog_ok_bytes(&["vdi", "read", "half", &win_off.to_string(), "400000"]);
    let mut want = data[data.len() - 200_000..data.len() - 100_000].to_vec();
    want.extend_from_slice(&nbd_data);
    assert_eq!(want.len(), 400_000);
    assert!(
        back == want,
        "dog read of a window over dog- and NBD-written data"
    );
    // Everything written to 'half' so far, from `off` on.
    let mut half = data[..data.len() - 100_000].to_vec();
    half.extend_from_slice(&nbd_data);
    // Used grew for the written VDI only.
    let used: u64 = raw_row(&sheep, "half").unwrap()[4].parse().unwrap();
    assert!(used > 0, "used stays 0 after writing");
    assert_eq!(raw_row(&sheep, "tiny").unwrap()[4], "0");

    // Without LEN: stdin until EOF / read to the end.
    let tiny = pattern(5, 4096);
    let out = sheep.dog_with_stdin(&["vdi", "write", "tiny"], tiny.clone());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(sheep.dog_ok_bytes(&["vdi", "read", "tiny"]) == tiny);
    assert!(sheep.dog_ok_bytes(&["vdi", "read", "tiny", "4000"]) == tiny[4000..]);
    // Past the end: refused before anything is written.
    let out = sheep.dog_with_stdin(&["vdi", "write", "tiny", "4000", "200"], vec![1; 200]);
    failed(&out, 1, "past the end", true);
    failed(
        &sheep.dog(&["vdi", "read", "tiny", "4097"]),
        1,
        "past the end",
        true,
    );
    assert!(sheep.dog_ok_bytes(&["vdi", "read", "tiny"]) == tiny);
    // Short stdin with an explicit LEN is an error (after writing what came).
    let out = sheep.dog_with_stdin(&["vdi", "write", "tiny", "0", "100"], vec![9; 10]);
    failed(&out, 1, "stdin ended after 10 of 100 bytes", true);
    failed(
        &sheep.dog(&["vdi", "read", "nope"]),
        1,
        "vdi 'nope' not found",
        true,
    );

    // vdi resize: grow works (also for NBD clients), shrink is refused.
    sheep.dog_ok(&["vdi", "resize", "half", "1G"]);
    assert_eq!(raw_row(&sheep, "half").unwrap()[3], GIB.to_string());
    let mut c = NbdClient::connect(sheep.nbd_port, "half").unwrap();
    assert_eq!(c.size, GIB);
    c.write(GIB - 4096, &[7u8; 4096]).unwrap();
    assert!(
        c.read(off, half.len()).unwrap() == half,
        "resize kept the data"
    );
    c.disconnect();
    let out = sheep.dog(&["vdi", "resize", "half", "512M"]);
    failed(&out, 1, "shrinking", true);
    assert_eq!(raw_row(&sheep, "half").unwrap()[3], GIB.to_string());
    failed(
        &sheep.dog(&["vdi", "resize", "nope", "1G"]),
        1,
        "not found",
        true,
    );

    // node info: Sheepdog's sections; the total virtual size is the sum of the VDIs.
    let ni = sheep.dog_ok(&["node", "info"]);
    let mut l = ni.lines();
    assert_eq!(l.next(), Some("Id\tSize\tUsed\tAvail\tUse%"), "{ni}");
    assert!(l.next().unwrap().starts_with(" 0\t"), "{ni}");
    assert!(l.next().unwrap().starts_with("Total\t"), "{ni}");
    assert_eq!(l.next(), Some(""), "{ni}");
    assert!(
        l.next().unwrap().starts_with("Total virtual image size\t"),
        "{ni}"
    );
    let total: u64 = GIB + 20 * GIB + (1 << 40) + 4096 + 64 * MIB;
    let rawni = sheep.dog_ok(&["node", "info", "-r"]);
    let last = rawni.lines().last().unwrap();
    assert!(last.starts_with("Total "), "{rawni}");
    assert_eq!(
        last.rsplit(' ').next(),
        Some(total.to_string().as_str()),
        "{rawni}"
    );
    let node_used: u64 = rawni
        .lines()
        .next()
        .unwrap()
        .split(' ')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        node_used >= data.len() as u64,
        "node used {node_used}: {rawni}"
    );

    // cluster info.
    let ci = sheep.dog_ok(&["cluster", "info"]);
    assert!(ci.starts_with("Cluster status: running\n"), "{ci}");
    assert!(ci.contains("Cluster default redundancy: 1\n"), "{ci}");
    assert!(ci.contains("\nCluster created at "), "{ci}");
    assert!(
        ci.contains("Epoch Time           Version [Host:Port:V-Nodes,,,]\n"),
        "{ci}"
    );
    assert!(
        ci.contains(&format!(
            "[127.0.0.1:{}:{}]",
            sheep.port,
            collie_tools::dogcli::VNODES
        )),
        "{ci}"
    );
    let ci_raw = sheep.dog_ok(&["cluster", "info", "-r"]);
    assert!(ci_raw.starts_with("running\n"), "{ci_raw}");
    let epoch_line: Vec<&str> = ci_raw.lines().nth(1).unwrap().split(' ').collect();
    let ctime: u64 = epoch_line[0].parse().unwrap();
    assert!(
        ctime >= t0.saturating_sub(60) && ctime <= now() + 5,
        "{ci_raw}"
    );
    assert_eq!(epoch_line[1], "1", "{ci_raw}");

    // vdi delete: gone from the list, and its data with it.
    sheep.dog_ok(&["vdi", "delete", "half"]);
    assert!(raw_row(&sheep, "half").is_none());
    failed(
        &sheep.dog(&["vdi", "delete", "half"]),
        1,
        "vdi 'half' not found",
        true,
    );
    sheep.create_vdi("half", "1G");
    let back = sheep.dog_ok_bytes(&["vdi", "read", "half", &off_s, &len_s]);
    assert!(
        back.iter().all(|&b| b == 0),
        "a new VDI named like a deleted one shows the old data"
    );
    let mut c = NbdClient::connect(sheep.nbd_port, "half").unwrap();
    assert_eq!(c.read(GIB - 4096, 4096).unwrap(), vec![0u8; 4096]);
    c.disconnect();
    assert_eq!(
        raw_row(&sheep, "half").unwrap()[4],
        "0",
        "used of the new VDI"
    );

    // A redundancy wider than the zones: a clear message, nothing changes.
    let out = sheep.dog(&["cluster", "format", "-c", "3"]);
    failed(&out, 1, "zones", true);
    assert!(raw_row(&sheep, "tiny").is_some());

    // An unformatted sheep refuses VDIs and names the fix.
    let fresh = Sheep::start("dog-unformatted", &[]);
    assert_eq!(
        fresh.dog_ok(&["cluster", "info"]),
        "Cluster status: Waiting for cluster to be formatted\n"
    );
    let out = fresh.dog(&["vdi", "create", "x", "1G"]);
    let err = failed(&out, 1, "format", true);
    assert!(err.contains("dog cluster format"), "{err}");
    let out = fresh.dog(&["cluster", "format", "-c", "3"]);
    let err = failed(&out, 1, "zones", true);
    assert!(err.contains('3') && err.contains('1'), "{err}");
    assert_eq!(
        fresh.dog_ok(&["cluster", "info", "-r"]),
        "Waiting for cluster to be formatted\n"
    );
    assert_eq!(fresh.dog_ok(&["vdi", "list", "-r"]), "");

    // Nobody listening: exit 1, one line that says so.
    let port = free_port().to_string();
    let out = Command::new(DOG)
        .args(["node", "info", "-p", &port])
        .output()
        .unwrap();
    let err = failed(
        &out,
        1,
        &format!("cannot connect to 127.0.0.1:{port}"),
        true,
    );
    assert!(
        err.contains("Connection refused (is sheep running?)"),
        "{err}"
    );
}
