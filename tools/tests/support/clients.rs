//! Runners for QEMU's NBD clients, so every test drives qemu-io and qemu-img the same
//! way and judges their output by the same rules.

use super::{run, text};
use std::fmt::Debug;
use std::process::Command;

/// Runs one qemu-io process with `cmds` against `uri`. Err(output) unless it exited 0,
/// printed no failure or error, and printed one success line per command.
pub fn qemu_io<S: AsRef<str> + Debug>(uri: &str, cmds: &[S]) -> Result<String, String> {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw"]);
    for cmd in cmds {
        c.arg("-c").arg(cmd.as_ref());
    }
    c.arg(uri);
    let out = c.output().unwrap();
    let text = format!("{}{}", text(&out.stdout), text(&out.stderr));
    let lower = text.to_lowercase();
    // "wrote 4/4 bytes at offset 1", "read ...", "discard ...": one per command.
    let done = text
        .lines()
        .filter(|l| {
            ["wrote ", "read ", "discard "]
                .iter()
                .any(|p| l.starts_with(p))
                && l.contains(" bytes at offset ")
        })
        .count();
    if !out.status.success()
        || lower.contains("pattern verification failed")
        || lower.contains("failed")
        || lower.contains("error")
        || done != cmds.len()
    {
        return Err(format!(
            "qemu-io ({}, {done}/{} commands done) {cmds:?}:\n{text}",
            out.status,
            cmds.len()
        ));
    }
    Ok(text)
}

/// [`qemu_io`], failing the test unless every command succeeded.
pub fn qemu_io_ok<S: AsRef<str> + Debug>(uri: &str, cmds: &[S]) {
    if let Err(e) = qemu_io(uri, cmds) {
        panic!("{e}");
    }
}

/// Runs `qemu-img ARGS`, failing the test unless it succeeds; returns stdout.
pub fn qemu_img(args: &[&str]) -> String {
    run(Command::new("qemu-img").args(args))
}

/// `qemu-img convert` of the raw export at `uri` into the file `out`; returns its bytes.
pub fn qemu_img_read(uri: &str, out: &std::path::Path) -> Vec<u8> {
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "raw",
        uri,
        out.to_str().unwrap(),
    ]);
    std::fs::read(out).unwrap()
}

/// `qemu-img convert -n` of the raw file `src` into the raw export at `uri`.
pub fn qemu_img_write(src: &std::path::Path, uri: &str) {
    qemu_img(&[
        "convert",
        "-n",
        "-f",
        "raw",
        "-O",
        "raw",
        src.to_str().unwrap(),
        uri,
    ]);
}

/// The unsigned number at the start of `s`, after white space: the value in the
/// `"key": 123` of qemu-img's JSON output, given what follows the key.
pub fn json_u64(s: &str) -> u64 {
    s.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
