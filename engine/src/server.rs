//! The embeddable server: starts the shards, the access log writer and the admin listener for a
//! validated [`Config`], and is the control plane afterwards (reload, status, drain).
//!
//! ```no_run
//! let config = headwater_engine::config::load("headwater.toml".as_ref()).unwrap();
//! let server = headwater_engine::server::Server::start(config, Some("headwater.toml".into())).unwrap();
//! println!("serving on {:?}", server.listen_addrs());
//! server.wait_for_shutdown_signal();
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::access_log::{AccessLog, Target};
use crate::config::{self, AccessLogTarget, Config, IoDriver};
use crate::health::{EndpointState, HealthService};
use crate::metrics::Registry;
use crate::proxy::{conn, Generation, Shard, Shared};
use crate::runtime::{self, DriverChoice, DriverKind, Shards};

/// How often a shard checks for drain, flushes its log and sweeps its pool.
const TICK: Duration = Duration::from_millis(100);
/// How long an accept waits before the loop looks at the drain flag again.
const ACCEPT_POLL: Duration = Duration::from_millis(250);

/// The settings that only a restart can change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fixed {
    listen: Vec<SocketAddr>,
    workers: usize,
    admin: Option<SocketAddr>,
    io_driver: IoDriver,
    access_log: AccessLogTarget,
    backlog: u32,
}

impl Fixed {
    fn of(c: &Config) -> Fixed {
        Fixed {
            listen: c.server.listen.clone(),
            workers: c.server.workers,
            admin: c.server.admin,
            io_driver: c.server.io_driver,
            access_log: c.server.access_log.clone(),
            backlog: c.server.backlog,
        }
    }
}

/// The control plane shared by the admin thread, signal handling and the embedding program.
pub struct Control {
    shared: Arc<Shared>,
    config_path: Option<PathBuf>,
    fixed: Fixed,
    /// Serialises reloads and numbers generations.
    next_generation: Mutex<u64>,
    driver: DriverKind,
    listen: Vec<SocketAddr>,
    log: Mutex<Option<AccessLog>>,
    started: Instant,
    health: HealthService,
}

impl Control {
    /// Re-reads the config file and applies it. The error says why (file, line, reason) and the
    /// running config stays in force.
    pub fn reload(&self) -> Result<u64, String> {
        let Some(path) = &self.config_path else {
            return Err(
                "no config file to reload (the server was started from a config in memory)".into(),
            );
        };
        let result = match config::load(path) {
            Ok(c) => self.apply(c),
            Err(e) => {
                self.shared.metrics.reload(false);
                Err(e.to_string())
            }
        };
        if let Err(e) = &result {
            eprintln!("headwater: reload rejected: {e}");
        }
        result
    }

    /// Applies a validated config to new requests on every shard. In-flight requests finish on
    /// the config they started with; open connections stay open.
    pub fn apply(&self, config: Config) -> Result<u64, String> {
        let result = self.apply_inner(config);
        self.shared.metrics.reload(result.is_ok());
        result
    }

    fn apply_inner(&self, config: Config) -> Result<u64, String> {
        let fixed = Fixed::of(&config);
        if fixed != self.fixed {
            return Err("server.listen, workers, admin, io_driver, backlog and access_log cannot change on reload; restart to apply them".into());
        }
        let mut next = self
            .next_generation
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let id = *next + 1;
        let health_config = Arc::new(config.clone());
        let mut generation = Generation::new(id, config, &self.shared.metrics)?;
        generation.inherit_llm(&self.shared.current());
        // Health first: a shard must never route with a config newer than the snapshot.
        self.health.reconfigure(id, health_config);
        self.health.set_llm(generation.llm.clone());
        self.shared.publish(generation);
        *next = id;
        Ok(id)
    }

    /// The generation in force.
    pub fn generation(&self) -> u64 {
        self.shared.current().id
    }

    /// Prometheus text exposition of all metrics.
    pub fn metrics_text(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.shared.metrics.render_prometheus(&mut out);
        self.render_health_metrics(&mut out);
        self.render_llm_metrics(&mut out);
        out
    }

