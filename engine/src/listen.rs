//! What every server of a node shares (the NBD front end, peer RPC): a listening socket
//! bound with std and handed to a shard (glommio's own `bind` always sets SO_REUSEPORT,
//! so a taken port would be a silent share instead of an error), and the accept loop
//! that shard runs on it.

use crate::error::{Result, StoreError};
use crate::shard::Shard;
use crate::store::Store;
use futures::FutureExt;
use glommio::net::{TcpListener, TcpStream};
use std::cell::Cell;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::Duration;

/// How one kind of server accepts.
pub(crate) struct Accept {
    /// Names the server in log lines ("nbd", "peer").
    pub what: &'static str,
    /// Connections served at once on one shard; more are closed on accept.
    pub max: usize,
    /// Connections that end with an error are logged at info level (else debug):
    /// worth a line for clients, routine for peers.
    pub loud: bool,
}

/// Runs `serve` for every connection accepted on `listener` (std, bound) on shard
/// `shard` of `store`, each in a task of its own, until the store shuts down.
pub(crate) fn accept_on<F, Fut, E>(
    store: &Store,
    shard: usize,
    listener: std::net::TcpListener,
    how: Accept,
    serve: F,
) -> Result<()>
where
    F: Fn(TcpStream, Rc<Shard>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::result::Result<(), E>> + 'static,
    E: std::fmt::Display + 'static,
{
    listener
        .set_nonblocking(true)
        .map_err(|e| StoreError::io(format!("{} listener", how.what), e))?;
    let fd: OwnedFd = listener.into();
    store.run_on(shard, move |sh| async move {
        // SAFETY: `fd` is an open listening TCP socket we own; glommio takes it over.
        let l = unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) };
        glommio::spawn_local(accept_loop(l, sh, how, serve)).detach();
    })
}

async fn accept_loop<F, Fut, E>(l: TcpListener, sh: Rc<Shard>, how: Accept, serve: F)
where
    F: Fn(TcpStream, Rc<Shard>) -> Fut + 'static,
    Fut: std::future::Future<Output = std::result::Result<(), E>> + 'static,
    E: std::fmt::Display + 'static,
{
    let open = Rc::new(Cell::new(0usize));
    let what = how.what;
    loop {
        let stream = match l.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(shard = sh.id, "{what} accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if open.get() >= how.max {
            tracing::warn!(shard = sh.id, "{what}: too many connections, refusing one");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        open.set(open.get() + 1);
        let open = open.clone();
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        let served = serve(stream, sh.clone());
        let (id, loud) = (sh.id, how.loud);
        glommio::spawn_local(async move {
            // A bug must cost one connection, not the shard: contain a panic here.
            match AssertUnwindSafe(served).catch_unwind().await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if loud => {
                    tracing::info!(shard = id, %peer, "{what} connection ended: {e}")
                }
                Ok(Err(e)) => tracing::debug!(shard = id, %peer, "{what} connection ended: {e}"),
                Err(_) => {
                    tracing::error!(shard = id, %peer, "{what} connection panicked; dropped it")
                }
            }
            open.set(open.get() - 1);
        })
        .detach();
    }
}
