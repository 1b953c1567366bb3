//! The LLM gateway's conformance matrix: every ingress (OpenAI Chat Completions, Anthropic
//! Messages) × every egress provider (openai, azure, anthropic, gemini, mistral,
//! openai-compatible) × (not streamed, streamed) × (plain text, two parallel tool calls),
//! checked field by field on the client's side, and on the provider's side: what the mock
//! provider received (path, auth header style, model, messages, tools, system prompt, token
//! limit, stop sequences, temperature, stream options).
//!
//! One gateway serves one model alias per provider, all pointing at one
//! [`MockProvider`](headwater_engine::llm_mock::MockProvider), whose answers are deterministic
//! (see its module documentation): the text `"echo: <last user text>"` streamed word by word,
//! usage counted in whitespace-separated words (prompt: the system prompt, every text part
//! and tool result; completion: the reply's words, or `TOOL_CALL_TOKENS` per tool call), and
//! one tool call per `call:NAME` word of the last user message when tools are declared, with
//! arguments `TOOL_ARGUMENTS` streamed as `TOOL_ARGUMENT_PIECES` (Gemini: whole).
//!
//! A cell does not stop at its first mismatch: every check of every cell runs, and a test
//! fails at its end with the list of all mismatches, each naming its cell
//! (`ingress → provider, streamed?, shape`) and its field.

mod common;

use std::collections::BTreeSet;
use std::fmt::{Debug, Display};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::Duration;

use bytes::BytesMut;
use common::{parse_sse, serial, start_mock, Conn, Response};
use headwater_engine::llm_mock::{
    Behavior, MockProvider, Received, DEFAULT_PREFIX, TOOL_ARGUMENTS, TOOL_ARGUMENT_PIECES,
    TOOL_CALL_TOKENS,
};
use headwater_engine::server::Server;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// The matrix's axes
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    OpenAi,
    Azure,
    Anthropic,
    Gemini,
    Mistral,
    Compatible,
}

/// One egress provider: its configuration name, the alias clients ask for, the upstream
/// model (for Azure, the deployment name) and the deployment's key.
struct Provider {
    kind: Kind,
    config: &'static str,
    alias: &'static str,
    model: &'static str,
    key: &'static str,
}

const PROVIDERS: [Provider; 6] = [
    Provider {
        kind: Kind::OpenAi,
        config: "openai",
        alias: "m-openai",
        model: "gpt-up",
        key: "sk-up-openai",
    },
    Provider {
        kind: Kind::Azure,
        config: "azure",
        alias: "m-azure",
        model: "azure-dep",
        key: "sk-up-azure",
    },
    Provider {
        kind: Kind::Anthropic,
        config: "anthropic",
        alias: "m-anthropic",
        model: "claude-up",
        key: "sk-up-anthropic",
    },
    Provider {
        kind: Kind::Gemini,
        config: "gemini",
        alias: "m-gemini",
        model: "gemini-up",
        key: "sk-up-gemini",
    },
    Provider {
        kind: Kind::Mistral,
        config: "mistral",
        alias: "m-mistral",
        model: "mistral-up",
        key: "sk-up-mistral",
    },
    Provider {
        kind: Kind::Compatible,
        config: "openai-compatible",
        alias: "m-compatible",
        model: "compat-up",
        key: "sk-up-compatible",
    },
];

impl Provider {
    fn base_url(&self, mock: SocketAddr) -> String {
        match self.kind {
            Kind::Gemini => format!("http://{mock}/v1beta"),
            Kind::Azure => format!("http://{mock}/openai"),
            // Under a `mistral` segment the mock streams usage as Mistral does: on the finish
            // chunk, unasked.
            Kind::Mistral => format!("http://{mock}/mistral/v1"),
            _ => format!("http://{mock}/v1"),
        }
    }
}

/// The client-facing API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ingress {
    OpenAi,
    Anthropic,
}

/// What the conversation asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// A system prompt and one user message: the answer is the echo text.
    Text,
    /// Two tools declared, a history with one earlier tool round (assistant text and a tool
    /// call, its result), and a last user message asking for two parallel calls.
    Tools,
}

/// The azure deployment's `api_version`: not the gateway's default (to see the configured one
/// is used), and one that accepts `stream_options` (2024-10-21 and later previews do).
const AZURE_API_VERSION: &str = "2025-01-01-preview";
/// The virtual key clients present; it must never reach a provider.
const CLIENT_KEY: &str = "hw-matrix-client-key";

const SYSTEM: &str = "You are terse.";
const USER_TEXT: &str = "hello matrix world";
const HISTORY_QUESTION: &str = "what is the weather";
const HISTORY_ASSISTANT: &str = "Let me check.";
const HISTORY_RESULT: &str = "sunny and warm";
const HISTORY_ARGS: &str = r#"{"city":"Oslo"}"#;
const TOOL_TURN: &str = "now call:get_weather call:get_time";
/// The tools the mock is asked to call, in order.
const CALLS: [&str; 2] = ["get_weather", "get_time"];
const MAX_TOKENS: u64 = 64;
const TEMPERATURE: f64 = 0.5;
const STOP: &str = "END";

fn echo_text() -> String {
    format!("{DEFAULT_PREFIX}{USER_TEXT}")
}

/// Whitespace-separated words, as the mock counts tokens.
fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// The prompt and completion token counts the mock reports for `shape`.
fn expected_usage(shape: Shape) -> (u64, u64) {
    match shape {
        Shape::Text => (words(SYSTEM) + words(USER_TEXT), words(&echo_text())),
        Shape::Tools => (
            words(SYSTEM)
                + words(HISTORY_QUESTION)
                + words(HISTORY_ASSISTANT)
                + words(HISTORY_RESULT)
                + words(TOOL_TURN),
            CALLS.len() as u64 * TOOL_CALL_TOKENS,
        ),
    }
}

fn tool_arguments() -> Value {
    serde_json::from_str(TOOL_ARGUMENTS).unwrap()
}

fn weather_schema() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
}

