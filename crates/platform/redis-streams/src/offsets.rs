//! Consumer offsets as plain Redis strings under `<service>:stream_offsets:<label>`.

use async_trait::async_trait;
use fred::interfaces::{ClientLike, KeysInterface};
use fred::types::Value;
use stream_consumer::{EntryId, StreamError, StreamOffsetStore};

use crate::client::RedisClient;
use crate::error::stream_error;

/// Stores, per consumer label, the id of the last entry the consumer finished.
///
/// The key layout is a wire contract (operators read and reset offsets with `redis-cli`):
/// `<service>:stream_offsets:<label>`, e.g. `gamemaster:stream_offsets:health_events`,
/// holding the id as text (`1700000000000-0`).
#[derive(Debug, Clone)]
pub struct RedisOffsetStore {
    client: RedisClient,
    prefix: String,
}

impl RedisOffsetStore {
    /// An offset store for `service` (e.g. `gamemaster`, `lobby`, `rtmanager`).
    #[must_use]
    pub fn new(client: RedisClient, service: &str) -> Self {
        Self {
            client,
            prefix: format!("{service}:stream_offsets:"),
        }
    }

    /// The key that holds `label`'s offset.
    #[must_use]
    pub fn key(&self, label: &str) -> String {
        format!("{}{label}", self.prefix)
    }
}

#[async_trait]
impl StreamOffsetStore for RedisOffsetStore {
    /// `GET <service>:stream_offsets:<label>`; a value that is not an entry id is a
    /// [`StreamError::Protocol`] naming the key (an operator has to fix or delete it).
    async fn load(&self, label: &str) -> Result<Option<EntryId>, StreamError> {
        let key = self.key(label);
        let stored: Value = self
            .client
            .fred()
            .with_options(&self.client.options(None))
            .get(key.as_str())
            .await
            .map_err(|e| stream_error(&format!("GET {key}"), &e))?;
        let raw = match stored {
            Value::Null => return Ok(None),
            Value::String(s) => s.into_inner(),
            Value::Bytes(b) => b,
            Value::Integer(i) => i.to_string().into(),
            other => {
                return Err(StreamError::Protocol(format!(
                    "offset key {key} holds a {} reply, not an entry id",
                    other.kind()
                )));
            }
        };
        let text = String::from_utf8_lossy(&raw);
        text.parse().map(Some).map_err(|_| {
            let shown: String = text.chars().take(64).collect();
            StreamError::Protocol(format!(
                "offset key {key} holds {shown:?}, not an entry id (<ms>-<seq>)"
            ))
        })
    }

    /// `SET <service>:stream_offsets:<label> <id>`.
    async fn save(&self, label: &str, id: EntryId) -> Result<(), StreamError> {
        let key = self.key(label);
        let _: Value = self
            .client
            .fred()
            .with_options(&self.client.options(None))
            .set(key.as_str(), id.to_string(), None, None, false)
            .await
            .map_err(|e| stream_error(&format!("SET {key}"), &e))?;
        Ok(())
    }
}
