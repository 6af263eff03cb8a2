//! Game Lobby ports: the traits the `gm:lobby_events` worker, the `lobby` binary and the
//! tests talk to, the validated inputs they take, and the one typed error they return.
//!
//! Two kinds of operation live here:
//!
//! - **one transaction per event kind**, which is what the worker uses:
//!   [`GameStore::apply_snapshots`] (runtime snapshot unless the stored one is newer, plus
//!   the per-player stats, for a run of `runtime_snapshot_update`s) and
//!   [`GameStore::finish_game`] (the same, plus the compare-and-swap `running`/`paused` →
//!   `finished`); then [`CapabilityEvaluator::evaluate`], whose implementation claims the
//!   [`EvaluationGuardStore`] guard and folds the careers in one transaction of its own;
//! - **the single steps** (`get`, `create`, `update_runtime_snapshot`, `update_status`,
//!   [`GameTurnStatsStore::save_initial`] / [`update_max`](GameTurnStatsStore::update_max),
//!   [`CareerStore::careers`]) for operator commands, tests and the simulator.
//!
//! Inputs validate themselves on construction ([`UpdateStatus::new`] checks the transition
//! table and its trigger), so an adapter never sees a request it would have to refuse.
//!
//! With the `mocks` feature every trait has a mockall fake (`MockGameStore`, …).

mod error;
mod evaluation;
mod games;
mod stats;
mod stops;

pub use error::{BoxError, Error};
pub use evaluation::{CapabilityEvaluator, CareerStore, Evaluation, EvaluationGuardStore};
#[cfg(feature = "mocks")]
pub use evaluation::{MockCapabilityEvaluator, MockCareerStore, MockEvaluationGuardStore};
#[cfg(feature = "mocks")]
pub use games::MockGameStore;
pub use games::{
    FinishGame, FinishResult, GameRecord, GameStore, NewGame, SnapshotResult, SnapshotUpdate,
    UpdateStatus,
};
pub use stats::GameTurnStatsStore;
#[cfg(feature = "mocks")]
pub use stats::MockGameTurnStatsStore;
#[cfg(feature = "mocks")]
pub use stops::MockStopRequests;
pub use stops::{AnswerRecorded, PendingStop, StopAnswer, StopRequests};