fn time_schema() -> Value {
    json!({"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]})
}

/// (name, description, JSON Schema) of the declared tools.
fn tool_defs() -> [(&'static str, &'static str, Value); 2] {
    [
        ("get_weather", "Current weather in a city", weather_schema()),
        ("get_time", "Current time in a time zone", time_schema()),
    ]
}

/// The declared tools in OpenAI's format (requests and what OpenAI-family providers receive).
fn openai_tools() -> Value {
    tool_defs()
        .into_iter()
        .map(|(name, description, parameters)| {
            json!({"type": "function", "function": {
                "name": name, "description": description, "parameters": parameters,
            }})
        })
        .collect()
}

/// The declared tools in Anthropic's format.
fn anthropic_tools() -> Value {
    tool_defs()
        .into_iter()
        .map(|(name, description, schema)| {
            json!({"name": name, "description": description, "input_schema": schema})
        })
        .collect()
}

/// The OpenAI-format conversation of `shape`: `call_id` names the history's tool call;
/// `tool_name`: the tool message names its function (as Mistral wants).
fn openai_messages(shape: Shape, call_id: &str, tool_name: bool) -> Vec<Value> {
    let mut messages = vec![json!({"role": "system", "content": SYSTEM})];
    match shape {
        Shape::Text => messages.push(json!({"role": "user", "content": USER_TEXT})),
        Shape::Tools => {
            messages.push(json!({"role": "user", "content": HISTORY_QUESTION}));
            messages.push(json!({
                "role": "assistant",
                "content": HISTORY_ASSISTANT,
                "tool_calls": [{
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": HISTORY_ARGS},
                }],
            }));
            let mut tool =
                json!({"role": "tool", "tool_call_id": call_id, "content": HISTORY_RESULT});
            if tool_name {
                tool["name"] = json!("get_weather");
            }
            messages.push(tool);
            messages.push(json!({"role": "user", "content": TOOL_TURN}));
        }
    }
    messages
}

// ---------------------------------------------------------------------------------------------
// Gateway and client
// ---------------------------------------------------------------------------------------------

/// The `[llm]` tables: one alias per provider, all at `mock`, and one virtual key.
fn llm_config(mock: SocketAddr) -> String {
    let mut s = String::new();
    for p in &PROVIDERS {
        s.push_str(&format!(
            "[[llm.model]]\nname = \"{}\"\n[[llm.model.deployment]]\nprovider = \"{}\"\nmodel = \"{}\"\nbase_url = \"{}\"\napi_key = \"{}\"\n",
            p.alias,
            p.config,
            p.model,
            p.base_url(mock),
            p.key
        ));
        if p.kind == Kind::Azure {
            s.push_str(&format!("api_version = \"{AZURE_API_VERSION}\"\n"));
        }
        s.push('\n');
    }
    s.push_str(&format!(
        "[[llm.key]]\nname = \"matrix\"\nkey = \"{CLIENT_KEY}\"\n"
    ));
    s
}

/// A gateway with one LLM route and `llm` as its `[llm]` tables.
fn gateway(llm: &str) -> Server {
    common::start_llm(llm)
}

fn addr(s: &Server) -> SocketAddr {
    s.listen_addrs()[0]
}

/// POSTs `body` (JSON) to the ingress's path, with the ingress's way of presenting the key.
fn post(addr: SocketAddr, ingress: Ingress, body: &Value) -> Response {
    let (path, headers) = match ingress {
        Ingress::OpenAi => (
            "/v1/chat/completions",
            format!("Authorization: Bearer {CLIENT_KEY}\r\n"),
        ),
        Ingress::Anthropic => (
            "/v1/messages",
            format!("x-api-key: {CLIENT_KEY}\r\nanthropic-version: 2023-06-01\r\n"),
        ),
    };
    Conn::open(addr).post_json(path, &headers, body)
}

// ---------------------------------------------------------------------------------------------
// Checking, without stopping at the first mismatch
// ---------------------------------------------------------------------------------------------

/// The mismatches of one cell.
struct Cell {
    name: String,
    fails: Vec<String>,
}

impl Cell {
    fn new(name: String) -> Cell {
        Cell {
            name,
            fails: Vec::new(),
        }
    }

    fn fail(&mut self, what: impl Display) {
        self.fails.push(format!("[{}] {what}", self.name));
    }

    fn check(&mut self, what: &str, ok: bool, got: impl Display) {
        if !ok {
            self.fail(format!("{what}: got {got}"));
        }
    }

    fn eq<T: PartialEq + Debug>(&mut self, what: &str, got: T, want: T) {
        if got != want {
            self.fail(format!("{what}: got {got:?}, want {want:?}"));
        }
    }

    /// [`eq`](Self::eq) with the description last.
    fn is<T: PartialEq + Debug>(&mut self, got: T, want: T, what: &str) {
        self.eq(what, got, want);
    }

    /// `got` equals `want`, compared field by field (each differing path is reported).
    fn json(&mut self, what: &str, got: &Value, want: &Value) {
        let mut out = Vec::new();
        json_diff(what, got, want, &mut out);
        for d in out {
            self.fail(d);
        }
    }

    fn nonempty_str(&mut self, what: &str, v: &Value) -> String {
        match v.as_str() {
            Some(s) if !s.is_empty() => s.to_owned(),
            _ => {
                self.fail(format!("{what}: want a non-empty string, got {v}"));
                String::new()
            }
        }
    }
}

fn json_diff(path: &str, got: &Value, want: &Value, out: &mut Vec<String>) {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            for (k, wv) in w {
                let p = format!("{path}.{k}");
                match g.get(k) {
                    Some(gv) => json_diff(&p, gv, wv, out),
                    None => out.push(format!("{p}: missing, want {wv}")),
                }
            }
            for (k, gv) in g {
                if !w.contains_key(k) {
                    out.push(format!("{path}.{k}: unexpected field, got {gv}"));
                }
            }
        }
        (Value::Array(g), Value::Array(w)) if g.len() == w.len() => {
            for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                json_diff(&format!("{path}[{i}]"), gv, wv, out);
            }
        }
        _ if got == want => {}
        _ => out.push(format!("{path}: got {got}, want {want}")),
    }
}

/// All cells' mismatches; fails the test at the end with every one of them.
#[derive(Default)]
struct Report {
    cells: usize,
    failed: usize,
    lines: Vec<String>,
}

impl Report {
    fn add(&mut self, cell: Cell) {
        self.cells += 1;
        if !cell.fails.is_empty() {
            self.failed += 1;
            self.lines.extend(cell.fails);
        }
    }

