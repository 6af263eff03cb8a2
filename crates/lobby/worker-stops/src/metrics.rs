//! Step 3: the results worker's counter, `lobby_job_results_consumed_total{outcome}`.

use prometheus_client::registry::Registry;
use stream_consumer::{CountsBy, labels};

contracts::wire_enum! {
    /// How one `runtime:job_results` entry ended.
    pub enum Outcome {
        /// Recorded: the engine was stopped (`success`).
        Stopped = "stopped",
        /// Recorded: the runtime was stopped already (`success` + `replay_no_op`).
        AlreadyStopped = "already_stopped",
        /// Recorded: the stop failed (`failure` with its code).
        Failed = "failed",
        /// The game holds a later answer already (a replay): nothing changed.
        Stale = "stale",
        /// The Lobby has no such game: nothing changed.
        UnknownGame = "unknown_game",
        /// Not a job result: skipped.
        Malformed = "malformed",
        /// The database refused the answer's values: skipped.
        Refused = "refused",
    }
}

/// The worker's counter: one per outcome, cheap to clone (clones share the counters).
pub type WorkerMetrics = CountsBy<Outcome>;

/// Creates the counter and registers it in `registry` (which carries the `lobby` prefix).
#[must_use]
pub fn register(registry: &mut Registry) -> WorkerMetrics {
    let metrics = CountsBy::new(labels::OUTCOME);
    let help = "Job results consumed, by how they ended";
    metrics.register(registry, "job_results_consumed", help);
    metrics
}
