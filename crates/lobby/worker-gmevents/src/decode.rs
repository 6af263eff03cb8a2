//! Step 1: decoding one `gm:lobby_events` entry.

use std::fmt;

use contracts::lobby_events::InvalidLobbyEvent;
use contracts::wire::Fields;
use lobby_domain::gm_event_fields as field;
use lobby_domain::{GmEvent, InvalidGmEvent, UnknownGmEventKind};
use stream_consumer::StreamEntry;

use crate::metrics::Outcome;

/// Why an entry is skipped. Permanent: the entry is counted and the offset moves on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// A field the Lobby reads holds bytes that are not UTF-8.
    NotUtf8 {
        /// The game id, when it could be read.
        game_id: Option<String>,
        /// The field.
        field: &'static str,
    },
    /// `kind` names no known event kind.
    UnknownKind {
        /// The game id, when it could be read.
        game_id: Option<String>,
        /// The kind as sent (cut to 64 characters).
        kind: String,
    },
    /// A field is missing or breaks the contract.
    Invalid {
        /// The game id, when it could be read.
        game_id: Option<String>,
        /// What is wrong, naming the field.
        error: InvalidGmEvent,
    },
}

impl SkipReason {
    /// The game id, when the entry had a readable one (for the log line).
    #[must_use]
    pub fn game_id(&self) -> Option<&str> {
        match self {
            Self::NotUtf8 { game_id, .. }
            | Self::UnknownKind { game_id, .. }
            | Self::Invalid { game_id, .. } => game_id.as_deref(),
        }
    }

    /// The metric outcome.
    #[must_use]
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::UnknownKind { .. } => Outcome::UnknownKind,
            Self::NotUtf8 { .. } | Self::Invalid { .. } => Outcome::Malformed,
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotUtf8 { field, .. } => write!(f, "malformed entry: {field} is not valid UTF-8"),
            Self::UnknownKind { kind, .. } => write!(f, "unknown kind {kind:?}"),
            Self::Invalid { error, .. } => write!(f, "malformed entry: {error}"),
        }
    }
}

/// Decodes one entry with the contract's decoder. Only the contract's fields are read, so
/// extra fields (and bytes that are not UTF-8 in them) are fine; so is a `finished_at_ms`
/// on a snapshot update, which the contract does not give a meaning.
///
/// # Errors
/// The [`SkipReason`] when the entry cannot be used.
pub fn decode(entry: &StreamEntry) -> Result<GmEvent, SkipReason> {
    GmEvent::decode(entry).map_err(|error| {
        let game_id = Fields::new(entry)
            .optional_text(field::GAME_ID)
            .ok()
            .flatten()
            .map(|id| id.chars().take(256).collect::<String>());
        match error {
            InvalidGmEvent::Wire(InvalidLobbyEvent::NotUtf8(field)) => {
                SkipReason::NotUtf8 { game_id, field }
            }
            InvalidGmEvent::Wire(InvalidLobbyEvent::Kind(UnknownGmEventKind(kind))) => {
                SkipReason::UnknownKind {
                    game_id,
                    kind: kind.chars().take(64).collect(),
                }
            }
            error => SkipReason::Invalid { game_id, error },
        }
    })
}
