#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use contracts::wire::DecodeError;
use domain_runtime::{
    EngineHealth, HealthEventType, HealthState, RuntimeRecord, RuntimeStatus, apply_plan,
    transition,
};
use ports::{MockLobbyEventsPublisher, MockRuntimeRecordStore};

use super::*;

const NOW: u64 = 1_800_000_000_000;

/// What driving a batch to the end gave: entries finished, and the failure that stopped it.
struct Driven {
    finished: usize,
    failure: Option<stream_consumer::BoxError>,
}

/// Hands `batch` to the worker the way the runtime does: unfinished entries come back
/// until all are finished or a call fails (a batch's snapshots are published in the
/// background and finished by the following call).
async fn drive<H: BatchHandler>(worker: &mut H, batch: &[StreamEntry]) -> Driven {
    let mut finished = 0;
    loop {
        let outcome = worker.handle(&batch[finished..]).await;
        finished += outcome.finished;
        if outcome.failure.is_some() || !outcome.in_flight {
            return Driven {
                finished,
                failure: outcome.failure,
            };
        }
    }
}

/// Every shard of the default layout, claimed under epoch 1, none applied yet.
fn owner() -> Ownership {
    owner_at(None)
}

/// [`owner`], with every shard's checkpoint at `checkpoint`.
fn owner_at(checkpoint: Option<domain_runtime::EntryPosition>) -> Ownership {
    let count = domain_runtime::ShardCount::default();
    Ownership::new(
        count,
        count.all().map(|shard| domain_runtime::ShardClaim {
            shard,
            epoch: 1,
            checkpoint,
            published: None,
        }),
    )
}

fn gid(s: &str) -> GameId {
    GameId::new(s).unwrap()
}

fn entry(seq: u64, pairs: &[(&str, &[u8])]) -> StreamEntry {
    StreamEntry::from_pairs(EntryId::new(1, seq), pairs)
}

fn event(seq: u64, game: &str, event_type: &str) -> StreamEntry {
    entry(
        seq,
        &[
            ("game_id", game.as_bytes()),
            ("container_id", b"c-1"),
            ("event_type", event_type.as_bytes()),
            ("occurred_at_ms", b"1700000000000"),
            ("details", b"{}"),
        ],
    )
}

/// A store fake that behaves like the real one: it folds observations over in-memory
/// records with the domain's `apply_plan`.
fn store_over(
    records: Arc<Mutex<HashMap<GameId, HealthState>>>,
    calls: Arc<Mutex<usize>>,
) -> MockRuntimeRecordStore {
    store_gated(records, calls, |_, _| None)
}

/// What the fake store holds per shard, as the real one does (every shard under epoch 1).
#[derive(Debug, Default, Clone)]
struct FakeShard {
    checkpoint: Option<domain_runtime::EntryPosition>,
    published: Option<domain_runtime::EntryPosition>,
    /// The snapshots kept after the published mark.
    kept: Vec<RuntimeSnapshot>,
}

impl FakeShard {
    /// A write reached `through` with `mark`: both move up, and the mark drops what it
    /// passes.
    fn write(
        &mut self,
        through: domain_runtime::EntryPosition,
        mark: Option<domain_runtime::EntryPosition>,
    ) {
        self.checkpoint = self.checkpoint.max(Some(through));
        self.published = self.published.max(mark);
        let published = self.published;
        self.kept.retain(|k| k.source_entry_id > published);
    }
}

/// The fake store's shards, shared by the workers of one test.
type FakeShards = Arc<Mutex<HashMap<u32, FakeShard>>>;

/// [`store_over`], with `gate` deciding first whether call number `n` (from 1) fails, and
/// how; a failed call writes nothing, as one transaction would.
fn store_gated(
    records: Arc<Mutex<HashMap<GameId, HealthState>>>,
    calls: Arc<Mutex<usize>>,
    gate: impl Fn(&[HealthObservation], usize) -> Option<ports::Error> + Send + 'static,
) -> MockRuntimeRecordStore {
    store_sharing(records, FakeShards::default(), calls, gate)
}

/// [`store_gated`] on `shards`. Like the real store it moves each shard's checkpoint and
/// published mark with a write, keeps the snapshots of the observations that publish
/// with their shards, and reads records, checkpoints and kept snapshots back.
fn store_sharing(
    records: Arc<Mutex<HashMap<GameId, HealthState>>>,
    shards: FakeShards,
    calls: Arc<Mutex<usize>>,
    gate: impl Fn(&[HealthObservation], usize) -> Option<ports::Error> + Send + 'static,
) -> MockRuntimeRecordStore {
    let mut store = MockRuntimeRecordStore::new();
    let (written, fold) = (shards.clone(), records.clone());
    store
        .expect_apply_health_batch()
        .returning(move |obs, news, owner| {
            let n = {
                let mut calls = calls.lock().unwrap();
                *calls += 1;
                *calls
            };
            if let Some(error) = gate(obs, n) {
                return Err(error);
            }
            let results = fold_over(&fold, obs, news);
            keep(&mut written.lock().unwrap(), obs, &results, owner);
            Ok(results)
        });
    let read = shards.clone();
    store.expect_read_shards().returning(move |wanted| {
        let shards = read.lock().unwrap();
        Ok(wanted
            .iter()
            .map(|&shard| {
                let stored = shards.get(&shard).cloned().unwrap_or_default();
                domain_runtime::ShardClaim {
                    shard,
                    epoch: 1,
                    checkpoint: stored.checkpoint,
                    published: stored.published,
                }
            })
            .collect())
    });
    let advanced = shards.clone();
    store
        .expect_advance_checkpoints()
        .returning(move |marks, through| {
            let mut shards = advanced.lock().unwrap();
            for mark in marks {
                shards
                    .entry(mark.shard)
                    .or_default()
                    .write(through, mark.published);
            }
            Ok(Vec::new())
        });
    store.expect_unpublished().returning(move |wanted| {
        let shards = shards.lock().unwrap();
        let mut kept: Vec<RuntimeSnapshot> = wanted
            .iter()
            .filter_map(|s| shards.get(s))
            .flat_map(|s| s.kept.iter().cloned())
            .collect();
        kept.sort_by_key(|k| k.source_entry_id);
        Ok(kept)
    });
    let summaries = records.clone();
    store.expect_summaries().returning(move || {
        let records = summaries.lock().unwrap();
        Ok(records
            .iter()
            .map(|(id, state)| (id.clone(), state.engine_health))
            .collect())
    });
    store.expect_get_many().returning(move |ids| {
        let records = records.lock().unwrap();
        Ok(ids
            .iter()
            .filter_map(|id| records.get(id).map(|state| record(id, *state)))
            .collect())
    });
    store
}

/// The fake store's write on its shards: checkpoints, marks, kept snapshots.
fn keep(
    shards: &mut HashMap<u32, FakeShard>,
    obs: &[HealthObservation],
    results: &[ObservationResult],
    owner: &Ownership,
) {
    for o in obs {
        shards
            .entry(o.shard)
            .or_default()
            .write(o.entry, owner.mark(o.shard));
    }
    for (o, result) in obs.iter().zip(results) {
        if let ObservationResult::Applied {
            record,
            publishes: true,
            ..
        } = result
        {
            shards
                .entry(o.shard)
                .or_default()
                .kept
                .push(snapshot_of(record, o.entry));
        }
    }
}

/// The snapshot of `record` for `entry`, as the store keeps it (no publication time).
fn snapshot_of(record: &RuntimeRecord, entry: domain_runtime::EntryPosition) -> RuntimeSnapshot {
    RuntimeSnapshot {
        game_id: record.game_id.clone(),
        current_turn: record.current_turn,
        runtime_status: record.status,
        engine_health: record.engine_health,
        occurred_at_ms: 0,
        player_turn_stats: Vec::new(),
        source_entry_id: Some(entry),
    }
}

