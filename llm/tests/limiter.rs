//! RPM/TPM token buckets with a controllable clock.

mod support;

use std::time::Duration;

use headwater_llm::limiter::{LimitKind, Limits, RateLimiter};
use support::{ms, secs, Clock};

#[test]
fn rpm_admits_a_minute_in_a_burst_then_the_steady_rate() {
    let mut clock = Clock::new();
    let mut l = RateLimiter::new(Limits {
        rpm: Some(2),
        tpm: None,
    });
    let t0 = clock.now;
    assert_eq!(l.reserve(0, t0, Duration::ZERO), Ok(Duration::ZERO));
    assert_eq!(l.reserve(0, t0, Duration::ZERO), Ok(Duration::ZERO));
    let e = l.reserve(0, t0, Duration::ZERO).unwrap_err();
    assert_eq!(e.kind, LimitKind::Requests);
    assert_eq!(e.limit, 2);
    // 2 per minute: one more every 30 s.
    assert_eq!(e.retry_in, secs(30));
    assert_eq!(
        e.to_string(),
        "rpm limit of 2 per minute reached; retry in 30.0s"
    );
    // Refused reservations take nothing.
    assert_eq!(l.wait(0, t0), secs(30));
    let t = clock.advance(secs(29));
    assert_eq!(l.wait(0, t), secs(1));
    assert!(l.check(0, t).is_err());
    let t = clock.advance(secs(1));
    assert_eq!(l.reserve(0, t, Duration::ZERO), Ok(Duration::ZERO));
    assert!(l.check(0, t).is_err());
    // A full minute idle refills the whole burst, and no more.
    let t = clock.advance(secs(600));
    assert_eq!(l.remaining(t), (Some(2), None));
    assert!(l.reserve(0, t, Duration::ZERO).is_ok());
    assert!(l.reserve(0, t, Duration::ZERO).is_ok());
    assert!(l.reserve(0, t, Duration::ZERO).is_err());
}

#[test]
fn tpm_reserves_estimates_and_settles_actuals() {
    let clock = Clock::new();
    let t = clock.now;
    let mut l = RateLimiter::new(Limits {
        rpm: None,
        tpm: Some(6000),
    });
    assert!(l.reserve(5000, t, Duration::ZERO).is_ok());
    let e = l.reserve(2000, t, Duration::ZERO).unwrap_err();
    assert_eq!(e.kind, LimitKind::Tokens);
    // 1000 short at 100 tokens per second.
    assert_eq!(e.retry_in, secs(10));
    // The request used 1000 tokens, not 5000: 4000 come back.
    l.adjust_tokens(5000, 1000, t);
    assert_eq!(l.remaining(t), (None, Some(5000)));
    assert!(l.reserve(2000, t, Duration::ZERO).is_ok());
    // It used more than estimated: the bucket goes into debt.
    l.adjust_tokens(2000, 9000, t);
    assert_eq!(l.remaining(t), (None, Some(0)));
    // Debt 4000 + 1 token needed: 40.01 s at 100/s.
    assert_eq!(l.wait(1, t), Duration::from_millis(40_010));
}

#[test]
fn the_longer_wait_of_both_limits_is_reported() {
    let t = Clock::new().now;
    let mut l = RateLimiter::new(Limits {
        rpm: Some(60),
        tpm: Some(600),
    });
    assert!(l.reserve(600, t, Duration::ZERO).is_ok());
    let e = l.check(300, t).unwrap_err();
    assert_eq!((e.kind, e.retry_in), (LimitKind::Tokens, secs(30)));
    let limits = l.limits();
    assert_eq!((limits.rpm, limits.tpm), (Some(60), Some(600)));
}

#[test]
fn reserve_with_a_wait_takes_now_and_says_how_long() {
    let mut clock = Clock::new();
    let mut l = RateLimiter::new(Limits {
        rpm: Some(1),
        tpm: None,
    });
    let t = clock.now;
    assert!(l.reserve(0, t, Duration::ZERO).is_ok());
    // Willing to wait up to 60 s: admitted, to be sent in 60 s.
    assert_eq!(l.reserve(0, t, secs(60)), Ok(secs(60)));
    // The next one is 120 s away: beyond 90 s of patience.
    let e = l.reserve(0, t, secs(90)).unwrap_err();
    assert_eq!(e.retry_in, secs(120));
    let t = clock.advance(secs(120));
    assert!(l.reserve(0, t, Duration::ZERO).is_ok());
}

#[test]
fn a_request_larger_than_a_minute_waits_for_a_full_bucket() {
    let mut clock = Clock::new();
    let mut l = RateLimiter::new(Limits {
        rpm: None,
        tpm: Some(1000),
    });
    let t = clock.now;
    assert!(l.reserve(400, t, Duration::ZERO).is_ok());
    // 5000 can never fit; it goes once the bucket is full again (400 used: 24 s).
    assert_eq!(l.wait(5000, t), secs(24));
    let t = clock.advance(ms(24_000));
    assert!(l.reserve(5000, t, Duration::ZERO).is_ok());
    // Now 4000 in debt: 1 token is 4001 tokens × 60 ms away.
    assert_eq!(l.wait(1, t), Duration::from_millis(240_060));
}

#[test]
fn release_gives_a_whole_reservation_back() {
    let t = Clock::new().now;
    let mut l = RateLimiter::new(Limits {
        rpm: Some(1),
        tpm: Some(100),
    });
    assert!(l.reserve(100, t, Duration::ZERO).is_ok());
    assert!(l.check(1, t).is_err());
    l.release(100, t);
    assert_eq!(l.remaining(t), (Some(1), Some(100)));
    let unlimited = RateLimiter::new(Limits::default());
    assert!(unlimited.check(u64::MAX, t).is_ok());
    assert_eq!(unlimited.remaining(t), (None, None));
}
