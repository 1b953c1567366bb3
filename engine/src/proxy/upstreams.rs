//! A shard's view of its clusters: per cluster, the balancer state, the priority/panic plan
//! derived from the latest health snapshot, the endpoints this shard quarantined on its own
//! (connect failures, until the health thread decides), circuit breakers, and the requests and
//! retries in flight that the retry budget is computed from.
//!
//! Owned by one shard and touched only by its tasks; nothing here is shared or locked. The
//! state belongs to the shard's current config generation and is carried over on reload for
//! clusters (by name) and endpoints (by address) that stay: balancer EWMA and in-flight counts
//! survive, as do quarantines of endpoints that stay; breakers and in-flight counts start
//! afresh (requests that began under the old generation release into the old state).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use headwater_balancer::{Balancer, CandidateSet, Plan, Tier, TierKind};
use headwater_health::breaker::{Breaker, BreakerPolicy, BreakerState, Resource};
use headwater_health::retry::RetryBudget;
use headwater_health::Outcome;

use crate::config::{BreakerConfig, ClusterConfig, Config};
use crate::health::{member, ClusterHealth, EndpointState, HealthSnapshot};

/// How long a shard keeps away from an endpoint it could not connect to, unless the health
/// thread's snapshot says more.
pub const QUARANTINE: Duration = Duration::from_secs(1);

/// Per-cluster state of one shard.
pub(crate) struct ClusterRuntime {
    name: Arc<str>,
    addresses: Vec<SocketAddr>,
    pub balancer: Balancer,
    plan: Plan,
    /// Quarantine end per endpoint.
    quarantine: Vec<Option<Instant>>,
    breaker: Option<(Breaker, BreakerPolicy)>,
    endpoint_breakers: Vec<Breaker>,
    endpoint_policy: Option<BreakerPolicy>,
    budget: RetryBudget,
    /// Requests of this shard in flight to this cluster.
    pub active: u32,
    /// Retries of this shard in flight to this cluster.
    pub active_retries: u32,
}

/// Limits are gateway-wide; a shard enforces its share.
fn shard_policy(c: &BreakerConfig, shards: usize) -> BreakerPolicy {
    let share = |v: Option<u32>| v.map_or(u32::MAX, |v| v.div_ceil(shards.max(1) as u32).max(1));
    BreakerPolicy {
        max_connections: share(c.max_connections),
        max_pending: share(c.max_pending),
        max_requests: share(c.max_requests),
        max_retries: c.max_retries.map_or(u32::MAX, |v| {
            if v == 0 {
                0
            } else {
                v.div_ceil(shards.max(1) as u32).max(1)
            }
        }),
        failure_threshold: c.failure_threshold,
        open_for: c.open_for,
    }
}

/// Why no endpoint of a cluster could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No endpoint is able to serve (all down, ejected, quarantined or already tried).
    NoEndpoint,
    /// The cluster's circuit breaker is open or at its limit.
    BreakerOpen,
}

impl ClusterRuntime {
    fn new(c: &ClusterConfig, shard: usize, shards: usize) -> ClusterRuntime {
        let n = c.endpoints.len();
        let addresses: Vec<SocketAddr> = c.endpoints.iter().map(|e| e.address).collect();
        let mut balancer = Balancer::new(c.balancer, n, 0x9e37_79b9 ^ shard as u64);
        balancer.set_identities(&identities(&addresses));
        ClusterRuntime {
            name: c.name.as_str().into(),
            addresses,
            balancer,
            plan: plain_plan(c),
            quarantine: vec![None; n],
            breaker: c
                .breaker
                .as_ref()
                .map(|b| (Breaker::default(), shard_policy(b, shards))),
            endpoint_breakers: vec![
                Breaker::default();
                if c.endpoint_breaker.is_some() { n } else { 0 }
            ],
            endpoint_policy: c.endpoint_breaker.as_ref().map(|b| shard_policy(b, shards)),
            budget: RetryBudget {
                percent: c.retry_budget.percent,
                min_concurrent: c.retry_budget.min_concurrent,
            },
            active: 0,
            active_retries: 0,
        }
    }

