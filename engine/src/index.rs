//! The in-memory extent index of one partition: for each object, which byte ranges live
//! where on disk. Pure (no I/O) so it can be tested against a model; the partition feeds
//! it records in log order, both when writing and when replaying.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use crate::format::{payload_disk_len, RECORD_HEADER_LEN};

/// One stored payload: a Write or Relocate record's bytes in a segment, with the CRC32C
/// of each 4 KiB chunk. Shared by every extent that still points into it.
#[derive(Debug, PartialEq, Eq)]
pub struct RecordLoc {
    pub segment: u64,
    /// File offset of the first payload byte in the segment (BLOCK-aligned, unless the
    /// payload is packed into its batch's metadata: shorter than [`INLINE_MAX`](crate::format::INLINE_MAX)).
    pub payload_pos: u64,
    pub len: u64,
    pub crcs: Box<[u32]>,
}

impl RecordLoc {
    /// The disk bytes that payload bytes `[a, b)` of this record stand for: each byte
    /// its share of [`RecordLoc::disk_bytes`]. Additive: the parts of a range weigh
    /// what the range weighs, so live bytes stay exact however extents are split, and
    /// a whole record weighs all it takes.
    pub fn footprint(&self, a: u64, b: u64) -> u64 {
        let total = self.disk_bytes();
        let at = |x: u64| (u128::from(x) * u128::from(total) / u128::from(self.len.max(1))) as u64;
        at(b) - at(a)
    }

    /// What the record takes in its segment: its header and CRCs in the batch's
    /// metadata, and its payload, packed there too if shorter than [`INLINE_MAX`](crate::format::INLINE_MAX), else
    /// in whole blocks of its own (a 1100-byte payload takes 4 KiB). Payload bytes
    /// alone would make a segment of small live records (an EC fragment's 32-byte
    /// header entries) look nearly empty however live it is.
    pub fn disk_bytes(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + 4 * self.crcs.len() as u64 + payload_disk_len(self.len)
    }
}

/// A piece of an object that has data: `len` bytes starting `skip` bytes into `rec`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extent {
    pub len: u64,
    pub rec: Rc<RecordLoc>,
    pub skip: u64,
}

impl Extent {
    /// The disk bytes this extent keeps alive ([`RecordLoc::footprint`]).
    pub fn footprint(&self) -> u64 {
        self.rec.footprint(self.skip, self.skip + self.len)
    }
}

/// What a lookup finds for consecutive parts of the requested range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Hole {
        len: u64,
    },
    Data {
        len: u64,
        rec: Rc<RecordLoc>,
        skip: u64,
    },
}

