//! The real `gamemaster` binary against real servers: a throwaway PostgreSQL cluster (so
//! the test can stop it) and a throwaway Redis (so the fixed offset key
//! `gamemaster:stream_offsets:health_events` belongs to this test alone).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use e2e::{entries, pg_client, runtime_rows};
use fred::interfaces::KeysInterface;
use testkit::bins::{Process, run};
use testkit::pg::{TestDb, ThrowawayPostgres};
use testkit::redis::{TestRedis, ThrowawayRedis};
use testkit::{eventually, free_port, http};

const OFFSET_KEY: &str = "gamemaster:stream_offsets:health_events";
const HEALTH: &str = "runtime:health_events";
const LOBBY: &str = "gm:lobby_events";

async fn offset(redis: &TestRedis) -> Option<String> {
    redis
        .client()
        .get::<Option<String>, _>(OFFSET_KEY)
        .await
        .ok()
        .flatten()
}

async fn health_event(redis: &TestRedis, game: &str, event_type: &str) -> String {
    e2e::health_event(redis, game, event_type).await.unwrap()
}

/// An entry the contract's encoder would refuse to build (a NUL in the game id, an event
/// type from a newer Runtime Manager), as a faulty or newer producer writes it.
async fn raw_health_event(redis: &TestRedis, game: &str, event_type: &str) -> String {
    let fields = [
        ("game_id", game),
        ("event_type", event_type),
        ("occurred_at_ms", "1700000000000"),
    ];
    redis.xadd(HEALTH, &fields).await.unwrap()
}

/// A start-up failure case: arguments, environment, a word the error must contain.
fn snapshot_of(fields: &e2e::Fields) -> (String, String, String) {
    (
        fields["game_id"].clone(),
        fields["runtime_status"].clone(),
        fields["engine_health_summary"].clone(),
    )
}

fn triple(g: &str, s: &str, h: &str) -> (String, String, String) {
    (g.to_owned(), s.to_owned(), h.to_owned())
}

