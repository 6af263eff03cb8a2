//! `PgLobbyStore` against a real server, each test on a fresh database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lobby_adapters_postgres::{PgLobbyStore, TABLES, migrate};
use lobby_domain::{
    CareerRecord, GameId, GameStatus, PlayerObservedStats, RuntimeSnapshot, StatValues, Trigger,
    UserId,
};
use lobby_ports::{
    CapabilityEvaluator, CareerStore, Error, Evaluation, EvaluationGuardStore, FinishGame,
    FinishResult, GameStore, GameTurnStatsStore, NewGame, SnapshotResult, SnapshotUpdate,
    UpdateStatus,
};
use pg_kit::PgSettings;
use testkit::pg::TestDb;

use GameStatus::{Cancelled, Finished, Open, Paused, Running};

async fn fresh_store() -> (TestDb, PgLobbyStore) {
    let db = TestDb::create().await.unwrap();
    let pool = pg_kit::connect(db.url(), &PgSettings::default())
        .await
        .unwrap();
    migrate(&pool).await.unwrap();
    (db, PgLobbyStore::new(pool))
}

fn game(id: &str) -> GameId {
    GameId::new(id).unwrap()
}

fn user(id: &str) -> UserId {
    UserId::new(id).unwrap()
}

async fn create(store: &PgLobbyStore, id: &str, status: GameStatus) {
    store
        .create(&NewGame {
            game_id: game(id),
            status,
        })
        .await
        .unwrap();
}

fn snapshot(turn: u32, status: &str, summary: &str, at: i64) -> RuntimeSnapshot {
    RuntimeSnapshot {
        current_turn: turn,
        runtime_status: status.into(),
        engine_health_summary: summary.into(),
        observed_at_ms: at,
        source: None,
    }
}

fn stats(user: &str, planets: i64, population: i64, ships: i64) -> PlayerObservedStats {
    PlayerObservedStats::new(user, planets, population, ships).unwrap()
}

fn update(id: &str, snap: RuntimeSnapshot, players: Vec<PlayerObservedStats>) -> SnapshotUpdate {
    SnapshotUpdate {
        game_id: game(id),
        snapshot: snap,
        player_stats: players,
    }
}

fn values(planets: i64, population: i64, ships: i64) -> StatValues {
    StatValues::new(planets, population, ships).unwrap()
}

#[tokio::test]
async fn migrating_twice_is_harmless_and_the_schema_check_names_the_fix() {
    let db = TestDb::create().await.unwrap();
    let pool = pg_kit::connect(db.url(), &PgSettings::default())
        .await
        .unwrap();
    assert_eq!(
        pg_kit::missing_tables(&pool, &TABLES).await.unwrap(),
        TABLES
    );
    let first = migrate(&pool).await.unwrap();
    assert_eq!(first.applied_migrations().len(), 4);
    let second = migrate(&pool).await.unwrap();
    assert!(second.applied_migrations().is_empty());
    assert!(
        pg_kit::missing_tables(&pool, &TABLES)
            .await
            .unwrap()
            .is_empty()
    );
    // Its own history table, so it can share a database with the other services.
    let client = pool.get().await.unwrap();
    let row = client
        .query_one("SELECT count(*) FROM lobby_schema_history", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 4);
    drop(client);
    db.drop_db().await.unwrap();
}

#[tokio::test]
async fn games_are_created_once_and_read_back() {
    let (_db, store) = fresh_store().await;
    let created = store
        .create(&NewGame {
            game_id: game("g-1"),
            status: Running,
        })
        .await
        .unwrap();
    assert_eq!(created.status, Running);
    assert_eq!(created.snapshot, None);
    assert_eq!(created.finished_at_ms, None);
    assert_eq!(store.get(&game("g-1")).await.unwrap(), created);

    let again = store
        .create(&NewGame {
            game_id: game("g-1"),
            status: Open,
        })
        .await;
    assert!(matches!(again, Err(Error::AlreadyExists(g)) if g == game("g-1")));
    assert!(matches!(
        store.get(&game("nope")).await,
        Err(Error::NotFound(_))
    ));

    // A game created finished knows when.
    create(&store, "done", Finished).await;
    assert!(
        store
            .get(&game("done"))
            .await
            .unwrap()
            .finished_at_ms
            .is_some()
    );
}

