//! Shared Redis plumbing on fred, used by every service (Game Master, Lobby, Runtime
//! Manager):
//!
//!  1. [`connect`] builds a client from a URL with a reconnect policy, timeouts and a
//!     connection check at start-up (a wrong URL or an unreachable server fails at once,
//!     with a message naming `host:port`, never the password);
//!  2. [`RedisStreamReader`] implements the consumer runtime's
//!     [`StreamReader`](stream_consumer::StreamReader) with `XREAD COUNT n BLOCK ms` on a
//!     client of its own, handing on every entry as raw bytes;
//!  3. [`RedisOffsetStore`] implements [`StreamOffsetStore`](stream_consumer::StreamOffsetStore)
//!     with plain strings under `<service>:stream_offsets:<label>`;
//!  4. [`StreamWriter`] appends a batch of entries with one script call running the
//!     `XADD`s server-side: one round trip per batch;
//!  5. [`RedisDeadLetters`] implements [`DeadLetterSink`](stream_consumer::DeadLetterSink)
//!     on a bounded stream per consumer (`<service>:dead_letters:<label>`);
//!  6. [`RedisShardLeases`] keeps who is alive and which instance holds which shard, each
//!     change one script call in one slot, the changes others act on announced;
//!  7. [`ChangeNotices`] listens for those announcements on a client of its own.
//!
//! Errors follow the consumer runtime's split: connection problems and timeouts are
//! [`StreamError::Unavailable`](stream_consumer::StreamError::Unavailable) (retry), replies
//! that make no sense (`WRONGTYPE`, a garbage offset) are
//! [`StreamError::Protocol`](stream_consumer::StreamError::Protocol). fred types never leave
//! this crate. See `docs/decisions/0003-redis-access.md` for the reasons.

mod client;
mod dead_letters;
mod error;
mod leases;
mod notices;
mod offsets;
mod reader;
mod reply;
mod script;
mod settings;
mod writer;

pub use client::{ConnectError, RedisClient, connect, fred_url};
pub use dead_letters::{DEFAULT_DEAD_LETTER_MAX_LEN, RedisDeadLetters};
pub use leases::RedisShardLeases;
pub use notices::ChangeNotices;
pub use offsets::RedisOffsetStore;
pub use reader::RedisStreamReader;
pub use settings::{MAX_BLOCK, RedisSettings};
pub use writer::StreamWriter;
