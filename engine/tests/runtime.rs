//! Shards, listeners and cancel-safe timed I/O, under both monoio drivers.
//!
//! io_uring cases are skipped (with a note on stderr) where io_uring cannot be set up; set
//! `HEADWATER_REQUIRE_IO_URING=1` to make that a failure instead.

mod common;

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{Shutdown, SocketAddr},
    pin::pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use common::drivers::{drivers, require_io_uring};
use headwater_engine::{
    io::{
        self, accept_timeout, read_timeout, read_until, write_all_or_drop, write_all_timeout,
        write_all_until, write_vectored_all_or_drop, write_vectored_all_timeout, BytesVec,
        Deadline, ReadOutcome, WriteError,
    },
    runtime::{
        build_runtime, io_uring_usable, reserve_addr, shard_listener, spawn_shards,
        spawn_shards_with, tune_accepted, DriverChoice, DriverKind, ShardOptions,
    },
};
use monoio::{io::Canceller, net::TcpStream};

const LOCALHOST: &str = "127.0.0.1:0";

/// Whether io_uring tests can run; prints why not.
fn io_uring_or_skip(test: &str) -> bool {
    drivers(test).contains(&DriverKind::IoUring)
}

fn block_on<F: std::future::Future>(kind: DriverKind, fut: F) -> F::Output {
    let mut rt = build_runtime(kind, 256).expect("build runtime");
    rt.block_on(async move {
        assert_eq!(DriverKind::current(), kind);
        fut.await
    })
}

fn local() -> SocketAddr {
    LOCALHOST.parse().unwrap()
}

/// Byte `i` of the test pattern.
fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

#[test]
fn io_uring_probe_explains_itself() {
    match io_uring_usable() {
        Ok(()) => eprintln!("io_uring usable"),
        Err(reason) => {
            assert!(!reason.is_empty());
            assert!(
                !require_io_uring(),
                "io_uring required but unusable: {reason}"
            );
            eprintln!("io_uring unusable: {reason}");
        }
    }
    // Cached: same answer again.
    assert_eq!(io_uring_usable(), io_uring_usable());
}

// ---------------------------------------------------------------------------------------------
// Shards

