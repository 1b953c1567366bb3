//! Request and response heads: incremental detection of the end of a head, strict parsing with
//! httparse, and a parsed head that keeps header *indices* into one frozen buffer.
//!
//! A [`RequestParser`] / [`ResponseParser`] is kept per connection. Each call scans only the
//! bytes that arrived since the previous call for the end of the head (so a client that sends
//! one byte at a time costs linear, not quadratic, work) and rejects bare LF / bare CR line
//! endings as it goes. Once the head is complete it is split off the read buffer without copying
//! (`BytesMut::split_to(..).freeze()`), parsed by httparse, and its framing-relevant headers
//! (`Content-Length`, `Transfer-Encoding`, `Connection`, `Host`, `Expect`, `Upgrade`) are
//! interpreted in the same pass, which also records the kind of every field's name for the
//! encoder ([`crate::encode`]), so that names are classified once. Names and values are then
//! served as slices of that buffer, or as `http` crate types ([`HeaderValue`] shares the
//! buffer; [`HeaderName`] is interned for standard names and copied once otherwise).

use core::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method, StatusCode, Uri, Version};

use crate::error::{bad_framing, malformed, Error, ErrorKind};
use crate::framing::BodyKind;
use crate::syntax::{eq_lowercase, is_token, list_elements, trim_ows};

/// Size limits applied while reading a head. Each has the status a server answers when exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of request line (or status line) plus header section. Exceeding it: 431.
    pub max_head_bytes: usize,
    /// Number of header fields. Exceeding it: 431.
    pub max_headers: usize,
    /// Length of the request-target. Exceeding it: 414.
    pub max_uri_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 64 * 1024,
            max_headers: 128,
            max_uri_bytes: 8 * 1024,
        }
    }
}

/// A byte range within a head's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Span {
    pub(crate) start: u32,
    pub(crate) end: u32,
}

impl Span {
    #[inline]
    fn of(buf: &[u8], part: &[u8]) -> Span {
        // Both pointers come from the same allocation: `part` is a sub-slice of `buf` that
        // httparse returned, so the difference is the offset of `part` in `buf`.
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    #[inline]
    pub(crate) fn range(self) -> core::ops::Range<usize> {
        self.start as usize..self.end as usize
    }

    #[inline]
    fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// One header field: the spans of its name and value in the head buffer, and what its name is
/// (classified once, when the head is parsed, for the encoder too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Field {
    pub(crate) name: Span,
    pub(crate) value: Span,
    pub(crate) kind: FieldKind,
}

/// Facts about a message that framing, keep-alive and proxying decisions need, gathered while
/// the headers are parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Facts {
    pub(crate) content_length: Option<u64>,
    /// A Transfer-Encoding header was present (and, for requests, is exactly a final chunked).
    pub(crate) transfer_encoding: bool,
    /// The final transfer coding is `chunked`.
    pub(crate) chunked: bool,
    pub(crate) conn_close: bool,
    pub(crate) conn_keep_alive: bool,
    pub(crate) conn_upgrade: bool,
    /// The Connection header lists tokens other than close / keep-alive / upgrade, so the
    /// headers they name must be stripped by a proxy.
    pub(crate) conn_other: bool,
    pub(crate) expect_continue: bool,
    pub(crate) host: Option<u16>,
    pub(crate) upgrade: Option<u16>,
}

/// How the request-target is written (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query`
    Origin,
    /// `http://authority/path?query` (sent to proxies; servers must accept it too).
    Absolute,
    /// `host:port`, only with CONNECT.
    Authority,
    /// `*`, only with OPTIONS.
    Asterisk,
}

/// A parsed request head. Cheap to keep: one `Bytes` (shared with the read buffer's
/// allocation) and a vector of indices that is reused when the head is parsed into again.
#[derive(Debug, Clone)]
pub struct RequestHead {
    buf: Bytes,
    method: Method,
    version: Version,
    target: Span,
    form: TargetForm,
    /// For absolute-form: the authority; for origin-form: empty.
    authority: Span,
    /// The path (and query) part of the target: the whole target in origin-form.
    path_and_query: Span,
    fields: Vec<Field>,
    facts: Facts,
}

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    buf: Bytes,
    status: StatusCode,
    version: Version,
    reason: Span,
    fields: Vec<Field>,
    facts: Facts,
}

/// Incremental request-head reader for one connection.
#[derive(Debug, Clone)]
pub struct RequestParser {
    limits: Limits,
    scanned: usize,
}

/// Incremental response-head reader for one upstream connection.
#[derive(Debug, Clone)]
pub struct ResponseParser {
    limits: Limits,
    scanned: usize,
}

/// Scans `buf[from..]` for the blank line that ends a head and returns the head's length once
/// it is complete. Every LF must be preceded by CR (bare LF is rejected here; a CR not followed
/// by LF is refused by httparse once the head is complete). `from` is where the previous scan
/// stopped; the 3 bytes before it are re-examined so that a terminator split across reads is
/// found.
fn scan_head_end(buf: &[u8], from: usize) -> Result<Option<usize>, Error> {
    // Only LFs are visited (one stop per line). A CR that is not followed by LF is left to
    // httparse, which refuses it wherever it stands in a complete head.
    for i in memchr::memchr_iter(b'\n', &buf[from..]) {
        let i = from + i;
        if i == 0 || buf[i - 1] != b'\r' {
            return Err(malformed("bare LF line ending in head"));
        }
        if i >= 3 && &buf[i - 3..i - 1] == b"\r\n" {
            return Ok(Some(i + 1));
        }
    }
    Ok(None)
}

