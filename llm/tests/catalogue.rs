//! The `[llm]` section: parsing the documented example, resolution, and every validation error
//! with the path of the offending item.

mod support;

use std::time::Duration;

use headwater_llm::catalogue::{parse_duration, DeploymentId, Expect, ModelId};
use headwater_llm::keys::BudgetPeriod;
use headwater_llm::{ProviderKind, Routing};
use serde_json::json;
use support::{catalogue, errors, try_catalogue};

const EXAMPLE: &str = r#"
[[llm.model]]
name = "gpt-4o"
fallbacks = ["claude-sonnet", "local-llama"]
context_fallback = "gpt-4o-long"
routing = "weighted"
[[llm.model.deployment]]
provider = "openai"
model = "gpt-4o-2024-08-06"
base_url = "https://api.openai.com"
api_key = "env:OPENAI_API_KEY"
weight = 3
price = { input_per_million = 2.5, output_per_million = 10.0, cached_input_per_million = 1.25 }
context_window = 128000
rpm = 500
tpm = 30000
[llm.model.deployment.canary]
prompt = "Reply with the word: pong"
expect = { contains = "pong" }
interval = "30s"
timeout = "10s"
[[llm.model.deployment]]
name = "azure-east"
provider = "azure"
model = "gpt4o-prod"
base_url = "https://east.openai.azure.com"
api_key = "literal-azure-key"
api_version = "2024-10-21"
price = { input_per_million = 2.5, output_per_million = 10 }

[[llm.model]]
name = "gpt-4o-long"
[[llm.model.deployment]]
provider = "gemini"
model = "gemini-1.5-pro"
api_key = "g-key"

[[llm.model]]
name = "claude-sonnet"
routing = "cheapest"
fallbacks = ["local-llama"]
[[llm.model.deployment]]
provider = "anthropic"
model = "claude-sonnet-4"
api_key = "env:ANTHROPIC_API_KEY"
max_tokens = 8192
[llm.model.deployment.canary]
prompt = "Answer in JSON"
expect = { json_field = "status.code", equals = 200 }

[[llm.model]]
name = "local-llama"
routing = "least-latency"
[[llm.model.deployment]]
provider = "openai-compatible"
model = "llama-3.1-8b"
base_url = "http://127.0.0.1:8000/v1"
[llm.model.deployment.canary]
prompt = "Say OK"
expect = { regex = "(?i)^\\s*ok" }

[[llm.key]]
name = "team-a"
key = "env:HEADWATER_KEY_TEAM_A"
models = ["gpt-4o", "claude-sonnet"]
budget = { usd = 100.0, period = "30d" }
rpm = 60
tpm = 100000

[[llm.key]]
name = "ops"
key = "ops-secret"
budget = { usd = 5, period = "total" }

[llm.failover]
max_attempts = 6
deadline = "90s"
max_wait = "5s"
backoff = "100ms"
max_backoff = "2s"
retries_per_deployment = 2
fail_over_on_deployment_fault = true
last_resort = false

[llm.health]
consecutive_failures = 4
base_ejection = "10s"
max_ejection = "2m"
max_ejection_percent = 50
rate_limit_cooldown = "3s"
"#;