/// Two shards on one SO_REUSEPORT address, each accepting and echoing; 200 connections from
/// std threads all get their bytes back, and both shards get some of them.
fn echo_two_shards(choice: DriverChoice, expect: DriverKind) {
    const SHARDS: usize = 2;
    const CLIENT_THREADS: usize = 4;
    const CONNS_PER_THREAD: usize = 50;

    let addr = reserve_addr(local()).unwrap();
    assert_ne!(addr.port(), 0);
    let stop = Arc::new(AtomicBool::new(false));
    let listening = Arc::new(AtomicUsize::new(0));
    let accepted: Arc<Vec<AtomicUsize>> =
        Arc::new((0..SHARDS).map(|_| AtomicUsize::new(0)).collect());

    let shards = {
        let (stop, listening, accepted) = (stop.clone(), listening.clone(), accepted.clone());
        spawn_shards(SHARDS, choice, false, move |ctx| {
            let (stop, listening, accepted) = (stop.clone(), listening.clone(), accepted.clone());
            async move {
                assert_eq!(ctx.count, SHARDS);
                assert_eq!(ctx.driver, DriverKind::current());
                let listener = shard_listener(addr, 1024).expect("shard listener");
                listening.fetch_add(1, Ordering::SeqCst);
                while !stop.load(Ordering::SeqCst) {
                    match accept_timeout(&listener, Duration::from_millis(20)).await {
                        Ok(Some((stream, _peer))) => {
                            tune_accepted(&stream).unwrap();
                            assert!(stream.nodelay().unwrap());
                            accepted[ctx.index].fetch_add(1, Ordering::SeqCst);
                            monoio::spawn(echo(stream));
                        }
                        Ok(None) => {}
                        Err(e) => panic!("accept: {e}"),
                    }
                }
            }
        })
        .expect("spawn shards")
    };
    assert_eq!(shards.driver(), expect);
    assert_eq!(shards.len(), SHARDS);
    eprintln!("echo test: {choice:?} ran on {}", shards.driver());

    let deadline = Instant::now() + Duration::from_secs(10);
    while listening.load(Ordering::SeqCst) < SHARDS {
        assert!(Instant::now() < deadline, "shards did not start listening");
        thread::sleep(Duration::from_millis(5));
    }

    let clients: Vec<_> = (0..CLIENT_THREADS)
        .map(|t| {
            thread::spawn(move || {
                for i in 0..CONNS_PER_THREAD {
                    let mut conn = std::net::TcpStream::connect(addr).expect("connect");
                    conn.set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    // Larger than one read for some connections.
                    let len = if i % 10 == 0 { 100_000 } else { 32 + i };
                    let mut msg = format!("client {t}-{i} ").into_bytes();
                    msg.extend(pattern(len).iter());
                    conn.write_all(&msg).unwrap();
                    let mut back = vec![0u8; msg.len()];
                    conn.read_exact(&mut back).expect("echo");
                    assert!(back == msg, "echo mismatch on {t}-{i}");
                    conn.shutdown(Shutdown::Write).unwrap();
                    let mut rest = Vec::new();
                    conn.read_to_end(&mut rest).unwrap();
                    assert!(rest.is_empty());
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread");
    }

    stop.store(true, Ordering::SeqCst);
    shards.join().expect("shards panicked");
    let counts: Vec<usize> = accepted.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    eprintln!("echo test on {expect}: connections per shard {counts:?}");
    assert_eq!(
        counts.iter().sum::<usize>(),
        CLIENT_THREADS * CONNS_PER_THREAD
    );
    assert!(
        counts.iter().all(|&c| c > 0),
        "SO_REUSEPORT did not spread: {counts:?}"
    );
}

async fn echo(mut stream: TcpStream) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        let (outcome, read) = read_timeout(&mut stream, buf, Duration::from_secs(10)).await;
        buf = read;
        match outcome {
            ReadOutcome::Read(0) => return,
            ReadOutcome::Read(_) => {}
            ReadOutcome::TimedOut => panic!("echo read timed out"),
            ReadOutcome::Err(e) => panic!("echo read: {e}"),
        }
        let (res, written) = write_all_timeout(&mut stream, buf, Duration::from_secs(10)).await;
        res.expect("echo write");
        buf = written;
        buf.clear();
    }
}

#[test]
fn echo_two_shards_io_uring() {
    if io_uring_or_skip("echo_two_shards_io_uring") {
        echo_two_shards(DriverChoice::IoUring, DriverKind::IoUring);
    }
}

#[test]
fn echo_two_shards_epoll() {
    echo_two_shards(DriverChoice::Epoll, DriverKind::Epoll);
}

#[test]
fn auto_uses_io_uring_when_usable() {
    let shards = spawn_shards(1, DriverChoice::Auto, false, |ctx| async move {
        assert_eq!(ctx.driver, DriverKind::current());
    })
    .unwrap();
    let expect = if io_uring_usable().is_ok() {
        DriverKind::IoUring
    } else {
        DriverKind::Epoll
    };
    assert_eq!(shards.driver(), expect);
    shards.join().unwrap();
}

/// The cores this process may run on, as core_affinity lists them.
fn allowed_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// This thread's allowed CPUs, from /proc (e.g. "3" once pinned to core 3).
fn thread_cpus_allowed() -> String {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn pinning_with_more_workers_than_cores() {
    let cores = allowed_cores();
    let workers = cores.len().max(1) * 2 + 1;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shards = {
        let seen = seen.clone();
        spawn_shards(workers, DriverChoice::Auto, true, move |ctx| {
            let seen = seen.clone();
            async move {
                let name = thread::current().name().map(str::to_string);
                monoio::time::sleep(Duration::from_millis(1)).await;
                seen.lock()
                    .unwrap()
                    .push((ctx.index, ctx.count, name, thread_cpus_allowed()));
            }
        })
        .expect("spawn pinned shards")
    };
    assert_eq!(shards.len(), workers);
    shards.join().unwrap();

    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen.len(), workers);
    for (i, (index, count, name, cpus)) in seen.into_iter().enumerate() {
        assert_eq!(index, i);
        assert_eq!(count, workers);
        assert_eq!(
            name.as_deref(),
            Some(format!("headwater-shard-{i}").as_str())
        );
        match cpus.parse::<usize>() {
            Ok(cpu) if !cores.is_empty() => {
                assert_eq!(
                    cpu,
                    cores[i % cores.len()],
                    "shard {i} pinned to the wrong core"
                )
            }
            _ => eprintln!("note: shard {i} not pinned here (allowed CPUs: {cpus:?})"),
        }
    }
}

#[test]
fn shards_exit_when_their_future_returns() {
    for kind in drivers("shards_exit_when_their_future_returns") {
        let choice = match kind {
            DriverKind::IoUring => DriverChoice::IoUring,
            DriverKind::Epoll => DriverChoice::Epoll,
        };
        let indices = Arc::new(Mutex::new(BTreeSet::new()));
        let opts = ShardOptions {
            workers: 3,
            driver: choice,
            pin: false,
            entries: 512,
            stack_size: Some(512 * 1024),
        };
        let started = Instant::now();
        let shards = {
            let indices = indices.clone();
            spawn_shards_with(&opts, move |ctx| {
                let indices = indices.clone();
                async move {
                    // Left running when the shard ends: a pending accept and a long sleep.
                    let listener = shard_listener(local(), 16).unwrap();
                    monoio::spawn(async move {
                        let _ = listener.accept().await;
                    });
                    monoio::spawn(monoio::time::sleep(Duration::from_secs(3600)));
                    monoio::time::sleep(Duration::from_millis(10)).await;
                    indices.lock().unwrap().insert(ctx.index);
                }
            })
            .unwrap()
        };
        assert_eq!(shards.driver(), kind);
        shards.join().expect("join");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(*indices.lock().unwrap(), BTreeSet::from([0, 1, 2]));
    }
}

#[test]
fn zero_workers_is_an_error() {
    let err = spawn_shards(0, DriverChoice::Epoll, false, |_| async {}).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn panicking_shard_is_reported_by_join() {
    let shards = spawn_shards(2, DriverChoice::Epoll, false, |ctx| async move {
        if ctx.index == 1 {
            panic!("shard 1 fails on purpose");
        }
    })
    .unwrap();
    assert!(shards.join().is_err());
}

#[test]
fn reserve_addr_keeps_concrete_ports_and_listeners_share_one() {
    let fixed: SocketAddr = "127.0.0.1:4321".parse().unwrap();
    assert_eq!(reserve_addr(fixed).unwrap(), fixed);

    let addr = reserve_addr(local()).unwrap();
    let a = headwater_engine::runtime::bind_listener(addr, 16).unwrap();
    let b = headwater_engine::runtime::bind_listener(addr, 16).unwrap();
    assert_eq!(a.local_addr().unwrap(), addr);
    assert_eq!(b.local_addr().unwrap(), addr);

    // IPv6 (where available) is V6ONLY, so the v4 and v6 wildcard can be bound separately.
    if let Ok(v6) = reserve_addr("[::1]:0".parse().unwrap()) {
        let l = headwater_engine::runtime::bind_listener(v6, 16).unwrap();
        assert_eq!(l.local_addr().unwrap(), v6);
    }
}

// ---------------------------------------------------------------------------------------------
// Timed I/O

/// Accepts one connection from `peer` (run on a std thread against the listener's address).
async fn accept_one<P>(peer: P) -> (TcpStream, thread::JoinHandle<()>)
where
    P: FnOnce(std::net::TcpStream) + Send + 'static,
{
    let listener = shard_listener(local(), 16).unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let conn = std::net::TcpStream::connect(addr).expect("peer connect");
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        peer(conn);
    });
    let (stream, _) = accept_timeout(&listener, Duration::from_secs(10))
        .await
        .expect("accept")
        .expect("accept timed out");
    (stream, handle)
}

fn read_bytes(outcome: &ReadOutcome) -> usize {
    match outcome {
        ReadOutcome::Read(n) => *n,
        other => panic!("expected data, got {other:?}"),
    }
}

#[test]
fn read_timeout_times_out_and_loses_nothing() {
    for kind in drivers("read_timeout_times_out_and_loses_nothing") {
        let peer = block_on(kind, async {
            let (mut stream, peer) = accept_one(|mut conn| {
                thread::sleep(Duration::from_millis(400));
                conn.write_all(b"hello").unwrap();
                thread::sleep(Duration::from_millis(100));
                conn.write_all(b" world").unwrap();
                // Dropping closes: EOF.
            })
            .await;

            // Full buffer (no spare capacity): read_timeout reserves room and appends.
            let buf = BytesMut::from(&b"pre:"[..]);
            assert_eq!(buf.len(), buf.capacity());
            let started = Instant::now();
            let (outcome, buf) = read_timeout(&mut stream, buf, Duration::from_millis(100)).await;
            let waited = started.elapsed();
            assert!(
                matches!(outcome, ReadOutcome::TimedOut),
                "{kind}: {outcome:?}"
            );
            assert!(
                waited >= Duration::from_millis(90),
                "{kind}: early timeout {waited:?}"
            );
            assert_eq!(&buf[..], b"pre:");
            assert!(buf.capacity() - buf.len() >= 8 * 1024);

            // Several more timeouts in a row, then the data.
            let mut buf = buf;
            let mut timeouts = 0;
            loop {
                let (outcome, b) = read_timeout(&mut stream, buf, Duration::from_millis(50)).await;
                buf = b;
                match outcome {
                    ReadOutcome::TimedOut => timeouts += 1,
                    ReadOutcome::Read(n) => {
                        assert_eq!(n, 5);
                        break;
                    }
                    ReadOutcome::Err(e) => panic!("{kind}: {e}"),
                }
            }
            assert!(timeouts >= 1, "{kind}: no timeout before the data came");
            assert_eq!(&buf[..], b"pre:hello");

            let (outcome, buf) = read_timeout(&mut stream, buf, Duration::from_secs(5)).await;
            assert_eq!(read_bytes(&outcome), 6);
            assert_eq!(&buf[..], b"pre:hello world");

            let (outcome, buf) = read_timeout(&mut stream, buf, Duration::from_secs(5)).await;
            assert!(
                matches!(outcome, ReadOutcome::Read(0)),
                "{kind}: {outcome:?}"
            );
            assert_eq!(&buf[..], b"pre:hello world");
            peer
        });
        peer.join().unwrap();
    }
}

#[test]
fn read_timeout_returns_data_and_eof() {
    for kind in drivers("read_timeout_returns_data_and_eof") {
        let peer = block_on(kind, async {
            let (mut stream, peer) = accept_one(|mut conn| {
                conn.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
                conn.shutdown(Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                conn.read_to_end(&mut rest).unwrap();
            })
            .await;
            let mut got = Vec::new();
            let mut buf = BytesMut::with_capacity(4);
            loop {
                let (outcome, b) = read_timeout(&mut stream, buf, Duration::from_secs(5)).await;
                buf = b;
                match read_bytes(&outcome) {
                    0 => break,
                    _ => {
                        got.extend_from_slice(&buf);
                        buf.clear();
                    }
                }
            }
            assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n", "{kind}");
            peer
        });
        peer.join().unwrap();
    }
}

/// How [`trickle_near_deadline_loses_nothing`] reads.
#[derive(Clone, Copy)]
enum TrickleReads {
    /// With `read_timeout`: a canceller and a timer of its own for each read.
    Fresh,
    /// With `read_until` and what the proxy keeps per connection: one read canceller (replaced
    /// after each cancel) and one timer for all the reads.
    Kept,
}

/// Bytes trickle in with gaps around the 1 ms read deadline, so reads keep timing out just as
/// data arrives; they are read to EOF as `reads` says. Every byte must arrive, in order, and
/// some reads must have timed out.
fn trickle_near_deadline_loses_nothing(test: &str, reads: TrickleReads) {
    const BYTES: usize = 1000;
    const DEADLINE: Duration = Duration::from_millis(1);
    for kind in drivers(test) {
        let (got, timeouts, peer) = block_on(kind, async {
            let (mut stream, peer) = accept_one(|mut conn| {
                conn.set_nodelay(true).unwrap();
                for i in 0..BYTES {
                    conn.write_all(&[(i % 251) as u8]).unwrap();
                    // Gaps of 0..3 ms around the 1 ms deadline; busy-wait for precision.
                    let gap = Duration::from_micros((i as u64 * 7919) % 3000);
                    let sent = Instant::now();
                    while sent.elapsed() < gap {
                        std::hint::spin_loop();
                    }
                }
            })
            .await;
            let mut kept = match reads {
                TrickleReads::Fresh => None,
                TrickleReads::Kept => Some((Canceller::new(), Box::pin(io::timer()))),
            };
            let mut got = Vec::with_capacity(BYTES);
            let mut timeouts = 0;
            let mut buf = BytesMut::with_capacity(64);
            loop {
                let (outcome, b) = match &mut kept {
                    None => read_timeout(&mut stream, buf, DEADLINE).await,
                    Some((cancel, timer)) => {
                        let stop = Deadline::after(timer.as_mut(), DEADLINE);
                        read_until(&mut stream, buf, stop, cancel).await
                    }
                };
                buf = b;
                match outcome {
                    ReadOutcome::Read(0) => break,
                    ReadOutcome::Read(_) => {
                        got.extend_from_slice(&buf);
                        buf.clear();
                    }
                    ReadOutcome::TimedOut => timeouts += 1,
                    ReadOutcome::Err(e) => panic!("{kind}: {e}"),
                }
            }
            (got, timeouts, peer)
        });
        peer.join().unwrap();
        eprintln!("{kind}: {} bytes, {timeouts} timed-out reads", got.len());
        assert!(timeouts > 0, "{kind}: the deadline never fired");
        let first_bad = got
            .iter()
            .zip(pattern(BYTES).iter())
            .position(|(a, b)| a != b);
        assert!(
            got.len() == BYTES && first_bad.is_none(),
            "{kind}: got {} of {BYTES} bytes, first wrong byte at {first_bad:?}",
            got.len()
        );
    }
}

/// [`trickle_near_deadline_loses_nothing`] with `read_timeout`. (In this setting, dropping plain
/// reads with `monoio::time::timeout` loses bytes under io_uring: the kernel completes a read
/// whose future is gone.)
#[test]
fn read_timeout_near_deadline_loses_nothing() {
    trickle_near_deadline_loses_nothing(
        "read_timeout_near_deadline_loses_nothing",
        TrickleReads::Fresh,
    );
}

/// As the proxy does it for a client connection: one read canceller and one timer kept for a
/// whole conversation, the timer re-armed by each operation's deadline, later and earlier than
/// the one before. A timed-out read cancels only the read (the writes after it go through), the
/// replaced canceller serves the next reads, and no byte is lost.
#[test]
fn kept_canceller_and_timer_serve_operation_after_operation() {
    for kind in drivers("kept_canceller_and_timer_serve_operation_after_operation") {
        let peer = block_on(kind, async {
            let (mut stream, peer) = accept_one(|mut conn| {
                let mut got = [0u8; 4];
                conn.read_exact(&mut got).unwrap();
                assert_eq!(&got, b"ping");
                thread::sleep(Duration::from_millis(150));
                conn.write_all(b"pong").unwrap();
                conn.read_exact(&mut got).unwrap();
                assert_eq!(&got, b"bye!");
                conn.write_all(b"end").unwrap();
                // Dropping closes: EOF.
            })
            .await;
            let mut cancel = Canceller::new();
            let mut timer = pin!(io::timer());
            let short = Duration::from_millis(50);
            let long = Duration::from_secs(5);

            // Nothing comes: the read times out (after the deadline, not before).
            let started = Instant::now();
            let stop = Deadline::after(timer.as_mut(), short);
            let (outcome, buf) =
                read_until(&mut stream, BytesMut::with_capacity(64), stop, &mut cancel).await;
            assert!(
                matches!(outcome, ReadOutcome::TimedOut),
                "{kind}: {outcome:?}"
            );
            assert!(
                started.elapsed() >= short - Duration::from_millis(5),
                "{kind}: early"
            );

            // The stream still takes a write (a plain one, as the proxy's).
            let stop = Deadline::after(timer.as_mut(), long);
            let ping = Bytes::from_static(b"ping");
            let (res, _) = write_all_or_drop(&mut stream, ping, stop).await;
            res.unwrap_or_else(|e| panic!("{kind}: {e}"));

            // The replaced read canceller reads the answer (the timer re-armed later).
            let stop = Deadline::after(timer.as_mut(), long);
            let (outcome, mut buf) = read_until(&mut stream, buf, stop, &mut cancel).await;
            assert_eq!(read_bytes(&outcome), 4);
            assert_eq!(&buf[..], b"pong");

            // Re-armed earlier than the pending 5 s: times out at the new deadline.
            let started = Instant::now();
            let stop = Deadline::after(timer.as_mut(), short);
            let (outcome, b) = read_until(&mut stream, buf, stop, &mut cancel).await;
            buf = b;
            let waited = started.elapsed();
            assert!(
                matches!(outcome, ReadOutcome::TimedOut),
                "{kind}: {outcome:?}"
            );
            assert!(waited < Duration::from_secs(2), "{kind}: waited {waited:?}");

            // A deadline at an instant already past times out at once, losing nothing.
            let stop = Deadline::at(timer.as_mut(), Instant::now());
            let (outcome, b) = read_until(&mut stream, buf, stop, &mut cancel).await;
            buf = b;
            assert!(
                matches!(outcome, ReadOutcome::TimedOut),
                "{kind}: {outcome:?}"
            );

            let stop = Deadline::after(timer.as_mut(), long);
            let bye = Bytes::from_static(b"bye!");
            let mut write_cancel = Canceller::new();
            let (res, _) = write_all_until(&mut stream, bye, stop, &mut write_cancel).await;
            res.unwrap_or_else(|e| panic!("{kind}: {e}"));
            loop {
                let stop = Deadline::after(timer.as_mut(), long);
                let (outcome, b) = read_until(&mut stream, buf, stop, &mut cancel).await;
                buf = b;
                match outcome {
                    ReadOutcome::Read(0) => break,
                    ReadOutcome::Read(_) => {}
                    other => panic!("{kind}: {other:?}"),
                }
            }
            assert_eq!(&buf[..], b"pongend");
            peer
        });
        peer.join().unwrap();
    }
}

/// [`read_timeout_near_deadline_loses_nothing`] with what the proxy keeps per connection: one
/// read canceller (replaced after each cancel) and one timer for all the reads.
#[test]
fn kept_canceller_and_timer_near_deadline_lose_nothing() {
    trickle_near_deadline_loses_nothing(
        "kept_canceller_and_timer_near_deadline_lose_nothing",
        TrickleReads::Kept,
    );
}

#[test]
fn write_all_timeout_times_out_and_resumes() {
    const TOTAL: usize = 32 * 1024 * 1024;
    for kind in drivers("write_all_timeout_times_out_and_resumes") {
        let data = pattern(TOTAL);
        let expected = data.clone();
        let peer = block_on(kind, async move {
            let (mut stream, peer) = accept_one(move |mut conn| {
                thread::sleep(Duration::from_millis(1000));
                let mut got = Vec::with_capacity(TOTAL);
                conn.read_to_end(&mut got).unwrap();
                assert_eq!(got.len(), TOTAL);
                assert!(got == expected[..], "stream corrupted");
            })
            .await;
            let started = Instant::now();
            let (res, data) =
                write_all_timeout(&mut stream, data, Duration::from_millis(200)).await;
            let waited = started.elapsed();
            let written = match res {
                Err(WriteError::TimedOut { written }) => written,
                other => panic!("{kind}: expected a timeout, got {other:?}"),
            };
            assert!(written < TOTAL);
            assert!(waited >= Duration::from_millis(190), "{kind}: {waited:?}");
            assert!(waited < Duration::from_millis(900), "{kind}: {waited:?}");
            eprintln!("{kind}: write timed out after {written} of {TOTAL} bytes");

            let (res, _) =
                write_all_timeout(&mut stream, data.slice(written..), Duration::from_secs(20))
                    .await;
            res.expect("resume write");
            drop(stream);
            peer
        });
        peer.join().unwrap();
    }
}

/// The proxy's reads of responses and bodies: a plain read that the deadline drops. Data that is
/// there is read; a read that waits past the deadline times out (not before) and its buffer is
/// gone with it; the runtime goes on (the next operation on the stream works).
#[test]
fn read_or_drop_reads_and_times_out() {
    for kind in drivers("read_or_drop_reads_and_times_out") {
        let peer = block_on(kind, async {
            let (mut stream, peer) = accept_one(|mut conn| {
                conn.write_all(b"first").unwrap();
                let mut got = [0u8; 4];
                conn.read_exact(&mut got).unwrap();
                assert_eq!(&got, b"next");
            })
            .await;
            let long = monoio::time::sleep(Duration::from_secs(5));
            let (outcome, buf) = io::read_or_drop(&mut stream, BytesMut::new(), long).await;
            let buf = buf.expect("a completed read gives its buffer back");
            assert_eq!(read_bytes(&outcome), 5, "{kind}");
            assert_eq!(&buf[..], b"first");

            let short = Duration::from_millis(100);
            let started = Instant::now();
            let stop = monoio::time::sleep(short);
            let (outcome, buf) = io::read_or_drop(&mut stream, buf, stop).await;
            assert!(
                matches!(outcome, ReadOutcome::TimedOut),
                "{kind}: {outcome:?}"
            );
            assert!(buf.is_none(), "{kind}: the dropped read's buffer came back");
            assert!(
                started.elapsed() >= short - Duration::from_millis(5),
                "{kind}: early"
            );

            let (res, _) = write_all_timeout(
                &mut stream,
                Bytes::from_static(b"next"),
                Duration::from_secs(5),
            )
            .await;
            res.unwrap_or_else(|e| panic!("{kind}: {e}"));
            peer
        });
        peer.join().unwrap();
    }
}

/// The proxy's writes: a plain write that the deadline drops. The peer reads nothing for 1 s,
/// then everything until the end of the stream, which comes when the timed-out stream is
/// dropped: what it got must be what was written, in order (a prefix of the data, at least as
/// long as the `written` reported), whether the last write was dropped under io_uring (whose
/// driver keeps the buffer until the kernel is done with it) or under epoll.
#[test]
fn write_or_drop_times_out_and_what_went_out_is_intact() {
    const TOTAL: usize = 32 * 1024 * 1024;
    for vectored in [false, true] {
        for kind in drivers("write_or_drop_times_out_and_what_went_out_is_intact") {
            let data = pattern(TOTAL);
            let expected = data.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            let peer = block_on(kind, async move {
                let (mut stream, peer) = accept_one(move |mut conn| {
                    thread::sleep(Duration::from_millis(1000));
                    let mut got = Vec::with_capacity(TOTAL);
                    conn.read_to_end(&mut got).unwrap();
                    let written: usize = rx.recv().unwrap();
                    assert!(got.len() >= written, "got {} of {written}", got.len());
                    assert!(got.len() < TOTAL);
                    assert!(got[..] == expected[..got.len()], "stream corrupted");
                })
                .await;
                let started = Instant::now();
                let stop = monoio::time::sleep(Duration::from_millis(200));
                let (res, returned) = if vectored {
                    let bufs = BytesVec::from(vec![data.slice(..100), data.slice(100..)]);
                    let (res, bufs) = write_vectored_all_or_drop(&mut stream, bufs, stop).await;
                    (res, bufs.is_some())
                } else {
                    let (res, buf) = write_all_or_drop(&mut stream, data, stop).await;
                    (res, buf.is_some())
                };
                let waited = started.elapsed();
                let written = match res {
                    Err(WriteError::TimedOut { written }) => written,
                    other => panic!("{kind}: expected a timeout, got {other:?}"),
                };
                assert!(!returned, "{kind}: the dropped write's buffer came back");
                assert!(waited >= Duration::from_millis(190), "{kind}: {waited:?}");
                assert!(waited < Duration::from_millis(900), "{kind}: {waited:?}");
                tx.send(written).unwrap();
                drop(stream);
                peer
            });
            peer.join().unwrap();
        }
    }
}

#[test]
fn write_vectored_all_timeout_writes_head_and_body() {
    for kind in drivers("write_vectored_all_timeout_writes_head_and_body") {
        let head = Bytes::from_static(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n");
        let body = Bytes::from_static(b"hello world");
        let mut expected = head.to_vec();
        expected.extend_from_slice(&body);
        let peer = block_on(kind, async move {
            let (mut stream, peer) = accept_one(move |mut conn| {
                let mut got = Vec::new();
                conn.read_to_end(&mut got).unwrap();
                assert_eq!(got, expected);
            })
            .await;
            let mut bufs = BytesVec::from(vec![head.clone(), Bytes::new()]);
            bufs.push(body.clone());
            assert_eq!(bufs.total_len(), head.len() + body.len());
            let (res, bufs) =
                write_vectored_all_timeout(&mut stream, bufs, Duration::from_secs(5)).await;
            res.unwrap();
            // The parts come back untouched.
            assert_eq!(bufs.into_inner(), vec![head, Bytes::new(), body]);
            drop(stream);
            peer
        });
        peer.join().unwrap();
    }
}

#[test]
fn write_vectored_all_timeout_times_out_and_resumes() {
    const BODY: usize = 32 * 1024 * 1024;
    for kind in drivers("write_vectored_all_timeout_times_out_and_resumes") {
        let head = Bytes::from_static(b"HTTP/1.1 200 OK\r\n\r\n");
        let body = pattern(BODY);
        let mut expected = head.to_vec();
        expected.extend_from_slice(&body);
        let total = expected.len();
        let peer = block_on(kind, async move {
            let (mut stream, peer) = accept_one(move |mut conn| {
                thread::sleep(Duration::from_millis(1000));
                let mut got = Vec::with_capacity(total);
                conn.read_to_end(&mut got).unwrap();
                assert_eq!(got.len(), total);
                assert!(got == expected, "stream corrupted");
            })
            .await;
            let bufs = BytesVec::from(vec![head, body]);
            let (res, mut bufs) =
                write_vectored_all_timeout(&mut stream, bufs, Duration::from_millis(200)).await;
            let err = res.expect_err("expected a timeout");
            assert!(err.is_timeout(), "{kind}: {err}");
            let written = err.written();
            assert!(written > 0 && written < total, "{kind}: {written}");

            bufs.advance(written);
            assert_eq!(bufs.total_len(), total - written);
            let (res, _) =
                write_vectored_all_timeout(&mut stream, bufs, Duration::from_secs(20)).await;
            res.expect("resume writev");
            drop(stream);
            peer
        });
        peer.join().unwrap();
    }
}

#[test]
fn accept_timeout_times_out_then_accepts() {
    for kind in drivers("accept_timeout_times_out_then_accepts") {
        let peer = block_on(kind, async {
            let listener = shard_listener(local(), 16).unwrap();
            let addr = listener.local_addr().unwrap();
            let started = Instant::now();
            let none = accept_timeout(&listener, Duration::from_millis(50))
                .await
                .unwrap();
            assert!(none.is_none());
            assert!(started.elapsed() >= Duration::from_millis(45));
            let peer = thread::spawn(move || {
                thread::sleep(Duration::from_millis(100));
                let mut conn = std::net::TcpStream::connect(addr).unwrap();
                conn.write_all(b"x").unwrap();
            });
            // A few timeouts, then the connection: none of the cancelled accepts swallows it.
            let mut timeouts = 0;
            let (mut stream, _) = loop {
                match accept_timeout(&listener, Duration::from_millis(10))
                    .await
                    .unwrap()
                {
                    Some(conn) => break conn,
                    None => timeouts += 1,
                }
            };
            assert!(timeouts > 0);
            let (outcome, buf) =
                read_timeout(&mut stream, BytesMut::new(), Duration::from_secs(5)).await;
            assert_eq!(read_bytes(&outcome), 1);
            assert_eq!(&buf[..], b"x");
            peer
        });
        peer.join().unwrap();
    }
}
