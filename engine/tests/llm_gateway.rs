//! The LLM gateway end to end: the real engine on loopback, clients speaking OpenAI and
//! Anthropic, in front of mock providers that speak each provider's wire format
//! (`headwater_engine::llm_mock`), including failures: a deployment down, 429 with
//! `Retry-After`, 500s, streams that break before and after the first token, garbage.

mod common;

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{admin, Conn, Response};
use headwater_engine::llm_mock::{Behavior, MockProvider};
use headwater_engine::server::Server;
use http::Method;
use serde_json::{json, Value};

static SERIAL: Mutex<()> = Mutex::new(());

/// The tests share the machine's two cores: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn mock() -> MockProvider {
    MockProvider::start("127.0.0.1:0".parse().unwrap()).expect("mock provider starts")
}

/// A gateway with one LLM route and `llm` as its `[llm]` tables.
fn gateway(llm: &str) -> Server {
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\nadmin = \"127.0.0.1:0\"\n\n[[route]]\nname = \"ai\"\nmatch = {{ path_prefix = \"/v1/\" }}\nllm = true\n\n{llm}\n"
    );
    common::start(&toml)
}

fn addr(s: &Server) -> SocketAddr {
    s.listen_addrs()[0]
}

/// POSTs `body` (JSON) to `path` with extra header lines.
fn post(addr: SocketAddr, path: &str, headers: &str, body: &Value) -> Response {
    let body = body.to_string();
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    Conn::open(addr).request(raw.as_bytes(), &Method::POST)
}

/// The `data:` payloads of an SSE body, in order.
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .flat_map(|event| event.lines())
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim_start().to_owned())
        .collect()
}

/// The `event:` names of an SSE body, in order.
fn sse_events(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("event:"))
        .map(|d| d.trim().to_owned())
        .collect()
}

/// The text an OpenAI chat stream carries.
fn openai_stream_text(body: &str) -> String {
    let mut text = String::new();
    for d in sse_data(body) {
        if d == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(&d).unwrap_or_else(|e| panic!("{e}: {d}"));
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(c);
        }
    }
    text
}

