//! Deterministic tests of the sans-IO health state machines, driven by a controllable clock
//! (`t0 + offset`) and seeded random number generators.

use std::time::{Duration, Instant};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

mod probe {
    use super::*;
    use headwater_health::probe_state::{ProbeHealth, ProbePolicy, ProbeState, Transition};

    fn policy() -> ProbePolicy {
        ProbePolicy {
            interval: secs(5),
            unhealthy_interval: secs(1),
            jitter: Duration::ZERO,
            timeout: secs(1),
            rise: 2,
            fall: 3,
        }
    }

    #[test]
    fn default_policy() {
        let p = ProbePolicy::default();
        assert_eq!(p.interval, secs(5));
        assert_eq!(p.unhealthy_interval, secs(5));
        assert_eq!(p.jitter, Duration::ZERO);
        assert_eq!(p.timeout, secs(1));
        assert_eq!((p.rise, p.fall), (2, 3));
    }

    #[test]
    fn unknown_first_pass_becomes_healthy() {
        let t0 = Instant::now();
        let p = policy();
        let mut rng = fastrand::Rng::with_seed(1);
        let mut s = ProbeState::new(ProbeHealth::Unknown, t0, &p, &mut rng);
        assert_eq!(s.health(), ProbeHealth::Unknown);
        assert_eq!(s.healthy_since(), None);
        assert_eq!(s.changed_at(), t0);
        assert!(s.last().is_none());

        let t1 = t0 + ms(700);
        let tr = s.record(true, "200 OK", t1, &p, &mut rng);
        assert_eq!(
            tr,
            Some(Transition {
                from: ProbeHealth::Unknown,
                to: ProbeHealth::Healthy,
                at: t1
            })
        );
        assert_eq!(s.health(), ProbeHealth::Healthy);
        assert_eq!(s.healthy_since(), Some(t1));
        assert_eq!(s.changed_at(), t1);
        assert_eq!((s.consecutive_ok(), s.consecutive_fail()), (1, 0));
        let last = s.last().unwrap();
        assert_eq!(
            (last.at, last.ok, last.detail.as_str()),
            (t1, true, "200 OK")
        );
        // Healthy now: the next probe comes after `interval`.
        assert_eq!(s.next_due(), t1 + secs(5));
    }

    #[test]
    fn unknown_first_fail_becomes_unhealthy_then_needs_rise() {
        let t0 = Instant::now();
        let p = policy();
        let mut rng = fastrand::Rng::with_seed(2);
        let mut s = ProbeState::new(ProbeHealth::Unknown, t0, &p, &mut rng);
        let t1 = t0 + secs(1);
        let tr = s.record(false, "connection refused", t1, &p, &mut rng);
        assert_eq!(
            tr,
            Some(Transition {
                from: ProbeHealth::Unknown,
                to: ProbeHealth::Unhealthy,
                at: t1
            })
        );
        assert_eq!(s.next_due(), t1 + secs(1), "unhealthy interval");
        // rise = 2: one pass is not enough.
        assert_eq!(s.record(true, "ok", t0 + secs(2), &p, &mut rng), None);
        assert_eq!(s.health(), ProbeHealth::Unhealthy);
        assert_eq!(s.healthy_since(), None);
        // A failure breaks the run.
        assert_eq!(s.record(false, "503", t0 + secs(3), &p, &mut rng), None);
        assert_eq!(s.record(true, "ok", t0 + secs(4), &p, &mut rng), None);
        let t5 = t0 + secs(5);
        let tr = s.record(true, "ok", t5, &p, &mut rng);
        assert_eq!(
            tr,
            Some(Transition {
                from: ProbeHealth::Unhealthy,
                to: ProbeHealth::Healthy,
                at: t5
            })
        );
        assert_eq!(s.healthy_since(), Some(t5));
        assert_eq!(s.consecutive_ok(), 2);
    }

    #[test]
    fn healthy_falls_after_fall_consecutive_failures() {
        let t0 = Instant::now();
        let p = policy();
        let mut rng = fastrand::Rng::with_seed(3);
        let mut s = ProbeState::new(ProbeHealth::Healthy, t0, &p, &mut rng);
        assert_eq!(s.healthy_since(), Some(t0));
        assert_eq!(s.record(false, "x", t0 + secs(1), &p, &mut rng), None);
        assert_eq!(s.record(false, "x", t0 + secs(2), &p, &mut rng), None);
        assert_eq!(s.consecutive_fail(), 2);
        // A pass resets the run.
        assert_eq!(s.record(true, "ok", t0 + secs(3), &p, &mut rng), None);
        assert_eq!(s.consecutive_fail(), 0);
        assert_eq!(s.record(false, "x", t0 + secs(4), &p, &mut rng), None);
        assert_eq!(s.record(false, "x", t0 + secs(5), &p, &mut rng), None);
        assert_eq!(s.health(), ProbeHealth::Healthy);
        assert_eq!(
            s.next_due(),
            t0 + secs(5) + secs(5),
            "still healthy interval"
        );
        let t6 = t0 + secs(6);
        let tr = s.record(false, "timeout", t6, &p, &mut rng);
        assert_eq!(
            tr,
            Some(Transition {
                from: ProbeHealth::Healthy,
                to: ProbeHealth::Unhealthy,
                at: t6
            })
        );
        assert_eq!(s.health(), ProbeHealth::Unhealthy);
        assert_eq!(s.healthy_since(), None);
        assert_eq!(s.changed_at(), t6);
        assert_eq!(s.consecutive_fail(), 3);
        assert_eq!(s.next_due(), t6 + secs(1));
        // Further failures change nothing.
        assert_eq!(s.record(false, "x", t0 + secs(7), &p, &mut rng), None);
        assert_eq!(s.changed_at(), t6);
    }

    #[test]
    fn zero_rise_and_fall_behave_as_one() {
        let t0 = Instant::now();
        let p = ProbePolicy {
            rise: 0,
            fall: 0,
            ..policy()
        };
        let mut rng = fastrand::Rng::with_seed(4);
        let mut s = ProbeState::new(ProbeHealth::Healthy, t0, &p, &mut rng);
        let tr = s.record(false, "x", t0 + secs(1), &p, &mut rng).unwrap();
        assert_eq!(
            (tr.from, tr.to),
            (ProbeHealth::Healthy, ProbeHealth::Unhealthy)
        );
        let tr = s.record(true, "ok", t0 + secs(2), &p, &mut rng).unwrap();
        assert_eq!(
            (tr.from, tr.to),
            (ProbeHealth::Unhealthy, ProbeHealth::Healthy)
        );
    }

    #[test]
    fn due_begin_record_cycle() {
        let t0 = Instant::now();
        let p = policy();
        let mut rng = fastrand::Rng::with_seed(5);
        let mut s = ProbeState::new(ProbeHealth::Unknown, t0, &p, &mut rng);
        let first = s.next_due();
        assert!(
            first >= t0 && first <= t0 + secs(1),
            "Unknown spreads over unhealthy_interval"
        );
        if first > t0 {
            assert!(!s.due(first - Duration::from_nanos(1)));
        }
        assert!(s.due(first));
        s.begin(first);
        assert_eq!(s.in_flight(), Some(first));
        assert!(!s.due(first), "in flight");
        assert!(!s.due(first + secs(60)), "in flight until recorded");
        let done = first + ms(30);
        s.record(true, "ok", done, &p, &mut rng);
        assert_eq!(s.in_flight(), None);
        assert_eq!(s.next_due(), done + secs(5));
        assert!(!s.due(done + secs(5) - Duration::from_nanos(1)));
        assert!(s.due(done + secs(5)));
    }

