//! One node's answers to admin requests (`dog`): cluster format, info and shutdown, node
//! list/info/kill, recovery state and control, object location and the VDI commands.
//! Runs on the caller's thread and reaches the store through `Store::run_on`.
//! Cluster-wide commands are sent on to every member as node-local requests
//! (`NodeFormat`, `NodeStat`, ...), answered without the admin lock so that two
//! coordinators cannot wait on each other. The commands `dog` sends are serialised by
//! one lock (they are rare and must not race each other, e.g. two creates of one
//! name). The data path never takes it.

use crate::cluster::runtime::Cluster;
use crate::cluster::view::ClusterView;
use crate::export::{self, VdiProvider};
use crate::gateway::Gateway;
use crate::partition::WriteMeta;
use crate::recovery;
use crate::store::{fs_space, Store};
use crate::vdi::{self, VdiError};
use crate::StoreError;
use bytemuck::{Pod, Zeroable};
use collie_net::admin::{
    AdminClient, AdminError, ClusterFormatInfo, ClusterInfo, CopyInfo, EpochEntry, ErrorCode,
    MemberRecovery, NodeEntry, NodeInfo, NodeStat, ObjectLocation, RecoveryStat, Request, Response,
    VdiInfo, MAX_DATA,
};
use collie_net::nbd::{BlockExport, ExportProvider};
use collie_placement::ids::cluster_oid;
use collie_placement::node::NodeId;
use collie_placement::ring::{vnode_bytes_for, NodeIdx};
use collie_placement::Redundancy;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Who this node is, as `dog` shows it.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    /// `ADDR:PORT` of the admin port.
    pub addr: String,
    pub zone: u32,
    pub nosync: bool,
}

pub struct Node {
    store: Store,
    id: NodeIdentity,
    cluster: Arc<Cluster>,
    admin: Mutex<()>,
}

/// How long a node waits for another member's answer to a forwarded command.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a status question (a member's recovery state, for `dog cluster info` and
/// `dog node recovery`) waits for one member. A member that does not answer in time is
/// reported as silent: well inside dog's own timeout, and inside the 5 s a joining
/// sheep gives `ClusterInfo` (its own admin port is not served yet when it asks).
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// Members asked at once for their status (one thread each).
const STATUS_FANOUT: usize = 16;

const FORMAT_MAGIC: u32 = u32::from_le_bytes(*b"CLFM");
const FORMAT_VERSION: u16 = 2;
const FORMAT_OBJECT_SIZE: u64 = 4096;

/// The cluster format record (object `cluster_oid(0)`, on every node, not replicated:
/// each member keeps its own), little-endian.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct FormatRecord {
    magic: u32,
    version: u16,
    copies: u8,
    parity: u8,
    ctime: u64,
    /// Ring bytes per vnode, chosen at format from the members' capacities and fixed
    /// from then on (so a member joining later moves only its share of the data).
    vnode_bytes: u64,
    epoch: u32,
    crc: u32,
}

/// The format record of the store in `store`, if it was formatted.
pub fn read_format(store: &Store) -> Result<Option<(Redundancy, u64, u64)>, String> {
    match format_record(store) {
        Ok(Some(r)) => Redundancy::from_wire(r.copies, r.parity)
            .map(|red| Some((red, r.ctime, r.vnode_bytes)))
            .map_err(|e| format!("format record: {e}")),
        Ok(None) => Ok(None),
        Err(Response::Error { message, .. }) => Err(message),
        Err(_) => Err("format record unreadable".into()),
    }
}

