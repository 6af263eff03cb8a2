//! The oracle: what the Game Master and the Lobby must end up holding for each game.
//!
//! The model never re-implements the SPEC table. A health event goes through
//! [`domain_runtime::apply_plan`], the same function the Game Master's store folds its
//! batches with; a direct flow (turn generation, an admin stop, a finished game) moves the
//! status along a [`Transition`] the table has already checked, and a generated turn
//! moves the current turn. What makes the prediction exact is the order in which the two
//! kinds of change reach a game; see `docs/decisions/0010-rtm-publisher-and-simulator.md`
//! and [`crate::fleet`].
//!
//! For the Lobby the model keeps the players' stats the way the Lobby folds them
//! ([`lobby_domain::apply_observations`]: initial frozen, maxima raised), and predicts
//! the careers with [`lobby_domain::fold_finished_game_into_careers`], once per finished
//! game (see [`expected_careers`]).

use std::collections::BTreeMap;

use domain_runtime::{
    EngineHealth, HealthEventType, HealthState, PlanOutcome, RuntimeStatus, Transition, apply_plan,
};
use lobby_domain::{
    CareerRecord, InvalidPlayerStats, PlayerObservedStats, PlayerStatsAggregate, UserId,
    apply_observations, fold_finished_game_into_careers,
};
use ports::PlayerTurnStats;

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
    /// The game's current turn.
    current_turn: u32,
    /// The last summary the Game Master published for the game (its debounce memory).
    last_published: Option<EngineHealth>,
    counts: ModelCounts,
    /// The players' stats as the Lobby folds them from every event that carried some.
    stats: BTreeMap<UserId, PlayerStatsAggregate>,
    /// When the game finished, once its `game_finished` was published.
    finished_at_ms: Option<i64>,
}

/// Whether `transition` is a turn being generated (`generation_in_progress → running`),
/// the one flow that moves the current turn on.
#[must_use]
pub fn generates_turn(transition: Transition) -> bool {
    transition.from() == RuntimeStatus::GenerationInProgress
        && transition.to() == RuntimeStatus::Running
}

impl GameModel {
    /// A freshly registered game: `status` at `current_turn`, no engine-health observation
    /// yet, no stats, not finished.
    #[must_use]
    pub fn registered(status: RuntimeStatus, current_turn: u32) -> Self {
        Self {
            state: HealthState {
                status,
                engine_health: None,
            },
            current_turn,
            last_published: None,
            counts: ModelCounts::default(),
            stats: BTreeMap::new(),
            finished_at_ms: None,
        }
    }

    /// The predicted current turn.
    #[must_use]
    pub fn current_turn(&self) -> u32 {
        self.current_turn
    }

    /// When the game finished, if it did.
    #[must_use]
    pub fn finished_at_ms(&self) -> Option<i64> {
        self.finished_at_ms
    }

