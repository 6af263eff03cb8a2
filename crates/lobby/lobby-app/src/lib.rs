//! The `lobby` binary's wiring: settings → PostgreSQL pool, Redis clients, the gmevents
//! worker inside the stream-consumer runtime, the ops HTTP server, and a drain on SIGTERM /
//! SIGINT. Everything reusable lives in the crates it links; this crate only connects
//! them.
//!
//! Subcommands:
//! - `lobby migrate`: applies the Lobby's schema (safe to run twice, or concurrently);
//! - `lobby seed-game <GAME_ID>… [--status running]`: creates games the Lobby does not
//!   know yet. The Lobby's own flows that create games (drafts, enrollment, start) are not
//!   part of this project, and an event for an unknown game is skipped (SPEC §Lobby), so
//!   operators, demos and tests create the games the Game Master runs this way;
//! - `lobby run`: consumes `gm:lobby_events` until SIGTERM or SIGINT, sends the stop
//!   requests its finishes and operators made to `runtime:stop_jobs`, and records the
//!   Runtime Manager's answers from `runtime:job_results` on their games (`worker-stops`);
//! - `lobby stop-game <GAME_ID>`: asks for the game's runtime to be stopped (reason
//!   `admin_request`), one stop job, sent by the running Lobby.

use std::process::ExitCode;

use clap::{Arg, ArgAction, ArgMatches, Command, builder::PossibleValuesParser};
use contracts::StopReason;
use lobby_adapters_postgres::PgLobbyStore;
use lobby_domain::{GameId, GameStatus};
use lobby_ports::{Error, GameStore, NewGame, StopRequests};
use pg_kit::{PgSettings, Pool};
use prometheus_client::registry::Registry;
use redis_streams::StreamWriter;
use service_kit::consumer::{self, Backends, Work};
use service_kit::settings::{
    CommonSettings, Defaults, migrate_command, postgres_url, postgres_url_arg, stream_arg,
};
use service_kit::{StartupError, error_chain, telemetry};
use worker_gmevents::{GmEventsWorker, WorkerMetrics, system_clock};
use worker_stops::JobResultsWorker;

/// The service name: log target, metric prefix, offset-key prefix, stderr prefix.
pub const SERVICE: &str = "lobby";

/// The offset labels of the service's consumers (their dead letters are kept by label).
const CONSUMERS: [&str; 2] = [worker_gmevents::OFFSET_LABEL, worker_stops::OFFSET_LABEL];

/// The consumers `status` reports, and the settings naming their streams.
const CONSUMED: [service_kit::status::Consumed; 2] = [
    service_kit::status::Consumed {
        label: worker_gmevents::OFFSET_LABEL,
        stream_setting: "gm_events_stream",
    },
    service_kit::status::Consumed {
        label: worker_stops::OFFSET_LABEL,
        stream_setting: "job_results_stream",
    },
];

/// The settings naming the streams the Lobby consumes (for `run` and `status`).
fn consumed_streams() -> Vec<Arg> {
    vec![
        stream_arg(
            DEFAULTS.env_prefix,
            "gm_events_stream",
            "gm-events-stream",
            "GM_EVENTS_STREAM",
            "gm:lobby_events",
            "Stream the Game Master publishes runtime snapshots and finished games on",
        ),
        stream_arg(
            DEFAULTS.env_prefix,
            "job_results_stream",
            "job-results-stream",
            "JOB_RESULTS_STREAM",
            contracts::job_results::DEFAULT_STREAM,
            "Stream the Runtime Manager answers the Lobby's stop jobs on",
        ),
    ]
}

const DEFAULTS: Defaults = Defaults {
    env_prefix: "LOBBY",
    postgres_url: "postgres://postgres@127.0.0.1:5432/lobby",
    http_addr: "127.0.0.1:8081",
    batch_size: "1000",
    read_block: "2s",
};

