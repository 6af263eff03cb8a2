//! Which shards an instance owns, under which epoch, and how far each was applied.
//!
//! The epoch is the fencing token: claiming a shard raises it, and a batch commits only
//! under the epoch the shard holds (checked in the batch's transaction), so an instance
//! that lost a shard cannot commit for it. The checkpoint is the last entry of the shard
//! whose effects were committed: an entry at or below it is never applied again.

use std::collections::BTreeMap;

pub use contracts::SourceEntryId as EntryPosition;
pub use contracts::shards::{DEFAULT_SHARDS, InvalidShardCount, MAX_SHARDS, ShardCount};

/// The position before every entry, `0-0`.
const ZERO: EntryPosition = EntryPosition { ms: 0, seq: 0 };

/// One shard as claimed (or last read): its epoch and checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardClaim {
    /// The shard.
    pub shard: u32,
    /// The fencing token this instance commits under.
    pub epoch: u64,
    /// The last entry applied for the shard; `None` before the first.
    pub checkpoint: Option<EntryPosition>,
    /// Through which entry the shard's snapshots are known to have gone out (or needed
    /// none); `None` when nothing is known. May run ahead of the checkpoint.
    pub published: Option<EntryPosition>,
}

/// The shards an instance owns in a layout of `count` shards.
///
/// A shard claimed from another owner (or at a start) is *taken over* up to the checkpoint
/// it was claimed with: its entries up to there were applied by someone else, whose
/// snapshots may not all have gone out, so the worker republishes for them
/// ([`Ownership::republishes`]) until its reading passes that point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    count: ShardCount,
    owned: BTreeMap<u32, ShardClaim>,
    /// Per shard taken over: the entries whose snapshots may be missing, after the first
    /// position (when known) through the second.
    taken_over: BTreeMap<u32, (Option<EntryPosition>, EntryPosition)>,
    /// Through which entry this instance's snapshots have gone out (its mark).
    published: Option<EntryPosition>,
}

impl Ownership {
    /// The ownership `claims` give, in a layout of `count`; every one is taken over.
    #[must_use]
    pub fn new(count: ShardCount, claims: impl IntoIterator<Item = ShardClaim>) -> Self {
        let mut ownership = Self {
            count,
            owned: BTreeMap::new(),
            taken_over: BTreeMap::new(),
            published: None,
        };
        ownership.gain(claims);
        ownership
    }

    /// Adds `claims` (shards just claimed), each taken over at its checkpoint. Returns
    /// where reading must start for their entries to be seen: after the lowest of their
    /// checkpoints, or of their published marks where lower (so the entries whose
    /// snapshots may be missing are read again and republished); `0-0` for a shard never
    /// applied. `None` when `claims` is empty.
    pub fn gain(&mut self, claims: impl IntoIterator<Item = ShardClaim>) -> Option<EntryPosition> {
        let mut lowest: Option<EntryPosition> = None;
        for claim in claims {
            let from = read_from(&claim);
            lowest = Some(lowest.map_or(from, |l| l.min(from)));
            match claim.checkpoint.filter(|&at| claim.published < Some(at)) {
                Some(at) => self.taken_over.insert(claim.shard, (claim.published, at)),
                None => self.taken_over.remove(&claim.shard),
            };
            self.owned.insert(claim.shard, claim);
        }
        lowest
    }

    /// Gives up `shards` (moved to another instance, or fenced off); returns those that
    /// were owned.
    pub fn lose(&mut self, shards: &[u32]) -> Vec<u32> {
        shards
            .iter()
            .copied()
            .filter(|s| {
                self.taken_over.remove(s);
                self.owned.remove(s).is_some()
            })
            .collect()
    }

    /// Where reading must start for every owned shard's unapplied entries, and for those
    /// whose snapshots may be missing: see [`Ownership::gain`]. `None` when nothing is
    /// owned.
    #[must_use]
    pub fn low_water(&self) -> Option<EntryPosition> {
        self.owned.values().map(read_from).min()
    }

    /// Whether `entry` of `shard`, applied before, may lack its snapshot: applied by a
    /// previous owner after the shard's published mark, up to the checkpoint it was
    /// claimed with (or committed by this instance before a lost reply). It is
    /// republished.
    #[must_use]
    pub fn republishes(&self, shard: u32, entry: EntryPosition) -> bool {
        self.taken_over
            .get(&shard)
            .is_some_and(|&(after, through)| after.is_none_or(|a| entry > a) && entry <= through)
    }

