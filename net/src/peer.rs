//! Peer RPC between sheep: a gateway asks the node (and shard) that holds an object copy
//! to write, read, discard, remove or describe it. Sans-I/O: fixed 80-byte little-endian
//! headers (`PeerHeader`, with a version, the epoch and CRC32Cs of header and payload)
//! and payload codecs; the engine owns the sockets. Format: docs/wire-peer.md.

use bytemuck::{Pod, Zeroable};

/// ASCII "CLPR" read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"CLPR");
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 80;
/// Largest payload: one 4 MiB object write plus room; larger requests are refused
/// before anything is allocated.
pub const MAX_PAYLOAD: u32 = 8 << 20;

/// What a peer request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    Write = 1,
    Read = 2,
    Discard = 3,
    Remove = 4,
    Stat = 5,
    Extents = 6,
    List = 7,
    /// Holder: write stripes of one fragment (erasure coding, docs/wire-peer.md).
    FragWrite = 8,
    /// Holder: read stripes of one fragment at chosen or newest versions.
    FragRead = 9,
    /// Holder: the stripe headers of every fragment of an object this node holds.
    FragProbe = 10,
    /// Primary fragment holder: write a byte range of an erasure-coded object.
    EcWrite = 11,
    /// Primary fragment holder: verify (and repair) every stripe of an object.
    EcCheck = 12,
    /// Holder: remove every fragment of an object.
    FragRemove = 13,
    /// Parity holder: XOR a delta into the stripes of one fragment at a kept version
    /// and write the result as a new version (a small write's parity update).
    FragDelta = 14,
}

impl Op {
    pub fn from_wire(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Write,
            2 => Op::Read,
            3 => Op::Discard,
            4 => Op::Remove,
            5 => Op::Stat,
            6 => Op::Extents,
            7 => Op::List,
            8 => Op::FragWrite,
            9 => Op::FragRead,
            10 => Op::FragProbe,
            11 => Op::EcWrite,
            12 => Op::EcCheck,
            13 => Op::FragRemove,
            14 => Op::FragDelta,
            _ => return None,
        })
    }
}

/// Flag in responses.
pub const FLAG_RESPONSE: u8 = 1;
/// Flag in write requests: apply only if this node already holds the object, else
/// answer `NOT_FOUND` (a gateway's partial write must not create a copy whose other
/// bytes read as zeros).
pub const FLAG_MUST_EXIST: u8 = 2;
/// Flag in FragWrite requests: the object is new; a holder that has no such fragment
/// marks every stripe the write does not cover as zeros.
pub const FLAG_CREATE: u8 = 4;
/// Flag in FragWrite and EcWrite requests: the stripes become zeros; no data is sent.
pub const FLAG_ZEROS: u8 = 8;
/// Flag in EcCheck requests: rewrite what is missing or wrong.
pub const FLAG_REPAIR: u8 = 16;
/// Flag in FragRead requests (the same bit as `FLAG_REPAIR`, which only EcCheck takes):
/// a write's read-back of a single stripe, which the holder may answer from the
/// chunks its last writes left in memory instead of the disk.
pub const FLAG_RECENT: u8 = 16;
/// Flag of requests recovery sends: Stat, Read and Extents answer from the copy as it
/// is, without first bringing it up to date (which would ask the sender back); an
/// EcCheck is skipped if the primary already completed one at this epoch.
pub const FLAG_RECOVERY: u8 = 32;
/// With `FLAG_RECOVERY`: a client waits for this (its request needs the copy now), so
/// the peer serves it at its clients' priority rather than after them.
pub const FLAG_URGENT: u8 = 64;

