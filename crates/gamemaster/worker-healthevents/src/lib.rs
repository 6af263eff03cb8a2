//! The Game Master's `runtime:health_events` worker: it turns the Runtime Manager's
//! engine-health observations into runtime-record updates and debounced snapshots for the
//! Game Lobby.
//!
//! The worker applies the entries of the shards its instance owns (`domain_runtime::
//! Ownership`: each shard's fencing epoch and checkpoint). The lease keeper
//! (`worker-leases`) decides which those are and hands changes over between batches. For
//! every batch the stream-consumer runtime hands it, the worker:
//!
//!  0. **Takes ownership changes**: a shard lost is no longer applied; a shard gained is
//!     applied from its checkpoint, with its games' stored summaries taken as published
//!     (no burst of repeats from the new owner). When a gained shard's checkpoint is
//!     behind what the worker passed, the previous publish is settled and the reading
//!     rewinds there (`BatchOutcome::rewind`); the entries of shards owned before are then
//!     skipped by their checkpoints. A shard lost again before the reading went back for
//!     it is let go as it was claimed: nothing this worker passed counts for it. At most once a second, owned shards with no recent
//!     entries move their checkpoints up to what step 2 finished, so their next owner
//!     starts reading close to now. After a write whose outcome it does not know (a lost
//!     reply may hide a commit) the checkpoints are re-read; shards another instance
//!     claimed are given up.
//!  1. **Decodes** each entry (`game_id`, `event_type`, `occurred_at_ms`; nothing else is
//!     read) and places it in its shard (by the raw `game_id`). An entry of a shard this
//!     instance does not own is left, undecoded, to its owner (counted `not_owned`). A
//!     missing or blank `game_id` or `event_type`, a missing, non-integer or
//!     non-positive `occurred_at_ms`, or an unknown `event_type` is a permanent problem:
//!     the entry is logged with its `stream_entry_id`, counted and skipped, and the offset
//!     still moves past it. An entry at or below its shard's checkpoint was handled
//!     before: it is counted `replayed` and neither applied nor skipped again. When the
//!     shard was taken over up to that entry (or the entry's commit reply was lost), the
//!     last such entry of a game republishes the game's current record, whatever the
//!     debounce says: its snapshot may never have gone out (see the `shards` module).
//!  2. **Applies** the other decoded observations through the store's atomic batch
//!     operation: one transaction for the batch, committed only under the epoch of each
//!     of its shards and moving their checkpoints; stream order kept per game; per
//!     observation, the plan of
//!     its event type (summary plus optional CAS `running → engine_unreachable` or
//!     `engine_unreachable → running`) either moves the status with the summary, or, when
//!     another flow holds the status, writes the summary alone. The store returns each
//!     record as it stood after its observation. Observations for games with no runtime
//!     record are logged, counted and skipped. When the database refuses the batch for
//!     its values, the batch is applied in halves (`stream_consumer::isolate`) until each
//!     refused observation stands alone; those are logged with their `stream_entry_id`,
//!     counted as `refused` and skipped, the rest applied once, in order. Games refused
//!     before are tried alone from the start, so a refusal that recurs costs no search.
//!  3. **Decides publication** per applied observation: a `runtime_snapshot_update` when
//!     the status changed, or when the summary differs from the last one published for the
//!     game (the first event per game after a start always publishes).
//!  4. **Publishes** the batch's snapshots on `gm:lobby_events` in one round trip, in
//!     stream order, each carrying what the database held after its write and the Game
//!     Master's clock. The publish runs in the background while the next batch is read
//!     and applied; the batch's entries are finished (and the offset moves past them)
//!     only once it succeeded, and only then are its summaries remembered as published.
//!  5. **Counts** one "consumed" per entry, by outcome, and one "published" per snapshot;
//!     hands the runtime each entry step 3 skipped (undecodable, for a game with no
//!     record, refused), with why, for the dead letters.
//!
//! A write fenced off (another instance claimed one of its shards, say while this one was
//! paused past its lease) writes nothing: the shard is given up, the keeper is told, and
//! the batch is retried without it, its entries left to the new owner.
//!
//! A transient database or Redis failure (step 2 or 4), or a database that needs an
//! operator (a missing table), stops the batch without finishing it, so the runtime holds
//! the offset and retries: nothing is lost. If it stops a batch being applied in halves,
//! the halves already committed are published and finished as usual and never applied
//! again. When the database write
//! succeeded but the publish failed, the retry publishes the same snapshots again without
//! applying the batch a second time. Snapshots of one batch always go out after those of
//! the batch before it.

