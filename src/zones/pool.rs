//! Weighted pools: which members one answer carries.
//!
//! Semantics follow Route 53 weighted + geolocation routing:
//! - each answer draws `answers` distinct members, with probability in
//!   proportion to weight (sampling without replacement: repeated draws, the
//!   picked member removed from the next draw);
//! - weight 0 is a standby: served only when no positive-weight member of
//!   the same candidate set is healthy; standbys are drawn uniformly;
//! - the candidate set is, first match wins: the client's region's healthy
//!   members; else the healthy global members (no `region`); else the
//!   `fallback` ("all" healthy members, or a named region's healthy members);
//! - when that leaves nothing because members are down, the pool "fails
//!   open": the same steps run again as if every member were healthy (as
//!   Route 53 does when all records are unhealthy), since an address that
//!   may be down beats SERVFAIL for a client that can retry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::Rng;

use super::geo::Region;

/// Health state of one member, shared with its probe task. The probe holds
/// only a `Weak` so that dropping the zones stops it.
#[derive(Debug)]
pub(crate) struct MemberHealth {
    /// Starts true: a member is trusted until probes say otherwise.
    pub(crate) up: AtomicBool,
    /// Answers this member was drawn into (relaxed: a statistic).
    pub(crate) selected: std::sync::atomic::AtomicU64,
}

impl MemberHealth {
    /// A member trusted until probes say otherwise, never drawn yet.
    pub(crate) fn new() -> MemberHealth {
        MemberHealth {
            up: AtomicBool::new(true),
            selected: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// One member of a pool.
#[derive(Debug)]
pub(crate) struct Member {
    /// The configured value as written, for logs and error messages.
    pub(crate) label: String,
    /// What the member hands out, already in DNS form (A, AAAA or CNAME).
    pub(crate) rdata: RData,
    /// Address probed by health checks (A/AAAA members).
    pub(crate) addr: Option<std::net::IpAddr>,
    pub(crate) weight: u64,
    /// `None` = global member (serves every region that has no member of its own).
    pub(crate) region: Option<Region>,
    pub(crate) health: Arc<MemberHealth>,
}

impl Member {
    fn is_up(&self) -> bool {
        // Relaxed: a flag with no data published behind it; a probe result
        // seen one query late is harmless.
        self.health.up.load(Ordering::Relaxed)
    }
}

/// Where to look when the client's region (and the global members) have nothing healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fallback {
    All,
    Region(Region),
}

/// Validated health-check policy of a pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HealthSpec {
    pub(crate) tcp_port: u16,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) fails: u32,
}

/// A weighted (and possibly geo-aware) pool at one owner name.
#[derive(Debug)]
pub(crate) struct Pool {
    pub(crate) name: Name,
    pub(crate) rtype: RecordType,
    pub(crate) answers: usize,
    pub(crate) members: Vec<Member>,
    pub(crate) fallback: Fallback,
    pub(crate) health: Option<HealthSpec>,
    /// True if any member names a region: only then does the answer depend
    /// on the client's address (and carry an ECS scope).
    pub(crate) geo_aware: bool,
}

impl Pool {
    /// Picks the members for one answer. `region` is the client's region
    /// (`None` when nothing matched). Returns member indices, distinct.
    pub(crate) fn select<R: Rng + ?Sized>(
        &self,
        region: Option<Region>,
        rng: &mut R,
    ) -> Vec<usize> {
        let healthy = |m: &Member| m.is_up();
        let candidates = self
            .candidates(region, &healthy)
            .or_else(|| self.candidates(region, &|_: &Member| true))
            .unwrap_or_default();
        let chosen = self.draw(candidates, rng);
        for &i in &chosen {
            if let Some(m) = self.members.get(i) {
                m.health.selected.fetch_add(1, Ordering::Relaxed);
            }
        }
        chosen
    }

    /// The candidate set for `region` given an `up` predicate, or `None`
    /// if every step came up empty. Standby (weight 0) members are dropped
    /// from a set that has a positive-weight member.
    fn candidates(
        &self,
        region: Option<Region>,
        up: &dyn Fn(&Member) -> bool,
    ) -> Option<Vec<usize>> {
        let pick = |want: &dyn Fn(&Member) -> bool| -> Option<Vec<usize>> {
            let set: Vec<usize> = self
                .members
                .iter()
                .enumerate()
                .filter(|(_, m)| want(m) && up(m))
                .map(|(i, _)| i)
                .collect();
            if set.is_empty() {
                return None;
            }
            let active: Vec<usize> = set
                .iter()
                .copied()
                .filter(|&i| self.members.get(i).is_some_and(|m| m.weight > 0))
                .collect();
            Some(if active.is_empty() { set } else { active })
        };
        if !self.geo_aware {
            return pick(&|_| true);
        }
        region
            .and_then(|r| pick(&|m| m.region == Some(r)))
            .or_else(|| pick(&|m| m.region.is_none()))
            .or_else(|| match self.fallback {
                Fallback::All => pick(&|_| true),
                Fallback::Region(f) => pick(&|m| m.region == Some(f)),
            })
    }

    /// Weighted sampling without replacement of `self.answers` members from
    /// `set`. In a standby-only set all weights are 0: drawn uniformly.
    fn draw<R: Rng + ?Sized>(&self, mut set: Vec<usize>, rng: &mut R) -> Vec<usize> {
        let want = self.answers.min(set.len());
        let weight = |i: usize| self.members.get(i).map_or(0, |m| m.weight);
        let uniform = set.iter().all(|&i| weight(i) == 0);
        let mut out = Vec::with_capacity(want);
        while out.len() < want && !set.is_empty() {
            let total: u64 = set
                .iter()
                .map(|&i| if uniform { 1 } else { weight(i) })
                .sum();
            let mut ticket = rng.gen_range(0..total.max(1));
            let mut chosen = set.len() - 1;
            for (pos, &i) in set.iter().enumerate() {
                let w = if uniform { 1 } else { weight(i) };
                if ticket < w {
                    chosen = pos;
                    break;
                }
                ticket -= w;
            }
            out.push(set.swap_remove(chosen));
        }
        out
    }