/// Status of a response: 0, or one of these.
pub mod status {
    pub const OK: u32 = 0;
    /// The object does not exist on this node.
    pub const NOT_FOUND: u32 = 1;
    /// The sender's epoch differs from ours: retry after catching up.
    pub const WRONG_EPOCH: u32 = 2;
    pub const NO_SPACE: u32 = 3;
    pub const INVALID: u32 = 4;
    pub const IO: u32 = 5;
    /// Checksum mismatch on the stored data: read another copy.
    pub const CHECKSUM: u32 = 6;
    pub const SHUTTING_DOWN: u32 = 7;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct PeerHeader {
    pub magic: u32,
    pub version: u16,
    pub op: u8,
    pub flags: u8,
    pub epoch: u32,
    /// Responses: a `status` value.
    pub status: u32,
    /// Chosen by the requester, echoed in the response.
    pub id: u64,
    pub oid: u64,
    pub offset: u64,
    /// Bytes the request covers (Read, Discard, Extents).
    pub len: u64,
    pub object_size: u64,
    pub obj_version: u64,
    pub payload_len: u32,
    pub payload_crc: u32,
    /// Erasure-coded ops: data fragments << 8 | parity fragments. Replicated ops: the
    /// number of copies the gateway placed the object with (0: unknown), so that the
    /// target can tell whether its copy missed writes while it was not a target.
    pub geometry: u32,
    /// CRC32C of the 76 bytes before it.
    pub header_crc: u32,
}
const _: () = assert!(std::mem::size_of::<PeerHeader>() == HEADER_LEN);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("not a collie peer frame (magic {0:#x})")]
    BadMagic(u32),
    #[error("peer protocol version {got}, this build speaks {want}")]
    Version { got: u16, want: u16 },
    #[error("peer frame header checksum mismatch")]
    HeaderChecksum,
    #[error("peer frame payload checksum mismatch")]
    PayloadChecksum,
    #[error("peer payload of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(u32),
    #[error("unknown peer op {0}")]
    UnknownOp(u8),
    #[error("malformed peer payload: {0}")]
    Malformed(&'static str),
}

impl PeerHeader {
    /// A request header for `op`; the caller fills the fields its op uses.
    pub fn request(op: Op, id: u64, epoch: u32, oid: u64) -> PeerHeader {
        PeerHeader {
            magic: MAGIC,
            version: VERSION,
            op: op as u8,
            epoch,
            id,
            oid,
            ..PeerHeader::zeroed()
        }
    }

    /// The response header to `req`.
    pub fn response(req: &PeerHeader, status: u32, epoch: u32) -> PeerHeader {
        PeerHeader {
            magic: MAGIC,
            version: VERSION,
            op: req.op,
            flags: FLAG_RESPONSE,
            epoch,
            status,
            id: req.id,
            oid: req.oid,
            offset: req.offset,
            len: req.len,
            ..PeerHeader::zeroed()
        }
    }

    /// Seals the header for `payload`: length and both CRCs. Call last.
    pub fn seal(mut self, payload: &[u8]) -> PeerHeader {
        self.payload_len = payload.len() as u32;
        self.payload_crc = crc32c::crc32c(payload);
        self.header_crc = crc32c::crc32c(&bytemuck::bytes_of(&self)[..HEADER_LEN - 4]);
        self
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b.copy_from_slice(bytemuck::bytes_of(self));
        b
    }

    /// Decodes and checks a header; the payload length is bounded before anyone
    /// allocates for it.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<PeerHeader, PeerError> {
        let h: PeerHeader = bytemuck::pod_read_unaligned(b);
        if h.magic != MAGIC {
            return Err(PeerError::BadMagic(h.magic));
        }
        if h.header_crc != crc32c::crc32c(&b[..HEADER_LEN - 4]) {
            return Err(PeerError::HeaderChecksum);
        }
        if h.version != VERSION {
            return Err(PeerError::Version {
                got: h.version,
                want: VERSION,
            });
        }
        if h.payload_len > MAX_PAYLOAD {
            return Err(PeerError::TooLarge(h.payload_len));
        }
        if Op::from_wire(h.op).is_none() {
            return Err(PeerError::UnknownOp(h.op));
        }
        Ok(h)
    }

    pub fn op(&self) -> Op {
        // decode() refused unknown ops; headers we build use Op values.
        Op::from_wire(self.op).unwrap_or(Op::Stat)
    }

    pub fn is_response(&self) -> bool {
        self.flags & FLAG_RESPONSE != 0
    }

    pub fn check_payload(&self, payload: &[u8]) -> Result<(), PeerError> {
        if payload.len() != self.payload_len as usize || crc32c::crc32c(payload) != self.payload_crc
        {
            return Err(PeerError::PayloadChecksum);
        }
        Ok(())
    }
}

/// Stat response payload: size, used, version (u64 LE each), epoch (u32 LE).
pub fn encode_stat(size: u64, used: u64, version: u64, epoch: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(28);
    v.extend_from_slice(&size.to_le_bytes());
    v.extend_from_slice(&used.to_le_bytes());
    v.extend_from_slice(&version.to_le_bytes());
    v.extend_from_slice(&epoch.to_le_bytes());
    v
}

pub fn decode_stat(p: &[u8]) -> Result<(u64, u64, u64, u32), PeerError> {
    if p.len() != 28 {
        return Err(PeerError::Malformed("stat payload is not 28 bytes"));
    }
    let u = |i: usize| u64::from_le_bytes(p[i..i + 8].try_into().unwrap_or([0; 8]));
    let e = u32::from_le_bytes(p[24..28].try_into().unwrap_or([0; 4]));
    Ok((u(0), u(8), u(16), e))
}

