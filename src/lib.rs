//! resolvd: a recursive caching DNS resolver with local load-balanced and
//! geo-routed zones.
//!
//! Data flows one way: [`listener`] → [`wire::query`] → [`handler`] (local
//! [`zones`], [`cache`], then [`cache_l2`] on Redis) → [`resolve`] (forward
//! zones, or iterate → upstream) → cache →
//! [`wire::answer`] → listener.
#![warn(missing_docs)]

pub mod allocator;
pub mod cache;
pub mod cache_l2;
pub mod config;
pub mod control;
pub mod cookies;
pub mod daemon;
pub mod dnstap;
pub mod exporter;
#[doc(hidden)]
pub mod fuzz;
pub mod handler;
pub mod listener;
pub mod metrics;
pub mod persist;
pub mod ratelimit;
pub mod resolve;
pub mod root_hints;
pub mod sched;
pub mod transport;
pub mod validate;
pub mod wire;
pub mod zones;
