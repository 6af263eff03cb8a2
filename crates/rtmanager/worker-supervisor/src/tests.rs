#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use contracts::{GameId, JobResult};
use rtm_domain::{EngineState, Origin, RegistryStatus};
use rtm_ports::{EngineError, EntryId, StartedEngine};

use super::*;

#[derive(Clone, Default)]
struct Registry(Arc<Mutex<Vec<Runtime>>>);

#[async_trait]
impl RuntimeRegistry for Registry {
    async fn get(&self, game_id: &GameId) -> Result<Option<Runtime>, Error> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .iter()
            .find(|r| &r.game_id == game_id)
            .cloned())
    }
    async fn running(&self) -> Result<Vec<Runtime>, Error> {
        Ok(self.0.lock().unwrap().clone())
    }
    async fn get_many(&self, _game_ids: &[GameId]) -> Result<Vec<Option<Runtime>>, Error> {
        unreachable!("the supervisor looks at running runtimes only")
    }
    async fn recorded_stops(&self, _origins: &[Origin]) -> Result<Vec<Option<JobResult>>, Error> {
        unreachable!("the supervisor answers no stop job")
    }
    async fn record_stops(&self, _stops: &[(Origin, JobResult)]) -> Result<(), Error> {
        unreachable!("the supervisor records no stop")
    }
    async fn register(&self, runtime: &Runtime, _origin: &Origin) -> Result<(), Error> {
        self.0.lock().unwrap().push(runtime.clone());
        Ok(())
    }
}

/// Engines whose state and probe the test sets, by container id.
#[derive(Clone, Default)]
struct Engines(Arc<Mutex<HashMap<String, (EngineState, bool)>>>);

impl Engines {
    fn set(&self, container: &str, state: EngineState, probe: bool) {
        self.0
            .lock()
            .unwrap()
            .insert(container.to_owned(), (state, probe));
    }
}

#[async_trait]
impl EngineDriver for Engines {
    async fn start(&self, _game_id: &GameId) -> Result<StartedEngine, EngineError> {
        Err(EngineError::Unavailable(
            "the supervisor never starts engines".into(),
        ))
    }
    async fn inspect(&self, container_id: &str) -> Result<EngineState, EngineError> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .get(container_id)
            .map_or(EngineState::Gone, |s| s.0))
    }
    async fn probe(&self, engine_endpoint: &str) -> bool {
        let container = engine_endpoint.trim_start_matches("http://");
        self.0.lock().unwrap().get(container).is_some_and(|s| s.1)
    }
    async fn stop(&self, _container_id: &str, _grace: Duration) -> Result<(), EngineError> {
        Ok(())
    }
}

/// The stream: what was published, in order; `fail` publishes to refuse first.
#[derive(Clone, Default)]
struct Stream {
    published: Arc<Mutex<Vec<(String, HealthEventType)>>>,
    fail: Arc<Mutex<usize>>,
}

#[async_trait]
impl HealthEventPublisher for Stream {
    async fn publish(&self, envelope: &HealthEventEnvelope) -> Result<EntryId, Error> {
        let mut fail = self.fail.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(Error::Unavailable("redis down".into()));
        }
        let mut published = self.published.lock().unwrap();
        published.push((
            envelope.game_id().as_str().to_owned(),
            envelope.event_type(),
        ));
        Ok(EntryId::new(1, published.len() as u64))
    }
}

/// The snapshots a restarted supervisor reads back.
#[derive(Clone, Default)]
struct Snapshots(Arc<Mutex<Vec<rtm_ports::HealthSnapshot>>>);

#[async_trait]
impl HealthSnapshotStore for Snapshots {
    async fn upsert(&self, snapshot: &rtm_ports::HealthSnapshot) -> Result<(), Error> {
        self.0.lock().unwrap().push(snapshot.clone());
        Ok(())
    }
    async fn all(&self) -> Result<Vec<rtm_ports::HealthSnapshot>, Error> {
        Ok(self.0.lock().unwrap().clone())
    }
}

fn runtime(game: &str) -> Runtime {
    Runtime {
        game_id: GameId::new(game).unwrap(),
        status: RegistryStatus::Running,
        container_id: format!("c-{game}"),
        engine_endpoint: format!("http://c-{game}"),
    }
}

struct Harness {
    registry: Registry,
    engines: Engines,
    stream: Stream,
    snapshots: Snapshots,
    supervisor: Supervisor<Registry, Engines, Stream, Snapshots>,
}

