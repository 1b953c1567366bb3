//! Passive outlier detection.
//!
//! This module owns the decision to eject an endpoint from load balancing because of how its real
//! traffic went, and when to bring it back. It works on counters that the caller (the health
//! thread) has already aggregated from every shard ([`EndpointWindow`]), so a decision is global:
//! a dead server does not keep getting traffic from the shards that did not see it fail. It does
//! no I/O and reads no clock; time is an argument and the ejection jitter comes from a
//! caller-supplied [`fastrand::Rng`].
//!
//! # Detection
//!
//! - **Consecutive 5xx / consecutive gateway failures**, checked on every
//!   [`update`](OutlierDetector::update): the run of 5xx answers (or of gateway failures: connect
//!   errors, resets, timeouts) reached the threshold.
//! - **Success rate**, every [`OutlierPolicy::interval`]: among endpoints with at least
//!   `request_volume` requests in the window, if there are at least `min_hosts` of them, eject
//!   those whose success rate (`successes / requests`) is below `mean − stdev_factor × stdev`
//!   (population standard deviation).
//! - **Latency**, every `interval`: among endpoints with at least `request_volume` responses in
//!   the window (`requests − gateway_failures`), if there are at least `min_hosts` of them, eject
//!   those whose mean latency (`latency_total / responses`) is above
//!   `max(min_latency, factor × median)`, the median being over those endpoints' means.
//!
//! # Ejection
//!
//! - Each ejection increments the endpoint's ejection count `c`; the endpoint is ejected for
//!   `min(base_ejection × c, max_ejection) + uniform[0, jitter]`.
//! - The count decays: for every full `interval` the endpoint spends not ejected, measured from the
//!   end of its last ejection (the `until` instant, not the tick that noticed it), the count drops
//!   by one, down to zero. Decay is applied by `update`.
//! - At most [`OutlierPolicy::max_ejected`] endpoints are ejected at once: `floor(endpoints ×
//!   max_ejection_percent / 100)`, but at least one when the percentage is non-zero and the
//!   cluster has two endpoints or more (as Envoy always allows one ejection). A single-endpoint
//!   cluster ejects its endpoint only at 100 %: ejecting the only endpoint takes no traffic off it
//!   that could go anywhere else. Candidates beyond the cap are not ejected now and are
//!   reconsidered at later calls (a consecutive run still present, or the next window).
//! - Consecutive counts are treated as reset by an ejection. The caller's aggregated
//!   `consecutive_*` counts may still show the old run when the endpoint returns (it got no
//!   traffic while ejected), so at every ejection the detector remembers both counts as a
//!   baseline and afterwards compares `count − baseline` with the threshold: the run has to grow
//!   by the full threshold again. When the caller's count falls below the baseline (a success
//!   broke the run), the baseline becomes 0. A run that broke and regrew past the baseline
//!   between two calls is seen short by the baseline, which only delays a re-ejection.

use std::time::{Duration, Instant};

use crate::probe_state::uniform;

/// Success-rate detection settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SuccessRatePolicy {
    /// Minimum number of endpoints with enough requests for the statistics to be used (5).
    pub min_hosts: u32,
    /// Minimum requests in the window for an endpoint to take part (100; 0 behaves as 1).
    pub request_volume: u64,
    /// How many standard deviations below the mean success rate ejects (1.9).
    pub stdev_factor: f64,
}

impl Default for SuccessRatePolicy {
    /// `min_hosts` 5, `request_volume` 100, `stdev_factor` 1.9 (Envoy's defaults).
    fn default() -> Self {
        SuccessRatePolicy {
            min_hosts: 5,
            request_volume: 100,
            stdev_factor: 1.9,
        }
    }
}

/// Latency detection settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyPolicy {
    /// Eject endpoints whose mean latency exceeds this multiple of the median mean (3.0).
    pub factor: f64,
    /// Never eject for a mean latency at or below this (50 ms).
    pub min_latency: Duration,
    /// Minimum responses in the window for an endpoint to take part (20; 0 behaves as 1).
    pub request_volume: u64,
    /// Minimum number of endpoints with enough responses for the statistics to be used (3).
    pub min_hosts: u32,
}

impl Default for LatencyPolicy {
    /// `factor` 3.0, `min_latency` 50 ms, `request_volume` 20, `min_hosts` 3.
    fn default() -> Self {
        LatencyPolicy {
            factor: 3.0,
            min_latency: Duration::from_millis(50),
            request_volume: 20,
            min_hosts: 3,
        }
    }
}

