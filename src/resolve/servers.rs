//! The infra cache: what we know about each upstream server address.
//!
//! Smoothed RTT and variance as TCP does (RFC 6298 §2, the same estimator
//! Unbound uses for server selection), timeouts derived from them with
//! exponential backoff, and hold-down marks for servers that do not answer
//! (dead) or answer badly for a zone (lame).

use hickory_proto::rr::Name;
use rand::Rng;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Info {
    srtt_ms: Option<f64>,
    rttvar_ms: f64,
    timeouts_in_row: u32,
    dead_until: Option<Instant>,
    lame: Vec<(Name, Instant)>,
}

/// Timeout and selection policy.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Timeout for a server never measured.
    pub initial_timeout: Duration,
    /// Timeout ceiling.
    pub max_timeout: Duration,
    /// How long dead/lame marks last.
    pub hold_down: Duration,
}

/// Consecutive timeouts after which a server is held down as dead.
const DEAD_AFTER_TIMEOUTS: u32 = 3;
/// Chance of trying a server out of RTT order, so a server that was slow
/// once gets re-measured.
const PROBE_CHANCE: f64 = 0.05;

/// One upstream address as the infra cache sees it now (for
/// `resolvd control servers` and the held-down gauges).
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// The server's address.
    pub addr: IpAddr,
    /// Smoothed RTT in milliseconds, once measured.
    pub srtt_ms: Option<f64>,
    /// RTT variance in milliseconds.
    pub rttvar_ms: f64,
    /// Timeouts since its last reply.
    pub timeouts_in_row: u32,
    /// How long it stays held down as dead, when it is.
    pub dead_for: Option<Duration>,
    /// Zones it is held down as lame for, and for how long.
    pub lame_for: Vec<(Name, Duration)>,
}

/// Per-address server statistics.
pub struct ServerStats {
    /// ahash, not SipHash: this map is read for every exchange, and its
    /// keys come from referrals (so keyed at random all the same).
    map: Mutex<HashMap<IpAddr, Info, ahash::RandomState>>,
    policy: Policy,
}

