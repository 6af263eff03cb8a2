//! Capability evaluation: folding a finished game's per-player stats into each player's
//! career record.
//!
//! The fold counts the game, so it is not idempotent: applying it twice for one game counts
//! that game twice. The Lobby runs it behind an evaluation guard that lets it happen once
//! per game, however often `game_finished` is replayed.

use std::collections::BTreeMap;

use crate::stats::{PlayerObservedStats, StatValues, UserId, raise_max};

/// A player's record across every finished game.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CareerRecord {
    /// The player.
    pub user_id: UserId,
    /// How many games the player finished.
    pub games_finished: u32,
    /// The most planets held in any one finished game.
    pub best_planets: i64,
    /// The largest population in any one finished game.
    pub best_population: i64,
    /// The most ships built in any one finished game.
    pub most_ships_built: i64,
}

impl CareerRecord {
    /// A player with no finished games yet.
    #[must_use]
    pub fn new(user_id: UserId) -> Self {
        Self {
            user_id,
            games_finished: 0,
            best_planets: 0,
            best_population: 0,
            most_ships_built: 0,
        }
    }
}

/// The career after one more finished game: one more game counted and each best raised to
/// the game's value when that is larger.
///
/// `final_stats` are the player's stats for that game; the Lobby passes the game's
/// per-player maximum ([`PlayerStatsAggregate::max`](crate::PlayerStatsAggregate::max)),
/// the best the player reached in it.
#[must_use]
pub fn fold_finished_game(career: &CareerRecord, final_stats: &StatValues) -> CareerRecord {
    CareerRecord {
        user_id: career.user_id.clone(),
        games_finished: career.games_finished.saturating_add(1),
        best_planets: career.best_planets.max(final_stats.planets()),
        best_population: career.best_population.max(final_stats.population()),
        most_ships_built: career.most_ships_built.max(final_stats.ships_built()),
    }
}

/// Folds one finished game into the career of every player it has stats for, and returns
/// the updated records (one per player, ordered by user id). A player with no record yet
/// starts from [`CareerRecord::new`]; a player listed twice counts the game once, with
/// the per-component maximum of the two entries.
#[must_use]
pub fn fold_finished_game_into_careers(
    careers: &BTreeMap<UserId, CareerRecord>,
    final_stats: &[PlayerObservedStats],
) -> Vec<CareerRecord> {
    let mut per_player: BTreeMap<&UserId, StatValues> = BTreeMap::new();
    for stats in final_stats {
        let merged = per_player
            .get(stats.user_id())
            .map_or(stats.values(), |seen| raise_max(seen, &stats.values()));
        per_player.insert(stats.user_id(), merged);
    }
    per_player
        .into_iter()
        .map(|(user_id, values)| {
            let career = careers
                .get(user_id)
                .cloned()
                .unwrap_or_else(|| CareerRecord::new(user_id.clone()));
            fold_finished_game(&career, &values)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserId {
        UserId::new(id).unwrap()
    }

    fn values(planets: i64, population: i64, ships_built: i64) -> StatValues {
        StatValues::new(planets, population, ships_built).unwrap()
    }

    #[test]
    fn a_finished_game_counts_once_and_raises_each_best() {
        let career = CareerRecord {
            user_id: user("u"),
            games_finished: 2,
            best_planets: 10,
            best_population: 500,
            most_ships_built: 7,
        };
        let next = fold_finished_game(&career, &values(12, 300, 7));
        assert_eq!(
            next,
            CareerRecord {
                user_id: user("u"),
                games_finished: 3,
                best_planets: 12,
                best_population: 500,
                most_ships_built: 7,
            }
        );
        let first = fold_finished_game(&CareerRecord::new(user("v")), &StatValues::ZERO);
        assert_eq!(first.games_finished, 1);
        assert_eq!(
            (
                first.best_planets,
                first.best_population,
                first.most_ships_built
            ),
            (0, 0, 0)
        );
    }

    #[test]
    fn the_count_saturates_instead_of_wrapping() {
        let mut career = CareerRecord::new(user("u"));
        career.games_finished = u32::MAX;
        assert_eq!(
            fold_finished_game(&career, &StatValues::ZERO).games_finished,
            u32::MAX
        );
    }

    #[test]
    fn every_player_of_the_game_gets_one_updated_record() {
        let mut careers = BTreeMap::new();
        let mut veteran = CareerRecord::new(user("a"));
        veteran.games_finished = 4;
        veteran.best_planets = 20;
        careers.insert(user("a"), veteran);
        careers.insert(user("bystander"), CareerRecord::new(user("bystander")));

        let final_stats = [
            PlayerObservedStats::new("b", 3, 40, 5).unwrap(),
            PlayerObservedStats::new("a", 8, 90, 1).unwrap(),
            PlayerObservedStats::new("b", 6, 10, 2).unwrap(),
        ];
        let updated = fold_finished_game_into_careers(&careers, &final_stats);
        assert_eq!(
            updated,
            [
                CareerRecord {
                    user_id: user("a"),
                    games_finished: 5,
                    best_planets: 20,
                    best_population: 90,
                    most_ships_built: 1,
                },
                CareerRecord {
                    user_id: user("b"),
                    games_finished: 1,
                    best_planets: 6,
                    best_population: 40,
                    most_ships_built: 5,
                },
            ]
        );
        assert!(fold_finished_game_into_careers(&careers, &[]).is_empty());
    }
}
