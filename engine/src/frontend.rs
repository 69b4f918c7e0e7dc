//! The NBD front end: every shard accepts connections on the node's NBD port and serves
//! the VDIs through `collie_net::nbd::server`, so connections spread over the cores.
//!
//! The listening socket is created once with std (no SO_REUSEPORT, so a port that is
//! taken is an error instead of a silent share — glommio's own `bind` always sets it)
//! and each shard accepts on a duplicate of it.

use crate::error::{Result, StoreError};
use crate::export::VdiProvider;
use crate::store::Store;
use collie_net::nbd::{serve_handshake, serve_transmission, ServeError, ServerConfig};
use futures::future::{select, Either};
use futures::FutureExt;
use std::cell::Cell;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct FrontendConfig {
    pub server: ServerConfig,
    /// A client that has not finished the handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// Connections one shard serves at once; more are closed on accept.
    pub max_connections_per_shard: usize,
}

impl Default for FrontendConfig {
    fn default() -> Self {
        FrontendConfig {
            server: ServerConfig::default(),
            handshake_timeout: Duration::from_secs(10),
            max_connections_per_shard: 1024,
        }
    }
}

/// Starts accepting on `listener` on every shard of `store`. Returns once every shard
/// is accepting; the loops end when the store shuts down.
pub fn serve_nbd(
    store: &Store,
    listener: std::net::TcpListener,
    cfg: FrontendConfig,
) -> Result<()> {
    let io = |what: &str, e: std::io::Error| StoreError::io(what.to_owned(), e);
    listener
        .set_nonblocking(true)
        .map_err(|e| io("nbd listener", e))?;
    for shard in 0..store.shard_count() {
        let fd: OwnedFd = listener
            .try_clone()
            .map_err(|e| io("duplicating the nbd listener", e))?
            .into();
        let cfg = cfg.clone();
        store.run_on(shard, move |sh| async move {
            // SAFETY: `fd` is an open listening TCP socket we own; glommio takes it over.
            let l = unsafe { glommio::net::TcpListener::from_raw_fd(fd.into_raw_fd()) };
            glommio::spawn_local(accept_loop(l, sh, cfg)).detach();
        })?;
    }
    Ok(())
}

async fn accept_loop(l: glommio::net::TcpListener, sh: Rc<crate::Shard>, cfg: FrontendConfig) {
    let open = Rc::new(Cell::new(0usize));
    let cfg = Rc::new(cfg);
    loop {
        let stream = match l.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(shard = sh.id, "nbd accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if open.get() >= cfg.max_connections_per_shard {
            tracing::warn!(shard = sh.id, "nbd: too many connections, refusing one");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        open.set(open.get() + 1);
        let (sh, cfg, open) = (sh.clone(), cfg.clone(), open.clone());
        glommio::spawn_local(async move {
            let peer = stream
                .peer_addr()
                .map_or_else(|_| "?".to_owned(), |a| a.to_string());
            // A bug must cost one connection, not the shard: contain a panic here.
            let served = AssertUnwindSafe(connection(stream, sh, &cfg)).catch_unwind();
            match served.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::info!(%peer, "nbd connection ended: {e}"),
                Err(_) => tracing::error!(%peer, "nbd connection panicked; dropped it"),
            }
            open.set(open.get() - 1);
        })
        .detach();
    }
}

async fn connection(
    mut stream: glommio::net::TcpStream,
    sh: Rc<crate::Shard>,
    cfg: &FrontendConfig,
) -> std::result::Result<(), ServeError> {
    let provider = VdiProvider {
        gw: crate::gateway::Gateway::new(sh),
    };
    let hs = Box::pin(serve_handshake(&mut stream, &provider, &cfg.server));
    let timer = Box::pin(glommio::timer::sleep(cfg.handshake_timeout));
    let session = match select(hs, timer).await {
        Either::Left((r, _)) => r?,
        Either::Right(_) => {
            return Err(ServeError::Refused(format!(
                "handshake not finished within {:?}",
                cfg.handshake_timeout
            )))
        }
    };
    let Some(session) = session else {
        return Ok(());
    };
    tracing::debug!(
        export = %session.export_name,
        style = ?session.style(),
        structured = session.structured(),
        "nbd client attached"
    );
    serve_transmission(stream, &session, &cfg.server).await
}
