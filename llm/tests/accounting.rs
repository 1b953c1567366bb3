//! Per-request records (access-log JSON) and the ledger's Prometheus rendering, as exact
//! strings.

mod support;

use std::time::Duration;

use headwater_llm::router::transport_error;
use headwater_llm::{
    AttemptResult, ErrorKind, Ledger, ProviderKind, RequestOutcome, RequestRecord, Router, Step,
    Usage,
};
use support::{catalogue, ms, Clock};

fn record() -> RequestRecord {
    RequestRecord {
        model: "gpt-4o".into(),
        deployment: Some("openai/gpt-4o-2024-08-06".into()),
        provider: Some(ProviderKind::OpenAi),
        key: Some("team-a".into()),
        usage: Some(Usage {
            input_tokens: 1200,
            output_tokens: 300,
            cached_input_tokens: 1000,
            cache_write_input_tokens: 0,
            reasoning_tokens: 0,
        }),
        cost_usd: Some(0.00375),
        latency: ms(1840),
        ttft: Some(ms(420)),
        attempts: 2,
        fallbacks: vec!["claude-sonnet".into()],
        outcome: RequestOutcome::Success,
        stream: true,
    }
}

#[test]
fn a_record_renders_as_one_json_line() {
    assert_eq!(
        record().to_json(),
        r#"{"model":"gpt-4o","deployment":"openai/gpt-4o-2024-08-06","provider":"openai","key":"team-a","outcome":"success","stream":true,"input_tokens":1200,"output_tokens":300,"cached_tokens":1000,"cost_usd":0.00375,"latency_ms":1840,"ttft_ms":420,"attempts":2,"fallbacks":["claude-sonnet"]}"#
    );
    let unknown = RequestRecord {
        usage: None,
        cost_usd: None,
        ttft: None,
        key: None,
        fallbacks: vec![],
        outcome: RequestOutcome::Failed(ErrorKind::Overloaded),
        stream: false,
        ..record()
    };
    assert_eq!(
        unknown.to_json(),
        r#"{"model":"gpt-4o","deployment":"openai/gpt-4o-2024-08-06","provider":"openai","key":null,"outcome":"overloaded","stream":false,"input_tokens":null,"output_tokens":null,"cached_tokens":null,"cost_usd":null,"latency_ms":1840,"ttft_ms":null,"attempts":2,"fallbacks":[]}"#
    );
    assert_eq!(
        RequestRecord::rejected("gpt-4o", Some("team-a"), "budget_exceeded").to_json(),
        r#"{"model":"gpt-4o","deployment":null,"provider":null,"key":"team-a","outcome":"budget_exceeded","stream":false,"input_tokens":null,"output_tokens":null,"cached_tokens":null,"cost_usd":null,"latency_ms":0,"ttft_ms":null,"attempts":0,"fallbacks":[]}"#
    );
}

