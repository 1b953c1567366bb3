//! Deployment routing and the failover plan of one request.
//!
//! This module owns two things:
//!
//! - [`Router`]: the gateway-wide routing state — one `headwater_balancer::Balancer` per model
//!   alias, the RPM/TPM [`RateLimiter`] of every deployment, and the [`DeploymentHealth`] fed
//!   by every attempt. [`Router::pick`] chooses among a model's *ready* deployments: not
//!   ejected, not failing their canary, not cooling down after a 429, within their RPM/TPM, and
//!   not excluded by the caller. How it chooses is the model's [`Routing`]:
//!   - `weighted`: smooth weighted round robin (exact proportions, no randomness);
//!   - `least-latency`: power of two choices on a peak-EWMA of time to first token times load
//!     (a failure counts as a 10 s sample, and estimates decay with a 30 s time constant so a
//!     deployment that was slow gets tried again);
//!   - `cheapest`: the ready deployments with the lowest blended price
//!     ([`DeploymentSpec::blended_price`](crate::catalogue::DeploymentSpec::blended_price);
//!     unpriced ones last), weighted round robin among equals.
//! - [`Attempts`]: the failover plan of one request, a state machine that yields the next
//!   deployment to try ([`Step::Try`]) or the error to answer with ([`Step::GiveUp`]). The
//!   order: the requested model's ready deployments (each once, immediately); then those
//!   worth waiting for — a deployment that failed with a retryable error (retried up to
//!   [`FailoverPolicy::retries_per_deployment`] times, after an exponential backoff with
//!   jitter that is never shorter than its `Retry-After`), or one cooling down or over its
//!   limits — shortest wait first, as long as the imposed wait is at most
//!   [`FailoverPolicy::max_wait`] (beyond it the deployment is skipped); then the same for
//!   each model of the fallback chain, in order. Non-retryable errors (400, 401, 403, 404,
//!   content filter) end the plan at once; a context-length error moves to the failing model's
//!   `context_fallback` (its whole chain) when one is configured, else ends it. No attempt
//!   starts after [`FailoverPolicy::max_attempts`] attempts or past the deadline. When nothing
//!   at all could be tried because everything is ejected, the ejected deployments are tried as
//!   a last resort ([`FailoverPolicy::last_resort`]).
//!
//! Streams: an attempt whose answer has started reaching the client is *committed* and cannot
//! be replaced; the engine reports failures with `committed: true` and the plan ends.
//! [`Attempts::can_retry`] says whether a further attempt would be allowed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use headwater_balancer::{Algorithm, Balancer, CandidateSet, Options};
use headwater_health::retry::backoff;

use crate::canonical::{ChatRequest, Part, ResultPart};
use crate::catalogue::{Catalogue, DeploymentId, ModelId};
use crate::error::{ErrorKind, LlmError, Origin, RetryAfter};
use crate::health::{DeploymentHealth, HealthEvent, Outcome};
use crate::limiter::RateLimiter;
use crate::usage::Usage;

/// How a model's deployment is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Routing {
    /// Smooth weighted round robin.
    #[default]
    Weighted,
    /// Lowest peak-EWMA of time to first token, times load.
    LeastLatency,
    /// Lowest blended price.
    Cheapest,
}

impl Routing {
    /// `weighted`, `least-latency` or `cheapest`.
    pub fn as_str(self) -> &'static str {
        match self {
            Routing::Weighted => "weighted",
            Routing::LeastLatency => "least-latency",
            Routing::Cheapest => "cheapest",
        }
    }

    /// The routing a configuration name spells.
    pub fn parse(name: &str) -> Option<Routing> {
        [Routing::Weighted, Routing::LeastLatency, Routing::Cheapest]
            .into_iter()
            .find(|r| r.as_str() == name)
    }
}

