//! The per-connection proxy state machine: read a request head, route it, pick an endpoint,
//! check out (or open) an upstream connection, stream the request body up and the response
//! body down, return the upstream connection to the pool, and go again while the connection is
//! kept alive. Pipelined requests are answered in order because they are taken one at a time
//! from the same read buffer.
//!
//! Bodies are streamed through bounded buffers in both directions, never held whole. Every wait
//! has a deadline: client header (slowloris), client idle keep-alive, client body, upstream
//! connect, upstream response header, upstream idle between body bytes, and the optional total
//! request time. Reads and writes use the cancel-safe timed I/O of [`crate::io`].
//!
//! Errors say where they came from: [`Failure`] is the gateway's own answer to the client
//! (with its status); a failure after the response head was sent can only close the connection.

use std::cell::Cell;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use headwater_health::Outcome;
use headwater_http1::{
    chunked, encode_proxy_request, encode_proxy_response, request_framing, response_framing,
    BodyDecoder, BodyKind, ClientConnection, Decoded, Forwarding, RequestEdits, RequestHead,
    RequestParser, ResponseEdits, ResponseHead, ResponseParser, CONTINUE_100,
};
use http::{Method, StatusCode, Version};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Canceller, Splitable};
use monoio::net::TcpStream;
use monoio::time::Sleep;

use super::pool::UpstreamConn;
use super::reply::{write_failure, Failure};
use super::upstreams::{Refusal, Unavailable};
use super::{Generation, Shard};
use crate::access_log::Entry;
use crate::config::{ClusterConfig, HashKey, PathMatch};
use crate::io::{
    read_or_drop, read_until, write_all_or_drop, write_vectored_all_or_drop, BytesVec, Deadline,
    ReadOutcome,
};
use crate::metrics::TimeoutKind;
use crate::metrics::{ClusterId, Unavailability};

/// The read buffer a connection waits for its next request with. Small, because an idle
/// keep-alive connection keeps it in flight (io_uring owns it until data arrives); a head
/// that does not fit grows it.
const IDLE_READ_CAPACITY: usize = 1024;
/// Body data at least this large is written straight from the buffer it was read into
/// (`writev` with the pending head) instead of being copied into the write buffer.
const ZERO_COPY_MIN: usize = 4 * 1024;
/// Room for what the encoder adds to a forwarded response head (`Via`, `Connection`, the framing
/// header), with some to spare.
const HEAD_EXTRA: usize = 128;
/// A message part that is at most this long with the rest of its fixed-length body is held
/// back until that rest has arrived, and sent with it (see `pump`).
const HOLD_MAX: usize = 64 * 1024;
/// Flush the write buffer once it holds this much.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Read buffers are topped up to at least this much spare room before a body read.
pub(crate) const BODY_READ_SPARE: usize = 64 * 1024;
/// The most a body read asks for at once (for the rest of a large fixed-length body).
const BODY_READ_MAX: usize = 128 * 1024;
/// A request whose head and body together are at most this large is kept until the response
/// head arrives, so it can be replayed on a new connection if a pooled one turns out dead.
const REPLAY_MAX: usize = 64 * 1024;
/// Connect failures one request may go through (each on a different endpoint) before the
/// gateway gives up on it.
const MAX_CONNECT_FAILURES: usize = 8;
/// Endpoints one request remembers having tried.
const MAX_TRIED: usize = 16;
/// How often a queued request (`queue = {...}`) looks for an endpoint that came back.
const QUEUE_POLL: Duration = Duration::from_millis(10);

/// A client connection: its socket, the canceller of its timed reads, and the timer of its
/// task, all kept for the connection's life ([`crate::io`]; writes are plain operations, the
/// connection is closed when one fails or times out). Its requests' upstream
/// reads and writes run in the same task, one at a time, and use the same timer.
struct ClientConn<'t> {
    stream: TcpStream,
    read_cancel: Canceller,
    timer: Pin<&'t mut Sleep>,
}

/// Serves one client connection until it closes, errs, or the shard drains.
pub(crate) async fn serve(shard: Rc<Shard>, client: TcpStream, peer: SocketAddr) {
    let timer = pin!(crate::io::timer());
    let mut client = ClientConn {
        stream: client,
        read_cancel: Canceller::new(),
        timer,
    };
    shard.active.set(shard.active.get() + 1);
    shard.metrics().connection_opened();
    let mut rbuf = BytesMut::with_capacity(IDLE_READ_CAPACITY);
    let mut wbuf = BytesMut::new();
    // One head per connection, parsed into again for every request (its index storage is
    // reused, so a request head costs no allocation).
    let mut head = RequestHead::default();
    let mut first = true;
    loop {
        let generation = shard.generation();
        match read_head(
            &shard,
            &generation,
            &mut client,
            &mut rbuf,
            &mut head,
            first,
        )
        .await
        {
            Ok(()) => {}
            Err(HeadEnd::Closed) => break,
            Err(HeadEnd::Reply(failure, version)) => {
                write_failure(
                    failure,
                    None,
                    None,
                    None,
                    version,
                    ClientConnection::Close,
                    &mut wbuf,
                );
                if let Failure::BadRequest(e) = failure {
                    shard.metrics().bad_request(e.status().as_u16());
                }
                flush_client(
                    &mut client,
                    &mut wbuf,
                    generation.config.server.timeouts.client_body,
                )
                .await;
                break;
            }
        };
        first = false;
        let started = Instant::now();
        // The request pins the generation in force when its head arrived (the connection may
        // have idled across a reload).
        let generation = shard.generation();
        // The request's state machine is large; boxing it keeps it out of the connection's
        // own future, which is all an idle keep-alive connection holds between requests.
        let request = Box::pin(handle(
            &shard,
            &generation,
            &mut client,
            peer,
            &mut rbuf,
            &mut wbuf,
            &head,
            started,
        ));
        match request.await {
            Next::KeepAlive if !shard.drain.fired() => {
                // Between requests the connection holds as little memory as possible: the
                // read that waits for the next request gets a small buffer of its own, and
                // neither the previous head nor the write buffer pin theirs. That buffer is
                // the one it has, taken back whole without allocating, when it is small and
                // nothing else holds a part of it (the head was split off it); else a new one.
                head.clear();
                wbuf = BytesMut::new();
                if rbuf.is_empty()
                    && !(rbuf.try_reclaim(IDLE_READ_CAPACITY)
                        && rbuf.capacity() <= IDLE_READ_CAPACITY)
                {
                    rbuf = BytesMut::with_capacity(IDLE_READ_CAPACITY);
                }
                continue;
            }
            Next::Upgrade(upstream, idle) => {
                Box::pin(tunnel(client, *upstream, rbuf, idle)).await;
                break;
            }
            _ => break,
        }
    }
    shard.metrics().connection_closed();
    shard.active.set(shard.active.get() - 1);
}

enum HeadEnd {
    /// The client went away, idled out, or the shard is draining: close without answering.
    Closed,
    /// Answer with this failure, then close.
    Reply(Failure, Version),
}

