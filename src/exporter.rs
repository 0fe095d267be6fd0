//! The Prometheus endpoint (`[metrics] listen`): `GET /metrics` in the
//! Prometheus text exposition format 0.0.4, served by a small hyper
//! HTTP/1.1 listener.
//!
//! Nothing here runs per query. The query path keeps counting into the
//! relaxed atomics of [`crate::metrics::Metrics`]; a scrape reads them
//! through a prometheus-client [`Collector`] and renders them with the
//! conventional names: `resolvd_` prefix, the unit in the name, `_total` on
//! counters.

use crate::handler::{Handler, Transport};
use crate::metrics::{Metrics, QTYPES, RCODES};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The path Prometheus scrapes by default.
pub const PATH: &str = "/metrics";

/// How long one scrape connection may stay open: a scraper that stalls
/// must not hold a task forever.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Scrape connections served at once; more are closed on accept, so a
/// flood on the metrics port cannot pile up tasks (a Prometheus server
/// needs one).
const MAX_CONNECTIONS: usize = 16;

/// Reads the daemon's counters at scrape time.
pub struct Exporter {
    handler: Arc<Handler>,
    /// Seconds since the Unix epoch at start (`process_start_time_seconds`).
    started: f64,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("started", &self.started)
            .finish()
    }
}

impl Exporter {
    /// An exporter for `handler`'s counters, started now.
    pub fn new(handler: Arc<Handler>) -> Exporter {
        Exporter {
            handler,
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        }
    }

    /// The whole exposition text, as `/metrics` returns it.
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = Registry::with_prefix("resolvd");
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

/// One counter without labels.
fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    let m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

/// One gauge without labels.
fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: f64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    let m = enc.encode_descriptor(name, help, unit, g.metric_type())?;
    g.encode(m)
}

/// A counter family with one label.
fn counters<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (l, v) in values {
        ConstCounter::new(v).encode(m.encode_family(&[(label, l)])?)?;
    }
    Ok(())
}

