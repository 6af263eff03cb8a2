//! A `gm:lobby_events` entry as the Lobby uses it: the contract's entry
//! (`contracts::lobby_events`), with its player stats checked by the Lobby's rules.

use contracts::GameId;
use contracts::lobby_events::{InvalidLobbyEvent, LobbyEventEntry};
use contracts::wire::WireEntry;

use crate::snapshot::RuntimeSnapshot;
use crate::stats::{InvalidPlayerStats, PlayerObservedStats};

/// Longest `runtime_status` or `engine_health_summary` the Lobby stores (the contract's).
pub use contracts::lobby_events::MAX_LABEL_LEN;
/// Wire field names of a `gm:lobby_events` entry (the contract's).
pub use contracts::lobby_events::fields;

/// The `kind` of a runtime snapshot update.
pub const KIND_RUNTIME_SNAPSHOT_UPDATE: &str = GmEventKind::RuntimeSnapshotUpdate.as_str();
/// The `kind` of a game-finished event.
pub const KIND_GAME_FINISHED: &str = GmEventKind::GameFinished.as_str();

/// What a `gm:lobby_events` entry announces (the contract's [`LobbyEventKind`]).
pub use contracts::LobbyEventKind as GmEventKind;
/// A string that names no event kind.
pub use contracts::UnknownLobbyEventKind as UnknownGmEventKind;

/// Why a `gm:lobby_events` entry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidGmEvent {
    /// The entry breaks the wire contract.
    #[error(transparent)]
    Wire(#[from] InvalidLobbyEvent),
    /// One element of `player_turn_stats` is not one the Lobby can keep.
    #[error("player_turn_stats[{index}]: {error}")]
    PlayerStats {
        /// Its position in the array.
        index: usize,
        /// What is wrong with it.
        error: InvalidPlayerStats,
    },
}

/// One decoded `gm:lobby_events` entry. Every value of this type holds what the contract's
/// decoder guarantees (a valid game id, a positive `occurred_at_ms`, storable labels, a
/// finish time only on `game_finished`) and player stats the Lobby accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GmEvent {
    kind: GmEventKind,
    game_id: GameId,
    snapshot: RuntimeSnapshot,
    player_stats: Vec<PlayerObservedStats>,
    finished_at_ms: Option<i64>,
}

impl GmEvent {
    /// Decodes an entry with the contract's decoder
    /// ([`LobbyEventEntry::decode`]), then checks each player's stats.
    ///
    /// # Errors
    /// [`InvalidGmEvent`] naming the first field that is wrong.
    pub fn decode<E: WireEntry + ?Sized>(entry: &E) -> Result<Self, InvalidGmEvent> {
        Self::try_from(LobbyEventEntry::decode(entry)?)
    }

    /// What the event announces.
    #[must_use]
    pub fn kind(&self) -> GmEventKind {
        self.kind
    }

    /// The game.
    #[must_use]
    pub fn game_id(&self) -> &GameId {
        &self.game_id
    }

    /// The runtime snapshot it carries.
    #[must_use]
    pub fn snapshot(&self) -> &RuntimeSnapshot {
        &self.snapshot
    }

    /// The per-player stats it carries (empty when the Game Master had no fresh ones).
    #[must_use]
    pub fn player_stats(&self) -> &[PlayerObservedStats] {
        &self.player_stats
    }

    /// When the game finished, if the event said.
    #[must_use]
    pub fn finished_at_ms(&self) -> Option<i64> {
        self.finished_at_ms
    }

    /// When the game finished: the event's finish time, or `now_ms` (the Lobby's clock)
    /// when it gave none, as the seed does.
    #[must_use]
    pub fn finished_at_or(&self, now_ms: i64) -> i64 {
        self.finished_at_ms.unwrap_or(now_ms)
    }
}

impl TryFrom<LobbyEventEntry> for GmEvent {
    type Error = InvalidGmEvent;

