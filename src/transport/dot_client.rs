//! DNS over TLS to one upstream server (RFC 7858 §3; RFC 8310 §8.1
//! strict profile: the server's certificate must chain to a trusted root
//! and name the configured authentication domain name).
//!
//! One TLS connection is kept and reused; queries are pipelined on it with
//! their own message IDs and matched to replies as they arrive, in any
//! order (RFC 7766 §6.2.1.1). When the server closes the connection (its
//! idle timeout), the next exchange opens a new one, and an exchange that
//! lost its connection mid-flight is retried once on a fresh one.
//!
//! Trust anchors are the Mozilla roots of `webpki-roots` by default, or
//! the certificates of a PEM file (a private CA or a self-signed server).

use crate::wire::{skip_name, Cursor};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Mutex, Semaphore};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Where and how to reach the upstream.
#[derive(Debug, Clone)]
pub struct DotClientConfig {
    /// Server address, usually port 853.
    pub server: SocketAddr,
    /// Authentication domain name the certificate must carry (RFC 8310 §8).
    pub name: String,
    /// PEM file of trusted certificates; None = the webpki-roots set.
    pub ca_file: Option<PathBuf>,
    /// Bound on connecting, handshaking, and on each exchange.
    pub timeout: Duration,
    /// Queries in flight on the connection at once.
    pub max_inflight: usize,
}

impl DotClientConfig {
    /// Port 853, a 5-second timeout and 100 queries in flight.
    pub fn new(server: SocketAddr, name: &str) -> DotClientConfig {
        DotClientConfig {
            server,
            name: name.to_string(),
            ca_file: None,
            timeout: Duration::from_secs(5),
            max_inflight: 100,
        }
    }
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum DotError {
    /// The CA file is unusable.
    #[error("{path}: {message}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The name is not a valid DNS name or IP address.
    #[error("{0:?} is not a valid server name")]
    Name(String),
    /// TCP connect failed.
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    /// The TLS handshake failed (certificate not trusted, wrong name ...).
    #[error("TLS handshake with {0}: {1}")]
    Handshake(SocketAddr, std::io::Error),
    /// The query is not a DNS message we can send.
    #[error("query is not a sendable DNS message")]
    BadQuery,
    /// No reply in time.
    #[error("timed out")]
    Timeout,
    /// The connection closed before the reply arrived, twice.
    #[error("connection closed before the reply")]
    Closed,
}

type Pending = HashMap<u16, oneshot::Sender<Vec<u8>>>;

/// What the reader task and the writers share.
struct Shared {
    pending: StdMutex<Pending>,
    closed: AtomicBool,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Marks the connection dead; waiting exchanges see their sender
    /// dropped and retry elsewhere.
    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.pending().clear();
    }
}

/// One open TLS connection.
struct Conn {
    writer: Mutex<WriteHalf<TlsStream<TcpStream>>>,
    shared: Arc<Shared>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A DoT client for one upstream server.
pub struct DotClient {
    cfg: DotClientConfig,
    connector: TlsConnector,
    name: ServerName<'static>,
    conn: Mutex<Option<Arc<Conn>>>,
    inflight: Semaphore,
}

/// Trust anchors from `ca_file`, or the webpki-roots set.
pub fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, DotError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(p) => {
            let err = |message: String| DotError::Ca {
                path: p.to_path_buf(),
                message,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(p)
                .map_err(|e| err(format!("{e:?}")))?
                .collect::<Result<_, _>>()
                .map_err(|e| err(format!("{e:?}")))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(err("no usable CERTIFICATE in the file".into()));
            }
        }
    }
    Ok(roots)
}

impl DotClient {
    /// The server this client talks to.
    pub fn server(&self) -> SocketAddr {
        self.cfg.server
    }

