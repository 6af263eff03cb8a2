//! `runtime:job_results` on Redis: each result under its stop job's entry id, at most once.

use async_trait::async_trait;
use contracts::JobResult;
use redis_streams::StreamWriter;
use rtm_ports::{EntryId, Error, JobResultPublisher};
use stream_consumer::StreamError;

/// Publishes job results through one [`StreamWriter`]: a batch is one round trip, and a
/// result the stream holds already (the same id) is not appended again (decision 0018).
#[derive(Debug, Clone)]
pub struct RedisJobResultPublisher {
    writer: StreamWriter,
}

impl RedisJobResultPublisher {
    /// A publisher appending to the writer's stream.
    #[must_use]
    pub fn new(writer: StreamWriter) -> Self {
        Self { writer }
    }
}

#[async_trait]
impl JobResultPublisher for RedisJobResultPublisher {
    async fn publish(&self, results: &[(EntryId, JobResult)]) -> Result<(), Error> {
        let entries: Vec<(EntryId, Vec<(&'static str, String)>)> = results
            .iter()
            .map(|(id, result)| (*id, result.wire_fields()))
            .collect();
        self.writer
            .append_once(&entries)
            .await
            .map_err(StreamError::into_port::<Error>)?;
        Ok(())
    }
}
