//! Deployment health: whether each deployment should get traffic, from how its real traffic
//! went (passive) and from a semantic canary (active), plus the per-deployment figures that
//! `/status` and `/metrics` show.
//!
//! This module owns, per deployment:
//!
//! - **passive outlier detection**, reusing `headwater_health::outlier` with each model's
//!   deployments as one cluster: [`Outcome`]s are counted into an `EndpointWindow` per
//!   deployment, and the detector ejects after a run of consecutive failures (every failure
//!   counts towards [`HealthPolicy::consecutive_failures`]; connect errors, resets, timeouts and
//!   unreadable answers also towards [`HealthPolicy::consecutive_gateway_failures`]), for
//!   `base_ejection × ejection count`, capped at `max_ejection`, with the count decaying by one
//!   per `interval` spent serving, and never more than `max_ejection_percent` of a model's
//!   deployments ejected at once;
//! - **cooling down** after a 429: a rate-limited deployment is not ejected (it is healthy,
//!   merely busy) but skipped until its `Retry-After` has passed (or
//!   [`HealthPolicy::rate_limit_cooldown`] without one); 429s are counted on their own and
//!   neither extend nor break a failure run;
//! - **the canary**: a deployment that answers 200 with garbage passes every passive check, so
//!   a configured prompt is sent every `interval` and the answer judged by [`canary_verdict`];
//!   rise/fall hysteresis (`headwater_health::probe_state`) turns verdicts into passing or
//!   failing, and a failing deployment is taken out like an ejected one;
//! - **figures**: EWMAs of time to first token and of output tokens per second, outcome counts,
//!   the last failure; [`DeploymentHealth::snapshot`] lists them with the state.
//!
//! No I/O and no clock: time is an argument, randomness (canary jitter) is seeded.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use headwater_health::outlier::{
    EjectReason, EndpointWindow, OutlierDetector, OutlierPolicy, OutlierReport,
};
use headwater_health::probe_state::{ProbeHealth, ProbePolicy, ProbeState};
use serde::Serialize;
use serde_json::Value;

use crate::canonical::ChatResponse;
use crate::catalogue::{Catalogue, DeploymentId, Expect};
use crate::error::{ErrorKind, LlmError, Origin};

/// Passive health-check settings (`[llm.health]`).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthPolicy {
    /// Consecutive failures of any kind (5xx, credentials refused, transport, garbage) that
    /// eject (3).
    pub consecutive_failures: u32,
    /// Consecutive transport failures (connect, reset, timeout, unreadable answer) that eject
    /// (3).
    pub consecutive_gateway_failures: u32,
    /// Ejection time of a first ejection; multiplied by the ejection count (30 s).
    pub base_ejection: Duration,
    /// Cap on the ejection time (300 s).
    pub max_ejection: Duration,
    /// Share of one model's deployments that may be ejected at once (100: a model's last
    /// deployment may be ejected too, since its fallbacks can take the traffic; the router's
    /// last resort still tries it when nothing else is left).
    pub max_ejection_percent: u8,
    /// Unit of ejection-count decay (10 s).
    pub interval: Duration,
    /// How long a deployment cools down after a 429 without `Retry-After` (5 s).
    pub rate_limit_cooldown: Duration,
    /// Weight of a new sample in the status EWMAs (0.2).
    pub ewma_weight: f64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            consecutive_failures: 3,
            consecutive_gateway_failures: 3,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 100,
            interval: Duration::from_secs(10),
            rate_limit_cooldown: Duration::from_secs(5),
            ewma_weight: 0.2,
        }
    }
}

impl HealthPolicy {
    /// The outlier policy of the detector: consecutive runs only (success rate and latency
    /// need volumes a model's handful of deployments rarely have).
    pub fn outlier_policy(&self) -> OutlierPolicy {
        OutlierPolicy {
            consecutive_5xx: Some(self.consecutive_failures),
            consecutive_gateway_failures: Some(self.consecutive_gateway_failures),
            success_rate: None,
            latency: None,
            interval: self.interval,
            base_ejection: self.base_ejection,
            max_ejection: self.max_ejection,
            jitter: Duration::ZERO,
            max_ejection_percent: self.max_ejection_percent,
        }
    }
}

