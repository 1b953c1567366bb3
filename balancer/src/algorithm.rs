//! [`Algorithm`]: the names of the balancing algorithms as a cluster's configuration spells them,
//! and their parsing ([`UnknownAlgorithm`] is the parse error).

use std::fmt;
use std::str::FromStr;

/// Which algorithm a cluster uses. Parses from and displays as the configuration names:
/// `round-robin`, `weighted`, `least-request`, `peak-ewma`, `maglev`, `random`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// Members in endpoint order, one after the other (weights ignored).
    #[default]
    RoundRobin,
    /// Smooth weighted round robin (nginx's algorithm).
    Weighted,
    /// Power of two choices by in-flight requests per unit of weight.
    LeastRequest,
    /// Power of two choices by peak-sensitive latency EWMA times load.
    PeakEwma,
    /// Consistent hashing through a (weighted) Maglev lookup table.
    Maglev,
    /// Weighted random.
    Random,
}

impl Algorithm {
    /// Every algorithm, in the order of the configuration documentation.
    pub const ALL: [Algorithm; 6] = [
        Algorithm::RoundRobin,
        Algorithm::Weighted,
        Algorithm::LeastRequest,
        Algorithm::PeakEwma,
        Algorithm::Maglev,
        Algorithm::Random,
    ];

    /// The configuration name.
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round-robin",
            Algorithm::Weighted => "weighted",
            Algorithm::LeastRequest => "least-request",
            Algorithm::PeakEwma => "peak-ewma",
            Algorithm::Maglev => "maglev",
            Algorithm::Random => "random",
        }
    }

    /// True for the algorithms that use the consistent-hash key of a pick (Maglev only).
    pub const fn uses_key(self) -> bool {
        matches!(self, Algorithm::Maglev)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| UnknownAlgorithm { name: s.to_owned() })
    }
}

/// A balancer name that is not one of [`Algorithm::ALL`]'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAlgorithm {
    name: String,
}

impl UnknownAlgorithm {
    /// The name that was given.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for UnknownAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown balancer {:?} (expected one of: ", self.name)?;
        for (i, a) in Algorithm::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(a.name())?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for UnknownAlgorithm {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let names = [
            "round-robin",
            "weighted",
            "least-request",
            "peak-ewma",
            "maglev",
            "random",
        ];
        for (a, name) in Algorithm::ALL.into_iter().zip(names) {
            assert_eq!(a.to_string(), name);
            assert_eq!(name.parse::<Algorithm>(), Ok(a));
        }
        assert_eq!(Algorithm::default(), Algorithm::RoundRobin);
        assert!(Algorithm::Maglev.uses_key() && !Algorithm::Random.uses_key());
    }

    #[test]
    fn unknown_names_are_refused_with_the_list() {
        for bad in ["", "Round-Robin", "round_robin", "ewma", "maglev "] {
            let err = bad.parse::<Algorithm>().unwrap_err();
            assert_eq!(err.name(), bad);
            let text = err.to_string();
            assert!(
                text.contains("round-robin, weighted, least-request, peak-ewma, maglev, random")
            );
        }
    }
}