/// Reads until a complete request head is parsed from `rbuf`.
async fn read_head(
    shard: &Shard,
    generation: &Generation,
    client: &mut ClientConn<'_>,
    rbuf: &mut BytesMut,
    head: &mut RequestHead,
    first: bool,
) -> Result<(), HeadEnd> {
    let timeouts = &generation.config.server.timeouts;
    let mut parser = RequestParser::new(generation.limits);
    let mut deadline: Option<Instant> = None;
    loop {
        if !rbuf.is_empty() {
            match parser.parse_into(rbuf, head) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => return Err(HeadEnd::Reply(Failure::BadRequest(e), Version::HTTP_11)),
            }
            deadline.get_or_insert_with(|| Instant::now() + timeouts.client_header);
        }
        let buf = std::mem::take(rbuf);
        let (outcome, buf) = match deadline {
            Some(d) => {
                let stop = Deadline::at(client.timer.as_mut(), d);
                read_until(&mut client.stream, buf, stop, &mut client.read_cancel).await
            }
            None => {
                // Waiting for the first byte of a request: the connection is idle, and a drain
                // ends the wait at once.
                let wait = if first {
                    timeouts.client_header
                } else {
                    timeouts.client_idle
                };
                if shard.drain.fired() {
                    *rbuf = buf;
                    return Err(HeadEnd::Closed);
                }
                let stop = race(
                    Deadline::after(client.timer.as_mut(), wait),
                    shard.drain.wait(),
                );
                read_until(&mut client.stream, buf, stop, &mut client.read_cancel).await
            }
        };
        *rbuf = buf;
        match outcome {
            ReadOutcome::Read(0) | ReadOutcome::Err(_) => return Err(HeadEnd::Closed),
            ReadOutcome::Read(_) => {}
            ReadOutcome::TimedOut if deadline.is_some() => {
                shard.metrics().timeout(TimeoutKind::ClientHeader);
                return Err(HeadEnd::Reply(
                    Failure::ClientHeaderTimeout,
                    Version::HTTP_11,
                ));
            }
            ReadOutcome::TimedOut => {
                if !shard.drain.fired() {
                    shard.metrics().timeout(if first {
                        TimeoutKind::ClientHeader
                    } else {
                        TimeoutKind::ClientIdle
                    });
                }
                return Err(HeadEnd::Closed);
            }
        }
    }
}

