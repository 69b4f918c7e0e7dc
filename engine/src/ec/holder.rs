//! The holder side: fragments in the store, their headers, and the fragment ops.

use super::recent::{Recent, RECENT_BYTES};
use super::*;
use crate::held::{Counts, Held};
use std::collections::BTreeMap;

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

/// What a holder keeps in memory of one fragment: its header entries and its vector
/// area (`[slot][stripe][D]`; empty until a mixed slot needs it).
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
        // Requests name the layout; a header cached under another one (a peer's bug
        // or a forged request) is not this request's.
        if h.borrow().ents.len() != lay.stripes() as usize {
            return Err(StoreError::Invalid(format!(
                "fragment {key:#018x} has {} stripes, the request says {}",
                h.borrow().ents.len(),
                lay.stripes()
            )));
        }
        return Ok(Some(h));
    }
    let bytes = match sh.read(key, 0, lay.stripes() * ENTRY).await {
        Ok(b) => b,
        Err(StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let ents = entries_of(&bytes);
    let vecs = if ents
        .iter()
        .any(|e| e.slots.iter().any(|s| s.flags & SLOT_MIXED != 0))
    {
        let len = 2 * lay.stripes() * lay.data() as u64 * 8;
        u64s_of(&sh.read(key, lay.vectors_at(), len).await?)
    } else {
        Vec::new()
    };
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
            // Dropping them costs one header read per fragment next time; headers
            // with writes in flight stay (else a reload from the store, which does
            // not have the write yet, would be cached and the write would update an
            // orphaned copy).
            WRITING.with(|w| {
                let w = w.borrow();
                c.retain(|k, _| w.contains_key(k));
            });
        }
        let h = Rc::new(RefCell::new(f));
        c.insert(key, h.clone());
        (h, true)
    })
}

fn uncache_header(key: u64) {
    HEADERS.with(|c| c.borrow_mut().remove(&key));
}

/// Entries of stripes `s0..s0+n` of a held fragment and the state each slot records
/// (`[stripe][slot][D]`, as the probe sends them: whole-stripe slots expanded, zeros
/// for a slot that records none).
pub(super) struct Entries {
    pub(super) ents: Vec<StripeEntry>,
    pub(super) vecs: Vec<u64>,
}

