//! Helpers for the gateway-decision tests: catalogues from TOML text, a fixed environment for
//! `env:NAME` secrets, and a controllable clock.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use headwater_llm::catalogue::{Catalogue, ConfigErrors, LlmConfig};
use serde::Deserialize;

/// The engine's file embeds the section as `[llm]`; so do the tests.
#[derive(Deserialize)]
struct File {
    llm: LlmConfig,
}

/// The environment the tests resolve `env:NAME` against.
pub fn env(name: &str) -> Option<String> {
    match name {
        "OPENAI_API_KEY" => Some("sk-openai-test".into()),
        "ANTHROPIC_API_KEY" => Some("sk-ant-test".into()),
        "HEADWATER_KEY_TEAM_A" => Some("hw-team-a-secret".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

pub fn config(text: &str) -> LlmConfig {
    toml::from_str::<File>(text)
        .unwrap_or_else(|e| panic!("test TOML does not parse: {e}"))
        .llm
}

pub fn try_catalogue(text: &str) -> Result<Catalogue, ConfigErrors> {
    Catalogue::from_config(&config(text), env)
}

pub fn catalogue(text: &str) -> Arc<Catalogue> {
    Arc::new(try_catalogue(text).unwrap_or_else(|e| panic!("catalogue refused:\n{e}")))
}

/// The errors of a catalogue that must be refused, as `path: message` lines.
pub fn errors(text: &str) -> Vec<String> {
    match try_catalogue(text) {
        Ok(_) => panic!("catalogue accepted, expected errors"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// A clock the test moves by hand.
pub struct Clock {
    pub start: Instant,
    pub now: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        let start = Instant::now();
        Clock { start, now: start }
    }

    pub fn advance(&mut self, d: Duration) -> Instant {
        self.now += d;
        self.now
    }

    pub fn at(&self, d: Duration) -> Instant {
        self.start + d
    }
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}
