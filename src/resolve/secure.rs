//! The iterator's side of DNSSEC validation (RFC 4035 §5): fetching the DS
//! and DNSKEY RRsets that `validate` asks for, remembering each zone's
//! authenticated keys (or that it is insecure or bogus) for their TTL, and
//! giving every resolved answer its verdict before it is cached.
//!
//! The chain is followed by signer names: an RRSIG names the zone whose
//! keys must verify it; that zone's DS is asked of its parent and verified
//! with the parent's keys, and so on up to a trust anchor. A DS proven
//! absent (NSEC/NSEC3, opt-out included) makes the zone insecure.

use super::aggressive::NsecCache;
use super::classify::{covered_type, dname_synthesis};
use super::iterate::{Budget, Iterator};
use super::BoxFuture;
use crate::config::DnssecConfig;
use crate::validate::anchors::{AnchorError, Anchors};
use crate::validate::chain::{authenticate_keys, KeyAuthority, ZoneKeys};
use crate::validate::nsec3::{Nsec3s, Proof};
use crate::validate::verify::{rrsig, verify_rrset};
use crate::validate::{ede, nsec, Failure, Limits, Security, Work};
use crate::wire::answer::{Ede, Sections};
use crate::wire::query::rcode;
use hickory_proto::dnssec::rdata::{DNSSECRData, DNSKEY, DS, RRSIG};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use moka::sync::Cache;
use moka::Expiry;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What is known about one zone's keys.
#[derive(Debug, Clone)]
pub(crate) enum KeyState {
    /// Authenticated keys.
    Secure(Arc<Vec<DNSKEY>>),
    /// Provably unsigned (or under a negative trust anchor, or no usable
    /// algorithm); the EDE code when there is one to report.
    Insecure(Option<u16>),
    /// The chain is broken here.
    Bogus(Failure),
}

/// Validation settings and the per-zone key memory.
pub struct Dnssec {
    anchors: Anchors,
    limits: Limits,
    work_per_query: u32,
    bogus_ttl: Duration,
    /// Zone apex (lower case) → its key state, kept for the TTL of what
    /// established it.
    keys: Cache<Name, (KeyState, Duration)>,
    /// Validated NSEC ranges (RFC 8198); None when `aggressive_nsec` is off.
    pub(super) nsecs: Option<NsecCache>,
}

struct KeyExpiry;
impl Expiry<Name, (KeyState, Duration)> for KeyExpiry {
    fn expire_after_create(
        &self,
        _k: &Name,
        v: &(KeyState, Duration),
        _n: std::time::Instant,
    ) -> Option<Duration> {
        Some(v.1)
    }
}

impl Dnssec {
    /// Validation per `cfg`; None when it is off.
    pub fn from_config(cfg: &DnssecConfig, base: &Path) -> Result<Option<Dnssec>, AnchorError> {
        if !cfg.validation {
            return Ok(None);
        }
        let anchors = Anchors::load(&cfg.anchor_paths(base), &cfg.negative_anchors())?;
        Ok(Some(Dnssec {
            anchors,
            limits: Limits {
                sigs_per_rrset: cfg.max_signatures_per_rrset as usize,
                keys_per_tag: cfg.max_keys_per_tag as usize,
                clock_skew: cfg.clock_skew.0.as_secs().min(u32::MAX as u64) as u32,
                max_nsec3_iterations: cfg.max_nsec3_iterations,
            },
            work_per_query: cfg.max_validation_work,
            bogus_ttl: cfg.bogus_ttl.0,
            keys: Cache::builder()
                .max_capacity(100_000)
                .expire_after(KeyExpiry)
                .build(),
            nsecs: cfg.aggressive_nsec.then(NsecCache::default),
        }))
    }

    /// Zones with a trust anchor (for the startup log).
    pub fn anchored_zones(&self) -> Vec<String> {
        self.anchors.zones().map(|z| z.to_string()).collect()
    }

    /// Forgets every zone's keys (control `flush`).
    pub fn clear(&self) {
        self.keys.invalidate_all();
        if let Some(n) = &self.nsecs {
            n.clear();
        }
    }

    /// RFC 8198: a negative answer synthesised from validated NSEC ranges.
    pub(super) fn synthesise(&self, qname: &Name, qtype: RecordType) -> Option<Sections> {
        if self.anchors.is_negative(qname) {
            return None;
        }
        let (rcode, authority) = self.nsecs.as_ref()?.answer(qname, qtype)?;
        Some(Sections {
            rcode,
            authority,
            security: Security::Secure,
            ..Sections::default()
        })
    }
}

fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// Data records of `records` grouped into RRsets: (owner, type).
fn rrsets(records: &[Record]) -> Vec<(Name, RecordType)> {
    let mut out: Vec<(Name, RecordType)> = Vec::new();
    for r in records {
        let t = r.record_type();
        if t == RecordType::RRSIG {
            continue;
        }
        if !out.iter().any(|(n, ty)| *ty == t && *n == r.name) {
            out.push((r.name.clone(), t));
        }
    }
    out
}

/// RRSIGs in `records` covering (`owner`, `rtype`).
fn sigs_for<'a>(records: &'a [Record], owner: &Name, rtype: RecordType) -> Vec<&'a RRSIG> {
    records
        .iter()
        .filter(|r| r.name == *owner)
        .filter_map(rrsig)
        .filter(|s| s.input().type_covered == rtype)
        .collect()
}

/// Whether `dname` (a DNAME record) above `owner` yields exactly the
/// CNAME at `owner` found in `answer`.
fn synthesised_from(dname: &Record, owner: &Name, answer: &[Record]) -> bool {
    if dname.record_type() != RecordType::DNAME
        || dname.name == *owner
        || !dname.name.zone_of(owner)
    {
        return false;
    }
    let Some(expected) = dname_synthesis(dname, owner) else {
        return false;
    };
    let cnames: Vec<&Name> = answer
        .iter()
        .filter(|r| r.name == *owner)
        .filter_map(|r| match &r.data {
            RData::CNAME(c) => Some(&c.0),
            _ => None,
        })
        .collect();
    !cnames.is_empty() && cnames.iter().all(|t| **t == expected)
}

fn failure_ede(f: &Failure) -> Ede {
    Ede {
        code: f.ede,
        text: f.why.clone(),
    }
}

/// The worse of two verdicts for one answer: bogus beats insecure beats
/// secure.
fn combine(a: Security, b: Security) -> Security {
    match (a, b) {
        (Security::Bogus, _) | (_, Security::Bogus) => Security::Bogus,
        (Security::Insecure, _) | (_, Security::Insecure) => Security::Insecure,
        _ => Security::Secure,
    }
}

impl Iterator {
    /// Gives `s` (the answer to `qname`/`qtype`) its DNSSEC verdict, capping
    /// TTLs by the signatures and attaching the EDE of a failure.
    pub(super) async fn validate(
        &self,
        dnssec: &Dnssec,
        qname: &Name,
        qtype: RecordType,
        s: &mut Sections,
        budget: &Budget,
    ) {
        if s.rcode != 0 && s.rcode != rcode::NXDOMAIN {
            return;
        }
        if dnssec.anchors.is_negative(qname) {
            s.security = Security::Insecure;
            return;
        }
        let work = Work::new(dnssec.work_per_query);
        match self.verdict(dnssec, qname, qtype, s, budget, &work).await {
            Ok((sec, code)) => {
                s.security = sec;
                if let Some(code) = code {
                    let text = match code {
                        ede::NSEC3_ITERATIONS => "NSEC3 iterations above max_nsec3_iterations",
                        ede::UNSUPPORTED_ALGORITHM => "DNSSEC algorithm not supported",
                        _ => "DS digest type not supported",
                    };
                    s.ede.get_or_insert(Ede {
                        code,
                        text: format!("{text}: answered as insecure"),
                    });
                }
            }
            Err(f) => {
                tracing::info!(%qname, ?qtype, ede = f.ede, why = %f.why, "DNSSEC bogus");
                s.security = Security::Bogus;
                s.ede = Some(failure_ede(&f));
            }
        }
    }

