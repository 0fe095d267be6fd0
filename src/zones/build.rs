//! `LocalZones::from_config`: validation and construction.
//!
//! Validation never stops at the first problem: each section is checked as
//! far as it can be and every error is collected, so one restart shows the
//! user everything to fix.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, RecordType};

use super::config::{parse_duration, GeoConfig, HealthConfig, PoolConfig, ZoneConfig};
use super::geo::{is_iso_country_code, Geo, PrefixError, Region};
use super::pool::{Fallback, HealthSpec, Member, MemberHealth, Pool};
use super::zone::{is_at_or_under, load_zone_file, PlaceError, Zone};
use super::{LocalZones, ZonesError};

/// RFC 2181 §8: TTLs are 31-bit.
const MAX_TTL: u32 = i32::MAX as u32;

/// Weights are capped so that the sum over a pool cannot overflow `u64`.
const MAX_WEIGHT: i64 = u32::MAX as i64;

/// The `fallback` value meaning "any region"; reserved as a region name.
const FALLBACK_ALL: &str = "all";

fn invalid(
    context: impl Into<String>,
    key: impl Into<String>,
    message: impl Into<String>,
) -> ZonesError {
    ZonesError::Invalid {
        context: context.into(),
        key: key.into(),
        message: message.into(),
    }
}

pub(crate) fn build(
    zones: &[ZoneConfig],
    geo_cfg: &GeoConfig,
    base_dir: &Path,
) -> Result<LocalZones, Vec<ZonesError>> {
    let mut errors = Vec::new();
    let mut geo = build_geo(geo_cfg, base_dir, &mut errors);
    let mut built: Vec<Zone> = Vec::new();
    // Origins of every zone whose origin parsed, valid or not: an overlap is
    // worth reporting even next to other errors in the same zone.
    let mut origins: Vec<Name> = Vec::new();
    for cfg in zones {
        if let Some(zone) = build_zone(cfg, &mut geo, base_dir, &mut origins, &mut errors) {
            built.push(zone);
        }
    }
    for (i, a) in origins.iter().enumerate() {
        for b in origins.iter().skip(i + 1) {
            let (outer, inner) = if is_at_or_under(b, a) {
                (a, b)
            } else if is_at_or_under(a, b) {
                (b, a)
            } else {
                continue;
            };
            errors.push(ZonesError::Overlap {
                outer: outer.to_string(),
                inner: inner.to_string(),
            });
        }
    }
    if errors.is_empty() {
        let origins = super::OriginSet::new(built.iter().map(|z| &z.origin));
        Ok(LocalZones {
            zones: built,
            special: Vec::new(),
            origins,
            geo,
        })
    } else {
        Err(errors)
    }
}

fn build_geo(cfg: &GeoConfig, base_dir: &Path, errors: &mut Vec<ZonesError>) -> Geo {
    let mut geo = Geo::new();
    for (name, prefixes) in &cfg.regions {
        let key = format!("geo.regions.{name}");
        if name.is_empty() || name == FALLBACK_ALL {
            errors.push(invalid(
                "geo",
                key,
                format!("{name:?} cannot be a region name (\"all\" is the fallback keyword)"),
            ));
            continue;
        }
        let region = geo.intern(name);
        for cidr in prefixes {
            let message = match geo.add_prefix(region, cidr) {
                Ok(()) => continue,
                Err(PrefixError::Syntax(e)) => format!("{cidr:?} is not a CIDR prefix: {e}"),
                Err(PrefixError::HostBits(net)) => {
                    format!(
                        "{cidr:?} has host bits set (did you mean \"{}\"?)",
                        net.trunc()
                    )
                }
                Err(PrefixError::Duplicate(other)) => {
                    format!("{cidr:?} is already listed in region {other:?}")
                }
            };
            errors.push(invalid(
                format!("geo region \"{name}\""),
                key.clone(),
                message,
            ));
        }
    }
    if let Some(path) = &cfg.mmdb {
        let path = base_dir.join(path);
        match maxminddb::Reader::open_readfile(&path) {
            Ok(reader) => geo.set_mmdb(reader),
            Err(e) => errors.push(ZonesError::Mmdb {
                path,
                message: e.to_string(),
            }),
        }
    }
    geo
}