#[test]
fn the_ledger_renders_prometheus_totals() {
    let mut ledger = Ledger::new();
    ledger.record(&record());
    ledger.record(&RequestRecord {
        cost_usd: Some(0.00125),
        ..record()
    });
    ledger.record(&RequestRecord {
        usage: None,
        cost_usd: None,
        outcome: RequestOutcome::Failed(ErrorKind::RateLimited),
        ..record()
    });
    ledger.record(&RequestRecord {
        model: "we\"ird\\name".into(),
        deployment: None,
        key: None,
        usage: None,
        cost_usd: None,
        outcome: RequestOutcome::Rejected("invalid_api_key"),
        ..record()
    });
    let t = ledger
        .totals("gpt-4o", "openai/gpt-4o-2024-08-06", "team-a")
        .unwrap();
    assert_eq!(
        (t.input_tokens, t.output_tokens, t.cached_tokens),
        (2400, 600, 2000)
    );
    assert_eq!(t.cost_usd, 0.005);
    let mut out = String::new();
    ledger.render_prometheus(&mut out);
    let expected = r#"# HELP headwater_llm_requests_total LLM requests by model alias, deployment, virtual key and outcome.
# TYPE headwater_llm_requests_total counter
headwater_llm_requests_total{model="gpt-4o",deployment="openai/gpt-4o-2024-08-06",key="team-a",outcome="rate_limited"} 1
headwater_llm_requests_total{model="gpt-4o",deployment="openai/gpt-4o-2024-08-06",key="team-a",outcome="success"} 2
headwater_llm_requests_total{model="we\"ird\\name",deployment="",key="",outcome="invalid_api_key"} 1
# HELP headwater_llm_tokens_total LLM tokens by model alias, deployment, virtual key and kind (input includes cached).
# TYPE headwater_llm_tokens_total counter
headwater_llm_tokens_total{model="gpt-4o",deployment="openai/gpt-4o-2024-08-06",key="team-a",kind="input"} 2400
headwater_llm_tokens_total{model="gpt-4o",deployment="openai/gpt-4o-2024-08-06",key="team-a",kind="output"} 600
headwater_llm_tokens_total{model="gpt-4o",deployment="openai/gpt-4o-2024-08-06",key="team-a",kind="cached"} 2000
headwater_llm_tokens_total{model="we\"ird\\name",deployment="",key="",kind="input"} 0
headwater_llm_tokens_total{model="we\"ird\\name",deployment="",key="",kind="output"} 0
headwater_llm_tokens_total{model="we\"ird\\name",deployment="",key="",kind="cached"} 0
# HELP headwater_llm_cost_usd_total LLM cost in USD by model alias, deployment and virtual key.
# TYPE headwater_llm_cost_usd_total counter
headwater_llm_cost_usd_total{model="gpt-4o",deployment="openai/gpt-4o-2024-08-06",key="team-a"} 0.005
headwater_llm_cost_usd_total{model="we\"ird\\name",deployment="",key=""} 0
"#;
    assert_eq!(out, expected);
}

#[test]
fn a_record_from_a_failover_plan() {
    let c = catalogue(
        r#"
[[llm.model]]
name = "gpt-4o"
fallbacks = ["claude-sonnet"]
[[llm.model.deployment]]
provider = "openai"
model = "gpt-4o-2024-08-06"
api_key = "k"
[[llm.model]]
name = "claude-sonnet"
[[llm.model.deployment]]
name = "claude"
provider = "anthropic"
model = "claude-sonnet-4"
api_key = "k"
price = { input_per_million = 3.0, output_per_million = 15.0, cached_input_per_million = 0.3 }
"#,
    );
    let clock = Clock::new();
    let mut r = Router::new(c.clone(), 1, clock.now);
    let mut plan = r.plan(c.model_id("gpt-4o").unwrap(), 50, clock.now, 1_750_000_000);
    let Step::Try(a1) = plan.next(&mut r, clock.now) else {
        panic!()
    };
    plan.report(
        &mut r,
        &a1,
        AttemptResult::Failure {
            error: transport_error("reset"),
            committed: false,
        },
        clock.now,
    );
    // Retried once after a backoff, then the fallback.
    let Step::Try(a2) = plan.next(&mut r, clock.now) else {
        panic!()
    };
    assert_eq!(a2.deployment, a1.deployment);
    plan.report(
        &mut r,
        &a2,
        AttemptResult::Failure {
            error: transport_error("reset"),
            committed: false,
        },
        clock.now + a2.wait,
    );
    let Step::Try(a3) = plan.next(&mut r, clock.now + a2.wait) else {
        panic!()
    };
    let usage = Usage {
        input_tokens: 2_000_000,
        output_tokens: 100_000,
        cached_input_tokens: 1_000_000,
        ..Usage::default()
    };
    let mut rec = RequestRecord::from_plan(
        &c,
        &plan,
        Some(&a3),
        Some("team-a"),
        Some(usage),
        RequestOutcome::Success,
    );
    rec.latency = Duration::from_secs(3);
    assert_eq!(
        rec.to_json(),
        r#"{"model":"gpt-4o","deployment":"claude","provider":"anthropic","key":"team-a","outcome":"success","stream":false,"input_tokens":2000000,"output_tokens":100000,"cached_tokens":1000000,"cost_usd":4.8,"latency_ms":3000,"ttft_ms":null,"attempts":3,"fallbacks":["claude-sonnet"]}"#
    );
}