    /// Builds a client; connects lazily on the first exchange.
    pub fn new(cfg: DotClientConfig) -> Result<DotClient, DotError> {
        let roots = root_store(cfg.ca_file.as_deref())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| DotError::Name(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![super::tls::ALPN_DOT.to_vec()];
        let name =
            ServerName::try_from(cfg.name.clone()).map_err(|_| DotError::Name(cfg.name.clone()))?;
        Ok(DotClient {
            inflight: Semaphore::new(cfg.max_inflight.max(1)),
            cfg,
            connector: TlsConnector::from(Arc::new(tls)),
            name,
            conn: Mutex::new(None),
        })
    }

    /// Sends `query` (a complete DNS message) and returns the matching
    /// reply, with the query's own ID.
    pub async fn exchange(&self, query: &[u8]) -> Result<Vec<u8>, DotError> {
        if query.len() < 12 || query.len() > u16::MAX as usize {
            return Err(DotError::BadQuery);
        }
        let _slot = self
            .inflight
            .acquire()
            .await
            .map_err(|_| DotError::Closed)?;
        let deadline = tokio::time::Instant::now() + self.cfg.timeout;
        for _ in 0..2 {
            let conn = tokio::time::timeout_at(deadline, self.connection())
                .await
                .map_err(|_| DotError::Timeout)??;
            match tokio::time::timeout_at(deadline, self.try_on(&conn, query)).await {
                Err(_) => return Err(DotError::Timeout),
                Ok(Some(reply)) => return Ok(reply),
                // Lost the connection: retry once on a fresh one.
                Ok(None) => continue,
            }
        }
        Err(DotError::Closed)
    }

    /// The open connection, or a new one.
    async fn connection(&self) -> Result<Arc<Conn>, DotError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.shared.closed.load(Ordering::Relaxed) {
                return Ok(c.clone());
            }
        }
        let addr = self.cfg.server;
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| DotError::Connect(addr, e))?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .connector
            .connect(self.name.clone(), tcp)
            .await
            .map_err(|e| DotError::Handshake(addr, e))?;
        let (rd, wr) = tokio::io::split(tls);
        let shared = Arc::new(Shared {
            pending: StdMutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        });
        let reader = tokio::spawn(read_replies(rd, shared.clone()));
        let c = Arc::new(Conn {
            writer: Mutex::new(wr),
            shared,
            reader,
        });
        *slot = Some(c.clone());
        Ok(c)
    }

    /// One attempt on `conn`; None when the connection failed under it.
    async fn try_on(&self, conn: &Conn, query: &[u8]) -> Option<Vec<u8>> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut p = conn.shared.pending();
            if conn.shared.closed.load(Ordering::Relaxed) {
                return None;
            }
            // An ID unique on this connection: replies are matched by it.
            let mut id: u16 = rand::random();
            while p.contains_key(&id) {
                id = id.wrapping_add(1);
            }
            p.insert(id, tx);
            id
        };
        let mut frame = Vec::with_capacity(query.len() + 2);
        frame.extend_from_slice(&(query.len() as u16).to_be_bytes());
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(query.get(2..).unwrap_or(&[]));
        let sent = {
            let mut w = conn.writer.lock().await;
            w.write_all(&frame).await.is_ok() && w.flush().await.is_ok()
        };
        if !sent {
            conn.shared.close();
            return None;
        }
        let mut reply = rx.await.ok()?;
        if !same_question(query, &reply) {
            // A server answering another question is broken; treat the
            // connection as unusable rather than returning a wrong answer.
            conn.shared.close();
            return None;
        }
        if let (Some(dst), Some(src)) = (reply.get_mut(0..2), query.get(0..2)) {
            dst.copy_from_slice(src);
        }
        Some(reply)
    }
}

/// Reads framed replies and hands each to the exchange waiting for its ID.
async fn read_replies(mut rd: ReadHalf<TlsStream<TcpStream>>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let mut len = [0u8; 2];
        if rd.read_exact(&mut len).await.is_err() {
            break;
        }
        let n = u16::from_be_bytes(len) as usize;
        let Some(msg) = buf.get_mut(..n) else { break };
        if n < 12 || rd.read_exact(msg).await.is_err() {
            break;
        }
        let id = u16::from_be_bytes([msg[0], msg[1]]);
        let waiter = shared.pending().remove(&id);
        if let Some(w) = waiter {
            let _ = w.send(msg.to_vec());
        }
        // A reply nobody waits for (timed out) is dropped.
    }
    shared.close();
}

/// Whether the reply is a response to the query's question (names compare
/// case-insensitively).
fn same_question(query: &[u8], reply: &[u8]) -> bool {
    let end = |m: &[u8]| {
        let mut c = Cursor::at(m, 12);
        skip_name(&mut c)?;
        c.bytes(4)?;
        Some(c.pos())
    };
    let is_response = reply.get(2).is_some_and(|f| f & 0x80 != 0);
    match (end(query), end(reply)) {
        (Some(q), Some(r)) if q == r && is_response => match (query.get(12..q), reply.get(12..r)) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        },
        _ => false,
    }
}
