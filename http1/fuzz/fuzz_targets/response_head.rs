//! ResponseParser on arbitrary bytes.
//!
//! 1. Whole, two pieces, many pieces and a reused `ResponseHead` must agree (incomplete / error
//!    kind / the parsed head, its body framing for GET, HEAD, CONNECT and POST, and the bytes
//!    left after it); two failures may differ only when one is a size limit.
//! 2. A parsed head is re-encoded with `encode_proxy_response` for a data-chosen request
//!    method, client version, connection handling and Via; the result must parse again with the
//!    status, reason, framing, keep-alive, upgrade and end-to-end fields the proxy promised.
//! 3. Nothing panics, including the `http` conversions.
#![no_main]

use bytes::BytesMut;
use fuzz_support::{check_runs, forwarded_fields, owned, reparse, show, without, Input, ROOMY};
use headwater_http1::{
    encode_proxy_response, response_framing, BodyKind, ClientConnection, ResponseEdits,
    ResponseHead, ResponseParser,
};
use http::{Method, StatusCode, Version};
use libfuzzer_sys::fuzz_target;

const METHODS: [Method; 4] = [Method::GET, Method::HEAD, Method::CONNECT, Method::POST];

#[derive(Debug, PartialEq)]
struct Snap {
    raw: Vec<u8>,
    status: StatusCode,
    version: Version,
    reason: Vec<u8>,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    content_length: Option<u64>,
    keep_alive: bool,
    upgrade: Option<Vec<u8>>,
    body: [BodyKind; 4],
}

fn snap(h: &ResponseHead) -> Snap {
    Snap {
        raw: h.as_bytes().to_vec(),
        status: h.status(),
        version: h.version(),
        reason: h.reason().to_vec(),
        fields: owned(h.headers()),
        content_length: h.content_length(),
        keep_alive: h.keep_alive(),
        upgrade: h.upgrade().map(<[u8]>::to_vec),
        body: METHODS.map(|m| h.body_kind(&m)),
    }
}

fn conversions(h: &ResponseHead) {
    for (i, (name, value)) in h.headers().enumerate() {
        assert!(h
            .header_name(i)
            .as_str()
            .as_bytes()
            .eq_ignore_ascii_case(name));
        assert_eq!(h.header_value(i).as_bytes(), value);
    }
    let parts = h.to_parts();
    assert_eq!(parts.headers.len(), h.header_count());
    assert_eq!(parts.status, h.status());
}

fn reencode(h: &ResponseHead, flags: u8, msg: &[u8]) {
    let method = &METHODS[usize::from(flags & 3)];
    let client = if flags & 4 == 0 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let conn = match (flags >> 3) & 3 {
        0 | 1 => ClientConnection::KeepAlive,
        2 => ClientConnection::Close,
        _ => ClientConnection::Upgrade,
    };
    let via: Option<&[u8]> = if flags & 32 == 0 {
        None
    } else {
        Some(b"headwater")
    };
    let framing = response_framing(h.body_kind(method), client);
    let mut out = BytesMut::new();
    encode_proxy_response(
        h,
        framing,
        client,
        conn,
        &ResponseEdits::default(),
        via,
        &mut out,
    );
    let ctx = || {
        format!(
            "\n  {method} {client:?} {conn:?} via={}\n  input {:?}\n  encoded {:?}",
            via.is_some(),
            show(msg),
            show(&out)
        )
    };
    let again = reparse(ResponseParser::new(ROOMY), &out, ctx);
    assert_eq!(again.status(), h.status(), "{}", ctx());
    assert_eq!(again.version(), Version::HTTP_11, "{}", ctx());
    let reason = if h.reason().is_empty() {
        h.status().canonical_reason().unwrap_or("").as_bytes()
    } else {
        h.reason()
    };
    assert_eq!(again.reason(), reason, "reason: {}", ctx());
    assert_eq!(again.body_kind(method), framing, "framing: {}", ctx());
    assert_eq!(
        again.keep_alive(),
        conn != ClientConnection::Close,
        "keep-alive: {}",
        ctx()
    );
    if conn == ClientConnection::Upgrade && h.upgrade().is_some() {
        assert_eq!(again.upgrade(), h.upgrade(), "upgrade: {}", ctx());
    }
    // End-to-end fields, in order, byte for byte. Content-Length is rewritten (or kept when
    // the message has no body) and Connection / Transfer-Encoding / Via are the encoder's own.
    let mut ours: Vec<&[u8]> = vec![b"content-length", b"transfer-encoding", b"connection"];
    if via.is_some() {
        ours.push(b"via");
    }
    let sent = without(owned(again.headers()), &ours);
    let (drop, keep): (&[&[u8]], &[&[u8]]) = if conn == ClientConnection::Upgrade {
        (&ours[..], &[b"upgrade"])
    } else {
        ours.push(b"upgrade");
        (&ours[..], &[])
    };
    let want = forwarded_fields(h.headers(), drop, keep);
    assert_eq!(sent, want, "forwarded fields: {}", ctx());
    if let Some(v) = via {
        let sent_via = again.header("via").unwrap_or(b"");
        assert!(sent_via.ends_with(v), "via: {}", ctx());
    }
}

/// A response whose fields a reused head holds before the fuzzed one is parsed into it.
const PREVIOUS: &[u8] =
    b"HTTP/1.1 404 Gone\r\nContent-Length: 3\r\nA: 1\r\nConnection: close\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let input = Input::new(data);
    let msg = input.msg;
    let Some(head) = check_runs(ResponseParser::new, &input, PREVIOUS, snap) else {
        return;
    };
    conversions(&head);
    reencode(&head, input.flags(), msg);
});