/// The end of the head at the front of `buf`, once it is complete, for either parser.
/// `scanned` is the parser's resume point (how far earlier calls scanned). The head limit
/// applies to what has arrived so far; for a request (`request`) an over-long target is
/// answered 414 rather than 431, and is refused before the request line is complete.
fn find_head_end(
    buf: &[u8],
    limits: &Limits,
    scanned: &mut usize,
    request: bool,
) -> Result<Option<usize>, Error> {
    let end = scan_head_end(buf, scanned.saturating_sub(3))?;
    let seen = match end {
        Some(end) => {
            *scanned = 0;
            if end <= limits.max_head_bytes {
                return Ok(Some(end));
            }
            end
        }
        None => {
            *scanned = buf.len();
            buf.len()
        }
    };
    if request && target_too_long(&buf[..seen], limits) {
        return Err(Error::new(ErrorKind::UriTooLong, "request-target too long"));
    }
    if seen > limits.max_head_bytes {
        let detail = if request {
            "request head too large"
        } else {
            "response head too large"
        };
        return Err(Error::new(ErrorKind::HeadTooLarge, detail));
    }
    Ok(None)
}

/// Removes empty lines that precede a request line (RFC 9112 §2.2: a server SHOULD ignore at
/// least one). Returns false when the buffer ends in the middle of one.
fn skip_leading_crlf(buf: &mut BytesMut) -> bool {
    let mut n = 0;
    while buf.len() >= n + 2 && buf[n] == b'\r' && buf[n + 1] == b'\n' {
        n += 2;
    }
    if n > 0 {
        buf.advance(n);
    }
    !(buf.len() == 1 && buf[0] == b'\r')
}

/// Whether the request line (complete or not) already shows a request-target longer than the
/// limit, so that an over-long target is answered 414 rather than 431.
fn target_too_long(buf: &[u8], limits: &Limits) -> bool {
    let (line, complete) = match memchr::memchr(b'\n', buf) {
        Some(nl) => (&buf[..nl], true),
        None => (buf, false),
    };
    let Some(sp) = memchr::memchr(b' ', line) else {
        // An incomplete line without a space holds only the method so far: no target yet
        // (the head limit bounds it).
        return complete && line.len() > limits.max_uri_bytes;
    };
    let end = if complete {
        memchr::memrchr(b' ', line)
            .filter(|&e| e > sp)
            .unwrap_or(line.len())
    } else {
        // The line is still arriving: a space after the target ends it (what follows is the
        // version, which must not count); without one the target may still be growing.
        memchr::memchr(b' ', &line[sp + 1..]).map_or(line.len(), |e| sp + 1 + e)
    };
    end - sp - 1 > limits.max_uri_bytes
}

/// A stack of header slots large enough for the default limit; larger limits use the heap.
const STACK_HEADERS: usize = 128;

