//! Shared test helpers: fixture loading, one deployment per provider kind, the expected
//! canonical content of every provider fixture, and readers that rebuild an answer from a
//! client-format SSE stream while checking that stream's grammar.
#![allow(dead_code)]

use headwater_llm::sse::{SseEvent, SseParser};
use headwater_llm::{ApiKey, Deployment, FinishReason, Ingress, ProviderKind, Usage};
use serde_json::{json, Value};

/// Stands in for the clock in rendering.
pub const NOW: u64 = 1_750_000_000;

pub const HELLO: &str = "Bonjour ! 👋";

pub fn fixture_path(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// The fixture-name prefix of a provider kind.
pub fn slug(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::OpenAi => "openai",
        ProviderKind::Azure => "azure",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gemini",
        ProviderKind::Mistral => "mistral",
        ProviderKind::OpenAiCompatible => "compatible",
    }
}

pub fn ingress_slug(i: Ingress) -> &'static str {
    match i {
        Ingress::OpenAi => "openai",
        Ingress::Anthropic => "anthropic",
    }
}

pub const KEY: &str = "sk-test-5ecret-K3y";

/// The deployment used for each provider in the conformance tests.
pub fn deployment(kind: ProviderKind) -> Deployment {
    let d = match kind {
        ProviderKind::OpenAi => Deployment::new(kind, None, "gpt-4o"),
        ProviderKind::Azure => Deployment::new(
            kind,
            Some("https://headwater-test.openai.azure.com"),
            "gpt-4o-prod",
        ),
        ProviderKind::Anthropic => Deployment::new(kind, None, "claude-sonnet-4-5"),
        ProviderKind::Gemini => Deployment::new(kind, None, "gemini-2.5-flash"),
        ProviderKind::Mistral => Deployment::new(kind, None, "mistral-large-latest"),
        ProviderKind::OpenAiCompatible => {
            Deployment::new(kind, Some("http://10.0.0.9:8000/v1"), "qwen3-32b")
        }
    };
    d.unwrap().with_api_key(ApiKey::new(KEY))
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scenario {
    Text,
    Tools,
}

impl Scenario {
    pub fn slug(self) -> &'static str {
        match self {
            Scenario::Text => "text",
            Scenario::Tools => "tools",
        }
    }
}

