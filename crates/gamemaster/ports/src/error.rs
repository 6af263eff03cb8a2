//! The error every Game Master port returns.

use domain_runtime::{GameId, RuntimeStatus, TransitionError};

pub use error_kit::BoxError;

/// What went wrong in a port call. [`Error::is_transient`] tells the failures worth
/// retrying (the server is unreachable or slow) from the permanent ones.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No runtime record for the game.
    #[error("no runtime record for game '{0}'")]
    NotFound(GameId),
    /// The compare-and-swap found another status than the one it expected.
    #[error("game '{game_id}' is {actual}, not {expected} as the update expected")]
    Conflict {
        /// The game.
        game_id: GameId,
        /// The status the update expected.
        expected: RuntimeStatus,
        /// The status the record holds.
        actual: RuntimeStatus,
    },
    /// The requested transition is not in the table.
    #[error(transparent)]
    InvalidTransition(#[from] TransitionError),
    /// The input is invalid (it names the rule it breaks).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A runtime record for the game already exists.
    #[error("game '{0}' is already registered")]
    AlreadyExists(GameId),
    /// Transient: the server is unreachable, the connection was lost, the pool or a
    /// statement timed out. Retrying may succeed.
    #[error("unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The database refused the values of this call, or a stored row it touches (a NUL
    /// byte, a number out of range, a violated constraint, an unreadable row): retrying
    /// the same call fails alike, but a call without those values may succeed. A
    /// consumer isolates the entries responsible and skips them.
    #[error("refused by the database: {0}")]
    Refused(#[source] BoxError),
    /// The write belongs to a shard this instance does not hold (any more): another
    /// instance claimed it under a newer epoch. Nothing was written; the instance must
    /// stop applying the shard's entries.
    #[error("shard {shard} is not held by this instance (another claimed it): {detail}")]
    Fenced {
        /// The shard.
        shard: u32,
        /// What the database said.
        detail: String,
    },
    /// The server answered with an error retrying will not fix until an operator acts (a
    /// missing table or function, a revoked privilege): no entry is to blame.
    #[error("backend error: {0}")]
    Backend(#[source] BoxError),
}

error_kit::server_failure!(Error);

impl Error {
    /// Whether retrying may succeed on its own.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// Whether the call was fenced off ([`Error::Fenced`]).
    #[must_use]
    pub fn is_fenced(&self) -> bool {
        matches!(self, Self::Fenced { .. })
    }

    /// Whether the database refused this call's values ([`Error::Refused`]).
    #[must_use]
    pub fn is_refused(&self) -> bool {
        matches!(self, Self::Refused(_))
    }
}

impl From<domain_runtime::InvalidGameId> for Error {
    fn from(e: domain_runtime::InvalidGameId) -> Self {
        Self::Invalid(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    #[test]
    fn only_unavailable_is_transient() {
        let g = GameId::new("g").expect("a valid game id");
        assert!(Error::Unavailable("refused".into()).is_transient());
        assert!(!Error::Backend("no table".into()).is_transient());
        assert!(!Error::Refused("NUL byte".into()).is_transient());
        assert!(Error::Refused("NUL byte".into()).is_refused());
        assert!(!Error::Backend("no table".into()).is_refused());
        assert!(!Error::Unavailable("refused".into()).is_refused());
        assert!(!Error::NotFound(g.clone()).is_transient());
        assert!(!Error::Invalid("x".into()).is_transient());
        let conflict = Error::Conflict {
            game_id: g,
            expected: RuntimeStatus::Running,
            actual: RuntimeStatus::Stopped,
        };
        assert!(!conflict.is_transient());
        assert_eq!(
            conflict.to_string(),
            "game 'g' is stopped, not running as the update expected"
        );
    }
}