    /// Reading has passed `through`: shards taken over up to there are now this
    /// instance's own work.
    pub fn passed(&mut self, through: EntryPosition) {
        self.taken_over.retain(|_, (_, at)| *at > through);
    }

    /// This instance's snapshots have gone out through `at` (its mark never moves back).
    pub fn mark_published(&mut self, at: EntryPosition) {
        self.published = self.published.max(Some(at));
    }

    /// This instance's mark: what its writes record as published for their shards.
    #[must_use]
    pub fn published(&self) -> Option<EntryPosition> {
        self.published
    }

    /// The owned shards whose checkpoint is below `through` (or unset), or whose stored
    /// mark is below this instance's, with their epochs: those an idle advance moves (see
    /// `RuntimeRecordStore::advance_checkpoints`).
    #[must_use]
    pub fn behind(&self, through: EntryPosition) -> Vec<(u32, u64)> {
        self.owned
            .values()
            .filter(|c| c.checkpoint.is_none_or(|at| at < through) || c.published < self.published)
            .map(|c| (c.shard, c.epoch))
            .collect()
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

    /// Records that a write moved `shard`'s checkpoint up to `entry` (never down), and its
    /// stored mark to this instance's. An unowned shard is left alone.
    pub fn advance(&mut self, shard: u32, entry: EntryPosition) {
        if let Some(claim) = self.owned.get_mut(&shard) {
            claim.checkpoint = claim.checkpoint.max(Some(entry));
            claim.published = claim.published.max(self.published);
        }
    }

    /// Takes the checkpoints of `read` (as the database holds them now) for the shards
    /// still held under the same epoch. A checkpoint found higher than known reflects a
    /// commit whose reply was lost, so its snapshots never went out: the shard counts as
    /// taken over up to it (from where it was taken over already, if its previous owner's
    /// entries are still to be read again). The shards whose epoch moved (another
    /// instance claimed them) are given up and returned, in shard order.
    pub fn refresh(&mut self, read: &[ShardClaim]) -> Vec<u32> {
        let mut lost = Vec::new();
        for fresh in read {
            match self.owned.get_mut(&fresh.shard) {
                Some(claim) if claim.epoch == fresh.epoch => {
                    if let Some(at) = fresh.checkpoint.filter(|&at| Some(at) > claim.checkpoint) {
                        let after = self
                            .taken_over
                            .get(&fresh.shard)
                            .map_or(claim.checkpoint, |&(after, _)| after);
                        self.taken_over.insert(fresh.shard, (after, at));
                    }
                    claim.checkpoint = fresh.checkpoint;
                }
                Some(_) => lost.push(fresh.shard),
                None => {}
            }
        }
        self.lose(&lost)
    }
}

/// Where reading starts for one shard's claim: after its checkpoint, or after its
/// published mark when that is lower; `0-0` when it was never applied.
fn read_from(claim: &ShardClaim) -> EntryPosition {
    match (claim.checkpoint, claim.published) {
        (Some(at), Some(published)) => at.min(published),
        (at, _) => at.unwrap_or(ZERO),
    }
}

/// Which of `members` should own `shard`: the one with the highest rendezvous score
/// (highest-random-weight hashing). Every instance computes the same answer from the same
/// member list, whatever its order, and a change of members moves only the shards it must:
/// a member that joins takes about 1/N of the shards, from every other member alike; a
/// member that leaves hands over only its own. `None` when there are no members.
#[must_use]
pub fn rendezvous_owner(shard: u32, members: &[String]) -> Option<&str> {
    members
        .iter()
        .max_by_key(|m| (score(m, shard), m.as_str()))
        .map(String::as_str)
}

/// The shards of a layout of `count` that `member` should own among `members`.
#[must_use]
pub fn assigned(count: ShardCount, members: &[String], member: &str) -> Vec<u32> {
    count
        .all()
        .filter(|&s| rendezvous_owner(s, members) == Some(member))
        .collect()
}

/// A member's weight for a shard: FNV-1a over the member's bytes, a separator and the
/// shard's, finished with a 64-bit mixer so that near names and numbers spread evenly.
fn score(member: &str, shard: u32) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = member.bytes().chain([0xff]).chain(shard.to_le_bytes());
    let mut h = bytes.fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    // The finaliser of splitmix64.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
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
                published: None,
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
    fn a_refresh_takes_checkpoints_under_the_same_epoch_and_gives_up_lost_shards() {
        let mut o = owning(&[(1, 3, Some(at(10, 2))), (2, 5, None)]);
        let read = [
            ShardClaim {
                shard: 1,
                epoch: 3,
                checkpoint: Some(at(20, 0)),
                published: None,
            },
            ShardClaim {
                shard: 2,
                epoch: 6,
                checkpoint: Some(at(30, 0)),
                published: None,
            },
        ];
        o.passed(at(15, 0));
        assert!(!o.republishes(1, at(10, 2)));
        assert_eq!(o.refresh(&read), vec![2]);
        assert_eq!(o.claim(1).unwrap().checkpoint, Some(at(20, 0)));
        assert!(
            o.republishes(1, at(20, 0)),
            "a commit found by the re-read never published"
        );
        assert!(o.claim(2).is_none(), "given up");
        assert!(o.refresh(&read[..1]).is_empty());
        assert_eq!((o.len(), o.is_empty(), o.count().get()), (1, false, 8));
    }