/// The failover rules (`[llm.failover]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverPolicy {
    /// Attempts per request, the first included (4).
    pub max_attempts: u32,
    /// No attempt starts (nor is waited for) later than this after the request arrived
    /// (120 s).
    pub deadline: Duration,
    /// The longest wait imposed by a deployment (its `Retry-After`, its cooldown, its
    /// RPM/TPM) worth observing; a deployment needing longer is skipped (10 s).
    pub max_wait: Duration,
    /// Backoff before the first retry of a deployment; doubles per retry, equal jitter
    /// (250 ms).
    pub backoff: Duration,
    /// Cap on the backoff (4 s).
    pub max_backoff: Duration,
    /// Retries of one deployment after its first failure (1).
    pub retries_per_deployment: u32,
    /// Whether a failure that is the deployment's fault (the provider refused the gateway's
    /// key, model or quota: 401, 403, 404, exhausted quota) moves on to the next deployment
    /// instead of being answered at once (false: answered at once, as other non-retryable
    /// errors).
    pub fail_over_on_deployment_fault: bool,
    /// Whether, when no deployment of the whole chain is available and no attempt has been
    /// made, the ejected (or canary-failing) ones are tried anyway (true): ejection exists to
    /// steer traffic to better deployments, not to refuse every request.
    pub last_resort: bool,
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        FailoverPolicy {
            max_attempts: 4,
            deadline: Duration::from_secs(120),
            max_wait: Duration::from_secs(10),
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
            retries_per_deployment: 1,
            fail_over_on_deployment_fault: false,
            last_resort: true,
        }
    }
}

/// A rough token count of a request, for RPM/TPM reservations before the provider reports
/// the real one: a quarter of the characters of every text (system, messages, tool
/// definitions, call arguments and results), 1000 per image, plus `max_tokens` when given.
pub fn estimate_tokens(req: &ChatRequest) -> u64 {
    let mut chars: usize = req.system.iter().map(String::len).sum();
    let mut images = 0u64;
    for m in &req.messages {
        for p in &m.content {
            match p {
                Part::Text(t) => chars += t.len(),
                Part::Image(_) => images += 1,
                Part::ToolCall(c) => chars += c.name.len() + c.arguments.len(),
                Part::ToolResult(r) => {
                    for rp in &r.content {
                        match rp {
                            ResultPart::Text(t) => chars += t.len(),
                            ResultPart::Image(_) => images += 1,
                        }
                    }
                }
            }
        }
    }
    for t in &req.tools {
        chars += t.name.len() + t.description.as_ref().map_or(0, String::len);
        chars += json_len(&t.parameters);
    }
    (chars as u64).div_ceil(4) + images * 1000 + u64::from(req.max_tokens.unwrap_or(0))
}

/// The length of `v` as compact JSON text, counted without building the text.
fn json_len(v: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    let _ = serde_json::to_writer(&mut n, v);
    n.0
}

/// A connect failure or reset reported as an error, so that [`Outcome::from_error`] counts it
/// as a transport failure and the failover plan retries it.
pub fn transport_error(message: impl Into<String>) -> LlmError {
    LlmError::new(ErrorKind::ProviderError, Origin::Gateway, message)
}

/// Gateway-wide routing state: balancers, limiters, health. See the module documentation.
#[derive(Debug)]
pub struct Router {
    catalogue: Arc<Catalogue>,
    balancers: Vec<Balancer>,
    sets: Vec<CandidateSet>,
    limiters: Vec<RateLimiter>,
    health: DeploymentHealth,
    seed: u64,
}

