//! The mock LLM providers over real loopback sockets: every provider format without and with
//! streaming, parallel tool calls with split arguments, usage (OpenAI's only with
//! `include_usage`), embeddings and model lists, every fault behavior (set on the handle and by
//! magic word), latency, keep-alive, recorded requests, counters and prompt stops.

mod common;

use std::io::{ErrorKind, Read};
use std::thread;
use std::time::{Duration, Instant};

use common::raw::{Client, Resp};
use common::{model_ids, parse_sse, start_mock};
use headwater_engine::llm_mock::{
    Behavior, Endpoint, MockProvider, DEFAULT_PREFIX, MODELS, TOOL_ARGUMENTS,
};
use http::Method;
use serde_json::{json, Value};

impl Resp {
    /// SSE events as (event name, data).
    fn events(&self) -> Vec<(Option<String>, String)> {
        parse_sse(&self.text())
            .into_iter()
            .map(|e| (e.event, e.data))
            .collect()
    }

    /// The JSON data of every SSE event (panics on non-JSON data other than `[DONE]`).
    fn chunks(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|(_, d)| d != "[DONE]")
            .map(|(_, d)| serde_json::from_str(&d).unwrap_or_else(|e| panic!("{e}: {d}")))
            .collect()
    }
}

impl Client {
    /// Sends a request: `content-length` for POST, `headers` as given.
    fn send_request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: mock\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        if method == "POST" {
            req.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.send(&bytes);
    }

    fn post(&mut self, path: &str, headers: &[(&str, &str)], body: &Value) -> Resp {
        let sent = Instant::now();
        self.send_request("POST", path, headers, body.to_string().as_bytes());
        self.response_since(&Method::POST, sent)
    }

    fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let sent = Instant::now();
        self.send_request("GET", path, headers, b"");
        self.response_since(&Method::GET, sent)
    }

    /// Whether the server closed (or reset) the connection without sending anything.
    fn closed_silently(&mut self) -> bool {
        !self.fill() && self.buf.is_empty()
    }
}

/// One request on a fresh connection.
fn post(mock: &MockProvider, path: &str, headers: &[(&str, &str)], body: &Value) -> Resp {
    Client::connect(mock.addr()).post(path, headers, body)
}

const OPENAI: &str = "/v1/chat/completions";
const ANTHROPIC: &str = "/v1/messages";
const ANTHROPIC_HEADERS: &[(&str, &str)] = &[
    ("x-api-key", "sk-ant-test"),
    ("anthropic-version", "2023-06-01"),
];
const GEMINI: &str = "/v1beta/models/gemini-test:generateContent";
const GEMINI_SSE: &str = "/v1beta/models/gemini-test:streamGenerateContent?alt=sse";

fn weather_tool_openai() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
           {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}])
}

fn openai_req(text: &str, stream: bool) -> Value {
    json!({
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": text},
        ],
        "stream": stream,
    })
}

fn anthropic_req(text: &str, stream: bool) -> Value {
    json!({
        "model": "claude-test",
        "max_tokens": 1024,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
        "stream": stream,
    })
}

fn gemini_req(text: &str) -> Value {
    json!({
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": text}]}],
    })
}

fn with_tools(mut v: Value, tools: Value) -> Value {
    v["tools"] = tools;
    v
}

/// The text a stream's chunks carry at `pointer` (the non-empty pieces, joined), and how many
/// pieces.
fn stream_text(chunks: &[Value], pointer: &str) -> (String, usize) {
    let deltas: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c.pointer(pointer).and_then(Value::as_str))
        .filter(|t| !t.is_empty())
        .collect();
    (deltas.concat(), deltas.len())
}

/// The text an OpenAI stream carries, and its content deltas.
fn openai_stream_text(chunks: &[Value]) -> (String, usize) {
    stream_text(chunks, "/choices/0/delta/content")
}

fn anthropic_stream_text(r: &Resp) -> (String, usize) {
    let deltas: Vec<String> = r
        .chunks()
        .iter()
        .filter(|c| c.pointer("/delta/type") == Some(&json!("text_delta")))
        .map(|c| c["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    (deltas.concat(), deltas.len())
}

fn gemini_stream_text(chunks: &[Value]) -> (String, usize) {
    stream_text(chunks, "/candidates/0/content/parts/0/text")
}

// --- OpenAI family ----------------------------------------------------------------------------

#[test]
fn openai_non_stream() {
    let mock = start_mock();
    let r = post(
        &mock,
        OPENAI,
        &[],
        &openai_req("What is the weather?", false),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["model"], "gpt-test");
    assert!(v["created"].is_u64());
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "echo: What is the weather?");
    assert_eq!(choice["finish_reason"], "stop");
    // "Be brief." + "What is the weather?" = 6 words; the reply has 5.
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 6, "completion_tokens": 5, "total_tokens": 11})
    );
    assert_eq!(mock.served(Endpoint::ChatCompletions), 1);
}

