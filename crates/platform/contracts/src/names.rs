//! Field names that more than one stream uses, spelled once: each stream's `fields` module
//! names them for itself.

/// The game, in every stream.
pub(crate) const GAME_ID: &str = "game_id";
/// An engine container's id (`runtime:health_events`, `runtime:job_results`).
pub(crate) const CONTAINER_ID: &str = "container_id";
/// When something happened, ms since the epoch (`runtime:health_events`, `gm:lobby_events`).
pub(crate) const OCCURRED_AT_MS: &str = "occurred_at_ms";
