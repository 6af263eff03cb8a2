//! The Game Master's shard leases: `ports::ShardLeases` over `redis_streams::RedisShardLeases`
//! (keys `gamemaster:{shards}:…`, one hash tag, so every script stays in one slot).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ports::{Error, Members, ShardLeases};
use redis_streams::{ChangeNotices, ConnectError, RedisClient, RedisSettings, RedisShardLeases};
use stream_consumer::StreamError;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Membership and shard leases of the Game Master in Redis.
#[derive(Debug, Clone)]
pub struct RedisLeases(RedisShardLeases);

impl RedisLeases {
    /// The leases of `service` (the key prefix) on `client`.
    #[must_use]
    pub fn new(client: RedisClient, service: &str) -> Self {
        Self(RedisShardLeases::new(client, service))
    }

    /// Listens, on a client of its own named `name`, for the changes these leases
    /// announce (a member joined or left, leases given up).
    ///
    /// # Errors
    /// [`ConnectError`] when Redis cannot be reached.
    pub async fn notices(&self, url: &str, name: &str) -> Result<LeaseNotices, ConnectError> {
        let channel = self.0.changes_channel();
        ChangeNotices::subscribe(url, RedisSettings::default(), name, &channel)
            .await
            .map(LeaseNotices)
    }
}

/// The announcements of [`RedisLeases`], each a reason for the lease keeper to tick now.
#[derive(Debug)]
pub struct LeaseNotices(ChangeNotices);

impl LeaseNotices {
    /// Notifies `wake` (the lease keeper's waker) on every announcement until `stop`.
    pub async fn wake(mut self, wake: Arc<Notify>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                notice = self.0.next() => {
                    let Some(notice) = notice else {
                        tracing::warn!("lease notices closed; shard changes are seen at the next tick");
                        break;
                    };
                    tracing::debug!(notice, "lease change announced; ticking now");
                    wake.notify_one();
                }
            }
        }
        self.0.close().await;
    }
}

#[async_trait]
impl ShardLeases for RedisLeases {
    async fn heartbeat(&self, member: &str, ttl: Duration) -> Result<Members, Error> {
        let (alive, next_lapse) = self
            .0
            .heartbeat(member, ttl)
            .await
            .map_err(StreamError::into_port::<Error>)?;
        Ok(Members { alive, next_lapse })
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
