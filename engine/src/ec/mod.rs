//! Erasure-coded data objects (DESIGN.md §5; docs/erasure.md).
//!
//! An object of a `D:P` VDI is kept as `D + P` fragments on the first `D + P` targets
//! of its oid, fragment `j` on target `j`, each under its own key
//! ([`fragment_oid`]). The placement module says which bytes are in which fragment.
//!
//! No write hole. Every chunk a write changes gets the write's version; a holder keeps
//! each stripe's chunk in two slots, and a write of version `v` goes into the slot that
//! does not hold the version the writer read (its *keep* version), so until the write
//! is complete on all holders the old state still decodes from them. Versions are
//! `epoch << 32 | counter`: only the primary (target 0) assigns them, at most one node
//! is the primary of an object in an epoch, and epochs only grow, so a newer write
//! always has a larger version. A data fragment's slot carries the version of the write
//! that last changed that chunk, a parity fragment's slot the version `w` of the write
//! that made it; every slot also records the state `V` that write left the stripe in,
//! the version of each data fragment (all `w` after a whole-stripe write; a small write
//! changes one data chunk and XORs the difference into each parity, docs/erasure.md).
//! A reader that finds fragments at different versions decodes the newest recorded
//! `(w, V)` that at least `D` fragments hold,
//! never a mix; a stripe's blocks that a write did not touch are the same in both
//! states, so they never change. A slot whose chunk (and vector) fails its CRC32C (a
//! write torn by a crash, bit rot) is skipped as if it were absent.
//!
//! Ordering. Writes go to the primary, which runs the read-modify-write of partial
//! stripes under a range lock of its owning shard, so two writers to different blocks
//! of one stripe never lose each other's update. Reads go straight to the data
//! fragments' holders, each chunk at its holder's newest version; anything unexpected
//! (a missing fragment, a damaged chunk, an unreachable holder) sends the read to the
//! careful path: ask every member for its fragments of the object, pick versions as
//! above and decode.
//!
//! Here: the layout and slot format. `holder`: fragments in a holder's store and the
//! fragment ops it serves; `recent`: the chunks its small writes just wrote, which the
//! next small write of the stripe reads back. `state`: stripe states, which one a reader decodes, and
//! what a primary remembers of its targets. `read`, `write`, `check`: the gateway and
//! primary paths.

mod check;
mod holder;
mod read;
mod recent;
mod state;
mod write;

use check::encode_report;
pub(crate) use holder::drop_fragment;
pub use holder::serve;
use holder::*;
use state::*;

use crate::error::{Result, StoreError};
use crate::gateway::{lock_range, peer_addr, view, Gateway, Target};
use crate::partition::WriteMeta;
use crate::peer::{Call, Rpc, RpcError};
use crate::shard::{Reply, Shard};
use bytemuck::{Pod, Zeroable};
use collie_net::admin::CheckReport;
use collie_net::peer::{
    split_u64s, Op, FLAG_CREATE, FLAG_RECENT, FLAG_RECOVERY, FLAG_REPAIR, FLAG_ZEROS, MAX_PAYLOAD,
};
use collie_placement::erasure::{Codec, Geometry, DEFAULT_CHUNK};
use collie_placement::ids::{fragment_oid, object_kind, ObjectKind};
use collie_placement::Redundancy;
use futures::future::join_all;
use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// The version every stripe of a new object starts at: zeros. Versions the primary
/// assigns are `epoch << 32 | counter` with epoch >= 1, so always larger.
pub const INITIAL: u64 = 1;
/// In a FragRead: the newest valid version of this stripe.
pub const NEWEST: u64 = 0;
/// In a FragRead: this stripe is not wanted.
pub const SKIP: u64 = u64::MAX;