/// `obs` folded over the in-memory records with the domain's `apply_plan`; an observation
/// publishes when `news` says so (missing: no) or its transition is taken.
fn fold_over(
    records: &Mutex<HashMap<GameId, HealthState>>,
    obs: &[HealthObservation],
    news: &[bool],
) -> Vec<ObservationResult> {
    let mut records = records.lock().unwrap();
    obs.iter()
        .enumerate()
        .map(|(i, o)| match records.get_mut(&o.game_id) {
            None => ObservationResult::UnknownGame,
            Some(state) => {
                let out = apply_plan(*state, o.plan);
                *state = out.state;
                ObservationResult::Applied {
                    record: record(&o.game_id, out.state),
                    transitioned: out.transitioned,
                    publishes: news.get(i).copied().unwrap_or(false) || out.transitioned.is_some(),
                }
            }
        })
        .collect()
}

fn record(game_id: &GameId, state: HealthState) -> RuntimeRecord {
    RuntimeRecord {
        game_id: game_id.clone(),
        status: state.status,
        engine_health: state.engine_health,
        current_turn: 7,
        created_at: UNIX_EPOCH,
        updated_at: UNIX_EPOCH,
    }
}

type Published = Arc<Mutex<Vec<LobbyEvent>>>;

fn recording_publisher(published: Published) -> MockLobbyEventsPublisher {
    let mut p = MockLobbyEventsPublisher::new();
    p.expect_publish().returning(move |events| {
        published.lock().unwrap().extend_from_slice(events);
        Ok(())
    });
    p
}

struct Harness {
    records: Arc<Mutex<HashMap<GameId, HealthState>>>,
    /// The fake store's shards, shared by every worker the harness makes.
    shards: FakeShards,
    published: Published,
    applies: Arc<Mutex<usize>>,
    metrics: WorkerMetrics,
    /// The lease keeper's end of a handover, and the worker's until a worker takes it.
    keeper: Mutex<ports::KeeperSide>,
    side: Mutex<Option<ports::WorkerSide>>,
}

impl Harness {
    fn new(games: &[(&str, RuntimeStatus)]) -> Self {
        let records = games
            .iter()
            .map(|(g, s)| {
                (
                    gid(g),
                    HealthState {
                        status: *s,
                        engine_health: None,
                    },
                )
            })
            .collect();
        let (keeper, side) = ports::handover();
        Self {
            records: Arc::new(Mutex::new(records)),
            shards: FakeShards::default(),
            published: Arc::default(),
            applies: Arc::default(),
            metrics: WorkerMetrics::default(),
            keeper: Mutex::new(keeper),
            side: Mutex::new(Some(side)),
        }
    }

    /// The worker's end of the handover (once).
    fn worker_side(&self) -> ports::WorkerSide {
        self.side.lock().unwrap().take().expect("one worker side")
    }

    /// Plays the lease keeper: hands the worker `change`.
    fn keeper_sends(&self, change: OwnershipChange) {
        assert!(self.keeper.lock().unwrap().send(change));
    }

    /// The `source_entry_id` of each snapshot published, in order.
    fn sources(&self) -> Vec<Option<contracts::SourceEntryId>> {
        self.published
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.snapshot().source_entry_id)
            .collect()
    }

    /// The shards the worker let go.
    fn keeper_released(&self) -> Vec<u32> {
        self.keeper.lock().unwrap().released()
    }

    /// The shards the worker reported fenced off.
    fn keeper_fenced(&self) -> Vec<u32> {
        self.keeper.lock().unwrap().fenced()
    }

    fn worker(&self) -> HealthEventsWorker<MockRuntimeRecordStore, MockLobbyEventsPublisher> {
        self.worker_gated(|_, _| None)
    }

    /// [`Self::worker`] on a store whose calls `gate` may fail (see [`store_gated`]).
    fn worker_gated(
        &self,
        gate: impl Fn(&[HealthObservation], usize) -> Option<ports::Error> + Send + 'static,
    ) -> HealthEventsWorker<MockRuntimeRecordStore, MockLobbyEventsPublisher> {
        self.worker_of(owner(), gate)
    }

    /// [`Self::worker_gated`] owning what `owner` holds.
    fn worker_of(
        &self,
        owner: Ownership,
        gate: impl Fn(&[HealthObservation], usize) -> Option<ports::Error> + Send + 'static,
    ) -> HealthEventsWorker<MockRuntimeRecordStore, MockLobbyEventsPublisher> {
        HealthEventsWorker::new(
            store_sharing(
                self.records.clone(),
                self.shards.clone(),
                self.applies.clone(),
                gate,
            ),
            recording_publisher(self.published.clone()),
            Arc::new(|| NOW),
            self.metrics.clone(),
            owner,
        )
    }

    fn published(&self) -> Vec<(String, RuntimeStatus, Option<EngineHealth>)> {
        self.published
            .lock()
            .unwrap()
            .iter()
            .map(|e| {
                let s = e.snapshot();
                (s.game_id.to_string(), s.runtime_status, s.engine_health)
            })
            .collect()
    }
}

#[tokio::test]
async fn every_event_type_on_every_status_writes_publishes_and_counts_per_the_spec() {
    for event_type in HealthEventType::ALL {
        for status in RuntimeStatus::ALL {
            let h = Harness::new(&[("g", status)]);
            let mut w = h.worker();
            let outcome = drive(&mut w, &[event(1, "g", event_type.as_str())]).await;
            assert_eq!(outcome.finished, 1);
            assert!(outcome.failure.is_none());

            let plan = domain_runtime::plan(event_type);
            let expected_status = match plan.transition {
                Some(t) if t.from() == status => t.to(),
                _ => status,
            };
            let state = h.records.lock().unwrap()[&gid("g")];
            assert_eq!(state.status, expected_status, "{event_type} on {status}");
            assert_eq!(state.engine_health, Some(plan.summary));
            // First event per game publishes, with what the store holds.
            assert_eq!(
                h.published(),
                vec![("g".to_owned(), expected_status, Some(plan.summary))],
                "{event_type} on {status}"
            );
            let snapshot = h.published.lock().unwrap()[0].snapshot().clone();
            assert_eq!(snapshot.occurred_at_ms, NOW);
            let source = snapshot.source_entry_id.map(|s| (s.ms, s.seq));
            assert_eq!(source, Some((1, 1)), "it names the entry it reflects");
            assert_eq!(snapshot.current_turn, 7);
            assert!(snapshot.player_turn_stats.is_empty());
            assert_eq!(h.metrics.consumed_count(Outcome::Applied), 1);
            assert_eq!(
                h.metrics
                    .published_count(ports::LobbyEventKind::RuntimeSnapshotUpdate),
                1
            );
            if expected_status != status {
                let t = transition(status, expected_status).unwrap();
                assert_eq!(h.metrics.transition_count(t), 1);
            }
        }
    }
}