/// The command line: `migrate`, `seed-game` and `run`, every setting also an environment
/// variable.
#[must_use]
pub fn command() -> Command {
    let statuses: Vec<&'static str> = GameStatus::ALL.iter().map(|s| s.as_str()).collect();
    Command::new(SERVICE)
        .about("Game Lobby: applies the Game Master's runtime snapshots to games, finishes games and updates player careers")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(migrate_command("Lobby", &DEFAULTS))
        .subcommand(service_kit::dead_letters::command(&DEFAULTS, &CONSUMERS))
        .subcommand(service_kit::status::command(&DEFAULTS, consumed_streams()))
        .subcommand(
            Command::new("seed-game")
                .about("Create games the Lobby does not know yet (games that exist are left alone), so the Game Master's events for them apply")
                .arg(postgres_url_arg(&DEFAULTS))
                .arg(
                    Arg::new("status")
                        .long("status")
                        .default_value(GameStatus::Running.as_str())
                        .value_parser(PossibleValuesParser::new(statuses))
                        .help("Status the new games start in"),
                )
                .arg(
                    Arg::new("game_ids")
                        .value_name("GAME_ID")
                        .required(true)
                        .action(ArgAction::Append)
                        .help("Ids of the games to create (the Game Master's game ids)"),
                ),
        )
        .subcommand(
            Command::new("run")
                .about("Consume the Game Master's events until SIGTERM or SIGINT")
                .args(CommonSettings::args(&DEFAULTS))
                .args(consumed_streams())
                .arg(stream_arg(
                    DEFAULTS.env_prefix,
                    "stop_jobs_stream",
                    "stop-jobs-stream",
                    "STOP_JOBS_STREAM",
                    contracts::stop_jobs::DEFAULT_STREAM,
                    "Stream the Lobby appends its stop jobs to, for the Runtime Manager",
                ))
,
        )
        .subcommand(
            Command::new("stop-game")
                .about("Ask for a game's runtime to be stopped (reason admin_request); the running Lobby sends the stop job")
                .arg(postgres_url_arg(&DEFAULTS))
                .arg(
                    Arg::new("game")
                        .value_name("GAME_ID")
                        .required(true)
                        .help("The game whose runtime is to be stopped"),
                ),
        )
}

/// Runs the parsed command; the exit code is 0 on success, 2 for a start-up failure (one
/// line on stderr), 1 when a stop could not drain in time.
pub async fn main(matches: ArgMatches) -> ExitCode {
    let result = match matches.subcommand() {
        Some(("migrate", m)) => migrate(m).await,
        Some(("dead-letters", m)) => service_kit::dead_letters::run(SERVICE, &CONSUMERS, m).await,
        Some(("status", m)) => service_kit::status::run(SERVICE, &CONSUMED, m).await,
        Some(("seed-game", m)) => seed_game(m).await,
        Some(("run", m)) => run(m).await,
        Some(("stop-game", m)) => stop_game(m).await,
        _ => Err(StartupError::new("unknown command (see lobby --help)")),
    };
    match result {
        Ok(code) => code,
        Err(e) => e.report(SERVICE),
    }
}

/// The schema check, as a start-up error that names the fix.
async fn check_schema(pool: &Pool) -> Result<(), StartupError> {
    consumer::check_schema(SERVICE, pool, &lobby_adapters_postgres::TABLES).await
}

async fn migrate(m: &ArgMatches) -> Result<ExitCode, StartupError> {
    consumer::migrate(SERVICE, &postgres_url(m), |pool| async move {
        lobby_adapters_postgres::migrate(&pool).await
    })
    .await
}