    /// The state for `c` carried over from `old` (same cluster name).
    fn carried(mut old: ClusterRuntime, c: &ClusterConfig, shard: usize, shards: usize) -> Self {
        let mut next = ClusterRuntime::new(c, shard, shards);
        let map: Vec<Option<usize>> = old
            .addresses
            .iter()
            .map(|a| next.addresses.iter().position(|b| b == a))
            .collect();
        if old.balancer.algorithm() == c.balancer {
            old.balancer.remap(&map, next.addresses.len());
            old.balancer.set_identities(&identities(&next.addresses));
            next.balancer = old.balancer;
        }
        // Quarantines carry over; in-flight counts and breakers start afresh, because requests
        // that began under the old generation give back what they took to the old state only.
        for (o, n) in map.iter().enumerate() {
            if let Some(n) = n {
                next.quarantine[*n] = old.quarantine[o];
            }
        }
        next
    }

    /// Rebuilds the plan from a snapshot of this cluster.
    fn replan(&mut self, health: Option<&ClusterHealth>, c: &ClusterConfig) {
        self.plan = match health {
            Some(h) if h.endpoints.len() == c.endpoints.len() => {
                let members: Vec<_> = h.endpoints.iter().map(member).collect();
                headwater_balancer::plan(&members, c.panic_threshold)
            }
            _ => plain_plan(c),
        };
        // Maglev tables are built now, on a new publication, not by the next request.
        for tier in &self.plan.tiers {
            self.balancer.prepare(&tier.set);
        }
    }

    fn quarantined(&self, i: usize, now: Instant) -> bool {
        quarantined(&self.quarantine, i, now)
    }

    fn endpoint_open(&self, i: usize, now: Instant) -> bool {
        self.endpoint_policy.is_some() && breaker_open(&self.endpoint_breakers, i, now)
    }

    /// Picks an endpoint: the first tier of the plan with a member that is not in `avoid`, not
    /// quarantined and whose breaker is not open. Returns the endpoint and whether it came
    /// from a panic tier.
    pub fn pick(
        &mut self,
        avoid: &[usize],
        key: Option<u64>,
        now: Instant,
    ) -> Option<(usize, bool)> {
        let ClusterRuntime {
            balancer,
            plan,
            quarantine,
            endpoint_breakers,
            endpoint_policy,
            ..
        } = self;
        let blocked = |i: usize| {
            avoid.contains(&i)
                || quarantined(quarantine, i, now)
                || (endpoint_policy.is_some() && breaker_open(endpoint_breakers, i, now))
        };
        balancer
            .pick_in_plan(plan, blocked, key, now)
            .map(|(i, tier)| (i, plan.tiers[tier].kind.is_panic()))
    }

    /// Whether [`pick`](Self::pick) would find an endpoint outside `avoid` now. Unlike a pick it
    /// leaves the balancer's state (rotation, random stream) alone.
    pub fn has_candidate(&self, avoid: &[usize], now: Instant) -> bool {
        self.plan.tiers.iter().any(|tier| {
            tier.set.members().any(|(i, _)| {
                !avoid.contains(&i) && !self.quarantined(i, now) && !self.endpoint_open(i, now)
            })
        })
    }

    /// Admits a request to the cluster (its breaker), counting it in flight. The clock is read
    /// only when the cluster has a breaker.
    pub fn admit(&mut self) -> Result<(), Refusal> {
        if let Some((b, p)) = &mut self.breaker {
            b.try_acquire(Resource::Request, Instant::now(), p)
                .map_err(|_| Refusal::BreakerOpen)?;
        }
        self.active += 1;
        Ok(())
    }

    /// The request admitted by [`admit`](Self::admit) is over; `ok` feeds the breaker.
    pub fn release(&mut self, ok: Option<bool>) {
        self.active = self.active.saturating_sub(1);
        if let Some((b, p)) = &mut self.breaker {
            b.release(Resource::Request);
            if let Some(ok) = ok {
                b.record(ok, Instant::now(), p);
            }
        }
    }

    /// Takes a retry from the budget and the breaker; false when neither allows one more.
    pub fn begin_retry(&mut self) -> bool {
        if !self.budget.allows(self.active, self.active_retries) {
            return false;
        }
        if let Some((b, p)) = &mut self.breaker {
            if b.try_acquire(Resource::Retry, Instant::now(), p).is_err() {
                return false;
            }
        }
        self.active_retries += 1;
        true
    }

    /// Gives back `n` retries.
    pub fn end_retries(&mut self, n: u32) {
        self.active_retries = self.active_retries.saturating_sub(n);
        if let Some((b, _)) = &mut self.breaker {
            for _ in 0..n {
                b.release(Resource::Retry);
            }
        }
    }

    /// Admits one attempt on endpoint `i` (its breaker); false: try another endpoint.
    pub fn admit_endpoint(&mut self, i: usize, now: Instant) -> bool {
        match (&self.endpoint_policy, self.endpoint_breakers.get_mut(i)) {
            (Some(p), Some(b)) => b.try_acquire(Resource::Request, now, p).is_ok(),
            _ => true,
        }
    }

