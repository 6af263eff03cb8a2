//! The one Redis-Streams consumer loop of this workspace.
//!
//! Every consumer (the Game Master's health events and the Lobby's gmevents today; the
//! Runtime Manager's stop jobs when that consumer is built) plugs a [`BatchHandler`] into
//! [`Consumer`]. The runtime:
//!
//!  1. loads the stored offset (`0-0` when none) and checks whether entries after it were
//!     removed unseen (logged and counted; reading carries on from the first entry left);
//!  2. reads a batch (`XREAD COUNT n BLOCK ms` after the offset);
//!  3. hands the batch to the handler. Behind a full batch (a backlog) it meanwhile reads
//!     the next batch ahead without blocking; once caught up (a read came back short) it
//!     instead reads, without blocking and just before handing entries over, what arrived
//!     while the previous batch was handled, so a new entry waits for one batch rather
//!     than two. The handler reports how many entries it finished, whether it stopped on a
//!     transient failure, and whether the rest are still in flight (handed back first on
//!     the next call);
//!  4. saves the offset of the last finished entry, once per batch: while the next batch
//!     is handled when one is waiting, otherwise before it waits for entries (and at
//!     shutdown), so a busy consumer never waits for the save;
//!  5. on a transient failure (reader, handler or offset store) waits with capped
//!     exponential backoff and jitter, then resumes with the unfinished entries: it never
//!     advances past an entry that was not finished. A handler that reports a refusal it
//!     could not pin on an entry's values ([`BatchOutcome::refused`]) is retried the same
//!     way, but only for [`ConsumerConfig::refusal_hold`]: after that the runtime skips
//!     that one entry ([`BatchHandler::abandon`]), so no entry holds the stream forever;
//!  6. on cancellation stops reading, lets the handler finish what it has in flight, saves
//!     the offset and returns.
//!
//! [`Consumer::step`] is one iteration, so tests drive the runtime without racing a
//! background loop; [`Consumer::run`] loops it until cancelled. [`memory::MemoryStreams`]
//! is a stream, an offset store and a dead-letter stream in memory, so a worker's unit
//! tests can drive the real runtime with no server.

mod entry;
pub mod isolate;
pub mod memory;
mod ports;

pub use entry::{EntryId, InvalidEntryId, StreamEntry};
pub use ports::{
    BoxError, DeadLetterSink, StreamError, StreamInfo, StreamOffsetStore, StreamReader,
};
#[cfg(feature = "mocks")]
pub use ports::{MockDeadLetterSink, MockStreamOffsetStore, MockStreamReader};

mod backoff;
mod counts;
mod health;
mod metrics;
mod runtime;
#[cfg(test)]
mod runtime_tests;

pub use backoff::Backoff;
pub use counts::{CountsBy, labels};
pub use error_kit::error_chain;
pub use health::ConsumerHealth;
pub use isolate::{Isolated, isolate};
pub use metrics::{
    BATCH_SIZE_BUCKETS, ConsumerLabel, ConsumerMetrics, LATENCY_BUCKETS, RetryLabels,
};
pub use runtime::{
    BatchHandler, BatchOutcome, Consumer, ConsumerConfig, DEFAULT_REFUSAL_HOLD, Stage, Step,
};
