//! The Runtime Manager's `runtime:stop_jobs` worker (SPEC §RTM, seed 004): it stops games'
//! engines when the Lobby asks, and answers every job exactly once on
//! `runtime:job_results`.
//!
//! For every batch the stream-consumer runtime hands it, the worker:
//!
//!  1. **Decodes** each entry (`contracts::StopJob::decode`). An entry that is not a stop
//!     job is logged with its `stream_entry_id`, counted as `malformed` and finished
//!     without a result, so the offset moves past it.
//!  2. **Answers** the jobs, a wave at a time: a wave is the longest run of jobs in which
//!     no game has two, so each of its jobs can be decided from the registry as it stands
//!     before the wave (a game's second job waits for the next wave, and finds its first
//!     job's effect). For a wave, one lookup finds the jobs whose results the operation
//!     log holds already (answered before a crash or a failed publish: the same result
//!     again), and one more the runtimes of the rest. Each game's runtime then decides
//!     (`rtm_domain::decide_stop`): a running one has its engine stopped (asked to exit,
//!     killed after the grace period; the wave's engines all at once), and the result is
//!     `success` with its container id and endpoint, or `failure` with the engine's error
//!     code; a stopped or removed one answers `replay_no_op`; a game with none answers
//!     `not_found`.
//!  3. **Records** the wave's new results before any is published, in one statement: the
//!     operation log rows and, for each stopped engine, the compare-and-swap
//!     `running → stopped`. When the registry refuses that statement for its values, the
//!     results are recorded one by one up to the one it refuses, which holds the stream
//!     as a refusal (and is abandoned, unanswered, past the refusal hold).
//!  4. **Publishes** the batch's results in one round trip, each under its job's own entry
//!     id and at most once (decision 0018): a result already in the stream is not
//!     appended again, so neither a lost reply nor a crash before the offset was saved can
//!     answer a job twice.
//!  5. **Counts** one consumed job per entry, by outcome, and hands the runtime the
//!     entries that were no stop job, with why, for the dead letters.
//!
//! A transient failure (the registry, the container runtime or Redis unreachable) stops
//! the batch: the jobs answered before it are published and finished, the rest are
//! handed back after a backoff (an engine stopped but not recorded is found gone by the
//! retry, which answers `success` all the same). A job is never answered without its result being
//! recorded first, so the retry after any failure answers the same.

mod metrics;

use std::time::Duration;

use async_trait::async_trait;
use contracts::{GameId, JobResult, StopJob};
use rtm_domain::{Origin, Runtime, StopDecision, decide_stop};
use rtm_ports::{EngineDriver, EngineError, Error, JobResultPublisher, RuntimeRegistry};
use stream_consumer::{BatchHandler, BatchOutcome, BoxError, EntryId, StreamEntry};

pub use metrics::{Outcome, WorkerMetrics};

/// The offset label of this consumer: `rtmanager:stream_offsets:stopjobs`.
pub const OFFSET_LABEL: &str = "stopjobs";

/// How long an engine is given to exit after it was asked to, by default.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// What step 1 made of one entry: a stop job, or why it is none.
type Decoded = Result<StopJob, String>;

/// What step 2's lookups decided for one job.
enum Decision {
    /// Answered before: this result, again.
    Recorded(JobResult),
    /// To answer now, as its runtime decides.
    Now(StopDecision),
}

/// The end of the wave that starts at `start`: the first job whose game has a job earlier
/// in the wave (or the batch's end).
fn wave_end(decoded: &[Decoded], start: usize) -> usize {
    let mut games = std::collections::HashSet::new();
    decoded
        .iter()
        .enumerate()
        .skip(start)
        .find(|(_, d)| {
            d.as_ref()
                .is_ok_and(|job| !games.insert(job.game_id.clone()))
        })
        .map_or(decoded.len(), |(i, _)| i)
}