    async fn verdict(
        &self,
        dnssec: &Dnssec,
        qname: &Name,
        qtype: RecordType,
        s: &mut Sections,
        budget: &Budget,
        work: &Work,
    ) -> Result<(Security, Option<u16>), Failure> {
        let now = now_secs();
        let mut state = Security::Secure;
        let mut note: Option<u16> = None;
        // Where the answer ends (the last CNAME target), for the proofs.
        let mut end = qname.clone();
        for _ in 0..16 {
            let next = s.answer.iter().find_map(|r| match &r.data {
                RData::CNAME(c) if r.name == end && qtype != RecordType::CNAME => Some(c.0.clone()),
                _ => None,
            });
            match next {
                Some(n) => end = n,
                None => break,
            }
        }
        let mut wildcards: Vec<(Name, Name)> = Vec::new();
        let answer = std::mem::take(&mut s.answer);
        let mut caps: Vec<(Name, RecordType, u32)> = Vec::new();
        for (owner, rtype) in rrsets(&answer) {
            let sigs = sigs_for(&answer, &owner, rtype);
            // A CNAME synthesised from a DNAME is unsigned; the DNAME
            // (in the same answer, validated as its own RRset) carries the
            // proof, and the CNAME must say exactly what the DNAME
            // implies (RFC 6672 §5.3.1).
            if sigs.is_empty()
                && rtype == RecordType::CNAME
                && answer.iter().any(|d| synthesised_from(d, &owner, &answer))
            {
                continue;
            }
            let signer = sigs
                .iter()
                .map(|s| &s.input().signer_name)
                .find(|z| z.zone_of(&owner));
            let (zone, keys) = match signer {
                Some(z) => {
                    let z = z.to_lowercase();
                    let k = self.zone_keys(dnssec, &z, budget, work, 0).await;
                    (z, k)
                }
                None => self.unsigned_zone(dnssec, &owner, budget, work).await,
            };
            match keys {
                KeyState::Insecure(c) => {
                    state = combine(state, Security::Insecure);
                    note = note.or(c);
                }
                KeyState::Bogus(f) => {
                    s.answer = answer;
                    return Err(f);
                }
                KeyState::Secure(keys) => {
                    let set: Vec<&Record> = answer.iter().filter(|r| r.name == owner).collect();
                    let v = match verify_rrset(
                        &owner,
                        rtype,
                        &set,
                        &sigs,
                        &zone,
                        &keys,
                        now,
                        &dnssec.limits,
                        work,
                    ) {
                        Ok(v) => v,
                        Err(f) => {
                            s.answer = answer;
                            return Err(f);
                        }
                    };
                    caps.push((owner.clone(), rtype, v.ttl));
                    if let Some(ce) = v.wildcard {
                        wildcards.push((owner.clone(), ce));
                    }
                }
            }
        }
        s.answer = answer;
        for (owner, rtype, ttl) in caps {
            for r in s.answer.iter_mut().filter(|r| r.name == owner) {
                let covers = covered_type(r) == rtype;
                if covers {
                    r.ttl = r.ttl.min(ttl);
                }
            }
        }
        let data_at_end = s
            .answer
            .iter()
            .any(|r| r.name == end && (r.record_type() == qtype || qtype == RecordType::ANY));
        let negative = s.rcode == rcode::NXDOMAIN || !data_at_end;
        if !negative && wildcards.is_empty() {
            return Ok((state, note));
        }
        // Negative answers and wildcard expansions: the authority
        // section's SOA and NSEC/NSEC3 must verify and prove the claim.
        let zone = s
            .authority
            .iter()
            .find_map(|r| {
                rrsig(r)
                    .map(|x| x.input().signer_name.to_lowercase())
                    .or_else(|| (r.record_type() == RecordType::SOA).then(|| r.name.to_lowercase()))
            })
            .unwrap_or_else(|| self.zone_of(&end));
        let keys = match self.zone_keys(dnssec, &zone, budget, work, 0).await {
            KeyState::Secure(k) => k,
            KeyState::Insecure(c) => return Ok((Security::Insecure, note.or(c))),
            KeyState::Bogus(f) => return Err(f),
        };
        if state == Security::Insecure {
            // A chain into an unsigned zone: its denial proves nothing more.
            return Ok((state, note));
        }
        let verified = self.verified_authority(&s.authority, &zone, &keys, now, dnssec, work)?;
        // The client sees the capped TTLs too (RFC 4035 §5.3.3).
        for r in s.authority.iter_mut() {
            let capped = verified.iter().find(|v| {
                v.name == r.name
                    && v.record_type() == r.record_type()
                    && covered_type(v) == covered_type(r)
            });
            if let Some(v) = capped {
                r.ttl = r.ttl.min(v.ttl);
            }
        }
        let proof = if negative {
            self.denial(
                dnssec,
                &zone,
                &verified,
                &end,
                qtype,
                s.rcode == rcode::NXDOMAIN,
                work,
            )?
        } else {
            Proof::Proven
        };
        let mut proof = proof;
        for (owner, ce) in &wildcards {
            let p = self.no_closer_match(dnssec, &zone, &verified, owner, ce, work)?;
            if p != Proof::Proven {
                proof = p;
            }
        }
        if proof == Proof::Proven && negative && state == Security::Secure {
            if let Some(n) = &dnssec.nsecs {
                n.remember(&zone, &verified);
            }
        }
        match proof {
            Proof::Proven => Ok((state, note)),
            Proof::OptOut => Ok((Security::Insecure, note)),
            Proof::TooManyIterations => Ok((Security::Insecure, Some(ede::NSEC3_ITERATIONS))),
            Proof::No => Err(Failure::new(
                ede::NSEC_MISSING,
                format!("no NSEC/NSEC3 proof for {end} {qtype}"),
            )),
        }
    }

