//! What a PostgreSQL failure means for the caller: retry it, blame the data, or wait for
//! an operator (decision 0016).
//!
//! Every failure falls into one [`ErrorKind`]:
//!
//! - [`ErrorKind::Transient`]: the server could not be reached or went away, a timeout
//!   fired (the pool's or the server's `statement_timeout`), the server is shutting down,
//!   starting, read-only after a failover, or short of resources, or it aborted the
//!   transaction to break a serialization conflict or a deadlock. The same statement may
//!   succeed when retried.
//! - [`ErrorKind::Data`]: the server refused the values the statement carried or the rows
//!   it touched (SQLSTATE classes 21, 22, 23, 27, 44, 54, a trigger or function raising):
//!   the same statement fails the same way every time, but a statement without those
//!   values may succeed. A consumer isolates the entries responsible and skips them.
//! - [`ErrorKind::Environment`]: the database is not what the service needs (a missing
//!   table or function, a revoked privilege, a wrong password or database, corruption:
//!   classes 0A, 28, 3D, 3F, 42, XX…). Every statement fails until an operator acts, and
//!   no entry is to blame, so nothing is skipped: the consumer holds and reports.
//!
//! The kind is read off the SQLSTATE through one table, [`SQLSTATE_KINDS`], where a full
//! five-character code overrides its two-character class.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use deadpool_postgres::{PoolError, TimeoutType};
use error_kit::{ServerFailure, error_chain};
use tokio_postgres::error::SqlState;

/// What a failure says about retrying it (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Retrying the same statement may succeed on its own.
    Transient,
    /// The statement's values, or the rows it touches, are refused; others may pass.
    Data,
    /// The database needs an operator; every statement will fail alike.
    Environment,
}

/// SQLSTATE classes (two characters) and single codes (five), each with its kind. A code
/// listed in full wins over its class; a class not listed is [`ErrorKind::Data`] (custom
/// codes such as a trigger's `RAISE … USING ERRCODE` are about the row being written).
pub const SQLSTATE_KINDS: &[(&str, ErrorKind)] = &[
    ("03", ErrorKind::Environment),  // SQL statement not yet complete
    ("08", ErrorKind::Transient),    // connection exception
    ("09", ErrorKind::Data),         // triggered action exception
    ("0A", ErrorKind::Environment),  // feature not supported
    ("0B", ErrorKind::Environment),  // invalid transaction initiation
    ("0F", ErrorKind::Environment),  // locator exception
    ("0L", ErrorKind::Environment),  // invalid grantor
    ("0P", ErrorKind::Environment),  // invalid role specification
    ("0Z", ErrorKind::Environment),  // diagnostics exception
    ("20", ErrorKind::Data),         // case not found (in a function, for these values)
    ("21", ErrorKind::Data),         // cardinality violation (e.g. one upsert, two rows)
    ("22", ErrorKind::Data),         // data exception: NUL, range, encoding, format…
    ("23", ErrorKind::Data),         // integrity constraint violation
    ("24", ErrorKind::Environment),  // invalid cursor state
    ("25", ErrorKind::Environment),  // invalid transaction state…
    ("25006", ErrorKind::Transient), // …read-only transaction: a standby, until failover ends
    ("25P03", ErrorKind::Transient), // …idle-in-transaction timeout
    ("26", ErrorKind::Environment),  // invalid SQL statement name
    ("27", ErrorKind::Data),         // triggered data change violation
    ("28", ErrorKind::Environment),  // invalid authorization specification
    ("2B", ErrorKind::Environment),  // dependent privilege descriptors still exist
    ("2D", ErrorKind::Environment),  // invalid transaction termination
    ("2F", ErrorKind::Data),         // SQL routine exception
    ("34", ErrorKind::Environment),  // invalid cursor name
    ("38", ErrorKind::Data),         // external routine exception
    ("39", ErrorKind::Data),         // external routine invocation exception
    ("3B", ErrorKind::Environment),  // savepoint exception
    ("3D", ErrorKind::Environment),  // invalid catalog name: no such database
    ("3F", ErrorKind::Environment),  // invalid schema name
    ("40", ErrorKind::Transient),    // transaction rollback: serialization, deadlock…
    ("40002", ErrorKind::Data),      // …except an integrity violation found at commit
    ("42", ErrorKind::Environment),  // syntax error or access rule violation
    ("44", ErrorKind::Data),         // WITH CHECK OPTION violation
    ("53", ErrorKind::Transient),    // insufficient resources: disk, memory, connections
    ("54", ErrorKind::Data),         // program limit exceeded: an index row too large…
    ("55", ErrorKind::Environment),  // object not in prerequisite state…
    ("55006", ErrorKind::Transient), // …object in use
    ("55P03", ErrorKind::Transient), // …lock not available: lock_timeout fired
    ("57", ErrorKind::Transient),    // operator intervention: cancel, shutdown, start-up
    ("58", ErrorKind::Transient),    // system error: I/O
    ("72", ErrorKind::Transient),    // snapshot failure
    ("F0", ErrorKind::Environment),  // configuration file error
    ("HV", ErrorKind::Environment),  // foreign data wrapper error
    ("P0", ErrorKind::Data),         // PL/pgSQL raise, no data, too many rows, assert
    ("XX", ErrorKind::Environment),  // internal error, data or index corrupted
];

