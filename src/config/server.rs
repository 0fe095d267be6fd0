//! The `[server]` section (listeners and who may use them), its
//! `[server.ratelimit]` table (RRL and query limits), and `[tls]`, the
//! certificate and key for the DoT (RFC 7858) and DoH (RFC 8484) listeners.

use super::units::parse_vec;
use super::Dur;
use ipnet::IpNet;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

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
    /// Run every thread under `SCHED_BATCH` (no wake-up preemption), so
    /// the listener and worker threads stop trading the CPU on every
    /// datagram; see `sched`.
    pub batch_scheduling: bool,
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
            batch_scheduling: true,
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