    fn finish(self, what: &str) {
        eprintln!("{what}: {} cells, {} failed", self.cells, self.failed);
        assert!(
            self.lines.is_empty(),
            "{what}: {} of {} cells failed:\n{}",
            self.failed,
            self.cells,
            self.lines.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Client requests
// ---------------------------------------------------------------------------------------------

/// `stream`: `None` not streamed, `Some(include_usage)` streamed.
fn openai_request(p: &Provider, shape: Shape, stream: Option<bool>) -> Value {
    let mut r = json!({
        "model": p.alias,
        "messages": openai_messages(shape, history_call_id(Ingress::OpenAi), false),
        "max_completion_tokens": MAX_TOKENS,
        "temperature": TEMPERATURE,
        "stop": [STOP],
    });
    if shape == Shape::Tools {
        r["tools"] = openai_tools();
        r["tool_choice"] = json!("auto");
        r["parallel_tool_calls"] = json!(true);
    }
    if let Some(include_usage) = stream {
        r["stream"] = json!(true);
        if include_usage {
            r["stream_options"] = json!({"include_usage": true});
        }
    }
    r
}

fn anthropic_request(p: &Provider, shape: Shape, stream: bool) -> Value {
    let messages = match shape {
        Shape::Text => vec![json!({"role": "user", "content": USER_TEXT})],
        Shape::Tools => vec![
            json!({"role": "user", "content": HISTORY_QUESTION}),
            json!({"role": "assistant", "content": [
                {"type": "text", "text": HISTORY_ASSISTANT},
                {"type": "tool_use", "id": "toolu_prev1", "name": "get_weather",
                 "input": serde_json::from_str::<Value>(HISTORY_ARGS).unwrap()},
            ]}),
            json!({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_prev1", "content": HISTORY_RESULT},
                {"type": "text", "text": TOOL_TURN},
            ]}),
        ],
    };
    let mut r = json!({
        "model": p.alias,
        "max_tokens": MAX_TOKENS,
        "system": SYSTEM,
        "messages": messages,
        "temperature": TEMPERATURE,
        "stop_sequences": [STOP],
    });
    if shape == Shape::Tools {
        r["tools"] = anthropic_tools();
        r["tool_choice"] = json!({"type": "auto"});
    }
    if stream {
        r["stream"] = json!(true);
    }
    r
}

/// A [`Shape::Text`] request in `ingress`'s format (streamed: an OpenAI one asks for usage).
fn text_request(ingress: Ingress, p: &Provider, stream: bool) -> Value {
    match ingress {
        Ingress::OpenAi => openai_request(p, Shape::Text, stream.then_some(true)),
        Ingress::Anthropic => anthropic_request(p, Shape::Text, stream),
    }
}

// ---------------------------------------------------------------------------------------------
// What the provider must receive
// ---------------------------------------------------------------------------------------------

fn upstream_path(p: &Provider, stream: bool) -> String {
    match p.kind {
        Kind::OpenAi | Kind::Compatible => "/v1/chat/completions".to_owned(),
        Kind::Mistral => "/mistral/v1/chat/completions".to_owned(),
        Kind::Azure => format!(
            "/openai/deployments/{}/chat/completions?api-version={AZURE_API_VERSION}",
            p.model
        ),
        Kind::Anthropic => "/v1/messages".to_owned(),
        Kind::Gemini if stream => {
            format!("/v1beta/models/{}:streamGenerateContent?alt=sse", p.model)
        }
        Kind::Gemini => format!("/v1beta/models/{}:generateContent", p.model),
    }
}

/// The id of the history's tool call as the client sent it.
fn history_call_id(ingress: Ingress) -> &'static str {
    match ingress {
        Ingress::OpenAi => "call_prev1",
        Ingress::Anthropic => "toolu_prev1",
    }
}

/// The body an OpenAI-family provider must receive. `call_id`: the history's tool-call id
/// as it must be sent.
fn openai_family_body(
    p: &Provider,
    ingress: Ingress,
    shape: Shape,
    stream: bool,
    call_id: &str,
) -> Value {
    // Mistral wants the function's name on tool messages.
    let messages = openai_messages(shape, call_id, p.kind == Kind::Mistral);
    let mut b = json!({
        "messages": messages,
        "temperature": TEMPERATURE,
        "stop": [STOP],
    });
    if p.kind != Kind::Azure {
        // Azure names the model by the deployment in the path.
        b["model"] = json!(p.model);
    }
    if p.kind == Kind::OpenAi {
        b["max_completion_tokens"] = json!(MAX_TOKENS);
    } else {
        b["max_tokens"] = json!(MAX_TOKENS);
    }
    if stream {
        b["stream"] = json!(true);
        if p.kind != Kind::Mistral {
            // Mistral sends usage in its last chunk unasked (and rejects unknown fields).
            b["stream_options"] = json!({"include_usage": true});
        }
    }
    if shape == Shape::Tools {
        b["tools"] = openai_tools();
        b["tool_choice"] = json!("auto");
        if ingress == Ingress::OpenAi {
            b["parallel_tool_calls"] = json!(true);
        }
    }
    b
}

fn anthropic_body(ingress: Ingress, shape: Shape, stream: bool) -> Value {
    let id = history_call_id(ingress);
    let messages = match shape {
        Shape::Text => json!([{"role": "user", "content": [{"type": "text", "text": USER_TEXT}]}]),
        Shape::Tools => json!([
            {"role": "user", "content": [{"type": "text", "text": HISTORY_QUESTION}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": HISTORY_ASSISTANT},
                {"type": "tool_use", "id": id, "name": "get_weather",
                 "input": serde_json::from_str::<Value>(HISTORY_ARGS).unwrap()},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": id,
                 "content": [{"type": "text", "text": HISTORY_RESULT}]},
                {"type": "text", "text": TOOL_TURN},
            ]},
        ]),
    };
    let mut b = json!({
        "model": "claude-up",
        "max_tokens": MAX_TOKENS,
        "system": SYSTEM,
        "messages": messages,
        "temperature": TEMPERATURE,
        "stop_sequences": [STOP],
    });
    if stream {
        b["stream"] = json!(true);
    }
    if shape == Shape::Tools {
        b["tools"] = anthropic_tools();
        b["tool_choice"] = json!({"type": "auto"});
    }
    b
}

fn gemini_body(shape: Shape) -> Value {
    let contents = match shape {
        Shape::Text => json!([{"role": "user", "parts": [{"text": USER_TEXT}]}]),
        Shape::Tools => json!([
            {"role": "user", "parts": [{"text": HISTORY_QUESTION}]},
            {"role": "model", "parts": [
                {"text": HISTORY_ASSISTANT},
                {"functionCall": {"name": "get_weather",
                                  "args": serde_json::from_str::<Value>(HISTORY_ARGS).unwrap()}},
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather",
                                      "response": {"output": HISTORY_RESULT}}},
                {"text": TOOL_TURN},
            ]},
        ]),
    };
    let mut b = json!({
        "contents": contents,
        "systemInstruction": {"parts": [{"text": SYSTEM}]},
        "generationConfig": {
            "temperature": TEMPERATURE,
            "maxOutputTokens": MAX_TOKENS,
            "stopSequences": [STOP],
        },
    });
    if shape == Shape::Tools {
        b["tools"] = json!([{"functionDeclarations": tool_defs()
            .into_iter()
            .map(|(name, description, schema)| {
                json!({"name": name, "description": description, "parametersJsonSchema": schema})
            })
            .collect::<Vec<_>>()}]);
        b["toolConfig"] = json!({"functionCallingConfig": {"mode": "AUTO"}});
    }
    b
}

