//! Each game's life, drawn from a seeded random number generator.
//!
//! A [`GameScript`] plays one engine container (up and answering, failing its probes,
//! down) and, next to it, the Game Master's other flows on the game's runtime record. At
//! each step it draws the next [`Action`]: a health observation the Runtime Manager would
//! publish, or a direct status change (turn generation, an admin stop or restart, the end
//! of the game). Which flows are possible depends on the status the model predicts, so the
//! script asks for it on every draw.
//!
//! A game's sequence of actions depends only on the run's seed and the game's index: the
//! same seed replays the same lives, whatever the timing of the run (which only decides
//! how far each game gets).

use domain_runtime::{HealthEventType, RuntimeStatus, Transition, transition};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use HealthEventType as E;
use RuntimeStatus as S;

/// A direct change the simulator makes in the Game Master's database, standing in for a
/// Game Master flow other than the health-events consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowKind {
    /// Turn generation takes the runtime: `running → generation_in_progress`.
    TurnStarted,
    /// The turn was generated: `generation_in_progress → running`.
    TurnGenerated,
    /// Turn generation failed: `generation_in_progress → generation_failed`.
    TurnFailed,
    /// A failed turn is generated again: `generation_failed → generation_in_progress`.
    TurnRetried,
    /// An operator resumes a game whose turn failed: `generation_failed → running`.
    TurnResumed,
    /// An administrator stops the runtime: `… → stopped`.
    AdminStop,
    /// An administrator starts it again: `stopped → running`.
    AdminRestart,
    /// The game is over: `… → finished` (terminal).
    GameFinished,
}

impl FlowKind {
    /// Every kind, in the order the summary lists them.
    pub const ALL: [Self; 8] = [
        Self::TurnStarted,
        Self::TurnGenerated,
        Self::TurnFailed,
        Self::TurnRetried,
        Self::TurnResumed,
        Self::AdminStop,
        Self::AdminRestart,
        Self::GameFinished,
    ];

    /// A short human name.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::TurnStarted => "turn started",
            Self::TurnGenerated => "turn generated",
            Self::TurnFailed => "turn failed",
            Self::TurnRetried => "turn retried",
            Self::TurnResumed => "turn resumed",
            Self::AdminStop => "admin stop",
            Self::AdminRestart => "admin restart",
            Self::GameFinished => "game finished",
        }
    }
}

/// Which flow may fire from which status, and how often (weights are relative to a
/// container's health events, which weigh [`EVENT_WEIGHT`] in total).
pub const FLOWS: [(FlowKind, RuntimeStatus, RuntimeStatus, u32); 15] = [
    (
        FlowKind::TurnStarted,
        S::Running,
        S::GenerationInProgress,
        2_500,
    ),
    (
        FlowKind::TurnGenerated,
        S::GenerationInProgress,
        S::Running,
        4_000,
    ),
    (
        FlowKind::TurnFailed,
        S::GenerationInProgress,
        S::GenerationFailed,
        300,
    ),
    (
        FlowKind::TurnRetried,
        S::GenerationFailed,
        S::GenerationInProgress,
        2_000,
    ),
    (
        FlowKind::TurnResumed,
        S::GenerationFailed,
        S::Running,
        1_000,
    ),
    (FlowKind::AdminStop, S::Running, S::Stopped, 40),
    (FlowKind::AdminStop, S::GenerationInProgress, S::Stopped, 30),
    (FlowKind::AdminStop, S::GenerationFailed, S::Stopped, 200),
    (FlowKind::AdminStop, S::EngineUnreachable, S::Stopped, 150),
    (FlowKind::AdminRestart, S::Stopped, S::Running, 1_500),
    (FlowKind::GameFinished, S::Running, S::Finished, 3),
    (
        FlowKind::GameFinished,
        S::GenerationInProgress,
        S::Finished,
        3,
    ),
    (FlowKind::GameFinished, S::GenerationFailed, S::Finished, 10),
    (
        FlowKind::GameFinished,
        S::EngineUnreachable,
        S::Finished,
        10,
    ),
    (FlowKind::GameFinished, S::Stopped, S::Finished, 30),
];

/// Total weight of a container's health events in every state.
pub const EVENT_WEIGHT: u32 = 10_000;

