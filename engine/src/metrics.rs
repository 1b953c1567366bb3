//! Metrics: per-shard counters, summed on scrape, rendered as Prometheus text.
//!
//! # What this module owns
//!
//! - [`Registry`]: shared (`Arc`) between the shards, the control thread and the admin thread.
//!   It owns one [`ShardMetrics`] per shard, the table that maps route and cluster *names* to
//!   dense ids ([`Registry::intern`]), the control-plane series (config reloads, config
//!   generation) and the Prometheus renderer ([`Registry::render_prometheus`]).
//! - [`ShardMetrics`]: the counters of one shard. Only that shard's thread writes them.
//!
//! # The hot path
//!
//! Recording a request takes no lock, allocates nothing and writes no cache line that another
//! shard writes:
//!
//! - every counter is an `AtomicU64` with a **single writer** (the owning shard), so an increment
//!   is a relaxed load followed by a relaxed store of the sum, not a `fetch_add`. That is exact:
//!   the writer always reads back its own latest store (per-location coherence plus program
//!   order), so no increment is lost; the scraping thread reads each counter with one relaxed
//!   load and sees some value the writer stored (never a torn one, and never going backwards
//!   between two reads by the same thread). A `fetch_add` would be a locked read-modify-write
//!   (`lock xadd`, a full barrier on x86) for nothing. The price is a contract: **each
//!   `ShardMetrics` must be written by one thread at a time** (its shard). Breaking it is memory
//!   safe but loses counts.
//! - every [`ShardMetrics`] and every storage chunk it points to is aligned to 128 bytes (two
//!   cache lines, for the adjacent-line prefetcher), so no two shards' counters share a line.
//! - storage for route and cluster ids is allocated by [`Registry::intern`] on the control thread
//!   *before* it hands out the ids; a shard only reads a `OnceLock` (one acquire load) to find it.
//!
//! # Storage
//!
//! Ids are dense and capped ([`MAX_ROUTES`], [`MAX_CLUSTERS`]); per shard, storage comes in chunks
//! of 32 ids published through `OnceLock`s. Per route and shard: a latency histogram (19 buckets +
//! sum), bytes in and out, and request counts by status class for up to 4 clusters inline; further
//! (route, cluster) pairs go to a per-shard open-addressed table of 256 pairs, and counts that do
//! not fit there are exported as `headwater_requests_unattributed_total{route,code_class}` rather
//! than lost. A route cell is 408 bytes and a cluster cell 96 bytes, so **100 routes and 100
//! clusters cost about 81 KiB per shard** (4 route chunks = 51 KiB, 4 cluster chunks = 12 KiB, plus
//! a fixed 18 KiB: the pair table 12 KiB, the chunk directories 4 KiB, the per-shard scalars 2 KiB).
//!
//! Ids are never reused: a name keeps its id (and its counters) across reloads, even while a
//! config generation does not use it, and the renderer emits every name ever interned. The cap
//! therefore bounds the number of distinct names over the process lifetime.
//!
//! # Exported series
//!
//! All names start with `headwater_`: `requests_total{route,cluster,code_class}`,
//! `request_duration_seconds{route}` (histogram), `bytes_received_total{route}`,
//! `bytes_sent_total{route}`, `upstream_connect_errors_total{cluster}`,
//! `pool_hits_total{cluster}`, `pool_misses_total{cluster}`, `active_connections{shard}`,
//! `connections_accepted_total{shard}`, `timeouts_total{kind}`, `bad_requests_total{code}`,
//! `config_reloads_total{result}`, `config_generation`, and (only when non-zero)
//! `requests_unattributed_total{route,code_class}`.
//! Requests that matched no route carry `route=""` (and `cluster=""`), which is why route and
//! cluster names must not be empty; a request with a route but no cluster carries `cluster=""`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

/// Most distinct route names a [`Registry`] will ever intern.
pub const MAX_ROUTES: usize = 4096;
/// Most distinct cluster names a [`Registry`] will ever intern.
pub const MAX_CLUSTERS: usize = 4096;

/// Ids per storage chunk.
const CHUNK: usize = 32;
/// Clusters per route whose counts are stored inline in the route's cell.
const INLINE_PAIRS: usize = 4;
/// Entries in each shard's overflow table of (route, cluster) pairs; a power of two.
const OVERFLOW_PAIRS: usize = 256;
/// Slots probed in the overflow table before a count is recorded as unattributed.
const OVERFLOW_PROBES: usize = 16;
/// Status classes 1xx..5xx.
const CLASSES: usize = 5;
const CLASS_LABELS: [&str; CLASSES] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Upper bounds (inclusive, microseconds) of the latency histogram's finite buckets:
/// roughly log-scale (1-2.5-5 per decade) from 100 µs to 60 s.
pub const LATENCY_BUCKETS_US: [u64; 18] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];
/// `le` label values for [`LATENCY_BUCKETS_US`], in seconds.
const BUCKET_LABELS: [&str; 18] = [
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "0.5", "1", "2.5", "5", "10", "30", "60",
];
/// Finite buckets plus `+Inf`.
const BUCKETS: usize = LATENCY_BUCKETS_US.len() + 1;

