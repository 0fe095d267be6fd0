//! Counters and a latency histogram, shared by every worker through atomics
//! (relaxed: they are statistics, not synchronisation).
//!
//! The counts every query touches ([`QueryCounts`]: by transport, QTYPE and
//! RCODE, and cache hits) come in shards: each UDP listener thread owns
//! one and adds to it without a locked instruction, since it is the only
//! writer (issue 14: five `lock` adds were a tenth of a cache hit's user
//! time). Everything else shares one shard. Readers add the shards up.

use crate::handler::Transport;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Latency buckets: bucket i holds latencies below 2^i microseconds.
const BUCKETS: usize = 32;

/// The counts every query touches, one shard of them. Cache-line aligned,
/// so a thread's shard shares no line with another thread's data.
#[derive(Default)]
#[repr(align(64))]
pub struct QueryCounts {
    /// Whether one thread alone writes this shard, so an add may be a
    /// plain load and store instead of a locked read-modify-write.
    single_writer: bool,
    /// Queries read (answered or not), by [`Transport`].
    transports: [AtomicU64; 4],
    /// Queries by QTYPE: one slot per type in [`QTYPES`], then "other".
    qtypes: [AtomicU64; QTYPES.len() + 1],
    /// Replies sent, by the RCODE in their header (low four bits).
    rcodes: [AtomicU64; 16],
    /// Answered from the cache, live.
    hits: AtomicU64,
}