/// Resolves when either future does.
async fn race(a: impl std::future::Future<Output = ()>, b: impl std::future::Future<Output = ()>) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    std::future::poll_fn(|cx| {
        if a.as_mut().poll(cx).is_ready() || b.as_mut().poll(cx).is_ready() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// What the connection does after a request.
enum Next {
    KeepAlive,
    Close,
    /// The upstream switched protocols: tunnel bytes both ways with this idle timeout.
    Upgrade(Box<UpstreamConn>, Duration),
}

/// What one request did, for metrics and the access log.
struct Record {
    status: Cell<u16>,
    bytes_in: Cell<u64>,
    bytes_out: Cell<u64>,
    upstream: Cell<Option<SocketAddr>>,
    upstream_started: Cell<Option<Instant>>,
    retries: Cell<u32>,
    /// Details of a 503 of the gateway's own (no healthy upstream, circuit open).
    unavailable: std::cell::RefCell<Option<Unavailable>>,
    /// The response head was (at least partly) written to the client: a failure can no longer
    /// be answered, only closed.
    committed: Cell<bool>,
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    shard: &Rc<Shard>,
    generation: &Generation,
    client: &mut ClientConn<'_>,
    peer: SocketAddr,
    rbuf: &mut BytesMut,
    wbuf: &mut BytesMut,
    head: &RequestHead,
    started: Instant,
) -> Next {
    let config = &generation.config;
    let record = Record {
        status: Cell::new(0),
        bytes_in: Cell::new(head.as_bytes().len() as u64),
        bytes_out: Cell::new(0),
        upstream: Cell::new(None),
        upstream_started: Cell::new(None),
        retries: Cell::new(0),
        unavailable: Default::default(),
        committed: Cell::new(false),
    };
    let mut llm_record: Option<String> = None;
    // A reverse proxy does not open arbitrary tunnels.
    let route_index = if head.method() == Method::CONNECT {
        None
    } else {
        config.match_route(head.method(), head.authority(), head.path(), |name| {
            head.header(name.as_str())
        })
    };
    let (next, route, cluster) = match route_index {
        None => {
            // The body (if any) was not read: the connection cannot be reused.
            let failure = if head.method() == Method::CONNECT {
                Failure::ConnectMethod
            } else {
                Failure::NoRoute
            };
            let keep =
                head.keep_alive() && !head.body_kind().has_body() && failure == Failure::NoRoute;
            let next = answer(
                client, wbuf, &record, failure, None, None, head, keep, config,
            )
            .await;
            (next, None, None)
        }
        Some(ri) if config.routes[ri].cluster().is_none() => {
            let served =
                crate::llm::serve::serve(shard, generation, &mut client.stream, rbuf, wbuf, head)
                    .await;
            record.status.set(served.status);
            record.bytes_in.set(record.bytes_in.get() + served.body_in);
            record.bytes_out.set(served.bytes_out);
            record.retries.set(served.retries);
            llm_record = served.record;
            let next = if served.keep_alive {
                Next::KeepAlive
            } else {
                Next::Close
            };
            (next, Some(ri), None)
        }
        Some(ri) => {
            let route = &config.routes[ri];
            let cluster_index = route.cluster().expect("a proxy route has a cluster");
            let cluster_name = config.clusters[cluster_index].name.as_str();
            let exchange = exchange(
                shard, generation, ri, client, peer, rbuf, wbuf, head, &record, started,
            );
            let result = match route.timeouts.total {
                Some(total) => match monoio::time::timeout(total, exchange).await {
                    Ok(r) => r,
                    Err(_) => {
                        shard.metrics().timeout(TimeoutKind::Total);
                        // The exchange was dropped mid-way; its buffers may be gone.
                        wbuf.clear();
                        rbuf.clear();
                        Err(Failure::TotalTimeout)
                    }
                },
                None => exchange.await,
            };
            let next = match result {
                Ok(next) => next,
                Err(failure) if !record.committed.get() => {
                    // An upstream-side failure of a request without a body leaves nothing of it
                    // unread: the client keeps its connection (no reconnect per fast 503).
                    let keep = failure.is_upstream_side()
                        && matches!(head.body_kind(), BodyKind::None)
                        && head.keep_alive()
                        && !shard.drain.fired();
                    answer(
                        client,
                        wbuf,
                        &record,
                        failure,
                        Some(&route.name),
                        Some(cluster_name),
                        head,
                        keep,
                        config,
                    )
                    .await
                }
                Err(_) => Next::Close,
            };
            (next, Some(ri), Some(cluster_index))
        }
    };
    let elapsed = started.elapsed();
    shard.metrics().request(
        route.map(|r| generation.route_ids[r]),
        cluster.map(|c| generation.cluster_ids[c]),
        record.status.get(),
        elapsed,
        record.bytes_in.get(),
        record.bytes_out.get(),
    );
    let mut log = shard.log.borrow_mut();
    if log.enabled() {
        log.log(&Entry {
            client: peer,
            method: head.method().as_str(),
            path: head.target(),
            status: record.status.get(),
            bytes_in: record.bytes_in.get(),
            bytes_out: record.bytes_out.get(),
            upstream: record.upstream.get(),
            upstream_time: record.upstream_started.get().map(|t| t.elapsed()),
            total_time: elapsed,
            retries: record.retries.get(),
            route: route.map(|r| config.routes[r].name.as_str()),
            time: SystemTime::now(),
            llm: llm_record.as_deref(),
        });
    }
    next
}

/// Writes the gateway's own answer for `failure`.
#[allow(clippy::too_many_arguments)]
async fn answer(
    client: &mut ClientConn<'_>,
    wbuf: &mut BytesMut,
    record: &Record,
    failure: Failure,
    route: Option<&str>,
    cluster: Option<&str>,
    head: &RequestHead,
    keep: bool,
    config: &crate::config::Config,
) -> Next {
    let conn = if keep {
        ClientConnection::KeepAlive
    } else {
        ClientConnection::Close
    };
    wbuf.clear();
    let unavailable = record.unavailable.borrow_mut().take();
    write_failure(
        failure,
        route,
        cluster,
        unavailable.as_ref(),
        head.version(),
        conn,
        wbuf,
    );
    record.status.set(failure.status().as_u16());
    record
        .bytes_out
        .set(record.bytes_out.get() + wbuf.len() as u64);
    if flush_client(client, wbuf, config.server.timeouts.client_body).await && keep {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// Writes `wbuf` to the client; returns whether it all went out.
async fn flush_client(client: &mut ClientConn<'_>, wbuf: &mut BytesMut, timeout: Duration) -> bool {
    write_out(&mut client.stream, client.timer.as_mut(), wbuf, timeout)
        .await
        .is_ok()
}

/// Outcome of sending the request and reading the response head on one upstream connection.
enum Attempt {
    Response(ResponseHead),
    /// A pooled connection was found dead before any response byte: try a fresh one.
    Stale,
}

/// Proxies one routed request, whose head was complete at `started`. `Err` is a failure the
/// client has not been answered for yet (unless `record.committed`).
#[allow(clippy::too_many_arguments)]
async fn exchange(
    shard: &Rc<Shard>,
    generation: &Generation,
    route_index: usize,
    client: &mut ClientConn<'_>,
    peer: SocketAddr,
    rbuf: &mut BytesMut,
    wbuf: &mut BytesMut,
    head: &RequestHead,
    record: &Record,
    started: Instant,
) -> Result<Next, Failure> {
    let config = &generation.config;
    let route = &config.routes[route_index];
    let cluster_index = route.cluster().expect("a proxy route has a cluster");
    let cluster = &config.clusters[cluster_index];
    let timeouts = &route.timeouts;
    let server = &config.server;
    let metrics = shard.metrics();

    // The upstream request head.
    let upgrade = head.upgrade().is_some();
    let body_kind = head.body_kind();
    let framing = request_framing(body_kind);
    let rewritten = match (&route.rewrite_prefix, &route.matcher.path) {
        (Some(new), Some(PathMatch::Prefix(prefix))) => {
            let pq = head.path_and_query();
            pq.strip_prefix(prefix.as_bytes())
                .map(|rest| [new.as_bytes(), rest])
        }
        _ => None,
    };
    let default_host = cluster
        .endpoints
        .first()
        .and_then(|e| e.host.as_deref())
        .map(str::as_bytes);
    let edits = RequestEdits {
        target: rewritten,
        default_host,
        upgrade,
        strip_expect: true,
        remove: &route.request_headers.remove,
        add: &route.request_headers.add,
    };
    let fwd = Forwarding {
        via: server.forwarded.via.then_some(&b"headwater"[..]),
        xff: generation.xff,
        client_ip: Some(peer.ip()),
        proto: server.forwarded.x_forwarded_proto.then_some(&b"http"[..]),
        forwarded_host: server.forwarded.x_forwarded_host,
    };
    let mut ubuf = BytesMut::with_capacity(head.as_bytes().len() + 256);
    encode_proxy_request(head, framing, &edits, &fwd, &mut ubuf);
    let head_len = ubuf.len();

    // A body that is already whole in the read buffer goes out with the head, and the request
    // stays replayable.
    let mut body_sent_with_head = false;
    if let BodyKind::Length(n) = body_kind {
        if n as usize <= rbuf.len() && head_len + n as usize <= REPLAY_MAX {
            ubuf.extend_from_slice(&rbuf.split_to(n as usize));
            record.bytes_in.set(record.bytes_in.get() + n);
            body_sent_with_head = true;
        }
    }
    let streams_body = framing.has_body() && !body_sent_with_head;
    let replay: Option<Bytes> = (!streams_body).then(|| ubuf.split().freeze());

    // Which tries may be retried once the request reached an upstream: idempotent methods,
    // or any method when the route says so, and only with the request kept for replay.
    let retry = &route.retry;
    let idempotent = matches!(
        *head.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    let replayable = replay.is_some() && (idempotent || retry.non_idempotent);
    let per_try = retry.per_try_timeout.unwrap_or(timeouts.response_header);
    // Hedging: idempotent requests only, kept for replay, never an upgrade.
    let hedge_after = retry
        .hedge_after
        .filter(|_| idempotent && replay.is_some() && !upgrade);

    let mut ci = cluster_index;
    let mut flight = InFlight::admit(shard, generation, ci, record)?;
    let mut key = hash_key(&config.clusters[ci], head, peer);
    let mut tried: [usize; MAX_TRIED] = [usize::MAX; MAX_TRIED];
    let mut ntried = 0usize;
    let mut sent_tries = 0u32;
    let mut connect_failures = 0usize;
    let mut last: Option<Failure> = None;
    let mut fresh_only = false;
    let mut continue_sent = false;
    let queue_until = route.queue.map(|q| Instant::now() + q);
    // The first pick follows the start of the request without a wait: its clock reading serves.
    let mut first_now = Some(started);
    let (mut upstream, response) = loop {
        let cluster = &config.clusters[ci];
        let cluster_id = generation.cluster_ids[ci];
        let now = first_now.take().unwrap_or_else(Instant::now);
        // Pick an endpoint and get a connection to it.
        let picked = shard.pick(generation, ci, &tried[..ntried], key, now);
        let Some((mut ei, panic)) = picked else {
            if let Some(fallback) = route.fallback.filter(|f| *f != ci) {
                metrics.fallback(cluster_id);
                flight.finish(None);
                ci = fallback;
                flight = InFlight::admit(shard, generation, ci, record)?;
                key = hash_key(&config.clusters[ci], head, peer);
                ntried = 0;
                continue;
            }
            if let Some(failure) = last {
                // Every endpoint that could serve was tried in this request: what happened to
                // the last try is the most precise answer (the next requests get the fast 503
                // while the endpoints are quarantined or ejected).
                return Err(failure);
            }
            if let Some(until) = queue_until {
                if now < until {
                    // Wait for an endpoint to come back (the health snapshot or a quarantine
                    // ending), polling the shard's view.
                    monoio::time::sleep(QUEUE_POLL.min(until - now)).await;
                    let _ = shard.generation();
                    ntried = 0;
                    continue;
                }
            }
            return Err(refuse(
                shard,
                generation,
                ci,
                record,
                Refusal::NoEndpoint,
                now,
            ));
        };
        if panic {
            metrics.panic_pick(cluster_id);
        }
        if shard.with_cluster(generation, ci, |c| c.admit_endpoint(ei, now)) == Some(false) {
            // Its breaker refused (at its limit, or a half-open trial is out): another one.
            push_tried(&mut tried, &mut ntried, ei);
            continue;
        }
        let addr = cluster.endpoints[ei].address;
        record.upstream.set(Some(addr));
        let mut attempt_guard = Trying::start(shard, generation, ci, ei, now);
        let obtained = obtain(
            shard,
            generation,
            ci,
            ei,
            !fresh_only,
            timeouts.connect,
            now,
        )
        .await;
        fresh_only = false;
        let (mut conn, reused) = match obtained {
            Ok(c) => c,
            Err(NoConn::BreakerOpen) => {
                attempt_guard.finish(None, Instant::now());
                flight.finish(None);
                return Err(refuse(
                    shard,
                    generation,
                    ci,
                    record,
                    Refusal::BreakerOpen,
                    now,
                ));
            }
            Err(NoConn::Connect(outcome)) => {
                attempt_guard.finish(Some(outcome), Instant::now());
                push_tried(&mut tried, &mut ntried, ei);
                connect_failures += 1;
                let failure = if outcome == Outcome::ConnectTimeout {
                    Failure::ConnectTimeout
                } else {
                    Failure::ConnectFailed
                };
                last = Some(failure);
                // Nothing was sent: another endpoint is always safe. Like the replay of a dead
                // pooled connection, this is not taken from the retry budget (the request
                // reaches at most one upstream, so it adds no load); MAX_CONNECT_FAILURES
                // bounds it.
                if connect_failures >= MAX_CONNECT_FAILURES {
                    return Err(failure);
                }
                flight.replay(record);
                continue;
            }
        };
        conn.requests += 1;
        // A pooled connection was taken a moment ago at `now`; a new one took its connect time.
        let mut sent_at = if reused { now } else { Instant::now() };
        record.upstream_started.set(Some(sent_at));

        // 100-continue: the upstream is reachable, so let the client send its body. We answer
        // it ourselves (and strip Expect upstream), as the body is streamed by us.
        if head.expects_continue() && streams_body && !continue_sent {
            wbuf.put_slice(CONTINUE_100);
            if !flush_client(client, wbuf, server.timeouts.client_body).await {
                return Ok(Next::Close);
            }
            continue_sent = true;
        }

        let attempt = match (&replay, hedge_after) {
            (Some(bytes), None) => {
                let timer = client.timer.as_mut();
                send_whole(&mut conn, bytes.clone(), reused, per_try, timer).await
            }
            (Some(bytes), Some(after)) => {
                let first = Try {
                    endpoint: ei,
                    reused,
                };
                // Boxed: its state (two tries and a connect) would otherwise enlarge every
                // request's future, hedged or not, and be copied with it.
                let raced = Box::pin(hedged(
                    shard,
                    generation,
                    ci,
                    first,
                    (tried, ntried),
                    key,
                    &mut flight,
                    record,
                    &mut conn,
                    bytes,
                    per_try,
                    after,
                    timeouts.connect,
                    client.timer.as_mut(),
                ))
                .await;
                match raced {
                    Raced::First { attempt, hedge } => {
                        if let Some(h) = hedge {
                            push_tried(&mut tried, &mut ntried, h);
                            sent_tries += 1;
                        }
                        attempt
                    }
                    Raced::Hedge(win) => {
                        let HedgeWin {
                            first,
                            endpoint,
                            conn: hedge_conn,
                            guard,
                            sent_at: hedge_sent_at,
                            response,
                        } = *win;
                        // The first try lost: what it came to (if anything) is its outcome;
                        // cancelled unanswered, it leaves the balancer a latency of at least
                        // its wait, so a slow endpoint is seen as slow.
                        let lost_at = Instant::now();
                        match first {
                            Some(Err(outcome)) => attempt_guard.finish(Some(outcome), lost_at),
                            Some(Ok(_)) => attempt_guard.finish(None, lost_at),
                            None => attempt_guard.finish_unanswered(lost_at - sent_at, lost_at),
                        }
                        push_tried(&mut tried, &mut ntried, ei);
                        sent_tries += 1;
                        // The hedge's connection, endpoint and clock from here on; the first
                        // connection is closed (it has a request outstanding).
                        conn = hedge_conn;
                        ei = endpoint;
                        attempt_guard = guard;
                        sent_at = hedge_sent_at;
                        record.upstream.set(Some(cluster.endpoints[ei].address));
                        record.upstream_started.set(Some(sent_at));
                        Ok(Attempt::Response(response))
                    }
                }
            }
            (None, _) => {
                // Stream the request body: head first (coalesced with the first body bytes).
                let mut dec = BodyDecoder::new(body_kind);
                let mut head_buf = std::mem::take(&mut ubuf);
                let pumped = pump(
                    &mut client.stream,
                    rbuf,
                    &mut dec,
                    &mut conn.stream,
                    framing,
                    &mut head_buf,
                    server.timeouts.client_body,
                    timeouts.upstream_idle,
                    client.timer.as_mut(),
                )
                .await;
                match pumped {
                    Ok(n) => record.bytes_in.set(record.bytes_in.get() + n),
                    Err(PumpError::ReadTimeout) => {
                        metrics.timeout(TimeoutKind::ClientBody);
                        return Err(Failure::ClientBodyTimeout);
                    }
                    Err(PumpError::ReadClosed | PumpError::ReadFailed) => return Ok(Next::Close),
                    Err(PumpError::Decode(e)) => return Err(Failure::BadRequest(e)),
                    Err(PumpError::WriteFailed) => {
                        attempt_guard.finish(Some(Outcome::Reset), Instant::now());
                        return Err(Failure::UpstreamReset);
                    }
                }
                read_response_head(&mut conn, false, per_try, client.timer.as_mut()).await
            }
        };
        let (failure, retryable) = match attempt {
            Ok(Attempt::Response(resp)) => {
                let status = resp.status().as_u16();
                let answered = Instant::now();
                attempt_guard.finish(
                    Some(Outcome::Response {
                        status,
                        latency: answered - sent_at,
                    }),
                    answered,
                );
                sent_tries += 1;
                push_tried(&mut tried, &mut ntried, ei);
                let retry_status = retry.on.matches_status(status)
                    && replayable
                    && sent_tries < retry.attempts
                    && shard.has_alternative(generation, ci, &tried[..ntried])
                    && flight.begin_retry(record);
                if !retry_status {
                    break (conn, resp);
                }
                // Drop this answer (and its connection) and try another endpoint.
                drop(conn);
                backoff(retry, sent_tries).await;
                continue;
            }
            Ok(Attempt::Stale) => {
                // The pooled connection had been closed by the upstream; nothing reached it.
                // Not the endpoint's failure: no outcome is recorded.
                attempt_guard.finish(None, Instant::now());
                let mut avoid = tried;
                let mut n = ntried;
                push_tried(&mut avoid, &mut n, ei);
                if shard.has_alternative(generation, ci, &avoid[..n]) {
                    tried = avoid;
                    ntried = n;
                } else {
                    fresh_only = true;
                }
                // Counted as a retry, but not taken from the retry budget: the request never
                // reached an upstream, so replaying it adds no load. (Taking it let one request
                // that found dead pooled connections use up a budget of 3, and concurrent
                // requests then failed with a healthy endpoint or a fallback still available.)
                flight.replay(record);
                continue;
            }
            Err(outcome) => {
                attempt_guard.finish(Some(outcome), Instant::now());
                sent_tries += 1;
                match outcome {
                    Outcome::Timeout => {
                        metrics.timeout(TimeoutKind::UpstreamResponseHeader);
                        (Failure::UpstreamTimeout, retry.on.matches_timeout())
                    }
                    Outcome::Protocol => (Failure::UpstreamProtocol, retry.on.matches_reset()),
                    _ => (Failure::UpstreamReset, retry.on.matches_reset()),
                }
            }
        };
        last = Some(failure);
        push_tried(&mut tried, &mut ntried, ei);
        if !(retryable && replayable && sent_tries < retry.attempts) {
            return Err(failure);
        }
        if !flight.begin_retry(record) {
            return Err(failure);
        }
        backoff(retry, sent_tries).await;
    };
    let cluster = &config.clusters[ci];
    flight.finish(Some(response.status().as_u16() < 500));

    // Interim responses: 100 is ours to swallow (we answered the client already), other 1xx
    // go to HTTP/1.1 clients; 101 switches protocols when the client asked for it.
    let mut response = response;
    loop {
        let code = response.status().as_u16();
        if code == 101 && upgrade {
            break;
        }
        if !(100..200).contains(&code) {
            break;
        }
        if code != 100 && head.version() == Version::HTTP_11 {
            let mut interim = BytesMut::new();
            encode_proxy_response(
                &response,
                BodyKind::None,
                head.version(),
                ClientConnection::KeepAlive,
                &ResponseEdits::default(),
                None,
                &mut interim,
            );
            record
                .bytes_out
                .set(record.bytes_out.get() + interim.len() as u64);
            if !flush_client(client, &mut interim, server.timeouts.client_body).await {
                return Ok(Next::Close);
            }
        }
        let (idle, timer) = (timeouts.upstream_idle, client.timer.as_mut());
        response = match read_response_head(&mut upstream, false, idle, timer).await {
            Ok(Attempt::Response(r)) => r,
            Ok(Attempt::Stale) | Err(_) => return Err(Failure::UpstreamReset),
        };
    }

    let status = response.status();
    record.status.set(status.as_u16());
    let resp_edits = ResponseEdits {
        remove: &route.response_headers.remove,
        add: &route.response_headers.add,
    };
    let via = server.forwarded.via.then_some(&b"headwater"[..]);

    if status == StatusCode::SWITCHING_PROTOCOLS {
        encode_proxy_response(
            &response,
            BodyKind::None,
            head.version(),
            ClientConnection::Upgrade,
            &resp_edits,
            via,
            wbuf,
        );
        record.committed.set(true);
        record
            .bytes_out
            .set(record.bytes_out.get() + wbuf.len() as u64);
        if !flush_client(client, wbuf, server.timeouts.client_body).await {
            return Ok(Next::Close);
        }
        return Ok(Next::Upgrade(upstream, timeouts.upstream_idle));
    }

    let upstream_kind = response.body_kind(head.method());
    let down = response_framing(upstream_kind, head.version());
    let client_keep = head.keep_alive() && down.reusable() && !shard.drain.fired();
    let conn_mode = if client_keep {
        ClientConnection::KeepAlive
    } else {
        ClientConnection::Close
    };
    // A body that `pump` will copy in after the head (one under ZERO_COPY_MIN) gets its room
    // now, with the head's: one allocation instead of a second one (and a copy of the head)
    // when the body arrives.
    if let BodyKind::Length(n) = down {
        if n < ZERO_COPY_MIN as u64 {
            wbuf.reserve(response.as_bytes().len() + HEAD_EXTRA + n as usize);
        }
    }
    encode_proxy_response(
        &response,
        down,
        head.version(),
        conn_mode,
        &resp_edits,
        via,
        wbuf,
    );
    record.committed.set(true);
    let head_out = wbuf.len() as u64;
    let mut dec = BodyDecoder::new(upstream_kind);
    let UpstreamConn {
        stream: ustream,
        rbuf: urbuf,
        ..
    } = &mut *upstream;
    let pumped = pump(
        ustream,
        urbuf,
        &mut dec,
        &mut client.stream,
        down,
        wbuf,
        timeouts.upstream_idle,
        server.timeouts.client_body,
        client.timer.as_mut(),
    )
    .await;
    match pumped {
        Ok(n) => record.bytes_out.set(record.bytes_out.get() + head_out + n),
        Err(PumpError::ReadTimeout) => {
            metrics.timeout(TimeoutKind::UpstreamIdle);
            return Ok(Next::Close);
        }
        Err(_) => return Ok(Next::Close),
    }
    // The upstream connection goes back to the pool only after a clean, complete exchange
    // that leaves nothing unread.
    if response.keep_alive() && upstream_kind.reusable() && upstream.rbuf.is_empty() && !upgrade {
        // The head goes back with the connection, for the next response to be parsed into,
        // without the reference to the read buffer (which would keep that buffer shared).
        response.clear();
        upstream.head = response;
        shard
            .pool
            .borrow_mut()
            .checkin(upstream, &cluster.pool, Instant::now());
    }
    Ok(if client_keep {
        Next::KeepAlive
    } else {
        Next::Close
    })
}

/// The gateway's own 503 for cluster `ci`: counted, described (state of every endpoint,
/// `Retry-After`) for the answer, and returned as the failure to answer with.
fn refuse(
    shard: &Shard,
    generation: &Generation,
    ci: usize,
    record: &Record,
    refusal: Refusal,
    now: Instant,
) -> Failure {
    let (why, failure) = match refusal {
        Refusal::NoEndpoint => (
            Unavailability::NoHealthyUpstream,
            Failure::NoHealthyUpstream,
        ),
        Refusal::BreakerOpen => (Unavailability::CircuitOpen, Failure::CircuitOpen),
    };
    shard.metrics().unavailable(generation.cluster_ids[ci], why);
    record.set_unavailable(shard.describe_unavailable(generation, ci, refusal, now));
    failure
}

/// Remembers that endpoint `ei` was tried (the list is bounded; beyond it, endpoints may be
/// tried again).
fn push_tried(tried: &mut [usize; MAX_TRIED], n: &mut usize, ei: usize) {
    if tried[..*n].contains(&ei) {
        return;
    }
    if *n < MAX_TRIED {
        tried[*n] = ei;
        *n += 1;
    }
}

/// Why no connection to a picked endpoint could be had.
enum NoConn {
    /// A breaker refused a new connection (the cluster's or the endpoint's at its limit).
    BreakerOpen,
    /// Connecting failed: refused, unreachable or timed out.
    Connect(Outcome),
}

/// A connection to endpoint `ei` of cluster `ci` and whether it came from the pool: a pooled one
/// when `pooled` allows and one is idle, else a new one within the breakers' connection limits.
/// Counts pool hits and misses and connect errors.
async fn obtain(
    shard: &Rc<Shard>,
    generation: &Generation,
    ci: usize,
    ei: usize,
    pooled: bool,
    connect_timeout: Duration,
    now: Instant,
) -> Result<(Box<UpstreamConn>, bool), NoConn> {
    let cluster = &generation.config.clusters[ci];
    let cluster_id = generation.cluster_ids[ci];
    let metrics = shard.metrics();
    let addr = cluster.endpoints[ei].address;
    if pooled {
        let idle = shard.pool.borrow_mut().checkout(addr, &cluster.pool, now);
        if let Some(conn) = idle {
            metrics.pool_hit(cluster_id);
            return Ok((conn, true));
        }
    }
    metrics.pool_miss(cluster_id);
    if shard.with_cluster(generation, ci, |c| c.begin_connect(ei, now)) == Some(false) {
        return Err(NoConn::BreakerOpen);
    }
    let connected = connect(addr, connect_timeout).await;
    shard.with_cluster(generation, ci, |c| c.end_connect(ei, connected.is_ok()));
    match connected {
        Ok(mut conn) => {
            conn.ticket = Some(ConnTicket::new(shard, generation, ci, ei));
            Ok((conn, false))
        }
        Err(outcome) => {
            metrics.upstream_connect_error(cluster_id);
            if outcome == Outcome::ConnectTimeout {
                metrics.timeout(TimeoutKind::UpstreamConnect);
            }
            Err(NoConn::Connect(outcome))
        }
    }
}

/// The first try of a hedged request: its endpoint and whether its connection was pooled.
struct Try {
    endpoint: usize,
    reused: bool,
}

/// How a hedged try ended.
enum Raced<'a> {
    /// The first try's result stands: it answered first, no hedge was sent (`hedge` None), or
    /// the hedge to endpoint `hedge` failed or lost (its outcome is recorded).
    First {
        attempt: Result<Attempt, Outcome>,
        hedge: Option<usize>,
    },
    /// The hedge answered first (boxed: rare, and large).
    Hedge(Box<HedgeWin<'a>>),
}

/// A hedge that answered first. `first` is what the first try came to before that (None: it was
/// still waiting and has been cancelled); the first try's connection must be closed.
struct HedgeWin<'a> {
    first: Option<Result<Attempt, Outcome>>,
    endpoint: usize,
    conn: Box<UpstreamConn>,
    guard: Trying<'a>,
    sent_at: Instant,
    response: ResponseHead,
}

/// What a hedge came to: its connection, when it was sent and its answer; or, when it got no
/// connection, the connect failure (None: a breaker refused).
type HedgeResult = Result<(Box<UpstreamConn>, Instant, Result<Attempt, Outcome>), Option<Outcome>>;

/// Sends `bytes` on `conn` (the first try) and, if no response head came within `after`, a
/// second try (the hedge) to another endpoint of cluster `ci` that can serve, when the retry
/// budget allows; the first response head wins and the other try is cancelled. A try that fails
/// (reset, timeout, dead pooled connection, connect failure) leaves the other to answer.
#[allow(clippy::too_many_arguments)]
async fn hedged<'a>(
    shard: &'a Rc<Shard>,
    generation: &Generation,
    ci: usize,
    first: Try,
    (mut avoid, mut n): ([usize; MAX_TRIED], usize),
    key: Option<u64>,
    flight: &mut InFlight<'_>,
    record: &Record,
    conn: &mut UpstreamConn,
    bytes: &Bytes,
    per_try: Duration,
    after: Duration,
    connect_timeout: Duration,
    timer: Pin<&mut Sleep>,
) -> Raced<'a> {
    let mut first_try = pin!(send_whole(
        conn,
        bytes.clone(),
        first.reused,
        per_try,
        timer
    ));
    monoio::select! {
        answered = &mut first_try => return Raced::First { attempt: answered, hedge: None },
        _ = monoio::time::sleep(after) => {}
    }
    // No answer yet: another endpoint, if one can serve now and the budget allows a retry.
    let now = Instant::now();
    let cluster_id = generation.cluster_ids[ci];
    push_tried(&mut avoid, &mut n, first.endpoint);
    let picked = shard
        .pick(generation, ci, &avoid[..n], key, now)
        .filter(|&(ei, _)| {
            shard.with_cluster(generation, ci, |c| c.admit_endpoint(ei, now)) != Some(false)
        });
    let Some((ei, panic)) = picked else {
        return Raced::First {
            attempt: first_try.await,
            hedge: None,
        };
    };
    if !flight.begin_retry(record) {
        // The endpoint's breaker admitted a request: give it back unused.
        Trying::start(shard, generation, ci, ei, now).finish(None, now);
        return Raced::First {
            attempt: first_try.await,
            hedge: None,
        };
    }
    let metrics = shard.metrics();
    metrics.hedge(cluster_id);
    if panic {
        metrics.panic_pick(cluster_id);
    }
    let mut guard = Trying::start(shard, generation, ci, ei, now);
    let hedge = async {
        let (mut conn, reused) = obtain(shard, generation, ci, ei, true, connect_timeout, now)
            .await
            .map_err(|e| match e {
                NoConn::Connect(outcome) => Some(outcome),
                NoConn::BreakerOpen => None,
            })?;
        conn.requests += 1;
        let sent_at = Instant::now();
        // The first try is still waiting, on the task's timer: the hedge needs one of its own.
        let timer = pin!(crate::io::timer());
        let answered = send_whole(&mut conn, bytes.clone(), reused, per_try, timer).await;
        Ok((conn, sent_at, answered))
    };
    let mut hedge = pin!(hedge);
    // Records a hedge that came to nothing (its connection, if any, is dropped: closed).
    let mut hedge_failed = |result: HedgeResult| {
        let outcome = match result {
            Ok((_, _, Err(outcome))) | Err(Some(outcome)) => Some(outcome),
            _ => None,
        };
        guard.finish(outcome, Instant::now());
    };
    let early = monoio::select! {
        answered = &mut first_try => Ok(answered),
        hedged = &mut hedge => Err(hedged),
    };
    match early {
        Ok(Ok(Attempt::Response(response))) => Raced::First {
            attempt: Ok(Attempt::Response(response)),
            hedge: Some(ei),
        },
        Ok(first_failed) => match hedge.await {
            Ok((conn, sent_at, Ok(Attempt::Response(response)))) => {
                Raced::Hedge(Box::new(HedgeWin {
                    first: Some(first_failed),
                    endpoint: ei,
                    conn,
                    guard,
                    sent_at,
                    response,
                }))
            }
            other => {
                hedge_failed(other);
                Raced::First {
                    attempt: first_failed,
                    hedge: Some(ei),
                }
            }
        },
        Err(Ok((conn, sent_at, Ok(Attempt::Response(response))))) => {
            Raced::Hedge(Box::new(HedgeWin {
                first: None,
                endpoint: ei,
                conn,
                guard,
                sent_at,
                response,
            }))
        }
        Err(other) => {
            hedge_failed(other);
            Raced::First {
                attempt: first_try.await,
                hedge: Some(ei),
            }
        }
    }
}

/// Waits before retry number `retry_no` (1-based). The first retry goes at once: it goes to
/// another endpoint, and a wait would only hold its slot of the retry budget (at 100k req/s a
/// 25 ms pause per retry of a failing endpoint's share needs hundreds of slots). Retries after
/// that back off exponentially with equal jitter: base × 2^(n-2), capped.
async fn backoff(retry: &crate::config::RetryConfig, retry_no: u32) {
    let pause = headwater_health::retry::backoff(
        retry_no.saturating_sub(1),
        retry.backoff_base,
        retry.backoff_max,
        &mut fastrand::Rng::new(),
    );
    if !pause.is_zero() {
        monoio::time::sleep(pause).await;
    }
}

/// The consistent-hashing key of a request for a Maglev cluster (None for other balancers,
/// or when the header or cookie is absent: then the pick is random).
fn hash_key(cluster: &ClusterConfig, head: &RequestHead, peer: SocketAddr) -> Option<u64> {
    if cluster.balancer != headwater_balancer::Algorithm::Maglev {
        return None;
    }
    match &cluster.hash_key {
        HashKey::ClientAddress => Some(match peer.ip() {
            std::net::IpAddr::V4(ip) => headwater_balancer::hash_key(&ip.octets()),
            std::net::IpAddr::V6(ip) => headwater_balancer::hash_key(&ip.octets()),
        }),
        HashKey::Path => Some(headwater_balancer::hash_key(head.path())),
        HashKey::Header(name) => head.header(name.as_str()).map(headwater_balancer::hash_key),
        HashKey::Cookie(name) => head
            .header_all("cookie")
            .flat_map(|v| v.split(|b| *b == b';'))
            .find_map(|pair| {
                let pair = pair.trim_ascii();
                let (k, v) = pair.split_at(pair.iter().position(|b| *b == b'=')?);
                (k == name.as_bytes()).then(|| headwater_balancer::hash_key(&v[1..]))
            }),
    }
}

/// A request admitted to a cluster: in the cluster's in-flight count (retry budget) and its
/// breaker, until finished or dropped (a dropped exchange, e.g. on the total timeout, still
/// gives everything back).
struct InFlight<'a> {
    shard: &'a Shard,
    config_id: u64,
    cluster: usize,
    cluster_id: ClusterId,
    /// Whether it holds a slot of the cluster's retry budget (at most one: see
    /// [`begin_retry`](Self::begin_retry)).
    holds_retry: bool,
    open: bool,
}

impl<'a> InFlight<'a> {
    fn admit(
        shard: &'a Shard,
        generation: &Generation,
        cluster: usize,
        record: &Record,
    ) -> Result<Self, Failure> {
        let cluster_id = generation.cluster_ids[cluster];
        let admitted = shard.with_cluster(generation, cluster, |c| (c.admit(), c.breaker_state()));
        if let Some((_, Some(state))) = admitted {
            shard.metrics().set_cluster_breaker(cluster_id, state);
        }
        if matches!(admitted, Some((Err(Refusal::BreakerOpen), _))) {
            return Err(refuse(
                shard,
                generation,
                cluster,
                record,
                Refusal::BreakerOpen,
                Instant::now(),
            ));
        }
        Ok(InFlight {
            shard,
            config_id: generation.id,
            cluster,
            cluster_id,
            holds_retry: false,
            open: shard.is_current(generation),
        })
    }

    /// Takes one retry from the cluster's budget; false (and counted) when it is used up.
    ///
    /// A request holds at most one slot: it runs one try at a time, so its second and third
    /// retries are still one retry in flight and reuse the slot its first one took.
    fn begin_retry(&mut self, record: &Record) -> bool {
        let allowed = self.holds_retry
            || !self.open
            || self.shard.local_id() != self.config_id
            || self.shard.upstreams.borrow_mut().clusters[self.cluster].begin_retry();
        if allowed {
            self.holds_retry = self.open;
            self.shard.metrics().retry(self.cluster_id);
            record.retries.set(record.retries.get() + 1);
        } else {
            self.shard.metrics().retry_budget_exhausted(self.cluster_id);
        }
        allowed
    }

    /// Counts a try of a request that has not reached any upstream yet (after a connect failure,
    /// or a pooled connection found dead) as a retry, without taking it from the budget.
    fn replay(&self, record: &Record) {
        self.shard.metrics().retry(self.cluster_id);
        record.retries.set(record.retries.get() + 1);
    }

    /// The request is over; `ok` (final status below 500) feeds the cluster breaker.
    fn finish(&mut self, ok: Option<bool>) {
        if !std::mem::take(&mut self.open) {
            return;
        }
        if self.shard.local_id() != self.config_id {
            return;
        }
        let state = {
            let mut ups = self.shard.upstreams.borrow_mut();
            let c = &mut ups.clusters[self.cluster];
            c.end_retries(u32::from(std::mem::take(&mut self.holds_retry)));
            c.release(ok);
            c.breaker_state()
        };
        if let Some(state) = state {
            self.shard
                .metrics()
                .set_cluster_breaker(self.cluster_id, state);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.finish(None);
    }
}

/// One attempt on one endpoint: in the balancer's in-flight count until it finishes (or is
/// dropped), when its outcome goes to the balancer, the breaker and the health counters.
struct Trying<'a> {
    shard: &'a Shard,
    config_id: u64,
    cluster: usize,
    cluster_id: ClusterId,
    endpoint: usize,
    open: bool,
}

impl<'a> Trying<'a> {
    fn start(
        shard: &'a Shard,
        generation: &Generation,
        cluster: usize,
        endpoint: usize,
        now: Instant,
    ) -> Self {
        let open = shard.is_current(generation);
        if open {
            shard.upstreams.borrow_mut().clusters[cluster]
                .balancer
                .start(endpoint, now);
            shard.with_cells(generation.id, cluster, endpoint, |cells| {
                cells.in_flight(shard.index, true)
            });
        }
        Trying {
            shard,
            config_id: generation.id,
            cluster,
            cluster_id: generation.cluster_ids[cluster],
            endpoint,
            open,
        }
    }

    /// Records the outcome (None: nothing attributable to the endpoint), observed at `now`.
    fn finish(&mut self, outcome: Option<Outcome>, now: Instant) {
        let endpoint = self.endpoint;
        self.end(outcome, now, |c| c.finish_attempt(endpoint, outcome, now));
    }

    /// The try was cancelled while waiting for an answer (it lost a hedge race) after `waited`:
    /// the balancer gets `waited` as a lower bound of its latency, the health counters nothing
    /// (it did not fail).
    fn finish_unanswered(&mut self, waited: Duration, now: Instant) {
        let endpoint = self.endpoint;
        self.end(None, now, |c| {
            c.finish_unanswered(endpoint, waited, now);
            false
        });
    }

    /// Ends the try once: `update` gives the shard's cluster state the news (and says whether
    /// it quarantined the endpoint); the counter cells get `outcome`, the EWMA and the breaker.
    fn end(
        &mut self,
        outcome: Option<Outcome>,
        now: Instant,
        update: impl FnOnce(&mut super::upstreams::ClusterRuntime) -> bool,
    ) {
        if !std::mem::take(&mut self.open) || self.shard.local_id() != self.config_id {
            return;
        }
        let (ewma, breaker, quarantined) = {
            let mut ups = self.shard.upstreams.borrow_mut();
            let c = &mut ups.clusters[self.cluster];
            let quarantined = update(c);
            (
                c.balancer.ewma(self.endpoint, now),
                c.endpoint_breaker_state(self.endpoint, now),
                quarantined,
            )
        };
        if quarantined {
            self.shard.metrics().local_quarantine(self.cluster_id);
        }
        let shard = self.shard.index;
        self.shard
            .with_cells(self.config_id, self.cluster, self.endpoint, |cells| {
                cells.in_flight(shard, false);
                if let Some(outcome) = outcome {
                    cells.record(shard, outcome);
                }
                if ewma.is_some() {
                    cells.set_ewma(shard, ewma);
                }
                cells.set_breaker(shard, breaker);
            });
    }
}

impl Drop for Trying<'_> {
    fn drop(&mut self) {
        if self.open {
            self.finish(None, Instant::now());
        }
    }
}