/// What the engine container is doing, as far as the Runtime Manager can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// Running and answering its probe.
    Up,
    /// Running (or just restarted) but its probe fails, `n` times in a row so far.
    Failing(u32),
    /// Exited, killed or gone.
    Down,
}

/// Health events a container in each state produces, with their weights (summing to
/// [`EVENT_WEIGHT`]).
fn events_of(container: Container) -> &'static [(HealthEventType, u32)] {
    match container {
        Container::Up => &[
            (E::ProbeFailed, 5_500),
            (E::InspectUnhealthy, 2_000),
            (E::ContainerExited, 1_000),
            (E::ContainerOom, 600),
            (E::ContainerDisappeared, 400),
            (E::ContainerStarted, 500),
        ],
        Container::Failing(_) => &[
            (E::ProbeRecovered, 6_000),
            (E::ProbeFailed, 2_500),
            (E::InspectUnhealthy, 500),
            (E::ContainerExited, 500),
            (E::ContainerOom, 300),
            (E::ContainerDisappeared, 200),
        ],
        Container::Down => &[
            (E::ContainerStarted, 7_000),
            (E::ProbeFailed, 2_500),
            (E::ContainerDisappeared, 500),
        ],
    }
}

/// One health observation, as the Runtime Manager would publish it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// What was observed.
    pub event_type: HealthEventType,
    /// The engine container's id (a new one after each restart).
    pub container_id: String,
    /// Observer details, JSON object text; `None` for none.
    pub details: Option<String>,
}

/// A game's next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Publish a health observation through the Runtime Manager's publisher.
    Observe(Observation),
    /// Change the runtime status directly, as another Game Master flow would.
    Flow(FlowKind, Transition),
}

/// One game's seeded life.
#[derive(Debug, Clone)]
pub struct GameScript {
    rng: StdRng,
    index: u32,
    container: Container,
    restarts: u32,
    started: bool,
}

impl GameScript {
    /// The script of game number `index` in a run seeded with `seed`.
    #[must_use]
    pub fn new(seed: u64, index: u32) -> Self {
        // Spread the indices over the seed space (splitmix64's constant); seed_from_u64
        // mixes the result again.
        let game_seed = seed ^ u64::from(index).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self {
            rng: StdRng::seed_from_u64(game_seed),
            index,
            container: Container::Up,
            restarts: 0,
            started: false,
        }
    }

    /// The turn the game is registered at.
    pub fn initial_turn(&mut self) -> u32 {
        self.rng.random_range(0..50)
    }

    /// Draws the next action for a game whose runtime the model holds as `status`. The
    /// first action is always the container's start.
    pub fn next(&mut self, status: RuntimeStatus) -> Action {
        if !self.started {
            self.started = true;
            return Action::Observe(self.observation(E::ContainerStarted));
        }
        let flows: Vec<(FlowKind, Transition, u32)> = FLOWS
            .iter()
            .filter(|(_, from, _, _)| *from == status)
            .filter_map(|&(kind, from, to, weight)| {
                transition(from, to).ok().map(|t| (kind, t, weight))
            })
            .collect();
        let flow_weight: u32 = flows.iter().map(|(_, _, w)| w).sum();
        let mut pick = self.rng.random_range(0..EVENT_WEIGHT + flow_weight);
        for &(kind, t, weight) in &flows {
            if pick < weight {
                return Action::Flow(kind, t);
            }
            pick -= weight;
        }
        let mut event = E::ProbeFailed;
        for &(candidate, weight) in events_of(self.container) {
            if pick < weight {
                event = candidate;
                break;
            }
            pick -= weight;
        }
        Action::Observe(self.observation(event))
    }

