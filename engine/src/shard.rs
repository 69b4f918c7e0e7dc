//! A shard: one core's glommio executor and the partitions it owns. Requests for an
//! object are served by the shard that owns the object's partition; a request that
//! arrives elsewhere crosses to the owner as a message over the shard mesh (one hop),
//! never through a lock.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures::channel::oneshot;
use glommio::channels::channel_mesh::{Receivers, Senders};
use glommio::sync::Semaphore;
use tracing::warn;

use crate::error::{Result, StoreError};
use crate::partition::{ObjectInfo, Partition, PartitionStats, WriteMeta};

/// Most requests from one peer shard served at once.
const PEER_INFLIGHT: u64 = 256;

/// The partition an object belongs to: a mix of the oid (so a VDI's consecutive objects
/// spread over partitions) modulo the partition count fixed at format. Fragments of an
/// erasure-coded object go where their object would, so one shard holds all of them.
pub fn partition_of(oid: u64, partitions: u32) -> u32 {
    let oid = collie_placement::ids::base_oid(oid);
    let mut z = oid.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % partitions as u64) as u32
}

/// The shard that owns a partition.
pub fn owner_of(partition: u32, shards: usize) -> usize {
    partition as usize % shards
}

/// How a write or discard is applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteMode {
    /// Apply only if this node holds the object, else `NotFound` (a gateway's partial
    /// write must not create a copy whose other bytes read as zeros).
    pub must_exist: bool,
    /// Sent by a gateway at `meta.epoch`: refused once this shard is past that epoch
    /// (the gateway retries), and counted while it is applied, so that recovery can
    /// wait for every write of an older epoch (`recovery::applying`).
    pub client: bool,
}

/// A request that crossed to the owning shard.
#[derive(Debug)]
pub enum Op {
    Write {
        oid: u64,
        offset: u64,
        data: Vec<u8>,
        meta: WriteMeta,
        mode: WriteMode,
    },
    Read {
        oid: u64,
        offset: u64,
        len: u64,
    },
    Discard {
        oid: u64,
        offset: u64,
        len: u64,
        meta: WriteMeta,
        client: bool,
    },
    Remove {
        oid: u64,
    },
    Stat {
        oid: u64,
    },
    Extents {
        oid: u64,
        offset: u64,
        len: u64,
    },
    List,
    Stats,
    /// A client's request `op` on a replicated object: the owner first brings its
    /// copy up to date (`recovery::ready`; `copies` as the gateway placed it, 0 if
    /// unknown), then serves it. One round trip.
    Client {
        op: Box<Op>,
        copies: usize,
        why: crate::recovery::Why,
    },
}

impl Op {
    /// The object an op is about (0 for node-wide ones).
    fn oid(&self) -> u64 {
        match self {
            Op::Write { oid, .. }
            | Op::Read { oid, .. }
            | Op::Discard { oid, .. }
            | Op::Remove { oid }
            | Op::Stat { oid }
            | Op::Extents { oid, .. } => *oid,
            Op::Client { op, .. } => op.oid(),
            Op::List | Op::Stats => 0,
        }
    }
}

/// The owner's answer.
#[derive(Debug)]
pub enum Reply {
    Done,
    Data(Vec<u8>),
    Stat(Option<ObjectInfo>),
    Extents(Vec<(u64, bool)>),
    List(Vec<u64>),
    Stats(PartitionStats),
}

/// What travels on the shard mesh.
#[derive(Debug)]
pub enum Msg {
    Req { id: u64, op: Op },
    Resp { id: u64, result: Result<Reply> },
}

/// A shard's handle to the others. Lives on its shard.
struct Mesh {
    senders: Senders<Msg>,
    waiting: RefCell<HashMap<u64, oneshot::Sender<Result<Reply>>>>,
    next_id: Cell<u64>,
}

/// One shard. `!Send`: lives on its executor; other threads reach it by message.
pub struct Shard {
    pub id: usize,
    pub shards: usize,
    pub partition_count: u32,
    partitions: HashMap<u32, Rc<Partition>>,
    mesh: Option<Mesh>,
}