#[test]
fn the_documented_example_resolves() {
    let c = catalogue(EXAMPLE);
    let names: Vec<&str> = c.models().iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        ["gpt-4o", "gpt-4o-long", "claude-sonnet", "local-llama"]
    );

    let gpt = c.model(c.model_id("gpt-4o").unwrap());
    assert_eq!(gpt.routing, Routing::Weighted);
    assert_eq!(gpt.fallbacks, [ModelId(2), ModelId(3)]);
    assert_eq!(gpt.context_fallback, Some(ModelId(1)));
    // Breadth first: claude-sonnet's own fallback (local-llama) is already in the chain.
    assert_eq!(gpt.chain, [ModelId(0), ModelId(2), ModelId(3)]);
    assert_eq!(gpt.deployments, [DeploymentId(0), DeploymentId(1)]);
    assert_eq!(c.model(ModelId(2)).routing, Routing::Cheapest);
    assert_eq!(c.model(ModelId(2)).chain, [ModelId(2), ModelId(3)]);
    assert_eq!(c.model(ModelId(3)).routing, Routing::LeastLatency);
    assert_eq!(c.model_id("nope"), None);

    let openai = c.deployment(DeploymentId(0));
    assert_eq!(openai.name, "openai/gpt-4o-2024-08-06");
    assert_eq!(openai.deployment.kind, ProviderKind::OpenAi);
    assert_eq!(openai.deployment.base_url.authority, "api.openai.com");
    assert_eq!(
        openai.deployment.api_key.as_ref().unwrap().expose(),
        "sk-openai-test"
    );
    assert_eq!(openai.weight, 3);
    let p = openai.prices.unwrap();
    assert_eq!(
        (
            p.input_per_million,
            p.output_per_million,
            p.cached_input_per_million
        ),
        (2.5, 10.0, Some(1.25))
    );
    assert_eq!(openai.blended_price(), Some((3.0 * 2.5 + 10.0) / 4.0));
    assert_eq!(openai.context_window, Some(128_000));
    assert_eq!(openai.limits.rpm, Some(500));
    assert_eq!(openai.limits.tpm, Some(30_000));
    let canary = openai.canary.as_ref().unwrap();
    assert!(matches!(&canary.expect, Expect::Contains(s) if s == "pong"));
    assert_eq!(canary.interval, Duration::from_secs(30));
    assert_eq!(canary.timeout, Duration::from_secs(10));
    assert_eq!((canary.rise, canary.fall, canary.max_tokens), (2, 2, 16));
    let req = canary.request("gpt-4o");
    assert_eq!(req.max_tokens, Some(16));
    assert_eq!(req.sampling.temperature, Some(0.0));
    assert!(!req.stream);
    // The canary request is a real request for the deployment.
    let upstream = openai.deployment.chat_request(&req).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&upstream.body).unwrap();
    assert_eq!(body["model"], "gpt-4o-2024-08-06");
    assert_eq!(body["messages"][0]["content"], "Reply with the word: pong");

    let azure = c.deployment(DeploymentId(1));
    assert_eq!(azure.name, "azure-east");
    assert_eq!(azure.deployment.api_version.as_deref(), Some("2024-10-21"));
    assert_eq!(azure.weight, 1, "weight defaults to 1");
    assert_eq!(azure.index, 1);
    assert_eq!(azure.model, ModelId(0));

    let claude = c.deployment(DeploymentId(3));
    assert_eq!(claude.deployment.default_max_tokens, 8192);
    assert!(matches!(
        &claude.canary.as_ref().unwrap().expect,
        Expect::JsonField { path, equals } if path == "status.code" && *equals == json!(200)
    ));
    assert_eq!(claude.blended_price(), None);
    let llama = c.deployment(DeploymentId(4));
    assert!(llama.deployment.api_key.is_none());
    assert!(matches!(
        &llama.canary.as_ref().unwrap().expect,
        Expect::Regex(re) if re.is_match("  OK!")
    ));

    let keys = c.keys();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].name, "team-a");
    assert!(keys[0].secret_matches("hw-team-a-secret"));
    assert!(!keys[0].secret_matches("hw-team-a-secreT"));
    assert_eq!(keys[0].models, Some(vec![ModelId(0), ModelId(2)]));
    let budget = keys[0].budget.unwrap();
    assert_eq!(budget.usd, 100.0);
    assert_eq!(
        budget.period,
        BudgetPeriod::Every(Duration::from_secs(30 * 86_400))
    );
    assert_eq!(
        (keys[0].limits.rpm, keys[0].limits.tpm),
        (Some(60), Some(100_000))
    );
    assert_eq!(keys[1].budget.unwrap().period, BudgetPeriod::Total);
    assert_eq!(keys[1].models, None);
    // The secret never shows in Debug output.
    assert!(!format!("{:?}", keys[0]).contains("hw-team-a-secret"));

    let f = &c.failover;
    assert_eq!(f.max_attempts, 6);
    assert_eq!(f.deadline, Duration::from_secs(90));
    assert_eq!(f.max_wait, Duration::from_secs(5));
    assert_eq!(f.backoff, Duration::from_millis(100));
    assert_eq!(f.max_backoff, Duration::from_secs(2));
    assert_eq!(f.retries_per_deployment, 2);
    assert!(f.fail_over_on_deployment_fault);
    assert!(!f.last_resort);
    let h = &c.health;
    assert_eq!(h.consecutive_failures, 4);
    assert_eq!(h.consecutive_gateway_failures, 3, "default kept");
    assert_eq!(h.base_ejection, Duration::from_secs(10));
    assert_eq!(h.max_ejection, Duration::from_secs(120));
    assert_eq!(h.max_ejection_percent, 50);
    assert_eq!(h.rate_limit_cooldown, Duration::from_secs(3));

    let cards = c.model_cards(1_700_000_000, "headwater");
    assert_eq!(cards.len(), 4);
    assert_eq!(cards[2].id, "claude-sonnet");
}

