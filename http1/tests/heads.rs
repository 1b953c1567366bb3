//! Request and response head parsing: valid heads, limits, and every smuggling vector the
//! codec must refuse, table-driven.

use bytes::BytesMut;
use headwater_http1::{
    BodyKind, ErrorKind, Limits, RequestHead, RequestParser, ResponseHead, ResponseParser,
    TargetForm,
};
use http::{Method, StatusCode, Version};

fn parse(raw: &[u8]) -> Result<Option<RequestHead>, headwater_http1::Error> {
    parse_limited(raw, Limits::default())
}

fn parse_limited(
    raw: &[u8],
    limits: Limits,
) -> Result<Option<RequestHead>, headwater_http1::Error> {
    RequestParser::new(limits).parse(&mut BytesMut::from(raw))
}

/// A GET with a Host field and `n` more fields.
fn with_fields(n: usize) -> Vec<u8> {
    let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..n {
        raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    raw
}

fn ok(raw: &[u8]) -> RequestHead {
    match parse(raw) {
        Ok(Some(h)) => h,
        other => panic!(
            "expected a head for {:?}, got {other:?}",
            String::from_utf8_lossy(raw)
        ),
    }
}

fn err(raw: &[u8]) -> headwater_http1::Error {
    match parse(raw) {
        Err(e) => e,
        other => panic!(
            "expected an error for {:?}, got {other:?}",
            String::from_utf8_lossy(raw)
        ),
    }
}

#[test]
fn simple_get() {
    let mut buf = BytesMut::from(
        &b"GET /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\nNEXT"[..],
    );
    let head = RequestParser::new(Limits::default())
        .parse(&mut buf)
        .unwrap()
        .unwrap();
    assert_eq!(head.method(), Method::GET);
    assert_eq!(head.version(), Version::HTTP_11);
    assert_eq!(head.target(), b"/a/b?x=1");
    assert_eq!(head.path(), b"/a/b");
    assert_eq!(head.query(), Some(&b"x=1"[..]));
    assert_eq!(head.authority(), Some(&b"example.com"[..]));
    assert_eq!(head.header("accept"), Some(&b"*/*"[..]));
    assert_eq!(head.header("ACCEPT"), Some(&b"*/*"[..]));
    assert_eq!(head.header_count(), 2);
    assert_eq!(head.body_kind(), BodyKind::None);
    assert!(head.keep_alive());
    assert_eq!(&buf[..], b"NEXT", "bytes after the head stay in the buffer");
    // http crate views share the buffer.
    assert_eq!(head.header_name(1), http::header::ACCEPT);
    assert_eq!(head.header_value(0), "example.com");
    assert_eq!(head.uri().path(), "/a/b");
    let parts = head.to_parts();
    assert_eq!(parts.method, Method::GET);
    assert_eq!(parts.headers["host"], "example.com");
}

#[test]
fn partial_input_needs_more_then_completes() {
    let raw = b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
    let mut parser = RequestParser::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut got = None;
    for (i, b) in raw.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        if let Some(h) = parser.parse(&mut buf).unwrap() {
            assert_eq!(i, raw.len() - 6, "complete exactly at the blank line");
            got = Some(h);
            break;
        }
    }
    let head = got.expect("head");
    assert_eq!(head.body_kind(), BodyKind::Length(5));
    assert_eq!(head.method(), Method::POST);
}

#[test]
fn leading_empty_lines_are_ignored() {
    let h = ok(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h.path(), b"/");
}

