//! The shared answer cache (L2) on Redis or Valkey, behind the in-process
//! cache (L1, [`crate::cache`]), so a fleet of instances pays each cold
//! miss once and a restarted instance starts warm (Unbound's `cachedb`).
//!
//! - Read: an L1 miss asks L2 (one GET, bounded by `timeout`) before
//!   resolving; a hit goes into L1 with its remaining TTL, never extended.
//! - Write: a resolution goes into L1 at once and into a bounded queue
//!   that one task drains into Redis in pipelined SETs; when the queue is
//!   full the write is dropped, never waited for.
//! - Entry: the answer in wire form (the message as L1 holds it, and its
//!   DNSSEC variant for DO=1 clients) after a header with a format
//!   version, the DNSSEC security state (RFC 4035 §4.3; believed only
//!   with `trust_shared_validation`), the RCODE, the absolute expiry and
//!   the time the TTLs were current. Redis expires the key after the
//!   remaining TTL (plus the serve-stale window when serve-stale is on),
//!   so dead entries go by
//!   themselves.
//! - Shared: positive answers, NXDOMAIN and NODATA (RFC 2308). Never:
//!   failures (SERVFAIL, RFC 9520 entries), local-zone and pool answers
//!   (drawn per query; they never reach resolution), answers with an ECS
//!   scope (RFC 7871) or an extended error, authoritative (local) data,
//!   bogus answers.
//! - Failure: every lookup has the timeout; consecutive failures open a
//!   circuit breaker that skips Redis for `breaker_backoff` (logged once),
//!   then one probe decides. Data that does not decode (another version,
//!   truncated, expired, another question) is ignored and counted.

use crate::cache::Entry;
use crate::config::{CacheConfig, Dur};
use crate::validate::Security;
use crate::wire::answer::WireAnswer;
use hickory_proto::rr::Name;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// `[cache.redis]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db`, or `rediss://` for TLS; used when
    /// `cluster` is empty.
    pub url: String,
    /// Seed nodes of a Redis Cluster (`redis://host:port` each); when set,
    /// `url` is not used.
    pub cluster: Vec<String>,
    /// PEM file of the CA that signed the servers' certificates, for
    /// `rediss://` with a private CA (relative to the config file);
    /// absent = the system's roots.
    pub ca: Option<std::path::PathBuf>,
    /// Prefix of every key, so several fleets can share one Redis.
    pub key_prefix: String,
    /// Bound on one L2 lookup (connect included); a slower Redis is a miss.
    pub timeout: Dur,
    /// Connections to a single Redis, used in turn (each is multiplexed).
    pub pool_size: usize,
    /// Answers waiting to be written; beyond this, writes are dropped.
    pub write_queue: usize,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker skips Redis before probing it again.
    pub breaker_backoff: Dur,
    /// Believe the DNSSEC state another instance stored with an answer
    /// (the fleet is one trust domain); false = validated entries are
    /// misses, and this instance validates for itself.
    pub trust_shared_validation: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379/0".into(),
            cluster: Vec::new(),
            ca: None,
            key_prefix: "resolvd:".into(),
            timeout: Dur::millis(30),
            pool_size: 4,
            write_queue: 10_000,
            breaker_failures: 5,
            breaker_backoff: Dur::secs(5),
            trust_shared_validation: true,
        }
    }
}

impl RedisConfig {
    /// What is wrong with it, as (key, message).
    pub fn check(&self) -> Vec<(&'static str, String)> {
        let mut errs = Vec::new();
        if self.cluster.is_empty() {
            if let Err(e) = redis::Client::open(self.url.as_str()) {
                errs.push(("url", format!("{:?}: {e}", self.url)));
            }
        } else if let Err(e) = redis::cluster::ClusterClient::new(self.cluster.clone()) {
            errs.push(("cluster", e.to_string()));
        }
        if self.timeout.0.is_zero() {
            errs.push(("timeout", "must be above 0".into()));
        }
        if self.pool_size == 0 {
            errs.push(("pool_size", "must be at least 1".into()));
        }
        if self.write_queue == 0 {
            errs.push(("write_queue", "must be at least 1".into()));
        }
        if self.breaker_failures == 0 {
            errs.push(("breaker_failures", "must be at least 1".into()));
        }
        errs
    }
}