impl Router {
    /// Routing state for `catalogue` at `now`: every deployment healthy, limits full. `seed`
    /// drives every random choice (least-latency draws, backoff jitter, canary spread).
    pub fn new(catalogue: Arc<Catalogue>, seed: u64, now: Instant) -> Router {
        let options = Options {
            ewma_decay: Duration::from_secs(30),
            ewma_seed: Duration::from_secs(1),
            failure_penalty: Duration::from_secs(10),
            ..Options::default()
        };
        let mut balancers = Vec::new();
        let mut sets = Vec::new();
        for m in catalogue.models() {
            let algorithm = match m.routing {
                Routing::LeastLatency => Algorithm::PeakEwma,
                Routing::Weighted | Routing::Cheapest => Algorithm::Weighted,
            };
            balancers.push(Balancer::with_options(
                algorithm,
                m.deployments.len(),
                seed ^ (m.id.0 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                options,
            ));
            sets.push(CandidateSet::new(m.deployments.iter().map(|&d| {
                (
                    catalogue.deployment(d).index,
                    catalogue.deployment(d).weight,
                )
            })));
        }
        let limiters = catalogue
            .deployments()
            .iter()
            .map(|d| RateLimiter::new(d.limits))
            .collect();
        let health = DeploymentHealth::new(&catalogue, seed, now);
        Router {
            catalogue,
            balancers,
            sets,
            limiters,
            health,
            seed,
        }
    }

    /// The catalogue routed over.
    pub fn catalogue(&self) -> &Arc<Catalogue> {
        &self.catalogue
    }

    /// Deployment health (read).
    pub fn health(&self) -> &DeploymentHealth {
        &self.health
    }

    /// Deployment health (canary results, periodic ticks).
    pub fn health_mut(&mut self) -> &mut DeploymentHealth {
        &mut self.health
    }

    /// The RPM/TPM limiter of `dep`.
    ///
    /// # Panics
    /// When `dep` is not one of the catalogue's.
    pub fn limiter(&self, dep: DeploymentId) -> &RateLimiter {
        &self.limiters[dep.0]
    }

    /// The least-latency estimate of `dep` at `now` (peak-EWMA of time to first token; `None`
    /// for other routings and before the first sample).
    pub fn latency_estimate(&self, dep: DeploymentId, now: Instant) -> Option<Duration> {
        let spec = self.catalogue.deployments().get(dep.0)?;
        self.balancers[spec.model.0].ewma(spec.index, now)
    }

    /// The failover plan of a request for `model` estimated at `tokens` tokens
    /// ([`estimate_tokens`]), arriving at `now` (`now_unix` in Unix seconds, to resolve
    /// HTTP-date `Retry-After`s).
    pub fn plan(&self, model: ModelId, tokens: u64, now: Instant, now_unix: u64) -> Attempts {
        let chain = self.catalogue.model(model).chain.clone();
        let policy = self.catalogue.failover.clone();
        // A seed per request that differs from request to request yet stays reproducible.
        let seed = self.seed ^ now_unix.rotate_left(17) ^ (tokens << 1) ^ (model.0 as u64);
        Attempts {
            requested: model,
            chain,
            pos: 0,
            tokens,
            started: now,
            deadline: now + policy.deadline,
            unix_at_start: now_unix,
            made: 0,
            tried: Vec::new(),
            used: Vec::new(),
            last_error: None,
            finished: None,
            limited: None,
            last_resort_used: false,
            rng: fastrand::Rng::with_seed(seed),
            policy,
        }
    }

    /// Picks a ready deployment of `model` for a request of `tokens` tokens, skipping those
    /// for which `skip` is true, and reserves it (limits, in-flight count). `None` when no
    /// deployment is ready. Each pick must be followed by [`Router::finish`] or
    /// [`Router::abandon`].
    pub fn pick(
        &mut self,
        model: ModelId,
        tokens: u64,
        skip: impl Fn(DeploymentId) -> bool,
        now: Instant,
    ) -> Option<DeploymentId> {
        self.pick_inner(model, tokens, skip, now, false)
    }

    fn pick_inner(
        &mut self,
        model: ModelId,
        tokens: u64,
        skip: impl Fn(DeploymentId) -> bool,
        now: Instant,
        ignore_health: bool,
    ) -> Option<DeploymentId> {
        let m = self.catalogue.model(model);
        let ready: Vec<bool> = m
            .deployments
            .iter()
            .map(|&d| {
                !skip(d)
                    && (ignore_health || !self.health.is_excluded(d, now))
                    && self.health.cooldown_left(d, now).is_zero()
                    && self.limiters[d.0].check(tokens, now).is_ok()
            })
            .collect();
        if m.routing == Routing::Cheapest {
            let price = |i: usize| {
                self.catalogue
                    .deployment(m.deployments[i])
                    .blended_price()
                    .unwrap_or(f64::INFINITY)
            };
            let best = (0..ready.len())
                .filter(|&i| ready[i])
                .map(price)
                .fold(f64::INFINITY, f64::min);
            let eligible: Vec<bool> = (0..ready.len())
                .map(|i| ready[i] && price(i) <= best)
                .collect();
            return self.take(model, &eligible, tokens, now);
        }
        self.take(model, &ready, tokens, now)
    }

    /// Picks among `eligible` (by position in the model) with the model's balancer and
    /// reserves the pick.
    fn take(
        &mut self,
        model: ModelId,
        eligible: &[bool],
        tokens: u64,
        now: Instant,
    ) -> Option<DeploymentId> {
        let i = self.balancers[model.0].pick(
            &self.sets[model.0],
            |i| !eligible.get(i).copied().unwrap_or(false),
            None,
            now,
        )?;
        let dep = self.catalogue.model(model).deployments[i];
        self.reserve(dep, tokens, now);
        Some(dep)
    }

    /// Takes `dep`'s limits for `tokens` (into debt when they are short: the caller then
    /// waits for the refill before sending) and counts it in flight.
    fn reserve(&mut self, dep: DeploymentId, tokens: u64, now: Instant) {
        let _ = self.limiters[dep.0].reserve(tokens, now, Duration::MAX);
        let spec = self.catalogue.deployment(dep);
        self.balancers[spec.model.0].start(spec.index, now);
    }

    /// An attempt on `dep` (reserved at `reserved_tokens`) ended with `outcome`, having used
    /// `used_tokens` (prompt plus completion) when the provider said so: updates the
    /// least-latency estimate, corrects the TPM reservation (a failure without usage gives the
    /// estimate back) and records the outcome in health. Returns the health changes.
    pub fn finish(
        &mut self,
        dep: DeploymentId,
        reserved_tokens: u64,
        outcome: &Outcome,
        used_tokens: Option<u64>,
        now: Instant,
    ) -> Vec<HealthEvent> {
        let Some(spec) = self.catalogue.deployments().get(dep.0) else {
            return Vec::new();
        };
        let balancer = &mut self.balancers[spec.model.0];
        match outcome {
            Outcome::Success { ttft, .. } => balancer.finish(spec.index, Some(*ttft), now),
            Outcome::ClientError => balancer.abandon(spec.index),
            _ => balancer.finish(spec.index, None, now),
        }
        let used = match outcome {
            Outcome::Success { .. } => used_tokens.unwrap_or(reserved_tokens),
            _ => used_tokens.unwrap_or(0),
        };
        self.limiters[dep.0].adjust_tokens(reserved_tokens, used, now);
        self.health.record(dep, outcome, now)
    }

    /// An attempt on `dep` was never sent, or was cancelled before telling anything about the
    /// deployment: its reservation is given back, no sample is recorded.
    pub fn abandon(&mut self, dep: DeploymentId, reserved_tokens: u64, now: Instant) {
        if let Some(spec) = self.catalogue.deployments().get(dep.0) {
            self.balancers[spec.model.0].abandon(spec.index);
            self.limiters[dep.0].release(reserved_tokens, now);
        }
    }
}

/// One attempt to make: wait `wait`, then send the request to `deployment` (of `model`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first attempt of the request.
    pub number: u32,
    /// The model alias whose deployment this is (the requested one or a fallback).
    pub model: ModelId,
    /// The deployment.
    pub deployment: DeploymentId,
    /// How long to wait before sending (backoff, `Retry-After`, rate limit).
    pub wait: Duration,
    /// Tokens reserved against the deployment's TPM (the request's estimate).
    pub tokens: u64,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Make this attempt, then [`Attempts::report`] how it went.
    Try(Attempt),
    /// Answer the client with this error.
    GiveUp(LlmError),
    /// An attempt succeeded: nothing more to do.
    Done,
}

