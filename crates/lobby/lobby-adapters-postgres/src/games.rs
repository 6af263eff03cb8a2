//! `games` behind `lobby_ports::GameStore`.

use async_trait::async_trait;
use contracts::StopReason;
use lobby_domain::{FinishPlan, GameId, GameStatus, RuntimeSnapshot, plan_finish};
use lobby_ports::{
    Error, FinishGame, FinishResult, GameRecord, GameStore, NewGame, SnapshotResult,
    SnapshotUpdate, UpdateStatus,
};
use tokio_postgres::error::SqlState;

use crate::apply::apply_run;
use crate::stops::REQUEST_STOP;
use crate::store::{
    Param, PgLobbyStore, corrupt, decode_game, game_columns, store_error, store_error_or,
    time_from_ms,
};

const SELECT_GAME: &str = concat!("SELECT ", game_columns!(), " FROM games WHERE game_id = $1");

/// A game created `finished` gets the creation time as its finish time (the table demands
/// one).
const INSERT_GAME: &str = concat!(
    "INSERT INTO games (game_id, status, finished_at) \
     VALUES ($1, $2::text, CASE WHEN $2::text = 'finished' THEN now() END) RETURNING ",
    game_columns!()
);

const LOCK_GAME: &str = "SELECT status FROM games WHERE game_id = $1 FOR NO KEY UPDATE";

/// The status write of a compare-and-swap whose source was checked under the row lock;
/// `$3` is the finish time, kept only when the target is `finished`.
const WRITE_STATUS: &str = concat!(
    "UPDATE games SET status = $2::text, \
     finished_at = CASE WHEN $2::text = 'finished' THEN $3 ELSE finished_at END, \
     updated_at = now() WHERE game_id = $1 RETURNING ",
    game_columns!()
);

const FINISH: &str =
    "UPDATE games SET status = 'finished', finished_at = $2, updated_at = now() WHERE game_id = $1";

#[async_trait]
impl GameStore for PgLobbyStore {
    async fn get(&self, game_id: &GameId) -> Result<GameRecord, Error> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(SELECT_GAME)
            .await
            .map_err(store_error)?;
        match client
            .query_opt(&statement, &[&game_id.as_str()])
            .await
            .map_err(store_error)?
        {
            Some(row) => decode_game(&row),
            None => Err(Error::NotFound(game_id.clone())),
        }
    }

    async fn create(&self, new: &NewGame) -> Result<GameRecord, Error> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(INSERT_GAME)
            .await
            .map_err(store_error)?;
        let params: [Param<'_>; 2] = [&new.game_id.as_str(), &new.status.as_str()];
        let row = client.query_one(&statement, &params).await.map_err(|e| {
            store_error_or(
                e,
                &SqlState::UNIQUE_VIOLATION,
                Error::AlreadyExists(new.game_id.clone()),
            )
        })?;
        decode_game(&row)
    }

    async fn update_runtime_snapshot(
        &self,
        game_id: &GameId,
        snapshot: &RuntimeSnapshot,
    ) -> Result<SnapshotResult, Error> {
        let update = SnapshotUpdate {
            game_id: game_id.clone(),
            snapshot: snapshot.clone(),
            player_stats: Vec::new(),
        };
        let results = self.apply_snapshots(std::slice::from_ref(&update)).await?;
        results
            .into_iter()
            .next()
            .ok_or_else(|| Error::Backend("the snapshot write returned no result".into()))
    }

    async fn update_status(&self, update: &UpdateStatus) -> Result<GameRecord, Error> {
        let game_id = update.game_id.as_str();
        let (from, to) = (update.transition.from(), update.transition.to());
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(store_error)?;
        let lock = tx.prepare_cached(LOCK_GAME).await.map_err(store_error)?;
        let Some(row) = tx
            .query_opt(&lock, &[&game_id])
            .await
            .map_err(store_error)?
        else {
            return Err(Error::NotFound(update.game_id.clone()));
        };
        let actual: &str = row.try_get(0).map_err(store_error)?;
        let actual: GameStatus = actual
            .parse()
            .map_err(|e| corrupt(game_id, &format!("status: {e}")))?;
        if actual != from {
            return Err(Error::Conflict {
                game_id: update.game_id.clone(),
                expected: from,
                actual,
            });
        }
        let write = tx.prepare_cached(WRITE_STATUS).await.map_err(store_error)?;
        let at = time_from_ms(update.at_ms);
        let params: [Param<'_>; 3] = [&game_id, &to.as_str(), &at];
        let row = tx.query_one(&write, &params).await.map_err(store_error)?;
        let record = decode_game(&row)?;
        tx.commit().await.map_err(store_error)?;
        Ok(record)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(updates = updates.len()))]
    async fn apply_snapshots(
        &self,
        updates: &[SnapshotUpdate],
    ) -> Result<Vec<SnapshotResult>, Error> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(store_error)?;
        let run = apply_run(&tx, updates).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(run.results)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(game_id = %finish.update.game_id))]
    async fn finish_game(&self, finish: &FinishGame) -> Result<FinishResult, Error> {
        let game_id = finish.update.game_id.as_str();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(store_error)?;
        let run = apply_run(&tx, std::slice::from_ref(&finish.update)).await?;
        let snapshot_applied = match run.results.first() {
            Some(SnapshotResult::Applied) => true,
            Some(SnapshotResult::Stale { .. }) => false,
            Some(SnapshotResult::UnknownGame) | None => return Ok(FinishResult::UnknownGame),
        };
        let Some(game) = run.games.get(game_id) else {
            return Err(Error::Backend(
                format!("game '{game_id}' was applied but not locked").into(),
            ));
        };
        let result = match plan_finish(game.record.status) {
            FinishPlan::Finish(transition) => {
                let write = tx.prepare_cached(FINISH).await.map_err(store_error)?;
                let at = time_from_ms(finish.finished_at_ms);
                let params: [Param<'_>; 2] = [&game_id, &at];
                tx.execute(&write, &params).await.map_err(store_error)?;
                // The runtime is no longer needed: one stop request, sent by the running
                // Lobby. A replayed game_finished finds the game finished and asks again
                // for nothing.
                let stop = tx.prepare_cached(REQUEST_STOP).await.map_err(store_error)?;
                let reason = StopReason::GameFinished.as_str();
                tx.execute(&stop, &[&game_id, &reason])
                    .await
                    .map_err(store_error)?;
                FinishResult::Finished {
                    transition,
                    finished_at_ms: finish.finished_at_ms,
                    snapshot_applied,
                }
            }
            FinishPlan::AlreadyFinished => FinishResult::AlreadyFinished {
                finished_at_ms: game
                    .record
                    .finished_at_ms
                    .ok_or_else(|| corrupt(game_id, "finished without a finish time"))?,
                snapshot_applied,
            },
            FinishPlan::Ignore(status) => FinishResult::UnexpectedStatus {
                status,
                snapshot_applied,
            },
        };
        tx.commit().await.map_err(store_error)?;
        Ok(result)
    }
}
