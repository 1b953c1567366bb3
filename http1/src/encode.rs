//! Writing heads: a proxy's rewrite of a received request or response (hop-by-hop stripping,
//! forwarding headers, route edits, re-framing) and plain heads for the gateway's own messages.
//!
//! Every function appends to a caller-owned `BytesMut`, so a connection reuses one write
//! buffer and the common case allocates nothing. Header bytes are copied from the received
//! head exactly once, into that buffer.

use std::net::IpAddr;

use bytes::{BufMut, BytesMut};
use http::{HeaderName, HeaderValue, Method, StatusCode, Version};

use crate::framing::BodyKind;
use crate::head::{Facts, FieldKind, RequestHead, ResponseHead, TargetForm};
use crate::syntax::list_elements;

/// The interim response sent to a client that asked `Expect: 100-continue`.
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What to do with an incoming `X-Forwarded-For`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XffMode {
    /// Keep the client's list and append the peer address (default).
    #[default]
    Append,
    /// Replace it with the peer address (the client is not trusted).
    Replace,
    /// Leave whatever the client sent; add nothing.
    Off,
}

/// Forwarding headers a proxy adds to requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Forwarding<'a> {
    /// `Via` pseudonym, e.g. `b"headwater"`: appends `1.1 headwater` (or `1.0`) to `Via`.
    pub via: Option<&'a [u8]>,
    /// `X-Forwarded-For` handling.
    pub xff: XffMode,
    /// The downstream peer's address, for `X-Forwarded-For`.
    pub client_ip: Option<IpAddr>,
    /// `X-Forwarded-Proto` value (`http` / `https`); replaces any incoming value.
    pub proto: Option<&'a [u8]>,
    /// Set `X-Forwarded-Host` to the authority the client asked for (replacing any incoming).
    pub forwarded_host: bool,
}

/// Route-specific changes to a forwarded request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestEdits<'a> {
    /// A new path-and-query, given in two parts that are written one after the other (so a
    /// prefix rewrite needs no allocation). `None` keeps the received one.
    pub target: Option<[&'a [u8]; 2]>,
    /// Host to send when the request carries none (an HTTP/1.0 client without `Host`).
    pub default_host: Option<&'a [u8]>,
    /// Forward an upgrade (`Connection: upgrade` + `Upgrade`) instead of stripping it.
    pub upgrade: bool,
    /// Drop `Expect` (the proxy answered `100-continue` to the client itself).
    pub strip_expect: bool,
    /// Header names to drop.
    pub remove: &'a [HeaderName],
    /// Headers to add.
    pub add: &'a [(HeaderName, HeaderValue)],
}

/// Route-specific changes to a forwarded response.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResponseEdits<'a> {
    /// Header names to drop.
    pub remove: &'a [HeaderName],
    /// Headers to add.
    pub add: &'a [(HeaderName, HeaderValue)],
}

/// Whether `name` is listed in the message's Connection header(s) (and so hop-by-hop).
fn named_by_connection<'a>(
    name: &[u8],
    facts: &Facts,
    mut connection_values: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> bool {
    facts.conn_other
        && connection_values.any(|(n, v)| {
            n.eq_ignore_ascii_case(b"connection")
                && list_elements(v).any(|t| t.eq_ignore_ascii_case(name))
        })
}

fn removed(name: &[u8], remove: &[HeaderName]) -> bool {
    remove
        .iter()
        .any(|r| r.as_str().as_bytes().eq_ignore_ascii_case(name))
}

#[inline]
fn put_header(dst: &mut BytesMut, name: &[u8], value: &[u8]) {
    dst.reserve(name.len() + value.len() + 4);
    dst.put_slice(name);
    dst.put_slice(b": ");
    dst.put_slice(value);
    dst.put_slice(b"\r\n");
}

/// Appends the decimal form of `n`.
pub fn put_u64(dst: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    dst.put_slice(&digits[i..]);
}

fn put_framing(dst: &mut BytesMut, framing: BodyKind) {
    match framing {
        BodyKind::Length(n) => {
            dst.put_slice(b"content-length: ");
            put_u64(dst, n);
            dst.put_slice(b"\r\n");
        }
        BodyKind::Chunked => dst.put_slice(b"transfer-encoding: chunked\r\n"),
        BodyKind::None | BodyKind::Close => {}
    }
}