fn format_record(store: &Store) -> Result<Option<FormatRecord>, Response> {
    let r = store.read(cluster_oid(0), 0, FORMAT_OBJECT_SIZE);
    let bytes = match r {
        Ok(b) => b,
        Err(StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(store_error(e)),
    };
    let n = std::mem::size_of::<FormatRecord>();
    let rec: FormatRecord = bytemuck::pod_read_unaligned(&bytes[..n]);
    if rec.magic != FORMAT_MAGIC || rec.crc != crc32c::crc32c(&bytes[..n - 4]) {
        return Err(error(ErrorCode::Io, "the cluster format record is damaged"));
    }
    if rec.version != FORMAT_VERSION {
        return Err(error(
            ErrorCode::Io,
            format!(
                "the cluster format record is version {} (this sheep reads {FORMAT_VERSION}): \
                 reformat with 'dog cluster format --force'",
                rec.version
            ),
        ));
    }
    Ok(Some(rec))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        code,
        message: message.into(),
    }
}

fn vdi_error(e: VdiError) -> Response {
    let code = match &e {
        VdiError::NotFound(_) => ErrorCode::NoVdi,
        VdiError::Exists(_) => ErrorCode::VdiExists,
        VdiError::Invalid(_) => ErrorCode::Invalid,
        VdiError::Store(StoreError::NoSpace { .. }) => ErrorCode::NoSpace,
        VdiError::Store(StoreError::Closed) => ErrorCode::ShuttingDown,
        _ => ErrorCode::Io,
    };
    error(code, e.to_string())
}

fn store_error(e: StoreError) -> Response {
    vdi_error(VdiError::Store(e))
}

/// Asks another member for its recovery state; `Err` says why there is none.
fn ask_recovery(id: NodeId) -> Result<RecoveryStat, String> {
    // One phrase: a timeout said as such, no "(os error N)" suffix.
    let io = |e: &std::io::Error| match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            format!("no answer within {} s", STATUS_TIMEOUT.as_secs())
        }
        _ => {
            let s = e.to_string();
            match s.find(" (os error ") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        }
    };
    let mut c = AdminClient::connect(&id.addr().to_string(), id.port(), STATUS_TIMEOUT)
        .map_err(|e| io(&e))?;
    match c.call(&Request::RecoveryStat) {
        Ok(Response::Recovery(s)) => Ok(s),
        Ok(Response::Error { message, .. }) => Err(message),
        Ok(_) => Err("unexpected answer to a recovery query".into()),
        Err(AdminError::Io(e)) => Err(io(&e)),
        Err(e) => Err(e.to_string()),
    }
}

/// Every member's recovery state, by id, asked in parallel (at most `STATUS_FANOUT` at
/// a time) with `STATUS_TIMEOUT` each: a silent member is an entry saying so, never a
/// failure of the whole answer.
fn members_recovery(v: &ClusterView) -> Vec<MemberRecovery> {
    let members: Vec<(usize, NodeId, bool)> = v
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| (i, m.id, v.is_me(i)))
        .collect();
    let mut out = Vec::with_capacity(members.len());
    for batch in members.chunks(STATUS_FANOUT) {
        std::thread::scope(|s| {
            let asked: Vec<_> = batch
                .iter()
                .map(|&(i, id, me)| {
                    let thread = (!me).then(|| {
                        std::thread::Builder::new()
                            .name("recovery-stat".into())
                            .spawn_scoped(s, move || ask_recovery(id))
                    });
                    (i, id, thread)
                })
                .collect();
            for (i, id, thread) in asked {
                let stat = match thread {
                    None => Ok(recovery::progress()),
                    Some(Ok(t)) => t
                        .join()
                        .unwrap_or_else(|_| Err("the recovery query failed".into())),
                    // No thread to spare: ask from here.
                    Some(Err(_)) => ask_recovery(id),
                };
                out.push(MemberRecovery {
                    id: i as u32,
                    addr: id.to_string(),
                    stat,
                });
            }
        });
    }
    out
}

fn info(ino: &vdi::Inode, used: u64) -> VdiInfo {
    VdiInfo {
        name: ino.name.clone(),
        vid: ino.vid.get(),
        size: ino.size,
        used,
        shared: 0,
        ctime: ino.ctime,
        redundancy: ino.redundancy,
        snap_id: ino.snap_id,
        tag: ino.tag.clone(),
    }
}