/// Runs `f` with `max` uninitialised httparse header slots: on the stack up to
/// [`STACK_HEADERS`], on the heap for larger configured limits.
fn with_header_slots<'b, R>(
    max: usize,
    f: impl FnOnce(&mut [MaybeUninit<httparse::Header<'b>>]) -> R,
) -> R {
    if max <= STACK_HEADERS {
        let mut stack: [MaybeUninit<httparse::Header<'b>>; STACK_HEADERS] =
            [const { MaybeUninit::uninit() }; STACK_HEADERS];
        f(&mut stack[..max])
    } else {
        let mut heap = Vec::with_capacity(max);
        heap.resize_with(max, MaybeUninit::uninit);
        f(&mut heap)
    }
}

impl RequestParser {
    /// A parser enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        RequestParser { limits, scanned: 0 }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Tries to parse a request head from the front of `buf`.
    ///
    /// `Ok(None)`: the head is incomplete, read more into `buf` and call again (nothing is
    /// consumed except empty lines before the request line). `Ok(Some(head))`: the head was
    /// split off `buf`; what remains is the body and/or the next request. `Err`: the request
    /// is invalid; answer `err.status()` and close the connection without parsing anything
    /// after it.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<RequestHead>, Error> {
        let mut head = RequestHead::empty();
        Ok(self.parse_into(buf, &mut head)?.then_some(head))
    }

    /// As [`parse`](Self::parse), but fills `head` in place (reusing its index storage) and
    /// returns whether a head was parsed.
    pub fn parse_into(
        &mut self,
        buf: &mut BytesMut,
        head: &mut RequestHead,
    ) -> Result<bool, Error> {
        if self.scanned == 0 && !skip_leading_crlf(buf) {
            return Ok(false);
        }
        let Some(end) = find_head_end(buf, &self.limits, &mut self.scanned, true)? else {
            return Ok(false);
        };
        head.parse_from(&buf[..end], &self.limits)?;
        head.buf = buf.split_to(end).freeze();
        Ok(true)
    }
}

impl ResponseParser {
    /// A parser enforcing `limits` (the target limit is not used for responses).
    pub fn new(limits: Limits) -> Self {
        ResponseParser { limits, scanned: 0 }
    }

    /// Tries to parse a response head from the front of `buf`; see [`RequestParser::parse`].
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<ResponseHead>, Error> {
        let mut head = ResponseHead::empty();
        Ok(self.parse_into(buf, &mut head)?.then_some(head))
    }

    /// As [`parse`](Self::parse), filling `head` in place.
    pub fn parse_into(
        &mut self,
        buf: &mut BytesMut,
        head: &mut ResponseHead,
    ) -> Result<bool, Error> {
        let Some(end) = find_head_end(buf, &self.limits, &mut self.scanned, false)? else {
            return Ok(false);
        };
        head.parse_from(&buf[..end], &self.limits)?;
        head.buf = buf.split_to(end).freeze();
        Ok(true)
    }
}

/// Maps an httparse error in a request line to our error, telling an unsupported (but
/// well-formed) version apart from garbage.
fn map_request_error(e: httparse::Error, raw: &[u8]) -> Error {
    match e {
        httparse::Error::Version => {
            let line_end = memchr::memchr(b'\r', raw).unwrap_or(raw.len());
            let line = &raw[..line_end];
            let version = line.rsplit(|&b| b == b' ').next().unwrap_or(b"");
            if is_wellformed_version(version) {
                Error::new(ErrorKind::VersionNotSupported, "HTTP version not supported")
            } else {
                malformed("invalid HTTP version")
            }
        }
        e => map_common_error(e),
    }
}

fn map_common_error(e: httparse::Error) -> Error {
    match e {
        httparse::Error::HeaderName => malformed("invalid header name"),
        httparse::Error::HeaderValue => malformed("invalid byte in header value"),
        httparse::Error::NewLine => malformed("invalid line ending"),
        httparse::Error::Status => malformed("invalid status code"),
        httparse::Error::Token => malformed("invalid token in start line"),
        httparse::Error::TooManyHeaders => {
            Error::new(ErrorKind::TooManyHeaders, "too many headers")
        }
        httparse::Error::Version => malformed("invalid HTTP version"),
    }
}

/// `HTTP/` DIGIT `.` DIGIT
fn is_wellformed_version(v: &[u8]) -> bool {
    v.len() == 8
        && v.starts_with(b"HTTP/")
        && v[5].is_ascii_digit()
        && v[6] == b'.'
        && v[7].is_ascii_digit()
}

/// Request-target bytes allowed by RFC 3986 (unreserved, reserved except '#', and '%').
/// Raw spaces, control bytes, DEL, non-ASCII, `#`, and the characters RFC 3986 excludes
/// (`"<>\^`{|}`) are refused.
fn is_target_byte(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'-' | b'.' | b'_' | b'~'
        | b':' | b'/' | b'?' | b'[' | b']' | b'@'
        | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
        | b'%')
}

/// Characters of a Host header / authority: reg-name or IP literal plus optional port.
fn is_authority_byte(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+'
        | b',' | b';' | b'=' | b'%' | b':' | b'[' | b']')
}

fn validate_percent_escapes(s: &[u8]) -> bool {
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'%', &s[i..]) {
        let p = i + p;
        if p + 2 >= s.len() {
            return false;
        }
        if !(s[p + 1].is_ascii_hexdigit() && s[p + 2].is_ascii_hexdigit()) {
            return false;
        }
        i = p + 3;
    }
    true
}

/// Parses a Content-Length value: 1*DIGIT, possibly a comma-separated list of identical values
/// (RFC 9110 §8.6 allows a recipient to accept that). Returns the length.
fn parse_content_length(v: &[u8]) -> Result<u64, Error> {
    let mut result: Option<u64> = None;
    for part in v.split(|&b| b == b',') {
        let part = trim_ows(part);
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(bad_framing("invalid Content-Length"));
        }
        let mut n: u64 = 0;
        for &d in part {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d - b'0')))
                .ok_or(bad_framing("Content-Length overflows"))?;
        }
        match result {
            Some(prev) if prev != n => {
                return Err(bad_framing("conflicting Content-Length values"))
            }
            _ => result = Some(n),
        }
    }
    result.ok_or(bad_framing("invalid Content-Length"))
}

/// Transfer codings we accept before a final `chunked`, lowercase.
pub(crate) const KNOWN_CODINGS: &[&[u8]] = &[
    b"gzip",
    b"x-gzip",
    b"deflate",
    b"compress",
    b"x-compress",
    b"br",
    b"zstd",
];

/// Whether `c` is one of [`KNOWN_CODINGS`], in any case.
fn is_known_coding(c: &[u8]) -> bool {
    KNOWN_CODINGS.iter().any(|k| eq_lowercase(c, k))
}

/// The header names the codec treats specially: those whose values decide framing and
/// connection handling when a head is parsed, and those a proxy drops or rewrites when it
/// forwards one. Compared case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum FieldKind {
    ContentLength,
    TransferEncoding,
    Connection,
    Host,
    Expect,
    Upgrade,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Via,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    #[default]
    Other,
}

