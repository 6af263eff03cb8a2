//! Runtime Manager adapters for the health publisher (SPEC §RTM, seed 003) and the
//! stop-jobs consumer (seed 004).
//!
//! 1. [`migrate`] applies the embedded migrations of `migrations/rtmanager/` through
//!    `pg_kit::migrate`, under the service's own advisory lock ([`MIGRATION_LOCK_KEY`]) and
//!    with its own refinery history table ([`MIGRATION_TABLE`]), so the Runtime Manager's
//!    schema can share a database with the Game Master's.
//! 2. [`PgHealthSnapshotStore`] upserts one `health_snapshots` row per game
//!    (`ON CONFLICT (game_id) DO UPDATE`), details as `jsonb`.
//! 3. [`RtmHealthEventPublisher`] publishes one envelope: upsert the snapshot, and only
//!    when that succeeded, XADD the envelope's exact wire fields through an
//!    [`EntryAppender`] (in production `redis_streams::StreamWriter`). A failed upsert
//!    appends nothing; a failed append is returned to the caller.
//! 4. [`PgRuntimeRegistry`] keeps `runtimes` and `operation_log`: each write one
//!    statement, a stop's log row and its compare-and-swap together.
//! 5. [`RedisJobResultPublisher`] appends job results under their stop jobs' entry ids,
//!    each at most once.
//! 6. [`ProcessEngineDriver`] stops engines that are local processes: SIGTERM, SIGKILL
//!    after the grace period, known by pid and start time.
//! 7. Failures map to `rtm_ports::Error` by the workspace's one mapping per server kit.

mod process;
mod publisher;
mod registry;
mod results;
mod snapshots;

pub use process::{
    DEFAULT_MEMORY_LIMIT, ERROR_CODE_BAD_CONTAINER_ID, ERROR_CODE_START_FAILED,
    ERROR_CODE_STOP_DENIED, ERROR_CODE_STOP_TIMED_OUT, ProcessEngineDriver, container_id,
};
pub use publisher::{EntryAppender, RtmHealthEventPublisher};
pub use registry::PgRuntimeRegistry;
pub use results::RedisJobResultPublisher;
pub use snapshots::PgHealthSnapshotStore;

use pg_kit::{MigrateError, Pool};

/// The SQL files of `migrations/rtmanager/`, compiled in (private: only [`migrate`] runs
/// them).
mod embedded {
    refinery::embed_migrations!("../../../migrations/rtmanager");
}

/// The tables `rtmanager run` needs (checked at start, see
/// `service_kit::consumer::check_schema`).
pub const TABLES: [&str; 3] = ["health_snapshots", "runtimes", "operation_log"];

/// The `pg_advisory_lock` key the Runtime Manager's migrations run under ("galaxy" in
/// ASCII, then service number 3; the Game Master uses 1).
pub const MIGRATION_LOCK_KEY: i64 = 0x6761_6c61_7879_0003;

/// refinery's history table for this service. Not refinery's default, which the Game
/// Master's migrations use: two services with their own `V1` in one database must not
/// share a history.
pub const MIGRATION_TABLE: &str = "rtmanager_schema_history";

/// Applies the Runtime Manager's schema (embedded at build time) to the pool's database,
/// under [`MIGRATION_LOCK_KEY`]. Running it twice, or next to the Game Master's
/// migrations, is harmless.
///
/// # Errors
/// [`MigrateError`]; [`MigrateError::is_transient`] tells whether retrying may help.
pub async fn migrate(pool: &Pool) -> Result<refinery::Report, MigrateError> {
    let mut runner = embedded::migrations::runner();
    runner.set_migration_table_name(MIGRATION_TABLE);
    pg_kit::migrate(pool, &runner, MIGRATION_LOCK_KEY).await
}
