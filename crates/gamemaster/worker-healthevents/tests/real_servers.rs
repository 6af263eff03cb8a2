//! The worker inside the consumer runtime, driven one step at a time against the real
//! PostgreSQL and Redis: a scripted stream, a restart, a trimmed offset, a second instance
//! that fences the first, a lost offset replayed without applying anything again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use adapters_postgres::PgRuntimeRecordStore;
use adapters_redis::RedisLobbyEventsPublisher;
use domain_runtime::HealthEventType;
use fred::interfaces::StreamsInterface;
use pg_kit::{PgSettings, Pool};
use redis_streams::{RedisClient, RedisOffsetStore, RedisSettings, RedisStreamReader};
use stream_consumer::{Consumer, ConsumerConfig, ConsumerHealth, ConsumerMetrics, Stage, Step};
use testkit::pg::TestDb;
use testkit::redis::TestRedis;
use worker_healthevents::{HealthEventsWorker, OFFSET_LABEL, Outcome, WorkerMetrics, claim_all};

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

    /// A consumer whose worker has just claimed every shard (as `gamemaster run` does at
    /// start), with its health.
    async fn consumer(&self) -> (GmConsumer, WorkerMetrics, ConsumerMetrics) {
        let (consumer, wm, cm, _) = self.instance().await;
        (consumer, wm, cm)
    }

    async fn instance(&self) -> (GmConsumer, WorkerMetrics, ConsumerMetrics, ConsumerHealth) {
        let store = PgRuntimeRecordStore::new(self.pool.clone());
        let owner = claim_all(&store, "test", domain_runtime::ShardCount::default())
            .await
            .unwrap();
        let health = ConsumerHealth::default();
        let reader = RedisStreamReader::connect(self.redis.url(), RedisSettings::default(), "r")
            .await
            .unwrap();
        let wm = WorkerMetrics::default();
        let cm = ConsumerMetrics::default();
        let worker = HealthEventsWorker::new(
            store,
            RedisLobbyEventsPublisher::new(self.client.clone(), self.lobby.clone()),
            Arc::new(|| 1_800_000_000_000),
            wm.clone(),
            owner,
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
            health.clone(),
        );
        (consumer, wm, cm, health)
    }

    async fn sql(&self, statements: &str) {
        self.pool
            .get()
            .await
            .unwrap()
            .batch_execute(statements)
            .await
            .unwrap();
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

    // A restart (the consumer was dropped, as a crash would) resumes after the saved
    // offset. The snapshots its shards kept, not known to have gone out, go out again
    // first (the Lobby drops them by their ids); then, with an empty debounce memory,
    // the first event per game publishes even when its summary is unchanged.
    let before = f.snapshots().await;
    let (mut consumer, wm, _) = f.consumer().await;
    let next = f.event("c", "container_exited").await;
    assert_eq!(step_to(&mut consumer, &next).await, 1);
    assert_eq!(wm.consumed_count(Outcome::Applied), 1);
    assert_eq!(f.offset().await.as_deref(), Some(next.as_str()));
    let after = f.snapshots().await;
    assert_eq!(after[..before.len()], before[..]);
    assert_eq!(
        after[before.len()..before.len() * 2],
        before[..],
        "republished"
    );
    assert_eq!(
        after[before.len() * 2..],
        [t("c", "stopped", "exited")],
        "then the new event's"
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

/// The games both streams of the poison test talk about.
const GAMES: usize = 20;

/// Entries a hostile producer sends that decoding rejects: each broke the Game Master
/// or could have.
fn undecodable() -> Vec<Vec<(&'static str, Vec<u8>)>> {
    let ok = |game: &[u8]| {
        vec![
            ("game_id", game.to_vec()),
            ("event_type", b"probe_failed".to_vec()),
            ("occurred_at_ms", b"1700000000000".to_vec()),
        ]
    };
    let with = |field: &'static str, value: &[u8]| {
        let mut e = ok(b"g01");
        e.retain(|(k, _)| *k != field);
        e.push((field, value.to_vec()));
        e
    };
    vec![
        ok(b"\0"),
        ok(b"g01\0"),
        ok(&[b'g'; 300]),
        ok(b"\xff\xfe"),
        with("occurred_at_ms", b"99999999999999999999"),
        with("event_type", b"container_started\0"),
    ]
}

impl Fixture {
    async fn register_games(&self, extra: &[&str]) {
        let client = self.pool.get().await.unwrap();
        let ids = (0..GAMES)
            .map(|i| format!("g{i:02}"))
            .chain(extra.iter().map(|s| (*s).to_owned()));
        for id in ids {
            client
                .execute(
                    "INSERT INTO runtime_records (game_id, status, current_turn) VALUES ($1, 'running', 0)",
                    &[&id],
                )
                .await
                .unwrap();
        }
    }

    async fn raw(&self, fields: &[(&str, Vec<u8>)]) -> String {
        self.redis.xadd(&self.health, fields).await.unwrap()
    }
}

#[tokio::test]
async fn a_stream_with_entries_postgres_refuses_drains_and_its_valid_entries_act_as_if_alone() {
    let poisoned = Fixture::new().await;
    let clean = Fixture::new().await;
    clean.register_games(&[]).await;
    poisoned.register_games(&["poison-1", "poison-2"]).await;
    // Beyond what decoding can know: this database refuses every write to two games, as
    // a constraint or trigger an operator added would.
    poisoned
        .pool
        .get()
        .await
        .unwrap()
        .batch_execute(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'game % is refused', NEW.game_id USING ERRCODE = '23514'; END $$;
             CREATE TRIGGER refuse_poison BEFORE UPDATE ON runtime_records FOR EACH ROW
               WHEN (NEW.game_id LIKE 'poison-%') EXECUTE FUNCTION refuse_poison();",
        )
        .await
        .unwrap();

    let bad = undecodable();
    let (mut refused, mut malformed) = (0, 0);
    let (mut last_clean, mut last_poisoned) = (String::new(), String::new());
    let mut x: u64 = 7;
    for i in 0..300 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let game = format!("g{:02}", (x >> 33) as usize % GAMES);
        let kind = HealthEventType::ALL[(x >> 40) as usize % HealthEventType::ALL.len()].as_str();
        last_clean = clean.event(&game, kind).await;
        last_poisoned = poisoned.event(&game, kind).await;
        match i % 10 {
            3 => {
                last_poisoned = poisoned.raw(&bad[i / 10 % bad.len()]).await;
                malformed += 1;
            }
            7 => {
                let poison = if i % 20 == 7 { "poison-1" } else { "poison-2" };
                last_poisoned = poisoned.event(poison, kind).await;
                refused += 1;
            }
            _ => {}
        }
    }

    let (mut c_consumer, c_wm, _) = clean.consumer().await;
    step_to(&mut c_consumer, &last_clean).await;
    let (mut p_consumer, p_wm, p_cm) = poisoned.consumer().await;
    let finished = step_to(&mut p_consumer, &last_poisoned).await;

    // Drained: every entry finished, the offset past the last one, no retry on the way.
    assert_eq!(finished, 300 + refused + malformed);
    assert_eq!(
        poisoned.offset().await.as_deref(),
        Some(last_poisoned.as_str())
    );
    assert_eq!(p_cm.retries(OFFSET_LABEL, "handle"), 0);
    // The valid entries' effects are those of the stream without the bad ones.
    let p_rows: Vec<_> = poisoned
        .rows()
        .await
        .into_iter()
        .filter(|(g, _, _)| !g.starts_with("poison-"))
        .collect();
    assert_eq!(p_rows, clean.rows().await);
    assert_eq!(poisoned.snapshots().await, clean.snapshots().await);
    assert_eq!(p_wm.consumed_count(Outcome::Refused), refused as u64);
    assert_eq!(
        p_wm.consumed_count(Outcome::Malformed) + p_wm.consumed_count(Outcome::UnknownEventType),
        malformed as u64
    );
    assert_eq!(
        p_wm.consumed_count(Outcome::Applied),
        c_wm.consumed_count(Outcome::Applied)
    );
    assert_eq!(c_wm.consumed_count(Outcome::Applied), 300);
    for f in [poisoned, clean] {
        f.redis.cleanup().await.unwrap();
        f.db.drop_db().await.unwrap();
    }
}