#[tokio::test]
async fn every_decode_failure_is_skipped_counted_and_finished() {
    let good = |seq| event(seq, "g", "probe_failed");
    let cases: Vec<(StreamEntry, Outcome)> = vec![
        (
            entry(
                1,
                &[("event_type", b"probe_failed"), ("occurred_at_ms", b"5")],
            ),
            Outcome::Malformed,
        ),
        (
            entry(
                2,
                &[
                    ("game_id", b"  "),
                    ("event_type", b"probe_failed"),
                    ("occurred_at_ms", b"5"),
                ],
            ),
            Outcome::Malformed,
        ),
        (
            entry(3, &[("game_id", b"g"), ("occurred_at_ms", b"5")]),
            Outcome::Malformed,
        ),
        (
            entry(
                4,
                &[
                    ("game_id", b"g"),
                    ("event_type", b""),
                    ("occurred_at_ms", b"5"),
                ],
            ),
            Outcome::Malformed,
        ),
        (
            entry(5, &[("game_id", b"g"), ("event_type", b"probe_failed")]),
            Outcome::Malformed,
        ),
        (
            entry(
                6,
                &[
                    ("game_id", b"g"),
                    ("event_type", b"probe_failed"),
                    ("occurred_at_ms", b"soon"),
                ],
            ),
            Outcome::Malformed,
        ),
        (
            entry(
                7,
                &[
                    ("game_id", b"g"),
                    ("event_type", b"probe_failed"),
                    ("occurred_at_ms", b"0"),
                ],
            ),
            Outcome::Malformed,
        ),
        (
            entry(
                8,
                &[
                    ("game_id", b"g"),
                    ("event_type", b"probe_failed"),
                    ("occurred_at_ms", b"-3"),
                ],
            ),
            Outcome::Malformed,
        ),
        (
            entry(
                9,
                &[
                    ("game_id", b"g"),
                    ("event_type", b"probe_failed"),
                    ("occurred_at_ms", b"18446744073709551616"),
                ],
            ),
            Outcome::Malformed,
        ),
        (
            entry(
                10,
                &[
                    ("game_id", b"\xff\xfe"),
                    ("event_type", b"probe_failed"),
                    ("occurred_at_ms", b"5"),
                ],
            ),
            Outcome::Malformed,
        ),
        (
            entry(
                11,
                &[
                    ("game_id", b"g"),
                    ("event_type", b"container_paused"),
                    ("occurred_at_ms", b"5"),
                ],
            ),
            Outcome::UnknownEventType,
        ),
    ];
    let h = Harness::new(&[("g", RuntimeStatus::Running)]);
    let mut w = h.worker();
    let mut batch: Vec<StreamEntry> = cases.iter().map(|(e, _)| e.clone()).collect();
    batch.push(good(12));
    let outcome = drive(&mut w, &batch).await;
    assert_eq!(outcome.finished, batch.len());
    assert_eq!(h.metrics.consumed_count(Outcome::Malformed), 10);
    assert_eq!(h.metrics.consumed_count(Outcome::UnknownEventType), 1);
    assert_eq!(h.metrics.consumed_count(Outcome::Applied), 1);
    assert_eq!(h.published().len(), 1);
    for (entry, expected) in &cases {
        assert_eq!(
            Outcome::of(&decode(entry).unwrap_err()),
            *expected,
            "{:?}",
            entry.id
        );
    }
    assert!(matches!(
        decode(&cases[8].0),
        Err(SkipReason::Malformed {
            error: DecodeError::NotInteger { .. },
            ..
        })
    ));
}

#[tokio::test]
async fn fields_the_game_master_does_not_read_are_no_reason_to_skip() {
    let h = Harness::new(&[("g", RuntimeStatus::Running)]);
    let mut w = h.worker();
    let odd = [
        entry(
            1,
            &[
                ("game_id", b"g"),
                ("event_type", b"probe_failed"),
                ("occurred_at_ms", b"5"),
            ],
        ),
        entry(
            2,
            &[
                ("game_id", b"g"),
                ("event_type", b"container_oom"),
                ("occurred_at_ms", b"6"),
                ("container_id", b"\xff"),
                ("details", b"\xc3\x28"),
                ("extra", b"x"),
            ],
        ),
    ];
    assert_eq!(drive(&mut w, &odd).await.finished, 2);
    assert_eq!(h.metrics.consumed_count(Outcome::Applied), 2);
}

#[tokio::test]
async fn an_unknown_game_is_skipped_and_counted_without_a_snapshot() {
    let h = Harness::new(&[("known", RuntimeStatus::Running)]);
    let mut w = h.worker();
    let outcome = drive(
        &mut w,
        &[
            event(1, "ghost", "container_oom"),
            event(2, "known", "container_oom"),
        ],
    )
    .await;
    assert_eq!(outcome.finished, 2);
    assert_eq!(h.metrics.consumed_count(Outcome::UnknownGame), 1);
    assert_eq!(
        h.published(),
        vec![(
            "known".into(),
            RuntimeStatus::EngineUnreachable,
            Some(EngineHealth::Oom)
        )]
    );
}

#[tokio::test]
async fn debounce_first_publishes_repeats_are_suppressed_status_changes_publish() {
    let h = Harness::new(&[
        ("g", RuntimeStatus::EngineUnreachable),
        ("h", RuntimeStatus::Running),
    ]);
    let mut w = h.worker();
    // container_started: healthy (first → publish); again: suppressed; probe_recovered:
    // still healthy but the status moves → publish; again: suppressed; probe_failed:
    // summary differs → publish.
    let batch = [
        event(1, "g", "container_started"),
        event(2, "g", "container_started"),
        event(3, "h", "probe_failed"),
    ];
    assert_eq!(drive(&mut w, &batch).await.finished, 3);
    let batch = [
        event(4, "g", "probe_recovered"),
        event(5, "g", "probe_recovered"),
        event(6, "g", "probe_failed"),
        event(7, "h", "probe_failed"),
    ];
    assert_eq!(drive(&mut w, &batch).await.finished, 4);
    use EngineHealth::{Healthy, ProbeFailed};
    use RuntimeStatus::{EngineUnreachable, Running};
    assert_eq!(
        h.published(),
        vec![
            ("g".into(), EngineUnreachable, Some(Healthy)),
            ("h".into(), Running, Some(ProbeFailed)),
            ("g".into(), Running, Some(Healthy)),
            ("g".into(), Running, Some(ProbeFailed)),
        ]
    );
    assert_eq!(h.metrics.consumed_count(Outcome::Applied), 7);
}

#[tokio::test]
async fn a_failed_publish_is_retried_without_reapplying_and_is_not_remembered_until_it_succeeds() {
    let h = Harness::new(&[("g", RuntimeStatus::Running)]);
    let mut publisher = MockLobbyEventsPublisher::new();
    let mut seq = mockall::Sequence::new();
    publisher
        .expect_publish()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Err(ports::Error::Unavailable("connection reset".into())));
    let published = h.published.clone();
    publisher
        .expect_publish()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |e| {
            published.lock().unwrap().extend_from_slice(e);
            Ok(())
        });
    let mut w = HealthEventsWorker::new(
        store_over(h.records.clone(), h.applies.clone()),
        publisher,
        Arc::new(|| NOW),
        h.metrics.clone(),
        owner(),
    );
    let batch = [
        event(1, "g", "container_oom"),
        event(2, "g", "container_exited"),
    ];
    let first = drive(&mut w, &batch).await;
    assert_eq!(first.finished, 0);
    assert!(first.failure.is_some());
    assert_eq!(*h.applies.lock().unwrap(), 1);

    let second = drive(&mut w, &batch).await;
    assert_eq!(second.finished, 2);
    assert!(second.failure.is_none());
    assert_eq!(
        *h.applies.lock().unwrap(),
        1,
        "the batch must not be applied twice"
    );
    assert_eq!(
        h.published(),
        vec![
            (
                "g".into(),
                RuntimeStatus::EngineUnreachable,
                Some(EngineHealth::Oom)
            ),
            (
                "g".into(),
                RuntimeStatus::EngineUnreachable,
                Some(EngineHealth::Exited)
            ),
        ]
    );
    // Only now is `exited` remembered: a repeat is suppressed.
    assert_eq!(
        drive(&mut w, &[event(3, "g", "container_exited")])
            .await
            .finished,
        1
    );
    assert_eq!(h.published().len(), 2);
    assert_eq!(h.metrics.consumed_count(Outcome::Applied), 3);
}

