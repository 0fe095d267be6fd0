//! Encrypted transports end to end: DNS over TLS (framing, pipelining,
//! session resumption, padding, idle timeout, the shared connection cap,
//! certificate reload), DNS over HTTPS over HTTP/2 and HTTP/1.1 (GET, POST,
//! every error status, Cache-Control, one finished answer per TLS record
//! for dnsperf), PROXY protocol v2, the DoT client against an in-test TLS
//! server, and kdig as an independent client.
//!
//! Certificates are made in the test with rcgen: a CA and a leaf for
//! `localhost` and 127.0.0.1 signed by it. Everything runs on loopback.

mod support;

use base64::Engine;
use bytes::Bytes;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use resolvd::config::{Config, Dur, TlsConfig};
use resolvd::daemon::Daemon;
use resolvd::handler::Transport;
use resolvd::metrics::Metrics;
use resolvd::resolve::{BoxFuture, Resolve};
use resolvd::transport::dot_client::{DotClient, DotClientConfig, DotError};
use resolvd::transport::proxy;
use resolvd::wire::answer::{Sections, PAD_BLOCK};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, HandshakeKind, RootCertStore};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::make_query;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const T: Duration = Duration::from_secs(5);

/// Answers every A question with 192.0.2.1 (TTL 300); names starting with
/// "slow" take 300 ms, so pipelined answers come back out of order.
struct Fixed;

impl Resolve for Fixed {
    fn resolve(&self, qname: Name, _qtype: RecordType) -> BoxFuture<'_, Sections> {
        Box::pin(async move {
            if qname.to_ascii().starts_with("slow") {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let mut r = Record::from_rdata(qname, 300, RData::A(A(Ipv4Addr::new(192, 0, 2, 1))));
            r.dns_class = DNSClass::IN;
            Sections {
                answer: vec![r],
                ..Sections::default()
            }
        })
    }
}

/// A test CA and a leaf for localhost / 127.0.0.1, as PEM files.
struct Certs {
    dir: tempfile::TempDir,
    ca_pem: String,
}

impl Certs {
    fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ca_key) = support::pki::ca("resolvd test CA");
        let certs = Certs {
            ca_pem: ca.pem(),
            dir,
        };
        std::fs::write(certs.ca(), &certs.ca_pem).unwrap();
        certs.issue("cert.pem", "key.pem", &ca, &ca_key);
        certs
    }

    /// Signs a new leaf for localhost and 127.0.0.1 into `cert` / `key`;
    /// returns its DER.
    fn issue(
        &self,
        cert: &str,
        key: &str,
        ca: &rcgen::Certificate,
        ca_key: &rcgen::KeyPair,
    ) -> Vec<u8> {
        let (c, k) = support::pki::leaf(&["localhost", "127.0.0.1"], ca, ca_key);
        std::fs::write(self.dir.path().join(cert), c.pem()).unwrap();
        std::fs::write(self.dir.path().join(key), k.serialize_pem()).unwrap();
        c.der().to_vec()
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap();
        roots.add(der).unwrap();
        roots
    }

    /// A client configuration trusting the test CA, offering `alpn`.
    fn client(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut c =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(self.roots())
                .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Arc::new(c)
    }
}

fn cfg(certs: &Certs) -> Config {
    let mut c = Config::embedded_default();
    c.server.listen = vec!["127.0.0.1:0".parse().unwrap()];
    c.server.tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
    c.server.https_listen = vec!["127.0.0.1:0".parse().unwrap()];
    c.server.https_listen_plain = vec!["127.0.0.1:0".parse().unwrap()];
    c.server.threads = 2;
    c.control.enabled = false;
    // The fake resolver answers names under test., a special-use TLD.
    c.resolver.special_use_exclude = vec!["test.".into()];
    c.tls = Some(TlsConfig {
        cert: Some(certs.path("cert.pem")),
        key: Some(certs.path("key.pem")),
    });
    c
}

async fn daemon(c: &Config) -> Daemon {
    Daemon::start_with(c, Arc::new(Fixed), Arc::new(Metrics::default()))
        .await
        .unwrap()
}

const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

async fn tls_connect(addr: SocketAddr, client: Arc<ClientConfig>) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(T, TlsConnector::from(client).connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake succeeds")
}

