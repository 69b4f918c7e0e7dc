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
//! that last changed that chunk; a parity fragment's slot carries the version `w` of
//! the write that made it and the vector `V` of data versions it encodes (all `w` after
//! a whole-stripe write; a small write changes one data chunk and XORs the difference
//! into each parity, docs/erasure.md). A reader that finds fragments at
//! different versions decodes the newest `(w, V)` that at least `D` fragments hold,
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

use crate::error::{Result, StoreError};
use crate::gateway::{lock_range, peer_addr, view, Gateway, Target};
use crate::partition::WriteMeta;
use crate::peer::{Call, Rpc, RpcError};
use crate::shard::{Reply, Shard};
use bytemuck::{Pod, Zeroable};
use collie_net::admin::CheckReport;
use collie_net::peer::{
    split_u64s, Op, FLAG_CREATE, FLAG_RECOVERY, FLAG_REPAIR, FLAG_ZEROS, MAX_PAYLOAD,
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
/// Slot flag of parity fragments: the slot encodes the data fragments at the versions
/// its vector (in the fragment's vector area) names, not all at the slot's version; the
/// slot's CRC covers the vector, then the chunk, so a torn vector is a torn slot.
const SLOT_MIXED: u32 = 2;
/// Data fragments' slots keep in the flags' high 16 bits which data fragments of the
/// stripe the write that made them changed (0: all): a reader that has only data
/// fragments takes a version only where every chunk that write changed holds it.
const TOUCHED_SHIFT: u32 = 16;
/// Objects whose stripe versions a primary remembers, per shard (~10 KiB each for 4:2).
const CACHED_OBJECTS: usize = 2048;
/// Fragment headers a holder keeps in memory, per shard (8 KiB each for 4:2 data
/// fragments, 24 KiB for parity ones).
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

/// The data versions slot `k` of a parity entry encodes: its vector if the slot is
/// mixed (`stored`: the slot's D versions), else its own version D times.
fn vector_of(e: &StripeEntry, k: usize, stored: &[u64]) -> Vec<u64> {
    if e.slots[k].flags & SLOT_MIXED != 0 {
        stored.to_vec()
    } else {
        vec![e.slots[k].version; stored.len()]
    }
}

/// The data fragments the write that made data slot `s` changed (a bit each).
fn touched(s: &Slot, d: usize) -> u32 {
    match s.flags >> TOUCHED_SHIFT {
        0 => (1u32 << d) - 1,
        m => m,
    }
}

/// The CRC a slot records: over its vector (mixed parity slots only), then its chunk.
fn slot_crc(vector: Option<&[u64]>, chunk: &[u8]) -> u32 {
    let seed = vector.map_or(0, |v| crc32c::crc32c(bytemuck::cast_slice(v)));
    crc32c::crc32c_append(seed, chunk)
}

/// How an erasure-coded VDI's objects are cut, and where a holder keeps a fragment: a
/// header of one [`StripeEntry`] per stripe (4 KiB aligned), two slots of a whole
/// fragment each, then (used by parity fragments) the vector area: per slot and stripe
/// the D data versions a mixed slot encodes.
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

// ------------------------------------------------------------------ holder side

fn entries_of(b: &[u8]) -> Vec<StripeEntry> {
    b.chunks_exact(ENTRY as usize)
        .map(bytemuck::pod_read_unaligned)
        .collect()
}

fn u64s_of(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(bytemuck::pod_read_unaligned::<u64>)
        .collect()
}

/// The fragment index of fragment key `key`.
fn frag_index(key: u64) -> usize {
    match object_kind(key) {
        ObjectKind::Fragment { fragment, .. } => usize::from(fragment),
        _ => 0,
    }
}

/// What a holder keeps in memory of one fragment: its header entries and, for a parity
/// fragment, its vector area (`[slot][stripe][D]`; empty for data fragments).
struct Frag {
    ents: Vec<StripeEntry>,
    vecs: Vec<u64>,
}

impl Frag {
    fn vector(&self, lay: &Layout, k: usize, stripe: usize) -> &[u64] {
        let d = lay.data();
        let at = (k * lay.stripes() as usize + stripe) * d;
        self.vecs.get(at..at + d).unwrap_or(&[])
    }
}

/// A fragment's whole header, shared by the requests working on it.
type Header = Rc<RefCell<Frag>>;

/// The header of fragment `key` (from memory, else from the store); `None` if this
/// node has no such fragment.
async fn header(sh: &Shard, key: u64, lay: &Layout) -> Result<Option<Header>> {
    if let Some(h) = HEADERS.with(|c| c.borrow().get(&key).cloned()) {
        return Ok(Some(h));
    }
    let bytes = match sh.read(key, 0, lay.stripes() * ENTRY).await {
        Ok(b) => b,
        Err(StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let ents = entries_of(&bytes);
    let mut vecs = Vec::new();
    if lay.is_parity(frag_index(key)) {
        let len = 2 * lay.stripes() * lay.data() as u64 * 8;
        vecs = if ents
            .iter()
            .any(|e| e.slots.iter().any(|s| s.flags & SLOT_MIXED != 0))
        {
            u64s_of(&sh.read(key, lay.vectors_at(), len).await?)
        } else {
            vec![0; len as usize / 8]
        };
    }
    // Another request may have loaded (and changed) it meanwhile: that one wins.
    Ok(Some(cache_header(key, Frag { ents, vecs }).0))
}

/// Caches `f` as `key`'s header unless one is cached already; returns the cached one
/// and whether it is `f`.
fn cache_header(key: u64, f: Frag) -> (Header, bool) {
    HEADERS.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(h) = c.get(&key) {
            return (h.clone(), false);
        }
        if c.len() >= CACHED_HEADERS {
            // Dropping them all costs one header read per fragment next time.
            c.clear();
        }
        let h = Rc::new(RefCell::new(f));
        c.insert(key, h.clone());
        (h, true)
    })
}

fn uncache_header(key: u64) {
    HEADERS.with(|c| c.borrow_mut().remove(&key));
}

/// Entries of stripes `s0..s0+n` of a held fragment and, for a parity fragment, each
/// one's two vectors (`[stripe][slot][D]`, as the probe sends them: zeros and
/// whole-stripe slots expanded).
struct Entries {
    ents: Vec<StripeEntry>,
    vecs: Vec<u64>,
}

impl Entries {
    fn vector(&self, d: usize, i: usize, k: usize) -> &[u64] {
        let at = (i * 2 + k) * d;
        self.vecs.get(at..at + d).unwrap_or(&[])
    }
}

async fn entries(sh: &Shard, key: u64, lay: &Layout, s0: u64, n: u64) -> Result<Option<Entries>> {
    let Some(h) = header(sh, key, lay).await? else {
        return Ok(None);
    };
    let f = h.borrow();
    let range = s0 as usize..(s0 + n) as usize;
    let ents = f.ents[range.clone()].to_vec();
    let mut vecs = Vec::new();
    if lay.is_parity(frag_index(key)) {
        for s in range {
            for k in 0..2 {
                vecs.extend(vector_of(&f.ents[s], k, f.vector(lay, k, s)));
            }
        }
    }
    Ok(Some(Entries { ents, vecs }))
}

/// The slot a write of `version` takes: the one already holding it (a retry), else
/// the one not holding `keep`, else the older one.
fn choose(e: &StripeEntry, version: u64, keep: u64) -> usize {
    if let Some(k) = (0..2).find(|&k| e.slots[k].version == version) {
        return k;
    }
    if let Some(k) = (0..2).find(|&k| keep != 0 && e.slots[k].version == keep) {
        return 1 - k;
    }
    usize::from(e.slots[0].version > e.slots[1].version)
}

/// A fragment write as a holder receives it: per stripe its new version, the version
/// to keep, and the stripe's new state (the D data versions parity encodes; a data
/// fragment learns from it which chunks the write changed); then the chunks.
#[derive(Clone, Copy)]
struct FragWrite<'a> {
    versions: &'a [u64],
    keeps: &'a [u64],
    /// `n × D` versions.
    vectors: &'a [u64],
    /// `None`: the stripes become zeros.
    data: Option<&'a [u8]>,
    create: bool,
}

