//! pg-kit against a real server: start-up check and its messages, timeouts, migrations
//! under the advisory lock, and the classification of a server that goes away.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use pg_kit::{ConnectError, MigrateError, PgError, PgSettings};
use testkit::pg::{TestDb, ThrowawayPostgres};

mod embedded {
    refinery::embed_migrations!("tests/migrations");
}

const PASSWORD: &str = "s3cr3t-pw";

/// The shared server's host, port and user, for hand-made URLs.
fn shared_server() -> (String, u16, String) {
    let config: tokio_postgres::Config = testkit::pg::admin_url().parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    (host, port, config.get_user().unwrap().to_owned())
}

fn assert_names_target_without_password(message: &str, host: &str, port: u16, db: &str) {
    assert!(message.contains(host), "no host in: {message}");
    assert!(
        message.contains(&format!(":{port}")),
        "no port in: {message}"
    );
    assert!(message.contains(db), "no database in: {message}");
    assert!(message.contains("postgres"), "no user in: {message}");
    assert!(!message.contains(PASSWORD), "password leaked: {message}");
    assert!(!message.contains('\n'), "not one line: {message}");
}

#[tokio::test]
async fn a_wrong_port_fails_fast_naming_the_target_but_not_the_password() {
    let port = testkit::free_port();
    let url = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/some_db");
    let started = Instant::now();
    let err = pg_kit::connect(&url, &PgSettings::default())
        .await
        .expect_err("nothing listens there");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, ConnectError::Unreachable { .. }), "{err:?}");
    assert!(
        err.is_transient(),
        "a refused connection is worth a retry: {err}"
    );
    let message = err.to_string();
    eprintln!("{message}");
    assert_names_target_without_password(&message, "127.0.0.1", port, "some_db");
    assert!(message.contains("refused"), "{message}");
}

#[tokio::test]
async fn a_missing_database_fails_fast_and_is_permanent() {
    let (host, port, user) = shared_server();
    let db = testkit::unique_name("gm_missing");
    let url = format!("postgres://{user}:{PASSWORD}@{host}:{port}/{db}");
    let started = Instant::now();
    let err = pg_kit::connect(&url, &PgSettings::default())
        .await
        .expect_err("the database does not exist");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        !err.is_transient(),
        "a missing database will not appear by itself: {err}"
    );
    let message = err.to_string();
    eprintln!("{message}");
    assert_names_target_without_password(&message, &host, port, &db);
    assert!(message.contains("does not exist"), "{message}");
}

#[tokio::test]
async fn an_unparsable_url_is_its_own_error_without_the_password() {
    let url = format!("postgres://postgres:{PASSWORD}@127.0.0.1:notaport/db");
    let err = pg_kit::connect(&url, &PgSettings::default())
        .await
        .expect_err("unparsable");
    assert!(matches!(err, ConnectError::InvalidUrl { .. }), "{err:?}");
    assert!(!err.to_string().contains(PASSWORD), "{err}");
    assert!(err.to_string().contains("port"), "{err}");
}

#[tokio::test]
async fn statement_timeout_is_set_on_every_connection_and_classified_transient() {
    let db = TestDb::create().await.unwrap();
    let settings = PgSettings::default().statement_timeout(Duration::from_millis(200));
    let pool = pg_kit::connect(db.url(), &settings).await.unwrap();
    let client = pool.get().await.unwrap();
    let show = client
        .prepare_cached("SHOW statement_timeout")
        .await
        .unwrap();
    let value: String = client.query_one(&show, &[]).await.unwrap().get(0);
    assert_eq!(value, "200ms");

    let sleep = client.prepare_cached("SELECT pg_sleep(2)").await.unwrap();
    let err = PgError::from(client.query(&sleep, &[]).await.expect_err("cancelled"));
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
    );
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("statement timeout"), "{err}");
    drop(client);
    db.drop_db().await.unwrap();
}

