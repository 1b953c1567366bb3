//! The HTTP/1.1 client the engine calls LLM providers with.
//!
//! # What this module owns
//!
//! - [`ProviderClient`]: one per shard (not `Send`). [`ProviderClient::send`] takes an
//!   [`UpstreamRequest`] built by the `llm` crate, gets a connection to its authority (a pooled
//!   keep-alive one, or a new one: name resolution through [`super::dns::Resolver`], TCP with
//!   `TCP_NODELAY`, TLS with SNI = the host and certificate verification as the
//!   [`TlsConnector`] is configured), writes the request (head and body in one `writev`), and
//!   reads the response head, skipping 1xx interim responses.
//! - Its connection pool: idle connections by (TLS or not, authority), most recently used
//!   first, at most [`ClientSettings::max_idle_per_host`] per authority, dropped when idle longer
//!   than [`ClientSettings::idle_timeout`] or older than [`ClientSettings::max_lifetime`]. A
//!   pooled connection found dead (the write fails, or it is closed or reset before any byte of
//!   the response) is replaced by a new connection once, transparently: the request had not
//!   been read by the provider. A new connection's failure is an error.
//! - [`ProviderResponse`]: status and headers, then the body decoded as it arrives
//!   ([`ProviderResponse::chunk`], for streams) or gathered up to a limit
//!   ([`ProviderResponse::read_all`]). The connection goes back to the pool when the body has
//!   been read to its end, its framing allows reuse and the provider did not ask to close it.
//!   A response dropped before its end closes its connection: a half-read connection is never
//!   pooled.
//! - [`ClientError`]: what failed ([`ClientErrorKind`]), for which authority, whether trying
//!   again (another deployment) can help, and its [`LlmError`] form for the failover plan.
//!
//! It does not own retries across deployments, request building or response parsing (the
//! `llm` crate's), nor any timeout policy beyond the deadlines its callers pass: the connect
//! deadline (DNS, TCP and TLS together) from [`ClientSettings`], the head deadline per
//! [`send`](ProviderClient::send) (writing the request and reading the response head), and the
//! idle deadline between body reads per [`chunk`](ProviderResponse::chunk).
//!
//! API keys travel only in the request head on the wire: no error or `Debug` output here
//! contains a header value.

use std::{
    cell::RefCell,
    collections::HashMap,
    fmt,
    net::SocketAddr,
    rc::Rc,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use headwater_http1::{
    encode_request_head, BodyDecoder, BodyKind, Decoded, Limits, ResponseHead, ResponseParser,
};
use headwater_llm::{router::transport_error, ErrorKind, LlmError, Origin, UpstreamRequest};
use http::{Method, StatusCode, Version};
use monoio::net::TcpStream;

use super::dns::{ip_literal, Resolver};
use crate::io::{read_timeout, write_vectored_all_timeout, BytesVec, ReadOutcome, WriteError};
use crate::tls::{TlsConnector, TlsError, TlsStream};

/// A read is given at least this much free buffer.
const READ_SPARE: usize = 4 * 1024;
/// What a read buffer grows by when it has less than [`READ_SPARE`] free.
const READ_RESERVE: usize = 16 * 1024;
/// A pooled connection's read buffer larger than this is replaced by a small one.
const KEEP_RBUF_CAPACITY: usize = 64 * 1024;

/// How the client connects and pools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// Deadline for getting a new connection ready: name resolution, TCP connect (across all
    /// of the name's addresses) and the TLS handshake together.
    pub connect_timeout: Duration,
    /// How long a pooled connection may stay idle before it is closed.
    pub idle_timeout: Duration,
    /// Most idle connections kept per (scheme, authority); 0 disables pooling.
    pub max_idle_per_host: usize,
    /// Connections older than this are not reused (so that DNS changes are followed).
    pub max_lifetime: Option<Duration>,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_idle_per_host: 32,
            max_lifetime: Some(Duration::from_secs(300)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// What kind of failure a [`ClientError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientErrorKind {
    /// The authority is not a valid `host[:port]`, or the request target cannot be sent.
    InvalidRequest,
    /// The host name could not be resolved (or not in time).
    Dns,
    /// The TCP connection could not be established (refused, unreachable, ...).
    Connect,
    /// The TLS handshake failed, including certificate verification.
    Tls,
    /// Resolution, connect and handshake did not finish within the connect deadline.
    ConnectTimeout,
    /// The request was not written or the response head not received within the head
    /// deadline.
    HeadTimeout,
    /// No body bytes arrived within the idle deadline.
    IdleTimeout,
    /// The connection was closed or reset before the response ended.
    Reset,
    /// The response is not valid HTTP/1.1 (head or body framing).
    Protocol,
    /// The body is larger than the caller accepts.
    TooLarge,
}

impl ClientErrorKind {
    /// A stable snake_case name, for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientErrorKind::InvalidRequest => "invalid_request",
            ClientErrorKind::Dns => "dns",
            ClientErrorKind::Connect => "connect",
            ClientErrorKind::Tls => "tls",
            ClientErrorKind::ConnectTimeout => "connect_timeout",
            ClientErrorKind::HeadTimeout => "head_timeout",
            ClientErrorKind::IdleTimeout => "idle_timeout",
            ClientErrorKind::Reset => "reset",
            ClientErrorKind::Protocol => "protocol",
            ClientErrorKind::TooLarge => "too_large",
        }
    }

    /// Whether the provider may have received (part of) the request: false for failures before
    /// a connection was ready.
    pub fn request_may_have_been_sent(self) -> bool {
        !matches!(
            self,
            ClientErrorKind::InvalidRequest
                | ClientErrorKind::Dns
                | ClientErrorKind::Connect
                | ClientErrorKind::Tls
                | ClientErrorKind::ConnectTimeout
        )
    }
}

