//! The LLM gateway end to end: the real engine on loopback, clients speaking OpenAI and
//! Anthropic, in front of mock providers that speak each provider's wire format
//! (`headwater_engine::llm_mock`), including failures: a deployment down, 429 with
//! `Retry-After`, 500s, streams that break before and after the first token, garbage.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{admin, model_ids, parse_sse, serial, start_mock, Conn, Response};
use headwater_engine::llm_mock::{Behavior, DEFAULT_DIMENSIONS};
use headwater_engine::server::Server;
use http::Method;
use serde_json::{json, Value};

/// A gateway with one LLM route and `llm` as its `[llm]` tables.
fn gateway(llm: &str) -> Server {
    common::start_llm(llm)
}

fn addr(s: &Server) -> SocketAddr {
    s.listen_addrs()[0]
}

/// POSTs `body` (JSON) to `path` with extra header lines, on a new connection.
fn post(addr: SocketAddr, path: &str, headers: &str, body: &Value) -> Response {
    Conn::open(addr).post_json(path, headers, body)
}

/// The `data:` payloads of an SSE body, in order.
fn sse_data(body: &str) -> Vec<String> {
    parse_sse(body).into_iter().map(|e| e.data).collect()
}

/// The `event:` names of an SSE body, in order.
fn sse_events(body: &str) -> Vec<String> {
    parse_sse(body)
        .into_iter()
        .filter_map(|e| e.event)
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
    let m = start_mock();
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
    // The mock's usage, in words: "hello there" in, "echo: hello there" out.
    let usage = &v["usage"];
    assert_eq!(
        [
            &usage["prompt_tokens"],
            &usage["completion_tokens"],
            &usage["total_tokens"]
        ],
        [2, 3, 5],
        "{v}"
    );
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
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 3, "{body}");
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 4, "{body}");
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
    let m = start_mock();
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
    let bad = start_mock();
    let good = start_mock();
    let gw = gateway(&format!(
        "[llm.failover]\nmax_attempts = 3\n\n[[llm.model]]\nname = \"m\"\nrouting = \"weighted\"\n{}weight = 1000\n{}weight = 1\n",
        deployment("openai", "primary", &format!("http://{}/v1", bad.addr())),
        deployment("openai", "secondary", &format!("http://{}/v1", good.addr()))
    ));
    let a = addr(&gw);
    let mut req = chat("m", "hi");
    req["stream"] = json!(true);

    // Before the first token: the client sees one clean stream from the other deployment.
    // Twice (fewer failures than an ejection takes): the heavy deployment is all but sure to
    // be tried first at least once, so these answers include a failover.
    bad.set(Behavior::FailBeforeFirstToken);
    for _ in 0..2 {
        let r = post(a, "/v1/chat/completions", "", &req);
        assert_eq!(r.status(), 200);
        assert_eq!(openai_stream_text(&r.text()), "echo: hi", "{}", r.text());
    }
    assert!(good.total_served() >= 1);
    assert!(
        bad.total_served() >= 1,
        "the failing deployment was never tried"
    );

    // 429 with Retry-After: the other deployment answers at once.
    bad.set(Behavior::Status {
        code: 429,
        retry_after: Some(30),
    });
    let started = Instant::now();
    let r = post(a, "/v1/chat/completions", "", &chat("m", "again"));
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "echo: again");
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

#[test]
fn a_deployment_that_is_down_is_skipped_and_ejected() {
    let _s = serial();
    let good = start_mock();
    // A port nothing listens on: connection refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let gw = gateway(&format!(
        "[llm.health]\nconsecutive_gateway_failures = 2\n\n[[llm.model]]\nname = \"m\"\n{}weight = 1000\n{}weight = 1\n",
        deployment("openai", "dead", &format!("http://{dead_addr}/v1")),
        deployment("openai", "alive", &format!("http://{}/v1", good.addr()))
    ));
    let a = addr(&gw);
    for i in 0..6 {
        let r = post(a, "/v1/chat/completions", "", &chat("m", &format!("n{i}")));
        assert_eq!(r.status(), 200, "request {i}: {}", r.text());
        assert_eq!(
            r.json()["choices"][0]["message"]["content"],
            format!("echo: n{i}")
        );
    }
    let (_, status) = admin(gw.admin_addr().unwrap(), "GET", "/status");
    let status: Value = serde_json::from_str(&status).unwrap();
    let deps = status["llm"]["deployments"].as_array().unwrap();
    let dead_dep = deps
        .iter()
        .find(|d| d["deployment"] == "openai/dead")
        .unwrap();
    assert_eq!(dead_dep["state"], "ejected", "{dead_dep}");
    // Once ejected it is not tried: the last requests went straight to the live one.
    let (_, metrics) = admin(gw.admin_addr().unwrap(), "GET", "/metrics");
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("headwater_llm_deployment_outcomes_total{model=\"m\",deployment=\"openai/dead\",outcome=\"transport\"}")
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    let transport: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((2..6).contains(&transport), "{line}");
    gw.shutdown();
    good.stop();
}

