//! In-process HTTP/1.1 upstream servers, for `headwater demo` and for integration tests.
//!
//! This module owns [`UpstreamServer`]: a small origin server and what it answers. How it runs
//! (plain `std::net` and OS threads, one accept thread per server, one thread per connection, so
//! that it runs beside the proxy without touching its monoio runtime; requests read with the
//! project's own codec: keep-alive, pipelining, `Expect: 100-continue`, `Connection: close` and
//! HTTP/1.0) is the plumbing of `crate::loopback_server`, which the mock LLM providers share.
//! Request bodies are always streamed, never held whole. What a server answers is chosen by a
//! [`Behavior`] (fixed body, echo, mirror, errors, stalls, resets, garbage, flaky, chunked,
//! upgrade, slow), which can be changed while it runs.
//!
//! Every response carries `x-upstream: {name}` and is framed by `Content-Length`, or chunked
//! where a behavior says so. A request whose head (or body framing) is invalid gets the codec's
//! error status (400 for malformed requests) with `Connection: close`, and the connection closes.
//!
//! Stopping is prompt: [`UpstreamServer::stop`] (or `Drop`) closes the listener and joins every
//! thread within a few tens of milliseconds.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use headwater_http1::chunked::{encode_chunk, encode_chunk_header};
use headwater_http1::{
    encode_response_head, BodyDecoder, BodyKind, ClientConnection, Decoded, RequestHead,
};
use http::{Method, StatusCode, Version};

use crate::loopback_server::{self, lock, lossy, status_code, Fail, Server, Service, READ_CHUNK};

/// What [`Behavior::Garbage`] sends instead of a response.
const GARBAGE: &[u8] = b"\x00\xff\xfeSSH-2.0-not-http \x07\x1b[0m garbage\r\n\r\n\xde\xad\xbe\xef";

/// What an [`UpstreamServer`] does with each request.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// 200 with a fixed body; headers: `content-type: text/plain`, `x-upstream: {name}`.
    Fixed {
        /// The response body.
        body: Bytes,
    },
    /// 200 whose body is a JSON object `{"upstream": name, "method", "path" (the full
    /// request-target), "headers": [[name, value], ...] in order, "body_len": n, "body_sha":
    /// FNV-1a 64 of the body as 16 lowercase hex digits}`. The request body is streamed and
    /// hashed, never held whole, so a 1 GiB upload works in constant memory.
    Echo,
    /// Answers with this status and a short text body (`"{code} {reason}\n"`); no body (and no
    /// `Content-Length`) for 1xx and 204, no body for 304. A number outside 100..=999 gives 500.
    Status(u16),
    /// Echoes the request body back as the response body, streamed: chunked (with the request's
    /// trailers) if the request was chunked, `Content-Length` otherwise.
    Mirror,
    /// Accepts connections and reads requests but never answers. A connection that stalled
    /// stays stalled (later requests on it are read and counted, never answered).
    Stall,
    /// Resets the connection (SO_LINGER 0, then close) as soon as a request head is read.
    Reset,
    /// Sends garbage bytes instead of an HTTP response, then closes.
    Garbage,
    /// Each request: with probability `fail_ratio` answers 500, else 200 like `Fixed`. The draws
    /// come from one xorshift64 generator per server seeded by `seed` (re-seeded whenever this
    /// behavior is set), so a given sequence of requests always gets the same answers.
    Flaky {
        /// Probability of a 500, 0.0..=1.0.
        fail_ratio: f64,
        /// Generator seed.
        seed: u64,
        /// Body of the 200 answers.
        body: Bytes,
    },
    /// A 200 whose body is `len` bytes of [`pattern`] sent chunked in `chunk`-sized chunks, with
    /// a trailer `x-checksum: <FNV-1a 64 hex of the body>` (announced by `trailer: x-checksum`).
    /// HTTP/1.0 clients, which cannot read chunked bodies, get `Content-Length` and the checksum
    /// as a header instead.
    Chunked {
        /// Body length in bytes.
        len: usize,
        /// Chunk size (0 counts as 1).
        chunk: usize,
    },
    /// WebSocket-ish upgrade: a request with `Connection: upgrade` and `Upgrade: websocket` gets
    /// `101 Switching Protocols` (with `upgrade: websocket` and the request's
    /// `Sec-WebSocket-Key` echoed as `sec-websocket-accept`, not computed), after which every
    /// byte received is echoed back until the client closes. Other requests get 426.
    UpgradeEcho,
    /// Waits `delay` (after reading the request body) before answering like `Fixed`.
    Slow {
        /// How long to wait.
        delay: Duration,
        /// The response body.
        body: Bytes,
    },
}