impl fmt::Display for ClientErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call to a provider. Its text names the authority and what happened, never a header
/// value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    kind: ClientErrorKind,
    authority: String,
    peer: Option<SocketAddr>,
    message: String,
    retryable: bool,
}

impl ClientError {
    fn new(kind: ClientErrorKind, authority: &str, message: impl Into<String>) -> Self {
        ClientError {
            kind,
            authority: authority.to_owned(),
            peer: None,
            message: message.into(),
            retryable: kind != ClientErrorKind::TooLarge,
        }
    }

    fn at(mut self, peer: Option<SocketAddr>) -> Self {
        self.peer = peer;
        self
    }

    /// What kind of failure it is.
    pub fn kind(&self) -> ClientErrorKind {
        self.kind
    }

    /// The `host[:port]` the request was for.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The address connected (or being connected) to, when there was one.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Whether trying again (on another deployment, or this one later) may succeed: everything
    /// but a body over the caller's limit and a certificate the provider's name failed
    /// verification against (a configuration problem that a retry cannot fix).
    pub fn retryable(&self) -> bool {
        self.retryable
    }

    /// Whether a deadline passed (connect, head or idle).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.kind,
            ClientErrorKind::ConnectTimeout
                | ClientErrorKind::HeadTimeout
                | ClientErrorKind::IdleTimeout
        )
    }

    /// The error in the `llm` crate's terms, as the failover plan and deployment health expect
    /// it (all with [`Origin::Gateway`], since the gateway detected them):
    ///
    /// - DNS, connect, TLS, reset and invalid-request failures are
    ///   [`transport_error`]s ([`ErrorKind::ProviderError`]), which health counts as transport
    ///   failures;
    /// - the three timeouts are [`ErrorKind::Timeout`];
    /// - an invalid response and a body over the limit are [`ErrorKind::MalformedResponse`]
    ///   (an answer the gateway cannot use).
    ///
    /// The kinds are the `llm` crate's: their own `retryable()` may differ from
    /// [`ClientError::retryable`] (which is stricter for certificate failures and bodies over
    /// the limit); callers deciding whether to try another deployment should use the latter.
    ///
    /// The message says what happened without the provider's address or the OS error: it may
    /// reach the client (a stream's error event, an error body), and upstream hosts are not
    /// the client's business. The deployment's name is in `/status` and the access log.
    pub fn to_llm_error(&self) -> LlmError {
        let what = match self.kind {
            ClientErrorKind::InvalidRequest => "the provider request could not be sent",
            ClientErrorKind::Dns => "the provider's host name could not be resolved",
            ClientErrorKind::Connect => "the provider could not be reached",
            ClientErrorKind::Tls => "the TLS handshake with the provider failed",
            ClientErrorKind::ConnectTimeout => "connecting to the provider timed out",
            ClientErrorKind::HeadTimeout => "the provider did not answer in time",
            ClientErrorKind::IdleTimeout => {
                "the provider stopped sending in the middle of its answer"
            }
            ClientErrorKind::Reset => "the provider closed the connection before its answer ended",
            ClientErrorKind::Protocol => "the provider's answer was not valid HTTP",
            ClientErrorKind::TooLarge => {
                "the provider's answer was larger than the gateway accepts"
            }
        };
        let message = format!("{what} ({})", self.kind.as_str());
        match self.kind {
            ClientErrorKind::ConnectTimeout
            | ClientErrorKind::HeadTimeout
            | ClientErrorKind::IdleTimeout => {
                LlmError::new(ErrorKind::Timeout, Origin::Gateway, message)
            }
            ClientErrorKind::Protocol | ClientErrorKind::TooLarge => {
                LlmError::new(ErrorKind::MalformedResponse, Origin::Gateway, message)
            }
            ClientErrorKind::InvalidRequest
            | ClientErrorKind::Dns
            | ClientErrorKind::Connect
            | ClientErrorKind::Tls
            | ClientErrorKind::Reset => transport_error(message),
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "provider {}: {}", self.authority, self.message)
    }
}

