//! A running resolvd: binds every listener, wires handler, cache, zones and
//! resolver together, and owns the tasks until shutdown.
//!
//! `main` uses it for the real process; integration tests start one
//! in-process on loopback ports.

use crate::cache::AnswerCache;
use crate::config::Config;
use crate::handler::{Handler, HandlerConfig};
use crate::listener::{tcp, udp, BindError};
use crate::metrics::Metrics;
use crate::resolve::iterate::Iterator as IterativeResolver;
use crate::resolve::Resolve;
use crate::root_hints::{RootHints, RootHintsError};
use crate::transport::proxy::ProxyPolicy;
use crate::transport::tls::{Tls, TlsError};
use crate::transport::{doh, tls, ListenerShared};
use crate::zones::{HealthGuard, LocalZones, ZonesError};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Root hints unusable.
    #[error(transparent)]
    RootHints(#[from] RootHintsError),
    /// Local zones invalid.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Zones(Vec<ZonesError>),
    /// TLS certificate or key unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The metrics endpoint could not be bound.
    #[error("cannot bind [metrics] listen {addr}: {source}")]
    Metrics {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A started daemon. Dropping it without [`Daemon::shutdown`] stops the
/// listeners at once.
pub struct Daemon {
    handler: Arc<Handler>,
    addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    https_addrs: Vec<SocketAddr>,
    https_plain_addrs: Vec<SocketAddr>,
    tls: Option<Arc<Tls>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    grace: Duration,
    health: Mutex<Option<HealthGuard>>,
    /// The bound `/metrics` address, when `[metrics] listen` is set.
    metrics_addr: Option<SocketAddr>,
    /// `[cache] persist`: dumped here at shutdown.
    persist: Option<std::path::PathBuf>,
}

impl Daemon {
    /// Starts with the iterative resolver.
    pub async fn start(cfg: &Config) -> Result<Daemon, StartError> {
        let hints = match &cfg.resolver.root_hints {
            Some(p) => RootHints::load(&cfg.base_dir.join(p))?,
            None => RootHints::iana(),
        };
        let metrics = Arc::new(Metrics::default());
        let resolver =
            IterativeResolver::new(cfg.resolver.clone(), &cfg.cache, hints, metrics.clone());
        Daemon::start_with(cfg, Arc::new(resolver), metrics).await
    }

    /// Starts with any resolver (tests plug in their own).
    pub async fn start_with(
        cfg: &Config,
        resolver: Arc<dyn Resolve>,
        metrics: Arc<Metrics>,
    ) -> Result<Daemon, StartError> {
        let zones = Arc::new(build_zones(cfg)?);
        let handler = Arc::new(Handler::new(
            HandlerConfig {
                allow: cfg.server.allow.clone(),
                udp_payload_size: cfg.server.udp_payload_size,
                query_deadline: cfg.resolver.query_deadline.0,
                max_pending: cfg.resolver.max_pending,
                cookies: cfg
                    .server
                    .cookies
                    .then(|| crate::cookies::parse_secret(&cfg.server.cookie_secret).ok()),
                ratelimit: cfg.server.ratelimit.clone(),
            },
            zones.clone(),
            AnswerCache::new(&cfg.cache),
            resolver,
            metrics,
        ));
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(cfg.server.tcp_max_connections));
        let limits = tcp::TcpLimits {
            idle_timeout: cfg.server.tcp_idle_timeout.0,
            max_inflight: cfg.server.tcp_max_inflight,
        };
        let workers = cfg.worker_threads().max(1);
        let mut addrs = Vec::new();
        // Bind everything before serving anything, so a bad address fails
        // start-up cleanly instead of leaving half a daemon running.
        let mut udp_socks = Vec::new();
        let mut tcp_socks = Vec::new();
        for &want in &cfg.server.listen {
            // Port 0 (tests): siblings and TCP must share the port the first
            // socket got, which another program may hold for TCP; then
            // start over on another port.
            let mut bound = bind_group(want, workers);
            if want.port() == 0 {
                for _ in 1..PORT_ZERO_ATTEMPTS {
                    if bound.is_ok() {
                        break;
                    }
                    bound = bind_group(want, workers);
                }
            }
            let (addr, udps, tcp) = bound?;
            udp_socks.extend(udps);
            tcp_socks.push(tcp);
            addrs.push(addr);
        }
        let tls = if cfg.needs_tls() {
            let (cert, key) = cfg.tls_files().ok_or(TlsError::NotConfigured)?;
            Some(Arc::new(Tls::load(&cert, &key)?))
        } else {
            None
        };
        let bind_stream = |addrs: &[SocketAddr], proto: &'static str| {
            addrs
                .iter()
                .map(|&a| {
                    let l = tcp::bind(a).map_err(|e| BindError { proto, ..e })?;
                    let bound = l.local_addr().map_err(|source| BindError {
                        proto,
                        addr: a,
                        source,
                    })?;
                    Ok((l, bound))
                })
                .collect::<Result<Vec<_>, BindError>>()
        };
        let dot_socks = bind_stream(&cfg.server.tls_listen, "dot")?;
        let https_socks = bind_stream(&cfg.server.https_listen, "https")?;
        let plain_socks = bind_stream(&cfg.server.https_listen_plain, "http")?;
        for s in udp_socks {
            tasks.spawn(udp::serve(
                Arc::new(s),
                handler.clone(),
                shutdown.clone(),
                tasks.clone(),
            ));
        }
        for l in tcp_socks {
            tasks.spawn(tcp::serve(
                l,
                handler.clone(),
                limits,
                slots.clone(),
                shutdown.clone(),
                tasks.clone(),
            ));
        }
        let shared = ListenerShared {
            handler: handler.clone(),
            limits,
            slots: slots.clone(),
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
        };
        let proxy = Arc::new(ProxyPolicy::new(cfg.server.proxy_protocol_from.clone()));
        let addrs_of = |v: &[(tokio::net::TcpListener, SocketAddr)]| -> Vec<SocketAddr> {
            v.iter().map(|(_, a)| *a).collect()
        };
        let (tls_addrs, https_addrs, https_plain_addrs) = (
            addrs_of(&dot_socks),
            addrs_of(&https_socks),
            addrs_of(&plain_socks),
        );
        if let Some(t) = &tls {
            for (l, _) in dot_socks {
                tasks.spawn(tls::serve_dot(l, t.clone(), proxy.clone(), shared.clone()));
            }
            for (l, _) in https_socks {
                tasks.spawn(doh::serve_doh(
                    l,
                    Some(t.clone()),
                    proxy.clone(),
                    shared.clone(),
                ));
            }
        }
        for (l, _) in plain_socks {
            tasks.spawn(doh::serve_doh(l, None, proxy.clone(), shared.clone()));
        }
        if cfg.control.enabled {
            // Serving DNS matters more than the control socket: an
            // unprivileged run without access to /run still answers queries.
            if let Err(e) = crate::control::start(
                &cfg.control.socket,
                handler.clone(),
                shutdown.clone(),
                &tasks,
            ) {
                tracing::warn!(
                    "control socket {} unavailable ({e}); `resolvd control` will not work (set [control] socket)",
                    cfg.control.socket.display()
                );
            }
        }
        let metrics_addr = match cfg.metrics.listen {
            Some(addr) => Some(
                crate::exporter::start(
                    addr,
                    Arc::new(crate::exporter::Exporter::new(handler.clone())),
                    shutdown.clone(),
                    &tasks,
                )
                .map_err(|source| StartError::Metrics { addr, source })?,
            ),
            None => None,
        };
        if let Some(socket) = &cfg.dnstap.socket {
            handler.set_dnstap(Some(crate::dnstap::Dnstap::start(
                &cfg.dnstap,
                &cfg.base_dir.join(socket),
                handler.metrics.clone(),
                shutdown.clone(),
                &tasks,
            )));
        }
        let persist = cfg.cache.persist.as_ref().map(|p| cfg.base_dir.join(p));
        if let Some(p) = &persist {
            // A missing file is the first start; anything else unusable is
            // logged and the cache starts empty.
            match crate::persist::load(&handler.cache, p) {
                Ok(s) => tracing::info!(
                    "cache: loaded {} entries from {} ({} expired, {} unusable)",
                    s.loaded,
                    p.display(),
                    s.expired,
                    s.unusable
                ),
                Err(crate::persist::PersistError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("cache: not loaded, starting empty: {e}"),
            }
        }
        let health = zones.start_health_checks();
        Ok(Daemon {
            metrics_addr,
            persist,
            handler,
            addrs,
            tls_addrs,
            https_addrs,
            https_plain_addrs,
            tls,
            shutdown,
            tasks,
            grace: cfg.server.shutdown_grace.0,
            health: Mutex::new(Some(health)),
        })
    }

    /// The bound addresses (with real ports when 0 was asked for).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The bound DNS-over-TLS addresses.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// The bound DNS-over-HTTPS addresses.
    pub fn https_addrs(&self) -> &[SocketAddr] {
        &self.https_addrs
    }

    /// The bound plain-HTTP DoH addresses.
    pub fn https_plain_addrs(&self) -> &[SocketAddr] {
        &self.https_plain_addrs
    }

    /// The bound Prometheus endpoint, when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The query handler (cache, zones, metrics).
    pub fn handler(&self) -> &Arc<Handler> {
        &self.handler
    }

    /// Swaps in the zones and the TLS certificate of a new configuration;
    /// on error the old ones keep serving. Listener addresses are not
    /// rebound: that needs a restart.
    pub fn reload(&self, cfg: &Config) -> Result<(), StartError> {
        // Certificate first: a bad one rejects the reload before anything
        // has been swapped.
        if let Some(t) = &self.tls {
            let (cert, key) = cfg.tls_files().ok_or(TlsError::NotConfigured)?;
            t.reload(&cert, &key)?;
        }
        let zones = Arc::new(build_zones(cfg)?);
        let guard = zones.start_health_checks();
        self.handler.set_zones(zones);
        if let Ok(mut h) = self.health.lock() {
            *h = Some(guard);
        }
        Ok(())
    }

    /// Stops accepting, lets in-flight queries finish up to the grace
    /// period, then returns.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(self.grace, self.tasks.wait()).await;
        if let Some(p) = &self.persist {
            match crate::persist::dump(&self.handler.cache, p) {
                Ok(n) => tracing::info!("cache: dumped {n} entries to {}", p.display()),
                Err(e) => tracing::warn!("cache: not dumped: {e}"),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Tries at binding a port-0 listen address (tests) before giving up.
const PORT_ZERO_ATTEMPTS: usize = 16;

/// One listen address bound: the address (with the port the kernel chose
/// for port 0), a UDP socket per worker (SO_REUSEPORT) and the TCP listener.
type BoundGroup = (
    SocketAddr,
    Vec<tokio::net::UdpSocket>,
    tokio::net::TcpListener,
);

/// Binds every socket of one listen address on the same port.
fn bind_group(want: SocketAddr, workers: usize) -> Result<BoundGroup, BindError> {
    let first = udp::bind(want)?;
    let addr = first.local_addr().map_err(|source| BindError {
        proto: "udp",
        addr: want,
        source,
    })?;
    let mut udps = vec![first];
    for _ in 1..workers {
        udps.push(udp::bind(addr)?);
    }
    let tcp = tcp::bind(addr)?;
    Ok((addr, udps, tcp))
}

fn build_zones(cfg: &Config) -> Result<LocalZones, StartError> {
    let zones =
        LocalZones::from_config(&cfg.zone, &cfg.geo, &cfg.base_dir).map_err(StartError::Zones)?;
    Ok(if cfg.resolver.special_use_names {
        zones.with_special_use(&cfg.special_use_exclude())
    } else {
        zones
    })
}
