//! Peer RPC over TCP: the server every shard runs on its own peer port, and the pooled
//! client a gateway uses to reach the shard that owns an object copy on another node.
//! Frames are `collie_net::peer` (docs/wire-peer.md).
//!
//! One request at a time per connection: a gateway with more in flight opens more
//! connections (kept in a per-shard pool), so the server needs no reordering logic and
//! a slow request delays nothing else.

use crate::error::{Result, StoreError};
use crate::listen::{accept_on, Accept};
use crate::partition::WriteMeta;
use crate::shard::{Shard, WriteMode};
use crate::store::Store;
use collie_net::peer::{
    self, decode_extents, decode_stat, encode_extents, encode_oids, encode_stat, status, Op,
    PeerHeader, FLAG_MUST_EXIST, FLAG_RECOVERY, FLAG_URGENT, HEADER_LEN, MAX_PAYLOAD,
};
use futures::future::{select, Either};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// A peer that has not answered by then is treated as unreachable.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per peer shard.
const POOL_IDLE: usize = 64;
/// Connections one shard's peer server serves at once.
const MAX_PEER_CONNECTIONS: usize = 4096;

/// Starts the peer server of every shard of `store`, shard i on `listeners[i]`
/// (bound with std beforehand, so a taken port is an error, not a silent share).
pub fn serve_peers(store: &Store, listeners: Vec<std::net::TcpListener>) -> Result<()> {
    if listeners.len() != store.shard_count() {
        return Err(StoreError::Invalid(format!(
            "{} peer listeners for {} shards",
            listeners.len(),
            store.shard_count()
        )));
    }
    for (shard, l) in listeners.into_iter().enumerate() {
        let how = Accept {
            what: "peer",
            max: MAX_PEER_CONNECTIONS,
            loud: false,
        };
        accept_on(store, shard, l, how, |stream, sh| async move {
            serve_connection(stream, &sh).await
        })?;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] peer::PeerError),
}

/// Reads one frame; `None` on a clean end of stream before a header.
async fn read_frame(
    s: &mut TcpStream,
) -> std::result::Result<Option<(PeerHeader, Vec<u8>)>, ConnError> {
    let mut hb = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = s.read(&mut hb[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into())
            };
        }
        got += n;
    }
    let h = PeerHeader::decode(&hb)?;
    let mut payload = vec![0u8; h.payload_len as usize];
    s.read_exact(&mut payload).await?;
    h.check_payload(&payload)?;
    Ok(Some((h, payload)))
}

async fn write_frame(s: &mut TcpStream, h: &PeerHeader, payload: &[u8]) -> std::io::Result<()> {
    if payload.len() <= 64 << 10 {
        // One send for the header and a small payload.
        let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
        buf.extend_from_slice(&h.to_bytes());
        buf.extend_from_slice(payload);
        s.write_all(&buf).await?;
    } else {
        s.write_all(&h.to_bytes()).await?;
        s.write_all(payload).await?;
    }
    s.flush().await
}

