//! The iterative walk (RFC 1034 §5.3.3): from the deepest known zone cut
//! down through referrals to the authoritative servers, following CNAME and
//! DNAME (RFC 6672) across zones.
//!
//! - Root priming (RFC 8109) from the hints, re-done when the root NS set
//!   expires; if it fails the hints are used and priming retried later.
//! - QNAME minimisation (RFC 9156 §3), with the relaxed fallback: when a
//!   minimised query fails, or gets an NXDOMAIN that does not carry the
//!   zone's SOA, the full name is sent; an authoritative NXDOMAIN with the
//!   SOA ends the walk (RFC 8020).
//! - What one reply says (bailiwick, lame, negative, referral, chains) is
//!   decided in `classify`; a lame server is held down for the zone.
//! - Server choice: the child's NS set and addresses first, the parent's
//!   referral and glue when they all fail (RFC 2181 §5.4.1; Unbound's
//!   parent-side fallback); glueless NS names resolved only then.
//! - Budgets against NXNSAttack (CVE-2020-12662) and tsuNAME loops: upstream
//!   queries per client query, referral depth, glueless NS names resolved
//!   per delegation, nesting of those resolutions, CNAME links, deadline.

use super::classify::{classify, cname_target, has_name, is_addr, negative_ttl, Outcome};
use super::forward::{ForwardZone, ForwardZones};
use super::secure::Dnssec;
use super::servers::{Policy, ServerStats};
use super::store::{record_addr, Delegation, Rank, Store};
use super::upstream::{ExchangeError, Upstream, UpstreamConfig};
use super::{BoxFuture, Resolve};
use crate::config::{CacheConfig, ResolverConfig};
use crate::metrics::Metrics;
use crate::root_hints::RootHints;
use crate::wire::answer::{Ede, Sections};
use crate::wire::query::rcode;
use crate::wire::same_name;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, Record, RecordType};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Longest wait between priming attempts while they keep failing.
const MAX_PRIMING_BACKOFF: std::time::Duration = std::time::Duration::from_secs(300);

/// Why a resolution gave up; each maps to SERVFAIL with an EDE.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A budget was exceeded.
    #[error("{0} budget exhausted")]
    Budget(&'static str),
    /// No server of a zone gave a usable answer.
    #[error("no reachable authority for {0}")]
    NoAuthority(Name),
    /// A zone's NS names all lie inside it and no glue is known (it
    /// expired before the NS set, or is not stored yet): only the parent's
    /// referral can supply it.
    #[error("no glue for the name servers of {0}")]
    MissingGlue(Name),
    /// The CNAME chain loops or is too long.
    #[error("CNAME chain loops or exceeds the limit at {0}")]
    CnameChain(Name),
}

impl ResolveError {
    fn ede(&self) -> Ede {
        let code = match self {
            ResolveError::NoAuthority(_) | ResolveError::MissingGlue(_) => 22,
            ResolveError::Budget(_) | ResolveError::CnameChain(_) => 0,
        };
        Ede {
            code,
            text: self.to_string(),
        }
    }
}

/// Limits that apply to one client query, shared by its nested lookups.
pub(super) struct Budget {
    queries: AtomicU32,
    max_queries: u32,
    /// Set for `control trace`: the caches are bypassed and every
    /// exchange is recorded.
    trace: Option<crate::resolve::trace::TraceLog>,
}

impl Budget {
    pub(super) fn spend(&self) -> Result<(), ResolveError> {
        if self.queries.fetch_add(1, Ordering::Relaxed) >= self.max_queries {
            return Err(ResolveError::Budget("upstream query"));
        }
        Ok(())
    }
}

/// Servers tried for one question at one zone, over both rounds.
const MAX_TRIES_PER_ZONE: usize = 8;

/// What resolving one NS name's addresses came to.
enum NsAddresses {
    /// Usable addresses.
    Found(Vec<IpAddr>),
    /// The name does not exist; the zone that said so, when it sent its SOA.
    Absent(Option<Name>),
    /// No address (NODATA, or the resolution failed).
    Failed,
}

