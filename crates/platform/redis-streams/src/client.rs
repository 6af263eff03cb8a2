//! Building fred clients the way every service needs them: a reconnect policy, timeouts
//! and a connection check at start-up.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{ClientLike, EventInterface, KeysInterface, StreamsInterface};
use fred::prelude::{Builder, Config, Options, ReconnectPolicy, ServerConfig, TcpConfig};
use fred::types::config::UnresponsiveConfig;
use stream_consumer::{BoxError, StreamError};

use crate::error::stream_error;
use crate::settings::{RedisSettings, millis_u32};

/// URL schemes fred can serve with the features this workspace builds it with.
const SUPPORTED_SCHEMES: [&str; 3] = ["redis", "redis-cluster", "redis-sentinel"];

/// Why a client could not be created. The messages never contain the URL itself, since it
/// may carry a password; they name the server as `host:port`.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL does not parse or names something we cannot connect to.
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(String),
    /// The server refused the connection, closed it, or rejected the handshake.
    #[error("cannot connect to Redis at {server} (client {name}): {source}")]
    Unreachable {
        /// `host:port` (comma-separated for a cluster or sentinels).
        server: String,
        /// The client's name, as given to [`connect`].
        name: String,
        /// What went wrong.
        #[source]
        source: BoxError,
    },
    /// The connection was not established within [`RedisSettings::connect_timeout`].
    #[error("cannot connect to Redis at {server} (client {name}): no connection after {after:?}")]
    Timeout {
        /// `host:port` (comma-separated for a cluster or sentinels).
        server: String,
        /// The client's name, as given to [`connect`].
        name: String,
        /// How long we waited.
        after: Duration,
    },
}

/// A connected Redis client with a reconnect policy; cheap to clone (clones share one
/// connection).
///
/// fred types stay inside this crate: services hold a `RedisClient` and hand it to the
/// offset store and stream writers. A blocking reader never shares one, see
/// [`crate::RedisStreamReader::connect`].
#[derive(Clone)]
pub struct RedisClient {
    inner: Client,
    name: Arc<str>,
    server: Arc<str>,
    settings: RedisSettings,
}

impl fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisClient")
            .field("name", &self.name)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Connects to the Redis server `url` names and checks the connection before returning.
///
/// The client reconnects forever after a lost connection (fred's builder sets no policy by
/// default, so a dropped connection would otherwise never come back), with exponential
/// backoff between [`RedisSettings::reconnect_min_delay`] and
/// [`RedisSettings::reconnect_max_delay`]. Commands issued while it is disconnected fail at
/// once as [`StreamError::Unavailable`] instead of queueing, so callers own their retries.
/// `name` identifies the client in logs and errors (e.g. `gamemaster-reader`).
///
/// # Errors
/// [`ConnectError::InvalidUrl`] for a URL that does not parse, [`ConnectError::Unreachable`]
/// or [`ConnectError::Timeout`] when the server cannot be reached or refuses the handshake
/// (wrong password, wrong database).
pub async fn connect(
    url: &str,
    settings: RedisSettings,
    name: &str,
) -> Result<RedisClient, ConnectError> {
    let config = parse_url(url)?;
    let server = describe(&config.server);
    let command_timeout = settings.command_timeout.max(Duration::from_millis(10));

    let client = Builder::from_config(config)
        .set_policy(ReconnectPolicy::new_exponential(
            0,
            millis_u32(settings.reconnect_min_delay),
            millis_u32(settings.reconnect_max_delay),
            2,
        ))
        .with_connection_config(|c| {
            c.connection_timeout = settings.connect_timeout;
            c.internal_command_timeout = command_timeout;
            c.tcp = TcpConfig {
                nodelay: Some(true),
                ..TcpConfig::default()
            };
            // Blocking reads are exempt from this check (fred skips blocked connections).
            c.unresponsive = UnresponsiveConfig {
                max_timeout: Some(command_timeout),
                interval: (command_timeout / 4).max(Duration::from_millis(50)),
            };
        })
        .with_performance_config(|p| p.default_command_timeout = command_timeout)
        .build()
        .map_err(|e| ConnectError::InvalidUrl(e.details().to_owned()))?;

    // fred's own connect timeout covers each attempt; this bounds the whole check.
    let limit = settings.connect_timeout + command_timeout;
    match tokio::time::timeout(limit, client.init()).await {
        Ok(Ok(_connection_task)) => {}
        Ok(Err(source)) => {
            return Err(ConnectError::Unreachable {
                server,
                name: name.to_owned(),
                source: Box::new(source),
            });
        }
        Err(_) => {
            return Err(ConnectError::Timeout {
                server,
                name: name.to_owned(),
                after: limit,
            });
        }
    }

    log_connection_events(&client, name);
    tracing::info!(redis.client = name, redis.server = %server, "connected to Redis");
    Ok(RedisClient {
        inner: client,
        name: name.into(),
        server: server.into(),
        settings: RedisSettings {
            command_timeout,
            ..settings
        },
    })
}

