//! Runtime Manager ports: the traits the health publisher and the stop-jobs consumer are
//! built from, and the typed errors they return.
//!
//! 1. [`HealthSnapshotStore`] keeps the latest [`HealthSnapshot`] of every game (one row per
//!    game, replaced on each observation).
//! 2. [`HealthEventPublisher`] publishes one validated [`HealthEventEnvelope`]: the
//!    snapshot first, then the stream entry, so the store is never behind the stream.
//! 3. [`RuntimeRegistry`] keeps the runtimes the Runtime Manager started and the log of
//!    every start and stop, with the result answered for it.
//! 4. [`EngineDriver`] stops a game's engine in its container runtime.
//! 5. [`JobResultPublisher`] answers stop jobs on `runtime:job_results`, at most once each.
//! 6. [`Error`] separates transient failures ([`Error::Unavailable`]: the server is down
//!    or slow, retrying may help) from permanent ones ([`Error::Backend`],
//!    [`Error::Refused`]).
//!
//! Inputs are validated when they are built (`rtm-domain`), so an adapter never receives
//! an envelope it would have to reject. With the `mocks` feature every trait has a mockall
//! fake (`MockHealthSnapshotStore`, `MockRuntimeRegistry`, …).

use std::time::Duration;

use async_trait::async_trait;

pub use rtm_domain::{
    EngineState, GameId, HealthEventEnvelope, HealthSnapshot, JobResult, OperationSource, Origin,
    Runtime,
};
pub use stream_consumer::EntryId;

pub use error_kit::BoxError;

/// What went wrong in a Runtime Manager port call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Transient: the server is unreachable, the connection was lost, a pool or a
    /// statement timed out. Retrying may succeed. For a publish whose stream append failed
    /// this way, the entry may or may not have been appended.
    #[error("unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The database refused the values of this call (a value it cannot hold, a violated
    /// constraint): retrying the same call fails alike.
    #[error("refused by the database: {0}")]
    Refused(#[source] BoxError),
    /// The server answered with an error that retrying will not fix (a missing table, a
    /// key of the wrong type).
    #[error("backend error: {0}")]
    Backend(#[source] BoxError),
}

error_kit::server_failure!(Error);

impl Error {
    /// Whether retrying may succeed on its own.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// The latest health observation of every game (`health_snapshots`).
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait HealthSnapshotStore: Send + Sync {
    /// Inserts the game's snapshot, or replaces the one it has.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the store cannot be reached, [`Error::Backend`] when it
    /// refuses the write.
    async fn upsert(&self, snapshot: &HealthSnapshot) -> Result<(), Error>;

    /// Every game's snapshot (what a restarted supervisor last said of each engine).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the store cannot be reached; [`Error::Refused`] for a
    /// row that does not decode.
    async fn all(&self) -> Result<Vec<HealthSnapshot>, Error>;
}

/// Publishes health observations on `runtime:health_events`.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait HealthEventPublisher: Send + Sync {
    /// Records the envelope's snapshot, then appends the envelope's wire fields to the
    /// stream, and returns the new entry's id (callers that wait for a consumer compare
    /// it with the consumer's offset). When the snapshot cannot be written nothing is
    /// appended.
    ///
    /// # Errors
    /// The first failure, from the store or from the stream.
    async fn publish(&self, envelope: &HealthEventEnvelope) -> Result<EntryId, Error>;
}

/// The registry of the runtimes the Runtime Manager started (`runtimes`) and its
/// operation log (`operation_log`).
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait RuntimeRegistry: Send + Sync {
    /// The game's runtime, if the Runtime Manager started one.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the registry cannot be reached; [`Error::Backend`] or
    /// [`Error::Refused`] when it cannot answer.
    async fn get(&self, game_id: &GameId) -> Result<Option<Runtime>, Error>;

    /// Every runtime recorded `running`.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    async fn running(&self) -> Result<Vec<Runtime>, Error>;

    /// The runtimes of `game_ids`, one per id in order (`None`: the game has none), in
    /// one round trip.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    async fn get_many(&self, game_ids: &[GameId]) -> Result<Vec<Option<Runtime>>, Error>;

    /// The results recorded for the stops `origins` asked for, one per origin in order
    /// (`None`: that stop was not carried out yet; `Some`: a job retried after a crash or
    /// a failed publish), in one round trip.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    async fn recorded_stops(&self, origins: &[Origin]) -> Result<Vec<Option<JobResult>>, Error>;

    /// Records stops and the results answered for them, all in one statement: the
    /// operation log rows, and, for each stop that stopped its engine (a plain success),
    /// the compare-and-swap `running → stopped`. A stop whose origin is logged already
    /// changes nothing.
    ///
    /// # Errors
    /// As [`get`](Self::get); [`Error::Refused`] when the database refuses one of them
    /// (nothing of the call is kept).
    async fn record_stops(&self, stops: &[(Origin, JobResult)]) -> Result<(), Error>;

    /// Registers a started runtime as `running` (replacing a stopped or removed one of the
    /// same game) and logs the start.
    ///
    /// # Errors
    /// As [`get`](Self::get); [`Error::Refused`] when the game's runtime is running.
    async fn register(&self, runtime: &Runtime, origin: &Origin) -> Result<(), Error>;
}

/// Why an engine could not be acted on.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No such engine: it is gone already (exited, or never there).
    #[error("no engine {0}")]
    Gone(String),
    /// The engine did not do as asked; retrying the same job would fail alike.
    #[error("{code}: {message}")]
    Failed {
        /// Machine-readable, for the job result's `error_code`.
        code: &'static str,
        /// What happened, for people.
        message: String,
    },
    /// The container runtime cannot be reached now; retrying may succeed.
    #[error("container runtime unavailable: {0}")]
    Unavailable(#[source] BoxError),
}

/// An engine that was started: how the container runtime knows it, and where it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedEngine {
    /// The engine's id in its container runtime.
    pub container_id: String,
    /// Where it answers (`http://host:port`).
    pub engine_endpoint: String,
}

