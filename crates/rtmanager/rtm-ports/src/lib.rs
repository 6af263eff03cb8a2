//! Runtime Manager ports: the two traits the health publisher is built from, and the one
//! typed error they return.
//!
//! 1. [`HealthSnapshotStore`] keeps the latest [`HealthSnapshot`] of every game (one row per
//!    game, replaced on each observation).
//! 2. [`HealthEventPublisher`] publishes one validated [`HealthEventEnvelope`]: the
//!    snapshot first, then the stream entry, so the store is never behind the stream.
//! 3. [`Error`] separates transient failures ([`Error::Unavailable`]: the server is down
//!    or slow, retrying may help) from permanent ones ([`Error::Backend`]).
//!
//! Inputs are validated when they are built (`rtm-domain`), so an adapter never receives
//! an envelope it would have to reject. With the `mocks` feature both traits have mockall
//! fakes: `MockHealthSnapshotStore` and `MockHealthEventPublisher`.

use async_trait::async_trait;

pub use rtm_domain::{HealthEventEnvelope, HealthSnapshot};
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