/// The kind of a failure the server answered with this SQLSTATE.
#[must_use]
pub fn sqlstate_kind(code: &SqlState) -> ErrorKind {
    let code = code.code();
    let class = code.get(..2).unwrap_or(code);
    let find = |key: &str| {
        SQLSTATE_KINDS
            .iter()
            .find(|(k, _)| *k == key)
            .map(|&(_, kind)| kind)
    };
    find(code)
        .or_else(|| find(class))
        .unwrap_or(ErrorKind::Data)
}

/// Whether a failure with this SQLSTATE may succeed when retried.
#[must_use]
pub fn is_transient_sqlstate(code: &SqlState) -> bool {
    sqlstate_kind(code) == ErrorKind::Transient
}

/// The kind of a driver error: the server's SQLSTATE when it answered; transient when it
/// never did (connection refused, reset or closed, any I/O error, the connect timeout);
/// data when a value could not be sent in the statement's parameter type; otherwise
/// (a row that does not decode into the expected type) the environment.
#[must_use]
pub fn error_kind(error: &tokio_postgres::Error) -> ErrorKind {
    if let Some(code) = error.code() {
        return sqlstate_kind(code);
    }
    if error.is_closed() {
        return ErrorKind::Transient;
    }
    // Connect and I/O failures carry the io::Error as their source.
    let mut source = error.source();
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return ErrorKind::Transient;
        }
        source = cause.source();
    }
    // The driver gives no typed access to its error kinds; a parameter it could not
    // serialise (a value out of the column type's range) is told by its fixed message.
    if error.to_string().starts_with("error serializing parameter") {
        return ErrorKind::Data;
    }
    ErrorKind::Environment
}

/// Whether a driver error may go away on a retry (see [`error_kind`]).
#[must_use]
pub fn is_transient(error: &tokio_postgres::Error) -> bool {
    error_kind(error) == ErrorKind::Transient
}

/// Whether a failure to get a connection from the pool may go away on a retry: every
/// pool timeout is transient, a failed connect is classified like [`is_transient`], a
/// closed pool (the service is shutting down) or a misconfigured one is permanent.
#[must_use]
pub fn is_pool_error_transient(error: &PoolError) -> bool {
    pool_error_kind(error) == ErrorKind::Transient
}

/// The kind of a pool failure; never [`ErrorKind::Data`]: no entry's values are involved
/// in getting a connection.
fn pool_error_kind(error: &PoolError) -> ErrorKind {
    let transient_or_environment = |e: &tokio_postgres::Error| match error_kind(e) {
        ErrorKind::Transient => ErrorKind::Transient,
        ErrorKind::Data | ErrorKind::Environment => ErrorKind::Environment,
    };
    match error {
        PoolError::Timeout(_) => ErrorKind::Transient,
        PoolError::Backend(e) => transient_or_environment(e),
        PoolError::PostCreateHook(deadpool_postgres::HookError::Backend(e)) => {
            transient_or_environment(e)
        }
        PoolError::PostCreateHook(_) | PoolError::Closed | PoolError::NoRuntimeSpecified => {
            ErrorKind::Environment
        }
    }
}

