//! The health event publisher: the snapshot first, then the stream entry.

use async_trait::async_trait;
use redis_streams::StreamWriter;
use rtm_ports::{
    EntryId, Error, HealthEventEnvelope, HealthEventPublisher, HealthSnapshot, HealthSnapshotStore,
};
use stream_consumer::StreamError;

/// Appends one entry to a stream and returns its id. The publisher's view of the stream,
/// so tests can watch what it appends (and when); [`StreamWriter`] is the real one.
#[async_trait]
pub trait EntryAppender: Send + Sync {
    /// `XADD <stream> * field value …` with `fields` in order.
    ///
    /// # Errors
    /// [`StreamError::Unavailable`] when the server cannot be reached or the reply timed
    /// out (the entry may have been appended), [`StreamError::Protocol`] when the server
    /// refused it.
    async fn append_entry(&self, fields: &[(&'static str, String)])
    -> Result<EntryId, StreamError>;
}

#[async_trait]
impl EntryAppender for StreamWriter {
    async fn append_entry(
        &self,
        fields: &[(&'static str, String)],
    ) -> Result<EntryId, StreamError> {
        let ids = self.append(&[fields.to_vec()]).await?;
        ids.first().copied().ok_or_else(|| {
            StreamError::Protocol(format!("XADD {}: no entry id in the reply", self.stream()))
        })
    }
}

/// Publishes health events the way SPEC §RTM asks: validate (the envelope's type already
/// did), upsert the game's `health_snapshots` row, and only then append the envelope's
/// [`wire_fields`](HealthEventEnvelope::wire_fields) to the stream. A consumer that reads
/// the entry therefore always finds a snapshot at least as fresh in the store.
///
/// Calls for one game must not overlap if their order matters: the stream order is the
/// order in which the appends complete.
#[derive(Debug, Clone)]
pub struct RtmHealthEventPublisher<S, A = StreamWriter> {
    snapshots: S,
    stream: A,
}

impl<S, A> RtmHealthEventPublisher<S, A>
where
    S: HealthSnapshotStore,
    A: EntryAppender,
{
    /// A publisher writing snapshots to `snapshots` and entries through `stream` (e.g. a
    /// `StreamWriter` for `runtime:health_events`).
    #[must_use]
    pub fn new(snapshots: S, stream: A) -> Self {
        Self { snapshots, stream }
    }
}

#[async_trait]
impl<S, A> HealthEventPublisher for RtmHealthEventPublisher<S, A>
where
    S: HealthSnapshotStore,
    A: EntryAppender,
{
    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(game_id = %envelope.game_id(), event_type = %envelope.event_type()),
        err
    )]
    async fn publish(&self, envelope: &HealthEventEnvelope) -> Result<EntryId, Error> {
        self.snapshots
            .upsert(&HealthSnapshot::from_envelope(envelope))
            .await?;
        let fields = envelope.wire_fields();
        self.stream
            .append_entry(&fields)
            .await
            .map_err(StreamError::into_port)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use mockall::Sequence;
    use rtm_domain::{HealthEventType, SnapshotStatus};
    use rtm_ports::MockHealthSnapshotStore;

    use super::*;

    mockall::mock! {
        Appender {}
        #[async_trait]
        impl EntryAppender for Appender {
            async fn append_entry(
                &self,
                fields: &[(&'static str, String)],
            ) -> Result<EntryId, StreamError>;
        }
    }

    fn envelope() -> HealthEventEnvelope {
        HealthEventEnvelope::new(
            "g-7",
            "c-7",
            HealthEventType::ContainerOom,
            1_700_000_000_001,
            Some(r#"{"exit_code":137}"#),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn the_snapshot_is_written_before_the_entry_is_appended() {
        let mut sequence = Sequence::new();
        let mut store = MockHealthSnapshotStore::new();
        store
            .expect_upsert()
            .withf(|s| s.game_id.as_str() == "g-7" && s.status == SnapshotStatus::Oom)
            .times(1)
            .in_sequence(&mut sequence)
            .returning(|_| Ok(()));
        let appended = Arc::new(Mutex::new(Vec::new()));
        let mut appender = MockAppender::new();
        let seen = Arc::clone(&appended);
        appender
            .expect_append_entry()
            .times(1)
            .in_sequence(&mut sequence)
            .returning(move |fields| {
                seen.lock().unwrap().extend_from_slice(fields);
                Ok(EntryId::new(42, 1))
            });

        let publisher = RtmHealthEventPublisher::new(store, appender);
        let id = publisher.publish(&envelope()).await.unwrap();

        assert_eq!(id, EntryId::new(42, 1));
        assert_eq!(*appended.lock().unwrap(), envelope().wire_fields().to_vec());
    }

    #[tokio::test]
    async fn a_failed_upsert_appends_nothing_and_keeps_its_kind() {
        for transient in [true, false] {
            let mut store = MockHealthSnapshotStore::new();
            store.expect_upsert().times(1).returning(move |_| {
                Err(if transient {
                    Error::Unavailable("connection refused".into())
                } else {
                    Error::Backend("no such table".into())
                })
            });
            let mut appender = MockAppender::new();
            appender.expect_append_entry().never();

            let publisher = RtmHealthEventPublisher::new(store, appender);
            let error = publisher.publish(&envelope()).await.unwrap_err();
            assert_eq!(error.is_transient(), transient, "{error}");
        }
    }

    #[tokio::test]
    async fn a_failed_append_is_returned_to_the_caller() {
        for (failure, transient) in [
            (
                StreamError::Unavailable("XADD runtime:health_events: timed out".into()),
                true,
            ),
            (
                StreamError::Protocol("WRONGTYPE Operation against a key".into()),
                false,
            ),
        ] {
            let mut store = MockHealthSnapshotStore::new();
            store.expect_upsert().times(1).returning(|_| Ok(()));
            let mut appender = MockAppender::new();
            let failure = Mutex::new(Some(failure));
            appender
                .expect_append_entry()
                .times(1)
                .returning(move |_| Err(failure.lock().unwrap().take().unwrap()));

            let publisher = RtmHealthEventPublisher::new(store, appender);
            let error = publisher.publish(&envelope()).await.unwrap_err();
            assert_eq!(error.is_transient(), transient, "{error}");
            let text = error.to_string();
            assert!(
                text.contains("timed out") || text.contains("WRONGTYPE"),
                "{text}"
            );
        }
    }
}