    #[test]
    fn a_refresh_keeps_what_a_takeover_still_has_to_republish() {
        // Taken over with entries after 4-0 through 10-2 maybe unpublished; before the
        // reading went back for them, a lost reply hides a commit up to 20-0.
        let mut o = Ownership::new(
            ShardCount::new(8).unwrap(),
            [ShardClaim {
                shard: 1,
                epoch: 3,
                checkpoint: Some(at(10, 2)),
                published: Some(at(4, 0)),
            }],
        );
        let read = [ShardClaim {
            shard: 1,
            epoch: 3,
            checkpoint: Some(at(20, 0)),
            published: Some(at(4, 0)),
        }];
        assert!(o.refresh(&read).is_empty());
        let table = [
            (at(4, 0), false),
            (at(7, 0), true),
            (at(10, 2), true),
            (at(15, 0), true),
            (at(20, 0), true),
            (at(20, 1), false),
        ];
        for (entry, republished) in table {
            assert_eq!(o.republishes(1, entry), republished, "{entry}");
        }
    }

    fn claim(shard: u32, epoch: u64, checkpoint: Option<EntryPosition>) -> ShardClaim {
        ShardClaim {
            shard,
            epoch,
            checkpoint,
            published: None,
        }
    }

    #[test]
    fn a_gain_says_where_reading_must_start_and_a_loss_forgets_the_shard() {
        let mut o = owning(&[(1, 3, Some(at(10, 0)))]);
        assert_eq!(o.low_water(), Some(at(10, 0)));
        let from = o.gain([claim(2, 1, Some(at(7, 1))), claim(3, 1, Some(at(9, 0)))]);
        assert_eq!(from, Some(at(7, 1)));
        assert_eq!(o.low_water(), Some(at(7, 1)));
        assert_eq!(o.gain([claim(4, 1, None)]), Some(at(0, 0)), "never applied");
        assert_eq!(o.gain([]), None);
        assert_eq!(o.lose(&[2, 4, 6]), vec![2, 4], "6 was never owned");
        assert_eq!(o.low_water(), Some(at(9, 0)));
        assert_eq!(o.lose(&[1, 3]).len(), 2);
        assert_eq!(o.low_water(), None, "nothing owned");
    }

    #[test]
    fn replays_republish_only_up_to_where_a_shard_was_taken_over_until_reading_passes_it() {
        let mut o = owning(&[(1, 3, Some(at(10, 0)))]);
        // Taken over at a start: its entries up to 10-0 republish.
        let table = [
            (1, at(9, 0), true),
            (1, at(10, 0), true),
            (1, at(10, 1), false),
            (2, at(1, 0), false),
        ];
        for (shard, entry, republish) in table {
            assert_eq!(o.republishes(shard, entry), republish, "{shard} {entry}");
        }
        o.gain([claim(2, 1, Some(at(20, 0))), claim(5, 1, None)]);
        assert!(o.republishes(2, at(15, 0)));
        assert!(!o.republishes(5, at(1, 0)), "nothing was applied in 5");
        o.passed(at(12, 0));
        assert!(
            !o.republishes(1, at(9, 0)),
            "1 is this instance's own work now"
        );
        assert!(o.republishes(2, at(15, 0)));
        o.lose(&[2]);
        o.gain([claim(2, 2, Some(at(3, 0)))]);
        assert!(!o.republishes(2, at(15, 0)), "claimed again lower");
    }

