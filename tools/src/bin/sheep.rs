//! `sheep [options] DIR`: one Collie node. Composes the engine (store, VDIs, NBD front
//! end) with the admin port that `dog` talks to. Daemonizes by default: it forks first
//! thing, before any thread exists, and the parent exits only once the child is
//! listening (or prints the child's start-up error and fails).

use collie_engine::cluster::local::LocalDriver;
use collie_engine::cluster::runtime::{read_epoch_log, stale_reason, Cluster, PeerState};
use collie_engine::cluster::ClusterDriver;
use collie_engine::cluster::Member;
use collie_engine::frontend::{serve_nbd, FrontendConfig};
use collie_engine::node::{read_format, Node, NodeIdentity};
use collie_engine::peer::serve_peers;
use collie_engine::store::fs_space;
use collie_engine::{Store, StoreConfig};
use collie_net::admin::{read_frame, write_frame, AdminClient, ErrorCode, Request, Response};
use collie_placement::node::NodeId;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: sheep [options] DIR
  -p, --port PORT        admin port dog talks to (default 7000)
  -b, --bind ADDR        address to listen on (default 127.0.0.1)
      --nbd-port PORT    NBD port (default PORT + 3809: 7000 -> 10809)
  -z, --zone ZONE        failure domain of this node (default 0)
  -c, --cluster DRIVER   cluster driver: local[:STATE_FILE] (default local, whose
                         state file is /tmp/collie-local-cluster: every sheep on this
                         machine with the same file is one cluster)
  -n, --nosync           do not fdatasync before acknowledging writes (benchmarks only)
  -f, --foreground       stay in the foreground and log to stderr
      --shards N         shard executors (default: one per core)
      --handshake-timeout SECS  drop NBD clients that do not finish the handshake (10)
  -h, --help";

/// Most admin connections served at once.
const MAX_ADMIN_CONNECTIONS: usize = 64;
/// An admin connection idle this long is closed.
const ADMIN_IDLE: Duration = Duration::from_secs(300);
/// The local driver's shared state file unless `-c local:PATH` names another.
const DEFAULT_LOCAL_STATE: &str = "/tmp/collie-local-cluster";
/// How often the membership is polled: a dead member is noticed within this (plus the
/// driver's own liveness check).
const POLL_INTERVAL: Duration = Duration::from_millis(200);

struct Options {
    dir: PathBuf,
    port: u16,
    bind: IpAddr,
    nbd_port: u16,
    zone: u32,
    cluster_state: PathBuf,
    nosync: bool,
    foreground: bool,
    shards: Option<usize>,
    handshake_timeout: Duration,
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut dir = None;
    let mut port: u16 = 7000;
    let mut bind: IpAddr = IpAddr::from([127, 0, 0, 1]);
    let mut nbd_port = None;
    let mut zone = 0;
    let mut cluster_state = PathBuf::from(DEFAULT_LOCAL_STATE);
    let mut nosync = false;
    let mut foreground = false;
    let mut shards = None;
    let mut handshake_timeout = Duration::from_secs(10);
    let mut it = args.iter();
    fn value<'a>(it: &mut impl Iterator<Item = &'a String>, opt: &str) -> Result<&'a str, String> {
        it.next()
            .map(String::as_str)
            .ok_or_else(|| format!("{opt} needs a value"))
    }
    fn num<T: std::str::FromStr>(s: &str, opt: &str) -> Result<T, String> {
        s.parse()
            .map_err(|_| format!("{opt}: '{s}' is not a valid value"))
    }
    while let Some(a) = it.next() {
        match a.as_str() {
            "-p" | "--port" => port = num(value(&mut it, a)?, a)?,
            "-b" | "--bind" => bind = num(value(&mut it, a)?, a)?,
            "--nbd-port" => nbd_port = Some(num(value(&mut it, a)?, a)?),
            "-z" | "--zone" => zone = num(value(&mut it, a)?, a)?,
            "-c" | "--cluster" => match value(&mut it, a)? {
                "local" => {}
                d if d.starts_with("local:") && d.len() > "local:".len() => {
                    cluster_state = PathBuf::from(&d["local:".len()..]);
                }
                other => {
                    return Err(format!(
                        "cluster driver '{other}' is not supported (local or local:STATE_FILE)"
                    ))
                }
            },
            "-n" | "--nosync" => nosync = true,
            "-f" | "--foreground" => foreground = true,
            "--shards" => {
                let n: usize = num(value(&mut it, a)?, a)?;
                if n == 0 {
                    return Err("--shards must be at least 1".into());
                }
                shards = Some(n);
            }
            "--handshake-timeout" => {
                handshake_timeout = Duration::from_secs(num(value(&mut it, a)?, a)?)
            }
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s if dir.is_none() => dir = Some(PathBuf::from(s)),
            s => return Err(format!("unexpected argument {s}")),
        }
    }
    let dir = dir.ok_or("missing DIR")?;
    let nbd_port = match nbd_port {
        Some(p) => p,
        None => port
            .checked_add(3809)
            .ok_or("default NBD port (PORT + 3809) does not fit: give --nbd-port")?,
    };
    Ok(Options {
        dir,
        port,
        bind,
        nbd_port,
        zone,
        cluster_state,
        nosync,
        foreground,
        shards,
        handshake_timeout,
    })
}

