//! The worker inside the consumer runtime, driven one step at a time against the real
//! PostgreSQL and Redis: a scripted stream, a restart, a trimmed offset.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use adapters_postgres::PgRuntimeRecordStore;
use adapters_redis::RedisLobbyEventsPublisher;
use fred::interfaces::StreamsInterface;
use pg_kit::{PgSettings, Pool};
use redis_streams::{RedisClient, RedisOffsetStore, RedisSettings, RedisStreamReader};
use stream_consumer::{Consumer, ConsumerConfig, ConsumerHealth, ConsumerMetrics, Step};
use testkit::pg::TestDb;
use testkit::redis::TestRedis;
use worker_healthevents::{HealthEventsWorker, OFFSET_LABEL, Outcome, WorkerMetrics};

struct Fixture {
    db: TestDb,
    pool: Pool,
    redis: TestRedis,
    client: RedisClient,
    health: String,
    lobby: String,
    service: String,
}

type GmConsumer = Consumer<
    RedisStreamReader,
    RedisOffsetStore,
    HealthEventsWorker<PgRuntimeRecordStore, RedisLobbyEventsPublisher>,
>;

impl Fixture {
    async fn new() -> Self {
        let db = TestDb::create().await.unwrap();
        let pool = pg_kit::connect(db.url(), &PgSettings::default())
            .await
            .unwrap();
        adapters_postgres::migrate(&pool).await.unwrap();
        let redis = TestRedis::connect().await.unwrap();
        let client = redis_streams::connect(redis.url(), RedisSettings::default(), "test")
            .await
            .unwrap();
        let service = testkit::unique_name("gmtest");
        redis.track(format!("{service}:stream_offsets:{OFFSET_LABEL}"));
        Self {
            health: redis.key("health"),
            lobby: redis.key("lobby"),
            db,
            pool,
            redis,
            client,
            service,
        }
    }

    async fn consumer(&self) -> (GmConsumer, WorkerMetrics, ConsumerMetrics) {
        let reader = RedisStreamReader::connect(self.redis.url(), RedisSettings::default(), "r")
            .await
            .unwrap();
        let wm = WorkerMetrics::default();
        let cm = ConsumerMetrics::default();
        let worker = HealthEventsWorker::new(
            PgRuntimeRecordStore::new(self.pool.clone()),
            RedisLobbyEventsPublisher::new(self.client.clone(), self.lobby.clone()),
            Arc::new(|| 1_800_000_000_000),
            wm.clone(),
        );
        let mut config = ConsumerConfig::new(self.health.clone(), OFFSET_LABEL);
        config.batch_size = 100;
        config.block = std::time::Duration::from_millis(100);
        let consumer = Consumer::new(
            reader,
            RedisOffsetStore::new(self.client.clone(), &self.service),
            worker,
            config,
            cm.clone(),
            ConsumerHealth::default(),
        );
        (consumer, wm, cm)
    }

    async fn event(&self, game: &str, event_type: &str) -> String {
        self.redis
            .xadd(
                &self.health,
                &[
                    ("game_id", game),
                    ("event_type", event_type),
                    ("occurred_at_ms", "1700000000000"),
                ],
            )
            .await
            .unwrap()
    }

    async fn rows(&self) -> Vec<(String, String, String)> {
        let client = self.pool.get().await.unwrap();
        client
            .query(
                "SELECT game_id, status, engine_health FROM runtime_records ORDER BY game_id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    async fn snapshots(&self) -> Vec<(String, String, String)> {
        self.redis
            .xrange(&self.lobby)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, fields)| {
                let get = |name: &str| {
                    fields
                        .iter()
                        .find(|(k, _)| k == name.as_bytes())
                        .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
                        .unwrap_or_default()
                };
                (
                    get("game_id"),
                    get("runtime_status"),
                    get("engine_health_summary"),
                )
            })
            .collect()
    }

    async fn offset(&self) -> Option<String> {
        use fred::interfaces::KeysInterface;
        self.redis
            .client()
            .get(format!("{}:stream_offsets:{OFFSET_LABEL}", self.service))
            .await
            .unwrap()
    }
}

/// Steps until the consumer's position reaches `target`, then once more so that its offset
/// is stored; the entries finished on the way.
async fn step_to(consumer: &mut GmConsumer, target: &str) -> usize {
    let target: stream_consumer::EntryId = target.parse().unwrap();
    let mut finished = 0;
    for _ in 0..20 {
        if consumer.position() == Some(target) {
            // One more step stores the offset (a consumer stores it before it waits for
            // entries) and finds nothing new.
            assert_eq!(consumer.step().await, Step::Idle);
            return finished;
        }
        match consumer.step().await {
            Step::Handled { entries, .. } => finished += entries,
            Step::Idle => {}
            other => panic!("unexpected step {other:?}"),
        }
    }
    panic!("the offset did not reach {target}");
}

