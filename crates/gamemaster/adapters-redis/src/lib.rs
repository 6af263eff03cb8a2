//! The Game Master's Redis adapter.
//!
//! - [`RedisLobbyEventsPublisher`] implements [`ports::LobbyEventsPublisher`]: it writes the
//!   `gm:lobby_events` entries the contract encodes (`contracts::LobbyEventEntry`) through
//!   `redis_streams::StreamWriter`: one round trip per call, events in order.
//! - [`RedisLeases`] implements [`ports::ShardLeases`]: membership and shard leases, each
//!   operation one script under the hash tag `{shards}`; [`LeaseNotices`] wakes the lease
//!   keeper when another member announces a change.
//! - The stream reader, offset store and client from `redis-streams` are re-exported, so
//!   the `gamemaster` binary wires everything Redis from this crate: [`connect`] one shared
//!   client for the publisher and the offset store, and give the reader its own with
//!   [`RedisStreamReader::connect`].

mod leases;
mod lobby;

pub use leases::{LeaseNotices, RedisLeases};
pub use lobby::RedisLobbyEventsPublisher;
pub use redis_streams::{
    ConnectError, MAX_BLOCK, RedisClient, RedisOffsetStore, RedisSettings, RedisStreamReader,
    connect,
};
