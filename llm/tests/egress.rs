//! Egress features beyond the conformance fixtures, per provider: JSON mode and JSON schema,
//! every tool choice, Mistral's and Anthropic's and Gemini's differences, URLs and headers,
//! provider answers with unusual shapes, and embeddings.

mod common;

use common::*;
use headwater_llm::canonical::{
    Image, Message, OutputPart, Part, ResultPart, Role, ToolCall, ToolChoice, ToolResult,
};
use headwater_llm::embeddings::{Embedding, EmbeddingInput, EmbeddingRequest, EncodingFormat};
use headwater_llm::{
    ApiKey, ChatRequest, Deployment, ErrorKind, FinishReason, Ingress, ProviderKind,
    ResponseFormat, Sampling, Tool,
};
use serde_json::{json, Value};

fn body(kind: ProviderKind, req: &ChatRequest) -> Value {
    serde_json::from_slice(&deployment(kind).chat_request(req).unwrap().body).unwrap()
}

fn user(text: &str) -> Message {
    Message {
        role: Role::User,
        content: vec![Part::Text(text.into())],
    }
}

fn base() -> ChatRequest {
    ChatRequest {
        model: "smart".into(),
        messages: vec![user("hi")],
        ..ChatRequest::default()
    }
}

fn with_tool(mut r: ChatRequest, choice: ToolChoice, parallel: Option<bool>) -> ChatRequest {
    r.tools = vec![Tool {
        name: "f".into(),
        description: None,
        parameters: json!({"type": "object"}),
        strict: Some(true),
    }];
    r.tool_choice = Some(choice);
    r.parallel_tool_calls = parallel;
    r
}

#[test]
fn json_modes_per_provider() {
    let object = ChatRequest {
        response_format: ResponseFormat::JsonObject,
        system: vec!["Be terse.".into()],
        ..base()
    };
    let schema = ChatRequest {
        response_format: ResponseFormat::JsonSchema {
            name: "answer".into(),
            description: None,
            schema: json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": false}),
            strict: Some(true),
        },
        ..base()
    };
    let the_schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": false});
    for kind in [
        ProviderKind::OpenAi,
        ProviderKind::Azure,
        ProviderKind::Mistral,
        ProviderKind::OpenAiCompatible,
    ] {
        assert_eq!(
            body(kind, &object)["response_format"],
            json!({"type": "json_object"}),
            "{kind:?}"
        );
        assert_eq!(
            body(kind, &schema)["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": the_schema, "strict": true}}),
            "{kind:?}"
        );
    }
    let a = body(ProviderKind::Anthropic, &object);
    assert_eq!(
        a["system"],
        json!([{"type": "text", "text": "Be terse."},
               {"type": "text", "text": headwater_llm::egress::anthropic::JSON_OBJECT_INSTRUCTION}])
    );
    assert!(a.get("output_config").is_none());
    let a = body(ProviderKind::Anthropic, &schema);
    assert_eq!(
        a["output_config"],
        json!({"format": {"type": "json_schema", "schema": the_schema}})
    );
    assert!(a.get("system").is_none());
    assert_eq!(
        body(ProviderKind::Gemini, &object)["generationConfig"],
        json!({"responseMimeType": "application/json"})
    );
    assert_eq!(
        body(ProviderKind::Gemini, &schema)["generationConfig"],
        json!({"responseMimeType": "application/json", "responseJsonSchema": the_schema})
    );
}