mod decode;
mod metrics;
mod shards;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use domain_runtime::{EngineHealth, GameId, Ownership, RuntimeRecord, Transition};
use ports::{
    HealthObservation, LobbyEvent, LobbyEventsPublisher, ObservationResult, OwnershipChange,
    RuntimeRecordStore, RuntimeSnapshot, WorkerSide,
};
use stream_consumer::{BatchHandler, BatchOutcome, EntryId, Isolated, StreamEntry, error_chain};
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};

use shards::{Decoded, entry_id, position};

pub use decode::{HealthEvent, SkipReason, decode};
pub use metrics::{Outcome, WorkerMetrics};
pub use shards::{claim_all, start_position};

/// How often, at most, the checkpoints of owned shards with no recent entries are moved up
/// to what the worker has finished (step 0), so a later owner of such a shard does not
/// start reading far back.
pub const ADVANCE_EVERY: Duration = Duration::from_secs(1);

/// How many games refused by the database the worker remembers (beyond it, the memory
/// starts again empty: a game refused once more is found by the search again).
pub const REFUSED_GAMES_REMEMBERED: usize = 4096;

/// The offset label of this consumer: `gamemaster:stream_offsets:health_events`.
pub const OFFSET_LABEL: &str = "health_events";

/// Milliseconds since the Unix epoch, the clock snapshots are stamped with.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock.
#[must_use]
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    })
}

/// The worker. Plug it into a [`stream_consumer::Consumer`].
pub struct HealthEventsWorker<S, P> {
    store: S,
    publisher: Arc<P>,
    clock: Clock,
    metrics: WorkerMetrics,
    /// Last summary published per game (process memory; empty after a start).
    last_published: HashMap<GameId, EngineHealth>,
    /// Snapshots of entries already applied to the database whose publish has not been
    /// seen to succeed yet.
    outbox: Option<Outbox>,
    /// Games whose last observation the database refused: their observations are applied
    /// alone from the start (step 2).
    refused: HashSet<GameId>,
    /// The shards this instance owns, their epochs and checkpoints.
    owner: Ownership,
    /// Set when a write's outcome is unknown: step 0 re-reads the checkpoints.
    stale: bool,
    /// The lease keeper's end of the handover, when shards move between instances.
    handover: Option<WorkerSide>,
    /// Where reading must go back to, for shards gained with entries this worker passed.
    rewind_to: Option<EntryId>,
    /// The last entry step 2 finished with since the last rewind: every owned shard's
    /// entries up to it are applied or skipped.
    applied_through: Option<EntryId>,
    /// When step 0 last moved idle shards' checkpoints.
    last_advance: Option<Instant>,
    /// Shards lost (with the epochs they were held under) whose last snapshots are not
    /// settled yet: once they are, the mark is written on them and the keeper told.
    letting_go: Vec<(u32, u64)>,
    /// Shards gained whose entries after their checkpoints have not been read yet (a
    /// rewind is due): `applied_through` says nothing about them.
    unread: HashSet<u32>,
    /// Shards lost before they were read: the keeper is told with the others, but
    /// nothing is written on them, since this worker applied none of their entries.
    untouched: Vec<u32>,
}

/// What steps 0 and 1 made of a batch's new entries.
struct Placed {
    /// Each entry, decoded and placed.
    decoded: Vec<Decoded>,
    /// Per game with entries applied before: its last such entry and its record now.
    replayed: HashMap<GameId, (EntryId, RuntimeRecord)>,
    /// The entries to apply.
    observations: Vec<HealthObservation>,
}

/// Snapshots on their way to the lobby events stream.
struct Outbox {
    /// The last entry whose database write these snapshots reflect.
    through: EntryId,
    events: Arc<Vec<LobbyEvent>>,
    /// The publish under way; `None` after it failed (then the events are sent again).
    sending: Option<JoinHandle<Result<(), ports::Error>>>,
}

