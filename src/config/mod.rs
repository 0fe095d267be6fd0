//! Configuration: the TOML schema, its defaults (the one place where policy
//! numbers live), and validation that names the file, line and key of every
//! mistake.
//!
//! Unknown keys are errors (`deny_unknown_fields`) because a misspelt limit
//! that is silently ignored is worse than a daemon that refuses to start.
//! `config/resolvd.toml` documents every key; keep the two in step.
//!
//! One file per part: `server` (`[server]`, `[server.ratelimit]`,
//! `[tls]`), `resolver`, `cache`, `dnssec`, `ops` (`[log]`, `[control]`,
//! `[metrics]`, `[dnstap]`); `units` (durations and sizes), `load`
//! (reading, parsing, checking, [`ConfigError`]) and `locate` (the line
//! and key an error is about). `[geo]` and `[[zone]]` are
//! [`crate::zones`]'s, `[[forward]]` is [`crate::resolve::forward`]'s.

use crate::zones::{GeoConfig, ZoneConfig};
use hickory_proto::rr::Name;
use serde::Deserialize;
use std::path::PathBuf;

mod cache;
mod dnssec;
mod load;
mod locate;
mod ops;
mod resolver;
mod server;
mod units;
pub use cache::CacheConfig;
pub use dnssec::DnssecConfig;
pub use load::ConfigError;
pub use locate::{line_of_key, zone_error_line};
pub use ops::{ControlConfig, DnstapConfig, LogConfig, LogFormat, MetricsConfig};
pub use resolver::ResolverConfig;
pub use server::{RateLimitConfig, ServerConfig, TlsConfig};
pub use units::{ByteSize, Dur};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners and who may use them.
    #[serde(default)]
    pub server: ServerConfig,
    /// The iterative resolver's timeouts and budgets.
    #[serde(default)]
    pub resolver: ResolverConfig,
    /// Answer cache sizing and TTL policy.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The local control socket used by `resolvd control`.
    #[serde(default)]
    pub control: ControlConfig,
    /// Regions for geo-routed pools.
    #[serde(default)]
    pub geo: GeoConfig,
    /// Local authoritative zones.
    #[serde(default)]
    pub zone: Vec<ZoneConfig>,
    /// Certificate and key for the DoT and DoH listeners.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The dnstap query log.
    #[serde(default)]
    pub dnstap: DnstapConfig,
    /// Forward and stub zones.
    #[serde(default)]
    pub forward: Vec<crate::resolve::forward::ForwardConfig>,
    /// DNSSEC validation.
    #[serde(default)]
    pub dnssec: DnssecConfig,
    /// Directory that relative paths (zone files, root hints) are resolved
    /// against: the config file's directory. Not a TOML key.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Config {
    /// The certificate and key paths resolved against the config file's
    /// directory, when both are set.
    pub fn tls_files(&self) -> Option<(PathBuf, PathBuf)> {
        let t = self.tls.as_ref()?;
        Some((
            self.base_dir.join(t.cert.as_ref()?),
            self.base_dir.join(t.key.as_ref()?),
        ))
    }

    /// Whether any listener needs `[tls]`.
    pub fn needs_tls(&self) -> bool {
        !self.server.tls_listen.is_empty() || !self.server.https_listen.is_empty()
    }

    /// `special_use_exclude` as names (entries that do not parse were
    /// rejected by validation).
    pub fn special_use_exclude(&self) -> Vec<Name> {
        self.resolver
            .special_use_exclude
            .iter()
            .filter_map(|x| Name::from_ascii(x).ok())
            .map(|n| n.to_lowercase())
            .collect()
    }

    /// Worker threads after applying the "0 = number of cores" default.
    pub fn worker_threads(&self) -> usize {
        if self.server.threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.server.threads
        }
    }
}
