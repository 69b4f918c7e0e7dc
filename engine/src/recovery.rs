//! Recovery: after every change of membership each node makes sure it holds, up to
//! date, every object (copy or fragment) placement gives it, and drops what it no
//! longer has to hold once the new holders have it (docs/recovery.md).

use crate::cluster::view::ClusterView;
use crate::ec::Layout;
use crate::error::StoreError;
use crate::gateway::{self, Gateway, Target, META_COPIES};
use crate::held::{Counts, Held};
use crate::partition::{ObjectInfo, WriteMeta};
use crate::peer::{Call, Rpc, RpcError};
use crate::shard::{Reply, Shard};
use crate::vdi::{self, Inode, Objects};
use collie_net::admin::{CheckReport, RecoveryStat};
use collie_net::peer::{Op, FLAG_RECOVERY, FLAG_URGENT};
use collie_placement::ids::{base_oid, fragment_oid, object_kind, ObjectKind, Vid};
use futures::channel::oneshot;
use futures::future::{join_all, FutureExt, Shared};
use futures::StreamExt;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Background recovery's default limit per node. Measured here (fio-profiles/recovery.sh,
/// 7 nodes on 2 cores, 1G): unlimited, recovery copied ~450 MiB/s and a client's p99
/// read latency was 7x its idle value while it ran; 64 MiB/s: 4.9x, 40 MiB/s: 2.9x,
/// 32 MiB/s: 3.4x (runs vary by about 1x). Faster machines want more: `dog cluster
/// recover rate`.
pub const DEFAULT_RATE: u64 = 64 << 20;

static ENABLED: AtomicBool = AtomicBool::new(true);
static RATE: AtomicU64 = AtomicU64::new(DEFAULT_RATE);

/// This node's recovery state: the newest epoch any shard works on, summed over the
/// shards at that epoch.
pub fn progress() -> RecoveryStat {
    let epoch = SHARDS
        .iter()
        .map(|c| c.epoch.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let mut p = RecoveryStat {
        epoch,
        complete: true,
        enabled: ENABLED.load(Ordering::Relaxed),
        rate: RATE.load(Ordering::Relaxed),
        ..RecoveryStat::default()
    };
    for c in SHARDS
        .iter()
        .filter(|c| c.epoch.load(Ordering::Relaxed) == epoch)
    {
        p.complete &= !c.running.load(Ordering::Relaxed);
        p.objects_total += c.total.load(Ordering::Relaxed);
        p.objects_done += c.done.load(Ordering::Relaxed);
        p.bytes += c.bytes.load(Ordering::Relaxed);
        p.objects_lost += c.lost.load(Ordering::Relaxed);
    }
    p
}

/// Pauses (false) or resumes background recovery. Objects clients ask for are still
/// brought up to date first: a paused recovery never lets a client see stale bytes.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Limits background recovery to `bytes_per_sec` (0: no limit).
pub fn set_rate(bytes_per_sec: u64) {
    RATE.store(bytes_per_sec, Ordering::Relaxed);
}

// ------------------------------------------------------------------- what is current

/// What placement asks of a node for one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// A copy of an object with this many copies.
    Copy(usize),
    /// Fragment `slot` of an erasure-coded object `width` fragments wide.
    Fragment { width: usize, slot: usize },
}

/// Whether `key` is placed on this node in view `v`.
fn placed_here(v: &ClusterView, key: u64, p: Place) -> bool {
    let Some(me) = v.me() else {
        return false;
    };
    match p {
        Place::Copy(c) => v.targets(key, c).contains(&me),
        Place::Fragment { width, slot } => v.targets(base_oid(key), width).get(slot) == Some(&me),
    }
}

/// Views this shard kept (the newest few), for telling whether it stayed a target.
const KEPT_VIEWS: usize = 64;

#[derive(Default)]
struct Local {
    views: BTreeMap<u32, Arc<ClusterView>>,
    /// Key (copy or fragment) -> the epoch at which this shard last knew its copy up
    /// to date. It stays up to date as long as the node stays a target: every write
    /// of those epochs came here.
    current: HashMap<u64, u32>,
    /// The newest epoch whose background pass finished on this shard: every object
    /// placed here that existed then was brought up to date.
    complete: u32,
    /// Keys being brought up to date now (and by which settle); requests for them wait.
    settling: HashMap<u64, (u64, Shared<oneshot::Receiver<()>>)>,
    /// Primary side: the epoch and report of the last repairing check of an object.
    checked: HashMap<u64, (u32, CheckReport)>,
    /// The epoch of the newest pass started (a view rebuilt at the same epoch, after
    /// format or when the last awaited member came back, does not start a second).
    pass: u32,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
    static NEXT_SETTLE: Cell<u64> = const { Cell::new(0) };
    /// Epoch -> client writes of that epoch being applied on this shard.
    static WRITING: Counts<u32> = const { RefCell::new(BTreeMap::new()) };
    static QUEUE: Cell<Option<glommio::TaskQueueHandle>> = const { Cell::new(None) };
}

