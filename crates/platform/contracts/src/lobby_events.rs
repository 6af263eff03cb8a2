//! `gm:lobby_events` (Game Master → Lobby): runtime snapshots and finished games.
//!
//! Every value is a Redis string; times are milliseconds since the Unix epoch in decimal.
//!
//! | field | written |
//! |---|---|
//! | `kind` | always: a [`LobbyEventKind`] |
//! | `game_id` | always |
//! | `current_turn` | always, integer ≥ 0 |
//! | `runtime_status` | always, a runtime status (`running`, `engine_unreachable`, …) |
//! | `engine_health_summary` | always; the empty string before the first observation |
//! | `occurred_at_ms` | always: the Game Master's clock at publication |
//! | `player_turn_stats` | only when the Game Master has fresh engine stats: a JSON array of `{"user_id","planets","population","ships_built"}` |
//! | `finished_at_ms` | only on `game_finished` |

use serde::{Deserialize, Serialize};

use crate::storable::{MAX_TIME_MS, UnstorableText, storable_text};
use crate::wire::{Fields, WireEntry};
use crate::{GameId, InvalidGameId};

/// Longest `runtime_status` or `engine_health_summary` a reader accepts, in bytes (the
/// Lobby stores them; the longest value the Game Master sends today is 22).
pub const MAX_LABEL_LEN: usize = 64;

/// The default stream name.
pub const DEFAULT_STREAM: &str = "gm:lobby_events";

/// Wire field names. Frozen: the Lobby reads what the Game Master writes.
pub mod fields {
    /// The event kind.
    pub const KIND: &str = "kind";
    /// The game. Required.
    pub const GAME_ID: &str = crate::names::GAME_ID;
    /// The runtime's current turn, an integer ≥ 0.
    pub const CURRENT_TURN: &str = "current_turn";
    /// The Game Master's runtime status.
    pub const RUNTIME_STATUS: &str = "runtime_status";
    /// The engine-health summary.
    pub const ENGINE_HEALTH_SUMMARY: &str = "engine_health_summary";
    /// When the Game Master emitted the event.
    pub const OCCURRED_AT_MS: &str = crate::names::OCCURRED_AT_MS;
    /// JSON array of per-player stats; absent or empty when there are none.
    pub const PLAYER_TURN_STATS: &str = "player_turn_stats";
    /// When the game finished; `game_finished` only.
    pub const FINISHED_AT_MS: &str = "finished_at_ms";
    /// The `runtime:health_events` entry a health-driven snapshot reflects; absent on
    /// snapshots of the Game Master's other flows.
    pub const SOURCE_ENTRY_ID: &str = "source_entry_id";

    /// Every field, in the order the Game Master writes them.
    pub const ALL: [&str; 9] = [
        KIND,
        GAME_ID,
        CURRENT_TURN,
        RUNTIME_STATUS,
        ENGINE_HEALTH_SUMMARY,
        OCCURRED_AT_MS,
        PLAYER_TURN_STATS,
        FINISHED_AT_MS,
        SOURCE_ENTRY_ID,
    ];
}

/// A stream entry id, `<ms>-<seq>`, as a snapshot names the health entry it reflects.
/// Ordered as Redis orders ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceEntryId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl std::fmt::Display for SourceEntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl std::str::FromStr for SourceEntryId {
    type Err = InvalidLobbyEvent;

    /// `<ms>-<seq>`, both decimal, neither empty.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidLobbyEvent::SourceEntryId(s.chars().take(64).collect());
        let part = |p: &str| {
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u64>().ok())
                .flatten()
        };
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        Ok(Self {
            ms: part(ms).ok_or_else(bad)?,
            seq: part(seq).ok_or_else(bad)?,
        })
    }
}

/// Keys of one `player_turn_stats` element.
pub mod stats {
    /// The player.
    pub const USER_ID: &str = "user_id";
    /// Planets owned.
    pub const PLANETS: &str = "planets";
    /// Total population.
    pub const POPULATION: &str = "population";
    /// Ships built so far.
    pub const SHIPS_BUILT: &str = "ships_built";

    /// Every key.
    pub const ALL: [&str; 4] = [USER_ID, PLANETS, POPULATION, SHIPS_BUILT];
}

