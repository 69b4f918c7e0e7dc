//! The gateway: how a shard reaches every copy of an object, wherever in the cluster it
//! lives. For each request it asks the current view (this shard's copy of the cluster
//! membership) for the object's targets, then works on each one either on this node
//! (through the shard mesh, to the owning shard) or on the owning shard of another
//! node (peer RPC, pooled connections).
//!
//! Replicated objects:
//! - A write goes to every target in parallel and is acknowledged when all of them
//!   have it durably. A write of part of an object is sent "must exist": a target that
//!   does not hold the object (it became a target when a member died) does not take
//!   it, so no copy ever holds an object whose other bytes read as zeros; the object
//!   stays degraded until recovery copies it whole. An object no target holds is new,
//!   and is created everywhere. Overlapping changes from one shard reach the copies
//!   one after the other ([`lock_range`]), so the copies apply them in one order.
//! - A read goes to one copy, this node's first; a copy that is missing, damaged or
//!   unreachable sends it to the next.
//! - When a peer is unreachable or at another epoch, the request waits for the
//!   membership to settle (a dead member is removed within about a second) and runs
//!   again on the new targets; writes are idempotent, so running one twice is safe.
//!
//! Without a cluster (engine tests, tools) there is no view and every object is local.

use crate::cluster::view::ClusterView;
use crate::cluster::Member;
use crate::error::{Result, StoreError};
use crate::partition::{ObjectInfo, WriteMeta};
use crate::peer::{self, Call, Rpc, RpcError};
use crate::shard::{owner_of, partition_of, Reply, Shard, WriteMode};
use collie_net::admin::CheckReport;
use collie_net::peer::{decode_oids, Op, FLAG_MUST_EXIST};
use futures::channel::oneshot;
use futures::future::{join_all, FutureExt, Shared};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Copies of metadata objects (inodes): as many as the zones allow, up to this.
pub const META_COPIES: usize = 3;
/// How long a request waits for the membership to settle before it fails.
pub const SETTLE: Duration = Duration::from_secs(10);
const RETRY_PAUSE: Duration = Duration::from_millis(100);

thread_local! {
    /// This shard's view of the cluster; replaced (never mutated) at each epoch.
    static VIEW: RefCell<Option<Arc<ClusterView>>> = const { RefCell::new(None) };
    /// Ranges of objects this shard is changing now, by oid (see [`lock_range`]).
    static CHANGING: RefCell<HashMap<u64, Vec<Changing>>> = RefCell::new(HashMap::new());
    static NEXT_LOCK: Cell<u64> = const { Cell::new(0) };
}

/// One range being changed; `done` resolves when its guard drops.
struct Changing {
    start: u64,
    end: u64,
    id: u64,
    done: Shared<oneshot::Receiver<()>>,
}

/// Held while a change to `[start, end)` of an object is in flight on its copies.
pub(crate) struct RangeGuard {
    oid: u64,
    id: u64,
    // Dropped after `drop` below has removed the entry: wakes every waiter.
    _done: oneshot::Sender<()>,
}

impl Drop for RangeGuard {
    fn drop(&mut self) {
        CHANGING.with(|c| {
            let mut c = c.borrow_mut();
            if let Some(list) = c.get_mut(&self.oid) {
                list.retain(|h| h.id != self.id);
                if list.is_empty() {
                    c.remove(&self.oid);
                }
            }
        });
    }
}

/// Waits until no change overlapping `[start, end)` of `oid` is in flight on this shard,
/// then claims the range. Every copy receives overlapping changes from this shard in
/// the same order, so the copies cannot end up different (NBD leaves the outcome of
/// overlapping writes in flight together undefined, but the copies must agree).
pub(crate) async fn lock_range(oid: u64, start: u64, end: u64) -> RangeGuard {
    loop {
        let busy = CHANGING.with(|c| {
            c.borrow().get(&oid).and_then(|list| {
                list.iter()
                    .find(|h| h.start < end && start < h.end)
                    .map(|h| h.done.clone())
            })
        });
        match busy {
            Some(done) => {
                let _ = done.await;
            }
            None => break,
        }
    }
    let (tx, rx) = oneshot::channel();
    let id = NEXT_LOCK.with(|n| {
        n.set(n.get() + 1);
        n.get()
    });
    CHANGING.with(|c| {
        c.borrow_mut().entry(oid).or_default().push(Changing {
            start,
            end,
            id,
            done: rx.shared(),
        })
    });
    RangeGuard { oid, id, _done: tx }
}

