//! The Lobby's stop requests: the outbox between a game's finish (or an operator) and
//! `runtime:stop_jobs`.

use async_trait::async_trait;
use contracts::{JobResult, StopJob, StopReason};
use lobby_domain::GameId;

use crate::Error;

/// A stop the Lobby asked for and has not sent yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingStop {
    /// The request's id, in the order requests were made.
    pub id: i64,
    /// The job to append.
    pub job: StopJob,
}

/// A job result the Lobby records as its game's last stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopAnswer {
    /// The `runtime:job_results` entry it came in, as `(milliseconds, sequence)`. A
    /// result carries its stop job's entry id, so this orders answers as the jobs were
    /// asked: a replayed older one never overwrites a newer one.
    pub entry: (u64, u64),
    /// What the Runtime Manager answered.
    pub result: JobResult,
}

/// What recording one [`StopAnswer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerRecorded {
    /// It is now the game's last stop.
    Recorded,
    /// The game holds a later answer already (a replay): nothing changed.
    Stale,
    /// The Lobby has no such game: nothing changed.
    UnknownGame,
}

/// The stop requests (`stop_requests`). A game's finish writes its request itself, in the
/// finish's transaction ([`GameStore::finish_game`](crate::GameStore::finish_game)).
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait StopRequests: Send + Sync {
    /// Asks for `game_id`'s runtime to be stopped for `reason` (an operator's command).
    ///
    /// # Errors
    /// [`Error::NotFound`] for a game the Lobby does not know; storage failures.
    async fn request_stop(&self, game_id: &GameId, reason: StopReason) -> Result<(), Error>;

    /// Up to `limit` requests not sent yet, oldest first.
    ///
    /// # Errors
    /// Storage failures; [`Error::Refused`] for a row that does not decode.
    async fn pending_stops(&self, limit: usize) -> Result<Vec<PendingStop>, Error>;

    /// Records that each request was appended as the given stream entry.
    ///
    /// # Errors
    /// Storage failures.
    async fn mark_sent(&self, sent: &[(i64, String)]) -> Result<(), Error>;

    /// Records each answer, in order and in one transaction, as its game's last stop
    /// (outcome, error code and message) with when the engine stopped: now for a stop
    /// that succeeded, the time already recorded for one that found the engine stopped
    /// (`replay_no_op`), none for a failure. One result per answer.
    ///
    /// # Errors
    /// Storage failures; [`Error::Refused`] when the database refuses an answer's values
    /// (the caller isolates it).
    async fn record_answers(&self, answers: &[StopAnswer]) -> Result<Vec<AnswerRecorded>, Error>;
}