impl Piece {
    pub fn len(&self) -> u64 {
        match self {
            Piece::Hole { len } | Piece::Data { len, .. } => *len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Per-object state: its fixed size, the newest version/epoch written, and its extents.
#[derive(Debug, Default)]
pub struct ObjectIndex {
    pub size: u64,
    pub version: u64,
    pub epoch: u32,
    /// Key: start offset in the object. Extents never overlap. Changed only through
    /// the methods below, which keep `used` its sum.
    extents: BTreeMap<u64, Extent>,
    /// Bytes the extents cover. Kept as they change rather than summed when asked:
    /// every write asks (`Partition::stat`), and an object that took many small writes
    /// has thousands of extents.
    used: u64,
}

impl ObjectIndex {
    /// A new, empty object of `size` bytes at `version` and `epoch`.
    pub fn new(size: u64, version: u64, epoch: u32) -> Self {
        ObjectIndex {
            size,
            version,
            epoch,
            ..Default::default()
        }
    }

    /// Bytes of the object that hold data (not holes).
    pub fn used(&self) -> u64 {
        self.used
    }

    /// The extents by start offset.
    pub fn extents(&self) -> &BTreeMap<u64, Extent> {
        &self.extents
    }

    /// Adds an extent at `start` that overlaps none (a checkpoint being loaded);
    /// `false` if it is empty or would overlap one (nothing is changed then).
    pub fn load(&mut self, start: u64, e: Extent) -> bool {
        if e.len == 0 {
            return false;
        }
        let end = start + e.len;
        let before = self.extents.range(..end).next_back();
        if before.is_some_and(|(&s, x)| s + x.len > start) {
            return false;
        }
        self.used += e.len;
        self.extents.insert(start, e);
        true
    }

    /// Removes `[start, start+len)` from the map, trimming or splitting extents that
    /// cross its edges; reports each removed byte count per segment to `freed`.
    pub fn punch(&mut self, start: u64, len: u64, freed: &mut impl FnMut(u64, u64)) {
        let end = start + len;
        if len == 0 {
            return;
        }
        // The extent that starts before `start` may reach into the range.
        if let Some((&s, e)) = self.extents.range(..start).next_back() {
            let e_end = s + e.len;
            if e_end > start {
                let e = e.clone();
                if let Some(x) = self.extents.get_mut(&s) {
                    x.len = start - s;
                }
                self.used -= e_end - start;
                let gone = e.skip + (start - s)..e.skip + (e_end.min(end) - s);
                freed(e.rec.segment, e.rec.footprint(gone.start, gone.end));
                self.keep_tail(s, e, end);
            }
        }
        // Extents that start inside the range.
        let inside: Vec<u64> = self.extents.range(start..end).map(|(&s, _)| s).collect();
        for s in inside {
            if let Some(e) = self.extents.remove(&s) {
                self.used -= e.len;
                let e_end = s + e.len;
                freed(
                    e.rec.segment,
                    e.rec.footprint(e.skip, e.skip + (e_end.min(end) - s)),
                );
                self.keep_tail(s, e, end);
            }
        }
    }

    /// If extent `e` (which started at `s`) reaches past `end`, keeps its part after `end`.
    fn keep_tail(&mut self, s: u64, e: Extent, end: u64) {
        let e_end = s + e.len;
        if e_end > end {
            let skip = e.skip + (end - s);
            self.used += e_end - end;
            self.extents.insert(
                end,
                Extent {
                    len: e_end - end,
                    rec: e.rec,
                    skip,
                },
            );
        }
    }

    /// Maps `[start, start+len)` to `rec` from `skip` on, replacing what was there.
    pub fn insert(
        &mut self,
        start: u64,
        len: u64,
        rec: Rc<RecordLoc>,
        skip: u64,
        freed: &mut impl FnMut(u64, u64),
        added: &mut impl FnMut(u64, u64),
    ) {
        if len == 0 {
            return;
        }
        debug_assert!(skip + len <= rec.len, "extent beyond its record");
        self.punch(start, len, freed);
        added(rec.segment, rec.footprint(skip, skip + len));
        self.used += len;
        self.extents.insert(start, Extent { len, rec, skip });
    }

    /// Compaction's conditional remap: the parts of `[start, start+len)` that still point
    /// into record `(src_segment, src_pos)` now point into `new` (whose payload is the
    /// object's bytes `[start, start+len)` as they were when copied).
    pub fn relocate(
        &mut self,
        start: u64,
        len: u64,
        src: (u64, u64),
        new: &Rc<RecordLoc>,
        freed: &mut impl FnMut(u64, u64),
        added: &mut impl FnMut(u64, u64),
    ) {
        let end = start + len;
        let matches: Vec<(u64, u64)> = self
            .pieces(start, len)
            .into_iter()
            .scan(start, |pos, p| {
                let here = *pos;
                *pos += p.len();
                Some((here, p))
            })
            .filter_map(|(at, p)| match p {
                Piece::Data { len, rec, .. } if (rec.segment, rec.payload_pos) == src => {
                    Some((at, len))
                }
                _ => None,
            })
            .collect();
        for (at, l) in matches {
            debug_assert!(at + l <= end);
            self.insert(at, l, new.clone(), at - start, freed, added);
        }
    }

    /// Splits `[start, start+len)` into consecutive holes and data pieces.
    pub fn pieces(&self, start: u64, len: u64) -> Vec<Piece> {
        let end = start + len;
        let mut out = Vec::new();
        let mut pos = start;
        let first = self
            .extents
            .range(..start)
            .next_back()
            .filter(|(&s, e)| s + e.len > start);
        let iter = first.into_iter().chain(self.extents.range(start..end));
        for (&s, e) in iter {
            if s > pos {
                out.push(Piece::Hole { len: s - pos });
                pos = s;
            }
            let e_end = (s + e.len).min(end);
            if e_end > pos {
                out.push(Piece::Data {
                    len: e_end - pos,
                    rec: e.rec.clone(),
                    skip: e.skip + (pos - s),
                });
                pos = e_end;
            }
        }
        if pos < end {
            out.push(Piece::Hole { len: end - pos });
        }
        out
    }
}

/// Live bytes per segment, as disk bytes ([`Extent::footprint`]): compaction's measure
/// of how much a segment still holds. Payload bytes would make a segment of small
/// records (fragment header entries) look nearly empty however live it is, and
/// compaction would copy it over and over.
pub type LiveBytes = HashMap<u64, u64>;

/// One partition's objects.
#[derive(Debug, Default)]
pub struct Index {
    pub objects: HashMap<u64, ObjectIndex>,
    pub live: LiveBytes,
}

/// A record as the index sees it, already placed on disk (for writes).
#[derive(Debug, Clone)]
pub enum IndexOp {
    Write {
        oid: u64,
        object_size: u64,
        offset: u64,
        len: u64,
        version: u64,
        epoch: u32,
        rec: Rc<RecordLoc>,
    },
    Discard {
        oid: u64,
        object_size: u64,
        offset: u64,
        len: u64,
        version: u64,
        epoch: u32,
    },
    Remove {
        oid: u64,
    },
    Relocate {
        oid: u64,
        offset: u64,
        len: u64,
        src: (u64, u64),
        rec: Rc<RecordLoc>,
    },
}

impl Index {
    /// Applies one record. Records come in log order; applying the same sequence always
    /// yields the same index (replay relies on it).
    pub fn apply(&mut self, op: IndexOp) {
        let live = &mut self.live;
        let mut freed = |seg: u64, n: u64| {
            if let Some(v) = live.get_mut(&seg) {
                *v = v.saturating_sub(n);
            }
        };
        match op {
            IndexOp::Write {
                oid,
                object_size,
                offset,
                len,
                version,
                epoch,
                rec,
            } => {
                let obj = self
                    .objects
                    .entry(oid)
                    .or_insert_with(|| ObjectIndex::new(object_size, 0, 0));
                obj.version = obj.version.max(version);
                obj.epoch = epoch;
                let mut added_acc = Vec::new();
                obj.insert(offset, len, rec, 0, &mut freed, &mut |s, n| {
                    added_acc.push((s, n))
                });
                for (s, n) in added_acc {
                    *self.live.entry(s).or_default() += n;
                }
            }
            IndexOp::Discard {
                oid,
                object_size: _,
                offset,
                len,
                version,
                epoch,
            } => {
                // Discarding in an object that does not exist leaves it nonexistent.
                let Some(obj) = self.objects.get_mut(&oid) else {
                    return;
                };
                obj.version = obj.version.max(version);
                obj.epoch = epoch;
                obj.punch(offset, len, &mut freed);
            }
            IndexOp::Remove { oid } => {
                if let Some(obj) = self.objects.remove(&oid) {
                    for e in obj.extents().values() {
                        freed(e.rec.segment, e.footprint());
                    }
                }
            }
            IndexOp::Relocate {
                oid,
                offset,
                len,
                src,
                rec,
            } => {
                let Some(obj) = self.objects.get_mut(&oid) else {
                    return;
                };
                let mut added_acc = Vec::new();
                obj.relocate(offset, len, src, &rec, &mut freed, &mut |s, n| {
                    added_acc.push((s, n))
                });
                for (s, n) in added_acc {
                    *self.live.entry(s).or_default() += n;
                }
            }
        }
    }

    /// Makes sure `segment` is tracked (with zero live bytes until something points at it).
    pub fn track_segment(&mut self, segment: u64) {
        self.live.entry(segment).or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::INLINE_MAX;

    fn rec(segment: u64, pos: u64, len: u64) -> Rc<RecordLoc> {
        Rc::new(RecordLoc {
            segment,
            payload_pos: pos,
            len,
            crcs: vec![0; len.div_ceil(4096) as usize].into(),
        })
    }

    fn write(ix: &mut Index, oid: u64, off: u64, len: u64, r: &Rc<RecordLoc>) {
        ix.apply(IndexOp::Write {
            oid,
            object_size: 1 << 22,
            offset: off,
            len,
            version: 1,
            epoch: 1,
            rec: r.clone(),
        });
    }

    #[test]
    fn overwrite_splits_and_accounts_live_bytes() {
        let mut ix = Index::default();
        let a = rec(1, 4096, 10000);
        let b = rec(2, 4096, 100);
        write(&mut ix, 7, 0, 10000, &a);
        write(&mut ix, 7, 5000, 100, &b);
        let p = ix.objects[&7].pieces(0, 12000);
        assert_eq!(
            p,
            vec![
                Piece::Data {
                    len: 5000,
                    rec: a.clone(),
                    skip: 0
                },
                Piece::Data {
                    len: 100,
                    rec: b.clone(),
                    skip: 0
                },
                Piece::Data {
                    len: 4900,
                    rec: a.clone(),
                    skip: 5100
                },
                Piece::Hole { len: 2000 },
            ]
        );
        // Live bytes are disk bytes: a's 10000 bytes hold 3 blocks; b's 100 bytes are
        // packed into a batch's metadata. Each has a header and a CRC per 4 KiB.
        assert_eq!(ix.live[&1], a.disk_bytes() - a.footprint(5000, 5100));
        assert_eq!(a.disk_bytes(), RECORD_HEADER_LEN as u64 + 4 * 3 + 12288);
        assert_eq!(ix.live[&2], RECORD_HEADER_LEN as u64 + 4 + 100);
        assert_eq!(ix.objects[&7].used(), 10000);
        ix.apply(IndexOp::Discard {
            oid: 7,
            object_size: 1 << 22,
            offset: 4000,
            len: 2000,
            version: 2,
            epoch: 1,
        });
        assert_eq!(ix.live[&1], a.footprint(0, 4000) + a.footprint(6000, 10000));
        assert_eq!(ix.live[&2], 0);
        assert_eq!(ix.objects[&7].used(), 8000);
        ix.apply(IndexOp::Remove { oid: 7 });
        assert_eq!(ix.live[&1], 0);
        assert!(ix.objects.is_empty());
    }

    #[test]
    fn a_record_weighs_its_blocks_however_it_is_split() {
        for len in [1, 32, 1023, 1024, 4095, 4096, 4097, 10000, 1 << 20] {
            let r = rec(1, 0, len);
            // Header and CRCs, then packed payloads weigh their bytes, the others
            // their blocks.
            let payload = if len < INLINE_MAX {
                len
            } else {
                len.next_multiple_of(4096)
            };
            let blocks = RECORD_HEADER_LEN as u64 + 4 * len.div_ceil(4096) + payload;
            assert_eq!(r.footprint(0, len), blocks, "len {len}");
            let cuts = [0, len / 7, len / 3, len / 2, len - len / 5, len];
            let sum: u64 = cuts.windows(2).map(|w| r.footprint(w[0], w[1])).sum();
            assert_eq!(sum, blocks, "len {len}");
        }
    }

    /// Random overwrites, discards and relocations: every segment's live bytes stay
    /// the footprint of the extents pointing into it, and `used` their length.
    #[test]
    fn live_and_used_stay_the_sums_of_the_extents() {
        let mut ix = Index::default();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut recs: Vec<(Rc<RecordLoc>, u64, u64)> = Vec::new();
        for i in 0..400u64 {
            let (off, len) = (next(60_000), 1 + next(9_000));
            match next(10) {
                0 => ix.apply(IndexOp::Discard {
                    oid: 1,
                    object_size: 1 << 22,
                    offset: off,
                    len,
                    version: i,
                    epoch: 1,
                }),
                1 if !recs.is_empty() => {
                    let (src, o2, l2) = recs[next(recs.len() as u64) as usize].clone();
                    ix.apply(IndexOp::Relocate {
                        oid: 1,
                        offset: o2,
                        len: l2,
                        src: (src.segment, src.payload_pos),
                        rec: rec(100 + i % 3, i * 8192, l2),
                    });
                }
                _ => {
                    let r = rec(i % 5, i * 16384, len);
                    write(&mut ix, 1, off, len, &r);
                    recs.push((r, off, len));
                }
            }
            let Some(o) = ix.objects.get(&1) else {
                continue;
            };
            let mut want: HashMap<u64, u64> = HashMap::new();
            for e in o.extents().values() {
                *want.entry(e.rec.segment).or_default() += e.footprint();
            }
            for (s, &l) in &ix.live {
                assert_eq!(
                    l,
                    want.get(s).copied().unwrap_or(0),
                    "segment {s} after op {i}"
                );
            }
            assert_eq!(o.used(), o.extents().values().map(|e| e.len).sum::<u64>());
        }
    }

    #[test]
    fn relocate_only_moves_what_still_points_at_the_source() {
        let mut ix = Index::default();
        let a = rec(1, 4096, 8192);
        write(&mut ix, 9, 0, 8192, &a);
        // A newer write lands in the middle after compaction read the old bytes.
        let b = rec(3, 0, 100);
        write(&mut ix, 9, 1000, 100, &b);
        let c = rec(4, 0, 8192);
        ix.apply(IndexOp::Relocate {
            oid: 9,
            offset: 0,
            len: 8192,
            src: (1, 4096),
            rec: c.clone(),
        });
        let p = ix.objects[&9].pieces(0, 8192);
        assert_eq!(
            p,
            vec![
                Piece::Data {
                    len: 1000,
                    rec: c.clone(),
                    skip: 0
                },
                Piece::Data {
                    len: 100,
                    rec: b.clone(),
                    skip: 0
                },
                Piece::Data {
                    len: 7092,
                    rec: c.clone(),
                    skip: 1100
                },
            ]
        );
        assert_eq!(ix.live[&1], 0);
        assert_eq!(ix.live[&4], c.footprint(0, 1000) + c.footprint(1100, 8192));
    }

    #[test]
    fn loading_refuses_empty_and_overlapping_extents() {
        let mut o = ObjectIndex::new(1 << 20, 1, 1);
        let r = rec(1, 0, 8192);
        let e = |len, skip| Extent {
            len,
            rec: r.clone(),
            skip,
        };
        assert!(o.load(4096, e(4096, 0)));
        assert!(!o.load(4096, e(0, 0)), "empty");
        assert!(!o.load(0, e(4097, 0)), "reaches into the next");
        assert!(!o.load(8191, e(1, 4095)), "starts inside the last");
        assert!(o.load(0, e(4096, 4096)));
        assert_eq!(o.used(), 8192);
        assert_eq!(o.extents().len(), 2);
    }

    #[test]
    fn pieces_of_an_empty_object_are_one_hole() {
        let o = ObjectIndex::default();
        assert_eq!(o.pieces(10, 20), vec![Piece::Hole { len: 20 }]);
    }
}
