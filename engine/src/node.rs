//! One node's answers to admin requests (`dog`): cluster format and info, node info, and
//! the VDI commands. Runs on the caller's thread and reaches the store through
//! `Store::run_on`; admin commands are serialised by one lock (they are rare and must
//! not race each other, e.g. two creates of one name). The data path never takes it.

use crate::export::{self, VdiProvider};
use crate::partition::WriteMeta;
use crate::store::{fs_space, Store};
use crate::vdi::{self, VdiError};
use crate::StoreError;
use bytemuck::{Pod, Zeroable};
use collie_net::admin::{
    ClusterFormatInfo, ClusterInfo, EpochEntry, ErrorCode, NodeInfo, NodeStat, Request, Response,
    VdiInfo, MAX_DATA,
};
use collie_net::nbd::{BlockExport, ExportProvider};
use collie_placement::ids::cluster_oid;
use collie_placement::Redundancy;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

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
    admin: Mutex<()>,
}

const FORMAT_MAGIC: u32 = u32::from_le_bytes(*b"CLFM");
const FORMAT_VERSION: u16 = 1;
const FORMAT_OBJECT_SIZE: u64 = 4096;

/// The cluster format record (object `cluster_oid(0)`), little-endian.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct FormatRecord {
    magic: u32,
    version: u16,
    copies: u8,
    parity: u8,
    ctime: u64,
    epoch: u32,
    crc: u32,
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
    pub fn new(store: Store, id: NodeIdentity) -> Node {
        Node {
            store,
            id,
            admin: Mutex::new(()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn into_store(self) -> Store {
        self.store
    }

    /// Zones in the cluster: one node is one zone until the cluster driver exists.
    fn zones(&self) -> u32 {
        1
    }

    fn format_record(&self) -> Result<Option<FormatRecord>, Response> {
        let r = self.store.read(cluster_oid(0), 0, FORMAT_OBJECT_SIZE);
        let bytes = match r {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(store_error(e)),
        };
        let rec: FormatRecord =
            bytemuck::pod_read_unaligned(&bytes[..std::mem::size_of::<FormatRecord>()]);
        let body = &bytemuck::bytes_of(&rec)[..std::mem::size_of::<FormatRecord>() - 4];
        if rec.magic != FORMAT_MAGIC
            || rec.version != FORMAT_VERSION
            || rec.crc != crc32c::crc32c(body)
        {
            return Err(error(ErrorCode::Io, "the cluster format record is damaged"));
        }
        Ok(Some(rec))
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

    fn check_zones(&self, r: Redundancy) -> Result<(), Response> {
        if r.width() > self.zones() {
            return Err(error(
                ErrorCode::Invalid,
                format!(
                    "redundancy {r} needs {} zones but the cluster has {}",
                    r.width(),
                    self.zones()
                ),
            ));
        }
        Ok(())
    }

    /// Answers one admin request. `ClusterShutdown` is only acknowledged here; the
    /// caller stops the node after sending the reply.
    pub fn handle(&self, req: Request) -> Response {
        let _serial = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        match self.handle_locked(req) {
            Ok(r) | Err(r) => r,
        }
    }

    fn run_vdi<R: Send + 'static>(
        &self,
        f: impl FnOnce(
                std::rc::Rc<crate::Shard>,
            )
                -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<R, VdiError>>>>
            + Send
            + 'static,
    ) -> Result<R, Response> {
        self.store
            .run_on(0, f)
            .map_err(store_error)?
            .map_err(vdi_error)
    }

    fn handle_locked(&self, req: Request) -> Result<Response, Response> {
        match req {
            Request::ClusterFormat { redundancy, force } => {
                self.check_zones(redundancy)?;
                if self.format_record()?.is_some() {
                    if !force {
                        return Err(error(
                            ErrorCode::AlreadyFormatted,
                            "cluster is already formatted; 'dog cluster format --force' erases every VDI",
                        ));
                    }
                    for oid in self.store.list().map_err(store_error)? {
                        self.store.remove(oid).map_err(store_error)?;
                    }
                }
                let (copies, parity) = redundancy.to_wire();
                let mut rec = FormatRecord {
                    magic: FORMAT_MAGIC,
                    version: FORMAT_VERSION,
                    copies,
                    parity,
                    ctime: now(),
                    epoch: 1,
                    crc: 0,
                };
                let n = std::mem::size_of::<FormatRecord>();
                rec.crc = crc32c::crc32c(&bytemuck::bytes_of(&rec)[..n - 4]);
                let meta = WriteMeta {
                    object_size: FORMAT_OBJECT_SIZE,
                    version: 0,
                    epoch: 1,
                };
                self.store
                    .write(cluster_oid(0), 0, bytemuck::bytes_of(&rec).to_vec(), meta)
                    .map_err(store_error)?;
                Ok(Response::Ok)
            }
            Request::ClusterInfo => {
                let rec = self.format_record()?;
                let formatted = rec.map(|r| ClusterFormatInfo {
                    ctime: r.ctime,
                    default_redundancy: Redundancy::from_wire(r.copies, r.parity)
                        .unwrap_or(Redundancy::Replicated { copies: 1 }),
                    vnode_bytes: 0,
                });
                let epochs = rec
                    .map(|r| EpochEntry {
                        epoch: r.epoch,
                        time: r.ctime,
                        nodes: vec![self.id.addr.clone()],
                    })
                    .into_iter()
                    .collect();
                Ok(Response::ClusterInfo(ClusterInfo {
                    formatted,
                    waiting_for: vec![],
                    epochs,
                }))
            }
            Request::ClusterShutdown => Ok(Response::Ok),
            Request::NodeInfo => {
                let stats = self.store.stats().map_err(store_error)?;
                let (_, avail) = fs_space(self.store.dir());
                let vdi_total = self
                    .run_vdi(|sh| Box::pin(async move { vdi::list(&sh).await }))?
                    .iter()
                    .map(|(i, _)| i.size)
                    .sum();
                Ok(Response::NodeInfo(NodeInfo {
                    nodes: vec![NodeStat {
                        id: 0,
                        addr: self.id.addr.clone(),
                        zone: self.id.zone,
                        used: stats.segment_bytes,
                        avail,
                        nosync: self.id.nosync,
                    }],
                    vdi_total,
                }))
            }
            Request::VdiCreate {
                name,
                size,
                redundancy,
            } => {
                let r = match redundancy {
                    Some(r) => {
                        self.default_redundancy()?;
                        r
                    }
                    None => self.default_redundancy()?,
                };
                self.check_zones(r)?;
                let t = now();
                let ino = self.run_vdi(move |sh| {
                    Box::pin(async move { vdi::create(&sh, &name, size, r, t).await })
                })?;
                Ok(Response::Vdi(info(&ino, 0)))
            }
            Request::VdiList => {
                let list = self.run_vdi(|sh| Box::pin(async move { vdi::list(&sh).await }))?;
                Ok(Response::VdiList(
                    list.iter().map(|(i, used)| info(i, *used)).collect(),
                ))
            }
            Request::VdiDelete { name } => {
                let lookup = name.clone();
                let ino = self
                    .run_vdi(move |sh| Box::pin(async move { vdi::lookup(&sh, &lookup).await }))?;
                // End the open connections first, so none writes objects after the
                // delete has listed them.
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
                self.run_vdi(move |sh| Box::pin(async move { vdi::delete(&sh, &name).await }))?;
                Ok(Response::Ok)
            }
            Request::VdiResize { name, size } => {
                let ino = self.run_vdi(move |sh| {
                    Box::pin(async move { vdi::resize(&sh, &name, size).await })
                })?;
                Ok(Response::Vdi(info(&ino, 0)))
            }
            Request::VdiRead { name, offset, len } => {
                if len > MAX_DATA {
                    return Err(error(ErrorCode::Invalid, "read longer than one frame"));
                }
                let data = self.run_vdi(move |sh| {
                    Box::pin(async move {
                        let export = open(sh, &name).await?;
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
                self.run_vdi(move |sh| {
                    Box::pin(async move {
                        let export = open(sh, &name).await?;
                        check_range(&export, offset, data.len() as u64)?;
                        export
                            .write(offset, &data, true)
                            .await
                            .map_err(|e| VdiError::Invalid(e.message))
                    })
                })?;
                Ok(Response::Ok)
            }
            other => Err(error(
                ErrorCode::Invalid,
                format!("{other:?} needs the cluster (not built yet)"),
            )),
        }
    }

    /// Every VDI name (for logs and tests).
    pub fn vdi_names(&self) -> Vec<String> {
        self.run_vdi(|sh| Box::pin(async move { vdi::list(&sh).await }))
            .map(|l| l.into_iter().map(|(i, _)| i.name).collect())
            .unwrap_or_default()
    }
}

async fn open(
    sh: std::rc::Rc<crate::Shard>,
    name: &str,
) -> Result<crate::export::VdiExport, VdiError> {
    VdiProvider { shard: sh }
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
