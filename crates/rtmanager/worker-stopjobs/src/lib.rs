//! The Runtime Manager's `runtime:stop_jobs` worker (SPEC §RTM, seed 004): it stops games'
//! engines when the Lobby asks, and answers every job exactly once on
//! `runtime:job_results`.
//!
//! For every batch the stream-consumer runtime hands it, the worker:
//!
//!  1. **Decodes** each entry (`contracts::StopJob::decode`). An entry that is not a stop
//!     job is logged with its `stream_entry_id`, counted as `malformed` and finished
//!     without a result, so the offset moves past it.
//!  2. **Answers** each job in stream order. A job whose result the operation log holds
//!     already (it was answered before a crash or a failed publish) gets that same result
//!     again. Otherwise the game's runtime decides (`rtm_domain::stop_plan`): a running
//!     one has its engine stopped (asked to exit, killed after the grace period), and the
//!     result is `success` with its container id and endpoint, or `failure` with the
//!     engine's error code; a stopped or removed one answers `replay_no_op`; a game with
//!     none answers `not_found`.
//!  3. **Records** each result before it is published: the operation log row and, for a
//!     stopped engine, the compare-and-swap `running → stopped`, in one transaction.
//!  4. **Publishes** the batch's results in one round trip, each under its job's own entry
//!     id and at most once (decision 0018): a result already in the stream is not
//!     appended again, so neither a lost reply nor a crash before the offset was saved can
//!     answer a job twice.
//!  5. **Counts** one consumed job per entry, by outcome.
//!
//! A transient failure (the registry, the container runtime or Redis unreachable) stops
//! the batch: the jobs answered before it are published and finished, the rest are
//! handed back after a backoff. A job is never answered without its result being
//! recorded first, so the retry after any failure answers the same.

mod metrics;

use std::time::Duration;

use async_trait::async_trait;
use contracts::{JobResult, StopJob};
use rtm_domain::{Origin, Runtime, StopDecision, decide_stop};
use rtm_ports::{EngineDriver, EngineError, Error, JobResultPublisher, RuntimeRegistry};
use stream_consumer::{BatchHandler, BatchOutcome, BoxError, EntryId, StreamEntry};

pub use metrics::{Outcome, WorkerMetrics};

/// The offset label of this consumer: `rtmanager:stream_offsets:stopjobs`.
pub const OFFSET_LABEL: &str = "stopjobs";

/// How long an engine is given to exit after it was asked to, by default.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// What step 2 made of one entry.
enum Answer {
    /// Not a stop job: no result.
    Malformed(String),
    /// The job's result, recorded, and how it ended.
    Result(JobResult, Outcome),
}

/// Why a batch stopped before its end.
struct Stop {
    error: BoxError,
    refused: bool,
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Self {
            refused: matches!(e, Error::Refused(_)),
            error: Box::new(e),
        }
    }
}

impl From<EngineError> for Stop {
    fn from(e: EngineError) -> Self {
        Self {
            refused: false,
            error: Box::new(e),
        }
    }
}

/// The stop-jobs worker; plug it into `stream_consumer::Consumer`.
pub struct StopJobsWorker<R, E, P> {
    registry: R,
    engine: E,
    publisher: P,
    grace: Duration,
    metrics: WorkerMetrics,
}