/// Stops a running runtime's engine: gone already counts as stopped.
async fn stop_engine<E: EngineDriver>(
    engine: &E,
    runtime: &Runtime,
    grace: Duration,
) -> Result<(JobResult, Outcome), EngineError> {
    let game_id = runtime.game_id.clone();
    match engine.stop(&runtime.container_id, grace).await {
        Ok(()) | Err(EngineError::Gone(_)) => Ok((
            JobResult::success(game_id, &runtime.container_id, &runtime.engine_endpoint),
            Outcome::Stopped,
        )),
        Err(EngineError::Failed { code, message }) => {
            Ok((JobResult::failure(game_id, code, message), Outcome::Failed))
        }
        Err(e @ EngineError::Unavailable(_)) => Err(e),
    }
}

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
    E: EngineDriver + Clone + 'static,
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

    /// Steps 1–3 for the batch, wave by wave, until the first failure.
    async fn answer_all(&self, batch: &[StreamEntry]) -> (Vec<Answer>, Option<Stop>) {
        let decoded: Vec<Decoded> = batch
            .iter()
            .map(|entry| StopJob::decode(entry).map_err(|e| e.to_string()))
            .collect();
        let mut answers = Vec::with_capacity(batch.len());
        let mut start = 0;
        while start < batch.len() {
            let end = wave_end(&decoded, start);
            let (wave, stop) = self
                .answer_wave(&batch[start..end], &decoded[start..end])
                .await;
            answers.extend(wave);
            if stop.is_some() {
                return (answers, stop);
            }
            start = end;
        }
        (answers, None)
    }

    /// Steps 2 and 3 for one wave: its answers, up to the first failure.
    async fn answer_wave(
        &self,
        entries: &[StreamEntry],
        decoded: &[Decoded],
    ) -> (Vec<Answer>, Option<Stop>) {
        let jobs: Vec<(&StopJob, Origin)> = entries
            .iter()
            .zip(decoded)
            .filter_map(|(entry, d)| Some((d.as_ref().ok()?, Origin::stop_job(&entry.id))))
            .collect();
        let (results, stop) = match self.decide(&jobs).await {
            Ok(decisions) => self.carry_out(decisions).await,
            Err(stop) => (Vec::new(), Some(stop)),
        };
        let (kept, record_stop) = self.record(&jobs, &results).await;
        let stop = record_stop.or(stop);
        let mut results = results.into_iter().take(kept);
        let mut answers = Vec::with_capacity(entries.len());
        for d in decoded {
            match d {
                Err(reason) => answers.push(Answer::Malformed(reason.clone())),
                Ok(_) => match results.next() {
                    Some((result, outcome)) => answers.push(Answer::Result(result, outcome)),
                    None => return (answers, stop),
                },
            }
        }
        (answers, stop)
    }

    /// Step 2's lookups: each job's recorded result, else its game's runtime's decision.
    async fn decide(&self, jobs: &[(&StopJob, Origin)]) -> Result<Vec<Decision>, Stop> {
        let origins: Vec<Origin> = jobs.iter().map(|(_, origin)| origin.clone()).collect();
        let recorded = self.registry.recorded_stops(&origins).await?;
        let fresh: Vec<GameId> = jobs
            .iter()
            .zip(&recorded)
            .filter(|(_, r)| r.is_none())
            .map(|((job, _), _)| job.game_id.clone())
            .collect();
        let runtimes = if fresh.is_empty() {
            Vec::new()
        } else {
            self.registry.get_many(&fresh).await?
        };
        let mut runtimes = runtimes.into_iter();
        let mut decisions = Vec::with_capacity(jobs.len());
        for ((job, _), recorded) in jobs.iter().zip(recorded) {
            decisions.push(match recorded {
                Some(result) => Decision::Recorded(result),
                None => Decision::Now(decide_stop(&job.game_id, runtimes.next().flatten())),
            });
        }
        Ok(decisions)
    }

    /// Step 2's work: the engines to stop, all at once; each job's result and outcome in
    /// order, up to the first that could not be had.
    async fn carry_out(
        &self,
        decisions: Vec<Decision>,
    ) -> (Vec<(JobResult, Outcome)>, Option<Stop>) {
        let mut stops = tokio::task::JoinSet::new();
        for (i, decision) in decisions.iter().enumerate() {
            if let Decision::Now(StopDecision::StopEngine(runtime)) = decision {
                let (engine, runtime, grace) = (self.engine.clone(), runtime.clone(), self.grace);
                stops.spawn(async move { (i, stop_engine(&engine, &runtime, grace).await) });
            }
        }
        let mut stopped: Vec<Option<Result<(JobResult, Outcome), EngineError>>> =
            decisions.iter().map(|_| None).collect();
        while let Some(joined) = stops.join_next().await {
            if let Ok((i, result)) = joined {
                stopped[i] = Some(result);
            }
        }
        let mut results = Vec::with_capacity(decisions.len());
        for (decision, stopped) in decisions.into_iter().zip(stopped) {
            let result = match decision {
                Decision::Recorded(result) => Ok((result, Outcome::Recorded)),
                Decision::Now(StopDecision::Answer(result)) if result.is_replay_no_op() => {
                    Ok((result, Outcome::ReplayNoOp))
                }
                Decision::Now(StopDecision::Answer(result)) => Ok((result, Outcome::NotFound)),
                Decision::Now(StopDecision::StopEngine(_)) => stopped.unwrap_or_else(|| {
                    Err(EngineError::Unavailable(
                        "the stop task ended abnormally".into(),
                    ))
                }),
            };
            match result {
                Ok(answered) => results.push(answered),
                Err(e) => return (results, Some(e.into())),
            }
        }
        (results, None)
    }

    /// Step 3: records the results not recorded before, in one statement; when the
    /// registry refuses it, one by one up to the refused one. How many leading results
    /// stand recorded, and the failure that stopped the rest.
    async fn record(
        &self,
        jobs: &[(&StopJob, Origin)],
        results: &[(JobResult, Outcome)],
    ) -> (usize, Option<Stop>) {
        let new: Vec<(usize, (Origin, JobResult))> = results
            .iter()
            .enumerate()
            .filter(|(_, (_, outcome))| *outcome != Outcome::Recorded)
            .map(|(i, (result, _))| (i, (jobs[i].1.clone(), result.clone())))
            .collect();
        let all: Vec<(Origin, JobResult)> = new.iter().map(|(_, stop)| stop.clone()).collect();
        if all.is_empty() {
            return (results.len(), None);
        }
        match self.registry.record_stops(&all).await {
            Ok(()) => return (results.len(), None),
            Err(e) if !matches!(e, Error::Refused(_)) => {
                return (
                    new.first().map_or(results.len(), |(i, _)| *i),
                    Some(e.into()),
                );
            }
            Err(_) => {}
        }
        for (i, stop) in new {
            if let Err(e) = self
                .registry
                .record_stops(std::slice::from_ref(&stop))
                .await
            {
                return (i, Some(e.into()));
            }
        }
        (results.len(), None)
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
    E: EngineDriver + Clone + 'static,
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
        let dead: Vec<(EntryId, String)> = batch
            .iter()
            .zip(&answers)
            .filter_map(|(entry, answer)| match answer {
                Answer::Malformed(reason) => Some((entry.id, reason.clone())),
                Answer::Result(..) => None,
            })
            .collect();
        let outcome = match stop {
            None => BatchOutcome::done(batch.len()),
            Some(Stop {
                error,
                refused: true,
            }) => BatchOutcome::refused(answers.len(), error),
            Some(Stop { error, .. }) => BatchOutcome::stopped(answers.len(), error),
        };
        outcome.with_dead_letters(dead)
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