async fn serve_connection(mut s: TcpStream, sh: &Rc<Shard>) -> std::result::Result<(), ConnError> {
    while let Some((h, payload)) = read_frame(&mut s).await? {
        if h.is_response() {
            return Err(std::io::Error::other("peer sent a response as a request").into());
        }
        // Epoch 0: this node has no view yet (it is joining); the sender retries.
        let epoch = crate::gateway::current_epoch();
        let (st, out) = if epoch == 0 || h.epoch != epoch {
            (status::WRONG_EPOCH, Vec::new())
        } else {
            let background = h.flags & (FLAG_RECOVERY | FLAG_URGENT) == FLAG_RECOVERY;
            let served = if background {
                // Another node's recovery: after this shard's clients.
                let (sh2, h2) = (sh.clone(), h);
                let task = async move { serve_op(&sh2, &h2, &payload).await };
                match glommio::spawn_local_into(task, crate::recovery::queue()) {
                    Ok(t) => t.await,
                    Err(e) => Err(RpcError::Retry(format!("recovery queue: {e}"))),
                }
            } else {
                serve_op(sh, &h, &payload).await
            };
            match served {
                Ok(out) => (status::OK, out),
                Err(RpcError::Store(e)) => {
                    if !matches!(e, StoreError::NotFound(_)) {
                        tracing::info!(oid = format!("{:#018x}", h.oid), op = ?h.op(), "peer request failed: {e}");
                    }
                    (status_of(&e), e.to_string().into_bytes())
                }
                // The primary of an erasure-coded object could not reach a holder, or
                // is no longer the primary: the gateway runs the request again.
                Err(e) => {
                    tracing::debug!(oid = format!("{:#018x}", h.oid), op = ?h.op(), "peer request to retry: {e}");
                    (status::WRONG_EPOCH, Vec::new())
                }
            }
        };
        let mut r = PeerHeader::response(&h, st, epoch);
        if st == status::OK && h.op() == Op::Stat {
            r.len = out.len() as u64;
        }
        let r = r.seal(&out);
        write_frame(&mut s, &r, &out).await?;
    }
    Ok(())
}

fn status_of(e: &StoreError) -> u32 {
    match e {
        StoreError::NotFound(_) => status::NOT_FOUND,
        StoreError::NoSpace { .. } => status::NO_SPACE,
        StoreError::Invalid(_) | StoreError::OutOfRange(_) => status::INVALID,
        StoreError::Checksum { .. } => status::CHECKSUM,
        StoreError::Closed => status::SHUTTING_DOWN,
        StoreError::NotReady(_) => status::WRONG_EPOCH,
        StoreError::Io { .. } | StoreError::Incompatible { .. } => status::IO,
    }
}

async fn serve_op(
    sh: &Rc<Shard>,
    h: &PeerHeader,
    payload: &[u8],
) -> std::result::Result<Vec<u8>, RpcError> {
    let too_long = |len: u64| {
        StoreError::OutOfRange(format!(
            "peer read of {len} bytes exceeds the {MAX_PAYLOAD}-byte frame"
        ))
    };
    let c = Call::of_frame(h, payload);
    if crate::gateway::needs_ready(&c) {
        let why = crate::recovery::Why::of(h.op());
        crate::recovery::ready(sh, h.oid, h.geometry as usize, why).await?;
    } else if c.from_recovery() {
        // Every write acknowledged at an older epoch is in before a copy is read.
        crate::recovery::drained().await;
        // Half a copy is no source for another node's. (Its state may be told: a copy
        // being replaced reads as missing or as written at epoch 0.)
        if matches!(h.op(), Op::Read | Op::Extents) && crate::recovery::settling(h.oid) {
            return Err(StoreError::NotReady(format!(
                "{:#018x} is being brought up to date",
                h.oid
            ))
            .into());
        }
    }
    match h.op() {
        Op::Write => {
            let mode = WriteMode {
                must_exist: c.must_exist(),
                client: true,
            };
            sh.write_if(h.oid, h.offset, payload, c.meta, mode).await?;
            Ok(Vec::new())
        }
        Op::Read => {
            if h.len > u64::from(MAX_PAYLOAD) {
                return Err(too_long(h.len).into());
            }
            Ok(sh.read(h.oid, h.offset, h.len).await?)
        }
        Op::Discard => {
            sh.discard_as(h.oid, h.offset, h.len, c.meta, true).await?;
            Ok(Vec::new())
        }
        Op::Remove => {
            sh.remove(h.oid).await?;
            Ok(Vec::new())
        }
        Op::Stat => match sh.stat(h.oid).await? {
            Some(i) => Ok(encode_stat(i.size, i.used, i.version, i.epoch)),
            None => Err(StoreError::NotFound(h.oid).into()),
        },
        Op::Extents => Ok(encode_extents(&sh.extents(h.oid, h.offset, h.len).await?)),
        Op::List => {
            let oids = sh.list().await?;
            if oids.len() * 8 > MAX_PAYLOAD as usize {
                return Err(too_long(oids.len() as u64 * 8).into());
            }
            Ok(encode_oids(&oids))
        }
        Op::FragWrite
        | Op::FragRead
        | Op::FragProbe
        | Op::FragRemove
        | Op::FragDelta
        | Op::EcWrite
        | Op::EcCheck => crate::ec::serve(sh, &c).await,
    }
}

