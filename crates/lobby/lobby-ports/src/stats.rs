//! The per-game, per-player stats aggregate.

use std::collections::BTreeMap;

use async_trait::async_trait;
use lobby_domain::{GameId, PlayerObservedStats, PlayerStatsAggregate, UserId};

use crate::Error;

/// Each player's stats in each game: the initial frozen at the first observation, the
/// maxima raised per component. [`GameStore::apply_snapshots`](crate::GameStore::apply_snapshots)
/// does both steps inside its transaction; these are the single steps.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait GameTurnStatsStore: Send + Sync {
    /// Records the initial (and first maximum) of every player seen for the first time in
    /// this game; players already recorded are left alone. When a player appears twice,
    /// the first entry is the initial. Returns how many players were new.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the Lobby has no such game, or a store failure.
    async fn save_initial(
        &self,
        game_id: &GameId,
        stats: &[PlayerObservedStats],
    ) -> Result<usize, Error>;

    /// Raises each recorded player's maxima per component to the observed values where
    /// those are larger; players not recorded yet are left alone (call
    /// [`Self::save_initial`] first).
    ///
    /// # Errors
    /// A store failure.
    async fn update_max(
        &self,
        game_id: &GameId,
        stats: &[PlayerObservedStats],
    ) -> Result<(), Error>;

    /// Every player's aggregate in the game (empty when none was observed).
    ///
    /// # Errors
    /// A store failure.
    async fn load(&self, game_id: &GameId)
    -> Result<BTreeMap<UserId, PlayerStatsAggregate>, Error>;
}