/// Why the shared cache could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("[cache.redis]: {0}")]
pub struct L2Error(String);

/// Entry format written by this version (first byte of every value).
pub const FORMAT_VERSION: u8 = 1;
/// Bytes before the messages: version, security state (the validator's
/// [`Security`] as a number; Bogus never written), flags, RCODE, expiry
/// (u64 ms), TTLs-current time (u64 ms), length of the plain message
/// (u16). The plain message follows, then the DNSSEC variant (RRSIG and
/// NSEC records kept, for DO=1 clients) or nothing.
const HEADER: usize = 22;
/// Longest a `flush` may scan and delete.
const FLUSH_TIME: Duration = Duration::from_secs(30);
/// Most SETs sent in one pipeline.
const WRITE_BATCH: usize = 64;

/// L2 counters for `resolvd control stats` (relaxed atomics).
#[derive(Default)]
pub struct L2Stats {
    /// Lookups answered from Redis.
    pub hits: AtomicU64,
    /// Lookups Redis had nothing (live) for.
    pub misses: AtomicU64,
    /// Lookups and write batches that failed or timed out.
    pub errors: AtomicU64,
    /// Lookups and writes skipped while the breaker was open.
    pub skipped: AtomicU64,
    /// Values ignored as undecodable: wrong version, truncated, another
    /// question, nonsense times.
    pub bad: AtomicU64,
    /// Answers written.
    pub writes: AtomicU64,
    /// Writes dropped because the queue was full.
    pub writes_dropped: AtomicU64,
}

impl L2Stats {
    /// `key value` lines.
    pub fn render(&self) -> String {
        let g = |c: &AtomicU64| c.load(Relaxed);
        format!(
            "l2_hits {}\nl2_misses {}\nl2_errors {}\nl2_skipped {}\nl2_bad {}\nl2_writes {}\nl2_writes_dropped {}\n",
            g(&self.hits),
            g(&self.misses),
            g(&self.errors),
            g(&self.skipped),
            g(&self.bad),
            g(&self.writes),
            g(&self.writes_dropped),
        )
    }
}

/// Skips Redis after consecutive failures, for a backoff period.
struct Breaker {
    threshold: u32,
    backoff: Duration,
    failures: AtomicU32,
    /// Milliseconds since `origin` until which Redis is skipped; 0 = closed.
    open_until: AtomicU64,
    /// Whether the opening was logged (once per outage).
    logged: AtomicBool,
    origin: Instant,
}

impl Breaker {
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }

    /// Whether Redis may be tried now (closed, or open and past backoff:
    /// a probe).
    fn allow(&self) -> bool {
        let until = self.open_until.load(Relaxed);
        until == 0 || self.now_ms() >= until
    }

    fn success(&self) {
        self.failures.store(0, Relaxed);
        if self.open_until.swap(0, Relaxed) != 0 && self.logged.swap(false, Relaxed) {
            tracing::info!("Redis (shared cache) answers again; using it");
        }
    }

    fn failure(&self, why: &str) {
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        // A failed probe (the breaker was open) opens it again at once.
        if n >= self.threshold || self.open_until.load(Relaxed) != 0 {
            self.open_until
                .store(self.now_ms() + self.backoff.as_millis() as u64, Relaxed);
            if !self.logged.swap(true, Relaxed) {
                tracing::warn!(
                    "Redis (shared cache) failing ({why}); skipping it, retrying every {} ms",
                    self.backoff.as_millis()
                );
            }
        }
    }
}

