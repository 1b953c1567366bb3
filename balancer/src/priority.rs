//! Priority levels and panic mode: [`plan`] turns the standing of a cluster's endpoints into the
//! ordered [`Tier`]s the engine picks from, once per health publication.
//!
//! Levels are tried in ascending order (0 = primary). Within a level, while the share of healthy
//! members (by count) is at least the panic threshold, only the healthy members serve. Below
//! it, the level is in panic: every member that is not hard-down serves, the degraded ones
//! (outlier-ejected, or of unknown health) included, because a health system that condemns
//! everything must not black-hole traffic. A level whose members are all down contributes no
//! tier. Every level contributes its tier, so later tiers serve as spill-over when the
//! earlier ones were already tried (retries) or are all avoided.

use crate::candidates::CandidateSet;

/// How health checking sees one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Standing {
    /// Passing: serves normally.
    Healthy,
    /// Not known to be good, not hard-down: ejected by outlier detection, or of unknown health.
    /// Serves only in panic mode.
    Degraded,
    /// Failed active checks, or draining. Never serves.
    Down,
}

/// One endpoint of a cluster as [`plan`] sees it; its index in the slice given to [`plan`] is
/// its endpoint index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Member {
    /// Priority level, 0 being the primary one.
    pub priority: u8,
    /// Effective weight (after slow start); a member of weight 0 takes no traffic and does not
    /// count towards its level's size.
    pub weight: u32,
    /// Health.
    pub standing: Standing,
}

/// What a tier is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TierKind {
    /// The healthy members of a level at or above the panic threshold.
    Healthy {
        /// The priority level.
        level: u8,
    },
    /// Every member of a level in panic that is not down.
    Panic {
        /// The priority level.
        level: u8,
    },
}

impl TierKind {
    /// The priority level.
    pub fn level(self) -> u8 {
        match self {
            TierKind::Healthy { level } | TierKind::Panic { level } => level,
        }
    }

    /// True for a panic tier.
    pub fn is_panic(self) -> bool {
        matches!(self, TierKind::Panic { .. })
    }
}

/// One tier of a [`Plan`]: a level's serving members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    /// Which level, and whether it is in panic.
    pub kind: TierKind,
    /// The members to pick from (never empty).
    pub set: CandidateSet,
}

impl Tier {
    /// The priority level.
    pub fn level(&self) -> u8 {
        self.kind.level()
    }

    /// True for a panic tier.
    pub fn is_panic(&self) -> bool {
        self.kind.is_panic()
    }
}

/// The tiers of a cluster in the order to try them: pick from the first tier that has a member
/// not yet avoided (see [`crate::Balancer::pick_in_plan`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Tiers by ascending level; no tier is empty.
    pub tiers: Vec<Tier>,
}

impl Plan {
    /// True when no endpoint can serve at all (every one is down, or there is none).
    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }

    /// Number of tiers.
    pub fn len(&self) -> usize {
        self.tiers.len()
    }

    /// True when the first tier is a panic tier: the cluster's first choice is already panic mode.
    pub fn panic(&self) -> bool {
        self.tiers.first().is_some_and(Tier::is_panic)
    }

    /// The tier tried first.
    pub fn first(&self) -> Option<&Tier> {
        self.tiers.first()
    }

    /// The tiers in order.
    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// True when some tier contains `endpoint`.
    pub fn contains(&self, endpoint: usize) -> bool {
        self.tiers.iter().any(|t| t.set.contains(endpoint))
    }
}

/// The tiers for `members` (indexed by endpoint) under `panic_threshold_percent`.
///
/// For each level present, ascending: if healthy members / members (by count, weight-0 members
/// not counted) is at least the threshold, a [`TierKind::Healthy`] tier of the healthy members;
/// otherwise a [`TierKind::Panic`] tier of every member that is not [`Standing::Down`]; no tier
/// when that is empty. A threshold of 0 disables panic mode (a level without healthy members
/// then contributes nothing); a threshold above 100 puts every level with a member not down in
/// panic.
pub fn plan(members: &[Member], panic_threshold_percent: u8) -> Plan {
    let mut present = [false; 256];
    for m in members.iter().filter(|m| m.weight > 0) {
        present[usize::from(m.priority)] = true;
    }
    let threshold = u64::from(panic_threshold_percent);
    let mut tiers = Vec::new();
    for level in (0..=u8::MAX).filter(|&l| present[usize::from(l)]) {
        let at_level = || {
            members
                .iter()
                .enumerate()
                .filter(move |(_, m)| m.priority == level && m.weight > 0)
        };
        let size = at_level().count() as u64;
        let healthy = at_level()
            .filter(|(_, m)| m.standing == Standing::Healthy)
            .count() as u64;
        let (kind, set) = if healthy * 100 >= threshold * size {
            let set = at_level()
                .filter(|(_, m)| m.standing == Standing::Healthy)
                .map(|(i, m)| (i, m.weight));
            (TierKind::Healthy { level }, CandidateSet::new(set))
        } else {
            let set = at_level()
                .filter(|(_, m)| m.standing != Standing::Down)
                .map(|(i, m)| (i, m.weight));
            (TierKind::Panic { level }, CandidateSet::new(set))
        };
        if !set.is_empty() {
            tiers.push(Tier { kind, set });
        }
    }
    Plan { tiers }
}
