//! The admin requests `dog` sends and the responses `sheep` returns, with their body
//! encodings. Opcodes: requests 0x01.., responses 0x81..; a response with a non-zero
//! header status is an error whose body is one message string.

use super::body::{Dec, Enc, MAX_NAME, MAX_TEXT};
use super::{AdminError, FrameHeader, Result, MAX_DATA};
use collie_placement::Redundancy;

/// `ObjectLocation`'s index on the wire for a VDI's inode object.
pub const INODE_INDEX: u64 = u64::MAX;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Format the cluster with a default redundancy; `force` erases an existing one.
    ClusterFormat {
        redundancy: Redundancy,
        force: bool,
    },
    ClusterInfo,
    /// Stop every sheep cleanly.
    ClusterShutdown,
    NodeInfo,
    /// `redundancy: None` takes the cluster default.
    VdiCreate {
        name: String,
        size: u64,
        redundancy: Option<Redundancy>,
    },
    VdiList,
    VdiDelete {
        name: String,
    },
    VdiResize {
        name: String,
        size: u64,
    },
    VdiRead {
        name: String,
        offset: u64,
        len: u32,
    },
    VdiWrite {
        name: String,
        offset: u64,
        data: Vec<u8>,
    },
    /// The members of the current epoch.
    NodeList,
    /// Stop the node with this id (its index in `NodeList`); the others go on.
    NodeKill {
        id: u32,
    },
    /// Which nodes hold object `index` of a VDI (`None`: its inode object). On the
    /// wire the inode is index [`INODE_INDEX`], which no VDI's objects reach.
    ObjectLocation {
        name: String,
        index: Option<u64>,
    },
    /// Verify every object of a VDI (every stripe of an erasure-coded one); with
    /// `repair`, rewrite what is missing or wrong.
    VdiCheck {
        name: String,
        repair: bool,
    },
    /// Every member's recovery state (`dog node recovery`); answer: `NodeRecovery`.
    NodeRecovery,
    /// Pause or resume recovery and/or change its rate limit on every member
    /// (`dog cluster recover ...`); at least one of the two is given.
    ClusterRecover {
        enabled: Option<bool>,
        /// Bytes per second; 0 is no limit.
        rate: Option<u64>,
    },

    // Between sheep: the node that received a cluster-wide command sends these to
    // every member (itself included). `dog` has no use for them.
    /// Write this node's format record (`dog cluster format` on every node).
    NodeFormat {
        redundancy: Redundancy,
        force: bool,
        ctime: u64,
        vnode_bytes: u64,
    },
    /// This node's own space figures (one entry of `dog node info`).
    NodeStat,
    /// This node's copy of an object, if it has one: size and CRC32C of its bytes.
    ObjectCopy {
        oid: u64,
    },
    /// Stop recording epochs: the cluster is about to shut down as a whole, and the
    /// members leaving one by one must not look like failures after the restart.
    EpochFreeze,
    /// Stop this sheep (after `EpochFreeze` for a cluster shutdown).
    NodeStop,
    /// This node's recovery state; answer: `Recovery`.
    RecoveryStat,
    /// Change this node's recovery switch and/or rate (one member's share of
    /// `ClusterRecover`).
    RecoverSet {
        enabled: Option<bool>,
        rate: Option<u64>,
    },
}

/// Why a request failed; `dog` prints the message and exits with a code per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    Invalid = 1,
    NotFormatted = 2,
    AlreadyFormatted = 3,
    NoVdi = 4,
    VdiExists = 5,
    NoSpace = 6,
    Io = 7,
    ShuttingDown = 8,
    Internal = 9,
    /// A restarted cluster waits for members of its last epoch: no data yet.
    Waiting = 10,
}

