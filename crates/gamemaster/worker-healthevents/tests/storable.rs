//! Whatever the decoder accepts, the real store takes: arbitrary field bytes go through
//! `decode`, and every entry it accepts is registered and applied against PostgreSQL,
//! which must never refuse it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};

use adapters_postgres::PgRuntimeRecordStore;
use domain_runtime::{HealthEventType, Ownership, RuntimeStatus, ShardCount};
use pg_kit::PgSettings;
use ports::{Error, HealthObservation, NewRuntime, ObservationResult, RuntimeRecordStore};
use proptest::prelude::*;
use stream_consumer::{EntryId, StreamEntry};
use testkit::adversarial::{accepted_and_stored, integer_bytes, mostly, text_bytes};
use testkit::pg::TestDb;

const EVENT_TYPES: [&str; 7] = [
    "container_started",
    "container_exited",
    "container_oom",
    "container_disappeared",
    "inspect_unhealthy",
    "probe_failed",
    "probe_recovered",
];

const GAME_IDS: &[&str] = &["g-1", "game 2", "ゲーム-3", "g\u{7f}4", "\u{10FFFF}"];

/// One entry's fields: the three the Game Master reads, and one it does not.
fn entry_fields() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    (
        text_bytes(GAME_IDS),
        mostly(&EVENT_TYPES),
        prop_oneof![3 => mostly(&["1700000000000"]), 1 => integer_bytes()],
        text_bytes(&["{}"]),
    )
        .prop_map(|(game, event_type, at, details)| {
            vec![
                (b"game_id".to_vec(), game),
                (b"event_type".to_vec(), event_type),
                (b"occurred_at_ms".to_vec(), at),
                (b"details".to_vec(), details),
            ]
        })
}

/// The store's answer to one accepted entry: looked up while unknown, then registered,
/// then applied twice (the locked path, then the guarded one).
async fn store_takes(
    store: &PgRuntimeRecordStore,
    owner: &Ownership,
    entry: &StreamEntry,
) -> Result<bool, String> {
    let Ok(event) = worker_healthevents::decode(entry) else {
        return Ok(false);
    };
    let observation = [HealthObservation {
        game_id: event.game_id.clone(),
        plan: domain_runtime::plan(event.event_type),
        entry: domain_runtime::EntryPosition {
            ms: entry.id.ms,
            seq: entry.id.seq,
        },
        shard: owner.shard_of(event.game_id.as_str().as_bytes()),
    }];
    let fail = |step: &str, e: Error| format!("{step} of {:?}: {e}", event.game_id.as_str());
    let unknown = store.apply_health_batch(&observation, &[true], owner).await;
    let already = match unknown
        .map_err(|e| fail("unknown-game apply", e))?
        .as_slice()
    {
        [ObservationResult::UnknownGame] => false,
        [ObservationResult::Applied { .. }] => true,
        other => return Err(format!("unexpected results {other:?}")),
    };
    if !already {
        let new = NewRuntime {
            game_id: event.game_id.clone(),
            status: RuntimeStatus::Running,
            current_turn: 0,
        };
        store
            .register(&new)
            .await
            .map_err(|e| fail("register", e))?;
    }
    for step in ["first apply", "second apply"] {
        let results = store
            .apply_health_batch(&observation, &[true], owner)
            .await
            .map_err(|e| fail(step, e))?;
        if !matches!(results.as_slice(), [ObservationResult::Applied { .. }]) {
            return Err(format!("{step}: {results:?}"));
        }
    }
    Ok(true)
}

#[test]
fn the_store_never_refuses_what_decode_accepts() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (db, store, owner) = rt.block_on(async {
        let db = TestDb::create().await.unwrap();
        let pool = pg_kit::connect(db.url(), &PgSettings::default())
            .await
            .unwrap();
        adapters_postgres::migrate(&pool).await.unwrap();
        let store = PgRuntimeRecordStore::new(pool);
        let owner = worker_healthevents::claim_all(&store, "test", ShardCount::default())
            .await
            .unwrap();
        (db, store, owner)
    });
    let seq = AtomicU64::new(0);
    let outcome = accepted_and_stored(400, &entry_fields(), |fields| {
        let entry = StreamEntry::from_pairs(
            EntryId::new(1, seq.fetch_add(1, Ordering::Relaxed)),
            &fields,
        );
        rt.block_on(store_takes(&store, &owner, &entry))
    });
    rt.block_on(db.drop_db()).unwrap();
    let (accepted, rejected) = outcome.unwrap();
    eprintln!("{accepted} accepted and stored, {rejected} rejected by decode");
    // Both sides were exercised: the property is about something.
    assert!(accepted >= 40, "only {accepted} entries were accepted");
    assert!(rejected >= 40, "only {rejected} entries were rejected");
    assert_eq!(
        HealthEventType::ALL.map(HealthEventType::as_str),
        EVENT_TYPES,
        "every event type is among the valid inputs"
    );
}
