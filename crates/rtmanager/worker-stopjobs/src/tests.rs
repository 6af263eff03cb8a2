#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use contracts::{ERROR_CODE_REPLAY_NO_OP, GameId, JobOutcome};
use rtm_domain::{ERROR_CODE_NOT_FOUND, RegistryStatus};

use super::*;

/// The registry, in memory: runtimes by game, and the operation log by source reference.
#[derive(Default)]
struct Registry {
    runtimes: BTreeMap<String, Runtime>,
    log: BTreeMap<String, JobResult>,
    /// Calls to fail (transiently) before answering, per method name.
    fail: BTreeMap<&'static str, usize>,
    /// The game whose stops the registry refuses to record, for their values.
    refuse_game: Option<String>,
    /// Calls to `record_stops`.
    record_calls: usize,
}

#[derive(Clone, Default)]
struct SharedRegistry(Arc<Mutex<Registry>>);

impl SharedRegistry {
    fn with(games: &[(&str, RegistryStatus)]) -> Self {
        let registry = Self::default();
        for (game, status) in games {
            registry.0.lock().unwrap().runtimes.insert(
                (*game).to_owned(),
                Runtime {
                    game_id: GameId::new(*game).unwrap(),
                    status: *status,
                    container_id: format!("c-{game}"),
                    engine_endpoint: format!("http://{game}:9000"),
                },
            );
        }
        registry
    }

    fn failing(&self, method: &'static str) -> Result<(), Error> {
        let mut inner = self.0.lock().unwrap();
        match inner.fail.get_mut(method) {
            Some(n) if *n > 0 => {
                *n -= 1;
                Err(Error::Unavailable(
                    format!("{method}: connection refused").into(),
                ))
            }
            _ => Ok(()),
        }
    }

    fn status(&self, game: &str) -> RegistryStatus {
        self.0.lock().unwrap().runtimes[game].status
    }
}

#[async_trait]
impl RuntimeRegistry for SharedRegistry {
    async fn get(&self, game_id: &GameId) -> Result<Option<Runtime>, Error> {
        self.failing("get")?;
        Ok(self
            .0
            .lock()
            .unwrap()
            .runtimes
            .get(game_id.as_str())
            .cloned())
    }

    async fn running(&self) -> Result<Vec<Runtime>, Error> {
        Ok(self.0.lock().unwrap().runtimes.values().cloned().collect())
    }

    async fn get_many(&self, game_ids: &[GameId]) -> Result<Vec<Option<Runtime>>, Error> {
        self.failing("get_many")?;
        let inner = self.0.lock().unwrap();
        Ok(game_ids
            .iter()
            .map(|g| inner.runtimes.get(g.as_str()).cloned())
            .collect())
    }

    async fn recorded_stops(&self, origins: &[Origin]) -> Result<Vec<Option<JobResult>>, Error> {
        self.failing("recorded_stops")?;
        let inner = self.0.lock().unwrap();
        Ok(origins
            .iter()
            .map(|o| inner.log.get(&o.reference).cloned())
            .collect())
    }

    async fn record_stops(&self, stops: &[(Origin, JobResult)]) -> Result<(), Error> {
        self.failing("record_stops")?;
        let mut inner = self.0.lock().unwrap();
        inner.record_calls += 1;
        if stops
            .iter()
            .any(|(_, r)| inner.refuse_game.as_deref() == Some(r.game_id.as_str()))
        {
            return Err(Error::Refused("value too long for type".into()));
        }
        for (origin, result) in stops {
            if inner.log.contains_key(&origin.reference) {
                continue;
            }
            inner.log.insert(origin.reference.clone(), result.clone());
            let plain_success =
                result.outcome == JobOutcome::Success && result.error_code.is_empty();
            if let Some(r) = inner.runtimes.get_mut(result.game_id.as_str())
                && plain_success
                && r.status == RegistryStatus::Running
            {
                r.status = RegistryStatus::Stopped;
            }
        }
        Ok(())
    }

    async fn register(&self, runtime: &Runtime, _origin: &Origin) -> Result<(), Error> {
        let mut inner = self.0.lock().unwrap();
        inner
            .runtimes
            .insert(runtime.game_id.as_str().to_owned(), runtime.clone());
        Ok(())
    }
}