#[test]
fn a_deployment_answering_garbage_to_its_canary_is_taken_out() {
    let _s = serial();
    let liar = start_mock();
    let honest = start_mock();
    let canary = |reply: &str| {
        format!(
            "canary = {{ prompt = \"mock:reply:{reply}\", expect = {{ contains = \"pong\" }}, interval = \"100ms\", timeout = \"1s\", fall = 1, rise = 1 }}\n"
        )
    };
    let gw = gateway(&format!(
        "[[llm.model]]\nname = \"m\"\n{}weight = 1000\n{}{}weight = 1\n{}",
        deployment("openai", "liar", &format!("http://{}/v1", liar.addr())),
        canary("banana"),
        deployment("openai", "honest", &format!("http://{}/v1", honest.addr())),
        canary("pong"),
    ));
    // Within a few canary intervals the liar is out.
    let admin_addr = gw.admin_addr().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, status) = admin(admin_addr, "GET", "/status");
        let status: Value = serde_json::from_str(&status).unwrap();
        let deps = status["llm"]["deployments"].as_array().unwrap().clone();
        let liar_state = deps
            .iter()
            .find(|d| d["deployment"] == "openai/liar")
            .unwrap()["state"]
            .clone();
        let honest_state = deps
            .iter()
            .find(|d| d["deployment"] == "openai/honest")
            .unwrap()["state"]
            .clone();
        if liar_state == "canary_failing" {
            assert_eq!(honest_state, "healthy");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "liar still {liar_state}: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Client traffic (which the liar would answer normally) now goes to the honest one only,
    // although the liar has 1000 times its weight.
    liar.clear_requests();
    for i in 0..5 {
        let r = post(
            addr(&gw),
            "/v1/chat/completions",
            "",
            &chat("m", &format!("q{i}")),
        );
        assert_eq!(r.status(), 200, "{}", r.text());
    }
    let liar_client_requests = liar
        .requests()
        .iter()
        .filter(|r| !String::from_utf8_lossy(&r.body).contains("mock:reply"))
        .count();
    assert_eq!(liar_client_requests, 0);
    let (_, metrics) = admin(admin_addr, "GET", "/metrics");
    assert!(
        metrics.contains("headwater_llm_deployment_state{model=\"m\",deployment=\"openai/liar\",state=\"canary_failing\"} 1"),
        "{metrics}"
    );
    gw.shutdown();
    liar.stop();
    honest.stop();
}