/// Checks the one request the provider received for a cell.
fn check_upstream(
    c: &mut Cell,
    p: &Provider,
    ingress: Ingress,
    shape: Shape,
    stream: bool,
    sent: &[Received],
) {
    if sent.len() != 1 {
        c.fail(format!(
            "upstream: want exactly one request, got {}: {:?}",
            sent.len(),
            sent.iter().map(|r| &r.path).collect::<Vec<_>>()
        ));
    }
    let Some(r) = sent.first() else { return };
    c.eq("upstream method", r.method.as_str(), "POST");
    c.eq("upstream path", r.path.clone(), upstream_path(p, stream));
    c.eq(
        "upstream content-type",
        r.header("content-type"),
        Some("application/json"),
    );
    c.eq(
        "upstream accept",
        r.header("accept"),
        Some(if stream {
            "text/event-stream"
        } else {
            "application/json"
        }),
    );
    // The auth header style of each provider, and no other credential.
    let bearer = format!("Bearer {}", p.key);
    let (want_auth, want_api_key, want_x_api_key, want_goog) = match p.kind {
        Kind::OpenAi | Kind::Mistral | Kind::Compatible => {
            (Some(bearer.as_str()), None, None, None)
        }
        Kind::Azure => (None, Some(p.key), None, None),
        Kind::Anthropic => (None, None, Some(p.key), None),
        Kind::Gemini => (None, None, None, Some(p.key)),
    };
    c.eq(
        "upstream authorization",
        r.header("authorization"),
        want_auth,
    );
    c.eq("upstream api-key", r.header("api-key"), want_api_key);
    c.eq("upstream x-api-key", r.header("x-api-key"), want_x_api_key);
    c.eq(
        "upstream x-goog-api-key",
        r.header("x-goog-api-key"),
        want_goog,
    );
    c.eq(
        "upstream anthropic-version",
        r.header("anthropic-version"),
        (p.kind == Kind::Anthropic).then_some("2023-06-01"),
    );
    let leaked = r.headers.iter().any(|(_, v)| v.contains(CLIENT_KEY))
        || String::from_utf8_lossy(&r.body).contains(CLIENT_KEY);
    c.check(
        "the client's key must not reach the provider",
        !leaked,
        format!("{:?}", r.headers),
    );

    let body = r.json();
    if body.is_null() {
        c.fail(format!(
            "upstream body is not JSON: {}",
            String::from_utf8_lossy(&r.body)
        ));
        return;
    }
    let want = match p.kind {
        Kind::Anthropic => anthropic_body(ingress, shape, stream),
        Kind::Gemini => gemini_body(shape),
        _ => {
            let mut call_id = history_call_id(ingress).to_owned();
            if p.kind == Kind::Mistral && shape == Shape::Tools {
                // Mistral accepts only 9-letter-or-digit ids: the gateway maps them, the
                // same way in the call and in its result.
                let got = body
                    .pointer("/messages/2/tool_calls/0/id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                c.check(
                    "mistral tool-call id: 9 ASCII letters or digits",
                    got.len() == 9 && got.bytes().all(|b| b.is_ascii_alphanumeric()),
                    &got,
                );
                call_id = got;
            }
            openai_family_body(p, ingress, shape, stream, &call_id)
        }
    };
    c.json("upstream body", &body, &want);
}

// ---------------------------------------------------------------------------------------------
// What the client must receive
// ---------------------------------------------------------------------------------------------

/// Checks the id of the client's tool call `i`, at `what` in `v`: a non-empty string, the
/// provider's own when it gave one; returns it.
fn check_call_id(c: &mut Cell, p: &Provider, what: &str, i: usize, v: &Value) -> String {
    let id = c.nonempty_str(what, v);
    let id = id.as_str();
    let ok = match p.kind {
        Kind::Anthropic => id.starts_with("toolu_mock") && id.ends_with(&format!("x{i}")),
        Kind::Gemini => !id.is_empty(),
        _ => id.starts_with("call_mock") && id.ends_with(&format!("x{i}")),
    };
    c.check(
        &format!("{what}: the provider's id (or one made up for Gemini)"),
        ok,
        id,
    );
    // Anthropic's pattern for tool_use ids, which every id satisfies so that any client
    // can send it back.
    c.check(
        &format!("{what}: matches ^[a-zA-Z0-9_-]+$"),
        !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        id,
    );
    id.to_owned()
}

fn response_json(c: &mut Cell, r: &Response) -> Option<Value> {
    c.eq("status", r.status(), 200);
    c.eq(
        "content-type",
        r.header("content-type").as_deref(),
        Some("application/json"),
    );
    match serde_json::from_slice::<Value>(&r.body) {
        Ok(v) if r.status() == 200 => Some(v),
        Ok(_) => {
            c.fail(format!("body: {}", r.text()));
            None
        }
        Err(e) => {
            c.fail(format!("body is not JSON ({e}): {}", r.text()));
            None
        }
    }
}

/// Checks a streamed answer's status and content type; false (the rest is not worth checking)
/// unless the status is 200.
fn check_stream_head(c: &mut Cell, r: &Response) -> bool {
    c.eq("status", r.status(), 200);
    if r.status() != 200 {
        c.fail(format!("body: {}", r.text()));
        return false;
    }
    c.eq(
        "content-type",
        r.header("content-type").as_deref(),
        Some("text/event-stream"),
    );
    true
}

fn check_openai_completion(c: &mut Cell, p: &Provider, shape: Shape, r: &Response) {
    let Some(v) = response_json(c, r) else { return };
    c.nonempty_str("id", &v["id"]);
    c.is(&v["object"], &json!("chat.completion"), "object");
    c.check(
        "created: a Unix time",
        v["created"].as_u64().is_some_and(|t| t > 1_600_000_000),
        &v["created"],
    );
    c.is(&v["model"], &json!(p.model), "model (the provider's)");
    let choices = v["choices"].as_array().cloned().unwrap_or_default();
    c.eq("choices: one", choices.len(), 1);
    let ch = &v["choices"][0];
    c.is(&ch["index"], &json!(0), "choices[0].index");
    let m = &ch["message"];
    c.is(&m["role"], &json!("assistant"), "message.role");
    match shape {
        Shape::Text => {
            c.is(&m["content"], &json!(echo_text()), "message.content");
            c.check(
                "message.tool_calls: none",
                m.get("tool_calls")
                    .is_none_or(|t| t.is_null() || t.as_array().is_some_and(Vec::is_empty)),
                &m["tool_calls"],
            );
            c.is(&ch["finish_reason"], &json!("stop"), "finish_reason");
        }
        Shape::Tools => {
            c.is(&m["content"], &Value::Null, "message.content");
            let calls = m["tool_calls"].as_array().cloned().unwrap_or_default();
            c.eq("message.tool_calls: two", calls.len(), CALLS.len());
            let mut ids = BTreeSet::new();
            for (i, (call, name)) in calls.iter().zip(CALLS).enumerate() {
                let what = format!("message.tool_calls[{i}]");
                ids.insert(check_call_id(c, p, &format!("{what}.id"), i, &call["id"]));
                c.is(&call["type"], &json!("function"), &format!("{what}.type"));
                c.is(
                    &call["function"]["name"],
                    &json!(name),
                    &format!("{what}.function.name"),
                );
                match call["function"]["arguments"].as_str() {
                    Some(a) => c.is(
                        serde_json::from_str::<Value>(a).ok(),
                        Some(tool_arguments()),
                        &format!("{what}.function.arguments (parsed)"),
                    ),
                    None => c.fail(format!(
                        "{what}.function.arguments: want a JSON string, got {}",
                        call["function"]["arguments"]
                    )),
                }
            }
            c.eq("tool-call ids distinct", ids.len(), calls.len());
            c.is(&ch["finish_reason"], &json!("tool_calls"), "finish_reason");
        }
    }
    check_openai_usage(c, &v["usage"], shape);
}

