//! `runtimes` and `operation_log` on PostgreSQL: the registry of the runtimes the Runtime
//! Manager started, and the log of every start and stop with the result answered.
//!
//! Each write is one statement (a data-modifying `WITH`), so it is atomic without an
//! explicit transaction and costs one round trip.

use async_trait::async_trait;
use contracts::{GameId, JobOutcome, JobResult};
use pg_kit::{PgError, Pool};
use rtm_domain::{Origin, RegistryStatus, Runtime};
use rtm_ports::{Error, RuntimeRegistry};
use tokio_postgres::Row;

const GET: &str = "SELECT status, container_id, engine_endpoint FROM runtimes WHERE game_id = $1";

const RUNNING: &str = "SELECT game_id, status, container_id, engine_endpoint FROM runtimes \
     WHERE status = 'running' ORDER BY game_id";

const RECORDED_STOP: &str = "SELECT game_id, outcome, error_code, error_message, \
     container_id, engine_endpoint FROM operation_log \
     WHERE operation = 'stop' AND source = $1 AND source_ref = $2";

/// The log row, and for a plain success ($9) the compare-and-swap `running → stopped`,
/// only when this call logged the stop (a second call for the same source changes
/// nothing).
const RECORD_STOP: &str = "WITH logged AS ( \
       INSERT INTO operation_log (game_id, operation, source, source_ref, outcome, \
         error_code, error_message, container_id, engine_endpoint) \
       VALUES ($1, 'stop', $2, $3, $4, $5, $6, $7, $8) \
       ON CONFLICT (operation, source, source_ref) DO NOTHING \
       RETURNING 1) \
     UPDATE runtimes SET status = 'stopped', stopped_at = now(), updated_at = now() \
     WHERE game_id = $1 AND status = 'running' AND $9 AND EXISTS (SELECT 1 FROM logged)";

/// A new runtime, or a stopped or removed one started again; then its log row. A running
/// runtime is left alone (no row comes back, nothing is logged).
const REGISTER: &str = "WITH started AS ( \
       INSERT INTO runtimes (game_id, status, container_id, engine_endpoint) \
       VALUES ($1, 'running', $2, $3) \
       ON CONFLICT (game_id) DO UPDATE SET status = 'running', \
         container_id = EXCLUDED.container_id, engine_endpoint = EXCLUDED.engine_endpoint, \
         started_at = now(), stopped_at = NULL, updated_at = now() \
       WHERE runtimes.status <> 'running' \
       RETURNING game_id) \
     INSERT INTO operation_log (game_id, operation, source, source_ref, outcome, \
       container_id, engine_endpoint) \
     SELECT game_id, 'start', $4, $5, 'success', $2, $3 FROM started";

/// The registry behind [`RuntimeRegistry`], on a `pg_kit` pool. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgRuntimeRegistry {
    pool: Pool,
}

impl PgRuntimeRegistry {
    /// A registry on `pool`, whose database has the Runtime Manager's schema
    /// ([`crate::migrate`]).
    #[must_use]
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        let client = self.pool.get().await.map_err(store_error)?;
        let statement = client.prepare_cached(sql).await.map_err(store_error)?;
        client.query(&statement, params).await.map_err(store_error)
    }

    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, Error> {
        let client = self.pool.get().await.map_err(store_error)?;
        let statement = client.prepare_cached(sql).await.map_err(store_error)?;
        client
            .execute(&statement, params)
            .await
            .map_err(store_error)
    }
}

/// A PostgreSQL failure as [`Error`], by the workspace's one mapping
/// ([`PgError::into_port`]).
pub(crate) fn store_error(e: impl Into<PgError>) -> Error {
    e.into().into_port()
}

/// A stored row that breaks the registry's rules: refused, like a write's values.
fn corrupt(what: String) -> Error {
    Error::Refused(what.into())
}

/// Column `index` of `row` as text (by position: the queries above list their columns).
fn text(row: &Row, index: usize) -> Result<String, Error> {
    row.try_get(index).map_err(store_error)
}

/// The runtime in `row`, whose status, container id and endpoint start at column `first`.
fn runtime_of(game_id: &GameId, row: &Row, first: usize) -> Result<Runtime, Error> {
    let status = text(row, first)?;
    Ok(Runtime {
        game_id: game_id.clone(),
        status: status
            .parse::<RegistryStatus>()
            .map_err(|e| corrupt(format!("runtime of game '{game_id}': {e}")))?,
        container_id: text(row, first + 1)?,
        engine_endpoint: text(row, first + 2)?,
    })
}

fn result_of(row: &Row) -> Result<JobResult, Error> {
    let game_id = text(row, 0)?;
    let outcome = text(row, 1)?;
    Ok(JobResult {
        game_id: GameId::new(game_id.as_str())
            .map_err(|e| corrupt(format!("operation log row: {e}")))?,
        outcome: outcome
            .parse::<JobOutcome>()
            .map_err(|e| corrupt(format!("operation log row of game '{game_id}': {e}")))?,
        error_code: text(row, 2)?,
        error_message: text(row, 3)?,
        container_id: text(row, 4)?,
        engine_endpoint: text(row, 5)?,
    })
}

#[async_trait]
impl RuntimeRegistry for PgRuntimeRegistry {
    async fn get(&self, game_id: &GameId) -> Result<Option<Runtime>, Error> {
        let rows = self.query(GET, &[&game_id.as_str()]).await?;
        rows.first()
            .map(|row| runtime_of(game_id, row, 0))
            .transpose()
    }

    async fn running(&self) -> Result<Vec<Runtime>, Error> {
        let rows = self.query(RUNNING, &[]).await?;
        rows.iter()
            .map(|row| {
                let game = text(row, 0)?;
                let game_id = GameId::new(game.as_str())
                    .map_err(|e| corrupt(format!("runtimes row: {e}")))?;
                runtime_of(&game_id, row, 1)
            })
            .collect()
    }

    async fn recorded_stop(&self, origin: &Origin) -> Result<Option<JobResult>, Error> {
        let source = origin.source.as_str();
        let rows = self
            .query(RECORDED_STOP, &[&source, &origin.reference])
            .await?;
        rows.first().map(result_of).transpose()
    }

    async fn record_stop(&self, origin: &Origin, result: &JobResult) -> Result<(), Error> {
        let stopped = result.outcome == JobOutcome::Success && result.error_code.is_empty();
        self.execute(
            RECORD_STOP,
            &[
                &result.game_id.as_str(),
                &origin.source.as_str(),
                &origin.reference,
                &result.outcome.as_str(),
                &result.error_code,
                &result.error_message,
                &result.container_id,
                &result.engine_endpoint,
                &stopped,
            ],
        )
        .await?;
        Ok(())
    }

    async fn register(&self, runtime: &Runtime, origin: &Origin) -> Result<(), Error> {
        let logged = self
            .execute(
                REGISTER,
                &[
                    &runtime.game_id.as_str(),
                    &runtime.container_id,
                    &runtime.engine_endpoint,
                    &origin.source.as_str(),
                    &origin.reference,
                ],
            )
            .await?;
        if logged == 0 {
            return Err(Error::Refused(
                format!("game '{}' has a running runtime already", runtime.game_id).into(),
            ));
        }
        Ok(())
    }
}