#[test]
fn tool_choices_per_provider() {
    let choices = [
        (ToolChoice::None, None),
        (ToolChoice::Required, Some(false)),
        (ToolChoice::Tool("f".into()), None),
    ];
    let expect = |kind: ProviderKind| -> [Value; 3] {
        match kind {
            ProviderKind::Mistral => [
                json!("none"),
                json!("any"),
                json!({"type": "function", "function": {"name": "f"}}),
            ],
            ProviderKind::Anthropic => [
                json!({"type": "none"}),
                json!({"type": "any", "disable_parallel_tool_use": true}),
                json!({"type": "tool", "name": "f"}),
            ],
            ProviderKind::Gemini => [
                json!({"functionCallingConfig": {"mode": "NONE"}}),
                json!({"functionCallingConfig": {"mode": "ANY"}}),
                json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}}),
            ],
            _ => [
                json!("none"),
                json!("required"),
                json!({"type": "function", "function": {"name": "f"}}),
            ],
        }
    };
    for kind in ProviderKind::ALL {
        for ((choice, parallel), want) in choices.iter().zip(expect(kind)) {
            let b = body(kind, &with_tool(base(), choice.clone(), *parallel));
            let got = match kind {
                ProviderKind::Gemini => &b["toolConfig"],
                _ => &b["tool_choice"],
            };
            assert_eq!(got, &want, "{kind:?} {choice:?}");
            match kind {
                ProviderKind::Anthropic | ProviderKind::Gemini => {
                    assert!(b.get("parallel_tool_calls").is_none())
                }
                _ => assert_eq!(
                    b.get("parallel_tool_calls").cloned(),
                    parallel.map(Value::Bool),
                    "{kind:?}"
                ),
            }
        }
    }
    // The strict flag reaches the providers that have one.
    let b = body(
        ProviderKind::OpenAi,
        &with_tool(base(), ToolChoice::Auto, None),
    );
    assert_eq!(
        b["tools"][0],
        json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": true}})
    );
    let b = body(
        ProviderKind::Anthropic,
        &with_tool(base(), ToolChoice::Auto, None),
    );
    assert_eq!(
        b["tools"][0],
        json!({"name": "f", "input_schema": {"type": "object"}, "strict": true})
    );
    assert_eq!(b["tool_choice"], json!({"type": "auto"}));
}

#[test]
fn sampling_parameters_per_provider() {
    let r = ChatRequest {
        sampling: Sampling {
            temperature: Some(0.7),
            top_p: Some(0.5),
            top_k: Some(40),
            seed: Some(11),
            presence_penalty: Some(0.1),
            frequency_penalty: Some(0.2),
        },
        user: Some("u-1".into()),
        stop: vec!["x".into(), "y".into()],
        max_tokens: Some(9),
        ..base()
    };
    let o = body(ProviderKind::OpenAi, &r);
    assert_eq!(
        (
            &o["seed"],
            &o["presence_penalty"],
            &o["frequency_penalty"],
            &o["user"],
            &o["max_completion_tokens"]
        ),
        (
            &json!(11),
            &json!(0.1),
            &json!(0.2),
            &json!("u-1"),
            &json!(9)
        )
    );
    assert!(o.get("top_k").is_none() && o.get("max_tokens").is_none());
    let m = body(ProviderKind::Mistral, &r);
    assert_eq!(m["random_seed"], 11);
    assert_eq!(m["max_tokens"], 9);
    assert!(
        m.get("seed").is_none() && m.get("user").is_none() && m.get("stream_options").is_none()
    );
    let a = body(ProviderKind::Anthropic, &r);
    assert_eq!(
        (&a["top_k"], &a["stop_sequences"], &a["metadata"]),
        (&json!(40), &json!(["x", "y"]), &json!({"user_id": "u-1"}))
    );
    for dropped in ["seed", "presence_penalty", "frequency_penalty", "user"] {
        assert!(a.get(dropped).is_none(), "{dropped}");
    }
    let g = body(ProviderKind::Gemini, &r);
    assert_eq!(
        g["generationConfig"],
        json!({"temperature": 0.7, "topP": 0.5, "topK": 40, "seed": 11, "presencePenalty": 0.1,
               "frequencyPenalty": 0.2, "maxOutputTokens": 9, "stopSequences": ["x", "y"]})
    );
}

