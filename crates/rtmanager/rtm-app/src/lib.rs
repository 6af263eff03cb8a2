//! The `rtmanager` binary's wiring: settings → PostgreSQL pool, Redis clients, the
//! stop-jobs worker inside the stream-consumer runtime, the ops HTTP server, and a drain
//! on SIGTERM / SIGINT. Everything reusable lives in the crates it links; this crate only
//! connects them.
//!
//! Subcommands:
//! - `rtmanager migrate`: applies the Runtime Manager's schema (safe to run twice);
//! - `rtmanager run`: consumes `runtime:stop_jobs`, stops engines and answers on
//!   `runtime:job_results`, and supervises every running engine (re-adopting those its
//!   registry lists), publishing their health on `runtime:health_events`, until SIGTERM or
//!   SIGINT; its ops server also takes the start requests of `start-game`;
//! - `rtmanager start-game <GAME_ID>…`: has the running Runtime Manager start an engine
//!   for each game; exits 0 once each is recorded `running` ([`start`]).

pub mod start;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use prometheus_client::registry::Registry;
use redis_streams::StreamWriter;
use rtm_adapters::{
    PgHealthSnapshotStore, PgRuntimeRegistry, ProcessEngineDriver, RedisJobResultPublisher,
    RtmHealthEventPublisher,
};
use service_kit::consumer::{self, Backends, Work};
use service_kit::settings::{
    CommonSettings, Defaults, duration_arg, migrate_command, postgres_url, stream_arg,
};
use service_kit::{StartupError, telemetry};
use worker_stopjobs::{OFFSET_LABEL, StopJobsWorker, WorkerMetrics};
use worker_supervisor::{Supervisor, SupervisorMetrics};

/// The service name: log target, metric prefix, offset-key prefix, stderr prefix.
pub const SERVICE: &str = "rtmanager";

/// The offset labels of the service's consumers (their dead letters are kept by label).
const CONSUMERS: [&str; 1] = [OFFSET_LABEL];

/// The consumer `status` reports, and the setting naming its stream.
const CONSUMED: [service_kit::status::Consumed; 1] = [service_kit::status::Consumed {
    label: OFFSET_LABEL,
    stream_setting: "stop_jobs_stream",
}];

/// The settings naming the streams the Runtime Manager consumes (for `run` and `status`).
fn consumed_streams() -> Vec<clap::Arg> {
    vec![stream_arg(
        DEFAULTS.env_prefix,
        "stop_jobs_stream",
        "stop-jobs-stream",
        "STOP_JOBS_STREAM",
        contracts::stop_jobs::DEFAULT_STREAM,
        "Stream the Lobby appends stop jobs to",
    )]
}

const DEFAULTS: Defaults = Defaults {
    env_prefix: "RTMANAGER",
    postgres_url: "postgres://postgres@127.0.0.1:5432/rtmanager",
    http_addr: "127.0.0.1:8082",
    batch_size: "100",
    read_block: "2s",
};

/// The command line: `migrate`, `run` and `start-game`, every setting also an environment
/// variable.
#[must_use]
pub fn command() -> Command {
    Command::new(SERVICE)
        .about("Runtime Manager: runs game engines, reports their health, and stops them when the Lobby asks, answering each stop job once")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(migrate_command("Runtime Manager", &DEFAULTS))
        .subcommand(service_kit::dead_letters::command(&DEFAULTS, &CONSUMERS))
        .subcommand(service_kit::status::command(&DEFAULTS, consumed_streams()))
        .subcommand(
            Command::new("run")
                .about("Consume stop jobs and supervise engines until SIGTERM or SIGINT")
                .args(CommonSettings::args(&DEFAULTS))
                .args(run_args()),
        )
        .subcommand(
            Command::new("start-game")
                .about("Have the running Runtime Manager start an engine for each game; exits 0 once each is recorded running")
                .arg(
                    CommonSettings::args(&DEFAULTS)
                        .into_iter()
                        .find(|a| a.get_id() == "http_addr")
                        .unwrap_or_else(|| Arg::new("http_addr")),
                )
                .arg(
                    Arg::new("game_ids")
                        .value_name("GAME_ID")
                        .required(true)
                        .action(ArgAction::Append)
                        .help("Ids of the games to start"),
                ),
        )
}

