//! The whole path, every piece a real process on real servers: `galaxy-sim` (the Runtime
//! Manager's publisher, and the Game Master's other flows through its own publisher) →
//! `runtime:health_events` → `gamemaster run` → `gm:lobby_events` → `lobby run`.
//!
//! A short run must converge in both services: the simulator's own verdict covers the
//! Game Master's records, the Lobby's snapshots, its statuses and the careers, and this
//! test checks the same things again straight from the two databases, without the model.
//! Then the Lobby's offset is reset and the whole stream replayed, twice: games, careers
//! and evaluation guards must not move, and the Lobby's counters must show the replays.
//!
//! A throwaway Redis keeps the fixed offset keys this test's own; each service gets a
//! fresh database on the shared PostgreSQL server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Output;
use std::time::Duration;

use e2e::{Service, assert_metrics, entries, gm_records, pg_client};
use fred::interfaces::KeysInterface;
use testkit::bins::{binary, run};
use testkit::pg::TestDb;
use testkit::redis::{TestRedis, ThrowawayRedis};
use testkit::{eventually, unique_name};

const LOBBY_OFFSET: &str = "lobby:stream_offsets:gm_lobby_events";
const LOBBY_STREAM: &str = "gm:lobby_events";
const WAIT: Duration = Duration::from_secs(30);
const GAMES: usize = 30;
/// Games the simulator finishes once publishing stops (`--finish-games`), so the run has
/// careers whatever the scripts did in three seconds.
const FINISHED_AT_END: i64 = 3;

/// A Lobby game: `(status, runtime_status, engine_health_summary, current_turn,
/// finished_at)`.
type LobbyGame = (String, String, String, i64, Option<String>);
/// A career: `(games_finished, best_planets, best_population, most_ships_built)`.
type Career = (i64, i64, i64, i64);

/// Every Lobby game, without `updated_at` (a replayed snapshot of the same millisecond is
/// written again, with the same values).
async fn lobby_games(db: &tokio_postgres::Client) -> BTreeMap<String, LobbyGame> {
    db.query(
        "SELECT game_id, status, runtime_status, engine_health_summary, current_turn, \
                finished_at::text FROM games",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))))
    .collect()
}

/// Every career, with its `updated_at`: a replay must not even touch one.
async fn careers(db: &tokio_postgres::Client) -> BTreeMap<String, (Career, String)> {
    db.query(
        "SELECT user_id, games_finished, best_planets, best_population, most_ships_built, \
                updated_at::text FROM player_careers",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get(0),
            ((r.get(1), r.get(2), r.get(3), r.get(4)), r.get(5)),
        )
    })
    .collect()
}

