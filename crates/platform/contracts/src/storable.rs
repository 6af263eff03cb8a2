//! The rules for values a consumer stores, so that what decoding accepts PostgreSQL
//! always takes: text as a `text` column in a UTF-8 database holds it, within a length we
//! set, and times within what a `timestamptz` holds.
//!
//! Every value decoded from a stream is already valid UTF-8 (the decoders check that);
//! of valid UTF-8, such a column refuses only the NUL character. The length limits are
//! ours: an id or a short label of kilobytes is no game's, and an indexed text beyond
//! about 2.7 kB cannot be stored at all (the btree row limit). Each field's limit is a
//! constant next to the type or stream that carries it (`MAX_GAME_ID_LEN`,
//! `lobby_events::MAX_LABEL_LEN`, `health_events::MAX_CONTAINER_ID_LEN`, the Lobby's
//! `MAX_USER_ID_LEN`), listed in `docs/decisions/0016`.

/// The latest time, in milliseconds since the Unix epoch, that a consumer stores as a
/// timestamp: 9999-12-31T23:59:59.999Z. PostgreSQL's `timestamptz` reaches further, but
/// not as far as 64-bit milliseconds do, and no game ends after the year 9999.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// Why a text cannot be stored as the contract needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UnstorableText {
    /// It holds a NUL character, which PostgreSQL `text` cannot hold.
    #[error("contains a NUL byte at byte {at} (PostgreSQL text cannot hold one)")]
    Nul {
        /// Byte offset of the first NUL.
        at: usize,
    },
    /// It is longer than the field's limit.
    #[error("is {len} bytes long, more than the {max} allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Checks `value` against the storable-text rule with a limit of `max_bytes`.
///
/// # Errors
/// [`UnstorableText`] naming the first problem.
pub fn storable_text(value: &str, max_bytes: usize) -> Result<(), UnstorableText> {
    if value.len() > max_bytes {
        return Err(UnstorableText::TooLong {
            len: value.len(),
            max: max_bytes,
        });
    }
    match value.find('\0') {
        Some(at) => Err(UnstorableText::Nul { at }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_and_length_are_refused_and_everything_else_is_kept() {
        assert_eq!(storable_text("ok", 2), Ok(()));
        assert_eq!(storable_text("\u{10FFFF}\u{FFFF}\u{1}é", 64), Ok(()));
        assert_eq!(
            storable_text("a\0b", 64),
            Err(UnstorableText::Nul { at: 1 })
        );
        assert_eq!(
            storable_text("abc", 2),
            Err(UnstorableText::TooLong { len: 3, max: 2 })
        );
        assert_eq!(
            UnstorableText::Nul { at: 0 }.to_string(),
            "contains a NUL byte at byte 0 (PostgreSQL text cannot hold one)"
        );
    }
}