/// Holds an upstream connection's slot in the breakers until the connection closes.
pub(crate) struct ConnTicket {
    shard: std::rc::Weak<Shard>,
    config_id: u64,
    cluster: usize,
    endpoint: usize,
}

impl ConnTicket {
    fn new(shard: &Rc<Shard>, generation: &Generation, cluster: usize, endpoint: usize) -> Self {
        ConnTicket {
            shard: Rc::downgrade(shard),
            config_id: generation.id,
            cluster,
            endpoint,
        }
    }
}

impl Drop for ConnTicket {
    fn drop(&mut self) {
        if let Some(shard) = self.shard.upgrade() {
            if shard.local_id() == self.config_id {
                if let Ok(mut ups) = shard.upstreams.try_borrow_mut() {
                    ups.clusters[self.cluster].close_connection(self.endpoint);
                }
            }
        }
    }
}

impl Record {
    fn set_unavailable(&self, u: Unavailable) {
        *self.unavailable.borrow_mut() = Some(u);
    }
}

/// Opens a connection to `addr` within `timeout`.
async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Box<UpstreamConn>, Outcome> {
    match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(UpstreamConn::new(stream, addr))
        }
        Ok(Err(_)) => Err(Outcome::ConnectFailed),
        Err(_) => Err(Outcome::ConnectTimeout),
    }
}