#[test]
fn anthropic_requests() {
    let call = |id: &str| {
        Part::ToolCall(ToolCall {
            id: id.into(),
            name: "f".into(),
            arguments: String::new(),
        })
    };
    let result = |id: &str, error: bool| {
        Part::ToolResult(ToolResult {
            call_id: id.into(),
            content: vec![
                ResultPart::Text("r".into()),
                ResultPart::Image(Image::Url {
                    url: "https://x.test/p.png".into(),
                    detail: None,
                }),
            ],
            is_error: error,
        })
    };
    let r = ChatRequest {
        system: vec!["one".into(), "two".into()],
        messages: vec![
            user("q"),
            Message {
                role: Role::Assistant,
                content: vec![Part::Text(String::new()), call("a"), call("b")],
            },
            Message {
                role: Role::User,
                content: vec![Part::Text("also".into()), result("a", true)],
            },
            Message {
                role: Role::User,
                content: vec![result("b", false)],
            },
        ],
        ..base()
    };
    let b = body(ProviderKind::Anthropic, &r);
    assert_eq!(
        b["max_tokens"],
        Deployment::DEFAULT_MAX_TOKENS,
        "required: the deployment default fills in"
    );
    assert_eq!(
        b["system"],
        json!([{"type": "text", "text": "one"}, {"type": "text", "text": "two"}])
    );
    let img = json!({"type": "image", "source": {"type": "url", "url": "https://x.test/p.png"}});
    assert_eq!(
        b["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "q"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "a", "name": "f", "input": {}},
                {"type": "tool_use", "id": "b", "name": "f", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "a", "content": [{"type": "text", "text": "r"}, img], "is_error": true},
                {"type": "tool_result", "tool_use_id": "b", "content": [{"type": "text", "text": "r"}, img]},
                {"type": "text", "text": "also"}]}
        ])
    );
    // Arguments that are not an object cannot become `input`.
    let bad = ChatRequest {
        messages: vec![Message {
            role: Role::Assistant,
            content: vec![Part::ToolCall(ToolCall {
                id: "a".into(),
                name: "f".into(),
                arguments: "[1]".into(),
            })],
        }],
        ..base()
    };
    let e = deployment(ProviderKind::Anthropic)
        .chat_request(&bad)
        .unwrap_err();
    assert_eq!(
        (e.kind, e.param.as_deref()),
        (ErrorKind::InvalidRequest, Some("messages[0]"))
    );
}

#[test]
fn gemini_requests() {
    let r = ChatRequest {
        messages: vec![
            Message {
                role: Role::User,
                content: vec![Part::Image(Image::Url {
                    url: "https://x.test/photo.JPG?size=2".into(),
                    detail: Some("high".into()),
                })],
            },
            Message {
                role: Role::Assistant,
                content: vec![Part::ToolCall(ToolCall {
                    id: "c1".into(),
                    name: "lookup".into(),
                    arguments: r#"{"q":"x"}"#.into(),
                })],
            },
            Message {
                role: Role::User,
                content: vec![Part::ToolResult(ToolResult {
                    call_id: "c1".into(),
                    content: vec![ResultPart::Text("not found".into())],
                    is_error: true,
                })],
            },
        ],
        ..base()
    };
    let b = body(ProviderKind::Gemini, &r);
    assert_eq!(
        b["contents"],
        json!([
            {"role": "user", "parts": [{"fileData": {"fileUri": "https://x.test/photo.JPG?size=2", "mimeType": "image/jpeg"}}]},
            {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {"q": "x"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "lookup", "response": {"error": "not found"}}}]}
        ])
    );
    // A result for a call that is not in the conversation cannot be named.
    let orphan = ChatRequest {
        messages: vec![Message {
            role: Role::User,
            content: vec![Part::ToolResult(ToolResult {
                call_id: "zz".into(),
                content: vec![],
                is_error: false,
            })],
        }],
        ..base()
    };
    let e = deployment(ProviderKind::Gemini)
        .chat_request(&orphan)
        .unwrap_err();
    assert_eq!(
        (e.kind, e.param.as_deref()),
        (ErrorKind::InvalidRequest, Some("messages[0]"))
    );
    assert!(e.message.contains("`zz`"), "{}", e.message);
}