impl std::error::Error for ClientError {}

// ---------------------------------------------------------------------------------------------
// Connections

/// A plain or TLS connection.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Stream {
    async fn read(&mut self, buf: BytesMut, dur: Duration) -> (ReadOutcome, BytesMut) {
        match self {
            Stream::Plain(s) => read_timeout(s, buf, dur).await,
            Stream::Tls(s) => read_timeout(s.as_mut(), buf, dur).await,
        }
    }

    async fn write(&mut self, bufs: BytesVec, dur: Duration) -> Result<(), WriteError> {
        match self {
            Stream::Plain(s) => write_vectored_all_timeout(s, bufs, dur).await.0,
            Stream::Tls(s) => write_vectored_all_timeout(s.as_mut(), bufs, dur).await.0,
        }
    }
}

/// A connection to a provider with its read buffer.
struct Conn {
    stream: Stream,
    peer: SocketAddr,
    /// Bytes read and not consumed yet.
    rbuf: BytesMut,
    created: Instant,
    idle_since: Instant,
}

impl Conn {
    /// Makes room for a read.
    fn reserve(&mut self) {
        if self.rbuf.capacity() - self.rbuf.len() < READ_SPARE {
            self.rbuf.reserve(READ_RESERVE);
        }
    }

    async fn read(&mut self, dur: Duration) -> ReadOutcome {
        self.reserve();
        let buf = std::mem::take(&mut self.rbuf);
        let (outcome, buf) = self.stream.read(buf, dur).await;
        self.rbuf = buf;
        outcome
    }
}

/// Where idle connections are kept: by TLS or not and authority (lower case).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    tls: bool,
    authority: String,
}

#[derive(Default)]
struct Pool {
    idle: HashMap<PoolKey, Vec<Conn>>,
}

fn expired(conn: &Conn, settings: &ClientSettings, now: Instant) -> bool {
    now.duration_since(conn.idle_since) >= settings.idle_timeout || too_old(conn, settings, now)
}

fn too_old(conn: &Conn, settings: &ClientSettings, now: Instant) -> bool {
    settings
        .max_lifetime
        .is_some_and(|l| now.duration_since(conn.created) >= l)
}

impl Pool {
    fn checkout(&mut self, key: &PoolKey, settings: &ClientSettings, now: Instant) -> Option<Conn> {
        let conns = self.idle.get_mut(key)?;
        let mut found = None;
        while let Some(c) = conns.pop() {
            if !expired(&c, settings, now) {
                found = Some(c);
                break;
            }
        }
        if conns.is_empty() {
            self.idle.remove(key);
        }
        found
    }

    fn checkin(&mut self, key: PoolKey, mut conn: Conn, settings: &ClientSettings, now: Instant) {
        if settings.max_idle_per_host == 0 || too_old(&conn, settings, now) {
            return;
        }
        conn.idle_since = now;
        if conn.rbuf.capacity() > KEEP_RBUF_CAPACITY {
            conn.rbuf = BytesMut::with_capacity(READ_RESERVE);
        }
        let conns = self.idle.entry(key).or_default();
        conns.retain(|c| !expired(c, settings, now));
        if conns.len() < settings.max_idle_per_host {
            conns.push(conn);
        }
    }

    fn sweep(&mut self, settings: &ClientSettings, now: Instant) -> usize {
        let mut closed = 0;
        self.idle.retain(|_, conns| {
            let before = conns.len();
            conns.retain(|c| !expired(c, settings, now));
            closed += before - conns.len();
            !conns.is_empty()
        });
        closed
    }

