//! Access log: one JSON object per line per request, written by a dedicated log thread.
//!
//! # What this module owns
//!
//! - [`AccessLog`]: the writer thread and its output ([`Target`]): nothing, stdout, or a file
//!   opened in append mode and reopened on [`AccessLog::reopen`] (log rotation: rename the file,
//!   then reopen). The control thread holds it.
//! - [`ShardLog`]: one per shard, moved to and owned by the shard thread. It formats entries into
//!   a local buffer and hands whole buffers to the writer; it never touches the disk and never
//!   blocks.
//! - the line format ([`Entry`]) and its hand-written JSON and RFC 3339 encoders.
//!
//! # Data flow
//!
//! A shard formats each [`Entry`] into its buffer (reused: no allocation per request beyond the
//! buffer's amortised growth). It hands the buffer over when it reaches [`Limits::buffer_bytes`]
//! (64 KiB), when [`Limits::flush_interval`] (100 ms) has passed since the last hand-over (judged
//! from the entries' own timestamps, so no clock read), on [`ShardLog::flush`] (the shard's timer
//! and its exit) and on drop. A hand-over sends the buffer over an unbounded `std::sync::mpsc`
//! channel and takes an empty one back from the shard's recycling channel (filled by the writer,
//! at most 4 buffers deep), so in steady state buffers circulate and nothing is allocated.
//!
//! Shared state touched by a shard is touched once per hand-over, not per request: the channel
//! and one atomic byte count of what is queued. When that count would exceed
//! [`Limits::max_queued_bytes`] (64 MiB), the shard drops the buffer's lines and counts them
//! ([`AccessLog::dropped`]) instead of waiting; lines the writer fails to write (disk full) are
//! counted the same way.
//!
//! # Line format
//!
//! ```json
//! {"time":"2023-11-14T22:13:20.123Z","shard":0,"client":"192.0.2.7:51234","method":"GET","path":"/v1/x?y=1","status":200,"bytes_in":0,"bytes_out":512,"upstream":"10.0.0.1:8000","upstream_time_ms":1.234,"total_time_ms":1.562,"retries":0,"route":"api"}
//! ```
//!
//! Requests served by an LLM route (`llm = true`) carry one more field, `llm`: the object of
//! `headwater_llm::RequestRecord::to_json` (model, deployment, provider, key name, outcome,
//! tokens, cost, TTFT, attempts, fallbacks).
//!
//! `upstream`, `upstream_time_ms` and `route` are `null` when absent. Times in milliseconds carry
//! three decimals (microsecond resolution). Strings are escaped for JSON: `"`, `\` and control
//! characters (and DEL) are escaped, and bytes that are not valid UTF-8 become `\ufffd` (one per
//! maximal invalid sequence, as `String::from_utf8_lossy` does).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the access log goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// No access log: shards format nothing.
    Off,
    /// Standard output.
    Stdout,
    /// A file, opened for appending (created if missing) and reopened by [`AccessLog::reopen`].
    File(PathBuf),
}

/// Buffering and back-pressure limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A shard hands its buffer to the writer once it holds this many bytes.
    pub buffer_bytes: usize,
    /// ... or once this long has passed (by entry timestamps) since its last hand-over.
    pub flush_interval: Duration,
    /// Bytes handed over but not yet written beyond which shards drop lines instead.
    pub max_queued_bytes: usize,
}

