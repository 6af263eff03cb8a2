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
//!     (no burst of repeats from the new owner). The snapshots its previous owner
//!     committed but is not known to have published (the store keeps them, see step
//!     2) are read, to go out first with the next publish (at once when
//!     idle); the same at the start for every shard owned. When a gained shard's
//!     checkpoint is behind what the worker passed, the previous publish is settled and
//!     the reading rewinds there (`BatchOutcome::rewind`); the entries of shards owned
//!     before are then skipped by their checkpoints. A shard lost again before the
//!     reading went back for it is let go as it was claimed: nothing this worker passed
//!     counts for it. At most once a second, owned shards with no recent entries move
//!     their checkpoints up to what step 2 finished, so their next owner starts reading
//!     close to now. After a write whose outcome it does not know (a lost reply may hide
//!     a commit) the checkpoints are re-read: shards another instance claimed are given
//!     up, and a commit found this way has its kept snapshots published.
//!  1. **Decodes** each entry (`game_id`, `event_type`, `occurred_at_ms`; nothing else is
//!     read) and places it in its shard (by the raw `game_id`). An entry of a shard this
//!     instance does not own is left, undecoded, to its owner (counted `not_owned`). A
//!     missing or blank `game_id` or `event_type`, a missing, non-integer or
//!     non-positive `occurred_at_ms`, or an unknown `event_type` is a permanent problem:
//!     the entry is logged with its `stream_entry_id`, counted and skipped, and the offset
//!     still moves past it. An entry at or below its shard's checkpoint was handled
//!     before: it is counted `replayed` and neither applied nor skipped again.
//!  2. **Applies** the other decoded observations through the store's atomic batch
//!     operation: one transaction for the batch, committed only under the epoch of each
//!     of its shards and moving their checkpoints; stream order kept per game; per
//!     observation, the plan of
//!     its event type (summary plus optional CAS `running → engine_unreachable` or
//!     `engine_unreachable → running`) either moves the status with the summary, or, when
//!     another flow holds the status, writes the summary alone. The debounce runs before
//!     the write: the worker tells the store whose summaries are news (they differ from
//!     the last one published for the game, counting the snapshots still on their way;
//!     the first event per game after a start always is). The store returns each record
//!     as it stood after its observation and whether it publishes (news, or a transition
//!     taken), and keeps the snapshots that publish in the same transaction, until the
//!     publish carrying them is known to have gone out. Observations for games with no
//!     runtime record are logged, counted and skipped. When the database refuses the batch for
//!     its values, the batch is applied in halves (`stream_consumer::isolate`) until each
//!     refused observation stands alone; those are logged with their `stream_entry_id`,
//!     counted as `refused` and skipped, the rest applied once, in order (a refused
//!     summary is no news for the next). Games refused
//!     before are tried alone from the start, so a refusal that recurs costs no search.
//!  3. **Collects the snapshots** of the applied observations that publish, each carrying
//!     what the database held after its write.
//!  4. **Publishes** the batch's snapshots on `gm:lobby_events` in one round trip, in
//!     stream order, each with the Game Master's clock. The publish runs in the
//!     background while the next batch is read and applied; the batch's entries are
//!     finished (and the offset moves past them) only once it succeeded, and only then
//!     are its summaries remembered as published and the marks of the shards it covered
//!     moved (the next writes record them, and have the store drop the snapshots that
//!     publish carried).
//!  5. **Counts** one "consumed" per entry, by outcome, and one "published" per snapshot;
//!     hands the runtime each entry skipped (undecodable, for a game with no record,
//!     refused), with why, for the dead letters.
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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use domain_runtime::{EngineHealth, GameId, Ownership, RuntimeRecord, ShardMark};
use ports::{
    HealthObservation, LobbyEvent, LobbyEventsPublisher, ObservationResult, OwnershipChange,
    RuntimeRecordStore, RuntimeSnapshot, WorkerSide,
};
use stream_consumer::{BatchHandler, BatchOutcome, EntryId, Isolated, StreamEntry, error_chain};
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};

use shards::{Decoded, entry_id, position};

