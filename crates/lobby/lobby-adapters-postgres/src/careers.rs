//! `evaluation_guards` and `player_careers`: capability evaluation, once per game.

use std::collections::BTreeMap;
use std::time::SystemTime;

use async_trait::async_trait;
use lobby_domain::{
    CareerRecord, GameId, PlayerObservedStats, UserId, fold_finished_game_into_careers,
};
use lobby_ports::{CapabilityEvaluator, CareerStore, Error, Evaluation, EvaluationGuardStore};
use tokio_postgres::Row;

use crate::stats::decode_stats;
use crate::store::{Param, PgLobbyStore, corrupt, store_error, time_from_ms, unknown_game_or};

const SELECT_GUARD: &str = "SELECT evaluated_at FROM evaluation_guards WHERE game_id = $1";

/// Claims the guard; returns a row only to the transaction that claimed it. A concurrent
/// claimer waits for the first to commit, then finds the row and gets nothing.
const CLAIM_GUARD: &str = "INSERT INTO evaluation_guards (game_id, finished_at) VALUES ($1, $2) \
     ON CONFLICT (game_id) DO NOTHING RETURNING game_id";

const SELECT_GAME_STATS: &str = "SELECT user_id, initial_planets, initial_population, \
     initial_ships_built, max_planets, max_population, max_ships_built \
     FROM game_player_stats WHERE game_id = $1 ORDER BY user_id";

/// Makes sure every player has a career row, so the lock below covers them all (two games
/// finishing together must not both start a new player from zero).
const ENSURE_CAREERS: &str = "INSERT INTO player_careers (user_id) \
     SELECT u FROM unnest($1::text[]) AS t(u) ORDER BY u ON CONFLICT (user_id) DO NOTHING";

const LOCK_CAREERS: &str = "SELECT user_id, games_finished, best_planets, best_population, \
     most_ships_built FROM player_careers WHERE user_id = ANY($1) ORDER BY user_id FOR UPDATE";

const SELECT_CAREERS: &str = "SELECT user_id, games_finished, best_planets, best_population, \
     most_ships_built FROM player_careers WHERE user_id = ANY($1) ORDER BY user_id";

const WRITE_CAREERS: &str = "UPDATE player_careers AS c SET \
         games_finished = u.games_finished, best_planets = u.best_planets, \
         best_population = u.best_population, most_ships_built = u.most_ships_built, \
         updated_at = now() \
     FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[]) \
         AS u(user_id, games_finished, best_planets, best_population, most_ships_built) \
     WHERE c.user_id = u.user_id";

#[async_trait]
impl EvaluationGuardStore for PgLobbyStore {
    async fn evaluated_at(&self, game_id: &GameId) -> Result<Option<SystemTime>, Error> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(SELECT_GUARD)
            .await
            .map_err(store_error)?;
        client
            .query_opt(&statement, &[&game_id.as_str()])
            .await
            .map_err(store_error)?
            .map(|row| row.try_get(0).map_err(store_error))
            .transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(game_id = %game_id))]
    async fn evaluate_once(
        &self,
        game_id: &GameId,
        finished_at_ms: i64,
    ) -> Result<Evaluation, Error> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(store_error)?;

        // 1. The guard: only the transaction that inserts it goes on.
        let claim = tx.prepare_cached(CLAIM_GUARD).await.map_err(store_error)?;
        let finished_at = time_from_ms(finished_at_ms);
        let params: [Param<'_>; 2] = [&game_id.as_str(), &finished_at];
        let claimed = tx
            .query_opt(&claim, &params)
            .await
            .map_err(|e| unknown_game_or(e, game_id))?;
        if claimed.is_none() {
            return Ok(Evaluation::AlreadyEvaluated);
        }

        // 2. The game's result per player: the best each component reached in it.
        let select = tx
            .prepare_cached(SELECT_GAME_STATS)
            .await
            .map_err(store_error)?;
        let final_stats = tx
            .query(&select, &[&game_id.as_str()])
            .await
            .map_err(store_error)?
            .iter()
            .map(|row| {
                let (user_id, aggregate) = decode_stats(game_id, row)?;
                let max = aggregate.max();
                PlayerObservedStats::new(
                    user_id.as_str(),
                    max.planets(),
                    max.population(),
                    max.ships_built(),
                )
                .map_err(|e| corrupt(user_id.as_str(), &e.to_string()))
            })
            .collect::<Result<Vec<_>, Error>>()?;

        // 3. The careers, locked in user order, folded in Rust, written back at once.
        let players = final_stats.len();
        if players > 0 {
            let users: Vec<&str> = final_stats.iter().map(|s| s.user_id().as_str()).collect();
            let ensure = tx
                .prepare_cached(ENSURE_CAREERS)
                .await
                .map_err(store_error)?;
            tx.execute(&ensure, &[&users]).await.map_err(store_error)?;
            let lock = tx.prepare_cached(LOCK_CAREERS).await.map_err(store_error)?;
            let careers = tx
                .query(&lock, &[&users])
                .await
                .map_err(store_error)?
                .iter()
                .map(|row| decode_career(row).map(|c| (c.user_id.clone(), c)))
                .collect::<Result<BTreeMap<UserId, CareerRecord>, Error>>()?;
            let updated = fold_finished_game_into_careers(&careers, &final_stats);
            write_careers(&tx, &updated).await?;
        }
        tx.commit().await.map_err(store_error)?;
        Ok(Evaluation::Evaluated { players })
    }
}