impl FieldKind {
    #[inline]
    pub(crate) fn of(name: &[u8]) -> FieldKind {
        // Dispatch on length first: almost every header is rejected by one comparison.
        match name.len() {
            2 if eq_lowercase(name, b"te") => FieldKind::Te,
            3 if eq_lowercase(name, b"via") => FieldKind::Via,
            4 if eq_lowercase(name, b"host") => FieldKind::Host,
            6 if eq_lowercase(name, b"expect") => FieldKind::Expect,
            7 if eq_lowercase(name, b"upgrade") => FieldKind::Upgrade,
            7 if eq_lowercase(name, b"trailer") => FieldKind::Trailer,
            10 if eq_lowercase(name, b"connection") => FieldKind::Connection,
            10 if eq_lowercase(name, b"keep-alive") => FieldKind::KeepAlive,
            14 if eq_lowercase(name, b"content-length") => FieldKind::ContentLength,
            15 if eq_lowercase(name, b"x-forwarded-for") => FieldKind::XForwardedFor,
            16 if eq_lowercase(name, b"proxy-connection") => FieldKind::ProxyConnection,
            16 if eq_lowercase(name, b"x-forwarded-host") => FieldKind::XForwardedHost,
            17 if eq_lowercase(name, b"transfer-encoding") => FieldKind::TransferEncoding,
            17 if eq_lowercase(name, b"x-forwarded-proto") => FieldKind::XForwardedProto,
            _ => FieldKind::Other,
        }
    }

    /// Headers that describe one connection and are never forwarded (RFC 9110 §7.6.1):
    /// Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding (which the
    /// proxy writes anew). Upgrade is hop-by-hop too, but forwarded along with an upgrade.
    pub(crate) fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            FieldKind::Connection
                | FieldKind::KeepAlive
                | FieldKind::ProxyConnection
                | FieldKind::Te
                | FieldKind::Trailer
                | FieldKind::TransferEncoding
        )
    }
}

