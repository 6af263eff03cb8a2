#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mockall::predicate::{always, eq};
use tokio_util::sync::CancellationToken;

use crate::ports::{MockStreamOffsetStore, MockStreamReader};
use crate::*;

type Script = VecDeque<Box<dyn FnMut(&[StreamEntry]) -> BatchOutcome + Send>>;

/// A handler that records every batch it was given and answers from a script (default:
/// finish everything).
#[derive(Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Vec<EntryId>>>>,
    script: Script,
    abandoned: Vec<(EntryId, String)>,
    /// What the next `before_read` answers (once).
    read_from: Arc<Mutex<Option<EntryId>>>,
}

#[async_trait]
impl BatchHandler for Recorder {
    async fn handle(&mut self, batch: &[StreamEntry]) -> BatchOutcome {
        self.seen
            .lock()
            .unwrap()
            .push(batch.iter().map(|e| e.id).collect());
        match self.script.pop_front() {
            Some(mut f) => f(batch),
            None => BatchOutcome::done(batch.len()),
        }
    }

    fn abandon(&mut self, entry: &StreamEntry, reason: &str) {
        self.abandoned.push((entry.id, reason.to_owned()));
    }

    async fn before_read(&mut self, _: EntryId) -> Option<EntryId> {
        self.read_from.lock().unwrap().take()
    }
}

fn entries(ids: &[(u64, u64)]) -> Vec<StreamEntry> {
    ids.iter()
        .map(|&(ms, seq)| StreamEntry::from_pairs(EntryId::new(ms, seq), &[("k", "v")]))
        .collect()
}

fn config() -> ConsumerConfig {
    let mut c = ConsumerConfig::new("s", "test");
    c.batch_size = 10;
    c.block = Duration::from_millis(50);
    c.backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };
    c
}

fn no_info(reader: &mut MockStreamReader) {
    reader.expect_info().returning(|_| Ok(None));
}

/// The non-blocking read-ahead (block 0) finds nothing new.
fn nothing_ahead(reader: &mut MockStreamReader) {
    reader
        .expect_read_after()
        .withf(|_, _, _, block| block.is_zero())
        .returning(|_, _, _, _| Ok(vec![]));
}

/// A blocking read (the consumer's own, not the read-ahead).
fn blocking() -> impl Fn(&str, &EntryId, &usize, &Duration) -> bool {
    |_, _, _, block| !block.is_zero()
}

fn unavailable() -> StreamError {
    StreamError::Unavailable("connection refused".into())
}

fn consumer(
    reader: MockStreamReader,
    offsets: MockStreamOffsetStore,
    handler: Recorder,
) -> (
    Consumer<MockStreamReader, MockStreamOffsetStore, Recorder>,
    ConsumerMetrics,
    ConsumerHealth,
) {
    consumer_with(reader, offsets, handler, config())
}

fn consumer_with(
    reader: MockStreamReader,
    offsets: MockStreamOffsetStore,
    handler: Recorder,
    config: ConsumerConfig,
) -> (
    Consumer<MockStreamReader, MockStreamOffsetStore, Recorder>,
    ConsumerMetrics,
    ConsumerHealth,
) {
    let metrics = ConsumerMetrics::default();
    let health = ConsumerHealth::default();
    let c = Consumer::new(
        reader,
        offsets,
        handler,
        config,
        metrics.clone(),
        health.clone(),
    );
    (c, metrics, health)
}

/// Batches of two, so a read of two entries is a full one (a backlog).
fn config_of_two() -> ConsumerConfig {
    let mut c = config();
    c.batch_size = 2;
    c
}

#[tokio::test]
async fn starts_at_zero_without_an_offset_and_saves_once_per_batch_before_waiting_for_more() {
    let mut reader = MockStreamReader::new();
    no_info(&mut reader);
    nothing_ahead(&mut reader);
    reader
        .expect_read_after()
        .with(
            eq("s"),
            eq(EntryId::ZERO),
            eq(10),
            eq(Duration::from_millis(50)),
        )
        .times(1)
        .returning(|_, _, _, _| Ok(entries(&[(1, 0), (1, 1), (2, 0)])));
    let mut offsets = MockStreamOffsetStore::new();
    offsets
        .expect_load()
        .with(eq("test"))
        .returning(|_| Ok(None));
    offsets
        .expect_save()
        .with(eq("test"), eq(EntryId::new(2, 0)))
        .times(1)
        .returning(|_, _| Ok(()));
    reader
        .expect_read_after()
        .withf(|_, after, _, block| !block.is_zero() && *after == EntryId::new(2, 0))
        .times(1)
        .returning(|_, _, _, _| Ok(vec![]));
    let (mut c, metrics, health) = consumer(reader, offsets, Recorder::default());

    let step = c.step().await;
    assert_eq!(
        step,
        Step::Handled {
            entries: 3,
            offset: EntryId::new(2, 0)
        }
    );
    assert_eq!(metrics.entries("test"), 3);
    assert!(health.check().is_ok());
    // The offset is stored before the consumer waits for more (once: `times(1)` above).
    assert_eq!(c.step().await, Step::Idle);
}

