//! The game identifier.

use std::fmt;

use crate::storable::{UnstorableText, storable_text};

/// Longest game id accepted, in bytes. Ids are opaque, but an unbounded one from a stream
/// entry should not reach the database.
pub const MAX_GAME_ID_LEN: usize = 256;

/// A non-blank game identifier of at most [`MAX_GAME_ID_LEN`] bytes, without NUL: every
/// value of this type can be stored and looked up in PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GameId(String);

/// Why a string is not a game id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidGameId {
    /// Empty or only whitespace.
    #[error("game_id is blank")]
    Blank,
    /// Longer than [`MAX_GAME_ID_LEN`] bytes, or holding a NUL byte.
    #[error("game_id {0}")]
    Unstorable(#[from] UnstorableText),
}

impl GameId {
    /// Validates and wraps `raw` (kept exactly as given).
    ///
    /// # Errors
    /// [`InvalidGameId`] when `raw` is blank, too long or holds a NUL byte.
    pub fn new(raw: impl Into<String>) -> Result<Self, InvalidGameId> {
        let raw = raw.into();
        if raw.trim().is_empty() {
            return Err(InvalidGameId::Blank);
        }
        storable_text(&raw, MAX_GAME_ID_LEN)?;
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
    #[allow(clippy::expect_used)]
    fn blank_long_and_nul_ids_are_rejected() {
        assert_eq!(GameId::new(""), Err(InvalidGameId::Blank));
        assert_eq!(GameId::new(" \t"), Err(InvalidGameId::Blank));
        assert_eq!(
            GameId::new("x".repeat(MAX_GAME_ID_LEN + 1)),
            Err(InvalidGameId::Unstorable(UnstorableText::TooLong {
                len: MAX_GAME_ID_LEN + 1,
                max: MAX_GAME_ID_LEN
            }))
        );
        for nul in ["\0", "g-1\0", "\0g-1"] {
            let error = GameId::new(nul).expect_err("NUL cannot be stored");
            assert!(matches!(
                error,
                InvalidGameId::Unstorable(UnstorableText::Nul { .. })
            ));
            assert!(
                error.to_string().starts_with("game_id contains a NUL byte"),
                "{error}"
            );
        }
        let id = GameId::new(" g-1 ").map(|g| g.to_string());
        assert_eq!(id.as_deref(), Ok(" g-1 "));
    }
}