/// Checks an OpenAI `usage` object against what the mock counts for `shape`.
fn check_openai_usage(c: &mut Cell, usage: &Value, shape: Shape) {
    let (prompt, completion) = expected_usage(shape);
    c.is(
        &usage["prompt_tokens"],
        &json!(prompt),
        "usage.prompt_tokens",
    );
    c.is(
        &usage["completion_tokens"],
        &json!(completion),
        "usage.completion_tokens",
    );
    c.is(
        &usage["total_tokens"],
        &json!(prompt + completion),
        "usage.total_tokens",
    );
}

/// Arguments pieces per call index, from (index, piece) pairs in stream order.
fn pieces_by_call(pairs: &[(usize, String)]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = vec![Vec::new(); CALLS.len()];
    for (i, piece) in pairs {
        if let Some(v) = out.get_mut(*i) {
            if !piece.is_empty() {
                v.push(piece.clone());
            }
        }
    }
    out
}

/// The arguments of each call, streamed in `pieces`: they concatenate to the mock's
/// arguments, split as the provider split them (Gemini sends whole calls).
fn check_argument_pieces(c: &mut Cell, p: &Provider, what: &str, pieces: &[Vec<String>]) {
    for (i, ps) in pieces.iter().enumerate() {
        let joined = ps.concat();
        c.is(
            serde_json::from_str::<Value>(&joined).ok(),
            Some(tool_arguments()),
            &format!("{what} of call {i}: pieces concatenate to the arguments ({joined:?})"),
        );
        if p.kind != Kind::Gemini {
            c.is(
                ps.iter().map(String::as_str).collect::<Vec<_>>(),
                TOOL_ARGUMENT_PIECES.to_vec(),
                &format!("{what} of call {i}: split across events as the provider split them"),
            );
        }
    }
}

fn check_openai_stream(
    c: &mut Cell,
    p: &Provider,
    shape: Shape,
    include_usage: bool,
    r: &Response,
) {
    if !check_stream_head(c, r) {
        return;
    }
    let body = r.text();
    let events = parse_sse(&body);
    c.check(
        "no `event:` names in an OpenAI stream",
        events.iter().all(|e| e.event.is_none()),
        &body,
    );
    let Some(last) = events.last() else {
        c.fail("empty stream");
        return;
    };
    c.eq("last event", last.data.as_str(), "[DONE]");
    c.eq(
        "[DONE] events",
        events.iter().filter(|e| e.data == "[DONE]").count(),
        1,
    );
    let mut chunks = Vec::new();
    for e in events.iter().filter(|e| e.data != "[DONE]") {
        match serde_json::from_str::<Value>(&e.data) {
            Ok(v) => chunks.push(v),
            Err(err) => c.fail(format!("chunk is not JSON ({err}): {}", e.data)),
        }
    }
    let id = chunks
        .first()
        .map(|v| c.nonempty_str("chunk id", &v["id"]))
        .unwrap_or_default();
    let created = chunks.first().map(|v| v["created"].clone());
    for (n, v) in chunks.iter().enumerate() {
        let what = format!("chunk {n}");
        c.is(
            &v["object"],
            &json!("chat.completion.chunk"),
            &format!("{what}.object"),
        );
        c.is(
            &v["id"],
            &json!(id),
            &format!("{what}.id (same in every chunk)"),
        );
        c.is(
            Some(&v["created"]),
            created.as_ref(),
            &format!("{what}.created"),
        );
        c.is(&v["model"], &json!(p.model), &format!("{what}.model"));
        let is_usage_chunk = v["choices"].as_array().is_some_and(Vec::is_empty);
        if include_usage {
            if !is_usage_chunk {
                c.is(
                    v.get("usage"),
                    Some(&Value::Null),
                    &format!("{what}.usage: null before the usage chunk"),
                );
            }
        } else {
            c.check(
                &format!("{what}: no usage without stream_options.include_usage"),
                v.get("usage").is_none() && !is_usage_chunk,
                v,
            );
        }
    }
    // The usage chunk: last, with empty choices, only when asked for.
    let usage_chunks: Vec<&Value> = chunks
        .iter()
        .filter(|v| v["choices"].as_array().is_some_and(Vec::is_empty))
        .collect();
    if include_usage {
        // Mistral puts usage in its last chunk unasked (and rejects `stream_options` with a
        // 422, so the gateway does not send it); the mock does the same under `/mistral/`, so
        // every provider's cell must relay it.
        c.eq("usage chunks", usage_chunks.len(), 1);
        c.check(
            "the usage chunk is the last chunk",
            chunks
                .last()
                .is_some_and(|v| v["choices"].as_array().is_some_and(Vec::is_empty)),
            format!("{:?}", chunks.last()),
        );
        if let Some(u) = usage_chunks.first() {
            check_openai_usage(c, &u["usage"], shape);
        }
    }
    let choice_chunks: Vec<&Value> = chunks
        .iter()
        .filter(|v| !v["choices"].as_array().is_some_and(Vec::is_empty))
        .collect();
    let mut text = String::new();
    let mut finishes = Vec::new();
    let mut starts: Vec<(usize, Value)> = Vec::new();
    let mut args: Vec<(usize, String)> = Vec::new();
    for (n, v) in choice_chunks.iter().enumerate() {
        let what = format!("choice chunk {n}");
        c.is(
            v["choices"].as_array().map(Vec::len),
            Some(1),
            &format!("{what}: one choice"),
        );
        let ch = &v["choices"][0];
        c.is(&ch["index"], &json!(0), &format!("{what}.choices[0].index"));
        let delta = &ch["delta"];
        if n == 0 {
            c.is(
                &delta["role"],
                &json!("assistant"),
                "first chunk: delta.role",
            );
        } else {
            c.check(
                &format!("{what}: delta.role only in the first chunk"),
                delta.get("role").is_none(),
                delta,
            );
        }
        if !finishes.is_empty() {
            c.fail(format!("{what}: a chunk after the finish chunk: {v}"));
        }
        if let Some(t) = delta["content"].as_str() {
            text.push_str(t);
        }
        for tc in delta["tool_calls"].as_array().into_iter().flatten() {
            let Some(i) = tc["index"].as_u64().map(|i| i as usize) else {
                c.fail(format!("{what}: tool_calls item without an index: {tc}"));
                continue;
            };
            let started = starts.iter().any(|(s, _)| *s == i);
            if !started {
                starts.push((i, tc.clone()));
            } else {
                c.check(
                    &format!("{what}: only the first delta of call {i} has its id and name"),
                    tc.get("id").is_none() && tc["function"].get("name").is_none(),
                    tc,
                );
            }
            match tc["function"]["arguments"].as_str() {
                Some(a) => args.push((i, a.to_owned())),
                None if !started => {}
                None => c.fail(format!("{what}: an argument delta without arguments: {tc}")),
            }
        }
        if let Some(f) = ch["finish_reason"].as_str() {
            finishes.push(f.to_owned());
        } else {
            c.is(
                &ch["finish_reason"],
                &Value::Null,
                &format!("{what}.finish_reason"),
            );
        }
    }
    let want_finish = match shape {
        Shape::Text => "stop",
        Shape::Tools => "tool_calls",
    };
    c.eq(
        "finish_reason (exactly one chunk)",
        finishes,
        vec![want_finish.to_owned()],
    );
    match shape {
        Shape::Text => {
            c.eq("content deltas concatenated", text, echo_text());
            c.check(
                "no tool-call deltas",
                starts.is_empty(),
                format!("{starts:?}"),
            );
        }
        Shape::Tools => {
            c.eq("content deltas concatenated", text, String::new());
            c.eq(
                "tool-call indices in order of their first delta",
                starts.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
                (0..CALLS.len()).collect::<Vec<_>>(),
            );
            let mut ids = BTreeSet::new();
            for (i, first) in &starts {
                let what = format!("first delta of call {i}");
                ids.insert(check_call_id(c, p, &format!("{what}.id"), *i, &first["id"]));
                c.is(&first["type"], &json!("function"), &format!("{what}.type"));
                c.is(
                    &first["function"]["name"],
                    &json!(CALLS.get(*i).copied().unwrap_or("?")),
                    &format!("{what}.function.name"),
                );
            }
            c.eq("tool-call ids distinct", ids.len(), starts.len());
            check_argument_pieces(c, p, "arguments deltas", &pieces_by_call(&args));
        }
    }
}

