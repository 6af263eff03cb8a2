//! `PgRuntimeRecordStore` against a real server, each test on a fresh database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use adapters_postgres::{BatchPaths, PgRuntimeRecordStore};
use std::sync::atomic::{AtomicU64, Ordering};

use domain_runtime::{
    EngineHealth, EntryPosition, GameId, HealthEventType, Ownership, RuntimeRecord, RuntimeStatus,
    ShardClaim, ShardCount, ShardMark,
};
use pg_kit::PgSettings;
use ports::{
    Error, HealthObservation, NewRuntime, ObservationResult, RuntimeRecordStore,
    UpdateEngineHealth, UpdateStatus,
};
use testkit::pg::{TestDb, ThrowawayPostgres};
use tokio_postgres::NoTls;

use RuntimeStatus::{EngineUnreachable, Finished, Running, Stopped};

async fn fresh_store() -> (TestDb, PgRuntimeRecordStore) {
    let db = TestDb::create().await.unwrap();
    let pool = pg_kit::connect(db.url(), &PgSettings::default())
        .await
        .unwrap();
    adapters_postgres::migrate(&pool).await.unwrap();
    let store = PgRuntimeRecordStore::new(pool);
    claim_every_shard(&store).await;
    (db, store)
}

/// The first claim of every shard of the default layout on a fresh database: each then
/// holds epoch 1, as [`owner`] says.
async fn claim_every_shard(store: &PgRuntimeRecordStore) {
    let all: Vec<u32> = ShardCount::default().all().collect();
    let claims = store
        .claim_shards("test", ShardCount::default(), &all)
        .await
        .unwrap();
    assert!(
        claims
            .iter()
            .all(|c| c.epoch == 1 && c.checkpoint.is_none())
    );
}

/// Every shard, under the epoch of the first claim.
/// A shard held under `epoch`, its mark to move to `published`.
fn held(shard: u32, epoch: u64, published: Option<EntryPosition>) -> ShardMark {
    ShardMark {
        shard,
        epoch,
        published,
    }
}

fn owner() -> Ownership {
    let count = ShardCount::default();
    Ownership::new(
        count,
        count.all().map(|shard| ShardClaim {
            shard,
            epoch: 1,
            checkpoint: None,
            published: None,
        }),
    )
}

/// Entry ids for observations: rising, as a stream's.
static NEXT_ENTRY: AtomicU64 = AtomicU64::new(1);

/// A plain connection of its own, for playing "another flow" and for looking under the
/// store.
async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

fn game(id: &str) -> GameId {
    GameId::new(id).unwrap()
}

async fn register(store: &PgRuntimeRecordStore, id: &str, status: RuntimeStatus) -> RuntimeRecord {
    store
        .register(&NewRuntime {
            game_id: game(id),
            status,
            current_turn: 7,
        })
        .await
        .unwrap()
}

fn observation(id: &str, event: HealthEventType) -> HealthObservation {
    HealthObservation {
        game_id: game(id),
        plan: domain_runtime::plan(event),
        entry: EntryPosition {
            ms: 1,
            seq: NEXT_ENTRY.fetch_add(1, Ordering::Relaxed),
        },
        shard: ShardCount::default().shard_of(id.as_bytes()),
    }
}

fn applied(result: &ObservationResult) -> (&RuntimeRecord, bool) {
    match result {
        ObservationResult::Applied {
            record,
            transitioned,
            ..
        } => (record, transitioned.is_some()),
        ObservationResult::UnknownGame => panic!("expected Applied, got UnknownGame"),
    }
}

#[tokio::test]
async fn register_then_get_returns_the_defaults() {
    let (_db, store) = fresh_store().await;
    let registered = register(&store, "g-1", Running).await;
    assert_eq!(registered.status, Running);
    assert_eq!(registered.engine_health, None);
    assert_eq!(registered.current_turn, 7);
    assert_eq!(registered.created_at, registered.updated_at);

    let fetched = store.get(&game("g-1")).await.unwrap();
    assert_eq!(fetched, registered);
}

#[tokio::test]
async fn registering_twice_is_already_exists() {
    let (_db, store) = fresh_store().await;
    register(&store, "g-1", Running).await;
    let err = store
        .register(&NewRuntime {
            game_id: game("g-1"),
            status: Stopped,
            current_turn: 0,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::AlreadyExists(ref g) if g.as_str() == "g-1"),
        "{err:?}"
    );
    assert_eq!(store.get(&game("g-1")).await.unwrap().status, Running);
}

