//! From query bytes to reply bytes: parse, access control, local zones,
//! cache, then (off the fast path) coalesced resolution, serve-stale and
//! prefetch.
//!
//! [`Handler::answer_now`] is the synchronous fast path the listeners call
//! for every packet: it answers malformed queries, refused clients, local
//! zones and live cache hits without awaiting or allocating per record.
//! DNS Cookies (RFC 7873) and the UDP rate limits ([`crate::ratelimit`])
//! are applied here too, for both paths.
//! Everything else returns [`Step::Resolve`] and goes through
//! [`Handler::answer_resolved`], where concurrent identical questions share
//! one resolution (request coalescing), which asks the shared cache
//! ([`crate::cache_l2`], Redis) first when there is one.

use crate::cache::{AnswerCache, CacheKey, Entry, Front};
use crate::cache_l2::SharedCache;
use crate::config::RateLimitConfig;
use crate::cookies::{CookieJar, ReplyCookie, Verdict};
use crate::metrics::{Metrics, QueryCounts, Shard};
use crate::ratelimit::{Decision, RateLimits};
use crate::resolve::Resolve;
use crate::wire::answer::{
    pad_reply, write_error, Ede, ReplyContext, Sections, WireAnswer, PAD_BLOCK,
};
use crate::wire::query::{rcode, Query, Rejection};
use crate::zones::{ClientInfo, ClientSubnet, LocalZones};
use arc_swap::ArcSwap;
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::oneshot;

/// Clients waiting for one resolution.
type Waiters = Vec<oneshot::Sender<Entry>>;

/// What a query does about a resolution its question needs.
enum Turn {
    /// One is in progress: wait for its answer.
    Join(oneshot::Receiver<Entry>),
    /// None was: run it.
    Lead(Lead),
}

/// The duty to finish the resolution of one key in `Handler::inflight`.
/// Dropped unfinished (its task cancelled or panicking), it removes the
/// key, so its waiters hear that it failed (they answer SERVFAIL) and the
/// next query for the name starts afresh instead of joining a resolution
/// that will never end.
struct Lead {
    handler: Arc<Handler>,
    key: Option<CacheKey>,
    /// The waiter that started it, when that one waits in another task.
    first: Option<oneshot::Sender<Entry>>,
}

impl Lead {
    /// Removes the key and returns who waited for it.
    fn finish(&mut self) -> Waiters {
        let Some(key) = self.key.take() else {
            return Waiters::new();
        };
        let mut map = self
            .handler
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut waiters = map.remove(&key).unwrap_or_default();
        waiters.extend(self.first.take());
        waiters
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        drop(self.finish());
    }
}

/// Which transport a query came over; decides the reply size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: the client's EDNS size, or 512.
    Udp,
    /// TCP: up to 65535.
    Tcp,
    /// DNS over TLS (RFC 7858): as TCP, and padded replies.
    Dot,
    /// DNS over HTTPS (RFC 8484): up to 65535, padded replies.
    Doh,
}

impl Transport {
    /// Whether the transport is encrypted, so padding is worth sending
    /// (RFC 8467 §4.1; on clear text it would only cost bytes).
    #[inline]
    pub fn encrypted(self) -> bool {
        matches!(self, Transport::Dot | Transport::Doh)
    }
}

/// What the fast path decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `out` holds the reply.
    Reply,
    /// Send nothing.
    Drop,
    /// Needs resolution: call [`Handler::answer_resolved`].
    Resolve,
}

/// Settings the handler needs from the configuration.
#[derive(Debug, Clone)]
pub struct HandlerConfig {
    /// Client prefixes allowed to query.
    pub allow: Vec<IpNet>,
    /// Our EDNS payload size.
    pub udp_payload_size: u16,
    /// Client queries awaiting resolution at once.
    pub max_pending: usize,
    /// Answer DNS Cookies, with this server secret (random when None).
    pub cookies: Option<Option<[u8; 16]>>,
    /// UDP response and query rate limits.
    pub ratelimit: RateLimitConfig,
}

