//! A DNS-over-TLS server for tests that need one upstream: a resolvd with
//! the fixed stand-in resolver behind a DoT listener, and a CA made in the
//! test (rcgen) whose certificate for `dns.test` it serves.

use super::fixed;
use resolvd::config::{Config, TlsConfig};
use resolvd::daemon::Daemon;
use resolvd::metrics::Metrics;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// A CA and a certificate for `dns.test` signed by it, as PEM files.
pub struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    pub fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ca_key) = super::pki::ca("forward test CA");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        let (c, k) = super::pki::leaf(&["dns.test"], &ca, &ca_key);
        std::fs::write(dir.path().join("cert.pem"), c.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), k.serialize_pem()).unwrap();
        Certs { dir }
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }
}

/// A resolvd serving DoT on 127.`n`.1.1 with the `dns.test` certificate,
/// answering every question with 192.0.2.1 (the fixed stand-in resolver).
pub async fn dot_server(certs: &Certs, n: u8) -> (Daemon, SocketAddr) {
    let mut c: Config = fixed::config();
    c.server.listen = vec![format!("127.{n}.1.1:0").parse().unwrap()];
    c.server.tls_listen = vec![format!("127.{n}.1.1:0").parse().unwrap()];
    c.tls = Some(TlsConfig {
        cert: Some(certs.path("cert.pem")),
        key: Some(certs.path("key.pem")),
    });
    let d = Daemon::start_with(
        &c,
        Arc::new(fixed::Fixed { n: 1, delay_ms: 0 }),
        Arc::new(Metrics::default()),
    )
    .await
    .expect("DoT server starts");
    let dot = d.tls_addrs()[0];
    (d, dot)
}
