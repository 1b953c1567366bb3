//! The server plumbing shared by the engine's in-process test servers
//! ([`crate::upstream_demo::UpstreamServer`] and [`crate::llm_mock::MockProvider`]).
//!
//! This module owns how such a server runs, not what it answers: [`Server`] binds a listener,
//! runs one accept thread and one thread per connection on plain `std::net` (beside the proxy,
//! without touching its monoio runtime), and stops promptly; [`Conn`] reads requests with the
//! project's own codec (`headwater_http1`: keep-alive, pipelining, `Expect: 100-continue`,
//! `Connection: close`, HTTP/1.0), writes response heads and whole responses, and closes with a
//! linger so that the last response is not lost to a reset. What is answered is a [`Service`]'s
//! business: the server's own state, the headers every response starts with, and how it serves
//! a request.
//!
//! Stopping is prompt: the accept loop polls a nonblocking listener and connection sockets use
//! short read/write timeouts, all checking one shared stop flag, so stopping (or dropping) a
//! [`Server`] closes the listener and joins every thread within a few tens of milliseconds.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use headwater_http1::{
    encode_response_head, BodyDecoder, BodyKind, ClientConnection, Decoded, Limits, RequestHead,
    RequestParser, CONTINUE_100,
};
use http::{Method, StatusCode, Version};

/// How long a connection thread blocks in one read or write before it looks at the stop flag.
pub(crate) const POLL: Duration = Duration::from_millis(20);
/// How long the accept loop sleeps when no connection is waiting.
const ACCEPT_POLL: Duration = Duration::from_millis(5);
/// Bytes read from a socket at a time.
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// Longest time spent draining a client's input after our side has finished, so that closing
/// does not reset the connection (and lose the last response) while the client still sends.
const LINGER: Duration = Duration::from_millis(500);

/// What a server answers: its state, shared by its handle and its connection threads.
pub(crate) trait Service: Send + Sync + Sized + 'static {
    /// The two headers every response starts with, in order, one of them `content-type`.
    fn base_headers<'a>(&'a self, content_type: &'a str) -> [(&'static str, &'a [u8]); 2];

    /// The content type and body of the answer to a request the codec rejects.
    fn codec_error(&self, e: &headwater_http1::Error) -> (&'static str, Vec<u8>);

    /// Answers one request whose head was read (its body is still to read); `Ok(true)` to read
    /// the next request on the connection, `Ok(false)` to close it gracefully.
    fn serve(conn: &mut Conn<Self>, head: RequestHead) -> Result<bool, Fail>;
}

/// The stop flag and counters of one server.
#[derive(Default)]
struct Control {
    stop: AtomicBool,
    connections: AtomicU64,
}

impl Control {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// A running server: its listener's address and accept thread. Stops (closes its listener,
/// ends its connection threads and joins them) on [`stop`](Self::stop) or drop.
pub(crate) struct Server<S> {
    service: Arc<S>,
    control: Arc<Control>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl<S: Service> Server<S> {
    /// Binds `addr` (port 0 allowed) and serves with `service`; the accept thread is called
    /// `name`, the connection threads `{name}-c`.
    pub(crate) fn start(addr: SocketAddr, name: String, service: S) -> io::Result<Server<S>> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let service = Arc::new(service);
        let control = Arc::new(Control::default());
        let (s, c) = (Arc::clone(&service), Arc::clone(&control));
        let conn_name = format!("{name}-c");
        let accept = thread::Builder::new()
            .name(name)
            .spawn(move || accept_loop(listener, s, c, conn_name))?;
        Ok(Server {
            service,
            control,
            addr,
            accept: Some(accept),
        })
    }

    /// The address it listens on (with the actual port when bound to port 0).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The service's state.
    pub(crate) fn service(&self) -> &S {
        &self.service
    }

    /// Total TCP connections accepted so far.
    pub(crate) fn connections(&self) -> u64 {
        self.control.connections.load(Ordering::Acquire)
    }

