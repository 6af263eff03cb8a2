//! `runtime_records` behind `ports::RuntimeRecordStore`.

use async_trait::async_trait;
use domain_runtime::{
    EngineHealth, EntryPosition, GameId, Ownership, RuntimeRecord, RuntimeStatus, ShardClaim,
    ShardCount, ShardMark,
};
use pg_kit::{PgError, Pool};
use ports::{
    Error, HealthObservation, NewRuntime, ObservationResult, RuntimeRecordStore, RuntimeSnapshot,
    UpdateEngineHealth, UpdateStatus,
};
use tokio_postgres::Row;

use crate::batch::{self, BatchPaths, PathCounters, StatusCache};
use crate::error::{corrupt, store_error};
use tokio_postgres::error::SqlState;

/// The columns every single-record statement returns, in the order [`decode_record`]
/// reads them.
macro_rules! record_columns {
    () => {
        "status, engine_health, current_turn, created_at, updated_at"
    };
}

const SELECT_RECORD: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM runtime_records WHERE game_id = $1"
);

const INSERT_RECORD: &str = concat!(
    "INSERT INTO runtime_records (game_id, status, current_turn) VALUES ($1, $2, $3) RETURNING ",
    record_columns!()
);

/// The compare-and-swap: moves the status only from the expected one; `$4` NULL keeps the
/// summary.
const CAS_STATUS: &str = concat!(
    "UPDATE runtime_records SET status = $3, engine_health = COALESCE($4, engine_health), \
     updated_at = now() WHERE game_id = $1 AND status = $2 RETURNING ",
    record_columns!()
);

/// Several records by id (the id comes last, after [`record_columns!`]).
const SELECT_RECORDS: &str = concat!(
    "SELECT ",
    record_columns!(),
    ", game_id FROM runtime_records WHERE game_id = ANY($1::text[])"
);

/// Claims shards (migration V3).
const CLAIM: &str = "SELECT shard, epoch, checkpoint_ms, checkpoint_seq, published_ms, published_seq \
     FROM gm_claim_shards($1::text, $2::integer, $3::integer[])";

/// The SQLSTATE `gm_claim_shards` raises when the layout differs.
const LAYOUT_MISMATCH: &str = "GM003";

/// Every shard, with its owner and claim time, for operators.
const SHARD_TABLE: &str = "SELECT shard, epoch, checkpoint_ms, checkpoint_seq, published_ms, \
     published_seq, owner, claimed_at FROM gm_shards ORDER BY shard";

/// Every shard as stored ([`PgRuntimeRecordStore::shard_table`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardTable {
    /// The layout's shard count; `None` before the first claim.
    pub count: Option<u32>,
    /// Each shard, by number.
    pub shards: Vec<ShardRow>,
}

/// One shard as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRow {
    /// Number, epoch and checkpoint.
    pub claim: ShardClaim,
    /// The instance that claimed it last ('' before any claim).
    pub owner: String,
    /// When it was claimed last.
    pub claimed_at: Option<std::time::SystemTime>,
}

/// Shards' epochs and checkpoints as stored.
const READ_SHARDS: &str = "SELECT shard, epoch, checkpoint_ms, checkpoint_seq, published_ms, \
     published_seq FROM gm_shards WHERE shard = ANY($1::integer[]) ORDER BY shard";