async fn write_careers(
    tx: &pg_kit::Transaction<'_>,
    careers: &[CareerRecord],
) -> Result<(), Error> {
    let users: Vec<&str> = careers.iter().map(|c| c.user_id.as_str()).collect();
    let games: Vec<i64> = careers
        .iter()
        .map(|c| i64::from(c.games_finished))
        .collect();
    let planets: Vec<i64> = careers.iter().map(|c| c.best_planets).collect();
    let population: Vec<i64> = careers.iter().map(|c| c.best_population).collect();
    let ships: Vec<i64> = careers.iter().map(|c| c.most_ships_built).collect();
    let write = tx
        .prepare_cached(WRITE_CAREERS)
        .await
        .map_err(store_error)?;
    let params: [Param<'_>; 5] = [&users, &games, &planets, &population, &ships];
    tx.execute(&write, &params).await.map_err(store_error)?;
    Ok(())
}

/// Decodes a career row (`user_id, games_finished, best_planets, best_population,
/// most_ships_built`).
fn decode_career(row: &Row) -> Result<CareerRecord, Error> {
    let user: &str = row.try_get(0).map_err(store_error)?;
    let games: i64 = row.try_get(1).map_err(store_error)?;
    Ok(CareerRecord {
        user_id: UserId::new(user).map_err(|e| corrupt(user, &e.to_string()))?,
        games_finished: u32::try_from(games)
            .map_err(|_| corrupt(user, &format!("games_finished {games} is out of range")))?,
        best_planets: row.try_get(2).map_err(store_error)?,
        best_population: row.try_get(3).map_err(store_error)?,
        most_ships_built: row.try_get(4).map_err(store_error)?,
    })
}

#[async_trait]
impl CareerStore for PgLobbyStore {
    async fn careers(&self, user_ids: &[UserId]) -> Result<Vec<CareerRecord>, Error> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        let users: Vec<&str> = user_ids.iter().map(UserId::as_str).collect();
        let client = self.client().await?;
        let statement = client
            .prepare_cached(SELECT_CAREERS)
            .await
            .map_err(store_error)?;
        client
            .query(&statement, &[&users])
            .await
            .map_err(store_error)?
            .iter()
            .map(decode_career)
            .collect()
    }
}

/// Capability evaluation here is the career fold behind the guard.
#[async_trait]
impl CapabilityEvaluator for PgLobbyStore {
    async fn evaluate(&self, game_id: &GameId, finished_at_ms: i64) -> Result<Evaluation, Error> {
        self.evaluate_once(game_id, finished_at_ms).await
    }
}
