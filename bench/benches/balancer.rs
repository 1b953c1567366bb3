//! Criterion benches of the balancers' hot path: `cargo bench -p headwater-bench --bench balancer`.
//!
//! What one iteration measures:
//!
//! - `pick/<algorithm>/<n>`: one `Balancer::pick` over a candidate set of `n` endpoints of equal
//!   weight, with an empty avoid predicate (a request's first attempt); for `least-request` and
//!   `peak-ewma` also the `start` and `finish` (with a response time) that the engine reports
//!   around the request, since their state is what they pick by. Time is simulated: every
//!   iteration advances `now` by 10 µs, so peak-EWMA's decay does real work. `maglev` looks up
//!   a key out of 1024 precomputed `hash_key`s in a table built (and cached) before timing.
//! - `pick_weighted/<algorithm>/<n>`: the same over weights 1, 2, 3, 4, 1, 2, ...: the weighted
//!   draws then search cumulative weights instead of drawing a position.
//! - `plan/32/<case>`: `plan()` over 32 members on two priority levels (24 + 8), with a few
//!   degraded and down members (`healthy`) or most of level 0 degraded (`panic`). It allocates
//!   the candidate sets it returns: it runs once per health publication, not per request.
//! - `maglev_build/<n>`: building a 65537-slot Maglev table for `n` endpoints (what the first
//!   pick after a health publication pays unless the engine calls `prepare`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use headwater_balancer::{
    hash_key, plan, Algorithm, Balancer, CandidateSet, MaglevTable, Member, Standing,
};

/// Simulated time per iteration.
const STEP: Duration = Duration::from_micros(10);

fn keys() -> Vec<u64> {
    (0..1024u32)
        .map(|i| hash_key(format!("10.1.{}.{}", i / 256, i % 256).as_bytes()))
        .collect()
}

fn bench_picks(c: &mut Criterion, group: &str, weight: impl Fn(usize) -> u32) {
    let keys = keys();
    let mut g = c.benchmark_group(group);
    for n in [3usize, 32] {
        let set = CandidateSet::new((0..n).map(|e| (e, weight(e))));
        for algorithm in Algorithm::ALL {
            let mut b = Balancer::new(algorithm, n, 1);
            b.prepare(&set);
            let mut now = Instant::now();
            let mut i = 0usize;
            // Warm the per-endpoint state so that peak-EWMA compares estimates, not seeds.
            for e in 0..n {
                b.start(e, now);
                b.finish(e, Some(Duration::from_micros(200 + 10 * e as u64)), now);
            }
            let tracks_load = matches!(algorithm, Algorithm::LeastRequest | Algorithm::PeakEwma);
            g.bench_function(format!("{algorithm}/{n}"), |bench| {
                bench.iter(|| {
                    now += STEP;
                    i = (i + 1) & 1023;
                    let key = algorithm.uses_key().then(|| keys[i]);
                    let e = b.pick(black_box(&set), |_| false, key, now).unwrap();
                    if tracks_load {
                        b.start(e, now);
                        b.finish(e, Some(Duration::from_micros(200 + (i as u64 & 63))), now);
                    }
                    black_box(e)
                })
            });
        }
    }
    g.finish();
}

fn picks(c: &mut Criterion) {
    bench_picks(c, "pick", |_| 1);
}

fn weighted_picks(c: &mut Criterion) {
    bench_picks(c, "pick_weighted", |e| 1 + (e % 4) as u32);
}

fn members(panic: bool) -> Vec<Member> {
    (0..32)
        .map(|e| Member {
            priority: u8::from(e >= 24),
            weight: 1 + (e % 3) as u32,
            standing: match e {
                3 | 11 | 27 => Standing::Down,
                _ if panic && e < 20 => Standing::Degraded,
                7 | 19 => Standing::Degraded,
                _ => Standing::Healthy,
            },
        })
        .collect()
}

fn plans(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan/32");
    for (name, panic) in [("healthy", false), ("panic", true)] {
        let members = members(panic);
        assert_eq!(plan(&members, 50).panic(), panic);
        g.bench_function(name, |b| b.iter(|| plan(black_box(&members), 50)));
    }
    g.finish();
}

fn maglev_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_build");
    g.sample_size(10);
    for n in [3usize, 32] {
        let set = CandidateSet::new((0..n).map(|e| (e, 1)));
        let mut table = MaglevTable::build(&set, |e| e as u64, 65537);
        g.bench_function(n.to_string(), |b| {
            b.iter(|| table.rebuild(black_box(&set), |e| e as u64, 65537))
        });
    }
    g.finish();
}

criterion_group!(benches, picks, weighted_picks, plans, maglev_build);
criterion_main!(benches);
