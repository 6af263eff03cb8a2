//! The real `rtmanager` binary against real servers and real processes: a throwaway Redis
//! (so the fixed offset key `rtmanager:stream_offsets:stopjobs` belongs to this test
//! alone), a database of its own, and engines that are OS processes it must stop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::Duration;

use contracts::{JobOutcome, JobResult, StopJob, StopReason};
use e2e::{assert_metrics, pg_client};
use fred::interfaces::KeysInterface;
use testkit::bins::{Process, run};
use testkit::pg::TestDb;
use testkit::redis::{TestRedis, ThrowawayRedis};
use testkit::{eventually, free_port, http};

const OFFSET_KEY: &str = "rtmanager:stream_offsets:stopjobs";
const JOBS: &str = contracts::stop_jobs::DEFAULT_STREAM;
const RESULTS: &str = contracts::job_results::DEFAULT_STREAM;
const WAIT: Duration = Duration::from_secs(30);

async fn start_rtmanager(db_url: &str, redis_url: &str) -> (Process, SocketAddr) {
    start_rtmanager_with(db_url, redis_url, &[]).await
}

async fn start_rtmanager_with(
    db_url: &str,
    redis_url: &str,
    extra: &[(&str, &str)],
) -> (Process, SocketAddr) {
    let mut env = vec![
        ("RTMANAGER_POSTGRES_URL", db_url),
        ("RTMANAGER_REDIS_URL", redis_url),
        ("RTMANAGER_STOP_GRACE", "2s"),
        ("RTMANAGER_LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
    ];
    env.extend_from_slice(extra);
    let service = e2e::start_service("rtmanager", "RTMANAGER", &env).await;
    (service.process, service.http)
}

/// An engine: a real process that exits on SIGTERM, and its container id.
fn engine() -> (Child, String) {
    let child = Command::new("sleep").arg("300").spawn().unwrap();
    let id = rtm_adapters::container_id(child.id()).unwrap();
    (child, id)
}

async fn stop_job(redis: &TestRedis, game: &str) -> String {
    let job = StopJob::new(game, StopReason::GameFinished, Some(1_700_000_000_000)).unwrap();
    redis.xadd(JOBS, &job.wire_fields()).await.unwrap()
}

async fn wait_for_offset(redis: &TestRedis, id: &str, process: &Process) {
    eventually("offset passes every job", WAIT, || async {
        redis
            .client()
            .get::<Option<String>, _>(OFFSET_KEY)
            .await
            .ok()
            .flatten()
            .as_deref()
            == Some(id)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", process.stderr()));
}

/// Every result on the stream, with its id, decoded by the contract.
async fn results(redis: &TestRedis) -> Vec<(String, JobResult)> {
    redis
        .xrange(RESULTS)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, pairs)| (id, JobResult::decode(&pairs).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_jobs_stop_real_engines_and_each_job_is_answered_once_across_a_restart() {
    let db = TestDb::create().await.unwrap();
    let env = [("RTMANAGER_POSTGRES_URL", db.url())];
    for _ in 0..2 {
        let (code, stderr) = run("rtmanager", &["migrate"], &env, WAIT).await.unwrap();
        assert_eq!(code, 0, "{stderr}");
    }
    let (mut live, live_id) = engine();
    let pg = pg_client(db.url()).await.unwrap();
    pg.execute(
        "INSERT INTO runtimes (game_id, status, container_id, engine_endpoint) \
         VALUES ('live', 'running', $1, 'http://127.0.0.1:9001')",
        &[&live_id],
    )
    .await
    .unwrap();
    pg.batch_execute(
        "INSERT INTO runtimes (game_id, status, container_id, engine_endpoint, stopped_at) \
         VALUES ('done', 'stopped', '1.1', 'http://127.0.0.1:9002', now())",
    )
    .await
    .unwrap();

    let redis_server = ThrowawayRedis::start().await.unwrap();
    let redis = TestRedis::connect_to(&redis_server.url()).await.unwrap();
    let jobs = [
        stop_job(&redis, "live").await,
        stop_job(&redis, "done").await,
        stop_job(&redis, "ghost").await,
        redis
            .xadd(JOBS, &[("game_id", "live"), ("reason", "because")])
            .await
            .unwrap(),
        stop_job(&redis, "live").await,
    ];
    let (mut rtm, http_addr) = start_rtmanager(db.url(), &redis_server.url()).await;
    wait_for_offset(&redis, &jobs[4], &rtm).await;

    // The engine was asked to stop and did; the registry says so.
    let status = live.wait().unwrap();
    assert!(status.code().is_none(), "ended by SIGTERM: {status:?}");
    let row = pg
        .query_one(
            "SELECT status, stopped_at IS NOT NULL FROM runtimes WHERE game_id = 'live'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, bool>(1)),
        ("stopped".into(), true)
    );

    // One result per decodable job, each under its job's id.
    let answered = results(&redis).await;
    let ids: Vec<&str> = answered.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        [&jobs[0], &jobs[1], &jobs[2], &jobs[4]].map(String::as_str)
    );
    let stopped = &answered[0].1;
    assert_eq!(
        (stopped.outcome, stopped.error_code.as_str()),
        (JobOutcome::Success, "")
    );
    assert_eq!(stopped.container_id, live_id);
    assert_eq!(stopped.engine_endpoint, "http://127.0.0.1:9001");
    assert!(answered[1].1.is_replay_no_op());
    assert_eq!(
        (answered[2].1.outcome, answered[2].1.error_code.as_str()),
        (JobOutcome::Failure, "not_found")
    );
    assert!(answered[3].1.is_replay_no_op(), "the replayed job");
    let metrics = e2e::metrics(http_addr).await.unwrap();
    assert_metrics(
        &metrics,
        &[
            r#"rtmanager_stop_jobs_consumed_total{outcome="stopped"} 1"#,
            r#"rtmanager_stop_jobs_consumed_total{outcome="replay_no_op"} 2"#,
            r#"rtmanager_stop_jobs_consumed_total{outcome="not_found"} 1"#,
            r#"rtmanager_stop_jobs_consumed_total{outcome="malformed"} 1"#,
            r#"rtmanager_stream_consumer_dead_letters_total{consumer="stopjobs"} 1"#,
        ],
    );
    let letters = e2e::dead_letters("rtmanager", "stopjobs", &redis, &redis_server.url()).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (
            letters[0].source_stream.as_str(),
            letters[0].source_id.as_str()
        ),
        (JOBS, jobs[3].as_str())
    );
    assert!(
        letters[0].reason.contains("reason"),
        "{}",
        letters[0].reason
    );
    rtm.terminate().unwrap();
    assert_eq!(rtm.wait(Duration::from_secs(15)).await.unwrap(), 0);
    let logs = rtm.stderr();
    assert!(
        logs.lines().any(
            |l| l.contains(&format!(r#""stream_entry_id":"{}""#, jobs[3])) && l.contains("reason")
        ),
        "the poison job is logged with its id:\n{logs}"
    );

    // As if it had crashed before saving its offset: every job is handed over again, and
    // answered from the operation log; nothing new lands on the result stream.
    let _: () = redis.client().del(OFFSET_KEY).await.unwrap();
    let (mut rtm, http_addr) = start_rtmanager(db.url(), &redis_server.url()).await;
    wait_for_offset(&redis, &jobs[4], &rtm).await;
    assert_eq!(results(&redis).await, answered);
    let metrics = e2e::metrics(http_addr).await.unwrap();
    assert_metrics(
        &metrics,
        &[r#"rtmanager_stop_jobs_consumed_total{outcome="recorded"} 4"#],
    );
    let logged: i64 = pg
        .query_one(
            "SELECT count(*) FROM operation_log WHERE operation = 'stop'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, 4);
    rtm.terminate().unwrap();
    assert_eq!(rtm.wait(Duration::from_secs(15)).await.unwrap(), 0);
    redis.cleanup().await.unwrap();
    db.drop_db().await.unwrap();
}

#[tokio::test]
async fn bad_settings_unreachable_servers_and_a_missing_schema_are_one_line_and_exit_2() {
    let closed = format!("127.0.0.1:{}", free_port());
    let redis_closed = format!("redis://{closed}");
    let pg_closed = format!("postgres://postgres:secret@{closed}/rtm");
    let empty = TestDb::create().await.unwrap();
    let redis_url = testkit::redis::redis_url();
    let cases: Vec<e2e::StartupCase> = vec![
        (vec!["run", "--stop-grace", "soon"], vec![], "stop-grace"),
        (
            vec!["run", "--stop-jobs-stream", "has space"],
            vec![],
            "stream",
        ),
        (
            vec!["run"],
            vec![("RTMANAGER_POSTGRES_URL", pg_closed.as_str())],
            "PostgreSQL",
        ),
        (
            vec!["run"],
            vec![
                ("RTMANAGER_POSTGRES_URL", empty.url()),
                ("RTMANAGER_REDIS_URL", redis_closed.as_str()),
            ],
            "Redis",
        ),
        (
            vec!["run"],
            vec![
                ("RTMANAGER_POSTGRES_URL", empty.url()),
                ("RTMANAGER_REDIS_URL", redis_url.as_str()),
            ],
            "rtmanager migrate",
        ),
    ];
    for (args, env, mentions) in cases {
        e2e::assert_startup_error("rtmanager", &args, &env, mentions)
            .await
            .unwrap();
    }
    empty.drop_db().await.unwrap();
}

#[test]
fn run_help_lists_every_setting_with_its_environment_variable() {
    e2e::assert_help_lists(
        "rtmanager",
        &[
            "RTMANAGER_REDIS_URL",
            "RTMANAGER_POSTGRES_URL",
            "RTMANAGER_STOP_JOBS_STREAM",
            "RTMANAGER_JOB_RESULTS_STREAM",
            "RTMANAGER_STOP_GRACE",
            "RTMANAGER_HTTP_ADDR",
            "runtime:stop_jobs",
            "runtime:job_results",
            "127.0.0.1:8082",
        ],
    )
    .unwrap();
}

/// `(container_id, engine_endpoint)` of the game's runtime, when it is `running`.
async fn running(pg: &tokio_postgres::Client, game: &str) -> Option<(String, String)> {
    pg.query_opt(
        "SELECT container_id, engine_endpoint FROM runtimes \
         WHERE game_id = $1 AND status = 'running'",
        &[&game],
    )
    .await
    .unwrap()
    .map(|row| (row.get(0), row.get(1)))
}

/// A migrated database of its own (and a client on it), and a throwaway Redis.
async fn migrated_with_redis() -> (TestDb, tokio_postgres::Client, ThrowawayRedis, TestRedis) {
    let db = e2e::migrated("rtmanager", "RTMANAGER_POSTGRES_URL").await;
    let pg = pg_client(db.url()).await.unwrap();
    let redis_server = ThrowawayRedis::start().await.unwrap();
    let redis = TestRedis::connect_to(&redis_server.url()).await.unwrap();
    (db, pg, redis_server, redis)
}

/// The engine's probe answer, `None` when nothing answers on its endpoint.
async fn probe(endpoint: &str) -> Option<(u16, String)> {
    let addr: SocketAddr = endpoint.strip_prefix("http://")?.parse().ok()?;
    http::get(addr, "/healthz").await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_game_runs_real_engines_that_outlive_a_kill_9_and_stop_jobs_stop() {
    let (db, pg, redis_server, redis) = migrated_with_redis().await;
    let (mut rtm, http_addr) = start_rtmanager(db.url(), &redis_server.url()).await;

    let addr = http_addr.to_string();
    for _ in 0..2 {
        // The second time, both run already: harmless.
        let args = ["start-game", "g1", "g/2", "--http-addr", addr.as_str()];
        let (code, stderr) = run("rtmanager", &args, &[], WAIT).await.unwrap();
        assert_eq!(code, 0, "{stderr}\n{}", rtm.stderr());
    }
    let (g1_container, g1_endpoint) = running(&pg, "g1").await.expect("g1 runs");
    let (_, g2_endpoint) = running(&pg, "g/2").await.expect("g/2 runs");
    assert_eq!(probe(&g1_endpoint).await, Some((200, "ok g1\n".to_owned())));
    assert_eq!(
        probe(&g2_endpoint).await,
        Some((200, "ok g/2\n".to_owned()))
    );
    let starts: i64 = pg
        .query_one(
            "SELECT count(*) FROM operation_log WHERE operation = 'start'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(starts, 2, "a second start-game starts nothing");

    // A stop job stops g1's engine; g/2's keeps running through a restart.
    let job = stop_job(&redis, "g1").await;
    wait_for_offset(&redis, &job, &rtm).await;
    let answered = results(&redis).await;
    assert_eq!(answered[0].1.container_id, g1_container);
    assert_eq!(probe(&g1_endpoint).await, None, "g1's engine is gone");
    // kill -9: no drain, nothing saved on the way out; g/2's engine keeps running.
    let pid = rtm.pid().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success()
    );
    let _ = rtm.wait(Duration::from_secs(15)).await;
    assert_eq!(probe(&g2_endpoint).await.map(|(code, _)| code), Some(200));

    let (mut rtm, _) = start_rtmanager(db.url(), &redis_server.url()).await;
    // Re-adopted: a few looks later, nothing was said of g/2 but its start.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let g2_events: Vec<String> = health_events(&redis)
        .await
        .into_iter()
        .filter(|(game, _)| game == "g/2")
        .map(|(_, event)| event)
        .collect();
    assert_eq!(
        g2_events,
        ["container_started"],
        "no false alarm after kill -9"
    );
    let job = stop_job(&redis, "g/2").await;
    wait_for_offset(&redis, &job, &rtm).await;
    assert_eq!(results(&redis).await[1].1.outcome, JobOutcome::Success);
    eventually("g/2's engine is gone", WAIT, || async {
        probe(&g2_endpoint).await.is_none()
    })
    .await
    .unwrap();
    rtm.terminate().unwrap();
    assert_eq!(rtm.wait(Duration::from_secs(15)).await.unwrap(), 0);
    redis.cleanup().await.unwrap();
    db.drop_db().await.unwrap();
}

#[tokio::test]
async fn the_engine_reports_its_address_answers_its_probe_holds_memory_and_exits_0_on_sigterm() {
    let mut engine = Process::spawn("galaxy-engine", &["--game-id", "g-9"], &[]).unwrap();
    let reported = || {
        let out = engine.stdout();
        out.lines()
            .next()
            .and_then(|l| l.strip_prefix("listening "))
            .map(str::to_owned)
    };
    eventually("the engine reports its address", WAIT, || async {
        reported().is_some()
    })
    .await
    .unwrap();
    let address = reported().unwrap();
    let addr: SocketAddr = address.parse().unwrap();
    assert_eq!(
        http::get(addr, "/healthz").await.unwrap(),
        (200, "ok g-9\n".into())
    );
    let held = service_kit::http::request(addr, "POST", "/allocate/8", WAIT)
        .await
        .unwrap();
    assert_eq!(held, (200, "holding 8 MiB\n".into()));
    engine.terminate().unwrap();
    assert_eq!(engine.wait(Duration::from_secs(10)).await.unwrap(), 0);

    for args in [
        &[][..],
        &["--game-id", " "][..],
        &["--game-id", "g", "--listen", "nowhere"][..],
    ] {
        let (code, stderr) = run("galaxy-engine", args, &[], WAIT).await.unwrap();
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
}

/// Every `runtime:health_events` entry's (game, event type), in stream order.
async fn health_events(redis: &TestRedis) -> Vec<(String, String)> {
    redis
        .xrange(contracts::health_events::DEFAULT_STREAM)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, pairs)| {
            let event = contracts::health_events::decode(&pairs).unwrap();
            (
                event.game_id.as_str().to_owned(),
                event.event_type.as_str().to_owned(),
            )
        })
        .collect()
}

/// Sends `signal` to the engine process behind `container_id` (`<pid>.<start>`).
fn signal(container_id: &str, signal: &str) {
    let pid = container_id.split('.').next().unwrap();
    let status = Command::new("kill").args([signal, pid]).status().unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_real_disturbance_is_published_and_a_restart_re_adopts_without_false_alarms() {
    let (db, pg, redis_server, redis) = migrated_with_redis().await;
    let quick = [
        ("RTMANAGER_SUPERVISE_INTERVAL", "100ms"),
        ("RTMANAGER_ENGINE_MEMORY_LIMIT_MIB", "64"),
    ];
    let (mut rtm, http_addr) = start_rtmanager_with(db.url(), &redis_server.url(), &quick).await;
    let addr = http_addr.to_string();
    let games = [
        "killed",
        "paused",
        "greedy",
        "stopped",
        "vanishing",
        "steady",
    ];
    let mut args = vec!["start-game"];
    args.extend(games);
    args.extend(["--http-addr", addr.as_str()]);
    let (code, stderr) = run("rtmanager", &args, &[], WAIT).await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    let mut engines = std::collections::BTreeMap::new();
    for game in games {
        engines.insert(game, running(&pg, game).await.expect("started"));
    }

    signal(&engines["killed"].0, "-KILL");
    signal(&engines["paused"].0, "-STOP");
    let greedy: SocketAddr = engines["greedy"]
        .1
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    // The engine may be killed for it before it answers: either way, it went over.
    let _ = service_kit::http::request(greedy, "POST", "/allocate/100", WAIT).await;
    let job = stop_job(&redis, "stopped").await;
    wait_for_offset(&redis, &job, &rtm).await;
    let seen = |game: &'static str, event: &'static str| {
        let redis = &redis;
        async move {
            health_events(redis)
                .await
                .contains(&(game.to_owned(), event.to_owned()))
        }
    };
    for (game, event) in [
        ("killed", "container_exited"),
        ("paused", "inspect_unhealthy"),
        ("paused", "probe_failed"),
        ("greedy", "container_oom"),
    ] {
        eventually(&format!("{game}: {event}"), WAIT, || seen(game, event))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", rtm.stderr()));
    }
    signal(&engines["paused"].0, "-CONT");
    eventually("paused: probe_recovered", WAIT, || {
        seen("paused", "probe_recovered")
    })
    .await
    .unwrap();

    // Down: one engine goes while nobody watches; the restarted Runtime Manager finds it
    // missing, and says nothing of the engines still running.
    rtm.terminate().unwrap();
    assert_eq!(rtm.wait(Duration::from_secs(15)).await.unwrap(), 0);
    signal(&engines["vanishing"].0, "-KILL");
    let before_restart = health_events(&redis).await.len();
    let (mut rtm, _) = start_rtmanager_with(db.url(), &redis_server.url(), &quick).await;
    eventually("vanishing: container_disappeared", WAIT, || {
        seen("vanishing", "container_disappeared")
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after: Vec<(String, String)> = health_events(&redis).await[before_restart..].to_vec();
    assert_eq!(
        after,
        [("vanishing".to_owned(), "container_disappeared".to_owned())],
        "a restart publishes only what changed"
    );

    let events = health_events(&redis).await;
    for game in games {
        assert!(
            events.contains(&(game.to_owned(), "container_started".to_owned())),
            "{game}"
        );
    }
    let stopped_game_events: Vec<&String> = events
        .iter()
        .filter(|(g, _)| g == "stopped")
        .map(|(_, e)| e)
        .collect();
    assert_eq!(
        stopped_game_events,
        ["container_started"],
        "a stopped engine publishes no exit"
    );
    let snapshot: String = pg
        .query_one(
            "SELECT status FROM health_snapshots WHERE game_id = 'greedy'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(snapshot, "oom");

    // Leave nothing running.
    for game in ["paused", "steady"] {
        let job = stop_job(&redis, game).await;
        wait_for_offset(&redis, &job, &rtm).await;
    }
    rtm.terminate().unwrap();
    assert_eq!(rtm.wait(Duration::from_secs(15)).await.unwrap(), 0);
    redis.cleanup().await.unwrap();
    db.drop_db().await.unwrap();
}

/// PostgreSQL goes away mid-stream: nothing is answered while it is down, readiness says
/// why, and once it is back every job is answered, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_mid_stream_loses_nothing_and_answers_nothing_twice() {
    let pg_server = testkit::pg::ThrowawayPostgres::start().await.unwrap();
    let admin = pg_client(&pg_server.admin_url()).await.unwrap();
    admin.batch_execute("CREATE DATABASE rtm").await.unwrap();
    let db_url = pg_server.url("rtm");
    let env = [("RTMANAGER_POSTGRES_URL", db_url.as_str())];
    let (code, stderr) = run("rtmanager", &["migrate"], &env, WAIT).await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    let redis_server = ThrowawayRedis::start().await.unwrap();
    let redis = TestRedis::connect_to(&redis_server.url()).await.unwrap();
    let quick = [("RTMANAGER_POSTGRES_STATEMENT_TIMEOUT", "2s")];
    let (mut rtm, http_addr) = start_rtmanager_with(&db_url, &redis_server.url(), &quick).await;
    let before = stop_job(&redis, "a").await;
    wait_for_offset(&redis, &before, &rtm).await;

    pg_server.stop().await.unwrap();
    let during = [stop_job(&redis, "b").await, stop_job(&redis, "c").await];
    eventually("readiness fails while PostgreSQL is down", WAIT, || async {
        matches!(http::get(http_addr, "/readyz").await, Ok((503, _)))
    })
    .await
    .unwrap();
    assert_eq!(
        results(&redis).await.len(),
        1,
        "nothing answered while down"
    );
    pg_server.start_again().await.unwrap();
    wait_for_offset(&redis, &during[1], &rtm).await;

    let answered = results(&redis).await;
    let ids: Vec<&str> = answered.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        [before.as_str(), during[0].as_str(), during[1].as_str()]
    );
    assert!(answered.iter().all(|(_, r)| r.error_code == "not_found"));
    rtm.terminate().unwrap();
    assert_eq!(rtm.wait(Duration::from_secs(15)).await.unwrap(), 0);
    redis.cleanup().await.unwrap();
}