/// Slot flag: the stripe's chunk is zeros (nothing was written to the slot). A zeros
/// slot encodes every data fragment at its own version.
const SLOT_ZEROS: u32 = 1;
/// Slot flag: the state the write that made the slot left the stripe in (the version of
/// every data fragment) is its vector in the fragment's vector area, not every data
/// fragment at the slot's version; the slot's CRC covers the vector, then the chunk, so
/// a torn vector is a torn slot. Without it (and without `SLOT_STATELESS`) the slot's
/// write was a whole-stripe one.
const SLOT_MIXED: u32 = 2;
/// Slot flag of data fragments: the slot records no state (a repair rewrote the chunk
/// at its version without knowing the state its write left): it is read as data of
/// that version, but no reader takes a state from it.
const SLOT_STATELESS: u32 = 4;
/// Objects whose stripe versions a primary remembers, per shard (~10 KiB each for 4:2).
const CACHED_OBJECTS: usize = 2048;
/// Fragment headers a holder keeps in memory, per shard (8 KiB each for 4:2, 24 KiB
/// once a small write left a mixed state in it).
const CACHED_HEADERS: usize = 2048;

/// One slot of a stripe's header entry on a holder.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct Slot {
    /// 0: never written (unknown, not zeros).
    pub version: u64,
    /// CRC32C of the chunk in the slot.
    pub crc: u32,
    pub flags: u32,
}

/// A holder's header entry for one stripe of one fragment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct StripeEntry {
    pub slots: [Slot; 2],
}
const ENTRY: u64 = std::mem::size_of::<StripeEntry>() as u64;
const _: () = assert!(ENTRY == 32);

impl StripeEntry {
    fn initial() -> StripeEntry {
        let mut e = StripeEntry::zeroed();
        e.slots[0] = Slot {
            version: INITIAL,
            crc: 0,
            flags: SLOT_ZEROS,
        };
        e
    }
    /// The newest version this entry records (0 if none).
    pub fn newest(&self) -> u64 {
        self.slots[0].version.max(self.slots[1].version)
    }
    fn has(&self, v: u64) -> bool {
        v != 0 && self.slots.iter().any(|s| s.version == v)
    }
}

/// The state slot `k` records, as D data versions: its vector if the slot is mixed
/// (`stored`: the slot's D versions), zeros if it records none, else its own version D
/// times (a whole-stripe write).
fn vector_of(e: &StripeEntry, k: usize, stored: &[u64], d: usize) -> Vec<u64> {
    let s = &e.slots[k];
    if s.flags & SLOT_MIXED != 0 {
        stored.to_vec()
    } else if s.flags & SLOT_STATELESS != 0 {
        vec![0; d]
    } else {
        vec![s.version; d]
    }
}

/// The CRC a slot records: over its vector (mixed slots only), then its chunk.
fn slot_crc(vector: Option<&[u64]>, chunk: &[u8]) -> u32 {
    let seed = vector.map_or(0, |v| crc32c::crc32c(bytemuck::cast_slice(v)));
    crc32c::crc32c_append(seed, chunk)
}

/// How an erasure-coded VDI's objects are cut, and where a holder keeps a fragment: a
/// header of one [`StripeEntry`] per stripe (4 KiB aligned), two slots of a whole
/// fragment each, then the vector area: per slot and stripe the D data versions of the
/// state a mixed slot records.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub geo: Geometry,
    header: u64,
}

impl Layout {
    /// The layout of a VDI's data objects; `None` for replicated VDIs.
    pub fn of(r: Redundancy, object_size: u64) -> Result<Option<Layout>> {
        match r {
            Redundancy::Replicated { .. } => Ok(None),
            Redundancy::Erasure { data, parity } => {
                Geometry::new(data.into(), parity.into(), DEFAULT_CHUNK, object_size)
                    .map(|geo| Some(Layout::new(geo)))
                    .map_err(|e| StoreError::Invalid(e.to_string()))
            }
        }
    }

    fn new(geo: Geometry) -> Layout {
        Layout {
            geo,
            header: (geo.stripes() * ENTRY).next_multiple_of(4096),
        }
    }