// ------------------------------------------------------------------------ client

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// No answer (refused, reset, timed out): the peer is probably down; once the
    /// membership says so, the gateway retries with the new targets.
    #[error("peer {addr} unreachable: {why}")]
    Unreachable { addr: SocketAddr, why: String },
    /// The peer is at another epoch: retry once both have caught up.
    #[error("peer {addr} is at epoch {theirs}")]
    WrongEpoch { addr: SocketAddr, theirs: u32 },
    /// The request must run again on the current view (the node asked is no longer
    /// the one that orders writes to the object).
    #[error("{0}")]
    Retry(String),
    /// The peer answered with an error.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The result of a request that may have to run again on a newer view.
pub type Rpc<T> = std::result::Result<T, RpcError>;

thread_local! {
    /// Idle connections of this shard, by peer shard address.
    static POOL: RefCell<HashMap<SocketAddr, Vec<TcpStream>>> = RefCell::new(HashMap::new());
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
}

/// A request to a peer shard: header fields the op uses, and the payload.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub op: Op,
    pub oid: u64,
    pub offset: u64,
    pub len: u64,
    pub meta: WriteMeta,
    /// `collie_net::peer::FLAG_*` request flags.
    pub flags: u8,
    /// Erasure-coded ops: data << 8 | parity. Replicated ops: the object's copies.
    pub geometry: u32,
    pub payload: &'a [u8],
}

impl<'a> Call<'a> {
    pub fn new(op: Op, oid: u64) -> Call<'a> {
        Call {
            op,
            oid,
            offset: 0,
            len: 0,
            meta: WriteMeta {
                object_size: 0,
                version: 0,
                epoch: 0,
            },
            flags: 0,
            geometry: 0,
            payload: &[],
        }
    }

    pub fn must_exist(&self) -> bool {
        self.flags & FLAG_MUST_EXIST != 0
    }

    /// Sent by recovery: see [`collie_net::peer::FLAG_RECOVERY`].
    pub fn from_recovery(&self) -> bool {
        self.flags & FLAG_RECOVERY != 0
    }

    /// The same call for an object placed with `copies` copies.
    pub fn with_copies(mut self, copies: usize) -> Call<'a> {
        self.geometry = u32::try_from(copies).unwrap_or(0);
        self
    }

    /// The call a request frame carries (the server runs local and remote calls alike).
    fn of_frame(h: &PeerHeader, payload: &'a [u8]) -> Call<'a> {
        Call {
            op: h.op(),
            oid: h.oid,
            offset: h.offset,
            len: h.len,
            meta: WriteMeta {
                object_size: h.object_size,
                version: h.obj_version,
                epoch: h.epoch,
            },
            flags: h.flags,
            geometry: h.geometry,
            payload,
        }
    }
}

fn take_idle(addr: SocketAddr) -> Option<TcpStream> {
    POOL.with(|p| p.borrow_mut().get_mut(&addr).and_then(Vec::pop))
}

fn put_idle(addr: SocketAddr, s: TcpStream) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.entry(addr).or_default();
        if list.len() < POOL_IDLE {
            list.push(s);
        }
    });
}

