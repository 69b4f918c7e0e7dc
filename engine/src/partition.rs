//! One partition: its segment files, its log head, its index, replay at open, group
//! commit, reads with CRC verification, checkpoints and compaction. Lives on exactly one
//! shard (`!Send`: it holds `Rc`s and glommio files).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use futures::channel::oneshot;
use glommio::io::{DmaFile, OpenOptions};
use tracing::{info, warn};

use crate::checkpoint;
use crate::error::{from_glommio, Result, StoreError};
use crate::format::*;
use crate::index::{Index, IndexOp, Piece, RecordLoc};

/// Largest single read or write the store accepts (bigger requests are an error).
pub const MAX_IO: u64 = 64 << 20;
/// Largest object the store accepts.
pub const MAX_OBJECT_SIZE: u64 = 1 << 30;
/// Free space (in segments) that client writes leave for compaction and checkpoints, on
/// top of one segment per partition of the store (see `PartitionConfig::reserve_segments`).
pub const RESERVE_SEGMENTS: u64 = 2;
/// Batches of one partition in flight at once (written, not yet acknowledged).
/// Replay relies on it: only this many trailing batches of a log can be torn.
pub const PIPELINE_DEPTH: usize = 4;
/// Start another batch while one is in flight only if this much payload waits.
const PIPELINE_MIN_BYTES: u64 = 256 << 10;
/// Records per batch, at most.
const MAX_BATCH_RECORDS: usize = 1024;
/// Compaction reads a victim segment's live extents in windows of at most this many
/// bytes of the segment, one disk request each.
const RELOCATE_WINDOW: u64 = 1 << 20;
/// A live extent further than this past the window so far starts a new window (reading
/// the dead bytes between would cost more than another request).
const RELOCATE_GAP: u64 = 128 << 10;

/// Version and epoch a writer attaches to a write, plus the object's fixed size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteMeta {
    pub object_size: u64,
    pub version: u64,
    pub epoch: u32,
}

/// What the store knows about one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub oid: u64,
    pub size: u64,
    /// Bytes that hold data (holes excluded).
    pub used: u64,
    pub version: u64,
    pub epoch: u32,
}

/// Counters a partition keeps for `dog node info` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionStats {
    pub segments: u64,
    pub segment_bytes: u64,
    pub live_bytes: u64,
    pub objects: u64,
    pub checksum_errors: u64,
    pub compacted_segments: u64,
    pub checkpoints: u64,
}

impl std::ops::AddAssign for PartitionStats {
    fn add_assign(&mut self, o: Self) {
        self.segments += o.segments;
        self.segment_bytes += o.segment_bytes;
        self.live_bytes += o.live_bytes;
        self.objects += o.objects;
        self.checksum_errors += o.checksum_errors;
        self.compacted_segments += o.compacted_segments;
        self.checkpoints += o.checkpoints;
    }
}

/// Tunables fixed for the life of an open store.
#[derive(Clone, Debug)]
pub struct PartitionConfig {
    pub segment_size: u64,
    pub nonce: u32,
    /// Skip fdatasync (Sheepdog's `-n`): acknowledged writes may be lost on power loss.
    pub nosync: bool,
    /// Write a checkpoint once this many bytes were logged since the last one.
    pub checkpoint_every: u64,
    /// A sealed segment whose live bytes fall below this fraction is compacted.
    pub compact_below: f64,
    /// Segments of free space a write may not use: one per partition of the store, so
    /// that on a full disk every partition can still open a segment for removes and
    /// compaction (partitions fill up concurrently), plus `RESERVE_SEGMENTS`.
    pub reserve_segments: u64,
}

impl PartitionConfig {
    /// Largest payload one record may carry: two records and their metadata always fit in
    /// a segment, so a batch of one record can never be refused for size.
    pub fn max_record(&self) -> u64 {
        ((self.segment_size - 2 * BLOCK as u64) / 2).min(8 << 20) & !(BLOCK as u64 - 1)
    }
    fn max_batch(&self) -> u64 {
        self.segment_size - BLOCK as u64
    }
}

/// A record waiting for the next batch.
struct Pending {
    header: RecordHeader,
    payload: Option<Vec<u8>>,
    crcs: Vec<u32>,
    done: oneshot::Sender<Result<()>>,
}

/// The segment the log appends to.
struct Head {
    id: u64,
    file: Rc<DmaFile>,
    /// Next batch goes here.
    pos: u64,
}

/// A position in the log: replay from here reproduces the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogPos {
    pub segment: u64,
    pub offset: u64,
    pub seq: u64,
}

struct State {
    index: Index,
    segments: BTreeMap<u64, Rc<DmaFile>>,
    head: Option<Head>,
    next_segment: u64,
    next_seq: u64,
    /// Where the index is exactly up to date (start of the first unapplied batch).
    applied: LogPos,
    checkpoint: LogPos,
    logged_since_checkpoint: u64,
    pending: Vec<Pending>,
    /// Segments compaction cannot empty (a chunk fails its CRC): skipped until restart,
    /// so a damaged chunk does not cause a checkpoint on every maintenance tick.
    stuck: std::collections::HashSet<u64>,
    stats: PartitionStats,
}

/// One partition of a store. Owned by one shard.
pub struct Partition {
    pub id: u32,
    dir: PathBuf,
    cfg: PartitionConfig,
    st: RefCell<State>,
    flushing: Cell<bool>,
    maintaining: Cell<bool>,
    /// Serializes checkpoint writers (maintenance, close): an older snapshot must never be
    /// installed after a newer one.
    ckpt_lock: glommio::sync::Semaphore,
}

/// The segment bytes `[start, end)` that hold `len` bytes at `skip` of record `rec`:
/// whole CRC32C chunks, so they can be checked. Not aligned for a packed payload
/// ([`INLINE_MAX`]): read them with [`read_span`].
fn piece_span(rec: &RecordLoc, skip: u64, len: u64) -> (u64, u64) {
    let c = CRC_CHUNK as u64;
    // Not past the payload's end: a packed payload's next 4 KiB belong to others.
    (
        rec.payload_pos + skip / c * c,
        rec.payload_pos + ((skip + len).div_ceil(c) * c).min(rec.len),
    )
}

fn seg_name(id: u64) -> String {
    format!("seg-{id:016x}.log")
}

fn parse_seg_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    u64::from_str_radix(hex, 16).ok()
}

async fn open_rw(path: &Path) -> Result<DmaFile> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(path)
        .await
        .map_err(|e| from_glommio(format!("opening {}", path.display()), e))
}

/// fsync a directory so a created, renamed or removed entry survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("syncing directory {}", dir.display()), e))
}

