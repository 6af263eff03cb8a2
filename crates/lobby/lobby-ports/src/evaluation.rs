//! Capability evaluation: the guard that makes it run once per game, and the careers it
//! produces.

use std::time::SystemTime;

use async_trait::async_trait;
use lobby_domain::{CareerRecord, GameId, UserId};

use crate::Error;

/// What one capability evaluation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evaluation {
    /// This call evaluated the game: `players` career records were updated.
    Evaluated {
        /// How many players' careers the game was folded into.
        players: usize,
    },
    /// The game was evaluated before (a replayed `game_finished`); nothing changed.
    AlreadyEvaluated,
}

/// Capability evaluation as the worker sees it: hand over a finished game, learn whether
/// it was evaluated now or before. Implementations must make it happen once per game
/// however often they are called (see [`EvaluationGuardStore`]).
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait CapabilityEvaluator: Send + Sync {
    /// Evaluates the finished game, unless it was evaluated before.
    ///
    /// # Errors
    /// Any failure: the caller holds the stream offset and calls again later.
    async fn evaluate(&self, game_id: &GameId, finished_at_ms: i64) -> Result<Evaluation, Error>;
}

/// The evaluation guard: one row per evaluated game, written in the same transaction as
/// the evaluation's effects, so an evaluation is either fully done and guarded or not done
/// at all.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait EvaluationGuardStore: Send + Sync {
    /// When the game was evaluated, `None` if it was not.
    ///
    /// # Errors
    /// A store failure.
    async fn evaluated_at(&self, game_id: &GameId) -> Result<Option<SystemTime>, Error>;

    /// In one transaction: claims the game's guard and, only when this call claimed it,
    /// folds the game's per-player maxima into each player's career record
    /// (`lobby_domain::fold_finished_game_into_careers`). A second call for the same game
    /// changes nothing and returns [`Evaluation::AlreadyEvaluated`].
    ///
    /// # Errors
    /// A store failure; then neither the guard nor any career was written.
    async fn evaluate_once(
        &self,
        game_id: &GameId,
        finished_at_ms: i64,
    ) -> Result<Evaluation, Error>;
}

/// The players' career records, as capability evaluation leaves them.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait CareerStore: Send + Sync {
    /// The careers of the given players that exist, ordered by user id (a player with no
    /// finished game has none).
    ///
    /// # Errors
    /// A store failure.
    async fn careers(&self, user_ids: &[UserId]) -> Result<Vec<CareerRecord>, Error>;
}
