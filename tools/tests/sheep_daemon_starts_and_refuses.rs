//! `sheep` as a daemon: it returns only once both ports accept connections, writes
//! DIR/sheep.pid and DIR/sheep.log, refuses a DIR another sheep serves (by pid file and,
//! with the pid file gone, by the store's lock), refuses a port someone else holds —
//! also one held with SO_REUSEPORT, which glommio's own listeners would silently share —
//! exits 2 on a bad command line, and shuts down cleanly on SIGTERM/SIGINT, in the
//! background and with `-f` in the foreground.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A foreground sheep (`-f`), killed if the test fails before it stops it.
struct Foreground(Option<Child>);

impl Drop for Foreground {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `sheep ARGS DIR` and waits for it (the daemonizing parent) to return.
fn sheep_cmd(args: &[&str], dir: &Path) -> Output {
    Command::new(SHEEP)
        .args(args)
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A start that must fail: exit 1, the message on stderr, no daemon left behind.
fn refused(args: &[&str], dir: &Path, want: &str) {
    let out = sheep_cmd(args, dir);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "sheep {args:?}: {out:?}");
    assert!(
        err.contains(want),
        "sheep {args:?}: want '{want}' in: {err}"
    );
    assert!(err.starts_with("sheep: "), "{err}");
    assert!(
        !dir.join("sheep.pid").exists(),
        "a refused sheep left {}/sheep.pid",
        dir.display()
    );
}

/// A listening TCP socket on 127.0.0.1 with SO_REUSEPORT (and SO_REUSEADDR) set, the
/// way glommio creates its listeners. Returns the socket and its port.
fn reuseport_listener() -> (OwnedFd, u16) {
    // SAFETY: plain socket(2)/setsockopt(2)/bind(2)/listen(2)/getsockname(2) on a
    // descriptor we own; every pointer points at a live local of the right size.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        for opt in [libc::SO_REUSEPORT, libc::SO_REUSEADDR] {
            let r = libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            assert_eq!(r, 0, "setsockopt: {}", std::io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        addr.sin_port = 0;
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let r = libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_in).cast(),
            len,
        );
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        assert_eq!(libc::listen(fd.as_raw_fd(), 16), 0);
        let mut got: libc::sockaddr_in = std::mem::zeroed();
        let mut got_len = len;
        let r = libc::getsockname(
            fd.as_raw_fd(),
            (&mut got as *mut libc::sockaddr_in).cast(),
            &mut got_len,
        );
        assert_eq!(r, 0);
        (fd, u16::from_be(got.sin_port))
    }
}

/// How long a port may stay bound after its sheep exited.
const RELEASE: Duration = Duration::from_secs(5);