#[tokio::test]
async fn behind_a_full_batch_the_next_is_read_ahead_while_the_handler_works() {
    let mut reader = MockStreamReader::new();
    no_info(&mut reader);
    let mut seq = mockall::Sequence::new();
    // Step 1: a blocking read comes back full (a backlog), so the read-ahead after its
    // last entry runs beside the handler and finds one more.
    reader
        .expect_read_after()
        .with(
            eq("s"),
            eq(EntryId::ZERO),
            eq(2),
            eq(Duration::from_millis(50)),
        )
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(entries(&[(1, 0), (2, 0)])));
    reader
        .expect_read_after()
        .with(eq("s"), eq(EntryId::new(2, 0)), eq(2), eq(Duration::ZERO))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(entries(&[(3, 0)])));
    // Step 2: no blocking read. The read-ahead came back short (caught up), so what
    // arrived since is read before handling, for the room left in the batch.
    reader
        .expect_read_after()
        .with(eq("s"), eq(EntryId::new(3, 0)), eq(1), eq(Duration::ZERO))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(vec![]));
    // Step 3: back to a blocking read.
    reader
        .expect_read_after()
        .with(
            eq("s"),
            eq(EntryId::new(3, 0)),
            eq(2),
            eq(Duration::from_millis(50)),
        )
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(vec![]));
    let mut offsets = MockStreamOffsetStore::new();
    offsets.expect_load().returning(|_| Ok(None));
    offsets.expect_save().returning(|_, _| Ok(()));
    let handler = Recorder::default();
    let seen = handler.seen.clone();
    let (mut c, _, _) = consumer_with(reader, offsets, handler, config_of_two());
    assert!(matches!(c.step().await, Step::Handled { entries: 2, .. }));
    assert_eq!(
        c.step().await,
        Step::Handled {
            entries: 1,
            offset: EntryId::new(3, 0)
        }
    );
    assert_eq!(c.step().await, Step::Idle);
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_caught_up_consumer_reads_what_arrived_just_before_handling_instead_of_ahead() {
    let mut reader = MockStreamReader::new();
    no_info(&mut reader);
    let mut seq = mockall::Sequence::new();
    // Step 1: a short blocking read (caught up): no read-ahead beside the handler.
    reader
        .expect_read_after()
        .withf(blocking())
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(entries(&[(1, 0)])));
    // Step 2: entry 1-0 is in flight; what arrived meanwhile is read first, for a whole
    // batch's room (entries in flight do not count).
    reader
        .expect_read_after()
        .with(eq("s"), eq(EntryId::new(1, 0)), eq(10), eq(Duration::ZERO))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(entries(&[(2, 0)])));
    // Step 3: the same for what followed 2-0.
    reader
        .expect_read_after()
        .with(eq("s"), eq(EntryId::new(2, 0)), eq(10), eq(Duration::ZERO))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(vec![]));
    let mut offsets = MockStreamOffsetStore::new();
    offsets.expect_load().returning(|_| Ok(None));
    offsets.expect_save().returning(|_, _| Ok(()));
    let mut handler = Recorder::default();
    handler
        .script
        .push_back(Box::new(|_| BatchOutcome::in_flight(0)));
    handler
        .script
        .push_back(Box::new(|_| BatchOutcome::in_flight(1)));
    let seen = handler.seen.clone();
    let (mut c, _, _) = consumer(reader, offsets, handler);
    assert!(matches!(c.step().await, Step::Handled { entries: 0, .. }));
    assert!(matches!(c.step().await, Step::Handled { entries: 1, .. }));
    assert_eq!(
        c.step().await,
        Step::Handled {
            entries: 1,
            offset: EntryId::new(2, 0)
        }
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            vec![EntryId::new(1, 0)],
            vec![EntryId::new(1, 0), EntryId::new(2, 0)],
            vec![EntryId::new(2, 0)],
        ]
    );
}

#[tokio::test]
async fn a_batch_read_ahead_is_dropped_when_the_handler_fails() {
    let mut reader = MockStreamReader::new();
    no_info(&mut reader);
    reader
        .expect_read_after()
        .withf(blocking())
        .times(1)
        .returning(|_, _, _, _| Ok(entries(&[(1, 0), (2, 0)])));
    reader
        .expect_read_after()
        .withf(|_, after, _, block| block.is_zero() && *after == EntryId::new(2, 0))
        .returning(|_, _, _, _| Ok(entries(&[(3, 0)])));
    reader
        .expect_read_after()
        .withf(|_, after, _, block| block.is_zero() && *after == EntryId::new(3, 0))
        .returning(|_, _, _, _| Ok(vec![]));
    let mut offsets = MockStreamOffsetStore::new();
    offsets.expect_load().returning(|_| Ok(None));
    offsets.expect_save().returning(|_, _| Ok(()));
    let mut handler = Recorder::default();
    handler
        .script
        .push_back(Box::new(|_| BatchOutcome::stopped(1, "down")));
    let seen = handler.seen.clone();
    let (mut c, _, _) = consumer_with(reader, offsets, handler, config_of_two());
    assert!(matches!(c.step().await, Step::Retry { .. }));
    // The unfinished entry comes back first, then the one read ahead (read again).
    assert!(matches!(c.step().await, Step::Handled { entries: 1, .. }));
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            vec![EntryId::new(1, 0), EntryId::new(2, 0)],
            vec![EntryId::new(2, 0)],
        ]
    );
    assert_eq!(
        c.step().await,
        Step::Handled {
            entries: 1,
            offset: EntryId::new(3, 0)
        }
    );
}

