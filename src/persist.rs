//! Warm restart: the answer cache written to a file (`resolvd control
//! dump-cache`, and at shutdown with `[cache] persist`) and read back
//! (`load-cache`, and at start), so a restarted resolver does not begin
//! cold.
//!
//! Format, all integers big-endian:
//!
//! ```text
//! "RSVDCACH"  version:u16  written_at:u64 (Unix seconds)  count:u32
//! count × ( expires_at:u64 (Unix seconds)  security:u8  len:u32  message:len bytes )
//! checksum:u64 (SipHash-2-4 of everything before it)
//! ```
//!
//! Each message is the cached answer as a DNS reply (RFC 1035 §4.1) with
//! its TTLs as they stood at `written_at`; loading ages them by the time
//! since, so entries keep their absolute expiry, and skips those already
//! expired. A file with another magic, another version, a bad checksum or
//! a short read is rejected whole before anything is stored. Only NOERROR
//! and NXDOMAIN answers are written: failures are remembered for seconds
//! and would only delay a retry. The DNSSEC verdict (RFC 4035 §4.3) is
//! kept with each answer (the message keeps its RRSIGs: it is written as
//! the reply to a DO query); answers found bogus are not written, since
//! their data must not reach clients that did not set CD.

use crate::cache::{key_for, AnswerCache};
use crate::validate::Security;
use crate::wire::answer::{ReplyContext, Sections};
use crate::wire::query::{rcode, Query};
use hickory_proto::rr::{Name, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const MAGIC: &[u8; 8] = b"RSVDCACH";
/// Bumped whenever the layout changes; older files are then refused.
const VERSION: u16 = 1;
const HEADER: usize = 8 + 2 + 8 + 4;
const TRAILER: usize = 8;
/// The checksum only detects damage; a fixed key is enough.
const CHECKSUM_KEY: [u8; 16] = *b"resolvd-cache-v1";

/// Why a dump or load failed.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a resolvd cache dump at all.
    #[error("{}: not a resolvd cache dump", path.display())]
    Foreign {
        /// The file.
        path: PathBuf,
    },
    /// A dump in a format this resolvd does not read.
    #[error("{}: cache dump format version {found}; this resolvd reads version {VERSION}", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// The version the file says it is.
        found: u16,
    },
    /// Truncated or damaged.
    #[error("{}: truncated or corrupt cache dump ({why})", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What did not add up.
        why: &'static str,
    },
}

/// What a load did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Entries stored in the cache.
    pub loaded: usize,
    /// Entries that had expired since the dump.
    pub expired: usize,
    /// Entries that could not be decoded or stored.
    pub unusable: usize,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A query for (`name`, `qtype`) with DO set, so the reply written from
/// an entry keeps every record the entry holds (DNSSEC ones included).
fn query_for(name: &[u8], qtype: u16) -> Vec<u8> {
    let mut q = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    q.extend_from_slice(name);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    // OPT: root owner, type 41, payload 65535, DO bit, no options.
    q.extend_from_slice(&[0, 0, 41, 0xff, 0xff, 0, 0, 0x80, 0, 0, 0]);
    q
}

/// Writes every live NOERROR/NXDOMAIN answer to `path` (through a
/// temporary file and a rename, so a crash never leaves half a dump).
/// Returns how many were written.
pub fn dump(cache: &AnswerCache, path: &Path) -> Result<usize, PersistError> {
    let io = |source| PersistError::Io {
        path: path.to_path_buf(),
        source,
    };
    let now = Instant::now();
    let written_at = unix_now();
    let mut body = Vec::new();
    let mut count: u32 = 0;
    let mut reply = Vec::with_capacity(512);
    for e in cache.live_entries(now) {
        if (e.rcode != 0 && e.rcode != rcode::NXDOMAIN) || e.security == Security::Bogus {
            continue;
        }
        let q = query_for(e.question_name(), e.question_type());
        let Ok(parsed) = Query::parse(&q) else {
            continue;
        };
        let ctx = ReplyContext {
            limit: 65535,
            our_payload: 65535,
            stale: false,
            cookie: None,
            pad: false,
        };
        e.write_reply(&parsed, now, ctx, &mut reply);
        let Ok(len) = u32::try_from(reply.len()) else {
            continue;
        };
        body.extend_from_slice(&(written_at + u64::from(e.remaining(now))).to_be_bytes());
        body.push(e.security as u8);
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(&reply);
        count += 1;
    }
    let mut file = Vec::with_capacity(HEADER + body.len() + TRAILER);
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&VERSION.to_be_bytes());
    file.extend_from_slice(&written_at.to_be_bytes());
    file.extend_from_slice(&count.to_be_bytes());
    file.extend_from_slice(&body);
    let sum = siphasher::sip::SipHasher24::new_with_key(&CHECKSUM_KEY).hash(&file);
    file.extend_from_slice(&sum.to_be_bytes());
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&file).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(count as usize)
}

