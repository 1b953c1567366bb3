//! The `headwater` command: `run -c FILE`, `check -c FILE`, `demo`, `upstream ...`, `mock-llm`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use headwater_engine::upstream_demo::{Behavior, UpstreamServer};
use headwater_engine::{config, demo, server::Server};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage:
  headwater run -c FILE      serve with the config in FILE (SIGHUP reloads, SIGTERM drains)
  headwater check -c FILE    validate FILE; prints file:line:column: reason and exits 1 if invalid
  headwater demo             run a gateway on 127.0.0.1:8080 in front of local demo upstreams
  headwater upstream --listen ADDR --behavior B [--name NAME] [--fault B]
                             run one test upstream on ADDR until SIGTERM/SIGINT (see below)
  headwater mock-llm [--listen ADDR] [--latency MS] [--behavior B]
                             mock LLM providers (OpenAI, Azure, Anthropic, Gemini, Mistral) on
                             ADDR (default 127.0.0.1:18990) until SIGTERM/SIGINT; B as in
                             `mock:B` magic words (e.g. status:429:2, fail-after:3)

upstream behaviors (B):
  fixed                200 with the body \"NAME\\n\"
  echo                 200 with a JSON description of the request
  mirror               200 with the request body streamed back
  status:CODE          CODE (100-599) with a short text body
  slow:DURATION        waits DURATION (\"300ms\", \"1s\"), then answers like fixed
  flaky:RATIO[:SEED]   500 with probability RATIO (0-1), else like fixed
  chunked:LEN[:CHUNK]  200 with LEN bytes sent chunked, CHUNK per chunk (default 4096)
  stall                reads requests, never answers
  reset                resets the connection as soon as a request head is read
  garbage              sends non-HTTP bytes instead of a response, then closes
  upgrade-echo         101 to a WebSocket upgrade, then echoes bytes; 426 otherwise
upstream options:
  --name NAME          sent as `x-upstream: NAME` on every response (default: ADDR)
  --fault B            SIGUSR1 switches to behavior B, SIGUSR2 back to --behavior, in place
                       (the listener and open connections stay)";

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

/// The config named by `-c FILE` in `args`, loaded; on failure, what was printed and the exit
/// code (2 without `-c FILE`, 1 for an invalid config).
fn load_config(args: &[String]) -> Result<(PathBuf, config::Config), ExitCode> {
    let Some(path) = config_arg(args) else {
        eprintln!("{USAGE}");
        return Err(ExitCode::from(2));
    };
    match config::load(&path) {
        Ok(c) => Ok((path, c)),
        Err(e) => {
            eprintln!("{e}");
            Err(ExitCode::FAILURE)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("check") => {
            let (path, c) = match load_config(&args[1..]) {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
            println!(
                "{}: ok ({} listeners, {} clusters, {} routes)",
                path.display(),
                c.server.listen.len(),
                c.clusters.len(),
                c.routes.len()
            );
            ExitCode::SUCCESS
        }
        Some("run") => {
            let (path, config) = match load_config(&args[1..]) {
                Ok(loaded) => loaded,
                Err(code) => return code,
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
        Some("upstream") => upstream(&args[1..]),
        Some("mock-llm") => mock_llm(&args[1..]),
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

/// Parsed `headwater upstream` arguments.
struct UpstreamArgs {
    listen: SocketAddr,
    name: String,
    behavior: Behavior,
    behavior_text: String,
    fault: Option<(Behavior, String)>,
}

/// `headwater upstream`: one in-process upstream until SIGTERM or SIGINT. Bad arguments exit 2,
/// a failure to listen exits 1.
fn upstream(args: &[String]) -> ExitCode {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
    let a = match command_args("upstream", args, upstream_args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    // Handlers first: a signal sent as soon as the port answers must not kill the process.
    let mut signals = match signals("upstream", &[SIGINT, SIGTERM, SIGUSR1, SIGUSR2]) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let server = match UpstreamServer::start(&a.name, a.listen, a.behavior.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("headwater upstream: cannot listen on {}: {e}", a.listen);
            return ExitCode::FAILURE;
        }
    };
    let name = &a.name;
    eprintln!(
        "headwater upstream {name}: serving {} on {}{}",
        a.behavior_text,
        server.addr(),
        a.fault
            .as_ref()
            .map(|(_, t)| format!(" (SIGUSR1: {t}, SIGUSR2: back)"))
            .unwrap_or_default()
    );
    for sig in signals.forever() {
        match (sig, &a.fault) {
            (SIGUSR1, Some((fault, text))) => {
                server.set_behavior(fault.clone());
                eprintln!(
                    "headwater upstream {name}: now {text} (after {} requests)",
                    server.requests()
                );
            }
            (SIGUSR2, Some(_)) => {
                server.set_behavior(a.behavior.clone());
                eprintln!(
                    "headwater upstream {name}: now {} (after {} requests)",
                    a.behavior_text,
                    server.requests()
                );
            }
            (SIGUSR1 | SIGUSR2, None) => {
                eprintln!("headwater upstream {name}: no --fault given; signal ignored");
            }
            _ => break,
        }
    }
    eprintln!(
        "headwater upstream {name}: stopped after {} requests on {} connections",
        server.requests(),
        server.connections()
    );
    server.stop();
    ExitCode::SUCCESS
}

/// A subcommand's arguments parsed by `parse`; `Err` with the exit code when they ask for help
/// (the usage is printed, exit 0) or are bad (the error and the usage, exit 2).
fn command_args<T>(
    command: &str,
    args: &[String],
    parse: impl FnOnce(&[String]) -> Result<T, String>,
) -> Result<T, ExitCode> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Err(ExitCode::SUCCESS);
    }
    parse(args).map_err(|e| {
        eprintln!("headwater {command}: {e}\n\n{USAGE}");
        ExitCode::from(2)
    })
}

/// The values of the options `keys` (`--key VALUE` or `--key=VALUE`) in `args`, in the order of
/// `keys`, `None` where absent; an unknown argument, a missing value or a key given twice is an
/// error.
fn options<const N: usize>(
    args: &[String],
    keys: [&str; N],
) -> Result<[Option<String>; N], String> {
    let mut values: [Option<String>; N] = std::array::from_fn(|_| None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let Some(i) = keys.iter().position(|k| *k == key) else {
            return Err(format!("unknown argument {arg:?}"));
        };
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| format!("{key} needs a value"))?,
        };
        if values[i].replace(value).is_some() {
            return Err(format!("{key} given twice"));
        }
    }
    Ok(values)
}

/// Handlers for `sigs`; on failure, what was printed and the exit code (1).
fn signals(
    command: &str,
    sigs: &[std::ffi::c_int],
) -> Result<signal_hook::iterator::Signals, ExitCode> {
    signal_hook::iterator::Signals::new(sigs).map_err(|e| {
        eprintln!("headwater {command}: cannot install signal handlers: {e}");
        ExitCode::FAILURE
    })
}

fn upstream_args(args: &[String]) -> Result<UpstreamArgs, String> {
    let [listen, behavior, name, fault] =
        options(args, ["--listen", "--behavior", "--name", "--fault"])?;
    let listen_text = listen.ok_or("--listen ADDR is required")?;
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        format!("invalid --listen {listen_text:?}: expected IP:port, e.g. 127.0.0.1:19101")
    })?;
    let name = name.unwrap_or_else(|| listen.to_string());
    if name.is_empty() || name.bytes().any(|b| b.is_ascii_control() || b >= 0x80) {
        return Err(format!(
            "invalid --name {name:?}: must be non-empty printable ASCII"
        ));
    }
    let behavior_text = behavior.ok_or("--behavior B is required")?;
    let behavior = parse_behavior(&behavior_text, &name)?;
    let fault = match fault {
        Some(text) => Some((parse_behavior(&text, &name)?, text)),
        None => None,
    };
    Ok(UpstreamArgs {
        listen,
        name,
        behavior,
        behavior_text,
        fault,
    })
}

/// A behavior by name (see the usage text); `name` goes into the fixed bodies.
fn parse_behavior(text: &str, name: &str) -> Result<Behavior, String> {
    let body = || Bytes::from(format!("{name}\n"));
    let (kind, arg) = match text.split_once(':') {
        Some((k, a)) => (k, Some(a)),
        None => (text, None),
    };
    let bad = |why: &str| format!("invalid behavior {text:?}: {why}");
    let no_arg = |b: Behavior| match arg {
        None => Ok(b),
        Some(_) => Err(bad(&format!("{kind:?} takes no argument"))),
    };
    let number = |s: &str, what: &str| -> Result<u64, String> {
        s.parse::<u64>()
            .map_err(|_| bad(&format!("{what} {s:?} is not a whole number")))
    };
    match kind {
        "fixed" => no_arg(Behavior::Fixed { body: body() }),
        "echo" => no_arg(Behavior::Echo),
        "mirror" => no_arg(Behavior::Mirror),
        "stall" => no_arg(Behavior::Stall),
        "reset" => no_arg(Behavior::Reset),
        "garbage" => no_arg(Behavior::Garbage),
        "upgrade-echo" => no_arg(Behavior::UpgradeEcho),
        "status" => {
            let code = number(
                arg.ok_or_else(|| bad("expected status:CODE, e.g. status:500"))?,
                "status",
            )?;
            if !(100..=599).contains(&code) {
                return Err(bad("the status must be from 100 to 599"));
            }
            Ok(Behavior::Status(code as u16))
        }
        "slow" => {
            let d = arg.ok_or_else(|| bad("expected slow:DURATION, e.g. slow:300ms"))?;
            let delay = config::parse_duration(d).map_err(|e| bad(&e))?;
            Ok(Behavior::Slow {
                delay,
                body: body(),
            })
        }
        "flaky" => {
            let arg = arg.ok_or_else(|| bad("expected flaky:RATIO[:SEED], e.g. flaky:0.3"))?;
            let (ratio, seed) = match arg.split_once(':') {
                Some((r, s)) => (r, number(s, "seed")?),
                None => (arg, 1),
            };
            let fail_ratio: f64 = ratio
                .parse()
                .ok()
                .filter(|r: &f64| (0.0..=1.0).contains(r))
                .ok_or_else(|| bad(&format!("ratio {ratio:?} is not a number from 0 to 1")))?;
            Ok(Behavior::Flaky {
                fail_ratio,
                seed,
                body: body(),
            })
        }
        "chunked" => {
            let arg = arg.ok_or_else(|| bad("expected chunked:LEN[:CHUNK], e.g. chunked:65536"))?;
            let (len, chunk) = match arg.split_once(':') {
                Some((l, c)) => (number(l, "length")?, number(c, "chunk size")?),
                None => (number(arg, "length")?, 4096),
            };
            if chunk == 0 {
                return Err(bad("the chunk size must be at least 1"));
            }
            let len = usize::try_from(len).map_err(|_| bad("length too large"))?;
            let chunk = usize::try_from(chunk).map_err(|_| bad("chunk size too large"))?;
            Ok(Behavior::Chunked { len, chunk })
        }
        _ => Err(bad(
            "expected fixed, echo, mirror, status:CODE, stall, reset, garbage, slow:DURATION, \
             flaky:RATIO[:SEED], chunked:LEN[:CHUNK] or upgrade-echo",
        )),
    }
}

/// `headwater mock-llm`: one [`MockProvider`](headwater_engine::llm_mock::MockProvider) until
/// SIGTERM or SIGINT. Bad arguments exit 2, a failure to listen exits 1.
fn mock_llm(args: &[String]) -> ExitCode {
    use headwater_engine::llm_mock::{self, MockProvider};
    use signal_hook::consts::{SIGINT, SIGTERM};
    let (listen, latency, behavior) = match command_args("mock-llm", args, mock_llm_args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let mut signals = match signals("mock-llm", &[SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mock = match MockProvider::start(listen) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("headwater mock-llm: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    mock.set_recording(false);
    mock.set_latency(std::time::Duration::from_millis(latency));
    mock.set(behavior.clone());
    println!(
        "headwater mock-llm: serving on http://{} ({behavior:?}, latency {latency} ms)\n{}\n\
         magic words:\n{}",
        mock.addr(),
        llm_mock::ROUTES,
        llm_mock::MAGIC_WORDS
    );
    signals.forever().next();
    let counts: Vec<String> = mock
        .served_all()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(e, n)| format!("{} {n}", e.as_str()))
        .collect();
    eprintln!(
        "headwater mock-llm: stopped after {} requests on {} connections ({})",
        mock.total_served(),
        mock.connections(),
        counts.join(", ")
    );
    mock.stop();
    ExitCode::SUCCESS
}

/// `headwater mock-llm` arguments: the address, the latency in milliseconds and the behavior.
fn mock_llm_args(
    args: &[String],
) -> Result<(SocketAddr, u64, headwater_engine::llm_mock::Behavior), String> {
    use headwater_engine::llm_mock::Behavior;
    let [listen, latency, behavior] = options(args, ["--listen", "--latency", "--behavior"])?;
    let listen_text = listen.unwrap_or_else(|| "127.0.0.1:18990".to_owned());
    let listen = listen_text
        .parse()
        .map_err(|_| format!("invalid --listen {listen_text:?}: expected IP:port"))?;
    let latency = match latency {
        Some(ms) => ms
            .parse()
            .map_err(|_| format!("invalid --latency {ms:?}: expected milliseconds"))?,
        None => 0,
    };
    let behavior = match behavior {
        Some(b) => Behavior::parse(&b)?,
        None => Behavior::Normal,
    };
    Ok((listen, latency, behavior))
}
