//! Phase 5: the Runtime Manager's stop-jobs worker.
//!
//! *Backlog*: J stop jobs for J runtimes that are stopped already (each answered
//! `replay_no_op`), drained alternately by the worker as the binary runs it (a) and by a
//! seed-shaped baseline (b) that does what seed 004's consumer does, one job at a time and
//! each step awaited: XREAD COUNT 1 → registry read → decision → operation-log write →
//! XADD the result → SET the offset. Each round checks that both answered every job alike,
//! in order. *Live*: K real `galaxy-engine` processes, one stop job at a time while the
//! worker runs, and the time from the job's XADD to its result on the stream.

use std::time::{Duration, Instant};

use contracts::{JobResult, StopJob, StopReason};
use redis_streams::{RedisOffsetStore, RedisSettings, RedisStreamReader, StreamWriter};
use rtm_adapters::{PgRuntimeRegistry, ProcessEngineDriver, RedisJobResultPublisher};
use rtm_domain::{Origin, RegistryStatus, Runtime, StopDecision, decide_stop};
use rtm_ports::{EngineDriver, RuntimeRegistry};
use stream_consumer::{
    Consumer, ConsumerConfig, ConsumerHealth, ConsumerMetrics, EntryId, Step, StreamOffsetStore,
    StreamReader,
};
use tokio_util::sync::CancellationToken;
use worker_stopjobs::{OFFSET_LABEL, StopJobsWorker, WorkerMetrics};

use crate::fixture::Fixture;
use crate::{Options, median, rate};

/// How long a live engine is given to exit once asked.
const GRACE: Duration = Duration::from_secs(5);

/// The answers a side left, in stream order: (game, outcome, error code).
type Answers = Vec<(String, String, String)>;

/// Runs the phase; `Ok(false)` when the two sides answered differently.
///
/// # Errors
/// A server failed.
pub async fn run(fx: &Fixture, opts: &Options) -> anyhow::Result<bool> {
    rtm_adapters::migrate(&fx.pool).await?;
    let jobs = fx.key("stop:jobs").await?;
    let last = backlog(fx, &jobs, opts.stop_jobs).await?;
    println!(
        "\n## Stop jobs: a backlog of {} jobs for stopped runtimes\n",
        opts.stop_jobs
    );
    println!("| round | worker (a) jobs/s | baseline (b) jobs/s | a/b |\n|---|---|---|---|");
    let (mut a_rates, mut b_rates, mut same) = (Vec::new(), Vec::new(), true);
    for round in 1..=opts.rounds {
        let (a_took, a) = side(fx, "a", async |results: &str, service: &str| {
            worker_drain(fx, &jobs, results, service, last, opts.batch_size).await
        })
        .await?;
        let (b_took, b) = side(fx, "b", async |results: &str, service: &str| {
            baseline_drain(fx, &jobs, results, service, last).await
        })
        .await?;
        same &= a == b && a.len() == opts.stop_jobs;
        let (ra, rb) = (rate(opts.stop_jobs, a_took), rate(opts.stop_jobs, b_took));
        println!("| {round} | {ra:.0} | {rb:.0} | {:.1}× |", ra / rb);
        a_rates.push(ra);
        b_rates.push(rb);
    }
    let (ma, mb) = (median(&a_rates), median(&b_rates));
    println!("| median | {ma:.0} | {mb:.0} | {:.1}× |\n", ma / mb);
    if same {
        println!(
            "Both sides answered all {} jobs replay_no_op, identically and in order.",
            opts.stop_jobs
        );
    } else {
        println!("MISMATCH: the worker and the baseline answered the backlog differently.");
    }
    if opts.stop_live_engines > 0 {
        live(fx, opts.stop_live_engines).await?;
    }
    Ok(same)
}

/// Registers `n` stopped runtimes and appends one stop job for each; the last job's id.
async fn backlog(fx: &Fixture, jobs: &str, n: usize) -> anyhow::Result<EntryId> {
    let c = fx.pool.get().await?;
    c.batch_execute("TRUNCATE runtimes, operation_log").await?;
    c.execute(
        "INSERT INTO runtimes (game_id, status, container_id, engine_endpoint, stopped_at)
         SELECT 's' || lpad(g::text, 6, '0'), 'stopped', 'c' || g, 'http://127.0.0.1:1', now()
         FROM generate_series(1, $1::bigint) g",
        &[&i64::try_from(n)?],
    )
    .await?;
    let writer = StreamWriter::new(fx.redis.clone(), jobs);
    let mut last = EntryId::ZERO;
    let all: Vec<usize> = (1..=n).collect();
    for chunk in all.chunks(1000) {
        let entries: Vec<_> = chunk
            .iter()
            .map(|g| {
                StopJob::new(&format!("s{g:06}"), StopReason::GameFinished, Some(1))
                    .map(|j| j.wire_fields())
            })
            .collect::<Result<_, _>>()?;
        last = writer
            .append(&entries)
            .await?
            .last()
            .copied()
            .unwrap_or(last);
    }
    Ok(last)
}

