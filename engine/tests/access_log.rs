//! Access log: lines from shard threads reach the file as valid JSON, escaping, Off, reopen for
//! rotation, shutdown flushing and drop accounting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use headwater_engine::access_log::{AccessLog, Entry, Limits, Target};
use serde_json::Value;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "headwater-access-log-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn entry<'a>(path: &'a [u8], route: Option<&'a str>) -> Entry<'a> {
    Entry {
        client: "192.0.2.7:51234".parse().unwrap(),
        method: "GET",
        path,
        status: 200,
        bytes_in: 12,
        bytes_out: 3456,
        upstream: Some("10.0.0.1:8000".parse().unwrap()),
        upstream_time: Some(Duration::from_micros(1_234)),
        total_time: Duration::from_micros(1_562),
        retries: 1,
        route,
        time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        llm: None,
    }
}

fn read_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with(b"\n"),
        "file ends with a newline"
    );
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            assert!(
                l.iter().all(|&b| b >= 0x20),
                "raw control byte in {:?}",
                String::from_utf8_lossy(l)
            );
            let v: Value = serde_json::from_slice(l)
                .unwrap_or_else(|e| panic!("invalid JSON ({e}): {}", String::from_utf8_lossy(l)));
            assert!(v.is_object());
            v
        })
        .collect()
}

