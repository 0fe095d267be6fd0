//! dnstap query logging (`[dnstap] socket`): CLIENT_QUERY and
//! CLIENT_RESPONSE messages, and with `resolver = true` RESOLVER_QUERY and
//! RESOLVER_RESPONSE (dnstap.proto), written as Frame Streams to a
//! unix socket that a collector (fstrm_capture, a dnstap reader) listens
//! on.
//!
//! Logging never slows answering: the query path copies the packet into a
//! bounded queue with `try_send` and moves on; when the queue is full the
//! message is dropped and counted (`resolvd_dnstap_dropped_messages_total`).
//! One writer task encodes and writes. When no reader is there, or it goes
//! away, the writer drops what is queued (counted) and reconnects every
//! `reconnect_interval`, so a restarted collector gets fresh traffic.

mod fstrm;
pub mod proto;

use crate::config::DnstapConfig;
use crate::handler::Transport;
use crate::metrics::Metrics;
use prost::Message as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long the handshake with a reader, and the STOP/FINISH exchange at
/// shutdown, may take: a reader that accepts the connection and then says
/// nothing must not wedge the writer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes of frames written in one go: batching keeps system calls down
/// under load, the cap keeps one write's latency bounded.
const BATCH_BYTES: usize = 64 * 1024;

/// One message on its way to the writer.
struct Event {
    kind: proto::MessageType,
    /// The client (CLIENT_*) or the upstream server (RESOLVER_*).
    client: SocketAddr,
    transport: Transport,
    at: SystemTime,
    /// The query (CLIENT_QUERY) or the reply (CLIENT_RESPONSE).
    wire: Vec<u8>,
}

/// The query path's handle on the dnstap writer.
pub struct Dnstap {
    tx: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
    client: bool,
    resolver: bool,
    socket: PathBuf,
}

impl Dnstap {
    /// Starts the writer task for `cfg` (which must name a socket); it
    /// stops, after sending STOP to its reader, at `shutdown`.
    pub fn start(
        cfg: &DnstapConfig,
        socket: &Path,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Arc<Dnstap> {
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let writer = Writer {
            path: socket.to_path_buf(),
            identity: (!cfg.identity.is_empty()).then(|| cfg.identity.as_bytes().to_vec()),
            reconnect: cfg.reconnect_interval.0,
            metrics: metrics.clone(),
        };
        tasks.spawn(writer.run(rx, shutdown));
        Arc::new(Dnstap {
            tx,
            metrics,
            client: cfg.client,
            resolver: cfg.resolver,
            socket: socket.to_path_buf(),
        })
    }

    /// The reader's socket this writer connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn queue(&self, kind: proto::MessageType, wire: &[u8], client: SocketAddr, t: Transport) {
        use proto::MessageType::*;
        let wanted = match kind {
            ClientQuery | ClientResponse => self.client,
            ResolverQuery | ResolverResponse => self.resolver,
        };
        if !wanted {
            return;
        }
        let ev = Event {
            kind,
            client,
            transport: t,
            at: SystemTime::now(),
            wire: wire.to_vec(),
        };
        if self.tx.try_send(ev).is_err() {
            Metrics::inc(&self.metrics.dnstap_dropped);
        }
    }

    /// Logs a query as read from a client.
    #[inline]
    pub fn client_query(&self, pkt: &[u8], client: SocketAddr, t: Transport) {
        self.queue(proto::MessageType::ClientQuery, pkt, client, t);
    }

    /// Logs a reply about to be sent to a client.
    #[inline]
    pub fn client_response(&self, reply: &[u8], client: SocketAddr, t: Transport) {
        self.queue(proto::MessageType::ClientResponse, reply, client, t);
    }

    /// Whether upstream traffic is logged (so the caller can skip
    /// encoding a reply nobody wants).
    pub fn logs_resolver(&self) -> bool {
        self.resolver
    }

    /// Logs a query sent to an upstream server.
    pub fn resolver_query(&self, query: &[u8], server: SocketAddr, t: Transport) {
        self.queue(proto::MessageType::ResolverQuery, query, server, t);
    }

    /// Logs a reply received from an upstream server.
    pub fn resolver_response(&self, reply: &[u8], server: SocketAddr, t: Transport) {
        self.queue(proto::MessageType::ResolverResponse, reply, server, t);
    }
}

/// Encodes one event as a `dnstap.Dnstap` protobuf.
fn encode(ev: &Event, identity: Option<&[u8]>) -> Vec<u8> {
    use proto::{MessageType, SocketFamily, SocketProtocol};
    let (family, addr) = match ev.client.ip() {
        IpAddr::V4(a) => (SocketFamily::Inet, a.octets().to_vec()),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => (SocketFamily::Inet, v4.octets().to_vec()),
            None => (SocketFamily::Inet6, a.octets().to_vec()),
        },
    };
    let protocol = match ev.transport {
        Transport::Udp => SocketProtocol::Udp,
        Transport::Tcp => SocketProtocol::Tcp,
        Transport::Dot => SocketProtocol::Dot,
        Transport::Doh => SocketProtocol::Doh,
    };
    let since = ev.at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (sec, nsec) = (Some(since.as_secs()), Some(since.subsec_nanos()));
    let mut m = proto::Message {
        r#type: ev.kind as i32,
        socket_family: Some(family as i32),
        socket_protocol: Some(protocol as i32),
        ..Default::default()
    };
    let resolver = matches!(
        ev.kind,
        MessageType::ResolverQuery | MessageType::ResolverResponse
    );
    // The peer is the querier of a client message and the responder of
    // a resolver one.
    if resolver {
        m.response_address = Some(addr);
        m.response_port = Some(u32::from(ev.client.port()));
    } else {
        m.query_address = Some(addr);
        m.query_port = Some(u32::from(ev.client.port()));
    }
    if matches!(
        ev.kind,
        MessageType::ClientQuery | MessageType::ResolverQuery
    ) {
        m.query_time_sec = sec;
        m.query_time_nsec = nsec;
        m.query_message = Some(ev.wire.clone());
    } else {
        m.response_time_sec = sec;
        m.response_time_nsec = nsec;
        m.response_message = Some(ev.wire.clone());
    }
    proto::Dnstap {
        identity: identity.map(<[u8]>::to_vec),
        version: Some(format!("resolvd {}", env!("CARGO_PKG_VERSION")).into_bytes()),
        r#type: proto::DnstapType::Message as i32,
        message: Some(m),
    }
    .encode_to_vec()
}

