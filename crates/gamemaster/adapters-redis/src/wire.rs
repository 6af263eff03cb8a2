//! The `gm:lobby_events` wire contract (frozen: the Game Lobby reads it).
//!
//! Every value is a Redis string; times are milliseconds since the Unix epoch in decimal.
//!
//! | field | written |
//! |---|---|
//! | `kind` | always: [`KIND_RUNTIME_SNAPSHOT_UPDATE`] or [`KIND_GAME_FINISHED`] |
//! | `game_id` | always |
//! | `current_turn` | always, integer ≥ 0 |
//! | `runtime_status` | always, a runtime status (`running`, `engine_unreachable`, …) |
//! | `engine_health_summary` | always; the empty string before the first observation |
//! | `occurred_at_ms` | always: the Game Master's clock at publication |
//! | `player_turn_stats` | only when the Game Master has fresh engine stats: a JSON array of `{"user_id","planets","population","ships_built"}` |
//! | `finished_at_ms` | only on [`KIND_GAME_FINISHED`] |

/// The default stream name.
pub const DEFAULT_STREAM: &str = "gm:lobby_events";

/// Field: the event kind.
pub const KIND: &str = "kind";
/// Field: the game.
pub const GAME_ID: &str = "game_id";
/// Field: the runtime's current turn.
pub const CURRENT_TURN: &str = "current_turn";
/// Field: the runtime status.
pub const RUNTIME_STATUS: &str = "runtime_status";
/// Field: the engine-health summary.
pub const ENGINE_HEALTH_SUMMARY: &str = "engine_health_summary";
/// Field: when the Game Master emitted the event.
pub const OCCURRED_AT_MS: &str = "occurred_at_ms";
/// Field: per-player engine stats (JSON), only when fresh.
pub const PLAYER_TURN_STATS: &str = "player_turn_stats";
/// Field: when the game finished, only on `game_finished`.
pub const FINISHED_AT_MS: &str = "finished_at_ms";

/// `kind` of a runtime snapshot update.
pub const KIND_RUNTIME_SNAPSHOT_UPDATE: &str = "runtime_snapshot_update";
/// `kind` of a finished game.
pub const KIND_GAME_FINISHED: &str = "game_finished";

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
}
