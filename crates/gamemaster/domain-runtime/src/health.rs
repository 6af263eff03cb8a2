//! The plan table that maps each health event type to the summary it writes and the
//! transition it attempts (the types themselves are the contract's).

pub use contracts::{EngineHealth, HealthEventType, UnknownEngineHealth, UnknownEventType};

use crate::status::{RuntimeStatus, Transition, transition};

/// The plan the Game Master follows for `event` (see [`PLANS`]).
#[must_use]
pub fn plan(event: HealthEventType) -> HealthPlan {
    PLANS
        .iter()
        .find(|(e, _)| *e == event)
        .map(|(_, plan)| *plan)
        .unwrap_or(FALLBACK_PLAN)
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

const fn make(summary: EngineHealth, cas: Option<(RuntimeStatus, RuntimeStatus)>) -> HealthPlan {
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
        make(EngineHealth::Healthy, None),
    ),
    (
        HealthEventType::ProbeRecovered,
        make(
            EngineHealth::Healthy,
            Some((RuntimeStatus::EngineUnreachable, RuntimeStatus::Running)),
        ),
    ),
    (
        HealthEventType::ProbeFailed,
        make(EngineHealth::ProbeFailed, None),
    ),
    (
        HealthEventType::InspectUnhealthy,
        make(EngineHealth::InspectUnhealthy, None),
    ),
    (
        HealthEventType::ContainerExited,
        make(EngineHealth::Exited, TO_UNREACHABLE),
    ),
    (
        HealthEventType::ContainerOom,
        make(EngineHealth::Oom, TO_UNREACHABLE),
    ),
    (
        HealthEventType::ContainerDisappeared,
        make(EngineHealth::Disappeared, TO_UNREACHABLE),
    ),
];

// Never used: every event type has a row in PLANS (checked by a test). It exists so that
// `plan` needs no panic path.
const FALLBACK_PLAN: HealthPlan = make(EngineHealth::Healthy, None);

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
            let plan = plan(event);
            assert_eq!(plan.summary, summary, "{event}");
            assert_eq!(plan.transition.map(|t| (t.from(), t.to())), cas, "{event}");
        }
    }
}