    /// Verifies every RRset of `zone` in an authority section; returns
    /// those records (the only ones a proof may use: anything else in the
    /// section is unverified), their TTLs capped by their signatures.
    fn verified_authority(
        &self,
        authority: &[Record],
        zone: &Name,
        keys: &[DNSKEY],
        now: u32,
        dnssec: &Dnssec,
        work: &Work,
    ) -> Result<Vec<Record>, Failure> {
        let mut out: Vec<Record> = Vec::new();
        for (owner, rtype) in rrsets(authority) {
            if !zone.zone_of(&owner) {
                continue;
            }
            let sigs = sigs_for(authority, &owner, rtype);
            let set: Vec<&Record> = authority.iter().filter(|r| r.name == owner).collect();
            let v = verify_rrset(
                &owner,
                rtype,
                &set,
                &sigs,
                zone,
                keys,
                now,
                &dnssec.limits,
                work,
            )?;
            for r in authority.iter().filter(|r| r.name == owner) {
                let covers = covered_type(r) == rtype;
                if covers {
                    let mut r = r.clone();
                    r.ttl = r.ttl.min(v.ttl);
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// What verified NSEC/NSEC3 records in `authority` prove about
    /// (`name`, `qtype`).
    #[allow(clippy::too_many_arguments)]
    fn denial(
        &self,
        dnssec: &Dnssec,
        zone: &Name,
        authority: &[Record],
        name: &Name,
        qtype: RecordType,
        nxdomain: bool,
        work: &Work,
    ) -> Result<Proof, Failure> {
        let nsecs = nsec::collect(authority);
        if !nsecs.is_empty() {
            let ok = if nxdomain {
                nsec::proves_nxdomain(&nsecs, name)
            } else {
                nsec::proves_nodata(&nsecs, name, qtype)
            };
            return Ok(if ok { Proof::Proven } else { Proof::No });
        }
        let Some(n3) = Nsec3s::collect(zone, authority) else {
            return Ok(Proof::No);
        };
        if n3.iterations() > dnssec.limits.max_nsec3_iterations {
            return Ok(Proof::TooManyIterations);
        }
        if nxdomain {
            n3.nxdomain(name, work)
        } else {
            n3.nodata(name, qtype, work)
        }
    }

    fn no_closer_match(
        &self,
        dnssec: &Dnssec,
        zone: &Name,
        authority: &[Record],
        owner: &Name,
        ce: &Name,
        work: &Work,
    ) -> Result<Proof, Failure> {
        let nsecs = nsec::collect(authority);
        if !nsecs.is_empty() {
            return Ok(if nsec::proves_no_closer_match(&nsecs, owner) {
                Proof::Proven
            } else {
                Proof::No
            });
        }
        let Some(n3) = Nsec3s::collect(zone, authority) else {
            return Ok(Proof::No);
        };
        if n3.iterations() > dnssec.limits.max_nsec3_iterations {
            return Ok(Proof::TooManyIterations);
        }
        n3.no_closer_match(owner, ce, work)
    }

    /// For an RRset that came without RRSIGs: the zone it belongs to and
    /// its key state. From the deepest known cut down towards `owner`,
    /// each name's DS is asked, so a delegation to an unsigned zone the
    /// walk never saw as a referral (one server serving parent and child)
    /// is found and proven; a name with no such proof is in the signed
    /// zone above, where the missing RRSIG makes the answer bogus.
    async fn unsigned_zone(
        &self,
        dnssec: &Dnssec,
        owner: &Name,
        budget: &Budget,
        work: &Work,
    ) -> (Name, KeyState) {
        let mut zone = self.zone_of(owner);
        let mut state = self.zone_keys(dnssec, &zone, budget, work, 0).await;
        for n in (zone.num_labels() as usize + 1)..=(owner.num_labels() as usize) {
            if !matches!(state, KeyState::Secure(_)) {
                break;
            }
            let c = owner.trim_to(n).to_lowercase();
            match self.zone_keys(dnssec, &c, budget, work, 0).await {
                KeyState::Secure(k) => {
                    zone = c;
                    state = KeyState::Secure(k);
                }
                KeyState::Insecure(code) => return (c, KeyState::Insecure(code)),
                // Not a zone cut (or a broken one): the RRset belongs to
                // the signed zone above and should have been signed.
                KeyState::Bogus(_) => break,
            }
        }
        (zone, state)
    }

    /// The zone `name` is in, as far as the walk knows.
    fn zone_of(&self, name: &Name) -> Name {
        self.store
            .deepest_cut(name)
            .map(|d| d.zone.to_lowercase())
            .unwrap_or_else(Name::root)
    }

    /// The key state of `zone`, from memory or by fetching its DS (from
    /// the parent) and DNSKEY sets.
    fn zone_keys<'a>(
        &'a self,
        dnssec: &'a Dnssec,
        zone: &'a Name,
        budget: &'a Budget,
        work: &'a Work,
        depth: u32,
    ) -> BoxFuture<'a, KeyState> {
        Box::pin(async move {
            if let Some((k, _)) = dnssec.keys.get(zone) {
                return k;
            }
            if dnssec.anchors.is_negative(zone) || !dnssec.anchors.covers(zone) {
                return KeyState::Insecure(None);
            }
            if depth > 32 {
                return KeyState::Bogus(Failure::new(ede::BOGUS, "chain of trust too long"));
            }
            let (state, ttl) = self.establish(dnssec, zone, budget, work, depth).await;
            // A failure caused by running out of this query's work budget
            // says nothing about the zone: not remembered.
            let keep = match &state {
                KeyState::Bogus(f) => !f.why.contains("budget"),
                _ => true,
            };
            if keep {
                let ttl = match &state {
                    KeyState::Bogus(_) => dnssec.bogus_ttl,
                    _ => Duration::from_secs(ttl.clamp(1, 86400) as u64),
                };
                dnssec.keys.insert(zone.clone(), (state.clone(), ttl));
            }
            state
        })
    }

    async fn establish(
        &self,
        dnssec: &Dnssec,
        zone: &Name,
        budget: &Budget,
        work: &Work,
        depth: u32,
    ) -> (KeyState, u32) {
        let now = now_secs();
        if let Some(anchor) = dnssec.anchors.at(zone) {
            let Some(keyset) = self.fetch(zone, RecordType::DNSKEY, budget, depth).await else {
                return bogus(ede::DNSKEY_MISSING, format!("no DNSKEY answer for {zone}"));
            };
            let mut last = None;
            let auths = [
                (!anchor.ds.is_empty()).then_some(KeyAuthority::Ds(&anchor.ds)),
                (!anchor.keys.is_empty()).then_some(KeyAuthority::Keys(&anchor.keys)),
            ];
            for auth in auths.into_iter().flatten() {
                match authenticate_keys(zone, &keyset.answer, auth, now, &dnssec.limits, work) {
                    Ok(ZoneKeys::Secure(k, ttl)) => return (KeyState::Secure(Arc::new(k)), ttl),
                    Ok(ZoneKeys::Insecure(c)) => last = Some(Ok(c)),
                    Err(f) => last = Some(Err(f)),
                }
            }
            return match last {
                Some(Ok(c)) => (KeyState::Insecure(Some(c)), 3600),
                Some(Err(f)) => (KeyState::Bogus(f), 0),
                None => bogus(
                    ede::DNSKEY_MISSING,
                    format!("empty trust anchor for {zone}"),
                ),
            };
        }
        // The DS comes from the parent zone.
        let Some(dsans) = self.fetch(zone, RecordType::DS, budget, depth).await else {
            return bogus(ede::DNSKEY_MISSING, format!("no DS answer for {zone}"));
        };
        let ds: Vec<DS> = dsans
            .answer
            .iter()
            .filter(|r| r.name == *zone)
            .filter_map(|r| match &r.data {
                RData::DNSSEC(DNSSECRData::DS(d)) => Some(d.clone()),
                _ => None,
            })
            .collect();
        let records = if ds.is_empty() {
            &dsans.authority
        } else {
            &dsans.answer
        };
        // Whose keys signed the DS answer: a proper ancestor of the zone.
        let signer = records
            .iter()
            .filter_map(rrsig)
            .map(|s| s.input().signer_name.to_lowercase())
            .find(|s| s != zone && s.zone_of(zone));
        let parent = match &signer {
            Some(p) => p.clone(),
            None => self.zone_of(&zone.base_name()),
        };
        let pkeys = match self
            .zone_keys(dnssec, &parent, budget, work, depth + 1)
            .await
        {
            KeyState::Secure(k) => k,
            other => return (other, 3600),
        };
        if signer.is_none() {
            return bogus(
                if ds.is_empty() {
                    ede::NSEC_MISSING
                } else {
                    ede::RRSIGS_MISSING
                },
                format!("unsigned DS answer for {zone} from signed {parent}"),
            );
        }
        if ds.is_empty() {
            // Proven absent → the delegation is unsigned.
            let verified =
                match self.verified_authority(&dsans.authority, &parent, &pkeys, now, dnssec, work)
                {
                    Ok(v) => v,
                    Err(f) => return (KeyState::Bogus(f), 0),
                };
            let ttl = verified.iter().map(|r| r.ttl).min().unwrap_or(60);
            return match self.denial(
                dnssec,
                &parent,
                &verified,
                zone,
                RecordType::DS,
                false,
                work,
            ) {
                Ok(Proof::Proven) | Ok(Proof::OptOut) => (KeyState::Insecure(None), ttl),
                Ok(Proof::TooManyIterations) => {
                    (KeyState::Insecure(Some(ede::NSEC3_ITERATIONS)), ttl)
                }
                Ok(Proof::No) => {
                    bogus(ede::NSEC_MISSING, format!("no proof that {zone} has no DS"))
                }
                Err(f) => (KeyState::Bogus(f), 0),
            };
        }
        let set: Vec<&Record> = dsans.answer.iter().filter(|r| r.name == *zone).collect();
        let sigs = sigs_for(&dsans.answer, zone, RecordType::DS);
        let v = match verify_rrset(
            zone,
            RecordType::DS,
            &set,
            &sigs,
            &parent,
            &pkeys,
            now,
            &dnssec.limits,
            work,
        ) {
            Ok(v) => v,
            Err(f) => return (KeyState::Bogus(f), 0),
        };
        let Some(keyset) = self.fetch(zone, RecordType::DNSKEY, budget, depth).await else {
            return bogus(ede::DNSKEY_MISSING, format!("no DNSKEY answer for {zone}"));
        };
        match authenticate_keys(
            zone,
            &keyset.answer,
            KeyAuthority::Ds(&ds),
            now,
            &dnssec.limits,
            work,
        ) {
            Ok(ZoneKeys::Secure(k, ttl)) => (KeyState::Secure(Arc::new(k)), ttl.min(v.ttl)),
            Ok(ZoneKeys::Insecure(c)) => (KeyState::Insecure(Some(c)), v.ttl),
            Err(f) => (KeyState::Bogus(f), 0),
        }
    }

    /// Resolves (`name`, `rtype`) for the chain of trust.
    async fn fetch(
        &self,
        name: &Name,
        rtype: RecordType,
        budget: &Budget,
        depth: u32,
    ) -> Option<Sections> {
        self.resolve_name(name, rtype, budget, depth + 1).await.ok()
    }
}

fn bogus(code: u16, why: String) -> (KeyState, u32) {
    (KeyState::Bogus(Failure::new(code, why)), 0)
}

#[cfg(test)]
mod tests {
    use super::synthesised_from;
    use hickory_proto::rr::rdata::{CNAME, NULL};
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use hickory_proto::serialize::binary::BinEncodable;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).expect("name")
    }

    fn dname(owner: &str, target: &str) -> Record {
        let wire = n(target).to_bytes().expect("wire name");
        Record::from_rdata(
            n(owner),
            300,
            RData::Unknown {
                code: RecordType::DNAME,
                rdata: NULL::with(wire),
            },
        )
    }

    fn cname(owner: &str, target: &str) -> Record {
        Record::from_rdata(n(owner), 300, RData::CNAME(CNAME(n(target))))
    }

    #[test]
    fn an_unsigned_cname_passes_only_as_its_dname_implies() {
        let d = dname("dn.example.", "t.example.");
        let good = [d.clone(), cname("www.dn.example.", "www.t.example.")];
        assert!(synthesised_from(&d, &n("www.dn.example."), &good));
        // A forged target beside a genuine DNAME is not the synthesis.
        let forged = [d.clone(), cname("www.dn.example.", "evil.example.")];
        assert!(!synthesised_from(&d, &n("www.dn.example."), &forged));
        // A DNAME does not synthesise at its own name.
        let own = [d.clone(), cname("dn.example.", "t.example.")];
        assert!(!synthesised_from(&d, &n("dn.example."), &own));
    }
}
