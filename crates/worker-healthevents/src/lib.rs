//! The Game Master's `runtime:health_events` worker: it turns the Runtime Manager's
//! engine-health observations into runtime-record updates and debounced snapshots for the
//! Game Lobby.
//!
//! For every batch the stream-consumer runtime hands it, the worker:
//!
//!  1. **Decodes** each entry (`game_id`, `event_type`, `occurred_at_ms`; nothing else is
//!     read). A missing or blank `game_id` or `event_type`, a missing, non-integer or
//!     non-positive `occurred_at_ms`, or an unknown `event_type` is a permanent problem:
//!     the entry is logged with its `stream_entry_id`, counted and skipped, and the offset
//!     still moves past it.
//!  2. **Applies** the decoded observations through the store's atomic batch operation: one
//!     transaction for the batch, stream order kept per game; per observation, the plan of
//!     its event type (summary plus optional CAS `running → engine_unreachable` or
//!     `engine_unreachable → running`) either moves the status with the summary, or, when
//!     another flow holds the status, writes the summary alone. The store returns each
//!     record as it stood after its observation. Observations for games with no runtime
//!     record are logged, counted and skipped.
//!  3. **Decides publication** per applied observation: a `runtime_snapshot_update` when
//!     the status changed, or when the summary differs from the last one published for the
//!     game (the first event per game after a start always publishes).
//!  4. **Publishes** the batch's snapshots on `gm:lobby_events` in one pipelined round trip,
//!     in stream order, each carrying what the database held after its write and the Game
//!     Master's clock. A summary is remembered as published only once its publish
//!     succeeded.
//!  5. **Counts** one "consumed" per entry, by outcome, and one "published" per snapshot.
//!
//! A database or Redis failure (step 2 or 4) stops the batch without finishing it, so the
//! runtime holds the offset and retries: nothing is lost. When the database write
//! succeeded but the publish failed, the retry publishes the same snapshots again without
//! applying the batch a second time.

mod decode;
mod metrics;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use domain_runtime::{EngineHealth, GameId};
use ports::{
    HealthObservation, LobbyEvent, LobbyEventsPublisher, ObservationResult, RuntimeRecordStore,
    RuntimeSnapshot,
};
use stream_consumer::{BatchHandler, BatchOutcome, EntryId, StreamEntry};

pub use decode::{HealthEvent, SkipReason, decode};
pub use metrics::{Outcome, WorkerMetrics};

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
    publisher: P,
    clock: Clock,
    metrics: WorkerMetrics,
    /// Last summary published per game (process memory; empty after a start).
    last_published: HashMap<GameId, EngineHealth>,
    /// Snapshots of entries already applied to the database but not yet published.
    unpublished: Option<Unpublished>,
}

/// What a failed publish leaves behind for the retry.
struct Unpublished {
    /// The last entry whose database write these snapshots reflect.
    through: EntryId,
    events: Vec<LobbyEvent>,
}

impl<S, P> HealthEventsWorker<S, P>
where
    S: RuntimeRecordStore,
    P: LobbyEventsPublisher,
{
    /// Assembles the worker.
    pub fn new(store: S, publisher: P, clock: Clock, metrics: WorkerMetrics) -> Self {
        Self {
            store,
            publisher,
            clock,
            metrics,
            last_published: HashMap::new(),
            unpublished: None,
        }
    }

    /// Publishes `events` and, once they are out, remembers their summaries.
    async fn publish(
        &mut self,
        events: Vec<LobbyEvent>,
        through: EntryId,
    ) -> Result<(), ports::Error> {
        if events.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.publisher.publish(&events).await {
            self.metrics.error("publish");
            self.unpublished = Some(Unpublished { through, events });
            return Err(error);
        }
        for event in &events {
            let snapshot = event.snapshot();
            if let Some(summary) = snapshot.engine_health {
                self.last_published
                    .insert(snapshot.game_id.clone(), summary);
            }
            self.metrics.published(event.kind());
        }
        Ok(())
    }
}

