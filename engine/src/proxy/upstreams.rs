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
use headwater_health::retry::{RetryBudget, RetryReserve};
use headwater_health::Outcome;

use crate::config::{BreakerConfig, ClusterConfig, Config};
use crate::health::{member, ClusterHealth, EndpointState, HealthSnapshot};

/// How long a shard keeps away from an endpoint it could not connect to (or that failed the
/// outlier thresholds on this shard alone), unless the health thread's snapshot says more.
pub const QUARANTINE: Duration = Duration::from_secs(1);

/// The cluster's consecutive-failure thresholds, applied by a shard to its own attempts so that it
/// stops sending to a failing endpoint at once instead of at the health thread's next tick.
#[derive(Clone, Copy)]
struct LocalEjection {
    /// Answers of 500 or more in a row (0: off).
    consecutive_5xx: u32,
    /// Resets, timeouts and invalid responses in a row (0: off).
    consecutive_gateway: u32,
    /// At most this share of the cluster is quarantined for runs of failures at once.
    max_percent: u8,
}

/// One endpoint's runs of failures on this shard.
#[derive(Clone, Copy, Default)]
struct Runs {
    errors_5xx: u32,
    gateway: u32,
}

/// What a shard decides about one endpoint on its own.
#[derive(Clone, Copy, Default)]
struct Local {
    /// Quarantine end.
    quarantine: Option<Instant>,
    /// Whether the quarantine came from a run of failures (as opposed to a connect failure):
    /// such a quarantine only bridges the time until the health thread rules, and ends when a
    /// snapshot shows the endpoint ejected or down (its plan then decides, panic mode included).
    by_runs: bool,
    /// The latest snapshot calls it not routable (ejected, down, unknown): the health thread
    /// has ruled on it, so runs of failures no longer quarantine it here.
    ruled_out: bool,
    /// Failure runs on this shard.
    runs: Runs,
}

impl Local {
    fn quarantined(&self, now: Instant) -> bool {
        self.quarantine.is_some_and(|until| until > now)
    }
}

