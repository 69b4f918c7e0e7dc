//! VDIs on a node: inode objects, vid allocation by name, and the mapping of a VDI byte
//! range onto its 4 MiB data objects. Functions here run on a shard and reach every
//! object through it (the owning shard serves each object).
//!
//! Inode object (oid = VDI_BIT | vid << 32), `INODE_OBJECT_SIZE` bytes, thin:
//! `[0, 1024)` an [`InodeHeader`]; `[4096, 4096 + 4 * n)` `data_vdi_id[i]` (u32 LE): the
//! vid whose object holds index i, 0 if never written. Format: docs/vdi-format.md.

use crate::ec::{Content, Layout};
use crate::error::{Result as StoreResult, StoreError};
use crate::gateway::{Gateway, META_COPIES};
use crate::partition::WriteMeta;
use bytemuck::{Pod, Zeroable};
use collie_net::admin::CheckReport;
use collie_placement::ids::{base_oid, object_kind, ObjectKind, Vid, DEFAULT_OBJECT_SIZE, MAX_VID};
use collie_placement::Redundancy;
use futures::future::join_all;

pub const INODE_MAGIC: u32 = u32::from_le_bytes(*b"CLIN");
pub const INODE_VERSION: u16 = 1;
pub const INODE_HEADER_LEN: usize = 1024;
/// Where `data_vdi_id[]` starts in the inode object.
pub const DATA_VDI_ID_OFFSET: u64 = 4096;
/// Largest VDI: 16 TiB (Sheepdog: 4 TiB).
pub const MAX_VDI_SIZE: u64 = 16 << 40;
/// The inode object is sized for the largest VDI so that resizing never changes it.
pub const INODE_OBJECT_SIZE: u64 = DATA_VDI_ID_OFFSET + 4 * (MAX_VDI_SIZE / DEFAULT_OBJECT_SIZE);
pub const MAX_NAME_LEN: usize = 256;
/// Objects handled at once by one range operation (bounds memory and messages).
const FAN_OUT: usize = 32;

const FLAG_DELETED: u16 = 1;

/// Errors of VDI operations, mapped to admin error codes and NBD errnos at the edges.
#[derive(Debug, thiserror::Error)]
pub enum VdiError {
    #[error("vdi '{0}' not found")]
    NotFound(String),
    #[error("vdi '{0}' already exists")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("inode of vid {vid:06x} is damaged: {why}")]
    Corrupt { vid: u32, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T> = std::result::Result<T, VdiError>;

/// On-disk inode header (little-endian, 1024 bytes).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct InodeHeader {
    pub magic: u32,
    pub version: u16,
    pub flags: u16,
    pub vid: u32,
    pub parent_vid: u32,
    pub snap_id: u32,
    /// Copies, or data fragments when `parity` > 0.
    pub copies: u8,
    pub parity: u8,
    pub object_shift: u8,
    pub _pad0: u8,
    pub size: u64,
    pub ctime: u64,
    pub snap_ctime: u64,
    pub name_len: u16,
    pub tag_len: u16,
    pub _pad1: u32,
    pub name: [u8; 256],
    pub tag: [u8; 256],
    pub _reserved: [u8; 452],
    /// CRC32C of the bytes before it.
    pub crc: u32,
}
const _: () = assert!(std::mem::size_of::<InodeHeader>() == INODE_HEADER_LEN);

/// A VDI's metadata, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    pub name: String,
    pub vid: Vid,
    pub size: u64,
    pub redundancy: Redundancy,
    pub ctime: u64,
    pub snap_id: u32,
    pub parent: Option<Vid>,
    pub tag: String,
    pub deleted: bool,
}

