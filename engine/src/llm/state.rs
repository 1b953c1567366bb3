//! The LLM gateway's mutable state and where it lives.
//!
//! - [`LlmRuntime`], one per configuration generation that has an `[llm]` section: the
//!   section itself and the node-wide [`Router`] (deployment choice, RPM/TPM limits of each
//!   deployment, passive health and canary verdicts). Every shard and the health thread lock the
//!   same router briefly (never across an `.await`), so a deployment's limits and health are
//!   the node's, not a shard's share of them. A reload whose `[llm]` section is unchanged keeps
//!   the runtime (and with it ejections, latency estimates and limits); a changed section
//!   starts a new one.
//! - [`LlmNode`], one per process, surviving every reload: the virtual keys' spend and rate
//!   limits ([`MemoryKeyStore`], keyed by key name) and the accounting [`Ledger`] that
//!   `/metrics` exports as counters, which must never go backwards.
//!
//! Locks here are plain mutexes: an LLM request takes each a handful of times, which costs
//! nothing next to a provider round trip, and the proxy's hot path never touches them.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use headwater_llm::{Ledger, MemoryKeyStore, Router};

use super::LlmSection;

/// The router of one `[llm]` section.
pub struct LlmRuntime {
    /// The section it was built from.
    pub section: LlmSection,
    router: Mutex<Router>,
}

impl LlmRuntime {
    /// A fresh runtime: every deployment starts healthy with no history.
    pub fn new(section: LlmSection) -> Arc<LlmRuntime> {
        let router = Router::new(section.catalogue.clone(), fastrand::u64(..), Instant::now());
        Arc::new(LlmRuntime {
            section,
            router: Mutex::new(router),
        })
    }

    /// The router, locked. Keep the guard short: never hold it across an `.await`.
    pub fn router(&self) -> MutexGuard<'_, Router> {
        // A panic while holding the lock aborts the process (panic = "abort"), so the lock
        // cannot be poisoned in a running gateway; tests unwind, and take the state as it is.
        self.router.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Process-wide LLM state that outlives configuration generations.
#[derive(Default)]
pub struct LlmNode {
    keys: Mutex<MemoryKeyStore>,
    ledger: Mutex<Ledger>,
}

impl LlmNode {
    /// The virtual keys' budgets and rate limits, locked.
    pub fn keys(&self) -> MutexGuard<'_, MemoryKeyStore> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tokens, cost and requests by model, deployment and key, locked.
    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }
}
