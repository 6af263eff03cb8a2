//! Settings shared by every binary, each a flag and an environment variable named after
//! the service (`GAMEMASTER_REDIS_URL`, `LOBBY_REDIS_URL`, …), with its default shown by
//! `--help`. The parsing and validation of every common setting lives here, once.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Arg, ArgMatches, Command, builder::ValueParser, error::ErrorKind};

use crate::telemetry::LogFormat;

/// Per-service defaults for the common settings.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Environment prefix, e.g. `GAMEMASTER`.
    pub env_prefix: &'static str,
    /// Default PostgreSQL URL.
    pub postgres_url: &'static str,
    /// Default ops HTTP address.
    pub http_addr: &'static str,
    /// Default entries per batch (a service whose batches are cheap to apply together
    /// gains from larger ones; see `docs/decisions/0013-throughput.md`).
    pub batch_size: &'static str,
    /// Default wait of one stream read for new entries (also how soon an idle consumer
    /// looks at its handler's changes, see `BatchHandler::before_read`).
    pub read_block: &'static str,
}

/// Values of the common settings.
#[derive(Debug, Clone)]
pub struct CommonSettings {
    /// Redis URL.
    pub redis_url: String,
    /// PostgreSQL URL.
    pub postgres_url: String,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub http_addr: SocketAddr,
    /// Log line format.
    pub log_format: LogFormat,
    /// How long a stop may take before the process gives up draining.
    pub shutdown_timeout: Duration,
    /// Entries per stream read.
    pub batch_size: usize,
    /// How long one stream read may block.
    pub read_block: Duration,
    /// Most PostgreSQL connections in the pool.
    pub postgres_pool_size: usize,
    /// Longest a single SQL statement may run.
    pub statement_timeout: Duration,
    /// How long a refusal the worker cannot pin on an entry holds the stream before that
    /// entry is skipped (decision 0016).
    pub refusal_hold: Duration,
    /// About how many dead letters each consumer's dead-letter stream keeps.
    pub dead_letter_max_len: u64,
}

fn env(prefix: &str, suffix: &str) -> String {
    format!("{prefix}_{suffix}")
}

fn duration_parser() -> ValueParser {
    ValueParser::new(|s: &str| {
        humantime::parse_duration(s)
            .map_err(|e| format!("{e} (write a duration like 500ms, 10s or 1m)"))
    })
}

fn url_parser(schemes: &'static [&'static str]) -> ValueParser {
    ValueParser::new(move |s: &str| {
        let scheme = s.split_once("://").map(|(scheme, _)| scheme);
        match scheme {
            Some(scheme) if schemes.contains(&scheme) => Ok(s.to_owned()),
            _ => Err(format!(
                "expected a URL starting with {}://",
                schemes.join(":// or ")
            )),
        }
    })
}

/// A stream key: non-empty, at most 256 bytes, no whitespace or control characters.
///
/// # Errors
/// A message saying what is wrong with the name.
pub fn validate_stream_name(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("a stream name cannot be empty".into());
    }
    if s.len() > 256 {
        return Err("a stream name is at most 256 bytes".into());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a stream name cannot contain spaces or control characters".into());
    }
    Ok(s.to_owned())
}

/// `--json`: an operator command prints JSON for machines instead of a table.
#[must_use]
pub fn json_flag() -> Arg {
    Arg::new("json")
        .long("json")
        .action(clap::ArgAction::SetTrue)
        .help("Print JSON instead of a table")
}

/// The instance name argument (`--instance-id` / `<PREFIX>_INSTANCE_ID`): how this process
/// is named where instances meet (shard claims, logs); [`instance_id`] reads it.
#[must_use]
pub fn instance_id_arg(prefix: &str) -> Arg {
    Arg::new("instance_id")
        .long("instance-id")
        .env(env(prefix, "INSTANCE_ID"))
        .value_parser(ValueParser::new(|s: &str| {
            let ok = !s.trim().is_empty() && s.len() <= 200 && !s.chars().any(char::is_control);
            ok.then(|| s.to_owned())
                .ok_or_else(|| "an instance id is 1 to 200 bytes of text, not blank".to_owned())
        }))
        .help("Names this instance among others (default: host name and process id)")
}

/// The instance name given by [`instance_id_arg`], else `<host name>-<process id>`.
#[must_use]
pub fn instance_id(m: &ArgMatches) -> String {
    if let Some(id) = m.get_one::<String>("instance_id") {
        return id.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}-{}", std::process::id())
}