impl Collector for Exporter {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m: &Metrics = &self.handler.metrics;
        let g = |c: &AtomicU64| c.load(Relaxed);
        let counts = m.query_counts();
        {
            let mut e = enc.encode_descriptor(
                "build_info",
                "Version of the running resolvd (always 1)",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(1i64)
                .encode(e.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;
        }
        gauge(
            &mut enc,
            "process_start_time",
            "Start time of the daemon since the Unix epoch",
            Some(&Unit::Seconds),
            self.started,
        )?;
        counters(
            &mut enc,
            "queries",
            "Queries read, by transport",
            "transport",
            [
                ("udp", counts.queries_over(Transport::Udp)),
                ("tcp", counts.queries_over(Transport::Tcp)),
                ("dot", counts.queries_over(Transport::Dot)),
                ("doh", counts.queries_over(Transport::Doh)),
            ],
        )?;
        counters(
            &mut enc,
            "queries_by_type",
            "Queries that parsed, by QTYPE",
            "type",
            QTYPES
                .iter()
                .map(|(_, n)| *n)
                .chain(["other"])
                .zip(counts.qtypes),
        )?;
        counters(
            &mut enc,
            "responses",
            "Replies sent, by RCODE",
            "rcode",
            RCODES.iter().copied().zip(counts.rcodes),
        )?;
        counter(
            &mut enc,
            "cache_hits",
            "Queries answered from the cache",
            counts.hits,
        )?;
        counter(
            &mut enc,
            "cache_misses",
            "Queries that needed resolution",
            g(&m.misses),
        )?;
        let (entries, bytes) = self.handler.cache.usage();
        gauge(
            &mut enc,
            "cache_entries",
            "Answers held in the cache",
            None,
            entries as f64,
        )?;
        gauge(
            &mut enc,
            "cache_size",
            "Memory the cached answers are charged for",
            Some(&Unit::Bytes),
            bytes as f64,
        )?;
        counter(
            &mut enc,
            "cache_evictions",
            "Answers evicted by the cache's memory bound",
            self.handler.cache.evictions(),
        )?;
        counter(
            &mut enc,
            "cache_prefetches",
            "Background refreshes of entries near expiry",
            g(&m.prefetches),
        )?;
        counter(
            &mut enc,
            "cache_stale_answers",
            "Expired answers served (RFC 8767)",
            g(&m.stale_served),
        )?;
        {
            let h = m.latency_snapshot();
            let mut e = enc.encode_descriptor(
                "resolution_duration",
                "Time from query to reply for queries the cache could not answer",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            e.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                h.sum_seconds,
                h.count,
                &h.buckets,
                None,
            )?;
        }
        counter(
            &mut enc,
            "upstream_queries",
            "Queries sent to upstream servers",
            g(&m.upstream_queries),
        )?;
        counters(
            &mut enc,
            "upstream_outcomes",
            "Upstream exchanges by outcome",
            "outcome",
            [
                ("answered", g(&m.upstream_answered)),
                ("lame", g(&m.upstream_lame)),
                ("timeout", g(&m.upstream_timeouts)),
                ("error", g(&m.upstream_errors)),
            ],
        )?;
        counter(
            &mut enc,
            "upstream_tcp_fallbacks",
            "Upstream exchanges retried over TCP after a truncated reply",
            g(&m.upstream_tcp_fallbacks),
        )?;
        {
            let servers = self.handler.servers();
            let dead = servers.iter().filter(|s| s.dead_for.is_some()).count();
            let lame = servers.iter().filter(|s| !s.lame_for.is_empty()).count();
            let mut e = enc.encode_descriptor(
                "upstream_servers_held_down",
                "Upstream addresses held down now, by reason",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(dead as i64).encode(e.encode_family(&[("reason", "dead")])?)?;
            ConstGauge::new(lame as i64).encode(e.encode_family(&[("reason", "lame")])?)?;
        }
        counter(
            &mut enc,
            "local_answers",
            "Queries answered by local zones",
            g(&m.local),
        )?;
        {
            let members = self.handler.zones.load().pool_members();
            let mut e = enc.encode_descriptor(
                "pool_selections",
                "Answers each pool member was drawn into",
                None,
                MetricType::Counter,
            )?;
            for p in &members {
                let labels = [
                    ("pool", p.pool.as_str()),
                    ("type", p.rtype.as_str()),
                    ("member", p.member.as_str()),
                ];
                ConstCounter::new(p.selections).encode(e.encode_family(&labels)?)?;
            }
            let mut e = enc.encode_descriptor(
                "pool_member_up",
                "Whether health checks hold a pool member up (1) or down (0)",
                None,
                MetricType::Gauge,
            )?;
            for p in &members {
                let labels = [
                    ("pool", p.pool.as_str()),
                    ("type", p.rtype.as_str()),
                    ("member", p.member.as_str()),
                ];
                ConstGauge::new(i64::from(p.up)).encode(e.encode_family(&labels)?)?;
            }
        }
        counter(
            &mut enc,
            "coalesced_queries",
            "Queries that joined a resolution already in progress",
            g(&m.coalesced),
        )?;
        counter(
            &mut enc,
            "dropped_queries",
            "Queries dropped because max_pending resolutions were waiting",
            g(&m.dropped),
        )?;
        counter(
            &mut enc,
            "refused_queries",
            "Queries refused by the access list",
            g(&m.refused),
        )?;
        counter(
            &mut enc,
            "malformed_queries",
            "Queries answered FORMERR/NOTIMP or dropped as malformed",
            g(&m.malformed),
        )?;
        counter(
            &mut enc,
            "ratelimited_queries",
            "UDP queries dropped by queries_per_second",
            g(&m.ratelimited),
        )?;
        counters(
            &mut enc,
            "rrl_responses",
            "UDP replies affected by response rate limiting",
            "action",
            [
                ("dropped", g(&m.rrl_dropped)),
                ("slipped", g(&m.rrl_slipped)),
            ],
        )?;
        counter(
            &mut enc,
            "badcookie_responses",
            "BADCOOKIE replies sent",
            g(&m.badcookie),
        )?;
        counters(
            &mut enc,
            "tls_handshakes",
            "TLS handshakes on DoT and DoH listeners, by result",
            "result",
            [
                (
                    "full",
                    g(&m.tls_handshakes).saturating_sub(g(&m.tls_resumed)),
                ),
                ("resumed", g(&m.tls_resumed)),
                ("failed", g(&m.tls_failures)),
            ],
        )?;
        counter(
            &mut enc,
            "proxy_rejected_connections",
            "Connections closed over their PROXY header",
            g(&m.proxy_rejected),
        )?;
        counter(
            &mut enc,
            "doh_http_errors",
            "DoH requests answered with an HTTP error status",
            g(&m.doh_http_errors),
        )?;
        counters(
            &mut enc,
            "dnssec_answers",
            "Resolved answers by DNSSEC validation state",
            "state",
            [
                ("secure", g(&m.dnssec_secure)),
                ("insecure", g(&m.dnssec_insecure)),
                ("bogus", g(&m.dnssec_bogus)),
            ],
        )?;
        counter(
            &mut enc,
            "dnstap_messages",
            "dnstap messages queued for the writer",
            g(&m.dnstap_sent),
        )?;
        counter(
            &mut enc,
            "dnstap_dropped_messages",
            "dnstap messages dropped (queue full or no reader)",
            g(&m.dnstap_dropped),
        )?;
        Ok(())
    }
}

/// Binds the endpoint's address (separately from [`serve`], so a reload
/// can fail on a taken address before it changes anything).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves `/metrics` on a bound listener until `shutdown`. Returns the
/// bound address.
pub fn serve(
    std_listener: std::net::TcpListener,
    exporter: Arc<Exporter>,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> std::io::Result<SocketAddr> {
    let bound = std_listener.local_addr()?;
    let listener = TcpListener::from_std(std_listener)?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tasks.spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(_) => {
                        // Out of descriptors: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let exporter = exporter.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let exporter = exporter.clone();
                    async move { Ok::<_, Infallible>(respond(&exporter, &req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn) => {}
                }
            });
        }
    });
    Ok(bound)
}

fn respond(exporter: &Arc<Exporter>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let status = |code: StatusCode| {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = code;
        r
    };
    if req.uri().path() != PATH {
        return status(StatusCode::NOT_FOUND);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let mut r = Response::new(Full::new(Bytes::from(exporter.render())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(prometheus_client::encoding::prometheus_text::CONTENT_TYPE),
    );
    r
}
