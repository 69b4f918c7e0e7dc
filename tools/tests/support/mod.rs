//! Shared helpers for the process-level tests: start and stop real `sheep` daemons on
//! loopback with their storage on the disk that holds `target/`, run `dog` and the NBD
//! clients (qemu-img, qemu-io, nbdinfo, nbdcopy, fio), and a small NBD client of our own
//! for tests that must send exact bytes or log acknowledgements.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod nbd_client;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SHEEP: &str = env!("CARGO_BIN_EXE_sheep");
pub const DOG: &str = env!("CARGO_BIN_EXE_dog");
pub const MIB: u64 = 1 << 20;

/// A fresh directory under `target/tmp` (a real disk: O_DIRECT is exercised there,
/// while `/tmp` is tmpfs on many machines). Removed when the guard drops.
pub fn test_dir(name: &str) -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(base)
        .unwrap()
}

/// A port nobody listens on right now (the kernel's pick for port 0).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Fails the test with a clear message if an external client is missing
/// (`tools/test.sh` installs them).
pub fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: run tools/test.sh, which installs it"
    );
}

/// Runs a command, failing the test with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn pid_alive(pid: i32) -> bool {
    // A zombie has exited; it only waits to be reaped.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.split(") ").nth(1).unwrap_or("").starts_with('Z'),
        Err(_) => false,
    }
}

/// Waits up to `limit` for `pid` to exit; true if it did.
pub fn wait_exit(pid: i32, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if !pid_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !pid_alive(pid)
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a pid this test started.
    unsafe { libc::kill(pid, sig) };
}

/// Deterministic bytes for (seed, len).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// One `sheep` daemon started by a test, stopped (SIGKILL if need be) when dropped.
pub struct Sheep {
    pub dir: PathBuf,
    pub port: u16,
    pub nbd_port: u16,
    pub extra: Vec<String>,
    pid: Option<i32>,
    _guard: Option<tempfile::TempDir>,
}

impl Sheep {
    /// Starts a daemonized sheep in a fresh directory (`sheep` returns once it listens).
    pub fn start(name: &str, extra: &[&str]) -> Sheep {
        let guard = test_dir(name);
        let mut s = Sheep {
            dir: guard.path().join("store"),
            port: free_port(),
            nbd_port: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            pid: None,
            _guard: Some(guard),
        };
        s.launch();
        s
    }

    /// Starts a sheep and formats a one-node cluster with one copy.
    pub fn formatted(name: &str, extra: &[&str]) -> Sheep {
        let s = Sheep::start(name, extra);
        s.dog_ok(&["cluster", "format", "-c", "1"]);
        s
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(SHEEP);
        c.args(["-p", &self.port.to_string()])
            .args(["--nbd-port", &self.nbd_port.to_string()])
            .args(&self.extra)
            .arg(&self.dir);
        c
    }

    /// (Re)starts the daemon on the same directory and ports.
    pub fn launch(&mut self) {
        assert!(self.pid.is_none(), "already running");
        run(&mut self.command());
        let pid: i32 = std::fs::read_to_string(self.dir.join("sheep.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            pid_alive(pid),
            "sheep returned but pid {pid} is not running"
        );
        self.pid = Some(pid);
    }

    pub fn pid(&self) -> i32 {
        self.pid.expect("sheep is not running")
    }

    /// SIGTERM and wait: a clean shutdown must exit within 30 s.
    pub fn stop(&mut self) {
        let pid = self.pid.take().expect("sheep is not running");
        signal(pid, libc::SIGTERM);
        assert!(
            wait_exit(pid, Duration::from_secs(30)),
            "sheep {pid} ignored SIGTERM"
        );
        self.wait_ports_free();
    }

    /// SIGKILL: the crash case.
    pub fn kill9(&mut self) {
        let pid = self.pid.take().expect("sheep is not running");
        signal(pid, libc::SIGKILL);
        assert!(wait_exit(pid, Duration::from_secs(10)));
        self.wait_ports_free();
    }

    /// The main thread exits a few milliseconds before the last one closes the
    /// listeners; a restart must not race that.
    pub fn wait_ports_free(&self) {
        let end = Instant::now() + Duration::from_secs(10);
        for port in [self.port, self.nbd_port] {
            while TcpListener::bind(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < end, "port {port} still held after exit");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Forget the process (it stopped by other means, e.g. `dog cluster shutdown`).
    pub fn forget(&mut self) -> i32 {
        self.pid.take().expect("sheep is not running")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sheep.log")).unwrap_or_default()
    }

    pub fn uri(&self, vdi: &str) -> String {
        format!("nbd://127.0.0.1:{}/{vdi}", self.nbd_port)
    }

    pub fn dog(&self, args: &[&str]) -> Output {
        Command::new(DOG)
            .args(args)
            .args(["-p", &self.port.to_string()])
            .output()
            .unwrap()
    }

    /// Runs dog, failing the test (with dog's stderr) unless it succeeds; returns stdout.
    pub fn dog_ok(&self, args: &[&str]) -> String {
        let out = self.dog(args);
        assert!(
            out.status.success(),
            "dog {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Creates a VDI (`dog vdi create -c 1 NAME SIZE`).
    pub fn create_vdi(&self, name: &str, size: &str) {
        self.dog_ok(&["vdi", "create", "-c", "1", name, size]);
    }
}

impl Drop for Sheep {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            signal(pid, libc::SIGKILL);
            wait_exit(pid, Duration::from_secs(10));
        }
    }
}

/// Writes `bytes` into a file in `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}
