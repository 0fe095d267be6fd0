//! DNS over HTTPS (RFC 8484) on hyper: HTTP/2 (ALPN h2, RFC 8484 §5.2)
//! and HTTP/1.1, on TLS or, for use behind a TLS-terminating proxy, on
//! plain TCP.
//!
//! `/dns-query` takes GET with `?dns=` (base64url without padding, §4.1)
//! and POST with an `application/dns-message` body (§4.1, §6). Replies
//! carry `Cache-Control: max-age` = the smallest TTL of the answer (§5.1).
//! Requests that are not DNS get an HTTP status instead of a DNS reply:
//! 400 for an undecodable or non-query message, 413 for a body or
//! parameter over 65535 bytes, 415 for another content type, 404 for
//! another path, 405 for another method.

use super::proxy::ProxyPolicy;
use super::records::StreamEndRecords;
use super::{accept_loop, tls, ListenerShared};
use crate::handler::{Handler, Step, Transport};
use crate::metrics::Metrics;
use crate::wire::answer::min_ttl;
use base64::Engine;
use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

/// The path RFC 8484 §3's examples use and clients default to.
pub const PATH: &str = "/dns-query";
/// Media type of a DNS message (RFC 8484 §6).
pub const MEDIA_TYPE: &str = "application/dns-message";
/// Largest DNS message (RFC 1035 §4.2.2: a 16-bit length).
const MAX_MESSAGE: usize = 65535;

/// Accepts DoH connections until shutdown: TLS when `tls` is given
/// (`https_listen`), plain HTTP otherwise (`https_listen_plain`).
pub async fn serve_doh(
    listener: TcpListener,
    tls: Option<Arc<tls::Tls>>,
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
                match tls {
                    Some(t) => {
                        if let Some(s) = tls::handshake(&t.doh, stream, &shared).await {
                            // One finished response per TLS record on
                            // HTTP/2: see `records` for the client that
                            // needs it.
                            let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
                            let s = StreamEndRecords::new(s, h2);
                            connection(s, client, &shared).await;
                        }
                    }
                    None => connection(stream, client, &shared).await,
                }
            }
        }),
    )
    .await
}

/// When the connection last did something, and how many requests it has
/// open: the idle timeout closes a connection with nothing in flight.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    open: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Serves HTTP/1.1 or HTTP/2 (chosen by the client's first bytes, which
/// follow ALPN on TLS) on one connection until it closes, idles out or the
/// daemon shuts down; then lets open requests finish, bounded.
async fn connection<S>(io: S, client: SocketAddr, shared: &ListenerShared)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let idle = shared.limits.idle_timeout;
    let act = Arc::new(Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
        open: AtomicUsize::new(0),
    });
    let handler = shared.handler.clone();
    let act2 = act.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let handler = handler.clone();
        let act = act2.clone();
        async move {
            act.open.fetch_add(1, Ordering::Relaxed);
            act.touch();
            let resp = respond(&handler, req, client).await;
            act.touch();
            act.open.fetch_sub(1, Ordering::Relaxed);
            if !resp.status().is_success() {
                Metrics::inc(&handler.metrics.doh_http_errors);
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .keep_alive(true);
    let max_streams = u32::try_from(shared.limits.max_inflight).unwrap_or(u32::MAX);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(max_streams);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(idle.max(Duration::from_millis(50)) / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = shared.shutdown.cancelled() => break,
            _ = tick.tick() => {
                if act.open.load(Ordering::Relaxed) == 0 && act.idle_for() >= idle {
                    break;
                }
            }
        }
    }
    // HTTP/2 gets a GOAWAY, HTTP/1.1 a "Connection: close" on the reply in
    // progress; answers being resolved still go out.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(idle, conn).await;
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = code;
    r
}

