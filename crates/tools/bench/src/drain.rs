//! Phase 1: the worker as built (a) against the seed-shaped baseline (b), alternating.

use std::time::{Duration, Instant};

use adapters_postgres::PgRuntimeRecordStore;
use adapters_redis::RedisLobbyEventsPublisher;
use domain_runtime::ShardCount;
use redis_streams::{RedisOffsetStore, RedisSettings, RedisStreamReader};
use stream_consumer::{Consumer, ConsumerConfig, ConsumerHealth, ConsumerMetrics, EntryId, Step};
use worker_healthevents::{
    HealthEventsWorker, OFFSET_LABEL, WorkerMetrics, claim_all, system_clock,
};

use crate::fixture::{Fixture, Rows, Snapshots};
use crate::{Options, baseline, median, rate, workload};

/// Drains `stream` up to `last` with the worker as the binary builds it (in process, so
/// the timing has no process start in it).
pub async fn worker_drain(
    fx: &Fixture,
    stream: &str,
    lobby: &str,
    service: &str,
    last: EntryId,
    batch_size: usize,
) -> anyhow::Result<Duration> {
    let reader =
        RedisStreamReader::connect(&fx.redis_url, RedisSettings::default(), "bench-reader").await?;
    let store = PgRuntimeRecordStore::new(fx.pool.clone());
    let owner = claim_all(&store, "bench", ShardCount::default()).await?;
    let worker = HealthEventsWorker::new(
        store,
        RedisLobbyEventsPublisher::new(fx.redis.clone(), lobby),
        system_clock(),
        WorkerMetrics::default(),
        owner,
    );
    let mut config = ConsumerConfig::new(stream, OFFSET_LABEL);
    config.batch_size = batch_size;
    config.block = Duration::from_millis(100);
    let mut consumer = Consumer::new(
        reader,
        RedisOffsetStore::new(fx.redis.clone(), service),
        worker,
        config,
        ConsumerMetrics::default(),
        ConsumerHealth::default(),
    );
    let started = Instant::now();
    while consumer.position().is_none_or(|p| p < last) {
        if let Step::Retry { stage, delay } = consumer.step().await {
            anyhow::bail!(
                "the worker hit a transient failure at {stage:?} (retry in {delay:?}) during the benchmark"
            );
        }
    }
    Ok(started.elapsed())
}

/// What one side's drain left: how long it took, and the rows and snapshot sequences.
pub struct Side {
    /// The drain's time.
    pub took: Duration,
    /// Every runtime record afterwards.
    pub rows: Rows,
    /// Every game's snapshots on the side's own lobby stream.
    pub snapshots: Snapshots,
}

/// One drain from scratch: games reset, the side's offset key gone, `drain` run with its
/// lobby stream and service name (both named after `tag`), what it left read, its keys
/// deleted.
///
/// # Errors
/// A server failed.
pub async fn drain_side(
    fx: &Fixture,
    tag: &str,
    drain: impl AsyncFnOnce(&str, &str) -> anyhow::Result<Duration>,
) -> anyhow::Result<Side> {
    let lobby = fx.key(&format!("drain:lobby_{tag}")).await?;
    let service = format!("bench-{tag}");
    let offset = format!("{service}:stream_offsets:{OFFSET_LABEL}");
    fx.del(std::slice::from_ref(&offset)).await?;
    fx.reset_games().await?;
    let took = drain(&lobby, &service).await?;
    let rows = fx.rows().await?;
    let snapshots = fx.snapshots(&lobby).await?;
    fx.del(&[lobby, offset]).await?;
    Ok(Side {
        took,
        rows,
        snapshots,
    })
}

/// How one round ended.
enum Round {
    /// The worker alone (`--skip baseline`): its rate.
    WorkerOnly(f64),
    /// Both sides, with identical results: their rates.
    Both(f64, f64),
    /// The sides left different rows or snapshot sequences: how many of each.
    Differ { rows: usize, games: usize },
}

async fn round(
    fx: &Fixture,
    opts: &Options,
    stream: &str,
    last: EntryId,
    n: usize,
) -> anyhow::Result<Round> {
    let a = drain_side(fx, &format!("a{n}"), async |lobby, service| {
        worker_drain(fx, stream, lobby, service, last, opts.batch_size).await
    })
    .await?;
    if !opts.baseline {
        return Ok(Round::WorkerOnly(rate(opts.events, a.took)));
    }
    let b = drain_side(fx, &format!("b{n}"), async |lobby, service| {
        let started = Instant::now();
        baseline::drain(fx, &fx.pool, stream, lobby, service, last).await?;
        Ok(started.elapsed())
    })
    .await?;
    if a.rows != b.rows || a.snapshots != b.snapshots {
        let rows = a
            .rows
            .iter()
            .filter(|(g, r)| b.rows.get(*g) != Some(r))
            .count();
        let games = a
            .snapshots
            .iter()
            .filter(|(g, s)| b.snapshots.get(*g) != Some(s))
            .count();
        return Ok(Round::Differ { rows, games });
    }
    Ok(Round::Both(
        rate(opts.events, a.took),
        rate(opts.events, b.took),
    ))
}

/// Runs the rounds and prints the table; `Ok(false)` when (a) and (b) disagreed.
pub async fn run(fx: &Fixture, opts: &Options) -> anyhow::Result<bool> {
    fx.seed_games(opts.games).await?;
    let stream = fx.key("drain:health_events").await?;
    let events = workload::events(opts.events, opts.games, opts.seed);
    let last = workload::preload(&fx.redis, &stream, &events).await?;
    println!(
        "\n## Drain: {} events over {} games, batch {}, {} rounds\n",
        opts.events, opts.games, opts.batch_size, opts.rounds
    );
    println!("| round | worker (a) events/s | baseline (b) events/s | a/b |");
    println!("|---:|---:|---:|---:|");
    let (mut a_rates, mut b_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut identical = true;
    for n in 1..=opts.rounds {
        match round(fx, opts, &stream, last, n).await? {
            Round::WorkerOnly(ra) => {
                println!("| {n} | {ra:.0} | (skipped) | |");
                a_rates.push(ra);
            }
            Round::Both(ra, rb) => {
                println!("| {n} | {ra:.0} | {rb:.0} | {:.1}× |", ra / rb);
                a_rates.push(ra);
                b_rates.push(rb);
                ratios.push(ra / rb);
            }
            Round::Differ { rows, games } => {
                identical = false;
                println!(
                    "| {n} | FAILED: (a) and (b) differ in {rows} rows and {games} games' snapshot sequences | | |"
                );
            }
        }
    }
    if !opts.baseline {
        println!("| median | {:.0} | (skipped) | |", median(&a_rates));
        println!("\nThe baseline was skipped: no ratio and no equality check in this run.");
        return Ok(true);
    }
    if identical {
        println!(
            "| median | {:.0} | {:.0} | {:.1}× |",
            median(&a_rates),
            median(&b_rates),
            median(&ratios)
        );
        println!(
            "\n(a) and (b) left identical runtime_records rows and identical per-game snapshot sequences in every round."
        );
    } else {
        println!("\nFAILED: the worker and the baseline disagree; no throughput is reported.");
    }
    Ok(identical)
}