/// Pair-key value meaning "no cluster" (`cluster=""`).
const NO_CLUSTER: u32 = u32::MAX;
/// Route-key value meaning "no route matched" (`route=""`).
const UNMATCHED: u32 = u32::MAX;
/// Lowest and highest codes counted individually by [`ShardMetrics::bad_request`].
const BAD_MIN: u16 = 400;
const BAD_MAX: u16 = 599;
const BAD_SLOTS: usize = (BAD_MAX - BAD_MIN) as usize + 2; // + one for "other"
/// Codes always exported by `bad_requests_total`, even at zero.
const BAD_ALWAYS: [u16; 6] = [400, 413, 414, 431, 501, 505];

/// Dense id of a route name, stable across reloads. Obtained from [`Registry::intern`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId(u32);

/// Dense id of a cluster name, stable across reloads. Obtained from [`Registry::intern`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId(u32);

impl RouteId {
    /// The id as an index (`0..MAX_ROUTES`), for callers keeping their own per-route tables.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl ClusterId {
    /// The id as an index (`0..MAX_CLUSTERS`), for callers keeping their own per-cluster tables.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Ids for one config generation, in the order the names were given to [`Registry::intern`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interned {
    /// `routes[i]` is the id of the `i`-th route name.
    pub routes: Vec<RouteId>,
    /// `clusters[i]` is the id of the `i`-th cluster name.
    pub clusters: Vec<ClusterId>,
}

/// Which timeout fired; the `kind` label of `headwater_timeouts_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeoutKind {
    /// The client did not send a complete request head in time.
    ClientHeader,
    /// A kept-alive client connection stayed idle too long.
    ClientIdle,
    /// The client stalled while sending the request body.
    ClientBody,
    /// Connecting to the upstream took too long.
    UpstreamConnect,
    /// The upstream did not send a response head in time.
    UpstreamResponseHeader,
    /// The upstream stalled while sending the response body.
    UpstreamIdle,
    /// The whole request exceeded its total deadline.
    Total,
}

impl TimeoutKind {
    /// Every kind, in label order.
    pub const ALL: [TimeoutKind; 7] = [
        TimeoutKind::ClientHeader,
        TimeoutKind::ClientIdle,
        TimeoutKind::ClientBody,
        TimeoutKind::UpstreamConnect,
        TimeoutKind::UpstreamResponseHeader,
        TimeoutKind::UpstreamIdle,
        TimeoutKind::Total,
    ];

    /// The `kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutKind::ClientHeader => "client_header",
            TimeoutKind::ClientIdle => "client_idle",
            TimeoutKind::ClientBody => "client_body",
            TimeoutKind::UpstreamConnect => "upstream_connect",
            TimeoutKind::UpstreamResponseHeader => "upstream_response_header",
            TimeoutKind::UpstreamIdle => "upstream_idle",
            TimeoutKind::Total => "total",
        }
    }
}

/// Index of the histogram bucket (`0..=18`, 18 being `+Inf`) that a latency falls in: the first
/// bucket whose upper bound is at least the latency, in whole microseconds.
pub fn latency_bucket(latency: Duration) -> usize {
    bucket_of_micros(micros(latency))
}

/// [`latency_bucket`] of a latency in whole microseconds.
fn bucket_of_micros(us: u64) -> usize {
    LATENCY_BUCKETS_US.partition_point(|&bound| bound < us)
}

/// Whole microseconds of `d`, saturating.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Index of a status class: 1xx -> 0 .. 5xx -> 4; out-of-range codes clamp to 1xx or 5xx.
fn class_index(status: u16) -> usize {
    (usize::from(status / 100).clamp(1, CLASSES)) - 1
}