impl Harness {
    fn new(games: &[&str]) -> Self {
        let registry = Registry::default();
        registry
            .0
            .lock()
            .unwrap()
            .extend(games.iter().map(|g| runtime(g)));
        let engines = Engines::default();
        let stream = Stream::default();
        let snapshots = Snapshots::default();
        let supervisor = Supervisor::new(
            registry.clone(),
            engines.clone(),
            stream.clone(),
            snapshots.clone(),
            SupervisorMetrics::default(),
        );
        Self {
            registry,
            engines,
            stream,
            snapshots,
            supervisor,
        }
    }

    /// One tick; the events it published.
    async fn tick(&mut self) -> Vec<(String, HealthEventType)> {
        let before = self.stream.published.lock().unwrap().len();
        self.supervisor.tick().await.unwrap();
        self.stream.published.lock().unwrap()[before..].to_vec()
    }
}

fn ev(game: &str, event: HealthEventType) -> (String, HealthEventType) {
    (game.to_owned(), event)
}

#[tokio::test]
async fn each_disturbance_is_published_once_as_it_happens() {
    use EngineState as S;
    use HealthEventType as E;
    let mut h = Harness::new(&["g"]);
    h.engines.set("c-g", S::Running, true);
    assert!(
        h.tick().await.is_empty(),
        "a healthy engine, first seen: nothing"
    );
    h.engines.set("c-g", S::Unhealthy, false);
    assert_eq!(
        h.tick().await,
        [ev("g", E::InspectUnhealthy), ev("g", E::ProbeFailed)]
    );
    assert!(h.tick().await.is_empty(), "still paused: nothing new");
    h.engines.set("c-g", S::Running, true);
    assert_eq!(h.tick().await, [ev("g", E::ProbeRecovered)]);
    h.engines.set("c-g", S::OutOfMemory, false);
    assert_eq!(h.tick().await, [ev("g", E::ContainerOom)]);
    h.engines.set("c-g", S::Gone, false);
    assert!(h.tick().await.is_empty(), "an engine over is reported once");
}

#[tokio::test]
async fn a_restart_reports_missing_engines_and_no_false_alarm_for_the_rest() {
    use HealthEventType as E;
    let mut h = Harness::new(&["alive", "missing"]);
    h.engines.set("c-alive", EngineState::Running, true);
    assert_eq!(h.tick().await, [ev("missing", E::ContainerDisappeared)]);
    assert!(h.tick().await.is_empty());
    // An engine stopped by a job: no event, and it leaves the registry's running list.
    h.engines.set("c-alive", EngineState::Stopped, false);
    assert!(h.tick().await.is_empty());
    h.registry.0.lock().unwrap().clear();
    assert!(h.tick().await.is_empty());
    assert!(
        h.supervisor.looks.as_ref().is_some_and(HashMap::is_empty),
        "engines no longer listed are forgotten"
    );
}

#[tokio::test]
async fn an_event_that_could_not_be_published_is_published_at_the_next_look() {
    let mut h = Harness::new(&["g"]);
    h.engines.set("c-g", EngineState::Running, true);
    h.tick().await;
    h.engines.set("c-g", EngineState::Exited, false);
    *h.stream.fail.lock().unwrap() = 1;
    assert!(h.tick().await.is_empty());
    assert_eq!(h.tick().await, [ev("g", HealthEventType::ContainerExited)]);
    assert!(h.tick().await.is_empty());
}

#[tokio::test]
async fn a_restarted_supervisor_repeats_nothing_its_snapshots_already_say() {
    use rtm_domain::SnapshotStatus as St;
    let mut h = Harness::new(&["exited", "failing", "alive", "went"]);
    for (game, status) in [
        ("exited", St::Exited),
        ("failing", St::ProbeFailed),
        ("alive", St::Healthy),
        ("went", St::Healthy),
    ] {
        h.snapshots
            .0
            .lock()
            .unwrap()
            .push(rtm_ports::HealthSnapshot {
                game_id: GameId::new(game).unwrap(),
                container_id: format!("c-{game}"),
                status,
                source: rtm_domain::SnapshotSource::Probe,
                details: "{}".into(),
                observed_at_ms: 1,
            });
    }
    h.engines.set("c-failing", EngineState::Running, false);
    h.engines.set("c-alive", EngineState::Running, true);
    assert_eq!(
        h.tick().await,
        [ev("went", HealthEventType::ContainerDisappeared)]
    );
}