pub use decode::{HealthEvent, SkipReason, decode};
pub use metrics::{Outcome, ShardLags, WorkerMetrics};
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
    /// Shards lost (with the epochs they were held under and the first publish that
    /// covered them) whose last snapshots are not settled yet: once they are, the mark is
    /// written on them and the keeper told.
    letting_go: Vec<(u32, u64, u64)>,
    /// Shards gained whose entries after their checkpoints have not been read yet (a
    /// rewind is due): `applied_through` says nothing about them.
    unread: HashSet<u32>,
    /// Shards lost before they were read: the keeper is told with the others, but
    /// nothing is written on them, since this worker applied none of their entries.
    untouched: Vec<u32>,
    /// Shards gained (or owned at the start) whose kept snapshots are still to be read.
    to_recover: Vec<u32>,
    /// Shards a re-read found committed past what was known (a lost reply), with the
    /// checkpoint known before: that commit's kept snapshots are still to be read.
    committed_unread: Vec<(u32, Option<domain_runtime::EntryPosition>)>,
    /// Snapshots a previous owner (or this instance, before a lost reply) committed and
    /// may not have published: they go out first with the next publish.
    recovered: Vec<LobbyEvent>,
    /// The stream's last entry as the runtime last saw it (for the shards' lags).
    last_head: Option<EntryId>,
}

/// What steps 0 and 1 made of a batch's new entries.
struct Placed {
    /// Each entry, decoded and placed.
    decoded: Vec<Decoded>,
    /// The entries to apply.
    observations: Vec<HealthObservation>,
}