impl Shard {
    /// Builds the shard; with a mesh (more than one shard) it starts serving peers' requests.
    pub(crate) fn new(
        id: usize,
        shards: usize,
        partition_count: u32,
        parts: Vec<Rc<Partition>>,
        mesh: Option<(Senders<Msg>, Receivers<Msg>)>,
    ) -> Rc<Self> {
        let (senders, receivers) = match mesh {
            Some((s, r)) => (Some(s), Some(r)),
            None => (None, None),
        };
        let shard = Rc::new(Shard {
            id,
            shards,
            partition_count,
            partitions: parts.into_iter().map(|p| (p.id, p)).collect(),
            mesh: senders.map(|senders| Mesh {
                senders,
                waiting: RefCell::new(HashMap::new()),
                next_id: Cell::new(1),
            }),
        });
        if let Some(r) = receivers {
            shard.serve_peers(r);
        }
        shard
    }

    fn serve_peers(self: &Rc<Self>, mut receivers: Receivers<Msg>) {
        let limit = Rc::new(Semaphore::new(PEER_INFLIGHT));
        for (peer, rx) in receivers.streams() {
            let shard = self.clone();
            let limit = limit.clone();
            glommio::spawn_local(async move {
                while let Some(msg) = rx.recv().await {
                    match msg {
                        Msg::Req { id, op } => {
                            let Ok(permit) = Semaphore::acquire_static_permit(&limit, 1).await
                            else {
                                return;
                            };
                            let shard = shard.clone();
                            glommio::spawn_local(async move {
                                let result = shard.serve_mesh_request(op).await;
                                let _permit = permit;
                                if let Some(m) = &shard.mesh {
                                    let _ = m.senders.send_to(peer, Msg::Resp { id, result }).await;
                                }
                            })
                            .detach();
                        }
                        Msg::Resp { id, result } => {
                            let waiter = shard
                                .mesh
                                .as_ref()
                                .and_then(|m| m.waiting.borrow_mut().remove(&id));
                            if let Some(w) = waiter {
                                let _ = w.send(result);
                            }
                        }
                    }
                }
            })
            .detach();
        }
    }

    pub fn partitions(&self) -> impl Iterator<Item = &Rc<Partition>> {
        self.partitions.values()
    }

    /// Whether this shard owns `oid` (requests for it run here without a hop).
    pub fn owns(&self, oid: u64) -> bool {
        self.route(oid).1 == self.id
    }

    fn route(&self, oid: u64) -> (u32, usize) {
        let p = partition_of(oid, self.partition_count);
        (p, owner_of(p, self.shards))
    }

    fn local(&self, p: u32) -> Result<&Rc<Partition>> {
        self.partitions.get(&p).ok_or_else(|| {
            StoreError::Invalid(format!("partition {p} is not on shard {}", self.id))
        })
    }