/// The iterative resolver.
pub struct Iterator {
    cfg: ResolverConfig,
    hints: RootHints,
    pub(super) store: Store,
    /// DNSSEC validation; None when `[dnssec] validation = false`.
    dnssec: Option<Arc<Dnssec>>,
    pub(super) servers: ServerStats,
    pub(super) upstream: Upstream,
    pub(super) metrics: Arc<Metrics>,
    /// Forward and stub zones (`[[forward]]`), consulted before the walk.
    forward: ForwardZones,
    /// When priming may be tried again, and how many times in a row it
    /// failed: the wait starts at `priming_retry` and doubles up to
    /// [`MAX_PRIMING_BACKOFF`], so an unreachable root is not hammered.
    priming_backoff: Mutex<(Option<Instant>, u32)>,
    /// Held while priming, so a burst of queries at start-up sends one
    /// priming query, not one each.
    priming: tokio::sync::Mutex<()>,
}

impl Iterator {
    /// A resolver seeded with `hints`.
    pub fn new(
        cfg: ResolverConfig,
        cache: &CacheConfig,
        hints: RootHints,
        metrics: Arc<Metrics>,
        dnssec: Option<Arc<Dnssec>>,
    ) -> Iterator {
        let servers = ServerStats::new(Policy {
            initial_timeout: cfg.initial_timeout.0,
            max_timeout: cfg.max_timeout.0,
            hold_down: cfg.server_hold_down.0,
        });
        let upstream = Upstream::new(UpstreamConfig {
            port: cfg.upstream_port,
            edns_payload: cfg.edns_payload,
            query_loopback: cfg.query_loopback,
            case_randomisation: cfg.qname_case_randomisation,
            cookies: cfg.upstream_cookies,
            dnssec_ok: dnssec.is_some(),
        });
        Iterator {
            // A quarter of the cache budget (the answer cache takes the
            // rest), but never so little that a walk cannot remember the
            // delegations it is following.
            store: Store::new((cache.max_size.0 / 4).max(4 << 20), cache.max_ttl),
            cfg,
            hints,
            dnssec,
            servers,
            upstream,
            metrics,
            forward: ForwardZones::default(),
            priming_backoff: Mutex::new((None, 0)),
            priming: tokio::sync::Mutex::new(()),
        }
    }

    /// Sends the names of `forward`'s zones to their servers.
    pub fn with_forward(mut self, forward: ForwardZones) -> Iterator {
        self.forward = forward;
        self
    }

    async fn run(&self, qname: Name, qtype: RecordType) -> Sections {
        let budget = Budget {
            queries: AtomicU32::new(0),
            max_queries: self.cfg.max_upstream_queries,
            trace: None,
        };
        self.run_with(qname, qtype, &budget).await
    }

    /// One resolution from the root hints down, cached RRsets and
    /// delegations ignored (what is learned is still stored), with every
    /// upstream exchange recorded.
    async fn run_traced(
        &self,
        qname: Name,
        qtype: RecordType,
    ) -> (Sections, Vec<crate::resolve::trace::TraceStep>) {
        let budget = Budget {
            queries: AtomicU32::new(0),
            max_queries: self.cfg.max_upstream_queries,
            trace: Some(Default::default()),
        };
        let s = self.run_with(qname, qtype, &budget).await;
        let steps = budget.trace.as_ref().map(|t| t.take()).unwrap_or_default();
        (s, steps)
    }

