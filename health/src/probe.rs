//! Active probes on monoio: a TCP connect check and an HTTP/1.1 check.
//!
//! A probe opens a fresh connection for every run (there is no pooling) and always closes it
//! when the verdict is in. It never panics, whatever the endpoint sends: the response is read
//! with the sans-IO codec of `headwater-http1` (its head limits apply, so an endless head is an
//! invalid response), and at most [`BODY_LIMIT`] bytes of body are examined.
//!
//! The whole probe (connect, request, response head, body) runs under one deadline, enforced by
//! `monoio::time` with the time that remains for each phase; a server that accepts and then
//! never answers, or trickles bytes, is cut off when it passes. The operation in flight is then
//! dropped together with the connection (with monoio's `async-cancel` feature the io_uring
//! driver also cancels it in the kernel), so whatever bytes were in flight do not matter.
//!
//! Probes run on a monoio runtime with timers enabled (`RuntimeBuilder::enable_timer`), under
//! either the io_uring or the legacy (epoll) driver.

use std::{
    fmt::Write as _,
    future::Future,
    io,
    net::SocketAddr,
    ops::RangeInclusive,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use headwater_http1::{BodyDecoder, Decoded, Limits, ResponseHead, ResponseParser};
use http::{header, HeaderName, HeaderValue, Method};
use monoio::{
    buf::IoBufMut,
    io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt},
    net::TcpStream,
};

/// At most this many bytes of a response body are examined for
/// [`HttpProbe::body_contains`]; a body that has not shown the substring by then fails.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Bytes reserved for each read from the connection.
const READ_CHUNK: usize = 8 * 1024;

/// Interim (1xx) responses skipped before a final one; more make the response invalid.
const MAX_INTERIM: usize = 8;

/// At most this many characters of the expected body substring are quoted in a detail.
const MAX_QUOTED: usize = 64;

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// The endpoint accepts a TCP connection (which is then closed at once).
    Tcp,
    /// The endpoint answers an HTTP/1.1 request as configured.
    Http(HttpProbe),
}

/// An HTTP/1.1 health check: one request on a fresh connection (`Connection: close`), judged by
/// the response status and, optionally, the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbe {
    /// Request method. Default `GET`.
    pub method: Method,
    /// Request target, sent as is (e.g. `/healthz?full=1`). Default `/`; an empty path is sent
    /// as `/`. It must consist of visible ASCII characters only (no spaces or control bytes),
    /// otherwise the probe fails without connecting.
    pub path: String,
    /// `Host` header value. Default (`None`): the endpoint address (`10.0.0.7:8080`,
    /// `[::1]:8080`). Like `path`, it must be visible ASCII.
    pub host: Option<String>,
    /// Statuses that count as healthy. Default `200..=399`.
    pub expect_status: RangeInclusive<u16>,
    /// A substring that must appear in the (decoded) body, within its first [`BODY_LIMIT`]
    /// bytes. Default `None`: the body is not read.
    pub body_contains: Option<String>,
    /// Extra request headers, sent in order after the probe's own (e.g. an API key).
    ///
    /// A `User-Agent` here replaces the default `headwater-health`. `Host` (see
    /// [`host`](Self::host)), `Connection`, `Content-Length` and `Transfer-Encoding` are
    /// ignored: the probe owns the connection and the request framing (it sends no body).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Default for HttpProbe {
    fn default() -> Self {
        HttpProbe {
            method: Method::GET,
            path: "/".to_string(),
            host: None,
            expect_status: 200..=399,
            body_contains: None,
            headers: Vec::new(),
        }
    }
}

/// The verdict of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// Whether the endpoint passed.
    pub ok: bool,
    /// A short human-readable reason, shown in the admin API: `ok (200)`, `connect refused`,
    /// `timed out after 300ms (response head)`, `status 503 not in 200-399`, ...
    pub detail: String,
    /// Time from the start of the probe to the verdict.
    pub latency: Duration,
}

