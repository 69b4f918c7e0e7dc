//! The node-local object store: a data directory with a superblock, partitions spread
//! over shard executors, and a `Send` handle that other threads use to reach the shards.

use std::fs::File;
use std::future::Future;
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::io::DmaFile;
use glommio::{LocalExecutorBuilder, Placement};
use tracing::{info, warn};

use crate::error::{from_glommio, Result, StoreError};
use crate::format::*;
use crate::partition::{ObjectInfo, Partition, PartitionConfig, PartitionStats, WriteMeta};
use crate::shard::{owner_of, partition_of, Msg, Shard};

const SUPERBLOCK: &str = "superblock";
/// Largest segment: batch offsets inside a segment are stored as u32.
const MAX_SEGMENT: u64 = 1 << 30;

/// How to open (or create) a store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub dir: PathBuf,
    /// Shard executors (one per core by default). May change between opens.
    pub shards: usize,
    /// Partitions, fixed when the store is created (ignored when opening).
    pub partitions: u32,
    /// Segment file size, fixed when the store is created (ignored when opening).
    pub segment_size: u64,
    /// If set: the node this directory must belong to (and the uuid given to a new store).
    pub node_uuid: Option<[u8; 16]>,
    /// Skip fdatasync (Sheepdog's `-n`): fast, but acknowledged writes can be lost.
    pub nosync: bool,
    pub checkpoint_every: u64,
    pub compact_below: f64,
    pub maintenance_every: Duration,
    /// Pin shard i to core i (otherwise the kernel schedules them: polite when several
    /// nodes share a machine).
    pub pin: bool,
}

impl StoreConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        StoreConfig {
            dir: dir.into(),
            shards: cores,
            // One partition (one log, one fdatasync per group commit) per shard: every
            // partition a shard adds costs its group commit another fdatasync, which cut
            // 4 KiB durable random-write IOPS to a third at 32 partitions per shard
            // (docs/decisions.md has the figures). A per-shard log would let partitions
            // be fine-grained again.
            partitions: cores as u32,
            segment_size: 64 << 20,
            node_uuid: None,
            nosync: false,
            checkpoint_every: 256 << 20,
            compact_below: 0.5,
            maintenance_every: Duration::from_millis(500),
            pin: false,
        }
    }
}

type Job = Box<dyn FnOnce(Rc<Shard>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

enum Cmd {
    /// Every executor exists: join the mesh and open the partitions.
    Start,
    Run(Job),
    Shutdown(flume::Sender<Result<()>>),
}

/// Handle to an open store. `Send + Sync`: any thread may submit work to a shard.
pub struct Store {
    dir: PathBuf,
    superblock: Superblock,
    direct_io: bool,
    shards: Vec<flume::Sender<Cmd>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Holds the exclusive flock on the superblock for as long as the store is open.
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("shards", &self.shards.len())
            .finish()
    }
}

fn incompatible(dir: &Path, why: impl Into<String>) -> StoreError {
    StoreError::Incompatible {
        dir: dir.display().to_string(),
        why: why.into(),
    }
}

fn random_uuid() -> Result<[u8; 16]> {
    let mut u = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut u))
        .map_err(|e| StoreError::io("reading /dev/urandom", e))?;
    Ok(u)
}

