//! Per-shard upstream connection pool: idle keep-alive connections by endpoint address, owned by
//! one shard and never shared, so checkout and checkin are a vector pop and push. Connections
//! are boxed from the moment they are opened, so that handing one around (checkout, an
//! exchange, checkin) moves a pointer rather than the connection's few hundred bytes.
//!
//! Connections are kept LIFO (the most recently used one is the most likely to be alive and
//! warm), capped per endpoint, and dropped when idle longer than the idle timeout or older than
//! the maximum lifetime: lazily at checkout, and by a periodic sweep so idle sockets do not
//! linger after traffic stops. Keyed by address, so a config reload that keeps an endpoint keeps
//! its pooled connections.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fxhash::FxHashMap;
use headwater_http1::ResponseHead;
use monoio::net::TcpStream;

use crate::config::PoolConfig;

/// An upstream connection with its read buffer.
pub struct UpstreamConn {
    /// The socket.
    pub stream: TcpStream,
    /// The endpoint it is connected to.
    pub addr: SocketAddr,
    /// Bytes read from the upstream and not consumed yet.
    pub rbuf: BytesMut,
    /// A response head to parse the next response into (its index storage is reused); empty
    /// while the connection is idle.
    pub head: ResponseHead,
    /// When it was established.
    pub created: Instant,
    /// When it was last returned to the pool.
    pub idle_since: Instant,
    /// Requests sent on it so far.
    pub requests: u64,
    /// Its slot in the circuit breakers, given back when the connection is dropped.
    pub(crate) ticket: Option<super::conn::ConnTicket>,
}

impl UpstreamConn {
    /// Wraps a freshly connected socket.
    pub fn new(stream: TcpStream, addr: SocketAddr) -> Box<Self> {
        let now = Instant::now();
        Box::new(UpstreamConn {
            stream,
            addr,
            // Allocated by the first read (see `Pool::checkin`).
            rbuf: BytesMut::new(),
            head: ResponseHead::default(),
            created: now,
            idle_since: now,
            requests: 0,
            ticket: None,
        })
    }
}

struct Idle {
    // Boxed although in a Vec: a connection is checked out and moved around by value, and a
    // box makes each of those moves a pointer's.
    #[allow(clippy::vec_box)]
    conns: Vec<Box<UpstreamConn>>,
    idle_timeout: Duration,
    max_lifetime: Option<Duration>,
}

/// The pool of one shard.
#[derive(Default)]
pub struct Pool {
    /// Hashed with FxHash rather than std's SipHash: checkout and checkin hash an address on
    /// every request, and the keys are the configured endpoints, not input a client controls.
    idle: FxHashMap<SocketAddr, Idle>,
    /// Read buffers taken from connections as they went idle, handed to connections as they
    /// are checked out: an idle connection holds no buffer, and a busy one gets a buffer that is
    /// already allocated (and already shared, so splitting a head off it allocates nothing).
    spare_bufs: Vec<BytesMut>,
}

/// Most read buffers a pool keeps aside (each about `BODY_READ_SPARE`).
const SPARE_BUFS: usize = 64;

fn expired(
    c: &UpstreamConn,
    now: Instant,
    idle_timeout: Duration,
    max_lifetime: Option<Duration>,
) -> bool {
    now.duration_since(c.idle_since) >= idle_timeout
        || max_lifetime.is_some_and(|l| now.duration_since(c.created) >= l)
}

impl Pool {
    /// Takes an idle connection to `addr` that has not expired under `cfg`.
    pub fn checkout(
        &mut self,
        addr: SocketAddr,
        cfg: &PoolConfig,
        now: Instant,
    ) -> Option<Box<UpstreamConn>> {
        let idle = self.idle.get_mut(&addr)?;
        while let Some(mut c) = idle.conns.pop() {
            if !expired(&c, now, cfg.idle_timeout, cfg.max_lifetime) {
                if let Some(buf) = self.spare_bufs.pop() {
                    c.rbuf = buf;
                }
                return Some(c);
            }
        }
        None
    }

    /// Returns a connection whose last exchange completed cleanly; dropped (closed) if the
    /// endpoint already has `max_idle_per_endpoint` idle connections or it is too old.
    pub fn checkin(&mut self, mut conn: Box<UpstreamConn>, cfg: &PoolConfig, now: Instant) {
        if cfg.max_idle_per_endpoint == 0
            || cfg
                .max_lifetime
                .is_some_and(|l| now.duration_since(conn.created) >= l)
        {
            return;
        }
        conn.idle_since = now;
        if conn.rbuf.is_empty() {
            // An idle connection holds no read buffer (a thousand pooled connections cost no
            // buffer memory); up to SPARE_BUFS of them are kept for the next checkouts.
            let buf = std::mem::take(&mut conn.rbuf);
            let room = super::conn::BODY_READ_SPARE;
            if self.spare_bufs.len() < SPARE_BUFS && (room / 2..=2 * room).contains(&buf.capacity())
            {
                self.spare_bufs.push(buf);
            }
        }
        let idle = self.idle.entry(conn.addr).or_insert_with(|| Idle {
            conns: Vec::new(),
            idle_timeout: cfg.idle_timeout,
            max_lifetime: cfg.max_lifetime,
        });
        idle.idle_timeout = cfg.idle_timeout;
        idle.max_lifetime = cfg.max_lifetime;
        if idle.conns.len() < cfg.max_idle_per_endpoint {
            idle.conns.push(conn);
        }
    }

    /// Closes expired idle connections; returns how many.
    pub fn sweep(&mut self, now: Instant) -> usize {
        let mut closed = 0;
        self.idle.retain(|_, idle| {
            let before = idle.conns.len();
            let (t, l) = (idle.idle_timeout, idle.max_lifetime);
            idle.conns.retain(|c| !expired(c, now, t, l));
            closed += before - idle.conns.len();
            !idle.conns.is_empty()
        });
        closed
    }

    /// Closes every idle connection to endpoints not in `keep`.
    pub fn retain_endpoints(&mut self, keep: impl Fn(&SocketAddr) -> bool) {
        self.idle.retain(|addr, _| keep(addr));
    }

    /// Closes every idle connection (drain).
    pub fn clear(&mut self) {
        self.idle.clear();
    }

    /// Idle connections per endpoint.
    pub fn idle_counts(&self) -> impl Iterator<Item = (SocketAddr, usize)> + '_ {
        self.idle.iter().map(|(a, i)| (*a, i.conns.len()))
    }
}