/// Header interpretation shared by requests and responses. `request` selects the stricter
/// request rules.
fn gather_facts(
    raw: &[u8],
    headers: &[httparse::Header<'_>],
    fields: &mut Vec<Field>,
    request: bool,
) -> Result<Facts, Error> {
    let mut facts = Facts::default();
    let mut te_seen = false;
    fields.clear();
    fields.reserve(headers.len());
    for (i, h) in headers.iter().enumerate() {
        let name = h.name.as_bytes();
        let value = h.value;
        let kind = FieldKind::of(name);
        fields.push(Field {
            name: Span::of(raw, name),
            value: Span::of(raw, value),
            kind,
        });
        match kind {
            FieldKind::ContentLength => {
                let n = parse_content_length(value)?;
                if let Some(prev) = facts.content_length {
                    if prev != n {
                        return Err(bad_framing("conflicting Content-Length values"));
                    }
                }
                facts.content_length = Some(n);
            }
            FieldKind::TransferEncoding => {
                if te_seen {
                    // Several Transfer-Encoding fields combine into one list in theory; in
                    // practice the split is a smuggling trick. Refuse it.
                    return Err(bad_framing("duplicate Transfer-Encoding header"));
                }
                te_seen = true;
                facts.transfer_encoding = true;
                let mut last_chunked = false;
                let mut any = false;
                for coding in list_elements(value) {
                    any = true;
                    if last_chunked {
                        // chunked must be the final coding and may appear only once.
                        return Err(bad_framing("chunked is not the final transfer coding"));
                    }
                    if eq_lowercase(coding, b"chunked") {
                        last_chunked = true;
                    } else if request && !is_known_coding(coding) {
                        return Err(bad_framing("unsupported transfer coding"));
                    } else if !is_token(coding) {
                        return Err(bad_framing("invalid transfer coding"));
                    }
                }
                if !any {
                    return Err(bad_framing("empty Transfer-Encoding"));
                }
                if request && !last_chunked {
                    return Err(bad_framing(
                        "request transfer coding does not end in chunked",
                    ));
                }
                facts.chunked = last_chunked;
            }
            FieldKind::Connection => {
                for token in list_elements(value) {
                    if eq_lowercase(token, b"close") {
                        facts.conn_close = true;
                    } else if eq_lowercase(token, b"keep-alive") {
                        facts.conn_keep_alive = true;
                    } else if eq_lowercase(token, b"upgrade") {
                        facts.conn_upgrade = true;
                    } else if is_token(token) {
                        facts.conn_other = true;
                    } else {
                        return Err(malformed("invalid Connection header"));
                    }
                }
            }
            FieldKind::Host => {
                if facts.host.is_some() {
                    return Err(malformed("duplicate Host header"));
                }
                if request && !value.iter().all(|&b| is_authority_byte(b)) {
                    return Err(malformed("invalid Host header"));
                }
                facts.host = Some(i as u16);
            }
            FieldKind::Expect => {
                if eq_lowercase(value, b"100-continue") {
                    facts.expect_continue = true;
                } else if request {
                    return Err(Error::new(
                        ErrorKind::ExpectationFailed,
                        "unsupported Expect value",
                    ));
                }
            }
            FieldKind::Upgrade => facts.upgrade = Some(i as u16),
            _ => {}
        }
    }
    if facts.upgrade.is_some() && !facts.conn_upgrade {
        // An Upgrade header not named by Connection is not a request (or an agreement) to
        // upgrade.
        facts.upgrade = None;
    }
    if facts.transfer_encoding && facts.content_length.is_some() {
        // RFC 9112 §6.1: a server MAY reject this; a proxy forwarding it is the classic
        // CL.TE smuggling setup. Refuse in both directions.
        return Err(bad_framing("both Content-Length and Transfer-Encoding"));
    }
    Ok(facts)
}

impl Default for RequestHead {
    /// An empty head, to be filled by [`RequestParser::parse_into`] (which reuses its storage).
    fn default() -> Self {
        RequestHead::empty()
    }
}

impl Default for ResponseHead {
    /// An empty head, to be filled by [`ResponseParser::parse_into`].
    fn default() -> Self {
        ResponseHead::empty()
    }
}

impl RequestHead {
    /// Forgets the parsed head but keeps its index storage: drops the reference to the read
    /// buffer (so a connection idling between requests does not pin it) and resets every span.
    pub fn clear(&mut self) {
        let fields = std::mem::take(&mut self.fields);
        *self = RequestHead::empty();
        self.fields = fields;
        self.fields.clear();
    }

    fn empty() -> Self {
        RequestHead {
            buf: Bytes::new(),
            method: Method::GET,
            version: Version::HTTP_11,
            target: Span::default(),
            form: TargetForm::Origin,
            authority: Span::default(),
            path_and_query: Span::default(),
            fields: Vec::new(),
            facts: Facts::default(),
        }
    }

    /// Parses `raw` (a complete head) into self, except for `buf` which the caller sets.
    fn parse_from(&mut self, raw: &[u8], limits: &Limits) -> Result<(), Error> {
        with_header_slots(limits.max_headers, |slots| {
            self.parse_with(raw, limits, slots)
        })
    }

    fn parse_with<'b>(
        &mut self,
        raw: &'b [u8],
        limits: &Limits,
        slots: &mut [MaybeUninit<httparse::Header<'b>>],
    ) -> Result<(), Error> {
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(raw, slots) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(malformed("incomplete request head")),
            Err(e) => return Err(map_request_error(e, raw)),
        }
        let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
            return Err(malformed("incomplete request line"));
        };
        self.version = version(minor);
        self.method =
            Method::from_bytes(method.as_bytes()).map_err(|_| malformed("invalid method"))?;
        let target = path.as_bytes();
        if target.len() > limits.max_uri_bytes {
            return Err(Error::new(ErrorKind::UriTooLong, "request-target too long"));
        }
        self.target = Span::of(raw, target);
        self.classify_target(raw, target)?;
        self.facts = gather_facts(raw, req.headers, &mut self.fields, true)?;
        let facts = &mut self.facts;
        if self.version == Version::HTTP_11 && facts.host.is_none() {
            return Err(malformed("missing Host header"));
        }
        if self.version == Version::HTTP_10 {
            if facts.transfer_encoding {
                // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means the framing
                // is unreliable.
                return Err(bad_framing("Transfer-Encoding in an HTTP/1.0 request"));
            }
            // RFC 9110 §10.1.1: ignore 100-continue from a 1.0 client.
            facts.expect_continue = false;
        }
        if self.method == Method::CONNECT && self.form != TargetForm::Authority {
            return Err(malformed("CONNECT needs an authority-form target"));
        }
        Ok(())
    }

    fn classify_target(&mut self, raw: &[u8], target: &[u8]) -> Result<(), Error> {
        if !target.iter().all(|&b| is_target_byte(b)) {
            return Err(malformed("invalid byte in request-target"));
        }
        if !validate_percent_escapes(target) {
            return Err(malformed("invalid percent-encoding in request-target"));
        }
        let whole = Span::of(raw, target);
        self.authority = Span::default();
        self.path_and_query = whole;
        if target[0] == b'/' {
            self.form = TargetForm::Origin;
        } else if target == b"*" {
            if self.method != Method::OPTIONS {
                return Err(malformed("asterisk-form target outside OPTIONS"));
            }
            self.form = TargetForm::Asterisk;
        } else if let Some(rest) = strip_scheme(target) {
            let auth_len = rest
                .iter()
                .position(|&b| b == b'/' || b == b'?')
                .unwrap_or(rest.len());
            let authority = &rest[..auth_len];
            if authority.is_empty() || authority.contains(&b'@') {
                return Err(malformed("invalid authority in absolute-form target"));
            }
            self.form = TargetForm::Absolute;
            self.authority = Span::of(raw, authority);
            self.path_and_query = Span::of(raw, &rest[auth_len..]);
        } else if self.method == Method::CONNECT {
            // The authority becomes the forwarded Host, so it admits what Host admits: this
            // refuses '/', '@' and '?' (the target-bytes that are not authority-bytes).
            if !target.iter().all(|&b| is_authority_byte(b)) || !target.contains(&b':') {
                return Err(malformed("invalid authority-form target"));
            }
            self.form = TargetForm::Authority;
            self.authority = whole;
            self.path_and_query = Span::default();
        } else {
            return Err(malformed("invalid request-target"));
        }
        Ok(())
    }

    /// The raw bytes of the whole head, including the final empty line.
    pub fn as_bytes(&self) -> &Bytes {
        &self.buf
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// HTTP/1.0 or HTTP/1.1.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The request-target exactly as received.
    pub fn target(&self) -> &[u8] {
        &self.buf[self.target.range()]
    }

    /// How the request-target was written.
    pub fn target_form(&self) -> TargetForm {
        self.form
    }

    /// Path and query (origin-form equivalent). For absolute-form targets without a path this
    /// is empty; [`path`](Self::path) returns "/" then.
    pub fn path_and_query(&self) -> &[u8] {
        &self.buf[self.path_and_query.range()]
    }

    /// The path without the query. "/" for an absolute-form target with an empty path,
    /// "*" for asterisk-form, empty for CONNECT.
    pub fn path(&self) -> &[u8] {
        let pq = self.path_and_query();
        let path = match memchr::memchr(b'?', pq) {
            Some(q) => &pq[..q],
            None => pq,
        };
        // The path is empty in `http://host` and in `http://host?query` alike.
        if path.is_empty() && self.form == TargetForm::Absolute {
            return b"/";
        }
        path
    }

    /// The query string without '?', if any.
    pub fn query(&self) -> Option<&[u8]> {
        let pq = self.path_and_query();
        memchr::memchr(b'?', pq).map(|q| &pq[q + 1..])
    }

    /// The authority the request is for: from an absolute-form or authority-form target when
    /// present (RFC 9112 §3.2.2: it takes precedence over Host), otherwise the Host header.
    pub fn authority(&self) -> Option<&[u8]> {
        if !self.authority.is_empty() {
            return Some(&self.buf[self.authority.range()]);
        }
        self.value_at(self.facts.host)
    }

    /// The request-target as an `http::Uri` sharing this head's buffer.
    pub fn uri(&self) -> Uri {
        Uri::from_maybe_shared(self.buf.slice(self.target.range()))
            .unwrap_or_else(|_| Uri::from_static("/"))
    }

    /// How the request body is delimited: `Length(n)` for Content-Length (including 0),
    /// `Chunked`, or `None` when neither header is present.
    pub fn body_kind(&self) -> BodyKind {
        if self.facts.chunked {
            BodyKind::Chunked
        } else if let Some(n) = self.facts.content_length {
            BodyKind::Length(n)
        } else {
            BodyKind::None
        }
    }

    /// Whether the connection may stay open after this request (RFC 9112 §9.3): HTTP/1.1
    /// unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        keep_alive(self.version, &self.facts)
    }

    /// The client sent `Expect: 100-continue` (HTTP/1.1 only).
    pub fn expects_continue(&self) -> bool {
        self.facts.expect_continue
    }

    /// The protocol the client asks to upgrade to (`Upgrade` named in `Connection`).
    pub fn upgrade(&self) -> Option<&[u8]> {
        self.value_at(self.facts.upgrade)
    }

    /// Whether this is a WebSocket upgrade request.
    pub fn is_websocket_upgrade(&self) -> bool {
        self.upgrade().is_some_and(|p| {
            list_elements(p).any(|t| t.len() >= 9 && t[..9].eq_ignore_ascii_case(b"websocket"))
        })
    }

    /// Converts to `http::request::Parts` (names copied once, values shared).
    pub fn to_parts(&self) -> http::request::Parts {
        let mut b = http::Request::builder()
            .method(self.method.clone())
            .uri(self.uri())
            .version(self.version);
        if let Some(h) = b.headers_mut() {
            self.append_headers_to(h);
        }
        b.body(())
            .map(|r| r.into_parts().0)
            .unwrap_or_else(|_| http::Request::new(()).into_parts().0)
    }
}