#[tokio::test]
async fn a_session_left_inside_a_transaction_is_ended_by_the_server_and_its_locks_go() {
    let db = TestDb::create().await.unwrap();
    let settings = PgSettings::default().idle_in_transaction_timeout(Duration::from_millis(300));
    let pool = pg_kit::connect(db.url(), &settings).await.unwrap();
    let stalled = pool.get().await.unwrap();
    stalled
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    // A process that stops between two statements of its transaction, holding a row lock.
    stalled
        .batch_execute("BEGIN; SELECT id FROM t WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    let other = pool.get().await.unwrap();
    let waited = std::time::Instant::now();
    other
        .batch_execute("UPDATE t SET id = 2 WHERE id = 1")
        .await
        .unwrap();
    let waited = waited.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "the other waited {waited:?}"
    );
    let ended = stalled
        .batch_execute("COMMIT")
        .await
        .expect_err("session ended");
    assert!(PgError::from(ended).is_transient());
    drop((stalled, other));
    db.drop_db().await.unwrap();
}

#[tokio::test]
async fn an_exhausted_pool_times_out_instead_of_waiting_forever() {
    let db = TestDb::create().await.unwrap();
    let settings = PgSettings::default()
        .max_connections(1)
        .wait_timeout(Duration::from_millis(100));
    let pool = pg_kit::connect(db.url(), &settings).await.unwrap();
    let held = pool.get().await.unwrap();
    let err = pg_kit::ping(&pool, Duration::from_secs(5))
        .await
        .expect_err("the only connection is taken");
    assert!(matches!(err, PgError::Pool(_)), "{err:?}");
    assert!(err.is_transient(), "{err}");

    let err = pg_kit::ping(&pool, Duration::from_millis(20)).await;
    assert!(err.is_err());
    drop(held);
    pg_kit::ping(&pool, pg_kit::DEFAULT_PING_TIMEOUT)
        .await
        .unwrap();
    db.drop_db().await.unwrap();
}

async fn count(pool: &pg_kit::Pool, sql: &str) -> i64 {
    let client = pool.get().await.unwrap();
    let statement = client.prepare_cached(sql).await.unwrap();
    client.query_one(&statement, &[]).await.unwrap().get(0)
}

const KEY: i64 = 0x7465_7374_0000_0001;

#[tokio::test]
async fn running_the_migrations_twice_is_harmless() {
    let db = TestDb::create().await.unwrap();
    let pool = pg_kit::connect(db.url(), &PgSettings::default())
        .await
        .unwrap();
    let runner = embedded::migrations::runner();

    let first = pg_kit::migrate(&pool, &runner, KEY).await.unwrap();
    assert_eq!(first.applied_migrations().len(), 2);
    let second = pg_kit::migrate(&pool, &runner, KEY).await.unwrap();
    assert!(second.applied_migrations().is_empty());

    assert_eq!(count(&pool, "SELECT count(*) FROM probe").await, 1);
    let advisory = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'";
    assert_eq!(count(&pool, advisory).await, 0, "the lock was released");
    db.drop_db().await.unwrap();
}

#[tokio::test]
async fn concurrent_migrations_both_succeed_and_apply_each_migration_once() {
    let db = TestDb::create().await.unwrap();
    let run = |url: String| async move {
        // Separate pools: two service instances.
        let pool = pg_kit::connect(&url, &PgSettings::default()).await?;
        let report = pg_kit::migrate(&pool, &embedded::migrations::runner(), KEY).await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(report.applied_migrations().len())
    };
    let a = tokio::spawn(run(db.url().to_owned()));
    let b = tokio::spawn(run(db.url().to_owned()));
    let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
    assert_eq!(
        a + b,
        2,
        "each migration applied by exactly one instance ({a} + {b})"
    );

    let pool = pg_kit::connect(db.url(), &PgSettings::default())
        .await
        .unwrap();
    let tables = "SELECT count(*) FROM pg_tables WHERE tablename = 'probe'";
    assert_eq!(count(&pool, tables).await, 1);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM refinery_schema_history").await,
        2
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM probe").await, 1);
    db.drop_db().await.unwrap();
}

