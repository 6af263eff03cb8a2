//! The runtime registry and operation log against a real PostgreSQL (a fresh database per
//! test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contracts::{GameId, JobResult};
use pg_kit::PgSettings;
use rtm_adapters::PgRuntimeRegistry;
use rtm_domain::{Origin, RegistryStatus, Runtime};
use rtm_ports::{Error, RuntimeRegistry};
use testkit::pg::TestDb;

fn runtime(game: &str, container: &str) -> Runtime {
    Runtime {
        game_id: GameId::new(game).unwrap(),
        status: RegistryStatus::Running,
        container_id: container.to_owned(),
        engine_endpoint: format!("http://{game}:9000"),
    }
}

#[tokio::test]
async fn a_stop_is_logged_once_and_moves_a_running_runtime_to_stopped() {
    let db = TestDb::create().await.unwrap();
    let pool = pg_kit::connect(db.url(), &PgSettings::default())
        .await
        .unwrap();
    rtm_adapters::migrate(&pool).await.unwrap();
    let registry = PgRuntimeRegistry::new(pool);
    let g = GameId::new("g").unwrap();
    let start = |n: u32| Origin::admin(format!("start-{n}"));
    let job = |id: &str| Origin::stop_job(&id);

    assert_eq!(registry.get(&g).await.unwrap(), None);
    registry
        .register(&runtime("g", "c-1"), &start(1))
        .await
        .unwrap();
    assert_eq!(registry.get(&g).await.unwrap(), Some(runtime("g", "c-1")));
    let again = registry.register(&runtime("g", "c-2"), &start(2)).await;
    assert!(matches!(again, Err(Error::Refused(_))), "{again:?}");

    let success = JobResult::success(g.clone(), "c-1", "http://g:9000");
    assert_eq!(registry.recorded_stop(&job("1-1")).await.unwrap(), None);
    registry.record_stop(&job("1-1"), &success).await.unwrap();
    assert_eq!(
        registry.get(&g).await.unwrap().map(|r| r.status),
        Some(RegistryStatus::Stopped)
    );
    // The same source reference again: the first result stands.
    let other = JobResult::failure(g.clone(), "stop_denied", "no");
    registry.record_stop(&job("1-1"), &other).await.unwrap();
    assert_eq!(
        registry.recorded_stop(&job("1-1")).await.unwrap(),
        Some(success)
    );
    assert_eq!(
        registry.recorded_stop(&Origin::admin("1-1")).await.unwrap(),
        None
    );

    // A stopped runtime starts again, and a failed stop leaves a running one running.
    registry
        .register(&runtime("g", "c-3"), &start(3))
        .await
        .unwrap();
    registry.record_stop(&job("1-2"), &other).await.unwrap();
    assert_eq!(registry.get(&g).await.unwrap(), Some(runtime("g", "c-3")));
    assert_eq!(
        registry.recorded_stop(&job("1-2")).await.unwrap(),
        Some(other)
    );
    db.drop_db().await.unwrap();
}
