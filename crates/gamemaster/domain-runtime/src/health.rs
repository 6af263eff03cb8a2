//! Engine-health summaries, the Runtime Manager's health event types, and the plan table
//! that maps one to the other.

use std::fmt;
use std::str::FromStr;

use crate::status::{RuntimeStatus, Transition, transition};

/// The short summary written to `runtime_records.engine_health` and carried as
/// `engine_health_summary` on `gm:lobby_events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngineHealth {
    /// The container runs and answers probes.
    Healthy,
    /// The engine's probe failed.
    ProbeFailed,
    /// Docker inspect reported the container unhealthy.
    InspectUnhealthy,
    /// The container exited.
    Exited,
    /// The container was killed for running out of memory.
    Oom,
    /// The container disappeared.
    Disappeared,
}

impl EngineHealth {
    /// Every summary.
    pub const ALL: [Self; 6] = [
        Self::Healthy,
        Self::ProbeFailed,
        Self::InspectUnhealthy,
        Self::Exited,
        Self::Oom,
        Self::Disappeared,
    ];

    /// The wire and database spelling.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::ProbeFailed => "probe_failed",
            Self::InspectUnhealthy => "inspect_unhealthy",
            Self::Exited => "exited",
            Self::Oom => "oom",
            Self::Disappeared => "disappeared",
        }
    }

    /// Spelling of an optional summary: the empty string before the first observation.
    #[must_use]
    pub fn wire(summary: Option<Self>) -> &'static str {
        summary.map_or("", Self::as_str)
    }

    /// Parses the stored column, where the empty string means "no observation yet".
    ///
    /// # Errors
    /// [`UnknownEngineHealth`] for any other string that names no summary.
    pub fn parse_stored(s: &str) -> Result<Option<Self>, UnknownEngineHealth> {
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse().map(Some)
        }
    }
}

impl fmt::Display for EngineHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no engine-health summary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown engine health summary {0:?}")]
pub struct UnknownEngineHealth(pub String);

impl FromStr for EngineHealth {
    type Err = UnknownEngineHealth;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|h| h.as_str() == s)
            .ok_or_else(|| UnknownEngineHealth(s.to_owned()))
    }
}

/// The `event_type` values the Runtime Manager publishes on `runtime:health_events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthEventType {
    /// The start service ran the container.
    ContainerStarted,
    /// The container exited.
    ContainerExited,
    /// The container was OOM-killed.
    ContainerOom,
    /// The container vanished.
    ContainerDisappeared,
    /// Docker inspect reported it unhealthy.
    InspectUnhealthy,
    /// The engine's probe failed.
    ProbeFailed,
    /// The engine's probe succeeded again after failing.
    ProbeRecovered,
}

impl HealthEventType {
    /// Every event type.
    pub const ALL: [Self; 7] = [
        Self::ContainerStarted,
        Self::ContainerExited,
        Self::ContainerOom,
        Self::ContainerDisappeared,
        Self::InspectUnhealthy,
        Self::ProbeFailed,
        Self::ProbeRecovered,
    ];

    /// The wire spelling.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ContainerStarted => "container_started",
            Self::ContainerExited => "container_exited",
            Self::ContainerOom => "container_oom",
            Self::ContainerDisappeared => "container_disappeared",
            Self::InspectUnhealthy => "inspect_unhealthy",
            Self::ProbeFailed => "probe_failed",
            Self::ProbeRecovered => "probe_recovered",
        }
    }

    /// The plan the Game Master follows for this event type (see [`PLANS`]).
    #[must_use]
    pub fn plan(self) -> HealthPlan {
        PLANS
            .iter()
            .find(|(event, _)| *event == self)
            .map(|(_, plan)| *plan)
            .unwrap_or(FALLBACK_PLAN)
    }
}

impl fmt::Display for HealthEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no health event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown health event type {0:?}")]
pub struct UnknownEventType(pub String);

impl FromStr for HealthEventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

