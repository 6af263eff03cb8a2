//! The `gamemaster` binary's wiring: settings → PostgreSQL pool, Redis clients, the lease
//! keeper (which divides the shards among instances) and the health-events worker inside
//! the stream-consumer runtime, the ops HTTP server, and a drain on SIGTERM / SIGINT.
//! Everything reusable lives in the crates it links; this crate only connects them.

mod shards;

use std::process::ExitCode;

use std::time::Duration;

use adapters_postgres::PgRuntimeRecordStore;
use adapters_redis::{RedisLeases, RedisLobbyEventsPublisher};
use clap::{Arg, ArgMatches, Command};
use domain_runtime::Ownership;
use domain_runtime::shards::{DEFAULT_SHARDS, MAX_SHARDS, ShardCount};
use prometheus_client::registry::Registry;
use service_kit::consumer::{self, Backends, Work};
use service_kit::ops::Detail;
use service_kit::settings::{
    CommonSettings, Defaults, duration_arg, instance_id, instance_id_arg, migrate_command,
    postgres_url, stream_arg,
};
use service_kit::status::Consumed;
use service_kit::{StartupError, telemetry};
use worker_healthevents::{
    HealthEventsWorker, OFFSET_LABEL, WorkerMetrics, start_position, system_clock,
};
use worker_leases::{KeeperMetrics, LeaseKeeper};

/// The service name: log target, metric prefix, offset-key prefix, stderr prefix.
pub const SERVICE: &str = "gamemaster";

/// The offset labels of the service's consumers (their dead letters are kept by label).
const CONSUMERS: [&str; 1] = [OFFSET_LABEL];

/// The consumer `status` reports, and the setting naming its stream.
const CONSUMED: [Consumed; 1] = [Consumed {
    label: OFFSET_LABEL,
    stream_setting: "health_events_stream",
}];

/// The settings naming the streams the Game Master consumes (for `run` and `status`).
fn consumed_streams() -> Vec<Arg> {
    vec![stream_arg(
        DEFAULTS.env_prefix,
        "health_events_stream",
        "health-events-stream",
        "HEALTH_EVENTS_STREAM",
        "runtime:health_events",
        "Stream the Runtime Manager publishes health events on",
    )]
}

const DEFAULTS: Defaults = Defaults {
    env_prefix: "GAMEMASTER",
    postgres_url: "postgres://postgres@127.0.0.1:5432/gamemaster",
    http_addr: "127.0.0.1:8080",
    batch_size: "4000",
    read_block: "500ms",
};

/// The command line: `migrate` and `run`, every setting also an environment variable.
#[must_use]
pub fn command() -> Command {
    Command::new(SERVICE)
        .about("Game Master: applies Runtime Manager health events to runtime records and publishes snapshots for the Game Lobby")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(migrate_command("Game Master", &DEFAULTS))
        .subcommand(service_kit::dead_letters::command(&DEFAULTS, &CONSUMERS))
        .subcommand(service_kit::status::command(&DEFAULTS, consumed_streams()))
        .subcommand(shards::command(&DEFAULTS, consumed_streams()))
        .subcommand(
            Command::new("run")
                .about("Consume the health events stream until SIGTERM or SIGINT")
                .args(CommonSettings::args(&DEFAULTS))
                .args(consumed_streams())
                .arg(stream_arg(
                    DEFAULTS.env_prefix,
                    "lobby_events_stream",
                    "lobby-events-stream",
                    "LOBBY_EVENTS_STREAM",
                    "gm:lobby_events",
                    "Stream the Game Master publishes runtime snapshots on for the Game Lobby",
                ))
                .arg(shards_arg())
                .arg(instance_id_arg(DEFAULTS.env_prefix))
                .arg(duration_arg(
                    DEFAULTS.env_prefix,
                    "lease_ttl",
                    "lease-ttl",
                    "LEASE_TTL",
                    "2s",
                    "How long a shard lease lasts unrenewed: a stopped or dead instance's shards move to the others within about this long (renewed four times per period)",
                )),
        )
}

/// `--shards` / `GAMEMASTER_SHARDS`: the deployment's shard count (decision 0023).
fn shards_arg() -> Arg {
    Arg::new("shards")
        .long("shards")
        .env("GAMEMASTER_SHARDS")
        .default_value(DEFAULT_SHARDS.to_string())
        .value_parser(clap::value_parser!(u32).range(1..=i64::from(MAX_SHARDS)))
        .help("How many shards games are partitioned into; set once per deployment, the same on every instance")
}

/// Runs the parsed command; the exit code is 0 on success, 2 for a start-up failure (one
/// line on stderr), 1 when a stop could not drain in time.
pub async fn main(matches: ArgMatches) -> ExitCode {
    let result = match matches.subcommand() {
        Some(("migrate", m)) => migrate(m).await,
        Some(("dead-letters", m)) => service_kit::dead_letters::run(SERVICE, &CONSUMERS, m).await,
        Some(("status", m)) => service_kit::status::run(SERVICE, &CONSUMED, m).await,
        Some(("shards", m)) => shards::run(SERVICE, m).await,
        Some(("run", m)) => run(m).await,
        _ => Err(StartupError::new("unknown command (see gamemaster --help)")),
    };
    match result {
        Ok(code) => code,
        Err(e) => e.report(SERVICE),
    }
}

