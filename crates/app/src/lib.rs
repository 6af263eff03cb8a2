//! The `gamemaster` binary's wiring: settings → PostgreSQL pool, Redis clients, the
//! health-events worker inside the stream-consumer runtime, the ops HTTP server, and a
//! drain on SIGTERM / SIGINT. Everything reusable lives in the crates it links; this crate
//! only connects them.

use std::process::ExitCode;

use adapters_postgres::PgRuntimeRecordStore;
use adapters_redis::RedisLobbyEventsPublisher;
use clap::{ArgMatches, Command};
use pg_kit::PgSettings;
use prometheus_client::registry::Registry;
use redis_streams::{RedisOffsetStore, RedisSettings, RedisStreamReader};
use service_kit::ops::{Check, OpsServer};
use service_kit::settings::{CommonSettings, Defaults, postgres_url_arg, stream_arg};
use service_kit::{StartupError, one_line, telemetry};
use stream_consumer::{Consumer, ConsumerConfig, ConsumerHealth, ConsumerMetrics};
use tokio_util::sync::CancellationToken;
use worker_healthevents::{HealthEventsWorker, OFFSET_LABEL, WorkerMetrics, system_clock};

/// The service name: log target, metric prefix, offset-key prefix, stderr prefix.
pub const SERVICE: &str = "gamemaster";

const DEFAULTS: Defaults = Defaults {
    env_prefix: "GAMEMASTER",
    postgres_url: "postgres://postgres@127.0.0.1:5432/gamemaster",
    http_addr: "127.0.0.1:8080",
};

/// The command line: `migrate` and `run`, every setting also an environment variable.
#[must_use]
pub fn command() -> Command {
    Command::new(SERVICE)
        .about("Game Master: applies Runtime Manager health events to runtime records and publishes snapshots for the Game Lobby")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("migrate")
                .about("Apply the Game Master schema to the database GAMEMASTER_POSTGRES_URL names (safe to run twice, or from two places at once)")
                .arg(postgres_url_arg(&DEFAULTS)),
        )
        .subcommand(
            Command::new("run")
                .about("Consume the health events stream until SIGTERM or SIGINT")
                .args(CommonSettings::args(&DEFAULTS))
                .arg(stream_arg(
                    DEFAULTS.env_prefix,
                    "health_events_stream",
                    "health-events-stream",
                    "HEALTH_EVENTS_STREAM",
                    "runtime:health_events",
                    "Stream the Runtime Manager publishes health events on",
                ))
                .arg(stream_arg(
                    DEFAULTS.env_prefix,
                    "lobby_events_stream",
                    "lobby-events-stream",
                    "LOBBY_EVENTS_STREAM",
                    "gm:lobby_events",
                    "Stream the Game Master publishes runtime snapshots on for the Game Lobby",
                )),
        )
}

/// Runs the parsed command; the exit code is 0 on success, 2 for a start-up failure (one
/// line on stderr), 1 when a stop could not drain in time.
pub async fn main(matches: ArgMatches) -> ExitCode {
    let result = match matches.subcommand() {
        Some(("migrate", m)) => migrate(m).await,
        Some(("run", m)) => run(m).await,
        _ => Err(StartupError::new("unknown command (see gamemaster --help)")),
    };
    match result {
        Ok(code) => code,
        Err(e) => e.report(SERVICE),
    }
}

fn pg_settings(s: &CommonSettings) -> PgSettings {
    PgSettings::default()
        .max_connections(s.postgres_pool_size)
        .statement_timeout(s.statement_timeout)
        .application_name(SERVICE)
}

async fn migrate(m: &ArgMatches) -> Result<ExitCode, StartupError> {
    telemetry::init(telemetry::LogFormat::Text);
    let url = m
        .get_one::<String>("postgres_url")
        .cloned()
        .unwrap_or_default();
    let pool = pg_kit::connect(&url, &PgSettings::default().application_name(SERVICE))
        .await
        .map_err(|e| StartupError::new(format!("PostgreSQL: {}", one_line(&e))))?;
    let report = adapters_postgres::migrate(&pool)
        .await
        .map_err(|e| StartupError::new(format!("migration failed: {}", one_line(&e))))?;
    let applied = report.applied_migrations().len();
    tracing::info!(applied, "Game Master schema is up to date");
    Ok(ExitCode::SUCCESS)
}

