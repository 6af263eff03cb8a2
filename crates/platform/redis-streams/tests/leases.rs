//! Membership and shard leases against a real Redis, standalone and on a local cluster of
//! three masters and three replicas (every key under one hash tag, so each script runs in
//! one slot).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use fred::interfaces::KeysInterface;
use redis_streams::{ChangeNotices, RedisShardLeases, connect};
use testkit::redis::{TestRedis, ThrowawayCluster};

const LONG: Duration = Duration::from_secs(5);
const SHORT: Duration = Duration::from_millis(150);

/// The whole behaviour on `url`, under a service name of its own; everything it wrote is
/// gone at the end (released leases are deleted, the last member's leave deletes the set).
async fn members_and_leases_behave(url: &str, service: &str) {
    let client = connect(url, common::settings(), "test-leases")
        .await
        .unwrap();
    let leases = RedisShardLeases::new(client, service);
    assert_eq!(
        leases.members_key(),
        format!("{service}:{{shards}}:members")
    );
    let mut notices = ChangeNotices::subscribe(
        url,
        common::settings(),
        "test-notices",
        &leases.changes_channel(),
    )
    .await
    .unwrap();

    // Members: alive while they beat, gone when the beat lapses or they leave; each beat
    // says how soon the first other member lapses.
    let beat = |member: &'static str, ttl| {
        let leases = &leases;
        async move { leases.heartbeat(member, ttl).await.unwrap() }
    };
    assert_eq!(beat("a", LONG).await, (vec!["a".to_owned()], None));
    let (alive, a_lapses) = beat("b", SHORT).await;
    assert_eq!(alive, ["a", "b"]);
    assert!(
        a_lapses.is_some_and(|d| d > SHORT && d <= LONG),
        "{a_lapses:?}"
    );
    let (alive, b_lapses) = beat("a", LONG).await;
    assert_eq!(alive, ["a", "b"]);
    assert!(b_lapses.is_some_and(|d| d <= SHORT), "{b_lapses:?}");
    tokio::time::sleep(SHORT * 2).await;
    assert_eq!(beat("a", LONG).await.0, ["a"], "b lapsed");
    assert_eq!(beat("b", LONG).await.0, ["a", "b"]);
    leases.leave("b").await.unwrap();
    assert_eq!(beat("a", LONG).await.0, ["a"], "b left");

    // Leases: a free one is taken, a held one is left to its holder, renewing keeps it.
    assert_eq!(
        leases.hold("a", &[0, 1, 2, 3], LONG).await.unwrap(),
        [0, 1, 2, 3]
    );
    assert_eq!(leases.hold("b", &[2, 3, 4], LONG).await.unwrap(), [4]);
    assert_eq!(
        leases.hold("a", &[0, 1, 2, 3], LONG).await.unwrap(),
        [0, 1, 2, 3]
    );
    // Releasing gives up only what the member holds; the other can take it at once.
    assert_eq!(leases.release("a", &[3, 4]).await.unwrap(), 1);
    assert_eq!(leases.hold("b", &[3], LONG).await.unwrap(), [3]);
    // A lease that is not renewed lapses, and another member takes it.
    assert_eq!(leases.hold("a", &[9], SHORT).await.unwrap(), [9]);
    assert!(leases.hold("b", &[9], LONG).await.unwrap().is_empty());
    tokio::time::sleep(SHORT * 2).await;
    assert_eq!(leases.hold("b", &[9], LONG).await.unwrap(), [9]);
    assert!(leases.hold("a", &[], LONG).await.unwrap().is_empty());

    assert_eq!(leases.release("b", &[0]).await.unwrap(), 0, "a holds it");
    assert_eq!(leases.release("a", &[0, 1, 2, 9]).await.unwrap(), 3);
    assert_eq!(leases.release("b", &[3, 4, 9]).await.unwrap(), 3);
    leases.leave("a").await.unwrap();

    // Announced: each join (b's twice, once after it lapsed), leave and release that gave
    // a lease up; not a renewal, nor a release of nothing.
    let mut announced = Vec::new();
    while let Ok(Some(notice)) = tokio::time::timeout(SHORT * 3, notices.next()).await {
        announced.push(notice);
    }
    assert_eq!(
        announced,
        [
            "joined", "joined", "joined", "left", "released", "released", "released", "left"
        ]
    );
    notices.close().await;
}

#[tokio::test]
async fn members_and_leases_on_a_standalone_server() {
    let t = TestRedis::connect().await.unwrap();
    let service = testkit::unique_name("leases");
    t.track(format!("{service}:{{shards}}:members"));
    members_and_leases_behave(t.url(), &service).await;
    let mut written = vec![format!("{service}:{{shards}}:members")];
    written.extend((0..10).map(|s| format!("{service}:{{shards}}:lease:{s}")));
    let left: i64 = t.client().exists(written).await.unwrap();
    assert_eq!(left, 0, "nothing is left behind");
    t.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_leases_on_a_cluster() {
    let cluster = ThrowawayCluster::start().await.unwrap();
    members_and_leases_behave(&cluster.url(), "gamemaster").await;
}
