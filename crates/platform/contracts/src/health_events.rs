//! `runtime:health_events` (Runtime Manager → Game Master): one entry per observation of a
//! game's engine container. The Runtime Manager's publisher builds a
//! [`HealthEventEnvelope`] and writes every field ([`HealthEventEnvelope::wire_fields`]);
//! the Game Master reads `game_id`, `event_type` and `occurred_at_ms` ([`decode`] into a
//! [`HealthEvent`]) and ignores the rest.

use std::fmt;

use crate::storable::{MAX_TIME_MS, UnstorableText, storable_text};
use crate::wire::{DecodeError, Fields, WireEntry};
use crate::{GameId, HealthEventType, InvalidGameId, UnknownEventType};

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

/// What a consumer reads of one entry: all the Game Master needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    /// The game.
    pub game_id: GameId,
    /// The event type.
    pub event_type: HealthEventType,
    /// When it was observed, ms since the epoch.
    pub occurred_at_ms: i64,
}

/// Why an entry cannot be used. Permanent: a consumer counts it and moves on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UndecodableHealthEvent {
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
        /// The unknown type, as sent (cut to 64 characters).
        event_type: String,
    },
}

impl UndecodableHealthEvent {
    /// The game id, when the entry had a readable one (for the log line).
    #[must_use]
    pub fn game_id(&self) -> Option<&str> {
        match self {
            Self::Malformed { game_id, .. } => game_id.as_deref(),
            Self::UnknownEventType { game_id, .. } => Some(game_id),
        }
    }
}

impl fmt::Display for UndecodableHealthEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed { error, .. } => write!(f, "malformed entry: {error}"),
            Self::UnknownEventType { event_type, .. } => {
                write!(f, "unknown event_type {event_type:?}")
            }
        }
    }
}

impl std::error::Error for UndecodableHealthEvent {}

/// Decodes what a consumer reads of one entry. Fields other than `game_id`, `event_type`
/// and `occurred_at_ms` are never read, so extra fields, a missing `container_id` or
/// `details`, and non-UTF-8 bytes elsewhere are fine.
///
/// # Errors
/// The [`UndecodableHealthEvent`] when the entry cannot be used.
pub fn decode<E: WireEntry + ?Sized>(entry: &E) -> Result<HealthEvent, UndecodableHealthEvent> {
    let fields = Fields::new(entry);
    let malformed = |game_id: Option<&str>, error| UndecodableHealthEvent::Malformed {
        game_id: game_id.map(str::to_owned),
        error,
    };
    let raw_game_id = fields
        .required_text(fields::GAME_ID)
        .map_err(|e| malformed(None, e))?;
    let game_id = GameId::new(raw_game_id).map_err(|e| {
        malformed(
            None,
            DecodeError::Invalid {
                field: fields::GAME_ID,
                reason: e.to_string(),
            },
        )
    })?;
    let event_type = fields
        .required_text(fields::EVENT_TYPE)
        .map_err(|e| malformed(Some(raw_game_id), e))?;
    let occurred_at_ms = fields
        .required_positive_i64(fields::OCCURRED_AT_MS)
        .map_err(|e| malformed(Some(raw_game_id), e))?;
    let event_type = event_type.parse::<HealthEventType>().map_err(|_| {
        UndecodableHealthEvent::UnknownEventType {
            game_id: raw_game_id.to_owned(),
            event_type: event_type.chars().take(64).collect(),
        }
    })?;
    Ok(HealthEvent {
        game_id,
        event_type,
        occurred_at_ms,
    })
}

/// The details written when the publisher was given none; matches the SQL default of
/// `health_snapshots.details`.
pub const EMPTY_DETAILS: &str = "{}";

/// Longest container id accepted, in bytes (Docker's are 64).
pub const MAX_CONTAINER_ID_LEN: usize = 256;

