//! The `runtime:stop_jobs` contract (Lobby → Runtime Manager): stop reasons and the
//! decoded stop job.

use crate::storable::MAX_TIME_MS;
use crate::wire::{Fields, WireEntry};
use crate::{GameId, InvalidGameId};

/// The default stream name.
pub const DEFAULT_STREAM: &str = "runtime:stop_jobs";

/// Wire field names of a `runtime:stop_jobs` entry. Frozen: the Lobby writes them.
pub mod fields {
    /// The game whose runtime is to be stopped. Required.
    pub const GAME_ID: &str = crate::names::GAME_ID;
    /// Why, one of the [`StopReason`](super::StopReason) spellings. Required.
    pub const REASON: &str = "reason";
    /// When the Lobby asked, decimal milliseconds since the Unix epoch. Optional.
    pub const REQUESTED_AT_MS: &str = "requested_at_ms";

    /// Every field.
    pub const ALL: [&str; 3] = [GAME_ID, REASON, REQUESTED_AT_MS];
}

crate::wire_enum! {
    /// Why the Lobby asks for a runtime to be stopped.
    ///
    /// The seed names the type but not its values, so this set is our choice: one reason per
    /// Lobby flow that ends a runtime. An unknown reason makes the job undecodable (the
    /// consumer logs and skips it), so adding a reason means deploying the Runtime Manager
    /// before the Lobby starts sending it.
    pub enum StopReason / UnknownStopReason("stop reason") {
        /// An operator or administrator stopped the game.
        AdminRequest = "admin_request",
        /// The game is over; its engine is no longer needed.
        GameFinished = "game_finished",
        /// The game was cancelled before or while it ran.
        Cancelled = "cancelled",
        /// The Lobby's housekeeping found a runtime it no longer tracks.
        LobbyCleanup = "lobby_cleanup",
    }
}

/// Why a stop job cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidStopJob {
    /// A field holds bytes that are not UTF-8.
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    /// `game_id` is missing, blank or too long.
    #[error(transparent)]
    GameId(#[from] InvalidGameId),
    /// `reason` is missing or blank.
    #[error("reason is missing")]
    MissingReason,
    /// `reason` names no known stop reason.
    #[error(transparent)]
    Reason(#[from] UnknownStopReason),
    /// `requested_at_ms` is present but not a 64-bit integer.
    #[error("requested_at_ms is not an integer: {0:?}")]
    RequestedAtNotInteger(String),
    /// `requested_at_ms` is present but zero or negative.
    #[error("requested_at_ms must be positive, got {0}")]
    NonPositiveRequestedAt(i64),
    /// `requested_at_ms` lies beyond year 9999 (the Runtime Manager stores it as a
    /// timestamp).
    #[error("requested_at_ms must be at most {max} (year 9999), got {0}", max = MAX_TIME_MS)]
    RequestedAtTooLate(i64),
}

/// One request to stop a game's runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopJob {
    /// The game whose runtime is to be stopped.
    pub game_id: GameId,
    /// Why.
    pub reason: StopReason,
    /// When the Lobby asked, when it said; always positive.
    pub requested_at_ms: Option<i64>,
}

impl StopJob {
    /// Validates and builds a job. The game id is trimmed, as decoding trims it, so that
    /// a job reads back from the wire as it was built.
    ///
    /// # Errors
    /// [`InvalidStopJob::GameId`] for a bad game id,
    /// [`InvalidStopJob::NonPositiveRequestedAt`] or [`InvalidStopJob::RequestedAtTooLate`]
    /// for a time out of range.
    pub fn new(
        game_id: &str,
        reason: StopReason,
        requested_at_ms: Option<i64>,
    ) -> Result<Self, InvalidStopJob> {
        Ok(Self {
            game_id: GameId::new(game_id.trim())?,
            reason,
            requested_at_ms: check_requested_at(requested_at_ms)?,
        })
    }

    /// Decodes a job from its stream fields, whatever the stream client. As in the seed,
    /// `game_id` and `reason` are trimmed, and a blank `requested_at_ms` counts as absent.
    ///
    /// # Errors
    /// [`InvalidStopJob`] naming the first field that is wrong.
    pub fn decode<E: WireEntry + ?Sized>(entry: &E) -> Result<Self, InvalidStopJob> {
        let fields = Fields::new(entry);
        let text = |name| match fields.optional_text(name) {
            Ok(value) => Ok(value.map(str::trim)),
            Err(_) => Err(InvalidStopJob::NotUtf8(name)),
        };
        let game_id = GameId::new(text(fields::GAME_ID)?.unwrap_or_default())?;
        let reason = match text(fields::REASON)? {
            None | Some("") => return Err(InvalidStopJob::MissingReason),
            Some(raw) => raw.parse::<StopReason>()?,
        };
        let requested_at_ms = match text(fields::REQUESTED_AT_MS)? {
            None | Some("") => None,
            Some(raw) => Some(
                raw.parse::<i64>()
                    .map_err(|_| InvalidStopJob::RequestedAtNotInteger(raw.to_owned()))?,
            ),
        };
        Ok(Self {
            game_id,
            reason,
            requested_at_ms: check_requested_at(requested_at_ms)?,
        })
    }

    /// The exact field/value pairs to XADD; `requested_at_ms` only when known.
    #[must_use]
    pub fn wire_fields(&self) -> Vec<(&'static str, String)> {
        let mut wire = vec![
            (fields::GAME_ID, self.game_id.as_str().to_owned()),
            (fields::REASON, self.reason.as_str().to_owned()),
        ];
        if let Some(ms) = self.requested_at_ms {
            wire.push((fields::REQUESTED_AT_MS, ms.to_string()));
        }
        wire
    }
}