#[tokio::test]
async fn entries_in_flight_come_back_first_with_the_next_batch_and_the_offset_waits_for_them() {
    let mut reader = MockStreamReader::new();
    no_info(&mut reader);
    reader
        .expect_read_after()
        .withf(|_, after, _, block| !block.is_zero() && *after == EntryId::ZERO)
        .times(1)
        .returning(|_, _, _, _| Ok(entries(&[(1, 0), (2, 0)])));
    reader
        .expect_read_after()
        .withf(|_, after, _, block| !block.is_zero() && *after == EntryId::new(3, 0))
        .returning(|_, _, _, _| Ok(vec![]));
    reader
        .expect_read_after()
        .withf(|_, after, _, block| block.is_zero() && *after == EntryId::new(2, 0))
        .returning(|_, _, _, _| Ok(entries(&[(3, 0)])));
    reader
        .expect_read_after()
        .withf(|_, after, _, block| block.is_zero() && *after == EntryId::new(3, 0))
        .returning(|_, _, _, _| Ok(vec![]));
    let mut offsets = MockStreamOffsetStore::new();
    offsets.expect_load().returning(|_| Ok(None));
    let saved = Arc::new(Mutex::new(Vec::new()));
    let saved_in = saved.clone();
    offsets.expect_save().returning(move |_, id| {
        saved_in.lock().unwrap().push(id);
        Ok(())
    });
    let mut handler = Recorder::default();
    // First call: everything goes in flight. Second: those two finish, the third goes in
    // flight. Third: it finishes.
    handler
        .script
        .push_back(Box::new(|_| BatchOutcome::in_flight(0)));
    handler
        .script
        .push_back(Box::new(|_| BatchOutcome::in_flight(2)));
    let seen = handler.seen.clone();
    let (mut c, _, health) = consumer(reader, offsets, handler);
    assert_eq!(
        c.step().await,
        Step::Handled {
            entries: 0,
            offset: EntryId::ZERO
        }
    );
    assert!(health.check().is_ok());
    assert_eq!(
        c.step().await,
        Step::Handled {
            entries: 2,
            offset: EntryId::new(2, 0)
        }
    );
    assert_eq!(
        c.step().await,
        Step::Handled {
            entries: 1,
            offset: EntryId::new(3, 0)
        }
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            vec![EntryId::new(1, 0), EntryId::new(2, 0)],
            vec![EntryId::new(1, 0), EntryId::new(2, 0), EntryId::new(3, 0)],
            vec![EntryId::new(3, 0)],
        ]
    );
    // 2-0 was stored while 3-0 was handled; 3-0 is stored before waiting for more.
    assert_eq!(*saved.lock().unwrap(), vec![EntryId::new(2, 0)]);
    assert_eq!(c.step().await, Step::Idle);
    assert_eq!(
        *saved.lock().unwrap(),
        vec![EntryId::new(2, 0), EntryId::new(3, 0)]
    );
}

#[tokio::test(start_paused = true)]
async fn at_shutdown_work_in_flight_is_finished_before_the_offset_is_saved() {
    let reader = SlowReader {
        batches: Mutex::new(VecDeque::from([
            entries(&[(1, 0), (2, 0)]),
            entries(&[(3, 0)]),
        ])),
    };
    let mut offsets = MockStreamOffsetStore::new();
    offsets.expect_load().returning(|_| Ok(None));
    let saved = Arc::new(Mutex::new(Vec::new()));
    let saved_in = saved.clone();
    offsets.expect_save().returning(move |_, id| {
        saved_in.lock().unwrap().push(id);
        Ok(())
    });
    let cancel = CancellationToken::new();
    let mut handler = Recorder::default();
    let cancel_in = cancel.clone();
    handler.script.push_back(Box::new(move |_| {
        cancel_in.cancel();
        BatchOutcome::in_flight(0)
    }));
    let seen = handler.seen.clone();
    let c = Consumer::new(
        reader,
        offsets,
        handler,
        config(),
        ConsumerMetrics::default(),
        ConsumerHealth::default(),
    );
    c.run(cancel).await;
    // The in-flight pair is handed back alone (not with 3-0, read ahead) and finished.
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            vec![EntryId::new(1, 0), EntryId::new(2, 0)],
            vec![EntryId::new(1, 0), EntryId::new(2, 0)],
        ]
    );
    assert_eq!(*saved.lock().unwrap(), vec![EntryId::new(2, 0)]);
}