/// RCODE 23, BADCOOKIE (RFC 7873 §8): extended, so it needs an OPT.
const BADCOOKIE: u16 = 23;

/// What a listener thread keeps across the queries it answers, so that its
/// cache hits write nothing another thread touches (issue 14): its own
/// shard of the query counts, its own [`Front`] of the answer cache, and
/// one clock reading per batch of datagrams (a batch is answered within
/// microseconds; a reading per query was a tenth of a hit's user time).
pub struct Local {
    counts: Shard,
    front: Front,
    /// The reloadable settings every query reads, through handles that
    /// check for a reload with one load instead of the swap's bookkeeping.
    zones: arc_swap::Cache<Arc<ArcSwap<LocalZones>>, Arc<LocalZones>>,
    allow: arc_swap::Cache<Arc<ArcSwap<Vec<IpNet>>>, Arc<Vec<IpNet>>>,
    /// When the current batch was read; the thread sets it before each.
    pub now: Instant,
}

/// Shared per-daemon query handling state.
pub struct Handler {
    cfg: HandlerConfig,
    /// Local zones; swapped whole on reload so a query sees one version.
    /// (In an `Arc` so a listener thread's [`Local`] can keep a cached
    /// handle to it.)
    pub zones: Arc<ArcSwap<LocalZones>>,
    /// The answer cache.
    pub cache: AnswerCache,
    /// Swapped whole by a reload that changes `[resolver]`; resolutions
    /// already running finish on the one they started with.
    resolver: ArcSwap<Arc<dyn Resolve>>,
    /// Client prefixes allowed to query; swapped by a reload.
    allow: Arc<ArcSwap<Vec<IpNet>>>,
    /// Resolutions in progress and who waits for them. A std Mutex: the
    /// critical sections are a map lookup, never held across an await.
    /// ahash: keys are query names (chosen by clients, so keyed at random)
    /// and each miss hashes one twice; SipHash cost 230 instructions a time.
    inflight: Mutex<HashMap<CacheKey, Waiters, ahash::RandomState>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Slots for client queries awaiting resolution.
    pending: tokio::sync::Semaphore,
    /// Server cookie secret, when cookies are answered.
    cookies: Option<CookieJar>,
    /// UDP rate limits.
    limits: RateLimits,
    /// The dnstap writer, when `[dnstap] socket` is set; swapped on reload.
    dnstap: arc_swap::ArcSwapOption<crate::dnstap::Dnstap>,
    /// Whether `dnstap` is set: one relaxed load keeps the query path free
    /// of the swap's bookkeeping when dnstap is off (the usual case).
    dnstap_on: std::sync::atomic::AtomicBool,
    /// The shared cache (L2) behind `cache`, when configured.
    l2: Option<SharedCache>,
}

impl Handler {
    /// Builds a handler around a resolver.
    pub fn new(
        cfg: HandlerConfig,
        zones: Arc<LocalZones>,
        cache: AnswerCache,
        resolver: Arc<dyn Resolve>,
        metrics: Arc<Metrics>,
    ) -> Handler {
        Handler {
            pending: tokio::sync::Semaphore::new(cfg.max_pending),
            cookies: cfg.cookies.map(CookieJar::new),
            limits: RateLimits::new(&cfg.ratelimit),
            allow: Arc::new(ArcSwap::from_pointee(cfg.allow.clone())),
            cfg,
            zones: Arc::new(ArcSwap::new(zones)),
            cache,
            resolver: ArcSwap::from_pointee(resolver),
            inflight: Mutex::new(HashMap::default()),
            metrics,
            dnstap: arc_swap::ArcSwapOption::empty(),
            dnstap_on: std::sync::atomic::AtomicBool::new(false),
            l2: None,
        }
    }

    /// `max_pending`: how many client queries may await resolution; the
    /// UDP listener bounds its queue of misses for the runtime by it too.
    pub fn max_pending(&self) -> usize {
        self.cfg.max_pending
    }