/// Whether this shard's copy of `key` is known to be up to date at `v`'s epoch (and
/// records it if so).
fn check_current(key: u64, p: Option<Place>, v: &ClusterView) -> bool {
    LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        let Some(&e0) = l.current.get(&key) else {
            return false;
        };
        if e0 == v.epoch {
            return true;
        }
        let Some(p) = p else {
            return false;
        };
        // Every epoch since: seen by this node, and the key placed here in it.
        let stayed = e0 < v.epoch
            && (e0 + 1..=v.epoch).all(|e| match l.views.get(&e) {
                Some(w) => placed_here(w, key, p),
                None => e == v.epoch && placed_here(v, key, p),
            });
        if stayed {
            l.current.insert(key, v.epoch);
        }
        stayed
    })
}

fn mark_current(key: u64, epoch: u32) {
    LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        let e = l.current.entry(key).or_insert(epoch);
        *e = (*e).max(epoch);
    });
}

fn forget(key: u64) {
    LOCAL.with(|l| l.borrow_mut().current.remove(&key));
}

fn complete_at(epoch: u32) -> bool {
    LOCAL.with(|l| l.borrow().complete == epoch)
}

/// Whether `key` is being brought up to date on this shard right now (its bytes are
/// not to be copied from here meanwhile).
pub(crate) fn settling(key: u64) -> bool {
    LOCAL.with(|l| l.borrow().settling.contains_key(&key))
}

/// A new fragment written whole by its creating write is up to date.
pub(crate) fn fragment_created(key: u64) {
    mark_current(key, gateway::current_epoch());
}

/// Whether this holder may answer "newest version" reads of fragment `key` of an
/// object `width` fragments wide: only if it is known not to have missed writes.
/// Otherwise the reader takes the careful path (versions of every holder decide).
pub(crate) fn fragment_current(key: u64, width: usize) -> bool {
    let Some(v) = gateway::view() else {
        return true;
    };
    let ObjectKind::Fragment { fragment, .. } = object_kind(key) else {
        return false;
    };
    let p = Place::Fragment {
        width,
        slot: usize::from(fragment),
    };
    check_current(key, Some(p), &v)
}

/// The report of a repairing check of `oid` this primary completed at `epoch`.
pub(crate) fn checked(oid: u64, epoch: u32) -> Option<CheckReport> {
    LOCAL.with(|l| {
        l.borrow()
            .checked
            .get(&oid)
            .filter(|(e, _)| *e == epoch)
            .map(|(_, r)| *r)
    })
}

/// A repairing check of `oid` completed at `epoch`: every target holds its fragment.
pub(crate) fn record_check(oid: u64, epoch: u32, r: &CheckReport) {
    if r.lost == 0 {
        LOCAL.with(|l| l.borrow_mut().checked.insert(oid, (epoch, *r)));
    }
}

// ---------------------------------------------------------- before serving a request

fn not_ready(key: u64, e: impl std::fmt::Display) -> RpcError {
    RpcError::Store(StoreError::NotReady(format!(
        "{key:#018x} is being brought up to date: {e}"
    )))
}

/// Runs before a target serves a client's request for replicated object `oid`
/// (placed with `copies` copies, 0 if unknown): if this node's copy may have missed
/// writes, it is brought up to date first (objects clients wait for go first).
pub(crate) async fn ready(sh: &Rc<Shard>, oid: u64, copies: usize, why: Why) -> Rpc<()> {
    if sh.owns(oid) {
        ready_here(sh, oid, copies, why).await
    } else {
        let stat = crate::shard::Op::Stat { oid };
        sh.client(stat, copies, why).await.map(|_| ())?;
        Ok(())
    }
}

/// Who needs a copy brought up to date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// A client's change (write, discard): it waits, and the copy is fetched as fast as
    /// possible (no rate limit, peers serve it at their clients' priority).
    Change,
    /// A client's read: another copy may serve it, so a copy that is not current
    /// answers "not ready" at once (the gateway tries the next) and is fetched
    /// meanwhile, as for a change.
    Read,
    /// The background pass: at the configured rate, after the peers' clients.
    Background,
}

impl Why {
    /// For a client request of `op`. A `Stat` waits: recovery's hand-off asks targets
    /// for it to have them fetch the object.
    pub(crate) fn of(op: Op) -> Why {
        match op {
            Op::Read | Op::Extents => Why::Read,
            _ => Why::Change,
        }
    }
}