#[tokio::test]
async fn resumes_after_the_stored_offset_and_idles_on_an_empty_read() {
    let mut reader = MockStreamReader::new();
    no_info(&mut reader);
    reader
        .expect_read_after()
        .with(eq("s"), eq(EntryId::new(7, 3)), eq(10), always())
        .returning(|_, _, _, _| Ok(vec![]));
    let mut offsets = MockStreamOffsetStore::new();
    offsets
        .expect_load()
        .times(1)
        .returning(|_| Ok(Some(EntryId::new(7, 3))));
    offsets.expect_save().never();
    let (mut c, _, _) = consumer(reader, offsets, Recorder::default());
    assert_eq!(c.step().await, Step::Idle);
    assert_eq!(c.step().await, Step::Idle);
    assert_eq!(c.position(), Some(EntryId::new(7, 3)));
}

#[tokio::test]
async fn a_handler_failure_holds_the_offset_at_the_last_finished_entry_and_retries_the_rest() {
    let mut reader = MockStreamReader::new();
    no_info(&mut reader);
    nothing_ahead(&mut reader);
    reader
        .expect_read_after()
        .withf(|_, after, _, block| !block.is_zero() && *after == EntryId::ZERO)
        .times(1)
        .returning(|_, _, _, _| Ok(entries(&[(1, 0), (2, 0), (3, 0)])));
    reader
        .expect_read_after()
        .withf(|_, after, _, block| !block.is_zero() && *after == EntryId::new(3, 0))
        .returning(|_, _, _, _| Ok(vec![]));
    let mut offsets = MockStreamOffsetStore::new();
    offsets.expect_load().returning(|_| Ok(None));
    let saved = Arc::new(Mutex::new(Vec::new()));
    let saved_in = saved.clone();
    offsets.expect_save().returning(move |_, id| {
        saved_in.lock().unwrap().push(id);
        Ok(())
    });
    let mut handler = Recorder::default();
    handler.script.push_back(Box::new(|_| {
        BatchOutcome::stopped(1, "database unavailable")
    }));
    handler
        .script
        .push_back(Box::new(|_| BatchOutcome::stopped(0, "still unavailable")));
    let seen = handler.seen.clone();
    let (mut c, metrics, health) = consumer(reader, offsets, handler);

    let Step::Retry { stage, delay } = c.step().await else {
        panic!("expected a retry")
    };
    assert_eq!(stage, Stage::Handle);
    assert!(delay >= Duration::from_millis(50) && delay <= Duration::from_millis(100));
    assert!(
        health
            .check()
            .is_err_and(|r| r.contains("database unavailable"))
    );

    let Step::Retry { delay, .. } = c.step().await else {
        panic!("expected a retry")
    };
    assert!(delay >= Duration::from_millis(100) && delay <= Duration::from_millis(200));

    assert_eq!(
        c.step().await,
        Step::Handled {
            entries: 2,
            offset: EntryId::new(3, 0)
        }
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            vec![EntryId::new(1, 0), EntryId::new(2, 0), EntryId::new(3, 0)],
            vec![EntryId::new(2, 0), EntryId::new(3, 0)],
            vec![EntryId::new(2, 0), EntryId::new(3, 0)],
        ]
    );
    // 1-0 was stored before the first retry; 3-0 before the consumer waits for more.
    assert_eq!(*saved.lock().unwrap(), vec![EntryId::new(1, 0)]);
    assert_eq!(c.step().await, Step::Idle);
    assert_eq!(
        *saved.lock().unwrap(),
        vec![EntryId::new(1, 0), EntryId::new(3, 0)]
    );
    assert_eq!(metrics.retries("test", "handle"), 2);
    assert!(health.check().is_ok());
}

#[tokio::test]
async fn a_handler_that_stops_short_without_a_reason_is_retried_not_skipped() {
    let mut reader = MockStreamReader::new();
    no_info(&mut reader);
    nothing_ahead(&mut reader);
    reader
        .expect_read_after()
        .withf(blocking())
        .times(1)
        .returning(|_, _, _, _| Ok(entries(&[(1, 0), (2, 0)])));
    let mut offsets = MockStreamOffsetStore::new();
    offsets.expect_load().returning(|_| Ok(None));
    offsets.expect_save().returning(|_, _| Ok(()));
    let mut handler = Recorder::default();
    handler.script.push_back(Box::new(|_| BatchOutcome {
        finished: 1,
        failure: None,
        in_flight: false,
        refused: false,
        dead_letters: Vec::new(),
        rewind: None,
    }));
    let (mut c, _, _) = consumer(reader, offsets, handler);
    assert!(matches!(
        c.step().await,
        Step::Retry {
            stage: Stage::Handle,
            ..
        }
    ));
    assert_eq!(c.position(), Some(EntryId::new(1, 0)));
}

