//! `<binary> status`: each consumer's stored position, its stream's first and last ids,
//! how far behind it is, its dead letters, and whether the running instance is ready; as
//! a table, or as JSON for machines (`--json`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Arg, ArgMatches, Command};
use redis_streams::{RedisClient, RedisOffsetStore, RedisSettings, RedisStreamReader};
use serde_json::{Value, json};
use stream_consumer::{StreamOffsetStore, StreamReader};

use crate::settings::{CommonSettings, Defaults, json_flag, redis_url_arg};
use crate::{StartupError, error_chain};

/// How long the running instance gets to answer `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// A consumer `status` reports: its offset label and the id of the setting naming its
/// stream.
#[derive(Debug, Clone, Copy)]
pub struct Consumed {
    /// The offset label, e.g. `health_events`.
    pub label: &'static str,
    /// The id of the stream setting, e.g. `health_events_stream`.
    pub stream_setting: &'static str,
}

/// The `status` command: the Redis URL, the ops address of the running instance, and
/// the settings naming the streams the service consumes (`streams`, as `run` has them).
#[must_use]
pub fn command(d: &Defaults, streams: Vec<Arg>) -> Command {
    let http = CommonSettings::args(d)
        .into_iter()
        .find(|a| a.get_id() == "http_addr")
        .unwrap_or_else(|| Arg::new("http_addr"));
    Command::new("status")
        .about("Show each consumer's position, its stream's bounds and lag, its dead letters, and the running instance's readiness")
        .arg(redis_url_arg(d))
        .arg(http)
        .args(streams)
        .arg(json_flag())
}

