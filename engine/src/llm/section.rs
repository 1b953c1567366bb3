//! The resolved `[llm]` section as the engine holds it in a [`crate::config::Config`]: the
//! validated catalogue (`headwater_llm::Catalogue`) and the TLS connector for providers, built
//! once when the configuration is loaded so that a bad CA file is a configuration error (with the
//! file and line of `[llm]`) rather than a failure of the first request.

use std::fmt;
use std::sync::Arc;

use headwater_llm::{Catalogue, LlmConfig};

use crate::tls::{ClientTlsConfig, PemSource, RootSource, TlsConnector};

/// `[llm]`, resolved: what every LLM route of one configuration generation uses.
#[derive(Clone)]
pub struct LlmSection {
    /// Models, deployments, keys and policies.
    pub catalogue: Arc<Catalogue>,
    /// How provider TLS sessions are made (roots, verification, SNI from each base URL).
    pub tls: TlsConnector,
    /// What the section was built from, for [`PartialEq`] (what a reload compares): the
    /// section as written, the values of the `env:NAME` secrets it names, and the bytes of
    /// its CA file. A reload that changes any of them (a rotated key, a renewed CA under the
    /// same path) builds a new section.
    source: (LlmConfig, Vec<Option<String>>, Option<Vec<u8>>),
}

impl LlmSection {
    /// Validates `config` (secrets `env:NAME` from `env`) and builds the TLS connector.
    /// Errors are one line each: `llm.model[0].deployment[1].provider: reason`, or the CA
    /// file's problem.
    pub fn build(
        config: &LlmConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<LlmSection, Vec<(Option<String>, String)>> {
        let secrets = config
            .model
            .iter()
            .flat_map(|m| m.deployment.iter().filter_map(|d| d.api_key.as_deref()))
            .chain(config.key.iter().map(|k| k.key.as_str()))
            .filter_map(|v| v.strip_prefix("env:"))
            .map(&env)
            .collect();
        let catalogue = Catalogue::from_config(config, &env).map_err(|errs| {
            errs.0
                .into_iter()
                .map(|e| (Some(e.path), e.message))
                .collect::<Vec<_>>()
        })?;
        let up = &catalogue.upstream;
        let roots = match (&up.ca_file, up.system_roots) {
            (Some(file), _) => RootSource::CustomCa(PemSource::file(file)),
            (None, true) => RootSource::System,
            (None, false) => RootSource::Webpki,
        };
        let mut tls = ClientTlsConfig::with_roots(roots);
        tls.verify = up.verify;
        let path = if up.ca_file.is_some() {
            "llm.upstream.ca_file"
        } else {
            "llm.upstream.roots"
        };
        let tls =
            TlsConnector::new(&tls).map_err(|e| vec![(Some(path.to_owned()), e.to_string())])?;
        // The connector read the file just now; a failure to read it again is as good as a
        // change (the next reload compares unequal and reports the problem).
        let ca_pem = catalogue
            .upstream
            .ca_file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok());
        Ok(LlmSection {
            catalogue: Arc::new(catalogue),
            tls,
            source: (config.clone(), secrets, ca_pem),
        })
    }
}

impl fmt::Debug for LlmSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmSection")
            .field("models", &self.catalogue.models().len())
            .field("deployments", &self.catalogue.deployments().len())
            .field("keys", &self.catalogue.keys().len())
            .finish_non_exhaustive()
    }
}

impl PartialEq for LlmSection {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}