/// A failed PostgreSQL operation, for adapters to turn into their own typed errors with
/// [`PgError::kind`].
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
    /// What the failure means for the caller (see the module documentation).
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Query(e) => error_kind(e),
            Self::Pool(e) => pool_error_kind(e),
            Self::TimedOut { .. } => ErrorKind::Transient,
        }
    }

    /// Whether retrying may succeed on its own.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    /// The one mapping of a PostgreSQL failure onto a port's error, by its [`kind`]:
    /// transient ones (unreachable server, timeouts, shutdown, deadlocks) become
    /// [`ServerFailure::unavailable`], refused values [`ServerFailure::refused`], the rest
    /// [`ServerFailure::backend`]; the failure is kept as the source.
    ///
    /// [`kind`]: Self::kind
    #[must_use]
    pub fn into_port<E: ServerFailure>(self) -> E {
        match self.kind() {
            ErrorKind::Transient => E::unavailable(Box::new(self)),
            ErrorKind::Data => E::refused(Box::new(self)),
            ErrorKind::Environment => E::backend(Box::new(self)),
        }
    }

    /// The server's `DETAIL` line, when it answered with one (a function raising an
    /// error can carry a value there for its caller).
    #[must_use]
    pub fn detail(&self) -> Option<&str> {
        match self {
            Self::Query(e) | Self::Pool(PoolError::Backend(e)) => {
                e.as_db_error().and_then(|db| db.detail())
            }
            Self::Pool(_) | Self::TimedOut { .. } => None,
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
            Self::Query(e) => f.write_str(&error_chain(e)),
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
                write!(f, "cannot open a connection: {}", error_chain(e))
            }
            Self::Pool(PoolError::Closed) => f.write_str("the connection pool is closed"),
            Self::Pool(other) => write!(f, "connection pool: {}", error_chain(other)),
            Self::TimedOut { operation, after } => {
                write!(f, "{operation} did not finish within {after:?}")
            }
        }
    }
}

impl StdError for PgError {}

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
            SqlState::DISK_FULL,
            SqlState::OUT_OF_MEMORY,
            SqlState::READ_ONLY_SQL_TRANSACTION,
            SqlState::IO_ERROR,
        ] {
            assert!(is_transient_sqlstate(&code), "{}", code.code());
        }
    }

    #[test]
    fn values_the_server_refuses_are_data() {
        for code in [
            SqlState::UNIQUE_VIOLATION,
            SqlState::CHECK_VIOLATION,
            SqlState::NOT_NULL_VIOLATION,
            SqlState::FOREIGN_KEY_VIOLATION,
            SqlState::INVALID_TEXT_REPRESENTATION,
            SqlState::CHARACTER_NOT_IN_REPERTOIRE,
            SqlState::UNTRANSLATABLE_CHARACTER,
            SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
            SqlState::DATETIME_FIELD_OVERFLOW,
            SqlState::STRING_DATA_RIGHT_TRUNCATION,
            SqlState::CARDINALITY_VIOLATION,
            SqlState::PROGRAM_LIMIT_EXCEEDED,
            SqlState::RAISE_EXCEPTION,
            SqlState::T_R_INTEGRITY_CONSTRAINT_VIOLATION,
            SqlState::from_code("GM002"),
        ] {
            assert_eq!(sqlstate_kind(&code), ErrorKind::Data, "{}", code.code());
        }
    }

    #[test]
    fn a_database_that_needs_an_operator_is_the_environment() {
        for code in [
            SqlState::UNDEFINED_TABLE,
            SqlState::UNDEFINED_COLUMN,
            SqlState::UNDEFINED_FUNCTION,
            SqlState::INSUFFICIENT_PRIVILEGE,
            SqlState::SYNTAX_ERROR,
            SqlState::INVALID_CATALOG_NAME,
            SqlState::INVALID_SCHEMA_NAME,
            SqlState::INVALID_PASSWORD,
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            SqlState::FEATURE_NOT_SUPPORTED,
            SqlState::IN_FAILED_SQL_TRANSACTION,
            SqlState::DATA_CORRUPTED,
            SqlState::from_code("XX000"),
        ] {
            assert_eq!(
                sqlstate_kind(&code),
                ErrorKind::Environment,
                "{}",
                code.code()
            );
        }
    }

    #[test]
    fn the_table_has_one_row_per_key_and_only_classes_or_codes() {
        let mut keys: Vec<&str> = SQLSTATE_KINDS.iter().map(|(k, _)| *k).collect();
        assert!(
            keys.iter().all(|k| k.len() == 2 || k.len() == 5),
            "{keys:?}"
        );
        // A code is listed only to differ from its class.
        for &(key, kind) in SQLSTATE_KINDS.iter().filter(|(k, _)| k.len() == 5) {
            let class = SQLSTATE_KINDS.iter().find(|(k, _)| *k == &key[..2]);
            assert!(class.is_some_and(|&(_, c)| c != kind), "{key}");
        }
        let n = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), n, "a key is listed twice");
    }

    #[test]
    fn pool_timeouts_are_transient_and_a_closed_pool_is_not() {
        for kind in [TimeoutType::Wait, TimeoutType::Create, TimeoutType::Recycle] {
            let e = PgError::from(PoolError::Timeout(kind));
            assert!(e.is_transient(), "{e}");
            assert!(e.code().is_none());
        }
        assert_eq!(
            PgError::from(PoolError::Closed).kind(),
            ErrorKind::Environment
        );
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
}