#[test]
fn openai_stream_usage_only_with_include_usage() {
    let mock = start_mock();
    for include in [false, true] {
        let mut req = openai_req("tell me a story", true);
        if include {
            req["stream_options"] = json!({"include_usage": true});
        }
        let r = post(&mock, OPENAI, &[], &req);
        assert_eq!(r.status, 200);
        assert!(r.complete);
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        let events = r.events();
        assert_eq!(events.last().unwrap().1, "[DONE]");
        let chunks = r.chunks();
        for c in &chunks {
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["model"], "gpt-test");
            assert_eq!(c["id"], chunks[0]["id"]);
        }
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let (text, n) = openai_stream_text(&chunks);
        assert_eq!(text, "echo: tell me a story");
        assert_eq!(n, 5, "one delta per word");
        let finish: Vec<&Value> = chunks
            .iter()
            .filter(|c| !c["choices"][0]["finish_reason"].is_null())
            .filter(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty()))
            .collect();
        assert_eq!(finish.len(), 1);
        assert_eq!(finish[0]["choices"][0]["finish_reason"], "stop");
        let usage: Vec<&Value> = chunks.iter().filter(|c| !c["usage"].is_null()).collect();
        if include {
            assert_eq!(usage.len(), 1);
            let last = chunks.last().unwrap();
            assert_eq!(last["choices"], json!([]));
            assert_eq!(
                last["usage"],
                json!({"prompt_tokens": 6, "completion_tokens": 5, "total_tokens": 11})
            );
        } else {
            assert!(usage.is_empty());
            assert!(chunks.iter().all(|c| c.get("usage").is_none()));
        }
    }
}

#[test]
fn azure_mistral_and_compatible_paths() {
    let mock = start_mock();
    let mut body = openai_req("hi", false);
    body.as_object_mut().unwrap().remove("model");
    let path = "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21";
    let r = post(&mock, path, &[("api-key", "azure-key")], &body);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["model"],
        "my-gpt4o",
        "Azure: the deployment names the model"
    );
    let r = post(
        &mock,
        "/v1/chat/completions",
        &[("authorization", "Bearer mistral-key")],
        &json!({"model": "mistral-small", "messages": [{"role": "user", "content": [{"type": "text", "text": "bonjour"}]}], "random_seed": 3}),
    );
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "echo: bonjour"
    );
    let r = post(
        &mock,
        "/api/openai/chat/completions",
        &[],
        &openai_req("x", false),
    );
    assert_eq!(r.status, 200, "any prefix before /chat/completions");
    // Under a `mistral` path segment, streams carry usage on the finish chunk as Mistral's
    // do, without stream_options (which Headwater does not send to Mistral).
    let r = post(
        &mock,
        "/mistral/v1/chat/completions",
        &[],
        &openai_req("a b", true),
    );
    let chunks = r.chunks();
    let with_usage: Vec<&Value> = chunks.iter().filter(|c| c.get("usage").is_some()).collect();
    assert_eq!(with_usage.len(), 1);
    assert_eq!(with_usage[0]["choices"][0]["finish_reason"], "stop");
    assert_eq!(with_usage[0]["usage"]["completion_tokens"], 3);
    assert_eq!(r.events().last().unwrap().1, "[DONE]");
    let sent = mock.requests();
    assert_eq!(sent.len(), 4);
    assert_eq!(sent[0].path, path, "the query is kept");
    assert_eq!(sent[0].header("api-key"), Some("azure-key"));
    assert_eq!(sent[0].endpoint, Endpoint::ChatCompletions);
    assert_eq!(sent[1].json()["random_seed"], 3);
    assert_eq!(mock.served(Endpoint::ChatCompletions), 4);
}

