//! The `rtmanager` binary's wiring: settings → PostgreSQL pool, Redis clients, the
//! stop-jobs worker inside the stream-consumer runtime, the ops HTTP server, and a drain
//! on SIGTERM / SIGINT. Everything reusable lives in the crates it links; this crate only
//! connects them.
//!
//! Subcommands:
//! - `rtmanager migrate`: applies the Runtime Manager's schema (safe to run twice);
//! - `rtmanager run`: consumes `runtime:stop_jobs`, stops engines and answers on
//!   `runtime:job_results`, until SIGTERM or SIGINT.

use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgMatches, Command};
use prometheus_client::registry::Registry;
use redis_streams::StreamWriter;
use rtm_adapters::{PgRuntimeRegistry, ProcessEngineDriver, RedisJobResultPublisher};
use service_kit::consumer::{self, Backends};
use service_kit::settings::{
    CommonSettings, Defaults, duration_arg, migrate_command, postgres_url, stream_arg,
};
use service_kit::{StartupError, telemetry};
use worker_stopjobs::{OFFSET_LABEL, StopJobsWorker, WorkerMetrics};

/// The service name: log target, metric prefix, offset-key prefix, stderr prefix.
pub const SERVICE: &str = "rtmanager";

const DEFAULTS: Defaults = Defaults {
    env_prefix: "RTMANAGER",
    postgres_url: "postgres://postgres@127.0.0.1:5432/rtmanager",
    http_addr: "127.0.0.1:8082",
    batch_size: "100",
};

/// The command line: `migrate` and `run`, every setting also an environment variable.
#[must_use]
pub fn command() -> Command {
    Command::new(SERVICE)
        .about("Runtime Manager: stops game engines when the Lobby asks, and answers each stop job once")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(migrate_command("Runtime Manager", &DEFAULTS))
        .subcommand(
            Command::new("run")
                .about("Consume stop jobs until SIGTERM or SIGINT")
                .args(CommonSettings::args(&DEFAULTS))
                .arg(stream_arg(
                    DEFAULTS.env_prefix,
                    "stop_jobs_stream",
                    "stop-jobs-stream",
                    "STOP_JOBS_STREAM",
                    contracts::stop_jobs::DEFAULT_STREAM,
                    "Stream the Lobby appends stop jobs to",
                ))
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
                )),
        )
}

/// Runs the parsed command; the exit code is 0 on success, 2 for a start-up failure (one
/// line on stderr), 1 when a stop could not drain in time.
pub async fn main(matches: ArgMatches) -> ExitCode {
    let result = match matches.subcommand() {
        Some(("migrate", m)) => migrate(m).await,
        Some(("run", m)) => run(m).await,
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
    let writer = StreamWriter::new(backends.redis.clone(), job_results.clone());
    let worker = StopJobsWorker::new(
        PgRuntimeRegistry::new(backends.pool.clone()),
        ProcessEngineDriver,
        RedisJobResultPublisher::new(writer),
        grace,
        WorkerMetrics::register(&mut registry),
    );
    tracing::info!(job_results_stream = %job_results, ?grace, "answering stop jobs");
    consumer::run(
        SERVICE,
        &settings,
        backends,
        &stop_jobs,
        OFFSET_LABEL,
        registry,
        worker,
    )
    .await
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
