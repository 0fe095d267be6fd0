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
    /// Queries by QTYPE: one slot per type in [`QTYPES`], then "other".
    pub qtypes: [AtomicU64; QTYPES.len() + 1],
    /// Replies sent, by the RCODE in their header (low four bits).
    pub rcodes: [AtomicU64; 16],
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

    /// Counts a parsed query under its QTYPE.
    #[inline]
    pub fn count_qtype(&self, qtype: u16) {
        // A linear scan of 14 constants beats a table: it stays in one
        // cache line and the common types come first.
        let i = QTYPES
            .iter()
            .position(|&(t, _)| t == qtype)
            .unwrap_or(QTYPES.len());
        if let Some(c) = self.qtypes.get(i) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Counts a reply about to be sent under the RCODE in its header.
    #[inline]
    pub fn count_reply(&self, reply: &[u8]) {
        if let Some(&b) = reply.get(3) {
            if let Some(c) = self.rcodes.get(usize::from(b & 0x0f)) {
                c.fetch_add(1, Relaxed);
            }
        }
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