#[test]
fn mistral_ids_stay_paired_and_images_lose_detail() {
    let r = ChatRequest {
        messages: vec![
            Message {
                role: Role::User,
                content: vec![
                    Part::Text("look".into()),
                    Part::Image(Image::Url {
                        url: "https://x.test/a.png".into(),
                        detail: Some("low".into()),
                    }),
                ],
            },
            Message {
                role: Role::Assistant,
                content: vec![Part::ToolCall(ToolCall {
                    id: "toolu_01A09q90qw90lq917835lq9".into(),
                    name: "f".into(),
                    arguments: "{}".into(),
                })],
            },
            Message {
                role: Role::User,
                content: vec![Part::ToolResult(ToolResult {
                    call_id: "toolu_01A09q90qw90lq917835lq9".into(),
                    content: vec![ResultPart::Text("ok".into())],
                    is_error: false,
                })],
            },
        ],
        ..base()
    };
    let m = body(ProviderKind::Mistral, &r);
    assert_eq!(
        m["messages"][0]["content"][1],
        json!({"type": "image_url", "image_url": {"url": "https://x.test/a.png"}})
    );
    let call_id = m["messages"][1]["tool_calls"][0]["id"].as_str().unwrap();
    assert_eq!(call_id.len(), 9);
    assert!(call_id.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(
        m["messages"][2],
        json!({"role": "tool", "tool_call_id": call_id, "name": "f", "content": "ok"})
    );
    // OpenAI keeps the id and the detail.
    let o = body(ProviderKind::OpenAi, &r);
    assert_eq!(
        o["messages"][1]["tool_calls"][0]["id"],
        "toolu_01A09q90qw90lq917835lq9"
    );
    assert_eq!(o["messages"][0]["content"][1]["image_url"]["detail"], "low");
    // Images in tool results cannot be sent to the OpenAI family.
    let mut with_img = r.clone();
    with_img.messages[2].content = vec![Part::ToolResult(ToolResult {
        call_id: "x".into(),
        content: vec![ResultPart::Image(Image::Base64 {
            media_type: "image/png".into(),
            data: "AA==".into(),
        })],
        is_error: false,
    })];
    let e = deployment(ProviderKind::OpenAi)
        .chat_request(&with_img)
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(e.deployment_fault(), "another deployment may take it");
}

#[test]
fn urls_and_headers() {
    let azure = Deployment::new(
        ProviderKind::Azure,
        Some("https://r.openai.azure.com/"),
        "dep",
    )
    .unwrap()
    .with_api_version("2025-04-01-preview");
    assert_eq!(
        azure.chat_request(&base()).unwrap().path_and_query,
        "/openai/deployments/dep/chat/completions?api-version=2025-04-01-preview"
    );
    let anthropic_root = Deployment::new(
        ProviderKind::Anthropic,
        Some("https://api.anthropic.com"),
        "c",
    )
    .unwrap();
    assert_eq!(
        anthropic_root.chat_request(&base()).unwrap().path_and_query,
        "/v1/messages"
    );
    let proxied = Deployment::new(
        ProviderKind::Gemini,
        Some("https://gw.test/google/v1beta"),
        "g",
    )
    .unwrap();
    assert_eq!(
        proxied.chat_request(&base()).unwrap().path_and_query,
        "/google/v1beta/models/g:generateContent"
    );
    // No key configured: no auth header (local servers).
    let local = Deployment::new(
        ProviderKind::OpenAiCompatible,
        Some("http://localhost:11434/v1"),
        "llama3",
    )
    .unwrap();
    let req = local.chat_request(&base()).unwrap();
    assert_eq!(req.headers.len(), 2);
    assert!(!req.tls);
    // A key in Debug output of the request shows as Sensitive.
    let keyed = deployment(ProviderKind::Mistral).with_api_key(ApiKey::new("mistral-KEY-value"));
    let dbg = format!("{:?}", keyed.chat_request(&base()).unwrap());
    assert!(!dbg.contains("mistral-KEY-value"));
    assert!(dbg.contains("Sensitive"));
}

#[test]
fn unusual_provider_answers() {
    let openai = deployment(ProviderKind::OpenAi);
    // A refusal, no id.
    let r = openai
        .parse_chat_response(br#"{"choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":"I can't help with that."},"finish_reason":"stop"}]}"#)
        .unwrap();
    assert_eq!(r.text(), "I can't help with that.");
    assert!(r.id.starts_with("chatcmpl-") && r.id.len() > 9);
    assert_eq!(
        r.model, "gpt-4o",
        "the deployment's model when the answer names none"
    );
    assert_eq!(r.usage, None);
    // A compatible server giving arguments as an object and no finish reason.
    let compat = deployment(ProviderKind::OpenAiCompatible);
    let r = compat
        .parse_chat_response(br#"{"id":"x","choices":[{"message":{"tool_calls":[{"id":"t","function":{"name":"f","arguments":{"a":1}}}]}}]}"#)
        .unwrap();
    assert_eq!(r.tool_calls().next().unwrap().arguments, r#"{"a":1}"#);
    assert_eq!(r.finish_reason, FinishReason::ToolCalls);
    // An error object in a 200 body.
    let e = compat
        .parse_chat_response(br#"{"error":{"message":"model overloaded","type":"server_error"}}"#)
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::ProviderError);
    assert!(e.retryable());
    // No choices at all.
    assert_eq!(
        openai
            .parse_chat_response(br#"{"id":"x"}"#)
            .unwrap_err()
            .kind,
        ErrorKind::MalformedResponse
    );
    assert_eq!(
        openai.parse_chat_response(b"<html>").unwrap_err().kind,
        ErrorKind::MalformedResponse
    );

    // Anthropic: thinking skipped, stop sequence named.
    let r = deployment(ProviderKind::Anthropic)
        .parse_chat_response(
            br#"{"id":"msg_x","type":"message","role":"assistant","model":"claude","content":[{"type":"thinking","thinking":"...","signature":"s"},{"type":"text","text":"4"}],"stop_reason":"stop_sequence","stop_sequence":"END","usage":{"input_tokens":10,"output_tokens":3}}"#,
        )
        .unwrap();
    assert_eq!(r.content, vec![OutputPart::Text("4".into())]);
    assert_eq!(
        r.finish_reason,
        FinishReason::StopSequence(Some("END".into()))
    );

    // Gemini: a call with its own id, thoughts skipped, MAX_TOKENS; a blocked prompt.
    let gemini = deployment(ProviderKind::Gemini);
    let r = gemini
        .parse_chat_response(
            br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"plan","thought":true},{"functionCall":{"id":"fc-1","name":"f","args":{}}}]},"finishReason":"MAX_TOKENS"}],"responseId":"r"}"#,
        )
        .unwrap();
    assert_eq!(r.tool_calls().next().unwrap().id, "fc-1");
    assert_eq!(r.text(), "");
    assert_eq!(r.finish_reason, FinishReason::Length);
    let r = gemini
        .parse_chat_response(br#"{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"},"usageMetadata":{"promptTokenCount":7}}"#)
        .unwrap();
    assert_eq!(r.finish_reason, FinishReason::ContentFilter);
    assert!(r.content.is_empty());
    assert!(r.id.starts_with("gemini-"));
    let r = gemini
        .parse_chat_response(
            br#"{"candidates":[{"content":{"parts":[{"text":"x"}]},"finishReason":"SAFETY"}]}"#,
        )
        .unwrap();
    assert_eq!(r.finish_reason, FinishReason::ContentFilter);

    // Tool arguments that are not an object cannot be shown to an Anthropic client.
    let broken = deployment(ProviderKind::OpenAi)
        .parse_chat_response(br#"{"id":"c","choices":[{"message":{"tool_calls":[{"id":"t","function":{"name":"f","arguments":"{\"a\":"}}]},"finish_reason":"tool_calls"}]}"#)
        .unwrap();
    let e = Ingress::Anthropic
        .render_response(&broken, NOW)
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::MalformedResponse);
    assert!(e.retryable());
    // The OpenAI client gets the text as the provider gave it.
    assert!(Ingress::OpenAi.render_response(&broken, NOW).is_ok());
}