/// What a provider fixture must translate to.
#[derive(Debug, Clone)]
pub struct Expected {
    pub id: &'static str,
    pub model: &'static str,
    pub created: Option<u64>,
    pub text: &'static str,
    pub calls: Vec<(&'static str, &'static str, &'static str)>,
    pub finish: FinishReason,
    pub usage: Option<Usage>,
}

fn usage(input: u64, output: u64, cached: u64, reasoning: u64) -> Option<Usage> {
    Some(Usage {
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: cached,
        cache_write_input_tokens: 0,
        reasoning_tokens: reasoning,
    })
}

const W_COMPACT: &str = r#"{"city":"Paris"}"#;
const T_COMPACT: &str = r#"{"timezone":"Europe/Paris"}"#;
const W_SPACED: &str = r#"{"city": "Paris"}"#;
const T_SPACED: &str = r#"{"timezone": "Europe/Paris"}"#;

/// The expected translation of `{provider}_{response|stream}_{scenario}` fixtures.
pub fn expected(kind: ProviderKind, scenario: Scenario, stream: bool) -> Expected {
    let text = |id, model, created, usage| Expected {
        id,
        model,
        created,
        text: HELLO,
        calls: Vec::new(),
        finish: FinishReason::Stop,
        usage,
    };
    let tools = |id, model, created, calls, usage| Expected {
        id,
        model,
        created,
        text: "Checking both.",
        calls,
        finish: FinishReason::ToolCalls,
        usage,
    };
    match (kind, scenario) {
        (ProviderKind::OpenAi, Scenario::Text) => text(
            "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "gpt-4o-2024-08-06",
            Some(1741569952),
            usage(21, 5, 0, 0),
        ),
        (ProviderKind::Azure, Scenario::Text) => text(
            "chatcmpl-Az7Qk2bVxS1fJm0pTq3cRr9YwUeLd",
            "gpt-4o-2024-08-06",
            Some(1741569952),
            usage(21, 5, 0, 0),
        ),
        (ProviderKind::Mistral, Scenario::Text) => text(
            "cf79f7daaee244b1a0ae5c7b1444424a",
            "mistral-large-latest",
            Some(1721403550),
            usage(17, 6, 0, 0),
        ),
        (ProviderKind::OpenAiCompatible, Scenario::Text) => text(
            "chatcmpl-9f3c2a4e1b7d4c8e",
            "qwen3-32b",
            Some(1741570001),
            usage(30, 7, 0, 0),
        ),
        (ProviderKind::Anthropic, Scenario::Text) => text(
            "msg_013Zva2CMHLNnXjNJJKqJ2EF",
            "claude-sonnet-4-5-20250929",
            None,
            usage(25, 9, 0, 0),
        ),
        (ProviderKind::Gemini, Scenario::Text) => text(
            "mJ8pZ7qLBcTgz7IPk5WbqQM",
            "gemini-2.5-flash",
            None,
            usage(9, 5, 0, 0),
        ),
        (ProviderKind::OpenAi, Scenario::Tools) => tools(
            "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
            "gpt-4o-2024-08-06",
            Some(1741570283),
            vec![
                ("call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather", W_COMPACT),
                ("call_ABTjEjS4x5tmn1ldJsGNTS5L", "get_time", T_COMPACT),
            ],
            usage(120, 40, 64, 0),
        ),
        (ProviderKind::Azure, Scenario::Tools) => tools(
            "chatcmpl-Az8Rl3cWyT2gKn1qUr4dSs0ZxVfMe",
            "gpt-4o-2024-08-06",
            Some(1741570283),
            vec![
                ("call_Qz8KkUe5aRy0YbT1nW2xVc3d", "get_weather", W_COMPACT),
                ("call_Lm4PpJh7sGt2XvN9bQ6rFk1e", "get_time", T_COMPACT),
            ],
            usage(120, 40, 0, 0),
        ),
        (ProviderKind::Mistral, Scenario::Tools) => tools(
            "7cbd8962041442459eb3636e1e3cbf10",
            "mistral-large-latest",
            Some(1721403550),
            vec![
                ("D681PevKs", "get_weather", W_SPACED),
                ("Xq3LmN8aB", "get_time", T_SPACED),
            ],
            usage(94, 30, 0, 0),
        ),
        (ProviderKind::OpenAiCompatible, Scenario::Tools) => tools(
            "chatcmpl-7a1b2c3d4e5f6a7b",
            "qwen3-32b",
            Some(1741570002),
            vec![
                ("chatcmpl-tool-5e4b6d7c8f9a", "get_weather", W_SPACED),
                ("chatcmpl-tool-1a2b3c4d5e6f", "get_time", T_SPACED),
            ],
            // The streamed fixture is a server that ignores stream_options: usage unknown.
            if stream { None } else { usage(300, 40, 0, 0) },
        ),
        (ProviderKind::Anthropic, Scenario::Tools) => tools(
            "msg_01Aq9w938a90dw8q",
            "claude-sonnet-4-5-20250929",
            None,
            if stream {
                vec![
                    ("toolu_01A09q90qw90lq917835lq9", "get_weather", W_SPACED),
                    ("toolu_01Bx7hQ2mV5nC8pL3kR6tY9w", "get_time", T_SPACED),
                ]
            } else {
                vec![
                    ("toolu_01A09q90qw90lq917835lq9", "get_weather", W_COMPACT),
                    ("toolu_01Bx7hQ2mV5nC8pL3kR6tY9w", "get_time", T_COMPACT),
                ]
            },
            usage(1404, 72, 1024, 0),
        ),
        (ProviderKind::Gemini, Scenario::Tools) => tools(
            "x4UqZ9vJGsOmz7IP8PjZ0Qk",
            "gemini-2.5-flash",
            None,
            vec![
                ("call_5Kfaetfreih9jwmL8MziKp", "get_weather", W_COMPACT),
                ("call_Ea96dWCyKKCDDzcuTUFJ8k", "get_time", T_COMPACT),
            ],
            usage(110, 70, 64, 45),
        ),
    }
}

/// Parses every SSE event of a byte stream.
pub fn sse_events(bytes: &[u8]) -> Vec<SseEvent> {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    p.feed(bytes, &mut out).unwrap();
    p.finish(&mut out);
    out
}

/// An answer rebuilt from a client stream.
#[derive(Debug, Default, PartialEq)]
pub struct Rebuilt {
    pub id: String,
    pub model: String,
    pub text: String,
    /// (id, name, arguments) in index order.
    pub calls: Vec<(String, String, String)>,
    /// The wire finish / stop reason.
    pub finish: String,
    /// The usage chunk (OpenAI) or message_delta usage (Anthropic), as sent.
    pub usage: Option<Value>,
}

/// Rebuilds an OpenAI chunk stream, asserting its grammar: JSON chunks then `[DONE]`; the
/// first chunk has `role: assistant`; one id/model/created throughout; a call's id, type and
/// name only in its first delta; exactly one finish chunk, with an empty delta; with
/// `include_usage`, `"usage": null` on every chunk but a last one with empty `choices`.
pub fn rebuild_openai(bytes: &[u8], include_usage: bool) -> Rebuilt {
    let events = sse_events(bytes);
    assert!(events.len() >= 3, "too few events: {events:?}");
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| {
            assert_eq!(e.event, None);
            serde_json::from_str(&e.data).unwrap()
        })
        .collect();
    let mut r = Rebuilt {
        id: chunks[0]["id"].as_str().unwrap().to_owned(),
        model: chunks[0]["model"].as_str().unwrap().to_owned(),
        ..Rebuilt::default()
    };
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let mut finishes = 0;
    for (n, c) in chunks.iter().enumerate() {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
        assert_eq!(c["model"], chunks[0]["model"]);
        assert_eq!(c["created"], chunks[0]["created"]);
        let choices = c["choices"].as_array().unwrap();
        if choices.is_empty() {
            assert!(include_usage, "usage chunk without include_usage");
            assert_eq!(n, chunks.len() - 1, "the usage chunk must be last");
            r.usage = Some(c["usage"].clone());
            continue;
        }
        if include_usage {
            assert_eq!(
                c.get("usage"),
                Some(&Value::Null),
                "chunk {n} must carry usage: null"
            );
        } else {
            assert_eq!(c.get("usage"), None);
        }
        let ch = &choices[0];
        assert_eq!(ch["index"], 0);
        let delta = &ch["delta"];
        if let Some(f) = ch["finish_reason"].as_str() {
            finishes += 1;
            assert_eq!(delta, &json!({}), "the finish chunk carries no delta");
            r.finish = f.to_owned();
            continue;
        }
        assert!(r.finish.is_empty(), "content after the finish chunk");
        if let Some(t) = delta.get("content").and_then(Value::as_str) {
            r.text.push_str(t);
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            assert_eq!(calls.len(), 1);
            let call = &calls[0];
            let index = call["index"].as_u64().unwrap() as usize;
            if index == r.calls.len() {
                assert_eq!(call["type"], "function");
                assert_eq!(call["function"]["arguments"], "");
                r.calls.push((
                    call["id"].as_str().unwrap().to_owned(),
                    call["function"]["name"].as_str().unwrap().to_owned(),
                    String::new(),
                ));
            } else {
                assert!(index < r.calls.len(), "delta for a call that never started");
                assert!(call.get("id").is_none() && call.get("type").is_none());
                assert!(call["function"].get("name").is_none());
                r.calls[index]
                    .2
                    .push_str(call["function"]["arguments"].as_str().unwrap());
            }
        }
    }
    assert_eq!(finishes, 1, "exactly one finish chunk");
    r
}