    /// Records the players' stats one published event carried, as the Lobby folds them.
    ///
    /// # Errors
    /// A stats line the Lobby would refuse (a blank user id).
    pub fn observe_stats(&mut self, stats: &[PlayerTurnStats]) -> Result<(), InvalidPlayerStats> {
        let observed = stats
            .iter()
            .map(|s| {
                PlayerObservedStats::new(
                    &s.user_id,
                    i64::try_from(s.planets).unwrap_or(i64::MAX),
                    i64::try_from(s.population).unwrap_or(i64::MAX),
                    i64::try_from(s.ships_built).unwrap_or(i64::MAX),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        apply_observations(&mut self.stats, &observed);
        Ok(())
    }

    /// Records that the game's `game_finished` was published with this finish time.
    pub fn finish(&mut self, finished_at_ms: i64) {
        self.finished_at_ms.get_or_insert(finished_at_ms);
    }

    /// The game's result per player as capability evaluation reads it: the best value of
    /// each component the Lobby saw in the game.
    #[must_use]
    pub fn final_stats(&self) -> Vec<PlayerObservedStats> {
        self.stats
            .iter()
            .filter_map(|(user, aggregate)| {
                let max = aggregate.max();
                PlayerObservedStats::new(
                    user.as_str(),
                    max.planets(),
                    max.population(),
                    max.ships_built(),
                )
                .ok()
            })
            .collect()
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
        let plan = domain_runtime::plan(event);
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
        if generates_turn(transition) {
            self.current_turn = self.current_turn.saturating_add(1);
        }
        self.counts.flows += 1;
        Ok(())
    }
}

/// The careers the Lobby must hold for the players of `games`: every finished game folded
/// once, with [`fold_finished_game_into_careers`] on its final stats. Players of no
/// finished game have no career record.
#[must_use]
pub fn expected_careers<'a>(
    games: impl IntoIterator<Item = &'a GameModel>,
) -> BTreeMap<UserId, CareerRecord> {
    let mut careers = BTreeMap::new();
    for game in games {
        if game.finished_at_ms.is_none() {
            continue;
        }
        for career in fold_finished_game_into_careers(&careers, &game.final_stats()) {
            careers.insert(career.user_id.clone(), career);
        }
    }
    careers
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
                    let mut model = GameModel::registered(status, 0);
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
        let mut model = GameModel::registered(S::Running, 0);
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
        let mut model = GameModel::registered(S::Running, 0);
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

    #[test]
    fn a_generated_turn_moves_the_turn_and_no_other_flow_does() {
        let t = |from, to| domain_runtime::transition(from, to).unwrap();
        let mut model = GameModel::registered(S::Running, 7);
        model
            .apply_flow(t(S::Running, S::GenerationInProgress))
            .unwrap();
        model
            .apply_flow(t(S::GenerationInProgress, S::GenerationFailed))
            .unwrap();
        model
            .apply_flow(t(S::GenerationFailed, S::Running))
            .unwrap();
        assert_eq!(
            model.current_turn(),
            7,
            "a resumed turn is not a generated one"
        );
        model
            .apply_flow(t(S::Running, S::GenerationInProgress))
            .unwrap();
        model
            .apply_flow(t(S::GenerationInProgress, S::Running))
            .unwrap();
        assert_eq!(model.current_turn(), 8);
        assert!(generates_turn(t(S::GenerationInProgress, S::Running)));
        assert!(!generates_turn(t(S::Stopped, S::Running)));
    }

    fn stats(user: &str, planets: u64, population: u64, ships_built: u64) -> PlayerTurnStats {
        PlayerTurnStats {
            user_id: user.to_owned(),
            planets,
            population,
            ships_built,
        }
    }

    #[test]
    fn careers_fold_each_finished_game_once_with_its_best_values() {
        let mut a = GameModel::registered(S::Running, 0);
        a.observe_stats(&[stats("u1", 3, 100, 1), stats("u2", 1, 50, 0)])
            .unwrap();
        a.observe_stats(&[stats("u1", 2, 300, 4), stats("u2", 5, 40, 2)])
            .unwrap();
        a.finish(10);
        a.finish(11);
        assert_eq!(
            a.finished_at_ms(),
            Some(10),
            "the first finish time is kept"
        );
        let mut b = GameModel::registered(S::Running, 0);
        b.observe_stats(&[stats("u1", 9, 10, 0)]).unwrap();
        b.finish(20);
        let mut unfinished = GameModel::registered(S::Running, 0);
        unfinished
            .observe_stats(&[stats("u3", 99, 99, 99), stats("u1", 99, 99, 99)])
            .unwrap();

        let careers = expected_careers([&a, &unfinished, &b]);
        let row = |u: &str| {
            let c = &careers[&UserId::new(u).unwrap()];
            (
                c.games_finished,
                c.best_planets,
                c.best_population,
                c.most_ships_built,
            )
        };
        assert_eq!(careers.len(), 2, "u3 finished no game");
        assert_eq!(row("u1"), (2, 9, 300, 4));
        assert_eq!(row("u2"), (1, 5, 50, 2));
        assert!(a.observe_stats(&[stats(" ", 1, 1, 1)]).is_err());
    }
}
