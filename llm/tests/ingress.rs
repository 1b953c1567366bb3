//! Ingress parsing beyond the conformance fixtures: every supported request feature reaches
//! the canonical request, and every refusal is a 400-class error naming the field; model
//! lists and embeddings in the client formats.

mod common;

use common::NOW;
use headwater_llm::canonical::{Image, Part, ResultPart, Role, ToolChoice};
use headwater_llm::embeddings::{
    self, Embedding, EmbeddingInput, EmbeddingResponse, EncodingFormat,
};
use headwater_llm::{ErrorKind, Ingress, ModelCard, Origin, ResponseFormat};
use serde_json::{json, Value};

fn parse(
    ingress: Ingress,
    v: Value,
) -> Result<headwater_llm::ChatRequest, headwater_llm::LlmError> {
    ingress.parse_request(&serde_json::to_vec(&v).unwrap())
}

/// The field a request is refused at, and the kind of refusal.
fn refusal(ingress: Ingress, v: Value) -> (String, ErrorKind) {
    let e = parse(ingress, v).expect_err("must be refused");
    assert!(matches!(e.origin, Origin::Client | Origin::Gateway));
    let r = ingress.render_error(&e);
    assert_eq!(r.status, 400, "{e}");
    (e.param.unwrap_or_default(), e.kind)
}

#[test]
fn openai_features_reach_the_canonical_request() {
    let r = parse(
        Ingress::OpenAi,
        json!({
            "model": "m",
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg", "detail": "low"}}]},
                {"role": "system", "content": "Late rule."},
            ],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "description": "d", "schema": {"type": "object"}, "strict": true}},
            "stop": "STOP", "seed": 7, "presence_penalty": 0.5, "frequency_penalty": -0.5,
            "max_tokens": 10, "max_completion_tokens": 20, "n": 1, "logprobs": false,
            "stream": true
        }),
    )
    .unwrap();
    assert_eq!(
        r.system,
        vec!["Be brief.".to_owned(), "Late rule.".to_owned()]
    );
    assert_eq!(
        r.messages[0].content,
        vec![Part::Image(Image::Url {
            url: "https://x.test/cat.jpg".into(),
            detail: Some("low".into())
        })]
    );
    assert_eq!(r.tool_choice, Some(ToolChoice::Tool("f".into())));
    assert_eq!(
        r.response_format,
        ResponseFormat::JsonSchema {
            name: "answer".into(),
            description: Some("d".into()),
            schema: json!({"type": "object"}),
            strict: Some(true)
        }
    );
    assert_eq!(r.stop, vec!["STOP".to_owned()]);
    assert_eq!(r.sampling.seed, Some(7));
    assert_eq!(r.sampling.presence_penalty, Some(0.5));
    assert_eq!(r.sampling.frequency_penalty, Some(-0.5));
    assert_eq!(r.max_tokens, Some(20), "max_completion_tokens wins");
    assert!(r.stream);
    assert!(!r.include_usage);
    let j = parse(Ingress::OpenAi, json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}, "tool_choice": "required"})).unwrap();
    assert_eq!(j.response_format, ResponseFormat::JsonObject);
    assert_eq!(j.tool_choice, Some(ToolChoice::Required));
}