fn check_requested_at(requested_at_ms: Option<i64>) -> Result<Option<i64>, InvalidStopJob> {
    match requested_at_ms {
        Some(ms) if ms <= 0 => Err(InvalidStopJob::NonPositiveRequestedAt(ms)),
        Some(ms) if ms > MAX_TIME_MS => Err(InvalidStopJob::RequestedAtTooLate(ms)),
        other => Ok(other),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn decode(pairs: &[(&str, &str)]) -> Result<StopJob, InvalidStopJob> {
        StopJob::decode(pairs)
    }

    #[test]
    fn reasons_round_trip_and_unknown_is_a_typed_error() {
        for reason in StopReason::ALL {
            assert_eq!(reason.as_str().parse::<StopReason>(), Ok(reason));
            assert_eq!(reason.to_string(), reason.as_str());
        }
        assert_eq!(
            "because".parse::<StopReason>(),
            Err(UnknownStopReason("because".into()))
        );
    }

    #[test]
    fn a_job_decodes_and_encodes_back_to_the_same_fields() {
        let job = decode(&[
            ("game_id", " g-1 "),
            ("reason", "game_finished"),
            ("requested_at_ms", "1700000000000"),
            ("extra", "ignored"),
        ])
        .unwrap();
        assert_eq!(job.game_id.as_str(), "g-1");
        assert_eq!(job.reason, StopReason::GameFinished);
        assert_eq!(job.requested_at_ms, Some(1_700_000_000_000));
        let wire = job.wire_fields();
        let wire: Vec<(&str, &str)> = wire.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            wire,
            [
                ("game_id", "g-1"),
                ("reason", "game_finished"),
                ("requested_at_ms", "1700000000000")
            ]
        );
        assert_eq!(decode(&wire), Ok(job));
    }

    #[test]
    fn requested_at_is_optional() {
        for pairs in [
            &[("game_id", "g"), ("reason", "cancelled")][..],
            &[
                ("game_id", "g"),
                ("reason", "cancelled"),
                ("requested_at_ms", " "),
            ][..],
        ] {
            let job = decode(pairs).unwrap();
            assert_eq!(job.requested_at_ms, None);
            let names: Vec<&str> = job.wire_fields().iter().map(|(k, _)| *k).collect();
            assert_eq!(names, ["game_id", "reason"]);
        }
    }

    #[test]
    fn every_undecodable_job_is_a_typed_error() {
        assert_eq!(
            decode(&[("reason", "cancelled")]),
            Err(InvalidStopJob::GameId(InvalidGameId::Blank))
        );
        assert_eq!(
            decode(&[("game_id", "  "), ("reason", "cancelled")]),
            Err(InvalidStopJob::GameId(InvalidGameId::Blank))
        );
        assert_eq!(
            decode(&[("game_id", "g")]),
            Err(InvalidStopJob::MissingReason)
        );
        assert_eq!(
            decode(&[("game_id", "g"), ("reason", " ")]),
            Err(InvalidStopJob::MissingReason)
        );
        assert_eq!(
            decode(&[("game_id", "g"), ("reason", "because")]),
            Err(InvalidStopJob::Reason(UnknownStopReason("because".into())))
        );
        assert_eq!(
            decode(&[
                ("game_id", "g"),
                ("reason", "cancelled"),
                ("requested_at_ms", "soon")
            ]),
            Err(InvalidStopJob::RequestedAtNotInteger("soon".into()))
        );
        assert_eq!(
            decode(&[
                ("game_id", "g"),
                ("reason", "cancelled"),
                ("requested_at_ms", "99999999999999999999")
            ]),
            Err(InvalidStopJob::RequestedAtNotInteger(
                "99999999999999999999".into()
            ))
        );
        assert_eq!(
            decode(&[
                ("game_id", "g"),
                ("reason", "cancelled"),
                ("requested_at_ms", "0")
            ]),
            Err(InvalidStopJob::NonPositiveRequestedAt(0))
        );
        assert_eq!(
            decode(&[
                ("game_id", "g"),
                ("reason", "cancelled"),
                ("requested_at_ms", "9223372036854775807")
            ]),
            Err(InvalidStopJob::RequestedAtTooLate(i64::MAX))
        );
        assert_eq!(
            StopJob::decode(&[("game_id", &b"g"[..]), ("reason", b"\xff")]),
            Err(InvalidStopJob::NotUtf8("reason"))
        );
        assert!(matches!(
            decode(&[("game_id", "g\0"), ("reason", "cancelled")]),
            Err(InvalidStopJob::GameId(InvalidGameId::Unstorable(_)))
        ));
        assert_eq!(
            StopJob::new("g", StopReason::Cancelled, Some(-1)),
            Err(InvalidStopJob::NonPositiveRequestedAt(-1))
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encode_then_decode_gives_the_job_back(
            game in "[A-Za-z0-9 _.:-]{0,20}[A-Za-z0-9]",
            reason in proptest::sample::select(StopReason::ALL.to_vec()),
            at in proptest::option::of(1..=MAX_TIME_MS),
        ) {
            let job = StopJob::new(&game, reason, at).unwrap();
            let wire: Vec<(String, String)> = job
                .wire_fields()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            prop_assert_eq!(StopJob::decode(&wire), Ok(job));
        }

        #[test]
        fn decode_never_panics_on_any_field_map(
            pairs in crate::wire::arbitrary::field_map(&fields::ALL, crate::wire::arbitrary::spellings(&StopReason::ALL, StopReason::as_str)),
        ) {
            if let Ok(job) = StopJob::decode(&pairs) {
                prop_assert!(job.requested_at_ms.is_none_or(|ms| (1..=MAX_TIME_MS).contains(&ms)));
            }
        }
    }
}
