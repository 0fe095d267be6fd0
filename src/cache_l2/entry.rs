//! The entry format of the shared cache: how one answer is stored as a
//! Redis value, and which answers may be stored at all.
//!
//! - Entry: the answer in wire form (the message as L1 holds it, and its
//!   DNSSEC variant for DO=1 clients) after a header with a format
//!   version, the DNSSEC security state (RFC 4035 §4.3; believed only
//!   with `trust_shared_validation`), the RCODE, the absolute expiry and
//!   the time the TTLs were current.
//! - Shared: positive answers, NXDOMAIN and NODATA (RFC 2308). Never:
//!   failures (SERVFAIL, RFC 9520 entries), local-zone and pool answers
//!   (drawn per query; they never reach resolution), answers with an ECS
//!   scope (RFC 7871) or an extended error, authoritative (local) data,
//!   bogus answers.

use crate::validate::Security;
use crate::wire::answer::WireAnswer;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Entry format written by this version (first byte of every value).
pub const FORMAT_VERSION: u8 = 1;
/// Bytes before the messages: version, security state (the validator's
/// [`Security`] as a number; Bogus never written), flags, RCODE, expiry
/// (u64 ms), TTLs-current time (u64 ms), length of the plain message
/// (u16). The plain message follows, then the DNSSEC variant (RRSIG and
/// NSEC records kept, for DO=1 clients) or nothing.
const HEADER: usize = 22;

/// Whether an answer may go to other instances (see the module doc).
pub(super) fn shareable(e: &WireAnswer) -> bool {
    (e.rcode == 0 || e.rcode == 3)
        && e.ttl > 0
        && !e.authoritative
        && e.ecs_scope.is_none()
        && e.ede.is_none()
        && e.security != Security::Bogus
}