/// The idle advance: each wanted shard still held under its epoch moves its checkpoint up
/// to `$5-$6` and its published mark up to its own (when given); the shards held under
/// another epoch come back. Rows of unpublished snapshots of other writers (`$7`: this
/// store's) whose every shard's mark has passed them go: whoever took those shards over
/// republished them.
const ADVANCE_CHECKPOINTS: &str = "\
WITH wanted AS (
    SELECT * FROM unnest($1::integer[], $2::bigint[], $3::bigint[], $4::bigint[])
        AS w(shard, epoch, mark_ms, mark_seq)
), moved AS (
    UPDATE gm_shards AS g
       SET checkpoint_ms = CASE WHEN g.checkpoint_ms IS NULL
                                 OR (g.checkpoint_ms, g.checkpoint_seq) < ($5, $6)
                                THEN $5 ELSE g.checkpoint_ms END,
           checkpoint_seq = CASE WHEN g.checkpoint_ms IS NULL
                                  OR (g.checkpoint_ms, g.checkpoint_seq) < ($5, $6)
                                 THEN $6 ELSE g.checkpoint_seq END,
           published_ms = CASE WHEN w.mark_ms IS NOT NULL AND (g.published_ms IS NULL
                                 OR (g.published_ms, g.published_seq) < (w.mark_ms, w.mark_seq))
                               THEN w.mark_ms ELSE g.published_ms END,
           published_seq = CASE WHEN w.mark_ms IS NOT NULL AND (g.published_ms IS NULL
                                  OR (g.published_ms, g.published_seq) < (w.mark_ms, w.mark_seq))
                                THEN w.mark_seq ELSE g.published_seq END,
           updated_at = now()
      FROM wanted AS w
     WHERE g.shard = w.shard AND g.epoch = w.epoch
    RETURNING g.shard
), gone AS (
    DELETE FROM gm_unpublished AS p
     WHERE p.writer <> $7
       AND NOT EXISTS (SELECT 1 FROM unnest(p.shards) AS s(shard)
                         JOIN gm_shards AS g ON g.shard = s.shard
                        WHERE g.published_ms IS NULL
                           OR (g.published_ms, g.published_seq) < (p.through_ms, p.through_seq))
)
SELECT w.shard FROM wanted AS w
 WHERE NOT EXISTS (SELECT 1 FROM gm_shards AS g WHERE g.shard = w.shard AND g.epoch = w.epoch)
 ORDER BY w.shard";

/// The chunks of unpublished snapshots holding any of the wanted shards' (whoever wrote
/// them).
const UNPUBLISHED: &str = "SELECT chunk FROM gm_unpublished WHERE shards && $1::integer[]";

/// The current turns of the games named.
const CURRENT_TURNS: &str = "SELECT r.game_id, r.current_turn FROM unnest($1::text[]) AS u(game_id) \
     CROSS JOIN LATERAL (SELECT game_id, current_turn FROM runtime_records \
     WHERE game_id = u.game_id) AS r";

/// Every game's summary.
const SUMMARIES: &str = "SELECT game_id, engine_health FROM runtime_records";

const SELECT_STATUS: &str = "SELECT status FROM runtime_records WHERE game_id = $1";

const WRITE_HEALTH: &str = concat!(
    "UPDATE runtime_records SET engine_health = $2, updated_at = now() WHERE game_id = $1 \
     RETURNING ",
    record_columns!()
);

/// How often `update_status` retries a compare-and-swap that missed although the record
/// was back in the expected status when looked up (another flow moved it away and back in
/// between). Bounded: after that, the miss is a conflict.
const CAS_ATTEMPTS: usize = 3;

/// The Game Master's runtime records in PostgreSQL, on a pool from `pg_kit::connect`.
/// Cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct PgRuntimeRecordStore {
    pool: Pool,
    statuses: StatusCache,
    paths: PathCounters,
    /// Names this store's writes of unpublished snapshots, so it deletes only its own
    /// once they are sent: unique per store made (process, clock, count).
    writer: batch::Writer,
}

/// Stores made in this process, for their writer tokens.
static STORES_MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A writer token no other store has: this process, the time, and the count of stores
/// this process made.
fn writer_token() -> std::sync::Arc<str> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = STORES_MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{nanos}-{n}", std::process::id()).into()
}

