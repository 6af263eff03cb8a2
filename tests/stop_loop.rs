//! The Lobby ⇄ Runtime Manager stop loop, every piece a real process: `lobby stop-game` →
//! the Lobby's outbox → `runtime:stop_jobs` → `rtmanager run` stops a real engine →
//! `runtime:job_results` → the Lobby records the answer on the game.
//!
//! A throwaway Redis keeps the fixed offset keys this test's own; each service gets a
//! fresh database on the shared PostgreSQL server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use e2e::{assert_metrics, pg_client, start_service_on, stop_service};
use testkit::bins::run;
use testkit::redis::{TestRedis, ThrowawayRedis};
use testkit::{eventually, http};

const WAIT: Duration = Duration::from_secs(30);

/// `(stop_outcome, stop_error_code, stopped_at is set)` of a Lobby game.
type LastStop = Option<(String, String, bool)>;

async fn last_stop(lobby_db: &tokio_postgres::Client, game: &str) -> LastStop {
    let row = lobby_db
        .query_one(
            "SELECT stop_outcome, stop_error_code, stopped_at IS NOT NULL \
             FROM games WHERE game_id = $1",
            &[&game],
        )
        .await
        .unwrap();
    let outcome: Option<String> = row.get(0);
    outcome.map(|o| (o, row.get(1), row.get(2)))
}

/// `lobby stop-game <game>` must succeed.
async fn stop_game(lobby_url: &str, game: &str) {
    let env = [("LOBBY_POSTGRES_URL", lobby_url)];
    let (code, stderr) = run("lobby", &["stop-game", game], &env, WAIT)
        .await
        .unwrap();
    assert_eq!(code, 0, "{stderr}");
}

/// Waits until the game's last stop reads `expected`.
async fn wait_for_stop(pg: &tokio_postgres::Client, game: &str, expected: &LastStop, logs: &str) {
    let found = eventually(&format!("{game}'s stop is recorded"), WAIT, || async {
        last_stop(pg, game).await == *expected
    })
    .await;
    if let Err(e) = found {
        panic!("{e}: {:?}\n{logs}", last_stop(pg, game).await);
    }
}

async fn engine_answers(endpoint: &str) -> bool {
    let Some(addr) = endpoint.strip_prefix("http://") else {
        return false;
    };
    let addr: SocketAddr = addr.parse().unwrap();
    http::get(addr, "/healthz").await.is_ok()
}

