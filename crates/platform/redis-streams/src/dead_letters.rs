//! A consumer's dead-letter stream on Redis, behind `stream_consumer::DeadLetterSink`.

use async_trait::async_trait;
use contracts::dead_letters::DeadLetter;
use stream_consumer::{DeadLetterSink, StreamError};

use crate::{RedisClient, StreamWriter};

/// How many dead letters a stream keeps by default (about: `MAXLEN ~`).
pub const DEFAULT_DEAD_LETTER_MAX_LEN: u64 = 10_000;

/// Appends dead letters to one stream, trimmed to about a bound as it goes, so a flood of
/// bad entries cannot grow Redis without end.
#[derive(Debug, Clone)]
pub struct RedisDeadLetters {
    writer: StreamWriter,
}

impl RedisDeadLetters {
    /// Dead letters on `stream`, keeping about the last `max_len`.
    #[must_use]
    pub fn new(client: RedisClient, stream: impl Into<String>, max_len: u64) -> Self {
        Self {
            writer: StreamWriter::new(client, stream).with_approx_max_len(max_len),
        }
    }
}

#[async_trait]
impl DeadLetterSink for RedisDeadLetters {
    async fn keep(&self, letters: &[DeadLetter]) -> Result<(), StreamError> {
        let entries: Vec<Vec<(Vec<u8>, Vec<u8>)>> =
            letters.iter().map(DeadLetter::wire_fields).collect();
        self.writer.append(&entries).await.map(|_| ())
    }
}
