//! A minimal blocking NBD client: fixed newstyle handshake with NBD_OPT_GO, then simple
//! (compact, unstructured) requests. Tests use it to send exact bytes, to pipeline
//! requests and to log which writes were acknowledged.

use collie_net::nbd::consts::*;
use collie_net::nbd::{Command as Cmd, HeaderStyle, Request};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct NbdClient {
    pub stream: TcpStream,
    pub size: u64,
    next_cookie: u64,
}

#[derive(Debug)]
pub struct Reply {
    pub cookie: u64,
    pub error: u32,
}

fn io_err(m: impl Into<String>) -> std::io::Error {
    std::io::Error::other(m.into())
}

/// Connects and reads the server greeting; returns the stream positioned at the
/// client-flags step (for tests that misbehave from there on).
pub fn greet(port: u16) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_nodelay(true)?;
    let mut g = [0u8; 18];
    s.read_exact(&mut g)?;
    if g[..8] != NBDMAGIC.to_be_bytes() || g[8..16] != IHAVEOPT.to_be_bytes() {
        return Err(io_err("bad greeting"));
    }
    Ok(s)
}

/// Sends one option request.
pub fn send_option(s: &mut TcpStream, opt: u32, data: &[u8]) -> std::io::Result<()> {
    let mut b = Vec::new();
    b.extend_from_slice(&IHAVEOPT.to_be_bytes());
    b.extend_from_slice(&opt.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    s.write_all(&b)
}

/// Reads one option reply: (reply type, data).
pub fn read_option_reply(s: &mut TcpStream) -> std::io::Result<(u32, Vec<u8>)> {
    let mut h = [0u8; 20];
    s.read_exact(&mut h)?;
    let ty = u32::from_be_bytes(h[12..16].try_into().unwrap());
    let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
    if len > 1 << 20 {
        return Err(io_err("option reply too long"));
    }
    let mut d = vec![0u8; len as usize];
    s.read_exact(&mut d)?;
    Ok((ty, d))
}

/// NBD_OPT_GO body for `export` with no info requests.
pub fn go_body(export: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(export.len() as u32).to_be_bytes());
    b.extend_from_slice(export.as_bytes());
    b.extend_from_slice(&0u16.to_be_bytes());
    b
}

impl NbdClient {
    /// Handshake with NBD_OPT_GO; simple replies only (like fio and old clients).
    pub fn connect(port: u16, export: &str) -> std::io::Result<NbdClient> {
        let mut s = greet(port)?;
        s.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())?;
        send_option(&mut s, OPT_GO, &go_body(export))?;
        let mut size = None;
        loop {
            let (ty, d) = read_option_reply(&mut s)?;
            match ty {
                REP_INFO if d.len() >= 12 && d[..2] == INFO_EXPORT.to_be_bytes() => {
                    size = Some(u64::from_be_bytes(d[2..10].try_into().unwrap()));
                }
                REP_INFO => {}
                REP_ACK => break,
                t => {
                    return Err(io_err(format!(
                        "OPT_GO refused ({t:#x}): {}",
                        String::from_utf8_lossy(&d)
                    )))
                }
            }
        }
        Ok(NbdClient {
            stream: s,
            size: size.ok_or_else(|| io_err("no NBD_INFO_EXPORT"))?,
            next_cookie: 1,
        })
    }

    /// [`NbdClient::connect`], then reads and writes bounded by `timeout` so a test
    /// cannot hang on a server that stopped answering.
    pub fn connect_timeout(
        port: u16,
        export: &str,
        timeout: Duration,
    ) -> std::io::Result<NbdClient> {
        let c = NbdClient::connect(port, export)?;
        c.stream.set_read_timeout(Some(timeout))?;
        c.stream.set_write_timeout(Some(timeout))?;
        Ok(c)
    }

    /// Sends a request without waiting; returns its cookie.
    pub fn send(&mut self, kind: Cmd, offset: u64, len: u64, data: &[u8]) -> std::io::Result<u64> {
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        let r = Request {
            flags: 0,
            kind,
            cookie,
            offset,
            length: len,
        };
        let mut b = Vec::with_capacity(28 + data.len());
        r.encode(&mut b, HeaderStyle::Compact)
            .map_err(|e| io_err(e.to_string()))?;
        b.extend_from_slice(data);
        self.stream.write_all(&b)?;
        Ok(cookie)
    }

    /// Reads one simple reply header (the caller reads a READ's data).
    pub fn reply(&mut self) -> std::io::Result<Reply> {
        let mut h = [0u8; 16];
        self.stream.read_exact(&mut h)?;
        if h[..4] != SIMPLE_REPLY_MAGIC.to_be_bytes() {
            return Err(io_err("not a simple reply"));
        }
        Ok(Reply {
            error: u32::from_be_bytes(h[4..8].try_into().unwrap()),
            cookie: u64::from_be_bytes(h[8..16].try_into().unwrap()),
        })
    }

    /// Sends one request and reads its reply header: Err unless the reply is for this
    /// request and reports no error.
    fn call(&mut self, kind: Cmd, offset: u64, len: u64, data: &[u8]) -> std::io::Result<()> {
        let c = self.send(kind, offset, len, data)?;
        let r = self.reply()?;
        if r.cookie != c || r.error != 0 {
            return Err(io_err(format!("{kind:?} failed: {r:?}")));
        }
        Ok(())
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.call(Cmd::Write, offset, data.len() as u64, data)
    }

    pub fn read(&mut self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.call(Cmd::Read, offset, len as u64, &[])?;
        let mut d = vec![0u8; len];
        self.stream.read_exact(&mut d)?;
        Ok(d)
    }

    /// NBD_CMD_TRIM of `len` bytes at `offset`.
    pub fn trim(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        self.call(Cmd::Trim, offset, len, &[])
    }

    /// The whole export, read 4 MiB (one object) per request.
    pub fn read_all(&mut self) -> std::io::Result<Vec<u8>> {
        const CHUNK: u64 = 4 << 20;
        let mut out = Vec::with_capacity(self.size as usize);
        for off in (0..self.size).step_by(CHUNK as usize) {
            out.extend(self.read(off, CHUNK.min(self.size - off) as usize)?);
        }
        Ok(out)
    }

    pub fn disconnect(mut self) {
        let _ = self.send(Cmd::Disc, 0, 0, &[]);
    }
}

impl NbdClient {
    /// Wraps a stream whose handshake the test drove itself (e.g. with [`send_option`]
    /// and [`read_option_reply`]) and that is now in the transmission phase, with
    /// simple replies, for an export of `size` bytes.
    pub fn from_negotiated(stream: TcpStream, size: u64) -> NbdClient {
        NbdClient {
            stream,
            size,
            next_cookie: 1,
        }
    }
}