/// The settings `run` adds to the common ones: its streams, the stop grace, the
/// supervisor's interval and the engines' program, logs and memory limit.
fn run_args() -> Vec<Arg> {
    let command = Command::new("run")
                .args(consumed_streams())
                .arg(stream_arg(
                    DEFAULTS.env_prefix,
                    "job_results_stream",
                    "job-results-stream",
                    "JOB_RESULTS_STREAM",
                    contracts::job_results::DEFAULT_STREAM,
                    "Stream the Runtime Manager answers stop jobs on",
                ))
                .arg(duration_arg(
                    DEFAULTS.env_prefix,
                    "stop_grace",
                    "stop-grace",
                    "STOP_GRACE",
                    "10s",
                    "How long an engine asked to stop may take to exit before it is killed",
                ))
                .arg(stream_arg(
                    DEFAULTS.env_prefix,
                    "health_events_stream",
                    "health-events-stream",
                    "HEALTH_EVENTS_STREAM",
                    contracts::health_events::DEFAULT_STREAM,
                    "Stream the Runtime Manager publishes its engines' health events on",
                ))
                .arg(duration_arg(
                    DEFAULTS.env_prefix,
                    "supervise_interval",
                    "supervise-interval",
                    "SUPERVISE_INTERVAL",
                    "1s",
                    "How often every running engine is inspected and probed",
                ))
                .arg(
                    Arg::new("engine_memory_limit_mib")
                        .long("engine-memory-limit-mib")
                        .env("RTMANAGER_ENGINE_MEMORY_LIMIT_MIB")
                        .default_value("256")
                        .value_parser(clap::value_parser!(u64).range(1..=1_048_576))
                        .help("Resident memory an engine may use, in MiB; an engine over it is killed and reported container_oom"),
                )
                .arg(
                    Arg::new("engine_binary")
                        .long("engine-binary")
                        .env("RTMANAGER_ENGINE_BINARY")
                        .value_parser(clap::value_parser!(PathBuf))
                        .help("The engine program to run per game [default: galaxy-engine beside rtmanager]"),
                )
                .arg(
                    Arg::new("engine_log_dir")
                        .long("engine-log-dir")
                        .env("RTMANAGER_ENGINE_LOG_DIR")
                        .value_parser(clap::value_parser!(PathBuf))
                        .help("Where each engine's stderr goes, one <game>.log per game [default: <tmp>/galaxy-engines]"),
                );
    command.get_arguments().cloned().collect()
}

/// Runs the parsed command; the exit code is 0 on success, 2 for a start-up failure (one
/// line on stderr), 1 when a stop could not drain in time.
pub async fn main(matches: ArgMatches) -> ExitCode {
    let result = match matches.subcommand() {
        Some(("migrate", m)) => migrate(m).await,
        Some(("dead-letters", m)) => service_kit::dead_letters::run(SERVICE, &CONSUMERS, m).await,
        Some(("status", m)) => service_kit::status::run(SERVICE, &CONSUMED, m).await,
        Some(("run", m)) => run(m).await,
        Some(("start-game", m)) => start_game(m).await,
        _ => Err(StartupError::new("unknown command (see rtmanager --help)")),
    };
    match result {
        Ok(code) => code,
        Err(e) => e.report(SERVICE),
    }
}

async fn migrate(m: &ArgMatches) -> Result<ExitCode, StartupError> {
    consumer::migrate(SERVICE, &postgres_url(m), |pool| async move {
        rtm_adapters::migrate(&pool).await
    })
    .await
}