fn put_ip(dst: &mut BytesMut, ip: IpAddr) {
    use std::io::Write;
    if let IpAddr::V4(v4) = ip {
        // The common case without the formatting machinery (it cost ~1k instructions per
        // request): each octet in decimal, dot-separated.
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                dst.put_u8(b'.');
            }
            if octet >= 100 {
                dst.put_u8(b'0' + octet / 100);
            }
            if octet >= 10 {
                dst.put_u8(b'0' + octet / 10 % 10);
            }
            dst.put_u8(b'0' + octet % 10);
        }
        return;
    }
    let mut tmp = [0u8; 46];
    let mut cursor = std::io::Cursor::new(&mut tmp[..]);
    // An IP address always fits in 45 bytes.
    let _ = write!(cursor, "{ip}");
    let n = cursor.position() as usize;
    dst.put_slice(&tmp[..n]);
}

/// Starts field `name` with every received value of it, each followed by ", ": the caller
/// appends the proxy's own element and ends the line.
fn put_received<'a>(dst: &mut BytesMut, name: &[u8], received: impl Iterator<Item = &'a [u8]>) {
    dst.put_slice(name);
    dst.put_slice(b": ");
    for v in received {
        dst.put_slice(v);
        dst.put_slice(b", ");
    }
}

/// Writes one `Via` field: every received value merged, then ours (`1.1 pseudonym`, or
/// `1.0` for a message received over HTTP/1.0).
fn put_via<'a>(
    dst: &mut BytesMut,
    received: impl Iterator<Item = &'a [u8]>,
    version: Version,
    pseudonym: &[u8],
) {
    put_received(dst, b"via", received);
    dst.put_slice(version_token(version));
    dst.put_u8(b' ');
    dst.put_slice(pseudonym);
    dst.put_slice(b"\r\n");
}

/// Writes one `X-Forwarded-For` field: every received value merged, then the peer's address.
fn put_xff<'a>(dst: &mut BytesMut, received: impl Iterator<Item = &'a [u8]>, ip: IpAddr) {
    put_received(dst, b"x-forwarded-for", received);
    put_ip(dst, ip);
    dst.put_slice(b"\r\n");
}

fn version_token(v: Version) -> &'static [u8] {
    if v == Version::HTTP_10 {
        b"1.0"
    } else {
        b"1.1"
    }
}

