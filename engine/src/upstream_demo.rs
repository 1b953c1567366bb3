//! In-process HTTP/1.1 upstream servers, for `headwater demo` and for integration tests.
//!
//! This module owns [`UpstreamServer`]: a small origin server built on plain `std::net` and OS
//! threads (one accept thread per server, one thread per connection) so that it runs beside the
//! proxy without touching its monoio runtime. Requests are read with the project's own codec
//! (`headwater_http1`): keep-alive, pipelining, `Expect: 100-continue`, `Connection: close` and
//! HTTP/1.0 are handled; request bodies are always streamed, never held whole. What a server
//! answers is chosen by a [`Behavior`] (fixed body, echo, mirror, errors, stalls, resets,
//! garbage, flaky, chunked, upgrade, slow), which can be changed while it runs.
//!
//! Every response carries `x-upstream: {name}` and is framed by `Content-Length`, or chunked
//! where a behavior says so. A request whose head (or body framing) is invalid gets the codec's
//! error status (400 for malformed requests) with `Connection: close`, and the connection closes.
//!
//! Stopping is prompt: the accept loop polls a nonblocking listener and connection sockets use
//! short read/write timeouts, all checking one shared stop flag, so [`UpstreamServer::stop`] (or
//! `Drop`) closes the listener and joins every thread within a few tens of milliseconds.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use headwater_http1::chunked::{encode_chunk, encode_chunk_header};
use headwater_http1::{
    encode_response_head, BodyDecoder, BodyKind, ClientConnection, Decoded, Limits, RequestHead,
    RequestParser, CONTINUE_100,
};
use http::{Method, StatusCode, Version};

/// How long a connection thread blocks in one read or write before it looks at the stop flag.
const POLL: Duration = Duration::from_millis(20);
/// How long the accept loop sleeps when no connection is waiting.
const ACCEPT_POLL: Duration = Duration::from_millis(5);
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Longest time spent draining a client's input after our side has finished, so that closing
/// does not reset the connection (and lose the last response) while the client still sends.
const LINGER: Duration = Duration::from_millis(500);
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

/// State shared by a server's handle, its accept thread and its connection threads.
struct Shared {
    name: String,
    behavior: Mutex<Behavior>,
    /// xorshift64 state for [`Behavior::Flaky`].
    rng: Mutex<u64>,
    stop: AtomicBool,
    connections: AtomicU64,
    requests: AtomicU64,
    targets: Mutex<Vec<String>>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

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
        let mut s = lock(&self.rng);
        let mut x = *s;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *s = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An HTTP/1.1 origin server running on its own threads. Stops (closes its listener, ends its
/// connection threads and joins them) on [`stop`](Self::stop) or drop.
pub struct UpstreamServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for UpstreamServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamServer")
            .field("name", &self.shared.name)
            .field("addr", &self.addr)
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
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let rng = match behavior {
            Behavior::Flaky { seed, .. } => seed_state(seed),
            _ => seed_state(0),
        };
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            behavior: Mutex::new(behavior),
            rng: Mutex::new(rng),
            stop: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            targets: Mutex::new(Vec::new()),
        });
        let for_thread = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name(format!("upstream-{name}"))
            .spawn(move || accept_loop(listener, for_thread))?;
        Ok(UpstreamServer {
            shared,
            addr,
            accept: Some(accept),
        })
    }

    /// The address the server listens on (with the actual port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name given at start.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Total TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Acquire)
    }

    /// Total requests whose head was parsed so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Acquire)
    }

    /// Request-targets seen so far, exactly as received, in the order their heads were parsed.
    pub fn targets(&self) -> Vec<String> {
        lock(&self.shared.targets).clone()
    }

    /// The current behavior.
    pub fn behavior(&self) -> Behavior {
        lock(&self.shared.behavior).clone()
    }

    /// Changes the behavior for requests whose head is read from now on.
    pub fn set_behavior(&self, b: Behavior) {
        self.shared.set_behavior(b);
    }

    /// Stops the server: closes the listener and every connection, and joins all threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

