//! The proxy: what a shard runs. [`Generation`] is one published configuration with everything
//! derived from it; [`Shard`] is the per-core state (listeners' connections, upstream pool,
//! balancer state, metrics and log handles); `conn` is the per-connection state machine.

pub(crate) mod conn;
pub mod pool;
pub(crate) mod reply;
pub(crate) mod signal;
pub(crate) mod upstreams;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::access_log::ShardLog;
use crate::config::{Config, XffMode};
use crate::health::{HealthSnapshot, HealthTable};
use crate::metrics::{ClusterId, Registry, RouteId, ShardMetrics};

/// One published configuration and what is derived from it once, not per request.
pub struct Generation {
    /// Increases by one with every successful (re)load.
    pub id: u64,
    /// The validated configuration.
    pub config: Config,
    /// Metric ids of the routes, by route index.
    pub route_ids: Vec<RouteId>,
    /// Metric ids of the clusters, by cluster index.
    pub cluster_ids: Vec<ClusterId>,
    /// Codec limits from `[server.limits]`.
    pub limits: headwater_http1::Limits,
    /// `X-Forwarded-For` mode in codec terms.
    pub xff: headwater_http1::XffMode,
    /// The LLM gateway's router, when the config has an `[llm]` section.
    pub llm: Option<Arc<crate::llm::LlmRuntime>>,
}

impl Generation {
    /// Derives a generation from a validated config, interning its metric names.
    pub fn new(id: u64, config: Config, metrics: &Registry) -> Result<Generation, String> {
        let routes: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        let clusters: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
        let interned = metrics.intern(&routes, &clusters)?;
        let limits = config.server.limits;
        let xff = match config.server.forwarded.x_forwarded_for {
            XffMode::Append => headwater_http1::XffMode::Append,
            XffMode::Replace => headwater_http1::XffMode::Replace,
            XffMode::Off => headwater_http1::XffMode::Off,
        };
        let llm = config.llm.clone().map(crate::llm::LlmRuntime::new);
        Ok(Generation {
            id,
            config,
            route_ids: interned.routes,
            cluster_ids: interned.clusters,
            limits,
            xff,
            llm,
        })
    }

    /// Keeps `previous`'s LLM router (its deployments' health, latency and limits) when the
    /// `[llm]` section did not change.
    pub fn inherit_llm(&mut self, previous: &Generation) {
        if let (Some(prev), Some(_)) = (&previous.llm, &self.llm) {
            if Some(&prev.section) == self.config.llm.as_ref() {
                self.llm = Some(prev.clone());
            }
        }
    }
}

/// What every shard and the control thread share: read-mostly, swapped whole.
pub struct Shared {
    current: ArcSwap<Generation>,
    generation: AtomicU64,
    /// Metrics of all shards.
    pub metrics: Arc<Registry>,
    /// Upstream health, published by the health thread.
    pub health: Arc<HealthTable>,
    /// Number of shards (breaker limits are divided among them).
    pub shards: usize,
    /// Set once on shutdown: stop accepting, finish in-flight requests, close idle connections.
    pub draining: AtomicBool,
    /// The LLM gateway's key store and ledger, kept across reloads.
    pub llm: crate::llm::LlmNode,
}

impl Shared {
    /// Shared state starting at `first`.
    pub fn new(
        first: Generation,
        metrics: Arc<Registry>,
        health: Arc<HealthTable>,
        shards: usize,
    ) -> Arc<Shared> {
        let id = first.id;
        metrics.set_config_generation(id);
        Arc::new(Shared {
            current: ArcSwap::from_pointee(first),
            generation: AtomicU64::new(id),
            metrics,
            health,
            shards,
            draining: AtomicBool::new(false),
            llm: crate::llm::LlmNode::default(),
        })
    }