/// Per-cluster state of one shard.
pub(crate) struct ClusterRuntime {
    name: Arc<str>,
    addresses: Vec<SocketAddr>,
    pub balancer: Balancer,
    plan: Plan,
    /// Per endpoint: quarantine, failure runs, the health thread's verdict.
    local: Vec<Local>,
    /// The thresholds that quarantine on runs of failures.
    local_ejection: Option<LocalEjection>,
    breaker: Option<(Breaker, BreakerPolicy)>,
    endpoint_breakers: Vec<Breaker>,
    endpoint_policy: Option<BreakerPolicy>,
    budget: RetryBudget,
    reserve: RetryReserve,
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
            local: vec![Local::default(); n],
            local_ejection: c.outlier.as_ref().map(|o| LocalEjection {
                consecutive_5xx: o.consecutive_5xx,
                consecutive_gateway: o.consecutive_gateway_failures,
                max_percent: o.max_ejection_percent,
            }),
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
                burst: c.retry_budget.burst,
            },
            reserve: RetryReserve::default(),
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
        // The retry reserve is a rate, not an in-flight count: it carries over.
        next.reserve = old.reserve;
        // Quarantines carry over; in-flight counts and breakers start afresh, because requests
        // that began under the old generation give back what they took to the old state only.
        for (o, n) in map.iter().enumerate() {
            if let Some(n) = n {
                next.local[*n].quarantine = old.local[o].quarantine;
                next.local[*n].by_runs = old.local[o].by_runs;
            }
        }
        next
    }

    /// Rebuilds the plan from a snapshot of this cluster.
    fn replan(&mut self, health: Option<&ClusterHealth>, c: &ClusterConfig) {
        self.plan = match health {
            Some(h) if h.endpoints.len() == c.endpoints.len() => {
                // The health thread has ruled on these endpoints: its verdict replaces the
                // shard's own quarantine for a run of failures.
                for (local, e) in self.local.iter_mut().zip(&h.endpoints) {
                    local.ruled_out = !e.routable;
                    if local.by_runs && !e.routable {
                        local.quarantine = None;
                        local.by_runs = false;
                    }
                }
                let members: Vec<_> = h.endpoints.iter().map(member).collect();
                headwater_balancer::plan(&members, c.panic_threshold)
            }
            _ => {
                for local in &mut self.local {
                    local.ruled_out = false;
                }
                plain_plan(c)
            }
        };
        // Maglev tables are built now, on a new publication, not by the next request.
        for tier in &self.plan.tiers {
            self.balancer.prepare(&tier.set);
        }
    }

    fn quarantined(&self, i: usize, now: Instant) -> bool {
        self.local.get(i).is_some_and(|l| l.quarantined(now))
    }

    /// Why endpoint `i` is quarantined on this shard at `now`, if it is.
    fn quarantine_cause(&self, i: usize, now: Instant) -> Option<&'static str> {
        let local = self.local.get(i).filter(|l| l.quarantined(now))?;
        Some(if local.by_runs {
            "a run of failures (seen by this shard)"
        } else {
            "connect failed (seen by this shard)"
        })
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
            local,
            endpoint_breakers,
            endpoint_policy,
            ..
        } = self;
        let blocked = |i: usize| {
            avoid.contains(&i)
                || local.get(i).is_some_and(|l| l.quarantined(now))
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
        self.reserve.deposit(&self.budget);
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

    /// Takes a retry from the budget (its concurrency cap, else its reserve) and the breaker;
    /// false when they do not allow one more.
    pub fn begin_retry(&mut self) -> bool {
        if let Some((b, p)) = &mut self.breaker {
            if b.try_acquire(Resource::Retry, Instant::now(), p).is_err() {
                return false;
            }
        }
        if !self.budget.allows(self.active, self.active_retries) && !self.reserve.withdraw() {
            if let Some((b, _)) = &mut self.breaker {
                b.release(Resource::Retry);
            }
            return false;
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
    /// quarantine on a connect failure or on a run of failures that reaches the cluster's
    /// outlier thresholds on this shard. Returns whether the endpoint was quarantined now.
    pub fn finish_attempt(&mut self, i: usize, outcome: Option<Outcome>, now: Instant) -> bool {
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
        let Some(outcome) = outcome else {
            return false;
        };
        if matches!(outcome, Outcome::ConnectFailed | Outcome::ConnectTimeout) {
            // Nothing listens (or answers SYNs): no traffic can succeed there.
            return self.quarantine_now(i, now, false);
        }
        let (Some(limits), Some(Local { runs, .. })) = (self.local_ejection, self.local.get_mut(i))
        else {
            return false;
        };
        let tripped = match outcome {
            Outcome::Response { status, .. } if status < 500 => {
                *runs = Runs::default();
                false
            }
            Outcome::Response { .. } => {
                runs.gateway = 0;
                runs.errors_5xx += 1;
                limits.consecutive_5xx != 0 && runs.errors_5xx >= limits.consecutive_5xx
            }
            _ => {
                runs.gateway += 1;
                limits.consecutive_gateway != 0 && runs.gateway >= limits.consecutive_gateway
            }
        };
        if !tripped || self.quarantined(i, now) || self.local[i].ruled_out {
            // Already out, or picked anyway by a plan that knows it is (panic mode).
            return false;
        }
        // Like the outlier detector's max_ejection_percent (at least one endpoint): a cluster
        // whose every endpoint answers 500 keeps serving those answers rather than none.
        let n = self.local.len();
        let allowed = (n * usize::from(limits.max_percent) / 100).max(1);
        let others = (0..n)
            .filter(|&j| j != i && self.quarantined(j, now))
            .count();
        if others >= allowed {
            return false;
        }
        self.local[i].runs = Runs::default();
        self.quarantine_now(i, now, true)
    }

    /// An attempt on endpoint `i` was cancelled unanswered after `waited` (a hedge answered
    /// first): the balancer takes `waited` as its latency (a lower bound); the endpoint's
    /// breaker gives back the request without a verdict.
    pub fn finish_unanswered(&mut self, i: usize, waited: Duration, now: Instant) {
        self.balancer.finish(i, Some(waited), now);
        if let (Some(_), Some(b)) = (&self.endpoint_policy, self.endpoint_breakers.get_mut(i)) {
            b.release(Resource::Request);
        }
    }

    /// Quarantines endpoint `i` on this shard for [`QUARANTINE`] from `now`; `by_runs`: for a
    /// run of failures (see [`Self::replan`]).
    fn quarantine_now(&mut self, i: usize, now: Instant, by_runs: bool) -> bool {
        match self.local.get_mut(i) {
            Some(local) => {
                local.quarantine = Some(now + QUARANTINE);
                local.by_runs = by_runs;
                true
            }
            None => false,
        }
    }

    /// The earliest local quarantine end among endpoints that are quarantined now.
    pub fn earliest_quarantine_end(&self, now: Instant) -> Option<Instant> {
        self.local
            .iter()
            .filter_map(|l| l.quarantine)
            .filter(|t| *t > now)
            .min()
    }

    /// The state of the cluster's breaker (None: it has none): 0 closed, 1 open, 2 half-open.
    /// The clock is read only when there is a breaker.
    pub fn breaker_state(&self) -> Option<u64> {
        self.breaker
            .as_ref()
            .map(|(b, _)| state_code(b, Instant::now()))
    }

    /// The state of endpoint `i`'s breaker: 0 closed (or none), 1 open, 2 half-open.
    pub fn endpoint_breaker_state(&self, i: usize, now: Instant) -> u64 {
        match (&self.endpoint_policy, self.endpoint_breakers.get(i)) {
            (Some(_), Some(b)) => state_code(b, now),
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

/// A breaker's state as published to `/status` and `/metrics`: 0 closed, 1 open, 2 half-open.
fn state_code(b: &Breaker, now: Instant) -> u64 {
    match b.state(now) {
        BreakerState::Closed => 0,
        BreakerState::Open { .. } => 1,
        BreakerState::HalfOpen => 2,
    }
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
            let quarantined = runtime.and_then(|r| r.quarantine_cause(i, now));
            let breaker_open = runtime.is_some_and(|r| r.endpoint_open(i, now));
            let state = match h.map(|h| h.state) {
                Some(EndpointState::Healthy) | None if quarantined.is_some() => "unreachable",
                Some(s) => s.name(),
                None => "healthy",
            };
            serde_json::json!({
                "address": e.address.to_string(),
                "priority": e.priority,
                "state": state,
                "breaker_open": breaker_open,
                "last_failure": h.and_then(|h| h.last_failure.as_ref()).map(|(_, why)| why.to_string())
                    .or_else(|| quarantined.map(str::to_owned)),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A config whose one cluster, "c", has three endpoints and the given extra cluster keys.
    fn config(extra: &str) -> Config {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[[cluster]]\nname = \"c\"\nendpoints = [{{ address = \"127.0.0.1:1\" }}, {{ address = \"127.0.0.1:2\" }}, {{ address = \"127.0.0.1:3\" }}]\n{extra}\n\n[[route]]\nname = \"r\"\ncluster = \"c\"\n"
        );
        crate::config::parse(&text, "test.toml").expect("config")
    }

    /// The runtime of cluster "c" of [`config`]`(extra)`.
    fn runtime(extra: &str) -> ClusterRuntime {
        ClusterRuntime::new(&config(extra).clusters[0], 0, 1)
    }

    fn status(status: u16) -> Option<Outcome> {
        Some(Outcome::Response {
            status,
            latency: Duration::from_millis(1),
        })
    }

    /// Which endpoints a pick may return at `now`.
    fn pickable(c: &ClusterRuntime, now: Instant) -> Vec<usize> {
        (0..3)
            .filter(|&i| {
                let others: Vec<usize> = (0..3).filter(|&j| j != i).collect();
                c.has_candidate(&others, now)
            })
            .collect()
    }

    #[test]
    fn a_connect_failure_quarantines_at_once_for_the_quarantine_time() {
        let mut c = runtime("");
        let t0 = Instant::now();
        assert!(c.finish_attempt(1, Some(Outcome::ConnectFailed), t0));
        assert_eq!(pickable(&c, t0), vec![0, 2]);
        assert_eq!(
            pickable(&c, t0 + QUARANTINE - Duration::from_millis(1)),
            vec![0, 2]
        );
        assert_eq!(pickable(&c, t0 + QUARANTINE), vec![0, 1, 2]);
        assert_eq!(c.earliest_quarantine_end(t0), Some(t0 + QUARANTINE));
    }

    #[test]
    fn the_503_body_says_why_this_shard_quarantined_each_endpoint() {
        let cfg = config("outlier = { consecutive_5xx = 1, max_ejection_percent = 100 }");
        let mut c = ClusterRuntime::new(&cfg.clusters[0], 0, 1);
        let t0 = Instant::now();
        assert!(c.finish_attempt(0, Some(Outcome::ConnectFailed), t0));
        assert!(c.finish_attempt(1, status(500), t0));
        let u = unavailable(Some(&c), None, &cfg.clusters[0], Refusal::NoEndpoint, t0);
        let eps = &u.body["error"]["endpoints"];
        assert_eq!(eps[0]["state"], "unreachable");
        assert_eq!(
            eps[0]["last_failure"],
            "connect failed (seen by this shard)"
        );
        assert_eq!(
            eps[1]["last_failure"],
            "a run of failures (seen by this shard)"
        );
        assert_eq!(eps[2]["last_failure"], serde_json::Value::Null);
    }

    #[test]
    fn a_run_of_5xx_on_this_shard_quarantines_and_a_success_breaks_the_run() {
        let mut c = runtime("outlier = { consecutive_5xx = 3 }");
        let t0 = Instant::now();
        assert!(!c.finish_attempt(0, status(500), t0));
        assert!(!c.finish_attempt(0, status(503), t0));
        // A success (or a 4xx) breaks the run.
        assert!(!c.finish_attempt(0, status(404), t0));
        assert!(!c.finish_attempt(0, status(500), t0));
        assert!(!c.finish_attempt(0, status(502), t0));
        assert_eq!(pickable(&c, t0), vec![0, 1, 2]);
        assert!(c.finish_attempt(0, status(500), t0));
        assert_eq!(pickable(&c, t0), vec![1, 2]);
        assert_eq!(pickable(&c, t0 + QUARANTINE), vec![0, 1, 2]);
        // The run starts over after a quarantine.
        let t1 = t0 + QUARANTINE;
        assert!(!c.finish_attempt(0, status(500), t1));
        assert!(!c.finish_attempt(0, status(500), t1));
        assert!(c.finish_attempt(0, status(500), t1));
    }

    #[test]
    fn a_run_of_gateway_failures_quarantines_and_a_response_breaks_it() {
        let mut c = runtime("outlier = { consecutive_gateway_failures = 2, consecutive_5xx = 0 }");
        let t0 = Instant::now();
        assert!(!c.finish_attempt(2, Some(Outcome::Reset), t0));
        // Any response, even a 500 (whose detector is off here), ends a gateway-failure run.
        assert!(!c.finish_attempt(2, status(500), t0));
        assert!(!c.finish_attempt(2, Some(Outcome::Timeout), t0));
        assert_eq!(pickable(&c, t0), vec![0, 1, 2]);
        assert!(c.finish_attempt(2, Some(Outcome::Protocol), t0));
        assert_eq!(pickable(&c, t0), vec![0, 1]);
        // A 5xx run never trips with its detector off.
        for _ in 0..10 {
            assert!(!c.finish_attempt(1, status(500), t0));
        }
        // Nor does an attempt that never reached the endpoint count.
        assert!(!c.finish_attempt(1, None, t0));
    }

    #[test]
    fn runs_quarantine_at_most_max_ejection_percent_of_the_cluster() {
        // 3 endpoints × 50 % → one endpoint at a time (and always at least one).
        let mut c = runtime("outlier = { consecutive_5xx = 1, max_ejection_percent = 50 }");
        let t0 = Instant::now();
        assert!(c.finish_attempt(0, status(500), t0));
        assert!(!c.finish_attempt(1, status(500), t0));
        assert!(!c.finish_attempt(2, status(500), t0));
        assert_eq!(pickable(&c, t0), vec![1, 2]);
        // Once the first quarantine is over, another endpoint may take its place.
        let t1 = t0 + QUARANTINE;
        assert!(c.finish_attempt(1, status(500), t1));
        assert_eq!(pickable(&c, t1), vec![0, 2]);
        // A connect failure is not limited: nothing can be served there.
        assert!(c.finish_attempt(2, Some(Outcome::ConnectTimeout), t1));
        assert_eq!(pickable(&c, t1), vec![0]);
    }

    /// A snapshot of cluster "c" with endpoint `ejected` ejected (and the others healthy).
    fn health_with_ejected(ejected: usize) -> ClusterHealth {
        let endpoint = |i: usize| crate::health::EndpointHealth {
            address: SocketAddr::from(([127, 0, 0, 1], i as u16 + 1)),
            state: if i == ejected {
                EndpointState::Ejected
            } else {
                EndpointState::Healthy
            },
            routable: i != ejected,
            weight: 1,
            priority: 0,
            ejected_until: None,
            ejections: u32::from(i == ejected),
            last_failure: None,
            last_probe: None,
            recovery: None,
            cells: Arc::new(crate::health::Cells::new(1)),
        };
        ClusterHealth {
            name: "c".into(),
            endpoints: (0..3).map(endpoint).collect(),
            healthy: 2,
            earliest_recovery: None,
            panic: false,
        }
    }

    #[test]
    fn the_health_threads_verdict_replaces_a_quarantine_for_failure_runs_only() {
        // 100 % ejection and a panic threshold of 100: every ejected endpoint makes the cluster
        // panic, so the plan itself would route to the ejected one.
        let config = config(
            "panic_threshold = 100\noutlier = { consecutive_5xx = 1, max_ejection_percent = 100 }",
        );
        let cc = &config.clusters[0];
        let mut c = ClusterRuntime::new(cc, 0, 1);
        let t0 = Instant::now();
        assert!(c.finish_attempt(0, status(500), t0));
        assert!(c.finish_attempt(1, Some(Outcome::ConnectFailed), t0));
        assert_eq!(pickable(&c, t0), vec![2]);
        // The snapshot ejects 0 (panic mode then spreads over it): the shard's own quarantine
        // of 0 gives way; the connect-failure quarantine of 1 stays for its second.
        c.replan(Some(&health_with_ejected(0)), cc);
        assert_eq!(pickable(&c, t0), vec![0, 2]);
        // Nor do further failures quarantine it here while the snapshot has it ejected.
        assert!(!c.finish_attempt(0, status(500), t0));
        assert_eq!(pickable(&c, t0), vec![0, 2]);
        // A snapshot that still calls an endpoint healthy does not lift its quarantine.
        assert!(c.finish_attempt(2, status(500), t0));
        c.replan(Some(&health_with_ejected(0)), cc);
        assert_eq!(pickable(&c, t0), vec![0]);
    }

    #[test]
    fn retries_past_the_concurrency_cap_come_from_the_reserve() {
        let mut c = runtime("retry_budget = { percent = 50, min_concurrent = 1, burst = 3 }");
        // 10 requests in flight: 5 concurrent retries, and a reserve of 10 × 0.5 capped at 3.
        for _ in 0..10 {
            c.admit().expect("admitted");
        }
        for i in 0..8 {
            assert!(c.begin_retry(), "retry {i}");
        }
        assert!(!c.begin_retry(), "cap and reserve used up");
        // Retries that end give back their concurrency, not the reserve.
        c.end_retries(8);
        for i in 0..5 {
            assert!(c.begin_retry(), "retry {i} after the first wave");
        }
        assert!(!c.begin_retry());
        // Two more requests raise the cap to 6 and top the reserve up by one retry.
        c.admit().expect("admitted");
        c.admit().expect("admitted");
        assert!(c.begin_retry());
        assert!(c.begin_retry());
        assert!(!c.begin_retry());
    }

    #[test]
    fn without_a_reserve_the_concurrency_cap_alone_applies() {
        let mut c = runtime("retry_budget = { percent = 50, min_concurrent = 1, burst = 0 }");
        for _ in 0..10 {
            c.admit().expect("admitted");
        }
        for i in 0..5 {
            assert!(c.begin_retry(), "retry {i}");
        }
        assert!(!c.begin_retry());
    }

    #[test]
    fn with_outlier_detection_off_only_connect_failures_quarantine() {
        let mut c = runtime("outlier = { enabled = false }");
        let t0 = Instant::now();
        for _ in 0..20 {
            assert!(!c.finish_attempt(0, status(500), t0));
            assert!(!c.finish_attempt(0, Some(Outcome::Reset), t0));
        }
        assert_eq!(pickable(&c, t0), vec![0, 1, 2]);
        assert!(c.finish_attempt(0, Some(Outcome::ConnectFailed), t0));
        assert_eq!(pickable(&c, t0), vec![1, 2]);
    }
}