/// Writes the head of `head` as a proxy forwards it upstream over HTTP/1.1, with body framing
/// `framing` (see [`crate::framing::request_framing`]).
///
/// Hop-by-hop headers are removed (`Connection` and every header it names, `Keep-Alive`,
/// `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, and `Upgrade` unless
/// `edits.upgrade`), the framing header is written anew, `Host` comes first, and the
/// forwarding headers of `fwd` are applied.
pub fn encode_proxy_request(
    head: &RequestHead,
    framing: BodyKind,
    edits: &RequestEdits<'_>,
    fwd: &Forwarding<'_>,
    dst: &mut BytesMut,
) {
    let facts = head.facts();
    dst.reserve(head.as_bytes().len() + 128);
    dst.put_slice(head.method().as_str().as_bytes());
    dst.put_u8(b' ');
    match (edits.target, head.target_form()) {
        (Some([a, b]), _) => {
            dst.put_slice(a);
            dst.put_slice(b);
        }
        (None, TargetForm::Origin | TargetForm::Absolute) => {
            // An absolute-form target's path may be empty (`http://host` or `http://host?q`).
            let pq = head.path_and_query();
            if !pq.starts_with(b"/") {
                dst.put_u8(b'/');
            }
            dst.put_slice(pq);
        }
        (None, _) => dst.put_slice(head.target()),
    }
    dst.put_slice(b" HTTP/1.1\r\nhost: ");
    if let Some(host) = head
        .authority()
        .filter(|h| !h.is_empty())
        .or(edits.default_host)
    {
        dst.put_slice(host);
    }
    dst.put_slice(b"\r\n");

    let mut via_written = false;
    let mut xff_written = false;
    for (kind, name, value) in head.classified_headers() {
        match kind {
            k if k.is_hop_by_hop() => continue,
            FieldKind::ContentLength | FieldKind::Host => continue,
            FieldKind::Upgrade if !edits.upgrade => continue,
            FieldKind::Expect if edits.strip_expect => continue,
            FieldKind::Via => {
                if let Some(p) = fwd.via {
                    if !via_written {
                        put_via(dst, head.header_all("via"), head.version(), p);
                        via_written = true;
                    }
                    continue;
                }
            }
            FieldKind::XForwardedFor => match (fwd.xff, fwd.client_ip) {
                (XffMode::Off, _) | (_, None) => {}
                (XffMode::Replace, Some(_)) => continue,
                (XffMode::Append, Some(ip)) => {
                    if !xff_written {
                        put_xff(dst, head.header_all("x-forwarded-for"), ip);
                        xff_written = true;
                    }
                    continue;
                }
            },
            FieldKind::XForwardedProto if fwd.proto.is_some() => continue,
            FieldKind::XForwardedHost if fwd.forwarded_host => continue,
            _ => {}
        }
        // An Upgrade field that got here is forwarded with the upgrade; `Connection: upgrade`
        // names it for exactly that reason, so being named by Connection must not drop it.
        if (kind != FieldKind::Upgrade && named_by_connection(name, facts, head.headers()))
            || removed(name, edits.remove)
        {
            continue;
        }
        put_header(dst, name, value);
    }
    if edits.upgrade && head.upgrade().is_some() {
        dst.put_slice(b"connection: upgrade\r\n");
    }
    if let (Some(p), false) = (fwd.via, via_written) {
        put_via(dst, std::iter::empty(), head.version(), p);
    }
    if let (XffMode::Append | XffMode::Replace, Some(ip), false) =
        (fwd.xff, fwd.client_ip, xff_written)
    {
        put_xff(dst, std::iter::empty(), ip);
    }
    if let Some(proto) = fwd.proto {
        put_header(dst, b"x-forwarded-proto", proto);
    }
    if fwd.forwarded_host {
        if let Some(host) = head.authority().filter(|h| !h.is_empty()) {
            put_header(dst, b"x-forwarded-host", host);
        }
    }
    for (n, v) in edits.add {
        put_header(dst, n.as_str().as_bytes(), v.as_bytes());
    }
    put_framing(dst, framing);
    dst.put_slice(b"\r\n");
}

/// How a forwarded response's connection is handled toward the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientConnection {
    /// Keep the client connection open after this response.
    KeepAlive,
    /// Close it after this response (`Connection: close` is sent).
    Close,
    /// The response is a 101 switching the connection to the upgraded protocol.
    Upgrade,
}

/// Writes the head of an upstream response as the proxy forwards it to a client speaking
/// `client_version`, with body framing `framing` (see [`crate::framing::response_framing`]).
pub fn encode_proxy_response(
    head: &ResponseHead,
    framing: BodyKind,
    client_version: Version,
    conn: ClientConnection,
    edits: &ResponseEdits<'_>,
    via: Option<&[u8]>,
    dst: &mut BytesMut,
) {
    let facts = head.facts();
    dst.reserve(head.as_bytes().len() + 96);
    put_status_line(dst, head.status(), head.reason());
    let mut via_written = false;
    for (kind, name, value) in head.classified_headers() {
        match kind {
            k if k.is_hop_by_hop() => continue,
            // A response without a body (HEAD, 304) keeps its Content-Length: it describes
            // the representation, not this message's framing.
            FieldKind::ContentLength if framing != BodyKind::None => continue,
            FieldKind::Upgrade if conn != ClientConnection::Upgrade => continue,
            FieldKind::Via => {
                if let Some(p) = via {
                    if !via_written {
                        put_via(dst, head.header_all("via"), head.version(), p);
                        via_written = true;
                    }
                    continue;
                }
            }
            _ => {}
        }
        // As for requests: an Upgrade field that got here goes along with the upgrade.
        if (kind != FieldKind::Upgrade && named_by_connection(name, facts, head.headers()))
            || removed(name, edits.remove)
        {
            continue;
        }
        put_header(dst, name, value);
    }
    if let (Some(p), false) = (via, via_written) {
        put_via(dst, std::iter::empty(), head.version(), p);
    }
    for (n, v) in edits.add {
        put_header(dst, n.as_str().as_bytes(), v.as_bytes());
    }
    put_framing(dst, framing);
    put_connection(dst, conn, client_version);
    dst.put_slice(b"\r\n");
}

