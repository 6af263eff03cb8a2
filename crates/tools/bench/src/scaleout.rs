//! Phase 6: several `gamemaster` instances on a local Redis Cluster draining one backlog
//! together, against one instance alone on the same cluster and entries.
//!
//! 1. Start a cluster of three masters and three replicas (`testkit`), put G games in the
//!    table and N events over them in one stream, noting each shard's last entry.
//! 2. One instance drains it: timed from its spawn until every shard's checkpoint is at
//!    its last entry; its CPU time.
//! 3. The rows and checkpoints are put back; K instances, spawned together, drain the same
//!    entries; the same timing, each one's CPU time and how many entries it read only to
//!    leave them to another (`not_owned`). The rows must equal the lone instance's.
//! 4. Reported: both rates and their ratio, and what getting entries to their shards
//!    costs on its own (decision 0024: every instance reads the whole stream): the CPU
//!    the K instances spent beyond the lone one's, per entry left to another.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use contracts::shards::ShardCount;
use redis_streams::RedisSettings;
use stream_consumer::EntryId;
use testkit::redis::ThrowawayCluster;

use crate::fixture::Fixture;
use crate::scale::Gamemaster;
use crate::{Options, rate, workload};

/// The health stream on the cluster, and the lobby stream of each run.
const STREAM: &str = "bench:scaleout:health";

/// What one run measured.
struct Drained {
    took: Duration,
    /// Per instance: CPU time, and entries it read but left to another.
    instances: Vec<(Duration, f64)>,
}

/// Runs the phase; `Ok(false)` when the instances' rows differ from the lone one's or an
/// instance did not exit 0.
pub async fn run(fx: &Fixture, opts: &Options) -> anyhow::Result<bool> {
    let (events, games, k) = (
        opts.scale_out_events,
        opts.scale_out_games,
        opts.scale_out_instances,
    );
    println!(
        "\n## Scale-out: {k} gamemaster instances on a local Redis Cluster draining {events} events over {games} games, against one\n"
    );
    let cluster = ThrowawayCluster::start().await?;
    let redis =
        redis_streams::connect(&cluster.url(), RedisSettings::default(), "bench-cluster").await?;
    fx.seed_games(games).await?;
    let load = workload::events(events, games, opts.seed);
    let now = workload::now_ms();
    let entries = load
        .iter()
        .map(|(g, kind)| workload::fields(*g, *kind, now));
    let ids = workload::preload_ids(&redis, STREAM, entries).await?;
    let last = last_per_shard(&load, &ids);

    let (lone, lone_ok) = drain(fx, &cluster.url(), &last, 1, opts).await?;
    let lone_rows = fx.rows().await?;
    fx.reset_games().await?;
    let (many, many_ok) = drain(fx, &cluster.url(), &last, k, opts).await?;
    let same = fx.rows().await? == lone_rows;
    report(events, k, &lone, &many, same);
    redis.quit().await;
    Ok(lone_ok && many_ok && same)
}

/// Each shard's last entry, from the events in order and their ids.
fn last_per_shard(
    events: &[(usize, domain_runtime::HealthEventType)],
    ids: &[EntryId],
) -> BTreeMap<u32, EntryId> {
    let count = ShardCount::default();
    let mut last = BTreeMap::new();
    for ((game, _), id) in events.iter().zip(ids) {
        last.insert(count.shard_of(workload::game_id(*game).as_bytes()), *id);
    }
    last
}

/// `k` instances spawned together drain the stream: timed from the first spawn until
/// every shard's checkpoint is at its last entry. `true` when every one exited 0.
async fn drain(
    fx: &Fixture,
    redis_url: &str,
    last: &BTreeMap<u32, EntryId>,
    k: usize,
    opts: &Options,
) -> anyhow::Result<(Drained, bool)> {
    let started = Instant::now();
    let mut spawns = tokio::task::JoinSet::new();
    for i in 1..=k {
        let (db, url, batch) = (fx.db_url.clone(), redis_url.to_owned(), opts.batch_size);
        spawns.spawn(async move {
            let (id, lobby) = (
                format!("bench-{k}-{i}"),
                format!("bench:scaleout:lobby_{k}"),
            );
            let env = [("GAMEMASTER_INSTANCE_ID", id.as_str())];
            Gamemaster::start_as(&db, &url, (STREAM, &lobby), batch, &env).await
        });
    }
    let mut instances = Vec::new();
    while let Some(spawned) = spawns.join_next().await {
        instances.push(spawned??);
    }
    wait_drained(fx, last, &mut instances).await?;
    let took = started.elapsed();
    let mut measured = Vec::new();
    let mut ok = true;
    for gm in instances {
        let metrics = gm.metrics().await?;
        let left = testkit::http::metric_value(
            &metrics,
            r#"gamemaster_health_events_consumed_total{outcome="not_owned"}"#,
        );
        measured.push((gm.cpu(), left));
        ok &= gm.stop().await? == Some(0);
    }
    Ok((
        Drained {
            took,
            instances: measured,
        },
        ok,
    ))
}

/// Polls the checkpoints until every shard's is at its last entry (10 minutes at most).
async fn wait_drained(
    fx: &Fixture,
    last: &BTreeMap<u32, EntryId>,
    instances: &mut [Gamemaster],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let c = fx.pool.get().await?;
    loop {
        let rows = c
            .query(
                "SELECT shard, checkpoint_ms, checkpoint_seq FROM gm_shards",
                &[],
            )
            .await?;
        let at: BTreeMap<u32, EntryId> = rows
            .iter()
            .filter_map(|r| {
                let shard = u32::try_from(r.get::<_, i32>(0)).ok()?;
                let ms = u64::try_from(r.get::<_, Option<i64>>(1)?).ok()?;
                let seq = u64::try_from(r.get::<_, Option<i64>>(2)?).ok()?;
                Some((shard, EntryId::new(ms, seq)))
            })
            .collect();
        if last.iter().all(|(shard, id)| at.get(shard) >= Some(id)) {
            return Ok(());
        }
        for gm in instances.iter_mut() {
            gm.check_running()?;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the instances did not drain in time"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn report(events: usize, k: usize, lone: &Drained, many: &Drained, same: bool) {
    let cpu = |d: &Drained| {
        d.instances
            .iter()
            .map(|(c, _)| c.as_secs_f64())
            .sum::<f64>()
    };
    let left: f64 = many.instances.iter().map(|(_, l)| l).sum();
    println!(
        "| instances | drain s | events/s | CPU s (all instances) | entries read and left to another |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for (n, d) in [(1, lone), (k, many)] {
        let left: f64 = d.instances.iter().map(|(_, l)| l).sum();
        println!(
            "| {n} | {:.2} | {:.0} | {:.2} | {left:.0} |",
            d.took.as_secs_f64(),
            rate(events, d.took),
            cpu(d)
        );
    }
    let extra = cpu(many) - cpu(lone);
    println!(
        "\n{k} instances against one: {:.2}× the rate; getting entries to their shards (reading the whole stream in each instance) cost {extra:.2} CPU s more, {:.2} µs per entry left to another",
        rate(events, many.took) / rate(events, lone.took),
        if left > 0.0 { extra * 1e6 / left } else { 0.0 }
    );
    if same {
        println!("the {k} instances left the same runtime_records rows as the lone one");
    } else {
        println!("FAILED: the {k} instances left other runtime_records rows than the lone one");
    }
    println!(
        "(timed from the spawn of the first instance until every shard's checkpoint was at its last entry)"
    );
}
