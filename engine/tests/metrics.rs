//! Metrics registry: cross-shard aggregation, interning across reloads, and the validity of the
//! Prometheus text exposition (checked by a small strict parser below).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use headwater_engine::metrics::{Registry, TimeoutKind, MAX_ROUTES};

/// One parsed sample line.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses `{a="x",b="y"}` starting at the `{`; returns the labels and the rest of the line.
fn parse_labels(s: &str) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').expect("labels start with {");
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return (labels, r);
        }
        let eq = rest.find('=').expect("label has =");
        let name = &rest[..eq];
        assert!(valid_label_name(name), "bad label name {name:?}");
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .expect("label value is quoted");
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next().expect("unterminated label value");
            match c {
                '"' => break i,
                '\\' => match chars.next().expect("dangling escape").1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    other => panic!("invalid escape \\{other}"),
                },
                '\n' => panic!("raw newline in label value"),
                c => value.push(c),
            }
        };
        assert!(
            labels.insert(name.to_owned(), value).is_none(),
            "duplicate label {name}"
        );
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else {
            assert!(rest.starts_with('}'), "expected , or }} in {rest:?}");
        }
    }
}

/// Strictly parses exposition text: every sample belongs to a family announced by HELP and TYPE
/// lines before it, families are contiguous and announced once, no series is repeated.
/// Returns the samples and the family types.
fn parse(text: &str) -> (Vec<Sample>, HashMap<String, String>) {
    assert!(text.ends_with('\n'), "text ends with a newline");
    let mut samples = Vec::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashMap<String, String> = HashMap::new();
    let mut current: Option<String> = None;
    let mut finished: Vec<String> = Vec::new();
    let mut seen_series = std::collections::HashSet::new();
    for line in text.lines() {
        assert!(!line.is_empty(), "empty line");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has text");
            assert!(valid_metric_name(name));
            assert!(!help.is_empty());
            assert!(
                helps.insert(name.to_owned(), help.to_owned()).is_none(),
                "HELP twice: {name}"
            );
            if let Some(prev) = current.replace(name.to_owned()) {
                finished.push(prev);
            }
            assert!(
                !finished.contains(&name.to_owned()),
                "family {name} not contiguous"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
            assert_eq!(Some(name), current.as_deref(), "TYPE right after its HELP");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad type {kind}"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE twice"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line}");
        let name_end = line.find(['{', ' ']).expect("sample has a value");
        let name = &line[..name_end];
        assert!(valid_metric_name(name), "bad metric name {name:?}");
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..])
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let value_str = rest.strip_prefix(' ').expect("space before value");
        assert!(!value_str.contains(' '), "no timestamps expected: {line}");
        let value: f64 = match value_str {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let family = current.as_deref().expect("sample before any HELP");
        let kind = &types[family];
        let ok = match kind.as_str() {
            "histogram" => [
                format!("{family}_bucket"),
                format!("{family}_sum"),
                format!("{family}_count"),
            ]
            .contains(&name.to_owned()),
            _ => name == family,
        };
        assert!(
            ok,
            "sample {name} does not belong to family {family} ({kind})"
        );
        if kind == "counter" {
            assert!(value >= 0.0, "negative counter: {line}");
        }
        let series = format!("{name}{labels:?}");
        assert!(seen_series.insert(series), "series repeated: {line}");
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    (samples, types)
}

fn render(reg: &Registry) -> Vec<Sample> {
    let mut text = String::new();
    reg.render_prometheus(&mut text);
    parse(&text).0
}