#[test]
fn openai_parallel_tool_calls() {
    let mock = start_mock();
    let text = "Weather and time in Paris? call:get_weather call:get_time";
    let req = with_tools(openai_req(text, false), weather_tool_openai());
    let v = post(&mock, OPENAI, &[], &req).json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    for (c, name) in calls.iter().zip(["get_weather", "get_time"]) {
        assert_eq!(c["type"], "function");
        assert_eq!(c["function"]["name"], name);
        assert_eq!(c["function"]["arguments"], TOOL_ARGUMENTS);
        assert!(c["id"].as_str().unwrap().starts_with("call_"));
    }
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    assert_eq!(v["usage"]["completion_tokens"], 10);

    // Streamed: a first delta per call with index, id, type and name, then the arguments in
    // several pieces carrying only the index.
    let mut req = with_tools(openai_req(text, true), weather_tool_openai());
    req["stream_options"] = json!({"include_usage": true});
    let r = post(&mock, OPENAI, &[], &req);
    let chunks = r.chunks();
    let mut args = [String::new(), String::new()];
    let mut pieces = [0, 0];
    let mut names = [None, None];
    for c in &chunks {
        let Some(tcs) = c
            .pointer("/choices/0/delta/tool_calls")
            .and_then(Value::as_array)
        else {
            continue;
        };
        for tc in tcs {
            let i = tc["index"].as_u64().unwrap() as usize;
            if let Some(name) = tc.pointer("/function/name").and_then(Value::as_str) {
                assert!(names[i].is_none(), "the name comes once");
                assert!(tc["id"].is_string());
                assert_eq!(tc["type"], "function");
                names[i] = Some(name.to_owned());
            } else {
                assert!(tc.get("id").is_none());
            }
            let a = tc["function"]["arguments"].as_str().unwrap();
            if !a.is_empty() {
                pieces[i] += 1;
            }
            args[i].push_str(a);
        }
    }
    assert_eq!(names, [Some("get_weather".into()), Some("get_time".into())]);
    assert_eq!(args, [TOOL_ARGUMENTS, TOOL_ARGUMENTS]);
    assert!(pieces.iter().all(|&p| p > 1), "arguments split: {pieces:?}");
    let finish = chunks
        .iter()
        .find_map(|c| {
            c.pointer("/choices/0/finish_reason")
                .filter(|f| !f.is_null())
        })
        .unwrap();
    assert_eq!(finish, "tool_calls");

    // Without tools declared, or with tool_choice none, call: words are just text.
    let v = post(&mock, OPENAI, &[], &openai_req(text, false)).json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        format!("echo: {text}")
    );
    let mut req = with_tools(openai_req(text, false), weather_tool_openai());
    req["tool_choice"] = json!("none");
    let v = post(&mock, OPENAI, &[], &req).json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // After the tool results, the answer is text.
    let req = json!({
        "model": "gpt-test",
        "tools": weather_tool_openai(),
        "messages": [
            {"role": "user", "content": "call:get_weather"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
    });
    let v = post(&mock, OPENAI, &[], &req).json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "echo: call:get_weather"
    );
}

#[test]
fn token_limit_cuts_the_reply() {
    let mock = start_mock();
    let mut req = openai_req("one two three four five", false);
    req["max_completion_tokens"] = json!(3);
    let v = post(&mock, OPENAI, &[], &req).json();
    assert_eq!(v["choices"][0]["message"]["content"], "echo: one two");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 3);
    let mut req = anthropic_req("one two three four five", false);
    req["max_tokens"] = json!(2);
    let v = post(&mock, ANTHROPIC, ANTHROPIC_HEADERS, &req).json();
    assert_eq!(v["stop_reason"], "max_tokens");
    let mut req = gemini_req("one two three");
    req["generationConfig"] = json!({"maxOutputTokens": 1});
    let v = post(&mock, GEMINI, &[], &req).json();
    assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], "echo:");
}

// --- Anthropic --------------------------------------------------------------------------------

#[test]
fn anthropic_non_stream() {
    let mock = start_mock();
    let r = post(
        &mock,
        ANTHROPIC,
        ANTHROPIC_HEADERS,
        &anthropic_req("Hello there", false),
    );
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["model"], "claude-test");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "echo: Hello there"}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["stop_sequence"].is_null());
    assert_eq!(v["usage"], json!({"input_tokens": 4, "output_tokens": 3}));
    let sent = &mock.requests()[0];
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(sent.endpoint, Endpoint::Messages);
}

#[test]
fn anthropic_stream() {
    let mock = start_mock();
    let r = post(
        &mock,
        ANTHROPIC,
        ANTHROPIC_HEADERS,
        &anthropic_req("Hello there", true),
    );
    assert!(r.complete);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events = r.events();
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let chunks = r.chunks();
    for ((name, _), c) in events.iter().zip(&chunks) {
        assert_eq!(
            c["type"].as_str(),
            name.as_deref(),
            "type matches the event name"
        );
    }
    let start = &chunks[0]["message"];
    assert_eq!(start["model"], "claude-test");
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["usage"]["input_tokens"], 4);
    assert_eq!(
        chunks[1]["content_block"],
        json!({"type": "text", "text": ""})
    );
    assert_eq!(
        anthropic_stream_text(&r),
        ("echo: Hello there".to_owned(), 3)
    );
    assert_eq!(chunks[7]["delta"]["stop_reason"], "end_turn");
    assert_eq!(chunks[7]["usage"]["output_tokens"], 3);
}

