//! Peak-EWMA: slow endpoints are avoided, recover when their latency drops, failures count as
//! slow, and new endpoints are seeded with the others' mean estimate.

use std::time::{Duration, Instant};

use headwater_balancer::{Algorithm, Balancer, CandidateSet, Options};

const MS: Duration = Duration::from_millis(1);

/// A cluster under a steady load: one request per `gap`, each finishing `latency[endpoint]`
/// after it started. Time is simulated: `now` only moves when the test says so.
struct Sim {
    b: Balancer,
    set: CandidateSet,
    latency: Vec<Duration>,
    /// (finish time, endpoint) of the requests in flight.
    pending: Vec<(Instant, usize)>,
    now: Instant,
    gap: Duration,
}

impl Sim {
    fn new(latency: &[Duration], gap: Duration) -> Sim {
        let n = latency.len();
        Sim {
            b: Balancer::new(Algorithm::PeakEwma, n, 3),
            set: CandidateSet::new((0..n).map(|e| (e, 1))),
            latency: latency.to_vec(),
            pending: Vec::new(),
            now: Instant::now(),
            gap,
        }
    }

    /// Finishes what is due by `now`, in order of finish time.
    fn settle(&mut self) {
        self.pending.sort_by_key(|&(at, _)| std::cmp::Reverse(at));
        while self.pending.last().is_some_and(|&(at, _)| at <= self.now) {
            let (at, e) = self.pending.pop().unwrap();
            self.b.finish(e, Some(self.latency[e]), at);
        }
    }

    /// Runs `requests` requests and returns how many each endpoint got.
    fn run(&mut self, requests: u32) -> Vec<u32> {
        let mut counts = vec![0; self.latency.len()];
        for _ in 0..requests {
            self.now += self.gap;
            self.settle();
            let e = self.b.pick(&self.set, |_| false, None, self.now).unwrap();
            self.b.start(e, self.now);
            self.pending.push((self.now + self.latency[e], e));
            counts[e] += 1;
        }
        counts
    }
}

fn share(counts: &[u32], e: usize) -> f64 {
    f64::from(counts[e]) / f64::from(counts.iter().sum::<u32>())
}

#[test]
fn a_slow_endpoint_is_avoided_and_recovers_when_it_speeds_up() {
    let mut sim = Sim::new(&[MS, MS, 50 * MS], MS);
    // 20 s at one request per millisecond.
    let counts = sim.run(20_000);
    println!("endpoint 2 at 50 ms: {counts:?} ({:.4})", share(&counts, 2));
    assert!(share(&counts, 2) < 0.05, "{counts:?}");
    // Its one sample (50 ms, 20 s ago) has decayed by e^-2 to 6.8 ms: still 6.8 times the others'.
    let (slow, fast) = (
        sim.b.ewma(2, sim.now).unwrap(),
        sim.b.ewma(0, sim.now).unwrap(),
    );
    println!("estimates at 20 s: endpoint 2 {slow:?}, endpoint 0 {fast:?}");
    assert!(slow > 5 * fast, "{slow:?} vs {fast:?}");

    // It speeds up. Unpicked, its estimate decays (time constant 10 s) until it is tried again,
    // and the fast samples then bring it back into rotation.
    sim.latency[2] = MS;
    let recovering = sim.run(60_000);
    let recovered = sim.run(20_000);
    println!(
        "after the speed-up: next 60 s {recovering:?}, then 20 s {recovered:?} ({:.4})",
        share(&recovered, 2)
    );
    assert!(recovering[2] > 0);
    assert!(share(&recovered, 2) > 0.25, "{recovered:?}");
    let estimate = sim.b.ewma(2, sim.now).unwrap();
    assert!(estimate < 2 * MS, "{estimate:?}");
}

#[test]
fn failures_make_an_endpoint_look_slow() {
    let now = Instant::now();
    let set = CandidateSet::new([(0, 1), (1, 1)]);
    let options = Options {
        failure_penalty: Duration::from_millis(500),
        ..Options::default()
    };
    let mut b = Balancer::with_options(Algorithm::PeakEwma, 2, 5, options);
    b.start(0, now);
    b.finish(0, Some(MS), now);
    b.start(1, now);
    b.finish(1, None, now);
    assert_eq!(b.ewma(0, now), Some(MS));
    assert_eq!(b.ewma(1, now), Some(Duration::from_millis(500)));
    for _ in 0..100 {
        assert_eq!(b.pick(&set, |_| false, None, now), Some(0));
    }
    // Endpoint 0 takes load; at 500 requests in flight it costs more than endpoint 1 (1 ms ×
    // 501 > 500 ms × 1).
    for _ in 0..500 {
        b.start(0, now);
    }
    assert_eq!(b.pick(&set, |_| false, None, now), Some(1));
}

#[test]
fn in_flight_weighs_in_at_equal_latency() {
    let now = Instant::now();
    let set = CandidateSet::new([(0, 1), (1, 1)]);
    let mut b = Balancer::new(Algorithm::PeakEwma, 2, 5);
    for e in 0..2 {
        b.start(e, now);
        b.finish(e, Some(10 * MS), now);
    }
    // 10 ms × (1 + 1 in flight) = 20 ms against endpoint 0's 10 ms × 1.
    b.start(1, now);
    for _ in 0..100 {
        assert_eq!(b.pick(&set, |_| false, None, now), Some(0));
    }
    // Endpoint 0 at 2 in flight: 10 ms × 3 = 30 ms against 20 ms.
    b.start(0, now);
    b.start(0, now);
    for _ in 0..100 {
        assert_eq!(b.pick(&set, |_| false, None, now), Some(1));
    }
}

