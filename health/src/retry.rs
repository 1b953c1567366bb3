//! Retry budget and backoff.
//!
//! This module owns the retry policy pieces that do not depend on the request itself: which
//! failures are retryable ([`RetryOn`], parsed from the config's names), how many retries may be in
//! flight relative to the requests in flight ([`RetryBudget`]) and the reserve that lets a short
//! burst of retries past that limit while bounding them by the request rate ([`RetryReserve`]),
//! and how long to wait before a
//! retry ([`backoff`], exponential with equal jitter). Whether a particular request may be
//! replayed (idempotency, bytes already sent) is the engine's decision. No I/O, no clock, no
//! allocation; randomness comes from a caller-supplied [`fastrand::Rng`].

use std::fmt;
use std::time::Duration;

use crate::probe_state::uniform;

/// A cap on the retries in flight, relative to the requests in flight, so that retries cannot
/// multiply the load on a struggling cluster.
///
/// Beyond it, a retry may draw on a [`RetryReserve`] that every admitted request tops up by
/// `percent` % of a retry, up to `burst` retries: when every request in flight fails at once on
/// one bad endpoint (it stalled, then reset them all), their retries go through, yet over any
/// longer stretch the retries past the concurrency cap stay within `percent` % of the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudget {
    /// Retries in flight allowed as a percentage of the requests in flight (20); also the share
    /// of a retry each request adds to the reserve.
    pub percent: u32,
    /// Retries in flight always allowed, whatever the request count (3).
    pub min_concurrent: u32,
    /// The most retries the reserve holds (0, the default: no reserve, the concurrency cap
    /// alone).
    pub burst: u32,
}

impl Default for RetryBudget {
    /// 20 % of the active requests, at least 3 concurrent retries (Envoy's defaults), no
    /// reserve.
    fn default() -> Self {
        RetryBudget {
            percent: 20,
            min_concurrent: 3,
            burst: 0,
        }
    }
}

/// The reserve of a [`RetryBudget`], in hundredths of a retry. Starts empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryReserve {
    hundredths: u64,
}

impl RetryReserve {
    /// One request was admitted: adds `percent` hundredths of a retry, up to `burst` retries.
    pub fn deposit(&mut self, budget: &RetryBudget) {
        let cap = u64::from(budget.burst) * 100;
        self.hundredths = (self.hundredths + u64::from(budget.percent)).min(cap);
    }

    /// Takes one retry from the reserve; false when it holds less than one.
    pub fn withdraw(&mut self) -> bool {
        if self.hundredths >= 100 {
            self.hundredths -= 100;
            true
        } else {
            false
        }
    }

    /// Whole retries held.
    pub fn retries(&self) -> u64 {
        self.hundredths / 100
    }
}

impl RetryBudget {
    /// How many retries may be in flight with `active_requests` requests in flight:
    /// `max(min_concurrent, floor(active_requests × percent / 100))`, saturating at `u32::MAX`.
    pub fn limit(&self, active_requests: u32) -> u32 {
        let share = u64::from(active_requests) * u64::from(self.percent) / 100;
        u32::try_from(share)
            .unwrap_or(u32::MAX)
            .max(self.min_concurrent)
    }

    /// Whether one more retry may start: `active_retries < limit(active_requests)`.
    /// `active_requests` counts the requests in flight to the cluster (retries included, as the
    /// caller counts them); `active_retries` the retries in flight before this one.
    pub fn allows(&self, active_requests: u32, active_retries: u32) -> bool {
        active_retries < self.limit(active_requests)
    }
}

/// The wait before retry number `retry` (1 for the first retry): exponential growth with equal
/// jitter.
///
/// With `d = min(max, base × 2^(retry − 1))` (computed without overflow, so any `retry` is fine),
/// the result is `d/2 + uniform[0, d − d/2]`, that is within `[d/2, d]`: at least half the
/// exponential step, so retries never hammer, and spread so that clients that failed together do
/// not retry together. `retry == 0` (the first attempt) waits [`Duration::ZERO`].
pub fn backoff(retry: u32, base: Duration, max: Duration, rng: &mut fastrand::Rng) -> Duration {
    if retry == 0 {
        return Duration::ZERO;
    }
    let d = exponential(retry - 1, base, max);
    let half = d / 2;
    half + uniform(rng, d - half)
}

