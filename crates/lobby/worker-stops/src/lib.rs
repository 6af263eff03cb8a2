//! The Game Lobby's half of the stop contract (SPEC §Lobby): [`send`] appends the stops
//! the Lobby asked for to `runtime:stop_jobs`, and [`JobResultsWorker`] records what the
//! Runtime Manager answered on `runtime:job_results` as each game's last stop.
//!
//! For every batch the stream-consumer runtime hands it, the results worker:
//!
//!  1. **Decodes** each entry (`contracts::JobResult::decode`). An entry that is not a job
//!     result is logged with its `stream_entry_id`, counted as `malformed` and finished,
//!     so the offset moves past it.
//!  2. **Records** the batch's answers in one transaction
//!     (`StopRequests::record_answers`): each one becomes its game's last stop (outcome,
//!     error code and message, and when the engine stopped) unless the game holds a later
//!     answer already (a replay: `stale`). An answer for a game the Lobby does not know
//!     changes nothing and is counted as `unknown_game`. When the database refuses the
//!     batch for its values, it is recorded in halves (`stream_consumer::isolate`) until
//!     each refused answer stands alone; those are logged and counted as `refused`.
//!  3. **Counts** one consumed entry per outcome: `stopped`, `already_stopped`
//!     (`replay_no_op`), `failed`, `stale`, `unknown_game`, `malformed`, `refused`; the
//!     last three go to the dead letters, with why.
//!
//! A transient failure stops the batch at the first answer it left unrecorded: what was
//! recorded before it is finished, the rest is handed back after a backoff. An answer
//! recorded twice (a crash before the offset was saved) finds itself there and changes
//! nothing.

mod metrics;
pub mod send;

use async_trait::async_trait;
use contracts::{JobOutcome, JobResult};
use lobby_ports::{AnswerRecorded, Error, StopAnswer, StopRequests};
use stream_consumer::{BatchHandler, BatchOutcome, Isolated, StreamEntry, error_chain};

pub use metrics::{Outcome, WorkerMetrics, register as register_metrics};

/// The offset label of this consumer: `lobby:stream_offsets:job_results`.
pub const OFFSET_LABEL: &str = "job_results";

/// The results worker; plug it into `stream_consumer::Consumer`.
pub struct JobResultsWorker<S> {
    stops: S,
    metrics: WorkerMetrics,
}

impl<S: StopRequests> JobResultsWorker<S> {
    /// A worker recording answers in `stops`.
    pub fn new(stops: S, metrics: WorkerMetrics) -> Self {
        Self { stops, metrics }
    }

    /// Step 2: the decoded answers, in one transaction or in the halves the database
    /// takes: one result per answer recorded, in order, and the failure that stopped the
    /// rest, if one did.
    async fn record(&self, answers: &[StopAnswer]) -> Isolated<AnswerRecorded, Error> {
        let stops = &self.stops;
        stream_consumer::isolate(
            answers,
            |_, run| async move {
                let recorded = stops.record_answers(run).await?;
                if recorded.len() == run.len() {
                    Ok(recorded)
                } else {
                    Err(Error::Backend(
                        format!("{} results for {} answers", recorded.len(), run.len()).into(),
                    ))
                }
            },
            Error::is_refused,
            |_| false,
        )
        .await
    }

    /// Step 3 for one entry that is a job result; why it was skipped, if it was.
    fn count(
        &self,
        entry: &StreamEntry,
        result: &JobResult,
        recorded: Result<AnswerRecorded, Error>,
    ) -> Option<String> {
        let mut skipped = None;
        let outcome = match recorded {
            Ok(AnswerRecorded::Recorded) => {
                tracing::info!(stream_entry_id = %entry.id, game_id = %result.game_id, outcome = result.outcome.as_str(), error_code = %result.error_code, "stop answer recorded");
                outcome_of(result)
            }
            Ok(AnswerRecorded::Stale) => Outcome::Stale,
            Ok(AnswerRecorded::UnknownGame) => {
                tracing::warn!(stream_entry_id = %entry.id, game_id = %result.game_id, "job result skipped: no such game in the Lobby");
                skipped = Some(format!("no game '{}' in the Lobby", result.game_id));
                Outcome::UnknownGame
            }
            Err(refusal) => {
                let reason = error_chain(&refusal);
                tracing::warn!(stream_entry_id = %entry.id, game_id = %result.game_id, %reason, "job result skipped: the database refused it");
                skipped = Some(format!("refused by the database: {reason}"));
                Outcome::Refused
            }
        };
        self.metrics.inc(outcome);
        skipped
    }

    /// Step 3 for one entry that is not.
    fn malformed(&self, entry: &StreamEntry, reason: &str) {
        tracing::warn!(stream_entry_id = %entry.id, error = %reason, "job result skipped: not a job result");
        self.metrics.inc(Outcome::Malformed);
    }
}

/// How a recorded answer is counted.
fn outcome_of(result: &JobResult) -> Outcome {
    match result.outcome {
        JobOutcome::Success if result.is_replay_no_op() => Outcome::AlreadyStopped,
        JobOutcome::Success => Outcome::Stopped,
        JobOutcome::Failure => Outcome::Failed,
    }
}

#[async_trait]
impl<S: StopRequests> BatchHandler for JobResultsWorker<S> {
    async fn handle(&mut self, batch: &[StreamEntry]) -> BatchOutcome {
        let decoded: Vec<_> = batch.iter().map(JobResult::decode).collect();
        let answers: Vec<StopAnswer> = batch
            .iter()
            .zip(&decoded)
            .filter_map(|(entry, d)| {
                let result = d.as_ref().ok()?.clone();
                Some(StopAnswer {
                    entry: (entry.id.ms, entry.id.seq),
                    result,
                })
            })
            .collect();
        let Isolated { results, stopped } = self.record(&answers).await;
        let mut results = results.into_iter();
        let mut dead = Vec::new();
        for (i, (entry, d)) in batch.iter().zip(&decoded).enumerate() {
            let skipped = match d {
                Err(e) => {
                    self.malformed(entry, &e.to_string());
                    Some(e.to_string())
                }
                Ok(result) => match results.next() {
                    Some(recorded) => self.count(entry, result, recorded),
                    None => {
                        // Only a failure leaves answers unrecorded: from here on, retried.
                        let error = stopped
                            .unwrap_or_else(|| Error::Backend("an answer got no result".into()));
                        return BatchOutcome::stopped(i, error).with_dead_letters(dead);
                    }
                },
            };
            dead.extend(skipped.map(|reason| (entry.id, reason)));
        }
        BatchOutcome::done(batch.len()).with_dead_letters(dead)
    }

    fn abandon(&mut self, entry: &StreamEntry, reason: &str) {
        // Refusals are pinned on their answers in step 2, so the runtime holds nothing
        // here; this is for completeness of the contract.
        tracing::error!(stream_entry_id = %entry.id, reason, "job result skipped past the refusal hold");
        self.metrics.inc(Outcome::Refused);
    }
}

#[cfg(test)]
mod tests;