/// Sends `call` to the peer shard at `addr` at `epoch` and returns the answer's payload.
pub async fn call(
    addr: SocketAddr,
    epoch: u32,
    call: &Call<'_>,
) -> std::result::Result<Vec<u8>, RpcError> {
    // A pooled connection may have been closed by a peer that restarted: one retry on a
    // fresh connection tells that apart from a peer that is really gone.
    if let Some(s) = take_idle(addr) {
        match exchange(s, addr, epoch, call).await {
            Err(RpcError::Unreachable { .. }) => {}
            other => return other,
        }
    }
    let s = connect(addr).await?;
    exchange(s, addr, epoch, call).await
}

async fn connect(addr: SocketAddr) -> std::result::Result<TcpStream, RpcError> {
    let unreachable = |why: String| RpcError::Unreachable { addr, why };
    let c = Box::pin(TcpStream::connect(addr));
    let t = Box::pin(glommio::timer::sleep(RPC_TIMEOUT));
    match select(c, t).await {
        Either::Left((Ok(s), _)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Either::Left((Err(e), _)) => Err(unreachable(e.to_string())),
        Either::Right(_) => Err(unreachable("connect timed out".into())),
    }
}

async fn exchange(
    mut s: TcpStream,
    addr: SocketAddr,
    epoch: u32,
    c: &Call<'_>,
) -> std::result::Result<Vec<u8>, RpcError> {
    let id = NEXT_ID.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    });
    let mut h = PeerHeader::request(c.op, id, epoch, c.oid);
    h.offset = c.offset;
    h.len = c.len;
    h.object_size = c.meta.object_size;
    h.obj_version = c.meta.version;
    h.flags = c.flags;
    h.geometry = c.geometry;
    let h = h.seal(c.payload);
    let work = async {
        write_frame(&mut s, &h, c.payload).await?;
        read_frame(&mut s).await
    };
    let t = Box::pin(glommio::timer::sleep(RPC_TIMEOUT));
    let unreachable = |why: String| RpcError::Unreachable { addr, why };
    let (r, payload) = match select(Box::pin(work), t).await {
        Either::Left((Ok(Some(f)), _)) => f,
        Either::Left((Ok(None), _)) => return Err(unreachable("connection closed".into())),
        Either::Left((Err(e), _)) => return Err(unreachable(e.to_string())),
        Either::Right(_) => return Err(unreachable(format!("no answer in {RPC_TIMEOUT:?}"))),
    };
    if !r.is_response() || r.id != id {
        return Err(unreachable("answer does not match the request".into()));
    }
    // The exchange is complete: the connection can serve the next call.
    put_idle(addr, s);
    let message = || String::from_utf8_lossy(&payload).into_owned();
    match r.status {
        status::OK => Ok(payload),
        status::WRONG_EPOCH => Err(RpcError::WrongEpoch {
            addr,
            theirs: r.epoch,
        }),
        status::NOT_FOUND => Err(StoreError::NotFound(c.oid).into()),
        status::NO_SPACE => Err(StoreError::NoSpace {
            what: format!("{addr}: {}", message()),
        }
        .into()),
        status::INVALID => Err(StoreError::Invalid(format!("{addr}: {}", message())).into()),
        status::CHECKSUM => Err(StoreError::Checksum {
            oid: c.oid,
            offset: c.offset,
            segment: u64::MAX,
        }
        .into()),
        status::SHUTTING_DOWN => Err(unreachable("shutting down".into())),
        _ => Err(StoreError::io(format!("peer {addr}"), std::io::Error::other(message())).into()),
    }
}

/// Decodes a stat answer.
pub fn stat_of(oid: u64, p: &[u8]) -> Result<crate::ObjectInfo> {
    let (size, used, version, epoch) = decode_stat(p).map_err(bad_answer)?;
    Ok(crate::ObjectInfo {
        oid,
        size,
        used,
        version,
        epoch,
    })
}

pub fn extents_of(p: &[u8]) -> Result<Vec<(u64, bool)>> {
    decode_extents(p).map_err(bad_answer)
}

fn bad_answer(e: peer::PeerError) -> StoreError {
    StoreError::io("peer answer", std::io::Error::other(e.to_string()))
}