/// Runs one probe against `addr` with an overall deadline of `timeout` (connect + request +
/// response).
///
/// Must run on a monoio runtime with timers enabled. The connection is shut down (FIN sent)
/// before this returns, and its descriptor closed.
pub async fn run_probe(addr: SocketAddr, kind: &ProbeKind, timeout: Duration) -> ProbeResult {
    let start = Instant::now();
    let deadline = Deadline::new(timeout);
    let verdict = match kind {
        ProbeKind::Tcp => tcp_probe(addr, &deadline).await,
        ProbeKind::Http(probe) => http_probe(addr, probe, &deadline).await,
    };
    let latency = start.elapsed();
    let (ok, detail) = match verdict {
        Ok(detail) => (true, detail),
        Err(detail) => (false, detail),
    };
    ProbeResult {
        ok,
        detail,
        latency,
    }
}

/// Ok: the detail of a pass; Err: the reason of a failure.
type Verdict = Result<String, String>;

/// The probe's overall deadline.
struct Deadline {
    /// When it passes; `None` when `budget` reaches past what `Instant` can represent.
    at: Option<monoio::time::Instant>,
    /// The probe's whole timeout, as reported in details.
    budget: Duration,
}

impl Deadline {
    fn new(budget: Duration) -> Self {
        Deadline {
            at: monoio::time::Instant::now().checked_add(budget),
            budget,
        }
    }

    /// Runs `fut` until it completes or the deadline passes (then `fut` is dropped and the
    /// error names `phase`).
    async fn run<F: Future>(&self, phase: &str, fut: F) -> Result<F::Output, String> {
        match self.at {
            Some(at) => monoio::time::timeout_at(at, fut)
                .await
                .map_err(|_| format!("timed out after {:?} ({phase})", self.budget)),
            None => Ok(fut.await),
        }
    }
}

async fn tcp_probe(addr: SocketAddr, deadline: &Deadline) -> Verdict {
    let stream = connect(addr, deadline).await?;
    close(stream).await;
    Ok("ok (connected)".to_string())
}

/// Closes a probe connection: the FIN goes out now (`shutdown(SHUT_WR)` is a direct syscall),
/// so the endpoint sees the end of the connection even before the descriptor is closed (which
/// io_uring does with a close operation submitted on the runtime's next turn).
async fn close(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    drop(stream);
}

async fn connect(addr: SocketAddr, deadline: &Deadline) -> Result<TcpStream, String> {
    match deadline
        .run("connect", TcpStream::connect_addr(addr))
        .await?
    {
        Ok(stream) => Ok(stream),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            Err("connect refused".to_string())
        }
        Err(e) => Err(format!("connect failed: {e}")),
    }
}

async fn http_probe(addr: SocketAddr, probe: &HttpProbe, deadline: &Deadline) -> Verdict {
    let request = encode_request(addr, probe).map_err(|e| format!("invalid probe: {e}"))?;
    let mut stream = connect(addr, deadline).await?;
    let verdict = exchange(&mut stream, probe, request, deadline).await;
    close(stream).await;
    verdict
}

/// Sends `request` on `stream` and judges the response.
async fn exchange(
    stream: &mut TcpStream,
    probe: &HttpProbe,
    request: Vec<u8>,
    deadline: &Deadline,
) -> Verdict {
    let (res, _) = deadline.run("request", stream.write_all(request)).await?;
    if let Err(e) = res {
        return Err(match e.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                "connection reset while sending request".to_string()
            }
            _ => format!("send failed: {e}"),
        });
    }

    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let head = read_head(stream, &mut buf, deadline).await?;
    let status = head.status().as_u16();
    if !probe.expect_status.contains(&status) {
        return Err(format!(
            "status {status} not in {}-{}",
            probe.expect_status.start(),
            probe.expect_status.end()
        ));
    }
    if let Some(needle) = &probe.body_contains {
        let decoder = BodyDecoder::new(head.body_kind(&probe.method));
        check_body(stream, buf, decoder, needle.as_bytes(), deadline)
            .await
            .map_err(|failure| match failure {
                BodyFailure::Lacks { capped } => {
                    let mut detail = format!("body lacks {:?}", quoted(needle));
                    if capped {
                        detail.push_str(" in its first 64 KiB");
                    }
                    detail
                }
                BodyFailure::Other(detail) => detail,
            })?;
    }
    Ok(format!("ok ({status})"))
}

