//! A stand-in resolver for listener and front-end tests: it answers every
//! question with made-up A records, so no hierarchy is needed.

use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
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
                    r.set_dns_class(DNSClass::IN);
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
