//! The offset store against a real Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use fred::interfaces::KeysInterface;
use redis_streams::{RedisOffsetStore, connect};
use stream_consumer::{EntryId, StreamError, StreamOffsetStore};
use testkit::redis::TestRedis;

async fn store(t: &TestRedis) -> RedisOffsetStore {
    let service = testkit::unique_name("svc");
    let client = connect(t.url(), common::settings(), "test-offsets")
        .await
        .unwrap();
    let store = RedisOffsetStore::new(client, &service);
    t.track(store.key("health_events"));
    store
}

#[tokio::test]
async fn absent_offset_is_none() {
    let t = TestRedis::connect().await.unwrap();
    let store = store(&t).await;
    assert_eq!(store.load("health_events").await.unwrap(), None);
    t.cleanup().await.unwrap();
}

#[tokio::test]
async fn offsets_round_trip_as_plain_strings_under_the_contract_key() {
    let t = TestRedis::connect().await.unwrap();
    let store = store(&t).await;
    let key = store.key("health_events");
    assert!(key.ends_with(":stream_offsets:health_events"), "{key}");

    let id = EntryId::new(1_700_000_000_000, 42);
    store.save("health_events", id).await.unwrap();
    assert_eq!(store.load("health_events").await.unwrap(), Some(id));
    let raw: String = t.client().get(key.as_str()).await.unwrap();
    assert_eq!(raw, "1700000000000-42");

    store
        .save("health_events", EntryId::new(1_700_000_000_001, 0))
        .await
        .unwrap();
    assert_eq!(
        store.load("health_events").await.unwrap(),
        Some(EntryId::new(1_700_000_000_001, 0))
    );
    t.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_stored_value_that_is_not_an_id_is_a_protocol_error_naming_the_key() {
    let t = TestRedis::connect().await.unwrap();
    let store = store(&t).await;
    let key = store.key("health_events");
    for garbage in ["not-an-id", "", "1-2-3"] {
        let _: () = t
            .client()
            .set(key.as_str(), garbage, None, None, false)
            .await
            .unwrap();
        match store.load("health_events").await {
            Err(StreamError::Protocol(message)) => assert!(message.contains(&key), "{message}"),
            other => panic!("{garbage:?}: expected a protocol error, got {other:?}"),
        }
    }
    let _: () = t
        .client()
        .set(key.as_str(), &b"\xff\xfe"[..], None, None, false)
        .await
        .unwrap();
    assert!(matches!(
        store.load("health_events").await,
        Err(StreamError::Protocol(_))
    ));
    t.cleanup().await.unwrap();
}

#[tokio::test]
async fn an_offset_key_of_another_type_is_a_protocol_error() {
    let t = TestRedis::connect().await.unwrap();
    let store = store(&t).await;
    t.xadd(&store.key("health_events"), &[("a", "1")])
        .await
        .unwrap();
    assert!(matches!(
        store.load("health_events").await,
        Err(StreamError::Protocol(_))
    ));
    t.cleanup().await.unwrap();
}
