//! Shard threads: one monoio runtime per core.
//!
//! This module owns how Headwater's thread-per-core runtime is started:
//!
//! - choosing the I/O driver (io_uring, or the epoll "legacy" driver as a fallback) and
//!   explaining why io_uring cannot be used when it cannot ([`io_uring_usable`]);
//! - spawning the shard threads (`headwater-shard-{i}`), pinning them to cores, building one
//!   monoio runtime with timers per shard, and joining them ([`spawn_shards`], [`Shards`]);
//! - the per-shard `SO_REUSEPORT` listeners ([`bind_listener`], [`shard_listener`],
//!   [`reserve_addr`], [`tune_accepted`]; in the `listen` submodule).
//!
//! What runs on a shard (accept loops, the proxy, pools) is the caller's future; cancel-safe
//! timed reads and writes live in [`crate::io`].
//!
//! A shard's future is created on the shard thread, inside its runtime, so it need not be
//! `Send` and may use `monoio::spawn`, `monoio::time` and `monoio::net` under either driver.
//! A shard ends when its future returns; tasks it spawned and did not await are dropped then.

use std::{
    fmt,
    future::Future,
    io,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, OnceLock,
    },
    thread,
};

use monoio::{time::TimeDriver, FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};

mod listen;

pub use listen::{bind_listener, reserve_addr, shard_listener, tune_accepted};

/// Which I/O driver the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DriverChoice {
    /// io_uring when it can be set up here, else epoll (with one line on stderr saying why).
    #[default]
    Auto,
    /// io_uring or fail.
    IoUring,
    /// The epoll-based legacy driver.
    Epoll,
}

/// The I/O driver that actually runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriverKind {
    /// monoio's io_uring driver.
    IoUring,
    /// monoio's legacy (epoll) driver.
    Epoll,
}

impl DriverKind {
    /// `"io_uring"` or `"epoll"`.
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::IoUring => "io_uring",
            DriverKind::Epoll => "epoll",
        }
    }

    /// The driver of the monoio runtime running on this thread.
    ///
    /// # Panics
    /// Outside a running monoio runtime (monoio's driver context is not set).
    pub fn current() -> DriverKind {
        if monoio::utils::is_legacy() {
            DriverKind::Epoll
        } else {
            DriverKind::IoUring
        }
    }
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a shard's future is told about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardCtx {
    /// 0-based shard index.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
    /// The driver this shard's runtime uses (the same for all shards).
    pub driver: DriverKind,
}

/// How to start the shards. [`spawn_shards`] is this with default `entries` and `stack_size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardOptions {
    /// Number of shard threads (at least 1).
    pub workers: usize,
    /// Requested driver.
    pub driver: DriverChoice,
    /// Pin shard `i` to core `i % ncores` (of the cores this process may run on).
    pub pin: bool,
    /// io_uring submission queue entries (monoio's minimum is 256; default [`DEFAULT_ENTRIES`]).
    /// Under epoll it sizes the event buffer of one `epoll_wait`.
    pub entries: u32,
    /// Stack size of each shard thread; `None` for Rust's default.
    pub stack_size: Option<usize>,
}

/// Default ring size: 256 submission entries (512 completion entries), monoio's minimum.
///
/// monoio submits the operations a shard queued when it parks or when the submission queue is
/// full, so the ring size bounds how long the first write of a busy loop iteration waits for the
/// others. With 1024 client connections in flight, 256 entries cut Headwater's p99 on this
/// machine in 5 of 6 paired rounds (e.g. 14.7 ms against 19.9 ms, bench/RESULTS.md session 7);
/// with 64 connections the queue never fills and nothing changes. Under epoll, 256 events per
/// `epoll_wait` (nginx takes 512).
pub const DEFAULT_ENTRIES: u32 = 256;

impl Default for ShardOptions {
    fn default() -> Self {
        ShardOptions {
            workers: thread::available_parallelism().map_or(1, |n| n.get()),
            driver: DriverChoice::Auto,
            pin: true,
            entries: DEFAULT_ENTRIES,
            stack_size: None,
        }
    }
}

/// The monoio runtime a shard runs: io_uring or epoll, with timers enabled.
pub type MonoioRuntime = FusionRuntime<TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>>;