impl ResponseHead {
    /// Forgets the parsed head but keeps its index storage, as [`RequestHead::clear`] (for a head
    /// kept per upstream connection and parsed into with [`ResponseParser::parse_into`]).
    pub fn clear(&mut self) {
        let fields = std::mem::take(&mut self.fields);
        *self = ResponseHead::empty();
        self.fields = fields;
        self.fields.clear();
    }

    fn empty() -> Self {
        ResponseHead {
            buf: Bytes::new(),
            status: StatusCode::OK,
            version: Version::HTTP_11,
            reason: Span::default(),
            fields: Vec::new(),
            facts: Facts::default(),
        }
    }

    fn parse_from(&mut self, raw: &[u8], limits: &Limits) -> Result<(), Error> {
        with_header_slots(limits.max_headers, |slots| self.parse_with(raw, slots))
    }

    fn parse_with<'b>(
        &mut self,
        raw: &'b [u8],
        slots: &mut [MaybeUninit<httparse::Header<'b>>],
    ) -> Result<(), Error> {
        let mut res = httparse::Response::new(&mut []);
        match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut res, raw, slots)
        {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(malformed("incomplete response head")),
            Err(httparse::Error::Version) => {
                return Err(malformed("unsupported HTTP version in response"));
            }
            Err(e) => return Err(map_common_error(e)),
        }
        let (Some(code), Some(minor)) = (res.code, res.version) else {
            return Err(malformed("incomplete status line"));
        };
        self.status = StatusCode::from_u16(code).map_err(|_| malformed("invalid status code"))?;
        self.version = version(minor);
        self.reason = res
            .reason
            // httparse hands out a static "" (not a slice of `raw`) for a status line without
            // a reason phrase and for one containing obs-text: only a non-empty reason is a
            // slice of `raw` that a span can point at. An obs-text reason is dropped.
            .filter(|r| !r.is_empty())
            .map(|r| Span::of(raw, r.as_bytes()))
            .unwrap_or_default();
        self.facts = gather_facts(raw, res.headers, &mut self.fields, false)?;
        Ok(())
    }

    /// The raw bytes of the whole head.
    pub fn as_bytes(&self) -> &Bytes {
        &self.buf
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// HTTP/1.0 or HTTP/1.1.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The reason phrase as sent (may be empty).
    pub fn reason(&self) -> &[u8] {
        &self.buf[self.reason.range()]
    }

    /// How the response body is delimited, given the method of the request it answers
    /// (RFC 9112 §6.3): none for HEAD, 1xx, 204, 304 and a 2xx to CONNECT; otherwise chunked,
    /// Content-Length, or until the connection closes.
    pub fn body_kind(&self, request_method: &Method) -> BodyKind {
        let code = self.status.as_u16();
        if request_method == Method::HEAD
            || (100..200).contains(&code)
            || code == 204
            || code == 304
            || (request_method == Method::CONNECT && (200..300).contains(&code))
        {
            return BodyKind::None;
        }
        if self.facts.transfer_encoding {
            if self.facts.chunked {
                BodyKind::Chunked
            } else {
                BodyKind::Close
            }
        } else if let Some(n) = self.facts.content_length {
            BodyKind::Length(n)
        } else {
            BodyKind::Close
        }
    }

    /// The Content-Length value, if the response carries one (meaningful even for HEAD).
    pub fn content_length(&self) -> Option<u64> {
        self.facts.content_length
    }

    /// Whether the upstream connection may be reused after this response (its body framing
    /// must also allow it: a close-delimited body never does).
    pub fn keep_alive(&self) -> bool {
        keep_alive(self.version, &self.facts)
    }

    /// The protocol the server switches to, for a 101 response.
    pub fn upgrade(&self) -> Option<&[u8]> {
        self.value_at(self.facts.upgrade)
    }

    /// Converts to `http::response::Parts` (names copied once, values shared).
    pub fn to_parts(&self) -> http::response::Parts {
        let mut b = http::Response::builder()
            .status(self.status)
            .version(self.version);
        if let Some(h) = b.headers_mut() {
            self.append_headers_to(h);
        }
        b.body(())
            .map(|r| r.into_parts().0)
            .unwrap_or_else(|_| http::Response::new(()).into_parts().0)
    }
}

