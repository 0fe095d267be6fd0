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
use crate::resolve::secure::Dnssec;
use crate::resolve::Resolve;
use crate::root_hints::{RootHints, RootHintsError};
use crate::transport::proxy::ProxyPolicy;
use crate::transport::tls::{Tls, TlsError};
use crate::transport::{doh, tls, ListenerShared};
use crate::validate::anchors::AnchorError;
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
    /// The shared cache's settings unusable.
    #[error(transparent)]
    SharedCache(#[from] crate::cache_l2::L2Error),
    /// A forward zone unusable (its CA file).
    #[error(transparent)]
    Forward(#[from] crate::resolve::forward::ForwardError),
    /// A trust anchor file unusable.
    #[error(transparent)]
    Anchors(#[from] AnchorError),
}

/// A started daemon. Dropping it without [`Daemon::shutdown`] stops the
/// listeners at once.
pub struct Daemon {
    handler: Arc<Handler>,
    /// Every listen address in service; a reload adds and closes entries.
    listeners: Mutex<Vec<Listening>>,
    /// What a new listener needs; fixed at start.
    spawner: Spawner,
    /// The TLS acceptor's certificate store, once a TLS listener exists.
    tls: Mutex<Option<Arc<Tls>>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    grace: Duration,
    health: Mutex<Option<HealthGuard>>,
    /// The `/metrics` endpoint: configured address, bound address, and
    /// the token that closes it.
    metrics_endpoint: Mutex<Option<(SocketAddr, SocketAddr, CancellationToken)>>,
    /// `[cache] persist`: dumped here at shutdown.
    persist: Option<std::path::PathBuf>,
    /// The configuration in force, for a reload to diff against.
    current: Mutex<Config>,
    /// `control reload` requests, for the process that knows where the
    /// configuration comes from (see [`Daemon::take_reload_requests`]).
    reload_requests: Mutex<Option<tokio::sync::mpsc::Receiver<ReloadRequest>>>,
    /// Whether the resolver is our iterative one (built from `[resolver]`,
    /// so a reload may rebuild it) rather than one a test plugged in.
    owns_resolver: bool,
}

/// The kinds of listen address `[server]` has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `listen`: UDP and TCP.
    Dns,
    /// `tls_listen`: DNS over TLS.
    Dot,
    /// `https_listen`: DNS over HTTPS.
    Https,
    /// `https_listen_plain`: DoH over plain HTTP behind a proxy.
    HttpPlain,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Dns => "listen",
            Kind::Dot => "tls_listen",
            Kind::Https => "https_listen",
            Kind::HttpPlain => "https_listen_plain",
        }
    }
}

/// One listen address in service.
struct Listening {
    kind: Kind,
    /// As configured (port 0 stays 0, so a reload sees it unchanged).
    configured: SocketAddr,
    /// As bound.
    bound: SocketAddr,
    /// Closes this address alone (a child of the daemon's shutdown).
    stop: CancellationToken,
}

/// Sockets bound for one listen address, not serving yet.
struct Pending {
    kind: Kind,
    configured: SocketAddr,
    bound: SocketAddr,
    sockets: Sockets,
}

enum Sockets {
    Dns(Vec<std::net::UdpSocket>, tokio::net::TcpListener),
    Stream(tokio::net::TcpListener),
}

/// Starts serving bound sockets.
struct Spawner {
    handler: Arc<Handler>,
    limits: tcp::TcpLimits,
    slots: Arc<Semaphore>,
    proxy: Arc<ProxyPolicy>,
    tasks: TaskTracker,
    workers: usize,
}

