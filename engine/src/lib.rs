//! Headwater's engine: the runtime that wires the codec, balancers and health together.
//!
//! Library first, so that users can embed the engine in their own proxies; the `headwater`
//! binary (`src/main.rs`) is a thin command-line front end over it.

pub mod access_log;
pub mod admin;
pub mod config;
pub mod demo;
pub mod health;
pub mod io;
pub mod llm;
pub mod llm_mock;
mod loopback_server;
pub mod metrics;
pub mod proxy;
pub mod runtime;
pub mod server;
pub mod tls;
pub mod upstream_demo;
