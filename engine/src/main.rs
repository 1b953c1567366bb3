//! The `headwater` command: `run -c FILE`, `check -c FILE`, `demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use headwater_engine::{config, demo, server::Server};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage:
  headwater run -c FILE      serve with the config in FILE (SIGHUP reloads, SIGTERM drains)
  headwater check -c FILE    validate FILE; prints file:line:column: reason and exits 1 if invalid
  headwater demo             run a gateway on 127.0.0.1:8080 in front of local demo upstreams";

fn config_arg(args: &[String]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-c" | "--config" => return it.next().map(PathBuf::from),
            s if s.starts_with("--config=") => return Some(PathBuf::from(&s["--config=".len()..])),
            _ => {}
        }
    }
    None
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("check") => {
            let Some(path) = config_arg(&args[1..]) else {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            };
            match config::load(&path) {
                Ok(c) => {
                    println!(
                        "{}: ok ({} listeners, {} clusters, {} routes)",
                        path.display(),
                        c.server.listen.len(),
                        c.clusters.len(),
                        c.routes.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("run") => {
            let Some(path) = config_arg(&args[1..]) else {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            };
            let config = match config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            match Server::start(config, Some(path)) {
                Ok(server) => {
                    eprintln!(
                        "headwater: serving on {:?} with {} ({} shards); admin on {:?}",
                        server.listen_addrs(),
                        server.driver(),
                        server.control().status()["shards"],
                        server.admin_addr()
                    );
                    server.wait_for_shutdown_signal();
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("headwater: cannot start: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("demo") => match demo::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("headwater demo: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
