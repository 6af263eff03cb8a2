//! The `runtime:job_results` contract (Runtime Manager → Lobby): one result per decodable
//! stop job.

use crate::wire::{Fields, WireEntry};
use crate::{GameId, InvalidGameId};

/// The default stream name.
pub const DEFAULT_STREAM: &str = "runtime:job_results";

/// Wire field names of a `runtime:job_results` entry. Frozen: the Lobby reads them.
pub mod fields {
    /// The game the job was about.
    pub const GAME_ID: &str = crate::names::GAME_ID;
    /// `success` or `failure`.
    pub const OUTCOME: &str = "outcome";
    /// A machine-readable code; empty on a plain success.
    pub const ERROR_CODE: &str = "error_code";
    /// A human-readable explanation; may be empty.
    pub const ERROR_MESSAGE: &str = "error_message";
    /// The engine container's id; only on success.
    pub const CONTAINER_ID: &str = crate::names::CONTAINER_ID;
    /// The engine's endpoint; only on success.
    pub const ENGINE_ENDPOINT: &str = "engine_endpoint";

    /// Every field.
    pub const ALL: [&str; 6] = [
        GAME_ID,
        OUTCOME,
        ERROR_CODE,
        ERROR_MESSAGE,
        CONTAINER_ID,
        ENGINE_ENDPOINT,
    ];
}

/// The error code of a successful job that found nothing to do: the runtime was already
/// stopped or removed. Replays of a stop job end this way.
pub const ERROR_CODE_REPLAY_NO_OP: &str = "replay_no_op";

crate::wire_enum! {
    /// How a job ended.
    pub enum JobOutcome / UnknownJobOutcome("job outcome") {
        /// The runtime is stopped (now, or already was).
        Success = "success",
        /// The runtime could not be stopped.
        Failure = "failure",
    }
}

/// Why a job result cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidJobResult {
    /// A field holds bytes that are not UTF-8.
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    /// `game_id` is missing, blank or too long.
    #[error(transparent)]
    GameId(#[from] InvalidGameId),
    /// `outcome` is missing or blank.
    #[error("outcome is missing")]
    MissingOutcome,
    /// `outcome` is neither `success` nor `failure`.
    #[error(transparent)]
    Outcome(#[from] UnknownJobOutcome),
}

/// The result of one stop job. Build it with [`success`](Self::success),
/// [`replay_no_op`](Self::replay_no_op) or [`failure`](Self::failure); whatever the
/// fields hold, [`wire_fields`](Self::wire_fields) sends the container fields only on
/// success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResult {
    /// The game the job was about.
    pub game_id: GameId,
    /// How it ended.
    pub outcome: JobOutcome,
    /// Empty on a plain success, [`ERROR_CODE_REPLAY_NO_OP`] on a replay, the failure's
    /// code otherwise.
    pub error_code: String,
    /// A human-readable explanation; may be empty.
    pub error_message: String,
    /// The engine container's id (may be empty for a removed runtime).
    pub container_id: String,
    /// The engine's endpoint (may be empty for a removed runtime).
    pub engine_endpoint: String,
}

impl JobResult {
    /// The runtime was running and is now stopped.
    #[must_use]
    pub fn success(
        game_id: GameId,
        container_id: impl Into<String>,
        engine_endpoint: impl Into<String>,
    ) -> Self {
        Self {
            game_id,
            outcome: JobOutcome::Success,
            error_code: String::new(),
            error_message: String::new(),
            container_id: container_id.into(),
            engine_endpoint: engine_endpoint.into(),
        }
    }

