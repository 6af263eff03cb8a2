//! The stream reader against a real Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::interfaces::{KeysInterface, StreamsInterface};
use fred::types::Value;
use redis_streams::RedisStreamReader;
use stream_consumer::{EntryId, StreamError, StreamInfo, StreamReader};
use testkit::redis::TestRedis;

async fn reader(t: &TestRedis) -> RedisStreamReader {
    RedisStreamReader::connect(t.url(), common::settings(), "test-reader")
        .await
        .unwrap()
}

fn id(text: &str) -> EntryId {
    text.parse().unwrap()
}

#[tokio::test]
async fn reads_in_batches_from_zero_and_from_a_given_id_in_order() {
    let t = TestRedis::connect().await.unwrap();
    let stream = t.key("st");
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(id(&t.xadd(&stream, &[("n", n.to_string())]).await.unwrap()));
    }
    let r = reader(&t).await;

    let first = r
        .read_after(&stream, EntryId::ZERO, 3, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(first.iter().map(|e| e.id).collect::<Vec<_>>(), ids[..3]);
    assert_eq!(first[2].field("n"), Some(&b"2"[..]));

    let rest = r
        .read_after(&stream, ids[2], 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), ids[3..]);

    let none = r
        .read_after(&stream, ids[4], 10, Duration::ZERO)
        .await
        .unwrap();
    assert!(none.is_empty());
    t.cleanup().await.unwrap();
}

#[tokio::test]
async fn block_returns_empty_in_time() {
    let t = TestRedis::connect().await.unwrap();
    let stream = t.key("st");
    let r = reader(&t).await;
    let started = Instant::now();
    let got = r
        .read_after(&stream, EntryId::ZERO, 10, Duration::from_millis(200))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(got.is_empty());
    assert!(took >= Duration::from_millis(150), "{took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    t.cleanup().await.unwrap();
}

#[tokio::test]
async fn an_overlong_block_is_bounded() {
    let t = TestRedis::connect().await.unwrap();
    let stream = t.key("st");
    let r = reader(&t).await;
    let started = Instant::now();
    let got = r
        .read_after(&stream, EntryId::ZERO, 10, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(got.is_empty());
    assert!(started.elapsed() < redis_streams::MAX_BLOCK + Duration::from_secs(2));
    t.cleanup().await.unwrap();
}

#[tokio::test]
async fn block_returns_promptly_when_an_entry_arrives() {
    let t = TestRedis::connect().await.unwrap();
    let stream = t.key("st");
    let r = reader(&t).await;
    let writer = testkit::redis::fixture_client(t.url()).await.unwrap();
    let key = stream.clone();
    let add = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let id: String = writer
            .xadd(key.as_str(), false, None::<()>, "*", vec![("k", "v")])
            .await
            .unwrap();
        id
    });
    let started = Instant::now();
    let got = r
        .read_after(&stream, EntryId::ZERO, 10, Duration::from_secs(5))
        .await
        .unwrap();
    let took = started.elapsed();
    let added = add.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, id(&added));
    assert!(took < Duration::from_secs(2), "{took:?}");
    t.cleanup().await.unwrap();
}

#[tokio::test]
async fn odd_entries_are_handed_on_with_exact_bytes() {
    let t = TestRedis::connect().await.unwrap();
    let stream = t.key("st");
    let binary: &[(&[u8], &[u8])] = &[(b"game_id", b"g1"), (b"details", b"\xff\xfe")];
    t.xadd(&stream, binary).await.unwrap();
    t.xadd(&stream, &[("only", "this")]).await.unwrap();
    t.xadd(
        &stream,
        &[
            ("game_id", "g2"),
            ("event_type", "probe_failed"),
            ("extra", "1"),
            ("more", ""),
        ],
    )
    .await
    .unwrap();
    t.xadd(&stream, &[("game_id", "first"), ("game_id", "second")])
        .await
        .unwrap();
    let binary_key: &[(&[u8], &[u8])] = &[(b"\x00\xffkey", b"v")];
    t.xadd(&stream, binary_key).await.unwrap();

    let got = reader(&t)
        .await
        .read_after(&stream, EntryId::ZERO, 100, Duration::ZERO)
        .await
        .unwrap();
    let fields: Vec<Vec<(Bytes, Bytes)>> = got.into_iter().map(|e| e.fields).collect();
    let raw = |pairs: &[(&[u8], &[u8])]| -> Vec<(Bytes, Bytes)> {
        pairs
            .iter()
            .map(|(k, v)| (Bytes::copy_from_slice(k), Bytes::copy_from_slice(v)))
            .collect()
    };
    assert_eq!(
        fields,
        vec![
            raw(binary),
            raw(&[(b"only", b"this")]),
            raw(&[
                (b"game_id", b"g2"),
                (b"event_type", b"probe_failed"),
                (b"extra", b"1"),
                (b"more", b"")
            ]),
            raw(&[(b"game_id", b"first"), (b"game_id", b"second")]),
            raw(binary_key),
        ]
    );
    t.cleanup().await.unwrap();
}