impl<R, E, P> StopJobsWorker<R, E, P>
where
    R: RuntimeRegistry,
    E: EngineDriver,
    P: JobResultPublisher,
{
    /// A worker that stops engines through `engine` with `grace` to exit, records in
    /// `registry` and answers through `publisher`.
    pub fn new(
        registry: R,
        engine: E,
        publisher: P,
        grace: Duration,
        metrics: WorkerMetrics,
    ) -> Self {
        Self {
            registry,
            engine,
            publisher,
            grace,
            metrics,
        }
    }

    /// Steps 1–3 for the batch, in order, until the first failure.
    async fn answer_all(&self, batch: &[StreamEntry]) -> (Vec<Answer>, Option<Stop>) {
        let mut answers = Vec::with_capacity(batch.len());
        for entry in batch {
            let job = match StopJob::decode(entry) {
                Ok(job) => job,
                Err(e) => {
                    answers.push(Answer::Malformed(e.to_string()));
                    continue;
                }
            };
            match self.answer(entry.id, &job).await {
                Ok((result, outcome)) => answers.push(Answer::Result(result, outcome)),
                Err(stop) => return (answers, Some(stop)),
            }
        }
        (answers, None)
    }

    /// Steps 2 and 3 for one job.
    async fn answer(&self, id: EntryId, job: &StopJob) -> Result<(JobResult, Outcome), Stop> {
        let origin = Origin::stop_job(&id);
        if let Some(result) = self.registry.recorded_stop(&origin).await? {
            return Ok((result, Outcome::Recorded));
        }
        let runtime = self.registry.get(&job.game_id).await?;
        let (result, outcome) = match decide_stop(&job.game_id, runtime) {
            StopDecision::StopEngine(runtime) => self.stop_engine(&runtime).await?,
            StopDecision::Answer(result) if result.is_replay_no_op() => {
                (result, Outcome::ReplayNoOp)
            }
            StopDecision::Answer(result) => (result, Outcome::NotFound),
        };
        self.registry.record_stop(&origin, &result).await?;
        Ok((result, outcome))
    }

    /// Stops a running runtime's engine: gone already counts as stopped.
    async fn stop_engine(&self, runtime: &Runtime) -> Result<(JobResult, Outcome), Stop> {
        let game_id = runtime.game_id.clone();
        match self.engine.stop(&runtime.container_id, self.grace).await {
            Ok(()) | Err(EngineError::Gone(_)) => Ok((
                JobResult::success(game_id, &runtime.container_id, &runtime.engine_endpoint),
                Outcome::Stopped,
            )),
            Err(EngineError::Failed { code, message }) => {
                Ok((JobResult::failure(game_id, code, message), Outcome::Failed))
            }
            Err(e @ EngineError::Unavailable(_)) => Err(e.into()),
        }
    }

    /// Step 5 for the entries finished.
    fn count(&self, batch: &[StreamEntry], answers: &[Answer]) {
        for (entry, answer) in batch.iter().zip(answers) {
            match answer {
                Answer::Malformed(reason) => {
                    tracing::warn!(stream_entry_id = %entry.id, error = %reason, "stop job skipped: not a stop job");
                    self.metrics.consumed(Outcome::Malformed);
                }
                Answer::Result(result, outcome) => {
                    tracing::info!(
                        stream_entry_id = %entry.id,
                        game_id = %result.game_id,
                        outcome = outcome.as_str(),
                        error_code = %result.error_code,
                        "stop job answered"
                    );
                    self.metrics.consumed(*outcome);
                }
            }
        }
    }
}

#[async_trait]
impl<R, E, P> BatchHandler for StopJobsWorker<R, E, P>
where
    R: RuntimeRegistry,
    E: EngineDriver,
    P: JobResultPublisher,
{
    async fn handle(&mut self, batch: &[StreamEntry]) -> BatchOutcome {
        let (answers, stop) = self.answer_all(batch).await;
        let results: Vec<(EntryId, JobResult)> = batch
            .iter()
            .zip(&answers)
            .filter_map(|(entry, answer)| match answer {
                Answer::Result(result, _) => Some((entry.id, result.clone())),
                Answer::Malformed(_) => None,
            })
            .collect();
        if let Err(e) = self.publisher.publish(&results).await {
            // Every result is recorded: the retry answers the same, and publishes each once.
            return BatchOutcome::stopped(0, e);
        }
        self.count(batch, &answers);
        match stop {
            None => BatchOutcome::done(batch.len()),
            Some(Stop {
                error,
                refused: true,
            }) => BatchOutcome::refused(answers.len(), error),
            Some(Stop { error, .. }) => BatchOutcome::stopped(answers.len(), error),
        }
    }

    fn abandon(&mut self, entry: &StreamEntry, reason: &str) {
        tracing::error!(
            stream_entry_id = %entry.id,
            reason,
            "stop job skipped without a result: the registry refused it past the refusal hold"
        );
        self.metrics.consumed(Outcome::Abandoned);
    }
}

#[cfg(test)]
mod tests;