impl Limits {
    /// An empty shard buffer, with room for the line that crosses `buffer_bytes` so buffers
    /// rarely regrow.
    fn new_buffer(&self) -> Vec<u8> {
        Vec::with_capacity(self.buffer_bytes + 4096)
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            buffer_bytes: 64 * 1024,
            flush_interval: Duration::from_millis(100),
            max_queued_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Empty buffers the writer keeps ready per shard; more are freed.
const MAX_POOLED: usize = 4;

/// One request, as the proxy saw it. Borrowed from the request's state; nothing is copied until
/// it is formatted.
#[derive(Clone, Debug)]
pub struct Entry<'a> {
    /// The client's address.
    pub client: SocketAddr,
    /// The request method.
    pub method: &'a str,
    /// The request target as received (path and query); may be any bytes.
    pub path: &'a [u8],
    /// The status sent to the client.
    pub status: u16,
    /// Request bytes received from the client.
    pub bytes_in: u64,
    /// Response bytes sent to the client.
    pub bytes_out: u64,
    /// The endpoint that served the response, if any.
    pub upstream: Option<SocketAddr>,
    /// Time from sending to the upstream to its response's end, if an upstream was involved.
    pub upstream_time: Option<Duration>,
    /// Time from the request's first byte to the response's last.
    pub total_time: Duration,
    /// Retries made (0 when the first attempt answered).
    pub retries: u32,
    /// The matched route's name, if any.
    pub route: Option<&'a str>,
    /// When the request started (or ended; the caller's choice, applied consistently).
    pub time: SystemTime,
    /// For LLM routes: the request's accounting record, one JSON object
    /// (`headwater_llm::RequestRecord::to_json`), written as the `llm` field.
    pub llm: Option<&'a str>,
}

/// State shared by the shards and the writer.
struct Shared {
    queued_bytes: AtomicUsize,
    dropped: AtomicU64,
}

impl Shared {
    /// Takes back a hand-over of `len` bytes that was counted as queued, counting its `lines`
    /// as dropped.
    fn unqueue_dropped(&self, len: usize, lines: u64) {
        self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        self.dropped.fetch_add(lines, Ordering::Relaxed);
    }
}

/// Where the writer returns a shard's empty buffers.
struct ReturnPath {
    tx: Sender<Vec<u8>>,
    pooled: AtomicUsize,
}

enum Msg {
    Lines {
        buf: Vec<u8>,
        lines: u64,
        ret: Arc<ReturnPath>,
    },
    Reopen,
    Shutdown,
}

/// The access log: owns the writer thread. See the module docs.
pub struct AccessLog {
    /// `None` for [`Target::Off`], or once shut down.
    tx: Option<Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    shards: usize,
    limits: Limits,
}

impl AccessLog {
    /// Starts the log with default [`Limits`]. Opens the file (so a bad path fails here) and
    /// spawns the writer thread, except for [`Target::Off`].
    ///
    /// # Errors
    ///
    /// When the file cannot be opened for appending or the thread cannot be spawned.
    pub fn start(target: Target, shards: usize) -> io::Result<AccessLog> {
        AccessLog::start_with(target, shards, Limits::default())
    }

    /// Starts the log with the given limits.
    ///
    /// # Errors
    ///
    /// As [`AccessLog::start`].
    pub fn start_with(target: Target, shards: usize, limits: Limits) -> io::Result<AccessLog> {
        let shared = Arc::new(Shared {
            queued_bytes: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        });
        let output = match target {
            Target::Off => None,
            Target::Stdout => Some(Output::Stdout),
            Target::File(path) => {
                let file = open_append(&path)?;
                Some(Output::File { path, file })
            }
        };
        let (tx, thread) = match output {
            None => (None, None),
            Some(output) => {
                let (tx, rx) = mpsc::channel();
                let writer = Writer {
                    rx,
                    output,
                    shared: Arc::clone(&shared),
                    max_buffer: limits.buffer_bytes.saturating_mul(4),
                    failing: false,
                };
                let thread = std::thread::Builder::new()
                    .name("headwater-log".into())
                    .spawn(move || writer.run())?;
                (Some(tx), Some(thread))
            }
        };
        Ok(AccessLog {
            tx,
            thread,
            shared,
            shards,
            limits,
        })
    }