/// Checks Anthropic `tool_use` blocks: one per call of [`CALLS`], in order, with distinct ids
/// and `input`; `what(i)` names block `i`.
fn check_tool_use_blocks(
    c: &mut Cell,
    p: &Provider,
    blocks: &[Value],
    what: impl Fn(usize) -> String,
    input: &Value,
) {
    let mut ids = BTreeSet::new();
    for (i, (b, name)) in blocks.iter().zip(CALLS).enumerate() {
        let what = what(i);
        c.is(&b["type"], &json!("tool_use"), &format!("{what}.type"));
        ids.insert(check_call_id(c, p, &format!("{what}.id"), i, &b["id"]));
        c.is(&b["name"], &json!(name), &format!("{what}.name"));
        c.is(&b["input"], input, &format!("{what}.input"));
    }
    c.eq("tool_use ids distinct", ids.len(), blocks.len());
}

fn check_anthropic_message(c: &mut Cell, p: &Provider, shape: Shape, r: &Response) {
    let Some(v) = response_json(c, r) else { return };
    let (prompt, completion) = expected_usage(shape);
    c.nonempty_str("id", &v["id"]);
    c.is(&v["type"], &json!("message"), "type");
    c.is(&v["role"], &json!("assistant"), "role");
    c.is(&v["model"], &json!(p.model), "model (the provider's)");
    c.is(&v["stop_sequence"], &Value::Null, "stop_sequence");
    let blocks = v["content"].as_array().cloned().unwrap_or_default();
    match shape {
        Shape::Text => {
            c.json(
                "content",
                &v["content"],
                &json!([{"type": "text", "text": echo_text()}]),
            );
            c.is(&v["stop_reason"], &json!("end_turn"), "stop_reason");
        }
        Shape::Tools => {
            c.eq("content: two tool_use blocks", blocks.len(), CALLS.len());
            check_tool_use_blocks(
                c,
                p,
                &blocks,
                |i| format!("content[{i}]"),
                &tool_arguments(),
            );
            c.is(&v["stop_reason"], &json!("tool_use"), "stop_reason");
        }
    }
    c.is(
        &v["usage"]["input_tokens"],
        &json!(prompt),
        "usage.input_tokens",
    );
    c.is(
        &v["usage"]["output_tokens"],
        &json!(completion),
        "usage.output_tokens",
    );
}