#[tokio::test]
async fn a_failed_publish_with_a_longer_retry_batch_publishes_then_applies_the_rest() {
    let h = Harness::new(&[("g", RuntimeStatus::Running)]);
    let mut publisher = MockLobbyEventsPublisher::new();
    let mut calls = 0;
    let published = h.published.clone();
    publisher.expect_publish().returning(move |e| {
        calls += 1;
        if calls == 1 {
            return Err(ports::Error::Unavailable("down".into()));
        }
        published.lock().unwrap().extend_from_slice(e);
        Ok(())
    });
    let mut w = HealthEventsWorker::new(
        store_over(h.records.clone(), h.applies.clone()),
        publisher,
        Arc::new(|| NOW),
        h.metrics.clone(),
        owner(),
    );
    assert_eq!(
        drive(&mut w, &[event(1, "g", "probe_failed")])
            .await
            .finished,
        0
    );
    let longer = [
        event(1, "g", "probe_failed"),
        event(2, "g", "container_started"),
    ];
    assert_eq!(drive(&mut w, &longer).await.finished, 2);
    assert_eq!(*h.applies.lock().unwrap(), 2);
    assert_eq!(h.published().len(), 2);
}

#[tokio::test]
async fn a_store_failure_holds_the_whole_batch_and_publishes_nothing() {
    let mut store = MockRuntimeRecordStore::new();
    store
        .expect_apply_health_batch()
        .returning(|_, _, _| Err(ports::Error::Unavailable("pool timed out".into())));
    store.expect_unpublished().returning(|_| Ok(Vec::new()));
    let mut publisher = MockLobbyEventsPublisher::new();
    publisher.expect_publish().never();
    let metrics = WorkerMetrics::default();
    let mut w =
        HealthEventsWorker::new(store, publisher, Arc::new(|| NOW), metrics.clone(), owner());
    let outcome = drive(
        &mut w,
        &[
            entry(1, &[("game_id", b"")]),
            event(2, "g", "container_oom"),
        ],
    )
    .await;
    assert_eq!(outcome.finished, 0);
    assert!(
        outcome
            .failure
            .unwrap()
            .to_string()
            .contains("pool timed out")
    );
    // Nothing is counted until the batch is finished, so a retry counts each entry once.
    assert_eq!(metrics.consumed_count(Outcome::Malformed), 0);
    assert_eq!(metrics.consumed_count(Outcome::Applied), 0);
}

#[tokio::test]
async fn a_batch_of_only_bad_entries_never_writes_to_the_store() {
    let mut store = MockRuntimeRecordStore::new();
    store.expect_apply_health_batch().never();
    // Only the start's read of what the shards kept unpublished.
    store
        .expect_unpublished()
        .times(1)
        .returning(|_| Ok(Vec::new()));
    let mut publisher = MockLobbyEventsPublisher::new();
    publisher.expect_publish().never();
    let metrics = WorkerMetrics::default();
    let mut w =
        HealthEventsWorker::new(store, publisher, Arc::new(|| NOW), metrics.clone(), owner());
    assert_eq!(drive(&mut w, &[entry(1, &[("x", b"y")])]).await.finished, 1);
    assert_eq!(metrics.consumed_count(Outcome::Malformed), 1);
}

/// Refuses, like PostgreSQL would, any call that carries a game id starting with "bad".
fn refuses_bad(obs: &[HealthObservation]) -> Option<ports::Error> {
    obs.iter()
        .any(|o| o.game_id.as_str().starts_with("bad"))
        .then(|| ports::Error::Refused("invalid byte sequence for encoding \"UTF8\"".into()))
}

#[tokio::test]
async fn entries_the_database_refuses_are_pinned_skipped_and_counted_the_rest_applied_once() {
    let h = Harness::new(&[
        ("g1", RuntimeStatus::Running),
        ("g2", RuntimeStatus::Running),
        ("bad1", RuntimeStatus::Running),
    ]);
    let mut w = h.worker_gated(|obs, _| refuses_bad(obs));
    let batch = [
        event(1, "g1", "container_exited"),
        event(2, "bad1", "container_exited"),
        entry(3, &[("game_id", b"")]),
        event(4, "g2", "probe_failed"),
        event(5, "bad2", "probe_failed"),
        event(6, "g1", "probe_recovered"),
    ];
    let driven = drive(&mut w, &batch).await;
    assert!(driven.failure.is_none());
    assert_eq!(driven.finished, batch.len());
    assert_eq!(h.metrics.consumed_count(Outcome::Refused), 2);
    assert_eq!(h.metrics.consumed_count(Outcome::Malformed), 1);
    assert_eq!(h.metrics.consumed_count(Outcome::Applied), 3);
    // The valid entries' effects, in stream order, as if the refused ones were not there.
    assert_eq!(
        h.published(),
        [
            (
                "g1".into(),
                RuntimeStatus::EngineUnreachable,
                Some(EngineHealth::Exited)
            ),
            (
                "g2".into(),
                RuntimeStatus::Running,
                Some(EngineHealth::ProbeFailed)
            ),
            (
                "g1".into(),
                RuntimeStatus::Running,
                Some(EngineHealth::Healthy)
            ),
        ]
    );
    let records = h.records.lock().unwrap();
    assert_eq!(
        records[&gid("bad1")].engine_health,
        None,
        "nothing written for it"
    );
    assert_eq!(records[&gid("g1")].status, RuntimeStatus::Running);
}

#[tokio::test]
async fn a_transient_failure_while_isolating_keeps_what_was_committed_and_never_applies_it_again() {
    let h = Harness::new(&[
        ("g1", RuntimeStatus::Running),
        ("g2", RuntimeStatus::Running),
    ]);
    // Call 1 (whole batch) refused, call 2 (first half) applied, call 3 (second half)
    // finds the database gone; from then on it is back.
    let mut w = h.worker_gated(|obs, n| match n {
        3 => Some(ports::Error::Unavailable("connection reset".into())),
        _ => refuses_bad(obs),
    });
    let batch = [
        event(1, "g1", "container_exited"),
        event(2, "g2", "probe_failed"),
        event(3, "bad", "probe_failed"),
        event(4, "g2", "container_started"),
    ];
    let first = drive(&mut w, &batch).await;
    assert!(
        first
            .failure
            .is_some_and(|e| e.to_string().contains("connection reset"))
    );
    assert_eq!(
        first.finished, 0,
        "the committed half is finished with its publish"
    );
    let second = drive(&mut w, &batch[first.finished..]).await;
    assert!(second.failure.is_none());
    assert_eq!(first.finished + second.finished, batch.len());
    // g1's exit was applied once: applied twice, its transition would not show again.
    assert_eq!(
        h.published(),
        [
            (
                "g1".into(),
                RuntimeStatus::EngineUnreachable,
                Some(EngineHealth::Exited)
            ),
            (
                "g2".into(),
                RuntimeStatus::Running,
                Some(EngineHealth::ProbeFailed)
            ),
            (
                "g2".into(),
                RuntimeStatus::Running,
                Some(EngineHealth::Healthy)
            ),
        ]
    );
    assert_eq!(h.metrics.consumed_count(Outcome::Applied), 3);
    assert_eq!(h.metrics.consumed_count(Outcome::Refused), 1);
    let exit = transition(RuntimeStatus::Running, RuntimeStatus::EngineUnreachable).unwrap();
    assert_eq!(h.metrics.transition_count(exit), 1);
}

