//! The in-process demo/test upstream servers: every behavior, keep-alive, pipelining, streamed
//! uploads, 100-continue, HTTP/1.0 and prompt stops, driven by plain std TcpStream clients.

mod common;

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use common::raw::{Client, Resp};
use headwater_engine::upstream_demo::{fnv1a64_hex, pattern, Behavior, Fnv1a64, UpstreamServer};
use headwater_http1::{Limits, ResponseParser};
use http::Method;

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn start(behavior: Behavior) -> UpstreamServer {
    UpstreamServer::start("u1", local(), behavior).unwrap()
}

fn fixed(body: &'static str) -> Behavior {
    Behavior::Fixed {
        body: Bytes::from_static(body.as_bytes()),
    }
}

impl Client {
    fn get(&mut self, path: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nhost: up\r\n\r\n").as_bytes());
        self.response(&Method::GET)
    }

    /// Everything left until the server closes.
    fn rest(&mut self) -> Vec<u8> {
        while self.fill() {}
        self.buf.split().to_vec()
    }

    /// Whether the server closed the connection (EOF or reset) without sending anything more.
    fn closed(&mut self) -> bool {
        let mut tmp = [0u8; 64];
        match self.stream.read(&mut tmp) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == ErrorKind::ConnectionReset,
        }
    }
}

fn get_once(addr: SocketAddr, path: &str) -> Resp {
    Client::connect(addr).get(path)
}