fn emb(input: EmbeddingInput, format: EncodingFormat, dims: Option<u32>) -> EmbeddingRequest {
    EmbeddingRequest {
        model: "embed".into(),
        input,
        encoding_format: format,
        dimensions: dims,
        user: Some("u".into()),
    }
}

#[test]
fn embeddings_requests_per_provider() {
    let two = emb(
        EmbeddingInput::Text(vec!["a".into(), "b".into()]),
        EncodingFormat::Base64,
        Some(256),
    );
    let one = emb(
        EmbeddingInput::Text(vec!["a".into()]),
        EncodingFormat::Float,
        None,
    );
    let req = |kind: ProviderKind, dep_model: &str, r: &EmbeddingRequest| {
        let d = match kind {
            ProviderKind::Azure => {
                Deployment::new(kind, Some("https://r.openai.azure.com"), dep_model)
            }
            ProviderKind::OpenAiCompatible => {
                Deployment::new(kind, Some("http://h:1/v1"), dep_model)
            }
            _ => Deployment::new(kind, None, dep_model),
        }
        .unwrap();
        d.embeddings_request(r).map(|u| {
            (
                u.path_and_query,
                serde_json::from_slice::<Value>(&u.body).unwrap(),
            )
        })
    };
    assert_eq!(
        req(ProviderKind::OpenAi, "text-embedding-3-small", &two).unwrap(),
        (
            "/v1/embeddings".to_owned(),
            json!({"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 256, "user": "u"})
        )
    );
    assert_eq!(
        req(ProviderKind::Azure, "emb-dep", &one).unwrap(),
        (
            "/openai/deployments/emb-dep/embeddings?api-version=2024-10-21".to_owned(),
            json!({"input": ["a"], "user": "u"})
        )
    );
    assert_eq!(
        req(ProviderKind::Mistral, "mistral-embed", &two).unwrap(),
        (
            "/v1/embeddings".to_owned(),
            json!({"model": "mistral-embed", "input": ["a", "b"], "output_dimension": 256})
        )
    );
    assert_eq!(
        req(ProviderKind::OpenAiCompatible, "bge", &one).unwrap().0,
        "/v1/embeddings"
    );
    assert_eq!(
        req(ProviderKind::Gemini, "gemini-embedding-001", &one).unwrap(),
        (
            "/v1beta/models/gemini-embedding-001:embedContent".to_owned(),
            json!({"content": {"parts": [{"text": "a"}]}})
        )
    );
    assert_eq!(
        req(ProviderKind::Gemini, "gemini-embedding-001", &two).unwrap(),
        (
            "/v1beta/models/gemini-embedding-001:batchEmbedContents".to_owned(),
            json!({"requests": [
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 256},
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 256}]})
        )
    );
    let tokens = emb(
        EmbeddingInput::Tokens(vec![vec![1, 2]]),
        EncodingFormat::Float,
        None,
    );
    assert_eq!(
        req(ProviderKind::Gemini, "g", &tokens).unwrap_err().kind,
        ErrorKind::Unsupported
    );
    assert_eq!(
        req(ProviderKind::OpenAi, "e", &tokens).unwrap().1["input"],
        json!([[1, 2]])
    );
    assert_eq!(
        req(ProviderKind::Anthropic, "c", &one).unwrap_err().kind,
        ErrorKind::Unsupported
    );
}

