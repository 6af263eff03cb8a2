//! Pipelined XADD against a real Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use fred::interfaces::{KeysInterface, LuaInterface, StreamsInterface};
use fred::types::Value;
use redis_streams::{StreamWriter, connect};
use stream_consumer::{EntryId, StreamError};
use testkit::redis::{TestRedis, ThrowawayRedis};

#[tokio::test]
async fn a_batch_lands_in_order_with_exact_bytes_and_its_ids() {
    let t = TestRedis::connect().await.unwrap();
    let stream = t.key("st");
    let writer = StreamWriter::new(
        connect(t.url(), common::settings(), "test-writer")
            .await
            .unwrap(),
        &stream,
    );
    let entries: Vec<Vec<(Vec<u8>, Vec<u8>)>> = (0..50)
        .map(|n| {
            vec![
                (b"n".to_vec(), n.to_string().into_bytes()),
                (b"raw".to_vec(), vec![0xff, 0xfe, n]),
                (b"n".to_vec(), b"again".to_vec()),
            ]
        })
        .collect();
    let ids = writer.append(&entries).await.unwrap();
    assert_eq!(ids.len(), 50);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));

    let stored = t.xrange(&stream).await.unwrap();
    assert_eq!(stored.len(), 50);
    for ((stored_id, stored_fields), (id, fields)) in stored.iter().zip(ids.iter().zip(&entries)) {
        assert_eq!(stored_id.parse::<EntryId>().unwrap(), *id);
        assert_eq!(stored_fields, fields);
    }
    t.cleanup().await.unwrap();
}

#[tokio::test]
async fn an_empty_batch_sends_nothing_and_an_entry_without_fields_is_refused() {
    let t = TestRedis::connect().await.unwrap();
    let stream = t.key("st");
    let writer = StreamWriter::new(
        connect(t.url(), common::settings(), "test-writer")
            .await
            .unwrap(),
        &stream,
    );
    let none: &[Vec<(&str, &str)>] = &[];
    assert_eq!(writer.append(none).await.unwrap(), Vec::new());
    let result = writer.append(&[vec![("a", "1")], vec![]]).await;
    assert!(
        matches!(result, Err(StreamError::Protocol(ref m)) if m.contains("entry 1")),
        "{result:?}"
    );
    let exists: i64 = t.client().exists(stream.as_str()).await.unwrap();
    assert_eq!(exists, 0, "nothing of a refused batch is written");
    t.cleanup().await.unwrap();
}

#[tokio::test]
async fn approximate_trimming_bounds_the_stream() {
    let t = TestRedis::connect().await.unwrap();
    let stream = t.key("st");
    let writer = StreamWriter::new(
        connect(t.url(), common::settings(), "test-writer")
            .await
            .unwrap(),
        &stream,
    )
    .with_approx_max_len(10);
    let entries: Vec<Vec<(&str, String)>> = (0..500).map(|n| vec![("n", n.to_string())]).collect();
    writer.append(&entries).await.unwrap();
    let len: u64 = t.client().xlen(stream.as_str()).await.unwrap();
    assert!((10..500).contains(&len), "{len}");
    t.cleanup().await.unwrap();
}

#[tokio::test]
async fn writing_to_a_key_of_another_type_is_a_protocol_error() {
    let t = TestRedis::connect().await.unwrap();
    let key = t.key("notastream");
    let _: Value = t
        .client()
        .set(key.as_str(), "plain", None, None, false)
        .await
        .unwrap();
    let writer = StreamWriter::new(
        connect(t.url(), common::settings(), "test-writer")
            .await
            .unwrap(),
        &key,
    );
    let result = writer.append(&[vec![("a", "1")], vec![("b", "2")]]).await;
    assert!(
        matches!(result, Err(StreamError::Protocol(ref m)) if m.contains("WRONGTYPE")),
        "{result:?}"
    );
    t.cleanup().await.unwrap();
}

/// A server that does not know the script (a new one, or after `SCRIPT FLUSH`) gets its
/// body once and the batch lands all the same, whole and in order.
#[tokio::test]
async fn a_server_without_the_script_gets_its_body_and_the_batch_lands_whole() {
    let server = ThrowawayRedis::start().await.unwrap();
    let url = server.url();
    let t = TestRedis::connect_to(&url).await.unwrap();
    let stream = t.key("st");
    let writer = StreamWriter::new(
        connect(&url, common::settings(), "test-writer")
            .await
            .unwrap(),
        &stream,
    );
    let batch = |from: u32| -> Vec<Vec<(&str, String)>> {
        (from..from + 20)
            .map(|n| vec![("n", n.to_string()), ("kind", "x".to_owned())])
            .collect()
    };
    let first = batch(0);
    let second = batch(20);
    // A new server: the first append meets NOSCRIPT.
    writer.append(&first).await.unwrap();
    t.client().script_flush(false).await.unwrap();
    writer.append(&second).await.unwrap();

    let stored = t.xrange(&stream).await.unwrap();
    let expected: Vec<Vec<(Vec<u8>, Vec<u8>)>> = first
        .iter()
        .chain(&second)
        .map(|fields| {
            fields
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect()
        })
        .collect();
    let got: Vec<Vec<(Vec<u8>, Vec<u8>)>> = stored.into_iter().map(|(_, f)| f).collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn entries_under_given_ids_land_once_however_often_the_batch_is_sent() {
    let t = TestRedis::connect().await.unwrap();
    let stream = t.key("once");
    let writer = StreamWriter::new(
        connect(t.url(), common::settings(), "test-writer")
            .await
            .unwrap(),
        &stream,
    );
    let batch = |ids: &[u64]| -> Vec<(EntryId, Vec<(&'static str, String)>)> {
        ids.iter()
            .map(|&n| {
                (
                    EntryId::new(1_700_000_000_000, n),
                    vec![("n", n.to_string())],
                )
            })
            .collect()
    };
    assert_eq!(
        writer.append_once(&batch(&[1, 2])).await.unwrap(),
        [true, true]
    );
    // A retry that overlaps what landed: only the new one is appended.
    assert_eq!(
        writer.append_once(&batch(&[1, 2, 3])).await.unwrap(),
        [false, false, true]
    );
    let stored = t.xrange(&stream).await.unwrap();
    let ids: Vec<String> = stored.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        ids,
        ["1700000000000-1", "1700000000000-2", "1700000000000-3"]
    );
    // An id below the top that the stream does not hold: another writer was here.
    let refused = writer
        .append_once(&batch(&[0]))
        .await
        .expect_err("below the top and not in the stream");
    assert!(matches!(refused, StreamError::Protocol(_)), "{refused}");
    assert_eq!(t.xrange(&stream).await.unwrap().len(), 3);
    assert!(
        writer
            .append_once::<&str, &str>(&[])
            .await
            .unwrap()
            .is_empty()
    );
    t.cleanup().await.unwrap();
}
