//! The `[dnssec]` section: validation (RFC 4033–4035, 5155, 6840), trust
//! anchors, negative trust anchors (RFC 7646) and the work limits that
//! bound a validation.

use super::Dur;
use hickory_proto::rr::Name;
use serde::Deserialize;
use std::path::Path;

/// `[dnssec]`: validation (RFC 4033–4035, 5155, 6840).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnssecConfig {
    /// Validate answers; when false, DO stays off upstream.
    pub validation: bool,
    /// Files of DS or DNSKEY records (zone-file syntax); empty = the IANA
    /// root KSKs built in. A file naming the root replaces them.
    pub trust_anchor_files: Vec<String>,
    /// Domains not validated (RFC 7646).
    pub negative_trust_anchors: Vec<String>,
    /// How long a bogus answer is remembered.
    pub bogus_ttl: Dur,
    /// NSEC3 iterations above which a proof is insecure (RFC 9276 §3.2).
    pub max_nsec3_iterations: u16,
    /// Tolerance on RRSIG inception and expiration.
    pub clock_skew: Dur,
    /// Signature verifications and NSEC3 hashes allowed for one client
    /// query (KeyTrap, CVE-2023-50387; CVE-2023-50868).
    pub max_validation_work: u32,
    /// RRSIGs tried per RRset.
    pub max_signatures_per_rrset: u32,
    /// DNSKEYs with the same key tag tried per RRSIG.
    pub max_keys_per_tag: u32,
    /// Answer NXDOMAIN/NODATA from validated NSEC ranges (RFC 8198).
    pub aggressive_nsec: bool,
}

impl Default for DnssecConfig {
    fn default() -> Self {
        DnssecConfig {
            validation: true,
            trust_anchor_files: Vec::new(),
            negative_trust_anchors: Vec::new(),
            bogus_ttl: Dur::secs(60),
            max_nsec3_iterations: 150,
            clock_skew: Dur::secs(3600),
            max_validation_work: 64,
            max_signatures_per_rrset: 8,
            max_keys_per_tag: 4,
            aggressive_nsec: true,
        }
    }
}

impl DnssecConfig {
    /// Negative trust anchors as names (entries that do not parse were
    /// rejected by validation).
    pub fn negative_anchors(&self) -> Vec<Name> {
        self.negative_trust_anchors
            .iter()
            .filter_map(|x| Name::from_ascii(x).ok())
            .collect()
    }

    /// Anchor file paths resolved against the config's directory.
    pub fn anchor_paths(&self, base: &Path) -> Vec<String> {
        self.trust_anchor_files
            .iter()
            .map(|f| base.join(f).display().to_string())
            .collect()
    }
}