    async fn run_with(&self, qname: Name, qtype: RecordType, budget: &Budget) -> Sections {
        let deadline = self.cfg.query_deadline.0;
        if let Some(s) = self
            .dnssec
            .as_ref()
            .and_then(|d| d.synthesise(&qname, qtype))
        {
            self.count_security(s.security);
            Metrics::inc(&self.metrics.dnssec_aggressive);
            return s;
        }
        let walk = async {
            let mut s = self.resolve_name(&qname, qtype, budget, 0).await?;
            if let Some(d) = &self.dnssec {
                self.validate(d, &qname, qtype, &mut s, budget).await;
                self.count_security(s.security);
            }
            Ok::<Sections, ResolveError>(s)
        };
        match tokio::time::timeout(deadline, walk).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%qname, ?qtype, error = %e, "resolution failed");
                Sections::error(rcode::SERVFAIL, Some(e.ede()))
            }
            Err(_) => Sections::error(
                rcode::SERVFAIL,
                Some(Ede {
                    code: 22,
                    text: format!("no answer within {} ms", deadline.as_millis()),
                }),
            ),
        }
    }

    /// Resolves a name fully: CNAME/DNAME chains across zones included.
    pub(super) fn resolve_name<'a>(
        &'a self,
        qname: &'a Name,
        qtype: RecordType,
        budget: &'a Budget,
        depth: u32,
    ) -> BoxFuture<'a, Result<Sections, ResolveError>> {
        Box::pin(async move {
            let mut chain: Vec<Record> = Vec::new();
            let mut proofs: Vec<Record> = Vec::new();
            let mut current = qname.clone();
            // The links after `qname`, for loop detection.
            let mut seen: Vec<Name> = Vec::new();
            for _ in 0..=self.cfg.max_cname_chain {
                // Known authoritative data first: the tail of a cached chain
                // needs no upstream query.
                let bypass = budget.trace.is_some();
                if let Some(rs) = self.store.get_fresh(&current, qtype).filter(|_| !bypass) {
                    chain.extend(rs);
                    return Ok(answer(chain));
                }
                if qtype != RecordType::CNAME && !bypass {
                    if let Some(rs) =
                        self.store
                            .get(&current, RecordType::CNAME, Rank::NonAuthAnswer)
                    {
                        let target = rs.iter().find_map(cname_target);
                        chain.extend(rs);
                        let Some(t) = target else {
                            return Ok(answer(chain));
                        };
                        current = next_link(&mut seen, qname, t)?;
                        continue;
                    }
                }
                if let Some(t) = &budget.trace {
                    t.enter(&current);
                }
                let looked = self.lookup(&current, qtype, budget, depth).await;
                if let Some(t) = &budget.trace {
                    t.leave();
                }
                match looked? {
                    Outcome::Answer {
                        records,
                        sigs,
                        proof,
                        end,
                        complete,
                    } => {
                        // The RRSIGs of the links first, as they came.
                        chain.extend(sigs);
                        chain.extend(records);
                        proofs.extend(proof);
                        if complete || same_name(&end, &current) {
                            let mut s = answer(chain);
                            s.authority = proofs;
                            return Ok(s);
                        }
                        current = next_link(&mut seen, qname, end)?;
                    }
                    Outcome::Negative { rcode, soa } => {
                        // RFC 6604: the RCODE is that of the last name.
                        return Ok(Sections {
                            rcode,
                            answer: chain,
                            authority: soa,
                            ..Sections::default()
                        });
                    }
                    Outcome::Referral(_) => return Err(ResolveError::NoAuthority(current)),
                }
            }
            Err(ResolveError::CnameChain(current))
        })
    }

    /// What the servers say about `name`: a forward or stub zone's when
    /// one covers it, else the walk's from the deepest known cut.
    async fn lookup(
        &self,
        name: &Name,
        qtype: RecordType,
        budget: &Budget,
        depth: u32,
    ) -> Result<Outcome, ResolveError> {
        // A DS record belongs to the parent zone (RFC 4035 §3.1.4.1): the
        // forward or stub zone that covers the parent answers it, so a
        // stub zone's apex DS is not asked of the stub's own servers.
        let steer = if qtype == RecordType::DS && !name.is_root() {
            name.base_name()
        } else {
            name.clone()
        };
        if let Some(fz) = self.forward.find(&steer) {
            let tried = if fz.recursion {
                self.ask_listed(fz, &fz.delegation(), name, qtype, budget)
                    .await
            } else {
                self.walk(name, qtype, budget, depth, Some(fz)).await
            };
            match tried {
                Ok(o) => return Ok(o),
                Err(e) if !fz.fallback => return Err(e),
                Err(e) => {
                    tracing::debug!(zone = %fz.zone, error = %e, "forward zone failed; resolving from the root");
                }
            }
        }
        self.walk(name, qtype, budget, depth, None).await
    }

    /// The cut a walk starts from: the deepest known, but inside a stub
    /// zone never above the stub zone itself (its configured servers stand
    /// in for the delegation from the parent).
    async fn start_cut(
        &self,
        from: &Name,
        budget: &Budget,
        stub: Option<&ForwardZone>,
    ) -> Delegation {
        let Some(s) = stub else {
            return self.deepest_cut(from, budget).await;
        };
        match self.store.deepest_cut(from) {
            Some(c) if c.zone != s.zone && s.zone.zone_of(&c.zone) => c,
            _ => s.delegation(),
        }
    }

    /// Walks down to the zone holding `name` and returns what it says;
    /// from a stub zone's servers when `stub` is given.
    async fn walk(
        &self,
        name: &Name,
        qtype: RecordType,
        budget: &Budget,
        depth: u32,
        stub: Option<&ForwardZone>,
    ) -> Result<Outcome, ResolveError> {
        // DS lives in the parent zone (RFC 4035 §3.1.4.1): start above it.
        let from = if qtype == RecordType::DS && !name.is_root() {
            name.base_name()
        } else {
            name.clone()
        };
        // A trace walks from the root (or a stub zone's servers), whatever
        // delegations are known.
        let from = if budget.trace.is_some() {
            Name::root()
        } else {
            from
        };
        let mut cut = self.start_cut(&from, budget, stub).await;
        let full = name.num_labels() as usize;
        let mut minimise = self.cfg.qname_minimisation;
        let mut labels = cut.zone.num_labels() as usize + 1;
        let mut referrals = 0u32;
        let mut reasked_parent = false;
        loop {
            let (sname, stype) = if minimise && labels < full {
                // RFC 9156 §3: ask for A at the next label; an NS query
                // would look odd to some middleboxes and return less.
                (name.trim_to(labels), RecordType::A)
            } else {
                (name.clone(), qtype)
            };
            let minimised = sname.num_labels() as usize != full;
            let result = match stub {
                Some(s) if cut.zone == s.zone => {
                    self.ask_listed(s, &cut, &sname, stype, budget).await
                }
                _ => self.query_zone(&cut, &sname, stype, budget, depth).await,
            };
            let outcome = match result {
                Ok(o) => o,
                Err(ResolveError::MissingGlue(_)) if !reasked_parent && !cut.zone.is_root() => {
                    // Ask the parent again; its referral carries the glue.
                    reasked_parent = true;
                    cut = self.start_cut(&cut.zone.base_name(), budget, stub).await;
                    labels = cut.zone.num_labels() as usize + 1;
                    continue;
                }
                Err(ResolveError::NoAuthority(_)) if minimised => {
                    // Relaxed fallback: a server that chokes on the
                    // minimised name may still answer the real question.
                    minimise = false;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match outcome {
                Outcome::Referral(child) => {
                    referrals += 1;
                    if referrals > self.cfg.max_referral_depth {
                        return Err(ResolveError::Budget("referral depth"));
                    }
                    labels = child.zone.num_labels() as usize + 1;
                    cut = child;
                }
                Outcome::Negative { rcode: r, soa } if minimised && r == rcode::NXDOMAIN => {
                    // RFC 8020 (RFC 9156 §2.3): an authoritative NXDOMAIN
                    // backed by the zone's own SOA proves that nothing
                    // exists below, the full name included. Without that
                    // proof (some servers say NXDOMAIN for empty
                    // non-terminals) ask the full question instead.
                    let apex_soa = soa
                        .iter()
                        .find(|r| r.record_type() == RecordType::SOA)
                        .is_some_and(|r| same_name(&r.name, &cut.zone));
                    if apex_soa {
                        return Ok(Outcome::Negative { rcode: r, soa });
                    }
                    minimise = false;
                }
                _ if minimised => labels += 1,
                other => return Ok(other),
            }
        }
    }

    /// The deepest zone cut we know for `name`, priming the root if needed.
    async fn deepest_cut(&self, name: &Name, budget: &Budget) -> Delegation {
        if let Some(d) = self.store.deepest_cut(name) {
            return d;
        }
        self.prime(budget).await;
        self.store
            .deepest_cut(name)
            .unwrap_or_else(|| self.hint_delegation())
    }

    fn hint_delegation(&self) -> Delegation {
        Delegation {
            zone: Name::root(),
            child_ns: Vec::new(),
            parent_ns: self.hints.servers.iter().map(|(n, _)| n.clone()).collect(),
        }
    }

    fn hint_addresses(&self) -> Vec<IpAddr> {
        self.hints.addresses().collect()
    }

    /// RFC 8109: ask a hint server for the root NS set and store it (with
    /// addresses) so later walks start from real data.
    async fn prime(&self, budget: &Budget) {
        let _one_at_a_time = self.priming.lock().await;
        if self.store.deepest_cut(&Name::root()).is_some() {
            return;
        }
        let not_before = self.priming_backoff.lock().map(|g| g.0).unwrap_or(None);
        if not_before.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let root = Name::root();
        let mut addrs = self.hint_addresses();
        self.servers.order(&mut addrs, &root);
        for (attempt, ip) in addrs.iter().take(4).enumerate() {
            if budget.spend().is_err() {
                break;
            }
            let t = self.servers.timeout(*ip, attempt as u32 / 2);
            Metrics::inc(&self.metrics.upstream_queries);
            let exchanged = self.upstream.exchange(*ip, &root, RecordType::NS, t).await;
            if let (Some(tr), Err(e)) = (&budget.trace, &exchanged) {
                tr.exchange(*ip, &root, &root, RecordType::NS, None, None, e.to_string());
            }
            match exchanged {
                Ok(r) => {
                    Metrics::inc(&self.metrics.upstream_answered);
                    self.servers.record_rtt(*ip, r.rtt);
                    let ns: Vec<Record> = r
                        .msg
                        .answers
                        .iter()
                        .filter(|x| x.name.is_root() && x.record_type() == RecordType::NS)
                        .cloned()
                        .collect();
                    if let Some(tr) = &budget.trace {
                        tr.exchange(
                            *ip,
                            &root,
                            &root,
                            RecordType::NS,
                            Some(r.rtt),
                            Some(crate::resolve::trace::rcode_name(u16::from(
                                r.msg.metadata.response_code,
                            ))),
                            format!("root priming: {} NS", ns.len()),
                        );
                    }
                    if r.msg.metadata.response_code == ResponseCode::NoError && !ns.is_empty() {
                        let glue: Vec<Record> = r
                            .msg
                            .additionals
                            .iter()
                            .filter(|x| is_addr(x))
                            .cloned()
                            .collect();
                        // Glue before the NS set, as for any referral.
                        self.store.put_all(&glue, Rank::Glue);
                        self.store.put(ns, Rank::AuthAnswer);
                        if let Ok(mut g) = self.priming_backoff.lock() {
                            *g = (None, 0);
                        }
                        return;
                    }
                    self.servers.mark_lame(*ip, &root);
                }
                Err(ExchangeError::Timeout) => {
                    Metrics::inc(&self.metrics.upstream_timeouts);
                    self.servers.record_timeout(*ip, t)
                }
                Err(_) => {
                    Metrics::inc(&self.metrics.upstream_errors);
                    self.servers.mark_dead(*ip)
                }
            }
        }
        if let Ok(mut g) = self.priming_backoff.lock() {
            let wait = (self.cfg.priming_retry.0 * 2u32.saturating_pow(g.1.min(16)))
                .min(MAX_PRIMING_BACKOFF);
            tracing::warn!(
                "root priming failed; using root hints, next try in {} s",
                wait.as_secs()
            );
            *g = (Some(Instant::now() + wait), g.1 + 1);
        }
    }

    /// Addresses of `cut`'s servers known now, best first: the child's
    /// view (its NS names, with its own addresses for them where it gave
    /// any) before the parent's (its NS names and glue), each side by RTT
    /// and with held-down servers last (RFC 2181 §5.4.1 credibility, and
    /// Unbound's parent-side fallback for when the child's data is wrong).
    fn known_servers(&self, cut: &Delegation) -> Vec<IpAddr> {
        let mut cands: Vec<(u8, IpAddr)> = Vec::new();
        let prefer_child = !cut.child_ns.is_empty();
        for ns in cut.names() {
            let (child, parent) = self.store.addresses_both(ns);
            let preferred = if prefer_child {
                has_name(&cut.child_ns, ns)
            } else {
                has_name(&cut.parent_ns, ns)
            };
            // Tier 0: the preferred side's names, at the child's own
            // addresses for them when it gave any; tier 1: the rest.
            let first = if child.is_empty() { &parent } else { &child };
            for &ip in child.iter().chain(&parent) {
                let tier = if preferred && first.contains(&ip) {
                    0
                } else {
                    1
                };
                cands.push((tier, ip));
            }
        }
        if cut.zone.is_root() {
            cands.extend(self.hint_addresses().into_iter().map(|ip| (2, ip)));
        }
        cands.retain(|(_, ip)| self.upstream.allowed(*ip));
        self.servers.order_tiers(cands.into_iter(), &cut.zone)
    }

    /// Asks the servers of `cut` until one gives a usable reply: first
    /// those with known addresses, then those whose NS names must be
    /// resolved first (glueless), one name at a time.
    async fn query_zone(
        &self,
        cut: &Delegation,
        sname: &Name,
        stype: RecordType,
        budget: &Budget,
        depth: u32,
    ) -> Result<Outcome, ResolveError> {
        let mut tried: Vec<IpAddr> = Vec::new();
        let known = self.known_servers(cut);
        if let Some(o) = self
            .ask_servers(cut, &known, sname, stype, budget, &mut tried)
            .await?
        {
            return Ok(o);
        }
        // An NS name inside the zone it serves, without an address, can
        // only be reached through the parent's glue: skip it rather than
        // loop through the zone itself.
        let names = cut.names();
        let unresolved: Vec<Name> = names
            .iter()
            .filter(|ns| !cut.zone.zone_of(ns))
            .filter(|ns| {
                let (child, parent) = self.store.addresses_both(ns);
                child.is_empty() && parent.is_empty()
            })
            .map(|ns| (*ns).clone())
            .collect();
        if unresolved.is_empty() {
            if known.is_empty() && names.iter().all(|ns| cut.zone.zone_of(ns)) {
                return Err(ResolveError::MissingGlue(cut.zone.clone()));
            }
            return Err(ResolveError::NoAuthority(cut.zone.clone()));
        }
        if depth >= self.cfg.max_nested_depth {
            return Err(ResolveError::Budget("nested resolution depth"));
        }
        // Zones that said NXDOMAIN to one NS name: the other NS names of
        // the delegation under them are not worth a query each (the NXNS
        // attack, CVE-2020-12662, sends dozens).
        let mut barren: Vec<Name> = Vec::new();
        let mut resolved = 0;
        for ns in unresolved {
            if resolved >= self.cfg.max_ns_resolutions {
                break;
            }
            if barren.iter().any(|z| z.zone_of(&ns)) || self.store.nxdomain(&ns) {
                continue;
            }
            resolved += 1;
            match self.resolve_ns(&ns, budget, depth).await {
                NsAddresses::Found(addrs) => {
                    let addrs = self
                        .servers
                        .order_tiers(addrs.into_iter().map(|ip| (0, ip)), &cut.zone);
                    if let Some(o) = self
                        .ask_servers(cut, &addrs, sname, stype, budget, &mut tried)
                        .await?
                    {
                        return Ok(o);
                    }
                }
                NsAddresses::Absent(Some(zone)) => barren.push(zone),
                NsAddresses::Absent(None) | NsAddresses::Failed => {}
            }
        }
        Err(ResolveError::NoAuthority(cut.zone.clone()))
    }

    /// Resolves one NS name's addresses: A first, AAAA only when there is
    /// no A (RFC 1034 §5.3.3 needs one address, not all of them).
    async fn resolve_ns(&self, ns: &Name, budget: &Budget, depth: u32) -> NsAddresses {
        for t in [RecordType::A, RecordType::AAAA] {
            let Ok(s) = self.resolve_name(ns, t, budget, depth + 1).await else {
                continue;
            };
            if s.rcode == rcode::NXDOMAIN {
                let soa = s
                    .authority
                    .iter()
                    .find(|r| r.record_type() == RecordType::SOA);
                // Remembered here, for NS names only: the answer cache
                // keeps client-asked NXDOMAINs already (RFC 8020 cuts).
                if let Some(ttl) = soa.and_then(negative_ttl) {
                    self.store.put_nxdomain(ns, ttl);
                }
                return NsAddresses::Absent(soa.map(|r| r.name.to_lowercase()));
            }
            let found: Vec<Record> = s
                .answer
                .into_iter()
                .filter(|r| record_addr(r).is_some())
                .collect();
            // Remembered so the next walk through this zone has them.
            self.store.put_all(&found, Rank::NonAuthAnswer);
            let addrs: Vec<IpAddr> = found
                .iter()
                .filter_map(record_addr)
                .filter(|ip| self.upstream.allowed(*ip))
                .collect();
            if !addrs.is_empty() {
                return NsAddresses::Found(addrs);
            }
        }
        NsAddresses::Failed
    }

    /// Asks `addrs` (not already in `tried`) in order, a second round with
    /// doubled timeouts for those that timed out, until one reply is
    /// usable. Servers that answered lame are not asked twice.
    async fn ask_servers(
        &self,
        cut: &Delegation,
        addrs: &[IpAddr],
        sname: &Name,
        stype: RecordType,
        budget: &Budget,
        tried: &mut Vec<IpAddr>,
    ) -> Result<Option<Outcome>, ResolveError> {
        let addrs: Vec<IpAddr> = addrs
            .iter()
            .filter(|ip| !tried.contains(ip))
            .copied()
            .collect();
        tried.extend(&addrs);
        let mut given_up: Vec<IpAddr> = Vec::new();
        let tries = (addrs.len() * 2).min(MAX_TRIES_PER_ZONE);
        for attempt in 0..tries {
            let Some(&ip) = addrs.get(attempt % addrs.len()) else {
                break;
            };
            if given_up.contains(&ip) {
                continue;
            }
            budget.spend()?;
            Metrics::inc(&self.metrics.upstream_queries);
            let t = self.servers.timeout(ip, (attempt / addrs.len()) as u32);
            let exchanged = self.upstream.exchange(ip, sname, stype, t).await;
            if let (Some(tr), Err(e)) = (&budget.trace, &exchanged) {
                tr.exchange(ip, &cut.zone, sname, stype, None, None, e.to_string());
            }
            let reply = match exchanged {
                Ok(r) => r,
                Err(ExchangeError::Timeout) => {
                    Metrics::inc(&self.metrics.upstream_timeouts);
                    self.servers.record_timeout(ip, t);
                    continue;
                }
                Err(_) => {
                    Metrics::inc(&self.metrics.upstream_errors);
                    self.servers.mark_dead(ip);
                    given_up.push(ip);
                    continue;
                }
            };
            if reply.tcp {
                Metrics::inc(&self.metrics.upstream_tcp_fallbacks);
            }
            self.servers.record_rtt(ip, reply.rtt);
            let classified = classify(&self.store, &reply.msg, cut, sname, stype);
            if let Some(tr) = &budget.trace {
                let learned = match &classified {
                    Some(Outcome::Referral(child)) => format!("referral to {}", child.zone),
                    Some(Outcome::Answer { records, sigs, .. }) => {
                        format!("answer ({} records)", records.len() + sigs.len())
                    }
                    Some(Outcome::Negative { rcode: r, .. }) if *r == rcode::NXDOMAIN => {
                        "NXDOMAIN".to_string()
                    }
                    Some(Outcome::Negative { .. }) => "NODATA".to_string(),
                    None => format!("lame for {}", cut.zone),
                };
                tr.exchange(
                    ip,
                    &cut.zone,
                    sname,
                    stype,
                    Some(reply.rtt),
                    Some(crate::resolve::trace::rcode_name(u16::from(
                        reply.msg.metadata.response_code,
                    ))),
                    learned,
                );
            }
            match classified {
                Some(o) => {
                    Metrics::inc(&self.metrics.upstream_answered);
                    return Ok(Some(o));
                }
                None => {
                    Metrics::inc(&self.metrics.upstream_lame);
                    tracing::debug!(%ip, zone = %cut.zone, %sname, ?stype, "lame reply");
                    self.servers.mark_lame(ip, &cut.zone);
                    given_up.push(ip);
                }
            }
        }
        Ok(None)
    }
}

impl Iterator {
    /// For `crate::fuzz`: runs an upstream reply through the transport's
    /// forgery checks and the classification, as for a question about
    /// `www.example.test.` asked of a `example.test.` server.
    pub(crate) fn classify_for_fuzzing(&self, caps: bool, reply: &mut [u8]) {
        let (Ok(sname), Ok(zone), Ok(ns)) = (
            Name::from_ascii("www.example.test."),
            Name::from_ascii("example.test."),
            Name::from_ascii("ns1.example.test."),
        ) else {
            return;
        };
        let Some(msg) = self
            .upstream
            .accept_for_fuzzing(&sname, RecordType::A, caps, reply)
        else {
            return;
        };
        let cut = Delegation {
            zone,
            child_ns: Vec::new(),
            parent_ns: vec![ns],
        };
        let _ = classify(&self.store, &msg, &cut, &sname, RecordType::A);
    }
}

impl Resolve for Iterator {
    fn resolve(&self, qname: Name, qtype: RecordType) -> BoxFuture<'_, Sections> {
        Box::pin(self.run(qname, qtype))
    }

    fn flush(&self, _name: Option<&Name>, _subtree: bool) {
        // RRsets of one name also hide in chains and delegations; dropping
        // them all is simple and only costs a few upstream queries.
        self.store.clear();
        if let Some(d) = &self.dnssec {
            d.clear();
        }
    }

    fn servers(&self) -> Vec<crate::resolve::servers::ServerInfo> {
        self.servers.snapshot()
    }

    fn set_dnstap(&self, tap: Option<Arc<crate::dnstap::Dnstap>>) {
        self.upstream.set_dnstap(tap);
    }

    fn trace(
        &self,
        qname: Name,
        qtype: RecordType,
    ) -> BoxFuture<'_, Option<(Sections, Vec<crate::resolve::trace::TraceStep>)>> {
        Box::pin(async move { Some(self.run_traced(qname, qtype).await) })
    }
}

impl Iterator {
    fn count_security(&self, s: crate::validate::Security) {
        use crate::validate::Security;
        let c = match s {
            Security::Secure => &self.metrics.dnssec_secure,
            Security::Insecure => &self.metrics.dnssec_insecure,
            Security::Bogus => &self.metrics.dnssec_bogus,
            Security::Unchecked => return,
        };
        Metrics::inc(c);
    }
}

fn answer(chain: Vec<Record>) -> Sections {
    Sections {
        rcode: 0,
        answer: chain,
        ..Sections::default()
    }
}

/// The next link of a chain that started at `start`: an error when it was
/// in the chain already (a loop).
fn next_link(seen: &mut Vec<Name>, start: &Name, target: Name) -> Result<Name, ResolveError> {
    if same_name(&target, start) || seen.iter().any(|s| same_name(s, &target)) {
        return Err(ResolveError::CnameChain(target));
    }
    seen.push(target.clone());
    Ok(target)
}
