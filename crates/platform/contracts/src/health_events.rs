//! `runtime:health_events` (Runtime Manager → Game Master): one entry per observation of a
//! game's engine container. The Runtime Manager's publisher writes every field; the Game
//! Master reads `game_id`, `event_type` and `occurred_at_ms` and ignores the rest.

/// The default stream name.
pub const DEFAULT_STREAM: &str = "runtime:health_events";

/// Wire field names. Frozen: both services depend on them.
pub mod fields {
    /// The game whose container was observed. Required, non-blank.
    pub const GAME_ID: &str = crate::names::GAME_ID;
    /// The engine container's id.
    pub const CONTAINER_ID: &str = crate::names::CONTAINER_ID;
    /// One of the seven [`HealthEventType`](crate::HealthEventType) spellings.
    pub const EVENT_TYPE: &str = "event_type";
    /// Observation time, decimal milliseconds since the Unix epoch, > 0.
    pub const OCCURRED_AT_MS: &str = crate::names::OCCURRED_AT_MS;
    /// Observer-specific JSON object text; `{}` when there are none.
    pub const DETAILS: &str = "details";

    /// Every field, in the order the publisher writes them.
    pub const ALL: [&str; 5] = [GAME_ID, CONTAINER_ID, EVENT_TYPE, OCCURRED_AT_MS, DETAILS];
}
