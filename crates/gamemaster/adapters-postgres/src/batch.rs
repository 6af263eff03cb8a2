//! `apply_health_batch`: a batch of health observations in one atomic write.
//!
//! Two paths give the same result (decision 0014):
//!
//! - **Guarded** (one round trip): when the status of every game of the batch is in the
//!   [`StatusCache`], the observations are folded from those statuses and written by
//!   `runtime_records_write_guarded`, which writes only if every record still has the
//!   status the fold started from and otherwise raises `GM001` with nothing written.
//! - **Locked** (two round trips): `BEGIN` with a query that locks the batch's rows in
//!   `game_id` order, the fold from what the rows hold, then the write with `COMMIT`. Used
//!   for games not seen yet, after a `GM001`, and for batches naming unknown games.
//!
//! A fold's outcome depends only on the status each game starts from: every observation
//! overwrites the summary. That is why a status is all the cache keeps.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use domain_runtime::{
    EngineHealth, EntryPosition, HealthState, Ownership, RuntimeRecord, RuntimeStatus, Transition,
    apply_plan,
};
use pg_kit::PgError;
use ports::{Error, HealthObservation, ObservationResult};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::error::{corrupt, store_error};

/// Locks the batch's rows (ids sorted), one index lookup per id in the array's order, so
/// two concurrent batches that share games lock them in the same order and cannot
/// deadlock.
///
/// A lateral lookup rather than a join: for a large batch the planner would otherwise
/// pick a hash or merge join that reads the whole table, making a batch's cost grow with
/// the number of games (measured in decision 0014), and with `game_id = ANY($1)` in a
/// generic plan every row is compared with every id.
const LOCK_BATCH: &str = "SELECT r.game_id, r.status FROM unnest($1::text[]) AS u(game_id) \
     CROSS JOIN LATERAL (SELECT game_id, status FROM runtime_records \
     WHERE game_id = u.game_id FOR NO KEY UPDATE) AS r";

/// The write (migrations V2 to V5): in autocommit on the guarded path (atomic on its
/// own), inside the transaction on the locked path (where the statuses it checks are the
/// locked ones). It also checks each shard's epoch, moves its checkpoint and published
/// mark, and keeps the batch's snapshots with it.
const WRITE: &str = "SELECT game_id, current_turn, created_at, updated_at \
     FROM runtime_records_write_fenced($1::text[], $2::text[], $3::text[], $4::text[], \
     $5::integer[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], \
     $11::text, $12::bigint, $13::bigint, $14::bigint, $15::bytea, $16::integer[], $17::bigint, \
     $18::bigint)";

/// The SQLSTATE `runtime_records_write_guarded` raises when a status moved.
const GUARD_MISSED: &str = "GM001";

/// The SQLSTATE `runtime_records_write_fenced` raises when a shard's epoch moved.
const FENCED: &str = "GM002";

/// Per shard of a batch (ascending): the epoch it is written under and its last entry,
/// as the write's parallel arrays.
#[derive(Debug, Default)]
struct Fence {
    shards: Vec<i32>,
    epochs: Vec<i64>,
    through_ms: Vec<i64>,
    through_seq: Vec<i64>,
    /// The writer's published mark on each of these shards (`None`: none known).
    marks_ms: Vec<Option<i64>>,
    marks_seq: Vec<Option<i64>>,
    /// The writing process (its store's token), the number of the publish that will
    /// carry this write's snapshots, and the publishes gone out whose rows are still to
    /// delete (from the first not deleted yet through the last that went out).
    writer: String,
    publish: i64,
    sent_from: i64,
    sent: Option<i64>,
}

/// A store's identity as a writer of unpublished snapshots: its token, and the first of
/// its publish numbers whose rows are not deleted yet (shared by the store's clones).
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    token: Arc<str>,
    undeleted: Arc<std::sync::atomic::AtomicU64>,
}

