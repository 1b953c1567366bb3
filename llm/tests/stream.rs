//! Stream decoding and translation beyond the happy path: every provider stream decodes to
//! the same canonical events at every split point; output is held back until the first
//! content token (invisible failover) and an error after it is rendered as an explicit error
//! event in each client format, never as a clean end; truncated streams, provider error
//! events and streams without usage.

mod common;

use common::*;
use headwater_llm::{
    ErrorKind, FinishReason, Ingress, LlmError, Origin, Prices, ProviderKind, StreamEvent,
    StreamState, StreamTranslator, Usage,
};
use serde_json::Value;

fn decode(kind: ProviderKind, pieces: &[&[u8]]) -> Vec<StreamEvent> {
    let mut d = deployment(kind).stream_decoder();
    let mut out = Vec::new();
    for p in pieces {
        d.feed(p, &mut out);
    }
    d.finish(&mut out);
    out
}

#[test]
fn every_provider_stream_decodes_identically_at_every_split_point() {
    for kind in ProviderKind::ALL {
        for scenario in ["text", "tools"] {
            let body = fixture(&format!("{}_stream_{scenario}.sse", slug(kind)));
            let whole = decode(kind, &[&body]);
            assert!(
                matches!(whole.first(), Some(StreamEvent::Start { .. })),
                "{kind:?}"
            );
            assert_eq!(
                whole.last(),
                Some(&StreamEvent::Done),
                "{kind:?} {scenario}"
            );
            let bytes: Vec<&[u8]> = body.chunks(1).collect();
            assert_eq!(
                decode(kind, &bytes),
                whole,
                "{kind:?} {scenario} byte by byte"
            );
            for i in 0..=body.len() {
                let (a, b) = body.split_at(i);
                assert_eq!(
                    decode(kind, &[a, b]),
                    whole,
                    "{kind:?} {scenario} split at {i}"
                );
            }
        }
    }
}

#[test]
fn openai_tool_arguments_split_across_chunks_arrive_in_order() {
    let events = decode(ProviderKind::OpenAi, &[&fixture("openai_stream_tools.sse")]);
    let tool_events: Vec<_> = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                StreamEvent::ToolCallStart { .. } | StreamEvent::ToolCallDelta { .. }
            )
        })
        .cloned()
        .collect();
    let start = |index, id: &str, name: &str| StreamEvent::ToolCallStart {
        index,
        id: id.into(),
        name: name.into(),
    };
    let delta = |index, a: &str| StreamEvent::ToolCallDelta {
        index,
        arguments: a.into(),
    };
    assert_eq!(
        tool_events,
        vec![
            start(0, "call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather"),
            delta(0, "{\"ci"),
            delta(0, "ty\":\"Pa"),
            delta(0, "ris\"}"),
            start(1, "call_ABTjEjS4x5tmn1ldJsGNTS5L", "get_time"),
            delta(1, "{\"timezone\":"),
            delta(1, "\"Europe/Paris\"}"),
        ]
    );
    // Finish, then usage, then the end.
    let n = events.len();
    assert_eq!(events[n - 3], StreamEvent::Finish(FinishReason::ToolCalls));
    assert!(matches!(
        events[n - 2],
        StreamEvent::Usage(Usage {
            input_tokens: 120,
            output_tokens: 40,
            cached_input_tokens: 64,
            ..
        })
    ));
    assert_eq!(events[n - 1], StreamEvent::Done);
}