/// Engines by container id: what each stop does, and the stops asked for.
#[derive(Clone, Default)]
struct Engines {
    refuse: Arc<Mutex<BTreeMap<String, &'static str>>>,
    stopped: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl EngineDriver for Engines {
    async fn start(&self, _game_id: &GameId) -> Result<rtm_ports::StartedEngine, EngineError> {
        Err(EngineError::Unavailable(
            "the stop-jobs worker never starts engines".into(),
        ))
    }

    async fn inspect(&self, _container_id: &str) -> Result<rtm_domain::EngineState, EngineError> {
        Err(EngineError::Unavailable(
            "the stop-jobs worker never inspects".into(),
        ))
    }

    async fn probe(&self, _engine_endpoint: &str) -> bool {
        false
    }

    async fn stop(&self, container_id: &str, _grace: Duration) -> Result<(), EngineError> {
        match self.refuse.lock().unwrap().get(container_id) {
            Some(&"unavailable") => Err(EngineError::Unavailable("runtime down".into())),
            Some(&"gone") => Err(EngineError::Gone(container_id.to_owned())),
            Some(code) => Err(EngineError::Failed {
                code,
                message: format!("{container_id} would not stop"),
            }),
            None => {
                self.stopped.lock().unwrap().push(container_id.to_owned());
                Ok(())
            }
        }
    }
}

/// The result stream: entries by id, appended at most once; `fail` publishes to fail.
#[derive(Clone, Default)]
struct Results {
    stream: Arc<Mutex<BTreeMap<EntryId, JobResult>>>,
    fail: Arc<Mutex<usize>>,
}

#[async_trait]
impl JobResultPublisher for Results {
    async fn publish(&self, results: &[(EntryId, JobResult)]) -> Result<(), Error> {
        let mut stream = self.stream.lock().unwrap();
        for (id, result) in results {
            stream.entry(*id).or_insert_with(|| result.clone());
        }
        let mut fail = self.fail.lock().unwrap();
        if *fail > 0 {
            // The reply is lost after the results landed: the worst case for a retry.
            *fail -= 1;
            return Err(Error::Unavailable("XADD: reply timed out".into()));
        }
        Ok(())
    }
}

struct Harness {
    registry: SharedRegistry,
    engines: Engines,
    results: Results,
    metrics: WorkerMetrics,
}

impl Harness {
    fn new(games: &[(&str, RegistryStatus)]) -> Self {
        Self {
            registry: SharedRegistry::with(games),
            engines: Engines::default(),
            results: Results::default(),
            metrics: WorkerMetrics::default(),
        }
    }

    fn worker(&self) -> StopJobsWorker<SharedRegistry, Engines, Results> {
        StopJobsWorker::new(
            self.registry.clone(),
            self.engines.clone(),
            self.results.clone(),
            Duration::from_millis(10),
            self.metrics.clone(),
        )
    }

    fn answered(&self) -> Vec<(EntryId, JobResult)> {
        let stream = self.results.stream.lock().unwrap();
        stream.iter().map(|(id, r)| (*id, r.clone())).collect()
    }
}

fn job(seq: u64, game: &str) -> StreamEntry {
    let pairs: [(&str, &str); 2] = [("game_id", game), ("reason", "game_finished")];
    StreamEntry::from_pairs(EntryId::new(1, seq), &pairs)
}

#[tokio::test]
async fn each_status_gets_the_seed_s_result_and_a_running_engine_is_stopped() {
    let h = Harness::new(&[
        ("run", RegistryStatus::Running),
        ("stopped", RegistryStatus::Stopped),
        ("removed", RegistryStatus::Removed),
    ]);
    let batch = [
        job(1, "run"),
        job(2, "stopped"),
        job(3, "removed"),
        job(4, "ghost"),
    ];
    let outcome = h.worker().handle(&batch).await;
    assert_eq!(outcome.finished, 4);
    assert!(outcome.failure.is_none());
    let answered = h.answered();
    let ids: Vec<EntryId> = answered.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, batch.iter().map(|e| e.id).collect::<Vec<_>>());
    let run = &answered[0].1;
    assert_eq!(
        (run.outcome, run.error_code.as_str()),
        (JobOutcome::Success, "")
    );
    assert_eq!(
        (run.container_id.as_str(), run.engine_endpoint.as_str()),
        ("c-run", "http://run:9000")
    );
    for (_, replay) in &answered[1..3] {
        assert_eq!(replay.outcome, JobOutcome::Success);
        assert_eq!(replay.error_code, ERROR_CODE_REPLAY_NO_OP);
    }
    assert_eq!(answered[3].1.outcome, JobOutcome::Failure);
    assert_eq!(answered[3].1.error_code, ERROR_CODE_NOT_FOUND);
    assert_eq!(*h.engines.stopped.lock().unwrap(), ["c-run"]);
    assert_eq!(h.registry.status("run"), RegistryStatus::Stopped);
    assert_eq!(h.metrics.consumed_count(Outcome::Stopped), 1);
    assert_eq!(h.metrics.consumed_count(Outcome::ReplayNoOp), 2);
    assert_eq!(h.metrics.consumed_count(Outcome::NotFound), 1);
}