/// An FNV-1a 64-bit hash, fed incrementally (the `body_sha` of [`Behavior::Echo`] and the
/// `x-checksum` of [`Behavior::Chunked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv1a64(u64);

impl Fnv1a64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    /// The hash of nothing.
    pub const fn new() -> Self {
        Fnv1a64(Self::OFFSET)
    }

    /// Feeds `data`.
    pub fn update(&mut self, data: &[u8]) {
        let mut h = self.0;
        for &b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(Self::PRIME);
        }
        self.0 = h;
    }

    /// The hash of everything fed so far.
    pub const fn value(&self) -> u64 {
        self.0
    }

    /// The hash as 16 lowercase hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

impl Default for Fnv1a64 {
    fn default() -> Self {
        Self::new()
    }
}

/// FNV-1a 64 of `data` as 16 lowercase hex digits.
pub fn fnv1a64_hex(data: &[u8]) -> String {
    let mut h = Fnv1a64::new();
    h.update(data);
    h.hex()
}

/// Byte `i` of the body [`Behavior::Chunked`] sends: `a..z` repeating.
pub fn pattern(i: usize) -> u8 {
    b'a' + (i % 26) as u8
}

/// State shared by a server's handle and its connection threads.
struct Shared {
    name: String,
    behavior: Mutex<Behavior>,
    /// xorshift64 state for [`Behavior::Flaky`].
    rng: Mutex<u64>,
    requests: AtomicU64,
    targets: Mutex<Vec<String>>,
}

impl Shared {
    fn set_behavior(&self, b: Behavior) {
        // Hold the behavior lock while re-seeding so that no request sees the new behavior with
        // the old generator state.
        let mut cur = lock(&self.behavior);
        if let Behavior::Flaky { seed, .. } = b {
            *lock(&self.rng) = seed_state(seed);
        }
        *cur = b;
    }

    /// The next uniform draw in [0, 1).
    fn draw(&self) -> f64 {
        xorshift64_unit(&mut lock(&self.rng))
    }
}

/// Advances the xorshift64 generator `state` (which must not be 0) and returns a uniform draw
/// in [0, 1) (also the mock LLM providers' embeddings).
pub(crate) fn xorshift64_unit(state: &mut u64) -> f64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl Service for Shared {
    fn base_headers<'a>(&'a self, content_type: &'a str) -> [(&'static str, &'a [u8]); 2] {
        [
            ("x-upstream", self.name.as_bytes()),
            ("content-type", content_type.as_bytes()),
        ]
    }

    fn codec_error(&self, e: &headwater_http1::Error) -> (&'static str, Vec<u8>) {
        ("text/plain", format!("{}\n", e.detail()).into_bytes())
    }

    fn serve(conn: &mut Conn, head: RequestHead) -> Result<bool, Fail> {
        conn.serve(head)
    }
}

/// xorshift64 must not start at 0 (it would stay there).
fn seed_state(seed: u64) -> u64 {
    if seed == 0 {
        0x9e37_79b9_7f4a_7c15
    } else {
        seed
    }
}

/// An HTTP/1.1 origin server running on its own threads. Stops (closes its listener, ends its
/// connection threads and joins them) on [`stop`](Self::stop) or drop.
pub struct UpstreamServer {
    server: Server<Shared>,
}

impl std::fmt::Debug for UpstreamServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamServer")
            .field("name", &self.name())
            .field("addr", &self.addr())
            .finish_non_exhaustive()
    }
}

