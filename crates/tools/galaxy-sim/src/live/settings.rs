//! `galaxy-live`'s settings: each a flag and a `GALAXY_LIVE_*` environment variable, with
//! its default shown by `--help`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::settings::{duration, url};

/// Runs real engines through a running Runtime Manager, Game Master and Lobby, disturbs
/// some for real, finishes them all, and checks that every effect went round the loop.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "galaxy-live",
    version,
    about = "Starts real engines through a running rtmanager, disturbs some (kill -9, SIGSTOP then \
             SIGCONT, a memory blow-up), finishes every game, and checks the health events, the Game \
             Master's and the Lobby's view, the stop jobs and their results",
    after_help = "Exit status: 0 when every check passed, 1 when one failed, 2 for a bad setting or a \
                  server that cannot be reached at start-up."
)]
pub struct LiveSettings {
    /// PostgreSQL URL of the Game Master's database.
    #[arg(long, env = "GALAXY_LIVE_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432/gamemaster", hide_env_values = true, value_parser = url(&["postgres", "postgresql"]))]
    pub postgres_url: String,

    /// PostgreSQL URL of the Lobby's database.
    #[arg(long, env = "GALAXY_LIVE_LOBBY_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432/lobby", hide_env_values = true, value_parser = url(&["postgres", "postgresql"]))]
    pub lobby_postgres_url: String,

    /// PostgreSQL URL of the Runtime Manager's database.
    #[arg(long, env = "GALAXY_LIVE_RTMANAGER_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432/rtmanager", hide_env_values = true, value_parser = url(&["postgres", "postgresql"]))]
    pub rtmanager_postgres_url: String,

    /// Redis URL (the one all three services use).
    #[arg(long, env = "GALAXY_LIVE_REDIS_URL", default_value = "redis://127.0.0.1:6379", hide_env_values = true, value_parser = url(&["redis", "rediss", "redis-cluster"]))]
    pub redis_url: String,

    /// The running Runtime Manager's ops address (its RTMANAGER_HTTP_ADDR).
    #[arg(
        long,
        env = "GALAXY_LIVE_RTMANAGER_HTTP_ADDR",
        default_value = "127.0.0.1:8082"
    )]
    pub rtmanager_http_addr: SocketAddr,

    /// Games given a real engine (three of them are disturbed).
    #[arg(long, env = "GALAXY_LIVE_GAMES", default_value_t = 24, value_parser = clap::value_parser!(u32).range(4..=200))]
    pub games: u32,

    /// The engines' memory limit, as the Runtime Manager has it
    /// (RTMANAGER_ENGINE_MEMORY_LIMIT_MIB): the blow-up allocates past it.
    #[arg(long, env = "GALAXY_LIVE_ENGINE_MEMORY_LIMIT_MIB", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub engine_memory_limit_mib: u32,

    /// How long each wait (engines up, an effect seen, the loop closed) may take.
    #[arg(long, env = "GALAXY_LIVE_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub timeout: Duration,

    /// Prefix of the games' ids (default: `live-` and the run's start time).
    #[arg(long, env = "GALAXY_LIVE_GAME_PREFIX")]
    pub game_prefix: Option<String>,
}