/// Installs this shard's view (the cluster thread calls it on every shard).
pub fn set_view(v: Option<Arc<ClusterView>>) {
    VIEW.with(|c| *c.borrow_mut() = v);
}

pub fn view() -> Option<Arc<ClusterView>> {
    VIEW.with(|c| c.borrow().clone())
}

/// This shard's epoch; 0 without a cluster.
pub fn current_epoch() -> u32 {
    VIEW.with(|c| c.borrow().as_ref().map_or(0, |v| v.epoch))
}

/// Where one copy is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Local,
    Remote(SocketAddr),
}

/// The peer port of the shard of `m` that serves `oid`.
pub(crate) fn peer_addr(m: &Member, oid: u64) -> Option<SocketAddr> {
    if m.peer_ports.is_empty() || m.partitions == 0 {
        return None;
    }
    let shard = owner_of(partition_of(oid, m.partitions), m.peer_ports.len());
    Some(SocketAddr::new(m.id.addr(), m.peer_ports[shard]))
}

/// This node's peer port for the shard that serves `oid`.
pub(crate) fn own_peer_addr(oid: u64) -> std::result::Result<SocketAddr, RpcError> {
    let v = view().ok_or_else(|| RpcError::Retry("no view".into()))?;
    v.me()
        .and_then(|i| v.members.get(i))
        .and_then(|m| peer_addr(m, oid))
        .ok_or_else(|| RpcError::Retry("this node has no peer port".into()))
}

fn is_ec(op: Op) -> bool {
    matches!(
        op,
        Op::FragWrite
            | Op::FragRead
            | Op::FragProbe
            | Op::FragRemove
            | Op::FragDelta
            | Op::EcWrite
            | Op::EcCheck
    )
}

/// A replicated-object client call as the shard mesh carries it.
fn shard_op(c: &Call<'_>, meta: WriteMeta) -> crate::shard::Op {
    use crate::shard::Op as S;
    let oid = c.oid;
    match c.op {
        Op::Write => S::Write {
            oid,
            offset: c.offset,
            data: c.payload.to_vec(),
            meta,
            mode: WriteMode {
                must_exist: c.must_exist(),
                client: true,
            },
        },
        Op::Discard => S::Discard {
            oid,
            offset: c.offset,
            len: c.len,
            meta,
            client: true,
        },
        Op::Read => S::Read {
            oid,
            offset: c.offset,
            len: c.len,
        },
        Op::Extents => S::Extents {
            oid,
            offset: c.offset,
            len: c.len,
        },
        // Stat: `needs_ready` admits nothing else.
        _ => S::Stat { oid },
    }
}

/// Whether a target brings its copy up to date before serving `c` (see
/// [`crate::recovery::ready`]): client requests on replicated objects, not the ones
/// recovery itself sends.
pub(crate) fn needs_ready(c: &Call<'_>) -> bool {
    matches!(
        c.op,
        Op::Write | Op::Read | Op::Discard | Op::Stat | Op::Extents
    ) && !c.from_recovery()
}

fn unreachable(m: &Member, why: &str) -> RpcError {
    RpcError::Unreachable {
        addr: m.id.socket_addr(),
        why: why.into(),
    }
}

/// A shard's gateway. Cheap to make: one per request is fine.
#[derive(Clone)]
pub struct Gateway {
    shard: Rc<Shard>,
}

impl Gateway {
    pub fn new(shard: Rc<Shard>) -> Gateway {
        Gateway { shard }
    }

    pub fn shard(&self) -> &Rc<Shard> {
        &self.shard
    }

