//! The `gm:lobby_events` wire contract as the Game Master writes it: the names are the
//! contract's (`contracts::lobby_events`), re-exported here.
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

pub use contracts::lobby_events::fields::{
    CURRENT_TURN, ENGINE_HEALTH_SUMMARY, FINISHED_AT_MS, GAME_ID, KIND, OCCURRED_AT_MS,
    PLAYER_TURN_STATS, RUNTIME_STATUS,
};
pub use contracts::lobby_events::{DEFAULT_STREAM, stats};

/// `kind` of a runtime snapshot update.
pub const KIND_RUNTIME_SNAPSHOT_UPDATE: &str =
    contracts::LobbyEventKind::RuntimeSnapshotUpdate.as_str();
/// `kind` of a finished game.
pub const KIND_GAME_FINISHED: &str = contracts::LobbyEventKind::GameFinished.as_str();
