//! What the health thread publishes and the shards read: one immutable [`HealthSnapshot`] per
//! publication (every endpoint's state, effective weight, last failure, the earliest expected
//! recovery), swapped whole through an [`arc_swap::ArcSwap`], plus the per-shard counter
//! [`Cells`] through which shards report what their requests came to.
//!
//! A shard reads the snapshot without locks or allocation: it caches the `Arc` and compares a
//! generation number (one relaxed atomic load per request), exactly as it does for the config.
//! Counter cells are written by one shard each (a load and a store, no read-modify-write) and
//! read by the health thread on its tick; a cell lives as long as its endpoint stays in the
//! config, so reloads do not reset what has been counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use headwater_health::Outcome;

/// An endpoint's last active probe: when, whether it passed, and what it found.
pub type LastProbe = (Instant, bool, Arc<str>);

/// An endpoint's state as the balancers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    /// Serving: passed its checks (or has none) and is not ejected.
    Healthy,
    /// No probe result yet. Gets traffic only while its whole cluster is unknown (cold start)
    /// or in panic mode.
    Unknown,
    /// Failed its active checks: hard-down, no traffic even in panic mode.
    Unhealthy,
    /// Ejected by outlier detection until the given time; gets traffic only in panic mode.
    Ejected,
}

impl EndpointState {
    /// The name used in `/status`, `/metrics` and 503 bodies.
    pub fn name(self) -> &'static str {
        match self {
            EndpointState::Healthy => "healthy",
            EndpointState::Unknown => "unknown",
            EndpointState::Unhealthy => "unhealthy",
            EndpointState::Ejected => "ejected",
        }
    }
}

/// One endpoint in a snapshot.
#[derive(Debug, Clone)]
pub struct EndpointHealth {
    /// Its address (the identity that survives reloads, with the cluster name).
    pub address: std::net::SocketAddr,
    pub state: EndpointState,
    /// Whether the balancers may send it traffic outside panic mode.
    pub routable: bool,
    /// Effective weight (configured weight, ramped during slow start).
    pub weight: u32,
    /// Configured priority level.
    pub priority: u8,
    /// When an ejection ends.
    pub ejected_until: Option<Instant>,
    /// Ejections so far (decays while the endpoint behaves).
    pub ejections: u32,
    /// Why it was last ejected or marked unhealthy, with when.
    pub last_failure: Option<(Instant, Arc<str>)>,
    /// Last active probe: when, whether it passed, and what it found.
    pub last_probe: Option<LastProbe>,
    /// When the endpoint is expected back, for `Retry-After` (ejection end, or the earliest
    /// time enough probes can pass).
    pub recovery: Option<Instant>,
    /// Counters the shards write.
    pub cells: Arc<Cells>,
}

/// One cluster in a snapshot (same index as in the config the snapshot was built for).
#[derive(Debug, Clone)]
pub struct ClusterHealth {
    pub name: Arc<str>,
    pub endpoints: Vec<EndpointHealth>,
    /// Endpoints that are healthy (or routable in a cold start).
    pub healthy: usize,
    /// Earliest expected recovery of an endpoint that is not routable.
    pub earliest_recovery: Option<Instant>,
    /// Whether the best priority level is in panic mode.
    pub panic: bool,
}

/// Everything the shards need to know about upstream health, as of one moment.
#[derive(Debug)]
pub struct HealthSnapshot {
    /// Increases with every publication.
    pub generation: u64,
    /// The config generation whose clusters and endpoints (and their indices) this describes.
    pub config_id: u64,
    pub published_at: Instant,
    pub clusters: Vec<ClusterHealth>,
}

impl HealthSnapshot {
    /// The cluster at `index` when this snapshot describes config generation `config_id`.
    pub fn cluster(&self, config_id: u64, index: usize) -> Option<&ClusterHealth> {
        if self.config_id == config_id {
            self.clusters.get(index)
        } else {
            None
        }
    }
}

/// The table the snapshot is published through.
pub struct HealthTable {
    current: ArcSwap<HealthSnapshot>,
    generation: AtomicU64,
}

impl HealthTable {
    /// A table holding `first`.
    pub fn new(first: HealthSnapshot) -> HealthTable {
        let generation = first.generation;
        HealthTable {
            current: ArcSwap::from_pointee(first),
            generation: AtomicU64::new(generation),
        }
    }

