//! The shared answer cache (L2) on Redis or Valkey, behind the in-process
//! cache (L1, [`crate::cache`]), so a fleet of instances pays each cold
//! miss once and a restarted instance starts warm (Unbound's `cachedb`).
//!
//! - Read: an L1 miss asks L2 (one GET, bounded by `timeout`) before
//!   resolving; a hit goes into L1 with its remaining TTL, never extended.
//! - Write: a resolution goes into L1 at once and into a bounded queue
//!   that one task drains into Redis in pipelined SETs (one pipeline per
//!   hash slot on a cluster); when the queue is full the write is
//!   dropped, never waited for.
//! - Entry: the value format (a versioned header, then the answer in
//!   wire form) and which answers are shared are in `entry`. Redis
//!   expires the key after the remaining TTL (plus the serve-stale window
//!   when serve-stale is on), so dead entries go by themselves.
//! - Failure: every lookup has the timeout; consecutive failures open a
//!   circuit breaker that skips Redis for `breaker_backoff` (logged once),
//!   then one probe decides. Data that does not decode (another version,
//!   truncated, expired, another question) is ignored and counted.

use crate::cache::Entry;
use crate::config::{CacheConfig, Dur};
use hickory_proto::rr::Name;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

mod breaker;
mod entry;
use breaker::Breaker;
pub use entry::FORMAT_VERSION;
use entry::{decode, encode, shareable, unix_millis, Decoded};

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

    /// A Redis Cluster, where one pipeline must keep to one hash slot.
    fn is_cluster(&self) -> bool {
        matches!(self.client, Client::Cluster(_))
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
            breaker: Breaker::new(cfg.breaker_failures.max(1), cfg.breaker_backoff.0),
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
/// pipeline; ends when the [`SharedCache`] is dropped. A Redis Cluster
/// takes a pipeline only when all its keys hash to one slot (redis-rs
/// refuses the rest with CROSSSLOT), so there a batch is split by slot
/// and the parts go concurrently over the multiplexed connection.
async fn write_loop(s: Arc<Shared>, mut rx: mpsc::Receiver<Write>, timeout: Duration) {
    let mut batch: Vec<Write> = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        if !s.breaker.allow() {
            s.stats.skipped.fetch_add(batch.len() as u64, Relaxed);
            batch.clear();
            continue;
        }
        if !s.backend.is_cluster() {
            write_pipeline(&s, &batch, timeout).await;
            batch.clear();
            continue;
        }
        let mut by_slot: std::collections::HashMap<_, Vec<Write>, ahash::RandomState> =
            std::collections::HashMap::default();
        for w in batch.drain(..) {
            let slot = redis::cluster_routing::Slot::for_key(&w.key);
            by_slot.entry(slot).or_default().push(w);
        }
        let mut parts = tokio::task::JoinSet::new();
        for part in by_slot.into_values() {
            let s = s.clone();
            parts.spawn(async move { write_pipeline(&s, &part, timeout).await });
        }
        while parts.join_next().await.is_some() {}
        batch.clear();
    }
}

/// Sends `writes` as one pipeline of SETs and counts the outcome.
async fn write_pipeline(s: &Shared, writes: &[Write], timeout: Duration) {
    let mut p = redis::pipe();
    for w in writes {
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
            s.stats.writes.fetch_add(writes.len() as u64, Relaxed);
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
