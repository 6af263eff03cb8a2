//! Telling transient PostgreSQL failures (worth a retry) from permanent ones.
//!
//! A failure is transient when the server could not be reached or went away, when a
//! timeout fired (the pool's or the server's `statement_timeout`), when the server is
//! shutting down or starting, or when it aborted the transaction to break a serialization
//! conflict or a deadlock. Everything else (a missing table, a constraint violation, a bad
//! row) is permanent: retrying the same statement would fail the same way.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use deadpool_postgres::{PoolError, TimeoutType};
use tokio_postgres::error::SqlState;

/// SQLSTATE classes whose every code is transient: `08` connection exceptions.
const TRANSIENT_CLASSES: &[&str] = &["08"];

/// Single SQLSTATE codes that are transient.
const TRANSIENT_CODES: &[&str] = &[
    "57014", // query_canceled: statement_timeout fired (or a cancel request)
    "57P01", // admin_shutdown: the server is shutting down
    "57P02", // crash_shutdown
    "57P03", // cannot_connect_now: the server is starting up or in recovery
    "57P05", // idle_session_timeout: the server closed an idle session
    "40001", // serialization_failure
    "40P01", // deadlock_detected
    "53300", // too_many_connections: others will disconnect
    "55P03", // lock_not_available: lock_timeout fired
];

/// Whether a failure with this SQLSTATE may succeed when retried.
#[must_use]
pub fn is_transient_sqlstate(code: &SqlState) -> bool {
    let code = code.code();
    TRANSIENT_CODES.contains(&code) || TRANSIENT_CLASSES.iter().any(|c| code.starts_with(c))
}

/// Whether a driver error may go away on a retry: the server answered with a transient
/// SQLSTATE, or it never answered (connection refused, reset or closed, any I/O error,
/// the connect timeout).
#[must_use]
pub fn is_transient(error: &tokio_postgres::Error) -> bool {
    if let Some(code) = error.code() {
        return is_transient_sqlstate(code);
    }
    if error.is_closed() {
        return true;
    }
    // Connect and I/O failures carry the io::Error as their source.
    let mut source = error.source();
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Whether a failure to get a connection from the pool may go away on a retry: every
/// pool timeout is transient, a failed connect is classified like [`is_transient`], a
/// closed pool (the service is shutting down) or a misconfigured one is permanent.
#[must_use]
pub fn is_pool_error_transient(error: &PoolError) -> bool {
    match error {
        PoolError::Timeout(_) => true,
        PoolError::Backend(e) => is_transient(e),
        PoolError::PostCreateHook(deadpool_postgres::HookError::Backend(e)) => is_transient(e),
        PoolError::PostCreateHook(_) | PoolError::Closed | PoolError::NoRuntimeSpecified => false,
    }
}

/// A failed PostgreSQL operation, for adapters to turn into their own typed errors with
/// [`PgError::is_transient`].
///
/// Its `Display` is one line that already carries the whole cause chain (the driver's own
/// `Display` says only "db error"), so `source()` is deliberately empty: printing the
/// chain again would repeat it.
#[derive(Debug)]
pub enum PgError {
    /// A statement, a transaction command or a connect failed in the driver or on the
    /// server.
    Query(tokio_postgres::Error),
    /// The pool could not hand out a connection.
    Pool(PoolError),
    /// An operation did not finish within the deadline pg-kit put on it.
    TimedOut {
        /// What was being done.
        operation: &'static str,
        /// The deadline.
        after: Duration,
    },
}

impl PgError {
    /// Whether retrying may succeed on its own (see the module documentation).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Query(e) => is_transient(e),
            Self::Pool(e) => is_pool_error_transient(e),
            Self::TimedOut { .. } => true,
        }
    }

    /// The SQLSTATE the server answered with, if it answered.
    #[must_use]
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            Self::Query(e) | Self::Pool(PoolError::Backend(e)) => e.code(),
            Self::Pool(_) | Self::TimedOut { .. } => None,
        }
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Query(e)
    }
}