impl UpstreamServer {
    /// Binds `addr` (port 0 allowed) and serves with `behavior`; `name` is reported in
    /// `x-upstream` and in Echo bodies, so it must not contain control characters.
    pub fn start(name: &str, addr: SocketAddr, behavior: Behavior) -> io::Result<UpstreamServer> {
        if name.bytes().any(|b| b.is_ascii_control()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an upstream name must not contain control characters",
            ));
        }
        let rng = match behavior {
            Behavior::Flaky { seed, .. } => seed_state(seed),
            _ => seed_state(0),
        };
        let shared = Shared {
            name: name.to_owned(),
            behavior: Mutex::new(behavior),
            rng: Mutex::new(rng),
            requests: AtomicU64::new(0),
            targets: Mutex::new(Vec::new()),
        };
        let server = Server::start(addr, format!("upstream-{name}"), shared)?;
        Ok(UpstreamServer { server })
    }

    /// The address the server listens on (with the actual port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The name given at start.
    pub fn name(&self) -> &str {
        &self.server.service().name
    }

    /// Total TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.server.connections()
    }

    /// Total requests whose head was parsed so far.
    pub fn requests(&self) -> u64 {
        self.server.service().requests.load(Ordering::Acquire)
    }

    /// Request-targets seen so far, exactly as received, in the order their heads were parsed.
    pub fn targets(&self) -> Vec<String> {
        lock(&self.server.service().targets).clone()
    }

    /// The current behavior.
    pub fn behavior(&self) -> Behavior {
        lock(&self.server.service().behavior).clone()
    }

    /// Changes the behavior for requests whose head is read from now on.
    pub fn set_behavior(&self, b: Behavior) {
        self.server.service().set_behavior(b);
    }

    /// Stops the server: closes the listener and every connection, and joins all threads.
    pub fn stop(self) {
        self.server.stop();
    }
}

/// One accepted connection of an [`UpstreamServer`].
type Conn = loopback_server::Conn<Shared>;

impl Conn {
    fn serve(&mut self, head: RequestHead) -> Result<bool, Fail> {
        let shared = Arc::clone(&self.service);
        shared.requests.fetch_add(1, Ordering::AcqRel);
        lock(&shared.targets).push(lossy(head.target()));
        if self.stalled {
            self.discard_body(&head)?;
            return Ok(true);
        }
        let behavior = lock(&shared.behavior).clone();
        match behavior {
            Behavior::Fixed { body } => {
                self.skip_body(&head)?;
                self.respond(&head, 200, "text/plain", &[], &body, true)
            }
            Behavior::Echo => self.echo(&head),
            Behavior::Status(code) => {
                self.skip_body(&head)?;
                let status = status_code(code);
                let body = format!(
                    "{} {}\n",
                    status.as_str(),
                    status.canonical_reason().unwrap_or("")
                );
                self.respond(&head, code, "text/plain", &[], body.as_bytes(), true)
            }
            Behavior::Mirror => self.mirror(&head),
            Behavior::Stall => {
                self.stalled = true;
                self.discard_body(&head)?;
                Ok(true)
            }
            Behavior::Reset => self.reset(),
            Behavior::Garbage => {
                self.started = true;
                self.write_all(GARBAGE)?;
                Ok(false)
            }
            Behavior::Flaky {
                fail_ratio, body, ..
            } => {
                self.skip_body(&head)?;
                if shared.draw() < fail_ratio {
                    let body = format!("upstream {} failed\n", shared.name);
                    self.respond(&head, 500, "text/plain", &[], body.as_bytes(), true)
                } else {
                    self.respond(&head, 200, "text/plain", &[], &body, true)
                }
            }
            Behavior::Chunked { len, chunk } => self.chunked(&head, len, chunk.max(1)),
            Behavior::UpgradeEcho => self.upgrade_echo(&head),
            Behavior::Slow { delay, body } => {
                self.skip_body(&head)?;
                self.sleep(delay)?;
                self.respond(&head, 200, "text/plain", &[], &body, true)
            }
        }
    }

    fn echo(&mut self, head: &RequestHead) -> Result<bool, Fail> {
        let mut hash = Fnv1a64::new();
        let len = self.read_body(head, |d| {
            hash.update(d);
            Ok(())
        })?;
        let headers: Vec<[String; 2]> = head.headers().map(|(n, v)| [lossy(n), lossy(v)]).collect();
        let doc = serde_json::json!({
            "upstream": self.service.name,
            "method": head.method().as_str(),
            "path": lossy(head.target()),
            "headers": headers,
            "body_len": len,
            "body_sha": hash.hex(),
        });
        let body = serde_json::to_vec(&doc).unwrap_or_default();
        self.respond(head, 200, "application/json", &[], &body, true)
    }

