//! The NBD server: drives one client connection through the fixed newstyle handshake
//! and the transmission phase, on top of the sans-I/O codec in this module's siblings.
//!
//! Runtime-agnostic: it is generic over `futures` I/O and over the [`ExportProvider`] /
//! [`BlockExport`] a storage engine implements, and it never sleeps or spawns. Requests
//! of one connection run concurrently (bounded by [`ServerConfig::max_in_flight`] and
//! [`ServerConfig::max_in_flight_bytes`]) and their replies go out in completion order,
//! each tagged with the client's cookie. The caller bounds the handshake with a timer.

use super::consts::*;
use super::handshake::{GREETING_LEN, OPTION_HEADER_LEN};
use super::transmission::request_header_len;
use super::{
    encode_block_status, encode_block_status_ext, encode_chunk_header, encode_error_payload,
    encode_export_name_reply, encode_offset_data_prefix, encode_rep_ack, encode_rep_error,
    encode_rep_info_block_size, encode_rep_info_export, encode_rep_info_name,
    encode_rep_meta_context, encode_rep_server, encode_server_greeting, encode_simple_reply,
    parse_client_flags, parse_export_name, parse_info_request, parse_meta_context_request,
    parse_option_header, parse_request, validate_request, Command, ExportLimits, HeaderStyle,
    NbdError, Request, Verdict,
};
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use futures::stream::{FuturesUnordered, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// The only metadata context we serve, and the id we give it.
pub const BASE_ALLOCATION: &str = "base:allocation";
const BASE_ALLOCATION_ID: u32 = 1;
/// Most bytes of the export one BLOCK_STATUS reply describes; the client asks again
/// for the rest (the spec allows a reply shorter than the request).
pub const MAX_STATUS_SPAN: u64 = 1 << 30;

/// Block status boundaries fall on multiples of this (except the query's own start and
/// end). The spec asks for multiples of 512, and QEMU rounds every extent to whole
/// 512-byte sectors: a 1-byte hole at a sector's start would make `qemu-img convert`
/// zero the whole sector. 4 KiB is the preferred block size we advertise.
pub const STATUS_GRAIN: u64 = 4096;

/// Widens data over partial grains so that every boundary between extents is a multiple
/// of `grain`, except where the query itself starts or ends. A grain with any data in it
/// is reported as data, which is always safe (a hole is only an optimisation).
pub fn align_extents(offset: u64, extents: &[(u64, bool)], grain: u64) -> Vec<(u64, bool)> {
    debug_assert!(grain.is_power_of_two());
    let total: u64 = extents.iter().map(|e| e.0).sum();
    let end = offset + total;
    let mut holes: Vec<(u64, u64)> = Vec::new();
    let mut pos = offset;
    for &(len, data) in extents {
        if !data {
            let s = if pos == offset {
                pos
            } else {
                pos.next_multiple_of(grain)
            };
            let e = if pos + len == end {
                end
            } else {
                (pos + len) / grain * grain
            };
            if s < e {
                match holes.last_mut() {
                    Some(last) if last.1 == s => last.1 = e,
                    _ => holes.push((s, e)),
                }
            }
        }
        pos += len;
    }
    let mut out = Vec::with_capacity(2 * holes.len() + 1);
    let mut at = offset;
    for (s, e) in holes {
        if s > at {
            out.push((s - at, true));
        }
        out.push((e - s, false));
        at = e;
    }
    if at < end {
        out.push((end - at, true));
    }
    out
}

/// What an engine implements to be served over NBD: one opened export.
///
/// Errors are NBD error values (`consts::EIO`, `ENOSPC`, ...) with a message for
/// clients that negotiated structured replies.
pub trait BlockExport {
    fn size(&self) -> u64;
    /// Advertise `NBD_FLAG_CAN_MULTI_CONN`: true only if a FLUSH on any connection
    /// covers writes completed on every other connection to the same export.
    fn multi_conn(&self) -> bool;
    fn read(&self, offset: u64, len: u64) -> impl Future<Output = Result<Vec<u8>, ExportError>>;
    /// Returns when the data is durable if `fua` (or always, if the engine acks only
    /// durable writes).
    fn write(
        &self,
        offset: u64,
        data: &[u8],
        fua: bool,
    ) -> impl Future<Output = Result<(), ExportError>>;
    fn flush(&self) -> impl Future<Output = Result<(), ExportError>>;
    /// Make the range read as zeros and, where possible, release its space.
    fn trim(&self, offset: u64, len: u64) -> impl Future<Output = Result<(), ExportError>>;
    /// Make the range read as zeros; with `allocate` (NO_HOLE) it must stay allocated.
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        allocate: bool,
    ) -> impl Future<Output = Result<(), ExportError>>;
    /// `(length, is_data)` runs starting at `offset`, covering at least one byte and at
    /// most `len`; holes read as zeros.
    fn extents(
        &self,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = Result<Vec<(u64, bool)>, ExportError>>;
}

/// Finds exports by name.
pub trait ExportProvider {
    type Export: BlockExport;
    /// Export names for `NBD_OPT_LIST`.
    fn list(&self) -> impl Future<Output = Result<Vec<String>, String>>;
    /// `Ok(None)` if no export has that name.
    fn open(&self, name: &str) -> impl Future<Output = Result<Option<Self::Export>, String>>;
}

/// An error from the engine, as NBD reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportError {
    /// One of the `NBD_E*` values in `consts`.
    pub errno: u32,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest READ/WRITE we accept (advertised as the maximum block size).
    pub max_block: u32,
    /// Requests of one connection running at once.
    pub max_in_flight: usize,
    /// Bytes of request and reply payload one connection may hold at once (a single
    /// request larger than this still runs, alone).
    pub max_in_flight_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_block: 32 << 20,
            max_in_flight: 64,
            max_in_flight_bytes: 128 << 20,
        }
    }
}