#[test]
fn fixed_answers_its_body_with_length_and_name() {
    let up = start(fixed("hello"));
    let r = get_once(up.addr(), "/a");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello");
    assert_eq!(r.header("content-length"), Some("5"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("x-upstream"), Some("u1"));
    assert_eq!(up.name(), "u1");
}

#[test]
fn names_with_control_characters_are_refused() {
    let err = UpstreamServer::start("a\r\nb", local(), fixed("x")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn head_requests_get_the_length_but_no_body() {
    let up = start(fixed("hello"));
    let mut c = Client::connect(up.addr());
    c.send(b"HEAD /h HTTP/1.1\r\nhost: up\r\n\r\n");
    let r = c.response(&Method::HEAD);
    assert_eq!((r.status, r.header("content-length")), (200, Some("5")));
    assert!(r.body.is_empty());
    // The connection is still in sync.
    assert_eq!(c.get("/next").body, b"hello");
}

#[test]
fn echo_reports_method_target_headers_and_body_hash() {
    let up = start(Behavior::Echo);
    let mut c = Client::connect(up.addr());
    c.send(b"POST /p/q?x=1&y=%20 HTTP/1.1\r\nHost: up\r\nX-One: 1\r\nx-two: a b\r\ncontent-length: 11\r\n\r\nhello world");
    let r = c.response(&Method::POST);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-upstream"), Some("u1"));
    let j = r.json();
    assert_eq!(j["upstream"], "u1");
    assert_eq!(j["method"], "POST");
    assert_eq!(j["path"], "/p/q?x=1&y=%20");
    assert_eq!(
        j["headers"],
        serde_json::json!([
            ["Host", "up"],
            ["X-One", "1"],
            ["x-two", "a b"],
            ["content-length", "11"]
        ])
    );
    assert_eq!(j["body_len"], 11);
    assert_eq!(j["body_sha"], fnv1a64_hex(b"hello world"));

    let j = c.get("/empty").json();
    assert_eq!(
        (j["method"].as_str(), j["body_len"].as_u64()),
        (Some("GET"), Some(0))
    );
    assert_eq!(j["body_sha"], fnv1a64_hex(b""));
}

#[test]
fn fnv1a64_matches_reference_values() {
    assert_eq!(fnv1a64_hex(b""), "cbf29ce484222325");
    assert_eq!(fnv1a64_hex(b"a"), "af63dc4c8601ec8c");
    assert_eq!(fnv1a64_hex(b"foobar"), "85944171f73967e8");
    let mut h = Fnv1a64::new();
    h.update(b"foo");
    h.update(b"bar");
    assert_eq!(h.value(), 0x85944171f73967e8);
}

#[test]
fn status_answers_that_status_with_a_short_body() {
    let up = start(Behavior::Status(503));
    let mut c = Client::connect(up.addr());
    let r = c.get("/");
    assert_eq!(r.status, 503);
    assert_eq!(r.body, b"503 Service Unavailable\n");
    assert_eq!(r.header("content-length"), Some("24"));
    assert_eq!(r.header("x-upstream"), Some("u1"));

    up.set_behavior(Behavior::Status(204));
    let r = c.get("/");
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty() && r.header("content-length").is_none());
    // Still in sync after a bodiless status.
    up.set_behavior(Behavior::Status(404));
    assert_eq!(c.get("/").status, 404);
}

#[test]
fn mirror_streams_a_length_body_back() {
    let up = start(Behavior::Mirror);
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut c = Client::connect(up.addr());
    let mut w = c.stream.try_clone().unwrap();
    let sent = body.clone();
    // Write from another thread: the echo starts before the upload ends.
    let writer = thread::spawn(move || {
        w.write_all(
            format!(
                "PUT /m HTTP/1.1\r\nhost: up\r\ncontent-length: {}\r\n\r\n",
                sent.len()
            )
            .as_bytes(),
        )
        .unwrap();
        for part in sent.chunks(100_000) {
            w.write_all(part).unwrap();
        }
    });
    let r = c.response(&Method::PUT);
    writer.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("3000000"));
    assert!(r.header("transfer-encoding").is_none());
    assert!(r.body == body, "mirrored body differs");
    // Keep-alive afterwards, and an empty request mirrors as an empty body.
    let r = c.get("/none");
    assert_eq!((r.status, r.header("content-length")), (200, Some("0")));
}

#[test]
fn mirror_answers_chunked_to_chunked_with_trailers() {
    let up = start(Behavior::Mirror);
    let mut c = Client::connect(up.addr());
    c.send(
        b"POST /c HTTP/1.1\r\nhost: up\r\ntransfer-encoding: chunked\r\n\r\n\
          5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nx-sum: 42\r\n\r\n",
    );
    let r = c.response(&Method::POST);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(r.header("content-length").is_none());
    assert_eq!(r.body, b"hello world");
    assert_eq!(r.trailers, b"x-sum: 42\r\n\r\n");
    c.send(
        b"POST /c2 HTTP/1.1\r\nhost: up\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    let r = c.response(&Method::POST);
    assert_eq!((r.body.as_slice(), r.trailers.len()), (&b"abc"[..], 0));
}

#[test]
fn stall_reads_requests_but_never_answers() {
    let up = start(Behavior::Stall);
    let mut c = Client::connect(up.addr());
    c.send(b"GET /s1 HTTP/1.1\r\nhost: up\r\n\r\nGET /s2 HTTP/1.1\r\nhost: up\r\n\r\n");
    c.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut tmp = [0u8; 16];
    let err = c.stream.read(&mut tmp).unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    assert_eq!(up.requests(), 2);
    assert_eq!(up.targets(), ["/s1", "/s2"]);
    // A stalled connection stays stalled even when the behavior changes.
    up.set_behavior(fixed("late"));
    c.send(b"GET /s3 HTTP/1.1\r\nhost: up\r\n\r\n");
    let err = c.stream.read(&mut tmp).unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    // A new connection gets the new behavior.
    assert_eq!(get_once(up.addr(), "/").body, b"late");
}

#[test]
fn reset_resets_the_connection_on_a_request() {
    let up = start(Behavior::Reset);
    let mut c = Client::connect(up.addr());
    c.send(b"GET /r HTTP/1.1\r\nhost: up\r\n\r\n");
    let mut tmp = [0u8; 16];
    let err = c.stream.read(&mut tmp).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    assert_eq!((up.connections(), up.requests()), (1, 1));
}

#[test]
fn garbage_sends_non_http_bytes_then_closes() {
    let up = start(Behavior::Garbage);
    let mut c = Client::connect(up.addr());
    c.send(b"GET /g HTTP/1.1\r\nhost: up\r\n\r\n");
    let got = c.rest();
    assert!(!got.is_empty());
    assert!(!got.starts_with(b"HTTP/"));
    let mut p = ResponseParser::new(Limits::default());
    assert!(p.parse(&mut BytesMut::from(&got[..])).is_err());
}

fn flaky_statuses(seed: u64, ratio: f64, n: usize) -> Vec<u16> {
    let up = start(Behavior::Flaky {
        fail_ratio: ratio,
        seed,
        body: Bytes::from_static(b"ok"),
    });
    let mut c = Client::connect(up.addr());
    (0..n)
        .map(|_| {
            let r = c.get("/f");
            match r.status {
                200 => assert_eq!(r.body, b"ok"),
                500 => assert_eq!(r.header("x-upstream"), Some("u1")),
                s => panic!("unexpected status {s}"),
            }
            r.status
        })
        .collect()
}

#[test]
fn flaky_fails_the_given_fraction_deterministically() {
    let a = flaky_statuses(42, 0.3, 200);
    let fails = a.iter().filter(|&&s| s == 500).count();
    assert!((30..=90).contains(&fails), "{fails} failures of 200 at 0.3");
    assert_eq!(a, flaky_statuses(42, 0.3, 200), "same seed, same answers");
    assert_ne!(
        a,
        flaky_statuses(7, 0.3, 200),
        "another seed, other answers"
    );
    assert!(flaky_statuses(1, 0.0, 20).iter().all(|&s| s == 200));
    assert!(flaky_statuses(1, 1.0, 20).iter().all(|&s| s == 500));
}

#[test]
fn set_behavior_reseeds_flaky() {
    let up = start(fixed("x"));
    let flaky = Behavior::Flaky {
        fail_ratio: 0.5,
        seed: 9,
        body: Bytes::from_static(b"ok"),
    };
    up.set_behavior(flaky.clone());
    let mut c = Client::connect(up.addr());
    let first: Vec<u16> = (0..30).map(|_| c.get("/").status).collect();
    up.set_behavior(flaky);
    let again: Vec<u16> = (0..30).map(|_| c.get("/").status).collect();
    assert_eq!(first, again);
}

#[test]
fn chunked_sends_the_pattern_in_chunks_with_a_checksum_trailer() {
    let up = start(Behavior::Chunked {
        len: 100_000,
        chunk: 4096,
    });
    let mut c = Client::connect(up.addr());
    c.send(b"GET /c HTTP/1.1\r\nhost: up\r\n\r\n");
    // Read the raw bytes of the response to see the chunk sizes.
    let mut raw = Vec::new();
    while !raw.ends_with(b"\r\n\r\n") || !raw.windows(12).any(|w| w == b"x-checksum: ") {
        let mut tmp = [0u8; 65536];
        let n = c.stream.read(&mut tmp).unwrap();
        assert!(n > 0);
        raw.extend_from_slice(&tmp[..n]);
    }
    let text = String::from_utf8(raw.clone()).unwrap();
    assert!(text.contains("\r\ntransfer-encoding: chunked\r\n"));
    assert!(text.contains("\r\ntrailer: x-checksum\r\n"));
    assert_eq!(text.matches("\r\n1000\r\n").count(), 100_000 / 4096);
    assert!(text.contains(&format!("\r\n{:x}\r\n", 100_000 % 4096)));

    let mut c2 = Client {
        stream: c.stream.try_clone().unwrap(),
        buf: BytesMut::from(&raw[..]),
    };
    let r = c2.response(&Method::GET);
    let want: Vec<u8> = (0..100_000).map(pattern).collect();
    assert!(r.body == want);
    assert_eq!(
        r.trailers,
        format!("x-checksum: {}\r\n\r\n", fnv1a64_hex(&want)).as_bytes()
    );
    // The connection stays usable.
    up.set_behavior(Behavior::Chunked { len: 0, chunk: 0 });
    let r = c2.get("/empty");
    assert!(r.body.is_empty());
    assert_eq!(
        r.trailers,
        format!("x-checksum: {}\r\n\r\n", fnv1a64_hex(b"")).as_bytes()
    );
}

#[test]
fn chunked_to_http10_uses_a_length_and_a_checksum_header() {
    let up = start(Behavior::Chunked { len: 30, chunk: 7 });
    let mut c = Client::connect(up.addr());
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    let r = c.response(&Method::GET);
    let want: Vec<u8> = (0..30).map(pattern).collect();
    assert_eq!(r.body, want);
    assert_eq!(r.header("content-length"), Some("30"));
    assert_eq!(r.header("x-checksum"), Some(fnv1a64_hex(&want).as_str()));
    assert!(c.closed());
}

#[test]
fn upgrade_echo_switches_protocols_and_echoes_bytes() {
    let up = start(Behavior::UpgradeEcho);
    let mut c = Client::connect(up.addr());
    c.send(
        b"GET /ws HTTP/1.1\r\nhost: up\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
          sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nearly",
    );
    let r = c.response(&Method::GET);
    assert_eq!(r.status, 101);
    assert_eq!(r.header("upgrade"), Some("websocket"));
    assert_eq!(r.header("connection"), Some("upgrade"));
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("dGhlIHNhbXBsZSBub25jZQ==")
    );
    assert_eq!(r.header("x-upstream"), Some("u1"));
    c.send(b" and late\x00\xff");
    let want = b"early and late\x00\xff";
    while c.buf.len() < want.len() {
        assert!(c.fill());
    }
    assert_eq!(&c.buf[..], want);
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(c.rest(), want, "nothing more, then EOF");

    let r = get_once(up.addr(), "/plain");
    assert_eq!(r.status, 426);
    assert_eq!(r.header("upgrade"), Some("websocket"));
}

#[test]
fn slow_waits_before_answering() {
    let up = start(Behavior::Slow {
        delay: Duration::from_millis(300),
        body: Bytes::from_static(b"eventually"),
    });
    let t = Instant::now();
    let r = get_once(up.addr(), "/slow");
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!((r.status, r.body.as_slice()), (200, &b"eventually"[..]));
}

#[test]
fn keep_alive_reuses_one_connection() {
    let up = start(fixed("k"));
    let mut c = Client::connect(up.addr());
    assert_eq!(c.get("/1").body, b"k");
    let r = c.get("/2");
    assert_eq!(r.body, b"k");
    assert!(r.header("connection").is_none());
    assert_eq!((up.connections(), up.requests()), (1, 2));
    get_once(up.addr(), "/3");
    assert_eq!((up.connections(), up.requests()), (2, 3));
    assert_eq!(up.targets(), ["/1", "/2", "/3"]);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let up = start(Behavior::Echo);
    let mut c = Client::connect(up.addr());
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.extend_from_slice(
            format!("POST /p{i} HTTP/1.1\r\nhost: up\r\ncontent-length: {i}\r\n\r\n").as_bytes(),
        );
        batch.extend(std::iter::repeat_n(b'x', i));
    }
    batch.extend_from_slice(b"GET /last HTTP/1.1\r\nhost: up\r\nconnection: close\r\n\r\n");
    c.send(&batch);
    for i in 0..5 {
        let j = c.response(&Method::POST).json();
        assert_eq!(j["path"], format!("/p{i}"));
        assert_eq!(j["body_len"], i);
    }
    let r = c.response(&Method::GET);
    assert_eq!(r.json()["path"], "/last");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed());
    assert_eq!(up.targets(), ["/p0", "/p1", "/p2", "/p3", "/p4", "/last"]);
    assert_eq!((up.connections(), up.requests()), (1, 6));
}

