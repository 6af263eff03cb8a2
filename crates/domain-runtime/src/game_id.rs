//! The game identifier.

use std::fmt;

/// Longest game id accepted, in bytes. Ids are opaque, but an unbounded one from a stream
/// entry should not reach the database.
pub const MAX_GAME_ID_LEN: usize = 256;

/// A non-blank game identifier of at most [`MAX_GAME_ID_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GameId(String);

/// Why a string is not a game id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidGameId {
    /// Empty or only whitespace.
    #[error("game_id is blank")]
    Blank,
    /// Longer than [`MAX_GAME_ID_LEN`] bytes.
    #[error("game_id is {0} bytes long, more than the {MAX_GAME_ID_LEN} allowed")]
    TooLong(usize),
}

impl GameId {
    /// Validates and wraps `raw` (kept exactly as given).
    ///
    /// # Errors
    /// [`InvalidGameId`] when `raw` is blank or too long.
    pub fn new(raw: impl Into<String>) -> Result<Self, InvalidGameId> {
        let raw = raw.into();
        if raw.trim().is_empty() {
            return Err(InvalidGameId::Blank);
        }
        if raw.len() > MAX_GAME_ID_LEN {
            return Err(InvalidGameId::TooLong(raw.len()));
        }
        Ok(Self(raw))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GameId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for GameId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_and_long_ids_are_rejected() {
        assert_eq!(GameId::new(""), Err(InvalidGameId::Blank));
        assert_eq!(GameId::new(" \t"), Err(InvalidGameId::Blank));
        assert_eq!(
            GameId::new("x".repeat(MAX_GAME_ID_LEN + 1)),
            Err(InvalidGameId::TooLong(MAX_GAME_ID_LEN + 1))
        );
        let id = GameId::new(" g-1 ").map(|g| g.to_string());
        assert_eq!(id.as_deref(), Ok(" g-1 "));
    }
}