    fn from_wire(geometry: u32, object_size: u64) -> Result<Layout> {
        let (d, p) = ((geometry >> 8) as u8, geometry as u8);
        if geometry >> 16 != 0 || p == 0 {
            return Err(StoreError::Invalid(format!(
                "erasure geometry {geometry:#x} is not data << 8 | parity"
            )));
        }
        Layout::of(Redundancy::Erasure { data: d, parity: p }, object_size)?
            .ok_or_else(|| StoreError::Invalid("not an erasure geometry".into()))
    }

    pub fn wire(&self) -> u32 {
        self.geo.data() << 8 | self.geo.parity()
    }
    pub fn data(&self) -> usize {
        self.geo.data() as usize
    }
    /// Fragments per object (data + parity).
    pub fn width(&self) -> usize {
        self.geo.fragments() as usize
    }
    fn chunk(&self) -> usize {
        self.geo.chunk() as usize
    }
    pub fn stripes(&self) -> u64 {
        self.geo.stripes()
    }
    fn stripe_size(&self) -> u64 {
        self.geo.stripe_size()
    }
    /// Size of the store object that holds one fragment.
    fn fragment_object_size(&self) -> u64 {
        self.vectors_at() + (2 * self.stripes() * self.data() as u64 * 8).next_multiple_of(4096)
    }
    fn vectors_at(&self) -> u64 {
        self.header + 2 * self.geo.fragment_size()
    }
    /// Where slot `slot`'s vector of `stripe` is: per slot, the stripes' vectors in a row.
    fn vector_at(&self, slot: usize, stripe: u64) -> u64 {
        let d = self.data() as u64;
        self.vectors_at() + (slot as u64 * self.stripes() + stripe) * d * 8
    }
    fn is_parity(&self, frag: usize) -> bool {
        frag >= self.data()
    }
    fn meta(&self) -> WriteMeta {
        WriteMeta {
            object_size: self.fragment_object_size(),
            version: 0,
            epoch: crate::gateway::current_epoch().max(1),
        }
    }
    fn slot_at(&self, slot: usize, stripe: u64) -> u64 {
        self.header + slot as u64 * self.geo.fragment_size() + stripe * self.geo.chunk()
    }
    fn check_stripes(&self, s0: u64, n: u64) -> Result<()> {
        if n == 0 || s0.checked_add(n).is_none_or(|e| e > self.stripes()) {
            return Err(StoreError::OutOfRange(format!(
                "stripes {s0}+{n} outside an object of {} stripes",
                self.stripes()
            )));
        }
        Ok(())
    }
}

/// What an erasure-coded write puts in its range.
#[derive(Clone, Copy)]
pub enum Content<'a> {
    Data(&'a [u8]),
    /// This many bytes of zeros.
    Zeros(u64),
}

impl Content<'_> {
    fn len(&self) -> u64 {
        match self {
            Content::Data(d) => d.len() as u64,
            Content::Zeros(n) => *n,
        }
    }
}

thread_local! {
    static CODECS: RefCell<HashMap<u32, Codec>> = RefCell::new(HashMap::new());
}

fn with_codec<T>(lay: &Layout, f: impl FnOnce(&mut Codec) -> T) -> T {
    CODECS.with(|m| {
        let mut m = m.borrow_mut();
        let codec = m
            .entry(lay.wire() ^ (lay.geo.object_size() as u32).rotate_left(16))
            .or_insert_with(|| Codec::new(lay.geo));
        if *codec.geometry() != lay.geo {
            *codec = Codec::new(lay.geo);
        }
        f(codec)
    })
}

fn codec_error(e: collie_placement::erasure::CodecError) -> StoreError {
    StoreError::io("erasure code", std::io::Error::other(e.to_string()))
}