#[tokio::test]
async fn read_and_load_failures_back_off_and_recover() {
    let mut reader = MockStreamReader::new();
    no_info(&mut reader);
    let mut calls = 0;
    reader.expect_read_after().returning(move |_, _, _, _| {
        calls += 1;
        if calls <= 2 {
            Err(unavailable())
        } else {
            Ok(vec![])
        }
    });
    let mut offsets = MockStreamOffsetStore::new();
    let mut loads = 0;
    offsets.expect_load().returning(move |_| {
        loads += 1;
        if loads == 1 {
            Err(unavailable())
        } else {
            Ok(None)
        }
    });
    let (mut c, metrics, health) = consumer(reader, offsets, Recorder::default());
    assert!(matches!(
        c.step().await,
        Step::Retry {
            stage: Stage::LoadOffset,
            ..
        }
    ));
    assert!(matches!(
        c.step().await,
        Step::Retry {
            stage: Stage::Read,
            ..
        }
    ));
    assert!(health.check().is_err());
    let Step::Retry { delay, .. } = c.step().await else {
        panic!("expected a retry")
    };
    // Third consecutive failure: ceiling 400 ms, so at least 200 ms.
    assert!(delay >= Duration::from_millis(200), "{delay:?}");
    assert_eq!(c.step().await, Step::Idle);
    assert!(health.check().is_ok());
    assert_eq!(metrics.retries("test", "read"), 2);
    assert_eq!(metrics.retries("test", "load_offset"), 1);
}