    fn count(&self) -> usize {
        self.idle.values().map(Vec::len).sum()
    }
}

// ---------------------------------------------------------------------------------------------
// The client

struct Inner {
    settings: ClientSettings,
    tls: TlsConnector,
    resolver: Resolver,
    pool: RefCell<Pool>,
}

/// The provider HTTP client of one shard. Cheap to clone (a shared handle); not `Send`.
#[derive(Clone)]
pub struct ProviderClient {
    inner: Rc<Inner>,
}

impl fmt::Debug for ProviderClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderClient")
            .field("settings", &self.inner.settings)
            .field("idle_connections", &self.idle_connections())
            .finish_non_exhaustive()
    }
}

/// Where a request goes.
struct Target<'a> {
    /// The host for resolution (brackets of an IPv6 literal kept: the resolver and the TLS
    /// connector accept them).
    host: &'a str,
    port: u16,
    key: PoolKey,
}

/// Splits `host[:port]` (`[v6]:port` for IPv6); the port defaults to 443 with TLS, else 80.
fn split_authority(authority: &str, tls: bool) -> Result<(&str, u16), String> {
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = if authority.starts_with('[') {
        let end = authority
            .find(']')
            .ok_or_else(|| "unterminated IPv6 literal".to_owned())?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => match rest.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err("junk after the IPv6 literal".to_owned()),
            },
        }
    } else if authority.parse::<std::net::Ipv6Addr>().is_ok() {
        (authority, None)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None | Some("") => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("invalid port {p:?}"))?,
    };
    if host.starts_with('[') || host.contains(':') {
        if ip_literal(host).is_none() {
            return Err("invalid IPv6 literal".to_owned());
        }
    } else if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err("invalid host".to_owned());
    }
    Ok((host, port))
}

/// The request on the wire: its head and its body.
struct Wire {
    head: Bytes,
    body: Bytes,
}

/// Hop-by-hop and framing fields that the client writes itself (or never sends).
fn managed_header(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "upgrade"
            | "expect"
    )
}

fn encode(req: &UpstreamRequest) -> Result<Wire, String> {
    let target = if req.path_and_query.is_empty() {
        "/"
    } else {
        req.path_and_query.as_str()
    };
    if !target.starts_with('/') || !target.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err("the request target is not a valid origin-form target".to_owned());
    }
    let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(req.headers.len() + 2);
    let (mut accept_encoding, mut user_agent) = (false, false);
    for (name, value) in &req.headers {
        let name = name.as_str();
        if managed_header(name) {
            continue;
        }
        accept_encoding |= name == "accept-encoding";
        user_agent |= name == "user-agent";
        headers.push((name, value.as_bytes()));
    }
    if !accept_encoding {
        headers.push(("accept-encoding", b"identity"));
    }
    if !user_agent {
        headers.push(("user-agent", b"headwater"));
    }
    let framing = if !req.body.is_empty()
        || matches!(req.method, Method::POST | Method::PUT | Method::PATCH)
    {
        BodyKind::Length(req.body.len() as u64)
    } else {
        BodyKind::None
    };
    let mut head = BytesMut::with_capacity(256 + req.authority.len() + target.len());
    encode_request_head(
        &req.method,
        target.as_bytes(),
        req.authority.as_bytes(),
        &headers,
        framing,
        &mut head,
    );
    Ok(Wire {
        head: head.freeze(),
        body: req.body.clone(),
    })
}

/// Why one exchange on one connection produced no response head.
enum Failed {
    /// A pooled connection turned out dead before the provider saw the request.
    Stale,
    Error(ClientError),
}

impl ProviderClient {
    /// A client with `settings` that makes TLS sessions with `tls` (its trust roots, ALPN and
    /// verification setting apply to every provider).
    pub fn new(settings: ClientSettings, tls: TlsConnector) -> Self {
        ProviderClient {
            inner: Rc::new(Inner {
                settings,
                tls,
                resolver: Resolver::default(),
                pool: RefCell::new(Pool::default()),
            }),
        }
    }

    /// The shard's resolver (for its cache size).
    pub fn resolver(&self) -> &Resolver {
        &self.inner.resolver
    }

    /// Idle pooled connections (all authorities), for `/status`. Expired ones count until the
    /// next [`sweep`](Self::sweep) or use of their authority.
    pub fn idle_connections(&self) -> usize {
        self.inner.pool.borrow().count()
    }