/// Why a connection ended other than by the client's orderly `NBD_CMD_DISC`/`ABORT`.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(#[from] NbdError),
    #[error("client asked for unknown export '{0}' with NBD_OPT_EXPORT_NAME")]
    UnknownExport(String),
    #[error("{0}")]
    Refused(String),
}

/// What the handshake agreed on; hand it to [`transmission`].
pub struct Session<E> {
    pub export: E,
    pub export_name: String,
    limits: ExportLimits,
}

impl<E> Session<E> {
    pub fn style(&self) -> HeaderStyle {
        self.limits.style
    }
    pub fn structured(&self) -> bool {
        self.limits.structured
    }
}

const HANDSHAKE_FLAGS: u16 = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES;

fn transmission_flags(e: &impl BlockExport, structured: bool) -> u16 {
    let mut f = FLAG_HAS_FLAGS
        | FLAG_SEND_FLUSH
        | FLAG_SEND_FUA
        | FLAG_SEND_TRIM
        | FLAG_SEND_WRITE_ZEROES
        | FLAG_SEND_FAST_ZERO;
    if structured {
        // Every read reply is one chunk, so "don't fragment" costs nothing.
        f |= FLAG_SEND_DF;
    }
    if e.multi_conn() {
        f |= FLAG_CAN_MULTI_CONN;
    }
    f
}

async fn send(w: &mut (impl AsyncWrite + Unpin), buf: &[u8]) -> std::io::Result<()> {
    w.write_all(buf).await?;
    w.flush().await
}

