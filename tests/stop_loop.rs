//! The Lobby ⇄ Runtime Manager stop loop, every piece a real process: `lobby stop-game` →
//! the Lobby's outbox → `runtime:stop_jobs` → `rtmanager run` stops a real engine →
//! `runtime:job_results` → the Lobby records the answer on the game.
//!
//! A throwaway Redis keeps the fixed offset keys this test's own; each service gets a
//! fresh database on the shared PostgreSQL server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use e2e::{assert_metrics, pg_client, start_service, stop_service};
use testkit::bins::run;
use testkit::pg::TestDb;
use testkit::redis::{TestRedis, ThrowawayRedis};
use testkit::{eventually, http};

const WAIT: Duration = Duration::from_secs(30);

/// A database migrated by `<service> migrate`.
async fn migrated(service: &str, url_var: &str) -> TestDb {
    let db = TestDb::create().await.unwrap();
    let (code, stderr) = run(service, &["migrate"], &[(url_var, db.url())], WAIT)
        .await
        .unwrap();
    assert_eq!(code, 0, "{stderr}");
    db
}

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
    let rtm_db = migrated("rtmanager", "RTMANAGER_POSTGRES_URL").await;
    let lobby_db = migrated("lobby", "LOBBY_POSTGRES_URL").await;
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
    let rtm = start_service(
        "rtmanager",
        "RTMANAGER",
        &[
            ("RTMANAGER_POSTGRES_URL", rtm_db.url()),
            ("RTMANAGER_REDIS_URL", &redis_url),
            ("RTMANAGER_STOP_GRACE", "2s"),
        ],
    )
    .await;
    let lobby = start_service(
        "lobby",
        "LOBBY",
        &[
            ("LOBBY_POSTGRES_URL", lobby_db.url()),
            ("LOBBY_REDIS_URL", &redis_url),
        ],
    )
    .await;
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
    stop_service(lobby).await;
    stop_service(rtm).await;
    redis.cleanup().await.unwrap();
    rtm_db.drop_db().await.unwrap();
    lobby_db.drop_db().await.unwrap();
}
