//! The lobby events publisher.

use async_trait::async_trait;
use domain_runtime::EngineHealth;
use ports::{Error, LobbyEvent, LobbyEventsPublisher, PlayerTurnStats};
use redis_streams::{RedisClient, StreamWriter};
use serde::ser::{Serialize, SerializeMap, Serializer};
use stream_consumer::StreamError;

use crate::wire;

/// Publishes [`LobbyEvent`]s on the lobby events stream (default
/// [`wire::DEFAULT_STREAM`]), all events of one call in one round trip, in order.
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

/// One `player_turn_stats` element, with the contract's key names.
struct StatsJson<'a>(&'a PlayerTurnStats);

impl Serialize for StatsJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry(wire::stats::USER_ID, &self.0.user_id)?;
        map.serialize_entry(wire::stats::PLANETS, &self.0.planets)?;
        map.serialize_entry(wire::stats::POPULATION, &self.0.population)?;
        map.serialize_entry(wire::stats::SHIPS_BUILT, &self.0.ships_built)?;
        map.end()
    }
}

/// The field/value pairs of one event, exactly as the wire contract lists them.
///
/// # Errors
/// [`Error::Backend`] if the stats cannot be written as JSON (they always can).
pub(crate) fn encode(event: &LobbyEvent) -> Result<Vec<(&'static str, String)>, Error> {
    let snapshot = event.snapshot();
    let mut fields = vec![
        (wire::KIND, event.kind().as_str().to_owned()),
        (wire::GAME_ID, snapshot.game_id.as_str().to_owned()),
        (wire::CURRENT_TURN, snapshot.current_turn.to_string()),
        (
            wire::RUNTIME_STATUS,
            snapshot.runtime_status.as_str().to_owned(),
        ),
        (
            wire::ENGINE_HEALTH_SUMMARY,
            EngineHealth::wire(snapshot.engine_health).to_owned(),
        ),
        (wire::OCCURRED_AT_MS, snapshot.occurred_at_ms.to_string()),
    ];
    if !snapshot.player_turn_stats.is_empty() {
        let stats: Vec<StatsJson<'_>> = snapshot.player_turn_stats.iter().map(StatsJson).collect();
        let json = serde_json::to_string(&stats).map_err(|e| Error::Backend(Box::new(e)))?;
        fields.push((wire::PLAYER_TURN_STATS, json));
    }
    if let LobbyEvent::GameFinished { finished_at_ms, .. } = event {
        fields.push((wire::FINISHED_AT_MS, finished_at_ms.to_string()));
    }
    Ok(fields)
}

fn port_error(error: StreamError) -> Error {
    match error {
        StreamError::Unavailable(source) => Error::Unavailable(source),
        StreamError::Protocol(message) => Error::Backend(message.into()),
    }
}

#[async_trait]
impl LobbyEventsPublisher for RedisLobbyEventsPublisher {
    async fn publish(&self, events: &[LobbyEvent]) -> Result<(), Error> {
        let entries = events.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        self.writer.append(&entries).await.map_err(port_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use domain_runtime::{GameId, RuntimeStatus};
    use ports::RuntimeSnapshot;

    fn snapshot(stats: Vec<PlayerTurnStats>) -> RuntimeSnapshot {
        RuntimeSnapshot {
            game_id: GameId::new("g-1").unwrap(),
            current_turn: 7,
            runtime_status: RuntimeStatus::EngineUnreachable,
            engine_health: Some(EngineHealth::Oom),
            occurred_at_ms: 1_700_000_000_123,
            player_turn_stats: stats,
        }
    }

    #[test]
    fn snapshot_without_stats_has_the_six_fields() {
        let fields = encode(&LobbyEvent::SnapshotUpdate(snapshot(vec![]))).unwrap();
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
        let fields = encode(&LobbyEvent::SnapshotUpdate(s)).unwrap();
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
        })
        .unwrap();
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