/// Reads, or creates, the superblock; refuses a directory of another node or format.
fn open_superblock(cfg: &StoreConfig) -> Result<(Superblock, File)> {
    let dir = &cfg.dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
    let path = dir.join(SUPERBLOCK);
    let exists = path.exists();
    if !exists {
        if dir.join("partitions").exists() {
            return Err(incompatible(dir, "it holds partitions but no superblock"));
        }
        if !(1..=65536).contains(&cfg.partitions) {
            return Err(StoreError::Invalid(format!(
                "partition count {} outside 1..=65536",
                cfg.partitions
            )));
        }
        if !(1 << 20..=MAX_SEGMENT).contains(&cfg.segment_size)
            || !cfg.segment_size.is_multiple_of(BLOCK as u64)
        {
            return Err(StoreError::Invalid(
                "segment size must be a multiple of 4 KiB from 1 MiB to 1 GiB".into(),
            ));
        }
        let sb = Superblock {
            magic: SUPERBLOCK_MAGIC,
            format_version: FORMAT_VERSION,
            partition_count: cfg.partitions,
            node_uuid: match cfg.node_uuid {
                Some(u) => u,
                None => random_uuid()?,
            },
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            segment_size: cfg.segment_size,
            ..bytemuck::Zeroable::zeroed()
        }
        .seal();
        let mut block = vec![0u8; BLOCK];
        block[..std::mem::size_of::<Superblock>()].copy_from_slice(bytemuck::bytes_of(&sb));
        let tmp = dir.join("superblock.tmp");
        let mut f = File::create(&tmp).map_err(|e| StoreError::io("creating superblock", e))?;
        f.write_all(&block)
            .and_then(|_| f.sync_all())
            .map_err(|e| StoreError::io("writing superblock", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| StoreError::io("installing superblock", e))?;
        crate::partition::sync_dir(dir)?;
        info!(dir = %dir.display(), partitions = cfg.partitions, "created store");
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
    // SAFETY: flock on a valid, owned descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(incompatible(dir, "it is in use by another process"));
    }
    let mut block = vec![0u8; BLOCK];
    f.read_exact(&mut block)
        .map_err(|_| incompatible(dir, "superblock is truncated"))?;
    let sb: Superblock = bytemuck::pod_read_unaligned(&block[..std::mem::size_of::<Superblock>()]);
    if sb.magic != SUPERBLOCK_MAGIC {
        return Err(incompatible(
            dir,
            "it is not a Collie store (bad superblock magic)",
        ));
    }
    if !sb.crc_ok() {
        return Err(incompatible(dir, "superblock checksum mismatch"));
    }
    if sb.format_version != FORMAT_VERSION {
        return Err(incompatible(
            dir,
            format!(
                "it was written in format version {}, this build reads version {FORMAT_VERSION}",
                sb.format_version
            ),
        ));
    }
    if let Some(want) = cfg.node_uuid {
        if want != sb.node_uuid {
            return Err(incompatible(
                dir,
                format!(
                    "it belongs to node {}, not {}",
                    hex(&sb.node_uuid),
                    hex(&want)
                ),
            ));
        }
    }
    if sb.partition_count == 0
        || !(1 << 20..=MAX_SEGMENT).contains(&sb.segment_size)
        || !sb.segment_size.is_multiple_of(BLOCK as u64)
    {
        return Err(incompatible(dir, "superblock has impossible geometry"));
    }
    Ok((sb, f))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// True if the store will run with O_DIRECT. On tmpfs (which refuses O_DIRECT on older
/// kernels and gains nothing from it on newer ones) glommio opens files buffered, and we
/// flush with fdatasync as usual. Any other file system that refuses O_DIRECT is an error:
/// glommio cannot open files there.
fn probe_direct_io(dir: &Path) -> Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    if nix_statfs_is_tmpfs(dir) {
        return Ok(false);
    }
    let path = dir.join(SUPERBLOCK);
    match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&path) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(StoreError::Invalid(format!(
            "{} refuses O_DIRECT and is not tmpfs; put the store on a local file system (ext4, xfs)",
            dir.display()
        ))),
        Err(e) => Err(StoreError::io("probing O_DIRECT", e)),
    }
}

fn nix_statfs_is_tmpfs(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs with a valid C string and a zeroed out-struct.
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type as i64 == libc::TMPFS_MAGIC
    }
}

/// Whether another process holds `dir`'s store lock right now (a running sheep). A probe
/// for messages before start-up; `Store::open` takes the lock for real.
pub fn in_use(dir: &Path) -> bool {
    let Ok(f) = std::fs::File::open(dir.join(SUPERBLOCK)) else {
        return false;
    };
    // SAFETY: flock on a valid, owned descriptor; released (with the file) right away.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) != 0 }
}

/// Space on the file system holding the store: (total, available) bytes.
pub fn fs_space(dir: &Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return (0, 0);
    };
    // SAFETY: statvfs with a valid C string and a zeroed out-struct.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return (0, 0);
        }
        (
            s.f_blocks as u64 * s.f_frsize as u64,
            s.f_bavail as u64 * s.f_frsize as u64,
        )
    }
}