/// Snapshots on their way to the lobby events stream.
struct Outbox {
    /// Its number among this instance's publishes (`Ownership::queue`).
    number: u64,
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
        let to_recover = owner.claims().map(|c| c.shard).collect();
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
            to_recover,
            committed_unread: Vec::new(),
            recovered: Vec::new(),
            last_head: None,
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
                        let (Some(claim), Some(since)) =
                            (self.owner.claim(shard), self.owner.covered_from(shard))
                        else {
                            continue;
                        };
                        if self.unread.remove(&shard) {
                            self.untouched.push(shard);
                        } else {
                            self.letting_go.push((shard, claim.epoch, since));
                        }
                    }
                    self.to_recover.retain(|s| !shards.contains(s));
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
                    self.to_recover.extend(&gained);
                    if let Some(from) = self.owner.gain(claims).map(entry_id) {
                        self.rewind_to = Some(self.rewind_to.map_or(from, |r| r.min(from)));
                    }
                    self.seed(&gained).await;
                    tracing::info!(shards = ?gained, "shards taken over");
                }
            }
        }
        self.metrics.owned(self.owner.len());
        self.report_lags();
    }

    /// The owned shards' lags behind the stream's last entry as last seen.
    fn report_lags(&self) {
        if let Some(last) = self.last_head {
            let lags = shards::lags(&self.owner, self.applied_through, &self.unread, last);
            self.metrics.lags(lags);
        }
    }

    /// Step 0 for shards lost, once no publish is under way (their last snapshots are
    /// out): their checkpoints and published marks are written down, under the epochs they
    /// were held under, and the keeper may let their leases go. Their next owner then
    /// republishes nothing this instance published. Shards lost before they were read
    /// are let go as they were claimed: moving their checkpoints to what this worker
    /// passed would skip entries nobody applied.
    ///
    /// A shard's mark is that of the last publish if that publish covered it (was queued
    /// after the shard was gained), else none.
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
        let marks: Vec<ShardMark> = shards
            .iter()
            .map(|&(shard, epoch, since)| ShardMark {
                shard,
                epoch,
                published: self.owner.sent_since(since),
            })
            .collect();
        if let Err(error) = self.store.advance_checkpoints(&marks, through).await {
            tracing::warn!(error = %error_chain(&error), "marks of shards handed over not written; their next owner may republish a few snapshots");
        }
        if let Some(side) = &self.handover {
            side.report_released(shards.into_iter().map(|(s, _, _)| s).collect());
        }
    }

    /// Step 0 for shards taken over or owned since the start: the snapshots the store kept
    /// with them, committed by their previous owner (or this instance's previous process)
    /// and not known to have gone out, are read to go out first with the next publish.
    /// Until that publish is out, the shards' marks do not move, so the store keeps them.
    async fn recover(&mut self) -> Result<(), ports::Error> {
        if self.to_recover.is_empty() {
            return Ok(());
        }
        let now_ms = (self.clock)();
        let found = shards::unpublished(&self.store, &self.owner, &self.to_recover, &[], now_ms)
            .await
            .inspect_err(|_| self.metrics.error("shards"))?;
        if !found.is_empty() {
            tracing::info!(
                shards = ?self.to_recover,
                snapshots = found.len(),
                "republishing the snapshots shards taken over had not published"
            );
        }
        self.recovered.extend(found);
        self.to_recover.clear();
        Ok(())
    }

    /// Step 0 while idle (nothing in flight, no rewind due): the snapshots recovered go
    /// out now rather than with the next batch, which may be long in coming. Everything
    /// this worker finished was out already, so the marks move to it.
    async fn publish_recovered(&mut self) {
        if self.recovered.is_empty() || self.outbox.is_some() {
            return;
        }
        let events = std::mem::take(&mut self.recovered);
        if let Err(error) = self.publisher.publish(&events).await {
            self.metrics.error("publish");
            tracing::warn!(error = %error_chain(&error), "unpublished snapshots of shards taken over not sent; trying again");
            self.recovered = events;
            return;
        }
        // Not remembered for the debounce: the first event per game after a start still
        // publishes (a shard taken over had its stored summaries remembered already).
        for event in &events {
            self.metrics.published(event.kind());
        }
        if let Some(through) = self.applied_through {
            let number = self.owner.queue();
            self.owner.sent(number, position(through));
        }
    }

    /// Step 2's debounce input: per observation, the summary its game was published with
    /// before this batch, counting the outbox's snapshots, still on their way. The
    /// recovered ones do not count: the first event per game after a start publishes
    /// whatever a previous process left.
    fn prior(&self, observations: &[HealthObservation]) -> Vec<Option<EngineHealth>> {
        let outbox: &[LobbyEvent] = self.outbox.as_ref().map_or(&[], |o| o.events.as_slice());
        prior_summaries(observations, outbox, &self.last_published)
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
        match self.store.advance_checkpoints(&behind, through).await {
            Ok(lost) => {
                let lost = self.owner.lose(&lost);
                for mark in behind {
                    self.owner.advance(mark.shard, through);
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

    /// Step 2 finished with the entries through `last`: idle shards may move up to it.
    fn finished_through(&mut self, last: Option<&StreamEntry>) {
        if let Some(last) = last {
            self.applied_through = Some(last.id);
        }
    }

    /// Publish number `number` settled through `through` (when it had snapshots): the
    /// marks of the shards it covered move there, and the next writes record them.
    fn mark_published(&mut self, settled: Option<(u64, EntryId)>) {
        if let Some((number, through)) = settled {
            self.owner.sent(number, position(through));
        }
    }

    /// Step 4's second half done beside step 2: a publish that settled moves the mark,
    /// and the shards lost meanwhile can be let go.
    async fn settled(
        &mut self,
        published: Result<Option<(u64, EntryId)>, ports::Error>,
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
        if let Err(error) = self.recover().await {
            return Some(BatchOutcome::stopped(0, error));
        }
        if let Some(rewound) = self.rewind(batch).await {
            return Some(rewound);
        }
        self.advance_idle(false).await;
        None
    }

    /// Steps 0 and 1: the checkpoints as stored, after a write whose outcome is unknown
    /// (with the snapshots of a commit it finds, which never went out); each entry decoded
    /// and placed against its shard's checkpoint; the observations to apply.
    async fn place(&mut self, fresh: &[StreamEntry]) -> Result<Placed, ports::Error> {
        if self.stale {
            let refreshed = shards::refresh(&self.store, &mut self.owner).await?;
            self.fenced_off(refreshed.lost);
            // Kept until read: once refreshed, the checkpoints no longer show the commit.
            self.committed_unread.extend(refreshed.committed);
            self.stale = false;
        }
        if !self.committed_unread.is_empty() {
            let shards: Vec<u32> = self.committed_unread.iter().map(|&(s, _)| s).collect();
            let now_ms = (self.clock)();
            let found = shards::unpublished(
                &self.store,
                &self.owner,
                &shards,
                &self.committed_unread,
                now_ms,
            )
            .await?;
            self.recovered.extend(found);
            self.committed_unread.clear();
        }
        let decoded: Vec<Decoded> = fresh.iter().map(|e| Decoded::of(e, &self.owner)).collect();
        let observations = observations(fresh, &decoded);
        Ok(Placed {
            decoded,
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
    /// it was applied, and whether it publishes.
    fn count(
        &self,
        entry: EntryId,
        event: &HealthEvent,
        result: Result<ObservationResult, ports::Error>,
        dead: &mut Vec<(EntryId, String)>,
    ) -> Option<(RuntimeRecord, bool)> {
        let (record, transitioned, publishes) = match result {
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
                publishes,
            }) => (record, transitioned, publishes),
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
        Some((record, publishes))
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

    /// Step 3: the snapshots of the applied observations that publish (the store says
    /// which: step 2 told it whose summaries were news), in stream order.
    fn decide(
        &self,
        entries: &[StreamEntry],
        decoded: &[Decoded],
        results: Vec<Result<ObservationResult, ports::Error>>,
        dead: &mut Vec<(EntryId, String)>,
    ) -> Vec<LobbyEvent> {
        let now_ms = (self.clock)();
        let mut results = results.into_iter();
        let mut events = Vec::new();
        for (entry, decoded) in entries.iter().zip(decoded) {
            let event = match decoded {
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
                Decoded::Fresh(event, _) => event,
            };
            let Some(result) = results.next() else { break };
            let Some((record, publishes)) = self.count(entry.id, event, result, dead) else {
                continue;
            };
            if !publishes {
                continue;
            }
            events.push(LobbyEvent::SnapshotUpdate(RuntimeSnapshot {
                game_id: record.game_id,
                current_turn: record.current_turn,
                runtime_status: record.status,
                engine_health: record.engine_health,
                occurred_at_ms: now_ms,
                player_turn_stats: Vec::new(),
                source_entry_id: Some(position(entry.id)),
            }));
        }
        events
    }
}

/// Step 4's second half: waits for the outbox's publish (sending it again after a
/// failure); once it is out, remembers its summaries, counts it (step 5) and empties it.
/// Returns the publish's number and the last entry whose snapshots it settled, if it had
/// any.
async fn settle<P: LobbyEventsPublisher + 'static>(
    outbox: &mut Option<Outbox>,
    publisher: &Arc<P>,
    metrics: &WorkerMetrics,
    last_published: &mut HashMap<GameId, EngineHealth>,
) -> Result<Option<(u64, EntryId)>, ports::Error> {
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
    let settled = (pending.number, pending.through);
    *outbox = None;
    Ok(Some(settled))
}

/// Step 2: one transaction for the batch (nothing to do for an empty one), or, when the
/// database refuses it for its values, one per half until each refused observation stands
/// alone. `prior` is, per observation, the summary its game was (or is being) published
/// with before this batch; each call tells the store whose summaries are news against it
/// and against the batch's earlier observations that were committed.
async fn apply<S: RuntimeRecordStore>(
    store: &S,
    observations: &[HealthObservation],
    prior: &[Option<EngineHealth>],
    refused: &HashSet<GameId>,
    owner: &Ownership,
) -> Isolated<ObservationResult, ports::Error> {
    // The summaries the batch's committed calls left, for the calls after a refusal.
    let committed: Mutex<HashMap<&str, EngineHealth>> = Mutex::default();
    let committed = &committed;
    stream_consumer::isolate(
        observations,
        |start, run| {
            let (news, left) = news(run, &prior[start..], committed);
            let last = start + run.len() == observations.len();
            async move {
                let results = store.apply_health_batch(run, &news, owner).await?;
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
                if !last {
                    committed
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .extend(left);
                }
                Ok(results)
            }
        },
        ports::Error::is_refused,
        |o| !refused.is_empty() && refused.contains(&o.game_id),
    )
    .await
}

/// Step 2's debounce: per observation of `run`, whether its summary differs from the one
/// its game was last published with (the game's previous observation in the run, else
/// in the batch's committed calls, else `prior`); and the summaries the run leaves.
fn news<'a>(
    run: &'a [HealthObservation],
    prior: &[Option<EngineHealth>],
    committed: &Mutex<HashMap<&str, EngineHealth>>,
) -> (Vec<bool>, HashMap<&'a str, EngineHealth>) {
    let committed = committed.lock().unwrap_or_else(PoisonError::into_inner);
    let mut left: HashMap<&str, EngineHealth> = HashMap::new();
    let news = run
        .iter()
        .zip(prior)
        .map(|(o, prior)| {
            let game = o.game_id.as_str();
            let previous = left
                .get(game)
                .or_else(|| committed.get(game))
                .copied()
                .or(*prior);
            left.insert(game, o.plan.summary);
            previous != Some(o.plan.summary)
        })
        .collect();
    (news, left)
}

/// Per observation, the summary its game was published with before this batch, or will
/// have been once `pending` (snapshots not out yet, in order) is out; `None` for a game
/// not published since the start (its first event always publishes).
fn prior_summaries(
    observations: &[HealthObservation],
    pending: &[LobbyEvent],
    last_published: &HashMap<GameId, EngineHealth>,
) -> Vec<Option<EngineHealth>> {
    let ahead: HashMap<&str, EngineHealth> = pending
        .iter()
        .filter_map(|e| {
            let s = e.snapshot();
            s.engine_health.map(|h| (s.game_id.as_str(), h))
        })
        .collect();
    observations
        .iter()
        .map(|o| {
            ahead
                .get(o.game_id.as_str())
                .or_else(|| last_published.get(&o.game_id))
                .copied()
        })
        .collect()
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
            Decoded::Skipped(_) | Decoded::Done | Decoded::NotOwned => None,
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
            observations,
        } = match self.place(fresh).await {
            Ok(placed) => placed,
            Err(error) => {
                self.metrics.error("shards");
                return BatchOutcome::stopped(0, error);
            }
        };

        // 2. Apply this batch, while the previous batch's snapshots finish publishing
        //    (the database and Redis work at the same time). Whose summaries are news is
        //    known before the write: the snapshots go into the same transaction.
        let prior = self.prior(&observations);
        let (published, applied) = tokio::join!(
            settle(
                &mut self.outbox,
                &self.publisher,
                &self.metrics,
                &mut self.last_published
            ),
            apply(
                &self.store,
                &observations,
                &prior,
                &self.refused,
                &self.owner
            ),
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

        // 3. The snapshots to publish, in stream order; every entry counted once.
        let mut dead = Vec::new();
        let events = self.decide(&fresh[..covered], &decoded[..covered], results, &mut dead);

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
        if let Err(error) = self.recover().await {
            tracing::warn!(error = %error_chain(&error), "unpublished snapshots of shards taken over not read; trying again");
        }
        let rewind_to = self.rewind_to;
        self.reading_covers_gains();
        match rewind_to {
            Some(to) if to < position => {
                self.applied_through = None;
                Some(to)
            }
            _ => {
                self.publish_recovered().await;
                self.advance_idle(false).await;
                None
            }
        }
    }

    /// The owned shards' lags behind the stream's last entry (`shard_lag_seconds`, and
    /// the report `/readyz` shows).
    fn stream_head(&mut self, last: EntryId) {
        self.last_head = Some(last);
        self.report_lags();
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
        let mut events = {
            let mut all = std::mem::take(&mut self.recovered);
            all.extend(events);
            all
        };
        if let Err(error) = published {
            let mut all = self
                .outbox
                .take()
                .map_or_else(Vec::new, |o| o.events.to_vec());
            all.append(&mut events);
            self.outbox = Some(Outbox {
                number: self.owner.queue(),
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
                    let number = self.owner.queue();
                    self.owner.sent(number, position(last));
                    BatchOutcome::done(batch_len)
                }
                Some(error) => BatchOutcome::stopped(through, error),
            };
        }
        let events = Arc::new(events);
        let publisher = Arc::clone(&self.publisher);
        let sending = Arc::clone(&events);
        self.outbox = Some(Outbox {
            number: self.owner.queue(),
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