/// [`ready`] on the shard that owns `oid`.
pub(crate) async fn ready_here(sh: &Rc<Shard>, oid: u64, copies: usize, why: Why) -> Rpc<()> {
    let Some(v) = gateway::view() else {
        return Ok(());
    };
    let place = (copies > 0).then_some(Place::Copy(copies));
    if check_current(oid, place, &v) {
        return Ok(());
    }
    // After a finished pass, an object this node lacks did not exist then: it is new.
    if complete_at(v.epoch) && !settling(oid) && sh.stat(oid).await?.is_none() {
        mark_current(oid, v.epoch);
        return Ok(());
    }
    if why == Why::Read {
        if !settling(oid) {
            let sh = sh.clone();
            glommio::spawn_local(async move {
                if let Err(e) = ready_here(&sh, oid, copies, Why::Change).await {
                    tracing::debug!(
                        oid = format!("{oid:#018x}"),
                        "bringing a copy up to date: {e}"
                    );
                }
            })
            .detach();
        }
        return Err(not_ready(
            oid,
            "this copy is not known to be up to date yet",
        ));
    }
    let gw = Gateway::new(sh.clone());
    settle_once(oid, v.epoch, settle_copy(&gw, &v, oid, why)).await?;
    Ok(())
}

/// Runs `settle` for `key` unless another task is already at it (then waits for it).
async fn settle_once<T: Default>(
    key: u64,
    epoch: u32,
    settle: impl std::future::Future<Output = Rpc<T>>,
) -> Rpc<T> {
    loop {
        let Some((_, w)) = LOCAL.with(|l| l.borrow().settling.get(&key).cloned()) else {
            break;
        };
        // Ends when that settle ends, or is dropped (its guard then removed it).
        let _ = w.await;
        if LOCAL.with(|l| l.borrow().current.get(&key) == Some(&epoch)) {
            return Ok(T::default());
        }
    }
    let id = NEXT_SETTLE.with(|n| {
        n.set(n.get() + 1);
        n.get()
    });
    let (tx, rx) = oneshot::channel::<()>();
    LOCAL.with(|l| l.borrow_mut().settling.insert(key, (id, rx.shared())));
    let guard = Settling { key, id, _done: tx };
    let r = settle.await;
    if r.is_ok() {
        LOCAL.with(|l| l.borrow_mut().current.insert(key, epoch));
    }
    drop(guard);
    r
}

/// Marks a key as being brought up to date; dropping it (done, failed, or the request
/// that ran it went away) lets the waiters go on.
struct Settling {
    key: u64,
    id: u64,
    _done: oneshot::Sender<()>,
}

impl Drop for Settling {
    fn drop(&mut self) {
        LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            if l.settling
                .get(&self.key)
                .is_some_and(|(id, _)| *id == self.id)
            {
                l.settling.remove(&self.key);
            }
        });
    }
}

// ------------------------------------------- writes of older epochs still being applied

/// A write a gateway sent at some epoch, being applied on this shard.
pub(crate) type Applying = Held<u32>;

/// Starts applying a write a gateway sent at `epoch`. Refused once this shard is past
/// that epoch (the gateway retries at the new one): so every write of an older epoch
/// that is applied at all was counted before the new epoch began, and [`drained`] can
/// wait for it.
pub(crate) fn applying(epoch: u32) -> Result<Applying, StoreError> {
    let now = gateway::current_epoch();
    if epoch < now {
        return Err(StoreError::NotReady(format!(
            "a write sent at epoch {epoch} reached a node at epoch {now}"
        )));
    }
    Ok(Held::new(&WRITING, epoch))
}

/// How long recovery's reads wait for older writes before going on regardless.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Waits until no write of an epoch older than this shard's is still being applied
/// here. A copy (or fragment) read for recovery afterwards holds every write that was
/// acknowledged at those epochs; without the wait, a new target could copy an object
/// just before a write accepted at the old epoch lands, and miss it for good.
pub(crate) async fn drained() {
    let now = gateway::current_epoch();
    let end = std::time::Instant::now() + DRAIN_LIMIT;
    while WRITING.with(|w| w.borrow().range(..now).next().is_some()) {
        if std::time::Instant::now() >= end {
            tracing::warn!(
                epoch = now,
                "writes of older epochs still running after {DRAIN_LIMIT:?}"
            );
            return;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

/// Brings this node's copy of `oid` up to date: asks every other member for its copy
/// and, if one was written at a later epoch than ours, replaces ours with it. Returns
/// the bytes copied.
async fn settle_copy(gw: &Gateway, v: &ClusterView, oid: u64, why: Why) -> Rpc<u64> {
    let sh = gw.shard();
    let mine = sh.stat(oid).await?;
    let mut stat = Call::new(Op::Stat, oid);
    stat.flags = recovery_flags(why);
    let others: Vec<SocketAddr> = v
        .members
        .iter()
        .enumerate()
        .filter(|(i, _)| !v.is_me(*i))
        .filter_map(|(_, m)| gateway::peer_addr(m, oid))
        .collect();
    let answers = join_all(
        others
            .iter()
            .map(|&a| gw.exec(v.epoch, Target::Remote(a), &stat)),
    )
    .await;
    let mut best: Option<(ObjectInfo, SocketAddr)> = None;
    for (&a, r) in others.iter().zip(answers) {
        match r {
            Ok(Reply::Stat(Some(i))) if best.is_none_or(|(b, _)| i.epoch > b.epoch) => {
                best = Some((i, a))
            }
            Ok(_) => {}
            Err(e) => return Err(not_ready(oid, e)),
        }
    }
    match best {
        Some((info, from)) if mine.is_none_or(|m| info.epoch > m.epoch) => {
            copy_from(gw, v.epoch, from, oid, info, why).await
        }
        _ => Ok(0),
    }
}

fn recovery_flags(why: Why) -> u8 {
    match why {
        Why::Change | Why::Read => FLAG_RECOVERY | FLAG_URGENT,
        Why::Background => FLAG_RECOVERY,
    }
}

/// Checks a peer's `(length, has_data)` runs of an object of `size` bytes: they must
/// cover it exactly (a peer's answer is outside input).
pub(crate) fn check_runs(runs: &[(u64, bool)], size: u64) -> Result<(), StoreError> {
    let total = runs
        .iter()
        .try_fold(0u64, |t, &(len, _)| t.checked_add(len));
    if total == Some(size) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "a peer's extents cover {total:?} bytes of a {size}-byte object"
        )))
    }
}