/// Builds a monoio runtime with timers for `kind` on the current thread (for threads other than
/// shards that need one, e.g. the health prober). Run it with `block_on`.
pub fn build_runtime(kind: DriverKind, entries: u32) -> io::Result<MonoioRuntime> {
    Ok(match kind {
        DriverKind::IoUring => {
            let ring = || {
                RuntimeBuilder::<IoUringDriver>::new()
                    .with_entries(entries)
                    .enable_timer()
            };
            // Deferred task running on a single-issuer ring (kernel 6.1+): the kernel runs
            // completion work only when the shard asks for events, in its own context and in
            // one batch, instead of from whichever interrupt or task produced it. monoio asks
            // for events every time it parks (and the shard thread is the only one that ever
            // submits).
            let mut deferred = io_uring::IoUring::builder();
            deferred
                .setup_single_issuer()
                .setup_defer_taskrun()
                .setup_coop_taskrun()
                .setup_taskrun_flag();
            // Else cooperative task running (kernel 5.19+): the kernel does not interrupt the
            // shard with an IPI for every completion that another core produces; completions
            // are gathered when the shard enters the kernel anyway (every submit and every
            // wait). Under load that removed ~0.7 reschedule interrupts per request
            // (bench/RESULTS.md). Else a plain ring: each kernel gets what it supports.
            let mut cooperative = io_uring::IoUring::builder();
            cooperative.setup_coop_taskrun().setup_taskrun_flag();
            ring()
                .uring_builder(deferred)
                .build()
                .or_else(|_| ring().uring_builder(cooperative).build())
                .or_else(|_| ring().build())?
                .into()
        }
        DriverKind::Epoll => RuntimeBuilder::<LegacyDriver>::new()
            .with_entries(entries)
            .enable_timer()
            .build()?
            .into(),
    })
}

/// Whether io_uring can be used by this process; the error says why not.
///
/// Checks `kernel.io_uring_disabled`, sets up (and drops) a ring the way monoio does, and runs
/// monoio's probe for the opcodes it uses (which also honours `MONOIO_FORCE_LEGACY_DRIVER`).
/// The answer is computed once per process.
pub fn io_uring_usable() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(probe_io_uring).clone()
}

fn probe_io_uring() -> Result<(), String> {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok());
    if sysctl == Some(2) {
        return Err("disabled by sysctl kernel.io_uring_disabled=2".to_string());
    }
    match RuntimeBuilder::<IoUringDriver>::new().build() {
        Ok(rt) => drop(rt),
        Err(e) => return Err(describe_setup_error(&e, sysctl)),
    }
    if !monoio::utils::detect_uring() {
        let forced = std::env::var("MONOIO_FORCE_LEGACY_DRIVER")
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
            .unwrap_or(false);
        return Err(if forced {
            "MONOIO_FORCE_LEGACY_DRIVER is set".to_string()
        } else {
            "the kernel lacks io_uring operations monoio needs".to_string()
        });
    }
    Ok(())
}

fn describe_setup_error(e: &io::Error, sysctl: Option<u8>) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) if sysctl == Some(1) => {
            "io_uring_setup: EPERM; kernel.io_uring_disabled=1 \
             and this process is not in kernel.io_uring_group"
                .to_string()
        }
        Some(libc::EPERM) => {
            "io_uring_setup: EPERM; blocked by a seccomp filter or container policy".to_string()
        }
        Some(libc::ENOSYS) => "io_uring_setup: ENOSYS; the kernel has no io_uring or a seccomp \
                               filter hides it"
            .to_string(),
        Some(libc::ENOMEM) => {
            "io_uring_setup: ENOMEM; locked-memory limit (RLIMIT_MEMLOCK) too low for the ring"
                .to_string()
        }
        Some(libc::EINVAL) => {
            "io_uring_setup: EINVAL; the kernel does not support the ring parameters".to_string()
        }
        _ => format!("io_uring_setup: {e}"),
    }
}

/// Running shard threads.
#[derive(Debug)]
pub struct Shards {
    handles: Vec<thread::JoinHandle<()>>,
    driver: DriverKind,
}

impl Shards {
    /// The driver all shards run.
    pub fn driver(&self) -> DriverKind {
        self.driver
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Always false for a successfully started set (there is at least one shard).
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Whether every shard's future has returned (or panicked).
    pub fn is_finished(&self) -> bool {
        self.handles.iter().all(|h| h.is_finished())
    }

    /// Waits for every shard thread; the first panic payload, if any, is returned after all
    /// threads have ended.
    pub fn join(self) -> thread::Result<()> {
        let mut result = Ok(());
        for handle in self.handles {
            if let Err(panic) = handle.join() {
                if result.is_ok() {
                    result = Err(panic);
                }
            }
        }
        result
    }
}

/// Starts `workers` shard threads, each running `make(ctx)` on its own monoio runtime.
///
/// Returns once every shard has built its runtime (so a ring that cannot be set up is an error
/// here, not a dead thread); the futures start right after. With [`DriverChoice::IoUring`] and
/// io_uring unusable, returns an `Unsupported` error. With [`DriverChoice::Auto`] it falls back
/// to epoll and prints `headwater: io_uring unavailable ({reason}); using epoll` once.
pub fn spawn_shards<F, Fut>(
    workers: usize,
    choice: DriverChoice,
    pin: bool,
    make: F,
) -> io::Result<Shards>
where
    F: Fn(ShardCtx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let opts = ShardOptions {
        workers,
        driver: choice,
        pin,
        ..ShardOptions::default()
    };
    spawn_shards_with(&opts, make)
}

/// [`spawn_shards`] with all options.
pub fn spawn_shards_with<F, Fut>(opts: &ShardOptions, make: F) -> io::Result<Shards>
where
    F: Fn(ShardCtx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    if opts.workers == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "at least one shard is needed",
        ));
    }
    let make = Arc::new(make);
    let kind = match opts.driver {
        DriverChoice::Epoll => DriverKind::Epoll,
        DriverChoice::IoUring => {
            io_uring_usable().map_err(|reason| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("io_uring was requested but is unavailable: {reason}"),
                )
            })?;
            DriverKind::IoUring
        }
        DriverChoice::Auto => match io_uring_usable() {
            Ok(()) => DriverKind::IoUring,
            Err(reason) => {
                log_fallback(&reason);
                DriverKind::Epoll
            }
        },
    };
    match start(opts, kind, &make) {
        Err(e) if opts.driver == DriverChoice::Auto && kind == DriverKind::IoUring => {
            log_fallback(&format!("a shard could not set up its ring: {e}"));
            start(opts, DriverKind::Epoll, &make)
        }
        other => other,
    }
}