    /// Acquires a pending-connection slot (cluster and endpoint breakers) for a new connection.
    pub fn begin_connect(&mut self, i: usize, now: Instant) -> bool {
        if let Some((b, p)) = &mut self.breaker {
            if b.try_acquire(Resource::Pending, now, p).is_err() {
                return false;
            }
            if b.try_acquire(Resource::Connection, now, p).is_err() {
                b.release(Resource::Pending);
                return false;
            }
        }
        if let (Some(p), Some(b)) = (&self.endpoint_policy, self.endpoint_breakers.get_mut(i)) {
            if b.try_acquire(Resource::Connection, now, p).is_err() {
                if let Some((b, _)) = &mut self.breaker {
                    b.release(Resource::Pending);
                    b.release(Resource::Connection);
                }
                return false;
            }
        }
        true
    }

    /// The connect attempt finished (the pending slot is freed); `open` says whether a
    /// connection now exists (it keeps its connection slot until [`close_connection`]).
    pub fn end_connect(&mut self, i: usize, open: bool) {
        if let Some((b, _)) = &mut self.breaker {
            b.release(Resource::Pending);
        }
        if !open {
            self.close_connection(i);
        }
    }

    /// An upstream connection to endpoint `i` closed.
    pub fn close_connection(&mut self, i: usize) {
        if let Some((b, _)) = &mut self.breaker {
            b.release(Resource::Connection);
        }
        if let Some(b) = self.endpoint_breakers.get_mut(i) {
            b.release(Resource::Connection);
        }
    }

    /// What one attempt on endpoint `i` came to: balancer feedback, endpoint breaker,
    /// quarantine on connect failure.
    pub fn finish_attempt(&mut self, i: usize, outcome: Option<Outcome>, now: Instant) {
        match outcome {
            Some(Outcome::Response { latency, .. }) => self.balancer.finish(i, Some(latency), now),
            Some(_) => self.balancer.finish(i, None, now),
            // Nothing reached the endpoint: no latency sample, no failure penalty.
            None => self.balancer.abandon(i),
        }
        let ok = match outcome {
            Some(Outcome::Response { status, .. }) => Some(status < 500),
            Some(_) => Some(false),
            None => None,
        };
        if let (Some(p), Some(b)) = (&self.endpoint_policy, self.endpoint_breakers.get_mut(i)) {
            b.release(Resource::Request);
            if let Some(ok) = ok {
                b.record(ok, now, p);
            }
        }
        if matches!(
            outcome,
            Some(Outcome::ConnectFailed | Outcome::ConnectTimeout)
        ) {
            if let Some(q) = self.quarantine.get_mut(i) {
                *q = Some(now + QUARANTINE);
            }
        }
    }

    /// The earliest local quarantine end among endpoints that are quarantined now.
    pub fn earliest_quarantine_end(&self, now: Instant) -> Option<Instant> {
        self.quarantine
            .iter()
            .flatten()
            .copied()
            .filter(|t| *t > now)
            .min()
    }

    /// The state of endpoint `i`'s breaker: 0 closed (or none), 1 open, 2 half-open.
    pub fn endpoint_breaker_state(&self, i: usize, now: Instant) -> u64 {
        match (&self.endpoint_policy, self.endpoint_breakers.get(i)) {
            (Some(_), Some(b)) => match b.state(now) {
                BreakerState::Closed => 0,
                BreakerState::Open { .. } => 1,
                BreakerState::HalfOpen => 2,
            },
            _ => 0,
        }
    }
}

/// Stable balancer identities of endpoints: a hash of the address, so that Maglev keys stay
/// with an endpoint across reloads that reorder the list.
fn identities(addresses: &[SocketAddr]) -> Vec<u64> {
    addresses
        .iter()
        .map(|a| headwater_balancer::hash_key(a.to_string().as_bytes()))
        .collect()
}

/// Whether endpoint `i` is quarantined at `now`.
fn quarantined(quarantine: &[Option<Instant>], i: usize, now: Instant) -> bool {
    quarantine
        .get(i)
        .copied()
        .flatten()
        .is_some_and(|until| until > now)
}

/// Whether endpoint `i`'s breaker is open at `now`.
fn breaker_open(breakers: &[Breaker], i: usize, now: Instant) -> bool {
    breakers
        .get(i)
        .is_some_and(|b| matches!(b.state(now), BreakerState::Open { .. }))
}