/// A counter with a single writer; see the module docs for why load + store is exact.
struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    /// Adds `n`. Only the owning shard's thread may call this.
    #[inline]
    fn add(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    #[inline]
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Request counts by status class for one (route, cluster) pair.
struct PairSlot {
    /// 0 = free, else cluster id + 1, or [`NO_CLUSTER`]. Claimed (once) by the owning shard.
    cluster: AtomicU32,
    codes: [Counter; CLASSES],
}

impl PairSlot {
    const fn new() -> PairSlot {
        PairSlot {
            cluster: AtomicU32::new(0),
            codes: [const { Counter::new() }; CLASSES],
        }
    }
}

/// One route's counters in one shard.
struct RouteCell {
    buckets: [Counter; BUCKETS],
    sum_us: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    pairs: [PairSlot; INLINE_PAIRS],
    /// Counts that found no room in `pairs` nor in the shard's overflow table.
    unattributed: [Counter; CLASSES],
}

impl RouteCell {
    const fn new() -> RouteCell {
        RouteCell {
            buckets: [const { Counter::new() }; BUCKETS],
            sum_us: Counter::new(),
            bytes_in: Counter::new(),
            bytes_out: Counter::new(),
            pairs: [const { PairSlot::new() }; INLINE_PAIRS],
            unattributed: [const { Counter::new() }; CLASSES],
        }
    }
}

/// A per-cluster counter: its index in a [`ClusterCell`] and in [`CLUSTER_SERIES`].
#[derive(Clone, Copy)]
enum ClusterCounter {
    ConnectErrors,
    PoolHits,
    PoolMisses,
    Retries,
    BudgetExhausted,
    NoHealthyUpstream,
    CircuitOpen,
    PanicPicks,
    Fallbacks,
    LocalQuarantines,
    Hedges,
}

const CLUSTER_COUNTERS: usize = ClusterCounter::Hedges as usize + 1;

/// Name (after `headwater_`) and help of each cluster counter's series, in [`ClusterCounter`]
/// order, which is also the order they are rendered in.
const CLUSTER_SERIES: [(&str, &str); CLUSTER_COUNTERS] = [
    (
        "upstream_connect_errors_total",
        "Failed connection attempts to upstream endpoints.",
    ),
    (
        "pool_hits_total",
        "Upstream connections reused from a shard's pool.",
    ),
    (
        "pool_misses_total",
        "Upstream requests that found no pooled connection.",
    ),
    (
        "upstream_retries_total",
        "Retries of requests on another endpoint (or a fresh connection).",
    ),
    (
        "retry_budget_exhausted_total",
        "Retries not made because the cluster's retry budget or breaker was used up.",
    ),
    (
        "no_healthy_upstream_total",
        "Gateway 503s because no endpoint could serve (reason no_healthy_upstream).",
    ),
    (
        "circuit_open_total",
        "Gateway 503s because a circuit breaker refused the request (reason circuit_open).",
    ),
    (
        "panic_picks_total",
        "Endpoints picked in panic mode (healthy share below the panic threshold).",
    ),
    (
        "fallback_requests_total",
        "Requests sent to the route's fallback cluster because this one could not serve.",
    ),
    (
        "local_quarantines_total",
        "Endpoints a shard stopped using on its own for 1 s (a connect failure, or a run of \
         failures reaching the outlier thresholds) before the health thread's next snapshot.",
    ),
    (
        "hedged_requests_total",
        "Second tries sent to another endpoint because the first had not answered within the \
         route's hedge_after (also counted as retries).",
    ),
];

/// One cluster's counters in one shard, indexed by [`ClusterCounter`].
struct ClusterCell {
    counters: [Counter; CLUSTER_COUNTERS],
    /// The shard's cluster circuit breaker: 0 closed (or none), 1 open, 2 half-open.
    breaker: AtomicU64,
}

impl ClusterCell {
    const fn new() -> ClusterCell {
        ClusterCell {
            counters: [const { Counter::new() }; CLUSTER_COUNTERS],
            breaker: AtomicU64::new(0),
        }
    }
}

/// Why the gateway answered 503 itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailability {
    /// No endpoint could serve.
    NoHealthyUpstream,
    /// A circuit breaker refused the request.
    CircuitOpen,
}

#[repr(align(128))]
struct RouteChunk([RouteCell; CHUNK]);

#[repr(align(128))]
struct ClusterChunk([ClusterCell; CHUNK]);

struct OverflowEntry {
    /// 0 = free, else `(route key << 32) | cluster key` (see [`pair_key`]).
    key: AtomicU64,
    codes: [Counter; CLASSES],
}

#[repr(align(128))]
struct OverflowTable([OverflowEntry; OVERFLOW_PAIRS]);

fn pair_key(route: u32, cluster: u32) -> u64 {
    (u64::from(route) << 32) | u64::from(cluster)
}

/// The counters of one shard.
///
/// Reached through [`Registry::shard`], which returns `&ShardMetrics`: a shard thread keeps an
/// `Arc<Registry>` and its index (or the reference, scoped to the `Arc`) and calls the recording
/// methods on it. Every recording method must be called only from the shard's own thread (one
/// writer per `ShardMetrics`; see the module docs). None of them locks or allocates.
#[repr(align(128))]
pub struct ShardMetrics {
    active: AtomicI64,
    accepted: Counter,
    timeouts: [Counter; TimeoutKind::ALL.len()],
    bad: [Counter; BAD_SLOTS],
    unmatched: RouteCell,
    routes: Box<[OnceLock<Box<RouteChunk>>]>,
    clusters: Box<[OnceLock<Box<ClusterChunk>>]>,
    overflow: Box<OverflowTable>,
}

impl ShardMetrics {
    fn new() -> ShardMetrics {
        ShardMetrics {
            active: AtomicI64::new(0),
            accepted: Counter::new(),
            timeouts: [const { Counter::new() }; TimeoutKind::ALL.len()],
            bad: [const { Counter::new() }; BAD_SLOTS],
            unmatched: RouteCell::new(),
            routes: (0..MAX_ROUTES / CHUNK).map(|_| OnceLock::new()).collect(),
            clusters: (0..MAX_CLUSTERS / CHUNK).map(|_| OnceLock::new()).collect(),
            overflow: Box::new(OverflowTable(
                [const {
                    OverflowEntry {
                        key: AtomicU64::new(0),
                        codes: [const { Counter::new() }; CLASSES],
                    }
                }; OVERFLOW_PAIRS],
            )),
        }
    }

    #[inline]
    fn route_cell(&self, id: u32) -> Option<&RouteCell> {
        let i = id as usize;
        self.routes
            .get(i / CHUNK)?
            .get()
            .map(|chunk| &chunk.0[i % CHUNK])
    }

    #[inline]
    fn cluster_cell(&self, id: ClusterId) -> Option<&ClusterCell> {
        let i = id.0 as usize;
        self.clusters
            .get(i / CHUNK)?
            .get()
            .map(|chunk| &chunk.0[i % CHUNK])
    }

    /// A client connection was accepted: bumps `connections_accepted_total` and
    /// `active_connections`.
    #[inline]
    pub fn connection_opened(&self) {
        self.accepted.add(1);
        let v = self.active.load(Ordering::Relaxed);
        self.active.store(v.wrapping_add(1), Ordering::Relaxed);
    }

    /// A client connection closed: decrements `active_connections`.
    #[inline]
    pub fn connection_closed(&self) {
        let v = self.active.load(Ordering::Relaxed);
        self.active.store(v.wrapping_sub(1), Ordering::Relaxed);
    }