    /// The latest first probe, after `t0`, of 200 healthy endpoints created at `t0` (seeds 0 to
    /// 199).
    fn latest_first_probe(t0: Instant, p: &ProbePolicy) -> Duration {
        (0..200)
            .map(|seed| {
                let mut rng = fastrand::Rng::with_seed(seed);
                ProbeState::new(ProbeHealth::Healthy, t0, p, &mut rng).next_due() - t0
            })
            .max()
            .unwrap()
    }

    #[test]
    fn first_probe_is_spread_over_the_interval() {
        let t0 = Instant::now();
        // No jitter: spread over the whole interval of the initial state.
        let p = ProbePolicy {
            unhealthy_interval: secs(5),
            ..policy()
        };
        let mut offsets = Vec::new();
        for seed in 0..200 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let s = ProbeState::new(ProbeHealth::Healthy, t0, &p, &mut rng);
            let off = s.next_due() - t0;
            assert!(off <= secs(5), "seed {seed}: {off:?}");
            offsets.push(off);
        }
        offsets.sort();
        offsets.dedup();
        assert!(offsets.len() > 150, "not in lockstep");
        assert!(offsets[0] < secs(1) && *offsets.last().unwrap() > secs(4));

        // Jitter smaller than the interval: spread over the jitter only.
        let p = ProbePolicy {
            jitter: ms(200),
            ..policy()
        };
        let latest = latest_first_probe(t0, &p);
        assert!(latest <= ms(200) && latest > ms(180), "{latest:?}");
        // Jitter larger than the interval: capped at the interval.
        let p = ProbePolicy {
            interval: ms(100),
            jitter: secs(1),
            ..policy()
        };
        let latest = latest_first_probe(t0, &p);
        assert!(latest <= ms(100) && latest > ms(90), "{latest:?}");
        // Same seed, same schedule.
        let a = ProbeState::new(
            ProbeHealth::Healthy,
            t0,
            &p,
            &mut fastrand::Rng::with_seed(9),
        );
        let b = ProbeState::new(
            ProbeHealth::Healthy,
            t0,
            &p,
            &mut fastrand::Rng::with_seed(9),
        );
        assert_eq!(a.next_due(), b.next_due());
    }

    #[test]
    fn jittered_schedule_bounds() {
        let t0 = Instant::now();
        let p = ProbePolicy {
            jitter: ms(300),
            ..policy()
        };
        let mut rng = fastrand::Rng::with_seed(42);
        let mut s = ProbeState::new(ProbeHealth::Healthy, t0, &p, &mut rng);
        let mut offsets = Vec::new();
        let mut now = t0;
        for i in 0..300 {
            now += secs(6);
            s.record(true, "ok", now, &p, &mut rng);
            let off = s.next_due() - now;
            assert!(off >= secs(5) && off <= secs(5) + ms(300), "{i}: {off:?}");
            offsets.push(off);
        }
        let min = *offsets.iter().min().unwrap();
        let max = *offsets.iter().max().unwrap();
        assert!(
            min < secs(5) + ms(30) && max > secs(5) + ms(270),
            "{min:?} {max:?}"
        );

        // While unhealthy, the unhealthy interval plus jitter.
        for _ in 0..3 {
            now += secs(6);
            s.record(false, "x", now, &p, &mut rng);
        }
        assert_eq!(s.health(), ProbeHealth::Unhealthy);
        for _ in 0..50 {
            now += secs(2);
            s.record(false, "x", now, &p, &mut rng);
            let off = s.next_due() - now;
            assert!(off >= secs(1) && off <= secs(1) + ms(300), "{off:?}");
        }
    }
}

mod outlier {
    use super::*;
    use headwater_health::outlier::{
        EjectReason, Ejection, EndpointWindow, LatencyPolicy, OutlierDetector, OutlierPolicy,
        OutlierReport, SuccessRatePolicy,
    };

    /// Consecutive checks only, no cap, no jitter.
    fn policy() -> OutlierPolicy {
        OutlierPolicy {
            consecutive_5xx: Some(5),
            consecutive_gateway_failures: Some(3),
            success_rate: None,
            latency: None,
            interval: secs(10),
            base_ejection: secs(30),
            max_ejection: secs(300),
            jitter: Duration::ZERO,
            max_ejection_percent: 100,
        }
    }

    fn run_5xx(n: u64) -> EndpointWindow {
        EndpointWindow {
            consecutive_5xx: n,
            ..Default::default()
        }
    }

    fn run_gw(n: u64) -> EndpointWindow {
        EndpointWindow {
            consecutive_gateway_failures: n,
            ..Default::default()
        }
    }

    fn sr_window(requests: u64, successes: u64) -> EndpointWindow {
        EndpointWindow {
            requests,
            successes,
            errors_5xx: requests - successes,
            ..Default::default()
        }
    }

    /// The endpoints `r` ejected, in its order.
    fn endpoints(r: &OutlierReport) -> Vec<usize> {
        r.ejected.iter().map(|e| e.endpoint).collect()
    }

    /// Runs a fresh detector over `w` for one window: the first update opens it at `t0`, the
    /// second closes it one interval later (asserted) and is returned.
    fn close_first_window(w: &[EndpointWindow], t0: Instant, p: &OutlierPolicy) -> OutlierReport {
        let mut rng = fastrand::Rng::with_seed(1);
        let mut d = OutlierDetector::new(w.len());
        assert!(!d.update(w, t0, p, &mut rng).window_closed);
        let r = d.update(w, t0 + p.interval, p, &mut rng);
        assert!(r.window_closed);
        r
    }

    fn latency_window(responses: u64, mean: Duration) -> EndpointWindow {
        EndpointWindow {
            requests: responses,
            successes: responses,
            latency_total: mean * responses as u32,
            ..Default::default()
        }
    }

    #[test]
    fn default_policy() {
        let p = OutlierPolicy::default();
        assert_eq!(p.consecutive_5xx, Some(5));
        assert_eq!(p.consecutive_gateway_failures, Some(5));
        assert_eq!(
            p.success_rate,
            Some(SuccessRatePolicy {
                min_hosts: 5,
                request_volume: 100,
                stdev_factor: 1.9
            })
        );
        assert_eq!(p.latency, None);
        let l = LatencyPolicy::default();
        assert_eq!(
            (l.factor, l.min_latency, l.request_volume, l.min_hosts),
            (3.0, ms(50), 20, 3)
        );
        assert_eq!(p.interval, secs(10));
        assert_eq!(p.base_ejection, secs(30));
        assert_eq!(p.max_ejection, secs(300));
        assert_eq!(p.jitter, Duration::ZERO);
        assert_eq!(p.max_ejection_percent, 10);
    }