    /// The log handle for shard `i`, to be moved to that shard's thread. Call once per shard.
    ///
    /// # Panics
    ///
    /// If `i` is not below the shard count given to [`AccessLog::start`].
    pub fn shard(&self, i: usize) -> ShardLog {
        assert!(i < self.shards, "access log: shard {i} of {}", self.shards);
        let active = self.tx.as_ref().map(|tx| {
            let (ret_tx, pool) = mpsc::channel();
            Box::new(Active {
                tx: tx.clone(),
                shared: Arc::clone(&self.shared),
                ret: Arc::new(ReturnPath {
                    tx: ret_tx,
                    pooled: AtomicUsize::new(0),
                }),
                pool,
                buf: self.limits.new_buffer(),
                lines: 0,
                last_handoff_ms: i64::MIN,
                last_entry_ms: i64::MIN,
                limits: self.limits,
            })
        });
        ShardLog { active, shard: i }
    }

    /// Asks the writer to reopen the file (after it was renamed for rotation). Lines handed over
    /// before this call go to the old file, later ones to the new. A failed reopen is reported
    /// on stderr and the old file is kept. No effect for stdout or `Off`.
    pub fn reopen(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Reopen);
        }
    }

    /// Lines dropped so far: because the writer fell behind by more than
    /// [`Limits::max_queued_bytes`], because writing failed, or because they were handed over
    /// after shutdown.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Writes everything handed over so far, stops and joins the writer thread. Shards flush
    /// (or drop) their [`ShardLog`] before this; lines handed over later are counted as dropped.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::Shutdown);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Active {
    tx: Sender<Msg>,
    shared: Arc<Shared>,
    ret: Arc<ReturnPath>,
    pool: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    lines: u64,
    last_handoff_ms: i64,
    last_entry_ms: i64,
    limits: Limits,
}

/// A shard's access log handle: formats lines into a local buffer and hands full buffers to the
/// writer thread. Owned by one shard thread (`Send`, not shared).
pub struct ShardLog {
    /// `None` when the log is off. Boxed so a disabled handle is one word plus the index.
    active: Option<Box<Active>>,
    shard: usize,
}

impl ShardLog {
    /// Whether entries are logged at all; when false, callers may skip building [`Entry`]s.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.active.is_some()
    }

    /// Formats one entry into the local buffer; hands the buffer over when it is full or old.
    /// Never blocks.
    pub fn log(&mut self, e: &Entry<'_>) {
        let Some(a) = self.active.as_deref_mut() else {
            return;
        };
        let ms = unix_millis(e.time);
        format_entry(&mut a.buf, self.shard, ms, e);
        a.lines += 1;
        a.last_entry_ms = ms;
        if a.last_handoff_ms == i64::MIN {
            a.last_handoff_ms = ms;
        }
        let interval = i64::try_from(a.limits.flush_interval.as_millis()).unwrap_or(i64::MAX);
        if a.buf.len() >= a.limits.buffer_bytes || ms.saturating_sub(a.last_handoff_ms) >= interval
        {
            a.handoff();
        }
    }

    /// Hands the current buffer to the writer now (if it holds anything). The shard calls this on
    /// a timer and at exit; dropping the `ShardLog` does it too.
    pub fn flush(&mut self) {
        if let Some(a) = self.active.as_deref_mut() {
            a.handoff();
        }
    }

    /// Bytes formatted but not yet handed to the writer.
    pub fn pending(&self) -> usize {
        self.active.as_ref().map_or(0, |a| a.buf.len())
    }
}