/// The plan when there is no health information: one tier of every endpoint per priority level.
fn plain_plan(c: &ClusterConfig) -> Plan {
    let mut levels: Vec<u8> = c.endpoints.iter().map(|e| e.priority).collect();
    levels.sort_unstable();
    levels.dedup();
    Plan {
        tiers: levels
            .into_iter()
            .map(|level| Tier {
                kind: TierKind::Healthy { level },
                set: CandidateSet::new(
                    c.endpoints
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| e.priority == level)
                        .map(|(i, e)| (i, e.weight)),
                ),
            })
            .collect(),
    }
}

/// All clusters of a shard, for one config generation and one health snapshot.
pub(crate) struct Upstreams {
    pub config_id: u64,
    pub health_generation: u64,
    pub clusters: Vec<ClusterRuntime>,
}

impl Upstreams {
    pub fn new(config_id: u64, config: &Config, shard: usize, shards: usize) -> Upstreams {
        Upstreams {
            config_id,
            health_generation: 0,
            clusters: config
                .clusters
                .iter()
                .map(|c| ClusterRuntime::new(c, shard, shards))
                .collect(),
        }
    }

    /// Moves to a new config generation, keeping what stays.
    pub fn reconfigure(&mut self, config_id: u64, config: &Config, shard: usize, shards: usize) {
        let mut old: Vec<ClusterRuntime> = std::mem::take(&mut self.clusters);
        self.clusters = config
            .clusters
            .iter()
            .map(|c| match old.iter().position(|o| *o.name == *c.name) {
                Some(i) => ClusterRuntime::carried(old.swap_remove(i), c, shard, shards),
                None => ClusterRuntime::new(c, shard, shards),
            })
            .collect();
        self.config_id = config_id;
        self.health_generation = 0;
    }

    /// Rebuilds every plan from `snapshot`.
    pub fn replan(&mut self, snapshot: &HealthSnapshot, config: &Config) {
        for (i, c) in self.clusters.iter_mut().enumerate() {
            c.replan(snapshot.cluster(self.config_id, i), &config.clusters[i]);
        }
        self.health_generation = snapshot.generation;
    }
}

/// The body and `Retry-After` of the gateway's 503 when nothing can serve.
pub(crate) struct Unavailable {
    pub retry_after: u64,
    pub body: serde_json::Value,
}

/// Describes why cluster `ci` cannot serve now, from the snapshot and this shard's view.
pub(crate) fn unavailable(
    runtime: Option<&ClusterRuntime>,
    health: Option<&ClusterHealth>,
    config: &ClusterConfig,
    refusal: Refusal,
    now: Instant,
) -> Unavailable {
    let mut earliest: Option<Instant> = health.and_then(|h| h.earliest_recovery);
    if let Some(q) = runtime.and_then(|r| r.earliest_quarantine_end(now)) {
        earliest = Some(earliest.map_or(q, |e| e.min(q)));
    }
    let retry_after = earliest
        .map(|t| t.saturating_duration_since(now))
        .map_or(1, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
        .max(1);
    let endpoints: Vec<serde_json::Value> = config
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let h = health.and_then(|h| h.endpoints.get(i));
            let quarantined = runtime.is_some_and(|r| r.quarantined(i, now));
            let breaker_open = runtime.is_some_and(|r| r.endpoint_open(i, now));
            let state = match h.map(|h| h.state) {
                Some(EndpointState::Healthy) | None if quarantined => "unreachable",
                Some(s) => s.name(),
                None => "healthy",
            };
            serde_json::json!({
                "address": e.address.to_string(),
                "priority": e.priority,
                "state": state,
                "breaker_open": breaker_open,
                "last_failure": h.and_then(|h| h.last_failure.as_ref()).map(|(_, why)| why.to_string())
                    .or_else(|| quarantined.then(|| "connect failed (seen by this shard)".to_owned())),
                "recovery_in_ms": h.and_then(|h| h.recovery).map(|t| t.saturating_duration_since(now).as_millis() as u64),
            })
        })
        .collect();
    let (code, message) = match refusal {
        Refusal::NoEndpoint => (
            "no_healthy_upstream",
            "no endpoint of the cluster can serve this request now",
        ),
        Refusal::BreakerOpen => (
            "circuit_open",
            "the cluster's circuit breaker is open or at its limit",
        ),
    };
    Unavailable {
        retry_after,
        body: serde_json::json!({
            "error": {
                "status": 503,
                "code": code,
                "message": message,
                "cluster": config.name,
                "retry_after_s": retry_after,
                "endpoints": endpoints,
            }
        }),
    }
}
