//! Running a service's embedded refinery migrations under a session advisory lock.
//!
//! refinery takes no lock of its own: two instances starting together would both see a
//! migration as unapplied and both run it. Here the whole run happens while the session
//! holds `pg_advisory_lock(key)`, so the second instance waits, then finds everything
//! applied and does nothing.

use deadpool_postgres::{Object, Pool};
use refinery::{Report, Runner};

use crate::error::PgError;
use error_kit::error_chain;

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// No connection, or the lock could not be taken.
    #[error("cannot take the migration lock: {0}")]
    Lock(PgError),
    /// A migration failed (the failed one was rolled back; earlier ones of the run stay).
    #[error("migration failed: {}", explain(.0))]
    Migration(refinery::Error),
    /// The migrations ran but the lock could not be released explicitly (closing the
    /// session released it).
    #[error("cannot release the migration lock: {0}")]
    Unlock(PgError),
}

impl MigrateError {
    /// Whether retrying the whole run may succeed (the server was unreachable or went
    /// away), as opposed to a broken migration.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Lock(e) | Self::Unlock(e) => e.is_transient(),
            Self::Migration(e) => {
                let mut source = std::error::Error::source(e);
                while let Some(cause) = source {
                    if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
                        return crate::is_transient(pg);
                    }
                    source = cause.source();
                }
                false
            }
        }
    }
}

/// refinery's own message for a database failure is "`what`, `db error`"; keep `what` and
/// replace the rest with the whole cause chain.
fn explain(error: &refinery::Error) -> String {
    match error.kind() {
        refinery::error::Kind::Connection(what, cause) => {
            format!("{what}: {}", error_chain(&**cause))
        }
        _ => error_chain(error),
    }
}

/// Applies `runner`'s migrations (from the service's `refinery::embed_migrations!`) while
/// holding `pg_advisory_lock(lock_key)`; each service passes its own key.
///
/// The run uses a connection taken out of the pool for good: it has no
/// `statement_timeout` (a long migration, or waiting for another instance's lock, must not
/// be cancelled), and when it is dropped, whether the run finished, failed or was
/// cancelled, the session ends and the server releases the lock. Running twice is
/// harmless: applied migrations are skipped.
///
/// # Errors
/// [`MigrateError`]; see [`MigrateError::is_transient`].
pub async fn migrate(pool: &Pool, runner: &Runner, lock_key: i64) -> Result<Report, MigrateError> {
    let connection = pool.get().await.map_err(|e| MigrateError::Lock(e.into()))?;
    // Never returned to the pool: the session's settings and lock die with it.
    let mut connection = Object::take(connection);
    connection
        .batch_execute("SET statement_timeout = 0")
        .await
        .map_err(|e| MigrateError::Lock(e.into()))?;
    migrate_on(&mut connection, runner, lock_key).await
}

/// Like [`migrate`], on a connection the caller owns (its `statement_timeout` applies to
/// the lock wait and to each migration). The lock is released before returning, also when
/// a migration fails.
///
/// # Errors
/// [`MigrateError`].
pub async fn migrate_on(
    client: &mut tokio_postgres::Client,
    runner: &Runner,
    lock_key: i64,
) -> Result<Report, MigrateError> {
    let lock = client
        .prepare("SELECT pg_advisory_lock($1)")
        .await
        .map_err(|e| MigrateError::Lock(e.into()))?;
    client
        .execute(&lock, &[&lock_key])
        .await
        .map_err(|e| MigrateError::Lock(e.into()))?;
    tracing::debug!(lock_key, "holding the migration lock");

    let outcome = runner.run_async(client).await;

    let unlocked = async {
        let unlock = client.prepare("SELECT pg_advisory_unlock($1)").await?;
        client
            .query_one(&unlock, &[&lock_key])
            .await?
            .try_get::<_, bool>(0)
    }
    .await;

    let report = outcome.map_err(MigrateError::Migration)?;
    match unlocked {
        Ok(true) => {}
        Ok(false) => tracing::warn!(lock_key, "the migration lock was not held at unlock"),
        Err(e) => return Err(MigrateError::Unlock(e.into())),
    }
    for migration in report.applied_migrations() {
        tracing::info!(
            version = migration.version(),
            name = migration.name(),
            "applied migration"
        );
    }
    Ok(report)
}
