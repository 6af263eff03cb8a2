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
    let http_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let addr_text = http_addr.to_string();
    let process = Process::spawn(
        "rtmanager",
        &["run"],
        &[
            ("RTMANAGER_POSTGRES_URL", db_url),
            ("RTMANAGER_REDIS_URL", redis_url),
            ("RTMANAGER_HTTP_ADDR", &addr_text),
            ("RTMANAGER_READ_BLOCK", "200ms"),
            ("RTMANAGER_STOP_GRACE", "2s"),
            ("RTMANAGER_LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
        ],
    )
    .unwrap();
    eventually("rtmanager ready", WAIT, || async {
        matches!(http::get(http_addr, "/readyz").await, Ok((200, _)))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", process.stderr()));
    (process, http_addr)
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
        ],
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
