//! The `[resolver]` section: the iterative resolver's timeouts, budgets
//! and upstream query options.

use super::Dur;
use serde::Deserialize;
use std::path::PathBuf;

/// `[resolver]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResolverConfig {
    /// named.root-format file; absent = the IANA hints compiled in.
    pub root_hints: Option<PathBuf>,
    /// Allow upstream servers on 127.0.0.0/8 and ::1 (labs and tests).
    pub query_loopback: bool,
    /// Port every upstream query goes to.
    pub upstream_port: u16,
    /// RFC 9156 QNAME minimisation.
    pub qname_minimisation: bool,
    /// Random letter case in upstream query names (0x20), checked in replies.
    pub qname_case_randomisation: bool,
    /// DNS Cookies on upstream queries (RFC 7873 §5.3), checked in replies.
    pub upstream_cookies: bool,
    /// EDNS buffer size advertised upstream.
    pub edns_payload: u16,
    /// First per-try timeout for a server we know nothing about.
    pub initial_timeout: Dur,
    /// Ceiling for a per-try timeout after backoff.
    pub max_timeout: Dur,
    /// Overall deadline for one client query.
    pub query_deadline: Dur,
    /// Upstream queries one client query may cause (NXNSAttack budget).
    pub max_upstream_queries: u32,
    /// Referrals followed in one walk.
    pub max_referral_depth: u32,
    /// Glueless NS names resolved per delegation.
    pub max_ns_resolutions: u32,
    /// Nesting depth of resolutions started to find NS addresses.
    pub max_nested_depth: u32,
    /// CNAME links followed for one answer.
    pub max_cname_chain: u32,
    /// How long a dead or lame server is skipped.
    pub server_hold_down: Dur,
    /// First wait before retrying failed root priming (doubles, max 5 min).
    pub priming_retry: Dur,
    /// Client queries waiting for resolution at once; beyond this new
    /// ones are dropped (as Unbound's num-queries-per-thread), so a flood
    /// of unique names cannot exhaust memory.
    pub max_pending: usize,
    /// Answer the special-use names of RFC 6761/6303/7686/8375 locally.
    pub special_use_names: bool,
    /// Special-use zones to resolve normally anyway (a lab using `test.`).
    pub special_use_exclude: Vec<String>,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            root_hints: None,
            query_loopback: false,
            upstream_port: 53,
            qname_minimisation: true,
            qname_case_randomisation: true,
            upstream_cookies: true,
            edns_payload: 1232,
            initial_timeout: Dur::millis(400),
            max_timeout: Dur::millis(2000),
            query_deadline: Dur::secs(5),
            max_upstream_queries: 50,
            max_referral_depth: 30,
            max_ns_resolutions: 4,
            max_nested_depth: 4,
            max_cname_chain: 12,
            server_hold_down: Dur::secs(60),
            priming_retry: Dur::secs(5),
            max_pending: 10_000,
            special_use_names: true,
            special_use_exclude: Vec::new(),
        }
    }
}