impl QueryCounts {
    #[inline]
    fn bump(&self, c: &AtomicU64) {
        if self.single_writer {
            c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
        } else {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Counts a query read over `t`.
    #[inline]
    pub fn query(&self, t: Transport) {
        if let Some(c) = self.transports.get(t as usize) {
            self.bump(c);
        }
    }

    /// Counts a parsed query under its QTYPE.
    #[inline]
    pub fn qtype(&self, qtype: u16) {
        // A linear scan of 14 constants beats a table: it stays in one
        // cache line and the common types come first.
        let i = QTYPES
            .iter()
            .position(|&(t, _)| t == qtype)
            .unwrap_or(QTYPES.len());
        if let Some(c) = self.qtypes.get(i) {
            self.bump(c);
        }
    }

    /// Counts a reply about to be sent under the RCODE in its header.
    #[inline]
    pub fn reply(&self, reply: &[u8]) {
        if let Some(&b) = reply.get(3) {
            if let Some(c) = self.rcodes.get(usize::from(b & 0x0f)) {
                self.bump(c);
            }
        }
    }

    /// Counts a live cache hit.
    #[inline]
    pub fn hit(&self) {
        self.bump(&self.hits);
    }

    fn add_to(&self, sum: &mut CountsSnapshot) {
        let g = |c: &AtomicU64| c.load(Relaxed);
        for (s, c) in sum.transports.iter_mut().zip(&self.transports) {
            *s += g(c);
        }
        for (s, c) in sum.qtypes.iter_mut().zip(&self.qtypes) {
            *s += g(c);
        }
        for (s, c) in sum.rcodes.iter_mut().zip(&self.rcodes) {
            *s += g(c);
        }
        sum.hits += g(&self.hits);
    }
}

/// [`QueryCounts`] summed over every shard.
#[derive(Debug, Default, Clone)]
pub struct CountsSnapshot {
    /// Queries by [`Transport`] (index `t as usize`).
    pub transports: [u64; 4],
    /// Queries by QTYPE, as [`QTYPES`] then "other".
    pub qtypes: [u64; QTYPES.len() + 1],
    /// Replies by RCODE.
    pub rcodes: [u64; 16],
    /// Live cache hits.
    pub hits: u64,
}

impl CountsSnapshot {
    /// Queries read over `t`.
    pub fn queries_over(&self, t: Transport) -> u64 {
        self.transports.get(t as usize).copied().unwrap_or(0)
    }

    /// Queries read over every transport.
    pub fn queries(&self) -> u64 {
        self.transports.iter().sum()
    }
}

/// A shard of [`QueryCounts`] owned by one thread; given back to its
/// [`Metrics`] for the next thread when dropped, so reloads that replace
/// listener threads do not pile up shards and no count is ever lost.
pub struct Shard {
    counts: Arc<QueryCounts>,
    home: Arc<Metrics>,
}

impl std::ops::Deref for Shard {
    type Target = QueryCounts;
    fn deref(&self) -> &QueryCounts {
        &self.counts
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        if let Ok(mut free) = self.home.free_shards.lock() {
            free.push(self.counts.clone());
        }
    }
}

/// Every counter `resolvd control stats` prints.
#[derive(Default)]
pub struct Metrics {
    /// Queries by transport, type and RCODE, and hits, from every thread
    /// without a [`Shard`] of its own.
    pub counts: QueryCounts,
    /// Every shard handed out, for readers.
    shards: Mutex<Vec<Arc<QueryCounts>>>,
    /// Shards whose thread has ended, for the next one.
    free_shards: Mutex<Vec<Arc<QueryCounts>>>,
    /// Needed resolution.
    pub misses: AtomicU64,
    /// Answered by local zones.
    pub local: AtomicU64,
    /// Prefetches started.
    pub prefetches: AtomicU64,
    /// Stale answers served.
    pub stale_served: AtomicU64,
    /// SERVFAIL replies sent.
    pub servfails: AtomicU64,
    /// Queries refused by the access list.
    pub refused: AtomicU64,
    /// Malformed queries answered FORMERR/NOTIMP or dropped.
    pub malformed: AtomicU64,
    /// Queries dropped because `max_pending` resolutions were waiting.
    pub dropped: AtomicU64,
    /// Upstream queries sent by the iterator.
    pub upstream_queries: AtomicU64,
    /// UDP queries dropped by `queries_per_second`.
    pub ratelimited: AtomicU64,
    /// UDP responses dropped by response rate limiting.
    pub rrl_dropped: AtomicU64,
    /// UDP responses sent truncated by response rate limiting (slip).
    pub rrl_slipped: AtomicU64,
    /// BADCOOKIE replies sent.
    pub badcookie: AtomicU64,
    /// TLS handshakes completed (DoT and DoH).
    pub tls_handshakes: AtomicU64,
    /// Of those, resumed from a session ticket or cache.
    pub tls_resumed: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_failures: AtomicU64,
    /// Connections closed over their PROXY header: sent from a source not
    /// in `proxy_protocol_from`, missing, or malformed.
    pub proxy_rejected: AtomicU64,
    /// DoH requests answered with an HTTP error status.
    pub doh_http_errors: AtomicU64,
    /// Queries that joined a resolution already in progress.
    pub coalesced: AtomicU64,
    /// Upstream exchanges that produced a usable reply.
    pub upstream_answered: AtomicU64,
    /// Upstream exchanges whose reply was lame (wrong zone, REFUSED...).
    pub upstream_lame: AtomicU64,
    /// Upstream exchanges that timed out.
    pub upstream_timeouts: AtomicU64,
    /// Upstream exchanges that failed at once (unreachable, bad reply).
    pub upstream_errors: AtomicU64,
    /// Upstream exchanges retried over TCP after a truncated UDP reply.
    pub upstream_tcp_fallbacks: AtomicU64,
    /// dnstap messages handed to the writer.
    pub dnstap_sent: AtomicU64,
    /// dnstap messages dropped because the queue was full or no reader.
    pub dnstap_dropped: AtomicU64,
    /// Resolved answers validated secure (RFC 4035 §4.3).
    pub dnssec_secure: AtomicU64,
    /// Resolved answers found insecure (unsigned, or no usable algorithm).
    pub dnssec_insecure: AtomicU64,
    /// Resolved answers found bogus (answered SERVFAIL unless CD=1).
    pub dnssec_bogus: AtomicU64,
    /// Negative answers synthesised from validated NSEC ranges (RFC 8198).
    pub dnssec_aggressive: AtomicU64,
    latency: [AtomicU64; BUCKETS],
    /// Sum of the observed latencies in microseconds (the histogram's sum).
    latency_sum_us: AtomicU64,
}

/// Query types counted by name; every other type counts as "other".
pub const QTYPES: [(u16, &str); 14] = [
    (1, "A"),
    (2, "NS"),
    (5, "CNAME"),
    (6, "SOA"),
    (12, "PTR"),
    (15, "MX"),
    (16, "TXT"),
    (28, "AAAA"),
    (33, "SRV"),
    (43, "DS"),
    (48, "DNSKEY"),
    (64, "SVCB"),
    (65, "HTTPS"),
    (255, "ANY"),
];

/// RCODE mnemonics (RFC 6895 §2.3) for the four-bit header field.
pub const RCODES: [&str; 16] = [
    "NOERROR",
    "FORMERR",
    "SERVFAIL",
    "NXDOMAIN",
    "NOTIMP",
    "REFUSED",
    "YXDOMAIN",
    "YXRRSET",
    "NXRRSET",
    "NOTAUTH",
    "NOTZONE",
    "DSOTYPENI",
    "RCODE12",
    "RCODE13",
    "RCODE14",
    "RCODE15",
];

/// A snapshot of the resolution latency histogram.
pub struct LatencySnapshot {
    /// `(upper bound in seconds, count in that bucket)`, not cumulative;
    /// the last bound is infinity.
    pub buckets: Vec<(f64, u64)>,
    /// Observations.
    pub count: u64,
    /// Sum of the observations in seconds.
    pub sum_seconds: f64,
}

impl Metrics {
    /// Adds one to a counter.
    #[inline]
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    /// A shard of the query counts for one thread to own: a free one
    /// when a thread before it has ended, else a new one.
    pub fn shard(self: &Arc<Self>) -> Shard {
        let reused = self.free_shards.lock().ok().and_then(|mut f| f.pop());
        let counts = reused.unwrap_or_else(|| {
            let c = Arc::new(QueryCounts {
                single_writer: true,
                ..QueryCounts::default()
            });
            if let Ok(mut all) = self.shards.lock() {
                all.push(c.clone());
            }
            c
        });
        Shard {
            counts,
            home: self.clone(),
        }
    }

    /// The query counts summed over the shared shard and every thread's.
    pub fn query_counts(&self) -> CountsSnapshot {
        let mut sum = CountsSnapshot::default();
        self.counts.add_to(&mut sum);
        if let Ok(all) = self.shards.lock() {
            for c in all.iter() {
                c.add_to(&mut sum);
            }
        }
        sum
    }

    /// The resolution latency histogram, with bucket bounds in seconds.
    /// Buckets below 128 µs are folded into the first (no resolution is
    /// that fast, and fewer series are cheaper to scrape).
    pub fn latency_snapshot(&self) -> LatencySnapshot {
        const FIRST: usize = 7;
        const LAST: usize = 25;
        let counts: Vec<u64> = self.latency.iter().map(|c| c.load(Relaxed)).collect();
        let mut buckets = Vec::with_capacity(LAST - FIRST + 2);
        let below: u64 = counts.iter().take(FIRST + 1).sum();
        buckets.push(((1u64 << FIRST) as f64 / 1e6, below));
        for (i, c) in counts.iter().enumerate().take(LAST + 1).skip(FIRST + 1) {
            buckets.push(((1u64 << i) as f64 / 1e6, *c));
        }
        let rest: u64 = counts.iter().skip(LAST + 1).sum();
        buckets.push((f64::INFINITY, rest));
        LatencySnapshot {
            count: counts.iter().sum(),
            sum_seconds: self.latency_sum_us.load(Relaxed) as f64 / 1e6,
            buckets,
        }
    }

    /// Records how long a query took from read to reply.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros() as u64;
        self.latency_sum_us.fetch_add(us, Relaxed);
        let b = (64 - us.leading_zeros() as usize).min(BUCKETS - 1);
        if let Some(c) = self.latency.get(b) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Upper bound (µs) of the bucket holding quantile `q` (0..1).
    pub fn latency_quantile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self.latency.iter().map(|c| c.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let want = (total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return 1u64 << i;
            }
        }
        1u64 << (BUCKETS - 1)
    }

    /// Renders `key value` lines.
    pub fn render(&self, entries: u64, bytes: u64) -> String {
        let g = |c: &AtomicU64| c.load(Relaxed);
        let counts = self.query_counts();
        let hits = counts.hits;
        let misses = g(&self.misses);
        let ratio = if hits + misses == 0 {
            0.0
        } else {
            hits as f64 / (hits + misses) as f64
        };
        let mut s = format!(
            "queries {}\nhits {}\nmisses {}\nhit_ratio {:.4}\nlocal_answers {}\ncache_entries {}\ncache_bytes {}\nprefetches {}\nstale_served {}\nservfails {}\nrefused {}\nmalformed {}\ndropped {}\nupstream_queries {}\nratelimited {}\nrrl_dropped {}\nrrl_slipped {}\nbadcookie {}\nresolve_latency_p50_us {}\nresolve_latency_p90_us {}\nresolve_latency_p99_us {}\n",
            counts.queries(),
            hits,
            misses,
            ratio,
            g(&self.local),
            entries,
            bytes,
            g(&self.prefetches),
            g(&self.stale_served),
            g(&self.servfails),
            g(&self.refused),
            g(&self.malformed),
            g(&self.dropped),
            g(&self.upstream_queries),
            g(&self.ratelimited),
            g(&self.rrl_dropped),
            g(&self.rrl_slipped),
            g(&self.badcookie),
            self.latency_quantile(0.5),
            self.latency_quantile(0.9),
            self.latency_quantile(0.99),
        );
        s.push_str(&format!(
            "dnssec_secure {}\ndnssec_insecure {}\ndnssec_bogus {}\ndnssec_aggressive {}\n",
            g(&self.dnssec_secure),
            g(&self.dnssec_insecure),
            g(&self.dnssec_bogus),
            g(&self.dnssec_aggressive),
        ));
        s.push_str(&format!(
            "queries_udp {}\nqueries_tcp {}\nqueries_dot {}\nqueries_doh {}\ntls_handshakes {}\ntls_resumed {}\ntls_failures {}\nproxy_rejected {}\ndoh_http_errors {}\n",
            counts.queries_over(Transport::Udp),
            counts.queries_over(Transport::Tcp),
            counts.queries_over(Transport::Dot),
            counts.queries_over(Transport::Doh),
            g(&self.tls_handshakes),
            g(&self.tls_resumed),
            g(&self.tls_failures),
            g(&self.proxy_rejected),
            g(&self.doh_http_errors),
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_shards_are_summed_and_outlive_their_thread() {
        let m = Arc::new(Metrics::default());
        m.counts.query(Transport::Tcp);
        m.counts.hit();
        let shard = m.shard();
        let t = std::thread::spawn(move || {
            for _ in 0..1000 {
                shard.query(Transport::Udp);
                shard.qtype(28);
                shard.reply(&[0, 0, 0x81, 0x83]);
                shard.hit();
            }
        });
        t.join().unwrap();
        let c = m.query_counts();
        assert_eq!(c.queries_over(Transport::Udp), 1000);
        assert_eq!(c.queries(), 1001);
        assert_eq!(c.hits, 1001);
        assert_eq!(c.rcodes[3], 1000, "NXDOMAIN");
        let aaaa = QTYPES.iter().position(|&(t, _)| t == 28).unwrap();
        assert_eq!(c.qtypes[aaaa], 1000);
        // The ended thread's shard goes to the next thread, counts kept.
        let next = m.shard();
        next.query(Transport::Udp);
        assert_eq!(m.query_counts().queries_over(Transport::Udp), 1001);
        assert_eq!(m.shards.lock().unwrap().len(), 1, "reused, not added");
    }
}