    /// State for one listener thread's [`Handler::answer_now_in`].
    pub fn local(&self) -> Local {
        Local {
            counts: self.metrics.shard(),
            front: self.cache.front(),
            zones: arc_swap::Cache::new(self.zones.clone()),
            allow: arc_swap::Cache::new(self.allow.clone()),
            now: Instant::now(),
        }
    }

    /// Puts a shared cache (L2) behind the answer cache.
    pub fn with_shared_cache(mut self, l2: Option<SharedCache>) -> Handler {
        self.l2 = l2;
        self
    }

    fn allowed(allow: &[IpNet], ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        allow.iter().any(|n| n.contains(&ip))
    }

    fn context(
        &self,
        q: &Query<'_>,
        t: Transport,
        stale: bool,
        cookie: Option<ReplyCookie>,
    ) -> ReplyContext {
        ReplyContext {
            limit: match t {
                Transport::Udp => q.udp_limit(),
                Transport::Tcp | Transport::Dot | Transport::Doh => 65535,
            },
            our_payload: self.cfg.udp_payload_size,
            stale,
            cookie,
            pad: t.encrypted() && q.edns.is_some_and(|e| e.padding),
        }
    }

    /// The query's cookie checked (RFC 7873 §5.2): its verdict and the
    /// option for the reply; None when it had none or cookies are off.
    fn cookie(&self, q: &Query<'_>, client: IpAddr) -> Option<(Verdict, ReplyCookie)> {
        let jar = self.cookies.as_ref()?;
        let c = q.edns?.cookie?;
        Some(jar.check(&c.client, c.server(), client))
    }

    /// Applies response rate limiting to a reply about to go to `client`
    /// over UDP: sends it, sends it truncated (slip), or drops it.
    fn limit_response(
        &self,
        client: IpAddr,
        t: Transport,
        cookie_ok: bool,
        out: &mut Vec<u8>,
    ) -> Step {
        if t != Transport::Udp || cookie_ok {
            return Step::Reply;
        }
        match self.limits.response(client) {
            Decision::Send => Step::Reply,
            Decision::Drop => {
                Metrics::inc(&self.metrics.rrl_dropped);
                out.clear();
                Step::Drop
            }
            Decision::Slip => {
                Metrics::inc(&self.metrics.rrl_slipped);
                truncate_reply(out);
                Step::Reply
            }
        }
    }

    /// The fast path. Never awaits; allocation-free on a cache hit.
    pub fn answer_now(
        self: &Arc<Self>,
        pkt: &[u8],
        client: SocketAddr,
        t: Transport,
        out: &mut Vec<u8>,
    ) -> Step {
        self.answer_now_in(pkt, client, t, out, None)
    }

    /// [`Handler::answer_now`] for a thread with [`Local`] state of its
    /// own (a UDP listener thread): its counts, its front of the cache and
    /// its batch's clock reading.
    pub fn answer_now_in(
        self: &Arc<Self>,
        pkt: &[u8],
        client: SocketAddr,
        t: Transport,
        out: &mut Vec<u8>,
        mut local: Option<&mut Local>,
    ) -> Step {
        if !self.dnstap_on.load(Ordering::Relaxed) {
            let step = self.answer_now_limited(pkt, client, t, out, local.as_deref_mut());
            if step == Step::Reply {
                self.counts(local.as_deref()).reply(out);
            }
            return step;
        }
        let tap = self.dnstap.load();
        if let Some(tap) = tap.as_deref() {
            tap.client_query(pkt, client, t);
        }
        let step = self.answer_now_limited(pkt, client, t, out, local.as_deref_mut());
        if step == Step::Reply {
            self.counts(local.as_deref()).reply(out);
            if let Some(tap) = tap.as_deref() {
                tap.client_response(out, client, t);
            }
        }
        step
    }

    /// Where this thread's query counts go.
    #[inline]
    fn counts<'a>(&'a self, local: Option<&'a Local>) -> &'a QueryCounts {
        match local {
            Some(l) => &l.counts,
            None => &self.metrics.counts,
        }
    }