/// What one attempt against a deployment came to, for health.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// An answer: `ttft` is the time to the first token of a stream, or to the response of
    /// a non-streamed request; `tokens_per_second` the output rate when measured.
    Success {
        /// Time to first token (or to the response).
        ttft: Duration,
        /// Output tokens per second after the first.
        tokens_per_second: Option<f64>,
    },
    /// HTTP 429: the deployment is busy; cool down for `retry_after` (or the policy's
    /// default).
    RateLimited {
        /// The provider's `Retry-After`, resolved to a delay.
        retry_after: Option<Duration>,
    },
    /// A 5xx, or a refusal that is the deployment's fault (its key, its quota, its model
    /// name).
    ServerError {
        /// The HTTP status, when there was one.
        status: Option<u16>,
    },
    /// No answer in time.
    Timeout,
    /// Connect failure or connection reset.
    Transport,
    /// An answer that could not be read, or a stream that broke.
    Garbage,
    /// An answer refusing the *request* (400, context length, content filter): the
    /// deployment works.
    ClientError,
}

impl Outcome {
    /// Classifies an error: 429 → [`Outcome::RateLimited`] (`Retry-After` resolved at
    /// `now_unix`); 5xx and deployment faults (401, 403, 404, exhausted quota) →
    /// [`Outcome::ServerError`]; a provider or overload error that the *gateway* raised
    /// ([`Origin::Gateway`]: how the engine reports connect failures and resets) →
    /// [`Outcome::Transport`]; timeouts → [`Outcome::Timeout`]; unreadable answers and broken
    /// streams → [`Outcome::Garbage`]; anything else is the request's fault →
    /// [`Outcome::ClientError`].
    pub fn from_error(err: &LlmError, now_unix: u64) -> Outcome {
        match err.kind {
            ErrorKind::RateLimited => Outcome::RateLimited {
                retry_after: err.retry_after.map(|r| r.delay_at(now_unix)),
            },
            ErrorKind::ProviderError | ErrorKind::Overloaded if err.origin == Origin::Gateway => {
                Outcome::Transport
            }
            ErrorKind::ProviderError
            | ErrorKind::Overloaded
            | ErrorKind::Authentication
            | ErrorKind::PermissionDenied
            | ErrorKind::NotFound
            | ErrorKind::QuotaExceeded => Outcome::ServerError {
                status: err.provider_status,
            },
            ErrorKind::Timeout => Outcome::Timeout,
            ErrorKind::StreamInterrupted | ErrorKind::MalformedResponse => Outcome::Garbage,
            ErrorKind::InvalidRequest
            | ErrorKind::Unsupported
            | ErrorKind::ContextLengthExceeded
            | ErrorKind::RequestTooLarge
            | ErrorKind::ContentFiltered => Outcome::ClientError,
        }
    }

    /// A short description for the last-failure field.
    fn describe(&self) -> String {
        match self {
            Outcome::Success { .. } => "success".into(),
            Outcome::RateLimited {
                retry_after: Some(d),
            } => {
                format!("rate limited (retry after {:.1}s)", d.as_secs_f64())
            }
            Outcome::RateLimited { retry_after: None } => "rate limited".into(),
            Outcome::ServerError { status: Some(s) } => format!("HTTP {s}"),
            Outcome::ServerError { status: None } => "provider error".into(),
            Outcome::Timeout => "timeout".into(),
            Outcome::Transport => "connection failed".into(),
            Outcome::Garbage => "unreadable answer".into(),
            Outcome::ClientError => "request refused".into(),
        }
    }
}

/// Whether a deployment gets traffic now, and if not, why and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentState {
    /// Serving.
    Healthy,
    /// Rate limited: skipped until `until`.
    CoolingDown {
        /// When the provider's `Retry-After` (or the default cooldown) ends.
        until: Instant,
    },
    /// Ejected by outlier detection until `until`.
    Ejected {
        /// When the ejection ends.
        until: Instant,
    },
    /// The canary fails: out until it passes `rise` times in a row.
    CanaryFailing,
}

