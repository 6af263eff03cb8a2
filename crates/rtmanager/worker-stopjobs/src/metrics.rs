//! Step 5: the worker's counter, `rtmanager_stop_jobs_consumed_total{outcome}`.

use prometheus_client::registry::Registry;
use stream_consumer::{CountsBy, labels};

contracts::wire_enum! {
    /// How one stop job ended.
    pub enum Outcome {
        /// The engine was stopped: `success`.
        Stopped = "stopped",
        /// The runtime was stopped or removed already: `success` + `replay_no_op`.
        ReplayNoOp = "replay_no_op",
        /// No runtime for the game: `failure` + `not_found`.
        NotFound = "not_found",
        /// The engine could not be stopped: `failure` with the engine's code.
        Failed = "failed",
        /// Answered again from the operation log: a job retried after its result was
        /// recorded (a crash, or a publish that failed).
        Recorded = "recorded",
        /// Skipped without a result: the entry is not a stop job.
        Malformed = "malformed",
        /// Skipped without a result: the registry refused to record it for longer than the
        /// refusal hold (an operator must look; the log line names the entry).
        Abandoned = "abandoned",
    }
}

/// The worker's metric families; cheap to clone (shared counters).
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    consumed: CountsBy<Outcome>,
}

impl Default for WorkerMetrics {
    /// Unregistered, every outcome at 0.
    fn default() -> Self {
        Self {
            consumed: CountsBy::new(labels::OUTCOME),
        }
    }
}

impl WorkerMetrics {
    /// Creates the families and registers them in `registry` (which carries the
    /// `rtmanager` prefix).
    #[must_use]
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let help = "Stop jobs consumed, by how they ended";
        metrics
            .consumed
            .register(registry, "stop_jobs_consumed", help);
        metrics
    }

    /// Counts one job.
    pub fn consumed(&self, outcome: Outcome) {
        self.consumed.inc(outcome);
    }

    /// How many jobs ended with `outcome` (tests and the simulator).
    #[must_use]
    pub fn consumed_count(&self, outcome: Outcome) -> u64 {
        self.consumed.get(outcome)
    }
}