fn get(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    get(samples, name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
}

#[test]
fn counts_from_several_shard_threads_sum_on_scrape() {
    const SHARDS: usize = 4;
    const N: u64 = 10_000;
    let reg = Registry::new(SHARDS);
    let ids = reg.intern(&["api", "web"], &["app", "static"]).unwrap();
    let (api, web) = (ids.routes[0], ids.routes[1]);
    let (app, stat) = (ids.clusters[0], ids.clusters[1]);

    let threads: Vec<_> = (0..SHARDS)
        .map(|i| {
            let reg = Arc::clone(&reg);
            thread::spawn(move || {
                let m = reg.shard(i);
                for n in 0..N {
                    m.connection_opened();
                    let status = if n % 10 == 0 { 502 } else { 200 };
                    m.request(
                        Some(api),
                        Some(app),
                        status,
                        Duration::from_millis(2),
                        10,
                        100,
                    );
                    m.request(Some(web), Some(stat), 304, Duration::from_micros(50), 1, 0);
                    m.request(None, None, 404, Duration::from_micros(20), 5, 9);
                    if n % 2 == 0 {
                        m.pool_hit(app);
                    } else {
                        m.pool_miss(app);
                    }
                    if n % 100 == 0 {
                        m.upstream_connect_error(app);
                        m.timeout(TimeoutKind::UpstreamConnect);
                        m.bad_request(431);
                    }
                    if n + 1 < N || i % 2 == 0 {
                        m.connection_closed();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }

    let s = render(&reg);
    let total = (SHARDS as u64 * N) as f64;
    let req = "headwater_requests_total";
    assert_eq!(
        value(
            &s,
            req,
            &[("route", "api"), ("cluster", "app"), ("code_class", "2xx")]
        ),
        total * 0.9
    );
    assert_eq!(
        value(
            &s,
            req,
            &[("route", "api"), ("cluster", "app"), ("code_class", "5xx")]
        ),
        total * 0.1
    );
    assert_eq!(
        value(
            &s,
            req,
            &[("route", "api"), ("cluster", "app"), ("code_class", "4xx")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &s,
            req,
            &[
                ("route", "web"),
                ("cluster", "static"),
                ("code_class", "3xx")
            ]
        ),
        total
    );
    assert_eq!(
        value(
            &s,
            req,
            &[("route", ""), ("cluster", ""), ("code_class", "4xx")]
        ),
        total
    );
    // Pairs never seen are not emitted.
    assert_eq!(
        get(
            &s,
            req,
            &[
                ("route", "api"),
                ("cluster", "static"),
                ("code_class", "2xx")
            ]
        ),
        None
    );

    let dur = "headwater_request_duration_seconds";
    assert_eq!(
        value(&s, &format!("{dur}_count"), &[("route", "api")]),
        total
    );
    assert_eq!(
        value(
            &s,
            &format!("{dur}_bucket"),
            &[("route", "api"), ("le", "0.001")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &s,
            &format!("{dur}_bucket"),
            &[("route", "api"), ("le", "0.0025")]
        ),
        total
    );
    assert!((value(&s, &format!("{dur}_sum"), &[("route", "api")]) - total * 0.002).abs() < 1e-6);
    assert_eq!(
        value(
            &s,
            &format!("{dur}_bucket"),
            &[("route", "web"), ("le", "0.0001")]
        ),
        total
    );

    assert_eq!(
        value(&s, "headwater_bytes_received_total", &[("route", "api")]),
        total * 10.0
    );
    assert_eq!(
        value(&s, "headwater_bytes_sent_total", &[("route", "api")]),
        total * 100.0
    );
    assert_eq!(
        value(&s, "headwater_bytes_received_total", &[("route", "")]),
        total * 5.0
    );
    assert_eq!(
        value(&s, "headwater_bytes_sent_total", &[("route", "web")]),
        0.0
    );

    assert_eq!(
        value(&s, "headwater_pool_hits_total", &[("cluster", "app")]),
        total / 2.0
    );
    assert_eq!(
        value(&s, "headwater_pool_misses_total", &[("cluster", "app")]),
        total / 2.0
    );
    assert_eq!(
        value(&s, "headwater_pool_hits_total", &[("cluster", "static")]),
        0.0
    );
    let per_hundred = (SHARDS as u64 * N / 100) as f64;
    assert_eq!(
        value(
            &s,
            "headwater_upstream_connect_errors_total",
            &[("cluster", "app")]
        ),
        per_hundred
    );
    assert_eq!(
        value(
            &s,
            "headwater_timeouts_total",
            &[("kind", "upstream_connect")]
        ),
        per_hundred
    );
    assert_eq!(
        value(&s, "headwater_timeouts_total", &[("kind", "client_header")]),
        0.0
    );
    assert_eq!(
        value(&s, "headwater_bad_requests_total", &[("code", "431")]),
        per_hundred
    );
    assert_eq!(
        value(&s, "headwater_bad_requests_total", &[("code", "400")]),
        0.0
    );

    for i in 0..SHARDS {
        let shard = i.to_string();
        let active = if i % 2 == 0 { 0.0 } else { 1.0 };
        assert_eq!(
            value(&s, "headwater_active_connections", &[("shard", &shard)]),
            active
        );
        assert_eq!(
            value(
                &s,
                "headwater_connections_accepted_total",
                &[("shard", &shard)]
            ),
            N as f64
        );
    }
}

#[test]
fn scraping_while_shards_record_is_consistent_and_monotonic() {
    let reg = Registry::new(2);
    let ids = reg.intern(&["r"], &["c"]).unwrap();
    let (r, c) = (ids.routes[0], ids.clusters[0]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|i| {
            let (reg, stop) = (Arc::clone(&reg), Arc::clone(&stop));
            thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    reg.shard(i).request(
                        Some(r),
                        Some(c),
                        200,
                        Duration::from_micros(n % 5000),
                        1,
                        1,
                    );
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut last = 0.0;
    for _ in 0..50 {
        let s = render(&reg);
        let count = value(
            &s,
            "headwater_request_duration_seconds_count",
            &[("route", "r")],
        );
        let inf = value(
            &s,
            "headwater_request_duration_seconds_bucket",
            &[("route", "r"), ("le", "+Inf")],
        );
        assert_eq!(count, inf);
        assert!(count >= last, "counter went backwards");
        last = count;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total: u64 = writers.into_iter().map(|t| t.join().unwrap()).sum();
    let s = render(&reg);
    let pairs = [("route", "r"), ("cluster", "c"), ("code_class", "2xx")];
    assert_eq!(value(&s, "headwater_requests_total", &pairs), total as f64);
}

#[test]
fn interning_keeps_ids_and_counters_across_reloads() {
    let reg = Registry::new(1);
    let first = reg.intern(&["a", "b"], &["x"]).unwrap();
    assert_eq!(
        first.routes.iter().map(|r| r.index()).collect::<Vec<_>>(),
        [0, 1]
    );
    assert_eq!(first.clusters[0].index(), 0);
    reg.shard(0).request(
        Some(first.routes[0]),
        Some(first.clusters[0]),
        200,
        Duration::ZERO,
        3,
        4,
    );

    let second = reg.intern(&["b", "c", "a"], &["y", "x"]).unwrap();
    assert_eq!(
        second.routes,
        [first.routes[1], second.routes[1], first.routes[0]]
    );
    assert_eq!(
        second.routes[1].index(),
        2,
        "new names get the next dense id"
    );
    assert_eq!(second.clusters, [second.clusters[0], first.clusters[0]]);
    assert_eq!(second.clusters[0].index(), 1);
    // A repeated name gets the same id.
    let third = reg.intern(&["a", "a"], &[]).unwrap();
    assert_eq!(third.routes, [first.routes[0], first.routes[0]]);

    reg.shard(0).request(
        Some(second.routes[2]),
        Some(second.clusters[1]),
        200,
        Duration::ZERO,
        3,
        4,
    );
    let s = render(&reg);
    let pairs = [("route", "a"), ("cluster", "x"), ("code_class", "2xx")];
    assert_eq!(value(&s, "headwater_requests_total", &pairs), 2.0);
    assert_eq!(
        value(&s, "headwater_bytes_received_total", &[("route", "a")]),
        6.0
    );
    // Every interned name is exported, including new ones with no traffic.
    assert_eq!(
        value(&s, "headwater_bytes_received_total", &[("route", "c")]),
        0.0
    );
    assert_eq!(
        value(&s, "headwater_pool_hits_total", &[("cluster", "y")]),
        0.0
    );
}

#[test]
fn only_interned_ids_are_exported() {
    let reg = Registry::new(1);
    let s = render(&reg);
    let routes: Vec<_> = s.iter().filter_map(|x| x.labels.get("route")).collect();
    assert!(routes.iter().all(|r| r.is_empty()), "{routes:?}");
    assert!(s.iter().all(|x| !x.labels.contains_key("cluster")));
    assert_eq!(value(&s, "headwater_config_generation", &[]), 0.0);
}

#[test]
fn interning_is_capped_and_atomic() {
    let reg = Registry::new(1);
    let names: Vec<String> = (0..MAX_ROUTES).map(|i| format!("r{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let ids = reg.intern(&refs, &["c"]).unwrap();
    assert_eq!(ids.routes.last().unwrap().index(), MAX_ROUTES - 1);
    // Known names still intern; one new name is over the cap, and nothing of the call is kept.
    assert!(reg.intern(&["r7"], &["c"]).is_ok());
    let err = reg.intern(&["r1", "new"], &["c2"]).unwrap_err();
    assert!(err.contains("route"), "{err}");
    let again = reg.intern(&[], &["c2"]).unwrap();
    assert_eq!(
        again.clusters[0].index(),
        1,
        "the failed call interned nothing"
    );
    assert!(reg.intern(&[""], &[]).is_err());
    assert!(reg.intern(&[], &[""]).is_err());
    // The highest id has storage.
    let last = *ids.routes.last().unwrap();
    reg.shard(0)
        .request(Some(last), None, 200, Duration::ZERO, 1, 0);
    let s = render(&reg);
    let name = format!("r{}", MAX_ROUTES - 1);
    assert_eq!(
        value(&s, "headwater_bytes_received_total", &[("route", &name)]),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "headwater_requests_total",
            &[("route", &name), ("cluster", ""), ("code_class", "2xx")]
        ),
        1.0
    );
}

#[test]
fn exposition_has_help_type_escaping_and_cumulative_histograms() {
    let reg = Registry::new(2);
    let nasty_route = "we\"ird\\route\nname";
    let nasty_cluster = "c\\\"";
    let ids = reg
        .intern(&[nasty_route, "plain"], &[nasty_cluster])
        .unwrap();
    let latencies_ms = [0u64, 1, 1, 7, 30, 300, 3_000, 120_000];
    for (i, ms) in latencies_ms.iter().enumerate() {
        reg.shard(i % 2).request(
            Some(ids.routes[0]),
            Some(ids.clusters[0]),
            200,
            Duration::from_millis(*ms),
            0,
            0,
        );
    }
    reg.shard(0).bad_request(400);
    reg.shard(1).bad_request(999);
    reg.reload(true);
    reg.reload(true);
    reg.reload(false);
    reg.set_config_generation(3);

    let mut text = String::new();
    reg.render_prometheus(&mut text);
    assert!(text.contains(r#"route="we\"ird\\route\nname""#), "{text}");
    assert!(text.contains(r#"cluster="c\\\"""#), "{text}");
    let (s, types) = parse(&text);

    for (family, kind) in [
        ("headwater_requests_total", "counter"),
        ("headwater_request_duration_seconds", "histogram"),
        ("headwater_upstream_connect_errors_total", "counter"),
        ("headwater_pool_hits_total", "counter"),
        ("headwater_pool_misses_total", "counter"),
        ("headwater_active_connections", "gauge"),
        ("headwater_connections_accepted_total", "counter"),
        ("headwater_bytes_received_total", "counter"),
        ("headwater_bytes_sent_total", "counter"),
        ("headwater_timeouts_total", "counter"),
        ("headwater_bad_requests_total", "counter"),
        ("headwater_config_reloads_total", "counter"),
        ("headwater_config_generation", "gauge"),
    ] {
        assert_eq!(
            types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }

    // The escaped label round-trips.
    let pairs = [
        ("route", nasty_route),
        ("cluster", nasty_cluster),
        ("code_class", "2xx"),
    ];
    assert_eq!(
        value(&s, "headwater_requests_total", &pairs),
        latencies_ms.len() as f64
    );

    // Histograms: buckets ascend in le, counts are cumulative, +Inf == _count.
    for route in ["", nasty_route, "plain"] {
        let buckets: Vec<(f64, f64)> = s
            .iter()
            .filter(|x| {
                x.name == "headwater_request_duration_seconds_bucket" && x.labels["route"] == route
            })
            .map(|x| {
                let le = &x.labels["le"];
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                (le, x.value)
            })
            .collect();
        assert!(
            buckets.len() >= 15 && buckets.len() <= 25,
            "{}",
            buckets.len()
        );
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{buckets:?}"
        );
        assert_eq!(buckets.last().unwrap().0, f64::INFINITY);
        let count = value(
            &s,
            "headwater_request_duration_seconds_count",
            &[("route", route)],
        );
        assert_eq!(buckets.last().unwrap().1, count);
        assert_eq!(buckets[0].0, 0.0001);
        assert_eq!(buckets[buckets.len() - 2].0, 60.0);
    }
    let le = |le: &str| {
        value(
            &s,
            "headwater_request_duration_seconds_bucket",
            &[("route", nasty_route), ("le", le)],
        )
    };
    assert_eq!(le("0.0001"), 1.0); // 0 ms
    assert_eq!(le("0.001"), 3.0); // + 1 ms twice
    assert_eq!(le("0.01"), 4.0); // + 7 ms
    assert_eq!(le("0.025"), 4.0);
    assert_eq!(le("0.05"), 5.0); // + 30 ms
    assert_eq!(le("0.5"), 6.0); // + 300 ms
    assert_eq!(le("5"), 7.0); // + 3 s
    assert_eq!(le("60"), 7.0);
    assert_eq!(le("+Inf"), 8.0); // + 120 s
    let sum = value(
        &s,
        "headwater_request_duration_seconds_sum",
        &[("route", nasty_route)],
    );
    assert!((sum - 123.339).abs() < 1e-9, "{sum}");
    assert_eq!(
        value(
            &s,
            "headwater_request_duration_seconds_count",
            &[("route", "plain")]
        ),
        0.0
    );

    assert_eq!(
        value(&s, "headwater_bad_requests_total", &[("code", "400")]),
        1.0
    );
    assert_eq!(
        value(&s, "headwater_bad_requests_total", &[("code", "other")]),
        1.0
    );
    assert_eq!(
        value(&s, "headwater_config_reloads_total", &[("result", "ok")]),
        2.0
    );
    assert_eq!(
        value(
            &s,
            "headwater_config_reloads_total",
            &[("result", "failed")]
        ),
        1.0
    );
    assert_eq!(value(&s, "headwater_config_generation", &[]), 3.0);
    assert_eq!(
        value(&s, "headwater_timeouts_total", &[("kind", "total")]),
        0.0
    );
    assert_eq!(TimeoutKind::ALL.len(), 7);
    for kind in TimeoutKind::ALL {
        assert!(get(&s, "headwater_timeouts_total", &[("kind", kind.as_str())]).is_some());
    }
}

#[test]
fn a_route_with_many_clusters_keeps_every_pair() {
    // Per route, a few clusters are stored inline and more spill to the shard's pair table.
    let reg = Registry::new(1);
    let clusters: Vec<String> = (0..20).map(|i| format!("provider-{i}")).collect();
    let refs: Vec<&str> = clusters.iter().map(String::as_str).collect();
    let ids = reg.intern(&["llm"], &refs).unwrap();
    for (i, &c) in ids.clusters.iter().enumerate() {
        for _ in 0..=i {
            reg.shard(0)
                .request(Some(ids.routes[0]), Some(c), 200, Duration::ZERO, 0, 0);
        }
    }
    reg.shard(0)
        .request(None, Some(ids.clusters[3]), 503, Duration::ZERO, 0, 0);
    let s = render(&reg);
    for (i, name) in clusters.iter().enumerate() {
        let pairs = [
            ("route", "llm"),
            ("cluster", name.as_str()),
            ("code_class", "2xx"),
        ];
        assert_eq!(
            value(&s, "headwater_requests_total", &pairs),
            (i + 1) as f64,
            "{name}"
        );
    }
    let pairs = [
        ("route", ""),
        ("cluster", "provider-3"),
        ("code_class", "5xx"),
    ];
    assert_eq!(value(&s, "headwater_requests_total", &pairs), 1.0);
    assert!(s
        .iter()
        .all(|x| x.name != "headwater_requests_unattributed_total"));
}