#[test]
fn an_empty_section_is_a_valid_empty_catalogue() {
    let c = catalogue("[llm]\n");
    assert!(c.models().is_empty() && c.keys().is_empty());
    assert_eq!(c.failover.max_attempts, 4);
}

#[test]
fn unknown_keys_are_refused_by_serde() {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct File {
        llm: headwater_llm::LlmConfig,
    }
    let text = r#"
[[llm.model]]
name = "a"
colour = "blue"
"#;
    let msg = toml::from_str::<File>(text).err().unwrap().to_string();
    assert!(msg.contains("unknown field `colour`"), "{msg}");
}

/// A model with one valid deployment, to which each test adds one fault.
fn one_model(extra_model: &str, extra_deployment: &str) -> String {
    format!(
        r#"
[[llm.model]]
name = "m"
{extra_model}
[[llm.model.deployment]]
provider = "openai"
model = "gpt-4o"
api_key = "k"
{extra_deployment}
"#
    )
}

#[test]
fn deployment_errors_name_the_item() {
    let cases: &[(&str, &str)] = &[
        (
            "provider = \"openia\"\nmodel = \"x\"\napi_key = \"k\"\n",
            "llm.model[0].deployment[1].provider: unknown provider `openia` (expected one of: openai, azure, anthropic, gemini, mistral, openai-compatible)",
        ),
        (
            "provider = \"openai\"\nmodel = \"x\"\napi_key = \"env:MISSING_VAR\"\n",
            "llm.model[0].deployment[1].api_key: environment variable MISSING_VAR is not set",
        ),
        (
            "provider = \"openai\"\nmodel = \"x\"\napi_key = \"env:EMPTY\"\n",
            "llm.model[0].deployment[1].api_key: the environment variable it names is empty",
        ),
        (
            "provider = \"openai\"\nmodel = \"x\"\n",
            "llm.model[0].deployment[1].api_key: provider `openai` needs an api_key (a literal or env:NAME)",
        ),
        (
            "provider = \"azure\"\nmodel = \"x\"\napi_key = \"k\"\n",
            "llm.model[0].deployment[1].provider: provider kind `azure` needs a base URL",
        ),
        (
            "provider = \"openai\"\nmodel = \"x\"\napi_key = \"k\"\nbase_url = \"ftp://h\"\n",
            "llm.model[0].deployment[1].base_url: invalid base URL `ftp://h`: the scheme must be http or https",
        ),
        (
            "provider = \"openai\"\nmodel = \"x\"\napi_key = \"k\"\napi_version = \"2024-10-21\"\n",
            "llm.model[0].deployment[1].api_version: api_version applies to provider `azure` only",
        ),
        (
            "provider = \"openai\"\nmodel = \"x\"\napi_key = \"k\"\nprice = { input_per_million = -1.0, output_per_million = 2.0 }\n",
            "llm.model[0].deployment[1].price.input_per_million: a price must be a finite number of at least 0, not -1",
        ),
        (
            "provider = \"openai\"\nmodel = \"x\"\napi_key = \"k\"\nprice = { input_per_million = 1.0, output_per_million = 2.0, cached_input_per_million = nan }\n",
            "llm.model[0].deployment[1].price.cached_input_per_million: a price must be a finite number of at least 0, not NaN",
        ),
        (
            "provider = \"openai\"\nmodel = \"x\"\napi_key = \"k\"\nweight = 0\n",
            "llm.model[0].deployment[1].weight: must be at least 1 (remove the deployment to take it out)",
        ),
        (
            "provider = \"openai\"\nmodel = \"x\"\napi_key = \"k\"\nrpm = 0\n",
            "llm.model[0].deployment[1].rpm: must be at least 1 (leave it out for no limit)",
        ),
        (
            "provider = \"openai\"\nmodel = \"\"\napi_key = \"k\"\n",
            "llm.model[0].deployment[1].model: the upstream model name must not be empty",
        ),
        (
            "provider = \"openai\"\nmodel = \"gpt-4o\"\napi_key = \"k\"\n",
            "llm.model[0].deployment[1].name: duplicate deployment name `openai/gpt-4o` in model `m` (same as deployment[0]; give each a distinct `name`)",
        ),
    ];
    for (deployment, want) in cases {
        let text = format!(
            "{}[[llm.model.deployment]]\n{deployment}",
            one_model("", "")
        );
        assert_eq!(errors(&text), [*want], "for deployment:\n{deployment}");
    }
}