    /// The LLM gateway's deployment health and its ledger (tokens, cost, requests). The ledger
    /// outlives reloads, so its counters never go backwards.
    fn render_llm_metrics(&self, out: &mut String) {
        let current = self.shared.current();
        if let Some(llm) = &current.llm {
            let snapshots = llm
                .router()
                .health()
                .snapshot(&llm.section.catalogue, Instant::now());
            headwater_llm::health::render_health_prometheus(&snapshots, out);
        }
        let ledger = self.shared.llm.ledger();
        if current.llm.is_some() || !ledger.is_empty() {
            ledger.render_prometheus(out);
        }
    }

    /// The LLM gateway's models and deployments for `/status`.
    fn llm_status(&self, current: &Generation) -> serde_json::Value {
        let Some(llm) = &current.llm else {
            return serde_json::Value::Null;
        };
        let catalogue = &llm.section.catalogue;
        let snapshots = llm.router().health().snapshot(catalogue, Instant::now());
        serde_json::json!({
            "models": catalogue.models().iter().map(|m| serde_json::json!({
                "name": m.name,
                "routing": m.routing.as_str(),
                "deployments": m.deployments.iter().map(|d| catalogue.deployment(*d).name.as_str()).collect::<Vec<_>>(),
                "fallbacks": m.fallbacks.iter().map(|f| catalogue.model(*f).name.as_str()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "deployments": snapshots,
            "keys": catalogue.keys().len(),
        })
    }

    /// Endpoint health gauges from the current snapshot, and the health thread's counters.
    fn render_health_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let current = self.shared.current();
        let snapshot = self.shared.health.load();
        let now = Instant::now();
        let stats = self.health.stats();
        let _ = writeln!(out, "# HELP headwater_endpoint_state 1 for the state each endpoint is in.\n# TYPE headwater_endpoint_state gauge");
        let mut rows = Vec::new();
        for (ci, c) in current.config.clusters.iter().enumerate() {
            let Some(h) = snapshot.cluster(current.id, ci) else {
                continue;
            };
            for (e, eh) in c.endpoints.iter().zip(&h.endpoints) {
                rows.push((c.name.as_str(), e.address, eh));
            }
        }
        for (cluster, addr, eh) in &rows {
            for s in [
                EndpointState::Healthy,
                EndpointState::Unknown,
                EndpointState::Unhealthy,
                EndpointState::Ejected,
            ] {
                let _ = writeln!(out, "headwater_endpoint_state{{cluster=\"{cluster}\",endpoint=\"{addr}\",state=\"{}\"}} {}", s.name(), u8::from(eh.state == s));
            }
        }
        type Gauge = fn(&crate::health::EndpointHealth, Instant) -> f64;
        let gauges: [(&str, &str, &str, Gauge); 6] = [
            (
                "headwater_endpoint_ejections",
                "counter",
                "Outlier ejections of the endpoint (decays while it behaves).",
                |eh, _| eh.ejections as f64,
            ),
            (
                "headwater_endpoint_ejected_seconds",
                "gauge",
                "Time left in the endpoint's current ejection.",
                |eh, now| {
                    eh.ejected_until
                        .map_or(0.0, |t| t.saturating_duration_since(now).as_secs_f64())
                },
            ),
            (
                "headwater_endpoint_weight",
                "gauge",
                "Effective weight (slow start ramps it).",
                |eh, _| eh.weight as f64,
            ),
            (
                "headwater_endpoint_ewma_seconds",
                "gauge",
                "Peak-EWMA latency estimate, mean over shards (0: none).",
                |eh, _| eh.cells.totals().ewma_us.map_or(0.0, |us| us as f64 / 1e6),
            ),
            (
                "headwater_endpoint_breaker_open_shards",
                "gauge",
                "Shards on which the endpoint's circuit breaker is open.",
                |eh, _| eh.cells.breakers().0 as f64,
            ),
            (
                "headwater_endpoint_breaker_half_open_shards",
                "gauge",
                "Shards on which the endpoint's circuit breaker is half-open.",
                |eh, _| eh.cells.breakers().1 as f64,
            ),
        ];
        for (name, kind, help, f) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {}",
                if kind == "counter" { "gauge" } else { kind }
            );
            for (cluster, addr, eh) in &rows {
                let _ = writeln!(
                    out,
                    "{name}{{cluster=\"{cluster}\",endpoint=\"{addr}\"}} {}",
                    f(eh, now)
                );
            }
        }
        let _ = writeln!(out, "# HELP headwater_endpoint_last_probe_success Whether the last active probe passed (absent: none yet).\n# TYPE headwater_endpoint_last_probe_success gauge");
        for (cluster, addr, eh) in &rows {
            if let Some((_, ok, _)) = &eh.last_probe {
                let _ = writeln!(out, "headwater_endpoint_last_probe_success{{cluster=\"{cluster}\",endpoint=\"{addr}\"}} {}", u8::from(*ok));
            }
        }
        let _ = writeln!(out, "# HELP headwater_cluster_panic 1 while the cluster balances in panic mode.\n# TYPE headwater_cluster_panic gauge");
        for (ci, c) in current.config.clusters.iter().enumerate() {
            let panic = snapshot.cluster(current.id, ci).is_some_and(|h| h.panic);
            let _ = writeln!(
                out,
                "headwater_cluster_panic{{cluster=\"{}\"}} {}",
                c.name,
                u8::from(panic)
            );
        }
        let mut panic: Vec<_> = stats.panic_time.iter().collect();
        panic.sort();
        let _ = writeln!(out, "# HELP headwater_cluster_panic_seconds_total Time spent in panic mode.\n# TYPE headwater_cluster_panic_seconds_total counter");
        for (cluster, d) in panic {
            let _ = writeln!(
                out,
                "headwater_cluster_panic_seconds_total{{cluster=\"{cluster}\"}} {}",
                d.as_secs_f64()
            );
        }
        let mut ejections: Vec<_> = stats.ejections.iter().collect();
        ejections.sort();
        let _ = writeln!(out, "# HELP headwater_outlier_ejections_total Outlier ejections by reason.\n# TYPE headwater_outlier_ejections_total counter");
        for ((cluster, reason), n) in ejections {
            let _ = writeln!(out, "headwater_outlier_ejections_total{{cluster=\"{cluster}\",reason=\"{reason}\"}} {n}");
        }
        let mut probes: Vec<_> = stats.probes.iter().collect();
        probes.sort();
        let _ = writeln!(out, "# HELP headwater_health_probes_total Active probes by result.\n# TYPE headwater_health_probes_total counter");
        for ((cluster, ok), n) in probes {
            let _ = writeln!(
                out,
                "headwater_health_probes_total{{cluster=\"{cluster}\",result=\"{}\"}} {n}",
                if *ok { "pass" } else { "fail" }
            );
        }
    }

    /// The `/status` document.
    pub fn status(&self) -> serde_json::Value {
        let current = self.shared.current();
        let config = &current.config;
        let snapshot = self.shared.health.load();
        let stats = self.health.stats();
        let now = Instant::now();
        serde_json::json!({
            "generation": current.id,
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "draining": self.shared.is_draining(),
            "io_driver": self.driver.as_str(),
            "shards": self.fixed.workers,
            "listen": self.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "routes": config.routes.iter().map(|r| serde_json::json!({
                "name": r.name,
                "cluster": r.cluster().map(|c| config.clusters[c].name.as_str()),
                "llm": r.cluster().is_none(),
            })).collect::<Vec<_>>(),
            "health_generation": snapshot.generation,
            "llm": self.llm_status(&current),
            "clusters": config.clusters.iter().enumerate().map(|(ci, c)| {
                let h = snapshot.cluster(current.id, ci);
                serde_json::json!({
                "name": c.name,
                "balancer": c.balancer.to_string(),
                "panic_threshold": c.panic_threshold,
                "panic": h.is_some_and(|h| h.panic),
                "healthy": h.map(|h| h.healthy),
                "active_checks": c.health_check.is_some(),
                "outlier_detection": c.outlier.is_some(),
                "breaker": c.breaker.as_ref().map(|_| {
                    let (open, half_open) = self.shared.metrics.cluster_breakers(current.cluster_ids[ci]);
                    serde_json::json!({ "open_on_shards": open, "half_open_on_shards": half_open })
                }),
                "endpoints": c.endpoints.iter().enumerate().map(|(ei, e)| {
                    let eh = h.and_then(|h| h.endpoints.get(ei));
                    let totals = eh.map(|eh| eh.cells.totals()).unwrap_or_default();
                    serde_json::json!({
                    "address": e.address.to_string(),
                    "host": e.host,
                    "weight": e.weight,
                    "effective_weight": eh.map(|eh| eh.weight),
                    "priority": e.priority,
                    "state": eh.map(|eh| eh.state.name()),
                    "routable": eh.map(|eh| eh.routable),
                    "ejections": eh.map(|eh| eh.ejections),
                    "ejected_for_ms": eh.and_then(|eh| eh.ejected_until).map(|t| t.saturating_duration_since(now).as_millis() as u64),
                    "last_probe": stats.last_probe.get(&(Arc::<str>::from(c.name.as_str()), e.address)).map(|(at, ok, detail)| serde_json::json!({
                        "ok": ok, "detail": detail.as_ref(), "ago_ms": now.saturating_duration_since(*at).as_millis() as u64,
                    })),
                    "last_failure": eh.and_then(|eh| eh.last_failure.as_ref()).map(|(at, why)| serde_json::json!({
                        "reason": why.as_ref(), "ago_ms": now.saturating_duration_since(*at).as_millis() as u64,
                    })),
                    "ewma_ms": totals.ewma_us.map(|us| us as f64 / 1000.0),
                    "breaker": eh.map(|eh| {
                        let (open, half_open) = eh.cells.breakers();
                        serde_json::json!({ "open_on_shards": open, "half_open_on_shards": half_open })
                    }),
                    "in_flight": totals.in_flight,
                    "requests": totals.requests,
                    "errors_5xx": totals.errors_5xx,
                    "gateway_failures": totals.gateway_failures,
                })}).collect::<Vec<_>>(),
                "pool": {
                    "max_idle_per_endpoint": c.pool.max_idle_per_endpoint,
                    "idle_timeout_ms": c.pool.idle_timeout.as_millis() as u64,
                },
            })}).collect::<Vec<_>>(),
        })
    }

    /// Starts the drain: stop accepting, let in-flight requests finish, close idle connections.
    pub fn begin_drain(&self) {
        self.shared.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the server is draining.
    pub fn is_draining(&self) -> bool {
        self.shared.is_draining()
    }

    /// Reopens the access log file (after log rotation).
    pub fn reopen_log(&self) {
        if let Some(log) = &*self.log.lock().unwrap_or_else(|e| e.into_inner()) {
            log.reopen();
        }
    }
}

/// A running server.
pub struct Server {
    control: Arc<Control>,
    shards: Option<Shards>,
    admin: Option<crate::admin::Admin>,
}

impl Server {
    /// Starts serving `config`. `config_path` is re-read on reload. Returns once every shard
    /// listens on every address.
    pub fn start(config: Config, config_path: Option<PathBuf>) -> std::io::Result<Server> {
        let workers = config.server.workers;
        let backlog = config.server.backlog;
        // Port 0 must mean one port for all shards.
        let listen: Vec<SocketAddr> = config
            .server
            .listen
            .iter()
            .map(|a| runtime::reserve_addr(*a))
            .collect::<Result<_, _>>()?;
        let fixed = Fixed::of(&config);
        let metrics = Registry::new(workers);
        let log_target = match &config.server.access_log {
            AccessLogTarget::Off => Target::Off,
            AccessLogTarget::Stdout => Target::Stdout,
            AccessLogTarget::File(p) => Target::File(p.clone()),
        };
        let log = AccessLog::start(log_target, workers)?;
        let shard_logs: Mutex<Vec<Option<crate::access_log::ShardLog>>> =
            Mutex::new((0..workers).map(|i| Some(log.shard(i))).collect());
        let choice = match config.server.io_driver {
            IoDriver::Auto => DriverChoice::Auto,
            IoDriver::IoUring => DriverChoice::IoUring,
            IoDriver::Epoll => DriverChoice::Epoll,
        };
        let admin_addr = config.server.admin;
        let health = HealthService::start(1, Arc::new(config.clone()), workers)?;
        let first = Generation::new(1, config, &metrics)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        health.set_llm(first.llm.clone());
        let shared = Shared::new(first, metrics, health.table().clone(), workers);

        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let ready_tx = Mutex::new(ready_tx);
        let shard_shared = shared.clone();
        let shard_listen = listen.clone();
        let shards = runtime::spawn_shards(workers, choice, true, move |ctx| {
            let log = shard_logs.lock().unwrap_or_else(|e| e.into_inner())[ctx.index].take();
            let ready = ready_tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let shared = shard_shared.clone();
            let listen = shard_listen.clone();
            async move {
                let Some(log) = log else { return };
                run_shard(ctx.index, shared, log, &listen, backlog, ready).await;
            }
        })?;
        let driver = shards.driver();
        for _ in 0..workers {
            match ready_rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    shared.draining.store(true, Ordering::Relaxed);
                    let _ = shards.join();
                    return Err(std::io::Error::other(e));
                }
                Err(_) => return Err(std::io::Error::other("a shard did not start in time")),
            }
        }
        let control = Arc::new(Control {
            shared,
            config_path,
            fixed,
            next_generation: Mutex::new(1),
            driver,
            listen,
            log: Mutex::new(Some(log)),
            started: Instant::now(),
            health,
        });
        let admin = match admin_addr {
            Some(addr) => Some(crate::admin::Admin::start(addr, control.clone())?),
            None => None,
        };
        Ok(Server {
            control,
            shards: Some(shards),
            admin,
        })
    }