#[tokio::test]
async fn a_failing_migration_reports_a_permanent_error_and_releases_the_lock() {
    let db = TestDb::create().await.unwrap();
    let pool = pg_kit::connect(db.url(), &PgSettings::default())
        .await
        .unwrap();
    let broken = refinery::Migration::unapplied("V1__broken", "CREATE TABLE oops (;").unwrap();
    let err = pg_kit::migrate(&pool, &refinery::Runner::new(&[broken]), KEY)
        .await
        .expect_err("syntax error");
    assert!(matches!(err, MigrateError::Migration(_)), "{err:?}");
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("syntax error"), "{err}");

    // The lock is free again: a correct run goes through at once.
    let report = tokio::time::timeout(
        Duration::from_secs(5),
        pg_kit::migrate(&pool, &embedded::migrations::runner(), KEY),
    )
    .await
    .expect("the lock was left held")
    .unwrap();
    assert_eq!(report.applied_migrations().len(), 2);
    db.drop_db().await.unwrap();
}

#[tokio::test]
async fn a_server_that_goes_away_gives_transient_errors_and_recovery_works() {
    let server = ThrowawayPostgres::start().await.unwrap();
    let url = server.url("postgres");
    let settings = PgSettings::default().connect_timeout(Duration::from_secs(2));
    let pool = pg_kit::connect(&url, &settings).await.unwrap();
    let held = pool.get().await.unwrap();
    let select = held.prepare_cached("SELECT 1").await.unwrap();

    server.stop().await.unwrap();

    // A connection that was open when the server went away.
    let err = PgError::from(held.query(&select, &[]).await.expect_err("server is gone"));
    assert!(err.is_transient(), "{err}");
    drop(held);
    // New connections are refused.
    let err = pg_kit::ping(&pool, Duration::from_secs(5))
        .await
        .expect_err("server is gone");
    assert!(err.is_transient(), "{err}");
    let err = pg_kit::connect(&url, &settings)
        .await
        .expect_err("server is gone");
    assert!(err.is_transient(), "{err}");
    let err = pg_kit::migrate(&pool, &embedded::migrations::runner(), KEY)
        .await
        .expect_err("server is gone");
    assert!(err.is_transient(), "{err}");

    // Back again: the same pool recovers without a restart of the service.
    server.start_again().await.unwrap();
    pg_kit::ping(&pool, Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn real_refusals_are_told_apart_by_kind() {
    use pg_kit::ErrorKind;
    let db = TestDb::create().await.unwrap();
    let pool = pg_kit::connect(db.url(), &PgSettings::default())
        .await
        .unwrap();
    let client = pool.get().await.unwrap();
    client
        .batch_execute("CREATE TABLE t (id text PRIMARY KEY CHECK (id <> ''), n integer)")
        .await
        .unwrap();
    let kind = |e: tokio_postgres::Error| PgError::from(e).kind();

    // The bytes and values an adversarial entry could carry: data.
    let nul = client
        .execute("INSERT INTO t (id) VALUES ($1)", &[&"a\u{0}b"])
        .await
        .expect_err("text cannot hold NUL");
    assert_eq!(kind(nul), ErrorKind::Data);
    let check = client
        .execute("INSERT INTO t (id) VALUES ($1)", &[&""])
        .await
        .expect_err("check constraint");
    assert_eq!(kind(check), ErrorKind::Data);
    let wide = client
        .execute("INSERT INTO t (id, n) VALUES ('x', $1)", &[&i64::MAX])
        .await
        .expect_err("an int8 parameter for an integer column cannot be sent");
    assert_eq!(
        kind(wide),
        ErrorKind::Data,
        "a parameter the driver cannot send"
    );
    // Incompressible text beyond the btree limit (about 2.7 kB per index row).
    let huge = String::from_utf8(testkit::adversarial::incompressible(6000, 7)).unwrap();
    let index = client
        .execute("INSERT INTO t (id) VALUES ($1)", &[&huge])
        .await
        .expect_err("an index row over the btree limit");
    assert_eq!(kind(index), ErrorKind::Data);

    // A database that is not what the service needs: the environment.
    let missing = client
        .execute("SELECT * FROM no_such_table", &[])
        .await
        .expect_err("undefined table");
    assert_eq!(kind(missing), ErrorKind::Environment);

    // A statement timeout: transient.
    client
        .batch_execute("SET statement_timeout = '50ms'")
        .await
        .unwrap();
    let slow = client
        .execute("SELECT pg_sleep(1)", &[])
        .await
        .expect_err("statement timeout");
    assert_eq!(kind(slow), ErrorKind::Transient);
    drop(client);
    db.drop_db().await.unwrap();
}
