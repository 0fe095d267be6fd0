//! Root hints: the named.root file that seeds the iterator (RFC 8109 §2).
//!
//! Only NS, A and AAAA lines matter; the IANA file is compiled in so the
//! daemon runs with no files at all.

use hickory_proto::rr::Name;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

/// The IANA root hints, as shipped in `config/named.root`.
pub const IANA_ROOT_HINTS: &str = include_str!("../config/named.root");

/// Root server names and their addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootHints {
    /// (server name, its addresses) in file order.
    pub servers: Vec<(Name, Vec<IpAddr>)>,
}

/// A root hints file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RootHintsError {
    /// Unreadable file.
    #[error("{path}: cannot read root hints: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line that is not a valid record.
    #[error("{path}:{line}: root hints: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl RootHints {
    /// Reads a named.root-format file.
    pub fn load(path: &Path) -> Result<RootHints, RootHintsError> {
        let text = std::fs::read_to_string(path).map_err(|source| RootHintsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        RootHints::parse(&text, &path.display().to_string())
    }

    /// The compiled-in IANA hints.
    pub fn iana() -> RootHints {
        // The embedded file is tested below; an empty set would only make
        // every query SERVFAIL, never crash.
        RootHints::parse(IANA_ROOT_HINTS, "embedded").unwrap_or(RootHints { servers: vec![] })
    }

    /// Parses `NAME [TTL] [IN] TYPE RDATA` lines; `;` starts a comment.
    pub fn parse(text: &str, path: &str) -> Result<RootHints, RootHintsError> {
        let mut ns: Vec<Name> = Vec::new();
        let mut addrs: Vec<(Name, IpAddr)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let err = |message: String| RootHintsError::Syntax {
                path: path.to_string(),
                line: i + 1,
                message,
            };
            let line = raw.split(';').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut toks: Vec<&str> = line.split_whitespace().collect();
            if toks.len() < 3 {
                return Err(err(format!(
                    "expected NAME [TTL] [IN] TYPE DATA, got {line:?}"
                )));
            }
            let owner =
                Name::from_str(toks.remove(0)).map_err(|e| err(format!("bad name: {e}")))?;
            if toks.first().is_some_and(|t| t.parse::<u32>().is_ok()) {
                toks.remove(0);
            }
            if toks.first().is_some_and(|t| t.eq_ignore_ascii_case("IN")) {
                toks.remove(0);
            }
            let (Some(rtype), Some(data)) = (toks.first(), toks.get(1)) else {
                return Err(err(format!("expected TYPE DATA in {line:?}")));
            };
            match rtype.to_ascii_uppercase().as_str() {
                "NS" => {
                    if !owner.is_root() {
                        return Err(err("NS records must belong to the root \".\"".into()));
                    }
                    let mut target =
                        Name::from_str(data).map_err(|e| err(format!("bad NS name: {e}")))?;
                    target.set_fqdn(true);
                    ns.push(target.to_lowercase());
                }
                "A" | "AAAA" => {
                    let ip = IpAddr::from_str(data)
                        .map_err(|e| err(format!("bad address {data:?}: {e}")))?;
                    let mut owner = owner.to_lowercase();
                    owner.set_fqdn(true);
                    addrs.push((owner, ip));
                }
                other => return Err(err(format!("unexpected record type {other}"))),
            }
        }
        let servers: Vec<(Name, Vec<IpAddr>)> = ns
            .into_iter()
            .map(|n| {
                let a = addrs
                    .iter()
                    .filter(|(o, _)| *o == n)
                    .map(|(_, ip)| *ip)
                    .collect();
                (n, a)
            })
            .filter(|(_, a): &(Name, Vec<IpAddr>)| !a.is_empty())
            .collect();
        if servers.is_empty() {
            return Err(RootHintsError::Syntax {
                path: path.to_string(),
                line: 1,
                message: "no root server with an address".into(),
            });
        }
        Ok(RootHints { servers })
    }

    /// Every address of every root server.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.servers.iter().flat_map(|(_, a)| a.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_iana_hints_have_thirteen_servers() {
        let h = RootHints::parse(IANA_ROOT_HINTS, "embedded").unwrap();
        assert_eq!(h.servers.len(), 13);
        assert_eq!(h.addresses().count(), 26);
    }

    #[test]
    fn bad_hints_line_is_reported_with_its_number() {
        let e = RootHints::parse(". NS a.root.\na.root. A 300.1.1.1\n", "h").unwrap_err();
        assert!(
            e.to_string().starts_with("h:2: root hints: bad address"),
            "{e}"
        );
    }
}