    #[test]
    fn reinstate_ends_an_ejection_early_without_re_ejecting_on_the_old_run() {
        let t0 = Instant::now();
        let p = policy();
        let mut rng = fastrand::Rng::with_seed(1);
        let mut d = OutlierDetector::new(3);
        let mut w = [run_5xx(0), run_5xx(0), run_5xx(0)];
        d.update(&w, t0, &p, &mut rng);
        w[1] = run_5xx(5);
        let t1 = t0 + ms(100);
        assert_eq!(d.update(&w, t1, &p, &mut rng).ejected.len(), 1);
        assert!(!d.reinstate(0, t1), "endpoint 0 was not ejected");
        assert!(d.reinstate(1, t1 + secs(2)));
        assert!(!d.is_ejected(1, t1 + secs(2)));
        assert_eq!(d.ejected_count(), 0);
        assert_eq!(d.ejection_count(1), 1, "the count stays and decays");
        assert!(!d.reinstate(1, t1 + secs(2)), "not ejected any more");
        // The run that ejected it does not eject it again; a new run of 5 does.
        let r = d.update(&w, t1 + secs(3), &p, &mut rng);
        assert!(r.ejected.is_empty() && r.returned.is_empty());
        w[1] = run_5xx(10);
        let r = d.update(&w, t1 + secs(4), &p, &mut rng);
        assert_eq!(r.ejected.len(), 1);
        assert_eq!(r.ejected[0].count, 2);
    }

    #[test]
    fn consecutive_5xx_ejects() {
        let t0 = Instant::now();
        let p = policy();
        let mut rng = fastrand::Rng::with_seed(1);
        let mut d = OutlierDetector::new(3);
        let mut w = [run_5xx(0), run_5xx(4), run_5xx(0)];
        let r = d.update(&w, t0, &p, &mut rng);
        assert!(r.ejected.is_empty() && r.returned.is_empty() && !r.window_closed);
        w[1] = run_5xx(5);
        let t1 = t0 + ms(100);
        let r = d.update(&w, t1, &p, &mut rng);
        assert_eq!(
            r.ejected,
            vec![Ejection {
                endpoint: 1,
                reason: EjectReason::Consecutive5xx,
                until: t1 + secs(30),
                count: 1
            }]
        );
        assert!(d.is_ejected(1, t1));
        assert!(!d.is_ejected(0, t1));
        assert_eq!(d.ejected_until(1), Some(t1 + secs(30)));
        assert_eq!(d.ejection_count(1), 1);
        assert_eq!(d.last_reason(1), Some(EjectReason::Consecutive5xx));
        assert_eq!(d.ejected_count(), 1);
        // Not ejected twice while ejected.
        w[1] = run_5xx(50);
        let r = d.update(&w, t1 + secs(1), &p, &mut rng);
        assert!(r.ejected.is_empty());
        assert_eq!(d.ejection_count(1), 1);
    }

    #[test]
    fn consecutive_gateway_failures_eject() {
        let t0 = Instant::now();
        let p = policy();
        let mut rng = fastrand::Rng::with_seed(1);
        let mut d = OutlierDetector::new(2);
        let r = d.update(&[run_gw(2), run_gw(0)], t0, &p, &mut rng);
        assert!(r.ejected.is_empty());
        let r = d.update(&[run_gw(3), run_gw(0)], t0 + secs(1), &p, &mut rng);
        assert_eq!(r.ejected.len(), 1);
        assert_eq!(r.ejected[0].endpoint, 0);
        assert_eq!(r.ejected[0].reason, EjectReason::ConsecutiveGatewayFailure);
        assert_eq!(r.ejected[0].until, t0 + secs(31));
        // Disabled thresholds never eject.
        let off = OutlierPolicy {
            consecutive_5xx: None,
            consecutive_gateway_failures: None,
            ..policy()
        };
        let mut d = OutlierDetector::new(1);
        let w = [EndpointWindow {
            consecutive_5xx: 1000,
            consecutive_gateway_failures: 1000,
            ..Default::default()
        }];
        assert!(d.update(&w, t0, &off, &mut rng).ejected.is_empty());
    }

    #[test]
    fn returns_when_time_is_up() {
        let t0 = Instant::now();
        let p = policy();
        let mut rng = fastrand::Rng::with_seed(1);
        let mut d = OutlierDetector::new(2);
        let w = [run_5xx(5), run_5xx(0)];
        d.update(&w, t0, &p, &mut rng);
        let until = t0 + secs(30);
        assert_eq!(d.ejected_until(0), Some(until));
        let r = d.update(&w, until - ms(1), &p, &mut rng);
        assert!(r.returned.is_empty());
        assert!(d.is_ejected(0, until - ms(1)));
        // `is_ejected` follows the clock even before an update returns it.
        assert!(!d.is_ejected(0, until));
        let r = d.update(&w, until, &p, &mut rng);
        assert_eq!(r.returned, vec![0]);
        assert!(r.ejected.is_empty(), "the old run does not eject again");
        assert_eq!(d.ejected_until(0), None);
        assert_eq!(d.ejected_count(), 0);
        assert_eq!(d.ejection_count(0), 1);
        assert_eq!(d.last_reason(0), Some(EjectReason::Consecutive5xx));
    }

    #[test]
    fn consecutive_run_is_reset_after_return() {
        let t0 = Instant::now();
        let p = policy();
        let mut rng = fastrand::Rng::with_seed(1);
        let mut d = OutlierDetector::new(1);
        d.update(&[run_5xx(5)], t0, &p, &mut rng);
        let back = t0 + secs(30);
        let r = d.update(&[run_5xx(5)], back, &p, &mut rng);
        assert_eq!(r.returned, vec![0]);
        // The caller's count still shows the old run, then grows: ejected only after it grew by
        // the full threshold (5 → 10).
        for n in 6..10 {
            let r = d.update(&[run_5xx(n)], back + ms(n * 10), &p, &mut rng);
            assert!(r.ejected.is_empty(), "run {n}");
        }
        let t = back + secs(1);
        let r = d.update(&[run_5xx(10)], t, &p, &mut rng);
        assert_eq!(r.ejected.len(), 1);
        assert_eq!(r.ejected[0].count, 2);
        assert_eq!(r.ejected[0].until, t + secs(60));

        // A run that broke (count fell below the baseline) counts from zero again.
        let back = t + secs(60);
        d.update(&[run_5xx(10)], back, &p, &mut rng);
        assert!(!d.is_ejected(0, back));
        let r = d.update(&[run_5xx(0)], back + secs(1), &p, &mut rng);
        assert!(r.ejected.is_empty());
        let r = d.update(&[run_5xx(4)], back + secs(2), &p, &mut rng);
        assert!(r.ejected.is_empty());
        let r = d.update(&[run_5xx(5)], back + secs(3), &p, &mut rng);
        assert_eq!(r.ejected.len(), 1);
        assert_eq!(r.ejected[0].count, 3);
    }

    #[test]
    fn ejection_time_grows_and_is_capped() {
        let t0 = Instant::now();
        let p = OutlierPolicy {
            max_ejection: secs(100),
            ..policy()
        };
        let mut rng = fastrand::Rng::with_seed(1);
        let mut d = OutlierDetector::new(2);
        let mut now = t0;
        let mut run = 0;
        let mut got = Vec::new();
        for _ in 0..6 {
            // Returned and re-ejected at the same instant (no time to decay): the run grows by 5.
            run += 5;
            let r = d.update(&[run_5xx(run), run_5xx(0)], now, &p, &mut rng);
            assert_eq!(r.ejected.len(), 1);
            let e = r.ejected[0];
            got.push((e.count, e.until - now));
            now = e.until;
        }
        assert_eq!(
            got,
            vec![
                (1, secs(30)),
                (2, secs(60)),
                (3, secs(90)),
                (4, secs(100)),
                (5, secs(100)),
                (6, secs(100)),
            ]
        );
        assert_eq!(p.ejection_time(1), secs(30));
        assert_eq!(p.ejection_time(u32::MAX), secs(100));
    }