#[tokio::test]
async fn a_failed_offset_save_is_retried_without_handling_the_batch_again() {
    let mut reader = MockStreamReader::new();
    no_info(&mut reader);
    let mut reads = 0;
    reader.expect_read_after().returning(move |_, after, _, _| {
        reads += 1;
        match reads {
            1 => Ok(entries(&[(1, 0), (2, 0)])),
            _ => {
                assert_eq!(after, EntryId::new(2, 0));
                Ok(vec![])
            }
        }
    });
    let mut offsets = MockStreamOffsetStore::new();
    offsets.expect_load().returning(|_| Ok(None));
    let mut saves = 0;
    offsets.expect_save().returning(move |_, id| {
        assert_eq!(id, EntryId::new(2, 0));
        saves += 1;
        if saves == 1 {
            Err(unavailable())
        } else {
            Ok(())
        }
    });
    let handler = Recorder::default();
    let seen = handler.seen.clone();
    let (mut c, _, _) = consumer(reader, offsets, handler);
    assert!(matches!(c.step().await, Step::Handled { entries: 2, .. }));
    // The save before waiting for more fails: nothing is read or handled meanwhile.
    assert!(matches!(
        c.step().await,
        Step::Retry {
            stage: Stage::SaveOffset,
            ..
        }
    ));
    assert_eq!(c.step().await, Step::Idle);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_stored_offset_below_trimmed_entries_is_detected_once_and_reading_goes_on() {
    let mut reader = MockStreamReader::new();
    reader.expect_info().returning(|_| {
        Ok(Some(StreamInfo {
            length: 3,
            first_entry: Some(EntryId::new(20, 0)),
            last_generated: EntryId::new(30, 0),
            max_deleted: Some(EntryId::new(19, 0)),
        }))
    });
    reader
        .expect_read_after()
        .with(always(), eq(EntryId::new(5, 0)), always(), always())
        .times(1)
        .returning(|_, _, _, _| Ok(entries(&[(20, 0)])));
    reader
        .expect_read_after()
        .with(always(), eq(EntryId::new(20, 0)), always(), always())
        .returning(|_, _, _, _| Ok(vec![]));
    let mut offsets = MockStreamOffsetStore::new();
    offsets
        .expect_load()
        .returning(|_| Ok(Some(EntryId::new(5, 0))));
    offsets.expect_save().returning(|_, _| Ok(()));
    let (mut c, metrics, _) = consumer(reader, offsets, Recorder::default());
    assert!(matches!(c.step().await, Step::Handled { entries: 1, .. }));
    assert_eq!(metrics.trimmed("test"), 1);
    assert_eq!(metrics.lag_ms("test"), 25);
    assert_eq!(c.step().await, Step::Idle);
    assert_eq!(metrics.trimmed("test"), 1);
}

/// One step of an idle consumer whose stored offset is `stored` on a stream whose head
/// is `first` (nothing deleted by id, as Redis 7.0 reports after `XTRIM`): the trims
/// counted.
async fn trims_seen(stored: EntryId, first: EntryId) -> u64 {
    let mut reader = MockStreamReader::new();
    reader.expect_info().returning(move |_| {
        Ok(Some(StreamInfo {
            length: 2,
            first_entry: Some(first),
            last_generated: EntryId::new(21, 0),
            max_deleted: None,
        }))
    });
    reader
        .expect_read_after()
        .returning(|_, _, _, _| Ok(vec![]));
    let mut offsets = MockStreamOffsetStore::new();
    offsets.expect_load().returning(move |_| Ok(Some(stored)));
    let (mut c, metrics, _) = consumer(reader, offsets, Recorder::default());
    assert_eq!(c.step().await, Step::Idle);
    metrics.trimmed("test")
}

#[tokio::test]
async fn trimming_seen_only_as_a_moved_head_is_detected_too() {
    assert_eq!(trims_seen(EntryId::new(5, 0), EntryId::new(20, 0)).await, 1);
}

#[tokio::test]
async fn a_head_right_after_the_offset_is_not_a_detection() {
    assert_eq!(trims_seen(EntryId::new(5, 0), EntryId::new(5, 1)).await, 0);
}

#[tokio::test]
async fn a_consumer_at_the_very_start_of_a_trimmed_stream_is_not_a_detection() {
    assert_eq!(trims_seen(EntryId::ZERO, EntryId::new(20, 0)).await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_fresh_consumer_on_a_trimmed_stream_is_not_a_detection() {
    let mut reader = MockStreamReader::new();
    reader.expect_info().returning(|_| {
        Ok(Some(StreamInfo {
            length: 1,
            first_entry: Some(EntryId::new(20, 0)),
            last_generated: EntryId::new(20, 0),
            max_deleted: Some(EntryId::new(19, 0)),
        }))
    });
    reader
        .expect_read_after()
        .returning(|_, _, _, _| Ok(vec![]));
    let mut offsets = MockStreamOffsetStore::new();
    offsets.expect_load().returning(|_| Ok(None));
    let (mut c, metrics, _) = consumer(reader, offsets, Recorder::default());
    assert_eq!(c.step().await, Step::Idle);
    // Later probes, still at 0-0 (say the handler is failing), do not misfire either.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(c.step().await, Step::Idle);
    assert_eq!(metrics.trimmed("test"), 0);
}

/// A reader that blocks like `XREAD BLOCK` and then returns one scripted batch.
struct SlowReader {
    batches: Mutex<VecDeque<Vec<StreamEntry>>>,
}

#[async_trait]
impl StreamReader for SlowReader {
    async fn read_after(
        &self,
        _: &str,
        _: EntryId,
        _: usize,
        block: Duration,
    ) -> Result<Vec<StreamEntry>, StreamError> {
        let next = self.batches.lock().unwrap().pop_front();
        match next {
            Some(batch) => Ok(batch),
            None => {
                tokio::time::sleep(block).await;
                Ok(vec![])
            }
        }
    }

    async fn info(&self, _: &str) -> Result<Option<StreamInfo>, StreamError> {
        Ok(None)
    }
}

#[tokio::test(start_paused = true)]
async fn run_stops_promptly_and_saves_the_offset_of_the_batch_in_flight() {
    let reader = SlowReader {
        batches: Mutex::new(VecDeque::from([entries(&[(1, 0), (2, 0)])])),
    };
    let mut offsets = MockStreamOffsetStore::new();
    offsets.expect_load().returning(|_| Ok(None));
    let saved = Arc::new(Mutex::new(Vec::new()));
    let saved_in = saved.clone();
    offsets.expect_save().returning(move |_, id| {
        saved_in.lock().unwrap().push(id);
        Ok(())
    });
    let cancel = CancellationToken::new();
    let mut handler = Recorder::default();
    // The stop request arrives while the batch is in the handler.
    let cancel_in = cancel.clone();
    handler.script.push_back(Box::new(move |batch| {
        cancel_in.cancel();
        BatchOutcome::done(batch.len())
    }));
    let mut cfg = config();
    cfg.block = Duration::from_secs(5);
    let c = Consumer::new(
        reader,
        offsets,
        handler,
        cfg,
        ConsumerMetrics::default(),
        ConsumerHealth::default(),
    );
    let started = tokio::time::Instant::now();
    c.run(cancel).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(*saved.lock().unwrap(), vec![EntryId::new(2, 0)]);
}

#[tokio::test(start_paused = true)]
async fn run_stops_during_a_blocking_read_without_waiting_for_it() {
    let reader = SlowReader {
        batches: Mutex::new(VecDeque::new()),
    };
    let mut offsets = MockStreamOffsetStore::new();
    offsets.expect_load().returning(|_| Ok(None));
    offsets.expect_save().never();
    let mut cfg = config();
    cfg.block = Duration::from_secs(60);
    let c = Consumer::new(
        reader,
        offsets,
        Recorder::default(),
        cfg,
        ConsumerMetrics::default(),
        ConsumerHealth::default(),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(c.run(cancel.clone()));
    tokio::time::sleep(Duration::from_millis(10)).await;
    cancel.cancel();
    let started = tokio::time::Instant::now();
    task.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn run_waits_the_backoff_between_retries() {
    let mut reader = MockStreamReader::new();
    no_info(&mut reader);
    let times = Arc::new(Mutex::new(Vec::new()));
    let times_in = times.clone();
    let cancel = CancellationToken::new();
    let cancel_in = cancel.clone();
    reader.expect_read_after().returning(move |_, _, _, _| {
        let mut t = times_in.lock().unwrap();
        t.push(tokio::time::Instant::now());
        if t.len() == 5 {
            cancel_in.cancel();
        }
        Err(unavailable())
    });
    let mut offsets = MockStreamOffsetStore::new();
    offsets.expect_load().returning(|_| Ok(None));
    let (c, _, _) = consumer(reader, offsets, Recorder::default());
    c.run(cancel).await;
    let t = times.lock().unwrap();
    let gaps: Vec<Duration> = t.windows(2).map(|w| w[1] - w[0]).collect();
    // Ceilings 100, 200, 400, 800 ms (cap 1 s); each wait is in the upper half.
    for (gap, ceiling) in gaps.iter().zip([100u64, 200, 400, 800]) {
        let ceiling = Duration::from_millis(ceiling);
        assert!(
            *gap >= ceiling / 2 && *gap <= ceiling,
            "{gap:?} vs {ceiling:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_unpinned_refusal_holds_the_stream_for_the_hold_then_skips_that_entry_alone() {
    let mut reader = MockStreamReader::new();
    no_info(&mut reader);
    nothing_ahead(&mut reader);
    reader
        .expect_read_after()
        .withf(blocking())
        .times(1)
        .returning(|_, _, _, _| Ok(entries(&[(1, 0), (2, 0), (3, 0)])));
    let mut offsets = MockStreamOffsetStore::new();
    offsets.expect_load().returning(|_| Ok(None));
    offsets.expect_save().returning(|_, _| Ok(()));
    let mut handler = Recorder::default();
    // First entry finished, the second refused on every try; then the rest is done.
    for _ in 0..3 {
        handler.script.push_back(Box::new(|batch| {
            let skip = usize::from(batch[0].id == EntryId::new(1, 0));
            BatchOutcome::refused(skip, "careers refused: numeric value out of range")
        }));
    }
    let mut config = config();
    config.refusal_hold = Duration::from_secs(10);
    let (mut c, metrics, health) = consumer_with(reader, offsets, handler, config);

    // Held: retried with backoff, readiness names the entry and the hold.
    assert!(matches!(
        c.step().await,
        Step::Retry {
            stage: Stage::Handle,
            ..
        }
    ));
    assert_eq!(c.position(), Some(EntryId::new(1, 0)));
    let reason = health.check().expect_err("not ready while held");
    assert!(reason.contains("entry 2-0 refused, held"), "{reason}");
    assert!(reason.contains("numeric value out of range"), "{reason}");
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(matches!(
        c.step().await,
        Step::Retry {
            stage: Stage::Handle,
            ..
        }
    ));
    assert_eq!(metrics.abandoned("test"), 0);

    // Past the hold: the refused entry alone is skipped and the handler told.
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(
        c.step().await,
        Step::Handled {
            entries: 1,
            offset: EntryId::new(2, 0)
        }
    );
    assert!(health.check().is_ok());
    assert_eq!(metrics.abandoned("test"), 1);
    assert_eq!(c.handler().abandoned.len(), 1);
    assert_eq!(c.handler().abandoned[0].0, EntryId::new(2, 0));
    assert!(c.handler().abandoned[0].1.contains("out of range"));

    // The entry after it is handled as usual.
    assert_eq!(
        c.step().await,
        Step::Handled {
            entries: 1,
            offset: EntryId::new(3, 0)
        }
    );
    let seen = c.handler().seen.lock().unwrap().clone();
    assert_eq!(seen.last(), Some(&vec![EntryId::new(3, 0)]));
    assert_eq!(metrics.entries("test"), 3);
}

/// A dead-letter stream in memory that writes into a shared log, beside the offset saves,
/// so a test sees their order; `fail` calls fail first.
#[derive(Clone, Default)]
struct Letters {
    log: Arc<Mutex<Vec<String>>>,
    kept: Arc<Mutex<Vec<contracts::dead_letters::DeadLetter>>>,
    fail: Arc<Mutex<usize>>,
}

#[async_trait]
impl DeadLetterSink for Letters {
    async fn keep(
        &self,
        letters: &[contracts::dead_letters::DeadLetter],
    ) -> Result<(), StreamError> {
        let mut fail = self.fail.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(unavailable());
        }
        for letter in letters {
            self.log
                .lock()
                .unwrap()
                .push(format!("keep {}", letter.source_id));
        }
        self.kept.lock().unwrap().extend_from_slice(letters);
        Ok(())
    }
}

#[tokio::test]
async fn skipped_entries_are_kept_raw_before_the_offset_moves_past_them_and_a_failure_holds_it() {
    let mut reader = MockStreamReader::new();
    no_info(&mut reader);
    nothing_ahead(&mut reader);
    let mut first = Some(entries(&[(1, 0), (2, 0)]));
    reader
        .expect_read_after()
        .withf(blocking())
        .returning(move |_, _, _, _| Ok(first.take().unwrap_or_default()));
    let letters = Letters::default();
    *letters.fail.lock().unwrap() = 1;
    let mut offsets = MockStreamOffsetStore::new();
    offsets.expect_load().returning(|_| Ok(None));
    let log = letters.log.clone();
    offsets.expect_save().returning(move |_, id| {
        log.lock().unwrap().push(format!("save {id}"));
        Ok(())
    });
    let mut handler = Recorder::default();
    handler.script.push_back(Box::new(|_| {
        BatchOutcome::done(2).with_dead_letters(vec![(EntryId::new(2, 0), "bad game".into())])
    }));
    let (c, metrics, _) = consumer(reader, offsets, handler);
    let mut c = c.with_dead_letters(letters.clone());
    assert!(matches!(c.step().await, Step::Handled { entries: 2, .. }));
    // The sink is down: the offset is not stored past the skipped entry.
    assert!(matches!(
        c.step().await,
        Step::Retry {
            stage: Stage::DeadLetter,
            ..
        }
    ));
    assert!(letters.log.lock().unwrap().is_empty());
    assert_eq!(c.step().await, Step::Idle);
    assert_eq!(*letters.log.lock().unwrap(), ["keep 2-0", "save 2-0"]);
    let kept = letters.kept.lock().unwrap()[0].clone();
    assert_eq!(
        (kept.source_stream.as_str(), kept.reason.as_str()),
        ("s", "bad game")
    );
    assert_eq!(kept.fields, [(b"k".to_vec(), b"v".to_vec())]);
    assert_eq!(
        metrics
            .dead_letters
            .get_or_create(&crate::metrics::label("test"))
            .get(),
        1
    );
}

#[tokio::test]
async fn an_entry_abandoned_past_the_refusal_hold_is_a_dead_letter_too() {
    let mut reader = MockStreamReader::new();
    no_info(&mut reader);
    nothing_ahead(&mut reader);
    let mut first = Some(entries(&[(1, 0)]));
    reader
        .expect_read_after()
        .withf(blocking())
        .returning(move |_, _, _, _| Ok(first.take().unwrap_or_default()));
    let mut offsets = MockStreamOffsetStore::new();
    offsets.expect_load().returning(|_| Ok(None));
    offsets.expect_save().returning(|_, _| Ok(()));
    let mut handler = Recorder::default();
    handler.script.push_back(Box::new(|_| {
        BatchOutcome::refused(0, "guard row unreadable")
    }));
    let mut config = config();
    config.refusal_hold = Duration::ZERO;
    let (c, _, _) = consumer_with(reader, offsets, handler, config);
    let letters = Letters::default();
    let mut c = c.with_dead_letters(letters.clone());
    assert!(matches!(c.step().await, Step::Handled { entries: 1, .. }));
    assert_eq!(c.step().await, Step::Idle);
    let kept = letters.kept.lock().unwrap().clone();
    assert_eq!(kept.len(), 1);
    assert!(
        kept[0].reason.contains("guard row unreadable"),
        "{}",
        kept[0].reason
    );
}

#[tokio::test]
async fn a_rewind_finishes_what_the_handler_finished_then_reads_again_after_the_entry_given() {
    let streams = crate::memory::MemoryStreams::default();
    for _ in 0..5 {
        streams.append("s", &[("k", "v")]);
    }
    let mut handler = Recorder::default();
    // The first batch: two entries finished, then the reading goes back to 1-0.
    handler
        .script
        .push_back(Box::new(|_| BatchOutcome::rewind(2, EntryId::new(1, 0))));
    let seen = handler.seen.clone();
    let metrics = ConsumerMetrics::default();
    let mut c = Consumer::new(
        streams.clone(),
        streams.clone(),
        handler,
        config(),
        metrics.clone(),
        ConsumerHealth::default(),
    );
    assert_eq!(
        c.step().await,
        Step::Handled {
            entries: 2,
            offset: EntryId::new(1, 0)
        },
        "the position is where the rewind put it"
    );
    assert!(matches!(c.step().await, Step::Handled { entries: 4, .. }));
    let ids = |ms: &[u64]| ms.iter().map(|&m| EntryId::new(m, 0)).collect::<Vec<_>>();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![ids(&[1, 2, 3, 4, 5]), ids(&[2, 3, 4, 5])],
        "entries after the rewind's entry are handed again, nothing else"
    );
    assert_eq!(c.position(), Some(EntryId::new(5, 0)));
    assert_eq!(
        metrics.retries("test", "handle"),
        0,
        "a rewind is no failure"
    );
}

#[tokio::test]
async fn a_handler_may_move_the_position_back_before_a_read() {
    let streams = crate::memory::MemoryStreams::default();
    for _ in 0..3 {
        streams.append("s", &[("k", "v")]);
    }
    let handler = Recorder::default();
    let (seen, read_from) = (handler.seen.clone(), handler.read_from.clone());
    let mut c = Consumer::new(
        streams.clone(),
        streams.clone(),
        handler,
        config(),
        ConsumerMetrics::default(),
        ConsumerHealth::default(),
    );
    assert!(matches!(c.step().await, Step::Handled { entries: 3, .. }));
    assert_eq!(c.step().await, Step::Idle);
    // The handler took over work whose entries it passed: it asks for those after 1-0.
    *read_from.lock().unwrap() = Some(EntryId::new(1, 0));
    assert!(matches!(c.step().await, Step::Handled { entries: 2, .. }));
    let ids = |ms: &[u64]| ms.iter().map(|&m| EntryId::new(m, 0)).collect::<Vec<_>>();
    assert_eq!(*seen.lock().unwrap(), vec![ids(&[1, 2, 3]), ids(&[2, 3])]);
    assert_eq!(
        streams.offset("test"),
        Some(EntryId::new(1, 0)),
        "stored as it moved"
    );
}