/// A connection of either kind (both multiplex, both are cheap to clone).
#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }

    async fn pipeline(&mut self, p: &redis::Pipeline) -> redis::RedisResult<()> {
        match self {
            Conn::Single(c) => p.query_async(c).await,
            Conn::Cluster(c) => p.query_async(c).await,
        }
    }
}

/// Clients are built once and live as long as the cache: their size
/// does not matter, so neither variant is boxed.
#[allow(clippy::large_enum_variant)]
enum Client {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

/// Connections, made lazily and dropped on error so the next use
/// reconnects (Redis restarted).
struct Backend {
    client: Client,
    slots: Vec<tokio::sync::Mutex<Option<Conn>>>,
    next: AtomicUsize,
    timeout: Duration,
}

impl Backend {
    /// Runs `f` on a connection; when it fails on a connection made
    /// earlier (Redis restarted since, so it is dead), once more on a new
    /// one. Failed connections are forgotten.
    async fn run<T, F, Fut>(&self, f: F) -> redis::RedisResult<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let mut last = None;
        for _ in 0..2 {
            let (slot, c, fresh) = self.conn().await?;
            match f(c).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    self.drop_conn(slot).await;
                    if fresh {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Client, "no attempt made"))
        }))
    }

    /// A connection, the slot it belongs to, and whether it is new.
    async fn conn(&self) -> redis::RedisResult<(usize, Conn, bool)> {
        let i = self.next.fetch_add(1, Relaxed) % self.slots.len().max(1);
        let Some(slot) = self.slots.get(i) else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "no connection slots",
            )));
        };
        let mut g = slot.lock().await;
        if let Some(c) = g.as_ref() {
            return Ok((i, c.clone(), false));
        }
        let c = match &self.client {
            Client::Single(c) => {
                let cfg = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(None);
                Conn::Single(c.get_multiplexed_async_connection_with_config(&cfg).await?)
            }
            Client::Cluster(c) => Conn::Cluster(c.get_async_connection().await?),
        };
        *g = Some(c.clone());
        Ok((i, c, true))
    }

    /// Forgets a broken connection.
    async fn drop_conn(&self, i: usize) {
        if let Some(slot) = self.slots.get(i) {
            *slot.lock().await = None;
        }
    }
}

/// What the lookups and the writer task share.
struct Shared {
    backend: Backend,
    breaker: Breaker,
    stats: Arc<L2Stats>,
}

/// One answer on its way to Redis.
struct Write {
    key: Vec<u8>,
    value: Vec<u8>,
    expire_secs: u64,
}

/// The shared cache: a handle for the handler; the writer task stops when
/// it is dropped.
pub struct SharedCache {
    shared: Arc<Shared>,
    writes: mpsc::Sender<Write>,
    prefix: Vec<u8>,
    timeout: Duration,
    /// Extra Redis lifetime: the serve-stale window, when serve-stale is on.
    stale_window: u64,
    /// Believe the security state other instances stored; when false,
    /// validated entries are misses and this instance validates itself.
    trust_shared_validation: bool,
}