impl PgRuntimeRecordStore {
    /// A store on `pool` (whose database has the Game Master's migrations applied).
    #[must_use]
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            statuses: StatusCache::default(),
            paths: PathCounters::default(),
            writer: batch::Writer::new(writer_token()),
        }
    }

    /// How many health batches took each write path since this store was made (decision
    /// 0014): a high `guard_missed` share means other flows move statuses often.
    #[must_use]
    pub fn batch_paths(&self) -> BatchPaths {
        self.paths.get()
    }

    /// Exports the same counts in `registry`: `health_batches_guarded`,
    /// `health_batches_locked` and `health_batch_guard_misses` (counters).
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.paths.register(registry);
    }

    /// Every shard as stored, for operators (`gamemaster shards`): the layout's count
    /// (`None` before the first claim) and, per shard, its epoch, checkpoint, owner and
    /// when it was claimed.
    ///
    /// # Errors
    /// A store failure.
    pub async fn shard_table(&self) -> Result<ShardTable, Error> {
        let client = self.client().await?;
        let count = client
            .query_opt("SELECT shard_count FROM gm_shard_layout", &[])
            .await
            .map_err(store_error)?
            .map(|row| row.try_get::<_, i32>(0))
            .transpose()
            .map_err(store_error)?;
        let rows = client.query(SHARD_TABLE, &[]).await.map_err(store_error)?;
        let shards = rows
            .iter()
            .map(|row| {
                Ok(ShardRow {
                    claim: decode_claim(row)?,
                    owner: row.try_get(6).map_err(store_error)?,
                    claimed_at: row.try_get(7).map_err(store_error)?,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(ShardTable {
            count: count.and_then(|c| u32::try_from(c).ok()),
            shards,
        })
    }

    /// The pool, e.g. for a readiness ping.
    #[must_use]
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn client(&self) -> Result<pg_kit::Object, Error> {
        self.pool.get().await.map_err(store_error)
    }

    /// One statement returning at most one record row.
    async fn query_record(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(store_error)?;
        client
            .query_opt(&statement, params)
            .await
            .map_err(store_error)
    }

    /// One statement's rows.
    async fn query_rows(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(store_error)?;
        client.query(&statement, params).await.map_err(store_error)
    }

    /// The current turn of each of `games` that has a record.
    async fn current_turns(
        &self,
        games: &[&str],
    ) -> Result<std::collections::HashMap<String, u32>, Error> {
        if games.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let rows = self.query_rows(CURRENT_TURNS, &[&games]).await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get(0).map_err(store_error)?;
                let turn: i32 = row.try_get(1).map_err(store_error)?;
                let turn = u32::try_from(turn)
                    .map_err(|_| corrupt(&id, &format!("current_turn {turn} is negative")))?;
                Ok((id, turn))
            })
            .collect()
    }

    /// The stored status of a game, `None` when it has no record.
    async fn current_status(&self, game_id: &GameId) -> Result<Option<RuntimeStatus>, Error> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(SELECT_STATUS)
            .await
            .map_err(store_error)?;
        let row = client
            .query_opt(&statement, &[&game_id.as_str()])
            .await
            .map_err(store_error)?;
        row.map(|row| decode_status(game_id, &row, 0)).transpose()
    }
}

#[async_trait]
impl RuntimeRecordStore for PgRuntimeRecordStore {
    async fn get(&self, game_id: &GameId) -> Result<RuntimeRecord, Error> {
        match self
            .query_record(SELECT_RECORD, &[&game_id.as_str()])
            .await?
        {
            Some(row) => decode_record(game_id, &row),
            None => Err(Error::NotFound(game_id.clone())),
        }
    }

    async fn register(&self, new: &NewRuntime) -> Result<RuntimeRecord, Error> {
        let turn = i32::try_from(new.current_turn).map_err(|_| {
            Error::Invalid(format!(
                "current_turn {} does not fit the column (at most {})",
                new.current_turn,
                i32::MAX
            ))
        })?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
            [&new.game_id.as_str(), &new.status.as_str(), &turn];
        match self.query_record(INSERT_RECORD, &params).await {
            Ok(Some(row)) => decode_record(&new.game_id, &row),
            Ok(None) => Err(Error::Backend("INSERT … RETURNING returned no row".into())),
            Err(Error::Refused(source))
                if source
                    .downcast_ref::<PgError>()
                    .and_then(PgError::code)
                    .is_some_and(|code| *code == SqlState::UNIQUE_VIOLATION) =>
            {
                Err(Error::AlreadyExists(new.game_id.clone()))
            }
            Err(e) => Err(e),
        }
    }

