//! `galaxy-bench`: measures the Game Master worker as built against a seed-shaped
//! baseline on the same data, in the same run, and reports ratios and medians.
//!
//! Phases (each can be skipped):
//!  1. *Drain*: G games, N preloaded events with the realistic mix; rounds alternate the
//!     worker (a) and the baseline (b), which replays the Go worker's I/O pattern (one
//!     entry per XREAD; get → CAS-or-fallback → get → XADD → offset SET, each awaited).
//!     Every round checks that (a) and (b) left identical rows and identical per-game
//!     snapshot sequences; a difference is reported instead of a number.
//!  2. *Latency*: a paced producer at several rates while the worker runs; XADD →
//!     snapshot-published latency percentiles, and at the lowest rate two floors from the
//!     same runs: a durable single-row commit alone, and the producer's append seen
//!     through Redis alone.
//!  3. *Refused entries*: the drain's stream beside two copies with bad entries put in
//!     (undecodable ones, and ones whose writes the database refuses), drained
//!     alternately; their rates against the clean stream's, and identical results.
//!  4. *Scale*: the real `gamemaster` binary draining N events over 1,000 and over
//!     100,000 games, and once more over 1,000 of the 100,000 (the table's size alone,
//!     with the load's shape of the first run); throughput and peak RSS.
//!  5. *Stop jobs*: the Runtime Manager's stop-jobs worker against
//!     seed 004's one-job-at-a-time loop on a backlog of jobs for stopped runtimes, and
//!     the XADD → result latency for live engines.
//!  6. *Scale-out*: K `gamemaster` instances on a local Redis Cluster draining one backlog
//!     together, against one instance alone on the same entries; the cost of every
//!     instance reading the whole stream on its own.

mod baseline;
mod drain;
mod fixture;
mod latency;
mod poison;
mod scale;
mod scaleout;
mod stopjobs;
mod workload;

use std::process::ExitCode;
use std::time::Duration;

use clap::builder::{IntoResettable, ValueParser};
use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// Admin URL of the PostgreSQL server (the bench creates its own database).
    pub postgres_admin_url: String,
    /// Name of the bench's database (dropped and created).
    pub database: String,
    /// Redis URL (a database number keeps the bench's fixed keys apart).
    pub redis_url: String,
    /// Games in the drain phase.
    pub games: usize,
    /// Events preloaded for the drain phase.
    pub events: usize,
    /// Rounds of (a) then (b).
    pub rounds: usize,
    /// Worker batch size.
    pub batch_size: usize,
    /// Rates for the latency phase (events/s); empty skips it.
    pub latency_rates: Vec<u64>,
    /// Seconds per latency rate and run.
    pub latency_seconds: u64,
    /// Runs of every latency rate (medians are reported).
    pub latency_runs: usize,
    /// Game counts for the scale phase; empty skips it.
    pub scale_games: Vec<usize>,
    /// Events per scale run.
    pub scale_events: usize,
    /// Workload seed.
    pub seed: u64,
    /// Run the baseline in the drain phase (off only for profiling the worker).
    pub baseline: bool,
    /// Share of undecodable entries in the refused-entries phase, in percent; 0 skips it.
    pub poison_percent: f64,
    /// Share of entries the database refuses in that phase, in percent.
    pub refused_percent: f64,
    /// Stop jobs in the stop-jobs backlog; 0 skips the phase.
    pub stop_jobs: usize,
    /// Live engines stopped one at a time for the stop latency; 0 skips that part.
    pub stop_live_engines: usize,
    /// Events of the scale-out phase; 0 skips it.
    pub scale_out_events: usize,
    /// Games those events are spread over.
    pub scale_out_games: usize,
    /// Instances draining them together.
    pub scale_out_instances: usize,
}

/// A flag `--<long>` (id: `long` with `_`), its default, and its value type.
fn flag(
    long: &'static str,
    default: &'static str,
    parser: impl IntoResettable<ValueParser>,
) -> Arg {
    Arg::new(long.replace('-', "_"))
        .long(long)
        .default_value(default)
        .value_parser(parser)
}

/// A comma-separated list flag.
fn list(
    long: &'static str,
    default: &'static str,
    parser: impl IntoResettable<ValueParser>,
) -> Arg {
    flag(long, default, parser)
        .value_delimiter(',')
        .action(ArgAction::Append)
}