/// Outlier detection settings of one cluster. Validation is the config's job; thresholds of 0
/// behave as 1.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierPolicy {
    /// Consecutive 5xx answers that eject (`Some(5)`); `None` disables.
    pub consecutive_5xx: Option<u32>,
    /// Consecutive gateway failures that eject (`Some(5)`); `None` disables.
    pub consecutive_gateway_failures: Option<u32>,
    /// Success-rate detection (on by default); `None` disables.
    pub success_rate: Option<SuccessRatePolicy>,
    /// Latency detection (off by default).
    pub latency: Option<LatencyPolicy>,
    /// How often success rate and latency are evaluated, and the unit of ejection-count decay
    /// (10 s).
    pub interval: Duration,
    /// Ejection time for the first ejection; multiplied by the ejection count (30 s).
    pub base_ejection: Duration,
    /// Cap on the ejection time before jitter (300 s).
    pub max_ejection: Duration,
    /// Upper bound of the uniform random time added to each ejection (0).
    pub jitter: Duration,
    /// Share of the cluster's endpoints that may be ejected at once, in percent (10); see
    /// [`max_ejected`](Self::max_ejected).
    pub max_ejection_percent: u8,
}

impl Default for OutlierPolicy {
    /// Consecutive 5xx 5, consecutive gateway failures 5, success rate on with its defaults,
    /// latency off, interval 10 s, base ejection 30 s, max ejection 300 s, no jitter, at most
    /// 10 % ejected.
    fn default() -> Self {
        OutlierPolicy {
            consecutive_5xx: Some(5),
            consecutive_gateway_failures: Some(5),
            success_rate: Some(SuccessRatePolicy::default()),
            latency: None,
            interval: Duration::from_secs(10),
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            jitter: Duration::ZERO,
            max_ejection_percent: 10,
        }
    }
}

impl OutlierPolicy {
    /// How many of a cluster's `endpoints` may be ejected at once:
    /// `floor(endpoints × max_ejection_percent / 100)` (percentages above 100 count as 100), raised
    /// to 1 when the percentage is non-zero and there are at least two endpoints.
    pub fn max_ejected(&self, endpoints: usize) -> usize {
        let percent = usize::from(self.max_ejection_percent.min(100));
        let floor = endpoints.saturating_mul(percent) / 100;
        if percent > 0 && endpoints >= 2 {
            floor.max(1)
        } else {
            floor
        }
    }

    /// The ejection time before jitter for an ejection that brings the count to `count`:
    /// `min(base_ejection × count, max_ejection)`.
    pub fn ejection_time(&self, count: u32) -> Duration {
        self.base_ejection
            .saturating_mul(count)
            .min(self.max_ejection)
    }
}

/// Counters of one endpoint, aggregated by the caller over every shard.
///
/// `requests`, `successes`, `errors_5xx`, `gateway_failures` and `latency_total` cover the window
/// since the last evaluation (the caller resets them when an update reports
/// [`window_closed`](OutlierReport::window_closed)); the `consecutive_*` fields are the current
/// runs and are never reset by the caller because of a window.
///
/// The intended accounting: every attempt is one request; an attempt is either a success (a
/// response that is not 5xx), a 5xx response, or a gateway failure (no response); responses are
/// `requests − gateway_failures`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointWindow {
    /// Attempts in the window.
    pub requests: u64,
    /// Attempts in the window that got a non-5xx response.
    pub successes: u64,
    /// Attempts in the window answered with a 5xx.
    pub errors_5xx: u64,
    /// Attempts in the window that got no response (connect failure, reset, timeout, garbage).
    pub gateway_failures: u64,
    /// Sum of the latencies of the window's attempts that got a response.
    pub latency_total: Duration,
    /// Current run of consecutive 5xx answers.
    pub consecutive_5xx: u64,
    /// Current run of consecutive gateway failures.
    pub consecutive_gateway_failures: u64,
}

/// Why an endpoint was ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EjectReason {
    /// The run of consecutive 5xx answers reached the threshold.
    Consecutive5xx,
    /// The run of consecutive gateway failures reached the threshold.
    ConsecutiveGatewayFailure,
    /// The success rate was an outlier in the last window.
    SuccessRate,
    /// The mean latency was an outlier in the last window.
    Latency,
}

