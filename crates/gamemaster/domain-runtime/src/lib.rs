//! Game Master runtime domain: the transition table between the six runtime statuses and
//! the plan each of the seven health event types maps to (summary plus an optional
//! compare-and-swap transition). The statuses, summaries, event types and the game id are
//! the wire contract's (`contracts`), re-exported here so the Game Master's code names one
//! domain.
//!
//! Everything here is pure data and pure functions. The PostgreSQL adapter, the worker and
//! the simulator's model all call [`apply_plan`], so "CAS or fall back to a health-only
//! write" is decided in exactly one place.

mod health;
pub mod shards;
mod status;

pub use contracts::{GameId, InvalidGameId, MAX_GAME_ID_LEN, storable};
pub use health::{
    EngineHealth, HealthEventType, HealthPlan, PLANS, UnknownEngineHealth, UnknownEventType, plan,
};
pub use shards::{
    EntryPosition, Ownership, Refreshed, ShardClaim, ShardCount, ShardMark, assigned,
    rendezvous_owner,
};
pub use status::{
    RuntimeStatus, TRANSITIONS, Transition, TransitionError, UnknownStatus, transition,
};

use std::time::SystemTime;

/// One game's runtime record as the Game Master stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeRecord {
    /// The game this runtime belongs to.
    pub game_id: GameId,
    /// Current runtime status.
    pub status: RuntimeStatus,
    /// Last engine-health summary; `None` until the first observation.
    pub engine_health: Option<EngineHealth>,
    /// The game's current turn (never negative).
    pub current_turn: u32,
    /// When the record was registered.
    pub created_at: SystemTime,
    /// When the record was last written.
    pub updated_at: SystemTime,
}

/// The part of a runtime record that a health observation reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthState {
    /// Runtime status.
    pub status: RuntimeStatus,
    /// Engine-health summary, `None` before the first observation.
    pub engine_health: Option<EngineHealth>,
}

/// What applying one plan to a [`HealthState`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOutcome {
    /// The state after the write.
    pub state: HealthState,
    /// The transition taken, when the compare-and-swap succeeded.
    pub transitioned: Option<Transition>,
}

/// Applies one plan to the current state, exactly as SPEC step 2 says: with a planned
/// transition whose source is the current status, move the status and write the summary
/// together; otherwise (no transition, or another flow holds the status) write the summary
/// alone and keep the status, whatever it is.
#[must_use]
pub fn apply_plan(current: HealthState, plan: HealthPlan) -> PlanOutcome {
    match plan.transition {
        Some(t) if t.from() == current.status => PlanOutcome {
            state: HealthState {
                status: t.to(),
                engine_health: Some(plan.summary),
            },
            transitioned: Some(t),
        },
        _ => PlanOutcome {
            state: HealthState {
                status: current.status,
                engine_health: Some(plan.summary),
            },
            transitioned: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_against_every_status_follows_the_spec_table() {
        for event in HealthEventType::ALL {
            let plan = crate::plan(event);
            for status in RuntimeStatus::ALL {
                let before = HealthState {
                    status,
                    engine_health: None,
                };
                let out = apply_plan(before, plan);
                assert_eq!(
                    out.state.engine_health,
                    Some(plan.summary),
                    "{event} on {status}"
                );
                let expected_status = match (event, status) {
                    (
                        HealthEventType::ContainerExited
                        | HealthEventType::ContainerOom
                        | HealthEventType::ContainerDisappeared,
                        RuntimeStatus::Running,
                    ) => RuntimeStatus::EngineUnreachable,
                    (HealthEventType::ProbeRecovered, RuntimeStatus::EngineUnreachable) => {
                        RuntimeStatus::Running
                    }
                    _ => status,
                };
                assert_eq!(out.state.status, expected_status, "{event} on {status}");
                assert_eq!(
                    out.transitioned.is_some(),
                    expected_status != status,
                    "{event} on {status}"
                );
            }
        }
    }

    #[test]
    fn a_sequence_sees_the_state_the_previous_step_left() {
        let mut state = HealthState {
            status: RuntimeStatus::Running,
            engine_health: None,
        };
        let steps = [
            (
                HealthEventType::ContainerOom,
                RuntimeStatus::EngineUnreachable,
                true,
            ),
            (
                HealthEventType::ContainerExited,
                RuntimeStatus::EngineUnreachable,
                false,
            ),
            (
                HealthEventType::ProbeRecovered,
                RuntimeStatus::Running,
                true,
            ),
            (
                HealthEventType::ProbeRecovered,
                RuntimeStatus::Running,
                false,
            ),
        ];
        for (event, status, moved) in steps {
            let out = apply_plan(state, crate::plan(event));
            assert_eq!(out.state.status, status, "{event}");
            assert_eq!(out.transitioned.is_some(), moved, "{event}");
            state = out.state;
        }
        assert_eq!(state.engine_health, Some(EngineHealth::Healthy));
    }
}
