//! Phase 1: the worker as built (a) against the seed-shaped baseline (b), alternating.

use std::time::{Duration, Instant};

use adapters_postgres::PgRuntimeRecordStore;
use adapters_redis::RedisLobbyEventsPublisher;
use redis_streams::{RedisOffsetStore, RedisSettings, RedisStreamReader};
use stream_consumer::{Consumer, ConsumerConfig, ConsumerHealth, ConsumerMetrics, EntryId, Step};
use worker_healthevents::{HealthEventsWorker, OFFSET_LABEL, WorkerMetrics, system_clock};

use crate::fixture::Fixture;
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
    let worker = HealthEventsWorker::new(
        PgRuntimeRecordStore::new(fx.pool.clone()),
        RedisLobbyEventsPublisher::new(fx.redis.clone(), lobby),
        system_clock(),
        WorkerMetrics::default(),
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
    for round in 1..=opts.rounds {
        let lobby_a = fx.key(&format!("drain:lobby_a{round}")).await?;
        let lobby_b = fx.key(&format!("drain:lobby_b{round}")).await?;
        let svc_a = format!("bench-a{round}");
        let svc_b = format!("bench-b{round}");
        for svc in [&svc_a, &svc_b] {
            fx.del(&[format!("{svc}:stream_offsets:{OFFSET_LABEL}")])
                .await?;
        }

        fx.reset_games().await?;
        let took_a = worker_drain(fx, &stream, &lobby_a, &svc_a, last, opts.batch_size).await?;
        let rows_a = fx.rows().await?;
        let snaps_a = fx.snapshots(&lobby_a).await?;

        if !opts.baseline {
            fx.del(&[
                lobby_a,
                lobby_b,
                format!("{svc_a}:stream_offsets:{OFFSET_LABEL}"),
            ])
            .await?;
            let ra = rate(opts.events, took_a);
            println!("| {round} | {ra:.0} | (skipped) | |");
            a_rates.push(ra);
            continue;
        }
        fx.reset_games().await?;
        let started = Instant::now();
        baseline::drain(fx, &fx.pool, &stream, &lobby_b, &svc_b, last).await?;
        let took_b = started.elapsed();
        let rows_b = fx.rows().await?;
        let snaps_b = fx.snapshots(&lobby_b).await?;

        for svc in [&svc_a, &svc_b] {
            fx.del(&[format!("{svc}:stream_offsets:{OFFSET_LABEL}")])
                .await?;
        }
        fx.del(&[lobby_a, lobby_b]).await?;
        if rows_a != rows_b || snaps_a != snaps_b {
            identical = false;
            let bad_rows = rows_a
                .iter()
                .filter(|(g, r)| rows_b.get(*g) != Some(r))
                .count();
            let bad_games = snaps_a
                .iter()
                .filter(|(g, s)| snaps_b.get(*g) != Some(s))
                .count();
            println!(
                "| {round} | FAILED: (a) and (b) differ in {bad_rows} rows and {bad_games} games' snapshot sequences | | |"
            );
            continue;
        }
        let (ra, rb) = (rate(opts.events, took_a), rate(opts.events, took_b));
        println!("| {round} | {ra:.0} | {rb:.0} | {:.1}× |", ra / rb);
        a_rates.push(ra);
        b_rates.push(rb);
        ratios.push(ra / rb);
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