    fn mirror(&mut self, head: &RequestHead) -> Result<bool, Fail> {
        let kind = head.body_kind();
        if head.method() == Method::HEAD {
            self.skip_body(head)?;
            return self.respond(head, 200, "application/octet-stream", &[], b"", true);
        }
        self.continue_if_expected(head)?;
        let framing = match kind {
            BodyKind::Chunked => BodyKind::Chunked,
            BodyKind::Length(n) => BodyKind::Length(n),
            BodyKind::None | BodyKind::Close => BodyKind::Length(0),
        };
        let keep = head.keep_alive();
        let mut out = BytesMut::with_capacity(256);
        self.put_head(
            &mut out,
            StatusCode::OK,
            "application/octet-stream",
            &[],
            framing,
            head.version(),
            keep,
        );
        self.started = true;
        self.write_all(&out)?;
        let mut dec = BodyDecoder::new(kind);
        let mut trailers = None;
        loop {
            match self.next_piece(&mut dec)? {
                Decoded::Data(b) if framing == BodyKind::Chunked => {
                    out.clear();
                    encode_chunk(&b, &mut out);
                    self.write_all(&out)?;
                }
                Decoded::Data(b) => self.write_all(&b)?,
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::Done => break,
            }
        }
        if framing == BodyKind::Chunked {
            match trailers {
                Some(t) => {
                    self.write_all(b"0\r\n")?;
                    self.write_all(&t)?;
                }
                None => self.write_all(b"0\r\n\r\n")?,
            }
        }
        Ok(keep)
    }

    fn chunked(&mut self, head: &RequestHead, len: usize, chunk: usize) -> Result<bool, Fail> {
        self.skip_body(head)?;
        if head.version() == Version::HTTP_10 {
            let body: Vec<u8> = (0..len).map(pattern).collect();
            let sum = fnv1a64_hex(&body);
            return self.respond(
                head,
                200,
                "application/octet-stream",
                &[("x-checksum", sum.as_bytes())],
                &body,
                true,
            );
        }
        let keep = head.keep_alive();
        let mut out = BytesMut::with_capacity(READ_CHUNK + 64);
        self.put_head(
            &mut out,
            StatusCode::OK,
            "application/octet-stream",
            &[("trailer", b"x-checksum")],
            BodyKind::Chunked,
            head.version(),
            keep,
        );
        self.started = true;
        if head.method() == Method::HEAD {
            self.write_all(&out)?;
            return Ok(keep);
        }
        let mut hash = Fnv1a64::new();
        let mut off = 0;
        while off < len {
            let n = chunk.min(len - off);
            encode_chunk_header(n, &mut out);
            // Generate a long chunk in pieces so memory stays bounded whatever its size.
            let end = off + n;
            while off < end {
                let piece = (end - off).min(READ_CHUNK);
                let start = out.len();
                out.extend((off..off + piece).map(pattern));
                hash.update(&out[start..]);
                off += piece;
                if out.len() >= READ_CHUNK {
                    self.write_all(&out)?;
                    out.clear();
                }
            }
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\nx-checksum: ");
        out.extend_from_slice(hash.hex().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        self.write_all(&out)?;
        Ok(keep)
    }

    fn upgrade_echo(&mut self, head: &RequestHead) -> Result<bool, Fail> {
        if !head.is_websocket_upgrade() {
            self.skip_body(head)?;
            return self.respond(
                head,
                426,
                "text/plain",
                &[("upgrade", b"websocket")],
                b"upgrade required: websocket\n",
                true,
            );
        }
        let accept = head.header("sec-websocket-key").unwrap_or_default();
        let mut out = BytesMut::with_capacity(256);
        encode_response_head(
            StatusCode::SWITCHING_PROTOCOLS,
            &[
                ("x-upstream", self.service.name.as_bytes()),
                ("upgrade", b"websocket"),
                ("sec-websocket-accept", accept),
            ],
            BodyKind::None,
            head.version(),
            ClientConnection::Upgrade,
            &mut out,
        );
        self.started = true;
        self.write_all(&out)?;
        // From here the connection is a raw byte pipe: echo everything, including bytes that
        // arrived with the head, until the client closes.
        loop {
            if !self.buf.is_empty() {
                let data = self.buf.split();
                self.write_all(&data)?;
            }
            if !self.fill()? {
                return Ok(false);
            }
        }
    }
}