/// One ejection decided by [`OutlierDetector::update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// Index of the endpoint in the cluster.
    pub endpoint: usize,
    /// Why.
    pub reason: EjectReason,
    /// When the endpoint returns.
    pub until: Instant,
    /// The endpoint's ejection count including this ejection.
    pub count: u32,
}

/// What one [`OutlierDetector::update`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutlierReport {
    /// Endpoints ejected by this call, in the order decided (consecutive checks by endpoint index,
    /// then success-rate outliers from the lowest rate, then latency outliers from the highest
    /// mean).
    pub ejected: Vec<Ejection>,
    /// Endpoints whose ejection ended (`until <= now`) and that were returned by this call, by
    /// index.
    pub returned: Vec<usize>,
    /// `true` when this call evaluated success rate and latency over the windows passed: the
    /// caller must then reset every window counter (`requests`, `successes`, `errors_5xx`,
    /// `gateway_failures`, `latency_total`, but not the `consecutive_*` runs) before the next call.
    pub window_closed: bool,
}

/// Per-endpoint detector state.
#[derive(Debug, Clone, Default)]
struct EndpointState {
    ejected_until: Option<Instant>,
    count: u32,
    last_reason: Option<EjectReason>,
    /// While not ejected with `count > 0`: the instant from which the next decay step is
    /// measured.
    decay_from: Option<Instant>,
    /// Consecutive-5xx count at the last ejection (see the module docs).
    base_5xx: u64,
    /// Consecutive-gateway-failure count at the last ejection.
    base_gateway: u64,
}

/// Outlier detection state of one cluster.
#[derive(Debug, Clone, Default)]
pub struct OutlierDetector {
    endpoints: Vec<EndpointState>,
    window_start: Option<Instant>,
}

impl OutlierDetector {
    /// A detector for a cluster of `endpoints` endpoints, none ejected. The first window opens at
    /// the first [`update`](Self::update).
    pub fn new(endpoints: usize) -> OutlierDetector {
        OutlierDetector {
            endpoints: vec![EndpointState::default(); endpoints],
            window_start: None,
        }
    }

    /// Number of endpoints tracked.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether the cluster has no endpoints.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// When the current window opened (`None` before the first update): success rate and latency
    /// are next evaluated at the first update at or after `window_start + interval`.
    pub fn window_start(&self) -> Option<Instant> {
        self.window_start
    }

