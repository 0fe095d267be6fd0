//! Configuration: the TOML schema, its defaults (the one place where policy
//! numbers live), and validation that names the file, line and key of every
//! mistake.
//!
//! Unknown keys are errors (`deny_unknown_fields`) because a misspelt limit
//! that is silently ignored is worse than a daemon that refuses to start.
//! `config/resolvd.toml` documents every key; keep the two in step.

use crate::zones::{special, GeoConfig, ZoneConfig};
use hickory_proto::rr::Name;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

mod ops;
pub use ops::{DnstapConfig, LogFormat, MetricsConfig};

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

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Addresses to serve UDP and TCP on.
    #[serde(deserialize_with = "parse_vec")]
    pub listen: Vec<SocketAddr>,
    /// Worker threads (and UDP sockets per address); 0 = number of cores.
    pub threads: usize,
    /// Client prefixes allowed to query; everyone else gets REFUSED.
    #[serde(deserialize_with = "parse_vec")]
    pub allow: Vec<IpNet>,
    /// Our EDNS UDP payload size (RFC 6891 §6.2.5; 1232 avoids fragmentation).
    pub udp_payload_size: u16,
    /// A TCP connection with nothing in flight is closed after this long.
    pub tcp_idle_timeout: Dur,
    /// Concurrent TCP connections over all listeners.
    pub tcp_max_connections: usize,
    /// Queries answered concurrently on one TCP connection (RFC 7766 §6.2.1.1).
    pub tcp_max_inflight: usize,
    /// On SIGINT/SIGTERM, in-flight queries get this long to finish.
    pub shutdown_grace: Dur,
    /// Addresses to serve DNS over TLS on (RFC 7858; port 853).
    #[serde(deserialize_with = "parse_vec")]
    pub tls_listen: Vec<SocketAddr>,
    /// Addresses to serve DNS over HTTPS on (RFC 8484; port 443).
    #[serde(deserialize_with = "parse_vec")]
    pub https_listen: Vec<SocketAddr>,
    /// Addresses to serve DoH over plain HTTP on, for a TLS-terminating
    /// proxy in front.
    #[serde(deserialize_with = "parse_vec")]
    pub https_listen_plain: Vec<SocketAddr>,
    /// Sources allowed (and required) to send a PROXY v2 header on the
    /// DoT and DoH listeners.
    #[serde(deserialize_with = "parse_vec")]
    pub proxy_protocol_from: Vec<IpNet>,
    /// Answer DNS Cookies (RFC 7873, RFC 9018 server cookies).
    pub cookies: bool,
    /// Server cookie secret, 32 hex digits; empty = random at start. Set
    /// the same value on every instance behind one anycast address.
    pub cookie_secret: String,
    /// `[server.ratelimit]`: response rate limiting and query limits.
    pub ratelimit: RateLimitConfig,
}

/// `[server.ratelimit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// UDP responses per second to one source prefix; 0 = no limit.
    pub responses_per_second: u32,
    /// Of the limited responses, every n-th is sent truncated (TC=1);
    /// 0 = drop them all, 1 = truncate them all.
    pub slip: u32,
    /// Prefix length that makes one IPv4 source for RRL.
    pub ipv4_prefix_length: u8,
    /// Prefix length that makes one IPv6 source for RRL.
    pub ipv6_prefix_length: u8,
    /// UDP queries per second from one address; more are dropped; 0 = no limit.
    pub queries_per_second: u32,
    /// Sources never limited.
    #[serde(deserialize_with = "parse_vec")]
    pub exempt: Vec<IpNet>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            responses_per_second: 0,
            slip: 2,
            ipv4_prefix_length: 24,
            ipv6_prefix_length: 56,
            queries_per_second: 0,
            exempt: Vec::new(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![
                SocketAddr::from(([127, 0, 0, 1], 53)),
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 53)),
            ],
            threads: 0,
            allow: vec![
                IpNet::from_str("127.0.0.0/8").unwrap_or_default(),
                IpNet::from_str("::1/128").unwrap_or_default(),
            ],
            udp_payload_size: 1232,
            tcp_idle_timeout: Dur::secs(10),
            tcp_max_connections: 1000,
            tcp_max_inflight: 100,
            shutdown_grace: Dur::secs(3),
            cookies: true,
            cookie_secret: String::new(),
            ratelimit: RateLimitConfig::default(),
            tls_listen: Vec::new(),
            https_listen: Vec::new(),
            https_listen_plain: Vec::new(),
            proxy_protocol_from: Vec::new(),
        }
    }
}

