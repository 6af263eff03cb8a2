//! Per-player game statistics: the validated observation the Game Master reports and the
//! initial/maximum aggregate the Lobby keeps per (game, player).

use std::collections::BTreeMap;
use std::fmt;

use contracts::lobby_events::stats;
use contracts::storable::{UnstorableText, storable_text};

/// Longest user id accepted, in bytes (after trimming): it is part of two primary keys.
pub const MAX_USER_ID_LEN: usize = 256;

/// A non-blank player identifier, trimmed of surrounding whitespace, of at most
/// [`MAX_USER_ID_LEN`] bytes and without NUL, so that it can always be stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

/// Why a string is not a user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUserId {
    /// Empty or only whitespace.
    #[error("user_id is blank")]
    Blank,
    /// Too long, or holding a NUL byte.
    #[error("user_id {0}")]
    Unstorable(#[from] UnstorableText),
}

impl UserId {
    /// Trims and wraps `raw`.
    ///
    /// # Errors
    /// [`InvalidUserId`] when nothing is left after trimming, or what is left is too long
    /// or holds a NUL byte.
    pub fn new(raw: &str) -> Result<Self, InvalidUserId> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(InvalidUserId::Blank);
        }
        storable_text(trimmed, MAX_USER_ID_LEN)?;
        Ok(Self(trimmed.to_owned()))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Why a player's stats are invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPlayerStats {
    /// The user id is blank, too long or holds a NUL byte.
    #[error(transparent)]
    UserId(#[from] InvalidUserId),
    /// A count is negative.
    #[error("{field} must not be negative, got {value}")]
    Negative {
        /// The offending component: `planets`, `population` or `ships_built`.
        field: &'static str,
        /// Its value.
        value: i64,
    },
}

/// The three stat components, each known to be non-negative. They stay `i64` so they map
/// onto PostgreSQL `bigint` without conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StatValues {
    planets: i64,
    population: i64,
    ships_built: i64,
}

impl StatValues {
    /// All zero.
    pub const ZERO: Self = Self {
        planets: 0,
        population: 0,
        ships_built: 0,
    };

    /// Validates and builds the components.
    ///
    /// # Errors
    /// [`InvalidPlayerStats::Negative`] naming the first negative component.
    pub fn new(
        planets: i64,
        population: i64,
        ships_built: i64,
    ) -> Result<Self, InvalidPlayerStats> {
        for (field, value) in [
            (stats::PLANETS, planets),
            (stats::POPULATION, population),
            (stats::SHIPS_BUILT, ships_built),
        ] {
            if value < 0 {
                return Err(InvalidPlayerStats::Negative { field, value });
            }
        }
        Ok(Self {
            planets,
            population,
            ships_built,
        })
    }

    /// Planets held.
    #[must_use]
    pub const fn planets(self) -> i64 {
        self.planets
    }

    /// Population.
    #[must_use]
    pub const fn population(self) -> i64 {
        self.population
    }

    /// Ships built.
    #[must_use]
    pub const fn ships_built(self) -> i64 {
        self.ships_built
    }
}

/// Raises each component of `current` to the observed value when that is larger. The
/// components are independent: a maximum is the best each one ever reached, not the stats
/// of the single best observation.
#[must_use]
pub fn raise_max(current: &StatValues, observed: &StatValues) -> StatValues {
    StatValues {
        planets: current.planets.max(observed.planets),
        population: current.population.max(observed.population),
        ships_built: current.ships_built.max(observed.ships_built),
    }
}

/// One player's stats as the Game Master observed them in one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayerObservedStats {
    user_id: UserId,
    values: StatValues,
}

impl PlayerObservedStats {
    /// Validates and builds one observation; the user id is trimmed.
    ///
    /// # Errors
    /// [`InvalidPlayerStats`] for a blank user id or a negative component.
    pub fn new(
        user_id: &str,
        planets: i64,
        population: i64,
        ships_built: i64,
    ) -> Result<Self, InvalidPlayerStats> {
        Ok(Self {
            user_id: UserId::new(user_id)?,
            values: StatValues::new(planets, population, ships_built)?,
        })
    }

    /// The player.
    #[must_use]
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// The observed components.
    #[must_use]
    pub fn values(&self) -> StatValues {
        self.values
    }

    /// Planets held.
    #[must_use]
    pub fn planets(&self) -> i64 {
        self.values.planets
    }

    /// Population.
    #[must_use]
    pub fn population(&self) -> i64 {
        self.values.population
    }

    /// Ships built.
    #[must_use]
    pub fn ships_built(&self) -> i64 {
        self.values.ships_built
    }
}

/// The Lobby's aggregate for one (game, player): the first observation, frozen, and the
/// per-component maximum over every observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayerStatsAggregate {
    initial: StatValues,
    max: StatValues,
}

impl PlayerStatsAggregate {
    /// The aggregate after the first observation: it is both the initial and the maximum.
    #[must_use]
    pub const fn first(observed: StatValues) -> Self {
        Self {
            initial: observed,
            max: observed,
        }
    }

    /// The aggregate after one more observation: `initial` unchanged, `max` raised.
    #[must_use]
    pub fn observe(&self, observed: &StatValues) -> Self {
        Self {
            initial: self.initial,
            max: raise_max(&self.max, observed),
        }
    }