fn check_anthropic_stream(c: &mut Cell, p: &Provider, shape: Shape, r: &Response) {
    let (prompt, completion) = expected_usage(shape);
    if !check_stream_head(c, r) {
        return;
    }
    let body = r.text();
    let mut events: Vec<(String, Value)> = Vec::new();
    for e in parse_sse(&body) {
        let v = match serde_json::from_str::<Value>(&e.data) {
            Ok(v) => v,
            Err(err) => {
                c.fail(format!("event data is not JSON ({err}): {}", e.data));
                continue;
            }
        };
        let name = e.event.unwrap_or_default();
        c.is(
            v["type"].as_str(),
            Some(name.as_str()),
            &format!("event `{name}`: data.type equals the event name"),
        );
        if name != "ping" {
            events.push((name, v));
        }
    }
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let mut at = 0;
    // message_start
    match events.first() {
        Some((n, v)) if n == "message_start" => {
            let m = &v["message"];
            c.nonempty_str("message_start.message.id", &m["id"]);
            c.is(&m["type"], &json!("message"), "message_start.message.type");
            c.is(
                &m["role"],
                &json!("assistant"),
                "message_start.message.role",
            );
            c.is(&m["content"], &json!([]), "message_start.message.content");
            c.is(&m["model"], &json!(p.model), "message_start.message.model");
            c.is(
                &m["stop_reason"],
                &Value::Null,
                "message_start.message.stop_reason",
            );
            c.check(
                "message_start.message.usage: input_tokens and output_tokens numbers",
                m["usage"]["input_tokens"].is_u64() && m["usage"]["output_tokens"].is_u64(),
                &m["usage"],
            );
            at = 1;
        }
        _ => c.fail(format!("first event: want message_start, got {names:?}")),
    }
    let start_input = events
        .first()
        .and_then(|(_, v)| v.pointer("/message/usage/input_tokens"))
        .cloned();
    // (content_block_start, content_block_delta+, content_block_stop)+
    let mut text = String::new();
    let mut blocks: Vec<Value> = Vec::new();
    let mut tool_pieces: Vec<Vec<String>> = Vec::new();
    while at < events.len() && events[at].0 == "content_block_start" {
        let index = blocks.len();
        let v = &events[at].1;
        c.is(
            &v["index"],
            &json!(index),
            &format!("content_block_start {index}: index"),
        );
        let block = v["content_block"].clone();
        let is_tool = block["type"] == "tool_use";
        blocks.push(block);
        let mut pieces = Vec::new();
        at += 1;
        let mut deltas = 0;
        while at < events.len() && events[at].0 == "content_block_delta" {
            let d = &events[at].1;
            deltas += 1;
            c.is(
                &d["index"],
                &json!(index),
                &format!("content_block_delta of block {index}: index"),
            );
            match (is_tool, d["delta"]["type"].as_str()) {
                (false, Some("text_delta")) => {
                    text.push_str(d["delta"]["text"].as_str().unwrap_or_default())
                }
                (true, Some("input_json_delta")) => match d["delta"]["partial_json"].as_str() {
                    Some(s) => pieces.push(s.to_owned()),
                    None => c.fail(format!("input_json_delta without partial_json: {d}")),
                },
                _ => c.fail(format!("block {index}: unexpected delta {d}")),
            }
            at += 1;
        }
        c.check(
            &format!("block {index}: at least one content_block_delta"),
            deltas > 0,
            deltas,
        );
        match events.get(at) {
            Some((n, v)) if n == "content_block_stop" => {
                c.is(
                    &v["index"],
                    &json!(index),
                    &format!("content_block_stop {index}: index"),
                );
                at += 1;
            }
            other => {
                c.fail(format!(
                    "block {index}: want content_block_stop, got {other:?} (events {names:?})"
                ));
                break;
            }
        }
        if is_tool {
            tool_pieces.push(pieces.into_iter().filter(|s| !s.is_empty()).collect());
        }
    }
    match shape {
        Shape::Text => {
            c.json(
                "content blocks",
                &Value::from(blocks.clone()),
                &json!([{"type": "text", "text": ""}]),
            );
            c.eq("text_delta concatenated", text, echo_text());
        }
        Shape::Tools => {
            c.eq("content blocks: two tool_use", blocks.len(), CALLS.len());
            let what = |i| format!("content_block_start {i}.content_block");
            check_tool_use_blocks(c, p, &blocks, what, &json!({}));
            c.eq("text deltas", text, String::new());
            check_argument_pieces(c, p, "input_json_delta partial_json", &tool_pieces);
        }
    }
    // message_delta, message_stop, nothing after.
    match events.get(at) {
        Some((n, v)) if n == "message_delta" => {
            let want_stop = match shape {
                Shape::Text => "end_turn",
                Shape::Tools => "tool_use",
            };
            c.is(
                &v["delta"]["stop_reason"],
                &json!(want_stop),
                "message_delta.delta.stop_reason",
            );
            c.is(
                &v["delta"]["stop_sequence"],
                &Value::Null,
                "message_delta.delta.stop_sequence",
            );
            c.check(
                "message_delta.usage.output_tokens: a number",
                v["usage"]["output_tokens"].is_u64(),
                &v["usage"],
            );
            c.is(
                &v["usage"]["output_tokens"],
                &json!(completion),
                "message_delta.usage.output_tokens",
            );
            // The prompt count reaches the client: in message_delta (cumulative usage) or,
            // when the provider said it up front, in message_start.
            let input = v["usage"]
                .get("input_tokens")
                .cloned()
                .or(start_input.clone());
            c.is(
                input,
                Some(json!(prompt)),
                "input_tokens (message_delta.usage, else message_start's)",
            );
            at += 1;
        }
        other => c.fail(format!(
            "want message_delta after the blocks, got {other:?} (events {names:?})"
        )),
    }
    match events.get(at) {
        Some((n, _)) if n == "message_stop" => at += 1,
        other => c.fail(format!(
            "want message_stop after message_delta, got {other:?} (events {names:?})"
        )),
    }
    c.check(
        "nothing after message_stop",
        at >= events.len(),
        format!("{names:?}"),
    );
}

fn cell_name(ingress: Ingress, p: &Provider, stream: Option<bool>, shape: Shape) -> String {
    let mode = match (ingress, stream) {
        (_, None) => "not streamed".to_owned(),
        (Ingress::Anthropic, Some(_)) => "streamed".to_owned(),
        (Ingress::OpenAi, Some(u)) => format!("streamed, include_usage={u}"),
    };
    format!("{ingress:?} → {}, {mode}, {shape:?}", p.config)
}

// ---------------------------------------------------------------------------------------------
// The matrix
// ---------------------------------------------------------------------------------------------

/// Runs `cells` (one test at a time) against a gateway in front of one mock, with its address,
/// then fails with every mismatch reported, under `what`.
fn matrix(what: &str, cells: impl FnOnce(&MockProvider, SocketAddr, &mut Report)) {
    let _s = serial();
    let m = start_mock();
    let gw = gateway(&llm_config(m.addr()));
    let mut report = Report::default();
    cells(&m, addr(&gw), &mut report);
    gw.shutdown();
    m.stop();
    report.finish(what);
}

/// OpenAI Chat Completions clients against every provider: not streamed, streamed with and
/// without `stream_options.include_usage`; plain text and two parallel tool calls.
#[test]
fn openai_ingress_matrix() {
    matrix("OpenAI ingress", |m, a, report| {
        for p in &PROVIDERS {
            for shape in [Shape::Text, Shape::Tools] {
                for stream in [None, Some(true), Some(false)] {
                    let mut c = Cell::new(cell_name(Ingress::OpenAi, p, stream, shape));
                    m.clear_requests();
                    let r = post(a, Ingress::OpenAi, &openai_request(p, shape, stream));
                    match stream {
                        None => check_openai_completion(&mut c, p, shape, &r),
                        Some(u) => check_openai_stream(&mut c, p, shape, u, &r),
                    }
                    check_upstream(
                        &mut c,
                        p,
                        Ingress::OpenAi,
                        shape,
                        stream.is_some(),
                        &m.requests(),
                    );
                    report.add(c);
                }
            }
        }
    });
}

/// Anthropic Messages clients against every provider: not streamed and streamed; plain text
/// and two parallel tool calls.
#[test]
fn anthropic_ingress_matrix() {
    matrix("Anthropic ingress", |m, a, report| {
        for p in &PROVIDERS {
            for shape in [Shape::Text, Shape::Tools] {
                for stream in [false, true] {
                    let mut c = Cell::new(cell_name(
                        Ingress::Anthropic,
                        p,
                        stream.then_some(true),
                        shape,
                    ));
                    m.clear_requests();
                    let r = post(a, Ingress::Anthropic, &anthropic_request(p, shape, stream));
                    if stream {
                        check_anthropic_stream(&mut c, p, shape, &r);
                    } else {
                        check_anthropic_message(&mut c, p, shape, &r);
                    }
                    check_upstream(&mut c, p, Ingress::Anthropic, shape, stream, &m.requests());
                    report.add(c);
                }
            }
        }
    });
}

