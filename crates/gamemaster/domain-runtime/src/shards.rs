//! Which shards an instance owns, under which epoch, and how far each was applied.
//!
//! The epoch is the fencing token: claiming a shard raises it, and a batch commits only
//! under the epoch the shard holds (checked in the batch's transaction), so an instance
//! that lost a shard cannot commit for it. The checkpoint is the last entry of the shard
//! whose effects were committed: an entry at or below it is never applied again.

use std::collections::BTreeMap;

pub use contracts::SourceEntryId as EntryPosition;
pub use contracts::shards::{DEFAULT_SHARDS, InvalidShardCount, MAX_SHARDS, ShardCount};

/// One shard as claimed (or last read): its epoch and checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardClaim {
    /// The shard.
    pub shard: u32,
    /// The fencing token this instance commits under.
    pub epoch: u64,
    /// The last entry applied for the shard; `None` before the first.
    pub checkpoint: Option<EntryPosition>,
}

/// The shards an instance owns in a layout of `count` shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    count: ShardCount,
    owned: BTreeMap<u32, ShardClaim>,
}

impl Ownership {
    /// The ownership `claims` give, in a layout of `count`.
    #[must_use]
    pub fn new(count: ShardCount, claims: impl IntoIterator<Item = ShardClaim>) -> Self {
        Self {
            count,
            owned: claims.into_iter().map(|c| (c.shard, c)).collect(),
        }
    }

    /// The layout's shard count.
    #[must_use]
    pub fn count(&self) -> ShardCount {
        self.count
    }

    /// The shard of a game id (raw bytes, see [`ShardCount::shard_of`]).
    #[must_use]
    pub fn shard_of(&self, game_id: &[u8]) -> u32 {
        self.count.shard_of(game_id)
    }

    /// The claim on `shard`, when owned.
    #[must_use]
    pub fn claim(&self, shard: u32) -> Option<&ShardClaim> {
        self.owned.get(&shard)
    }

    /// Every owned claim, by shard.
    pub fn claims(&self) -> impl Iterator<Item = &ShardClaim> {
        self.owned.values()
    }

    /// How many shards are owned.
    #[must_use]
    pub fn len(&self) -> usize {
        self.owned.len()
    }

    /// Whether no shard is owned.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.owned.is_empty()
    }

    /// Whether `entry` of `shard` was applied already (at or below the checkpoint).
    #[must_use]
    pub fn is_applied(&self, shard: u32, entry: EntryPosition) -> bool {
        self.claim(shard)
            .and_then(|c| c.checkpoint)
            .is_some_and(|checkpoint| entry <= checkpoint)
    }

    /// Records that `entry` of `shard` was committed: the checkpoint moves up to it (never
    /// down). An unowned shard is left alone.
    pub fn advance(&mut self, shard: u32, entry: EntryPosition) {
        if let Some(claim) = self.owned.get_mut(&shard) {
            claim.checkpoint = claim.checkpoint.max(Some(entry));
        }
    }

    /// Takes the checkpoints of `read` (as the database holds them now) for the shards
    /// still held under the same epoch. Returns the first shard whose epoch moved (another
    /// instance claimed it), if any; its claim is left as it was.
    pub fn refresh(&mut self, read: &[ShardClaim]) -> Option<u32> {
        let mut lost = None;
        for fresh in read {
            match self.owned.get_mut(&fresh.shard) {
                Some(claim) if claim.epoch == fresh.epoch => claim.checkpoint = fresh.checkpoint,
                Some(_) => lost = lost.or(Some(fresh.shard)),
                None => {}
            }
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(ms: u64, seq: u64) -> EntryPosition {
        EntryPosition { ms, seq }
    }

    fn owning(claims: &[(u32, u64, Option<EntryPosition>)]) -> Ownership {
        Ownership::new(
            ShardCount::new(8).unwrap(),
            claims.iter().map(|&(shard, epoch, checkpoint)| ShardClaim {
                shard,
                epoch,
                checkpoint,
            }),
        )
    }

    #[test]
    fn an_entry_is_applied_when_at_or_below_its_shards_checkpoint() {
        let o = owning(&[(1, 3, Some(at(10, 2))), (2, 3, None)]);
        let table = [
            (1, at(10, 1), true),
            (1, at(10, 2), true),
            (1, at(10, 3), false),
            (1, at(11, 0), false),
            (2, at(1, 0), false),
            (5, at(1, 0), false),
        ];
        for (shard, entry, applied) in table {
            assert_eq!(o.is_applied(shard, entry), applied, "shard {shard} {entry}");
        }
    }

    #[test]
    fn the_checkpoint_only_moves_up_and_only_on_owned_shards() {
        let mut o = owning(&[(1, 3, Some(at(10, 2)))]);
        o.advance(1, at(9, 0));
        assert_eq!(o.claim(1).unwrap().checkpoint, Some(at(10, 2)));
        o.advance(1, at(12, 0));
        assert_eq!(o.claim(1).unwrap().checkpoint, Some(at(12, 0)));
        o.advance(4, at(12, 0));
        assert!(o.claim(4).is_none());
    }

    #[test]
    fn a_refresh_takes_checkpoints_under_the_same_epoch_and_names_a_lost_shard() {
        let mut o = owning(&[(1, 3, Some(at(10, 2))), (2, 5, None)]);
        let read = [
            ShardClaim {
                shard: 1,
                epoch: 3,
                checkpoint: Some(at(20, 0)),
            },
            ShardClaim {
                shard: 2,
                epoch: 6,
                checkpoint: Some(at(30, 0)),
            },
        ];
        assert_eq!(o.refresh(&read), Some(2));
        assert_eq!(o.claim(1).unwrap().checkpoint, Some(at(20, 0)));
        assert_eq!(o.claim(2).unwrap().checkpoint, None);
        assert_eq!(o.refresh(&read[..1]), None);
        assert_eq!((o.len(), o.is_empty(), o.count().get()), (2, false, 8));
    }
}
