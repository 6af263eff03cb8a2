//! Step 5: the worker's counters (`lobby_gm_events_consumed_total{outcome}`,
//! `lobby_game_status_transitions_total{from,to,trigger}`,
//! `lobby_capability_evaluations_total{outcome}`, `lobby_gm_events_errors_total{stage}`).

use lobby_domain::Transition;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use stream_consumer::{CountsBy, labels};

contracts::wire_enum! {
    /// How one entry ended.
    pub enum Outcome {
        /// A snapshot update: snapshot written, stats recorded.
        Applied = "applied",
        /// A snapshot update older than the stored snapshot: stats recorded, snapshot kept.
        Stale = "stale",
        /// A `game_finished` that moved the game to `finished` (and was evaluated).
        Finished = "finished",
        /// A `game_finished` for a game already finished: a replay (evaluated behind the
        /// guard, so nothing changed twice).
        Replayed = "replayed",
        /// A `game_finished` for a game neither running nor paused: left alone.
        UnexpectedStatus = "unexpected_status",
        /// Skipped: a field missing or malformed.
        Malformed = "malformed",
        /// Skipped: a `kind` the contract does not know.
        UnknownKind = "unknown_kind",
        /// Skipped: a game the Lobby does not know.
        UnknownGame = "unknown_game",
        /// Skipped: the database refused the entry's write on its own, or its evaluation past
        /// the refusal hold (decision 0016).
        Refused = "refused",
    }
}

contracts::wire_enum! {
    /// How one capability evaluation ended.
    pub enum EvaluationOutcome {
        /// The game was folded into the careers now.
        Evaluated = "evaluated",
        /// The guard showed it was done before.
        AlreadyEvaluated = "already_evaluated",
        /// The database refused it for longer than the refusal hold; the entry was skipped and
        /// the game's careers were not folded.
        Refused = "refused",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransitionLabels {
    from: &'static str,
    to: &'static str,
    trigger: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

/// The worker's metric families; cheap to clone (shared counters).
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    consumed: CountsBy<Outcome>,
    transitions: Family<TransitionLabels, Counter>,
    evaluations: CountsBy<EvaluationOutcome>,
    errors: Family<StageLabel, Counter>,
}

impl Default for WorkerMetrics {
    /// Unregistered families, every outcome already at 0.
    fn default() -> Self {
        Self {
            consumed: CountsBy::new(labels::OUTCOME),
            transitions: Family::default(),
            evaluations: CountsBy::new(labels::OUTCOME),
            errors: Family::default(),
        }
    }
}

impl WorkerMetrics {
    /// Creates the families and registers them in `registry` (which carries the `lobby`
    /// prefix).
    #[must_use]
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        m.consumed.register(
            registry,
            "gm_events_consumed",
            "Game Master events consumed, by outcome (applied, stale, finished, replayed, unexpected_status, malformed, unknown_kind, unknown_game, refused)",
        );
        registry.register(
            "game_status_transitions",
            "Game status transitions made by Game Master events, by from, to and trigger",
            m.transitions.clone(),
        );
        m.evaluations.register(
            registry,
            "capability_evaluations",
            "Capability evaluations of finished games, by outcome (evaluated, already_evaluated, refused)",
        );
        registry.register(
            "gm_events_errors",
            "Failures of the gm events worker that held the offset, by stage (apply, finish, evaluate)",
            m.errors.clone(),
        );
        m
    }

    pub(crate) fn consumed(&self, outcome: Outcome) {
        self.consumed.inc(outcome);
    }

    pub(crate) fn transition(&self, t: Transition) {
        self.transitions
            .get_or_create(&TransitionLabels {
                from: t.from().as_str(),
                to: t.to().as_str(),
                trigger: t.trigger().as_str(),
            })
            .inc();
    }

    pub(crate) fn evaluation(&self, outcome: EvaluationOutcome) {
        self.evaluations.inc(outcome);
    }

    pub(crate) fn error(&self, stage: &'static str) {
        self.errors.get_or_create(&StageLabel { stage }).inc();
    }

    /// Entries consumed with `outcome` so far.
    #[must_use]
    pub fn consumed_count(&self, outcome: Outcome) -> u64 {
        self.consumed.get(outcome)
    }

    /// Transitions taken so far.
    #[must_use]
    pub fn transition_count(&self, t: Transition) -> u64 {
        self.transitions
            .get_or_create(&TransitionLabels {
                from: t.from().as_str(),
                to: t.to().as_str(),
                trigger: t.trigger().as_str(),
            })
            .get()
    }

    /// Evaluations with `outcome` so far.
    #[must_use]
    pub fn evaluation_count(&self, outcome: EvaluationOutcome) -> u64 {
        self.evaluations.get(outcome)
    }

    /// Failures at `stage` (`apply`, `finish`, `evaluate`) so far.
    #[must_use]
    pub fn error_count(&self, stage: &'static str) -> u64 {
        self.errors.get_or_create(&StageLabel { stage }).get()
    }
}
