//! The Lobby's games: the record, its inputs, and the store.

use std::time::SystemTime;

use async_trait::async_trait;
use lobby_domain::{
    GameId, GameStatus, GmEvent, PlayerObservedStats, RuntimeSnapshot, Transition, Trigger,
    transition,
};

use crate::Error;

/// A game as the Lobby stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GameRecord {
    /// The game.
    pub game_id: GameId,
    /// Its Lobby status.
    pub status: GameStatus,
    /// The Game Master's last runtime snapshot, `None` until the first one arrives.
    pub snapshot: Option<RuntimeSnapshot>,
    /// When the game finished, ms since the epoch; set exactly when `status` is
    /// `finished`.
    pub finished_at_ms: Option<i64>,
    /// When the record was created.
    pub created_at: SystemTime,
    /// When the record was last written.
    pub updated_at: SystemTime,
}

/// A game to create. The Lobby's own flows (drafts, enrollment, start) are not built
/// here, so operators, tests and the simulator create games directly in the status they
/// need (`lobby seed-game`). A game created `finished` gets the creation time as its
/// finish time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGame {
    /// The game.
    pub game_id: GameId,
    /// Its first status.
    pub status: GameStatus,
}

/// A compare-and-swap of a game's status. The transition and its trigger were checked
/// against `lobby_domain::TRANSITIONS` when this was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateStatus {
    /// The game.
    pub game_id: GameId,
    /// The checked `expected → new` pair and who asked.
    pub transition: Transition,
    /// When it happened, ms since the epoch (> 0); the finish time when the target is
    /// `finished`.
    pub at_ms: i64,
}

impl UpdateStatus {
    /// Checks `from → to` by `trigger` against the transition table.
    ///
    /// # Errors
    /// [`Error::InvalidTransition`] for a self-transition, an undeclared pair or a trigger
    /// the pair does not allow; [`Error::Invalid`] for a time that is not positive.
    pub fn new(
        game_id: GameId,
        from: GameStatus,
        to: GameStatus,
        trigger: Trigger,
        at_ms: i64,
    ) -> Result<Self, Error> {
        let transition = transition(from, to, trigger)?;
        if at_ms <= 0 {
            return Err(Error::Invalid(format!(
                "at_ms must be positive, got {at_ms}"
            )));
        }
        Ok(Self {
            game_id,
            transition,
            at_ms,
        })
    }
}

/// One `runtime_snapshot_update` (or the snapshot part of a `game_finished`) to apply:
/// the snapshot, unless the stored one is newer, and the per-player stats it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotUpdate {
    /// The game.
    pub game_id: GameId,
    /// The snapshot.
    pub snapshot: RuntimeSnapshot,
    /// The players' stats (empty when the Game Master had none).
    pub player_stats: Vec<PlayerObservedStats>,
}

impl From<&GmEvent> for SnapshotUpdate {
    fn from(event: &GmEvent) -> Self {
        Self {
            game_id: event.game_id().clone(),
            snapshot: event.snapshot().clone(),
            player_stats: event.player_stats().to_vec(),
        }
    }
}

/// What applying one [`SnapshotUpdate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotResult {
    /// The snapshot was written and the stats recorded.
    Applied,
    /// The stored snapshot is newer (by `occurred_at_ms`), so it was kept; the stats were
    /// still recorded (the initial is frozen and the maxima only rise, whatever the order).
    Stale {
        /// `occurred_at_ms` of the snapshot that was kept.
        stored_observed_at_ms: i64,
    },
    /// The Lobby has no such game; nothing was written.
    UnknownGame,
}

/// A `game_finished` to apply: its snapshot and stats, and the finish time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishGame {
    /// The final snapshot and stats.
    pub update: SnapshotUpdate,
    /// When the game finished, ms since the epoch (> 0).
    pub finished_at_ms: i64,
}

impl FinishGame {
    /// Validates the finish time.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `finished_at_ms` is not positive.
    pub fn new(update: SnapshotUpdate, finished_at_ms: i64) -> Result<Self, Error> {
        if finished_at_ms <= 0 {
            return Err(Error::Invalid(format!(
                "finished_at_ms must be positive, got {finished_at_ms}"
            )));
        }
        Ok(Self {
            update,
            finished_at_ms,
        })
    }
}

/// What [`GameStore::finish_game`] did. In every case but `UnknownGame` the snapshot
/// (unless stale) and the stats were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishResult {
    /// The compare-and-swap moved the game to `finished`.
    Finished {
        /// The transition taken (`running` or `paused` → `finished`, by a runtime event).
        transition: Transition,
        /// The finish time stored.
        finished_at_ms: i64,
        /// Whether the snapshot was written (false: a newer one was stored).
        snapshot_applied: bool,
    },
    /// The game was finished already: a replay. Capability evaluation still runs, behind
    /// its guard.
    AlreadyFinished {
        /// The finish time stored the first time.
        finished_at_ms: i64,
        /// Whether the snapshot was written.
        snapshot_applied: bool,
    },
    /// The game is in a status a `game_finished` cannot finish (it never started, it was
    /// cancelled); its status is left alone.
    UnexpectedStatus {
        /// The status it holds.
        status: GameStatus,
        /// Whether the snapshot was written.
        snapshot_applied: bool,
    },
    /// The Lobby has no such game; nothing was written.
    UnknownGame,
}