    async fn update_status(&self, update: &UpdateStatus) -> Result<RuntimeRecord, Error> {
        let game_id = &update.game_id;
        let (from, to) = (update.transition.from(), update.transition.to());
        let summary = update.engine_health.map(EngineHealth::as_str);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&game_id.as_str(), &from.as_str(), &to.as_str(), &summary];
        let mut actual = from;
        for _ in 0..CAS_ATTEMPTS {
            if let Some(row) = self.query_record(CAS_STATUS, &params).await? {
                return decode_record(game_id, &row);
            }
            // Zero rows: no record, or not in the expected status.
            match self.current_status(game_id).await? {
                None => return Err(Error::NotFound(game_id.clone())),
                Some(status) if status != from => {
                    return Err(Error::Conflict {
                        game_id: game_id.clone(),
                        expected: from,
                        actual: status,
                    });
                }
                // Moved away and back between the two statements: try again.
                Some(status) => actual = status,
            }
        }
        Err(Error::Conflict {
            game_id: game_id.clone(),
            expected: from,
            actual,
        })
    }

    async fn update_engine_health(
        &self,
        update: &UpdateEngineHealth,
    ) -> Result<RuntimeRecord, Error> {
        let game_id = &update.game_id;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
            [&game_id.as_str(), &update.engine_health.as_str()];
        match self.query_record(WRITE_HEALTH, &params).await? {
            Some(row) => decode_record(game_id, &row),
            None => Err(Error::NotFound(game_id.clone())),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(observations = observations.len()))]
    async fn apply_health_batch(
        &self,
        observations: &[HealthObservation],
        news: &[bool],
        owner: &Ownership,
    ) -> Result<Vec<ObservationResult>, Error> {
        if observations.is_empty() {
            return Ok(Vec::new());
        }
        batch::apply(
            &self.pool,
            &self.statuses,
            &self.paths,
            observations,
            news,
            owner,
            &self.writer,
        )
        .await
    }

    async fn get_many(&self, game_ids: &[GameId]) -> Result<Vec<RuntimeRecord>, Error> {
        if game_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = game_ids.iter().map(GameId::as_str).collect();
        let client = self.client().await?;
        let statement = client
            .prepare_cached(SELECT_RECORDS)
            .await
            .map_err(store_error)?;
        let rows = client
            .query(&statement, &[&ids])
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                let id: &str = row.try_get(5).map_err(store_error)?;
                let game_id = GameId::new(id).map_err(|e| corrupt(id, &e.to_string()))?;
                decode_record(&game_id, row)
            })
            .collect()
    }

    async fn claim_shards(
        &self,
        instance: &str,
        count: ShardCount,
        shards: &[u32],
    ) -> Result<Vec<ShardClaim>, Error> {
        let wanted = shard_numbers(shards)?;
        let layout = i32::try_from(count.get()).unwrap_or(i32::MAX);
        let client = self.client().await?;
        let statement = client.prepare_cached(CLAIM).await.map_err(store_error)?;
        let rows = client
            .query(&statement, &[&instance, &layout, &wanted])
            .await
            .map_err(|e| {
                let e = PgError::from(e);
                if e.code().is_some_and(|c| c.code() == LAYOUT_MISMATCH) {
                    Error::Invalid(e.to_string())
                } else {
                    store_error(e)
                }
            })?;
        let mut claims = rows
            .iter()
            .map(decode_claim)
            .collect::<Result<Vec<_>, _>>()?;
        claims.sort_unstable_by_key(|c| c.shard);
        Ok(claims)
    }

    async fn read_shards(&self, shards: &[u32]) -> Result<Vec<ShardClaim>, Error> {
        let wanted = shard_numbers(shards)?;
        let rows = self.query_rows(READ_SHARDS, &[&wanted]).await?;
        rows.iter().map(decode_claim).collect()
    }

    async fn advance_checkpoints(
        &self,
        shards: &[ShardMark],
        through: EntryPosition,
    ) -> Result<Vec<u32>, Error> {
        if shards.is_empty() {
            return Ok(Vec::new());
        }
        let mut numbers = Vec::with_capacity(shards.len());
        let mut epochs = Vec::with_capacity(shards.len());
        let (mut marks_ms, mut marks_seq) = (Vec::new(), Vec::new());
        for mark in shards {
            numbers.push(batch::shard_number(mark.shard)?);
            epochs.push(batch::bigint(mark.epoch)?);
            let (ms, seq) = batch::bigint_pair(mark.published)?;
            marks_ms.push(ms);
            marks_seq.push(seq);
        }
        let (ms, seq) = (batch::bigint(through.ms)?, batch::bigint(through.seq)?);
        let writer: &str = self.writer.token();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
            [&numbers, &epochs, &marks_ms, &marks_seq, &ms, &seq, &writer];
        let rows = self.query_rows(ADVANCE_CHECKPOINTS, &params).await?;
        rows.iter()
            .map(|row| {
                let shard: i32 = row.try_get(0).map_err(store_error)?;
                u32::try_from(shard)
                    .map_err(|_| Error::Backend(format!("negative shard {shard} stored").into()))
            })
            .collect()
    }

    async fn unpublished(&self, shards: &[u32]) -> Result<Vec<RuntimeSnapshot>, Error> {
        if shards.is_empty() {
            return Ok(Vec::new());
        }
        let wanted = shard_numbers(shards)?;
        let marks: std::collections::HashMap<u32, Option<EntryPosition>> = self
            .read_shards(shards)
            .await?
            .into_iter()
            .map(|c| (c.shard, c.published))
            .collect();
        let rows = self.query_rows(UNPUBLISHED, &[&wanted]).await?;
        let mut kept = Vec::new();
        for row in &rows {
            let chunk: &[u8] = row.try_get(0).map_err(store_error)?;
            kept.extend(crate::kept::decode(chunk)?.into_iter().filter(|k| {
                marks
                    .get(&k.shard)
                    .is_some_and(|&mark| Some(k.entry) > mark)
            }));
        }
        kept.sort_by_key(|k| k.entry);
        kept.dedup_by_key(|k| k.entry);
        let mut games: Vec<&str> = kept.iter().map(|k| k.game_id.as_str()).collect();
        games.sort_unstable();
        games.dedup();
        let turns = self.current_turns(&games).await?;
        Ok(kept
            .into_iter()
            .filter_map(|k| {
                let current_turn = *turns.get(k.game_id.as_str())?;
                Some(RuntimeSnapshot {
                    current_turn,
                    runtime_status: k.status,
                    engine_health: k.engine_health,
                    occurred_at_ms: 0,
                    player_turn_stats: Vec::new(),
                    source_entry_id: Some(k.entry),
                    game_id: k.game_id,
                })
            })
            .collect())
    }

    async fn summaries(&self) -> Result<Vec<(GameId, Option<EngineHealth>)>, Error> {
        let rows = self.query_rows(SUMMARIES, &[]).await?;
        rows.iter()
            .map(|row| {
                let id: &str = row.try_get(0).map_err(store_error)?;
                let health: &str = row.try_get(1).map_err(store_error)?;
                let game_id = GameId::new(id).map_err(|e| corrupt(id, &e.to_string()))?;
                let summary = EngineHealth::parse_stored(health)
                    .map_err(|e| corrupt(id, &format!("engine_health: {e}")))?;
                Ok((game_id, summary))
            })
            .collect()
    }
}

