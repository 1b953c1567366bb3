//! Proxy rewriting of heads: hop-by-hop stripping, forwarding headers, route edits, re-framing.

use std::net::{IpAddr, Ipv4Addr};

use bytes::BytesMut;
use headwater_http1::{
    encode_proxy_request, encode_proxy_response, encode_request_head, encode_response_head,
    BodyKind, ClientConnection, Forwarding, Limits, RequestEdits, RequestHead, RequestParser,
    ResponseEdits, ResponseHead, ResponseParser, XffMode,
};
use http::{HeaderName, HeaderValue, Method, StatusCode, Version};

fn req(raw: &[u8]) -> RequestHead {
    RequestParser::new(Limits::default())
        .parse(&mut BytesMut::from(raw))
        .unwrap()
        .unwrap()
}

fn res(raw: &[u8]) -> ResponseHead {
    ResponseParser::new(Limits::default())
        .parse(&mut BytesMut::from(raw))
        .unwrap()
        .unwrap()
}

fn forward(head: &RequestHead, edits: &RequestEdits<'_>, fwd: &Forwarding<'_>) -> RequestHead {
    let mut out = BytesMut::new();
    encode_proxy_request(
        head,
        headwater_http1::request_framing(head.body_kind()),
        edits,
        fwd,
        &mut out,
    );
    req(&out)
}

fn names(h: &RequestHead) -> Vec<String> {
    h.headers()
        .map(|(n, _)| String::from_utf8_lossy(n).to_ascii_lowercase())
        .collect()
}

#[test]
fn hop_by_hop_headers_are_stripped() {
    let head = req(b"POST /p HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret, x-other\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-Secret: 1\r\nX-Other: 2\r\nX-Kept: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
    let out = forward(&head, &RequestEdits::default(), &Forwarding::default());
    assert_eq!(names(&out), ["host", "x-kept", "transfer-encoding"]);
    assert_eq!(out.body_kind(), BodyKind::Chunked);
    assert_eq!(out.version(), Version::HTTP_11);
}

#[test]
fn content_length_is_rewritten_once() {
    let head = req(b"PUT /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
    let mut out = BytesMut::new();
    encode_proxy_request(
        &head,
        BodyKind::Length(5),
        &RequestEdits::default(),
        &Forwarding::default(),
        &mut out,
    );
    let text = String::from_utf8(out.to_vec()).unwrap();
    assert_eq!(text.matches("content-length").count(), 1, "{text}");
    assert!(text.starts_with("PUT /p HTTP/1.1\r\nhost: a\r\n"), "{text}");
}

#[test]
fn forwarding_headers() {
    let head = req(b"GET /p HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nVia: 1.0 fred\r\n\r\n");
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));
    let fwd = Forwarding {
        via: Some(b"headwater"),
        xff: XffMode::Append,
        client_ip: Some(ip),
        proto: Some(b"http"),
        forwarded_host: true,
    };
    let out = forward(&head, &RequestEdits::default(), &fwd);
    assert_eq!(
        out.header("x-forwarded-for"),
        Some(&b"1.1.1.1, 2.2.2.2, 10.0.0.7"[..])
    );
    assert_eq!(out.header_all("x-forwarded-for").count(), 1);
    assert_eq!(out.header("x-forwarded-proto"), Some(&b"http"[..]));
    assert_eq!(out.header_all("x-forwarded-proto").count(), 1);
    assert_eq!(out.header("x-forwarded-host"), Some(&b"shop.example"[..]));
    assert_eq!(out.header_all("x-forwarded-host").count(), 1);
    assert_eq!(out.header("via"), Some(&b"1.0 fred, 1.1 headwater"[..]));

    let replace = Forwarding {
        xff: XffMode::Replace,
        ..fwd
    };
    let out = forward(&head, &RequestEdits::default(), &replace);
    assert_eq!(out.header("x-forwarded-for"), Some(&b"10.0.0.7"[..]));
    assert_eq!(out.header_all("x-forwarded-for").count(), 1);

    let off = Forwarding {
        xff: XffMode::Off,
        via: None,
        proto: None,
        forwarded_host: false,
        client_ip: Some(ip),
    };
    let out = forward(&head, &RequestEdits::default(), &off);
    assert_eq!(
        out.header_all("x-forwarded-for").collect::<Vec<_>>(),
        [&b"1.1.1.1"[..], b"2.2.2.2"]
    );
    assert_eq!(out.header("x-forwarded-host"), Some(&b"evil"[..]));

    // No incoming XFF: one is created; an HTTP/1.0 request is labelled 1.0 in Via.
    let head = req(b"GET / HTTP/1.0\r\n\r\n");
    let out = forward(
        &head,
        &RequestEdits {
            default_host: Some(b"backend:80"),
            ..Default::default()
        },
        &fwd,
    );
    assert_eq!(out.header("x-forwarded-for"), Some(&b"10.0.0.7"[..]));
    assert_eq!(out.header("via"), Some(&b"1.0 headwater"[..]));
    assert_eq!(out.header("host"), Some(&b"backend:80"[..]));
}

