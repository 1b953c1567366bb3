//! Virtual keys: authentication, model permissions, budgets with periods, per-key rate limits,
//! and how refusals are rendered.

mod support;

use headwater_llm::keys::{authenticate, presented_key, Reservation};
use headwater_llm::limiter::LimitKind;
use headwater_llm::{Ingress, KeyError, KeyStore, MemoryKeyStore};
use http::{HeaderMap, HeaderValue};
use support::{catalogue, secs, Clock};

const KEYS: &str = r#"
[[llm.model]]
name = "gpt-4o"
[[llm.model.deployment]]
provider = "openai"
model = "gpt-4o"
api_key = "k"
[[llm.model]]
name = "claude-sonnet"
[[llm.model.deployment]]
provider = "anthropic"
model = "claude"
api_key = "k"

[[llm.key]]
name = "team-a"
key = "env:HEADWATER_KEY_TEAM_A"
models = ["gpt-4o"]
budget = { usd = 1.0, period = "1d" }

[[llm.key]]
name = "lifetime"
key = "lifetime-secret"
budget = { usd = 2.0, period = "total" }

[[llm.key]]
name = "limited"
key = "limited-secret"
rpm = 2
tpm = 1000
"#;

#[test]
fn authentication_finds_the_key_or_refuses() {
    let c = catalogue(KEYS);
    let keys = c.keys();
    assert_eq!(
        authenticate(keys, Some("hw-team-a-secret"))
            .unwrap()
            .unwrap()
            .name,
        "team-a"
    );
    assert_eq!(
        authenticate(keys, Some("limited-secret"))
            .unwrap()
            .unwrap()
            .name,
        "limited"
    );
    assert_eq!(
        authenticate(keys, Some("hw-team-a-secre")).unwrap_err(),
        KeyError::Invalid
    );
    assert_eq!(
        authenticate(keys, Some("hw-team-a-secret!")).unwrap_err(),
        KeyError::Invalid
    );
    assert_eq!(authenticate(keys, Some("")).unwrap_err(), KeyError::Missing);
    assert_eq!(authenticate(keys, None).unwrap_err(), KeyError::Missing);
    // No keys configured: authentication is off.
    assert!(authenticate(&[], None).unwrap().is_none());
}

#[test]
fn the_presented_key_comes_from_bearer_or_x_api_key() {
    let mut h = HeaderMap::new();
    assert_eq!(presented_key(|n| h.get(n).map(|v| v.as_bytes())), None);
    h.insert("x-api-key", HeaderValue::from_static("anthropic-style"));
    assert_eq!(
        presented_key(|n| h.get(n).map(|v| v.as_bytes())),
        Some("anthropic-style")
    );
    h.insert(
        "authorization",
        HeaderValue::from_static("Bearer  openai-style "),
    );
    assert_eq!(
        presented_key(|n| h.get(n).map(|v| v.as_bytes())),
        Some("openai-style")
    );
    h.insert(
        "authorization",
        HeaderValue::from_static("Basic dXNlcjpwYXNz"),
    );
    assert_eq!(
        presented_key(|n| h.get(n).map(|v| v.as_bytes())),
        Some("anthropic-style")
    );
}

#[test]
fn a_key_may_use_its_models_only() {
    let c = catalogue(KEYS);
    let team = &c.keys()[0];
    let gpt = c.model_id("gpt-4o").unwrap();
    let claude = c.model_id("claude-sonnet").unwrap();
    assert!(team.check_model(&c, gpt).is_ok());
    let e = team.check_model(&c, claude).unwrap_err();
    assert_eq!(
        e,
        KeyError::ModelNotAllowed {
            key: "team-a".into(),
            model: "claude-sonnet".into()
        }
    );
    assert_eq!(e.status(), 403);
    assert!(!e.retryable());
    // No list: every model.
    assert!(c.keys()[1].check_model(&c, claude).is_ok());
}