    /// The epoch and targets of `oid` with `copies` copies, in placement order.
    pub(crate) fn targets(
        &self,
        oid: u64,
        copies: usize,
    ) -> std::result::Result<(u32, Vec<Target>), RpcError> {
        let Some(v) = view() else {
            return Ok((0, vec![Target::Local]));
        };
        let mut out = Vec::with_capacity(copies);
        for i in v.targets(oid, copies) {
            if v.is_me(i) {
                out.push(Target::Local);
            } else {
                let m = &v.members[i];
                let addr = peer_addr(m, oid).ok_or_else(|| unreachable(m, "no peer port"))?;
                out.push(Target::Remote(addr));
            }
        }
        if out.is_empty() {
            return Err(RpcError::Store(StoreError::io(
                format!("object {oid:#018x}"),
                std::io::Error::other("the cluster has no member that stores data"),
            )));
        }
        Ok((v.epoch, out))
    }

    /// Runs `attempt` until it succeeds or fails for a reason other than membership
    /// (an unreachable peer, an epoch mismatch), for at most [`SETTLE`].
    pub(crate) async fn settled<T, F, Fut>(&self, oid: u64, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, RpcError>>,
    {
        let deadline = Instant::now() + SETTLE;
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(RpcError::Store(e)) if !matches!(e, StoreError::NotReady(_)) => return Err(e),
                Err(e) if Instant::now() >= deadline => {
                    return Err(StoreError::io(
                        format!("object {oid:#018x}"),
                        std::io::Error::other(format!(
                            "{e} (membership did not settle within {SETTLE:?})"
                        )),
                    ))
                }
                Err(e) => {
                    tracing::debug!(oid = format!("{oid:#018x}"), "retrying: {e}");
                    glommio::timer::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// One call on one copy.
    pub(crate) async fn exec(
        &self,
        epoch: u32,
        t: Target,
        c: &Call<'_>,
    ) -> std::result::Result<Reply, RpcError> {
        let sh = &self.shard;
        let addr = match t {
            // Erasure-coding requests run on the shard that owns the object (it keeps
            // the fragment headers and orders writes): through its peer port.
            Target::Local if is_ec(c.op) && !sh.owns(c.oid) => own_peer_addr(c.oid)?,
            Target::Local => {
                // Copies record the epoch of their last write (recovery compares them).
                let meta = WriteMeta {
                    epoch: epoch.max(c.meta.epoch),
                    ..c.meta
                };
                if needs_ready(c) {
                    let why = crate::recovery::Why::of(c.op);
                    let copies = c.geometry as usize;
                    if !sh.owns(c.oid) {
                        // One round trip: the owner brings its copy up to date and serves.
                        let op = shard_op(c, meta);
                        return Ok(Box::pin(sh.client(op, copies, why)).await?);
                    }
                    Box::pin(crate::recovery::ready_here(sh, c.oid, copies, why)).await?;
                }
                return Ok(match c.op {
                    Op::Write => {
                        let mode = WriteMode {
                            must_exist: c.must_exist(),
                            client: true,
                        };
                        sh.write_if(c.oid, c.offset, c.payload, meta, mode).await?;
                        Reply::Done
                    }
                    Op::Read => Reply::Data(sh.read(c.oid, c.offset, c.len).await?),
                    Op::Discard => {
                        sh.discard_as(c.oid, c.offset, c.len, meta, true).await?;
                        Reply::Done
                    }
                    Op::Remove => {
                        sh.remove(c.oid).await?;
                        Reply::Done
                    }
                    Op::Stat => Reply::Stat(sh.stat(c.oid).await?),
                    Op::Extents => Reply::Extents(sh.extents(c.oid, c.offset, c.len).await?),
                    Op::List => Reply::List(sh.list().await?),
                    Op::FragWrite
                    | Op::FragRead
                    | Op::FragProbe
                    | Op::FragRemove
                    | Op::FragDelta
                    | Op::EcWrite
                    | Op::EcCheck => {
                        let c = Call { meta, ..*c };
                        Reply::Data(Box::pin(crate::ec::serve(sh, &c)).await?)
                    }
                });
            }
            Target::Remote(addr) => addr,
        };
        let answer = peer::call(addr, epoch, c).await;
        Ok(match c.op {
            Op::Stat => match answer {
                Ok(p) => Reply::Stat(Some(peer::stat_of(c.oid, &p)?)),
                Err(RpcError::Store(StoreError::NotFound(_))) => Reply::Stat(None),
                Err(e) => return Err(e),
            },
            Op::Read => Reply::Data(answer?),
            Op::Extents => Reply::Extents(peer::extents_of(&answer?)?),
            Op::List => {
                Reply::List(decode_oids(&answer?).map_err(|e| {
                    StoreError::io("peer list", std::io::Error::other(e.to_string()))
                })?)
            }
            Op::Write | Op::Discard | Op::Remove => {
                answer?;
                Reply::Done
            }
            Op::FragWrite
            | Op::FragRead
            | Op::FragProbe
            | Op::FragRemove
            | Op::FragDelta
            | Op::EcWrite
            | Op::EcCheck => Reply::Data(answer?),
        })
    }

    /// Targets with this node's copy first (reads prefer it).
    fn local_first(ts: &[Target]) -> Vec<Target> {
        let mut v = ts.to_vec();
        v.sort_by_key(|t| !matches!(t, Target::Local));
        v
    }

    /// Writes `data` at `offset` of `oid` on all its copies; returns when every copy
    /// that holds the object has it durably.
    pub async fn write(
        &self,
        oid: u64,
        offset: u64,
        data: &[u8],
        meta: WriteMeta,
        copies: usize,
    ) -> Result<()> {
        {
            let _range = lock_range(oid, offset, offset + data.len() as u64).await;
            if self
                .write_copies(oid, offset, data, meta, copies, false)
                .await?
            {
                return Ok(());
            }
        }
        // No target holds the object: create it, with nothing else of this shard
        // changing it meanwhile (a write to another range that ran beside the creation
        // would find some copies created and others not, and skip those). Checked again
        // under the lock: another writer may have created it since.
        let _object = lock_range(oid, 0, u64::MAX).await;
        self.write_copies(oid, offset, data, meta, copies, true)
            .await
            .map(|_| ())
    }

    /// Writes `ranges` (offset, bytes) on every target, creating the object where it
    /// is missing: for a caller that writes every byte the object holds (the rest are
    /// holes everywhere), so a target that lacked it ends with a whole copy. Other
    /// writers of this shard wait meanwhile.
    pub async fn restore(
        &self,
        oid: u64,
        ranges: &[(u64, &[u8])],
        meta: WriteMeta,
        copies: usize,
    ) -> Result<()> {
        let _object = lock_range(oid, 0, u64::MAX).await;
        self.settled(oid, || async {
            let (epoch, ts) = self.targets(oid, copies)?;
            for &(offset, data) in ranges {
                let mut c = Call::new(Op::Write, oid).with_copies(copies);
                c.offset = offset;
                c.len = data.len() as u64;
                c.meta = meta;
                c.payload = data;
                for r in join_all(ts.iter().map(|&t| self.exec(epoch, t, &c))).await {
                    r?;
                }
            }
            Ok(())
        })
        .await
    }

    /// One write on every target that holds the object (all of them, if `create`).
    /// False if no target holds it (and `create` is not set).
    async fn write_copies(
        &self,
        oid: u64,
        offset: u64,
        data: &[u8],
        meta: WriteMeta,
        copies: usize,
        create: bool,
    ) -> Result<bool> {
        let whole = offset == 0 && data.len() as u64 == meta.object_size;
        self.settled(oid, || async {
            let (epoch, ts) = self.targets(oid, copies)?;
            let mut c = Call::new(Op::Write, oid).with_copies(copies);
            c.offset = offset;
            c.len = data.len() as u64;
            c.meta = meta;
            if !whole {
                c.flags |= FLAG_MUST_EXIST;
            }
            c.payload = data;
            let done = join_all(ts.iter().map(|&t| self.exec(epoch, t, &c))).await;
            let mut missing = Vec::new();
            for (&t, r) in ts.iter().zip(done) {
                match r {
                    Ok(_) => {}
                    Err(RpcError::Store(StoreError::NotFound(_))) => missing.push(t),
                    Err(e) => return Err(e),
                }
            }
            if missing.is_empty() {
                return Ok(true);
            }
            if missing.len() < ts.len() {
                // The targets that lack the object became targets when a member died.
                // They get no part of it (a partial copy would read zeros for the
                // rest): the object is degraded until recovery copies it whole.
                tracing::debug!(
                    oid = format!("{oid:#018x}"),
                    missing = missing.len(),
                    "degraded write: some targets do not hold the object"
                );
                return Ok(true);
            }
            if !create {
                return Ok(false);
            }
            c.flags &= !FLAG_MUST_EXIST;
            for r in join_all(missing.iter().map(|&t| self.exec(epoch, t, &c))).await {
                r?;
            }
            Ok(true)
        })
        .await
    }

    /// Tries the copies in order (this node's first) until one answers other than
    /// "not found"; `Ok(None)` if none has the object.
    async fn first_copy(&self, oid: u64, copies: usize, c: &Call<'_>) -> Result<Option<Reply>> {
        let c = &c.with_copies(copies);
        self.settled(oid, || async {
            let (epoch, ts) = self.targets(oid, copies)?;
            let mut failed = None;
            for t in Self::local_first(&ts) {
                match self.exec(epoch, t, c).await {
                    Ok(Reply::Stat(None)) => {}
                    Ok(r) => return Ok(Some(r)),
                    Err(RpcError::Store(StoreError::NotFound(_))) => {}
                    // Not up to date yet (recovery): it is being fetched; the next copy
                    // may serve, else the whole read is tried again.
                    Err(e @ RpcError::Store(StoreError::NotReady(_))) => failed = Some(e),
                    Err(e) => {
                        tracing::warn!(
                            oid = format!("{oid:#018x}"),
                            target = ?t,
                            "copy failed, trying the next: {e}"
                        );
                        failed = Some(e);
                    }
                }
            }
            match failed {
                None => Ok(None),
                Some(e) => Err(e),
            }
        })
        .await
    }

    /// Reads `len` bytes at `offset` of `oid` from one copy. `NotFound` if no copy
    /// exists (the caller reads that as zeros).
    pub async fn read(&self, oid: u64, offset: u64, len: u64, copies: usize) -> Result<Vec<u8>> {
        let mut c = Call::new(Op::Read, oid);
        c.offset = offset;
        c.len = len;
        match self.first_copy(oid, copies, &c).await? {
            Some(Reply::Data(d)) => Ok(d),
            Some(_) => Err(StoreError::Invalid("data answer expected".into())),
            None => Err(StoreError::NotFound(oid)),
        }
    }

    pub async fn stat(&self, oid: u64, copies: usize) -> Result<Option<ObjectInfo>> {
        match self
            .first_copy(oid, copies, &Call::new(Op::Stat, oid))
            .await?
        {
            Some(Reply::Stat(s)) => Ok(s),
            Some(_) => Err(StoreError::Invalid("stat answer expected".into())),
            None => Ok(None),
        }
    }

    /// `(length, has_data)` runs of `[offset, offset+len)` of `oid` (one copy's).
    pub async fn extents(
        &self,
        oid: u64,
        offset: u64,
        len: u64,
        copies: usize,
    ) -> Result<Vec<(u64, bool)>> {
        let mut c = Call::new(Op::Extents, oid);
        c.offset = offset;
        c.len = len;
        match self.first_copy(oid, copies, &c).await? {
            Some(Reply::Extents(e)) => Ok(e),
            Some(_) => Err(StoreError::Invalid("extents answer expected".into())),
            None => Err(StoreError::NotFound(oid)),
        }
    }

    /// Runs `c` on every copy; a copy that does not exist counts as done.
    async fn on_all(&self, oid: u64, copies: usize, c: &Call<'_>) -> Result<()> {
        let c = &c.with_copies(copies);
        self.settled(oid, || async {
            let (epoch, ts) = self.targets(oid, copies)?;
            for r in join_all(ts.iter().map(|&t| self.exec(epoch, t, c))).await {
                match r {
                    Ok(_) | Err(RpcError::Store(StoreError::NotFound(_))) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .await
    }

    /// Makes a range of every copy a hole.
    pub async fn discard(
        &self,
        oid: u64,
        offset: u64,
        len: u64,
        meta: WriteMeta,
        copies: usize,
    ) -> Result<()> {
        let mut c = Call::new(Op::Discard, oid);
        c.offset = offset;
        c.len = len;
        c.meta = meta;
        let _range = lock_range(oid, offset, offset.saturating_add(len)).await;
        self.on_all(oid, copies, &c).await
    }

    /// Removes every copy.
    pub async fn remove(&self, oid: u64, copies: usize) -> Result<()> {
        let _object = lock_range(oid, 0, u64::MAX).await;
        self.on_all(oid, copies, &Call::new(Op::Remove, oid)).await
    }

    /// Compares the copy of `oid` on every target (each brings its own up to date
    /// first, see [`crate::recovery::ready`]) with the first target's, which orders the
    /// object's writes. With `repair`, a missing or different copy is replaced by the
    /// first one (holes stay holes). Counts objects: `consistent` if every target held
    /// the same bytes, `unplaced` copies the zones cannot hold.
    pub async fn check_copies(&self, oid: u64, copies: usize, repair: bool) -> Result<CheckReport> {
        let _object = lock_range(oid, 0, u64::MAX).await;
        self.settled(oid, || async {
            let (epoch, ts) = self.targets(oid, copies)?;
            let mut r = CheckReport::default();
            let stat = Call::new(Op::Stat, oid).with_copies(copies);
            let stats = join_all(ts.iter().map(|&t| self.exec(epoch, t, &stat))).await;
            let mut infos = Vec::with_capacity(ts.len());
            for s in stats {
                match s? {
                    Reply::Stat(i) => infos.push(i),
                    _ => return Err(StoreError::Invalid("stat answer expected".into()).into()),
                }
            }
            let Some(info) = infos.iter().find_map(|s| *s) else {
                return Ok(r);
            };
            r.objects = 1;
            r.unplaced = copies.saturating_sub(ts.len()) as u64;
            let mut read = Call::new(Op::Read, oid).with_copies(copies);
            read.len = info.size;
            // Each copy's bytes; None if missing or if it failed its checksum.
            let mut images = Vec::with_capacity(ts.len());
            for (t, s) in ts.iter().zip(&infos) {
                images.push(match s {
                    Some(_) => match self.exec(epoch, *t, &read).await {
                        Ok(Reply::Data(d)) => Some(d),
                        Ok(_) => {
                            return Err(StoreError::Invalid("data answer expected".into()).into())
                        }
                        Err(RpcError::Store(StoreError::Checksum { .. })) => None,
                        Err(e) => return Err(e),
                    },
                    None => None,
                });
            }
            // The basis: the readable copy written last (the first target's among equals,
            // it orders the object's writes).
            let Some(first) = (0..ts.len())
                .filter(|&i| images[i].is_some())
                .max_by_key(|&i| (infos[i].map(|s| s.epoch), std::cmp::Reverse(i)))
            else {
                r.lost = 1;
                return Ok(r);
            };
            let basis = images[first].clone().unwrap_or_default();
            let bad: Vec<Target> = ts
                .iter()
                .zip(&images)
                .filter(|(_, img)| img.as_deref() != Some(basis.as_slice()))
                .map(|(t, _)| *t)
                .collect();
            if bad.is_empty() {
                r.consistent = 1;
                return Ok(r);
            }
            tracing::warn!(
                oid = format!("{oid:#018x}"),
                copies = bad.len(),
                "copies differ from the first target's or are missing"
            );
            if !repair {
                return Ok(r);
            }
            let mut ext = Call::new(Op::Extents, oid).with_copies(copies);
            ext.len = info.size;
            let runs = match self.exec(epoch, ts[first], &ext).await? {
                Reply::Extents(e) => e,
                _ => return Err(StoreError::Invalid("extents answer expected".into()).into()),
            };
            crate::recovery::check_runs(&runs, basis.len() as u64)?;
            let meta = WriteMeta {
                object_size: info.size,
                version: info.version,
                epoch,
            };
            let pieces = crate::recovery::data_pieces(&runs);
            let zeros = [0u8; 4096];
            for t in bad {
                self.exec(epoch, t, &Call::new(Op::Remove, oid)).await?;
                let mut w = Call::new(Op::Write, oid).with_copies(copies);
                w.meta = meta;
                for &(offset, len) in &pieces {
                    w.offset = offset;
                    w.len = len;
                    w.payload = &basis[offset as usize..(offset + len) as usize];
                    self.exec(epoch, t, &w).await?;
                }
                if pieces.is_empty() {
                    // All holes: a discard alone creates nothing, so one block first.
                    w.payload = &zeros[..zeros.len().min(basis.len())];
                    w.len = w.payload.len() as u64;
                    self.exec(epoch, t, &w).await?;
                    let mut d = Call::new(Op::Discard, oid).with_copies(copies);
                    d.len = info.size;
                    d.meta = meta;
                    self.exec(epoch, t, &d).await?;
                }
            }
            r.repaired = 1;
            Ok(r)
        })
        .await
    }

    /// Every object on every member (sorted, each once).
    pub async fn list_all(&self) -> Result<Vec<u64>> {
        if view().is_none() {
            return self.shard.list().await;
        }
        let mut all: Vec<u64> = self
            .settled(0, || async {
                let v = view().ok_or_else(|| RpcError::Retry("no view".into()))?;
                Ok(self
                    .member_lists(&v)
                    .await?
                    .into_iter()
                    .flat_map(|(_, l)| l)
                    .collect())
            })
            .await?;
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }

    /// Each member's object list at `v`'s epoch (one `List` each; this node's own
    /// marked true), for `list_all` and recovery's plan.
    pub(crate) async fn member_lists(&self, v: &ClusterView) -> Rpc<Vec<(bool, Vec<u64>)>> {
        let mut out = Vec::with_capacity(v.members.len());
        for (i, m) in v.members.iter().enumerate() {
            let t = if v.is_me(i) {
                Target::Local
            } else {
                match m.peer_ports.first() {
                    Some(&p) => Target::Remote(SocketAddr::new(m.id.addr(), p)),
                    None => continue,
                }
            };
            if let Reply::List(l) = self.exec(v.epoch, t, &Call::new(Op::List, 0)).await? {
                out.push((v.is_me(i), l));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_changes_wait_and_others_do_not() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let order = Rc::new(RefCell::new(Vec::new()));
                let a = lock_range(1, 0, 10).await;
                let o = order.clone();
                let b = glommio::spawn_local(async move {
                    let _b = lock_range(1, 5, 15).await;
                    o.borrow_mut().push("b");
                });
                // Another object, and a range of this one that does not overlap: no wait.
                let _c = lock_range(2, 0, 10).await;
                let d = lock_range(1, 10, 20).await;
                glommio::yield_if_needed().await;
                glommio::timer::sleep(Duration::from_millis(10)).await;
                assert!(order.borrow().is_empty(), "b ran while a held an overlap");
                order.borrow_mut().push("a done");
                drop(a);
                // b now waits for d ([10, 20) overlaps [5, 15)).
                glommio::timer::sleep(Duration::from_millis(10)).await;
                assert_eq!(*order.borrow(), vec!["a done"]);
                drop(d);
                b.await;
                assert_eq!(*order.borrow(), vec!["a done", "b"]);
                assert!(CHANGING.with(|c| c.borrow().get(&1).is_none()));
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