/// A 400 from any provider (in its own error format) reaches an OpenAI client as the OpenAI
/// error object and an Anthropic client as `{"type": "error", "error": {...}}`, with status
/// 400, streamed or not (nothing was streamed yet), and is not retried.
#[test]
fn provider_400_reaches_clients_in_their_format() {
    matrix("provider 400", |m, a, report| {
        m.set(Behavior::Status {
            code: 400,
            retry_after: None,
        });
        let message = "mock: HTTP 400 Bad Request";
        for p in &PROVIDERS {
            for ingress in [Ingress::OpenAi, Ingress::Anthropic] {
                for stream in [false, true] {
                    let mut c = Cell::new(format!(
                        "{ingress:?} → {}, {}, provider 400",
                        p.config,
                        if stream { "streamed" } else { "not streamed" }
                    ));
                    m.clear_requests();
                    let r = post(a, ingress, &text_request(ingress, p, stream));
                    c.eq("status", r.status(), 400);
                    c.eq(
                        "content-type",
                        r.header("content-type").as_deref(),
                        Some("application/json"),
                    );
                    match serde_json::from_slice::<Value>(&r.body) {
                        Err(e) => c.fail(format!("body is not JSON ({e}): {}", r.text())),
                        Ok(v) => match ingress {
                            Ingress::OpenAi => {
                                let e = &v["error"];
                                c.is(&e["message"], &json!(message), "error.message");
                                c.is(&e["type"], &json!("invalid_request_error"), "error.type");
                                c.check(
                                    "error.param: present, null or a string",
                                    e.get("param").is_some_and(|p| p.is_null() || p.is_string()),
                                    e,
                                );
                                c.check(
                                    "error.code: present, null or a string",
                                    e.get("code").is_some_and(|p| p.is_null() || p.is_string()),
                                    e,
                                );
                                c.check(
                                    "only `error` at the top level",
                                    v.as_object().is_some_and(|o| o.len() == 1),
                                    &v,
                                );
                            }
                            Ingress::Anthropic => c.json(
                                "body",
                                &v,
                                &json!({"type": "error", "error": {
                                    "type": "invalid_request_error", "message": message,
                                }}),
                            ),
                        },
                    }
                    let sent = m.requests();
                    c.eq("upstream requests (a 400 is not retried)", sent.len(), 1);
                    if let Some(r) = sent.first() {
                        c.eq("upstream path", r.path.clone(), upstream_path(p, stream));
                    }
                    report.add(c);
                }
            }
        }
        m.set(Behavior::Normal);
    });
}

// ---------------------------------------------------------------------------------------------
// Mistral's stream usage, from a server that is not the mock
// ---------------------------------------------------------------------------------------------

/// A one-shot server speaking Mistral's streaming format as La Plateforme sends it: usage in
/// the last chunk (the one with `finish_reason`), without `stream_options` being asked for
/// (Mistral rejects unknown fields), in a `Content-Length` body on a connection it closes. The
/// matrix checks the same through the mock's `/mistral/` mode; this checks it against bytes
/// written independently of the mock. Returns the address and a handle yielding the request
/// body.
fn mistral_stream_server() -> (SocketAddr, thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        // A deadline, so that a gateway which never calls cannot hang the test.
        listener.set_nonblocking(true).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "mistral stub: the gateway never called"
                    );
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("mistral stub: accept: {e}"),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (_, body) = common::read_request(&mut s, &mut BytesMut::new())
            .expect("mistral stub: the gateway closed early");
        let chunk = |delta: Value, finish: Value, usage: Option<Value>| {
            let mut v = json!({
                "id": "cmpl-mistral1", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": "mistral-up",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            });
            if let Some(u) = usage {
                v["usage"] = u;
            }
            format!("data: {v}\n\n")
        };
        let mut sse = chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
            None,
        );
        sse.push_str(&chunk(json!({"content": "hi"}), Value::Null, None));
        sse.push_str(&chunk(json!({"content": " there"}), Value::Null, None));
        sse.push_str(&chunk(
            json!({"content": ""}),
            json!("stop"),
            Some(json!({"prompt_tokens": 7, "total_tokens": 9, "completion_tokens": 2})),
        ));
        sse.push_str("data: [DONE]\n\n");
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{sse}",
            sse.len()
        );
        s.write_all(resp.as_bytes()).unwrap();
        let _ = s.flush();
        body.to_vec()
    });
    (addr, handle)
}

/// Mistral sends stream usage in its last chunk, unasked: an OpenAI client that asked for
/// usage gets the usage chunk, an Anthropic client gets the counts in `message_delta`.
#[test]
fn mistral_usage_from_its_last_chunk() {
    let _s = serial();
    for ingress in [Ingress::OpenAi, Ingress::Anthropic] {
        let (stub, upstream) = mistral_stream_server();
        let gw = gateway(&format!(
            "[[llm.model]]\nname = \"m-mistral\"\n[[llm.model.deployment]]\nprovider = \"mistral\"\nmodel = \"mistral-up\"\nbase_url = \"http://{stub}/v1\"\napi_key = \"sk-up-mistral\"\n\n[[llm.key]]\nname = \"matrix\"\nkey = \"{CLIENT_KEY}\"\n"
        ));
        let p = &PROVIDERS[4];
        let r = post(addr(&gw), ingress, &text_request(ingress, p, true));
        let sent: Value = serde_json::from_slice(&upstream.join().unwrap()).unwrap();
        assert!(sent.get("stream_options").is_none(), "{sent}");
        assert_eq!(r.status(), 200, "{}", r.text());
        let events = parse_sse(&r.text());
        match ingress {
            Ingress::OpenAi => {
                let n = events.len();
                assert!(n >= 2, "{}", r.text());
                assert_eq!(events[n - 1].data, "[DONE]", "{}", r.text());
                let u: Value = serde_json::from_str(&events[n - 2].data).unwrap();
                assert_eq!(u["choices"], json!([]), "{}", r.text());
                assert_eq!(u["usage"]["prompt_tokens"], json!(7), "{}", r.text());
                assert_eq!(u["usage"]["completion_tokens"], json!(2), "{}", r.text());
                assert_eq!(u["usage"]["total_tokens"], json!(9), "{}", r.text());
            }
            Ingress::Anthropic => {
                let delta = events
                    .iter()
                    .find(|e| e.event.as_deref() == Some("message_delta"))
                    .map(|e| serde_json::from_str::<Value>(&e.data).unwrap())
                    .unwrap_or_else(|| panic!("no message_delta: {}", r.text()));
                assert_eq!(delta["usage"]["output_tokens"], json!(2), "{delta}");
                assert_eq!(delta["usage"]["input_tokens"], json!(7), "{delta}");
            }
        }
        gw.shutdown();
    }
}
