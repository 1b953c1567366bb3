//! Deployment health: ejection growth and recovery, 429 cool-downs, outcome classification,
//! canary verdicts and the canary's rise/fall, status snapshots.

mod support;

use std::sync::Arc;

use headwater_llm::catalogue::{Catalogue, DeploymentId, Expect};
use headwater_llm::health::{render_health_prometheus, HealthEvent};
use headwater_llm::{
    canary_verdict, ChatResponse, DeploymentHealth, DeploymentState, ErrorKind, FinishReason,
    LlmError, Origin, Outcome, OutputPart, ProviderKind, RetryAfter, Router, Verdict,
};
use serde_json::json;
use support::{catalogue, ms, secs, Clock};

fn two_deployments(health: &str) -> Arc<Catalogue> {
    catalogue(&format!(
        r#"
[[llm.model]]
name = "m"
[[llm.model.deployment]]
name = "a"
provider = "openai"
model = "gpt-4o"
api_key = "k"
[[llm.model.deployment]]
name = "b"
provider = "anthropic"
model = "claude"
api_key = "k"
[llm.health]
{health}
"#
    ))
}

const A: DeploymentId = DeploymentId(0);
const B: DeploymentId = DeploymentId(1);

fn fail(
    h: &mut DeploymentHealth,
    d: DeploymentId,
    n: usize,
    now: std::time::Instant,
) -> Vec<HealthEvent> {
    (0..n)
        .flat_map(|_| h.record(d, &Outcome::ServerError { status: Some(500) }, now))
        .collect()
}

fn ejected(events: &[HealthEvent]) -> Vec<(DeploymentId, u32)> {
    events
        .iter()
        .filter_map(|e| match *e {
            HealthEvent::Ejected {
                deployment, count, ..
            } => Some((deployment, count)),
            _ => None,
        })
        .collect()
}

#[test]
fn ejection_time_grows_with_the_count_is_capped_and_the_count_decays() {
    let c = two_deployments("base_ejection = \"30s\"\nmax_ejection = \"75s\"\ninterval = \"10s\"");
    let mut clock = Clock::new();
    let mut h = DeploymentHealth::new(&c, 1, clock.now);
    let state = |h: &DeploymentHealth, t| h.state(A, t);

    // Two failures: not yet.
    assert!(fail(&mut h, A, 2, clock.now).is_empty());
    assert_eq!(state(&h, clock.now), DeploymentState::Healthy);
    // The third ejects for 30 s.
    let ev = fail(&mut h, A, 1, clock.now);
    let t0 = clock.now;
    assert_eq!(
        ev,
        [HealthEvent::Ejected {
            deployment: A,
            until: t0 + secs(30),
            count: 1,
            gateway: false
        }]
    );
    assert_eq!(
        state(&h, t0 + secs(29)),
        DeploymentState::Ejected {
            until: t0 + secs(30)
        }
    );
    assert!(h.is_excluded(A, t0 + secs(29)));
    assert!(!h.is_excluded(B, t0 + secs(29)));
    // Back at 30 s, even before anything is recorded.
    let t = clock.advance(secs(30));
    assert_eq!(state(&h, t), DeploymentState::Healthy);
    assert_eq!(h.tick(t), [HealthEvent::Returned { deployment: A }]);

    // Failing again at once: count 2, 60 s.
    let t = clock.advance(secs(1));
    let ev = fail(&mut h, A, 3, t);
    assert!(
        matches!(ev[..], [HealthEvent::Ejected { until, count: 2, .. }] if until == t + secs(60))
    );
    // Again: count 3 would be 90 s, capped at 75 s.
    let t = clock.advance(secs(60));
    h.tick(t);
    let ev = fail(&mut h, A, 3, t);
    assert!(
        matches!(ev[..], [HealthEvent::Ejected { until, count: 3, .. }] if until == t + secs(75))
    );

    // Recovery: serving for three intervals after the ejection ended decays the count to 0.
    let t = clock.advance(secs(75));
    h.record(
        A,
        &Outcome::Success {
            ttft: ms(100),
            tokens_per_second: None,
        },
        t,
    );
    let t = clock.advance(secs(30));
    h.tick(t);
    let snap = h.snapshot(&c, t);
    assert_eq!(snap[0].ejection_count, 0);
    // So the next run of failures ejects for the base time again.
    let ev = fail(&mut h, A, 3, t);
    assert!(
        matches!(ev[..], [HealthEvent::Ejected { until, count: 1, .. }] if until == t + secs(30))
    );
}

