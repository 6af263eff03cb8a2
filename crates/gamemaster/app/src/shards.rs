//! `gamemaster shards`: each shard's owner, fencing epoch and checkpoint as PostgreSQL
//! holds them (decision 0023), and how far its checkpoint is behind the health stream's
//! last entry (its lag, in seconds), as a table or `--json`; and how many each owner
//! holds.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::UNIX_EPOCH;

use adapters_postgres::{PgRuntimeRecordStore, ShardTable};
use adapters_redis::{RedisSettings, RedisStreamReader};
use clap::{Arg, ArgMatches, Command};
use pg_kit::PgSettings;
use serde_json::{Value, json};
use service_kit::consumer::connect_postgres;
use service_kit::settings::{Defaults, json_flag, postgres_url, postgres_url_arg, redis_url_arg};
use service_kit::{StartupError, error_chain};
use stream_consumer::StreamReader;

/// The command; `streams` are the settings naming the stream the lag is measured on.
#[must_use]
pub fn command(d: &Defaults, streams: Vec<Arg>) -> Command {
    Command::new("shards")
        .about("Show each shard's owner, fencing epoch, checkpoint (the last entry applied), lag behind the health stream and published mark")
        .arg(postgres_url_arg(d))
        .arg(redis_url_arg(d))
        .args(streams)
        .arg(json_flag())
}

/// Prints the shards; exit code 0 when PostgreSQL could be read.
///
/// # Errors
/// PostgreSQL cannot be reached or read (one line).
pub async fn run(service: &str, m: &ArgMatches) -> Result<ExitCode, StartupError> {
    let settings = PgSettings::default().application_name(format!("{service}-shards"));
    let pool = connect_postgres(&postgres_url(m), &settings).await?;
    let table = PgRuntimeRecordStore::new(pool)
        .shard_table()
        .await
        .map_err(|e| StartupError::new(format!("PostgreSQL: {}", error_chain(&e))))?;
    let report = report(&table, stream_head_ms(service, m).await);
    if m.get_flag("json") {
        println!("{report}");
    } else {
        print!("{}", text(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// The millisecond part of the health stream's last id; `None`, said on stderr, when
/// Redis cannot be read (the lag is then unknown, the rest still shown).
async fn stream_head_ms(service: &str, m: &ArgMatches) -> Option<u64> {
    let text = |id: &str| m.get_one::<String>(id).cloned().unwrap_or_default();
    let name = format!("{service}-shards");
    let head = match RedisStreamReader::connect(&text("redis_url"), RedisSettings::default(), &name)
        .await
    {
        Ok(reader) => reader
            .info(&text("health_events_stream"))
            .await
            .map(|info| info.map(|i| i.last_generated.ms))
            .map_err(|e| error_chain(&e)),
        Err(e) => Err(error_chain(&e)),
    };
    head.unwrap_or_else(|e| {
        eprintln!("{service} shards: lag unknown: Redis: {e}");
        None
    })
}

/// The table as JSON: the layout, the shards held per owner, and every shard (its lag
/// against the stream's last entry at `head_ms`, when known).
fn report(table: &ShardTable, head_ms: Option<u64>) -> Value {
    let mut owners: BTreeMap<&str, usize> = BTreeMap::new();
    for row in &table.shards {
        *owners.entry(row.owner.as_str()).or_default() += 1;
    }
    let shards: Vec<Value> = table
        .shards
        .iter()
        .map(|row| {
            let claimed_at_ms = row.claimed_at.and_then(|t| {
                t.duration_since(UNIX_EPOCH)
                    .ok()
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            });
            json!({
                "shard": row.claim.shard,
                "owner": row.owner,
                "epoch": row.claim.epoch,
                "checkpoint": row.claim.checkpoint.map(|c| c.to_string()),
                "lag_seconds": head_ms.map(|head| {
                    let at = row.claim.checkpoint.map_or(0, |c| c.ms);
                    head.saturating_sub(at) as f64 / 1000.0
                }),
                "published": row.claim.published.map(|c| c.to_string()),
                "claimed_at_ms": claimed_at_ms,
            })
        })
        .collect();
    json!({"shard_count": table.count, "owners": owners, "shards": shards})
}

/// The report as text: one line per owner, then one per shard.
fn text(report: &Value) -> String {
    let show = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = format!("shards: {}\n", show(&report["shard_count"]));
    for (owner, held) in report["owners"].as_object().into_iter().flatten() {
        out.push_str(&format!(
            "owner {}: {} shards\n",
            show(&Value::String(owner.clone())),
            held
        ));
    }
    out.push_str(&format!(
        "{:>5} {:<32} {:>8} {:<24} {:>9} {:<24}\n",
        "shard", "owner", "epoch", "checkpoint", "lag_s", "published"
    ));
    for s in report["shards"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:>5} {:<32} {:>8} {:<24} {:>9} {:<24}\n",
            show(&s["shard"]),
            show(&s["owner"]),
            show(&s["epoch"]),
            show(&s["checkpoint"]),
            show(&s["lag_seconds"]),
            show(&s["published"]),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use adapters_postgres::ShardRow;
    use domain_runtime::{EntryPosition, ShardClaim};

    #[test]
    fn the_report_counts_shards_per_owner_and_shows_each() {
        let row = |shard, owner: &str, checkpoint| ShardRow {
            claim: ShardClaim {
                shard,
                epoch: 3,
                checkpoint,
                published: checkpoint,
            },
            owner: owner.to_owned(),
            claimed_at: Some(UNIX_EPOCH + std::time::Duration::from_millis(5)),
        };
        let table = ShardTable {
            count: Some(3),
            shards: vec![
                row(0, "a", Some(EntryPosition { ms: 7, seq: 1 })),
                row(1, "b", None),
                row(2, "a", None),
            ],
        };
        let report = report(&table, Some(1_007));
        assert_eq!(report["owners"], json!({"a": 2, "b": 1}));
        assert_eq!(report["shards"][0]["checkpoint"], "7-1");
        assert_eq!(report["shards"][0]["published"], "7-1");
        assert_eq!(report["shards"][1]["checkpoint"], Value::Null);
        assert_eq!(report["shards"][2]["claimed_at_ms"], 5);
        assert_eq!(
            report["shards"][0]["lag_seconds"], 1.0,
            "at 7 ms, the head at 1,007"
        );
        assert_eq!(report["shards"][1]["lag_seconds"], 1.007, "never applied");
        assert_eq!(
            super::report(&table, None)["shards"][0]["lag_seconds"],
            Value::Null
        );
        let text = text(&report);
        assert!(
            text.starts_with("shards: 3\nowner a: 2 shards\nowner b: 1 shards\n"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == ["0", "a", "3", "7-1", "1.0", "7-1"]),
            "{text}"
        );
    }
}