/// What the Game Master does for one event type: the summary to write and, optionally, the
/// compare-and-swap transition to attempt in the same write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPlan {
    /// Summary written whatever the status.
    pub summary: EngineHealth,
    /// Transition attempted when the record is in its source status.
    pub transition: Option<Transition>,
}

const fn plan(summary: EngineHealth, cas: Option<(RuntimeStatus, RuntimeStatus)>) -> HealthPlan {
    let transition = match cas {
        None => None,
        Some((from, to)) => match transition(from, to) {
            Ok(t) => Some(t),
            // Evaluated at compile time: an undeclared pair here fails the build.
            Err(_) => panic!("PLANS names a transition the table does not declare"),
        },
    };
    HealthPlan {
        summary,
        transition,
    }
}

const TO_UNREACHABLE: Option<(RuntimeStatus, RuntimeStatus)> =
    Some((RuntimeStatus::Running, RuntimeStatus::EngineUnreachable));

/// The event type → plan table of SPEC §Game Master, as data.
pub const PLANS: [(HealthEventType, HealthPlan); 7] = [
    (
        HealthEventType::ContainerStarted,
        plan(EngineHealth::Healthy, None),
    ),
    (
        HealthEventType::ProbeRecovered,
        plan(
            EngineHealth::Healthy,
            Some((RuntimeStatus::EngineUnreachable, RuntimeStatus::Running)),
        ),
    ),
    (
        HealthEventType::ProbeFailed,
        plan(EngineHealth::ProbeFailed, None),
    ),
    (
        HealthEventType::InspectUnhealthy,
        plan(EngineHealth::InspectUnhealthy, None),
    ),
    (
        HealthEventType::ContainerExited,
        plan(EngineHealth::Exited, TO_UNREACHABLE),
    ),
    (
        HealthEventType::ContainerOom,
        plan(EngineHealth::Oom, TO_UNREACHABLE),
    ),
    (
        HealthEventType::ContainerDisappeared,
        plan(EngineHealth::Disappeared, TO_UNREACHABLE),
    ),
];

// Never used: every event type has a row in PLANS (checked by a test). It exists so that
// `plan()` needs no panic path.
const FALLBACK_PLAN: HealthPlan = plan(EngineHealth::Healthy, None);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_has_exactly_one_plan_matching_the_spec() {
        use EngineHealth as H;
        use HealthEventType as E;
        use RuntimeStatus as S;
        let expected = [
            (E::ContainerStarted, H::Healthy, None),
            (
                E::ProbeRecovered,
                H::Healthy,
                Some((S::EngineUnreachable, S::Running)),
            ),
            (E::ProbeFailed, H::ProbeFailed, None),
            (E::InspectUnhealthy, H::InspectUnhealthy, None),
            (
                E::ContainerExited,
                H::Exited,
                Some((S::Running, S::EngineUnreachable)),
            ),
            (
                E::ContainerOom,
                H::Oom,
                Some((S::Running, S::EngineUnreachable)),
            ),
            (
                E::ContainerDisappeared,
                H::Disappeared,
                Some((S::Running, S::EngineUnreachable)),
            ),
        ];
        for (event, summary, cas) in expected {
            assert_eq!(
                PLANS.iter().filter(|(e, _)| *e == event).count(),
                1,
                "{event}"
            );
            let plan = event.plan();
            assert_eq!(plan.summary, summary, "{event}");
            assert_eq!(plan.transition.map(|t| (t.from(), t.to())), cas, "{event}");
        }
    }

    #[test]
    fn wire_strings_round_trip() {
        for event in HealthEventType::ALL {
            assert_eq!(event.as_str().parse::<HealthEventType>(), Ok(event));
        }
        for health in EngineHealth::ALL {
            assert_eq!(
                EngineHealth::parse_stored(health.as_str()),
                Ok(Some(health))
            );
        }
        assert_eq!(EngineHealth::parse_stored(""), Ok(None));
        assert_eq!(EngineHealth::wire(None), "");
        assert!("container_restarted".parse::<HealthEventType>().is_err());
        assert!(EngineHealth::parse_stored("sick").is_err());
    }
}