#[tokio::test]
async fn an_instance_fenced_off_by_a_second_gives_its_shards_up_and_every_entry_is_applied_once() {
    let f = Fixture::new().await;
    f.sql("INSERT INTO runtime_records (game_id, status, current_turn) VALUES ('a', 'running', 0), ('b', 'running', 0)")
        .await;
    let first = f.event("a", "container_exited").await;
    let (mut one, one_metrics, _, _) = f.instance().await;
    assert_eq!(step_to(&mut one, &first).await, 1);

    // A second instance claims every shard (as if the first had been paused past its
    // leases). The first still reads the next entry, but its write is fenced off.
    let (mut two, two_metrics, _, two_health) = f.instance().await;
    let next = f.event("b", "container_exited").await;
    assert!(
        matches!(
            one.step().await,
            Step::Retry {
                stage: Stage::Handle,
                ..
            }
        ),
        "the fenced write is retried"
    );
    assert_eq!(one_metrics.fenced_count(), 1);
    assert_eq!(
        f.rows().await[1],
        t("b", "running", ""),
        "the fenced write left nothing"
    );
    // The retry re-reads its shards, finds every one claimed, and leaves the entry.
    assert!(matches!(one.step().await, Step::Handled { entries: 1, .. }));
    assert_eq!(one_metrics.consumed_count(Outcome::NotOwned), 1);
    assert_eq!(one_metrics.consumed_count(Outcome::Applied), 1);

    // The second applies the entry, once.
    assert_eq!(step_to(&mut two, &next).await, 1);
    assert_eq!(
        f.rows().await,
        vec![
            t("a", "engine_unreachable", "exited"),
            t("b", "engine_unreachable", "exited"),
        ]
    );
    assert_eq!(two_metrics.consumed_count(Outcome::Applied), 1);
    assert_eq!(two_metrics.fenced_count(), 0);
    assert!(two_health.check().is_ok());
    f.redis.cleanup().await.unwrap();
    f.db.drop_db().await.unwrap();
}