crate::wire_enum! {
    /// What a `gm:lobby_events` entry announces (its `kind`).
    pub enum LobbyEventKind / UnknownLobbyEventKind("gm event kind") {
        /// The game's runtime state changed: apply the snapshot and feed the stats.
        RuntimeSnapshotUpdate = "runtime_snapshot_update",
        /// The game is over: as an update, then finish the game and evaluate capabilities.
        GameFinished = "game_finished",
    }
}

/// One element of `player_turn_stats`, as it is written: keys as [`stats`] names them
/// (a test holds the two together). Extra keys are ignored when read; a missing one makes
/// the array unreadable. Whether the values are acceptable (a player id, no negative
/// count) is the reader's rule, not the wire's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerTurnStats {
    /// The player.
    pub user_id: String,
    /// Planets owned.
    pub planets: i64,
    /// Total population.
    pub population: i64,
    /// Ships built so far.
    pub ships_built: i64,
}

/// One `gm:lobby_events` entry, as the Game Master writes it and the Lobby reads it.
///
/// A value [`decode`](Self::decode) returns has a positive `occurred_at_ms`, a runtime
/// status and summary the Lobby can store (no NUL, at most [`MAX_LABEL_LEN`] bytes), and
/// a `finished_at_ms` only on a `game_finished` entry, positive and no later than year
/// 9999.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LobbyEventEntry {
    /// What the entry announces.
    pub kind: LobbyEventKind,
    /// The game.
    pub game_id: GameId,
    /// The runtime's current turn.
    pub current_turn: u32,
    /// The Game Master's runtime status, verbatim (the Lobby keeps statuses it does not
    /// know).
    pub runtime_status: String,
    /// The engine-health summary; empty before the first observation.
    pub engine_health_summary: String,
    /// The Game Master's clock at publication, ms since the epoch.
    pub occurred_at_ms: i64,
    /// Fresh per-player stats; empty when there are none.
    pub player_turn_stats: Vec<PlayerTurnStats>,
    /// When the game finished; `game_finished` only.
    pub finished_at_ms: Option<i64>,
    /// The health entry a health-driven snapshot reflects.
    pub source_entry_id: Option<SourceEntryId>,
}

/// Why a `gm:lobby_events` entry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidLobbyEvent {
    /// A field that is read holds bytes that are not UTF-8.
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    /// A required field is absent or blank.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// `kind` names no known kind.
    #[error(transparent)]
    Kind(#[from] UnknownLobbyEventKind),
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
    /// `finished_at_ms` lies beyond year 9999 (the Lobby stores it as a timestamp).
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
    /// `source_entry_id` is not a stream entry id.
    #[error("source_entry_id must be a stream entry id <ms>-<seq>, got {0:?}")]
    SourceEntryId(String),
    /// `player_turn_stats` is not a JSON array of stats objects.
    #[error("player_turn_stats is not a JSON array of player stats: {0}")]
    PlayerStatsJson(String),
}

impl LobbyEventEntry {
    /// Decodes an entry from its stream fields, whatever the stream client.
    ///
    /// Required: `kind`, `game_id`, `occurred_at_ms`. Tolerated as in the seed: an absent
    /// `current_turn` is 0, absent `runtime_status` and `engine_health_summary` are empty,
    /// an absent, blank or `null` `player_turn_stats` is no stats, and `finished_at_ms`
    /// is read on `game_finished` only (ignored elsewhere, whatever it holds). Unknown
    /// fields are ignored.
    ///
    /// # Errors
    /// [`InvalidLobbyEvent`] naming the first field that is wrong.
    pub fn decode<E: WireEntry + ?Sized>(entry: &E) -> Result<Self, InvalidLobbyEvent> {
        let read = Reader(Fields::new(entry));
        let kind = read.required(fields::KIND)?.parse::<LobbyEventKind>()?;
        let game_id = GameId::new(read.required(fields::GAME_ID)?)?;
        let current_turn = match read.text(fields::CURRENT_TURN)?.trim() {
            "" => 0,
            raw => raw
                .parse::<u32>()
                .map_err(|_| InvalidLobbyEvent::CurrentTurn(raw.to_owned()))?,
        };
        let occurred_at_ms = read.time(fields::OCCURRED_AT_MS)?;
        let finished_at_ms = match kind {
            LobbyEventKind::GameFinished
                if !read.text(fields::FINISHED_AT_MS)?.trim().is_empty() =>
            {
                Some(read.time(fields::FINISHED_AT_MS)?)
            }
            _ => None,
        };
        Ok(Self {
            kind,
            game_id,
            current_turn,
            runtime_status: read.label(fields::RUNTIME_STATUS)?,
            engine_health_summary: read.label(fields::ENGINE_HEALTH_SUMMARY)?,
            occurred_at_ms,
            player_turn_stats: decode_stats(read.text(fields::PLAYER_TURN_STATS)?)?,
            finished_at_ms,
            source_entry_id: match read.text(fields::SOURCE_ENTRY_ID)?.trim() {
                "" => None,
                raw => Some(raw.parse()?),
            },
        })
    }

