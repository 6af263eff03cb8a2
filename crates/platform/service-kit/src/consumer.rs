//! The sequence every stream-consumer binary runs, written once: connect PostgreSQL and
//! Redis (each checked, each failure one line), apply or check the schema, run the
//! consumer inside the ops server, drain on SIGTERM / SIGINT.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pg_kit::{MigrateError, PgSettings, Pool};
use prometheus_client::registry::Registry;
use redis_streams::{
    RedisClient, RedisDeadLetters, RedisOffsetStore, RedisSettings, RedisStreamReader,
};
use stream_consumer::{
    BatchHandler, Consumer, ConsumerConfig, ConsumerHealth, ConsumerMetrics, EntryId,
};
use tokio_util::sync::CancellationToken;

use crate::ops::{Check, Detail, OpsServer};
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
    /// `service` names every connection: PostgreSQL's `application_name`, the Redis
    /// clients' names in logs (a service with several instances adds the instance's id).
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

/// A background loop of a service (a sender, a supervisor): it runs until the token fires.
type Loop = Box<dyn FnOnce(CancellationToken) -> BoxFuture + Send>;
type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One stream consumer of a service: the stream read, its offset label, the worker.
struct ConsumerSpec {
    stream: String,
    label: String,
    handler: Box<dyn BatchHandler>,
    start: Option<EntryId>,
}

/// What a service runs inside its ops server: its stream consumers, its background loops
/// and routes of its own (operator commands). Every part watches the one stop token, and
/// the drain waits for all of them.
#[derive(Default)]
pub struct Work {
    consumers: Vec<ConsumerSpec>,
    loops: Vec<Loop>,
    routes: axum::Router,
    details: Vec<Detail>,
}

impl Work {
    /// Nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a consumer of `stream` (offset `<service>:stream_offsets:<label>`, and the
    /// `consumer` label of the runtime's metrics) running `handler`.
    #[must_use]
    pub fn consumer(
        self,
        stream: impl Into<String>,
        label: impl Into<String>,
        handler: impl BatchHandler + 'static,
    ) -> Self {
        self.consumer_at(stream, label, handler, None)
    }

    /// [`Work::consumer`], reading after `start` when given, instead of the stored offset
    /// (a handler that keeps its own positions; the offset is still stored as it moves).
    #[must_use]
    pub fn consumer_at(
        mut self,
        stream: impl Into<String>,
        label: impl Into<String>,
        handler: impl BatchHandler + 'static,
        start: Option<EntryId>,
    ) -> Self {
        self.consumers.push(ConsumerSpec {
            stream: stream.into(),
            label: label.into(),
            handler: Box::new(handler),
            start,
        });
        self
    }

    /// Adds a loop that runs beside the consumers until the token it is given fires.
    #[must_use]
    pub fn background<F, Fut>(mut self, run: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.loops.push(Box::new(move |stop| Box::pin(run(stop))));
        self
    }

    /// Serves `routes` beside the ops endpoints.
    #[must_use]
    pub fn routes(mut self, routes: axum::Router) -> Self {
        self.routes = routes;
        self
    }

    /// Shows `detail` in every `/readyz` answer (and so in `status`).
    #[must_use]
    pub fn detail(mut self, detail: Detail) -> Self {
        self.details.push(detail);
        self
    }
}

