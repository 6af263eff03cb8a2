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

/// A registry on a fresh, migrated database of its own.
async fn migrated_registry() -> (TestDb, PgRuntimeRegistry) {
    let db = TestDb::create().await.unwrap();
    let pool = pg_kit::connect(db.url(), &PgSettings::default())
        .await
        .unwrap();
    rtm_adapters::migrate(&pool).await.unwrap();
    (db, PgRuntimeRegistry::new(pool))
}

async fn recorded(registry: &PgRuntimeRegistry, origin: &Origin) -> Option<JobResult> {
    let mut one = registry
        .recorded_stops(std::slice::from_ref(origin))
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    one.pop().flatten()
}

async fn record(registry: &PgRuntimeRegistry, origin: &Origin, result: &JobResult) {
    registry
        .record_stops(&[(origin.clone(), result.clone())])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_stop_is_logged_once_and_moves_a_running_runtime_to_stopped() {
    let (db, registry) = migrated_registry().await;
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
    assert_eq!(recorded(&registry, &job("1-1")).await, None);
    record(&registry, &job("1-1"), &success).await;
    assert_eq!(
        registry.get(&g).await.unwrap().map(|r| r.status),
        Some(RegistryStatus::Stopped)
    );
    // The same source reference again: the first result stands.
    let other = JobResult::failure(g.clone(), "stop_denied", "no");
    record(&registry, &job("1-1"), &other).await;
    assert_eq!(recorded(&registry, &job("1-1")).await, Some(success));
    assert_eq!(recorded(&registry, &Origin::admin("1-1")).await, None);

    // A stopped runtime starts again, and a failed stop leaves a running one running.
    registry
        .register(&runtime("g", "c-3"), &start(3))
        .await
        .unwrap();
    record(&registry, &job("1-2"), &other).await;
    assert_eq!(registry.get(&g).await.unwrap(), Some(runtime("g", "c-3")));
    assert_eq!(recorded(&registry, &job("1-2")).await, Some(other));
    db.drop_db().await.unwrap();
}

/// Many at once, in one round trip each: lookups answer in the order asked, with gaps
/// for what is not there, and one call records stops for several games, moving only
/// those whose engine it stopped.
#[tokio::test]
async fn lookups_and_records_of_many_keep_their_order_and_their_rules() {
    let (db, registry) = migrated_registry().await;
    let ids: Vec<GameId> = ["b", "nobody", "a"]
        .iter()
        .map(|g| GameId::new(*g).unwrap())
        .collect();
    for game in ["a", "b"] {
        let origin = Origin::admin(format!("start-{game}"));
        registry
            .register(&runtime(game, &format!("c-{game}")), &origin)
            .await
            .unwrap();
    }
    let found = registry.get_many(&ids).await.unwrap();
    assert_eq!(
        found,
        [Some(runtime("b", "c-b")), None, Some(runtime("a", "c-a"))]
    );
    assert!(registry.get_many(&[]).await.unwrap().is_empty());

    let stops = [
        (
            Origin::stop_job(&"5-1"),
            JobResult::success(ids[2].clone(), "c-a", "http://a:9000"),
        ),
        (
            Origin::stop_job(&"5-2"),
            JobResult::failure(ids[0].clone(), "stop_denied", "no"),
        ),
        (
            Origin::stop_job(&"5-3"),
            JobResult::failure(ids[1].clone(), "not_found", "none"),
        ),
    ];
    registry.record_stops(&stops).await.unwrap();
    let status = |g: &str| {
        let registry = registry.clone();
        let g = GameId::new(g).unwrap();
        async move { registry.get(&g).await.unwrap().map(|r| r.status) }
    };
    assert_eq!(status("a").await, Some(RegistryStatus::Stopped));
    assert_eq!(
        status("b").await,
        Some(RegistryStatus::Running),
        "a failed stop moves nothing"
    );
    let origins: Vec<Origin> = stops
        .iter()
        .map(|(o, _)| o.clone())
        .chain([Origin::stop_job(&"5-9")])
        .collect();
    let logged = registry.recorded_stops(&origins).await.unwrap();
    let expected: Vec<Option<JobResult>> = stops
        .iter()
        .map(|(_, r)| Some(r.clone()))
        .chain([None])
        .collect();
    assert_eq!(logged, expected);

    // A value the database cannot hold refuses the whole call.
    let bad = [
        (
            Origin::stop_job(&"6-1"),
            JobResult::failure(ids[0].clone(), "x", "fine"),
        ),
        (
            Origin::stop_job(&"6-2"),
            JobResult::failure(ids[0].clone(), "x", "NUL \0 here"),
        ),
    ];
    let refused = registry.record_stops(&bad).await;
    assert!(matches!(refused, Err(Error::Refused(_))), "{refused:?}");
    assert_eq!(
        registry.recorded_stops(&[bad[0].0.clone()]).await.unwrap(),
        [None]
    );
    db.drop_db().await.unwrap();
}