/// Writes stripes `s0..` of fragment `key`: the chunks (none for zeros) into the slots
/// the new versions take, the vectors of mixed parity slots, and the header entries
/// naming them, in one round: they usually land in one batch of the store's log. No
/// order is needed between them: an entry is only believed when its chunk (and vector)
/// matches the CRC32C it records, so a crash that keeps the entry but not the rest
/// leaves a torn slot that readers skip, and never touches the slot of the kept
/// version. Readers of this node see the new entries only once all are durable (the
/// cache is updated last).
async fn frag_write(sh: &Shard, key: u64, lay: &Layout, s0: u64, w: &FragWrite<'_>) -> Result<()> {
    let n = w.versions.len();
    lay.check_stripes(s0, n as u64)?;
    let (c, d) = (lay.chunk(), lay.data());
    let (j, parity) = (frag_index(key), lay.is_parity(frag_index(key)));
    if w.keeps.len() != n
        || w.data.is_some_and(|x| x.len() != n * c)
        || w.versions.contains(&0)
        || w.vectors.len() != n * d
    {
        return Err(StoreError::Invalid(
            "fragment write: bad lengths or versions".into(),
        ));
    }
    // Per stripe, the data fragments the write changes.
    let changes: Vec<u32> = (0..n)
        .map(|i| {
            (0..d)
                .filter(|&k| w.vectors[i * d + k] == w.versions[i])
                .fold(0, |m, k| m | 1 << k)
        })
        .collect();
    let all = (1u32 << d) - 1;
    if !parity && changes.iter().any(|m| m & 1 << j == 0) {
        return Err(StoreError::Invalid(
            "fragment write: the new state does not change this data fragment".into(),
        ));
    }
    let mixed: Vec<bool> = changes.iter().map(|&m| parity && m != all).collect();
    let flags = |i: usize| match (parity, mixed[i]) {
        (true, true) => SLOT_MIXED,
        (true, false) => 0,
        (false, _) => changes[i] << TOUCHED_SHIFT,
    };
    if w.data.is_none() && changes.iter().any(|&m| m != all) {
        return Err(StoreError::Invalid(
            "fragment write: zeros encode every data fragment at their own version".into(),
        ));
    }
    let meta = lay.meta();
    let range = s0 as usize..s0 as usize + n;
    let cached = header(sh, key, lay).await?;
    let mut ents: Vec<StripeEntry> = match &cached {
        Some(h) => h.borrow().ents[range.clone()].to_vec(),
        None if w.create => vec![StripeEntry::initial(); n],
        None => vec![StripeEntry::zeroed(); n],
    };
    let slots: Vec<usize> = (0..n)
        .map(|i| choose(&ents[i], w.versions[i], w.keeps[i]))
        .collect();
    let vector = |i: usize| mixed[i].then(|| &w.vectors[i * d..(i + 1) * d]);
    for (i, e) in ents.iter_mut().enumerate() {
        e.slots[slots[i]] = match w.data {
            Some(x) => Slot {
                version: w.versions[i],
                crc: slot_crc(vector(i), &x[i * c..(i + 1) * c]),
                flags: flags(i),
            },
            None => Slot {
                version: w.versions[i],
                crc: 0,
                flags: SLOT_ZEROS,
            },
        };
    }
    // A new fragment gets a whole header: every other stripe zeros (a new object) or
    // unknown (a fragment that moved here: its other stripes are elsewhere). That also
    // hides whatever an old copy of this key left in the store.
    let whole: Vec<StripeEntry> = match cached {
        Some(_) => Vec::new(),
        None => {
            let fill = if w.create {
                StripeEntry::initial()
            } else {
                StripeEntry::zeroed()
            };
            let mut all = vec![fill; lay.stripes() as usize];
            all[range.clone()].copy_from_slice(&ents);
            all
        }
    };
    let (at, bytes): (u64, &[u8]) = if whole.is_empty() {
        (s0 * ENTRY, bytemuck::cast_slice(&ents))
    } else {
        (0, bytemuck::cast_slice(&whole))
    };
    let mut writes = vec![sh.write(key, at, bytes, meta)];
    // Runs of stripes whose writes take one slot: their chunks (and vectors) are
    // contiguous there.
    let mut runs = Vec::new();
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && slots[j] == slots[i] {
            j += 1;
        }
        runs.push((i, j));
        i = j;
    }
    if let Some(data) = w.data {
        for &(i, j) in &runs {
            let at = lay.slot_at(slots[i], s0 + i as u64);
            writes.push(sh.write(key, at, &data[i * c..j * c], meta));
        }
        if mixed.contains(&true) {
            for &(i, j) in &runs {
                let at = lay.vector_at(slots[i], s0 + i as u64);
                let v = bytemuck::cast_slice(&w.vectors[i * d..j * d]);
                writes.push(sh.write(key, at, v, meta));
            }
        }
    }
    if let Some(e) = join_all(writes).await.into_iter().find_map(|r| r.err()) {
        // The store may hold part of it: read the header from the store next time.
        uncache_header(key);
        return Err(e);
    }
    let h = match cached {
        Some(h) => h,
        None => {
            let vecs = if parity {
                vec![0; 2 * lay.stripes() as usize * d]
            } else {
                Vec::new()
            };
            // Another request may have cached the fragment's header meanwhile: ours
            // goes into it.
            cache_header(key, Frag { ents: whole, vecs }).0
        }
    };
    let mut f = h.borrow_mut();
    f.ents[range].copy_from_slice(&ents);
    if parity {
        for i in (0..n).filter(|&i| mixed[i]) {
            let at = (slots[i] * lay.stripes() as usize + s0 as usize + i) * d;
            if let Some(dst) = f.vecs.get_mut(at..at + d) {
                dst.copy_from_slice(&w.vectors[i * d..(i + 1) * d]);
            }
        }
    }
    Ok(())
}

