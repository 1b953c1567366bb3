//! Requests-per-minute and tokens-per-minute limits, sans-IO: the caller passes the time.
//!
//! This module owns the limiter that both a deployment (its provider account's RPM/TPM, see
//! [`crate::router`]) and a virtual key (see [`crate::keys`]) carry. Each limit is a token
//! bucket holding at most one minute's allowance and refilled continuously at `limit / 60` per
//! second, which is how providers describe their own per-minute limits: a full minute's
//! requests may come in a burst, after which they are admitted at the steady rate.
//!
//! Tokens are not known before a request ends, so a request reserves an *estimate* up front
//! ([`RateLimiter::reserve`]) and the caller later corrects the bucket with the difference
//! ([`RateLimiter::adjust_tokens`]); a correction may leave the bucket below zero (a debt that
//! the refill pays back before anything else is admitted). A request larger than the whole
//! per-minute allowance is admitted once the bucket is full, leaving a debt: refusing it for
//! ever would be worse.

use std::fmt;
use std::time::{Duration, Instant};

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
}

impl LimitKind {
    /// `rpm` or `tpm`, as the configuration spells them.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Requests => "rpm",
            LimitKind::Tokens => "tpm",
        }
    }
}

/// A request refused by a limit, and how long until it would be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitExceeded {
    /// The limit that refused it (the one needing the longer wait when both do).
    pub kind: LimitKind,
    /// The configured per-minute limit.
    pub limit: u64,
    /// How long until the request would be admitted.
    pub retry_in: Duration,
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} limit of {} per minute reached; retry in {:.1}s",
            self.kind.as_str(),
            self.limit,
            self.retry_in.as_secs_f64()
        )
    }
}

/// Per-minute limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute (prompt plus completion).
    pub tpm: Option<u64>,
}

/// One token bucket: `capacity` units, refilled at `capacity / 60` per second.
#[derive(Debug, Clone)]
struct Bucket {
    limit: u64,
    capacity: f64,
    per_sec: f64,
    level: f64,
    at: Option<Instant>,
}

impl Bucket {
    fn new(limit: u64) -> Bucket {
        let capacity = limit.max(1) as f64;
        Bucket {
            limit,
            capacity,
            per_sec: capacity / 60.0,
            level: capacity,
            at: None,
        }
    }

    /// The level at `now` (full when never used; time never runs back).
    fn level(&self, now: Instant) -> f64 {
        match self.at {
            None => self.capacity,
            Some(at) => {
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                (self.level + elapsed * self.per_sec).min(self.capacity)
            }
        }
    }

    fn advance(&mut self, now: Instant) {
        self.level = self.level(now);
        self.at = Some(self.at.map_or(now, |at| at.max(now)));
    }

    /// How long until `n` units are available (`n` above capacity counts as capacity).
    fn wait(&self, n: f64, now: Instant) -> Duration {
        let need = n.min(self.capacity) - self.level(now);
        if need <= 0.0 {
            Duration::ZERO
        } else {
            // Rounded up to the microsecond so that waiting exactly this long suffices.
            let micros = (need / self.per_sec * 1e6).ceil();
            Duration::from_micros(micros.min(u64::MAX as f64) as u64)
        }
    }

    fn take(&mut self, n: f64, now: Instant) {
        self.advance(now);
        self.level -= n;
    }

    fn give(&mut self, n: f64, now: Instant) {
        self.advance(now);
        self.level = (self.level + n).min(self.capacity);
    }
}

/// RPM and TPM buckets of one deployment or one key.
#[derive(Debug, Clone, Default)]
pub struct RateLimiter {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

impl RateLimiter {
    /// A limiter enforcing `limits`, both buckets full.
    pub fn new(limits: Limits) -> RateLimiter {
        RateLimiter {
            requests: limits.rpm.map(Bucket::new),
            tokens: limits.tpm.map(Bucket::new),
        }
    }

    /// The limits enforced.
    pub fn limits(&self) -> Limits {
        Limits {
            rpm: self.requests.as_ref().map(|b| b.limit),
            tpm: self.tokens.as_ref().map(|b| b.limit),
        }
    }

    /// Whether one request of `tokens` estimated tokens would be admitted at `now`: `Ok` or
    /// the limit that refuses it with the wait until it would not.
    pub fn check(&self, tokens: u64, now: Instant) -> Result<(), LimitExceeded> {
        let req = self.requests.as_ref().map(|b| (b, b.wait(1.0, now)));
        let tok = self
            .tokens
            .as_ref()
            .map(|b| (b, b.wait(tokens as f64, now)));
        let (kind, bucket, wait) = match (req, tok) {
            (Some((_, rw)), Some((tb, tw))) if tw > rw => (LimitKind::Tokens, tb, tw),
            (Some((rb, rw)), _) => (LimitKind::Requests, rb, rw),
            (None, Some((tb, tw))) => (LimitKind::Tokens, tb, tw),
            (None, None) => return Ok(()),
        };
        if wait.is_zero() {
            Ok(())
        } else {
            Err(LimitExceeded {
                kind,
                limit: bucket.limit,
                retry_in: wait,
            })
        }
    }

    /// How long until one request of `tokens` tokens would be admitted (zero: now).
    pub fn wait(&self, tokens: u64, now: Instant) -> Duration {
        self.check(tokens, now)
            .err()
            .map_or(Duration::ZERO, |e| e.retry_in)
    }

    /// Admits one request of `tokens` estimated tokens if it fits at `now`, or after a wait of
    /// at most `max_wait`: takes it from the buckets (going into debt by what the refill
    /// will have brought by the end of the wait) and returns the wait the caller must observe
    /// before sending. Refuses with the limit otherwise, taking nothing.
    pub fn reserve(
        &mut self,
        tokens: u64,
        now: Instant,
        max_wait: Duration,
    ) -> Result<Duration, LimitExceeded> {
        let wait = match self.check(tokens, now) {
            Ok(()) => Duration::ZERO,
            Err(e) if e.retry_in <= max_wait => e.retry_in,
            Err(e) => return Err(e),
        };
        if let Some(b) = &mut self.requests {
            b.take(1.0, now);
        }
        if let Some(b) = &mut self.tokens {
            b.take(tokens as f64, now);
        }
        Ok(wait)
    }

    /// Corrects the token bucket once the real count is known: `actual − estimated` more
    /// tokens are taken (a negative difference gives them back, up to a full bucket).
    pub fn adjust_tokens(&mut self, estimated: u64, actual: u64, now: Instant) {
        if let Some(b) = &mut self.tokens {
            if actual >= estimated {
                b.take((actual - estimated) as f64, now);
            } else {
                b.give((estimated - actual) as f64, now);
            }
        }
    }

    /// Gives back a whole reservation (a request that was never sent).
    pub fn release(&mut self, tokens: u64, now: Instant) {
        if let Some(b) = &mut self.requests {
            b.give(1.0, now);
        }
        if let Some(b) = &mut self.tokens {
            b.give(tokens as f64, now);
        }
    }

    /// Requests and tokens still available at `now` (whole units, zero when in debt), for
    /// `x-ratelimit-remaining-*` headers and status pages; `None` where unlimited.
    pub fn remaining(&self, now: Instant) -> (Option<u64>, Option<u64>) {
        let left = |b: &Bucket| b.level(now).max(0.0).floor() as u64;
        (
            self.requests.as_ref().map(left),
            self.tokens.as_ref().map(left),
        )
    }
}