impl<S, P> HealthEventsWorker<S, P>
where
    S: RuntimeRecordStore,
    P: LobbyEventsPublisher + 'static,
{
    /// Assembles the worker for the shards `owner` holds (see
    /// `RuntimeRecordStore::claim_shards`).
    pub fn new(
        store: S,
        publisher: P,
        clock: Clock,
        metrics: WorkerMetrics,
        owner: Ownership,
    ) -> Self {
        metrics.owned(owner.len());
        Self {
            store,
            publisher: Arc::new(publisher),
            clock,
            metrics,
            last_published: HashMap::new(),
            outbox: None,
            refused: HashSet::new(),
            owner,
            stale: false,
            handover: None,
            rewind_to: None,
            applied_through: None,
            last_advance: None,
            letting_go: Vec::new(),
            unread: HashSet::new(),
            untouched: Vec::new(),
        }
    }

    /// The same worker, taking ownership changes from a lease keeper (and telling it of
    /// shards fenced off) through `side`.
    #[must_use]
    pub fn with_handover(mut self, side: WorkerSide) -> Self {
        self.handover = Some(side);
        self
    }

    /// Step 0: the keeper's changes. A shard lost is no longer applied from this batch
    /// on; a shard gained is applied from its checkpoint (reading rewinds there if this
    /// worker passed it) with its games' stored summaries taken as published.
    async fn take_changes(&mut self) {
        let Some(side) = self.handover.as_mut() else {
            return;
        };
        let changes = side.changes();
        if changes.is_empty() {
            return;
        }
        for change in changes {
            match change {
                OwnershipChange::Lost(shards) => {
                    for &shard in &shards {
                        let Some(epoch) = self.owner.claim(shard).map(|c| c.epoch) else {
                            continue;
                        };
                        if self.unread.remove(&shard) {
                            self.untouched.push(shard);
                        } else {
                            self.letting_go.push((shard, epoch));
                        }
                    }
                    if self.unread.is_empty() {
                        // Every shard the rewind was for is gone again.
                        self.rewind_to = None;
                    }
                    let lost = self.owner.lose(&shards);
                    tracing::info!(shards = ?lost, "shards handed over: no longer applied here");
                }
                OwnershipChange::Gained(claims) => {
                    let gained: Vec<u32> = claims.iter().map(|c| c.shard).collect();
                    self.unread.extend(&gained);
                    if let Some(from) = self.owner.gain(claims).map(entry_id) {
                        self.rewind_to = Some(self.rewind_to.map_or(from, |r| r.min(from)));
                    }
                    self.seed(&gained).await;
                    tracing::info!(shards = ?gained, "shards taken over");
                }
            }
        }
        self.metrics.owned(self.owner.len());
    }

    /// Step 0 for shards lost, once no publish is under way (their last snapshots are
    /// out): their checkpoints and published marks are written down, under the epochs they
    /// were held under, and the keeper may let their leases go. Their next owner then
    /// republishes nothing this instance published. Shards lost before they were read
    /// are let go as they were claimed: moving their checkpoints to what this worker
    /// passed would skip entries nobody applied.
    async fn let_go(&mut self) {
        let untouched = std::mem::take(&mut self.untouched);
        if !untouched.is_empty()
            && let Some(side) = &self.handover
        {
            side.report_released(untouched);
        }
        if self.letting_go.is_empty() || self.outbox.is_some() {
            return;
        }
        let shards = std::mem::take(&mut self.letting_go);
        let through = self
            .applied_through
            .map_or(domain_runtime::EntryPosition { ms: 0, seq: 0 }, position);
        let mark = self.owner.published();
        if let Err(error) = self.store.advance_checkpoints(&shards, through, mark).await {
            tracing::warn!(error = %error_chain(&error), "marks of shards handed over not written; their next owner may republish a few snapshots");
        }
        if let Some(side) = &self.handover {
            side.report_released(shards.into_iter().map(|(s, _)| s).collect());
        }
    }

    /// Step 0 for shards taken over: their games' stored summaries count as published.
    async fn seed(&mut self, gained: &[u32]) {
        match shards::stored_summaries(&self.store, &self.owner, gained).await {
            Ok(summaries) => self.last_published.extend(summaries),
            Err(error) => tracing::warn!(
                error = %error_chain(&error),
                "stored summaries unavailable: the first event of each game taken over publishes"
            ),
        }
    }

    /// Step 0, when a shard gained has entries this worker passed (before the batch, or
    /// applied and still publishing): the previous publish is settled, and the reading
    /// rewinds to the gained shard's checkpoint. `None` when the batch goes on.
    async fn rewind(&mut self, batch: &[StreamEntry]) -> Option<BatchOutcome> {
        let to = self.rewind_to?;
        // Passed: the entries up to the outbox's, or those before the batch (then none
        // lies between `to` and the batch when the batch starts right after it).
        let passed = match &self.outbox {
            Some(outbox) => to < outbox.through,
            None => EntryId::new(to.ms, to.seq.saturating_add(1)) < batch.first()?.id,
        };
        if !passed {
            self.reading_covers_gains();
            return None;
        }
        let applied_before = self.outbox.as_ref().map_or(0, |o| {
            batch.iter().take_while(|e| e.id <= o.through).count()
        });
        let published = settle(
            &mut self.outbox,
            &self.publisher,
            &self.metrics,
            &mut self.last_published,
        )
        .await;
        if let Err(error) = self.settled(published).await {
            return Some(BatchOutcome::stopped(0, error));
        }
        self.reading_covers_gains();
        self.applied_through = None;
        Some(BatchOutcome::rewind(applied_before, to))
    }

    /// The reading goes on from at or below every gained shard's checkpoint: no rewind is
    /// due, and what it finishes from now on covers those shards too.
    fn reading_covers_gains(&mut self) {
        self.rewind_to = None;
        self.unread.clear();
    }

    /// Step 0, at most once per [`ADVANCE_EVERY`] unless `now`: owned shards whose
    /// checkpoint lags what step 2 finished, or whose stored published mark lags this
    /// instance's, move up to them, in one statement, so whoever takes them next starts
    /// reading close to now and republishes nothing that went out. A failure only waits
    /// for the next time.
    async fn advance_idle(&mut self, now: bool) {
        // A shard gained but not read yet from its checkpoint must not move past it.
        let Some(through) = self.applied_through.filter(|_| self.rewind_to.is_none()) else {
            return;
        };
        if !now
            && self
                .last_advance
                .is_some_and(|at| at.elapsed() < ADVANCE_EVERY)
        {
            return;
        }
        self.last_advance = Some(Instant::now());
        let through = position(through);
        let behind = self.owner.behind(through);
        if behind.is_empty() {
            return;
        }
        let mark = self.owner.published();
        match self.store.advance_checkpoints(&behind, through, mark).await {
            Ok(lost) => {
                let lost = self.owner.lose(&lost);
                for (shard, _) in behind {
                    self.owner.advance(shard, through);
                }
                if !lost.is_empty() {
                    self.metrics.fenced();
                    self.fenced_off(lost);
                }
            }
            Err(error) => {
                self.metrics.error("advance");
                tracing::warn!(error = %error_chain(&error), "idle shards' checkpoints not moved; trying again later");
            }
        }
    }

    /// Shards another instance claimed (found by a fenced write or a re-read), given up
    /// already: the keeper learns it, so it no longer counts them as owned.
    fn fenced_off(&mut self, lost: Vec<u32>) {
        if lost.is_empty() {
            return;
        }
        tracing::warn!(shards = ?lost, "fenced off: another instance claimed these shards; no longer applied here");
        self.metrics.owned(self.owner.len());
        if let Some(side) = &self.handover {
            side.report_fenced(lost);
        }
    }

    /// Step 2's bookkeeping of the commits: each committed observation moves its shard's
    /// checkpoint; a failure that stopped the step leaves the last write's outcome unknown
    /// (and a fence gives the shard up).
    fn remember_commits(
        &mut self,
        observations: &[HealthObservation],
        results: &[Result<ObservationResult, ports::Error>],
        stopped: Option<&ports::Error>,
    ) {
        for (observation, result) in observations.iter().zip(results) {
            if result.is_ok() {
                self.owner.advance(observation.shard, observation.entry);
            }
        }
        match stopped {
            Some(error) if error.is_fenced() => self.fenced_write(error),
            Some(_) => self.metrics.error("apply"),
            None => {}
        }
        self.stale |= stopped.is_some();
    }

    /// Step 2 finished with the entries through `last`: idle shards may move up to it, and
    /// shards taken over up to it are this instance's own work now.
    fn finished_through(&mut self, last: Option<&StreamEntry>) {
        if let Some(last) = last {
            self.applied_through = Some(last.id);
            self.owner.passed(position(last.id));
        }
    }

    /// A publish settled through `through` (when it had snapshots): this instance's mark
    /// moves there, and its next writes record it on their shards.
    fn mark_published(&mut self, through: Option<EntryId>) {
        if let Some(through) = through {
            self.owner.mark_published(position(through));
        }
    }

    /// Step 4's second half done beside step 2: a publish that settled moves the mark,
    /// and the shards lost meanwhile can be let go.
    async fn settled(
        &mut self,
        published: Result<Option<EntryId>, ports::Error>,
    ) -> Result<(), ports::Error> {
        let through = published?;
        self.mark_published(through);
        self.let_go().await;
        Ok(())
    }

    /// Step 0 within a batch: the keeper's changes, a rewind if one is due, then idle
    /// shards' checkpoints. `Some` when the batch ends here.
    async fn take_over(&mut self, batch: &[StreamEntry]) -> Option<BatchOutcome> {
        self.take_changes().await;
        self.let_go().await;
        if let Some(rewound) = self.rewind(batch).await {
            return Some(rewound);
        }
        self.advance_idle(false).await;
        None
    }

    /// Steps 0 and 1: the checkpoints as stored, after a write whose outcome is unknown;
    /// each entry decoded and placed against its shard's checkpoint; the current records
    /// of games with entries applied before; the observations to apply.
    async fn place(&mut self, fresh: &[StreamEntry]) -> Result<Placed, ports::Error> {
        if self.stale {
            let lost = shards::refresh(&self.store, &mut self.owner).await?;
            self.fenced_off(lost);
            self.stale = false;
        }
        let decoded: Vec<Decoded> = fresh.iter().map(|e| Decoded::of(e, &self.owner)).collect();
        let replayed = shards::current_records(&self.store, fresh, &decoded).await?;
        let observations = observations(fresh, &decoded);
        Ok(Placed {
            decoded,
            replayed,
            observations,
        })
    }

    /// Step 2 fenced off by `error`: its shard is given up, and the others are re-read
    /// before the retry (another instance may have claimed more of them).
    fn fenced_write(&mut self, error: &ports::Error) {
        self.metrics.fenced();
        if let ports::Error::Fenced { shard, .. } = error {
            let lost = self.owner.lose(&[*shard]);
            self.fenced_off(lost);
        }
        self.stale = true;
    }

    /// Step 2's memory: games the database refused now are tried alone next time; games
    /// it took now are no longer suspect.
    fn remember_refusals(
        &mut self,
        observations: &[HealthObservation],
        results: &[Result<ObservationResult, ports::Error>],
    ) {
        for (observation, result) in observations.iter().zip(results) {
            match result {
                Err(_) => {
                    if self.refused.len() >= REFUSED_GAMES_REMEMBERED {
                        self.refused.clear();
                    }
                    self.refused.insert(observation.game_id.clone());
                }
                Ok(_) if !self.refused.is_empty() => {
                    self.refused.remove(&observation.game_id);
                }
                Ok(_) => {}
            }
        }
    }

    /// Step 5 for one decoded entry: logs and counts its result; the record it left when
    /// it was applied.
    fn count(
        &self,
        entry: EntryId,
        event: &HealthEvent,
        result: Result<ObservationResult, ports::Error>,
        dead: &mut Vec<(EntryId, String)>,
    ) -> Option<(RuntimeRecord, Option<Transition>)> {
        let (record, transitioned) = match result {
            Err(refusal) => {
                dead.push((
                    entry,
                    format!("refused by the database: {}", error_chain(&refusal)),
                ));
                tracing::warn!(
                    stream_entry_id = %entry,
                    game_id = %event.game_id,
                    event_type = %event.event_type,
                    reason = %error_chain(&refusal),
                    "skipping health event the database refused"
                );
                self.metrics.consumed(Outcome::Refused);
                return None;
            }
            Ok(ObservationResult::UnknownGame) => {
                tracing::warn!(
                    stream_entry_id = %entry,
                    game_id = %event.game_id,
                    event_type = %event.event_type,
                    "skipping health event for a game with no runtime record"
                );
                self.metrics.consumed(Outcome::UnknownGame);
                dead.push((
                    entry,
                    format!("no runtime record for game '{}'", event.game_id),
                ));
                return None;
            }
            Ok(ObservationResult::Applied {
                record,
                transitioned,
            }) => (record, transitioned),
        };
        self.metrics.consumed(Outcome::Applied);
        if let Some(t) = transitioned {
            self.metrics.transition(t);
            tracing::info!(
                stream_entry_id = %entry,
                game_id = %event.game_id,
                from_status = %t.from(),
                to_status = %t.to(),
                engine_health = EngineHealth::wire(record.engine_health),
                "runtime status changed by health event"
            );
        }
        Some((record, transitioned))
    }

    /// Step 5 for an entry step 1 could not decode.
    fn skip(&self, entry: EntryId, reason: &SkipReason, dead: &mut Vec<(EntryId, String)>) {
        tracing::warn!(
            stream_entry_id = %entry,
            game_id = reason.game_id().unwrap_or_default(),
            reason = %reason,
            "skipping health event"
        );
        self.metrics.consumed(Outcome::of(reason));
        dead.push((entry, reason.to_string()));
    }

    /// Step 3: which applied observations publish a snapshot, in stream order. `pending`
    /// are snapshots not yet published that will go out before these (their summaries
    /// count as published for the debounce).
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        entries: &[StreamEntry],
        decoded: &[Decoded],
        results: Vec<Result<ObservationResult, ports::Error>>,
        replayed: &HashMap<GameId, (EntryId, RuntimeRecord)>,
        pending: &[LobbyEvent],
        dead: &mut Vec<(EntryId, String)>,
    ) -> Vec<LobbyEvent> {
        let now_ms = (self.clock)();
        let mut results = results.into_iter();
        let mut events = Vec::new();
        // The summary each game will have been published with once the snapshots ahead
        // of these are out (borrowed: nothing is copied per batch).
        let mut ahead: HashMap<&str, EngineHealth> = pending
            .iter()
            .filter_map(|e| {
                let s = e.snapshot();
                s.engine_health.map(|h| (s.game_id.as_str(), h))
            })
            .collect();
        for (entry, decoded) in entries.iter().zip(decoded) {
            // A replay republishes whatever the debounce says: the previous owner's
            // snapshot may never have gone out.
            let (event, record, transitioned, replay) = match decoded {
                Decoded::Skipped(reason) => {
                    self.skip(entry.id, reason, dead);
                    continue;
                }
                Decoded::NotOwned => {
                    self.metrics.consumed(Outcome::NotOwned);
                    continue;
                }
                Decoded::Done => {
                    self.metrics.consumed(Outcome::Replayed);
                    continue;
                }
                Decoded::Replayed(event) => {
                    self.metrics.consumed(Outcome::Replayed);
                    match replayed.get(&event.game_id) {
                        Some((last, record)) if *last == entry.id => {
                            (event, record.clone(), None, true)
                        }
                        _ => continue,
                    }
                }
                Decoded::Fresh(event, _) => {
                    let Some(result) = results.next() else { break };
                    match self.count(entry.id, event, result, dead) {
                        Some((record, transitioned)) => (event, record, transitioned, false),
                        None => continue,
                    }
                }
            };
            let previous = ahead
                .get(event.game_id.as_str())
                .or_else(|| self.last_published.get(&event.game_id))
                .copied();
            let summary_changed = previous.is_none() || previous != record.engine_health;
            if !replay && transitioned.is_none() && !summary_changed {
                continue;
            }
            if let Some(summary) = record.engine_health {
                ahead.insert(event.game_id.as_str(), summary);
            }
            events.push(LobbyEvent::SnapshotUpdate(RuntimeSnapshot {
                game_id: record.game_id,
                current_turn: record.current_turn,
                runtime_status: record.status,
                engine_health: record.engine_health,
                occurred_at_ms: now_ms,
                player_turn_stats: Vec::new(),
                source_entry_id: Some(contracts::SourceEntryId {
                    ms: entry.id.ms,
                    seq: entry.id.seq,
                }),
            }));
        }
        events
    }
}