    fn try_from(entry: LobbyEventEntry) -> Result<Self, InvalidGmEvent> {
        let player_stats = entry
            .player_turn_stats
            .iter()
            .enumerate()
            .map(|(index, line)| {
                PlayerObservedStats::new(
                    &line.user_id,
                    line.planets,
                    line.population,
                    line.ships_built,
                )
                .map_err(|error| InvalidGmEvent::PlayerStats { index, error })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            kind: entry.kind,
            game_id: entry.game_id,
            snapshot: RuntimeSnapshot {
                current_turn: entry.current_turn,
                runtime_status: entry.runtime_status,
                engine_health_summary: entry.engine_health_summary,
                observed_at_ms: entry.occurred_at_ms,
                source: entry.source_entry_id,
            },
            player_stats,
            finished_at_ms: entry.finished_at_ms,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use contracts::storable::UnstorableText;

    fn decode(pairs: &[(&str, &str)]) -> Result<GmEvent, InvalidGmEvent> {
        GmEvent::decode(pairs)
    }

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut pairs = vec![
            ("kind", "runtime_snapshot_update"),
            ("game_id", "g-1"),
            ("current_turn", "7"),
            ("runtime_status", "running"),
            ("engine_health_summary", "healthy"),
            ("occurred_at_ms", "1700000000000"),
        ];
        for (key, value) in extra {
            pairs.retain(|(k, _)| k != key);
            pairs.push((key, value));
        }
        pairs
    }

    #[test]
    fn kinds_round_trip() {
        for kind in GmEventKind::ALL {
            assert_eq!(kind.as_str().parse::<GmEventKind>(), Ok(kind));
        }
        assert_eq!(
            GmEventKind::RuntimeSnapshotUpdate.as_str(),
            KIND_RUNTIME_SNAPSHOT_UPDATE
        );
        assert_eq!(GmEventKind::GameFinished.as_str(), KIND_GAME_FINISHED);
    }

    #[test]
    fn a_snapshot_update_decodes() {
        let event = decode(&with(&[])).unwrap();
        assert_eq!(event.kind(), GmEventKind::RuntimeSnapshotUpdate);
        assert_eq!(event.game_id().as_str(), "g-1");
        assert_eq!(
            event.snapshot(),
            &RuntimeSnapshot {
                current_turn: 7,
                runtime_status: "running".into(),
                engine_health_summary: "healthy".into(),
                observed_at_ms: 1_700_000_000_000,
                source: None,
            }
        );
        assert!(event.player_stats().is_empty());
        assert_eq!(event.finished_at_ms(), None);
        assert_eq!(event.finished_at_or(5), 5);
    }

    #[test]
    fn a_game_finished_with_stats_decodes() {
        let pairs = with(&[
            ("kind", "game_finished"),
            ("runtime_status", "finished"),
            ("finished_at_ms", "1700000000500"),
            (
                "player_turn_stats",
                r#"[{"user_id":"a","planets":3,"population":40,"ships_built":2,"extra":true},
                    {"user_id":" b ","planets":0,"population":0,"ships_built":0}]"#,
            ),
        ]);
        let event = decode(&pairs).unwrap();
        assert_eq!(event.kind(), GmEventKind::GameFinished);
        assert_eq!(event.finished_at_ms(), Some(1_700_000_000_500));
        assert_eq!(event.finished_at_or(5), 1_700_000_000_500);
        let stats = event.player_stats();
        assert_eq!(stats.len(), 2);
        assert_eq!(stats[1].user_id().as_str(), "b");
        assert_eq!(
            (
                stats[0].planets(),
                stats[0].population(),
                stats[0].ships_built()
            ),
            (3, 40, 2)
        );
    }

    #[test]
    fn the_wire_contract_s_errors_pass_through() {
        assert_eq!(
            decode(&with(&[("kind", "")])),
            Err(InvalidGmEvent::Wire(InvalidLobbyEvent::Missing("kind")))
        );
        assert_eq!(
            decode(&with(&[("runtime_status", "running\0")])),
            Err(InvalidGmEvent::Wire(InvalidLobbyEvent::Unstorable {
                field: "runtime_status",
                error: UnstorableText::Nul { at: 7 },
            }))
        );
    }

    #[test]
    fn player_stats_the_lobby_cannot_keep_are_typed_errors() {
        let cases = [
            (
                with(&[(
                    "player_turn_stats",
                    r#"[{"user_id":"a\u0000","planets":1,"population":1,"ships_built":1}]"#,
                )]),
                InvalidGmEvent::PlayerStats {
                    index: 0,
                    error: InvalidPlayerStats::UserId(crate::InvalidUserId::Unstorable(
                        UnstorableText::Nul { at: 1 },
                    )),
                },
            ),
            (
                with(&[(
                    "player_turn_stats",
                    r#"[{"user_id":"a","planets":1,"population":1,"ships_built":1},
                        {"user_id":"b","planets":1,"population":-4,"ships_built":1}]"#,
                )]),
                InvalidGmEvent::PlayerStats {
                    index: 1,
                    error: InvalidPlayerStats::Negative {
                        field: "population",
                        value: -4,
                    },
                },
            ),
        ];
        for (pairs, expected) in cases {
            assert_eq!(decode(&pairs), Err(expected), "{pairs:?}");
        }
    }
}
