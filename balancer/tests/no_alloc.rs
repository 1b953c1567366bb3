//! A pick (with start and finish) allocates nothing once the candidate set exists and, for
//! Maglev, its table is built.
//!
//! This test binary (not the library, which forbids unsafe code) installs a counting wrapper
//! around the system allocator, as `bench/benches/codec_ops.rs` does; it counts per thread, so
//! the test harness's own threads do not interfere.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use headwater_balancer::{plan, Algorithm, Balancer, CandidateSet, Member, Standing};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn picking_does_not_allocate() {
    let base = Instant::now();
    let sets = [
        CandidateSet::new((0..32).map(|e| (e, 1))),
        CandidateSet::new((0..32).map(|e| (e, 1 + (e % 5) as u32))),
    ];
    let avoided = [3usize, 17];
    for algorithm in Algorithm::ALL {
        for set in &sets {
            let mut b = Balancer::new(algorithm, 32, 1);
            b.prepare(set);
            let before = allocations();
            for i in 0..10_000u64 {
                let now = base + Duration::from_micros(i * 10);
                let avoid = |e: usize| i % 2 == 0 && avoided.contains(&e);
                let e = b
                    .pick(set, avoid, Some(i.wrapping_mul(0x9e37_79b9)), now)
                    .unwrap();
                b.start(e, now);
                b.finish(
                    e,
                    (i % 7 != 0).then(|| Duration::from_micros(300 + e as u64)),
                    now,
                );
                let _ = b.ewma(e, now);
            }
            let made = allocations() - before;
            assert_eq!(made, 0, "{algorithm}: {made} allocations in 10,000 picks");
        }
    }
}

#[test]
fn the_counter_does_count() {
    // The proof above means something only if allocations are seen.
    let before = allocations();
    let set = CandidateSet::new((0..4).map(|e| (e, 1)));
    let p = plan(
        &[Member {
            priority: 0,
            weight: 1,
            standing: Standing::Healthy,
        }],
        50,
    );
    assert!(allocations() > before);
    // And a Maglev pick on a set never seen builds (allocates) its table.
    let mut b = Balancer::new(Algorithm::Maglev, 4, 1);
    let before = allocations();
    b.pick(&set, |_| false, Some(1), Instant::now());
    assert!(allocations() > before);
    assert!(!p.is_empty());
}
