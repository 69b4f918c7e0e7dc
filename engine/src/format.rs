//! On-disk structures, byte by byte (see docs/store-format.md). Every header is a
//! fixed-size little-endian `#[repr(C)]` struct with a version and a CRC32C.

use bytemuck::{Pod, Zeroable};

// Headers are cast straight from/to bytes, which is little-endian only on little-endian
// machines. Refuse to build where that would silently write another format.
#[cfg(target_endian = "big")]
compile_error!(
    "collie's on-disk format is little-endian; big-endian targets need explicit conversion"
);

/// All direct I/O happens in units of this many bytes, at offsets that are multiples of it.
pub const BLOCK: usize = 4096;
/// A CRC32C covers this many bytes of a record's payload.
pub const CRC_CHUNK: usize = 4096;
/// Bumped on any incompatible change to anything in this file (2: small payloads are
/// packed into the batch's metadata blocks, [`INLINE_MAX`]).
pub const FORMAT_VERSION: u32 = 2;
/// A record payload shorter than this is packed, unaligned, into its batch's metadata
/// blocks after the record headers instead of taking a block of its own: an
/// erasure-coded fragment's 32-byte header entry (one per small write) would otherwise
/// cost a 4 KiB block, doubling what a small write puts on disk.
pub const INLINE_MAX: u64 = 1024;

/// True if a payload of `len` bytes is packed into its batch's metadata blocks.
pub const fn is_packed(len: u64) -> bool {
    len < INLINE_MAX
}

/// The segment bytes a payload of `len` bytes takes: itself if packed, else whole
/// blocks.
pub const fn payload_disk_len(len: u64) -> u64 {
    if is_packed(len) {
        len
    } else {
        align_up(len)
    }
}

pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"COLLIESB";
pub const SEGMENT_MAGIC: [u8; 8] = *b"COLLSEG1";
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"CLBH");
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"COLLCKPT";

/// Rounds `v` up to a multiple of [`BLOCK`].
pub const fn align_up(v: u64) -> u64 {
    (v + BLOCK as u64 - 1) & !(BLOCK as u64 - 1)
}

/// Rounds `v` down to a multiple of [`BLOCK`].
pub const fn align_down(v: u64) -> u64 {
    v & !(BLOCK as u64 - 1)
}

/// CRC32C with a seed: headers are seeded with the store nonce, so a block of user data
/// that happens to look like a header (same magic, valid plain CRC) still fails.
pub fn crc(seed: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(seed, bytes)
}

/// `DIR/superblock`: the first BLOCK bytes of the file; the rest of the block is zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct Superblock {
    pub magic: [u8; 8],
    pub format_version: u32,
    pub partition_count: u32,
    pub node_uuid: [u8; 16],
    pub created_unix: u64,
    pub segment_size: u64,
    pub reserved: [u8; 76],
    /// CRC32C (seed 0) of every byte before this field.
    pub crc: u32,
}

impl Superblock {
    pub fn seal(mut self) -> Self {
        self.crc = crc(0, &bytemuck::bytes_of(&self)[..SB_CRC_OFF]);
        self
    }
    pub fn crc_ok(&self) -> bool {
        self.crc == crc(0, &bytemuck::bytes_of(self)[..SB_CRC_OFF])
    }
    /// Seed for every other header's CRC: derived from the node uuid.
    pub fn nonce(&self) -> u32 {
        crc(0x636f_6c6c, &self.node_uuid)
    }
}
const SB_CRC_OFF: usize = std::mem::size_of::<Superblock>() - 4;

/// First BLOCK of every segment file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct SegmentHeader {
    pub magic: [u8; 8],
    pub format_version: u32,
    pub partition: u32,
    pub segment_id: u64,
    /// Sequence number the first batch in this segment must carry.
    pub first_seq: u64,
    pub reserved: [u8; 28],
    /// CRC32C, seeded with the store nonce, of every byte before this field.
    pub crc: u32,
}

