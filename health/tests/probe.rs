//! Active probes against real loopback servers, under both monoio drivers.
//!
//! Each server runs on std threads: a listener thread accepts connections for the rest of the
//! test process and hands each to a handler thread, so one server serves the io_uring and the
//! legacy run of a test alike.

use std::{
    future::Future,
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{mpsc, Arc},
    thread,
    time::{Duration, Instant},
};

use headwater_health::probe::{run_probe, HttpProbe, ProbeKind, ProbeResult};
use http::{HeaderName, HeaderValue, Method};
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

/// A generous deadline for probes that are expected to finish on their own.
const PATIENT: Duration = Duration::from_secs(5);

/// Runs the async body produced by `body` on an io_uring runtime (skipped with a message when
/// io_uring is unavailable) and then on a legacy (epoll) runtime, both with timers enabled.
fn on_both_drivers<F, Fut>(body: F)
where
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = ()>,
{
    match RuntimeBuilder::<IoUringDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(mut rt) => rt.block_on(body("io_uring")),
        Err(e) => println!("io_uring unavailable ({e}): skipping the io_uring variant"),
    }
    let mut rt = RuntimeBuilder::<LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("legacy runtime");
    rt.block_on(body("legacy"));
}

/// A server on 127.0.0.1 that runs `handler` on its own thread for every connection.
fn serve<H>(handler: H) -> SocketAddr
where
    H: Fn(TcpStream) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let handler = Arc::new(handler);
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let handler = Arc::clone(&handler);
            thread::spawn(move || handler(conn));
        }
    });
    addr
}

/// Reads a request head (up to the blank line) with a 5 s read timeout; returns it as read.
fn read_request(conn: &mut TcpStream) -> Vec<u8> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    got
}

