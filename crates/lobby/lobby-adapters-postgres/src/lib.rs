//! Game Lobby PostgreSQL adapter: [`PgLobbyStore`] implements every Lobby port
//! (`GameStore`, `GameTurnStatsStore`, `EvaluationGuardStore`, `CareerStore`,
//! `CapabilityEvaluator`) on the tables of `migrations/lobby/`, and [`migrate`] applies
//! those migrations.
//!
//! 0. `finish_game` also writes the game's stop request (`stop_requests`) in its
//!    transaction, and `StopRequests` hands the pending ones to the sender and records
//!    what they were sent as.
//! 1. [`migrate`] runs the Lobby's embedded migrations through `pg_kit::migrate`, under
//!    its own advisory lock ([`MIGRATION_LOCK_KEY`]) and with its own refinery history
//!    table ([`MIGRATION_TABLE`]), so the Lobby can share a database with the other
//!    services; running it twice is harmless.
//! 2. The event operations are one transaction each. `apply_snapshots` locks the run's
//!    games in `game_id` order, decides in Rust which snapshots replace the stored ones
//!    (`RuntimeSnapshot::should_replace`) and folds the stats
//!    (`lobby_domain::apply_observations`), then writes every touched game with one
//!    `UPDATE … FROM unnest(…)` and every player with one upsert that raises the maxima.
//!    `finish_game` does the same for one event, then the compare-and-swap to `finished`
//!    decided by `lobby_domain::plan_finish` on the locked status.
//! 3. `evaluate_once` claims the evaluation guard (`INSERT … ON CONFLICT DO NOTHING`) and,
//!    only when it claimed it, folds the game's maxima into the careers
//!    (`lobby_domain::fold_finished_game_into_careers`) in the same transaction.
//! 4. Statements are cached per connection (`prepare_cached`). Failures map to
//!    `lobby_ports::Error` by their `pg_kit::ErrorKind`: transient ones to `Unavailable`,
//!    refused values (and unreadable rows) to `Refused`, a missing game to `NotFound`, the
//!    rest to `Backend`.

mod apply;
mod careers;
mod games;
mod stats;
mod stops;
mod store;

pub use store::PgLobbyStore;

use pg_kit::{MigrateError, Pool};

/// The SQL files of `migrations/lobby/`, compiled in (private: only [`migrate`] runs them).
mod embedded {
    refinery::embed_migrations!("../../../migrations/lobby");
}

/// The `pg_advisory_lock` key the Lobby's migrations run under ("galaxy" in ASCII, then
/// service number 2; the Game Master uses 1, the Runtime Manager 3).
pub const MIGRATION_LOCK_KEY: i64 = 0x6761_6c61_7879_0002;

/// refinery's history table for the Lobby: not refinery's default (the Game Master's), so
/// two services with their own `V1` can share a database.
pub const MIGRATION_TABLE: &str = "lobby_schema_history";

/// The tables `lobby run` needs (checked at start, see
/// `service_kit::consumer::check_schema`).
pub const TABLES: [&str; 5] = [
    "games",
    "game_player_stats",
    "evaluation_guards",
    "player_careers",
    "stop_requests",
];

/// Applies the Lobby's schema (embedded at build time) to the pool's database, under
/// [`MIGRATION_LOCK_KEY`].
///
/// # Errors
/// [`MigrateError`]; [`MigrateError::is_transient`] tells whether retrying may help.
pub async fn migrate(pool: &Pool) -> Result<refinery::Report, MigrateError> {
    let mut runner = embedded::migrations::runner();
    runner.set_migration_table_name(MIGRATION_TABLE);
    pg_kit::migrate(pool, &runner, MIGRATION_LOCK_KEY).await
}