/// The sheep answers on both ports: dog gets the cluster status and an NBD client
/// gets the server greeting.
fn serving(port: u16, nbd_port: u16) {
    let out = Command::new(DOG)
        .args(["cluster", "info", "-p", &port.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dog cluster info: {}",
        text(&out.stderr)
    );
    nbd_client::greet(nbd_port).expect("NBD greeting");
}

#[test]
fn sheep_daemon_starts_and_refuses() {
    // 1. Returns only once listening: connect right after `sheep` returned, with no
    //    retry. Three starts, to give a race a chance to show.
    let mut sheep = Sheep::start("daemon", &[]);
    for _ in 0..3 {
        let t = Instant::now();
        TcpStream::connect(("127.0.0.1", sheep.port)).expect("admin port accepts");
        nbd_client::greet(sheep.nbd_port).expect("NBD port greets");
        assert!(t.elapsed() < Duration::from_secs(2));
        // Not `restart()`: its launch can race the old process for the ports.
        sheep.stop();
        sheep.wait_ports_free(RELEASE);
        sheep.launch();
    }
    serving(sheep.port, sheep.nbd_port);
    let pid_text = std::fs::read_to_string(sheep.dir.join("sheep.pid")).unwrap();
    assert_eq!(pid_text, format!("{}\n", sheep.pid()));
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{}/comm", sheep.pid()))
            .unwrap()
            .trim(),
        "sheep"
    );
    let log = sheep.log();
    assert!(log.contains("sheep started"), "{log}");
    assert!(
        log.contains(&format!("nbd_port={}", sheep.nbd_port)),
        "{log}"
    );

    // 2. A second sheep on the same DIR is refused; the first keeps serving.
    let canonical = sheep.dir.canonicalize().unwrap();
    let (p2, n2) = (free_port().to_string(), free_port().to_string());
    let out = sheep_cmd(&["-p", &p2, "--nbd-port", &n2], &sheep.dir);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains(&canonical.display().to_string()), "{err}");
    assert!(err.contains("running sheep"), "{err}");
    assert!(err.contains(&format!("pid {}", sheep.pid())), "{err}");
    assert!(pid_alive(sheep.pid()));
    serving(sheep.port, sheep.nbd_port);

    // ... even with its pid file gone: the store's lock refuses it (after the fork,
    // so the message comes from the child through the parent).
    let pid_file = sheep.dir.join("sheep.pid");
    std::fs::remove_file(&pid_file).unwrap();
    let out = sheep_cmd(&["-p", &p2, "--nbd-port", &n2], &sheep.dir);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    assert!(err.contains(&canonical.display().to_string()), "{err}");
    assert!(
        !pid_file.exists(),
        "the refused second sheep wrote a pid file"
    );
    std::fs::write(&pid_file, pid_text.as_bytes()).unwrap();
    assert!(pid_alive(sheep.pid()));
    serving(sheep.port, sheep.nbd_port);
    // The refused sheep must not have left a process holding the ports it was given.
    TcpListener::bind(("127.0.0.1", p2.parse::<u16>().unwrap())).expect("port p2 free again");
    TcpListener::bind(("127.0.0.1", n2.parse::<u16>().unwrap())).expect("port n2 free again");

    // 3. Ports held by another process (this one): plain and with SO_REUSEPORT, for the
    //    admin port and the NBD port.
    let scratch = test_dir("daemon-ports");
    let dir = scratch.path().join("store");
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = plain.local_addr().unwrap().port().to_string();
    let free = free_port().to_string();
    refused(
        &["-p", &taken, "--nbd-port", &free],
        &dir,
        &format!("admin port {taken} in use"),
    );
    refused(
        &["-p", &free, "--nbd-port", &taken],
        &dir,
        &format!("NBD port {taken} in use"),
    );
    let (_reuse, rport) = reuseport_listener();
    let rport = rport.to_string();
    refused(
        &["-p", &rport, "--nbd-port", &free],
        &dir,
        &format!("admin port {rport} in use"),
    );
    refused(
        &["-p", &free, "--nbd-port", &rport],
        &dir,
        &format!("NBD port {rport} in use"),
    );
    // The port given to the refused sheeps is still free: nothing was left listening.
    drop(TcpListener::bind(("127.0.0.1", free.parse::<u16>().unwrap())).expect("still free"));

    // 4. Bad command lines exit 2 with the usage, before touching DIR.
    let bad_dir = scratch.path().join("never-created");
    let cases: &[(&[&str], &str)] = &[
        (&["--bogus"], "unknown option --bogus"),
        (&["-p", "notaport"], "'notaport' is not a valid value"),
        (&["-p", "70000"], "'70000' is not a valid value"),
        (&["--shards", "0"], "--shards must be at least 1"),
        (
            &["-c", "zookeeper"],
            "cluster driver 'zookeeper' is not supported",
        ),
        (
            &["--handshake-timeout", "soon"],
            "'soon' is not a valid value",
        ),
        (&["-b", "not-an-ip"], "'not-an-ip' is not a valid value"),
        (&["-p", "65000"], "does not fit"),
        (&["extra-dir"], "unexpected argument"),
    ];
    for (args, want) in cases {
        let out = sheep_cmd(args, &bad_dir);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "sheep {args:?}: {out:?}");
        assert!(
            err.contains(want),
            "sheep {args:?}: want '{want}' in: {err}"
        );
        assert!(err.contains("usage: sheep"), "{err}");
        assert!(!bad_dir.exists(), "sheep {args:?} created DIR");
    }
    let out = Command::new(SHEEP).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("missing DIR"), "{out:?}");
    let out = Command::new(SHEEP).arg("-p").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("-p needs a value"), "{out:?}");
    let out = Command::new(SHEEP).arg("-h").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("--handshake-timeout"));

    // 5. SIGTERM (and SIGINT) to the daemon: clean shutdown, pid file removed, ports
    //    released.
    let pid = sheep.pid();
    sheep.stop();
    assert!(!pid_file.exists(), "pid file left after SIGTERM");
    let log = sheep.log();
    assert!(log.contains("clean shutdown"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(!pid_alive(pid));
    sheep.wait_ports_free(RELEASE);
    sheep.launch();
    let pid = sheep.forget();
    signal(pid, libc::SIGINT);
    assert!(
        wait_exit(pid, Duration::from_secs(30)),
        "sheep ignored SIGINT"
    );
    assert!(!pid_file.exists(), "pid file left after SIGINT");
    assert_eq!(
        sheep.log().matches("clean shutdown").count(),
        5,
        "{}",
        sheep.log()
    );

    // 6. Foreground: runs until SIGTERM, logs to stderr, exits 0 after a clean shutdown.
    let fg_dir = scratch.path().join("fg");
    let (port, nbd_port) = (free_port(), free_port());
    let errf = std::fs::File::create(scratch.path().join("fg.stderr")).unwrap();
    let child = Command::new(SHEEP)
        .args([
            "-f",
            "-p",
            &port.to_string(),
            "--nbd-port",
            &nbd_port.to_string(),
        ])
        .arg(&fg_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(errf)
        .spawn()
        .unwrap();
    let mut fg = Foreground(Some(child));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "foreground sheep never listened");
        let c = fg.0.as_mut().unwrap();
        assert!(c.try_wait().unwrap().is_none(), "foreground sheep exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    serving(port, nbd_port);
    std::thread::sleep(Duration::from_millis(300));
    let c = fg.0.as_mut().unwrap();
    assert!(
        c.try_wait().unwrap().is_none(),
        "sheep -f did not stay running"
    );
    let fg_pid = c.id() as i32;
    assert_eq!(
        std::fs::read_to_string(fg_dir.join("sheep.pid"))
            .unwrap()
            .trim(),
        fg_pid.to_string()
    );
    signal(fg_pid, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "sheep -f ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    fg.0 = None;
    let err = std::fs::read_to_string(scratch.path().join("fg.stderr")).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("sheep started"), "{err}");
    assert!(err.contains("clean shutdown"), "{err}");
    assert!(!fg_dir.join("sheep.pid").exists());
    assert!(
        !fg_dir.join("sheep.log").exists(),
        "sheep -f logs to stderr, not to sheep.log"
    );

    // 7. After SIGKILL the pid file stays behind; starting again right away must work
    //    even while the killed sheep is still a zombie waiting for init to reap it (it
    //    holds no port, file or lock any more, only its name in /proc).
    sheep.launch();
    let pid = sheep.pid();
    sheep.kill9();
    sheep.wait_ports_free(RELEASE);
    assert!(
        pid_file.exists(),
        "SIGKILL cannot have removed the pid file"
    );
    let state = proc_state(pid).unwrap_or_else(|| "reaped".into());
    let out = sheep.command().output().unwrap();
    if out.status.success() {
        let new_pid = read_pid(&sheep.dir);
        signal(new_pid, libc::SIGTERM);
        assert!(wait_exit(new_pid, Duration::from_secs(30)));
    }
    assert!(
        out.status.success(),
        "restart right after SIGKILL refused (old pid {pid}, state {state}): {}",
        text(&out.stderr)
    );
}