#[test]
fn embeddings_responses_per_provider() {
    let two = emb(
        EmbeddingInput::Text(vec!["a".into(), "b".into()]),
        EncodingFormat::Float,
        None,
    );
    let openai = Deployment::new(ProviderKind::OpenAi, None, "text-embedding-3-small").unwrap();
    let r = openai
        .parse_embeddings_response(
            &two,
            br#"{"object":"list","data":[{"object":"embedding","index":1,"embedding":[0.5]},{"object":"embedding","index":0,"embedding":[0.25]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":4,"total_tokens":4}}"#,
        )
        .unwrap();
    assert_eq!(
        r.data,
        vec![Embedding::Float(vec![0.25]), Embedding::Float(vec![0.5])],
        "sorted by index"
    );
    assert_eq!(
        r.usage.map(|u| (u.prompt_tokens, u.total_tokens)),
        Some((4, 4))
    );
    let gemini = Deployment::new(ProviderKind::Gemini, None, "gemini-embedding-001").unwrap();
    let r = gemini
        .parse_embeddings_response(
            &two,
            br#"{"embeddings":[{"values":[0.1,0.2]},{"values":[0.3,0.4]}]}"#,
        )
        .unwrap();
    assert_eq!(
        r.data,
        vec![
            Embedding::Float(vec![0.1, 0.2]),
            Embedding::Float(vec![0.3, 0.4])
        ]
    );
    assert_eq!(r.usage, None, "Gemini reports no usage: unknown, not zero");
    let one = emb(
        EmbeddingInput::Text(vec!["a".into()]),
        EncodingFormat::Float,
        None,
    );
    let r = gemini
        .parse_embeddings_response(&one, br#"{"embedding":{"values":[1.5]}}"#)
        .unwrap();
    assert_eq!(r.data, vec![Embedding::Float(vec![1.5])]);
    let e = gemini
        .parse_embeddings_response(&two, br#"{"embedding":{"values":[1.5]}}"#)
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::MalformedResponse);
}