impl Inode {
    pub fn object_size(&self) -> u64 {
        DEFAULT_OBJECT_SIZE
    }
    pub fn object_count(&self) -> u64 {
        self.size.div_ceil(self.object_size())
    }
    /// Copies of each data object.
    pub fn copies(&self) -> usize {
        self.redundancy.width() as usize
    }
    /// Copies of the inode object: one more than the zones the VDI's data survives
    /// losing, and never fewer than [`META_COPIES`]; an 8:3 VDI whose inode had three
    /// copies would be unreadable after three failures its data survives. Writers use
    /// this; readers look only at the first [`META_COPIES`] targets of the current view:
    /// after failures the surviving copies are among them, or are fetched onto them
    /// (a target brings its copy up to date from every member before it serves).
    pub fn meta_copies(&self) -> usize {
        META_COPIES.max(self.redundancy.tolerates() as usize + 1)
    }

    fn encode(&self) -> InodeHeader {
        let mut h = InodeHeader::zeroed();
        h.magic = INODE_MAGIC;
        h.version = INODE_VERSION;
        h.flags = if self.deleted { FLAG_DELETED } else { 0 };
        h.vid = self.vid.get();
        h.parent_vid = self.parent.map_or(0, Vid::get);
        h.snap_id = self.snap_id;
        (h.copies, h.parity) = self.redundancy.to_wire();
        h.object_shift = collie_placement::ids::DEFAULT_OBJECT_SHIFT;
        h.size = self.size;
        h.ctime = self.ctime;
        h.name_len = self.name.len() as u16;
        h.name[..self.name.len()].copy_from_slice(self.name.as_bytes());
        h.tag_len = self.tag.len() as u16;
        h.tag[..self.tag.len()].copy_from_slice(self.tag.as_bytes());
        h.crc = crc32c::crc32c(&bytemuck::bytes_of(&h)[..INODE_HEADER_LEN - 4]);
        h
    }

    fn decode(vid: Vid, bytes: &[u8]) -> Result<Inode> {
        let corrupt = |why: &str| VdiError::Corrupt {
            vid: vid.get(),
            why: why.to_owned(),
        };
        if bytes.len() < INODE_HEADER_LEN {
            return Err(corrupt("short header"));
        }
        let h: InodeHeader = bytemuck::pod_read_unaligned(&bytes[..INODE_HEADER_LEN]);
        if h.magic != INODE_MAGIC {
            return Err(corrupt("bad magic"));
        }
        if h.crc != crc32c::crc32c(&bytes[..INODE_HEADER_LEN - 4]) {
            return Err(corrupt("header checksum mismatch"));
        }
        if h.version != INODE_VERSION {
            return Err(corrupt(&format!("unknown inode version {}", h.version)));
        }
        if h.vid != vid.get() {
            return Err(corrupt(&format!("header says vid {:06x}", h.vid)));
        }
        if h.object_shift != collie_placement::ids::DEFAULT_OBJECT_SHIFT {
            return Err(corrupt("unsupported object size"));
        }
        let text = |b: &[u8], n: u16| {
            b.get(..usize::from(n))
                .and_then(|s| std::str::from_utf8(s).ok())
                .map(str::to_owned)
                .ok_or_else(|| corrupt("name or tag is not valid"))
        };
        Ok(Inode {
            name: text(&h.name, h.name_len)?,
            vid,
            size: h.size,
            redundancy: Redundancy::from_wire(h.copies, h.parity).map_err(|e| corrupt(&e))?,
            ctime: h.ctime,
            snap_id: h.snap_id,
            parent: Vid::new(h.parent_vid),
            tag: text(&h.tag, h.tag_len)?,
            deleted: h.flags & FLAG_DELETED != 0,
        })
    }
}

/// Write metadata for an object of `object_size` bytes. Versions and epochs become
/// meaningful with replication (the cluster issue); one node writes epoch 1.
pub fn meta(object_size: u64) -> WriteMeta {
    WriteMeta {
        object_size,
        version: 0,
        epoch: 1,
    }
}

/// A VDI name is 1..=256 bytes of printable text without '/' (it is also the NBD export
/// name and part of a URI path).
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(VdiError::Invalid(format!(
            "vdi name must be 1 to {MAX_NAME_LEN} bytes"
        )));
    }
    if name.chars().any(|c| c.is_control() || c == '/') {
        return Err(VdiError::Invalid(format!(
            "vdi name '{}' contains '/' or a control character",
            name.escape_default()
        )));
    }
    Ok(())
}

