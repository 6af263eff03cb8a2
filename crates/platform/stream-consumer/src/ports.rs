//! What the consumer runtime needs from a stream server and an offset store. The Redis
//! implementations live in `redis-streams`; tests use the mockall fakes (feature `mocks`).

use std::time::Duration;

use async_trait::async_trait;

use crate::entry::{EntryId, StreamEntry};

/// A boxed error source, kept so the whole cause chain prints.
pub use error_kit::BoxError;
use error_kit::ServerFailure;

/// Failure talking to the stream server or the offset store.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Transient: connection refused or lost, timeout. Worth retrying.
    #[error("stream server unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The server answered, but not as expected (wrong key type, a stored offset that is
    /// not an entry id, a reply of the wrong shape). Retrying will not help until an
    /// operator acts, but nothing is lost by waiting.
    #[error("unexpected reply from the stream server: {0}")]
    Protocol(String),
}

impl StreamError {
    /// Whether the failure is transient (retrying may succeed on its own).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// The one mapping of a stream server's failure onto a port's error: unavailable stays
    /// unavailable, an unexpected reply is a backend error (a stream server never refuses
    /// values); the failure is kept as the source.
    #[must_use]
    pub fn into_port<E: ServerFailure>(self) -> E {
        match self {
            Self::Unavailable(_) => E::unavailable(Box::new(self)),
            Self::Protocol(_) => E::backend(Box::new(self)),
        }
    }
}

/// What `XINFO STREAM` says about a stream, as far as a consumer cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamInfo {
    /// Number of entries now in the stream.
    pub length: u64,
    /// Id of the first entry still in the stream, if any.
    pub first_entry: Option<EntryId>,
    /// Id of the last entry ever added (still the stream's top when that entry was deleted).
    pub last_generated: EntryId,
    /// The highest id ever removed by `XDEL`, when the server reports it (Redis ≥ 7.0;
    /// 7.0 does not count trimmed entries here, so the runtime also compares the first
    /// entry with its offset). An offset below it means entries were removed unread.
    pub max_deleted: Option<EntryId>,
}

/// Reads a stream in batches.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait StreamReader: Send + Sync {
    /// `XREAD COUNT count BLOCK block STREAMS stream after`: up to `count` entries with ids
    /// greater than `after`, waiting at most `block` when there are none (then an empty
    /// vector). Every entry is handed on, whatever its fields hold.
    async fn read_after(
        &self,
        stream: &str,
        after: EntryId,
        count: usize,
        block: Duration,
    ) -> Result<Vec<StreamEntry>, StreamError>;

    /// The stream's bounds, or `None` when the stream does not exist.
    async fn info(&self, stream: &str) -> Result<Option<StreamInfo>, StreamError>;
}

/// Persists, per consumer label, the id of the last entry the consumer finished.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait StreamOffsetStore: Send + Sync {
    /// The stored offset, `None` when the consumer never saved one.
    async fn load(&self, label: &str) -> Result<Option<EntryId>, StreamError>;

    /// Stores `id` as the last finished entry.
    async fn save(&self, label: &str, id: EntryId) -> Result<(), StreamError>;
}

/// Keeps the entries a consumer skipped as permanently bad, raw, with why (its
/// dead-letter stream; `contracts::dead_letters`).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait DeadLetterSink: Send + Sync {
    /// Appends `letters`, in order. At least once: a call retried after a lost reply may
    /// keep a letter twice (each names its source entry, so a duplicate shows).
    async fn keep(
        &self,
        letters: &[contracts::dead_letters::DeadLetter],
    ) -> Result<(), StreamError>;
}
