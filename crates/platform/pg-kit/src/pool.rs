//! Building a connection pool from a URL, with every timeout set, and checking at start-up
//! that the server is really there.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::config::Host;

use crate::error::PgError;
use error_kit::error_chain;

/// Pool and connection settings. Every field has a sensible default ([`PgSettings::default`]);
/// services override the few they expose as flags.
///
/// deadpool sets no timeout of its own, so without these a `get()` on an exhausted pool or
/// an unreachable server could wait forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSettings {
    /// Most connections the pool opens (default 8).
    pub max_connections: usize,
    /// How long `get()` waits for a free connection before failing (default 5 s).
    pub wait_timeout: Duration,
    /// How long opening one new connection may take, in the pool (default 5 s).
    pub create_timeout: Duration,
    /// How long checking a returned connection may take (default 5 s).
    pub recycle_timeout: Duration,
    /// TCP connect timeout in the driver (default 5 s).
    pub connect_timeout: Duration,
    /// The server-side `statement_timeout` set on every connection (default 10 s); a
    /// statement that runs longer is cancelled with SQLSTATE 57014 (transient).
    pub statement_timeout: Duration,
    /// The server-side `idle_in_transaction_session_timeout` set on every connection
    /// (default 5 s): a session left inside a transaction that long (its process stopped
    /// or stalled between two statements) is ended by the server, so the row locks it
    /// holds do not keep another instance waiting for as long as the stall lasts.
    pub idle_in_transaction_timeout: Duration,
    /// Idle time before TCP keepalive probes start (default 30 s), so a silently dead peer
    /// is noticed.
    pub keepalive_idle: Duration,
    /// How long sent data may stay unacknowledged before the connection is dropped
    /// (`TCP_USER_TIMEOUT`, default 30 s): a query to a vanished host fails instead of
    /// hanging.
    pub tcp_user_timeout: Duration,
    /// `application_name` reported to the server (visible in `pg_stat_activity`), unless
    /// the URL sets one.
    pub application_name: Option<String>,
}

impl Default for PgSettings {
    fn default() -> Self {
        Self {
            max_connections: 8,
            wait_timeout: Duration::from_secs(5),
            create_timeout: Duration::from_secs(5),
            recycle_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            idle_in_transaction_timeout: Duration::from_secs(5),
            keepalive_idle: Duration::from_secs(30),
            tcp_user_timeout: Duration::from_secs(30),
            application_name: None,
        }
    }
}

impl PgSettings {
    /// Sets [`PgSettings::max_connections`].
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Sets [`PgSettings::wait_timeout`].
    #[must_use]
    pub fn wait_timeout(mut self, d: Duration) -> Self {
        self.wait_timeout = d;
        self
    }

    /// Sets [`PgSettings::create_timeout`] and [`PgSettings::connect_timeout`] together.
    #[must_use]
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self.create_timeout = d;
        self
    }

    /// Sets [`PgSettings::idle_in_transaction_timeout`].
    #[must_use]
    pub fn idle_in_transaction_timeout(mut self, d: Duration) -> Self {
        self.idle_in_transaction_timeout = d;
        self
    }

    /// Sets [`PgSettings::statement_timeout`].
    #[must_use]
    pub fn statement_timeout(mut self, d: Duration) -> Self {
        self.statement_timeout = d;
        self
    }

    /// Sets [`PgSettings::application_name`].
    #[must_use]
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }
}

/// Where a URL points, for error messages: user, hosts, ports and database, never the
/// password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTarget {
    /// The user name.
    pub user: String,
    /// `host:port` of each host the URL lists.
    pub addresses: Vec<String>,
    /// The database name (the server's default, the user name, when the URL has none).
    pub database: String,
}

impl ServerTarget {
    fn of(config: &tokio_postgres::Config) -> Self {
        let user = config.get_user().unwrap_or_default().to_owned();
        let ports = config.get_ports();
        let addresses = config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| {
                // One port for every host, one per host, or the default.
                let port = ports
                    .get(i)
                    .or_else(|| ports.first())
                    .copied()
                    .unwrap_or(5432);
                match host {
                    Host::Tcp(name) => format!("{name}:{port}"),
                    Host::Unix(path) => format!("{}:{port}", path.display()),
                }
            })
            .collect();
        let database = config
            .get_dbname()
            .map_or_else(|| user.clone(), str::to_owned);
        Self {
            user,
            addresses,
            database,
        }
    }
}

impl fmt::Display for ServerTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "database \"{}\" on {} as user \"{}\"",
            self.database,
            self.addresses.join(","),
            self.user
        )
    }
}

/// Why no usable pool came out of a URL.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL does not parse, or lacks a host or a user. The message names the problem,
    /// never the URL itself (it may hold a password).
    #[error("invalid PostgreSQL URL: {reason}")]
    InvalidUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// The pool could not be built from otherwise valid settings.
    #[error("invalid PostgreSQL pool settings: {reason}")]
    InvalidSettings {
        /// What is wrong with them.
        reason: String,
    },
    /// The start-up check could not open a connection or run `SELECT 1`.
    #[error("cannot connect to PostgreSQL {target}: {error}")]
    Unreachable {
        /// Where the URL points.
        target: ServerTarget,
        /// What failed.
        error: PgError,
    },
}

impl ConnectError {
    /// Whether waiting and retrying may help (the server is down or starting), as opposed
    /// to a wrong URL, database or password.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { error, .. } => error.is_transient(),
            Self::InvalidUrl { .. } | Self::InvalidSettings { .. } => false,
        }
    }
}