    /// The addresses the proxy listens on (port 0 resolved).
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.control.listen
    }

    /// The admin listener's address, if any.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr())
    }

    /// The control plane (reload, status, drain).
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Which I/O driver the shards run.
    pub fn driver(&self) -> DriverKind {
        self.control.driver
    }

    /// Drains (in-flight requests finish within the drain timeout, idle connections close) and
    /// stops everything. Returns when all shards have exited and the log is flushed.
    pub fn shutdown(mut self) {
        self.control.begin_drain();
        if let Some(shards) = self.shards.take() {
            let _ = shards.join();
        }
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
        if let Some(log) = self
            .control
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            log.shutdown();
        }
    }

    /// Blocks until SIGTERM or SIGINT (then drains and returns), reloading on SIGHUP and
    /// reopening the access log on SIGUSR1.
    pub fn wait_for_shutdown_signal(self) {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
        let mut signals =
            match signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM, SIGUSR1]) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("headwater: cannot install signal handlers: {e}");
                    return self.shutdown();
                }
            };
        for sig in signals.forever() {
            match sig {
                SIGHUP => {
                    // A rejected reload has already been reported by `reload`.
                    if let Ok(g) = self.control.reload() {
                        eprintln!("headwater: reloaded, generation {g}");
                    }
                }
                SIGUSR1 => self.control.reopen_log(),
                _ => {
                    eprintln!("headwater: draining");
                    break;
                }
            }
        }
        self.shutdown();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(shards) = self.shards.take() {
            self.control.begin_drain();
            let _ = shards.join();
        }
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
    }
}

