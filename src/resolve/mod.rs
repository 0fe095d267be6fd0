//! Recursive resolution: the [`Resolve`] trait the handler calls on a cache
//! miss, and the iterative resolver that implements it by walking the
//! hierarchy from the root (RFC 1034 §5.3.3).
//!
//! Submodules: `iterate` (the walk), `forward` (forward and stub zones),
//! `classify` (what one reply says),
//! `upstream` (one exchange with one server), `decode` (its reply,
//! decoded lean), `servers` (per-server RTT
//! and lame/dead marks), `store` (the RRsets and delegations the walk
//! learns).

use crate::wire::answer::{Ede, Sections};
use crate::wire::query::rcode;
use hickory_proto::rr::{Name, RecordType};
use std::future::Future;
use std::pin::Pin;

mod aggressive;
mod classify;
mod decode;
pub mod forward;
pub mod iterate;
pub mod secure;
pub mod servers;
pub mod store;
pub mod trace;
pub mod upstream;

/// A boxed future, so resolvers can sit behind `dyn Resolve`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Answers a question the cache could not. Implementations enforce their
/// own deadline and return SERVFAIL sections rather than hang.
pub trait Resolve: Send + Sync + 'static {
    /// Resolves (`qname`, `qtype`, IN).
    fn resolve(&self, qname: Name, qtype: RecordType) -> BoxFuture<'_, Sections>;

    /// Forgets what was learned about `name` (and below when `subtree`),
    /// or everything when `name` is None. Called by `resolvd control flush`.
    fn flush(&self, _name: Option<&Name>, _subtree: bool) {}

    /// The infra cache: what is known about each upstream address.
    /// Resolvers without one return nothing.
    fn servers(&self) -> Vec<servers::ServerInfo> {
        Vec::new()
    }

    /// Starts or stops dnstap logging of upstream traffic (RESOLVER_*).
    fn set_dnstap(&self, _tap: Option<std::sync::Arc<crate::dnstap::Dnstap>>) {}

    /// Resolves with the caches bypassed, recording every upstream
    /// exchange (`control trace`). None when the resolver cannot trace.
    fn trace(
        &self,
        _qname: Name,
        _qtype: RecordType,
    ) -> BoxFuture<'_, Option<(Sections, Vec<trace::TraceStep>)>> {
        Box::pin(async { None })
    }
}

/// A resolver that fails everything: for listener tests and for running
/// resolvd as a pure authoritative server for its local zones.
pub struct Refuse;

impl Resolve for Refuse {
    fn resolve(&self, _qname: Name, _qtype: RecordType) -> BoxFuture<'_, Sections> {
        Box::pin(async {
            Sections::error(
                rcode::SERVFAIL,
                Some(Ede {
                    code: 23,
                    text: "recursion disabled".into(),
                }),
            )
        })
    }
}
