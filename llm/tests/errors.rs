//! Provider error mapping, table-driven from `fixtures/errors.json` (bodies as each provider
//! documents or is seen to send them): kind, retryable, deployment fault, context-length
//! recognition, `Retry-After` (header seconds, HTTP-date, Gemini `RetryInfo`), the provider's
//! code, and the status and body each ingress format renders — with the provider's words about
//! the gateway's own key never reaching the client.

mod common;

use std::time::Duration;

use common::*;
use headwater_llm::{ErrorKind, Ingress, LlmError, Origin, ProviderKind, RetryAfter};
use serde_json::{json, Value};

#[test]
fn provider_errors_map_as_documented() {
    let cases = fixture_json("errors.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 25);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let kind = ProviderKind::parse(c["provider"].as_str().unwrap()).unwrap();
        let status = c["status"].as_u64().unwrap() as u16;
        let e = &c["expect"];
        let err = deployment(kind).parse_error(
            status,
            c["body"].as_str().unwrap().as_bytes(),
            c["retry_after"].as_str(),
        );
        assert_eq!(
            err.kind.as_str(),
            e["kind"].as_str().unwrap(),
            "{name}: {err}"
        );
        assert_eq!(err.origin, Origin::Provider(kind), "{name}");
        assert_eq!(err.provider_status, Some(status), "{name}");
        assert_eq!(err.retryable(), e["retryable"].as_bool().unwrap(), "{name}");
        assert_eq!(
            err.deployment_fault(),
            e["deployment_fault"].as_bool().unwrap(),
            "{name}"
        );
        assert_eq!(
            err.is_context_length_exceeded(),
            e["kind"] == "context_length_exceeded",
            "{name}"
        );
        let retry = match (e["retry_after_ms"].as_u64(), e["retry_at"].as_u64()) {
            (Some(ms), _) => Some(RetryAfter::Delay(Duration::from_millis(ms))),
            (_, Some(at)) => Some(RetryAfter::At(at)),
            _ => None,
        };
        assert_eq!(err.retry_after, retry, "{name}");
        assert_eq!(err.provider_code.as_deref(), e["code"].as_str(), "{name}");
        assert_eq!(err.param.as_deref(), e["param"].as_str(), "{name}");
        if let Some(fragment) = e["message_contains"].as_str() {
            assert!(err.message.contains(fragment), "{name}: {}", err.message);
        }
        for (ingress, key) in [
            (Ingress::OpenAi, "openai_status"),
            (Ingress::Anthropic, "anthropic_status"),
        ] {
            let r = ingress.render_error(&err);
            assert_eq!(
                u64::from(r.status),
                e[key].as_u64().unwrap(),
                "{name} → {ingress:?}"
            );
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            let message = match ingress {
                Ingress::OpenAi => body["error"]["message"].as_str().unwrap().to_owned(),
                Ingress::Anthropic => {
                    assert_eq!(body["type"], "error");
                    body["error"]["message"].as_str().unwrap().to_owned()
                }
            };
            assert!(!message.is_empty(), "{name}");
            if let Some(hidden) = e["hidden"].as_str() {
                assert!(
                    !String::from_utf8_lossy(&r.body).contains(hidden),
                    "{name}: provider words about the key leak"
                );
            }
        }
    }
}

#[test]
fn rendered_error_bodies_have_each_format_exactly() {
    let ctx = deployment(ProviderKind::Anthropic).parse_error(
        400,
        br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208310 tokens > 200000 maximum"}}"#,
        None,
    );
    let r = Ingress::OpenAi.render_error(&ctx);
    assert_eq!(r.status, 400);
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap(),
        json!({"error": {"message": "prompt is too long: 208310 tokens > 200000 maximum",
            "type": "invalid_request_error", "param": null, "code": "context_length_exceeded"}})
    );
    let over = deployment(ProviderKind::Gemini).parse_error(
        503,
        br#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#,
        None,
    );
    let r = Ingress::Anthropic.render_error(&over);
    assert_eq!(r.status, 529);
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap(),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "The model is overloaded. Please try again later."}})
    );
    let auth = deployment(ProviderKind::OpenAi).parse_error(
        401,
        br#"{"error":{"message":"Incorrect API key provided: sk-abc***xyz9.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
        None,
    );
    let r = Ingress::OpenAi.render_error(&auth);
    assert_eq!(r.status, 502);
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap(),
        json!({"error": {"message": "the upstream provider (openai) rejected the gateway's credentials",
            "type": "server_error", "param": null, "code": "upstream_authentication"}})
    );
}

#[test]
fn client_errors_render_with_the_field() {
    let err = LlmError::client(
        "messages[1].content[0].type",
        "`messages[1].content[0].type` has unknown type `video`",
    );
    let r = Ingress::OpenAi.render_error(&err);
    assert_eq!(r.status, 400);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"]["param"], "messages[1].content[0].type");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], "invalid_request");
    let r = Ingress::Anthropic.render_error(&err);
    assert_eq!(r.status, 400);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "invalid_request_error",
            "message": "`messages[1].content[0].type` has unknown type `video`"}})
    );
}

#[test]
fn errors_inside_streams_carry_no_status_but_keep_their_kind() {
    // An Anthropic `event: error` mid-stream.
    let mut d = deployment(ProviderKind::Anthropic).stream_decoder();
    let mut out = Vec::new();
    d.feed(
        b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n\
event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        &mut out,
    );
    let err = match out.last() {
        Some(headwater_llm::StreamEvent::Error(e)) => e.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(err.kind, ErrorKind::Overloaded);
    assert_eq!(err.provider_status, None);
    assert!(err.retryable());
    assert!(d.is_closed());
}