impl Drop for UpstreamServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stopped() {
        match listener.accept() {
            Ok((stream, _)) => {
                shared.connections.fetch_add(1, Ordering::AcqRel);
                conns.retain(|h| !h.is_finished());
                let for_conn = Arc::clone(&shared);
                // On spawn failure the closure, and with it the stream, is dropped: the client
                // sees the connection close.
                if let Ok(h) = thread::Builder::new()
                    .name(format!("upstream-{}-c", shared.name))
                    .spawn(move || Conn::new(stream, for_conn).run())
                {
                    conns.push(h);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // WouldBlock when idle; anything else (EMFILE, ECONNABORTED) is retried after a pause.
            Err(_) => thread::sleep(ACCEPT_POLL),
        }
    }
    drop(listener);
    for h in conns {
        let _ = h.join();
    }
}

/// Why serving a connection stopped early.
enum Fail {
    /// The server is stopping.
    Stopped,
    /// The peer closed in the middle of a message.
    Eof,
    /// A socket error.
    Io,
    /// The request is invalid: answer its status (if no response was started) and close.
    Codec(headwater_http1::Error),
    /// Reset the connection (linger 0 was set) and end.
    Reset,
}

impl From<io::Error> for Fail {
    fn from(_: io::Error) -> Self {
        Fail::Io
    }
}

fn retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One accepted connection and its read buffer.
struct Conn {
    stream: TcpStream,
    shared: Arc<Shared>,
    buf: BytesMut,
    scratch: Vec<u8>,
    parser: RequestParser,
    /// A response head for the current request has been written.
    started: bool,
    /// A [`Behavior::Stall`] request was read: nothing is answered on this connection any more.
    stalled: bool,
}

impl Conn {
    fn new(stream: TcpStream, shared: Arc<Shared>) -> Self {
        Conn {
            stream,
            shared,
            buf: BytesMut::with_capacity(READ_CHUNK),
            scratch: vec![0; READ_CHUNK],
            parser: RequestParser::new(Limits::default()),
            started: false,
            stalled: false,
        }
    }

    fn run(mut self) {
        let setup = self
            .stream
            .set_nonblocking(false)
            .and_then(|()| self.stream.set_read_timeout(Some(POLL)))
            .and_then(|()| self.stream.set_write_timeout(Some(POLL)));
        if setup.is_err() {
            return;
        }
        let _ = self.stream.set_nodelay(true);
        loop {
            let result = match self.next_head() {
                Ok(Some(head)) => self.serve(head),
                // The client closed between requests.
                Ok(None) => Ok(false),
                Err(e) => Err(e),
            };
            match result {
                Ok(true) => {}
                Ok(false) => return self.close_gracefully(),
                Err(Fail::Codec(e)) if !self.stalled => {
                    if !self.started {
                        let _ = self.send_error(&e);
                    }
                    return self.close_gracefully();
                }
                Err(Fail::Codec(_)) => return self.discard_until_eof(),
                Err(Fail::Stopped | Fail::Eof | Fail::Io | Fail::Reset) => return,
            }
        }
    }

    /// Reads until a request head is complete; `None` when the client closed first.
    fn next_head(&mut self) -> Result<Option<RequestHead>, Fail> {
        loop {
            if let Some(head) = self.parser.parse(&mut self.buf).map_err(Fail::Codec)? {
                return Ok(Some(head));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Reads more bytes into `buf`; false at EOF.
    fn fill(&mut self) -> Result<bool, Fail> {
        loop {
            if self.shared.stopped() {
                return Err(Fail::Stopped);
            }
            match self.stream.read(&mut self.scratch) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&self.scratch[..n]);
                    return Ok(true);
                }
                Err(e) if retryable(&e) => {}
                Err(_) => return Err(Fail::Io),
            }
        }
    }

    fn write_all(&mut self, mut data: &[u8]) -> Result<(), Fail> {
        while !data.is_empty() {
            if self.shared.stopped() {
                return Err(Fail::Stopped);
            }
            match self.stream.write(data) {
                Ok(0) => return Err(Fail::Io),
                Ok(n) => data = &data[n..],
                Err(e) if retryable(&e) => {}
                Err(_) => return Err(Fail::Io),
            }
        }
        Ok(())
    }

    /// The next piece of the body `dec` decodes; EOF before its end is [`Fail::Eof`].
    fn next_piece(&mut self, dec: &mut BodyDecoder) -> Result<Decoded, Fail> {
        loop {
            if let Some(d) = dec.decode(&mut self.buf).map_err(Fail::Codec)? {
                return Ok(d);
            }
            if !self.fill()? {
                return Err(Fail::Eof);
            }
        }
    }

