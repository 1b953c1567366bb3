//! Deployment routing (weighted, least-latency, cheapest; skipping unhealthy, cooling and
//! over-limit deployments) and the failover plan of one request.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use headwater_llm::catalogue::{Catalogue, DeploymentId};
use headwater_llm::router::transport_error;
use headwater_llm::{
    estimate_tokens, Attempt, AttemptResult, ChatRequest, DeploymentState, ErrorKind, LlmError,
    Message, Outcome, Part, Role, Router, Step, Tool, Usage,
};
use support::{catalogue, ms, secs, Clock};

const NOW_UNIX: u64 = 1_750_000_000;

fn dep(name: &str, extra: &str) -> String {
    format!(
        "[[llm.model.deployment]]\nname = \"{name}\"\nprovider = \"openai-compatible\"\nmodel = \"{name}-upstream\"\nbase_url = \"http://{name}.test:8000/v1\"\n{extra}\n"
    )
}

fn model(name: &str, extra: &str, deps: &[String]) -> String {
    format!(
        "[[llm.model]]\nname = \"{name}\"\n{extra}\n{}",
        deps.concat()
    )
}

fn router(c: &Arc<Catalogue>, now: Instant) -> Router {
    Router::new(c.clone(), 7, now)
}

fn id(c: &Catalogue, model: &str, index: usize) -> DeploymentId {
    c.model(c.model_id(model).unwrap()).deployments[index]
}

fn name(c: &Catalogue, d: DeploymentId) -> &str {
    &c.deployment(d).name
}

fn success(ttft: Duration) -> Outcome {
    Outcome::Success {
        ttft,
        tokens_per_second: None,
    }
}

fn server_error() -> Outcome {
    Outcome::ServerError { status: Some(503) }
}

// ---------------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------------

#[test]
fn weighted_routing_follows_the_weights_exactly() {
    let c = catalogue(&model(
        "w",
        "",
        &[dep("a", "weight = 1"), dep("b", "weight = 3")],
    ));
    let clock = Clock::new();
    let mut r = router(&c, clock.now);
    let m = c.model_id("w").unwrap();
    let mut counts = [0u32; 2];
    for _ in 0..400 {
        let d = r.pick(m, 10, |_| false, clock.now).unwrap();
        counts[c.deployment(d).index] += 1;
        r.finish(d, 10, &success(ms(100)), Some(10), clock.now);
    }
    assert_eq!(counts, [100, 300]);
}

#[test]
fn least_latency_prefers_the_fast_deployment() {
    let c = catalogue(&model(
        "ll",
        "routing = \"least-latency\"",
        &[dep("slow", ""), dep("fast", "")],
    ));
    let mut clock = Clock::new();
    let mut r = router(&c, clock.now);
    let m = c.model_id("ll").unwrap();
    let (slow, fast) = (id(&c, "ll", 0), id(&c, "ll", 1));
    let ttft = |d: DeploymentId| if d == fast { ms(200) } else { ms(2500) };
    let mut fast_picks = 0;
    for _ in 0..200 {
        let t = clock.advance(ms(100));
        let d = r.pick(m, 10, |_| false, t).unwrap();
        if d == fast {
            fast_picks += 1;
        }
        r.finish(d, 10, &success(ttft(d)), Some(10), t);
    }
    // Both get sampled at first (no estimates yet); after that the fast one wins.
    assert!(fast_picks >= 195, "fast picked {fast_picks} of 200");
    let t = clock.now;
    assert!(r.latency_estimate(fast, t).unwrap() < r.latency_estimate(slow, t).unwrap());
    // The fast one starts failing: failures count as 10 s samples, so traffic moves.
    for _ in 0..3 {
        let t = clock.advance(ms(100));
        r.finish(fast, 0, &server_error(), None, t);
    }
    let t = clock.advance(ms(100));
    assert_eq!(r.pick(m, 10, |_| false, t), Some(slow));
}