#[test]
fn transport_failures_eject_as_gateway_failures_and_a_success_breaks_a_run() {
    let c = two_deployments("consecutive_failures = 5\nconsecutive_gateway_failures = 2");
    let clock = Clock::new();
    let t = clock.now;
    let mut h = DeploymentHealth::new(&c, 1, t);
    h.record(A, &Outcome::Timeout, t);
    h.record(
        A,
        &Outcome::Success {
            ttft: ms(10),
            tokens_per_second: None,
        },
        t,
    );
    assert!(h.record(A, &Outcome::Transport, t).is_empty());
    let ev = h.record(A, &Outcome::Garbage, t);
    assert!(matches!(
        ev[..],
        [HealthEvent::Ejected {
            deployment: A,
            gateway: true,
            ..
        }]
    ));
    let counts = h.counts(A);
    assert_eq!(
        (
            counts.timeout,
            counts.transport,
            counts.garbage,
            counts.success
        ),
        (1, 1, 1, 1)
    );
    // Client errors are answers: they break the run too.
    h.record(B, &Outcome::Timeout, t);
    h.record(B, &Outcome::ClientError, t);
    assert!(h.record(B, &Outcome::Timeout, t).is_empty());
}

#[test]
fn at_most_the_configured_share_of_a_model_is_ejected() {
    let c = two_deployments("max_ejection_percent = 50");
    let t = Clock::new().now;
    let mut h = DeploymentHealth::new(&c, 1, t);
    assert_eq!(ejected(&fail(&mut h, A, 3, t)).len(), 1);
    assert!(fail(&mut h, B, 5, t).is_empty(), "half of two is one");
    assert_eq!(h.state(B, t), DeploymentState::Healthy);
}

#[test]
fn a_429_cools_the_deployment_down_without_ejecting_it() {
    let c = two_deployments("rate_limit_cooldown = \"5s\"");
    let mut clock = Clock::new();
    let t0 = clock.now;
    let mut h = DeploymentHealth::new(&c, 1, t0);
    for _ in 0..10 {
        let ev = h.record(
            A,
            &Outcome::RateLimited {
                retry_after: Some(secs(2)),
            },
            t0,
        );
        assert!(ev.is_empty());
    }
    assert_eq!(
        h.state(A, t0),
        DeploymentState::CoolingDown {
            until: t0 + secs(2)
        }
    );
    assert!(!h.is_excluded(A, t0));
    assert_eq!(h.cooldown_left(A, t0 + ms(500)), ms(1500));
    assert_eq!(h.counts(A).rate_limited, 10);
    let t = clock.advance(secs(2));
    assert_eq!(h.state(A, t), DeploymentState::Healthy);
    // Without Retry-After: the policy's cooldown.
    h.record(A, &Outcome::RateLimited { retry_after: None }, t);
    assert_eq!(h.cooldown_left(A, t), secs(5));
    // 429s neither extend nor break a failure run.
    let mut h = DeploymentHealth::new(&c, 1, t);
    fail(&mut h, B, 2, t);
    h.record(B, &Outcome::RateLimited { retry_after: None }, t);
    assert_eq!(ejected(&fail(&mut h, B, 1, t)).len(), 1);
}