    fn answer_now_limited(
        self: &Arc<Self>,
        pkt: &[u8],
        client: SocketAddr,
        t: Transport,
        out: &mut Vec<u8>,
        local: Option<&mut Local>,
    ) -> Step {
        if !self.limits.enabled() {
            return self.answer_now_inner(pkt, client, t, out, &mut false, local);
        }
        if t == Transport::Udp && !self.limits.admit_query(client.ip()) {
            self.counts(local.as_deref()).query(t);
            Metrics::inc(&self.metrics.ratelimited);
            return Step::Drop;
        }
        let mut cookie_ok = false;
        match self.answer_now_inner(pkt, client, t, out, &mut cookie_ok, local) {
            Step::Reply => self.limit_response(client.ip(), t, cookie_ok, out),
            other => other,
        }
    }

    fn answer_now_inner(
        self: &Arc<Self>,
        pkt: &[u8],
        client: SocketAddr,
        t: Transport,
        out: &mut Vec<u8>,
        cookie_ok: &mut bool,
        local: Option<&mut Local>,
    ) -> Step {
        // The guards live here, for the `None` arm to borrow from.
        let (zones_guard, allow_guard);
        let (counts, front, now, zones, allow): (_, _, _, &LocalZones, &[IpNet]) = match local {
            Some(l) => (
                &*l.counts,
                Some(&mut l.front),
                l.now,
                l.zones.load(),
                l.allow.load(),
            ),
            None => {
                zones_guard = self.zones.load();
                allow_guard = self.allow.load();
                (
                    &self.metrics.counts,
                    None,
                    Instant::now(),
                    &zones_guard,
                    &allow_guard,
                )
            }
        };
        counts.query(t);
        let q = match Query::parse(pkt) {
            Ok(q) => q,
            Err(Rejection::Drop) => {
                Metrics::inc(&self.metrics.malformed);
                return Step::Drop;
            }
            Err(Rejection::Error {
                rcode,
                question_end,
                edns,
            }) => {
                Metrics::inc(&self.metrics.malformed);
                write_error(
                    pkt,
                    rcode,
                    question_end,
                    edns,
                    self.cfg.udp_payload_size,
                    None,
                    out,
                );
                if t.encrypted() && edns.is_some_and(|e| e.padding) {
                    pad_reply(out, PAD_BLOCK, 65535);
                }
                return Step::Reply;
            }
        };
        counts.qtype(q.qtype);
        if !Self::allowed(allow, client.ip()) {
            Metrics::inc(&self.metrics.refused);
            self.error_reply(pkt, &q, t, rcode::REFUSED, None, out);
            return Step::Reply;
        }
        let cookie = self.cookie(&q, client.ip());
        match cookie {
            Some((Verdict::Valid, _)) => *cookie_ok = true,
            // RFC 7873 §5.2.3: a server cookie we cannot verify, over UDP,
            // gets BADCOOKIE with a fresh one; the client retries with it.
            // TCP has proven the address already and is answered.
            Some((Verdict::Invalid, c)) if t == Transport::Udp => {
                Metrics::inc(&self.metrics.badcookie);
                self.error_reply(pkt, &q, t, BADCOOKIE, Some(&c), out);
                return Step::Reply;
            }
            _ => {}
        }
        let cookie = cookie.map(|(_, c)| c);
        {
            if zones.may_contain(q.name_wire()) {
                if let Some(local) = self.local_answer(zones, &q, client.ip()) {
                    Metrics::inc(&self.metrics.local);
                    match local {
                        Some(a) => a.write_reply(&q, now, self.context(&q, t, false, cookie), out),
                        None => self.error_reply(pkt, &q, t, rcode::SERVFAIL, cookie.as_ref(), out),
                    }
                    return Step::Reply;
                }
            }
        }
        let owned;
        let hit = match front {
            // Borrowed from the front: a hit clones no Arc.
            Some(front) => self.cache.get_live(front, q.key(), now),
            None => {
                owned = self.cache.get(q.key()).filter(|e| !e.expired(now));
                owned.as_ref()
            }
        };
        if let Some(e) = hit {
            counts.hit();
            e.write_reply(&q, now, self.context(&q, t, false, cookie), out);
            if e.rcode == rcode::SERVFAIL {
                Metrics::inc(&self.metrics.servfails);
            }
            self.maybe_prefetch(&q, e, now);
            // Hits are not timed: a second clock read would cost more
            // than the lookup. Latency quantiles cover resolutions.
            return Step::Reply;
        }
        Step::Resolve
    }

