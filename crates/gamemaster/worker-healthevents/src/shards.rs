//! The worker's shards: claiming them all ([`claim_all`], for tools and tests that run one
//! instance without leases), where reading starts ([`start_position`]), step 0 (re-reading
//! the checkpoints, the summaries and the unpublished snapshots of shards taken over) and
//! step 1's placing of entries against them.
//!
//! An entry at or below its shard's checkpoint was committed already (by this instance,
//! perhaps before a lost reply, or by the shard's previous owner), so it is not applied
//! again. Its snapshot, if it had one, may never have gone out (the owner stopped between
//! commit and publish): the store kept it in the same transaction, and it is published
//! from there ([`unpublished`]); a Lobby that had it drops the copy by its
//! `source_entry_id`.

use std::collections::{BTreeMap, HashSet};

use domain_runtime::{EngineHealth, EntryPosition, GameId, Ownership, Refreshed, ShardCount};
use ports::{LobbyEvent, RuntimeRecordStore};
use stream_consumer::{EntryId, StreamEntry};

use crate::decode::{HealthEvent, SkipReason};

/// Step 1: one entry, decoded and placed against its shard's checkpoint.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// Cannot be handled: skipped, with why.
    Skipped(SkipReason),
    /// To apply, in the shard given.
    Fresh(HealthEvent, u32),
    /// At or below its shard's checkpoint: handled before (by this instance, which reads
    /// it again after a rewind, or by the shard's previous owner), or skipped when it was
    /// first read.
    Done,
    /// Of a shard another instance owns: not even decoded here (its owner handles it,
    /// dead letter included).
    NotOwned,
}

impl Decoded {
    /// Decodes `entry` and places it: the shard comes from the raw `game_id` field, so an
    /// entry that does not decode has one too (and the same one any other process
    /// computes). An entry handled before is not decoded again.
    pub(crate) fn of(entry: &StreamEntry, owner: &Ownership) -> Self {
        let game_id = entry.field(contracts::health_events::fields::GAME_ID);
        let shard = owner.shard_of(game_id.unwrap_or_default());
        if owner.claim(shard).is_none() {
            return Self::NotOwned;
        }
        if owner.is_applied(shard, position(entry.id)) {
            return Self::Done;
        }
        match crate::decode(entry) {
            Err(reason) => Self::Skipped(reason),
            Ok(event) => Self::Fresh(event, shard),
        }
    }

    /// Whether step 2 applies it.
    pub(crate) fn is_fresh(&self) -> bool {
        matches!(self, Self::Fresh(..))
    }
}

/// A shard bookkeeping position as the stream's entry id.
pub(crate) fn entry_id(at: EntryPosition) -> EntryId {
    EntryId::new(at.ms, at.seq)
}

/// An entry id as the shard bookkeeping spells it.
pub(crate) fn position(id: EntryId) -> EntryPosition {
    EntryPosition {
        ms: id.ms,
        seq: id.seq,
    }
}

/// Step 0: after a write whose outcome is unknown, the checkpoints of every owned shard as
/// the database holds them (a lost reply may have hidden a commit). The shards claimed
/// since by another instance are given up.
pub(crate) async fn refresh<S: RuntimeRecordStore>(
    store: &S,
    owner: &mut Ownership,
) -> Result<Refreshed, ports::Error> {
    let shards: Vec<u32> = owner.claims().map(|c| c.shard).collect();
    let read = store.read_shards(&shards).await?;
    Ok(owner.refresh(&read))
}

/// Step 0: the snapshots the store kept with `shards` that are not known to have gone
/// out, stamped `now_ms`, and only those of entries after `after` for the shards it
/// names (the commits a re-read found; the others are all taken).
pub(crate) async fn unpublished<S: RuntimeRecordStore>(
    store: &S,
    owner: &Ownership,
    shards: &[u32],
    after: &[(u32, Option<EntryPosition>)],
    now_ms: u64,
) -> Result<Vec<LobbyEvent>, ports::Error> {
    let kept = store.unpublished(shards).await?;
    Ok(kept
        .into_iter()
        .filter(|s| {
            let shard = owner.shard_of(s.game_id.as_str().as_bytes());
            after
                .iter()
                .find(|(a, _)| *a == shard)
                .is_none_or(|&(_, from)| s.source_entry_id > from)
        })
        .map(|mut s| {
            s.occurred_at_ms = now_ms;
            LobbyEvent::SnapshotUpdate(s)
        })
        .collect())
}

/// Step 0 for shards just taken over: their games' summaries as stored, which the worker
/// takes as published (the previous owner published what it applied; what it may not
/// have, the store kept for [`unpublished`]), so the new owner sends no burst of repeats.
pub(crate) async fn stored_summaries<S: RuntimeRecordStore>(
    store: &S,
    owner: &Ownership,
    gained: &[u32],
) -> Result<Vec<(GameId, EngineHealth)>, ports::Error> {
    let summaries = store.summaries().await?;
    Ok(summaries
        .into_iter()
        .filter_map(|(game, summary)| {
            let shard = owner.shard_of(game.as_str().as_bytes());
            Some((game, summary?)).filter(|_| gained.contains(&shard))
        })
        .collect())
}

/// Each owned shard's lag in seconds behind `last` (the stream's last entry): from its
/// progress, the later of its checkpoint and `finished` (what step 2 finished, unless the
/// shard is `unread`: gained, its entries not read yet). `NaN` for a shard with no
/// progress at all (never applied, not read yet).
pub(crate) fn lags(
    owner: &Ownership,
    finished: Option<EntryId>,
    unread: &HashSet<u32>,
    last: EntryId,
) -> BTreeMap<u32, f64> {
    owner
        .claims()
        .map(|c| {
            let finished = finished
                .filter(|_| !unread.contains(&c.shard))
                .map(position);
            let lag = c.checkpoint.max(finished).map_or(f64::NAN, |p| {
                let ms = last.ms.saturating_sub(p.ms);
                // Milliseconds of a lag fit an f64 exactly far beyond any real one.
                #[allow(clippy::cast_precision_loss)]
                let seconds = ms as f64 / 1000.0;
                seconds
            });
            (c.shard, lag)
        })
        .collect()
}

/// Where a consumer of the shards `owner` holds starts reading: after the lowest
/// checkpoint (every entry of every owned shard after it is unapplied or skipped by its
/// checkpoint). `None` when nothing is owned.
#[must_use]
pub fn start_position(owner: &Ownership) -> Option<EntryId> {
    owner.low_water().map(entry_id)
}

/// Claims every shard of a layout of `count` for `instance`: what a lone instance owns
/// (one instance owns them all until leases divide them). A running instance that held
/// them is fenced off by it.
///
/// # Errors
/// [`ports::Error::Invalid`] when the database is laid out in another count; a store
/// failure.
pub async fn claim_all<S: RuntimeRecordStore>(
    store: &S,
    instance: &str,
    count: ShardCount,
) -> Result<Ownership, ports::Error> {
    let all: Vec<u32> = count.all().collect();
    let claims = store.claim_shards(instance, count, &all).await?;
    Ok(Ownership::new(count, claims))
}
