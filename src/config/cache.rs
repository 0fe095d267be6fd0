//! The `[cache]` section: answer cache sizing and TTL policy (RFC 2308
//! negative caching, RFC 8767 serve-stale), warm restart, and the
//! `[cache.redis]` shared cache.

use super::{ops, ByteSize, Dur};
use serde::Deserialize;
use std::path::PathBuf;

/// `[cache]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Memory bound for cached answers; 0 disables caching.
    pub max_size: ByteSize,
    /// Lower clamp on stored TTLs (seconds).
    pub min_ttl: u32,
    /// Upper clamp on stored TTLs (seconds).
    pub max_ttl: u32,
    /// Upper clamp on negative-answer TTLs (RFC 2308 §5).
    pub max_negative_ttl: u32,
    /// How long a resolution failure is remembered (RFC 9520).
    pub servfail_ttl: u32,
    /// How long a negative answer that came without an SOA is remembered.
    pub negative_ttl_without_soa: u32,
    /// Refresh entries hit in the last 10% of their TTL.
    pub prefetch: bool,
    /// RFC 8767 serve-stale.
    pub serve_stale: bool,
    /// Serve stale data when resolution takes longer than this.
    pub stale_answer_timeout: Dur,
    /// Expired entries older than this are never served.
    pub stale_max: Dur,
    /// File the cache is dumped to at shutdown and loaded from at start
    /// (warm restart); none when empty.
    #[serde(deserialize_with = "ops::optional_path")]
    pub persist: Option<PathBuf>,
    /// `[cache.redis]`: the shared L2 cache; absent = none.
    pub redis: Option<crate::cache_l2::RedisConfig>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_size: ByteSize(256 * 1024 * 1024),
            min_ttl: 0,
            max_ttl: 86400,
            max_negative_ttl: 3600,
            servfail_ttl: 5,
            negative_ttl_without_soa: 5,
            prefetch: true,
            serve_stale: true,
            stale_answer_timeout: Dur::millis(1800),
            stale_max: Dur::secs(86400),
            persist: None,
            redis: None,
        }
    }
}