/// The careers recomputed from the Lobby's per-game stats, by hand: per player, the
/// finished games they played and the best of each component over those games.
async fn careers_from_stats(db: &tokio_postgres::Client) -> BTreeMap<String, Career> {
    db.query(
        "SELECT s.user_id, count(*)::bigint, max(s.max_planets), max(s.max_population), \
                max(s.max_ships_built) \
         FROM game_player_stats s JOIN games g USING (game_id) \
         WHERE g.status = 'finished' GROUP BY s.user_id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
    .collect()
}

/// `(game_id, finished_at)` of every evaluation guard.
async fn guards(db: &tokio_postgres::Client) -> BTreeMap<String, String> {
    db.query(
        "SELECT game_id, finished_at::text FROM evaluation_guards",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Starts `name run` with `env`, once `/readyz` answers.
async fn start(name: &str, prefix: &str, env: &[(&str, &str)]) -> Service {
    let mut all = env.to_vec();
    all.push(("RUST_LOG", "warn"));
    e2e::start_service(name, prefix, &all).await
}

/// SIGTERM, and the exit code must be 0.
async fn stop(service: Service) {
    e2e::stop_service(service).await;
}

/// Runs galaxy-sim to the end, keeping stdout (the summary) and stderr.
async fn simulate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(binary("galaxy-sim").unwrap());
    command
        .args(args)
        .envs(env.iter().copied())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("galaxy-sim finished within 2 minutes")
        .expect("galaxy-sim ran")
}

/// Waits until the Lobby's offset is the lobby stream's last entry.
async fn wait_for_lobby(redis: &TestRedis, lobby: &Service) {
    let last = entries(redis, LOBBY_STREAM)
        .await
        .unwrap()
        .last()
        .map(|(id, _)| id.clone())
        .expect("the lobby stream has entries");
    eventually(&format!("{LOBBY_OFFSET} reaches {last}"), WAIT, || async {
        redis
            .client()
            .get::<Option<String>, _>(LOBBY_OFFSET)
            .await
            .ok()
            .flatten()
            .as_deref()
            == Some(last.as_str())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", lobby.process.stderr()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_the_game_master_and_the_lobby_converge_and_replays_change_nothing() {
    let redis_server = ThrowawayRedis::start().await.unwrap();
    let redis_url = redis_server.url();
    let redis = TestRedis::connect_to(&redis_url).await.unwrap();
    let gm_db = TestDb::create().await.unwrap();
    let lobby_db = TestDb::create().await.unwrap();

    for (name, var, url) in [
        ("gamemaster", "GAMEMASTER_POSTGRES_URL", gm_db.url()),
        ("lobby", "LOBBY_POSTGRES_URL", lobby_db.url()),
    ] {
        let (code, stderr) = run(name, &["migrate"], &[(var, url)], WAIT).await.unwrap();
        assert_eq!(code, 0, "{name} migrate: {stderr}");
    }
    let gm_env = [
        ("GAMEMASTER_POSTGRES_URL", gm_db.url()),
        ("GAMEMASTER_REDIS_URL", redis_url.as_str()),
    ];
    let lobby_env = [
        ("LOBBY_POSTGRES_URL", lobby_db.url()),
        ("LOBBY_REDIS_URL", redis_url.as_str()),
    ];
    let gm = start("gamemaster", "GAMEMASTER", &gm_env).await;
    let mut lobby = start("lobby", "LOBBY", &lobby_env).await;

    // 1. A short run converges, the Lobby's view and the careers included.
    let gm_metrics = format!("http://{}/metrics", gm.http);
    let lobby_metrics = format!("http://{}/metrics", lobby.http);
    let prefix = unique_name("pipe");
    let games = GAMES.to_string();
    let finish = FINISHED_AT_END.to_string();
    let out = simulate(
        &[
            "--games",
            &games,
            "--duration",
            "3s",
            "--rate",
            "400",
            "--seed",
            "7",
            "--game-prefix",
            &prefix,
            "--finish-games",
            &finish,
        ],
        &[
            ("GALAXY_SIM_POSTGRES_URL", gm_db.url()),
            ("GALAXY_SIM_REDIS_URL", redis_url.as_str()),
            ("GALAXY_SIM_LOBBY_POSTGRES_URL", lobby_db.url()),
            ("GALAXY_SIM_GAMEMASTER_METRICS_URL", gm_metrics.as_str()),
            ("GALAXY_SIM_LOBBY_METRICS_URL", lobby_metrics.as_str()),
            ("GALAXY_SIM_DRAIN_TIMEOUT", "30s"),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}\ngamemaster:\n{}\nlobby:\n{}",
        gm.process.stderr(),
        lobby.process.stderr()
    );
    for line in [
        format!("✔ CONVERGED: all {GAMES} runtime records match the model"),
        format!("✔ Lobby snapshots {GAMES} of {GAMES} games hold their Game Master record"),
        "✔ Lobby statuses".to_owned(),
        "✔ careers".to_owned(),
        "the Lobby mirrors every one of them".to_owned(),
    ] {
        assert!(stdout.contains(&line), "no {line:?} in:\n{stdout}");
    }

    // 2. The same, straight from the databases: every Lobby game holds its Game Master
    //    record, exactly the finished ones are finished, the careers are the finished
    //    games' best stats, each game counted once.
    let gm_client = pg_client(gm_db.url()).await.unwrap();
    let lobby_client = pg_client(lobby_db.url()).await.unwrap();
    let records = gm_records(&gm_client).await.unwrap();
    let games_before = lobby_games(&lobby_client).await;
    assert_eq!(games_before.len(), GAMES);
    assert_eq!(records.len(), GAMES);
    for (id, (status, runtime_status, summary, turn, finished_at)) in &games_before {
        let (gm_status, gm_health, gm_turn) = &records[id];
        assert_eq!(
            (runtime_status, summary, turn),
            (gm_status, gm_health, gm_turn),
            "{id}"
        );
        let finished = gm_status == "finished";
        assert_eq!(
            status,
            if finished { "finished" } else { "running" },
            "{id}"
        );
        assert_eq!(finished_at.is_some(), finished, "{id}");
    }
    let finished = i64::try_from(
        games_before
            .values()
            .filter(|(status, ..)| status == "finished")
            .count(),
    )
    .unwrap();
    assert!(finished >= FINISHED_AT_END, "{finished} finished games");
    let careers_before = careers(&lobby_client).await;
    assert!(!careers_before.is_empty());
    let folded: BTreeMap<String, Career> = careers_before
        .iter()
        .map(|(user, (career, _))| (user.clone(), *career))
        .collect();
    assert_eq!(folded, careers_from_stats(&lobby_client).await);
    assert_eq!(
        folded.values().map(|c| c.0).sum::<i64>(),
        i64::try_from(
            entries(&redis, LOBBY_STREAM)
                .await
                .unwrap()
                .iter()
                .filter(|(_, f)| f.get("kind").map(String::as_str) == Some("game_finished"))
                .map(|(_, f)| f.get("player_turn_stats").map_or(0, |s| {
                    serde_json::from_str::<Vec<serde_json::Value>>(s).map_or(0, |v| v.len())
                }))
                .sum::<usize>()
        )
        .unwrap(),
        "every player of every finished game is counted once"
    );
    let guards_before = guards(&lobby_client).await;
    assert_eq!(i64::try_from(guards_before.len()).unwrap(), finished);

    // 3. Reset the Lobby's offset and replay the whole stream, twice: nothing moves.
    for round in 1..=2 {
        stop(lobby).await;
        let _: () = redis
            .client()
            .set(LOBBY_OFFSET, "0-0", None, None, false)
            .await
            .unwrap();
        lobby = start("lobby", "LOBBY", &lobby_env).await;
        wait_for_lobby(&redis, &lobby).await;
        assert_eq!(
            lobby_games(&lobby_client).await,
            games_before,
            "round {round}"
        );
        assert_eq!(
            careers(&lobby_client).await,
            careers_before,
            "round {round}"
        );
        assert_eq!(guards(&lobby_client).await, guards_before, "round {round}");
        // A fresh process: its counters are this replay's alone.
        let text = e2e::metrics(lobby.http).await.unwrap();
        assert_metrics(
            &text,
            &[
                format!("lobby_gm_events_consumed_total{{outcome=\"replayed\"}} {finished}"),
                "lobby_gm_events_consumed_total{outcome=\"finished\"} 0".to_owned(),
                "lobby_gm_events_consumed_total{outcome=\"unknown_game\"} 0".to_owned(),
                "lobby_gm_events_consumed_total{outcome=\"malformed\"} 0".to_owned(),
                format!(
                    "lobby_capability_evaluations_total{{outcome=\"already_evaluated\"}} {finished}"
                ),
                "lobby_capability_evaluations_total{outcome=\"evaluated\"} 0".to_owned(),
            ],
        );
        assert!(
            !text
                .lines()
                .any(|l| l == "lobby_gm_events_consumed_total{outcome=\"stale\"} 0"),
            "a replay finds newer snapshots stored:\n{text}"
        );
    }

    stop(lobby).await;
    stop(gm).await;
    gm_db.drop_db().await.unwrap();
    lobby_db.drop_db().await.unwrap();
}
