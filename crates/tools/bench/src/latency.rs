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

/// One run's percentiles.
#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    events: usize,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
}

impl Stats {
    fn of(mut latencies: Vec<Duration>) -> Self {
        latencies.sort();
        Self {
            events: latencies.len(),
            p50: quantile(&latencies, 0.5),
            p99: quantile(&latencies, 0.99),
            p999: quantile(&latencies, 0.999),
            max: latencies.last().copied().unwrap_or_default(),
        }
    }

    /// Column by column, the median over runs.
    fn median(runs: &[Self]) -> Self {
        let column = |f: fn(&Self) -> Duration| {
            let values: Vec<f64> = runs.iter().map(|r| f(r).as_secs_f64()).collect();
            Duration::from_secs_f64(crate::median(&values))
        };
        Self {
            events: runs.first().map_or(0, |r| r.events),
            p50: column(|r| r.p50),
            p99: column(|r| r.p99),
            p999: column(|r| r.p999),
            max: column(|r| r.max),
        }
    }

    fn print(&self, rate: u64, run: &str) {
        println!(
            "| {rate} | {run} | {} | {} | {} | {} | {} |",
            self.events,
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            ms(self.max),
        );
    }
}

/// Prints one rate's runs and their median.
fn print_rate(rate: u64, runs: &[Stats]) {
    for (i, stats) in runs.iter().enumerate() {
        stats.print(rate, &(i + 1).to_string());
    }
    if runs.len() > 1 {
        Stats::median(runs).print(rate, "median");
    }
}

const HEADER: &str = "| rate | run | events | p50 ms | p99 ms | p99.9 ms | max ms |\n|---:|---:|---:|---:|---:|---:|---:|";

/// Runs every rate `latency_runs` times (the rates interleaved, so a noisy spell of the
/// machine does not fall on one rate only) and prints the tables.
pub async fn run(fx: &Fixture, opts: &Options) -> anyhow::Result<()> {
    let games = opts.games.min(1000);
    fx.seed_games(games).await?;
    // The floor: PostgreSQL's durable commit alone, at the lowest rate a one-at-a-time
    // loop keeps up with. The end-to-end latency contains one such commit.
    let floor_rate = opts
        .latency_rates
        .iter()
        .copied()
        .filter(|&r| r <= FLOOR_MAX_RATE)
        .min();
    let mut results: Vec<Vec<Stats>> = vec![Vec::new(); opts.latency_rates.len()];
    let mut floor = Vec::new();
    let mut redis_floor = Vec::new();
    for _ in 0..opts.latency_runs {
        for (i, &rate) in opts.latency_rates.iter().enumerate() {
            let stream = fx.key(&format!("latency:health_{rate}")).await?;
            let lobby = fx.key(&format!("latency:lobby_{rate}")).await?;
            let offset_key =
                RedisOffsetStore::new(fx.redis.clone(), "gamemaster").key("health_events");
            fx.del(std::slice::from_ref(&offset_key)).await?;
            let latencies = one_rate(fx, opts, games, rate, &stream, &lobby).await?;
            fx.del(&[stream, lobby, offset_key]).await?;
            results[i].push(Stats::of(latencies));
        }
        if let Some(rate) = floor_rate {
            floor.push(Stats::of(
                commit_floor(fx, games, rate, opts.latency_seconds).await?,
            ));
            // The other floor: the same producer and observer with nothing between them
            // but Redis (the observer reads the health stream itself).
            let stream = fx.key(&format!("latency:floor_{rate}")).await?;
            let latencies = paced(fx, games, rate, opts.latency_seconds, &stream, &stream).await?;
            fx.del(&[stream]).await?;
            redis_floor.push(Stats::of(latencies));
        }
    }

    println!(
        "\n## Latency: XADD → snapshot published, {}s per rate and run, {games} games, {} runs\n",
        opts.latency_seconds, opts.latency_runs
    );
    println!("{HEADER}");
    for (&rate, runs) in opts.latency_rates.iter().zip(&results) {
        print_rate(rate, runs);
    }
    if let Some(rate) = floor_rate {
        println!(
            "\nFloor, same machine and runs: one durable single-row `UPDATE` (autocommit) per \
             event, one at a time, {rate}/s for {}s, timed around each statement:\n",
            opts.latency_seconds
        );
        println!("{HEADER}");
        print_rate(rate, &floor);
        println!(
            "\nFloor, same runs: the producer's append seen by the observer on the same stream, \
             with nothing between them but Redis (no Game Master, no database), {rate}/s for {}s:\n",
            opts.latency_seconds
        );
        println!("{HEADER}");
        print_rate(rate, &redis_floor);
    }
    Ok(())
}

/// The floor is measured only at rates a one-at-a-time loop keeps up with.
const FLOOR_MAX_RATE: u64 = 2000;

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

/// One end-to-end run at `rate`: the real binary consumes `stream` and publishes on
/// `lobby`, which the observer reads.
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
    let latencies = paced(fx, games, rate, opts.latency_seconds, stream, lobby).await?;
    if gm.stop().await? != Some(0) {
        anyhow::bail!("gamemaster did not exit 0 on SIGTERM");
    }
    Ok(latencies)
}

/// The producer appends `rate × seconds` events to `stream`, paced in 1 ms ticks, through
/// the writer the Runtime Manager uses, while the observer reads `observed`; per event,
/// the time from just before its append to the observer seeing its game's next entry.
///
/// Every event flips its game's summary (probe_failed ⇄ healthy), so through the Game
/// Master every event publishes exactly one snapshot, and per game the n-th snapshot
/// answers the n-th event. With `observed == stream` the observer sees the events
/// themselves: the Redis floor, without the Game Master.
async fn paced(
    fx: &Fixture,
    games: usize,
    rate: u64,
    seconds: u64,
    stream: &str,
    observed: &str,
) -> anyhow::Result<Vec<Duration>> {
    let total = usize::try_from(rate.saturating_mul(seconds))?;
    let sent: Sent = Arc::default();
    let observer = tokio::spawn(observe(
        fx.redis_url.clone(),
        observed.to_owned(),
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
    observer.await?
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
            let game = String::from_utf8_lossy(
                entry
                    .field(contracts::lobby_events::fields::GAME_ID)
                    .unwrap_or_default(),
            )
            .into_owned();
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