/// Reads stripes `s0..` of fragment `key`: for each, the version `wants[i]` names (or
/// the newest one, or none for [`SKIP`]). Answers the versions found (0: none valid),
/// then the chunks (zeros where none): the FragRead reply.
async fn frag_read(sh: &Shard, key: u64, lay: &Layout, s0: u64, wants: &[u64]) -> Result<Vec<u8>> {
    let n = wants.len();
    lay.check_stripes(s0, n as u64)?;
    let held = entries(sh, key, lay, s0, n as u64)
        .await?
        .ok_or(StoreError::NotFound(key))?;
    let ents = &held.ents;
    let (c, d) = (lay.chunk(), lay.data());
    // The CRC slot k of stripe i must match for `chunk`.
    let crc_of = |i: usize, k: usize, chunk: &[u8]| {
        let mixed = ents[i].slots[k].flags & SLOT_MIXED != 0;
        slot_crc(mixed.then(|| held.vector(d, i, k)), chunk)
    };
    // The slot to read per stripe, if any. "Newest" is the newest slot or nothing: a
    // newest chunk that fails its checksum (torn, rotten) must not make the older
    // version look newest, or a fast reader would take stale bytes for current ones.
    let slots: Vec<Option<usize>> = (0..n)
        .map(|i| {
            let e = &ents[i];
            let newest = usize::from(e.slots[1].version > e.slots[0].version);
            (0..2).find(|&k| match wants[i] {
                SKIP => false,
                NEWEST => k == newest && e.slots[k].version != 0,
                w => e.slots[k].version == w,
            })
        })
        .collect();
    let has_data = |i: usize, k: usize| ents[i].slots[k].flags & SLOT_ZEROS == 0;
    // The common case: every stripe's slot is one slot holding data, one read, every
    // CRC good. The reply is built around the store's buffer with one copy.
    if let Some(slot) = slots[0] {
        if (0..n).all(|i| slots[i] == Some(slot) && has_data(i, slot)) {
            if let Ok(b) = sh.read(key, lay.slot_at(slot, s0), (n * c) as u64).await {
                if (0..n)
                    .all(|i| crc_of(i, slot, &b[i * c..(i + 1) * c]) == ents[i].slots[slot].crc)
                {
                    let mut reply = Vec::with_capacity(8 * n + b.len());
                    for e in ents {
                        reply.extend_from_slice(&e.slots[slot].version.to_le_bytes());
                    }
                    reply.extend_from_slice(&b);
                    return Ok(reply);
                }
            }
        }
    }
    // Otherwise runs of stripes in one slot, each run read at once; a run the store
    // fails to read (a damaged block in it) is read again stripe by stripe, so that
    // only the damaged stripes go without.
    let mut out = vec![0u8; n * c];
    let mut got = vec![0u64; n];
    let mut runs: Vec<(usize, usize, usize)> = Vec::new();
    let mut i = 0;
    while i < n {
        let Some(slot) = slots[i] else {
            i += 1;
            continue;
        };
        if !has_data(i, slot) {
            got[i] = ents[i].slots[slot].version;
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < n && slots[j] == Some(slot) && has_data(j, slot) {
            j += 1;
        }
        runs.push((i, j, slot));
        i = j;
    }
    while let Some((i, j, slot)) = runs.pop() {
        let at = lay.slot_at(slot, s0 + i as u64);
        match sh.read(key, at, ((j - i) * c) as u64).await {
            Ok(b) => {
                for k in i..j {
                    let chunk = &b[(k - i) * c..(k - i + 1) * c];
                    let s = &ents[k].slots[slot];
                    if crc_of(k, slot, chunk) == s.crc {
                        out[k * c..(k + 1) * c].copy_from_slice(chunk);
                        got[k] = s.version;
                    } else {
                        tracing::warn!(
                            key = format!("{key:#018x}"),
                            stripe = s0 + k as u64,
                            version = s.version,
                            "fragment chunk fails its checksum; it needs repair"
                        );
                    }
                }
            }
            Err(_) if j - i > 1 => runs.extend((i..j).map(|k| (k, k + 1, slot))),
            Err(e) => tracing::warn!(
                key = format!("{key:#018x}"),
                stripe = s0 + i as u64,
                "fragment read failed: {e}"
            ),
        }
    }
    let mut reply = collie_net::peer::encode_oids(&got);
    reply.extend_from_slice(&out);
    Ok(reply)
}

/// A parity holder's part of a small write: stripes `s0..` of fragment `key` at the
/// versions `w.keeps` names, XORed with `delta` (the parity of the data chunks'
/// differences), written as `w.versions`. `NotFound` if a kept version is not held
/// (or fails its checksum): the primary then writes whole stripes.
async fn frag_delta(
    sh: &Shard,
    key: u64,
    lay: &Layout,
    s0: u64,
    w: &FragWrite<'_>,
    delta: &[u8],
) -> Result<()> {
    if !lay.is_parity(frag_index(key)) || w.keeps.iter().any(|&k| k == NEWEST || k == SKIP) {
        return Err(StoreError::Invalid(
            "fragment delta: only parity fragments at a named kept version".into(),
        ));
    }
    if delta.len() != w.keeps.len() * lay.chunk() {
        return Err(StoreError::Invalid(
            "fragment delta: bad lengths or versions".into(),
        ));
    }
    let old = frag_read(sh, key, lay, s0, w.keeps).await?;
    let (found, chunks) =
        split_u64s(&old, w.keeps.len()).map_err(|e| StoreError::Invalid(e.to_string()))?;
    if found != w.keeps {
        return Err(StoreError::NotFound(key));
    }
    let new: Vec<u8> = chunks.iter().zip(delta).map(|(a, b)| a ^ b).collect();
    frag_write(
        sh,
        key,
        lay,
        s0,
        &FragWrite {
            data: Some(&new),
            ..*w
        },
    )
    .await
}

/// Header entries of stripes `s0..` of every fragment of `oid` this node holds:
/// `count u32, then per fragment: index u32, its entries and (parity fragments) the
/// two vectors of each entry`.
async fn frag_probe(sh: &Shard, oid: u64, lay: &Layout, s0: u64, n: u64) -> Result<Vec<u8>> {
    lay.check_stripes(s0, n)?;
    let mut out = vec![0u8; 4];
    let mut count = 0u32;
    for j in 0..lay.width() {
        if let Some(e) = entries(sh, fragment_oid(oid, j as u8), lay, s0, n).await? {
            out.extend_from_slice(&(j as u32).to_le_bytes());
            out.extend_from_slice(bytemuck::cast_slice(&e.ents));
            out.extend_from_slice(bytemuck::cast_slice(&e.vecs));
            count += 1;
        }
    }
    out[..4].copy_from_slice(&count.to_le_bytes());
    Ok(out)
}

fn decode_probe(p: &[u8], lay: &Layout, n: u64) -> Result<Vec<(u8, Entries)>> {
    let bad = || StoreError::Invalid("malformed fragment probe answer".into());
    let count = u32::from_le_bytes(p.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
    if count as usize > lay.width() {
        return Err(bad());
    }
    let (ents_len, vecs_len) = ((n * ENTRY) as usize, n as usize * 2 * lay.data() * 8);
    let mut out = Vec::new();
    let mut at = 4;
    for _ in 0..count {
        let j = u32::from_le_bytes(
            p.get(at..at + 4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        );
        if j as usize >= lay.width() {
            return Err(bad());
        }
        let vl = if lay.is_parity(j as usize) {
            vecs_len
        } else {
            0
        };
        let f = p.get(at + 4..at + 4 + ents_len + vl).ok_or_else(bad)?;
        out.push((
            j as u8,
            Entries {
                ents: entries_of(&f[..ents_len]),
                vecs: u64s_of(&f[ents_len..]),
            },
        ));
        at += 4 + ents_len + vl;
    }
    if at != p.len() {
        return Err(bad());
    }
    Ok(out)
}

/// Runs an erasure-coding request on this node (from a peer frame or a local gateway).
pub async fn serve(sh: &Rc<Shard>, c: &Call<'_>) -> Rpc<Vec<u8>> {
    if !sh.owns(c.oid) {
        // Peers route by the partition count we advertise, so this is a bug or a
        // forged request: refuse rather than let two shards change one header.
        return Err(StoreError::Invalid(format!(
            "{:#018x} is not owned by shard {}",
            c.oid, sh.id
        ))
        .into());
    }
    let lay = Layout::from_wire(c.geometry, c.meta.object_size)?;
    let data_oid = |oid: u64| match object_kind(oid) {
        ObjectKind::Data { index, .. } if index <= collie_placement::ids::MAX_FRAGMENTED_INDEX => {
            Ok(oid)
        }
        _ => Err(StoreError::Invalid(format!(
            "{oid:#018x} is not a data object"
        ))),
    };
    let fragment = |key: u64| match object_kind(key) {
        ObjectKind::Fragment { fragment, .. } if usize::from(fragment) < lay.width() => Ok(key),
        _ => Err(StoreError::Invalid(format!(
            "{key:#018x} is not a fragment of a {}:{} object",
            lay.geo.data(),
            lay.geo.parity()
        ))),
    };
    // Stripe counts are bounded by the geometry before anything is allocated for them.
    let stripes = || -> Result<usize> {
        lay.check_stripes(c.offset, c.len)?;
        Ok(c.len as usize)
    };
    let bad = |e: collie_net::peer::PeerError| StoreError::Invalid(e.to_string());
    match c.op {
        Op::FragWrite | Op::FragDelta => {
            let (key, n) = (fragment(c.oid)?, stripes()?);
            let _applying = crate::recovery::applying(c.meta.epoch)?;
            let (versions, rest) = split_u64s(c.payload, n).map_err(bad)?;
            let (keeps, rest) = split_u64s(rest, n).map_err(bad)?;
            let (vectors, data) = split_u64s(rest, n * lay.data()).map_err(bad)?;
            let create = c.flags & FLAG_CREATE != 0;
            let w = FragWrite {
                versions: &versions,
                keeps: &keeps,
                vectors: &vectors,
                data: (c.flags & FLAG_ZEROS == 0).then_some(data),
                create,
            };
            if c.op == Op::FragDelta {
                if create || c.flags & FLAG_ZEROS != 0 {
                    return Err(StoreError::Invalid(
                        "fragment delta: neither a creation nor zeros".into(),
                    )
                    .into());
                }
                frag_delta(sh, key, &lay, c.offset, &w, data).await?;
                return Ok(Vec::new());
            }
            frag_write(sh, key, &lay, c.offset, &w).await?;
            if create {
                crate::recovery::fragment_created(key);
            }
            Ok(Vec::new())
        }
        Op::FragRead => {
            let (key, n) = (fragment(c.oid)?, stripes()?);
            let (wants, _) = split_u64s(c.payload, n).map_err(bad)?;
            crate::recovery::drained().await;
            // A fragment that may have missed writes (this node was not its holder all
            // along) does not say what is newest: the reader asks every holder.
            if wants.contains(&NEWEST) && !crate::recovery::fragment_current(key, lay.width()) {
                return Err(StoreError::NotFound(key).into());
            }
            Ok(frag_read(sh, key, &lay, c.offset, &wants).await?)
        }
        Op::FragProbe => {
            let (oid, _) = (data_oid(c.oid)?, stripes()?);
            crate::recovery::drained().await;
            Ok(frag_probe(sh, oid, &lay, c.offset, c.len).await?)
        }
        Op::FragRemove => {
            let oid = data_oid(c.oid)?;
            for j in 0..lay.width() {
                let key = fragment_oid(oid, j as u8);
                uncache_header(key);
                sh.remove(key).await?;
            }
            Ok(Vec::new())
        }
        Op::EcWrite => {
            let oid = data_oid(c.oid)?;
            let content = if c.flags & FLAG_ZEROS != 0 {
                Content::Zeros(c.len)
            } else {
                Content::Data(c.payload)
            };
            let gw = Gateway::new(sh.clone());
            gw.primary_write(oid, &lay, c.offset, content).await?;
            Ok(Vec::new())
        }
        Op::EcCheck => {
            let oid = data_oid(c.oid)?;
            let gw = Gateway::new(sh.clone());
            let r = gw
                .primary_check(oid, &lay, c.flags & FLAG_REPAIR != 0, c.from_recovery())
                .await?;
            Ok(encode_report(&r))
        }
        _ => Err(StoreError::Invalid(format!("{:?} is not an erasure-coding op", c.op)).into()),
    }
}

// ------------------------------------------------------------------ gateway side

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

/// Peer form of a check report: six u64s.
fn encode_report(r: &CheckReport) -> Vec<u8> {
    collie_net::peer::encode_oids(&[
        r.objects,
        r.stripes,
        r.consistent,
        r.repaired,
        r.lost,
        r.unplaced,
    ])
}

fn decode_report(p: &[u8]) -> Result<CheckReport> {
    match collie_net::peer::decode_oids(p).as_deref() {
        Ok(&[objects, stripes, consistent, repaired, lost, unplaced]) => Ok(CheckReport {
            objects,
            stripes,
            consistent,
            repaired,
            lost,
            unplaced,
        }),
        _ => Err(StoreError::Invalid("malformed check report".into())),
    }
}

/// One node's fragment of an object, and (if it was asked) its header entries.
struct Holder {
    t: Target,
    frag: u8,
    /// Entries of the stripes in question; `None`: assumed to hold the basis versions
    /// (a target whose versions the primary knows).
    ents: Option<Entries>,
}

impl Holder {
    /// Whether this holder has a slot at `version` for stripe `i`.
    fn holds(&self, i: usize, version: u64) -> bool {
        version != 0 && self.ents.as_ref().is_none_or(|e| e.ents[i].has(version))
    }
}

/// The state of a run of stripes a read decodes or a write builds on: for stripe `i`,
/// the parity fragments at version `w[i]` encode data fragment `j` at `v[i * D + j]`
/// (every data version is `w[i]` after a whole-stripe write). `w[i] == 0`: no parity
/// state is known to decode; the data fragments are read as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Basis {
    d: usize,
    w: Vec<u64>,
    v: Vec<u64>,
}

impl Basis {
    /// Every fragment of every stripe at that stripe's version.
    fn uniform(d: usize, w: Vec<u64>) -> Basis {
        let v = w.iter().flat_map(|&x| std::iter::repeat_n(x, d)).collect();
        Basis { d, w, v }
    }
    fn empty(d: usize) -> Basis {
        Basis {
            d,
            w: Vec::new(),
            v: Vec::new(),
        }
    }
    fn push(&mut self, w: u64, v: &[u64]) {
        self.w.push(w);
        self.v.extend_from_slice(v);
    }
    fn len(&self) -> usize {
        self.w.len()
    }
    /// The version fragment `frag` holds for stripe `i` in this state.
    fn want(&self, i: usize, frag: usize) -> u64 {
        if frag < self.d {
            self.v[i * self.d + frag]
        } else {
            self.w[i]
        }
    }
    fn vector(&self, i: usize) -> &[u64] {
        &self.v[i * self.d..(i + 1) * self.d]
    }
    fn slice(&self, a: usize, b: usize) -> Basis {
        Basis {
            d: self.d,
            w: self.w[a..b].to_vec(),
            v: self.v[a * self.d..b * self.d].to_vec(),
        }
    }
    /// Stripes `at..` become `other`'s.
    fn set(&mut self, at: usize, other: &Basis) {
        self.w[at..at + other.len()].copy_from_slice(&other.w);
        self.v[at * self.d..(at + other.len()) * self.d].copy_from_slice(&other.v);
    }
    /// Per fragment `frag`, its version of each stripe.
    fn of_fragment(&self, frag: usize) -> Vec<u64> {
        (0..self.len()).map(|i| self.want(i, frag)).collect()
    }
}

thread_local! {
    /// Stripe states of objects this shard is the primary of, as of an epoch: every
    /// target holds exactly these, each as its newest (`w` 0: not known). Only the
    /// primary writes, so they stay true until the epoch changes or a write fails.
    static KNOWN: RefCell<HashMap<u64, (u32, Basis)>> = RefCell::new(HashMap::new());
    static COUNTER: Cell<u32> = const { Cell::new(0) };
    static CODECS: RefCell<HashMap<u32, Codec>> = RefCell::new(HashMap::new());
    /// Headers of fragments this shard owns. Every fragment request runs on the
    /// fragment's owning shard (see `serve`), so only this shard changes them and
    /// memory stays true to the store.
    static HEADERS: RefCell<HashMap<u64, Header>> = RefCell::new(HashMap::new());
}

fn known(oid: u64, epoch: u32, s0: u64, n: u64) -> Option<Basis> {
    KNOWN.with(|k| {
        let k = k.borrow();
        let (e, b) = k.get(&oid)?;
        let (a, z) = (s0 as usize, (s0 + n) as usize);
        (*e == epoch && !b.w[a..z].contains(&0)).then(|| b.slice(a, z))
    })
}

fn remember(oid: u64, epoch: u32, lay: &Layout, s0: u64, b: &Basis) {
    KNOWN.with(|k| {
        let mut k = k.borrow_mut();
        if k.len() >= CACHED_OBJECTS && !k.contains_key(&oid) {
            // Forgetting costs a probe of the targets on the next write; no more.
            k.clear();
        }
        let unknown = || {
            (
                epoch,
                Basis::uniform(lay.data(), vec![0; lay.stripes() as usize]),
            )
        };
        let e = k.entry(oid).or_insert_with(unknown);
        if e.0 != epoch {
            *e = unknown();
        }
        e.1.set(s0 as usize, b);
    })
}

fn forget(oid: u64) {
    KNOWN.with(|k| k.borrow_mut().remove(&oid));
}

fn next_version(epoch: u32) -> u64 {
    let c = COUNTER.with(|c| {
        c.set(c.get().wrapping_add(1));
        c.get()
    });
    u64::from(epoch.max(1)) << 32 | u64::from(c)
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

/// The states stripe `i` can be decoded in from `holders`, best first. A state
/// `(w, V)`: parity at `w` encodes data fragment `j` at `V[j]`; it decodes when the data
/// fragments holding their `V[j]` and the parity fragments holding `w` number `d` or
/// more. Candidates, ranked by the newest write in them:
/// - each parity slot's `(w, V)`;
/// - `(u, [u; d])` for each version `u` of a whole-stripe write a data fragment holds
///   (such a write counts even if no parity of it landed or has a place);
/// - the data fragments as they are (`w` 0), if each one holds a version whose write
///   reached every chunk it changed: needed once parity is lost, since a small write
///   changes one data fragment and parity only. Ranked after a parity-backed state of
///   the same newest write.
fn candidates(holders: &[Holder], i: usize, d: usize) -> Vec<(u64, Vec<u64>)> {
    let all = (1u32 << d) - 1;
    // (rank, parity-backed, w, V)
    let mut out: Vec<(u64, bool, u64, Vec<u64>)> = Vec::new();
    let count = |w: u64, v: &[u64]| {
        let mut frags = 0u32;
        for o in holders {
            let j = usize::from(o.frag);
            let want = if j < d { v[j] } else { w };
            if o.ents.as_ref().is_some_and(|x| x.ents[i].has(want)) {
                frags |= 1 << j;
            }
        }
        frags.count_ones() as usize
    };
    for h in holders {
        let Some(e) = &h.ents else { continue };
        let j = usize::from(h.frag);
        for k in 0..2 {
            let slot = &e.ents[i].slots[k];
            let w = slot.version;
            if w == 0 || out.iter().any(|c| c.2 == w) {
                continue;
            }
            let v = if j >= d {
                e.vector(d, i, k).to_vec()
            } else if touched(slot, d) == all {
                vec![w; d]
            } else {
                continue;
            };
            if v.len() == d && count(w, &v) >= d {
                out.push((w, true, w, v));
            }
        }
    }
    // Per data fragment, the versions any holder has, newest first, with what their
    // writes changed.
    let mut held: Vec<Vec<(u64, u32)>> = vec![Vec::new(); d];
    for h in holders.iter().filter(|h| usize::from(h.frag) < d) {
        if let Some(e) = &h.ents {
            for s in e.ents[i].slots.iter().filter(|s| s.version != 0) {
                held[usize::from(h.frag)].push((s.version, touched(s, d)));
            }
        }
    }
    let has = |k: usize, u: u64| held[k].iter().any(|&(v, _)| v == u);
    let mut v = Vec::with_capacity(d);
    for (j, versions) in held.iter().enumerate() {
        let mut versions = versions.clone();
        versions.sort_by_key(|&(u, _)| std::cmp::Reverse(u));
        let complete = versions
            .iter()
            .find(|&&(u, m)| (0..d).filter(|&k| m >> k & 1 == 1).all(|k| has(k, u)));
        match complete {
            Some(&(u, _)) => v.push(u),
            None => break,
        }
        debug_assert_eq!(v.len(), j + 1);
    }
    if v.len() == d {
        let rank = v.iter().copied().max().unwrap_or(0);
        out.push((rank, false, 0, v));
    }
    out.sort_by_key(|c| std::cmp::Reverse((c.0, c.1)));
    out.into_iter().map(|(_, _, w, v)| (w, v)).collect()
}

/// The best state stripe `i` decodes in ([`candidates`]).
fn decodable(holders: &[Holder], i: usize, d: usize) -> Option<(u64, Vec<u64>)> {
    candidates(holders, i, d).into_iter().next()
}

/// Holders as seen for stripe `i` of the run they were probed for alone.
fn stripe_holders(holders: &[Holder], i: usize, d: usize) -> Vec<Holder> {
    holders
        .iter()
        .map(|h| Holder {
            t: h.t,
            frag: h.frag,
            ents: h.ents.as_ref().map(|e| Entries {
                ents: vec![e.ents[i]],
                vecs: e
                    .vecs
                    .get(i * 2 * d..(i + 1) * 2 * d)
                    .unwrap_or(&[])
                    .to_vec(),
            }),
        })
        .collect()
}

/// Every stripe's newest decodable state ([`decodable`]).
fn decodable_all(holders: &[Holder], oid: u64, lay: &Layout, s0: u64, n: u64) -> Rpc<Basis> {
    let mut b = Basis::empty(lay.data());
    for i in 0..n as usize {
        let (w, v) =
            decodable(holders, i, lay.data()).ok_or_else(|| unsettled(oid, s0 + i as u64))?;
        b.push(w, &v);
    }
    Ok(b)
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

    /// Writes a range of an erasure-coded object: sent to its primary, which orders it.
    pub async fn ec_write(
        &self,
        oid: u64,
        lay: &Layout,
        offset: u64,
        content: Content<'_>,
    ) -> Result<()> {
        self.settled(oid, || async {
            let (epoch, ts) = self.ec_targets(oid, lay)?;
            if self.is_primary(&ts, oid) {
                return self.primary_write(oid, lay, offset, content).await;
            }
            let mut c = self.ec_call(Op::EcWrite, oid, lay, offset, content.len());
            match content {
                Content::Data(d) => c.payload = d,
                Content::Zeros(_) => c.flags |= FLAG_ZEROS,
            }
            self.ec_data(epoch, ts[0], &c).await.map(|_| ())
        })
        .await
    }

    /// Verifies every stripe of an object at its primary, and repairs if asked.
    pub async fn ec_check(&self, oid: u64, lay: &Layout, repair: bool) -> Result<CheckReport> {
        self.check_at_primary(oid, lay, repair, false).await
    }

    /// Recovery's repairing check: skipped if the primary completed one at this epoch
    /// (it rewrote every target's fragment then).
    pub(crate) async fn ec_recovery_check(&self, oid: u64, lay: &Layout) -> Result<CheckReport> {
        self.check_at_primary(oid, lay, true, true).await
    }

    async fn check_at_primary(
        &self,
        oid: u64,
        lay: &Layout,
        repair: bool,
        recovery: bool,
    ) -> Result<CheckReport> {
        self.settled(oid, || async {
            let (epoch, ts) = self.ec_targets(oid, lay)?;
            if self.is_primary(&ts, oid) {
                return self.primary_check(oid, lay, repair, recovery).await;
            }
            let mut c = self.ec_call(Op::EcCheck, oid, lay, 0, 0);
            if repair {
                c.flags |= FLAG_REPAIR;
            }
            if recovery {
                c.flags |= FLAG_RECOVERY;
            }
            let p = self.ec_data(epoch, ts[0], &c).await?;
            Ok(decode_report(&p)?)
        })
        .await
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

    /// Reads `len` bytes at `offset` of an erasure-coded object. `NotFound` if no
    /// fragment of it exists anywhere (the caller reads zeros).
    pub async fn ec_read(&self, oid: u64, lay: &Layout, offset: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0
            || offset
                .checked_add(len)
                .is_none_or(|e| e > lay.geo.object_size())
        {
            return Err(StoreError::OutOfRange(format!(
                "read {offset}+{len} outside an object of {} bytes",
                lay.geo.object_size()
            )));
        }
        self.settled(oid, || async {
            let (epoch, ts) = self.ec_targets(oid, lay)?;
            if let Some(d) = self.read_direct(epoch, oid, lay, &ts, offset, len).await? {
                return Ok(d);
            }
            let sr = lay.geo.stripe_range(offset, len);
            let (s0, n) = (sr.start, sr.end - sr.start);
            let holders = self.gather(epoch, oid, lay, s0, n).await?;
            if holders.is_empty() {
                return Err(StoreError::NotFound(oid).into());
            }
            let (_, bytes) = self.read_careful(epoch, oid, lay, &holders, s0, n).await?;
            let at = (offset - s0 * lay.stripe_size()) as usize;
            Ok(bytes[at..at + len as usize].to_vec())
        })
        .await
    }

    /// The fast read: each needed chunk from its data fragment's target, newest valid
    /// version. `None` if anything is not as expected (the careful path decides).
    async fn read_direct(
        &self,
        epoch: u32,
        oid: u64,
        lay: &Layout,
        ts: &[Target],
        offset: u64,
        len: u64,
    ) -> Rpc<Option<Vec<u8>>> {
        // Per data fragment: the stripes it has bytes of (a contiguous run).
        let mut runs: Vec<Option<(u64, u64)>> = vec![None; lay.data()];
        let c = lay.geo.chunk();
        for p in lay.geo.pieces(offset, len) {
            let s = p.offset / c;
            let r = &mut runs[p.fragment as usize];
            *r = Some(r.map_or((s, s + 1), |(a, _)| (a, s + 1)));
        }
        let calls: Vec<(usize, Call<'_>, Vec<u8>)> = runs
            .iter()
            .enumerate()
            .filter_map(|(j, r)| r.map(|(a, b)| (j, a, b)))
            .map(|(j, a, b)| {
                let c = self.ec_call(Op::FragRead, fragment_oid(oid, j as u8), lay, a, b - a);
                (
                    j,
                    c,
                    collie_net::peer::encode_oids(&vec![NEWEST; (b - a) as usize]),
                )
            })
            .collect();
        if calls.iter().any(|(j, _, _)| *j >= ts.len()) {
            return Ok(None);
        }
        let answers = join_all(calls.iter().map(|(j, c, wants)| {
            let mut c = self.ec_call(c.op, c.oid, lay, c.offset, c.len);
            c.payload = wants;
            let t = ts[*j];
            async move { self.ec_data(epoch, t, &c).await }
        }))
        .await;
        // Per data fragment: its first stripe, and the answer (versions, then chunks).
        let mut frags: Vec<Option<(u64, usize, Vec<u8>)>> = vec![None; lay.data()];
        for ((j, c, _), a) in calls.iter().zip(answers) {
            let p = match a {
                Ok(p) => p,
                Err(RpcError::Store(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            let n = c.len as usize;
            let (versions, data) =
                split_u64s(&p, n).map_err(|e| StoreError::Invalid(e.to_string()))?;
            if versions.contains(&0) || data.len() != n * lay.chunk() {
                return Ok(None);
            }
            frags[*j] = Some((c.offset, 8 * n, p));
        }
        // Pieces come in order and back to back: append, no zeroing first.
        let mut out = Vec::with_capacity(len as usize);
        for p in lay.geo.pieces(offset, len) {
            let Some((first, skip, data)) = &frags[p.fragment as usize] else {
                return Ok(None);
            };
            let at = skip + (p.offset - first * c) as usize;
            out.extend_from_slice(&data[at..at + p.len as usize]);
        }
        Ok(Some(out))
    }

    /// Asks every member for the fragments of `oid` it holds (stripes `s0..s0+n`).
    async fn gather(
        &self,
        epoch: u32,
        oid: u64,
        lay: &Layout,
        s0: u64,
        n: u64,
    ) -> Rpc<Vec<Holder>> {
        let (_, all) = self.all_members(oid)?;
        let c = self.ec_call(Op::FragProbe, oid, lay, s0, n);
        let answers = join_all(all.iter().map(|&t| self.ec_data(epoch, t, &c))).await;
        let mut out = Vec::new();
        for (&t, a) in all.iter().zip(answers) {
            match a {
                Ok(p) => {
                    for (frag, ents) in decode_probe(&p, lay, n)? {
                        out.push(Holder {
                            t,
                            frag,
                            ents: Some(ents),
                        });
                    }
                }
                // A member that cannot answer holds nothing we can read now.
                Err(RpcError::Unreachable { addr, why }) => {
                    tracing::debug!(%addr, "fragment probe: {why}")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Stripes `s0..s0+n` in their best decodable states ([`candidates`]) and the
    /// states they were read in. A state whose fragments do not all read back (a chunk
    /// torn by a crash or rotten) gives way to the next candidate, stripe by stripe.
    async fn read_careful(
        &self,
        epoch: u32,
        oid: u64,
        lay: &Layout,
        holders: &[Holder],
        s0: u64,
        n: u64,
    ) -> Rpc<(Basis, Vec<u8>)> {
        let d = lay.data();
        let cands: Vec<Vec<(u64, Vec<u64>)>> =
            (0..n as usize).map(|i| candidates(holders, i, d)).collect();
        let mut first = Basis::empty(d);
        for (i, c) in cands.iter().enumerate() {
            let (w, v) = c.first().ok_or_else(|| unsettled(oid, s0 + i as u64))?;
            first.push(*w, v);
        }
        let (mut bytes, got) = self
            .read_stripes_some(epoch, oid, lay, holders, s0, &first)
            .await?;
        let mut basis = first;
        let ss = lay.stripe_size() as usize;
        for i in (0..n as usize).filter(|&i| !got[i]) {
            let sub = stripe_holders(holders, i, d);
            let mut read = false;
            for (w, v) in cands[i].iter().skip(1) {
                let b = Basis {
                    d,
                    w: vec![*w],
                    v: v.clone(),
                };
                let (one, ok) = self
                    .read_stripes_some(epoch, oid, lay, &sub, s0 + i as u64, &b)
                    .await?;
                if ok[0] {
                    bytes[i * ss..(i + 1) * ss].copy_from_slice(&one);
                    basis.set(i, &b);
                    read = true;
                    break;
                }
            }
            if !read {
                return Err(unsettled(oid, s0 + i as u64));
            }
        }
        Ok((basis, bytes))
    }

    /// The object bytes of stripes `s0..s0+basis.len()`, each in its basis state,
    /// read from the holders (data fragments first) and decoded where needed; a stripe
    /// whose state fewer than D fragments answer for is an error ([`unsettled`]).
    async fn read_stripes(
        &self,
        epoch: u32,
        oid: u64,
        lay: &Layout,
        holders: &[Holder],
        s0: u64,
        basis: &Basis,
    ) -> Rpc<Vec<u8>> {
        let (bytes, got) = self
            .read_stripes_some(epoch, oid, lay, holders, s0, basis)
            .await?;
        match got.iter().position(|&g| !g) {
            Some(i) => Err(unsettled(oid, s0 + i as u64)),
            None => Ok(bytes),
        }
    }

    /// [`Gateway::read_stripes`], answering which stripes it got (the others read as
    /// zeros). Each round asks for what is still missing from holders not yet tried.
    async fn read_stripes_some(
        &self,
        epoch: u32,
        oid: u64,
        lay: &Layout,
        holders: &[Holder],
        s0: u64,
        basis: &Basis,
    ) -> Rpc<(Vec<u8>, Vec<bool>)> {
        let (n, d, c) = (basis.len(), lay.data(), lay.chunk());
        let fl = n * c;
        // have[j]: fragment j's chunks, and which stripes of it are valid.
        let mut have: Vec<(Vec<u8>, Vec<bool>)> =
            vec![(vec![0u8; fl], vec![false; n]); lay.width()];
        let mut tried = vec![false; holders.len()];
        // Data fragments first, targets (no entries: assumed) before others.
        let mut order: Vec<usize> = (0..holders.len()).collect();
        order.sort_by_key(|&h| (holders[h].frag as usize >= d, holders[h].frag));
        let count =
            |have: &[(Vec<u8>, Vec<bool>)], i: usize| have.iter().filter(|f| f.1[i]).count();
        loop {
            // For each holder not tried: the stripes it should give (short of d there).
            let mut want: Vec<(usize, Vec<u64>)> = Vec::new();
            let mut planned = vec![0usize; n];
            for &h in &order {
                if tried[h] {
                    continue;
                }
                let hd = &holders[h];
                let j = hd.frag as usize;
                let mut w = vec![SKIP; n];
                let mut any = false;
                for i in 0..n {
                    let want = basis.want(i, j);
                    if hd.holds(i, want) && !have[j].1[i] && count(&have, i) + planned[i] < d {
                        w[i] = want;
                        planned[i] += 1;
                        any = true;
                    }
                }
                if any {
                    want.push((h, w));
                }
            }
            if want.is_empty() {
                break;
            }
            let answers = join_all(want.iter().map(|(h, w)| {
                let hd = &holders[*h];
                let payload = collie_net::peer::encode_oids(w);
                let c = self.ec_call(Op::FragRead, fragment_oid(oid, hd.frag), lay, s0, n as u64);
                async move {
                    let mut c = c;
                    c.payload = &payload;
                    self.ec_data(epoch, hd.t, &c).await
                }
            }))
            .await;
            for ((h, w), a) in want.iter().zip(answers) {
                tried[*h] = true;
                let p = match a {
                    Ok(p) => p,
                    Err(RpcError::Store(_)) | Err(RpcError::Unreachable { .. }) => continue,
                    Err(e) => return Err(e),
                };
                let Ok((versions, data)) = split_u64s(&p, n) else {
                    continue;
                };
                if data.len() != fl {
                    continue;
                }
                let j = holders[*h].frag as usize;
                for i in 0..n {
                    if w[i] != SKIP && versions[i] == w[i] && !have[j].1[i] {
                        have[j].0[i * c..(i + 1) * c].copy_from_slice(&data[i * c..(i + 1) * c]);
                        have[j].1[i] = true;
                    }
                }
            }
        }
        let got: Vec<bool> = (0..n).map(|i| count(&have, i) >= d).collect();
        // Decode runs of stripes that have the same fragments, one call per run (a
        // stripe short of fragments is left zero).
        let mut data_frags: Vec<Vec<u8>> = vec![vec![0u8; fl]; d];
        let mut i = 0;
        while i < n {
            let set = |i: usize| -> Vec<bool> {
                let mut taken = 0;
                have.iter()
                    .map(|f| {
                        let t = f.1[i] && taken < d;
                        taken += usize::from(t);
                        t
                    })
                    .collect()
            };
            let si = set(i);
            let mut k = i + 1;
            while k < n && set(k) == si {
                k += 1;
            }
            let (a, b) = (i * c, k * c);
            if !got[i] {
                // Short of fragments: nothing to decode.
            } else if si[..d].iter().all(|&x| x) {
                for (j, f) in data_frags.iter_mut().enumerate() {
                    f[a..b].copy_from_slice(&have[j].0[a..b]);
                }
            } else {
                let frags: Vec<Option<&[u8]>> = have
                    .iter()
                    .zip(&si)
                    .map(|(f, &t)| t.then_some(&f.0[a..b]))
                    .collect();
                let out = with_codec(lay, |cd| cd.decode(&frags)).map_err(codec_error)?;
                for (f, o) in data_frags.iter_mut().zip(out) {
                    f[a..b].copy_from_slice(&o);
                }
            }
            i = k;
        }
        let refs: Vec<&[u8]> = data_frags.iter().map(|f| f.as_slice()).collect();
        Ok((lay.geo.join(&refs).map_err(codec_error)?, got))
    }

    /// The state of stripes `s0..s0+n` if every target holds its fragment and their
    /// newest slots agree on one (each parity fragment at the same `(w, V)`, each data
    /// fragment `j` at `V[j]`); `None` otherwise.
    async fn probe_targets(
        &self,
        epoch: u32,
        oid: u64,
        lay: &Layout,
        ts: &[Target],
        s0: u64,
        n: u64,
    ) -> Rpc<Option<Basis>> {
        if ts.len() < lay.width() {
            return Ok(None);
        }
        let c = self.ec_call(Op::FragProbe, oid, lay, s0, n);
        let answers = join_all(ts.iter().map(|&t| self.ec_data(epoch, t, &c))).await;
        let mut frags: Vec<Entries> = Vec::new();
        for (j, a) in answers.into_iter().enumerate() {
            let p = match a {
                Ok(p) => p,
                Err(RpcError::Store(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            let Some((_, e)) = decode_probe(&p, lay, n)?
                .into_iter()
                .find(|(f, _)| *f as usize == j)
            else {
                return Ok(None);
            };
            frags.push(e);
        }
        let d = lay.data();
        let mut b = Basis::empty(d);
        for i in 0..n as usize {
            let newest = |e: &Entries| {
                let k = usize::from(e.ents[i].slots[1].version > e.ents[i].slots[0].version);
                (e.ents[i].slots[k].version, k)
            };
            let (w, k) = newest(&frags[d]);
            let v = frags[d].vector(d, i, k).to_vec();
            let agree = w != 0
                && frags[d..].iter().all(|e| {
                    let (w2, k2) = newest(e);
                    w2 == w && e.vector(d, i, k2) == v.as_slice()
                })
                && frags[..d]
                    .iter()
                    .enumerate()
                    .all(|(j, e)| newest(e).0 == v[j]);
            if !agree {
                return Ok(None);
            }
            b.push(w, &v);
        }
        Ok(Some(b))
    }

    /// The primary's write: lock the stripes, learn their versions, read what a partial
    /// stripe keeps, encode, and write every fragment with a new version that keeps
    /// the old one on each holder.
    pub(crate) async fn primary_write(
        &self,
        oid: u64,
        lay: &Layout,
        offset: u64,
        content: Content<'_>,
    ) -> Rpc<()> {
        let len = content.len();
        let os = lay.geo.object_size();
        if len == 0 || offset.checked_add(len).is_none_or(|e| e > os) {
            return Err(StoreError::OutOfRange(format!(
                "write {offset}+{len} outside an object of {os} bytes"
            ))
            .into());
        }
        if content.len() > u64::from(MAX_PAYLOAD) {
            return Err(StoreError::OutOfRange("write larger than a peer frame".into()).into());
        }
        let ss = lay.stripe_size();
        if let Content::Zeros(_) = content {
            // Whole stripes become zeros by their headers alone; the partial stripes
            // at either end are written as data.
            let (a, b) = (offset.next_multiple_of(ss), (offset + len) / ss * ss);
            if a < b {
                let zeros = vec![0u8; ss as usize];
                if offset < a {
                    let d = Content::Data(&zeros[..(a - offset) as usize]);
                    Box::pin(self.primary_write(oid, lay, offset, d)).await?;
                }
                self.write_stripes(oid, lay, a, Content::Zeros(b - a))
                    .await?;
                if b < offset + len {
                    let d = Content::Data(&zeros[..(offset + len - b) as usize]);
                    Box::pin(self.primary_write(oid, lay, b, d)).await?;
                }
                return Ok(());
            }
            let zeros = vec![0u8; len as usize];
            return self
                .write_stripes(oid, lay, offset, Content::Data(&zeros))
                .await;
        }
        self.write_stripes(oid, lay, offset, content).await
    }

    async fn write_stripes(
        &self,
        oid: u64,
        lay: &Layout,
        offset: u64,
        content: Content<'_>,
    ) -> Rpc<()> {
        let r = self.write_stripes_once(oid, lay, offset, content).await;
        if r.is_err() {
            // What the targets hold is no longer known for sure.
            forget(oid);
        }
        r
    }

    async fn write_stripes_once(
        &self,
        oid: u64,
        lay: &Layout,
        offset: u64,
        content: Content<'_>,
    ) -> Rpc<()> {
        let ss = lay.stripe_size();
        let len = content.len();
        let (s0, s1) = (offset / ss, (offset + len).div_ceil(ss));
        let n = s1 - s0;
        let mut guard = lock_range(oid, s0 * ss, s1 * ss).await;
        let (epoch, ts) = self.ec_targets(oid, lay)?;
        if !self.is_primary(&ts, oid) {
            return Err(RpcError::Retry(format!(
                "{oid:#018x}: not the primary here"
            )));
        }
        let mut basis = self.basis(epoch, oid, lay, &ts, s0, n).await?;
        let mut create = false;
        if basis.is_none() {
            // A new object: created with nothing else of it in flight (another write
            // beside the creation could find some fragments created and others not).
            drop(guard);
            guard = lock_range(oid, 0, u64::MAX).await;
            basis = self.basis(epoch, oid, lay, &ts, s0, n).await?;
            create = basis.is_none();
        }
        let _guard = guard;
        let (mut basis, mut holders) = match basis {
            Some(b) => b,
            None => (
                Basis::uniform(lay.data(), vec![INITIAL; n as usize]),
                Vec::new(),
            ),
        };
        if let Content::Data(d) = content {
            let known = holders.is_empty() && ts.len() == lay.width();
            if known && !create && n == 1 && delta_pays(lay, offset, len) {
                match self
                    .delta_write(epoch, oid, lay, &ts, s0, &basis, offset, d)
                    .await
                {
                    Ok(b) => {
                        remember(oid, epoch, lay, s0, &b);
                        return Ok(());
                    }
                    Err(RpcError::Store(e)) => {
                        // A target lacks the state the primary knew (or it fails its
                        // checksum): write the whole stripe from a careful read.
                        tracing::debug!(
                            oid = format!("{oid:#018x}"),
                            stripe = s0,
                            "small write falls back to a whole stripe: {e}"
                        );
                        forget(oid);
                        holders = self.gather(epoch, oid, lay, s0, n).await?;
                        basis = decodable_all(&holders, oid, lay, s0, n)?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let full = offset == s0 * ss && offset + len == s1 * ss;
        let stripes: Option<Cow<'_, [u8]>> = match content {
            Content::Zeros(_) => None,
            Content::Data(d) if full => Some(Cow::Borrowed(d)),
            Content::Data(d) => {
                let mut buf = vec![0u8; (n * ss) as usize];
                if !create {
                    let holders = if holders.is_empty() {
                        (0..ts.len())
                            .map(|j| Holder {
                                t: ts[j],
                                frag: j as u8,
                                ents: None,
                            })
                            .collect()
                    } else {
                        holders
                    };
                    // Only the partial stripes at the ends keep old bytes.
                    let ends: Vec<u64> = [s0, s1 - 1]
                        .into_iter()
                        .filter(|&s| s * ss < offset || (s + 1) * ss > offset + len)
                        .collect();
                    let assumed = holders.iter().all(|h| h.ents.is_none());
                    for s in dedup(ends) {
                        let i = (s - s0) as usize;
                        let one = basis.slice(i, i + 1);
                        let sub = stripe_holders(&holders, i, lay.data());
                        let old = if assumed {
                            match self
                                .old_chunks(epoch, oid, lay, &ts, s, &one, offset, len)
                                .await?
                            {
                                Some(d) => d,
                                None => self.read_stripes(epoch, oid, lay, &sub, s, &one).await?,
                            }
                        } else {
                            // The state actually read is the one the write keeps.
                            let (state, old) =
                                self.read_careful(epoch, oid, lay, &sub, s, 1).await?;
                            basis.set(i, &state);
                            old
                        };
                        buf[i * ss as usize..(i + 1) * ss as usize].copy_from_slice(&old);
                    }
                }
                let at = (offset - s0 * ss) as usize;
                buf[at..at + d.len()].copy_from_slice(d);
                Some(Cow::Owned(buf))
            }
        };
        let nv = next_version(epoch);
        let versions = vec![nv; n as usize];
        let payloads = fragment_payloads(lay, &versions, &basis, stripes.as_deref(), ts.len())?;
        let zeros = stripes.is_none();
        self.write_fragments(epoch, oid, lay, &ts, s0, n, &payloads, zeros, create)
            .await?;
        let done = Basis::uniform(lay.data(), versions);
        if create {
            let mut all = Basis::uniform(lay.data(), vec![INITIAL; lay.stripes() as usize]);
            all.set(s0 as usize, &done);
            remember(oid, epoch, lay, 0, &all);
        } else {
            remember(oid, epoch, lay, s0, &done);
        }
        Ok(())
    }

    /// A small write inside stripe `s0`, whose state `basis` every target holds as its
    /// newest: reads the touched data chunks at their versions, writes them back changed
    /// at a new version `w`, and has each parity holder XOR in the parity of the
    /// difference (reed-solomon is linear) and keep the result at `w` with the new
    /// vector (FragDelta). The other data fragments are left alone. Answers the
    /// stripe's new state.
    #[allow(clippy::too_many_arguments)]
    async fn delta_write(
        &self,
        epoch: u32,
        oid: u64,
        lay: &Layout,
        ts: &[Target],
        s0: u64,
        basis: &Basis,
        offset: u64,
        bytes: &[u8],
    ) -> Rpc<Basis> {
        let (c, d) = (lay.chunk(), lay.data());
        let pieces: Vec<_> = lay.geo.pieces(offset, bytes.len() as u64).collect();
        let touched = dedup(pieces.iter().map(|p| u64::from(p.fragment)).collect());
        let touched: Vec<usize> = touched.into_iter().map(|j| j as usize).collect();
        let answers = join_all(touched.iter().map(|&j| {
            let wants = collie_net::peer::encode_oids(&[basis.want(0, j)]);
            async move {
                let mut call = self.ec_call(Op::FragRead, fragment_oid(oid, j as u8), lay, s0, 1);
                call.payload = &wants;
                self.ec_data(epoch, ts[j], &call).await
            }
        }))
        .await;
        // Old and new bytes of the data chunks (untouched ones stay zero in both, so
        // their difference is zero).
        let mut old = vec![0u8; d * c];
        for (&j, a) in touched.iter().zip(answers) {
            let p = a?;
            match split_u64s(&p, 1) {
                Ok((v, x)) if v[0] == basis.want(0, j) && x.len() == c => {
                    old[j * c..(j + 1) * c].copy_from_slice(x);
                }
                _ => return Err(StoreError::NotFound(fragment_oid(oid, j as u8)).into()),
            }
        }
        let mut new = old.clone();
        for p in &pieces {
            let at = p.fragment as usize * c + (p.offset - s0 * c as u64) as usize;
            new[at..at + p.len as usize]
                .copy_from_slice(&bytes[p.at as usize..(p.at + p.len) as usize]);
        }
        let diff: Vec<u8> = old.iter().zip(&new).map(|(a, b)| a ^ b).collect();
        let refs: Vec<&[u8]> = diff.chunks(c).collect();
        let deltas = with_codec(lay, |cd| cd.encode(&refs)).map_err(codec_error)?;
        let w = next_version(epoch);
        let mut v = basis.vector(0).to_vec();
        for &j in &touched {
            v[j] = w;
        }
        let mut sends: Vec<(usize, Op, Vec<u8>)> = Vec::new();
        for &j in &touched {
            let mut p = collie_net::peer::encode_oids(&[w, basis.want(0, j)]);
            p.extend_from_slice(&collie_net::peer::encode_oids(&v));
            p.extend_from_slice(&new[j * c..(j + 1) * c]);
            sends.push((j, Op::FragWrite, p));
        }
        for (i, delta) in deltas.iter().enumerate() {
            let mut p = collie_net::peer::encode_oids(&[w, basis.w[0]]);
            p.extend_from_slice(&collie_net::peer::encode_oids(&v));
            p.extend_from_slice(delta);
            sends.push((d + i, Op::FragDelta, p));
        }
        let done = join_all(sends.iter().map(|(j, op, p)| {
            let mut call = self.ec_call(*op, fragment_oid(oid, *j as u8), lay, s0, 1);
            call.payload = p;
            async move { self.ec_data(epoch, ts[*j], &call).await }
        }))
        .await;
        for r in done {
            r?;
        }
        let mut b = Basis::empty(d);
        b.push(w, &v);
        Ok(b)
    }

    /// The bytes of stripe `s` in state `basis` (that one stripe) that a write of
    /// `[offset, offset+len)` keeps: the chunks it does not wholly cover, each from its
    /// data target (no decode; the covered chunks are left zero). `None` if a target
    /// does not answer with them.
    #[allow(clippy::too_many_arguments)]
    async fn old_chunks(
        &self,
        epoch: u32,
        oid: u64,
        lay: &Layout,
        ts: &[Target],
        s: u64,
        basis: &Basis,
        offset: u64,
        len: u64,
    ) -> Rpc<Option<Vec<u8>>> {
        let (c, ss) = (lay.geo.chunk(), lay.stripe_size());
        let needed: Vec<usize> = (0..lay.data())
            .filter(|&j| {
                let start = s * ss + j as u64 * c;
                !(offset <= start && start + c <= offset + len)
            })
            .collect();
        if needed.iter().any(|&j| j >= ts.len()) {
            return Ok(None);
        }
        let answers = join_all(needed.iter().map(|&j| {
            let wants = collie_net::peer::encode_oids(&[basis.want(0, j)]);
            async move {
                let mut call = self.ec_call(Op::FragRead, fragment_oid(oid, j as u8), lay, s, 1);
                call.payload = &wants;
                self.ec_data(epoch, ts[j], &call).await
            }
        }))
        .await;
        let mut out = vec![0u8; ss as usize];
        for (&j, a) in needed.iter().zip(answers) {
            let p = match a {
                Ok(p) => p,
                Err(RpcError::Store(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            match split_u64s(&p, 1) {
                Ok((v, d)) if v[0] == basis.want(0, j) && d.len() == c as usize => {
                    out[j * c as usize..(j + 1) * c as usize].copy_from_slice(d);
                }
                _ => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    /// Writes stripes `s0..` of every fragment to its target, in parallel.
    #[allow(clippy::too_many_arguments)]
    async fn write_fragments(
        &self,
        epoch: u32,
        oid: u64,
        lay: &Layout,
        ts: &[Target],
        s0: u64,
        n: u64,
        payloads: &[Vec<u8>],
        zeros: bool,
        create: bool,
    ) -> Rpc<()> {
        let done = join_all(ts.iter().enumerate().map(|(j, &t)| {
            let mut c = self.ec_call(Op::FragWrite, fragment_oid(oid, j as u8), lay, s0, n);
            c.payload = &payloads[j];
            if zeros {
                c.flags |= FLAG_ZEROS;
            }
            if create {
                c.flags |= FLAG_CREATE;
            }
            async move { self.ec_data(epoch, t, &c).await }
        }))
        .await;
        for r in done {
            r?;
        }
        Ok(())
    }

    /// The state a write of stripes `s0..s0+n` builds on, and the holders that
    /// recorded it (empty if every target agreed); `None` if the object is new.
    async fn basis(
        &self,
        epoch: u32,
        oid: u64,
        lay: &Layout,
        ts: &[Target],
        s0: u64,
        n: u64,
    ) -> Rpc<Option<(Basis, Vec<Holder>)>> {
        if let Some(b) = known(oid, epoch, s0, n) {
            return Ok(Some((b, Vec::new())));
        }
        if let Some(b) = self.probe_targets(epoch, oid, lay, ts, s0, n).await? {
            remember(oid, epoch, lay, s0, &b);
            return Ok(Some((b, Vec::new())));
        }
        let holders = self.gather(epoch, oid, lay, s0, n).await?;
        if holders.is_empty() {
            return Ok(None);
        }
        let basis = decodable_all(&holders, oid, lay, s0, n)?;
        Ok(Some((basis, holders)))
    }

    /// The primary's check of a whole object: every stripe's newest decodable state,
    /// re-encoded, compared with what each target holds; with `repair`, targets that
    /// differ get that state written (same versions: nothing newer is invented, except
    /// for parity of a stripe no parity state decoded: a new parity version).
    pub(crate) async fn primary_check(
        &self,
        oid: u64,
        lay: &Layout,
        repair: bool,
        recovery: bool,
    ) -> Rpc<CheckReport> {
        let _object = lock_range(oid, 0, u64::MAX).await;
        let (epoch, ts) = self.ec_targets(oid, lay)?;
        if !self.is_primary(&ts, oid) {
            return Err(RpcError::Retry(format!(
                "{oid:#018x}: not the primary here"
            )));
        }
        if recovery {
            if let Some(r) = crate::recovery::checked(oid, epoch) {
                return Ok(r);
            }
        }
        let n = lay.stripes();
        let holders = self.gather(epoch, oid, lay, 0, n).await?;
        let mut r = CheckReport::default();
        if holders.is_empty() {
            // Nothing found (or nobody answered): nothing to record as checked.
            return Ok(r);
        }
        r.objects = 1;
        r.stripes = n;
        r.unplaced = (lay.width() - ts.len()) as u64 * n;
        r.lost = (0..n as usize)
            .filter(|&i| decodable(&holders, i, lay.data()).is_none())
            .count() as u64;
        if r.lost > 0 {
            tracing::error!(
                oid = format!("{oid:#018x}"),
                lost = r.lost,
                "stripes cannot be decoded"
            );
            return Ok(r);
        }
        let (mut basis, bytes) = self.read_careful(epoch, oid, lay, &holders, 0, n).await?;
        // What repair writes keeps the decoded state on every holder.
        let keep = basis.clone();
        // Stripes decoded from data alone get parity at a new version. A stripe where a
        // data target's newest chunk is newer than the decoded state (a write cut short
        // left it there) is rewritten whole at a new version: else fast reads, which
        // take each chunk's newest, would go on returning it.
        let d = lay.data();
        let mut renewed = vec![false; n as usize];
        for (i, renew) in renewed.iter_mut().enumerate() {
            *renew = holders.iter().any(|h| {
                let j = usize::from(h.frag);
                j < d
                    && ts.get(j) == Some(&h.t)
                    && h.ents
                        .as_ref()
                        .is_some_and(|e| e.ents[i].newest() > keep.want(i, j))
            });
            if *renew {
                let w = next_version(epoch);
                basis.set(i, &Basis::uniform(d, vec![w]));
            } else if basis.w[i] == 0 {
                basis.w[i] = next_version(epoch);
            }
        }
        let mut expect = lay.geo.split(&bytes).map_err(codec_error)?;
        let refs: Vec<&[u8]> = expect.iter().map(|x| x.as_slice()).collect();
        let parity = with_codec(lay, |cd| cd.encode(&refs)).map_err(codec_error)?;
        expect.extend(parity);
        // What each target holds at the basis versions.
        let c = lay.chunk();
        let answers = join_all(ts.iter().enumerate().map(|(j, &t)| {
            let wants = collie_net::peer::encode_oids(&basis.of_fragment(j));
            async move {
                let mut call = self.ec_call(Op::FragRead, fragment_oid(oid, j as u8), lay, 0, n);
                call.payload = &wants;
                self.ec_data(epoch, t, &call).await
            }
        }))
        .await;
        let mut bad = vec![vec![false; n as usize]; ts.len()];
        for (j, a) in answers.into_iter().enumerate() {
            let got = match a {
                Ok(p) => split_u64s(&p, n as usize)
                    .ok()
                    .map(|(v, d)| (v, d.to_vec())),
                Err(RpcError::Store(_)) => None,
                Err(e) => return Err(e),
            };
            for i in 0..n as usize {
                bad[j][i] = renewed[i]
                    || match &got {
                        Some((v, x)) => {
                            v[i] != basis.want(i, j)
                                || x[i * c..(i + 1) * c] != expect[j][i * c..(i + 1) * c]
                        }
                        None => true,
                    };
            }
        }
        let bad_stripes: Vec<bool> = (0..n as usize).map(|i| bad.iter().any(|b| b[i])).collect();
        let nbad = bad_stripes.iter().filter(|&&b| b).count() as u64;
        r.consistent = n - nbad;
        if !repair || nbad == 0 {
            if repair {
                crate::recovery::record_check(oid, epoch, &r);
            }
            return Ok(r);
        }
        // Rewrite each target's bad runs in the basis state, keeping the decoded one.
        for (j, &t) in ts.iter().enumerate() {
            let mut i = 0;
            while i < n as usize {
                if !bad[j][i] {
                    i += 1;
                    continue;
                }
                let mut k = i + 1;
                while k < n as usize && bad[j][k] {
                    k += 1;
                }
                let run = basis.slice(i, k);
                let mut p = collie_net::peer::encode_oids(&run.of_fragment(j));
                p.extend_from_slice(&collie_net::peer::encode_oids(
                    &keep.slice(i, k).of_fragment(j),
                ));
                p.extend_from_slice(&collie_net::peer::encode_oids(&run.v));
                p.extend_from_slice(&expect[j][i * c..k * c]);
                let mut call = self.ec_call(
                    Op::FragWrite,
                    fragment_oid(oid, j as u8),
                    lay,
                    i as u64,
                    (k - i) as u64,
                );
                call.payload = &p;
                self.ec_data(epoch, t, &call).await?;
                i = k;
            }
        }
        if ts.len() == lay.width() {
            remember(oid, epoch, lay, 0, &basis);
        } else {
            forget(oid);
        }
        r.repaired = nbad;
        crate::recovery::record_check(oid, epoch, &r);
        Ok(r)
    }
}

/// Removes a fragment this holder keeps but no longer has to (recovery moved it).
pub(crate) async fn drop_fragment(sh: &Shard, key: u64) -> Result<()> {
    uncache_header(key);
    sh.remove(key).await
}

/// Whether a write of `[offset, offset+len)` inside one stripe costs fewer disk
/// requests as a delta (read and write each touched data chunk, read and write each
/// parity) than as a whole stripe (read the chunks it does not cover, write every
/// fragment). For 4:2 and one 4 KiB chunk: 6 against 9.
fn delta_pays(lay: &Layout, offset: u64, len: u64) -> bool {
    let c = lay.geo.chunk();
    let pieces: Vec<_> = lay.geo.pieces(offset, len).collect();
    let touched = dedup(pieces.iter().map(|p| u64::from(p.fragment)).collect()).len();
    let whole = pieces.iter().filter(|p| p.len == c).count();
    let (d, p) = (lay.data(), lay.width() - lay.data());
    2 * touched + 2 * p < (d - whole) + d + p
}

/// The FragWrite payload of each of the first `targets` fragments: new versions, the
/// versions `keeps` says it holds, the new state's data versions, then the
/// fragment's chunks of `stripes` (object bytes of whole stripes; `None` for zeros: no
/// chunks). Each byte is copied once into its payload.
fn fragment_payloads(
    lay: &Layout,
    versions: &[u64],
    keeps: &Basis,
    stripes: Option<&[u8]>,
    targets: usize,
) -> Result<Vec<Vec<u8>>> {
    let d = lay.data();
    let head = |j: usize| {
        let mut h = collie_net::peer::encode_oids(versions);
        h.extend_from_slice(&collie_net::peer::encode_oids(&keeps.of_fragment(j)));
        // A whole-stripe write: every data fragment at the new version.
        for v in versions {
            h.extend(std::iter::repeat_n(v.to_le_bytes(), d).flatten());
        }
        h
    };
    let Some(bytes) = stripes else {
        return Ok((0..targets).map(head).collect());
    };
    // Data heads all have one length: split after the first, then put each in place.
    let first = head(0);
    let mut out = lay.geo.split_after(&first, bytes).map_err(codec_error)?;
    for (j, f) in out.iter_mut().enumerate().skip(1) {
        f[..first.len()].copy_from_slice(&head(j));
    }
    let refs: Vec<&[u8]> = out.iter().map(|f| &f[first.len()..]).collect();
    let parity = with_codec(lay, |cd| cd.encode(&refs)).map_err(codec_error)?;
    for (i, p) in parity.into_iter().enumerate() {
        let mut f = head(d + i);
        f.extend_from_slice(&p);
        out.push(f);
    }
    out.truncate(targets);
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_never_takes_the_slot_of_the_version_it_keeps() {
        let mut e = StripeEntry::initial();
        // New object: version 1 (zeros) in slot 0; the first write takes slot 1.
        assert_eq!(choose(&e, 10, INITIAL), 1);
        e.slots[1].version = 10;
        // The next keeps 10 and takes slot 0; a retry of 10 takes its own slot.
        assert_eq!(choose(&e, 11, 10), 0);
        assert_eq!(choose(&e, 10, 1), 1);
        // A holder that missed a version overwrites its older slot, keeping its newest.
        e.slots = [
            Slot {
                version: 7,
                ..Slot::default()
            },
            Slot {
                version: 5,
                ..Slot::default()
            },
        ];
        assert_eq!(choose(&e, 12, 9), 1);
        // An interrupted write (7) that was not decodable: the next write keeps 5.
        assert_eq!(choose(&e, 12, 5), 0);
    }

    /// A holder of fragment `frag` of a 4:2 object with slots `a` and `b` (versions and,
    /// for parity, the data versions each encodes).
    fn holder(frag: u8, a: (u64, [u64; 4]), b: (u64, [u64; 4])) -> Holder {
        let mut e = StripeEntry::zeroed();
        e.slots[0].version = a.0;
        e.slots[1].version = b.0;
        let vecs = if frag >= 4 {
            a.1.iter().chain(&b.1).copied().collect()
        } else {
            Vec::new()
        };
        Holder {
            t: Target::Local,
            frag,
            ents: Some(Entries {
                ents: vec![e],
                vecs,
            }),
        }
    }
    fn data(frag: u8, a: u64, b: u64) -> Holder {
        holder(frag, (a, [0; 4]), (b, [0; 4]))
    }
    /// A data fragment whose slot `b` was written by a small write of it alone.
    fn small(frag: u8, a: u64, b: u64) -> Holder {
        let mut h = data(frag, a, b);
        if let Some(e) = &mut h.ents {
            e.ents[0].slots[1].flags = 1 << (TOUCHED_SHIFT + u32::from(frag));
        }
        h
    }
    /// A parity fragment written by whole-stripe writes only.
    fn par(frag: u8, a: u64, b: u64) -> Holder {
        holder(frag, (a, [a; 4]), (b, [b; 4]))
    }

    #[test]
    fn the_newest_state_enough_fragments_hold_wins() {
        // A whole-stripe write of 9 reached three data fragments: 8 (kept everywhere)
        // decodes, 9 not.
        let hs = vec![
            data(0, 8, 9),
            data(1, 8, 9),
            data(2, 9, 8),
            data(3, 8, 7),
            par(4, 8, 7),
            par(5, 7, 8),
        ];
        assert_eq!(decodable(&hs, 0, 4), Some((8, vec![8; 4])));
        // It reached a parity fragment as well: 9 decodes.
        let hs = vec![
            data(0, 8, 9),
            data(1, 8, 9),
            data(2, 9, 8),
            data(3, 8, 7),
            par(4, 8, 9),
        ];
        assert_eq!(decodable(&hs, 0, 4), Some((9, vec![9; 4])));
        // Two nodes died, so parity has no place: a whole-stripe write of 9 reached the
        // four data fragments only. The parity left behind on live nodes still decodes
        // 8 with the data fragments' kept slots, but 9 is newer and wins.
        let hs = vec![
            data(0, 8, 9),
            data(1, 9, 8),
            data(2, 9, 0),
            data(3, 9, 0),
            par(4, 8, 7),
            par(5, 7, 8),
        ];
        assert_eq!(decodable(&hs, 0, 4), Some((9, vec![9; 4])));
        // Two holders of one fragment count once.
        let hs = vec![par(4, 9, 0), par(4, 9, 0), data(1, 9, 0), data(2, 9, 0)];
        assert_eq!(decodable(&hs, 0, 4), None);
    }

    #[test]
    fn a_small_write_decodes_once_enough_of_it_landed_and_never_half() {
        let new = [8, 10, 8, 8];
        let p10 = |frag| holder(frag, (8, [8; 4]), (10, new));
        // A delta write of 10 to data fragment 1, built on 8 everywhere: complete.
        let done = vec![
            data(0, 8, 7),
            small(1, 8, 10),
            data(2, 7, 8),
            data(3, 8, 7),
            p10(4),
            p10(5),
        ];
        assert_eq!(decodable(&done, 0, 4), Some((10, new.to_vec())));
        // Only the data chunk landed: no parity names 10. The data fragments as they
        // are hold it whole (a write never acknowledged may read as new); should its
        // chunk not read back, 8 still decodes (fragment 1 kept it).
        let data_only = vec![
            data(0, 8, 7),
            small(1, 8, 10),
            data(2, 7, 8),
            data(3, 8, 7),
            par(4, 8, 7),
            par(5, 8, 7),
        ];
        assert_eq!(
            candidates(&data_only, 0, 4)[..2],
            [(0, vec![8, 10, 8, 8]), (8, vec![8; 4])]
        );
        // A whole-stripe write that reached one data fragment only is not taken from
        // the data fragments as they are.
        let torn = vec![
            data(0, 8, 11),
            data(1, 8, 7),
            data(2, 7, 8),
            data(3, 8, 7),
            par(4, 8, 7),
        ];
        assert_eq!(decodable(&torn, 0, 4), Some((8, vec![8; 4])));
        // One parity landed, the data chunk did not: 10 needs fragment 1 at 10, so
        // with fragment 0 gone it has 3 of 4 and 8 decodes.
        let parity_only = vec![
            data(1, 8, 7),
            data(2, 7, 8),
            data(3, 8, 7),
            p10(4),
            par(5, 8, 7),
        ];
        assert_eq!(decodable(&parity_only, 0, 4), Some((8, vec![8; 4])));
        // One parity and the data chunk landed, two holders are gone: 10 decodes from
        // data 1 at 10, data 2 and 3 at 8 and parity 4 at 10.
        let half = vec![small(1, 8, 10), data(2, 7, 8), data(3, 8, 7), p10(4)];
        assert_eq!(decodable(&half, 0, 4), Some((10, new.to_vec())));
    }

    #[test]
    fn without_parity_acknowledged_small_writes_are_read_from_the_data() {
        // Small writes 10 and 9 were acknowledged, then both parity holders died: the
        // data fragments as they are win over 8, which they all still keep.
        let hs = vec![
            data(0, 8, 7),
            small(1, 8, 10),
            data(2, 7, 8),
            small(3, 8, 9),
        ];
        assert_eq!(decodable(&hs, 0, 4), Some((0, vec![8, 10, 8, 9])));
        assert_eq!(decodable(&hs[1..], 0, 4), None);
    }

    #[test]
    fn only_mixed_parity_slots_carry_their_vector_in_the_checksum() {
        let chunk = [7u8; 64];
        assert_eq!(slot_crc(None, &chunk), crc32c::crc32c(&chunk));
        assert_ne!(
            slot_crc(Some(&[1, 2]), &chunk),
            slot_crc(Some(&[1, 3]), &chunk)
        );
        let mut e = StripeEntry::zeroed();
        e.slots[1] = Slot {
            version: 5,
            crc: 0,
            flags: SLOT_MIXED,
        };
        e.slots[0].version = 4;
        assert_eq!(vector_of(&e, 0, &[1, 2, 3]), vec![4, 4, 4]);
        assert_eq!(vector_of(&e, 1, &[1, 2, 3]), vec![1, 2, 3]);
    }

    #[test]
    fn a_delta_is_cheaper_only_for_a_few_chunks() {
        let lay = Layout::of(Redundancy::Erasure { data: 4, parity: 2 }, 4 << 20)
            .unwrap()
            .unwrap();
        assert!(delta_pays(&lay, 4096, 4096));
        assert!(delta_pays(&lay, 100, 512));
        assert!(!delta_pays(&lay, 0, 3 * 4096));
        let lay21 = Layout::of(Redundancy::Erasure { data: 2, parity: 1 }, 4 << 20)
            .unwrap()
            .unwrap();
        assert!(!delta_pays(&lay21, 4096, 4096));
    }
}