    /// Reads the request body through `on_data` (sending `100 Continue` first when the client
    /// waits for it) and returns its length.
    fn read_body(
        &mut self,
        head: &RequestHead,
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<u64, Fail> {
        let kind = head.body_kind();
        if head.expects_continue() && kind.has_body() {
            self.write_all(CONTINUE_100)?;
        }
        let mut dec = BodyDecoder::new(kind);
        let mut n = 0;
        loop {
            match self.next_piece(&mut dec)? {
                Decoded::Data(b) => {
                    n += b.len() as u64;
                    on_data(&b);
                }
                Decoded::Trailers(_) => {}
                Decoded::Done => return Ok(n),
            }
        }
    }

    /// Reads a request body without asking for it (no `100 Continue`) and drops it.
    fn discard_body(&mut self, head: &RequestHead) -> Result<(), Fail> {
        let mut dec = BodyDecoder::new(head.body_kind());
        while !matches!(self.next_piece(&mut dec)?, Decoded::Done) {}
        Ok(())
    }

    fn serve(&mut self, head: RequestHead) -> Result<bool, Fail> {
        self.started = false;
        let shared = Arc::clone(&self.shared);
        shared.requests.fetch_add(1, Ordering::AcqRel);
        lock(&shared.targets).push(lossy(head.target()));
        if self.stalled {
            self.discard_body(&head)?;
            return Ok(true);
        }
        let behavior = lock(&shared.behavior).clone();
        match behavior {
            Behavior::Fixed { body } => {
                self.read_body(&head, |_| {})?;
                self.respond(&head, 200, "text/plain", &[], &body)
            }
            Behavior::Echo => self.echo(&head),
            Behavior::Status(code) => {
                self.read_body(&head, |_| {})?;
                let status = status_code(code);
                let body = format!(
                    "{} {}\n",
                    status.as_str(),
                    status.canonical_reason().unwrap_or("")
                );
                self.respond(&head, code, "text/plain", &[], body.as_bytes())
            }
            Behavior::Mirror => self.mirror(&head),
            Behavior::Stall => {
                self.stalled = true;
                self.discard_body(&head)?;
                Ok(true)
            }
            Behavior::Reset => {
                socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO))?;
                Err(Fail::Reset)
            }
            Behavior::Garbage => {
                self.started = true;
                self.write_all(GARBAGE)?;
                Ok(false)
            }
            Behavior::Flaky {
                fail_ratio, body, ..
            } => {
                self.read_body(&head, |_| {})?;
                if shared.draw() < fail_ratio {
                    let body = format!("upstream {} failed\n", shared.name);
                    self.respond(&head, 500, "text/plain", &[], body.as_bytes())
                } else {
                    self.respond(&head, 200, "text/plain", &[], &body)
                }
            }
            Behavior::Chunked { len, chunk } => self.chunked(&head, len, chunk.max(1)),
            Behavior::UpgradeEcho => self.upgrade_echo(&head),
            Behavior::Slow { delay, body } => {
                self.read_body(&head, |_| {})?;
                self.sleep(delay)?;
                self.respond(&head, 200, "text/plain", &[], &body)
            }
        }
    }

    fn echo(&mut self, head: &RequestHead) -> Result<bool, Fail> {
        let mut hash = Fnv1a64::new();
        let len = self.read_body(head, |d| hash.update(d))?;
        let headers: Vec<[String; 2]> = head.headers().map(|(n, v)| [lossy(n), lossy(v)]).collect();
        let doc = serde_json::json!({
            "upstream": self.shared.name,
            "method": head.method().as_str(),
            "path": lossy(head.target()),
            "headers": headers,
            "body_len": len,
            "body_sha": hash.hex(),
        });
        let body = serde_json::to_vec(&doc).unwrap_or_default();
        self.respond(head, 200, "application/json", &[], &body)
    }