/// Reads a dump written by [`dump`] into `cache`. The whole file is
/// checked before the first entry is stored.
pub fn load(cache: &AnswerCache, path: &Path) -> Result<LoadStats, PersistError> {
    let data = std::fs::read(path).map_err(|source| PersistError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let corrupt = |why| PersistError::Corrupt {
        path: path.to_path_buf(),
        why,
    };
    if data.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Err(PersistError::Foreign {
            path: path.to_path_buf(),
        });
    }
    let mut c = crate::wire::Cursor::at(&data, MAGIC.len());
    let version = c.u16().ok_or_else(|| corrupt("short header"))?;
    if version != VERSION {
        return Err(PersistError::Version {
            path: path.to_path_buf(),
            found: version,
        });
    }
    if data.len() < HEADER + TRAILER {
        return Err(corrupt("short header"));
    }
    let (content, trailer) = data.split_at(data.len() - TRAILER);
    let want = siphasher::sip::SipHasher24::new_with_key(&CHECKSUM_KEY).hash(content);
    if trailer != want.to_be_bytes() {
        return Err(corrupt("checksum mismatch"));
    }
    let mut c = crate::wire::Cursor::at(content, MAGIC.len() + 2);
    let written_at = u64::from(c.u32().ok_or_else(|| corrupt("short header"))?) << 32
        | u64::from(c.u32().ok_or_else(|| corrupt("short header"))?);
    let count = c.u32().ok_or_else(|| corrupt("short header"))?;
    let mut entries = Vec::new();
    for _ in 0..count {
        let hi = c.u32().ok_or_else(|| corrupt("entry past the end"))?;
        let lo = c.u32().ok_or_else(|| corrupt("entry past the end"))?;
        let security = match c.u8().ok_or_else(|| corrupt("entry past the end"))? {
            1 => Security::Insecure,
            2 => Security::Secure,
            0 => Security::Unchecked,
            _ => return Err(corrupt("unknown DNSSEC state")),
        };
        let len = c.u32().ok_or_else(|| corrupt("entry past the end"))?;
        let msg = c
            .bytes(len as usize)
            .ok_or_else(|| corrupt("entry past the end"))?;
        entries.push((u64::from(hi) << 32 | u64::from(lo), security, msg));
    }
    if c.pos() != content.len() {
        return Err(corrupt("bytes after the last entry"));
    }
    let now = unix_now();
    let elapsed = u32::try_from(now.saturating_sub(written_at)).unwrap_or(u32::MAX);
    let mut stats = LoadStats::default();
    for (expires_at, security, msg) in entries {
        if expires_at <= now {
            stats.expired += 1;
            continue;
        }
        match decode(msg, elapsed) {
            Some((name, qtype, mut s)) => {
                s.security = security;
                let key = key_for(&name, qtype);
                if cache.store(&key, &name, qtype, s).is_some() {
                    stats.loaded += 1;
                } else {
                    stats.unusable += 1;
                }
            }
            None => stats.unusable += 1,
        }
    }
    Ok(stats)
}

