//! The oracle: what the Game Master must end up holding for each game.
//!
//! The model never re-implements the SPEC table. A health event goes through
//! [`domain_runtime::apply_plan`], the same function the Game Master's store folds its
//! batches with; a direct flow (turn generation, an admin stop, a finished game) moves the
//! status along a [`Transition`] the table has already checked. What makes the prediction
//! exact is the order in which the two kinds of change reach a game; see
//! `docs/decisions/0010-rtm-publisher-and-simulator.md` and [`crate::fleet`].

use domain_runtime::{
    EngineHealth, HealthEventType, HealthState, PlanOutcome, RuntimeStatus, Transition, apply_plan,
};

/// Counters the model keeps per game, summed over the fleet for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelCounts {
    /// Health events applied.
    pub events: u64,
    /// Health events whose compare-and-swap moved the status.
    pub health_transitions: u64,
    /// Health events with a planned transition that found another flow holding the
    /// status (neither the CAS source nor its target): the Game Master wrote the summary
    /// alone.
    pub cas_conflicts: u64,
    /// `runtime_snapshot_update`s the Game Master should publish for these events.
    pub snapshots: u64,
    /// Direct status changes applied (turn generation, stops, restarts, finishes).
    pub flows: u64,
}

impl std::ops::AddAssign for ModelCounts {
    fn add_assign(&mut self, other: Self) {
        self.events += other.events;
        self.health_transitions += other.health_transitions;
        self.cas_conflicts += other.cas_conflicts;
        self.snapshots += other.snapshots;
        self.flows += other.flows;
    }
}

/// The model of one game's runtime record, as the Game Master should hold it once it has
/// consumed every event published for the game so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GameModel {
    state: HealthState,
    /// The last summary the Game Master published for the game (its debounce memory).
    last_published: Option<EngineHealth>,
    counts: ModelCounts,
}

impl GameModel {
    /// A freshly registered game: `status`, no engine-health observation yet.
    #[must_use]
    pub fn registered(status: RuntimeStatus) -> Self {
        Self {
            state: HealthState {
                status,
                engine_health: None,
            },
            last_published: None,
            counts: ModelCounts::default(),
        }
    }

    /// Status and summary as predicted.
    #[must_use]
    pub fn state(&self) -> HealthState {
        self.state
    }

    /// The predicted status.
    #[must_use]
    pub fn status(&self) -> RuntimeStatus {
        self.state.status
    }

    /// The counters so far.
    #[must_use]
    pub fn counts(&self) -> ModelCounts {
        self.counts
    }

    /// Applies one health event, in the order it was appended to the stream: the event
    /// type's plan through [`apply_plan`], then the Game Master's publication rule (a
    /// snapshot when the status moved or the summary differs from the last one published).
    pub fn observe(&mut self, event: HealthEventType) -> PlanOutcome {
        let plan = event.plan();
        let outcome = apply_plan(self.state, plan);
        self.counts.events += 1;
        match (plan.transition, outcome.transitioned) {
            (_, Some(_)) => self.counts.health_transitions += 1,
            (Some(planned), None) if self.state.status != planned.to() => {
                self.counts.cas_conflicts += 1;
            }
            _ => {}
        }
        if outcome.transitioned.is_some() || self.last_published != outcome.state.engine_health {
            self.counts.snapshots += 1;
            self.last_published = outcome.state.engine_health;
        }
        self.state = outcome.state;
        outcome
    }

    /// Applies a direct status change the simulator made in the database (a successful
    /// compare-and-swap from `transition.from()`). The summary is untouched.
    ///
    /// # Errors
    /// [`WrongSource`] when the model is not in the transition's source status: the caller
    /// proposed a change the model cannot have made.
    pub fn apply_flow(&mut self, transition: Transition) -> Result<(), WrongSource> {
        if transition.from() != self.state.status {
            return Err(WrongSource {
                transition,
                status: self.state.status,
            });
        }
        self.state.status = transition.to();
        self.counts.flows += 1;
        Ok(())
    }
}

/// A direct change proposed from a status the model is not in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot apply {transition} to a game the model holds as {status}")]
pub struct WrongSource {
    /// The change.
    pub transition: Transition,
    /// Where the model is.
    pub status: RuntimeStatus,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use EngineHealth as H;
    use HealthEventType as E;
    use RuntimeStatus as S;

    /// SPEC §Game Master, written out by hand: the summary each event type writes and the
    /// only (from, to) its compare-and-swap may take.
    /// An event type, its summary, and its compare-and-swap `(from, to)` if any.
    type Row = (E, H, Option<(S, S)>);

    const SPEC: [Row; 7] = [
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

    #[test]
    fn every_event_type_on_every_status_follows_the_spec_table() {
        assert_eq!(SPEC.len(), E::ALL.len());
        for (event, summary, cas) in SPEC {
            for status in S::ALL {
                for before in [None, Some(H::Healthy), Some(H::Oom)] {
                    let mut model = GameModel::registered(status);
                    model.state.engine_health = before;
                    let outcome = model.observe(event);
                    let expected_status = match cas {
                        Some((from, to)) if from == status => to,
                        _ => status,
                    };
                    let case = format!("{event} on {status} (summary {before:?})");
                    assert_eq!(model.status(), expected_status, "{case}");
                    assert_eq!(model.state().engine_health, Some(summary), "{case}");
                    assert_eq!(
                        outcome.transitioned.map(|t| (t.from(), t.to())),
                        cas.filter(|(from, _)| *from == status),
                        "{case}"
                    );
                    let conflict = cas.is_some_and(|(from, to)| status != from && status != to);
                    assert_eq!(model.counts().cas_conflicts, u64::from(conflict), "{case}");
                }
            }
        }
    }

    #[test]
    fn snapshots_follow_the_game_masters_debounce() {
        let mut model = GameModel::registered(S::Running);
        // The first event always publishes; a repeated summary does not, unless the
        // status moved; a new summary does.
        let steps = [
            (E::ProbeFailed, true),
            (E::ProbeFailed, false),
            (E::InspectUnhealthy, true),
            (E::ContainerExited, true),
            (E::ContainerOom, true),
            (E::ContainerOom, false),
            (E::ContainerStarted, true),
            (E::ProbeRecovered, true),
            (E::ProbeRecovered, false),
        ];
        let mut expected = 0;
        for (event, publishes) in steps {
            model.observe(event);
            expected += u64::from(publishes);
            assert_eq!(model.counts().snapshots, expected, "{event}");
        }
        assert_eq!(model.state().status, S::Running);
        assert_eq!(model.counts().health_transitions, 2);
        assert_eq!(model.counts().events, steps.len() as u64);
    }

    #[test]
    fn a_flow_moves_only_from_its_source_and_keeps_the_summary() {
        let mut model = GameModel::registered(S::Running);
        model.observe(E::ProbeFailed);
        let start_turn = domain_runtime::transition(S::Running, S::GenerationInProgress).unwrap();
        model.apply_flow(start_turn).unwrap();
        assert_eq!(model.status(), S::GenerationInProgress);
        assert_eq!(model.state().engine_health, Some(H::ProbeFailed));
        // Another flow holds the status: the exit writes the summary alone.
        model.observe(E::ContainerExited);
        assert_eq!(model.status(), S::GenerationInProgress);
        assert_eq!(model.counts().cas_conflicts, 1);
        let err = model.apply_flow(start_turn).unwrap_err();
        assert_eq!(err.status, S::GenerationInProgress);
        assert_eq!(model.counts().flows, 1);
    }
}
