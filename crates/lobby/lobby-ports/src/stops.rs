//! The Lobby's stop requests: the outbox between a game's finish (or an operator) and
//! `runtime:stop_jobs`.

use async_trait::async_trait;
use contracts::{StopJob, StopReason};
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
}