    /// The runtime was already stopped or removed: a success with
    /// [`ERROR_CODE_REPLAY_NO_OP`]. The container fields are whatever the record still
    /// holds (empty for a removed runtime).
    #[must_use]
    pub fn replay_no_op(
        game_id: GameId,
        container_id: impl Into<String>,
        engine_endpoint: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            error_code: ERROR_CODE_REPLAY_NO_OP.to_owned(),
            error_message: message.into(),
            ..Self::success(game_id, container_id, engine_endpoint)
        }
    }

    /// The runtime could not be stopped.
    #[must_use]
    pub fn failure(
        game_id: GameId,
        error_code: impl Into<String>,
        error_message: impl Into<String>,
    ) -> Self {
        Self {
            game_id,
            outcome: JobOutcome::Failure,
            error_code: error_code.into(),
            error_message: error_message.into(),
            container_id: String::new(),
            engine_endpoint: String::new(),
        }
    }

    /// Whether this is the success a replayed job ends with.
    #[must_use]
    pub fn is_replay_no_op(&self) -> bool {
        self.outcome == JobOutcome::Success && self.error_code == ERROR_CODE_REPLAY_NO_OP
    }

    /// Decodes a result from its stream fields, whatever the stream client. `game_id` and
    /// `outcome` are trimmed; an absent `error_code` or `error_message` is empty; the
    /// container fields are read on success only (a failure carries none).
    ///
    /// # Errors
    /// [`InvalidJobResult`] naming the first field that is wrong.
    pub fn decode<E: WireEntry + ?Sized>(entry: &E) -> Result<Self, InvalidJobResult> {
        let fields = Fields::new(entry);
        let text = |name| match fields.optional_text(name) {
            Ok(value) => Ok(value.unwrap_or_default()),
            Err(_) => Err(InvalidJobResult::NotUtf8(name)),
        };
        let game_id = GameId::new(text(fields::GAME_ID)?.trim())?;
        let outcome = match text(fields::OUTCOME)?.trim() {
            "" => return Err(InvalidJobResult::MissingOutcome),
            raw => raw.parse::<JobOutcome>()?,
        };
        let on_success = |name| match outcome {
            JobOutcome::Success => text(name).map(str::to_owned),
            JobOutcome::Failure => Ok(String::new()),
        };
        Ok(Self {
            game_id,
            outcome,
            error_code: text(fields::ERROR_CODE)?.to_owned(),
            error_message: text(fields::ERROR_MESSAGE)?.to_owned(),
            container_id: on_success(fields::CONTAINER_ID)?,
            engine_endpoint: on_success(fields::ENGINE_ENDPOINT)?,
        })
    }

    /// The exact field/value pairs to XADD: `game_id`, `outcome`, `error_code`,
    /// `error_message`, then `container_id` and `engine_endpoint` on success only.
    #[must_use]
    pub fn wire_fields(&self) -> Vec<(&'static str, String)> {
        let mut wire = vec![
            (fields::GAME_ID, self.game_id.as_str().to_owned()),
            (fields::OUTCOME, self.outcome.as_str().to_owned()),
            (fields::ERROR_CODE, self.error_code.clone()),
            (fields::ERROR_MESSAGE, self.error_message.clone()),
        ];
        if self.outcome == JobOutcome::Success {
            wire.push((fields::CONTAINER_ID, self.container_id.clone()));
            wire.push((fields::ENGINE_ENDPOINT, self.engine_endpoint.clone()));
        }
        wire
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn game() -> GameId {
        GameId::new("g-1").unwrap()
    }

    fn pairs(result: &JobResult) -> Vec<(&'static str, String)> {
        result.wire_fields()
    }

    fn expect(result: &JobResult, expected: &[(&str, &str)]) {
        let wire = pairs(result);
        let wire: Vec<(&str, &str)> = wire.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(wire, expected);
    }

    #[test]
    fn outcomes_round_trip() {
        for outcome in JobOutcome::ALL {
            assert_eq!(outcome.as_str().parse::<JobOutcome>(), Ok(outcome));
        }
        assert_eq!(
            "ok".parse::<JobOutcome>(),
            Err(UnknownJobOutcome("ok".into()))
        );
    }

    #[test]
    fn a_plain_success_has_all_six_fields_and_an_empty_code() {
        let result = JobResult::success(game(), "c-1", "http://engine:8080");
        assert!(!result.is_replay_no_op());
        expect(
            &result,
            &[
                ("game_id", "g-1"),
                ("outcome", "success"),
                ("error_code", ""),
                ("error_message", ""),
                ("container_id", "c-1"),
                ("engine_endpoint", "http://engine:8080"),
            ],
        );
    }

    #[test]
    fn a_replay_is_a_success_with_replay_no_op() {
        let result = JobResult::replay_no_op(game(), "", "", "runtime already removed");
        assert!(result.is_replay_no_op());
        expect(
            &result,
            &[
                ("game_id", "g-1"),
                ("outcome", "success"),
                ("error_code", "replay_no_op"),
                ("error_message", "runtime already removed"),
                ("container_id", ""),
                ("engine_endpoint", ""),
            ],
        );
    }

    #[test]
    fn every_undecodable_result_is_a_typed_error() {
        let decode = |pairs: &[(&str, &[u8])]| JobResult::decode(pairs);
        assert_eq!(
            decode(&[("outcome", b"success")]),
            Err(InvalidJobResult::GameId(InvalidGameId::Blank))
        );
        assert_eq!(
            decode(&[("game_id", b"g"), ("outcome", b" ")]),
            Err(InvalidJobResult::MissingOutcome)
        );
        assert_eq!(
            decode(&[("game_id", b"g"), ("outcome", b"ok")]),
            Err(InvalidJobResult::Outcome(UnknownJobOutcome("ok".into())))
        );
        assert_eq!(
            decode(&[
                ("game_id", b"g"),
                ("outcome", b"success"),
                ("error_code", b"\xff")
            ]),
            Err(InvalidJobResult::NotUtf8("error_code"))
        );
        // A failure's container fields are not read, whatever they hold.
        let failure = decode(&[
            ("game_id", b"g"),
            ("outcome", b"failure"),
            ("container_id", b"\xff"),
        ])
        .unwrap();
        assert_eq!(failure.container_id, "");
        assert_eq!(failure.error_code, "");
    }

    #[test]
    fn a_failure_never_carries_container_fields() {
        let mut result = JobResult::failure(game(), "docker_unavailable", "daemon timed out");
        assert!(!result.is_replay_no_op());
        result.container_id = "c-1".into();
        result.engine_endpoint = "http://engine:8080".into();
        expect(
            &result,
            &[
                ("game_id", "g-1"),
                ("outcome", "failure"),
                ("error_code", "docker_unavailable"),
                ("error_message", "daemon timed out"),
            ],
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn result() -> impl Strategy<Value = JobResult> {
        let game = "[A-Za-z0-9_.:-]{1,40}".prop_map(|g| GameId::new(g).unwrap());
        let text = "[ -~]{0,40}";
        prop_oneof![
            (game.clone(), text, text).prop_map(|(g, c, e)| JobResult::success(g, c, e)),
            (game.clone(), text, text, text)
                .prop_map(|(g, c, e, m)| JobResult::replay_no_op(g, c, e, m)),
            (game, "[a-z_]{1,30}", text).prop_map(|(g, code, m)| JobResult::failure(g, code, m)),
        ]
    }

    proptest! {
        #[test]
        fn encode_then_decode_gives_the_result_back(result in result()) {
            prop_assert_eq!(JobResult::decode(&result.wire_fields()), Ok(result));
        }

        #[test]
        fn decode_never_panics_on_any_field_map(
            pairs in crate::wire::arbitrary::field_map(&fields::ALL, crate::wire::arbitrary::spellings(&JobOutcome::ALL, JobOutcome::as_str)),
        ) {
            if let Ok(result) = JobResult::decode(&pairs) {
                prop_assert!(result.outcome == JobOutcome::Success || result.container_id.is_empty());
            }
        }
    }
}
