//! Sans-I/O codec for the NBD protocol (fixed newstyle handshake, simple, structured and
//! extended replies): pure functions from bytes to typed messages and back, so the
//! glommio server can own the sockets and this module can be tested without any.
//!
//! Layout and numbers follow doc/proto.md of NetworkBlockDevice/nbd; everything on the
//! wire is big-endian and is converted explicitly. Every length read from a peer is
//! checked against the bytes actually present (and against a fixed cap) before use.

pub mod consts;
pub mod handshake;
pub mod server;
pub mod transmission;
pub mod validate;

pub use handshake::{
    encode_export_name_reply, encode_rep_ack, encode_rep_error, encode_rep_info_block_size,
    encode_rep_info_export, encode_rep_info_name, encode_rep_meta_context, encode_rep_server,
    encode_server_greeting, parse_client_flags, parse_export_name, parse_info_request,
    parse_meta_context_request, parse_option_header, InfoRequest, MetaContextRequest, OptionHeader,
};
pub use server::{
    handshake as serve_handshake, transmission as serve_transmission, BlockExport, ExportError,
    ExportProvider, ServeError, ServerConfig, Session,
};
pub use transmission::{
    encode_block_status, encode_block_status_ext, encode_chunk_header, encode_error_offset_payload,
    encode_error_payload, encode_extended_chunk_header, encode_offset_data_prefix,
    encode_offset_hole, encode_simple_reply, encode_structured_chunk_header, parse_request,
    Command, HeaderStyle, Request,
};
pub use validate::{validate_request, ExportLimits, Verdict};

/// Everything that can go wrong decoding or encoding NBD bytes. A decode error during
/// option haggling maps to `NBD_REP_ERR_INVALID` (or `_TOO_BIG`); during transmission
/// a header error means the stream is out of sync and the connection must close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NbdError {
    #[error("bad {what} magic {got:#x}")]
    BadMagic { what: &'static str, got: u64 },
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("option data of {len} bytes exceeds the {max}-byte limit")]
    OptionTooLong { len: u32, max: u32 },
    #[error("{what} of {len} bytes exceeds the {max}-byte limit")]
    TooLong {
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("malformed {what}: {why}")]
    Malformed {
        what: &'static str,
        why: &'static str,
    },
    #[error("{what} is not valid UTF-8 or contains NUL")]
    BadString { what: &'static str },
    #[error("unknown client flags {0:#x}")]
    UnknownClientFlags(u32),
}

/// Shorthand used throughout the codec.
pub type Result<T> = std::result::Result<T, NbdError>;

/// Bounds-checked big-endian cursor over untrusted bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let truncated = NbdError::Truncated {
            what: self.what,
            need: self.pos.saturating_add(n),
            have: self.buf.len(),
        };
        let end = self.pos.checked_add(n).ok_or(truncated.clone())?;
        let out = self.buf.get(self.pos..end).ok_or(truncated)?;
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let what = self.what;
        let have = self.buf.len();
        self.take(N)?.try_into().map_err(|_| NbdError::Truncated {
            what,
            need: N,
            have,
        })
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A u32 length followed by that many bytes of NBD string.
    pub(crate) fn string32(&mut self, what: &'static str) -> Result<&'a str> {
        let len = self.u32()?;
        if len as usize > self.remaining() {
            return Err(NbdError::Malformed {
                what,
                why: "length runs past the end of the option",
            });
        }
        nbd_str(self.take(len as usize)?, what)
    }

    pub(crate) fn finish(&self) -> Result<()> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(NbdError::Malformed {
                what: self.what,
                why: "trailing bytes",
            })
        }
    }
}

/// Check an NBD string: at most 4096 bytes, UTF-8, no NUL.
pub(crate) fn nbd_str<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a str> {
    if bytes.len() > consts::MAX_STRING_LEN {
        return Err(NbdError::TooLong {
            what,
            len: bytes.len() as u64,
            max: consts::MAX_STRING_LEN as u64,
        });
    }
    let s = std::str::from_utf8(bytes).map_err(|_| NbdError::BadString { what })?;
    if s.contains('\0') {
        return Err(NbdError::BadString { what });
    }
    Ok(s)
}

/// Check a string we are about to send and return its length as u32.
pub(crate) fn outgoing_str(s: &str, what: &'static str) -> Result<u32> {
    if s.len() > consts::MAX_STRING_LEN || s.contains('\0') {
        return Err(NbdError::TooLong {
            what,
            len: s.len() as u64,
            max: consts::MAX_STRING_LEN as u64,
        });
    }
    // Bounded by MAX_STRING_LEN above, so this cannot truncate.
    Ok(s.len() as u32)
}

/// Cut a human-readable message to the string limit on a char boundary and replace any
/// NUL, so that sending an error can never itself fail.
pub(crate) fn clip_message(msg: &str) -> std::borrow::Cow<'_, str> {
    let mut end = msg.len().min(consts::MAX_STRING_LEN);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    let cut = &msg[..end];
    if cut.contains('\0') {
        std::borrow::Cow::Owned(cut.replace('\0', " "))
    } else {
        std::borrow::Cow::Borrowed(cut)
    }
}

/// Tiny deterministic PRNG for the no-panic loops in the tests (no extra dependency).
#[cfg(test)]
pub(crate) struct XorShift(pub u64);

#[cfg(test)]
impl XorShift {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Random bytes, length in `0..max_len`; sometimes starting with one of `prefixes`
    /// so that parsers get past their magic check.
    pub(crate) fn bytes(&mut self, max_len: usize, prefixes: &[&[u8]]) -> Vec<u8> {
        let len = (self.next() % max_len as u64) as usize;
        let mut v: Vec<u8> = (0..len).map(|_| self.next() as u8).collect();
        if !prefixes.is_empty() && self.next() & 1 == 0 {
            let p = prefixes[(self.next() % prefixes.len() as u64) as usize];
            let n = p.len().min(v.len());
            v[..n].copy_from_slice(&p[..n]);
        }
        // Small lengths are the interesting ones: bias some length fields low.
        if self.next() & 3 == 0 {
            for b in v.iter_mut().skip(16).step_by(5) {
                *b %= 8;
            }
        }
        v
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn reader_rejects_overrun_without_panic() {
        let mut r = Reader::new(&[0, 1, 2], "t");
        assert!(r.u32().is_err());
        assert_eq!(r.u16().unwrap(), 1);
        assert!(r.take(usize::MAX).is_err());
        assert!(r.finish().is_err());
        assert_eq!(r.take(1).unwrap(), &[2]);
        r.finish().unwrap();
    }

    #[test]
    fn nbd_str_limits() {
        assert!(nbd_str(&[b'a'; 4096], "s").is_ok());
        assert!(nbd_str(&[b'a'; 4097], "s").is_err());
        assert!(nbd_str(b"a\0b", "s").is_err());
        assert!(nbd_str(&[0xff, 0xfe], "s").is_err());
    }

    #[test]
    fn clip_message_keeps_char_boundary() {
        let m = "é".repeat(3000); // 6000 bytes
        let c = clip_message(&m);
        assert!(c.len() <= consts::MAX_STRING_LEN);
        assert!(c.chars().all(|ch| ch == 'é'));
        assert_eq!(clip_message("a\0b"), "a b");
    }
}