#[test]
fn canary_errors_name_the_item() {
    let cases: &[(&str, &str)] = &[
        (
            "prompt = \"p\"\nexpect = { regex = \"(unclosed\" }\n",
            "llm.model[0].deployment[0].canary.expect.regex: invalid regular expression: ",
        ),
        (
            "prompt = \"p\"\nexpect = { contains = \"a\", regex = \"b\" }\n",
            "llm.model[0].deployment[0].canary.expect: give exactly one of",
        ),
        (
            "prompt = \"p\"\nexpect = {}\n",
            "llm.model[0].deployment[0].canary.expect: give exactly one of",
        ),
        (
            "prompt = \"p\"\nexpect = { json_field = \"a.b\" }\n",
            "llm.model[0].deployment[0].canary.expect.equals: `json_field` needs `equals`, the expected value",
        ),
        (
            "prompt = \"p\"\nexpect = { json_field = \"a..b\", equals = 1 }\n",
            "llm.model[0].deployment[0].canary.expect.json_field: `a..b` is not a dotted path such as `a.b` or `items.0.id`",
        ),
        (
            "prompt = \"p\"\nexpect = { contains = \"a\", equals = 1 }\n",
            "llm.model[0].deployment[0].canary.expect.equals: `equals` goes with `json_field` only",
        ),
        (
            "prompt = \"\"\nexpect = { contains = \"a\" }\n",
            "llm.model[0].deployment[0].canary.prompt: must not be empty",
        ),
        (
            "prompt = \"p\"\nexpect = { contains = \"a\" }\ninterval = \"30 s\"\n",
            "llm.model[0].deployment[0].canary.interval: invalid duration \"30 s\": expected a number followed by one unit (ms, s, m, h or d), e.g. \"30s\" or \"30d\"",
        ),
        (
            "prompt = \"p\"\nexpect = { contains = \"a\" }\ntimeout = \"0s\"\n",
            "llm.model[0].deployment[0].canary.timeout: must be longer than zero",
        ),
        (
            "prompt = \"p\"\nexpect = { contains = \"a\" }\nfall = 0\n",
            "llm.model[0].deployment[0].canary.fall: must be at least 1",
        ),
    ];
    for (canary, want) in cases {
        let text = format!(
            "{}[llm.model.deployment.canary]\n{canary}",
            one_model("", "")
        );
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with(want),
            "got {:?}, want {want:?}",
            errs[0]
        );
    }
}