impl ServerStats {
    /// Empty statistics.
    pub fn new(policy: Policy) -> ServerStats {
        ServerStats {
            map: Mutex::new(HashMap::default()),
            policy,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<IpAddr, Info, ahash::RandomState>) -> T) -> T {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut m)
    }

    /// Orders candidate addresses for `zone`: usable ones by smoothed RTT
    /// (unmeasured first, so every server gets measured), held-down ones
    /// last (still tried when nothing else is left).
    pub fn order(&self, addrs: &mut Vec<IpAddr>, zone: &Name) {
        *addrs = self.order_tiers(addrs.iter().map(|ip| (0, *ip)), zone);
    }

    /// Orders `(tier, address)` candidates for `zone`: usable servers
    /// before held-down ones, then by tier (lower first: the child's
    /// servers before the parent's), then by smoothed RTT. An address in
    /// several tiers keeps its lowest.
    pub fn order_tiers(
        &self,
        candidates: impl Iterator<Item = (u8, IpAddr)>,
        zone: &Name,
    ) -> Vec<IpAddr> {
        let now = Instant::now();
        let mut keyed: Vec<(bool, u8, f64, IpAddr)> = self.with(|m| {
            candidates
                .map(|(tier, ip)| match m.get(&ip) {
                    None => (false, tier, 0.0, ip),
                    Some(i) => {
                        let down = i.dead_until.is_some_and(|t| t > now)
                            || i.lame.iter().any(|(z, t)| z == zone && *t > now);
                        (down, tier, i.srtt_ms.unwrap_or(0.0), ip)
                    }
                })
                .collect()
        });
        keyed.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then(a.1.cmp(&b.1))
                .then(a.2.partial_cmp(&b.2).unwrap_or(std::cmp::Ordering::Equal))
                .then(a.3.cmp(&b.3))
        });
        let mut seen: Vec<IpAddr> = Vec::with_capacity(keyed.len());
        keyed.retain(|k| {
            let new = !seen.contains(&k.3);
            seen.push(k.3);
            new
        });
        let mut out: Vec<IpAddr> = keyed.iter().map(|k| k.3).collect();
        // Now and then try a usable server out of RTT order (within the
        // first tier), so a server that was slow once gets re-measured.
        let first_tier = keyed.first().map(|k| (k.0, k.1));
        let peers = keyed
            .iter()
            .take_while(|k| Some((k.0, k.1)) == first_tier && !k.0)
            .count();
        let mut rng = rand::thread_rng();
        if peers > 1 && rng.gen_bool(PROBE_CHANCE) {
            let j = rng.gen_range(1..peers);
            out.swap(0, j);
        }
        out
    }

    /// Every address known, with its live hold-down marks; sorted by address.
    pub fn snapshot(&self) -> Vec<ServerInfo> {
        let now = Instant::now();
        let mut v: Vec<ServerInfo> = self.with(|m| {
            m.iter()
                .map(|(ip, i)| ServerInfo {
                    addr: *ip,
                    srtt_ms: i.srtt_ms,
                    rttvar_ms: i.rttvar_ms,
                    timeouts_in_row: i.timeouts_in_row,
                    dead_for: i.dead_until.and_then(|t| t.checked_duration_since(now)),
                    lame_for: i
                        .lame
                        .iter()
                        .filter_map(|(z, t)| Some((z.clone(), t.checked_duration_since(now)?)))
                        .collect(),
                })
                .collect()
        });
        v.sort_by_key(|s| s.addr);
        v
    }

    /// The per-try timeout for `ip` on the `attempt`-th round (0-based).
    pub fn timeout(&self, ip: IpAddr, attempt: u32) -> Duration {
        let p = self.policy;
        let base = self.with(|m| {
            m.get(&ip).and_then(|i| {
                i.srtt_ms
                    .map(|s| Duration::from_micros(((s + 4.0 * i.rttvar_ms) * 1000.0) as u64))
            })
        });
        let base = base
            .map(|b| b.clamp(Duration::from_millis(50), p.max_timeout))
            .unwrap_or(p.initial_timeout);
        (base * 2u32.saturating_pow(attempt.min(8))).min(p.max_timeout)
    }

    /// A reply arrived after `rtt`.
    pub fn record_rtt(&self, ip: IpAddr, rtt: Duration) {
        let r = rtt.as_secs_f64() * 1000.0;
        self.with(|m| {
            let i = m.entry(ip).or_default();
            match i.srtt_ms {
                None => {
                    i.srtt_ms = Some(r);
                    i.rttvar_ms = r / 2.0;
                }
                Some(s) => {
                    i.rttvar_ms = 0.75 * i.rttvar_ms + 0.25 * (s - r).abs();
                    i.srtt_ms = Some(0.875 * s + 0.125 * r);
                }
            }
            i.timeouts_in_row = 0;
            i.dead_until = None;
        });
    }

    /// No reply within the timeout.
    pub fn record_timeout(&self, ip: IpAddr, waited: Duration) {
        let hold = self.policy.hold_down;
        self.with(|m| {
            let i = m.entry(ip).or_default();
            // Push it behind servers that do answer.
            let w = waited.as_secs_f64() * 1000.0;
            i.srtt_ms = Some(i.srtt_ms.map_or(w, |s| s.max(w)));
            i.timeouts_in_row += 1;
            if i.timeouts_in_row >= DEAD_AFTER_TIMEOUTS {
                i.dead_until = Some(Instant::now() + hold);
            }
        });
    }

    /// Unreachable (ICMP error, no route): dead at once.
    pub fn mark_dead(&self, ip: IpAddr) {
        let hold = self.policy.hold_down;
        self.with(|m| m.entry(ip).or_default().dead_until = Some(Instant::now() + hold));
    }

    /// Answered badly for `zone` (REFUSED, SERVFAIL, not authoritative).
    pub fn mark_lame(&self, ip: IpAddr, zone: &Name) {
        let until = Instant::now() + self.policy.hold_down;
        let zone = zone.to_lowercase();
        self.with(|m| {
            let i = m.entry(ip).or_default();
            i.lame.retain(|(z, t)| *z != zone && *t > Instant::now());
            i.lame.push((zone, until));
        });
    }
}