impl Node {
    pub fn new(store: Store, id: NodeIdentity, cluster: Arc<Cluster>) -> Node {
        Node {
            store,
            id,
            cluster,
            admin: Mutex::new(()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    pub fn into_store(self) -> Store {
        self.store
    }

    fn view(&self) -> Result<Arc<ClusterView>, Response> {
        self.cluster
            .view()
            .ok_or_else(|| error(ErrorCode::Internal, "no cluster view yet"))
    }

    /// Refuses VDI commands while a restarted cluster waits for its members.
    fn check_serving(&self) -> Result<(), Response> {
        export::check_serving_view(self.cluster.view().as_deref())
            .map_err(|m| error(ErrorCode::Waiting, m))
    }

    fn format_record(&self) -> Result<Option<FormatRecord>, Response> {
        format_record(&self.store)
    }

    fn default_redundancy(&self) -> Result<Redundancy, Response> {
        match self.format_record()? {
            None => Err(error(
                ErrorCode::NotFormatted,
                "cluster is not formatted yet: run 'dog cluster format'",
            )),
            Some(r) => Redundancy::from_wire(r.copies, r.parity)
                .map_err(|e| error(ErrorCode::Io, format!("format record: {e}"))),
        }
    }

    /// Refuses a redundancy the cluster cannot give every object now.
    fn check_redundancy(&self, r: Redundancy) -> Result<(), Response> {
        let zones = self.view()?.zones();
        if r.width() as usize > zones {
            return Err(error(
                ErrorCode::Invalid,
                format!(
                    "redundancy {r} needs {} zones but the cluster has {zones} \
                     (start sheep with distinct -z ZONE, or use fewer copies)",
                    r.width()
                ),
            ));
        }
        Ok(())
    }

    /// Answers one admin request; `true` when this sheep must stop once the answer
    /// is sent (`dog cluster shutdown`, `dog node kill` of this node, `NodeStop`).
    pub fn handle(&self, req: Request) -> (Response, bool) {
        let stop = match &req {
            Request::ClusterShutdown | Request::NodeStop => true,
            Request::NodeKill { id } => self
                .view()
                .ok()
                .and_then(|v| v.me())
                .is_some_and(|me| me as u64 == u64::from(*id)),
            _ => false,
        };
        let r = match req {
            // Between sheep: no admin lock (see the module comment).
            Request::NodeFormat {
                redundancy,
                force,
                ctime,
                vnode_bytes,
            } => self.format_here(redundancy, force, ctime, vnode_bytes),
            Request::NodeStat => self.node_stat().map(|s| {
                Response::NodeInfo(NodeInfo {
                    nodes: vec![s],
                    vdi_total: 0,
                })
            }),
            Request::ObjectCopy { oid } => self.object_copy(oid).map(Response::Copy),
            Request::EpochFreeze => {
                self.cluster.freeze();
                Ok(Response::Ok)
            }
            Request::NodeStop => Ok(Response::Ok),
            Request::RecoveryStat => Ok(Response::Recovery(recovery::progress())),
            Request::RecoverSet { enabled, rate } => self.recover_set(enabled, rate),
            req => {
                let _serial = self.admin.lock().unwrap_or_else(|p| p.into_inner());
                self.handle_locked(req)
            }
        };
        match r {
            Ok(r) => (r, stop),
            Err(r) => (r, false),
        }
    }

    fn run_vdi<R: Send + 'static>(
        &self,
        f: impl FnOnce(
                Gateway,
            )
                -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<R, VdiError>>>>
            + Send
            + 'static,
    ) -> Result<R, Response> {
        self.store
            .run_on(0, move |sh| f(Gateway::new(sh)))
            .map_err(store_error)?
            .map_err(vdi_error)
    }

    /// Sends `req` to member `m` (or answers it here) and returns the answer; an error
    /// answer becomes `Err` with the member named.
    fn on_member(&self, v: &ClusterView, i: usize, req: &Request) -> Result<Response, Response> {
        let m = &v.members[i];
        let r = if v.is_me(i) {
            self.handle(req.clone()).0
        } else {
            let name = m.id.to_string();
            let fail = |e: String| error(ErrorCode::Io, format!("node {name}: {e}"));
            let mut c =
                AdminClient::connect(&m.id.addr().to_string(), m.id.port(), FORWARD_TIMEOUT)
                    .map_err(|e| fail(e.to_string()))?;
            c.call(req).map_err(|e| fail(e.to_string()))?
        };
        match r {
            Response::Error { code, message } => {
                Err(error(code, format!("node {}: {message}", m.id)))
            }
            r => Ok(r),
        }
    }

    /// Sends `req` to every member; fails with the first error after all were tried.
    fn on_every_member(&self, v: &ClusterView, req: &Request) -> Result<Vec<Response>, Response> {
        let mut out = Vec::with_capacity(v.members.len());
        let mut first_err = None;
        for i in 0..v.members.len() {
            match self.on_member(v, i, req) {
                Ok(r) => out.push(r),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Writes this node's format record (every member does, at `dog cluster format`).
    fn format_here(
        &self,
        redundancy: Redundancy,
        force: bool,
        ctime: u64,
        vnode_bytes: u64,
    ) -> Result<Response, Response> {
        // A damaged or old record is replaced by a forced format.
        match self.format_record() {
            Ok(None) => {}
            Ok(Some(_)) | Err(_) if force => {
                for oid in self.store.list().map_err(store_error)? {
                    self.store.remove(oid).map_err(store_error)?;
                }
                let _ =
                    std::fs::remove_file(self.store.dir().join(crate::cluster::runtime::EPOCH_LOG));
            }
            Ok(Some(_)) => {
                return Err(error(
                    ErrorCode::AlreadyFormatted,
                    "cluster is already formatted; 'dog cluster format --force' erases every VDI",
                ))
            }
            Err(e) => return Err(e),
        }
        let (copies, parity) = redundancy.to_wire();
        let mut rec = FormatRecord {
            magic: FORMAT_MAGIC,
            version: FORMAT_VERSION,
            copies,
            parity,
            ctime,
            vnode_bytes,
            epoch: self.cluster.view().map_or(1, |v| v.epoch),
            crc: 0,
        };
        let n = std::mem::size_of::<FormatRecord>();
        rec.crc = crc32c::crc32c(&bytemuck::bytes_of(&rec)[..n - 4]);
        let meta = WriteMeta {
            object_size: FORMAT_OBJECT_SIZE,
            version: 0,
            epoch: rec.epoch,
        };
        self.store
            .write(cluster_oid(0), 0, bytemuck::bytes_of(&rec).to_vec(), meta)
            .map_err(store_error)?;
        self.cluster
            .formatted(&self.store, vnode_bytes)
            .map_err(|e| error(ErrorCode::Io, e.to_string()))?;
        Ok(Response::Ok)
    }

    /// Pauses or resumes this node's recovery and/or changes its rate limit (each
    /// member's share of `dog cluster recover`).
    fn recover_set(&self, enabled: Option<bool>, rate: Option<u64>) -> Result<Response, Response> {
        if enabled.is_none() && rate.is_none() {
            return Err(error(
                ErrorCode::Invalid,
                "a recover request changes nothing: give enabled and/or rate",
            ));
        }
        if let Some(on) = enabled {
            recovery::set_enabled(on);
        }
        if let Some(r) = rate {
            recovery::set_rate(r);
        }
        tracing::info!(?enabled, rate_bytes_per_sec = ?rate, "recovery settings changed");
        Ok(Response::Ok)
    }

    fn node_stat(&self) -> Result<NodeStat, Response> {
        let stats = self.store.stats().map_err(store_error)?;
        let (_, avail) = fs_space(self.store.dir());
        let id = self
            .cluster
            .view()
            .and_then(|v| v.me())
            .map_or(0, |i| i as u32);
        Ok(NodeStat {
            id,
            addr: self.id.addr.clone(),
            zone: self.id.zone,
            used: stats.segment_bytes,
            avail,
            nosync: self.id.nosync,
        })
    }

    fn object_copy(&self, oid: u64) -> Result<Option<CopyInfo>, Response> {
        let Some(info) = self.store.stat(oid).map_err(store_error)? else {
            return Ok(None);
        };
        let bytes = self.store.read(oid, 0, info.size).map_err(store_error)?;
        Ok(Some(CopyInfo {
            addr: self.id.addr.clone(),
            zone: self.id.zone,
            used: info.used,
            crc: crc32c::crc32c(&bytes),
        }))
    }

    fn handle_locked(&self, req: Request) -> Result<Response, Response> {
        match req {
            Request::ClusterFormat { redundancy, force } => {
                let v = self.view()?;
                self.check_serving()?;
                self.check_redundancy(redundancy)?;
                if !force && self.format_record()?.is_some() {
                    return Err(error(
                        ErrorCode::AlreadyFormatted,
                        "cluster is already formatted; 'dog cluster format --force' erases every VDI",
                    ));
                }
                let nodes: Vec<_> = v
                    .members
                    .iter()
                    .map(|m| collie_placement::Node::new(m.id, m.zone, m.capacity))
                    .collect();
                let req = Request::NodeFormat {
                    redundancy,
                    force,
                    ctime: now(),
                    vnode_bytes: vnode_bytes_for(&nodes),
                };
                self.on_every_member(&v, &req)?;
                Ok(Response::Ok)
            }
            Request::ClusterInfo => {
                let rec = self.format_record()?;
                let formatted = rec.map(|r| ClusterFormatInfo {
                    ctime: r.ctime,
                    default_redundancy: Redundancy::from_wire(r.copies, r.parity)
                        .unwrap_or(Redundancy::Replicated { copies: 1 }),
                    vnode_bytes: r.vnode_bytes,
                });
                let waiting_for = self
                    .cluster
                    .view()
                    .map(|v| v.waiting_for.iter().map(NodeId::to_string).collect())
                    .unwrap_or_default();
                let epochs = self
                    .cluster
                    .history()
                    .into_iter()
                    .rev()
                    .map(|r| EpochEntry {
                        epoch: r.epoch,
                        time: r.time,
                        nodes: r.members.iter().map(NodeId::to_string).collect(),
                    })
                    .collect();
                // Before the format there is nothing to recover.
                let recovery = match (&formatted, self.cluster.view()) {
                    (Some(_), Some(v)) => members_recovery(&v),
                    _ => Vec::new(),
                };
                Ok(Response::ClusterInfo(ClusterInfo {
                    formatted,
                    waiting_for,
                    epochs,
                    recovery,
                }))
            }
            Request::ClusterShutdown => {
                let v = self.view()?;
                // Everyone stops recording epochs before anyone leaves.
                self.on_every_member(&v, &Request::EpochFreeze)?;
                for i in (0..v.members.len()).filter(|&i| !v.is_me(i)) {
                    if let Err(e) = self.on_member(&v, i, &Request::NodeStop) {
                        tracing::warn!("cluster shutdown: {e:?}");
                    }
                }
                Ok(Response::Ok)
            }
            Request::NodeRecovery => {
                let v = self.view()?;
                Ok(Response::NodeRecovery(members_recovery(&v)))
            }
            Request::ClusterRecover { enabled, rate } => {
                if enabled.is_none() && rate.is_none() {
                    return Err(error(
                        ErrorCode::Invalid,
                        "a recover request changes nothing: give enabled and/or rate",
                    ));
                }
                let v = self.view()?;
                self.on_every_member(&v, &Request::RecoverSet { enabled, rate })?;
                Ok(Response::Ok)
            }
            Request::NodeList => {
                let v = self.view()?;
                Ok(Response::Nodes(
                    v.members
                        .iter()
                        .enumerate()
                        .map(|(i, m)| NodeEntry {
                            id: i as u32,
                            addr: m.id.to_string(),
                            zone: m.zone,
                            vnodes: v.ring().vnodes(NodeIdx::from_index(i)),
                            nbd_port: m.nbd_port,
                        })
                        .collect(),
                ))
            }
            Request::NodeKill { id } => {
                let v = self.view()?;
                let i = id as usize;
                if i >= v.members.len() {
                    return Err(error(
                        ErrorCode::Invalid,
                        format!("there is no node {id} ('dog node list' shows the ids)"),
                    ));
                }
                if !v.is_me(i) {
                    self.on_member(&v, i, &Request::NodeStop)?;
                }
                Ok(Response::Ok)
            }
            Request::NodeInfo => {
                let v = self.view()?;
                let mut nodes = Vec::with_capacity(v.members.len());
                for r in self.on_every_member(&v, &Request::NodeStat)? {
                    if let Response::NodeInfo(mut ni) = r {
                        nodes.append(&mut ni.nodes);
                    }
                }
                nodes.sort_by_key(|n| n.id);
                let vdi_total = if v.serving() && self.format_record()?.is_some() {
                    self.run_vdi(|gw| Box::pin(async move { vdi::list(&gw).await }))?
                        .iter()
                        .map(|(i, _)| i.size)
                        .sum()
                } else {
                    0
                };
                Ok(Response::NodeInfo(NodeInfo { nodes, vdi_total }))
            }
            Request::ObjectLocation { name, index } => {
                self.check_serving()?;
                let v = self.view()?;
                let lookup = name.clone();
                let ino = self
                    .run_vdi(move |gw| Box::pin(async move { vdi::lookup(&gw, &lookup).await }))?;
                // The inode is a replicated object of its own, whatever the VDI's scheme.
                let (oid, redundancy) = match index {
                    None => (
                        ino.vid.inode_oid(),
                        Redundancy::Replicated {
                            copies: ino.meta_copies() as u8,
                        },
                    ),
                    Some(index) if index < ino.object_count() => {
                        (ino.vid.data_oid(index as u32), ino.redundancy)
                    }
                    Some(index) => {
                        return Err(error(
                            ErrorCode::Invalid,
                            format!(
                                "vdi '{name}' has {} objects; index {index} is past its end",
                                ino.object_count()
                            ),
                        ))
                    }
                };
                let targets = v
                    .targets(oid, redundancy.width() as usize)
                    .into_iter()
                    .map(|i| v.members[i].id.to_string())
                    .collect();
                // Fragments are kept under their own keys: ask for each, in order.
                let keys: Vec<u64> = match redundancy {
                    Redundancy::Replicated { .. } => vec![oid],
                    Redundancy::Erasure { .. } => (0..redundancy.width())
                        .map(|j| collie_placement::ids::fragment_oid(oid, j as u8))
                        .collect(),
                };
                let mut copies = Vec::new();
                for oid in keys {
                    for r in self.on_every_member(&v, &Request::ObjectCopy { oid })? {
                        if let Response::Copy(Some(c)) = r {
                            copies.push(c);
                        }
                    }
                }
                Ok(Response::Location(ObjectLocation {
                    oid,
                    redundancy,
                    targets,
                    copies,
                }))
            }
            Request::VdiCheck { name, repair } => {
                self.check_serving()?;
                let r = self.run_vdi(move |gw| {
                    Box::pin(async move { vdi::check(&gw, &name, repair).await })
                })?;
                Ok(Response::Check(r))
            }
            Request::VdiCreate {
                name,
                size,
                redundancy,
            } => {
                self.check_serving()?;
                let default = self.default_redundancy()?;
                let r = redundancy.unwrap_or(default);
                self.check_redundancy(r)?;
                let t = now();
                let ino = self.run_vdi(move |gw| {
                    Box::pin(async move { vdi::create(&gw, &name, size, r, t).await })
                })?;
                Ok(Response::Vdi(info(&ino, 0)))
            }
            Request::VdiList => {
                self.check_serving()?;
                let list = self.run_vdi(|gw| Box::pin(async move { vdi::list(&gw).await }))?;
                Ok(Response::VdiList(
                    list.iter().map(|(i, used)| info(i, *used)).collect(),
                ))
            }
            Request::VdiDelete { name } => {
                self.check_serving()?;
                let lookup = name.clone();
                let ino = self
                    .run_vdi(move |gw| Box::pin(async move { vdi::lookup(&gw, &lookup).await }))?;
                // End the open connections first, so none writes objects after the
                // delete has listed them. (Connections on other nodes are not ended:
                // see docs/cluster.md.)
                let vid = ino.vid.get();
                for shard in 0..self.store.shard_count() {
                    let n = self
                        .store
                        .run_on(shard, move |_| async move { export::close_exports(vid) })
                        .map_err(store_error)?;
                    if n > 0 {
                        tracing::info!(vdi = %name, shard, connections = n, "ended connections of a deleted vdi");
                    }
                }
                self.run_vdi(move |gw| Box::pin(async move { vdi::delete(&gw, &name).await }))?;
                Ok(Response::Ok)
            }
            Request::VdiResize { name, size } => {
                self.check_serving()?;
                let ino = self.run_vdi(move |gw| {
                    Box::pin(async move { vdi::resize(&gw, &name, size).await })
                })?;
                Ok(Response::Vdi(info(&ino, 0)))
            }
            Request::VdiRead { name, offset, len } => {
                self.check_serving()?;
                if len > MAX_DATA {
                    return Err(error(ErrorCode::Invalid, "read longer than one frame"));
                }
                let data = self.run_vdi(move |gw| {
                    Box::pin(async move {
                        let export = open(gw, &name).await?;
                        check_range(&export, offset, u64::from(len))?;
                        export
                            .read(offset, u64::from(len))
                            .await
                            .map_err(|e| VdiError::Invalid(e.message))
                    })
                })?;
                Ok(Response::Data(data))
            }
            Request::VdiWrite { name, offset, data } => {
                self.check_serving()?;
                self.run_vdi(move |gw| {
                    Box::pin(async move {
                        let export = open(gw, &name).await?;
                        check_range(&export, offset, data.len() as u64)?;
                        export
                            .write(offset, &data, true)
                            .await
                            .map_err(|e| VdiError::Invalid(e.message))
                    })
                })?;
                Ok(Response::Ok)
            }
            // Answered in `handle`.
            Request::NodeFormat { .. }
            | Request::NodeStat
            | Request::ObjectCopy { .. }
            | Request::EpochFreeze
            | Request::NodeStop
            | Request::RecoveryStat
            | Request::RecoverSet { .. } => Err(error(ErrorCode::Internal, "misrouted request")),
        }
    }

    /// Every VDI name (for logs and tests).
    pub fn vdi_names(&self) -> Vec<String> {
        self.run_vdi(|gw| Box::pin(async move { vdi::list(&gw).await }))
            .map(|l| l.into_iter().map(|(i, _)| i.name).collect())
            .unwrap_or_default()
    }
}

async fn open(gw: Gateway, name: &str) -> Result<crate::export::VdiExport, VdiError> {
    VdiProvider { gw }
        .open(name)
        .await
        .map_err(VdiError::Invalid)?
        .ok_or_else(|| VdiError::NotFound(name.to_owned()))
}

fn check_range(e: &impl BlockExport, offset: u64, len: u64) -> Result<(), VdiError> {
    match offset.checked_add(len) {
        Some(end) if end <= e.size() => Ok(()),
        _ => Err(VdiError::Invalid(format!(
            "range {offset}+{len} is past the end of the vdi ({} bytes)",
            e.size()
        ))),
    }
}