    #[test]
    fn a_shard_taken_over_republishes_only_after_its_published_mark() {
        let mut o = owning(&[]);
        o.gain([ShardClaim {
            published: Some(at(5, 0)),
            ..claim(1, 2, Some(at(9, 0)))
        }]);
        assert_eq!(
            o.low_water(),
            Some(at(5, 0)),
            "the missing ones are read again"
        );
        let table = [
            (at(4, 0), false),
            (at(5, 0), false),
            (at(6, 0), true),
            (at(9, 0), true),
        ];
        for (entry, republish) in table {
            assert_eq!(o.republishes(1, entry), republish, "{entry}");
        }
        o.gain([ShardClaim {
            published: Some(at(9, 0)),
            ..claim(2, 2, Some(at(9, 0)))
        }]);
        assert!(!o.republishes(2, at(9, 0)), "everything went out");
    }

    #[test]
    fn a_write_records_this_instances_mark_and_a_lower_stored_mark_is_behind() {
        let mut o = owning(&[(1, 3, Some(at(10, 0)))]);
        assert!(o.behind(at(10, 0)).is_empty());
        o.mark_published(at(10, 0));
        o.mark_published(at(8, 0));
        assert_eq!(o.published(), Some(at(10, 0)), "never back");
        assert_eq!(
            o.behind(at(10, 0)),
            vec![(1, 3)],
            "its stored mark is older"
        );
        o.advance(1, at(10, 0));
        assert_eq!(o.claim(1).unwrap().published, Some(at(10, 0)));
        assert!(o.behind(at(10, 0)).is_empty());
    }

    #[test]
    fn the_shards_behind_a_position_are_those_with_a_lower_or_no_checkpoint() {
        let o = owning(&[
            (1, 3, Some(at(10, 0))),
            (2, 4, None),
            (3, 5, Some(at(12, 0))),
        ]);
        assert_eq!(o.behind(at(11, 0)), vec![(1, 3), (2, 4)]);
        assert_eq!(o.behind(at(10, 0)), vec![(2, 4)]);
    }
}

#[cfg(test)]
mod assignment {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("gm-{i}")).collect()
    }

    fn owners(members: &[String]) -> Vec<String> {
        ShardCount::default()
            .all()
            .map(|s| rendezvous_owner(s, members).unwrap().to_owned())
            .collect()
    }

    #[test]
    fn every_shard_has_one_owner_whatever_the_order_of_the_members() {
        let members = names(3);
        let mut reversed = members.clone();
        reversed.reverse();
        assert_eq!(owners(&members), owners(&reversed));
        let count = ShardCount::default();
        let total: usize = members
            .iter()
            .map(|m| assigned(count, &members, m).len())
            .sum();
        assert_eq!(total, 64);
        assert_eq!(rendezvous_owner(0, &[]), None);
    }

    #[test]
    fn a_member_that_joins_takes_shards_only_for_itself_and_about_its_share() {
        for n in 1..=6 {
            let before = owners(&names(n));
            let after = owners(&names(n + 1));
            let joined = format!("gm-{n}");
            let moved: Vec<usize> = (0..64).filter(|&s| before[s] != after[s]).collect();
            assert!(moved.iter().all(|&s| after[s] == joined), "{n} → {}", n + 1);
            // About 64/(n+1) move; rendezvous hashing's spread on 64 shards is wide.
            let share = 64 / (n + 1);
            assert!(
                moved.len() >= share / 3 && moved.len() <= share * 2 + 4,
                "{n}: {}",
                moved.len()
            );
        }
    }

    #[test]
    fn a_member_that_leaves_hands_over_only_its_own_shards() {
        let all = names(4);
        let before = owners(&all);
        let rest: Vec<String> = all.iter().filter(|m| *m != "gm-2").cloned().collect();
        let after = owners(&rest);
        for s in 0..64 {
            if before[s] != "gm-2" {
                assert_eq!(
                    before[s], after[s],
                    "shard {s} moved although its owner stayed"
                );
            }
        }
    }

    #[test]
    fn three_members_share_the_shards_roughly_evenly() {
        let members = names(3);
        let count = ShardCount::default();
        for m in &members {
            let held = assigned(count, &members, m).len();
            assert!((12..=32).contains(&held), "{m} holds {held}");
        }
    }
}