    fn mirror(&mut self, head: &RequestHead) -> Result<bool, Fail> {
        let kind = head.body_kind();
        if head.method() == Method::HEAD {
            self.read_body(head, |_| {})?;
            return self.respond(head, 200, "application/octet-stream", &[], b"");
        }
        if head.expects_continue() && kind.has_body() {
            self.write_all(CONTINUE_100)?;
        }
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
        self.read_body(head, |_| {})?;
        if head.version() == Version::HTTP_10 {
            let body: Vec<u8> = (0..len).map(pattern).collect();
            let sum = fnv1a64_hex(&body);
            return self.respond(
                head,
                200,
                "application/octet-stream",
                &[("x-checksum", sum.as_bytes())],
                &body,
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
            self.read_body(head, |_| {})?;
            return self.respond(
                head,
                426,
                "text/plain",
                &[("upgrade", b"websocket")],
                b"upgrade required: websocket\n",
            );
        }
        let accept = head.header("sec-websocket-key").unwrap_or_default();
        let mut out = BytesMut::with_capacity(256);
        encode_response_head(
            StatusCode::SWITCHING_PROTOCOLS,
            &[
                ("x-upstream", self.shared.name.as_bytes()),
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

    /// Writes a whole response with a `Content-Length` body (none for HEAD, 1xx, 204, 304).
    fn respond(
        &mut self,
        req: &RequestHead,
        code: u16,
        content_type: &str,
        extra: &[(&str, &[u8])],
        body: &[u8],
    ) -> Result<bool, Fail> {
        let status = status_code(code);
        let keep = req.keep_alive();
        let (framing, body) = if status.is_informational() || status == StatusCode::NO_CONTENT {
            (BodyKind::None, &[][..])
        } else if status == StatusCode::NOT_MODIFIED {
            (BodyKind::Length(0), &[][..])
        } else {
            (BodyKind::Length(body.len() as u64), body)
        };
        let mut out = BytesMut::with_capacity(256 + body.len());
        self.put_head(
            &mut out,
            status,
            content_type,
            extra,
            framing,
            req.version(),
            keep,
        );
        if req.method() != Method::HEAD {
            out.extend_from_slice(body);
        }
        self.started = true;
        self.write_all(&out)?;
        Ok(keep)
    }

    #[allow(clippy::too_many_arguments)]
    fn put_head(
        &self,
        out: &mut BytesMut,
        status: StatusCode,
        content_type: &str,
        extra: &[(&str, &[u8])],
        framing: BodyKind,
        version: Version,
        keep: bool,
    ) {
        let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(2 + extra.len());
        headers.push(("x-upstream", self.shared.name.as_bytes()));
        headers.push(("content-type", content_type.as_bytes()));
        headers.extend_from_slice(extra);
        let conn = if keep {
            ClientConnection::KeepAlive
        } else {
            ClientConnection::Close
        };
        encode_response_head(status, &headers, framing, version, conn, out);
    }

    /// Answers an invalid request with the codec's status and `Connection: close`.
    fn send_error(&mut self, e: &headwater_http1::Error) -> Result<(), Fail> {
        let body = format!("{}\n", e.detail());
        let mut out = BytesMut::with_capacity(256);
        self.put_head(
            &mut out,
            e.status(),
            "text/plain",
            &[],
            BodyKind::Length(body.len() as u64),
            Version::HTTP_11,
            false,
        );
        out.extend_from_slice(body.as_bytes());
        self.started = true;
        self.write_all(&out)
    }

    /// Sleeps `d`, waking regularly to notice a stop.
    fn sleep(&self, d: Duration) -> Result<(), Fail> {
        let until = Instant::now() + d;
        loop {
            if self.shared.stopped() {
                return Err(Fail::Stopped);
            }
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            thread::sleep((until - now).min(POLL));
        }
    }

    /// Half-closes, then reads (and drops) what the client still sends for a while, so that
    /// the close does not turn into a reset that destroys the last response in flight.
    fn close_gracefully(mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        self.discard_input(Some(Instant::now() + LINGER));
    }

    /// Drops all input until the client closes or the server stops (a stalled connection).
    fn discard_until_eof(mut self) {
        self.discard_input(None);
    }

    /// Reads and drops input until the client closes, the server stops or `deadline` passes.
    fn discard_input(&mut self, deadline: Option<Instant>) {
        while deadline.is_none_or(|d| Instant::now() < d) && !self.shared.stopped() {
            match self.stream.read(&mut self.scratch) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if retryable(&e) => {}
                Err(_) => return,
            }
        }
    }
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
