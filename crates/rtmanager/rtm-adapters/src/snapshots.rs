//! `health_snapshots` on PostgreSQL: one row per game, replaced on every observation.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use contracts::GameId;
use pg_kit::{PgError, Pool};
use rtm_ports::{Error, HealthSnapshot, HealthSnapshotStore};

/// Inserts the game's row or replaces every observed column of the one it has. Details go
/// in as text and are cast to `jsonb` by the server (which rejects text that is not JSON;
/// the envelope already checked it is an object).
const UPSERT: &str = "INSERT INTO health_snapshots \
     (game_id, container_id, status, source, details, observed_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, now()) \
     ON CONFLICT (game_id) DO UPDATE SET \
       container_id = EXCLUDED.container_id, \
       status = EXCLUDED.status, \
       source = EXCLUDED.source, \
       details = EXCLUDED.details, \
       observed_at = EXCLUDED.observed_at, \
       updated_at = now()";

const ALL: &str = "SELECT game_id, container_id, status, source, details::text, \
     (extract(epoch FROM observed_at) * 1000)::bigint FROM health_snapshots";

/// The `health_snapshots` store behind [`HealthSnapshotStore`], on a `pg_kit` pool (its
/// timeouts bound every call). Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgHealthSnapshotStore {
    pool: Pool,
}

impl PgHealthSnapshotStore {
    /// A store on `pool`, whose database has the Runtime Manager's schema
    /// ([`crate::migrate`]).
    #[must_use]
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

/// A PostgreSQL failure as [`Error`], by the workspace's one mapping
/// ([`PgError::into_port`]).
fn store_error(e: impl Into<PgError>) -> Error {
    e.into().into_port()
}

#[async_trait]
impl HealthSnapshotStore for PgHealthSnapshotStore {
    async fn upsert(&self, snapshot: &HealthSnapshot) -> Result<(), Error> {
        let client = self.pool.get().await.map_err(store_error)?;
        let statement = client.prepare_cached(UPSERT).await.map_err(store_error)?;
        // The envelope guarantees a positive time.
        let millis = u64::try_from(snapshot.observed_at_ms).unwrap_or_default();
        let observed_at: SystemTime = UNIX_EPOCH + Duration::from_millis(millis);
        client
            .execute(
                &statement,
                &[
                    &snapshot.game_id.as_str(),
                    &snapshot.container_id,
                    &snapshot.status.as_str(),
                    &snapshot.source.as_str(),
                    &snapshot.details,
                    &observed_at,
                ],
            )
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn all(&self) -> Result<Vec<HealthSnapshot>, Error> {
        let client = self.pool.get().await.map_err(store_error)?;
        let statement = client.prepare_cached(ALL).await.map_err(store_error)?;
        let rows = client.query(&statement, &[]).await.map_err(store_error)?;
        rows.iter().map(snapshot_of).collect()
    }
}

/// One row of [`ALL`] (columns by position).
fn snapshot_of(row: &tokio_postgres::Row) -> Result<HealthSnapshot, Error> {
    let text = |i: usize| row.try_get::<_, String>(i).map_err(store_error);
    let refused = |what: String| Error::Refused(what.into());
    let game = text(0)?;
    Ok(HealthSnapshot {
        game_id: GameId::new(game.as_str())
            .map_err(|e| refused(format!("health snapshot: {e}")))?,
        container_id: text(1)?,
        status: text(2)?
            .parse()
            .map_err(|e| refused(format!("health snapshot of game '{game}': {e}")))?,
        source: text(3)?
            .parse()
            .map_err(|e| refused(format!("health snapshot of game '{game}': {e}")))?,
        details: text(4)?,
        observed_at_ms: row.try_get::<_, i64>(5).map_err(store_error)?,
    })
}