    /// A request completed (whatever its outcome): counts it by route, cluster and status class,
    /// records its latency and its bytes. `route` is `None` when no route matched (the 404),
    /// `cluster` is `None` when no upstream cluster was involved. Ids that were not interned by
    /// this registry are ignored.
    #[inline]
    pub fn request(
        &self,
        route: Option<RouteId>,
        cluster: Option<ClusterId>,
        status: u16,
        latency: Duration,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        let (route_key, cell) = match route {
            None => (UNMATCHED, &self.unmatched),
            Some(id) => match self.route_cell(id.0) {
                Some(cell) => (id.0 + 1, cell),
                None => return,
            },
        };
        let us = micros(latency);
        cell.buckets[bucket_of_micros(us)].add(1);
        cell.sum_us.add(us);
        cell.bytes_in.add(bytes_in);
        cell.bytes_out.add(bytes_out);

        let class = class_index(status);
        let cluster_key = cluster.map_or(NO_CLUSTER, |c| c.0 + 1);
        for slot in &cell.pairs {
            let k = slot.cluster.load(Ordering::Relaxed);
            if k == cluster_key {
                slot.codes[class].add(1);
                return;
            }
            if k == 0 {
                // Single writer: nobody else can claim this slot between the load and the store.
                // Release so that a scrape that sees the key also sees a coherent (zeroed or
                // counted) slot; the counters were zero before the claim anyway.
                slot.cluster.store(cluster_key, Ordering::Release);
                slot.codes[class].add(1);
                return;
            }
        }
        self.overflow_pair(cell, pair_key(route_key, cluster_key), class);
    }

    #[cold]
    fn overflow_pair(&self, cell: &RouteCell, key: u64, class: usize) {
        let table = &self.overflow.0;
        let mask = OVERFLOW_PAIRS - 1;
        // Fibonacci hashing of the pair key; the top bits pick the home slot.
        let home = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & mask;
        for probe in 0..OVERFLOW_PROBES {
            let entry = &table[(home + probe) & mask];
            let k = entry.key.load(Ordering::Relaxed);
            if k == key {
                entry.codes[class].add(1);
                return;
            }
            if k == 0 {
                entry.key.store(key, Ordering::Release);
                entry.codes[class].add(1);
                return;
            }
        }
        cell.unattributed[class].add(1);
    }

    /// Counts one `counter` event for `cluster` (ignored when `cluster` was not interned).
    #[inline]
    fn cluster_count(&self, cluster: ClusterId, counter: ClusterCounter) {
        if let Some(c) = self.cluster_cell(cluster) {
            c.counters[counter as usize].add(1);
        }
    }

    /// Connecting to an endpoint of `cluster` failed (refused, unreachable, timed out, TLS).
    #[inline]
    pub fn upstream_connect_error(&self, cluster: ClusterId) {
        self.cluster_count(cluster, ClusterCounter::ConnectErrors);
    }

    /// An upstream connection for `cluster` was taken from this shard's pool.
    #[inline]
    pub fn pool_hit(&self, cluster: ClusterId) {
        self.cluster_count(cluster, ClusterCounter::PoolHits);
    }

    /// No pooled connection for `cluster` was available; a new one is opened.
    #[inline]
    pub fn pool_miss(&self, cluster: ClusterId) {
        self.cluster_count(cluster, ClusterCounter::PoolMisses);
    }

    /// A request to `cluster` was retried (one per retry).
    #[inline]
    pub fn retry(&self, cluster: ClusterId) {
        self.cluster_count(cluster, ClusterCounter::Retries);
    }

    /// A retry to `cluster` was not made because the retry budget (or breaker) was used up.
    #[inline]
    pub fn retry_budget_exhausted(&self, cluster: ClusterId) {
        self.cluster_count(cluster, ClusterCounter::BudgetExhausted);
    }

    /// The gateway answered 503 itself for `cluster`.
    #[inline]
    pub fn unavailable(&self, cluster: ClusterId, why: Unavailability) {
        let counter = match why {
            Unavailability::NoHealthyUpstream => ClusterCounter::NoHealthyUpstream,
            Unavailability::CircuitOpen => ClusterCounter::CircuitOpen,
        };
        self.cluster_count(cluster, counter);
    }

    /// An endpoint of `cluster` was picked from a panic-mode tier.
    #[inline]
    pub fn panic_pick(&self, cluster: ClusterId) {
        self.cluster_count(cluster, ClusterCounter::PanicPicks);
    }

    /// A request to `cluster` went to the route's fallback cluster instead.
    #[inline]
    pub fn fallback(&self, cluster: ClusterId) {
        self.cluster_count(cluster, ClusterCounter::Fallbacks);
    }

    /// A shard quarantined an endpoint of `cluster` on its own.
    #[inline]
    pub fn local_quarantine(&self, cluster: ClusterId) {
        self.cluster_count(cluster, ClusterCounter::LocalQuarantines);
    }

    /// Publishes the state of this shard's circuit breaker for `cluster` (0 closed, 1 open, 2
    /// half-open).
    #[inline]
    pub fn set_cluster_breaker(&self, cluster: ClusterId, state: u64) {
        if let Some(c) = self.cluster_cell(cluster) {
            c.breaker.store(state, Ordering::Relaxed);
        }
    }

    /// A request to `cluster` was hedged (a second try sent while the first was unanswered).
    #[inline]
    pub fn hedge(&self, cluster: ClusterId) {
        self.cluster_count(cluster, ClusterCounter::Hedges);
    }