/// Shard numbers as PostgreSQL integers.
fn shard_numbers(shards: &[u32]) -> Result<Vec<i32>, Error> {
    shards.iter().map(|&s| batch::shard_number(s)).collect()
}

/// Decodes a row of [`CLAIM`] or [`READ_SHARDS`]: shard, epoch, checkpoint.
fn decode_claim(row: &Row) -> Result<ShardClaim, Error> {
    let shard: i32 = row.try_get(0).map_err(store_error)?;
    let epoch: i64 = row.try_get(1).map_err(store_error)?;
    let ms: Option<i64> = row.try_get(2).map_err(store_error)?;
    let seq: Option<i64> = row.try_get(3).map_err(store_error)?;
    let unsigned = |n: i64| {
        u64::try_from(n).map_err(|_| {
            Error::Backend(format!("shard {shard} holds a negative number ({n})").into())
        })
    };
    let position = |ms: Option<i64>, seq: Option<i64>| -> Result<_, Error> {
        Ok(match (ms, seq) {
            (Some(ms), Some(seq)) => Some(EntryPosition {
                ms: unsigned(ms)?,
                seq: unsigned(seq)?,
            }),
            _ => None,
        })
    };
    let checkpoint = position(ms, seq)?;
    let published = position(
        row.try_get(4).map_err(store_error)?,
        row.try_get(5).map_err(store_error)?,
    )?;
    Ok(ShardClaim {
        shard: u32::try_from(shard)
            .map_err(|_| Error::Backend(format!("negative shard {shard} stored").into()))?,
        epoch: unsigned(epoch)?,
        checkpoint,
        published,
    })
}

/// Decodes a row of [`record_columns!`].
fn decode_record(game_id: &GameId, row: &Row) -> Result<RuntimeRecord, Error> {
    let id = game_id.as_str();
    let health: &str = row.try_get(1).map_err(store_error)?;
    let turn: i32 = row.try_get(2).map_err(store_error)?;
    Ok(RuntimeRecord {
        game_id: game_id.clone(),
        status: decode_status(game_id, row, 0)?,
        engine_health: EngineHealth::parse_stored(health)
            .map_err(|e| corrupt(id, &format!("engine_health: {e}")))?,
        current_turn: u32::try_from(turn)
            .map_err(|_| corrupt(id, &format!("current_turn {turn} is negative")))?,
        created_at: row.try_get(3).map_err(store_error)?,
        updated_at: row.try_get(4).map_err(store_error)?,
    })
}

fn decode_status(game_id: &GameId, row: &Row, column: usize) -> Result<RuntimeStatus, Error> {
    let status: &str = row.try_get(column).map_err(store_error)?;
    status
        .parse()
        .map_err(|e| corrupt(game_id.as_str(), &format!("status: {e}")))
}
