//! The proxy end to end: the real engine on loopback in front of in-process upstreams.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{admin, config, get, start, Conn};
use headwater_engine::upstream_demo::{fnv1a64_hex, pattern, Behavior, Fnv1a64, UpstreamServer};
use http::Method;

fn upstream(name: &str, behavior: Behavior) -> UpstreamServer {
    UpstreamServer::start(name, "127.0.0.1:0".parse().unwrap(), behavior).expect("upstream starts")
}

fn fixed(body: &'static [u8]) -> Behavior {
    Behavior::Fixed {
        body: Bytes::from_static(body),
    }
}

#[test]
fn proxies_and_adds_forwarding_headers() {
    let up = upstream("echo", Behavior::Echo);
    let gw = start(&config(&[up.addr()], "", ""));
    let addr = gw.listen_addrs()[0];
    let r = get(addr, "/hello?x=1");
    assert_eq!(r.status(), 200);
    let j = r.json();
    assert_eq!(j["path"], "/hello?x=1");
    let headers: Vec<(String, String)> = serde_json::from_value(j["headers"].clone()).unwrap();
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(find("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(find("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(find("x-forwarded-host").as_deref(), Some("test"));
    assert_eq!(find("via").as_deref(), Some("1.1 headwater"));
    assert_eq!(r.header("via").as_deref(), Some("1.1 headwater"));
}

#[test]
fn keep_alive_reuses_upstream_connections() {
    let up = upstream("a", fixed(b"hello"));
    let gw = start(&config(&[up.addr()], "", ""));
    let mut c = Conn::open(gw.listen_addrs()[0]);
    for _ in 0..100 {
        let r = c.get("/");
        assert_eq!((r.status(), r.text().as_str()), (200, "hello"));
    }
    assert_eq!(up.requests(), 100);
    // One client connection lives on one shard, which reuses its pooled connection.
    assert_eq!(
        up.connections(),
        1,
        "upstream connections opened for 100 keep-alive requests"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let up = upstream("echo", Behavior::Echo);
    let gw = start(&config(&[up.addr()], "", ""));
    let mut c = Conn::open(gw.listen_addrs()[0]);
    let mut raw = Vec::new();
    for i in 0..5 {
        raw.extend_from_slice(format!("GET /p{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    }
    raw.extend_from_slice(b"POST /p5 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    raw.extend_from_slice(b"GET /p6 HTTP/1.1\r\nHost: t\r\n\r\n");
    c.send(&raw);
    for i in 0..7 {
        let method = if i == 5 { Method::POST } else { Method::GET };
        let r = c.read_response(&method).unwrap();
        assert_eq!(r.json()["path"], format!("/p{i}"));
    }
}

#[test]
fn large_chunked_upload_streams_through() {
    let up = upstream("echo", Behavior::Echo);
    let gw = start(&config(&[up.addr()], "", ""));
    let mut c = Conn::open(gw.listen_addrs()[0]);
    c.send(b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    let chunk = vec![b'x'; 64 * 1024];
    let mut hash = Fnv1a64::new();
    for _ in 0..(32 * 16) {
        // 32 MiB in 64 KiB chunks
        c.send(format!("{:x}\r\n", chunk.len()).as_bytes());
        c.send(&chunk);
        c.send(b"\r\n");
        hash.update(&chunk);
    }
    c.send(b"0\r\n\r\n");
    let r = c.read_response(&Method::POST).unwrap();
    assert_eq!(r.status(), 200);
    let j = r.json();
    assert_eq!(j["body_len"], 32 * 1024 * 1024);
    assert_eq!(j["body_sha"], hash.hex());
}

#[test]
fn bodies_both_ways_and_chunked_responses_with_trailers() {
    let mirror = upstream("mirror", Behavior::Mirror);
    let gw = start(&config(&[mirror.addr()], "", ""));
    let mut c = Conn::open(gw.listen_addrs()[0]);
    let body = vec![7u8; 300_000];
    let mut raw = format!(
        "PUT /m HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let r = c.request(&raw, &Method::PUT);
    assert_eq!(r.status(), 200);
    assert_eq!(r.body.len(), body.len());
    assert!(r.body.iter().all(|&b| b == 7));

    let chunked = upstream(
        "chunked",
        Behavior::Chunked {
            len: 100_000,
            chunk: 7_000,
        },
    );
    let gw = start(&config(&[chunked.addr()], "", ""));
    let mut c = Conn::open(gw.listen_addrs()[0]);
    let r = c.get("/c");
    assert_eq!(r.status(), 200);
    assert_eq!(r.body.len(), 100_000);
    // Every byte in place (the chunks, most of them gathered several to a write, in order).
    assert!(r.body.iter().enumerate().all(|(i, &b)| b == pattern(i)));
    assert_eq!(r.header("transfer-encoding").as_deref(), Some("chunked"));
    let trailers = r.trailers.expect("trailers forwarded to a 1.1 client");
    assert!(String::from_utf8_lossy(&trailers)
        .to_ascii_lowercase()
        .contains(&format!("x-checksum: {}", fnv1a64_hex(&r.body))));
    // An HTTP/1.0 client gets the same body close-delimited.
    let mut c = Conn::open(gw.listen_addrs()[0]);
    let r = c.request(b"GET /c HTTP/1.0\r\n\r\n", &Method::GET);
    assert_eq!(r.body.len(), 100_000);
    assert!(r.body.iter().enumerate().all(|(i, &b)| b == pattern(i)));
    assert!(r.header("transfer-encoding").is_none());
    assert!(c.is_closed());
}

#[test]
fn expect_100_continue() {
    let up = upstream("echo", Behavior::Echo);
    let gw = start(&config(&[up.addr()], "", ""));
    let mut c = Conn::open(gw.listen_addrs()[0]);
    c.send(b"POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let interim = c.read_response(&Method::POST).unwrap();
    assert_eq!(interim.status(), 100);
    c.send(b"hello");
    let r = c.read_response(&Method::POST).unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json()["body_len"], 5);
}

#[test]
fn websocket_upgrade_is_tunnelled() {
    let up = upstream("ws", Behavior::UpgradeEcho);
    let gw = start(&config(&[up.addr()], "", ""));
    let mut c = Conn::open(gw.listen_addrs()[0]);
    c.send(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    let r = c.read_response(&Method::GET).unwrap();
    assert_eq!(r.status(), 101);
    assert_eq!(r.header("upgrade").as_deref(), Some("websocket"));
    for msg in [&b"ping one"[..], b"and two", &[0u8, 255, 1, 2][..]] {
        c.send(msg);
        let mut got = vec![0u8; msg.len()];
        std::io::Read::read_exact(&mut c.stream, &mut got).unwrap();
        assert_eq!(&got[..], msg);
    }
}

#[test]
fn no_route_is_a_json_404() {
    let up = upstream("a", fixed(b"x"));
    let toml = config(&[up.addr()], "", "match = { path_prefix = \"/api/\" }");
    let gw = start(&toml);
    let mut c = Conn::open(gw.listen_addrs()[0]);
    let r = c.get("/other");
    assert_eq!(r.status(), 404);
    assert_eq!(r.header("x-headwater-error").as_deref(), Some("no_route"));
    assert_eq!(r.json()["error"]["code"], "no_route");
    // The connection stays usable.
    assert_eq!(c.get("/api/x").status(), 200);
    // CONNECT is refused, whatever the routes.
    let r = c.request(
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        &Method::CONNECT,
    );
    assert_eq!(r.status(), 501);
    assert_eq!(
        r.header("x-headwater-error").as_deref(),
        Some("connect_not_supported")
    );
    assert!(c.is_closed());
}

#[test]
fn upstream_failures_have_their_own_status() {
    // Nothing listens: 502.
    let dead: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gw = start(&config(&[dead], "", ""));
    let r = get(gw.listen_addrs()[0], "/");
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.header("x-headwater-error").as_deref(),
        Some("upstream_connect_failed")
    );
    assert_eq!(r.json()["error"]["cluster"], "app");

    // Stalls: 504 after the response-header timeout.
    let stall = upstream("stall", Behavior::Stall);
    let gw = start(&config(
        &[stall.addr()],
        "",
        "timeouts = { response_header = \"300ms\" }",
    ));
    let t = Instant::now();
    let r = get(gw.listen_addrs()[0], "/");
    assert_eq!(r.status(), 504);
    assert_eq!(
        r.header("x-headwater-error").as_deref(),
        Some("upstream_response_timeout")
    );
    assert!(t.elapsed() >= Duration::from_millis(300));

    // Garbage: 502.
    let garbage = upstream("garbage", Behavior::Garbage);
    let gw = start(&config(&[garbage.addr()], "", ""));
    let r = get(gw.listen_addrs()[0], "/");
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.header("x-headwater-error").as_deref(),
        Some("upstream_protocol_error")
    );

    // Resets: 502.
    let reset = upstream("reset", Behavior::Reset);
    let gw = start(&config(&[reset.addr()], "", ""));
    let r = get(gw.listen_addrs()[0], "/");
    assert_eq!(r.status(), 502);

    // Slow beyond the total timeout: 504.
    let slow = upstream(
        "slow",
        Behavior::Slow {
            delay: Duration::from_secs(2),
            body: Bytes::from_static(b"late"),
        },
    );
    let gw = start(&config(
        &[slow.addr()],
        "",
        "timeouts = { total = \"300ms\" }",
    ));
    let r = get(gw.listen_addrs()[0], "/");
    assert_eq!(r.status(), 504);
    assert_eq!(
        r.header("x-headwater-error").as_deref(),
        Some("request_timeout")
    );
}

#[test]
fn connect_failure_tries_another_endpoint() {
    let dead: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let up = upstream("alive", fixed(b"ok"));
    let gw = start(&config(&[dead, up.addr()], "", ""));
    for _ in 0..20 {
        let r = get(gw.listen_addrs()[0], "/");
        assert_eq!(
            r.status(),
            200,
            "a refused connect is retried on the other endpoint"
        );
    }
}

#[test]
fn client_timeouts() {
    let up = upstream("a", fixed(b"x"));
    let gw = start(&config(
        &[up.addr()],
        "[server.timeouts]\nclient_header = \"300ms\"\nclient_idle = \"300ms\"",
        "",
    ));
    // Slowloris: a head that never completes gets a 408.
    let mut c = Conn::open(gw.listen_addrs()[0]);
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ");
    let r = c.read_response(&Method::GET).unwrap();
    assert_eq!(r.status(), 408);
    assert!(c.is_closed());
    // An idle keep-alive connection is closed quietly.
    let mut c = Conn::open(gw.listen_addrs()[0]);
    assert_eq!(c.get("/").status(), 200);
    let t = Instant::now();
    assert!(c.is_closed());
    assert!(t.elapsed() >= Duration::from_millis(250));
    assert_eq!(up.requests(), 1);
}

#[test]
fn smuggling_vectors_never_reach_the_upstream_as_a_second_request() {
    let up = upstream("echo", Behavior::Echo);
    let gw = start(&config(&[up.addr()], "", ""));
    let vectors: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nX: y\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0x1\r\nA\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1;\r\nA\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000001\r\nA\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    ];
    for raw in vectors {
        let mut c = Conn::open(gw.listen_addrs()[0]);
        c.send(raw);
        let r = c.read_response(&Method::POST).unwrap();
        assert!(
            (400..500).contains(&r.status()) || r.status() == 502,
            "{} for {}",
            r.status(),
            String::from_utf8_lossy(raw)
        );
        assert!(c.is_closed(), "connection closed after a rejected request");
    }
    assert!(
        up.targets().iter().all(|t| t != "/smuggled"),
        "upstream saw: {:?}",
        up.targets()
    );
}

#[test]
fn reload_applies_new_routes_and_rejects_bad_config() {
    let a = upstream("a", fixed(b"from-a"));
    let b = upstream("b", fixed(b"from-b"));
    let dir = std::env::temp_dir().join(format!("hw-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gw.toml");
    std::fs::write(&path, config(&[a.addr()], "", "")).unwrap();
    let gw = common::start_file(&path);
    let addr = gw.listen_addrs()[0];
    let admin_addr = gw.admin_addr().unwrap();
    assert_eq!(get(addr, "/").text(), "from-a");
    let mut kept = Conn::open(addr);
    assert_eq!(kept.get("/").text(), "from-a");

    // A bad config is rejected with file, line and reason; the old one keeps serving.
    std::fs::write(
        &path,
        config(&[b.addr()], "", "").replace("cluster = \"app\"\n", "cluster = \"nope\"\n"),
    )
    .unwrap();
    let (status, body) = admin(admin_addr, "POST", "/-/reload");
    assert_eq!(status, 400);
    assert!(
        body.contains("gw.toml:") && body.contains("unknown cluster"),
        "{body}"
    );
    assert_eq!(get(addr, "/").text(), "from-a");

    // A good one applies to the next request, also on connections that were already open.
    std::fs::write(&path, config(&[b.addr()], "", "")).unwrap();
    let (status, body) = admin(admin_addr, "POST", "/-/reload");
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(addr, "/").text(), "from-b");
    assert_eq!(kept.get("/").text(), "from-b");
    let (_, status_doc) = admin(admin_addr, "GET", "/status");
    assert!(status_doc.contains("\"generation\": 2"), "{status_doc}");
    let (_, metrics) = admin(admin_addr, "GET", "/metrics");
    assert!(
        metrics.contains("headwater_config_reloads_total{result=\"failed\"} 1"),
        "{metrics}"
    );
}

#[test]
fn reload_under_load_fails_no_request() {
    let a = upstream("a", fixed(b"a"));
    let b = upstream("b", fixed(b"b"));
    let dir = std::env::temp_dir().join(format!("hw-reload-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gw.toml");
    std::fs::write(&path, config(&[a.addr()], "", "")).unwrap();
    let gw = common::start_file(&path);
    let addr = gw.listen_addrs()[0];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u32, 0u32);
                let mut c = Conn::open(addr);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && ok + failed < 20_000 {
                    match c.get("/").status() {
                        200 => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    for i in 0..10 {
        let next = if i % 2 == 0 { b.addr() } else { a.addr() };
        std::fs::write(&path, config(&[next], "", "")).unwrap();
        gw.control().reload().expect("reload");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for c in clients {
        let (o, f) = c.join().unwrap();
        ok += o;
        failed += f;
    }
    println!("reload under load: {ok} requests ok, {failed} failed across 10 reloads");
    assert_eq!(failed, 0);
    assert!(ok > 100);
}

#[test]
fn graceful_drain_finishes_in_flight_requests() {
    let slow = upstream(
        "slow",
        Behavior::Slow {
            delay: Duration::from_millis(500),
            body: Bytes::from_static(b"done"),
        },
    );
    let gw = start(&config(&[slow.addr()], "drain_timeout = \"5s\"", ""));
    let addr = gw.listen_addrs()[0];
    let mut idle = Conn::open(addr);
    assert_eq!(idle.get("/").text(), "done");
    let in_flight = std::thread::spawn(move || get(addr, "/"));
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    gw.shutdown();
    let r = in_flight.join().unwrap();
    assert_eq!((r.status(), r.text().as_str()), (200, "done"));
    assert!(
        idle.is_closed(),
        "idle keep-alive connections are closed by the drain"
    );
    assert!(t.elapsed() < Duration::from_secs(4));
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer accepting"
    );
}

#[test]
fn epoll_driver_serves_too() {
    let up = upstream("a", fixed(b"epoll"));
    let gw = start(&config(&[up.addr()], "io_driver = \"epoll\"", ""));
    assert_eq!(gw.driver(), headwater_engine::runtime::DriverKind::Epoll);
    let mut c = Conn::open(gw.listen_addrs()[0]);
    for _ in 0..20 {
        assert_eq!(c.get("/").text(), "epoll");
    }
    let up2 = upstream("b", Behavior::Echo);
    let gw2 = start(&config(&[up2.addr()], "io_driver = \"epoll\"", ""));
    let mut c = Conn::open(gw2.listen_addrs()[0]);
    let body = vec![1u8; 200_000];
    let mut raw = format!(
        "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    assert_eq!(c.request(&raw, &Method::POST).json()["body_len"], 200_000);
}

#[test]
fn admin_endpoints() {
    let up = upstream("a", fixed(b"x"));
    let gw = start(&config(&[up.addr()], "", ""));
    let admin_addr = gw.admin_addr().unwrap();
    get(gw.listen_addrs()[0], "/");
    assert_eq!(admin(admin_addr, "GET", "/healthz").0, 200);
    assert_eq!(admin(admin_addr, "GET", "/readyz").0, 200);
    let (s, m) = admin(admin_addr, "GET", "/metrics");
    assert_eq!(s, 200);
    assert!(
        m.contains("headwater_requests_total{route=\"all\",cluster=\"app\",code_class=\"2xx\"} 1"),
        "{m}"
    );
    let (s, st) = admin(admin_addr, "GET", "/status");
    assert_eq!(s, 200);
    let st: serde_json::Value = serde_json::from_str(&st).unwrap();
    assert_eq!(
        st["clusters"][0]["endpoints"][0]["address"],
        up.addr().to_string()
    );
    assert_eq!(admin(admin_addr, "GET", "/nope").0, 404);
}

#[test]
fn dead_pooled_connection_is_replaced_transparently() {
    let first = upstream("first", fixed(b"one"));
    let addr = first.addr();
    let gw = start(&config(&[addr], "", ""));
    let mut c = Conn::open(gw.listen_addrs()[0]);
    assert_eq!(c.get("/").text(), "one");
    // The upstream restarts: the proxy's pooled connection to it is now dead.
    first.stop();
    let second =
        UpstreamServer::start("second", addr, fixed(b"two")).expect("rebind the same port");
    for _ in 0..3 {
        let r = c.get("/");
        assert_eq!((r.status(), r.text().as_str()), (200, "two"));
    }
    let raw = b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody";
    second.stop();
    let third = UpstreamServer::start("third", addr, Behavior::Echo).expect("rebind the same port");
    let r = c.request(raw, &Method::POST);
    assert_eq!(
        (r.status(), r.json()["body_len"].as_u64()),
        (200, Some(4)),
        "a small POST is replayed too"
    );
    assert_eq!(third.requests(), 1);
}

#[test]
fn connect_timeout_gives_504() {
    // A listener whose accept queue is full drops further SYNs: connecting hangs.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let _queued: Vec<_> = (0..4)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()
        })
        .collect();
    let gw = start(&config(&[addr], "", "timeouts = { connect = \"200ms\" }"));
    let t = Instant::now();
    let r = get(gw.listen_addrs()[0], "/");
    assert_eq!(r.status(), 504);
    assert_eq!(
        r.header("x-headwater-error").as_deref(),
        Some("upstream_connect_timeout")
    );
    assert!(t.elapsed() >= Duration::from_millis(200));
    let (_, m) = admin(gw.admin_addr().unwrap(), "GET", "/metrics");
    assert!(
        m.contains("headwater_timeouts_total{kind=\"upstream_connect\"} 1"),
        "{m}"
    );
}

#[test]
fn stalled_request_body_gets_408() {
    let up = upstream("echo", Behavior::Echo);
    let gw = start(&config(
        &[up.addr()],
        "[server.timeouts]\nclient_body = \"300ms\"",
        "",
    ));
    let mut c = Conn::open(gw.listen_addrs()[0]);
    c.send(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly ten b");
    let r = c.read_response(&Method::POST).unwrap();
    assert_eq!(r.status(), 408);
    assert_eq!(
        r.header("x-headwater-error").as_deref(),
        Some("client_body_timeout")
    );
}

#[test]
fn stalled_response_body_is_cut_after_the_upstream_idle_timeout() {
    // An upstream that sends a head and 3 of 100 body bytes, then nothing.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = std::io::Read::read(&mut s, &mut buf);
        std::io::Write::write_all(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
            .unwrap();
        std::thread::sleep(Duration::from_secs(3));
    });
    let gw = start(&config(
        &[addr],
        "",
        "timeouts = { upstream_idle = \"300ms\" }",
    ));
    let mut c = Conn::open(gw.listen_addrs()[0]);
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let t = Instant::now();
    let err = c
        .read_response(&Method::GET)
        .expect_err("a truncated body is never passed off as complete");
    assert!(t.elapsed() >= Duration::from_millis(300), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "cut by the idle timeout, not by the upstream"
    );
    drop(server);
}

/// A client that stops reading a long response: the write to it times out (`client_body`),
/// the exchange ends and the connection is closed, and the shard goes on serving. What the
/// client did receive is the start of the response, intact.
#[test]
fn a_client_that_stops_reading_is_cut_off_after_the_write_timeout() {
    const LEN: usize = 256 * 1024 * 1024;
    let big = upstream(
        "big",
        Behavior::Chunked {
            len: LEN,
            chunk: 64 * 1024,
        },
    );
    let small = upstream("small", fixed(b"ok"));
    // One shard, so that the requests served meanwhile are served by the stalled one's shard.
    let gw = start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\n\n[server.timeouts]\nclient_body = \"300ms\"\n\n\
         [[cluster]]\nname = \"big\"\nendpoints = [{{ address = \"{}\" }}]\n\n\
         [[cluster]]\nname = \"small\"\nendpoints = [{{ address = \"{}\" }}]\n\n\
         [[route]]\nname = \"small\"\nmatch = {{ path = \"/small\" }}\ncluster = \"small\"\n\n\
         [[route]]\nname = \"big\"\ncluster = \"big\"\n",
        big.addr(),
        small.addr()
    ));
    let addr = gw.listen_addrs()[0];
    let mut c = Conn::open(addr);
    c.send(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
    // Not reading while the proxy's writes fill the socket buffers and then time out; the
    // shard serves others meanwhile.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(get(addr, "/small").text(), "ok");
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(get(addr, "/small").text(), "ok");
    // Everything the client gets now was sent before the timeout; then the connection ends.
    let t = Instant::now();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match std::io::Read::read(&mut c.stream, &mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("after {} bytes: {e}", got.len()),
        }
    }
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the connection was closed"
    );
    assert!(got.starts_with(b"HTTP/1.1 200 "));
    assert!(
        got.len() < LEN / 2,
        "cut off, not streamed: {} bytes",
        got.len()
    );
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    // The chunked body so far, decoded by the codec until the input runs out mid-chunk: the
    // pattern from its first byte.
    let mut body = bytes::BytesMut::from(&got[head_end..]);
    let mut dec = headwater_http1::ChunkedDecoder::new();
    let mut decoded = Vec::new();
    while let Some(piece) = dec.decode(&mut body).expect("valid chunked framing") {
        match piece {
            headwater_http1::Decoded::Data(d) => decoded.extend_from_slice(&d),
            other => panic!("the body was cut, yet the decoder saw {other:?}"),
        }
    }
    assert!(decoded.len() > 64 * 1024, "{} body bytes", decoded.len());
    let bad = decoded
        .iter()
        .enumerate()
        .position(|(i, &b)| b != pattern(i));
    assert_eq!(bad, None, "body corrupted");
}

/// Resident memory of this process in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_large_upload_streams_in_bounded_memory() {
    let up = upstream("echo", Behavior::Echo);
    let gw = start(&config(&[up.addr()], "", ""));
    let mut c = Conn::open(gw.listen_addrs()[0]);
    // Warm up buffers and threads, then measure.
    assert_eq!(c.get("/").status(), 200);
    let before = rss_kib();
    let total: u64 = 512 * 1024 * 1024;
    c.send(format!("PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: {total}\r\n\r\n").as_bytes());
    let block = vec![b'z'; 256 * 1024];
    let mut sent = 0;
    let mut peak = before;
    while sent < total {
        c.send(&block);
        sent += block.len() as u64;
        if sent % (32 * 1024 * 1024) == 0 {
            peak = peak.max(rss_kib());
        }
    }
    let r = c.read_response(&Method::PUT).unwrap();
    assert_eq!(r.json()["body_len"].as_u64(), Some(total));
    let grew = peak.saturating_sub(before);
    println!("512 MiB upload through the proxy: RSS grew by {grew} KiB (before {before} KiB, peak {peak} KiB)");
    assert!(
        grew < 32 * 1024,
        "RSS grew by {grew} KiB while streaming 512 MiB"
    );
}

/// Reads from `s` until `pred` holds for everything read so far; fails after 3 s.
fn read_until_seen(s: &mut std::net::TcpStream, got: &mut Vec<u8>, pred: impl Fn(&[u8]) -> bool) {
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 65536];
    while !pred(got) {
        let n = match std::io::Read::read(s, &mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.expect("the proxy sends within 3 s"),
        };
        assert!(
            n > 0,
            "closed early after {:?}",
            String::from_utf8_lossy(got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn a_small_body_goes_out_with_its_head_and_large_or_chunked_ones_stream() {
    use std::io::{Read, Write};
    use std::sync::mpsc;
    // An upstream whose answers come in two parts: the head (and maybe a few body bytes) first,
    // the rest after a pause. For /small the pause is 200 ms; for /large and /chunked the rest
    // is sent only once the client has seen the first part (signalled on `seen`), so a proxy
    // that held the first part back would stall them.
    let (seen_tx, seen_rx) = mpsc::channel::<()>();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        for _ in 0..3 {
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0);
                req.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&req).into_owned();
            req.clear();
            let wait = || seen_rx.recv_timeout(Duration::from_secs(5)).is_ok();
            if text.starts_with("GET /small") {
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
                    .unwrap();
                std::thread::sleep(Duration::from_millis(200));
                s.write_all(b"hello").unwrap();
            } else if text.starts_with("GET /large") {
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n0123456789")
                    .unwrap();
                if !wait() {
                    return;
                }
                s.write_all(&[b'x'; 99_990]).unwrap();
            } else {
                s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
                    .unwrap();
                if !wait() {
                    return;
                }
                s.write_all(b"4\r\nlast\r\n0\r\n\r\n").unwrap();
            }
        }
    });
    let gw = start(&config(&[addr], "", ""));
    let mut c = std::net::TcpStream::connect(gw.listen_addrs()[0]).unwrap();

    // Small: the proxy's first write is the whole response, head and body.
    c.write_all(b"GET /small HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    read_until_seen(&mut c, &mut got, |g| g.windows(4).any(|w| w == b"\r\n\r\n"));
    assert!(
        got.ends_with(b"\r\n\r\nhello"),
        "head and body in one piece: {:?}",
        String::from_utf8_lossy(&got)
    );

    // Large (above the hold limit): the head and the first bytes arrive before the rest exists.
    c.write_all(b"GET /large HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    read_until_seen(&mut c, &mut got, |g| g.ends_with(b"0123456789"));
    seen_tx.send(()).unwrap();
    let head_len = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    read_until_seen(&mut c, &mut got, |g| g.len() >= head_len + 100_000);
    assert_eq!(got.len(), head_len + 100_000);

    // Chunked: the first chunk is relayed before the upstream sends the next.
    c.write_all(b"GET /chunked HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    read_until_seen(&mut c, &mut got, |g| g.windows(5).any(|w| w == b"first"));
    seen_tx.send(()).unwrap();
    read_until_seen(&mut c, &mut got, |g| g.ends_with(b"0\r\n\r\n"));
    assert!(got.windows(4).any(|w| w == b"last"));
    server.join().unwrap();
}