/// A container runtime, as the Runtime Manager uses it: one engine per game, known by
/// its container id.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait EngineDriver: Send + Sync {
    /// Starts an engine for `game_id` and returns once it answers on its endpoint.
    ///
    /// # Errors
    /// [`EngineError::Failed`] when it could not be started, [`EngineError::Unavailable`]
    /// when the container runtime cannot be reached.
    async fn start(&self, game_id: &GameId) -> Result<StartedEngine, EngineError>;

    /// What the runtime says of the engine now. An engine over its memory limit is
    /// killed and reported [`EngineState::OutOfMemory`].
    ///
    /// # Errors
    /// [`EngineError::Failed`] for an id the driver did not make,
    /// [`EngineError::Unavailable`] when the runtime cannot be reached.
    async fn inspect(&self, container_id: &str) -> Result<EngineState, EngineError>;

    /// Whether the engine answers its health probe on `endpoint` in time.
    async fn probe(&self, engine_endpoint: &str) -> bool;

    /// Asks the engine to stop, waits up to `grace` for it to exit, then kills it; returns
    /// once it is gone.
    ///
    /// # Errors
    /// [`EngineError`]: gone already, not stopped, or the runtime unreachable.
    async fn stop(&self, container_id: &str, grace: Duration) -> Result<(), EngineError>;
}

/// Publishes job results on `runtime:job_results`, each under the id of the stop job it
/// answers, at most once: a result already in the stream is not appended again.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait JobResultPublisher: Send + Sync {
    /// Appends `results` in order, each under its job's entry id, skipping those the
    /// stream holds already.
    ///
    /// # Errors
    /// [`Error::Unavailable`] (some may have been appended: publish them again);
    /// [`Error::Backend`] when the stream refuses them.
    async fn publish(&self, results: &[(EntryId, JobResult)]) -> Result<(), Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_is_transient() {
        assert!(Error::Unavailable("connection refused".into()).is_transient());
        let permanent = Error::Backend("relation \"health_snapshots\" does not exist".into());
        assert!(!permanent.is_transient());
        assert_eq!(
            permanent.to_string(),
            "backend error: relation \"health_snapshots\" does not exist"
        );
    }
}
