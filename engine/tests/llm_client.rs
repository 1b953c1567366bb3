//! The provider HTTP client (`headwater_engine::llm::client`) on real loopback sockets, against
//! in-process servers on std threads, under both monoio drivers: framing (content-length,
//! chunked, close-delimited), streaming, keep-alive pooling and its limits, the transparent
//! retry of a dead pooled connection, head/idle timeouts, resets, garbage, HTTPS with a test CA
//! (and a name mismatch), name resolution, and body size limits.
//!
//! io_uring cases are skipped (with a note on stderr) where io_uring cannot be set up; set
//! `HEADWATER_REQUIRE_IO_URING=1` to make that a failure instead.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use common::certs::Ca;
use common::drivers::{block_on, each_driver};
use headwater_engine::{
    llm::client::{ClientError, ClientErrorKind, ClientSettings, ProviderClient, ProviderResponse},
    runtime::DriverKind,
    tls::{
        rustls::{
            self,
            pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
        },
        ClientTlsConfig, PemSource, RootSource, TlsConnector,
    },
};
use headwater_llm::{ErrorKind, Origin, UpstreamRequest};
use http::{HeaderMap, HeaderValue, Method};

/// Deadline where an answer is expected.
const LONG: Duration = Duration::from_secs(10);
/// Deadline that is expected to pass.
const SHORT: Duration = Duration::from_millis(200);
/// The API key sent with every request; it must never appear in an error.
const SECRET: &str = "sk-test-secret-1234567890";

// ---------------------------------------------------------------------------------------------
// In-process servers

trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

/// A request as the server received it.
#[derive(Debug, Clone)]
struct Captured {
    /// The raw head, as text.
    head: String,
    body: Bytes,
    /// Which accepted connection (0-based) it came on.
    conn: usize,
}

/// The server side of one accepted connection.
struct Peer {
    io: Box<dyn Io>,
    /// The TCP socket (a clone), for resets.
    tcp: TcpStream,
    buf: BytesMut,
    conn: usize,
    log: Arc<Mutex<Vec<Captured>>>,
}

impl Peer {
    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        match self.io.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Err(_) => 0,
        }
    }

    /// Reads one request (head and body); `None` when the client closed (or the TLS handshake
    /// failed).
    fn request(&mut self) -> Option<Captured> {
        let (head, body) = common::read_request(&mut self.io, &mut self.buf)?;
        let captured = Captured {
            head: String::from_utf8_lossy(head.as_bytes()).into_owned(),
            body,
            conn: self.conn,
        };
        self.log.lock().unwrap().push(captured.clone());
        Some(captured)
    }

    fn send(&mut self, bytes: &[u8]) {
        let _ = self.io.write_all(bytes);
        let _ = self.io.flush();
    }

    /// Waits until the client closes the connection (or 30 s pass).
    fn wait_for_close(&mut self) {
        let _ = self.tcp.set_read_timeout(Some(Duration::from_secs(30)));
        while self.fill() > 0 {}
    }

    /// Closes the connection with a reset (RST) instead of a FIN.
    fn reset(self) {
        let _ = socket2::SockRef::from(&self.tcp).set_linger(Some(Duration::ZERO));
    }
}