#[tokio::test]
async fn a_refused_entrys_summary_does_not_count_as_published_for_the_next_one() {
    let h = Harness::new(&[("g", RuntimeStatus::Running)]);
    // The Lobby has inspect_unhealthy from entry 1. Entry 3 is refused; entry 4 repeats
    // its summary, which after entry 2 is news again.
    let mut w = h.worker_gated(|obs, _| {
        obs.iter()
            .any(|o| o.entry.seq == 3)
            .then(|| ports::Error::Refused("value too long".into()))
    });
    assert_eq!(
        drive(&mut w, &[event(1, "g", "inspect_unhealthy")])
            .await
            .finished,
        1
    );
    let batch = [
        event(2, "g", "probe_failed"),
        event(3, "g", "inspect_unhealthy"),
        event(4, "g", "inspect_unhealthy"),
    ];
    assert_eq!(drive(&mut w, &batch).await.finished, 3);
    let summaries: Vec<Option<EngineHealth>> = h.published().into_iter().map(|p| p.2).collect();
    assert_eq!(
        summaries,
        [
            Some(EngineHealth::InspectUnhealthy),
            Some(EngineHealth::ProbeFailed),
            Some(EngineHealth::InspectUnhealthy)
        ]
    );
    let id = |seq| Some(contracts::SourceEntryId { ms: 1, seq });
    assert_eq!(h.sources(), [id(1), id(2), id(4)]);
    assert_eq!(h.metrics.consumed_count(Outcome::Refused), 1);
}

#[tokio::test]
async fn a_game_refused_before_is_tried_alone_so_its_next_refusal_costs_no_search() {
    let h = Harness::new(&[
        ("g1", RuntimeStatus::Running),
        ("g2", RuntimeStatus::Running),
        ("g3", RuntimeStatus::Running),
        ("g4", RuntimeStatus::Running),
    ]);
    let mut w = h.worker_gated(|obs, _| refuses_bad(obs));
    let batch = |seq: u64| {
        [
            event(seq, "g1", "probe_failed"),
            event(seq + 1, "g2", "probe_failed"),
            event(seq + 2, "bad", "probe_failed"),
            event(seq + 3, "g3", "probe_failed"),
            event(seq + 4, "g4", "probe_failed"),
        ]
    };
    assert!(drive(&mut w, &batch(1)).await.failure.is_none());
    // The search: all five, then [g1 g2], [bad g3 g4], [bad], [g3 g4].
    assert_eq!(std::mem::take(&mut *h.applies.lock().unwrap()), 5);
    assert!(drive(&mut w, &batch(10)).await.failure.is_none());
    // Known now: [g1 g2], [bad], [g3 g4].
    assert_eq!(*h.applies.lock().unwrap(), 3);
    assert_eq!(h.metrics.consumed_count(Outcome::Refused), 2);
    assert_eq!(h.metrics.consumed_count(Outcome::Applied), 8);
}

#[tokio::test]
async fn entries_at_their_checkpoint_are_not_applied_again_and_the_kept_snapshots_go_out_first() {
    let h = Harness::new(&[("g", RuntimeStatus::EngineUnreachable)]);
    let state = HealthState {
        status: RuntimeStatus::EngineUnreachable,
        engine_health: Some(EngineHealth::Oom),
    };
    *h.records.lock().unwrap().get_mut(&gid("g")).unwrap() = state;
    // The previous owner committed entries 1 and 2 and published entry 1's snapshot only
    // (the store still keeps entry 2's).
    let at = |seq| domain_runtime::EntryPosition { ms: 1, seq };
    let shard = domain_runtime::ShardCount::default().shard_of(b"g");
    h.shards.lock().unwrap().insert(
        shard,
        FakeShard {
            checkpoint: Some(at(2)),
            published: Some(at(1)),
            kept: vec![snapshot_of(&record(&gid("g"), state), at(2))],
        },
    );
    let applied: Arc<Mutex<Vec<u64>>> = Arc::default();
    let seen = applied.clone();
    let mut w = h.worker_of(owner_at(Some(at(2))), move |obs, _| {
        seen.lock().unwrap().extend(obs.iter().map(|o| o.entry.seq));
        None
    });
    let batch = [
        event(1, "g", "container_exited"),
        event(2, "g", "container_oom"),
        event(3, "g", "probe_recovered"),
    ];
    assert_eq!(drive(&mut w, &batch).await.finished, 3);
    assert_eq!(
        *applied.lock().unwrap(),
        [3],
        "only the entry past the checkpoint"
    );
    assert_eq!(
        h.published(),
        [
            // Entry 2's snapshot as it was decided, then entry 3's.
            (
                "g".into(),
                RuntimeStatus::EngineUnreachable,
                Some(EngineHealth::Oom)
            ),
            (
                "g".into(),
                RuntimeStatus::Running,
                Some(EngineHealth::Healthy)
            ),
        ]
    );
    assert_eq!(h.sources(), [Some(at(2)), Some(at(3))]);
    assert!(
        h.published
            .lock()
            .unwrap()
            .iter()
            .all(|e| e.snapshot().occurred_at_ms == NOW),
        "stamped when republished"
    );
    assert_eq!(h.metrics.consumed_count(Outcome::Replayed), 2);
    assert_eq!(h.metrics.consumed_count(Outcome::Applied), 1);
}

#[tokio::test]
async fn a_fenced_write_gives_up_its_shard_tells_the_keeper_and_the_retry_applies_the_rest() {
    let ((g, lost), (other, _)) = two_shards();
    let h = Harness::new(&[
        (&g, RuntimeStatus::Running),
        (&other, RuntimeStatus::Running),
    ]);
    // Writes with the lost shard in them are fenced, as the database would.
    let mut w = h
        .worker_gated(move |obs, _| {
            obs.iter()
                .any(|o| o.shard == lost)
                .then(|| ports::Error::Fenced {
                    shard: lost,
                    detail: format!("shard {lost} is held under another epoch than 1"),
                })
        })
        .with_handover(h.worker_side());
    let batch = [
        event(1, &g, "container_exited"),
        event(2, &other, "container_exited"),
    ];
    let first = w.handle(&batch).await;
    assert_eq!(first.finished, 0);
    assert!(
        first
            .failure
            .is_some_and(|e| e.to_string().contains(&format!("shard {lost}")))
    );
    assert_eq!(h.metrics.fenced_count(), 1);
    assert_eq!(h.keeper_fenced(), [lost], "the keeper learns it");
    // The retry leaves the lost shard's entry to its new owner and applies the rest.
    let retry = drive(&mut w, &batch).await;
    assert_eq!((retry.finished, retry.failure.is_none()), (2, true));
    assert_eq!(h.metrics.consumed_count(Outcome::NotOwned), 1);
    assert_eq!(h.metrics.consumed_count(Outcome::Applied), 1);
    let published: Vec<String> = h.published().into_iter().map(|p| p.0).collect();
    assert_eq!(published, [other]);
}

