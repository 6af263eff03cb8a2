//! The `gm:lobby_events` contract (Game Master → Lobby), independent of any stream client.

use contracts::storable::{MAX_TIME_MS, UnstorableText, storable_text};
use contracts::{GameId, InvalidGameId};
use serde::{Deserialize, Serialize};

use crate::snapshot::RuntimeSnapshot;
use crate::stats::{InvalidPlayerStats, PlayerObservedStats};

/// Wire field names of a `gm:lobby_events` entry (the contract's).
pub use contracts::lobby_events::fields;

/// Longest `runtime_status` or `engine_health_summary` the Lobby stores, in bytes (the
/// longest value the Game Master sends today is 22).
pub const MAX_LABEL_LEN: usize = 64;

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
    /// A required field is absent or blank.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// `kind` names no known kind.
    #[error(transparent)]
    Kind(#[from] UnknownGmEventKind),
    /// `game_id` is blank or too long.
    #[error(transparent)]
    GameId(#[from] InvalidGameId),
    /// `current_turn` is not an integer from 0 to `u32::MAX`.
    #[error("current_turn must be an integer from 0 to {max}, got {0:?}", max = u32::MAX)]
    CurrentTurn(String),
    /// A time field is not a 64-bit integer.
    #[error("{field} is not an integer: {value:?}")]
    NotAnInteger {
        /// The field.
        field: &'static str,
        /// Its text.
        value: String,
    },
    /// A time field is zero or negative.
    #[error("{field} must be positive, got {value}")]
    NonPositive {
        /// The field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// A time field the Lobby stores as a timestamp lies beyond year 9999.
    #[error("{field} must be at most {max} (year 9999), got {value}", max = MAX_TIME_MS)]
    TooLate {
        /// The field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// A text field the Lobby stores holds a NUL byte or is longer than its limit.
    #[error("{field} {error}")]
    Unstorable {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        error: UnstorableText,
    },
    /// `player_turn_stats` is not a JSON array of stats objects.
    #[error("player_turn_stats is not a JSON array of player stats: {0}")]
    PlayerStatsJson(String),
    /// One element of `player_turn_stats` is invalid.
    #[error("player_turn_stats[{index}]: {error}")]
    PlayerStats {
        /// Its position in the array.
        index: usize,
        /// What is wrong with it.
        error: InvalidPlayerStats,
    },
    /// A runtime snapshot update was given a finish time.
    #[error("finished_at_ms belongs to game_finished events only")]
    FinishedAtOnSnapshotUpdate,
}

/// One decoded `gm:lobby_events` entry. Every value of this type has a valid game id, a
/// positive `occurred_at_ms` (the snapshot's `observed_at_ms`), a runtime status and
/// summary the Lobby can store (no NUL, at most [`MAX_LABEL_LEN`] bytes), valid player
/// stats, and a finish time only on a `game_finished` event, positive and no later than
/// year 9999 when present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GmEvent {
    kind: GmEventKind,
    game_id: GameId,
    snapshot: RuntimeSnapshot,
    player_stats: Vec<PlayerObservedStats>,
    finished_at_ms: Option<i64>,
}

/// One element of `player_turn_stats` as it is written.
#[derive(Serialize)]
struct PlayerStatsLine<'a> {
    user_id: &'a str,
    planets: i64,
    population: i64,
    ships_built: i64,
}

/// One element of `player_turn_stats` as it is read (owned: JSON strings with escapes
/// cannot be borrowed). Extra keys are ignored; a missing one is an error.
#[derive(Deserialize)]
struct OwnedPlayerStatsLine {
    user_id: String,
    planets: i64,
    population: i64,
    ships_built: i64,
}

impl GmEvent {
    /// Validates and builds an event.
    ///
    /// # Errors
    /// [`InvalidGmEvent::NonPositive`] for a snapshot time or finish time that is not
    /// positive, [`InvalidGmEvent::TooLate`] for a finish time past year 9999,
    /// [`InvalidGmEvent::Unstorable`] for a status or summary the Lobby cannot store,
    /// [`InvalidGmEvent::FinishedAtOnSnapshotUpdate`] for a finish time on a snapshot
    /// update.
    pub fn new(
        kind: GmEventKind,
        game_id: GameId,
        snapshot: RuntimeSnapshot,
        player_stats: Vec<PlayerObservedStats>,
        finished_at_ms: Option<i64>,
    ) -> Result<Self, InvalidGmEvent> {
        positive(fields::OCCURRED_AT_MS, snapshot.observed_at_ms)?;
        label(fields::RUNTIME_STATUS, &snapshot.runtime_status)?;
        label(
            fields::ENGINE_HEALTH_SUMMARY,
            &snapshot.engine_health_summary,
        )?;
        if let Some(ms) = finished_at_ms {
            if kind == GmEventKind::RuntimeSnapshotUpdate {
                return Err(InvalidGmEvent::FinishedAtOnSnapshotUpdate);
            }
            positive(fields::FINISHED_AT_MS, ms)?;
            if ms > MAX_TIME_MS {
                return Err(InvalidGmEvent::TooLate {
                    field: fields::FINISHED_AT_MS,
                    value: ms,
                });
            }
        }
        Ok(Self {
            kind,
            game_id,
            snapshot,
            player_stats,
            finished_at_ms,
        })
    }

    /// Decodes an event from its stream fields, whatever the stream client: `field`
    /// returns the value of a field by name, `None` when the entry lacks it.
    ///
    /// Required: `kind`, `game_id`, `occurred_at_ms`. Tolerated as in the seed: an absent
    /// `current_turn` is 0, absent `runtime_status` and `engine_health_summary` are empty,
    /// an absent, blank or `null` `player_turn_stats` is no stats, and `finished_at_ms`
    /// is read on `game_finished` only (ignored elsewhere). Unknown fields are ignored.
    ///
    /// # Errors
    /// [`InvalidGmEvent`] naming the first field that is wrong.
    pub fn from_wire<'a>(
        field: impl Fn(&'static str) -> Option<&'a str>,
    ) -> Result<Self, InvalidGmEvent> {
        let kind = required(&field, fields::KIND)?.parse::<GmEventKind>()?;
        let game_id = GameId::new(required(&field, fields::GAME_ID)?)?;
        let current_turn = match field(fields::CURRENT_TURN).map(str::trim) {
            None | Some("") => 0,
            Some(raw) => raw
                .parse::<u32>()
                .map_err(|_| InvalidGmEvent::CurrentTurn(raw.to_owned()))?,
        };
        let observed_at_ms = integer(
            fields::OCCURRED_AT_MS,
            required(&field, fields::OCCURRED_AT_MS)?,
        )?;
        let snapshot = RuntimeSnapshot {
            current_turn,
            runtime_status: field(fields::RUNTIME_STATUS).unwrap_or_default().to_owned(),
            engine_health_summary: field(fields::ENGINE_HEALTH_SUMMARY)
                .unwrap_or_default()
                .to_owned(),
            observed_at_ms,
        };
        let player_stats =
            decode_player_stats(field(fields::PLAYER_TURN_STATS).unwrap_or_default())?;
        let finished_at_ms = match (kind, field(fields::FINISHED_AT_MS).map(str::trim)) {
            (GmEventKind::GameFinished, Some(raw)) if !raw.is_empty() => {
                Some(integer(fields::FINISHED_AT_MS, raw)?)
            }
            _ => None,
        };
        Self::new(kind, game_id, snapshot, player_stats, finished_at_ms)
    }

    /// The exact field/value pairs to XADD: `kind`, `game_id`, `current_turn`,
    /// `runtime_status`, `engine_health_summary`, `occurred_at_ms`, then
    /// `player_turn_stats` when there are stats and `finished_at_ms` when known.
    #[must_use]
    pub fn wire_fields(&self) -> Vec<(&'static str, String)> {
        let mut wire = vec![
            (fields::KIND, self.kind.as_str().to_owned()),
            (fields::GAME_ID, self.game_id.as_str().to_owned()),
            (fields::CURRENT_TURN, self.snapshot.current_turn.to_string()),
            (fields::RUNTIME_STATUS, self.snapshot.runtime_status.clone()),
            (
                fields::ENGINE_HEALTH_SUMMARY,
                self.snapshot.engine_health_summary.clone(),
            ),
            (
                fields::OCCURRED_AT_MS,
                self.snapshot.observed_at_ms.to_string(),
            ),
        ];
        if !self.player_stats.is_empty() {
            wire.push((
                fields::PLAYER_TURN_STATS,
                encode_player_stats(&self.player_stats),
            ));
        }
        if let Some(ms) = self.finished_at_ms {
            wire.push((fields::FINISHED_AT_MS, ms.to_string()));
        }
        wire
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

/// The field's value, untouched, when it is present and not blank.
fn required<'a>(
    field: &impl Fn(&'static str) -> Option<&'a str>,
    name: &'static str,
) -> Result<&'a str, InvalidGmEvent> {
    field(name)
        .filter(|value| !value.trim().is_empty())
        .ok_or(InvalidGmEvent::Missing(name))
}

fn integer(field: &'static str, raw: &str) -> Result<i64, InvalidGmEvent> {
    let raw = raw.trim();
    raw.parse::<i64>()
        .map_err(|_| InvalidGmEvent::NotAnInteger {
            field,
            value: raw.to_owned(),
        })
}

fn label(field: &'static str, value: &str) -> Result<(), InvalidGmEvent> {
    storable_text(value, MAX_LABEL_LEN).map_err(|error| InvalidGmEvent::Unstorable { field, error })
}

fn positive(field: &'static str, value: i64) -> Result<i64, InvalidGmEvent> {
    if value > 0 {
        Ok(value)
    } else {
        Err(InvalidGmEvent::NonPositive { field, value })
    }
}

fn decode_player_stats(payload: &str) -> Result<Vec<PlayerObservedStats>, InvalidGmEvent> {
    if payload.trim().is_empty() {
        return Ok(Vec::new());
    }
    let lines: Option<Vec<OwnedPlayerStatsLine>> = serde_json::from_str(payload)
        .map_err(|e| InvalidGmEvent::PlayerStatsJson(e.to_string()))?;
    lines
        .unwrap_or_default()
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
        .collect()
}

fn encode_player_stats(stats: &[PlayerObservedStats]) -> String {
    let lines: Vec<PlayerStatsLine<'_>> = stats
        .iter()
        .map(|s| PlayerStatsLine {
            user_id: s.user_id().as_str(),
            planets: s.planets(),
            population: s.population(),
            ships_built: s.ships_built(),
        })
        .collect();
    // Serialising plain strings and integers cannot fail; an empty array is the harmless
    // fallback all the same.
    serde_json::to_string(&lines).unwrap_or_else(|_| "[]".to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn decode(pairs: &[(&str, &str)]) -> Result<GmEvent, InvalidGmEvent> {
        GmEvent::from_wire(|name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| *value)
        })
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
            }
        );
        assert!(event.player_stats().is_empty());
        assert_eq!(event.finished_at_ms(), None);
        assert_eq!(event.finished_at_or(5), 5);
    }

    #[test]
    fn a_game_finished_with_stats_decodes_and_encodes_back() {
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

        let wire = event.wire_fields();
        let names: Vec<&str> = wire.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "kind",
                "game_id",
                "current_turn",
                "runtime_status",
                "engine_health_summary",
                "occurred_at_ms",
                "player_turn_stats",
                "finished_at_ms"
            ]
        );
        let again = GmEvent::from_wire(|name| {
            wire.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str())
        })
        .unwrap();
        assert_eq!(again, event);
    }

    #[test]
    fn tolerated_absences_take_their_defaults() {
        let event = decode(&[
            ("kind", "runtime_snapshot_update"),
            ("game_id", "g"),
            ("occurred_at_ms", "1"),
            ("player_turn_stats", " "),
            // A finish time on an update is ignored, not an error.
            ("finished_at_ms", "junk"),
        ])
        .unwrap();
        assert_eq!(event.snapshot().current_turn, 0);
        assert_eq!(event.snapshot().runtime_status, "");
        assert_eq!(event.finished_at_ms(), None);
        for stats in ["[]", "null"] {
            let event = decode(&with(&[("player_turn_stats", stats)])).unwrap();
            assert!(event.player_stats().is_empty(), "{stats}");
        }
        let names: Vec<&str> = event.wire_fields().iter().map(|(k, _)| *k).collect();
        assert!(!names.contains(&"player_turn_stats"));
        assert!(!names.contains(&"finished_at_ms"));
    }

    #[test]
    fn every_bad_field_is_a_typed_error() {
        let cases: Vec<(Vec<(&str, &str)>, InvalidGmEvent)> = vec![
            (with(&[("kind", "")]), InvalidGmEvent::Missing("kind")),
            (
                with(&[("kind", "turn_generated")]),
                InvalidGmEvent::Kind(UnknownGmEventKind("turn_generated".into())),
            ),
            (
                with(&[("game_id", "  ")]),
                InvalidGmEvent::Missing("game_id"),
            ),
            (
                with(&[("current_turn", "-1")]),
                InvalidGmEvent::CurrentTurn("-1".into()),
            ),
            (
                with(&[("current_turn", "4294967296")]),
                InvalidGmEvent::CurrentTurn("4294967296".into()),
            ),
            (
                with(&[("occurred_at_ms", "")]),
                InvalidGmEvent::Missing("occurred_at_ms"),
            ),
            (
                with(&[("occurred_at_ms", "1.5")]),
                InvalidGmEvent::NotAnInteger {
                    field: "occurred_at_ms",
                    value: "1.5".into(),
                },
            ),
            (
                with(&[("occurred_at_ms", "0")]),
                InvalidGmEvent::NonPositive {
                    field: "occurred_at_ms",
                    value: 0,
                },
            ),
            (
                with(&[("kind", "game_finished"), ("finished_at_ms", "-3")]),
                InvalidGmEvent::NonPositive {
                    field: "finished_at_ms",
                    value: -3,
                },
            ),
            (
                with(&[("kind", "game_finished"), ("finished_at_ms", "later")]),
                InvalidGmEvent::NotAnInteger {
                    field: "finished_at_ms",
                    value: "later".into(),
                },
            ),
            (
                with(&[
                    ("kind", "game_finished"),
                    ("finished_at_ms", "253402300800000"),
                ]),
                InvalidGmEvent::TooLate {
                    field: "finished_at_ms",
                    value: 253_402_300_800_000,
                },
            ),
            (
                with(&[("runtime_status", "running\0")]),
                InvalidGmEvent::Unstorable {
                    field: "runtime_status",
                    error: UnstorableText::Nul { at: 7 },
                },
            ),
            (
                with(&[(
                    "engine_health_summary",
                    "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh",
                )]),
                InvalidGmEvent::Unstorable {
                    field: "engine_health_summary",
                    error: UnstorableText::TooLong { len: 65, max: 64 },
                },
            ),
            (
                with(&[("game_id", "g\0")]),
                InvalidGmEvent::GameId(InvalidGameId::Unstorable(UnstorableText::Nul { at: 1 })),
            ),
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
        for stats in [
            r#"{"user_id":"a"}"#,
            "[1]",
            r#"[{"user_id":"a","planets":1}]"#,
            "[{",
        ] {
            assert!(
                matches!(
                    decode(&with(&[("player_turn_stats", stats)])),
                    Err(InvalidGmEvent::PlayerStatsJson(_))
                ),
                "{stats}"
            );
        }
    }

    #[test]
    fn construction_rejects_a_finish_time_on_an_update() {
        let snapshot = RuntimeSnapshot {
            current_turn: 1,
            runtime_status: "running".into(),
            engine_health_summary: String::new(),
            observed_at_ms: 10,
        };
        let game = GameId::new("g").unwrap();
        assert_eq!(
            GmEvent::new(
                GmEventKind::RuntimeSnapshotUpdate,
                game.clone(),
                snapshot.clone(),
                Vec::new(),
                Some(11)
            ),
            Err(InvalidGmEvent::FinishedAtOnSnapshotUpdate)
        );
        assert!(
            GmEvent::new(
                GmEventKind::GameFinished,
                game,
                snapshot,
                Vec::new(),
                Some(11)
            )
            .is_ok()
        );
    }
}
