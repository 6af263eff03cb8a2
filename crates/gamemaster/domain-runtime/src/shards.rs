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
    /// none), as stored; `None` when nothing is known. May run ahead of the checkpoint.
    /// The snapshots of later entries the store keeps with the shard until it moves.
    pub published: Option<EntryPosition>,
}

/// What a write records for one shard: the epoch it must still be held under, and the
/// published mark to move it to (`None`: leave the stored one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardMark {
    /// The shard.
    pub shard: u32,
    /// The fencing token the write commits under.
    pub epoch: u64,
    /// Through which entry this instance's snapshots of the shard have gone out.
    pub published: Option<EntryPosition>,
}

/// The shards an instance owns in a layout of `count` shards.
///
/// Besides each shard's claim, it keeps through which entry this instance's snapshots of
/// the shard have gone out (its *mark*). Publishes are numbered as they are queued
/// ([`Ownership::queue`]); a shard's mark moves only with a publish queued after the
/// shard was gained, since only such a publish carries the shard's snapshots from where
/// its reading (re)started, ahead of them the ones its previous owner left unpublished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    count: ShardCount,
    owned: BTreeMap<u32, ShardClaim>,
    /// Per owned shard: the number of the first publish that covers it, and its mark.
    marks: BTreeMap<u32, (u64, Option<EntryPosition>)>,
    /// How many publishes were queued.
    queued: u64,
    /// The last publish that went out: its number and through which entry.
    last_sent: Option<(u64, EntryPosition)>,
}

/// A re-read of the checkpoints (see [`Ownership::refresh`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// The shards another instance claimed since, given up, in shard order.
    pub lost: Vec<u32>,
    /// The shards whose stored checkpoint was ahead of the known one (a commit whose
    /// reply was lost), with the checkpoint known before: the snapshots of that commit
    /// never went out.
    pub committed: Vec<(u32, Option<EntryPosition>)>,
}

impl Ownership {
    /// The ownership `claims` give, in a layout of `count`.
    #[must_use]
    pub fn new(count: ShardCount, claims: impl IntoIterator<Item = ShardClaim>) -> Self {
        let mut ownership = Self {
            count,
            owned: BTreeMap::new(),
            marks: BTreeMap::new(),
            queued: 0,
            last_sent: None,
        };
        ownership.gain(claims);
        ownership
    }