/// Header access, the same for requests and responses: both keep `buf` (the head's bytes),
/// `fields` (spans of names and values in it) and `facts`.
macro_rules! header_access {
    ($head:ty) => {
        impl $head {
            /// Number of header fields.
            pub fn header_count(&self) -> usize {
                self.fields.len()
            }

            /// Header fields in order, as (name, value) byte slices.
            pub fn headers(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + '_ {
                self.fields
                    .iter()
                    .map(|f| (&self.buf[f.name.range()], &self.buf[f.value.range()]))
            }

            /// Header fields in order, as (kind, name, value): the kind the parser found.
            pub(crate) fn classified_headers(
                &self,
            ) -> impl ExactSizeIterator<Item = (FieldKind, &[u8], &[u8])> + '_ {
                self.fields.iter().map(|f| {
                    (
                        f.kind,
                        &self.buf[f.name.range()],
                        &self.buf[f.value.range()],
                    )
                })
            }

            /// The first value of header `name` (case-insensitive).
            pub fn header(&self, name: &str) -> Option<&[u8]> {
                let name = name.as_bytes();
                self.headers()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            }

            /// Every value of header `name`, in order.
            pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
                self.headers()
                    .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                    .map(|(_, v)| v)
            }

            /// The name of field `i` as an `http::HeaderName`.
            pub fn header_name(&self, i: usize) -> HeaderName {
                // The name was validated as a token by httparse, which is exactly what
                // HeaderName accepts.
                HeaderName::from_bytes(&self.buf[self.fields[i].name.range()])
                    .expect("httparse validated the header name")
            }

            /// The value of field `i` as an `http::HeaderValue` sharing this head's buffer.
            pub fn header_value(&self, i: usize) -> HeaderValue {
                // httparse only accepts HTAB, SP, VCHAR and obs-text in values, which
                // HeaderValue accepts.
                HeaderValue::from_maybe_shared(self.buf.slice(self.fields[i].value.range()))
                    .expect("httparse validated the header value")
            }

            /// The value of the field at index `i` (one the facts point at).
            fn value_at(&self, i: Option<u16>) -> Option<&[u8]> {
                i.map(|i| &self.buf[self.fields[i as usize].value.range()])
            }

            /// Every field as `http` types, for `to_parts`.
            fn append_headers_to(&self, map: &mut http::HeaderMap) {
                map.reserve(self.fields.len());
                for i in 0..self.fields.len() {
                    map.append(self.header_name(i), self.header_value(i));
                }
            }

            pub(crate) fn facts(&self) -> &Facts {
                &self.facts
            }
        }
    };
}

header_access!(RequestHead);
header_access!(ResponseHead);

