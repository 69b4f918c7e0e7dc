//! Transmission phase: request headers in (compact or extended form) and reply headers
//! and chunk payloads out (spec "Transmission", "Structured reply types", and the
//! extended-headers extension negotiated by `NBD_OPT_EXTENDED_HEADERS`).

use super::consts::*;
use super::{clip_message, NbdError, Reader, Result};

/// Length of a compact request header.
pub const REQUEST_LEN_COMPACT: usize = 28;
/// Length of an extended request header.
pub const REQUEST_LEN_EXTENDED: usize = 32;
/// Length of a simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;
/// Length of a structured (compact) reply chunk header.
pub const STRUCTURED_CHUNK_LEN: usize = 20;
/// Length of an extended reply chunk header.
pub const EXTENDED_CHUNK_LEN: usize = 32;

/// Which header family the connection negotiated. Once extended headers are on, both
/// sides use only extended requests and extended reply chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderStyle {
    Compact,
    Extended,
}

/// Request type. Unknown types still parse (the server answers them with `EINVAL`
/// rather than closing the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Read,
    Write,
    Disc,
    Flush,
    Trim,
    Cache,
    WriteZeroes,
    BlockStatus,
    Unknown(u16),
}

impl Command {
    pub fn from_wire(v: u16) -> Self {
        match v {
            CMD_READ => Self::Read,
            CMD_WRITE => Self::Write,
            CMD_DISC => Self::Disc,
            CMD_FLUSH => Self::Flush,
            CMD_TRIM => Self::Trim,
            CMD_CACHE => Self::Cache,
            CMD_WRITE_ZEROES => Self::WriteZeroes,
            CMD_BLOCK_STATUS => Self::BlockStatus,
            other => Self::Unknown(other),
        }
    }

    pub fn to_wire(self) -> u16 {
        match self {
            Self::Read => CMD_READ,
            Self::Write => CMD_WRITE,
            Self::Disc => CMD_DISC,
            Self::Flush => CMD_FLUSH,
            Self::Trim => CMD_TRIM,
            Self::Cache => CMD_CACHE,
            Self::WriteZeroes => CMD_WRITE_ZEROES,
            Self::BlockStatus => CMD_BLOCK_STATUS,
            Self::Unknown(v) => v,
        }
    }
}

/// One request header, either form, with the length widened to u64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// `NBD_CMD_FLAG_*` bits, not yet checked (see `validate`).
    pub flags: u16,
    pub kind: Command,
    /// Opaque to the server; echoed in every reply (the spec's "handle").
    pub cookie: u64,
    pub offset: u64,
    pub length: u64,
}

impl Request {
    /// Bytes of payload that follow this header on the wire and that the server must
    /// consume (even when it is going to reply with an error) to stay in sync.
    pub fn payload_len(&self, style: HeaderStyle) -> u64 {
        match (self.kind, style) {
            (Command::Write, _) => self.length,
            // With extended headers, PAYLOAD_LEN on other commands (BLOCK_STATUS with
            // NBD_FLAG_BLOCK_STAT_PAYLOAD) means `length` counts a payload.
            (_, HeaderStyle::Extended) if self.flags & CMD_FLAG_PAYLOAD_LEN != 0 => self.length,
            _ => 0,
        }
    }