impl Spawner {
    fn bind(&self, kind: Kind, want: SocketAddr) -> Result<Pending, BindError> {
        let listener: tokio::net::TcpListener = match kind {
            Kind::Dns => {
                // Port 0 (tests): siblings and TCP must share the port the
                // first socket got, which another program may hold for
                // TCP; then start over on another port.
                let mut bound = bind_group(want, self.workers);
                if want.port() == 0 {
                    for _ in 1..PORT_ZERO_ATTEMPTS {
                        if bound.is_ok() {
                            break;
                        }
                        bound = bind_group(want, self.workers);
                    }
                }
                let (addr, udps, tcp) = bound?;
                return Ok(Pending {
                    kind,
                    configured: want,
                    bound: addr,
                    sockets: Sockets::Dns(udps, tcp),
                });
            }
            Kind::Dot | Kind::Https | Kind::HttpPlain => {
                let proto = match kind {
                    Kind::Dot => "dot",
                    Kind::Https => "https",
                    _ => "http",
                };
                tcp::bind(want).map_err(|e| BindError { proto, ..e })?
            }
        };
        let bound = listener.local_addr().map_err(|source| BindError {
            proto: "tcp",
            addr: want,
            source,
        })?;
        Ok(Pending {
            kind,
            configured: want,
            bound,
            sockets: Sockets::Stream(listener),
        })
    }

    fn spawn(&self, p: Pending, tls: Option<&Arc<Tls>>, stop: CancellationToken) -> Listening {
        let shared = ListenerShared {
            handler: self.handler.clone(),
            limits: self.limits,
            slots: self.slots.clone(),
            shutdown: stop.clone(),
            tasks: self.tasks.clone(),
        };
        match p.sockets {
            Sockets::Dns(udps, l) => {
                for s in udps {
                    self.tasks.spawn(udp::serve(
                        Arc::new(s),
                        self.handler.clone(),
                        stop.clone(),
                        self.tasks.clone(),
                    ));
                }
                self.tasks.spawn(tcp::serve(
                    l,
                    self.handler.clone(),
                    self.limits,
                    self.slots.clone(),
                    stop.clone(),
                    self.tasks.clone(),
                ));
            }
            Sockets::Stream(l) => match (p.kind, tls) {
                (Kind::Dot, Some(t)) => {
                    self.tasks
                        .spawn(tls::serve_dot(l, t.clone(), self.proxy.clone(), shared));
                }
                (Kind::Https, Some(t)) => {
                    self.tasks.spawn(doh::serve_doh(
                        l,
                        Some(t.clone()),
                        self.proxy.clone(),
                        shared,
                    ));
                }
                (Kind::HttpPlain, _) => {
                    self.tasks
                        .spawn(doh::serve_doh(l, None, self.proxy.clone(), shared));
                }
                // Validated before: TLS kinds always come with a certificate.
                _ => {}
            },
        }
        Listening {
            kind: p.kind,
            configured: p.configured,
            bound: p.bound,
            stop,
        }
    }
}

/// Every listen address a configuration asks for, in order.
fn wanted(cfg: &Config) -> Vec<(Kind, SocketAddr)> {
    let s = &cfg.server;
    s.listen
        .iter()
        .map(|a| (Kind::Dns, *a))
        .chain(s.tls_listen.iter().map(|a| (Kind::Dot, *a)))
        .chain(s.https_listen.iter().map(|a| (Kind::Https, *a)))
        .chain(s.https_listen_plain.iter().map(|a| (Kind::HttpPlain, *a)))
        .collect()
}

/// A `control reload` waiting for its outcome: the text to send back.
pub type ReloadRequest = tokio::sync::oneshot::Sender<String>;

/// What a reload changed, and what it could not.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Settings now in force, one phrase each.
    pub changed: Vec<String>,
    /// Keys whose new value waits for a restart.
    pub needs_restart: Vec<String>,
}

impl std::fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.changed.is_empty() {
            write!(f, "nothing changed")?;
        } else {
            write!(f, "changed: {}", self.changed.join(", "))?;
        }
        if !self.needs_restart.is_empty() {
            write!(
                f,
                "; needs a restart to change: {}",
                self.needs_restart.join(", ")
            )?;
        }
        Ok(())
    }
}