impl From<PoolError> for PgError {
    fn from(e: PoolError) -> Self {
        Self::Pool(e)
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Query(e) => f.write_str(&describe(e)),
            Self::Pool(PoolError::Timeout(TimeoutType::Wait)) => {
                f.write_str("timed out waiting for a free connection in the pool")
            }
            Self::Pool(PoolError::Timeout(TimeoutType::Create)) => {
                f.write_str("timed out opening a new connection")
            }
            Self::Pool(PoolError::Timeout(TimeoutType::Recycle)) => {
                f.write_str("timed out checking a pooled connection")
            }
            Self::Pool(PoolError::Backend(e)) => {
                write!(f, "cannot open a connection: {}", describe(e))
            }
            Self::Pool(PoolError::Closed) => f.write_str("the connection pool is closed"),
            Self::Pool(other) => write!(f, "connection pool: {}", describe(other)),
            Self::TimedOut { operation, after } => {
                write!(f, "{operation} did not finish within {after:?}")
            }
        }
    }
}

impl StdError for PgError {}

/// The error's `Display` followed by each cause's, joined with ": " on one line. The
/// driver's own message is generic ("db error", "error connecting to server"); the useful
/// part (the server's message, "Connection refused") is in the causes.
#[must_use]
pub fn describe(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !part.is_empty() && !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    // The server's message may carry DETAIL and HINT lines; keep one line.
    text.replace('\n', "; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_named_in_the_contract_are_transient() {
        for code in [
            SqlState::QUERY_CANCELED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::CONNECTION_EXCEPTION,
            SqlState::CONNECTION_FAILURE,
            SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            SqlState::PROTOCOL_VIOLATION,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::LOCK_NOT_AVAILABLE,
        ] {
            assert!(is_transient_sqlstate(&code), "{}", code.code());
        }
    }

    #[test]
    fn errors_that_a_retry_cannot_fix_are_permanent() {
        for code in [
            SqlState::UNIQUE_VIOLATION,
            SqlState::CHECK_VIOLATION,
            SqlState::UNDEFINED_TABLE,
            SqlState::UNDEFINED_COLUMN,
            SqlState::SYNTAX_ERROR,
            SqlState::INVALID_CATALOG_NAME,
            SqlState::INVALID_PASSWORD,
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            SqlState::INVALID_TEXT_REPRESENTATION,
            SqlState::DISK_FULL,
            SqlState::from_code("XX000"),
        ] {
            assert!(!is_transient_sqlstate(&code), "{}", code.code());
        }
    }

    #[test]
    fn pool_timeouts_are_transient_and_a_closed_pool_is_not() {
        for kind in [TimeoutType::Wait, TimeoutType::Create, TimeoutType::Recycle] {
            let e = PgError::from(PoolError::Timeout(kind));
            assert!(e.is_transient(), "{e}");
            assert!(e.code().is_none());
        }
        assert!(!PgError::from(PoolError::Closed).is_transient());
        assert!(!PgError::from(PoolError::NoRuntimeSpecified).is_transient());
        let hook = PoolError::PostCreateHook(deadpool_postgres::HookError::message("nope"));
        assert!(!is_pool_error_transient(&hook));
    }

    #[test]
    fn a_deadline_pg_kit_imposes_is_transient_and_says_what_timed_out() {
        let e = PgError::TimedOut {
            operation: "readiness ping",
            after: Duration::from_millis(250),
        };
        assert!(e.is_transient());
        assert_eq!(e.to_string(), "readiness ping did not finish within 250ms");
    }

    #[test]
    fn describe_flattens_the_cause_chain_onto_one_line() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("error connecting to server")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused\nsecond line",
        ));
        assert_eq!(
            describe(&e),
            "error connecting to server: Connection refused; second line"
        );
    }
}