    /// Starts a background refresh when a hit falls in the last tenth of
    /// its TTL (Unbound's `prefetch`), once per entry.
    fn maybe_prefetch(self: &Arc<Self>, q: &Query<'_>, e: &Entry, now: Instant) {
        if e.rcode != 0 || e.ttl < 10 {
            return;
        }
        if e.remaining(now) as u64 * 10 > e.ttl as u64 {
            return;
        }
        // Read after the cheap tests: the policy sits behind a swap (for
        // reloads), and most hits are nowhere near expiry.
        if !self.cache.config().prefetch {
            return;
        }
        if e.prefetch_started.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Some(name) = wire_to_name(q.name_wire()) {
            Metrics::inc(&self.metrics.prefetches);
            // A refresh must come from upstream: L2 holds the same age.
            drop(self.resolve_shared(q.key(), name, RecordType::from(q.qtype), false));
        }
    }

    /// The local zones' answer, encoded, when the question is theirs.
    /// Outer None: not a local name; inner None: it is, but the answer
    /// could not be encoded.
    fn local_answer(
        &self,
        zones: &LocalZones,
        q: &Query<'_>,
        client: IpAddr,
    ) -> Option<Option<WireAnswer>> {
        let name = wire_to_name(q.name_wire())?;
        let info = ClientInfo {
            addr: client,
            ecs: q.edns.and_then(|e| e.ecs).map(|c| ClientSubnet {
                addr: c.addr,
                source_prefix: c.source_prefix,
            }),
        };
        let qtype = RecordType::from(q.qtype);
        let za = zones.lookup(&name, qtype, &info)?;
        let s = Sections {
            rcode: u16::from(za.rcode) & 0xf,
            authoritative: true,
            answer: za.answer,
            authority: za.authority,
            additional: za.additional,
            ede: None,
            ecs_scope: za.ecs_scope,
            // Local zones are ours: never validated (issue 9).
            security: crate::validate::Security::Unchecked,
        };
        Some(WireAnswer::encode(&name, qtype, s).ok())
    }

    /// A header-and-question reply with `rcode` to a query that parsed.
    fn error_reply(
        &self,
        pkt: &[u8],
        q: &Query<'_>,
        t: Transport,
        rcode: u16,
        cookie: Option<&ReplyCookie>,
        out: &mut Vec<u8>,
    ) {
        write_error(
            pkt,
            rcode,
            12 + q.question.len(),
            q.edns,
            self.cfg.udp_payload_size,
            cookie,
            out,
        );
        if t.encrypted() && q.edns.is_some_and(|e| e.padding) {
            pad_reply(out, PAD_BLOCK, 65535);
        }
    }

    /// The slow path: resolution shared with identical concurrent queries,
    /// serve-stale when it fails or is slow. `out` gets the reply, or stays
    /// empty when the packet turns out not to deserve one.
    pub async fn answer_resolved(
        self: &Arc<Self>,
        pkt: &[u8],
        client: SocketAddr,
        t: Transport,
        out: &mut Vec<u8>,
    ) {
        let cookie_ok = self.answer_resolved_inner(pkt, client, t, out).await;
        if !out.is_empty() && self.limits.enabled() {
            self.limit_response(client.ip(), t, cookie_ok, out);
        }
        if !out.is_empty() {
            self.metrics.counts.reply(out);
            if self.dnstap_on.load(Ordering::Relaxed) {
                if let Some(tap) = self.dnstap.load().as_deref() {
                    tap.client_response(out, client, t);
                }
            }
        }
    }