fn pid_file(dir: &Path) -> PathBuf {
    dir.join("sheep.pid")
}

/// Refuses a DIR that a live sheep already serves (the store's flock is the real
/// guard; this gives the message before we touch ports).
fn check_not_running(dir: &Path) -> Result<(), String> {
    let pid = std::fs::read_to_string(pid_file(dir))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok());
    if let Some(pid) = pid {
        // A zombie (killed, not yet reaped) has exited: its locks and ports are free.
        let alive = collie_engine::cluster::local::process_start_time(pid).is_some();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if alive && pid != std::process::id() && comm.trim() == "sheep" {
            return Err(format!(
                "{} is in use by a running sheep (pid {pid})",
                dir.display()
            ));
        }
    }
    // The store lock is the real guard; probing it here also keeps the refusal out of
    // the running sheep's log (a daemon child would write it there).
    if collie_engine::store::in_use(dir) {
        return Err(format!(
            "{} is in use by another process (a running sheep?)",
            dir.display()
        ));
    }
    Ok(())
}

/// Binds with std, which (unlike glommio) does not set SO_REUSEPORT: a port held by
/// anyone else, reuseport or not, is refused here.
fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => format!("{what} port {} in use ({addr})", addr.port()),
        _ => format!("cannot listen on {addr} for {what}: {e}"),
    })
}

/// Keeps the data path's large buffers (object pieces, fragments: up to a few MiB) in
/// malloc's heap. By default glibc maps each one fresh and unmaps it on free, so every
/// request paid page faults and the kernel's zeroing of every page (measured: about 5%
/// of the CPU of a 4:2 sequential write). The trim threshold keeps freed memory for
/// the next request instead of returning it at once.
fn keep_large_buffers() {
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

fn main() {
    keep_large_buffers();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("sheep: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = prepare_and_run(opts) {
        eprintln!("sheep: {e}");
        std::process::exit(1);
    }
}

/// Everything up to the fork happens in the one thread we have.
fn prepare_and_run(opts: Options) -> Result<(), String> {
    std::fs::create_dir_all(&opts.dir)
        .map_err(|e| format!("cannot create {}: {e}", opts.dir.display()))?;
    let dir = opts
        .dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    check_not_running(&dir)?;
    let admin = bind(SocketAddr::new(opts.bind, opts.port), "admin")?;
    let nbd = bind(SocketAddr::new(opts.bind, opts.nbd_port), "NBD")?;
    let log_path = dir.join("sheep.log");
    if opts.foreground {
        init_logging(None);
        return run(opts, dir, admin, nbd, None);
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let mut fds = [0i32; 2];
    // SAFETY: plain pipe(2) into a two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just returned by pipe2 and are owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other thread exists yet (we fork before the store starts any), so the
    // child may go on running arbitrary code.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            drop(rd);
            // SAFETY: setsid/dup2 on descriptors we own; detaches from the terminal.
            unsafe {
                libc::setsid();
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 {
                    libc::dup2(null, 0);
                    libc::close(null);
                }
                libc::dup2(log.as_raw_fd(), 1);
                libc::dup2(log.as_raw_fd(), 2);
            }
            drop(log);
            init_logging(Some(()));
            // A second handle for the error path: `run` drops its own once it is ready,
            // which is what ends the parent's wait.
            let ready = std::fs::File::from(wr);
            let mut on_error = ready.try_clone().ok();
            if let Err(e) = run(opts, dir, admin, nbd, Some(ready)) {
                if let Some(f) = on_error.as_mut() {
                    let _ = writeln!(f, "{e}");
                }
                tracing::error!("start-up failed: {e}");
                std::process::exit(1);
            }
            std::process::exit(0);
        }
        _child => {
            drop(wr);
            drop((admin, nbd, log));
            // The child writes one line: "ok", or its start-up error.
            let mut msg = String::new();
            let _ = std::io::BufRead::read_line(
                &mut std::io::BufReader::new(std::fs::File::from(rd)),
                &mut msg,
            );
            match msg.trim() {
                "ok" => Ok(()),
                "" => Err(format!(
                    "sheep exited during start-up; see {}",
                    log_path.display()
                )),
                e => Err(e.to_owned()),
            }
        }
    }
}