    /// Closes idle connections that expired; returns how many. Call it now and then (a timer)
    /// so that idle sockets do not linger after traffic stops.
    pub fn sweep(&self) -> usize {
        self.inner
            .pool
            .borrow_mut()
            .sweep(&self.inner.settings, Instant::now())
    }

    /// Sends `req` and returns the response once its head has arrived (1xx responses skipped).
    ///
    /// `head_timeout` bounds writing the request and receiving the response head, on each
    /// connection tried. A pooled connection that fails before any response byte is replaced
    /// by a new one once; getting a new connection is bounded by
    /// [`ClientSettings::connect_timeout`].
    pub async fn send(
        &self,
        req: &UpstreamRequest,
        head_timeout: Duration,
    ) -> Result<ProviderResponse, ClientError> {
        let authority = req.authority.as_str();
        let invalid = |why: String| {
            ClientError::new(
                ClientErrorKind::InvalidRequest,
                authority,
                format!("cannot send the request: {why}"),
            )
        };
        let (host, port) = split_authority(authority, req.tls)
            .map_err(|why| invalid(format!("invalid authority: {why}")))?;
        let wire = encode(req).map_err(invalid)?;
        let target = Target {
            host,
            port,
            key: PoolKey {
                tls: req.tls,
                authority: authority.to_ascii_lowercase(),
            },
        };
        let settings = &self.inner.settings;
        let mut pooled =
            self.inner
                .pool
                .borrow_mut()
                .checkout(&target.key, settings, Instant::now());
        loop {
            let (mut conn, reused) = match pooled.take() {
                Some(conn) => (conn, true),
                None => (self.connect(&target, authority).await?, false),
            };
            match exchange(&mut conn, &wire, reused, head_timeout, authority).await {
                Ok(head) => {
                    return Ok(ProviderResponse::new(
                        head,
                        &req.method,
                        conn,
                        reused,
                        target.key,
                        self.inner.clone(),
                    ));
                }
                Err(Failed::Stale) => {
                    // The newest idle connection was dead: the older ones most likely are too
                    // (the provider restarted, or closes idle connections sooner than we do).
                    self.inner.pool.borrow_mut().idle.remove(&target.key);
                }
                Err(Failed::Error(e)) => return Err(e),
            }
        }
    }

    /// A new connection to `target`, within the connect deadline.
    async fn connect(&self, target: &Target<'_>, authority: &str) -> Result<Conn, ClientError> {
        let budget = self.inner.settings.connect_timeout;
        let start = Instant::now();
        let err = |kind, message: String| ClientError::new(kind, authority, message);
        let addrs = self
            .inner
            .resolver
            .resolve(target.host, target.port, budget)
            .await
            .map_err(|e| err(ClientErrorKind::Dns, e.to_string()))?;
        let mut last: Option<ClientError> = None;
        let mut connected = None;
        for (i, &addr) in addrs.iter().enumerate() {
            let remaining = budget.saturating_sub(start.elapsed());
            if remaining.is_zero() {
                break;
            }
            // Each address gets an equal share of what is left, so that one that swallows SYNs
            // (an unrouted IPv6 address, say) does not use up the whole deadline.
            let share = remaining / (addrs.len() - i) as u32;
            match monoio::time::timeout(share, TcpStream::connect_addr(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    connected = Some((stream, addr));
                    break;
                }
                Ok(Err(e)) => {
                    last = Some(
                        err(
                            ClientErrorKind::Connect,
                            format!("cannot connect to {addr}: {e}"),
                        )
                        .at(Some(addr)),
                    );
                }
                Err(_) => {
                    last = Some(
                        err(
                            ClientErrorKind::ConnectTimeout,
                            format!(
                                "connecting to {addr} did not finish within {} ms",
                                share.as_millis()
                            ),
                        )
                        .at(Some(addr)),
                    );
                }
            }
        }
        let Some((tcp, peer)) = connected else {
            return Err(last.unwrap_or_else(|| {
                err(
                    ClientErrorKind::ConnectTimeout,
                    format!(
                        "no connection within the {} ms connect deadline",
                        budget.as_millis()
                    ),
                )
            }));
        };
        let stream = if target.key.tls {
            let remaining = budget.saturating_sub(start.elapsed());
            let tls = self
                .inner
                .tls
                .connect(tcp, target.host, remaining)
                .await
                .map_err(|e| tls_error(e, authority).at(Some(peer)))?;
            Stream::Tls(Box::new(tls))
        } else {
            Stream::Plain(tcp)
        };
        let now = Instant::now();
        Ok(Conn {
            stream,
            peer,
            rbuf: BytesMut::with_capacity(READ_RESERVE),
            created: now,
            idle_since: now,
        })
    }
}

