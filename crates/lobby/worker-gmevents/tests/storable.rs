//! Whatever the decoder accepts, the real store takes: arbitrary field bytes go through
//! `decode`, and every event it accepts is applied to a game created for it (a snapshot
//! update, or a finish and its capability evaluation) against PostgreSQL, which must never
//! refuse it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};

use lobby_adapters_postgres::PgLobbyStore;
use lobby_domain::{GameStatus, GmEvent, GmEventKind};
use lobby_ports::{CapabilityEvaluator, Error, FinishGame, GameStore, NewGame, SnapshotUpdate};
use pg_kit::PgSettings;
use proptest::prelude::*;
use stream_consumer::{EntryId, StreamEntry};
use testkit::adversarial::{accepted_and_stored, integer_bytes, mostly, text_bytes};
use testkit::pg::TestDb;

const NOW: i64 = 1_800_000_000_000;

/// `player_turn_stats`: a JSON array of players whose ids and counts are hostile, or noise.
fn stats_bytes() -> impl Strategy<Value = Vec<u8>> {
    let count = || prop_oneof![9 => 0_i64..1_000_000, 1 => any::<i64>()];
    let player = (
        mostly(&["alice", "bob", " carol "]),
        count(),
        count(),
        count(),
    );
    prop_oneof![
        3 => proptest::collection::vec(player, 0..4).prop_map(|players| {
            let lines: Vec<serde_json::Value> = players
                .into_iter()
                .map(|(user, planets, population, ships)| {
                    serde_json::json!({
                        "user_id": String::from_utf8_lossy(&user),
                        "planets": planets,
                        "population": population,
                        "ships_built": ships,
                    })
                })
                .collect();
            serde_json::Value::Array(lines).to_string().into_bytes()
        }),
        1 => text_bytes(&["[]", "null", ""]),
    ]
}

fn entry_fields() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    let time = || prop_oneof![3 => mostly(&["1700000000000"]), 1 => integer_bytes()];
    (
        mostly(&["runtime_snapshot_update", "game_finished"]),
        prop_oneof![1 => mostly(&["g-1", "ゲーム-2", "g 3"]), 1 => text_bytes(&["g-4"])],
        prop_oneof![3 => mostly(&["0", "7", "4294967295"]), 1 => integer_bytes()],
        mostly(&["running", "finished", "engine_unreachable"]),
        mostly(&["healthy", "oom", ""]),
        time(),
        stats_bytes(),
        time(),
    )
        .prop_map(|(kind, game, turn, status, summary, at, stats, finished)| {
            [
                ("kind", kind),
                ("game_id", game),
                ("current_turn", turn),
                ("runtime_status", status),
                ("engine_health_summary", summary),
                ("occurred_at_ms", at),
                ("player_turn_stats", stats),
                ("finished_at_ms", finished),
            ]
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect()
        })
}

/// Applies one accepted event as the worker would, to a game created for it.
async fn store_takes(store: &PgLobbyStore, event: &GmEvent) -> Result<(), Error> {
    let game_id = event.game_id().clone();
    if store.get(&game_id).await.is_err() {
        let new = NewGame {
            game_id: game_id.clone(),
            status: GameStatus::Running,
        };
        store.create(&new).await?;
    }
    let update = SnapshotUpdate::from(event);
    match event.kind() {
        GmEventKind::RuntimeSnapshotUpdate => {
            store.apply_snapshots(&[update]).await?;
        }
        GmEventKind::GameFinished => {
            let finished_at_ms = event.finished_at_or(NOW);
            store
                .finish_game(&FinishGame::new(update, finished_at_ms)?)
                .await?;
            store.evaluate(&game_id, finished_at_ms).await?;
        }
    }
    Ok(())
}

#[test]
fn the_store_never_refuses_what_decode_accepts() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (db, store) = rt.block_on(async {
        let db = TestDb::create().await.unwrap();
        let pool = pg_kit::connect(db.url(), &PgSettings::default())
            .await
            .unwrap();
        lobby_adapters_postgres::migrate(&pool).await.unwrap();
        (db, PgLobbyStore::new(pool))
    });
    let seq = AtomicU64::new(0);
    let outcome = accepted_and_stored(600, &entry_fields(), |fields| {
        let entry = StreamEntry::from_pairs(
            EntryId::new(1, seq.fetch_add(1, Ordering::Relaxed)),
            &fields,
        );
        let Ok(event) = worker_gmevents::decode(&entry) else {
            return Ok(false);
        };
        rt.block_on(store_takes(&store, &event))
            .map(|()| true)
            .map_err(|e| format!("{event:?}: {e}"))
    });
    rt.block_on(db.drop_db()).unwrap();
    let (accepted, rejected) = outcome.unwrap();
    eprintln!("{accepted} accepted and stored, {rejected} rejected by decode");
    // Both sides were exercised: the property is about something.
    assert!(accepted >= 40, "only {accepted} events were accepted");
    assert!(rejected >= 40, "only {rejected} events were rejected");
}