/// Waits until the peer closes (or 5 s pass); returns whether it closed.
fn wait_for_close(conn: &mut TcpStream) -> bool {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut chunk = [0u8; 1024];
    loop {
        match conn.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A server that reads the request, writes `response` and waits for the probe to close.
fn respond_with(response: &'static [u8]) -> SocketAddr {
    serve(move |mut conn| {
        read_request(&mut conn);
        let _ = conn.write_all(response);
        wait_for_close(&mut conn);
    })
}

fn http(probe: HttpProbe) -> ProbeKind {
    ProbeKind::Http(probe)
}

fn get() -> ProbeKind {
    http(HttpProbe::default())
}

fn expecting(needle: &str) -> ProbeKind {
    http(HttpProbe {
        body_contains: Some(needle.to_string()),
        ..HttpProbe::default()
    })
}

fn assert_ok(res: &ProbeResult, detail: &str, driver: &str) {
    assert!(res.ok, "{driver}: expected ok, got {res:?}");
    assert_eq!(res.detail, detail, "{driver}");
}

fn assert_fails(res: &ProbeResult, detail: &str, driver: &str) {
    assert!(!res.ok, "{driver}: expected a failure, got {res:?}");
    assert!(
        res.detail.contains(detail),
        "{driver}: detail {:?} lacks {detail:?}",
        res.detail
    );
}

/// Asserts that the probe failed with exactly `detail`.
fn assert_fails_with(res: &ProbeResult, detail: &str, driver: &str) {
    assert!(!res.ok, "{driver}: {res:?}");
    assert_eq!(res.detail, detail, "{driver}");
}

/// Runs `kind` against `addr` (deadline [`PATIENT`]) under both drivers and passes each
/// result to `check` with the driver's name.
fn probe_on_both(addr: SocketAddr, kind: ProbeKind, check: impl Fn(&ProbeResult, &str)) {
    on_both_drivers(|driver| {
        let (kind, check) = (&kind, &check);
        async move { check(&run_probe(addr, kind, PATIENT).await, driver) }
    });
}

/// Asserts under both drivers that `kind` against `addr` passes with exactly `detail`.
fn probe_passes(addr: SocketAddr, kind: ProbeKind, detail: &str) {
    probe_on_both(addr, kind, |res, driver| assert_ok(res, detail, driver));
}

/// Asserts under both drivers that `kind` against `addr` fails with exactly `detail`.
fn probe_fails_with(addr: SocketAddr, kind: ProbeKind, detail: &str) {
    probe_on_both(addr, kind, |res, driver| {
        assert_fails_with(res, detail, driver)
    });
}

/// Asserts under both drivers that `kind` against `addr` fails with a detail containing `part`.
fn probe_fails(addr: SocketAddr, kind: ProbeKind, part: &str) {
    probe_on_both(addr, kind, |res, driver| assert_fails(res, part, driver));
}

/// Asserts under both drivers that `kind` against `addr` with `timeout` fails with exactly
/// `detail`, having waited for the deadline (at least half of it) and given up less than 1 s
/// after it.
fn probe_times_out(addr: SocketAddr, kind: ProbeKind, timeout: Duration, detail: &str) {
    on_both_drivers(|driver| {
        let kind = &kind;
        async move {
            let start = Instant::now();
            let res = run_probe(addr, kind, timeout).await;
            let elapsed = start.elapsed();
            assert_fails_with(&res, detail, driver);
            assert!(
                elapsed >= timeout / 2,
                "{driver}: gave up early: {elapsed:?}"
            );
            assert!(
                elapsed < timeout + Duration::from_secs(1),
                "{driver}: {elapsed:?}"
            );
        }
    });
}

/// Waits (up to 10 s) for the server's report from `wait_for_close` and asserts that the probe
/// closed the connection.
fn assert_closed_by_probe(rx: &mpsc::Receiver<bool>, driver: &str) {
    let closed = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server saw it");
    assert!(closed, "{driver}: the probe left the connection open");
}

/// A port with nothing listening on it: bind a listener, take its port, drop it.
fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    addr
}

#[test]
fn tcp_connect_ok_and_closed_after() {
    let (tx, rx) = mpsc::channel();
    let addr = serve(move |mut conn| {
        let _ = tx.send(wait_for_close(&mut conn));
    });
    on_both_drivers(|driver| {
        let rx = &rx;
        async move {
            let res = run_probe(addr, &ProbeKind::Tcp, PATIENT).await;
            assert_ok(&res, "ok (connected)", driver);
            assert!(res.latency < PATIENT, "{driver}: {res:?}");
            assert_closed_by_probe(rx, driver);
        }
    });
}

#[test]
fn tcp_connect_refused() {
    probe_fails_with(closed_port(), ProbeKind::Tcp, "connect refused");
}

#[test]
fn http_connect_refused() {
    probe_fails_with(closed_port(), get(), "connect refused");
}

#[test]
fn http_200_ok_and_connection_closed_after() {
    let (tx, rx) = mpsc::channel();
    let addr = serve(move |mut conn| {
        read_request(&mut conn);
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
        let _ = tx.send(wait_for_close(&mut conn));
    });
    on_both_drivers(|driver| {
        let rx = &rx;
        async move {
            let res = run_probe(addr, &get(), PATIENT).await;
            assert_ok(&res, "ok (200)", driver);
            assert_closed_by_probe(rx, driver);
        }
    });
}

#[test]
fn http_503_is_not_ok() {
    let addr = respond_with(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
    probe_fails_with(addr, get(), "status 503 not in 200-399");
}

#[test]
fn custom_expected_status_range() {
    let addr = respond_with(b"HTTP/1.1 204 No Content\r\n\r\n");
    let expect_status = |expect_status| {
        http(HttpProbe {
            expect_status,
            ..HttpProbe::default()
        })
    };
    probe_fails_with(addr, expect_status(200..=200), "status 204 not in 200-200");
    probe_passes(addr, expect_status(200..=299), "ok (204)");
}

#[test]
fn body_contains_present_with_content_length() {
    let addr = respond_with(b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n{\"status\":\"ready\"");
    probe_passes(addr, expecting("ready"), "ok (200)");
}

#[test]
fn body_contains_absent() {
    let addr = respond_with(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nstarting");
    probe_fails_with(addr, expecting("ready"), "body lacks \"ready\"");
}

#[test]
fn body_contains_found_only_after_dechunking() {
    // On the wire "ready" never appears: it is split across two chunks.
    let addr = respond_with(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nrea\r\n2\r\ndy\r\n0\r\n\r\n",
    );
    probe_passes(addr, expecting("ready"), "ok (200)");
    // Chunk framing does not leak into the body.
    probe_fails_with(addr, expecting("3\r\nrea"), "body lacks \"3\\r\\nrea\"");
}

#[test]
fn body_contains_in_a_close_delimited_body_sent_slowly() {
    let addr = serve(|mut conn| {
        read_request(&mut conn);
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\n\r\nall systems ");
        thread::sleep(Duration::from_millis(50));
        let _ = conn.write_all(b"rea");
        thread::sleep(Duration::from_millis(50));
        let _ = conn.write_all(b"dy");
        // The body ends when the server closes.
    });
    probe_passes(addr, expecting("ready"), "ok (200)");
    probe_fails_with(addr, expecting("steady"), "body lacks \"steady\"");
}

#[test]
fn body_is_examined_up_to_64_kib_only() {
    let addr = serve(|mut conn| {
        read_request(&mut conn);
        let mut response = b"HTTP/1.1 200 OK\r\nContent-Length: 70005\r\n\r\n".to_vec();
        response.extend(std::iter::repeat_n(b'x', 70_000));
        response.extend_from_slice(b"ready");
        let _ = conn.write_all(&response);
        wait_for_close(&mut conn);
    });
    probe_fails_with(
        addr,
        expecting("ready"),
        "body lacks \"ready\" in its first 64 KiB",
    );
}

#[test]
fn truncated_body_is_not_ok() {
    let addr = serve(|mut conn| {
        read_request(&mut conn);
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nnot yet");
    });
    probe_fails_with(
        addr,
        expecting("ready"),
        "connection closed before the body ended",
    );
}

#[test]
fn interim_responses_are_skipped() {
    let addr = respond_with(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nready",
    );
    probe_passes(addr, expecting("ready"), "ok (200)");
}

#[test]
fn server_that_never_answers_times_out() {
    let addr = serve(|mut conn| {
        read_request(&mut conn);
        // Hold the connection, silent, until the probe gives up and closes it.
        wait_for_close(&mut conn);
    });
    probe_times_out(
        addr,
        get(),
        Duration::from_millis(300),
        "timed out after 300ms (response head)",
    );
}

/// Writes `bytes` one at a time, `every` apart, until the peer goes away.
fn trickle(conn: &mut TcpStream, bytes: &[u8], every: Duration) {
    for b in bytes.iter().cycle() {
        if conn.write_all(std::slice::from_ref(b)).is_err() {
            return;
        }
        thread::sleep(every);
    }
}

#[test]
fn trickled_head_times_out() {
    let addr = serve(|mut conn| {
        read_request(&mut conn);
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\n");
        trickle(&mut conn, b"X-Slow: aaaa\r\n", Duration::from_millis(20));
    });
    probe_times_out(
        addr,
        get(),
        Duration::from_millis(400),
        "timed out after 400ms (response head)",
    );
}

#[test]
fn trickled_body_times_out() {
    let addr = serve(|mut conn| {
        read_request(&mut conn);
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        trickle(&mut conn, b"1\r\nz\r\n", Duration::from_millis(20));
    });
    probe_times_out(
        addr,
        expecting("ready"),
        Duration::from_millis(400),
        "timed out after 400ms (body)",
    );
}

#[test]
fn zero_timeout_fails_without_hanging() {
    let addr = serve(|mut conn| {
        read_request(&mut conn);
        wait_for_close(&mut conn);
    });
    on_both_drivers(|driver| async move {
        for kind in [ProbeKind::Tcp, get()] {
            let start = Instant::now();
            let res = run_probe(addr, &kind, Duration::ZERO).await;
            assert!(start.elapsed() < Duration::from_secs(1), "{driver}");
            // A loopback connect may complete on its first poll, before the deadline is looked
            // at, so a TCP check may pass; this server never answers, so an HTTP check cannot.
            if matches!(kind, ProbeKind::Http(_)) {
                assert!(!res.ok, "{driver}: {res:?}");
            }
            if !res.ok {
                assert!(
                    res.detail.starts_with("timed out after 0ns ("),
                    "{driver}: {res:?}"
                );
            }
        }
    });
}

#[test]
fn garbage_is_an_invalid_response() {
    for garbage in [
        &b"\x00\x01\x02 garbage \xff\r\n\r\n"[..],
        b"HELLO WORLD\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ] {
        let addr = serve(move |mut conn| {
            read_request(&mut conn);
            let _ = conn.write_all(garbage);
            wait_for_close(&mut conn);
        });
        probe_fails(addr, get(), "invalid response: ");
    }
}

#[test]
fn bad_chunk_is_an_invalid_response() {
    let addr = respond_with(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nready\r\n0\r\n\r\n",
    );
    probe_fails(addr, expecting("ready"), "invalid response: ");
}

#[test]
fn huge_head_is_an_invalid_response() {
    let addr = serve(|mut conn| {
        read_request(&mut conn);
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\n");
        let line = format!("X-Pad: {}\r\n", "a".repeat(1000));
        // Far past the parser's 64 KiB head limit, never ending the head.
        for _ in 0..200 {
            if conn.write_all(line.as_bytes()).is_err() {
                return;
            }
        }
        wait_for_close(&mut conn);
    });
    probe_fails_with(addr, get(), "invalid response: response head too large");
}

#[test]
fn reset_before_head() {
    let addr = serve(|mut conn| {
        read_request(&mut conn);
        // SO_LINGER 0: close() sends RST instead of FIN.
        let _ = socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO));
        drop(conn);
    });
    probe_fails_with(addr, get(), "connection reset before response head");
}

#[test]
fn closed_before_head() {
    let addr = serve(|mut conn| {
        read_request(&mut conn);
        let _ = conn.shutdown(Shutdown::Write);
        wait_for_close(&mut conn);
    });
    probe_fails_with(addr, get(), "connection closed before response head");
}

#[test]
fn closed_in_the_middle_of_the_head() {
    let addr = serve(|mut conn| {
        read_request(&mut conn);
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-");
        let _ = conn.shutdown(Shutdown::Write);
        wait_for_close(&mut conn);
    });
    probe_fails_with(
        addr,
        get(),
        "connection closed in the middle of the response head",
    );
}

/// A server that records each request head and answers 200.
fn recording_server() -> (SocketAddr, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let addr = serve(move |mut conn| {
        let request = read_request(&mut conn);
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let _ = tx
            .lock()
            .unwrap()
            .send(String::from_utf8_lossy(&request).into_owned());
        wait_for_close(&mut conn);
    });
    (addr, rx)
}

/// Runs `probe` against a recording server under both drivers, asserts that it succeeds with
/// "ok (200)", and passes the request head the server received (within 10 s) to `check`, with the
/// server's address and the driver.
fn check_request_sent<C>(probe: HttpProbe, check: C)
where
    C: Fn(&str, SocketAddr, &str),
{
    let (addr, rx) = recording_server();
    let probe = http(probe);
    on_both_drivers(|driver| {
        let (rx, probe, check) = (&rx, &probe, &check);
        async move {
            assert_ok(&run_probe(addr, probe, PATIENT).await, "ok (200)", driver);
            let request = rx.recv_timeout(Duration::from_secs(10)).expect("request");
            check(&request, addr, driver);
        }
    });
}

#[test]
fn request_arrives_as_configured() {
    let probe = HttpProbe {
        path: "/v1/models?check=1".into(),
        host: Some("llm.internal".into()),
        headers: vec![
            (
                HeaderName::from_static("authorization"),
                HeaderValue::from_static("Bearer sk-test"),
            ),
            (
                HeaderName::from_static("x-probe"),
                HeaderValue::from_static("1"),
            ),
        ],
        ..HttpProbe::default()
    };
    check_request_sent(probe, |request, _, driver| {
        assert_eq!(
            request,
            "GET /v1/models?check=1 HTTP/1.1\r\n\
             Host: llm.internal\r\n\
             User-Agent: headwater-health\r\n\
             Connection: close\r\n\
             authorization: Bearer sk-test\r\n\
             x-probe: 1\r\n\r\n",
            "{driver}"
        );
    });
}

#[test]
fn default_host_is_the_endpoint_address_and_head_gets_no_body() {
    let probe = HttpProbe {
        method: Method::HEAD,
        path: "/healthz".into(),
        ..HttpProbe::default()
    };
    // The whole head: the endpoint address as Host, and no framing header (unlike POST, PUT
    // and PATCH, which get `Content-Length: 0`).
    check_request_sent(probe, |request, addr, driver| {
        assert_eq!(
            request,
            format!(
                "HEAD /healthz HTTP/1.1\r\n\
                 Host: {addr}\r\n\
                 User-Agent: headwater-health\r\n\
                 Connection: close\r\n\r\n"
            ),
            "{driver}"
        );
    });
}

#[test]
fn invalid_probe_does_not_connect() {
    let (addr, rx) = recording_server();
    on_both_drivers(|driver| {
        let rx = &rx;
        async move {
            let probe = http(HttpProbe {
                path: "/x HTTP/1.1\r\nX-Injected: 1\r\n".into(),
                ..HttpProbe::default()
            });
            let res = run_probe(addr, &probe, PATIENT).await;
            assert_fails(&res, "invalid probe: ", driver);
            assert!(
                rx.recv_timeout(Duration::from_millis(200)).is_err(),
                "{driver}: a request was sent"
            );
        }
    });
}

/// A listener that never accepts and whose accept queue is full, so that further connection
/// attempts hang (Linux drops their SYNs). `None` if the queue could not be filled.
fn unresponsive_listener() -> Option<(socket2::Socket, Vec<TcpStream>, SocketAddr)> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    let bind: SocketAddr = "127.0.0.1:0".parse().ok()?;
    socket.bind(&bind.into()).ok()?;
    socket.listen(0).ok()?;
    let addr = socket.local_addr().ok()?.as_socket()?;
    let mut queued = Vec::new();
    for _ in 0..16 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(conn) => queued.push(conn),
            Err(_) => return Some((socket, queued, addr)),
        }
    }
    None
}

#[test]
fn connect_that_hangs_times_out() {
    let Some((_listener, _queued, addr)) = unresponsive_listener() else {
        println!("could not fill a listener's accept queue: skipping");
        return;
    };
    for kind in [ProbeKind::Tcp, get()] {
        probe_times_out(
            addr,
            kind,
            Duration::from_millis(300),
            "timed out after 300ms (connect)",
        );
    }
}