impl Drop for ShardLog {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Active {
    fn handoff(&mut self) {
        self.last_handoff_ms = self.last_entry_ms;
        if self.buf.is_empty() {
            return;
        }
        let len = self.buf.len();
        let lines = std::mem::take(&mut self.lines);
        let before = self.shared.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before.saturating_add(len) > self.limits.max_queued_bytes {
            // The writer is behind: drop these lines rather than wait or grow without bound.
            self.shared.unqueue_dropped(len, lines);
            self.buf.clear();
            return;
        }
        let fresh = match self.pool.try_recv() {
            Ok(buf) => {
                self.ret.pooled.fetch_sub(1, Ordering::Relaxed);
                buf
            }
            Err(_) => self.limits.new_buffer(),
        };
        let buf = std::mem::replace(&mut self.buf, fresh);
        let msg = Msg::Lines {
            buf,
            lines,
            ret: Arc::clone(&self.ret),
        };
        if self.tx.send(msg).is_err() {
            // The writer has shut down.
            self.shared.unqueue_dropped(len, lines);
        }
    }
}

enum Output {
    Stdout,
    File { path: PathBuf, file: File },
}

fn open_append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

struct Writer {
    rx: Receiver<Msg>,
    output: Output,
    shared: Arc<Shared>,
    /// Buffers that grew beyond this are freed rather than recycled.
    max_buffer: usize,
    /// Whether the last write failed (errors are reported once per episode).
    failing: bool,
}

impl Writer {
    fn run(mut self) {
        let mut stopping = false;
        while let Ok(msg) = self.rx.recv() {
            stopping |= self.handle(msg);
            // Drain whatever else is queued, then flush once.
            while let Ok(msg) = self.rx.try_recv() {
                stopping |= self.handle(msg);
            }
            self.flush();
            if stopping {
                break;
            }
        }
    }

    /// Handles one message; true on shutdown.
    fn handle(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Lines {
                mut buf,
                lines,
                ret,
            } => {
                self.write(&buf, lines);
                self.shared
                    .queued_bytes
                    .fetch_sub(buf.len(), Ordering::Relaxed);
                if buf.capacity() <= self.max_buffer
                    && ret.pooled.load(Ordering::Relaxed) < MAX_POOLED
                {
                    buf.clear();
                    ret.pooled.fetch_add(1, Ordering::Relaxed);
                    if ret.tx.send(buf).is_err() {
                        ret.pooled.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                false
            }
            Msg::Reopen => {
                self.flush();
                if let Output::File { path, file } = &mut self.output {
                    match open_append(path) {
                        Ok(new) => *file = new,
                        Err(e) => eprintln!(
                            "headwater: access log: cannot reopen {}: {e}; still writing to the old file",
                            path.display()
                        ),
                    }
                }
                false
            }
            Msg::Shutdown => true,
        }
    }

    fn write(&mut self, buf: &[u8], lines: u64) {
        let result = match &mut self.output {
            Output::Stdout => io::stdout().lock().write_all(buf),
            Output::File { file, .. } => file.write_all(buf),
        };
        match result {
            Ok(()) => self.failing = false,
            Err(e) => {
                self.shared.dropped.fetch_add(lines, Ordering::Relaxed);
                if !self.failing {
                    eprintln!("headwater: access log: write failed: {e}; dropping lines");
                    self.failing = true;
                }
            }
        }
    }

    fn flush(&mut self) {
        if let Output::Stdout = self.output {
            let _ = io::stdout().lock().flush();
        }
    }
}

/// Milliseconds since the Unix epoch, floored (negative before it); saturates.
fn unix_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => {
            let ms = e.duration().as_nanos().div_ceil(1_000_000);
            i64::try_from(ms).map_or(i64::MIN + 1, |ms| -ms)
        }
    }
}

/// Civil date (year, month 1-12, day 1-31) of a day count since 1970-01-01, proleptic
/// Gregorian (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Appends `t` as RFC 3339 UTC with milliseconds, e.g. `2023-11-14T22:13:20.123Z` (truncated,
/// not rounded, to the millisecond).
pub fn write_rfc3339_millis(out: &mut Vec<u8>, t: SystemTime) {
    write_rfc3339_ms(out, unix_millis(t));
}

fn write_rfc3339_ms(out: &mut Vec<u8>, ms: i64) {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
}

/// Appends `s` escaped for the inside of a JSON string (no quotes added).
fn escape_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Appends `bytes` as a quoted JSON string; invalid UTF-8 becomes `\ufffd`.
fn write_json_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        escape_json_str(out, chunk.valid());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice(b"\\ufffd");
        }
    }
    out.push(b'"');
}

