//! The health publisher against real servers: a fresh database per test (testkit's
//! `TestDb`) and unique stream names on the shared Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pg_kit::{PgSettings, Pool};
use redis_streams::{RedisSettings, StreamWriter};
use rtm_adapters::{EntryAppender, PgHealthSnapshotStore, RtmHealthEventPublisher};
use rtm_domain::{HealthEventEnvelope, HealthEventType};
use rtm_ports::{EntryId, HealthEventPublisher};
use stream_consumer::StreamError;
use testkit::pg::TestDb;
use testkit::redis::TestRedis;

async fn pool_on(db: &TestDb) -> Pool {
    pg_kit::connect(db.url(), &PgSettings::default())
        .await
        .unwrap()
}

async fn migrated() -> (TestDb, Pool) {
    let db = TestDb::create().await.unwrap();
    let pool = pool_on(&db).await;
    rtm_adapters::migrate(&pool).await.unwrap();
    (db, pool)
}

async fn writer(redis: &TestRedis, stream: &str) -> StreamWriter {
    let client = redis_streams::connect(redis.url(), RedisSettings::default(), "rtm-test")
        .await
        .unwrap();
    StreamWriter::new(client, stream)
}

fn envelope(
    game: &str,
    event: HealthEventType,
    at: i64,
    details: Option<&str>,
) -> HealthEventEnvelope {
    HealthEventEnvelope::new(game, format!("c-{game}"), event, at, details).unwrap()
}

/// (container_id, status, source, details as text, observed_at in ms) of the game's row.
async fn snapshot_row(pool: &Pool, game: &str) -> Option<(String, String, String, String, i64)> {
    let client = pool.get().await.unwrap();
    client
        .query_opt(
            "SELECT container_id, status, source, details::text, \
                    (extract(epoch FROM observed_at) * 1000)::bigint \
             FROM health_snapshots WHERE game_id = $1",
            &[&game],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
}

/// The real stream writer, plus a look at the database from another session just before
/// each XADD: what a consumer reading the entry could see at the earliest.
struct LookBeforeAppend {
    inner: StreamWriter,
    pool: Pool,
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

#[async_trait]
impl EntryAppender for LookBeforeAppend {
    async fn append_entry(
        &self,
        fields: &[(&'static str, String)],
    ) -> Result<EntryId, StreamError> {
        let game = fields
            .iter()
            .find(|(name, _)| *name == "game_id")
            .map(|(_, v)| v.clone())
            .unwrap();
        let row = snapshot_row(&self.pool, &game).await.map(|r| r.1);
        self.seen.lock().unwrap().push(row);
        self.inner.append_entry(fields).await
    }
}

#[tokio::test]
async fn the_row_is_committed_before_the_entry_and_the_entry_has_exactly_the_wire_fields() {
    let (db, pool) = migrated().await;
    let redis = TestRedis::connect().await.unwrap();
    let stream = redis.key("rtm_health_events");
    let seen = Arc::new(Mutex::new(Vec::new()));
    // A second pool: the look happens in another session, as a consumer's would.
    let appender = LookBeforeAppend {
        inner: writer(&redis, &stream).await,
        pool: pool_on(&db).await,
        seen: Arc::clone(&seen),
    };
    let publisher =
        RtmHealthEventPublisher::new(PgHealthSnapshotStore::new(pool.clone()), appender);

    let first = envelope("g-1", HealthEventType::ProbeFailed, 1_700_000_000_123, None);
    let id = publisher.publish(&first).await.unwrap();

    assert_eq!(*seen.lock().unwrap(), [Some("probe_failed".to_owned())]);
    let entries = redis.xrange(&stream).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, id.to_string());
    let fields: Vec<(String, String)> = entries[0]
        .1
        .iter()
        .map(|(k, v)| {
            (
                String::from_utf8(k.clone()).unwrap(),
                String::from_utf8(v.clone()).unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("game_id", "g-1"),
        ("container_id", "c-g-1"),
        ("event_type", "probe_failed"),
        ("occurred_at_ms", "1700000000123"),
        ("details", "{}"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(fields, expected);
    assert_eq!(
        snapshot_row(&pool, "g-1").await,
        Some((
            "c-g-1".into(),
            "probe_failed".into(),
            "probe".into(),
            "{}".into(),
            1_700_000_000_123
        ))
    );
    redis.cleanup().await.unwrap();
    db.drop_db().await.unwrap();
}

#[tokio::test]
async fn a_second_observation_replaces_the_row_and_entries_keep_publish_order() {
    let (db, pool) = migrated().await;
    let redis = TestRedis::connect().await.unwrap();
    let stream = redis.key("rtm_health_events");
    let publisher = RtmHealthEventPublisher::new(
        PgHealthSnapshotStore::new(pool.clone()),
        writer(&redis, &stream).await,
    );

    let a = publisher
        .publish(&envelope(
            "g-2",
            HealthEventType::ContainerStarted,
            1_000,
            None,
        ))
        .await
        .unwrap();
    let b = publisher
        .publish(&envelope(
            "g-2",
            HealthEventType::ContainerOom,
            2_000,
            Some(r#"{"exit_code": 137}"#),
        ))
        .await
        .unwrap();
    publisher
        .publish(&envelope(
            "g-3",
            HealthEventType::InspectUnhealthy,
            3_000,
            None,
        ))
        .await
        .unwrap();

    assert!(a < b);
    assert_eq!(
        snapshot_row(&pool, "g-2").await,
        Some((
            "c-g-2".into(),
            "oom".into(),
            "docker_event".into(),
            r#"{"exit_code": 137}"#.into(),
            2_000
        ))
    );
    let client = pool.get().await.unwrap();
    let rows: i64 = client
        .query_one("SELECT count(*) FROM health_snapshots", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 2, "one row per game");
    let types: Vec<String> = redis
        .xrange(&stream)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, fields)| {
            let (_, v) = fields.iter().find(|(k, _)| k == b"event_type").unwrap();
            String::from_utf8(v.clone()).unwrap()
        })
        .collect();
    assert_eq!(
        types,
        ["container_started", "container_oom", "inspect_unhealthy"]
    );
    redis.cleanup().await.unwrap();
    db.drop_db().await.unwrap();
}

#[tokio::test]
async fn without_the_table_nothing_is_appended_and_the_error_is_permanent() {
    let db = TestDb::create().await.unwrap();
    let pool = pool_on(&db).await; // not migrated
    let redis = TestRedis::connect().await.unwrap();
    let stream = redis.key("rtm_health_events");
    let publisher = RtmHealthEventPublisher::new(
        PgHealthSnapshotStore::new(pool),
        writer(&redis, &stream).await,
    );

    let error = publisher
        .publish(&envelope("g-4", HealthEventType::ProbeFailed, 1, None))
        .await
        .unwrap_err();

    assert!(!error.is_transient(), "{error}");
    assert!(error.to_string().contains("health_snapshots"), "{error}");
    assert!(redis.xrange(&stream).await.unwrap().is_empty());
    redis.cleanup().await.unwrap();
    db.drop_db().await.unwrap();
}
