//! Starting resolvd in-process for tests: on 127.0.0.1 with a free port,
//! pointed at a `Sim` (its root hints, its port, loopback upstreams allowed).

use super::Sim;
use resolvd::config::{Config, Dur};
use resolvd::daemon::Daemon;
use std::net::SocketAddr;

/// A configuration for a resolvd that resolves through `sim`.
pub fn config_for(sim: &Sim) -> Config {
    let mut cfg = Config::embedded_default();
    cfg.server.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.server.threads = 2;
    cfg.control.enabled = false;
    cfg.resolver.root_hints = Some(sim.root_hints_path().to_path_buf());
    cfg.resolver.query_loopback = true;
    cfg.resolver.upstream_port = sim.port();
    // The simulated hierarchy lives under the special-use TLD test.
    cfg.resolver.special_use_exclude = vec!["test.".into()];
    // Simulated servers answer in microseconds; short tries keep the
    // fault tests quick without changing what they exercise.
    cfg.resolver.initial_timeout = Dur::millis(300);
    // The simulated hierarchy is unsigned, and the built-in root anchors
    // would make all of it bogus; DNSSEC tests sign their own hierarchy
    // and turn validation on with its anchor.
    cfg.dnssec.validation = false;
    cfg
}

/// Starts resolvd with `cfg`; panics with the start error.
pub async fn start(cfg: &Config) -> (Daemon, SocketAddr) {
    let d = Daemon::start(cfg).await.expect("resolvd starts");
    let addr = d.local_addrs()[0];
    (d, addr)
}

/// A root zone served from 127.`n`.0.1 that delegates each `(tld, host)`
/// to `ns1.<tld>` at 127.`n`.0.`host`, with glue.
pub fn root_zone(n: u8, tlds: &[(&str, u8)]) -> String {
    let mut z = format!(
        "$ORIGIN .
$TTL 86400
@ SOA a.root-servers.test. hostmaster.test. 1 3600 600 86400 300
@ NS a.root-servers.test.
a.root-servers.test. A 127.{n}.0.1
"
    );
    for (tld, host) in tlds {
        z.push_str(&format!(
            "{tld}. NS ns1.{tld}.\nns1.{tld}. A 127.{n}.0.{host}\n"
        ));
    }
    z
}
