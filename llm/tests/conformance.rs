//! The conformance matrix: every ingress {OpenAI, Anthropic} × egress {OpenAI, Azure,
//! Anthropic, Gemini, Mistral, OpenAI-compatible}, streaming and not, text and tool calls.
//!
//! Request side: both ingress fixtures describe the same conversation, so they must parse to
//! the same canonical request, and the egress request built from either must equal the
//! provider's expected body (`fixtures/expected/`) field by field, with the right path and
//! headers. Response side: each provider's recorded answer and stream must come out in each
//! ingress format with exactly the fixture's id, model, text, tool calls, finish reason and
//! usage, in a stream that keeps its format's grammar, whatever the byte split.

mod common;

use common::*;
use headwater_llm::canonical::{
    Image, Message, Part, ResultPart, Role, Sampling, Tool, ToolCall, ToolChoice, ToolResult,
};
use headwater_llm::{
    ChatRequest, Ingress, ProviderKind, ResponseFormat, StreamState, StreamTranslator,
};
use serde_json::{json, Value};

const INGRESSES: [Ingress; 2] = [Ingress::OpenAi, Ingress::Anthropic];
const SCENARIOS: [Scenario; 2] = [Scenario::Text, Scenario::Tools];

fn request_fixture(ingress: Ingress, scenario: Scenario, stream: bool) -> Vec<u8> {
    let mut v = fixture_json(&format!(
        "{}_request_{}.json",
        ingress_slug(ingress),
        scenario.slug()
    ));
    v["stream"] = Value::Bool(stream);
    serde_json::to_vec(&v).unwrap()
}

fn canonical(ingress: Ingress, scenario: Scenario, stream: bool) -> ChatRequest {
    ingress
        .parse_request(&request_fixture(ingress, scenario, stream))
        .unwrap_or_else(|e| panic!("{ingress:?} {scenario:?}: {e}"))
}

#[test]
fn both_ingress_formats_parse_to_the_same_canonical_request() {
    let schema = |prop: &str| json!({"type": "object", "properties": {prop: {"type": "string"}}, "required": [prop]});
    let tools_expected = ChatRequest {
        model: "smart".into(),
        system: vec!["You are a concise assistant.".into()],
        messages: vec![
            Message {
                role: Role::User,
                content: vec![
                    Part::Text("What's the weather and time in Paris? Here is the sky.".into()),
                    Part::Image(Image::Base64 {
                        media_type: "image/png".into(),
                        data: "iVBORw0KGgo=".into(),
                    }),
                ],
            },
            Message {
                role: Role::Assistant,
                content: vec![
                    Part::Text("Checking both.".into()),
                    Part::ToolCall(ToolCall {
                        id: "call_w1".into(),
                        name: "get_weather".into(),
                        arguments: r#"{"city":"Paris"}"#.into(),
                    }),
                    Part::ToolCall(ToolCall {
                        id: "call_t1".into(),
                        name: "get_time".into(),
                        arguments: r#"{"timezone":"Europe/Paris"}"#.into(),
                    }),
                ],
            },
            Message {
                role: Role::User,
                content: vec![
                    Part::ToolResult(ToolResult {
                        call_id: "call_w1".into(),
                        content: vec![ResultPart::Text("18°C, cloudy".into())],
                        is_error: false,
                    }),
                    Part::ToolResult(ToolResult {
                        call_id: "call_t1".into(),
                        content: vec![ResultPart::Text("14:05".into())],
                        is_error: false,
                    }),
                ],
            },
        ],
        tools: vec![
            Tool {
                name: "get_weather".into(),
                description: Some("Current weather for a city".into()),
                parameters: schema("city"),
                strict: None,
            },
            Tool {
                name: "get_time".into(),
                description: Some("Local time in a timezone".into()),
                parameters: schema("timezone"),
                strict: None,
            },
        ],
        tool_choice: Some(ToolChoice::Auto),
        parallel_tool_calls: Some(true),
        response_format: ResponseFormat::Text,
        sampling: Sampling {
            temperature: Some(0.2),
            top_p: Some(0.9),
            ..Sampling::default()
        },
        max_tokens: Some(512),
        stop: vec!["END".into()],
        user: Some("user-42".into()),
        stream: true,
        include_usage: true,
    };
    let text_expected = ChatRequest {
        model: "smart".into(),
        system: vec!["You are a concise assistant.".into()],
        messages: vec![Message {
            role: Role::User,
            content: vec![Part::Text("Say hello in French.".into())],
        }],
        sampling: Sampling {
            temperature: Some(0.5),
            ..Sampling::default()
        },
        max_tokens: Some(100),
        stream: true,
        include_usage: true,
        ..ChatRequest::default()
    };
    for ingress in INGRESSES {
        assert_eq!(
            canonical(ingress, Scenario::Tools, true),
            tools_expected,
            "{ingress:?}"
        );
        assert_eq!(
            canonical(ingress, Scenario::Text, true),
            text_expected,
            "{ingress:?}"
        );
        assert!(!canonical(ingress, Scenario::Text, false).stream);
    }
}