#[test]
fn errors_are_classified_for_health() {
    let p = Origin::Provider(ProviderKind::OpenAi);
    let err = |kind, status: Option<u16>| {
        let mut e = LlmError::new(kind, p, "x");
        e.provider_status = status;
        e
    };
    let mut rate = err(ErrorKind::RateLimited, Some(429));
    rate.retry_after = Some(RetryAfter::At(1_000_010));
    assert_eq!(
        Outcome::from_error(&rate, 1_000_000),
        Outcome::RateLimited {
            retry_after: Some(secs(10))
        }
    );
    assert_eq!(
        Outcome::from_error(&err(ErrorKind::Overloaded, Some(529)), 0),
        Outcome::ServerError { status: Some(529) }
    );
    assert_eq!(
        Outcome::from_error(&err(ErrorKind::Authentication, Some(401)), 0),
        Outcome::ServerError { status: Some(401) }
    );
    assert_eq!(
        Outcome::from_error(&headwater_llm::router::transport_error("reset"), 0),
        Outcome::Transport
    );
    assert_eq!(
        Outcome::from_error(&err(ErrorKind::Timeout, Some(504)), 0),
        Outcome::Timeout
    );
    assert_eq!(
        Outcome::from_error(&err(ErrorKind::MalformedResponse, Some(200)), 0),
        Outcome::Garbage
    );
    for kind in [
        ErrorKind::InvalidRequest,
        ErrorKind::ContextLengthExceeded,
        ErrorKind::ContentFiltered,
    ] {
        assert_eq!(
            Outcome::from_error(&err(kind, Some(400)), 0),
            Outcome::ClientError
        );
    }
}

fn answer(text: &str) -> ChatResponse {
    ChatResponse {
        id: "r".into(),
        model: "m".into(),
        created: None,
        content: vec![OutputPart::Text(text.into())],
        finish_reason: FinishReason::Stop,
        usage: None,
    }
}