    /// Encode (the client side; used by tests and a future NBD client).
    pub fn encode(&self, out: &mut Vec<u8>, style: HeaderStyle) -> Result<()> {
        match style {
            HeaderStyle::Compact => {
                let len = u32::try_from(self.length).map_err(|_| NbdError::TooLong {
                    what: "compact request length",
                    len: self.length,
                    max: u64::from(u32::MAX),
                })?;
                out.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
                out.extend_from_slice(&self.flags.to_be_bytes());
                out.extend_from_slice(&self.kind.to_wire().to_be_bytes());
                out.extend_from_slice(&self.cookie.to_be_bytes());
                out.extend_from_slice(&self.offset.to_be_bytes());
                out.extend_from_slice(&len.to_be_bytes());
            }
            HeaderStyle::Extended => {
                out.extend_from_slice(&EXTENDED_REQUEST_MAGIC.to_be_bytes());
                out.extend_from_slice(&self.flags.to_be_bytes());
                out.extend_from_slice(&self.kind.to_wire().to_be_bytes());
                out.extend_from_slice(&self.cookie.to_be_bytes());
                out.extend_from_slice(&self.offset.to_be_bytes());
                out.extend_from_slice(&self.length.to_be_bytes());
            }
        }
        Ok(())
    }
}

/// Header length implied by the first four bytes (the magic), if they are a request
/// magic. Lets the reader know how much more to read.
pub fn request_header_len(magic: [u8; 4]) -> Result<usize> {
    match u32::from_be_bytes(magic) {
        REQUEST_MAGIC => Ok(REQUEST_LEN_COMPACT),
        EXTENDED_REQUEST_MAGIC => Ok(REQUEST_LEN_EXTENDED),
        other => Err(NbdError::BadMagic {
            what: "request",
            got: u64::from(other),
        }),
    }
}

/// Parse a request header from the front of `buf` (compact: 28 bytes, extended: 32),
/// returning the request, which form it used, and the bytes consumed. An unknown magic
/// means the stream is out of sync: the server must close the connection. The caller
/// checks the form against what was negotiated.
pub fn parse_request(buf: &[u8]) -> Result<(Request, HeaderStyle, usize)> {
    let mut r = Reader::new(buf, "request header");
    let magic = r.u32()?;
    let style = match magic {
        REQUEST_MAGIC => HeaderStyle::Compact,
        EXTENDED_REQUEST_MAGIC => HeaderStyle::Extended,
        other => {
            return Err(NbdError::BadMagic {
                what: "request",
                got: u64::from(other),
            });
        }
    };
    let flags = r.u16()?;
    let kind = Command::from_wire(r.u16()?);
    let cookie = r.u64()?;
    let offset = r.u64()?;
    let length = match style {
        HeaderStyle::Compact => u64::from(r.u32()?),
        HeaderStyle::Extended => r.u64()?,
    };
    let used = match style {
        HeaderStyle::Compact => REQUEST_LEN_COMPACT,
        HeaderStyle::Extended => REQUEST_LEN_EXTENDED,
    };
    Ok((
        Request {
            flags,
            kind,
            cookie,
            offset,
            length,
        },
        style,
        used,
    ))
}

/// Simple reply: magic, error, cookie. For a successful READ the data follows.
pub fn encode_simple_reply(out: &mut Vec<u8>, error: u32, cookie: u64) {
    out.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&cookie.to_be_bytes());
}

/// Structured reply chunk header (compact): magic, flags, type, cookie, u32 length.
pub fn encode_structured_chunk_header(
    out: &mut Vec<u8>,
    flags: u16,
    reply_type: u16,
    cookie: u64,
    length: u32,
) {
    out.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&reply_type.to_be_bytes());
    out.extend_from_slice(&cookie.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
}