#[test]
fn virtual_keys_authenticate_and_budgets_stop_spending() {
    let _s = serial();
    let m = start_mock();
    let gw = gateway(&format!(
        "[[llm.key]]\nname = \"team\"\nkey = \"sk-team\"\nbudget = {{ usd = 0.000001, period = \"total\" }}\n\n[[llm.key]]\nname = \"other\"\nkey = \"sk-other\"\nmodels = [\"m\"]\n\n[[llm.model]]\nname = \"m\"\n{}price = {{ input_per_million = 1.0, output_per_million = 1.0 }}\n",
        deployment("openai", "x", &format!("http://{}/v1", m.addr()))
    ));
    let a = addr(&gw);
    // No key: 401 in the format of the API spoken.
    let r = post(a, "/v1/chat/completions", "", &chat("m", "hi"));
    assert_eq!(r.status(), 401);
    assert_eq!(r.json()["error"]["code"], "missing_api_key");
    let r = post(
        a,
        "/v1/messages",
        "",
        &json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status(), 401);
    assert_eq!(r.json()["type"], "error");
    // A wrong key.
    let r = post(
        a,
        "/v1/chat/completions",
        "Authorization: Bearer sk-nope\r\n",
        &chat("m", "hi"),
    );
    assert_eq!(r.status(), 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    // The first request spends more than the tiny budget; the next is refused.
    let r = post(
        a,
        "/v1/chat/completions",
        "Authorization: Bearer sk-team\r\n",
        &chat("m", "hi"),
    );
    assert_eq!(r.status(), 200, "{}", r.text());
    let r = post(
        a,
        "/v1/chat/completions",
        "Authorization: Bearer sk-team\r\n",
        &chat("m", "hi"),
    );
    assert_eq!(r.status(), 429, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "budget_exceeded");
    // Anthropic clients authenticate with x-api-key.
    let r = post(
        a,
        "/v1/messages",
        "x-api-key: sk-other\r\nanthropic-version: 2023-06-01\r\n",
        &json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hey"}]}),
    );
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(r.json()["content"][0]["text"], "echo: hey");
    // The key's spend is in the ledger.
    let (_, metrics) = admin(gw.admin_addr().unwrap(), "GET", "/metrics");
    assert!(metrics.contains("key=\"team\""), "{metrics}");
    gw.shutdown();
    m.stop();
}

#[test]
fn models_embeddings_and_bad_requests() {
    let _s = serial();
    let m = start_mock();
    let base = format!("http://{}/v1", m.addr());
    let gw = gateway(&format!(
        "[llm.upstream]\nmax_request_body = 4096\n\n[[llm.model]]\nname = \"chat\"\n{}\n[[llm.model]]\nname = \"embed\"\n{}",
        deployment("openai", "gpt", &base),
        deployment("openai", "text-embedding-3-small", &base)
    ));
    let a = addr(&gw);
    let r = Conn::open(a).get("/v1/models");
    assert_eq!(r.status(), 200);
    let v = r.json();
    assert_eq!(v["object"], "list");
    let ids = model_ids(&v);
    assert_eq!(ids, ["chat", "embed"]);

    let r = post(
        a,
        "/v1/embeddings",
        "",
        &json!({"model": "embed", "input": ["one two", "three"]}),
    );
    assert_eq!(r.status(), 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        v["data"][0]["embedding"].as_array().unwrap().len(),
        DEFAULT_DIMENSIONS as usize
    );
    let sent = m.requests().pop().unwrap();
    assert_eq!(sent.path, "/v1/embeddings");
    assert_eq!(sent.json()["model"], "text-embedding-3-small");

    // Unknown model: 404 in OpenAI's format, naming the parameter.
    let r = post(a, "/v1/chat/completions", "", &chat("nope", "hi"));
    assert_eq!(r.status(), 404, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "model");
    // Invalid JSON: 400.
    let raw = "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\n{nope";
    let r = Conn::open(a).request(raw.as_bytes(), &Method::POST);
    assert_eq!(r.status(), 400, "{}", r.text());
    // Too large: 413, and the connection closes.
    let big = "x".repeat(5000);
    let mut c = Conn::open(a);
    let r = c.post_json("/v1/chat/completions", "", &chat("chat", &big));
    assert_eq!(r.status(), 413, "{}", r.text());
    assert!(c.is_closed(), "the connection stays open after a 413");
    // Unknown endpoint and wrong method.
    let r = Conn::open(a).get("/v1/nothing");
    assert_eq!(r.status(), 404);
    let r = Conn::open(a).get("/v1/chat/completions");
    assert_eq!(r.status(), 405);
    // Keep-alive: several requests on one connection.
    let mut c = Conn::open(a);
    for i in 0..3 {
        let r = c.post_json("/v1/chat/completions", "", &chat("chat", &format!("k{i}")));
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.json()["choices"][0]["message"]["content"],
            format!("echo: k{i}")
        );
    }
    gw.shutdown();
    m.stop();
}

#[test]
fn the_access_log_carries_each_llm_request_record() {
    let _s = serial();
    let m = start_mock();
    let dir = std::env::temp_dir().join(format!(
        "headwater-llm-access-log-{}-{}",
        std::process::id(),
        m.addr().port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let gw = common::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\naccess_log = \"{}\"\n\n[[route]]\nname = \"ai\"\nmatch = {{ path_prefix = \"/v1/\" }}\nllm = true\n\n[[llm.key]]\nname = \"team\"\nkey = \"sk-team\"\n\n[[llm.model]]\nname = \"gpt\"\n{}",
        log.display(),
        deployment("openai", "gpt-4o-mini", &format!("http://{}/v1", m.addr()))
    ));
    let a = addr(&gw);
    let r = post(
        a,
        "/v1/chat/completions",
        "Authorization: Bearer sk-team\r\n",
        &chat("gpt", "log me"),
    );
    assert_eq!(r.status(), 200, "{}", r.text());
    let r = post(a, "/v1/chat/completions", "", &chat("gpt", "no key"));
    assert_eq!(r.status(), 401, "{}", r.text());
    gw.shutdown();
    m.stop();

    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let ok = &lines[0]["llm"];
    assert_eq!(lines[0]["status"], 200, "{text}");
    assert_eq!(ok["model"], "gpt", "{text}");
    assert_eq!(ok["deployment"], "openai/gpt-4o-mini", "{text}");
    assert_eq!(ok["provider"], "openai", "{text}");
    assert_eq!(ok["key"], "team", "{text}");
    assert_eq!(ok["outcome"], "success", "{text}");
    assert_eq!(ok["attempts"], 1, "{text}");
    assert!(ok["output_tokens"].as_u64().unwrap_or(0) > 0, "{text}");
    assert_eq!(lines[1]["status"], 401, "{text}");
    assert_eq!(lines[1]["llm"]["outcome"], "missing_api_key", "{text}");
}