/// A name relative to `origin` unless it ends with a dot; "@" is the origin.
fn zone_name(text: &str, origin: &Name) -> Result<Name, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty name".into());
    }
    if text == "@" {
        return Ok(origin.clone());
    }
    let name = Name::parse(text, Some(origin))
        .map_err(|e| format!("{text:?} is not a valid domain name: {e}"))?;
    Ok(name.to_lowercase())
}

fn build_zone(
    cfg: &ZoneConfig,
    geo: &mut Geo,
    base_dir: &Path,
    origins: &mut Vec<Name>,
    errors: &mut Vec<ZonesError>,
) -> Option<Zone> {
    let ctx = format!("zone \"{}\"", cfg.origin);
    let origin = match Name::parse(cfg.origin.trim(), Some(&Name::root())) {
        Ok(o) if !o.is_wildcard() => o.to_lowercase(),
        Ok(_) => {
            errors.push(invalid(ctx, "origin", "a zone origin cannot be a wildcard"));
            return None;
        }
        Err(e) => {
            errors.push(invalid(
                ctx,
                "origin",
                format!("not a valid domain name: {e}"),
            ));
            return None;
        }
    };
    origins.push(origin.clone());
    let mut ok = true;
    if cfg.ttl > MAX_TTL {
        errors.push(invalid(
            ctx.as_str(),
            "ttl",
            format!("{} exceeds the maximum TTL {MAX_TTL}", cfg.ttl),
        ));
        ok = false;
    }
    let mut zone = Zone::new(origin.clone(), cfg.ttl);
    if let Some(file) = &cfg.file {
        match load_zone_file(&cfg.origin, &origin, cfg.ttl, &base_dir.join(file)) {
            Ok(records) => zone.add_static(records),
            Err(e) => {
                errors.push(e);
                ok = false;
            }
        }
    }
    zone.finish_apex();
    for pool_cfg in &cfg.pool {
        let pctx = format!("{ctx} pool \"{}\"", pool_cfg.name);
        let Some(pool) = build_pool(pool_cfg, &origin, &pctx, geo, errors) else {
            ok = false;
            continue;
        };
        let message = match zone.add_pool(pool) {
            Ok(()) => continue,
            Err(PlaceError::Outside) => "the name is not inside the zone".to_string(),
            Err(PlaceError::Duplicate) => {
                "duplicate pool: another pool has the same name and type".to_string()
            }
            Err(PlaceError::Conflict(m)) => m,
        };
        errors.push(invalid(pctx, "name", message));
        ok = false;
    }
    zone.finish_tree();
    ok.then_some(zone)
}

/// Resolves a region name used by a member or a fallback.
fn region_ref(name: &str, geo: &mut Geo) -> Result<Region, String> {
    if let Some(r) = geo.region(name) {
        return Ok(r);
    }
    if geo.has_mmdb() && is_iso_country_code(name) {
        return Ok(geo.intern(name));
    }
    let known = geo.names().join(", ");
    let hint = if geo.has_mmdb() {
        " or an ISO country code"
    } else {
        ""
    };
    Err(format!(
        "unknown region {name:?} (define it in [geo.regions]{hint}; known: {known})"
    ))
}