fn init_logging(_daemon: Option<()>) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("COLLIE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// Signals the process handles in its main thread (blocked everywhere else).
fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

fn run(
    opts: Options,
    dir: PathBuf,
    admin: TcpListener,
    nbd: TcpListener,
    ready: Option<std::fs::File>,
) -> Result<(), String> {
    // Block the signals before any thread starts so that every thread inherits the mask
    // and only the sigwait below sees them.
    let set = signal_set();
    // SAFETY: set is initialised; this only changes this thread's mask.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };

    let mut cfg = StoreConfig::new(&dir);
    cfg.nosync = opts.nosync;
    if let Some(n) = opts.shards {
        cfg.shards = n;
    }
    let store = Store::open(cfg).map_err(|e| e.to_string())?;
    let shards = store.shard_count();
    let direct = store.direct_io();

    // Peers reach each shard on its own port (an ephemeral one, advertised through
    // the membership), bound with std so that nobody else can share it.
    let mut peer_listeners = Vec::with_capacity(shards);
    for _ in 0..shards {
        peer_listeners.push(bind(SocketAddr::new(opts.bind, 0), "peer")?);
    }
    let peer_ports = peer_listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<u16>, _>>()
        .map_err(|e| format!("peer port: {e}"))?;
    serve_peers(&store, peer_listeners).map_err(|e| format!("starting the peer server: {e}"))?;

    let (capacity, _) = fs_space(&dir);
    let format = read_format(&store)?;
    let mut driver = LocalDriver::open(&opts.cluster_state).map_err(|e| e.to_string())?;
    let running = driver.poll().map_err(|e| e.to_string())?;
    let my_last = read_epoch_log(&dir).last().map(|r| r.epoch);
    let peers: Vec<PeerState> = running
        .members
        .iter()
        .filter_map(|m| peer_state(&m.id))
        .collect();
    if let Some(why) = stale_reason(my_last, format.is_some(), &peers) {
        // It joins with its capacity all the same: recovery brings every object
        // placed here up to date before this node serves it.
        tracing::info!("catching up: {why}");
    }
    let me = Member {
        id: NodeId::new(opts.bind, opts.port),
        zone: opts.zone,
        capacity,
        nbd_port: opts.nbd_port,
        peer_ports,
        pid: std::process::id(),
        partitions: store.partition_count(),
    };
    let cluster = Arc::new(
        Cluster::join(&store, Box::new(driver), me, format.map(|f| f.2))
            .map_err(|e| format!("joining the cluster: {e}"))?,
    );
    let addr = SocketAddr::new(opts.bind, opts.port).to_string();
    let node = Arc::new(Node::new(
        store,
        NodeIdentity {
            addr: addr.clone(),
            zone: opts.zone,
            nosync: opts.nosync,
        },
        cluster.clone(),
    ));
    if format.is_none() {
        adopt_format(&node);
    }
    let front = FrontendConfig {
        handshake_timeout: opts.handshake_timeout,
        ..FrontendConfig::default()
    };
    serve_nbd(node.store(), nbd, front).map_err(|e| format!("starting the NBD front end: {e}"))?;
    let stopping = Arc::new(AtomicBool::new(false));
    {
        let (node, stopping) = (Arc::downgrade(&node), stopping.clone());
        std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || admin_loop(admin, node, stopping))
            .map_err(|e| format!("admin thread: {e}"))?;
    }
    {
        let (node, stopping) = (Arc::downgrade(&node), stopping.clone());
        std::thread::Builder::new()
            .name("membership".into())
            .spawn(move || poll_loop(&node, &stopping))
            .map_err(|e| format!("membership thread: {e}"))?;
    }
    std::fs::write(pid_file(&dir), format!("{}\n", std::process::id()))
        .map_err(|e| format!("writing {}: {e}", pid_file(&dir).display()))?;
    tracing::info!(
        dir = %dir.display(),
        admin = %addr,
        nbd_port = opts.nbd_port,
        shards,
        direct_io = direct,
        nosync = opts.nosync,
        "sheep started"
    );
    if let Some(mut r) = ready {
        let _ = r.write_all(b"ok\n");
    }

    let mut sig = 0;
    loop {
        // SAFETY: set is initialised and sig is a valid out pointer.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            break;
        }
    }
    tracing::info!(signal = sig, "shutting down");
    stopping.store(true, Ordering::SeqCst);
    // Admin connections hold the node only while answering one request.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut node = node;
    let node = loop {
        match Arc::try_unwrap(node) {
            Ok(n) => break Some(n),
            Err(n) if Instant::now() < deadline => {
                node = n;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => break None,
        }
    };
    let Some(node) = node else {
        cluster.leave();
        return Err(
            "an admin request did not finish within 30 s; exiting without a clean shutdown".into(),
        );
    };
    // Leave first, so that the others stop sending us requests.
    cluster.leave();
    drop(cluster);
    node.into_store()
        .shutdown()
        .map_err(|e| format!("shutdown: {e}"))?;
    let _ = std::fs::remove_file(pid_file(&dir));
    tracing::info!("clean shutdown");
    Ok(())
}