#[test]
fn anthropic_parallel_tool_calls() {
    let mock = start_mock();
    let tools = json!([{"name": "get_weather", "input_schema": {"type": "object"}},
                       {"name": "get_time", "input_schema": {"type": "object"}}]);
    let text = "call:get_weather and call:get_time please";
    let v = post(
        &mock,
        ANTHROPIC,
        ANTHROPIC_HEADERS,
        &with_tools(anthropic_req(text, false), tools.clone()),
    )
    .json();
    assert_eq!(v["stop_reason"], "tool_use");
    let blocks = v["content"].as_array().unwrap();
    assert_eq!(blocks.len(), 2);
    for (b, name) in blocks.iter().zip(["get_weather", "get_time"]) {
        assert_eq!(b["type"], "tool_use");
        assert_eq!(b["name"], name);
        assert!(b["id"].as_str().unwrap().starts_with("toolu_"));
        assert_eq!(
            b["input"],
            serde_json::from_str::<Value>(TOOL_ARGUMENTS).unwrap()
        );
    }

    let r = post(
        &mock,
        ANTHROPIC,
        ANTHROPIC_HEADERS,
        &with_tools(anthropic_req(text, true), tools),
    );
    let chunks = r.chunks();
    let mut json_by_block = [String::new(), String::new()];
    let mut pieces = [0, 0];
    let mut started = Vec::new();
    for c in &chunks {
        match c["type"].as_str().unwrap() {
            "content_block_start" => {
                let b = &c["content_block"];
                assert_eq!(b["type"], "tool_use");
                assert_eq!(b["input"], json!({}));
                started.push(b["name"].as_str().unwrap().to_owned());
            }
            "content_block_delta" => {
                assert_eq!(c["delta"]["type"], "input_json_delta");
                let i = c["index"].as_u64().unwrap() as usize;
                json_by_block[i].push_str(c["delta"]["partial_json"].as_str().unwrap());
                pieces[i] += 1;
            }
            "message_delta" => assert_eq!(c["delta"]["stop_reason"], "tool_use"),
            _ => {}
        }
    }
    assert_eq!(started, ["get_weather", "get_time"]);
    assert_eq!(json_by_block, [TOOL_ARGUMENTS, TOOL_ARGUMENTS]);
    assert!(pieces.iter().all(|&p| p > 1));
    assert_eq!(chunks.last().unwrap()["type"], "message_stop");
}

// --- Gemini -----------------------------------------------------------------------------------

#[test]
fn gemini_generate_and_stream() {
    let mock = start_mock();
    let r = post(
        &mock,
        GEMINI,
        &[("x-goog-api-key", "g-key")],
        &gemini_req("Hi Gemini friend"),
    );
    assert_eq!(r.status, 200);
    let v = r.json();
    let cand = &v["candidates"][0];
    assert_eq!(cand["content"]["role"], "model");
    assert_eq!(
        cand["content"]["parts"],
        json!([{"text": "echo: Hi Gemini friend"}])
    );
    assert_eq!(cand["finishReason"], "STOP");
    assert_eq!(v["modelVersion"], "gemini-test");
    assert!(v["responseId"].is_string());
    assert_eq!(
        v["usageMetadata"],
        json!({"promptTokenCount": 5, "candidatesTokenCount": 4, "totalTokenCount": 9})
    );

    let r = post(&mock, GEMINI_SSE, &[], &gemini_req("Hi Gemini friend"));
    assert!(r.complete);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert!(
        r.text().contains("\r\n\r\n"),
        "Gemini separates events with CRLF"
    );
    assert!(!r.text().contains("[DONE]"), "Gemini has no end marker");
    let chunks = r.chunks();
    assert_eq!(
        gemini_stream_text(&chunks),
        ("echo: Hi Gemini friend".to_owned(), 4)
    );
    let finishes: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c.pointer("/candidates/0/finishReason"))
        .collect();
    assert_eq!(finishes, [&json!("STOP")]);
    assert!(chunks.last().unwrap()["candidates"][0]["finishReason"].is_string());
    assert_eq!(
        chunks.last().unwrap()["usageMetadata"]["candidatesTokenCount"],
        4
    );

    // Without alt=sse the stream is one JSON array of responses.
    let path = "/v1beta/models/gemini-test:streamGenerateContent";
    let v = post(&mock, path, &[], &gemini_req("a b")).json();
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(gemini_stream_text(items).0, "echo: a b");
    assert_eq!(mock.served(Endpoint::GenerateContent), 1);
    assert_eq!(mock.served(Endpoint::StreamGenerateContent), 2);
}

