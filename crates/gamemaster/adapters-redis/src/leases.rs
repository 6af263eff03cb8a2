//! The Game Master's shard leases: `ports::ShardLeases` over `redis_streams::RedisShardLeases`
//! (keys `gamemaster:{shards}:…`, one hash tag, so every script stays in one slot).

use std::time::Duration;

use async_trait::async_trait;
use ports::{Error, ShardLeases};
use redis_streams::{RedisClient, RedisShardLeases};
use stream_consumer::StreamError;

/// Membership and shard leases of the Game Master in Redis.
#[derive(Debug, Clone)]
pub struct RedisLeases(RedisShardLeases);

impl RedisLeases {
    /// The leases of `service` (the key prefix) on `client`.
    #[must_use]
    pub fn new(client: RedisClient, service: &str) -> Self {
        Self(RedisShardLeases::new(client, service))
    }
}

#[async_trait]
impl ShardLeases for RedisLeases {
    async fn heartbeat(&self, member: &str, ttl: Duration) -> Result<Vec<String>, Error> {
        self.0
            .heartbeat(member, ttl)
            .await
            .map_err(StreamError::into_port::<Error>)
    }

    async fn hold(&self, member: &str, shards: &[u32], ttl: Duration) -> Result<Vec<u32>, Error> {
        self.0
            .hold(member, shards, ttl)
            .await
            .map_err(StreamError::into_port::<Error>)
    }

    async fn release(&self, member: &str, shards: &[u32]) -> Result<(), Error> {
        self.0
            .release(member, shards)
            .await
            .map(|_| ())
            .map_err(StreamError::into_port::<Error>)
    }

    async fn leave(&self, member: &str) -> Result<(), Error> {
        self.0
            .leave(member)
            .await
            .map_err(StreamError::into_port::<Error>)
    }
}