/// `[tls]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first; relative to the config file.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: Option<PathBuf>,
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
}

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

/// `[dnssec]`: validation (RFC 4033–4035, 5155, 6840).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnssecConfig {
    /// Validate answers; when false, DO stays off upstream.
    pub validation: bool,
    /// Files of DS or DNSKEY records (zone-file syntax); empty = the IANA
    /// root KSKs built in. A file naming the root replaces them.
    pub trust_anchor_files: Vec<String>,
    /// Domains not validated (RFC 7646).
    pub negative_trust_anchors: Vec<String>,
    /// How long a bogus answer is remembered.
    pub bogus_ttl: Dur,
    /// NSEC3 iterations above which a proof is insecure (RFC 9276 §3.2).
    pub max_nsec3_iterations: u16,
    /// Tolerance on RRSIG inception and expiration.
    pub clock_skew: Dur,
    /// Signature verifications and NSEC3 hashes allowed for one client
    /// query (KeyTrap, CVE-2023-50387; CVE-2023-50868).
    pub max_validation_work: u32,
    /// RRSIGs tried per RRset.
    pub max_signatures_per_rrset: u32,
    /// DNSKEYs with the same key tag tried per RRSIG.
    pub max_keys_per_tag: u32,
    /// Answer NXDOMAIN/NODATA from validated NSEC ranges (RFC 8198).
    pub aggressive_nsec: bool,
}

impl Default for DnssecConfig {
    fn default() -> Self {
        DnssecConfig {
            validation: true,
            trust_anchor_files: Vec::new(),
            negative_trust_anchors: Vec::new(),
            bogus_ttl: Dur::secs(60),
            max_nsec3_iterations: 150,
            clock_skew: Dur::secs(3600),
            max_validation_work: 64,
            max_signatures_per_rrset: 8,
            max_keys_per_tag: 4,
            aggressive_nsec: true,
        }
    }
}

impl DnssecConfig {
    /// Negative trust anchors as names (entries that do not parse were
    /// rejected by validation).
    pub fn negative_anchors(&self) -> Vec<Name> {
        self.negative_trust_anchors
            .iter()
            .filter_map(|x| Name::from_ascii(x).ok())
            .collect()
    }

    /// Anchor file paths resolved against the config's directory.
    pub fn anchor_paths(&self, base: &Path) -> Vec<String> {
        self.trust_anchor_files
            .iter()
            .map(|f| base.join(f).display().to_string())
            .collect()
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// tracing filter: error, warn, info, debug, trace or a directive list.
    pub level: String,
    /// `text` or `json` lines on stderr.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `[control]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Unix socket for `resolvd control`; created mode 0600.
    pub socket: PathBuf,
    /// Set false to run without a control socket.
    pub enabled: bool,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            socket: PathBuf::from("/run/resolvd/control.sock"),
            enabled: true,
        }
    }
}