fn build_pool(
    cfg: &PoolConfig,
    origin: &Name,
    ctx: &str,
    geo: &mut Geo,
    errors: &mut Vec<ZonesError>,
) -> Option<Pool> {
    let before = errors.len();
    let name = zone_name(&cfg.name, origin)
        .map_err(|m| errors.push(invalid(ctx, "name", m)))
        .ok();
    let rtype = match cfg.rtype.to_ascii_uppercase().as_str() {
        "A" => Some(RecordType::A),
        "AAAA" => Some(RecordType::AAAA),
        "CNAME" => Some(RecordType::CNAME),
        _ => {
            errors.push(invalid(
                ctx,
                "type",
                format!("{:?} is not a pool type (use A, AAAA or CNAME)", cfg.rtype),
            ));
            None
        }
    };
    if cfg.answers == 0 {
        errors.push(invalid(ctx, "answers", "must be at least 1"));
    }
    if rtype == Some(RecordType::CNAME) && cfg.answers > 1 {
        errors.push(invalid(
            ctx,
            "answers",
            "a CNAME pool answers exactly one member (RFC 2181 §10.1)",
        ));
    }
    if cfg.members.is_empty() {
        errors.push(invalid(ctx, "members", "a pool needs at least one member"));
    }
    let mut members = Vec::with_capacity(cfg.members.len());
    let mut seen = HashSet::new();
    for m in &cfg.members {
        let mctx = format!("{ctx}: member \"{}\"", m.value);
        let value = m.value.trim();
        let parsed: Option<(RData, Option<IpAddr>)> = match rtype {
            Some(RecordType::A) => match value.parse::<Ipv4Addr>() {
                Ok(ip) => Some((RData::A(A(ip)), Some(IpAddr::V4(ip)))),
                Err(_) => {
                    errors.push(invalid(
                        mctx.as_str(),
                        "members.value",
                        "not an IPv4 address",
                    ));
                    None
                }
            },
            Some(RecordType::AAAA) => match value.parse::<Ipv6Addr>() {
                Ok(ip) => Some((RData::AAAA(AAAA(ip)), Some(IpAddr::V6(ip)))),
                Err(_) => {
                    errors.push(invalid(
                        mctx.as_str(),
                        "members.value",
                        "not an IPv6 address",
                    ));
                    None
                }
            },
            Some(_) => match zone_name(value, origin) {
                Ok(target) => Some((RData::CNAME(CNAME(target)), None)),
                Err(e) => {
                    errors.push(invalid(mctx.as_str(), "members.value", e));
                    None
                }
            },
            None => None,
        };
        if let Some((rdata, _)) = &parsed {
            if !seen.insert(rdata.to_string()) {
                errors.push(invalid(
                    mctx.as_str(),
                    "members.value",
                    "listed twice in this pool",
                ));
            }
        }
        if m.weight < 0 {
            errors.push(invalid(
                mctx.as_str(),
                "members.weight",
                format!("{} is negative (use 0 for a standby)", m.weight),
            ));
        } else if m.weight > MAX_WEIGHT {
            errors.push(invalid(
                mctx.as_str(),
                "members.weight",
                format!("{} exceeds the maximum {MAX_WEIGHT}", m.weight),
            ));
        }
        let region = match &m.region {
            None => None,
            Some(r) => region_ref(r, geo)
                .map_err(|e| errors.push(invalid(mctx.as_str(), "members.region", e)))
                .ok(),
        };
        if let Some((rdata, addr)) = parsed {
            members.push(Member {
                label: value.to_string(),
                rdata,
                addr,
                weight: u64::try_from(m.weight).unwrap_or(0),
                region,
                health: Arc::new(MemberHealth::new()),
            });
        }
    }
    let fallback = match cfg.fallback.as_deref().map(str::trim) {
        None | Some(FALLBACK_ALL) => Fallback::All,
        Some(r) => match region_ref(r, geo) {
            Ok(region) => Fallback::Region(region),
            Err(e) => {
                errors.push(invalid(ctx, "fallback", e));
                Fallback::All
            }
        },
    };
    let health = match (&cfg.health, rtype) {
        (Some(_), Some(RecordType::CNAME)) => {
            errors.push(invalid(
                ctx,
                "health",
                "health checks are not supported on CNAME pools (a name has no address to probe)",
            ));
            None
        }
        (Some(h), _) => health_spec(h, ctx, errors),
        (None, _) => None,
    };
    if errors.len() != before {
        return None;
    }
    let geo_aware = members.iter().any(|m| m.region.is_some());
    Some(Pool {
        name: name?,
        rtype: rtype?,
        answers: cfg.answers,
        members,
        fallback,
        health,
        geo_aware,
    })
}

fn health_spec(cfg: &HealthConfig, ctx: &str, errors: &mut Vec<ZonesError>) -> Option<HealthSpec> {
    let before = errors.len();
    if cfg.tcp_port == 0 {
        errors.push(invalid(ctx, "health.tcp_port", "port 0 cannot be probed"));
    }
    if cfg.fails == 0 {
        errors.push(invalid(ctx, "health.fails", "must be at least 1"));
    }
    let interval = parse_duration(&cfg.interval)
        .map_err(|e| errors.push(invalid(ctx, "health.interval", e)))
        .ok();
    let timeout = parse_duration(&cfg.timeout)
        .map_err(|e| errors.push(invalid(ctx, "health.timeout", e)))
        .ok();
    if errors.len() != before {
        return None;
    }
    Some(HealthSpec {
        tcp_port: cfg.tcp_port,
        interval: interval?,
        timeout: timeout?,
        fails: cfg.fails,
    })
}
