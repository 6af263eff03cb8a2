//! The lobby events publisher.

use async_trait::async_trait;
use contracts::LobbyEventEntry;
use domain_runtime::EngineHealth;
use ports::{Error, LobbyEvent, LobbyEventsPublisher};
use redis_streams::{RedisClient, StreamWriter};
use stream_consumer::StreamError;

/// Publishes [`LobbyEvent`]s on the lobby events stream (default
/// `contracts::lobby_events::DEFAULT_STREAM`), all events of one call in one round trip,
/// in order.
///
/// A call that fails may have appended some of its events; the Lobby's consumer is
/// idempotent, so the caller simply publishes them again.
#[derive(Debug, Clone)]
pub struct RedisLobbyEventsPublisher {
    writer: StreamWriter,
}

impl RedisLobbyEventsPublisher {
    /// A publisher appending to `stream` through `client` (which may be shared with the
    /// offset store; never with the blocking reader).
    #[must_use]
    pub fn new(client: RedisClient, stream: impl Into<String>) -> Self {
        Self {
            writer: StreamWriter::new(client, stream),
        }
    }

    /// The stream published to.
    #[must_use]
    pub fn stream(&self) -> &str {
        self.writer.stream()
    }
}

/// The contract's entry for one event: the Game Master's typed snapshot in the wire's
/// terms (no summary yet is the empty string).
fn entry(event: &LobbyEvent) -> LobbyEventEntry {
    let snapshot = event.snapshot();
    LobbyEventEntry {
        kind: event.kind(),
        game_id: snapshot.game_id.clone(),
        current_turn: snapshot.current_turn,
        runtime_status: snapshot.runtime_status.as_str().to_owned(),
        engine_health_summary: EngineHealth::wire(snapshot.engine_health).to_owned(),
        occurred_at_ms: wire_int(snapshot.occurred_at_ms),
        player_turn_stats: snapshot
            .player_turn_stats
            .iter()
            .map(|s| contracts::PlayerTurnStats {
                user_id: s.user_id.clone(),
                planets: wire_int(s.planets),
                population: wire_int(s.population),
                ships_built: wire_int(s.ships_built),
            })
            .collect(),
        finished_at_ms: match event {
            LobbyEvent::GameFinished { finished_at_ms, .. } => Some(wire_int(*finished_at_ms)),
            LobbyEvent::SnapshotUpdate(_) => None,
        },
        source_entry_id: snapshot.source_entry_id,
    }
}

/// The wire's integers are signed 64-bit; a count or time beyond that is written as the
/// largest one (no clock or engine reaches it).
fn wire_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The field/value pairs of one event, exactly as the wire contract lists them.
pub(crate) fn encode(event: &LobbyEvent) -> Vec<(&'static str, String)> {
    entry(event).wire_fields()
}

#[async_trait]
impl LobbyEventsPublisher for RedisLobbyEventsPublisher {
    async fn publish(&self, events: &[LobbyEvent]) -> Result<(), Error> {
        let entries: Vec<_> = events.iter().map(encode).collect();
        self.writer
            .append(&entries)
            .await
            .map_err(StreamError::into_port::<Error>)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use domain_runtime::{GameId, RuntimeStatus};
    use ports::{PlayerTurnStats, RuntimeSnapshot};

    fn snapshot(stats: Vec<PlayerTurnStats>) -> RuntimeSnapshot {
        RuntimeSnapshot {
            game_id: GameId::new("g-1").unwrap(),
            current_turn: 7,
            runtime_status: RuntimeStatus::EngineUnreachable,
            engine_health: Some(EngineHealth::Oom),
            occurred_at_ms: 1_700_000_000_123,
            player_turn_stats: stats,
            source_entry_id: None,
        }
    }

    #[test]
    fn snapshot_without_stats_has_the_six_fields() {
        let fields = encode(&LobbyEvent::SnapshotUpdate(snapshot(vec![])));
        assert_eq!(
            fields,
            vec![
                ("kind", "runtime_snapshot_update".to_owned()),
                ("game_id", "g-1".to_owned()),
                ("current_turn", "7".to_owned()),
                ("runtime_status", "engine_unreachable".to_owned()),
                ("engine_health_summary", "oom".to_owned()),
                ("occurred_at_ms", "1700000000123".to_owned()),
            ]
        );
    }

    #[test]
    fn no_summary_is_the_empty_string() {
        let mut s = snapshot(vec![]);
        s.engine_health = None;
        let fields = encode(&LobbyEvent::SnapshotUpdate(s));
        assert!(fields.contains(&("engine_health_summary", String::new())));
    }

    #[test]
    fn stats_and_finish_time_are_added_when_present() {
        let stats = vec![PlayerTurnStats {
            user_id: "u\"1".to_owned(),
            planets: 3,
            population: 1200,
            ships_built: 9,
        }];
        let fields = encode(&LobbyEvent::GameFinished {
            snapshot: snapshot(stats),
            finished_at_ms: 1_700_000_000_999,
        });
        assert_eq!(fields[0], ("kind", "game_finished".to_owned()));
        assert_eq!(
            fields[6],
            (
                "player_turn_stats",
                r#"[{"user_id":"u\"1","planets":3,"population":1200,"ships_built":9}]"#.to_owned()
            )
        );
        assert_eq!(fields[7], ("finished_at_ms", "1700000000999".to_owned()));
        assert_eq!(fields.len(), 8);
    }
}