#[test]
fn parallel_calls_sharing_an_index_are_told_apart_by_id() {
    let body = b"data: {\"id\":\"x\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[\
{\"id\":\"aaaaaaaaa\",\"index\":0,\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}},\
{\"id\":\"bbbbbbbbb\",\"index\":0,\"function\":{\"name\":\"g\",\"arguments\":\"{\\\"k\\\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n";
    let events = decode(ProviderKind::Mistral, &[body]);
    let starts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolCallStart { index, id, name } => {
                Some((*index, id.as_str(), name.as_str()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(starts, vec![(0, "aaaaaaaaa", "f"), (1, "bbbbbbbbb", "g")]);
    assert!(events.contains(&StreamEvent::ToolCallDelta {
        index: 1,
        arguments: "{\"k\":1}".into()
    }));
}

/// An OpenAI stream that fails before its first content token.
const EARLY_FAILURE: &[u8] = b"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n\
data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n";

#[test]
fn a_failure_before_the_first_token_sends_nothing_so_failover_is_invisible() {
    for ingress in [Ingress::OpenAi, Ingress::Anthropic] {
        let mut t = StreamTranslator::new(ingress, &deployment(ProviderKind::OpenAi), true, NOW);
        let err = t.feed(EARLY_FAILURE).unwrap_err();
        assert_eq!(err.kind, ErrorKind::ProviderError);
        assert!(err.retryable());
        assert!(!t.committed());
        assert_eq!(t.state(), StreamState::UpstreamFailed);
        // Nothing more comes out of a failed upstream.
        assert!(t.feed(b"data: [DONE]\n\n").unwrap().is_empty());
        // The failover attempt: a fresh translator on another deployment, whose output is
        // the whole client stream.
        let mut t2 =
            StreamTranslator::new(ingress, &deployment(ProviderKind::Anthropic), true, NOW);
        let mut out = t2
            .feed(&fixture("anthropic_stream_text.sse"))
            .unwrap()
            .to_vec();
        out.extend_from_slice(&t2.finish().unwrap());
        let r = match ingress {
            Ingress::OpenAi => rebuild_openai(&out, true),
            Ingress::Anthropic => rebuild_anthropic(&out),
        };
        assert_eq!(r.text, HELLO);
    }
}

#[test]
fn output_is_held_until_the_first_content_token() {
    let body = fixture("anthropic_stream_text.sse");
    let text = std::str::from_utf8(&body).unwrap();
    let first_delta = text.find("event: content_block_delta").unwrap();
    let mut t = StreamTranslator::new(
        Ingress::OpenAi,
        &deployment(ProviderKind::Anthropic),
        false,
        NOW,
    );
    // message_start, content_block_start and a ping: no content yet.
    assert!(t.feed(&body[..first_delta]).unwrap().is_empty());
    assert!(!t.committed());
    assert_eq!(t.state(), StreamState::Pending);
    let released = t.feed(&body[first_delta..]).unwrap();
    assert!(t.committed());
    let s = std::str::from_utf8(&released).unwrap();
    // The held role chunk comes out first, then the text.
    assert!(
        s.starts_with("data: {\"id\":\"msg_013Zva2CMHLNnXjNJJKqJ2EF\""),
        "{s}"
    );
    assert!(s.contains("\"role\":\"assistant\""));
    assert!(s.contains("Bonjour"));
}

#[test]
fn an_empty_answer_is_released_at_its_end() {
    let body = b"data: {\"id\":\"c\",\"model\":\"m\",\"created\":5,\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c\",\"model\":\"m\",\"created\":5,\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n";
    let mut t = StreamTranslator::new(
        Ingress::OpenAi,
        &deployment(ProviderKind::OpenAi),
        false,
        NOW,
    );
    let out = t.feed(body).unwrap();
    assert!(!t.committed());
    assert_eq!(t.state(), StreamState::Closed);
    let r = rebuild_openai(&out, false);
    assert_eq!((r.text.as_str(), r.finish.as_str()), ("", "length"));
}

/// The first half of the Anthropic tools stream (text sent), then an overload event.
fn committed_then_failing() -> Vec<u8> {
    let body = fixture("anthropic_stream_tools.sse");
    let cut = std::str::from_utf8(&body)
        .unwrap()
        .find("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1")
        .unwrap();
    let mut v = body[..cut].to_vec();
    v.extend_from_slice(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n");
    v
}

#[test]
fn a_failure_after_the_first_token_is_an_explicit_openai_error_event() {
    let mut t = StreamTranslator::new(
        Ingress::OpenAi,
        &deployment(ProviderKind::Anthropic),
        true,
        NOW,
    );
    let err = t.feed(&committed_then_failing()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Overloaded);
    assert!(t.committed());
    let mut out = Vec::new();
    out.extend_from_slice(&t.fail(&err));
    assert_eq!(t.state(), StreamState::Closed);
    assert!(t.fail(&err).is_empty(), "the error is rendered once");
    let events = sse_events(&out);
    let last: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(last["error"]["type"], "server_error");
    assert_eq!(last["error"]["code"], "overloaded");
    assert_eq!(last["error"]["message"], "Overloaded");
    assert!(
        events.iter().all(|e| e.data != "[DONE]"),
        "no clean end after a failure"
    );
    let text: String = events[..events.len() - 1]
        .iter()
        .filter_map(|e| {
            let v: Value = serde_json::from_str(&e.data).ok()?;
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "Checking both.");
}

#[test]
fn a_failure_after_the_first_token_is_an_explicit_anthropic_error_event() {
    let mut t = StreamTranslator::new(
        Ingress::Anthropic,
        &deployment(ProviderKind::Anthropic),
        true,
        NOW,
    );
    let err = t.feed(&committed_then_failing()).unwrap_err();
    let out = t.fail(&err);
    let events = sse_events(&out);
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    assert_eq!(
        serde_json::from_str::<Value>(&last.data).unwrap(),
        serde_json::json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    let names: Vec<_> = events.iter().filter_map(|e| e.event.as_deref()).collect();
    assert!(!names.contains(&"message_stop") && !names.contains(&"message_delta"));
}

#[test]
fn engine_detected_failures_render_through_fail_too() {
    let body = fixture("gemini_stream_text.sse");
    let mut t = StreamTranslator::new(
        Ingress::Anthropic,
        &deployment(ProviderKind::Gemini),
        true,
        NOW,
    );
    // Only the first chunk arrives, then the engine's read timeout fires.
    let first_end = body.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let sent = t.feed(&body[..first_end]).unwrap();
    assert!(t.committed());
    let timeout = LlmError::new(
        ErrorKind::Timeout,
        Origin::Gateway,
        "upstream read timed out after 30s",
    );
    let out = [sent.to_vec(), t.fail(&timeout).to_vec()].concat();
    let events = sse_events(&out);
    assert_eq!(events.last().unwrap().event.as_deref(), Some("error"));
    let v: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(v["error"]["type"], "api_error");
    assert_eq!(v["error"]["message"], "upstream read timed out after 30s");
    // After fail, the rest of the upstream body is ignored.
    assert!(t.feed(&body[first_end..]).unwrap().is_empty());
}

#[test]
fn truncated_streams_are_errors_for_every_provider() {
    for kind in ProviderKind::ALL {
        let body = fixture(&format!("{}_stream_text.sse", slug(kind)));
        // Cut after the first text has been sent, before the provider's end.
        let s = std::str::from_utf8(&body).unwrap();
        let cut = s.find("Bonjour").unwrap();
        let cut = cut
            + s[cut..]
                .find("\n\n")
                .or_else(|| s[cut..].find("\r\n\r\n"))
                .unwrap()
            + 2;
        let mut t = StreamTranslator::new(Ingress::OpenAi, &deployment(kind), true, NOW);
        t.feed(&body[..cut]).unwrap();
        let err = t.finish().unwrap_err();
        assert_eq!(err.kind, ErrorKind::StreamInterrupted, "{kind:?}");
        assert!(err.retryable());
        assert_eq!(err.origin, Origin::Provider(kind));
        assert!(t.committed(), "{kind:?}");
    }
}

#[test]
fn done_without_finish_reason_is_not_a_clean_end() {
    let body = b"data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\ndata: [DONE]\n\n";
    let events = decode(ProviderKind::OpenAiCompatible, &[body]);
    assert!(
        matches!(events.last(), Some(StreamEvent::Error(e)) if e.kind == ErrorKind::StreamInterrupted)
    );
}

#[test]
fn a_stream_without_usage_has_unknown_usage_and_cost() {
    let (mut t, body) = (
        StreamTranslator::new(
            Ingress::OpenAi,
            &deployment(ProviderKind::OpenAiCompatible),
            true,
            NOW,
        ),
        fixture("compatible_stream_tools.sse"),
    );
    t.feed(&body).unwrap();
    t.finish().unwrap();
    assert_eq!(t.usage(), None);
    assert_eq!(Prices::new(1.0, 2.0).cost(t.usage().as_ref()), None);
    // And with usage, the cost follows the provider's counts.
    let mut t = StreamTranslator::new(
        Ingress::OpenAi,
        &deployment(ProviderKind::Anthropic),
        true,
        NOW,
    );
    t.feed(&fixture("anthropic_stream_tools.sse")).unwrap();
    t.finish().unwrap();
    let u = t.usage().unwrap();
    assert_eq!(
        (u.input_tokens, u.cached_input_tokens, u.output_tokens),
        (1404, 1024, 72)
    );
    let prices = Prices {
        cached_input_per_million: Some(0.3),
        ..Prices::new(3.0, 15.0)
    };
    let cost = prices.cost(Some(&u)).unwrap();
    let want = (380.0 * 3.0 + 1024.0 * 0.3 + 72.0 * 15.0) / 1e6;
    assert!((cost - want).abs() < 1e-12, "{cost} vs {want}");
}

#[test]
fn gemini_prompt_blocked_stream_ends_with_content_filter() {
    let body = b"data: {\"promptFeedback\":{\"blockReason\":\"SAFETY\"},\"usageMetadata\":{\"promptTokenCount\":8,\"totalTokenCount\":8},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"r1\"}\r\n\r\n";
    let mut t = StreamTranslator::new(
        Ingress::OpenAi,
        &deployment(ProviderKind::Gemini),
        true,
        NOW,
    );
    let mut out = t.feed(body).unwrap().to_vec();
    out.extend_from_slice(&t.finish().unwrap());
    let r = rebuild_openai(&out, true);
    assert_eq!(r.finish, "content_filter");
    assert_eq!(r.text, "");
    assert_eq!(t.usage().map(|u| u.input_tokens), Some(8));
}

#[test]
fn anthropic_thinking_blocks_are_skipped_in_streams() {
    let body = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_t\",\"model\":\"claude\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQB\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"42\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":30}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let mut t = StreamTranslator::new(
        Ingress::Anthropic,
        &deployment(ProviderKind::Anthropic),
        true,
        NOW,
    );
    let out = t.feed(body).unwrap();
    let r = rebuild_anthropic(&out);
    assert_eq!(r.text, "42");
    assert_eq!(r.finish, "max_tokens");
    // The client's stream renumbers its blocks from 0.
    assert!(std::str::from_utf8(&out)
        .unwrap()
        .contains("\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"42\"}"));
}