#[test]
fn gemini_function_calls() {
    let mock = start_mock();
    let tools = json!([{"functionDeclarations": [{"name": "get_weather"}, {"name": "get_time"}]}]);
    let req = with_tools(gemini_req("call:get_weather call:get_time"), tools);
    let v = post(&mock, GEMINI, &[], &req).json();
    let cand = &v["candidates"][0];
    assert_eq!(cand["finishReason"], "STOP");
    let args: Value = serde_json::from_str(TOOL_ARGUMENTS).unwrap();
    assert_eq!(
        cand["content"]["parts"],
        json!([{"functionCall": {"name": "get_weather", "args": args}},
               {"functionCall": {"name": "get_time", "args": args}}])
    );
    let chunks = post(&mock, GEMINI_SSE, &[], &req).chunks();
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c.pointer("/candidates/0/content/parts"))
        .flat_map(|p| p.as_array().unwrap())
        .filter_map(|p| p.get("functionCall"))
        .collect();
    assert_eq!(calls.len(), 2, "whole calls, as Gemini sends them");
    assert_eq!(calls[1]["name"], "get_time");
    let mut req = req.clone();
    req["toolConfig"] = json!({"functionCallingConfig": {"mode": "NONE"}});
    let v = post(&mock, GEMINI, &[], &req).json();
    assert!(v["candidates"][0]["content"]["parts"][0]["text"].is_string());
}

// --- Embeddings and models --------------------------------------------------------------------

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn unbase64(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().take_while(|&c| c != b'=') {
        bits = (bits << 6) | A.iter().position(|&a| a == c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

#[test]
fn embeddings_all_formats() {
    let mock = start_mock();
    let v = post(
        &mock,
        "/v1/embeddings",
        &[],
        &json!({"model": "text-embedding-3-small", "input": ["hello world", "bye"], "dimensions": 16}),
    )
    .json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "text-embedding-3-small");
    assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["object"], "embedding");
    let e0 = floats(&data[0]["embedding"]);
    assert_eq!(e0.len(), 16);
    assert!((norm(&e0) - 1.0).abs() < 1e-3);
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);

    // Deterministic, and base64 is the same floats as little-endian f32.
    let again = post(
        &mock,
        "/v1/embeddings",
        &[],
        &json!({"model": "m", "input": "hello world", "dimensions": 16, "encoding_format": "base64"}),
    )
    .json();
    let b64 = again["data"][0]["embedding"].as_str().unwrap();
    assert_eq!(b64.len(), 88, "64 bytes");
    let decoded: Vec<f32> = unbase64(b64)
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    // serde_json's default float parsing may be off by one ulp in f64; compare as f32.
    let e0_f32: Vec<f32> = e0.iter().map(|&x| x as f32).collect();
    assert_eq!(decoded, e0_f32);
    let mistral = post(
        &mock,
        "/v1/embeddings",
        &[],
        &json!({"model": "mistral-embed", "input": ["hello world"], "output_dimension": 16}),
    )
    .json();
    assert_eq!(mistral["data"][0]["embedding"], data[0]["embedding"]);

    let g = post(
        &mock,
        "/v1beta/models/text-embedding-004:embedContent",
        &[],
        &json!({"content": {"parts": [{"text": "hello world"}]}, "outputDimensionality": 16}),
    )
    .json();
    assert_eq!(g["embedding"]["values"], data[0]["embedding"]);
    let g = post(
        &mock,
        "/v1beta/models/text-embedding-004:batchEmbedContents",
        &[],
        &json!({"requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "hello world"}]}},
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "bye"}]}},
        ]}),
    )
    .json();
    let list = g["embeddings"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        list[0]["values"].as_array().unwrap().len(),
        8,
        "default size"
    );
    assert_eq!(mock.served(Endpoint::Embeddings), 3);
    assert_eq!(mock.served(Endpoint::EmbedContent), 1);
    assert_eq!(mock.served(Endpoint::BatchEmbedContents), 1);
}

#[test]
fn model_lists_per_format() {
    let mock = start_mock();
    let mut c = Client::connect(mock.addr());
    let v = c.get("/v1/models", &[("authorization", "Bearer k")]).json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["object"], "model");
    let ids = model_ids(&v);
    assert_eq!(ids, MODELS);
    let v = c.get("/v1/models", ANTHROPIC_HEADERS).json();
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["has_more"], false);
    let v = c.get("/v1beta/models", &[]).json();
    assert!(v["models"][0]["name"]
        .as_str()
        .unwrap()
        .starts_with("models/"));
    assert_eq!(mock.served(Endpoint::Models), 3);
}

#[test]
fn unknown_paths_and_bad_bodies() {
    let mock = start_mock();
    let mut c = Client::connect(mock.addr());
    let r = c.post("/v1/completions", &[], &json!({}));
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/v1/completions"));
    let r = c.get("/v1/chat/completions", &[]);
    assert_eq!(r.status, 404, "chat needs POST");
    let sent = Instant::now();
    c.send_request("POST", OPENAI, &[], b"{not json");
    let r = c.response_since(&Method::POST, sent);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    c.send_request("POST", ANTHROPIC, &[], b"[1]");
    let r = c.response_since(&Method::POST, sent);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_eq!(mock.served(Endpoint::Unknown), 2);
}

// --- Faults -----------------------------------------------------------------------------------

