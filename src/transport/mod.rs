//! Encrypted DNS: DNS over TLS (RFC 7858) and DNS over HTTPS (RFC 8484)
//! listeners, the PROXY protocol v2 front door they share, and a DoT
//! client for upstream exchanges.
//!
//! The listeners hand query bytes to the same [`Handler`] as UDP and TCP
//! (`answer_now`, then `answer_resolved`), so the cache, local zones and
//! access lists behave identically whatever the transport. They count
//! against the TCP connection cap: one budget of file descriptors and
//! memory for every stream transport.

pub mod doh;
pub mod dot_client;
pub mod proxy;
mod records;
pub mod tls;

use crate::handler::Handler;
use crate::listener::tcp::TcpLimits;
use crate::metrics::Metrics;
use proxy::ProxyPolicy;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What every stream listener shares with the daemon.
#[derive(Clone)]
pub struct ListenerShared {
    /// The query handler.
    pub handler: Arc<Handler>,
    /// Idle timeout and in-flight cap, as for TCP.
    pub limits: TcpLimits,
    /// Connection slots shared with the TCP listeners.
    pub slots: Arc<Semaphore>,
    /// Fires on shutdown.
    pub shutdown: CancellationToken,
    /// Owns the connection tasks.
    pub tasks: TaskTracker,
}

/// Accepts connections until shutdown; for each one that gets a slot and
/// passes the PROXY policy, runs `serve(stream, client)` in its own task.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    proxy: Arc<ProxyPolicy>,
    shared: ListenerShared,
    serve: Arc<F>,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let (mut stream, peer) = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    // EMFILE and friends: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = shared.slots.clone().try_acquire_owned() else {
            // At the cap, as on TCP: closing at once sends the client
            // elsewhere sooner than a queued handshake would.
            drop(stream);
            continue;
        };
        let proxy = proxy.clone();
        let idle = shared.limits.idle_timeout;
        let metrics = shared.handler.metrics.clone();
        let serve = serve.clone();
        let task = async move {
            let _ = stream.set_nodelay(true);
            match proxy.client_addr(&mut stream, peer, idle).await {
                Ok(client) => serve(stream, client).await,
                Err(e) => {
                    Metrics::inc(&metrics.proxy_rejected);
                    tracing::debug!("closing connection from {peer}: {e}");
                }
            }
            drop(slot);
        };
        shared.tasks.spawn(task);
    }
}
