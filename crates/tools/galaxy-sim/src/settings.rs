//! The simulator's settings: each a flag and a `GALAXY_SIM_*` environment variable, with
//! its default shown by `--help`.

use std::time::Duration;

use clap::Parser;

/// Where to find the Game Master's metrics: `http://host:port/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsUrl {
    /// `host:port`, as given.
    pub authority: String,
    /// The path, `/metrics` when the URL has none.
    pub path: String,
}

impl std::fmt::Display for MetricsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

fn metrics_url(s: &str) -> Result<MetricsUrl, String> {
    let rest = s
        .strip_prefix("http://")
        .ok_or("expected http://host:port/metrics")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let port_ok = authority
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        return Err("expected http://host:port/metrics, with a port".into());
    }
    Ok(MetricsUrl {
        authority: authority.to_owned(),
        path: path.to_owned(),
    })
}

pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (write a duration like 500ms, 20s or 1m)"))?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

pub(crate) fn url(
    schemes: &'static [&'static str],
) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |s: &str| match s.split_once("://") {
        Some((scheme, _)) if schemes.contains(&scheme) => Ok(s.to_owned()),
        _ => Err(format!(
            "expected a URL starting with {}://",
            schemes.join(":// or ")
        )),
    }
}

fn game_prefix(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        return Err("may hold only letters, digits and - _ . :".into());
    }
    Ok(s.to_owned())
}

