//! The Game Master → Game Lobby contract end to end, with the real `gamemaster` and `lobby`
//! binaries: health events in, the Lobby's games mirroring the Game Master's records out,
//! then a `game_finished` that finishes the game and updates the careers exactly once, also
//! when the Lobby's offset is reset and the stream replayed. Also: the Lobby on a throwaway
//! PostgreSQL that is stopped mid-run holds its offset, reports not ready naming
//! PostgreSQL, and catches up once the server is back.
//!
//! A throwaway Redis keeps the fixed offset keys (`gamemaster:stream_offsets:health_events`,
//! `lobby:stream_offsets:gm_lobby_events`) this test's own; each service gets a fresh
//! database on the shared PostgreSQL server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use contracts::lobby_events::{LobbyEventEntry, PlayerTurnStats, fields as wire};
use contracts::{GameId, LobbyEventKind};
use e2e::{assert_metrics, entries, gm_records, pg_client};
use fred::interfaces::KeysInterface;
use testkit::bins::{Process, run};
use testkit::pg::{TestDb, ThrowawayPostgres};
use testkit::redis::{TestRedis, ThrowawayRedis};
use testkit::{eventually, free_port, http};

const GM_OFFSET: &str = "gamemaster:stream_offsets:health_events";
const LOBBY_OFFSET: &str = "lobby:stream_offsets:gm_lobby_events";
const LOBBY: &str = "gm:lobby_events";
const WAIT: Duration = Duration::from_secs(30);

async fn offset(redis: &TestRedis, key: &str) -> Option<String> {
    redis
        .client()
        .get::<Option<String>, _>(key)
        .await
        .ok()
        .flatten()
}