async fn run(m: &ArgMatches) -> Result<ExitCode, StartupError> {
    let settings = CommonSettings::from_matches(m);
    let stream = |id: &str| m.get_one::<String>(id).cloned().unwrap_or_default();
    let health_stream = stream("health_events_stream");
    let lobby_stream = stream("lobby_events_stream");
    telemetry::init(settings.log_format);

    // Connections, each checked once so a wrong URL fails here with a clear line.
    let pool = pg_kit::connect(&settings.postgres_url, &pg_settings(&settings))
        .await
        .map_err(|e| StartupError::new(format!("PostgreSQL: {}", one_line(&e))))?;
    let redis_settings = RedisSettings::default();
    let redis = redis_streams::connect(&settings.redis_url, redis_settings, SERVICE)
        .await
        .map_err(|e| StartupError::new(format!("Redis: {}", one_line(&e))))?;
    let reader = RedisStreamReader::connect(
        &settings.redis_url,
        redis_settings,
        &format!("{SERVICE}-reader"),
    )
    .await
    .map_err(|e| StartupError::new(format!("Redis: {}", one_line(&e))))?;
    adapters_postgres::check_schema(&pool)
        .await
        .map_err(|e| match e {
            ports::Error::Backend(reason) => StartupError::new(reason.to_string()),
            other => StartupError::new(format!("PostgreSQL: {}", one_line(&other))),
        })?;

    // Metrics, the worker, the consumer.
    let mut registry = Registry::with_prefix(SERVICE);
    let consumer_metrics = ConsumerMetrics::register(&mut registry);
    let worker_metrics = WorkerMetrics::register(&mut registry);
    let health = ConsumerHealth::default();
    let worker = HealthEventsWorker::new(
        PgRuntimeRecordStore::new(pool.clone()),
        RedisLobbyEventsPublisher::new(redis.clone(), lobby_stream.clone()),
        system_clock(),
        worker_metrics,
    );
    let mut config = ConsumerConfig::new(health_stream.clone(), OFFSET_LABEL);
    config.batch_size = settings.batch_size;
    config.block = settings.read_block;
    let consumer = Consumer::new(
        reader,
        RedisOffsetStore::new(redis.clone(), SERVICE),
        worker,
        config,
        consumer_metrics,
        health.clone(),
    );

    // Ops endpoints.
    let checks = vec![
        Check::new("postgres", {
            let pool = pool.clone();
            move || {
                let pool = pool.clone();
                async move {
                    pg_kit::ping(&pool, pg_kit::DEFAULT_PING_TIMEOUT)
                        .await
                        .map_err(|e| one_line(&e))
                }
            }
        }),
        Check::new("redis", {
            let redis = redis.clone();
            move || {
                let redis = redis.clone();
                async move { redis.ping().await.map_err(|e| one_line(&e)) }
            }
        }),
        Check::new("consumer", move || {
            let health = health.clone();
            async move { health.check() }
        }),
    ];
    let ops = OpsServer::bind(settings.http_addr, registry, checks).await?;
    tracing::info!(
        health_events_stream = %health_stream,
        lobby_events_stream = %lobby_stream,
        http_addr = %settings.http_addr,
        "gamemaster running"
    );

    // Run until a signal, then drain within the shutdown timeout.
    let stop = CancellationToken::new();
    let ops_stop = CancellationToken::new();
    tokio::spawn(service_kit::shutdown::cancel_on_signal(stop.clone()));
    let ops_task = tokio::spawn(ops.serve(ops_stop.clone()));
    let consumer_task = tokio::spawn(consumer.run(stop.clone()));
    let drained = tokio::select! {
        joined = consumer_task => joined.is_ok(),
        () = async {
            stop.cancelled().await;
            tokio::time::sleep(settings.shutdown_timeout).await;
        } => {
            tracing::error!(timeout = ?settings.shutdown_timeout, "drain did not finish in time; exiting with the offset at the last finished batch");
            false
        }
    };
    ops_stop.cancel();
    let _ = ops_task.await;
    redis.quit().await;
    if drained {
        tracing::info!("gamemaster stopped");
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}