impl DeploymentState {
    /// `healthy`, `cooling_down`, `ejected`, `canary_failing`.
    pub fn as_str(&self) -> &'static str {
        match self {
            DeploymentState::Healthy => "healthy",
            DeploymentState::CoolingDown { .. } => "cooling_down",
            DeploymentState::Ejected { .. } => "ejected",
            DeploymentState::CanaryFailing => "canary_failing",
        }
    }
}

/// The judgement of one canary answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The answer looks as expected.
    Pass,
    /// It does not, and why.
    Fail(String),
}

/// Judges a canary answer (or the error in its place) against `expect`. An error always
/// fails; an answer fails when its text is empty or does not meet `expect` (see [`Expect`]).
pub fn canary_verdict(answer: Result<&ChatResponse, &LlmError>, expect: &Expect) -> Verdict {
    let resp = match answer {
        Ok(r) => r,
        Err(e) => {
            let mut why = format!("error: {}", e.kind.as_str());
            if let Some(s) = e.provider_status {
                let _ = write!(why, " (HTTP {s})");
            }
            return Verdict::Fail(why);
        }
    };
    let text = resp.text();
    if text.trim().is_empty() {
        return Verdict::Fail("empty answer".into());
    }
    match expect {
        Expect::Contains(needle) => {
            if text.to_lowercase().contains(&needle.to_lowercase()) {
                Verdict::Pass
            } else {
                Verdict::Fail(format!(
                    "answer does not contain {needle:?}: {:?}",
                    excerpt(&text)
                ))
            }
        }
        Expect::Regex(re) => {
            if re.is_match(&text) {
                Verdict::Pass
            } else {
                Verdict::Fail(format!(
                    "answer does not match /{}/: {:?}",
                    re.as_str(),
                    excerpt(&text)
                ))
            }
        }
        Expect::JsonField { path, equals } => {
            let Ok(doc) = serde_json::from_str::<Value>(strip_fence(&text)) else {
                return Verdict::Fail(format!("answer is not JSON: {:?}", excerpt(&text)));
            };
            match json_at(&doc, path) {
                None => Verdict::Fail(format!("field `{path}` is missing")),
                Some(v) if json_equal(v, equals) => Verdict::Pass,
                Some(v) => Verdict::Fail(format!("field `{path}` is {v}, expected {equals}")),
            }
        }
    }
}

/// The first 80 characters of `text`, for failure reasons.
fn excerpt(text: &str) -> String {
    let mut s: String = text.chars().take(80).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

/// The text inside a Markdown code fence (```` ```json ... ``` ````), or the text trimmed.
fn strip_fence(text: &str) -> &str {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix("```") {
        if let Some(body) = rest.strip_suffix("```") {
            // Drop the info string (`json`) on the opening line.
            return body.split_once('\n').map_or(body, |(_, b)| b).trim();
        }
    }
    t
}

/// The value at a dotted path; numeric segments index arrays.
fn json_at<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// JSON equality with numbers compared by value (`1` equals `1.0`).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A change decided by [`DeploymentHealth::record`] or [`DeploymentHealth::tick`], for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthEvent {
    /// Ejected until `until`; `count` is its ejection count including this one.
    Ejected {
        /// The deployment.
        deployment: DeploymentId,
        /// When it returns.
        until: Instant,
        /// Its ejection count.
        count: u32,
        /// Whether the run was of transport failures (else of failures of any kind).
        gateway: bool,
    },
    /// Its ejection ended.
    Returned {
        /// The deployment.
        deployment: DeploymentId,
    },
    /// The canary started failing (`failing`) or passed again.
    Canary {
        /// The deployment.
        deployment: DeploymentId,
        /// Whether it now fails.
        failing: bool,
    },
}

/// Counts of each outcome since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutcomeCounts {
    /// Successful attempts.
    pub success: u64,
    /// 429s.
    pub rate_limited: u64,
    /// 5xx and deployment faults.
    pub server_error: u64,
    /// Timeouts.
    pub timeout: u64,
    /// Connect failures and resets.
    pub transport: u64,
    /// Unreadable answers and broken streams.
    pub garbage: u64,
    /// Requests the deployment refused as faulty.
    pub client_error: u64,
}

/// A plain exponentially weighted moving average.
#[derive(Debug, Clone, Copy, Default)]
struct Ewma(Option<f64>);