    /// Stops the server: closes the listener and every connection, and joins all threads.
    pub(crate) fn stop(self) {
        drop(self);
    }
}

impl<S> Drop for Server<S> {
    fn drop(&mut self) {
        self.control.stop.store(true, Ordering::Release);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop<S: Service>(
    listener: TcpListener,
    service: Arc<S>,
    control: Arc<Control>,
    conn_name: String,
) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !control.stopped() {
        match listener.accept() {
            Ok((stream, _)) => {
                control.connections.fetch_add(1, Ordering::AcqRel);
                conns.retain(|h| !h.is_finished());
                let conn = Conn::new(stream, Arc::clone(&service), Arc::clone(&control));
                // On spawn failure the closure, and with it the stream, is dropped: the client
                // sees the connection close.
                if let Ok(h) = thread::Builder::new()
                    .name(conn_name.clone())
                    .spawn(move || conn.run())
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
pub(crate) enum Fail {
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
    /// The request body is larger than the service accepts (it has answered, or will not).
    TooLarge,
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

/// Locks `m`, whether or not a thread panicked while holding it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `b` as text, invalid UTF-8 replaced.
pub(crate) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The status `code` names (500 outside 100..=999).
pub(crate) fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// One accepted connection and its read buffer.
pub(crate) struct Conn<S> {
    pub(crate) stream: TcpStream,
    /// The server's state.
    pub(crate) service: Arc<S>,
    control: Arc<Control>,
    /// Bytes read and not yet parsed.
    pub(crate) buf: BytesMut,
    scratch: Vec<u8>,
    parser: RequestParser,
    /// A response head for the current request has been written.
    pub(crate) started: bool,
    /// A stalling request was read: nothing is answered on this connection any more.
    pub(crate) stalled: bool,
}

impl<S: Service> Conn<S> {
    fn new(stream: TcpStream, service: Arc<S>, control: Arc<Control>) -> Self {
        Conn {
            stream,
            service,
            control,
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
                Ok(Some(head)) => {
                    self.started = false;
                    S::serve(&mut self, head)
                }
                // The client closed between requests.
                Ok(None) => Ok(false),
                Err(e) => Err(e),
            };
            match result {
                Ok(true) => {}
                Ok(false) => return self.close_gracefully(),
                Err(Fail::Codec(e)) if !self.stalled => {
                    if !self.started {
                        let _ = self.send_codec_error(&e);
                    }
                    return self.close_gracefully();
                }
                Err(Fail::Codec(_)) => return self.discard_until_eof(),
                Err(Fail::Stopped | Fail::Eof | Fail::Io | Fail::Reset | Fail::TooLarge) => return,
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
    pub(crate) fn fill(&mut self) -> Result<bool, Fail> {
        loop {
            if self.control.stopped() {
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

    /// Writes all of `data`, giving up when the server stops.
    pub(crate) fn write_all(&mut self, mut data: &[u8]) -> Result<(), Fail> {
        while !data.is_empty() {
            if self.control.stopped() {
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
    pub(crate) fn next_piece(&mut self, dec: &mut BodyDecoder) -> Result<Decoded, Fail> {
        loop {
            if let Some(d) = dec.decode(&mut self.buf).map_err(Fail::Codec)? {
                return Ok(d);
            }
            if !self.fill()? {
                return Err(Fail::Eof);
            }
        }
    }

    /// Sends `100 Continue` when the client waits for it before sending a body.
    pub(crate) fn continue_if_expected(&mut self, head: &RequestHead) -> Result<(), Fail> {
        if head.expects_continue() && head.body_kind().has_body() {
            self.write_all(CONTINUE_100)?;
        }
        Ok(())
    }

    /// Reads the request body through `on_data` (sending `100 Continue` first when the client
    /// waits for it) and returns its length; an error from `on_data` ends the reading.
    pub(crate) fn read_body(
        &mut self,
        head: &RequestHead,
        mut on_data: impl FnMut(&[u8]) -> Result<(), Fail>,
    ) -> Result<u64, Fail> {
        self.continue_if_expected(head)?;
        let mut dec = BodyDecoder::new(head.body_kind());
        let mut n = 0;
        loop {
            match self.next_piece(&mut dec)? {
                Decoded::Data(b) => {
                    n += b.len() as u64;
                    on_data(&b)?;
                }
                Decoded::Trailers(_) => {}
                Decoded::Done => return Ok(n),
            }
        }
    }

    /// Reads the request body (sending `100 Continue` when asked) and drops it.
    pub(crate) fn skip_body(&mut self, head: &RequestHead) -> Result<(), Fail> {
        self.read_body(head, |_| Ok(())).map(drop)
    }

    /// Reads a request body without asking for it (no `100 Continue`) and drops it.
    pub(crate) fn discard_body(&mut self, head: &RequestHead) -> Result<(), Fail> {
        let mut dec = BodyDecoder::new(head.body_kind());
        while !matches!(self.next_piece(&mut dec)?, Decoded::Done) {}
        Ok(())
    }

    /// Sets linger 0, so that closing the connection resets it: end serving with the result.
    pub(crate) fn reset<T>(&mut self) -> Result<T, Fail> {
        socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO))?;
        Err(Fail::Reset)
    }

    /// Puts a response head: the service's base headers, then `extra`, then the framing and
    /// `Connection` headers (`keep`: keep-alive, else close).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn put_head(
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
        headers.extend(self.service.base_headers(content_type));
        headers.extend_from_slice(extra);
        let conn = if keep {
            ClientConnection::KeepAlive
        } else {
            ClientConnection::Close
        };
        encode_response_head(status, &headers, framing, version, conn, out);
    }

    /// Writes a whole response with a `Content-Length` body (none for HEAD, 1xx, 204, 304);
    /// `keep_ok`: the connection may stay open if the request allows. Returns whether it does.
    pub(crate) fn respond(
        &mut self,
        req: &RequestHead,
        code: u16,
        content_type: &str,
        extra: &[(&str, &[u8])],
        body: &[u8],
        keep_ok: bool,
    ) -> Result<bool, Fail> {
        let status = status_code(code);
        let keep = keep_ok && req.keep_alive();
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

    /// Answers an invalid request with the codec's status, the service's
    /// [`codec_error`](Service::codec_error) body and `Connection: close`.
    fn send_codec_error(&mut self, e: &headwater_http1::Error) -> Result<(), Fail> {
        let (content_type, body) = self.service.codec_error(e);
        let mut out = BytesMut::with_capacity(256 + body.len());
        self.put_head(
            &mut out,
            e.status(),
            content_type,
            &[],
            BodyKind::Length(body.len() as u64),
            Version::HTTP_11,
            false,
        );
        out.extend_from_slice(&body);
        self.started = true;
        self.write_all(&out)
    }

    /// Sleeps `d`, waking regularly to notice a stop.
    pub(crate) fn sleep(&self, d: Duration) -> Result<(), Fail> {
        if d.is_zero() {
            return Ok(());
        }
        let until = Instant::now() + d;
        loop {
            if self.control.stopped() {
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
        while deadline.is_none_or(|d| Instant::now() < d) && !self.control.stopped() {
            match self.stream.read(&mut self.scratch) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if retryable(&e) => {}
                Err(_) => return,
            }
        }
    }
}