/// Polls the membership until the node stops.
fn poll_loop(node: &Weak<Node>, stopping: &AtomicBool) {
    while !stopping.load(Ordering::SeqCst) {
        std::thread::sleep(POLL_INTERVAL);
        let Some(n) = node.upgrade() else { return };
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = n.cluster().poll(n.store()) {
            tracing::warn!("membership poll: {e}");
        }
    }
}

/// What the running member `id` says about the cluster (None if it does not answer).
fn peer_state(id: &NodeId) -> Option<PeerState> {
    let mut c =
        AdminClient::connect(&id.addr().to_string(), id.port(), Duration::from_secs(5)).ok()?;
    match c.call(&Request::ClusterInfo).ok()? {
        Response::ClusterInfo(ci) => Some(PeerState {
            formatted: ci.formatted.is_some(),
            newest_epoch: ci.epochs.iter().map(|e| e.epoch).max(),
        }),
        // A member that is waiting or failing still tells us it exists.
        _ => None,
    }
}

/// A node that joins a formatted cluster without a format record of its own takes the
/// cluster's (best effort: without it the node still serves, and `dog cluster info`
/// on it says "not formatted").
fn adopt_format(node: &Node) {
    let Some(v) = node.cluster().view() else {
        return;
    };
    for (i, m) in v.members.iter().enumerate() {
        if v.is_me(i) {
            continue;
        }
        let info = AdminClient::connect(
            &m.id.addr().to_string(),
            m.id.port(),
            Duration::from_secs(5),
        )
        .ok()
        .and_then(|mut c| c.call(&Request::ClusterInfo).ok());
        if let Some(Response::ClusterInfo(ci)) = info {
            if let Some(f) = ci.formatted {
                let (r, _) = node.handle(Request::NodeFormat {
                    redundancy: f.default_redundancy,
                    force: false,
                    ctime: f.ctime,
                    vnode_bytes: f.vnode_bytes,
                });
                tracing::info!(from = %m.id, answer = ?r, "took the cluster's format record");
            }
            return;
        }
    }
}

fn admin_loop(listener: TcpListener, node: Weak<Node>, stopping: Arc<AtomicBool>) {
    let open = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        if open.load(Ordering::SeqCst) >= MAX_ADMIN_CONNECTIONS {
            tracing::warn!("admin: too many connections, refusing one");
            continue;
        }
        open.fetch_add(1, Ordering::SeqCst);
        let (node, stopping, open) = (node.clone(), stopping.clone(), open.clone());
        let spawned = std::thread::Builder::new()
            .name("admin-conn".into())
            .spawn(move || {
                if let Err(e) = admin_connection(stream, &node, &stopping) {
                    tracing::info!("admin connection: {e}");
                }
                open.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            tracing::warn!("admin: cannot start a thread for a connection");
        }
    }
}

fn admin_connection(
    mut stream: TcpStream,
    node: &Weak<Node>,
    stopping: &AtomicBool,
) -> Result<(), String> {
    stream
        .set_read_timeout(Some(ADMIN_IDLE))
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    loop {
        let Some((h, body)) = read_frame(&mut stream).map_err(|e| e.to_string())? else {
            return Ok(());
        };
        let (resp, shutdown) = match Request::decode(&h, &body) {
            Err(e) => (
                Response::Error {
                    code: ErrorCode::Invalid,
                    message: e.to_string(),
                },
                false,
            ),
            Ok(req) => match node.upgrade() {
                Some(n) if !stopping.load(Ordering::SeqCst) => n.handle(req),
                _ => (
                    Response::Error {
                        code: ErrorCode::ShuttingDown,
                        message: "sheep is shutting down".into(),
                    },
                    false,
                ),
            },
        };
        let (op, status, body) = resp.encode();
        write_frame(&mut stream, op, status, h.id, &body).map_err(|e| e.to_string())?;
        if shutdown {
            tracing::info!("shutdown requested");
            // SAFETY: sends SIGTERM to ourselves; the main thread's sigwait takes it.
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
            return Ok(());
        }
    }
}
