//! Admin RPC between `dog` and `sheep`: one request frame, one response frame, over TCP
//! on the node's main port (`-p`, default 7000).
//!
//! A frame is a fixed 32-byte little-endian header (`FrameHeader`, with a version, the
//! body length and CRC32Cs of header and body) followed by a body encoded with
//! [`body::Enc`]. Every length is checked against a bound before anything is allocated:
//! a peer can make us reject its frame, never allocate or panic. Format: docs/wire-admin.md.

pub mod body;
mod messages;

pub use body::MAX_NAME;
pub use messages::*;

use bytemuck::{Pod, Zeroable};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// ASCII "CLAD" read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"CLAD");
/// Bumped on any incompatible change of the header or a message body.
/// 2: `ClusterInfo` carries every member's recovery state.
/// 3: `RecoveryStat` counts the objects recovery found lost; `ObjectLocation` names
/// the inode with index `INODE_INDEX`.
pub const VERSION: u16 = 3;
pub const HEADER_LEN: usize = 32;
/// Largest body: a 4 MiB `dog vdi read/write` chunk plus its name and fields.
pub const MAX_BODY: u32 = 4 * 1024 * 1024 + 64 * 1024;
/// Data carried by one `VdiRead`/`VdiWrite` frame; dog splits larger transfers.
pub const MAX_DATA: u32 = 4 * 1024 * 1024;

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub struct FrameHeader {
    pub magic: u32,
    pub version: u16,
    /// Request or response opcode (`Opcode`).
    pub opcode: u16,
    /// 0 in requests and successful responses; an `ErrorCode` otherwise.
    pub status: u32,
    pub body_len: u32,
    /// Chosen by the client, echoed in the response.
    pub id: u64,
    pub body_crc: u32,
    /// CRC32C of the 28 bytes before it.
    pub header_crc: u32,
}
const _: () = assert!(std::mem::size_of::<FrameHeader>() == HEADER_LEN);

/// Everything that can go wrong with admin bytes.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("not a collie admin frame (magic {0:#x}); is this the sheep's main port?")]
    BadMagic(u32),
    #[error("admin protocol version {got}, this build speaks {want}: upgrade dog or sheep")]
    Version { got: u16, want: u16 },
    #[error("admin frame header checksum mismatch")]
    HeaderChecksum,
    #[error("admin frame body checksum mismatch")]
    BodyChecksum,
    #[error("admin frame body of {0} bytes exceeds the {MAX_BODY}-byte limit")]
    TooLarge(u32),
    #[error("malformed admin message: {0}")]
    Malformed(String),
    #[error("unknown admin opcode {0:#x}")]
    UnknownOpcode(u16),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, AdminError>;

impl FrameHeader {
    pub fn new(opcode: u16, status: u32, id: u64, body: &[u8]) -> FrameHeader {
        let mut h = FrameHeader {
            magic: MAGIC,
            version: VERSION,
            opcode,
            status,
            body_len: body.len() as u32,
            id,
            body_crc: crc32c::crc32c(body),
            header_crc: 0,
        };
        h.header_crc = h.compute_crc();
        h
    }

    fn compute_crc(&self) -> u32 {
        crc32c::crc32c(&bytemuck::bytes_of(self)[..HEADER_LEN - 4])
    }

    /// Decodes and checks a header; the body length is bounded before anyone allocates.
    pub fn decode(buf: &[u8; HEADER_LEN]) -> Result<FrameHeader> {
        let h: FrameHeader = bytemuck::pod_read_unaligned(buf);
        if h.magic != MAGIC {
            return Err(AdminError::BadMagic(h.magic));
        }
        if h.header_crc != h.compute_crc() {
            return Err(AdminError::HeaderChecksum);
        }
        if h.version != VERSION {
            return Err(AdminError::Version {
                got: h.version,
                want: VERSION,
            });
        }
        if h.body_len > MAX_BODY {
            return Err(AdminError::TooLarge(h.body_len));
        }
        Ok(h)
    }
}

/// Writes one frame (header then body).
pub fn write_frame(
    w: &mut impl Write,
    opcode: u16,
    status: u32,
    id: u64,
    body: &[u8],
) -> Result<()> {
    if body.len() > MAX_BODY as usize {
        return Err(AdminError::TooLarge(
            body.len().min(u32::MAX as usize) as u32
        ));
    }
    let h = FrameHeader::new(opcode, status, id, body);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(bytemuck::bytes_of(&h));
    out.extend_from_slice(body);
    w.write_all(&out)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame. `Ok(None)` when the peer closed cleanly before a new frame.
pub fn read_frame(r: &mut impl Read) -> Result<Option<(FrameHeader, Vec<u8>)>> {
    let mut hb = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut hb[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(AdminError::Malformed(format!(
                    "connection closed after {got} bytes of a frame header"
                )))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let h = FrameHeader::decode(&hb)?;
    let mut body = vec![0u8; h.body_len as usize];
    r.read_exact(&mut body)?;
    if crc32c::crc32c(&body) != h.body_crc {
        return Err(AdminError::BodyChecksum);
    }
    Ok(Some((h, body)))
}

/// Blocking admin client: what `dog` uses to talk to one sheep.
pub struct AdminClient {
    stream: TcpStream,
    next_id: u64,
}

impl AdminClient {
    /// Connects to `addr:port`; `timeout` bounds the connect and every reply.
    pub fn connect(addr: &str, port: u16, timeout: Duration) -> std::io::Result<AdminClient> {
        use std::net::ToSocketAddrs;
        let mut last = None;
        for sa in (addr, port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&sa, timeout) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(timeout))?;
                    stream.set_write_timeout(Some(timeout))?;
                    stream.set_nodelay(true)?;
                    return Ok(AdminClient { stream, next_id: 1 });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "address resolves to nothing")
        }))
    }

    /// Sends `req` and waits for its response. A sheep-side failure comes back as
    /// `Ok(Response::Error { .. })`; `Err` means the exchange itself failed.
    pub fn call(&mut self, req: &Request) -> Result<Response> {
        req.check()?;
        let id = self.next_id;
        self.next_id += 1;
        let (op, body) = req.encode();
        write_frame(&mut self.stream, op, 0, id, &body)?;
        let (h, body) = read_frame(&mut self.stream)?.ok_or_else(|| {
            AdminError::Malformed("sheep closed the connection without answering".into())
        })?;
        if h.id != id {
            return Err(AdminError::Malformed(format!(
                "response id {} for request {id}",
                h.id
            )));
        }
        Response::decode(&h, &body)
    }
}

#[cfg(test)]
mod tests;
