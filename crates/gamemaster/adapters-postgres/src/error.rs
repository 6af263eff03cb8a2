//! How the store's failures become `ports::Error`: pg-kit's one mapping, used by every
//! statement, and the error for a stored row that breaks the domain's rules.

use pg_kit::PgError;
use ports::Error;

/// A stored row that breaks the domain's rules: refused, like the values of a write, so
/// only the entries that touch that row are skipped.
pub(crate) fn corrupt(game_id: &str, what: &str) -> Error {
    Error::Refused(format!("runtime record of game '{game_id}' is unreadable: {what}").into())
}

/// A PostgreSQL failure as [`Error`], by the workspace's one mapping
/// ([`PgError::into_port`]).
pub(crate) fn store_error(e: impl Into<PgError>) -> Error {
    e.into().into_port()
}
