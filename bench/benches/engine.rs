//! Criterion benches of the engine's per-request lookups: `cargo bench -p headwater-bench --bench engine`.
//!
//! What one iteration measures:
//!
//! - `route_match/<case>`: `Config::match_route` over a config of 24 routes (exact hosts,
//!   `*.suffix` hosts, path prefixes and exact paths, methods, header matchers): the first route
//!   (`first`), the last one (`last`: every matcher before it is evaluated and rejected), and a
//!   request no route accepts (`miss`, the 404).
//! - `snapshot/generation`: the check a shard makes on every request to see whether the health
//!   thread published a new snapshot (one atomic load).
//! - `snapshot/load`: taking the current snapshot (what a shard does once per publication).
//! - `snapshot/record`: recording one attempt's outcome into the shard's counter cell (what
//!   every attempt pays), and `snapshot/totals_8_shards`: the health thread summing one
//!   endpoint's cells over 8 shards (per endpoint per 50 ms tick).

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use headwater_engine::config::{self, Config};
use headwater_engine::health::{
    Cells, ClusterHealth, EndpointHealth, EndpointState, HealthSnapshot, HealthTable,
};
use headwater_health::Outcome;
use http::{HeaderName, Method};

/// 24 routes: 8 exact hosts, 8 `*.suffix` hosts with path prefixes, 4 exact paths with a
/// method, 4 header matchers; the last is a catch-all for host `last.example`.
fn routes_config() -> Config {
    let mut text = String::from(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[[cluster]]\nname = \"app\"\nendpoints = [{ address = \"127.0.0.1:9\" }]\n\n",
    );
    for i in 0..8 {
        text.push_str(&format!(
            "[[route]]\nname = \"host{i}\"\ncluster = \"app\"\nmatch = {{ host = \"api{i}.example.com\" }}\n\n"
        ));
    }
    for i in 0..8 {
        text.push_str(&format!(
            "[[route]]\nname = \"suffix{i}\"\ncluster = \"app\"\nmatch = {{ host = \"*.tenant{i}.example.com\", path_prefix = \"/v{i}/\" }}\n\n"
        ));
    }
    for i in 0..4 {
        text.push_str(&format!(
            "[[route]]\nname = \"exact{i}\"\ncluster = \"app\"\nmatch = {{ path = \"/exact/{i}\", method = [\"POST\"] }}\n\n"
        ));
    }
    for i in 0..3 {
        text.push_str(&format!(
            "[[route]]\nname = \"header{i}\"\ncluster = \"app\"\nmatch = {{ headers = [{{ name = \"x-tenant\", value = \"t{i}\" }}] }}\n\n"
        ));
    }
    text.push_str(
        "[[route]]\nname = \"last\"\ncluster = \"app\"\nmatch = { host = \"last.example\" }\n",
    );
    config::parse(&text, "bench.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn bench_routes(c: &mut Criterion) {
    let config = routes_config();
    assert_eq!(config.routes.len(), 24);
    type Headers = fn(&HeaderName) -> Option<&'static [u8]>;
    let no_header: Headers = |_| None;
    let other_tenant: Headers = |name| (name == "x-tenant").then_some(&b"someone-else"[..]);
    // (case, Host, header lookup, the route it must match).
    let cases: [(&str, &[u8], Headers, Option<usize>); 3] = [
        ("first", b"api0.example.com:8080", no_header, Some(0)),
        ("last", b"LAST.example", other_tenant, Some(23)),
        ("miss", b"nobody.example.org", other_tenant, None),
    ];
    let mut g = c.benchmark_group("route_match");
    for (case, host, headers, want) in cases {
        assert_eq!(
            config.match_route(&Method::GET, Some(host), b"/users/42", headers),
            want,
            "{case}"
        );
        g.bench_function(case, |b| {
            b.iter(|| {
                config.match_route(
                    &Method::GET,
                    black_box(Some(host)),
                    black_box(b"/users/42"),
                    headers,
                )
            })
        });
    }
    g.finish();
}

/// A snapshot of one cluster of 8 healthy endpoints whose counters have `shards` cells.
fn snapshot(generation: u64, shards: usize) -> HealthSnapshot {
    let endpoints = (0..8u16)
        .map(|i| EndpointHealth {
            address: SocketAddr::from(([127, 0, 0, 1], 9000 + i)),
            state: EndpointState::Healthy,
            routable: true,
            weight: 1,
            priority: 0,
            ejected_until: None,
            ejections: 0,
            last_failure: None,
            last_probe: None,
            recovery: None,
            cells: Arc::new(Cells::new(shards)),
        })
        .collect();
    HealthSnapshot {
        generation,
        config_id: 1,
        published_at: Instant::now(),
        clusters: vec![ClusterHealth {
            name: "app".into(),
            endpoints,
            healthy: 8,
            earliest_recovery: None,
            panic: false,
        }],
    }
}

fn bench_snapshot(c: &mut Criterion) {
    let table = HealthTable::new(snapshot(1, 8));
    let mut g = c.benchmark_group("snapshot");
    g.bench_function("generation", |b| b.iter(|| black_box(&table).generation()));
    g.bench_function("load", |b| b.iter(|| black_box(&table).load()));
    let current = table.load();
    let cells = &current.clusters[0].endpoints[3].cells;
    let ok = Outcome::Response {
        status: 200,
        latency: Duration::from_micros(250),
    };
    g.bench_function("record", |b| b.iter(|| cells.record(black_box(2), ok)));
    g.bench_function("totals_8_shards", |b| b.iter(|| black_box(cells).totals()));
    g.finish();
}

criterion_group!(benches, bench_routes, bench_snapshot);
criterion_main!(benches);