#[test]
fn openai_refusals_name_the_field() {
    let user =
        |content: Value| json!({"model": "m", "messages": [{"role": "user", "content": content}]});
    let cases = [
        (json!({"messages": []}), "model", ErrorKind::InvalidRequest),
        (
            json!({"model": "m", "messages": []}),
            "messages",
            ErrorKind::InvalidRequest,
        ),
        (
            json!({"model": "m", "messages": {}}),
            "messages",
            ErrorKind::InvalidRequest,
        ),
        (
            json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
            "messages[0].role",
            ErrorKind::InvalidRequest,
        ),
        (
            json!({"model": "m", "messages": [{"content": "x"}]}),
            "messages[0].role",
            ErrorKind::InvalidRequest,
        ),
        (
            user(json!(5)),
            "messages[0].content",
            ErrorKind::InvalidRequest,
        ),
        (
            user(json!([{"type": "text"}])),
            "messages[0].content[0].text",
            ErrorKind::InvalidRequest,
        ),
        (
            user(json!([{"type": "video"}])),
            "messages[0].content[0]",
            ErrorKind::InvalidRequest,
        ),
        (
            user(json!([{"type": "input_audio", "input_audio": {}}])),
            "messages[0].content[0]",
            ErrorKind::Unsupported,
        ),
        (
            user(json!([{"type": "image_url", "image_url": {"detail": "low"}}])),
            "messages[0].content[0].image_url.url",
            ErrorKind::InvalidRequest,
        ),
        (
            json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}]}),
            "messages[0].tool_calls[0].id",
            ErrorKind::InvalidRequest,
        ),
        (
            json!({"model": "m", "messages": [{"role": "tool", "content": "r"}]}),
            "messages[0].tool_call_id",
            ErrorKind::InvalidRequest,
        ),
        (
            json!({"model": "m", "messages": [{"role": "function", "name": "f", "content": "r"}]}),
            "messages[0].role",
            ErrorKind::Unsupported,
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}),
            "n",
            ErrorKind::Unsupported,
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": true}),
            "logprobs",
            ErrorKind::Unsupported,
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
            "temperature",
            ErrorKind::InvalidRequest,
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
            "max_tokens",
            ErrorKind::InvalidRequest,
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": ["a", 1]}),
            "stop[1]",
            ErrorKind::InvalidRequest,
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "always"}),
            "tool_choice",
            ErrorKind::InvalidRequest,
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "custom", "custom": {"name": "c"}}]}),
            "tools[0].type",
            ErrorKind::Unsupported,
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]}),
            "tools[0].function.parameters",
            ErrorKind::InvalidRequest,
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}),
            "response_format.json_schema.name",
            ErrorKind::InvalidRequest,
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": "yes"}}),
            "stream_options.include_usage",
            ErrorKind::InvalidRequest,
        ),
    ];
    for (body, field, kind) in cases {
        assert_eq!(
            refusal(Ingress::OpenAi, body.clone()),
            (field.to_owned(), kind),
            "{body}"
        );
    }
    let e = Ingress::OpenAi.parse_request(b"{\"model\":").unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidRequest);
    assert!(
        e.message.starts_with("request body is not valid JSON"),
        "{}",
        e.message
    );
}

#[test]
fn anthropic_features_reach_the_canonical_request() {
    let r = parse(
        Ingress::Anthropic,
        json!({
            "model": "m", "max_tokens": 64, "top_k": 5,
            "messages": [
                {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "...", "signature": "s"}, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "is_error": true,
                    "content": [{"type": "text", "text": "boom"}, {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "R0lG"}}]}]}
            ],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "output_config": {"format": {"type": "json_schema", "schema": {"type": "object", "additionalProperties": false}}},
            "thinking": {"type": "enabled", "budget_tokens": 2048}
        }),
    )
    .unwrap();
    assert_eq!(r.sampling.top_k, Some(5));
    assert_eq!(r.tool_choice, Some(ToolChoice::Required));
    assert_eq!(r.parallel_tool_calls, Some(false));
    assert_eq!(r.messages[1].role, Role::Assistant);
    assert_eq!(
        r.messages[1].content.len(),
        1,
        "thinking blocks are dropped"
    );
    match &r.messages[2].content[0] {
        Part::ToolResult(t) => {
            assert!(t.is_error);
            assert_eq!(t.content[0], ResultPart::Text("boom".into()));
            assert_eq!(
                t.content[1],
                ResultPart::Image(Image::Base64 {
                    media_type: "image/gif".into(),
                    data: "R0lG".into()
                })
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(r.response_format, ResponseFormat::JsonSchema { ref schema, .. } if schema["additionalProperties"] == json!(false))
    );
    assert!(r.include_usage);
}

#[test]
fn anthropic_refusals_name_the_field() {
    let msg = |content: Value| json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": content}]});
    let cases = [
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens",
            ErrorKind::InvalidRequest,
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
            "messages[0].role",
            ErrorKind::InvalidRequest,
        ),
        (
            msg(json!([{"type": "tool_use", "id": "a", "name": "f", "input": {}}])),
            "messages[0].content[0].type",
            ErrorKind::InvalidRequest,
        ),
        (
            msg(json!([{"type": "document", "source": {}}])),
            "messages[0].content[0].type",
            ErrorKind::Unsupported,
        ),
        (
            msg(json!([{"type": "image", "source": {"type": "file", "file_id": "f"}}])),
            "messages[0].content[0].source.type",
            ErrorKind::Unsupported,
        ),
        (
            msg(json!([{"type": "tool_result", "content": "x"}])),
            "messages[0].content[0].tool_use_id",
            ErrorKind::InvalidRequest,
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": "x"}]}]}),
            "messages[0].content[0].input",
            ErrorKind::InvalidRequest,
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
            "tools[0].type",
            ErrorKind::Unsupported,
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "sometimes"}}),
            "tool_choice.type",
            ErrorKind::InvalidRequest,
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "system": [{"type": "image"}]}),
            "system[0].type",
            ErrorKind::InvalidRequest,
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "metadata": {"user_id": 3}}),
            "metadata.user_id",
            ErrorKind::InvalidRequest,
        ),
    ];
    for (body, field, kind) in cases {
        assert_eq!(
            refusal(Ingress::Anthropic, body.clone()),
            (field.to_owned(), kind),
            "{body}"
        );
    }
}

