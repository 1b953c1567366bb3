//! The proxy: what a shard runs. [`Generation`] is one published configuration with everything
//! derived from it; [`Shard`] is the per-core state (listeners' connections, upstream pool,
//! balancer state, metrics and log handles); `conn` is the per-connection state machine.

pub(crate) mod conn;
pub mod pool;
pub(crate) mod reply;
pub(crate) mod signal;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use headwater_balancer::RoundRobin;

use crate::access_log::ShardLog;
use crate::config::{Config, XffMode};
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
        Ok(Generation {
            id,
            config,
            route_ids: interned.routes,
            cluster_ids: interned.clusters,
            limits,
            xff,
        })
    }
}

/// What every shard and the control thread share: read-mostly, swapped whole.
pub struct Shared {
    current: ArcSwap<Generation>,
    generation: AtomicU64,
    /// Metrics of all shards.
    pub metrics: Arc<Registry>,
    /// Set once on shutdown: stop accepting, finish in-flight requests, close idle connections.
    pub draining: AtomicBool,
}

impl Shared {
    /// Shared state starting at `first`.
    pub fn new(first: Generation, metrics: Arc<Registry>) -> Arc<Shared> {
        let id = first.id;
        metrics.set_config_generation(id);
        Arc::new(Shared {
            current: ArcSwap::from_pointee(first),
            generation: AtomicU64::new(id),
            metrics,
            draining: AtomicBool::new(false),
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
    /// Round robin state per cluster of the cached generation.
    rr: RefCell<Vec<RoundRobin>>,
    pub log: RefCell<ShardLog>,
    /// Open client connections.
    pub active: Cell<usize>,
    /// Fired when the shard starts draining: wakes idle connections.
    pub drain: signal::Signal,
}

impl Shard {
    pub fn new(index: usize, shared: Arc<Shared>, log: ShardLog) -> Shard {
        let current = shared.current();
        let id = current.id;
        let rr = (0..current.config.clusters.len())
            .map(|_| RoundRobin::new(index))
            .collect();
        Shard {
            index,
            shared,
            local: RefCell::new(Rc::new(current)),
            local_id: Cell::new(id),
            pool: RefCell::new(pool::Pool::default()),
            rr: RefCell::new(rr),
            log: RefCell::new(log),
            active: Cell::new(0),
            drain: signal::Signal::default(),
        }
    }

    pub fn metrics(&self) -> &ShardMetrics {
        self.shared.metrics.shard(self.index)
    }

    /// The generation a new request pins.
    #[allow(clippy::redundant_allocation)]
    pub fn generation(&self) -> Rc<Arc<Generation>> {
        let id = self.shared.generation.load(Ordering::Acquire);
        if id != self.local_id.get() {
            let next = self.shared.current();
            let clusters = next.config.clusters.len();
            *self.rr.borrow_mut() = (0..clusters).map(|_| RoundRobin::new(self.index)).collect();
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
        self.local.borrow().clone()
    }

    /// Picks an endpoint index of `cluster` in generation `generation`, skipping `avoid`.
    pub fn pick(&self, generation: &Generation, cluster: usize, avoid: &[usize]) -> Option<usize> {
        let n = generation.config.clusters[cluster].endpoints.len();
        let mut rr = self.rr.borrow_mut();
        // The cached round robin state belongs to the shard's current generation; a request
        // pinned to an older one still gets a valid index.
        match rr.get_mut(cluster) {
            Some(state) if generation.id == self.local_id.get() => state
                .pick(n, |i| !avoid.contains(&i))
                .or_else(|| state.pick(n, |_| true)),
            _ => RoundRobin::new(self.index).pick(n, |i| !avoid.contains(&i)),
        }
    }
}