impl SegmentHeader {
    pub fn seal(mut self, nonce: u32) -> Self {
        self.crc = crc(nonce, &bytemuck::bytes_of(&self)[..SEG_CRC_OFF]);
        self
    }
    pub fn crc_ok(&self, nonce: u32) -> bool {
        self.crc == crc(nonce, &bytemuck::bytes_of(self)[..SEG_CRC_OFF])
    }
}
const SEG_CRC_OFF: usize = std::mem::size_of::<SegmentHeader>() - 4;

/// Starts every batch (one group commit) at a BLOCK-aligned offset in a segment.
/// Layout of a batch: `BatchHeader`, then per record a `RecordHeader` followed by its
/// payload CRCs (`u32` each), the payloads shorter than [`INLINE_MAX`] back to back,
/// zero padding to BLOCK (the *meta region*, `meta_len` bytes), then the other
/// payloads, each starting BLOCK-aligned (the *payload region*).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct BatchHeader {
    pub magic: u32,
    pub format_version: u32,
    pub partition: u32,
    pub record_count: u32,
    pub seq: u64,
    /// Bytes of meta region, a multiple of BLOCK, including this header.
    pub meta_len: u32,
    /// Bytes of the meta region actually used (header + records + CRCs).
    pub meta_used: u32,
    /// Whole batch: meta region + payload region, a multiple of BLOCK.
    pub total_len: u64,
    /// CRC32C (seeded with the nonce) of meta bytes `[size_of::<BatchHeader>(), meta_used)`.
    pub meta_crc: u32,
    pub reserved: [u8; 16],
    /// CRC32C (seeded with the nonce) of every byte before this field.
    pub crc: u32,
}

impl BatchHeader {
    pub fn seal(mut self, nonce: u32) -> Self {
        self.crc = crc(nonce, &bytemuck::bytes_of(&self)[..BATCH_CRC_OFF]);
        self
    }
    pub fn crc_ok(&self, nonce: u32) -> bool {
        self.crc == crc(nonce, &bytemuck::bytes_of(self)[..BATCH_CRC_OFF])
    }
}
const BATCH_CRC_OFF: usize = std::mem::size_of::<BatchHeader>() - 4;

/// What a record does.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// Bytes `[offset, offset+len)` of the object are the payload.
    Write = 1,
    /// Bytes `[offset, offset+len)` become a hole (read as zeros, use no space).
    Discard = 2,
    /// The whole object is gone.
    Remove = 3,
    /// Compaction's copy of an older write: applies only where the index still points at
    /// `(src_segment, src_payload_pos)`, so it can never overwrite a newer write.
    Relocate = 4,
}

impl RecordKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Write,
            2 => Self::Discard,
            3 => Self::Remove,
            4 => Self::Relocate,
            _ => return None,
        })
    }
    pub fn has_payload(self) -> bool {
        matches!(self, Self::Write | Self::Relocate)
    }
}

/// One operation inside a batch.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct RecordHeader {
    pub oid: u64,
    /// Byte offset inside the object.
    pub offset: u64,
    /// Version the writer gave this write (newer writes carry larger versions).
    pub version: u64,
    /// Source location for `Relocate` records (segment id, payload position), else 0.
    pub src_payload_pos: u64,
    pub src_segment: u64,
    pub len: u32,
    /// Size of the object this record belongs to (fixed at the object's first write).
    pub object_size: u32,
    pub epoch: u32,
    /// Offset of the payload from the start of the batch (BLOCK-aligned in the payload
    /// region, or packed in the meta region if shorter than [`INLINE_MAX`]), 0 if none.
    pub payload_off: u32,
    /// Number of `u32` CRCs that follow: one per [`CRC_CHUNK`] of payload.
    pub crc_count: u32,
    pub kind: u8,
    pub reserved: [u8; 3],
}

pub const BATCH_HEADER_LEN: usize = std::mem::size_of::<BatchHeader>();
pub const RECORD_HEADER_LEN: usize = std::mem::size_of::<RecordHeader>();