impl RedisClient {
    /// The name given to [`connect`].
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server as `host:port` (no credentials), for logs.
    #[must_use]
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The settings the client was built with.
    #[must_use]
    pub fn settings(&self) -> RedisSettings {
        self.settings
    }

    /// One `PING` round trip, for readiness checks.
    ///
    /// # Errors
    /// [`StreamError::Unavailable`] when the server cannot be reached (also while the client
    /// is reconnecting), [`StreamError::Protocol`] when it answers with an error.
    pub async fn ping(&self) -> Result<(), StreamError> {
        let _: fred::types::Value = self
            .inner
            .with_options(&self.options(None))
            .ping(None)
            .await
            .map_err(|e| stream_error("PING", &e))?;
        Ok(())
    }

    /// `DEL key …`: removes keys (tools and demos resetting their own state). Returns how
    /// many existed.
    ///
    /// # Errors
    /// [`StreamError::Unavailable`] when the server cannot be reached.
    pub async fn delete(&self, keys: &[String]) -> Result<u64, StreamError> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.inner
            .with_options(&self.options(None))
            .del(keys.to_vec())
            .await
            .map_err(|e| stream_error("DEL", &e))
    }

    /// `XLEN stream`: entries in a stream (0 when it does not exist).
    ///
    /// # Errors
    /// [`StreamError::Unavailable`] when the server cannot be reached,
    /// [`StreamError::Protocol`] when the key is not a stream.
    pub async fn stream_len(&self, stream: &str) -> Result<u64, StreamError> {
        self.inner
            .with_options(&self.options(None))
            .xlen(stream)
            .await
            .map_err(|e| stream_error("XLEN", &e))
    }

    /// Closes the connection and stops reconnecting. Later commands fail as
    /// [`StreamError::Unavailable`]. Best effort: an unreachable server is not an error here.
    pub async fn quit(&self) {
        let limit = self.settings.command_timeout;
        if tokio::time::timeout(limit, self.inner.quit())
            .await
            .is_err()
        {
            tracing::debug!(redis.client = %self.name, "QUIT did not finish in time");
        }
    }

    /// The fred client, for this crate's commands.
    pub(crate) fn fred(&self) -> &Client {
        &self.inner
    }

    /// Per-command options: fail at once when disconnected (the caller retries with its own
    /// backoff) and time out after the command timeout plus `extra` (a read's block).
    pub(crate) fn options(&self, extra: Option<Duration>) -> Options {
        Options {
            fail_fast: true,
            timeout: Some(self.settings.command_timeout + extra.unwrap_or_default()),
            ..Options::default()
        }
    }
}

/// Parses a `redis://[user:password@]host[:port][/db]` URL (also `redis-cluster://`,
/// `redis-sentinel://`), with errors that never echo the URL.
fn parse_url(url: &str) -> Result<Config, ConnectError> {
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(ConnectError::InvalidUrl(
            "expected redis://host[:port][/db]".to_owned(),
        ));
    };
    if !SUPPORTED_SCHEMES.contains(&scheme) {
        let shown: String = scheme.chars().take(32).collect();
        return Err(ConnectError::InvalidUrl(format!(
            "unsupported scheme {shown:?}, expected one of {}",
            SUPPORTED_SCHEMES.join(", ")
        )));
    }
    Config::from_url(&fred_url(url)).map_err(|e| ConnectError::InvalidUrl(e.details().to_owned()))
}

