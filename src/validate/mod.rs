//! DNSSEC validation (RFC 4033–4035, RFC 5155, RFC 6840): the pure part.
//!
//! Everything here takes RRsets, keys and the time, and returns a verdict;
//! nothing queries or reads a cache. The iterator (`resolve::secure`)
//! fetches the DS and DNSKEY sets these functions ask for, so the
//! validator can be tested without a network and data flows one way.
//!
//! - `anchors`: trust anchors (built-in IANA root KSKs, files of DS or
//!   DNSKEY records) and negative trust anchors (RFC 7646).
//! - `verify`: one RRset against a zone's keys (RFC 4035 §5.3), with the
//!   KeyTrap limits (CVE-2023-50387) and serial-number time checks.
//! - `chain`: a zone's DNSKEY set authenticated by a DS set or an anchor
//!   (RFC 4035 §5.2).
//! - `nsec`, `nsec3`: denial-of-existence proofs (RFC 4035 §5.4, RFC 5155
//!   §8) for NXDOMAIN, NODATA, wildcards and unsigned delegations.

pub mod anchors;
pub mod chain;
pub mod nsec;
pub mod nsec3;
pub mod verify;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU32, Ordering};

/// Security state of an answer (RFC 4035 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum Security {
    /// Not validated: validation is off, or the answer is ours (local
    /// zones), or a failure that is not about DNSSEC.
    #[default]
    Unchecked = 0,
    /// Provably unsigned, or under a negative trust anchor.
    Insecure = 1,
    /// Every RRset verified along a chain from a trust anchor.
    Secure = 2,
    /// Should have verified and did not.
    Bogus = 3,
}

/// Why validation failed, as an Extended DNS Error (RFC 8914 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// EDE INFO-CODE: 6 bogus, 7 signature expired, 8 not yet valid,
    /// 9 DNSKEY missing, 10 RRSIGs missing, 12 NSEC missing.
    pub ede: u16,
    /// What a human reading `dig` needs to know.
    pub why: String,
}

impl Failure {
    pub(crate) fn new(ede: u16, why: impl Into<String>) -> Failure {
        Failure {
            ede,
            why: why.into(),
        }
    }
}

/// EDE codes used here (RFC 8914 §4, RFC 9276 §6).
pub mod ede {
    /// Unsupported DNSKEY algorithm.
    pub const UNSUPPORTED_ALGORITHM: u16 = 1;
    /// Unsupported DS digest type.
    pub const UNSUPPORTED_DIGEST: u16 = 2;
    /// DNSSEC bogus.
    pub const BOGUS: u16 = 6;
    /// Signature expired.
    pub const SIGNATURE_EXPIRED: u16 = 7;
    /// Signature not yet valid.
    pub const SIGNATURE_NOT_YET_VALID: u16 = 8;
    /// DNSKEY missing.
    pub const DNSKEY_MISSING: u16 = 9;
    /// RRSIGs missing.
    pub const RRSIGS_MISSING: u16 = 10;
    /// NSEC missing.
    pub const NSEC_MISSING: u16 = 12;
    /// Unsupported NSEC3 iterations value.
    pub const NSEC3_ITERATIONS: u16 = 27;
}

/// Limits against validation exhaustion (KeyTrap, CVE-2023-50387; NSEC3
/// closest-encloser hashing, CVE-2023-50868) and the clock tolerance.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// RRSIGs tried per RRset.
    pub sigs_per_rrset: usize,
    /// DNSKEYs tried per RRSIG (keys sharing one key tag).
    pub keys_per_tag: usize,
    /// Tolerance on RRSIG inception and expiration, seconds.
    pub clock_skew: u32,
    /// NSEC3 iterations above which a proof counts as insecure (RFC 9276).
    pub max_nsec3_iterations: u16,
}

/// Signature checks and NSEC3 hashes left for one client query: shared by
/// every RRset and proof validated for it, so no zone can make one query
/// cost more than this many expensive operations.
#[derive(Debug)]
pub struct Work(AtomicU32);

impl Work {
    /// A budget of `n` operations.
    pub fn new(n: u32) -> Work {
        Work(AtomicU32::new(n))
    }

    /// Takes one operation; an error once the budget is gone.
    pub fn take(&self) -> Result<(), Failure> {
        let left = self.0.load(Ordering::Relaxed);
        if left == 0 {
            tracing::info!("DNSSEC validation budget for one query exhausted");
            return Err(Failure::new(
                ede::BOGUS,
                "validation budget exhausted (too many signatures or NSEC3 hashes)",
            ));
        }
        self.0.store(left - 1, Ordering::Relaxed);
        Ok(())
    }
}

/// RFC 1982 serial-number comparison: is `a` at or before `b`?
pub(crate) fn serial_le(a: u32, b: u32) -> bool {
    a == b || (b.wrapping_sub(a) as i32) > 0
}