#[test]
fn lines_from_several_shards_all_arrive_as_json() {
    const SHARDS: usize = 4;
    const PER_SHARD: usize = 5_000;
    let dir = TempDir::new("shards");
    let file = dir.path("access.log");
    let log = AccessLog::start(Target::File(file.clone()), SHARDS).unwrap();
    let threads: Vec<_> = (0..SHARDS)
        .map(|i| {
            let mut shard = log.shard(i);
            std::thread::spawn(move || {
                assert!(shard.enabled());
                for n in 0..PER_SHARD {
                    let path = format!("/shard/{i}/{n}?q=1");
                    let mut e = entry(path.as_bytes(), Some("api"));
                    if n % 3 == 0 {
                        e.upstream = None;
                        e.upstream_time = None;
                        e.route = None;
                        e.status = 404;
                        e.client = "[2001:db8::1]:443".parse().unwrap();
                    }
                    shard.log(&e);
                    if n % 1000 == 0 {
                        shard.flush(); // as the shard's timer would
                    }
                }
                shard.flush();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    log.shutdown();

    let lines = read_lines(&file);
    assert_eq!(lines.len(), SHARDS * PER_SHARD);
    let mut seen = vec![vec![false; PER_SHARD]; SHARDS];
    for v in &lines {
        let shard = v["shard"].as_u64().unwrap() as usize;
        let path = v["path"].as_str().unwrap();
        let n: usize = path
            .strip_prefix(&format!("/shard/{shard}/"))
            .and_then(|p| p.strip_suffix("?q=1"))
            .unwrap()
            .parse()
            .unwrap();
        assert!(!seen[shard][n], "duplicate line");
        seen[shard][n] = true;

        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["bytes_in"], 12);
        assert_eq!(v["bytes_out"], 3456);
        assert_eq!(v["total_time_ms"].as_f64(), Some(1.562));
        assert_eq!(v["retries"], 1);
        // Every third line was logged without upstream or route (see above).
        let unmatched = matches!(n % 3, 0);
        if unmatched {
            assert_eq!(v["client"], "[2001:db8::1]:443");
            assert_eq!(v["status"], 404);
            assert!(v["upstream"].is_null());
            assert!(v["upstream_time_ms"].is_null());
            assert!(v["route"].is_null());
        } else {
            assert_eq!(v["client"], "192.0.2.7:51234");
            assert_eq!(v["status"], 200);
            assert_eq!(v["upstream"], "10.0.0.1:8000");
            assert_eq!(v["upstream_time_ms"].as_f64(), Some(1.234));
            assert_eq!(v["route"], "api");
        }
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 13, "{keys:?}");
    }
    assert!(seen.iter().flatten().all(|&s| s));
}

#[test]
fn nasty_paths_are_escaped() {
    let dir = TempDir::new("escape");
    let file = dir.path("access.log");
    let log = AccessLog::start(Target::File(file.clone()), 1).unwrap();
    let mut shard = log.shard(0);
    let nasty: &[u8] = b"/a\"b\\c\x00\x01\x1b[31m\n\r\t\x7f/\xe2\x82\xac/\xff\xfe/%22\xc3/\xe2\x82";
    let mut e = entry(nasty, Some("r\"oute\\\n"));
    e.method = "G\"ET\n";
    shard.log(&e);
    drop(shard);
    log.shutdown();

    let lines = read_lines(&file);
    assert_eq!(lines.len(), 1);
    let v = &lines[0];
    assert_eq!(v["path"].as_str().unwrap(), String::from_utf8_lossy(nasty));
    assert!(v["path"].as_str().unwrap().contains('\u{fffd}'));
    assert_eq!(v["method"], "G\"ET\n");
    assert_eq!(v["route"], "r\"oute\\\n");
}

#[test]
fn off_formats_nothing() {
    let log = AccessLog::start(Target::Off, 2).unwrap();
    let mut shard = log.shard(1);
    assert!(!shard.enabled());
    for _ in 0..1000 {
        shard.log(&entry(b"/x", None));
        assert_eq!(shard.pending(), 0);
    }
    shard.flush();
    log.reopen();
    assert_eq!(log.dropped(), 0);
    log.shutdown();
    shard.log(&entry(b"/x", None));
}

#[test]
fn reopen_after_rename_writes_to_a_new_file() {
    let dir = TempDir::new("reopen");
    let file = dir.path("access.log");
    let rotated = dir.path("access.log.1");
    let log = AccessLog::start(Target::File(file.clone()), 1).unwrap();
    let mut shard = log.shard(0);
    for _ in 0..10 {
        shard.log(&entry(b"/before", None));
    }
    shard.flush();
    std::fs::rename(&file, &rotated).unwrap();
    log.reopen();
    for _ in 0..7 {
        shard.log(&entry(b"/after", None));
    }
    shard.flush();
    log.shutdown();

    let old = read_lines(&rotated);
    let new = read_lines(&file);
    assert_eq!(old.len(), 10);
    assert!(old.iter().all(|v| v["path"] == "/before"));
    assert_eq!(new.len(), 7);
    assert!(new.iter().all(|v| v["path"] == "/after"));
}

#[test]
fn file_is_appended_not_truncated() {
    let dir = TempDir::new("append");
    let file = dir.path("access.log");
    std::fs::write(&file, b"{\"earlier\":true}\n").unwrap();
    let log = AccessLog::start(Target::File(file.clone()), 1).unwrap();
    let mut shard = log.shard(0);
    shard.log(&entry(b"/x", None));
    drop(shard);
    log.shutdown();
    let lines = read_lines(&file);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["earlier"], true);
}

#[test]
fn shutdown_flushes_everything_handed_over() {
    let dir = TempDir::new("shutdown");
    let file = dir.path("access.log");
    let log = AccessLog::start(Target::File(file.clone()), 3).unwrap();
    let mut a = log.shard(0);
    let mut b = log.shard(1);
    let mut c = log.shard(2);
    // a: many full buffers; b: small, flushed explicitly; c: small, flushed by drop.
    for n in 0..20_000 {
        a.log(&entry(format!("/a/{n}").as_bytes(), None));
    }
    a.flush();
    for _ in 0..3 {
        b.log(&entry(b"/b", None));
        c.log(&entry(b"/c", None));
    }
    assert!(b.pending() > 0);
    b.flush();
    assert_eq!(b.pending(), 0);
    drop(c);
    log.shutdown();
    assert_eq!(read_lines(&file).len(), 20_006);

    // After shutdown, handing lines over neither blocks nor panics (they are counted as dropped).
    b.log(&entry(b"/late", None));
    b.flush();
}

#[test]
fn a_full_queue_drops_and_counts_lines() {
    let dir = TempDir::new("drop");
    let file = dir.path("access.log");
    let limits = Limits {
        max_queued_bytes: 0,
        ..Limits::default()
    };
    let log = AccessLog::start_with(Target::File(file.clone()), 1, limits).unwrap();
    let mut shard = log.shard(0);
    for _ in 0..10 {
        shard.log(&entry(b"/x", None));
    }
    shard.flush();
    assert_eq!(log.dropped(), 10);
    drop(shard);
    log.shutdown();
    assert_eq!(read_lines(&file).len(), 0);
}

#[test]
fn buffers_are_handed_over_by_size_and_by_age() {
    let dir = TempDir::new("handover");
    let file = dir.path("access.log");
    let limits = Limits {
        buffer_bytes: 1024,
        flush_interval: Duration::from_millis(100),
        ..Limits::default()
    };
    let log = AccessLog::start_with(Target::File(file.clone()), 1, limits).unwrap();
    let mut shard = log.shard(0);
    let mut e = entry(b"/x", None);
    shard.log(&e);
    let one = shard.pending();
    assert!(one > 0);
    // 50 ms later by the entries' clock: still buffered.
    e.time += Duration::from_millis(50);
    shard.log(&e);
    assert_eq!(shard.pending(), 2 * one);
    // 100 ms after the first: handed over.
    e.time += Duration::from_millis(50);
    shard.log(&e);
    assert_eq!(shard.pending(), 0);
    // Past buffer_bytes: handed over.
    let mut handed = false;
    for _ in 0..(1024 / one + 1) {
        shard.log(&e);
        handed |= shard.pending() == 0;
    }
    assert!(handed);
    drop(shard);
    log.shutdown();
    assert_eq!(read_lines(&file).len(), 3 + 1024 / one + 1);
}

#[test]
fn a_bad_file_path_fails_at_start() {
    let dir = TempDir::new("bad");
    let missing = dir.path("no/such/dir/access.log");
    assert!(AccessLog::start(Target::File(missing), 1).is_err());
}

#[test]
fn ipv6_upstream_and_client_render_as_strings() {
    let dir = TempDir::new("v6");
    let file = dir.path("access.log");
    let log = AccessLog::start(Target::File(file.clone()), 1).unwrap();
    let mut shard = log.shard(0);
    let mut e = entry(b"/", Some("r"));
    let v6: SocketAddr = "[fe80::1%2]:8080".parse().unwrap();
    e.upstream = Some(v6);
    e.client = v6;
    shard.log(&e);
    drop(shard);
    log.shutdown();
    let lines = read_lines(&file);
    assert_eq!(lines[0]["upstream"], v6.to_string());
    assert_eq!(lines[0]["client"], v6.to_string());
}