fn put_connection(dst: &mut BytesMut, conn: ClientConnection, client_version: Version) {
    match conn {
        ClientConnection::Close => dst.put_slice(b"connection: close\r\n"),
        ClientConnection::KeepAlive if client_version == Version::HTTP_10 => {
            dst.put_slice(b"connection: keep-alive\r\n")
        }
        ClientConnection::KeepAlive => {}
        ClientConnection::Upgrade => dst.put_slice(b"connection: upgrade\r\n"),
    }
}

fn put_status_line(dst: &mut BytesMut, status: StatusCode, reason: &[u8]) {
    dst.put_slice(b"HTTP/1.1 ");
    dst.put_slice(status.as_str().as_bytes());
    dst.put_u8(b' ');
    if reason.is_empty() {
        dst.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    } else {
        dst.put_slice(reason);
    }
    dst.put_slice(b"\r\n");
}

/// Writes a response head the gateway itself produces (errors, admin answers): status line,
/// `headers`, the framing header, and `Connection` per `conn` and the client's version.
pub fn encode_response_head(
    status: StatusCode,
    headers: &[(&str, &[u8])],
    framing: BodyKind,
    client_version: Version,
    conn: ClientConnection,
    dst: &mut BytesMut,
) {
    put_status_line(dst, status, b"");
    for (n, v) in headers {
        put_header(dst, n.as_bytes(), v);
    }
    put_framing(dst, framing);
    put_connection(dst, conn, client_version);
    dst.put_slice(b"\r\n");
}

/// Writes an HTTP/1.1 request head the gateway originates (health probes, LLM provider calls).
pub fn encode_request_head(
    method: &Method,
    target: &[u8],
    host: &[u8],
    headers: &[(&str, &[u8])],
    framing: BodyKind,
    dst: &mut BytesMut,
) {
    dst.put_slice(method.as_str().as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(target);
    dst.put_slice(b" HTTP/1.1\r\nhost: ");
    dst.put_slice(host);
    dst.put_slice(b"\r\n");
    for (n, v) in headers {
        put_header(dst, n.as_bytes(), v);
    }
    put_framing(dst, framing);
    dst.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::{Limits, RequestParser, ResponseParser};

    /// Found by the `request_head` fuzz target: with `Connection: Upgrade, HTTP2-Settings`
    /// (an h2c upgrade) the Upgrade field counted as "named by Connection" and was dropped,
    /// while `connection: upgrade` was still written, so the upstream saw an upgrade request
    /// without an Upgrade field. A 101 forwarded with `ClientConnection::Upgrade` lost its
    /// Upgrade field the same way (the `response_head` target's property covers that case).
    #[test]
    fn forwarded_upgrade_keeps_upgrade_when_connection_lists_other_options() {
        let mut buf = BytesMut::from(
            &b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMA\r\n\r\n"[..],
        );
        let head = RequestParser::new(Limits::default())
            .parse(&mut buf)
            .unwrap()
            .unwrap();
        let edits = RequestEdits {
            upgrade: true,
            ..RequestEdits::default()
        };
        let mut out = BytesMut::new();
        encode_proxy_request(
            &head,
            BodyKind::None,
            &edits,
            &Forwarding::default(),
            &mut out,
        );
        assert_eq!(
            &out[..],
            b"GET / HTTP/1.1\r\nhost: h\r\nUpgrade: h2c\r\nconnection: upgrade\r\n\r\n"
        );

        let mut buf = BytesMut::from(
            &b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade, X-Hop\r\nUpgrade: h2c\r\nX-Hop: 1\r\n\r\n"[..],
        );
        let head = ResponseParser::new(Limits::default())
            .parse(&mut buf)
            .unwrap()
            .unwrap();
        let mut out = BytesMut::new();
        encode_proxy_response(
            &head,
            BodyKind::None,
            Version::HTTP_11,
            ClientConnection::Upgrade,
            &ResponseEdits::default(),
            None,
            &mut out,
        );
        assert_eq!(
            &out[..],
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nconnection: upgrade\r\n\r\n"
        );
    }
}