fn tls_error(e: TlsError, authority: &str) -> ClientError {
    let kind = if e.is_timeout() {
        ClientErrorKind::ConnectTimeout
    } else {
        ClientErrorKind::Tls
    };
    let mut err = ClientError::new(kind, authority, e.to_string());
    // A certificate that does not verify for this name will not verify on the next try.
    err.retryable = !e.is_verification();
    err
}

/// Writes the request on `conn` and reads the response head, within `head_timeout`.
async fn exchange(
    conn: &mut Conn,
    wire: &Wire,
    reused: bool,
    head_timeout: Duration,
    authority: &str,
) -> Result<ResponseHead, Failed> {
    let deadline = Instant::now() + head_timeout;
    let peer = Some(conn.peer);
    let error =
        |kind, message: String| Failed::Error(ClientError::new(kind, authority, message).at(peer));
    let parts = BytesVec::from(vec![wire.head.clone(), wire.body.clone()]);
    if let Err(e) = conn.stream.write(parts, head_timeout).await {
        return Err(if e.is_timeout() {
            error(
                ClientErrorKind::HeadTimeout,
                format!(
                    "the request was not sent within {} ms",
                    head_timeout.as_millis()
                ),
            )
        } else if reused {
            // Whatever part of the request went out reached a connection the provider had
            // closed: it cannot have acted on it.
            Failed::Stale
        } else {
            error(
                ClientErrorKind::Reset,
                format!("sending the request failed: {e}"),
            )
        });
    }
    let mut parser = ResponseParser::new(Limits::default());
    let mut got_any = false;
    loop {
        if !conn.rbuf.is_empty() {
            match parser.parse(&mut conn.rbuf) {
                Ok(Some(head)) => match head.status().as_u16() {
                    101 => {
                        return Err(error(
                            ClientErrorKind::Protocol,
                            "unexpected 101 Switching Protocols".to_owned(),
                        ))
                    }
                    100..=199 => {
                        // Interim (100 Continue, 103 Early Hints): the final head follows.
                        parser = ResponseParser::new(Limits::default());
                        continue;
                    }
                    _ => return Ok(head),
                },
                Ok(None) => {}
                Err(e) => {
                    return Err(error(
                        ClientErrorKind::Protocol,
                        format!("invalid response head: {e}"),
                    ))
                }
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        match conn.read(remaining).await {
            ReadOutcome::Read(0) if reused && !got_any => return Err(Failed::Stale),
            ReadOutcome::Err(_) if reused && !got_any => return Err(Failed::Stale),
            ReadOutcome::Read(0) => {
                return Err(error(
                    ClientErrorKind::Reset,
                    "the connection was closed before the response head".to_owned(),
                ))
            }
            ReadOutcome::Err(e) => {
                return Err(error(
                    ClientErrorKind::Reset,
                    format!("reading the response head failed: {e}"),
                ))
            }
            ReadOutcome::Read(_) => got_any = true,
            ReadOutcome::TimedOut => {
                return Err(error(
                    ClientErrorKind::HeadTimeout,
                    format!("no response head within {} ms", head_timeout.as_millis()),
                ))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Responses

/// A provider's response: status and headers ([`header`](Self::header)), and the body to read
/// with [`chunk`](Self::chunk) or [`read_all`](Self::read_all).
///
/// Dropping it before the body's end closes the connection.
pub struct ProviderResponse {
    /// The status (never 1xx).
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The head as parsed: headers are looked up in it, not copied into a map.
    head: ResponseHead,
    /// The connection, until the body ends or fails.
    conn: Option<Conn>,
    decoder: BodyDecoder,
    /// Whether the connection may be pooled once the body has ended.
    reusable: bool,
    reused: bool,
    key: PoolKey,
    client: Rc<Inner>,
    failed: Option<ClientError>,
}

impl fmt::Debug for ProviderResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderResponse")
            .field("status", &self.status)
            .field("version", &self.version)
            .field("headers", &self.head.header_count())
            .field("authority", &self.key.authority)
            .field("reused", &self.reused)
            .field("finished", &self.conn.is_none())
            .finish_non_exhaustive()
    }
}

/// What one step of body reading came to.
enum Step {
    Data(Bytes),
    Done,
    Fail(ClientErrorKind, String),
}

impl ProviderResponse {
    fn new(
        head: ResponseHead,
        method: &Method,
        conn: Conn,
        reused: bool,
        key: PoolKey,
        client: Rc<Inner>,
    ) -> Self {
        let kind = head.body_kind(method);
        let reusable = kind.reusable() && head.keep_alive();
        let mut resp = ProviderResponse {
            status: head.status(),
            version: head.version(),
            head,
            conn: Some(conn),
            decoder: BodyDecoder::new(kind),
            reusable,
            reused,
            key,
            client,
            failed: None,
        };
        if resp.decoder.is_done() {
            // No body (HEAD, 204, 304, `content-length: 0`): the connection is free already.
            resp.finish();
        }
        resp
    }

    /// The first value of header `name` (any case), when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head
            .header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Whether the request went on a pooled connection.
    pub fn reused_connection(&self) -> bool {
        self.reused
    }

    /// Whether the body has been read to its end.
    pub fn is_finished(&self) -> bool {
        self.conn.is_none() && self.failed.is_none()
    }

    /// The next decoded body bytes, waiting at most `idle` for the provider to send some;
    /// `None` at the end of the body (the connection then goes back to the pool if it can).
    /// After an error, every call returns that error.
    pub async fn chunk(&mut self, idle: Duration) -> Result<Option<Bytes>, ClientError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let step = loop {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(None);
            };
            match self.decoder.decode(&mut conn.rbuf) {
                Ok(Some(Decoded::Data(data))) if data.is_empty() => continue,
                Ok(Some(Decoded::Data(data))) => break Step::Data(data),
                // Trailers are not surfaced: providers do not send any that matter.
                Ok(Some(Decoded::Trailers(_))) => continue,
                Ok(Some(Decoded::Done)) => break Step::Done,
                Ok(None) => {}
                Err(e) => {
                    break Step::Fail(
                        ClientErrorKind::Protocol,
                        format!("invalid response body: {e}"),
                    )
                }
            }
            match conn.read(idle).await {
                ReadOutcome::Read(0) => {
                    if self.decoder.eof().is_err() {
                        break Step::Fail(
                            ClientErrorKind::Reset,
                            "the connection was closed before the response body ended".to_owned(),
                        );
                    }
                }
                ReadOutcome::Read(_) => {}
                ReadOutcome::TimedOut => {
                    break Step::Fail(
                        ClientErrorKind::IdleTimeout,
                        format!("no response body bytes within {} ms", idle.as_millis()),
                    )
                }
                ReadOutcome::Err(e) => {
                    break Step::Fail(
                        ClientErrorKind::Reset,
                        format!("reading the response body failed: {e}"),
                    )
                }
            }
        };
        match step {
            Step::Data(data) => Ok(Some(data)),
            Step::Done => {
                self.finish();
                Ok(None)
            }
            Step::Fail(kind, message) => Err(self.fail(kind, message)),
        }
    }

    /// The whole body, reading with `idle` between reads; a [`ClientErrorKind::TooLarge`]
    /// error (and the connection closed) as soon as it is known to exceed `max_bytes`.
    pub async fn read_all(
        mut self,
        idle: Duration,
        max_bytes: usize,
    ) -> Result<Bytes, ClientError> {
        let over = |n: u64| n > max_bytes as u64;
        if self.decoder.remaining_hint().is_some_and(over) {
            return Err(self.too_large(max_bytes));
        }
        let mut body = Joined::default();
        while let Some(data) = self.chunk(idle).await? {
            if over(body.len() + data.len() as u64) {
                return Err(self.too_large(max_bytes));
            }
            body.push(data);
        }
        Ok(body.into_bytes())
    }

    fn too_large(&mut self, max_bytes: usize) -> ClientError {
        self.fail(
            ClientErrorKind::TooLarge,
            format!("the response body exceeds {max_bytes} bytes"),
        )
    }

    /// Records a failure and closes the connection.
    fn fail(&mut self, kind: ClientErrorKind, message: String) -> ClientError {
        let peer = self.conn.take().map(|c| c.peer);
        let e = ClientError::new(kind, &self.key.authority, message).at(peer);
        self.failed = Some(e.clone());
        e
    }

    /// The body ended: pools the connection when it can carry another exchange.
    fn finish(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        // Bytes after the body would be a response to no request: do not reuse.
        if self.reusable && conn.rbuf.is_empty() {
            let key = self.key.clone();
            self.client
                .pool
                .borrow_mut()
                .checkin(key, conn, &self.client.settings, Instant::now());
        }
    }
}

/// Body pieces joined into one buffer. A body that came in one piece (the usual case for a
/// small one) is that piece, without a copy.
#[derive(Default)]
pub(super) struct Joined {
    first: Option<Bytes>,
    rest: BytesMut,
    len: u64,
}

impl Joined {
    /// Bytes pushed so far.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Appends `data`.
    pub(super) fn push(&mut self, data: Bytes) {
        self.len += data.len() as u64;
        match self.first.take() {
            None if self.rest.is_empty() => self.first = Some(data),
            earlier => {
                if let Some(earlier) = earlier {
                    self.rest.reserve(earlier.len() + data.len());
                    self.rest.extend_from_slice(&earlier);
                }
                self.rest.extend_from_slice(&data);
            }
        }
    }

    /// The whole body.
    pub(super) fn into_bytes(self) -> Bytes {
        match self.first {
            Some(only) => only,
            None => self.rest.freeze(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(
            split_authority("api.openai.com", true),
            Ok(("api.openai.com", 443))
        );
        assert_eq!(
            split_authority("localhost:8080", false),
            Ok(("localhost", 8080))
        );
        assert_eq!(split_authority("10.0.0.9", false), Ok(("10.0.0.9", 80)));
        assert_eq!(split_authority("[::1]:9000", true), Ok(("[::1]", 9000)));
        assert_eq!(split_authority("[::1]", true), Ok(("[::1]", 443)));
        assert_eq!(split_authority("::1", false), Ok(("::1", 80)));
        assert_eq!(split_authority("host:", false), Ok(("host", 80)));
        assert!(split_authority("", true).is_err());
        assert!(split_authority(":80", true).is_err());
        assert!(split_authority("host:0", true).is_err());
        assert!(split_authority("host:99999", true).is_err());
        assert!(split_authority("[::1", true).is_err());
        assert!(split_authority("[::1]x", true).is_err());
        assert!(split_authority("[nope]:1", true).is_err());
        assert!(split_authority("a b:1", true).is_err());
        assert!(split_authority("a\r\nb", true).is_err());
    }

    fn request(headers: &[(&'static str, &'static str)], body: &'static str) -> UpstreamRequest {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(*n, v.parse().unwrap());
        }
        UpstreamRequest {
            method: Method::POST,
            tls: false,
            authority: "h:1".into(),
            path_and_query: "/v1/chat".into(),
            headers: map,
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn request_encoding() {
        let w = encode(&request(
            &[
                ("content-type", "application/json"),
                ("content-length", "999"),
                ("connection", "close"),
                ("host", "evil"),
            ],
            "{}",
        ))
        .unwrap();
        assert_eq!(
            &w.head[..],
            &b"POST /v1/chat HTTP/1.1\r\nhost: h:1\r\ncontent-type: application/json\r\naccept-encoding: identity\r\nuser-agent: headwater\r\ncontent-length: 2\r\n\r\n"[..]
        );
        assert_eq!(&w.body[..], b"{}");
        let w = encode(&request(
            &[("user-agent", "x"), ("accept-encoding", "gzip")],
            "",
        ))
        .unwrap();
        let head = std::str::from_utf8(&w.head).unwrap();
        assert!(head.contains("user-agent: x\r\n") && !head.contains("headwater"));
        assert!(head.contains("accept-encoding: gzip\r\n") && !head.contains("identity"));
        assert!(head.contains("content-length: 0\r\n"));
        let mut bad = request(&[], "");
        bad.path_and_query = "/a b".into();
        assert!(encode(&bad).is_err());
        bad.path_and_query = "http://x/".into();
        assert!(encode(&bad).is_err());
    }

    #[test]
    fn llm_error_kinds() {
        let e = |k| ClientError::new(k, "a:1", "m").to_llm_error();
        assert_eq!(e(ClientErrorKind::HeadTimeout).kind, ErrorKind::Timeout);
        let connect = e(ClientErrorKind::Connect);
        assert_eq!(connect.kind, transport_error("").kind);
        assert!(!connect.message.contains("a:1"), "{}", connect.message);
        assert_eq!(
            e(ClientErrorKind::Protocol).kind,
            ErrorKind::MalformedResponse
        );
        assert!(e(ClientErrorKind::Reset).retryable());
        assert!(!ClientError::new(ClientErrorKind::TooLarge, "a", "m").retryable());
    }
}