fn deployment(provider: &str, model: &str, base: &str) -> String {
    format!(
        "[[llm.model.deployment]]\nprovider = \"{provider}\"\nmodel = \"{model}\"\nbase_url = \"{base}\"\napi_key = \"sk-{provider}\"\n"
    )
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

#[test]
fn openai_ingress_to_openai_and_anthropic_egress() {
    let _s = serial();
    let m = mock();
    let base = format!("http://{}/v1", m.addr());
    let gw = gateway(&format!(
        "[[llm.model]]\nname = \"gpt\"\n{}\n[[llm.model]]\nname = \"claude\"\n{}",
        deployment("openai", "gpt-4o-mini", &base),
        deployment("anthropic", "claude-x", &base)
    ));
    let a = addr(&gw);

    // Not streamed, OpenAI egress.
    let r = post(a, "/v1/chat/completions", "", &chat("gpt", "hello there"));
    assert_eq!(r.status(), 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hello there");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "{v}");
    let sent = m.requests();
    let last = sent.last().unwrap();
    assert_eq!(last.path, "/v1/chat/completions");
    assert_eq!(last.header("authorization"), Some("Bearer sk-openai"));
    assert_eq!(last.json()["model"], "gpt-4o-mini");

    // Streamed, Anthropic egress: OpenAI chunks out, the text intact, [DONE] last.
    let mut req = chat("claude", "stream me please");
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let r = post(a, "/v1/chat/completions", "", &req);
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let body = r.text();
    assert_eq!(
        openai_stream_text(&body),
        "echo: stream me please",
        "{body}"
    );
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    let usage_chunk: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert!(
        usage_chunk["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{body}"
    );
    let last = m.requests().pop().unwrap();
    assert_eq!(last.path, "/v1/messages");
    assert_eq!(last.header("x-api-key"), Some("sk-anthropic"));
    assert_eq!(last.json()["model"], "claude-x");
    assert_eq!(last.json()["stream"], true);

    // The access log is off here; /status and /metrics show the deployments and the ledger.
    let admin_addr = gw.admin_addr().unwrap();
    let (code, status) = admin(admin_addr, "GET", "/status");
    assert_eq!(code, 200);
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["llm"]["models"][0]["name"], "gpt");
    assert_eq!(status["llm"]["deployments"][0]["state"], "healthy");
    let (_, metrics) = admin(admin_addr, "GET", "/metrics");
    assert!(
        metrics.contains("headwater_llm_requests_total{model=\"gpt\",deployment=\"openai/gpt-4o-mini\",key=\"\",outcome=\"success\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("headwater_llm_tokens_total{model=\"claude\""),
        "{metrics}"
    );
    gw.shutdown();
    m.stop();
}

#[test]
fn anthropic_ingress_streams_from_gemini() {
    let _s = serial();
    let m = mock();
    let base = format!("http://{}/v1beta", m.addr());
    let gw = gateway(&format!(
        "[[llm.model]]\nname = \"gem\"\n{}",
        deployment("gemini", "gemini-2.0-flash", &base)
    ));
    let req = json!({
        "model": "gem", "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": "tell me"}]
    });
    let r = post(
        addr(&gw),
        "/v1/messages",
        "anthropic-version: 2023-06-01\r\n",
        &req,
    );
    assert_eq!(r.status(), 200, "{}", r.text());
    let body = r.text();
    let events = sse_events(&body);
    assert_eq!(
        events.first().map(String::as_str),
        Some("message_start"),
        "{body}"
    );
    assert_eq!(
        events.last().map(String::as_str),
        Some("message_stop"),
        "{body}"
    );
    let mut text = String::new();
    for d in sse_data(&body) {
        let v: Value = serde_json::from_str(&d).unwrap();
        if v["type"] == "content_block_delta" {
            text.push_str(v["delta"]["text"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(text, "echo: tell me");
    let last = m.requests().pop().unwrap();
    assert!(
        last.path
            .contains("/v1beta/models/gemini-2.0-flash:streamGenerateContent"),
        "{}",
        last.path
    );
    gw.shutdown();
    m.stop();
}

#[test]
fn failover_invisible_before_the_first_token_explicit_after() {
    let _s = serial();
    let bad = mock();
    let good = mock();
    let gw = gateway(&format!(
        "[llm.failover]\nmax_attempts = 3\n\n[[llm.model]]\nname = \"m\"\nrouting = \"weighted\"\n{}weight = 1000\n{}weight = 1\n",
        deployment("openai", "primary", &format!("http://{}/v1", bad.addr())),
        deployment("openai", "secondary", &format!("http://{}/v1", good.addr()))
    ));
    let a = addr(&gw);
    let mut req = chat("m", "hi");
    req["stream"] = json!(true);

    // Before the first token: the client sees one clean stream from the other deployment.
    bad.set(Behavior::FailBeforeFirstToken);
    let r = post(a, "/v1/chat/completions", "", &req);
    assert_eq!(r.status(), 200);
    assert_eq!(openai_stream_text(&r.text()), "echo: hi", "{}", r.text());
    assert!(good.total_served() >= 1);

    // 429 with Retry-After: the other deployment answers at once.
    bad.set(Behavior::Status {
        code: 429,
        retry_after: Some(30),
    });
    let started = Instant::now();
    let r = post(a, "/v1/chat/completions", "", &chat("m", "again"));
    assert_eq!(r.status(), 200, "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(5));

    // After the first token: an explicit error event, a proper end of the chunked body.
    bad.set(Behavior::FailAfterTokens(2));
    good.set(Behavior::FailAfterTokens(2));
    let r = post(a, "/v1/chat/completions", "", &req);
    assert_eq!(r.status(), 200);
    let body = r.text();
    let data = sse_data(&body);
    assert!(
        data.iter().any(|d| d.contains("\"error\"")),
        "no error event: {body}"
    );
    assert_ne!(data.last().map(String::as_str), Some("[DONE]"), "{body}");

    // Everything down: the OpenAI error object with a gateway status.
    bad.set(Behavior::Status {
        code: 500,
        retry_after: None,
    });
    good.set(Behavior::Status {
        code: 503,
        retry_after: None,
    });
    let r = post(a, "/v1/chat/completions", "", &chat("m", "anyone?"));
    assert!(r.status() >= 500, "{} {}", r.status(), r.text());
    assert!(r.json()["error"]["message"].is_string(), "{}", r.text());
    gw.shutdown();
    bad.stop();
    good.stop();
}