/// Replaces this node's copy of `oid` with the one at `from` (described by `info`).
/// Holes stay holes. Every record but the last carries epoch 0, so a copy cut short
/// by a crash looks older than any real one and is fetched again.
async fn copy_from(
    gw: &Gateway,
    epoch: u32,
    from: SocketAddr,
    oid: u64,
    info: ObjectInfo,
    why: Why,
) -> Rpc<u64> {
    let sh = gw.shard();
    let t = Target::Remote(from);
    let mut ext = Call::new(Op::Extents, oid);
    ext.len = info.size;
    ext.flags = recovery_flags(why);
    let runs = match gw.exec(epoch, t, &ext).await? {
        Reply::Extents(e) => e,
        _ => return Err(StoreError::Invalid("extents answer expected".into()).into()),
    };
    check_runs(&runs, info.size)?;
    let pieces = data_pieces(&runs);
    let meta = |last: bool| WriteMeta {
        object_size: info.size,
        version: info.version,
        epoch: if last { info.epoch } else { 0 },
    };
    sh.remove(oid).await?;
    let mut copied = 0;
    for (k, &(offset, len)) in pieces.iter().enumerate() {
        let mut rd = Call::new(Op::Read, oid);
        rd.offset = offset;
        rd.len = len;
        rd.flags = recovery_flags(why);
        let bytes = match gw.exec(epoch, t, &rd).await? {
            Reply::Data(d) if d.len() as u64 == len => d,
            _ => {
                return Err(StoreError::Invalid("short read from the copy's holder".into()).into())
            }
        };
        sh.write(oid, offset, &bytes, meta(k + 1 == pieces.len()))
            .await?;
        copied += len;
        counters(sh.id).bytes.fetch_add(len, Ordering::Relaxed);
        if why == Why::Background {
            throttle(len, sh.shards).await;
        }
    }
    if pieces.is_empty() {
        // An object with no data at all still exists: a discard alone creates nothing,
        // so one block is written first.
        let block = vec![0u8; 4096.min(info.size as usize)];
        sh.write(oid, 0, &block, meta(false)).await?;
        sh.discard(oid, 0, info.size, meta(true)).await?;
    }
    tracing::debug!(
        oid = format!("{oid:#018x}"),
        bytes = copied,
        "copy brought up to date"
    );
    Ok(copied)
}

/// The `(offset, len)` pieces, at most [`COPY_PIECE`] bytes each, of the data runs
/// among an object's `(length, has_data)` runs (checked by [`check_runs`]).
pub(crate) fn data_pieces(runs: &[(u64, bool)]) -> Vec<(u64, u64)> {
    let mut pieces = Vec::new();
    let mut at = 0u64;
    for &(len, data) in runs {
        let mut o = at;
        while data && o < at + len {
            let n = (at + len - o).min(COPY_PIECE);
            pieces.push((o, n));
            o += n;
        }
        at += len;
    }
    pieces
}

/// Bytes per read when copying an object from another node.
const COPY_PIECE: u64 = 1 << 20;

/// Sleeps as long as `bytes` take at the configured rate, which is per node: each of
/// the node's `shards` shards copies at its share of it.
async fn throttle(bytes: u64, shards: usize) {
    let rate = RATE.load(Ordering::Relaxed);
    if rate > 0 {
        let secs = bytes as f64 * shards.max(1) as f64 / rate as f64;
        glommio::timer::sleep(Duration::from_secs_f64(secs)).await;
    }
}

// ------------------------------------------------------------- the background pass

/// Objects one shard brings up to date at once in the background.
const IN_FLIGHT: usize = 4;
/// Pause before a pass retries what failed (doubling up to the cap).
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(15);