#[test]
fn cheapest_routing_chooses_by_price_and_skips_unhealthy_ones() {
    let c = catalogue(&model(
        "c",
        "routing = \"cheapest\"",
        &[
            dep("unpriced", ""),
            dep(
                "expensive",
                "price = { input_per_million = 5.0, output_per_million = 15.0 }",
            ),
            dep(
                "cheap",
                "price = { input_per_million = 1.0, output_per_million = 2.0 }",
            ),
            dep(
                "mid",
                "price = { input_per_million = 2.0, output_per_million = 4.0 }",
            ),
        ],
    ));
    let mut clock = Clock::new();
    let mut r = router(&c, clock.now);
    let m = c.model_id("c").unwrap();
    let cheap = id(&c, "c", 2);
    for _ in 0..10 {
        let d = r.pick(m, 10, |_| false, clock.now).unwrap();
        assert_eq!(name(&c, d), "cheap");
        r.finish(d, 10, &success(ms(100)), None, clock.now);
    }
    // Three failures in a row eject the cheap one: the next cheapest takes over.
    for _ in 0..3 {
        r.finish(cheap, 0, &server_error(), None, clock.now);
    }
    assert!(matches!(
        r.health().state(cheap, clock.now),
        DeploymentState::Ejected { .. }
    ));
    let d = r.pick(m, 10, |_| false, clock.now).unwrap();
    assert_eq!(name(&c, d), "mid");
    r.abandon(d, 10, clock.now);
    // Excluded by the caller too: then the expensive one, and the unpriced one last.
    let mid = id(&c, "c", 3);
    let expensive = id(&c, "c", 1);
    let d = r.pick(m, 10, |d| d == mid, clock.now).unwrap();
    assert_eq!(d, expensive);
    let d = r
        .pick(m, 10, |d| d == mid || d == expensive, clock.now)
        .unwrap();
    assert_eq!(name(&c, d), "unpriced");
    // After the ejection (30 s) the cheap one is back.
    let t = clock.advance(secs(30));
    assert_eq!(r.pick(m, 10, |_| false, t), Some(cheap));
}

#[test]
fn cheapest_ties_are_shared_by_weight() {
    let price = "price = { input_per_million = 1.0, output_per_million = 1.0 }";
    let c = catalogue(&model(
        "c",
        "routing = \"cheapest\"",
        &[
            dep("x", &format!("{price}\nweight = 1")),
            dep("y", &format!("{price}\nweight = 3")),
        ],
    ));
    let t = Instant::now();
    let mut r = router(&c, t);
    let m = c.model_id("c").unwrap();
    let mut counts = [0u32; 2];
    for _ in 0..40 {
        let d = r.pick(m, 1, |_| false, t).unwrap();
        counts[c.deployment(d).index] += 1;
        r.finish(d, 1, &success(ms(10)), None, t);
    }
    assert_eq!(counts, [10, 30]);
}

#[test]
fn routing_skips_cooling_and_over_limit_deployments() {
    let c = catalogue(&model(
        "w",
        "",
        &[dep("a", "rpm = 2"), dep("b", "weight = 1")],
    ));
    let mut clock = Clock::new();
    let mut r = router(&c, clock.now);
    let m = c.model_id("w").unwrap();
    let (a, b) = (id(&c, "w", 0), id(&c, "w", 1));
    // `a` rate limited by the provider for 2 s: everything goes to `b`.
    r.finish(
        a,
        0,
        &Outcome::RateLimited {
            retry_after: Some(secs(2)),
        },
        None,
        clock.now,
    );
    for _ in 0..4 {
        let d = r.pick(m, 1, |_| false, clock.now).unwrap();
        assert_eq!(d, b);
        r.finish(d, 1, &success(ms(10)), None, clock.now);
    }
    let t = clock.advance(secs(2));
    // Back; its own RPM (2) then takes it out after two picks.
    let mut picks_a = 0;
    for _ in 0..10 {
        let d = r.pick(m, 1, |_| false, t).unwrap();
        if d == a {
            picks_a += 1;
        }
        r.finish(d, 1, &success(ms(10)), None, t);
    }
    assert_eq!(picks_a, 2);
    assert_eq!(r.limiter(a).remaining(t), (Some(0), None));
}