/// One DoH request to one HTTP response.
async fn respond(
    handler: &Arc<Handler>,
    req: Request<Incoming>,
    client: SocketAddr,
) -> Response<Full<Bytes>> {
    if req.uri().path() != PATH {
        return status(StatusCode::NOT_FOUND);
    }
    let pkt = match *req.method() {
        Method::GET => match dns_param(req.uri().query()) {
            Ok(p) => p,
            Err(code) => return status(code),
        },
        Method::POST => match post_body(req).await {
            Ok(p) => p,
            Err(code) => return status(code),
        },
        _ => {
            let mut r = status(StatusCode::METHOD_NOT_ALLOWED);
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, POST"));
            return r;
        }
    };
    let mut out = Vec::with_capacity(1024);
    match handler.answer_now(&pkt, client, Transport::Doh, &mut out) {
        Step::Reply => {}
        // Not a query at all (too short, or a response): HTTP says so.
        Step::Drop => return status(StatusCode::BAD_REQUEST),
        Step::Resolve => {
            handler
                .answer_resolved(&pkt, client, Transport::Doh, &mut out)
                .await;
            if out.is_empty() {
                // Shed under load (max_pending): tell the client to retry.
                return status(StatusCode::SERVICE_UNAVAILABLE);
            }
        }
    }
    let max_age = min_ttl(&out).unwrap_or(0);
    let len = out.len();
    let mut r = Response::new(Full::new(Bytes::from(out)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(&format!("max-age={max_age}")) {
        h.insert(CACHE_CONTROL, v);
    }
    r
}

/// The message in a GET's `dns` parameter (RFC 8484 §4.1: base64url, no
/// padding; padding is tolerated since some clients send it).
fn dns_param(query: Option<&str>) -> Result<Vec<u8>, StatusCode> {
    let value = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("dns="))
        .ok_or(StatusCode::BAD_REQUEST)?;
    let value = value.trim_end_matches('=').trim_end_matches("%3D");
    // 4 characters per 3 bytes: refuse before decoding a huge parameter.
    if value.len() > MAX_MESSAGE.div_ceil(3) * 4 {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| StatusCode::BAD_REQUEST)
}

/// The body of a POST: the right media type and at most 65535 bytes.
/// Largest oversized body read (and dropped) before answering 413.
const DRAIN_LIMIT: usize = 256 * 1024;

async fn post_body(req: Request<Incoming>) -> Result<Vec<u8>, StatusCode> {
    let ctype = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ctype.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case(MEDIA_TYPE) {
        return Err(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > MAX_MESSAGE as u64) {
        // Read and drop a moderately oversized body first (nginx's
        // "lingering close"): an HTTP/1.1 client still writing it would
        // otherwise meet a closed connection instead of reading the 413.
        if n <= DRAIN_LIMIT as u64 {
            let _ = Limited::new(req.into_body(), DRAIN_LIMIT).collect().await;
        }
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    // A chunked or HTTP/2 body has no declared length: the limit is
    // enforced while reading.
    match Limited::new(req.into_body(), MAX_MESSAGE).collect().await {
        Ok(c) => Ok(c.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(StatusCode::PAYLOAD_TOO_LARGE),
        Err(_) => Err(StatusCode::BAD_REQUEST),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_parameter_decodes_base64url_and_rejects_garbage() {
        // RFC 8484 §4.1.1's example query for www.example.com A.
        let q = "dns=AAABAAABAAAAAAAAA3d3dwdleGFtcGxlA2NvbQAAAQAB";
        let p = dns_param(Some(q)).unwrap();
        assert_eq!(p.len(), 33);
        assert_eq!(
            dns_param(Some(
                "ct=x&dns=AAABAAABAAAAAAAAA3d3dwdleGFtcGxlA2NvbQAAAQAB=="
            ))
            .unwrap(),
            p
        );
        assert_eq!(dns_param(Some("dns=%%%")), Err(StatusCode::BAD_REQUEST));
        assert_eq!(dns_param(None), Err(StatusCode::BAD_REQUEST));
        let huge = format!("dns={}", "A".repeat(100_000));
        assert_eq!(dns_param(Some(&huge)), Err(StatusCode::PAYLOAD_TOO_LARGE));
    }
}
