//! The health thread: it owns every endpoint's health — active probes, passive outlier
//! detection over counters aggregated from every shard, slow start — and publishes what it
//! decided as one immutable [`HealthSnapshot`] per change (see [`snapshot`]).
//!
//! The decisions themselves are the sans-IO state machines of `headwater-health`
//! (`ProbeState`, `OutlierDetector`); this module runs them: a monoio runtime on its own thread
//! (epoll driver: a handful of probes per second does not need a ring) with a tick of
//! [`TICK`]. On each tick it records finished probes, starts due ones, reads every shard's
//! counters, runs outlier detection, ramps slow-start weights, and publishes a snapshot when
//! anything a shard or the admin API can see changed.
//!
//! Config reload goes through [`HealthService::reconfigure`], which returns only after the
//! snapshot for the new config is published, so that a shard never routes with a config newer
//! than the snapshot. Endpoints that stay (same cluster name and address) keep their probe
//! state, ejections, counters and slow start; new ones follow the initial-state policy (a new
//! endpoint of a cluster with active checks is unknown and gets no traffic until a probe
//! passes, unless the whole cluster is unknown — a cold start — when every endpoint is tried).

pub mod snapshot;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use headwater_balancer::{Member, Standing};
use headwater_health::outlier::{
    EjectReason, EndpointWindow, LatencyPolicy, OutlierDetector, OutlierPolicy, SuccessRatePolicy,
};
use headwater_health::probe::{run_probe, HttpProbe, ProbeKind, ProbeResult};
use headwater_health::probe_state::{ProbeHealth, ProbePolicy, ProbeState};

use crate::config::{ClusterConfig, Config, HealthCheck, OutlierConfig};
pub use snapshot::{
    Cells, ClusterHealth, EndpointHealth, EndpointState, HealthSnapshot, HealthTable, LastProbe,
    Totals,
};

/// How often the health thread looks at probes and counters.
pub const TICK: Duration = Duration::from_millis(50);

/// The smallest weight share slow start begins with, in percent.
const SLOW_START_MIN_PERCENT: u32 = 10;

enum Command {
    Reconfigure {
        config_id: u64,
        config: Arc<Config>,
        done: mpsc::Sender<()>,
    },
    /// The LLM runtime whose canaries to run (`None`: no `[llm]` section).
    Llm(Option<Arc<crate::llm::LlmRuntime>>),
    Stop,
}

/// The running health thread and the table it publishes to.
pub struct HealthService {
    table: Arc<HealthTable>,
    commands: mpsc::Sender<Command>,
    thread: Option<thread::JoinHandle<()>>,
    stats: Arc<std::sync::Mutex<HealthStats>>,
}

/// Counters the health thread keeps for `/metrics`, per cluster name.
#[derive(Debug, Default, Clone)]
pub struct HealthStats {
    /// Time each cluster has spent in panic mode.
    pub panic_time: HashMap<Arc<str>, Duration>,
    /// Ejections by cluster and reason.
    pub ejections: HashMap<(Arc<str>, &'static str), u64>,
    /// Probes run by cluster and result.
    pub probes: HashMap<(Arc<str>, bool), u64>,
    /// The last probe of each endpoint (cluster, address): when, passed, detail. Snapshots
    /// are republished only when a result changes; this is current.
    pub last_probe: HashMap<(Arc<str>, SocketAddr), LastProbe>,
}

impl HealthService {
    /// Starts the thread for `config` (generation `config_id`) with `shards` shards, and
    /// returns once the first snapshot is published.
    pub fn start(config_id: u64, config: Arc<Config>, shards: usize) -> std::io::Result<Self> {
        let now = Instant::now();
        let mut state = State::new(shards);
        state.reconfigure(config_id, &config, now);
        let first = state.snapshot(now);
        let table = Arc::new(HealthTable::new(first));
        let stats = Arc::new(std::sync::Mutex::new(HealthStats::default()));
        let (tx, rx) = mpsc::channel();
        let thread = {
            let table = table.clone();
            let stats = stats.clone();
            thread::Builder::new()
                .name("headwater-health".into())
                .spawn(move || run(state, table, stats, rx))?
        };
        Ok(HealthService {
            table,
            commands: tx,
            thread: Some(thread),
            stats,
        })
    }

    /// The table shards read.
    pub fn table(&self) -> &Arc<HealthTable> {
        &self.table
    }

