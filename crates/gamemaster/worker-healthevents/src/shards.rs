//! The worker's shards: claiming them all ([`claim_all`], for tools and tests that run one
//! instance without leases), where reading starts ([`start_position`]), step 0 (re-reading
//! the checkpoints, the summaries of shards taken over) and step 1's placing of entries
//! against them.
//!
//! An entry at or below its shard's checkpoint was committed already (by this instance,
//! perhaps before a lost reply, or by the shard's previous owner), so it is not applied
//! again. When the previous owner applied it, or the reply was lost, its snapshot may never
//! have gone out (the owner stopped between commit and publish), so the last such entry of
//! each game in a batch republishes the game's current record; a Lobby that had it drops
//! the copy by its `source_entry_id`.

use std::collections::HashMap;

use domain_runtime::{EngineHealth, EntryPosition, GameId, Ownership, RuntimeRecord, ShardCount};
use ports::RuntimeRecordStore;
use stream_consumer::{EntryId, StreamEntry};

use crate::decode::{HealthEvent, SkipReason};

/// Step 1: one entry, decoded and placed against its shard's checkpoint.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// Cannot be handled: skipped, with why.
    Skipped(SkipReason),
    /// To apply, in the shard given.
    Fresh(HealthEvent, u32),
    /// At or below its shard's checkpoint, in a shard taken over: applied by the previous
    /// owner, whose snapshot may not have gone out.
    Replayed(HealthEvent),
    /// At or below its shard's checkpoint otherwise: this instance handled it before (it
    /// reads it again after a rewind), or it was skipped when it was first read.
    Done,
    /// Of a shard another instance owns: not even decoded here (its owner handles it,
    /// dead letter included).
    NotOwned,
}

impl Decoded {
    /// Decodes `entry` and places it: the shard comes from the raw `game_id` field, so an
    /// entry that does not decode has one too (and the same one any other process
    /// computes). An entry handled before is decoded only when it republishes.
    pub(crate) fn of(entry: &StreamEntry, owner: &Ownership) -> Self {
        let game_id = entry.field(contracts::health_events::fields::GAME_ID);
        let shard = owner.shard_of(game_id.unwrap_or_default());
        if owner.claim(shard).is_none() {
            return Self::NotOwned;
        }
        let at = position(entry.id);
        let applied = owner.is_applied(shard, at);
        if applied && !owner.republishes(shard, at) {
            return Self::Done;
        }
        match (crate::decode(entry), applied) {
            (Err(_), true) => Self::Done,
            (Err(reason), false) => Self::Skipped(reason),
            (Ok(event), true) => Self::Replayed(event),
            (Ok(event), false) => Self::Fresh(event, shard),
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

/// Per game with replayed entries in the batch: its last replayed entry and its current
/// record (games with no record are left out). One read, only when there are any.
pub(crate) async fn current_records<S: RuntimeRecordStore>(
    store: &S,
    entries: &[StreamEntry],
    decoded: &[Decoded],
) -> Result<HashMap<GameId, (EntryId, RuntimeRecord)>, ports::Error> {
    let mut last: HashMap<&GameId, EntryId> = HashMap::new();
    for (entry, d) in entries.iter().zip(decoded) {
        if let Decoded::Replayed(event) = d {
            last.insert(&event.game_id, entry.id);
        }
    }
    if last.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<GameId> = last.keys().map(|&id| id.clone()).collect();
    let records = store.get_many(&ids).await?;
    Ok(records
        .into_iter()
        .filter_map(|record| {
            let at = *last.get(&record.game_id)?;
            Some((record.game_id.clone(), (at, record)))
        })
        .collect())
}

/// Step 0: after a write whose outcome is unknown, the checkpoints of every owned shard as
/// the database holds them (a lost reply may have hidden a commit). The shards claimed
/// since by another instance are given up and returned.
pub(crate) async fn refresh<S: RuntimeRecordStore>(
    store: &S,
    owner: &mut Ownership,
) -> Result<Vec<u32>, ports::Error> {
    let shards: Vec<u32> = owner.claims().map(|c| c.shard).collect();
    let read = store.read_shards(&shards).await?;
    Ok(owner.refresh(&read))
}

/// Step 0 for shards just taken over: their games' summaries as stored, which the worker
/// takes as published (the previous owner published what it applied; what it may not
/// have, the replay republishes), so the new owner sends no burst of repeats.
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
