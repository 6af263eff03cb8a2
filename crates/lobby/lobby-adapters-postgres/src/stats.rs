//! `game_player_stats` behind `lobby_ports::GameTurnStatsStore`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use lobby_domain::{
    GameId, PlayerObservedStats, PlayerStatsAggregate, StatValues, UserId, raise_max,
};
use lobby_ports::{Error, GameTurnStatsStore};
use tokio_postgres::Row;

use crate::apply::StatColumns;
use crate::store::{Param, PgLobbyStore, corrupt, store_error, unknown_game_or};

/// New players only: the initial, which is also the first maximum.
const INSERT_INITIAL: &str = "INSERT INTO game_player_stats \
         (game_id, user_id, initial_planets, initial_population, initial_ships_built, \
          max_planets, max_population, max_ships_built) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], \
                          $6::bigint[], $7::bigint[], $8::bigint[]) \
     ON CONFLICT (game_id, user_id) DO NOTHING";

/// Known players only: each maximum raised where the observation is larger.
const RAISE_MAX: &str = "UPDATE game_player_stats AS s SET \
         max_planets = GREATEST(s.max_planets, u.planets), \
         max_population = GREATEST(s.max_population, u.population), \
         max_ships_built = GREATEST(s.max_ships_built, u.ships_built), \
         updated_at = now() \
     FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bigint[]) \
         AS u(user_id, planets, population, ships_built) \
     WHERE s.game_id = $1 AND s.user_id = u.user_id \
       AND (u.planets > s.max_planets OR u.population > s.max_population \
            OR u.ships_built > s.max_ships_built)";

const SELECT_STATS: &str = "SELECT user_id, initial_planets, initial_population, \
     initial_ships_built, max_planets, max_population, max_ships_built \
     FROM game_player_stats WHERE game_id = $1 ORDER BY user_id";

#[async_trait]
impl GameTurnStatsStore for PgLobbyStore {
    async fn save_initial(
        &self,
        game_id: &GameId,
        stats: &[PlayerObservedStats],
    ) -> Result<usize, Error> {
        // The first entry of a player is the initial.
        let mut first: BTreeMap<&UserId, PlayerStatsAggregate> = BTreeMap::new();
        for observed in stats {
            first
                .entry(observed.user_id())
                .or_insert_with(|| PlayerStatsAggregate::first(observed.values()));
        }
        if first.is_empty() {
            return Ok(0);
        }
        let mut columns = StatColumns::with_capacity(first.len());
        for (user_id, aggregate) in &first {
            columns.push(game_id.as_str(), user_id.as_str(), aggregate);
        }
        let client = self.client().await?;
        let statement = client
            .prepare_cached(INSERT_INITIAL)
            .await
            .map_err(store_error)?;
        let inserted = client
            .execute(&statement, &columns.params())
            .await
            .map_err(|e| unknown_game_or(e, game_id))?;
        Ok(usize::try_from(inserted).unwrap_or(usize::MAX))
    }

    async fn update_max(
        &self,
        game_id: &GameId,
        stats: &[PlayerObservedStats],
    ) -> Result<(), Error> {
        // One row per player: the per-component maximum of its entries.
        let mut merged: BTreeMap<&UserId, StatValues> = BTreeMap::new();
        for observed in stats {
            let values = observed.values();
            merged
                .entry(observed.user_id())
                .and_modify(|seen| *seen = raise_max(seen, &values))
                .or_insert(values);
        }
        if merged.is_empty() {
            return Ok(());
        }
        let users: Vec<&str> = merged.keys().map(|u| u.as_str()).collect();
        let planets: Vec<i64> = merged.values().map(|v| v.planets()).collect();
        let population: Vec<i64> = merged.values().map(|v| v.population()).collect();
        let ships: Vec<i64> = merged.values().map(|v| v.ships_built()).collect();
        let client = self.client().await?;
        let statement = client
            .prepare_cached(RAISE_MAX)
            .await
            .map_err(store_error)?;
        let params: [Param<'_>; 5] = [&game_id.as_str(), &users, &planets, &population, &ships];
        client
            .execute(&statement, &params)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn load(
        &self,
        game_id: &GameId,
    ) -> Result<BTreeMap<UserId, PlayerStatsAggregate>, Error> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(SELECT_STATS)
            .await
            .map_err(store_error)?;
        client
            .query(&statement, &[&game_id.as_str()])
            .await
            .map_err(store_error)?
            .iter()
            .map(|row| decode_stats(game_id, row))
            .collect()
    }
}

/// Decodes a row of [`SELECT_STATS`] (or the same columns elsewhere).
pub(crate) fn decode_stats(
    game_id: &GameId,
    row: &Row,
) -> Result<(UserId, PlayerStatsAggregate), Error> {
    let user: &str = row.try_get(0).map_err(store_error)?;
    let key = format!("{game_id}/{user}");
    let values = |offset: usize| -> Result<StatValues, Error> {
        StatValues::new(
            row.try_get(offset).map_err(store_error)?,
            row.try_get(offset + 1).map_err(store_error)?,
            row.try_get(offset + 2).map_err(store_error)?,
        )
        .map_err(|e| corrupt(&key, &e.to_string()))
    };
    let (initial, max) = (values(1)?, values(4)?);
    let user_id = UserId::new(user).map_err(|e| corrupt(&key, &e.to_string()))?;
    // The table keeps max ≥ initial per component, so observing the maxima after the
    // initial rebuilds the aggregate exactly.
    Ok((user_id, PlayerStatsAggregate::first(initial).observe(&max)))
}