#[test]
fn egress_requests_match_provider_wire_formats() {
    for kind in ProviderKind::ALL {
        let dep = deployment(kind);
        for scenario in SCENARIOS {
            let exp = fixture_json(&format!("expected/{}_{}.json", slug(kind), scenario.slug()));
            for ingress in INGRESSES {
                for stream in [false, true] {
                    let ctx = format!("{kind:?} {scenario:?} from {ingress:?} stream={stream}");
                    let req = dep
                        .chat_request(&canonical(ingress, scenario, stream))
                        .unwrap();
                    let mut body = exp["body"].clone();
                    let path = if stream {
                        for (k, v) in exp["stream_adds"].as_object().unwrap() {
                            body[k] = v.clone();
                        }
                        &exp["stream_path"]
                    } else {
                        &exp["path"]
                    };
                    let got: Value = serde_json::from_slice(&req.body).unwrap();
                    assert_eq!(got, body, "{ctx}: body");
                    assert_eq!(req.path_and_query, path.as_str().unwrap(), "{ctx}: path");
                    assert_eq!(req.method, http::Method::POST, "{ctx}");
                    let h = |name: &str| {
                        req.headers
                            .get(name)
                            .map(|v| v.to_str().unwrap().to_owned())
                    };
                    assert_eq!(
                        h("content-type").as_deref(),
                        Some("application/json"),
                        "{ctx}"
                    );
                    let accept = if stream {
                        "text/event-stream"
                    } else {
                        "application/json"
                    };
                    assert_eq!(h("accept").as_deref(), Some(accept), "{ctx}");
                    let (auth_name, auth_value) = match kind {
                        ProviderKind::Anthropic => ("x-api-key", KEY.to_owned()),
                        ProviderKind::Azure => ("api-key", KEY.to_owned()),
                        ProviderKind::Gemini => ("x-goog-api-key", KEY.to_owned()),
                        _ => ("authorization", format!("Bearer {KEY}")),
                    };
                    assert_eq!(h(auth_name), Some(auth_value), "{ctx}: auth");
                    assert!(req.headers.get(auth_name).unwrap().is_sensitive(), "{ctx}");
                    let auth_headers = ["authorization", "x-api-key", "api-key", "x-goog-api-key"];
                    assert_eq!(
                        auth_headers
                            .iter()
                            .filter(|n| req.headers.contains_key(**n))
                            .count(),
                        1,
                        "{ctx}"
                    );
                    assert_eq!(
                        h("anthropic-version").as_deref(),
                        (kind == ProviderKind::Anthropic).then_some("2023-06-01"),
                        "{ctx}"
                    );
                    assert_eq!(
                        req.headers.len(),
                        3 + usize::from(kind == ProviderKind::Anthropic),
                        "{ctx}"
                    );
                    let (tls, authority) = match kind {
                        ProviderKind::OpenAi => (true, "api.openai.com"),
                        ProviderKind::Azure => (true, "headwater-test.openai.azure.com"),
                        ProviderKind::Anthropic => (true, "api.anthropic.com"),
                        ProviderKind::Gemini => (true, "generativelanguage.googleapis.com"),
                        ProviderKind::Mistral => (true, "api.mistral.ai"),
                        ProviderKind::OpenAiCompatible => (false, "10.0.0.9:8000"),
                    };
                    assert_eq!((req.tls, req.authority.as_str()), (tls, authority), "{ctx}");
                    assert!(
                        !format!("{req:?}").contains(KEY),
                        "{ctx}: the key leaks into Debug"
                    );
                }
            }
        }
    }
}