#[test]
fn keep_alive_rules() {
    let cases: &[(&[u8], bool)] = &[
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            false,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n",
            false,
        ),
        (b"GET / HTTP/1.0\r\n\r\n", false),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        (
            b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: a\r\n\r\n",
            true,
        ),
    ];
    for (raw, want) in cases {
        assert_eq!(
            ok(raw).keep_alive(),
            *want,
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn body_framing() {
    let cases: &[(&[u8], BodyKind)] = &[
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            BodyKind::Length(0),
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n",
            BodyKind::Length(42),
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\nContent-Length: 42\r\n\r\n",
            BodyKind::Length(42),
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42, 42\r\n\r\n",
            BodyKind::Length(42),
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            BodyKind::Chunked,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n",
            BodyKind::Chunked,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            BodyKind::Chunked,
        ),
        (b"POST / HTTP/1.1\r\nHost: a\r\n\r\n", BodyKind::None),
    ];
    for (raw, want) in cases {
        assert_eq!(
            ok(raw).body_kind(),
            *want,
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
}

/// Every smuggling and malformation vector from the codec issue: each is rejected with the
/// right class of error.
#[test]
fn smuggling_vectors_are_rejected() {
    use ErrorKind::*;
    let cases: &[(&str, &[u8], ErrorKind)] = &[
        ("CL with TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", BadFraming),
        ("TE with CL", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", BadFraming),
        ("differing CLs", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", BadFraming),
        ("differing CL list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", BadFraming),
        ("signed CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", BadFraming),
        ("negative CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", BadFraming),
        ("hex CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", BadFraming),
        ("empty CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", BadFraming),
        ("overflowing CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", BadFraming),
        ("CL with inner space", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", BadFraming),
        ("TE chunked, identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", BadFraming),
        ("TE identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", BadFraming),
        ("TE xchunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", BadFraming),
        ("TE chunked twice", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", BadFraming),
        ("TE chunked-false", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked-false\r\n\r\n", BadFraming),
        ("TE quoted", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", BadFraming),
        ("TE with vertical tab", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n", Malformed),
        ("TE duplicated", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", BadFraming),
        ("TE split across fields", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", BadFraming),
        ("TE empty", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", BadFraming),
        ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", BadFraming),
        ("space before colon", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", Malformed),
        ("tab before colon", b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", Malformed),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n  c\r\n\r\n", Malformed),
        ("obs-fold of TE", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", Malformed),
        ("leading space header", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", Malformed),
        ("bare CR in value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", Malformed),
        ("bare CR line end", b"GET / HTTP/1.1\rHost: a\r\n\r\n", Malformed),
        ("bare LF line ends", b"GET / HTTP/1.1\nHost: a\n\n", Malformed),
        ("bare LF in headers", b"GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", Malformed),
        ("bare LF terminator", b"GET / HTTP/1.1\r\nHost: a\r\n\n", Malformed),
        ("NUL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n", Malformed),
        ("NUL in name", b"GET / HTTP/1.1\r\nHost: a\r\nX-\x00A: b\r\n\r\n", Malformed),
        ("DEL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x7fc\r\n\r\n", Malformed),
        ("control byte in value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: \x01\r\n\r\n", Malformed),
        ("NUL in target", b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n", Malformed),
        ("missing Host on 1.1", b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", Malformed),
        ("duplicate Host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Malformed),
        ("Host with path", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", Malformed),
        ("Host with userinfo", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", Malformed),
        ("Host with space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", Malformed),
        ("target without slash", b"GET foo HTTP/1.1\r\nHost: a\r\n\r\n", Malformed),
        ("target with fragment", b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", Malformed),
        ("target with quote", b"GET /a\"b HTTP/1.1\r\nHost: a\r\n\r\n", Malformed),
        ("target non-ascii", b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", Malformed),
        ("target bad escape", b"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n", Malformed),
        ("target truncated escape", b"GET /a% HTTP/1.1\r\nHost: a\r\n\r\n", Malformed),
        ("asterisk outside OPTIONS", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", Malformed),
        ("absolute-form userinfo", b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", Malformed),
        ("CONNECT origin-form", b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", Malformed),
        ("two spaces in request line", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Malformed),
        ("missing version", b"GET /\r\nHost: a\r\n\r\n", Malformed),
        ("garbage version", b"GET / HTTP/1.x\r\nHost: a\r\n\r\n", Malformed),
        ("lowercase version", b"GET / http/1.1\r\nHost: a\r\n\r\n", Malformed),
        ("bad method", b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", Malformed),
        ("invalid Connection", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: a b\r\n\r\n", Malformed),
        ("binary garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", Malformed),
    ];
    for (what, raw, kind) in cases {
        let e = err(raw);
        assert_eq!(e.kind(), *kind, "{what}: {e}");
        assert_eq!(
            e.status().as_u16(),
            if *kind == ExpectationFailed { 417 } else { 400 },
            "{what}"
        );
    }
}

#[test]
fn unsupported_versions_get_505() {
    for raw in [
        &b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"[..],
        b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
        b"GET / HTTP/0.9\r\n\r\n",
    ] {
        let e = err(raw);
        assert_eq!(
            e.kind(),
            ErrorKind::VersionNotSupported,
            "{}",
            String::from_utf8_lossy(raw)
        );
        assert_eq!(e.status(), StatusCode::HTTP_VERSION_NOT_SUPPORTED);
    }
}

#[test]
fn limits_answer_431_and_414() {
    let limits = Limits {
        max_head_bytes: 1024,
        max_headers: 8,
        max_uri_bytes: 256,
    };
    // Too many headers.
    let e = parse_limited(&with_fields(8), limits).unwrap_err();
    assert_eq!(
        (e.kind(), e.status().as_u16()),
        (ErrorKind::TooManyHeaders, 431)
    );

    // Exactly at the header limit is fine.
    assert!(parse_limited(&with_fields(7), limits).unwrap().is_some());

    // Head too large, complete.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "x".repeat(2000)
    );
    let e = parse_limited(big.as_bytes(), limits).unwrap_err();
    assert_eq!(
        (e.kind(), e.status().as_u16()),
        (ErrorKind::HeadTooLarge, 431)
    );

    // Head too large while still incomplete: refused before the end arrives.
    let partial = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}", "x".repeat(2000));
    let e = parse_limited(partial.as_bytes(), limits).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::HeadTooLarge);

    // Target too long, complete and incomplete.
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(300));
    let e = parse_limited(long.as_bytes(), limits).unwrap_err();
    assert_eq!(
        (e.kind(), e.status().as_u16()),
        (ErrorKind::UriTooLong, 414)
    );
    let long = format!("GET /{}", "a".repeat(300));
    let e = parse_limited(long.as_bytes(), limits).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UriTooLong);
    // A long target beyond the head limit is still a 414, not a 431.
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(5000));
    let e = parse_limited(long.as_bytes(), limits).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UriTooLong);
}

#[test]
fn default_limits_are_64k_and_128_headers() {
    let l = Limits::default();
    assert_eq!((l.max_head_bytes, l.max_headers), (64 * 1024, 128));
    // 128 headers pass with the default limits; 129 do not.
    for (n, okay) in [(127, true), (128, false)] {
        assert_eq!(parse(&with_fields(n)).is_ok(), okay, "{} headers", n + 1);
    }
    // Larger configured limits use the heap path.
    let limits = Limits {
        max_headers: 300,
        ..Limits::default()
    };
    let h = parse_limited(&with_fields(250), limits).unwrap().unwrap();
    assert_eq!(h.header_count(), 251);
}

#[test]
fn expect_and_upgrade() {
    let h = ok(b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    assert!(h.expects_continue());
    // 1.0 clients' Expect is ignored.
    let h = ok(b"PUT /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    assert!(!h.expects_continue());
    let e = err(b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n");
    assert_eq!(
        (e.kind(), e.status().as_u16()),
        (ErrorKind::ExpectationFailed, 417)
    );

    let h = ok(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: x\r\n\r\n");
    assert_eq!(h.upgrade(), Some(&b"websocket"[..]));
    assert!(h.is_websocket_upgrade());
    // Upgrade not named by Connection is not an upgrade.
    let h = ok(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(h.upgrade(), None);
}

#[test]
fn target_forms() {
    let h = ok(b"GET http://Example.com:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!(h.target_form(), TargetForm::Absolute);
    assert_eq!(h.authority(), Some(&b"Example.com:8080"[..]));
    assert_eq!(h.path(), b"/p");
    assert_eq!(h.path_and_query(), b"/p?q");
    let h = ok(b"GET http://a.b HTTP/1.1\r\nHost: a.b\r\n\r\n");
    assert_eq!(h.path(), b"/");
    let h = ok(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h.target_form(), TargetForm::Asterisk);
    let h = ok(b"CONNECT a.b:443 HTTP/1.1\r\nHost: a.b:443\r\n\r\n");
    assert_eq!(h.target_form(), TargetForm::Authority);
    assert_eq!(h.authority(), Some(&b"a.b:443"[..]));
}

#[test]
fn nothing_after_a_rejected_head_is_parsed() {
    // A rejected head leaves the buffer untouched; a caller that follows the contract closes the
    // connection, and the parser never yields the smuggled second request.
    let raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut buf = BytesMut::from(&raw[..]);
    let mut p = RequestParser::new(Limits::default());
    assert!(p.parse(&mut buf).is_err());
    assert_eq!(buf.len(), raw.len());
}

#[test]
fn responses() {
    let mut p = ResponseParser::new(Limits::default());
    let mut buf =
        BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"[..]);
    let h = p.parse(&mut buf).unwrap().unwrap();
    assert_eq!(h.status(), StatusCode::OK);
    assert_eq!(h.reason(), b"OK");
    assert_eq!(h.body_kind(&Method::GET), BodyKind::Length(5));
    assert_eq!(h.body_kind(&Method::HEAD), BodyKind::None);
    assert_eq!(h.header("x-a"), Some(&b"b"[..]));
    assert_eq!(&buf[..], b"hello");

    let cases: &[(&[u8], Method, BodyKind, bool)] = &[
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::GET,
            BodyKind::Chunked,
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\n\r\n",
            Method::GET,
            BodyKind::Close,
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            Method::GET,
            BodyKind::Close,
            true,
        ),
        (
            b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
            Method::GET,
            BodyKind::None,
            true,
        ),
        (
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            Method::GET,
            BodyKind::None,
            true,
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\n",
            Method::POST,
            BodyKind::None,
            true,
        ),
        (
            b"HTTP/1.1 200 Connection established\r\n\r\n",
            Method::CONNECT,
            BodyKind::None,
            true,
        ),
        (
            b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
            Method::GET,
            BodyKind::Length(1),
            false,
        ),
        (
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
            Method::GET,
            BodyKind::Length(1),
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
            Method::GET,
            BodyKind::Length(1),
            false,
        ),
        (
            b"HTTP/1.1 200 \r\nContent-Length: 1\r\n\r\n",
            Method::GET,
            BodyKind::Length(1),
            true,
        ),
    ];
    for (raw, method, kind, ka) in cases {
        let h = ResponseParser::new(Limits::default())
            .parse(&mut BytesMut::from(*raw))
            .unwrap()
            .unwrap();
        assert_eq!(
            h.body_kind(method),
            *kind,
            "{}",
            String::from_utf8_lossy(raw)
        );
        assert_eq!(h.keep_alive(), *ka, "{}", String::from_utf8_lossy(raw));
    }

    for raw in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 1\n\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        b"garbage\r\n\r\n",
    ] {
        assert!(
            ResponseParser::new(Limits::default())
                .parse(&mut BytesMut::from(raw))
                .is_err(),
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
}

/// A connection parses every head into one reused head (`parse_into`): nothing of the previous
/// message (fields, authority, reason, facts) may survive into the next, and `clear` keeps
/// nothing either.
#[test]
fn parse_into_a_reused_head_keeps_nothing_of_the_previous_one() {
    let mut parser = RequestParser::new(Limits::default());
    let mut head = RequestHead::default();
    let mut buf = BytesMut::from(
        &b"POST http://old.example/a?q HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.0\r\n\r\n"[..],
    );
    assert!(parser.parse_into(&mut buf, &mut head).unwrap());
    assert_eq!(head.authority(), Some(&b"old.example"[..]));
    assert_eq!(head.upgrade(), Some(&b"websocket"[..]));
    assert!(head.expects_continue());
    let _body = buf.split_to(3);
    assert!(parser.parse_into(&mut buf, &mut head).unwrap());
    assert!(buf.is_empty());
    let summary = |h: &RequestHead| {
        (
            h.as_bytes().clone(),
            h.method().clone(),
            h.version(),
            h.target().to_vec(),
            h.target_form(),
            h.authority().map(<[u8]>::to_vec),
            h.header_count(),
            h.body_kind(),
            h.keep_alive(),
            h.expects_continue(),
            h.upgrade().map(<[u8]>::to_vec),
        )
    };
    assert_eq!(summary(&head), summary(&ok(b"GET /b HTTP/1.0\r\n\r\n")));
    head.clear();
    assert_eq!(summary(&head), summary(&RequestHead::default()));
    assert!(head.as_bytes().is_empty() && head.authority().is_none());

    let mut parser = ResponseParser::new(Limits::default());
    let mut head = ResponseHead::default();
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 101 Switching\r\nConnection: upgrade, close\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\nHTTP/1.1 200\r\n\r\n"[..],
    );
    assert!(parser.parse_into(&mut buf, &mut head).unwrap());
    assert_eq!(head.upgrade(), Some(&b"h2c"[..]));
    assert!(parser.parse_into(&mut buf, &mut head).unwrap());
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.reason(), b"");
    assert_eq!(head.header_count(), 0);
    assert_eq!(head.content_length(), None);
    assert_eq!(head.body_kind(&Method::GET), BodyKind::Close);
    assert!(head.keep_alive());
    assert_eq!(head.upgrade(), None);
}
