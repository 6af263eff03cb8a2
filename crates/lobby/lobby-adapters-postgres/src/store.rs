//! The store value, row decoding and error mapping shared by every port implementation.

use contracts::SourceEntryId;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lobby_domain::{GameId, GameStatus, RuntimeSnapshot};
use lobby_ports::{Error, GameRecord};
use pg_kit::{PgError, Pool};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

/// One statement parameter.
pub(crate) type Param<'a> = &'a (dyn ToSql + Sync);

/// The columns of a game row, in the order [`decode_game`] reads them.
macro_rules! game_columns {
    () => {
        "game_id, status, current_turn, runtime_status, engine_health_summary, \
         snapshot_observed_at_ms, finished_at, created_at, updated_at, \
         snapshot_source_ms, snapshot_source_seq"
    };
}
pub(crate) use game_columns;

/// The Lobby's tables in PostgreSQL, on a pool from `pg_kit::connect`. Implements every
/// Lobby port. Cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct PgLobbyStore {
    pool: Pool,
}

impl PgLobbyStore {
    /// A store on `pool`, whose database has the Lobby's migrations applied.
    #[must_use]
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// The pool, e.g. for a readiness ping.
    #[must_use]
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(crate) async fn client(&self) -> Result<pg_kit::Object, Error> {
        self.pool.get().await.map_err(store_error)
    }
}

/// Decodes a row of [`game_columns!`].
pub(crate) fn decode_game(row: &Row) -> Result<GameRecord, Error> {
    let id: &str = row.try_get(0).map_err(store_error)?;
    let game_id = GameId::new(id).map_err(|e| corrupt(id, &format!("game_id: {e}")))?;
    let status: &str = row.try_get(1).map_err(store_error)?;
    let status: GameStatus = status
        .parse()
        .map_err(|e| corrupt(id, &format!("status: {e}")))?;
    let turn: i64 = row.try_get(2).map_err(store_error)?;
    let observed_at_ms: Option<i64> = row.try_get(5).map_err(store_error)?;
    let snapshot = match observed_at_ms {
        None => None,
        Some(observed_at_ms) => Some(RuntimeSnapshot {
            current_turn: u32::try_from(turn)
                .map_err(|_| corrupt(id, &format!("current_turn {turn} is out of range")))?,
            runtime_status: row.try_get(3).map_err(store_error)?,
            engine_health_summary: row.try_get(4).map_err(store_error)?,
            observed_at_ms,
            source: source_of(id, row)?,
        }),
    };
    let finished_at: Option<SystemTime> = row.try_get(6).map_err(store_error)?;
    Ok(GameRecord {
        game_id,
        status,
        snapshot,
        finished_at_ms: finished_at.map(ms_from_time),
        created_at: row.try_get(7).map_err(store_error)?,
        updated_at: row.try_get(8).map_err(store_error)?,
    })
}

/// The snapshot's source entry from columns 9 and 10 of [`game_columns!`].
fn source_of(id: &str, row: &Row) -> Result<Option<SourceEntryId>, Error> {
    let ms: Option<i64> = row.try_get(9).map_err(store_error)?;
    let seq: Option<i64> = row.try_get(10).map_err(store_error)?;
    let (Some(ms), Some(seq)) = (ms, seq) else {
        return Ok(None);
    };
    match (u64::try_from(ms), u64::try_from(seq)) {
        (Ok(ms), Ok(seq)) => Ok(Some(SourceEntryId { ms, seq })),
        _ => Err(corrupt(
            id,
            &format!("snapshot source {ms}-{seq} is negative"),
        )),
    }
}

/// Milliseconds since the epoch (validated positive by the ports) as a timestamp.
pub(crate) fn time_from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A timestamp as milliseconds since the epoch (0 for anything before it).
pub(crate) fn ms_from_time(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A stored row that breaks the domain's rules: refused, like the values of a write, so
/// only the entries that touch that row are skipped.
pub(crate) fn corrupt(key: &str, what: &str) -> Error {
    Error::Refused(format!("Lobby row '{key}' is unreadable: {what}").into())
}

/// A PostgreSQL failure as [`Error`], by the workspace's one mapping
/// ([`PgError::into_port`]).
pub(crate) fn store_error(e: impl Into<PgError>) -> Error {
    e.into().into_port()
}

/// Like [`store_error`], but a violated constraint `code` becomes `mapped`.
/// A write that names a game: a foreign-key violation means the Lobby has no such game.
pub(crate) fn unknown_game_or(e: tokio_postgres::Error, game_id: &GameId) -> Error {
    store_error_or(
        e,
        &SqlState::FOREIGN_KEY_VIOLATION,
        Error::NotFound(game_id.clone()),
    )
}

pub(crate) fn store_error_or(e: tokio_postgres::Error, code: &SqlState, mapped: Error) -> Error {
    if e.code() == Some(code) {
        mapped
    } else {
        store_error(e)
    }
}