    /// Builds the answer records for the chosen members, owned by `owner`.
    pub(crate) fn records(&self, chosen: &[usize], owner: &Name, ttl: u32) -> Vec<Record> {
        chosen
            .iter()
            .filter_map(|&i| self.members.get(i))
            .map(|m| Record::from_rdata(owner.clone(), ttl, m.rdata.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::A;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::HashMap;

    fn member(ip: [u8; 4], weight: u64, region: Option<Region>) -> Member {
        let addr = std::net::Ipv4Addr::from(ip);
        Member {
            label: addr.to_string(),
            rdata: RData::A(A(addr)),
            addr: Some(addr.into()),
            weight,
            region,
            health: Arc::new(MemberHealth::new()),
        }
    }

    fn pool(members: Vec<Member>, answers: usize) -> Pool {
        Pool {
            name: Name::root(),
            rtype: RecordType::A,
            answers,
            geo_aware: members.iter().any(|m| m.region.is_some()),
            members,
            fallback: Fallback::All,
            health: None,
        }
    }

    /// Pearson's chi-square statistic of observed counts against weights.
    fn chi_square(counts: &[u64], weights: &[u64]) -> f64 {
        let n: u64 = counts.iter().sum();
        let wsum: u64 = weights.iter().sum();
        counts
            .iter()
            .zip(weights)
            .map(|(&o, &w)| {
                let e = n as f64 * w as f64 / wsum as f64;
                (o as f64 - e).powi(2) / e
            })
            .sum()
    }

    fn shares(p: &Pool, n: usize, seed: u64) -> Vec<u64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut counts = vec![0u64; p.members.len()];
        for _ in 0..n {
            for i in p.select(None, &mut rng) {
                counts[i] += 1;
            }
        }
        counts
    }

    #[test]
    fn weights_70_30_within_chi_square_p001() {
        let p = pool(
            vec![
                member([192, 0, 2, 10], 70, None),
                member([192, 0, 2, 11], 30, None),
            ],
            1,
        );
        let counts = shares(&p, 10_000, 7);
        let stat = chi_square(&counts, &[70, 30]);
        assert!(stat < 10.83, "chi2 {stat} counts {counts:?}");
    }

    #[test]
    fn weights_1_1_2_within_chi_square_p001() {
        let p = pool(
            vec![
                member([192, 0, 2, 1], 1, None),
                member([192, 0, 2, 2], 1, None),
                member([192, 0, 2, 3], 2, None),
            ],
            1,
        );
        let counts = shares(&p, 10_000, 11);
        let stat = chi_square(&counts, &[1, 1, 2]);
        assert!(stat < 13.82, "chi2 {stat} counts {counts:?}");
    }

    #[test]
    fn two_answers_are_always_distinct_and_heavier_member_is_picked_more() {
        let p = pool(
            vec![
                member([10, 0, 0, 1], 1, None),
                member([10, 0, 0, 2], 1, None),
                member([10, 0, 0, 3], 8, None),
            ],
            2,
        );
        let mut rng = StdRng::seed_from_u64(3);
        let mut seen: HashMap<usize, u32> = HashMap::new();
        for _ in 0..1000 {
            let got = p.select(None, &mut rng);
            assert_eq!(got.len(), 2);
            assert_ne!(got[0], got[1]);
            for i in got {
                *seen.entry(i).or_default() += 1;
            }
        }
        assert!(seen[&2] > seen[&0] && seen[&2] > seen[&1]);
    }

    #[test]
    fn more_answers_than_members_returns_every_member_once() {
        let p = pool(
            vec![
                member([10, 0, 0, 1], 1, None),
                member([10, 0, 0, 2], 5, None),
            ],
            4,
        );
        let mut got = p.select(None, &mut StdRng::seed_from_u64(1));
        got.sort_unstable();
        assert_eq!(got, vec![0, 1]);
    }

    #[test]
    fn standby_is_served_only_when_positive_members_are_down() {
        let p = pool(
            vec![
                member([10, 0, 0, 1], 5, None),
                member([10, 0, 0, 9], 0, None),
            ],
            1,
        );
        let mut rng = StdRng::seed_from_u64(5);
        assert!((0..500).all(|_| p.select(None, &mut rng) == vec![0]));
        p.members[0].health.up.store(false, Ordering::Relaxed);
        assert!((0..50).all(|_| p.select(None, &mut rng) == vec![1]));
    }

    #[test]
    fn all_down_fails_open_to_the_normal_choice() {
        let p = pool(
            vec![
                member([10, 0, 0, 1], 5, None),
                member([10, 0, 0, 9], 0, None),
            ],
            1,
        );
        for m in &p.members {
            m.health.up.store(false, Ordering::Relaxed);
        }
        let mut rng = StdRng::seed_from_u64(5);
        assert!((0..50).all(|_| p.select(None, &mut rng) == vec![0]));
    }

    #[test]
    fn all_zero_weights_draw_uniformly() {
        let p = pool(
            vec![
                member([10, 0, 0, 1], 0, None),
                member([10, 0, 0, 2], 0, None),
            ],
            1,
        );
        let counts = shares(&p, 10_000, 9);
        assert!(chi_square(&counts, &[1, 1]) < 10.83, "{counts:?}");
    }
}
