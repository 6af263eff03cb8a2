//! The Lobby's denormalised copy of a game's runtime state.

use contracts::SourceEntryId;
use contracts::{EngineHealth, RuntimeStatus};

/// What the Lobby knows about a running game, copied from the Game Master's
/// `gm:lobby_events`.
///
/// `runtime_status` and `engine_health_summary` are kept as the Game Master spelled them:
/// the Lobby displays them and does not act on them, so a status or summary added to the
/// Game Master later must not make the Lobby drop snapshots. Use
/// [`known_runtime_status`](Self::known_runtime_status) and
/// [`known_engine_health`](Self::known_engine_health) where a typed value helps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSnapshot {
    /// The game's current turn.
    pub current_turn: u32,
    /// The Game Master's runtime status, verbatim (empty when it sent none).
    pub runtime_status: String,
    /// The Game Master's engine-health summary, verbatim (empty before the first
    /// observation).
    pub engine_health_summary: String,
    /// When the Game Master emitted it (the event's `occurred_at_ms`); orders snapshots
    /// when one of the two compared names no source.
    pub observed_at_ms: i64,
    /// The health entry it reflects (`source_entry_id`), when the Game Master named one;
    /// orders two snapshots that both name one.
    pub source: Option<SourceEntryId>,
}

impl RuntimeSnapshot {
    /// The runtime status, when it is one this build knows.
    #[must_use]
    pub fn known_runtime_status(&self) -> Option<RuntimeStatus> {
        self.runtime_status.parse().ok()
    }

    /// The engine-health summary, when it is one this build knows.
    #[must_use]
    pub fn known_engine_health(&self) -> Option<EngineHealth> {
        self.engine_health_summary.parse().ok()
    }

    /// Whether this snapshot was emitted strictly later than `other`.
    #[must_use]
    pub fn is_newer_than(&self, other: &Self) -> bool {
        self.observed_at_ms > other.observed_at_ms
    }

    /// Whether this snapshot may overwrite `stored`: always when nothing is stored; when
    /// both name the health entry they reflect, only a later entry (a duplicate or an
    /// older one, say from a Game Master instance that took a game over, is dropped);
    /// otherwise unless `stored` was emitted later. A snapshot from the same millisecond
    /// wins, so two events emitted within one millisecond still apply in stream order,
    /// and a replay (which re-applies entries in stream order) ends where it ended before.
    #[must_use]
    pub fn should_replace(&self, stored: Option<&Self>) -> bool {
        let Some(stored) = stored else {
            return true;
        };
        match (self.source, stored.source) {
            (Some(mine), Some(theirs)) => mine > theirs,
            _ => !stored.is_newer_than(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(observed_at_ms: i64) -> RuntimeSnapshot {
        RuntimeSnapshot {
            current_turn: 3,
            runtime_status: "running".into(),
            engine_health_summary: "healthy".into(),
            observed_at_ms,
            source: None,
        }
    }

    fn from_entry(observed_at_ms: i64, ms: u64, seq: u64) -> RuntimeSnapshot {
        RuntimeSnapshot {
            source: Some(SourceEntryId { ms, seq }),
            ..at(observed_at_ms)
        }
    }

    #[test]
    fn two_snapshots_naming_their_health_entries_are_ordered_by_them_not_by_clocks() {
        // (new, stored, replaces): the table of the rule.
        let cases = [
            (from_entry(1, 5, 1), from_entry(9, 5, 0), true), // later entry, earlier clock
            (from_entry(9, 5, 0), from_entry(1, 5, 1), false), // older entry, later clock
            (from_entry(5, 5, 0), from_entry(5, 5, 0), false), // a duplicate
            (at(5), from_entry(5, 9, 9), true),               // no source: the clock rule
            (from_entry(4, 1, 0), at(5), false),              // likewise
        ];
        for (i, (new, stored, replaces)) in cases.iter().enumerate() {
            assert_eq!(new.should_replace(Some(stored)), *replaces, "case {i}");
        }
    }

    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one() {
        assert!(at(2).is_newer_than(&at(1)));
        assert!(!at(1).is_newer_than(&at(2)));
        assert!(!at(1).is_newer_than(&at(1)));

        assert!(at(1).should_replace(None));
        assert!(at(2).should_replace(Some(&at(1))));
        assert!(at(2).should_replace(Some(&at(2))));
        assert!(!at(1).should_replace(Some(&at(2))));
    }

    #[test]
    fn unknown_statuses_are_kept_not_rejected() {
        let mut snapshot = at(1);
        assert_eq!(
            snapshot.known_runtime_status(),
            Some(RuntimeStatus::Running)
        );
        assert_eq!(snapshot.known_engine_health(), Some(EngineHealth::Healthy));
        snapshot.runtime_status = "migrating".into();
        snapshot.engine_health_summary = String::new();
        assert_eq!(snapshot.known_runtime_status(), None);
        assert_eq!(snapshot.known_engine_health(), None);
        assert_eq!(snapshot.runtime_status, "migrating");
    }
}
