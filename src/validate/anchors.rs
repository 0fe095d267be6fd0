//! Trust anchors and negative trust anchors.
//!
//! Built in: the IANA root key-signing keys (KSK-2017, key tag 20326,
//! and KSK-2024, key tag 38696), as hickory-proto ships them. Files hold
//! DS or DNSKEY records in zone-file syntax (RFC 4033 §3; the format of
//! Unbound's `trust-anchor-file`); a file that names the root replaces the
//! built-in root anchors. Negative trust anchors (RFC 7646) switch
//! validation off at and below a domain.

use hickory_proto::dnssec::rdata::{DNSSECRData, DS};
use hickory_proto::dnssec::{PublicKey, TrustAnchors, Verifier};
use hickory_proto::rr::{Name, RData};
use hickory_proto::serialize::txt::Parser;
use std::path::Path;

/// Why an anchor file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not zone-file syntax.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A record other than DS or DNSKEY.
    #[error("{path}: {owner} {rtype} is not a DS or DNSKEY record")]
    WrongType {
        /// The file.
        path: String,
        /// Owner of the record.
        owner: String,
        /// Its type.
        rtype: String,
    },
    /// No DS or DNSKEY record at all.
    #[error("{path}: no DS or DNSKEY records")]
    Empty {
        /// The file.
        path: String,
    },
}

/// The anchors of one zone.
#[derive(Debug, Clone, Default)]
pub struct ZoneAnchor {
    /// DS records (as a parent would publish them).
    pub ds: Vec<DS>,
    /// DNSKEY public keys: (algorithm number, key bytes).
    pub keys: Vec<(u8, Vec<u8>)>,
}

/// Every configured trust anchor, by zone.
#[derive(Debug, Clone, Default)]
pub struct Anchors {
    zones: Vec<(Name, ZoneAnchor)>,
    negative: Vec<Name>,
}

impl Anchors {
    /// The built-in root anchors plus `files`, minus validation under
    /// `negative`.
    pub fn load(files: &[String], negative: &[Name]) -> Result<Anchors, AnchorError> {
        let mut zones: Vec<(Name, ZoneAnchor)> = Vec::new();
        for f in files {
            for (zone, anchor) in parse_file(Path::new(f))? {
                match zones.iter_mut().find(|(z, _)| *z == zone) {
                    Some((_, a)) => {
                        a.ds.extend(anchor.ds);
                        a.keys.extend(anchor.keys);
                    }
                    None => zones.push((zone, anchor)),
                }
            }
        }
        if !zones.iter().any(|(z, _)| z.is_root()) {
            let builtin = TrustAnchors::default();
            let keys = (0..builtin.len())
                .filter_map(|i| builtin.get(i))
                .map(|k| (u8::from(k.algorithm()), k.public_bytes().to_vec()))
                .collect();
            zones.push((
                Name::root(),
                ZoneAnchor {
                    ds: Vec::new(),
                    keys,
                },
            ));
        }
        Ok(Anchors {
            zones,
            negative: negative.iter().map(|n| n.to_lowercase()).collect(),
        })
    }

    /// The anchor configured exactly at `zone`.
    pub fn at(&self, zone: &Name) -> Option<&ZoneAnchor> {
        self.zones.iter().find(|(z, _)| z == zone).map(|(_, a)| a)
    }

    /// Whether some anchor lies at or above `name`: names under no anchor
    /// cannot be validated and are insecure.
    pub fn covers(&self, name: &Name) -> bool {
        self.zones.iter().any(|(z, _)| z.zone_of(name))
    }

    /// Whether `name` is at or below a negative trust anchor.
    pub fn is_negative(&self, name: &Name) -> bool {
        self.negative.iter().any(|z| z.zone_of(name))
    }

    /// Zones with an anchor, for the startup log.
    pub fn zones(&self) -> impl Iterator<Item = &Name> {
        self.zones.iter().map(|(z, _)| z)
    }
}

/// Reads one anchor file.
pub fn parse_file(path: &Path) -> Result<Vec<(Name, ZoneAnchor)>, AnchorError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| AnchorError::Read {
        path: p.clone(),
        source,
    })?;
    // Records in anchor files often carry no TTL; the parser needs one.
    let input = format!("$TTL 3600\n{text}\n");
    let (_, sets) = Parser::new(input, Some(path.to_path_buf()), Some(Name::root()))
        .parse()
        .map_err(|e| AnchorError::Parse {
            path: p.clone(),
            message: e.to_string(),
        })?;
    let mut out: Vec<(Name, ZoneAnchor)> = Vec::new();
    for set in sets.into_values() {
        for r in set.records_without_rrsigs() {
            let zone = r.name.to_lowercase();
            let entry = match out.iter_mut().position(|(z, _)| *z == zone) {
                Some(i) => &mut out[i].1,
                None => {
                    out.push((zone.clone(), ZoneAnchor::default()));
                    let last = out.len() - 1;
                    &mut out[last].1
                }
            };
            match &r.data {
                RData::DNSSEC(DNSSECRData::DS(ds)) => entry.ds.push(ds.clone()),
                RData::DNSSEC(DNSSECRData::DNSKEY(k)) => entry.keys.push((
                    u8::from(k.algorithm()),
                    k.public_key().public_bytes().to_vec(),
                )),
                _ => {
                    return Err(AnchorError::WrongType {
                        path: p,
                        owner: r.name.to_string(),
                        rtype: r.record_type().to_string(),
                    })
                }
            }
        }
    }
    out.retain(|(_, a)| !a.ds.is_empty() || !a.keys.is_empty());
    if out.is_empty() {
        return Err(AnchorError::Empty { path: p });
    }
    Ok(out)
}
