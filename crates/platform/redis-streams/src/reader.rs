//! The batch stream reader: `XREAD COUNT n BLOCK ms` on a client of its own.

use std::time::Duration;

use async_trait::async_trait;
use fred::interfaces::{ClientLike, StreamsInterface};
use fred::types::Value;
use stream_consumer::{EntryId, StreamEntry, StreamError, StreamInfo, StreamReader};

use crate::client::{ConnectError, RedisClient, connect};
use crate::error::{is_no_such_key, stream_error};
use crate::reply;
use crate::settings::{MAX_BLOCK, RedisSettings};

/// Reads streams in batches for the consumer runtime.
///
/// A blocking `XREAD` occupies its connection until it returns, so the reader always owns a
/// dedicated client: it can only be built with [`RedisStreamReader::connect`], never from a
/// client the service shares with its publishers or offset store. Use one reader per
/// consumer loop, one call at a time.
#[derive(Debug)]
pub struct RedisStreamReader {
    client: RedisClient,
}

impl RedisStreamReader {
    /// Connects a client of the reader's own (see [`connect`] for what it checks and how it
    /// reconnects).
    ///
    /// # Errors
    /// As [`connect`]: an invalid URL or an unreachable server.
    pub async fn connect(
        url: &str,
        settings: RedisSettings,
        name: &str,
    ) -> Result<Self, ConnectError> {
        Ok(Self {
            client: connect(url, settings, name).await?,
        })
    }

    /// One `PING` round trip on the reader's connection, for readiness checks. Between reads
    /// it answers at once; during a blocking read it waits for the read to return.
    ///
    /// # Errors
    /// [`StreamError::Unavailable`] when the server cannot be reached.
    pub async fn ping(&self) -> Result<(), StreamError> {
        self.client.ping().await
    }

    /// Closes the reader's connection (shutdown).
    pub async fn quit(&self) {
        self.client.quit().await;
    }
}

/// The `BLOCK` argument for a requested wait: at most [`MAX_BLOCK`], and none at all for a
/// zero wait (Redis reads `BLOCK 0` as "wait forever").
fn block_millis(block: Duration) -> Option<u64> {
    let millis = u64::try_from(block.min(MAX_BLOCK).as_millis()).unwrap_or(u64::MAX);
    (millis > 0).then_some(millis)
}

#[async_trait]
impl StreamReader for RedisStreamReader {
    /// `XREAD COUNT count [BLOCK ms] STREAMS stream after`. `count` of 0 reads one entry;
    /// `block` is cut to [`MAX_BLOCK`]. Entries come back exactly as stored, raw.
    async fn read_after(
        &self,
        stream: &str,
        after: EntryId,
        count: usize,
        block: Duration,
    ) -> Result<Vec<StreamEntry>, StreamError> {
        let count = u64::try_from(count.max(1)).unwrap_or(u64::MAX);
        let block = block_millis(block);
        let wait = Duration::from_millis(block.unwrap_or(0));
        let reply: Value = self
            .client
            .fred()
            .with_options(&self.client.options(Some(wait)))
            .xread(Some(count), block, stream, after.to_string())
            .await
            .map_err(|e| stream_error(&format!("XREAD {stream}"), &e))?;
        reply::xread(reply).map_err(|e| StreamError::Protocol(format!("XREAD {stream}: {}", e.0)))
    }

    /// `XINFO STREAM stream`; `None` when the key does not exist.
    async fn info(&self, stream: &str) -> Result<Option<StreamInfo>, StreamError> {
        let reply: Result<Value, _> = self
            .client
            .fred()
            .with_options(&self.client.options(None))
            .xinfo_stream(stream, false, None)
            .await;
        match reply {
            Ok(value) => reply::xinfo_stream(value)
                .map(Some)
                .map_err(|e| StreamError::Protocol(format!("XINFO STREAM {stream}: {}", e.0))),
            Err(e) if is_no_such_key(&e) => Ok(None),
            Err(e) => Err(stream_error(&format!("XINFO STREAM {stream}"), &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_is_bounded_and_never_forever() {
        assert_eq!(block_millis(Duration::ZERO), None);
        assert_eq!(block_millis(Duration::from_micros(999)), None);
        assert_eq!(block_millis(Duration::from_millis(200)), Some(200));
        assert_eq!(block_millis(Duration::from_secs(3600)), Some(5000));
    }
}