#[test]
fn status_errors_in_each_provider_shape() {
    let mock = start_mock();
    mock.set(Behavior::Status {
        code: 429,
        retry_after: Some(7),
    });
    let r = post(&mock, OPENAI, &[], &openai_req("hi", true));
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    let e = &r.json()["error"];
    assert_eq!(e["code"], "rate_limit_exceeded");
    assert!(e["message"].is_string() && e["type"].is_string());
    let r = post(
        &mock,
        ANTHROPIC,
        ANTHROPIC_HEADERS,
        &anthropic_req("hi", false),
    );
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    let r = post(&mock, GEMINI, &[], &gemini_req("hi"));
    let e = &r.json()["error"];
    assert_eq!(e["code"], 429);
    assert_eq!(e["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(e["details"][0]["retryDelay"], "7s");

    mock.set(Behavior::Status {
        code: 529,
        retry_after: None,
    });
    let r = post(
        &mock,
        ANTHROPIC,
        ANTHROPIC_HEADERS,
        &anthropic_req("hi", true),
    );
    assert_eq!(r.status, 529);
    assert_eq!(r.header("retry-after"), None);
    assert_eq!(r.json()["error"]["type"], "overloaded_error");

    // A magic word overrides the handle's behavior both ways.
    let r = post(&mock, OPENAI, &[], &openai_req("fine mock:normal", false));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "echo: fine mock:normal"
    );
    mock.set(Behavior::Normal);
    let r = post(&mock, GEMINI, &[], &gemini_req("boom mock:status:503"));
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["status"], "UNAVAILABLE");
    let r = post(&mock, OPENAI, &[], &openai_req("mock:status:500", false));
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"]["type"], "server_error");
}