#[tokio::test]
async fn a_replayed_job_answers_replay_no_op_and_touches_no_engine() {
    let h = Harness::new(&[("g", RegistryStatus::Running)]);
    let mut w = h.worker();
    w.handle(&[job(1, "g")]).await;
    w.handle(&[job(2, "g")]).await;
    let answered = h.answered();
    assert_eq!(answered.len(), 2);
    assert!(!answered[0].1.is_replay_no_op());
    assert!(answered[1].1.is_replay_no_op());
    assert_eq!(h.engines.stopped.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_entry_that_is_no_stop_job_is_counted_and_finished_without_a_result() {
    let h = Harness::new(&[("g", RegistryStatus::Running)]);
    let poison = [
        StreamEntry::from_pairs(EntryId::new(1, 1), &[("reason", "game_finished")]),
        StreamEntry::from_pairs(
            EntryId::new(1, 2),
            &[("game_id", "g"), ("reason", "because")],
        ),
        StreamEntry::from_pairs(
            EntryId::new(1, 3),
            &[("game_id", &b"g\xff"[..]), ("reason", b"cancelled")],
        ),
        job(4, "g"),
    ];
    let outcome = h.worker().handle(&poison).await;
    assert_eq!(outcome.finished, 4);
    assert_eq!(h.metrics.consumed_count(Outcome::Malformed), 3);
    let dead: Vec<u64> = outcome.dead_letters.iter().map(|(id, _)| id.seq).collect();
    assert_eq!(dead, [1, 2, 3], "each one a dead letter, with why");
    assert!(
        outcome.dead_letters[1].1.contains("reason"),
        "{:?}",
        outcome.dead_letters
    );
    let answered = h.answered();
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0].0, EntryId::new(1, 4));
}

#[tokio::test]
async fn an_engine_that_will_not_stop_is_a_failure_with_its_code_and_stays_running() {
    let h = Harness::new(&[
        ("g", RegistryStatus::Running),
        ("gone", RegistryStatus::Running),
    ]);
    h.engines
        .refuse
        .lock()
        .unwrap()
        .insert("c-g".into(), "stop_timed_out");
    h.engines
        .refuse
        .lock()
        .unwrap()
        .insert("c-gone".into(), "gone");
    h.worker().handle(&[job(1, "g"), job(2, "gone")]).await;
    let answered = h.answered();
    assert_eq!(answered[0].1.outcome, JobOutcome::Failure);
    assert_eq!(answered[0].1.error_code, "stop_timed_out");
    assert_eq!(answered[0].1.error_message, "c-g would not stop");
    assert_eq!(h.registry.status("g"), RegistryStatus::Running);
    // An engine found gone is as stopped as one that was stopped.
    assert_eq!(answered[1].1.outcome, JobOutcome::Success);
    assert_eq!(h.registry.status("gone"), RegistryStatus::Stopped);
    assert_eq!(h.metrics.consumed_count(Outcome::Failed), 1);
}

#[tokio::test]
async fn a_transient_failure_finishes_what_was_answered_and_the_retry_answers_the_rest_once() {
    let h = Harness::new(&[
        ("a", RegistryStatus::Running),
        ("b", RegistryStatus::Running),
    ]);
    let mut w = h.worker();
    w.handle(&[job(1, "a")]).await;
    // The next registry read fails once.
    h.registry.0.lock().unwrap().fail.insert("get_many", 1);
    let outcome = w.handle(&[job(2, "b"), job(3, "a")]).await;
    assert_eq!(outcome.finished, 0);
    assert!(outcome.failure.is_some());
    let outcome = w.handle(&[job(2, "b"), job(3, "a")]).await;
    assert_eq!(outcome.finished, 2);
    let answered = h.answered();
    assert_eq!(answered.len(), 3);
    assert!(answered[2].1.is_replay_no_op());

    // The container runtime down: nothing answered, nothing recorded, retried later.
    let h = Harness::new(&[("g", RegistryStatus::Running)]);
    h.engines
        .refuse
        .lock()
        .unwrap()
        .insert("c-g".into(), "unavailable");
    let outcome = h.worker().handle(&[job(1, "g")]).await;
    assert_eq!((outcome.finished, outcome.failure.is_some()), (0, true));
    assert!(h.answered().is_empty());
    assert!(h.registry.0.lock().unwrap().log.is_empty());
}