impl CommonSettings {
    /// The common arguments for a service's `run` command.
    #[must_use]
    pub fn args(d: &Defaults) -> Vec<Arg> {
        let p = d.env_prefix;
        vec![
            Arg::new("redis_url")
                .long("redis-url")
                .env(env(p, "REDIS_URL"))
                .default_value("redis://127.0.0.1:6379")
                .value_parser(url_parser(&["redis", "rediss", "redis-cluster"]))
                .help("Redis server URL"),
            Arg::new("postgres_url")
                .long("postgres-url")
                .env(env(p, "POSTGRES_URL"))
                .default_value(d.postgres_url)
                .value_parser(url_parser(&["postgres", "postgresql"]))
                .hide_env_values(true)
                .help("PostgreSQL URL (the service's tables live in this database's default schema)"),
            Arg::new("http_addr")
                .long("http-addr")
                .env(env(p, "HTTP_ADDR"))
                .default_value(d.http_addr)
                .value_parser(clap::value_parser!(SocketAddr))
                .help("Address of the ops HTTP server: /healthz, /readyz, /metrics"),
            Arg::new("log_format")
                .long("log-format")
                .env(env(p, "LOG_FORMAT"))
                .default_value("text")
                .value_parser(clap::value_parser!(LogFormat))
                .help("Log line format (the level filter comes from RUST_LOG, default info)"),
            Arg::new("shutdown_timeout")
                .long("shutdown-timeout")
                .env(env(p, "SHUTDOWN_TIMEOUT"))
                .default_value("10s")
                .value_parser(duration_parser())
                .help("Longest a stop (SIGTERM, Ctrl-C) may take to drain before the process exits anyway"),
            Arg::new("batch_size")
                .long("batch-size")
                .env(env(p, "BATCH_SIZE"))
                .default_value(d.batch_size)
                .value_parser(clap::value_parser!(u32).range(1..=50_000))
                .help("Stream entries read and handled per batch"),
            Arg::new("read_block")
                .long("read-block")
                .env(env(p, "READ_BLOCK"))
                .default_value(d.read_block)
                .value_parser(duration_parser())
                .help("How long one stream read waits for new entries (bounds how long a stop waits for a read)"),
            Arg::new("postgres_pool_size")
                .long("postgres-pool-size")
                .env(env(p, "POSTGRES_POOL_SIZE"))
                .default_value("8")
                .value_parser(clap::value_parser!(u32).range(1..=256))
                .help("Most PostgreSQL connections the service opens"),
            Arg::new("statement_timeout")
                .long("statement-timeout")
                .env(env(p, "POSTGRES_STATEMENT_TIMEOUT"))
                .default_value("10s")
                .value_parser(duration_parser())
                .help("Longest one SQL statement may run before it is cancelled and retried"),
            Arg::new("refusal_hold")
                .long("refusal-hold")
                .env(env(p, "REFUSAL_HOLD"))
                .default_value("30s")
                .value_parser(duration_parser())
                .help("How long the database may refuse an entry's work, for a reason not in the entry's own values, before that entry is skipped (readiness fails meanwhile)"),
            Arg::new("dead_letter_max_len")
                .long("dead-letter-max-len")
                .env(env(p, "DEAD_LETTER_MAX_LEN"))
                .default_value("10000")
                .value_parser(clap::value_parser!(u32).range(1..=10_000_000))
                .help("About how many skipped entries each consumer keeps in its dead-letter stream (<service>:dead_letters:<label>); older ones are trimmed"),
        ]
    }

    /// Reads the values parsed from [`Self::args`].
    #[must_use]
    pub fn from_matches(m: &ArgMatches) -> Self {
        let text = |id: &str| m.get_one::<String>(id).cloned().unwrap_or_default();
        let duration = |id: &str, fallback: u64| {
            m.get_one::<Duration>(id)
                .copied()
                .unwrap_or(Duration::from_secs(fallback))
        };
        let number = |id: &str, fallback: u32| {
            usize::try_from(m.get_one::<u32>(id).copied().unwrap_or(fallback)).unwrap_or(1)
        };
        Self {
            redis_url: text("redis_url"),
            postgres_url: text("postgres_url"),
            http_addr: m
                .get_one::<SocketAddr>("http_addr")
                .copied()
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            log_format: m
                .get_one::<LogFormat>("log_format")
                .copied()
                .unwrap_or(LogFormat::Text),
            shutdown_timeout: duration("shutdown_timeout", 10),
            batch_size: number("batch_size", 1000),
            read_block: duration("read_block", 2),
            postgres_pool_size: number("postgres_pool_size", 8),
            statement_timeout: duration("statement_timeout", 10),
            refusal_hold: duration("refusal_hold", 30),
            dead_letter_max_len: u64::try_from(number("dead_letter_max_len", 10_000))
                .unwrap_or(10_000),
        }
    }
}

/// A stream-name argument (`--<long>` / `<PREFIX>_<env_suffix>`), validated by
/// [`validate_stream_name`].
#[must_use]
pub fn stream_arg(
    prefix: &str,
    id: &'static str,
    long: &'static str,
    env_suffix: &str,
    default: &'static str,
    help: &'static str,
) -> Arg {
    Arg::new(id)
        .long(long)
        .env(env(prefix, env_suffix))
        .default_value(default)
        .value_parser(ValueParser::new(validate_stream_name))
        .help(help)
}

/// A duration argument (`--<long>` / `<PREFIX>_<env_suffix>`), written like `500ms`,
/// `10s` or `1m`.
#[must_use]
pub fn duration_arg(
    prefix: &str,
    id: &'static str,
    long: &'static str,
    env_suffix: &str,
    default: &'static str,
    help: &'static str,
) -> Arg {
    Arg::new(id)
        .long(long)
        .env(env(prefix, env_suffix))
        .default_value(default)
        .value_parser(duration_parser())
        .help(help)
}