#[test]
fn stall_and_reset() {
    let mock = start_mock();
    mock.set(Behavior::Stall);
    let mut c = Client::connect(mock.addr());
    c.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    c.send_request(
        "POST",
        OPENAI,
        &[],
        openai_req("hi", false).to_string().as_bytes(),
    );
    let mut b = [0u8; 16];
    let e = c.stream.read(&mut b).unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    assert_eq!(mock.requests().len(), 1, "the stalled request was read");

    // Per request by magic word; the next request on another connection is fine.
    mock.set(Behavior::Normal);
    let mut c = Client::connect(mock.addr());
    c.send_request(
        "POST",
        OPENAI,
        &[],
        openai_req("x mock:reset", false).to_string().as_bytes(),
    );
    assert!(c.closed_silently());
    mock.set(Behavior::Reset);
    let mut c = Client::connect(mock.addr());
    c.send_request(
        "POST",
        ANTHROPIC,
        ANTHROPIC_HEADERS,
        anthropic_req("x", true).to_string().as_bytes(),
    );
    assert!(c.closed_silently());
    mock.set(Behavior::Normal);
    assert_eq!(
        post(&mock, OPENAI, &[], &openai_req("ok", false)).status,
        200
    );

    // Stopping is prompt even with a stalled connection open.
    mock.set(Behavior::Stall);
    let mut c = Client::connect(mock.addr());
    c.send_request(
        "POST",
        OPENAI,
        &[],
        openai_req("hi", false).to_string().as_bytes(),
    );
    thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    mock.stop();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[test]
fn garbage() {
    let mock = start_mock();
    mock.set(Behavior::Garbage);
    let r = post(&mock, OPENAI, &[], &openai_req("hi", false));
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    for (path, headers, body) in [
        (OPENAI, &[][..], openai_req("hi", true)),
        (ANTHROPIC, ANTHROPIC_HEADERS, anthropic_req("hi", true)),
        (GEMINI_SSE, &[][..], gemini_req("hi")),
    ] {
        let r = post(&mock, path, headers, &body);
        assert_eq!(r.status, 200);
        assert!(r.complete, "the body itself is framed properly");
        let events = r.events();
        assert!(!events.is_empty());
        assert!(
            events
                .iter()
                .all(|(_, d)| serde_json::from_str::<Value>(d).is_err()),
            "{path}: {events:?}"
        );
    }
    mock.set(Behavior::Normal);
    let r = post(&mock, GEMINI, &[], &gemini_req("mock:garbage"));
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
}

#[test]
fn fail_before_first_token() {
    let mock = start_mock();
    mock.set(Behavior::FailBeforeFirstToken);
    let r = post(&mock, OPENAI, &[], &openai_req("hello world", true));
    assert_eq!(r.status, 200);
    assert!(!r.complete, "closed without the end of the body");
    let chunks = r.chunks();
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(openai_stream_text(&chunks).1, 0);

    let r = post(
        &mock,
        ANTHROPIC,
        ANTHROPIC_HEADERS,
        &anthropic_req("hello world", true),
    );
    assert!(!r.complete);
    let names: Vec<String> = r.events().into_iter().filter_map(|(e, _)| e).collect();
    assert_eq!(names[0], "message_start");
    assert!(!names
        .iter()
        .any(|n| n == "content_block_delta" || n == "message_stop"));

    let r = post(&mock, GEMINI_SSE, &[], &gemini_req("hello world"));
    assert!(!r.complete);
    let chunks = r.chunks();
    assert_eq!(chunks.len(), 1, "one content-less chunk");
    assert_eq!(gemini_stream_text(&chunks).1, 0);
    assert!(chunks[0].pointer("/candidates/0/finishReason").is_none());

    // Non-stream: the head, then the connection closes.
    let r = post(&mock, OPENAI, &[], &openai_req("hello world", false));
    assert_eq!(r.status, 200);
    assert!(!r.complete);
    assert!(r.body.is_empty());
    // By magic word.
    mock.set(Behavior::Normal);
    let r = post(
        &mock,
        OPENAI,
        &[],
        &openai_req("mock:fail-before-first-token", true),
    );
    assert!(!r.complete);
}

#[test]
fn fail_after_tokens() {
    let mock = start_mock();
    mock.set(Behavior::FailAfterTokens(2));
    let text = "one two three four";
    let r = post(&mock, OPENAI, &[], &openai_req(text, true));
    assert!(!r.complete);
    let chunks = r.chunks();
    assert_eq!(openai_stream_text(&chunks), ("echo: one".to_owned(), 2));
    assert!(chunks
        .iter()
        .all(|c| c["choices"][0]["finish_reason"].is_null()));
    assert!(!r.text().contains("[DONE]"));

    let r = post(
        &mock,
        ANTHROPIC,
        ANTHROPIC_HEADERS,
        &anthropic_req(text, true),
    );
    assert!(!r.complete);
    assert_eq!(anthropic_stream_text(&r), ("echo: one".to_owned(), 2));
    assert!(!r.text().contains("message_delta") && !r.text().contains("message_stop"));

    let r = post(&mock, GEMINI_SSE, &[], &gemini_req(text));
    assert!(!r.complete);
    let chunks = r.chunks();
    assert_eq!(gemini_stream_text(&chunks), ("echo: one".to_owned(), 2));
    assert!(chunks
        .iter()
        .all(|c| c.pointer("/candidates/0/finishReason").is_none()));

    // Tool calls count their start and argument deltas.
    let req = with_tools(openai_req("call:get_weather", true), weather_tool_openai());
    let r = post(&mock, OPENAI, &[], &req);
    let args: String = r
        .chunks()
        .iter()
        .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0/function/arguments"))
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert!(
        !args.is_empty() && args != TOOL_ARGUMENTS,
        "cut mid-arguments: {args:?}"
    );

    // More tokens than the reply has: every delta, no end events.
    mock.set(Behavior::Normal);
    let r = post(
        &mock,
        OPENAI,
        &[],
        &openai_req("a b mock:fail-after:99", true),
    );
    assert!(!r.complete);
    assert_eq!(openai_stream_text(&r.chunks()).1, 4);
    // Non-stream: half a body.
    let r = post(
        &mock,
        OPENAI,
        &[],
        &openai_req("a b mock:fail-after:1", false),
    );
    assert!(!r.complete);
    assert!(!r.body.is_empty());
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
}

#[test]
fn mid_stream_error_then_the_connection_is_reusable() {
    let mock = start_mock();
    mock.set(Behavior::MidStreamError);
    let mut c = Client::connect(mock.addr());
    let text = "one two three four";
    let r = c.post(OPENAI, &[], &openai_req(text, true));
    assert!(r.complete);
    let chunks = r.chunks();
    assert_eq!(openai_stream_text(&chunks).1, 2);
    let last = chunks.last().unwrap();
    assert_eq!(last["error"]["type"], "server_error");
    assert!(last.get("choices").is_none());

    let r = c.post(ANTHROPIC, ANTHROPIC_HEADERS, &anthropic_req(text, true));
    assert!(r.complete);
    assert_eq!(anthropic_stream_text(&r).1, 2);
    let (event, data) = r.events().pop().unwrap();
    assert_eq!(event.as_deref(), Some("error"));
    let e: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(
        e,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );

    let r = c.post(GEMINI_SSE, &[], &gemini_req(text));
    assert!(r.complete);
    let chunks = r.chunks();
    assert_eq!(gemini_stream_text(&chunks).1, 2);
    assert_eq!(chunks.last().unwrap()["error"]["status"], "UNAVAILABLE");

    // Non-stream: a 500 error; then a normal answer on the same connection.
    let r = c.post(OPENAI, &[], &openai_req(text, false));
    assert_eq!(r.status, 500);
    mock.set(Behavior::Normal);
    let r = c.post(OPENAI, &[], &openai_req(text, false));
    assert_eq!(r.status, 200);
    assert_eq!(mock.connections(), 1);
    let r = c.post(OPENAI, &[], &openai_req("x y mock:mid-stream-error", true));
    assert!(r.chunks().last().unwrap().get("error").is_some());
}

#[test]
fn slow_and_latency() {
    let mock = start_mock();
    mock.set(Behavior::Slow {
        first_token_ms: 250,
        per_token_ms: 40,
    });
    let mut c = Client::connect(mock.addr());
    // 4 deltas: 250 + 3 × 40 ms.
    let r = c.post(OPENAI, &[], &openai_req("a b c", true));
    assert!(
        r.head_after < Duration::from_millis(200),
        "{:?}",
        r.head_after
    );
    assert!(r.total >= Duration::from_millis(370), "{:?}", r.total);
    assert_eq!(openai_stream_text(&r.chunks()).0, "echo: a b c");
    let r = c.post(OPENAI, &[], &openai_req("a b c", false));
    assert!(
        r.head_after >= Duration::from_millis(370),
        "{:?}",
        r.head_after
    );
    mock.set(Behavior::Normal);
    let r = c.post(
        ANTHROPIC,
        ANTHROPIC_HEADERS,
        &anthropic_req("a mock:slow:200:0", true),
    );
    assert!(r.total >= Duration::from_millis(200));

    mock.set_latency(Duration::from_millis(200));
    assert_eq!(mock.latency(), Duration::from_millis(200));
    let r = c.post(GEMINI, &[], &gemini_req("a"));
    assert!(
        r.head_after >= Duration::from_millis(200),
        "{:?}",
        r.head_after
    );
    mock.set_latency(Duration::ZERO);
    let r = c.post(GEMINI, &[], &gemini_req("a"));
    assert!(
        r.head_after < Duration::from_millis(150),
        "{:?}",
        r.head_after
    );
}

#[test]
fn fixed_reply_and_prefix() {
    let mock = start_mock();
    mock.set(Behavior::Reply("The capital of France is Paris.".into()));
    let req = with_tools(openai_req("call:get_weather", false), weather_tool_openai());
    let v = post(&mock, OPENAI, &[], &req).json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "The capital of France is Paris."
    );
    let r = post(
        &mock,
        ANTHROPIC,
        ANTHROPIC_HEADERS,
        &anthropic_req("q", true),
    );
    assert_eq!(
        anthropic_stream_text(&r),
        ("The capital of France is Paris.".into(), 6)
    );
    mock.set(Behavior::Normal);
    mock.set_prefix("");
    let v = post(&mock, GEMINI, &[], &gemini_req("just this")).json();
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["text"],
        "just this"
    );
    mock.set_prefix(DEFAULT_PREFIX);
    let v = post(
        &mock,
        OPENAI,
        &[],
        &openai_req("pong mock:reply:PONG", false),
    )
    .json();
    assert_eq!(v["choices"][0]["message"]["content"], "PONG");
}