    #[test]
    fn ejection_count_decays_per_interval_not_ejected() {
        let t0 = Instant::now();
        let p = policy();
        let mut rng = fastrand::Rng::with_seed(1);
        let mut d = OutlierDetector::new(2);
        // Two ejections back to back: count 2, back at t0 + 30 s + 60 s.
        d.update(&[run_5xx(5), run_5xx(0)], t0, &p, &mut rng);
        let t1 = t0 + secs(30);
        d.update(&[run_5xx(10), run_5xx(0)], t1, &p, &mut rng);
        assert_eq!(d.ejection_count(0), 2);
        let back = t1 + secs(60);
        assert_eq!(d.ejected_until(0), Some(back));
        // Time spent ejected does not decay.
        d.update(&[run_5xx(10), run_5xx(0)], back - ms(1), &p, &mut rng);
        assert_eq!(d.ejection_count(0), 2);
        // Returned by a late tick: the decay is measured from `until`, not from the tick.
        let r = d.update(&[run_5xx(10), run_5xx(0)], back + secs(3), &p, &mut rng);
        assert_eq!(r.returned, vec![0]);
        assert_eq!(d.ejection_count(0), 2);
        d.update(
            &[run_5xx(10), run_5xx(0)],
            back + secs(10) - ms(1),
            &p,
            &mut rng,
        );
        assert_eq!(d.ejection_count(0), 2);
        d.update(&[run_5xx(10), run_5xx(0)], back + secs(10), &p, &mut rng);
        assert_eq!(d.ejection_count(0), 1);
        d.update(&[run_5xx(10), run_5xx(0)], back + secs(19), &p, &mut rng);
        assert_eq!(d.ejection_count(0), 1);
        // A next ejection uses the decayed count: 1 + 1 = 2 → 60 s.
        let t = back + secs(19);
        let r = d.update(&[run_5xx(15), run_5xx(0)], t, &p, &mut rng);
        assert_eq!(r.ejected[0].count, 2);
        assert_eq!(r.ejected[0].until, t + secs(60));

        // Several intervals at once decay several steps, down to zero.
        let back = t + secs(60);
        d.update(&[run_5xx(15), run_5xx(0)], back, &p, &mut rng);
        assert_eq!(d.ejection_count(0), 2);
        d.update(&[run_5xx(15), run_5xx(0)], back + secs(25), &p, &mut rng);
        assert_eq!(d.ejection_count(0), 0);
        d.update(&[run_5xx(15), run_5xx(0)], back + secs(500), &p, &mut rng);
        assert_eq!(d.ejection_count(0), 0);
        let t = back + secs(500);
        let r = d.update(&[run_5xx(20), run_5xx(0)], t, &p, &mut rng);
        assert_eq!(r.ejected[0].count, 1);
        assert_eq!(r.ejected[0].until, t + secs(30));
    }