    /// Returns whether the query carried a valid server cookie.
    async fn answer_resolved_inner(
        self: &Arc<Self>,
        pkt: &[u8],
        client: SocketAddr,
        t: Transport,
        out: &mut Vec<u8>,
    ) -> bool {
        out.clear();
        let started = Instant::now();
        let Ok(q) = Query::parse(pkt) else {
            return false;
        };
        let cookie = self.cookie(&q, client.ip());
        let cookie_ok = matches!(cookie, Some((Verdict::Valid, _)));
        let cookie = cookie.map(|(_, c)| c);
        let Ok(_slot) = self.pending.try_acquire() else {
            Metrics::inc(&self.metrics.dropped);
            return cookie_ok;
        };
        let qtype = RecordType::from(q.qtype);
        let Some(qname) = wire_to_name(q.name_wire()) else {
            self.error_reply(pkt, &q, t, rcode::FORMERR, cookie.as_ref(), out);
            return cookie_ok;
        };
        Metrics::inc(&self.metrics.misses);
        if let Some(soa) = self.cache.nxdomain_cut(q.name_wire()) {
            let s = Sections {
                rcode: rcode::NXDOMAIN,
                authority: vec![soa],
                ..Sections::default()
            };
            if let Ok(a) = WireAnswer::encode(&qname, qtype, s) {
                a.write_reply(&q, Instant::now(), self.context(&q, t, false, cookie), out);
                return cookie_ok;
            }
        }
        let stale = if self.cache.config().serve_stale {
            let max = self.cache.config().stale_max.0;
            let now = Instant::now();
            self.cache
                .get(q.key())
                .filter(|e| e.rcode != rcode::SERVFAIL && e.expired_for(now) <= max)
        } else {
            None
        };
        let entry = match &stale {
            Some(st) => {
                let rx = self.resolve_coalesced(q.key(), qname.clone(), qtype);
                let wait = self.cache.config().stale_answer_timeout.0;
                match tokio::time::timeout(wait, rx).await {
                    Ok(Ok(fresh)) if fresh.rcode != rcode::SERVFAIL => Ok(fresh),
                    _ => Err(st.clone()),
                }
            }
            // No timer of our own: every resolution ends by its own
            // deadline (the iterator's `query_deadline`, the L2 lookup's
            // `timeout`), and a resolution task that dies drops the
            // sender. A backstop timer here cost a timer-wheel insert and,
            // as often as not, an eventfd write to wake the runtime's
            // parked driver (tokio does that for any timer earlier than
            // the one it parked on): a third of the cold path's
            // wake-up writes.
            // A UDP miss's task is never cancelled half-way: it may run
            // the resolution itself.
            None if t == Transport::Udp => Ok(self.resolve_here(q.key(), &qname, qtype).await),
            None => match self.resolve_coalesced(q.key(), qname.clone(), qtype).await {
                Ok(fresh) => Ok(fresh),
                _ => Ok(self.servfail(&qname, qtype)),
            },
        };
        let now = Instant::now();
        match entry {
            Ok(e) => {
                if e.rcode == rcode::SERVFAIL {
                    Metrics::inc(&self.metrics.servfails);
                }
                e.write_reply(&q, now, self.context(&q, t, false, cookie), out);
            }
            Err(st) => {
                Metrics::inc(&self.metrics.stale_served);
                st.write_reply(&q, now, self.context(&q, t, true, cookie), out);
            }
        }
        self.metrics.observe(started.elapsed());
        cookie_ok
    }

    fn servfail(&self, qname: &Name, qtype: RecordType) -> Entry {
        let s = Sections::error(
            rcode::SERVFAIL,
            Some(Ede {
                code: 22,
                text: "resolution timed out".into(),
            }),
        );
        Arc::new(
            WireAnswer::encode(qname, qtype, s)
                .unwrap_or_else(|_| WireAnswer::bare(rcode::SERVFAIL)),
        )
    }

