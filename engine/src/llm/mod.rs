//! The LLM gateway wired into the engine: routes marked `llm = true` are answered here, with
//! the sans-IO decisions of `headwater_llm` and the engine's sockets, TLS and timers.
//!
//! - [`section`]: the resolved `[llm]` section a configuration carries.
//! - [`state`]: the router of a generation ([`LlmRuntime`]) and the process-wide key store
//!   and ledger ([`LlmNode`]).
//! - `serve`: one request on an LLM route.
//! - [`canary`]: the semantic health checks, run on the health thread.
//! - [`client`]: the HTTP/1.1 client (plain or TLS) the shards call providers with, and
//!   [`dns`], its non-blocking name resolution.

pub mod canary;
pub mod client;
pub mod dns;
pub mod section;
pub(crate) mod serve;
pub mod state;

pub use section::LlmSection;
pub use state::{LlmNode, LlmRuntime};

/// Whole seconds since the Unix epoch (0 if the clock is before it): the `created` times of
/// answers and the base of `Retry-After` dates.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