/// The request head, or why the probe's configuration cannot be sent.
fn encode_request(addr: SocketAddr, probe: &HttpProbe) -> Result<Vec<u8>, &'static str> {
    let path = if probe.path.is_empty() {
        "/"
    } else {
        probe.path.as_str()
    };
    if !is_visible_ascii(path) {
        return Err("path must be visible ASCII (no spaces or control bytes)");
    }
    let host = match &probe.host {
        Some(host) if host.is_empty() => return Err("empty host"),
        Some(host) if !is_visible_ascii(host) => {
            return Err("host must be visible ASCII (no spaces or control bytes)")
        }
        Some(host) => host.clone(),
        None => addr.to_string(),
    };

    let mut out = String::with_capacity(128 + path.len() + host.len());
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{} {path} HTTP/1.1\r\nHost: {host}\r\n",
        probe.method.as_str()
    );
    let own_agent = probe
        .headers
        .iter()
        .any(|(name, _)| name == header::USER_AGENT);
    if !own_agent {
        out.push_str("User-Agent: headwater-health\r\n");
    }
    out.push_str("Connection: close\r\n");
    // A request without a body needs no framing header, but some servers insist on a length
    // for the methods that usually carry one (411 Length Required).
    if matches!(probe.method, Method::POST | Method::PUT | Method::PATCH) {
        out.push_str("Content-Length: 0\r\n");
    }
    let mut out = out.into_bytes();
    for (name, value) in &probe.headers {
        if name == header::HOST
            || name == header::CONNECTION
            || name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
        {
            continue;
        }
        // HeaderName and HeaderValue cannot hold CR, LF or NUL, so nothing can be injected.
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

fn is_visible_ascii(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}

/// At most [`MAX_QUOTED`] characters of `s`, with an ellipsis when cut.
fn quoted(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_string(),
    }
}

/// Reads once from `stream`, appending to `buf`; returns the number of bytes read (0: end of
/// stream).
async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    if buf.capacity() - buf.len() < READ_CHUNK {
        buf.reserve(READ_CHUNK);
    }
    let owned = std::mem::take(buf);
    let (begin, end) = (owned.len(), owned.capacity());
    let (res, slice) = stream.read(owned.slice_mut(begin..end)).await;
    *buf = slice.into_inner();
    res
}

/// [`read_more`] within the deadline, retrying reads interrupted by a signal.
async fn read_within(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: &Deadline,
    phase: &str,
) -> Result<io::Result<usize>, String> {
    loop {
        match deadline.run(phase, read_more(stream, buf)).await? {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            res => return Ok(res),
        }
    }
}

/// Reads the final response head, skipping interim (1xx other than 101) responses. Bytes after
/// the head stay in `buf`.
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: &Deadline,
) -> Result<ResponseHead, String> {
    let mut parser = ResponseParser::new(Limits::default());
    let mut interim = 0;
    loop {
        match parser.parse(buf) {
            Ok(Some(head)) => {
                let code = head.status().as_u16();
                if (100..200).contains(&code) && code != 101 {
                    interim += 1;
                    if interim > MAX_INTERIM {
                        return Err("invalid response: too many interim (1xx) responses".into());
                    }
                    continue;
                }
                return Ok(head);
            }
            Ok(None) => {}
            Err(e) => return Err(format!("invalid response: {}", e.detail())),
        }
        match read_within(stream, buf, deadline, "response head").await? {
            Ok(0) if buf.is_empty() => {
                return Err("connection closed before response head".to_string());
            }
            Ok(0) => return Err("connection closed in the middle of the response head".into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err("connection reset before response head".to_string());
            }
            Err(e) => return Err(format!("read failed (response head): {e}")),
        }
    }
}

/// Why a body check failed.
enum BodyFailure {
    /// The body ended (or reached [`BODY_LIMIT`], `capped`) without the substring.
    Lacks { capped: bool },
    /// Anything else, with its detail.
    Other(String),
}

