//! Fault injection for upstream failover: the real engine on loopback in front of in-process
//! upstreams that die, stall, fail, reset and flap while a bounded load runs through the
//! gateway. Every test prints what it measured.
//!
//! The tests run one at a time (they share a lock): the machine has few cores, and the timing
//! bounds are about the gateway, not about tests starving each other.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{admin, Conn};
use headwater_engine::server::Server;
use headwater_engine::upstream_demo::{Behavior, UpstreamServer};
use http::Method;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Upstreams, configs and the admin API
// ---------------------------------------------------------------------------------------------

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs the tests of this file one after the other.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A 200 whose body is the upstream's name (responses also carry `x-upstream: name`).
fn named(name: &str) -> Behavior {
    Behavior::Fixed {
        body: Bytes::from(name.to_owned()),
    }
}

/// An upstream answering 200 with its own name, on an ephemeral port.
fn upstream(name: &str) -> UpstreamServer {
    UpstreamServer::start(name, "127.0.0.1:0".parse().unwrap(), named(name))
        .expect("upstream starts")
}

/// Starts an upstream again on the port it had (retrying briefly if the port is still busy).
fn restart(name: &str, addr: SocketAddr) -> UpstreamServer {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match UpstreamServer::start(name, addr, named(name)) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("restarting {name} on {addr}: {e}; retrying");
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot restart {name} on {addr}: {e}"),
        }
    }
}

/// Active HTTP checks: fast enough for a test (probe every 100 ms, down after one failure, up
/// after two passes).
const HEALTH: &str =
    "health = { path = \"/health\", interval = \"100ms\", timeout = \"50ms\", rise = 2, fall = 1 }";

/// A retry budget that lets every load client's request be a retry at the same time.
///
/// When an upstream dies or resets under load, every request in flight to it may need a retry,
/// and each holds its retry through the backoff; all [`CLIENTS`] connections may land on one
/// shard. The default budget (3 concurrent retries per shard, or 20 % of the requests in
/// flight, no reserve) then refuses the fourth by design, which `retry_budget_is_enforced`
/// tests; the failover scenarios size the budget to the load instead.
fn per_client_budget() -> String {
    format!("retry_budget = {{ percent = 20, min_concurrent = {CLIENTS} }}")
}

/// A `[[cluster]]` with `endpoints` as (address, priority), and `extra` keys.
fn cluster(name: &str, endpoints: &[(SocketAddr, u8)], extra: &str) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|(a, p)| format!("{{ address = \"{a}\", priority = {p} }}"))
        .collect();
    format!(
        "[[cluster]]\nname = \"{name}\"\nendpoints = [{}]\n{extra}\n\n",
        eps.join(", ")
    )
}

/// Priority-0 endpoints.
fn level0(addrs: &[SocketAddr]) -> Vec<(SocketAddr, u8)> {
    addrs.iter().map(|a| (*a, 0)).collect()
}

/// A gateway config: two workers, an admin listener, the given clusters, and one catch-all
/// route to cluster "app" with `route_extra` keys.
fn gateway(clusters: &[String], route_extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\nadmin = \"127.0.0.1:0\"\ndrain_timeout = \"1s\"\n\n{}[[route]]\nname = \"all\"\ncluster = \"app\"\n{route_extra}\n",
        clusters.concat()
    )
}

fn admin_addr(gw: &Server) -> SocketAddr {
    gw.admin_addr().expect("admin listener")
}

/// Starts a [`gateway`] whose only cluster, "app", has `addrs` at priority 0 and `extra` keys;
/// returns it with its admin address.
fn start_app(addrs: &[SocketAddr], extra: &str, route_extra: &str) -> (Server, SocketAddr) {
    let gw = common::start(&gateway(
        &[cluster("app", &level0(addrs), extra)],
        route_extra,
    ));
    let adm = admin_addr(&gw);
    (gw, adm)
}