pub fn check_size(size: u64) -> Result<()> {
    if size == 0 || size > MAX_VDI_SIZE {
        return Err(VdiError::Invalid(format!(
            "vdi size {size} must be between 1 byte and {} TiB",
            MAX_VDI_SIZE >> 40
        )));
    }
    Ok(())
}

fn not_found_is_none<T>(r: StoreResult<T>) -> StoreResult<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The inode of `vid`, if the object exists (deleted ones included).
pub async fn read_inode(gw: &Gateway, vid: Vid) -> Result<Option<Inode>> {
    let oid = vid.inode_oid();
    let bytes = not_found_is_none(gw.read(oid, 0, INODE_HEADER_LEN as u64, META_COPIES).await)?;
    bytes.map(|b| Inode::decode(vid, &b)).transpose()
}

pub async fn write_inode(gw: &Gateway, inode: &Inode) -> Result<()> {
    let h = inode.encode();
    gw.write(
        inode.vid.inode_oid(),
        0,
        bytemuck::bytes_of(&h),
        meta(INODE_OBJECT_SIZE),
        inode.meta_copies(),
    )
    .await?;
    Ok(())
}

/// Where `name` lives or would live: walks the probe sequence from the name's hash to
/// the first vid with no inode. Returns the live inode with that name, if any, and the
/// first never-used vid (tombstones of deleted VDIs are not reused, so the chain a name
/// was created on stays intact).
async fn probe(gw: &Gateway, name: &str) -> Result<(Option<Inode>, Vid)> {
    let start = Vid::of_name(name);
    for i in 0..MAX_VID {
        let vid = start.probe(i);
        match read_inode(gw, vid).await? {
            None => return Ok((None, vid)),
            Some(ino) if !ino.deleted && ino.name == name => return Ok((Some(ino), vid)),
            Some(_) => {}
        }
    }
    Err(VdiError::Invalid("no free vid left".into()))
}

pub async fn find(gw: &Gateway, name: &str) -> Result<Option<Inode>> {
    check_name(name)?;
    Ok(probe(gw, name).await?.0)
}

pub async fn lookup(gw: &Gateway, name: &str) -> Result<Inode> {
    find(gw, name)
        .await?
        .ok_or_else(|| VdiError::NotFound(name.to_owned()))
}

pub async fn create(
    gw: &Gateway,
    name: &str,
    size: u64,
    redundancy: Redundancy,
    ctime: u64,
) -> Result<Inode> {
    check_name(name)?;
    check_size(size)?;
    let (existing, vid) = probe(gw, name).await?;
    if existing.is_some() {
        return Err(VdiError::Exists(name.to_owned()));
    }
    let inode = Inode {
        name: name.to_owned(),
        vid,
        size,
        redundancy,
        ctime,
        snap_id: 0,
        parent: None,
        tag: String::new(),
        deleted: false,
    };
    write_inode(gw, &inode).await?;
    Ok(inode)
}

/// Grows a VDI (shrinking would silently drop data; Sheepdog refuses it too).
pub async fn resize(gw: &Gateway, name: &str, size: u64) -> Result<Inode> {
    check_size(size)?;
    let mut inode = lookup(gw, name).await?;
    if size < inode.size {
        return Err(VdiError::Invalid(format!(
            "shrinking '{name}' from {} to {size} bytes is not supported",
            inode.size
        )));
    }
    inode.size = size;
    write_inode(gw, &inode).await?;
    Ok(inode)
}

/// Every data object of `vid` in the cluster.
async fn data_objects(gw: &Gateway, vid: Vid) -> Result<Vec<u64>> {
    Ok(gw
        .list_all()
        .await?
        .into_iter()
        .filter_map(|key| match object_kind(key) {
            ObjectKind::Data { vid: v, .. } | ObjectKind::Fragment { vid: v, .. } if v == vid => {
                Some(base_oid(key))
            }
            _ => None,
        })
        .collect::<std::collections::BTreeSet<u64>>()
        .into_iter()
        .collect())
}