#[async_trait]
impl<S, P> BatchHandler for HealthEventsWorker<S, P>
where
    S: RuntimeRecordStore,
    P: LobbyEventsPublisher,
{
    async fn handle(&mut self, batch: &[StreamEntry]) -> BatchOutcome {
        // A retry after a failed publish: the leading entries are in the database already;
        // publish their snapshots, do not apply them again.
        let mut done = 0;
        if let Some(Unpublished { through, events }) = self.unpublished.take() {
            if let Err(error) = self.publish(events, through).await {
                return BatchOutcome::stopped(0, error);
            }
            done = batch.iter().take_while(|e| e.id <= through).count();
        }
        let entries = &batch[done..];
        let Some(last) = entries.last().map(|e| e.id) else {
            return BatchOutcome::done(done);
        };

        // 1. Decode.
        let decoded: Vec<Result<HealthEvent, SkipReason>> = entries.iter().map(decode).collect();
        let observations: Vec<HealthObservation> = decoded
            .iter()
            .filter_map(|d| d.as_ref().ok())
            .map(|event| HealthObservation {
                game_id: event.game_id.clone(),
                plan: event.event_type.plan(),
            })
            .collect();

        // 2. Apply, one transaction for the batch.
        let results = if observations.is_empty() {
            Vec::new()
        } else {
            match self.store.apply_health_batch(&observations).await {
                Ok(results) if results.len() == observations.len() => results,
                Ok(results) => {
                    self.metrics.error("apply");
                    let error = format!(
                        "store returned {} results for {} observations",
                        results.len(),
                        observations.len()
                    );
                    return BatchOutcome::stopped(done, error);
                }
                Err(error) => {
                    self.metrics.error("apply");
                    return BatchOutcome::stopped(done, error);
                }
            }
        };

        // 3. Decide publication, in stream order; count every entry once.
        let now_ms = (self.clock)();
        let mut results = results.into_iter();
        let mut events = Vec::new();
        let mut batch_published: HashMap<&GameId, EngineHealth> = HashMap::new();
        for (entry, decoded) in entries.iter().zip(&decoded) {
            let event = match decoded {
                Err(reason) => {
                    tracing::warn!(
                        stream_entry_id = %entry.id,
                        game_id = reason.game_id().unwrap_or_default(),
                        reason = %reason,
                        "skipping health event"
                    );
                    self.metrics.consumed(reason.outcome());
                    continue;
                }
                Ok(event) => event,
            };
            let Some(result) = results.next() else { break };
            let (record, transitioned) = match result {
                ObservationResult::UnknownGame => {
                    tracing::warn!(
                        stream_entry_id = %entry.id,
                        game_id = %event.game_id,
                        event_type = %event.event_type,
                        "skipping health event for a game with no runtime record"
                    );
                    self.metrics.consumed(Outcome::UnknownGame);
                    continue;
                }
                ObservationResult::Applied {
                    record,
                    transitioned,
                } => (record, transitioned),
            };
            self.metrics.consumed(Outcome::Applied);
            if let Some(t) = transitioned {
                self.metrics.transition(t);
                tracing::info!(
                    stream_entry_id = %entry.id,
                    game_id = %event.game_id,
                    from_status = %t.from(),
                    to_status = %t.to(),
                    engine_health = EngineHealth::wire(record.engine_health),
                    "runtime status changed by health event"
                );
            }
            let previous = batch_published
                .get(&event.game_id)
                .or_else(|| self.last_published.get(&event.game_id))
                .copied();
            let summary_changed = previous != record.engine_health || previous.is_none();
            if transitioned.is_none() && !summary_changed {
                continue;
            }
            if let Some(summary) = record.engine_health {
                batch_published.insert(&event.game_id, summary);
            }
            events.push(LobbyEvent::SnapshotUpdate(RuntimeSnapshot {
                game_id: record.game_id,
                current_turn: record.current_turn,
                runtime_status: record.status,
                engine_health: record.engine_health,
                occurred_at_ms: now_ms,
                player_turn_stats: Vec::new(),
            }));
        }

        // 4. Publish, pipelined; 5. counted in `publish`.
        match self.publish(events, last).await {
            Ok(()) => BatchOutcome::done(batch.len()),
            Err(error) => BatchOutcome::stopped(done, error),
        }
    }
}

#[cfg(test)]
mod tests;