/// Parses `url` and applies `settings` to the driver configuration: connect timeout,
/// keepalives, `TCP_USER_TIMEOUT`, `statement_timeout` and
/// `idle_in_transaction_session_timeout` (through the startup `options`, so
/// it costs no extra round trip; options already in the URL come after it and win) and
/// `application_name`.
///
/// # Errors
/// [`ConnectError::InvalidUrl`] when the URL does not parse or names no host or user.
pub fn pg_config(
    url: &str,
    settings: &PgSettings,
) -> Result<(tokio_postgres::Config, ServerTarget), ConnectError> {
    let mut config =
        tokio_postgres::Config::from_str(url).map_err(|e| ConnectError::InvalidUrl {
            reason: error_chain(&e),
        })?;
    if config.get_hosts().is_empty() {
        return Err(ConnectError::InvalidUrl {
            reason: "it names no host".into(),
        });
    }
    if config.get_user().is_none_or(str::is_empty) {
        return Err(ConnectError::InvalidUrl {
            reason: "it names no user".into(),
        });
    }
    let statement_timeout = format!(
        "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
        settings.statement_timeout.as_millis(),
        settings.idle_in_transaction_timeout.as_millis()
    );
    let options = match config.get_options() {
        Some(existing) if !existing.trim().is_empty() => format!("{statement_timeout} {existing}"),
        _ => statement_timeout,
    };
    config
        .options(options)
        .connect_timeout(settings.connect_timeout)
        .keepalives(true)
        .keepalives_idle(settings.keepalive_idle)
        .tcp_user_timeout(settings.tcp_user_timeout);
    let url_names_application = config.get_application_name().is_some();
    if let Some(name) = settings
        .application_name
        .as_deref()
        .filter(|_| !url_names_application)
    {
        config.application_name(name);
    }
    let target = ServerTarget::of(&config);
    Ok((config, target))
}

/// Builds the pool without touching the server (deadpool connects lazily). Prefer
/// [`connect`], which also checks that the server answers.
///
/// # Errors
/// [`ConnectError::InvalidUrl`] or [`ConnectError::InvalidSettings`].
pub fn build_pool(url: &str, settings: &PgSettings) -> Result<(Pool, ServerTarget), ConnectError> {
    let (config, target) = pg_config(url, settings)?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            // `is_closed()` only: a connection that died quietly fails its next query with
            // a transient error, and the caller retries.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(settings.max_connections.max(1))
        .wait_timeout(Some(settings.wait_timeout))
        .create_timeout(Some(settings.create_timeout))
        .recycle_timeout(Some(settings.recycle_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| ConnectError::InvalidSettings {
            reason: e.to_string(),
        })?;
    Ok((pool, target))
}

/// Builds the pool and checks one connection (`SELECT 1`), so that a wrong URL, a missing
/// database or a server that is down fails here, at start-up, with a message naming the
/// user, host, port and database (never the password).
///
/// # Errors
/// [`ConnectError::InvalidUrl`], [`ConnectError::InvalidSettings`], or
/// [`ConnectError::Unreachable`] when the check fails.
pub async fn connect(url: &str, settings: &PgSettings) -> Result<Pool, ConnectError> {
    let (pool, target) = build_pool(url, settings)?;
    // Bounded by the pool's create timeout and the statement timeout; the outer deadline
    // also covers a server that accepts the TCP connection but never answers.
    let deadline = settings.create_timeout + settings.statement_timeout;
    match crate::ping(&pool, deadline).await {
        Ok(()) => Ok(pool),
        Err(error) => Err(ConnectError::Unreachable { target, error }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_reach_the_driver_config_and_url_options_are_kept() {
        let settings = PgSettings::default()
            .statement_timeout(Duration::from_millis(1500))
            .application_name("gm");
        let url = "postgres://gm:pw@db.example:6543/galaxy?options=-c%20search_path%3Dx";
        let Ok((config, target)) = pg_config(url, &settings) else {
            panic!("valid URL rejected");
        };
        assert_eq!(
            config.get_options(),
            Some(
                "-c statement_timeout=1500 -c idle_in_transaction_session_timeout=5000 \
                 -c search_path=x"
            )
        );
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(5)));
        assert!(config.get_keepalives());
        assert_eq!(config.get_application_name(), Some("gm"));
        assert_eq!(
            target.to_string(),
            "database \"galaxy\" on db.example:6543 as user \"gm\""
        );
    }

    #[test]
    fn the_database_defaults_to_the_user_and_the_port_to_5432() {
        let Ok((_, target)) = pg_config("postgres://alice@h1,h2/", &PgSettings::default()) else {
            panic!("valid URL rejected");
        };
        assert_eq!(target.addresses, ["h1:5432", "h2:5432"]);
        assert_eq!(target.database, "alice");
    }

    #[test]
    fn unparsable_urls_and_urls_without_host_or_user_are_invalid() {
        for url in [
            "postgres://u:secret@host:notaport/db",
            "definitely not a url",
            "postgres:///db?user=u",
            "postgres://localhost/db",
        ] {
            match pg_config(url, &PgSettings::default()) {
                Err(e @ ConnectError::InvalidUrl { .. }) => {
                    let text = e.to_string();
                    assert!(!text.contains("secret"), "{text}");
                    assert!(!e.is_transient());
                }
                other => panic!("{url}: expected InvalidUrl, got {other:?}"),
            }
        }
    }
}
