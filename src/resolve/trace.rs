//! Resolution traces for `resolvd control trace NAME [TYPE]`: one
//! resolution with the caches bypassed, every upstream exchange recorded
//! (server, zone cut, question sent and whether it was minimised
//! (RFC 9156), RTT, RCODE, what was learned), then the final answer.

use hickory_proto::rr::{Name, RecordType};
use serde::Serialize;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// One upstream exchange of a traced resolution.
#[derive(Debug, Clone, Serialize)]
pub struct TraceStep {
    /// The server asked.
    pub server: IpAddr,
    /// The zone cut it was asked as a server of.
    pub zone: String,
    /// The question sent.
    pub qname: String,
    /// Its type.
    pub qtype: String,
    /// Whether the name was minimised (RFC 9156) below the one looked up.
    pub minimised: bool,
    /// Round trip, when a reply came.
    pub rtt_ms: Option<f64>,
    /// The reply's RCODE, when a reply came.
    pub rcode: Option<String>,
    /// What the exchange taught: `referral to ZONE`, `answer`, `NXDOMAIN`,
    /// `NODATA`, `lame`, `timeout`, `unreachable`, ...
    pub learned: String,
}

/// A finished trace.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    /// The question traced.
    pub qname: String,
    /// Its type.
    pub qtype: String,
    /// Every upstream exchange, in the order sent.
    pub steps: Vec<TraceStep>,
    /// The final RCODE.
    pub rcode: String,
    /// The final answer's records, in presentation format.
    pub answer: Vec<String>,
    /// The authority section (the SOA of a negative answer).
    pub authority: Vec<String>,
    /// The extended error of a failure, when there is one.
    pub error: Option<String>,
}

impl Trace {
    /// The human-readable form `control trace` prints.
    pub fn render(&self) -> String {
        let mut out = format!("trace {} {}\n", self.qname, self.qtype);
        for (i, s) in self.steps.iter().enumerate() {
            out.push_str(&format!(
                "{:>3}  {:<15}  zone {:<20} {} {}{}  {}  {}  -> {}\n",
                i + 1,
                s.server.to_string(),
                s.zone,
                s.qname,
                s.qtype,
                if s.minimised { " (minimised)" } else { "" },
                s.rtt_ms.map_or("-".to_string(), |r| format!("{r:.1} ms")),
                s.rcode.as_deref().unwrap_or("-"),
                s.learned
            ));
        }
        out.push_str(&format!("answer: {}", self.rcode));
        if let Some(e) = &self.error {
            out.push_str(&format!(" ({e})"));
        }
        out.push('\n');
        for r in self.answer.iter().chain(&self.authority) {
            out.push_str(&format!("  {r}\n"));
        }
        out
    }
}

/// What a traced resolution collects as it goes; lives in its budget.
#[derive(Debug, Default)]
pub(crate) struct TraceLog {
    inner: Mutex<LogInner>,
}

#[derive(Debug, Default)]
struct LogInner {
    steps: Vec<TraceStep>,
    /// The names being looked up, innermost last (nested NS lookups).
    looking_up: Vec<Name>,
}

impl TraceLog {
    fn with<T>(&self, f: impl FnOnce(&mut LogInner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A lookup of `name` starts.
    pub(crate) fn enter(&self, name: &Name) {
        self.with(|l| l.looking_up.push(name.clone()));
    }

    /// The innermost lookup ended.
    pub(crate) fn leave(&self) {
        self.with(|l| {
            l.looking_up.pop();
        });
    }

    /// Records one exchange.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn exchange(
        &self,
        server: IpAddr,
        zone: &Name,
        qname: &Name,
        qtype: RecordType,
        rtt: Option<Duration>,
        rcode: Option<String>,
        learned: String,
    ) {
        self.with(|l| {
            let minimised = l
                .looking_up
                .last()
                .is_some_and(|n| n.num_labels() > qname.num_labels());
            l.steps.push(TraceStep {
                server,
                zone: zone.to_string(),
                qname: qname.to_string(),
                qtype: qtype.to_string(),
                minimised,
                rtt_ms: rtt.map(|d| d.as_secs_f64() * 1000.0),
                rcode,
                learned,
            });
        });
    }

    /// The steps recorded.
    pub(crate) fn take(&self) -> Vec<TraceStep> {
        self.with(|l| std::mem::take(&mut l.steps))
    }
}

/// The RCODE mnemonic (NOERROR, NXDOMAIN, ...) for a trace line.
pub(crate) fn rcode_name(code: u16) -> String {
    crate::metrics::RCODES
        .get(usize::from(code & 0x0f))
        .map_or_else(|| code.to_string(), |n| n.to_string())
}