/// Sends a complete request (head and any body) and reads the response head. A connection
/// taken from the pool that fails before any response byte is reported `Stale`.
async fn send_whole(
    conn: &mut UpstreamConn,
    bytes: Bytes,
    reused: bool,
    timeout: Duration,
    mut timer: Pin<&mut Sleep>,
) -> Result<Attempt, Outcome> {
    let stop = Deadline::after(timer.as_mut(), timeout);
    let (res, _) = write_all_or_drop(&mut conn.stream, bytes, stop).await;
    if let Err(e) = res {
        return if reused && !e.is_timeout() {
            Ok(Attempt::Stale)
        } else if e.is_timeout() {
            Err(Outcome::Timeout)
        } else {
            Err(Outcome::Reset)
        };
    }
    read_response_head(conn, reused, timeout, timer).await
}

/// Reads one response head from `conn` within `timeout` (one deadline for the whole head, kept
/// by `timer`).
async fn read_response_head(
    conn: &mut UpstreamConn,
    reused: bool,
    timeout: Duration,
    timer: Pin<&mut Sleep>,
) -> Result<Attempt, Outcome> {
    let mut deadline = Deadline::after(timer, timeout);
    let mut parser = ResponseParser::new(headwater_http1::Limits::default());
    let mut got_any = !conn.rbuf.is_empty();
    loop {
        if !conn.rbuf.is_empty() {
            // Parsed into the connection's own head, whose index storage is reused; the exchange
            // gives it back before the connection returns to the pool.
            match parser.parse_into(&mut conn.rbuf, &mut conn.head) {
                Ok(true) => return Ok(Attempt::Response(std::mem::take(&mut conn.head))),
                Ok(false) => {}
                Err(_) => return Err(Outcome::Protocol),
            }
        }
        // Room for the head and a body of some size in one read, so that a response that has
        // arrived whole is relayed with one read and one write.
        if conn.rbuf.capacity() - conn.rbuf.len() < BODY_READ_SPARE {
            conn.rbuf.reserve(BODY_READ_SPARE);
        }
        let buf = std::mem::take(&mut conn.rbuf);
        let stop = &mut deadline;
        let (outcome, buf) = read_or_drop(&mut conn.stream, buf, stop).await;
        // Only a timed-out read, which was dropped, loses the buffer; the connection is closed.
        conn.rbuf = buf.unwrap_or_default();
        match outcome {
            ReadOutcome::Read(0) | ReadOutcome::Err(_) => {
                return if reused && !got_any {
                    Ok(Attempt::Stale)
                } else {
                    Err(Outcome::Reset)
                };
            }
            ReadOutcome::Read(_) => got_any = true,
            ReadOutcome::TimedOut => return Err(Outcome::Timeout),
        }
    }
}

