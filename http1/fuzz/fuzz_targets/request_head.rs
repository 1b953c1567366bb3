//! RequestParser on arbitrary bytes.
//!
//! 1. The message is parsed whole, in two pieces split at a data-derived point, in many small
//!    pieces, and into a reused `RequestHead`: every run must agree (incomplete / error kind /
//!    the parsed head and the bytes left after it). The one tolerated difference: two runs that
//!    both fail may name different errors when one of them is a size limit, because a streaming
//!    parser must enforce limits on a prefix before it has seen a syntax error further on.
//! 2. A parsed head is re-encoded with `encode_proxy_request` (transparently, and with every
//!    forwarding header switched on); the result must parse again and agree on method, path,
//!    query, authority, body framing and the non-hop-by-hop fields.
//! 3. Nothing panics, including the `http` conversions (`to_parts`, `header_name/value`).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::BytesMut;
use fuzz_support::{check_runs, forwarded_fields, owned, reparse, show, without, Input, ROOMY};
use headwater_http1::{
    encode_proxy_request, request_framing, BodyKind, Forwarding, RequestEdits, RequestHead,
    RequestParser, TargetForm, XffMode,
};
use http::{Method, Version};
use libfuzzer_sys::fuzz_target;

/// Everything observable about a parsed request head.
#[derive(Debug, PartialEq)]
struct Snap {
    raw: Vec<u8>,
    method: Method,
    version: Version,
    target: Vec<u8>,
    form: TargetForm,
    path: Vec<u8>,
    query: Option<Vec<u8>>,
    authority: Option<Vec<u8>>,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    body: BodyKind,
    keep_alive: bool,
    expects_continue: bool,
    upgrade: Option<Vec<u8>>,
    websocket: bool,
}

fn snap(h: &RequestHead) -> Snap {
    Snap {
        raw: h.as_bytes().to_vec(),
        method: h.method().clone(),
        version: h.version(),
        target: h.target().to_vec(),
        form: h.target_form(),
        path: h.path().to_vec(),
        query: h.query().map(<[u8]>::to_vec),
        authority: h.authority().map(<[u8]>::to_vec),
        fields: owned(h.headers()),
        body: h.body_kind(),
        keep_alive: h.keep_alive(),
        expects_continue: h.expects_continue(),
        upgrade: h.upgrade().map(<[u8]>::to_vec),
        websocket: h.is_websocket_upgrade(),
    }
}

/// Exercises the accessors that convert to `http` types (they contain `expect`s).
fn conversions(h: &RequestHead) {
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
    assert_eq!(&parts.method, h.method());
    let _ = h.uri();
}

fn reencode(h: &RequestHead, edits: &RequestEdits<'_>, fwd: &Forwarding<'_>, msg: &[u8]) {
    let framing = request_framing(h.body_kind());
    let mut out = BytesMut::new();
    encode_proxy_request(h, framing, edits, fwd, &mut out);
    let ctx = || format!("\n  input {:?}\n  encoded {:?}", show(msg), show(&out));
    let again = reparse(RequestParser::new(ROOMY), &out, ctx);
    assert_eq!(again.method(), h.method(), "{}", ctx());
    assert_eq!(again.version(), Version::HTTP_11, "{}", ctx());
    assert_eq!(again.path(), h.path(), "path: {}", ctx());
    assert_eq!(again.query(), h.query(), "query: {}", ctx());
    let form = match h.target_form() {
        TargetForm::Absolute => TargetForm::Origin,
        f => f,
    };
    assert_eq!(again.target_form(), form, "{}", ctx());
    assert_eq!(
        again.authority().unwrap_or(b""),
        h.authority().unwrap_or(b""),
        "authority: {}",
        ctx()
    );
    assert_eq!(again.body_kind(), framing, "{}", ctx());
    assert_ne!(again.body_kind(), BodyKind::Close);
    assert_eq!(
        again.headers().next().map(|f| f.0),
        Some(&b"host"[..]),
        "{}",
        ctx()
    );
    if edits.upgrade {
        assert_eq!(again.upgrade(), h.upgrade(), "upgrade: {}", ctx());
    } else {
        assert_eq!(again.upgrade(), None, "upgrade: {}", ctx());
    }
    if fwd.via.is_none() && fwd.proto.is_none() && !fwd.forwarded_host && fwd.client_ip.is_none() {
        // Transparent forwarding: exactly the end-to-end fields, in order, byte for byte
        // (plus the Host field first, and the framing and Connection fields the encoder
        // writes itself).
        let sent = without(
            owned(again.headers().skip(1)),
            &[b"content-length", b"transfer-encoding", b"connection"],
        );
        let (drop, keep): (&[&[u8]], &[&[u8]]) = if edits.upgrade {
            (&[b"host", b"content-length"], &[b"upgrade"])
        } else {
            (&[b"host", b"content-length", b"upgrade"], &[])
        };
        let want = forwarded_fields(h.headers(), drop, keep);
        assert_eq!(sent, want, "forwarded fields: {}", ctx());
    } else {
        let via = again.header("via");
        assert!(
            via.is_some_and(|v| v.ends_with(b" headwater")),
            "via {:?}: {}",
            via.map(show),
            ctx()
        );
        assert_eq!(
            again.header("x-forwarded-proto"),
            Some(&b"https"[..]),
            "{}",
            ctx()
        );
    }
}

/// A request whose fields a reused head holds before the fuzzed one is parsed into it.
const PREVIOUS: &[u8] =
    b"POST /old?q HTTP/1.1\r\nHost: old\r\nContent-Length: 3\r\nA: 1\r\nB: 2\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let input = Input::new(data);
    let msg = input.msg;
    let Some(head) = check_runs(RequestParser::new, &input, PREVIOUS, snap) else {
        return;
    };
    conversions(&head);
    reencode(&head, &RequestEdits::default(), &Forwarding::default(), msg);
    if head.upgrade().is_some() {
        let edits = RequestEdits {
            upgrade: true,
            ..RequestEdits::default()
        };
        reencode(&head, &edits, &Forwarding::default(), msg);
    }
    let ip = if input.flags() & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
    } else {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))
    };
    let xff = if input.flags() & 2 == 0 {
        XffMode::Append
    } else {
        XffMode::Replace
    };
    reencode(
        &head,
        &RequestEdits::default(),
        &Forwarding {
            via: Some(b"headwater"),
            xff,
            client_ip: Some(ip),
            proto: Some(b"https"),
            forwarded_host: true,
        },
        msg,
    );
});