fn log_fallback(reason: &str) {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    warn_once(
        &LOGGED,
        &format!("io_uring unavailable ({reason}); using epoll"),
    );
}

fn warn_once(flag: &AtomicBool, message: &str) {
    if !flag.swap(true, Ordering::Relaxed) {
        eprintln!("headwater: {message}");
    }
}

static PIN_WARNED: AtomicBool = AtomicBool::new(false);

fn start<F, Fut>(opts: &ShardOptions, kind: DriverKind, make: &Arc<F>) -> io::Result<Shards>
where
    F: Fn(ShardCtx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let count = opts.workers;
    let cores = if opts.pin {
        let cores = core_affinity::get_core_ids().filter(|c| !c.is_empty());
        if cores.is_none() {
            warn_once(&PIN_WARNED, "cannot list CPU cores; shards are not pinned");
        }
        cores
    } else {
        None
    };

    let (ready_tx, ready_rx) = mpsc::channel::<(usize, io::Result<()>)>();
    let mut handles = Vec::with_capacity(count);
    let mut gos = Vec::with_capacity(count);
    let mut failure: Option<io::Error> = None;

    for index in 0..count {
        let (go_tx, go_rx) = mpsc::channel::<bool>();
        let ctx = ShardCtx {
            index,
            count,
            driver: kind,
        };
        let core = cores.as_ref().map(|c| c[index % c.len()]);
        let make = Arc::clone(make);
        let ready_tx = ready_tx.clone();
        let entries = opts.entries;
        let mut builder = thread::Builder::new().name(format!("headwater-shard-{index}"));
        if let Some(size) = opts.stack_size {
            builder = builder.stack_size(size);
        }
        match builder.spawn(move || shard_main(ctx, core, entries, make, ready_tx, go_rx)) {
            Ok(handle) => {
                handles.push(handle);
                gos.push(go_tx);
            }
            Err(e) => {
                failure = Some(io::Error::new(
                    e.kind(),
                    format!("cannot spawn shard thread {index}: {e}"),
                ));
                break;
            }
        }
    }
    drop(ready_tx);

    for _ in 0..handles.len() {
        match ready_rx.recv() {
            Ok((_, Ok(()))) => {}
            Ok((index, Err(e))) => {
                failure.get_or_insert_with(|| {
                    io::Error::new(
                        e.kind(),
                        format!("shard {index}: cannot build its {kind} runtime: {e}"),
                    )
                });
            }
            Err(_) => {
                failure
                    .get_or_insert_with(|| io::Error::other("a shard thread ended during startup"));
                break;
            }
        }
    }

    let go = failure.is_none();
    for go_tx in &gos {
        let _ = go_tx.send(go);
    }
    match failure {
        None => Ok(Shards {
            handles,
            driver: kind,
        }),
        Some(e) => {
            for handle in handles {
                let _ = handle.join();
            }
            Err(e)
        }
    }
}

fn shard_main<F, Fut>(
    ctx: ShardCtx,
    core: Option<core_affinity::CoreId>,
    entries: u32,
    make: Arc<F>,
    ready_tx: mpsc::Sender<(usize, io::Result<()>)>,
    go_rx: mpsc::Receiver<bool>,
) where
    F: Fn(ShardCtx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    // Pin before building the runtime so the ring's memory is allocated near the core.
    if let Some(core) = core {
        if !core_affinity::set_for_current(core) {
            warn_once(
                &PIN_WARNED,
                &format!(
                    "cannot pin shard {} to core {}; shards run unpinned",
                    ctx.index, core.id
                ),
            );
        }
    }
    let mut rt = match build_runtime(ctx.driver, entries) {
        Ok(rt) => {
            let _ = ready_tx.send((ctx.index, Ok(())));
            rt
        }
        Err(e) => {
            let _ = ready_tx.send((ctx.index, Err(e)));
            return;
        }
    };
    drop(ready_tx);
    if go_rx.recv() != Ok(true) {
        return;
    }
    // `make` is called inside `block_on` so that it may already use monoio (bind listeners,
    // spawn tasks) synchronously.
    rt.block_on(async move { make(ctx).await });
}