#[test]
fn route_edits_and_rewrite() {
    let head = req(
        b"GET /api/v1/users?id=3 HTTP/1.1\r\nHost: a\r\nX-Internal: secret\r\nX-Keep: k\r\n\r\n",
    );
    let remove = [HeaderName::from_static("x-internal")];
    let add = [(
        HeaderName::from_static("x-from"),
        HeaderValue::from_static("headwater"),
    )];
    let rest = &head.path_and_query()[b"/api/".len()..];
    let edits = RequestEdits {
        target: Some([b"/v2/", rest]),
        remove: &remove,
        add: &add,
        ..Default::default()
    };
    let out = forward(&head, &edits, &Forwarding::default());
    assert_eq!(out.target(), b"/v2/v1/users?id=3");
    assert_eq!(out.header("x-internal"), None);
    assert_eq!(out.header("x-keep"), Some(&b"k"[..]));
    assert_eq!(out.header("x-from"), Some(&b"headwater"[..]));

    let head =
        req(b"PUT /p HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
    let kept = forward(&head, &RequestEdits::default(), &Forwarding::default());
    assert!(kept.expects_continue());
    let out = forward(
        &head,
        &RequestEdits {
            strip_expect: true,
            ..Default::default()
        },
        &Forwarding::default(),
    );
    assert_eq!(out.header("expect"), None);
}

#[test]
fn absolute_form_becomes_origin_form_with_its_authority_as_host() {
    let head = req(b"GET http://origin.example:8080?q=1 HTTP/1.1\r\nHost: ignored\r\n\r\n");
    let out = forward(&head, &RequestEdits::default(), &Forwarding::default());
    assert_eq!(out.target(), b"/?q=1");
    assert_eq!(out.header("host"), Some(&b"origin.example:8080"[..]));
    assert_eq!(out.header_all("host").count(), 1);
}

#[test]
fn upgrade_is_forwarded_only_when_asked() {
    let head = req(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n");
    let out = forward(
        &head,
        &RequestEdits {
            upgrade: true,
            ..Default::default()
        },
        &Forwarding::default(),
    );
    assert_eq!(out.upgrade(), Some(&b"websocket"[..]));
    assert_eq!(out.header("sec-websocket-key"), Some(&b"k"[..]));
    let out = forward(&head, &RequestEdits::default(), &Forwarding::default());
    assert_eq!(out.upgrade(), None);
    assert_eq!(out.header("upgrade"), None);
    assert_eq!(out.header("connection"), None);
}

fn forward_response(
    head: &ResponseHead,
    method: &Method,
    client: Version,
    conn: ClientConnection,
) -> ResponseHead {
    let framing = headwater_http1::response_framing(head.body_kind(method), client);
    let mut out = BytesMut::new();
    encode_proxy_response(
        head,
        framing,
        client,
        conn,
        &ResponseEdits::default(),
        Some(b"headwater"),
        &mut out,
    );
    res(&out)
}

#[test]
fn responses_are_reframed_for_the_client() {
    // Close-delimited upstream body goes chunked to a 1.1 client, close-delimited to 1.0.
    let up = res(b"HTTP/1.0 200 OK\r\nConnection: x-hop\r\nX-Hop: 1\r\nServer: s\r\n\r\n");
    let out = forward_response(
        &up,
        &Method::GET,
        Version::HTTP_11,
        ClientConnection::KeepAlive,
    );
    assert_eq!(out.body_kind(&Method::GET), BodyKind::Chunked);
    assert_eq!(out.header("x-hop"), None);
    assert_eq!(out.header("server"), Some(&b"s"[..]));
    assert_eq!(out.header("via"), Some(&b"1.0 headwater"[..]));
    assert!(out.keep_alive());
    let out = forward_response(&up, &Method::GET, Version::HTTP_10, ClientConnection::Close);
    assert_eq!(out.body_kind(&Method::GET), BodyKind::Close);
    assert!(!out.keep_alive());

    // A 1.0 client that keeps alive is told so explicitly.
    let up = res(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n");
    let mut out = BytesMut::new();
    encode_proxy_response(
        &up,
        BodyKind::Length(3),
        Version::HTTP_10,
        ClientConnection::KeepAlive,
        &ResponseEdits::default(),
        None,
        &mut out,
    );
    assert!(String::from_utf8_lossy(&out).contains("connection: keep-alive\r\n"));

    // HEAD and 304 keep the upstream Content-Length.
    let up = res(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
    let out = forward_response(
        &up,
        &Method::HEAD,
        Version::HTTP_11,
        ClientConnection::KeepAlive,
    );
    assert_eq!(out.content_length(), Some(1234));
    // Chunked upstream to a 1.1 client stays chunked, with a single Transfer-Encoding.
    let up = res(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    let out = forward_response(
        &up,
        &Method::GET,
        Version::HTTP_11,
        ClientConnection::KeepAlive,
    );
    assert_eq!(out.header_all("transfer-encoding").count(), 1);
    // 101 keeps Upgrade and says Connection: upgrade.
    let up = res(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    let out = forward_response(
        &up,
        &Method::GET,
        Version::HTTP_11,
        ClientConnection::Upgrade,
    );
    assert_eq!(out.upgrade(), Some(&b"websocket"[..]));
    // An empty reason phrase is replaced with the canonical one.
    let up = res(b"HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n");
    let out = forward_response(
        &up,
        &Method::GET,
        Version::HTTP_11,
        ClientConnection::KeepAlive,
    );
    assert_eq!(out.reason(), b"Not Found");
}

#[test]
fn own_heads() {
    let mut out = BytesMut::new();
    encode_response_head(
        StatusCode::SERVICE_UNAVAILABLE,
        &[("retry-after", b"3")],
        BodyKind::Length(2),
        Version::HTTP_11,
        ClientConnection::Close,
        &mut out,
    );
    assert_eq!(&out[..], b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 3\r\ncontent-length: 2\r\nconnection: close\r\n\r\n");
    let mut out = BytesMut::new();
    encode_request_head(
        &Method::GET,
        b"/healthz",
        b"10.0.0.1:80",
        &[("user-agent", b"headwater")],
        BodyKind::None,
        &mut out,
    );
    let h = req(&out);
    assert_eq!(h.path(), b"/healthz");
    assert_eq!(h.header("user-agent"), Some(&b"headwater"[..]));
}

#[test]
fn client_addresses_are_written_exactly() {
    let head = req(b"GET /p HTTP/1.1\r\nHost: a\r\n\r\n");
    let cases: [(IpAddr, &[u8]); 5] = [
        (Ipv4Addr::new(0, 9, 10, 255).into(), b"0.9.10.255"),
        (Ipv4Addr::new(100, 20, 3, 0).into(), b"100.20.3.0"),
        (Ipv4Addr::new(199, 99, 109, 110).into(), b"199.99.109.110"),
        (
            "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().into(),
            b"2001:db8::1",
        ),
        (
            "::ffff:10.1.2.3"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .into(),
            b"::ffff:10.1.2.3",
        ),
    ];
    for (ip, want) in cases {
        let fwd = Forwarding {
            xff: XffMode::Replace,
            client_ip: Some(ip),
            ..Forwarding::default()
        };
        let out = forward(&head, &RequestEdits::default(), &fwd);
        assert_eq!(out.header("x-forwarded-for"), Some(want), "{ip}");
    }
}
