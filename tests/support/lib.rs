//! Helpers for the end-to-end tests that are about the services' shared contracts (rows,
//! stream entries); fixtures and servers come from `testkit`.

use std::collections::BTreeMap;

use anyhow::Context;

/// An entry of `gm:lobby_events` as text fields.
pub type Fields = BTreeMap<String, String>;

/// Every entry of `stream` as (id, text fields), in stream order.
///
/// # Errors
/// Redis cannot be reached or a field is not UTF-8.
pub async fn entries(
    redis: &testkit::redis::TestRedis,
    stream: &str,
) -> anyhow::Result<Vec<(String, Fields)>> {
    redis
        .xrange(stream)
        .await?
        .into_iter()
        .map(|(id, pairs)| {
            let fields = pairs
                .into_iter()
                .map(|(k, v)| {
                    Ok((
                        String::from_utf8(k.to_vec())?,
                        String::from_utf8(v.to_vec())?,
                    ))
                })
                .collect::<anyhow::Result<Fields>>()?;
            Ok((id, fields))
        })
        .collect()
}

/// `(status, engine_health)` of every runtime record, by game id.
///
/// # Errors
/// The query failed.
pub async fn runtime_rows(
    client: &tokio_postgres::Client,
) -> anyhow::Result<BTreeMap<String, (String, String)>> {
    let rows = client
        .query(
            "SELECT game_id, status, engine_health FROM runtime_records",
            &[],
        )
        .await
        .context("read runtime_records")?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

/// Opens a plain client on `url`, its connection driven by a background task.
///
/// # Errors
/// The server cannot be reached.
pub async fn pg_client(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connect to {url}"))?;
    tokio::spawn(connection);
    Ok(client)
}