/// Runs the handshake. `Ok(None)`: the client aborted or left politely.
pub async fn handshake<S, P>(
    stream: &mut S,
    provider: &P,
    cfg: &ServerConfig,
) -> Result<Option<Session<P::Export>>, ServeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    P: ExportProvider,
{
    let mut out = Vec::with_capacity(GREETING_LEN);
    encode_server_greeting(&mut out, HANDSHAKE_FLAGS);
    send(stream, &out).await?;
    let mut cf = [0u8; 4];
    stream.read_exact(&mut cf).await?;
    let client_flags = parse_client_flags(&cf, HANDSHAKE_FLAGS)?;
    let no_zeroes = client_flags & FLAG_C_NO_ZEROES != 0;

    let mut agreed = Agreed::default();
    loop {
        let mut hb = [0u8; OPTION_HEADER_LEN];
        match stream.read_exact(&mut hb).await {
            Ok(()) => {}
            // A client may just hang up between options (nbdinfo --list does not).
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        // A too-long option is not drained: refusing it closes the connection.
        let oh = parse_option_header(&hb)?;
        let mut body = vec![0u8; oh.len as usize];
        stream.read_exact(&mut body).await?;
        let opt = oh.code;
        out.clear();
        match opt {
            OPT_EXPORT_NAME => {
                let name = parse_export_name(&body)?.to_owned();
                let Some(export) = provider.open(&name).await.map_err(ServeError::Refused)? else {
                    // The spec leaves no error reply for EXPORT_NAME: close.
                    return Err(ServeError::UnknownExport(name));
                };
                let tflags = transmission_flags(&export, agreed.structured);
                encode_export_name_reply(&mut out, export.size(), tflags, no_zeroes);
                send(stream, &out).await?;
                return Ok(Some(session(export, name, tflags, cfg, agreed)));
            }
            OPT_ABORT => {
                encode_rep_ack(&mut out, opt);
                // The client may already be gone; that is fine.
                let _ = send(stream, &out).await;
                return Ok(None);
            }
            OPT_LIST if !body.is_empty() => {
                encode_rep_error(&mut out, opt, REP_ERR_INVALID, "NBD_OPT_LIST takes no data")
            }
            OPT_LIST => match provider.list().await {
                Ok(names) => {
                    for n in &names {
                        encode_rep_server(&mut out, opt, n)?;
                    }
                    encode_rep_ack(&mut out, opt);
                }
                Err(m) => encode_rep_error(&mut out, opt, REP_ERR_UNKNOWN, &m),
            },
            OPT_STRUCTURED_REPLY | OPT_EXTENDED_HEADERS if !body.is_empty() => {
                encode_rep_error(&mut out, opt, REP_ERR_INVALID, "option takes no data")
            }
            OPT_STRUCTURED_REPLY if agreed.extended => encode_rep_error(
                &mut out,
                opt,
                REP_ERR_EXT_HEADER_REQD,
                "extended headers are already on",
            ),
            OPT_STRUCTURED_REPLY => {
                agreed.structured = true;
                encode_rep_ack(&mut out, opt);
            }
            OPT_EXTENDED_HEADERS => {
                agreed.extended = true;
                agreed.structured = true;
                encode_rep_ack(&mut out, opt);
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                let set = opt == OPT_SET_META_CONTEXT;
                match parse_meta_context_request(&body) {
                    Err(e) => encode_rep_error(&mut out, opt, REP_ERR_INVALID, &e.to_string()),
                    Ok(_) if set && !agreed.structured => encode_rep_error(
                        &mut out,
                        opt,
                        REP_ERR_INVALID,
                        "negotiate structured replies before setting a meta context",
                    ),
                    Ok(req) => {
                        let wanted = |q: &str| {
                            q == BASE_ALLOCATION || (!set && (q == "base:" || q.is_empty()))
                        };
                        let any =
                            req.queries.is_empty() && !set || req.queries.iter().any(|q| wanted(q));
                        match provider.open(req.export).await {
                            Ok(Some(_)) => {
                                if any {
                                    encode_rep_meta_context(
                                        &mut out,
                                        opt,
                                        BASE_ALLOCATION_ID,
                                        BASE_ALLOCATION,
                                    )?;
                                }
                                if set {
                                    agreed.meta_context = any;
                                }
                                encode_rep_ack(&mut out, opt);
                            }
                            Ok(None) => encode_rep_error(
                                &mut out,
                                opt,
                                REP_ERR_UNKNOWN,
                                &format!("no export named '{}'", req.export),
                            ),
                            Err(m) => encode_rep_error(&mut out, opt, REP_ERR_UNKNOWN, &m),
                        }
                    }
                }
            }
            OPT_INFO | OPT_GO => {
                let go = opt == OPT_GO;
                match parse_info_request(&body) {
                    Err(e) => encode_rep_error(&mut out, opt, REP_ERR_INVALID, &e.to_string()),
                    Ok(req) => {
                        let name = req.export.to_owned();
                        match provider.open(&name).await {
                            Ok(Some(export)) => {
                                let tflags = transmission_flags(&export, agreed.structured);
                                encode_rep_info_export(&mut out, opt, export.size(), tflags);
                                if req.requests.contains(&INFO_NAME) {
                                    encode_rep_info_name(&mut out, opt, &name)?;
                                }
                                encode_rep_info_block_size(&mut out, opt, 1, 4096, cfg.max_block);
                                encode_rep_ack(&mut out, opt);
                                if go {
                                    send(stream, &out).await?;
                                    return Ok(Some(session(export, name, tflags, cfg, agreed)));
                                }
                            }
                            Ok(None) => encode_rep_error(
                                &mut out,
                                opt,
                                REP_ERR_UNKNOWN,
                                &format!("no export named '{name}'"),
                            ),
                            Err(m) => encode_rep_error(&mut out, opt, REP_ERR_UNKNOWN, &m),
                        }
                    }
                }
            }
            _ => encode_rep_error(&mut out, opt, REP_ERR_UNSUP, "option not supported"),
        }
        send(stream, &out).await?;
    }
}

/// What the client negotiated before choosing an export.
#[derive(Clone, Copy, Default)]
struct Agreed {
    structured: bool,
    extended: bool,
    meta_context: bool,
}

fn session<E>(
    export: E,
    name: String,
    tflags: u16,
    cfg: &ServerConfig,
    agreed: Agreed,
) -> Session<E>
where
    E: BlockExport,
{
    let Agreed {
        structured,
        extended,
        meta_context,
    } = agreed;
    let limits = ExportLimits {
        size: export.size(),
        min_block: 1,
        max_block: cfg.max_block,
        tflags,
        structured,
        meta_context: meta_context && structured,
        style: if extended {
            HeaderStyle::Extended
        } else {
            HeaderStyle::Compact
        },
    };
    Session {
        export,
        export_name: name,
        limits,
    }
}

/// One request read off the wire with its payload and the verdict on it.
struct Incoming {
    req: Request,
    payload: Vec<u8>,
    verdict: Verdict,
}

/// How a request finished.
enum Outcome {
    Data(Vec<u8>),
    Done,
    Extents(Vec<(u64, bool)>),
    Failed(ExportError),
}

struct Finished {
    req: Request,
    /// Bytes this request held against the in-flight budget.
    weight: u64,
    outcome: Outcome,
}

async fn read_request<R: AsyncRead + Unpin>(
    mut rd: R,
    limits: ExportLimits,
) -> (R, Result<Option<Incoming>, ServeError>) {
    let r = read_request_inner(&mut rd, &limits).await;
    (rd, r)
}

async fn read_request_inner<R: AsyncRead + Unpin>(
    rd: &mut R,
    limits: &ExportLimits,
) -> Result<Option<Incoming>, ServeError> {
    let mut hb = [0u8; 32];
    match rd.read_exact(&mut hb[..4]).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let n = request_header_len([hb[0], hb[1], hb[2], hb[3]])?;
    rd.read_exact(&mut hb[4..n]).await?;
    let (req, style, _) = parse_request(&hb[..n])?;
    if style != limits.style {
        return Err(NbdError::Malformed {
            what: "request header",
            why: "header style differs from the negotiated one",
        }
        .into());
    }
    let verdict = validate_request(&req, limits);
    if verdict == Verdict::Disconnect {
        return Err(NbdError::TooLong {
            what: "request payload",
            len: req.length,
            max: u64::from(limits.max_block),
        }
        .into());
    }
    // Bounded by validate_request (Disconnect above) before we allocate it.
    let mut payload = vec![0u8; req.payload_len(limits.style) as usize];
    rd.read_exact(&mut payload).await?;
    Ok(Some(Incoming {
        req,
        payload,
        verdict,
    }))
}

fn weight(req: &Request, payload: &[u8]) -> u64 {
    match req.kind {
        Command::Read => req.length,
        _ => payload.len() as u64,
    }
}

async fn run_request<E: BlockExport>(export: &E, inc: Incoming, structured: bool) -> Finished {
    let Incoming {
        req,
        payload,
        verdict,
    } = inc;
    let w = weight(&req, &payload);
    let fail = |errno: u32, message: &str| {
        Outcome::Failed(ExportError {
            errno,
            message: message.to_owned(),
        })
    };
    let outcome = match verdict {
        Verdict::Reply(errno) => fail(errno, "request refused: invalid for this export"),
        Verdict::Disconnect => fail(EINVAL, "request refused"),
        Verdict::Ok => {
            let (off, len) = (req.offset, req.length);
            let fua = req.flags & CMD_FLAG_FUA != 0;
            let done =
                |r: Result<(), ExportError>| r.map_or_else(Outcome::Failed, |()| Outcome::Done);
            match req.kind {
                Command::Read if len == 0 => Outcome::Data(Vec::new()),
                Command::Read => export
                    .read(off, len)
                    .await
                    .map_or_else(Outcome::Failed, Outcome::Data),
                Command::Write if payload.is_empty() => Outcome::Done,
                Command::Write => done(export.write(off, &payload, fua).await),
                Command::Flush => done(export.flush().await),
                Command::Trim if len == 0 => Outcome::Done,
                Command::Trim => done(export.trim(off, len).await),
                Command::WriteZeroes if len == 0 => Outcome::Done,
                Command::WriteZeroes => {
                    let no_hole = req.flags & CMD_FLAG_NO_HOLE != 0;
                    if no_hole && req.flags & CMD_FLAG_FAST_ZERO != 0 {
                        // Writing real zeros is no faster than a WRITE: the spec wants
                        // ENOTSUP so the client can choose.
                        fail(ENOTSUP, "allocating zeros is not faster than writing them")
                    } else {
                        done(export.write_zeroes(off, len, no_hole).await)
                    }
                }
                Command::BlockStatus if structured => {
                    let span = len.min(MAX_STATUS_SPAN);
                    match export.extents(off, span).await {
                        Ok(e) if e.is_empty() => fail(EIO, "no extents"),
                        Ok(e) => {
                            let mut e = align_extents(off, &e, STATUS_GRAIN);
                            if req.flags & CMD_FLAG_REQ_ONE != 0 {
                                e.truncate(1);
                            }
                            Outcome::Extents(e)
                        }
                        Err(e) => Outcome::Failed(e),
                    }
                }
                // Cache is not advertised and Disc never gets here.
                _ => fail(EINVAL, "unsupported command"),
            }
        }
    };
    Finished {
        req,
        weight: w,
        outcome,
    }
}

/// Encodes the reply for `f` into `out` (data goes into `data` to avoid a copy).
fn encode_reply(out: &mut Vec<u8>, f: &Finished, limits: &ExportLimits) -> Result<(), NbdError> {
    let style = limits.style;
    let cookie = f.req.cookie;
    let offset = f.req.offset;
    let mut payload = Vec::new();
    match (&f.outcome, limits.structured) {
        (Outcome::Failed(e), false) => encode_simple_reply(out, e.errno, cookie),
        (Outcome::Data(_), false) => encode_simple_reply(out, 0, cookie),
        (Outcome::Done | Outcome::Extents(_), false) => encode_simple_reply(out, 0, cookie),
        (Outcome::Failed(e), true) => {
            let n = encode_error_payload(&mut payload, e.errno.max(1), &e.message);
            encode_chunk_header(
                out,
                style,
                REPLY_FLAG_DONE,
                REPLY_TYPE_ERROR,
                cookie,
                offset,
                n,
            )?;
            out.extend_from_slice(&payload);
        }
        (Outcome::Data(d), true) if d.is_empty() => {
            encode_chunk_header(
                out,
                style,
                REPLY_FLAG_DONE,
                REPLY_TYPE_NONE,
                cookie,
                offset,
                0,
            )?;
        }
        (Outcome::Data(d), true) => {
            encode_chunk_header(
                out,
                style,
                REPLY_FLAG_DONE,
                REPLY_TYPE_OFFSET_DATA,
                cookie,
                offset,
                8 + d.len() as u64,
            )?;
            encode_offset_data_prefix(out, offset);
        }
        (Outcome::Done, true) if style == HeaderStyle::Compact => {
            // Structured replies still allow simple replies for non-read commands.
            encode_simple_reply(out, 0, cookie);
        }
        (Outcome::Done, true) => {
            encode_chunk_header(
                out,
                style,
                REPLY_FLAG_DONE,
                REPLY_TYPE_NONE,
                cookie,
                offset,
                0,
            )?;
        }
        (Outcome::Extents(e), true) => {
            let flags = |data: bool| if data { 0 } else { STATE_HOLE | STATE_ZERO };
            let (ty, n) = match style {
                HeaderStyle::Compact => {
                    // Lengths fit: the span is at most MAX_STATUS_SPAN (1 GiB).
                    let d: Vec<(u32, u32)> = e
                        .iter()
                        .map(|&(l, data)| (l.min(u64::from(u32::MAX)) as u32, flags(data)))
                        .collect();
                    (
                        REPLY_TYPE_BLOCK_STATUS,
                        encode_block_status(&mut payload, BASE_ALLOCATION_ID, &d),
                    )
                }
                HeaderStyle::Extended => {
                    let d: Vec<(u64, u64)> = e
                        .iter()
                        .map(|&(l, data)| (l, u64::from(flags(data))))
                        .collect();
                    (
                        REPLY_TYPE_BLOCK_STATUS_EXT,
                        encode_block_status_ext(&mut payload, BASE_ALLOCATION_ID, &d),
                    )
                }
            };
            encode_chunk_header(out, style, REPLY_FLAG_DONE, ty, cookie, offset, n)?;
            out.extend_from_slice(&payload);
        }
    }
    Ok(())
}

/// Serves requests until the client disconnects. Requests run concurrently; a reply is
/// sent as soon as its request finishes.
pub async fn transmission<S, E>(
    stream: S,
    session: &Session<E>,
    cfg: &ServerConfig,
) -> Result<(), ServeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    E: BlockExport,
{
    let (rd, mut wr) = stream.split();
    let limits = session.limits;
    let export = &session.export;
    type ReadFut<'a, R> =
        Pin<Box<dyn Future<Output = (R, Result<Option<Incoming>, ServeError>)> + 'a>>;
    let mut reader: Option<ReadFut<'_, _>> = Some(Box::pin(read_request(
        BufReader::with_capacity(64 << 10, rd),
        limits,
    )));
    let mut parked = None; // the read half while the budget is exhausted
    let mut running = FuturesUnordered::new();
    let mut in_flight_bytes = 0u64;
    let mut closing = false;
    let mut out = Vec::with_capacity(64);

    enum Event<R> {
        Read(R, Result<Option<Incoming>, ServeError>),
        Finished(Finished),
    }

    loop {
        if closing && running.is_empty() {
            return Ok(());
        }
        let event = futures::future::poll_fn(|cx| {
            if let Some(r) = reader.as_mut() {
                if let Poll::Ready((rd, res)) = r.as_mut().poll(cx) {
                    reader = None;
                    return Poll::Ready(Event::Read(rd, res));
                }
            }
            match running.poll_next_unpin(cx) {
                Poll::Ready(Some(f)) => Poll::Ready(Event::Finished(f)),
                _ => Poll::Pending,
            }
        })
        .await;
        match event {
            Event::Read(_, Err(e)) => return Err(e),
            Event::Read(_, Ok(None)) => closing = true, // client hung up without DISC
            Event::Read(rd, Ok(Some(inc))) => {
                if inc.req.kind == Command::Disc && inc.verdict == Verdict::Ok {
                    closing = true;
                } else {
                    in_flight_bytes += weight(&inc.req, &inc.payload);
                    running.push(run_request(export, inc, limits.structured));
                    parked = Some(rd);
                }
            }
            Event::Finished(f) => {
                in_flight_bytes -= f.weight;
                out.clear();
                encode_reply(&mut out, &f, &limits)?;
                wr.write_all(&out).await?;
                if let Outcome::Data(d) = &f.outcome {
                    wr.write_all(d).await?;
                }
                wr.flush().await?;
            }
        }
        // Read the next request only while within budget (one oversized request may
        // run alone).
        if reader.is_none() && !closing {
            let room = running.len() < cfg.max_in_flight
                && (running.is_empty() || in_flight_bytes < cfg.max_in_flight_bytes);
            if room {
                if let Some(rd) = parked.take() {
                    reader = Some(Box::pin(read_request(rd, limits)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_are_aligned_to_the_grain_and_keep_every_data_byte() {
        // A 1-byte hole at 0, data [1, 514), hole to 16 KiB: data covers the grain.
        let e = align_extents(0, &[(1, false), (513, true), (16384 - 514, false)], 4096);
        assert_eq!(e, vec![(4096, true), (12288, false)]);
        // The query's own unaligned start and end stay where they are.
        let e = align_extents(100, &[(4000, false), (10, true), (90, false)], 4096);
        assert_eq!(e, vec![(3996, false), (104, true)]);
        // Holes smaller than a grain disappear; neighbouring holes merge.
        let e = align_extents(0, &[(4096, true), (100, false), (4000, true)], 4096);
        assert_eq!(e, vec![(8196, true)]);
        let e = align_extents(0, &[(8192, false), (8192, false)], 4096);
        assert_eq!(e, vec![(16384, false)]);
        // Exhaustive small cases: lengths add up, boundaries aligned, data never lost.
        let mut x = 0x9e37_79b9_u64;
        for _ in 0..2000 {
            let mut ext = Vec::new();
            let mut data = x & 1 == 0;
            for _ in 0..(x % 6 + 1) {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ext.push(((x >> 33) % 9000 + 1, data));
                data = !data;
            }
            let off = (x >> 20) % 10_000;
            let out = align_extents(off, &ext, 4096);
            let sum = |v: &[(u64, bool)]| v.iter().map(|e| e.0).sum::<u64>();
            assert_eq!(sum(&out), sum(&ext));
            let mut pos = off;
            for (i, &(len, _)) in out.iter().enumerate() {
                pos += len;
                if i + 1 < out.len() {
                    assert_eq!(pos % 4096, 0, "{ext:?} -> {out:?}");
                }
            }
            let is_data = |v: &[(u64, bool)], b: u64| {
                let mut p = off;
                v.iter().any(|&(l, d)| {
                    let hit = d && b >= p && b < p + l;
                    p += l;
                    hit
                })
            };
            let mut p = off;
            for &(l, d) in &ext {
                if d {
                    for b in [p, p + l / 2, p + l - 1] {
                        assert!(is_data(&out, b), "{ext:?} -> {out:?} lost byte {b}");
                    }
                }
                p += l;
            }
        }
    }
}

/// The server driven by scripted client bytes against an in-memory export: handshake
/// replies byte by byte, out-of-order completion, and each reply style.
#[cfg(test)]
mod scripted {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;
    use std::cell::RefCell;
    use std::task::{Context, Poll};

    /// Client bytes in, server bytes out.
    struct Duplex {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl AsyncRead for Duplex {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.input).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Duplex {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.output.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Yields `n` times, so requests finish in an order the test chooses.
    async fn yield_times(n: u64) {
        for _ in 0..n {
            let mut once = false;
            futures::future::poll_fn(|cx| {
                if once {
                    Poll::Ready(())
                } else {
                    once = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            })
            .await;
        }
    }

    /// 64 KiB export; reads at higher offsets finish first; the first 4 KiB are data,
    /// the rest a hole; reads at 60 KiB fail.
    struct Mem(RefCell<Vec<u8>>);

    impl BlockExport for Mem {
        fn size(&self) -> u64 {
            65536
        }
        fn multi_conn(&self) -> bool {
            false
        }
        async fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, ExportError> {
            yield_times(100 - offset / 1024).await;
            if offset == 60 * 1024 {
                return Err(ExportError {
                    errno: EIO,
                    message: "bad block".into(),
                });
            }
            Ok(self.0.borrow()[offset as usize..(offset + len) as usize].to_vec())
        }
        async fn write(&self, offset: u64, data: &[u8], _: bool) -> Result<(), ExportError> {
            self.0.borrow_mut()[offset as usize..offset as usize + data.len()]
                .copy_from_slice(data);
            Ok(())
        }
        async fn flush(&self) -> Result<(), ExportError> {
            Ok(())
        }
        async fn trim(&self, _: u64, _: u64) -> Result<(), ExportError> {
            Ok(())
        }
        async fn write_zeroes(&self, _: u64, _: u64, _: bool) -> Result<(), ExportError> {
            Ok(())
        }
        async fn extents(&self, offset: u64, len: u64) -> Result<Vec<(u64, bool)>, ExportError> {
            let data_end = 4096u64.saturating_sub(offset).min(len);
            let mut v = Vec::new();
            if data_end > 0 {
                v.push((data_end, true));
            }
            if len > data_end {
                v.push((len - data_end, false));
            }
            Ok(v)
        }
    }

    struct One;
    impl ExportProvider for One {
        type Export = Mem;
        async fn list(&self) -> Result<Vec<String>, String> {
            Ok(vec!["mem".into()])
        }
        async fn open(&self, name: &str) -> Result<Option<Mem>, String> {
            Ok((name == "mem").then(|| Mem(RefCell::new((0..65536).map(|i| i as u8).collect()))))
        }
    }

    fn option(out: &mut Vec<u8>, opt: u32, data: &[u8]) {
        out.extend_from_slice(&IHAVEOPT.to_be_bytes());
        out.extend_from_slice(&opt.to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
    }

    fn name_body(name: &str, tail: &[u8]) -> Vec<u8> {
        let mut b = (name.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(tail);
        b
    }

    /// Option replies after the 18-byte greeting: (option, type, data).
    fn replies(mut b: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
        let mut v = Vec::new();
        while b.len() >= 20 {
            let be = |s: &[u8]| u32::from_be_bytes([s[0], s[1], s[2], s[3]]);
            let (opt, ty, len) = (be(&b[8..]), be(&b[12..]), be(&b[16..]) as usize);
            v.push((opt, ty, b[20..20 + len].to_vec()));
            b = &b[20 + len..];
        }
        v
    }

    fn run_handshake(client: Vec<u8>) -> (Option<Session<Mem>>, Vec<u8>) {
        let mut d = Duplex {
            input: Cursor::new(client),
            output: Vec::new(),
        };
        let s = block_on(handshake(&mut d, &One, &ServerConfig::default()))
            .ok()
            .flatten();
        (s, d.output)
    }

    #[test]
    fn qemu_style_negotiation_gets_extended_headers_and_base_allocation() {
        let mut c = (FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)
            .to_be_bytes()
            .to_vec();
        option(&mut c, OPT_STRUCTURED_REPLY, &[]);
        option(&mut c, OPT_EXTENDED_HEADERS, &[]);
        option(&mut c, OPT_STRUCTURED_REPLY, &[]);
        let mut q = name_body("mem", &1u32.to_be_bytes());
        q.extend_from_slice(&name_body(BASE_ALLOCATION, &[])[..]);
        option(&mut c, OPT_SET_META_CONTEXT, &q);
        option(&mut c, OPT_GO, &name_body("nope", &[0, 0]));
        option(&mut c, OPT_LIST, &[]);
        option(
            &mut c,
            OPT_GO,
            &name_body("mem", &[0, 1, 0, INFO_NAME as u8]),
        );
        let (s, out) = run_handshake(c);
        let s = s.unwrap();
        assert_eq!(s.style(), HeaderStyle::Extended);
        assert!(s.structured() && s.limits.meta_context);
        assert_eq!(&out[..8], &NBDMAGIC.to_be_bytes());
        let r = replies(&out[18..]);
        let types: Vec<(u32, u32)> = r.iter().map(|x| (x.0, x.1)).collect();
        assert_eq!(
            types,
            vec![
                (OPT_STRUCTURED_REPLY, REP_ACK),
                (OPT_EXTENDED_HEADERS, REP_ACK),
                (OPT_STRUCTURED_REPLY, REP_ERR_EXT_HEADER_REQD),
                (OPT_SET_META_CONTEXT, REP_META_CONTEXT),
                (OPT_SET_META_CONTEXT, REP_ACK),
                (OPT_GO, REP_ERR_UNKNOWN),
                (OPT_LIST, REP_SERVER),
                (OPT_LIST, REP_ACK),
                (OPT_GO, REP_INFO),
                (OPT_GO, REP_INFO),
                (OPT_GO, REP_INFO),
                (OPT_GO, REP_ACK),
            ]
        );
        // NBD_INFO_EXPORT: size 65536, flags without CAN_MULTI_CONN (the export said no).
        let info = &r[8].2;
        assert_eq!(&info[..2], &INFO_EXPORT.to_be_bytes());
        assert_eq!(u64::from_be_bytes(info[2..10].try_into().unwrap()), 65536);
        let tflags = u16::from_be_bytes([info[10], info[11]]);
        assert_eq!(tflags & FLAG_CAN_MULTI_CONN, 0);
        assert_ne!(tflags & FLAG_SEND_TRIM, 0);
    }

    #[test]
    fn export_name_for_an_unknown_export_closes() {
        let mut c = FLAG_C_FIXED_NEWSTYLE.to_be_bytes().to_vec();
        option(&mut c, OPT_EXPORT_NAME, b"nope");
        let mut d = Duplex {
            input: Cursor::new(c),
            output: Vec::new(),
        };
        let r = block_on(handshake(&mut d, &One, &ServerConfig::default()));
        assert!(matches!(r, Err(ServeError::UnknownExport(_))));
        assert_eq!(d.output.len(), 18, "nothing but the greeting");
    }

    fn session(extended: bool, structured: bool) -> Session<Mem> {
        let mut c = FLAG_C_FIXED_NEWSTYLE.to_be_bytes().to_vec();
        if extended {
            option(&mut c, OPT_EXTENDED_HEADERS, &[]);
        } else if structured {
            option(&mut c, OPT_STRUCTURED_REPLY, &[]);
        }
        if structured {
            let mut q = name_body("mem", &1u32.to_be_bytes());
            q.extend_from_slice(&name_body(BASE_ALLOCATION, &[]));
            option(&mut c, OPT_SET_META_CONTEXT, &q);
        }
        option(&mut c, OPT_GO, &name_body("mem", &[0, 0]));
        run_handshake(c).0.unwrap()
    }

    fn serve(s: &Session<Mem>, requests: &[Request]) -> Vec<u8> {
        let mut input = Vec::new();
        for r in requests {
            r.encode(&mut input, s.style()).unwrap();
            if r.kind == Command::Write {
                input.extend(std::iter::repeat_n(0xee, r.length as usize));
            }
        }
        let d = Duplex {
            input: Cursor::new(input),
            output: Vec::new(),
        };
        let mut d = d;
        block_on(transmission(&mut d, s, &ServerConfig::default())).unwrap();
        d.output
    }

    fn req(kind: Command, cookie: u64, offset: u64, length: u64, flags: u16) -> Request {
        Request {
            flags,
            kind,
            cookie,
            offset,
            length,
        }
    }

    #[test]
    fn simple_replies_come_back_in_completion_order() {
        let s = session(false, false);
        let out = serve(
            &s,
            &[
                req(Command::Read, 1, 0, 16, 0),
                req(Command::Read, 2, 8192, 16, 0),
                req(Command::Read, 3, 60 * 1024, 16, 0),
            ],
        );
        // 60 KiB finishes first (an error: no data), then 8 KiB, then 0.
        let mut b = &out[..];
        let mut seen = Vec::new();
        while !b.is_empty() {
            assert_eq!(&b[..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
            let err = u32::from_be_bytes(b[4..8].try_into().unwrap());
            let cookie = u64::from_be_bytes(b[8..16].try_into().unwrap());
            b = &b[16..];
            if err == 0 {
                let start = (if cookie == 1 { 0 } else { 8192 }) as u8;
                let want: Vec<u8> = (0..16u8).map(|i| start.wrapping_add(i)).collect();
                assert_eq!(&b[..16], &want[..]);
                b = &b[16..];
            }
            seen.push((cookie, err));
        }
        assert_eq!(seen, vec![(3, EIO), (2, 0), (1, 0)]);
    }

    #[test]
    fn structured_and_extended_replies_have_the_right_chunks() {
        for extended in [false, true] {
            let s = session(extended, true);
            let out = serve(
                &s,
                &[
                    req(Command::Write, 9, 0, 4, CMD_FLAG_FUA),
                    req(Command::BlockStatus, 8, 0, 65536, CMD_FLAG_REQ_ONE),
                    req(Command::BlockStatus, 7, 0, 65536, 0),
                    req(Command::Read, 6, 60 * 1024, 8, 0),
                    req(Command::Read, 5, 0, 8, 0),
                ],
            );
            // Parse chunks: (cookie, type, payload).
            let mut b = &out[..];
            let mut chunks = Vec::new();
            while !b.is_empty() {
                let magic = u32::from_be_bytes(b[..4].try_into().unwrap());
                if magic == SIMPLE_REPLY_MAGIC {
                    assert!(!extended, "simple reply with extended headers");
                    chunks.push((
                        u64::from_be_bytes(b[8..16].try_into().unwrap()),
                        0u16,
                        vec![],
                    ));
                    b = &b[16..];
                    continue;
                }
                let ty = u16::from_be_bytes([b[6], b[7]]);
                let cookie = u64::from_be_bytes(b[8..16].try_into().unwrap());
                let (len, hdr) = if extended {
                    assert_eq!(magic, EXTENDED_REPLY_MAGIC);
                    (
                        u64::from_be_bytes(b[24..32].try_into().unwrap()) as usize,
                        32,
                    )
                } else {
                    assert_eq!(magic, STRUCTURED_REPLY_MAGIC);
                    (
                        u32::from_be_bytes(b[16..20].try_into().unwrap()) as usize,
                        20,
                    )
                };
                assert_ne!(u16::from_be_bytes([b[4], b[5]]) & REPLY_FLAG_DONE, 0);
                chunks.push((cookie, ty, b[hdr..hdr + len].to_vec()));
                b = &b[hdr + len..];
            }
            chunks.sort_by_key(|c| c.0);
            let by = |c: u64| chunks.iter().find(|x| x.0 == c).unwrap();
            // Read at 0 after the write: OFFSET_DATA with the written bytes.
            assert_eq!(by(5).1, REPLY_TYPE_OFFSET_DATA);
            assert_eq!(&by(5).2[8..], &[0xee, 0xee, 0xee, 0xee, 4, 5, 6, 7]);
            assert_eq!(by(6).1, REPLY_TYPE_ERROR);
            assert_eq!(&by(6).2[..4], &EIO.to_be_bytes());
            let status_type = if extended {
                REPLY_TYPE_BLOCK_STATUS_EXT
            } else {
                REPLY_TYPE_BLOCK_STATUS
            };
            let per = if extended { 16 } else { 8 };
            let head = if extended { 8 } else { 4 };
            assert_eq!(by(7).1, status_type);
            assert_eq!(by(7).2.len(), head + 2 * per, "data then hole");
            assert_eq!(by(8).2.len(), head + per, "REQ_ONE: one extent");
            let write_reply = if extended { REPLY_TYPE_NONE } else { 0 };
            assert_eq!(by(9).1, write_reply);
        }
    }
}
