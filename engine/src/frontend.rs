//! The NBD front end: every shard accepts connections on the node's NBD port and serves
//! the VDIs through `collie_net::nbd::server`, so connections spread over the cores.
//!
//! The listening socket is created once with std (see `listen`) and each shard accepts
//! on a duplicate of it.

use crate::error::{Result, StoreError};
use crate::export::VdiProvider;
use crate::listen::{accept_on, Accept};
use crate::store::Store;
use collie_net::nbd::{serve_handshake, serve_transmission, ServeError, ServerConfig};
use futures::future::{select, Either};
use std::rc::Rc;
use std::sync::Arc;
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
    let cfg = Arc::new(cfg);
    for shard in 0..store.shard_count() {
        let dup = listener
            .try_clone()
            .map_err(|e| StoreError::io("duplicating the nbd listener", e))?;
        let how = Accept {
            what: "nbd",
            max: cfg.max_connections_per_shard,
            loud: true,
        };
        let cfg = cfg.clone();
        accept_on(store, shard, dup, how, move |stream, sh| {
            let cfg = cfg.clone();
            async move { connection(stream, sh, &cfg).await }
        })?;
    }
    Ok(())
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