    /// Advances the detector to `now`. Call it on every health tick.
    ///
    /// `windows[i]` holds endpoint `i`'s counters aggregated over every shard; endpoints without a
    /// window (when `windows` is shorter than [`len`](Self::len)) count as having an empty one,
    /// and extra windows are ignored.
    ///
    /// In order, the call:
    /// 1. returns the endpoints whose ejection has ended (`until <= now`) and lists them in
    ///    [`OutlierReport::returned`];
    /// 2. decays ejection counts (one per full `interval` spent not ejected);
    /// 3. checks the consecutive-5xx and consecutive-gateway-failure runs of every endpoint that is
    ///    not ejected (relative to the baseline remembered at its last ejection);
    /// 4. when `interval` has elapsed since the window opened (the first call only opens it),
    ///    evaluates success rate and latency over the windows, sets
    ///    [`window_closed`](OutlierReport::window_closed) and opens a new window at `now`. The
    ///    statistics use every endpoint with enough volume, ejected or not; only endpoints that
    ///    are not ejected are ejected.
    ///
    /// All ejections respect [`OutlierPolicy::max_ejected`].
    pub fn update(
        &mut self,
        windows: &[EndpointWindow],
        now: Instant,
        policy: &OutlierPolicy,
        rng: &mut fastrand::Rng,
    ) -> OutlierReport {
        let mut report = OutlierReport::default();
        let empty = EndpointWindow::default();
        let window = |i: usize| windows.get(i).unwrap_or(&empty);

        // 1. Returns.
        for (i, ep) in self.endpoints.iter_mut().enumerate() {
            if let Some(until) = ep.ejected_until {
                if until <= now {
                    ep.ejected_until = None;
                    ep.decay_from = (ep.count > 0).then_some(until);
                    report.returned.push(i);
                }
            }
        }

        // 2. Decay, and 3a. baselines of runs that broke.
        for (i, ep) in self.endpoints.iter_mut().enumerate() {
            if ep.ejected_until.is_none() {
                decay(ep, now, policy.interval);
            }
            let w = window(i);
            if w.consecutive_5xx < ep.base_5xx {
                ep.base_5xx = 0;
            }
            if w.consecutive_gateway_failures < ep.base_gateway {
                ep.base_gateway = 0;
            }
        }

        let cap = policy.max_ejected(self.endpoints.len());
        let mut ejected_now = self.ejected_count();

        // 3b. Consecutive runs.
        for i in 0..self.endpoints.len() {
            if ejected_now >= cap {
                break;
            }
            let ep = &self.endpoints[i];
            if ep.ejected_until.is_some() {
                continue;
            }
            let w = window(i);
            let over = |threshold: Option<u32>, count: u64, base: u64| {
                threshold.is_some_and(|t| count.saturating_sub(base) >= u64::from(t.max(1)))
            };
            let reason = if over(policy.consecutive_5xx, w.consecutive_5xx, ep.base_5xx) {
                Some(EjectReason::Consecutive5xx)
            } else if over(
                policy.consecutive_gateway_failures,
                w.consecutive_gateway_failures,
                ep.base_gateway,
            ) {
                Some(EjectReason::ConsecutiveGatewayFailure)
            } else {
                None
            };
            if let Some(reason) = reason {
                let e = self.eject(i, reason, w, now, policy, rng);
                report.ejected.push(e);
                ejected_now += 1;
            }
        }

        // 4. Success rate and latency, once per interval.
        let Some(start) = self.window_start else {
            self.window_start = Some(now);
            return report;
        };
        if now.saturating_duration_since(start) < policy.interval {
            return report;
        }
        report.window_closed = true;
        self.window_start = Some(now);
        let n = self.endpoints.len().min(windows.len());

        let mut candidates: Vec<(usize, f64, EjectReason)> = Vec::new();
        if let Some(sr) = &policy.success_rate {
            let volume = sr.request_volume.max(1);
            let rates: Vec<(usize, f64)> = (0..n)
                .filter(|&i| windows[i].requests >= volume)
                .map(|i| {
                    let w = &windows[i];
                    (i, w.successes.min(w.requests) as f64 / w.requests as f64)
                })
                .collect();
            if !rates.is_empty() && rates.len() >= sr.min_hosts as usize {
                let count = rates.len() as f64;
                let mean = rates.iter().map(|r| r.1).sum::<f64>() / count;
                let variance = rates.iter().map(|r| (r.1 - mean).powi(2)).sum::<f64>() / count;
                let threshold = mean - sr.stdev_factor * variance.sqrt();
                let mut outliers: Vec<(usize, f64)> = rates
                    .into_iter()
                    .filter(|&(i, rate)| {
                        rate < threshold && self.endpoints[i].ejected_until.is_none()
                    })
                    .collect();
                outliers.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
                candidates.extend(
                    outliers
                        .into_iter()
                        .map(|(i, r)| (i, r, EjectReason::SuccessRate)),
                );
            }
        }
        if let Some(lat) = &policy.latency {
            let volume = lat.request_volume.max(1);
            let means: Vec<(usize, f64)> = (0..n)
                .filter_map(|i| {
                    let w = &windows[i];
                    let responses = w.requests.saturating_sub(w.gateway_failures);
                    (responses >= volume)
                        .then(|| (i, w.latency_total.as_nanos() as f64 / responses as f64))
                })
                .collect();
            if !means.is_empty() && means.len() >= lat.min_hosts as usize {
                let mut sorted: Vec<f64> = means.iter().map(|m| m.1).collect();
                sorted.sort_by(f64::total_cmp);
                let mid = sorted.len() / 2;
                let median = if sorted.len() % 2 == 1 {
                    sorted[mid]
                } else {
                    (sorted[mid - 1] + sorted[mid]) / 2.0
                };
                let threshold = (lat.factor * median).max(lat.min_latency.as_nanos() as f64);
                let mut outliers: Vec<(usize, f64)> = means
                    .into_iter()
                    .filter(|&(i, mean)| {
                        mean > threshold
                            && self.endpoints[i].ejected_until.is_none()
                            && !candidates.iter().any(|c| c.0 == i)
                    })
                    .collect();
                outliers.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                candidates.extend(
                    outliers
                        .into_iter()
                        .map(|(i, m)| (i, m, EjectReason::Latency)),
                );
            }
        }
        for (i, _, reason) in candidates {
            if ejected_now >= cap {
                break;
            }
            let e = self.eject(i, reason, &windows[i], now, policy, rng);
            report.ejected.push(e);
            ejected_now += 1;
        }
        report
    }

