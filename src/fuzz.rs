//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer):
//! each takes arbitrary bytes and drives one piece of code that reads
//! input from outside. None of them may panic, whatever the bytes; that is
//! the property the targets check. Not part of the daemon's API.

use crate::config::{CacheConfig, Config, ResolverConfig};
use crate::metrics::Metrics;
use crate::resolve::iterate::Iterator as IterativeResolver;
use crate::root_hints::RootHints;
use crate::wire::answer::{write_error, ReplyContext, Sections, WireAnswer};
use crate::wire::query::{Query, Rejection};
use hickory_proto::rr::{Name, RecordType};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// A client query: the fast parser, then the reply writer on what it
/// parsed (an empty NOERROR answer, with every EDNS option echoed as the
/// handler would, padded or not) or the error writer on what it rejected.
pub fn query_and_reply(bytes: &[u8]) {
    let mut out = Vec::with_capacity(1024);
    match Query::parse(bytes) {
        Ok(q) => {
            let Ok(name) = Name::from_ascii("fuzz.test.") else {
                return;
            };
            let Ok(answer) =
                WireAnswer::encode(&name, RecordType::from(q.qtype), Sections::default())
            else {
                return;
            };
            let ctx = ReplyContext {
                limit: q.udp_limit(),
                our_payload: 1232,
                stale: bytes.len().is_multiple_of(2),
                cookie: q.edns.and_then(|e| e.cookie).map(|c| {
                    let mut r = [0u8; 24];
                    r[..8].copy_from_slice(&c.client);
                    r
                }),
                pad: q.edns.is_some_and(|e| e.padding),
            };
            answer.write_reply(&q, Instant::now(), ctx, &mut out);
        }
        Err(Rejection::Drop) => {}
        Err(Rejection::Error {
            rcode,
            question_end,
            edns,
        }) => write_error(bytes, rcode, question_end, edns, 1232, None, &mut out),
    }
}

/// An upstream reply to a known question: the transport's matching (ID,
/// question, 0x20 case, cookie), decoding, and the iterator's bailiwick
/// filtering and classification. The first byte chooses 0x20 on or off.
pub fn upstream_reply(bytes: &[u8]) {
    static ITERATOR: OnceLock<IterativeResolver> = OnceLock::new();
    let it = ITERATOR.get_or_init(|| {
        IterativeResolver::new(
            ResolverConfig::default(),
            &CacheConfig::default(),
            RootHints::iana(),
            Arc::new(Metrics::default()),
            None,
        )
    });
    let Some((flag, reply)) = bytes.split_first() else {
        return;
    };
    let mut reply = reply.to_vec();
    it.classify_for_fuzzing(flag & 1 == 1, &mut reply);
}

/// Zone-file text for a local zone.
pub fn zone_text(bytes: &[u8]) {
    let (Ok(text), Ok(origin)) = (std::str::from_utf8(bytes), Name::from_ascii("fuzz.test."))
    else {
        return;
    };
    let _ = crate::zones::parse_zone_text_for_fuzzing(&origin, text, Path::new("fuzz.zone"));
}

/// A configuration file: TOML parsing, validation with line numbers, and
/// the local zones and pools it describes (zone files are not read: a
/// missing file is an error like any other).
pub fn config_text(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(cfg) = Config::parse(text, "fuzz.toml") {
        if let Err(errs) =
            crate::zones::LocalZones::from_config(&cfg.zone, &cfg.geo, Path::new("/nonexistent"))
        {
            for e in &errs {
                let _ = crate::config::zone_error_line(text, e);
            }
        }
    }
}
