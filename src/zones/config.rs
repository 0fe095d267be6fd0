//! The `[geo]` and `[[zone]]` sections of the daemon's TOML configuration.
//!
//! These are plain serde types: they say what the user wrote, nothing more.
//! Everything that needs checking against something else (addresses against
//! the pool type, region names against `[geo.regions]`, durations, zone files)
//! is checked by `LocalZones::from_config`, which collects every problem
//! instead of stopping at the first. Defaults live here and only here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[geo]`: named client regions and an optional MaxMind country/city DB.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoConfig {
    /// Region name → CIDR prefixes (IPv4 and IPv6). A client belongs to the
    /// region of the longest prefix that contains its (ECS) address.
    #[serde(default)]
    pub regions: BTreeMap<String, Vec<String>>,
    /// MaxMind DB (GeoIP2/GeoLite2 Country or City). Consulted only when no
    /// prefix in `regions` matched; the ISO country code ("DE") is the region.
    #[serde(default)]
    pub mmdb: Option<PathBuf>,
}

/// One `[[zone]]`: a locally authoritative zone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// Zone apex, e.g. `"svc.example."` (the trailing dot is optional).
    pub origin: String,
    /// Optional RFC 1035 zone file with static records, relative to the
    /// config's directory unless absolute.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// TTL of pool answers, of the synthesised SOA/NS, and the default TTL of
    /// zone-file records that have none. Short by default so that health and
    /// weight changes take effect quickly in caches downstream.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// Weighted / geo pools served in this zone.
    #[serde(default)]
    pub pool: Vec<PoolConfig>,
}

/// One `[[zone.pool]]`: a name whose A, AAAA or CNAME answer is chosen per query.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Owner name, relative to the origin, or absolute with a trailing dot.
    pub name: String,
    /// `"A"`, `"AAAA"` or `"CNAME"`.
    #[serde(rename = "type")]
    pub rtype: String,
    /// How many distinct members one answer carries (1 for CNAME).
    #[serde(default = "default_answers")]
    pub answers: usize,
    /// The candidates.
    pub members: Vec<MemberConfig>,
    /// `"all"` (default) or a region name: where to look when the client's
    /// region has no healthy member.
    #[serde(default)]
    pub fallback: Option<String>,
    /// TCP health checks for the members (A/AAAA pools only).
    #[serde(default)]
    pub health: Option<HealthConfig>,
}

/// One pool member.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// An IPv4 address (A), IPv6 address (AAAA) or domain name (CNAME;
    /// relative to the origin unless it ends with a dot).
    pub value: String,
    /// Relative share. Signed so that a negative weight is reported by our
    /// validation with zone/pool/member context rather than by serde.
    /// 0 = standby (served only when no positive-weight member is healthy).
    pub weight: i64,
    /// Region this member serves; none = global (see the module docs).
    #[serde(default)]
    pub region: Option<String>,
}

/// `health = { tcp_port = 443, interval = "5s", timeout = "1s", fails = 3 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Port probed with a TCP connect on each member address.
    pub tcp_port: u16,
    /// Time between probes: `"500ms"`, `"5s"`, `"1m"`, `"1h"`.
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Connect timeout of one probe, same syntax as `interval`.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// Consecutive failures before a member is marked down.
    #[serde(default = "default_fails")]
    pub fails: u32,
}

fn default_ttl() -> u32 {
    30
}

fn default_answers() -> usize {
    1
}

fn default_interval() -> String {
    "5s".to_string()
}

fn default_timeout() -> String {
    "1s".to_string()
}

fn default_fails() -> u32 {
    3
}

/// Parses `"500ms"`, `"5s"`, `"1m"`, `"2h"` (one integer and one unit).
/// Returns a human-readable reason on failure; the caller adds the context.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (use ms, s, m or h)"))?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => {
            return Err(format!(
                "{text:?} has unknown unit {unit:?} (use ms, s, m or h)"
            ))
        }
    };
    if d.is_zero() {
        return Err(format!("{text:?} must be greater than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_ms_s_m_h() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    }

    #[test]
    fn durations_reject_garbage_missing_unit_and_zero() {
        for bad in ["", "5", "s", "5 parsecs", "1.5s", "0s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn config_toml_from_the_docs_deserialises_with_defaults() {
        #[derive(Deserialize)]
        struct Top {
            #[serde(default)]
            geo: GeoConfig,
            zone: Vec<ZoneConfig>,
        }
        let top: Top = toml::from_str(
            r#"
            [geo.regions]
            eu = ["10.1.0.0/16"]
            [[zone]]
            origin = "svc.example."
            [[zone.pool]]
            name = "api"
            type = "A"
            members = [{ value = "192.0.2.10", weight = 70, region = "eu" }]
            health = { tcp_port = 443 }
            "#,
        )
        .expect("valid toml");
        assert_eq!(top.geo.regions["eu"], vec!["10.1.0.0/16".to_string()]);
        let zone = &top.zone[0];
        assert_eq!(zone.ttl, 30);
        let pool = &zone.pool[0];
        assert_eq!(pool.answers, 1);
        let health = pool.health.as_ref().expect("health");
        assert_eq!(
            (
                health.interval.as_str(),
                health.timeout.as_str(),
                health.fails
            ),
            ("5s", "1s", 3)
        );
    }

    #[test]
    fn unknown_keys_are_rejected_by_serde() {
        let r: Result<ZoneConfig, _> = toml::from_str("origin = \"a.\"\nttll = 5\n");
        assert!(r.is_err());
    }
}