/// The `migrate` subcommand: applies the schema of `title` (the service's name for
/// people, e.g. "Game Master") to the database `<PREFIX>_POSTGRES_URL` names.
#[must_use]
pub fn migrate_command(title: &str, d: &Defaults) -> Command {
    Command::new("migrate")
        .about(format!(
            "Apply the {title} schema to the database {}_POSTGRES_URL names (safe to run twice, or from two places at once)",
            d.env_prefix
        ))
        .arg(postgres_url_arg(d))
}

/// The `--postgres-url` a subcommand was given.
#[must_use]
pub fn postgres_url(m: &ArgMatches) -> String {
    m.get_one::<String>("postgres_url")
        .cloned()
        .unwrap_or_default()
}

/// A PostgreSQL URL argument alone (for `migrate`).
#[must_use]
pub fn postgres_url_arg(d: &Defaults) -> Arg {
    CommonSettings::args(d)
        .into_iter()
        .find(|a| a.get_id() == "postgres_url")
        .unwrap_or_else(|| Arg::new("postgres_url"))
}

/// A Redis URL argument alone (for operator commands).
#[must_use]
pub fn redis_url_arg(d: &Defaults) -> Arg {
    CommonSettings::args(d)
        .into_iter()
        .find(|a| a.get_id() == "redis_url")
        .unwrap_or_else(|| Arg::new("redis_url"))
}

/// Parses the process arguments. `--help` and `--version` print and exit 0 (returned as
/// `Err(ExitCode::SUCCESS)`); a bad setting prints one line on stderr and gives exit code 2.
///
/// # Errors
/// The exit code to return from `main` when the service must not run.
pub fn parse(command: Command) -> Result<ArgMatches, ExitCode> {
    let name = command.get_name().to_owned();
    command
        .try_get_matches()
        .map_err(|e| report_clap_error(&name, &e))
}

/// Same as [`parse`] over an explicit argument list (tests).
///
/// # Errors
/// As [`parse`].
pub fn parse_from<I, T>(command: Command, args: I) -> Result<ArgMatches, ExitCode>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let name = command.get_name().to_owned();
    command
        .try_get_matches_from(args)
        .map_err(|e| report_clap_error(&name, &e))
}

fn report_clap_error(name: &str, e: &clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(crate::StartupError::EXIT_CODE)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            let rendered = e.render().to_string();
            let line = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            eprintln!("{name}: {line} (see {name} --help)");
            ExitCode::from(crate::StartupError::EXIT_CODE)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const D: Defaults = Defaults {
        env_prefix: "KITTEST",
        postgres_url: "postgres://postgres@127.0.0.1:5432/kit",
        http_addr: "127.0.0.1:8080",
        batch_size: "1000",
        read_block: "2s",
    };

    fn cmd() -> Command {
        Command::new("kit")
            .args(CommonSettings::args(&D))
            .arg(stream_arg(
                "KITTEST", "stream", "stream", "STREAM", "a:b", "s",
            ))
    }

    #[test]
    fn defaults_and_flags() {
        let m = parse_from(cmd(), ["kit"]).unwrap();
        let s = CommonSettings::from_matches(&m);
        assert_eq!(s.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(s.batch_size, 1000);
        assert_eq!(s.refusal_hold, Duration::from_secs(30));
        let m = parse_from(
            cmd(),
            [
                "kit",
                "--batch-size",
                "50",
                "--read-block",
                "250ms",
                "--log-format",
                "json",
                "--refusal-hold",
                "2m",
            ],
        )
        .unwrap();
        let s = CommonSettings::from_matches(&m);
        assert_eq!(s.batch_size, 50);
        assert_eq!(s.read_block, Duration::from_millis(250));
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.refusal_hold, Duration::from_secs(120));
    }

    #[test]
    fn bad_values_are_rejected() {
        for args in [
            vec!["kit", "--redis-url", "http://x"],
            vec!["kit", "--postgres-url", "localhost"],
            vec!["kit", "--http-addr", "nowhere"],
            vec!["kit", "--batch-size", "0"],
            vec!["kit", "--shutdown-timeout", "soon"],
            vec!["kit", "--stream", "has space"],
            vec!["kit", "--stream", ""],
        ] {
            assert!(parse_from(cmd(), args.clone()).is_err(), "{args:?}");
        }
        let cluster = "redis-cluster://127.0.0.1:7000,127.0.0.1:7001";
        let m = parse_from(cmd(), ["kit", "--redis-url", cluster]).unwrap();
        assert_eq!(CommonSettings::from_matches(&m).redis_url, cluster);
    }

    #[test]
    fn stream_names() {
        assert!(validate_stream_name("runtime:health_events").is_ok());
        assert!(validate_stream_name("a\tb").is_err());
        assert!(validate_stream_name(&"x".repeat(257)).is_err());
    }
}