#[tokio::test]
async fn info_of_a_missing_stream_is_none() {
    let t = TestRedis::connect().await.unwrap();
    let stream = t.key("st");
    assert_eq!(reader(&t).await.info(&stream).await.unwrap(), None);
    t.cleanup().await.unwrap();
}

/// Trimming moves the first entry; only `XDEL` moves `max-deleted-entry-id` (Redis 7.0
/// leaves it alone on `XTRIM`/`MAXLEN`, so a consumer detects trimmed entries by comparing
/// its offset with the first entry).
#[tokio::test]
async fn info_reports_bounds_trimming_and_deletions() {
    let t = TestRedis::connect().await.unwrap();
    let stream = t.key("st");
    let r = reader(&t).await;
    for n in 1..=4 {
        t.xadd_with_id(&stream, &format!("{n}-0"), &[("n", "x")])
            .await
            .unwrap();
    }
    assert_eq!(
        r.info(&stream).await.unwrap(),
        Some(StreamInfo {
            length: 4,
            first_entry: Some(EntryId::new(1, 0)),
            last_generated: EntryId::new(4, 0),
            max_deleted: None,
        })
    );

    let trimmed: i64 = t
        .client()
        .xtrim(stream.as_str(), ("MAXLEN", "=", 3))
        .await
        .unwrap();
    assert_eq!(trimmed, 1);
    assert_eq!(
        r.info(&stream).await.unwrap(),
        Some(StreamInfo {
            length: 3,
            first_entry: Some(EntryId::new(2, 0)),
            last_generated: EntryId::new(4, 0),
            max_deleted: None,
        })
    );

    let deleted: i64 = t.client().xdel(stream.as_str(), "3-0").await.unwrap();
    assert_eq!(deleted, 1);
    let trimmed: i64 = t
        .client()
        .xtrim(stream.as_str(), ("MAXLEN", "=", 1))
        .await
        .unwrap();
    assert_eq!(trimmed, 1);
    assert_eq!(
        r.info(&stream).await.unwrap(),
        Some(StreamInfo {
            length: 1,
            first_entry: Some(EntryId::new(4, 0)),
            last_generated: EntryId::new(4, 0),
            max_deleted: Some(EntryId::new(3, 0)),
        })
    );

    let _: i64 = t.client().xdel(stream.as_str(), "4-0").await.unwrap();
    assert_eq!(
        r.info(&stream).await.unwrap(),
        Some(StreamInfo {
            length: 0,
            first_entry: None,
            last_generated: EntryId::new(4, 0),
            max_deleted: Some(EntryId::new(4, 0)),
        })
    );
    t.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_key_of_the_wrong_type_is_a_protocol_error() {
    let t = TestRedis::connect().await.unwrap();
    let key = t.key("notastream");
    let _: Value = t
        .client()
        .set(key.as_str(), "plain", None, None, false)
        .await
        .unwrap();
    let r = reader(&t).await;
    let read = r
        .read_after(&key, EntryId::ZERO, 10, Duration::from_millis(100))
        .await;
    assert!(
        matches!(read, Err(StreamError::Protocol(ref m)) if m.contains("WRONGTYPE")),
        "{read:?}"
    );
    let info = r.info(&key).await;
    assert!(matches!(info, Err(StreamError::Protocol(_))), "{info:?}");
    // The reader's connection is still usable afterwards.
    r.ping().await.unwrap();
    t.cleanup().await.unwrap();
}