    async fn remote(&self, shard: usize, op: Op) -> Result<Reply> {
        let mesh = self.mesh.as_ref().ok_or(StoreError::Closed)?;
        let id = mesh.next_id.get();
        mesh.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        mesh.waiting.borrow_mut().insert(id, tx);
        if mesh
            .senders
            .send_to(shard, Msg::Req { id, op })
            .await
            .is_err()
        {
            mesh.waiting.borrow_mut().remove(&id);
            return Err(StoreError::Closed);
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Serves an operation on a partition this shard owns.
    async fn execute(&self, op: Op) -> Result<Reply> {
        match op {
            Op::Write {
                oid,
                offset,
                data,
                meta,
                mode,
            } => self
                .write_local(self.route(oid).0, oid, offset, &data, meta, mode)
                .await
                .map(|_| Reply::Done),
            Op::Read { oid, offset, len } => self
                .local(self.route(oid).0)?
                .read(oid, offset, len)
                .await
                .map(|(d, _)| Reply::Data(d)),
            Op::Discard {
                oid,
                offset,
                len,
                meta,
                client,
            } => {
                let _applying = client
                    .then(|| crate::recovery::applying(meta.epoch))
                    .transpose()?;
                self.local(self.route(oid).0)?
                    .discard(oid, offset, len, meta)
                    .await
                    .map(|_| Reply::Done)
            }
            Op::Remove { oid } => self
                .local(self.route(oid).0)?
                .remove(oid)
                .await
                .map(|_| Reply::Done),
            Op::Stat { oid } => Ok(Reply::Stat(self.local(self.route(oid).0)?.stat(oid))),
            Op::Extents { oid, offset, len } => self
                .local(self.route(oid).0)?
                .extents(oid, offset, len)
                .map(Reply::Extents),
            Op::List => Ok(Reply::List(
                self.partitions.values().flat_map(|p| p.list()).collect(),
            )),
            Op::Stats => Ok(Reply::Stats(self.local_stats())),
            // Needs the shard's `Rc`: served by `serve_client`.
            Op::Client { .. } => Err(StoreError::Invalid("a client op outside the mesh".into())),
        }
    }

    async fn serve_mesh_request(self: &Rc<Self>, op: Op) -> Result<Reply> {
        match op {
            Op::Client { op, copies, why } => self.serve_client(*op, copies, why).await,
            op => self.execute(op).await,
        }
    }

    /// [`Op::Client`] on this shard, which owns the object.
    async fn serve_client(
        self: &Rc<Self>,
        op: Op,
        copies: usize,
        why: crate::recovery::Why,
    ) -> Result<Reply> {
        crate::recovery::ready_here(self, op.oid(), copies, why)
            .await
            .map_err(|e| match e {
                crate::peer::RpcError::Store(e) => e,
                e => StoreError::NotReady(e.to_string()),
            })?;
        self.execute(op).await
    }

    /// A client's request on a replicated object, run by the shard that owns it after it
    /// brought its copy up to date (see [`Op::Client`]).
    pub(crate) async fn client(
        self: &Rc<Self>,
        op: Op,
        copies: usize,
        why: crate::recovery::Why,
    ) -> Result<Reply> {
        match self.route(op.oid()) {
            (_, owner) if owner == self.id => self.serve_client(op, copies, why).await,
            (_, owner) => {
                let op = Box::new(op);
                self.remote(owner, Op::Client { op, copies, why }).await
            }
        }
    }

    fn local_stats(&self) -> PartitionStats {
        let mut t = PartitionStats::default();
        for p in self.partitions.values() {
            t += p.stats();
        }
        t
    }

    // ---------------------------------------------------------------- public API

    /// Writes `data` at `offset` of `oid`; returns when durable.
    pub async fn write(&self, oid: u64, offset: u64, data: &[u8], meta: WriteMeta) -> Result<()> {
        self.write_if(oid, offset, data, meta, WriteMode::default())
            .await
    }

    /// [`Shard::write`], applied as `mode` says.
    pub async fn write_if(
        &self,
        oid: u64,
        offset: u64,
        data: &[u8],
        meta: WriteMeta,
        mode: WriteMode,
    ) -> Result<()> {
        match self.route(oid) {
            (p, owner) if owner == self.id => {
                self.write_local(p, oid, offset, data, meta, mode).await
            }
            (_, owner) => self
                .remote(
                    owner,
                    Op::Write {
                        oid,
                        offset,
                        data: data.to_vec(),
                        meta,
                        mode,
                    },
                )
                .await
                .map(|_| ()),
        }
    }

    async fn write_local(
        &self,
        p: u32,
        oid: u64,
        offset: u64,
        data: &[u8],
        meta: WriteMeta,
        mode: WriteMode,
    ) -> Result<()> {
        let _applying = mode
            .client
            .then(|| crate::recovery::applying(meta.epoch))
            .transpose()?;
        let part = self.local(p)?;
        if mode.must_exist && part.stat(oid).is_none() {
            return Err(StoreError::NotFound(oid));
        }
        part.write(oid, offset, data, meta).await
    }

    /// Reads `len` bytes at `offset` of `oid` (holes are zeros).
    pub async fn read(&self, oid: u64, offset: u64, len: u64) -> Result<Vec<u8>> {
        match self.route(oid) {
            (p, owner) if owner == self.id => {
                self.local(p)?.read(oid, offset, len).await.map(|(d, _)| d)
            }
            (_, owner) => match self.remote(owner, Op::Read { oid, offset, len }).await? {
                Reply::Data(d) => Ok(d),
                other => Err(unexpected(other)),
            },
        }
    }

    pub async fn discard(&self, oid: u64, offset: u64, len: u64, meta: WriteMeta) -> Result<()> {
        self.discard_as(oid, offset, len, meta, false).await
    }

    /// [`Shard::discard`]; `client` as in [`WriteMode`].
    pub async fn discard_as(
        &self,
        oid: u64,
        offset: u64,
        len: u64,
        meta: WriteMeta,
        client: bool,
    ) -> Result<()> {
        self.call(
            oid,
            Op::Discard {
                oid,
                offset,
                len,
                meta,
                client,
            },
        )
        .await
        .map(|_| ())
    }

    pub async fn remove(&self, oid: u64) -> Result<()> {
        self.call(oid, Op::Remove { oid }).await.map(|_| ())
    }

    pub async fn stat(&self, oid: u64) -> Result<Option<ObjectInfo>> {
        match self.call(oid, Op::Stat { oid }).await? {
            Reply::Stat(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// `(length, has_data)` runs covering `[offset, offset+len)` of the object.
    pub async fn extents(&self, oid: u64, offset: u64, len: u64) -> Result<Vec<(u64, bool)>> {
        match self.call(oid, Op::Extents { oid, offset, len }).await? {
            Reply::Extents(e) => Ok(e),
            other => Err(unexpected(other)),
        }
    }

    /// Every object on this node (all shards), sorted.
    pub async fn list(&self) -> Result<Vec<u64>> {
        let mut all: Vec<u64> = self.partitions.values().flat_map(|p| p.list()).collect();
        for s in (0..self.shards).filter(|&s| s != self.id) {
            match self.remote(s, Op::List).await? {
                Reply::List(l) => all.extend(l),
                other => return Err(unexpected(other)),
            }
        }
        all.sort_unstable();
        Ok(all)
    }

    /// Space and health counters summed over every shard.
    pub async fn stats(&self) -> Result<PartitionStats> {
        let mut t = self.local_stats();
        for s in (0..self.shards).filter(|&s| s != self.id) {
            match self.remote(s, Op::Stats).await? {
                Reply::Stats(x) => t += x,
                other => return Err(unexpected(other)),
            }
        }
        Ok(t)
    }

    async fn call(&self, oid: u64, op: Op) -> Result<Reply> {
        match self.route(oid) {
            (_, owner) if owner == self.id => self.execute(op).await,
            (_, owner) => self.remote(owner, op).await,
        }
    }

    /// Runs checkpointing and compaction on every owned partition once.
    pub async fn maintain(&self) {
        for p in self.partitions.values() {
            if let Err(e) = p.maintain().await {
                warn!(partition = p.id, error = %e, "maintenance failed");
            }
        }
    }

    /// Background loop in a low-priority task queue, woken by a timer (never spins).
    pub(crate) fn start_maintenance(self: &Rc<Self>, every: Duration) {
        let me = self.clone();
        let tq = glommio::executor().create_task_queue(
            glommio::Shares::Static(10),
            glommio::Latency::NotImportant,
            "maintenance",
        );
        let fut = async move {
            loop {
                glommio::timer::sleep(every).await;
                me.maintain().await;
            }
        };
        match glommio::spawn_local_into(fut, tq) {
            Ok(t) => {
                t.detach();
            }
            Err(e) => warn!(error = %e, "cannot start maintenance"),
        }
    }

    /// Flushes and checkpoints every owned partition.
    pub(crate) async fn close(&self) -> Result<()> {
        let mut first = Ok(());
        for p in self.partitions.values() {
            if let Err(e) = p.close().await {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

fn unexpected(r: Reply) -> StoreError {
    StoreError::Invalid(format!("unexpected reply from peer shard: {r:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_objects_spread_over_partitions() {
        let mut counts = vec![0u32; 64];
        for i in 0..64_000u64 {
            counts[partition_of((7 << 32) | i, 64) as usize] += 1;
        }
        let (min, max) = (
            counts.iter().min().copied().unwrap_or(0),
            counts.iter().max().copied().unwrap_or(0),
        );
        assert!(min > 850 && max < 1150, "uneven spread {min}..{max}");
    }
}