async fn migrate(m: &ArgMatches) -> Result<ExitCode, StartupError> {
    consumer::migrate(SERVICE, &postgres_url(m), |pool| async move {
        adapters_postgres::migrate(&pool).await
    })
    .await
}

async fn run(m: &ArgMatches) -> Result<ExitCode, StartupError> {
    let settings = CommonSettings::from_matches(m);
    let stream = |id: &str| m.get_one::<String>(id).cloned().unwrap_or_default();
    let health_stream = stream("health_events_stream");
    let lobby_stream = stream("lobby_events_stream");
    telemetry::init(settings.log_format);

    let (instance, count) = (instance_id(m), shard_count(m)?);
    // Each connection names its instance (`pg_stat_activity`, `CLIENT LIST`): which
    // instance holds what is visible on the servers themselves.
    let backends = Backends::connect(&format!("{SERVICE}/{instance}"), &settings).await?;
    consumer::check_schema(SERVICE, &backends.pool, &adapters_postgres::TABLES).await?;

    let mut registry = Registry::with_prefix(SERVICE);
    let store = PgRuntimeRecordStore::new(backends.pool.clone());
    store.register_metrics(&mut registry);
    let (keeper_side, worker_side) = ports::handover();
    let leases = RedisLeases::new(backends.redis.clone(), SERVICE);
    let notices = leases
        .notices(
            &settings.redis_url,
            &format!("{SERVICE}/{instance}-notices"),
        )
        .await
        .map_err(|e| StartupError::new(format!("Redis: {}", service_kit::error_chain(&e))))?;
    let mut keeper = LeaseKeeper::new(
        leases,
        store.clone(),
        instance.clone(),
        count,
        lease_ttl(m)?,
        keeper_side,
        KeeperMetrics::register(&mut registry),
    );
    let waker = keeper.waker();
    let owner = first_claims(&mut keeper, &instance, count).await?;
    let start = start_position(&owner);
    let metrics = WorkerMetrics::register(&mut registry);
    let lags = metrics.shard_lags();
    let worker = HealthEventsWorker::new(
        store,
        RedisLobbyEventsPublisher::new(backends.redis.clone(), lobby_stream.clone()),
        system_clock(),
        metrics,
        owner,
    )
    .with_handover(worker_side);
    tracing::info!(lobby_events_stream = %lobby_stream, "publishing runtime snapshots");
    let work = Work::new()
        .consumer_at(health_stream, OFFSET_LABEL, worker, start)
        .background(move |stop| keeper.run(stop))
        .background(move |stop| notices.wake(waker, stop))
        .detail(Detail::new("shards", move || shards_detail(&lags.get())));
    consumer::run(SERVICE, &settings, backends, work, registry).await
}

/// `/readyz`'s `shards`: the shards this instance owns, each one's lag in seconds (as last
/// measured, about once a second; `null` before its first entry) and the largest.
fn shards_detail(lags: &std::collections::BTreeMap<u32, f64>) -> serde_json::Value {
    let max = lags
        .values()
        .copied()
        .filter(|l| l.is_finite())
        .reduce(f64::max);
    let by_shard: serde_json::Map<String, serde_json::Value> = lags
        .iter()
        .map(|(shard, lag)| (shard.to_string(), serde_json::json!(lag)))
        .collect();
    serde_json::json!({
        "owned": lags.len(),
        "max_lag_seconds": max,
        "lag_seconds": by_shard,
    })
}

/// `--shards`, as a layout.
fn shard_count(m: &ArgMatches) -> Result<ShardCount, StartupError> {
    let shards = m
        .get_one::<u32>("shards")
        .copied()
        .unwrap_or(DEFAULT_SHARDS);
    ShardCount::new(u64::from(shards)).map_err(|e| StartupError::new(format!("--shards: {e}")))
}

/// The shortest lease time to live: ticks (a quarter of it) need room for a round trip
/// to Redis and PostgreSQL each.
const MIN_LEASE_TTL: Duration = Duration::from_millis(400);

/// `--lease-ttl`, checked.
fn lease_ttl(m: &ArgMatches) -> Result<Duration, StartupError> {
    let ttl = m
        .get_one::<Duration>("lease_ttl")
        .copied()
        .unwrap_or(worker_leases::DEFAULT_LEASE_TTL);
    if ttl < MIN_LEASE_TTL {
        return Err(StartupError::new(format!(
            "--lease-ttl {ttl:?}: must be at least {MIN_LEASE_TTL:?}"
        )));
    }
    Ok(ttl)
}

/// The keeper's first tick: this instance's first shards (all of them when it runs
/// alone; none yet when others hold them, which then hand its share over).
async fn first_claims<L, S>(
    keeper: &mut LeaseKeeper<L, S>,
    instance: &str,
    count: ShardCount,
) -> Result<Ownership, StartupError>
where
    L: ports::ShardLeases,
    S: ports::RuntimeRecordStore,
{
    let claims = keeper.start().await.map_err(|e| {
        StartupError::new(format!("claiming shards: {}", service_kit::error_chain(&e)))
    })?;
    let epochs: Vec<u64> = claims.iter().map(|c| c.epoch).collect();
    tracing::info!(
        instance = %instance,
        shards = count.get(),
        owned = claims.len(),
        lowest_epoch = epochs.iter().min().copied().unwrap_or_default(),
        highest_epoch = epochs.iter().max().copied().unwrap_or_default(),
        "claimed shards"
    );
    Ok(Ownership::new(count, claims))
}