/// Extents payload: (length u64, has_data u8) runs.
pub fn encode_extents(runs: &[(u64, bool)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(runs.len() * 9);
    for &(len, data) in runs {
        v.extend_from_slice(&len.to_le_bytes());
        v.push(u8::from(data));
    }
    v
}

pub fn decode_extents(p: &[u8]) -> Result<Vec<(u64, bool)>, PeerError> {
    if !p.len().is_multiple_of(9) {
        return Err(PeerError::Malformed(
            "extents payload is not a whole number of runs",
        ));
    }
    p.chunks_exact(9)
        .map(|c| {
            let len = u64::from_le_bytes(c[..8].try_into().unwrap_or([0; 8]));
            match c[8] {
                0 => Ok((len, false)),
                1 => Ok((len, true)),
                _ => Err(PeerError::Malformed("extent flag is not 0 or 1")),
            }
        })
        .collect()
}

/// Splits `n` u64 LE values off the front of a payload; the rest follows.
pub fn split_u64s(p: &[u8], n: usize) -> Result<(Vec<u64>, &[u8]), PeerError> {
    let bytes = n
        .checked_mul(8)
        .filter(|&b| b <= p.len())
        .ok_or(PeerError::Malformed("payload shorter than its u64 list"))?;
    let v = p[..bytes]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    Ok((v, &p[bytes..]))
}

/// List payload: oids as u64 LE.
pub fn encode_oids(oids: &[u64]) -> Vec<u8> {
    oids.iter().flat_map(|o| o.to_le_bytes()).collect()
}

pub fn decode_oids(p: &[u8]) -> Result<Vec<u64>, PeerError> {
    if !p.len().is_multiple_of(8) {
        return Err(PeerError::Malformed(
            "oid list is not a whole number of oids",
        ));
    }
    Ok(p.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_every_flip_is_caught() {
        let payload = vec![7u8; 4096];
        let mut h = PeerHeader::request(Op::Write, 42, 3, 0x0012_3456_0000_0007);
        h.offset = 4096;
        h.object_size = 4 << 20;
        let h = h.seal(&payload);
        let b = h.to_bytes();
        let d = PeerHeader::decode(&b).unwrap();
        assert_eq!(d, h);
        d.check_payload(&payload).unwrap();
        assert!(d.check_payload(&payload[1..]).is_err());
        for i in 0..HEADER_LEN {
            let mut x = b;
            x[i] ^= 0x10;
            assert!(PeerHeader::decode(&x).is_err(), "flip at {i}");
        }
        let r = PeerHeader::response(&d, status::NOT_FOUND, 3).seal(&[]);
        let r = PeerHeader::decode(&r.to_bytes()).unwrap();
        assert!(r.is_response());
        assert_eq!((r.id, r.status, r.op()), (42, status::NOT_FOUND, Op::Write));
    }

    #[test]
    fn oversized_payloads_are_refused_before_allocation() {
        let mut h = PeerHeader::request(Op::Write, 1, 1, 1);
        h.payload_len = MAX_PAYLOAD + 1;
        h.header_crc = crc32c::crc32c(&bytemuck::bytes_of(&h)[..HEADER_LEN - 4]);
        assert_eq!(
            PeerHeader::decode(&h.to_bytes()),
            Err(PeerError::TooLarge(MAX_PAYLOAD + 1))
        );
    }

    #[test]
    fn payload_codecs_round_trip_and_reject_garbage() {
        let s = encode_stat(1, 2, 3, 4);
        assert_eq!(decode_stat(&s).unwrap(), (1, 2, 3, 4));
        assert!(decode_stat(&s[1..]).is_err());
        let runs = vec![(4096, true), (8192, false)];
        assert_eq!(decode_extents(&encode_extents(&runs)).unwrap(), runs);
        let mut bad = encode_extents(&runs);
        bad[8] = 2;
        assert!(decode_extents(&bad).is_err());
        assert!(decode_extents(&bad[1..]).is_err());
        let oids = vec![1, u64::MAX, 77];
        assert_eq!(decode_oids(&encode_oids(&oids)).unwrap(), oids);
        assert!(decode_oids(&[0; 7]).is_err());
        let mut p = encode_oids(&[5, 6]);
        p.extend_from_slice(b"rest");
        assert_eq!(split_u64s(&p, 2).unwrap(), (vec![5, 6], &b"rest"[..]));
        assert!(split_u64s(&p, 3).is_err());
        assert!(split_u64s(&p, usize::MAX).is_err());
    }
}
