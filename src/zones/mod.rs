//! Local authoritative zones (placeholder until the zones module lands).
#![allow(missing_docs)]
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, Record, RecordType};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoConfig {
    #[serde(default)]
    pub regions: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub mmdb: Option<PathBuf>,
}
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    pub origin: String,
}
#[derive(Debug, thiserror::Error)]
#[error("zones: {0}")]
pub struct ZonesError(String);
pub struct ClientInfo {
    pub addr: std::net::IpAddr,
    pub ecs: Option<ClientSubnet>,
}
pub struct ClientSubnet {
    pub addr: std::net::IpAddr,
    pub source_prefix: u8,
}
pub struct ZoneAnswer {
    pub rcode: ResponseCode,
    pub answer: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
    pub ecs_scope: Option<u8>,
}
pub struct LocalZones;
pub struct HealthGuard;
impl LocalZones {
    pub fn from_config(
        _z: &[ZoneConfig],
        _g: &GeoConfig,
        _b: &Path,
    ) -> Result<LocalZones, Vec<ZonesError>> {
        Ok(LocalZones)
    }
    pub fn is_empty(&self) -> bool {
        true
    }
    pub fn lookup(&self, _q: &Name, _t: RecordType, _c: &ClientInfo) -> Option<ZoneAnswer> {
        None
    }
    pub fn start_health_checks(self: &Arc<Self>) -> HealthGuard {
        HealthGuard
    }
}