impl Entries {
    pub(super) fn vector(&self, d: usize, i: usize, k: usize) -> &[u64] {
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
    let mut vecs = Vec::with_capacity(range.len() * 2 * lay.data());
    for s in range {
        for k in 0..2 {
            vecs.extend(vector_of(&f.ents[s], k, f.vector(lay, k, s), lay.data()));
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
/// to keep, and the state the write leaves the stripe in (every data fragment's
/// version; zeros for a data fragment rewritten without knowing it); then the chunks.
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
/// the new versions take, the vectors of mixed slots, and the header entries
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
    let state = |i: usize| &w.vectors[i * d..(i + 1) * d];
    // Per stripe: a state of zeros records none (data fragments only); a whole-stripe
    // state is the slot's version everywhere; anything else is kept as a vector.
    let stateless: Vec<bool> = (0..n).map(|i| state(i).iter().all(|&v| v == 0)).collect();
    let mixed: Vec<bool> = (0..n)
        .map(|i| !stateless[i] && state(i).iter().any(|&v| v != w.versions[i]))
        .collect();
    let bad = (0..n).any(|i| {
        if stateless[i] {
            parity || w.data.is_none()
        } else {
            state(i).contains(&0)
                || (!parity && state(i)[j] != w.versions[i])
                || (w.data.is_none() && mixed[i])
        }
    });
    if bad {
        return Err(StoreError::Invalid(
            "fragment write: a stripe state that does not fit this fragment".into(),
        ));
    }
    let flags = |i: usize| {
        if stateless[i] {
            SLOT_STATELESS
        } else if mixed[i] {
            SLOT_MIXED
        } else {
            0
        }
    };
    let _writing = Held::new(&WRITING, key);
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
    for (i, e) in ents.iter_mut().enumerate() {
        e.slots[slots[i]] = match w.data {
            Some(x) => Slot {
                version: w.versions[i],
                crc: slot_crc(mixed[i].then(|| state(i)), &x[i * c..(i + 1) * c]),
                flags: flags(i),
            },
            None => Slot {
                version: w.versions[i],
                crc: 0,
                flags: SLOT_ZEROS,
            },
        };
    }
    // A new object's fragment gets a whole header: every other stripe zeros. (A
    // fragment that moved here needs none: entries never written read as zeros, which
    // is "unknown", and the store had no such object or `cached` would say so. Writes
    // to different stripes of it may run at once; each writes only its own entries.)
    let whole: Vec<StripeEntry> = match cached {
        None if w.create => {
            let mut all = vec![StripeEntry::initial(); lay.stripes() as usize];
            all[range.clone()].copy_from_slice(&ents);
            all
        }
        _ => Vec::new(),
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
        let mut k = i + 1;
        while k < n && slots[k] == slots[i] {
            k += 1;
        }
        runs.push((i, k));
        i = k;
    }
    if let Some(data) = w.data {
        for &(i, k) in &runs {
            let at = lay.slot_at(slots[i], s0 + i as u64);
            writes.push(sh.write(key, at, &data[i * c..k * c], meta));
        }
        for &(i, k) in runs.iter().filter(|&&(i, k)| mixed[i..k].contains(&true)) {
            let at = lay.vector_at(slots[i], s0 + i as u64);
            let v = bytemuck::cast_slice(&w.vectors[i * d..k * d]);
            writes.push(sh.write(key, at, v, meta));
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
            let all = if whole.is_empty() {
                let mut all = vec![StripeEntry::zeroed(); lay.stripes() as usize];
                all[range.clone()].copy_from_slice(&ents);
                all
            } else {
                whole
            };
            // Another request may have cached the fragment's header meanwhile: ours
            // goes into it.
            cache_header(
                key,
                Frag {
                    ents: all,
                    vecs: Vec::new(),
                },
            )
            .0
        }
    };
    let mut f = h.borrow_mut();
    f.ents[range].copy_from_slice(&ents);
    if mixed.contains(&true) && f.vecs.is_empty() {
        f.vecs = vec![0; 2 * lay.stripes() as usize * d];
    }
    for i in (0..n).filter(|&i| mixed[i]) {
        let at = (slots[i] * lay.stripes() as usize + s0 as usize + i) * d;
        if let Some(dst) = f.vecs.get_mut(at..at + d) {
            dst.copy_from_slice(state(i));
        }
    }
    // The next small write of this stripe keeps what this one wrote (a whole run of
    // stripes is a large write, which reads nothing back).
    if let (1, Some(chunk)) = (n, w.data) {
        RECENT.with(|r| r.borrow_mut().put(key, s0, w.versions[0], chunk));
    }
    Ok(())
}

/// Reads stripes `s0..` of fragment `key`: for each, the version `wants[i]` names (or
/// the newest one, or none for [`SKIP`]). Answers the versions found (0: none valid),
/// then the chunks (zeros where none): the FragRead reply. `recent`: a single stripe
/// may come from what this shard's last write of it left in memory ([`Recent`]),
/// checked against the slot's CRC like a chunk from the disk.
async fn frag_read(
    sh: &Shard,
    key: u64,
    lay: &Layout,
    s0: u64,
    wants: &[u64],
    recent: bool,
) -> Result<Vec<u8>> {
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
    if let (true, 1, Some(slot)) = (recent, n, slots[0]) {
        let s = &ents[0].slots[slot];
        if has_data(0, slot) {
            let hit = RECENT.with(|r| {
                let r = r.borrow();
                r.get(key, s0, s.version)
                    .filter(|chunk| crc_of(0, slot, chunk) == s.crc)
                    .map(|chunk| [&s.version.to_le_bytes()[..], chunk].concat())
            });
            if let Some(reply) = hit {
                return Ok(reply);
            }
        }
    }
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
    let old = frag_read(sh, key, lay, s0, w.keeps, true).await?;
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
/// `count u32, then per fragment: index u32, its entries and the state each of their
/// two slots records`. A fragment whose header cannot be read (damaged) is left out,
/// as if this node did not hold it: the others still answer.
async fn frag_probe(sh: &Shard, oid: u64, lay: &Layout, s0: u64, n: u64) -> Result<Vec<u8>> {
    lay.check_stripes(s0, n)?;
    let mut out = vec![0u8; 4];
    let mut count = 0u32;
    for j in 0..lay.width() {
        let key = fragment_oid(oid, j as u8);
        let held = match entries(sh, key, lay, s0, n).await {
            Ok(e) => e,
            Err(StoreError::Invalid(m)) => return Err(StoreError::Invalid(m)),
            Err(e) => {
                tracing::warn!(
                    key = format!("{key:#018x}"),
                    "fragment header unreadable: {e}"
                );
                None
            }
        };
        if let Some(e) = held {
            out.extend_from_slice(&(j as u32).to_le_bytes());
            out.extend_from_slice(bytemuck::cast_slice(&e.ents));
            out.extend_from_slice(bytemuck::cast_slice(&e.vecs));
            count += 1;
        }
    }
    out[..4].copy_from_slice(&count.to_le_bytes());
    Ok(out)
}

pub(super) fn decode_probe(p: &[u8], lay: &Layout, n: u64) -> Result<Vec<(u8, Entries)>> {
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
        let vl = vecs_len;
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
            let recent = c.flags & FLAG_RECENT != 0;
            Ok(frag_read(sh, key, &lay, c.offset, &wants, recent).await?)
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

/// Removes a fragment this holder keeps but no longer has to (recovery moved it).
pub(crate) async fn drop_fragment(sh: &Shard, key: u64) -> Result<()> {
    uncache_header(key);
    sh.remove(key).await
}

thread_local! {
    /// Headers of fragments this shard owns. Every fragment request runs on the
    /// fragment's owning shard (see `serve`), so only this shard changes them and
    /// memory stays true to the store.
    static HEADERS: RefCell<HashMap<u64, Header>> = RefCell::new(HashMap::new());
    /// Fragments with writes in flight, and how many.
    static WRITING: Counts<u64> = const { RefCell::new(BTreeMap::new()) };
    /// Chunks this shard's single-stripe writes just wrote.
    static RECENT: RefCell<Recent> = RefCell::new(Recent::new(RECENT_BYTES));
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

    #[test]
    fn only_mixed_slots_carry_their_vector_in_the_checksum() {
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
        assert_eq!(vector_of(&e, 0, &[1, 2, 3], 3), vec![4, 4, 4]);
        assert_eq!(vector_of(&e, 1, &[1, 2, 3], 3), vec![1, 2, 3]);
        e.slots[0].flags = SLOT_STATELESS;
        assert_eq!(vector_of(&e, 0, &[1, 2, 3], 3), vec![0, 0, 0]);
    }
}