#[test]
fn token_estimates() {
    let req = ChatRequest {
        model: "m".into(),
        system: vec!["be brief".into()],
        messages: vec![Message {
            role: Role::User,
            content: vec![Part::Text("x".repeat(392))],
        }],
        max_tokens: Some(50),
        ..ChatRequest::default()
    };
    // (8 + 392) / 4 + 50.
    assert_eq!(estimate_tokens(&req), 150);
    // A tool counts its name, description and compact JSON schema (`{"type":"object"}`, 17
    // characters): (8 + 392 + 6 + 4 + 17) / 4, rounded up, + 50.
    let with_tool = ChatRequest {
        tools: vec![Tool {
            name: "lookup".into(),
            description: Some("find".into()),
            parameters: serde_json::json!({"type": "object"}),
            strict: None,
        }],
        ..req
    };
    assert_eq!(estimate_tokens(&with_tool), 157);
}

// ---------------------------------------------------------------------------------------------
// The failover plan
// ---------------------------------------------------------------------------------------------

/// `primary` (p1, p2) falls back to `second` (s1) then `third` (t1); a context overflow goes to
/// `long` (l1). `solo` (x) falls back to `second`.
fn chain_catalogue(failover: &str) -> Arc<Catalogue> {
    catalogue(&format!(
        "{}{}{}{}{}[llm.failover]\n{failover}\n",
        model(
            "primary",
            "fallbacks = [\"second\", \"third\"]\ncontext_fallback = \"long\"",
            &[dep("p1", ""), dep("p2", "")]
        ),
        model("second", "", &[dep("s1", "")]),
        model("third", "", &[dep("t1", "")]),
        model("long", "", &[dep("l1", "")]),
        model("solo", "fallbacks = [\"second\"]", &[dep("x", "")]),
    ))
}

fn provider_error(
    c: &Catalogue,
    d: DeploymentId,
    status: u16,
    body: &str,
    ra: Option<&str>,
) -> LlmError {
    c.deployment(d)
        .deployment
        .parse_error(status, body.as_bytes(), ra)
}

fn failure(error: LlmError) -> AttemptResult {
    AttemptResult::Failure {
        error,
        committed: false,
    }
}

fn http_503(c: &Catalogue, d: DeploymentId) -> AttemptResult {
    failure(provider_error(
        c,
        d,
        503,
        r#"{"error":{"message":"busy","type":"server_error"}}"#,
        None,
    ))
}

fn ok() -> AttemptResult {
    AttemptResult::Success {
        ttft: ms(300),
        tokens_per_second: Some(50.0),
        usage: Some(Usage {
            input_tokens: 10,
            output_tokens: 5,
            ..Usage::default()
        }),
    }
}

fn try_step(step: Step) -> Attempt {
    match step {
        Step::Try(a) => a,
        other => panic!("expected an attempt, got {other:?}"),
    }
}

fn give_up(step: Step) -> LlmError {
    match step {
        Step::GiveUp(e) => e,
        other => panic!("expected to give up, got {other:?}"),
    }
}