    /// The exact field/value pairs to XADD: `kind`, `game_id`, `current_turn`,
    /// `runtime_status`, `engine_health_summary`, `occurred_at_ms`, then
    /// `player_turn_stats` when there are stats, `finished_at_ms` when known and
    /// `source_entry_id` when the snapshot reflects a health entry.
    #[must_use]
    pub fn wire_fields(&self) -> Vec<(&'static str, String)> {
        let mut wire = vec![
            (fields::KIND, self.kind.as_str().to_owned()),
            (fields::GAME_ID, self.game_id.as_str().to_owned()),
            (fields::CURRENT_TURN, self.current_turn.to_string()),
            (fields::RUNTIME_STATUS, self.runtime_status.clone()),
            (
                fields::ENGINE_HEALTH_SUMMARY,
                self.engine_health_summary.clone(),
            ),
            (fields::OCCURRED_AT_MS, self.occurred_at_ms.to_string()),
        ];
        if !self.player_turn_stats.is_empty() {
            // Plain strings and integers always serialise; an empty array is the
            // harmless fallback all the same.
            let json =
                serde_json::to_string(&self.player_turn_stats).unwrap_or_else(|_| "[]".to_owned());
            wire.push((fields::PLAYER_TURN_STATS, json));
        }
        if let Some(ms) = self.finished_at_ms {
            wire.push((fields::FINISHED_AT_MS, ms.to_string()));
        }
        if let Some(id) = self.source_entry_id {
            wire.push((fields::SOURCE_ENTRY_ID, id.to_string()));
        }
        wire
    }
}

/// The field reader of one entry, with this stream's errors.
struct Reader<'a, E: WireEntry + ?Sized>(Fields<'a, E>);

impl<E: WireEntry + ?Sized> Reader<'_, E> {
    /// The field's text, empty when absent.
    fn text(&self, name: &'static str) -> Result<&str, InvalidLobbyEvent> {
        match self.0.optional_text(name) {
            Ok(value) => Ok(value.unwrap_or_default()),
            Err(_) => Err(InvalidLobbyEvent::NotUtf8(name)),
        }
    }

    /// The field's text, untouched, when it is present and not blank.
    fn required(&self, name: &'static str) -> Result<&str, InvalidLobbyEvent> {
        Some(self.text(name)?)
            .filter(|value| !value.trim().is_empty())
            .ok_or(InvalidLobbyEvent::Missing(name))
    }

    /// A required positive time, no later than year 9999.
    fn time(&self, name: &'static str) -> Result<i64, InvalidLobbyEvent> {
        let raw = self.required(name)?.trim();
        let value = raw
            .parse::<i64>()
            .map_err(|_| InvalidLobbyEvent::NotAnInteger {
                field: name,
                value: raw.to_owned(),
            })?;
        if value <= 0 {
            return Err(InvalidLobbyEvent::NonPositive { field: name, value });
        }
        if name == fields::FINISHED_AT_MS && value > MAX_TIME_MS {
            return Err(InvalidLobbyEvent::TooLate { field: name, value });
        }
        Ok(value)
    }

    /// A label the Lobby stores verbatim.
    fn label(&self, name: &'static str) -> Result<String, InvalidLobbyEvent> {
        let value = self.text(name)?;
        storable_text(value, MAX_LABEL_LEN)
            .map_err(|error| InvalidLobbyEvent::Unstorable { field: name, error })?;
        Ok(value.to_owned())
    }
}

