//! Verifying one RRset's signatures with a zone's keys (RFC 4035 §5.3).
//!
//! The cryptography is hickory-proto's (ring underneath); what is decided
//! here is which signatures and keys are tried, and in what bounds: at most
//! `sigs_per_rrset` RRSIGs and `keys_per_tag` keys per RRSIG, every check
//! charged to the query's [`Work`] (KeyTrap, CVE-2023-50387), validity
//! by serial-number arithmetic with a clock skew (RFC 4034 §3.1.5), and
//! the TTL capped by the original TTL and the expiration (RFC 4035 §5.3.3).

use super::{ede, serial_le, Failure, Limits, Work};
use hickory_proto::dnssec::rdata::{DNSSECRData, DNSKEY, RRSIG};
use hickory_proto::dnssec::Verifier;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// A verified RRset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The TTL the set may be kept for.
    pub ttl: u32,
    /// When the RRSIG shows a wildcard expansion (RFC 4035 §5.3.4): the
    /// wildcard's parent, the closest encloser; the caller must then prove
    /// that the name itself does not exist.
    pub wildcard: Option<Name>,
}

/// The RRSIG in `r`, if it is one.
pub fn rrsig(r: &Record) -> Option<&RRSIG> {
    match &r.data {
        RData::DNSSEC(DNSSECRData::RRSIG(s)) => Some(s),
        _ => None,
    }
}

/// The DNSKEY in `r`, if it is one.
pub fn dnskey(r: &Record) -> Option<&DNSKEY> {
    match &r.data {
        RData::DNSSEC(DNSSECRData::DNSKEY(k)) => Some(k),
        _ => None,
    }
}

/// Labels of `name` as RRSIG counts them: no root, no leading `*`
/// (hickory's `num_labels` already leaves the `*` out).
pub fn rrsig_labels(name: &Name) -> u8 {
    name.num_labels()
}

/// Verifies the RRset (`owner`, `rtype`) made of `set` (data records; any
/// RRSIGs in it are ignored) with the RRSIGs in `sigs` by `zone`'s `keys`.
#[allow(clippy::too_many_arguments)]
pub fn verify_rrset(
    owner: &Name,
    rtype: RecordType,
    set: &[&Record],
    sigs: &[&RRSIG],
    zone: &Name,
    keys: &[DNSKEY],
    now: u32,
    limits: &Limits,
    work: &Work,
) -> Result<Verified, Failure> {
    let records: Vec<Record> = set
        .iter()
        .filter(|r| r.record_type() == rtype && r.name == *owner)
        .map(|r| (*r).clone())
        .collect();
    if records.is_empty() {
        return Err(Failure::new(
            ede::BOGUS,
            format!("empty RRset {owner} {rtype}"),
        ));
    }
    let owner_labels = rrsig_labels(owner);
    let candidates = sigs.iter().filter(|s| {
        let i = s.input();
        i.type_covered == rtype && i.signer_name == *zone && i.num_labels <= owner_labels
    });
    // The most telling failure seen, reported if nothing verifies.
    let mut failure: Option<Failure> = None;
    let mut note = |f: Failure| {
        // A signature that fails to verify outranks a time problem, which
        // outranks "no usable key".
        let rank = |c: u16| match c {
            ede::BOGUS => 3,
            ede::SIGNATURE_EXPIRED | ede::SIGNATURE_NOT_YET_VALID => 2,
            _ => 1,
        };
        if failure
            .as_ref()
            .is_none_or(|old| rank(f.ede) > rank(old.ede))
        {
            failure = Some(f);
        }
    };
    let mut any = false;
    for sig in candidates.take(limits.sigs_per_rrset) {
        any = true;
        let input = sig.input();
        let inception = input.sig_inception.get();
        let expiration = input.sig_expiration.get();
        if !serial_le(inception, now.wrapping_add(limits.clock_skew)) {
            note(Failure::new(
                ede::SIGNATURE_NOT_YET_VALID,
                format!("RRSIG {owner} {rtype} not valid before {inception}"),
            ));
            continue;
        }
        if !serial_le(now.wrapping_sub(limits.clock_skew), expiration) {
            note(Failure::new(
                ede::SIGNATURE_EXPIRED,
                format!("RRSIG {owner} {rtype} expired at {expiration}"),
            ));
            continue;
        }
        if !input.algorithm.is_supported() {
            note(Failure::new(
                ede::UNSUPPORTED_ALGORITHM,
                format!("RRSIG algorithm {} not supported", input.algorithm),
            ));
            continue;
        }
        let keys = keys
            .iter()
            .filter(|k| k.zone_key() && !k.revoke())
            .filter(|k| k.algorithm() == input.algorithm)
            .filter(|k| k.calculate_key_tag().ok() == Some(input.key_tag))
            .take(limits.keys_per_tag);
        let mut keyed = false;
        for key in keys {
            keyed = true;
            work.take()?;
            if key
                .verify_rrsig(owner, DNSClass::IN, sig, records.iter())
                .is_ok()
            {
                let ttl_left = expiration.wrapping_sub(now);
                let ttl = records
                    .iter()
                    .map(|r| r.ttl)
                    .min()
                    .unwrap_or(0)
                    .min(input.original_ttl)
                    .min(ttl_left);
                let wildcard = (input.num_labels < owner_labels)
                    .then(|| owner.trim_to(input.num_labels as usize));
                return Ok(Verified { ttl, wildcard });
            }
            note(Failure::new(
                ede::BOGUS,
                format!(
                    "RRSIG {owner} {rtype} by key {} does not verify",
                    input.key_tag
                ),
            ));
        }
        if !keyed {
            note(Failure::new(
                ede::DNSKEY_MISSING,
                format!(
                    "no DNSKEY {} of {zone} for RRSIG {owner} {rtype}",
                    input.key_tag
                ),
            ));
        }
    }
    if !any {
        return Err(Failure::new(
            ede::RRSIGS_MISSING,
            format!("no RRSIG by {zone} for {owner} {rtype}"),
        ));
    }
    Err(failure.unwrap_or_else(|| Failure::new(ede::BOGUS, "no signature verifies")))
}