#[tokio::test]
async fn a_commit_whose_reply_was_lost_is_found_by_its_checkpoint_and_not_applied_again() {
    let h = Harness::new(&[("g", RuntimeStatus::Running)]);
    // The first write commits, then its reply is lost; the fake's checkpoints know.
    let inner = Arc::new(store_over(h.records.clone(), h.applies.clone()));
    let mut store = MockRuntimeRecordStore::new();
    let calls = Arc::new(Mutex::new(0));
    let counted = calls.clone();
    let write = inner.clone();
    store
        .expect_apply_health_batch()
        .returning(move |obs, news, owner| {
            let result = ready_now(write.apply_health_batch(obs, news, owner));
            *counted.lock().unwrap() += 1;
            match *counted.lock().unwrap() {
                1 => Err(ports::Error::Unavailable("reply lost".into())),
                _ => result,
            }
        });
    let read = inner.clone();
    store
        .expect_read_shards()
        .returning(move |shards| ready_now(read.read_shards(shards)));
    let get = inner.clone();
    store
        .expect_get_many()
        .returning(move |ids| ready_now(get.get_many(ids)));
    // The read of the commit's kept snapshots fails once (the start's read is call 1).
    let kept = inner.clone();
    let reads = Arc::new(Mutex::new(0));
    store.expect_unpublished().returning(move |shards| {
        *reads.lock().unwrap() += 1;
        if *reads.lock().unwrap() == 2 {
            return Err(ports::Error::Unavailable("kept read failed".into()));
        }
        ready_now(kept.unpublished(shards))
    });
    store
        .expect_advance_checkpoints()
        .returning(move |shards, through| ready_now(inner.advance_checkpoints(shards, through)));
    let mut w = HealthEventsWorker::new(
        store,
        recording_publisher(h.published.clone()),
        Arc::new(|| NOW),
        h.metrics.clone(),
        owner(),
    );
    let batch = [event(1, "g", "container_exited")];
    let first = drive(&mut w, &batch).await;
    assert!(
        first
            .failure
            .is_some_and(|e| e.to_string().contains("reply lost"))
    );
    let failed = drive(&mut w, &batch).await;
    assert!(
        failed
            .failure
            .is_some_and(|e| e.to_string().contains("kept read failed"))
    );
    // The retry reads them still, although the checkpoints no longer show the commit.
    let second = drive(&mut w, &batch).await;
    assert_eq!(second.finished, 1);
    assert_eq!(
        *calls.lock().unwrap(),
        1,
        "the retry found the entry committed"
    );
    assert_eq!(h.metrics.consumed_count(Outcome::Replayed), 1);
    // Its snapshot still goes out, as the store kept it with the commit.
    assert_eq!(
        h.published(),
        [(
            "g".into(),
            RuntimeStatus::EngineUnreachable,
            Some(EngineHealth::Exited)
        )]
    );
}

/// The output of a fake's future, which is ready when first polled.
fn ready_now<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut context) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("a fake's call is ready at once"),
    }
}

#[tokio::test]
async fn entries_of_shards_another_instance_owns_are_left_to_it_dead_letters_included() {
    let count = domain_runtime::ShardCount::default();
    let mine = count.shard_of(b"mine");
    let theirs = (0..100)
        .map(|i| format!("theirs-{i}"))
        .find(|g| count.shard_of(g.as_bytes()) != mine)
        .unwrap();
    let h = Harness::new(&[
        ("mine", RuntimeStatus::Running),
        (&theirs, RuntimeStatus::Running),
    ]);
    let applied: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = applied.clone();
    let owner = Ownership::new(
        count,
        [domain_runtime::ShardClaim {
            shard: mine,
            epoch: 1,
            checkpoint: None,
            published: None,
        }],
    );
    let mut w = HealthEventsWorker::new(
        store_gated(h.records.clone(), h.applies.clone(), move |obs, _| {
            seen.lock()
                .unwrap()
                .extend(obs.iter().map(|o| o.game_id.as_str().to_owned()));
            None
        }),
        recording_publisher(h.published.clone()),
        Arc::new(|| NOW),
        h.metrics.clone(),
        owner,
    );
    let batch = [
        event(1, &theirs, "container_exited"),
        event(2, "mine", "container_exited"),
        entry(
            3,
            &[
                ("game_id", theirs.as_bytes()),
                ("event_type", b"container_flooded"),
            ],
        ),
    ];
    let outcome = w.handle(&batch).await;
    assert!(
        outcome.dead_letters.is_empty(),
        "the other owner keeps its dead letters"
    );
    assert_eq!(
        drive(&mut w, &batch[outcome.finished..]).await.finished + outcome.finished,
        3
    );
    assert_eq!(*applied.lock().unwrap(), ["mine"]);
    assert_eq!(h.metrics.consumed_count(Outcome::NotOwned), 2);
    assert_eq!(h.metrics.consumed_count(Outcome::Applied), 1);
    assert_eq!(h.published().len(), 1);
}

/// Two games in two different shards of the default layout: (game, shard) each.
fn two_shards() -> ((String, u32), (String, u32)) {
    let count = domain_runtime::ShardCount::default();
    let a = count.shard_of(b"a");
    let b = (0..100)
        .map(|i| format!("b-{i}"))
        .find(|g| count.shard_of(g.as_bytes()) != a)
        .unwrap();
    let shard_b = count.shard_of(b.as_bytes());
    (("a".to_owned(), a), (b, shard_b))
}

/// Owning only `shard`, never applied.
fn owning_only(shard: u32) -> Ownership {
    Ownership::new(
        domain_runtime::ShardCount::default(),
        [domain_runtime::ShardClaim {
            shard,
            epoch: 1,
            checkpoint: None,
            published: None,
        }],
    )
}

#[tokio::test]
async fn a_shard_gained_rewinds_the_reading_to_its_checkpoint_and_its_stored_summaries_count_as_published()
 {
    let ((a, shard_a), (b, shard_b)) = two_shards();
    let h = Harness::new(&[(&a, RuntimeStatus::Running)]);
    // b's previous owner left it unreachable after an exit, and published that.
    h.records.lock().unwrap().insert(
        gid(&b),
        HealthState {
            status: RuntimeStatus::EngineUnreachable,
            engine_health: Some(EngineHealth::Exited),
        },
    );
    let mut w = h
        .worker_of(owning_only(shard_a), |_, _| None)
        .with_handover(h.worker_side());
    let first = [
        event(1, &b, "container_exited"),
        event(2, &a, "probe_failed"),
    ];
    assert_eq!(drive(&mut w, &first).await.finished, 2);
    assert_eq!(h.metrics.consumed_count(Outcome::NotOwned), 1);
    // b's shard moves here with its checkpoint below entry 1: the reading goes back.
    h.keeper_sends(OwnershipChange::Gained(vec![domain_runtime::ShardClaim {
        shard: shard_b,
        epoch: 7,
        checkpoint: Some(domain_runtime::EntryPosition { ms: 0, seq: 5 }),
        published: None,
    }]));
    let next = [event(3, &a, "probe_recovered")];
    let outcome = w.handle(&next).await;
    assert_eq!(outcome.rewind, Some(EntryId::new(0, 5)));
    assert_eq!((outcome.finished, outcome.failure.is_none()), (0, true));
    // Read again: b's entry is applied now, a's is not applied a second time.
    let applies_before = *h.applies.lock().unwrap();
    let again = [first[0].clone(), first[1].clone(), next[0].clone()];
    assert_eq!(drive(&mut w, &again).await.finished, 3);
    assert_eq!(
        h.metrics.consumed_count(Outcome::Replayed),
        1,
        "a's entry 2"
    );
    assert_eq!(h.metrics.consumed_count(Outcome::Applied), 3);
    assert!(*h.applies.lock().unwrap() > applies_before);
    // b's exit repeats what its previous owner published: no snapshot for it.
    let published: Vec<String> = h.published().into_iter().map(|p| p.0).collect();
    assert_eq!(published, [a.clone(), a], "a's failure, then its recovery");
}

#[tokio::test]
async fn a_shard_gained_at_or_after_what_the_worker_passed_needs_no_rewind() {
    let ((a, shard_a), (_, shard_b)) = two_shards();
    let h = Harness::new(&[(&a, RuntimeStatus::Running)]);
    let mut w = h
        .worker_of(owning_only(shard_a), |_, _| None)
        .with_handover(h.worker_side());
    h.keeper_sends(OwnershipChange::Gained(vec![domain_runtime::ShardClaim {
        shard: shard_b,
        epoch: 2,
        checkpoint: Some(domain_runtime::EntryPosition { ms: 1, seq: 4 }),
        published: None,
    }]));
    let outcome = w.handle(&[event(5, &a, "probe_failed")]).await;
    assert_eq!(outcome.rewind, None);
    assert_eq!(h.metrics.consumed_count(Outcome::Applied), 1);
}