#[test]
fn a_failed_deployment_moves_to_the_next_one_at_once() {
    let c = chain_catalogue("");
    let clock = Clock::new();
    let mut r = router(&c, clock.now);
    let mut plan = r.plan(c.model_id("primary").unwrap(), 100, clock.now, NOW_UNIX);
    let a1 = try_step(plan.next(&mut r, clock.now));
    assert_eq!((a1.number, a1.wait, a1.tokens), (1, Duration::ZERO, 100));
    plan.report(
        &mut r,
        &a1,
        failure(transport_error("connection refused")),
        clock.now,
    );
    let a2 = try_step(plan.next(&mut r, clock.now));
    assert_eq!(a2.model, c.model_id("primary").unwrap());
    assert_ne!(a2.deployment, a1.deployment);
    assert_eq!((a2.number, a2.wait), (2, Duration::ZERO));
    plan.report(&mut r, &a2, ok(), clock.now);
    assert_eq!(plan.next(&mut r, clock.now), Step::Done);
    assert_eq!(plan.attempts_made(), 2);
    assert!(plan.fallbacks().is_empty());
    assert_eq!(r.health().counts(a1.deployment).transport, 1);
    assert_eq!(r.health().counts(a2.deployment).success, 1);
}

#[test]
fn when_every_deployment_fails_the_fallback_chain_is_walked_in_order() {
    let c = chain_catalogue("retries_per_deployment = 0\nmax_attempts = 10");
    let clock = Clock::new();
    let mut r = router(&c, clock.now);
    let mut plan = r.plan(c.model_id("primary").unwrap(), 100, clock.now, NOW_UNIX);
    let mut order = Vec::new();
    let err = loop {
        match plan.next(&mut r, clock.now) {
            Step::Try(a) => {
                assert_eq!(a.wait, Duration::ZERO);
                order.push((
                    c.model(a.model).name.clone(),
                    name(&c, a.deployment).to_owned(),
                ));
                plan.report(&mut r, &a, http_503(&c, a.deployment), clock.now);
            }
            Step::GiveUp(e) => break e,
            Step::Done => panic!("nothing succeeded"),
        }
    };
    let models: Vec<&str> = order.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(models, ["primary", "primary", "second", "third"]);
    let mut primaries: Vec<&str> = order[..2].iter().map(|(_, d)| d.as_str()).collect();
    primaries.sort();
    assert_eq!(primaries, ["p1", "p2"]);
    // The answer is the last error.
    assert_eq!(err.kind, ErrorKind::Overloaded);
    assert_eq!(err.provider_status, Some(503));
    let fallbacks: Vec<&str> = plan
        .fallbacks()
        .iter()
        .map(|&m| c.model(m).name.as_str())
        .collect();
    assert_eq!(fallbacks, ["second", "third"]);
    // Asking again repeats the answer.
    assert_eq!(give_up(plan.next(&mut r, clock.now)), err);
}

#[test]
fn a_retryable_failure_retries_the_model_after_a_backoff_before_falling_back() {
    let c = chain_catalogue(
        "retries_per_deployment = 1\nmax_attempts = 10\nbackoff = \"200ms\"\nmax_backoff = \"1s\"",
    );
    let mut clock = Clock::new();
    let mut r = router(&c, clock.now);
    let mut plan = r.plan(c.model_id("primary").unwrap(), 100, clock.now, NOW_UNIX);
    let a1 = try_step(plan.next(&mut r, clock.now));
    plan.report(&mut r, &a1, http_503(&c, a1.deployment), clock.now);
    let a2 = try_step(plan.next(&mut r, clock.now));
    plan.report(&mut r, &a2, http_503(&c, a2.deployment), clock.now);
    // Both tried once: the first retry waits the backoff, equal jitter in [100, 200] ms.
    let a3 = try_step(plan.next(&mut r, clock.now));
    assert_eq!(a3.model, c.model_id("primary").unwrap());
    assert!(a3.wait >= ms(100) && a3.wait <= ms(200), "{:?}", a3.wait);
    clock.advance(a3.wait);
    plan.report(&mut r, &a3, http_503(&c, a3.deployment), clock.now);
    let a4 = try_step(plan.next(&mut r, clock.now));
    assert_eq!(a4.model, c.model_id("primary").unwrap());
    assert_ne!(a4.deployment, a3.deployment);
    clock.advance(a4.wait);
    plan.report(&mut r, &a4, http_503(&c, a4.deployment), clock.now);
    // Retries used up: the fallback, at once.
    let a5 = try_step(plan.next(&mut r, clock.now));
    assert_eq!(c.model(a5.model).name, "second");
    assert_eq!(a5.wait, Duration::ZERO);
}

