//! Events the Game Master publishes for the Game Lobby on `gm:lobby_events`.

use async_trait::async_trait;
use domain_runtime::{EngineHealth, GameId, RuntimeStatus};

use crate::Error;

/// One player's engine statistics for a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayerTurnStats {
    /// The player.
    pub user_id: String,
    /// Planets owned.
    pub planets: u64,
    /// Total population.
    pub population: u64,
    /// Ships built so far.
    pub ships_built: u64,
}

/// What the Game Master knows of a runtime at publication time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSnapshot {
    /// The game.
    pub game_id: GameId,
    /// Its current turn.
    pub current_turn: u32,
    /// Its runtime status.
    pub runtime_status: RuntimeStatus,
    /// Its engine-health summary (`None` is published as the empty string).
    pub engine_health: Option<EngineHealth>,
    /// The Game Master's clock at publication, ms since the epoch.
    pub occurred_at_ms: u64,
    /// Fresh engine stats; empty for health-driven snapshots (then the field is omitted).
    pub player_turn_stats: Vec<PlayerTurnStats>,
    /// The health entry a health-driven snapshot reflects (`None` for the other flows'),
    /// so the Lobby can drop a duplicate or an older one whatever the clocks say.
    pub source_entry_id: Option<contracts::SourceEntryId>,
}

/// The `kind` of a lobby event (the contract's).
pub use contracts::LobbyEventKind;

/// One entry for `gm:lobby_events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LobbyEvent {
    /// The runtime's snapshot changed.
    SnapshotUpdate(RuntimeSnapshot),
    /// The game finished.
    GameFinished {
        /// The final snapshot.
        snapshot: RuntimeSnapshot,
        /// When the game finished, ms since the epoch (> 0).
        finished_at_ms: u64,
    },
}

impl LobbyEvent {
    /// The event's kind.
    #[must_use]
    pub const fn kind(&self) -> LobbyEventKind {
        match self {
            Self::SnapshotUpdate(_) => LobbyEventKind::RuntimeSnapshotUpdate,
            Self::GameFinished { .. } => LobbyEventKind::GameFinished,
        }
    }

    /// The snapshot the event carries.
    #[must_use]
    pub const fn snapshot(&self) -> &RuntimeSnapshot {
        match self {
            Self::SnapshotUpdate(s) | Self::GameFinished { snapshot: s, .. } => s,
        }
    }
}

/// Publishes lobby events.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait LobbyEventsPublisher: Send + Sync {
    /// Appends `events` to the lobby events stream, in order, in one round trip. On an
    /// error some of them may have been appended (the Lobby's consumer is idempotent).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server cannot be reached, [`Error::Backend`] when it
    /// refuses.
    async fn publish(&self, events: &[LobbyEvent]) -> Result<(), Error>;
}