#[test]
fn model_errors_name_the_item() {
    let dep = "[[llm.model.deployment]]\nprovider = \"openai\"\nmodel = \"x\"\napi_key = \"k\"\n";
    let model =
        |name: &str, extra: &str| format!("[[llm.model]]\nname = \"{name}\"\n{extra}\n{dep}");

    assert_eq!(
        errors(&format!("{}{}", model("a", ""), model("a", ""))),
        ["llm.model[1].name: duplicate model name `a` (already defined by llm.model[0])"]
    );
    assert_eq!(
        errors(&model("a b", "")),
        ["llm.model[0].name: a model name \"a b\" must not contain spaces or control characters"]
    );
    assert_eq!(
        errors(&model("", "")),
        ["llm.model[0].name: a model name must not be empty"]
    );
    assert_eq!(
        errors(&model("a", "routing = \"fastest\"")),
        ["llm.model[0].routing: unknown routing `fastest` (expected weighted, least-latency or cheapest)"]
    );
    assert_eq!(
        errors(&model("a", "fallbacks = [\"ghost\"]")),
        ["llm.model[0].fallbacks[0]: unknown model alias `ghost`"]
    );
    assert_eq!(
        errors(&model("a", "fallbacks = [\"a\"]")),
        ["llm.model[0].fallbacks[0]: model `a` cannot fall back to itself"]
    );
    assert_eq!(
        errors(&format!(
            "{}{}",
            model("a", "fallbacks = [\"b\", \"b\"]"),
            model("b", "")
        )),
        ["llm.model[0].fallbacks[1]: `b` is listed twice"]
    );
    assert_eq!(
        errors(&model("a", "context_fallback = \"ghost\"")),
        ["llm.model[0].context_fallback: unknown model alias `ghost`"]
    );
    assert_eq!(
        errors(&model("a", "context_fallback = \"a\"")),
        ["llm.model[0].context_fallback: model `a` cannot be its own context fallback"]
    );
    assert_eq!(
        errors("[[llm.model]]\nname = \"lonely\"\n"),
        ["llm.model[0].deployment: model `lonely` has no deployment (add at least one [[llm.model.deployment]])"]
    );
}

#[test]
fn fallback_cycles_are_refused_with_the_cycle() {
    let dep = "[[llm.model.deployment]]\nprovider = \"openai\"\nmodel = \"x\"\napi_key = \"k\"\n";
    let model =
        |name: &str, extra: &str| format!("[[llm.model]]\nname = \"{name}\"\n{extra}\n{dep}");
    let text = format!(
        "{}{}{}",
        model("a", "fallbacks = [\"b\"]"),
        model("b", "fallbacks = [\"c\"]"),
        model("c", "fallbacks = [\"a\"]")
    );
    assert_eq!(
        errors(&text),
        ["llm.model[2].fallbacks: fallbacks cycle: a -> b -> c -> a"]
    );
    let text = format!(
        "{}{}",
        model("a", "context_fallback = \"b\""),
        model("b", "context_fallback = \"a\"")
    );
    assert_eq!(
        errors(&text),
        ["llm.model[1].context_fallback: context_fallback cycle: a -> b -> a"]
    );
    // A diamond is not a cycle.
    let text = format!(
        "{}{}{}{}",
        model("a", "fallbacks = [\"b\", \"c\"]"),
        model("b", "fallbacks = [\"d\"]"),
        model("c", "fallbacks = [\"d\"]"),
        model("d", "")
    );
    let c = try_catalogue(&text).unwrap();
    assert_eq!(
        c.model(ModelId(0)).chain,
        [ModelId(0), ModelId(1), ModelId(2), ModelId(3)]
    );
}