/// Runs `status` for `service`; exit code 0 when Redis could be read.
///
/// # Errors
/// Redis cannot be reached or answers nonsense (one line).
pub async fn run(
    service: &str,
    consumed: &[Consumed],
    m: &ArgMatches,
) -> Result<ExitCode, StartupError> {
    let url = m
        .get_one::<String>("redis_url")
        .cloned()
        .unwrap_or_default();
    let redis_error = |e: &(dyn std::error::Error + 'static)| {
        StartupError::new(format!("Redis: {}", error_chain(e)))
    };
    let client =
        redis_streams::connect(&url, RedisSettings::default(), &format!("{service}-status"))
            .await
            .map_err(|e| redis_error(&e))?;
    let reader = RedisStreamReader::connect(
        &url,
        RedisSettings::default(),
        &format!("{service}-status-reader"),
    )
    .await
    .map_err(|e| redis_error(&e))?;
    let mut consumers = Vec::with_capacity(consumed.len());
    for c in consumed {
        let stream = m
            .get_one::<String>(c.stream_setting)
            .cloned()
            .unwrap_or_default();
        consumers.push(
            consumer(service, &client, &reader, c.label, &stream)
                .await
                .map_err(|e| redis_error(&*e))?,
        );
    }
    let addr = m.get_one::<SocketAddr>("http_addr").copied();
    let readiness = match addr {
        Some(addr) => readiness(addr).await,
        None => json!({"state": "unknown"}),
    };
    let report = json!({"service": service, "consumers": consumers, "instance": readiness});
    if m.get_flag("json") {
        println!("{report:#}");
    } else {
        print!("{}", table(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// One consumer's figures.
async fn consumer(
    service: &str,
    client: &RedisClient,
    reader: &RedisStreamReader,
    label: &str,
    stream: &str,
) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
    let position = RedisOffsetStore::new(client.clone(), service)
        .load(label)
        .await?;
    let info = reader.info(stream).await?;
    let dead = client
        .stream_len(&contracts::dead_letters::stream_for(service, label))
        .await?;
    let lag = match (info, position) {
        (Some(info), Some(p)) => Some(info.last_generated.ms.saturating_sub(p.ms) as f64 / 1000.0),
        // Never stored: the consumer starts at the stream's first entry.
        (Some(info), None) => info
            .first_entry
            .map(|first| info.last_generated.ms.saturating_sub(first.ms) as f64 / 1000.0),
        (None, _) => None,
    };
    Ok(json!({
        "label": label,
        "stream": stream,
        "position": position.map(|p| p.to_string()),
        "stream_length": info.map(|i| i.length),
        "first_entry": info.and_then(|i| i.first_entry).map(|e| e.to_string()),
        "last_entry": info.map(|i| i.last_generated.to_string()),
        "lag_seconds": lag,
        "dead_letters": dead,
    }))
}

/// What the running instance's `/readyz` says, with what else it shows (the Game
/// Master's `shards`) beside.
async fn readiness(addr: SocketAddr) -> Value {
    match crate::http::request(addr, "GET", "/readyz", READY_TIMEOUT).await {
        Ok((200, body)) => {
            let mut ready = json!({"http_addr": addr.to_string(), "state": "ready"});
            for (name, value) in shown(&body) {
                ready[name.as_str()] = value;
            }
            ready
        }
        Ok((code, body)) => {
            json!({"http_addr": addr.to_string(), "state": "not ready", "status": code, "detail": body.trim()})
        }
        Err(e) => {
            json!({"http_addr": addr.to_string(), "state": "not running", "detail": e.to_string()})
        }
    }
}

/// The fields of the instance's report that say how it is reached and whether it is
/// ready; any other came from its `/readyz`.
const READINESS_FIELDS: [&str; 4] = ["http_addr", "state", "status", "detail"];

/// The parts of a `/readyz` body beside its status (none when it is not JSON).
fn shown(body: &str) -> serde_json::Map<String, Value> {
    let Ok(Value::Object(mut fields)) = serde_json::from_str(body) else {
        return serde_json::Map::new();
    };
    for known in READINESS_FIELDS {
        fields.remove(known);
    }
    fields
}

/// The report as a table.
fn table(report: &Value) -> String {
    let text = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.as_f64().map_or_else(
            || n.to_string(),
            |f| {
                if f.fract() == 0.0 {
                    format!("{f:.0}")
                } else {
                    format!("{f:.3}")
                }
            },
        ),
        other => other.to_string(),
    };
    let mut out = format!(
        "{:<18} {:<28} {:<20} {:<20} {:<20} {:>9} {:>12}\n",
        "consumer", "stream", "position", "first", "last", "lag s", "dead letters"
    );
    for c in report["consumers"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<18} {:<28} {:<20} {:<20} {:<20} {:>9} {:>12}\n",
            text(&c["label"]),
            text(&c["stream"]),
            text(&c["position"]),
            text(&c["first_entry"]),
            text(&c["last_entry"]),
            text(&c["lag_seconds"]),
            text(&c["dead_letters"]),
        ));
    }
    let i = &report["instance"];
    out.push_str(&format!(
        "instance on {}: {}",
        text(&i["http_addr"]),
        text(&i["state"])
    ));
    if !i["detail"].is_null() {
        out.push_str(&format!(" ({})", text(&i["detail"])));
    }
    out.push('\n');
    let extra = i.as_object().into_iter().flatten();
    for (name, value) in extra.filter(|(n, _)| !READINESS_FIELDS.contains(&n.as_str())) {
        out.push_str(&format!("  {name}: {value}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_every_consumer_and_the_instance() {
        let report = json!({
            "consumers": [{"label": "health_events", "stream": "runtime:health_events", "position": "5-0",
                "first_entry": "1-0", "last_entry": "9-0", "lag_seconds": 0.004, "dead_letters": 2}],
            "instance": {"http_addr": "127.0.0.1:8080", "state": "not ready", "detail": "postgres: down"},
        });
        let shown = table(&report);
        assert!(
            shown.contains("health_events      runtime:health_events"),
            "{shown}"
        );
        assert!(shown.contains("0.004"), "{shown}");
        assert!(
            shown.ends_with("instance on 127.0.0.1:8080: not ready (postgres: down)\n"),
            "{shown}"
        );
    }

    #[test]
    fn what_a_ready_instance_shows_is_kept_and_printed_under_it() {
        let shown = shown(r#"{"status":"ready","shards":{"owned":[1,2]}}"#);
        assert_eq!(Value::Object(shown), json!({"shards": {"owned": [1, 2]}}));
        assert!(super::shown(r#"{"status":"ready"}"#).is_empty());
        assert!(super::shown("not json").is_empty());
        let report = json!({
            "consumers": [],
            "instance": {"http_addr": "127.0.0.1:8080", "state": "ready", "shards": {"owned": [1, 2]}},
        });
        assert!(
            table(&report)
                .ends_with("instance on 127.0.0.1:8080: ready\n  shards: {\"owned\":[1,2]}\n"),
            "{}",
            table(&report)
        );
    }
}
