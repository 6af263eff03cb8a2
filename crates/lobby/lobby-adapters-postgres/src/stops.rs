//! `stop_requests` behind `lobby_ports::StopRequests`.

use std::time::SystemTime;

use async_trait::async_trait;
use contracts::{StopJob, StopReason};
use lobby_domain::GameId;
use lobby_ports::{AnswerRecorded, Error, PendingStop, StopAnswer, StopRequests};

use crate::store::{PgLobbyStore, ms_from_time, store_error, unknown_game_or};

type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// The request a game's finish writes, in the finish's transaction.
pub(crate) const REQUEST_STOP: &str = "INSERT INTO stop_requests (game_id, reason) VALUES ($1, $2)";

const PENDING: &str = "SELECT id, game_id, reason, requested_at FROM stop_requests \
     WHERE stream_entry_id IS NULL ORDER BY id LIMIT $1";

const MARK_SENT: &str = "UPDATE stop_requests AS r SET stream_entry_id = s.entry, sent_at = now() \
     FROM unnest($1::bigint[], $2::text[]) AS s(id, entry) \
     WHERE r.id = s.id AND r.stream_entry_id IS NULL";

/// One answer as the game's last stop, unless the game holds a later one. No row: the
/// game is unknown; `false`: the answer is stale.
const RECORD_ANSWER: &str = "WITH target AS ( \
         SELECT game_id, (stop_answer_ms IS NULL \
             OR (stop_answer_ms, stop_answer_seq) < ($2::bigint, $3::bigint)) AS newer \
         FROM games WHERE game_id = $1 FOR UPDATE), \
     written AS ( \
         UPDATE games AS g SET stop_outcome = $4, stop_error_code = $5, \
             stop_error_message = $6, \
             stopped_at = CASE WHEN $4 = 'success' THEN COALESCE( \
                 CASE WHEN $5 = 'replay_no_op' THEN g.stopped_at END, now()) END, \
             stop_answer_ms = $2, stop_answer_seq = $3, updated_at = now() \
         FROM target WHERE g.game_id = target.game_id AND target.newer RETURNING 1) \
     SELECT newer FROM target";

/// An entry id part as a `bigint`; Redis never makes one past `i64::MAX`, and one that
/// claims to be is refused rather than wrapped.
fn id_part(part: u64) -> Result<i64, Error> {
    i64::try_from(part)
        .map_err(|_| Error::Refused(format!("entry id part {part} is out of range").into()))
}

fn pending_of(row: &tokio_postgres::Row) -> Result<PendingStop, Error> {
    let refused = |what: String| Error::Refused(what.into());
    let id: i64 = row.try_get(0).map_err(store_error)?;
    let game: String = row.try_get(1).map_err(store_error)?;
    let reason: String = row.try_get(2).map_err(store_error)?;
    let at: SystemTime = row.try_get(3).map_err(store_error)?;
    let reason = reason
        .parse::<StopReason>()
        .map_err(|e| refused(format!("stop request {id}: {e}")))?;
    let job = StopJob::new(&game, reason, Some(ms_from_time(at).max(1)))
        .map_err(|e| refused(format!("stop request {id}: {e}")))?;
    Ok(PendingStop { id, job })
}

#[async_trait]
impl StopRequests for PgLobbyStore {
    async fn request_stop(&self, game_id: &GameId, reason: StopReason) -> Result<(), Error> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(REQUEST_STOP)
            .await
            .map_err(store_error)?;
        client
            .execute(&statement, &[&game_id.as_str(), &reason.as_str()])
            .await
            .map_err(|e| unknown_game_or(e, game_id))?;
        Ok(())
    }

    async fn pending_stops(&self, limit: usize) -> Result<Vec<PendingStop>, Error> {
        let client = self.client().await?;
        let statement = client.prepare_cached(PENDING).await.map_err(store_error)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(&statement, &[&limit])
            .await
            .map_err(store_error)?;
        rows.iter().map(pending_of).collect()
    }

    async fn mark_sent(&self, sent: &[(i64, String)]) -> Result<(), Error> {
        let (ids, entries): (Vec<i64>, Vec<&str>) =
            sent.iter().map(|(id, entry)| (*id, entry.as_str())).unzip();
        let client = self.client().await?;
        let statement = client
            .prepare_cached(MARK_SENT)
            .await
            .map_err(store_error)?;
        client
            .execute(&statement, &[&ids, &entries])
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn record_answers(&self, answers: &[StopAnswer]) -> Result<Vec<AnswerRecorded>, Error> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(store_error)?;
        let statement = tx
            .prepare_cached(RECORD_ANSWER)
            .await
            .map_err(store_error)?;
        let mut recorded = Vec::with_capacity(answers.len());
        for answer in answers {
            let (ms, seq) = (id_part(answer.entry.0)?, id_part(answer.entry.1)?);
            let r = &answer.result;
            let outcome = r.outcome.as_str();
            let params: [Param<'_>; 6] = [
                &r.game_id.as_str(),
                &ms,
                &seq,
                &outcome,
                &r.error_code,
                &r.error_message,
            ];
            let row = tx
                .query_opt(&statement, &params)
                .await
                .map_err(store_error)?;
            recorded.push(match row {
                None => AnswerRecorded::UnknownGame,
                Some(row) if row.try_get::<_, bool>(0).map_err(store_error)? => {
                    AnswerRecorded::Recorded
                }
                Some(_) => AnswerRecorded::Stale,
            });
        }
        tx.commit().await.map_err(store_error)?;
        Ok(recorded)
    }
}