async fn run(m: &ArgMatches) -> Result<ExitCode, StartupError> {
    let settings = CommonSettings::from_matches(m);
    let stream = |id: &str| m.get_one::<String>(id).cloned().unwrap_or_default();
    let stop_jobs = stream("stop_jobs_stream");
    let job_results = stream("job_results_stream");
    let grace = m
        .get_one::<Duration>("stop_grace")
        .copied()
        .unwrap_or(worker_stopjobs::DEFAULT_STOP_GRACE);
    telemetry::init(settings.log_format);

    let backends = Backends::connect(SERVICE, &settings).await?;
    consumer::check_schema(SERVICE, &backends.pool, &rtm_adapters::TABLES).await?;
    let mut registry = Registry::with_prefix(SERVICE);
    let runtimes = PgRuntimeRegistry::new(backends.pool.clone());
    let driver = engine_driver(m);
    let health = RtmHealthEventPublisher::new(
        PgHealthSnapshotStore::new(backends.pool.clone()),
        StreamWriter::new(backends.redis.clone(), stream("health_events_stream")),
    );
    let supervisor = Supervisor::new(
        runtimes.clone(),
        driver.clone(),
        health.clone(),
        PgHealthSnapshotStore::new(backends.pool.clone()),
        SupervisorMetrics::register(&mut registry),
    );
    let writer = StreamWriter::new(backends.redis.clone(), job_results.clone());
    let worker = StopJobsWorker::new(
        runtimes.clone(),
        driver.clone(),
        RedisJobResultPublisher::new(writer),
        grace,
        WorkerMetrics::register(&mut registry),
    );
    tracing::info!(job_results_stream = %job_results, ?grace, "answering stop jobs");
    let routes = start::routes(runtimes, driver, health);
    let interval = m
        .get_one::<Duration>("supervise_interval")
        .copied()
        .unwrap_or(worker_supervisor::DEFAULT_INTERVAL);
    let work = Work::new()
        .consumer(stop_jobs, OFFSET_LABEL, worker)
        .background(move |stop| supervisor.run(interval, stop))
        .routes(routes);
    consumer::run(SERVICE, &settings, backends, work, registry).await
}

/// The process driver, with the engine binary and log dir the settings give.
fn engine_driver(m: &ArgMatches) -> ProcessEngineDriver {
    let defaults = ProcessEngineDriver::default();
    match (
        m.get_one::<PathBuf>("engine_binary"),
        m.get_one::<PathBuf>("engine_log_dir"),
    ) {
        (None, None) => defaults,
        (binary, log_dir) => ProcessEngineDriver::new(
            binary
                .cloned()
                .unwrap_or_else(|| defaults.binary().to_owned()),
            log_dir
                .cloned()
                .unwrap_or_else(|| defaults.log_dir().to_owned()),
        ),
    }
    .with_memory_limit(
        m.get_one::<u64>("engine_memory_limit_mib")
            .map_or(rtm_adapters::DEFAULT_MEMORY_LIMIT, |mib| mib << 20),
    )
}

async fn start_game(m: &ArgMatches) -> Result<ExitCode, StartupError> {
    let addr = m
        .get_one::<SocketAddr>("http_addr")
        .copied()
        .ok_or_else(|| StartupError::new("--http-addr is missing"))?;
    let games: Vec<String> = m
        .get_many::<String>("game_ids")
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    start::start_games(addr, &games)
        .await
        .map(|()| ExitCode::SUCCESS)
        .map_err(StartupError::new)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use service_kit::settings::parse_from;

    #[test]
    fn the_command_line_is_well_formed_and_defaults_to_the_runtime_manager() {
        command().debug_assert();
        let m = parse_from(command(), ["rtmanager", "run"]).unwrap();
        let (_, run) = m.subcommand().unwrap();
        let s = CommonSettings::from_matches(run);
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:8082");
        assert_eq!(
            run.get_one::<String>("stop_jobs_stream").unwrap(),
            "runtime:stop_jobs"
        );
        assert_eq!(
            run.get_one::<String>("job_results_stream").unwrap(),
            "runtime:job_results"
        );
        assert_eq!(
            run.get_one::<Duration>("stop_grace").copied(),
            Some(Duration::from_secs(10))
        );
        assert!(parse_from(command(), ["rtmanager", "run", "--stop-grace", "soon"]).is_err());
    }
}
