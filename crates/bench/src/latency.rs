//! Phase 2: XADD → snapshot-published latency under a paced producer.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use domain_runtime::HealthEventType;
use redis_streams::{RedisOffsetStore, RedisSettings, RedisStreamReader, StreamWriter};
use stream_consumer::{EntryId, StreamReader};

use crate::fixture::Fixture;
use crate::scale::Gamemaster;
use crate::{Options, workload};

type Sent = Arc<Mutex<HashMap<String, VecDeque<Instant>>>>;

/// The `q`-quantile of sorted `v`.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Runs every rate and prints the table.
pub async fn run(fx: &Fixture, opts: &Options) -> anyhow::Result<()> {
    let games = opts.games.min(1000);
    fx.seed_games(games).await?;
    println!(
        "\n## Latency: XADD → snapshot published, {}s per rate, {games} games\n",
        opts.latency_seconds
    );
    println!("| rate (events/s) | events | p50 ms | p99 ms | p99.9 ms | max ms |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for &rate in &opts.latency_rates {
        let stream = fx.key(&format!("latency:health_{rate}")).await?;
        let lobby = fx.key(&format!("latency:lobby_{rate}")).await?;
        let offset_key = RedisOffsetStore::new(fx.redis.clone(), "gamemaster").key("health_events");
        fx.del(std::slice::from_ref(&offset_key)).await?;
        let latencies = one_rate(fx, opts, games, rate, &stream, &lobby).await?;
        fx.del(&[stream, lobby, offset_key]).await?;
        print_row(rate, latencies);
    }

    // What PostgreSQL alone takes at the lowest rate: the end-to-end latency cannot go
    // below the tail of the durable commit it contains.
    if let Some(&rate) = opts
        .latency_rates
        .iter()
        .filter(|&&r| r <= FLOOR_MAX_RATE)
        .min()
    {
        println!(
            "\nFloor, same machine and run: one durable single-row `UPDATE` (autocommit) per \
             event, one at a time, {rate}/s for {}s, timed around each statement:\n",
            opts.latency_seconds
        );
        println!("| rate (statements/s) | statements | p50 ms | p99 ms | p99.9 ms | max ms |");
        println!("|---:|---:|---:|---:|---:|---:|");
        let floor = commit_floor(fx, games, rate, opts.latency_seconds).await?;
        print_row(rate, floor);
    }
    Ok(())
}

/// The floor is measured only at rates a one-at-a-time loop keeps up with.
const FLOOR_MAX_RATE: u64 = 2000;

fn print_row(rate: u64, mut latencies: Vec<Duration>) {
    latencies.sort();
    println!(
        "| {rate} | {} | {} | {} | {} | {} |",
        latencies.len(),
        ms(quantile(&latencies, 0.5)),
        ms(quantile(&latencies, 0.99)),
        ms(quantile(&latencies, 0.999)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
}

/// Durations of `rate × seconds` single-row autocommit `UPDATE`s of the seeded games,
/// paced like the producer.
async fn commit_floor(
    fx: &Fixture,
    games: usize,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<Vec<Duration>> {
    let client = fx.pool.get().await?;
    let statement = client
        .prepare_cached("UPDATE runtime_records SET updated_at = now() WHERE game_id = $1")
        .await?;
    let total = usize::try_from(rate.saturating_mul(seconds))?;
    let mut took = Vec::with_capacity(total);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while took.len() < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as usize).min(total);
        while took.len() < due {
            let game = workload::game_id(took.len() % games);
            let at = Instant::now();
            client.execute(&statement, &[&game]).await?;
            took.push(at.elapsed());
        }
    }
    Ok(took)
}

async fn one_rate(
    fx: &Fixture,
    opts: &Options,
    games: usize,
    rate: u64,
    stream: &str,
    lobby: &str,
) -> anyhow::Result<Vec<Duration>> {
    // The real binary, in its own process, so the measuring side (the producer and the
    // observer, in this process) does not compete with it for one runtime.
    let gm = Gamemaster::start(fx, stream, lobby, opts.batch_size).await?;

    // Every event flips its game's summary (probe_failed ⇄ healthy), so every event
    // publishes exactly one snapshot, and per game the n-th snapshot answers the n-th event.
    let total = usize::try_from(rate.saturating_mul(opts.latency_seconds))?;
    let sent: Sent = Arc::default();
    let observer = tokio::spawn(observe(
        fx.redis_url.clone(),
        lobby.to_owned(),
        total,
        sent.clone(),
    ));
    let writer = StreamWriter::new(fx.redis.clone(), stream);
    let started = Instant::now();
    let mut flips = vec![false; games];
    let mut next = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while next < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as usize).min(total);
        if due <= next {
            continue;
        }
        let mut entries = Vec::with_capacity(due - next);
        let now = Instant::now();
        {
            let mut sent = sent.lock().unwrap_or_else(PoisonError::into_inner);
            for i in next..due {
                let game = i % games;
                let kind = if flips[game] {
                    HealthEventType::ContainerStarted
                } else {
                    HealthEventType::ProbeFailed
                };
                flips[game] = !flips[game];
                sent.entry(workload::game_id(game))
                    .or_default()
                    .push_back(now);
                entries.push(workload::fields(game, kind, workload::now_ms()));
            }
        }
        writer.append(&entries).await?;
        next = due;
    }
    let latencies = observer.await??;
    if gm.stop().await? != Some(0) {
        anyhow::bail!("gamemaster did not exit 0 on SIGTERM");
    }
    Ok(latencies)
}

async fn observe(
    redis_url: String,
    lobby: String,
    total: usize,
    sent: Sent,
) -> anyhow::Result<Vec<Duration>> {
    let reader =
        RedisStreamReader::connect(&redis_url, RedisSettings::default(), "latency-observer")
            .await?;
    let mut latencies = Vec::with_capacity(total);
    let mut after = EntryId::ZERO;
    let deadline = Instant::now() + Duration::from_secs(120);
    while latencies.len() < total && Instant::now() < deadline {
        let batch = reader
            .read_after(&lobby, after, 1000, Duration::from_millis(500))
            .await?;
        let seen = Instant::now();
        let mut sent = sent.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in &batch {
            after = entry.id;
            let game =
                String::from_utf8_lossy(entry.field("game_id").unwrap_or_default()).into_owned();
            if let Some(at) = sent.get_mut(&game).and_then(VecDeque::pop_front) {
                latencies.push(seen.duration_since(at));
            }
        }
    }
    if latencies.len() < total {
        anyhow::bail!("only {} of {total} snapshots arrived", latencies.len());
    }
    Ok(latencies)
}
