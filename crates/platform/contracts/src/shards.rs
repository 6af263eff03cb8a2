//! How games are partitioned into shards (SPEC "Running more than one instance").
//!
//! A shard is the unit of ownership among Game Master instances: each game belongs to
//! exactly one, by a hash of its id that every process (and any producer that someday
//! publishes per shard) computes alike. The count is set once per deployment and stored
//! with the data, because changing it moves games between shards.

use std::fmt;

/// The shard count a deployment gets unless it sets one.
pub const DEFAULT_SHARDS: u32 = 64;

/// The largest shard count accepted: beyond it the per-shard bookkeeping (one row, one
/// lease each) costs more than it spreads.
pub const MAX_SHARDS: u32 = 4096;

/// A number of shards, `1..=MAX_SHARDS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardCount(u32);

/// A shard count outside `1..=MAX_SHARDS`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a shard count must be between 1 and {MAX_SHARDS}, not {0}")]
pub struct InvalidShardCount(pub u64);

impl ShardCount {
    /// Checks the range.
    ///
    /// # Errors
    /// [`InvalidShardCount`] for 0 or more than [`MAX_SHARDS`].
    pub fn new(count: u64) -> Result<Self, InvalidShardCount> {
        u32::try_from(count)
            .ok()
            .filter(|c| (1..=MAX_SHARDS).contains(c))
            .map(Self)
            .ok_or(InvalidShardCount(count))
    }

    /// The count.
    #[must_use]
    pub fn get(self) -> u32 {
        self.0
    }

    /// Every shard of the layout, `0..count`.
    pub fn all(self) -> impl Iterator<Item = u32> {
        0..self.0
    }

    /// The shard a game belongs to: FNV-1a (64-bit) of the id's bytes, modulo the count.
    /// Takes bytes so an entry whose `game_id` is not valid text still has a shard (its
    /// dead letter is kept by that shard's owner); an entry with no `game_id` hashes the
    /// empty string.
    #[must_use]
    pub fn shard_of(self, game_id: &[u8]) -> u32 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let hash = game_id
            .iter()
            .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME));
        u32::try_from(hash % u64::from(self.0)).unwrap_or(0)
    }
}

impl Default for ShardCount {
    fn default() -> Self {
        Self(DEFAULT_SHARDS)
    }
}

impl fmt::Display for ShardCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_count_is_checked() {
        for bad in [0, u64::from(MAX_SHARDS) + 1, u64::MAX] {
            assert_eq!(ShardCount::new(bad), Err(InvalidShardCount(bad)));
        }
        assert_eq!(ShardCount::new(1).unwrap().get(), 1);
        assert_eq!(ShardCount::default().get(), DEFAULT_SHARDS);
        assert_eq!(ShardCount::new(7).unwrap().all().count(), 7);
    }

    /// The hash is part of the contract: these values must never change (a change would
    /// move every game to another shard under a running deployment).
    #[test]
    fn the_hash_is_fixed() {
        let n = ShardCount::default();
        let known = [
            (&b""[..], 0xcbf2_9ce4_8422_2325_u64 % 64),
            (b"a", 0xaf63_dc4c_8601_ec8c % 64),
            (b"foobar", 0x8594_4171_f739_67e8 % 64),
        ];
        for (id, shard) in known {
            assert_eq!(u64::from(n.shard_of(id)), shard, "{id:?}");
        }
    }

    proptest! {
        #[test]
        fn every_id_lands_in_a_shard_of_the_layout(id in proptest::collection::vec(any::<u8>(), 0..80), count in 1u64..=4096) {
            let n = ShardCount::new(count).unwrap();
            prop_assert!(n.shard_of(&id) < n.get());
        }
    }

    #[test]
    fn games_spread_over_the_shards() {
        let n = ShardCount::default();
        let mut per_shard = [0u32; 64];
        for i in 0..64_000 {
            per_shard[n.shard_of(format!("game-{i}").as_bytes()) as usize] += 1;
        }
        let (min, max) = (per_shard.iter().min(), per_shard.iter().max());
        assert!(
            min.is_some_and(|m| *m > 850) && max.is_some_and(|m| *m < 1150),
            "{per_shard:?}"
        );
    }
}
