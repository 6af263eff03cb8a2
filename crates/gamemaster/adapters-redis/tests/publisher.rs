//! The lobby events publisher against a real Redis: exactly the `gm:lobby_events` fields.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use adapters_redis::{RedisLobbyEventsPublisher, RedisSettings, connect};
use domain_runtime::{EngineHealth, GameId, RuntimeStatus};
use ports::{Error, LobbyEvent, LobbyEventsPublisher, PlayerTurnStats, RuntimeSnapshot};
use testkit::redis::{RawEntry, TestRedis, ThrowawayRedis};

fn settings() -> RedisSettings {
    RedisSettings {
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(1),
        reconnect_min_delay: Duration::from_millis(50),
        reconnect_max_delay: Duration::from_millis(500),
    }
}

fn snapshot(game: &str, turn: u32, stats: Vec<PlayerTurnStats>) -> RuntimeSnapshot {
    RuntimeSnapshot {
        game_id: GameId::new(game).unwrap(),
        current_turn: turn,
        runtime_status: RuntimeStatus::Running,
        engine_health: Some(EngineHealth::Healthy),
        occurred_at_ms: 1_700_000_000_000 + u64::from(turn),
        player_turn_stats: stats,
        source_entry_id: None,
    }
}

/// An entry's fields as text, keyed by name; fails on a repeated field.
fn text_fields(entry: &RawEntry) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in &entry.1 {
        let previous = out.insert(
            String::from_utf8(k.clone()).unwrap(),
            String::from_utf8(v.clone()).unwrap(),
        );
        assert!(previous.is_none(), "repeated field in {entry:?}");
    }
    out
}

fn expected(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn publisher(t: &TestRedis, stream: &str) -> RedisLobbyEventsPublisher {
    RedisLobbyEventsPublisher::new(
        connect(t.url(), settings(), "test-publisher")
            .await
            .unwrap(),
        stream,
    )
}

#[tokio::test]
async fn a_health_snapshot_has_exactly_the_six_contract_fields_and_its_source_entry() {
    let t = TestRedis::connect().await.unwrap();
    let stream = t.key("lobby");
    let mut s = snapshot("game-1", 3, vec![]);
    s.runtime_status = RuntimeStatus::EngineUnreachable;
    s.engine_health = Some(EngineHealth::Exited);
    s.source_entry_id = Some(contracts::SourceEntryId {
        ms: 1_700_000_000_000,
        seq: 3,
    });
    publisher(&t, &stream)
        .await
        .publish(&[LobbyEvent::SnapshotUpdate(s)])
        .await
        .unwrap();

    let entries = t.xrange(&stream).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        text_fields(&entries[0]),
        expected(&[
            ("kind", "runtime_snapshot_update"),
            ("game_id", "game-1"),
            ("current_turn", "3"),
            ("runtime_status", "engine_unreachable"),
            ("engine_health_summary", "exited"),
            ("occurred_at_ms", "1700000000003"),
            ("source_entry_id", "1700000000000-3"),
        ])
    );
    t.cleanup().await.unwrap();
}