/// A server on 127.0.0.1 that runs `handler` for each connection on its own thread.
struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<Captured>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn plain(handler: impl Fn(Peer) + Send + Sync + 'static) -> Server {
        Server::start(None, handler)
    }

    fn tls(
        config: Arc<rustls::ServerConfig>,
        handler: impl Fn(Peer) + Send + Sync + 'static,
    ) -> Server {
        Server::start(Some(config), handler)
    }

    fn start(
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: impl Fn(Peer) + Send + Sync + 'static,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        {
            let (accepted, log, stop) = (accepted.clone(), log.clone(), stop.clone());
            thread::spawn(move || {
                for tcp in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(tcp) = tcp else { continue };
                    let conn = accepted.fetch_add(1, Ordering::SeqCst);
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                    let _ = tcp.set_nodelay(true);
                    let clone = tcp.try_clone().unwrap();
                    let io: Box<dyn Io> = match &tls {
                        None => Box::new(tcp),
                        Some(cfg) => Box::new(rustls::StreamOwned::new(
                            rustls::ServerConnection::new(cfg.clone()).unwrap(),
                            tcp,
                        )),
                    };
                    let peer = Peer {
                        io,
                        tcp: clone,
                        buf: BytesMut::new(),
                        conn,
                        log: log.clone(),
                    };
                    let handler = handler.clone();
                    thread::spawn(move || handler(peer));
                }
            });
        }
        Server {
            addr,
            accepted,
            log,
            stop,
        }
    }

    fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// The authority `localhost:{port}`.
    fn localhost(&self) -> String {
        format!("localhost:{}", self.addr.port())
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<Captured> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// A handler answering every request on the connection with `response`.
fn answer_all(response: &'static [u8]) -> impl Fn(Peer) + Send + Sync + 'static {
    move |mut peer: Peer| {
        while peer.request().is_some() {
            peer.send(response);
        }
    }
}

/// A handler that reads one request, sends `response` and waits for the client to close.
fn send_then_wait(response: &'static [u8]) -> impl Fn(Peer) + Send + Sync + 'static {
    move |mut peer: Peer| {
        if peer.request().is_some() {
            peer.send(response);
            peer.wait_for_close();
        }
    }
}

/// A handler that reads one request and closes without answering.
fn hang_up(mut peer: Peer) {
    peer.request();
}

const OK_JSON: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-request-id: r1\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";

// ---------------------------------------------------------------------------------------------
// Client side

fn settings() -> ClientSettings {
    ClientSettings {
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        max_idle_per_host: 4,
        max_lifetime: None,
    }
}

/// A client with the default settings, trusting the system's roots.
fn client() -> ProviderClient {
    client_with(settings())
}

fn client_with(settings: ClientSettings) -> ProviderClient {
    ProviderClient::new(
        settings,
        TlsConnector::new(&ClientTlsConfig::default()).unwrap(),
    )
}

/// A plain server running `handler`, a client with the default settings, and a request to the
/// server.
fn plain(
    handler: impl Fn(Peer) + Send + Sync + 'static,
) -> (Server, ProviderClient, UpstreamRequest) {
    plain_with(settings(), handler)
}

/// Like [`plain`], with a client with `settings`.
fn plain_with(
    settings: ClientSettings,
    handler: impl Fn(Peer) + Send + Sync + 'static,
) -> (Server, ProviderClient, UpstreamRequest) {
    let server = Server::plain(handler);
    let req = request(&server.authority(), false);
    (server, client_with(settings), req)
}

/// Sends `req` twice: each answer comes on a fresh connection and leaves none idle.
fn assert_not_pooled(
    kind: DriverKind,
    server: &Server,
    client: &ProviderClient,
    req: &UpstreamRequest,
) {
    block_on(kind, async {
        for _ in 0..2 {
            let resp = client.send(req, LONG).await.unwrap();
            assert!(!resp.reused_connection());
            resp.read_all(LONG, 1024).await.unwrap();
            assert_eq!(client.idle_connections(), 0);
        }
    });
    assert_eq!(server.accepted(), 2);
}

/// Sends `req` and reads the whole answer (up to 1 KiB).
async fn fetch(client: &ProviderClient, req: &UpstreamRequest) -> Bytes {
    let resp = client.send(req, LONG).await.unwrap();
    resp.read_all(LONG, 1024).await.unwrap()
}

/// The next piece of the body (`None` at its end).
async fn next_chunk(resp: &mut ProviderResponse) -> Option<Bytes> {
    resp.chunk(LONG).await.unwrap()
}

fn request(authority: &str, tls: bool) -> UpstreamRequest {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let mut auth = HeaderValue::from_str(&format!("Bearer {SECRET}")).unwrap();
    auth.set_sensitive(true);
    headers.insert("authorization", auth);
    UpstreamRequest {
        method: Method::POST,
        tls,
        authority: authority.to_owned(),
        path_and_query: "/v1/chat/completions".into(),
        headers,
        body: Bytes::from_static(br#"{"model":"m","messages":[]}"#),
    }
}

/// Checks the error's kind and that its texts do not leak the key.
fn expect_error(
    res: Result<impl std::fmt::Debug, ClientError>,
    kind: ClientErrorKind,
) -> ClientError {
    let e = match res {
        Ok(v) => panic!("expected a {kind} error, got {v:?}"),
        Err(e) => e,
    };
    assert_eq!(e.kind(), kind, "{e}");
    for text in [
        e.to_string(),
        format!("{e:?}"),
        e.to_llm_error().to_string(),
    ] {
        assert!(!text.contains(SECRET), "the key leaked: {text}");
    }
    e
}

/// Checks what a client of the gateway would be told: a `kind` error from the gateway that
/// names no address.
fn assert_told(e: &ClientError, kind: ErrorKind) {
    let llm = e.to_llm_error();
    assert_eq!(llm.kind, kind);
    assert_eq!(llm.origin, Origin::Gateway);
    assert!(!llm.message.contains("127.0.0.1"), "{}", llm.message);
    assert!(!llm.message.contains("no-such-host"), "{}", llm.message);
}

// ---------------------------------------------------------------------------------------------
// Framing

#[test]
fn content_length_response_and_the_request_on_the_wire() {
    each_driver("content_length_response", |kind| {
        let (server, client, req) = plain(answer_all(OK_JSON));
        let body = block_on(kind, async {
            let resp = client.send(&req, LONG).await.unwrap();
            assert_eq!(resp.status, 200);
            assert_eq!(resp.header("x-request-id"), Some("r1"));
            assert_eq!(resp.header("content-type"), Some("application/json"));
            assert!(!resp.reused_connection());
            resp.read_all(LONG, 1024).await.unwrap()
        });
        assert_eq!(&body[..], b"{\"ok\":true}");
        let seen = server.requests();
        assert_eq!(seen.len(), 1);
        let head = &seen[0].head;
        assert!(
            head.starts_with(&format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\n",
                server.authority()
            )),
            "{head}"
        );
        for line in [
            "content-type: application/json\r\n",
            &format!("authorization: Bearer {SECRET}\r\n"),
            "accept-encoding: identity\r\n",
            "user-agent: headwater\r\n",
            &format!("content-length: {}\r\n", req.body.len()),
        ] {
            assert!(head.contains(line), "{line:?} missing from {head}");
        }
        assert_eq!(seen[0].body, req.body);
        assert_eq!(client.idle_connections(), 1);
    });
}

#[test]
fn caller_headers_win_over_the_defaults() {
    each_driver("caller_headers_win", |kind| {
        let (server, client, mut req) = plain(answer_all(OK_JSON));
        req.headers
            .insert("user-agent", HeaderValue::from_static("custom/1"));
        req.headers
            .insert("accept-encoding", HeaderValue::from_static("gzip"));
        req.headers
            .insert("connection", HeaderValue::from_static("close"));
        block_on(kind, async {
            fetch(&client, &req).await;
        });
        let head = &server.requests()[0].head;
        assert!(head.contains("user-agent: custom/1\r\n"), "{head}");
        assert!(head.contains("accept-encoding: gzip\r\n"), "{head}");
        assert!(
            !head.contains("headwater") && !head.contains("identity"),
            "{head}"
        );
        assert!(!head.to_ascii_lowercase().contains("connection:"), "{head}");
    });
}

#[test]
fn chunked_response_with_trailers_then_reuse() {
    each_driver("chunked_response", |kind| {
        let (server, client, req) = plain(answer_all(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: 1\r\n\r\n",
        ));
        block_on(kind, async {
            for i in 0..2 {
                let resp = client.send(&req, LONG).await.unwrap();
                assert_eq!(resp.reused_connection(), i == 1);
                let body = resp.read_all(LONG, 1024).await.unwrap();
                assert_eq!(&body[..], b"hello world");
            }
        });
        assert_eq!(server.accepted(), 1);
    });
}

#[test]
fn interim_responses_are_skipped() {
    each_driver("interim_responses", |kind| {
        let (_server, client, req) = plain(answer_all(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
        ));
        block_on(kind, async {
            let resp = client.send(&req, LONG).await.unwrap();
            assert_eq!(resp.status, 201);
            assert!(resp.header("link").is_none());
            assert_eq!(&resp.read_all(LONG, 1024).await.unwrap()[..], b"ok");
        });
    });
}

#[test]
fn bodiless_response_frees_the_connection_at_once() {
    each_driver("bodiless_response", |kind| {
        let (_server, client, req) = plain(answer_all(b"HTTP/1.1 204 No Content\r\n\r\n"));
        block_on(kind, async {
            let mut resp = client.send(&req, LONG).await.unwrap();
            assert_eq!(resp.status, 204);
            assert!(resp.is_finished());
            assert_eq!(client.idle_connections(), 1);
            assert_eq!(next_chunk(&mut resp).await, None);
        });
    });
}

// ---------------------------------------------------------------------------------------------
// Streaming

#[test]
fn chunks_arrive_before_the_body_ends() {
    each_driver("streaming", |kind| {
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let go_rx = Mutex::new(go_rx);
        let (_server, client, req) = plain(move |mut peer: Peer| {
            if peer.request().is_none() {
                return;
            }
            peer.send(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n");
            // The rest only once the client has seen the first event: a client that waited
            // for the whole body would hang here.
            let go = go_rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
            assert!(go.is_ok(), "the client did not get the first chunk");
            thread::sleep(Duration::from_millis(50));
            peer.send(b"9\r\ndata: 2\n\n\r\n");
            thread::sleep(Duration::from_millis(50));
            peer.send(b"0\r\n\r\n");
            peer.request();
        });
        block_on(kind, async {
            let mut resp = client.send(&req, LONG).await.unwrap();
            assert_eq!(
                next_chunk(&mut resp).await.as_deref(),
                Some(&b"data: 1\n\n"[..])
            );
            assert_eq!(client.idle_connections(), 0);
            go_tx.send(()).unwrap();
            let mut rest = Vec::new();
            while let Some(c) = next_chunk(&mut resp).await {
                rest.extend_from_slice(&c);
            }
            assert_eq!(rest, b"data: 2\n\n");
            assert!(resp.is_finished());
            assert_eq!(next_chunk(&mut resp).await, None);
            assert_eq!(client.idle_connections(), 1);
        });
    });
}

#[test]
fn close_delimited_body_ends_at_eof_and_is_not_pooled() {
    each_driver("close_delimited", |kind| {
        let (_server, client, req) = plain(|mut peer: Peer| {
            if peer.request().is_some() {
                peer.send(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nfirst ");
                thread::sleep(Duration::from_millis(50));
                peer.send(b"second");
            }
        });
        block_on(kind, async {
            let resp = client.send(&req, LONG).await.unwrap();
            assert_eq!(
                &resp.read_all(LONG, 1024).await.unwrap()[..],
                b"first second"
            );
            assert_eq!(client.idle_connections(), 0);
        });
    });
}

// ---------------------------------------------------------------------------------------------
// Pooling

#[test]
fn keep_alive_reuses_one_connection() {
    each_driver("keep_alive", |kind| {
        let (server, client, req) = plain(answer_all(OK_JSON));
        block_on(kind, async {
            for i in 0..3 {
                let resp = client.send(&req, LONG).await.unwrap();
                assert_eq!(resp.reused_connection(), i > 0);
                assert_eq!(client.idle_connections(), 0, "in use, not idle");
                resp.read_all(LONG, 1024).await.unwrap();
                assert_eq!(client.idle_connections(), 1);
            }
        });
        assert_eq!(server.accepted(), 1);
        let conns: Vec<usize> = server.requests().iter().map(|r| r.conn).collect();
        assert_eq!(conns, [0, 0, 0]);
    });
}

#[test]
fn concurrent_requests_use_separate_connections_and_both_are_pooled() {
    each_driver("concurrent", |kind| {
        let (server, client, req) = plain(answer_all(OK_JSON));
        block_on(kind, async {
            let a = client.send(&req, LONG).await.unwrap();
            let b = client.send(&req, LONG).await.unwrap();
            a.read_all(LONG, 1024).await.unwrap();
            b.read_all(LONG, 1024).await.unwrap();
            assert_eq!(client.idle_connections(), 2);
        });
        assert_eq!(server.accepted(), 2);
    });
}

#[test]
fn connection_close_response_is_not_pooled() {
    each_driver("connection_close", |kind| {
        // The server would serve a second request on the same connection: only the header
        // tells the client not to reuse it.
        let (server, client, req) = plain(answer_all(
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
        ));
        assert_not_pooled(kind, &server, &client, &req);
    });
}

#[test]
fn http10_response_without_keep_alive_is_not_pooled() {
    each_driver("http10", |kind| {
        let (_server, client, req) = plain(answer_all(
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ));
        block_on(kind, async {
            let resp = client.send(&req, LONG).await.unwrap();
            assert_eq!(resp.version, http::Version::HTTP_10);
            resp.read_all(LONG, 1024).await.unwrap();
            assert_eq!(client.idle_connections(), 0);
        });
    });
}

#[test]
fn dropped_response_closes_its_connection() {
    each_driver("dropped_response", |kind| {
        let closed = Arc::new(AtomicBool::new(false));
        let (_server, client, req) = {
            let closed = closed.clone();
            plain(move |mut peer: Peer| {
                if peer.request().is_none() {
                    return;
                }
                peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc");
                // The rest is never sent; the client must close, not pool.
                peer.wait_for_close();
                closed.store(true, Ordering::SeqCst);
            })
        };
        block_on(kind, async {
            let mut resp = client.send(&req, LONG).await.unwrap();
            assert_eq!(next_chunk(&mut resp).await.as_deref(), Some(&b"abc"[..]));
            drop(resp);
            assert_eq!(client.idle_connections(), 0);
            let start = Instant::now();
            while !closed.load(Ordering::SeqCst) && start.elapsed() < LONG {
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        assert!(
            closed.load(Ordering::SeqCst),
            "the server never saw the close"
        );
    });
}

#[test]
fn pooled_connection_closed_by_the_server_is_replaced_transparently() {
    each_driver("stale_pooled_fin", |kind| stale_pooled(kind, false));
}

#[test]
fn pooled_connection_reset_by_the_server_is_replaced_transparently() {
    each_driver("stale_pooled_rst", |kind| stale_pooled(kind, true));
}

/// The server answers one request per connection with a keep-alive response and then closes
/// (or resets) the connection; the second request finds the pooled connection dead.
fn stale_pooled(kind: DriverKind, reset: bool) {
    let (server, client, req) = plain(move |mut peer: Peer| {
        if peer.request().is_some() {
            peer.send(OK_JSON);
            thread::sleep(Duration::from_millis(20));
            if reset {
                peer.reset();
            }
        }
    });
    block_on(kind, async {
        fetch(&client, &req).await;
        assert_eq!(client.idle_connections(), 1);
        monoio::time::sleep(Duration::from_millis(200)).await;
        let resp = client.send(&req, LONG).await.unwrap();
        assert!(!resp.reused_connection(), "answered on a fresh connection");
        assert_eq!(
            &resp.read_all(LONG, 1024).await.unwrap()[..],
            b"{\"ok\":true}"
        );
    });
    assert_eq!(server.accepted(), 2);
    // Only the fresh connection saw the second request.
    let conns: Vec<usize> = server.requests().iter().map(|r| r.conn).collect();
    assert_eq!(conns, [0, 1]);
}

#[test]
fn pooling_disabled_keeps_nothing() {
    each_driver("pooling_disabled", |kind| {
        let (server, client, req) = plain_with(
            ClientSettings {
                max_idle_per_host: 0,
                ..settings()
            },
            answer_all(OK_JSON),
        );
        assert_not_pooled(kind, &server, &client, &req);
    });
}

#[test]
fn idle_pooled_connections_expire() {
    each_driver("idle_expiry", |kind| {
        let (server, client, req) = plain_with(
            ClientSettings {
                idle_timeout: Duration::from_millis(100),
                ..settings()
            },
            answer_all(OK_JSON),
        );
        block_on(kind, async {
            fetch(&client, &req).await;
            assert_eq!(client.idle_connections(), 1);
            monoio::time::sleep(Duration::from_millis(150)).await;
            assert_eq!(client.sweep(), 1);
            assert_eq!(client.idle_connections(), 0);
            let resp = client.send(&req, LONG).await.unwrap();
            assert!(!resp.reused_connection());
            resp.read_all(LONG, 1024).await.unwrap();
        });
        assert_eq!(server.accepted(), 2);
    });
}

// ---------------------------------------------------------------------------------------------
// Failures

#[test]
fn head_timeout_when_the_server_stalls() {
    each_driver("head_timeout", |kind| {
        let (server, client, req) = plain(|mut peer: Peer| {
            if peer.request().is_some() {
                peer.wait_for_close();
            }
        });
        block_on(kind, async {
            let start = Instant::now();
            let e = expect_error(client.send(&req, SHORT).await, ClientErrorKind::HeadTimeout);
            let waited = start.elapsed();
            assert!(waited >= SHORT && waited < LONG, "{waited:?}");
            assert!(e.retryable() && e.is_timeout());
            assert_eq!(e.authority(), server.authority());
            assert_told(&e, ErrorKind::Timeout);
            assert_eq!(client.idle_connections(), 0);
        });
    });
}

#[test]
fn idle_timeout_mid_body() {
    each_driver("idle_timeout", |kind| {
        let (_server, client, req) = plain(send_then_wait(
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
        ));
        block_on(kind, async {
            let mut resp = client.send(&req, LONG).await.unwrap();
            assert_eq!(next_chunk(&mut resp).await.as_deref(), Some(&b"abc"[..]));
            let e = expect_error(resp.chunk(SHORT).await, ClientErrorKind::IdleTimeout);
            assert!(e.retryable() && e.is_timeout());
            // The error sticks; the connection is gone.
            expect_error(resp.chunk(LONG).await, ClientErrorKind::IdleTimeout);
            assert!(!resp.is_finished());
            assert_eq!(client.idle_connections(), 0);
        });
    });
}

#[test]
fn reset_mid_body_is_an_error() {
    each_driver("reset_mid_body", |kind| {
        let (_server, client, req) = plain(|mut peer: Peer| {
            if peer.request().is_some() {
                peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789");
                thread::sleep(Duration::from_millis(50));
                peer.reset();
            }
        });
        block_on(kind, async {
            let resp = client.send(&req, LONG).await.unwrap();
            let e = expect_error(resp.read_all(LONG, 1024).await, ClientErrorKind::Reset);
            assert!(e.retryable());
            assert_told(&e, ErrorKind::ProviderError);
            assert_eq!(client.idle_connections(), 0);
        });
    });
}

#[test]
fn close_mid_chunked_body_is_an_error() {
    each_driver("close_mid_chunked", |kind| {
        let (_server, client, req) = plain(|mut peer: Peer| {
            if peer.request().is_some() {
                peer.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n");
            }
        });
        block_on(kind, async {
            let mut resp = client.send(&req, LONG).await.unwrap();
            assert_eq!(next_chunk(&mut resp).await.as_deref(), Some(&b"hello"[..]));
            expect_error(resp.chunk(LONG).await, ClientErrorKind::Reset);
        });
    });
}

#[test]
fn close_before_the_head_on_a_fresh_connection_is_an_error() {
    each_driver("close_before_head", |kind| {
        let (server, client, req) = plain(hang_up);
        block_on(kind, async {
            expect_error(client.send(&req, LONG).await, ClientErrorKind::Reset);
        });
        // Not retried: the provider may have acted on the request.
        assert_eq!(server.accepted(), 1);
    });
}

#[test]
fn garbage_is_a_protocol_error() {
    each_driver("garbage", |kind| {
        for (response, in_head) in [
            (&b"SSH-2.0-OpenSSH_9.6\r\n\r\n"[..], true),
            (
                &b"HTTP/1.1 200 OK\r\ncontent-length: nope\r\n\r\n"[..],
                true,
            ),
            (
                &b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n"[..],
                true,
            ),
            (
                &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"[..],
                false,
            ),
        ] {
            let (_server, client, req) = plain(send_then_wait(response));
            block_on(kind, async {
                let e = if in_head {
                    expect_error(client.send(&req, LONG).await, ClientErrorKind::Protocol)
                } else {
                    let resp = client.send(&req, LONG).await.unwrap();
                    expect_error(resp.read_all(LONG, 1024).await, ClientErrorKind::Protocol)
                };
                assert!(e.retryable());
                assert_eq!(e.to_llm_error().kind, ErrorKind::MalformedResponse);
                assert_eq!(client.idle_connections(), 0);
            });
        }
    });
}

#[test]
fn connection_refused_is_a_retryable_transport_error() {
    each_driver("refused", |kind| {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let client = client();
        let req = request(&addr.to_string(), false);
        block_on(kind, async {
            let e = expect_error(client.send(&req, LONG).await, ClientErrorKind::Connect);
            assert!(e.retryable() && !e.is_timeout());
            assert_eq!(e.peer(), Some(addr));
            assert!(!e.kind().request_may_have_been_sent());
            assert_told(&e, headwater_llm::router::transport_error("").kind);
        });
    });
}

#[test]
fn invalid_authorities_are_refused_before_connecting() {
    each_driver("invalid_authority", |kind| {
        let client = client();
        block_on(kind, async {
            for authority in ["", "host:0", "host:x", "[::1", "bad host:80"] {
                let req = request(authority, false);
                expect_error(
                    client.send(&req, LONG).await,
                    ClientErrorKind::InvalidRequest,
                );
            }
        });
    });
}

// ---------------------------------------------------------------------------------------------
// Size limits

#[test]
fn read_all_over_the_limit_is_too_large() {
    each_driver("too_large", |kind| {
        for (response, limit) in [
            // Known from the head.
            (&b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"[..], 100usize),
            // Found while reading.
            (
                &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3c\r\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n3c\r\nbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n0\r\n\r\n"[..],
                100,
            ),
        ] {
            let (_server, client, req) = plain(send_then_wait(response));
            block_on(kind, async {
                let resp = client.send(&req, LONG).await.unwrap();
                let e = expect_error(resp.read_all(LONG, limit).await, ClientErrorKind::TooLarge);
                assert!(!e.retryable());
                assert_eq!(client.idle_connections(), 0);
            });
        }
        // Exactly at the limit is fine.
        let (_server, client, req) = plain(answer_all(OK_JSON));
        block_on(kind, async {
            let resp = client.send(&req, LONG).await.unwrap();
            assert_eq!(resp.read_all(LONG, 11).await.unwrap().len(), 11);
        });
    });
}

// ---------------------------------------------------------------------------------------------
// Names

#[test]
fn localhost_is_resolved() {
    each_driver("localhost", |kind| {
        let server = Server::plain(answer_all(OK_JSON));
        let client = client();
        // `localhost` may resolve to ::1 first, where nothing listens: the next address is
        // tried.
        let req = request(&server.localhost(), false);
        block_on(kind, async {
            for _ in 0..2 {
                fetch(&client, &req).await;
            }
            assert_eq!(client.resolver().cached_names(), 1);
        });
        assert_eq!(server.accepted(), 1);
        let head = &server.requests()[0].head;
        assert!(
            head.contains(&format!("host: localhost:{}\r\n", server.addr.port())),
            "{head}"
        );
    });
}

#[test]
fn unresolvable_name_is_a_dns_error() {
    each_driver("unresolvable", |kind| {
        let client = client_with(ClientSettings {
            connect_timeout: Duration::from_secs(3),
            ..settings()
        });
        let req = request("no-such-host.invalid:80", false);
        block_on(kind, async {
            let e = expect_error(client.send(&req, LONG).await, ClientErrorKind::Dns);
            assert!(e.retryable());
            assert_told(&e, headwater_llm::router::transport_error("").kind);
        });
    });
}

// ---------------------------------------------------------------------------------------------
// HTTPS

impl Ca {
    /// A server configuration with a certificate for `names`, issued by this CA.
    fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let leaf = self.issue(names, false);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der], key)
        .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A client trusting only this CA.
    fn client(&self) -> ProviderClient {
        let connector = TlsConnector::new(&ClientTlsConfig::with_roots(RootSource::CustomCa(
            PemSource::inline("test CA", self.pem()),
        )))
        .unwrap();
        ProviderClient::new(settings(), connector)
    }
}

/// The CA of the HTTPS tests.
fn test_ca() -> Ca {
    Ca::new("Headwater Client Test CA")
}

#[test]
fn https_with_a_custom_ca_and_reuse() {
    let ca = test_ca();
    let config = ca.server_config(&["localhost", "127.0.0.1"]);
    each_driver("https", |kind| {
        let server = Server::tls(config.clone(), answer_all(OK_JSON));
        let client = ca.client();
        block_on(kind, async {
            for authority in [server.localhost(), server.localhost(), server.authority()] {
                let req = request(&authority, true);
                let resp = client.send(&req, LONG).await.unwrap();
                assert_eq!(resp.status, 200);
                let body = resp.read_all(LONG, 1024).await.unwrap();
                assert_eq!(&body[..], b"{\"ok\":true}");
            }
            // One pooled connection per authority.
            assert_eq!(client.idle_connections(), 2);
        });
        assert_eq!(server.accepted(), 2);
        let seen = server.requests();
        assert_eq!(seen.len(), 3);
        assert!(seen[0]
            .head
            .contains(&format!("authorization: Bearer {SECRET}\r\n")));
    });
}

#[test]
fn https_streaming_and_stale_pooled_session() {
    let ca = test_ca();
    let config = ca.server_config(&["localhost"]);
    each_driver("https_stream", |kind| {
        // One response per connection, then a close without close_notify.
        let server = Server::tls(config.clone(), |mut peer: Peer| {
            if peer.request().is_some() {
                peer.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n");
                thread::sleep(Duration::from_millis(30));
                peer.send(b"3\r\ndef\r\n0\r\n\r\n");
                thread::sleep(Duration::from_millis(30));
            }
        });
        let client = ca.client();
        let req = request(&server.localhost(), true);
        block_on(kind, async {
            for _ in 0..2 {
                let mut resp = client.send(&req, LONG).await.unwrap();
                assert!(!resp.reused_connection());
                assert_eq!(next_chunk(&mut resp).await.as_deref(), Some(&b"abc"[..]));
                assert_eq!(next_chunk(&mut resp).await.as_deref(), Some(&b"def"[..]));
                assert_eq!(next_chunk(&mut resp).await, None);
                assert_eq!(client.idle_connections(), 1);
                monoio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        assert_eq!(server.accepted(), 2);
    });
}

#[test]
fn https_name_mismatch_is_not_retryable() {
    let ca = test_ca();
    let config = ca.server_config(&["provider.example"]);
    each_driver("https_mismatch", |kind| {
        let server = Server::tls(config.clone(), hang_up);
        let client = ca.client();
        let req = request(&server.localhost(), true);
        block_on(kind, async {
            let e = expect_error(client.send(&req, LONG).await, ClientErrorKind::Tls);
            assert!(!e.retryable(), "{e}");
            assert!(!e.kind().request_may_have_been_sent());
            assert_eq!(client.idle_connections(), 0);
        });
        assert!(server.requests().is_empty());
    });
}

#[test]
fn https_untrusted_ca_is_not_retryable() {
    let ca = test_ca();
    let other = test_ca();
    let config = ca.server_config(&["localhost"]);
    each_driver("https_untrusted", |kind| {
        let server = Server::tls(config.clone(), hang_up);
        let client = other.client();
        let req = request(&server.localhost(), true);
        block_on(kind, async {
            let e = expect_error(client.send(&req, LONG).await, ClientErrorKind::Tls);
            assert!(!e.retryable(), "{e}");
        });
    });
}

#[test]
fn https_to_a_plain_server_is_a_retryable_tls_error() {
    each_driver("https_to_plain", |kind| {
        let server = Server::plain(|mut peer: Peer| {
            peer.send(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        });
        let client = test_ca().client();
        let req = request(&server.authority(), true);
        block_on(kind, async {
            let e = expect_error(client.send(&req, LONG).await, ClientErrorKind::Tls);
            assert!(e.retryable(), "{e}");
        });
    });
}
