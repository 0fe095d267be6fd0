//! Counters and a latency histogram, shared by every worker through atomics
//! (relaxed: they are statistics, not synchronisation).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Latency buckets: bucket i holds latencies below 2^i microseconds.
const BUCKETS: usize = 32;

/// Every counter `resolvd control stats` prints.
#[derive(Default)]
pub struct Metrics {
    /// Queries read (answered or not).
    pub queries: AtomicU64,
    /// Answered from the cache, live.
    pub hits: AtomicU64,
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
    /// Queries read over UDP.
    pub queries_udp: AtomicU64,
    /// Queries read over TCP.
    pub queries_tcp: AtomicU64,
    /// Queries read over DNS over TLS.
    pub queries_dot: AtomicU64,
    /// Queries read over DNS over HTTPS (and plain-HTTP DoH).
    pub queries_doh: AtomicU64,
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
    /// Resolved answers validated secure (RFC 4035 §4.3).
    pub dnssec_secure: AtomicU64,
    /// Resolved answers found insecure (unsigned, or no usable algorithm).
    pub dnssec_insecure: AtomicU64,
    /// Resolved answers found bogus (answered SERVFAIL unless CD=1).
    pub dnssec_bogus: AtomicU64,
    /// Negative answers synthesised from validated NSEC ranges (RFC 8198).
    pub dnssec_aggressive: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl Metrics {
    /// Adds one to a counter.
    #[inline]
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    /// Counts a query under its transport.
    #[inline]
    pub fn count_transport(&self, t: crate::handler::Transport) {
        use crate::handler::Transport;
        Metrics::inc(match t {
            Transport::Udp => &self.queries_udp,
            Transport::Tcp => &self.queries_tcp,
            Transport::Dot => &self.queries_dot,
            Transport::Doh => &self.queries_doh,
        });
    }

    /// Records how long a query took from read to reply.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros() as u64;
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
        let hits = g(&self.hits);
        let misses = g(&self.misses);
        let ratio = if hits + misses == 0 {
            0.0
        } else {
            hits as f64 / (hits + misses) as f64
        };
        let mut s = format!(
            "queries {}\nhits {}\nmisses {}\nhit_ratio {:.4}\nlocal_answers {}\ncache_entries {}\ncache_bytes {}\nprefetches {}\nstale_served {}\nservfails {}\nrefused {}\nmalformed {}\ndropped {}\nupstream_queries {}\nratelimited {}\nrrl_dropped {}\nrrl_slipped {}\nbadcookie {}\nresolve_latency_p50_us {}\nresolve_latency_p90_us {}\nresolve_latency_p99_us {}\n",
            g(&self.queries),
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
            g(&self.queries_udp),
            g(&self.queries_tcp),
            g(&self.queries_dot),
            g(&self.queries_doh),
            g(&self.tls_handshakes),
            g(&self.tls_resumed),
            g(&self.tls_failures),
            g(&self.proxy_rejected),
            g(&self.doh_http_errors),
        ));
        s
    }
}