#[tokio::test]
async fn get_of_an_unknown_game_is_not_found() {
    let (_db, store) = fresh_store().await;
    let err = store.get(&game("nope")).await.unwrap_err();
    assert!(
        matches!(err, Error::NotFound(ref g) if g.as_str() == "nope"),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_table_accepts_the_insert_other_tools_use() {
    let (db, store) = fresh_store().await;
    let client = raw_client(db.url()).await;
    client
        .execute(
            "INSERT INTO runtime_records (game_id, status, current_turn) VALUES ($1, $2, $3)",
            &[&"ext-1", &"generation_in_progress", &3_i32],
        )
        .await
        .unwrap();
    let record = store.get(&game("ext-1")).await.unwrap();
    assert_eq!(record.status, RuntimeStatus::GenerationInProgress);
    assert_eq!(record.engine_health, None);
    assert_eq!(record.current_turn, 3);

    let bad = client
        .execute(
            "INSERT INTO runtime_records (game_id, status, current_turn) VALUES ('x', 'paused', 0)",
            &[],
        )
        .await;
    assert!(bad.is_err(), "the status CHECK rejects unknown statuses");
}

#[tokio::test]
async fn a_successful_cas_writes_status_and_summary_and_advances_updated_at() {
    let (_db, store) = fresh_store().await;
    let before = register(&store, "g-1", Running).await;
    tokio::time::sleep(Duration::from_millis(5)).await;

    let update = UpdateStatus::new(
        game("g-1"),
        Running,
        EngineUnreachable,
        Some(EngineHealth::Oom),
    )
    .unwrap();
    let after = store.update_status(&update).await.unwrap();
    assert_eq!(after.status, EngineUnreachable);
    assert_eq!(after.engine_health, Some(EngineHealth::Oom));
    assert!(after.updated_at > before.updated_at);
    assert_eq!(after.created_at, before.created_at);
    assert_eq!(store.get(&game("g-1")).await.unwrap(), after);

    // Without a summary the stored one is kept.
    let back = UpdateStatus::new(game("g-1"), EngineUnreachable, Running, None).unwrap();
    let record = store.update_status(&back).await.unwrap();
    assert_eq!(record.status, Running);
    assert_eq!(record.engine_health, Some(EngineHealth::Oom));
}

#[tokio::test]
async fn a_cas_from_the_wrong_status_is_a_conflict_naming_the_actual_status() {
    let (_db, store) = fresh_store().await;
    let before = register(&store, "g-1", Stopped).await;
    let update = UpdateStatus::new(
        game("g-1"),
        Running,
        EngineUnreachable,
        Some(EngineHealth::Oom),
    )
    .unwrap();
    let err = store.update_status(&update).await.unwrap_err();
    match err {
        Error::Conflict {
            game_id,
            expected,
            actual,
        } => {
            assert_eq!(game_id.as_str(), "g-1");
            assert_eq!(expected, Running);
            assert_eq!(actual, Stopped);
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(
        store.get(&game("g-1")).await.unwrap(),
        before,
        "nothing written"
    );

    let missing = UpdateStatus::new(game("ghost"), Running, Stopped, None).unwrap();
    let err = store.update_status(&missing).await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn an_invalid_transition_is_rejected_before_any_sql() {
    let (_db, store) = fresh_store().await;
    let before = register(&store, "g-1", Finished).await;
    for (from, to) in [
        (Finished, Running),
        (Running, Running),
        (Stopped, EngineUnreachable),
    ] {
        let err = UpdateStatus::new(game("g-1"), from, to, Some(EngineHealth::Healthy))
            .expect_err("not in the table");
        assert!(matches!(err, Error::InvalidTransition(_)), "{err:?}");
    }
    // No request could be built, so the store was never asked: the row is untouched.
    assert_eq!(store.get(&game("g-1")).await.unwrap(), before);
}

#[tokio::test]
async fn a_health_only_update_works_on_every_status() {
    let (_db, store) = fresh_store().await;
    for status in RuntimeStatus::ALL {
        let id = format!("g-{status}");
        let before = register(&store, &id, status).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
        let after = store
            .update_engine_health(&UpdateEngineHealth {
                game_id: game(&id),
                engine_health: EngineHealth::ProbeFailed,
            })
            .await
            .unwrap();
        assert_eq!(after.status, status, "{status}: status untouched");
        assert_eq!(
            after.engine_health,
            Some(EngineHealth::ProbeFailed),
            "{status}"
        );
        assert!(
            after.updated_at > before.updated_at,
            "{status}: updated_at set"
        );
    }
    let err = store
        .update_engine_health(&UpdateEngineHealth {
            game_id: game("ghost"),
            engine_health: EngineHealth::Healthy,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_concurrent_cas_racers_exactly_one_wins() {
    let (_db, store) = fresh_store().await;
    let store = Arc::new(store);
    for round in 0..20 {
        let id = format!("race-{round}");
        register(&store, &id, Running).await;
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let racer = |to: RuntimeStatus| {
            let (store, barrier, id) = (Arc::clone(&store), Arc::clone(&barrier), id.clone());
            tokio::spawn(async move {
                let update = UpdateStatus::new(game(&id), Running, to, None).unwrap();
                barrier.wait().await;
                store.update_status(&update).await
            })
        };
        let (a, b) = (racer(Stopped), racer(Finished));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let (winner, loser) = match (a, b) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
            (a, b) => panic!("round {round}: expected one winner, got {a:?} and {b:?}"),
        };
        match loser {
            Error::Conflict {
                expected, actual, ..
            } => {
                assert_eq!(expected, Running);
                assert_eq!(actual, winner.status, "round {round}");
            }
            other => panic!("round {round}: expected Conflict, got {other:?}"),
        }
        assert_eq!(store.get(&game(&id)).await.unwrap().status, winner.status);
    }
}

#[tokio::test]
async fn observations_of_one_game_in_a_batch_each_see_the_previous_ones_state() {
    let (_db, store) = fresh_store().await;
    let before = register(&store, "g-1", Running).await;
    let batch = [
        observation("g-1", HealthEventType::ContainerOom),
        observation("g-1", HealthEventType::ContainerExited),
        observation("g-1", HealthEventType::ProbeRecovered),
    ];
    let results = store
        .apply_health_batch(&batch, &[], &owner())
        .await
        .unwrap();
    assert_eq!(results.len(), 3);

    let expected = [
        (EngineUnreachable, EngineHealth::Oom, true),
        (EngineUnreachable, EngineHealth::Exited, false),
        (Running, EngineHealth::Healthy, true),
    ];
    let mut stamps = Vec::new();
    for (result, (status, health, moved)) in results.iter().zip(expected) {
        let (record, transitioned) = applied(result);
        assert_eq!(record.status, status);
        assert_eq!(record.engine_health, Some(health));
        assert_eq!(transitioned, moved, "{status} {health}");
        assert_eq!(record.current_turn, 7);
        assert_eq!(record.created_at, before.created_at);
        assert!(record.updated_at > before.updated_at);
        stamps.push(record.updated_at);
    }
    assert!(
        stamps.windows(2).all(|w| w[0] == w[1]),
        "one transaction, one timestamp"
    );

    let stored = store.get(&game("g-1")).await.unwrap();
    assert_eq!(
        &stored,
        applied(&results[2]).0,
        "the last result is what is stored"
    );
}

#[tokio::test]
async fn unknown_games_in_a_batch_are_reported_and_not_created() {
    let (_db, store) = fresh_store().await;
    register(&store, "known", Running).await;
    let batch = [
        observation("ghost-1", HealthEventType::ContainerOom),
        observation("known", HealthEventType::ProbeFailed),
        observation("ghost-2", HealthEventType::ContainerStarted),
        observation("ghost-1", HealthEventType::ProbeRecovered),
    ];
    let results = store
        .apply_health_batch(&batch, &[], &owner())
        .await
        .unwrap();
    assert_eq!(results[0], ObservationResult::UnknownGame);
    let (record, moved) = applied(&results[1]);
    assert_eq!(
        (record.status, record.engine_health, moved),
        (Running, Some(EngineHealth::ProbeFailed), false)
    );
    assert_eq!(results[2], ObservationResult::UnknownGame);
    assert_eq!(results[3], ObservationResult::UnknownGame);
    assert!(matches!(
        store.get(&game("ghost-1")).await,
        Err(Error::NotFound(_))
    ));

    let only_unknown = store
        .apply_health_batch(
            &[observation("ghost-3", HealthEventType::ContainerOom)],
            &[],
            &owner(),
        )
        .await
        .unwrap();
    assert_eq!(only_unknown, [ObservationResult::UnknownGame]);
    assert!(
        store
            .apply_health_batch(&[], &[], &owner())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_batch_across_many_games_keeps_each_games_order() {
    let (_db, store) = fresh_store().await;
    let games = 300;
    for i in 0..games {
        let status = if i % 3 == 0 { Stopped } else { Running };
        register(&store, &format!("g-{i:04}"), status).await;
    }
    // Interleave three events per game across the whole batch.
    let events = [
        HealthEventType::ContainerExited,
        HealthEventType::ProbeRecovered,
        HealthEventType::ContainerDisappeared,
    ];
    let batch: Vec<_> = events
        .iter()
        .flat_map(|event| (0..games).map(move |i| observation(&format!("g-{i:04}"), *event)))
        .collect();
    let results = store
        .apply_health_batch(&batch, &[], &owner())
        .await
        .unwrap();
    assert_eq!(results.len(), batch.len());
    for i in 0..games {
        let last = applied(&results[2 * games + i]).0;
        let expected = if i % 3 == 0 {
            Stopped
        } else {
            EngineUnreachable
        };
        assert_eq!(last.status, expected, "game {i}");
        assert_eq!(last.engine_health, Some(EngineHealth::Disappeared));
        assert_eq!(&store.get(&last.game_id).await.unwrap(), last);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_over_the_same_games_do_not_deadlock() {
    let (_db, store) = fresh_store().await;
    let store = Arc::new(store);
    let ids: Vec<String> = (0..20).map(|i| format!("g-{i:02}")).collect();
    for id in &ids {
        register(&store, id, Running).await;
    }
    let forward: Vec<_> = ids
        .iter()
        .map(|id| observation(id, HealthEventType::ProbeFailed))
        .collect();
    let backward: Vec<_> = forward.iter().rev().cloned().collect();
    let mut tasks = Vec::new();
    for batch in [forward, backward] {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                store.apply_health_batch(&batch, &[], &owner()).await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("batches finish")
            .unwrap()
            .unwrap();
    }
}

/// The stored status and summary of `id`, read without the store.
async fn stored(client: &tokio_postgres::Client, id: &str) -> (String, String) {
    let row = client
        .query_one(
            "SELECT status, engine_health FROM runtime_records WHERE game_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn once_a_batch_has_seen_its_games_the_next_takes_the_one_statement_path() {
    let (db, store) = fresh_store().await;
    let before = register(&store, "g-1", Running).await;
    register(&store, "g-2", Running).await;
    let first = [
        observation("g-1", HealthEventType::ContainerExited),
        observation("g-2", HealthEventType::ProbeFailed),
    ];
    store
        .apply_health_batch(&first, &[], &owner())
        .await
        .unwrap();
    assert_eq!(
        store.batch_paths(),
        BatchPaths {
            guarded: 0,
            locked: 1,
            guard_missed: 0
        }
    );

    let second = [
        observation("g-1", HealthEventType::ProbeRecovered),
        observation("g-2", HealthEventType::ContainerOom),
        observation("g-1", HealthEventType::ContainerDisappeared),
    ];
    let results = store
        .apply_health_batch(&second, &[], &owner())
        .await
        .unwrap();
    assert_eq!(
        store.batch_paths(),
        BatchPaths {
            guarded: 1,
            locked: 1,
            guard_missed: 0
        }
    );
    let expected = [
        (Running, EngineHealth::Healthy, true),
        (EngineUnreachable, EngineHealth::Oom, true),
        (EngineUnreachable, EngineHealth::Disappeared, true),
    ];
    for (result, (status, health, moved)) in results.iter().zip(expected) {
        let (record, transitioned) = applied(result);
        assert_eq!(
            (record.status, record.engine_health, transitioned),
            (status, Some(health), moved)
        );
        assert_eq!(record.current_turn, 7);
        if record.game_id == before.game_id {
            assert_eq!(record.created_at, before.created_at);
        }
    }
    assert_eq!(
        &store.get(&game("g-1")).await.unwrap(),
        applied(&results[2]).0
    );
    assert_eq!(
        &store.get(&game("g-2")).await.unwrap(),
        applied(&results[1]).0
    );
    let raw = raw_client(db.url()).await;
    assert_eq!(
        stored(&raw, "g-1").await,
        ("engine_unreachable".to_owned(), "disappeared".to_owned())
    );
}

#[tokio::test]
async fn a_status_moved_by_another_flow_since_the_last_batch_is_seen_and_nothing_is_written_twice()
{
    let (db, store) = fresh_store().await;
    register(&store, "moved", Running).await;
    register(&store, "still", Running).await;
    let warm = [
        observation("moved", HealthEventType::ProbeFailed),
        observation("still", HealthEventType::ProbeFailed),
    ];
    store
        .apply_health_batch(&warm, &[], &owner())
        .await
        .unwrap();

    // Another flow (turn generation) moves one status behind the store's back.
    let raw = raw_client(db.url()).await;
    raw.execute(
        "UPDATE runtime_records SET status = 'generation_in_progress' WHERE game_id = 'moved'",
        &[],
    )
    .await
    .unwrap();

    let batch = [
        observation("still", HealthEventType::ContainerExited),
        observation("moved", HealthEventType::ContainerExited),
        observation("still", HealthEventType::ProbeRecovered),
    ];
    let results = store
        .apply_health_batch(&batch, &[], &owner())
        .await
        .unwrap();
    assert_eq!(
        store.batch_paths(),
        BatchPaths {
            guarded: 0,
            locked: 2,
            guard_missed: 1
        }
    );
    let got: Vec<(RuntimeStatus, bool)> = results
        .iter()
        .map(|r| {
            let (record, moved) = applied(r);
            (record.status, moved)
        })
        .collect();
    assert_eq!(
        got,
        [
            (EngineUnreachable, true),
            (RuntimeStatus::GenerationInProgress, false),
            (Running, true),
        ],
        "the CAS of the moved game falls back; the other game's observations apply once each"
    );
    assert_eq!(
        stored(&raw, "moved").await,
        ("generation_in_progress".to_owned(), "exited".to_owned())
    );
    assert_eq!(
        stored(&raw, "still").await,
        ("running".to_owned(), "healthy".to_owned())
    );

    // The locked path refreshed what the store knows: the next batch is guarded again.
    store
        .apply_health_batch(
            &[observation("moved", HealthEventType::ProbeRecovered)],
            &[],
            &owner(),
        )
        .await
        .unwrap();
    assert_eq!(store.batch_paths().guarded, 1);
}

#[tokio::test]
async fn a_record_deleted_since_the_last_batch_is_an_unknown_game() {
    let (db, store) = fresh_store().await;
    register(&store, "gone", Running).await;
    register(&store, "kept", Running).await;
    let warm = [
        observation("gone", HealthEventType::ProbeFailed),
        observation("kept", HealthEventType::ProbeFailed),
    ];
    store
        .apply_health_batch(&warm, &[], &owner())
        .await
        .unwrap();
    let raw = raw_client(db.url()).await;
    raw.execute("DELETE FROM runtime_records WHERE game_id = 'gone'", &[])
        .await
        .unwrap();

    let results = store
        .apply_health_batch(
            &[
                observation("gone", HealthEventType::ContainerOom),
                observation("kept", HealthEventType::ContainerOom),
            ],
            &[],
            &owner(),
        )
        .await
        .unwrap();
    assert!(matches!(results[0], ObservationResult::UnknownGame));
    assert_eq!(applied(&results[1]).0.status, EngineUnreachable);
    assert_eq!(store.batch_paths().guard_missed, 1);
    let count: i64 = raw
        .query_one(
            "SELECT count(*) FROM runtime_records WHERE game_id = 'gone'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0, "nothing is created for it");
}

/// A fresh store with game g-1 running; `seen` applies one observation to it first, so the
/// store knows its status (the next batch takes the guarded path) or not (the locked one).
async fn store_with_one_game(seen: bool) -> (TestDb, PgRuntimeRecordStore) {
    let (db, store) = fresh_store().await;
    register(&store, "g-1", Running).await;
    if seen {
        store
            .apply_health_batch(
                &[observation("g-1", HealthEventType::ProbeFailed)],
                &[],
                &owner(),
            )
            .await
            .unwrap();
    }
    (db, store)
}

/// Another flow (an admin stop) holds game g-1's row in an open transaction while a
/// batch about it arrives; `seen_before` makes the store know g-1's status already (the
/// guarded path) or not (the locked path). The batch must wait for the row, then see the
/// committed status and fall back to a health-only write.
async fn a_batch_meets_a_row_another_flow_holds(seen_before: bool) -> BatchPaths {
    let (db, store) = store_with_one_game(seen_before).await;

    let mut other = raw_client(db.url()).await;
    let tx = other.transaction().await.unwrap();
    tx.execute(
        "UPDATE runtime_records SET status = 'stopped', updated_at = now() WHERE game_id = 'g-1'",
        &[],
    )
    .await
    .unwrap();
    let batch_store = store.clone();
    let batch = tokio::spawn(async move {
        batch_store
            .apply_health_batch(
                &[observation("g-1", HealthEventType::ContainerOom)],
                &[],
                &owner(),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!batch.is_finished(), "the batch waits for the row lock");

    tx.commit().await.unwrap();
    let results = tokio::time::timeout(Duration::from_secs(5), batch)
        .await
        .expect("the batch proceeds after the commit")
        .unwrap()
        .unwrap();
    let (record, moved) = applied(&results[0]);
    assert_eq!(
        (record.status, record.engine_health, moved),
        (Stopped, Some(EngineHealth::Oom), false),
        "the CAS saw the committed status and fell back"
    );
    assert_eq!(&store.get(&game("g-1")).await.unwrap(), record);
    store.batch_paths()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waits_for_a_row_locked_by_another_flow_and_then_sees_its_status() {
    let paths = a_batch_meets_a_row_another_flow_holds(false).await;
    assert_eq!((paths.locked, paths.guarded), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_batch_waits_for_a_row_another_flow_holds_and_then_sees_its_status() {
    let paths = a_batch_meets_a_row_another_flow_holds(true).await;
    assert_eq!(
        paths.guard_missed, 1,
        "the guard saw the moved status; the locked path then applied the batch"
    );
}

#[tokio::test]
async fn a_server_that_goes_away_is_unavailable_not_not_found() {
    let server = ThrowawayPostgres::start().await.unwrap();
    let settings = PgSettings::default().connect_timeout(Duration::from_secs(2));
    let pool = pg_kit::connect(&server.url("postgres"), &settings)
        .await
        .unwrap();
    adapters_postgres::migrate(&pool).await.unwrap();
    let store = PgRuntimeRecordStore::new(pool);
    claim_every_shard(&store).await;
    register(&store, "g-1", Running).await;

    server.stop().await.unwrap();

    let err = store.get(&game("g-1")).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "get: {err:?}");
    assert!(err.is_transient());
    let batch = [observation("g-1", HealthEventType::ContainerOom)];
    let err = store
        .apply_health_batch(&batch, &[], &owner())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "batch: {err:?}");
    let update = UpdateStatus::new(game("g-1"), Running, Stopped, None).unwrap();
    let err = store.update_status(&update).await.unwrap_err();
    assert!(
        matches!(err, Error::Unavailable(_)),
        "update_status: {err:?}"
    );

    // Nothing was written while it was away; once back, the same store works again.
    server.start_again().await.unwrap();
    let started = SystemTime::now();
    let results = loop {
        match store.apply_health_batch(&batch, &[], &owner()).await {
            Ok(results) => break results,
            Err(e) if e.is_transient() && started.elapsed().unwrap() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("after restart: {e:?}"),
        }
    };
    let (record, moved) = applied(&results[0]);
    assert_eq!((record.status, moved), (EngineUnreachable, true));
}

#[tokio::test]
async fn a_claim_raises_each_epoch_and_the_layout_is_set_once() {
    let (db, store) = fresh_store().await;
    let claims = store
        .claim_shards("next", ShardCount::default(), &[3, 1])
        .await
        .unwrap();
    let epochs: Vec<(u32, u64)> = claims.iter().map(|c| (c.shard, c.epoch)).collect();
    assert_eq!(epochs, [(1, 2), (3, 2)]);
    let read = store.read_shards(&[0, 1, 3]).await.unwrap();
    let epochs: Vec<(u32, u64)> = read.iter().map(|c| (c.shard, c.epoch)).collect();
    assert_eq!(epochs, [(0, 1), (1, 2), (3, 2)]);

    let other = ShardCount::new(8).unwrap();
    let err = store.claim_shards("x", other, &[0]).await.unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("64 shards, not 8")),
        "{err:?}"
    );
    let err = store
        .claim_shards("x", ShardCount::default(), &[64])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("outside")),
        "{err:?}"
    );
    db.drop_db().await.unwrap();
}

/// A batch on the guarded path (`warm`: every status known) or the locked one.
async fn a_batch_under_a_stale_epoch_is_fenced_and_writes_nothing(warm: bool) {
    let (db, store) = store_with_one_game(warm).await;
    let shard = ShardCount::default().shard_of(b"g-1");
    let before = store.read_shards(&[shard]).await.unwrap();
    // Another instance claims the shard: this one's epoch 1 is stale now.
    store
        .claim_shards("other", ShardCount::default(), &[shard])
        .await
        .unwrap();
    let err = store
        .apply_health_batch(
            &[observation("g-1", HealthEventType::ContainerOom)],
            &[],
            &owner(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Fenced { shard: s, .. } if *s == shard),
        "{err:?}"
    );
    assert!(err.is_fenced() && !err.is_transient() && !err.is_refused());
    let record = store.get(&game("g-1")).await.unwrap();
    assert_eq!(record.status, Running, "nothing written");
    assert_ne!(record.engine_health, Some(EngineHealth::Oom));
    let after = store.read_shards(&[shard]).await.unwrap();
    assert_eq!(after[0].checkpoint, before[0].checkpoint);
    // The store still works for the epoch that holds the shard.
    let current = Ownership::new(ShardCount::default(), after);
    store
        .apply_health_batch(
            &[observation("g-1", HealthEventType::ContainerOom)],
            &[],
            &current,
        )
        .await
        .unwrap();
    db.drop_db().await.unwrap();
}

#[tokio::test]
async fn a_guarded_batch_under_a_stale_epoch_is_fenced_and_writes_nothing() {
    a_batch_under_a_stale_epoch_is_fenced_and_writes_nothing(true).await;
}

#[tokio::test]
async fn a_locked_batch_under_a_stale_epoch_is_fenced_and_writes_nothing() {
    a_batch_under_a_stale_epoch_is_fenced_and_writes_nothing(false).await;
}

#[tokio::test]
async fn a_batch_moves_each_of_its_shards_checkpoint_to_its_last_entry_even_for_unknown_games() {
    let (db, store) = fresh_store().await;
    register(&store, "g-1", Running).await;
    let (a, b, ghost) = (
        observation("g-1", HealthEventType::ProbeFailed),
        observation("g-1", HealthEventType::ProbeRecovered),
        observation("ghost", HealthEventType::ContainerOom),
    );
    store
        .apply_health_batch(&[a.clone(), b.clone()], &[], &owner())
        .await
        .unwrap();
    // Only unknown games: the locked path with nothing to write still moves the checkpoint.
    let results = store
        .apply_health_batch(std::slice::from_ref(&ghost), &[], &owner())
        .await
        .unwrap();
    assert!(matches!(results[..], [ObservationResult::UnknownGame]));
    let read = store.read_shards(&[a.shard, ghost.shard]).await.unwrap();
    let at = |shard| read.iter().find(|c| c.shard == shard).unwrap().checkpoint;
    // g-1's shard ends at its last entry, unless the ghost's later entry shares it.
    assert_ne!(a.shard, ghost.shard, "the test wants two shards");
    assert_eq!(at(a.shard), Some(b.entry));
    assert_eq!(at(ghost.shard), Some(ghost.entry));
    // A batch records the writer's published mark on its shards.
    let mut marked = owner();
    let publish = marked.queue();
    marked.sent(publish, b.entry);
    let c = observation("g-1", HealthEventType::ProbeFailed);
    store
        .apply_health_batch(std::slice::from_ref(&c), &[], &marked)
        .await
        .unwrap();
    let read = store.read_shards(&[c.shard]).await.unwrap();
    assert_eq!(
        (read[0].checkpoint, read[0].published),
        (Some(c.entry), Some(b.entry))
    );
    let claimed = store
        .claim_shards("next", ShardCount::default(), &[c.shard])
        .await
        .unwrap();
    assert_eq!(claimed[0].published, Some(b.entry), "a claim reads it back");
    // A shard this instance never claimed is refused before any statement.
    let none = Ownership::new(ShardCount::default(), []);
    let err = store
        .apply_health_batch(&[a], &[], &none)
        .await
        .unwrap_err();
    assert!(err.is_fenced(), "{err:?}");
    db.drop_db().await.unwrap();
}

/// The kept snapshots, as `(entry, status, summary, current turn)`.
async fn kept(
    store: &PgRuntimeRecordStore,
    shard: u32,
) -> Vec<(EntryPosition, RuntimeStatus, Option<EngineHealth>, u32)> {
    store
        .unpublished(&[shard])
        .await
        .unwrap()
        .into_iter()
        .map(|s| {
            assert_eq!(s.occurred_at_ms, 0, "no publication time yet");
            (
                s.source_entry_id.unwrap(),
                s.runtime_status,
                s.engine_health,
                s.current_turn,
            )
        })
        .collect()
}

#[tokio::test]
async fn a_writes_snapshots_are_kept_until_the_publish_carrying_them_went_out() {
    let (db, store) = fresh_store().await;
    register(&store, "g-1", Running).await;
    let (a, b, c, d) = (
        observation("g-1", HealthEventType::ContainerExited),
        observation("g-1", HealthEventType::ProbeRecovered),
        observation("g-1", HealthEventType::ContainerStarted),
        observation("g-1", HealthEventType::ProbeFailed),
    );
    let shard = a.shard;
    let mut o = owner();
    // a and b publish through their transitions, c's summary is no news, d's is.
    let results = store
        .apply_health_batch(
            &[a.clone(), b.clone(), c.clone(), d.clone()],
            &[false, false, false, true],
            &o,
        )
        .await
        .unwrap();
    let publishes: Vec<bool> = results
        .iter()
        .map(|r| {
            matches!(
                r,
                ObservationResult::Applied {
                    publishes: true,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(publishes, [true, true, false, true]);
    assert_eq!(
        kept(&store, shard).await,
        [
            (a.entry, EngineUnreachable, Some(EngineHealth::Exited), 7),
            (b.entry, Running, Some(EngineHealth::Healthy), 7),
            (d.entry, Running, Some(EngineHealth::ProbeFailed), 7),
        ],
        "each exactly as it was decided, not as the record is now"
    );
    // Their publish is under way while the next write commits: both are kept.
    let carrying = o.queue();
    let e = observation("g-1", HealthEventType::ContainerOom);
    store
        .apply_health_batch(std::slice::from_ref(&e), &[true], &o)
        .await
        .unwrap();
    let entries =
        |k: Vec<(EntryPosition, RuntimeStatus, Option<EngineHealth>, u32)>| -> Vec<EntryPosition> {
            k.into_iter().map(|k| k.0).collect()
        };
    assert_eq!(
        entries(kept(&store, shard).await),
        [a.entry, b.entry, d.entry, e.entry]
    );
    // It went out: the next write drops the first write's, not e's.
    o.sent(carrying, d.entry);
    let f = observation("g-1", HealthEventType::ProbeFailed);
    store
        .apply_health_batch(std::slice::from_ref(&f), &[true], &o)
        .await
        .unwrap();
    assert_eq!(entries(kept(&store, shard).await), [e.entry, f.entry]);
    // Another instance claims the shard: it finds what is after the mark, whoever wrote
    // it, and once its own mark passes them (an idle advance) they go.
    let next = PgRuntimeRecordStore::new(store.pool().clone());
    next.claim_shards("next", ShardCount::default(), &[shard])
        .await
        .unwrap();
    assert_eq!(entries(kept(&next, shard).await), [e.entry, f.entry]);
    next.advance_checkpoints(&[held(shard, 2, Some(f.entry))], f.entry)
        .await
        .unwrap();
    assert!(kept(&next, shard).await.is_empty(), "past the mark");
    next.advance_checkpoints(&[held(shard, 2, Some(f.entry))], f.entry)
        .await
        .unwrap();
    let rows: i64 = raw_client(db.url())
        .await
        .query_one("SELECT count(*) FROM gm_unpublished", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        rows, 0,
        "the first writer's rows are gone once every mark passed them"
    );
    // A write fenced off keeps nothing.
    let g = observation("g-1", HealthEventType::ProbeFailed);
    let fenced = store
        .apply_health_batch(std::slice::from_ref(&g), &[true], &o)
        .await
        .unwrap_err();
    assert!(fenced.is_fenced(), "{fenced:?}");
    assert!(kept(&store, shard).await.is_empty());
    assert!(store.unpublished(&[]).await.unwrap().is_empty());
    db.drop_db().await.unwrap();
}

#[tokio::test]
async fn get_many_returns_the_records_that_exist() {
    let (db, store) = fresh_store().await;
    let one = register(&store, "g-1", Running).await;
    let two = register(&store, "g-2", Stopped).await;
    let mut got = store
        .get_many(&[game("g-2"), game("nobody"), game("g-1")])
        .await
        .unwrap();
    got.sort_by(|x, y| x.game_id.as_str().cmp(y.game_id.as_str()));
    assert_eq!(got, [one, two]);
    assert!(store.get_many(&[]).await.unwrap().is_empty());
    db.drop_db().await.unwrap();
}

#[tokio::test]
async fn an_idle_advance_moves_only_lower_checkpoints_under_the_epoch_and_names_lost_shards() {
    let (db, store) = fresh_store().await;
    let at = |ms| EntryPosition { ms, seq: 0 };
    // Shard 1 is ahead already; shard 2 was never applied; shard 3 goes to another owner.
    store
        .advance_checkpoints(&[held(1, 1, None)], at(50))
        .await
        .unwrap();
    store
        .claim_shards("other", ShardCount::default(), &[3])
        .await
        .unwrap();
    let lost = store
        .advance_checkpoints(
            &[
                held(1, 1, Some(at(45))),
                held(2, 1, Some(at(45))),
                held(3, 1, Some(at(45))),
            ],
            at(40),
        )
        .await
        .unwrap();
    assert_eq!(lost, [3]);
    let read = store.read_shards(&[1, 2, 3]).await.unwrap();
    let checkpoints: Vec<_> = read.iter().map(|c| c.checkpoint).collect();
    assert_eq!(
        checkpoints,
        [Some(at(50)), Some(at(40)), None],
        "never backwards, never under another's epoch"
    );
    let marks: Vec<_> = read.iter().map(|c| c.published).collect();
    assert_eq!(
        marks,
        [Some(at(45)), Some(at(45)), None],
        "the mark moves with them"
    );
    assert!(
        store
            .advance_checkpoints(&[], at(1))
            .await
            .unwrap()
            .is_empty()
    );
    db.drop_db().await.unwrap();
}

#[tokio::test]
async fn summaries_are_every_games_stored_engine_health() {
    let (db, store) = fresh_store().await;
    register(&store, "g-1", Running).await;
    register(&store, "g-2", Running).await;
    store
        .apply_health_batch(
            &[observation("g-2", HealthEventType::ContainerOom)],
            &[],
            &owner(),
        )
        .await
        .unwrap();
    let mut got = store.summaries().await.unwrap();
    got.sort_by(|x, y| x.0.as_str().cmp(y.0.as_str()));
    assert_eq!(
        got,
        [(game("g-1"), None), (game("g-2"), Some(EngineHealth::Oom))]
    );
    db.drop_db().await.unwrap();
}

/// The fence under concurrency: one instance writes batches back to back while another
/// claims its shards. Every write that starts after the claim returned is fenced off, and
/// the checkpoint is the last entry of a write that committed before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_write_commits_under_an_epoch_after_another_instance_claimed_it() {
    let (db, store) = fresh_store().await;
    for g in ["g-1", "g-2", "g-3"] {
        register(&store, g, Running).await;
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut log = Vec::new();
            let events = [
                HealthEventType::ProbeFailed,
                HealthEventType::ProbeRecovered,
            ];
            for (n, event) in events.iter().cycle().enumerate() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let batch: Vec<HealthObservation> = ["g-1", "g-2", "g-3"]
                    .iter()
                    .map(|g| observation(g, *event))
                    .collect();
                let started = std::time::Instant::now();
                let result = store.apply_health_batch(&batch, &[], &owner()).await;
                log.push((started, batch, result.map(|_| ())));
                if n > 10_000 {
                    break;
                }
            }
            log
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let all: Vec<u32> = ShardCount::default().all().collect();
    let claimed = store
        .claim_shards("other", ShardCount::default(), &all)
        .await
        .unwrap();
    let claimed_at = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let log = writer.await.unwrap();

    let committed = log.iter().filter(|(_, _, r)| r.is_ok()).count();
    let fenced = log
        .iter()
        .filter(|(_, _, r)| r.as_ref().is_err_and(Error::is_fenced))
        .count();
    assert!(
        committed > 0 && fenced > 0,
        "{committed} committed, {fenced} fenced"
    );
    assert_eq!(
        committed + fenced,
        log.len(),
        "every write committed or was fenced"
    );
    for (started, _, result) in &log {
        if *started > claimed_at {
            assert!(
                result.as_ref().is_err_and(Error::is_fenced),
                "a write after the claim: {result:?}"
            );
        }
    }
    // The claim read each checkpoint as it stood; nothing moved it afterwards.
    let last_committed = log
        .iter()
        .rev()
        .find(|(_, _, r)| r.is_ok())
        .map(|(_, batch, _)| batch.clone())
        .unwrap();
    let now = store.read_shards(&all).await.unwrap();
    assert_eq!(
        now, claimed,
        "no commit after the claim moved a checkpoint or an epoch"
    );
    for o in &last_committed {
        let shard = now.iter().find(|c| c.shard == o.shard).unwrap();
        assert_eq!(
            shard.checkpoint,
            Some(o.entry),
            "the last commit before the claim"
        );
    }
    db.drop_db().await.unwrap();
}