/// Extended reply chunk header: magic, flags, type, cookie, offset (the request's),
/// u64 length.
pub fn encode_extended_chunk_header(
    out: &mut Vec<u8>,
    flags: u16,
    reply_type: u16,
    cookie: u64,
    offset: u64,
    length: u64,
) {
    out.extend_from_slice(&EXTENDED_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&reply_type.to_be_bytes());
    out.extend_from_slice(&cookie.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
}

/// Chunk header in whichever style was negotiated. `offset` is the request's offset
/// (ignored in compact style); fails if a compact header cannot carry `length`.
pub fn encode_chunk_header(
    out: &mut Vec<u8>,
    style: HeaderStyle,
    flags: u16,
    reply_type: u16,
    cookie: u64,
    offset: u64,
    length: u64,
) -> Result<()> {
    match style {
        HeaderStyle::Compact => {
            let len = u32::try_from(length).map_err(|_| NbdError::TooLong {
                what: "structured chunk payload",
                len: length,
                max: u64::from(u32::MAX),
            })?;
            encode_structured_chunk_header(out, flags, reply_type, cookie, len);
        }
        HeaderStyle::Extended => {
            encode_extended_chunk_header(out, flags, reply_type, cookie, offset, length);
        }
    }
    Ok(())
}

/// `NBD_REPLY_TYPE_OFFSET_DATA` payload prefix: the absolute offset; the caller then
/// sends the data (chunk length = 8 + data length).
pub fn encode_offset_data_prefix(out: &mut Vec<u8>, offset: u64) {
    out.extend_from_slice(&offset.to_be_bytes());
}

/// `NBD_REPLY_TYPE_OFFSET_HOLE` payload: offset u64 + hole size u32 (chunk length 12).
/// The hole size stays 32 bits even with extended headers.
pub fn encode_offset_hole(out: &mut Vec<u8>, offset: u64, size: u32) {
    debug_assert!(size != 0, "hole size MUST be nonzero");
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
}

/// `NBD_REPLY_TYPE_ERROR` payload: error u32, message length u16, message.
/// Returns the payload length for the chunk header.
pub fn encode_error_payload(out: &mut Vec<u8>, error: u32, message: &str) -> u64 {
    debug_assert!(error != 0, "error chunk error MUST be nonzero");
    let msg = clip_message(message);
    out.extend_from_slice(&error.to_be_bytes());
    // Clipped to MAX_STRING_LEN (4096), so it fits in u16.
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg.as_bytes());
    6 + msg.len() as u64
}

/// `NBD_REPLY_TYPE_ERROR_OFFSET` payload: as ERROR, then the failing offset u64.
/// Returns the payload length for the chunk header.
pub fn encode_error_offset_payload(
    out: &mut Vec<u8>,
    error: u32,
    message: &str,
    offset: u64,
) -> u64 {
    let n = encode_error_payload(out, error, message);
    out.extend_from_slice(&offset.to_be_bytes());
    n + 8
}

/// `NBD_REPLY_TYPE_BLOCK_STATUS` payload: context id u32, then (length u32, flags u32)
/// descriptors. Returns the payload length (4 + 8n).
pub fn encode_block_status(out: &mut Vec<u8>, context_id: u32, extents: &[(u32, u32)]) -> u64 {
    debug_assert!(!extents.is_empty(), "at least one descriptor");
    debug_assert!(
        extents.iter().all(|e| e.0 != 0),
        "descriptor lengths nonzero"
    );
    out.extend_from_slice(&context_id.to_be_bytes());
    for &(len, flags) in extents {
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
    }
    4 + 8 * extents.len() as u64
}