/// Why a health event cannot be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidHealthEvent {
    /// The game id is blank or too long.
    #[error(transparent)]
    GameId(#[from] InvalidGameId),
    /// The container id is empty or only whitespace.
    #[error("container_id is blank")]
    BlankContainerId,
    /// The container id holds a NUL byte or is longer than [`MAX_CONTAINER_ID_LEN`].
    #[error("container_id {0}")]
    UnstorableContainerId(UnstorableText),
    /// The event type names none of the seven known types.
    #[error(transparent)]
    EventType(#[from] UnknownEventType),
    /// The observation time is zero or negative.
    #[error("occurred_at_ms must be positive, got {0}")]
    NonPositiveOccurredAt(i64),
    /// The observation time lies beyond year 9999 (it is stored as a timestamp).
    #[error("occurred_at_ms must be at most {max} (year 9999), got {0}", max = MAX_TIME_MS)]
    OccurredAtTooLate(i64),
    /// The details hold a NUL character (`\u0000`), which `jsonb` cannot store.
    #[error("details hold a NUL character (\\u0000), which jsonb cannot store")]
    DetailsNul,
    /// The details are not valid JSON.
    #[error("details are not valid JSON: {0}")]
    DetailsNotJson(String),
    /// The details are valid JSON but not an object.
    #[error("details must be a JSON object, got a JSON {0}")]
    DetailsNotObject(&'static str),
}

/// One health observation, ready to be published: the whole entry, as the Runtime
/// Manager's publisher writes it. Every value of this type has a valid
/// game id, a non-blank container id, a known event type, a positive time and details that
/// are a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEventEnvelope {
    game_id: GameId,
    container_id: String,
    event_type: HealthEventType,
    occurred_at_ms: i64,
    details: String,
}

impl HealthEventEnvelope {
    /// Validates and builds an envelope. `details` that are absent, empty or only
    /// whitespace become [`EMPTY_DETAILS`]; other details are kept as given (trimmed) once
    /// they are known to be a JSON object.
    ///
    /// # Errors
    /// [`InvalidHealthEvent`] naming the first field that is wrong.
    pub fn new(
        game_id: impl Into<String>,
        container_id: impl Into<String>,
        event_type: HealthEventType,
        occurred_at_ms: i64,
        details: Option<&str>,
    ) -> Result<Self, InvalidHealthEvent> {
        let game_id = GameId::new(game_id)?;
        let container_id = container_id.into();
        if container_id.trim().is_empty() {
            return Err(InvalidHealthEvent::BlankContainerId);
        }
        storable_text(&container_id, MAX_CONTAINER_ID_LEN)
            .map_err(InvalidHealthEvent::UnstorableContainerId)?;
        if occurred_at_ms <= 0 {
            return Err(InvalidHealthEvent::NonPositiveOccurredAt(occurred_at_ms));
        }
        if occurred_at_ms > MAX_TIME_MS {
            return Err(InvalidHealthEvent::OccurredAtTooLate(occurred_at_ms));
        }
        let details = validate_details(details)?;
        Ok(Self {
            game_id,
            container_id,
            event_type,
            occurred_at_ms,
            details,
        })
    }

    /// Like [`new`](Self::new), with the event type given by its wire spelling.
    ///
    /// # Errors
    /// [`InvalidHealthEvent::EventType`] for an unknown type, otherwise as
    /// [`new`](Self::new).
    pub fn parse(
        game_id: impl Into<String>,
        container_id: impl Into<String>,
        event_type: &str,
        occurred_at_ms: i64,
        details: Option<&str>,
    ) -> Result<Self, InvalidHealthEvent> {
        let event_type = event_type.parse::<HealthEventType>()?;
        Self::new(game_id, container_id, event_type, occurred_at_ms, details)
    }

    /// The game whose container was observed.
    #[must_use]
    pub fn game_id(&self) -> &GameId {
        &self.game_id
    }

    /// The engine container's id.
    #[must_use]
    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    /// What was observed.
    #[must_use]
    pub fn event_type(&self) -> HealthEventType {
        self.event_type
    }

    /// When it was observed, in milliseconds since the Unix epoch (always positive).
    #[must_use]
    pub fn occurred_at_ms(&self) -> i64 {
        self.occurred_at_ms
    }

    /// The details: JSON object text, [`EMPTY_DETAILS`] when none were given.
    #[must_use]
    pub fn details(&self) -> &str {
        &self.details
    }

    /// What a consumer reads of this entry: the game, the event type and the time.
    #[must_use]
    pub fn event(&self) -> HealthEvent {
        HealthEvent {
            game_id: self.game_id.clone(),
            event_type: self.event_type,
            occurred_at_ms: self.occurred_at_ms,
        }
    }

    /// The exact field/value pairs to XADD, in [`fields`] order. Every value is a string;
    /// the time is a decimal integer.
    #[must_use]
    pub fn wire_fields(&self) -> [(&'static str, String); 5] {
        [
            (fields::GAME_ID, self.game_id.as_str().to_owned()),
            (fields::CONTAINER_ID, self.container_id.clone()),
            (fields::EVENT_TYPE, self.event_type.as_str().to_owned()),
            (fields::OCCURRED_AT_MS, self.occurred_at_ms.to_string()),
            (fields::DETAILS, self.details.clone()),
        ]
    }
}

fn validate_details(details: Option<&str>) -> Result<String, InvalidHealthEvent> {
    let text = details.map(str::trim).unwrap_or_default();
    if text.is_empty() {
        return Ok(EMPTY_DETAILS.to_owned());
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| InvalidHealthEvent::DetailsNotJson(e.to_string()))?;
    if holds_nul(&value) {
        return Err(InvalidHealthEvent::DetailsNul);
    }
    match value {
        serde_json::Value::Object(_) => Ok(text.to_owned()),
        serde_json::Value::Array(_) => Err(InvalidHealthEvent::DetailsNotObject("array")),
        serde_json::Value::String(_) => Err(InvalidHealthEvent::DetailsNotObject("string")),
        serde_json::Value::Number(_) => Err(InvalidHealthEvent::DetailsNotObject("number")),
        serde_json::Value::Bool(_) => Err(InvalidHealthEvent::DetailsNotObject("boolean")),
        serde_json::Value::Null => Err(InvalidHealthEvent::DetailsNotObject("null")),
    }
}

/// Whether any key or string in `value` holds a NUL character.
fn holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        serde_json::Value::Number(_) | serde_json::Value::Bool(_) | serde_json::Value::Null => {
            false
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn envelope(details: Option<&str>) -> Result<HealthEventEnvelope, InvalidHealthEvent> {
        HealthEventEnvelope::new(
            "g-1",
            "c-1",
            HealthEventType::ProbeFailed,
            1_700_000_000_123,
            details,
        )
    }

    #[test]
    fn absent_or_blank_details_become_an_empty_object() {
        for details in [None, Some(""), Some("  \n")] {
            let env = envelope(details).unwrap();
            assert_eq!(env.details(), "{}", "{details:?}");
        }
        let env = envelope(Some(r#" {"attempts": 3} "#)).unwrap();
        assert_eq!(env.details(), r#"{"attempts": 3}"#);
        assert_eq!(envelope(Some("{}")).unwrap().details(), "{}");
    }

    #[test]
    fn every_invalid_field_is_a_typed_error() {
        let ok = |g: &str, c: &str, e: &str, t: i64, d: Option<&str>| {
            HealthEventEnvelope::parse(g, c, e, t, d)
        };
        assert_eq!(
            ok("", "c", "probe_failed", 1, None),
            Err(InvalidHealthEvent::GameId(InvalidGameId::Blank))
        );
        assert_eq!(
            ok(" \t", "c", "probe_failed", 1, None),
            Err(InvalidHealthEvent::GameId(InvalidGameId::Blank))
        );
        assert_eq!(
            ok("g", "", "probe_failed", 1, None),
            Err(InvalidHealthEvent::BlankContainerId)
        );
        assert_eq!(
            ok("g", "  ", "probe_failed", 1, None),
            Err(InvalidHealthEvent::BlankContainerId)
        );
        assert_eq!(
            ok("g", "c", "container_restarted", 1, None),
            Err(InvalidHealthEvent::EventType(UnknownEventType(
                "container_restarted".into()
            )))
        );
        assert_eq!(
            ok("g", "c", "probe_failed", 0, None),
            Err(InvalidHealthEvent::NonPositiveOccurredAt(0))
        );
        assert_eq!(
            ok("g", "c", "probe_failed", -5, None),
            Err(InvalidHealthEvent::NonPositiveOccurredAt(-5))
        );
        assert!(matches!(
            ok("g", "c", "probe_failed", 1, Some("{not json")),
            Err(InvalidHealthEvent::DetailsNotJson(_))
        ));
        for (details, kind) in [
            ("[1, 2]", "array"),
            (r#""text""#, "string"),
            ("42", "number"),
            ("true", "boolean"),
            ("null", "null"),
        ] {
            assert_eq!(
                ok("g", "c", "probe_failed", 1, Some(details)),
                Err(InvalidHealthEvent::DetailsNotObject(kind)),
                "{details}"
            );
        }
    }

    #[test]
    fn errors_read_clearly() {
        let err = envelope(Some("[]")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "details must be a JSON object, got a JSON array"
        );
        let err = HealthEventEnvelope::parse("g", "c", "nope", 1, None).unwrap_err();
        assert_eq!(err.to_string(), r#"unknown health event type "nope""#);
    }

    #[test]
    fn wire_fields_are_exactly_the_frozen_contract() {
        let env = envelope(None).unwrap();
        let wire = env.wire_fields();
        let names: Vec<&str> = wire.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "game_id",
                "container_id",
                "event_type",
                "occurred_at_ms",
                "details"
            ]
        );
        let values: Vec<&str> = wire.iter().map(|(_, value)| value.as_str()).collect();
        assert_eq!(
            values,
            ["g-1", "c-1", "probe_failed", "1700000000123", "{}"]
        );
    }

    #[test]
    fn what_the_snapshot_store_cannot_hold_is_refused_before_any_write() {
        let at =
            |ms: i64| HealthEventEnvelope::new("g", "c", HealthEventType::ProbeFailed, ms, None);
        assert_eq!(
            at(i64::MAX),
            Err(InvalidHealthEvent::OccurredAtTooLate(i64::MAX))
        );
        assert!(at(MAX_TIME_MS).is_ok());
        assert!(matches!(
            HealthEventEnvelope::new("g", "c\0", HealthEventType::ProbeFailed, 1, None),
            Err(InvalidHealthEvent::UnstorableContainerId(
                UnstorableText::Nul { at: 1 }
            ))
        ));
        for details in [
            r#"{"a":"x\u0000"}"#,
            r#"{"a\u0000":1}"#,
            r#"{"a":[{"b":"\u0000"}]}"#,
        ] {
            assert_eq!(
                envelope(Some(details)),
                Err(InvalidHealthEvent::DetailsNul),
                "{details}"
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encode_then_decode_gives_the_event_back(
            game in "[A-Za-z0-9_.:-]{1,40}",
            container in "[a-f0-9]{1,64}",
            event_type in proptest::sample::select(HealthEventType::ALL.to_vec()),
            at in 1..=MAX_TIME_MS,
            attempts in proptest::option::of(0u32..100),
        ) {
            let details = attempts.map(|n| format!(r#"{{"attempts":{n}}}"#));
            let envelope =
                HealthEventEnvelope::new(game, container, event_type, at, details.as_deref())
                    .unwrap();
            let wire = envelope.wire_fields();
            prop_assert_eq!(decode(&wire), Ok(envelope.event()));
        }

        #[test]
        fn decode_never_panics_on_any_field_map(
            pairs in crate::wire::arbitrary::field_map(&fields::ALL, crate::wire::arbitrary::spellings(&HealthEventType::ALL, HealthEventType::as_str)),
        ) {
            if let Ok(event) = decode(&pairs) {
                prop_assert!(event.occurred_at_ms > 0);
            }
        }
    }
}
