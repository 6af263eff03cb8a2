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

/// One row per asked game, in the order asked; the runtime's columns NULL for a game with
/// none.
const GET_MANY: &str = "SELECT r.status, r.container_id, r.engine_endpoint \
     FROM unnest($1::text[]) WITH ORDINALITY AS asked(game_id, n) \
     LEFT JOIN runtimes r USING (game_id) ORDER BY asked.n";

const RUNNING: &str = "SELECT game_id, status, container_id, engine_endpoint FROM runtimes \
     WHERE status = 'running' ORDER BY game_id";

/// One row per asked origin, in the order asked; the log's columns NULL for a stop not
/// logged yet.
const RECORDED_STOPS: &str = "SELECT l.game_id, l.outcome, l.error_code, l.error_message, \
     l.container_id, l.engine_endpoint \
     FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS asked(source, source_ref, n) \
     LEFT JOIN operation_log l ON l.operation = 'stop' AND l.source = asked.source \
       AND l.source_ref = asked.source_ref \
     ORDER BY asked.n";

/// The log rows, and for each plain success this call logged, the compare-and-swap
/// `running → stopped` (a stop logged before changes nothing).
const RECORD_STOPS: &str = "WITH logged AS ( \
       INSERT INTO operation_log (game_id, operation, source, source_ref, outcome, \
         error_code, error_message, container_id, engine_endpoint) \
       SELECT game_id, 'stop', source, source_ref, outcome, error_code, error_message, \
         container_id, engine_endpoint \
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::text[], $8::text[]) AS s(game_id, source, source_ref, outcome, error_code, \
         error_message, container_id, engine_endpoint) \
       ON CONFLICT (operation, source, source_ref) DO NOTHING \
       RETURNING game_id, outcome, error_code) \
     UPDATE runtimes SET status = 'stopped', stopped_at = now(), updated_at = now() \
     WHERE status = 'running' AND game_id IN ( \
       SELECT game_id FROM logged WHERE outcome = 'success' AND error_code = '')";

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

    /// Like [`Self::query`], but planned for these parameters every time, for the
    /// statements that take a batch as arrays. A cached statement gets a generic plan
    /// after five runs, and one made while `operation_log` was small (a new deployment,
    /// or the benchmark's fresh table) scans it for every element of the array once it
    /// has grown: the benchmark measured 3,600 jobs/s so, against 20,000 with fresh plans.
    /// Planning a batch costs a few milliseconds and one round trip.
    async fn query_planned(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        let client = self.pool.get().await.map_err(store_error)?;
        client.query(sql, params).await.map_err(store_error)
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

    async fn get_many(&self, game_ids: &[GameId]) -> Result<Vec<Option<Runtime>>, Error> {
        let ids: Vec<&str> = game_ids.iter().map(GameId::as_str).collect();
        let rows = self.query_planned(GET_MANY, &[&ids]).await?;
        if rows.len() != game_ids.len() {
            return Err(Error::Backend(
                format!("{} rows for {} games", rows.len(), game_ids.len()).into(),
            ));
        }
        game_ids
            .iter()
            .zip(&rows)
            .map(|(game_id, row)| {
                let status: Option<String> = row.try_get(0).map_err(store_error)?;
                status.map(|_| runtime_of(game_id, row, 0)).transpose()
            })
            .collect()
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

    async fn recorded_stops(&self, origins: &[Origin]) -> Result<Vec<Option<JobResult>>, Error> {
        let sources: Vec<&str> = origins.iter().map(|o| o.source.as_str()).collect();
        let refs: Vec<&str> = origins.iter().map(|o| o.reference.as_str()).collect();
        let rows = self
            .query_planned(RECORDED_STOPS, &[&sources, &refs])
            .await?;
        if rows.len() != origins.len() {
            return Err(Error::Backend(
                format!("{} rows for {} stops", rows.len(), origins.len()).into(),
            ));
        }
        rows.iter()
            .map(|row| {
                let game: Option<String> = row.try_get(0).map_err(store_error)?;
                game.map(|_| result_of(row)).transpose()
            })
            .collect()
    }

    async fn record_stops(&self, stops: &[(Origin, JobResult)]) -> Result<(), Error> {
        let column =
            |f: fn(&(Origin, JobResult)) -> &str| stops.iter().map(f).collect::<Vec<&str>>();
        let columns = [
            column(|(_, r)| r.game_id.as_str()),
            column(|(o, _)| o.source.as_str()),
            column(|(o, _)| o.reference.as_str()),
            column(|(_, r)| r.outcome.as_str()),
            column(|(_, r)| r.error_code.as_str()),
            column(|(_, r)| r.error_message.as_str()),
            column(|(_, r)| r.container_id.as_str()),
            column(|(_, r)| r.engine_endpoint.as_str()),
        ];
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = columns
            .iter()
            .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        self.query_planned(RECORD_STOPS, &params).await?;
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