/// Deletes a VDI: its data objects first, then its inode becomes a tombstone (kept so
/// that names created later on the same probe chain stay reachable).
pub async fn delete(gw: &Gateway, name: &str) -> Result<()> {
    let mut inode = lookup(gw, name).await?;
    let objects = Objects::of(&inode)?;
    for chunk in data_objects(gw, inode.vid).await?.chunks(FAN_OUT) {
        for r in join_all(chunk.iter().map(|&oid| objects.remove(gw, oid))).await {
            r?;
        }
    }
    // The owner table is meaningless now; free its space.
    let table = 4 * (MAX_VDI_SIZE / DEFAULT_OBJECT_SIZE);
    let m = meta(INODE_OBJECT_SIZE);
    gw.discard(
        inode.vid.inode_oid(),
        DATA_VDI_ID_OFFSET,
        table,
        m,
        inode.meta_copies(),
    )
    .await?;
    inode.deleted = true;
    write_inode(gw, &inode).await
}

/// Verifies every object of a VDI (and repairs, if asked): erasure-coded objects at
/// their primary (every stripe decodes, parity matches, every fragment on its target);
/// replicated ones by comparing the copy on every target with the first target's.
pub async fn check(gw: &Gateway, name: &str, repair: bool) -> Result<CheckReport> {
    let inode = lookup(gw, name).await?;
    let objects = Objects::of(&inode)?;
    if repair {
        restore_inode(gw, &inode).await?;
    }
    let mut report = CheckReport::default();
    for chunk in data_objects(gw, inode.vid).await?.chunks(FAN_OUT) {
        let checks = chunk.iter().map(|&oid| async move {
            match objects {
                Objects::Erasure(lay) => gw.ec_check(oid, &lay, repair).await,
                Objects::Replicated { copies } => gw.check_copies(oid, copies, repair).await,
            }
        });
        for r in join_all(checks).await {
            report += r?;
        }
    }
    Ok(report)
}

/// Puts the inode (header and owner table: every byte it holds) on each of its current
/// targets, so a VDI whose inode holders died keeps its inode redundancy (until
/// recovery does this for every object). An owner entry set by a writer while this
/// runs may be written back to its old value on some copies; owners are only a hint.
async fn restore_inode(gw: &Gateway, inode: &Inode) -> Result<()> {
    let header = inode.encode();
    let table: Vec<u8> = load_owners(gw, inode)
        .await?
        .iter()
        .flat_map(|o| o.to_le_bytes())
        .collect();
    let piece = OWNER_TABLE_PIECE as usize;
    let mut ranges: Vec<(u64, &[u8])> = vec![(0, bytemuck::bytes_of(&header))];
    for (i, part) in table.chunks(piece).enumerate() {
        ranges.push((DATA_VDI_ID_OFFSET + (i * piece) as u64, part));
    }
    gw.restore(
        inode.vid.inode_oid(),
        &ranges,
        meta(INODE_OBJECT_SIZE),
        inode.meta_copies(),
    )
    .await?;
    Ok(())
}

/// Every live VDI with the bytes its data objects hold (one copy counted).
pub async fn list(gw: &Gateway) -> Result<Vec<(Inode, u64)>> {
    let oids = gw.list_all().await?;
    let mut out = Vec::new();
    for &oid in &oids {
        if let ObjectKind::Inode { vid } = object_kind(oid) {
            if let Some(ino) = read_inode(gw, vid).await? {
                if !ino.deleted {
                    out.push((ino, 0u64));
                }
            }
        }
    }
    let data: Vec<(Vid, u64)> = oids
        .iter()
        .filter_map(|&oid| match object_kind(oid) {
            ObjectKind::Data { vid, .. } => Some((vid, oid)),
            _ => None,
        })
        .collect();
    for chunk in data.chunks(FAN_OUT) {
        let copies = |vid: Vid| {
            out.iter()
                .find(|(i, _)| i.vid == vid)
                .map_or(1, |(i, _)| i.copies())
        };
        let stats = join_all(chunk.iter().map(|&(vid, oid)| gw.stat(oid, copies(vid)))).await;
        for (&(vid, _), st) in chunk.iter().zip(stats) {
            if let (Some(info), Some(entry)) = (st?, out.iter_mut().find(|(i, _)| i.vid == vid)) {
                entry.1 += info.used;
            }
        }
    }
    // An erasure-coded object counts its object size once, as Sheepdog counts
    // allocated objects (fragments and parity are not the VDI's bytes).
    let coded: std::collections::BTreeSet<u64> = oids
        .iter()
        .filter(|&&k| matches!(object_kind(k), ObjectKind::Fragment { .. }))
        .map(|&k| base_oid(k))
        .collect();
    for oid in coded {
        if let ObjectKind::Data { vid, .. } = object_kind(oid) {
            if let Some(entry) = out.iter_mut().find(|(i, _)| i.vid == vid) {
                entry.1 += entry.0.object_size();
            }
        }
    }
    out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    Ok(out)
}