/// Number of payload CRCs for a payload of `len` bytes.
pub const fn crc_count(len: u64) -> u64 {
    len.div_ceil(CRC_CHUNK as u64)
}

/// CRCs of each [`CRC_CHUNK`] of `payload` (the last one may be shorter).
pub fn payload_crcs(nonce: u32, payload: &[u8]) -> Vec<u32> {
    payload.chunks(CRC_CHUNK).map(|c| crc(nonce, c)).collect()
}

/// Header of `partitions/NNNN/checkpoint`: a full snapshot of the partition's index, valid
/// up to a log position. Body layout in docs/store-format.md.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct CheckpointHeader {
    pub magic: [u8; 8],
    pub format_version: u32,
    pub partition: u32,
    /// Replay resumes at this segment and offset with this batch sequence number.
    pub log_segment: u64,
    pub log_offset: u64,
    pub next_seq: u64,
    pub body_len: u64,
    pub object_count: u64,
    pub record_count: u64,
    pub body_crc: u32,
    pub reserved: [u8; 24],
    pub crc: u32,
}

impl CheckpointHeader {
    pub fn seal(mut self, nonce: u32) -> Self {
        self.crc = crc(nonce, &bytemuck::bytes_of(&self)[..CKPT_CRC_OFF]);
        self
    }
    pub fn crc_ok(&self, nonce: u32) -> bool {
        self.crc == crc(nonce, &bytemuck::bytes_of(self)[..CKPT_CRC_OFF])
    }
}
const CKPT_CRC_OFF: usize = std::mem::size_of::<CheckpointHeader>() - 4;

// The sizes are part of the format: a change here is a format change.
const _: () = assert!(std::mem::size_of::<Superblock>() == 128);
const _: () = assert!(std::mem::size_of::<SegmentHeader>() == 64);
const _: () = assert!(std::mem::size_of::<BatchHeader>() == 64);
const _: () = assert!(std::mem::size_of::<RecordHeader>() == 64);
const _: () = assert!(std::mem::size_of::<CheckpointHeader>() == 96);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_detect_corruption() {
        let nonce = 0xdead_beef;
        let b = BatchHeader {
            magic: BATCH_MAGIC,
            format_version: FORMAT_VERSION,
            partition: 3,
            record_count: 2,
            seq: 77,
            meta_len: 4096,
            meta_used: 200,
            total_len: 12288,
            ..Zeroable::zeroed()
        }
        .seal(nonce);
        let mut bytes = bytemuck::bytes_of(&b).to_vec();
        let back: BatchHeader = bytemuck::pod_read_unaligned(&bytes);
        assert!(back.crc_ok(nonce));
        assert!(
            !back.crc_ok(nonce ^ 1),
            "another store's nonce must not validate"
        );
        for i in 0..bytes.len() {
            bytes[i] ^= 0x40;
            let bad: BatchHeader = bytemuck::pod_read_unaligned(&bytes);
            assert!(!bad.crc_ok(nonce), "flip at byte {i} not detected");
            bytes[i] ^= 0x40;
        }
    }

    #[test]
    fn superblock_crc() {
        let sb = Superblock {
            magic: SUPERBLOCK_MAGIC,
            format_version: FORMAT_VERSION,
            partition_count: 64,
            ..Zeroable::zeroed()
        }
        .seal();
        assert!(sb.crc_ok());
        let mut bad = sb;
        bad.partition_count = 65;
        assert!(!bad.crc_ok());
    }

    #[test]
    fn alignment_helpers() {
        assert_eq!(align_up(0), 0);
        assert_eq!(align_up(1), 4096);
        assert_eq!(align_up(4096), 4096);
        assert_eq!(align_down(8191), 4096);
        assert_eq!(crc_count(0), 0);
        assert_eq!(crc_count(1), 1);
        assert_eq!(crc_count(4097), 2);
    }
}
