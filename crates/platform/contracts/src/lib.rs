//! The wire contracts between the services (SPEC "Wire contracts"), owned in one place so
//! that a producer and its consumers cannot spell them apart.
//!
//! Today it holds the shared vocabulary: the game id ([`GameId`]), the enums every side
//! spells alike ([`RuntimeStatus`], [`EngineHealth`], [`HealthEventType`]), what a stored
//! value may be ([`storable`]), and the one macro every such enum is declared with
//! ([`wire_enum!`]). Nothing here knows a service's rules: which status may follow which
//! is the Game Master's (`domain_runtime`), not the contract's.

mod wire_enum;

mod game_id;
mod health;
mod status;
pub mod storable;

pub use game_id::{GameId, InvalidGameId, MAX_GAME_ID_LEN};
pub use health::{EngineHealth, HealthEventType, UnknownEngineHealth, UnknownEventType};
pub use status::{RuntimeStatus, UnknownStatus};
