//! The players of each game and the engine statistics a generated turn reports for them.
//!
//! Every game gets two to four players drawn from a pool shared by the whole fleet, so a
//! player takes part in several games and their career (SPEC §Lobby) folds more than one
//! finished game. A [`Roster`] holds the players' current stats; each generated turn moves
//! them a little: planets are won and lost, population grows or shrinks with them, ships
//! built only go up. Planets and population can fall, so a player's best value in a game
//! is often not their last one — which is what the Lobby's per-component maxima are for.
//!
//! Like [`crate::script`], a roster is drawn from the run's seed and the game's index
//! only, with a generator of its own, so adding the players left every game's health and
//! flow script exactly as it was for a given seed.

use ports::PlayerTurnStats;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Fewest players in a game.
pub const MIN_PLAYERS: usize = 2;
/// Most players in a game.
pub const MAX_PLAYERS: usize = 4;

/// Population never grows beyond this (the numbers stay far from any column's limit).
const POPULATION_CAP: u64 = 1_000_000_000;

/// How many players the fleet shares: half the games, and at least [`MAX_PLAYERS`] so
/// every game can draw distinct players.
#[must_use]
pub fn pool_size(games: u32) -> u32 {
    (games / 2).max(u32::try_from(MAX_PLAYERS).unwrap_or(4))
}

/// Player number `k` of a pool of `pool`: `<prefix>-u<k>`, zero-padded so ids sort in pool
/// order. The run's prefix keeps one run's careers apart from another's.
#[must_use]
pub fn user_id(prefix: &str, k: u32, pool: u32) -> String {
    let width = pool.saturating_sub(1).max(1).to_string().len();
    format!("{prefix}-u{k:0width$}")
}

/// One game's players and their current engine stats.
#[derive(Debug, Clone)]
pub struct Roster {
    rng: StdRng,
    players: Vec<PlayerTurnStats>,
}

impl Roster {
    /// The players of game number `index` in a run seeded with `seed`, drawn from a pool
    /// of `pool` players named after `prefix`, with their stats at the start.
    #[must_use]
    pub fn new(seed: u64, index: u32, prefix: &str, pool: u32) -> Self {
        // Another constant than the script's, so the two generators never share a seed.
        let roster_seed =
            seed.rotate_left(17) ^ u64::from(index).wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut rng = StdRng::seed_from_u64(roster_seed);
        let pool = pool.max(1);
        let wanted = rng
            .random_range(MIN_PLAYERS..=MAX_PLAYERS)
            .min(usize::try_from(pool).unwrap_or(MAX_PLAYERS));
        let mut chosen: Vec<u32> = Vec::with_capacity(wanted);
        while chosen.len() < wanted {
            let k = rng.random_range(0..pool);
            if !chosen.contains(&k) {
                chosen.push(k);
            }
        }
        chosen.sort_unstable();
        let players = chosen
            .into_iter()
            .map(|k| PlayerTurnStats {
                user_id: user_id(prefix, k, pool),
                planets: rng.random_range(1..=3),
                population: rng.random_range(800..=1_200),
                ships_built: rng.random_range(0..=2),
            })
            .collect();
        Self { rng, players }
    }

    /// The players' stats as they stand.
    #[must_use]
    pub fn current(&self) -> Vec<PlayerTurnStats> {
        self.players.clone()
    }

    /// Plays one generated turn and returns the stats the engine reports after it.
    pub fn play_turn(&mut self) -> Vec<PlayerTurnStats> {
        for p in &mut self.players {
            let won: u64 = self.rng.random_range(0..=2);
            let lost: u64 = self.rng.random_range(0..=1);
            p.planets = (p.planets + won).saturating_sub(lost);
            // Growth in percent, from -10 % to +20 %, plus what the planets feed.
            let percent: u64 = self.rng.random_range(0..=30);
            p.population = (p.population.saturating_mul(90 + percent) / 100)
                .saturating_add(p.planets.saturating_mul(40))
                .min(POPULATION_CAP);
            p.ships_built = p
                .ships_built
                .saturating_add(self.rng.random_range(0..=p.planets.min(5)));
        }
        self.current()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rosters_replay_with_their_seed_and_draw_distinct_players() {
        for index in 0..100 {
            let a = Roster::new(9, index, "p", 20);
            let b = Roster::new(9, index, "p", 20);
            assert_eq!(a.current(), b.current());
            let ids: Vec<&str> = a.players.iter().map(|p| p.user_id.as_str()).collect();
            assert!((MIN_PLAYERS..=MAX_PLAYERS).contains(&ids.len()), "{ids:?}");
            let mut sorted = ids.clone();
            sorted.dedup();
            assert_eq!(sorted, ids, "players are distinct and sorted");
            assert!(ids.iter().all(|id| id.starts_with("p-u")), "{ids:?}");
        }
        assert_ne!(
            Roster::new(9, 1, "p", 20).current(),
            Roster::new(10, 1, "p", 20).current()
        );
    }

    #[test]
    fn turns_build_ships_and_move_planets_both_ways() {
        let mut roster = Roster::new(3, 0, "p", 4);
        let mut planets_fell = false;
        let mut before = roster.current();
        for _ in 0..200 {
            let after = roster.play_turn();
            for (b, a) in before.iter().zip(&after) {
                assert_eq!(a.user_id, b.user_id);
                assert!(a.ships_built >= b.ships_built);
                assert!(a.population <= POPULATION_CAP);
                planets_fell |= a.planets < b.planets;
            }
            before = after;
        }
        assert!(planets_fell);
    }

    #[test]
    fn the_pool_always_has_room_for_a_full_game() {
        assert_eq!(pool_size(1), 4);
        assert_eq!(pool_size(200), 100);
        assert_eq!(user_id("s", 7, 100), "s-u07");
        assert_eq!(user_id("s", 0, 4), "s-u0");
        let roster = Roster::new(1, 0, "s", 1);
        assert_eq!(roster.current().len(), 1);
    }
}
