//! `gm:lobby_events` (Game Master → Lobby): runtime snapshots and finished games.
//!
//! Every value is a Redis string; times are milliseconds since the Unix epoch in decimal.
//!
//! | field | written |
//! |---|---|
//! | `kind` | always: a [`LobbyEventKind`] |
//! | `game_id` | always |
//! | `current_turn` | always, integer ≥ 0 |
//! | `runtime_status` | always, a runtime status (`running`, `engine_unreachable`, …) |
//! | `engine_health_summary` | always; the empty string before the first observation |
//! | `occurred_at_ms` | always: the Game Master's clock at publication |
//! | `player_turn_stats` | only when the Game Master has fresh engine stats: a JSON array of `{"user_id","planets","population","ships_built"}` |
//! | `finished_at_ms` | only on `game_finished` |

/// The default stream name.
pub const DEFAULT_STREAM: &str = "gm:lobby_events";

/// Wire field names. Frozen: the Lobby reads what the Game Master writes.
pub mod fields {
    /// The event kind.
    pub const KIND: &str = "kind";
    /// The game. Required.
    pub const GAME_ID: &str = crate::names::GAME_ID;
    /// The runtime's current turn, an integer ≥ 0.
    pub const CURRENT_TURN: &str = "current_turn";
    /// The Game Master's runtime status.
    pub const RUNTIME_STATUS: &str = "runtime_status";
    /// The engine-health summary.
    pub const ENGINE_HEALTH_SUMMARY: &str = "engine_health_summary";
    /// When the Game Master emitted the event.
    pub const OCCURRED_AT_MS: &str = crate::names::OCCURRED_AT_MS;
    /// JSON array of per-player stats; absent or empty when there are none.
    pub const PLAYER_TURN_STATS: &str = "player_turn_stats";
    /// When the game finished; `game_finished` only.
    pub const FINISHED_AT_MS: &str = "finished_at_ms";

    /// Every field, in the order the Game Master writes them.
    pub const ALL: [&str; 8] = [
        KIND,
        GAME_ID,
        CURRENT_TURN,
        RUNTIME_STATUS,
        ENGINE_HEALTH_SUMMARY,
        OCCURRED_AT_MS,
        PLAYER_TURN_STATS,
        FINISHED_AT_MS,
    ];
}

/// Keys of one `player_turn_stats` element.
pub mod stats {
    /// The player.
    pub const USER_ID: &str = "user_id";
    /// Planets owned.
    pub const PLANETS: &str = "planets";
    /// Total population.
    pub const POPULATION: &str = "population";
    /// Ships built so far.
    pub const SHIPS_BUILT: &str = "ships_built";

    /// Every key.
    pub const ALL: [&str; 4] = [USER_ID, PLANETS, POPULATION, SHIPS_BUILT];
}

crate::wire_enum! {
    /// What a `gm:lobby_events` entry announces (its `kind`).
    pub enum LobbyEventKind / UnknownLobbyEventKind("gm event kind") {
        /// The game's runtime state changed: apply the snapshot and feed the stats.
        RuntimeSnapshotUpdate = "runtime_snapshot_update",
        /// The game is over: as an update, then finish the game and evaluate capabilities.
        GameFinished = "game_finished",
    }
}