impl SharedCache {
    /// Sets up clients (no connection yet: Redis being down must not stop
    /// resolvd from starting) and the writer task. Needs a tokio runtime.
    pub fn new(
        cfg: &RedisConfig,
        cache: &CacheConfig,
        base_dir: &std::path::Path,
    ) -> Result<SharedCache, L2Error> {
        let certs = match &cfg.ca {
            None => None,
            Some(p) => {
                let path = base_dir.join(p);
                let pem = std::fs::read(&path)
                    .map_err(|e| L2Error(format!("ca {}: {e}", path.display())))?;
                Some(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                })
            }
        };
        let err = |e: redis::RedisError| L2Error(e.to_string());
        let client = if cfg.cluster.is_empty() {
            Client::Single(match certs {
                None => redis::Client::open(cfg.url.as_str()).map_err(err)?,
                Some(c) => redis::Client::build_with_tls(cfg.url.as_str(), c).map_err(err)?,
            })
        } else {
            let mut b = redis::cluster::ClusterClient::builder(cfg.cluster.clone())
                .connection_timeout(cfg.timeout.0);
            if let Some(c) = certs {
                b = b.certs(c);
            }
            Client::Cluster(b.build().map_err(err)?)
        };
        let pool = if cfg.cluster.is_empty() {
            cfg.pool_size.max(1)
        } else {
            1
        };
        let shared = Arc::new(Shared {
            backend: Backend {
                client,
                slots: (0..pool).map(|_| tokio::sync::Mutex::new(None)).collect(),
                next: AtomicUsize::new(0),
                timeout: cfg.timeout.0,
            },
            breaker: Breaker {
                threshold: cfg.breaker_failures.max(1),
                backoff: cfg.breaker_backoff.0,
                failures: AtomicU32::new(0),
                open_until: AtomicU64::new(0),
                logged: AtomicBool::new(false),
                origin: Instant::now(),
            },
            stats: Arc::new(L2Stats::default()),
        });
        let (tx, rx) = mpsc::channel(cfg.write_queue.max(1));
        // Writes get more time than lookups: nobody waits for them, and a
        // batch carries up to WRITE_BATCH answers.
        tokio::spawn(write_loop(shared.clone(), rx, cfg.timeout.0 * 10));
        Ok(SharedCache {
            shared,
            writes: tx,
            prefix: cfg.key_prefix.as_bytes().to_vec(),
            timeout: cfg.timeout.0,
            stale_window: if cache.serve_stale {
                cache.stale_max.0.as_secs()
            } else {
                0
            },
            trust_shared_validation: cfg.trust_shared_validation,
        })
    }

    /// The counters.
    pub fn stats(&self) -> &L2Stats {
        &self.shared.stats
    }

    /// The Redis key for a cache key (lower-cased wire name + QTYPE):
    /// prefix, format version, the name in text and the type number, so
    /// an operator can read it (`resolvd:v1:www.example.com./1`) and
    /// instances of another format never read these.
    pub fn redis_key(&self, key: &[u8]) -> Vec<u8> {
        let mut out = self.prefix.clone();
        out.extend_from_slice(format!("v{FORMAT_VERSION}:").as_bytes());
        let (name, qtype) = key.split_at(key.len().saturating_sub(2));
        push_name_text(name, &mut out);
        let t = match qtype {
            [a, b] => u16::from_be_bytes([*a, *b]),
            _ => 0,
        };
        out.extend_from_slice(format!("/{t}").as_bytes());
        out
    }

    /// Looks `key` up in Redis; a live, well-formed entry answering it
    /// comes back ready for L1. Never takes longer than `timeout`.
    pub async fn get(&self, key: &[u8]) -> Option<Entry> {
        let s = &self.shared;
        if !s.breaker.allow() {
            L2Stats::inc(&s.stats.skipped);
            return None;
        }
        let rkey = self.redis_key(key);
        let get = redis::cmd("GET").arg(&rkey).clone();
        let fetch = s.backend.run(|mut c| {
            let get = &get;
            async move { c.query::<Option<Vec<u8>>>(get).await }
        });
        let value = match tokio::time::timeout(self.timeout, fetch).await {
            Err(_) => {
                L2Stats::inc(&s.stats.errors);
                s.breaker.failure("timeout");
                return None;
            }
            Ok(Err(e)) => {
                L2Stats::inc(&s.stats.errors);
                s.breaker.failure(&e.to_string());
                return None;
            }
            Ok(Ok(v)) => v,
        };
        s.breaker.success();
        let Some(bytes) = value else {
            L2Stats::inc(&s.stats.misses);
            return None;
        };
        match decode(&bytes, key, unix_millis(), self.trust_shared_validation) {
            Decoded::Live(e) => {
                L2Stats::inc(&s.stats.hits);
                Some(Arc::new(e))
            }
            Decoded::Expired | Decoded::Untrusted => {
                L2Stats::inc(&s.stats.misses);
                None
            }
            Decoded::Bad => {
                L2Stats::inc(&s.stats.bad);
                None
            }
        }
    }

    /// Deletes this fleet's entries for `name` (and below when `subtree`),
    /// or all of them, for `resolvd control flush`: SCAN with a pattern,
    /// then UNLINK, bounded by `FLUSH_TIME`. Returns how many keys went.
    /// Other instances keep what their own L1 holds until it expires.
    pub async fn flush(&self, name: Option<&Name>, subtree: bool) -> Result<u64, L2Error> {
        let mut head = glob_escape(&self.prefix);
        head.extend_from_slice(format!("v{FORMAT_VERSION}:").as_bytes());
        let mut patterns = Vec::new();
        match name {
            None => patterns.push([&head[..], b"*"].concat()),
            Some(n) => {
                let mut text = Vec::new();
                push_name_text(&crate::cache::name_to_wire(n), &mut text);
                let text = glob_escape(&text);
                patterns.push([&head[..], &text, b"/*"].concat());
                if subtree {
                    let below: &[u8] = if n.is_root() { b"" } else { b"." };
                    patterns.push([&head[..], b"*", below, &text, b"/*"].concat());
                }
            }
        }
        let work = async {
            let mut removed = 0u64;
            for p in &patterns {
                let mut cursor: u64 = 0;
                loop {
                    let scan = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(p)
                        .arg("COUNT")
                        .arg(1000)
                        .clone();
                    let (next, keys): (u64, Vec<Vec<u8>>) = self
                        .shared
                        .backend
                        .run(|mut c| {
                            let scan = &scan;
                            async move {
                                match c {
                                    Conn::Single(_) => c.query(scan).await,
                                    Conn::Cluster(_) => Err(redis::RedisError::from((
                                        redis::ErrorKind::Client,
                                        "flush is not supported on a Redis Cluster; entries expire with their TTL",
                                    ))),
                                }
                            }
                        })
                        .await?;
                    if !keys.is_empty() {
                        let unlink = redis::cmd("UNLINK").arg(&keys).clone();
                        let n: u64 = self
                            .shared
                            .backend
                            .run(|mut c| {
                                let unlink = &unlink;
                                async move { c.query(unlink).await }
                            })
                            .await?;
                        removed += n;
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            Ok::<u64, redis::RedisError>(removed)
        };
        match tokio::time::timeout(FLUSH_TIME, work).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(L2Error(e.to_string())),
            Err(_) => Err(L2Error(format!(
                "flush did not finish within {} s",
                FLUSH_TIME.as_secs()
            ))),
        }
    }

    /// Queues a fresh resolution for Redis when it may be shared; never
    /// waits.
    pub fn put(&self, key: &[u8], e: &Entry) {
        if !shareable(e) {
            return;
        }
        let s = &self.shared;
        if !s.breaker.allow() {
            L2Stats::inc(&s.stats.skipped);
            return;
        }
        let Some((value, remaining)) = encode(e, Instant::now(), unix_millis()) else {
            return;
        };
        let w = Write {
            key: self.redis_key(key),
            value,
            expire_secs: remaining + self.stale_window,
        };
        if self.writes.try_send(w).is_err() {
            L2Stats::inc(&s.stats.writes_dropped);
        }
    }
}

impl L2Stats {
    #[inline]
    fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }
}