#[test]
fn requests_are_recorded_field_by_field() {
    let mock = start_mock();
    let body = anthropic_req("record me", false);
    let mut c = Client::connect(mock.addr());
    c.post(ANTHROPIC, ANTHROPIC_HEADERS, &body);
    c.get("/v1/models", &[("authorization", "Bearer sk-1")]);
    let sent = mock.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].method, "POST");
    assert_eq!(sent[0].path, "/v1/messages");
    assert_eq!(sent[0].json(), body);
    assert_eq!(sent[0].body, body.to_string().into_bytes());
    assert_eq!(sent[0].header("X-API-KEY"), Some("sk-ant-test"));
    assert_eq!(sent[0].headers[0], ("host".to_owned(), "mock".to_owned()));
    assert_eq!(sent[1].method, "GET");
    assert_eq!(sent[1].endpoint, Endpoint::Models);
    assert!(sent[1].body.is_empty());
    mock.clear_requests();
    assert!(mock.requests().is_empty());
    mock.set_recording(false);
    c.get("/v1/models", &[]);
    assert!(mock.requests().is_empty());
    assert_eq!(mock.served(Endpoint::Models), 2, "counted all the same");
    assert_eq!(mock.total_served(), 3);
}

#[test]
fn many_keep_alive_connections() {
    let mock = start_mock();
    mock.set_recording(false);
    let addr = mock.addr();
    let threads: Vec<_> = (0..32)
        .map(|t| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..20 {
                    let text = format!("client {t} request {i}");
                    let stream = i % 2 == 1;
                    let r = c.post(OPENAI, &[], &openai_req(&text, stream));
                    assert_eq!(r.status, 200);
                    let got = if stream {
                        openai_stream_text(&r.chunks()).0
                    } else {
                        r.json()["choices"][0]["message"]["content"]
                            .as_str()
                            .unwrap()
                            .to_owned()
                    };
                    assert_eq!(got, format!("echo: {text}"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(mock.connections(), 32);
    assert_eq!(mock.served(Endpoint::ChatCompletions), 640);
    let t = Instant::now();
    mock.stop();
    assert!(t.elapsed() < Duration::from_secs(1));
}
