//! Step 5: the worker's counters (`gamemaster_health_events_consumed_total{outcome}`,
//! `gamemaster_lobby_events_published_total{kind}`,
//! `gamemaster_runtime_status_transitions_total{from,to}`,
//! `gamemaster_health_events_errors_total{stage}`, `gamemaster_shard_lag_seconds{shard}`),
//! and the owned shards' lags as a report for `/readyz` ([`ShardLags`]).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use domain_runtime::Transition;
use ports::LobbyEventKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use stream_consumer::{CountsBy, labels};

contracts::wire_enum! {
    /// How one entry ended.
    pub enum Outcome {
        /// Written to the runtime record.
        Applied = "applied",
        /// Skipped: a required field missing or malformed.
        Malformed = "malformed",
        /// Skipped: an event type the contract does not know.
        UnknownEventType = "unknown_event_type",
        /// Skipped: no runtime record for the game.
        UnknownGame = "unknown_game",
        /// Skipped: the database refused the entry's write on its own (decision 0016).
        Refused = "refused",
        /// Not applied again: at or below its shard's checkpoint (decision 0023).
        Replayed = "replayed",
        /// Left to another instance: its shard is not this one's.
        NotOwned = "not_owned",
    }
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

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ShardLabel {
    shard: u32,
}

/// Each owned shard's lag in seconds (from its progress to the stream's last entry, as
/// last measured), shared with whoever reports it (`/readyz`). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ShardLags(Arc<Mutex<BTreeMap<u32, f64>>>);

impl ShardLags {
    /// The owned shards and their lags, by shard.
    #[must_use]
    pub fn get(&self) -> BTreeMap<u32, f64> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, lags: BTreeMap<u32, f64>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = lags;
    }
}

/// The worker's metric families; cheap to clone (shared counters).
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    /// Touched once per entry and per snapshot: `CountsBy` looks each counter up once, not
    /// on every increment (a lock and a hash each; visible in the drain's profile).
    consumed: CountsBy<Outcome>,
    published: CountsBy<LobbyEventKind>,
    transitions: Family<TransitionLabels, Counter>,
    errors: Family<StageLabel, Counter>,
    shards_owned: Gauge,
    fenced: Counter,
    shard_lag: Family<ShardLabel, Gauge<f64, AtomicU64>>,
    lags: ShardLags,
}

impl Default for WorkerMetrics {
    /// Unregistered families, every outcome and every kind already at 0.
    fn default() -> Self {
        Self {
            consumed: CountsBy::new(labels::OUTCOME),
            published: CountsBy::new(labels::KIND),
            transitions: Family::default(),
            errors: Family::default(),
            shards_owned: Gauge::default(),
            fenced: Counter::default(),
            shard_lag: Family::default(),
            lags: ShardLags::default(),
        }
    }
}

impl WorkerMetrics {
    /// Creates the families and registers them in `registry` (which carries the
    /// `gamemaster` prefix).
    #[must_use]
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        m.consumed.register(
            registry,
            "health_events_consumed",
            "Health events consumed, by outcome (applied, malformed, unknown_event_type, unknown_game, refused, replayed, not_owned)",
        );
        m.published.register(
            registry,
            "lobby_events_published",
            "Events published on the lobby events stream, by kind",
        );
        registry.register(
            "runtime_status_transitions",
            "Runtime status transitions made by health events, by from and to status",
            m.transitions.clone(),
        );
        registry.register(
            "health_events_errors",
            "Transient failures of the health events worker, by stage (apply, publish, shards)",
            m.errors.clone(),
        );
        registry.register(
            "shards_owned",
            "Shards this instance owns and applies health events for",
            m.shards_owned.clone(),
        );
        registry.register(
            "fenced_commits",
            "Batch writes the database fenced off because another instance had claimed a shard",
            m.fenced.clone(),
        );
        registry.register(
            "shard_lag_seconds",
            "Per owned shard: seconds from its last applied entry to the health stream's last entry (0 when caught up)",
            m.shard_lag.clone(),
        );
        m
    }

    /// The owned shards' lags as last measured.
    #[must_use]
    pub fn shard_lags(&self) -> ShardLags {
        self.lags.clone()
    }

    /// The owned shards' lags now are `lags`: shards no longer owned lose their gauges.
    pub(crate) fn lags(&self, lags: BTreeMap<u32, f64>) {
        for gone in self.lags.get().keys().filter(|s| !lags.contains_key(s)) {
            self.shard_lag.remove(&ShardLabel { shard: *gone });
        }
        for (&shard, &lag) in &lags {
            self.shard_lag.get_or_create(&ShardLabel { shard }).set(lag);
        }
        self.lags.set(lags);
    }

    pub(crate) fn owned(&self, shards: usize) {
        self.shards_owned
            .set(i64::try_from(shards).unwrap_or(i64::MAX));
    }

    pub(crate) fn fenced(&self) {
        self.fenced.inc();
    }

    /// Fenced-off writes so far.
    #[must_use]
    pub fn fenced_count(&self) -> u64 {
        self.fenced.get()
    }

    pub(crate) fn consumed(&self, outcome: Outcome) {
        self.consumed.inc(outcome);
    }

    pub(crate) fn published(&self, kind: LobbyEventKind) {
        self.published.inc(kind);
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
        self.consumed.get(outcome)
    }

    /// Events of `kind` published so far.
    #[must_use]
    pub fn published_count(&self, kind: LobbyEventKind) -> u64 {
        self.published.get(kind)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_has_its_own_counter_shared_with_its_family() {
        for (i, outcome) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome as usize, i, "{outcome:?} indexes its counter");
        }
        let m = WorkerMetrics::default();
        m.consumed(Outcome::UnknownGame);
        m.consumed(Outcome::UnknownGame);
        m.consumed(Outcome::Applied);
        m.published(LobbyEventKind::RuntimeSnapshotUpdate);
        m.published(LobbyEventKind::GameFinished);
        let counts: Vec<u64> = Outcome::ALL.map(|o| m.consumed_count(o)).to_vec();
        assert_eq!(counts, [1, 0, 0, 2, 0, 0, 0]);
        assert_eq!(m.published_count(LobbyEventKind::RuntimeSnapshotUpdate), 1);
        assert_eq!(m.published_count(LobbyEventKind::GameFinished), 1);
        let clone = m.clone();
        clone.consumed(Outcome::Malformed);
        assert_eq!(
            m.consumed_count(Outcome::Malformed),
            1,
            "clones share counters"
        );
    }
}