impl Store {
    /// Opens the store in `cfg.dir`, creating it if the directory has none yet. Returns
    /// once every shard has replayed its partitions and is serving.
    pub fn open(cfg: StoreConfig) -> Result<Store> {
        let (sb, lock) = open_superblock(&cfg)?;
        let direct_io = probe_direct_io(&cfg.dir)?;
        if !direct_io {
            warn!(dir = %cfg.dir.display(), "store is on tmpfs: using buffered I/O with fdatasync instead of O_DIRECT");
        }
        let shards = cfg.shards.clamp(1, sb.partition_count as usize);
        if shards < cfg.shards {
            warn!(
                asked = cfg.shards,
                partitions = sb.partition_count,
                "more shards asked for than the store has partitions: running {shards}"
            );
        }
        let pcfg = PartitionConfig {
            segment_size: sb.segment_size,
            nonce: sb.nonce(),
            nosync: cfg.nosync,
            checkpoint_every: cfg.checkpoint_every,
            compact_below: cfg.compact_below,
            reserve_segments: u64::from(sb.partition_count) + crate::partition::RESERVE_SEGMENTS,
        };
        let mesh = (shards > 1).then(|| MeshBuilder::<Msg, _>::full(shards, 256));
        let (ready_tx, ready_rx) = flume::unbounded::<(usize, Result<usize>)>();
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for id in 0..shards {
            let (tx, rx) = flume::unbounded::<Cmd>();
            senders.push(tx);
            let dir = cfg.dir.clone();
            let pcfg = pcfg.clone();
            let mesh = mesh.clone();
            let ready = ready_tx.clone();
            let placement = if cfg.pin {
                Placement::Fixed(id)
            } else {
                Placement::Unbound
            };
            let every = cfg.maintenance_every;
            let pcount = sb.partition_count;
            let t = std::thread::Builder::new()
                .name(format!("collie-shard-{id}"))
                .spawn(move || {
                    let ex = match LocalExecutorBuilder::new(placement).name(&format!("shard{id}")).make() {
                        Ok(ex) => ex,
                        Err(e) => {
                            let msg = format!(
                                "cannot start shard executor {id}: {e} (io_uring needs locked memory: \
                                 raise `ulimit -l` to at least 512 KiB per shard)"
                            );
                            let _ = ready.send((id, Err(StoreError::io(msg, std::io::Error::other("executor")))));
                            return;
                        }
                    };
                    let _ = ready.send((id, Ok(id)));
                    // Joining the mesh waits for every peer, so start only once all exist.
                    if !matches!(rx.recv(), Ok(Cmd::Start)) {
                        return;
                    }
                    ex.run(shard_main(id, shards, pcount, dir, pcfg, mesh, every, ready, rx));
                })
                .map_err(|e| StoreError::io("spawning shard thread", e))?;
            threads.push(t);
        }
        drop(ready_tx);
        // Mesh peer ids are given in join order: learn which thread became which shard.
        let mut by_shard: Vec<Option<usize>> = vec![None; shards];
        let gather = |failure: &mut Option<StoreError>, by_shard: &mut Vec<Option<usize>>| {
            for _ in 0..shards {
                match ready_rx.recv() {
                    Ok((thread, Ok(shard))) => by_shard[shard] = Some(thread),
                    Ok((_, Err(e))) => {
                        failure.get_or_insert(e);
                    }
                    Err(_) => {
                        failure.get_or_insert(StoreError::Closed);
                    }
                }
            }
        };
        let mut failure = None;
        gather(&mut failure, &mut by_shard);
        if let Some(e) = failure {
            drop(senders);
            for t in threads {
                let _ = t.join();
            }
            return Err(e);
        }
        for s in &senders {
            let _ = s.send(Cmd::Start);
        }
        gather(&mut failure, &mut by_shard);
        let ordered: Vec<flume::Sender<Cmd>> =
            if failure.is_none() && by_shard.iter().all(|t| t.is_some()) {
                by_shard
                    .iter()
                    .flatten()
                    .map(|&t| senders[t].clone())
                    .collect()
            } else {
                failure.get_or_insert(StoreError::Invalid("shards did not all start".into()));
                senders
            };
        let mut store = Store {
            dir: cfg.dir.clone(),
            superblock: sb,
            direct_io,
            shards: ordered,
            threads,
            _lock: lock,
        };
        if let Some(e) = failure {
            let _ = store.stop();
            return Err(e);
        }
        info!(dir = %store.dir.display(), shards, direct_io, "store open");
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn node_uuid(&self) -> [u8; 16] {
        self.superblock.node_uuid
    }
    pub fn partition_count(&self) -> u32 {
        self.superblock.partition_count
    }
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }
    pub fn segment_size(&self) -> u64 {
        self.superblock.segment_size
    }
    /// False when the file system refused O_DIRECT and the store runs buffered.
    pub fn direct_io(&self) -> bool {
        self.direct_io
    }
    /// The shard that serves `oid` without a hop.
    pub fn owner(&self, oid: u64) -> usize {
        owner_of(
            partition_of(oid, self.superblock.partition_count),
            self.shards.len(),
        )
    }