/// How one attempt ended, as the engine saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    /// The answer arrived (for a stream: it ended properly).
    Success {
        /// Time to the first token (streams) or to the response (otherwise), from sending.
        ttft: Duration,
        /// Output tokens per second after the first, when measured.
        tokens_per_second: Option<f64>,
        /// Usage, when the provider reported it.
        usage: Option<Usage>,
    },
    /// It failed. Connect failures and resets are reported as [`transport_error`]s,
    /// timeouts as [`ErrorKind::Timeout`] errors.
    Failure {
        /// What went wrong.
        error: LlmError,
        /// Whether part of the answer already reached the client (no further attempt).
        committed: bool,
    },
    /// The client went away or the engine cancelled the attempt: nothing is learnt about the
    /// deployment and the plan ends.
    Cancelled,
}

#[derive(Debug, Clone)]
struct Tried {
    dep: DeploymentId,
    failures: u32,
    retry_at: Option<Instant>,
    /// Not to be tried again in this request.
    done: bool,
}

#[derive(Debug, Clone)]
enum Finished {
    Succeeded,
    Failed(LlmError),
}

/// The failover plan of one request. See the module documentation for the order and rules.
///
/// ```text
/// let mut plan = router.plan(model, estimate_tokens(&req), now, now_unix);
/// loop {
///     match plan.next(&mut router, now) {
///         Step::Try(a) => {
///             sleep(a.wait);
///             let result = send to a.deployment;
///             plan.report(&mut router, &a, result, now);
///         }
///         Step::GiveUp(err) => break answer(err),
///         Step::Done => break,
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Attempts {
    requested: ModelId,
    chain: Vec<ModelId>,
    pos: usize,
    tokens: u64,
    started: Instant,
    deadline: Instant,
    unix_at_start: u64,
    policy: FailoverPolicy,
    made: u32,
    tried: Vec<Tried>,
    /// Models other than the requested one that got an attempt, in order.
    used: Vec<ModelId>,
    last_error: Option<LlmError>,
    finished: Option<Finished>,
    /// The shortest imposed wait among deployments skipped for needing more than `max_wait`.
    limited: Option<Duration>,
    last_resort_used: bool,
    rng: fastrand::Rng,
}

