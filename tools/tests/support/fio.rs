//! fio with its nbd engine and `verify=crc32c`, and just enough of its JSON report.

use std::path::Path;
use std::process::{Command, Output};

/// Just enough JSON for fio's report: numbers, true, false and null are kept as text.
#[derive(Debug)]
pub enum Json {
    Lit(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub fn parse(text: &str) -> Json {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value();
        p.ws();
        assert_eq!(p.i, p.s.len(), "trailing bytes after the JSON value");
        v
    }

    pub fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(m) => m
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("no key {key:?}")),
            other => panic!("not an object looking up {key:?}: {other:?}"),
        }
    }

    pub fn at(&self, i: usize) -> &Json {
        match self {
            Json::Arr(a) => &a[i],
            other => panic!("not an array: {other:?}"),
        }
    }

    pub fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    pub fn u64(&self) -> u64 {
        match self {
            Json::Lit(n) => n.parse().unwrap_or_else(|_| panic!("not a u64: {n}")),
            other => panic!("not a number: {other:?}"),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        let hit = self.s.get(self.i) == Some(&c);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn expect(&mut self, c: u8) {
        assert!(self.eat(c), "expected {:?} at byte {}", c as char, self.i);
    }

    fn string(&mut self) -> String {
        self.expect(b'"');
        let mut out = Vec::new();
        loop {
            let c = self.s[self.i];
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).unwrap(),
                b'\\' => {
                    let e = self.s[self.i];
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            self.i += 4; // not needed for fio's keys: keep a marker
                            out.push(b'?');
                        }
                        other => out.push(other),
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn value(&mut self) -> Json {
        self.ws();
        match self.s[self.i] {
            b'{' => {
                self.i += 1;
                let mut m = Vec::new();
                if !self.eat(b'}') {
                    loop {
                        self.ws();
                        let k = self.string();
                        self.expect(b':');
                        m.push((k, self.value()));
                        if self.eat(b'}') {
                            break;
                        }
                        self.expect(b',');
                    }
                }
                Json::Obj(m)
            }
            b'[' => {
                self.i += 1;
                let mut a = Vec::new();
                if !self.eat(b']') {
                    loop {
                        a.push(self.value());
                        if self.eat(b']') {
                            break;
                        }
                        self.expect(b',');
                    }
                }
                Json::Arr(a)
            }
            b'"' => Json::Str(self.string()),
            _ => {
                let start = self.i;
                while self.i < self.s.len() && !b",}] \t\r\n".contains(&self.s[self.i]) {
                    self.i += 1;
                }
                assert!(self.i > start, "bad JSON value at byte {start}");
                Json::Lit(
                    std::str::from_utf8(&self.s[start..self.i])
                        .unwrap()
                        .to_owned(),
                )
            }
        }
    }
}

/// Runs fio with `args` in `dir` (fio may leave verify state files in its working
/// directory) and returns its exit, its stderr and its JSON report.
pub fn fio(dir: &Path, name: &str, uri: &str, args: &[&str]) -> (Output, Json) {
    let report = dir.join(format!("{name}.json"));
    let out = Command::new("fio")
        .current_dir(dir)
        .arg(format!("--name={name}"))
        .args(["--ioengine=nbd", &format!("--uri={uri}")])
        .args(["--iodepth=32", "--size=256M", "--verify=crc32c"])
        .args(["--do_verify=1", "--verify_fatal=1", "--output-format=json"])
        .arg(format!("--output={}", report.display()))
        .args(args)
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    // fio prints notices ("fio: connected to NBD server") before the JSON at times.
    let json = text.find('{').map(|i| Json::parse(&text[i..]));
    let json = json.unwrap_or_else(|| {
        panic!(
            "fio wrote no report ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, json)
}

pub fn assert_clean(out: &Output, job: &Json, name: &str) {
    assert_eq!(job.get("jobname").str(), name);
    assert!(
        out.status.success() && job.get("error").u64() == 0,
        "fio failed ({}, error {:?}):\n{}",
        out.status,
        job.get("error"),
        String::from_utf8_lossy(&out.stderr)
    );
    for dir in ["read", "write"] {
        let d = job.get(dir);
        assert_eq!(d.get("short_ios").u64(), 0, "{dir} short_ios");
        assert_eq!(d.get("drop_ios").u64(), 0, "{dir} drop_ios");
    }
}