fn decode_stats(payload: &str) -> Result<Vec<PlayerTurnStats>, InvalidLobbyEvent> {
    if payload.trim().is_empty() {
        return Ok(Vec::new());
    }
    let stats: Option<Vec<PlayerTurnStats>> = serde_json::from_str(payload)
        .map_err(|e| InvalidLobbyEvent::PlayerStatsJson(e.to_string()))?;
    Ok(stats.unwrap_or_default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_source_entry_id_is_read_when_present_and_refused_when_it_is_no_id() {
        let entry = LobbyEventEntry::decode(&with(&[("source_entry_id", "17-3")])).unwrap();
        assert_eq!(
            entry.source_entry_id,
            Some(SourceEntryId { ms: 17, seq: 3 })
        );
        assert_eq!(
            LobbyEventEntry::decode(&with(&[])).unwrap().source_entry_id,
            None
        );
        for bad in ["17", "a-1", "1-", "-1", "1-2-3"] {
            let err = LobbyEventEntry::decode(&with(&[("source_entry_id", bad)])).unwrap_err();
            assert_eq!(err, InvalidLobbyEvent::SourceEntryId(bad.into()), "{bad}");
        }
        assert!(SourceEntryId { ms: 2, seq: 0 } > SourceEntryId { ms: 1, seq: 9 });
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
    fn the_stats_keys_are_the_contract_s() {
        let line = PlayerTurnStats {
            user_id: "u".into(),
            planets: 1,
            population: 2,
            ships_built: 3,
        };
        let json: serde_json::Value = serde_json::to_value(&line).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = stats::ALL.to_vec();
        keys.sort_unstable();
        expected.sort_unstable();
        assert_eq!(keys, expected);
    }

    #[test]
    fn a_game_finished_with_stats_decodes_and_encodes_back() {
        let pairs = with(&[
            ("kind", "game_finished"),
            ("runtime_status", "finished"),
            ("finished_at_ms", "1700000000500"),
            (
                "player_turn_stats",
                r#"[{"user_id":"a","planets":3,"population":40,"ships_built":2,"extra":true}]"#,
            ),
        ]);
        let entry = LobbyEventEntry::decode(&pairs).unwrap();
        assert_eq!(entry.kind, LobbyEventKind::GameFinished);
        assert_eq!(entry.finished_at_ms, Some(1_700_000_000_500));
        assert_eq!(entry.player_turn_stats.len(), 1);
        let wire = entry.wire_fields();
        let names: Vec<&str> = wire.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, fields::ALL[..8], "no source on a flow's finish");
        assert_eq!(
            wire[6].1,
            r#"[{"user_id":"a","planets":3,"population":40,"ships_built":2}]"#
        );
        assert_eq!(LobbyEventEntry::decode(&wire), Ok(entry));
    }

    #[test]
    fn tolerated_absences_take_their_defaults() {
        let entry = LobbyEventEntry::decode(&[
            ("kind", &b"runtime_snapshot_update"[..]),
            ("game_id", b"g"),
            ("occurred_at_ms", b"1"),
            ("player_turn_stats", b" "),
            // A finish time on an update is not read, whatever it holds.
            ("finished_at_ms", b"\xff"),
        ])
        .unwrap();
        assert_eq!(entry.current_turn, 0);
        assert_eq!(entry.runtime_status, "");
        assert_eq!(entry.finished_at_ms, None);
        for stats in ["[]", "null"] {
            let entry = LobbyEventEntry::decode(&with(&[("player_turn_stats", stats)])).unwrap();
            assert!(entry.player_turn_stats.is_empty(), "{stats}");
        }
        let names: Vec<&str> = entry.wire_fields().iter().map(|(k, _)| *k).collect();
        assert_eq!(names, fields::ALL[..6]);
    }

    #[test]
    fn every_bad_field_is_a_typed_error() {
        use InvalidLobbyEvent as E;
        let cases: Vec<(Vec<(&str, &str)>, InvalidLobbyEvent)> = vec![
            (with(&[("kind", "")]), E::Missing("kind")),
            (
                with(&[("kind", "turn_generated")]),
                E::Kind(UnknownLobbyEventKind("turn_generated".into())),
            ),
            (with(&[("game_id", "  ")]), E::Missing("game_id")),
            (with(&[("current_turn", "-1")]), E::CurrentTurn("-1".into())),
            (
                with(&[("current_turn", "4294967296")]),
                E::CurrentTurn("4294967296".into()),
            ),
            (
                with(&[("occurred_at_ms", "")]),
                E::Missing("occurred_at_ms"),
            ),
            (
                with(&[("occurred_at_ms", "1.5")]),
                E::NotAnInteger {
                    field: "occurred_at_ms",
                    value: "1.5".into(),
                },
            ),
            (
                with(&[("occurred_at_ms", "0")]),
                E::NonPositive {
                    field: "occurred_at_ms",
                    value: 0,
                },
            ),
            (
                with(&[("kind", "game_finished"), ("finished_at_ms", "-3")]),
                E::NonPositive {
                    field: "finished_at_ms",
                    value: -3,
                },
            ),
            (
                with(&[("kind", "game_finished"), ("finished_at_ms", "later")]),
                E::NotAnInteger {
                    field: "finished_at_ms",
                    value: "later".into(),
                },
            ),
            (
                with(&[
                    ("kind", "game_finished"),
                    ("finished_at_ms", "253402300800000"),
                ]),
                E::TooLate {
                    field: "finished_at_ms",
                    value: 253_402_300_800_000,
                },
            ),
            (
                with(&[("runtime_status", "running\0")]),
                E::Unstorable {
                    field: "runtime_status",
                    error: UnstorableText::Nul { at: 7 },
                },
            ),
            (
                with(&[(
                    "engine_health_summary",
                    "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh",
                )]),
                E::Unstorable {
                    field: "engine_health_summary",
                    error: UnstorableText::TooLong { len: 65, max: 64 },
                },
            ),
            (
                with(&[("game_id", "g\0")]),
                E::GameId(InvalidGameId::Unstorable(UnstorableText::Nul { at: 1 })),
            ),
        ];
        for (pairs, expected) in cases {
            assert_eq!(LobbyEventEntry::decode(&pairs), Err(expected), "{pairs:?}");
        }
        for stats in [
            r#"{"user_id":"a"}"#,
            "[1]",
            r#"[{"user_id":"a","planets":1}]"#,
            "[{",
        ] {
            assert!(
                matches!(
                    LobbyEventEntry::decode(&with(&[("player_turn_stats", stats)])),
                    Err(InvalidLobbyEvent::PlayerStatsJson(_))
                ),
                "{stats}"
            );
        }
        let mut not_text: Vec<(&str, &[u8])> = with(&[])
            .into_iter()
            .map(|(k, v)| (k, v.as_bytes()))
            .collect();
        not_text.push(("engine_health_summary", b"\xfe"));
        assert_eq!(
            LobbyEventEntry::decode(&not_text),
            Err(InvalidLobbyEvent::NotUtf8("engine_health_summary"))
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn entry() -> impl Strategy<Value = LobbyEventEntry> {
        let stats = proptest::collection::vec(
            ("[ -~]{0,20}", any::<i64>(), any::<i64>(), any::<i64>()).prop_map(
                |(user_id, planets, population, ships_built)| PlayerTurnStats {
                    user_id,
                    planets,
                    population,
                    ships_built,
                },
            ),
            0..4,
        );
        (
            proptest::sample::select(LobbyEventKind::ALL.to_vec()),
            "[A-Za-z0-9_.:-]{1,40}",
            any::<u32>(),
            "[a-z_]{0,64}",
            "[a-z_]{0,64}",
            1..=i64::MAX,
            stats,
            1..=MAX_TIME_MS,
            proptest::option::of((any::<u64>(), any::<u64>())),
        )
            .prop_map(
                |(kind, game, turn, status, summary, at, stats, finished, source)| {
                    LobbyEventEntry {
                        kind,
                        game_id: GameId::new(game).unwrap(),
                        current_turn: turn,
                        runtime_status: status,
                        engine_health_summary: summary,
                        occurred_at_ms: at,
                        player_turn_stats: stats,
                        finished_at_ms: (kind == LobbyEventKind::GameFinished).then_some(finished),
                        source_entry_id: source.map(|(ms, seq)| SourceEntryId { ms, seq }),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn encode_then_decode_gives_the_entry_back(entry in entry()) {
            prop_assert_eq!(LobbyEventEntry::decode(&entry.wire_fields()), Ok(entry));
        }

        #[test]
        fn decode_never_panics_on_any_field_map(
            pairs in crate::wire::arbitrary::field_map(&fields::ALL, {
                let mut known = crate::wire::arbitrary::spellings(&LobbyEventKind::ALL, LobbyEventKind::as_str);
                known.push(r#"[{"user_id":"u","planets":1,"population":2,"ships_built":3}]"#.to_owned());
                known
            }),
        ) {
            if let Ok(entry) = LobbyEventEntry::decode(&pairs) {
                prop_assert!(entry.occurred_at_ms > 0);
                prop_assert!(entry.finished_at_ms.is_none_or(|ms| (1..=MAX_TIME_MS).contains(&ms)));
            }
        }
    }
}
