//! Shared helpers for the process-level tests: start and stop real `sheep` daemons on
//! loopback with their storage on the disk that holds `target/`, run `dog` and the NBD
//! clients (qemu-img, qemu-io, nbdinfo, nbdcopy, fio), and a small NBD client of our own
//! for tests that must send exact bytes or log acknowledgements. Every helper more than
//! one test needs lives here, once; each test binary uses a subset (hence `dead_code`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod clients;
pub mod fio;
pub mod map;
pub mod nbd_client;

use std::io::Write;
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

/// A port nobody listens on right now (the kernel's pick for port 0), never one this
/// test process handed out before: the kernel may pick a port again as soon as the
/// probe closes, and a cluster asks for two ports per node before any sheep binds them
/// (seen: a node given one port for both admin and NBD).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("the kernel keeps offering ports this test already uses");
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

/// A process's output as text (lossy UTF-8), for assertions and failure messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a command, failing the test with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The state letter of `pid` in `/proc/PID/stat` (`R`, `S`, `Z`, ...); None once the
/// process is reaped.
pub fn proc_state(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.split(") ")
            .nth(1)
            .unwrap_or("")
            .chars()
            .take(1)
            .collect(),
    )
}

pub fn pid_alive(pid: i32) -> bool {
    // A zombie has exited; it only waits to be reaped.
    proc_state(pid).is_some_and(|s| s != "Z")
}

