//! The error every Lobby port returns.

use lobby_domain::{GameId, GameStatus, TransitionError};

pub use error_kit::BoxError;

/// What went wrong in a port call. [`Error::is_transient`] tells the failures worth
/// retrying (the server is unreachable or slow) from the permanent ones.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Lobby has no game with this id.
    #[error("no game '{0}' in the Lobby")]
    NotFound(GameId),
    /// A game with this id exists already.
    #[error("game '{0}' already exists")]
    AlreadyExists(GameId),
    /// The compare-and-swap found another status than the one it expected.
    #[error("game '{game_id}' is {actual}, not {expected} as the update expected")]
    Conflict {
        /// The game.
        game_id: GameId,
        /// The status the update expected.
        expected: GameStatus,
        /// The status the game holds.
        actual: GameStatus,
    },
    /// The requested transition is not in the table (or not for this trigger).
    #[error(transparent)]
    InvalidTransition(#[from] TransitionError),
    /// The input is invalid (the message names the rule it breaks).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Transient: the server is unreachable, the connection was lost, the pool or a
    /// statement timed out, a deadlock was broken. Retrying may succeed.
    #[error("unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The database refused the values of this call, or a stored row it touches (a NUL
    /// byte, a number out of range, a violated constraint, an unreadable row): retrying
    /// the same call fails alike, but a call without those values may succeed. A
    /// consumer isolates the entries responsible and skips them.
    #[error("refused by the database: {0}")]
    Refused(#[source] BoxError),
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

    /// Whether the database refused this call's values ([`Error::Refused`]).
    #[must_use]
    pub fn is_refused(&self) -> bool {
        matches!(self, Self::Refused(_))
    }
}

impl From<lobby_domain::InvalidGameId> for Error {
    fn from(e: lobby_domain::InvalidGameId) -> Self {
        Self::Invalid(e.to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_is_transient() {
        let game = GameId::new("g").unwrap();
        assert!(Error::Unavailable("refused".into()).is_transient());
        assert!(!Error::Backend("no table".into()).is_transient());
        assert!(!Error::Refused("NUL byte".into()).is_transient());
        assert!(Error::Refused("NUL byte".into()).is_refused());
        assert!(!Error::Backend("no table".into()).is_refused());
        assert!(!Error::Unavailable("refused".into()).is_refused());
        assert!(!Error::NotFound(game.clone()).is_transient());
        assert!(!Error::Invalid("x".into()).is_transient());
        let conflict = Error::Conflict {
            game_id: game,
            expected: GameStatus::Running,
            actual: GameStatus::Cancelled,
        };
        assert!(!conflict.is_transient());
        assert_eq!(
            conflict.to_string(),
            "game 'g' is cancelled, not running as the update expected"
        );
    }
}
