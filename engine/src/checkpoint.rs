//! Checkpoints: a full snapshot of a partition's index at a log position, so opening a
//! partition replays only the log after it, and compaction may delete segments before it.
//! Written to `checkpoint.tmp`, flushed, then renamed over `checkpoint` (atomic).

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use glommio::io::OpenOptions;

use crate::error::{from_glommio, Result, StoreError};
use crate::format::*;
use crate::index::{Extent, Index, ObjectIndex, RecordLoc};
use crate::partition::{sync_dir, LogPos};

const FILE: &str = "checkpoint";
const TMP: &str = "checkpoint.tmp";

/// Serializes `index` (header + body, padded to BLOCK).
pub fn encode(index: &Index, partition: u32, pos: LogPos, nonce: u32) -> Vec<u8> {
    let mut recs: HashMap<*const RecordLoc, u32> = HashMap::new();
    let mut rec_body = Vec::new();
    let mut obj_body = Vec::new();
    let mut nrec = 0u64;
    for (&oid, o) in &index.objects {
        obj_body.extend_from_slice(&oid.to_le_bytes());
        obj_body.extend_from_slice(&o.size.to_le_bytes());
        obj_body.extend_from_slice(&o.version.to_le_bytes());
        obj_body.extend_from_slice(&o.epoch.to_le_bytes());
        obj_body.extend_from_slice(&(o.extents().len() as u32).to_le_bytes());
        for (&start, e) in o.extents() {
            let idx = *recs.entry(Rc::as_ptr(&e.rec)).or_insert_with(|| {
                rec_body.extend_from_slice(&e.rec.segment.to_le_bytes());
                rec_body.extend_from_slice(&e.rec.payload_pos.to_le_bytes());
                rec_body.extend_from_slice(&e.rec.len.to_le_bytes());
                rec_body.extend_from_slice(&(e.rec.crcs.len() as u32).to_le_bytes());
                for c in e.rec.crcs.iter() {
                    rec_body.extend_from_slice(&c.to_le_bytes());
                }
                nrec += 1;
                (nrec - 1) as u32
            });
            obj_body.extend_from_slice(&start.to_le_bytes());
            obj_body.extend_from_slice(&e.len.to_le_bytes());
            obj_body.extend_from_slice(&idx.to_le_bytes());
            obj_body.extend_from_slice(&e.skip.to_le_bytes());
        }
    }
    let mut body = rec_body;
    body.extend_from_slice(&obj_body);
    let hdr = CheckpointHeader {
        magic: CHECKPOINT_MAGIC,
        format_version: FORMAT_VERSION,
        partition,
        log_segment: pos.segment,
        log_offset: pos.offset,
        next_seq: pos.seq,
        body_len: body.len() as u64,
        object_count: index.objects.len() as u64,
        record_count: nrec,
        body_crc: crc(nonce, &body),
        ..bytemuck::Zeroable::zeroed()
    }
    .seal(nonce);
    let mut out = Vec::with_capacity(align_up((BLOCK + body.len()) as u64) as usize);
    out.extend_from_slice(bytemuck::bytes_of(&hdr));
    out.resize(BLOCK, 0);
    out.extend_from_slice(&body);
    out.resize(align_up(out.len() as u64) as usize, 0);
    out
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.buf.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
    }
}

/// Parses a checkpoint file's bytes; `None` if anything is off.
pub fn decode(bytes: &[u8], partition: u32, nonce: u32) -> Option<(Index, LogPos)> {
    let hdr: CheckpointHeader =
        bytemuck::pod_read_unaligned(bytes.get(..std::mem::size_of::<CheckpointHeader>())?);
    if hdr.magic != CHECKPOINT_MAGIC
        || !hdr.crc_ok(nonce)
        || hdr.format_version != FORMAT_VERSION
        || hdr.partition != partition
    {
        return None;
    }
    let body = bytes.get(BLOCK..BLOCK.checked_add(usize::try_from(hdr.body_len).ok()?)?)?;
    if crc(nonce, body) != hdr.body_crc {
        return None;
    }
    let mut r = Reader { buf: body, at: 0 };
    let mut recs = Vec::new();
    for _ in 0..hdr.record_count {
        let segment = r.u64()?;
        let payload_pos = r.u64()?;
        let len = r.u64()?;
        let n = r.u32()? as usize;
        if n as u64 != crc_count(len) {
            return None;
        }
        let crcs: Vec<u32> = r
            .take(n.checked_mul(4)?)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        recs.push(Rc::new(RecordLoc {
            segment,
            payload_pos,
            len,
            crcs: crcs.into(),
        }));
    }
    let mut index = Index::default();
    for _ in 0..hdr.object_count {
        let oid = r.u64()?;
        let (size, version, epoch) = (r.u64()?, r.u64()?, r.u32()?);
        let mut o = ObjectIndex::new(size, version, epoch);
        let n = r.u32()?;
        for _ in 0..n {
            let start = r.u64()?;
            let len = r.u64()?;
            let rec = recs.get(r.u32()? as usize)?.clone();
            let skip = r.u64()?;
            if skip.checked_add(len)? > rec.len || start.checked_add(len)? > o.size {
                return None;
            }
            let e = Extent { len, rec, skip };
            let (seg, weight) = (e.rec.segment, e.footprint());
            if !o.load(start, e) {
                return None;
            }
            *index.live.entry(seg).or_default() += weight;
        }
        index.objects.insert(oid, o);
    }
    Some((
        index,
        LogPos {
            segment: hdr.log_segment,
            offset: hdr.log_offset,
            seq: hdr.next_seq,
        },
    ))
}