/// Wall-clock milliseconds since the Unix epoch: entries carry absolute
/// times, since instances share them and `Instant`s are per process.
pub(super) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The value for `e` and its remaining lifetime in seconds (None when it
/// has expired).
pub(super) fn encode(e: &WireAnswer, now: Instant, now_unix: u64) -> Option<(Vec<u8>, u64)> {
    let remaining = e.remaining(now);
    if remaining == 0 {
        return None;
    }
    let current_at = now_unix.saturating_sub(e.age_millis(now));
    let expires_at = current_at + u64::from(e.ttl) * 1000;
    let msg = e.message();
    let dnssec = e.dnssec_message().unwrap_or(&[]);
    let msg_len = u16::try_from(msg.len()).ok()?;
    let mut v = Vec::with_capacity(HEADER + msg.len() + dnssec.len());
    v.push(FORMAT_VERSION);
    v.push(e.security as u8);
    v.push(0); // flags, none yet
    v.push(e.rcode as u8);
    v.extend_from_slice(&expires_at.to_be_bytes());
    v.extend_from_slice(&current_at.to_be_bytes());
    v.extend_from_slice(&msg_len.to_be_bytes());
    v.extend_from_slice(msg);
    v.extend_from_slice(dnssec);
    Some((v, u64::from(remaining)))
}

/// What a value from Redis turned out to be.
pub(super) enum Decoded {
    Live(WireAnswer),
    Expired,
    /// Validated by another instance, and `trust_shared_validation` is off.
    Untrusted,
    Bad,
}

/// Checks and rebuilds a value for cache key `key` at `now_unix` (ms).
pub(super) fn decode(v: &[u8], key: &[u8], now_unix: u64, trust_validation: bool) -> Decoded {
    // A fixed-size header: every index below is checked at compile time.
    let (Some(head), Some(rest)) = (v.first_chunk::<HEADER>(), v.get(HEADER..)) else {
        return Decoded::Bad;
    };
    let rcode = u16::from(head[3]);
    let expires_at = u64::from_be_bytes(head[4..12].try_into().unwrap_or([0; 8]));
    let current_at = u64::from_be_bytes(head[12..20].try_into().unwrap_or([0; 8]));
    let msg_len = usize::from(u16::from_be_bytes([head[20], head[21]]));
    let (Some(msg), Some(dnssec)) = (rest.get(..msg_len), rest.get(msg_len..)) else {
        return Decoded::Bad;
    };
    let security = match head[1] {
        0 => Security::Unchecked,
        1 => Security::Insecure,
        2 => Security::Secure,
        // Bogus is never shared; anything else is not ours.
        _ => return Decoded::Bad,
    };
    // A version we do not write, an RCODE that is never shared, times
    // that make no sense, a header that disagrees.
    let header_rcode = msg.get(3).map(|b| u16::from(b & 0x0f));
    if head[0] != FORMAT_VERSION
        || !(rcode == 0 || rcode == 3)
        || header_rcode != Some(rcode)
        || current_at > expires_at
        || current_at > now_unix + 60_000
    {
        return Decoded::Bad;
    }
    if expires_at <= now_unix + 999 {
        return Decoded::Expired;
    }
    // Whole seconds, rounded so the TTLs go down, never up.
    let age = (now_unix.saturating_sub(current_at)).div_ceil(1000);
    let remaining = (expires_at - now_unix) / 1000;
    let (Ok(age), Ok(remaining)) = (u32::try_from(age), u32::try_from(remaining)) else {
        return Decoded::Bad;
    };
    let dnssec = (!dnssec.is_empty()).then_some(dnssec);
    match WireAnswer::from_shared(msg, dnssec, age, remaining, rcode, security) {
        Some(a) if a.answers_key(key) => {
            if security != Security::Unchecked && !trust_validation {
                Decoded::Untrusted
            } else {
                Decoded::Live(a)
            }
        }
        _ => Decoded::Bad,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key_for;
    use crate::wire::answer::Sections;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
    use std::net::Ipv4Addr;

    fn answer(name: &str, ttl: u32) -> (Vec<u8>, WireAnswer) {
        let n = Name::from_ascii(name).unwrap();
        let mut r = Record::from_rdata(n.clone(), ttl, RData::A(A(Ipv4Addr::new(192, 0, 2, 1))));
        r.dns_class = DNSClass::IN;
        let s = Sections {
            answer: vec![r],
            ..Sections::default()
        };
        (
            key_for(&n, RecordType::A),
            WireAnswer::encode(&n, RecordType::A, s).unwrap(),
        )
    }

    /// The TTL of the first record of a rebuilt answer's message.
    fn first_ttl(a: &WireAnswer) -> u32 {
        let m = a.message();
        // Header 12 + "www.example.test." (18) + type/class 4, then the
        // record: compressed owner (2), type (2), class (2), TTL.
        let at = 12 + 18 + 4 + 6;
        u32::from_be_bytes(m[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn an_entry_comes_back_aged_never_extended() {
        let (key, a) = answer("www.example.test.", 300);
        let now = Instant::now();
        let t0 = 1_700_000_000_000;
        let (v, remaining) = encode(&a, now, t0).unwrap();
        assert_eq!(remaining, 300);
        assert_eq!(v[0], FORMAT_VERSION);
        // Read by another instance 10.5 s later.
        let Decoded::Live(b) = decode(&v, &key, t0 + 10_500, true) else {
            panic!("not live")
        };
        assert_eq!(b.ttl, 289, "remaining whole seconds, rounded down");
        assert_eq!(first_ttl(&b), 289, "record TTLs aged by 11 s (rounded up)");
        assert!(b.answers_key(&key));
    }

    #[test]
    fn bad_values_are_refused() {
        let (key, a) = answer("www.example.test.", 300);
        let t0 = 1_700_000_000_000;
        let (v, _) = encode(&a, Instant::now(), t0).unwrap();
        let bad = |v: &[u8], k: &[u8]| matches!(decode(v, k, t0 + 1000, true), Decoded::Bad);
        let mut other_version = v.clone();
        other_version[0] = 2;
        assert!(bad(&other_version, &key));
        for cut in [0, 5, HEADER, HEADER + 11, v.len() - 1] {
            assert!(bad(&v[..cut], &key), "truncated at {cut}");
        }
        let (other_key, _) = answer("www.example.other.", 300);
        assert!(bad(&v, &other_key), "another question");
        let mut servfail = v.clone();
        servfail[3] = 2;
        assert!(bad(&servfail, &key));
        assert!(matches!(
            decode(&v, &key, t0 + 300_000, true),
            Decoded::Expired
        ));
    }

    #[test]
    fn validated_entries_are_believed_only_when_trusted() {
        let (key, mut a) = answer("www.example.test.", 300);
        a.security = Security::Secure;
        let t0 = 1_700_000_000_000;
        let (v, _) = encode(&a, Instant::now(), t0).unwrap();
        let Decoded::Live(b) = decode(&v, &key, t0 + 1000, true) else {
            panic!("a trusted secure entry is a hit")
        };
        assert_eq!(b.security, Security::Secure);
        assert!(matches!(
            decode(&v, &key, t0 + 1000, false),
            Decoded::Untrusted
        ));
        let mut bogus = v.clone();
        bogus[1] = Security::Bogus as u8;
        assert!(matches!(
            decode(&bogus, &key, t0 + 1000, true),
            Decoded::Bad
        ));
        a.security = Security::Bogus;
        assert!(!shareable(&a), "bogus answers stay home");
    }

    #[test]
    fn the_dnssec_variant_travels_with_the_answer() {
        use hickory_proto::dnssec::rdata::{DNSSECRData, NSEC};
        let n = Name::from_ascii("www.example.test.").unwrap();
        let mut a = Record::from_rdata(n.clone(), 300, RData::A(A(Ipv4Addr::new(192, 0, 2, 1))));
        a.dns_class = DNSClass::IN;
        let next = Name::from_ascii("z.example.test.").unwrap();
        let mut nsec = Record::from_rdata(
            n.clone(),
            300,
            RData::DNSSEC(DNSSECRData::NSEC(NSEC::new(next, [RecordType::A]))),
        );
        nsec.dns_class = DNSClass::IN;
        let s = Sections {
            answer: vec![a],
            authority: vec![nsec],
            security: Security::Secure,
            ..Sections::default()
        };
        let w = WireAnswer::encode(&n, RecordType::A, s).unwrap();
        let plain = w.message().len();
        let full = w.dnssec_message().expect("a DO=1 variant").len();
        assert!(full > plain);
        let key = key_for(&n, RecordType::A);
        let t0 = 1_700_000_000_000;
        let (v, _) = encode(&w, Instant::now(), t0).unwrap();
        let Decoded::Live(b) = decode(&v, &key, t0 + 2000, true) else {
            panic!("not live")
        };
        assert_eq!(b.message().len(), plain);
        assert_eq!(b.dnssec_message().map(<[u8]>::len), Some(full));
        assert_eq!(b.security, Security::Secure);
        // A DNSSEC variant for another question is refused.
        let (_, other) = answer("www.example.other.", 300);
        let mut forged = v[..HEADER].to_vec();
        forged.extend_from_slice(w.message());
        forged.extend_from_slice(other.message());
        assert!(matches!(
            decode(&forged, &key, t0 + 2000, true),
            Decoded::Bad
        ));
    }

    #[test]
    fn failures_and_local_answers_are_not_shared() {
        let (_, mut a) = answer("www.example.test.", 300);
        assert!(shareable(&a));
        a.rcode = 2;
        assert!(!shareable(&a));
        a.rcode = 0;
        a.ecs_scope = Some(24);
        assert!(!shareable(&a));
        a.ecs_scope = None;
        a.authoritative = true;
        assert!(!shareable(&a));
    }
}
