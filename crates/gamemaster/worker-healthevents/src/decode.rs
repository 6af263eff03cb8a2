//! Step 1: decoding one `runtime:health_events` entry.

use std::fmt;

use domain_runtime::{GameId, HealthEventType};
use stream_consumer::StreamEntry;
use stream_consumer::decode::{DecodeError, Fields};

use crate::metrics::Outcome;

/// Wire field names of `runtime:health_events` (the contract's); the Game Master reads
/// `game_id`, `event_type` and `occurred_at_ms`.
pub use contracts::health_events::fields as field;

/// A decoded health event: all the Game Master needs from an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    /// The game.
    pub game_id: GameId,
    /// The event type.
    pub event_type: HealthEventType,
    /// When it was observed, ms since the epoch.
    pub occurred_at_ms: i64,
}

/// Why an entry is skipped. Permanent: the entry is counted and the offset moves on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// A required field is missing or malformed.
    Malformed {
        /// The game id, when it could be read.
        game_id: Option<String>,
        /// What is wrong.
        error: DecodeError,
    },
    /// `event_type` names no known type.
    UnknownEventType {
        /// The game.
        game_id: String,
        /// The unknown type, as sent.
        event_type: String,
    },
}

impl SkipReason {
    /// The game id, when the entry had a readable one (for the log line).
    #[must_use]
    pub fn game_id(&self) -> Option<&str> {
        match self {
            Self::Malformed { game_id, .. } => game_id.as_deref(),
            Self::UnknownEventType { game_id, .. } => Some(game_id),
        }
    }

    /// The metric outcome.
    #[must_use]
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Malformed { .. } => Outcome::Malformed,
            Self::UnknownEventType { .. } => Outcome::UnknownEventType,
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed { error, .. } => write!(f, "malformed entry: {error}"),
            Self::UnknownEventType { event_type, .. } => {
                write!(f, "unknown event_type {event_type:?}")
            }
        }
    }
}

/// Decodes one entry. Fields other than the three above are never read, so extra fields,
/// a missing `container_id` or `details`, and non-UTF-8 bytes elsewhere are fine.
///
/// # Errors
/// The [`SkipReason`] when the entry cannot be used.
pub fn decode(entry: &StreamEntry) -> Result<HealthEvent, SkipReason> {
    let fields = Fields::new(entry);
    let malformed = |game_id: Option<&str>, error| SkipReason::Malformed {
        game_id: game_id.map(str::to_owned),
        error,
    };
    let raw_game_id = fields
        .required_text(field::GAME_ID)
        .map_err(|e| malformed(None, e))?;
    let game_id = GameId::new(raw_game_id).map_err(|e| {
        malformed(
            None,
            DecodeError::Invalid {
                field: field::GAME_ID,
                reason: e.to_string(),
            },
        )
    })?;
    let event_type = fields
        .required_text(field::EVENT_TYPE)
        .map_err(|e| malformed(Some(raw_game_id), e))?;
    let occurred_at_ms = fields
        .required_positive_i64(field::OCCURRED_AT_MS)
        .map_err(|e| malformed(Some(raw_game_id), e))?;
    let event_type =
        event_type
            .parse::<HealthEventType>()
            .map_err(|_| SkipReason::UnknownEventType {
                game_id: raw_game_id.to_owned(),
                event_type: event_type.chars().take(64).collect(),
            })?;
    Ok(HealthEvent {
        game_id,
        event_type,
        occurred_at_ms,
    })
}