/// One side from scratch: its offset and results stream gone, the operation log empty;
/// then `drain`, timed, and the answers it published.
async fn side(
    fx: &Fixture,
    tag: &str,
    drain: impl AsyncFnOnce(&str, &str) -> anyhow::Result<()>,
) -> anyhow::Result<(Duration, Answers)> {
    let results = fx.key(&format!("stop:results_{tag}")).await?;
    let service = format!("bench-stop-{tag}");
    fx.del(&[format!("{service}:stream_offsets:{OFFSET_LABEL}")])
        .await?;
    fx.pool
        .get()
        .await?
        .batch_execute("TRUNCATE operation_log")
        .await?;
    let started = Instant::now();
    drain(&results, &service).await?;
    let took = started.elapsed();
    Ok((took, answers(fx, &results).await?))
}

/// Every result on `stream`, in order.
async fn answers(fx: &Fixture, stream: &str) -> anyhow::Result<Answers> {
    let reader =
        RedisStreamReader::connect(&fx.redis_url, RedisSettings::default(), "bench-answers")
            .await?;
    let mut all = Answers::new();
    let mut after = EntryId::ZERO;
    loop {
        let page = reader
            .read_after(stream, after, 10_000, Duration::ZERO)
            .await?;
        let Some(last) = page.last() else {
            return Ok(all);
        };
        after = last.id;
        for entry in &page {
            let r = JobResult::decode(entry)?;
            all.push((
                r.game_id.as_str().to_owned(),
                r.outcome.as_str().to_owned(),
                r.error_code,
            ));
        }
    }
}

/// The worker as the binary runs it.
fn worker(
    fx: &Fixture,
    results: &str,
) -> StopJobsWorker<PgRuntimeRegistry, ProcessEngineDriver, RedisJobResultPublisher> {
    StopJobsWorker::new(
        PgRuntimeRegistry::new(fx.pool.clone()),
        ProcessEngineDriver::default(),
        RedisJobResultPublisher::new(StreamWriter::new(fx.redis.clone(), results)),
        GRACE,
        WorkerMetrics::default(),
    )
}

async fn consumer(
    fx: &Fixture,
    jobs: &str,
    results: &str,
    service: &str,
    batch_size: usize,
) -> anyhow::Result<
    Consumer<RedisStreamReader, RedisOffsetStore, impl stream_consumer::BatchHandler + use<>>,
> {
    let reader =
        RedisStreamReader::connect(&fx.redis_url, RedisSettings::default(), "bench-stop-reader")
            .await?;
    let mut config = ConsumerConfig::new(jobs, OFFSET_LABEL);
    config.batch_size = batch_size;
    config.block = Duration::from_millis(100);
    Ok(Consumer::new(
        reader,
        RedisOffsetStore::new(fx.redis.clone(), service),
        worker(fx, results),
        config,
        ConsumerMetrics::default(),
        ConsumerHealth::default(),
    ))
}

/// (a): the consumer runtime and the worker, until the offset reaches `last`.
async fn worker_drain(
    fx: &Fixture,
    jobs: &str,
    results: &str,
    service: &str,
    last: EntryId,
    batch_size: usize,
) -> anyhow::Result<()> {
    let mut consumer = consumer(fx, jobs, results, service, batch_size).await?;
    while consumer.position().is_none_or(|p| p < last) {
        if let Step::Retry { stage, delay } = consumer.step().await {
            anyhow::bail!(
                "the stop-jobs worker hit a transient failure at {stage:?} (retry in {delay:?})"
            );
        }
    }
    Ok(())
}

/// (b): seed 004's loop, one job at a time, every step awaited.
async fn baseline_drain(
    fx: &Fixture,
    jobs: &str,
    results: &str,
    service: &str,
    last: EntryId,
) -> anyhow::Result<()> {
    let reader = RedisStreamReader::connect(
        &fx.redis_url,
        RedisSettings::default(),
        "bench-stop-baseline",
    )
    .await?;
    let registry = PgRuntimeRegistry::new(fx.pool.clone());
    let writer = StreamWriter::new(fx.redis.clone(), results);
    let offsets = RedisOffsetStore::new(fx.redis.clone(), service);
    let mut after = EntryId::ZERO;
    while after < last {
        let page = reader
            .read_after(jobs, after, 1, Duration::from_millis(100))
            .await?;
        let Some(entry) = page.first() else { continue };
        let job = StopJob::decode(entry)?;
        let runtime = registry.get(&job.game_id).await?;
        let StopDecision::Answer(result) = decide_stop(&job.game_id, runtime) else {
            anyhow::bail!(
                "the backlog's runtimes are all stopped, but {} was not",
                job.game_id
            );
        };
        seed_record(fx, &Origin::stop_job(&entry.id), &result).await?;
        writer.append(&[result.wire_fields()]).await?;
        offsets.save(OFFSET_LABEL, entry.id).await?;
        after = entry.id;
    }
    Ok(())
}

