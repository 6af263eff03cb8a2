//! Step 5: the worker's counters (`gamemaster_health_events_consumed_total{outcome}`,
//! `gamemaster_lobby_events_published_total{kind}`,
//! `gamemaster_runtime_status_transitions_total{from,to}`,
//! `gamemaster_health_events_errors_total{stage}`).

use domain_runtime::Transition;
use ports::LobbyEventKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// How one entry ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written to the runtime record.
    Applied,
    /// Skipped: a required field missing or malformed.
    Malformed,
    /// Skipped: an event type the contract does not know.
    UnknownEventType,
    /// Skipped: no runtime record for the game.
    UnknownGame,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Self; 4] = [
        Self::Applied,
        Self::Malformed,
        Self::UnknownEventType,
        Self::UnknownGame,
    ];

    /// Label spelling.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Malformed => "malformed",
            Self::UnknownEventType => "unknown_event_type",
            Self::UnknownGame => "unknown_game",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransitionLabels {
    from: &'static str,
    to: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

/// The worker's metric families; cheap to clone (shared counters).
#[derive(Debug, Clone, Default)]
pub struct WorkerMetrics {
    consumed: Family<OutcomeLabel, Counter>,
    published: Family<KindLabel, Counter>,
    transitions: Family<TransitionLabels, Counter>,
    errors: Family<StageLabel, Counter>,
}

impl WorkerMetrics {
    /// Creates the families and registers them in `registry` (which carries the
    /// `gamemaster` prefix).
    #[must_use]
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "health_events_consumed",
            "Health events consumed, by outcome (applied, malformed, unknown_event_type, unknown_game)",
            m.consumed.clone(),
        );
        registry.register(
            "lobby_events_published",
            "Events published on the lobby events stream, by kind",
            m.published.clone(),
        );
        registry.register(
            "runtime_status_transitions",
            "Runtime status transitions made by health events, by from and to status",
            m.transitions.clone(),
        );
        registry.register(
            "health_events_errors",
            "Transient failures of the health events worker, by stage (apply, publish)",
            m.errors.clone(),
        );
        for outcome in Outcome::ALL {
            // Every outcome appears in /metrics from the start, at 0.
            drop(m.consumed.get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            }));
        }
        m
    }

    pub(crate) fn consumed(&self, outcome: Outcome) {
        self.consumed
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub(crate) fn published(&self, kind: LobbyEventKind) {
        self.published
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
    }

    pub(crate) fn transition(&self, t: Transition) {
        self.transitions
            .get_or_create(&TransitionLabels {
                from: t.from().as_str(),
                to: t.to().as_str(),
            })
            .inc();
    }

    pub(crate) fn error(&self, stage: &'static str) {
        self.errors.get_or_create(&StageLabel { stage }).inc();
    }

    /// Entries consumed with `outcome` so far.
    #[must_use]
    pub fn consumed_count(&self, outcome: Outcome) -> u64 {
        self.consumed
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            })
            .get()
    }

    /// Events of `kind` published so far.
    #[must_use]
    pub fn published_count(&self, kind: LobbyEventKind) -> u64 {
        self.published
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .get()
    }

    /// Transitions taken so far.
    #[must_use]
    pub fn transition_count(&self, t: Transition) -> u64 {
        self.transitions
            .get_or_create(&TransitionLabels {
                from: t.from().as_str(),
                to: t.to().as_str(),
            })
            .get()
    }
}
