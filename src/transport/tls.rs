//! TLS for the encrypted listeners, and the DNS over TLS listener itself
//! (RFC 7858; RFC 8310 §8.1 ALPN "dot").
//!
//! Certificates come from PEM files (`[tls] cert`, `key`) and are held
//! behind a swappable resolver, so SIGHUP installs a renewed certificate
//! for every new handshake without a restart and without dropping the
//! session-ticket key: clients resume across a renewal. rustls with the
//! ring provider does all cryptography; TLS 1.2 and 1.3 are offered.
//!
//! A DoT connection is the RFC 7766 loop of `listener::tcp` run inside TLS
//! (RFC 7858 §3.3): same framing, pipelining, out-of-order answers, idle
//! timeout and the connection cap shared with TCP.

use super::proxy::ProxyPolicy;
use super::{accept_loop, ListenerShared};
use crate::handler::Transport;
use crate::listener::tcp;
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{HandshakeKind, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// ALPN protocol ID for DNS over TLS (RFC 8310 §8.1 registers "dot").
pub const ALPN_DOT: &[u8] = b"dot";

/// A certificate or key that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is missing, unreadable, or holds no certificate.
    #[error("{path}: {message}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The key file is missing, unreadable, holds no key, or a key that
    /// does not match the certificate.
    #[error("{path}: {message}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// rustls refused the setup (a bug rather than a configuration error).
    #[error("TLS setup: {0}")]
    Setup(String),
    /// A TLS listener is configured without `[tls]`.
    #[error("tls_listen and https_listen need a [tls] section with cert and key")]
    NotConfigured,
}

impl TlsError {
    /// The configuration key the error is about, for located messages.
    pub fn key_name(&self) -> &'static str {
        match self {
            TlsError::Cert { .. } => "cert",
            TlsError::Key { .. } => "key",
            TlsError::Setup(_) | TlsError::NotConfigured => "tls_listen",
        }
    }
}

/// The ring provider, the only one compiled in.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain and private key (PKCS#8, SEC1 or
/// PKCS#1) and checks that they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_err = |message: String| TlsError::Cert {
        path: cert.to_path_buf(),
        message,
    };
    let key_err = |message: String| TlsError::Key {
        path: key.to_path_buf(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(pem_message(&e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(pem_message(&e)))?;
    if chain.is_empty() {
        return Err(cert_err("no PEM CERTIFICATE in the file".into()));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| key_err(pem_message(&e)))?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| key_err(format!("unusable private key: {e}")))?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        // Inconsistent means: the key is not the certificate's.
        Err(rustls::Error::InconsistentKeys(_)) => {
            Err(key_err("does not match the certificate".into()))
        }
        // Unknown (the public key could not be compared) is not an error.
        _ => Ok(Arc::new(ck)),
    }
}

fn pem_message(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error as E;
    match e {
        E::Io(io) => format!("cannot read: {io}"),
        E::NoItemsFound => "no PEM item of the expected kind in the file".into(),
        other => format!("bad PEM: {other:?}"),
    }
}

/// Serves whichever certificate was loaded last.
#[derive(Debug)]
struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The server-side TLS state of a daemon: one certificate, one ticket
/// key, and a configuration per ALPN set.
pub struct Tls {
    store: Arc<CertStore>,
    /// For DoT listeners (ALPN "dot").
    pub dot: Arc<ServerConfig>,
    /// For DoH listeners (ALPN "h2", "http/1.1").
    pub doh: Arc<ServerConfig>,
}

impl Tls {
    /// Loads the certificate and key and builds both configurations.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let store = Arc::new(CertStore {
            current: ArcSwap::new(load_certified_key(cert, key)?),
        });
        // One ticket key for both listeners and every reload; rustls
        // rotates it itself (every 6 hours, accepting the previous one).
        let ticketer =
            rustls::crypto::ring::Ticketer::new().map_err(|e| TlsError::Setup(e.to_string()))?;
        // Stateful resumption too, for TLS 1.2 clients that do not do
        // tickets; the cache is bounded.
        let cache = ServerSessionMemoryCache::new(4096);
        let build = |alpn: Vec<Vec<u8>>| -> Result<Arc<ServerConfig>, TlsError> {
            let mut c = ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| TlsError::Setup(e.to_string()))?
                .with_no_client_auth()
                .with_cert_resolver(store.clone());
            c.alpn_protocols = alpn;
            c.ticketer = ticketer.clone();
            c.session_storage = cache.clone();
            Ok(Arc::new(c))
        };
        Ok(Tls {
            dot: build(vec![ALPN_DOT.to_vec()])?,
            doh: build(vec![b"h2".to_vec(), b"http/1.1".to_vec()])?,
            store,
        })
    }

    /// Installs a new certificate and key for the handshakes to come; on
    /// error the old ones stay.
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        let ck = load_certified_key(cert, key)?;
        self.store.current.store(ck);
        Ok(())
    }
}

/// Runs the TLS handshake (bounded by the idle timeout, so a client that
/// stalls mid-handshake holds its slot for bounded time) and counts it.
pub(super) async fn handshake(
    config: &Arc<ServerConfig>,
    stream: TcpStream,
    shared: &ListenerShared,
) -> Option<TlsStream<TcpStream>> {
    let m = &shared.handler.metrics;
    let acceptor = TlsAcceptor::from(config.clone());
    match tokio::time::timeout(shared.limits.idle_timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => {
            Metrics::inc(&m.tls_handshakes);
            if s.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed) {
                Metrics::inc(&m.tls_resumed);
            }
            Some(s)
        }
        _ => {
            Metrics::inc(&m.tls_failures);
            None
        }
    }
}

/// Accepts DoT connections until shutdown.
pub async fn serve_dot(
    listener: TcpListener,
    tls: Arc<Tls>,
    proxy: Arc<ProxyPolicy>,
    shared: ListenerShared,
) {
    let shared2 = shared.clone();
    accept_loop(
        listener,
        proxy,
        shared,
        Arc::new(move |stream, client| {
            let tls = tls.clone();
            let shared = shared2.clone();
            async move {
                let Some(s) = handshake(&tls.dot, stream, &shared).await else {
                    return;
                };
                let (rd, wr) = tokio::io::split(s);
                tcp::connection(
                    rd,
                    wr,
                    client,
                    Transport::Dot,
                    shared.handler.clone(),
                    shared.limits,
                    shared.shutdown.clone(),
                    shared.tasks.clone(),
                )
                .await;
            }
        }),
    )
    .await
}