    fn eject(
        &mut self,
        i: usize,
        reason: EjectReason,
        w: &EndpointWindow,
        now: Instant,
        policy: &OutlierPolicy,
        rng: &mut fastrand::Rng,
    ) -> Ejection {
        let ep = &mut self.endpoints[i];
        ep.count = ep.count.saturating_add(1);
        let until = now + policy.ejection_time(ep.count) + uniform(rng, policy.jitter);
        ep.ejected_until = Some(until);
        ep.last_reason = Some(reason);
        ep.decay_from = None;
        ep.base_5xx = w.consecutive_5xx;
        ep.base_gateway = w.consecutive_gateway_failures;
        Ejection {
            endpoint: i,
            reason,
            until,
            count: ep.count,
        }
    }

    /// Ends endpoint `i`'s ejection at `now`, before its time: the caller has better evidence
    /// that it serves again (its active checks saw it go down and come back, so the failures
    /// that ejected it were its going down). The ejection count stays and decays from `now`;
    /// the consecutive-run baselines stay, so the old runs do not eject it again. Returns
    /// whether it was ejected.
    pub fn reinstate(&mut self, i: usize, now: Instant) -> bool {
        match self.endpoints.get_mut(i) {
            Some(ep) if ep.ejected_until.is_some_and(|until| until > now) => {
                ep.ejected_until = None;
                ep.decay_from = (ep.count > 0).then_some(now);
                true
            }
            _ => false,
        }
    }

    /// Whether endpoint `i` is ejected at `now` (its ejection has not ended by `now`, even if no
    /// update has returned it yet). `false` for an index out of range.
    pub fn is_ejected(&self, i: usize, now: Instant) -> bool {
        self.ejected_until(i).is_some_and(|until| now < until)
    }

    /// When endpoint `i`'s current ejection ends, as of the last update (`None` when not ejected
    /// or out of range).
    pub fn ejected_until(&self, i: usize) -> Option<Instant> {
        self.endpoints.get(i).and_then(|ep| ep.ejected_until)
    }

    /// Endpoint `i`'s ejection count as of the last update (0 when out of range).
    pub fn ejection_count(&self, i: usize) -> u32 {
        self.endpoints.get(i).map_or(0, |ep| ep.count)
    }

    /// Why endpoint `i` was last ejected (kept after it returns), if ever.
    pub fn last_reason(&self, i: usize) -> Option<EjectReason> {
        self.endpoints.get(i).and_then(|ep| ep.last_reason)
    }

    /// Number of endpoints ejected as of the last update.
    pub fn ejected_count(&self) -> usize {
        self.endpoints
            .iter()
            .filter(|ep| ep.ejected_until.is_some())
            .count()
    }

    /// Adapts the detector to a reloaded endpoint list of `new_len` endpoints: `map[old]` is the
    /// new index of old endpoint `old`, or `None` when it is gone. Endpoints that stay keep their
    /// whole state (ejection, count, reason, decay, baselines); new endpoints start clean. Entries
    /// pointing at or beyond `new_len`, and old indices beyond the detector's length, are
    /// ignored; when two old endpoints map to the same new one, the later wins. The window timing
    /// is kept.
    pub fn remap(&mut self, map: &[Option<usize>], new_len: usize) {
        let mut endpoints = vec![EndpointState::default(); new_len];
        for (old, new) in map.iter().enumerate() {
            if let (Some(new), Some(state)) = (*new, self.endpoints.get(old)) {
                if let Some(slot) = endpoints.get_mut(new) {
                    *slot = state.clone();
                }
            }
        }
        self.endpoints = endpoints;
    }
}

/// Decays `ep`'s ejection count by one per full `interval` since `decay_from`.
fn decay(ep: &mut EndpointState, now: Instant, interval: Duration) {
    let Some(from) = ep.decay_from else {
        return;
    };
    if ep.count == 0 {
        ep.decay_from = None;
        return;
    }
    let steps = if interval.is_zero() {
        u128::from(ep.count)
    } else {
        now.saturating_duration_since(from).as_nanos() / interval.as_nanos()
    };
    let steps = steps.min(u128::from(ep.count)) as u32;
    ep.count -= steps;
    ep.decay_from = if ep.count == 0 {
        None
    } else {
        Some(from + interval.saturating_mul(steps))
    };
}