    /// Joins the resolution in progress for `key`, or starts one in its own
    /// task (so it finishes and fills the cache even if every waiter leaves).
    pub fn resolve_coalesced(
        self: &Arc<Self>,
        key: &[u8],
        qname: Name,
        qtype: RecordType,
    ) -> oneshot::Receiver<Entry> {
        self.resolve_shared(key, qname, qtype, true)
    }

    /// As [`Handler::resolve_coalesced`]; asks the shared cache (L2)
    /// first when `read_l2`, and hands fresh resolutions to it.
    fn resolve_shared(
        self: &Arc<Self>,
        key: &[u8],
        qname: Name,
        qtype: RecordType,
        read_l2: bool,
    ) -> oneshot::Receiver<Entry> {
        let mut lead = match self.join_or_lead(key) {
            Turn::Join(rx) => return rx,
            Turn::Lead(lead) => lead,
        };
        let (tx, rx) = oneshot::channel();
        lead.first = Some(tx);
        let this = self.clone();
        // Boxed: the task's cell then holds a pointer, not the whole
        // resolution's state machine, which tokio otherwise copies on
        // spawn and at each stage change (5% of a cold query's
        // instructions went to those copies).
        tokio::spawn(Box::pin(async move {
            this.lead(lead, qname, qtype, read_l2).await;
        }));
        rx
    }

    /// The answer to `key`, from the resolution in progress for it or
    /// from one run here, in the caller's task. For a caller that is
    /// never cancelled half-way (a UDP miss's task runs to its end): a
    /// task of its own would cost a second spawn, a channel and a wake-up
    /// for every miss. Should the caller be dropped all the same (runtime
    /// shutdown), [`Lead`]'s drop releases the waiters.
    async fn resolve_here(self: &Arc<Self>, key: &[u8], qname: &Name, qtype: RecordType) -> Entry {
        match self.join_or_lead(key) {
            Turn::Join(rx) => rx.await.unwrap_or_else(|_| self.servfail(qname, qtype)),
            Turn::Lead(lead) => self.lead(lead, qname.clone(), qtype, true).await,
        }
    }

    /// Joins the resolution in progress for `key`, or records one, which
    /// the caller must then run.
    fn join_or_lead(self: &Arc<Self>, key: &[u8]) -> Turn {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(waiters) = map.get_mut(key) {
            Metrics::inc(&self.metrics.coalesced);
            let (tx, rx) = oneshot::channel();
            waiters.push(tx);
            return Turn::Join(rx);
        }
        let key: CacheKey = key.into();
        map.insert(key.clone(), Waiters::new());
        Turn::Lead(Lead {
            handler: self.clone(),
            key: Some(key),
            first: None,
        })
    }

    /// Resolves the question `lead` stands for (from L2 first when
    /// `read_l2`), caches it and hands it to every waiter.
    async fn lead(&self, mut lead: Lead, qname: Name, qtype: RecordType, read_l2: bool) -> Entry {
        let Some(key) = lead.key.as_deref() else {
            return self.servfail(&qname, qtype);
        };
        let shared = match (&self.l2, read_l2) {
            (Some(l2), true) => l2.get(key).await,
            _ => None,
        };
        let entry = match shared {
            Some(e) => {
                self.cache.insert(key, e.clone());
                e
            }
            None => {
                let resolver = self.resolver.load_full();
                let s = resolver.resolve(qname.clone(), qtype).await;
                let e = self
                    .cache
                    .store(key, &qname, qtype, s)
                    .unwrap_or_else(|| self.servfail(&qname, qtype));
                if let Some(l2) = &self.l2 {
                    l2.put(key, &e);
                }
                e
            }
        };
        for w in lead.finish() {
            let _ = w.send(entry.clone());
        }
        entry
    }

    /// Replaces the access list (reload).
    pub fn set_allow(&self, allow: Vec<IpNet>) {
        self.allow.store(Arc::new(allow));
    }

    /// Replaces the resolver (reload of `[resolver]`); running resolutions
    /// finish on the old one.
    pub fn set_resolver(&self, resolver: Arc<dyn Resolve>) {
        resolver.set_dnstap(self.dnstap.load_full());
        self.resolver.store(Arc::new(resolver));
    }