/// Decodes the body (what is already in `buf`, then more from `stream`) until `needle` shows
/// up, the body ends, or [`BODY_LIMIT`] bytes were examined.
async fn check_body(
    stream: &mut TcpStream,
    mut buf: BytesMut,
    mut decoder: BodyDecoder,
    needle: &[u8],
    deadline: &Deadline,
) -> Result<(), BodyFailure> {
    if needle.is_empty() {
        return Ok(());
    }
    let finder = memchr::memmem::Finder::new(needle);
    let mut body: Vec<u8> = Vec::new();
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(Decoded::Data(data))) => {
                let take = data.len().min(BODY_LIMIT - body.len());
                // Only the tail that could hold a match overlapping the new bytes is searched.
                let from = body.len().saturating_sub(needle.len() - 1);
                body.extend_from_slice(&data[..take]);
                if finder.find(&body[from..]).is_some() {
                    return Ok(());
                }
                if body.len() >= BODY_LIMIT {
                    return Err(BodyFailure::Lacks { capped: true });
                }
                continue;
            }
            Ok(Some(Decoded::Trailers(_))) => continue,
            Ok(Some(Decoded::Done)) => return Err(BodyFailure::Lacks { capped: false }),
            Ok(None) => {}
            Err(e) => {
                return Err(BodyFailure::Other(format!(
                    "invalid response: {}",
                    e.detail()
                )))
            }
        }
        let read = read_within(stream, &mut buf, deadline, "body")
            .await
            .map_err(BodyFailure::Other)?;
        match read {
            Ok(0) => {
                if decoder.eof().is_err() {
                    return Err(BodyFailure::Other(
                        "connection closed before the body ended".to_string(),
                    ));
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(BodyFailure::Other(
                    "connection reset before the body ended".to_string(),
                ));
            }
            Err(e) => return Err(BodyFailure::Other(format!("read failed (body): {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:8080".parse().unwrap()
    }

    #[test]
    fn request_head_has_the_probe_headers_in_order() {
        let probe = HttpProbe {
            path: "/healthz?x=1".into(),
            headers: vec![(
                HeaderName::from_static("x-api-key"),
                HeaderValue::from_static("k"),
            )],
            ..HttpProbe::default()
        };
        let req = encode_request(addr(), &probe).unwrap();
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "GET /healthz?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
             User-Agent: headwater-health\r\nConnection: close\r\nx-api-key: k\r\n\r\n"
        );
    }

    #[test]
    fn framing_and_connection_headers_are_the_probes_own() {
        let probe = HttpProbe {
            method: Method::POST,
            path: String::new(),
            host: Some("svc.local".into()),
            headers: vec![
                (header::HOST, HeaderValue::from_static("evil")),
                (header::CONNECTION, HeaderValue::from_static("keep-alive")),
                (
                    header::TRANSFER_ENCODING,
                    HeaderValue::from_static("chunked"),
                ),
                (header::USER_AGENT, HeaderValue::from_static("mine")),
            ],
            ..HttpProbe::default()
        };
        let req = String::from_utf8(encode_request(addr(), &probe).unwrap()).unwrap();
        assert_eq!(
            req,
            "POST / HTTP/1.1\r\nHost: svc.local\r\nConnection: close\r\n\
             Content-Length: 0\r\nuser-agent: mine\r\n\r\n"
        );
    }

    #[test]
    fn unsendable_paths_and_hosts_are_refused() {
        for path in ["/a b", "/a\r\nX: y", "/\u{e9}"] {
            let probe = HttpProbe {
                path: path.into(),
                ..HttpProbe::default()
            };
            assert!(encode_request(addr(), &probe).is_err(), "{path:?}");
        }
        for host in ["", "a b", "a\r\n"] {
            let probe = HttpProbe {
                host: Some(host.into()),
                ..HttpProbe::default()
            };
            assert!(encode_request(addr(), &probe).is_err(), "{host:?}");
        }
    }

    #[test]
    fn ipv6_default_host_is_bracketed() {
        let probe = HttpProbe::default();
        let req = encode_request("[::1]:81".parse().unwrap(), &probe).unwrap();
        assert!(req.starts_with(b"GET / HTTP/1.1\r\nHost: [::1]:81\r\n"));
    }

    #[test]
    fn long_needles_are_cut_on_a_char_boundary() {
        let long = "\u{e9}".repeat(100);
        let q = quoted(&long);
        assert_eq!(q.chars().count(), MAX_QUOTED + 3);
        assert_eq!(quoted("ready"), "ready");
    }
}
