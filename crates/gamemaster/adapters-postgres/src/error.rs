//! How the store's failures become `ports::Error`: one mapping, used by every statement.

use pg_kit::PgError;
use ports::Error;

/// A stored row that breaks the domain's rules: refused, like the values of a write, so
/// only the entries that touch that row are skipped.
pub(crate) fn corrupt(game_id: &str, what: &str) -> Error {
    Error::Refused(format!("runtime record of game '{game_id}' is unreadable: {what}").into())
}

/// The one mapping of a PostgreSQL failure onto [`Error`], by its [`pg_kit::ErrorKind`]:
/// transient ones (unreachable server, timeouts, shutdown, deadlocks) become
/// [`Error::Unavailable`], refused values [`Error::Refused`], the rest [`Error::Backend`];
/// the [`PgError`] is kept as the source.
pub(crate) fn store_error(e: impl Into<PgError>) -> Error {
    let e = e.into();
    match e.kind() {
        pg_kit::ErrorKind::Transient => Error::Unavailable(Box::new(e)),
        pg_kit::ErrorKind::Data => Error::Refused(Box::new(e)),
        pg_kit::ErrorKind::Environment => Error::Backend(Box::new(e)),
    }
}