#[derive(Debug)]
enum PumpError {
    ReadTimeout,
    ReadClosed,
    ReadFailed,
    Decode(headwater_http1::Error),
    WriteFailed,
}

/// Moves one message body from `src` (bytes already read are in `sbuf`) to `dst`, decoding with
/// `dec` and re-framing as `out`. `wbuf` may hold bytes to send first (a head); they are
/// coalesced with the first body bytes. Returns the body bytes written. Reads and writes are
/// plain operations, dropped at their deadline ([`crate::io`]): a body that stalls or a peer that
/// stops reading ends the exchange and the connection. `timer` keeps the deadline of each read
/// and write.
#[allow(clippy::too_many_arguments)]
async fn pump<R, W>(
    src: &mut R,
    sbuf: &mut BytesMut,
    dec: &mut BodyDecoder,
    dst: &mut W,
    out: BodyKind,
    wbuf: &mut BytesMut,
    read_timeout_dur: Duration,
    write_timeout: Duration,
    mut timer: Pin<&mut Sleep>,
) -> Result<u64, PumpError>
where
    R: AsyncReadRent,
    W: AsyncWriteRent,
{
    let chunked_out = out == BodyKind::Chunked;
    let mut written: u64 = 0;
    let mut large_reads = false;
    // Body pieces of ZERO_COPY_MIN or more, not copied, in order: sent with one writev followed
    // by `wbuf` (the head, chunk framing, small pieces) when the input runs dry, at the end, or
    // at WRITE_HIGH_WATER.
    let mut pend = BytesVec::new();
    macro_rules! send_pending {
        () => {
            flush(dst, timer.as_mut(), wbuf, &mut pend, write_timeout).await?
        };
    }
    let mut trailers: Option<Bytes> = None;
    loop {
        match dec.decode(sbuf).map_err(PumpError::Decode)? {
            Some(Decoded::Data(data)) => {
                written += data.len() as u64;
                if chunked_out {
                    chunked::encode_chunk_header(data.len(), wbuf);
                }
                if data.len() >= ZERO_COPY_MIN {
                    if !wbuf.is_empty() {
                        pend.push(wbuf.split().freeze());
                    }
                    pend.push(data);
                } else {
                    wbuf.put_slice(&data);
                }
                if chunked_out {
                    wbuf.put_slice(chunked::CRLF);
                }
                if pend.total_len() + wbuf.len() >= WRITE_HIGH_WATER {
                    send_pending!();
                }
            }
            Some(Decoded::Trailers(t)) => trailers = Some(t),
            Some(Decoded::Done) => {
                if chunked_out {
                    match trailers {
                        Some(t) => {
                            wbuf.put_slice(b"0\r\n");
                            wbuf.put_slice(&t);
                        }
                        None => wbuf.put_slice(chunked::LAST_CHUNK),
                    }
                }
                send_pending!();
                if large_reads && sbuf.is_empty() {
                    // Not kept with an idle (or pooled) connection: the next read starts small.
                    *sbuf = BytesMut::new();
                }
                return Ok(written);
            }
            None => {
                // Need more input. What is gathered goes out first, unless it and the rest of a
                // fixed-length body fit in HOLD_MAX: then they leave together once the rest has
                // arrived (a head whose small body comes in a second segment is still one write,
                // one segment and one wake-up of the peer, not two).
                let rest = dec.remaining_hint();
                let pending = (pend.total_len() + wbuf.len()) as u64;
                let hold =
                    !chunked_out && matches!(rest, Some(rest) if pending + rest <= HOLD_MAX as u64);
                if !hold {
                    send_pending!();
                }
                // The read takes as much of a large fixed-length body as has arrived (up to
                // BODY_READ_MAX): fewer reads and fewer writes than BODY_READ_SPARE's worth each.
                let want = match rest {
                    Some(rest) if rest > BODY_READ_SPARE as u64 => {
                        (rest as usize).min(BODY_READ_MAX)
                    }
                    _ => BODY_READ_SPARE,
                };
                let spare = sbuf.capacity() - sbuf.len();
                if spare < 4096 || (spare < want && sbuf.is_empty()) {
                    sbuf.reserve(want);
                    large_reads |= want > BODY_READ_SPARE;
                }
                let buf = std::mem::take(sbuf);
                let stop = Deadline::after(timer.as_mut(), read_timeout_dur);
                let (outcome, buf) = read_or_drop(src, buf, stop).await;
                *sbuf = buf.unwrap_or_default();
                match outcome {
                    ReadOutcome::Read(0) => {
                        dec.eof().map_err(|_| PumpError::ReadClosed)?;
                    }
                    ReadOutcome::Read(_) => {}
                    ReadOutcome::TimedOut => return Err(PumpError::ReadTimeout),
                    ReadOutcome::Err(_) => return Err(PumpError::ReadFailed),
                }
            }
        }
    }
}