#[test]
fn chat_paths_select_the_ingress() {
    assert_eq!(
        Ingress::for_chat_path("/v1/chat/completions"),
        Some(Ingress::OpenAi)
    );
    assert_eq!(
        Ingress::for_chat_path("/llm/v1/messages/"),
        Some(Ingress::Anthropic)
    );
    assert_eq!(Ingress::for_chat_path("/v1/embeddings"), None);
}

#[test]
fn model_lists_in_both_formats() {
    let models = [
        ModelCard {
            id: "smart".into(),
            created: 1_709_208_000,
            owned_by: "headwater".into(),
            display_name: Some("Smart".into()),
        },
        ModelCard {
            id: "fast".into(),
            created: 0,
            owned_by: "headwater".into(),
            display_name: None,
        },
    ];
    let openai: Value = serde_json::from_slice(&Ingress::OpenAi.render_models(&models)).unwrap();
    assert_eq!(
        openai,
        json!({"object": "list", "data": [
            {"id": "smart", "object": "model", "created": 1709208000, "owned_by": "headwater"},
            {"id": "fast", "object": "model", "created": 0, "owned_by": "headwater"}]})
    );
    let anthropic: Value =
        serde_json::from_slice(&Ingress::Anthropic.render_models(&models)).unwrap();
    assert_eq!(
        anthropic,
        json!({"data": [
            {"type": "model", "id": "smart", "display_name": "Smart", "created_at": "2024-02-29T12:00:00Z"},
            {"type": "model", "id": "fast", "display_name": "fast", "created_at": "1970-01-01T00:00:00Z"}],
            "has_more": false, "first_id": "smart", "last_id": "fast"})
    );
}

#[test]
fn embeddings_request_and_response_in_openai_format() {
    let req = embeddings::parse_openai_request(
        br#"{"model":"embed","input":["a","b"],"encoding_format":"base64","dimensions":2,"user":"u"}"#,
    )
    .unwrap();
    assert_eq!(
        req.input,
        EmbeddingInput::Text(vec!["a".into(), "b".into()])
    );
    assert_eq!(req.encoding_format, EncodingFormat::Base64);
    assert_eq!(req.dimensions, Some(2));
    let resp = EmbeddingResponse {
        model: "text-embedding-3-small".into(),
        data: vec![
            Embedding::Float(vec![1.0, -2.0]),
            Embedding::Base64("AAAAAAAAAAA=".into()),
        ],
        usage: None,
    };
    let v: Value =
        serde_json::from_slice(&embeddings::render_openai_response(&req, &resp)).unwrap();
    // 1.0 = 00 00 80 3f, -2.0 = 00 00 00 c0.
    assert_eq!(
        v,
        json!({"object": "list", "data": [
            {"object": "embedding", "index": 0, "embedding": "AACAPwAAAMA="},
            {"object": "embedding", "index": 1, "embedding": "AAAAAAAAAAA="}],
            "model": "text-embedding-3-small", "usage": {"prompt_tokens": 0, "total_tokens": 0}})
    );
    let float_req = embeddings::parse_openai_request(br#"{"model":"embed","input":"a"}"#).unwrap();
    let v: Value =
        serde_json::from_slice(&embeddings::render_openai_response(&float_req, &resp)).unwrap();
    assert_eq!(v["data"][0]["embedding"], json!([1.0, -2.0]));
}

#[test]
fn openai_rendering_uses_now_only_when_the_provider_gave_no_time() {
    let resp = headwater_llm::ChatResponse {
        id: "msg_1".into(),
        model: "claude".into(),
        created: None,
        content: vec![],
        finish_reason: headwater_llm::FinishReason::StopSequence(Some("END".into())),
        usage: None,
    };
    let v: Value =
        serde_json::from_slice(&Ingress::OpenAi.render_response(&resp, NOW).unwrap()).unwrap();
    assert_eq!(v["created"], NOW);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["choices"][0]["message"]["content"], "");
    assert!(
        v.get("usage").is_none(),
        "unknown usage is not rendered as zeros"
    );
    let a: Value =
        serde_json::from_slice(&Ingress::Anthropic.render_response(&resp, NOW).unwrap()).unwrap();
    assert_eq!(a["stop_reason"], "stop_sequence");
    assert_eq!(a["stop_sequence"], "END");
    // The provider's own time wins over now.
    let dated = headwater_llm::ChatResponse {
        created: Some(1_700_000_000),
        ..resp
    };
    let v: Value =
        serde_json::from_slice(&Ingress::OpenAi.render_response(&dated, NOW).unwrap()).unwrap();
    assert_eq!(v["created"], 1_700_000_000);
}