impl ErrorCode {
    pub fn from_wire(v: u32) -> ErrorCode {
        match v {
            1 => ErrorCode::Invalid,
            2 => ErrorCode::NotFormatted,
            3 => ErrorCode::AlreadyFormatted,
            4 => ErrorCode::NoVdi,
            5 => ErrorCode::VdiExists,
            6 => ErrorCode::NoSpace,
            7 => ErrorCode::Io,
            8 => ErrorCode::ShuttingDown,
            10 => ErrorCode::Waiting,
            _ => ErrorCode::Internal,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: u32,
    /// Unix seconds.
    pub time: u64,
    /// `ADDR:PORT` of each member.
    pub nodes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterInfo {
    /// `None` until `dog cluster format`.
    pub formatted: Option<ClusterFormatInfo>,
    /// Members of the last epoch that are not back yet: the cluster serves no data
    /// until this is empty (after a restart).
    pub waiting_for: Vec<String>,
    pub epochs: Vec<EpochEntry>,
    /// Each member's recovery state, by id (empty before the cluster is formatted).
    pub recovery: Vec<MemberRecovery>,
}

/// One node's recovery: where it stands in the current epoch and how it is throttled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryStat {
    /// The epoch the counters are for.
    pub epoch: u32,
    /// Recovery for `epoch` has finished on this node.
    pub complete: bool,
    /// Objects to look at in this epoch, and how many are done.
    pub objects_total: u64,
    pub objects_done: u64,
    /// Bytes copied or rebuilt onto this node in this epoch.
    pub bytes: u64,
    /// Objects of `objects_done` that could not be recovered: fewer copies or fragments
    /// than needed are left anywhere (tried again at the next epoch).
    pub objects_lost: u64,
    /// False after `dog cluster recover disable`: background recovery is paused.
    pub enabled: bool,
    /// Bytes per second at most; 0 is no limit.
    pub rate: u64,
}

/// One member's recovery state as the node that asked it saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRecovery {
    /// Index in `NodeList` (the `Id` of `dog node list`).
    pub id: u32,
    /// `ADDR:PORT`.
    pub addr: String,
    /// Its answer, or why there is none (it did not answer in time, refused, ...).
    pub stat: std::result::Result<RecoveryStat, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterFormatInfo {
    /// Unix seconds.
    pub ctime: u64,
    pub default_redundancy: Redundancy,
    /// Ring bytes per vnode, fixed at format.
    pub vnode_bytes: u64,
}

/// One member, as `dog node list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEntry {
    pub id: u32,
    pub addr: String,
    pub zone: u32,
    pub vnodes: u32,
    pub nbd_port: u16,
}

/// One node's copy of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyInfo {
    pub addr: String,
    pub zone: u32,
    /// Bytes of data the copy holds (holes excluded).
    pub used: u64,
    /// CRC32C of the whole object as it reads (holes as zeros).
    pub crc: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectLocation {
    pub oid: u64,
    pub redundancy: Redundancy,
    /// Where placement puts the copies at this epoch, in order.
    pub targets: Vec<String>,
    /// Every node that holds a copy, whether placement wants it there or not.
    pub copies: Vec<CopyInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStat {
    pub id: u32,
    pub addr: String,
    pub zone: u32,
    /// Bytes the store occupies on disk.
    pub used: u64,
    /// Bytes still free on the file system holding the store.
    pub avail: u64,
    /// Started with `-n`: acknowledgements are not durable.
    pub nosync: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub nodes: Vec<NodeStat>,
    /// Sum of the virtual sizes of every VDI.
    pub vdi_total: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VdiInfo {
    pub name: String,
    pub vid: u32,
    pub size: u64,
    /// Bytes of data this VDI's own objects hold.
    pub used: u64,
    /// Bytes shared with a parent snapshot (0 until snapshots exist).
    pub shared: u64,
    /// Unix seconds.
    pub ctime: u64,
    pub redundancy: Redundancy,
    /// 0 for the working VDI, else the snapshot id.
    pub snap_id: u32,
    pub tag: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Ok,
    Error {
        code: ErrorCode,
        message: String,
    },
    ClusterInfo(ClusterInfo),
    NodeInfo(NodeInfo),
    Vdi(VdiInfo),
    VdiList(Vec<VdiInfo>),
    Data(Vec<u8>),
    Nodes(Vec<NodeEntry>),
    Location(ObjectLocation),
    /// Answer to `ObjectCopy`: `None` when the node has no copy.
    Copy(Option<CopyInfo>),
    Check(CheckReport),
    /// Answer to `RecoveryStat`.
    Recovery(RecoveryStat),
    /// Answer to `NodeRecovery`: every member, by id.
    NodeRecovery(Vec<MemberRecovery>),
}

/// What `dog vdi check` found (counts over the VDI's objects).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub objects: u64,
    /// Stripes checked (erasure coding; 0 for replicated VDIs).
    pub stripes: u64,
    /// Stripes whose every fragment is on its target at one version, parity matching.
    pub consistent: u64,
    pub repaired: u64,
    /// Stripes no version of which could be decoded.
    pub lost: u64,
    /// Fragments with no target (fewer zones than data + parity).
    pub unplaced: u64,
}

impl std::ops::AddAssign for CheckReport {
    fn add_assign(&mut self, o: Self) {
        self.objects += o.objects;
        self.stripes += o.stripes;
        self.consistent += o.consistent;
        self.repaired += o.repaired;
        self.lost += o.lost;
        self.unplaced += o.unplaced;
    }
}

mod op {
    pub const CLUSTER_FORMAT: u16 = 0x01;
    pub const CLUSTER_INFO: u16 = 0x02;
    pub const CLUSTER_SHUTDOWN: u16 = 0x03;
    pub const NODE_INFO: u16 = 0x04;
    pub const VDI_CREATE: u16 = 0x10;
    pub const VDI_LIST: u16 = 0x11;
    pub const VDI_DELETE: u16 = 0x12;
    pub const VDI_RESIZE: u16 = 0x13;
    pub const VDI_READ: u16 = 0x14;
    pub const VDI_WRITE: u16 = 0x15;
    pub const NODE_LIST: u16 = 0x05;
    pub const NODE_KILL: u16 = 0x06;
    pub const OBJECT_LOCATION: u16 = 0x16;
    pub const VDI_CHECK: u16 = 0x17;
    pub const NODE_RECOVERY: u16 = 0x07;
    pub const CLUSTER_RECOVER: u16 = 0x08;
    pub const NODE_FORMAT: u16 = 0x40;
    pub const NODE_STAT: u16 = 0x41;
    pub const OBJECT_COPY: u16 = 0x42;
    pub const EPOCH_FREEZE: u16 = 0x43;
    pub const NODE_STOP: u16 = 0x44;
    pub const RECOVERY_STAT: u16 = 0x45;
    pub const RECOVER_SET: u16 = 0x46;

    pub const R_OK: u16 = 0x81;
    pub const R_ERROR: u16 = 0x82;
    pub const R_CLUSTER_INFO: u16 = 0x83;
    pub const R_NODE_INFO: u16 = 0x84;
    pub const R_VDI: u16 = 0x85;
    pub const R_VDI_LIST: u16 = 0x86;
    pub const R_DATA: u16 = 0x87;
    pub const R_NODES: u16 = 0x88;
    pub const R_LOCATION: u16 = 0x89;
    pub const R_COPY: u16 = 0x8a;
    pub const R_CHECK: u16 = 0x8b;
    pub const R_RECOVERY: u16 = 0x8c;
    pub const R_NODE_RECOVERY: u16 = 0x8d;
}

fn redundancy(d: &mut Dec<'_>) -> Result<Redundancy> {
    let a = d.u8("redundancy")?;
    let p = d.u8("redundancy")?;
    Redundancy::from_wire(a, p).map_err(AdminError::Malformed)
}

fn put_redundancy(e: &mut Enc, r: Redundancy) {
    let (a, p) = r.to_wire();
    e.u8(a).u8(p);
}

impl Request {
    /// Refuses what the receiver would reject anyway (names over `MAX_NAME` bytes, data
    /// over `MAX_DATA`), so a client gets a clear error instead of a refused frame.
    pub fn check(&self) -> Result<()> {
        let name = match self {
            Request::VdiCreate { name, .. }
            | Request::VdiDelete { name }
            | Request::VdiResize { name, .. }
            | Request::VdiRead { name, .. }
            | Request::VdiWrite { name, .. }
            | Request::ObjectLocation { name, .. }
            | Request::VdiCheck { name, .. } => name.as_str(),
            _ => "",
        };
        if name.len() > MAX_NAME {
            return Err(AdminError::Malformed(format!(
                "vdi name of {} bytes exceeds the {MAX_NAME}-byte limit",
                name.len()
            )));
        }
        match self {
            Request::VdiWrite { data, .. } if data.len() > MAX_DATA as usize => Err(
                AdminError::Malformed(format!("{} bytes of data exceed one frame", data.len())),
            ),
            Request::VdiRead { len, .. } if *len > MAX_DATA => Err(AdminError::Malformed(format!(
                "a read of {len} bytes exceeds one frame"
            ))),
            Request::ClusterRecover {
                enabled: None,
                rate: None,
            }
            | Request::RecoverSet {
                enabled: None,
                rate: None,
            } => Err(AdminError::Malformed(
                "a recover request changes nothing: give enabled and/or rate".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Opcode and body.
    pub fn encode(&self) -> (u16, Vec<u8>) {
        let mut e = Enc::default();
        let code = match self {
            Request::ClusterFormat { redundancy, force } => {
                put_redundancy(&mut e, *redundancy);
                e.bool(*force);
                op::CLUSTER_FORMAT
            }
            Request::ClusterInfo => op::CLUSTER_INFO,
            Request::ClusterShutdown => op::CLUSTER_SHUTDOWN,
            Request::NodeInfo => op::NODE_INFO,
            Request::VdiCreate {
                name,
                size,
                redundancy,
            } => {
                e.str(name).u64(*size);
                match redundancy {
                    Some(r) => {
                        e.bool(true);
                        put_redundancy(&mut e, *r);
                    }
                    None => {
                        e.bool(false);
                    }
                }
                op::VDI_CREATE
            }
            Request::VdiList => op::VDI_LIST,
            Request::VdiDelete { name } => {
                e.str(name);
                op::VDI_DELETE
            }
            Request::VdiResize { name, size } => {
                e.str(name).u64(*size);
                op::VDI_RESIZE
            }
            Request::VdiRead { name, offset, len } => {
                e.str(name).u64(*offset).u32(*len);
                op::VDI_READ
            }
            Request::VdiWrite { name, offset, data } => {
                e.str(name).u64(*offset).bytes(data);
                op::VDI_WRITE
            }
            Request::NodeList => op::NODE_LIST,
            Request::NodeKill { id } => {
                e.u32(*id);
                op::NODE_KILL
            }
            Request::ObjectLocation { name, index } => {
                e.str(name).u64(index.unwrap_or(INODE_INDEX));
                op::OBJECT_LOCATION
            }
            Request::VdiCheck { name, repair } => {
                e.str(name).bool(*repair);
                op::VDI_CHECK
            }
            Request::NodeFormat {
                redundancy,
                force,
                ctime,
                vnode_bytes,
            } => {
                put_redundancy(&mut e, *redundancy);
                e.bool(*force).u64(*ctime).u64(*vnode_bytes);
                op::NODE_FORMAT
            }
            Request::NodeStat => op::NODE_STAT,
            Request::ObjectCopy { oid } => {
                e.u64(*oid);
                op::OBJECT_COPY
            }
            Request::EpochFreeze => op::EPOCH_FREEZE,
            Request::NodeStop => op::NODE_STOP,
            Request::NodeRecovery => op::NODE_RECOVERY,
            Request::ClusterRecover { enabled, rate } => {
                put_recover(&mut e, *enabled, *rate);
                op::CLUSTER_RECOVER
            }
            Request::RecoveryStat => op::RECOVERY_STAT,
            Request::RecoverSet { enabled, rate } => {
                put_recover(&mut e, *enabled, *rate);
                op::RECOVER_SET
            }
        };
        (code, e.0)
    }

    pub fn decode(h: &FrameHeader, body: &[u8]) -> Result<Request> {
        let mut d = Dec::new(body);
        let r = match h.opcode {
            op::CLUSTER_FORMAT => Request::ClusterFormat {
                redundancy: redundancy(&mut d)?,
                force: d.bool("force")?,
            },
            op::CLUSTER_INFO => Request::ClusterInfo,
            op::CLUSTER_SHUTDOWN => Request::ClusterShutdown,
            op::NODE_INFO => Request::NodeInfo,
            op::VDI_CREATE => Request::VdiCreate {
                name: d.str(MAX_NAME, "vdi name")?,
                size: d.u64("size")?,
                redundancy: if d.bool("has redundancy")? {
                    Some(redundancy(&mut d)?)
                } else {
                    None
                },
            },
            op::VDI_LIST => Request::VdiList,
            op::VDI_DELETE => Request::VdiDelete {
                name: d.str(MAX_NAME, "vdi name")?,
            },
            op::VDI_RESIZE => Request::VdiResize {
                name: d.str(MAX_NAME, "vdi name")?,
                size: d.u64("size")?,
            },
            op::VDI_READ => Request::VdiRead {
                name: d.str(MAX_NAME, "vdi name")?,
                offset: d.u64("offset")?,
                len: d.u32("length")?,
            },
            op::VDI_WRITE => Request::VdiWrite {
                name: d.str(MAX_NAME, "vdi name")?,
                offset: d.u64("offset")?,
                data: d.bytes(MAX_DATA as usize, "data")?.to_vec(),
            },
            op::NODE_LIST => Request::NodeList,
            op::NODE_KILL => Request::NodeKill {
                id: d.u32("node id")?,
            },
            op::OBJECT_LOCATION => Request::ObjectLocation {
                name: d.str(MAX_NAME, "vdi name")?,
                index: Some(d.u64("object index")?).filter(|&i| i != INODE_INDEX),
            },
            op::VDI_CHECK => Request::VdiCheck {
                name: d.str(MAX_NAME, "vdi name")?,
                repair: d.bool("repair")?,
            },
            op::NODE_FORMAT => Request::NodeFormat {
                redundancy: redundancy(&mut d)?,
                force: d.bool("force")?,
                ctime: d.u64("ctime")?,
                vnode_bytes: d.u64("vnode bytes")?,
            },
            op::NODE_STAT => Request::NodeStat,
            op::OBJECT_COPY => Request::ObjectCopy { oid: d.u64("oid")? },
            op::EPOCH_FREEZE => Request::EpochFreeze,
            op::NODE_STOP => Request::NodeStop,
            op::NODE_RECOVERY => Request::NodeRecovery,
            op::CLUSTER_RECOVER => {
                let (enabled, rate) = recover(&mut d)?;
                Request::ClusterRecover { enabled, rate }
            }
            op::RECOVERY_STAT => Request::RecoveryStat,
            op::RECOVER_SET => {
                let (enabled, rate) = recover(&mut d)?;
                Request::RecoverSet { enabled, rate }
            }
            other => return Err(AdminError::UnknownOpcode(other)),
        };
        d.finish()?;
        Ok(r)
    }
}

fn put_vdi(e: &mut Enc, v: &VdiInfo) {
    e.str(&v.name)
        .u32(v.vid)
        .u64(v.size)
        .u64(v.used)
        .u64(v.shared)
        .u64(v.ctime);
    put_redundancy(e, v.redundancy);
    e.u32(v.snap_id).str(&v.tag);
}

fn vdi(d: &mut Dec<'_>) -> Result<VdiInfo> {
    Ok(VdiInfo {
        name: d.str(MAX_NAME, "vdi name")?,
        vid: d.u32("vid")?,
        size: d.u64("size")?,
        used: d.u64("used")?,
        shared: d.u64("shared")?,
        ctime: d.u64("ctime")?,
        redundancy: redundancy(d)?,
        snap_id: d.u32("snap id")?,
        tag: d.str(MAX_NAME, "tag")?,
    })
}

fn put_copy(e: &mut Enc, c: &CopyInfo) {
    e.str(&c.addr).u32(c.zone).u64(c.used).u32(c.crc);
}

fn copy(d: &mut Dec<'_>) -> Result<CopyInfo> {
    Ok(CopyInfo {
        addr: d.str(MAX_NAME, "node address")?,
        zone: d.u32("zone")?,
        used: d.u64("used")?,
        crc: d.u32("crc")?,
    })
}

/// `enabled` and `rate` of a recover request: each a presence flag then the value.
fn put_recover(e: &mut Enc, enabled: Option<bool>, rate: Option<u64>) {
    match enabled {
        Some(on) => e.bool(true).bool(on),
        None => e.bool(false),
    };
    match rate {
        Some(r) => e.bool(true).u64(r),
        None => e.bool(false),
    };
}

fn recover(d: &mut Dec<'_>) -> Result<(Option<bool>, Option<u64>)> {
    let enabled = if d.bool("has enabled")? {
        Some(d.bool("enabled")?)
    } else {
        None
    };
    let rate = if d.bool("has rate")? {
        Some(d.u64("rate")?)
    } else {
        None
    };
    if enabled.is_none() && rate.is_none() {
        return Err(AdminError::Malformed(
            "a recover request changes nothing: give enabled and/or rate".into(),
        ));
    }
    Ok((enabled, rate))
}

fn put_recovery_stat(e: &mut Enc, s: &RecoveryStat) {
    e.u32(s.epoch)
        .bool(s.complete)
        .u64(s.objects_total)
        .u64(s.objects_done)
        .u64(s.bytes)
        .bool(s.enabled)
        .u64(s.rate)
        .u64(s.objects_lost);
}

fn recovery_stat(d: &mut Dec<'_>) -> Result<RecoveryStat> {
    Ok(RecoveryStat {
        epoch: d.u32("recovery epoch")?,
        complete: d.bool("recovery complete")?,
        objects_total: d.u64("recovery objects total")?,
        objects_done: d.u64("recovery objects done")?,
        bytes: d.u64("recovery bytes")?,
        enabled: d.bool("recovery enabled")?,
        rate: d.u64("recovery rate")?,
        objects_lost: d.u64("recovery objects lost")?,
    })
}

/// A member's recovery: id, address, then either `true` and its state or `false` and
/// why it gave none.
fn put_member_recovery(e: &mut Enc, m: &MemberRecovery) {
    e.u32(m.id).str(&m.addr);
    match &m.stat {
        Ok(s) => {
            e.bool(true);
            put_recovery_stat(e, s);
        }
        Err(why) => {
            e.bool(false).str(truncate(why, MAX_TEXT));
        }
    }
}

fn member_recoveries(d: &mut Dec<'_>) -> Result<Vec<MemberRecovery>> {
    let n = d.count(MIN_MEMBER_RECOVERY, "recovery entries")?;
    let mut list = Vec::with_capacity(n);
    for _ in 0..n {
        list.push(member_recovery(d)?);
    }
    Ok(list)
}

fn member_recovery(d: &mut Dec<'_>) -> Result<MemberRecovery> {
    Ok(MemberRecovery {
        id: d.u32("node id")?,
        addr: d.str(MAX_NAME, "node address")?,
        stat: if d.bool("has recovery state")? {
            Ok(recovery_stat(d)?)
        } else {
            Err(d.str(MAX_TEXT, "why a node did not answer")?)
        },
    })
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Smallest encoding of one list entry, so counts can be checked against the body.
const MIN_VDI: usize = 4 + 4 + 8 * 4 + 2 + 4 + 4;
const MIN_NODE: usize = 4 + 4 + 4 + 16 + 1;
const MIN_EPOCH: usize = 4 + 8 + 4;
const MIN_NODE_ENTRY: usize = 4 + 4 + 4 + 4 + 4;
const MIN_COPY: usize = 4 + 4 + 8 + 4;
const MIN_MEMBER_RECOVERY: usize = 4 + 4 + 1 + 4;

impl Response {
    /// Opcode, status and body.
    pub fn encode(&self) -> (u16, u32, Vec<u8>) {
        let mut e = Enc::default();
        let (code, status) = match self {
            Response::Ok => (op::R_OK, 0),
            Response::Error { code, message } => {
                e.str(truncate(message, MAX_TEXT));
                (op::R_ERROR, *code as u32)
            }
            Response::ClusterInfo(ci) => {
                match &ci.formatted {
                    Some(f) => {
                        e.bool(true).u64(f.ctime);
                        put_redundancy(&mut e, f.default_redundancy);
                        e.u64(f.vnode_bytes);
                    }
                    None => {
                        e.bool(false);
                    }
                }
                e.u32(ci.waiting_for.len() as u32);
                for n in &ci.waiting_for {
                    e.str(n);
                }
                e.u32(ci.epochs.len() as u32);
                for ep in &ci.epochs {
                    e.u32(ep.epoch).u64(ep.time).u32(ep.nodes.len() as u32);
                    for n in &ep.nodes {
                        e.str(n);
                    }
                }
                e.u32(ci.recovery.len() as u32);
                for m in &ci.recovery {
                    put_member_recovery(&mut e, m);
                }
                (op::R_CLUSTER_INFO, 0)
            }
            Response::NodeInfo(ni) => {
                e.u32(ni.nodes.len() as u32);
                for n in &ni.nodes {
                    e.u32(n.id)
                        .str(&n.addr)
                        .u32(n.zone)
                        .u64(n.used)
                        .u64(n.avail)
                        .bool(n.nosync);
                }
                e.u64(ni.vdi_total);
                (op::R_NODE_INFO, 0)
            }
            Response::Vdi(v) => {
                put_vdi(&mut e, v);
                (op::R_VDI, 0)
            }
            Response::VdiList(list) => {
                e.u32(list.len() as u32);
                for v in list {
                    put_vdi(&mut e, v);
                }
                (op::R_VDI_LIST, 0)
            }
            Response::Data(data) => {
                e.bytes(data);
                (op::R_DATA, 0)
            }
            Response::Nodes(list) => {
                e.u32(list.len() as u32);
                for n in list {
                    e.u32(n.id)
                        .str(&n.addr)
                        .u32(n.zone)
                        .u32(n.vnodes)
                        .u32(u32::from(n.nbd_port));
                }
                (op::R_NODES, 0)
            }
            Response::Location(l) => {
                e.u64(l.oid);
                put_redundancy(&mut e, l.redundancy);
                e.u32(l.targets.len() as u32);
                for t in &l.targets {
                    e.str(t);
                }
                e.u32(l.copies.len() as u32);
                for c in &l.copies {
                    put_copy(&mut e, c);
                }
                (op::R_LOCATION, 0)
            }
            Response::Copy(c) => {
                match c {
                    Some(c) => {
                        e.bool(true);
                        put_copy(&mut e, c);
                    }
                    None => {
                        e.bool(false);
                    }
                }
                (op::R_COPY, 0)
            }
            Response::Check(c) => {
                e.u64(c.objects)
                    .u64(c.stripes)
                    .u64(c.consistent)
                    .u64(c.repaired)
                    .u64(c.lost)
                    .u64(c.unplaced);
                (op::R_CHECK, 0)
            }
            Response::Recovery(s) => {
                put_recovery_stat(&mut e, s);
                (op::R_RECOVERY, 0)
            }
            Response::NodeRecovery(list) => {
                e.u32(list.len() as u32);
                for m in list {
                    put_member_recovery(&mut e, m);
                }
                (op::R_NODE_RECOVERY, 0)
            }
        };
        (code, status, e.0)
    }

    pub fn decode(h: &FrameHeader, body: &[u8]) -> Result<Response> {
        let mut d = Dec::new(body);
        let r = match h.opcode {
            op::R_OK => Response::Ok,
            op::R_ERROR => Response::Error {
                code: ErrorCode::from_wire(h.status),
                message: d.str(MAX_TEXT, "error message")?,
            },
            op::R_CLUSTER_INFO => {
                let formatted = if d.bool("formatted")? {
                    Some(ClusterFormatInfo {
                        ctime: d.u64("ctime")?,
                        default_redundancy: redundancy(&mut d)?,
                        vnode_bytes: d.u64("vnode bytes")?,
                    })
                } else {
                    None
                };
                let w = d.count(4, "waiting nodes")?;
                let mut waiting_for = Vec::with_capacity(w);
                for _ in 0..w {
                    waiting_for.push(d.str(MAX_NAME, "node address")?);
                }
                let n = d.count(MIN_EPOCH, "epochs")?;
                let mut epochs = Vec::with_capacity(n);
                for _ in 0..n {
                    let epoch = d.u32("epoch")?;
                    let time = d.u64("epoch time")?;
                    let m = d.count(4, "epoch nodes")?;
                    let mut nodes = Vec::with_capacity(m);
                    for _ in 0..m {
                        nodes.push(d.str(MAX_NAME, "node address")?);
                    }
                    epochs.push(EpochEntry { epoch, time, nodes });
                }
                Response::ClusterInfo(ClusterInfo {
                    formatted,
                    waiting_for,
                    epochs,
                    recovery: member_recoveries(&mut d)?,
                })
            }
            op::R_NODE_INFO => {
                let n = d.count(MIN_NODE, "nodes")?;
                let mut nodes = Vec::with_capacity(n);
                for _ in 0..n {
                    nodes.push(NodeStat {
                        id: d.u32("node id")?,
                        addr: d.str(MAX_NAME, "node address")?,
                        zone: d.u32("zone")?,
                        used: d.u64("used")?,
                        avail: d.u64("avail")?,
                        nosync: d.bool("nosync")?,
                    });
                }
                Response::NodeInfo(NodeInfo {
                    nodes,
                    vdi_total: d.u64("vdi total")?,
                })
            }
            op::R_VDI => Response::Vdi(vdi(&mut d)?),
            op::R_VDI_LIST => {
                let n = d.count(MIN_VDI, "vdis")?;
                let mut list = Vec::with_capacity(n);
                for _ in 0..n {
                    list.push(vdi(&mut d)?);
                }
                Response::VdiList(list)
            }
            op::R_DATA => Response::Data(d.bytes(MAX_DATA as usize, "data")?.to_vec()),
            op::R_NODES => {
                let n = d.count(MIN_NODE_ENTRY, "nodes")?;
                let mut list = Vec::with_capacity(n);
                for _ in 0..n {
                    list.push(NodeEntry {
                        id: d.u32("node id")?,
                        addr: d.str(MAX_NAME, "node address")?,
                        zone: d.u32("zone")?,
                        vnodes: d.u32("vnodes")?,
                        nbd_port: u16::try_from(d.u32("nbd port")?)
                            .map_err(|_| AdminError::Malformed("nbd port out of range".into()))?,
                    });
                }
                Response::Nodes(list)
            }
            op::R_LOCATION => {
                let oid = d.u64("oid")?;
                let redundancy = redundancy(&mut d)?;
                let n = d.count(4, "targets")?;
                let mut targets = Vec::with_capacity(n);
                for _ in 0..n {
                    targets.push(d.str(MAX_NAME, "node address")?);
                }
                let n = d.count(MIN_COPY, "copies")?;
                let mut copies = Vec::with_capacity(n);
                for _ in 0..n {
                    copies.push(copy(&mut d)?);
                }
                Response::Location(ObjectLocation {
                    oid,
                    redundancy,
                    targets,
                    copies,
                })
            }
            op::R_CHECK => Response::Check(CheckReport {
                objects: d.u64("objects")?,
                stripes: d.u64("stripes")?,
                consistent: d.u64("consistent")?,
                repaired: d.u64("repaired")?,
                lost: d.u64("lost")?,
                unplaced: d.u64("unplaced")?,
            }),
            op::R_COPY => Response::Copy(if d.bool("has copy")? {
                Some(copy(&mut d)?)
            } else {
                None
            }),
            op::R_RECOVERY => Response::Recovery(recovery_stat(&mut d)?),
            op::R_NODE_RECOVERY => Response::NodeRecovery(member_recoveries(&mut d)?),
            other => return Err(AdminError::UnknownOpcode(other)),
        };
        d.finish()?;
        Ok(r)
    }
}
