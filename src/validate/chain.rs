//! Authenticating a zone's DNSKEY set (RFC 4035 §5.2): a DS from the
//! parent (or a trust anchor) picks the key-signing keys, one of which
//! must sign the DNSKEY RRset; then every zone key in the set may sign
//! the zone's data.

use super::verify::{dnskey, rrsig, verify_rrset};
use super::{ede, Failure, Limits, Work};
use hickory_proto::dnssec::rdata::{DNSKEY, DS, RRSIG};
use hickory_proto::dnssec::{DigestType, PublicKey, Verifier};
use hickory_proto::rr::{Name, Record, RecordType};

/// What authenticates a zone's keys.
#[derive(Debug, Clone)]
pub enum KeyAuthority<'a> {
    /// The parent's DS RRset (already verified).
    Ds(&'a [DS]),
    /// Trust-anchor keys: (algorithm number, public key bytes).
    Keys(&'a [(u8, Vec<u8>)]),
}

/// The outcome of authenticating a DNSKEY set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneKeys {
    /// The zone's keys, authenticated; with the TTL they may be kept.
    Secure(Vec<DNSKEY>, u32),
    /// No DS uses a supported algorithm and digest (RFC 4035 §5.2): the
    /// zone is treated as unsigned; the EDE code says why.
    Insecure(u16),
}

pub(crate) fn digest_supported(t: DigestType) -> bool {
    matches!(
        t,
        DigestType::SHA1 | DigestType::SHA256 | DigestType::SHA384
    )
}

/// Authenticates the DNSKEY RRset of `zone` (`records`: the DNSKEYs with
/// their RRSIGs) by `authority`.
pub fn authenticate_keys(
    zone: &Name,
    records: &[Record],
    authority: KeyAuthority<'_>,
    now: u32,
    limits: &Limits,
    work: &Work,
) -> Result<ZoneKeys, Failure> {
    let keys: Vec<DNSKEY> = records
        .iter()
        .filter(|r| r.name == *zone)
        .filter_map(dnskey)
        .cloned()
        .collect();
    let set: Vec<&Record> = records
        .iter()
        .filter(|r| r.name == *zone && r.record_type() == RecordType::DNSKEY)
        .collect();
    let sigs: Vec<&RRSIG> = records.iter().filter_map(rrsig).collect();
    let entry_points: Vec<DNSKEY> = match authority {
        KeyAuthority::Ds(ds) => {
            // Only DS records we can use count (RFC 4035 §5.2; RFC 6840
            // §5.2: an unsupported algorithm or digest makes the zone
            // insecure only when no usable DS is left).
            let usable: Vec<&DS> = ds
                .iter()
                .filter(|d| digest_supported(d.digest_type()) && d.algorithm().is_supported())
                .collect();
            if usable.is_empty() {
                let code = if ds.iter().any(|d| !d.algorithm().is_supported()) {
                    ede::UNSUPPORTED_ALGORITHM
                } else {
                    ede::UNSUPPORTED_DIGEST
                };
                return Ok(ZoneKeys::Insecure(code));
            }
            keys.iter()
                .filter(|k| k.zone_key() && !k.revoke())
                .filter(|k| {
                    let tag = k.calculate_key_tag().ok();
                    usable.iter().any(|d| {
                        Some(d.key_tag()) == tag
                            && d.algorithm() == k.algorithm()
                            && d.covers(zone, k).unwrap_or(false)
                    })
                })
                .cloned()
                .collect()
        }
        KeyAuthority::Keys(anchors) => keys
            .iter()
            .filter(|k| k.zone_key() && !k.revoke())
            .filter(|k| {
                let pk = k.public_key();
                anchors.iter().any(|(alg, bytes)| {
                    u8::from(k.algorithm()) == *alg && pk.public_bytes() == bytes.as_slice()
                })
            })
            .cloned()
            .collect(),
    };
    if entry_points.is_empty() {
        return Err(Failure::new(
            ede::DNSKEY_MISSING,
            format!("no DNSKEY of {zone} matches its DS or trust anchor"),
        ));
    }
    let v = verify_rrset(
        zone,
        RecordType::DNSKEY,
        &set,
        &sigs,
        zone,
        &entry_points,
        now,
        limits,
        work,
    )?;
    Ok(ZoneKeys::Secure(keys, v.ttl))
}