#[tokio::test]
async fn a_lost_publish_reply_is_retried_with_the_recorded_result_and_lands_once() {
    let h = Harness::new(&[("g", RegistryStatus::Running)]);
    *h.results.fail.lock().unwrap() = 1;
    let mut w = h.worker();
    let batch = [job(1, "g")];
    let first = w.handle(&batch).await;
    assert_eq!(first.finished, 0);
    let retry = w.handle(&batch).await;
    assert_eq!(retry.finished, 1);
    let answered = h.answered();
    assert_eq!(answered.len(), 1);
    // The original success, not a replay: the retry answered from the operation log.
    assert!(!answered[0].1.is_replay_no_op());
    assert_eq!(answered[0].1.container_id, "c-g");
    assert_eq!(h.engines.stopped.lock().unwrap().len(), 1);
    assert_eq!(h.metrics.consumed_count(Outcome::Recorded), 1);
    assert_eq!(h.metrics.consumed_count(Outcome::Stopped), 0);
}

#[tokio::test]
async fn a_record_the_registry_refuses_holds_as_a_refusal_and_is_counted_when_abandoned() {
    let h = Harness::new(&[("g", RegistryStatus::Stopped)]);
    h.registry.0.lock().unwrap().refuse_game = Some("g".into());
    let mut w = h.worker();
    let batch = [job(1, "g")];
    let outcome = w.handle(&batch).await;
    assert_eq!((outcome.finished, outcome.refused), (0, true));
    assert!(
        h.answered().is_empty(),
        "nothing answered that was not recorded"
    );
    w.abandon(&batch[0], "refused past the hold");
    assert_eq!(h.metrics.consumed_count(Outcome::Abandoned), 1);
}

#[tokio::test]
async fn a_batch_costs_three_registry_round_trips_and_a_games_second_job_sees_its_first() {
    let h = Harness::new(&[
        ("a", RegistryStatus::Running),
        ("b", RegistryStatus::Running),
        ("c", RegistryStatus::Stopped),
    ]);
    let batch = [job(1, "a"), job(2, "b"), job(3, "c"), job(4, "nobody")];
    let outcome = h.worker().handle(&batch).await;
    assert_eq!(outcome.finished, 4);
    assert_eq!(
        h.registry.0.lock().unwrap().record_calls,
        1,
        "one record for the batch"
    );
    let mut stopped = h.engines.stopped.lock().unwrap().clone();
    stopped.sort();
    assert_eq!(stopped, ["c-a", "c-b"]);

    // Two jobs for one game in one batch: the second is decided after the first's effect.
    let h = Harness::new(&[("g", RegistryStatus::Running)]);
    let outcome = h.worker().handle(&[job(1, "g"), job(2, "g")]).await;
    assert_eq!(outcome.finished, 2);
    let answered = h.answered();
    assert_eq!(answered[0].1.outcome, JobOutcome::Success);
    assert!(!answered[0].1.is_replay_no_op());
    assert!(answered[1].1.is_replay_no_op(), "{:?}", answered[1]);
    assert_eq!(h.engines.stopped.lock().unwrap().len(), 1, "stopped once");
}

#[tokio::test]
async fn a_refused_record_in_a_batch_answers_the_jobs_before_it_and_holds_at_it() {
    let h = Harness::new(&[
        ("a", RegistryStatus::Stopped),
        ("g", RegistryStatus::Stopped),
        ("b", RegistryStatus::Stopped),
    ]);
    h.registry.0.lock().unwrap().refuse_game = Some("g".into());
    let outcome = h
        .worker()
        .handle(&[job(1, "a"), job(2, "g"), job(3, "b")])
        .await;
    assert_eq!((outcome.finished, outcome.refused), (1, true));
    let answered: Vec<String> = h
        .answered()
        .iter()
        .map(|(_, r)| r.game_id.as_str().to_owned())
        .collect();
    assert_eq!(answered, ["a"], "only what was recorded is answered");
}