fn command() -> Command {
    let env = |name: &str| format!("GALAXY_BENCH_{name}");
    Command::new("galaxy-bench")
        .about("Benchmark of the Game Master worker against a seed-shaped baseline")
        .args([
            flag("postgres-url", "postgres://postgres@127.0.0.1:5432/postgres", ValueParser::string())
                .env("GALAXY_POSTGRES_URL")
                .help("Admin URL of the PostgreSQL server; the bench creates its own database"),
            flag("database", "galaxy_bench", ValueParser::string())
                .env(env("DATABASE"))
                .help("The bench's database (dropped and re-created)"),
            flag("redis-url", "redis://127.0.0.1:6379/13", ValueParser::string())
                .env(env("REDIS_URL"))
                .help("Redis URL; the database number keeps the bench's keys apart"),
        ])
        .args([
            flag("games", "1000", value_parser!(usize)),
            flag("events", "100000", value_parser!(usize)),
            flag("rounds", "3", value_parser!(usize)),
            flag("batch-size", "4000", value_parser!(usize)),
            list("latency-rates", "1000,5000,20000", value_parser!(u64)),
            flag("latency-seconds", "10", value_parser!(u64)),
            flag("latency-runs", "3", value_parser!(usize)),
            list("scale-games", "1000,100000", value_parser!(usize)),
            flag("scale-events", "100000", value_parser!(usize)),
            flag("poison-percent", "1", value_parser!(f64))
                .help("Share of undecodable entries (NUL and overlong game ids) in the refused-entries phase, in percent"),
            flag("refused-percent", "0.1", value_parser!(f64))
                .help("Share of entries whose writes the database refuses in that phase, in percent"),
            flag("stop-jobs", "10000", value_parser!(usize))
                .help("Stop jobs for stopped runtimes in the stop-jobs phase"),
            flag("stop-live-engines", "20", value_parser!(usize))
                .help("Real engines stopped one at a time for the stop latency (0: none)"),
            flag("scale-out-events", "1000000", value_parser!(usize))
                .help("Events several instances drain together on a local Redis Cluster (0: skip)"),
            flag("scale-out-games", "10000", value_parser!(usize)),
            flag("scale-out-instances", "3", value_parser!(usize)),
            flag("seed", "42", value_parser!(u64)),
            Arg::new("skip")
                .long("skip")
                .value_delimiter(',')
                .action(ArgAction::Append)
                .value_parser(["baseline", "poison", "latency", "scale", "stopjobs", "scaleout"])
                .help("Phases to skip (baseline: time the worker alone, for profiling; then no ratio and no equality check)"),
        ])
}

fn options(m: &ArgMatches) -> Options {
    let text = |id: &str| m.get_one::<String>(id).cloned().unwrap_or_default();
    let number = |id: &str| m.get_one::<usize>(id).copied().unwrap_or(0);
    let percent = |id: &str| {
        m.get_one::<f64>(id)
            .copied()
            .unwrap_or(0.0)
            .clamp(0.0, 50.0)
    };
    let skipped = |phase: &str| {
        m.get_many::<String>("skip")
            .is_some_and(|mut s| s.any(|p| p == phase))
    };
    Options {
        postgres_admin_url: text("postgres_url"),
        database: text("database"),
        redis_url: text("redis_url"),
        games: number("games").max(1),
        events: number("events").max(1),
        rounds: number("rounds").max(1),
        batch_size: number("batch_size").clamp(1, 50_000),
        latency_rates: if skipped("latency") {
            Vec::new()
        } else {
            m.get_many::<u64>("latency_rates")
                .map(|r| r.copied().collect())
                .unwrap_or_default()
        },
        latency_seconds: m
            .get_one::<u64>("latency_seconds")
            .copied()
            .unwrap_or(10)
            .max(1),
        latency_runs: number("latency_runs").max(1),
        scale_games: if skipped("scale") {
            Vec::new()
        } else {
            m.get_many::<usize>("scale_games")
                .map(|g| g.copied().collect())
                .unwrap_or_default()
        },
        scale_events: number("scale_events").max(1),
        seed: m.get_one::<u64>("seed").copied().unwrap_or(42),
        baseline: !skipped("baseline"),
        poison_percent: if skipped("poison") {
            0.0
        } else {
            percent("poison_percent")
        },
        refused_percent: percent("refused_percent"),
        stop_jobs: if skipped("stopjobs") {
            0
        } else {
            number("stop_jobs")
        },
        stop_live_engines: number("stop_live_engines"),
        scale_out_events: if skipped("scaleout") {
            0
        } else {
            number("scale_out_events")
        },
        scale_out_games: number("scale_out_games").max(1),
        scale_out_instances: number("scale_out_instances").clamp(1, 16),
    }
}

fn main() -> ExitCode {
    service_kit::main("galaxy-bench", command(), |matches| async move {
        match run(&options(&matches)).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("galaxy-bench: {e:#}");
                ExitCode::from(2)
            }
        }
    })
}

/// Runs every phase; `Ok(false)` when a semantic check failed.
async fn run(opts: &Options) -> anyhow::Result<bool> {
    let fx = fixture::Fixture::create(opts).await?;
    println!(
        "galaxy-bench: database {}, redis {}",
        opts.database, opts.redis_url
    );
    let mut ok = drain::run(&fx, opts).await?;
    if opts.poison_percent > 0.0 {
        ok &= poison::run(&fx, opts).await?;
    }
    if !opts.latency_rates.is_empty() {
        latency::run(&fx, opts).await?;
    }
    if !opts.scale_games.is_empty() {
        ok &= scale::run(&fx, opts).await?;
    }
    if opts.stop_jobs > 0 {
        ok &= stopjobs::run(&fx, opts).await?;
    }
    if opts.scale_out_events > 0 {
        ok &= scaleout::run(&fx, opts).await?;
    }
    fx.cleanup().await?;
    Ok(ok)
}

/// The median of `values` (the mean of the middle two for an even count).
#[must_use]
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Events per second.
#[must_use]
pub fn rate(events: usize, took: Duration) -> f64 {
    events as f64 / took.as_secs_f64().max(1e-9)
}