async fn write_frame<S: AsyncWrite + Unpin>(s: &mut S, msg: &[u8]) {
    let mut f = (msg.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(msg);
    s.write_all(&f).await.unwrap();
    s.flush().await.unwrap();
}

async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let read = async {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await?;
        let mut b = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut b).await?;
        Ok::<_, std::io::Error>(b)
    };
    tokio::time::timeout(T, read)
        .await
        .expect("reply in time")
        .expect("reply read")
}

fn query_bytes(name: &str) -> Vec<u8> {
    make_query(name, RecordType::A, true).to_vec().unwrap()
}

/// A query for `name` A with an OPT record, with or without a Padding
/// option (RFC 7830), built by hand so the option bytes are exact.
fn padded_query(name: &str, pad: bool) -> Vec<u8> {
    let mut p = vec![0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    for l in name.trim_end_matches('.').split('.') {
        p.push(l.len() as u8);
        p.extend_from_slice(l.as_bytes());
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    p.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    if pad {
        // Pad the query to 128 bytes, as RFC 8467 §4.1 has clients do.
        let fill = 128 - (p.len() + 2 + 4);
        p.extend_from_slice(&((4 + fill) as u16).to_be_bytes());
        p.extend_from_slice(&12u16.to_be_bytes());
        p.extend_from_slice(&(fill as u16).to_be_bytes());
        p.resize(p.len() + fill, 0);
    } else {
        p.extend_from_slice(&[0, 0]);
    }
    p
}

// ------------------------------------------------------------------ DoT

#[tokio::test(flavor = "multi_thread")]
async fn dot_query_is_answered_with_alpn_dot() {
    let certs = Certs::new();
    let d = daemon(&cfg(&certs)).await;
    let mut s = tls_connect(d.tls_addrs()[0], certs.client(&[b"dot"], TLS13)).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"dot"[..]));
    write_frame(&mut s, &query_bytes("a.test.")).await;
    let m = Message::from_vec(&read_frame(&mut s).await).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(
        d.handler()
            .metrics
            .query_counts()
            .queries_over(Transport::Dot),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dot_answers_three_pipelined_queries_on_one_connection_out_of_order() {
    let certs = Certs::new();
    let d = daemon(&cfg(&certs)).await;
    let mut s = tls_connect(d.tls_addrs()[0], certs.client(&[b"dot"], TLS13)).await;
    let qs: Vec<Message> = ["slow.test.", "b.test.", "c.test."]
        .iter()
        .map(|n| make_query(n, RecordType::A, false))
        .collect();
    let mut all = Vec::new();
    for q in &qs {
        let b = q.to_vec().unwrap();
        all.extend_from_slice(&(b.len() as u16).to_be_bytes());
        all.extend_from_slice(&b);
    }
    // One write: the three queries arrive together, as a pipelining
    // client sends them.
    s.write_all(&all).await.unwrap();
    s.flush().await.unwrap();
    let mut names = Vec::new();
    for _ in 0..3 {
        let m = Message::from_vec(&read_frame(&mut s).await).unwrap();
        assert_eq!(m.answers.len(), 1);
        let q = qs
            .iter()
            .find(|q| q.metadata.id == m.metadata.id)
            .expect("ID of a query");
        assert_eq!(q.queries[0].name(), m.queries[0].name());
        names.push(m.queries[0].name().to_string());
    }
    // The slow one was asked first and answered last.
    assert_eq!(names.last().map(String::as_str), Some("slow.test."));
}

#[tokio::test(flavor = "multi_thread")]
async fn dot_reconnecting_client_resumes_its_tls_session() {
    let certs = Certs::new();
    let d = daemon(&cfg(&certs)).await;
    for versions in [TLS13, TLS12] {
        // One client configuration = one session store, as a stub keeps.
        let client = certs.client(&[b"dot"], versions);
        for round in 0..2 {
            let mut s = tls_connect(d.tls_addrs()[0], client.clone()).await;
            let kind = s.get_ref().1.handshake_kind();
            if round == 0 {
                assert_eq!(kind, Some(HandshakeKind::Full), "{versions:?}");
            } else {
                assert_eq!(kind, Some(HandshakeKind::Resumed), "{versions:?}");
            }
            // Reading a reply also takes in the tickets sent after the
            // handshake.
            write_frame(&mut s, &query_bytes("a.test.")).await;
            read_frame(&mut s).await;
            s.shutdown().await.unwrap();
        }
    }
    assert_eq!(d.handler().metrics.tls_resumed.load(Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn dot_pads_replies_to_padded_queries_only() {
    let certs = Certs::new();
    let d = daemon(&cfg(&certs)).await;
    let mut s = tls_connect(d.tls_addrs()[0], certs.client(&[b"dot"], TLS13)).await;
    // Twice each: the first is resolved, the second a cache hit.
    for _ in 0..2 {
        write_frame(&mut s, &padded_query("a.test.", true)).await;
        let r = read_frame(&mut s).await;
        assert_eq!(r.len() % PAD_BLOCK, 0, "padded reply length {}", r.len());
        let m = Message::from_vec(&r).unwrap();
        assert_eq!(m.answers.len(), 1);
        write_frame(&mut s, &padded_query("a.test.", false)).await;
        let r = read_frame(&mut s).await;
        assert!(r.len() < 100, "unpadded reply length {}", r.len());
    }
    // An error reply (REFUSED for class CH) is padded as well.
    let mut q = padded_query("a.test.", true);
    q[23] = 3;
    write_frame(&mut s, &q).await;
    let r = read_frame(&mut s).await;
    assert_eq!(r.len() % PAD_BLOCK, 0);
    // Over plain TCP the same query is not padded: padding is for
    // encrypted transports (RFC 8467 §4.1).
    let mut t = TcpStream::connect(d.local_addrs()[0]).await.unwrap();
    write_frame(&mut t, &padded_query("a.test.", true)).await;
    assert!(read_frame(&mut t).await.len() < 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn dot_idle_connection_is_closed() {
    let certs = Certs::new();
    let mut c = cfg(&certs);
    c.server.tcp_idle_timeout = Dur::millis(300);
    let d = daemon(&c).await;
    let mut s = tls_connect(d.tls_addrs()[0], certs.client(&[b"dot"], TLS13)).await;
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(T, s.read(&mut b)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "closed: {r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dot_connections_count_against_the_tcp_connection_cap() {
    let certs = Certs::new();
    let mut c = cfg(&certs);
    c.server.tcp_max_connections = 1;
    let d = daemon(&c).await;
    // A plain TCP connection takes the only slot ...
    let mut t = TcpStream::connect(d.local_addrs()[0]).await.unwrap();
    write_frame(&mut t, &query_bytes("a.test.")).await;
    read_frame(&mut t).await;
    // ... so a DoT connection is closed at once.
    let tcp = TcpStream::connect(d.tls_addrs()[0]).await.unwrap();
    let r = tokio::time::timeout(
        T,
        TlsConnector::from(certs.client(&[b"dot"], TLS13))
            .connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .expect("refused in time");
    assert!(r.is_err(), "handshake must fail at the cap");
    drop(t);
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_installs_a_renewed_certificate_for_new_connections() {
    let certs = Certs::new();
    let c = cfg(&certs);
    let d = daemon(&c).await;
    let client = certs.client(&[b"dot"], TLS13);
    let old = tls_connect(d.tls_addrs()[0], client.clone()).await;
    let old_der = old.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    // Renewal: a new leaf from the same CA, written over the old files.
    let (ca2, ca_key) = support::pki::ca("renewal CA");
    let new_der = certs.issue("cert.pem", "key.pem", &ca2, &ca_key);
    std::fs::write(certs.ca(), ca2.pem()).unwrap();
    d.reload(&c).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca2.der().to_vec())).unwrap();
    let mut cc =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    cc.alpn_protocols = vec![b"dot".to_vec()];
    let new = tls_connect(d.tls_addrs()[0], Arc::new(cc)).await;
    let seen = new.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    assert_eq!(seen, new_der);
    assert_ne!(seen, old_der);
    // A broken pair is rejected and the current certificate stays.
    std::fs::write(certs.path("key.pem"), "not a key").unwrap();
    assert!(d.reload(&c).is_err());
}

// ------------------------------------------------------------------ DoH

/// One request over a fresh TLS connection, HTTP/2 or HTTP/1.1 by ALPN.
async fn doh(
    addr: SocketAddr,
    certs: &Certs,
    h2: bool,
    req: Request<Full<Bytes>>,
) -> http::Response<Bytes> {
    let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
    let s = tls_connect(addr, certs.client(&[alpn], TLS13)).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(alpn));
    send(TokioIo::new(s), h2, req).await
}

async fn send<I>(io: I, h2: bool, req: Request<Full<Bytes>>) -> http::Response<Bytes>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let fut = async {
        let resp = if h2 {
            let (mut tx, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            tx.send_request(req).await?
        } else {
            let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            tx.send_request(req).await?
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, hyper::Error>(http::Response::from_parts(parts, body))
    };
    tokio::time::timeout(T, fut)
        .await
        .expect("response in time")
        .expect("HTTP exchange")
}

fn get(path_and_query: &str) -> Request<Full<Bytes>> {
    Request::get(format!("https://localhost{path_and_query}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn post(ctype: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
    Request::post("https://localhost/dns-query")
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn b64(msg: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(msg)
}

fn assert_dns_ok(r: &http::Response<Bytes>) {
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/dns-message");
    let m = Message::from_vec(r.body()).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    let cc = r.headers()["cache-control"].to_str().unwrap();
    let min = m.answers.iter().map(|a| a.ttl).min().unwrap();
    assert_eq!(cc, format!("max-age={min}"));
    assert!(min > 200 && min <= 300, "{cc}");
}

#[tokio::test(flavor = "multi_thread")]
async fn doh_get_and_post_are_answered_over_http2_and_http1() {
    let certs = Certs::new();
    let d = daemon(&cfg(&certs)).await;
    let addr = d.https_addrs()[0];
    for h2 in [true, false] {
        let mut q = make_query("a.test.", RecordType::A, true);
        // RFC 8484 §4.1: ID 0 keeps GET URIs cacheable.
        q.metadata.id = 0;
        let q = q.to_vec().unwrap();
        let r = doh(
            addr,
            &certs,
            h2,
            get(&format!("/dns-query?dns={}", b64(&q))),
        )
        .await;
        assert_dns_ok(&r);
        let r = doh(addr, &certs, h2, post("application/dns-message", q)).await;
        assert_dns_ok(&r);
    }
    assert_eq!(
        d.handler()
            .metrics
            .query_counts()
            .queries_over(Transport::Doh),
        4
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn doh_bad_requests_get_their_http_status() {
    let certs = Certs::new();
    let d = daemon(&cfg(&certs)).await;
    let addr = d.https_addrs()[0];
    let q = query_bytes("a.test.");
    for h2 in [true, false] {
        let cases: Vec<(Request<Full<Bytes>>, StatusCode)> = vec![
            (get("/dns-query?dns=!!not*base64"), StatusCode::BAD_REQUEST),
            (get("/dns-query"), StatusCode::BAD_REQUEST),
            // Decodes, but is not a DNS query (shorter than a header).
            (get("/dns-query?dns=AAAA"), StatusCode::BAD_REQUEST),
            (
                post("text/plain", q.clone()),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                post("application/dns-message", vec![0; 70_000]),
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (get("/other"), StatusCode::NOT_FOUND),
            (
                Request::put("https://localhost/dns-query")
                    .header("content-type", "application/dns-message")
                    .body(Full::new(Bytes::from(q.clone())))
                    .unwrap(),
                StatusCode::METHOD_NOT_ALLOWED,
            ),
        ];
        for (req, want) in cases {
            let what = format!("{} {} h2={h2}", req.method(), req.uri());
            let r = doh(addr, &certs, h2, req).await;
            assert_eq!(r.status(), want, "{what}");
        }
    }
    // Still serving after all that.
    let r = doh(addr, &certs, true, post("application/dns-message", q)).await;
    assert_dns_ok(&r);
}

#[tokio::test(flavor = "multi_thread")]
async fn doh_serves_several_requests_on_one_http2_connection() {
    let certs = Certs::new();
    let d = daemon(&cfg(&certs)).await;
    let s = tls_connect(d.https_addrs()[0], certs.client(&[b"h2"], TLS13)).await;
    let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let reqs = ["slow.test.", "b.test.", "c.test."].map(|n| {
        let mut tx = tx.clone();
        async move {
            let r = tx
                .send_request(post("application/dns-message", query_bytes(n)))
                .await
                .unwrap();
            let (parts, body) = r.into_parts();
            http::Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
        }
    });
    let [a, b, c] = reqs;
    let (a, b, c) = tokio::time::timeout(T, async { tokio::join!(a, b, c) })
        .await
        .unwrap();
    for r in [a, b, c] {
        assert_dns_ok(&r);
    }
}

/// A DoH client that works like dnsperf's (nghttp2 under OpenSSL): one
/// HTTP/2 connection, up to 100 GET streams in flight, and TLS records
/// read one at a time. dnsperf takes one DNS message out of each record
/// (`SSL_read`) and loses the DATA of a second response in the same record,
/// then stalls with the rest of the record unread. So besides getting every
/// answer, no record may carry DATA after a response that completed in it.
#[tokio::test(flavor = "multi_thread")]
async fn doh_http2_puts_at_most_one_finished_answer_in_each_tls_record() {
    let certs = Certs::new();
    let d = daemon(&cfg(&certs)).await;
    let addr = d.https_addrs()[0];
    let config = certs.client(&[b"h2"], TLS13);
    let run = tokio::task::spawn_blocking(move || record_by_record_doh(addr, config, 200, 100));
    let (answers, violations) = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("all answers in time")
        .unwrap();
    assert_eq!(answers, 200);
    assert!(
        violations.is_empty(),
        "{} TLS records with DATA after a finished response, e.g. {:?}",
        violations.len(),
        &violations[..violations.len().min(5)]
    );
}

/// HPACK literal header field without indexing, new name (RFC 7541 §6.2.2);
/// every name and value here is shorter than 127 bytes.
fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &str) {
    assert!(name.len() < 127 && value.len() < 127);
    out.push(0x00);
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
}

fn h2_frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Sends `total` GET queries with at most `window` in flight over one
/// HTTP/2 connection, reading the server's TLS records one by one. Returns
/// the answers received and, for each record that had DATA after a
/// response finished in it, a description.
fn record_by_record_doh(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    total: usize,
    window: usize,
) -> (usize, Vec<String>) {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(T)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(config, name).unwrap();
    // One TLS record off the socket into rustls; its plaintext, if any.
    let next_record = |tls: &mut rustls::ClientConnection, tcp: &mut std::net::TcpStream| {
        let mut head = [0u8; 5];
        tcp.read_exact(&mut head).expect("a TLS record in time");
        let len = u16::from_be_bytes([head[3], head[4]]) as usize;
        let mut rec = head.to_vec();
        rec.resize(5 + len, 0);
        tcp.read_exact(&mut rec[5..]).unwrap();
        let mut r = &rec[..];
        while !r.is_empty() {
            tls.read_tls(&mut r).unwrap();
        }
        tls.process_new_packets().unwrap();
        let mut plain = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            match tls.reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => plain.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("TLS read: {e}"),
            }
        }
        plain
    };
    while tls.is_handshaking() {
        while tls.wants_write() {
            tls.write_tls(&mut tcp).unwrap();
        }
        if tls.is_handshaking() {
            next_record(&mut tls, &mut tcp);
        }
    }
    assert_eq!(tls.alpn_protocol(), Some(&b"h2"[..]));

    // nghttp2's client settings as dnsperf sends them.
    let mut settings = Vec::new();
    for (id, v) in [(0x3u16, 100u32), (0x2, 0), (0x4, 65535)] {
        settings.extend_from_slice(&id.to_be_bytes());
        settings.extend_from_slice(&v.to_be_bytes());
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(0x4, 0, 0, &settings));
    let request = |i: usize| -> Vec<u8> {
        let q = query_bytes(&format!("n{}.test.", i % 20));
        let mut block = Vec::new();
        hpack_literal(&mut block, ":method", "GET");
        hpack_literal(&mut block, ":scheme", "https");
        hpack_literal(&mut block, ":authority", "localhost");
        hpack_literal(&mut block, ":path", &format!("/dns-query?dns={}", b64(&q)));
        hpack_literal(&mut block, "accept", "application/dns-message");
        // END_STREAM | END_HEADERS; client streams are odd.
        h2_frame(0x1, 0x5, 2 * i as u32 + 1, &block)
    };
    let mut sent = 0;
    while sent < window.min(total) {
        out.extend(request(sent));
        sent += 1;
    }
    let send = |tls: &mut rustls::ClientConnection, tcp: &mut std::net::TcpStream, b: &[u8]| {
        tls.writer().write_all(b).unwrap();
        while tls.wants_write() {
            tls.write_tls(tcp).unwrap();
        }
        tcp.flush().unwrap();
    };
    send(&mut tls, &mut tcp, &out);

    // Frame parser over the server's plaintext, fed record by record.
    let mut pending: Vec<u8> = Vec::new();
    let mut answers = 0;
    let mut violations = Vec::new();
    let mut records = 0;
    while answers < total {
        let plain = next_record(&mut tls, &mut tcp);
        records += 1;
        // Bytes of `pending` that came before this record.
        let before = pending.len();
        pending.extend_from_slice(&plain);
        let mut finished_here = false;
        let mut replies = Vec::new();
        let mut at = 0;
        while pending.len() - at >= 9 {
            let h = &pending[at..at + 9];
            let len = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
            let (ty, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            // DATA that this record carries (some of its bytes are new)
            // after a response already finished in this record: dnsperf
            // loses it.
            let ends_in_record = at + 9 + len > before;
            if ty == 0x0 && finished_here && ends_in_record {
                violations.push(format!("record {records}: DATA of stream {stream}"));
            }
            if pending.len() - at < 9 + len {
                break;
            }
            let payload = &pending[at + 9..at + 9 + len];
            match ty {
                0x0 if flags & 0x1 != 0 => {
                    let m = Message::from_vec(payload).expect("a DNS answer");
                    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
                    answers += 1;
                    finished_here = true;
                }
                0x3 | 0x7 => panic!("server reset stream {stream} or went away: {payload:?}"),
                // SETTINGS (not an ACK): acknowledge.
                0x4 if flags & 0x1 == 0 => replies.extend(h2_frame(0x4, 0x1, 0, &[])),
                _ => {}
            }
            at += 9 + len;
        }
        pending.drain(..at);
        // Keep up to `window` in flight, as dnsperf does.
        while sent < total && sent - answers < window {
            replies.extend(request(sent));
            sent += 1;
        }
        if !replies.is_empty() {
            send(&mut tls, &mut tcp, &replies);
        }
    }
    (answers, violations)
}

// ------------------------------------------------------------ PROXY v2

const GEO_ZONE: &str = r#"
[geo.regions]
eu = ["10.1.0.0/16"]
us = ["10.2.0.0/16"]

[[zone]]
origin = "svc.test."
ttl = 30

[[zone.pool]]
name = "api"
type = "A"
members = [
  { value = "192.0.2.20", weight = 1, region = "eu" },
  { value = "198.51.100.20", weight = 1, region = "us" },
]
fallback = "all"
"#;

fn proxy_cfg(certs: &Certs, dir: &Path) -> Config {
    let path = dir.join("resolvd.toml");
    std::fs::write(&path, GEO_ZONE).unwrap();
    let mut c = Config::load(&path).unwrap();
    let base = cfg(certs);
    c.server = base.server;
    c.control = base.control;
    c.resolver = base.resolver;
    c.tls = base.tls;
    c.server.allow = vec![
        "127.0.0.0/8".parse().unwrap(),
        "10.0.0.0/8".parse().unwrap(),
    ];
    c.server.proxy_protocol_from = vec!["127.200.0.1/32".parse().unwrap()];
    c
}

/// A TCP connection from `src` (any 127/8 address is local on Linux).
async fn connect_from(src: &str, dst: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(src.parse().unwrap(), 0)).unwrap();
    s.connect(dst).await.unwrap()
}

fn api_answer(r: &http::Response<Bytes>) -> String {
    assert_eq!(r.status(), StatusCode::OK);
    let m = Message::from_vec(r.body()).unwrap();
    m.answers[0].data.clone().to_string()
}

async fn closed<S: AsyncRead + Unpin>(s: &mut S) -> bool {
    let mut b = [0u8; 64];
    loop {
        match tokio::time::timeout(T, s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_header_from_an_allowed_source_sets_the_client_address() {
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&proxy_cfg(&certs, dir.path())).await;
    let plain = d.https_plain_addrs()[0];
    let q = query_bytes("api.svc.test.");
    for (client, want) in [
        ("10.2.3.4:5555", "198.51.100.20"),
        ("10.1.3.4:5555", "192.0.2.20"),
    ] {
        let mut s = connect_from("127.200.0.1", plain).await;
        s.write_all(&proxy::encode(client.parse().unwrap(), plain))
            .await
            .unwrap();
        let r = send(
            TokioIo::new(s),
            false,
            post("application/dns-message", q.clone()),
        )
        .await;
        assert_eq!(api_answer(&r), want, "client {client}");
    }
    // Over DoT too: the header comes before the TLS handshake.
    let mut s = connect_from("127.200.0.1", d.tls_addrs()[0]).await;
    s.write_all(&proxy::encode("10.2.9.9:1".parse().unwrap(), plain))
        .await
        .unwrap();
    let mut s = TlsConnector::from(certs.client(&[b"dot"], TLS13))
        .connect(ServerName::try_from("localhost").unwrap(), s)
        .await
        .unwrap();
    write_frame(&mut s, &q).await;
    let m = Message::from_vec(&read_frame(&mut s).await).unwrap();
    assert_eq!(m.answers[0].data.clone().to_string(), "198.51.100.20");
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_header_from_any_other_source_closes_the_connection() {
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&proxy_cfg(&certs, dir.path())).await;
    for addr in [
        d.https_plain_addrs()[0],
        d.tls_addrs()[0],
        d.https_addrs()[0],
    ] {
        let mut s = connect_from("127.0.0.1", addr).await;
        s.write_all(&proxy::encode("10.2.3.4:5555".parse().unwrap(), addr))
            .await
            .unwrap();
        assert!(closed(&mut s).await, "{addr}: forged header accepted");
    }
    // The trusted proxy must send a header: without one, closed too.
    let mut s = connect_from("127.200.0.1", d.https_plain_addrs()[0]).await;
    s.write_all(b"GET /dns-query?dns=AAAA HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed(&mut s).await);
    assert_eq!(
        d.handler().metrics.proxy_rejected.load(Ordering::Relaxed),
        4
    );
    // Other clients without a header are served as usual.
    let s = connect_from("127.0.0.1", d.https_plain_addrs()[0]).await;
    let r = send(
        TokioIo::new(s),
        false,
        post("application/dns-message", query_bytes("a.test.")),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
}

// --------------------------------------------------------- DoT client

/// A DoT server on loopback with the test certificate: answers each query
/// (QR set, no records) after a delay that makes later queries finish
/// first; counts connections.
async fn upstream(certs: &Certs) -> (SocketAddr, Arc<AtomicUsize>) {
    use rustls::pki_types::pem::PemObject;
    let chain = vec![CertificateDer::from_pem_file(certs.path("cert.pem")).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(certs.path("key.pem")).unwrap();
    let mut sc = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    sc.alpn_protocols = vec![b"dot".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(sc));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let c2 = conns.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            let conns = c2.clone();
            tokio::spawn(async move {
                let Ok(s) = acceptor.accept(tcp).await else {
                    return;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let (mut rd, wr) = tokio::io::split(s);
                let wr = Arc::new(tokio::sync::Mutex::new(wr));
                for i in 0u64.. {
                    let mut len = [0u8; 2];
                    if rd.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                    if rd.read_exact(&mut q).await.is_err() {
                        return;
                    }
                    let wr = wr.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(150u64.saturating_sub(i * 50)))
                            .await;
                        q[2] |= 0x80;
                        let mut w = wr.lock().await;
                        write_frame(&mut *w, &q).await;
                    });
                }
            });
        }
    });
    (addr, conns)
}

fn client_cfg(addr: SocketAddr, name: &str, certs: &Certs) -> DotClientConfig {
    let mut c = DotClientConfig::new(addr, name);
    c.ca_file = Some(certs.ca());
    c.timeout = T;
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn dot_client_pipelines_queries_on_one_verified_reused_connection() {
    let certs = Certs::new();
    let (addr, conns) = upstream(&certs).await;
    let client = DotClient::new(client_cfg(addr, "localhost", &certs)).unwrap();
    let qs: Vec<Vec<u8>> = ["a.test.", "b.test.", "c.test."]
        .iter()
        .map(|n| query_bytes(n))
        .collect();
    let (a, b, c) = tokio::join!(
        client.exchange(&qs[0]),
        client.exchange(&qs[1]),
        client.exchange(&qs[2])
    );
    for (q, r) in qs.iter().zip([a, b, c]) {
        let r = r.expect("exchange");
        let (qm, rm) = (
            Message::from_vec(q).unwrap(),
            Message::from_vec(&r).unwrap(),
        );
        assert_eq!(
            rm.metadata.id, qm.metadata.id,
            "the query's own ID comes back"
        );
        assert_eq!(rm.queries, qm.queries);
    }
    client.exchange(&qs[0]).await.expect("later exchange");
    assert_eq!(conns.load(Ordering::SeqCst), 1, "one connection, reused");
}

#[tokio::test(flavor = "multi_thread")]
async fn dot_client_rejects_a_certificate_for_another_name() {
    let certs = Certs::new();
    let (addr, conns) = upstream(&certs).await;
    let client = DotClient::new(client_cfg(addr, "dns.example", &certs)).unwrap();
    let r = client.exchange(&query_bytes("a.test.")).await;
    assert!(matches!(r, Err(DotError::Handshake(..))), "{r:?}");
    // And an untrusted CA: the default roots do not know the test CA.
    let mut c = client_cfg(addr, "localhost", &certs);
    c.ca_file = None;
    let r = DotClient::new(c)
        .unwrap()
        .exchange(&query_bytes("a.test."))
        .await;
    assert!(matches!(r, Err(DotError::Handshake(..))), "{r:?}");
    assert_eq!(conns.load(Ordering::SeqCst), 0);
}

// --------------------------------------------------------------- kdig

/// kdig from knot-dnsutils (installed by .ci/run). Missing is a failure,
/// not a skip: this is the one client we did not write.
fn kdig() -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join("kdig");
        if p.exists() {
            return p;
        }
    }
    panic!("kdig not found: install the Debian package knot-dnsutils (.ci/run does)");
}

async fn run_kdig(args: &[String]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(kdig())
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("kdig finishes")
    .expect("kdig runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kdig {args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn kdig_gets_answers_over_tls_and_https() {
    let certs = Certs::new();
    let d = daemon(&cfg(&certs)).await;
    let dot = d.tls_addrs()[0];
    let doh = d.https_addrs()[0];
    let ca = format!("+tls-ca={}", certs.ca().display());
    let common = |addr: SocketAddr, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec![
            "@127.0.0.1".into(),
            "-p".into(),
            addr.port().to_string(),
            ca.clone(),
            "+tls-hostname=localhost".into(),
            "+timeout=5".into(),
            "+retry=0".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v.extend(["kdig.test.".into(), "A".into()]);
        v
    };
    for args in [
        common(dot, &["+tls"]),
        common(dot, &["+tls", "+padding"]),
        common(doh, &["+https"]),
        common(doh, &["+https-get"]),
    ] {
        let text = run_kdig(&args).await;
        assert!(text.contains("NOERROR"), "{args:?}: {text}");
        assert!(text.contains("192.0.2.1"), "{args:?}: {text}");
    }
}

// ------------------------------------------------------- check-config

fn check_config(text: &str, dir: &Path) -> (bool, String) {
    let path = dir.join("resolvd.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_resolvd"))
        .args(["check-config", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_a_working_pair_and_locates_tls_mistakes() {
    let certs = Certs::new();
    let dir = certs.dir.path();
    let good = "[server]\nlisten = [\"127.0.0.1:5353\"]\ntls_listen = [\"127.0.0.1:8853\"]\n\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n";
    let (ok, err) = check_config(good, dir);
    assert!(ok, "{err}");
    let missing = good.replace("cert.pem", "nope.pem");
    let (ok, err) = check_config(&missing, dir);
    assert!(!ok);
    assert!(
        err.contains("resolvd.toml:6: cert: ") && err.contains("nope.pem"),
        "{err}"
    );
    // The CA's certificate with the leaf's key: not a pair.
    let mismatched = good.replace("cert.pem", "ca.pem");
    let (ok, err) = check_config(&mismatched, dir);
    assert!(!ok);
    assert!(
        err.contains("resolvd.toml:7: key: ") && err.contains("does not match"),
        "{err}"
    );
    let no_tls = "[server]\nhttps_listen = [\"127.0.0.1:8443\"]\n";
    let (ok, err) = check_config(no_tls, dir);
    assert!(!ok);
    assert!(
        err.contains("resolvd.toml:2: https_listen: needs a [tls]"),
        "{err}"
    );
    let bad_cidr = "[server]\nproxy_protocol_from = [\"10.0.0.1/40\"]\n";
    let (ok, err) = check_config(bad_cidr, dir);
    assert!(!ok);
    assert!(
        err.contains("resolvd.toml:2: proxy_protocol_from: "),
        "{err}"
    );
}