/// Reads segment bytes `[start, end)` with one aligned read around them; the bytes
/// from `start` on (possibly fewer than asked at the end of the file).
async fn read_span(file: &DmaFile, start: u64, end: u64) -> Result<Vec<u8>> {
    let a = align_down(start);
    let r = file
        .read_at_aligned(a, (align_up(end) - a) as usize)
        .await
        .map_err(|e| from_glommio("reading segment", e))?;
    Ok(r.get((start - a) as usize..).unwrap_or_default().to_vec())
}

async fn read_exact(file: &DmaFile, pos: u64, len: usize, what: &str) -> Result<Vec<u8>> {
    let r = file
        .read_at_aligned(pos, len)
        .await
        .map_err(|e| from_glommio(what.to_string(), e))?;
    if r.len() < len {
        return Err(StoreError::io(
            what.to_string(),
            std::io::ErrorKind::UnexpectedEof.into(),
        ));
    }
    Ok(r[..len].to_vec())
}

impl Partition {
    pub fn dir_for(store_dir: &Path, id: u32) -> PathBuf {
        store_dir.join("partitions").join(format!("{id:04}"))
    }

    /// Opens (or creates) the partition: loads its checkpoint, replays the log after it,
    /// cuts a torn tail, and writes a fresh checkpoint so the next write starts a new
    /// segment at a known position.
    pub async fn open(store_dir: &Path, id: u32, cfg: PartitionConfig) -> Result<Rc<Partition>> {
        let dir = Self::dir_for(store_dir, id);
        if !dir.exists() {
            std::fs::create_dir_all(&dir)
                .map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
            // The new directory's entry must survive a crash like any file's.
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let nonce = cfg.nonce;

        let mut ids = Vec::new();
        let rd = std::fs::read_dir(&dir)
            .map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
        for ent in rd {
            let ent = ent.map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
            if let Some(sid) = ent.file_name().to_str().and_then(parse_seg_name) {
                ids.push(sid);
            }
        }
        ids.sort_unstable();

        let ckpt = checkpoint::load(&dir, id, nonce)?;
        let (mut index, start) = match ckpt {
            Some((ix, pos)) => (ix, pos),
            None => (
                Index::default(),
                LogPos {
                    segment: ids.first().copied().unwrap_or(0),
                    offset: BLOCK as u64,
                    seq: 0,
                },
            ),
        };
        // Every segment the checkpoint's extents point into must still exist.
        for seg in index.live.keys() {
            if ids.binary_search(seg).is_err() && index.live[seg] > 0 {
                return Err(StoreError::Incompatible {
                    dir: dir.display().to_string(),
                    why: format!("checkpoint refers to missing segment {seg}"),
                });
            }
        }

        let mut segments = BTreeMap::new();
        for &sid in &ids {
            let f = open_rw(&dir.join(seg_name(sid))).await?;
            segments.insert(sid, Rc::new(f));
            index.track_segment(sid);
        }

        // Replay every segment at or after the checkpoint position.
        let mut seq = start.seq;
        let newest = ids.last().copied();
        for &sid in ids.iter().filter(|&&s| s >= start.segment) {
            let file = segments[&sid].clone();
            let file_len = file
                .file_size()
                .await
                .map_err(|e| from_glommio("segment size", e))?;
            // An I/O error is an error; a short or invalid header is judged below.
            let first = file
                .read_at_aligned(0, BLOCK)
                .await
                .map_err(|e| from_glommio("reading segment header", e))?;
            let hdr: Option<SegmentHeader> = (first.len() >= std::mem::size_of::<SegmentHeader>())
                .then(|| {
                    bytemuck::pod_read_unaligned(&first[..std::mem::size_of::<SegmentHeader>()])
                })
                .filter(|h: &SegmentHeader| {
                    h.magic == SEGMENT_MAGIC && h.crc_ok(nonce) && h.segment_id == sid
                });
            let Some(hdr) = hdr else {
                // A segment whose creation was cut short holds nothing acknowledged (its
                // header is flushed with its first batch). If anything refers to it or it
                // holds valid batches, the header was damaged later: refuse.
                let referenced = index.live.get(&sid).is_some_and(|&l| l > 0)
                    || sid == start.segment && start.offset > BLOCK as u64;
                let holds_batches = later_batch(&file, BLOCK as u64, 0, file_len, id, nonce)
                    .await
                    .is_some();
                if referenced || holds_batches {
                    return Err(StoreError::Incompatible {
                        dir: dir.display().to_string(),
                        why: format!("segment {sid} has a damaged header but holds records"),
                    });
                }
                warn!(
                    partition = id,
                    segment = sid,
                    "removing segment whose creation was cut short"
                );
                segments.remove(&sid);
                index.live.remove(&sid);
                std::fs::remove_file(dir.join(seg_name(sid)))
                    .map_err(|e| StoreError::io(format!("removing torn segment {sid}"), e))?;
                continue;
            };
            let resumes_inside = sid == start.segment && start.offset > BLOCK as u64;
            if !resumes_inside {
                // Consecutive segments continue the sequence, skipping at most the numbers
                // of the batches that were in flight when one failed (or were cut as torn).
                // A larger gap means records went missing.
                if hdr.first_seq < seq || hdr.first_seq > seq + PIPELINE_DEPTH as u64 {
                    return Err(StoreError::Incompatible {
                        dir: dir.display().to_string(),
                        why: format!(
                            "segment {sid} starts at sequence {} but the log expects {seq}",
                            hdr.first_seq
                        ),
                    });
                }
                seq = hdr.first_seq;
            }
            let mut pos = if sid == start.segment {
                start.offset
            } else {
                BLOCK as u64
            };
            // The last PIPELINE_DEPTH batches may be torn; older ones were durable before
            // any later batch was started.
            let mut recent: std::collections::VecDeque<(LogPos, Vec<IndexOp>)> = Default::default();
            loop {
                let Some((ops, total)) =
                    scan_batch(&file, sid, pos, seq, file_len, id, nonce).await
                else {
                    break;
                };
                if recent.len() == PIPELINE_DEPTH {
                    if let Some((_, old)) = recent.pop_front() {
                        for op in old {
                            index.apply(op);
                        }
                    }
                }
                recent.push_back((
                    LogPos {
                        segment: sid,
                        offset: pos,
                        seq,
                    },
                    ops,
                ));
                pos += total;
                seq += 1;
            }
            // The log of this segment ends at `pos`. That must be the tail: batches that
            // were in flight together may lie beyond a torn one, but a valid batch numbered
            // past that window means a batch in the middle was damaged, and treating it as
            // the tail would silently drop acknowledged writes. Refuse instead.
            if let Some(at) = later_batch(
                &file,
                pos + BLOCK as u64,
                seq + PIPELINE_DEPTH as u64,
                file_len,
                id,
                nonce,
            )
            .await
            {
                return Err(StoreError::Incompatible {
                    dir: dir.display().to_string(),
                    why: format!(
                        "segment {sid}: log damaged at offset {pos} but continues at {at}; \
                         refusing to drop the records after it (the partition needs repair from other copies)"
                    ),
                });
            }
            // Keep the recent batches up to the first whose payload fails its CRCs (its
            // write was cut short; it and everything after it was never acknowledged).
            let mut end = pos;
            while let Some((at, ops)) = recent.pop_front() {
                if payloads_ok(&file, &ops, nonce).await {
                    for op in ops {
                        index.apply(op);
                    }
                } else {
                    warn!(
                        partition = id,
                        segment = sid,
                        offset = at.offset,
                        "cutting torn batches at log tail"
                    );
                    end = at.offset;
                    seq = at.seq;
                    break;
                }
            }
            if Some(sid) == newest {
                // Release the preallocated rest and any garbage after the cut.
                file.truncate(end)
                    .await
                    .map_err(|e| from_glommio("truncating segment tail", e))?;
            }
        }
        let next_segment = newest.map_or(0, |n| n + 1).max(start.segment);
        let resume = LogPos {
            segment: next_segment,
            offset: BLOCK as u64,
            seq,
        };

        let stats = PartitionStats {
            segments: segments.len() as u64,
            ..Default::default()
        };
        let part = Rc::new(Partition {
            id,
            dir,
            cfg,
            st: RefCell::new(State {
                index,
                segments,
                head: None,
                next_segment,
                next_seq: seq,
                applied: resume,
                checkpoint: start,
                logged_since_checkpoint: 0,
                pending: Vec::new(),
                stuck: Default::default(),
                stats,
            }),
            flushing: Cell::new(false),
            maintaining: Cell::new(false),
            ckpt_lock: glommio::sync::Semaphore::new(1),
        });
        // Writing here makes every existing segment older than the checkpoint, so the next
        // open replays nothing twice and compaction may work on all of them.
        if start != resume {
            part.write_checkpoint().await?;
        }
        Ok(part)
    }

    pub fn config(&self) -> &PartitionConfig {
        &self.cfg
    }

    // ---------------------------------------------------------------- writes

    /// Queues one record and waits until it is durable (or failed).
    async fn submit(self: &Rc<Self>, header: RecordHeader, payload: Option<Vec<u8>>) -> Result<()> {
        let crcs = payload
            .as_deref()
            .map(|p| payload_crcs(self.cfg.nonce, p))
            .unwrap_or_default();
        let (tx, rx) = oneshot::channel();
        self.st.borrow_mut().pending.push(Pending {
            header,
            payload,
            crcs,
            done: tx,
        });
        if !self.flushing.replace(true) {
            let me = self.clone();
            glommio::spawn_local(async move { me.flush_loop().await }).detach();
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues `data` as records like `header` (which names the object offset of
    /// `data`'s first byte), one per `max_record` bytes, each at its own offset.
    fn submit_split<'a>(
        self: &'a Rc<Self>,
        header: RecordHeader,
        data: &[u8],
    ) -> impl Iterator<Item = impl std::future::Future<Output = Result<()>> + 'a> + 'a {
        let max = self.cfg.max_record();
        let chunks: Vec<Vec<u8>> = data.chunks(max as usize).map(<[u8]>::to_vec).collect();
        chunks.into_iter().enumerate().map(move |(i, chunk)| {
            let h = RecordHeader {
                offset: header.offset + i as u64 * max,
                len: chunk.len() as u32,
                ..header
            };
            self.submit(h, Some(chunk))
        })
    }

    /// Writes `data` at `offset` of object `oid`, durably.
    pub async fn write(
        self: &Rc<Self>,
        oid: u64,
        offset: u64,
        data: &[u8],
        meta: WriteMeta,
    ) -> Result<()> {
        self.check_write(oid, offset, data.len() as u64, meta)?;
        let h = RecordHeader {
            oid,
            offset,
            version: meta.version,
            object_size: meta.object_size as u32,
            epoch: meta.epoch,
            kind: RecordKind::Write as u8,
            ..bytemuck::Zeroable::zeroed()
        };
        for r in futures::future::join_all(self.submit_split(h, data)).await {
            r?;
        }
        Ok(())
    }

    /// Makes `[offset, offset+len)` of the object a hole, durably. A no-op on objects
    /// that do not exist.
    pub async fn discard(
        self: &Rc<Self>,
        oid: u64,
        offset: u64,
        len: u64,
        meta: WriteMeta,
    ) -> Result<()> {
        self.check_write(oid, offset, len, meta)?;
        let h = RecordHeader {
            oid,
            offset,
            version: meta.version,
            len: len as u32,
            object_size: meta.object_size as u32,
            epoch: meta.epoch,
            kind: RecordKind::Discard as u8,
            ..bytemuck::Zeroable::zeroed()
        };
        self.submit(h, None).await
    }

    /// Removes the object, durably. Idempotent.
    pub async fn remove(self: &Rc<Self>, oid: u64) -> Result<()> {
        let h = RecordHeader {
            oid,
            kind: RecordKind::Remove as u8,
            ..bytemuck::Zeroable::zeroed()
        };
        self.submit(h, None).await
    }

    fn check_write(&self, oid: u64, offset: u64, len: u64, meta: WriteMeta) -> Result<()> {
        if meta.object_size == 0 || meta.object_size > MAX_OBJECT_SIZE {
            return Err(StoreError::Invalid(format!(
                "object size {} outside 1..={MAX_OBJECT_SIZE}",
                meta.object_size
            )));
        }
        if len > MAX_IO {
            return Err(StoreError::OutOfRange(format!(
                "request of {len} bytes exceeds the {MAX_IO}-byte limit"
            )));
        }
        match offset.checked_add(len) {
            Some(end) if end <= meta.object_size => {}
            _ => {
                return Err(StoreError::OutOfRange(format!(
                    "range {offset}+{len} outside object {oid:#018x} of {} bytes",
                    meta.object_size
                )))
            }
        }
        if let Some(obj) = self.st.borrow().index.objects.get(&oid) {
            if obj.size != meta.object_size {
                return Err(StoreError::Invalid(format!(
                    "object {oid:#018x} has size {}, write says {}",
                    obj.size, meta.object_size
                )));
            }
        }
        Ok(())
    }

    /// Runs batches until nothing is pending. Up to [`PIPELINE_DEPTH`] batches are in
    /// flight, laid out in sequence order and completed (index applied, writers answered)
    /// strictly in that order: batch N is acknowledged only when it and every batch before
    /// it are durable, so after a crash only the last `PIPELINE_DEPTH` batches of a log
    /// can be torn. A second batch is started while one is in flight only when at least
    /// [`PIPELINE_MIN_BYTES`] wait: small records do better waiting to share the next
    /// batch's fdatasync.
    async fn flush_loop(self: Rc<Self>) {
        type Flight = glommio::task::JoinHandle<Result<()>>;
        let mut inflight: std::collections::VecDeque<(
            Vec<Pending>,
            Result<Prepared>,
            Option<Flight>,
        )> = Default::default();
        let mut poisoned: Option<u64> = None;
        loop {
            while inflight.len() < PIPELINE_DEPTH
                && (inflight.is_empty() || self.pending_bytes() >= PIPELINE_MIN_BYTES)
            {
                let batch = self.take_batch();
                if batch.is_empty() {
                    break;
                }
                let prepared = self.prepare(&batch).await;
                let flight = match &prepared {
                    Ok(p) => {
                        let (file, buf, pos, total) =
                            (p.file.clone(), p.buf.take(), p.pos, p.total);
                        let nosync = self.cfg.nosync;
                        let h = glommio::spawn_local(async move {
                            persist(&file, buf, pos, total, nosync).await
                        });
                        Some(h.detach())
                    }
                    Err(_) => None,
                };
                inflight.push_back((batch, prepared, flight));
            }
            let Some((batch, prepared, flight)) = inflight.pop_front() else {
                self.flushing.set(false);
                return;
            };
            let result = match (prepared, flight) {
                (Ok(p), Some(f)) => match f.await {
                    Some(Ok(())) if poisoned == Some(p.at.segment) => Err(StoreError::io(
                        "an earlier batch in this segment failed",
                        std::io::Error::from_raw_os_error(libc::EIO),
                    )),
                    Some(Ok(())) => Ok(p),
                    Some(Err(e)) => {
                        poisoned = Some(p.at.segment);
                        self.seal(p.at.segment);
                        Err(e)
                    }
                    None => Err(StoreError::Closed),
                },
                (Ok(_), None) => Err(StoreError::Closed),
                (Err(e), _) => Err(e),
            };
            match result {
                Ok(p) => {
                    {
                        let mut st = self.st.borrow_mut();
                        for op in p.ops {
                            st.index.apply(op);
                        }
                        st.applied = LogPos {
                            segment: p.at.segment,
                            offset: p.at.offset + p.total,
                            seq: p.at.seq + 1,
                        };
                        st.logged_since_checkpoint += p.total;
                    }
                    for w in batch {
                        let _ = w.done.send(Ok(()));
                    }
                }
                Err(e) => {
                    warn!(partition = self.id, error = %e, records = batch.len(), "batch failed");
                    for w in batch {
                        let _ = w.done.send(Err(e.duplicate()));
                    }
                }
            }
        }
    }

    fn pending_bytes(&self) -> u64 {
        self.st
            .borrow()
            .pending
            .iter()
            .map(|p| p.payload.as_ref().map_or(0, |d| d.len() as u64))
            .sum()
    }

    /// Never write after a failed batch in the same segment: the next batch starts a new
    /// segment, so replay cannot mistake leftovers for records.
    fn seal(&self, segment: u64) {
        let mut st = self.st.borrow_mut();
        if st.head.as_ref().is_some_and(|h| h.id == segment) {
            st.head = None;
        }
    }

    fn take_batch(&self) -> Vec<Pending> {
        let mut st = self.st.borrow_mut();
        let max = self.cfg.max_batch();
        let mut bytes = BLOCK as u64;
        let mut n = 0;
        for p in &st.pending {
            let need = RECORD_HEADER_LEN as u64
                + 4 * p.crcs.len() as u64
                + p.payload
                    .as_ref()
                    .map_or(0, |d| payload_disk_len(d.len() as u64));
            if n > 0 && (bytes + need + BLOCK as u64 > max || n >= MAX_BATCH_RECORDS) {
                break;
            }
            bytes += need;
            n += 1;
        }
        st.pending.drain(..n).collect()
    }

    /// Lays out one batch and claims its place (and sequence number) at the log head.
    /// Runs in sequence order; the write itself ([`persist`]) may overlap others.
    async fn prepare(&self, batch: &[Pending]) -> Result<Prepared> {
        let nonce = self.cfg.nonce;
        // Layout.
        let meta_used = BATCH_HEADER_LEN
            + batch
                .iter()
                .map(|p| RECORD_HEADER_LEN + 4 * p.crcs.len())
                .sum::<usize>();
        // Small payloads right after the record headers, in the metadata blocks; the
        // others each from a block boundary after them.
        let mut packed = meta_used as u64;
        for p in batch {
            if let Some(d) = p.payload.as_ref().filter(|d| is_packed(d.len() as u64)) {
                packed += d.len() as u64;
            }
        }
        let meta_len = align_up(packed);
        let (mut packed, mut cursor) = (meta_used as u64, meta_len);
        let mut headers = Vec::with_capacity(batch.len());
        for p in batch {
            let mut h = p.header;
            if let Some(d) = &p.payload {
                h.crc_count = p.crcs.len() as u32;
                let len = d.len() as u64;
                if is_packed(len) {
                    h.payload_off = packed as u32;
                    packed += len;
                } else {
                    h.payload_off = cursor as u32;
                    cursor += payload_disk_len(len);
                }
            }
            headers.push(h);
        }
        let total = cursor;
        // Writes leave a reserve of free space so that removes, discards, compaction and
        // checkpoints, which give space back, still run on a full disk.
        let use_reserve = batch
            .iter()
            .all(|p| p.header.kind != RecordKind::Write as u8);
        let (head_id, file, pos, seq) = self.reserve(total, use_reserve).await?;

        let mut buf = file.alloc_dma_buffer(total as usize);
        let bytes = buf.as_bytes_mut();
        let mut off = BATCH_HEADER_LEN;
        for (h, p) in headers.iter().zip(batch) {
            bytes[off..off + RECORD_HEADER_LEN].copy_from_slice(bytemuck::bytes_of(h));
            off += RECORD_HEADER_LEN;
            let c: &[u8] = bytemuck::cast_slice(&p.crcs);
            bytes[off..off + c.len()].copy_from_slice(c);
            off += c.len();
        }
        bytes[off..meta_len as usize].fill(0);
        let meta_crc = crc(nonce, &bytes[BATCH_HEADER_LEN..meta_used]);
        let bh = BatchHeader {
            magic: BATCH_MAGIC,
            format_version: FORMAT_VERSION,
            partition: self.id,
            record_count: batch.len() as u32,
            seq,
            meta_len: meta_len as u32,
            meta_used: meta_used as u32,
            total_len: total,
            meta_crc,
            ..bytemuck::Zeroable::zeroed()
        }
        .seal(nonce);
        bytes[..BATCH_HEADER_LEN].copy_from_slice(bytemuck::bytes_of(&bh));
        for (h, p) in headers.iter().zip(batch) {
            if let Some(d) = &p.payload {
                let s = h.payload_off as usize;
                bytes[s..s + d.len()].copy_from_slice(d);
                // Packed payloads sit in the zeroed meta region and take no padding;
                // the others pad to their block.
                bytes[s + d.len()..s + payload_disk_len(d.len() as u64) as usize].fill(0);
            }
        }

        let at = LogPos {
            segment: head_id,
            offset: pos,
            seq,
        };
        let ops = headers
            .iter()
            .zip(batch)
            .map(|(h, p)| to_index_op(h, head_id, pos, p.crcs.clone()))
            .collect();
        Ok(Prepared {
            at,
            total,
            ops,
            file,
            pos,
            buf: Cell::new(Some(buf)),
        })
    }

    /// Finds room for `total` bytes at the log head, starting a new segment if needed.
    async fn reserve(&self, total: u64, use_reserve: bool) -> Result<(u64, Rc<DmaFile>, u64, u64)> {
        {
            let mut st = self.st.borrow_mut();
            let seq = st.next_seq;
            if let Some(h) = st.head.as_mut() {
                if h.pos + total <= self.cfg.segment_size {
                    let r = (h.id, h.file.clone(), h.pos, seq);
                    h.pos += total;
                    st.next_seq += 1;
                    return Ok(r);
                }
            }
            st.head = None;
        }
        let (id, seq) = {
            let mut st = self.st.borrow_mut();
            let id = st.next_segment;
            st.next_segment += 1;
            (id, st.next_seq)
        };
        if !use_reserve {
            let (_, avail) = crate::store::fs_space(&self.dir);
            if avail < self.cfg.reserve_segments * self.cfg.segment_size {
                return Err(StoreError::NoSpace {
                    what: format!(
                        "a new segment (keeping {} segments free for compaction)",
                        self.cfg.reserve_segments
                    ),
                });
            }
        }
        let file = self.create_segment(id, seq).await?;
        let mut st = self.st.borrow_mut();
        st.segments.insert(id, file.clone());
        st.index.track_segment(id);
        st.stats.segments += 1;
        let pos = BLOCK as u64;
        st.head = Some(Head {
            id,
            file: file.clone(),
            pos: pos + total,
        });
        st.next_seq += 1;
        Ok((id, file, pos, seq))
    }

    async fn create_segment(&self, id: u64, first_seq: u64) -> Result<Rc<DmaFile>> {
        let path = self.dir.join(seg_name(id));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .dma_open(&path)
            .await
            .map_err(|e| from_glommio(format!("creating {}", path.display()), e))?;
        let cleanup = |path: &Path| {
            let _ = std::fs::remove_file(path);
        };
        if let Err(e) = file.pre_allocate(self.cfg.segment_size, false).await {
            cleanup(&path);
            return Err(from_glommio("preallocating segment", e));
        }
        let hdr = SegmentHeader {
            magic: SEGMENT_MAGIC,
            format_version: FORMAT_VERSION,
            partition: self.id,
            segment_id: id,
            first_seq,
            ..bytemuck::Zeroable::zeroed()
        }
        .seal(self.cfg.nonce);
        let mut buf = file.alloc_dma_buffer(BLOCK);
        buf.as_bytes_mut().fill(0);
        buf.as_bytes_mut()[..std::mem::size_of::<SegmentHeader>()]
            .copy_from_slice(bytemuck::bytes_of(&hdr));
        if let Err(e) = file.write_at(buf, 0).await.and_then(|n| {
            if n == BLOCK {
                Ok(())
            } else {
                Err(glommio::GlommioError::from(std::io::Error::from(
                    std::io::ErrorKind::WriteZero,
                )))
            }
        }) {
            cleanup(&path);
            return Err(from_glommio("writing segment header", e));
        }
        // The header becomes durable with the segment's first batch (same fdatasync); the
        // directory entry needs its own sync.
        sync_dir(&self.dir)?;
        Ok(Rc::new(file))
    }

    // ---------------------------------------------------------------- reads

    /// Reads `len` bytes at `offset` of the object; holes read as zeros. Every byte
    /// returned was verified against its CRC32C.
    pub async fn read(&self, oid: u64, offset: u64, len: u64) -> Result<(Vec<u8>, ObjectInfo)> {
        if len > MAX_IO {
            return Err(StoreError::OutOfRange(format!(
                "read of {len} bytes exceeds the {MAX_IO}-byte limit"
            )));
        }
        let (pieces, files, info) = {
            let st = self.st.borrow();
            let obj = st
                .index
                .objects
                .get(&oid)
                .ok_or(StoreError::NotFound(oid))?;
            match offset.checked_add(len) {
                Some(end) if end <= obj.size => {}
                _ => {
                    return Err(StoreError::OutOfRange(format!(
                        "read {offset}+{len} past the end of object {oid:#018x} ({} bytes)",
                        obj.size
                    )))
                }
            }
            let pieces = obj.pieces(offset, len);
            let files: Vec<Option<Rc<DmaFile>>> = pieces
                .iter()
                .map(|p| match p {
                    Piece::Data { rec, .. } => st.segments.get(&rec.segment).cloned(),
                    Piece::Hole { .. } => None,
                })
                .collect();
            let info = ObjectInfo {
                oid,
                size: obj.size,
                used: 0,
                version: obj.version,
                epoch: obj.epoch,
            };
            (pieces, files, info)
        };
        let mut out = vec![0u8; len as usize];
        let mut jobs = Vec::new();
        let mut rest: &mut [u8] = &mut out;
        let mut at = offset;
        for (p, f) in pieces.iter().zip(files) {
            let (dst, tail) = std::mem::take(&mut rest).split_at_mut(p.len() as usize);
            rest = tail;
            if let Piece::Data { len, rec, skip } = p {
                let file = f.ok_or_else(|| {
                    StoreError::io("segment vanished", std::io::ErrorKind::NotFound.into())
                })?;
                jobs.push(self.read_piece(file, rec.clone(), *skip, *len, oid, at, dst));
            }
            at += p.len();
        }
        for r in futures::future::join_all(jobs).await {
            r?;
        }
        Ok((out, info))
    }

    #[allow(clippy::too_many_arguments)]
    async fn read_piece(
        &self,
        file: Rc<DmaFile>,
        rec: Rc<RecordLoc>,
        skip: u64,
        len: u64,
        oid: u64,
        obj_off: u64,
        dst: &mut [u8],
    ) -> Result<()> {
        let (start, end) = piece_span(&rec, skip, len);
        let data = read_span(&file, start, end).await?;
        self.check_piece(&data, &rec, skip, len, oid, obj_off, dst)
    }

    /// Checks the CRC32C chunks of `len` bytes at `skip` of record `rec`, given `data`:
    /// the segment's bytes from the first of those chunks on (as [`piece_span`] says),
    /// and copies the bytes into `dst`.
    #[allow(clippy::too_many_arguments)]
    fn check_piece(
        &self,
        data: &[u8],
        rec: &RecordLoc,
        skip: u64,
        len: u64,
        oid: u64,
        obj_off: u64,
        dst: &mut [u8],
    ) -> Result<()> {
        let c0 = skip / CRC_CHUNK as u64;
        let c1 = (skip + len).div_ceil(CRC_CHUNK as u64);
        for c in c0..c1 {
            let chunk_len = (rec.len - c * CRC_CHUNK as u64).min(CRC_CHUNK as u64) as usize;
            let s = ((c - c0) * CRC_CHUNK as u64) as usize;
            let ok = data.len() >= s + chunk_len
                && crc(self.cfg.nonce, &data[s..s + chunk_len]) == rec.crcs[c as usize];
            if !ok {
                self.st.borrow_mut().stats.checksum_errors += 1;
                let bad_at = obj_off + (c * CRC_CHUNK as u64).saturating_sub(skip);
                warn!(
                    partition = self.id,
                    oid = format_args!("{oid:#018x}"),
                    offset = bad_at,
                    segment = rec.segment,
                    "checksum mismatch"
                );
                return Err(StoreError::Checksum {
                    oid,
                    offset: bad_at,
                    segment: rec.segment,
                });
            }
        }
        let from = (skip - c0 * CRC_CHUNK as u64) as usize;
        dst.copy_from_slice(&data[from..from + len as usize]);
        Ok(())
    }

    /// Data and hole ranges of `[offset, offset+len)` (for NBD block status).
    pub fn extents(&self, oid: u64, offset: u64, len: u64) -> Result<Vec<(u64, bool)>> {
        let st = self.st.borrow();
        let obj = st
            .index
            .objects
            .get(&oid)
            .ok_or(StoreError::NotFound(oid))?;
        let end = offset.checked_add(len).filter(|&e| e <= obj.size);
        if end.is_none() {
            return Err(StoreError::OutOfRange(format!(
                "range {offset}+{len} outside object {oid:#018x}"
            )));
        }
        Ok(obj
            .pieces(offset, len)
            .iter()
            .map(|p| (p.len(), matches!(p, Piece::Data { .. })))
            .collect())
    }

    pub fn stat(&self, oid: u64) -> Option<ObjectInfo> {
        let st = self.st.borrow();
        st.index.objects.get(&oid).map(|o| ObjectInfo {
            oid,
            size: o.size,
            used: o.used(),
            version: o.version,
            epoch: o.epoch,
        })
    }

    pub fn list(&self) -> Vec<u64> {
        self.st.borrow().index.objects.keys().copied().collect()
    }

    pub fn stats(&self) -> PartitionStats {
        let st = self.st.borrow();
        let mut s = st.stats;
        s.segments = st.segments.len() as u64;
        s.segment_bytes = st.segments.keys().count() as u64 * self.cfg.segment_size;
        s.live_bytes = st.index.live.values().sum();
        s.objects = st.index.objects.len() as u64;
        s
    }

    // ---------------------------------------------------------------- maintenance

    /// Writes a checkpoint of the index as of the last applied batch. Returns the
    /// segments that hold nothing live in that snapshot: once it is durable, nothing
    /// refers to them any more and they may be deleted.
    pub async fn write_checkpoint(&self) -> Result<Vec<u64>> {
        let _guard = self
            .ckpt_lock
            .acquire_permit(1)
            .await
            .map_err(|_| StoreError::Closed)?;
        let (bytes, pos, dead) = {
            let st = self.st.borrow();
            let head = st.head.as_ref().map(|h| h.id);
            let dead: Vec<u64> = st
                .index
                .live
                .iter()
                .filter(|(&s, &l)| l == 0 && s < st.applied.segment && Some(s) != head)
                .map(|(&s, _)| s)
                .collect();
            (
                checkpoint::encode(&st.index, self.id, st.applied, self.cfg.nonce),
                st.applied,
                dead,
            )
        };
        checkpoint::store(&self.dir, &bytes).await?;
        let mut st = self.st.borrow_mut();
        st.checkpoint = pos;
        st.logged_since_checkpoint = 0;
        st.stats.checkpoints += 1;
        Ok(dead)
    }

    /// Waits until every queued record is durable.
    pub async fn drain(&self) {
        while self.flushing.get() {
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Background work: checkpoint when the log grew, compact sparse segments, delete
    /// dead ones. Runs in the shard's low-priority queue; returns quickly when idle.
    pub async fn maintain(self: &Rc<Self>) -> Result<()> {
        if self.maintaining.replace(true) {
            return Ok(());
        }
        let r = self.maintain_inner().await;
        self.maintaining.set(false);
        r
    }

    async fn maintain_inner(self: &Rc<Self>) -> Result<()> {
        let (need_ckpt, victims) = {
            let st = self.st.borrow();
            let head = st.head.as_ref().map(|h| h.id);
            let seg_size = self.cfg.segment_size as f64;
            // Only segments wholly before the checkpoint: their records are never replayed,
            // so dropping them cannot resurrect anything a later discard or remove killed.
            let mut cands: Vec<(u64, u64)> = st
                .index
                .live
                .iter()
                .filter(|(&s, _)| {
                    s < st.checkpoint.segment && Some(s) != head && !st.stuck.contains(&s)
                })
                .filter(|(_, &l)| (l as f64) < seg_size * self.cfg.compact_below)
                .map(|(&s, &l)| (l, s))
                .collect();
            cands.sort_unstable();
            // Bound the space compaction needs: copy at most half a segment per round.
            let mut budget = self.cfg.segment_size / 2;
            let victims: Vec<u64> = cands
                .into_iter()
                .take_while(|(l, _)| {
                    let ok = *l <= budget;
                    budget = budget.saturating_sub(*l);
                    ok
                })
                .map(|(_, s)| s)
                .collect();
            let dead_after_ckpt = st.index.live.iter().any(|(&s, &l)| {
                l == 0 && s >= st.checkpoint.segment && s < st.applied.segment && Some(s) != head
            });
            let need = st.logged_since_checkpoint >= self.cfg.checkpoint_every || dead_after_ckpt;
            (need, victims)
        };
        if victims.is_empty() && !need_ckpt {
            return Ok(());
        }
        // A failed relocation (say, no space for the copies) must not stop the segments
        // that are already empty from being reclaimed below: that is how a full disk
        // gets space back.
        let mut relocation_error = None;
        for &seg in &victims {
            if let Err(e) = self.relocate_segment(seg).await {
                relocation_error = Some(e);
                break;
            }
            glommio::yield_if_needed().await;
        }
        if self.cfg.nosync {
            // Without per-batch flushes the copies are not yet durable: flush the segments
            // they went to before the sources can be deleted.
            let tail: Vec<Rc<DmaFile>> = {
                let st = self.st.borrow();
                st.segments
                    .range(st.checkpoint.segment..)
                    .map(|(_, f)| f.clone())
                    .collect()
            };
            for f in tail {
                f.fdatasync()
                    .await
                    .map_err(|e| from_glommio("flushing relocated data", e))?;
            }
        }
        // Relocations are durable; make a checkpoint that no longer needs the victims.
        let dead_in_snapshot = self.write_checkpoint().await?;
        let dead: Vec<(u64, Rc<DmaFile>)> = {
            let mut st = self.st.borrow_mut();
            dead_in_snapshot
                .into_iter()
                .filter_map(|s| {
                    st.index.live.remove(&s);
                    st.segments.remove(&s).map(|f| (s, f))
                })
                .collect()
        };
        for (s, _f) in &dead {
            std::fs::remove_file(self.dir.join(seg_name(*s)))
                .map_err(|e| StoreError::io(format!("removing segment {s}"), e))?;
        }
        if !dead.is_empty() {
            sync_dir(&self.dir)?;
            self.st.borrow_mut().stats.compacted_segments += dead.len() as u64;
            info!(partition = self.id, segments = dead.len(), "compacted");
        }
        relocation_error.map_or(Ok(()), Err)
    }

    /// Copies every live extent of `seg` to the log head as Relocate records. A segment
    /// worth compacting is mostly dead and what lives in it is often small (4 KiB
    /// writes, 32-byte fragment header entries), so extents are read in segment order,
    /// many per disk request ([`RELOCATE_WINDOW`]), and a window's copies are queued
    /// together so they share a batch of the log.
    async fn relocate_segment(self: &Rc<Self>, seg: u64) -> Result<()> {
        let mut extents: Vec<(u64, u64, u64, Rc<RecordLoc>, u64)> = {
            let st = self.st.borrow();
            st.index
                .objects
                .iter()
                .flat_map(|(&oid, o)| {
                    o.extents()
                        .iter()
                        .filter(|(_, e)| e.rec.segment == seg)
                        .map(move |(&s, e)| (oid, s, e.len, e.rec.clone(), e.skip))
                })
                .collect()
        };
        let file = match self.st.borrow().segments.get(&seg) {
            Some(f) => f.clone(),
            None => return Ok(()),
        };
        let span = |e: &(u64, u64, u64, Rc<RecordLoc>, u64)| piece_span(&e.3, e.4, e.2);
        extents.sort_by_key(|e| span(e).0);
        let mut i = 0;
        while i < extents.len() {
            // Extents i..j: each starts within RELOCATE_GAP of the window so far, and
            // the window stays within RELOCATE_WINDOW (one extent may exceed it alone).
            let (w0, mut w1) = span(&extents[i]);
            let mut j = i + 1;
            while let Some(e) = extents.get(j) {
                let (a, b) = span(e);
                if a > w1 + RELOCATE_GAP || b.max(w1) - w0 > RELOCATE_WINDOW {
                    break;
                }
                w1 = w1.max(b);
                j += 1;
            }
            // A window the disk cannot read is read extent by extent, so that only
            // the damaged ones stay behind.
            let window = read_span(&file, w0, w1).await.ok();
            let mut copies = Vec::new();
            for (oid, start, len, rec, skip) in &extents[i..j] {
                let (oid, start, len, skip) = (*oid, *start, *len, *skip);
                let mut data = vec![0u8; len as usize];
                let read = match &window {
                    Some(w) => {
                        let at = (piece_span(rec, skip, len).0 - w0) as usize;
                        let bytes = w.get(at..).unwrap_or_default();
                        self.check_piece(bytes, rec, skip, len, oid, start, &mut data)
                    }
                    None => {
                        self.read_piece(file.clone(), rec.clone(), skip, len, oid, start, &mut data)
                            .await
                    }
                };
                // A chunk that fails its CRC stays where it is (and keeps its segment
                // alive): moving it would launder corrupt bytes into a fresh CRC.
                if read.is_err() {
                    self.st.borrow_mut().stuck.insert(seg);
                    continue;
                }
                let Some(info) = self.stat(oid) else { continue };
                let h = RecordHeader {
                    oid,
                    offset: start,
                    version: info.version,
                    src_segment: rec.segment,
                    src_payload_pos: rec.payload_pos,
                    object_size: info.size as u32,
                    epoch: info.epoch,
                    kind: RecordKind::Relocate as u8,
                    ..bytemuck::Zeroable::zeroed()
                };
                copies.extend(self.submit_split(h, &data));
            }
            for r in futures::future::join_all(copies).await {
                r?;
            }
            i = j;
        }
        Ok(())
    }

    /// Flushes, checkpoints and closes (clean shutdown).
    pub async fn close(&self) -> Result<()> {
        self.drain().await;
        self.write_checkpoint().await?;
        let files: Vec<Rc<DmaFile>> = {
            let mut st = self.st.borrow_mut();
            st.head = None;
            std::mem::take(&mut st.segments).into_values().collect()
        };
        for f in files {
            if let Ok(f) = Rc::try_unwrap(f) {
                let _ = f.close().await;
            }
        }
        Ok(())
    }
}

/// A laid-out batch with its place in the log.
struct Prepared {
    at: LogPos,
    total: u64,
    ops: Vec<IndexOp>,
    file: Rc<DmaFile>,
    pos: u64,
    buf: Cell<Option<glommio::io::DmaBuffer>>,
}

/// Writes a laid-out batch and flushes it (unless `nosync`).
async fn persist(
    file: &DmaFile,
    buf: Option<glommio::io::DmaBuffer>,
    pos: u64,
    total: u64,
    nosync: bool,
) -> Result<()> {
    let Some(buf) = buf else {
        return Err(StoreError::Closed);
    };
    let n = file
        .write_at(buf, pos)
        .await
        .map_err(|e| from_glommio("writing batch", e))?;
    if n as u64 != total {
        return Err(StoreError::io(
            "short batch write",
            std::io::ErrorKind::WriteZero.into(),
        ));
    }
    if !nosync {
        file.fdatasync()
            .await
            .map_err(|e| from_glommio("flushing batch", e))?;
    }
    Ok(())
}

fn to_index_op(h: &RecordHeader, segment: u64, batch_pos: u64, crcs: Vec<u32>) -> IndexOp {
    let kind = RecordKind::from_u8(h.kind);
    let rec = || {
        Rc::new(RecordLoc {
            segment,
            payload_pos: batch_pos + h.payload_off as u64,
            len: h.len as u64,
            crcs: crcs.clone().into_boxed_slice(),
        })
    };
    match kind {
        Some(RecordKind::Write) => IndexOp::Write {
            oid: h.oid,
            object_size: h.object_size as u64,
            offset: h.offset,
            len: h.len as u64,
            version: h.version,
            epoch: h.epoch,
            rec: rec(),
        },
        Some(RecordKind::Discard) => IndexOp::Discard {
            oid: h.oid,
            object_size: h.object_size as u64,
            offset: h.offset,
            len: h.len as u64,
            version: h.version,
            epoch: h.epoch,
        },
        Some(RecordKind::Relocate) => IndexOp::Relocate {
            oid: h.oid,
            offset: h.offset,
            len: h.len as u64,
            src: (h.src_segment, h.src_payload_pos),
            rec: rec(),
        },
        Some(RecordKind::Remove) | None => IndexOp::Remove { oid: h.oid },
    }
}

/// Reads and validates the batch at `pos`; `None` ends the segment's log.
async fn scan_batch(
    file: &DmaFile,
    segment: u64,
    pos: u64,
    seq: u64,
    file_len: u64,
    partition: u32,
    nonce: u32,
) -> Option<(Vec<IndexOp>, u64)> {
    if pos + BLOCK as u64 > file_len {
        return None;
    }
    let first = read_exact(file, pos, BLOCK, "scanning log").await.ok()?;
    let bh: BatchHeader = bytemuck::pod_read_unaligned(&first[..BATCH_HEADER_LEN]);
    let sane = bh.magic == BATCH_MAGIC
        && bh.crc_ok(nonce)
        && bh.format_version == FORMAT_VERSION
        && bh.partition == partition
        && bh.seq == seq
        && bh.meta_used as usize >= BATCH_HEADER_LEN
        && (bh.meta_len as u64).is_multiple_of(BLOCK as u64)
        && bh.total_len.is_multiple_of(BLOCK as u64)
        && (bh.meta_used as u64) <= bh.meta_len as u64
        && bh.meta_len as u64 <= bh.total_len
        && pos.checked_add(bh.total_len).is_some_and(|e| e <= file_len);
    if !sane {
        return None;
    }
    let meta = if bh.meta_len as usize == BLOCK {
        first
    } else {
        read_exact(file, pos, bh.meta_len as usize, "scanning log")
            .await
            .ok()?
    };
    if crc(nonce, &meta[BATCH_HEADER_LEN..bh.meta_used as usize]) != bh.meta_crc {
        return None;
    }
    let mut ops = Vec::with_capacity(bh.record_count as usize);
    let mut off = BATCH_HEADER_LEN;
    for _ in 0..bh.record_count {
        let end = off + RECORD_HEADER_LEN;
        if end > bh.meta_used as usize {
            return None;
        }
        let h: RecordHeader = bytemuck::pod_read_unaligned(&meta[off..end]);
        off = end;
        let kind = RecordKind::from_u8(h.kind)?;
        let n = h.crc_count as usize;
        if kind.has_payload() {
            let (at, len) = (h.payload_off as u64, h.len as u64);
            let placed = if is_packed(len) {
                at >= bh.meta_used as u64 && at + len <= bh.meta_len as u64
            } else {
                at.is_multiple_of(BLOCK as u64)
                    && at >= bh.meta_len as u64
                    && at + len <= bh.total_len
            };
            if n as u64 != crc_count(len) || !placed {
                return None;
            }
        } else if n != 0 {
            return None;
        }
        let cend = off + 4 * n;
        if cend > bh.meta_used as usize {
            return None;
        }
        let crcs: Vec<u32> = meta[off..cend]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        off = cend;
        ops.push(to_index_op(&h, segment, pos, crcs));
    }
    Some((ops, bh.total_len))
}

/// Looks for a valid batch header with a sequence number of at least `min_seq`
/// anywhere in `[from, file_len)`; returns its offset.
async fn later_batch(
    file: &DmaFile,
    from: u64,
    min_seq: u64,
    file_len: u64,
    partition: u32,
    nonce: u32,
) -> Option<u64> {
    const CHUNK: u64 = 1 << 20;
    let mut at = from;
    while at < file_len {
        let len = CHUNK.min(file_len - at) as usize;
        let buf = file.read_at_aligned(at, len).await.ok()?;
        for (i, block) in buf.chunks(BLOCK).enumerate() {
            if block.len() < BATCH_HEADER_LEN {
                break;
            }
            let bh: BatchHeader = bytemuck::pod_read_unaligned(&block[..BATCH_HEADER_LEN]);
            if bh.magic == BATCH_MAGIC
                && bh.partition == partition
                && bh.seq >= min_seq
                && bh.crc_ok(nonce)
            {
                return Some(at + (i * BLOCK) as u64);
            }
        }
        if buf.len() < len {
            break;
        }
        at += len as u64;
        glommio::yield_if_needed().await;
    }
    None
}

/// True if every payload chunk of the batch's records matches its CRC.
async fn payloads_ok(file: &DmaFile, ops: &[IndexOp], nonce: u32) -> bool {
    for op in ops {
        let rec = match op {
            IndexOp::Write { rec, .. } | IndexOp::Relocate { rec, .. } => rec,
            _ => continue,
        };
        if rec.len == 0 {
            continue;
        }
        let Ok(data) = read_span(file, rec.payload_pos, rec.payload_pos + rec.len).await else {
            return false;
        };
        if data.len() < rec.len as usize {
            return false;
        }
        let good = data[..rec.len as usize]
            .chunks(CRC_CHUNK)
            .zip(rec.crcs.iter())
            .all(|(c, &want)| crc(nonce, c) == want);
        if !good {
            return false;
        }
    }
    true
}