/// Plays a fleet of game engines through the Runtime Manager's health publisher against a
/// running Game Master (and, optionally, a running Lobby), predicts what both must end up
/// with, and checks it.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "galaxy-sim",
    version,
    about = "Simulates Runtime Manager health traffic and other Game Master flows for a fleet of games, \
             waits for the Game Master (and the Lobby, when given) to drain, and checks every runtime \
             record, Lobby game and player career against a model",
    after_help = "Exit status: 0 when every game converged (in the Game Master and, when given, the Lobby), \
                  1 when something diverged or the run failed, 2 for a bad setting or a server that \
                  cannot be reached at start-up."
)]
pub struct Settings {
    /// PostgreSQL URL of the Game Master's database (where runtime_records lives). The
    /// Runtime Manager's health_snapshots table is created in the same database.
    #[arg(
        long,
        env = "GALAXY_SIM_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/gamemaster",
        hide_env_values = true,
        value_parser = url(&["postgres", "postgresql"])
    )]
    pub postgres_url: String,

    /// Redis URL (the one the Game Master reads).
    #[arg(
        long,
        env = "GALAXY_SIM_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        value_parser = url(&["redis", "rediss", "redis-cluster"])
    )]
    pub redis_url: String,

    /// Stream the health events are published on (the Game Master's
    /// GAMEMASTER_HEALTH_EVENTS_STREAM).
    #[arg(
        long,
        env = "GALAXY_SIM_HEALTH_EVENTS_STREAM",
        default_value = "runtime:health_events",
        value_parser = service_kit::settings::validate_stream_name
    )]
    pub health_events_stream: String,

    /// Stream the Game Master publishes snapshots on (its GAMEMASTER_LOBBY_EVENTS_STREAM;
    /// the Lobby's LOBBY_GM_EVENTS_STREAM). The simulator's stand-ins for the Game
    /// Master's other flows publish there too, through the Game Master's own publisher.
    #[arg(
        long,
        env = "GALAXY_SIM_LOBBY_EVENTS_STREAM",
        default_value = "gm:lobby_events",
        value_parser = service_kit::settings::validate_stream_name
    )]
    pub lobby_events_stream: String,

    /// Games in the fleet.
    #[arg(
        long,
        env = "GALAXY_SIM_GAMES",
        default_value_t = 200,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub games: u32,

    /// How long to publish.
    #[arg(long, env = "GALAXY_SIM_DURATION", default_value = "20s", value_parser = duration)]
    pub duration: Duration,

    /// Health events per second across the fleet (a ceiling: the run reports what it
    /// reached).
    #[arg(
        long,
        env = "GALAXY_SIM_RATE",
        default_value_t = 2000,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000)
    )]
    pub rate: u32,

    /// Seed of every game's life; the same seed replays the same lives. Random (and
    /// printed) when not given.
    #[arg(long, env = "GALAXY_SIM_SEED")]
    pub seed: Option<u64>,

    /// Prefix of this run's game ids (`<prefix>-<n>`). A fresh one per run by default, so
    /// runs never share a game.
    #[arg(long, env = "GALAXY_SIM_GAME_PREFIX", value_parser = game_prefix)]
    pub game_prefix: Option<String>,

    /// The Game Master's /metrics URL, e.g. http://127.0.0.1:8080/metrics; when given, the
    /// summary adds what the Game Master counted.
    #[arg(long, env = "GALAXY_SIM_GAMEMASTER_METRICS_URL", value_parser = metrics_url)]
    pub gamemaster_metrics_url: Option<MetricsUrl>,

    /// PostgreSQL URL of the Lobby's database. When given, the fleet's games are created
    /// there (`running`) as they are registered, and after the drain every Lobby game,
    /// its runtime snapshot and every player's career are checked; `lobby run` must be
    /// consuming the lobby events stream on the same Redis. Without it the Lobby is left
    /// out of the run and of the verdict.
    #[arg(
        long,
        env = "GALAXY_SIM_LOBBY_POSTGRES_URL",
        hide_env_values = true,
        value_parser = url(&["postgres", "postgresql"])
    )]
    pub lobby_postgres_url: Option<String>,

    /// The Lobby's /metrics URL, e.g. http://127.0.0.1:8081/metrics; when given, the
    /// summary adds what the Lobby counted (entries by outcome, career evaluations).
    #[arg(long, env = "GALAXY_SIM_LOBBY_METRICS_URL", value_parser = metrics_url)]
    pub lobby_metrics_url: Option<MetricsUrl>,

    /// Games finished at the end of the run, on top of those the scripts finish: when
    /// publishing stops, the first this-many games not finished yet (in fleet order) are
    /// finished through the same flow, so even a short run ends games and updates careers.
    #[arg(long, env = "GALAXY_SIM_FINISH_GAMES", default_value_t = 0)]
    pub finish_games: u32,

    /// Longest wait for the Game Master to consume a game's events (before a direct flow)
    /// or the whole stream (at the end), and for the Lobby to consume the lobby events
    /// stream.
    #[arg(long, env = "GALAXY_SIM_DRAIN_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub drain_timeout: Duration,

    /// Most PostgreSQL connections the simulator opens.
    #[arg(
        long,
        env = "GALAXY_SIM_POSTGRES_POOL_SIZE",
        default_value_t = 16,
        value_parser = clap::value_parser!(u32).range(1..=256)
    )]
    pub postgres_pool_size: u32,

    /// Self-check of the oracle: after the drain, change the status of this many games
    /// behind the model's back; the run must then report them and exit 1.
    #[arg(long, env = "GALAXY_SIM_TAMPER", default_value_t = 0)]
    pub tamper: u32,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let mut all = vec!["galaxy-sim"];
        all.extend_from_slice(args);
        Settings::command()
            .try_get_matches_from(all)
            .and_then(|m| Settings::from_arg_matches(&m))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_match_the_documentation() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.games, 200);
        assert_eq!(s.duration, Duration::from_secs(20));
        assert_eq!(s.rate, 2000);
        assert_eq!(s.health_events_stream, "runtime:health_events");
        assert_eq!(s.seed, None);
        assert_eq!(s.tamper, 0);
        assert_eq!(s.finish_games, 0);
        assert_eq!(s.lobby_events_stream, "gm:lobby_events");
        assert!(s.lobby_postgres_url.is_none() && s.lobby_metrics_url.is_none());
        Settings::command().debug_assert();
    }

    #[test]
    fn bad_values_are_refused() {
        for args in [
            &["--games", "0"][..],
            &["--duration", "soon"],
            &["--duration", "0s"],
            &["--rate", "0"],
            &["--postgres-url", "localhost"],
            &["--redis-url", "http://x"],
            &["--health-events-stream", "has space"],
            &["--gamemaster-metrics-url", "https://x:1/metrics"],
            &["--gamemaster-metrics-url", "http://nohost"],
            &["--lobby-metrics-url", "127.0.0.1:8081"],
            &["--lobby-postgres-url", "redis://x"],
            &["--finish-games", "-1"],
            &["--game-prefix", "a b"],
            &["--seed", "-1"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn metrics_urls_default_their_path() {
        let s = parse(&["--gamemaster-metrics-url", "http://127.0.0.1:8080"]).unwrap();
        let url = s.gamemaster_metrics_url.unwrap();
        assert_eq!(url.authority, "127.0.0.1:8080");
        assert_eq!(url.path, "/metrics");
        assert_eq!(url.to_string(), "http://127.0.0.1:8080/metrics");
    }
}
