//! The wire contracts between the services (SPEC "Wire contracts"), owned in one place so
//! that a producer and its consumers cannot spell them apart.
//!
//! It holds the shared vocabulary: the game id ([`GameId`]), the enums every side spells
//! alike ([`RuntimeStatus`], [`EngineHealth`], [`HealthEventType`]), what a stored value
//! may be ([`storable`]), and the one macro every such enum is declared with
//! ([`wire_enum!`]); and the four streams: the field names of `runtime:health_events`
//! ([`health_events`]) and `gm:lobby_events` ([`lobby_events`], with [`LobbyEventKind`]),
//! and the whole of `runtime:stop_jobs` ([`stop_jobs`]: field names, [`StopJob`] with its
//! decode and encode) and `runtime:job_results` ([`job_results`]). Nothing here knows a service's rules: which status may follow which
//! is the Game Master's (`domain_runtime`), not the contract's.

mod wire_enum;

pub use wire_enum::WireEnum;

pub mod wire;

pub mod dead_letters;
mod game_id;
mod health;
pub mod health_events;
pub mod job_results;
pub mod lobby_events;
mod names;
pub mod shards;
mod status;
pub mod stop_jobs;
pub mod storable;

pub use game_id::{GameId, InvalidGameId, MAX_GAME_ID_LEN};
pub use health::{EngineHealth, HealthEventType, UnknownEngineHealth, UnknownEventType};
pub use health_events::{HealthEvent, HealthEventEnvelope, InvalidHealthEvent};
pub use job_results::{
    ERROR_CODE_REPLAY_NO_OP, InvalidJobResult, JobOutcome, JobResult, UnknownJobOutcome,
};
pub use lobby_events::{
    InvalidLobbyEvent, LobbyEventEntry, LobbyEventKind, PlayerTurnStats, SourceEntryId,
    UnknownLobbyEventKind,
};
pub use shards::{InvalidShardCount, ShardCount};
pub use status::{RuntimeStatus, UnknownStatus};
pub use stop_jobs::{InvalidStopJob, StopJob, StopReason, UnknownStopReason};