/// Runs `work` until SIGTERM or SIGINT, serving `/healthz`, `/readyz` (PostgreSQL, Redis,
/// each consumer as `consumer <label>`) and `/metrics` from `registry` plus the consumer
/// runtime's own metrics; then drains within the shutdown timeout. The first consumer
/// reads on the backends' reader; each other one gets a connection of its own, since a
/// blocking read holds its connection. Exit code 0 after a clean drain, 1 when it timed
/// out.
///
/// # Errors
/// The ops address cannot be bound, or a further reader cannot connect.
pub async fn run(
    service: &'static str,
    settings: &CommonSettings,
    backends: Backends,
    work: Work,
    mut registry: Registry,
) -> Result<ExitCode, StartupError> {
    let Backends {
        pool,
        redis,
        reader,
    } = backends;
    let metrics = ConsumerMetrics::register(&mut registry);
    let mut checks = vec![
        Check::with("postgres", pool, |pool| async move {
            pg_kit::ping(&pool, pg_kit::DEFAULT_PING_TIMEOUT)
                .await
                .map_err(|e| error_chain(&e))
        }),
        Check::with("redis", redis.clone(), |redis| async move {
            redis.ping().await.map_err(|e| error_chain(&e))
        }),
    ];
    let mut parts: Vec<Loop> = Vec::new();
    let mut reader = Some(reader);
    for spec in work.consumers {
        let reader = match reader.take() {
            Some(first) => first,
            None => connect_reader(service, settings, &spec.label).await?,
        };
        let health = ConsumerHealth::default();
        checks.push(Check::with(
            format!("consumer {}", spec.label),
            health.clone(),
            |health| async move { health.check() },
        ));
        let dead_letters = RedisDeadLetters::new(
            redis.clone(),
            contracts::dead_letters::stream_for(service, &spec.label),
            settings.dead_letter_max_len,
        );
        let mut consumer = Consumer::new(
            reader,
            RedisOffsetStore::new(redis.clone(), service),
            spec.handler,
            consumer_config(settings, spec.stream, spec.label),
            metrics.clone(),
            health,
        )
        .with_dead_letters(dead_letters);
        if let Some(start) = spec.start {
            consumer = consumer.starting_at(start);
        }
        parts.push(Box::new(move |stop| Box::pin(consumer.run(stop))));
    }
    parts.extend(work.loops);
    let ops = OpsServer::bind(settings.http_addr, registry, checks)
        .await?
        .with_routes(work.routes)
        .with_details(work.details);
    tracing::info!(http_addr = %settings.http_addr, "{service} running");
    let drain = run_until_signal(ops, settings.shutdown_timeout, parts).await;
    redis.quit().await;
    if drain == Drain::Finished {
        tracing::info!("{service} stopped");
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}

/// A further blocking reader, named after its consumer.
async fn connect_reader(
    service: &str,
    settings: &CommonSettings,
    label: &str,
) -> Result<RedisStreamReader, StartupError> {
    RedisStreamReader::connect(
        &settings.redis_url,
        RedisSettings::default(),
        &format!("{service}-reader-{label}"),
    )
    .await
    .map_err(|e| StartupError::new(format!("Redis: {}", error_chain(&e))))
}

/// A consumer's settings: the common batch tuning for `stream` under `label`.
fn consumer_config(settings: &CommonSettings, stream: String, label: String) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(stream, label);
    config.batch_size = settings.batch_size;
    config.block = settings.read_block;
    config.refusal_hold = settings.refusal_hold;
    config
}

/// Runs every part on one stop token, fired by SIGTERM or SIGINT, and drains them all. A
/// part that panics stops the others too (a service missing a part is not running), and
/// the drain reports it.
async fn run_until_signal(ops: OpsServer, timeout: std::time::Duration, parts: Vec<Loop>) -> Drain {
    let stop = CancellationToken::new();
    tokio::spawn(cancel_on_signal(stop.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    for part in parts {
        tasks.spawn(part(stop.clone()));
    }
    let failed = Arc::new(AtomicBool::new(false));
    let (all_stop, all_failed) = (stop.clone(), failed.clone());
    let all = async move {
        while let Some(joined) = tasks.join_next().await {
            if let Err(error) = joined {
                tracing::error!(%error, "a part of the service ended abnormally; stopping");
                all_failed.store(true, Ordering::SeqCst);
                all_stop.cancel();
            }
        }
    };
    let drain = serve_and_drain(ops, stop, timeout, all).await;
    if failed.load(Ordering::SeqCst) {
        Drain::Panicked
    } else {
        drain
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    async fn ops() -> OpsServer {
        OpsServer::bind(
            "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
            Registry::default(),
            vec![],
        )
        .await
        .unwrap_or_else(|e| panic!("{}", e.0))
    }

    #[tokio::test]
    async fn a_part_that_panics_stops_the_others_and_the_drain_says_so() {
        let stopped = Arc::new(AtomicUsize::new(0));
        let watcher = stopped.clone();
        let parts: Vec<Loop> = vec![
            Box::new(move |stop: CancellationToken| -> BoxFuture {
                Box::pin(async move {
                    stop.cancelled().await;
                    watcher.fetch_add(1, Ordering::SeqCst);
                })
            }),
            Box::new(|_stop: CancellationToken| -> BoxFuture {
                Box::pin(async { panic!("a worker gone wrong") })
            }),
        ];
        let drain = run_until_signal(ops().await, Duration::from_secs(5), parts).await;
        assert_eq!(drain, Drain::Panicked);
        assert_eq!(
            stopped.load(Ordering::SeqCst),
            1,
            "the healthy part was stopped and drained"
        );
    }
}