/// Deterministic pseudo-random upload bytes.
fn upload_part(i: usize, len: usize) -> Vec<u8> {
    let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn echo_streams_a_20_mib_chunked_upload() {
    let up = start(Behavior::Echo);
    let mut c = Client::connect(up.addr());
    let mut w = c.stream.try_clone().unwrap();
    let parts = 20 * 16; // 64 KiB each: 20 MiB
    let writer = thread::spawn(move || {
        let mut hash = Fnv1a64::new();
        w.write_all(b"POST /upload HTTP/1.1\r\nhost: up\r\ntransfer-encoding: chunked\r\n\r\n")
            .unwrap();
        for i in 0..parts {
            let part = upload_part(i, 64 * 1024);
            hash.update(&part);
            w.write_all(format!("{:x}\r\n", part.len()).as_bytes())
                .unwrap();
            w.write_all(&part).unwrap();
            w.write_all(b"\r\n").unwrap();
        }
        w.write_all(b"0\r\n\r\n").unwrap();
        hash.hex()
    });
    let r = c.response(&Method::POST);
    let want = writer.join().unwrap();
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["body_len"], 20 * 1024 * 1024);
    assert_eq!(j["body_sha"], want);
    assert_eq!(j["path"], "/upload");
}

#[test]
fn expect_100_continue_gets_an_interim_response_before_the_body() {
    let up = start(Behavior::Echo);
    let mut c = Client::connect(up.addr());
    c.send(b"PUT /e HTTP/1.1\r\nhost: up\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n");
    // The body has not been sent: the server must ask for it.
    let interim = c.response(&Method::PUT);
    assert_eq!(interim.status, 100);
    c.send(b"data");
    let r = c.response(&Method::PUT);
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["body_len"], 4);
    assert_eq!(j["body_sha"], fnv1a64_hex(b"data"));
    // No 100 for a request without a body.
    c.send(b"GET /e2 HTTP/1.1\r\nhost: up\r\nexpect: 100-continue\r\n\r\n");
    assert_eq!(c.response(&Method::GET).status, 200);
}

