//! The operations sections of the configuration: `[log]` (level and
//! format), `[control]` (the local control socket), `[metrics]`
//! (Prometheus endpoint) and `[dnstap]` (query log socket). Kept apart
//! from the resolver's sections so they can grow without touching them.

use super::Dur;
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::PathBuf;

/// `[metrics]`
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the Prometheus `/metrics` HTTP endpoint; off when empty.
    #[serde(deserialize_with = "optional_addr")]
    pub listen: Option<SocketAddr>,
}

/// `[dnstap]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DnstapConfig {
    /// Unix socket of the Frame Streams reader (fstrm_capture, a collector);
    /// off when empty.
    #[serde(deserialize_with = "optional_path")]
    pub socket: Option<PathBuf>,
    /// Messages queued for the writer; beyond that they are dropped (and
    /// counted) rather than slow down answering.
    pub queue: usize,
    /// Log CLIENT_QUERY and CLIENT_RESPONSE messages.
    pub client: bool,
    /// Log RESOLVER_QUERY and RESOLVER_RESPONSE messages (upstream traffic).
    pub resolver: bool,
    /// The `identity` field of every message; empty leaves it out.
    pub identity: String,
    /// How often to try the socket again while no reader listens on it.
    pub reconnect_interval: Dur,
}

impl Default for DnstapConfig {
    fn default() -> Self {
        DnstapConfig {
            socket: None,
            queue: 10_000,
            client: true,
            resolver: false,
            identity: String::new(),
            reconnect_interval: Dur::secs(1),
        }
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

/// `[log] format`
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
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

/// An address, or `""` for none.
fn optional_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    s.trim().parse().map(Some).map_err(|e| {
        serde::de::Error::custom(format!("{s:?}: {e} (want ADDR:PORT, or \"\" for off)"))
    })
}

/// A path, or `""` for none.
pub(crate) fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let s = String::deserialize(d)?;
    Ok((!s.trim().is_empty()).then(|| PathBuf::from(s)))
}
