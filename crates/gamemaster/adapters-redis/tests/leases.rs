//! The Game Master's shard leases through the port, against a real Redis: what the lease
//! keeper relies on (members in name order, a lease held by one member at a time, released
//! leases free at once, a member that leaves gone at once).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use adapters_redis::{RedisLeases, RedisSettings, connect};
use ports::ShardLeases;
use testkit::redis::TestRedis;

const TTL: Duration = Duration::from_secs(5);

#[tokio::test]
async fn members_and_leases_through_the_port() {
    let t = TestRedis::connect().await.unwrap();
    // A service name of its own: its keys are `<service>:{shards}:…`.
    let service = t.key("gm-leases");
    let client = connect(t.url(), RedisSettings::default(), "test")
        .await
        .unwrap();
    let leases = RedisLeases::new(client, &service);

    let b = leases.heartbeat("gm-b", TTL).await.unwrap();
    assert_eq!((b.alive, b.next_lapse), (vec!["gm-b".to_owned()], None));
    let a = leases.heartbeat("gm-a", TTL).await.unwrap();
    assert_eq!(a.alive, ["gm-a", "gm-b"]);
    let lapse = a.next_lapse.expect("gm-b lapses some time");
    assert!(lapse <= TTL && lapse > TTL / 2, "gm-b lapses in {lapse:?}");
    assert_eq!(
        leases.hold("gm-a", &[1, 2, 3], TTL).await.unwrap(),
        [1, 2, 3]
    );
    assert_eq!(
        leases.hold("gm-b", &[2, 3, 4], TTL).await.unwrap(),
        [4],
        "2 and 3 are gm-a's"
    );
    assert_eq!(
        leases.hold("gm-a", &[1, 2, 3], TTL).await.unwrap(),
        [1, 2, 3],
        "renewed"
    );
    leases.release("gm-a", &[2, 4]).await.unwrap();
    assert_eq!(
        leases.hold("gm-b", &[2, 3, 4], TTL).await.unwrap(),
        [2, 4],
        "2 is free at once; gm-a could not release gm-b's 4"
    );
    leases.leave("gm-a").await.unwrap();
    assert_eq!(leases.heartbeat("gm-b", TTL).await.unwrap().alive, ["gm-b"]);

    leases.release("gm-a", &[1, 3]).await.unwrap();
    leases.release("gm-b", &[2, 4]).await.unwrap();
    leases.leave("gm-b").await.unwrap();
    t.cleanup().await.unwrap();
}