/// Writes the pieces in `pend`, then `wbuf`, with one writev (or `wbuf` alone with a write)
/// within `timeout`; leaves both empty.
async fn flush<W: AsyncWriteRent>(
    dst: &mut W,
    timer: Pin<&mut Sleep>,
    wbuf: &mut BytesMut,
    pend: &mut BytesVec,
    timeout: Duration,
) -> Result<(), PumpError> {
    if pend.parts().is_empty() {
        return write_out(dst, timer, wbuf, timeout).await;
    }
    if !wbuf.is_empty() {
        pend.push(wbuf.split().freeze());
    }
    let parts = std::mem::take(pend);
    let stop = Deadline::after(timer, timeout);
    let (res, _) = write_vectored_all_or_drop(dst, parts, stop).await;
    res.map_err(|_| PumpError::WriteFailed)
}

/// Writes all of `wbuf` (nothing when it is empty) within `timeout` and leaves it empty, its
/// allocation kept for the next bytes.
async fn write_out<W: AsyncWriteRent>(
    dst: &mut W,
    timer: Pin<&mut Sleep>,
    wbuf: &mut BytesMut,
    timeout: Duration,
) -> Result<(), PumpError> {
    if wbuf.is_empty() {
        return Ok(());
    }
    let data = std::mem::take(wbuf);
    let stop = Deadline::after(timer, timeout);
    let (res, data) = write_all_or_drop(dst, data, stop).await;
    // A timed-out write was dropped with its buffer (see `crate::io`); the stream is closed.
    if let Some(mut data) = data {
        data.clear();
        *wbuf = data;
    }
    res.map_err(|_| PumpError::WriteFailed)
}