    /// Runs `f` on shard `shard` and blocks until it finishes.
    pub fn run_on<F, Fut, R>(&self, shard: usize, f: F) -> Result<R>
    where
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = flume::bounded(1);
        let job: Job = Box::new(move |s| {
            Box::pin(async move {
                let _ = tx.send(f(s).await);
            })
        });
        let sender = self
            .shards
            .get(shard)
            .ok_or_else(|| StoreError::Invalid(format!("no shard {shard}")))?;
        sender.send(Cmd::Run(job)).map_err(|_| StoreError::Closed)?;
        rx.recv().map_err(|_| StoreError::Closed)
    }

    // Blocking conveniences (tests, tools): each runs on the object's owning shard.

    pub fn write(&self, oid: u64, offset: u64, data: Vec<u8>, meta: WriteMeta) -> Result<()> {
        self.run_on(self.owner(oid), move |s| async move {
            s.write(oid, offset, &data, meta).await
        })?
    }
    pub fn read(&self, oid: u64, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.run_on(self.owner(oid), move |s| async move {
            s.read(oid, offset, len).await
        })?
    }
    pub fn discard(&self, oid: u64, offset: u64, len: u64, meta: WriteMeta) -> Result<()> {
        self.run_on(self.owner(oid), move |s| async move {
            s.discard(oid, offset, len, meta).await
        })?
    }
    pub fn remove(&self, oid: u64) -> Result<()> {
        self.run_on(self.owner(oid), move |s| async move { s.remove(oid).await })?
    }
    pub fn stat(&self, oid: u64) -> Result<Option<ObjectInfo>> {
        self.run_on(self.owner(oid), move |s| async move { s.stat(oid).await })?
    }
    pub fn extents(&self, oid: u64, offset: u64, len: u64) -> Result<Vec<(u64, bool)>> {
        self.run_on(self.owner(oid), move |s| async move {
            s.extents(oid, offset, len).await
        })?
    }
    pub fn list(&self) -> Result<Vec<u64>> {
        self.run_on(0, |s| async move { s.list().await })?
    }
    pub fn stats(&self) -> Result<PartitionStats> {
        self.run_on(0, |s| async move { s.stats().await })?
    }
    /// Runs checkpointing/compaction on every shard now (instead of waiting for the timer).
    pub fn maintain(&self) -> Result<()> {
        for i in 0..self.shards.len() {
            self.run_on(i, |s| async move { s.maintain().await })?;
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<()> {
        let mut result = Ok(());
        for s in self.shards.drain(..) {
            let (tx, rx) = flume::bounded(1);
            let sent = s.send(Cmd::Shutdown(tx)).is_ok();
            // Drop our end first: if the shard already exited, its queue (holding `tx`)
            // is freed with the last handle and `recv` returns instead of waiting forever.
            drop(s);
            if sent {
                if let Ok(Err(e)) = rx.recv() {
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        result
    }

    /// Flushes everything, checkpoints every partition and stops the shards.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[allow(clippy::too_many_arguments)]
async fn shard_main(
    thread: usize,
    shards: usize,
    partition_count: u32,
    dir: PathBuf,
    pcfg: PartitionConfig,
    mesh: Option<MeshBuilder<Msg, glommio::channels::channel_mesh::Full>>,
    every: Duration,
    ready: flume::Sender<(usize, Result<usize>)>,
    rx: flume::Receiver<Cmd>,
) {
    let opened = async {
        // glommio probes IOPOLL support on the first DmaFile each executor opens on a
        // device, by reading its first block. An empty file makes the probe pass wrongly
        // and every later read fail with EOPNOTSUPP. Open the (never empty) superblock
        // first and read it, so the probe sees real data.
        let sb = DmaFile::open(dir.join(SUPERBLOCK))
            .await
            .map_err(|e| from_glommio("opening superblock", e))?;
        let block = sb
            .read_at_aligned(0, BLOCK)
            .await
            .map_err(|e| from_glommio("reading superblock", e))?;
        if block.len() < BLOCK || block[..8] != SUPERBLOCK_MAGIC {
            return Err(StoreError::io(
                "superblock probe read",
                std::io::ErrorKind::InvalidData.into(),
            ));
        }
        let _ = sb.close().await;
        let mesh = match mesh {
            Some(m) => Some(
                m.join()
                    .await
                    .map_err(|_| StoreError::Invalid("cannot join shard mesh".into()))?,
            ),
            None => None,
        };
        let id = mesh.as_ref().map_or(0, |(s, _)| s.peer_id());
        let mut parts = Vec::new();
        for p in (0..partition_count).filter(|&p| owner_of(p, shards) == id) {
            parts.push(Partition::open(&dir, p, pcfg.clone()).await?);
        }
        Ok(Shard::new(id, shards, partition_count, parts, mesh))
    }
    .await;
    let shard = match opened {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send((thread, Err(e)));
            return;
        }
    };
    shard.start_maintenance(every);
    let _ = ready.send((thread, Ok(shard.id)));
    while let Ok(cmd) = rx.recv_async().await {
        match cmd {
            Cmd::Run(job) => {
                glommio::spawn_local(job(shard.clone())).detach();
            }
            Cmd::Start => {}
            Cmd::Shutdown(done) => {
                let _ = done.send(shard.close().await);
                return;
            }
        }
    }
    let _ = shard.close().await;
}