/// Step 4's second half: waits for the outbox's publish (sending it again after a
/// failure); once it is out, remembers its summaries, counts it (step 5) and empties it.
/// Returns the last entry whose snapshots it settled, if it had any.
async fn settle<P: LobbyEventsPublisher + 'static>(
    outbox: &mut Option<Outbox>,
    publisher: &Arc<P>,
    metrics: &WorkerMetrics,
    last_published: &mut HashMap<GameId, EngineHealth>,
) -> Result<Option<EntryId>, ports::Error> {
    let Some(pending) = outbox.as_mut() else {
        return Ok(None);
    };
    let result = match pending.sending.take() {
        Some(task) => task
            .await
            .unwrap_or_else(|e| Err(ports::Error::Backend(Box::new(e)))),
        None => publisher.publish(&pending.events).await,
    };
    if let Err(error) = result {
        metrics.error("publish");
        return Err(error);
    }
    for event in pending.events.iter() {
        let snapshot = event.snapshot();
        if let Some(summary) = snapshot.engine_health {
            // Known games (nearly all, once running) update in place: no copy of the id.
            match last_published.get_mut(&snapshot.game_id) {
                Some(published) => *published = summary,
                None => {
                    last_published.insert(snapshot.game_id.clone(), summary);
                }
            }
        }
        metrics.published(event.kind());
    }
    let through = pending.through;
    *outbox = None;
    Ok(Some(through))
}