impl Writer {
    /// A writer named `token`, with nothing deleted yet.
    pub(crate) fn new(token: Arc<str>) -> Self {
        Self {
            token,
            undeleted: Arc::default(),
        }
    }

    /// The token.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// A write naming `fence`'s publishes as gone out committed: their rows are deleted.
    fn deleted(&self, fence: &Fence) {
        if let Some(sent) = fence.sent.and_then(|s| u64::try_from(s).ok()) {
            self.undeleted
                .fetch_max(sent + 1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Fence {
    /// The fence of `observations` under `owner`.
    ///
    /// # Errors
    /// [`Error::Fenced`] for a shard `owner` does not hold; [`Error::Invalid`] for a
    /// number beyond PostgreSQL's `bigint`.
    fn of(
        observations: &[HealthObservation],
        owner: &Ownership,
        writer: &Writer,
    ) -> Result<Self, Error> {
        let mut last: BTreeMap<u32, EntryPosition> = BTreeMap::new();
        for o in observations {
            let through = last.entry(o.shard).or_insert(o.entry);
            *through = (*through).max(o.entry);
        }
        let big = bigint;
        let undeleted = writer.undeleted.load(std::sync::atomic::Ordering::Relaxed);
        let mut fence = Self {
            writer: writer.token.to_string(),
            publish: big(owner.next_publish())?,
            sent_from: big(undeleted)?,
            sent: owner
                .last_publish_sent()
                .filter(|&sent| sent >= undeleted)
                .map(big)
                .transpose()?,
            ..Self::default()
        };
        for (shard, through) in last {
            let Some(claim) = owner.claim(shard) else {
                return Err(Error::Fenced {
                    shard,
                    detail: "this instance never claimed it".to_owned(),
                });
            };
            fence.shards.push(shard_number(shard)?);
            fence.epochs.push(big(claim.epoch)?);
            fence.through_ms.push(big(through.ms)?);
            fence.through_seq.push(big(through.seq)?);
            let (mark_ms, mark_seq) = bigint_pair(owner.mark(shard))?;
            fence.marks_ms.push(mark_ms);
            fence.marks_seq.push(mark_seq);
        }
        Ok(fence)
    }
}

/// A number as PostgreSQL's `bigint`.
pub(crate) fn bigint(n: u64) -> Result<i64, Error> {
    i64::try_from(n).map_err(|_| Error::Invalid(format!("{n} does not fit a bigint")))
}

/// An optional position as two nullable `bigint`s.
pub(crate) fn bigint_pair(at: Option<EntryPosition>) -> Result<(Option<i64>, Option<i64>), Error> {
    Ok(match at {
        Some(at) => (Some(bigint(at.ms)?), Some(bigint(at.seq)?)),
        None => (None, None),
    })
}

/// A shard number as PostgreSQL's `integer`.
pub(crate) fn shard_number(shard: u32) -> Result<i32, Error> {
    i32::try_from(shard).map_err(|_| Error::Invalid(format!("shard {shard} is out of range")))
}

/// A write the database fenced off ([`FENCED`]): the shard it names, with its message.
fn fenced(error: &PgError) -> Error {
    let shard = error
        .detail()
        .and_then(|d| d.parse().ok())
        .unwrap_or(u32::MAX);
    Error::Fenced {
        shard,
        detail: error.to_string(),
    }
}

/// How many games' statuses the cache holds at most (about 20 bytes each). Games beyond
/// it always take the locked path; nothing else changes.
pub const STATUS_CACHE_CAPACITY: usize = 200_000;

/// The status each game had after this process's last write to it.
///
/// Only a hint: another flow may have moved a status since, which the guarded write
/// detects. Entries are dropped whenever a write's outcome is unknown.
///
/// Keyed by a 64-bit hash of the game id rather than the id itself, which keeps the
/// memory per game small. A collision is harmless for the same reason a stale entry is:
/// the status it yields is only the one the guarded write expects, and a wrong
/// expectation makes the write refuse and the batch take the locked path.
#[derive(Debug, Clone, Default)]
pub(crate) struct StatusCache {
    statuses: Arc<Mutex<HashMap<u64, RuntimeStatus>>>,
}

/// The cache's key for `game_id` (a fixed-key hash: the same in every process).
fn key(game_id: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    game_id.hash(&mut hasher);
    hasher.finish()
}

impl StatusCache {
    /// The statuses of all of `ids`, or `None` when one is missing.
    fn all(&self, ids: &[&str]) -> Option<Vec<RuntimeStatus>> {
        let map = self.statuses.lock().unwrap_or_else(PoisonError::into_inner);
        ids.iter().map(|id| map.get(&key(id)).copied()).collect()
    }

    fn remember(&self, written: &[(&str, RuntimeStatus)]) {
        let mut map = self.statuses.lock().unwrap_or_else(PoisonError::into_inner);
        for &(id, status) in written {
            let k = key(id);
            if let Some(cached) = map.get_mut(&k) {
                *cached = status;
            } else if map.len() < STATUS_CACHE_CAPACITY {
                map.insert(k, status);
            }
        }
    }

    fn forget(&self, ids: &[&str]) {
        let mut map = self.statuses.lock().unwrap_or_else(PoisonError::into_inner);
        for id in ids {
            map.remove(&key(id));
        }
    }
}

/// Which path a batch took, counted for operators and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchPaths {
    /// Batches written by the guarded statement alone.
    pub guarded: u64,
    /// Batches written through the locked transaction.
    pub locked: u64,
    /// Guarded writes refused because a status had moved (each then took the locked path).
    pub guard_missed: u64,
}

/// The counters behind [`BatchPaths`], also exported as metrics.
#[derive(Debug, Clone, Default)]
pub(crate) struct PathCounters {
    guarded: Counter,
    locked: Counter,
    guard_missed: Counter,
}

impl PathCounters {
    pub(crate) fn get(&self) -> BatchPaths {
        BatchPaths {
            guarded: self.guarded.get(),
            locked: self.locked.get(),
            guard_missed: self.guard_missed.get(),
        }
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "health_batches_guarded",
            "Health batches written by the one-statement guarded write",
            self.guarded.clone(),
        );
        registry.register(
            "health_batches_locked",
            "Health batches written through the locked transaction (games not seen yet, or a guard that missed)",
            self.locked.clone(),
        );
        registry.register(
            "health_batch_guard_misses",
            "Guarded writes refused because a status had moved since it was read",
            self.guard_missed.clone(),
        );
    }
}

/// What PostgreSQL returned for one written game.
struct Written {
    current_turn: u32,
    created_at: SystemTime,
    updated_at: SystemTime,
}

/// Each observation's step (`None`: unknown game), and every known game's starting status
/// and final state, in the order of `start`.
struct Fold {
    steps: Vec<Option<Step>>,
    finals: Vec<Final>,
}

/// What one observation did in a fold.
#[derive(Clone, Copy)]
struct Step {
    state: HealthState,
    transitioned: Option<Transition>,
    /// Whether it publishes a snapshot (its summary was news, or its transition taken).
    publishes: bool,
}

/// The snapshots a write keeps until they are known sent: one chunk ([`crate::kept`]) of
/// the shards named, through the last entry given; no chunk when the write publishes
/// nothing.
#[derive(Default)]
struct Kept {
    chunk: Option<Vec<u8>>,
    shards: Vec<i32>,
    last_ms: Option<i64>,
    last_seq: Option<i64>,
}

impl Kept {
    /// The chunk of the steps of `observations` that publish.
    fn of(observations: &[HealthObservation], steps: &[Option<Step>]) -> Result<Self, Error> {
        let mut chunk = Vec::new();
        let mut shards = Vec::new();
        let mut last: Option<EntryPosition> = None;
        for (o, step) in observations.iter().zip(steps) {
            let Some(step) = step.filter(|s| s.publishes) else {
                continue;
            };
            crate::kept::push(
                &mut chunk,
                o.shard,
                o.entry,
                o.game_id.as_str(),
                step.state.status,
                step.state.engine_health,
            )?;
            let shard = shard_number(o.shard)?;
            if !shards.contains(&shard) {
                shards.push(shard);
            }
            last = last.max(Some(o.entry));
        }
        let (last_ms, last_seq) = bigint_pair(last)?;
        Ok(Self {
            chunk: (!chunk.is_empty()).then_some(chunk),
            shards,
            last_ms,
            last_seq,
        })
    }
}

/// A game's write: the status the fold started from and the state it ended with.
struct Final {
    game_id: String,
    expected: RuntimeStatus,
    state: HealthState,
}

/// Folds `observations` in stream order from `start` (the status of each known game): each
/// sees what the previous one of its game left, and publishes when its `news` says so or
/// its transition is taken. Pure; nothing is written.
fn fold(
    observations: &[HealthObservation],
    news: &[bool],
    start: &[(&str, RuntimeStatus)],
) -> Fold {
    let mut states: HashMap<&str, HealthState> = start
        .iter()
        .map(|&(id, status)| {
            // The summary a fold starts from never shows: every plan writes its own.
            let state = HealthState {
                status,
                engine_health: None,
            };
            (id, state)
        })
        .collect();
    let steps = observations
        .iter()
        .zip(news.iter().copied().chain(std::iter::repeat(false)))
        .map(|(observation, news)| {
            states.get_mut(observation.game_id.as_str()).map(|state| {
                let outcome = apply_plan(*state, observation.plan);
                *state = outcome.state;
                Step {
                    state: outcome.state,
                    transitioned: outcome.transitioned,
                    publishes: news || outcome.transitioned.is_some(),
                }
            })
        })
        .collect();
    let finals = start
        .iter()
        .filter_map(|&(id, expected)| {
            states.get(id).map(|state| Final {
                game_id: id.to_owned(),
                expected,
                state: *state,
            })
        })
        .collect();
    Fold { steps, finals }
}

impl Fold {
    /// Writes every game's final state through [`WRITE`] on `client` and returns what
    /// PostgreSQL answered per game; `Ok(None)` when a status was not the expected one
    /// (nothing written). `commit` sends a `COMMIT` in the same round trip (the locked
    /// path's transaction; if the write fails, PostgreSQL turns it into a rollback).
    async fn write(
        &self,
        client: &pg_kit::Object,
        fence: &Fence,
        kept: &Kept,
        commit: bool,
    ) -> Result<Option<HashMap<String, Written>>, Error> {
        let statement = client.prepare_cached(WRITE).await.map_err(store_error)?;
        let ids: Vec<&str> = self.finals.iter().map(|f| f.game_id.as_str()).collect();
        let expected: Vec<&str> = self.finals.iter().map(|f| f.expected.as_str()).collect();
        let statuses: Vec<&str> = self
            .finals
            .iter()
            .map(|f| f.state.status.as_str())
            .collect();
        let healths: Vec<&str> = self
            .finals
            .iter()
            .map(|f| EngineHealth::wire(f.state.engine_health))
            .collect();
        let params: [&(dyn ToSql + Sync); 18] = [
            &ids,
            &expected,
            &statuses,
            &healths,
            &fence.shards,
            &fence.epochs,
            &fence.through_ms,
            &fence.through_seq,
            &fence.marks_ms,
            &fence.marks_seq,
            &fence.writer,
            &fence.publish,
            &fence.sent_from,
            &fence.sent,
            &kept.chunk,
            &kept.shards,
            &kept.last_ms,
            &kept.last_seq,
        ];
        let (rows, committed) = tokio::join!(client.query(&statement, &params), async {
            if commit {
                client.batch_execute("COMMIT").await
            } else {
                Ok(())
            }
        });
        let rows = match rows {
            Ok(rows) => rows,
            Err(error) => {
                let error = PgError::from(error);
                return match error.code().map(SqlState::code) {
                    Some(GUARD_MISSED) => Ok(None),
                    Some(FENCED) => Err(fenced(&error)),
                    _ => Err(store_error(error)),
                };
            }
        };
        committed.map_err(store_error)?;
        decode_written(&rows).map(Some)
    }

    /// What the store now knows about each written game's status.
    fn remember(&self, cache: &StatusCache) {
        let now: Vec<(&str, RuntimeStatus)> = self
            .finals
            .iter()
            .map(|f| (f.game_id.as_str(), f.state.status))
            .collect();
        cache.remember(&now);
    }
}

fn decode_written(rows: &[tokio_postgres::Row]) -> Result<HashMap<String, Written>, Error> {
    let mut written = HashMap::with_capacity(rows.len());
    for row in rows {
        let id: String = row.try_get(0).map_err(store_error)?;
        let turn: i32 = row.try_get(1).map_err(store_error)?;
        let current_turn = u32::try_from(turn)
            .map_err(|_| corrupt(&id, &format!("current_turn {turn} is negative")))?;
        let created_at = row.try_get(2).map_err(store_error)?;
        let updated_at = row.try_get(3).map_err(store_error)?;
        written.insert(
            id,
            Written {
                current_turn,
                created_at,
                updated_at,
            },
        );
    }
    Ok(written)
}

/// One result per observation: the record as it stood right after it.
fn results(
    observations: &[HealthObservation],
    fold: Fold,
    written: &HashMap<String, Written>,
) -> Result<Vec<ObservationResult>, Error> {
    observations
        .iter()
        .zip(fold.steps)
        .map(|(observation, step)| {
            let Some(Step {
                state,
                transitioned,
                publishes,
            }) = step
            else {
                return Ok(ObservationResult::UnknownGame);
            };
            let id = observation.game_id.as_str();
            let Some(row) = written.get(id) else {
                return Err(Error::Backend(
                    format!("the batch write did not return game '{id}'").into(),
                ));
            };
            Ok(ObservationResult::Applied {
                record: RuntimeRecord {
                    game_id: observation.game_id.clone(),
                    status: state.status,
                    engine_health: state.engine_health,
                    current_turn: row.current_turn,
                    created_at: row.created_at,
                    updated_at: row.updated_at,
                },
                transitioned,
                publishes,
            })
        })
        .collect()
}

/// What a guarded attempt came to.
enum Guarded {
    Applied(Vec<ObservationResult>),
    /// A status had moved (or a record was gone): nothing was written.
    Missed,
}

/// Applies `observations` (non-empty) on `pool` under `owner`'s epochs: guarded when every
/// game's status is cached, locked otherwise or when the guard misses.
pub(crate) async fn apply(
    pool: &pg_kit::Pool,
    cache: &StatusCache,
    counters: &PathCounters,
    observations: &[HealthObservation],
    news: &[bool],
    owner: &Ownership,
    writer: &Writer,
) -> Result<Vec<ObservationResult>, Error> {
    let fence = Fence::of(observations, owner, writer)?;
    let mut ids: Vec<&str> = observations.iter().map(|o| o.game_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();

    if let Some(statuses) = cache.all(&ids) {
        match guarded(pool, cache, &ids, &statuses, observations, news, &fence).await {
            Ok(Guarded::Applied(results)) => {
                counters.guarded.inc();
                writer.deleted(&fence);
                return Ok(results);
            }
            Ok(Guarded::Missed) => {
                counters.guard_missed.inc();
                tracing::debug!("a status moved since it was cached; taking the locked path");
            }
            Err(error) => {
                cache.forget(&ids);
                return Err(error);
            }
        }
    }
    let applied = locked(pool, cache, &ids, observations, news, &fence).await;
    if applied.is_err() {
        cache.forget(&ids);
    } else {
        counters.locked.inc();
        writer.deleted(&fence);
    }
    applied
}

/// The one-statement path.
async fn guarded(
    pool: &pg_kit::Pool,
    cache: &StatusCache,
    ids: &[&str],
    statuses: &[RuntimeStatus],
    observations: &[HealthObservation],
    news: &[bool],
    fence: &Fence,
) -> Result<Guarded, Error> {
    let start: Vec<(&str, RuntimeStatus)> =
        ids.iter().copied().zip(statuses.iter().copied()).collect();
    let fold = fold(observations, news, &start);
    let kept = Kept::of(observations, &fold.steps)?;
    let client = pool.get().await.map_err(store_error)?;
    let Some(written) = fold.write(&client, fence, &kept, false).await? else {
        return Ok(Guarded::Missed);
    };
    fold.remember(cache);
    results(observations, fold, &written).map(Guarded::Applied)
}

/// The two-round-trip path: `BEGIN` travels with the lock query, and the write with the
/// `COMMIT`.
async fn locked(
    pool: &pg_kit::Pool,
    cache: &StatusCache,
    ids: &[&str],
    observations: &[HealthObservation],
    news: &[bool],
    fence: &Fence,
) -> Result<Vec<ObservationResult>, Error> {
    let client = pool.get().await.map_err(store_error)?;
    match lock_fold_write(&client, ids, observations, news, fence).await {
        Ok((fold, written)) => {
            fold.remember(cache);
            results(observations, fold, &written)
        }
        Err(error) => {
            // The connection may still be inside the (failed) transaction. After a refusal or
            // a fence the server is fine: a ROLLBACK makes the connection idle again and it
            // goes back to the pool (a reconnect per refused entry would dominate isolating
            // them). After anything else, or if the ROLLBACK fails, it is never handed back.
            let server_fine = error.is_refused() || error.is_fenced();
            if !(server_fine && client.batch_execute("ROLLBACK").await.is_ok()) {
                drop(pg_kit::Object::take(client));
            }
            Err(error)
        }
    }
}

async fn lock_fold_write(
    client: &pg_kit::Object,
    ids: &[&str],
    observations: &[HealthObservation],
    news: &[bool],
    fence: &Fence,
) -> Result<(Fold, HashMap<String, Written>), Error> {
    // 1. Lock every known game of the batch, in game_id order.
    let lock = client
        .prepare_cached(LOCK_BATCH)
        .await
        .map_err(store_error)?;
    let lock_params: [&(dyn ToSql + Sync); 1] = [&ids];
    let (begin, rows) = tokio::join!(
        client.batch_execute("BEGIN"),
        client.query(&lock, &lock_params)
    );
    begin.map_err(store_error)?;
    let rows = rows.map_err(store_error)?;
    let mut start: Vec<(&str, RuntimeStatus)> = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: &str = row.try_get(0).map_err(store_error)?;
        let status: &str = row.try_get(1).map_err(store_error)?;
        let status = status
            .parse()
            .map_err(|e| corrupt(id, &format!("status: {e}")))?;
        start.push((id, status));
    }

    // 2. Fold in stream order from what the rows hold.
    let fold = fold(observations, news, &start);
    let kept = Kept::of(observations, &fold.steps)?;

    // 3. One write for every known game's final state and the shards' checkpoints (also
    //    when no game is known: the checkpoints still move), committed with it.
    match fold.write(client, fence, &kept, true).await? {
        Some(written) => Ok((fold, written)),
        None => Err(Error::Backend(
            "a status the batch had locked was not the one read under the lock".into(),
        )),
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use domain_runtime::{GameId, HealthEventType};

    fn observation(id: &str, event: HealthEventType) -> HealthObservation {
        HealthObservation {
            game_id: GameId::new(id).expect("valid id"),
            plan: domain_runtime::plan(event),
            entry: domain_runtime::EntryPosition { ms: 1, seq: 0 },
            shard: 0,
        }
    }

    #[test]
    fn the_fold_depends_only_on_the_starting_status_and_keeps_each_games_order() {
        let observations = [
            observation("a", HealthEventType::ContainerExited),
            observation("b", HealthEventType::ContainerExited),
            observation("ghost", HealthEventType::ContainerOom),
            observation("a", HealthEventType::ProbeRecovered),
        ];
        let start = [
            ("a", RuntimeStatus::Running),
            ("b", RuntimeStatus::GenerationInProgress),
        ];
        // Only b's summary is news; a publishes through its transitions.
        let news = [false, true, true, false];
        let fold = fold(&observations, &news, &start);
        let statuses: Vec<Option<RuntimeStatus>> = fold
            .steps
            .iter()
            .map(|s| s.map(|s| s.state.status))
            .collect();
        assert_eq!(
            statuses,
            [
                Some(RuntimeStatus::EngineUnreachable),
                Some(RuntimeStatus::GenerationInProgress),
                None,
                Some(RuntimeStatus::Running),
            ]
        );
        assert!(fold.steps[0].is_some_and(|s| s.transitioned.is_some()));
        assert!(fold.steps[1].is_some_and(|s| s.transitioned.is_none()));
        let publishes: Vec<Option<bool>> =
            fold.steps.iter().map(|s| s.map(|s| s.publishes)).collect();
        assert_eq!(publishes, [Some(true), Some(true), None, Some(true)]);
        let kept = Kept::of(&observations, &fold.steps).expect("small numbers");
        let chunk = kept.chunk.as_deref().expect("some publish");
        let games: Vec<String> = crate::kept::decode(chunk)
            .expect("decodes")
            .into_iter()
            .map(|k| k.game_id.to_string())
            .collect();
        assert_eq!(games, ["a", "b", "a"], "the unknown game keeps nothing");
        assert_eq!(kept.shards, [0]);
        assert_eq!((kept.last_ms, kept.last_seq), (Some(1), Some(0)));
        let finals: Vec<(&str, RuntimeStatus, RuntimeStatus, Option<EngineHealth>)> = fold
            .finals
            .iter()
            .map(|f| {
                (
                    f.game_id.as_str(),
                    f.expected,
                    f.state.status,
                    f.state.engine_health,
                )
            })
            .collect();
        assert_eq!(
            finals,
            [
                (
                    "a",
                    RuntimeStatus::Running,
                    RuntimeStatus::Running,
                    Some(domain_runtime::plan(HealthEventType::ProbeRecovered).summary)
                ),
                (
                    "b",
                    RuntimeStatus::GenerationInProgress,
                    RuntimeStatus::GenerationInProgress,
                    Some(domain_runtime::plan(HealthEventType::ContainerExited).summary)
                ),
            ]
        );
    }

    #[test]
    fn the_cache_answers_only_when_it_knows_every_game_and_stops_growing_at_capacity() {
        let cache = StatusCache::default();
        cache.remember(&[("a", RuntimeStatus::Running)]);
        assert_eq!(cache.all(&["a"]), Some(vec![RuntimeStatus::Running]));
        assert_eq!(cache.all(&["a", "b"]), None);
        cache.remember(&[("a", RuntimeStatus::Stopped)]);
        assert_eq!(cache.all(&["a"]), Some(vec![RuntimeStatus::Stopped]));
        cache.forget(&["a"]);
        assert_eq!(cache.all(&["a"]), None);

        let ids: Vec<String> = (0..=STATUS_CACHE_CAPACITY)
            .map(|i| format!("g{i}"))
            .collect();
        let all: Vec<(&str, RuntimeStatus)> = ids
            .iter()
            .map(|id| (id.as_str(), RuntimeStatus::Running))
            .collect();
        cache.remember(&all);
        let last = ids.last().map(String::as_str).unwrap_or_default();
        assert_eq!(cache.all(&["g0"]), Some(vec![RuntimeStatus::Running]));
        assert_eq!(
            cache.all(&[last]),
            None,
            "the entry past capacity is not kept"
        );
        cache.remember(&[("g0", RuntimeStatus::Finished)]);
        assert_eq!(cache.all(&["g0"]), Some(vec![RuntimeStatus::Finished]));
    }
}