/// Bytes of the owner table read or written at once: a request to another node must
/// fit one peer frame, and a 16 TiB VDI's table (16 MiB) does not.
const OWNER_TABLE_PIECE: u64 = 1 << 20;
const _: () = assert!(OWNER_TABLE_PIECE <= collie_net::peer::MAX_PAYLOAD as u64);

/// `data_vdi_id[0..object_count]` of a VDI.
pub async fn load_owners(gw: &Gateway, inode: &Inode) -> Result<Vec<u32>> {
    let len = 4 * inode.object_count();
    let mut bytes = Vec::with_capacity(len as usize);
    let mut at = 0;
    while at < len {
        let piece = OWNER_TABLE_PIECE.min(len - at);
        let got = gw
            .read(
                inode.vid.inode_oid(),
                DATA_VDI_ID_OFFSET + at,
                piece,
                META_COPIES,
            )
            .await;
        match not_found_is_none(got)? {
            Some(b) => bytes.extend_from_slice(&b),
            // No inode object at all: no owners yet (every entry 0).
            None => break,
        }
        at += piece;
    }
    let n = inode.object_count();
    Ok(bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .chain(std::iter::repeat(0))
        .take(n as usize)
        .collect())
}

/// Records that object `index` of `inode` is held by `owner`, durably.
pub async fn set_owner(gw: &Gateway, inode: &Inode, index: u32, owner: Vid) -> Result<()> {
    gw.write(
        inode.vid.inode_oid(),
        DATA_VDI_ID_OFFSET + 4 * u64::from(index),
        &owner.get().to_le_bytes(),
        meta(INODE_OBJECT_SIZE),
        inode.meta_copies(),
    )
    .await?;
    Ok(())
}

/// How a VDI's data objects are kept: whole copies, or erasure-coded fragments. The
/// one place that knows both, for the NBD export and the VDI operations alike.
#[derive(Clone, Copy, Debug)]
pub enum Objects {
    Replicated { copies: usize },
    Erasure(Layout),
}

impl Objects {
    pub fn of(inode: &Inode) -> Result<Objects> {
        Ok(match Layout::of(inode.redundancy, inode.object_size())? {
            None => Objects::Replicated {
                copies: inode.copies(),
            },
            Some(l) => Objects::Erasure(l),
        })
    }

    /// `NotFound` if the object does not exist (the caller reads zeros).
    pub async fn read(
        &self,
        gw: &Gateway,
        oid: u64,
        offset: u64,
        len: u64,
    ) -> StoreResult<Vec<u8>> {
        match self {
            Objects::Replicated { copies } => gw.read(oid, offset, len, *copies).await,
            Objects::Erasure(l) => gw.ec_read(oid, l, offset, len).await,
        }
    }

    pub async fn write(
        &self,
        gw: &Gateway,
        oid: u64,
        offset: u64,
        data: &[u8],
        object_size: u64,
    ) -> StoreResult<()> {
        match self {
            Objects::Replicated { copies } => {
                gw.write(oid, offset, data, meta(object_size), *copies)
                    .await
            }
            Objects::Erasure(l) => gw.ec_write(oid, l, offset, Content::Data(data)).await,
        }
    }