/// Step 2: one transaction for the batch (nothing to do for an empty one), or, when the
/// database refuses it for its values, one per half until each refused observation stands
/// alone.
async fn apply<S: RuntimeRecordStore>(
    store: &S,
    observations: &[HealthObservation],
    refused: &HashSet<GameId>,
    owner: &Ownership,
) -> Isolated<ObservationResult, ports::Error> {
    stream_consumer::isolate(
        observations,
        |run| async move {
            let results = store.apply_health_batch(run, owner).await?;
            if results.len() != run.len() {
                return Err(ports::Error::Backend(
                    format!(
                        "store returned {} results for {} observations",
                        results.len(),
                        run.len()
                    )
                    .into(),
                ));
            }
            Ok(results)
        },
        ports::Error::is_refused,
        |o| !refused.is_empty() && refused.contains(&o.game_id),
    )
    .await
}

/// Step 2's input: the entries step 1 found fresh, as observations of their shards.
fn observations(entries: &[StreamEntry], decoded: &[Decoded]) -> Vec<HealthObservation> {
    entries
        .iter()
        .zip(decoded)
        .filter_map(|(entry, d)| match d {
            Decoded::Fresh(event, shard) => Some(HealthObservation {
                game_id: event.game_id.clone(),
                plan: domain_runtime::plan(event.event_type),
                entry: position(entry.id),
                shard: *shard,
            }),
            Decoded::Skipped(_) | Decoded::Replayed(_) | Decoded::Done | Decoded::NotOwned => None,
        })
        .collect()
}