/// `min(max, base × 2^exponent)` without overflow.
fn exponential(exponent: u32, base: Duration, max: Duration) -> Duration {
    if base.is_zero() || max.is_zero() {
        return Duration::ZERO;
    }
    let grown = 1u128
        .checked_shl(exponent)
        .and_then(|factor| base.as_nanos().checked_mul(factor));
    match grown {
        Some(nanos) if nanos < max.as_nanos() => {
            // Below `max`, so it fits a Duration.
            Duration::new(
                (nanos / 1_000_000_000) as u64,
                (nanos % 1_000_000_000) as u32,
            )
        }
        _ => max,
    }
}

/// Which failures are retryable: a set of the config names `connect-failure`, `reset`, `timeout`,
/// `502`, `503`, `504`, `5xx` (every 500–599) and `gateway-error` (502, 503 and 504).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetryOn {
    bits: u8,
}

const CONNECT_FAILURE: u8 = 1 << 0;
const RESET: u8 = 1 << 1;
const TIMEOUT: u8 = 1 << 2;
const S502: u8 = 1 << 3;
const S503: u8 = 1 << 4;
const S504: u8 = 1 << 5;
const S5XX: u8 = 1 << 6;

/// Config names and their bits, in display order.
const NAMES: [(&str, u8); 8] = [
    ("connect-failure", CONNECT_FAILURE),
    ("reset", RESET),
    ("timeout", TIMEOUT),
    ("5xx", S5XX),
    ("gateway-error", S502 | S503 | S504),
    ("502", S502),
    ("503", S503),
    ("504", S504),
];

impl Default for RetryOn {
    /// `connect-failure`, `reset`, `502`, `503`, `504`.
    fn default() -> Self {
        RetryOn {
            bits: CONNECT_FAILURE | RESET | S502 | S503 | S504,
        }
    }
}

impl RetryOn {
    /// The empty set: nothing is retryable (the engine still retries connect failures).
    pub const NONE: RetryOn = RetryOn { bits: 0 };

    /// Parses config names (exact, lowercase; duplicates allowed; an empty list is the empty set).
    /// The error names the first unknown entry and lists the valid names.
    pub fn parse(names: &[&str]) -> Result<RetryOn, String> {
        let mut bits = 0;
        for name in names {
            match NAMES.iter().find(|(n, _)| n == name) {
                Some((_, b)) => bits |= b,
                None => {
                    let valid: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
                    return Err(format!(
                        "unknown retry condition {name:?} (expected one of: {})",
                        valid.join(", ")
                    ));
                }
            }
        }
        Ok(RetryOn { bits })
    }

    /// Whether an answer with `status` is retryable.
    pub fn matches_status(&self, status: u16) -> bool {
        let bit = match status {
            502 => S502,
            503 => S503,
            504 => S504,
            _ => 0,
        };
        self.bits & bit != 0 || (self.bits & S5XX != 0 && (500..=599).contains(&status))
    }

    /// Whether a connection reset (or close) before a full response head is retryable.
    pub fn matches_reset(&self) -> bool {
        self.bits & RESET != 0
    }

    /// Whether a response-header timeout is retryable.
    pub fn matches_timeout(&self) -> bool {
        self.bits & TIMEOUT != 0
    }

    /// Whether a connect failure is retryable. The engine retries connect failures regardless
    /// (nothing was sent); the flag is kept for reporting and for callers that want it.
    pub fn matches_connect_failure(&self) -> bool {
        self.bits & CONNECT_FAILURE != 0
    }

    /// Whether nothing is retryable.
    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }
}

impl fmt::Display for RetryOn {
    /// The set as comma-separated config names, using `5xx` and `gateway-error` where they apply
    /// (e.g. `connect-failure,reset,gateway-error`); the empty set prints as nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut left = self.bits;
        let mut first = true;
        for (name, bits) in NAMES {
            if left & bits == bits && left & bits != 0 {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
                left &= !bits;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RetryOn({self})")
    }
}