    /// Replaces the local zones (SIGHUP reload).
    pub fn set_zones(&self, zones: Arc<LocalZones>) {
        self.zones.store(zones);
    }

    /// Forgets cached answers (and what the resolver learned) for `name`,
    /// its subtree, or everything.
    pub fn flush(&self, name: Option<&Name>, subtree: bool) {
        match name {
            Some(n) => self.cache.flush_name(n, subtree),
            None => self.cache.flush_all(),
        }
        self.resolver.load().flush(name, subtree);
    }

    /// Starts, replaces or (None) stops dnstap logging.
    pub fn set_dnstap(&self, tap: Option<Arc<crate::dnstap::Dnstap>>) {
        self.resolver.load().set_dnstap(tap.clone());
        self.dnstap_on.store(tap.is_some(), Ordering::Relaxed);
        self.dnstap.store(tap);
    }

    /// The dnstap writer in use.
    pub fn dnstap(&self) -> Option<Arc<crate::dnstap::Dnstap>> {
        self.dnstap.load_full()
    }

    /// `control trace`: resolves with the caches bypassed and returns the
    /// walk. The answer is still stored, so clients see what it learned.
    /// None when the resolver cannot trace.
    pub async fn trace(
        &self,
        qname: Name,
        qtype: RecordType,
    ) -> Option<crate::resolve::trace::Trace> {
        let resolver = self.resolver.load_full();
        let (s, steps) = resolver.trace(qname.clone(), qtype).await?;
        let text = |v: &[hickory_proto::rr::Record]| v.iter().map(|r| r.to_string()).collect();
        let trace = crate::resolve::trace::Trace {
            qname: qname.to_string(),
            qtype: qtype.to_string(),
            steps,
            rcode: crate::metrics::RCODES
                .get(usize::from(s.rcode & 0x0f))
                .copied()
                .unwrap_or("?")
                .to_string(),
            answer: text(&s.answer),
            authority: text(&s.authority),
            error: s.ede.as_ref().map(|e| e.text.clone()),
        };
        let key = crate::cache::key_for(&qname, qtype);
        self.cache.store(&key, &qname, qtype, s);
        Some(trace)
    }

    /// What the resolver knows about upstream servers (infra cache).
    pub fn servers(&self) -> Vec<crate::resolve::servers::ServerInfo> {
        self.resolver.load().servers()
    }

    /// Removes `name` (and below when `subtree`), or everything, from the
    /// shared cache; None when there is none.
    pub async fn flush_shared(&self, name: Option<&Name>, subtree: bool) -> Option<String> {
        let l2 = self.l2.as_ref()?;
        Some(match l2.flush(name, subtree).await {
            Ok(n) => format!("ok removed {n} shared (Redis) entries\n"),
            Err(e) => format!("error: {e}\n"),
        })
    }

    /// `stats` text for the control socket.
    pub fn stats(&self) -> String {
        let (entries, bytes) = self.cache.usage();
        let mut s = self.metrics.render(entries, bytes);
        if let Some(l2) = &self.l2 {
            s.push_str(&l2.stats().render());
        }
        s
    }
}

/// Cuts a reply down to header and question with TC=1 (RRL's "slip", and
/// a UDP reply too big for the interface): a real client retries over
/// TCP, a reflection target gets a tiny packet.
pub fn truncate_reply(out: &mut Vec<u8>) {
    let mut c = crate::wire::Cursor::at(out, 12);
    let end = crate::wire::skip_name(&mut c)
        .and_then(|_| c.bytes(4))
        .map(|_| c.pos())
        .unwrap_or(12);
    out.truncate(end);
    if let Some(h) = out.get_mut(2..12) {
        h[0] |= 0x02;
        h[4..10].fill(0);
    }
}

/// Decodes an uncompressed wire name (as kept in a query key).
pub fn wire_to_name(wire: &[u8]) -> Option<Name> {
    let mut d = BinDecoder::new(wire);
    Name::read(&mut d).ok()
}
