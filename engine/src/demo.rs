//! `headwater demo`: a gateway on a working default. Starts in-process upstreams (two echo
//! servers and a flaky one that fails a third of its requests; the config also lists an address
//! where nothing listens, which the health checks keep out) and a mock LLM provider, serves
//! `examples/demo.toml` (compiled in) in front of them, and prints what to try.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::config;
use crate::llm_mock::MockProvider;
use crate::server::Server;
use crate::upstream_demo::{Behavior, UpstreamServer};

/// The demo configuration.
pub const DEMO_CONFIG: &str = include_str!("../../examples/demo.toml");

/// Runs the demo until SIGINT/SIGTERM.
pub fn run() -> Result<(), String> {
    let upstreams = start_upstreams()?;
    let llm_addr = SocketAddr::from(([127, 0, 0, 1], 18085));
    let llm = MockProvider::start(llm_addr)
        .map_err(|e| format!("demo mock LLM provider on {llm_addr}: {e}"))?;
    let config = config::parse(DEMO_CONFIG, "examples/demo.toml").map_err(|e| e.to_string())?;
    let server =
        Server::start(config, None).map_err(|e| format!("cannot start the gateway: {e}"))?;
    let listen = server.listen_addrs()[0];
    let admin = server
        .admin_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!(
        "headwater demo: gateway on http://{listen} ({} shards, {}), admin on http://{admin}

  curl -i http://{listen}/hello              # peak-EWMA over app-1 and app-2 (echo); the third
                                             # endpoint is down and health checks keep it out
  curl -i http://{listen}/flaky/anything     # a flaky upstream: about 1 in 3 answers 500
  curl -s http://{listen}/v1/chat/completions -d '{{\"model\":\"gpt\",\"messages\":[{{\"role\":\"user\",\"content\":\"hello\"}}]}}'
                                             # the LLM gateway (OpenAI format; a mock provider)
  curl -sN http://{listen}/v1/messages -d '{{\"model\":\"gemini\",\"max_tokens\":50,\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'
                                             # Anthropic format in, Gemini format out, streamed
  curl -s http://{admin}/status              # clusters, endpoints, health states, last probes
  curl -s http://{admin}/metrics             # Prometheus metrics

Ctrl-C drains and stops.",
        server.control().status()["shards"],
        server.driver(),
    );
    server.wait_for_shutdown_signal();
    drop(upstreams);
    llm.stop();
    Ok(())
}

fn start_upstreams() -> Result<Vec<UpstreamServer>, String> {
    let spec = [
        ("app-1", 18081, Behavior::Echo),
        ("app-2", 18082, Behavior::Echo),
        (
            "flaky",
            18083,
            Behavior::Flaky {
                fail_ratio: 1.0 / 3.0,
                seed: 7,
                body: Bytes::from_static(b"flaky upstream says hi\n"),
            },
        ),
    ];
    spec.into_iter()
        .map(|(name, port, behavior)| {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            UpstreamServer::start(name, addr, behavior)
                .map_err(|e| format!("demo upstream {name} on {addr}: {e}"))
        })
        .collect()
}