/// Loads `dir/checkpoint`: `Ok(None)` if there is none yet, an error if it is corrupt
/// (segments it covers may already be compacted away, so replaying without it could
/// silently lose data).
pub fn load(dir: &Path, partition: u32, nonce: u32) -> Result<Option<(Index, LogPos)>> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(format!("reading {}", path.display()), e)),
    };
    decode(&bytes, partition, nonce)
        .map(Some)
        .ok_or_else(|| StoreError::Incompatible {
            dir: dir.display().to_string(),
            why: "checkpoint is corrupt".into(),
        })
}

/// Durably replaces `dir/checkpoint` with `bytes` (already BLOCK-padded).
pub async fn store(dir: &Path, bytes: &[u8]) -> Result<()> {
    debug_assert_eq!(bytes.len() % BLOCK, 0);
    let tmp = dir.join(TMP);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(&tmp)
        .await
        .map_err(|e| from_glommio("creating checkpoint", e))?;
    let mut buf = file.alloc_dma_buffer(bytes.len());
    buf.as_bytes_mut().copy_from_slice(bytes);
    let n = file
        .write_at(buf, 0)
        .await
        .map_err(|e| from_glommio("writing checkpoint", e))?;
    if n != bytes.len() {
        return Err(StoreError::io(
            "short checkpoint write",
            std::io::ErrorKind::WriteZero.into(),
        ));
    }
    file.fdatasync()
        .await
        .map_err(|e| from_glommio("flushing checkpoint", e))?;
    file.close()
        .await
        .map_err(|e| from_glommio("closing checkpoint", e))?;
    std::fs::rename(&tmp, dir.join(FILE))
        .map_err(|e| StoreError::io("installing checkpoint", e))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::IndexOp;

    #[test]
    fn round_trip_and_corruption() {
        let mut ix = Index::default();
        let r = Rc::new(RecordLoc {
            segment: 3,
            payload_pos: 8192,
            len: 5000,
            crcs: vec![1, 2].into(),
        });
        ix.apply(IndexOp::Write {
            oid: 1,
            object_size: 1 << 20,
            offset: 100,
            len: 5000,
            version: 4,
            epoch: 2,
            rec: r.clone(),
        });
        ix.apply(IndexOp::Discard {
            oid: 1,
            object_size: 1 << 20,
            offset: 200,
            len: 10,
            version: 5,
            epoch: 2,
        });
        let pos = LogPos {
            segment: 4,
            offset: 4096,
            seq: 9,
        };
        let bytes = encode(&ix, 7, pos, 42);
        let (back, p) = decode(&bytes, 7, 42).expect("decodes");
        assert_eq!(p, pos);
        assert_eq!(
            back.objects[&1].pieces(0, 6000),
            ix.objects[&1].pieces(0, 6000)
        );
        assert_eq!(back.objects[&1].version, 5);
        assert_eq!(back.live, ix.live);
        assert_eq!(back.live[&3], r.disk_bytes() - r.footprint(100, 110));
        assert_eq!(back.objects[&1].used(), 4990);
        assert!(decode(&bytes, 8, 42).is_none(), "wrong partition");
        let body_len = bytes.len() - BLOCK - bytes.iter().rev().take_while(|&&b| b == 0).count();
        for i in (0..96).chain(BLOCK..BLOCK + body_len) {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(decode(&bad, 7, 42).is_none(), "flip at {i} not detected");
        }
    }
}