/// A URL as fred reads it. A cluster written as the services take it,
/// `redis-cluster://[user:password@]host:port,host:port…[?query]`, becomes fred's form:
/// the first node in the authority, the others as `node=host:port` query parameters.
/// Every other URL is returned as it is.
#[must_use]
pub fn fred_url(url: &str) -> String {
    let Some(rest) = url.strip_prefix("redis-cluster://") else {
        return url.to_owned();
    };
    let (rest, query) = rest
        .split_once('?')
        .map_or((rest, None), |(r, q)| (r, Some(q)));
    let (auth, hosts) = rest.rsplit_once('@').map_or(("", rest), |(a, h)| (a, h));
    let hosts = hosts.trim_end_matches('/');
    let mut nodes = hosts.split(',').filter(|h| !h.is_empty());
    let Some(first) = nodes.next() else {
        return url.to_owned();
    };
    let mut params: Vec<String> = nodes.map(|n| format!("node={n}")).collect();
    if params.is_empty() {
        return url.to_owned();
    }
    params.extend(query.map(str::to_owned));
    let auth = if auth.is_empty() {
        String::new()
    } else {
        format!("{auth}@")
    };
    format!("redis-cluster://{auth}{first}?{}", params.join("&"))
}

/// `host:port` of every server the config names.
fn describe(server: &ServerConfig) -> String {
    server
        .hosts()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Logs connection errors and reconnections with the client's name, so an operator sees
/// Redis going away and coming back.
fn log_connection_events(client: &Client, name: &str) {
    let who: Arc<str> = name.into();
    let on_error = Arc::clone(&who);
    drop(client.on_error(move |(error, server)| {
        let who = Arc::clone(&on_error);
        async move {
            let server = server.map(|s| s.to_string()).unwrap_or_default();
            tracing::warn!(redis.client = %who, redis.server = %server, error = %error, "Redis connection error");
            Ok(())
        }
    }));
    drop(client.on_reconnect(move |server| {
        let who = Arc::clone(&who);
        async move {
            tracing::info!(redis.client = %who, redis.server = %server, "reconnected to Redis");
            Ok(())
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_of_several_nodes_is_written_as_fred_reads_it() {
        assert_eq!(
            fred_url("redis-cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002"),
            "redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001&node=127.0.0.1:7002"
        );
        assert_eq!(
            fred_url("redis-cluster://u:p@a:1,b:2?x=1"),
            "redis-cluster://u:p@a:1?node=b:2&x=1"
        );
        for same in ["redis-cluster://a:1", "redis://a:1/3", "redis-cluster://"] {
            assert_eq!(fred_url(same), same);
        }
    }

    #[test]
    fn bad_urls_are_named_without_echoing_them() {
        for (url, expect) in [
            ("127.0.0.1:6379", "expected redis://"),
            ("http://user:s3cret@host:1", "unsupported scheme \"http\""),
            ("redis://user:s3cret@host:notaport", "invalid Redis URL"),
            ("redis://user:s3cret@host:1/notadb", "invalid Redis URL"),
        ] {
            let message = match parse_url(url) {
                Err(e) => e.to_string(),
                Ok(_) => String::from("parsed"),
            };
            assert!(message.contains(expect), "{url}: {message}");
            assert!(!message.contains("s3cret"), "{url}: {message}");
        }
    }

    #[test]
    fn good_urls_name_their_server() {
        let Ok(config) = parse_url("redis://:pw@10.1.2.3:6390/2") else {
            panic!("should parse");
        };
        assert_eq!(describe(&config.server), "10.1.2.3:6390");
        assert_eq!(config.database, Some(2));
        let Ok(config) = parse_url("redis://localhost") else {
            panic!("should parse");
        };
        assert_eq!(describe(&config.server), "localhost:6379");
    }
}