    /// Adds `claims` (shards just claimed). Returns where reading must start for their
    /// unapplied entries to be seen: after the lowest of their checkpoints; `0-0` for a
    /// shard never applied. `None` when `claims` is empty.
    pub fn gain(&mut self, claims: impl IntoIterator<Item = ShardClaim>) -> Option<EntryPosition> {
        let mut lowest: Option<EntryPosition> = None;
        for claim in claims {
            let from = claim.checkpoint.unwrap_or(ZERO);
            lowest = Some(lowest.map_or(from, |l| l.min(from)));
            self.marks.insert(claim.shard, (self.queued, None));
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
                self.marks.remove(s);
                self.owned.remove(s).is_some()
            })
            .collect()
    }

    /// Where reading must start for every owned shard's unapplied entries: after the
    /// lowest checkpoint. `None` when nothing is owned.
    #[must_use]
    pub fn low_water(&self) -> Option<EntryPosition> {
        self.owned
            .values()
            .map(|c| c.checkpoint.unwrap_or(ZERO))
            .min()
    }

    /// A publish is queued: its number, for [`Ownership::sent`].
    pub fn queue(&mut self) -> u64 {
        let number = self.queued;
        self.queued += 1;
        number
    }

    /// Publish number `publish` went out, with this instance's snapshots through
    /// `through`: the marks of the shards it covers move there (never back).
    pub fn sent(&mut self, publish: u64, through: EntryPosition) {
        for (since, mark) in self.marks.values_mut() {
            if *since <= publish {
                *mark = (*mark).max(Some(through));
            }
        }
        self.last_sent = self.last_sent.max(Some((publish, through)));
    }

    /// The mark of a shard gained before publish number `since` was queued, once every
    /// queued publish went out: for a shard given up in the meantime. `None` when no
    /// publish covering it went out.
    #[must_use]
    pub fn sent_since(&self, since: u64) -> Option<EntryPosition> {
        self.last_sent
            .filter(|&(publish, _)| publish >= since)
            .map(|(_, through)| through)
    }

    /// The number of the last publish that went out, if any.
    #[must_use]
    pub fn last_publish_sent(&self) -> Option<u64> {
        self.last_sent.map(|(publish, _)| publish)
    }

    /// The number the next publish gets: a shard gained now is covered from it on.
    #[must_use]
    pub fn next_publish(&self) -> u64 {
        self.queued
    }

    /// The number of the first publish that covers `shard`, when owned (see
    /// [`Ownership::sent_since`]).
    #[must_use]
    pub fn covered_from(&self, shard: u32) -> Option<u64> {
        self.marks.get(&shard).map(|&(since, _)| since)
    }

    /// This instance's mark on `shard` (what its writes record there); `None` when no
    /// publish covering it went out, or it is not owned.
    #[must_use]
    pub fn mark(&self, shard: u32) -> Option<EntryPosition> {
        self.marks.get(&shard).and_then(|&(_, mark)| mark)
    }

    /// The owned shards whose checkpoint is below `through` (or unset), or whose stored
    /// mark is below this instance's: those an idle advance moves (see
    /// `RuntimeRecordStore::advance_checkpoints`).
    #[must_use]
    pub fn behind(&self, through: EntryPosition) -> Vec<ShardMark> {
        self.owned
            .values()
            .filter(|c| {
                c.checkpoint.is_none_or(|at| at < through) || c.published < self.mark(c.shard)
            })
            .map(|c| ShardMark {
                shard: c.shard,
                epoch: c.epoch,
                published: self.mark(c.shard),
            })
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
        let mark = self.mark(shard);
        if let Some(claim) = self.owned.get_mut(&shard) {
            claim.checkpoint = claim.checkpoint.max(Some(entry));
            claim.published = claim.published.max(mark);
        }
    }

    /// Takes the checkpoints and marks of `read` (as the database holds them now) for the
    /// shards still held under the same epoch; gives up the shards whose epoch moved
    /// (another instance claimed them). See [`Refreshed`].
    pub fn refresh(&mut self, read: &[ShardClaim]) -> Refreshed {
        let mut refreshed = Refreshed::default();
        for fresh in read {
            match self.owned.get_mut(&fresh.shard) {
                Some(claim) if claim.epoch == fresh.epoch => {
                    if fresh.checkpoint > claim.checkpoint {
                        refreshed.committed.push((fresh.shard, claim.checkpoint));
                    }
                    claim.checkpoint = fresh.checkpoint;
                    claim.published = fresh.published;
                }
                Some(_) => refreshed.lost.push(fresh.shard),
                None => {}
            }
        }
        refreshed.lost = self.lose(&refreshed.lost);
        refreshed
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

    fn claim(shard: u32, epoch: u64, checkpoint: Option<EntryPosition>) -> ShardClaim {
        ShardClaim {
            shard,
            epoch,
            checkpoint,
            published: None,
        }
    }

    fn owning(claims: &[(u32, u64, Option<EntryPosition>)]) -> Ownership {
        Ownership::new(
            ShardCount::new(8).unwrap(),
            claims.iter().map(|&(s, e, c)| claim(s, e, c)),
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
    fn a_refresh_takes_what_is_stored_finds_hidden_commits_and_gives_up_lost_shards() {
        let mut o = owning(&[(1, 3, Some(at(10, 2))), (2, 5, None), (3, 1, None)]);
        let read = [
            ShardClaim {
                published: Some(at(9, 0)),
                ..claim(1, 3, Some(at(20, 0)))
            },
            claim(2, 6, Some(at(30, 0))),
            claim(3, 1, None),
        ];
        let refreshed = o.refresh(&read);
        assert_eq!(refreshed.lost, vec![2]);
        assert_eq!(
            refreshed.committed,
            vec![(1, Some(at(10, 2)))],
            "the commit found by the re-read, from where it was known"
        );
        assert_eq!(o.claim(1).unwrap().checkpoint, Some(at(20, 0)));
        assert_eq!(o.claim(1).unwrap().published, Some(at(9, 0)));
        assert!(o.claim(2).is_none(), "given up");
        assert_eq!(o.refresh(&read[..1]), Refreshed::default());
        assert_eq!((o.len(), o.is_empty(), o.count().get()), (2, false, 8));
    }

    #[test]
    fn a_gain_says_where_reading_must_start_and_a_loss_forgets_the_shard() {
        let mut o = owning(&[(1, 3, Some(at(10, 0)))]);
        assert_eq!(o.low_water(), Some(at(10, 0)));
        let from = o.gain([claim(2, 1, Some(at(7, 1))), claim(3, 1, Some(at(9, 0)))]);
        assert_eq!(from, Some(at(7, 1)));
        assert_eq!(o.low_water(), Some(at(7, 1)));
        let published_lower = ShardClaim {
            published: Some(at(2, 0)),
            ..claim(5, 1, Some(at(8, 0)))
        };
        assert_eq!(
            o.gain([published_lower]),
            Some(at(8, 0)),
            "the snapshots left unpublished come from the store, not a re-read"
        );
        assert_eq!(o.gain([claim(4, 1, None)]), Some(at(0, 0)), "never applied");
        assert_eq!(o.gain([]), None);
        assert_eq!(o.lose(&[2, 4, 5, 6]), vec![2, 4, 5], "6 was never owned");
        assert_eq!(o.low_water(), Some(at(9, 0)));
        assert_eq!(o.lose(&[1, 3]).len(), 2);
        assert_eq!(o.low_water(), None, "nothing owned");
    }

    #[test]
    fn a_mark_moves_only_with_a_publish_queued_after_its_shard_was_gained() {
        let mut o = owning(&[(1, 3, Some(at(10, 0)))]);
        let first = o.queue();
        o.gain([ShardClaim {
            published: Some(at(4, 0)),
            ..claim(2, 1, Some(at(8, 0)))
        }]);
        o.sent(first, at(12, 0));
        assert_eq!(o.mark(1), Some(at(12, 0)));
        assert_eq!(
            o.mark(2),
            None,
            "the publish before the gain carried none of 2's snapshots"
        );
        let second = o.queue();
        o.sent(second, at(11, 0));
        assert_eq!(o.mark(1), Some(at(12, 0)), "never back");
        assert_eq!(o.mark(2), Some(at(11, 0)));
        assert_eq!(o.mark(7), None, "not owned");
    }

    #[test]
    fn a_shard_given_up_takes_the_last_publish_only_if_it_covered_it() {
        let mut o = owning(&[]);
        assert_eq!(o.sent_since(0), None, "nothing went out");
        let since = o.next_publish();
        let n = o.queue();
        o.sent(n, at(5, 0));
        assert_eq!(o.sent_since(since), Some(at(5, 0)));
        assert_eq!(o.last_publish_sent(), Some(n));
        assert_eq!(o.sent_since(o.next_publish()), None, "gained after it");
    }

    #[test]
    fn a_write_records_this_instances_mark_and_a_lower_stored_mark_is_behind() {
        let mut o = owning(&[(1, 3, Some(at(10, 0)))]);
        assert!(o.behind(at(10, 0)).is_empty());
        let n = o.queue();
        o.sent(n, at(10, 0));
        let mark = ShardMark {
            shard: 1,
            epoch: 3,
            published: Some(at(10, 0)),
        };
        assert_eq!(o.behind(at(10, 0)), vec![mark], "its stored mark is older");
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
        let shards = |through| -> Vec<(u32, u64)> {
            o.behind(through)
                .iter()
                .map(|m| (m.shard, m.epoch))
                .collect()
        };
        assert_eq!(shards(at(11, 0)), vec![(1, 3), (2, 4)]);
        assert_eq!(shards(at(10, 0)), vec![(2, 4)]);
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