/// The OpenAI `chat.completion` an expectation must render as.
fn openai_completion(e: &Expected) -> Value {
    let mut message = json!({"role": "assistant", "content": e.text, "refusal": null});
    if !e.calls.is_empty() {
        message["tool_calls"] = e
            .calls
            .iter()
            .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
            .collect();
    }
    let finish = if e.calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    let mut v = json!({
        "id": e.id, "object": "chat.completion", "created": e.created.unwrap_or(NOW), "model": e.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
    });
    if let Some(u) = &e.usage {
        v["usage"] = openai_usage(u);
    }
    v
}

/// The Anthropic `message` an expectation must render as.
fn anthropic_message(e: &Expected) -> Value {
    let mut content = vec![json!({"type": "text", "text": e.text})];
    for (id, name, args) in &e.calls {
        let input: Value = serde_json::from_str(args).unwrap();
        content.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    let stop = if e.calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    json!({
        "id": e.id, "type": "message", "role": "assistant", "model": e.model, "content": content,
        "stop_reason": stop, "stop_sequence": null,
        "usage": e.usage.as_ref().map(anthropic_usage).unwrap_or(json!({"input_tokens": 0, "output_tokens": 0})),
    })
}

#[test]
fn non_streamed_answers_render_in_every_ingress_format() {
    for kind in ProviderKind::ALL {
        let dep = deployment(kind);
        for scenario in SCENARIOS {
            let ctx = format!("{kind:?} {scenario:?}");
            let e = expected(kind, scenario, false);
            let resp = dep
                .parse_chat_response(&fixture(&format!(
                    "{}_response_{}.json",
                    slug(kind),
                    scenario.slug()
                )))
                .unwrap_or_else(|err| panic!("{ctx}: {err}"));
            assert_eq!(resp.id, e.id, "{ctx}");
            assert_eq!(resp.model, e.model, "{ctx}");
            assert_eq!(resp.created, e.created, "{ctx}");
            assert_eq!(resp.text(), e.text, "{ctx}");
            let calls: Vec<_> = resp
                .tool_calls()
                .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()))
                .collect();
            assert_eq!(calls, e.calls, "{ctx}");
            assert_eq!(resp.finish_reason, e.finish, "{ctx}");
            assert_eq!(resp.usage, e.usage, "{ctx}");

            let openai: Value =
                serde_json::from_slice(&Ingress::OpenAi.render_response(&resp, NOW).unwrap())
                    .unwrap();
            assert_eq!(openai, openai_completion(&e), "{ctx} → OpenAI");
            let anthropic: Value =
                serde_json::from_slice(&Ingress::Anthropic.render_response(&resp, NOW).unwrap())
                    .unwrap();
            assert_eq!(anthropic, anthropic_message(&e), "{ctx} → Anthropic");
        }
    }
}

/// Runs a provider stream through a translator fed in `chunk`-byte pieces; returns the
/// client bytes and the translator.
fn translate(
    ingress: Ingress,
    kind: ProviderKind,
    body: &[u8],
    chunk: usize,
    include_usage: bool,
) -> (Vec<u8>, StreamTranslator) {
    let mut t = StreamTranslator::new(ingress, &deployment(kind), include_usage, NOW);
    let mut out = Vec::new();
    for piece in body.chunks(chunk.max(1)) {
        out.extend_from_slice(&t.feed(piece).unwrap_or_else(|e| panic!("{kind:?}: {e}")));
    }
    out.extend_from_slice(&t.finish().unwrap_or_else(|e| panic!("{kind:?}: {e}")));
    (out, t)
}