    /// Makes a range read as zeros. Replicated objects free it (whole objects are
    /// removed, parts discarded; objects that do not exist are left alone).
    /// Erasure-coded stripes become zeros by a versioned write like any other, so a
    /// crash cannot leave fragments half removed; their space is not freed.
    pub async fn punch(
        &self,
        gw: &Gateway,
        oid: u64,
        offset: u64,
        len: u64,
        object_size: u64,
    ) -> StoreResult<()> {
        match self {
            Objects::Replicated { copies } => {
                if gw.stat(oid, *copies).await?.is_none() {
                    return Ok(());
                }
                if offset == 0 && len == object_size {
                    gw.remove(oid, *copies).await
                } else {
                    gw.discard(oid, offset, len, meta(object_size), *copies)
                        .await
                }
            }
            Objects::Erasure(l) => gw.ec_write(oid, l, offset, Content::Zeros(len)).await,
        }
    }

    /// `(length, has_data)` runs; `NotFound` if the object does not exist. Erasure-coded
    /// objects answer "data" throughout (always safe; holes are only a hint).
    pub async fn extents(
        &self,
        gw: &Gateway,
        oid: u64,
        offset: u64,
        len: u64,
    ) -> StoreResult<Vec<(u64, bool)>> {
        match self {
            Objects::Replicated { copies } => gw.extents(oid, offset, len, *copies).await,
            Objects::Erasure(_) => Ok(vec![(len, true)]),
        }
    }

    pub async fn remove(&self, gw: &Gateway, oid: u64) -> StoreResult<()> {
        match self {
            Objects::Replicated { copies } => gw.remove(oid, *copies).await,
            Objects::Erasure(l) => gw.ec_remove(oid, l).await,
        }
    }
}

/// One object's share of a VDI byte range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub index: u32,
    /// Offset inside the object.
    pub offset: u64,
    pub len: u64,
    /// Offset of this piece inside the caller's buffer.
    pub at: usize,
}

/// Splits `[offset, offset + len)` of a VDI into per-object pieces.
pub fn pieces(offset: u64, len: u64, object_size: u64) -> impl Iterator<Item = Piece> {
    let end = offset.saturating_add(len);
    let mut pos = offset;
    std::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        let index = pos / object_size;
        let in_obj = pos % object_size;
        let n = (object_size - in_obj).min(end - pos);
        let p = Piece {
            index: index as u32,
            offset: in_obj,
            len: n,
            at: (pos - offset) as usize,
        };
        pos += n;
        Some(p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_range_exactly() {
        let os = 4 << 20;
        let p: Vec<Piece> = pieces(os - 1, os + 2, os).collect();
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[0],
            Piece {
                index: 0,
                offset: os - 1,
                len: 1,
                at: 0
            }
        );
        assert_eq!(p[1].len, os);
        assert_eq!(
            p[2],
            Piece {
                index: 2,
                offset: 0,
                len: 1,
                at: (os + 1) as usize
            }
        );
        assert_eq!(pieces(5, 0, os).count(), 0);
    }

    #[test]
    fn inode_round_trips_and_detects_damage() {
        let ino = Inode {
            name: "replica".into(),
            vid: Vid::of_name("replica"),
            size: 20 << 30,
            redundancy: Redundancy::Erasure { data: 4, parity: 2 },
            ctime: 1_700_000_000,
            snap_id: 0,
            parent: None,
            tag: "t".into(),
            deleted: false,
        };
        let h = ino.encode();
        let bytes = bytemuck::bytes_of(&h).to_vec();
        assert_eq!(Inode::decode(ino.vid, &bytes).unwrap(), ino);
        for i in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[i] ^= 1;
            assert!(Inode::decode(ino.vid, &b).is_err(), "flip at {i}");
        }
        let other = Vid::new(ino.vid.get() % MAX_VID + 1).unwrap();
        assert!(Inode::decode(other, &bytes).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("replica").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("a\nb").is_err());
        assert!(check_name(&"x".repeat(257)).is_err());
        assert!(check_size(0).is_err());
        assert!(check_size(MAX_VDI_SIZE + 1).is_err());
    }
}