/// `NBD_REPLY_TYPE_BLOCK_STATUS_EXT` payload (extended headers only): context id u32,
/// descriptor count u32, then (length u64, flags u64) descriptors. Returns the payload
/// length (8 + 16n).
pub fn encode_block_status_ext(out: &mut Vec<u8>, context_id: u32, extents: &[(u64, u64)]) -> u64 {
    debug_assert!(!extents.is_empty(), "at least one descriptor");
    debug_assert!(
        extents.iter().all(|e| e.0 != 0),
        "descriptor lengths nonzero"
    );
    // Descriptor counts are bounded by the server (a handful per request).
    let count = u32::try_from(extents.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&context_id.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    for &(len, flags) in extents.iter().take(count as usize) {
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
    }
    8 + 16 * u64::from(count)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::XorShift;
    use super::*;

    #[test]
    fn compact_request_exact_bytes() {
        // NBD_CMD_WRITE, FUA, cookie 0x0102030405060708, offset 4096, length 512.
        let raw: [u8; 28] = [
            0x25, 0x60, 0x95, 0x13, // magic
            0x00, 0x01, // flags: FUA
            0x00, 0x01, // type: WRITE
            1, 2, 3, 4, 5, 6, 7, 8, // cookie
            0, 0, 0, 0, 0, 0, 0x10, 0, // offset
            0, 0, 2, 0, // length
        ];
        let (req, style, used) = parse_request(&raw).unwrap();
        assert_eq!(style, HeaderStyle::Compact);
        assert_eq!(used, 28);
        assert_eq!(
            req,
            Request {
                flags: CMD_FLAG_FUA,
                kind: Command::Write,
                cookie: 0x0102_0304_0506_0708,
                offset: 4096,
                length: 512
            }
        );
        assert_eq!(req.payload_len(style), 512);
        let mut out = Vec::new();
        req.encode(&mut out, HeaderStyle::Compact).unwrap();
        assert_eq!(out, raw);
    }

    #[test]
    fn extended_request_exact_bytes() {
        let raw: [u8; 32] = [
            0x21, 0xe4, 0x1c, 0x71, // magic
            0x00, 0x00, // flags
            0x00, 0x04, // type: TRIM
            0, 0, 0, 0, 0, 0, 0, 9, // cookie
            0, 0, 0, 0, 0, 0, 0, 0, // offset
            0, 0, 0, 1, 0, 0, 0, 0, // length 4 GiB
        ];
        let (req, style, used) = parse_request(&raw).unwrap();
        assert_eq!(style, HeaderStyle::Extended);
        assert_eq!(used, 32);
        assert_eq!(req.kind, Command::Trim);
        assert_eq!(req.length, 1 << 32);
        assert_eq!(req.payload_len(style), 0);
        let mut out = Vec::new();
        req.encode(&mut out, HeaderStyle::Extended).unwrap();
        assert_eq!(out, raw);
        // A 4 GiB length cannot go in a compact header.
        assert!(req.encode(&mut out, HeaderStyle::Compact).is_err());
    }

    #[test]
    fn request_rejects_bad_magic_and_truncation() {
        let req = Request {
            flags: 0,
            kind: Command::Read,
            cookie: 1,
            offset: 0,
            length: 4096,
        };
        for style in [HeaderStyle::Compact, HeaderStyle::Extended] {
            let mut raw = Vec::new();
            req.encode(&mut raw, style).unwrap();
            for cut in 0..raw.len() {
                assert!(matches!(
                    parse_request(&raw[..cut]),
                    Err(NbdError::Truncated { .. })
                ));
            }
            let mut m = [0u8; 4];
            m.copy_from_slice(&raw[..4]);
            assert_eq!(request_header_len(m).unwrap(), raw.len());
        }
        let mut bad = Vec::new();
        req.encode(&mut bad, HeaderStyle::Compact).unwrap();
        bad[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
        assert!(matches!(
            parse_request(&bad),
            Err(NbdError::BadMagic { .. })
        ));
        assert!(request_header_len([0; 4]).is_err());
    }

    #[test]
    fn unknown_command_parses() {
        let req = Request {
            flags: 0,
            kind: Command::Unknown(42),
            cookie: 1,
            offset: 0,
            length: 0,
        };
        let mut raw = Vec::new();
        req.encode(&mut raw, HeaderStyle::Compact).unwrap();
        assert_eq!(parse_request(&raw).unwrap().0.kind, Command::Unknown(42));
        for v in 0..=8u16 {
            assert_eq!(Command::from_wire(v).to_wire(), v);
        }
    }

    #[test]
    fn simple_reply_bytes() {
        let mut out = Vec::new();
        encode_simple_reply(&mut out, EIO, 0xdead_beef);
        assert_eq!(
            out,
            [0x67, 0x44, 0x66, 0x98, 0, 0, 0, 5, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]
        );
        assert_eq!(out.len(), SIMPLE_REPLY_LEN);
    }

    #[test]
    fn chunk_header_bytes() {
        let mut out = Vec::new();
        encode_structured_chunk_header(&mut out, REPLY_FLAG_DONE, REPLY_TYPE_NONE, 7, 0);
        assert_eq!(
            out,
            [0x66, 0x8e, 0x33, 0xef, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0]
        );
        assert_eq!(out.len(), STRUCTURED_CHUNK_LEN);

        out.clear();
        encode_extended_chunk_header(&mut out, 0, REPLY_TYPE_OFFSET_DATA, 7, 512, 8 + 512);
        assert_eq!(out.len(), EXTENDED_CHUNK_LEN);
        assert_eq!(&out[..8], &[0x6e, 0x8a, 0x27, 0x8c, 0, 0, 0, 1]);
        assert_eq!(&out[16..24], &512u64.to_be_bytes());
        assert_eq!(&out[24..], &520u64.to_be_bytes());

        let mut a = Vec::new();
        encode_chunk_header(&mut a, HeaderStyle::Compact, 1, 2, 3, 99, 12).unwrap();
        let mut b = Vec::new();
        encode_structured_chunk_header(&mut b, 1, 2, 3, 12);
        assert_eq!(a, b);
        assert!(encode_chunk_header(&mut a, HeaderStyle::Compact, 0, 1, 3, 0, 1 << 32).is_err());
        encode_chunk_header(&mut a, HeaderStyle::Extended, 0, 1, 3, 0, 1 << 32).unwrap();
    }

    #[test]
    fn payload_bytes() {
        let mut out = Vec::new();
        encode_offset_hole(&mut out, 4096, 8192);
        assert_eq!(out, [0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0x20, 0]);

        out.clear();
        encode_offset_data_prefix(&mut out, 1);
        assert_eq!(out, [0, 0, 0, 0, 0, 0, 0, 1]);

        out.clear();
        let n = encode_error_payload(&mut out, EINVAL, "bad");
        assert_eq!(n, 9);
        assert_eq!(out, [0, 0, 0, 22, 0, 3, b'b', b'a', b'd']);

        out.clear();
        let n = encode_error_offset_payload(&mut out, EIO, "", 512);
        assert_eq!(n, 14);
        assert_eq!(out, [0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0]);

        out.clear();
        let n = encode_error_payload(&mut out, EIO, &"m".repeat(70_000));
        assert_eq!(n as usize, out.len());
        assert_eq!(&out[4..6], &(MAX_STRING_LEN as u16).to_be_bytes());

        out.clear();
        let n = encode_block_status(&mut out, 1, &[(4096, 0), (8192, STATE_HOLE | STATE_ZERO)]);
        assert_eq!(n, 20);
        assert_eq!(
            out,
            [0, 0, 0, 1, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 3]
        );

        out.clear();
        let n = encode_block_status_ext(&mut out, 2, &[(1 << 33, u64::from(STATE_ZERO))]);
        assert_eq!(n, 24);
        assert_eq!(
            out,
            [
                0, 0, 0, 2, 0, 0, 0, 1, // id, count
                0, 0, 0, 2, 0, 0, 0, 0, // length 8 GiB
                0, 0, 0, 0, 0, 0, 0, 2, // flags
            ]
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let compact = REQUEST_MAGIC.to_be_bytes();
        let extended = EXTENDED_REQUEST_MAGIC.to_be_bytes();
        let mut ok = 0;
        for _ in 0..5000 {
            let v = rng.bytes(48, &[&compact, &extended]);
            if let Ok((req, style, used)) = parse_request(&v) {
                ok += 1;
                assert!(used <= v.len());
                let _ = req.payload_len(style);
                let mut out = Vec::new();
                req.encode(&mut out, style).unwrap();
                assert_eq!(&out[..], &v[..used]);
            }
        }
        assert!(
            ok > 100,
            "the loop should reach the success path too ({ok})"
        );
    }
}