/// The pid a sheep wrote to `DIR/sheep.pid`.
pub fn read_pid(dir: &Path) -> i32 {
    std::fs::read_to_string(dir.join("sheep.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
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

/// Waits until `port` can be bound on 127.0.0.1 again, failing the test after `limit`.
/// Not at once after an exit: `wait_exit` sees the exit when the main thread is a
/// zombie, while the other threads (and io_uring's deferred teardown) may still hold
/// the listening sockets for a few milliseconds.
fn released(port: u16, what: &str, limit: Duration) {
    let t = Instant::now();
    while let Err(e) = TcpListener::bind(("127.0.0.1", port)) {
        assert!(
            t.elapsed() < limit,
            "{what} port {port} still bound {limit:?} after sheep exited: {e}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    if t.elapsed() > Duration::from_millis(1) {
        eprintln!(
            "{what} port {port} was released {:?} after the exit",
            t.elapsed()
        );
    }
}

// Not every test binary writes patterns.
#[allow(unused_imports)]
pub use collie_placement::pattern::pattern;

/// One `sheep` daemon started by a test, stopped (SIGKILL if need be) when dropped.
pub struct Sheep {
    pub dir: PathBuf,
    pub port: u16,
    pub nbd_port: u16,
    pub zone: u32,
    /// The local cluster driver's state file: one per test (or per test cluster), so
    /// that tests running at once never join each other's clusters.
    pub cluster_state: PathBuf,
    pub extra: Vec<String>,
    /// Environment variables set for the daemon (e.g. `COLLIE_LOG`), on every launch.
    pub env: Vec<(String, String)>,
    pid: Option<i32>,
    _guard: Option<tempfile::TempDir>,
}

impl Sheep {
    /// Starts a daemonized sheep in a fresh directory (`sheep` returns once it listens).
    pub fn start(name: &str, extra: &[&str]) -> Sheep {
        Sheep::start_with_env(name, extra, &[])
    }

    /// [`Sheep::start`] with `env` set in the daemon's environment.
    pub fn start_with_env(name: &str, extra: &[&str], env: &[(&str, &str)]) -> Sheep {
        let guard = test_dir(name);
        let mut s = Sheep {
            dir: guard.path().join("store"),
            port: free_port(),
            nbd_port: free_port(),
            zone: 0,
            cluster_state: guard.path().join("cluster"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
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
        c.envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["-p", &self.port.to_string()])
            .args(["--nbd-port", &self.nbd_port.to_string()])
            .args(["-z", &self.zone.to_string()])
            .args(&self.extra);
        if !self.extra.iter().any(|a| a == "-c" || a == "--cluster") {
            c.arg("-c")
                .arg(format!("local:{}", self.cluster_state.display()));
        }
        c.arg(&self.dir);
        c
    }

    /// (Re)starts the daemon on the same directory and ports.
    pub fn launch(&mut self) {
        assert!(self.pid.is_none(), "already running");
        run(&mut self.command());
        let pid = read_pid(&self.dir);
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
        self.wait_ports_free(Duration::from_secs(10));
    }

    /// SIGKILL: the crash case.
    pub fn kill9(&mut self) {
        let pid = self.pid.take().expect("sheep is not running");
        signal(pid, libc::SIGKILL);
        assert!(wait_exit(pid, Duration::from_secs(10)));
        self.wait_ports_free(Duration::from_secs(10));
    }

    /// The main thread exits a few milliseconds before the last one closes the
    /// listeners; a restart must not race that. Each port gets `limit`.
    pub fn wait_ports_free(&self, limit: Duration) {
        released(self.port, "admin", limit);
        released(self.nbd_port, "NBD", limit);
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

    /// `dog ARGS -p PORT` with `input` on stdin.
    pub fn dog_with_stdin(&self, args: &[&str], input: Vec<u8>) -> Output {
        let mut child = Command::new(DOG)
            .args(args)
            .args(["-p", &self.port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // dog may stop reading early (an error): a broken pipe here is its answer.
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap();
        out
    }

    /// Runs dog, failing the test (with dog's stderr) unless it succeeds; returns stdout.
    pub fn dog_ok_bytes(&self, args: &[&str]) -> Vec<u8> {
        let out = self.dog(args);
        assert!(
            out.status.success(),
            "dog {args:?} failed: {}",
            text(&out.stderr)
        );
        out.stdout
    }

    /// [`Sheep::dog_ok`] for text output.
    pub fn dog_ok(&self, args: &[&str]) -> String {
        String::from_utf8(self.dog_ok_bytes(args)).unwrap()
    }

    /// Creates a VDI (`dog vdi create -c 1 NAME SIZE`).
    /// `dog vdi check -r VDI`: objects, stripes, consistent, repaired, lost, unplaced.
    pub fn vdi_check(&self, vdi: &str) -> [u64; 6] {
        let out = self.dog_ok(&["vdi", "check", "-r", vdi]);
        let f: Vec<u64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
        f.try_into()
            .unwrap_or_else(|_| panic!("dog vdi check printed {out:?}"))
    }

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

/// Several sheep in one local cluster (one state file), node i in zone i, each in
/// its own directory under one test directory. Every daemon is stopped by its pid
/// when the fixture drops.
pub struct Cluster {
    pub nodes: Vec<Sheep>,
    pub dir: PathBuf,
    _guard: tempfile::TempDir,
}

/// A failed test leaves no directory behind, so its sheep logs are printed here: the
/// tail of each node's log is often the only record of why a cluster misbehaved (CI).
impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (i, s) in self.nodes.iter().enumerate() {
            let log = s.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!("---- node {i} sheep.log (last {} lines) ----", tail.len());
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}

impl Cluster {
    /// Starts `n` sheep (`extra` options for each) and waits until every one sees all.
    pub fn start(name: &str, n: usize, extra: &[&str]) -> Cluster {
        let guard = test_dir(name);
        let dir = guard.path().to_path_buf();
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let mut s = Cluster::node(&dir, i, extra);
            s.launch();
            nodes.push(s);
        }
        let c = Cluster {
            nodes,
            dir,
            _guard: guard,
        };
        c.wait_members(n);
        c
    }

    /// Node `i` of the cluster in `dir` (zone i), not started yet.
    fn node(dir: &Path, i: usize, extra: &[&str]) -> Sheep {
        Sheep {
            dir: dir.join(format!("store{i}")),
            port: free_port(),
            nbd_port: free_port(),
            zone: i as u32,
            cluster_state: dir.join("cluster"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            pid: None,
            _guard: None,
        }
    }

    /// A further node of this cluster (the next zone, the first node's options), not
    /// started yet: launch it, then [`Cluster::adopt`] it.
    pub fn next_node(&self) -> Sheep {
        let extra: Vec<&str> = self.nodes[0].extra.iter().map(String::as_str).collect();
        Cluster::node(&self.dir, self.nodes.len(), &extra)
    }

    /// Makes `s` (from [`Cluster::next_node`]) a node of the fixture.
    pub fn adopt(&mut self, s: Sheep) {
        self.nodes.push(s);
    }

    /// [`Cluster::start`], then `dog cluster format -c copies`.
    pub fn formatted(name: &str, n: usize, copies: u32, extra: &[&str]) -> Cluster {
        let c = Cluster::start(name, n, extra);
        c.nodes[0].dog_ok(&["cluster", "format", "-c", &copies.to_string()]);
        c
    }

    /// The nodes (indices) placement puts `vdi`'s inode on, in order, as `dog vdi
    /// object location -r` through a live node reports them.
    pub fn inode_targets(&self, vdi: &str) -> Vec<usize> {
        let s = self.live().next().expect("no live node");
        let loc = s.dog_ok(&["vdi", "object", "location", "-r", vdi]);
        // ADDR ZONE USED CRC target|misplaced
        loc.lines()
            .filter(|l| l.ends_with(" target"))
            .map(|l| {
                let addr = l.split_whitespace().next().unwrap_or_default();
                self.nodes
                    .iter()
                    .position(|s| addr == format!("127.0.0.1:{}", s.port))
                    .unwrap_or_else(|| panic!("no node at {addr}:\n{loc}"))
            })
            .collect()
    }

    /// The running nodes.
    pub fn live(&self) -> impl Iterator<Item = &Sheep> {
        self.nodes.iter().filter(|s| s.pid.is_some())
    }

    /// Waits (up to 10 s) until every running node's `dog node list` has `n` members.
    pub fn wait_members(&self, n: usize) {
        let end = Instant::now() + Duration::from_secs(10);
        for s in self.live() {
            loop {
                let list = s.dog_ok(&["node", "list", "-r"]);
                if list.lines().count() == n {
                    break;
                }
                assert!(
                    Instant::now() < end,
                    "node {} sees {} members, expected {n}:\n{list}",
                    s.port,
                    list.lines().count()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Waits (up to 10 s) until every running node says the cluster is running (each
    /// polls the membership on its own, so they come out of waiting one by one).
    pub fn wait_running(&self) {
        let end = Instant::now() + Duration::from_secs(10);
        for s in self.live() {
            loop {
                let info = s.dog_ok(&["cluster", "info"]);
                if info.starts_with("Cluster status: running") {
                    break;
                }
                assert!(
                    Instant::now() < end,
                    "node {} is not running:\n{info}",
                    s.port
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Waits (up to `limit`) until every member reports recovery complete at one
    /// epoch, the newest node 0's first live node knows; returns that epoch.
    pub fn wait_recovered(&self, limit: Duration) -> u32 {
        let s = self.live().next().expect("no live node");
        let end = Instant::now() + limit;
        loop {
            let out = s.dog(&["node", "recovery", "-r"]);
            let list = text(&out.stdout);
            // IDX ADDR EPOCH STATE DONE TOTAL BYTES LOST
            let rows: Vec<Vec<&str>> = list
                .lines()
                .map(|l| l.split_whitespace().collect())
                .collect();
            let epochs: Vec<&str> = rows.iter().filter_map(|r| r.get(2).copied()).collect();
            let done = out.status.success()
                && !rows.is_empty()
                && rows.iter().all(|r| r.get(3) == Some(&"complete"))
                && epochs.windows(2).all(|w| w[0] == w[1]);
            if done {
                let epoch: u32 = epochs[0].parse().unwrap();
                if epoch == self.epoch_of(s) {
                    return epoch;
                }
            }
            assert!(
                Instant::now() < end,
                "recovery did not complete within {limit:?}:\n{list}{}",
                text(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn epoch_of(&self, s: &Sheep) -> u32 {
        let i = self
            .nodes
            .iter()
            .position(|n| n.port == s.port)
            .expect("a node of this cluster");
        self.epoch(i)
    }

    /// The epoch in node `i`'s `dog cluster info -r` (its newest history line).
    pub fn epoch(&self, i: usize) -> u32 {
        let info = self.nodes[i].dog_ok(&["cluster", "info", "-r"]);
        info.lines()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
            .next()
            .unwrap_or_else(|| panic!("no epoch in cluster info:\n{info}"))
    }
}

/// Writes `bytes` into a file in `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Where `got` departs from `want`, for a failure message: the lengths, or how many
/// bytes differ and the first run of them with its values.
pub fn first_difference(got: &[u8], want: &[u8]) -> String {
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

/// Fails the test unless `got == want`, naming `who` and the first differing byte.
pub fn assert_bytes_eq(who: &str, got: &[u8], want: &[u8]) {
    assert!(got == want, "{who}: {}", first_difference(got, want));
}

/// Fails the test unless the file at `path` holds exactly `want`.
pub fn assert_file_is(path: &Path, want: &[u8]) {
    let got = std::fs::read(path).unwrap();
    assert_bytes_eq(&path.display().to_string(), &got, want);
}