#[tokio::test]
async fn no_summary_yet_is_published_as_the_empty_string() {
    let t = TestRedis::connect().await.unwrap();
    let stream = t.key("lobby");
    let mut s = snapshot("game-1", 0, vec![]);
    s.engine_health = None;
    publisher(&t, &stream)
        .await
        .publish(&[LobbyEvent::SnapshotUpdate(s)])
        .await
        .unwrap();
    let entries = t.xrange(&stream).await.unwrap();
    assert_eq!(
        text_fields(&entries[0])
            .get("engine_health_summary")
            .map(String::as_str),
        Some("")
    );
    t.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_snapshot_with_stats_carries_them_as_a_json_array() {
    let t = TestRedis::connect().await.unwrap();
    let stream = t.key("lobby");
    let stats = vec![
        PlayerTurnStats {
            user_id: "alice".to_owned(),
            planets: 4,
            population: 12_000,
            ships_built: 17,
        },
        PlayerTurnStats {
            user_id: "bob".to_owned(),
            planets: 0,
            population: 0,
            ships_built: 0,
        },
    ];
    publisher(&t, &stream)
        .await
        .publish(&[LobbyEvent::SnapshotUpdate(snapshot("game-2", 9, stats))])
        .await
        .unwrap();

    let fields = text_fields(&t.xrange(&stream).await.unwrap()[0]);
    let stats_json = fields.get("player_turn_stats").cloned().unwrap();
    let mut rest = fields;
    rest.remove("player_turn_stats");
    assert_eq!(
        rest,
        expected(&[
            ("kind", "runtime_snapshot_update"),
            ("game_id", "game-2"),
            ("current_turn", "9"),
            ("runtime_status", "running"),
            ("engine_health_summary", "healthy"),
            ("occurred_at_ms", "1700000000009"),
        ])
    );
    let parsed: serde_json::Value = serde_json::from_str(&stats_json).unwrap();
    assert_eq!(
        parsed,
        serde_json::json!([
            {"user_id": "alice", "planets": 4, "population": 12000, "ships_built": 17},
            {"user_id": "bob", "planets": 0, "population": 0, "ships_built": 0},
        ])
    );
    t.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_finished_game_adds_finished_at() {
    let t = TestRedis::connect().await.unwrap();
    let stream = t.key("lobby");
    let mut s = snapshot("game-3", 40, vec![]);
    s.runtime_status = RuntimeStatus::Finished;
    publisher(&t, &stream)
        .await
        .publish(&[LobbyEvent::GameFinished {
            snapshot: s,
            finished_at_ms: 1_700_000_123_456,
        }])
        .await
        .unwrap();
    assert_eq!(
        text_fields(&t.xrange(&stream).await.unwrap()[0]),
        expected(&[
            ("kind", "game_finished"),
            ("game_id", "game-3"),
            ("current_turn", "40"),
            ("runtime_status", "finished"),
            ("engine_health_summary", "healthy"),
            ("occurred_at_ms", "1700000000040"),
            ("finished_at_ms", "1700000123456"),
        ])
    );
    t.cleanup().await.unwrap();
}

#[tokio::test]
async fn many_events_of_one_call_arrive_in_order() {
    let t = TestRedis::connect().await.unwrap();
    let stream = t.key("lobby");
    let p = publisher(&t, &stream).await;
    let events: Vec<LobbyEvent> = (0..200)
        .map(|turn| {
            LobbyEvent::SnapshotUpdate(snapshot(&format!("game-{}", turn % 7), turn, vec![]))
        })
        .collect();
    p.publish(&events).await.unwrap();
    p.publish(&[]).await.unwrap();

    let entries = t.xrange(&stream).await.unwrap();
    let turns: Vec<String> = entries
        .iter()
        .map(|e| text_fields(e)["current_turn"].clone())
        .collect();
    assert_eq!(turns, (0..200).map(|n| n.to_string()).collect::<Vec<_>>());
    assert_eq!(p.stream(), stream);
    t.cleanup().await.unwrap();
}

#[tokio::test]
async fn publishing_to_a_stopped_server_is_unavailable_and_recovers() {
    let mut server = ThrowawayRedis::start().await.unwrap();
    let p = RedisLobbyEventsPublisher::new(
        connect(&server.url(), settings(), "test-publisher")
            .await
            .unwrap(),
        "lobby",
    );
    let event = [LobbyEvent::SnapshotUpdate(snapshot("game-1", 1, vec![]))];
    p.publish(&event).await.unwrap();

    server.stop().await.unwrap();
    let result = p.publish(&event).await;
    assert!(matches!(result, Err(Error::Unavailable(_))), "{result:?}");
    assert!(result.is_err_and(|e| e.is_transient()));

    server.start_again().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while p.publish(&event).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "publisher did not recover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn publishing_onto_a_key_of_another_type_is_a_backend_error() {
    let t = TestRedis::connect().await.unwrap();
    let key = t.key("lobby");
    let _: () =
        fred::interfaces::KeysInterface::set(t.client(), key.as_str(), "x", None, None, false)
            .await
            .unwrap();
    let result = publisher(&t, &key)
        .await
        .publish(&[LobbyEvent::SnapshotUpdate(snapshot("game-1", 1, vec![]))])
        .await;
    assert!(matches!(result, Err(Error::Backend(_))), "{result:?}");
    t.cleanup().await.unwrap();
}