/// Appends a duration as milliseconds with three decimals.
fn write_ms(out: &mut Vec<u8>, d: Duration) {
    let us = d.as_micros();
    let _ = write!(out, "{}.{:03}", us / 1000, us % 1000);
}

/// Appends one log line (with its newline) for `e`.
fn format_entry(out: &mut Vec<u8>, shard: usize, ms: i64, e: &Entry<'_>) {
    out.extend_from_slice(b"{\"time\":\"");
    write_rfc3339_ms(out, ms);
    let _ = write!(
        out,
        "\",\"shard\":{shard},\"client\":\"{}\",\"method\":",
        e.client
    );
    write_json_bytes(out, e.method.as_bytes());
    out.extend_from_slice(b",\"path\":");
    write_json_bytes(out, e.path);
    let _ = write!(
        out,
        ",\"status\":{},\"bytes_in\":{},\"bytes_out\":{},\"upstream\":",
        e.status, e.bytes_in, e.bytes_out
    );
    match e.upstream {
        Some(addr) => {
            let _ = write!(out, "\"{addr}\"");
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"upstream_time_ms\":");
    match e.upstream_time {
        Some(d) => write_ms(out, d),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"total_time_ms\":");
    write_ms(out, e.total_time);
    let _ = write!(out, ",\"retries\":{},\"route\":", e.retries);
    match e.route {
        Some(route) => write_json_bytes(out, route.as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    if let Some(llm) = e.llm {
        out.extend_from_slice(b",\"llm\":");
        out.extend_from_slice(llm.as_bytes());
    }
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc(secs: i64, ms: i64) -> String {
        let mut out = Vec::new();
        write_rfc3339_ms(&mut out, secs * 1000 + ms);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rfc3339_known_timestamps() {
        assert_eq!(rfc(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc(1_700_000_000, 123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc(951_782_400, 0), "2000-02-29T00:00:00.000Z"); // 2000 is a leap year
        assert_eq!(rfc(1_709_251_199, 999), "2024-02-29T23:59:59.999Z");
        assert_eq!(rfc(946_684_799, 5), "1999-12-31T23:59:59.005Z");
        assert_eq!(rfc(4_107_499_200, 0), "2100-02-28T12:00:00.000Z");
        assert_eq!(rfc(4_107_542_400, 0), "2100-03-01T00:00:00.000Z"); // 2100 is not
        assert_eq!(rfc(13_574_563_200, 0), "2400-02-29T00:00:00.000Z"); // 2400 is
        assert_eq!(rfc(253_402_300_799, 999), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc(-2_208_988_800, 0), "1900-01-01T00:00:00.000Z");
        assert_eq!(rfc(0, -1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn rfc3339_from_system_time() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123) + Duration::from_micros(999);
        let mut out = Vec::new();
        write_rfc3339_millis(&mut out, t);
        assert_eq!(out, b"2023-11-14T22:13:20.123Z");
        out.clear();
        write_rfc3339_millis(&mut out, UNIX_EPOCH - Duration::from_micros(1));
        assert_eq!(out, b"1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn every_day_round_trips_over_four_centuries() {
        // Walk day by day from 1970 to 2370 and compare with an incremental calendar.
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        for days in 0..146_097 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn json_escaping() {
        let mut out = Vec::new();
        write_json_bytes(
            &mut out,
            b"a\"b\\c\n\r\t\x08\x0c\x00\x1f\x7f/\xe2\x82\xac/\xff\xfe/\xe2\x82",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#""a\"b\\c\n\r\t\b\f\u0000\u001f\u007f/€/\ufffd\ufffd/\ufffd""#
        );
    }

    #[test]
    fn milliseconds() {
        let mut out = Vec::new();
        write_ms(&mut out, Duration::from_nanos(1_234_567));
        out.push(b' ');
        write_ms(&mut out, Duration::ZERO);
        out.push(b' ');
        write_ms(&mut out, Duration::from_secs(90));
        assert_eq!(out, b"1.234 0.000 90000.000");
    }
}