/// Drains the write queue into Redis, up to [`WRITE_BATCH`] SETs per
/// pipeline; ends when the [`SharedCache`] is dropped.
async fn write_loop(s: Arc<Shared>, mut rx: mpsc::Receiver<Write>, timeout: Duration) {
    let mut batch: Vec<Write> = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        if !s.breaker.allow() {
            s.stats.skipped.fetch_add(batch.len() as u64, Relaxed);
            batch.clear();
            continue;
        }
        let mut p = redis::pipe();
        for w in &batch {
            p.cmd("SET")
                .arg(&w.key)
                .arg(&w.value)
                .arg("EX")
                .arg(w.expire_secs.max(1))
                .ignore();
        }
        let send = s.backend.run(|mut c| {
            let p = &p;
            async move { c.pipeline(p).await }
        });
        match tokio::time::timeout(timeout, send).await {
            Ok(Ok(())) => {
                s.breaker.success();
                s.stats.writes.fetch_add(batch.len() as u64, Relaxed);
            }
            Ok(Err(e)) => {
                L2Stats::inc(&s.stats.errors);
                s.breaker.failure(&e.to_string());
            }
            Err(_) => {
                L2Stats::inc(&s.stats.errors);
                s.breaker.failure("timeout");
            }
        }
        batch.clear();
    }
}

