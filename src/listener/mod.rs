//! Sockets: UDP (one SO_REUSEPORT socket per worker, each served by a
//! thread of its own) and TCP (RFC 7766), both feeding the
//! [`crate::handler::Handler`].
//!
//! Each socket is bound to one configured address, so replies leave from
//! the address the query arrived on.

pub mod tcp;
pub mod udp;

use std::net::SocketAddr;

/// A socket that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {proto} {addr}: {source} (hint: port 53 needs root or CAP_NET_BIND_SERVICE; try --listen 127.0.0.1:5353)")]
pub struct BindError {
    /// "udp" or "tcp".
    pub proto: &'static str,
    /// The address.
    pub addr: SocketAddr,
    /// The OS error.
    pub source: std::io::Error,
}
