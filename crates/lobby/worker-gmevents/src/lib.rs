//! The Game Lobby's `gm:lobby_events` worker: it keeps each game's runtime snapshot and
//! per-player stats current from the Game Master's events, finishes games, and evaluates
//! each finished game's capabilities (the players' careers) exactly once.
//!
//! For every batch the stream-consumer runtime hands it, the worker:
//!
//!  1. **Decodes** each entry with `lobby_domain::GmEvent::decode` (`kind`, `game_id`,
//!     `occurred_at_ms`, `current_turn` ≥ 0, `player_turn_stats` JSON, `finished_at_ms` > 0
//!     when present). A bad entry is a permanent problem: logged with its
//!     `stream_entry_id`, counted by outcome and finished, so the offset moves past it.
//!  2. **Applies** each run of consecutive `runtime_snapshot_update`s in one transaction
//!     (`GameStore::apply_snapshots`): per entry, the snapshot unless the stored one is
//!     newer by `occurred_at_ms`, and the per-player stats (initial frozen at the first
//!     observation, maxima raised per component). Entries for games the Lobby does not
//!     know are logged, counted and finished. When the database refuses a run for its
//!     values, the run is applied in halves (`stream_consumer::isolate`) until each
//!     refused update stands alone; those are logged, counted as `refused` and finished.
//!  3. **Finishes** each `game_finished` in one transaction of its own
//!     (`GameStore::finish_game`): snapshot and stats as in step 2, then the
//!     compare-and-swap `running`/`paused` → `finished` with the event's finish time (the
//!     Lobby's clock when it has none). A replay finds the game finished and moves
//!     nothing; a game in another status is logged, counted and left alone; a finish the
//!     database refuses for its values is logged, counted as `refused` and finished.
//!  4. **Evaluates** every game finished now or before through the `CapabilityEvaluator`,
//!     whose guard makes it fold a game into the careers once however often the event is
//!     replayed. The evaluation folds stats stored by earlier entries, so a refusal of it
//!     is not this entry's values: it is reported as an unpinned refusal, which the
//!     runtime retries for its refusal hold and then skips (decision 0016).
//!  5. **Counts** one "consumed" per entry by outcome, each status transition, each
//!     evaluation, and each failure by stage; hands the runtime each entry it skipped
//!     (undecodable, for an unknown game, refused), with why, for the dead letters.
//!
//! Any store or evaluation failure stops the batch before the entry it hit, so the runtime
//! holds the offset and hands the entry back after a backoff: nothing is lost. When the
//! finish was written but the evaluation failed, the retry evaluates without finishing a
//! second time, and the entry is counted once.

mod decode;
mod metrics;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use lobby_domain::{GameId, GmEvent, GmEventKind};
use lobby_ports::{
    CapabilityEvaluator, Error, Evaluation, FinishGame, FinishResult, GameStore, SnapshotResult,
    SnapshotUpdate,
};
use stream_consumer::{BatchHandler, BatchOutcome, EntryId, Isolated, StreamEntry, error_chain};

pub use decode::{SkipReason, decode};
pub use metrics::{EvaluationOutcome, Outcome, WorkerMetrics};

/// The offset label of this consumer: `lobby:stream_offsets:gm_lobby_events`.
pub const OFFSET_LABEL: &str = "gm_lobby_events";

/// Milliseconds since the Unix epoch: the finish time of a `game_finished` that carries
/// none.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock (never below 1, so it is always a valid finish time).
#[must_use]
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .max(1)
    })
}

/// The worker. Plug it into a [`stream_consumer::Consumer`].
pub struct GmEventsWorker<S, E> {
    games: S,
    evaluator: E,
    clock: Clock,
    metrics: WorkerMetrics,
    /// A finished game whose evaluation failed: the retry starts there.
    pending: Option<PendingEvaluation>,
    /// Entries of the batch under way skipped as permanently bad, with why (step 5).
    dead: std::sync::Mutex<Vec<(EntryId, String)>>,
}