async fn seed_game(m: &ArgMatches) -> Result<ExitCode, StartupError> {
    telemetry::init(telemetry::LogFormat::Text);
    let status: GameStatus = m
        .get_one::<String>("status")
        .map_or(Ok(GameStatus::Running), |s| s.parse())
        .map_err(|e| StartupError::new(e.to_string()))?;
    let ids = m
        .get_many::<String>("game_ids")
        .into_iter()
        .flatten()
        .map(|raw| {
            GameId::new(raw.as_str()).map_err(|e| StartupError::new(format!("{e}: {raw:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let settings = PgSettings::default().application_name(SERVICE);
    let pool = consumer::connect_postgres(&postgres_url(m), &settings).await?;
    check_schema(&pool).await?;
    let store = PgLobbyStore::new(pool);
    for game_id in ids {
        let new = NewGame { game_id, status };
        match store.create(&new).await {
            Ok(game) => println!("created {} ({})", game.game_id, game.status),
            Err(Error::AlreadyExists(id)) => {
                let existing = store
                    .get(&id)
                    .await
                    .map_err(|e| StartupError::new(error_chain(&e)))?;
                println!("exists {id} ({}), left alone", existing.status);
            }
            Err(e) => {
                return Err(StartupError::new(format!(
                    "PostgreSQL: {}",
                    error_chain(&e)
                )));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(m: &ArgMatches) -> Result<ExitCode, StartupError> {
    let settings = CommonSettings::from_matches(m);
    let stream = |id: &str| m.get_one::<String>(id).cloned().unwrap_or_default();
    telemetry::init(settings.log_format);

    let backends = Backends::connect(SERVICE, &settings).await?;
    check_schema(&backends.pool).await?;
    let mut registry = Registry::with_prefix(SERVICE);
    let store = PgLobbyStore::new(backends.pool.clone());
    let events = GmEventsWorker::new(
        store.clone(),
        store.clone(),
        system_clock(),
        WorkerMetrics::register(&mut registry),
    );
    let answers =
        JobResultsWorker::new(store.clone(), worker_stops::register_metrics(&mut registry));
    let writer = StreamWriter::new(backends.redis.clone(), stream("stop_jobs_stream"));
    let work = Work::new()
        .consumer(
            stream("gm_events_stream"),
            worker_gmevents::OFFSET_LABEL,
            events,
        )
        .consumer(
            stream("job_results_stream"),
            worker_stops::OFFSET_LABEL,
            answers,
        )
        .background(move |stop| worker_stops::send::run(store, writer, stop));
    consumer::run(SERVICE, &settings, backends, work, registry).await
}

async fn stop_game(m: &ArgMatches) -> Result<ExitCode, StartupError> {
    telemetry::init(telemetry::LogFormat::Text);
    let raw = m.get_one::<String>("game").cloned().unwrap_or_default();
    let game_id =
        GameId::new(raw.as_str()).map_err(|e| StartupError::new(format!("{e}: {raw:?}")))?;
    let settings = PgSettings::default().application_name(SERVICE);
    let pool = consumer::connect_postgres(&postgres_url(m), &settings).await?;
    check_schema(&pool).await?;
    PgLobbyStore::new(pool)
        .request_stop(&game_id, StopReason::AdminRequest)
        .await
        .map_err(|e| match e {
            Error::NotFound(id) => StartupError::new(format!("no game '{id}' in the Lobby")),
            other => StartupError::new(format!("PostgreSQL: {}", error_chain(&other))),
        })?;
    println!("stop of {game_id} requested: the running Lobby sends it to the Runtime Manager");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use service_kit::settings::parse_from;

    #[test]
    fn the_command_line_is_well_formed_and_defaults_to_the_lobby() {
        command().debug_assert();
        let m = parse_from(command(), ["lobby", "run"]).unwrap();
        let (_, run) = m.subcommand().unwrap();
        let s = CommonSettings::from_matches(run);
        assert_eq!(s.postgres_url, "postgres://postgres@127.0.0.1:5432/lobby");
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:8081");
        assert_eq!(
            run.get_one::<String>("gm_events_stream").unwrap(),
            "gm:lobby_events"
        );
    }

    #[test]
    fn seed_game_takes_ids_and_a_known_status() {
        let m = parse_from(
            command(),
            ["lobby", "seed-game", "g1", "g2", "--status", "paused"],
        )
        .unwrap();
        let (_, seed) = m.subcommand().unwrap();
        let ids: Vec<&String> = seed.get_many::<String>("game_ids").unwrap().collect();
        assert_eq!(ids, ["g1", "g2"]);
        assert_eq!(seed.get_one::<String>("status").unwrap(), "paused");
        assert!(parse_from(command(), ["lobby", "seed-game", "g1", "--status", "won"]).is_err());
        assert!(parse_from(command(), ["lobby", "seed-game"]).is_err());
    }
}