/// Rebuilds an Anthropic event stream, asserting its grammar: `message_start` first; each
/// block opened with `content_block_start`, its deltas, and closed with `content_block_stop`
/// before the next opens, indices counting from 0; `message_delta` then `message_stop` last;
/// event names equal to the data's `type`.
pub fn rebuild_anthropic(bytes: &[u8]) -> Rebuilt {
    let events = sse_events(bytes);
    let data: Vec<(String, Value)> = events
        .iter()
        .map(|e| {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            let name = e.event.clone().expect("every Anthropic event is named");
            assert_eq!(v["type"], name.as_str());
            (name, v)
        })
        .collect();
    assert_eq!(data[0].0, "message_start");
    let msg = &data[0].1["message"];
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["role"], "assistant");
    assert_eq!(msg["content"], json!([]));
    assert_eq!(msg["stop_reason"], Value::Null);
    let mut r = Rebuilt {
        id: msg["id"].as_str().unwrap().to_owned(),
        model: msg["model"].as_str().unwrap().to_owned(),
        ..Rebuilt::default()
    };
    let n = data.len();
    assert_eq!(data[n - 1].0, "message_stop");
    assert_eq!(data[n - 2].0, "message_delta");
    let md = &data[n - 2].1;
    r.finish = md["delta"]["stop_reason"].as_str().unwrap().to_owned();
    r.usage = Some(md["usage"].clone());
    let mut open: Option<(u64, String)> = None;
    let mut next = 0u64;
    for (name, v) in &data[1..n - 2] {
        match name.as_str() {
            "content_block_start" => {
                assert!(open.is_none(), "a block opened before the previous closed");
                assert_eq!(v["index"], next);
                let block = &v["content_block"];
                let kind = block["type"].as_str().unwrap().to_owned();
                match kind.as_str() {
                    "text" => assert_eq!(block["text"], ""),
                    "tool_use" => {
                        assert_eq!(block["input"], json!({}));
                        r.calls.push((
                            block["id"].as_str().unwrap().to_owned(),
                            block["name"].as_str().unwrap().to_owned(),
                            String::new(),
                        ));
                    }
                    other => panic!("unexpected block type {other}"),
                }
                open = Some((next, kind));
                next += 1;
            }
            "content_block_delta" => {
                let (index, kind) = open.as_ref().expect("delta outside a block");
                assert_eq!(&v["index"], index);
                let d = &v["delta"];
                match (kind.as_str(), d["type"].as_str().unwrap()) {
                    ("text", "text_delta") => r.text.push_str(d["text"].as_str().unwrap()),
                    ("tool_use", "input_json_delta") => r
                        .calls
                        .last_mut()
                        .unwrap()
                        .2
                        .push_str(d["partial_json"].as_str().unwrap()),
                    other => panic!("delta {other:?} does not fit its block"),
                }
            }
            "content_block_stop" => {
                let (index, _) = open.take().expect("stop outside a block");
                assert_eq!(v["index"], index);
            }
            "ping" => {}
            other => panic!("unexpected event {other}"),
        }
    }
    assert!(open.is_none(), "a block was never closed");
    r
}

/// The OpenAI `usage` object for canonical usage.
pub fn openai_usage(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    })
}

/// The Anthropic `usage` object for canonical usage.
pub fn anthropic_usage(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens - u.cached_input_tokens - u.cache_write_input_tokens,
        "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": u.cache_write_input_tokens,
        "cache_read_input_tokens": u.cached_input_tokens,
    })
}