fn t(a: &str, b: &str, c: &str) -> (String, String, String) {
    (a.into(), b.into(), c.into())
}

#[tokio::test]
async fn a_scripted_stream_gives_the_expected_rows_and_snapshots_and_restarts_resume() {
    let f = Fixture::new().await;
    f.pool
        .get()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO runtime_records (game_id, status, current_turn) VALUES
               ('a', 'running', 1), ('b', 'engine_unreachable', 2),
               ('c', 'stopped', 3), ('d', 'generation_in_progress', 4)",
        )
        .await
        .unwrap();

    // Several entries per game in one batch, malformed ones interleaved.
    f.event("a", "probe_failed").await;
    f.event("a", "container_oom").await;
    f.redis
        .xadd(
            &f.health,
            &[("game_id", "a"), ("event_type", "probe_failed")],
        )
        .await
        .unwrap();
    f.event("b", "probe_recovered").await;
    f.event("a", "container_exited").await;
    f.event("c", "container_exited").await;
    f.event("b", "container_started").await;
    f.redis
        .xadd(
            &f.health,
            &[
                ("game_id", b"d".as_slice()),
                ("event_type", b"container_disappeared"),
                ("occurred_at_ms", b"5"),
                ("details", b"\xff\xfe"),
            ],
        )
        .await
        .unwrap();
    f.event("nobody", "probe_failed").await;
    f.event("a", "probe_recovered").await;
    let last = f.event("b", "inspect_unhealthy").await;

    let (mut consumer, wm, _) = f.consumer().await;
    assert_eq!(step_to(&mut consumer, &last).await, 11);
    assert_eq!(f.offset().await.as_deref(), Some(last.as_str()));
    assert_eq!(
        f.rows().await,
        vec![
            t("a", "running", "healthy"),
            t("b", "running", "inspect_unhealthy"),
            t("c", "stopped", "exited"),
            t("d", "generation_in_progress", "disappeared"),
        ]
    );
    assert_eq!(
        f.snapshots().await,
        vec![
            t("a", "running", "probe_failed"),
            t("a", "engine_unreachable", "oom"),
            t("b", "running", "healthy"),
            t("a", "engine_unreachable", "exited"),
            t("c", "stopped", "exited"),
            // b container_started: healthy again, status unchanged: suppressed.
            t("d", "generation_in_progress", "disappeared"),
            t("a", "running", "healthy"),
            t("b", "running", "inspect_unhealthy"),
        ]
    );
    assert_eq!(wm.consumed_count(Outcome::Applied), 9);
    assert_eq!(wm.consumed_count(Outcome::Malformed), 1);
    assert_eq!(wm.consumed_count(Outcome::UnknownGame), 1);
    assert_eq!(consumer.step().await, Step::Idle);
    drop(consumer);

    // A restart resumes after the saved offset, with an empty debounce memory: the first
    // event per game publishes even when its summary is unchanged.
    let (mut consumer, wm, _) = f.consumer().await;
    let next = f.event("c", "container_exited").await;
    assert_eq!(step_to(&mut consumer, &next).await, 1);
    assert_eq!(wm.consumed_count(Outcome::Applied), 1);
    assert_eq!(f.offset().await.as_deref(), Some(next.as_str()));
    assert_eq!(
        f.snapshots().await.last(),
        Some(&t("c", "stopped", "exited"))
    );

    f.redis.cleanup().await.unwrap();
    f.db.drop_db().await.unwrap();
}

#[tokio::test]
async fn an_offset_older_than_the_trimmed_head_is_detected_and_reading_goes_on() {
    let f = Fixture::new().await;
    f.pool
        .get()
        .await
        .unwrap()
        .batch_execute("INSERT INTO runtime_records (game_id, status, current_turn) VALUES ('a', 'running', 0)")
        .await
        .unwrap();
    let first = f.event("a", "probe_failed").await;
    let (mut consumer, _, _) = f.consumer().await;
    assert_eq!(step_to(&mut consumer, &first).await, 1);
    drop(consumer);

    // While the consumer is away, five entries arrive and the stream is trimmed to two.
    let mut last = String::new();
    for _ in 0..5 {
        last = f.event("a", "container_started").await;
    }
    let _: u64 = f.client_trim(2).await;
    let (mut consumer, wm, cm) = f.consumer().await;
    assert_eq!(step_to(&mut consumer, &last).await, 2);
    assert_eq!(cm.trimmed(OFFSET_LABEL), 1);
    assert_eq!(wm.consumed_count(Outcome::Applied), 2);
    f.redis.cleanup().await.unwrap();
    f.db.drop_db().await.unwrap();
}

impl Fixture {
    async fn client_trim(&self, keep: u64) -> u64 {
        self.redis
            .client()
            .xtrim(&self.health, ("MAXLEN", "=", keep))
            .await
            .unwrap()
    }
}