#[test]
fn the_estimate_decays_with_time_and_peaks_at_once() {
    let base = Instant::now();
    let at = |ms: u64| base + Duration::from_millis(ms);
    let mut b = Balancer::new(Algorithm::PeakEwma, 1, 0);
    assert_eq!(b.ewma(0, base), None, "no samples yet");
    b.finish(0, Some(10 * MS), at(0));
    b.finish(0, Some(80 * MS), at(1));
    assert_eq!(b.ewma(0, at(1)), Some(80 * MS), "a peak replaces the value");
    // Read 10 s (one time constant) later: decayed by 1/e.
    let read = b.ewma(0, at(10_001)).unwrap().as_secs_f64();
    assert!((read - 0.080 / std::f64::consts::E).abs() < 1e-6, "{read}");
    // A 20 ms sample then pulls the current value (80/e = 29.4 ms) towards it with weight
    // 1 - 1/e.
    b.finish(0, Some(20 * MS), at(10_001));
    let e = std::f64::consts::E;
    let want = 0.080 / (e * e) + 0.020 * (1.0 - 1.0 / e);
    let got = b.ewma(0, at(10_001)).unwrap().as_secs_f64();
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    // Other algorithms keep no estimate.
    let mut rr = Balancer::new(Algorithm::RoundRobin, 1, 0);
    rr.finish(0, Some(MS), base);
    assert_eq!(rr.ewma(0, base), None);
    assert_eq!(b.ewma(7, base), None, "unknown endpoint");
}

#[test]
fn a_new_endpoint_is_seeded_with_the_mean_and_neither_flooded_nor_starved() {
    let mut sim = Sim::new(&[10 * MS, 10 * MS], MS);
    sim.run(5_000);
    // Add endpoint 2 (also 10 ms) by a reload.
    sim.b.remap(&[Some(0), Some(1)], 3);
    sim.set = CandidateSet::new((0..3).map(|e| (e, 1)));
    sim.latency.push(10 * MS);
    assert_eq!(sim.b.ewma(2, sim.now), None);
    let before: Vec<u32> = (0..3).map(|e| sim.b.in_flight(e)).collect();

    // A burst of 300 requests at one instant, before anything finishes: the new endpoint's
    // estimate is the others' mean, so in-flight requests even out. (Seeded with zero it would
    // win every pair it is drawn into, two thirds of all; seeded high, none.)
    let mut burst = [0u32; 3];
    for _ in 0..300 {
        let e = sim.b.pick(&sim.set, |_| false, None, sim.now).unwrap();
        sim.b.start(e, sim.now);
        sim.pending.push((sim.now + sim.latency[e], e));
        burst[e] += 1;
    }
    let after: Vec<u32> = (0..3).map(|e| sim.b.in_flight(e)).collect();
    println!("burst after adding endpoint 2: in flight {before:?} -> {after:?}, picks {burst:?}");
    assert!(
        share(&burst, 2) > 0.25 && share(&burst, 2) < 0.45,
        "{burst:?}"
    );
    let (lo, hi) = (after.iter().min().unwrap(), after.iter().max().unwrap());
    assert!(hi - lo <= 10, "{after:?}");

    // And in steady state it takes its third.
    let steady = sim.run(10_000);
    println!("steady state: {steady:?}");
    assert!((share(&steady, 2) - 1.0 / 3.0).abs() < 0.05, "{steady:?}");
}

#[test]
fn without_any_samples_every_endpoint_gets_the_configured_seed() {
    let now = Instant::now();
    let set = CandidateSet::new((0..3).map(|e| (e, 1)));
    let mut b = Balancer::new(Algorithm::PeakEwma, 3, 11);
    let mut counts = [0u32; 3];
    for _ in 0..3000 {
        counts[b.pick(&set, |_| false, None, now).unwrap()] += 1;
    }
    // Equal estimates and no load: ties, won by the first drawn.
    for c in counts {
        assert!((900..1100).contains(&c), "{counts:?}");
    }
    // The seed is a real estimate, so load still counts: with one request in flight endpoint
    // 0 costs seed × 2 against seed × 1 and loses every pair. (An estimate of zero would make
    // every cost zero and leave endpoint 0 its third.)
    b.start(0, now);
    for _ in 0..300 {
        assert_ne!(b.pick(&set, |_| false, None, now), Some(0));
    }
}

#[test]
fn an_abandoned_request_leaves_in_flight_and_no_sample() {
    let now = Instant::now();
    let mut b = Balancer::new(Algorithm::PeakEwma, 2, 5);
    b.start(0, now);
    b.finish(0, Some(MS), now);
    b.start(0, now);
    assert_eq!(b.in_flight(0), 1);
    b.abandon(0);
    assert_eq!(b.in_flight(0), 0);
    assert_eq!(b.ewma(0, now), Some(MS), "no failure penalty");
    b.abandon(1);
    assert_eq!(b.in_flight(1), 0, "never below zero");
    assert_eq!(
        b.ewma(1, now),
        None,
        "no sample for an endpoint never heard from"
    );
}