#[test]
fn a_429_with_retry_after_is_waited_for_within_max_wait() {
    let c = chain_catalogue("max_wait = \"5s\"");
    let clock = Clock::new();
    let mut r = router(&c, clock.now);
    let solo = c.model_id("solo").unwrap();
    let x = id(&c, "solo", 0);
    let mut plan = r.plan(solo, 100, clock.now, NOW_UNIX);
    let a1 = try_step(plan.next(&mut r, clock.now));
    assert_eq!(a1.deployment, x);
    let e = provider_error(
        &c,
        x,
        429,
        r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
        Some("2"),
    );
    assert_eq!(e.kind, ErrorKind::RateLimited);
    plan.report(&mut r, &a1, failure(e), clock.now);
    // Cooling down, not ejected.
    assert_eq!(
        r.health().state(x, clock.now),
        DeploymentState::CoolingDown {
            until: clock.now + secs(2)
        }
    );
    // The same deployment again after its Retry-After (longer than the backoff).
    let a2 = try_step(plan.next(&mut r, clock.now));
    assert_eq!((a2.deployment, a2.wait), (x, secs(2)));
}

#[test]
fn a_429_with_retry_after_beyond_max_wait_skips_the_deployment() {
    let c = chain_catalogue("max_wait = \"1s\"");
    let clock = Clock::new();
    let mut r = router(&c, clock.now);
    let solo = c.model_id("solo").unwrap();
    let x = id(&c, "solo", 0);
    let mut plan = r.plan(solo, 100, clock.now, NOW_UNIX);
    let a1 = try_step(plan.next(&mut r, clock.now));
    let e = provider_error(
        &c,
        x,
        429,
        r#"{"error":{"message":"slow down"}}"#,
        Some("2"),
    );
    plan.report(&mut r, &a1, failure(e), clock.now);
    let a2 = try_step(plan.next(&mut r, clock.now));
    assert_eq!(c.model(a2.model).name, "second");
    assert_eq!(a2.wait, Duration::ZERO);

    // A second request meanwhile does not even try `x` (cooling down 2 s > 1 s).
    let mut other = r.plan(solo, 100, clock.now, NOW_UNIX);
    let b1 = try_step(other.next(&mut r, clock.now));
    assert_eq!(c.model(b1.model).name, "second");
}

#[test]
fn an_http_date_retry_after_is_resolved_against_the_request_clock() {
    let c = chain_catalogue("max_wait = \"5s\"");
    let clock = Clock::new();
    let mut r = router(&c, clock.now);
    let x = id(&c, "solo", 0);
    // 1_750_000_000 is Sun, 15 Jun 2025 15:06:40 GMT; the provider asks for 3 s later.
    let mut plan = r.plan(c.model_id("solo").unwrap(), 1, clock.now, NOW_UNIX);
    let a1 = try_step(plan.next(&mut r, clock.now));
    let e = provider_error(&c, x, 429, "{}", Some("Sun, 15 Jun 2025 15:06:43 GMT"));
    plan.report(&mut r, &a1, failure(e), clock.now);
    let a2 = try_step(plan.next(&mut r, clock.now));
    assert_eq!((a2.deployment, a2.wait), (x, secs(3)));
}

