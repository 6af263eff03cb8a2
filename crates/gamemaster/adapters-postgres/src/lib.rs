//! Game Master PostgreSQL adapter: [`PgRuntimeRecordStore`], the `runtime_records` store
//! behind `ports::RuntimeRecordStore`, and [`migrate`], which applies the embedded
//! migrations from `migrations/gamemaster/`.
//!
//! 1. [`migrate`] runs the Game Master's migrations through `pg_kit::migrate`, under the
//!    advisory lock [`MIGRATION_LOCK_KEY`], so concurrent instances are safe and running
//!    twice is harmless.
//! 2. Single-record calls (`get`, `register`, `update_status`, `update_engine_health`) are
//!    one cached statement each; the compare-and-swap is `UPDATE … WHERE status = $from`.
//! 3. `apply_health_batch` folds the observations in Rust with
//!    `domain_runtime::apply_plan` and writes every touched row with one statement,
//!    whatever the batch's size: in one round trip through a guarded write when the
//!    statuses the fold starts from are known from this process's earlier writes, else in
//!    two, locking the rows in `game_id` order first (`docs/decisions/0002-postgres-access.md`,
//!    `0014-guarded-batch-write.md`).
//! 4. Failures map to `ports::Error` by their `pg_kit::ErrorKind`: transient ones to
//!    `Error::Unavailable`, refused values (and unreadable rows) to `Error::Refused`, the
//!    rest to `Error::Backend`.

mod batch;
mod error;
mod kept;
mod store;

pub use batch::{BatchPaths, STATUS_CACHE_CAPACITY};
pub use store::{PgRuntimeRecordStore, ShardRow, ShardTable};

use pg_kit::{MigrateError, Pool};

/// The SQL files of `migrations/gamemaster/`, compiled in (private: only [`migrate`] runs
/// them).
mod embedded {
    refinery::embed_migrations!("../../../migrations/gamemaster");
}

/// The `pg_advisory_lock` key the Game Master's migrations run under ("galaxy" in ASCII,
/// then service number 1). Other services use their own key.
pub const MIGRATION_LOCK_KEY: i64 = 0x6761_6c61_7879_0001;

/// Applies the Game Master's schema (embedded at build time) to the pool's database,
/// under [`MIGRATION_LOCK_KEY`].
///
/// # Errors
/// [`MigrateError`]; [`MigrateError::is_transient`] tells whether retrying may help.
pub async fn migrate(pool: &Pool) -> Result<refinery::Report, MigrateError> {
    pg_kit::migrate(pool, &embedded::migrations::runner(), MIGRATION_LOCK_KEY).await
}

/// The tables `gamemaster run` needs (checked at start, see
/// `service_kit::consumer::check_schema`).
pub const TABLES: [&str; 3] = ["runtime_records", "gm_shard_layout", "gm_shards"];