impl Attempts {
    /// The model the client asked for.
    pub fn requested(&self) -> ModelId {
        self.requested
    }

    /// Attempts made so far.
    pub fn attempts_made(&self) -> u32 {
        self.made
    }

    /// The models other than the requested one that got an attempt, in order (the fallbacks
    /// taken, context fallbacks included).
    pub fn fallbacks(&self) -> &[ModelId] {
        &self.used
    }

    /// When the request arrived.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Unix seconds at `now`.
    fn unix(&self, now: Instant) -> u64 {
        self.unix_at_start + now.saturating_duration_since(self.started).as_secs()
    }

    /// Whether another attempt may follow a failure at `now`: not when the answer is
    /// `committed` (part of it reached the client), nor once the plan has ended, the attempt
    /// cap is reached or the deadline has passed. (Whether a deployment is left to try is
    /// decided by [`Attempts::next`].)
    pub fn can_retry(&self, committed: bool, now: Instant) -> bool {
        !committed
            && self.finished.is_none()
            && self.made < self.policy.max_attempts
            && now < self.deadline
    }

    /// The next step at `now`. A [`Step::Try`] has already reserved its deployment in
    /// `router`; report its result with [`Attempts::report`] before calling `next` again.
    pub fn next(&mut self, router: &mut Router, now: Instant) -> Step {
        match &self.finished {
            Some(Finished::Succeeded) => return Step::Done,
            Some(Finished::Failed(e)) => return Step::GiveUp(e.clone()),
            None => {}
        }
        if self.made >= self.policy.max_attempts {
            let e = self.last_error.clone().unwrap_or_else(|| {
                LlmError::new(
                    ErrorKind::Overloaded,
                    Origin::Gateway,
                    "attempt limit reached",
                )
            });
            return self.give_up(e);
        }
        if now >= self.deadline {
            return self.deadline_passed();
        }
        while self.pos < self.chain.len() {
            let model = self.chain[self.pos];
            if let Some(a) = self.try_model(router, model, now) {
                return Step::Try(a);
            }
            self.pos += 1;
        }
        if self.policy.last_resort && self.made == 0 && !self.last_resort_used {
            self.last_resort_used = true;
            for i in 0..self.chain.len() {
                let model = self.chain[i];
                if let Some(dep) = router.pick_inner(model, self.tokens, |_| false, now, true) {
                    return Step::Try(self.attempt(model, dep, Duration::ZERO));
                }
            }
        }
        let e = match self.last_error.clone() {
            Some(e) => e,
            None => self.nothing_available(router),
        };
        self.give_up(e)
    }

    fn try_model(&mut self, router: &mut Router, model: ModelId, now: Instant) -> Option<Attempt> {
        let tried = &self.tried;
        if let Some(dep) = router.pick(
            model,
            self.tokens,
            |d| tried.iter().any(|t| t.dep == d),
            now,
        ) {
            return Some(self.attempt(model, dep, Duration::ZERO));
        }
        let mut best: Option<(Duration, DeploymentId)> = None;
        for &dep in &router.catalogue.model(model).deployments {
            if router.health.is_excluded(dep, now) {
                continue;
            }
            let (backoff_wait, retry_wait) = match self.tried.iter().find(|t| t.dep == dep) {
                Some(t) if t.done || t.failures > self.policy.retries_per_deployment => continue,
                Some(t) => (
                    backoff(
                        t.failures,
                        self.policy.backoff,
                        self.policy.max_backoff,
                        &mut self.rng,
                    ),
                    t.retry_at
                        .map_or(Duration::ZERO, |at| at.saturating_duration_since(now)),
                ),
                None => (Duration::ZERO, Duration::ZERO),
            };
            let imposed = retry_wait
                .max(router.health.cooldown_left(dep, now))
                .max(router.limiters[dep.0].wait(self.tokens, now));
            if imposed > self.policy.max_wait {
                self.limited = Some(self.limited.map_or(imposed, |l| l.min(imposed)));
                continue;
            }
            let wait = imposed.max(backoff_wait);
            if now + wait >= self.deadline {
                continue;
            }
            if best.is_none_or(|(w, _)| wait < w) {
                best = Some((wait, dep));
            }
        }
        let (wait, dep) = best?;
        router.reserve(dep, self.tokens, now);
        Some(self.attempt(model, dep, wait))
    }