/// Per-shard progress, summed by [`progress`] (shards past the end share the last).
struct Counters {
    epoch: AtomicU32,
    running: AtomicBool,
    total: AtomicU64,
    done: AtomicU64,
    bytes: AtomicU64,
    lost: AtomicU64,
}

const SLOTS: usize = 64;
#[allow(clippy::declare_interior_mutable_const)]
const IDLE: Counters = Counters {
    epoch: AtomicU32::new(0),
    running: AtomicBool::new(false),
    total: AtomicU64::new(0),
    done: AtomicU64::new(0),
    bytes: AtomicU64::new(0),
    lost: AtomicU64::new(0),
};
static SHARDS: [Counters; SLOTS] = [IDLE; SLOTS];

fn counters(shard: usize) -> &'static Counters {
    &SHARDS[shard.min(SLOTS - 1)]
}

/// What one background step looks at.
enum Item {
    /// A replicated object (data or inode) placed here, or held here and placed elsewhere.
    Copy { oid: u64, copies: usize },
    /// An erasure-coded object this node holds or should hold a fragment of; `held`:
    /// its fragment keys this node has.
    Erasure {
        oid: u64,
        lay: Layout,
        held: Vec<u64>,
    },
}

impl Item {
    fn oid(&self) -> u64 {
        match *self {
            Item::Copy { oid, .. } | Item::Erasure { oid, .. } => oid,
        }
    }
}

/// Called on every shard when it installs a new view: remembers the view and starts
/// this shard's pass for the epoch (a pass of an older epoch stops by itself).
pub(crate) fn on_view(sh: &Rc<Shard>, v: &Arc<ClusterView>) {
    let serving = v.serving() && v.me().is_some();
    let start = LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        l.views.insert(v.epoch, v.clone());
        // Checks of older epochs say nothing about the targets of this one.
        let epoch = v.epoch;
        l.checked.retain(|_, (e, _)| *e >= epoch);
        while l.views.len() > KEPT_VIEWS {
            l.views.pop_first();
        }
        let start = serving && l.pass != v.epoch;
        if start {
            l.pass = v.epoch;
        }
        start
    });
    if !start {
        return;
    }
    let (sh, v) = (sh.clone(), v.clone());
    let pass = async move { run(&sh, &v).await };
    match glommio::spawn_local_into(pass, queue()) {
        Ok(t) => {
            t.detach();
        }
        Err(e) => tracing::error!("starting recovery: {e}"),
    }
}

/// The shard's low-priority task queue for background recovery (clients come first);
/// peers' recovery requests are served in it too.
pub(crate) fn queue() -> glommio::TaskQueueHandle {
    QUEUE.with(|q| {
        q.get().unwrap_or_else(|| {
            let h = glommio::executor().create_task_queue(
                glommio::Shares::Static(25),
                glommio::Latency::NotImportant,
                "recovery",
            );
            q.set(Some(h));
            h
        })
    })
}

fn stale(v: &ClusterView) -> bool {
    gateway::current_epoch() != v.epoch
}