#[tokio::test]
async fn after_a_lost_offset_entries_at_their_checkpoint_are_not_applied_again_and_kept_snapshots_go_out()
 {
    let f = Fixture::new().await;
    f.sql("INSERT INTO runtime_records (game_id, status, current_turn) VALUES ('a', 'running', 0)")
        .await;
    let exited = f.event("a", "container_exited").await;
    let (mut one, _, _, _) = f.instance().await;
    assert_eq!(step_to(&mut one, &exited).await, 1);
    drop(one);

    // Another flow brings the game back to running; then Redis loses the offset (it keeps
    // nothing on disk), so the next instance reads the stream from the start.
    f.sql("UPDATE runtime_records SET status = 'running' WHERE game_id = 'a'")
        .await;
    use fred::interfaces::KeysInterface;
    let _: i64 = f
        .redis
        .client()
        .del(format!("{}:stream_offsets:{OFFSET_LABEL}", f.service))
        .await
        .unwrap();
    let failed = f.event("a", "probe_failed").await;
    let (mut two, metrics, _, _) = f.instance().await;
    assert_eq!(step_to(&mut two, &failed).await, 2);

    // Applied again, container_exited would have moved the game to engine_unreachable.
    assert_eq!(f.rows().await, vec![t("a", "running", "probe_failed")]);
    assert_eq!(metrics.consumed_count(Outcome::Replayed), 1);
    assert_eq!(metrics.consumed_count(Outcome::Applied), 1);
    assert_eq!(
        f.snapshots().await,
        vec![
            t("a", "engine_unreachable", "exited"),
            // The first instance's snapshot, kept with its shard (it stopped before it
            // wrote its mark), goes out again exactly as it was, not as the record is now.
            t("a", "engine_unreachable", "exited"),
            t("a", "running", "probe_failed"),
        ]
    );
    f.redis.cleanup().await.unwrap();
    f.db.drop_db().await.unwrap();
}