/// The version of a head httparse accepted (it accepts only HTTP/1.0 and HTTP/1.1).
fn version(minor: u8) -> Version {
    if minor == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    }
}

fn keep_alive(version: Version, facts: &Facts) -> bool {
    if facts.conn_close {
        return false;
    }
    version == Version::HTTP_11 || facts.conn_keep_alive
}

fn strip_scheme(target: &[u8]) -> Option<&[u8]> {
    for scheme in [&b"http://"[..], b"https://"] {
        if target.len() > scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Some(&target[scheme.len()..]);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(raw: &[u8], limits: Limits) -> Result<Option<RequestHead>, Error> {
        RequestParser::new(limits).parse(&mut BytesMut::from(raw))
    }

    /// Parses `raw` whole, then fed in two reads cut at every position: the first read must
    /// leave the head incomplete, the second complete it. Returns the heads of the cut runs.
    fn parse_at_every_cut(raw: &[u8], limits: Limits) -> Vec<RequestHead> {
        assert!(parse_one(raw, limits).unwrap().is_some());
        (0..raw.len())
            .map(|cut| {
                let mut parser = RequestParser::new(limits);
                let mut buf = BytesMut::from(&raw[..cut]);
                assert_eq!(
                    parser.parse(&mut buf).map(|h| h.is_some()),
                    Ok(false),
                    "cut {cut}"
                );
                buf.extend_from_slice(&raw[cut..]);
                let head = parser.parse(&mut buf).unwrap();
                head.unwrap_or_else(|| panic!("cut {cut}: head still incomplete"))
            })
            .collect()
    }

    /// Found by the `request_head` fuzz target: `path()` returned "" for an absolute-form
    /// target with a query but no path, while the forwarded request says "/?q".
    #[test]
    fn absolute_form_with_query_and_empty_path_has_path_slash() {
        let head = parse_one(
            b"GET http://example.com?q=1 HTTP/1.1\r\nHost: x\r\n\r\n",
            Limits::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.path(), b"/");
        assert_eq!(head.query(), Some(&b"q=1"[..]));
        assert_eq!(head.path_and_query(), b"?q=1");
    }

    /// Found by the `request_head` fuzz target: while the request line was incomplete, the
    /// target-length check counted everything after the method, including " HTTP/1.", so a
    /// target within the limit was refused with 414 when the read ended inside the version
    /// and accepted when the line arrived whole.
    #[test]
    fn target_limit_does_not_count_a_partial_version() {
        let raw: &[u8] = b"GET /0123456789 HTTP/1.1\r\nHost: x\r\n\r\n";
        let limits = Limits {
            max_uri_bytes: 11,
            ..Limits::default()
        };
        for head in parse_at_every_cut(raw, limits) {
            assert_eq!(head.target(), b"/0123456789");
        }
        // A target over the limit is still refused early, before the line is complete.
        let mut buf = BytesMut::from(&b"GET /0123456789ab"[..]);
        let err = RequestParser::new(limits).parse(&mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UriTooLong);
    }

    /// Found by the `request_head` fuzz target: before the first space of the request line
    /// arrived, the bytes so far (the method) were measured against the target limit, so a
    /// method longer than `max_uri_bytes` got a 414 when the read ended inside it and was
    /// parsed normally when the line arrived whole.
    #[test]
    fn target_limit_does_not_count_the_method() {
        let raw: &[u8] = b"PROPPATCH /a HTTP/1.1\r\nHost: x\r\n\r\n";
        let limits = Limits {
            max_uri_bytes: 4,
            ..Limits::default()
        };
        parse_at_every_cut(raw, limits);
    }

    /// Found by the `request_head` fuzz target: an authority-form CONNECT target could hold
    /// '?', which a Host field may not; the forwarded head (whose Host is that authority)
    /// was then refused by our own parser.
    #[test]
    fn connect_target_admits_only_authority_bytes() {
        for target in ["examp?e.com:443", "a/b:443", "user@a:443"] {
            let raw = format!("CONNECT {target} HTTP/1.1\r\nHost: a\r\n\r\n");
            let err = parse_one(raw.as_bytes(), Limits::default()).unwrap_err();
            assert_eq!(err.detail(), "invalid authority-form target", "{target}");
        }
        let head = parse_one(
            b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n",
            Limits::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.authority(), Some(&b"[::1]:443"[..]));
    }

    /// Found by the `response_head` fuzz target: for `HTTP/1.1 200\r\n` (no reason phrase)
    /// and for a reason with obs-text, httparse returns a static "" that is not inside the
    /// head buffer; its span was computed from unrelated pointers (an overflow panic in debug
    /// builds, a garbage range in release builds that made `reason()` and
    /// `encode_proxy_response` panic: one upstream status line could abort the gateway).
    #[test]
    fn status_line_without_reason_or_with_obs_text_reason() {
        for raw in [
            &b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"[..],
            b"HTTP/1.1 200 \xe9t\xe9\r\nContent-Length: 0\r\n\r\n",
        ] {
            let head = ResponseParser::new(Limits::default())
                .parse(&mut BytesMut::from(raw))
                .unwrap()
                .unwrap();
            assert_eq!(head.status(), StatusCode::OK);
            assert_eq!(head.reason(), b"");
            assert_eq!(head.content_length(), Some(0));
        }
    }
}