    /// The generation in force.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Publishes a new generation; requests that already started keep the one they pinned.
    pub fn publish(&self, next: Generation) {
        let id = next.id;
        self.current.store(Arc::new(next));
        self.generation.store(id, Ordering::Release);
        self.metrics.set_config_generation(id);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// The state of one shard, shared by the tasks of that shard's thread only.
pub(crate) struct Shard {
    pub index: usize,
    pub shared: Arc<Shared>,
    /// This shard's cached view of the current generation; refreshed when the shared
    /// generation number moves. Requests clone the `Rc` (no atomic traffic between shards):
    /// cloning the `Arc` itself would bounce its reference count between cores on every
    /// request, which is what the extra allocation buys off.
    #[allow(clippy::redundant_allocation)]
    local: RefCell<Rc<Arc<Generation>>>,
    local_id: Cell<u64>,
    pub pool: RefCell<pool::Pool>,
    /// Balancers, plans, quarantines, breakers per cluster of the cached generation.
    pub upstreams: RefCell<upstreams::Upstreams>,
    /// This shard's cached health snapshot.
    #[allow(clippy::redundant_allocation)]
    health: RefCell<Rc<Arc<HealthSnapshot>>>,
    pub log: RefCell<ShardLog>,
    /// Open client connections.
    pub active: Cell<usize>,
    /// Fired when the shard starts draining: wakes idle connections.
    pub drain: signal::Signal,
    /// The LLM provider client of the current `[llm]` runtime (rebuilt when it changes).
    #[allow(clippy::type_complexity)]
    pub llm_client: RefCell<
        Option<(
            Arc<crate::llm::LlmRuntime>,
            Rc<crate::llm::client::ProviderClient>,
        )>,
    >,
}

impl Shard {
    pub fn new(index: usize, shared: Arc<Shared>, log: ShardLog) -> Shard {
        let current = shared.current();
        let id = current.id;
        let mut ups = upstreams::Upstreams::new(id, &current.config, index, shared.shards);
        let snapshot = shared.health.load();
        ups.replan(&snapshot, &current.config);
        Shard {
            index,
            local: RefCell::new(Rc::new(current)),
            local_id: Cell::new(id),
            pool: RefCell::new(pool::Pool::default()),
            upstreams: RefCell::new(ups),
            health: RefCell::new(Rc::new(snapshot)),
            shared,
            log: RefCell::new(log),
            active: Cell::new(0),
            drain: signal::Signal::default(),
            llm_client: RefCell::new(None),
        }
    }

    pub fn metrics(&self) -> &ShardMetrics {
        self.shared.metrics.shard(self.index)
    }

    /// The generation a new request pins. Also brings the shard's upstream state up to date
    /// with the latest config and health snapshot (two atomic loads when nothing changed).
    #[allow(clippy::redundant_allocation)]
    pub fn generation(&self) -> Rc<Arc<Generation>> {
        let id = self.shared.generation.load(Ordering::Acquire);
        if id != self.local_id.get() {
            let next = self.shared.current();
            self.upstreams.borrow_mut().reconfigure(
                next.id,
                &next.config,
                self.index,
                self.shared.shards,
            );
            // Idle connections to endpoints that left every cluster are closed now.
            let keep: std::collections::HashSet<_> = next
                .config
                .clusters
                .iter()
                .flat_map(|c| c.endpoints.iter().map(|e| e.address))
                .collect();
            self.pool
                .borrow_mut()
                .retain_endpoints(|a| keep.contains(a));
            self.local_id.set(next.id);
            *self.local.borrow_mut() = Rc::new(next);
        }
        let current = self.local.borrow().clone();
        if self.shared.health.generation() != self.upstreams.borrow().health_generation {
            let snapshot = self.shared.health.load();
            self.upstreams
                .borrow_mut()
                .replan(&snapshot, &current.config);
            *self.health.borrow_mut() = Rc::new(snapshot);
        }
        current
    }

    /// Whether `generation` is the one the shard's upstream state belongs to.
    pub fn is_current(&self, generation: &Generation) -> bool {
        generation.id == self.local_id.get()
    }

    /// The config generation the shard's upstream state belongs to.
    pub fn local_id(&self) -> u64 {
        self.local_id.get()
    }

    /// Runs `f` on the health counters of an endpoint, when the snapshot describes
    /// `config_id`. Borrowed, not cloned: every shard holds the same `Arc<Cells>`, and bumping
    /// its reference count on every attempt would bounce that count between cores.
    pub fn with_cells<T>(
        &self,
        config_id: u64,
        cluster: usize,
        endpoint: usize,
        f: impl FnOnce(&crate::health::Cells) -> T,
    ) -> Option<T> {
        let h = self.health.borrow();
        h.cluster(config_id, cluster)
            .and_then(|c| c.endpoints.get(endpoint))
            .map(|e| f(&e.cells))
    }

    /// Picks an endpoint of `cluster` for a request pinned to `generation`, skipping `avoid`.
    /// Returns the endpoint and whether it came from a panic-mode tier.
    pub fn pick(
        &self,
        generation: &Generation,
        cluster: usize,
        avoid: &[usize],
        key: Option<u64>,
        now: std::time::Instant,
    ) -> Option<(usize, bool)> {
        if self.is_current(generation) {
            return self.upstreams.borrow_mut().clusters[cluster].pick(avoid, key, now);
        }
        // A request pinned to an older config (a reload happened while it ran): any
        // endpoint it has not tried.
        let n = generation.config.clusters[cluster].endpoints.len();
        (0..n)
            .map(|i| (i + self.index) % n)
            .find(|i| !avoid.contains(i))
            .map(|i| (i, false))
    }

    /// Whether another endpoint than those in `avoid` could be picked now (without picking:
    /// the balancer's state is left alone).
    pub fn has_alternative(
        &self,
        generation: &Generation,
        cluster: usize,
        avoid: &[usize],
    ) -> bool {
        let now = std::time::Instant::now();
        self.with_cluster(generation, cluster, |c| c.has_candidate(avoid, now))
            .unwrap_or_else(|| {
                let n = generation.config.clusters[cluster].endpoints.len();
                (0..n).any(|i| !avoid.contains(&i))
            })
    }

    /// Runs `f` on the shard's state of `cluster` when `generation` is the shard's current one
    /// (a request pinned to an older config has no breakers to consult: `None`).
    pub fn with_cluster<T>(
        &self,
        generation: &Generation,
        cluster: usize,
        f: impl FnOnce(&mut upstreams::ClusterRuntime) -> T,
    ) -> Option<T> {
        self.is_current(generation)
            .then(|| f(&mut self.upstreams.borrow_mut().clusters[cluster]))
    }

    /// The body and `Retry-After` of a 503 for `cluster`.
    pub fn describe_unavailable(
        &self,
        generation: &Generation,
        cluster: usize,
        refusal: upstreams::Refusal,
        now: std::time::Instant,
    ) -> upstreams::Unavailable {
        let health = self.health.borrow();
        let ups = self.upstreams.borrow();
        let runtime = self.is_current(generation).then(|| &ups.clusters[cluster]);
        upstreams::unavailable(
            runtime,
            health.cluster(generation.id, cluster),
            &generation.config.clusters[cluster],
            refusal,
            now,
        )
    }
}