    /// Publishes a snapshot.
    pub fn publish(&self, next: HealthSnapshot) {
        let generation = next.generation;
        self.current.store(Arc::new(next));
        self.generation.store(generation, Ordering::Release);
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<HealthSnapshot> {
        self.current.load_full()
    }

    /// The generation of the current snapshot (cheap: for caches).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// Counters of one endpoint, one cache-line-aligned cell per shard.
#[derive(Debug)]
pub struct Cells {
    shards: Box<[Cell]>,
}

/// One shard's counters for one endpoint. Written by that shard only.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Cell {
    /// Finished attempts.
    pub requests: AtomicU64,
    /// Attempts that got a response below 500.
    pub successes: AtomicU64,
    pub errors_5xx: AtomicU64,
    pub gateway_failures: AtomicU64,
    /// Sum of time to response head over attempts that got one, in microseconds.
    pub latency_us: AtomicU64,
    /// Current run of 5xx answers on this shard.
    pub consecutive_5xx: AtomicU64,
    /// Current run of gateway failures on this shard.
    pub consecutive_gateway: AtomicU64,
    /// The shard's peak-EWMA estimate in microseconds (0: none), for `/status`.
    pub ewma_us: AtomicU64,
    /// Requests in flight from this shard.
    pub in_flight: AtomicU64,
    /// This shard's breaker for the endpoint: 0 closed (or none), 1 open, 2 half-open.
    pub breaker: AtomicU64,
}

/// Single-writer increment: a plain load and store (no locked instruction).
fn bump(cell: &AtomicU64, by: u64) {
    cell.store(
        cell.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

impl Cells {
    /// Cells for `shards` shards.
    pub fn new(shards: usize) -> Cells {
        Cells {
            shards: (0..shards.max(1)).map(|_| Cell::default()).collect(),
        }
    }

    /// The cell of shard `shard` (the caller is that shard).
    pub fn shard(&self, shard: usize) -> &Cell {
        &self.shards[shard % self.shards.len()]
    }

    /// Records what one attempt came to, from shard `shard`.
    pub fn record(&self, shard: usize, outcome: Outcome) {
        let c = self.shard(shard);
        bump(&c.requests, 1);
        match outcome {
            Outcome::Response { status, latency } => {
                bump(&c.latency_us, latency.as_micros() as u64);
                c.consecutive_gateway.store(0, Ordering::Relaxed);
                if status >= 500 {
                    bump(&c.errors_5xx, 1);
                    bump(&c.consecutive_5xx, 1);
                } else {
                    bump(&c.successes, 1);
                    c.consecutive_5xx.store(0, Ordering::Relaxed);
                }
            }
            _ => {
                bump(&c.gateway_failures, 1);
                bump(&c.consecutive_gateway, 1);
            }
        }
    }

    /// Adjusts the in-flight gauge of shard `shard`.
    pub fn in_flight(&self, shard: usize, start: bool) {
        let c = &self.shard(shard).in_flight;
        let v = c.load(Ordering::Relaxed);
        c.store(
            if start { v + 1 } else { v.saturating_sub(1) },
            Ordering::Relaxed,
        );
    }

    /// Publishes shard `shard`'s latency estimate.
    pub fn set_ewma(&self, shard: usize, ewma: Option<Duration>) {
        let us = ewma.map_or(0, |d| d.as_micros().max(1) as u64);
        self.shard(shard).ewma_us.store(us, Ordering::Relaxed);
    }

    /// Publishes shard `shard`'s breaker state for the endpoint.
    pub fn set_breaker(&self, shard: usize, state: u64) {
        self.shard(shard).breaker.store(state, Ordering::Relaxed);
    }

    /// Shards whose breaker for the endpoint is open, and half-open.
    pub fn breakers(&self) -> (usize, usize) {
        let mut open = 0;
        let mut half = 0;
        for c in self.shards.iter() {
            match c.breaker.load(Ordering::Relaxed) {
                1 => open += 1,
                2 => half += 1,
                _ => {}
            }
        }
        (open, half)
    }

    /// Sums over every shard.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        let mut ewma_sum = 0u64;
        let mut ewma_n = 0u64;
        for c in self.shards.iter() {
            t.requests += c.requests.load(Ordering::Relaxed);
            t.successes += c.successes.load(Ordering::Relaxed);
            t.errors_5xx += c.errors_5xx.load(Ordering::Relaxed);
            t.gateway_failures += c.gateway_failures.load(Ordering::Relaxed);
            t.latency_us += c.latency_us.load(Ordering::Relaxed);
            t.consecutive_5xx += c.consecutive_5xx.load(Ordering::Relaxed);
            t.consecutive_gateway += c.consecutive_gateway.load(Ordering::Relaxed);
            t.in_flight += c.in_flight.load(Ordering::Relaxed);
            let e = c.ewma_us.load(Ordering::Relaxed);
            if e > 0 {
                ewma_sum += e;
                ewma_n += 1;
            }
        }
        t.ewma_us = ewma_sum.checked_div(ewma_n);
        t
    }
}

/// [`Cells`] summed over the shards.
///
/// The consecutive counts are the sum of each shard's current run: an endpoint that fails on
/// every shard reaches a threshold as fast as if one shard saw every request; one success on a
/// shard ends that shard's run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub successes: u64,
    pub errors_5xx: u64,
    pub gateway_failures: u64,
    pub latency_us: u64,
    pub consecutive_5xx: u64,
    pub consecutive_gateway: u64,
    pub in_flight: u64,
    /// Mean of the shards' latency estimates.
    pub ewma_us: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_sum_over_shards_and_runs_reset() {
        let cells = Cells::new(2);
        let ok = Outcome::Response {
            status: 200,
            latency: Duration::from_millis(2),
        };
        let err = Outcome::Response {
            status: 503,
            latency: Duration::from_millis(1),
        };
        cells.record(0, err);
        cells.record(0, err);
        cells.record(1, err);
        cells.record(1, Outcome::Reset);
        let t = cells.totals();
        assert_eq!(t.requests, 4);
        assert_eq!(t.errors_5xx, 3);
        assert_eq!(t.gateway_failures, 1);
        assert_eq!(t.consecutive_5xx, 3);
        assert_eq!(t.consecutive_gateway, 1);
        assert_eq!(t.latency_us, 3000);
        cells.record(0, ok);
        let t = cells.totals();
        assert_eq!(
            t.consecutive_5xx, 1,
            "shard 0's run ended, shard 1's goes on"
        );
        assert_eq!(t.successes, 1);
        cells.record(1, ok);
        assert_eq!(cells.totals().consecutive_gateway, 0);
    }

    #[test]
    fn table_publishes_generations() {
        let snap = |g| HealthSnapshot {
            generation: g,
            config_id: 1,
            published_at: Instant::now(),
            clusters: Vec::new(),
        };
        let table = HealthTable::new(snap(1));
        assert_eq!(table.generation(), 1);
        table.publish(snap(2));
        assert_eq!(table.generation(), 2);
        assert_eq!(table.load().generation, 2);
        assert!(table.load().cluster(1, 0).is_none());
        assert!(table.load().cluster(2, 0).is_none());
    }
}