    /// A timeout of `kind` fired.
    #[inline]
    pub fn timeout(&self, kind: TimeoutKind) {
        self.timeouts[kind as usize].add(1);
    }

    /// The codec rejected a request with `status` (400, 413, 414, 431, 501, 505...). Codes
    /// outside 400..=599 are counted as `code="other"`.
    #[inline]
    pub fn bad_request(&self, status: u16) {
        let i = if (BAD_MIN..=BAD_MAX).contains(&status) {
            usize::from(status - BAD_MIN)
        } else {
            BAD_SLOTS - 1
        };
        self.bad[i].add(1);
    }
}

struct Names {
    routes: NameTable,
    clusters: NameTable,
}

/// Interned names of one kind: `names[id]` is the name of `id`.
#[derive(Default)]
struct NameTable {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl NameTable {
    fn len(&self) -> usize {
        self.names.len()
    }

    /// Errors if `list` holds an empty name or would push the table past `max`.
    fn check(&self, what: &str, list: &[&str], max: usize) -> Result<(), String> {
        if list.iter().any(|n| n.is_empty()) {
            return Err(format!(
                "metrics: a {what} name is empty (empty is reserved for \"none\")"
            ));
        }
        let new: HashSet<&str> = list
            .iter()
            .copied()
            .filter(|n| !self.ids.contains_key(*n))
            .collect();
        if self.len() + new.len() > max {
            return Err(format!(
                "metrics: too many distinct {what} names over this process's lifetime: {} known + {} new > {max}",
                self.len(),
                new.len()
            ));
        }
        Ok(())
    }

