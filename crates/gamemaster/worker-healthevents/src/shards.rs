//! The worker's shards: claiming them at start ([`claim_all`]), step 0 (re-reading the
//! checkpoints) and step 1's placing of entries against them.
//!
//! An entry at or below its shard's checkpoint was committed already (by this instance
//! before a lost reply, or by the shard's previous owner), so it is not applied again.
//! Its snapshot, though, may never have gone out (the owner stopped between commit and
//! publish), so the last such entry of each game in a batch republishes the game's
//! current record; a Lobby that had it drops the copy by its `source_entry_id`.

use std::collections::HashMap;

use domain_runtime::{EntryPosition, GameId, Ownership, RuntimeRecord, ShardCount};
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
    /// At or below its shard's checkpoint: applied before.
    Replayed(HealthEvent),
    /// Of a shard another instance owns: not even decoded here (its owner handles it,
    /// dead letter included).
    NotOwned,
}

impl Decoded {
    /// Decodes `entry` and places it: the shard comes from the raw `game_id` field, so an
    /// entry that does not decode has one too (and the same one any other process
    /// computes).
    pub(crate) fn of(entry: &StreamEntry, owner: &Ownership) -> Self {
        let game_id = entry.field(contracts::health_events::fields::GAME_ID);
        let shard = owner.shard_of(game_id.unwrap_or_default());
        if owner.claim(shard).is_none() {
            return Self::NotOwned;
        }
        match crate::decode(entry) {
            Err(reason) => Self::Skipped(reason),
            Ok(event) if owner.is_applied(shard, position(entry.id)) => Self::Replayed(event),
            Ok(event) => Self::Fresh(event, shard),
        }
    }

    /// Whether step 2 applies it.
    pub(crate) fn is_fresh(&self) -> bool {
        matches!(self, Self::Fresh(..))
    }
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
/// the database holds them (a lost reply may have hidden a commit). A shard claimed since
/// by another instance is reported as [`ports::Error::Fenced`].
pub(crate) async fn refresh<S: RuntimeRecordStore>(
    store: &S,
    owner: &mut Ownership,
) -> Result<(), ports::Error> {
    let shards: Vec<u32> = owner.claims().map(|c| c.shard).collect();
    let read = store.read_shards(&shards).await?;
    match owner.refresh(&read) {
        None => Ok(()),
        Some(shard) => Err(ports::Error::Fenced {
            shard,
            detail: "its epoch moved: another instance claimed it".to_owned(),
        }),
    }
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