/// What seed 004's store does to record one stop: one statement, prepared once (the log
/// row, and the compare-and-swap `running → stopped` for a plain success).
const SEED_RECORD: &str = "WITH logged AS ( \
       INSERT INTO operation_log (game_id, operation, source, source_ref, outcome, \
         error_code, error_message, container_id, engine_endpoint) \
       VALUES ($1, 'stop', $2, $3, $4, $5, $6, $7, $8) \
       ON CONFLICT (operation, source, source_ref) DO NOTHING RETURNING 1) \
     UPDATE runtimes SET status = 'stopped', stopped_at = now(), updated_at = now() \
     WHERE game_id = $1 AND status = 'running' AND $9 AND EXISTS (SELECT 1 FROM logged)";

async fn seed_record(fx: &Fixture, origin: &Origin, r: &JobResult) -> anyhow::Result<()> {
    let client = fx.pool.get().await?;
    let statement = client.prepare_cached(SEED_RECORD).await?;
    let stopped = r.outcome == contracts::JobOutcome::Success && r.error_code.is_empty();
    let game = r.game_id.as_str();
    let (source, outcome) = (origin.source.as_str(), r.outcome.as_str());
    client
        .execute(
            &statement,
            &[
                &game,
                &source,
                &origin.reference,
                &outcome,
                &r.error_code,
                &r.error_message,
                &r.container_id,
                &r.engine_endpoint,
                &stopped,
            ],
        )
        .await?;
    Ok(())
}

/// *Live*: `k` real engines, each stopped by one job while the worker runs; XADD → result.
async fn live(fx: &Fixture, k: usize) -> anyhow::Result<()> {
    let driver = ProcessEngineDriver::default();
    let registry = PgRuntimeRegistry::new(fx.pool.clone());
    for n in 0..k {
        let game_id = contracts::GameId::new(format!("live{n:03}"))?;
        let engine = driver.start(&game_id).await?;
        let runtime = Runtime {
            game_id,
            status: RegistryStatus::Running,
            container_id: engine.container_id,
            engine_endpoint: engine.engine_endpoint,
        };
        registry
            .register(&runtime, &Origin::admin(format!("bench {n}")))
            .await?;
    }
    let (jobs, results) = (
        fx.key("stop:live_jobs").await?,
        fx.key("stop:live_results").await?,
    );
    let service = "bench-stop-live";
    fx.del(&[format!("{service}:stream_offsets:{OFFSET_LABEL}")])
        .await?;
    let consumer = consumer(fx, &jobs, &results, service, 1000).await?;
    let stop = CancellationToken::new();
    let running = tokio::spawn(consumer.run(stop.clone()));
    let latencies = stop_one_by_one(fx, &jobs, &results, k).await;
    stop.cancel();
    let _ = running.await;
    let mut ms = latencies?;
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    println!("\n## Stop jobs: XADD → result for {k} live engines, one at a time\n");
    println!("| engines | p50 ms | p99 ms | max ms |\n|---|---|---|---|");
    println!(
        "| {k} | {:.1} | {:.1} | {:.1} |",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    Ok(())
}

/// One job per live engine, each waited for; the milliseconds from XADD to its result.
async fn stop_one_by_one(
    fx: &Fixture,
    jobs: &str,
    results: &str,
    k: usize,
) -> anyhow::Result<Vec<f64>> {
    let reader =
        RedisStreamReader::connect(&fx.redis_url, RedisSettings::default(), "bench-stop-watch")
            .await?;
    let writer = StreamWriter::new(fx.redis.clone(), jobs);
    let mut latencies = Vec::with_capacity(k);
    let mut seen = EntryId::ZERO;
    for n in 0..k {
        let job = StopJob::new(&format!("live{n:03}"), StopReason::GameFinished, Some(1))?;
        let sent = Instant::now();
        let id = writer
            .append(&[job.wire_fields()])
            .await?
            .first()
            .copied()
            .unwrap_or_default();
        let deadline = sent + GRACE * 4;
        loop {
            let page = reader
                .read_after(results, seen, 10, Duration::from_millis(500))
                .await?;
            if let Some(last) = page.last() {
                seen = last.id;
            }
            if page.iter().any(|e| e.id == id) {
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "no result for the stop job of live{n:03} within {:?}",
                    GRACE * 4
                );
            }
        }
    }
    Ok(latencies)
}