async fn run(sh: &Rc<Shard>, v: &ClusterView) {
    let c = counters(sh.id);
    c.epoch.store(v.epoch, Ordering::Relaxed);
    c.total.store(0, Ordering::Relaxed);
    c.done.store(0, Ordering::Relaxed);
    c.bytes.store(0, Ordering::Relaxed);
    c.lost.store(0, Ordering::Relaxed);
    c.running.store(true, Ordering::Relaxed);
    let gw = Gateway::new(sh.clone());
    let mut pause = RETRY_FIRST;
    // What is left to do, each with the times in a row it was found lost.
    let mut todo: Option<Vec<(Item, u32)>> = None;
    loop {
        if stale(v) {
            // The newer epoch's pass took over (and keeps what this one settled).
            return;
        }
        let items = match todo.take() {
            Some(items) => items,
            None => match plan(&gw, v).await {
                Ok(items) => {
                    c.total.store(items.len() as u64, Ordering::Relaxed);
                    items.into_iter().map(|it| (it, 0)).collect()
                }
                Err(e) => {
                    tracing::info!(epoch = v.epoch, "recovery cannot list objects yet: {e}");
                    glommio::timer::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_CAP);
                    continue;
                }
            },
        };
        let failed: Vec<(Item, u32)> = futures::stream::iter(items)
            .map(|(it, lost)| {
                let gw = &gw;
                async move {
                    match recover(gw, v, &it).await {
                        Ok(Outcome::Done) => {
                            c.done.fetch_add(1, Ordering::Relaxed);
                            None
                        }
                        // Lost again and again: a holder that was only slow would have
                        // answered by now. The pass goes on without it (a pass that
                        // never ends keeps every new object's first write asking every
                        // member); the next epoch's pass tries it again.
                        Ok(Outcome::Lost(why)) if lost + 1 >= LOST_TRIES => {
                            tracing::error!(
                                epoch = v.epoch,
                                oid = format!("{:#018x}", it.oid()),
                                "object cannot be recovered ({why}); recovery goes on without it \
                                 (dog cluster check reports what cannot be read)"
                            );
                            c.done.fetch_add(1, Ordering::Relaxed);
                            c.lost.fetch_add(1, Ordering::Relaxed);
                            None
                        }
                        Ok(Outcome::Lost(_)) => Some((it, lost + 1)),
                        Err(e) => {
                            tracing::debug!(epoch = v.epoch, "recovery will retry an object: {e}");
                            Some((it, lost))
                        }
                    }
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .filter_map(|x| async move { x })
            .collect()
            .await;
        if failed.is_empty() && !stale(v) {
            LOCAL.with(|l| {
                let mut l = l.borrow_mut();
                l.complete = l.complete.max(v.epoch);
            });
            c.running.store(false, Ordering::Relaxed);
            tracing::info!(
                epoch = v.epoch,
                shard = sh.id,
                objects = c.total.load(Ordering::Relaxed),
                bytes = c.bytes.load(Ordering::Relaxed),
                "recovery complete"
            );
            return;
        }
        if !failed.is_empty() {
            tracing::info!(
                epoch = v.epoch,
                objects = failed.len(),
                "recovery retries objects it could not bring up to date yet"
            );
            glommio::timer::sleep(pause).await;
            pause = (pause * 2).min(RETRY_CAP);
        }
        todo = Some(failed);
    }
}

/// Every object this shard has to look at in `v`: those placed here that are not known
/// to be up to date, and those held here but placed elsewhere.
async fn plan(gw: &Gateway, v: &ClusterView) -> Rpc<Vec<Item>> {
    let sh = gw.shard();
    let mut all: Vec<u64> = Vec::new();
    let mut mine: HashSet<u64> = HashSet::new();
    for (me, list) in gw.member_lists(v).await? {
        let owned = list.into_iter().filter(|&o| sh.owns(o));
        if me {
            mine.extend(owned);
        } else {
            all.extend(owned);
        }
    }
    all.extend(mine.iter().copied());
    all.sort_unstable();
    all.dedup();

    // Each VDI's inode, read once (None: no inode).
    let mut vdis: HashMap<Vid, Option<Inode>> = HashMap::new();
    let mut items = Vec::new();
    let mut fragments: BTreeMap<u64, (Layout, Vec<u64>)> = BTreeMap::new();
    for oid in all {
        let kind = object_kind(oid);
        let vid = match kind {
            ObjectKind::Inode { vid }
            | ObjectKind::Data { vid, .. }
            | ObjectKind::Fragment { vid, .. } => vid,
            // Cluster records are per node; nothing else is placed.
            _ => continue,
        };
        if let std::collections::hash_map::Entry::Vacant(slot) = vdis.entry(vid) {
            let inode = vdi::read_inode(gw, vid)
                .await
                .map_err(|e| RpcError::Retry(format!("reading the inode of {vid:?}: {e}")))?;
            slot.insert(inode);
        }
        let inode = vdis.get(&vid).and_then(Option::as_ref);
        if let ObjectKind::Inode { .. } = kind {
            // Deleted VDIs' inodes (tombstones) are kept like live ones.
            let copies = inode.map_or(META_COPIES, Inode::meta_copies);
            copy_item(v, &mine, oid, copies, &mut items);
            continue;
        }
        let objects = inode
            .filter(|ino| !ino.deleted)
            .and_then(|ino| Objects::of(ino).ok());
        match (objects, kind) {
            (Some(Objects::Replicated { copies }), ObjectKind::Data { .. }) => {
                copy_item(v, &mine, oid, copies, &mut items)
            }
            (Some(Objects::Erasure(lay)), ObjectKind::Fragment { .. }) => {
                let e = fragments
                    .entry(base_oid(oid))
                    .or_insert_with(|| (lay, Vec::new()));
                if mine.contains(&oid) {
                    e.1.push(oid);
                }
            }
            // A VDI that is gone, or an object that does not fit its VDI: left alone.
            _ => {}
        }
    }
    for (oid, (lay, held)) in fragments {
        let slot = my_slot(v, oid, &lay);
        let mine_ok = slot.is_none_or(|j| {
            check_current(
                fragment_oid(oid, j as u8),
                Some(Place::Fragment {
                    width: lay.width(),
                    slot: j,
                }),
                v,
            )
        });
        let extra = held
            .iter()
            .any(|&k| slot.is_none_or(|j| k != fragment_oid(oid, j as u8)));
        if !mine_ok || extra {
            items.push(Item::Erasure { oid, lay, held });
        }
    }
    Ok(items)
}

fn copy_item(v: &ClusterView, mine: &HashSet<u64>, oid: u64, copies: usize, out: &mut Vec<Item>) {
    let place = Place::Copy(copies);
    let wanted = placed_here(v, oid, place) && !check_current(oid, Some(place), v);
    let leftover = !placed_here(v, oid, place) && mine.contains(&oid);
    if wanted || leftover {
        out.push(Item::Copy { oid, copies });
    }
}

/// This node's fragment slot of `oid` in `v`.
fn my_slot(v: &ClusterView, oid: u64, lay: &Layout) -> Option<usize> {
    v.targets(oid, lay.width()).iter().position(|&i| v.is_me(i))
}

/// Waits while recovery is disabled; fails once the epoch is gone.
async fn wait_enabled(v: &ClusterView) -> Rpc<()> {
    while !ENABLED.load(Ordering::Relaxed) {
        if stale(v) {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(200)).await;
    }
    if stale(v) {
        return Err(RpcError::Retry("a newer epoch started".into()));
    }
    Ok(())
}

/// How an item of a pass ended.
enum Outcome {
    Done,
    /// Nothing to rebuild it from, and why (too few fragments left anywhere, or too
    /// few zones to place D of them).
    Lost(String),
}

/// Times in a row an object must be found lost before a pass gives up on it.
const LOST_TRIES: u32 = 4;

async fn recover(gw: &Gateway, v: &ClusterView, it: &Item) -> Rpc<Outcome> {
    wait_enabled(v).await?;
    let sh = gw.shard();
    match *it {
        Item::Copy { oid, copies } if placed_here(v, oid, Place::Copy(copies)) => {
            ready_here(sh, oid, copies, Why::Background).await?;
            Ok(Outcome::Done)
        }
        Item::Copy { oid, copies } => {
            hand_off(gw, v, oid, copies).await?;
            Ok(Outcome::Done)
        }
        Item::Erasure { oid, lay, ref held } => recover_fragments(gw, v, oid, &lay, held).await,
    }
}

/// Drops this node's copy of an object placed elsewhere, once every target has it:
/// asking a target for the object's state first brings its copy up to date.
async fn hand_off(gw: &Gateway, v: &ClusterView, oid: u64, copies: usize) -> Rpc<()> {
    let (epoch, ts) = gw.targets(oid, copies)?;
    if epoch != v.epoch {
        return Err(RpcError::Retry("a newer epoch started".into()));
    }
    if ts.contains(&Target::Local) {
        return Ok(());
    }
    let stat = Call::new(Op::Stat, oid).with_copies(copies);
    for r in join_all(ts.iter().map(|&t| gw.exec(epoch, t, &stat))).await {
        match r? {
            Reply::Stat(Some(_)) => {}
            _ => return Err(not_ready(oid, "a target does not hold it yet")),
        }
    }
    if stale(v) {
        return Err(RpcError::Retry("a newer epoch started".into()));
    }
    gw.shard().remove(oid).await?;
    forget(oid);
    tracing::debug!(
        oid = format!("{oid:#018x}"),
        "copy handed off to its targets"
    );
    Ok(())
}

/// Has the object's primary check (and repair) every fragment at this epoch, so that
/// this node's fragment is rebuilt if it is missing or stale; then drops fragments of
/// it held here but placed elsewhere.
async fn recover_fragments(
    gw: &Gateway,
    v: &ClusterView,
    oid: u64,
    lay: &Layout,
    held: &[u64],
) -> Rpc<Outcome> {
    if v.zones() < lay.data() {
        return Ok(Outcome::Lost(format!(
            "{} zones left, {} needed to place its data fragments",
            v.zones(),
            lay.data()
        )));
    }
    let r = gw.ec_recovery_check(oid, lay).await?;
    if stale(v) {
        // The check ran at a newer epoch: this view's slots are not the ones it fixed.
        return Err(RpcError::Retry("a newer epoch started".into()));
    }
    if r.objects == 0 && !held.is_empty() {
        // We hold a fragment, yet the check found none: some holder did not answer.
        return Err(not_ready(oid, "the check found no fragment"));
    }
    if r.lost > 0 {
        // Nothing is rebuilt or dropped: what is left may still be needed.
        return Ok(Outcome::Lost(format!(
            "{} stripes have fewer than {} fragments anywhere",
            r.lost,
            lay.data()
        )));
    }
    counters(gw.shard().id)
        .bytes
        .fetch_add(r.repaired * lay.geo.chunk(), Ordering::Relaxed);
    let slot = my_slot(v, oid, lay);
    if let Some(j) = slot {
        mark_current(fragment_oid(oid, j as u8), v.epoch);
    }
    if r.unplaced == 0 {
        for &k in held {
            if slot.is_none_or(|j| k != fragment_oid(oid, j as u8)) {
                if stale(v) {
                    return Err(RpcError::Retry("a newer epoch started".into()));
                }
                crate::ec::drop_fragment(gw.shard(), k).await?;
                forget(k);
            }
        }
    }
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Member, View};
    use collie_placement::node::NodeId;

    fn member(i: u16) -> Member {
        Member {
            id: NodeId::new("127.0.0.1".parse().unwrap(), 7000 + i),
            zone: u32::from(i),
            capacity: 1 << 40,
            nbd_port: 0,
            peer_ports: vec![8000 + i],
            partitions: 8,
            pid: 0,
        }
    }

    fn view(epoch: u32, nodes: &[u16]) -> Arc<ClusterView> {
        let v = View {
            epoch,
            members: nodes.iter().map(|&i| member(i)).collect(),
        };
        Arc::new(ClusterView::new(v, 1 << 30, member(0).id, Vec::new()).unwrap())
    }

    fn install(views: &[&Arc<ClusterView>]) {
        LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            *l = Local::default();
            for v in views {
                l.views.insert(v.epoch, (*v).clone());
            }
        });
    }

    #[test]
    fn a_copy_stays_current_only_while_its_node_stays_a_target() {
        // Node 6 joins at epoch 6 and leaves at 7.
        let all = [0, 1, 2, 3, 4, 5, 6];
        let (v5, v6, v7) = (view(5, &all[..6]), view(6, &all), view(7, &all[..6]));
        let c3 = Place::Copy(3);
        let here = |v: &ClusterView, o: u64| placed_here(v, o, c3);
        // Placed here all along, and placed here at 5 and 7 but not at 6.
        let stayed = (1..100_000u64)
            .find(|&o| here(&v5, o) && here(&v6, o) && here(&v7, o))
            .unwrap();
        let left = (1..100_000u64)
            .find(|&o| here(&v5, o) && !here(&v6, o) && here(&v7, o))
            .unwrap();
        install(&[&v5, &v6, &v7]);
        mark_current(stayed, 5);
        mark_current(left, 5);
        assert!(check_current(stayed, Some(c3), &v7));
        assert!(
            !check_current(left, Some(c3), &v7),
            "missed epoch 6's writes"
        );
        // Refreshed: current at 7 now.
        assert!(LOCAL.with(|l| l.borrow().current.get(&stayed) == Some(&7)));
        // Unknown copies: only a copy known current at this very epoch counts.
        mark_current(left, 5);
        assert!(!check_current(left, None, &v7));
        // An epoch this node never saw: it may have missed writes.
        install(&[&v5, &v7]);
        mark_current(stayed, 5);
        assert!(!check_current(stayed, Some(c3), &v7));
    }

    #[test]
    fn a_fragment_is_current_only_in_its_own_slot() {
        let all = [0, 1, 2, 3, 4, 5, 6];
        let (v1, v2) = (view(1, &all), view(2, &all[..6]));
        let width = 6;
        // An object whose slot for this node changes when node 6 leaves.
        let (oid, j) = (1..100_000u64)
            .find_map(|o| {
                let j1 = v1.targets(o, width).iter().position(|&i| v1.is_me(i))?;
                let j2 = v2.targets(o, width).iter().position(|&i| v2.is_me(i))?;
                (j1 != j2).then_some((o, j1))
            })
            .unwrap();
        let key = fragment_oid(oid, j as u8);
        install(&[&v1, &v2]);
        mark_current(key, 1);
        assert!(!check_current(
            key,
            Some(Place::Fragment { width, slot: j }),
            &v2
        ));
        assert!(check_current(
            key,
            Some(Place::Fragment { width, slot: j }),
            &v1
        ));
    }

    #[test]
    fn a_settle_whose_request_went_away_does_not_block_the_key() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                install(&[]);
                let never = settle_once::<()>(7, 1, futures::future::pending());
                let wait = glommio::timer::sleep(Duration::from_millis(10));
                // The client's connection ends: its request future is dropped.
                let _ = futures::future::select(Box::pin(never), Box::pin(wait)).await;
                assert!(!settling(7));
                settle_once::<()>(7, 1, async { Ok(()) }).await.unwrap();
                assert!(LOCAL.with(|l| l.borrow().current.get(&7) == Some(&1)));
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn recovery_reads_wait_for_writes_of_older_epochs() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                gateway::set_view(Some(view(5, &[0, 1, 2])));
                let w = applying(5).unwrap();
                gateway::set_view(Some(view(6, &[0, 1])));
                // A write sent at 5 that arrives now is refused (the gateway retries).
                assert!(matches!(applying(5), Err(StoreError::NotReady(_))));
                let _at_6 = applying(6).unwrap();
                let done = Rc::new(Cell::new(false));
                let d = done.clone();
                let writer = glommio::spawn_local(async move {
                    glommio::timer::sleep(Duration::from_millis(30)).await;
                    d.set(true);
                    drop(w);
                });
                drained().await;
                assert!(
                    done.get(),
                    "a recovery read ran before the epoch-5 write was in"
                );
                writer.await;
                gateway::set_view(None);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