    fn attempt(&mut self, model: ModelId, dep: DeploymentId, wait: Duration) -> Attempt {
        self.made += 1;
        if model != self.requested && !self.used.contains(&model) {
            self.used.push(model);
        }
        if !self.tried.iter().any(|t| t.dep == dep) {
            self.tried.push(Tried {
                dep,
                failures: 0,
                retry_at: None,
                done: false,
            });
        }
        Attempt {
            number: self.made,
            model,
            deployment: dep,
            wait,
            tokens: self.tokens,
        }
    }

    fn give_up(&mut self, e: LlmError) -> Step {
        self.finished = Some(Finished::Failed(e.clone()));
        Step::GiveUp(e)
    }

    fn deadline_passed(&mut self) -> Step {
        let e = self.last_error.clone().unwrap_or_else(|| {
            LlmError::new(
                ErrorKind::Timeout,
                Origin::Gateway,
                format!(
                    "no deployment could be tried within the {:.0}s deadline",
                    self.policy.deadline.as_secs_f64()
                ),
            )
        });
        self.give_up(e)
    }

    /// The error when no attempt could be made: rate limited (429 with the shortest wait) when
    /// deployments were skipped for their limits, else overloaded (503).
    fn nothing_available(&self, router: &Router) -> LlmError {
        let name = &router.catalogue.model(self.requested).name;
        match self.limited {
            Some(wait) => {
                let mut e = LlmError::new(
                    ErrorKind::RateLimited,
                    Origin::Gateway,
                    format!("every deployment of model `{name}` and its fallbacks is rate limited"),
                );
                // Whole seconds, rounded up: a client waiting that long will find one.
                e.retry_after = Some(RetryAfter::Delay(Duration::from_secs(
                    wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                )));
                e
            }
            None => LlmError::new(
                ErrorKind::Overloaded,
                Origin::Gateway,
                format!("no healthy deployment for model `{name}` or its fallbacks"),
            ),
        }
    }

    /// Reports how `attempt` ended at `now`: feeds `router` (latency, limits, health) and
    /// decides what [`Attempts::next`] does. Returns the health changes it caused.
    pub fn report(
        &mut self,
        router: &mut Router,
        attempt: &Attempt,
        result: AttemptResult,
        now: Instant,
    ) -> Vec<HealthEvent> {
        let dep = attempt.deployment;
        let (error, committed) = match result {
            AttemptResult::Success {
                ttft,
                tokens_per_second,
                usage,
            } => {
                self.finished = Some(Finished::Succeeded);
                let outcome = Outcome::Success {
                    ttft,
                    tokens_per_second,
                };
                let used = usage.map(|u| u.total_tokens());
                return router.finish(dep, attempt.tokens, &outcome, used, now);
            }
            AttemptResult::Cancelled => {
                router.abandon(dep, attempt.tokens, now);
                self.finished = Some(Finished::Failed(LlmError::new(
                    ErrorKind::ProviderError,
                    Origin::Gateway,
                    "the attempt was cancelled",
                )));
                return Vec::new();
            }
            AttemptResult::Failure { error, committed } => (error, committed),
        };
        let unix = self.unix(now);
        let outcome = Outcome::from_error(&error, unix);
        let events = router.finish(dep, attempt.tokens, &outcome, None, now);
        let policy = &self.policy;
        let Some(t) = self.tried.iter_mut().find(|t| t.dep == dep) else {
            self.finished = Some(Finished::Failed(error));
            return events;
        };
        t.failures += 1;
        if committed {
            self.finished = Some(Finished::Failed(error));
        } else if error.is_context_length_exceeded() {
            match router.catalogue.model(attempt.model).context_fallback {
                Some(to) => {
                    self.chain = router.catalogue.model(to).chain.clone();
                    self.pos = 0;
                    self.last_error = Some(error);
                }
                None => self.finished = Some(Finished::Failed(error)),
            }
        } else if error.retryable() {
            if let Some(ra) = error.retry_after {
                let delay = ra.delay_at(unix);
                if delay > policy.max_wait {
                    t.done = true;
                    self.limited = Some(self.limited.map_or(delay, |l| l.min(delay)));
                } else {
                    t.retry_at = Some(now + delay);
                }
            }
            self.last_error = Some(error);
        } else if error.deployment_fault() && policy.fail_over_on_deployment_fault {
            t.done = true;
            self.last_error = Some(error);
        } else {
            self.finished = Some(Finished::Failed(error));
        }
        events
    }
}