#[tokio::test]
async fn a_shard_lost_is_not_applied_from_the_next_batch_on() {
    let ((a, shard_a), (b, _)) = two_shards();
    let h = Harness::new(&[(&a, RuntimeStatus::Running), (&b, RuntimeStatus::Running)]);
    let mut w = h.worker().with_handover(h.worker_side());
    assert_eq!(
        drive(&mut w, &[event(1, &a, "probe_failed")])
            .await
            .finished,
        1
    );
    h.keeper_sends(OwnershipChange::Lost(vec![shard_a]));
    let batch = [
        event(2, &a, "probe_recovered"),
        event(3, &b, "probe_failed"),
    ];
    assert_eq!(drive(&mut w, &batch).await.finished, 2);
    assert_eq!(h.metrics.consumed_count(Outcome::NotOwned), 1);
    assert_eq!(h.metrics.consumed_count(Outcome::Applied), 2);
    assert!(h.keeper_fenced().is_empty(), "a hand-over is no fence");
    assert_eq!(
        h.keeper_released(),
        [shard_a],
        "let go once its snapshots were out"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_shards_checkpoints_move_up_to_what_the_worker_finished_once_a_second() {
    let ((a, _), _) = two_shards();
    let h = Harness::new(&[(&a, RuntimeStatus::Running)]);
    let mut store = store_gated(h.records.clone(), h.applies.clone(), |_, _| None);
    type Advance = (
        usize,
        domain_runtime::EntryPosition,
        Option<domain_runtime::EntryPosition>,
    );
    let advances: Arc<Mutex<Vec<Advance>>> = Arc::default();
    let seen = advances.clone();
    store.checkpoint();
    store
        .expect_advance_checkpoints()
        .returning(move |marks, through| {
            let mark = marks[0].published;
            assert!(
                marks.iter().all(|m| m.published == mark),
                "one mark for all"
            );
            seen.lock().unwrap().push((marks.len(), through, mark));
            Ok(Vec::new())
        });
    store
        .expect_apply_health_batch()
        .returning(|obs, _, _| Ok(obs.iter().map(|_| ObservationResult::UnknownGame).collect()));
    store.expect_read_shards().returning(|_| Ok(Vec::new()));
    store.expect_unpublished().returning(|_| Ok(Vec::new()));
    let mut w = HealthEventsWorker::new(
        store,
        recording_publisher(h.published.clone()),
        Arc::new(|| NOW),
        h.metrics.clone(),
        owner(),
    );
    let at = |seq| domain_runtime::EntryPosition { ms: 1, seq };
    assert_eq!(
        drive(&mut w, &[event(1, &a, "probe_failed")])
            .await
            .finished,
        1
    );
    // The next batch moves every shard: a's checkpoint is at entry 1 already, but its
    // published mark is not yet written (entry 1 had nothing to publish).
    assert_eq!(
        drive(&mut w, &[event(2, &a, "probe_failed")])
            .await
            .finished,
        1
    );
    assert_eq!(*advances.lock().unwrap(), [(64, at(1), Some(at(1)))]);
    // Within the second, no other advance.
    assert_eq!(
        drive(&mut w, &[event(3, &a, "probe_failed")])
            .await
            .finished,
        1
    );
    assert_eq!(advances.lock().unwrap().len(), 1);
    tokio::time::advance(ADVANCE_EVERY).await;
    assert_eq!(
        drive(&mut w, &[event(4, &a, "probe_failed")])
            .await
            .finished,
        1
    );
    assert_eq!(advances.lock().unwrap()[1], (64, at(3), Some(at(3))));
}

#[tokio::test]
async fn an_idle_worker_takes_a_gain_before_the_next_read_and_moves_the_position_back() {
    let ((a, shard_a), (_, shard_b)) = two_shards();
    let h = Harness::new(&[(&a, RuntimeStatus::Running)]);
    let mut w = h
        .worker_of(owning_only(shard_a), |_, _| None)
        .with_handover(h.worker_side());
    let at = EntryId::new(1, 9);
    assert_eq!(w.before_read(at).await, None, "nothing changed");
    let claim = |checkpoint| {
        OwnershipChange::Gained(vec![domain_runtime::ShardClaim {
            shard: shard_b,
            epoch: 3,
            checkpoint,
            published: None,
        }])
    };
    h.keeper_sends(claim(Some(domain_runtime::EntryPosition { ms: 1, seq: 9 })));
    assert_eq!(
        w.before_read(at).await,
        None,
        "its checkpoint is the position"
    );
    h.keeper_sends(claim(Some(domain_runtime::EntryPosition { ms: 1, seq: 2 })));
    assert_eq!(w.before_read(at).await, Some(EntryId::new(1, 2)));
    assert_eq!(w.before_read(at).await, None, "once");
}

#[tokio::test]
async fn a_shard_taken_over_republishes_only_the_snapshots_kept_after_its_published_mark() {
    let ((_, _), (b, shard_b)) = two_shards();
    let h = Harness::new(&[(&b, RuntimeStatus::Running)]);
    let at = |seq| domain_runtime::EntryPosition { ms: 1, seq };
    // The previous owner applied entries 1 and 2; only entry 1's snapshot is known out,
    // and the store keeps entry 2's.
    let state = HealthState {
        status: RuntimeStatus::Running,
        engine_health: Some(EngineHealth::Exited),
    };
    let kept = |seq| snapshot_of(&record(&gid(&b), state), at(seq));
    h.shards.lock().unwrap().insert(
        shard_b,
        FakeShard {
            checkpoint: Some(at(2)),
            published: Some(at(1)),
            kept: vec![kept(2)],
        },
    );
    let owner = Ownership::new(
        domain_runtime::ShardCount::default(),
        [domain_runtime::ShardClaim {
            shard: shard_b,
            epoch: 2,
            checkpoint: Some(at(2)),
            published: Some(at(1)),
        }],
    );
    assert_eq!(start_position(&owner), Some(EntryId::new(1, 2)));
    let mut w = h.worker_of(owner, |_, _| None);
    let batch = [event(3, &b, "probe_recovered")];
    assert_eq!(drive(&mut w, &batch).await.finished, 1);
    let id = |seq| Some(contracts::SourceEntryId { ms: 1, seq });
    assert_eq!(h.sources(), [id(2), id(3)], "entry 1 went out already");
    assert_eq!(h.metrics.consumed_count(Outcome::Applied), 1);
}

#[tokio::test(start_paused = true)]
async fn a_shard_gained_while_idle_is_read_from_its_checkpoint_before_any_idle_advance() {
    let ((a, shard_a), (b, shard_b)) = two_shards();
    let h = Harness::new(&[(&a, RuntimeStatus::Running), (&b, RuntimeStatus::Running)]);
    let mut w = h
        .worker_of(owning_only(shard_a), |_, _| None)
        .with_handover(h.worker_side());
    // b's entry 2 goes by while its shard is another's; then this worker finishes entry 5.
    let passed = [event(2, &b, "probe_failed"), event(5, &a, "probe_failed")];
    assert_eq!(drive(&mut w, &passed).await.finished, 2);
    h.keeper_sends(OwnershipChange::Gained(vec![domain_runtime::ShardClaim {
        shard: shard_b,
        epoch: 2,
        checkpoint: Some(domain_runtime::EntryPosition { ms: 1, seq: 1 }),
        published: None,
    }]));
    // Idle, with an idle advance due: the gain rewinds, and b's checkpoint is not moved
    // past its unread entry.
    tokio::time::advance(ADVANCE_EVERY).await;
    assert_eq!(
        w.before_read(EntryId::new(1, 5)).await,
        Some(EntryId::new(1, 1))
    );
    assert_eq!(drive(&mut w, &passed).await.finished, 2);
    assert_eq!(
        h.metrics.consumed_count(Outcome::Applied),
        2,
        "a's 5, then b's 2"
    );
}

#[tokio::test]
async fn a_shard_gained_and_lost_before_it_was_read_is_let_go_with_its_checkpoint_untouched() {
    let ((a, shard_a), (b, shard_b)) = two_shards();
    let h = Harness::new(&[(&a, RuntimeStatus::Running), (&b, RuntimeStatus::Running)]);
    let mut store = store_gated(h.records.clone(), h.applies.clone(), |_, _| None);
    let moved: Arc<Mutex<Vec<(u32, domain_runtime::EntryPosition)>>> = Arc::default();
    let seen = moved.clone();
    store.checkpoint();
    store
        .expect_advance_checkpoints()
        .returning(move |marks, through| {
            let mut seen = seen.lock().unwrap();
            seen.extend(marks.iter().map(|m| (m.shard, through)));
            Ok(Vec::new())
        });
    let records = h.records.clone();
    store
        .expect_apply_health_batch()
        .returning(move |obs, news, _| Ok(fold_over(&records, obs, news)));
    store.expect_summaries().returning(|| Ok(Vec::new()));
    store.expect_unpublished().returning(|_| Ok(Vec::new()));
    let mut w = HealthEventsWorker::new(
        store,
        recording_publisher(h.published.clone()),
        Arc::new(|| NOW),
        h.metrics.clone(),
        owning_only(shard_a),
    )
    .with_handover(h.worker_side());
    // b's entry 1 goes by while its shard is another's; a's entry 2 is applied.
    let passed = [event(1, &b, "probe_failed"), event(2, &a, "probe_failed")];
    assert_eq!(drive(&mut w, &passed).await.finished, 2);
    // b's shard comes here from below entry 1 and goes on to a third instance before
    // the reading went back for it.
    h.keeper_sends(OwnershipChange::Gained(vec![domain_runtime::ShardClaim {
        shard: shard_b,
        epoch: 3,
        checkpoint: Some(domain_runtime::EntryPosition { ms: 0, seq: 5 }),
        published: None,
    }]));
    h.keeper_sends(OwnershipChange::Lost(vec![shard_b]));
    let outcome = w.handle(&[event(3, &a, "probe_recovered")]).await;
    assert_eq!(outcome.rewind, None, "nothing of b's is owned any more");
    assert_eq!(h.keeper_released(), [shard_b]);
    assert!(
        moved
            .lock()
            .unwrap()
            .iter()
            .all(|(shard, _)| *shard != shard_b),
        "b's checkpoint moved past its unapplied entry 1: {:?}",
        moved.lock().unwrap()
    );
}

#[tokio::test]
async fn a_batch_its_owner_committed_but_never_published_is_republished_by_the_next_owner() {
    let ((_, _), (b, shard_b)) = two_shards();
    let h = Harness::new(&[(&b, RuntimeStatus::Running)]);
    // Entry 1's snapshot goes out; entry 2's publish never completes (the owner dies);
    // entries 2 and 3 of one batch both change the game.
    let mut publisher = MockLobbyEventsPublisher::new();
    let out = h.published.clone();
    let mut calls = 0;
    publisher.expect_publish().returning(move |events| {
        calls += 1;
        if calls > 1 {
            return Err(ports::Error::Unavailable("the process died".into()));
        }
        out.lock().unwrap().extend_from_slice(events);
        Ok(())
    });
    let store = store_sharing(
        h.records.clone(),
        h.shards.clone(),
        h.applies.clone(),
        |_, _| None,
    );
    let mut first = HealthEventsWorker::new(
        store,
        publisher,
        Arc::new(|| NOW),
        h.metrics.clone(),
        owning_only(shard_b),
    );
    assert_eq!(
        drive(&mut first, &[event(1, &b, "probe_failed")])
            .await
            .finished,
        1
    );
    let last = [
        event(2, &b, "container_exited"),
        event(3, &b, "probe_recovered"),
    ];
    let outcome = first.handle(&last).await;
    assert!(
        outcome.in_flight,
        "entries 2 and 3 committed, their snapshots on their way"
    );
    drop(first);
    let stored = h.shards.lock().unwrap()[&shard_b].clone();
    let at = |seq| domain_runtime::EntryPosition { ms: 1, seq };
    assert_eq!(
        (stored.checkpoint, stored.published),
        (Some(at(3)), Some(at(1))),
        "entry 1's snapshot was out when entries 2 and 3 were written"
    );

    // The next owner claims the shard as stored and reads after its checkpoint.
    let next = Ownership::new(
        domain_runtime::ShardCount::default(),
        [domain_runtime::ShardClaim {
            shard: shard_b,
            epoch: 2,
            checkpoint: stored.checkpoint,
            published: stored.published,
        }],
    );
    assert_eq!(start_position(&next), Some(EntryId::new(1, 3)));
    let mut second = h.worker_of(next, |_, _| None);
    let rest = [event(4, &b, "probe_failed")];
    assert_eq!(drive(&mut second, &rest).await.finished, 1);
    let id = |seq| Some(contracts::SourceEntryId { ms: 1, seq });
    assert_eq!(
        h.sources(),
        [id(1), id(2), id(3), id(4)],
        "entries 2 and 3 republished, each as it was"
    );
    assert_eq!(
        h.published()[1..3],
        [
            (
                b.clone(),
                RuntimeStatus::EngineUnreachable,
                Some(EngineHealth::Exited)
            ),
            (b, RuntimeStatus::Running, Some(EngineHealth::Healthy)),
        ]
    );
    // Once they are out, the mark the next owner writes drops them from the store.
    second.stopped().await;
    let stored = h.shards.lock().unwrap()[&shard_b].clone();
    assert_eq!(stored.published, Some(at(4)));
    assert!(stored.kept.is_empty(), "{:?}", stored.kept);
}

#[tokio::test]
async fn each_owned_shards_lag_runs_from_its_progress_to_the_streams_last_entry() {
    let ((a, shard_a), (_, shard_b)) = two_shards();
    let h = Harness::new(&[(&a, RuntimeStatus::Running)]);
    let mut w = h
        .worker_of(owning_only(shard_a), |_, _| None)
        .with_handover(h.worker_side());
    let lags = h.metrics.shard_lags();
    w.stream_head(EntryId::new(2001, 0));
    assert!(lags.get()[&shard_a].is_nan(), "nothing applied or read yet");
    assert_eq!(
        drive(&mut w, &[event(1, &a, "probe_failed")])
            .await
            .finished,
        1
    );
    w.stream_head(EntryId::new(2001, 0));
    assert_eq!(lags.get(), [(shard_a, 2.0)].into());
    // A shard gained and not read yet counts from its checkpoint; a shard lost goes.
    h.keeper_sends(OwnershipChange::Gained(vec![domain_runtime::ShardClaim {
        shard: shard_b,
        epoch: 2,
        checkpoint: Some(domain_runtime::EntryPosition { ms: 0, seq: 5 }),
        published: None,
    }]));
    assert_eq!(
        w.before_read(EntryId::new(1, 1)).await,
        Some(EntryId::new(0, 5))
    );
    w.stream_head(EntryId::new(2001, 0));
    assert_eq!(lags.get(), [(shard_a, 2.0), (shard_b, 2.001)].into());
    h.keeper_sends(OwnershipChange::Lost(vec![shard_a]));
    assert_eq!(w.before_read(EntryId::new(1, 1)).await, None);
    assert_eq!(lags.get().keys().copied().collect::<Vec<_>>(), [shard_b]);
    w.stream_head(EntryId::new(5001, 0));
    assert_eq!(lags.get()[&shard_b], 5.001);
}