    /// Applies a new config and waits until its snapshot is published.
    pub fn reconfigure(&self, config_id: u64, config: Arc<Config>) {
        let (done, wait) = mpsc::channel();
        if self
            .commands
            .send(Command::Reconfigure {
                config_id,
                config,
                done,
            })
            .is_ok()
        {
            let _ = wait.recv_timeout(Duration::from_secs(5));
        }
    }

    /// Runs the semantic canaries of `runtime`'s deployments from now on.
    pub fn set_llm(&self, runtime: Option<Arc<crate::llm::LlmRuntime>>) {
        let _ = self.commands.send(Command::Llm(runtime));
    }

    /// A copy of the thread's counters.
    pub fn stats(&self) -> HealthStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for HealthService {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    mut state: State,
    table: Arc<HealthTable>,
    stats: Arc<std::sync::Mutex<HealthStats>>,
    commands: mpsc::Receiver<Command>,
) {
    let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build();
    let mut rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("headwater: cannot start the health thread's runtime: {e}");
            return;
        }
    };
    rt.block_on(async move {
        let results: Rc<RefCell<Vec<Finished>>> = Rc::default();
        let mut canaries = crate::llm::canary::CanaryDriver::default();
        let mut last_tick = Instant::now();
        loop {
            let now = Instant::now();
            let mut changed = false;
            let mut done = Vec::new();
            loop {
                match commands.try_recv() {
                    Ok(Command::Reconfigure {
                        config_id,
                        config,
                        done: reply,
                    }) => {
                        state.reconfigure(config_id, &config, now);
                        changed = true;
                        done.push(reply);
                    }
                    Ok(Command::Llm(runtime)) => canaries.set(runtime),
                    Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => return,
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            let finished = std::mem::take(&mut *results.borrow_mut());
            changed |= state.record_probes(finished, now);
            for (key, addr, kind, timeout) in state.due_probes(now) {
                let results = results.clone();
                monoio::spawn(async move {
                    let result = run_probe(addr, &kind, timeout).await;
                    results.borrow_mut().push(Finished { key, result });
                });
            }
            canaries.tick(now);
            changed |= state.observe(now);
            changed |= state.slow_start_moved(now);
            state.account_panic(now.saturating_duration_since(last_tick));
            last_tick = now;
            if changed {
                table.publish(state.snapshot(now));
            }
            if let Ok(mut s) = stats.lock() {
                state.export(&mut s);
            }
            for reply in done {
                let _ = reply.send(());
            }
            monoio::time::sleep(TICK).await;
        }
    });
}

/// A probe that finished, and which endpoint (of which configuration epoch) it was for.
struct Finished {
    key: ProbeKey,
    result: ProbeResult,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct ProbeKey {
    cluster: Arc<str>,
    address: SocketAddr,
    /// Bumped when the endpoint's probe config changes, so a stale result is dropped.
    epoch: u64,
}

struct EndpointSlot {
    address: SocketAddr,
    weight: u32,
    priority: u8,
    probe: Option<ProbeState>,
    probe_epoch: u64,
    cells: Arc<Cells>,
    /// Counters at the previous tick.
    seen: Totals,
    /// Consecutive-failure runs (5xx, gateway) that are forgiven: the part of the shards'
    /// current runs that happened before the active checks declared the endpoint down. A run
    /// that broke since (its count fell below this) is forgiven no more.
    forgiven: (u64, u64),
    window: EndpointWindow,
    last_failure: Option<(Instant, Arc<str>)>,
    last_probe: Option<LastProbe>,
    /// When the endpoint last became able to serve after not being able to (slow start).
    serving_since: Option<Instant>,
    /// Whether it could serve at the last snapshot.
    was_serving: bool,
    /// Slow-start weight at the last snapshot.
    published_weight: u32,
}

struct ClusterSlot {
    name: Arc<str>,
    probe: Option<(Arc<ProbeKind>, ProbePolicy)>,
    outlier: Option<OutlierPolicy>,
    detector: OutlierDetector,
    slow_start: Option<Duration>,
    panic_threshold: u8,
    endpoints: Vec<EndpointSlot>,
    panic: bool,
    panic_time: Duration,
    ejections: HashMap<&'static str, u64>,
    probes: [u64; 2],
}

struct State {
    shards: usize,
    config_id: u64,
    generation: u64,
    clusters: Vec<ClusterSlot>,
    rng: fastrand::Rng,
    next_epoch: u64,
}

fn probe_policy(h: &HealthCheck) -> ProbePolicy {
    ProbePolicy {
        interval: h.interval,
        unhealthy_interval: h.unhealthy_interval,
        jitter: h.jitter,
        timeout: h.timeout,
        rise: h.rise,
        fall: h.fall,
    }
}

fn probe_kind(h: &HealthCheck) -> ProbeKind {
    if !h.http {
        return ProbeKind::Tcp;
    }
    ProbeKind::Http(HttpProbe {
        method: h.method.clone(),
        path: h.path.clone(),
        host: h.host.clone(),
        expect_status: h.expect_status.0..=h.expect_status.1,
        body_contains: h.body_contains.clone(),
        headers: Vec::new(),
    })
}

fn outlier_policy(o: &OutlierConfig) -> OutlierPolicy {
    let nonzero = |v: u32| (v > 0).then_some(v);
    OutlierPolicy {
        consecutive_5xx: nonzero(o.consecutive_5xx),
        consecutive_gateway_failures: nonzero(o.consecutive_gateway_failures),
        success_rate: (o.success_rate_stdev_factor > 0.0).then_some(SuccessRatePolicy {
            min_hosts: o.success_rate_min_hosts,
            request_volume: o.success_rate_request_volume,
            stdev_factor: o.success_rate_stdev_factor,
        }),
        latency: (o.latency_factor > 0.0).then_some(LatencyPolicy {
            factor: o.latency_factor,
            min_latency: o.latency_min,
            request_volume: o.latency_request_volume,
            min_hosts: o.latency_min_hosts,
        }),
        interval: o.interval,
        base_ejection: o.base_ejection,
        max_ejection: o.max_ejection,
        jitter: o.jitter,
        max_ejection_percent: o.max_ejection_percent,
    }
}

/// The policy used to schedule a new endpoint's first probe: soon (within a tenth of the
/// interval, at most 500 ms), spread so that endpoints do not probe in lockstep.
fn first_probe_policy(p: &ProbePolicy) -> ProbePolicy {
    let mut first = p.clone();
    let cap = (p.interval / 10).min(Duration::from_millis(500));
    first.jitter = if p.jitter.is_zero() {
        cap
    } else {
        p.jitter.min(cap)
    }
    .max(Duration::from_millis(1));
    first.interval = first.interval.max(first.jitter);
    first.unhealthy_interval = first.unhealthy_interval.max(first.jitter);
    first
}

fn reason_name(r: EjectReason) -> &'static str {
    match r {
        EjectReason::Consecutive5xx => "consecutive_5xx",
        EjectReason::ConsecutiveGatewayFailure => "consecutive_gateway_failures",
        EjectReason::SuccessRate => "success_rate",
        EjectReason::Latency => "latency",
    }
}

impl State {
    fn new(shards: usize) -> State {
        State {
            shards: shards.max(1),
            config_id: 0,
            generation: 0,
            clusters: Vec::new(),
            rng: fastrand::Rng::with_seed(0x6865_6164_7761_7465),
            next_epoch: 1,
        }
    }

    /// Rebuilds the cluster list for a new config, keeping the state of what stays.
    fn reconfigure(&mut self, config_id: u64, config: &Config, now: Instant) {
        let mut old: HashMap<Arc<str>, ClusterSlot> = self
            .clusters
            .drain(..)
            .map(|c| (c.name.clone(), c))
            .collect();
        for cc in &config.clusters {
            let slot = self.cluster_slot(cc, old.remove(cc.name.as_str()), now);
            self.clusters.push(slot);
        }
        self.config_id = config_id;
    }

    fn cluster_slot(
        &mut self,
        cc: &ClusterConfig,
        old: Option<ClusterSlot>,
        now: Instant,
    ) -> ClusterSlot {
        let probe = cc
            .health_check
            .as_ref()
            .map(|h| (Arc::new(probe_kind(h)), probe_policy(h)));
        let outlier = cc.outlier.as_ref().map(outlier_policy);
        let (mut old_endpoints, mut detector, old_probe, panic_time, ejections, probes) = match old
        {
            Some(o) => (
                o.endpoints,
                o.detector,
                o.probe,
                o.panic_time,
                o.ejections,
                o.probes,
            ),
            None => (
                Vec::new(),
                OutlierDetector::new(0),
                None,
                Duration::ZERO,
                HashMap::new(),
                [0; 2],
            ),
        };
        let probe_unchanged = match (&probe, &old_probe) {
            (Some((k, p)), Some((ok, op))) => **k == **ok && p == op,
            (None, None) => true,
            _ => false,
        };
        // Map old endpoint indices to new ones by address.
        let map: Vec<Option<usize>> = old_endpoints
            .iter()
            .map(|e| cc.endpoints.iter().position(|n| n.address == e.address))
            .collect();
        detector.remap(&map, cc.endpoints.len());
        let cold = old_endpoints.is_empty();
        let mut endpoints = Vec::with_capacity(cc.endpoints.len());
        for ec in &cc.endpoints {
            let kept = old_endpoints
                .iter()
                .position(|e| e.address == ec.address)
                .map(|i| old_endpoints.swap_remove(i));
            let slot = match kept {
                Some(mut e) => {
                    e.weight = ec.weight;
                    e.priority = ec.priority;
                    if !probe_unchanged {
                        e.probe_epoch = self.next_epoch;
                        self.next_epoch += 1;
                        e.probe = probe.as_ref().map(|(_, p)| {
                            // A changed check starts over, but a serving endpoint keeps serving
                            // until the new check says otherwise.
                            let initial = if e.was_serving {
                                ProbeHealth::Healthy
                            } else {
                                ProbeHealth::Unknown
                            };
                            ProbeState::new(initial, now, &first_probe_policy(p), &mut self.rng)
                        });
                    }
                    e
                }
                None => {
                    let epoch = self.next_epoch;
                    self.next_epoch += 1;
                    EndpointSlot {
                        address: ec.address,
                        weight: ec.weight,
                        priority: ec.priority,
                        probe: probe.as_ref().map(|(_, p)| {
                            ProbeState::new(
                                ProbeHealth::Unknown,
                                now,
                                &first_probe_policy(p),
                                &mut self.rng,
                            )
                        }),
                        probe_epoch: epoch,
                        cells: Arc::new(Cells::new(self.shards)),
                        seen: Totals::default(),
                        forgiven: (0, 0),
                        window: EndpointWindow::default(),
                        last_failure: None,
                        last_probe: None,
                        serving_since: None,
                        was_serving: cold || probe.is_none(),
                        published_weight: ec.weight,
                    }
                }
            };
            endpoints.push(slot);
        }
        ClusterSlot {
            name: cc.name.as_str().into(),
            probe,
            outlier,
            detector,
            slow_start: cc.slow_start,
            panic_threshold: cc.panic_threshold,
            endpoints,
            panic: false,
            panic_time,
            ejections,
            probes,
        }
    }

    /// Probes that are due now; marks them in flight.
    fn due_probes(
        &mut self,
        now: Instant,
    ) -> Vec<(ProbeKey, SocketAddr, Arc<ProbeKind>, Duration)> {
        let mut due = Vec::new();
        for c in &mut self.clusters {
            let Some((kind, policy)) = &c.probe else {
                continue;
            };
            for e in &mut c.endpoints {
                if let Some(p) = &mut e.probe {
                    if p.due(now) {
                        p.begin(now);
                        due.push((
                            ProbeKey {
                                cluster: c.name.clone(),
                                address: e.address,
                                epoch: e.probe_epoch,
                            },
                            e.address,
                            kind.clone(),
                            policy.timeout,
                        ));
                    }
                }
            }
        }
        due
    }

    /// Records finished probes; true when something visible changed.
    fn record_probes(&mut self, finished: Vec<Finished>, now: Instant) -> bool {
        let mut changed = false;
        for f in finished {
            let Some(c) = self.clusters.iter_mut().find(|c| c.name == f.key.cluster) else {
                continue;
            };
            let Some((_, policy)) = &c.probe else {
                continue;
            };
            let Some(index) = c
                .endpoints
                .iter()
                .position(|e| e.address == f.key.address && e.probe_epoch == f.key.epoch)
            else {
                continue;
            };
            let e = &mut c.endpoints[index];
            let Some(p) = &mut e.probe else {
                continue;
            };
            c.probes[usize::from(f.result.ok)] += 1;
            let detail: Arc<str> = f.result.detail.as_str().into();
            let transition = p.record(f.result.ok, f.result.detail, now, policy, &mut self.rng);
            if transition
                .as_ref()
                .is_some_and(|t| t.from == ProbeHealth::Unhealthy && t.to == ProbeHealth::Healthy)
            {
                // The active checks saw it go down and come back: an ejection for the failures
                // of its going down ends with that recovery, or an endpoint that passed `rise`
                // probes would stay out for the whole ejection.
                c.detector.reinstate(index, now);
            }
            if !f.result.ok {
                e.last_failure = Some((now, format!("probe: {detail}").into()));
            }
            let visible_before = e.last_probe.as_ref().map(|(_, ok, d)| (*ok, d.clone()));
            e.last_probe = Some((now, f.result.ok, detail.clone()));
            changed |= transition.is_some() || visible_before != Some((f.result.ok, detail));
        }
        changed
    }

    /// Reads every shard's counters and runs outlier detection; true when something changed.
    fn observe(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for c in &mut self.clusters {
            let mut windows = Vec::with_capacity(c.endpoints.len());
            for e in &mut c.endpoints {
                let t = e.cells.totals();
                let d = |a: u64, b: u64| a.saturating_sub(b);
                e.window.requests += d(t.requests, e.seen.requests);
                e.window.successes += d(t.successes, e.seen.successes);
                e.window.errors_5xx += d(t.errors_5xx, e.seen.errors_5xx);
                e.window.gateway_failures += d(t.gateway_failures, e.seen.gateway_failures);
                e.window.latency_total += Duration::from_micros(d(t.latency_us, e.seen.latency_us));
                // An endpoint its active checks hold down is not judged by outlier detection
                // (ejecting it would change nothing and use up the ejection cap), and the run
                // of failures it had while going down is forgiven when it comes back.
                let down = e
                    .probe
                    .as_ref()
                    .is_some_and(|p| p.health() == ProbeHealth::Unhealthy);
                if down {
                    e.forgiven = (t.consecutive_5xx, t.consecutive_gateway);
                }
                if t.consecutive_5xx < e.forgiven.0 {
                    e.forgiven.0 = 0;
                }
                if t.consecutive_gateway < e.forgiven.1 {
                    e.forgiven.1 = 0;
                }
                e.window.consecutive_5xx = t.consecutive_5xx - e.forgiven.0;
                e.window.consecutive_gateway_failures = t.consecutive_gateway - e.forgiven.1;
                e.seen = t;
                windows.push(e.window);
            }
            let Some(policy) = &c.outlier else {
                continue;
            };
            let report = c.detector.update(&windows, now, policy, &mut self.rng);
            for ej in &report.ejected {
                let e = &mut c.endpoints[ej.endpoint];
                let why = match ej.reason {
                    EjectReason::Consecutive5xx => {
                        format!(
                            "ejected: {} consecutive 5xx",
                            windows[ej.endpoint].consecutive_5xx
                        )
                    }
                    EjectReason::ConsecutiveGatewayFailure => format!(
                        "ejected: {} consecutive gateway failures (connect/reset/timeout)",
                        windows[ej.endpoint].consecutive_gateway_failures
                    ),
                    EjectReason::SuccessRate => {
                        let w = &windows[ej.endpoint];
                        format!(
                            "ejected: success rate {:.1}% over {} requests is an outlier",
                            100.0 * w.successes as f64 / w.requests.max(1) as f64,
                            w.requests
                        )
                    }
                    EjectReason::Latency => {
                        let w = &windows[ej.endpoint];
                        let responses = (w.requests - w.gateway_failures).max(1) as u32;
                        format!(
                            "ejected: mean latency {:?} is an outlier",
                            w.latency_total / responses
                        )
                    }
                };
                e.last_failure = Some((now, why.into()));
                *c.ejections.entry(reason_name(ej.reason)).or_default() += 1;
                changed = true;
            }
            changed |= !report.returned.is_empty();
            if report.window_closed {
                for e in &mut c.endpoints {
                    e.window = EndpointWindow {
                        consecutive_5xx: e.window.consecutive_5xx,
                        consecutive_gateway_failures: e.window.consecutive_gateway_failures,
                        ..EndpointWindow::default()
                    };
                }
            }
        }
        changed
    }

    /// Whether any slow-start weight moved enough to publish (or the ramp ended).
    fn slow_start_moved(&self, now: Instant) -> bool {
        self.clusters.iter().any(|c| {
            c.endpoints
                .iter()
                .any(|e| effective_weight(c.slow_start, e, now) != e.published_weight)
        })
    }

    fn account_panic(&mut self, elapsed: Duration) {
        for c in &mut self.clusters {
            if c.panic {
                c.panic_time += elapsed;
            }
        }
    }

    /// Copies the counters `/metrics` and `/status` read (every tick: names are shared
    /// `Arc<str>`s, so this allocates nothing once the maps hold every key).
    fn export(&self, stats: &mut HealthStats) {
        for c in &self.clusters {
            let name = &c.name;
            stats.panic_time.insert(name.clone(), c.panic_time);
            for e in &c.endpoints {
                if let Some(p) = &e.last_probe {
                    stats
                        .last_probe
                        .insert((name.clone(), e.address), p.clone());
                }
            }
            for (reason, n) in &c.ejections {
                stats.ejections.insert((name.clone(), reason), *n);
            }
            stats.probes.insert((name.clone(), true), c.probes[1]);
            stats.probes.insert((name.clone(), false), c.probes[0]);
        }
    }

    /// Builds the snapshot of `now` and updates what it remembers of the last one.
    fn snapshot(&mut self, now: Instant) -> HealthSnapshot {
        self.generation += 1;
        let mut clusters = Vec::with_capacity(self.clusters.len());
        for c in &mut self.clusters {
            let all_unknown = c.endpoints.iter().all(|e| {
                e.probe
                    .as_ref()
                    .is_some_and(|p| p.health() == ProbeHealth::Unknown)
            });
            let mut endpoints = Vec::with_capacity(c.endpoints.len());
            let mut earliest: Option<Instant> = None;
            let mut healthy = 0;
            for (i, e) in c.endpoints.iter_mut().enumerate() {
                let probe = e.probe.as_ref().map(|p| p.health());
                let ejected = c.detector.is_ejected(i, now);
                let state = match probe {
                    Some(ProbeHealth::Unhealthy) => EndpointState::Unhealthy,
                    _ if ejected => EndpointState::Ejected,
                    Some(ProbeHealth::Unknown) => EndpointState::Unknown,
                    _ => EndpointState::Healthy,
                };
                let routable = state == EndpointState::Healthy
                    || (state == EndpointState::Unknown && all_unknown);
                if routable {
                    healthy += 1;
                    if !e.was_serving {
                        e.serving_since = Some(now);
                    }
                }
                e.was_serving = routable;
                let recovery = match state {
                    EndpointState::Ejected => c.detector.ejected_until(i),
                    EndpointState::Unhealthy | EndpointState::Unknown => {
                        match (&e.probe, &c.probe) {
                            (Some(p), Some((_, policy))) => {
                                let more = policy.rise_threshold().saturating_sub(1);
                                Some(p.next_due() + policy.unhealthy_interval * more)
                            }
                            _ => None,
                        }
                    }
                    EndpointState::Healthy => None,
                };
                if !routable {
                    if let Some(r) = recovery {
                        earliest = Some(earliest.map_or(r, |x| x.min(r)));
                    }
                }
                let weight = effective_weight(c.slow_start, e, now);
                e.published_weight = weight;
                endpoints.push(EndpointHealth {
                    address: e.address,
                    state,
                    routable,
                    weight,
                    priority: e.priority,
                    ejected_until: if ejected {
                        c.detector.ejected_until(i)
                    } else {
                        None
                    },
                    ejections: c.detector.ejection_count(i),
                    last_failure: e.last_failure.clone(),
                    last_probe: e.last_probe.clone(),
                    recovery,
                    cells: e.cells.clone(),
                });
            }
            let members: Vec<Member> = endpoints.iter().map(member).collect();
            c.panic = headwater_balancer::plan(&members, c.panic_threshold).panic();
            clusters.push(ClusterHealth {
                name: c.name.clone(),
                endpoints,
                healthy,
                earliest_recovery: earliest,
                panic: c.panic,
            });
        }
        HealthSnapshot {
            generation: self.generation,
            config_id: self.config_id,
            published_at: now,
            clusters,
        }
    }
}

fn effective_weight(slow_start: Option<Duration>, e: &EndpointSlot, now: Instant) -> u32 {
    match (slow_start, e.serving_since) {
        (Some(window), Some(since)) => {
            let elapsed = now.saturating_duration_since(since);
            if elapsed >= window {
                e.weight
            } else {
                headwater_balancer::slow_start_weight(
                    e.weight,
                    elapsed,
                    window,
                    SLOW_START_MIN_PERCENT,
                )
            }
        }
        _ => e.weight,
    }
}

/// How the balancers' priority planning sees an endpoint.
pub fn member(e: &EndpointHealth) -> Member {
    Member {
        priority: e.priority,
        weight: e.weight,
        standing: if e.routable {
            Standing::Healthy
        } else if e.state == EndpointState::Unhealthy {
            Standing::Down
        } else {
            Standing::Degraded
        },
    }
}