/// A dumped reply back to its question and sections, TTLs aged by
/// `elapsed` seconds. None when it does not decode.
fn decode(msg: &[u8], elapsed: u32) -> Option<(Name, RecordType, Sections)> {
    let count =
        |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?])) };
    let rc = u16::from(*msg.get(3)? & 0x0f);
    let (qd, an, ns, ar) = (count(4)?, count(6)?, count(8)?, count(10)?);
    if qd != 1 {
        return None;
    }
    let mut d = BinDecoder::new(msg);
    d.read_slice(12).ok()?;
    let name = Name::read(&mut d).ok()?;
    let qtype = RecordType::from(d.read_u16().ok()?.unverified());
    d.read_u16().ok()?;
    let mut read = |n: u16| -> Option<Vec<Record>> {
        let mut v = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let mut r = Record::read(&mut d).ok()?;
            if r.record_type() == RecordType::OPT {
                continue;
            }
            r.ttl = r.ttl.saturating_sub(elapsed);
            v.push(r);
        }
        Some(v)
    };
    let answer = read(an)?;
    let authority = read(ns)?;
    let additional = read(ar)?;
    Some((
        name,
        qtype,
        Sections {
            rcode: rc,
            answer,
            authority,
            additional,
            ..Sections::default()
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CacheConfig;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::RData;
    use std::str::FromStr;

    fn cache_with(names: &[(&str, u32)]) -> AnswerCache {
        let cache = AnswerCache::new(&CacheConfig::default());
        for (n, ttl) in names {
            let name = Name::from_str(n).unwrap();
            let s = Sections {
                answer: vec![Record::from_rdata(
                    name.clone(),
                    *ttl,
                    RData::A(A::new(192, 0, 2, 1)),
                )],
                ..Sections::default()
            };
            cache
                .store(&key_for(&name, RecordType::A), &name, RecordType::A, s)
                .unwrap();
        }
        cache
    }

    #[test]
    fn a_dump_loads_back_with_the_same_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.bin");
        let src = cache_with(&[("a.example.", 300), ("b.example.", 600)]);
        assert_eq!(dump(&src, &path).unwrap(), 2);
        let dst = AnswerCache::new(&CacheConfig::default());
        let stats = load(&dst, &path).unwrap();
        assert_eq!(stats.loaded, 2, "{stats:?}");
        let name = Name::from_str("b.example.").unwrap();
        let e = dst.get(&key_for(&name, RecordType::A)).unwrap();
        assert!(e.remaining(Instant::now()) > 590);
    }

    #[test]
    fn dnssec_verdicts_are_kept_and_bogus_answers_never_written() {
        let cache = AnswerCache::new(&CacheConfig::default());
        for (n, sec) in [
            ("secure.example.", Security::Secure),
            ("insecure.example.", Security::Insecure),
            ("bogus.example.", Security::Bogus),
        ] {
            let name = Name::from_str(n).unwrap();
            let s = Sections {
                answer: vec![Record::from_rdata(
                    name.clone(),
                    300,
                    RData::A(A::new(192, 0, 2, 1)),
                )],
                security: sec,
                ..Sections::default()
            };
            cache
                .store(&key_for(&name, RecordType::A), &name, RecordType::A, s)
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.bin");
        assert_eq!(dump(&cache, &path).unwrap(), 2, "bogus left out");
        let dst = AnswerCache::new(&CacheConfig::default());
        assert_eq!(load(&dst, &path).unwrap().loaded, 2);
        let get = |n: &str| {
            let name = Name::from_str(n).unwrap();
            dst.get(&key_for(&name, RecordType::A)).map(|e| e.security)
        };
        assert_eq!(get("secure.example."), Some(Security::Secure));
        assert_eq!(get("insecure.example."), Some(Security::Insecure));
        assert_eq!(get("bogus.example."), None);
    }

    #[test]
    fn truncated_foreign_and_damaged_files_are_rejected_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.bin");
        dump(&cache_with(&[("a.example.", 300)]), &path).unwrap();
        let good = std::fs::read(&path).unwrap();
        let dst = AnswerCache::new(&CacheConfig::default());
        for cut in [0, 5, 12, HEADER, good.len() - 9, good.len() - 1] {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(load(&dst, &path).is_err(), "cut at {cut}");
        }
        let mut flipped = good.clone();
        flipped[HEADER + 20] ^= 0x40;
        std::fs::write(&path, &flipped).unwrap();
        assert!(matches!(
            load(&dst, &path),
            Err(PersistError::Corrupt { .. })
        ));
        std::fs::write(&path, b"#!/bin/sh\necho not a cache\n").unwrap();
        assert!(matches!(
            load(&dst, &path),
            Err(PersistError::Foreign { .. })
        ));
        let mut newer = good.clone();
        newer[9] = 2;
        std::fs::write(&path, &newer).unwrap();
        assert!(matches!(
            load(&dst, &path),
            Err(PersistError::Version { found: 2, .. })
        ));
        assert_eq!(dst.usage().0, 0, "nothing stored from a bad file");
    }
}
