//! The sequence every stream-consumer binary runs, written once: connect PostgreSQL and
//! Redis (each checked, each failure one line), apply or check the schema, run the
//! consumer inside the ops server, drain on SIGTERM / SIGINT.

use std::future::Future;
use std::process::ExitCode;

use pg_kit::{MigrateError, PgSettings, Pool};
use prometheus_client::registry::Registry;
use redis_streams::{RedisClient, RedisOffsetStore, RedisSettings, RedisStreamReader};
use stream_consumer::{BatchHandler, Consumer, ConsumerConfig, ConsumerHealth, ConsumerMetrics};
use tokio_util::sync::CancellationToken;

use crate::ops::{Check, OpsServer};
use crate::settings::CommonSettings;
use crate::shutdown::{Drain, cancel_on_signal, serve_and_drain};
use crate::{StartupError, error_chain, telemetry};

/// Connects the pool `url` names and checks one connection.
///
/// # Errors
/// One line naming host, port and database (never the password).
pub async fn connect_postgres(url: &str, settings: &PgSettings) -> Result<Pool, StartupError> {
    pg_kit::connect(url, settings)
        .await
        .map_err(|e| StartupError::new(format!("PostgreSQL: {}", error_chain(&e))))
}

/// `<service> migrate`: connects and applies the service's migrations (`apply`).
///
/// # Errors
/// The server is unreachable or a migration failed.
pub async fn migrate<F, Fut>(service: &str, url: &str, apply: F) -> Result<ExitCode, StartupError>
where
    F: FnOnce(Pool) -> Fut,
    Fut: Future<Output = Result<refinery::Report, MigrateError>>,
{
    telemetry::init(telemetry::LogFormat::Text);
    let pool = connect_postgres(url, &PgSettings::default().application_name(service)).await?;
    let report = apply(pool)
        .await
        .map_err(|e| StartupError::new(format!("migration failed: {}", error_chain(&e))))?;
    tracing::info!(
        applied = report.applied_migrations().len(),
        "{service} schema is up to date"
    );
    Ok(ExitCode::SUCCESS)
}

/// Checks that the service's schema is in place: `tables` all exist. Stops the start with
/// one line naming the fix (`<service> migrate`) when one is missing.
///
/// # Errors
/// A start-up error naming the missing tables, or the server that could not be asked.
pub async fn check_schema(service: &str, pool: &Pool, tables: &[&str]) -> Result<(), StartupError> {
    let missing = pg_kit::missing_tables(pool, tables)
        .await
        .map_err(|e| StartupError::new(format!("PostgreSQL: {}", error_chain(&e))))?;
    if missing.is_empty() {
        return Ok(());
    }
    Err(StartupError::new(format!(
        "the {service} schema is missing (no table {}): run `{service} migrate` first",
        missing.join(", ")
    )))
}

/// What a consumer service talks to, each connection checked once at start.
pub struct Backends {
    /// The service's database.
    pub pool: Pool,
    /// Commands: offsets, publishing, readiness pings.
    pub redis: RedisClient,
    /// The blocking stream reader, on its own connection.
    pub reader: RedisStreamReader,
}

impl Backends {
    /// Connects PostgreSQL (pool sized and timed by `settings`) and two Redis clients.
    ///
    /// # Errors
    /// A one-line start-up error for the first server that cannot be reached.
    pub async fn connect(service: &str, settings: &CommonSettings) -> Result<Self, StartupError> {
        let pg = PgSettings::default()
            .max_connections(settings.postgres_pool_size)
            .statement_timeout(settings.statement_timeout)
            .application_name(service);
        let pool = connect_postgres(&settings.postgres_url, &pg).await?;
        let redis_error = |e: redis_streams::ConnectError| {
            StartupError::new(format!("Redis: {}", error_chain(&e)))
        };
        let redis = redis_streams::connect(&settings.redis_url, RedisSettings::default(), service)
            .await
            .map_err(redis_error)?;
        let reader = RedisStreamReader::connect(
            &settings.redis_url,
            RedisSettings::default(),
            &format!("{service}-reader"),
        )
        .await
        .map_err(redis_error)?;
        Ok(Self {
            pool,
            redis,
            reader,
        })
    }
}

/// Runs `handler` on `stream` (offset `<service>:stream_offsets:<label>`) until SIGTERM or
/// SIGINT, serving `/healthz`, `/readyz` (PostgreSQL, Redis, the consumer) and `/metrics`
/// from `registry` plus the consumer runtime's own metrics; then drains within the
/// shutdown timeout. Exit code 0 after a clean drain, 1 when it timed out.
///
/// # Errors
/// The ops address cannot be bound.
pub async fn run<H>(
    service: &'static str,
    settings: &CommonSettings,
    backends: Backends,
    stream: &str,
    label: &str,
    registry: Registry,
    handler: H,
) -> Result<ExitCode, StartupError>
where
    H: BatchHandler + 'static,
{
    let consumer = ConsumerSpec {
        stream,
        label,
        handler,
    };
    run_with(
        service,
        settings,
        backends,
        consumer,
        registry,
        axum::Router::new(),
    )
    .await
}

/// What [`run_with`] consumes: the stream, its offset label and the handler.
pub struct ConsumerSpec<'a, H> {
    /// The stream read.
    pub stream: &'a str,
    /// Its offset label.
    pub label: &'a str,
    /// The worker.
    pub handler: H,
}

/// [`run`], with `routes` served beside the ops endpoints (a service's operator
/// commands).
///
/// # Errors
/// The ops address cannot be bound.
pub async fn run_with<H>(
    service: &'static str,
    settings: &CommonSettings,
    backends: Backends,
    spec: ConsumerSpec<'_, H>,
    mut registry: Registry,
    routes: axum::Router,
) -> Result<ExitCode, StartupError>
where
    H: BatchHandler + 'static,
{
    let ConsumerSpec {
        stream,
        label,
        handler,
    } = spec;
    let Backends {
        pool,
        redis,
        reader,
    } = backends;
    let consumer_metrics = ConsumerMetrics::register(&mut registry);
    let health = ConsumerHealth::default();
    let mut config = ConsumerConfig::new(stream, label);
    config.batch_size = settings.batch_size;
    config.block = settings.read_block;
    config.refusal_hold = settings.refusal_hold;
    let consumer = Consumer::new(
        reader,
        RedisOffsetStore::new(redis.clone(), service),
        handler,
        config,
        consumer_metrics,
        health.clone(),
    );
    let checks = vec![
        Check::with("postgres", pool, |pool| async move {
            pg_kit::ping(&pool, pg_kit::DEFAULT_PING_TIMEOUT)
                .await
                .map_err(|e| error_chain(&e))
        }),
        Check::with("redis", redis.clone(), |redis| async move {
            redis.ping().await.map_err(|e| error_chain(&e))
        }),
        Check::with("consumer", health, |health| async move { health.check() }),
    ];
    let ops = OpsServer::bind(settings.http_addr, registry, checks)
        .await?
        .with_routes(routes);
    tracing::info!(%stream, http_addr = %settings.http_addr, "{service} running");

    let stop = CancellationToken::new();
    tokio::spawn(cancel_on_signal(stop.clone()));
    let drain = serve_and_drain(
        ops,
        stop.clone(),
        settings.shutdown_timeout,
        consumer.run(stop),
    )
    .await;
    redis.quit().await;
    if drain == Drain::Finished {
        tracing::info!("{service} stopped");
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}
