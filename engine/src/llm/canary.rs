//! Semantic health checks of LLM deployments, run on the health thread.
//!
//! A deployment with a `canary` in its configuration gets, on its interval, a small real chat
//! request (the canary prompt, temperature 0, a few tokens) through the same client and
//! provider adapter as client traffic; the answer is judged by `headwater_llm::canary_verdict`
//! against the configured expectation (substring, regular expression or JSON field). The
//! verdicts go to the node-wide router's `DeploymentHealth`: `fall` failures in a row take the
//! deployment out of routing, like an ejection, and `rise` passes bring it back. So a
//! deployment that answers `200 OK` with garbage is taken out like a dead one.
//!
//! This module owns [`CanaryDriver`]: which runtime (generation's router) it checks, its own
//! provider client (the health thread's, not a shard's), and the in-flight checks. Scheduling
//! (when each canary is due, at most one in flight per deployment) is `DeploymentHealth`'s.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use headwater_llm::{
    canary_verdict, ChatResponse, DeploymentId, ErrorKind, LlmError, Origin, Verdict,
};

use super::client::{ClientSettings, ProviderClient};
use super::state::LlmRuntime;

/// The largest canary answer read.
const MAX_ANSWER: usize = 1 << 20;

/// Runs the canaries of the current `[llm]` runtime.
#[derive(Default)]
pub struct CanaryDriver {
    current: Option<(Arc<LlmRuntime>, Rc<ProviderClient>)>,
}

impl CanaryDriver {
    /// Checks `runtime` from now on (`None`: no `[llm]` section). Checks in flight for a
    /// previous runtime finish and report to that runtime, which nobody reads any more.
    pub fn set(&mut self, runtime: Option<Arc<LlmRuntime>>) {
        let same = match (&self.current, &runtime) {
            (Some((a, _)), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        self.current = runtime.map(|rt| {
            let up = &rt.section.catalogue.upstream;
            let client = ProviderClient::new(
                ClientSettings {
                    connect_timeout: up.connect_timeout,
                    // Canaries are seconds apart: keep one warm connection per host.
                    max_idle_per_host: 1,
                    ..ClientSettings::default()
                },
                rt.section.tls.clone(),
            );
            (rt, Rc::new(client))
        });
    }

    /// Starts the canaries due at `now` as tasks of the current (health thread's) runtime.
    pub fn tick(&self, now: Instant) {
        let Some((rt, client)) = &self.current else {
            return;
        };
        let due = {
            let mut router = rt.router();
            let due = router.health().canaries_due(now);
            for &dep in &due {
                router.health_mut().canary_started(dep, now);
            }
            due
        };
        for dep in due {
            let rt = rt.clone();
            let client = client.clone();
            monoio::spawn(async move {
                let verdict = check(&rt, &client, dep).await;
                rt.router()
                    .health_mut()
                    .record_canary(dep, &verdict, Instant::now());
            });
        }
    }
}

/// Sends `dep`'s canary and judges the answer.
async fn check(rt: &LlmRuntime, client: &ProviderClient, dep: DeploymentId) -> Verdict {
    let catalogue = &rt.section.catalogue;
    let spec = catalogue.deployment(dep);
    let Some(canary) = spec.canary.as_ref() else {
        return Verdict::Pass;
    };
    let req = canary.request(&catalogue.model(spec.model).name);
    let ask = async {
        let up = spec.deployment.chat_request(&req)?;
        let resp = client
            .send(&up, canary.timeout)
            .await
            .map_err(|e| e.to_llm_error())?;
        let status = resp.status.as_u16();
        let retry_after = resp.header("retry-after").map(str::to_owned);
        let body = resp
            .read_all(canary.timeout, MAX_ANSWER)
            .await
            .map_err(|e| e.to_llm_error())?;
        if !(200..300).contains(&status) {
            return Err(spec
                .deployment
                .parse_error(status, &body, retry_after.as_deref()));
        }
        spec.deployment.parse_chat_response(&body)
    };
    let answer: Result<ChatResponse, LlmError> =
        match monoio::time::timeout(canary.timeout, ask).await {
            Ok(r) => r,
            Err(_) => Err(LlmError::new(
                ErrorKind::Timeout,
                Origin::Gateway,
                format!("the canary got no answer within {:?}", canary.timeout),
            )),
        };
    canary_verdict(answer.as_ref(), &canary.expect)
}