    #[test]
    fn ejection_jitter_bounds_with_seeded_rng() {
        let t0 = Instant::now();
        let p = OutlierPolicy {
            jitter: secs(5),
            ..policy()
        };
        let mut seen = Vec::new();
        for seed in 0..200 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut d = OutlierDetector::new(2);
            let r = d.update(&[run_5xx(5), run_5xx(0)], t0, &p, &mut rng);
            let len = r.ejected[0].until - t0;
            assert!(len >= secs(30) && len <= secs(35), "seed {seed}: {len:?}");
            seen.push(len);
            // Same seed, same result.
            let mut rng2 = fastrand::Rng::with_seed(seed);
            let mut d2 = OutlierDetector::new(2);
            let r2 = d2.update(&[run_5xx(5), run_5xx(0)], t0, &p, &mut rng2);
            assert_eq!(r2.ejected[0].until, r.ejected[0].until);
        }
        let min = *seen.iter().min().unwrap();
        let max = *seen.iter().max().unwrap();
        assert!(min < secs(31) && max > secs(34), "{min:?} {max:?}");
        // The jitter is added after the cap.
        let p = OutlierPolicy {
            jitter: secs(5),
            base_ejection: secs(400),
            ..policy()
        };
        for seed in 0..50 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut d = OutlierDetector::new(2);
            let r = d.update(&[run_5xx(5), run_5xx(0)], t0, &p, &mut rng);
            let len = r.ejected[0].until - t0;
            assert!(len >= secs(300) && len <= secs(305), "{len:?}");
        }
    }

    #[test]
    fn max_ejected_rule() {
        let with = |percent| OutlierPolicy {
            max_ejection_percent: percent,
            ..policy()
        };
        assert_eq!(with(50).max_ejected(3), 1);
        assert_eq!(with(20).max_ejected(10), 2);
        assert_eq!(with(10).max_ejected(10), 1);
        assert_eq!(
            with(10).max_ejected(5),
            1,
            "at least one with two or more endpoints"
        );
        assert_eq!(with(10).max_ejected(2), 1);
        assert_eq!(
            with(10).max_ejected(1),
            0,
            "the only endpoint is kept below 100 %"
        );
        assert_eq!(with(100).max_ejected(1), 1);
        assert_eq!(with(0).max_ejected(10), 0);
        assert_eq!(with(10).max_ejected(0), 0);
        assert_eq!(with(255).max_ejected(4), 4);
        assert_eq!(with(34).max_ejected(100), 34);
    }

    #[test]
    fn max_ejection_percent_caps_ejections() {
        let t0 = Instant::now();
        let p = OutlierPolicy {
            max_ejection_percent: 20,
            ..policy()
        };
        let mut rng = fastrand::Rng::with_seed(1);
        let mut d = OutlierDetector::new(10);
        let mut w = [run_5xx(0); 10];
        for i in [2, 4, 6, 8] {
            w[i] = run_5xx(5);
        }
        let r = d.update(&w, t0, &p, &mut rng);
        let ejected: Vec<usize> = r.ejected.iter().map(|e| e.endpoint).collect();
        assert_eq!(ejected, vec![2, 4]);
        assert_eq!(d.ejected_count(), 2);
        // Still capped later.
        let r = d.update(&w, t0 + secs(1), &p, &mut rng);
        assert!(r.ejected.is_empty());
        assert!(!d.is_ejected(6, t0 + secs(1)));
        // When they return, the waiting candidates (their runs still there) take their places.
        let r = d.update(&w, t0 + secs(30), &p, &mut rng);
        assert_eq!(r.returned, vec![2, 4]);
        let ejected: Vec<usize> = r.ejected.iter().map(|e| e.endpoint).collect();
        assert_eq!(ejected, vec![6, 8]);
        assert_eq!(d.ejected_count(), 2);

        // 3 endpoints at 50 %: one.
        let p = OutlierPolicy {
            max_ejection_percent: 50,
            ..policy()
        };
        let mut d = OutlierDetector::new(3);
        let r = d.update(&[run_5xx(5); 3], t0, &p, &mut rng);
        assert_eq!(r.ejected.len(), 1);
        assert_eq!(r.ejected[0].endpoint, 0);
    }

    #[test]
    fn success_rate_hand_computed() {
        // Rates 1.0, 1.0, 1.0, 0.9, 0.5: mean 0.88; squared deviations 0.0144 × 3, 0.0004,
        // 0.1444 → population variance 0.188 / 5 = 0.0376, stdev 0.19391; threshold
        // 0.88 − 1.9 × 0.19391 = 0.51157. Only 0.5 is below it.
        let t0 = Instant::now();
        let p = OutlierPolicy {
            success_rate: Some(SuccessRatePolicy::default()),
            ..policy()
        };
        let mut rng = fastrand::Rng::with_seed(1);
        let mut d = OutlierDetector::new(5);
        let w = [
            sr_window(100, 100),
            sr_window(200, 200),
            sr_window(100, 100),
            sr_window(100, 90),
            sr_window(100, 50),
        ];
        let r = d.update(&w, t0, &p, &mut rng);
        assert!(
            r.ejected.is_empty() && !r.window_closed,
            "first call opens the window"
        );
        assert_eq!(d.window_start(), Some(t0));
        let r = d.update(&w, t0 + secs(5), &p, &mut rng);
        assert!(r.ejected.is_empty() && !r.window_closed);
        let t = t0 + secs(10);
        let r = d.update(&w, t, &p, &mut rng);
        assert!(r.window_closed);
        assert_eq!(d.window_start(), Some(t));
        assert_eq!(
            r.ejected,
            vec![Ejection {
                endpoint: 4,
                reason: EjectReason::SuccessRate,
                until: t + secs(30),
                count: 1
            }]
        );
        assert_eq!(d.last_reason(4), Some(EjectReason::SuccessRate));
        // A stricter factor moves the threshold below 0.5: 0.88 − 2.1 × 0.19391 = 0.47279.
        let strict = OutlierPolicy {
            success_rate: Some(SuccessRatePolicy {
                stdev_factor: 2.1,
                ..SuccessRatePolicy::default()
            }),
            ..policy()
        };
        assert!(close_first_window(&w, t0, &strict).ejected.is_empty());
    }

    #[test]
    fn success_rate_needs_volume_and_hosts() {
        let t0 = Instant::now();
        // Factor 1.5, so that the statistics alone would eject: over the four qualifying hosts
        // below (rates 1, 1, 1, 0.1: mean 0.775, stdev 0.38971) the threshold is
        // 0.775 − 1.5 × 0.38971 = 0.19044, and endpoint 4 is below it. (With endpoint 0 counted
        // too: mean 0.82, stdev 0.36, threshold 0.28, still below.) Only the volume and host
        // rules keep it.
        let with_min_hosts = |min_hosts| OutlierPolicy {
            success_rate: Some(SuccessRatePolicy {
                min_hosts,
                stdev_factor: 1.5,
                ..SuccessRatePolicy::default()
            }),
            ..policy()
        };
        // Endpoint 0 has 99 requests: only four endpoints qualify, fewer than min_hosts 5.
        let w = [
            sr_window(99, 99),
            sr_window(100, 100),
            sr_window(100, 100),
            sr_window(100, 100),
            sr_window(100, 10),
        ];
        let r = close_first_window(&w, t0, &with_min_hosts(5));
        assert!(r.ejected.is_empty(), "{r:?}");
        // With min_hosts 4 the same windows eject endpoint 4.
        let r = close_first_window(&w, t0, &with_min_hosts(4));
        let ejected: Vec<(usize, EjectReason)> =
            r.ejected.iter().map(|e| (e.endpoint, e.reason)).collect();
        assert_eq!(ejected, vec![(4, EjectReason::SuccessRate)]);
    }

    #[test]
    fn success_rate_outliers_are_capped_lowest_first() {
        let t0 = Instant::now();
        let p = OutlierPolicy {
            success_rate: Some(SuccessRatePolicy {
                min_hosts: 3,
                stdev_factor: 0.5,
                ..SuccessRatePolicy::default()
            }),
            max_ejection_percent: 20,
            ..policy()
        };
        let mut w = [sr_window(100, 100); 10];
        // Mean 0.82, population stdev 0.23152 → threshold 0.82 − 0.5 × 0.23152 = 0.70424:
        // 0.6, 0.5, 0.7 and 0.4 are outliers; 20 % of 10 is 2, the two lowest go.
        w[1] = sr_window(100, 60);
        w[3] = sr_window(100, 50);
        w[5] = sr_window(100, 70);
        w[7] = sr_window(100, 40);
        let r = close_first_window(&w, t0, &p);
        assert_eq!(endpoints(&r), vec![7, 3], "the two worst, worst first");
    }

    #[test]
    fn latency_outlier() {
        // Means 10, 12, 14, 45, 200 ms with 20 responses each: median 14 ms, 3 × 14 = 42 ms,
        // threshold max(50 ms, 42 ms) = 50 ms: only 200 ms is ejected.
        let t0 = Instant::now();
        let lat = LatencyPolicy::default();
        let p = OutlierPolicy {
            latency: Some(lat.clone()),
            ..policy()
        };
        let mut rng = fastrand::Rng::with_seed(1);
        let mut w = [
            latency_window(20, ms(10)),
            latency_window(20, ms(12)),
            latency_window(20, ms(14)),
            latency_window(20, ms(45)),
            latency_window(20, ms(200)),
            // 25 requests but 10 gateway failures: 15 responses, below the volume.
            EndpointWindow {
                requests: 25,
                successes: 15,
                gateway_failures: 10,
                latency_total: ms(5000) * 15,
                ..Default::default()
            },
        ];
        let mut d = OutlierDetector::new(6);
        d.update(&w, t0, &p, &mut rng);
        let t = t0 + secs(10);
        let r = d.update(&w, t, &p, &mut rng);
        assert!(r.window_closed);
        assert_eq!(
            r.ejected,
            vec![Ejection {
                endpoint: 4,
                reason: EjectReason::Latency,
                until: t + secs(30),
                count: 1
            }]
        );
        assert_eq!(d.last_reason(4), Some(EjectReason::Latency));

        // Without the floor the threshold is 42 ms: 45 ms goes too, highest mean first.
        let p0 = OutlierPolicy {
            latency: Some(LatencyPolicy {
                min_latency: Duration::ZERO,
                ..lat.clone()
            }),
            ..policy()
        };
        assert_eq!(endpoints(&close_first_window(&w, t0, &p0)), vec![4, 3]);

        // Even count: the median of 100, 100, 120, x is 110 ms (the mean of the middle two),
        // threshold 330 ms: 340 ms is ejected, 320 ms is not. (Either middle value alone would
        // give 300 or 360 ms and decide one of the two cases differently.)
        for (x, ejected) in [(340, true), (320, false)] {
            let w4 = [
                latency_window(20, ms(100)),
                latency_window(20, ms(100)),
                latency_window(20, ms(120)),
                latency_window(20, ms(x)),
            ];
            let got = endpoints(&close_first_window(&w4, t0, &p));
            assert_eq!(got, if ejected { vec![3] } else { vec![] }, "{x} ms");
        }

        // Endpoints 2 and 3 below the volume: three qualify (10, 12 and 200 ms, median 12 ms),
        // enough for min_hosts 3 to eject the 200 ms one, fewer than min_hosts 4: nothing.
        for x in &mut w[2..4] {
            x.requests = 5;
            x.successes = 5;
        }
        assert_eq!(endpoints(&close_first_window(&w, t0, &p)), vec![4]);
        let p4 = OutlierPolicy {
            latency: Some(LatencyPolicy {
                min_hosts: 4,
                ..lat.clone()
            }),
            ..policy()
        };
        let r = close_first_window(&w, t0, &p4);
        assert!(r.ejected.is_empty(), "{r:?}");
    }

    #[test]
    fn window_closes_once_per_interval() {
        let t0 = Instant::now();
        let p = OutlierPolicy {
            success_rate: Some(SuccessRatePolicy::default()),
            ..policy()
        };
        let mut rng = fastrand::Rng::with_seed(1);
        let mut d = OutlierDetector::new(2);
        assert_eq!(d.window_start(), None);
        let w = [EndpointWindow::default(); 2];
        let mut closed = Vec::new();
        for tick in 0..=250u64 {
            let now = t0 + ms(tick * 100);
            if d.update(&w, now, &p, &mut rng).window_closed {
                closed.push(tick);
            }
        }
        assert_eq!(closed, vec![100, 200]);
        assert_eq!(d.window_start(), Some(t0 + secs(20)));
    }

    #[test]
    fn remap_keeps_state_of_remaining_endpoints() {
        let t0 = Instant::now();
        let p = policy();
        let mut rng = fastrand::Rng::with_seed(1);
        let mut d = OutlierDetector::new(3);
        let r = d.update(&[run_5xx(0), run_5xx(5), run_gw(3)], t0, &p, &mut rng);
        assert_eq!(r.ejected.len(), 2);
        // Endpoint 0 goes, 1 → 0, 2 → 2, new endpoint at 1.
        d.remap(&[None, Some(0), Some(2)], 3);
        assert_eq!(d.len(), 3);
        assert_eq!(d.ejected_until(0), Some(t0 + secs(30)));
        assert_eq!(d.last_reason(0), Some(EjectReason::Consecutive5xx));
        assert_eq!(d.ejection_count(0), 1);
        assert_eq!(d.ejected_until(1), None);
        assert_eq!(d.ejection_count(1), 0);
        assert_eq!(
            d.last_reason(2),
            Some(EjectReason::ConsecutiveGatewayFailure)
        );
        assert_eq!(d.ejected_count(), 2);
        // The baseline moved with the endpoint: its old run does not eject it again on return.
        let r = d.update(
            &[run_5xx(5), run_5xx(0), run_gw(3)],
            t0 + secs(30),
            &p,
            &mut rng,
        );
        assert_eq!(r.returned, vec![0, 2]);
        assert!(r.ejected.is_empty());
        // Out-of-range queries are harmless.
        assert!(!d.is_ejected(99, t0));
        assert_eq!(d.ejection_count(99), 0);
    }
}