    /// Applies one observation to an aggregate that may not exist yet.
    #[must_use]
    pub fn observe_into(existing: Option<&Self>, observed: &StatValues) -> Self {
        existing.map_or(Self::first(*observed), |aggregate| {
            aggregate.observe(observed)
        })
    }

    /// The first observation.
    #[must_use]
    pub const fn initial(&self) -> StatValues {
        self.initial
    }

    /// The per-component maximum so far (never below `initial`).
    #[must_use]
    pub const fn max(&self) -> StatValues {
        self.max
    }
}

/// Applies one event's observations to a game's aggregates, keyed by player. A player
/// seen for the first time gets a frozen initial; everyone observed has their maxima
/// raised. Players absent from the event are left as they are.
pub fn apply_observations(
    aggregates: &mut BTreeMap<UserId, PlayerStatsAggregate>,
    observed: &[PlayerObservedStats],
) {
    for stats in observed {
        let next =
            PlayerStatsAggregate::observe_into(aggregates.get(stats.user_id()), &stats.values());
        aggregates.insert(stats.user_id().clone(), next);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn values(planets: i64, population: i64, ships_built: i64) -> StatValues {
        StatValues::new(planets, population, ships_built).unwrap()
    }

    #[test]
    fn observations_are_validated() {
        let ok = PlayerObservedStats::new("  u-1 ", 0, 10, 2).unwrap();
        assert_eq!(ok.user_id().as_str(), "u-1");
        assert_eq!(
            (ok.planets(), ok.population(), ok.ships_built()),
            (0, 10, 2)
        );

        for blank in ["", "   ", "\t\n"] {
            assert_eq!(
                PlayerObservedStats::new(blank, 1, 1, 1),
                Err(InvalidPlayerStats::UserId(InvalidUserId::Blank)),
                "{blank:?}"
            );
        }
        assert_eq!(
            PlayerObservedStats::new("u\0", 1, 1, 1),
            Err(InvalidPlayerStats::UserId(InvalidUserId::Unstorable(
                UnstorableText::Nul { at: 1 }
            )))
        );
        let long = "u".repeat(MAX_USER_ID_LEN + 1);
        assert!(matches!(
            PlayerObservedStats::new(&format!("  {long}  "), 1, 1, 1),
            Err(InvalidPlayerStats::UserId(InvalidUserId::Unstorable(
                UnstorableText::TooLong { .. }
            )))
        ));
        let longest = "u".repeat(MAX_USER_ID_LEN);
        assert!(PlayerObservedStats::new(&format!(" {longest} "), 1, 1, 1).is_ok());
        assert_eq!(
            PlayerObservedStats::new("u", -1, 1, 1),
            Err(InvalidPlayerStats::Negative {
                field: "planets",
                value: -1
            })
        );
        assert_eq!(
            PlayerObservedStats::new("u", 1, -2, 1),
            Err(InvalidPlayerStats::Negative {
                field: "population",
                value: -2
            })
        );
        assert_eq!(
            PlayerObservedStats::new("u", 1, 1, i64::MIN),
            Err(InvalidPlayerStats::Negative {
                field: "ships_built",
                value: i64::MIN
            })
        );
        assert_eq!(
            InvalidPlayerStats::Negative {
                field: "planets",
                value: -1
            }
            .to_string(),
            "planets must not be negative, got -1"
        );
    }

    #[test]
    fn maxima_rise_per_component_and_never_fall() {
        let current = values(5, 100, 3);
        assert_eq!(raise_max(&current, &values(4, 120, 3)), values(5, 120, 3));
        assert_eq!(raise_max(&current, &values(9, 50, 7)), values(9, 100, 7));
        assert_eq!(raise_max(&current, &StatValues::ZERO), current);
        assert_eq!(raise_max(&current, &current), current);
    }

    #[test]
    fn the_initial_is_frozen_at_the_first_observation() {
        let first = PlayerStatsAggregate::observe_into(None, &values(3, 30, 0));
        assert_eq!(first.initial(), values(3, 30, 0));
        assert_eq!(first.max(), values(3, 30, 0));

        let second = PlayerStatsAggregate::observe_into(Some(&first), &values(2, 60, 4));
        assert_eq!(second.initial(), values(3, 30, 0));
        assert_eq!(second.max(), values(3, 60, 4));

        let third = second.observe(&values(1, 1, 1));
        assert_eq!(third, second);
    }

    #[test]
    fn one_event_feeds_every_player_it_names() {
        let mut aggregates = BTreeMap::new();
        let first = [
            PlayerObservedStats::new("a", 1, 10, 0).unwrap(),
            PlayerObservedStats::new("b", 2, 20, 1).unwrap(),
        ];
        apply_observations(&mut aggregates, &first);
        let second = [PlayerObservedStats::new("a", 4, 5, 2).unwrap()];
        apply_observations(&mut aggregates, &second);
        // Replaying an event changes nothing.
        apply_observations(&mut aggregates, &second);

        let a = aggregates[&UserId::new("a").unwrap()];
        assert_eq!(a.initial(), values(1, 10, 0));
        assert_eq!(a.max(), values(4, 10, 2));
        let b = aggregates[&UserId::new("b").unwrap()];
        assert_eq!(b, PlayerStatsAggregate::first(values(2, 20, 1)));
        assert_eq!(aggregates.len(), 2);
    }
}
