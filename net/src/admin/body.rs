//! Little-endian body encoding for admin messages: fixed-width integers, and strings,
//! byte strings and lists with a length prefix that the decoder checks against the
//! bytes present and against a per-field cap before allocating.

use super::{AdminError, Result};

/// Longest name (VDI name, tag, address) accepted on the wire; Sheepdog allows 256.
pub const MAX_NAME: usize = 256;
/// Longest free-text field (error messages).
pub const MAX_TEXT: usize = 4096;
/// Most entries in one list (VDIs, nodes, epochs).
pub const MAX_LIST: usize = 1 << 20;

#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }
    /// A string; the caller keeps it under the decoder's cap (names are validated
    /// before they are sent).
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
        self
    }
}

pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn malformed(why: impl Into<String>) -> AdminError {
    AdminError::Malformed(why.into())
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Dec { buf, pos: 0 }
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| malformed(format!("{what} runs past the end of the body")))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    pub fn bool(&mut self, what: &str) -> Result<bool> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(malformed(format!("{what}: {v} is not a boolean"))),
        }
    }
    pub fn u32(&mut self, what: &str) -> Result<u32> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(a))
    }
    pub fn u64(&mut self, what: &str) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(a))
    }
    pub fn bytes(&mut self, max: usize, what: &str) -> Result<&'a [u8]> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(malformed(format!(
                "{what}: {n} bytes exceeds the {max}-byte limit"
            )));
        }
        self.take(n, what)
    }
    pub fn str(&mut self, max: usize, what: &str) -> Result<String> {
        let b = self.bytes(max, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| malformed(format!("{what} is not UTF-8")))
    }
    /// A list count, bounded by `MAX_LIST` and by the bytes left (each entry takes at
    /// least `min_entry` bytes), so a lying count cannot make us reserve memory.
    pub fn count(&mut self, min_entry: usize, what: &str) -> Result<usize> {
        let n = self.u32(what)? as usize;
        let left = self.buf.len() - self.pos;
        if n > MAX_LIST || n.saturating_mul(min_entry.max(1)) > left {
            return Err(malformed(format!(
                "{what}: count {n} does not fit the body"
            )));
        }
        Ok(n)
    }
    pub fn finish(&self) -> Result<()> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(malformed(format!(
                "{} trailing bytes",
                self.buf.len() - self.pos
            )))
        }
    }
}
