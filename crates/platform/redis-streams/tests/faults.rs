//! Connecting, losing the server and getting it back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use redis_streams::{ConnectError, RedisOffsetStore, RedisStreamReader, StreamWriter, connect};
use stream_consumer::{EntryId, StreamError, StreamOffsetStore, StreamReader};
use testkit::redis::{TestRedis, ThrowawayRedis};

#[tokio::test]
async fn connecting_to_a_closed_port_fails_fast_naming_host_and_port_but_not_the_password() {
    let port = testkit::free_port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}");
    let started = Instant::now();
    let error = connect(&url, common::settings(), "test").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(error, ConnectError::Unreachable { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(!message.contains("hunter2"), "{message}");

    let reader = RedisStreamReader::connect(&url, common::settings(), "test-reader").await;
    assert!(reader.is_err());
}

#[tokio::test]
async fn an_unparsable_url_is_its_own_error() {
    for url in [
        "",
        "localhost:6379",
        "http://localhost",
        "redis://:pw@host:99999",
    ] {
        let error = connect(url, common::settings(), "test").await.unwrap_err();
        assert!(
            matches!(error, ConnectError::InvalidUrl(_)),
            "{url}: {error:?}"
        );
        assert!(
            error.to_string().starts_with("invalid Redis URL"),
            "{error}"
        );
        assert!(!error.to_string().contains("pw"), "{error}");
    }
}

#[tokio::test]
async fn ping_answers_on_a_live_server() {
    let t = TestRedis::connect().await.unwrap();
    let client = connect(t.url(), common::settings(), "test-ping")
        .await
        .unwrap();
    client.ping().await.unwrap();
    assert!(client.server().starts_with("127.0.0.1:") || client.server().contains(':'));
    t.cleanup().await.unwrap();
}

/// Retries `f` until it succeeds or `within` passes.
async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> Result<T, StreamError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StreamError>>,
{
    let deadline = Instant::now() + within;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test]
async fn a_lost_server_is_unavailable_and_the_same_clients_recover_when_it_returns() {
    let mut server = ThrowawayRedis::start().await.unwrap();
    let url = server.url();
    let reader = RedisStreamReader::connect(&url, common::settings(), "test-reader")
        .await
        .unwrap();
    let shared = connect(&url, common::settings(), "test-shared")
        .await
        .unwrap();
    let offsets = RedisOffsetStore::new(shared.clone(), "svc");
    let writer = StreamWriter::new(shared.clone(), "st");

    writer.append(&[vec![("k", "before")]]).await.unwrap();
    assert_eq!(
        reader
            .read_after("st", EntryId::ZERO, 10, Duration::ZERO)
            .await
            .unwrap()
            .len(),
        1
    );

    server.stop().await.unwrap();
    let started = Instant::now();
    let read = reader
        .read_after("st", EntryId::ZERO, 10, Duration::from_millis(100))
        .await;
    assert!(matches!(read, Err(StreamError::Unavailable(_))), "{read:?}");
    assert!(matches!(
        reader.info("st").await,
        Err(StreamError::Unavailable(_))
    ));
    assert!(matches!(
        offsets.load("l").await,
        Err(StreamError::Unavailable(_))
    ));
    assert!(matches!(
        offsets.save("l", EntryId::new(1, 0)).await,
        Err(StreamError::Unavailable(_))
    ));
    assert!(matches!(
        writer.append(&[vec![("k", "v")]]).await,
        Err(StreamError::Unavailable(_))
    ));
    assert!(matches!(
        shared.ping().await,
        Err(StreamError::Unavailable(_))
    ));
    assert!(matches!(
        reader.ping().await,
        Err(StreamError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    server.start_again().await.unwrap();
    // The restarted server is empty (no persistence); the same clients reconnect on their own.
    let batch = [vec![("k", "after")]];
    let ids = eventually(Duration::from_secs(10), || writer.append(&batch))
        .await
        .unwrap();
    let got = eventually(Duration::from_secs(10), || {
        reader.read_after("st", EntryId::ZERO, 10, Duration::from_millis(100))
    })
    .await
    .unwrap();
    assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert_eq!(got[0].field("k"), Some(&b"after"[..]));
    eventually(Duration::from_secs(10), || offsets.save("l", ids[0]))
        .await
        .unwrap();
    assert_eq!(offsets.load("l").await.unwrap(), Some(ids[0]));
    reader.ping().await.unwrap();
}

#[tokio::test]
async fn a_blocked_read_fails_promptly_when_the_server_dies() {
    let mut server = ThrowawayRedis::start().await.unwrap();
    let reader = RedisStreamReader::connect(&server.url(), common::settings(), "test-reader")
        .await
        .unwrap();
    let read = tokio::spawn(async move {
        let started = Instant::now();
        let result = reader
            .read_after("st", EntryId::ZERO, 10, Duration::from_secs(5))
            .await;
        (result, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.stop().await.unwrap();
    let (result, took) = read.await.unwrap();
    assert!(
        matches!(result, Err(StreamError::Unavailable(_))),
        "{result:?}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
}