#[test]
fn connection_close_and_http10_close_after_the_response() {
    let up = start(fixed("bye"));
    let mut c = Client::connect(up.addr());
    c.send(b"GET /c HTTP/1.1\r\nhost: up\r\nconnection: close\r\n\r\n");
    let r = c.response(&Method::GET);
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(c.closed());

    let mut c = Client::connect(up.addr());
    c.send(b"GET /10 HTTP/1.0\r\n\r\n");
    let r = c.response(&Method::GET);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"bye"[..]));
    assert_eq!(r.header("content-length"), Some("3"));
    assert!(c.closed());

    let mut c = Client::connect(up.addr());
    c.send(b"GET /ka HTTP/1.0\r\nconnection: keep-alive\r\n\r\n");
    let r = c.response(&Method::GET);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    c.send(b"GET /ka2 HTTP/1.0\r\n\r\n");
    assert_eq!(c.response(&Method::GET).body, b"bye");
    assert!(c.closed());
    assert_eq!(up.connections(), 3);
}

#[test]
fn invalid_requests_get_400_and_a_close() {
    let up = start(fixed("never"));
    for bad in [
        &b"GET /x HTTP/1.1\nhost: up\n\n"[..],
        b"NOT A REQUEST\r\n\r\n",
        b"POST / HTTP/1.1\r\nhost: up\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
        b"POST / HTTP/1.1\r\nhost: up\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    ] {
        let mut c = Client::connect(up.addr());
        c.send(bad);
        let r = c.response(&Method::GET);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(bad));
        assert_eq!(r.header("connection"), Some("close"));
        assert_eq!(r.header("x-upstream"), Some("u1"));
        assert!(c.closed());
    }
}