mod breaker {
    use super::*;
    use headwater_health::breaker::{
        Breaker, BreakerPolicy, BreakerState, RejectReason, Rejected, Resource,
    };

    const REQ: Resource = Resource::Request;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            max_connections: 2,
            max_pending: 1,
            max_requests: 3,
            max_retries: 1,
            failure_threshold: Some(3),
            open_for: secs(5),
        }
    }

    /// One request that fails at `at`, in the engine's order (release, then record).
    fn fail(b: &mut Breaker, at: Instant, p: &BreakerPolicy) {
        b.try_acquire(REQ, at, p).unwrap();
        b.release(REQ);
        b.record(false, at, p);
    }

    /// Opens the breaker at `at` with three failures.
    fn opened(at: Instant, p: &BreakerPolicy) -> Breaker {
        let mut b = Breaker::new();
        for _ in 0..3 {
            fail(&mut b, at, p);
        }
        assert_eq!(
            b.state(at),
            BreakerState::Open {
                until: at + secs(5)
            }
        );
        assert_eq!(b.in_use(REQ), 0);
        b
    }

    fn open_rejection() -> Result<(), Rejected> {
        Err(Rejected {
            resource: REQ,
            reason: RejectReason::Open,
        })
    }

    #[test]
    fn default_policy() {
        let p = BreakerPolicy::default();
        assert_eq!(
            (
                p.max_connections,
                p.max_pending,
                p.max_requests,
                p.max_retries
            ),
            (1024, 1024, 1024, 3)
        );
        assert_eq!(p.failure_threshold, None);
        assert_eq!(p.open_for, secs(5));
    }

    #[test]
    fn overflow_per_resource() {
        let t0 = Instant::now();
        let p = policy();
        let mut b = Breaker::new();
        for (resource, limit) in [
            (Resource::Connection, 2),
            (Resource::Pending, 1),
            (Resource::Request, 3),
            (Resource::Retry, 1),
        ] {
            for _ in 0..limit {
                assert_eq!(b.try_acquire(resource, t0, &p), Ok(()));
            }
            assert_eq!(b.in_use(resource), limit);
            assert_eq!(
                b.try_acquire(resource, t0, &p),
                Err(Rejected {
                    resource,
                    reason: RejectReason::Overflow
                })
            );
            assert_eq!(b.in_use(resource), limit, "a rejection takes nothing");
            // Giving one back makes room for exactly one.
            b.release(resource);
            assert_eq!(b.in_use(resource), limit - 1);
            assert_eq!(b.try_acquire(resource, t0, &p), Ok(()));
            assert!(b.try_acquire(resource, t0, &p).is_err());
            // Held: the next resource's limits are independent.
        }
        assert_eq!(b.in_use(Resource::Connection), 2);
        assert_eq!(b.in_use(Resource::Pending), 1);
        assert_eq!(b.in_use(Resource::Request), 3);
        assert_eq!(b.in_use(Resource::Retry), 1);
        // Overflow never opens the circuit.
        assert_eq!(b.state(t0), BreakerState::Closed);
        assert_eq!(b.consecutive_failures(), 0);
        for resource in Resource::ALL {
            for _ in 0..5 {
                b.release(resource); // over-release saturates
            }
            assert_eq!(b.in_use(resource), 0);
        }
    }

    #[test]
    fn unlimited_and_zero_limits() {
        let t0 = Instant::now();
        let p = BreakerPolicy {
            max_requests: u32::MAX,
            max_retries: 0,
            ..policy()
        };
        let mut b = Breaker::new();
        for _ in 0..10_000 {
            b.try_acquire(REQ, t0, &p).unwrap();
        }
        assert_eq!(b.in_use(REQ), 10_000);
        assert_eq!(
            b.try_acquire(Resource::Retry, t0, &p).unwrap_err().reason,
            RejectReason::Overflow
        );
    }

    #[test]
    fn opens_after_consecutive_failures() {
        let t0 = Instant::now();
        let p = policy();
        let mut b = Breaker::new();
        b.record(false, t0, &p);
        b.record(false, t0, &p);
        b.record(true, t0, &p); // breaks the run
        assert_eq!(b.consecutive_failures(), 0);
        b.record(false, t0 + ms(1), &p);
        b.record(false, t0 + ms(2), &p);
        assert_eq!(b.state(t0 + ms(2)), BreakerState::Closed);
        assert_eq!(b.consecutive_failures(), 2);
        let t = t0 + ms(3);
        b.record(false, t, &p);
        assert_eq!(b.state(t), BreakerState::Open { until: t + secs(5) });
        // A zero threshold behaves as 1.
        let p1 = BreakerPolicy {
            failure_threshold: Some(0),
            ..policy()
        };
        let mut b = Breaker::new();
        b.record(false, t0, &p1);
        assert_eq!(
            b.state(t0),
            BreakerState::Open {
                until: t0 + secs(5)
            }
        );
    }

    #[test]
    fn default_policy_never_opens() {
        let t0 = Instant::now();
        let p = BreakerPolicy::default();
        let mut b = Breaker::new();
        for i in 0..1000 {
            b.record(false, t0 + ms(i), &p);
        }
        assert_eq!(b.state(t0 + secs(1)), BreakerState::Closed);
        assert_eq!(b.consecutive_failures(), 1000);
        assert_eq!(b.try_acquire(REQ, t0 + secs(1), &p), Ok(()));
    }

    #[test]
    fn rejects_requests_while_open() {
        let t0 = Instant::now();
        let p = policy();
        let mut b = opened(t0, &p);
        for at in [t0, t0 + secs(1), t0 + secs(5) - Duration::from_nanos(1)] {
            assert_eq!(b.try_acquire(REQ, at, &p), open_rejection());
        }
        assert_eq!(b.in_use(REQ), 0);
        // Other resources are plain limits.
        assert_eq!(b.try_acquire(Resource::Connection, t0, &p), Ok(()));
        assert_eq!(b.try_acquire(Resource::Retry, t0, &p), Ok(()));
        // Late results while open are ignored (no extension, no closing).
        b.record(true, t0 + secs(1), &p);
        b.record(false, t0 + secs(2), &p);
        assert_eq!(
            b.state(t0 + secs(2)),
            BreakerState::Open {
                until: t0 + secs(5)
            }
        );
    }

    #[test]
    fn half_open_lets_exactly_one_trial() {
        let t0 = Instant::now();
        let p = policy();
        let mut b = opened(t0, &p);
        let t = t0 + secs(5);
        assert_eq!(b.state(t), BreakerState::HalfOpen);
        assert!(!b.trial_in_flight());
        assert_eq!(b.try_acquire(REQ, t, &p), Ok(()));
        assert!(b.trial_in_flight());
        for i in 0..10 {
            assert_eq!(b.try_acquire(REQ, t + ms(i), &p), open_rejection());
        }
        assert_eq!(b.in_use(REQ), 1);
        assert_eq!(b.state(t + ms(10)), BreakerState::HalfOpen);
    }

    #[test]
    fn trial_success_closes() {
        let t0 = Instant::now();
        let p = policy();
        // Both orders of release and record.
        for release_first in [true, false] {
            let mut b = opened(t0, &p);
            let t = t0 + secs(6);
            b.try_acquire(REQ, t, &p).unwrap();
            let done = t + ms(10);
            if release_first {
                b.release(REQ);
                b.record(true, done, &p);
            } else {
                b.record(true, done, &p);
                b.release(REQ);
            }
            assert_eq!(b.state(done), BreakerState::Closed);
            assert_eq!(b.consecutive_failures(), 0);
            assert!(!b.trial_in_flight());
            assert_eq!(b.in_use(REQ), 0);
            for _ in 0..3 {
                assert_eq!(b.try_acquire(REQ, done, &p), Ok(()));
            }
            for _ in 0..3 {
                b.release(REQ);
            }
            // Closed again: it takes the full threshold to reopen.
            b.record(false, done + secs(1), &p);
            b.record(false, done + secs(1), &p);
            assert_eq!(b.state(done + secs(1)), BreakerState::Closed);
            b.record(false, done + secs(1), &p);
            assert!(matches!(b.state(done + secs(1)), BreakerState::Open { .. }));
        }
    }

    #[test]
    fn trial_failure_reopens() {
        let t0 = Instant::now();
        let p = policy();
        let mut b = opened(t0, &p);
        let t = t0 + secs(5);
        let failed_at = t + ms(250);
        b.try_acquire(REQ, t, &p).unwrap();
        b.release(REQ);
        b.record(false, failed_at, &p);
        assert_eq!(
            b.state(failed_at),
            BreakerState::Open {
                until: failed_at + secs(5)
            }
        );
        assert!(!b.trial_in_flight());
        assert_eq!(
            b.try_acquire(REQ, failed_at + secs(1), &p),
            open_rejection()
        );
        // And half-open again after another open_for, with a new trial.
        let again = failed_at + secs(5);
        assert_eq!(b.state(again), BreakerState::HalfOpen);
        assert_eq!(b.try_acquire(REQ, again, &p), Ok(()));
        assert_eq!(b.try_acquire(REQ, again, &p), open_rejection());
        b.release(REQ);
        b.record(true, again, &p);
        assert_eq!(b.state(again), BreakerState::Closed);
    }

    #[test]
    fn released_trial_does_not_wedge() {
        let t0 = Instant::now();
        let p = policy();
        let mut b = opened(t0, &p);
        let t = t0 + secs(5);
        b.try_acquire(REQ, t, &p).unwrap();
        b.release(REQ); // cancelled, no result
        assert!(!b.trial_in_flight());
        assert_eq!(b.state(t), BreakerState::HalfOpen);
        assert_eq!(b.try_acquire(REQ, t + ms(1), &p), Ok(()), "a new trial");
        assert_eq!(b.try_acquire(REQ, t + ms(1), &p), open_rejection());
        b.release(REQ);
        b.record(true, t + ms(2), &p);
        assert_eq!(b.state(t + ms(2)), BreakerState::Closed);
    }

    #[test]
    fn older_request_released_during_trial_keeps_the_trial() {
        let t0 = Instant::now();
        let p = policy();
        let mut b = Breaker::new();
        // A slow request admitted while closed, still in flight when the circuit opens.
        b.try_acquire(REQ, t0, &p).unwrap();
        for _ in 0..3 {
            fail(&mut b, t0, &p);
        }
        assert_eq!(b.in_use(REQ), 1);
        let t = t0 + secs(5);
        assert_eq!(b.try_acquire(REQ, t, &p), Ok(()));
        assert!(b.trial_in_flight());
        // The old request ends without a result: the trial is still the trial.
        b.release(REQ);
        assert!(b.trial_in_flight());
        assert_eq!(b.try_acquire(REQ, t, &p), open_rejection());
        // The trial is cancelled: the slot frees.
        b.release(REQ);
        assert!(!b.trial_in_flight());
        assert_eq!(b.in_use(REQ), 0);
        assert_eq!(b.try_acquire(REQ, t, &p), Ok(()));
        assert!(b.trial_in_flight());
    }

    #[test]
    fn rejection_messages() {
        let r = Rejected {
            resource: Resource::Pending,
            reason: RejectReason::Overflow,
        };
        assert_eq!(
            r.to_string(),
            "circuit breaker: pending request limit reached"
        );
        let r = Rejected {
            resource: Resource::Request,
            reason: RejectReason::Open,
        };
        assert_eq!(r.to_string(), "circuit breaker open");
    }
}

