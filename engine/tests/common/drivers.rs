//! Running a test under each monoio driver: io_uring where it can be set up (else skipped, with
//! a note on stderr, unless `HEADWATER_REQUIRE_IO_URING=1` makes that a failure), and epoll.

use std::time::Duration;

use headwater_engine::runtime::{build_runtime, io_uring_usable, DriverKind};

/// Whether `HEADWATER_REQUIRE_IO_URING` asks for io_uring to be usable.
pub fn require_io_uring() -> bool {
    std::env::var_os("HEADWATER_REQUIRE_IO_URING").is_some_and(|v| v != "0")
}

/// The drivers `test` runs under: io_uring (when usable) and epoll.
pub fn drivers(test: &str) -> Vec<DriverKind> {
    let mut kinds = vec![DriverKind::Epoll];
    match io_uring_usable() {
        Ok(()) => kinds.insert(0, DriverKind::IoUring),
        Err(reason) => {
            assert!(
                !require_io_uring(),
                "io_uring required but unusable: {reason}"
            );
            eprintln!("note: skipping the io_uring part of {test}: {reason}");
        }
    }
    kinds
}

/// Runs `fut` on a `kind` runtime; a test that hangs fails after a minute instead (unless a
/// blocking call holds the thread).
pub fn block_on<F: std::future::Future>(kind: DriverKind, fut: F) -> F::Output {
    let mut rt = build_runtime(kind, 256).expect("build runtime");
    rt.block_on(async move {
        assert_eq!(DriverKind::current(), kind);
        match monoio::time::timeout(Duration::from_secs(60), fut).await {
            Ok(out) => out,
            Err(_) => panic!("the test did not finish within 60 s under {kind}"),
        }
    })
}

/// Runs `test(kind)` under every usable driver.
pub fn each_driver(name: &str, test: impl Fn(DriverKind)) {
    for kind in drivers(name) {
        eprintln!("{name}: {kind}");
        test(kind);
    }
}