#[test]
fn key_errors_name_the_item() {
    let base = one_model("", "");
    let cases: &[(&str, &str)] = &[
        (
            "name = \"a\"\nkey = \"env:NOPE\"\n",
            "llm.key[0].key: environment variable NOPE is not set",
        ),
        ("name = \"a\"\nkey = \"\"\n", "llm.key[0].key: must not be empty"),
        (
            "name = \"a\"\nkey = \"s\"\nmodels = [\"m\", \"ghost\"]\n",
            "llm.key[0].models[1]: unknown model alias `ghost`",
        ),
        (
            "name = \"a\"\nkey = \"s\"\nbudget = { usd = -5.0, period = \"30d\" }\n",
            "llm.key[0].budget.usd: must be a finite number of at least 0, not -5",
        ),
        (
            "name = \"a\"\nkey = \"s\"\nbudget = { usd = 5.0, period = \"monthly\" }\n",
            "llm.key[0].budget.period: invalid duration \"monthly\": expected a number followed by one unit (ms, s, m, h or d), e.g. \"30s\" or \"30d\" (or \"total\" for a budget that never resets)",
        ),
        (
            "name = \"a\"\nkey = \"s\"\ntpm = 0\n",
            "llm.key[0].tpm: must be at least 1 (leave it out for no limit)",
        ),
    ];
    for (key, want) in cases {
        let text = format!("{base}[[llm.key]]\n{key}");
        assert_eq!(errors(&text), [*want], "for key:\n{key}");
    }
    let dup = format!(
        "{base}[[llm.key]]\nname = \"a\"\nkey = \"s1\"\n[[llm.key]]\nname = \"a\"\nkey = \"s2\"\n"
    );
    assert_eq!(
        errors(&dup),
        ["llm.key[1].name: duplicate key name `a` (already defined by llm.key[0])"]
    );
    let same_secret = format!(
        "{base}[[llm.key]]\nname = \"a\"\nkey = \"s1\"\n[[llm.key]]\nname = \"b\"\nkey = \"s1\"\n"
    );
    let errs = errors(&same_secret);
    assert_eq!(
        errs,
        ["llm.key[1].key: the same secret as key `a`: each key needs its own"]
    );
    assert!(!errs[0].contains("s1"));
}

#[test]
fn policy_errors_name_the_item() {
    let base = one_model("", "");
    assert_eq!(
        errors(&format!("{base}[llm.failover]\nmax_attempts = 0\n")),
        ["llm.failover.max_attempts: must be at least 1"]
    );
    assert_eq!(
        errors(&format!("{base}[llm.failover]\ndeadline = \"soon\"\n")),
        ["llm.failover.deadline: invalid duration \"soon\": expected a number followed by one unit (ms, s, m, h or d), e.g. \"30s\" or \"30d\""]
    );
    assert_eq!(
        errors(&format!(
            "{base}[llm.failover]\nbackoff = \"5s\"\nmax_backoff = \"1s\"\n"
        )),
        ["llm.failover.max_backoff: must be at least `backoff`"]
    );
    assert_eq!(
        errors(&format!("{base}[llm.health]\nmax_ejection_percent = 101\n")),
        ["llm.health.max_ejection_percent: must be at most 100"]
    );
    assert_eq!(
        errors(&format!("{base}[llm.health]\nbase_ejection = \"10m\"\n")),
        ["llm.health.max_ejection: must be at least `base_ejection`"]
    );
}

#[test]
fn every_error_is_reported_at_once_and_secrets_never_appear() {
    let text = r#"
[[llm.model]]
name = "a"
fallbacks = ["ghost"]
[[llm.model.deployment]]
provider = "nope"
model = "x"
api_key = "sk-very-secret"
[[llm.model.deployment]]
provider = "openai"
model = "x"
api_key = "sk-very-secret"
weight = 0
"#;
    let errs = errors(text);
    assert_eq!(
        errs,
        [
            "llm.model[0].fallbacks[0]: unknown model alias `ghost`",
            "llm.model[0].deployment[0].provider: unknown provider `nope` (expected one of: openai, azure, anthropic, gemini, mistral, openai-compatible)",
            "llm.model[0].deployment[1].weight: must be at least 1 (remove the deployment to take it out)",
        ]
    );
    let joined = try_catalogue(text).unwrap_err().to_string();
    assert!(!joined.contains("sk-very-secret"));
    assert_eq!(joined.lines().count(), 3);
}

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
    assert_eq!(parse_duration("0.25d"), Ok(Duration::from_secs(6 * 3600)));
    for bad in [
        "", "10", "s", "1.s", ".5s", "1..2s", "-1s", "1w", "1m30s", "99999d",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad} accepted");
    }
}
