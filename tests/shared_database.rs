//! The three services' schemas in one database, as `make demo` and a small deployment
//! run them: each migrates under its own advisory lock and history table, twice is
//! harmless in any order, and every service's tables are there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pg_kit::PgSettings;
use testkit::pg::TestDb;

#[tokio::test]
async fn every_service_migrates_next_to_the_others_and_twice_is_harmless() {
    let db = TestDb::create().await.unwrap();
    let pool = pg_kit::connect(db.url(), &PgSettings::default())
        .await
        .unwrap();
    adapters_postgres::migrate(&pool).await.unwrap();
    let first = rtm_adapters::migrate(&pool).await.unwrap();
    assert_eq!(first.applied_migrations().len(), 2);
    lobby_adapters_postgres::migrate(&pool).await.unwrap();
    let again = rtm_adapters::migrate(&pool).await.unwrap();
    assert!(again.applied_migrations().is_empty());
    adapters_postgres::migrate(&pool).await.unwrap();
    lobby_adapters_postgres::migrate(&pool).await.unwrap();

    let client = pool.get().await.unwrap();
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' ORDER BY table_name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for table in [
        "runtime_records",
        "health_snapshots",
        "runtimes",
        "operation_log",
        rtm_adapters::MIGRATION_TABLE,
        "games",
        "player_careers",
        "stop_requests",
        lobby_adapters_postgres::MIGRATION_TABLE,
    ] {
        assert!(
            tables.iter().any(|t| t == table),
            "{table} missing from {tables:?}"
        );
    }
    drop(client);
    db.drop_db().await.unwrap();
}