/// What a failed evaluation leaves behind for the retry.
#[derive(Debug, Clone)]
struct PendingEvaluation {
    /// The `game_finished` entry.
    entry: EntryId,
    game_id: GameId,
    finished_at_ms: i64,
    /// How the entry is counted once the evaluation succeeds.
    outcome: Outcome,
}

impl<S, E> GmEventsWorker<S, E>
where
    S: GameStore,
    E: CapabilityEvaluator,
{
    /// Assembles the worker.
    pub fn new(games: S, evaluator: E, clock: Clock, metrics: WorkerMetrics) -> Self {
        Self {
            games,
            evaluator,
            clock,
            metrics,
            pending: None,
            dead: std::sync::Mutex::default(),
        }
    }

    /// Step 2: one run of snapshot updates (and the bad entries among them), one
    /// transaction, or one per half while the database refuses it for its values. Counts
    /// the run's entries once they are written; on a failure, returns how many of them
    /// were finished before it.
    async fn apply_run(
        &mut self,
        entries: &[StreamEntry],
        decoded: &[Result<GmEvent, SkipReason>],
    ) -> Result<(), (usize, Error)> {
        let updates: Vec<SnapshotUpdate> = decoded
            .iter()
            .filter_map(|d| d.as_ref().ok())
            .map(SnapshotUpdate::from)
            .collect();
        let games = &self.games;
        let Isolated { results, stopped } = stream_consumer::isolate(
            &updates,
            |_, run| async move {
                let results = games.apply_snapshots(run).await?;
                if results.len() != run.len() {
                    return Err(Error::Backend(
                        format!(
                            "store returned {} results for {} snapshot updates",
                            results.len(),
                            run.len()
                        )
                        .into(),
                    ));
                }
                Ok(results)
            },
            Error::is_refused,
            |_| false,
        )
        .await;
        let mut results = results.into_iter();
        for (i, (entry, decoded)) in entries.iter().zip(decoded).enumerate() {
            let event = match decoded {
                Err(reason) => {
                    self.skip(entry.id, reason);
                    continue;
                }
                Ok(event) => event,
            };
            let Some(result) = results.next() else {
                // Only a failure leaves updates without a result: the rest is retried.
                let error =
                    stopped.unwrap_or_else(|| Error::Backend("an update got no result".into()));
                self.metrics.error("apply");
                return Err((i, error));
            };
            self.count_update(entry.id, event, result);
        }
        Ok(())
    }

    /// Logs and counts one snapshot update's result.
    fn count_update(&self, entry: EntryId, event: &GmEvent, result: Result<SnapshotResult, Error>) {
        let outcome = match result {
            Ok(SnapshotResult::Applied) => Outcome::Applied,
            Ok(SnapshotResult::Stale {
                stored_observed_at_ms,
            }) => {
                tracing::debug!(
                    stream_entry_id = %entry,
                    game_id = %event.game_id(),
                    occurred_at_ms = event.snapshot().observed_at_ms,
                    stored_observed_at_ms,
                    "older runtime snapshot kept out; its stats were recorded"
                );
                Outcome::Stale
            }
            Ok(SnapshotResult::UnknownGame) => {
                self.unknown_game(entry, event);
                return;
            }
            Err(refusal) => {
                self.refused(entry, event, &refusal);
                return;
            }
        };
        self.metrics.consumed(outcome);
    }

    /// Logs and counts an entry whose own write the database refused.
    fn refused(&self, entry: EntryId, event: &GmEvent, refusal: &Error) {
        let reason = error_chain(refusal);
        tracing::warn!(
            stream_entry_id = %entry,
            game_id = %event.game_id(),
            kind = %event.kind(),
            %reason,
            "skipping gm event the database refused"
        );
        self.metrics.consumed(Outcome::Refused);
        self.dead_letter(entry, format!("refused by the database: {reason}"));
    }

    /// Logs and counts an entry for a game the Lobby does not know.
    fn unknown_game(&self, entry: EntryId, event: &GmEvent) {
        tracing::warn!(
            stream_entry_id = %entry,
            game_id = %event.game_id(),
            kind = %event.kind(),
            "skipping gm event for a game the Lobby does not know"
        );
        self.metrics.consumed(Outcome::UnknownGame);
        self.dead_letter(entry, format!("no game '{}' in the Lobby", event.game_id()));
    }

    /// Step 5's dead letter: `entry` was skipped for `reason`.
    fn dead_letter(&self, entry: EntryId, reason: String) {
        if let Ok(mut dead) = self.dead.lock() {
            dead.push((entry, reason));
        }
    }

    /// Step 3, then step 4 for a game that is finished. A finish the database refuses
    /// for its values is this entry's: it is counted and finished here.
    async fn finish(&mut self, entry: EntryId, event: &GmEvent) -> Result<(), Error> {
        let finished_at_ms = event.finished_at_or((self.clock)());
        let finish = match FinishGame::new(SnapshotUpdate::from(event), finished_at_ms) {
            Ok(finish) => finish,
            Err(error) => {
                // Only a clock gone wrong gets here: the event's own time was checked.
                self.metrics.error("finish");
                return Err(error);
            }
        };
        let result = match self.games.finish_game(&finish).await {
            Ok(result) => result,
            Err(error) if error.is_refused() => {
                self.refused(entry, event, &error);
                return Ok(());
            }
            Err(error) => {
                self.metrics.error("finish");
                return Err(error);
            }
        };
        let game_id = event.game_id();
        let (outcome, finished_at_ms) = match result {
            FinishResult::UnknownGame => {
                self.unknown_game(entry, event);
                return Ok(());
            }
            FinishResult::UnexpectedStatus { status, .. } => {
                tracing::warn!(
                    stream_entry_id = %entry,
                    game_id = %game_id,
                    current_status = %status,
                    "game_finished ignored: the game is neither running nor paused"
                );
                self.metrics.consumed(Outcome::UnexpectedStatus);
                return Ok(());
            }
            FinishResult::Finished {
                transition,
                finished_at_ms,
                ..
            } => {
                self.metrics.transition(transition);
                tracing::info!(
                    stream_entry_id = %entry,
                    game_id = %game_id,
                    from_status = %transition.from(),
                    to_status = %transition.to(),
                    trigger = %transition.trigger(),
                    finished_at_ms,
                    "game finished"
                );
                (Outcome::Finished, finished_at_ms)
            }
            FinishResult::AlreadyFinished { finished_at_ms, .. } => {
                tracing::info!(
                    stream_entry_id = %entry,
                    game_id = %game_id,
                    "game_finished for a game already finished (replay)"
                );
                (Outcome::Replayed, finished_at_ms)
            }
        };
        self.evaluate(PendingEvaluation {
            entry,
            game_id: game_id.clone(),
            finished_at_ms,
            outcome,
        })
        .await
    }

    /// Step 4: capability evaluation, counted with its entry once it succeeded.
    async fn evaluate(&mut self, pending: PendingEvaluation) -> Result<(), Error> {
        match self
            .evaluator
            .evaluate(&pending.game_id, pending.finished_at_ms)
            .await
        {
            Ok(evaluation) => {
                match evaluation {
                    Evaluation::Evaluated { players } => {
                        tracing::info!(
                            stream_entry_id = %pending.entry,
                            game_id = %pending.game_id,
                            players,
                            "capabilities evaluated: careers updated"
                        );
                        self.metrics.evaluation(EvaluationOutcome::Evaluated);
                    }
                    Evaluation::AlreadyEvaluated => {
                        tracing::info!(
                            stream_entry_id = %pending.entry,
                            game_id = %pending.game_id,
                            "capabilities were evaluated before; nothing changed"
                        );
                        self.metrics.evaluation(EvaluationOutcome::AlreadyEvaluated);
                    }
                }
                self.metrics.consumed(pending.outcome);
                Ok(())
            }
            Err(error) => {
                self.metrics.error("evaluate");
                tracing::warn!(
                    stream_entry_id = %pending.entry,
                    game_id = %pending.game_id,
                    error = %error,
                    "capability evaluation failed; the entry will be retried"
                );
                self.pending = Some(pending);
                Err(error)
            }
        }
    }

    fn skip(&self, entry: EntryId, reason: &SkipReason) {
        tracing::warn!(
            stream_entry_id = %entry,
            game_id = reason.game_id().unwrap_or_default(),
            reason = %reason,
            "skipping gm event"
        );
        self.metrics.consumed(reason.outcome());
        self.dead_letter(entry, reason.to_string());
    }
}