/// The whole loop: a real engine stopped, a replayed stop answered `replay_no_op`, a game
/// without a runtime answered `not_found`, a result that is not one skipped; each answer
/// recorded on its game, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_asked_in_the_lobby_stop_real_engines_and_their_answers_come_back() {
    let redis_server = ThrowawayRedis::start().await.unwrap();
    let redis_url = redis_server.url();
    let redis = TestRedis::connect_to(&redis_url).await.unwrap();
    let rtm_db = e2e::migrated("rtmanager", "RTMANAGER_POSTGRES_URL").await;
    let lobby_db = e2e::migrated("lobby", "LOBBY_POSTGRES_URL").await;
    let seed = ["seed-game", "g1", "g2"];
    let (code, stderr) = run(
        "lobby",
        &seed,
        &[("LOBBY_POSTGRES_URL", lobby_db.url())],
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{stderr}");
    let rtm = start_service_on(
        "rtmanager",
        "RTMANAGER",
        rtm_db.url(),
        &redis_url,
        &[("RTMANAGER_STOP_GRACE", "2s")],
    )
    .await;
    let lobby = start_service_on("lobby", "LOBBY", lobby_db.url(), &redis_url, &[]).await;
    let rtm_addr = rtm.http.to_string();
    let args = ["start-game", "g1", "--http-addr", rtm_addr.as_str()];
    let (code, stderr) = run("rtmanager", &args, &[], WAIT).await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    let rtm_pg = pg_client(rtm_db.url()).await.unwrap();
    let endpoint: String = rtm_pg
        .query_one(
            "SELECT engine_endpoint FROM runtimes WHERE game_id = 'g1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(engine_answers(&endpoint).await, "g1's engine runs");

    let pg = pg_client(lobby_db.url()).await.unwrap();
    let logs = || format!("{}\n{}", lobby.process.stderr(), rtm.process.stderr());
    stop_game(lobby_db.url(), "g1").await;
    let stopped = Some(("success".to_owned(), String::new(), true));
    wait_for_stop(&pg, "g1", &stopped, &logs()).await;
    assert!(!engine_answers(&endpoint).await, "g1's engine is gone");

    // Asked again: the Runtime Manager finds it stopped, and says so.
    stop_game(lobby_db.url(), "g1").await;
    let replayed = Some(("success".to_owned(), "replay_no_op".to_owned(), true));
    wait_for_stop(&pg, "g1", &replayed, &logs()).await;
    // A game that never had a runtime.
    stop_game(lobby_db.url(), "g2").await;
    let not_found = Some(("failure".to_owned(), "not_found".to_owned(), false));
    wait_for_stop(&pg, "g2", &not_found, &logs()).await;
    // An entry that is not a job result is skipped, and the next one still lands.
    let results = contracts::job_results::DEFAULT_STREAM;
    redis.xadd(results, &[("game_id", "g1")]).await.unwrap();
    stop_game(lobby_db.url(), "g1").await;
    eventually("the malformed result is counted", WAIT, || async {
        e2e::metrics(lobby.http).await.is_ok_and(|m| {
            m.contains(r#"lobby_job_results_consumed_total{outcome="already_stopped"} 2"#)
        })
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));

    let metrics = e2e::metrics(lobby.http).await.unwrap();
    assert_metrics(
        &metrics,
        &[
            r#"lobby_job_results_consumed_total{outcome="stopped"} 1"#,
            r#"lobby_job_results_consumed_total{outcome="failed"} 1"#,
            r#"lobby_job_results_consumed_total{outcome="malformed"} 1"#,
            r#"lobby_stream_consumer_entries_total{consumer="job_results"} 5"#,
        ],
    );
    let rtm_metrics = e2e::metrics(rtm.http).await.unwrap();
    assert_metrics(
        &rtm_metrics,
        &[
            r#"rtmanager_stop_jobs_consumed_total{outcome="stopped"} 1"#,
            r#"rtmanager_stop_jobs_consumed_total{outcome="replay_no_op"} 2"#,
            r#"rtmanager_stop_jobs_consumed_total{outcome="not_found"} 1"#,
        ],
    );
    let lobby_addr = lobby.http.to_string();
    let args = [
        "--redis-url",
        redis_url.as_str(),
        "--http-addr",
        lobby_addr.as_str(),
    ];
    let status = e2e::status("lobby", &args).await;
    let labels: Vec<&str> = status["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["gm_lobby_events", "job_results"], "{status}");
    assert_eq!(
        status["consumers"][1]["dead_letters"], 1,
        "the malformed result: {status}"
    );
    assert_eq!(status["consumers"][1]["stream_length"], 5, "{status}");
    assert_eq!(status["instance"]["state"], "ready", "{status}");
    stop_service(lobby).await;
    stop_service(rtm).await;
    redis.cleanup().await.unwrap();
    rtm_db.drop_db().await.unwrap();
    lobby_db.drop_db().await.unwrap();
}

/// `galaxy-live`, the demo's real-engine half, on a few games: all three services running,
/// every disturbance and the whole stop loop checked by the tool's own verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn galaxy_live_takes_real_engines_round_the_whole_loop() {
    let redis_server = ThrowawayRedis::start().await.unwrap();
    galaxy_live_round_the_loop(&redis_server.url()).await;
}

/// The same on a local Redis Cluster (three masters, three replicas): every service reads,
/// writes, runs its scripts and keeps its offsets there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn galaxy_live_takes_real_engines_round_the_whole_loop_on_a_redis_cluster() {
    let cluster = testkit::redis::ThrowawayCluster::start().await.unwrap();
    galaxy_live_round_the_loop(&cluster.url()).await;
}

/// Three services on `redis_url`, then `galaxy-live --games 4`, which must pass.
async fn galaxy_live_round_the_loop(redis_url: &str) {
    let redis_url = redis_url.to_owned();
    let gm_db = e2e::migrated("gamemaster", "GAMEMASTER_POSTGRES_URL").await;
    let rtm_db = e2e::migrated("rtmanager", "RTMANAGER_POSTGRES_URL").await;
    let lobby_db = e2e::migrated("lobby", "LOBBY_POSTGRES_URL").await;
    let gm = start_service_on("gamemaster", "GAMEMASTER", gm_db.url(), &redis_url, &[]).await;
    let lobby = start_service_on("lobby", "LOBBY", lobby_db.url(), &redis_url, &[]).await;
    let rtm = start_service_on(
        "rtmanager",
        "RTMANAGER",
        rtm_db.url(),
        &redis_url,
        &[
            ("RTMANAGER_STOP_GRACE", "2s"),
            ("RTMANAGER_ENGINE_MEMORY_LIMIT_MIB", "64"),
        ],
    )
    .await;
    let rtm_addr = rtm.http.to_string();
    let env = [
        ("GALAXY_LIVE_POSTGRES_URL", gm_db.url()),
        ("GALAXY_LIVE_LOBBY_POSTGRES_URL", lobby_db.url()),
        ("GALAXY_LIVE_RTMANAGER_POSTGRES_URL", rtm_db.url()),
        ("GALAXY_LIVE_REDIS_URL", redis_url.as_str()),
        ("GALAXY_LIVE_RTMANAGER_HTTP_ADDR", rtm_addr.as_str()),
        ("GALAXY_LIVE_GAMES", "4"),
        ("GALAXY_LIVE_ENGINE_MEMORY_LIMIT_MIB", "64"),
        ("GALAXY_LIVE_TIMEOUT", "20s"),
    ];
    let mut live = testkit::bins::Process::spawn("galaxy-live", &[], &env).unwrap();
    let code = live.wait(Duration::from_secs(120)).await.unwrap();
    let report = live.stdout();
    let logs = format!("{}\n{}", rtm.process.stderr(), lobby.process.stderr());
    assert_eq!(code, 0, "{report}\n{}\n{logs}", live.stderr());
    for expected in [
        "✔ kill -9 on",
        "container_exited published, Game Master and Lobby show engine_unreachable/exited",
        "container_oom published, Game Master and Lobby show engine_unreachable/oom",
        "Game Master and Lobby show running/probe_failed",
        "probe_recovered published, Game Master and Lobby show running/healthy",
        "✔ finished games: 4, 4 with their stop answered success",
        "✔ engine processes gone: 4 of 4",
        "✔ stop jobs: 4, job results: 4, 4 under their job's id",
        "answered success replay_no_op",
        "verdict: every real engine's story went round the loop ✔",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
    stop_service(lobby).await;
    stop_service(rtm).await;
    stop_service(gm).await;
    for db in [gm_db, rtm_db, lobby_db] {
        db.drop_db().await.unwrap();
    }
}

/// A bad setting or an unreachable server is one line on stderr and exit 2, with no
/// password in it.
#[tokio::test]
async fn galaxy_live_bad_settings_are_one_line_and_exit_2() {
    e2e::assert_startup_error("galaxy-live", &["--games", "1"], &[], "--games")
        .await
        .unwrap();
    let unreachable = [(
        "GALAXY_LIVE_POSTGRES_URL",
        "postgres://postgres:secret@127.0.0.1:1/gamemaster",
    )];
    e2e::assert_startup_error("galaxy-live", &[], &unreachable, "Game Master's PostgreSQL")
        .await
        .unwrap();
}

/// `rtmanager status` before the consumer ever stored an offset, with no instance
/// running: no position, the lag from the first entry to the last, and "not running".
#[tokio::test]
async fn status_before_any_offset_counts_the_lag_from_the_first_entry() {
    let redis_server = ThrowawayRedis::start().await.unwrap();
    let redis = TestRedis::connect_to(&redis_server.url()).await.unwrap();
    let jobs = contracts::stop_jobs::DEFAULT_STREAM;
    redis
        .xadd_with_id(jobs, "1000-0", &[("game_id", "g")])
        .await
        .unwrap();
    redis
        .xadd_with_id(jobs, "3500-0", &[("game_id", "g")])
        .await
        .unwrap();
    let url = redis_server.url();
    let addr = format!("127.0.0.1:{}", testkit::free_port());
    let status = e2e::status("rtmanager", &["--redis-url", &url, "--http-addr", &addr]).await;
    let consumer = &status["consumers"][0];
    assert_eq!(consumer["label"], "stopjobs", "{status}");
    assert!(consumer["position"].is_null(), "{status}");
    assert_eq!(consumer["first_entry"], "1000-0", "{status}");
    assert_eq!(consumer["lag_seconds"], 2.5, "{status}");
    assert_eq!(consumer["dead_letters"], 0, "{status}");
    assert_eq!(status["instance"]["state"], "not running", "{status}");
}