#[test]
fn canary_verdicts() {
    let contains = Expect::Contains("pong".into());
    assert_eq!(
        canary_verdict(Ok(&answer("Pong.")), &contains),
        Verdict::Pass
    );
    assert_eq!(
        canary_verdict(Ok(&answer("ping")), &contains),
        Verdict::Fail("answer does not contain \"pong\": \"ping\"".into())
    );
    assert_eq!(
        canary_verdict(Ok(&answer("  \n")), &contains),
        Verdict::Fail("empty answer".into())
    );

    let regex = Expect::Regex(regex::Regex::new(r"^\d{2}$").unwrap());
    assert_eq!(canary_verdict(Ok(&answer("42")), &regex), Verdict::Pass);
    assert_eq!(
        canary_verdict(Ok(&answer("forty-two")), &regex),
        Verdict::Fail("answer does not match /^\\d{2}$/: \"forty-two\"".into())
    );

    let field = Expect::JsonField {
        path: "status.items.1.code".into(),
        equals: json!(200),
    };
    let ok = r#"{"status": {"items": [{"code": 1}, {"code": 200.0}]}}"#;
    assert_eq!(canary_verdict(Ok(&answer(ok)), &field), Verdict::Pass);
    let fenced = format!("```json\n{ok}\n```");
    assert_eq!(canary_verdict(Ok(&answer(&fenced)), &field), Verdict::Pass);
    assert_eq!(
        canary_verdict(
            Ok(&answer(
                r#"{"status": {"items": [{"code": 1}, {"code": 500}]}}"#
            )),
            &field
        ),
        Verdict::Fail("field `status.items.1.code` is 500, expected 200".into())
    );
    assert_eq!(
        canary_verdict(Ok(&answer(r#"{"status": {}}"#)), &field),
        Verdict::Fail("field `status.items.1.code` is missing".into())
    );
    assert_eq!(
        canary_verdict(Ok(&answer("Sure! Here is the JSON")), &field),
        Verdict::Fail("answer is not JSON: \"Sure! Here is the JSON\"".into())
    );
    let strings = Expect::JsonField {
        path: "a".into(),
        equals: json!("x"),
    };
    assert_eq!(
        canary_verdict(Ok(&answer(r#"{"a": "x"}"#)), &strings),
        Verdict::Pass
    );

    let mut e = LlmError::new(
        ErrorKind::Overloaded,
        Origin::Provider(ProviderKind::Anthropic),
        "busy",
    );
    e.provider_status = Some(529);
    assert_eq!(
        canary_verdict(Err(&e), &contains),
        Verdict::Fail("error: overloaded (HTTP 529)".into())
    );
}

const CANARY: &str = r#"
[[llm.model]]
name = "m"
[[llm.model.deployment]]
name = "garbage"
provider = "openai-compatible"
model = "llama"
base_url = "http://a.test/v1"
[llm.model.deployment.canary]
prompt = "Reply with the word: pong"
expect = { contains = "pong" }
interval = "30s"
rise = 2
fall = 2
[[llm.model.deployment]]
name = "good"
provider = "openai-compatible"
model = "llama"
base_url = "http://b.test/v1"
"#;

#[test]
fn a_deployment_answering_garbage_is_taken_out_by_its_canary() {
    let c = catalogue(CANARY);
    let mut clock = Clock::new();
    let mut r = Router::new(c.clone(), 3, clock.now);
    let m = c.model_id("m").unwrap();
    let garbage = DeploymentId(0);
    let expect = &c.deployment(garbage).canary.as_ref().unwrap().expect;

    // Passive checks see nothing wrong: it answers 200 quickly.
    for _ in 0..5 {
        r.health_mut().record(
            garbage,
            &Outcome::Success {
                ttft: ms(50),
                tokens_per_second: None,
            },
            clock.now,
        );
    }
    assert_eq!(
        r.health().state(garbage, clock.now),
        DeploymentState::Healthy
    );

    // Within one interval the first canary is due; only this deployment has one.
    let t = clock.advance(secs(30));
    assert_eq!(r.health().canaries_due(t), [garbage]);
    assert!(r.health().next_canary_due().unwrap() <= t);
    r.health_mut().canary_started(garbage, t);
    assert!(r.health().canaries_due(t).is_empty(), "in flight");
    let verdict = canary_verdict(Ok(&answer("lorem ipsum dolor")), expect);
    assert!(matches!(verdict, Verdict::Fail(_)));
    assert_eq!(
        r.health_mut().record_canary(garbage, &verdict, t),
        None,
        "fall = 2"
    );
    assert_eq!(r.health().state(garbage, t), DeploymentState::Healthy);

    let t = clock.advance(secs(30));
    assert_eq!(r.health().canaries_due(t), [garbage]);
    r.health_mut().canary_started(garbage, t);
    assert_eq!(
        r.health_mut().record_canary(garbage, &verdict, t),
        Some(HealthEvent::Canary {
            deployment: garbage,
            failing: true
        })
    );
    assert_eq!(r.health().state(garbage, t), DeploymentState::CanaryFailing);
    assert!(r.health().is_excluded(garbage, t));
    for _ in 0..10 {
        let d = r.pick(m, 1, |_| false, t).unwrap();
        assert_eq!(c.deployment(d).name, "good");
        r.abandon(d, 1, t);
    }
    let snap = &r.health().snapshot(&c, t)[0];
    assert_eq!(snap.state, "canary_failing");
    let canary = snap.canary.as_ref().unwrap();
    assert!(!canary.passing);
    assert_eq!(canary.consecutive_failures, 2);
    assert_eq!(
        snap.last_failure.as_ref().unwrap().what,
        "canary: answer does not contain \"pong\": \"lorem ipsum dolor\""
    );

    // Two passes bring it back.
    let pass = canary_verdict(Ok(&answer("pong")), expect);
    let t = clock.advance(secs(30));
    assert_eq!(
        r.health_mut().record_canary(garbage, &pass, t),
        None,
        "rise = 2"
    );
    let t = clock.advance(secs(30));
    assert_eq!(
        r.health_mut().record_canary(garbage, &pass, t),
        Some(HealthEvent::Canary {
            deployment: garbage,
            failing: false
        })
    );
    assert_eq!(r.health().state(garbage, t), DeploymentState::Healthy);
}

#[test]
fn snapshots_for_status_and_metrics() {
    let c = two_deployments("");
    let mut clock = Clock::new();
    let mut h = DeploymentHealth::new(&c, 1, clock.now);
    let t = clock.now;
    h.record(
        A,
        &Outcome::Success {
            ttft: ms(400),
            tokens_per_second: Some(40.0),
        },
        t,
    );
    h.record(
        A,
        &Outcome::Success {
            ttft: ms(900),
            tokens_per_second: Some(90.0),
        },
        t,
    );
    h.record(
        B,
        &Outcome::RateLimited {
            retry_after: Some(secs(3)),
        },
        t,
    );
    let t = clock.advance(secs(1));
    let snap = h.snapshot(&c, t);
    assert_eq!(snap.len(), 2);
    // EWMA weight 0.2: 400 + 0.2 × 500 ms, 40 + 0.2 × 50 tokens/s.
    assert_eq!(snap[0].ttft_ms, Some(500.0));
    assert_eq!(snap[0].tokens_per_second, Some(50.0));
    assert_eq!(h.ttft(A), Some(ms(500)));
    let json = serde_json::to_value(&snap[1]).unwrap();
    assert_eq!(
        json,
        json!({
            "model": "m",
            "deployment": "b",
            "provider": "anthropic",
            "state": "cooling_down",
            "until_ms": 2000,
            "ejection_count": 0,
            "last_failure": {"ago_ms": 1000, "what": "rate limited (retry after 3.0s)"},
            "ttft_ms": null,
            "tokens_per_second": null,
            "canary": null,
            "counts": {"success": 0, "rate_limited": 1, "server_error": 0, "timeout": 0,
                       "transport": 0, "garbage": 0, "client_error": 0}
        })
    );

    let mut text = String::new();
    render_health_prometheus(&snap, &mut text);
    let expected = "\
# HELP headwater_llm_deployment_state Deployment state: 1 for the current one.
# TYPE headwater_llm_deployment_state gauge
headwater_llm_deployment_state{model=\"m\",deployment=\"a\",state=\"healthy\"} 1
headwater_llm_deployment_state{model=\"m\",deployment=\"a\",state=\"cooling_down\"} 0
headwater_llm_deployment_state{model=\"m\",deployment=\"a\",state=\"ejected\"} 0
headwater_llm_deployment_state{model=\"m\",deployment=\"a\",state=\"canary_failing\"} 0
headwater_llm_deployment_state{model=\"m\",deployment=\"b\",state=\"healthy\"} 0
headwater_llm_deployment_state{model=\"m\",deployment=\"b\",state=\"cooling_down\"} 1
headwater_llm_deployment_state{model=\"m\",deployment=\"b\",state=\"ejected\"} 0
headwater_llm_deployment_state{model=\"m\",deployment=\"b\",state=\"canary_failing\"} 0
# HELP headwater_llm_deployment_ttft_seconds EWMA of the time to first token.
# TYPE headwater_llm_deployment_ttft_seconds gauge
headwater_llm_deployment_ttft_seconds{model=\"m\",deployment=\"a\"} 0.5
# HELP headwater_llm_deployment_tokens_per_second EWMA of the output tokens per second.
# TYPE headwater_llm_deployment_tokens_per_second gauge
headwater_llm_deployment_tokens_per_second{model=\"m\",deployment=\"a\"} 50
# HELP headwater_llm_deployment_outcomes_total Attempts by outcome.
# TYPE headwater_llm_deployment_outcomes_total counter
headwater_llm_deployment_outcomes_total{model=\"m\",deployment=\"a\",outcome=\"success\"} 2
headwater_llm_deployment_outcomes_total{model=\"m\",deployment=\"a\",outcome=\"rate_limited\"} 0
headwater_llm_deployment_outcomes_total{model=\"m\",deployment=\"a\",outcome=\"server_error\"} 0
headwater_llm_deployment_outcomes_total{model=\"m\",deployment=\"a\",outcome=\"timeout\"} 0
headwater_llm_deployment_outcomes_total{model=\"m\",deployment=\"a\",outcome=\"transport\"} 0
headwater_llm_deployment_outcomes_total{model=\"m\",deployment=\"a\",outcome=\"garbage\"} 0
headwater_llm_deployment_outcomes_total{model=\"m\",deployment=\"a\",outcome=\"client_error\"} 0
headwater_llm_deployment_outcomes_total{model=\"m\",deployment=\"b\",outcome=\"success\"} 0
headwater_llm_deployment_outcomes_total{model=\"m\",deployment=\"b\",outcome=\"rate_limited\"} 1
headwater_llm_deployment_outcomes_total{model=\"m\",deployment=\"b\",outcome=\"server_error\"} 0
headwater_llm_deployment_outcomes_total{model=\"m\",deployment=\"b\",outcome=\"timeout\"} 0
headwater_llm_deployment_outcomes_total{model=\"m\",deployment=\"b\",outcome=\"transport\"} 0
headwater_llm_deployment_outcomes_total{model=\"m\",deployment=\"b\",outcome=\"garbage\"} 0
headwater_llm_deployment_outcomes_total{model=\"m\",deployment=\"b\",outcome=\"client_error\"} 0
";
    assert_eq!(text, expected);
}