/// How many leading entries step 2 finished with: all of them, unless a failure stopped
/// it after `applied` observations (then the entries through the last applied one).
fn covered(decoded: &[Decoded], applied: usize, stopped: bool) -> usize {
    if !stopped {
        return decoded.len();
    }
    let Some(last) = applied.checked_sub(1) else {
        return 0;
    };
    decoded
        .iter()
        .enumerate()
        .filter(|(_, d)| d.is_fresh())
        .nth(last)
        .map_or(0, |(i, _)| i + 1)
}

#[async_trait]
impl<S, P> BatchHandler for HealthEventsWorker<S, P>
where
    S: RuntimeRecordStore,
    P: LobbyEventsPublisher + 'static,
{
    async fn handle(&mut self, batch: &[StreamEntry]) -> BatchOutcome {
        // 0. Ownership changes (a rewind when a gained shard's entries were passed) and
        //    idle shards' checkpoints.
        if let Some(rewound) = self.take_over(batch).await {
            return rewound;
        }

        // Entries up to the outbox's `through` are in the database already; only their
        // snapshots are still on their way.
        let applied_before = self.outbox.as_ref().map_or(0, |o| {
            batch.iter().take_while(|e| e.id <= o.through).count()
        });
        let fresh = &batch[applied_before..];

        // 0–1. Checkpoints re-read when stale; entries decoded and placed.
        let Placed {
            decoded,
            replayed,
            observations,
        } = match self.place(fresh).await {
            Ok(placed) => placed,
            Err(error) => {
                self.metrics.error("shards");
                return BatchOutcome::stopped(0, error);
            }
        };

        // 2. Apply this batch, while the previous batch's snapshots finish publishing
        //    (the database and Redis work at the same time).
        let (published, applied) = tokio::join!(
            settle(
                &mut self.outbox,
                &self.publisher,
                &self.metrics,
                &mut self.last_published
            ),
            apply(&self.store, &observations, &self.refused, &self.owner),
        );
        let Isolated { results, stopped } = applied;
        let published = self.settled(published).await;
        self.remember_refusals(&observations, &results);
        self.remember_commits(&observations, &results, stopped.as_ref());
        let covered = covered(&decoded, results.len(), stopped.is_some());
        self.finished_through(fresh[..covered].last());
        let Some(last) = fresh[..covered].last().map(|e| e.id) else {
            // Nothing new finished: this call only settled the previous batch's publish.
            return match (stopped, published) {
                (Some(error), Ok(())) => BatchOutcome::stopped(applied_before, error),
                (Some(error), Err(_)) | (None, Err(error)) => BatchOutcome::stopped(0, error),
                (None, Ok(())) => BatchOutcome::done(batch.len()),
            };
        };

        // 3. Decide publication, in stream order; count every entry once. Snapshots still
        //    in the outbox (their publish failed) go out first.
        let pending: &[LobbyEvent] = self.outbox.as_ref().map_or(&[], |o| o.events.as_slice());
        let mut dead = Vec::new();
        let events = self.decide(
            &fresh[..covered],
            &decoded[..covered],
            results,
            &replayed,
            pending,
            &mut dead,
        );

        // 4. Publish. The entries skipped in step 3 go to the dead letters (the runtime
        //    keeps them before the offset passes them).
        let through = applied_before + covered;
        self.publish(
            events,
            last,
            published,
            stopped,
            applied_before,
            through,
            batch.len(),
        )
        .with_dead_letters(dead)
    }

    fn abandon(&mut self, entry: &StreamEntry, reason: &str) {
        tracing::warn!(stream_entry_id = %entry.id, %reason, "skipping health event");
        self.metrics.consumed(Outcome::Refused);
    }

    /// Step 0 while no entries are pending (nothing is in flight either): the keeper's
    /// changes and the idle advance are taken at once, not only when entries arrive, and
    /// a gained shard whose checkpoint is behind `position` moves the reading back to it.
    async fn before_read(&mut self, position: EntryId) -> Option<EntryId> {
        self.take_changes().await;
        self.let_go().await;
        let rewind_to = self.rewind_to;
        self.reading_covers_gains();
        match rewind_to {
            Some(to) if to < position => {
                self.applied_through = None;
                Some(to)
            }
            _ => {
                self.advance_idle(false).await;
                None
            }
        }
    }

    /// At the stop, once everything in flight is finished: the owned shards' checkpoints
    /// and published marks are written down now, so whoever takes them over next reads
    /// from there and republishes nothing this instance published.
    async fn stopped(&mut self) {
        if self.outbox.is_none() {
            self.advance_idle(true).await;
        }
    }
}