/// `gamemaster run` on `db_url` and `redis_url`, JSON logs, once `/readyz` answers 200.
async fn start_gamemaster(db_url: &str, redis_url: &str) -> (Process, SocketAddr) {
    let http_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let addr_text = http_addr.to_string();
    let gm = Process::spawn(
        "gamemaster",
        &["run"],
        &[
            ("GAMEMASTER_POSTGRES_URL", db_url),
            ("GAMEMASTER_REDIS_URL", redis_url),
            ("GAMEMASTER_HTTP_ADDR", &addr_text),
            ("GAMEMASTER_READ_BLOCK", "200ms"),
            ("GAMEMASTER_LOG_FORMAT", "json"),
            ("GAMEMASTER_POSTGRES_STATEMENT_TIMEOUT", "2s"),
            ("RUST_LOG", "info"),
        ],
    )
    .unwrap();
    eventually("gamemaster ready", Duration::from_secs(20), || async {
        matches!(http::get(http_addr, "/readyz").await, Ok((200, _)))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gm.stderr()));
    (gm, http_addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gamemaster_applies_publishes_survives_a_database_outage_and_drains_on_sigterm() {
    let pg = ThrowawayPostgres::start().await.unwrap();
    let admin = pg_client(&pg.admin_url()).await.unwrap();
    admin.batch_execute("CREATE DATABASE gm").await.unwrap();
    let db_url = pg.url("gm");
    let redis_server = ThrowawayRedis::start().await.unwrap();
    let redis = TestRedis::connect_to(&redis_server.url()).await.unwrap();

    // Migrate twice: harmless.
    let env = [("GAMEMASTER_POSTGRES_URL", db_url.as_str())];
    for _ in 0..2 {
        let (code, stderr) = run("gamemaster", &["migrate"], &env, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(code, 0, "{stderr}");
    }
    let db = pg_client(&db_url).await.unwrap();
    db.batch_execute(
        "INSERT INTO runtime_records (game_id, status, current_turn) VALUES
           ('g1', 'running', 3), ('g2', 'running', 0), ('g3', 'generation_in_progress', 9)",
    )
    .await
    .unwrap();

    let (mut gm, http_addr) = start_gamemaster(&db_url, &redis_server.url()).await;

    // A scripted sequence: valid and malformed entries interleaved, several games.
    health_event(&redis, "g1", "container_oom").await;
    redis
        .xadd(HEALTH, &[("game_id", "g2"), ("event_type", "probe_failed")])
        .await
        .unwrap();
    health_event(&redis, "g1", "probe_recovered").await;
    health_event(&redis, "g2", "probe_failed").await;
    health_event(&redis, "ghost", "container_exited").await;
    health_event(&redis, "g2", "probe_failed").await;
    health_event(&redis, "g3", "container_exited").await;
    let last = raw_health_event(&redis, "g2", "container_flooded").await;

    eventually(
        "offset reaches the last entry",
        Duration::from_secs(20),
        || async { offset(&redis).await.as_deref() == Some(last.as_str()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gm.stderr()));

    let rows = runtime_rows(&db).await.unwrap();
    assert_eq!(rows["g1"], ("running".into(), "healthy".into()));
    assert_eq!(rows["g2"], ("running".into(), "probe_failed".into()));
    assert_eq!(
        rows["g3"],
        ("generation_in_progress".into(), "exited".into())
    );

    let published = entries(&redis, LOBBY).await.unwrap();
    assert_eq!(
        published
            .iter()
            .map(|(_, f)| snapshot_of(f))
            .collect::<Vec<_>>(),
        vec![
            triple("g1", "engine_unreachable", "oom"),
            triple("g1", "running", "healthy"),
            triple("g2", "running", "probe_failed"),
            triple("g3", "generation_in_progress", "exited"),
        ]
    );
    let first = &published[0].1;
    assert_eq!(first["kind"], "runtime_snapshot_update");
    assert_eq!(first["current_turn"], "3");
    assert!(first["occurred_at_ms"].parse::<u64>().unwrap() > 1_700_000_000_000);

    let (code, metrics) = http::get(http_addr, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    for line in [
        r#"gamemaster_health_events_consumed_total{outcome="applied"} 5"#,
        r#"gamemaster_health_events_consumed_total{outcome="malformed"} 1"#,
        r#"gamemaster_health_events_consumed_total{outcome="unknown_event_type"} 1"#,
        r#"gamemaster_health_events_consumed_total{outcome="unknown_game"} 1"#,
        r#"gamemaster_lobby_events_published_total{kind="runtime_snapshot_update"} 4"#,
        r#"gamemaster_runtime_status_transitions_total{from="running",to="engine_unreachable"} 1"#,
        r#"gamemaster_runtime_status_transitions_total{from="engine_unreachable",to="running"} 1"#,
        r#"gamemaster_stream_consumer_entries_total{consumer="health_events"} 8"#,
        // Nothing else moved a status, so no guarded write was refused.
        "gamemaster_health_batch_guard_misses_total 0",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    let counter = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    assert!(
        counter("gamemaster_health_batches_locked_total") >= 1,
        "games seen for the first time take the locked path"
    );
    let _guarded = counter("gamemaster_health_batches_guarded_total");

    // PostgreSQL goes away: the offset holds, readiness says why, nothing is lost.
    pg.stop().await.unwrap();
    let during = health_event(&redis, "g2", "container_started").await;
    eventually("readyz turns 503", Duration::from_secs(20), || async {
        matches!(http::get(http_addr, "/readyz").await, Ok((503, _)))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gm.stderr()));
    let (_, reason) = http::get(http_addr, "/readyz").await.unwrap();
    assert!(reason.contains("postgres"), "{reason}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(offset(&redis).await.as_deref(), Some(last.as_str()));
    assert!(gm.pid().is_some(), "gamemaster must keep running");

    pg.start_again().await.unwrap();
    eventually(
        "offset catches up after the outage",
        Duration::from_secs(30),
        || async { offset(&redis).await.as_deref() == Some(during.as_str()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gm.stderr()));
    let db = pg_client(&db_url).await.unwrap();
    assert_eq!(
        runtime_rows(&db).await.unwrap()["g2"],
        ("running".into(), "healthy".into())
    );
    let published = entries(&redis, LOBBY).await.unwrap();
    assert_eq!(
        snapshot_of(&published.last().unwrap().1),
        triple("g2", "running", "healthy")
    );
    eventually("readyz back to 200", Duration::from_secs(20), || async {
        matches!(http::get(http_addr, "/readyz").await, Ok((200, _)))
    })
    .await
    .unwrap();
    let (_, metrics) = http::get(http_addr, "/metrics").await.unwrap();
    assert!(
        metrics.contains(
            r#"gamemaster_stream_consumer_retries_total{consumer="health_events",stage="handle"}"#
        ),
        "{metrics}"
    );

    // SIGTERM: exit 0 with the offset saved.
    let final_id = health_event(&redis, "g1", "probe_failed").await;
    eventually("last event handled", Duration::from_secs(20), || async {
        offset(&redis).await.as_deref() == Some(final_id.as_str())
    })
    .await
    .unwrap();
    gm.terminate().unwrap();
    let code = gm.wait(Duration::from_secs(15)).await.unwrap();
    assert_eq!(code, 0, "{}", gm.stderr());
    assert_eq!(offset(&redis).await.as_deref(), Some(final_id.as_str()));
    let logs = gm.stderr();
    assert!(
        logs.contains(r#""stream_entry_id""#) && logs.contains(r#""game_id":"ghost""#),
        "JSON logs carry stream_entry_id and game_id:\n{logs}"
    );
    redis.cleanup().await.unwrap();
}

/// Issue 11's reproduction: entries whose `game_id` holds a NUL byte, then ordinary ones.
/// They used to wedge the Game Master for good; now they are skipped and the rest applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_postgres_cannot_hold_are_skipped_and_the_stream_drains_ready() {
    let db = e2e::migrated("gamemaster", "GAMEMASTER_POSTGRES_URL").await;
    let pg = pg_client(db.url()).await.unwrap();
    pg.batch_execute(
        "INSERT INTO runtime_records (game_id, status, current_turn) VALUES
           ('g1', 'running', 0), ('g2', 'running', 0)",
    )
    .await
    .unwrap();
    let redis_server = ThrowawayRedis::start().await.unwrap();
    let redis = TestRedis::connect_to(&redis_server.url()).await.unwrap();
    let nul = raw_health_event(&redis, "\0", "probe_failed").await;
    let suffixed = raw_health_event(&redis, "g1\0", "container_exited").await;
    health_event(&redis, "g1", "container_exited").await;
    health_event(&redis, "g2", "probe_failed").await;
    let last = health_event(&redis, "g1", "probe_recovered").await;

    let (mut gm, http_addr) = start_gamemaster(db.url(), &redis_server.url()).await;
    eventually(
        "offset passes every entry",
        Duration::from_secs(20),
        || async { offset(&redis).await.as_deref() == Some(last.as_str()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gm.stderr()));
    let rows = runtime_rows(&pg).await.unwrap();
    assert_eq!(rows["g1"], ("running".into(), "healthy".into()));
    assert_eq!(rows["g2"], ("running".into(), "probe_failed".into()));
    assert_eq!(http::get(http_addr, "/readyz").await.unwrap().0, 200);
    let metrics = e2e::metrics(http_addr).await.unwrap();
    e2e::assert_metrics(
        &metrics,
        &[
            r#"gamemaster_health_events_consumed_total{outcome="malformed"} 2"#,
            r#"gamemaster_health_events_consumed_total{outcome="applied"} 3"#,
            r#"gamemaster_health_events_consumed_total{outcome="refused"} 0"#,
            r#"gamemaster_lobby_events_published_total{kind="runtime_snapshot_update"} 3"#,
            r#"gamemaster_stream_consumer_dead_letters_total{consumer="health_events"} 2"#,
        ],
    );
    // Both kept raw, NUL bytes and all, with why and where from.
    let letters =
        e2e::dead_letters("gamemaster", "health_events", &redis, &redis_server.url()).await;
    let sources: Vec<&str> = letters.iter().map(|l| l.source_id.as_str()).collect();
    assert_eq!(sources, [nul.as_str(), suffixed.as_str()]);
    for letter in &letters {
        assert_eq!(
            letter.source_stream,
            contracts::health_events::DEFAULT_STREAM
        );
        assert!(letter.reason.contains("NUL byte"), "{}", letter.reason);
        assert!(
            letter
                .fields
                .iter()
                .any(|(k, v)| k == b"game_id" && v.contains(&0)),
            "{letter:?}"
        );
    }
    assert!(
        !metrics.contains(r#"stage="handle"} "#),
        "no retry: {metrics}"
    );
    // The operator's view: position at the last entry, two dead letters, ready.
    let url = redis_server.url();
    let addr = http_addr.to_string();
    let args = ["--redis-url", url.as_str(), "--http-addr", addr.as_str()];
    let status = e2e::status("gamemaster", &args).await;
    let consumer = &status["consumers"][0];
    assert_eq!(consumer["label"], "health_events", "{status}");
    assert_eq!(consumer["position"], last.as_str(), "{status}");
    assert_eq!(consumer["last_entry"], last.as_str(), "{status}");
    assert_eq!(consumer["stream_length"], 5, "{status}");
    assert_eq!(consumer["dead_letters"], 2, "{status}");
    assert_eq!(consumer["lag_seconds"], 0.0, "{status}");
    assert_eq!(status["instance"]["state"], "ready", "{status}");
    gm.terminate().unwrap();
    assert_eq!(gm.wait(Duration::from_secs(15)).await.unwrap(), 0);
    let status = e2e::status("gamemaster", &args).await;
    assert_eq!(status["instance"]["state"], "not running", "{status}");
    let mut table = testkit::bins::Process::spawn(
        "gamemaster",
        &[
            "status",
            "--redis-url",
            url.as_str(),
            "--http-addr",
            addr.as_str(),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(table.wait(Duration::from_secs(30)).await.unwrap(), 0);
    let shown = table.stdout();
    assert!(
        shown.contains("health_events") && shown.contains(last.as_str()),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("instance on {addr}: not running")),
        "{shown}"
    );
    let logs = gm.stderr();
    for id in [&nul, &suffixed] {
        let line = logs
            .lines()
            .find(|l| l.contains(&format!(r#""stream_entry_id":"{id}""#)))
            .unwrap_or_else(|| panic!("no log line for {id}:\n{logs}"));
        assert!(line.contains("NUL byte"), "{line}");
    }
    redis.cleanup().await.unwrap();
    db.drop_db().await.unwrap();
}

#[tokio::test]
async fn bad_settings_and_unreachable_servers_are_one_line_and_exit_2() {
    let closed = format!("127.0.0.1:{}", free_port());
    let redis_closed = format!("redis://{closed}");
    let pg_closed = format!("postgres://postgres:secret@{closed}/gm");
    // (arguments, environment, what the error line must mention)
    let cases: Vec<e2e::StartupCase> = vec![
        (
            vec!["run"],
            vec![("GAMEMASTER_POSTGRES_URL", "not a url")],
            "postgres",
        ),
        (vec!["run", "--batch-size", "0"], vec![], "batch-size"),
        (vec!["run", "--shards", "0"], vec![], "shards"),
        (vec!["run", "--shards", "4097"], vec![], "shards"),
        (vec!["run", "--instance-id", " "], vec![], "instance-id"),
        (
            vec!["run", "--health-events-stream", "has space"],
            vec![],
            "stream",
        ),
        (vec!["run", "--http-addr", "nowhere"], vec![], "http-addr"),
        (
            vec!["run"],
            vec![("GAMEMASTER_POSTGRES_URL", pg_closed.as_str())],
            "PostgreSQL",
        ),
        (
            vec!["migrate"],
            vec![("GAMEMASTER_POSTGRES_URL", pg_closed.as_str())],
            "PostgreSQL",
        ),
        (
            vec!["run"],
            vec![
                (
                    "GAMEMASTER_POSTGRES_URL",
                    "postgres://postgres@127.0.0.1:5432/postgres",
                ),
                ("GAMEMASTER_REDIS_URL", redis_closed.as_str()),
            ],
            "Redis",
        ),
    ];
    let empty = testkit::pg::TestDb::create().await.unwrap();
    let redis_url = testkit::redis::redis_url();
    let unmigrated = vec![
        ("GAMEMASTER_POSTGRES_URL", empty.url()),
        ("GAMEMASTER_REDIS_URL", redis_url.as_str()),
    ];
    let mut cases = cases;
    cases.push((vec!["run"], unmigrated, "gamemaster migrate"));
    for (args, env, mentions) in cases {
        e2e::assert_startup_error("gamemaster", &args, &env, mentions)
            .await
            .unwrap();
    }
    empty.drop_db().await.unwrap();
}

#[test]
fn run_help_lists_every_setting_with_its_environment_variable() {
    e2e::assert_help_lists(
        "gamemaster",
        &[
            "GAMEMASTER_REDIS_URL",
            "GAMEMASTER_POSTGRES_URL",
            "GAMEMASTER_HEALTH_EVENTS_STREAM",
            "GAMEMASTER_LOBBY_EVENTS_STREAM",
            "GAMEMASTER_HTTP_ADDR",
            "GAMEMASTER_LOG_FORMAT",
            "GAMEMASTER_SHUTDOWN_TIMEOUT",
            "GAMEMASTER_BATCH_SIZE",
            "GAMEMASTER_READ_BLOCK",
            "GAMEMASTER_SHARDS",
            "GAMEMASTER_INSTANCE_ID",
            "runtime:health_events",
            "127.0.0.1:8080",
        ],
    )
    .unwrap();
}

/// A rolling update: a second `gamemaster run` on the same database and Redis claims every
/// shard; the first, fenced off at its next write, stands down (not ready, still up until
/// stopped), and each entry after the claim is applied and published exactly once, by the
/// second.
/// Each instance's `gamemaster_health_events_consumed_total{outcome="applied"}`, summed.
async fn applied_by(services: &[&e2e::Service]) -> f64 {
    let mut total = 0.0;
    for service in services {
        let text = e2e::metrics(service.http).await.unwrap();
        total += e2e::metric_value(
            &text,
            r#"gamemaster_health_events_consumed_total{outcome="applied"}"#,
        );
    }
    total
}

/// The owners `gamemaster shards --json` shows on `db_url`, with their shard counts.
async fn shard_owners(db_url: &str) -> serde_json::Value {
    e2e::json_output(
        "gamemaster",
        &["shards", "--json", "--postgres-url", db_url],
    )
    .await["owners"]
        .clone()
}

/// What the tests of several instances share: a migrated database with some games
/// running, a throwaway Redis of their own, and the clients to look at both.
struct Fleet {
    db: TestDb,
    client: tokio_postgres::Client,
    games: Vec<String>,
    redis: TestRedis,
    redis_url: String,
    _redis_server: ThrowawayRedis,
}

impl Fleet {
    /// `games` games registered `running` (see [`e2e::running_games`]).
    async fn new(games: usize) -> Self {
        let db = e2e::migrated("gamemaster", "GAMEMASTER_POSTGRES_URL").await;
        let client = pg_client(db.url()).await.unwrap();
        let games = e2e::running_games(&client, games).await;
        let redis_server = ThrowawayRedis::start().await.unwrap();
        let redis_url = redis_server.url();
        let redis = TestRedis::connect_to(&redis_url).await.unwrap();
        Self {
            db,
            client,
            games,
            redis,
            redis_url,
            _redis_server: redis_server,
        }
    }

    /// Deletes what the test wrote.
    async fn finish(self) {
        self.redis.cleanup().await.unwrap();
        self.db.drop_db().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_divide_the_shards_hand_them_over_on_sigterm_and_apply_each_entry_once() {
    let fleet = Fleet::new(40).await;
    let Fleet {
        db,
        client,
        games,
        redis,
        redis_url,
        ..
    } = &fleet;
    // Leases of 20 s tick every 5 s: the shards move within the test's bounds only because
    // every change is announced and acted on at once.
    let start = |id: &'static str| e2e::start_instance(db.url(), redis_url, id, "20s");
    let all_rows = |status: &'static str, health: &'static str| {
        move || async move {
            let rows = runtime_rows(client).await.unwrap();
            rows.len() == 40 && rows.values().all(|r| r.0 == status && r.1 == health)
        }
    };
    let send = |event_type: &'static str| async move {
        let mut ids = Vec::new();
        for game in games.iter() {
            ids.push(health_event(redis, game, event_type).await);
        }
        ids
    };

    // One instance alone owns every shard.
    let one = start("one").await;
    let mut sent = send("container_exited").await;
    eventually(
        "one applies the exits",
        Duration::from_secs(20),
        all_rows("engine_unreachable", "exited"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", one.process.stderr()));
    assert_eq!(shard_owners(db.url()).await, serde_json::json!({"one": 64}));

    // A second joins: the shards are divided between them, and both apply.
    let two = start("two").await;
    eventually("the shards are divided", Duration::from_secs(2), || async {
        let owners = shard_owners(db.url()).await;
        let (a, b) = (
            owners["one"].as_u64().unwrap_or(0),
            owners["two"].as_u64().unwrap_or(0),
        );
        a > 0 && b > 0 && a + b == 64
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", two.process.stderr()));
    // Each instance's /readyz names as many shards as the database says it owns.
    eventually(
        "readyz shows the division",
        Duration::from_secs(5),
        || async {
            let owners = shard_owners(db.url()).await;
            let mut shown = Vec::new();
            for (id, gm) in [("one", &one), ("two", &two)] {
                let (_, body) = http::get(gm.http, "/readyz").await.unwrap_or_default();
                let ready: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                shown.push(ready["shards"]["owned"] == owners[id]);
            }
            shown == [true, true]
        },
    )
    .await
    .unwrap();
    sent.extend(send("probe_recovered").await);
    eventually(
        "both apply the recoveries",
        Duration::from_secs(20),
        all_rows("running", "healthy"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", one.process.stderr(), two.process.stderr()));
    assert_eq!(
        applied_by(&[&one, &two]).await,
        80.0,
        "each entry applied once"
    );
    let two_metrics = e2e::metrics(two.http).await.unwrap();
    assert!(e2e::metric_value(&two_metrics, "gamemaster_shard_takeovers_total") > 0.0);

    // SIGTERM hands the second's shards back to the first at once.
    let stopped = std::time::Instant::now();
    let logs = e2e::stop_service(two).await;
    assert!(logs.contains("shards handed over"), "{logs}");
    eventually(
        "one owns every shard again",
        Duration::from_secs(5),
        || async { shard_owners(db.url()).await == serde_json::json!({"one": 64}) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", one.process.stderr()));
    let handover = stopped.elapsed();
    // The others hear of the leave at once (a notice), not at their next tick.
    assert!(
        handover < Duration::from_secs(1),
        "hand-over took {handover:?}"
    );
    sent.extend(send("probe_failed").await);
    eventually("one applies the rest", Duration::from_secs(20), || async {
        let rows = runtime_rows(client).await.unwrap();
        rows.values().all(|r| r.1 == "probe_failed")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", one.process.stderr()));

    // Each entry was published once, naming its entry, whoever applied it: a planned
    // hand-over lets a shard go only once its snapshots are out and its published mark
    // written, so its next owner republishes nothing.
    let published = entries(redis, LOBBY).await.unwrap();
    for id in &sent {
        let copies = published
            .iter()
            .filter(|(_, f)| f.get("source_entry_id") == Some(id))
            .count();
        assert_eq!(copies, 1, "snapshots of {id}");
    }
    let one_metrics = e2e::metrics(one.http).await.unwrap();
    e2e::assert_metrics(
        &one_metrics,
        &[
            "gamemaster_fenced_commits_total 0",
            "gamemaster_shards_owned 64",
        ],
    );

    // Every shard's lag behind the stream's last entry, idle shards' included (their
    // checkpoints move up once a second), comes down to about nothing.
    let args = [
        "shards",
        "--json",
        "--postgres-url",
        db.url(),
        "--redis-url",
        redis_url.as_str(),
        "--health-events-stream",
        HEALTH,
    ];
    eventually("every shard caught up", Duration::from_secs(5), || async {
        let shards = e2e::json_output("gamemaster", &args).await["shards"].clone();
        let lags: Vec<f64> = shards
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["lag_seconds"].as_f64())
            .collect();
        lags.len() == 64 && lags.iter().all(|&lag| lag <= 1.5)
    })
    .await
    .unwrap();
    // The instance says the same of its own shards: /readyz (and so `status`) and a
    // gauge per shard.
    let addr = one.http.to_string();
    let status_args = [
        "--redis-url",
        redis_url.as_str(),
        "--http-addr",
        addr.as_str(),
    ];
    eventually("readyz shows every lag", Duration::from_secs(5), || async {
        let status = e2e::status("gamemaster", &status_args).await;
        let shards = &status["instance"]["shards"];
        let lags = shards["lag_seconds"].as_object().map_or(0, |l| l.len());
        shards["owned"] == 64
            && lags == 64
            && shards["max_lag_seconds"].as_f64().is_some_and(|l| l <= 1.5)
    })
    .await
    .unwrap();
    let one_metrics = e2e::metrics(one.http).await.unwrap();
    let lag_gauges = one_metrics
        .lines()
        .filter(|l| l.starts_with("gamemaster_shard_lag_seconds{"))
        .count();
    assert_eq!(lag_gauges, 64, "{one_metrics}");

    // Another shard count on the same database is refused at start.
    let mismatch = [
        ("GAMEMASTER_POSTGRES_URL", db.url()),
        ("GAMEMASTER_REDIS_URL", redis_url.as_str()),
    ];
    e2e::assert_startup_error(
        "gamemaster",
        &["run", "--shards", "8"],
        &mismatch,
        "64 shards, not 8",
    )
    .await
    .unwrap();

    e2e::stop_service(one).await;
    fleet.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shards_of_an_instance_killed_with_sigkill_are_taken_over_within_seconds() {
    let fleet = Fleet::new(100).await;
    let Fleet {
        db,
        client,
        games,
        redis,
        redis_url,
        ..
    } = &fleet;
    let start = |id: &'static str| e2e::start_instance(db.url(), redis_url, id, "1s");
    let a = start("a").await;
    let b = start("b").await;
    let c = start("c").await;
    eventually(
        "three instances share the shards",
        Duration::from_secs(20),
        || async {
            let owners = shard_owners(db.url()).await;
            ["a", "b", "c"]
                .iter()
                .all(|m| owners[*m].as_u64().unwrap_or(0) > 0)
        },
    )
    .await
    .unwrap();
    for game in games {
        health_event(redis, game, "container_exited").await;
    }
    eventually("the exits are applied", Duration::from_secs(20), || async {
        let rows = runtime_rows(client).await.unwrap();
        rows.values().all(|r| r.1 == "exited")
    })
    .await
    .unwrap();

    // b dies without a word; its leases lapse and a and c take its shards.
    let mut b_process = b.process;
    b_process.signal("KILL").unwrap();
    let killed = std::time::Instant::now();
    let _ = b_process.wait(Duration::from_secs(5)).await;
    for game in games {
        health_event(redis, game, "probe_recovered").await;
    }
    eventually(
        "every recovery is applied",
        Duration::from_secs(15),
        || async {
            let rows = runtime_rows(client).await.unwrap();
            rows.values()
                .all(|r| (r.0.as_str(), r.1.as_str()) == ("running", "healthy"))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", a.process.stderr(), c.process.stderr()));
    let failover = killed.elapsed();
    let owners = shard_owners(db.url()).await;
    let (on_a, on_c) = (owners["a"].as_u64().unwrap(), owners["c"].as_u64().unwrap());
    assert_eq!(on_a + on_c, 64, "{owners}");
    eprintln!("SIGKILL to every recovery applied: {failover:?}");
    assert!(
        failover < Duration::from_secs(5),
        "failover took {failover:?}"
    );
    let mut takeovers = 0.0;
    for s in [&a, &c] {
        let text = e2e::metrics(s.http).await.unwrap();
        takeovers += e2e::metric_value(&text, "gamemaster_shard_takeovers_total");
    }
    assert!(takeovers > 0.0);
    e2e::stop_service(a).await;
    e2e::stop_service(c).await;
    fleet.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_paused_past_its_leases_loses_its_shards_and_no_entry_is_applied_twice() {
    let fleet = Fleet::new(100).await;
    let Fleet {
        db,
        client,
        games,
        redis,
        redis_url,
        ..
    } = &fleet;
    let a = e2e::start_instance(db.url(), redis_url, "a", "1s").await;
    let b = e2e::start_instance(db.url(), redis_url, "b", "1s").await;
    let divided = || async {
        let owners = shard_owners(db.url()).await;
        let (on_a, on_b) = (
            owners["a"].as_u64().unwrap_or(0),
            owners["b"].as_u64().unwrap_or(0),
        );
        on_a > 0 && on_b > 0 && on_a + on_b == 64
    };
    eventually(
        "two instances share the shards",
        Duration::from_secs(20),
        divided,
    )
    .await
    .unwrap();
    let all_rows = |health: &'static str| {
        move || async move {
            let rows = runtime_rows(client).await.unwrap();
            rows.values().all(|r| r.1 == health)
        }
    };
    let send = |event_type: &'static str| async move {
        for game in games.iter() {
            health_event(redis, game, event_type).await;
        }
    };
    send("container_exited").await;
    eventually(
        "the exits are applied",
        Duration::from_secs(20),
        all_rows("exited"),
    )
    .await
    .unwrap();

    // b is paused for three lease periods: a takes every shard and applies on.
    b.process.signal("STOP").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    send("probe_recovered").await;
    eventually(
        "a applies the recoveries",
        Duration::from_secs(20),
        all_rows("healthy"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", a.process.stderr()));
    assert_eq!(shard_owners(db.url()).await, serde_json::json!({"a": 64}));

    // b wakes up: whatever it still had in hand is fenced off; it rejoins and gets its
    // share back.
    b.process.signal("CONT").unwrap();
    eventually("b rejoins", Duration::from_secs(20), divided)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", b.process.stderr()));
    send("probe_failed").await;
    eventually(
        "both apply the failures",
        Duration::from_secs(20),
        all_rows("probe_failed"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", a.process.stderr(), b.process.stderr()));
    assert_eq!(
        applied_by(&[&a, &b]).await,
        300.0,
        "each entry applied once"
    );
    let b_metrics = e2e::metrics(b.http).await.unwrap();
    eprintln!(
        "fenced commits of the paused instance: {}",
        e2e::metric_value(&b_metrics, "gamemaster_fenced_commits_total")
    );
    e2e::stop_service(a).await;
    e2e::stop_service(b).await;
    fleet.finish().await;
}

/// On a local Redis Cluster, the master that serves the health stream is killed: its
/// replica takes the slot over, and the Game Master goes on applying what arrives there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_the_game_master_rides_out_the_loss_of_the_health_streams_master() {
    let db = e2e::migrated("gamemaster", "GAMEMASTER_POSTGRES_URL").await;
    let client = pg_client(db.url()).await.unwrap();
    let games = e2e::running_games(&client, 20).await;
    let mut cluster = testkit::redis::ThrowawayCluster::start().await.unwrap();
    let gm = e2e::start_instance(db.url(), &cluster.url(), "solo", "1s").await;
    // One event per game, through a client made now (after the failover too), then every
    // row must show what it says.
    let apply = |event: &'static str, shows: (&'static str, &'static str), url: String| {
        let (games, client) = (&games, &client);
        async move {
            let redis = TestRedis::connect_to(&url).await.unwrap();
            for game in games {
                e2e::health_event(&redis, game, event).await.unwrap();
            }
            eventually(
                &format!("every {event} applied"),
                Duration::from_secs(30),
                || async {
                    let rows = runtime_rows(client).await.unwrap();
                    rows.values().all(|r| (r.0.as_str(), r.1.as_str()) == shows)
                },
            )
            .await
        }
    };

    apply(
        "container_exited",
        ("engine_unreachable", "exited"),
        cluster.url(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gm.process.stderr()));
    let killed = cluster.kill_master_of(HEALTH).await.unwrap();
    apply("probe_recovered", ("running", "healthy"), cluster.url())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "master on port {killed} killed: {e}\n{}",
                gm.process.stderr()
            )
        });

    // The instance's connections carry its name on the server.
    let named: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND application_name = 'gamemaster/solo'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(named > 0, "no connection named gamemaster/solo");
    e2e::stop_service(gm).await;
    db.drop_db().await.unwrap();
}