/// The task that owns the connection to the reader.
struct Writer {
    path: PathBuf,
    identity: Option<Vec<u8>>,
    reconnect: Duration,
    metrics: Arc<Metrics>,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<Event>, shutdown: CancellationToken) {
        let mut logged_down = false;
        loop {
            let mut stream = tokio::select! {
                _ = shutdown.cancelled() => return,
                s = self.connect() => match s {
                    Ok(s) => s,
                    Err(e) => {
                        if !logged_down {
                            tracing::warn!("dnstap: no reader at {} ({e}); retrying every {} ms",
                                self.path.display(), self.reconnect.as_millis());
                            logged_down = true;
                        }
                        // Nobody to give them to: what queued up is lost.
                        while rx.try_recv().is_ok() {
                            Metrics::inc(&self.metrics.dnstap_dropped);
                        }
                        // A reload replaced or removed this writer.
                        if rx.is_closed() {
                            return;
                        }
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(self.reconnect) => continue,
                        }
                    }
                },
            };
            tracing::info!("dnstap: writing to {}", self.path.display());
            logged_down = false;
            if self.pump(&mut stream, &mut rx, &shutdown).await {
                // Shutdown: flush what is queued, then STOP/FINISH.
                let mut buf = Vec::new();
                let mut n = 0u64;
                while let Ok(ev) = rx.try_recv() {
                    fstrm::push_data_frame(&encode(&ev, self.identity.as_deref()), &mut buf);
                    n += 1;
                }
                let done = async {
                    use tokio::io::AsyncWriteExt;
                    stream.write_all(&buf).await?;
                    self.metrics
                        .dnstap_sent
                        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    fstrm::finish(&mut stream).await
                };
                if let Ok(Err(e)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, done).await {
                    tracing::debug!("dnstap: closing: {e}");
                }
                return;
            }
            tracing::warn!(
                "dnstap: reader at {} went away; reconnecting",
                self.path.display()
            );
        }
    }

    async fn connect(&self) -> std::io::Result<UnixStream> {
        let mut s = UnixStream::connect(&self.path).await?;
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, fstrm::handshake(&mut s)).await {
            Ok(r) => r.map(|()| s),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "fstrm handshake timed out",
            )),
        }
    }

    /// Writes events until shutdown (true) or a write error (false).
    async fn pump(
        &self,
        stream: &mut UnixStream,
        rx: &mut mpsc::Receiver<Event>,
        shutdown: &CancellationToken,
    ) -> bool {
        use tokio::io::AsyncWriteExt;
        let mut buf = Vec::with_capacity(BATCH_BYTES);
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return true,
                ev = rx.recv() => match ev {
                    Some(ev) => ev,
                    None => return true,
                },
            };
            buf.clear();
            fstrm::push_data_frame(&encode(&first, self.identity.as_deref()), &mut buf);
            let mut n = 1u64;
            while buf.len() < BATCH_BYTES {
                let Ok(ev) = rx.try_recv() else { break };
                fstrm::push_data_frame(&encode(&ev, self.identity.as_deref()), &mut buf);
                n += 1;
            }
            if stream.write_all(&buf).await.is_err() {
                self.metrics
                    .dnstap_dropped
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                return false;
            }
            self.metrics
                .dnstap_sent
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_query_encodes_with_address_port_protocol_and_wire() {
        let ev = Event {
            kind: proto::MessageType::ClientQuery,
            client: "[::ffff:192.0.2.7]:5300".parse().unwrap(),
            transport: Transport::Tcp,
            at: UNIX_EPOCH + Duration::new(1_700_000_000, 5),
            wire: vec![1, 2, 3],
        };
        let d = proto::Dnstap::decode(&encode(&ev, Some(b"ns1"))[..]).unwrap();
        assert_eq!(d.identity.as_deref(), Some(&b"ns1"[..]));
        let m = d.message.unwrap();
        assert_eq!(m.r#type, proto::MessageType::ClientQuery as i32);
        assert_eq!(m.socket_family, Some(proto::SocketFamily::Inet as i32));
        assert_eq!(m.socket_protocol, Some(proto::SocketProtocol::Tcp as i32));
        assert_eq!(m.query_address.as_deref(), Some(&[192, 0, 2, 7][..]));
        assert_eq!(m.query_port, Some(5300));
        assert_eq!(m.query_time_sec, Some(1_700_000_000));
        assert_eq!(m.query_time_nsec, Some(5));
        assert_eq!(m.query_message.as_deref(), Some(&[1, 2, 3][..]));
        assert_eq!(m.response_message, None);
    }
}