impl<S, P> HealthEventsWorker<S, P>
where
    S: RuntimeRecordStore,
    P: LobbyEventsPublisher + 'static,
{
    /// Step 4: this batch's snapshots (for the entries through `last`) join the outbox.
    /// When the previous publish failed, all are sent again on the retry, in order;
    /// otherwise they go out in the background while the next batch is read and applied,
    /// and the runtime hands these entries back for the next call to finish them. A
    /// failure that stopped step 2 early (`stopped`) still holds the entries after `last`
    /// (the batch's entry number `through`).
    #[allow(clippy::too_many_arguments)]
    fn publish(
        &mut self,
        events: Vec<LobbyEvent>,
        last: EntryId,
        published: Result<(), ports::Error>,
        stopped: Option<ports::Error>,
        applied_before: usize,
        through: usize,
        batch_len: usize,
    ) -> BatchOutcome {
        if let Err(error) = published {
            let mut all = self
                .outbox
                .take()
                .map_or_else(Vec::new, |o| o.events.to_vec());
            all.extend(events);
            self.outbox = Some(Outbox {
                through: last,
                events: Arc::new(all),
                sending: None,
            });
            return BatchOutcome::stopped(0, error);
        }
        if events.is_empty() {
            return match stopped {
                None => {
                    // Nothing of these entries is to publish: they are out as they are.
                    self.owner.mark_published(position(last));
                    BatchOutcome::done(batch_len)
                }
                Some(error) => BatchOutcome::stopped(through, error),
            };
        }
        let events = Arc::new(events);
        let publisher = Arc::clone(&self.publisher);
        let sending = Arc::clone(&events);
        self.outbox = Some(Outbox {
            through: last,
            events,
            sending: Some(tokio::spawn(
                async move { publisher.publish(&sending).await },
            )),
        });
        match stopped {
            None => BatchOutcome::in_flight(applied_before),
            Some(error) => BatchOutcome::stopped(applied_before, error),
        }
    }
}

#[cfg(test)]
mod tests;