/// The body of one shard thread.
async fn run_shard(
    index: usize,
    shared: Arc<Shared>,
    log: crate::access_log::ShardLog,
    listen: &[SocketAddr],
    backlog: u32,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let shard = Rc::new(Shard::new(index, shared, log));
    let mut listeners = Vec::with_capacity(listen.len());
    for addr in listen {
        match runtime::shard_listener(*addr, backlog) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                let _ = ready.send(Err(format!("shard {index}: cannot listen on {addr}: {e}")));
                return;
            }
        }
    }
    let mut accepting = Vec::new();
    for listener in listeners {
        accepting.push(monoio::spawn(accept_loop(shard.clone(), listener)));
    }
    let _ = ready.send(Ok(()));

    // Housekeeping until the drain starts.
    let mut last_sweep = Instant::now();
    while !shard.shared.is_draining() {
        monoio::time::sleep(TICK).await;
        shard.log.borrow_mut().flush();
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            shard.pool.borrow_mut().sweep(Instant::now());
            last_sweep = Instant::now();
        }
    }
    // Drain: listeners close as their loops see the flag; idle connections are woken and close;
    // requests in flight get until the drain timeout.
    shard.drain.fire();
    shard.pool.borrow_mut().clear();
    for a in accepting {
        a.await;
    }
    let drain_timeout = shard.shared.current().config.server.drain_timeout;
    let deadline = Instant::now() + drain_timeout;
    while shard.active.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    shard.pool.borrow_mut().clear();
    shard.log.borrow_mut().flush();
}

async fn accept_loop(shard: Rc<Shard>, listener: monoio::net::TcpListener) {
    let max = shard
        .shared
        .current()
        .config
        .server
        .max_connections_per_shard;
    while !shard.shared.is_draining() {
        match crate::io::accept_timeout(&listener, ACCEPT_POLL).await {
            Ok(Some((stream, peer))) => {
                if shard.active.get() >= max {
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                monoio::spawn(conn::serve(shard.clone(), stream, peer));
            }
            Ok(None) => {}
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                if e.raw_os_error() != Some(libc::ECONNABORTED) {
                    monoio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}