/// A duration written as `"400ms"`, `"5s"`, `"2m"`, `"1h"` or `"1d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    /// Whole seconds.
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
    /// Milliseconds.
    pub const fn millis(ms: u64) -> Dur {
        Dur(Duration::from_millis(ms))
    }
}

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("bad duration {s:?} (examples: \"400ms\", \"5s\", \"1d\")"))?;
        let mult = match unit {
            "ms" => 0.001,
            "s" | "" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(format!("bad duration unit in {s:?} (use ms, s, m, h or d)")),
        };
        if !n.is_finite() || n < 0.0 || n * mult > 1e9 {
            return Err(format!("duration {s:?} out of range"));
        }
        Ok(Dur(Duration::from_secs_f64(n * mult)))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A size in bytes: an integer or `"256MiB"`, `"64KiB"`, `"1GiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("bad size {s:?} (examples: \"256MiB\", \"1GiB\", 0)"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" | "KB" => 1 << 10,
            "MiB" | "M" | "MB" => 1 << 20,
            "GiB" | "G" | "GB" => 1 << 30,
            _ => return Err(format!("bad size unit in {s:?} (use B, KiB, MiB or GiB)")),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} out of range"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Deserializes a list of strings through `FromStr`, so a bad address is
/// reported by toml with the span of the offending value.
fn parse_vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let raw = Vec::<String>::deserialize(d)?;
    raw.iter()
        .map(|s| T::from_str(s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}"))))
        .collect()
}

/// One problem with a configuration file, printed on one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Syntax error, unknown key or bad value, located in the file.
    #[error("{path}:{line}: {key}{message}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// The key, with a trailing ": " when known.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// The configuration used without `--config`.
    pub fn embedded_default() -> Config {
        Config {
            base_dir: PathBuf::from("."),
            ..Config::default()
        }
    }

    /// Reads and validates a file; every error found is returned.
    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            vec![ConfigError::Read {
                path: path.display().to_string(),
                source,
            }]
        })?;
        let mut cfg = Config::parse(&text, &path.display().to_string())?;
        cfg.base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        // Anchor files are read relative to the config's directory, so
        // they are checked once that is known.
        if cfg.dnssec.validation {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let errs: Vec<ConfigError> = cfg
                .dnssec
                .anchor_paths(&cfg.base_dir)
                .iter()
                .filter_map(|f| crate::validate::anchors::parse_file(Path::new(f)).err())
                .map(|e| ConfigError::Invalid {
                    path: path.display().to_string(),
                    line: line_of_key(&text, "trust_anchor_files"),
                    key: "trust_anchor_files: ".into(),
                    message: e.to_string(),
                })
                .collect();
            if !errs.is_empty() {
                return Err(errs);
            }
        }
        Ok(cfg)
    }

    /// Parses and validates TOML text; `path` is only used in messages.
    pub fn parse(text: &str, path: &str) -> Result<Config, Vec<ConfigError>> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of_offset(text, s.start)).unwrap_or(1);
            let key = key_at_line(text, line)
                .map(|k| format!("{k}: "))
                .unwrap_or_default();
            vec![ConfigError::Invalid {
                path: path.to_string(),
                line,
                key,
                message: e.message().replace('\n', " "),
            }]
        })?;
        let errors = cfg.validate(text, path);
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(errors)
        }
    }

    fn validate(&self, text: &str, path: &str) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        let mut bad = |key: &str, message: String| {
            errs.push(ConfigError::Invalid {
                path: path.to_string(),
                line: line_of_key(text, key),
                key: format!("{key}: "),
                message,
            })
        };
        if self.server.listen.is_empty() {
            bad("listen", "at least one address is needed".into());
        }
        if self.server.udp_payload_size < 512 {
            bad("udp_payload_size", "must be at least 512".into());
        }
        if self.resolver.edns_payload < 512 {
            bad("edns_payload", "must be at least 512".into());
        }
        if self.server.tcp_max_connections == 0 {
            bad("tcp_max_connections", "must be at least 1".into());
        }
        if self.server.tcp_max_inflight == 0 {
            bad("tcp_max_inflight", "must be at least 1".into());
        }
        if self.resolver.upstream_port == 0 {
            bad("upstream_port", "must not be 0".into());
        }
        if self.resolver.max_pending == 0 {
            bad("max_pending", "must be at least 1".into());
        }
        if self.resolver.max_upstream_queries == 0 {
            bad("max_upstream_queries", "must be at least 1".into());
        }
        if !self.server.cookie_secret.is_empty() {
            if let Err(e) = crate::cookies::parse_secret(&self.server.cookie_secret) {
                bad("cookie_secret", e);
            }
        }
        if self.server.ratelimit.ipv4_prefix_length > 32 {
            bad("ipv4_prefix_length", "must be at most 32".into());
        }
        if self.server.ratelimit.ipv6_prefix_length > 128 {
            bad("ipv6_prefix_length", "must be at most 128".into());
        }
        for x in &self.resolver.special_use_exclude {
            match Name::from_ascii(x) {
                Ok(n) if special::origins().iter().any(|o| n.zone_of(o)) => {}
                Ok(_) => bad(
                    "special_use_exclude",
                    format!("{x:?} is not a special-use zone nor above one"),
                ),
                Err(e) => bad(
                    "special_use_exclude",
                    format!("{x:?} is not a domain name: {e}"),
                ),
            }
        }
        for x in &self.dnssec.negative_trust_anchors {
            if let Err(e) = Name::from_ascii(x) {
                bad(
                    "negative_trust_anchors",
                    format!("{x:?} is not a domain name: {e}"),
                );
            }
        }
        if self.dnssec.max_signatures_per_rrset == 0 || self.dnssec.max_keys_per_tag == 0 {
            bad(
                "max_signatures_per_rrset",
                "max_signatures_per_rrset and max_keys_per_tag must be at least 1".into(),
            );
        }
        if self.cache.min_ttl > self.cache.max_ttl {
            bad("min_ttl", "must not exceed max_ttl".into());
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            bad("level", format!("{:?} is not a log level", self.log.level));
        }
        if let Some(r) = &self.cache.redis {
            for (key, message) in r.check() {
                errs.push(ConfigError::Invalid {
                    path: path.to_string(),
                    line: line_of_key(text, key),
                    key: format!("{key}: "),
                    message,
                });
            }
        }
        for (i, key, message) in crate::resolve::forward::check(&self.forward) {
            errs.push(ConfigError::Invalid {
                path: path.to_string(),
                line: line_in_array_table(text, "forward", i, key),
                key: format!("{key}: "),
                message,
            });
        }
        if let Some(t) = &self.tls {
            // A missing key has no line of its own: point at [tls].
            let at = line_of_table(text, "tls");
            for (k, v) in [("cert", &t.cert), ("key", &t.key)] {
                if v.is_none() {
                    errs.push(ConfigError::Invalid {
                        path: path.to_string(),
                        line: at,
                        key: "[tls]: ".into(),
                        message: format!("{k} is missing"),
                    });
                }
            }
        } else if self.needs_tls() {
            let key = if self.server.tls_listen.is_empty() {
                "https_listen"
            } else {
                "tls_listen"
            };
            errs.push(ConfigError::Invalid {
                path: path.to_string(),
                line: line_of_key(text, key),
                key: format!("{key}: "),
                message: "needs a [tls] section with cert and key".into(),
            });
        }
        errs
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

/// The line of the TOML text that a zones error is about, found by
/// following the quoted names in its context (zone origin, pool name,
/// member value) through the text, then the key within that block.
pub fn zone_error_line(text: &str, err: &crate::zones::ZonesError) -> usize {
    use crate::zones::ZonesError;
    let (context, key): (Vec<String>, &str) = match err {
        ZonesError::Invalid { context, key, .. } => (quoted(context), key),
        ZonesError::ZoneFile { zone, .. } => (vec![zone.clone()], "file"),
        ZonesError::Overlap { inner, .. } => (vec![inner.clone()], ""),
        ZonesError::Mmdb { .. } => (vec![], "mmdb"),
    };
    let mut pos = 0;
    for tok in &context {
        if let Some(i) = text.get(pos..).and_then(|t| t.find(&format!("\"{tok}\""))) {
            pos += i;
        }
    }
    let key = key.rsplit('.').next().unwrap_or("");
    if !key.is_empty() {
        let block_end = text
            .get(pos..)
            .and_then(|t| t.get(1..).and_then(|r| r.find("[[")).map(|i| pos + 1 + i))
            .unwrap_or(text.len());
        let found = text.get(pos..block_end).and_then(|block| {
            let mut at = 0;
            while let Some(i) = block.get(at..).and_then(|b| b.find(key)) {
                let after = block.get(at + i + key.len()..).unwrap_or("").trim_start();
                let before = block.get(..at + i).and_then(|b| b.chars().last());
                if after.starts_with('=') && before.is_none_or(|c| !c.is_alphanumeric() && c != '_')
                {
                    return Some(at + i);
                }
                at += i + key.len();
            }
            None
        });
        if let Some(i) = found {
            pos += i;
        }
    }
    line_of_offset(text, pos)
}

/// The strings between double quotes in a message.
fn quoted(s: &str) -> Vec<String> {
    s.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map(|t| t.matches('\n').count() + 1)
        .unwrap_or(1)
}

/// The key assigned on a line (`key = value`), for messages.
fn key_at_line(text: &str, line: usize) -> Option<String> {
    let l = text.lines().nth(line.checked_sub(1)?)?;
    let (k, _) = l.split_once('=')?;
    let k = k.trim();
    (!k.is_empty() && !k.starts_with('#')).then(|| k.to_string())
}

/// The line of a `[table]` header (1 when absent).
fn line_of_table(text: &str, table: &str) -> usize {
    let want = format!("[{table}]");
    text.lines()
        .position(|l| l.trim() == want)
        .map(|i| i + 1)
        .unwrap_or(1)
}

/// The line assigning `key` in the `index`-th `[[table]]` block (the
/// block's header line when the key is not written in it).
fn line_in_array_table(text: &str, table: &str, index: usize, key: &str) -> usize {
    let header = format!("[[{table}]]");
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim() == header)
        .map(|(i, _)| i)
        .nth(index)
    else {
        return 1;
    };
    for (i, l) in lines.iter().enumerate().skip(start + 1) {
        let t = l.trim_start();
        if t.starts_with('[') {
            break;
        }
        if l.split_once('=').is_some_and(|(k, _)| k.trim() == key) && !t.starts_with('#') {
            return i + 1;
        }
    }
    start + 1
}

/// The first line assigning `key`, for errors found after parsing.
pub fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.split_once('=')
                .is_some_and(|(k, _)| k.trim() == key && !l.trim_start().starts_with('#'))
        })
        .map(|i| i + 1)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = "[server]\nlisten = [\"127.0.0.1:53\"]\nlisten_typo = 3\n";
        let errs = Config::parse(text, "x.toml").unwrap_err();
        let msg = errs[0].to_string();
        assert!(msg.starts_with("x.toml:3: listen_typo: "), "{msg}");
    }

    #[test]
    fn bad_address_names_line() {
        let text = "[server]\n\nlisten = [\"127.0.0.1\"]\n";
        let msg = Config::parse(text, "x.toml").unwrap_err()[0].to_string();
        assert!(msg.starts_with("x.toml:3: listen: "), "{msg}");
    }

    #[test]
    fn syntax_error_names_line() {
        let text = "[server]\nthreads = 2\n[log\n";
        let msg = Config::parse(text, "x.toml").unwrap_err()[0].to_string();
        assert!(msg.starts_with("x.toml:3:"), "{msg}");
    }

    #[test]
    fn semantic_error_names_line_of_key() {
        let text = "[cache]\nmax_ttl = 10\nmin_ttl = 20\n";
        let msg = Config::parse(text, "x.toml").unwrap_err()[0].to_string();
        assert_eq!(msg, "x.toml:3: min_ttl: must not exceed max_ttl");
    }

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(
            "400ms".parse::<Dur>().unwrap().0,
            Duration::from_millis(400)
        );
        assert_eq!(
            "1.8s".parse::<Dur>().unwrap().0,
            Duration::from_millis(1800)
        );
        assert_eq!("1d".parse::<Dur>().unwrap().0, Duration::from_secs(86400));
        assert!("5 parsecs".parse::<Dur>().is_err());
        assert_eq!("256MiB".parse::<ByteSize>().unwrap().0, 256 << 20);
        assert!("12XB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn zone_errors_are_located_in_the_toml() {
        let text = "[geo.regions]\neu = [\"10.0.0.0/8\"]\n\n[[zone]]\norigin = \"a.test.\"\n\n[[zone.pool]]\nname = \"www\"\ntype = \"A\"\nanswers = 0\nmembers = [\n  { value = \"192.0.2.1\", weight = 1 },\n  { value = \"::1\", weight = 1, region = \"mars\" },\n]\n";
        let cfg = Config::parse(text, "x.toml").unwrap();
        let errs =
            crate::zones::LocalZones::from_config(&cfg.zone, &cfg.geo, Path::new(".")).unwrap_err();
        let lines: Vec<(usize, String)> = errs
            .iter()
            .map(|e| (zone_error_line(text, e), e.to_string()))
            .collect();
        let find = |needle: &str| {
            lines
                .iter()
                .find(|(_, m)| m.contains(needle))
                .map(|(l, _)| *l)
        };
        assert_eq!(find("answers"), Some(10), "{lines:?}");
        assert_eq!(find("mars"), Some(13), "{lines:?}");
        assert_eq!(find("IPv4"), Some(13), "{lines:?}");
    }

    #[test]
    fn tls_listener_without_tls_section_is_located() {
        let text = "[server]\nlisten = [\"127.0.0.1:53\"]\ntls_listen = [\"127.0.0.1:853\"]\n";
        let msg = Config::parse(text, "x.toml").unwrap_err()[0].to_string();
        assert_eq!(
            msg,
            "x.toml:3: tls_listen: needs a [tls] section with cert and key"
        );
        let text = "[server]\nhttps_listen = [\"127.0.0.1:443\"]\n\n[tls]\ncert = \"c.pem\"\n";
        let msg = Config::parse(text, "x.toml").unwrap_err()[0].to_string();
        assert_eq!(msg, "x.toml:4: [tls]: key is missing");
    }

    #[test]
    fn bad_proxy_cidr_names_line() {
        let text = "[server]\nproxy_protocol_from = [\"10.0.0.0/33\"]\n";
        let msg = Config::parse(text, "x.toml").unwrap_err()[0].to_string();
        assert!(msg.starts_with("x.toml:2: proxy_protocol_from: "), "{msg}");
    }

    #[test]
    fn forward_zone_errors_name_key_and_line() {
        let text = "[[forward]]\nzone = \"corp.example.\"\nservers = [\"192.0.2.1\"]\n\n[[forward]]\nzone = \"corp.example\"\nservers = [\"192.0.2.1:99999\"]\n";
        let errs = Config::parse(text, "x.toml").unwrap_err();
        let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs[0].starts_with("x.toml:6: zone: "), "{msgs:?}");
        assert!(msgs[1].starts_with("x.toml:7: servers: "), "{msgs:?}");
    }

    #[test]
    fn redis_section_parses_and_a_bad_url_is_located() {
        let text = "[cache.redis]\nurl = \"redis://10.0.0.1:6380/2\"\ntimeout = \"20ms\"\n";
        let cfg = Config::parse(text, "x.toml").unwrap();
        let r = cfg.cache.redis.unwrap();
        assert_eq!(r.timeout.0, Duration::from_millis(20));
        assert_eq!(r.key_prefix, "resolvd:", "defaults fill the rest");
        let text = "[cache]\nmax_ttl = 600\n\n[cache.redis]\nurl = \"http://10.0.0.1\"\n";
        let msg = Config::parse(text, "x.toml").unwrap_err()[0].to_string();
        assert!(msg.starts_with("x.toml:5: url: "), "{msg}");
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let text = include_str!("../config/resolvd.toml");
        Config::parse(text, "config/resolvd.toml").unwrap();
    }
}