fn status(admin_at: SocketAddr) -> Value {
    let (code, body) = admin(admin_at, "GET", "/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("/status is JSON")
}

/// The /status entry of endpoint `addr` of cluster `name`.
fn endpoint_status(st: &Value, name: &str, addr: SocketAddr) -> Value {
    let c = st["clusters"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no cluster {name} in {st}"));
    c["endpoints"]
        .as_array()
        .and_then(|es| es.iter().find(|e| e["address"] == addr.to_string()))
        .unwrap_or_else(|| panic!("no endpoint {addr} in {c}"))
        .clone()
}

/// Attempts the gateway finished on an endpoint (responses, connect failures, resets...).
fn attempts(admin_at: SocketAddr, name: &str, addr: SocketAddr) -> u64 {
    endpoint_status(&status(admin_at), name, addr)["requests"]
        .as_u64()
        .expect("requests")
}

/// Waits until every endpoint in `addrs` of cluster `name` is in `want`; returns how long it took.
fn wait_state(admin_at: SocketAddr, name: &str, addrs: &[SocketAddr], want: &str) -> Duration {
    let t = Instant::now();
    loop {
        let st = status(admin_at);
        let eps: Vec<Value> = addrs
            .iter()
            .map(|a| endpoint_status(&st, name, *a))
            .collect();
        if eps.iter().all(|e| e["state"] == want) {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "timed out waiting for {addrs:?} to be {want}: {eps:#?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Polls `cond` every 5 ms until it holds; panics after `timeout`. Returns the time it took.
fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    loop {
        if cond() {
            return t.elapsed();
        }
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// The value of the metric line `series` (name with labels, e.g. `x_total{cluster="app"}`).
fn metric(admin_at: SocketAddr, series: &str) -> f64 {
    let (code, text) = admin(admin_at, "GET", "/metrics");
    assert_eq!(code, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

// ---------------------------------------------------------------------------------------------
// The load generator
// ---------------------------------------------------------------------------------------------

/// What one request through the gateway came to.
#[derive(Debug, Clone)]
struct Sample {
    /// When it was sent, since the load started.
    at: Duration,
    /// Until the whole response was read.
    latency: Duration,
    /// 0 when no response came (the connection failed).
    status: u16,
    /// `x-upstream` of the answer: which upstream served it (none for the gateway's own).
    upstream: Option<String>,
    /// For anything but a 200: `x-headwater-error`, `retry-after` and the body.
    error: Option<String>,
    retry_after: Option<String>,
    body: Option<Bytes>,
}

/// Client threads sending GETs through the gateway at a bounded rate, each on a keep-alive
/// connection (opened again whenever the gateway closes it), until stopped.
struct Load {
    t0: Instant,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Vec<Sample>>>,
}

const CLIENTS: usize = 4;
/// How long before a fault a request may have been sent and still meet it (it was in flight).
const SLACK: Duration = Duration::from_millis(50);
/// Requests per second, all clients together.
const RATE: u32 = 2000;

impl Load {
    /// `clients` threads sending `rate` requests per second in all.
    fn start(addr: SocketAddr, clients: usize, rate: u32) -> Load {
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let interval = Duration::from_secs_f64(clients as f64 / f64::from(rate));
        let threads = (0..clients)
            .map(|i| {
                let stop = stop.clone();
                let done = done.clone();
                thread::Builder::new()
                    .name(format!("load-{i}"))
                    .spawn(move || client(addr, t0, interval, &stop, &done))
                    .unwrap()
            })
            .collect();
        Load {
            t0,
            stop,
            done,
            threads,
        }
    }

    /// Time since the load started (on the samples' clock).
    fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Requests completed so far.
    fn completed(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Lets the load run for at least `min` and until `requests` more requests completed (a
    /// busy machine slows the clients down; the phases of a test need enough samples).
    fn run(&self, min: Duration, requests: u64) {
        let from = self.completed();
        thread::sleep(min);
        wait_until(
            &format!("{requests} requests"),
            Duration::from_secs(10),
            || self.completed() >= from + requests,
        );
    }

    /// Stops the clients and collects every sample, in sending order.
    fn finish(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut samples: Vec<Sample> = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().expect("load thread"))
            .collect();
        samples.sort_by_key(|s| s.at);
        Report {
            samples,
            duration: self.t0.elapsed(),
        }
    }
}

fn client(
    addr: SocketAddr,
    t0: Instant,
    interval: Duration,
    stop: &AtomicBool,
    done: &AtomicU64,
) -> Vec<Sample> {
    let request = b"GET /load HTTP/1.1\r\nHost: failover.test\r\n\r\n";
    let mut samples = Vec::new();
    let mut conn: Option<Conn> = None;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else {
            // Behind (a slow answer): do not burst to catch up.
            next = now;
        }
        next += interval;
        let sent = Instant::now();
        let result = match &mut conn {
            Some(c) => Ok(c),
            None => Conn::try_open(addr).map(|c| conn.insert(c)),
        }
        .and_then(|c| {
            std::io::Write::write_all(&mut c.stream, request)?;
            c.read_response(&Method::GET)
        });
        let latency = sent.elapsed();
        let at = sent.duration_since(t0);
        let sample = match result {
            Ok(r) => {
                let close = r
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                if close {
                    conn = None;
                }
                let ok = r.status() == 200;
                Sample {
                    at,
                    latency,
                    status: r.status(),
                    upstream: r.header("x-upstream"),
                    error: if ok {
                        None
                    } else {
                        r.header("x-headwater-error")
                    },
                    retry_after: if ok { None } else { r.header("retry-after") },
                    body: if ok { None } else { Some(r.body.clone()) },
                }
            }
            Err(e) => {
                conn = None;
                Sample {
                    at,
                    latency,
                    status: 0,
                    upstream: None,
                    error: Some(format!("no response: {e}")),
                    retry_after: None,
                    body: None,
                }
            }
        };
        samples.push(sample);
        done.fetch_add(1, Ordering::Relaxed);
    }
    samples
}

/// Every request a [`Load`] made.
struct Report {
    samples: Vec<Sample>,
    duration: Duration,
}

impl Report {
    fn len(&self) -> usize {
        self.samples.len()
    }

    /// Requests that did not get a 200.
    fn failed(&self) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.status != 200).collect()
    }

    /// Requests sent in `[from, to)`.
    fn sent_between(&self, from: Duration, to: Duration) -> impl Iterator<Item = &Sample> {
        self.samples
            .iter()
            .filter(move |s| s.at >= from && s.at < to)
    }

    /// Requests sent in `[from, to)` that `name` answered.
    fn served_by(&self, name: &str, from: Duration, to: Duration) -> usize {
        self.sent_between(from, to)
            .filter(|s| s.upstream.as_deref() == Some(name))
            .count()
    }

    /// Requests `name` answered that were complete before `t` (so certainly not retried
    /// because of something that happened at `t`).
    fn served_by_before(&self, name: &str, t: Duration) -> usize {
        self.samples
            .iter()
            .filter(|s| s.at + s.latency < t && s.upstream.as_deref() == Some(name))
            .count()
    }

    fn rate(&self) -> f64 {
        self.len() as f64 / self.duration.as_secs_f64()
    }

    /// `{requests} requests ({rate}/s), {failed} failed, latency p50/p99/max`.
    fn summary(&self) -> String {
        let mut latencies: Vec<Duration> = self.samples.iter().map(|s| s.latency).collect();
        let (p50, p99) = (
            percentile(&mut latencies, 50.0),
            percentile(&mut latencies, 99.0),
        );
        format!(
            "{} requests ({:.0}/s), {} failed, latency p50 {} p99 {} max {}",
            self.len(),
            self.rate(),
            self.failed().len(),
            ms(p50),
            ms(p99),
            ms(*latencies.last().unwrap())
        )
    }

    /// Panics listing the first failures when there are any.
    fn assert_no_failures(&self, what: &str) {
        let failed = self.failed();
        assert!(
            failed.is_empty(),
            "{what}: {} of {} requests failed; first: {:#?}",
            failed.len(),
            self.len(),
            &failed[..failed.len().min(3)]
        );
    }
}

/// The `p`-th percentile (0..=100) of `values`.
fn percentile(values: &mut [Duration], p: f64) -> Duration {
    assert!(!values.is_empty());
    values.sort_unstable();
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// 1. One of three upstreams dies under load: no GET fails, and once it is ejected the gateway
///    stops trying it while the others keep serving.
#[test]
fn kill_one_of_three_fails_no_request() {
    let _serial = serial();
    let a = upstream("a");
    let b = upstream("b");
    let c = upstream("c");
    let c_addr = c.addr();
    let (gw, adm) = start_app(
        &[a.addr(), b.addr(), c_addr],
        &format!(
            "outlier = {{ consecutive_gateway_failures = 2 }}\n{}",
            per_client_budget()
        ),
        "",
    );
    let load = Load::start(gw.listen_addrs()[0], CLIENTS, RATE);
    wait_until("traffic on all three", Duration::from_secs(3), || {
        a.requests() > 50 && b.requests() > 50 && c.requests() > 50
    });

    c.stop();
    let stopped_at = load.now();
    let detection = wait_state(adm, "app", &[c_addr], "ejected");

    // Ejected: not even a connect attempt any more (a quarantine alone would let each shard try
    // it again after 1 s), while the others take the load.
    let tries = attempts(adm, "app", c_addr);
    let (a0, b0) = (a.requests(), b.requests());
    load.run(Duration::from_millis(1300), 300);
    let tries_after = attempts(adm, "app", c_addr);
    let (a1, b1) = (a.requests(), b.requests());
    let report = load.finish();

    eprintln!(
        "kill one of three: {}, ejected {} after it stopped, {} attempts on it in the next 1.3 s (a +{}, b +{})",
        report.summary(),
        ms(detection),
        tries_after - tries,
        a1 - a0,
        b1 - b0
    );
    report.assert_no_failures("kill one of three");
    assert_eq!(
        tries_after, tries,
        "the ejected endpoint must get no attempts"
    );
    assert!(
        a1 - a0 > 100 && b1 - b0 > 100,
        "the survivors keep serving: a +{}, b +{}",
        a1 - a0,
        b1 - b0
    );
    assert_eq!(report.served_by("c", stopped_at, report.duration), 0);
}

/// 2. An upstream that stalls (accepts, never answers) is ejected after a few response
///    timeouts; only requests that were already sent to it fail.
#[test]
fn stalled_upstream_is_ejected() {
    let _serial = serial();
    let a = upstream("a");
    let b = upstream("b");
    let s = upstream("s");
    let (gw, adm) = start_app(
        &[a.addr(), b.addr(), s.addr()],
        "outlier = { consecutive_gateway_failures = 3 }",
        "timeouts = { response_header = \"200ms\" }",
    );
    let load = Load::start(gw.listen_addrs()[0], CLIENTS, RATE);
    wait_until("traffic on s", Duration::from_secs(3), || s.requests() > 50);

    let stalled_at = load.now();
    s.set_behavior(Behavior::Stall);
    wait_state(adm, "app", &[s.addr()], "ejected");
    let detected_at = load.now();
    load.run(Duration::from_millis(500), 200);
    let report = load.finish();

    let failed = report.failed();
    let after: Vec<_> = report
        .sent_between(detected_at, report.duration)
        .filter(|x| x.status != 200)
        .collect();
    eprintln!(
        "stalled upstream: {}, ejected {} after it stalled (timeouts on it: {}); {} requests sent after the ejection, {} failed",
        report.summary(),
        ms(detected_at - stalled_at),
        report.failed().len(),
        report.sent_between(detected_at, report.duration).count(),
        after.len()
    );
    assert!(after.is_empty(), "failed after the ejection: {after:#?}");
    // Response timeouts are not retried by default: the timeouts that ejected it reached the
    // clients (and the checks below are about them).
    assert!(!failed.is_empty(), "no request met the stall");
    for f in &failed {
        assert_eq!(f.status, 504, "{f:#?}");
        assert_eq!(f.error.as_deref(), Some("upstream_response_timeout"));
        // Sent after the stall, or just before it and read by the upstream after.
        assert!(
            f.at + SLACK >= stalled_at,
            "failed before the stall: {f:#?}"
        );
    }
    // Each client has one request in flight, and one stuck on the stalled upstream takes the
    // 200 ms timeout to fail: until the ejection, a client loses at most one request per 200 ms.
    let window = (detected_at - stalled_at).as_millis() as usize;
    let bound = CLIENTS * (window / 200 + 2);
    assert!(
        failed.len() <= bound,
        "{} requests failed on the stalled upstream (bound {bound})",
        failed.len()
    );
    assert!(report.sent_between(detected_at, report.duration).count() > 150);
}

/// 3. An upstream answering 500 is ejected by outlier detection; the 500s it sent before that
///    (500 is not retried by default) are bounded.
#[test]
fn upstream_answering_500_is_ejected() {
    let _serial = serial();
    let a = upstream("a");
    let b = upstream("b");
    let e = upstream("e");
    let (gw, adm) = start_app(
        &[a.addr(), b.addr(), e.addr()],
        "outlier = { consecutive_5xx = 3, base_ejection = \"5s\" }",
        "",
    );
    let load = Load::start(gw.listen_addrs()[0], CLIENTS, RATE / 2);
    wait_until("traffic on e", Duration::from_secs(3), || e.requests() > 50);

    let broke_at = load.now();
    e.set_behavior(Behavior::Status(500));
    wait_state(adm, "app", &[e.addr()], "ejected");
    let detected_at = load.now();
    load.run(Duration::from_millis(500), 200);
    let report = load.finish();

    let failed = report.failed();
    let end = report.duration;
    eprintln!(
        "upstream answering 500: {}, ejected {} after it broke; 500s that reached clients: {}; after the ejection a {} b {} e {}",
        report.summary(),
        ms(detected_at - broke_at),
        failed.len(),
        report.served_by("a", detected_at, end),
        report.served_by("b", detected_at, end),
        report.served_by("e", detected_at, end),
    );
    // The 500s that ejected it reached the clients (and the checks below are about them).
    assert!(!failed.is_empty(), "no request met the 500s");
    for f in &failed {
        assert_eq!(f.status, 500, "{f:#?}");
        assert_eq!(f.upstream.as_deref(), Some("e"));
        assert!(f.at + SLACK >= broke_at && f.at < detected_at, "{f:#?}");
    }
    // Each of the two shards stops sending to e after its own 3rd 500 in a row (a local
    // quarantine, before the health thread's next tick), so at most 3 per shard plus the
    // requests already on their way to e reach clients.
    let quarantines = metric(adm, "headwater_local_quarantines_total{cluster=\"app\"}");
    assert!(quarantines >= 1.0, "no shard quarantined e on its own");
    assert!(
        failed.len() <= 2 * 3 + CLIENTS,
        "{} 500s reached clients before the ejection",
        failed.len()
    );
    assert_eq!(report.served_by("e", detected_at, end), 0);
    assert!(report.served_by("a", detected_at, end) > 50);
    assert!(report.served_by("b", detected_at, end) > 50);
}

/// 4. An upstream that resets connections: GETs are retried on another endpoint (no failure),
///    and it is ejected.
#[test]
fn resetting_upstream_is_retried_and_ejected() {
    let _serial = serial();
    let a = upstream("a");
    let b = upstream("b");
    let r = upstream("r");
    let (gw, adm) = start_app(&[a.addr(), b.addr(), r.addr()], &per_client_budget(), "");
    let load = Load::start(gw.listen_addrs()[0], CLIENTS, RATE);
    wait_until("traffic on r", Duration::from_secs(3), || r.requests() > 50);

    let broke_at = load.now();
    r.set_behavior(Behavior::Reset);
    wait_state(adm, "app", &[r.addr()], "ejected");
    let detected_at = load.now();
    load.run(Duration::from_millis(300), 100);
    let report = load.finish();
    let retries = metric(adm, "headwater_upstream_retries_total{cluster=\"app\"}");
    let exhausted = metric(
        adm,
        "headwater_retry_budget_exhausted_total{cluster=\"app\"}",
    );

    eprintln!(
        "resetting upstream: {}, {} retries, retry budget exhausted {}, ejected {} after it began resetting",
        report.summary(),
        retries,
        exhausted,
        ms(detected_at - broke_at)
    );
    report.assert_no_failures("resetting upstream");
    assert!(retries >= 1.0, "resets were retried");
    assert_eq!(report.served_by("r", detected_at, report.duration), 0);
}

/// 5. An upstream that flaps (stops and starts on the same port) with active checks: no GET
///    fails.
#[test]
fn flapping_upstream_with_active_checks_fails_no_request() {
    let _serial = serial();
    let a = upstream("a");
    let b = upstream("b");
    let f = upstream("f");
    let f_addr = f.addr();
    let (gw, adm) = start_app(
        &[a.addr(), b.addr(), f_addr],
        &format!("{HEALTH}\n{}", per_client_budget()),
        "",
    );
    wait_state(adm, "app", &[a.addr(), b.addr(), f_addr], "healthy");
    let load = Load::start(gw.listen_addrs()[0], CLIENTS, RATE);
    let flaps = 4;
    let flapper = thread::spawn(move || {
        let mut f = Some(f);
        for _ in 0..flaps {
            thread::sleep(Duration::from_millis(350));
            if let Some(up) = f.take() {
                up.stop();
            }
            thread::sleep(Duration::from_millis(300));
            f = Some(restart("f", f_addr));
        }
        thread::sleep(Duration::from_millis(350));
    });
    flapper.join().unwrap();
    let report = load.finish();
    let failed_probes = metric(
        adm,
        "headwater_health_probes_total{cluster=\"app\",result=\"fail\"}",
    );
    let served_f = report.served_by("f", Duration::ZERO, report.duration);

    eprintln!(
        "flapping upstream: {}, {flaps} flaps of 300 ms, {failed_probes} failed probes, f served {served_f}",
        report.summary()
    );
    report.assert_no_failures("flapping upstream");
    assert!(failed_probes >= 1.0, "the probes saw the flapping");
    assert!(served_f > 0, "the flapping upstream was in rotation");
}

/// 6. Every upstream down, with active checks: a fast 503 that names the cluster and every
///    endpoint; then they come back and traffic returns within rise × interval (+ slack).
#[test]
fn all_down_is_a_fast_503_then_recovers() {
    let _serial = serial();
    let a = upstream("a");
    let b = upstream("b");
    let (a_addr, b_addr) = (a.addr(), b.addr());
    let (gw, adm) = start_app(&[a_addr, b_addr], HEALTH, "");
    wait_state(adm, "app", &[a_addr, b_addr], "healthy");
    a.stop();
    b.stop();
    let detection = wait_state(adm, "app", &[a_addr, b_addr], "unhealthy");

    let load = Load::start(gw.listen_addrs()[0], CLIENTS, RATE / 2);
    load.run(Duration::from_millis(600), 200);
    let back_at = load.now();
    let _a = restart("a", a_addr);
    let _b = restart("b", b_addr);
    wait_state(adm, "app", &[a_addr, b_addr], "healthy");
    load.run(Duration::from_millis(400), 200);
    let report = load.finish();

    let down: Vec<&Sample> = report.sent_between(Duration::ZERO, back_at).collect();
    assert!(down.len() > 100, "{} requests while down", down.len());
    let mut latencies: Vec<Duration> = down.iter().map(|s| s.latency).collect();
    let p50 = percentile(&mut latencies, 50.0);
    let p99 = percentile(&mut latencies, 99.0);
    let max = *latencies.last().unwrap();
    for s in &down {
        assert_eq!(s.status, 503, "{s:#?}");
        assert_eq!(s.error.as_deref(), Some("no_healthy_upstream"), "{s:#?}");
        let retry_after: u64 = s
            .retry_after
            .as_deref()
            .expect("Retry-After")
            .parse()
            .expect("Retry-After in seconds");
        assert!((1..=5).contains(&retry_after), "Retry-After {retry_after}");
        let body: Value = serde_json::from_slice(s.body.as_deref().unwrap()).expect("JSON");
        let err = &body["error"];
        assert_eq!(err["code"], "no_healthy_upstream", "{body}");
        assert_eq!(err["cluster"], "app", "{body}");
        assert_eq!(err["retry_after_s"], retry_after, "{body}");
        let eps = err["endpoints"].as_array().expect("endpoints");
        let mut named: Vec<&str> = eps.iter().filter_map(|e| e["address"].as_str()).collect();
        named.sort_unstable();
        let mut want = [a_addr.to_string(), b_addr.to_string()];
        want.sort_unstable();
        assert_eq!(named, want, "{body}");
        for e in eps {
            assert_eq!(e["state"], "unhealthy", "{body}");
            assert!(
                e["last_failure"].as_str().is_some_and(|f| !f.is_empty()),
                "{body}"
            );
        }
    }
    // The first 200 after the restart, and nothing but 200s from then on.
    let first_ok = report
        .sent_between(back_at, report.duration)
        .find(|s| s.status == 200)
        .expect("traffic returned")
        .at;
    let after: Vec<_> = report
        .sent_between(first_ok, report.duration)
        .filter(|s| s.status != 200)
        .collect();
    let recovery = first_ok - back_at;
    eprintln!(
        "all down: unhealthy {} after the stop; {} fast 503s: p50 {}, p99 {}, max {}; traffic back {} after the restart (rise 2 × interval 100 ms); {}",
        ms(detection),
        down.len(),
        ms(p50),
        ms(p99),
        ms(max),
        ms(recovery),
        report.summary()
    );
    assert!(p99 < Duration::from_millis(50), "p99 of the 503s: {p99:?}");
    assert!(after.is_empty(), "failures after recovery: {after:#?}");
    assert!(
        recovery < Duration::from_millis(200 + 1300),
        "traffic came back {recovery:?} after the upstreams"
    );
}

/// 7. Priority levels: the primaries die, the backup serves without a failed GET; they come
///    back and traffic returns to them.
#[test]
fn backup_priority_level_takes_over_and_gives_back() {
    let _serial = serial();
    let p1 = upstream("p1");
    let p2 = upstream("p2");
    let backup = upstream("backup");
    let (p1_addr, p2_addr) = (p1.addr(), p2.addr());
    let gw = common::start(&gateway(
        &[cluster(
            "app",
            &[(p1_addr, 0), (p2_addr, 0), (backup.addr(), 1)],
            // Any failure of a primary ejects it (for 30 s): its checks passing again must end
            // that ejection, or traffic would not come back.
            &format!(
                "{HEALTH}\noutlier = {{ consecutive_gateway_failures = 1 }}\n{}",
                per_client_budget()
            ),
        )],
        "",
    ));
    let adm = admin_addr(&gw);
    wait_state(adm, "app", &[p1_addr, p2_addr, backup.addr()], "healthy");
    let load = Load::start(gw.listen_addrs()[0], CLIENTS, RATE);
    load.run(Duration::from_millis(400), 200);

    let killed_at = load.now();
    p1.stop();
    p2.stop();
    let stopped_at = load.now();
    let detection = wait_state(adm, "app", &[p1_addr, p2_addr], "unhealthy");
    load.run(Duration::from_millis(400), 200);
    let back_at = load.now();
    let _p1 = restart("p1", p1_addr);
    let _p2 = restart("p2", p2_addr);
    wait_state(adm, "app", &[p1_addr, p2_addr], "healthy");
    let healthy_at = load.now();
    load.run(Duration::from_millis(1500), 300);
    let report = load.finish();
    let ejections: u64 = {
        let st = status(adm);
        [p1_addr, p2_addr]
            .iter()
            .map(|a| {
                endpoint_status(&st, "app", *a)["ejections"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum()
    };

    let end = report.duration;
    let before = report.served_by_before("backup", killed_at);
    let during = report.sent_between(stopped_at, back_at).count();
    let during_backup = report.served_by("backup", stopped_at, back_at);
    let last_backup = report
        .sent_between(back_at, end)
        .filter(|s| s.upstream.as_deref() == Some("backup"))
        .map(|s| s.at)
        .max()
        .unwrap_or(back_at);
    // A shard that failed to connect to a primary keeps away from it for 1 s on its own. The
    // last such failure came before the primaries were seen unhealthy, at least 400 ms before
    // the restart: from 600 ms after they are healthy again, nothing holds traffic back.
    let tail_from = healthy_at + Duration::from_millis(800);
    let tail = report.sent_between(tail_from, end).count();
    let tail_backup = report.served_by("backup", tail_from, end);
    eprintln!(
        "priority failover: {}; backup served {before} before the kill, {during_backup} of {during} while the primaries were down (unhealthy after {}); primaries healthy {} after the restart, backup's last request {} after the restart; backup served {tail_backup} of the {tail} sent from 800 ms after that; {ejections} outlier ejections of primaries",
        report.summary(),
        ms(detection),
        ms(healthy_at - back_at),
        ms(last_backup - back_at),
    );
    report.assert_no_failures("priority failover");
    assert_eq!(before, 0, "the backup is idle while the primaries serve");
    assert!(during > 100);
    assert_eq!(during_backup, during, "only the backup serves meanwhile");
    assert!(tail > 50);
    assert_eq!(tail_backup, 0, "traffic went back to the primaries");
    assert!(ejections >= 1, "a primary was ejected when it died");
}

/// 8. The route's cluster is all down: its fallback cluster serves.
#[test]
fn fallback_cluster_serves_when_the_route_cluster_is_down() {
    let _serial = serial();
    let a1 = upstream("a1");
    let a2 = upstream("a2");
    let spare = upstream("spare");
    let (a1_addr, a2_addr) = (a1.addr(), a2.addr());
    let gw = common::start(&gateway(
        &[
            cluster(
                "app",
                &level0(&[a1_addr, a2_addr]),
                &format!("{HEALTH}\n{}", per_client_budget()),
            ),
            cluster("spare", &level0(&[spare.addr()]), ""),
        ],
        "fallback = \"spare\"",
    ));
    let adm = admin_addr(&gw);
    wait_state(adm, "app", &[a1_addr, a2_addr], "healthy");
    let load = Load::start(gw.listen_addrs()[0], CLIENTS, RATE);
    load.run(Duration::from_millis(300), 200);
    let killed_at = load.now();
    a1.stop();
    a2.stop();
    let stopped_at = load.now();
    let detection = wait_state(adm, "app", &[a1_addr, a2_addr], "unhealthy");
    load.run(Duration::from_millis(500), 200);
    let report = load.finish();
    let fallbacks = metric(adm, "headwater_fallback_requests_total{cluster=\"app\"}");
    let exhausted = metric(
        adm,
        "headwater_retry_budget_exhausted_total{cluster=\"app\"}",
    );
    let retries = metric(adm, "headwater_upstream_retries_total{cluster=\"app\"}");

    let end = report.duration;
    let after = report.sent_between(stopped_at, end).count();
    let after_spare = report.served_by("spare", stopped_at, end);
    eprintln!(
        "fallback cluster: {}; spare served {} before the kill and {after_spare} of {after} after (app unhealthy after {}); {fallbacks} fallbacks, {retries} retries, budget exhausted {exhausted}",
        report.summary(),
        report.served_by_before("spare", killed_at),
        ms(detection)
    );
    report.assert_no_failures("fallback cluster");
    assert_eq!(
        report.served_by_before("spare", killed_at),
        0,
        "the spare is idle while app serves"
    );
    assert!(after > 100);
    assert_eq!(after_spare, after, "the spare serves everything");
    assert!(fallbacks >= after as f64, "fallbacks counted: {fallbacks}");
}

/// 9. A reload that replaces every endpoint, under load: no request fails, and the old ones
///    get nothing afterwards.
#[test]
fn reload_replacing_every_endpoint_fails_no_request() {
    let _serial = serial();
    let old1 = upstream("old1");
    let old2 = upstream("old2");
    let new1 = upstream("new1");
    let new2 = upstream("new2");
    let dir = std::env::temp_dir().join(format!("hw-failover-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gw.toml");
    let config_for = |addrs: &[SocketAddr]| gateway(&[cluster("app", &level0(addrs), HEALTH)], "");
    std::fs::write(&path, config_for(&[old1.addr(), old2.addr()])).unwrap();
    let gw = common::start_file(&path);
    let adm = admin_addr(&gw);
    wait_state(adm, "app", &[old1.addr(), old2.addr()], "healthy");
    let load = Load::start(gw.listen_addrs()[0], CLIENTS, RATE);
    load.run(Duration::from_millis(400), 200);

    std::fs::write(&path, config_for(&[new1.addr(), new2.addr()])).unwrap();
    let t = Instant::now();
    let (code, body) = admin(adm, "POST", "/-/reload");
    let reload_took = t.elapsed();
    assert_eq!(code, 200, "{body}");
    let reloaded_at = load.now();
    load.run(Duration::from_millis(300), 200);
    old1.stop();
    old2.stop();
    load.run(Duration::from_millis(300), 200);
    let report = load.finish();
    let healthy_new = {
        let st = status(adm);
        [new1.addr(), new2.addr()]
            .iter()
            .filter(|a| endpoint_status(&st, "app", **a)["state"] == "healthy")
            .count()
    };

    let _ = std::fs::remove_dir_all(&dir);

    let end = report.duration;
    let before =
        report.served_by_before("old1", reloaded_at) + report.served_by_before("old2", reloaded_at);
    let after = report.sent_between(reloaded_at, end).count();
    let old_after =
        report.served_by("old1", reloaded_at, end) + report.served_by("old2", reloaded_at, end);
    let new_after =
        report.served_by("new1", reloaded_at, end) + report.served_by("new2", reloaded_at, end);
    eprintln!(
        "reload replacing every endpoint: {}; reload took {}; after it: {after} requests, {new_after} to the new endpoints, {old_after} to the old (which had served {before} before); {healthy_new} of 2 new endpoints healthy",
        report.summary(),
        ms(reload_took),
    );
    report.assert_no_failures("reload replacing every endpoint");
    assert!(before > 100, "the old endpoints served before the reload");
    assert!(after > 100);
    assert_eq!(
        old_after, 0,
        "requests after the reload went to old endpoints"
    );
    assert_eq!(new_after, after);
    assert_eq!(healthy_new, 2, "the new endpoints are probed");
}

/// 10. With a zero retry budget, a resetting upstream's failures are not retried: some 502s
///     reach the client and the exhausted budget is counted.
#[test]
fn retry_budget_is_enforced() {
    let _serial = serial();
    let a = upstream("a");
    let r = upstream("r");
    r.set_behavior(Behavior::Reset);
    let (gw, adm) = start_app(
        &[a.addr(), r.addr()],
        "retry_budget = { percent = 0, min_concurrent = 0 }\noutlier = { enabled = false }",
        "",
    );
    let load = Load::start(gw.listen_addrs()[0], CLIENTS, RATE / 4);
    wait_until("some requests", Duration::from_secs(5), || {
        load.completed() >= 300
    });
    let report = load.finish();
    let exhausted = metric(
        adm,
        "headwater_retry_budget_exhausted_total{cluster=\"app\"}",
    );
    let retries = metric(adm, "headwater_upstream_retries_total{cluster=\"app\"}");

    let failed = report.failed();
    eprintln!(
        "retry budget 0%: {}, retries {retries}, retry budget exhausted {exhausted} times",
        report.summary()
    );
    assert!(!failed.is_empty(), "resets reached the client");
    for f in &failed {
        assert_eq!(f.status, 502, "{f:#?}");
        assert_eq!(f.error.as_deref(), Some("upstream_reset"), "{f:#?}");
    }
    assert!(exhausted >= failed.len() as f64, "exhausted {exhausted}");
    assert_eq!(retries, 0.0, "no retry was made");
    assert!(report.len() - failed.len() > 100, "a still serves");
}

/// 11. Panic mode: two of three endpoints ejected (not hard-down) puts the healthy share below
///     the panic threshold, and requests spread over all three again.
#[test]
fn panic_mode_spreads_over_ejected_endpoints() {
    let _serial = serial();
    let a = upstream("a");
    let x = upstream("x");
    let y = upstream("y");
    let (gw, adm) = start_app(
        &[a.addr(), x.addr(), y.addr()],
        "panic_threshold = 50\noutlier = { consecutive_5xx = 3, base_ejection = \"10s\", max_ejection_percent = 100 }",
        "",
    );
    let load = Load::start(gw.listen_addrs()[0], CLIENTS, RATE / 2);
    wait_until("traffic on x and y", Duration::from_secs(3), || {
        x.requests() > 50 && y.requests() > 50
    });
    x.set_behavior(Behavior::Status(500));
    y.set_behavior(Behavior::Status(500));
    wait_state(adm, "app", &[x.addr(), y.addr()], "ejected");
    // Healthy again but still ejected: only panic mode sends them traffic.
    x.set_behavior(named("x"));
    y.set_behavior(named("y"));
    let panic_from = load.now();
    let panic_status = status(adm)["clusters"][0]["panic"].clone();
    load.run(Duration::from_millis(800), 300);
    let still_ejected = {
        let st = status(adm);
        [x.addr(), y.addr()]
            .iter()
            .all(|e| endpoint_status(&st, "app", *e)["state"] == "ejected")
    };
    let report = load.finish();
    let picks = metric(adm, "headwater_panic_picks_total{cluster=\"app\"}");

    let end = report.duration;
    // Allow the shards a moment to serve the requests that were in flight at the switch.
    let from = panic_from + Duration::from_millis(50);
    let total = report.sent_between(from, end).count();
    let (sa, sx, sy) = (
        report.served_by("a", from, end),
        report.served_by("x", from, end),
        report.served_by("y", from, end),
    );
    let failed_in_panic = report
        .sent_between(from, end)
        .filter(|s| s.status != 200)
        .count();
    eprintln!(
        "panic mode: {}; in panic: {total} requests, a {sa}, x {sx}, y {sy}, {failed_in_panic} failed; {picks} panic picks; /status panic {panic_status}",
        report.summary()
    );
    assert_eq!(panic_status, Value::Bool(true), "/status shows panic");
    assert!(still_ejected, "x and y stayed ejected throughout");
    assert!(picks > 0.0, "panic picks counted");
    assert!(total > 200);
    assert_eq!(failed_in_panic, 0);
    for (name, n) in [("a", sa), ("x", sx), ("y", sy)] {
        assert!(
            n * 5 > total,
            "{name} served {n} of {total}: panic mode spreads over all three"
        );
    }
}

/// 12. Hedged requests: with one of two endpoints stalled (it accepts and never answers), every
///     GET still gets its answer from the other within about `hedge_after`, though the route
///     allows no retry and waits 2 s for a response head; a POST is never hedged.
#[test]
fn hedged_gets_are_answered_by_the_other_endpoint() {
    let _serial = serial();
    let f = upstream("f");
    let s = upstream("s");
    s.set_behavior(Behavior::Stall);
    let (gw, adm) = start_app(
        &[f.addr(), s.addr()],
        "outlier = { enabled = false }",
        "retry = { attempts = 1, per_try_timeout = \"2s\", hedge_after = \"30ms\" }",
    );
    let addr = gw.listen_addrs()[0];
    let mut slowest = Duration::ZERO;
    for i in 0..40 {
        let started = Instant::now();
        let r = common::get(addr, "/hedge");
        let took = started.elapsed();
        slowest = slowest.max(took);
        assert_eq!(r.status(), 200, "GET {i}: {}", r.text());
        assert_eq!(r.header("x-upstream").as_deref(), Some("f"), "GET {i}");
    }
    let hedges = metric(adm, "headwater_hedged_requests_total{cluster=\"app\"}");
    let stalled = s.requests();
    eprintln!(
        "hedging: 40 GETs all answered by f, slowest {}; {hedges} hedges; s received {stalled}",
        ms(slowest)
    );
    // s is the first pick of most requests: a hedge's pick moves round robin on, as a retry's
    // does, so each request starts where the previous one's first try did.
    assert!(hedges >= 10.0, "{hedges} hedges");
    assert!(stalled >= 10, "s got {stalled} requests");
    assert!(slowest < Duration::from_millis(1000), "slowest {slowest:?}");

    // Not idempotent: a POST that lands on s waits out the per-try timeout (round robin sends
    // at least one of two there).
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let mut c = common::Conn::open(addr);
        let r = c.request(
            b"POST /hedge HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
            &http::Method::POST,
        );
        statuses.push(r.status());
    }
    assert!(
        statuses.contains(&504),
        "POSTs are not hedged: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [200, 504].contains(s)),
        "{statuses:?}"
    );
    assert_eq!(
        metric(adm, "headwater_hedged_requests_total{cluster=\"app\"}"),
        hedges
    );
}

/// 13. The cluster circuit breaker: consecutive failures open it (a fast 503 `circuit_open`
///     with Retry-After, shown in /status and /metrics), and after `open_for` one trial request
///     goes through and closes it.
#[test]
fn cluster_breaker_opens_answers_fast_and_closes_after_a_trial() {
    let _serial = serial();
    let e = upstream("e");
    e.set_behavior(Behavior::Status(500));
    let (gw, adm) = start_app(
        &[e.addr()],
        "outlier = { enabled = false }\nbreaker = { failure_threshold = 3, open_for = \"300ms\" }",
        "retry = { attempts = 1 }",
    );
    let cluster_breaker = || status(adm)["clusters"][0]["breaker"].clone();
    assert_eq!(
        cluster_breaker(),
        serde_json::json!({ "open_on_shards": 0, "half_open_on_shards": 0 })
    );
    // One keep-alive connection: one shard, one breaker.
    let mut c = Conn::open(gw.listen_addrs()[0]);
    for i in 0..3 {
        let r = c.get("/");
        assert_eq!(r.status(), 500, "request {i} reaches the upstream");
    }
    let before = e.requests();
    let started = Instant::now();
    let r = c.get("/");
    let took = started.elapsed();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.header("x-headwater-error").as_deref(),
        Some("circuit_open")
    );
    let retry_after: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(
        e.requests(),
        before,
        "the open breaker kept it from the upstream"
    );
    assert_eq!(
        cluster_breaker(),
        serde_json::json!({ "open_on_shards": 1, "half_open_on_shards": 0 })
    );
    assert_eq!(
        metric(
            adm,
            "headwater_cluster_breaker_open_shards{cluster=\"app\"}"
        ),
        1.0
    );
    assert!(metric(adm, "headwater_circuit_open_total{cluster=\"app\"}") >= 1.0);
    let endpoint_gauge = format!(
        "headwater_endpoint_breaker_open_shards{{cluster=\"app\",endpoint=\"{}\"}}",
        e.addr()
    );
    assert_eq!(
        metric(adm, &endpoint_gauge),
        0.0,
        "no endpoint breaker configured"
    );

    // The upstream recovers; once open_for has passed, the trial request closes the breaker.
    e.set_behavior(named("e"));
    std::thread::sleep(Duration::from_millis(350));
    let r = c.get("/");
    assert_eq!(r.status(), 200, "the half-open trial went through");
    assert_eq!(
        cluster_breaker(),
        serde_json::json!({ "open_on_shards": 0, "half_open_on_shards": 0 })
    );
    for _ in 0..5 {
        assert_eq!(c.get("/").status(), 200);
    }
    eprintln!(
        "cluster breaker: opened after 3 500s, fast 503 in {}",
        ms(took)
    );
}
