//! A stand-in resolver for listener and front-end tests: it answers every
//! question with made-up A records, so no hierarchy is needed.

use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use resolvd::config::Config;
use resolvd::resolve::{BoxFuture, Resolve};
use resolvd::wire::answer::Sections;
use std::net::Ipv4Addr;
use std::time::Duration;

/// Answers every A question with `n` addresses, after `delay_ms`.
pub struct Fixed {
    pub n: u8,
    pub delay_ms: u64,
}

impl Resolve for Fixed {
    fn resolve(&self, qname: Name, _qtype: RecordType) -> BoxFuture<'_, Sections> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
            let answer = (1..=self.n)
                .map(|i| {
                    let mut r = Record::from_rdata(
                        qname.clone(),
                        300,
                        RData::A(A(Ipv4Addr::new(192, 0, 2, i))),
                    );
                    r.dns_class = DNSClass::IN;
                    r
                })
                .collect();
            Sections {
                answer,
                ..Sections::default()
            }
        })
    }
}

/// A configuration for resolvd in front of a stand-in resolver: one
/// listener on 127.0.0.1 with a free port, two workers, no control socket.
pub fn config() -> Config {
    let mut c = Config::embedded_default();
    c.server.listen = vec!["127.0.0.1:0".parse().expect("an address")];
    c.server.threads = 2;
    c.control.enabled = false;
    // The stand-ins answer names under test., a special-use TLD.
    c.resolver.special_use_exclude = vec!["test.".into()];
    // Stand-ins are not signed.
    c.dnssec.validation = false;
    c
}