impl Ewma {
    fn observe(&mut self, sample: f64, weight: f64) {
        self.0 = Some(match self.0 {
            None => sample,
            Some(v) => v + weight * (sample - v),
        });
    }
}

#[derive(Debug, Clone)]
struct LastFailure {
    at: Instant,
    what: String,
}

#[derive(Debug, Clone)]
struct Canary {
    policy: ProbePolicy,
    state: ProbeState,
}

#[derive(Debug, Clone)]
struct DepHealth {
    model: usize,
    index: usize,
    cooling_until: Option<Instant>,
    last_failure: Option<LastFailure>,
    ttft: Ewma,
    tps: Ewma,
    counts: OutcomeCounts,
    canary: Option<Canary>,
}

#[derive(Debug, Clone)]
struct ModelHealth {
    detector: OutlierDetector,
    windows: Vec<EndpointWindow>,
    members: Vec<DeploymentId>,
}

/// Health of every deployment of a [`Catalogue`]. One instance for the whole gateway: feed it
/// every attempt's outcome (the router does, in [`crate::router::Router::finish`]) and every
/// canary verdict.
#[derive(Debug, Clone)]
pub struct DeploymentHealth {
    policy: HealthPolicy,
    models: Vec<ModelHealth>,
    deps: Vec<DepHealth>,
    rng: fastrand::Rng,
}