async fn wait_for_offset(redis: &TestRedis, key: &str, id: &str, process: &Process) {
    eventually(&format!("{key} reaches {id}"), WAIT, || async {
        offset(redis, key).await.as_deref() == Some(id)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", process.stderr()));
}

async fn health_event(redis: &TestRedis, game: &str, event_type: &str) -> String {
    e2e::health_event(redis, game, event_type).await.unwrap()
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Per-player stats for an entry: `(user, planets, population, ships built)`.
fn player_stats(players: &[(&str, i64, i64, i64)]) -> Vec<PlayerTurnStats> {
    players
        .iter()
        .map(
            |&(user, planets, population, ships_built)| PlayerTurnStats {
                user_id: user.to_owned(),
                planets,
                population,
                ships_built,
            },
        )
        .collect()
}

/// A `gm:lobby_events` entry, as the contract encodes it for the Game Master.
#[allow(clippy::too_many_arguments)]
fn lobby_entry(
    kind: LobbyEventKind,
    game: &str,
    turn: u32,
    runtime_status: &str,
    summary: &str,
    occurred_at_ms: i64,
    stats: Vec<PlayerTurnStats>,
    finished_at_ms: Option<i64>,
) -> Entry {
    LobbyEventEntry {
        kind,
        game_id: GameId::new(game).unwrap(),
        current_turn: turn,
        runtime_status: runtime_status.to_owned(),
        engine_health_summary: summary.to_owned(),
        occurred_at_ms,
        player_turn_stats: stats,
        finished_at_ms,
        source_entry_id: None,
    }
    .wire_fields()
}

/// `(runtime_status, engine_health_summary, current_turn)` of every Lobby game.
async fn lobby_snapshots(db: &tokio_postgres::Client) -> BTreeMap<String, (String, String, i64)> {
    db.query(
        "SELECT game_id, runtime_status, engine_health_summary, current_turn FROM games",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
    .collect()
}

/// `(games_finished, best_planets, best_population, most_ships_built)` per player.
async fn careers(db: &tokio_postgres::Client) -> BTreeMap<String, (i64, i64, i64, i64)> {
    db.query(
        "SELECT user_id, games_finished, best_planets, best_population, most_ships_built \
         FROM player_careers",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
    .collect()
}

type Lobby = e2e::Service;

async fn start_lobby(db_url: &str, redis_url: &str) -> Lobby {
    start_lobby_with(db_url, redis_url, &[]).await
}

/// `lobby run` with `extra` settings besides the test's own, once `/readyz` answers 200.
async fn start_lobby_with(db_url: &str, redis_url: &str, extra: &[(&str, &str)]) -> Lobby {
    let mut env = vec![
        ("LOBBY_POSTGRES_URL", db_url),
        ("LOBBY_REDIS_URL", redis_url),
        ("LOBBY_LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
    ];
    env.extend_from_slice(extra);
    e2e::start_service("lobby", "LOBBY", &env).await
}

async fn stop(mut process: Process) -> String {
    process.terminate().unwrap();
    let code = process.wait(Duration::from_secs(15)).await.unwrap();
    let logs = process.stderr();
    assert_eq!(code, 0, "SIGTERM must exit 0:\n{logs}");
    logs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lobby_mirrors_the_game_master_and_finishes_games_once_across_replays() {
    let redis_server = ThrowawayRedis::start().await.unwrap();
    let redis_url = redis_server.url();
    let redis = TestRedis::connect_to(&redis_url).await.unwrap();
    let gm_db = TestDb::create().await.unwrap();
    let lobby_db = TestDb::create().await.unwrap();

    // Both schemas; the Lobby's twice (harmless).
    let (code, stderr) = run(
        "gamemaster",
        &["migrate"],
        &[("GAMEMASTER_POSTGRES_URL", gm_db.url())],
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{stderr}");
    let lobby_env = [("LOBBY_POSTGRES_URL", lobby_db.url())];
    for _ in 0..2 {
        let (code, stderr) = run("lobby", &["migrate"], &lobby_env, WAIT).await.unwrap();
        assert_eq!(code, 0, "{stderr}");
    }

    // The Game Master's runtimes, and the Lobby's games for three of them (g4 is a game
    // the Lobby does not know).
    let gm = pg_client(gm_db.url()).await.unwrap();
    gm.batch_execute(
        "INSERT INTO runtime_records (game_id, status, current_turn) VALUES
           ('g1', 'running', 3), ('g2', 'running', 0), ('g3', 'generation_in_progress', 9),
           ('g4', 'running', 1)",
    )
    .await
    .unwrap();
    let seed = ["seed-game", "g1", "g2", "g3", "--status", "running"];
    let lobby_bin = testkit::bins::binary("lobby").unwrap();
    let seeded = std::process::Command::new(&lobby_bin)
        .args(seed)
        .env("LOBBY_POSTGRES_URL", lobby_db.url())
        .output()
        .unwrap();
    assert!(seeded.status.success(), "{seeded:?}");
    assert_eq!(
        String::from_utf8_lossy(&seeded.stdout),
        "created g1 (running)\ncreated g2 (running)\ncreated g3 (running)\n"
    );
    let again = std::process::Command::new(&lobby_bin)
        .args(["seed-game", "g1"])
        .env("LOBBY_POSTGRES_URL", lobby_db.url())
        .output()
        .unwrap();
    assert!(again.status.success());
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        "exists g1 (running), left alone\n"
    );
    let lobby_sql = pg_client(lobby_db.url()).await.unwrap();

    // Both services.
    let gm_http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gm_addr = gm_http.to_string();
    let gm_process = Process::spawn(
        "gamemaster",
        &["run"],
        &[
            ("GAMEMASTER_POSTGRES_URL", gm_db.url()),
            ("GAMEMASTER_REDIS_URL", &redis_url),
            ("GAMEMASTER_HTTP_ADDR", &gm_addr),
            ("GAMEMASTER_READ_BLOCK", "200ms"),
        ],
    )
    .unwrap();
    eventually("gamemaster ready", WAIT, || async {
        matches!(http::get(gm_http, "/readyz").await, Ok((200, _)))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gm_process.stderr()));
    let lobby = start_lobby(lobby_db.url(), &redis_url).await;

    // A scripted sequence of health events over four games.
    health_event(&redis, "g1", "container_started").await;
    health_event(&redis, "g2", "probe_failed").await;
    health_event(&redis, "g1", "container_oom").await;
    health_event(&redis, "g3", "inspect_unhealthy").await;
    health_event(&redis, "g4", "container_exited").await;
    health_event(&redis, "g2", "probe_failed").await;
    health_event(&redis, "g1", "probe_recovered").await;
    health_event(&redis, "g2", "container_disappeared").await;
    let last_health = health_event(&redis, "g3", "container_started").await;
    // A malformed entry on the Lobby's stream, between the Game Master's.
    redis
        .xadd(
            LOBBY,
            &[
                (wire::KIND, LobbyEventKind::RuntimeSnapshotUpdate.as_str()),
                (wire::GAME_ID, "g2"),
            ],
        )
        .await
        .unwrap();

    // Drained: the Game Master's offset at the last health event, then the Lobby's at the
    // last entry of its stream.
    wait_for_offset(&redis, GM_OFFSET, &last_health, &gm_process).await;
    let published = entries(&redis, LOBBY).await.unwrap();
    let (last_published, _) = published.last().unwrap().clone();
    wait_for_offset(&redis, LOBBY_OFFSET, &last_published, &lobby.process).await;

    let gm_state = gm_records(&gm).await.unwrap();
    let lobby_state = lobby_snapshots(&lobby_sql).await;
    assert_eq!(lobby_state.len(), 3);
    for (game, snapshot) in &lobby_state {
        assert_eq!(snapshot, &gm_state[game], "game {game}");
    }
    assert_eq!(
        lobby_state["g2"],
        ("engine_unreachable".into(), "disappeared".into(), 0)
    );
    let snapshots_for_known = published
        .iter()
        .filter(|(_, f)| {
            f.get("kind").map(String::as_str)
                == Some(LobbyEventKind::RuntimeSnapshotUpdate.as_str())
                && f.contains_key("occurred_at_ms")
                && f["game_id"] != "g4"
        })
        .count();
    // g1: healthy, oom, healthy; g2: probe_failed (once), disappeared; g3: two summaries.
    assert_eq!(snapshots_for_known, 7, "{published:?}");
    assert_metrics(
        &e2e::metrics(lobby.http).await.unwrap(),
        &[
            &format!(
                r#"lobby_gm_events_consumed_total{{outcome="applied"}} {snapshots_for_known}"#
            ),
            r#"lobby_gm_events_consumed_total{outcome="unknown_game"} 1"#,
            r#"lobby_gm_events_consumed_total{outcome="malformed"} 1"#,
            &format!(
                r#"lobby_stream_consumer_entries_total{{consumer="gm_lobby_events"}} {}"#,
                published.len()
            ),
        ],
    );
    let letters = e2e::dead_letters("lobby", "gm_lobby_events", &redis, &redis_url).await;
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    assert_eq!(
        letters.len(),
        2,
        "the unknown game's and the malformed entry: {reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("no game 'g4'")),
        "{reasons:?}"
    );

    // Engine stats for g1, then the game finishes (the Game Master's binary has no path
    // that emits game_finished yet, so the test writes it with the wire fields).
    let t = now_ms() + 10_000;
    xadd_all(
        &redis,
        LOBBY,
        &[lobby_entry(
            LobbyEventKind::RuntimeSnapshotUpdate,
            "g1",
            12,
            "running",
            "healthy",
            t,
            player_stats(&[("alice", 3, 120, 2), ("bob", 5, 40, 1)]),
            None,
        )],
    )
    .await;
    let finished_at = t + 500;
    let finish_id = xadd_all(
        &redis,
        LOBBY,
        &[lobby_entry(
            LobbyEventKind::GameFinished,
            "g1",
            40,
            "finished",
            "healthy",
            t + 1_000,
            player_stats(&[("alice", 7, 90, 6), ("bob", 4, 60, 1)]),
            Some(finished_at),
        )],
    )
    .await;
    wait_for_offset(&redis, LOBBY_OFFSET, &finish_id, &lobby.process).await;

    let check_finished = || async {
        let row = lobby_sql
            .query_one(
                "SELECT status, runtime_status, current_turn, \
                 (extract(epoch FROM finished_at) * 1000)::bigint, snapshot_observed_at_ms \
                 FROM games WHERE game_id = 'g1'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "finished");
        assert_eq!(row.get::<_, String>(1), "finished");
        assert_eq!(row.get::<_, i64>(2), 40);
        assert_eq!(row.get::<_, i64>(3), finished_at);
        assert_eq!(row.get::<_, i64>(4), t + 1_000);
        let stats = lobby_sql
            .query(
                "SELECT user_id, initial_planets, initial_population, max_planets, \
                 max_population, max_ships_built FROM game_player_stats \
                 WHERE game_id = 'g1' ORDER BY user_id",
                &[],
            )
            .await
            .unwrap();
        let stats: Vec<(String, i64, i64, i64, i64, i64)> = stats
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
            .collect();
        assert_eq!(
            stats,
            vec![
                ("alice".into(), 3, 120, 7, 120, 6),
                ("bob".into(), 5, 40, 5, 60, 1),
            ]
        );
        let expected: BTreeMap<String, (i64, i64, i64, i64)> = [
            ("alice".to_owned(), (1, 7, 120, 6)),
            ("bob".to_owned(), (1, 5, 60, 1)),
        ]
        .into();
        assert_eq!(careers(&lobby_sql).await, expected);
        let guards: i64 = lobby_sql
            .query_one("SELECT count(*) FROM evaluation_guards", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(guards, 1);
    };
    check_finished().await;
    assert_metrics(
        &e2e::metrics(lobby.http).await.unwrap(),
        &[
            r#"lobby_gm_events_consumed_total{outcome="finished"} 1"#,
            r#"lobby_game_status_transitions_total{from="running",to="finished",trigger="runtime_event"} 1"#,
            r#"lobby_capability_evaluations_total{outcome="evaluated"} 1"#,
        ],
    );
    let logs = stop(lobby.process).await;
    assert!(
        logs.contains(r#""stream_entry_id""#) && logs.contains(r#""game_id":"g4""#),
        "JSON logs carry stream_entry_id and game_id:\n{logs}"
    );

    // Replays: the offset deleted, then reset to 0-0; each time the whole stream is handled
    // again by a fresh process, and nothing changes.
    for reset in ["DEL", "SET 0-0"] {
        if reset == "DEL" {
            let _: i64 = redis.client().del(LOBBY_OFFSET).await.unwrap();
        } else {
            let _: () = redis
                .client()
                .set(LOBBY_OFFSET, "0-0", None, None, false)
                .await
                .unwrap();
        }
        let lobby = start_lobby(lobby_db.url(), &redis_url).await;
        wait_for_offset(&redis, LOBBY_OFFSET, &finish_id, &lobby.process).await;
        check_finished().await;
        let lobby_state = lobby_snapshots(&lobby_sql).await;
        for game in ["g2", "g3"] {
            assert_eq!(lobby_state[game], gm_state[game], "{reset}: game {game}");
        }
        assert_metrics(
            &e2e::metrics(lobby.http).await.unwrap(),
            &[
                r#"lobby_gm_events_consumed_total{outcome="replayed"} 1"#,
                r#"lobby_gm_events_consumed_total{outcome="finished"} 0"#,
                r#"lobby_capability_evaluations_total{outcome="already_evaluated"} 1"#,
                r#"lobby_capability_evaluations_total{outcome="evaluated"} 0"#,
                r#"lobby_gm_events_consumed_total{outcome="malformed"} 1"#,
            ],
        );
        stop(lobby.process).await;
    }

    stop(gm_process).await;
    redis.cleanup().await.unwrap();
    drop(lobby_sql);
    drop(gm);
    lobby_db.drop_db().await.unwrap();
    gm_db.drop_db().await.unwrap();
}

/// Arguments, environment, and what the one stderr line must mention.
#[tokio::test]
async fn bad_settings_and_unreachable_servers_are_one_line_and_exit_2() {
    let closed = format!("127.0.0.1:{}", free_port());
    let redis_closed = format!("redis://{closed}");
    let pg_closed = format!("postgres://postgres:secret@{closed}/lobby");
    let empty = TestDb::create().await.unwrap();
    let migrated = TestDb::create().await.unwrap();
    let (code, stderr) = run(
        "lobby",
        &["migrate"],
        &[("LOBBY_POSTGRES_URL", migrated.url())],
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{stderr}");
    let redis_url = testkit::redis::redis_url();
    let cases: Vec<e2e::StartupCase<'_>> = vec![
        (
            vec!["run"],
            vec![("LOBBY_POSTGRES_URL", "not a url")],
            "postgres",
        ),
        (vec!["run", "--batch-size", "0"], vec![], "batch-size"),
        (
            vec!["run", "--gm-events-stream", "has space"],
            vec![],
            "stream",
        ),
        (vec!["run", "--http-addr", "nowhere"], vec![], "http-addr"),
        (
            vec!["run"],
            vec![("LOBBY_POSTGRES_URL", pg_closed.as_str())],
            "PostgreSQL",
        ),
        (
            vec!["migrate"],
            vec![("LOBBY_POSTGRES_URL", pg_closed.as_str())],
            "PostgreSQL",
        ),
        (
            vec!["run"],
            vec![
                ("LOBBY_POSTGRES_URL", migrated.url()),
                ("LOBBY_REDIS_URL", redis_closed.as_str()),
            ],
            "Redis",
        ),
        (
            vec!["run"],
            vec![
                ("LOBBY_POSTGRES_URL", empty.url()),
                ("LOBBY_REDIS_URL", redis_url.as_str()),
            ],
            "lobby migrate",
        ),
        (
            vec!["seed-game", "g1"],
            vec![("LOBBY_POSTGRES_URL", empty.url())],
            "lobby migrate",
        ),
        (vec!["seed-game", "g1", "--status", "won"], vec![], "status"),
    ];
    for (args, env, mentions) in cases {
        e2e::assert_startup_error("lobby", &args, &env, mentions)
            .await
            .unwrap();
    }
    empty.drop_db().await.unwrap();
    migrated.drop_db().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lobby_holds_its_offset_through_a_database_outage_and_catches_up() {
    let redis_server = ThrowawayRedis::start().await.unwrap();
    let redis_url = redis_server.url();
    let redis = TestRedis::connect_to(&redis_url).await.unwrap();
    let pg = ThrowawayPostgres::start().await.unwrap();
    let db_url = pg.url("postgres");
    let env = [("LOBBY_POSTGRES_URL", db_url.as_str())];
    let (code, stderr) = run("lobby", &["migrate"], &env, WAIT).await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = run("lobby", &["seed-game", "g1"], &env, WAIT)
        .await
        .unwrap();
    assert_eq!(code, 0, "{stderr}");
    let lobby = start_lobby(&db_url, &redis_url).await;
    let snapshot = |turn: u32, status: &'static str, summary: &'static str| {
        let redis = &redis;
        async move {
            xadd_all(
                redis,
                LOBBY,
                &[lobby_entry(
                    LobbyEventKind::RuntimeSnapshotUpdate,
                    "g1",
                    turn,
                    status,
                    summary,
                    now_ms(),
                    Vec::new(),
                    None,
                )],
            )
            .await
        }
    };
    let first = snapshot(1, "running", "healthy").await;
    wait_for_offset(&redis, LOBBY_OFFSET, &first, &lobby.process).await;

    // PostgreSQL goes away: the offset holds, readiness says why, the process stays up.
    pg.stop().await.unwrap();
    let during = snapshot(2, "engine_unreachable", "probe_failed").await;
    eventually("lobby readyz turns 503", WAIT, || async {
        matches!(http::get(lobby.http, "/readyz").await, Ok((503, _)))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", lobby.process.stderr()));
    let (_, reason) = http::get(lobby.http, "/readyz").await.unwrap();
    assert!(reason.contains("postgres"), "{reason}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        offset(&redis, LOBBY_OFFSET).await.as_deref(),
        Some(first.as_str())
    );
    assert!(lobby.process.pid().is_some(), "the lobby must keep running");

    // Back: the held entry is applied, then the offset moves past it.
    pg.start_again().await.unwrap();
    wait_for_offset(&redis, LOBBY_OFFSET, &during, &lobby.process).await;
    let db = pg_client(&db_url).await.unwrap();
    assert_eq!(
        lobby_snapshots(&db).await["g1"],
        ("engine_unreachable".into(), "probe_failed".into(), 2)
    );
    eventually("lobby readyz back to 200", WAIT, || async {
        matches!(http::get(lobby.http, "/readyz").await, Ok((200, _)))
    })
    .await
    .unwrap();
    assert!(
        e2e::metrics(lobby.http).await.unwrap().contains(
            r#"lobby_stream_consumer_retries_total{consumer="gm_lobby_events",stage="handle"}"#
        ),
        "the outage shows as handler retries"
    );
    stop(lobby.process).await;
}

#[test]
fn run_help_lists_every_setting_with_its_environment_variable() {
    e2e::assert_help_lists(
        "lobby",
        &[
            "LOBBY_STOP_JOBS_STREAM",
            "runtime:stop_jobs",
            "LOBBY_REDIS_URL",
            "LOBBY_POSTGRES_URL",
            "LOBBY_GM_EVENTS_STREAM",
            "LOBBY_HTTP_ADDR",
            "LOBBY_LOG_FORMAT",
            "LOBBY_SHUTDOWN_TIMEOUT",
            "LOBBY_BATCH_SIZE",
            "LOBBY_READ_BLOCK",
            "gm:lobby_events",
            "127.0.0.1:8081",
            "postgres://postgres@127.0.0.1:5432/lobby",
        ],
    )
    .unwrap();
}

/// The fields of one `gm:lobby_events` entry, as text.
type Entry = Vec<(&'static str, String)>;

fn snapshot_entry(
    game: &str,
    turn: u32,
    status: &str,
    summary: &str,
    stats: Vec<PlayerTurnStats>,
) -> Entry {
    let occurred_at_ms = 1_700_000_000_000 + i64::from(turn);
    let kind = LobbyEventKind::RuntimeSnapshotUpdate;
    lobby_entry(
        kind,
        game,
        turn,
        status,
        summary,
        occurred_at_ms,
        stats,
        None,
    )
}

fn finished_entry(game: &str, stats: Vec<PlayerTurnStats>, finished_at_ms: i64) -> Entry {
    let (kind, at) = (LobbyEventKind::GameFinished, 1_700_000_000_009);
    lobby_entry(
        kind,
        game,
        9,
        "finished",
        "healthy",
        at,
        stats,
        Some(finished_at_ms),
    )
}

fn with_field(mut entry: Entry, field: &'static str, value: &str) -> Entry {
    for (k, v) in &mut entry {
        if *k == field {
            *v = value.into();
        }
    }
    entry
}

async fn xadd_all(redis: &TestRedis, stream: &str, entries: &[Entry]) -> String {
    let mut last = String::new();
    for entry in entries {
        last = redis.xadd(stream, entry).await.unwrap();
    }
    last
}

async fn migrated_lobby_db(games: &[&str]) -> TestDb {
    let db = e2e::migrated("lobby", "LOBBY_POSTGRES_URL").await;
    let env = [("LOBBY_POSTGRES_URL", db.url())];
    let mut seed = vec!["seed-game"];
    seed.extend_from_slice(games);
    seed.extend_from_slice(&["--status", "running"]);
    let (code, stderr) = run("lobby", &seed, &env, WAIT).await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    db
}

/// Entries the database refuses among valid ones: those decoding can tell (a NUL byte, a
/// time past year 9999) and two it cannot (a write and a career fold this database
/// refuses). The stream drains, the refusal that is no entry's values holds it for the
/// refusal hold only, and the valid entries do what they do in a stream without the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lobby_drains_entries_postgres_refuses_and_the_rest_act_as_if_alone() {
    let redis_server = ThrowawayRedis::start().await.unwrap();
    let redis_url = redis_server.url();
    let redis = TestRedis::connect_to(&redis_url).await.unwrap();
    let clean_db = migrated_lobby_db(&["g1", "g2", "g3"]).await;
    let poisoned_db = migrated_lobby_db(&["g1", "g2", "g3", "poison-w", "poison-e"]).await;
    let poisoned = pg_client(poisoned_db.url()).await.unwrap();
    poisoned
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'refused by this database' USING ERRCODE = '22003'; END $$;
             CREATE TRIGGER refuse_game BEFORE UPDATE ON games FOR EACH ROW
               WHEN (NEW.game_id = 'poison-w') EXECUTE FUNCTION refuse();
             CREATE TRIGGER refuse_career BEFORE INSERT OR UPDATE ON player_careers FOR EACH ROW
               WHEN (NEW.user_id = 'mallory') EXECUTE FUNCTION refuse();",
        )
        .await
        .unwrap();

    let valid = [
        snapshot_entry(
            "g1",
            1,
            "running",
            "healthy",
            player_stats(&[("alice", 3, 30, 1), ("bob", 2, 20, 0)]),
        ),
        snapshot_entry("g2", 1, "running", "probe_failed", Vec::new()),
        snapshot_entry(
            "g1",
            2,
            "engine_unreachable",
            "exited",
            player_stats(&[("alice", 4, 35, 2)]),
        ),
        finished_entry("g2", player_stats(&[("bob", 5, 50, 4)]), 1_700_000_000_500),
        snapshot_entry("g3", 1, "running", "healthy", Vec::new()),
    ];
    let mixed = [
        valid[0].clone(),
        with_field(valid[1].clone(), wire::GAME_ID, "g2\0"),
        valid[1].clone(),
        with_field(
            valid[2].clone(),
            wire::PLAYER_TURN_STATS,
            r#"[{"user_id":"\u0000","planets":1,"population":1,"ships_built":1}]"#,
        ),
        snapshot_entry("poison-w", 1, "running", "healthy", Vec::new()),
        valid[2].clone(),
        with_field(valid[4].clone(), wire::RUNTIME_STATUS, "running\0"),
        finished_entry(
            "poison-e",
            player_stats(&[("mallory", 9, 90, 9)]),
            1_700_000_000_600,
        ),
        valid[3].clone(),
        finished_entry("g3", Vec::new(), i64::MAX),
        valid[4].clone(),
    ];
    let last_clean = xadd_all(&redis, "gm:clean", &valid).await;

    // Ready first (a hold at start-up would keep readiness from passing), then fed.
    let lobby = start_lobby_with(
        poisoned_db.url(),
        &redis_url,
        &[
            ("LOBBY_GM_EVENTS_STREAM", "gm:poisoned"),
            ("LOBBY_REFUSAL_HOLD", "2s"),
        ],
    )
    .await;
    let last_poisoned = xadd_all(&redis, "gm:poisoned", &mixed).await;
    // The career fold refused for mallory holds the stream, visibly, for the hold only.
    let held = std::sync::Mutex::new(String::new());
    eventually("readyz reports the held refusal", WAIT, || async {
        match http::get(lobby.http, "/readyz").await {
            Ok((503, reason)) if reason.contains("refused") => {
                *held.lock().unwrap() = reason;
                true
            }
            _ => false,
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", lobby.process.stderr()));
    let held = held.into_inner().unwrap();
    assert!(held.contains("before it is skipped"), "{held}");
    wait_for_offset(&redis, LOBBY_OFFSET, &last_poisoned, &lobby.process).await;
    assert_eq!(http::get(lobby.http, "/readyz").await.unwrap().0, 200);
    assert_metrics(
        &e2e::metrics(lobby.http).await.unwrap(),
        &[
            r#"lobby_gm_events_consumed_total{outcome="applied"} 4"#,
            r#"lobby_gm_events_consumed_total{outcome="finished"} 1"#,
            r#"lobby_gm_events_consumed_total{outcome="malformed"} 4"#,
            r#"lobby_gm_events_consumed_total{outcome="refused"} 2"#,
            r#"lobby_capability_evaluations_total{outcome="refused"} 1"#,
            r#"lobby_stream_consumer_abandoned_entries_total{consumer="gm_lobby_events"} 1"#,
        ],
    );
    stop(lobby.process).await;

    redis.client().del::<(), _>(LOBBY_OFFSET).await.unwrap();
    let lobby = start_lobby_with(
        clean_db.url(),
        &redis_url,
        &[("LOBBY_GM_EVENTS_STREAM", "gm:clean")],
    )
    .await;
    wait_for_offset(&redis, LOBBY_OFFSET, &last_clean, &lobby.process).await;
    stop(lobby.process).await;

    let clean = pg_client(clean_db.url()).await.unwrap();
    let mut snapshots = lobby_snapshots(&poisoned).await;
    snapshots.retain(|game, _| !game.starts_with("poison-"));
    assert_eq!(snapshots, lobby_snapshots(&clean).await);
    assert_eq!(careers(&poisoned).await, careers(&clean).await);
    let status = |game: &'static str| {
        let db = &poisoned;
        async move {
            db.query_one("SELECT status FROM games WHERE game_id = $1", &[&game])
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    assert_eq!(
        status("poison-e").await,
        "finished",
        "its finish stands; only the fold was refused"
    );
    assert_eq!(status("g2").await, "finished");
    redis.cleanup().await.unwrap();
    clean_db.drop_db().await.unwrap();
    poisoned_db.drop_db().await.unwrap();
}

/// Every `runtime:stop_jobs` entry, decoded by the contract.
async fn stop_jobs(redis: &TestRedis) -> Vec<contracts::StopJob> {
    redis
        .xrange(contracts::stop_jobs::DEFAULT_STREAM)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, pairs)| contracts::StopJob::decode(&pairs).unwrap())
        .collect()
}

/// A finished game sends one stop job, a replayed finish none more, and `lobby stop-game`
/// one with `admin_request`; an unknown game is one line and exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_finish_and_each_stop_game_sends_exactly_one_stop_job() {
    let redis_server = ThrowawayRedis::start().await.unwrap();
    let redis_url = redis_server.url();
    let redis = TestRedis::connect_to(&redis_url).await.unwrap();
    let db = migrated_lobby_db(&["g1", "g2"]).await;
    let lobby = start_lobby(db.url(), &redis_url).await;
    let finish = finished_entry("g1", Vec::new(), 1_700_000_000_500);
    let first = xadd_all(&redis, LOBBY, std::slice::from_ref(&finish)).await;
    wait_for_offset(&redis, LOBBY_OFFSET, &first, &lobby.process).await;
    let replay = xadd_all(&redis, LOBBY, &[finish]).await;
    wait_for_offset(&redis, LOBBY_OFFSET, &replay, &lobby.process).await;
    eventually("the finish's stop job is sent", WAIT, || async {
        !stop_jobs(&redis).await.is_empty()
    })
    .await
    .unwrap();

    let env = [("LOBBY_POSTGRES_URL", db.url())];
    let (code, stderr) = run("lobby", &["stop-game", "g2"], &env, WAIT)
        .await
        .unwrap();
    assert_eq!(code, 0, "{stderr}");
    eventually("the operator's stop job is sent", WAIT, || async {
        stop_jobs(&redis).await.len() >= 2
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let jobs: Vec<(String, &str)> = stop_jobs(&redis)
        .await
        .iter()
        .map(|j| (j.game_id.as_str().to_owned(), j.reason.as_str()))
        .collect();
    assert_eq!(
        jobs,
        [
            ("g1".to_owned(), "game_finished"),
            ("g2".to_owned(), "admin_request")
        ],
        "one job per stop, none for the replayed finish"
    );
    let pg = pg_client(db.url()).await.unwrap();
    let unsent: i64 = pg
        .query_one(
            "SELECT count(*) FROM stop_requests WHERE stream_entry_id IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unsent, 0);
    e2e::assert_startup_error("lobby", &["stop-game", "ghost"], &env, "no game 'ghost'")
        .await
        .unwrap();
    stop(lobby.process).await;
    db.drop_db().await.unwrap();
}