#[test]
fn non_retryable_errors_are_answered_at_once() {
    let c = chain_catalogue("");
    let clock = Clock::new();
    let mut r = router(&c, clock.now);
    let mut plan = r.plan(c.model_id("primary").unwrap(), 100, clock.now, NOW_UNIX);
    let a1 = try_step(plan.next(&mut r, clock.now));
    let e = provider_error(
        &c,
        a1.deployment,
        401,
        r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#,
        None,
    );
    assert_eq!(e.kind, ErrorKind::Authentication);
    plan.report(&mut r, &a1, failure(e.clone()), clock.now);
    assert!(!plan.can_retry(false, clock.now));
    assert_eq!(give_up(plan.next(&mut r, clock.now)), e);
    assert_eq!(plan.attempts_made(), 1);

    // A plain 400 too.
    let mut plan = r.plan(c.model_id("primary").unwrap(), 100, clock.now, NOW_UNIX);
    let a1 = try_step(plan.next(&mut r, clock.now));
    let e = provider_error(
        &c,
        a1.deployment,
        400,
        r#"{"error":{"message":"temperature must be at most 2","type":"invalid_request_error","param":"temperature"}}"#,
        None,
    );
    plan.report(&mut r, &a1, failure(e.clone()), clock.now);
    assert_eq!(give_up(plan.next(&mut r, clock.now)), e);
    // The deployment answered properly: not a failure for health.
    assert_eq!(r.health().counts(a1.deployment).client_error, 1);
}

#[test]
fn deployment_faults_can_be_configured_to_fail_over() {
    let c = chain_catalogue("fail_over_on_deployment_fault = true");
    let clock = Clock::new();
    let mut r = router(&c, clock.now);
    let mut plan = r.plan(c.model_id("primary").unwrap(), 100, clock.now, NOW_UNIX);
    let a1 = try_step(plan.next(&mut r, clock.now));
    let e = provider_error(
        &c,
        a1.deployment,
        401,
        r#"{"error":{"message":"bad key"}}"#,
        None,
    );
    plan.report(&mut r, &a1, failure(e.clone()), clock.now);
    let a2 = try_step(plan.next(&mut r, clock.now));
    assert_ne!(a2.deployment, a1.deployment);
    plan.report(&mut r, &a2, failure(e.clone()), clock.now);
    // Never retried on the same deployment: on to the fallbacks.
    let a3 = try_step(plan.next(&mut r, clock.now));
    assert_eq!(c.model(a3.model).name, "second");
}

#[test]
fn a_context_length_error_moves_to_the_context_fallback() {
    let c = chain_catalogue("");
    let clock = Clock::new();
    let mut r = router(&c, clock.now);
    let mut plan = r.plan(c.model_id("primary").unwrap(), 100, clock.now, NOW_UNIX);
    let a1 = try_step(plan.next(&mut r, clock.now));
    let e = provider_error(
        &c,
        a1.deployment,
        400,
        r#"{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
        None,
    );
    assert!(e.is_context_length_exceeded());
    plan.report(&mut r, &a1, failure(e), clock.now);
    let a2 = try_step(plan.next(&mut r, clock.now));
    assert_eq!(c.model(a2.model).name, "long");
    assert_eq!(name(&c, a2.deployment), "l1");
    plan.report(&mut r, &a2, ok(), clock.now);
    assert_eq!(plan.next(&mut r, clock.now), Step::Done);
    assert_eq!(plan.fallbacks(), [c.model_id("long").unwrap()]);

    // Without a context fallback the error is the answer.
    let mut plan = r.plan(c.model_id("solo").unwrap(), 100, clock.now, NOW_UNIX);
    let a1 = try_step(plan.next(&mut r, clock.now));
    let e = provider_error(
        &c,
        a1.deployment,
        400,
        r#"{"error":{"message":"maximum context length exceeded","code":"context_length_exceeded"}}"#,
        None,
    );
    plan.report(&mut r, &a1, failure(e.clone()), clock.now);
    assert_eq!(give_up(plan.next(&mut r, clock.now)), e);
}

#[test]
fn the_attempt_cap_ends_the_plan() {
    let c = chain_catalogue("max_attempts = 2\nretries_per_deployment = 0");
    let clock = Clock::new();
    let mut r = router(&c, clock.now);
    let mut plan = r.plan(c.model_id("primary").unwrap(), 100, clock.now, NOW_UNIX);
    for _ in 0..2 {
        let a = try_step(plan.next(&mut r, clock.now));
        assert!(plan.can_retry(false, clock.now) || a.number == 2);
        plan.report(&mut r, &a, http_503(&c, a.deployment), clock.now);
    }
    assert!(!plan.can_retry(false, clock.now));
    let e = give_up(plan.next(&mut r, clock.now));
    assert_eq!(e.provider_status, Some(503));
    assert_eq!(plan.attempts_made(), 2);
}