impl DeploymentHealth {
    /// Every deployment of `catalogue` healthy at `now`, with `catalogue.health` as policy.
    /// Canaries start passing, their first check spread over one interval; `seed` drives that
    /// spread.
    pub fn new(catalogue: &Catalogue, seed: u64, now: Instant) -> DeploymentHealth {
        let policy = catalogue.health.clone();
        let mut rng = fastrand::Rng::with_seed(seed);
        let models = catalogue
            .models()
            .iter()
            .map(|m| ModelHealth {
                detector: OutlierDetector::new(m.deployments.len()),
                windows: vec![EndpointWindow::default(); m.deployments.len()],
                members: m.deployments.clone(),
            })
            .collect();
        let deps = catalogue
            .deployments()
            .iter()
            .map(|d| DepHealth {
                model: d.model.0,
                index: d.index,
                cooling_until: None,
                last_failure: None,
                ttft: Ewma::default(),
                tps: Ewma::default(),
                counts: OutcomeCounts::default(),
                canary: d.canary.as_ref().map(|c| {
                    let policy = ProbePolicy {
                        interval: c.interval,
                        unhealthy_interval: c.interval,
                        jitter: Duration::ZERO,
                        timeout: c.timeout,
                        rise: c.rise,
                        fall: c.fall,
                    };
                    let state = ProbeState::new(ProbeHealth::Healthy, now, &policy, &mut rng);
                    Canary { policy, state }
                }),
            })
            .collect();
        DeploymentHealth {
            policy,
            models,
            deps,
            rng,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &HealthPolicy {
        &self.policy
    }

    /// Records one attempt's outcome at `now` and runs outlier detection for its model;
    /// returns the ejections and returns this caused.
    pub fn record(
        &mut self,
        dep: DeploymentId,
        outcome: &Outcome,
        now: Instant,
    ) -> Vec<HealthEvent> {
        let weight = self.policy.ewma_weight;
        let cooldown = self.policy.rate_limit_cooldown;
        let Some(d) = self.deps.get_mut(dep.0) else {
            return Vec::new();
        };
        let w = &mut self.models[d.model].windows[d.index];
        let fail = |d: &mut DepHealth, what: String| {
            d.last_failure = Some(LastFailure { at: now, what });
        };
        match *outcome {
            Outcome::Success {
                ttft,
                tokens_per_second,
            } => {
                d.counts.success += 1;
                d.ttft.observe(ttft.as_secs_f64(), weight);
                if let Some(tps) = tokens_per_second.filter(|t| t.is_finite() && *t >= 0.0) {
                    d.tps.observe(tps, weight);
                }
                w.requests += 1;
                w.successes += 1;
                w.latency_total += ttft;
                w.consecutive_5xx = 0;
                w.consecutive_gateway_failures = 0;
            }
            Outcome::ClientError => {
                d.counts.client_error += 1;
                w.requests += 1;
                w.successes += 1;
                w.consecutive_5xx = 0;
                w.consecutive_gateway_failures = 0;
            }
            Outcome::RateLimited { retry_after } => {
                d.counts.rate_limited += 1;
                let until = now + retry_after.unwrap_or(cooldown);
                d.cooling_until = Some(d.cooling_until.map_or(until, |u| u.max(until)));
                fail(d, outcome.describe());
            }
            Outcome::ServerError { .. } => {
                d.counts.server_error += 1;
                w.requests += 1;
                w.errors_5xx += 1;
                w.consecutive_5xx += 1;
                w.consecutive_gateway_failures = 0;
                fail(d, outcome.describe());
            }
            Outcome::Timeout | Outcome::Transport | Outcome::Garbage => {
                match outcome {
                    Outcome::Timeout => d.counts.timeout += 1,
                    Outcome::Transport => d.counts.transport += 1,
                    _ => d.counts.garbage += 1,
                }
                w.requests += 1;
                w.gateway_failures += 1;
                w.consecutive_5xx += 1;
                w.consecutive_gateway_failures += 1;
                fail(d, outcome.describe());
            }
        }
        let model = d.model;
        self.update_model(model, now)
    }

    /// Runs outlier detection of every model at `now` (returns and count decay happen here
    /// too); call it periodically (every second or so) so that status pages and events are
    /// current even without traffic. Routing does not depend on it: an ejection that has
    /// ended stops counting at once.
    pub fn tick(&mut self, now: Instant) -> Vec<HealthEvent> {
        (0..self.models.len())
            .flat_map(|m| self.update_model(m, now))
            .collect()
    }

    fn update_model(&mut self, model: usize, now: Instant) -> Vec<HealthEvent> {
        let m = &mut self.models[model];
        let report: OutlierReport = m.detector.update(
            &m.windows,
            now,
            &self.policy.outlier_policy(),
            &mut self.rng,
        );
        if report.window_closed {
            for w in &mut m.windows {
                *w = EndpointWindow {
                    consecutive_5xx: w.consecutive_5xx,
                    consecutive_gateway_failures: w.consecutive_gateway_failures,
                    ..EndpointWindow::default()
                };
            }
        }
        let mut events = Vec::new();
        for i in report.returned {
            events.push(HealthEvent::Returned {
                deployment: m.members[i],
            });
        }
        for e in report.ejected {
            events.push(HealthEvent::Ejected {
                deployment: m.members[e.endpoint],
                until: e.until,
                count: e.count,
                gateway: e.reason == EjectReason::ConsecutiveGatewayFailure,
            });
        }
        events
    }

    /// The state of `dep` at `now` (an ejection or cooldown that has ended no longer counts,
    /// whether or not anything was recorded since). Out of range: `Healthy`.
    pub fn state(&self, dep: DeploymentId, now: Instant) -> DeploymentState {
        let Some(d) = self.deps.get(dep.0) else {
            return DeploymentState::Healthy;
        };
        let detector = &self.models[d.model].detector;
        if detector.is_ejected(d.index, now) {
            if let Some(until) = detector.ejected_until(d.index) {
                return DeploymentState::Ejected { until };
            }
        }
        if d.canary
            .as_ref()
            .is_some_and(|c| c.state.health() == ProbeHealth::Unhealthy)
        {
            return DeploymentState::CanaryFailing;
        }
        match d.cooling_until {
            Some(until) if until > now => DeploymentState::CoolingDown { until },
            _ => DeploymentState::Healthy,
        }
    }

    /// Whether `dep` is ejected or failing its canary at `now` (cooling down is not
    /// excluded: it is waited for or skipped by the failover plan).
    pub fn is_excluded(&self, dep: DeploymentId, now: Instant) -> bool {
        matches!(
            self.state(dep, now),
            DeploymentState::Ejected { .. } | DeploymentState::CanaryFailing
        )
    }

    /// How long `dep` still cools down at `now` (zero when it does not).
    pub fn cooldown_left(&self, dep: DeploymentId, now: Instant) -> Duration {
        self.deps
            .get(dep.0)
            .and_then(|d| d.cooling_until)
            .map_or(Duration::ZERO, |u| u.saturating_duration_since(now))
    }

    /// The deployments whose canary should be sent at `now` (none is in flight and its time
    /// has come). Call [`DeploymentHealth::canary_started`] when sending one.
    pub fn canaries_due(&self, now: Instant) -> Vec<DeploymentId> {
        self.deps
            .iter()
            .enumerate()
            .filter(|(_, d)| d.canary.as_ref().is_some_and(|c| c.state.due(now)))
            .map(|(i, _)| DeploymentId(i))
            .collect()
    }

    /// When the next canary is due (for the health thread's timer); `None` without canaries
    /// or while every canary is in flight.
    pub fn next_canary_due(&self) -> Option<Instant> {
        self.deps
            .iter()
            .filter_map(|d| d.canary.as_ref())
            .filter(|c| c.state.in_flight().is_none())
            .map(|c| c.state.next_due())
            .min()
    }

    /// A canary was sent to `dep` at `now`.
    pub fn canary_started(&mut self, dep: DeploymentId, now: Instant) {
        if let Some(c) = self.deps.get_mut(dep.0).and_then(|d| d.canary.as_mut()) {
            c.state.begin(now);
        }
    }

    /// Records a canary verdict for `dep` at `now`: `fall` failures in a row take it out,
    /// `rise` passes in a row bring it back. Returns the change, if any.
    pub fn record_canary(
        &mut self,
        dep: DeploymentId,
        verdict: &Verdict,
        now: Instant,
    ) -> Option<HealthEvent> {
        let d = self.deps.get_mut(dep.0)?;
        let c = d.canary.as_mut()?;
        let (ok, detail) = match verdict {
            Verdict::Pass => (true, "pass".to_owned()),
            Verdict::Fail(why) => (false, why.clone()),
        };
        if !ok {
            d.last_failure = Some(LastFailure {
                at: now,
                what: format!("canary: {detail}"),
            });
        }
        let t = c.state.record(ok, detail, now, &c.policy, &mut self.rng)?;
        Some(HealthEvent::Canary {
            deployment: dep,
            failing: t.to == ProbeHealth::Unhealthy,
        })
    }

    /// The EWMA of time to first token of `dep` (`None` before its first success).
    pub fn ttft(&self, dep: DeploymentId) -> Option<Duration> {
        let v = self.deps.get(dep.0)?.ttft.0?;
        Some(Duration::from_secs_f64(v.max(0.0)))
    }

    /// The EWMA of output tokens per second of `dep`.
    pub fn tokens_per_second(&self, dep: DeploymentId) -> Option<f64> {
        self.deps.get(dep.0)?.tps.0
    }

    /// The outcome counts of `dep`.
    pub fn counts(&self, dep: DeploymentId) -> OutcomeCounts {
        self.deps.get(dep.0).map(|d| d.counts).unwrap_or_default()
    }

    /// Every deployment's state and figures at `now`, in [`DeploymentId`] order.
    pub fn snapshot(&self, catalogue: &Catalogue, now: Instant) -> Vec<DeploymentSnapshot> {
        catalogue
            .deployments()
            .iter()
            .zip(&self.deps)
            .map(|(spec, d)| {
                let state = self.state(spec.id, now);
                let until_ms = match state {
                    DeploymentState::CoolingDown { until } | DeploymentState::Ejected { until } => {
                        Some(millis(until.saturating_duration_since(now)))
                    }
                    _ => None,
                };
                let detector = &self.models[d.model].detector;
                DeploymentSnapshot {
                    model: catalogue.model(spec.model).name.clone(),
                    deployment: spec.name.clone(),
                    provider: spec.provider().as_str(),
                    state: state.as_str(),
                    until_ms,
                    ejection_count: detector.ejection_count(d.index),
                    last_failure: d.last_failure.as_ref().map(|f| FailureSnapshot {
                        ago_ms: millis(now.saturating_duration_since(f.at)),
                        what: f.what.clone(),
                    }),
                    ttft_ms: d.ttft.0.map(|s| (s * 1e6).round() / 1e3),
                    tokens_per_second: d.tps.0.map(|t| (t * 1e3).round() / 1e3),
                    canary: d.canary.as_ref().map(|c| CanarySnapshot {
                        passing: c.state.health() != ProbeHealth::Unhealthy,
                        consecutive_failures: c.state.consecutive_fail(),
                        last: c.state.last().map(|r| r.detail.clone()),
                    }),
                    counts: d.counts,
                }
            })
            .collect()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One deployment's health at one instant, for `/status` (serialises to JSON) and
/// `/metrics` ([`render_health_prometheus`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentSnapshot {
    /// The model alias.
    pub model: String,
    /// The deployment's name.
    pub deployment: String,
    /// The provider kind.
    pub provider: &'static str,
    /// [`DeploymentState::as_str`].
    pub state: &'static str,
    /// Milliseconds until a cooldown or ejection ends.
    pub until_ms: Option<u64>,
    /// The outlier detector's ejection count (decays while serving).
    pub ejection_count: u32,
    /// The last failure, canary failures included.
    pub last_failure: Option<FailureSnapshot>,
    /// EWMA of the time to first token, in milliseconds.
    pub ttft_ms: Option<f64>,
    /// EWMA of the output tokens per second.
    pub tokens_per_second: Option<f64>,
    /// The canary, when configured.
    pub canary: Option<CanarySnapshot>,
    /// Outcome counts since start.
    pub counts: OutcomeCounts,
}

/// The last failure of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureSnapshot {
    /// How long ago, in milliseconds.
    pub ago_ms: u64,
    /// What it was.
    pub what: String,
}

/// A deployment's canary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CanarySnapshot {
    /// Whether it counts as passing.
    pub passing: bool,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// The last verdict's detail (`pass` or the failure reason).
    pub last: Option<String>,
}

/// Appends the snapshot as Prometheus text: `headwater_llm_deployment_state{model,deployment,
/// state}` (1 for the current state, 0 for the others), `headwater_llm_deployment_ttft_seconds`
/// and `headwater_llm_deployment_tokens_per_second` (EWMAs, when known), and
/// `headwater_llm_deployment_outcomes_total{...,outcome}`.
pub fn render_health_prometheus(snapshots: &[DeploymentSnapshot], out: &mut String) {
    const STATES: [&str; 4] = ["healthy", "cooling_down", "ejected", "canary_failing"];
    let labels = |out: &mut String, s: &DeploymentSnapshot| {
        out.push_str("{model=\"");
        crate::accounting::escape_label(out, &s.model);
        out.push_str("\",deployment=\"");
        crate::accounting::escape_label(out, &s.deployment);
        out.push('"');
    };
    crate::accounting::header(
        out,
        "llm_deployment_state",
        "gauge",
        "Deployment state: 1 for the current one.",
    );
    for s in snapshots {
        for state in STATES {
            out.push_str("headwater_llm_deployment_state");
            labels(out, s);
            let _ = writeln!(out, ",state=\"{state}\"}} {}", u8::from(s.state == state));
        }
    }
    crate::accounting::header(
        out,
        "llm_deployment_ttft_seconds",
        "gauge",
        "EWMA of the time to first token.",
    );
    for s in snapshots {
        if let Some(ms) = s.ttft_ms {
            out.push_str("headwater_llm_deployment_ttft_seconds");
            labels(out, s);
            let _ = writeln!(out, "}} {}", ms / 1e3);
        }
    }
    crate::accounting::header(
        out,
        "llm_deployment_tokens_per_second",
        "gauge",
        "EWMA of the output tokens per second.",
    );
    for s in snapshots {
        if let Some(tps) = s.tokens_per_second {
            out.push_str("headwater_llm_deployment_tokens_per_second");
            labels(out, s);
            let _ = writeln!(out, "}} {tps}");
        }
    }
    crate::accounting::header(
        out,
        "llm_deployment_outcomes_total",
        "counter",
        "Attempts by outcome.",
    );
    for s in snapshots {
        let c = &s.counts;
        for (name, n) in [
            ("success", c.success),
            ("rate_limited", c.rate_limited),
            ("server_error", c.server_error),
            ("timeout", c.timeout),
            ("transport", c.transport),
            ("garbage", c.garbage),
            ("client_error", c.client_error),
        ] {
            out.push_str("headwater_llm_deployment_outcomes_total");
            labels(out, s);
            let _ = writeln!(out, ",outcome=\"{name}\"}} {n}");
        }
    }
}