/// Relays bytes both ways between an upgraded client connection and its upstream until both
/// directions have closed or one stays idle longer than `idle`. A direction that times out stops
/// (its operation dropped, the other direction's left alone) and half-closes its destination;
/// each relay has a timer of its own (they wait at the same time).
async fn tunnel(
    client: ClientConn<'_>,
    upstream: UpstreamConn,
    pending_client: BytesMut,
    idle: Duration,
) {
    let ClientConn { stream: client, .. } = client;
    let UpstreamConn {
        stream,
        rbuf: pending_upstream,
        ..
    } = upstream;
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = stream.into_split();
    let up = relay(&mut cr, &mut uw, pending_client, idle);
    let down = relay(&mut ur, &mut cw, pending_upstream, idle);
    monoio::join!(up, down);
}

async fn relay<R, W>(src: &mut R, dst: &mut W, mut buf: BytesMut, idle: Duration)
where
    R: AsyncReadRent,
    W: AsyncWriteRent,
{
    let mut timer = pin!(crate::io::timer());
    loop {
        if write_out(dst, timer.as_mut(), &mut buf, idle)
            .await
            .is_err()
        {
            break;
        }
        if buf.capacity() < 4096 {
            buf.reserve(16 * 1024);
        }
        let stop = Deadline::after(timer.as_mut(), idle);
        let (outcome, b) = read_or_drop(src, buf, stop).await;
        buf = b.unwrap_or_default();
        match outcome {
            ReadOutcome::Read(0) | ReadOutcome::TimedOut | ReadOutcome::Err(_) => break,
            ReadOutcome::Read(_) => {}
        }
    }
    // Half-close: tell the other side this direction is done.
    let _ = dst.shutdown().await;
}