#[test]
fn the_deadline_ends_the_plan_and_bounds_waits() {
    let c = chain_catalogue("deadline = \"10s\"\nmax_wait = \"30s\"");
    let mut clock = Clock::new();
    let mut r = router(&c, clock.now);
    let solo = c.model_id("solo").unwrap();
    let x = id(&c, "solo", 0);
    let mut plan = r.plan(solo, 100, clock.now, NOW_UNIX);
    let a1 = try_step(plan.next(&mut r, clock.now));
    clock.advance(secs(4));
    // Retry-After 8 s would start the retry at 12 s, past the 10 s deadline: the fallback
    // instead.
    let e = provider_error(&c, x, 429, "{}", Some("8"));
    plan.report(&mut r, &a1, failure(e), clock.now);
    let a2 = try_step(plan.next(&mut r, clock.now));
    assert_eq!(c.model(a2.model).name, "second");
    // That one takes until past the deadline and fails: no further attempt.
    clock.advance(secs(7));
    plan.report(&mut r, &a2, http_503(&c, a2.deployment), clock.now);
    assert!(!plan.can_retry(false, clock.now));
    let e = give_up(plan.next(&mut r, clock.now));
    assert_eq!(e.provider_status, Some(503));
}

#[test]
fn a_committed_stream_is_never_retried() {
    let c = chain_catalogue("");
    let clock = Clock::new();
    let mut r = router(&c, clock.now);
    let mut plan = r.plan(c.model_id("primary").unwrap(), 100, clock.now, NOW_UNIX);
    let a1 = try_step(plan.next(&mut r, clock.now));
    assert!(plan.can_retry(false, clock.now));
    assert!(!plan.can_retry(true, clock.now));
    let e = LlmError::new(
        ErrorKind::StreamInterrupted,
        headwater_llm::Origin::Provider(headwater_llm::ProviderKind::OpenAiCompatible),
        "stream ended early",
    );
    plan.report(
        &mut r,
        &a1,
        AttemptResult::Failure {
            error: e.clone(),
            committed: true,
        },
        clock.now,
    );
    assert_eq!(give_up(plan.next(&mut r, clock.now)), e);
    assert_eq!(r.health().counts(a1.deployment).garbage, 1);
}

#[test]
fn ejected_deployments_are_a_last_resort() {
    let c = chain_catalogue("");
    let clock = Clock::new();
    let mut r = router(&c, clock.now);
    let x = id(&c, "solo", 0);
    let s1 = id(&c, "second", 0);
    for d in [x, s1] {
        for _ in 0..3 {
            r.finish(d, 0, &server_error(), None, clock.now);
        }
        assert!(r.health().is_excluded(d, clock.now));
    }
    let mut plan = r.plan(c.model_id("solo").unwrap(), 100, clock.now, NOW_UNIX);
    let a1 = try_step(plan.next(&mut r, clock.now));
    assert_eq!(
        a1.deployment, x,
        "the requested model's own deployment first"
    );
    plan.report(&mut r, &a1, http_503(&c, x), clock.now);
    // One last-resort attempt only.
    assert_eq!(
        give_up(plan.next(&mut r, clock.now)).provider_status,
        Some(503)
    );

    let c = chain_catalogue("last_resort = false");
    let mut r = router(&c, clock.now);
    for d in [x, s1] {
        for _ in 0..3 {
            r.finish(d, 0, &server_error(), None, clock.now);
        }
    }
    let mut plan = r.plan(c.model_id("solo").unwrap(), 100, clock.now, NOW_UNIX);
    let e = give_up(plan.next(&mut r, clock.now));
    assert_eq!(e.kind, ErrorKind::Overloaded);
    assert_eq!(e.origin, headwater_llm::Origin::Gateway);
    assert_eq!(
        e.message,
        "no healthy deployment for model `solo` or its fallbacks"
    );
    assert_eq!(plan.attempts_made(), 0);
}