#[test]
fn set_behavior_applies_to_the_next_request() {
    let up = start(fixed("healthy"));
    let mut c = Client::connect(up.addr());
    assert_eq!(c.get("/").status, 200);
    up.set_behavior(Behavior::Status(500));
    assert!(matches!(up.behavior(), Behavior::Status(500)));
    assert_eq!(c.get("/").status, 500);
}

#[test]
fn stop_is_prompt_frees_the_port_and_closes_connections() {
    let up = start(fixed("x"));
    let addr = up.addr();
    // An idle keep-alive connection, a stalled request and a slow one in progress.
    let mut idle = Client::connect(addr);
    assert_eq!(idle.get("/").status, 200);
    up.set_behavior(Behavior::Stall);
    let mut stalled = Client::connect(addr);
    stalled.send(b"GET /stall HTTP/1.1\r\nhost: up\r\n\r\n");
    up.set_behavior(Behavior::Slow {
        delay: Duration::from_secs(30),
        body: Bytes::new(),
    });
    let mut slow = Client::connect(addr);
    slow.send(b"GET /slow HTTP/1.1\r\nhost: up\r\n\r\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.requests() < 3 {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(5));
    }

    let t = Instant::now();
    up.stop();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "stop took {took:?}");

    for c in [&mut idle, &mut stalled, &mut slow] {
        assert!(c.closed());
    }
    assert!(
        TcpStream::connect(addr).is_err(),
        "nothing listens any more"
    );
    TcpListener::bind(addr).expect("the port is free again");
}

#[test]
fn drop_stops_too() {
    let up = start(fixed("x"));
    let addr = up.addr();
    let mut c = Client::connect(addr);
    assert_eq!(c.get("/").status, 200);
    let t = Instant::now();
    drop(up);
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(c.closed());
    TcpListener::bind(addr).expect("the port is free again");
}