mod retry {
    use super::*;
    use headwater_health::retry::{backoff, RetryBudget, RetryOn, RetryReserve};

    #[test]
    fn budget_min_concurrent() {
        let b = RetryBudget::default();
        assert_eq!((b.percent, b.min_concurrent, b.burst), (20, 3, 0));
        assert!(b.allows(0, 0));
        assert!(b.allows(0, 2));
        assert!(!b.allows(0, 3));
        // 10 × 20 % = 2 < 3: the minimum applies.
        assert_eq!(b.limit(10), 3);
        assert!(b.allows(10, 2));
        assert!(!b.allows(10, 3));
    }

    #[test]
    fn budget_percent() {
        let b = RetryBudget::default();
        assert_eq!(b.limit(100), 20);
        assert!(b.allows(100, 19));
        assert!(!b.allows(100, 20));
        assert_eq!(b.limit(24), 4, "floor(4.8)");
        assert!(b.allows(24, 3));
        assert!(!b.allows(24, 4));
        assert_eq!(b.limit(u32::MAX), 858_993_459, "no overflow");
        let none = RetryBudget {
            percent: 0,
            min_concurrent: 0,
            burst: 0,
        };
        assert!(!none.allows(1000, 0));
        let big = RetryBudget {
            percent: 1000,
            min_concurrent: 0,
            burst: 0,
        };
        assert_eq!(big.limit(u32::MAX), u32::MAX);
    }