#[test]
fn streamed_answers_translate_for_every_pair() {
    for kind in ProviderKind::ALL {
        for scenario in SCENARIOS {
            let body = fixture(&format!("{}_stream_{}.sse", slug(kind), scenario.slug()));
            let e = expected(kind, scenario, true);
            for ingress in INGRESSES {
                for include_usage in [true, false] {
                    let ctx = format!(
                        "{kind:?} {scenario:?} → {ingress:?} include_usage={include_usage}"
                    );
                    let (whole, t) = translate(ingress, kind, &body, body.len(), include_usage);
                    assert!(t.committed(), "{ctx}");
                    assert_eq!(t.state(), StreamState::Closed, "{ctx}");
                    assert_eq!(t.usage(), e.usage, "{ctx}: usage");
                    assert_eq!(t.finish_reason(), Some(&e.finish), "{ctx}");
                    for chunk in [1, 2, 3, 7, 64] {
                        let (split, _) = translate(ingress, kind, &body, chunk, include_usage);
                        assert_eq!(split, whole, "{ctx}: {chunk}-byte pieces give other bytes");
                    }
                    let r = match ingress {
                        Ingress::OpenAi => rebuild_openai(&whole, include_usage),
                        Ingress::Anthropic => rebuild_anthropic(&whole),
                    };
                    assert_eq!(r.id, e.id, "{ctx}");
                    assert_eq!(r.model, e.model, "{ctx}");
                    assert_eq!(r.text, e.text, "{ctx}");
                    let calls: Vec<_> = r
                        .calls
                        .iter()
                        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
                        .collect();
                    assert_eq!(calls, e.calls, "{ctx}");
                    match ingress {
                        Ingress::OpenAi => {
                            assert_eq!(
                                r.finish,
                                if e.calls.is_empty() {
                                    "stop"
                                } else {
                                    "tool_calls"
                                },
                                "{ctx}"
                            );
                            let want = if include_usage {
                                e.usage.as_ref().map(openai_usage)
                            } else {
                                None
                            };
                            assert_eq!(r.usage, want, "{ctx}");
                        }
                        Ingress::Anthropic => {
                            assert_eq!(
                                r.finish,
                                if e.calls.is_empty() {
                                    "end_turn"
                                } else {
                                    "tool_use"
                                },
                                "{ctx}"
                            );
                            // Anthropic streams always carry usage; unknown usage is zero output.
                            let want = e
                                .usage
                                .as_ref()
                                .map(anthropic_usage)
                                .unwrap_or(json!({"output_tokens": 0}));
                            assert_eq!(r.usage, Some(want), "{ctx}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn openai_to_openai_stream_is_byte_exact() {
    let (out, _) = translate(
        Ingress::OpenAi,
        ProviderKind::OpenAi,
        &fixture("openai_stream_text.sse"),
        5,
        true,
    );
    let head = r#""id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-2024-08-06""#;
    let expected = [
        format!(r#"data: {{{head},"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#),
        format!(r#"data: {{{head},"choices":[{{"index":0,"delta":{{"content":"Bonjour"}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#),
        format!(r#"data: {{{head},"choices":[{{"index":0,"delta":{{"content":" ! 👋"}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#),
        format!(r#"data: {{{head},"choices":[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"stop"}}],"usage":null}}"#),
        format!(
            r#"data: {{{head},"choices":[],"usage":{{"prompt_tokens":21,"completion_tokens":5,"total_tokens":26,"prompt_tokens_details":{{"cached_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0}}}}}}"#
        ),
        "data: [DONE]".to_owned(),
    ]
    .map(|l| l + "\n\n")
    .concat();
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}

#[test]
fn anthropic_to_anthropic_stream_is_byte_exact() {
    let (out, _) = translate(
        Ingress::Anthropic,
        ProviderKind::Anthropic,
        &fixture("anthropic_stream_tools.sse"),
        11,
        true,
    );
    let ev = |name: &str, data: &str| format!("event: {name}\ndata: {data}\n\n");
    let expected = [
        ev(
            "message_start",
            r#"{"type":"message_start","message":{"id":"msg_01Aq9w938a90dw8q","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":380,"output_tokens":2,"cache_creation_input_tokens":0,"cache_read_input_tokens":1024}}}"#,
        ),
        ev("content_block_start", r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
        ev("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Checking"}}"#),
        ev("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" both."}}"#),
        ev("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
        ev(
            "content_block_start",
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01A09q90qw90lq917835lq9","name":"get_weather","input":{}}}"#,
        ),
        ev("content_block_delta", r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Pa"}}"#),
        ev("content_block_delta", r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ris\"}"}}"#),
        ev("content_block_stop", r#"{"type":"content_block_stop","index":1}"#),
        ev(
            "content_block_start",
            r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_01Bx7hQ2mV5nC8pL3kR6tY9w","name":"get_time","input":{}}}"#,
        ),
        ev("content_block_delta", r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"timezone\""}}"#),
        ev("content_block_delta", r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":": \"Europe/Paris\"}"}}"#),
        ev("content_block_stop", r#"{"type":"content_block_stop","index":2}"#),
        ev(
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"input_tokens":380,"output_tokens":72,"cache_creation_input_tokens":0,"cache_read_input_tokens":1024}}"#,
        ),
        ev("message_stop", r#"{"type":"message_stop"}"#),
    ]
    .concat();
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}