    /// Moves the container along `event` and describes the observation.
    fn observation(&mut self, event: HealthEventType) -> Observation {
        let details = match event {
            E::ContainerStarted => {
                if self.container == Container::Down {
                    self.restarts += 1;
                }
                // A (re)started engine answers its probe only after warming up.
                self.container = if self.restarts == 0 {
                    Container::Up
                } else {
                    Container::Failing(0)
                };
                None
            }
            E::ProbeRecovered => {
                self.container = Container::Up;
                None
            }
            E::ProbeFailed => {
                let n = match self.container {
                    Container::Failing(n) => n + 1,
                    Container::Up => 1,
                    Container::Down => 1,
                };
                if self.container != Container::Down {
                    self.container = Container::Failing(n);
                }
                Some(format!(r#"{{"consecutive_failures":{n}}}"#))
            }
            E::InspectUnhealthy => Some(r#"{"health":"unhealthy"}"#.to_owned()),
            E::ContainerExited => {
                self.container = Container::Down;
                let code = self.rng.random_range(1..=3);
                Some(format!(r#"{{"exit_code":{code}}}"#))
            }
            E::ContainerOom => {
                self.container = Container::Down;
                Some(r#"{"exit_code":137}"#.to_owned())
            }
            E::ContainerDisappeared => {
                self.container = Container::Down;
                None
            }
        };
        Observation {
            event_type: event,
            container_id: format!("engine-{:05}-{}", self.index, self.restarts),
            details,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::GameModel;

    /// Plays `steps` actions of one game against the model, as the fleet does.
    fn play(seed: u64, index: u32, steps: usize) -> Vec<Action> {
        let mut script = GameScript::new(seed, index);
        let mut model = GameModel::registered(S::Running, 0);
        (0..steps)
            .map(|_| {
                let action = script.next(model.status());
                match &action {
                    Action::Observe(o) => {
                        model.observe(o.event_type);
                    }
                    Action::Flow(_, t) => model.apply_flow(*t).unwrap(),
                }
                action
            })
            .collect()
    }

    #[test]
    fn the_same_seed_replays_the_same_life_and_another_seed_does_not() {
        let a = play(42, 7, 2_000);
        assert_eq!(a, play(42, 7, 2_000));
        assert_ne!(a, play(43, 7, 2_000));
        assert_ne!(a, play(42, 8, 2_000));
        // A longer run starts with the shorter one.
        assert_eq!(play(42, 7, 500), a[..500]);
        let mut script = GameScript::new(42, 7);
        let turn = script.initial_turn();
        assert_eq!(turn, GameScript::new(42, 7).initial_turn());
    }

    #[test]
    fn every_flow_is_a_declared_transition() {
        for (kind, from, to, weight) in FLOWS {
            assert!(transition(from, to).is_ok(), "{kind:?}: {from} → {to}");
            assert!(weight > 0);
        }
        for container in [Container::Up, Container::Failing(1), Container::Down] {
            let total: u32 = events_of(container).iter().map(|(_, w)| w).sum();
            assert_eq!(total, EVENT_WEIGHT, "{container:?}");
        }
    }

    #[test]
    fn a_long_life_visits_every_event_type_every_status_and_every_flow() {
        let mut events = std::collections::HashSet::new();
        let mut flows = std::collections::HashSet::new();
        let mut statuses = std::collections::HashSet::new();
        for index in 0..50 {
            let mut script = GameScript::new(1, index);
            let mut model = GameModel::registered(S::Running, 0);
            for _ in 0..3_000 {
                match script.next(model.status()) {
                    Action::Observe(o) => {
                        events.insert(o.event_type);
                        model.observe(o.event_type);
                    }
                    Action::Flow(kind, t) => {
                        flows.insert(kind);
                        model.apply_flow(t).unwrap();
                    }
                }
                statuses.insert(model.status());
            }
        }
        assert_eq!(events.len(), E::ALL.len());
        assert_eq!(flows.len(), FlowKind::ALL.len());
        assert_eq!(statuses.len(), S::ALL.len());
    }

    #[test]
    fn the_first_observation_starts_the_container_and_details_are_json_objects() {
        let mut script = GameScript::new(5, 0);
        let Action::Observe(first) = script.next(S::Running) else {
            panic!("the first action must be an observation");
        };
        assert_eq!(first.event_type, E::ContainerStarted);
        for _ in 0..500 {
            if let Action::Observe(o) = script.next(S::Running) {
                let envelope = rtm_domain::HealthEventEnvelope::new(
                    "g",
                    o.container_id,
                    o.event_type,
                    1,
                    o.details.as_deref(),
                );
                assert!(envelope.is_ok(), "{envelope:?}");
            }
        }
    }
}
