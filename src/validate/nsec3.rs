//! Denial of existence with NSEC3 (RFC 5155 §8, RFC 9276): hashed owner
//! names, the closest-encloser proof, opt-out, and the iteration cap.
//!
//! Every hash is charged to the query's [`Work`] (CVE-2023-50868: a
//! closest-encloser search on a long name is many hashes), and a zone with
//! more iterations than `max_nsec3_iterations` is treated as insecure
//! (RFC 9276 §3.2) before any hashing is done.

use super::nsec::wildcard_of;
use super::{Failure, Work};
use hickory_proto::dnssec::rdata::{DNSSECRData, NSEC3};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// What a set of verified NSEC3 records proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// The claim is proven.
    Proven,
    /// An opt-out span covers the name: an unsigned delegation may exist
    /// there, so the answer is insecure (RFC 5155 §6, §8.6).
    OptOut,
    /// More iterations than allowed: insecure (RFC 9276 §3.2).
    TooManyIterations,
    /// Not proven.
    No,
}

/// NSEC3 records of one zone with their decoded owner hashes.
pub struct Nsec3s<'a> {
    zone: Name,
    recs: Vec<(Vec<u8>, &'a NSEC3)>,
    salt: Vec<u8>,
    iterations: u16,
}

impl<'a> Nsec3s<'a> {
    /// The NSEC3 records of `zone` in `records` that share the first
    /// one's parameters (others are ignored, RFC 5155 §8.2).
    pub fn collect(zone: &Name, records: &'a [Record]) -> Option<Nsec3s<'a>> {
        let mut recs = Vec::new();
        let mut params: Option<(Vec<u8>, u16)> = None;
        for r in records {
            let RData::DNSSEC(DNSSECRData::NSEC3(n)) = &r.data else {
                continue;
            };
            if r.name.num_labels() != zone.num_labels() + 1 || !zone.zone_of(&r.name) {
                continue;
            }
            let Some(label) = r.name.iter().next() else {
                continue;
            };
            let Ok(hash) = data_encoding::BASE32HEX_NOPAD.decode(&label.to_ascii_uppercase())
            else {
                continue;
            };
            let p = (n.salt().to_vec(), n.iterations());
            match &params {
                None => params = Some(p),
                Some(q) if *q != p => continue,
                Some(_) => {}
            }
            recs.push((hash, n));
        }
        let (salt, iterations) = params?;
        Some(Nsec3s {
            zone: zone.clone(),
            recs,
            salt,
            iterations,
        })
    }

    /// The iterations the zone uses.
    pub fn iterations(&self) -> u16 {
        self.iterations
    }

    fn hash(&self, name: &Name, work: &Work) -> Result<Vec<u8>, Failure> {
        work.take()?;
        let h = hickory_proto::dnssec::Nsec3HashAlgorithm::SHA1
            .hash(&self.salt, name, self.iterations)
            .map_err(|e| Failure::new(super::ede::BOGUS, format!("NSEC3 hash: {e}")))?;
        Ok(h.as_ref().to_vec())
    }

    fn matching(&self, h: &[u8]) -> Option<&'a NSEC3> {
        self.recs.iter().find(|(o, _)| o == h).map(|(_, n)| *n)
    }

    fn covering(&self, h: &[u8]) -> Option<&'a NSEC3> {
        self.recs
            .iter()
            .find(|(o, n)| {
                let next = n.next_hashed_owner_name();
                if o.as_slice() < next {
                    o.as_slice() < h && h < next
                } else {
                    h > o.as_slice() || h < next
                }
            })
            .map(|(_, n)| *n)
    }

    /// RFC 5155 §8.3: the closest encloser of `qname` (a matching NSEC3)
    /// and the NSEC3 covering the next closer name.
    fn closest_encloser(
        &self,
        qname: &Name,
        work: &Work,
    ) -> Result<Option<(Name, &'a NSEC3)>, Failure> {
        if !self.zone.zone_of(qname) {
            return Ok(None);
        }
        let mut next_closer = qname.clone();
        let mut candidate = qname.clone();
        loop {
            let h = self.hash(&candidate, work)?;
            if self.matching(&h).is_some() {
                if candidate == *qname {
                    return Ok(None);
                }
                let nh = self.hash(&next_closer, work)?;
                return Ok(self.covering(&nh).map(|n| (candidate, n)));
            }
            if candidate == self.zone || candidate.is_root() {
                return Ok(None);
            }
            next_closer = candidate.clone();
            candidate = candidate.base_name();
        }
    }

    /// NXDOMAIN (RFC 5155 §8.4).
    pub fn nxdomain(&self, qname: &Name, work: &Work) -> Result<Proof, Failure> {
        let Some((ce, nc)) = self.closest_encloser(qname, work)? else {
            return Ok(Proof::No);
        };
        let Some(wild) = wildcard_of(&ce) else {
            return Ok(Proof::No);
        };
        let wh = self.hash(&wild, work)?;
        if self.covering(&wh).is_none() {
            return Ok(Proof::No);
        }
        Ok(if nc.opt_out() {
            Proof::OptOut
        } else {
            Proof::Proven
        })
    }

    /// NODATA (RFC 5155 §8.5–8.7), DS included.
    pub fn nodata(&self, qname: &Name, qtype: RecordType, work: &Work) -> Result<Proof, Failure> {
        let h = self.hash(qname, work)?;
        if let Some(n) = self.matching(&h) {
            let t = n.type_set();
            if t.contains(qtype) || t.contains(RecordType::CNAME) {
                return Ok(Proof::No);
            }
            // For DS, only a delegation (NS, no SOA) proves an unsigned
            // child (RFC 5155 §8.6, RFC 4035 §5.2).
            if qtype == RecordType::DS
                && (t.contains(RecordType::SOA) || !t.contains(RecordType::NS))
            {
                return Ok(Proof::No);
            }
            return Ok(Proof::Proven);
        }
        let Some((ce, nc)) = self.closest_encloser(qname, work)? else {
            return Ok(Proof::No);
        };
        if qtype == RecordType::DS {
            // §8.6: no NSEC3 for the name; an opt-out span covering it
            // means an unsigned delegation may be there.
            return Ok(if nc.opt_out() {
                Proof::OptOut
            } else {
                Proof::No
            });
        }
        // §8.7: wildcard NODATA.
        let Some(wild) = wildcard_of(&ce) else {
            return Ok(Proof::No);
        };
        let wh = self.hash(&wild, work)?;
        Ok(match self.matching(&wh) {
            Some(n) if !n.type_set().contains(qtype) => Proof::Proven,
            _ => Proof::No,
        })
    }

    /// A wildcard answer (RFC 5155 §8.8): the next closer name of `qname`
    /// below the closest encloser `ce` is covered. Covered by an opt-out
    /// span, the name could be an unsigned delegation, so the answer is
    /// only insecure (as Unbound treats it).
    pub fn no_closer_match(&self, qname: &Name, ce: &Name, work: &Work) -> Result<Proof, Failure> {
        if !ce.zone_of(qname) || ce == qname {
            return Ok(Proof::No);
        }
        let next_closer = qname.trim_to(ce.num_labels() as usize + 1);
        let h = self.hash(&next_closer, work)?;
        Ok(match self.covering(&h) {
            Some(n) if n.opt_out() => Proof::OptOut,
            Some(_) => Proof::Proven,
            None => Proof::No,
        })
    }
}