#[test]
fn the_budget_runs_out_after_recorded_spend_and_resets_with_the_period() {
    let c = catalogue(KEYS);
    let team = &c.keys()[0];
    let mut clock = Clock::new();
    let mut store = MemoryKeyStore::new();
    let t0 = clock.now;
    let r = store.check_and_reserve(team, 100, t0).unwrap();
    store.record_usage(team, r, Some(120), Some(0.6), t0);
    assert_eq!(store.spend(team, t0), 0.6);
    let t = clock.advance(secs(3600));
    let r = store.check_and_reserve(team, 100, t).unwrap();
    store.record_usage(team, r, None, Some(0.5), t);
    // Unknown cost adds nothing.
    let r = store.check_and_reserve(team, 100, t);
    assert!(r.is_err());
    let e = r.unwrap_err();
    match &e {
        KeyError::BudgetExceeded {
            key,
            spent_usd,
            budget_usd,
            resets_in,
        } => {
            assert_eq!(key, "team-a");
            assert!((spent_usd - 1.1).abs() < 1e-9);
            assert_eq!(*budget_usd, 1.0);
            assert_eq!(*resets_in, Some(secs(23 * 3600)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        (e.status(), e.code(), e.retryable(), e.retry_after()),
        (429, "budget_exceeded", false, None)
    );
    assert_eq!(
        e.to_string(),
        "key `team-a` has exceeded its budget: spent $1.1000 of $1.00; the budget resets in 82800s"
    );
    // A day after the first sight, a new period.
    let t = clock.advance(secs(23 * 3600));
    assert_eq!(store.spend(team, t), 0.0);
    assert!(store.check_and_reserve(team, 100, t).is_ok());
    // Spend recorded in the new period counts in it only.
    store.record_spend(team, 0.25, t);
    assert_eq!(store.spend(team, t), 0.25);
    assert_eq!(store.spend(team, t + secs(86_400)), 0.0);
}

#[test]
fn a_total_budget_never_resets() {
    let c = catalogue(KEYS);
    let key = &c.keys()[1];
    let mut clock = Clock::new();
    let mut store = MemoryKeyStore::new();
    let t = clock.now;
    store.record_spend(key, 2.0, t);
    let t = clock.advance(secs(365 * 86_400));
    match store.check_and_reserve(key, 1, t) {
        Err(KeyError::BudgetExceeded {
            resets_in: None, ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // Negative or non-finite costs are ignored.
    store.record_spend(key, -5.0, t);
    store.record_spend(key, f64::NAN, t);
    assert_eq!(store.spend(key, t), 2.0);
}

#[test]
fn per_key_rate_limits() {
    let c = catalogue(KEYS);
    let key = &c.keys()[2];
    let mut clock = Clock::new();
    let mut store = MemoryKeyStore::new();
    let t = clock.now;
    let r1 = store.check_and_reserve(key, 100, t).unwrap();
    let r2 = store.check_and_reserve(key, 100, t).unwrap();
    let e = store.check_and_reserve(key, 100, t).unwrap_err();
    match &e {
        KeyError::RateLimited { key, limit } => {
            assert_eq!(key, "limited");
            assert_eq!(
                (limit.kind, limit.retry_in),
                (LimitKind::Requests, secs(30))
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(e.retryable());
    assert_eq!(e.retry_after(), Some(secs(30)));
    assert_eq!(
        e.to_string(),
        "key `limited`: rpm limit of 2 per minute reached; retry in 30.0s"
    );
    store.record_usage(key, r1, Some(100), None, t);
    store.record_usage(key, r2, Some(100), None, t);

    // Tokens, a minute later (both limits full again): 600 of 1000, then 600 more is 200
    // tokens short, 12 s at 1000 per minute.
    let t = clock.advance(secs(60));
    let r = store.check_and_reserve(key, 600, t).unwrap();
    match store.check_and_reserve(key, 600, t) {
        Err(KeyError::RateLimited { limit, .. }) => {
            assert_eq!((limit.kind, limit.retry_in), (LimitKind::Tokens, secs(12)))
        }
        other => panic!("{other:?}"),
    }
    // It used 50: the rest comes back, and 600 fits again at once.
    store.record_usage(key, r, Some(50), None, t);
    assert_eq!(
        store.check_and_reserve(key, 600, t),
        Ok(Reservation { tokens: 600 })
    );
}

#[test]
fn changed_limits_start_afresh_and_keep_the_spend() {
    let c = catalogue(KEYS);
    let key = &c.keys()[2];
    let t = Clock::new().now;
    let mut store = MemoryKeyStore::new();
    for _ in 0..2 {
        let _ = store.check_and_reserve(key, 1, t).unwrap();
    }
    assert!(store.check_and_reserve(key, 1, t).is_err());
    store.record_spend(key, 0.5, t);
    // A reload raises the key's rpm: the new limit applies at once, with full buckets.
    let mut raised = key.clone();
    raised.limits.rpm = Some(3);
    for _ in 0..3 {
        let _ = store.check_and_reserve(&raised, 1, t).unwrap();
    }
    match store.check_and_reserve(&raised, 1, t) {
        Err(KeyError::RateLimited { limit, .. }) => assert_eq!(limit.limit, 3),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.spend(&raised, t), 0.5);
}

#[test]
fn refusals_render_like_openai_compatible_gateways() {
    let e = KeyError::Invalid;
    let r = e.render(Ingress::OpenAi);
    assert_eq!(r.status, 401);
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        r#"{"error":{"message":"invalid API key","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#
    );
    let r = e.render(Ingress::Anthropic);
    assert_eq!(r.status, 401);
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        r#"{"type":"error","error":{"type":"authentication_error","message":"invalid API key"}}"#
    );
    let budget = KeyError::BudgetExceeded {
        key: "team-a".into(),
        spent_usd: 100.5,
        budget_usd: 100.0,
        resets_in: None,
    };
    let r = budget.render(Ingress::OpenAi);
    assert_eq!(r.status, 429);
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        r#"{"error":{"message":"key `team-a` has exceeded its budget: spent $100.5000 of $100.00","type":"budget_exceeded","param":null,"code":"budget_exceeded"}}"#
    );
    let r = budget.render(Ingress::Anthropic);
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        r#"{"type":"error","error":{"type":"rate_limit_error","message":"key `team-a` has exceeded its budget: spent $100.5000 of $100.00"}}"#
    );
    let denied = KeyError::ModelNotAllowed {
        key: "k".into(),
        model: "m".into(),
    };
    let r = denied.render(Ingress::OpenAi);
    assert_eq!(r.status, 403);
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        r#"{"error":{"message":"key `k` may not use model `m`","type":"permission_error","param":null,"code":"model_not_allowed"}}"#
    );
    assert_eq!(KeyError::Missing.status(), 401);
}