impl FinishResult {
    /// The finish time to hand to capability evaluation, when the game is finished now.
    #[must_use]
    pub fn finished_at_ms(&self) -> Option<i64> {
        match self {
            Self::Finished { finished_at_ms, .. }
            | Self::AlreadyFinished { finished_at_ms, .. } => Some(*finished_at_ms),
            Self::UnexpectedStatus { .. } | Self::UnknownGame => None,
        }
    }
}

/// The Lobby's games, with the per-player stats the event operations also write.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait GameStore: Send + Sync {
    /// One game.
    ///
    /// # Errors
    /// [`Error::NotFound`], or a store failure.
    async fn get(&self, game_id: &GameId) -> Result<GameRecord, Error>;

    /// Creates a game with no snapshot yet.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], or a store failure.
    async fn create(&self, new: &NewGame) -> Result<GameRecord, Error>;

    /// Writes `snapshot` unless the stored one is newer
    /// (`lobby_domain::RuntimeSnapshot::should_replace`); sets `updated_at` when written.
    ///
    /// # Errors
    /// A store failure.
    async fn update_runtime_snapshot(
        &self,
        game_id: &GameId,
        snapshot: &RuntimeSnapshot,
    ) -> Result<SnapshotResult, Error>;

    /// Compare-and-swap of the status; moving to `finished` also stores the finish time.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Conflict`] when the game is not in the expected
    /// status, or a store failure.
    async fn update_status(&self, update: &UpdateStatus) -> Result<GameRecord, Error>;

    /// Applies a run of snapshot updates in one transaction, in order: per update, the
    /// snapshot unless the stored one (or an earlier one of the run) is newer, and the
    /// stats (initial frozen at a player's first observation, maxima raised per
    /// component). One result per update, in the same order. Either everything is written
    /// or nothing.
    ///
    /// # Errors
    /// A store failure; then nothing was written.
    async fn apply_snapshots(
        &self,
        updates: &[SnapshotUpdate],
    ) -> Result<Vec<SnapshotResult>, Error>;

    /// Applies a `game_finished` in one transaction: the snapshot and stats as
    /// [`Self::apply_snapshots`] does, then the compare-and-swap `running`/`paused` →
    /// `finished` (trigger: runtime event) with the finish time. A game already finished
    /// keeps its first finish time.
    ///
    /// # Errors
    /// A store failure; then nothing was written.
    async fn finish_game(&self, finish: &FinishGame) -> Result<FinishResult, Error>;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn status_updates_are_checked_against_the_table() {
        let g = GameId::new("g").unwrap();
        let ok = UpdateStatus::new(
            g.clone(),
            GameStatus::Paused,
            GameStatus::Finished,
            Trigger::RuntimeEvent,
            5,
        )
        .unwrap();
        assert_eq!(ok.transition.from(), GameStatus::Paused);
        assert!(matches!(
            UpdateStatus::new(
                g.clone(),
                GameStatus::Running,
                GameStatus::Finished,
                Trigger::Admin,
                5
            ),
            Err(Error::InvalidTransition(_))
        ));
        assert!(matches!(
            UpdateStatus::new(
                g,
                GameStatus::Running,
                GameStatus::Paused,
                Trigger::Admin,
                0
            ),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn a_finish_needs_a_positive_time_and_reports_it_when_finished() {
        let update = SnapshotUpdate {
            game_id: GameId::new("g").unwrap(),
            snapshot: RuntimeSnapshot {
                current_turn: 1,
                runtime_status: "finished".into(),
                engine_health_summary: "healthy".into(),
                observed_at_ms: 10,
                source: None,
            },
            player_stats: Vec::new(),
        };
        assert!(FinishGame::new(update.clone(), 0).is_err());
        assert_eq!(FinishGame::new(update, 9).unwrap().finished_at_ms, 9);
        let t = transition(
            GameStatus::Running,
            GameStatus::Finished,
            Trigger::RuntimeEvent,
        )
        .unwrap();
        let finished = FinishResult::Finished {
            transition: t,
            finished_at_ms: 9,
            snapshot_applied: true,
        };
        assert_eq!(finished.finished_at_ms(), Some(9));
        let replay = FinishResult::AlreadyFinished {
            finished_at_ms: 8,
            snapshot_applied: false,
        };
        assert_eq!(replay.finished_at_ms(), Some(8));
        assert_eq!(FinishResult::UnknownGame.finished_at_ms(), None);
        let odd = FinishResult::UnexpectedStatus {
            status: GameStatus::Cancelled,
            snapshot_applied: true,
        };
        assert_eq!(odd.finished_at_ms(), None);
    }
}