/// Two snapshots naming the health entries they reflect are ordered by them, across
/// transactions: a duplicate, or an older entry with a later clock, is stale.
#[tokio::test]
async fn snapshots_naming_their_health_entries_keep_the_latest_entry_whatever_the_clocks() {
    let (_db, store) = fresh_store().await;
    create(&store, "g", Running).await;
    let from = |turn: u32, at: i64, seq: u64| RuntimeSnapshot {
        source: Some(contracts::SourceEntryId { ms: 7, seq }),
        ..snapshot(turn, "running", "healthy", at)
    };
    let results = store
        .apply_snapshots(&[
            update("g", from(1, 500, 2), vec![]),
            update("g", from(2, 900, 1), vec![]), // older entry, later clock
            update("g", from(3, 100, 3), vec![]), // later entry, earlier clock
        ])
        .await
        .unwrap();
    assert_eq!(results[0], SnapshotResult::Applied);
    assert!(matches!(results[1], SnapshotResult::Stale { .. }));
    assert_eq!(results[2], SnapshotResult::Applied);
    assert_eq!(
        store.get(&game("g")).await.unwrap().snapshot,
        Some(from(3, 100, 3))
    );
    let again = store
        .update_runtime_snapshot(&game("g"), &from(3, 100, 3))
        .await
        .unwrap();
    assert!(
        matches!(again, SnapshotResult::Stale { .. }),
        "a duplicate: {again:?}"
    );
}

#[tokio::test]
async fn an_older_snapshot_never_replaces_a_newer_one() {
    let (_db, store) = fresh_store().await;
    create(&store, "g", Running).await;
    let results = store
        .apply_snapshots(&[
            update("g", snapshot(3, "running", "healthy", 100), vec![]),
            update("g", snapshot(2, "running", "probe_failed", 50), vec![]),
            update("ghost", snapshot(1, "running", "healthy", 100), vec![]),
            update("g", snapshot(4, "engine_unreachable", "oom", 100), vec![]),
        ])
        .await
        .unwrap();
    assert_eq!(
        results,
        vec![
            SnapshotResult::Applied,
            SnapshotResult::Stale {
                stored_observed_at_ms: 100
            },
            SnapshotResult::UnknownGame,
            // The same millisecond: stream order wins.
            SnapshotResult::Applied,
        ]
    );
    let stored = store.get(&game("g")).await.unwrap();
    assert_eq!(
        stored.snapshot,
        Some(snapshot(4, "engine_unreachable", "oom", 100))
    );
    assert!(stored.updated_at >= stored.created_at);

    // A later transaction with an older snapshot changes nothing either.
    let older = snapshot(9, "running", "healthy", 99);
    assert_eq!(
        store
            .update_runtime_snapshot(&game("g"), &older)
            .await
            .unwrap(),
        SnapshotResult::Stale {
            stored_observed_at_ms: 100
        }
    );
    let newer = snapshot(9, "running", "healthy", 101);
    assert_eq!(
        store
            .update_runtime_snapshot(&game("g"), &newer)
            .await
            .unwrap(),
        SnapshotResult::Applied
    );
    assert_eq!(store.get(&game("g")).await.unwrap().snapshot, Some(newer));
    assert_eq!(
        store
            .update_runtime_snapshot(&game("ghost"), &snapshot(1, "", "", 1))
            .await
            .unwrap(),
        SnapshotResult::UnknownGame
    );
}