    /// The ids of `list`, interning the names not seen yet.
    fn assign(&mut self, list: &[&str]) -> Vec<u32> {
        list.iter()
            .map(|&name| {
                if let Some(&id) = self.ids.get(name) {
                    return id;
                }
                let id = self.names.len() as u32;
                self.names.push(name.to_owned());
                self.ids.insert(name.to_owned(), id);
                id
            })
            .collect()
    }
}

/// All shards' metrics plus the name tables; see the module docs.
pub struct Registry {
    shards: Box<[ShardMetrics]>,
    /// Taken by `intern` (control thread) and `render_prometheus` (admin thread), never by a shard.
    names: Mutex<Names>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    generation: AtomicU64,
}

impl Registry {
    /// A registry for `shards` shards, with no names interned yet.
    pub fn new(shards: usize) -> Arc<Registry> {
        Arc::new(Registry {
            shards: (0..shards).map(|_| ShardMetrics::new()).collect(),
            names: Mutex::new(Names {
                routes: NameTable::default(),
                clusters: NameTable::default(),
            }),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        })
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Shard `i`'s counters. Only shard `i`'s thread may record into them.
    ///
    /// # Panics
    ///
    /// If `i >= self.shards()`.
    pub fn shard(&self, i: usize) -> &ShardMetrics {
        &self.shards[i]
    }

    fn names(&self) -> MutexGuard<'_, Names> {
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called by the control thread when a config (re)loads, with the names of its routes and
    /// clusters in config order; returns the ids to use for them in this config generation.
    ///
    /// A name keeps its id (and so its counters) across reloads; ids are dense small integers.
    /// Storage for new ids is allocated in every shard before this returns. The same name given
    /// twice gets the same id.
    ///
    /// # Errors
    ///
    /// Fails, interning nothing, on an empty name or when the total number of distinct names
    /// would exceed [`MAX_ROUTES`] / [`MAX_CLUSTERS`].
    pub fn intern(&self, routes: &[&str], clusters: &[&str]) -> Result<Interned, String> {
        let mut names = self.names();
        names.routes.check("route", routes, MAX_ROUTES)?;
        names.clusters.check("cluster", clusters, MAX_CLUSTERS)?;

        let route_ids = names.routes.assign(routes);
        let cluster_ids = names.clusters.assign(clusters);

        let route_chunks = names.routes.len().div_ceil(CHUNK);
        let cluster_chunks = names.clusters.len().div_ceil(CHUNK);
        for shard in self.shards.iter() {
            for slot in &shard.routes[..route_chunks] {
                slot.get_or_init(|| Box::new(RouteChunk([const { RouteCell::new() }; CHUNK])));
            }
            for slot in &shard.clusters[..cluster_chunks] {
                slot.get_or_init(|| Box::new(ClusterChunk([const { ClusterCell::new() }; CHUNK])));
            }
        }

        Ok(Interned {
            routes: route_ids.into_iter().map(RouteId).collect(),
            clusters: cluster_ids.into_iter().map(ClusterId).collect(),
        })
    }

    /// Counts a config reload attempt (`config_reloads_total{result="ok"|"failed"}`).
    /// Control thread only (a shared atomic; not for the hot path).
    pub fn reload(&self, ok: bool) {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the `config_generation` gauge (the generation of the config now serving).
    pub fn set_config_generation(&self, generation: u64) {
        self.generation.store(generation, Ordering::Relaxed);
    }

    /// On how many shards the circuit breaker of `cluster` is open and half-open.
    pub fn cluster_breakers(&self, cluster: ClusterId) -> (usize, usize) {
        let mut counts = (0, 0);
        for shard in self.shards.iter() {
            if let Some(cell) = shard.cluster_cell(cluster) {
                match cell.breaker.load(Ordering::Relaxed) {
                    1 => counts.0 += 1,
                    2 => counts.1 += 1,
                    _ => {}
                }
            }
        }
        counts
    }

    /// Appends every series in the Prometheus text exposition format 0.0.4 to `out`.
    ///
    /// Sums all shards with relaxed loads; takes the name-table lock (never taken by shards).
    /// Each counter is read once, so a histogram's `+Inf` bucket always equals its `_count`
    /// (which is derived from the buckets, not stored).
    pub fn render_prometheus(&self, out: &mut String) {
        let names = self.names();
        let routes = names.routes.len();
        let clusters = names.clusters.len();

        // Per route (index 0 = unmatched, i + 1 = route id i).
        let mut per_route = vec![RouteSums::default(); routes + 1];
        let mut pairs: BTreeMap<(Option<u32>, Option<u32>), [u64; CLASSES]> = BTreeMap::new();
        let mut per_cluster = vec![[0u64; CLUSTER_COUNTERS]; clusters];
        let mut timeouts = [0u64; TimeoutKind::ALL.len()];
        let mut bad = [0u64; BAD_SLOTS];

        for shard in self.shards.iter() {
            per_route[0].add(&shard.unmatched);
            add_pairs(&mut pairs, None, &shard.unmatched);
            for (id, sums) in per_route[1..].iter_mut().enumerate() {
                let id = id as u32;
                if let Some(cell) = shard.route_cell(id) {
                    sums.add(cell);
                    add_pairs(&mut pairs, Some(id), cell);
                }
            }
            for entry in shard.overflow.0.iter() {
                let key = entry.key.load(Ordering::Acquire);
                if key == 0 {
                    continue;
                }
                let route = (key >> 32) as u32;
                let route = (route != UNMATCHED).then(|| route - 1);
                let pair = pairs
                    .entry((route, cluster_of_key(key as u32)))
                    .or_default();
                add_counts(pair, &entry.codes);
            }
            for (id, sums) in per_cluster.iter_mut().enumerate() {
                if let Some(cell) = shard.cluster_cell(ClusterId(id as u32)) {
                    add_counts(sums, &cell.counters);
                }
            }
            add_counts(&mut timeouts, &shard.timeouts);
            add_counts(&mut bad, &shard.bad);
        }

        let route_name = |r: Option<u32>| r.map_or("", |r| names.routes.names[r as usize].as_str());
        let cluster_name =
            |c: Option<u32>| c.map_or("", |c| names.clusters.names[c as usize].as_str());
        // Route keys in output order: unmatched first, then by id.
        let route_keys = || std::iter::once(None).chain((0..routes as u32).map(Some));
        let sums_of = |r: Option<u32>| &per_route[r.map_or(0, |r| r as usize + 1)];

        header(
            out,
            "requests_total",
            "counter",
            "Requests completed, by route, cluster and status class.",
        );
        for (&(route, cluster), counts) in &pairs {
            for (class, &n) in counts.iter().enumerate() {
                if class == 0 && n == 0 {
                    continue; // 1xx only once seen
                }
                out.push_str("headwater_requests_total{route=\"");
                escape_label(out, route_name(route));
                out.push_str("\",cluster=\"");
                escape_label(out, cluster_name(cluster));
                let _ = writeln!(out, "\",code_class=\"{}\"}} {n}", CLASS_LABELS[class]);
            }
        }

        let unattributed: Vec<_> = route_keys()
            .filter(|&r| sums_of(r).unattributed.iter().any(|&n| n != 0))
            .collect();
        if !unattributed.is_empty() {
            header(
                out,
                "requests_unattributed_total",
                "counter",
                "Requests whose (route, cluster) pair found no counter slot in a shard.",
            );
            for r in unattributed {
                for (class, &n) in sums_of(r).unattributed.iter().enumerate() {
                    out.push_str("headwater_requests_unattributed_total{route=\"");
                    escape_label(out, route_name(r));
                    let _ = writeln!(out, "\",code_class=\"{}\"}} {n}", CLASS_LABELS[class]);
                }
            }
        }

        header(
            out,
            "request_duration_seconds",
            "histogram",
            "Request latency, first byte in to last byte out.",
        );
        for r in route_keys() {
            let sums = sums_of(r);
            let mut cumulative = 0u64;
            for (i, &n) in sums.buckets.iter().enumerate() {
                cumulative += n;
                let le = BUCKET_LABELS.get(i).copied().unwrap_or("+Inf");
                out.push_str("headwater_request_duration_seconds_bucket{route=\"");
                escape_label(out, route_name(r));
                let _ = writeln!(out, "\",le=\"{le}\"}} {cumulative}");
            }
            out.push_str("headwater_request_duration_seconds_sum{route=\"");
            escape_label(out, route_name(r));
            let _ = writeln!(
                out,
                "\"}} {}.{:06}",
                sums.sum_us / 1_000_000,
                sums.sum_us % 1_000_000
            );
            out.push_str("headwater_request_duration_seconds_count{route=\"");
            escape_label(out, route_name(r));
            let _ = writeln!(out, "\"}} {cumulative}");
        }

        type Pick = fn(&RouteSums) -> u64;
        let byte_series: [(&str, &str, Pick); 2] = [
            (
                "bytes_received_total",
                "Request bytes received from clients.",
                |sums| sums.bytes_in,
            ),
            (
                "bytes_sent_total",
                "Response bytes sent to clients.",
                |sums| sums.bytes_out,
            ),
        ];
        for (name, help, value) in byte_series {
            header(out, name, "counter", help);
            for r in route_keys() {
                let v = value(sums_of(r));
                let _ = write!(out, "headwater_{name}{{route=\"");
                escape_label(out, route_name(r));
                let _ = writeln!(out, "\"}} {v}");
            }
        }

        for (i, (name, help)) in CLUSTER_SERIES.into_iter().enumerate() {
            header(out, name, "counter", help);
            for (id, sums) in per_cluster.iter().enumerate() {
                let _ = write!(out, "headwater_{name}{{cluster=\"");
                escape_label(out, &names.clusters.names[id]);
                let _ = writeln!(out, "\"}} {}", sums[i]);
            }
        }
        type Shards = fn(&(usize, usize)) -> usize;
        let breaker_series: [(&str, &str, Shards); 2] = [
            (
                "cluster_breaker_open_shards",
                "Shards on which the cluster's circuit breaker is open.",
                |b| b.0,
            ),
            (
                "cluster_breaker_half_open_shards",
                "Shards on which the cluster's circuit breaker is half-open (one trial out).",
                |b| b.1,
            ),
        ];
        // Shards whose cluster breaker is open, half-open.
        let breakers: Vec<(usize, usize)> = (0..clusters)
            .map(|id| self.cluster_breakers(ClusterId(id as u32)))
            .collect();
        for (name, help, value) in breaker_series {
            header(out, name, "gauge", help);
            for (id, b) in breakers.iter().enumerate() {
                let _ = write!(out, "headwater_{name}{{cluster=\"");
                escape_label(out, &names.clusters.names[id]);
                let _ = writeln!(out, "\"}} {}", value(b));
            }
        }

        header(
            out,
            "active_connections",
            "gauge",
            "Open client connections, by shard.",
        );
        for (i, shard) in self.shards.iter().enumerate() {
            let _ = writeln!(
                out,
                "headwater_active_connections{{shard=\"{i}\"}} {}",
                shard.active.load(Ordering::Relaxed)
            );
        }
        header(
            out,
            "connections_accepted_total",
            "counter",
            "Client connections accepted, by shard.",
        );
        for (i, shard) in self.shards.iter().enumerate() {
            let _ = writeln!(
                out,
                "headwater_connections_accepted_total{{shard=\"{i}\"}} {}",
                shard.accepted.get()
            );
        }

        header(out, "timeouts_total", "counter", "Timeouts fired, by kind.");
        for (kind, n) in TimeoutKind::ALL.iter().zip(timeouts) {
            let _ = writeln!(
                out,
                "headwater_timeouts_total{{kind=\"{}\"}} {n}",
                kind.as_str()
            );
        }

        header(
            out,
            "bad_requests_total",
            "counter",
            "Requests rejected by the HTTP codec, by status.",
        );
        for (i, &n) in bad.iter().enumerate() {
            if i == BAD_SLOTS - 1 {
                if n != 0 {
                    let _ = writeln!(out, "headwater_bad_requests_total{{code=\"other\"}} {n}");
                }
                continue;
            }
            let code = BAD_MIN + i as u16;
            if n != 0 || BAD_ALWAYS.contains(&code) {
                let _ = writeln!(out, "headwater_bad_requests_total{{code=\"{code}\"}} {n}");
            }
        }

        header(
            out,
            "config_reloads_total",
            "counter",
            "Config reload attempts, by result.",
        );
        let _ = writeln!(
            out,
            "headwater_config_reloads_total{{result=\"ok\"}} {}",
            self.reloads_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "headwater_config_reloads_total{{result=\"failed\"}} {}",
            self.reloads_failed.load(Ordering::Relaxed)
        );
        header(
            out,
            "config_generation",
            "gauge",
            "Generation of the config now serving.",
        );
        let _ = writeln!(
            out,
            "headwater_config_generation {}",
            self.generation.load(Ordering::Relaxed)
        );
    }
}

fn cluster_of_key(key: u32) -> Option<u32> {
    (key != NO_CLUSTER).then(|| key - 1)
}

fn add_pairs(
    pairs: &mut BTreeMap<(Option<u32>, Option<u32>), [u64; CLASSES]>,
    route: Option<u32>,
    cell: &RouteCell,
) {
    for slot in &cell.pairs {
        let key = slot.cluster.load(Ordering::Acquire);
        if key == 0 {
            break; // slots are claimed in order
        }
        add_counts(
            pairs.entry((route, cluster_of_key(key))).or_default(),
            &slot.codes,
        );
    }
}

#[derive(Clone, Default)]
struct RouteSums {
    buckets: [u64; BUCKETS],
    sum_us: u64,
    bytes_in: u64,
    bytes_out: u64,
    unattributed: [u64; CLASSES],
}

impl RouteSums {
    fn add(&mut self, cell: &RouteCell) {
        add_counts(&mut self.buckets, &cell.buckets);
        self.sum_us += cell.sum_us.get();
        self.bytes_in += cell.bytes_in.get();
        self.bytes_out += cell.bytes_out.get();
        add_counts(&mut self.unattributed, &cell.unattributed);
    }
}

/// Adds each counter's value to the sum at the same index.
fn add_counts(sums: &mut [u64], counters: &[Counter]) {
    for (sum, c) in sums.iter_mut().zip(counters) {
        *sum += c.get();
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP headwater_{name} {help}");
    let _ = writeln!(out, "# TYPE headwater_{name} {kind}");
}

/// Escapes a label value per the text exposition format: `\` -> `\\`, `"` -> `\"`,
/// newline -> `\n`.
pub fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        let us = Duration::from_micros;
        assert_eq!(latency_bucket(Duration::ZERO), 0);
        assert_eq!(latency_bucket(us(100)), 0);
        assert_eq!(latency_bucket(us(101)), 1);
        assert_eq!(latency_bucket(us(250)), 1);
        assert_eq!(latency_bucket(us(999)), 3);
        assert_eq!(latency_bucket(us(1_000)), 3);
        assert_eq!(latency_bucket(Duration::from_millis(7)), 6);
        assert_eq!(latency_bucket(Duration::from_secs(1)), 12);
        assert_eq!(latency_bucket(Duration::from_secs(60)), 17);
        assert_eq!(latency_bucket(Duration::from_secs(61)), 18);
        assert_eq!(latency_bucket(Duration::MAX), 18);
        // Sub-microsecond parts are truncated: 100.9 µs is still in the 100 µs bucket.
        assert_eq!(latency_bucket(Duration::from_nanos(100_900)), 0);
    }

    #[test]
    fn bucket_labels_match_bounds() {
        for (us, label) in LATENCY_BUCKETS_US.iter().zip(BUCKET_LABELS) {
            let secs: f64 = label.parse().unwrap();
            assert_eq!((secs * 1e6).round() as u64, *us, "{label}");
        }
        assert!(LATENCY_BUCKETS_US.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn status_classes() {
        assert_eq!(class_index(101), 0);
        assert_eq!(class_index(200), 1);
        assert_eq!(class_index(304), 2);
        assert_eq!(class_index(404), 3);
        assert_eq!(class_index(599), 4);
        assert_eq!(class_index(0), 0);
        assert_eq!(class_index(999), 4);
    }

    #[test]
    fn histogram_records_in_the_right_cells() {
        let reg = Registry::new(1);
        let ids = reg.intern(&["r"], &["c"]).unwrap();
        let shard = reg.shard(0);
        let r = Some(ids.routes[0]);
        let c = Some(ids.clusters[0]);
        for ms in [0u64, 1, 3, 3, 40, 2_000, 100_000] {
            shard.request(r, c, 200, Duration::from_millis(ms), 1, 2);
        }
        let cell = shard.route_cell(0).unwrap();
        let counts: Vec<u64> = cell.buckets.iter().map(Counter::get).collect();
        let mut want = [0u64; BUCKETS];
        want[0] = 1; // 0 ms
        want[3] = 1; // 1 ms
        want[5] = 2; // 3 ms <= 5 ms
        want[8] = 1; // 40 ms <= 50 ms
        want[13] = 1; // 2 s <= 2.5 s
        want[18] = 1; // 100 s > 60 s
        assert_eq!(counts, want);
        assert_eq!(cell.sum_us.get(), 102_047_000);
        assert_eq!(cell.bytes_in.get(), 7);
        assert_eq!(cell.bytes_out.get(), 14);
    }

    #[test]
    fn many_clusters_per_route_spill_to_the_overflow_table_then_unattributed() {
        let reg = Registry::new(1);
        let clusters: Vec<String> = (0..400).map(|i| format!("c{i}")).collect();
        let cluster_refs: Vec<&str> = clusters.iter().map(String::as_str).collect();
        let ids = reg.intern(&["r"], &cluster_refs).unwrap();
        let shard = reg.shard(0);
        for &c in &ids.clusters {
            shard.request(Some(ids.routes[0]), Some(c), 200, Duration::ZERO, 0, 0);
        }
        let mut text = String::new();
        reg.render_prometheus(&mut text);
        let attributed: u64 = text
            .lines()
            .filter(|l| {
                l.starts_with("headwater_requests_total{") && l.contains("code_class=\"2xx\"")
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        let unattributed: u64 = text
            .lines()
            .filter(|l| l.starts_with("headwater_requests_unattributed_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert!(
            attributed >= (INLINE_PAIRS + OVERFLOW_PAIRS / 2) as u64,
            "{attributed}"
        );
        assert_eq!(attributed + unattributed, 400);
    }

    #[test]
    fn unknown_ids_are_ignored() {
        let reg = Registry::new(1);
        reg.intern(&["r"], &["c"]).unwrap();
        let shard = reg.shard(0);
        shard.request(Some(RouteId(4000)), None, 200, Duration::ZERO, 0, 0);
        shard.pool_hit(ClusterId(4000));
        shard.pool_hit(ClusterId(u32::MAX));
        shard.request(Some(RouteId(u32::MAX)), None, 200, Duration::ZERO, 0, 0);
    }

    #[test]
    fn memory_figures_in_the_docs_hold() {
        assert_eq!(std::mem::size_of::<RouteCell>(), 408);
        assert_eq!(std::mem::size_of::<ClusterCell>(), 96);
        let per_shard_fixed = std::mem::size_of::<ShardMetrics>()
            + std::mem::size_of::<OverflowTable>()
            + (MAX_ROUTES / CHUNK) * std::mem::size_of::<OnceLock<Box<RouteChunk>>>()
            + (MAX_CLUSTERS / CHUNK) * std::mem::size_of::<OnceLock<Box<ClusterChunk>>>();
        let hundred =
            4 * std::mem::size_of::<RouteChunk>() + 4 * std::mem::size_of::<ClusterChunk>();
        let total = per_shard_fixed + hundred;
        assert!((79 * 1024..83 * 1024).contains(&total), "{total}");
    }
}