/// A frag-write or frag-delta payload (docs/wire-peer.md): the stripes' new versions,
/// their kept versions, their states (D versions each), then the chunks.
fn frag_payload(versions: &[u64], keeps: &[u64], states: &[u64], chunks: &[u8]) -> Vec<u8> {
    let words = versions.len() + keeps.len() + states.len();
    let mut p = Vec::with_capacity(8 * words + chunks.len());
    for x in versions.iter().chain(keeps).chain(states) {
        p.extend_from_slice(&x.to_le_bytes());
    }
    p.extend_from_slice(chunks);
    p
}

fn dedup(mut v: Vec<u64>) -> Vec<u64> {
    v.dedup();
    v
}

/// A stripe that fewer than D fragments of any one version answered for, seen by a
/// reader or writer: tried again on a fresh look until the membership has settled
/// (`Gateway::settled`), and only then an error. While recovery moves a fragment (it
/// rebuilds it on its new target, then drops the copy it replaced) a reader that
/// probes or reads the two holders at the wrong moments misses both (seen: a read just
/// after two nodes rejoined failed at once with EIO).
fn unsettled(oid: u64, stripe: u64) -> RpcError {
    RpcError::Retry(format!(
        "object {oid:#018x}: stripe {stripe}: fewer fragments than needed to decode any version are reachable"
    ))
}

impl Gateway {
    fn ec_call<'a>(&self, op: Op, key: u64, lay: &Layout, s0: u64, n: u64) -> Call<'a> {
        let mut c = Call::new(op, key);
        c.offset = s0;
        c.len = n;
        c.meta.object_size = lay.geo.object_size();
        c.geometry = lay.wire();
        c
    }

    async fn ec_data(&self, epoch: u32, t: Target, c: &Call<'_>) -> Rpc<Vec<u8>> {
        match self.exec(epoch, t, c).await? {
            Reply::Data(d) => Ok(d),
            _ => Err(StoreError::Invalid("data answer expected".into()).into()),
        }
    }

    /// Whether this shard is the primary of `oid` (its first target, owning shard).
    /// Elsewhere, requests for the primary go to `ts[0]` (`exec` sends a local one to
    /// the owning shard's peer port).
    fn is_primary(&self, ts: &[Target], oid: u64) -> bool {
        ts.first() == Some(&Target::Local) && self.shard().owns(oid)
    }

    fn ec_targets(&self, oid: u64, lay: &Layout) -> Rpc<(u32, Vec<Target>)> {
        if view().is_none() {
            return Err(StoreError::Invalid(
                "erasure-coded objects need a cluster (sheep with -c)".into(),
            )
            .into());
        }
        let (epoch, ts) = self.targets(oid, lay.width())?;
        if ts.len() < lay.data() {
            return Err(StoreError::Invalid(format!(
                "{}:{} needs at least {} zones to write, the cluster has {}",
                lay.geo.data(),
                lay.geo.parity(),
                lay.data(),
                ts.len()
            ))
            .into());
        }
        Ok((epoch, ts))
    }

    /// Removes every fragment of an object from every member.
    pub async fn ec_remove(&self, oid: u64, lay: &Layout) -> Result<()> {
        let _object = lock_range(oid, 0, u64::MAX).await;
        self.settled(oid, || async {
            let (epoch, all) = self.all_members(oid)?;
            let c = self.ec_call(Op::FragRemove, oid, lay, 0, 0);
            for r in join_all(all.iter().map(|&t| self.ec_data(epoch, t, &c))).await {
                r?;
            }
            Ok(())
        })
        .await
    }

    /// Every member that stores data, as targets for `oid`'s shard on it.
    fn all_members(&self, oid: u64) -> Rpc<(u32, Vec<Target>)> {
        let v = view().ok_or_else(|| RpcError::Retry("no view".into()))?;
        let mut out = Vec::new();
        for (i, m) in v.members.iter().enumerate() {
            if m.capacity == 0 || m.partitions == 0 {
                continue;
            }
            if v.is_me(i) {
                out.push(Target::Local);
            } else if let Some(a) = peer_addr(m, oid) {
                out.push(Target::Remote(a));
            }
        }
        Ok((v.epoch, out))
    }
}