#[tokio::test]
async fn stats_freeze_the_first_observation_and_raise_each_maximum() {
    let (_db, store) = fresh_store().await;
    create(&store, "g", Running).await;
    create(&store, "h", Running).await;
    store
        .apply_snapshots(&[
            update(
                "g",
                snapshot(1, "running", "healthy", 10),
                // Alice twice in one event: the first entry is her initial.
                vec![
                    stats("alice", 3, 30, 0),
                    stats("bob", 1, 10, 1),
                    stats("alice", 2, 40, 0),
                ],
            ),
            update(
                "h",
                snapshot(1, "running", "healthy", 10),
                vec![stats("alice", 9, 9, 9)],
            ),
        ])
        .await
        .unwrap();
    // A stale snapshot still feeds the stats.
    let results = store
        .apply_snapshots(&[update(
            "g",
            snapshot(1, "running", "healthy", 5),
            vec![stats("alice", 1, 35, 6), stats("carol", 0, 5, 0)],
        )])
        .await
        .unwrap();
    assert!(matches!(results[0], SnapshotResult::Stale { .. }));

    let g = store.load(&game("g")).await.unwrap();
    assert_eq!(g.len(), 3);
    assert_eq!(g[&user("alice")].initial(), values(3, 30, 0));
    assert_eq!(g[&user("alice")].max(), values(3, 40, 6));
    assert_eq!(g[&user("bob")].initial(), values(1, 10, 1));
    assert_eq!(g[&user("bob")].max(), values(1, 10, 1));
    assert_eq!(g[&user("carol")].max(), values(0, 5, 0));
    let h = store.load(&game("h")).await.unwrap();
    assert_eq!(h[&user("alice")].max(), values(9, 9, 9));
    assert!(store.load(&game("nobody")).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_single_stat_steps_keep_the_same_rules() {
    let (_db, store) = fresh_store().await;
    create(&store, "g", Running).await;
    let first = [stats("a", 2, 20, 2), stats("a", 5, 1, 1)];
    assert_eq!(store.save_initial(&game("g"), &first).await.unwrap(), 1);
    store.update_max(&game("g"), &first).await.unwrap();
    let later = [stats("a", 1, 30, 0), stats("b", 7, 7, 7)];
    // Only b is new; a's initial stays.
    assert_eq!(store.save_initial(&game("g"), &later).await.unwrap(), 1);
    store.update_max(&game("g"), &later).await.unwrap();
    let loaded = store.load(&game("g")).await.unwrap();
    assert_eq!(loaded[&user("a")].initial(), values(2, 20, 2));
    assert_eq!(loaded[&user("a")].max(), values(5, 30, 2));
    assert_eq!(loaded[&user("b")].initial(), values(7, 7, 7));
    assert!(matches!(
        store.save_initial(&game("ghost"), &later).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(store.save_initial(&game("g"), &[]).await.unwrap(), 0);
}

#[tokio::test]
async fn status_compare_and_swap_checks_the_source() {
    let (_db, store) = fresh_store().await;
    create(&store, "g", Running).await;
    let pause = UpdateStatus::new(game("g"), Running, Paused, Trigger::Admin, 1_000).unwrap();
    let paused = store.update_status(&pause).await.unwrap();
    assert_eq!(paused.status, Paused);
    assert_eq!(paused.finished_at_ms, None);
    match store.update_status(&pause).await {
        Err(Error::Conflict {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (Running, Paused)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let finish = UpdateStatus::new(
        game("g"),
        Paused,
        Finished,
        Trigger::RuntimeEvent,
        1_700_000_000_123,
    )
    .unwrap();
    let finished = store.update_status(&finish).await.unwrap();
    assert_eq!(finished.finished_at_ms, Some(1_700_000_000_123));
    let ghost = UpdateStatus::new(game("ghost"), Running, Paused, Trigger::Admin, 1).unwrap();
    assert!(matches!(
        store.update_status(&ghost).await,
        Err(Error::NotFound(_))
    ));
}

fn finish(id: &str, at: i64, players: Vec<PlayerObservedStats>) -> FinishGame {
    FinishGame::new(
        update(id, snapshot(40, "finished", "healthy", at), players),
        at,
    )
    .unwrap()
}

#[tokio::test]
async fn finishing_moves_running_and_paused_games_once_and_leaves_others_alone() {
    let (_db, store) = fresh_store().await;
    create(&store, "run", Running).await;
    create(&store, "pause", Paused).await;
    create(&store, "off", Cancelled).await;

    let first = store
        .finish_game(&finish("run", 1_000, vec![stats("a", 1, 1, 1)]))
        .await
        .unwrap();
    let FinishResult::Finished {
        transition,
        finished_at_ms: 1_000,
        snapshot_applied: true,
    } = first
    else {
        panic!("expected Finished, got {first:?}");
    };
    assert_eq!((transition.from(), transition.to()), (Running, Finished));
    let record = store.get(&game("run")).await.unwrap();
    assert_eq!(record.status, Finished);
    assert_eq!(record.finished_at_ms, Some(1_000));
    assert_eq!(record.snapshot.unwrap().current_turn, 40);

    // A replay finds it finished and keeps the first finish time.
    assert_eq!(
        store
            .finish_game(&finish("run", 2_000, vec![]))
            .await
            .unwrap(),
        FinishResult::AlreadyFinished {
            finished_at_ms: 1_000,
            snapshot_applied: true,
        }
    );
    assert_eq!(
        store.get(&game("run")).await.unwrap().finished_at_ms,
        Some(1_000)
    );

    assert!(matches!(
        store
            .finish_game(&finish("pause", 5, vec![]))
            .await
            .unwrap(),
        FinishResult::Finished { .. }
    ));

    // A cancelled game stays cancelled, but its snapshot and stats are recorded.
    assert_eq!(
        store
            .finish_game(&finish("off", 7, vec![stats("b", 2, 2, 2)]))
            .await
            .unwrap(),
        FinishResult::UnexpectedStatus {
            status: Cancelled,
            snapshot_applied: true,
        }
    );
    let off = store.get(&game("off")).await.unwrap();
    assert_eq!(off.status, Cancelled);
    assert_eq!(off.finished_at_ms, None);
    assert_eq!(off.snapshot.unwrap().observed_at_ms, 7);
    assert_eq!(store.load(&game("off")).await.unwrap().len(), 1);

    assert_eq!(
        store
            .finish_game(&finish("ghost", 7, vec![]))
            .await
            .unwrap(),
        FinishResult::UnknownGame
    );
}

#[tokio::test]
async fn evaluation_folds_each_game_into_the_careers_exactly_once() {
    let (_db, store) = fresh_store().await;
    create(&store, "g1", Running).await;
    create(&store, "g2", Running).await;
    store
        .apply_snapshots(&[update(
            "g1",
            snapshot(1, "running", "healthy", 10),
            vec![stats("alice", 2, 100, 1), stats("bob", 1, 50, 3)],
        )])
        .await
        .unwrap();
    store
        .finish_game(&finish("g1", 20, vec![stats("alice", 5, 80, 1)]))
        .await
        .unwrap();
    store
        .finish_game(&finish("g2", 30, vec![stats("alice", 4, 300, 0)]))
        .await
        .unwrap();

    assert_eq!(store.evaluated_at(&game("g1")).await.unwrap(), None);
    assert_eq!(
        store.evaluate(&game("g1"), 20).await.unwrap(),
        Evaluation::Evaluated { players: 2 }
    );
    assert!(store.evaluated_at(&game("g1")).await.unwrap().is_some());
    // Again: nothing changes.
    assert_eq!(
        store.evaluate(&game("g1"), 20).await.unwrap(),
        Evaluation::AlreadyEvaluated
    );
    assert_eq!(
        store.evaluate_once(&game("g2"), 30).await.unwrap(),
        Evaluation::Evaluated { players: 1 }
    );
    assert_eq!(
        store.evaluate(&game("g2"), 30).await.unwrap(),
        Evaluation::AlreadyEvaluated
    );

    let careers = store
        .careers(&[user("alice"), user("bob"), user("nobody")])
        .await
        .unwrap();
    assert_eq!(
        careers,
        vec![
            CareerRecord {
                user_id: user("alice"),
                games_finished: 2,
                best_planets: 5,
                best_population: 300,
                most_ships_built: 1,
            },
            CareerRecord {
                user_id: user("bob"),
                games_finished: 1,
                best_planets: 1,
                best_population: 50,
                most_ships_built: 3,
            },
        ]
    );
    assert!(matches!(
        store.evaluate(&game("ghost"), 1).await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn concurrent_evaluations_count_every_game_once() {
    let (_db, store) = fresh_store().await;
    let games: Vec<String> = (0..6).map(|i| format!("g{i}")).collect();
    for id in &games {
        create(&store, id, Running).await;
        store
            .finish_game(&finish(
                id,
                10,
                vec![stats("shared", 1, 1, 1), stats(id, 1, 1, 1)],
            ))
            .await
            .unwrap();
    }
    // Every game evaluated twice, all at once: each game counts once, the shared player
    // (new to the careers table) sees all six.
    let mut tasks = Vec::new();
    for id in games.iter().chain(games.iter()) {
        let store = store.clone();
        let id = game(id);
        tasks.push(tokio::spawn(async move { store.evaluate(&id, 10).await }));
    }
    let mut evaluated = 0;
    for task in tasks {
        if let Evaluation::Evaluated { .. } = task.await.unwrap().unwrap() {
            evaluated += 1;
        }
    }
    assert_eq!(evaluated, 6);
    let shared = store.careers(&[user("shared")]).await.unwrap();
    assert_eq!(shared[0].games_finished, 6);
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let closed = format!(
        "postgres://postgres@127.0.0.1:{}/lobby",
        testkit::free_port()
    );
    let settings = PgSettings::default()
        .wait_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500));
    let (pool, _) = pg_kit::build_pool(&closed, &settings).unwrap();
    let store = PgLobbyStore::new(pool);
    let error = store.get(&game("g")).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    let error = store
        .apply_snapshots(&[update("g", snapshot(1, "running", "", 1), vec![])])
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
}