    #[test]
    fn reserve_fills_at_percent_per_request_up_to_burst() {
        let b = RetryBudget {
            percent: 20,
            min_concurrent: 3,
            burst: 2,
        };
        let mut r = RetryReserve::default();
        assert!(!r.withdraw(), "starts empty");
        for _ in 0..4 {
            r.deposit(&b);
        }
        assert!(!r.withdraw(), "4 requests × 20 % = 0.8 retry");
        r.deposit(&b);
        assert_eq!(r.retries(), 1);
        assert!(r.withdraw());
        assert!(!r.withdraw());
        // Capped at `burst` retries, however many requests pass.
        for _ in 0..1000 {
            r.deposit(&b);
        }
        assert_eq!(r.retries(), 2);
        assert!(r.withdraw() && r.withdraw());
        assert!(!r.withdraw());
        // Over a long run, retries from the reserve are at most `percent` % of the requests.
        let mut taken = 0;
        for _ in 0..10_000 {
            r.deposit(&b);
            if r.withdraw() {
                taken += 1;
            }
        }
        assert_eq!(taken, 2_000);
        // burst 0 or percent 0: never any.
        for off in [
            RetryBudget { burst: 0, ..b },
            RetryBudget { percent: 0, ..b },
        ] {
            let mut r = RetryReserve::default();
            for _ in 0..1000 {
                r.deposit(&off);
            }
            assert!(!r.withdraw());
        }
    }

    #[test]
    fn backoff_first_attempt_is_zero() {
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(backoff(0, ms(100), secs(2), &mut rng), Duration::ZERO);
        assert_eq!(
            backoff(3, Duration::ZERO, secs(2), &mut rng),
            Duration::ZERO
        );
    }

    #[test]
    fn backoff_bounds_and_growth() {
        let base = ms(100);
        let max = secs(2);
        let steps = [100, 200, 400, 800, 1600, 2000, 2000];
        for (i, step) in steps.iter().enumerate() {
            let retry = i as u32 + 1;
            let d = ms(*step);
            let mut lo = Duration::MAX;
            let mut hi = Duration::ZERO;
            for seed in 0..500 {
                let mut rng = fastrand::Rng::with_seed(seed);
                let b = backoff(retry, base, max, &mut rng);
                assert!(
                    b >= d / 2 && b <= d,
                    "retry {retry}: {b:?} not in [{:?}, {d:?}]",
                    d / 2
                );
                lo = lo.min(b);
                hi = hi.max(b);
            }
            // The whole range is used.
            assert!(lo < d / 2 + d / 50, "retry {retry}: min {lo:?}");
            assert!(hi > d - d / 50, "retry {retry}: max {hi:?}");
        }
    }

    #[test]
    fn backoff_large_retry_numbers_do_not_overflow() {
        let mut rng = fastrand::Rng::with_seed(7);
        for retry in [31, 32, 33, 64, 127, 128, 129, 1000, u32::MAX] {
            let b = backoff(retry, ms(100), secs(2), &mut rng);
            assert!(b >= secs(1) && b <= secs(2), "{retry}: {b:?}");
        }
        // A tiny base still grows past 2^32 and stops at the cap.
        let b = backoff(40, Duration::from_nanos(1), secs(3600), &mut rng);
        let d = Duration::from_nanos(1 << 39);
        assert!(b >= d / 2 && b <= d, "{b:?}");
        let b = backoff(u32::MAX, Duration::MAX, Duration::MAX, &mut rng);
        assert!(b >= Duration::MAX / 2);
        // Odd nanoseconds: d = 3 ns, result in [1, 3].
        let mut seen = [false; 4];
        for seed in 0..200 {
            let b = backoff(
                1,
                Duration::from_nanos(3),
                secs(1),
                &mut fastrand::Rng::with_seed(seed),
            );
            seen[b.as_nanos() as usize] = true;
        }
        assert_eq!(seen, [false, true, true, true]);
    }

    #[test]
    fn backoff_is_deterministic_for_a_seed() {
        let a: Vec<Duration> = {
            let mut rng = fastrand::Rng::with_seed(99);
            (1..10)
                .map(|r| backoff(r, ms(50), secs(1), &mut rng))
                .collect()
        };
        let b: Vec<Duration> = {
            let mut rng = fastrand::Rng::with_seed(99);
            (1..10)
                .map(|r| backoff(r, ms(50), secs(1), &mut rng))
                .collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn retry_on_default() {
        let r = RetryOn::default();
        assert!(r.matches_connect_failure());
        assert!(r.matches_reset());
        assert!(!r.matches_timeout());
        assert!(r.matches_status(502) && r.matches_status(503) && r.matches_status(504));
        assert!(!r.matches_status(500) && !r.matches_status(200) && !r.matches_status(429));
        assert_eq!(r.to_string(), "connect-failure,reset,gateway-error");
        assert_eq!(
            RetryOn::parse(&["connect-failure", "reset", "502", "503", "504"]),
            Ok(r)
        );
    }

    #[test]
    fn retry_on_parse_names() {
        let r = RetryOn::parse(&["timeout", "503"]).unwrap();
        assert!(r.matches_timeout());
        assert!(r.matches_status(503));
        assert!(!r.matches_status(502) && !r.matches_status(504));
        assert!(!r.matches_reset() && !r.matches_connect_failure());
        assert_eq!(r.to_string(), "timeout,503");

        let r = RetryOn::parse(&["5xx"]).unwrap();
        for s in [500, 501, 502, 503, 504, 599] {
            assert!(r.matches_status(s), "{s}");
        }
        for s in [200, 404, 499, 600] {
            assert!(!r.matches_status(s), "{s}");
        }
        assert!(!r.matches_reset() && !r.matches_timeout());

        let g = RetryOn::parse(&["gateway-error"]).unwrap();
        assert_eq!(g, RetryOn::parse(&["502", "503", "504"]).unwrap());
        assert!(!g.matches_status(500));
        assert_eq!(g.to_string(), "gateway-error");

        let empty = RetryOn::parse(&[]).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty, RetryOn::NONE);
        assert!(!empty.matches_status(503) && !empty.matches_connect_failure());

        // Duplicates are fine.
        assert_eq!(
            RetryOn::parse(&["reset", "reset"]).unwrap(),
            RetryOn::parse(&["reset"]).unwrap()
        );
    }

    #[test]
    fn retry_on_unknown_name_is_an_error() {
        let err = RetryOn::parse(&["reset", "refused-stream"]).unwrap_err();
        assert!(err.contains("\"refused-stream\""), "{err}");
        assert!(
            err.contains("connect-failure"),
            "lists the valid names: {err}"
        );
        assert!(RetryOn::parse(&["5XX"]).is_err(), "names are exact");
        assert!(RetryOn::parse(&[" 503"]).is_err());
    }
}