fn is_finish(decoded: &Result<GmEvent, SkipReason>) -> bool {
    matches!(decoded, Ok(event) if event.kind() == GmEventKind::GameFinished)
}

#[async_trait]
impl<S, E> BatchHandler for GmEventsWorker<S, E>
where
    S: GameStore,
    E: CapabilityEvaluator,
{
    async fn handle(&mut self, batch: &[StreamEntry]) -> BatchOutcome {
        let outcome = self.handle_batch(batch).await;
        let dead = self
            .dead
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default();
        outcome.with_dead_letters(dead)
    }

    fn abandon(&mut self, entry: &StreamEntry, reason: &str) {
        if self.pending.as_ref().is_some_and(|p| p.entry == entry.id) {
            self.pending = None;
        }
        tracing::error!(
            stream_entry_id = %entry.id,
            %reason,
            "gm event skipped: its capability evaluation stays undone"
        );
        self.metrics.evaluation(EvaluationOutcome::Refused);
        self.metrics.consumed(Outcome::Refused);
    }
}

impl<S, E> GmEventsWorker<S, E>
where
    S: GameStore,
    E: CapabilityEvaluator,
{
    /// Steps 1–4 for a batch.
    async fn handle_batch(&mut self, batch: &[StreamEntry]) -> BatchOutcome {
        // A retry after a failed evaluation: the finish is written; evaluate only.
        let mut start = 0;
        if let Some(pending) = self.pending.take()
            && batch.first().map(|e| e.id) == Some(pending.entry)
        {
            if let Err(error) = self.evaluate(pending).await {
                return stopped(0, error);
            }
            start = 1;
        }

        // 1. Decode.
        let decoded: Vec<Result<GmEvent, SkipReason>> =
            batch.iter().skip(start).map(decode).collect();

        // 2–4. Runs of updates, split at each game_finished, in stream order.
        let mut at = start;
        while at < batch.len() {
            let run_end = (at..batch.len())
                .find(|&i| is_finish(&decoded[i - start]))
                .unwrap_or(batch.len());
            if run_end > at {
                let run = &decoded[at - start..run_end - start];
                if let Err((finished, error)) = self.apply_run(&batch[at..run_end], run).await {
                    return stopped(at + finished, error);
                }
            }
            if let Some(Ok(event)) = decoded.get(run_end - start)
                && let Err(error) = self.finish(batch[run_end].id, event).await
            {
                return stopped(run_end, error);
            }
            at = run_end + 1;
        }
        BatchOutcome::done(batch.len())
    }
}

/// The batch stops before entry `finished` on `error`: a refusal that reaches here is an
/// evaluation's (the store's own refusals are pinned on their entries before), so it is
/// reported as one the runtime holds for its refusal hold; anything else is retried.
fn stopped(finished: usize, error: Error) -> BatchOutcome {
    if error.is_refused() {
        BatchOutcome::refused(finished, error)
    } else {
        BatchOutcome::stopped(finished, error)
    }
}

#[cfg(test)]
mod tests;