/// A reload refused; every reason found, and nothing was changed.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct ReloadError(pub Vec<String>);

/// Compares two settings through their `Debug` form: the config types do
/// not all implement `PartialEq`, and a reload runs seldom.
fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

impl Daemon {
    /// Starts with the iterative resolver.
    pub async fn start(cfg: &Config) -> Result<Daemon, StartError> {
        let metrics = Arc::new(Metrics::default());
        let resolver = build_resolver(cfg, metrics.clone())?;
        let mut d = Daemon::start_with(cfg, resolver, metrics).await?;
        d.owns_resolver = true;
        Ok(d)
    }

    /// Starts with any resolver (tests plug in their own).
    pub async fn start_with(
        cfg: &Config,
        resolver: Arc<dyn Resolve>,
        metrics: Arc<Metrics>,
    ) -> Result<Daemon, StartError> {
        let zones = Arc::new(build_zones(cfg)?);
        let l2 = match &cfg.cache.redis {
            Some(r) => Some(crate::cache_l2::SharedCache::new(
                r,
                &cfg.cache,
                &cfg.base_dir,
            )?),
            None => None,
        };
        let handler = Arc::new(
            Handler::new(
                HandlerConfig {
                    allow: cfg.server.allow.clone(),
                    udp_payload_size: cfg.server.udp_payload_size,
                    max_pending: cfg.resolver.max_pending,
                    cookies: cfg
                        .server
                        .cookies
                        .then(|| crate::cookies::parse_secret(&cfg.server.cookie_secret).ok()),
                    ratelimit: cfg.server.ratelimit.clone(),
                },
                zones.clone(),
                AnswerCache::new(&cfg.cache)
                    .with_bogus_ttl(cfg.dnssec.bogus_ttl.0.as_secs() as u32),
                resolver,
                metrics,
            )
            .with_shared_cache(l2),
        );
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let spawner = Spawner {
            handler: handler.clone(),
            limits: tcp::TcpLimits {
                idle_timeout: cfg.server.tcp_idle_timeout.0,
                max_inflight: cfg.server.tcp_max_inflight,
            },
            slots: Arc::new(Semaphore::new(cfg.server.tcp_max_connections)),
            proxy: Arc::new(ProxyPolicy::new(cfg.server.proxy_protocol_from.clone())),
            tasks: tasks.clone(),
            workers: cfg.worker_threads().max(1),
        };
        let tls = if cfg.needs_tls() {
            let (cert, key) = cfg.tls_files().ok_or(TlsError::NotConfigured)?;
            Some(Arc::new(Tls::load(&cert, &key)?))
        } else {
            None
        };
        // Bind everything before serving anything, so a bad address fails
        // start-up cleanly instead of leaving half a daemon running.
        let pending = wanted(cfg)
            .into_iter()
            .map(|(kind, addr)| spawner.bind(kind, addr))
            .collect::<Result<Vec<_>, BindError>>()?;
        let metrics_listener = match cfg.metrics.listen {
            Some(addr) => Some((
                addr,
                crate::exporter::bind(addr)
                    .map_err(|source| StartError::Metrics { addr, source })?,
            )),
            None => None,
        };
        let listeners: Vec<Listening> = pending
            .into_iter()
            .map(|p| spawner.spawn(p, tls.as_ref(), shutdown.child_token()))
            .collect();
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
        if cfg.control.enabled {
            // Serving DNS matters more than the control socket: an
            // unprivileged run without access to /run still answers queries.
            if let Err(e) = crate::control::start(
                &cfg.control.socket,
                handler.clone(),
                reload_tx,
                shutdown.clone(),
                &tasks,
            ) {
                tracing::warn!(
                    "control socket {} unavailable ({e}); `resolvd control` will not work (set [control] socket)",
                    cfg.control.socket.display()
                );
            }
        }
        let metrics_endpoint = match metrics_listener {
            Some((addr, l)) => {
                let stop = shutdown.child_token();
                let bound = crate::exporter::serve(
                    l,
                    Arc::new(crate::exporter::Exporter::new(handler.clone())),
                    stop.clone(),
                    &tasks,
                )
                .map_err(|source| StartError::Metrics { addr, source })?;
                Some((addr, bound, stop))
            }
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
            handler,
            listeners: Mutex::new(listeners),
            spawner,
            tls: Mutex::new(tls),
            shutdown,
            tasks,
            grace: cfg.server.shutdown_grace.0,
            health: Mutex::new(Some(health)),
            metrics_endpoint: Mutex::new(metrics_endpoint),
            persist,
            current: Mutex::new(cfg.clone()),
            reload_requests: Mutex::new(Some(reload_rx)),
            owns_resolver: false,
        })
    }

    fn bound(&self, kind: Kind) -> Vec<SocketAddr> {
        lock(&self.listeners)
            .iter()
            .filter(|l| l.kind == kind)
            .map(|l| l.bound)
            .collect()
    }

    /// The bound addresses (with real ports when 0 was asked for).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.bound(Kind::Dns)
    }

    /// The bound DNS-over-TLS addresses.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.bound(Kind::Dot)
    }

    /// The bound DNS-over-HTTPS addresses.
    pub fn https_addrs(&self) -> Vec<SocketAddr> {
        self.bound(Kind::Https)
    }

    /// The bound plain-HTTP DoH addresses.
    pub fn https_plain_addrs(&self) -> Vec<SocketAddr> {
        self.bound(Kind::HttpPlain)
    }

    /// The bound Prometheus endpoint, when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        lock(&self.metrics_endpoint).as_ref().map(|m| m.1)
    }

    /// The `control reload` requests, once: the caller re-reads the
    /// configuration (it knows the file and the command-line overrides),
    /// calls [`Daemon::reload`] and answers each with the outcome.
    pub fn take_reload_requests(&self) -> Option<tokio::sync::mpsc::Receiver<ReloadRequest>> {
        lock(&self.reload_requests).take()
    }

    /// The query handler (cache, zones, metrics).
    pub fn handler(&self) -> &Arc<Handler> {
        &self.handler
    }

    /// Applies a new configuration to the running daemon. Everything is
    /// checked first (zones, certificate, root hints, new listen and
    /// metrics addresses bound); on any error nothing changes and every
    /// reason is returned. Then, at once: zones and pools, the certificate,
    /// `allow`, the cache's TTL policy, `[resolver]` (a new resolver; the
    /// answer cache is kept), `[dnstap]`, `[metrics] listen`, and the
    /// listen addresses: new ones bound, removed ones closed, unchanged
    /// sockets kept, so no query to them is lost. Settings that cannot
    /// change in place are listed in the report.
    pub fn reload(&self, cfg: &Config) -> Result<ReloadReport, ReloadError> {
        let old = lock(&self.current).clone();
        let mut errors: Vec<String> = Vec::new();
        let zones = build_zones(cfg)
            .map_err(|e| errors.push(e.to_string()))
            .ok();
        // Certificate: loaded (and so checked) now, swapped in below.
        let tls_files = if cfg.needs_tls() {
            match cfg.tls_files() {
                Some((cert, key)) => match tls::load_certified_key(&cert, &key) {
                    Ok(_) => Some((cert, key)),
                    Err(e) => {
                        errors.push(e.to_string());
                        None
                    }
                },
                None => {
                    errors.push(TlsError::NotConfigured.to_string());
                    None
                }
            }
        } else {
            None
        };
        let resolver_changed = self.owns_resolver
            && (differs(&old.resolver, &cfg.resolver) || differs(&old.base_dir, &cfg.base_dir));
        let resolver = if resolver_changed {
            build_resolver(cfg, self.handler.metrics.clone())
                .map_err(|e| errors.push(e.to_string()))
                .ok()
        } else {
            None
        };
        // Listeners: bind what is new before closing anything.
        let want = wanted(cfg);
        let (kept, removed): (Vec<_>, Vec<_>) = {
            let have = lock(&self.listeners);
            have.iter()
                .map(|l| (l.kind, l.configured))
                .partition(|k| want.contains(k))
        };
        let mut pending = Vec::new();
        for (kind, addr) in want.iter().copied() {
            if kept.contains(&(kind, addr)) {
                continue;
            }
            match self.spawner.bind(kind, addr) {
                Ok(p) => pending.push(p),
                Err(e) => errors.push(format!("{}: {e}", kind.key())),
            }
        }
        let metrics_changed = cfg.metrics.listen != old.metrics.listen;
        let metrics_listener = match (metrics_changed, cfg.metrics.listen) {
            (true, Some(addr)) => match crate::exporter::bind(addr) {
                Ok(l) => Some((addr, l)),
                Err(source) => {
                    errors.push(StartError::Metrics { addr, source }.to_string());
                    None
                }
            },
            _ => None,
        };
        if !errors.is_empty() {
            // What was bound above closes as it drops.
            return Err(ReloadError(errors));
        }

        // Commit: nothing below fails.
        let mut report = ReloadReport::default();
        if let Some(zones) = zones {
            let zones = Arc::new(zones);
            let guard = zones.start_health_checks();
            self.handler.set_zones(zones);
            if let Ok(mut h) = self.health.lock() {
                *h = Some(guard);
            }
            if differs(&old.zone, &cfg.zone) || differs(&old.geo, &cfg.geo) {
                report.changed.push("zones".into());
            }
        }
        if let Some((cert, key)) = tls_files {
            let mut tls = lock(&self.tls);
            match tls.as_ref() {
                Some(t) => {
                    if let Err(e) = t.reload(&cert, &key) {
                        tracing::error!("certificate changed while reloading: {e}");
                    }
                }
                None => match Tls::load(&cert, &key) {
                    Ok(t) => *tls = Some(Arc::new(t)),
                    Err(e) => tracing::error!("certificate changed while reloading: {e}"),
                },
            }
            report.changed.push("certificate".into());
        }
        if differs(&old.server.allow, &cfg.server.allow) {
            self.handler.set_allow(cfg.server.allow.clone());
            report.changed.push("allow".into());
        }
        if differs(&old.cache, &cfg.cache) {
            self.handler.cache.set_config(&cfg.cache);
            report.changed.push("cache".into());
        }
        if let Some(r) = resolver {
            self.handler.set_resolver(r);
            report.changed.push("resolver".into());
        }
        if differs(&old.dnstap, &cfg.dnstap) || differs(&old.base_dir, &cfg.base_dir) {
            // The old writer flushes and sends STOP once its last sender
            // (the handle swapped out here) is gone.
            let tap = cfg.dnstap.socket.as_ref().map(|socket| {
                crate::dnstap::Dnstap::start(
                    &cfg.dnstap,
                    &cfg.base_dir.join(socket),
                    self.handler.metrics.clone(),
                    self.shutdown.clone(),
                    &self.tasks,
                )
            });
            self.handler.set_dnstap(tap);
            report.changed.push("dnstap".into());
        }
        if metrics_changed {
            let mut ep = lock(&self.metrics_endpoint);
            if let Some((_, _, stop)) = ep.take() {
                stop.cancel();
            }
            if let Some((addr, l)) = metrics_listener {
                let stop = self.shutdown.child_token();
                match crate::exporter::serve(
                    l,
                    Arc::new(crate::exporter::Exporter::new(self.handler.clone())),
                    stop.clone(),
                    &self.tasks,
                ) {
                    Ok(bound) => *ep = Some((addr, bound, stop)),
                    Err(e) => tracing::error!("metrics endpoint {addr}: {e}"),
                }
            }
            report.changed.push("metrics".into());
        }
        {
            let tls = lock(&self.tls).clone();
            let mut have = lock(&self.listeners);
            have.retain(|l| {
                if removed.contains(&(l.kind, l.configured)) {
                    l.stop.cancel();
                    report
                        .changed
                        .push(format!("{} -{}", l.kind.key(), l.bound));
                    false
                } else {
                    true
                }
            });
            for p in pending {
                let l = self
                    .spawner
                    .spawn(p, tls.as_ref(), self.shutdown.child_token());
                report
                    .changed
                    .push(format!("{} +{}", l.kind.key(), l.bound));
                have.push(l);
            }
        }
        if differs(&old.log, &cfg.log) {
            report.changed.push("log".into());
        }
        let s = (&old.server, &cfg.server);
        for (key, changed) in [
            ("threads", s.0.threads != s.1.threads),
            (
                "udp_payload_size",
                s.0.udp_payload_size != s.1.udp_payload_size,
            ),
            (
                "tcp_idle_timeout",
                s.0.tcp_idle_timeout != s.1.tcp_idle_timeout,
            ),
            (
                "tcp_max_connections",
                s.0.tcp_max_connections != s.1.tcp_max_connections,
            ),
            (
                "tcp_max_inflight",
                s.0.tcp_max_inflight != s.1.tcp_max_inflight,
            ),
            ("shutdown_grace", s.0.shutdown_grace != s.1.shutdown_grace),
            (
                "batch_scheduling",
                s.0.batch_scheduling != s.1.batch_scheduling,
            ),
            (
                "proxy_protocol_from",
                differs(&s.0.proxy_protocol_from, &s.1.proxy_protocol_from),
            ),
            (
                "cookies",
                s.0.cookies != s.1.cookies || s.0.cookie_secret != s.1.cookie_secret,
            ),
            ("ratelimit", differs(&s.0.ratelimit, &s.1.ratelimit)),
            (
                "max_pending",
                old.resolver.max_pending != cfg.resolver.max_pending,
            ),
            ("cache.max_size", old.cache.max_size != cfg.cache.max_size),
            (
                "cache.persist",
                differs(&old.cache.persist, &cfg.cache.persist),
            ),
            ("cache.redis", differs(&old.cache.redis, &cfg.cache.redis)),
            ("control", differs(&old.control, &cfg.control)),
        ] {
            if changed {
                report.needs_restart.push(key.into());
            }
        }
        *lock(&self.current) = cfg.clone();
        Ok(report)
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

/// Locks a mutex, recovering from a panic elsewhere (the data is plain
/// bookkeeping, always consistent between statements).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The iterative resolver for `cfg` (root hints read now).
fn build_resolver(cfg: &Config, metrics: Arc<Metrics>) -> Result<Arc<dyn Resolve>, StartError> {
    let hints = match &cfg.resolver.root_hints {
        Some(p) => RootHints::load(&cfg.base_dir.join(p))?,
        None => RootHints::iana(),
    };
    let forward = crate::resolve::forward::ForwardZones::build(
        &cfg.forward,
        &cfg.base_dir,
        cfg.resolver.query_deadline.0,
    )?;
    let dnssec = Dnssec::from_config(&cfg.dnssec, &cfg.base_dir)?.map(Arc::new);
    match &dnssec {
        Some(d) => tracing::info!(anchors = ?d.anchored_zones(), "DNSSEC validation on"),
        None => tracing::warn!("DNSSEC validation off ([dnssec] validation = false)"),
    }
    Ok(Arc::new(
        IterativeResolver::new(cfg.resolver.clone(), &cfg.cache, hints, metrics, dnssec)
            .with_forward(forward),
    ))
}

/// Tries at binding a port-0 listen address (tests) before giving up.
const PORT_ZERO_ATTEMPTS: usize = 16;

/// One listen address bound: the address (with the port the kernel chose
/// for port 0), a UDP socket per worker (SO_REUSEPORT) and the TCP listener.
type BoundGroup = (
    SocketAddr,
    Vec<std::net::UdpSocket>,
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
