//! Shared PostgreSQL plumbing for every service's adapter (Game Master now, Lobby and
//! Runtime Manager later):
//!
//! 1. [`connect`] parses the URL, builds a deadpool pool with every timeout set
//!    ([`PgSettings`]: pool wait, connect, `statement_timeout`, TCP keepalives) and checks
//!    one connection, so a wrong URL fails at start-up naming host, port, database and
//!    user, never the password.
//! 2. [`migrate`] runs the service's embedded refinery migrations while holding a
//!    `pg_advisory_lock`, so concurrent instances cannot both apply them.
//! 3. [`PgError::kind`] (and [`error_kind`], [`sqlstate_kind`]) sorts every failure into
//!    an [`ErrorKind`]: transient (retry it), data (the values are refused; isolate the
//!    entries responsible) or environment (an operator must act); adapters build their
//!    own typed errors from it.
//! 4. [`ping`] is the readiness probe: `SELECT 1` through the pool under a short deadline.
//!
//! Queries go through deadpool's statement cache (`prepare_cached`): a plain `&str`
//! query would be parsed and planned by the server on every call.

mod error;
mod migrate;
mod pool;

use std::time::Duration;

pub use deadpool_postgres::{Object, Pool, PoolError, Transaction};
pub use error::{
    ErrorKind, PgError, SQLSTATE_KINDS, error_kind, is_pool_error_transient, is_transient,
    is_transient_sqlstate, sqlstate_kind,
};
pub use migrate::{MigrateError, migrate, migrate_on};
pub use pool::{ConnectError, PgSettings, ServerTarget, build_pool, connect, pg_config};
pub use tokio_postgres;

/// Default deadline for [`ping`] when the caller has no opinion (readiness probes should
/// answer quickly; a slower database counts as not ready).
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Readiness check: takes a connection from the pool and runs `SELECT 1`, all within
/// `timeout`.
///
/// # Errors
/// [`PgError::TimedOut`] when the deadline passes, or the pool's or the query's error.
pub async fn ping(pool: &Pool, timeout: Duration) -> Result<(), PgError> {
    let check = async {
        let client = pool.get().await?;
        let statement = client.prepare_cached("SELECT 1").await?;
        client.query_one(&statement, &[]).await?;
        Ok::<_, PgError>(())
    };
    match tokio::time::timeout(timeout, check).await {
        Ok(result) => result,
        Err(_) => Err(PgError::TimedOut {
            operation: "readiness ping",
            after: timeout,
        }),
    }
}

/// Which of `tables` the pool's database lacks (in its search path), so a service can
/// stop at start, naming the fix, instead of retrying against a schema that is not there.
///
/// # Errors
/// The pool's or the query's error.
pub async fn missing_tables(pool: &Pool, tables: &[&str]) -> Result<Vec<String>, PgError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT name FROM unnest($1::text[]) WITH ORDINALITY AS t(name, n) \
             WHERE to_regclass(name) IS NULL ORDER BY n",
        )
        .await?;
    let rows = client.query(&statement, &[&tables]).await?;
    rows.iter()
        .map(|row| row.try_get::<_, String>(0).map_err(PgError::from))
        .collect()
}