#[test]
fn when_everything_is_rate_limited_the_answer_is_a_429_with_the_shortest_wait() {
    let c = chain_catalogue("max_wait = \"1s\"");
    let clock = Clock::new();
    let mut r = router(&c, clock.now);
    let x = id(&c, "solo", 0);
    let s1 = id(&c, "second", 0);
    r.finish(
        x,
        0,
        &Outcome::RateLimited {
            retry_after: Some(secs(20)),
        },
        None,
        clock.now,
    );
    r.finish(
        s1,
        0,
        &Outcome::RateLimited {
            retry_after: Some(ms(4500)),
        },
        None,
        clock.now,
    );
    let mut plan = r.plan(c.model_id("solo").unwrap(), 100, clock.now, NOW_UNIX);
    let e = give_up(plan.next(&mut r, clock.now));
    assert_eq!(e.kind, ErrorKind::RateLimited);
    assert_eq!(
        e.retry_after,
        Some(headwater_llm::RetryAfter::Delay(secs(5)))
    );
    assert_eq!(plan.attempts_made(), 0);
}

#[test]
fn deployment_limits_send_the_request_to_the_fallback() {
    let c = catalogue(&format!(
        "{}{}",
        model("a", "fallbacks = [\"b\"]", &[dep("limited", "rpm = 1")]),
        model("b", "", &[dep("spare", "")]),
    ));
    let clock = Clock::new();
    let mut r = router(&c, clock.now);
    let a = c.model_id("a").unwrap();
    let mut p1 = r.plan(a, 10, clock.now, NOW_UNIX);
    let first = try_step(p1.next(&mut r, clock.now));
    assert_eq!(name(&c, first.deployment), "limited");
    // The next request within the minute: 60 s to wait is beyond max_wait (10 s).
    let mut p2 = r.plan(a, 10, clock.now, NOW_UNIX);
    let second = try_step(p2.next(&mut r, clock.now));
    assert_eq!(name(&c, second.deployment), "spare");
    assert_eq!(p2.fallbacks(), [c.model_id("b").unwrap()]);
    // A cancelled attempt gives its reservation back.
    p1.report(&mut r, &first, AttemptResult::Cancelled, clock.now);
    assert!(matches!(p1.next(&mut r, clock.now), Step::GiveUp(_)));
    let mut p3 = r.plan(a, 10, clock.now, NOW_UNIX);
    assert_eq!(
        name(&c, try_step(p3.next(&mut r, clock.now)).deployment),
        "limited"
    );
}

#[test]
fn success_usage_settles_the_token_reservation() {
    let c = catalogue(&model("a", "", &[dep("d", "tpm = 1000")]));
    let clock = Clock::new();
    let mut r = router(&c, clock.now);
    let d = id(&c, "a", 0);
    let mut plan = r.plan(c.model_id("a").unwrap(), 600, clock.now, NOW_UNIX);
    let a1 = try_step(plan.next(&mut r, clock.now));
    assert_eq!(r.limiter(d).remaining(clock.now), (None, Some(400)));
    // It used 15 tokens (the `ok()` usage): 585 come back.
    plan.report(&mut r, &a1, ok(), clock.now);
    assert_eq!(r.limiter(d).remaining(clock.now), (None, Some(985)));
    assert_eq!(r.health().ttft(d), Some(ms(300)));
    assert_eq!(r.health().tokens_per_second(d), Some(50.0));
}

#[test]
fn routing_state_can_move_between_threads() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<Router>();
    send::<headwater_llm::Attempts>();
    send_sync::<Catalogue>();
}