/// Whether an answer may go to other instances (see the module doc).
fn shareable(e: &WireAnswer) -> bool {
    (e.rcode == 0 || e.rcode == 3)
        && e.ttl > 0
        && !e.authoritative
        && e.ecs_scope.is_none()
        && e.ede.is_none()
        && e.security != Security::Bogus
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The value for `e` and its remaining lifetime in seconds (None when it
/// has expired).
fn encode(e: &WireAnswer, now: Instant, now_unix: u64) -> Option<(Vec<u8>, u64)> {
    let remaining = e.remaining(now);
    if remaining == 0 {
        return None;
    }
    let current_at = now_unix.saturating_sub(e.age_millis(now));
    let expires_at = current_at + u64::from(e.ttl) * 1000;
    let msg = e.message();
    let dnssec = e.dnssec_message().unwrap_or(&[]);
    let msg_len = u16::try_from(msg.len()).ok()?;
    let mut v = Vec::with_capacity(HEADER + msg.len() + dnssec.len());
    v.push(FORMAT_VERSION);
    v.push(e.security as u8);
    v.push(0); // flags, none yet
    v.push(e.rcode as u8);
    v.extend_from_slice(&expires_at.to_be_bytes());
    v.extend_from_slice(&current_at.to_be_bytes());
    v.extend_from_slice(&msg_len.to_be_bytes());
    v.extend_from_slice(msg);
    v.extend_from_slice(dnssec);
    Some((v, u64::from(remaining)))
}

/// What a value from Redis turned out to be.
enum Decoded {
    Live(WireAnswer),
    Expired,
    /// Validated by another instance, and `trust_shared_validation` is off.
    Untrusted,
    Bad,
}

/// Checks and rebuilds a value for cache key `key` at `now_unix` (ms).
fn decode(v: &[u8], key: &[u8], now_unix: u64, trust_validation: bool) -> Decoded {
    let (Some(head), Some(rest)) = (v.get(..HEADER), v.get(HEADER..)) else {
        return Decoded::Bad;
    };
    let rcode = u16::from(head[3]);
    let expires_at = u64::from_be_bytes(head[4..12].try_into().unwrap_or([0; 8]));
    let current_at = u64::from_be_bytes(head[12..20].try_into().unwrap_or([0; 8]));
    let msg_len = usize::from(u16::from_be_bytes([head[20], head[21]]));
    let (Some(msg), Some(dnssec)) = (rest.get(..msg_len), rest.get(msg_len..)) else {
        return Decoded::Bad;
    };
    let security = match head[1] {
        0 => Security::Unchecked,
        1 => Security::Insecure,
        2 => Security::Secure,
        // Bogus is never shared; anything else is not ours.
        _ => return Decoded::Bad,
    };
    // A version we do not write, an RCODE that is never shared, times
    // that make no sense, a header that disagrees.
    let header_rcode = msg.get(3).map(|b| u16::from(b & 0x0f));
    if head[0] != FORMAT_VERSION
        || !(rcode == 0 || rcode == 3)
        || header_rcode != Some(rcode)
        || current_at > expires_at
        || current_at > now_unix + 60_000
    {
        return Decoded::Bad;
    }
    if expires_at <= now_unix + 999 {
        return Decoded::Expired;
    }
    // Whole seconds, rounded so the TTLs go down, never up.
    let age = (now_unix.saturating_sub(current_at)).div_ceil(1000);
    let remaining = (expires_at - now_unix) / 1000;
    let (Ok(age), Ok(remaining)) = (u32::try_from(age), u32::try_from(remaining)) else {
        return Decoded::Bad;
    };
    let dnssec = (!dnssec.is_empty()).then_some(dnssec);
    match WireAnswer::from_shared(msg, dnssec, age, remaining, rcode, security) {
        Some(a) if a.answers_key(key) => {
            if security != Security::Unchecked && !trust_validation {
                Decoded::Untrusted
            } else {
                Decoded::Live(a)
            }
        }
        _ => Decoded::Bad,
    }
}

/// `s` with the glob characters of Redis patterns escaped.
fn glob_escape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for &b in s {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// Appends a lower-cased wire name as text (`www.example.com.`), bytes
/// other than letters, digits, `-` and `_` as `\DDD`.
fn push_name_text(wire: &[u8], out: &mut Vec<u8>) {
    let mut i = 0usize;
    while let Some(&len) = wire.get(i) {
        if len == 0 {
            break;
        }
        let label = wire.get(i + 1..i + 1 + len as usize).unwrap_or(&[]);
        for &b in label {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                out.push(b.to_ascii_lowercase());
            } else {
                out.extend_from_slice(format!("\\{b:03}").as_bytes());
            }
        }
        out.push(b'.');
        i += 1 + len as usize;
    }
    if i == 0 {
        out.push(b'.');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key_for;
    use crate::wire::answer::Sections;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
    use std::net::Ipv4Addr;

    fn answer(name: &str, ttl: u32) -> (Vec<u8>, WireAnswer) {
        let n = Name::from_ascii(name).unwrap();
        let mut r = Record::from_rdata(n.clone(), ttl, RData::A(A(Ipv4Addr::new(192, 0, 2, 1))));
        r.dns_class = DNSClass::IN;
        let s = Sections {
            answer: vec![r],
            ..Sections::default()
        };
        (
            key_for(&n, RecordType::A),
            WireAnswer::encode(&n, RecordType::A, s).unwrap(),
        )
    }

    /// The TTL of the first record of a rebuilt answer's message.
    fn first_ttl(a: &WireAnswer) -> u32 {
        let m = a.message();
        // Header 12 + "www.example.test." (18) + type/class 4, then the
        // record: compressed owner (2), type (2), class (2), TTL.
        let at = 12 + 18 + 4 + 6;
        u32::from_be_bytes(m[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn an_entry_comes_back_aged_never_extended() {
        let (key, a) = answer("www.example.test.", 300);
        let now = Instant::now();
        let t0 = 1_700_000_000_000;
        let (v, remaining) = encode(&a, now, t0).unwrap();
        assert_eq!(remaining, 300);
        assert_eq!(v[0], FORMAT_VERSION);
        // Read by another instance 10.5 s later.
        let Decoded::Live(b) = decode(&v, &key, t0 + 10_500, true) else {
            panic!("not live")
        };
        assert_eq!(b.ttl, 289, "remaining whole seconds, rounded down");
        assert_eq!(first_ttl(&b), 289, "record TTLs aged by 11 s (rounded up)");
        assert!(b.answers_key(&key));
    }

    #[test]
    fn bad_values_are_refused() {
        let (key, a) = answer("www.example.test.", 300);
        let t0 = 1_700_000_000_000;
        let (v, _) = encode(&a, Instant::now(), t0).unwrap();
        let bad = |v: &[u8], k: &[u8]| matches!(decode(v, k, t0 + 1000, true), Decoded::Bad);
        let mut other_version = v.clone();
        other_version[0] = 2;
        assert!(bad(&other_version, &key));
        for cut in [0, 5, HEADER, HEADER + 11, v.len() - 1] {
            assert!(bad(&v[..cut], &key), "truncated at {cut}");
        }
        let (other_key, _) = answer("www.example.other.", 300);
        assert!(bad(&v, &other_key), "another question");
        let mut servfail = v.clone();
        servfail[3] = 2;
        assert!(bad(&servfail, &key));
        assert!(matches!(
            decode(&v, &key, t0 + 300_000, true),
            Decoded::Expired
        ));
    }

    #[test]
    fn validated_entries_are_believed_only_when_trusted() {
        let (key, mut a) = answer("www.example.test.", 300);
        a.security = Security::Secure;
        let t0 = 1_700_000_000_000;
        let (v, _) = encode(&a, Instant::now(), t0).unwrap();
        let Decoded::Live(b) = decode(&v, &key, t0 + 1000, true) else {
            panic!("a trusted secure entry is a hit")
        };
        assert_eq!(b.security, Security::Secure);
        assert!(matches!(
            decode(&v, &key, t0 + 1000, false),
            Decoded::Untrusted
        ));
        let mut bogus = v.clone();
        bogus[1] = Security::Bogus as u8;
        assert!(matches!(
            decode(&bogus, &key, t0 + 1000, true),
            Decoded::Bad
        ));
        a.security = Security::Bogus;
        assert!(!shareable(&a), "bogus answers stay home");
    }

    #[test]
    fn the_dnssec_variant_travels_with_the_answer() {
        use hickory_proto::dnssec::rdata::{DNSSECRData, NSEC};
        let n = Name::from_ascii("www.example.test.").unwrap();
        let mut a = Record::from_rdata(n.clone(), 300, RData::A(A(Ipv4Addr::new(192, 0, 2, 1))));
        a.dns_class = DNSClass::IN;
        let next = Name::from_ascii("z.example.test.").unwrap();
        let mut nsec = Record::from_rdata(
            n.clone(),
            300,
            RData::DNSSEC(DNSSECRData::NSEC(NSEC::new(next, [RecordType::A]))),
        );
        nsec.dns_class = DNSClass::IN;
        let s = Sections {
            answer: vec![a],
            authority: vec![nsec],
            security: Security::Secure,
            ..Sections::default()
        };
        let w = WireAnswer::encode(&n, RecordType::A, s).unwrap();
        let plain = w.message().len();
        let full = w.dnssec_message().expect("a DO=1 variant").len();
        assert!(full > plain);
        let key = key_for(&n, RecordType::A);
        let t0 = 1_700_000_000_000;
        let (v, _) = encode(&w, Instant::now(), t0).unwrap();
        let Decoded::Live(b) = decode(&v, &key, t0 + 2000, true) else {
            panic!("not live")
        };
        assert_eq!(b.message().len(), plain);
        assert_eq!(b.dnssec_message().map(<[u8]>::len), Some(full));
        assert_eq!(b.security, Security::Secure);
        // A DNSSEC variant for another question is refused.
        let (_, other) = answer("www.example.other.", 300);
        let mut forged = v[..HEADER].to_vec();
        forged.extend_from_slice(w.message());
        forged.extend_from_slice(other.message());
        assert!(matches!(
            decode(&forged, &key, t0 + 2000, true),
            Decoded::Bad
        ));
    }

    #[test]
    fn failures_and_local_answers_are_not_shared() {
        let (_, mut a) = answer("www.example.test.", 300);
        assert!(shareable(&a));
        a.rcode = 2;
        assert!(!shareable(&a));
        a.rcode = 0;
        a.ecs_scope = Some(24);
        assert!(!shareable(&a));
        a.ecs_scope = None;
        a.authoritative = true;
        assert!(!shareable(&a));
    }

    #[test]
    fn keys_are_readable_text() {
        let mut out = Vec::new();
        push_name_text(b"\x03www\x07example\x04test\x00", &mut out);
        assert_eq!(out, b"www.example.test.");
        out.clear();
        push_name_text(b"\x02a.\x00", &mut out);
        assert_eq!(out, b"a\\046.");
        out.clear();
        push_name_text(b"\x00", &mut out);
        assert_eq!(out, b".");
    }
}
