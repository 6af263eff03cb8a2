//! Stream entry ids and raw entries.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use contracts::wire::WireEntry;

/// A Redis Stream entry id, `<milliseconds>-<sequence>`. Ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EntryId {
    /// Milliseconds part (the producer's clock for auto-generated ids).
    pub ms: u64,
    /// Sequence number within the millisecond.
    pub seq: u64,
}

impl EntryId {
    /// `0-0`: before every entry; where a consumer with no stored offset starts.
    pub const ZERO: Self = Self { ms: 0, seq: 0 };

    /// Builds an id from its two parts.
    #[must_use]
    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Text that is not a stream entry id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream entry id {0:?}: expected <ms>-<seq>")]
pub struct InvalidEntryId(pub String);

impl FromStr for EntryId {
    type Err = InvalidEntryId;

    /// Parses `<ms>-<seq>`; a bare `<ms>` means `<ms>-0`, as Redis reads it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidEntryId(s.to_owned());
        let digits = |part: &str| {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                part.parse::<u64>().ok()
            }
        };
        match s.split_once('-') {
            Some((ms, seq)) => Ok(Self::new(
                digits(ms).ok_or_else(bad)?,
                digits(seq).ok_or_else(bad)?,
            )),
            None => Ok(Self::new(digits(s).ok_or_else(bad)?, 0)),
        }
    }
}

/// One stream entry exactly as read: its id and its field/value pairs as raw bytes, in the
/// order Redis returned them. Nothing is dropped or decoded here; decoding is the
/// handler's job, with the stream's decoder in `contracts` (through [`WireEntry`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    /// The entry's id.
    pub id: EntryId,
    /// Field/value pairs, raw.
    pub fields: Vec<(Bytes, Bytes)>,
}

impl StreamEntry {
    /// Builds an entry from text pairs (tests and producers).
    #[must_use]
    pub fn from_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(id: EntryId, pairs: &[(K, V)]) -> Self {
        Self {
            id,
            fields: pairs
                .iter()
                .map(|(k, v)| {
                    (
                        Bytes::copy_from_slice(k.as_ref()),
                        Bytes::copy_from_slice(v.as_ref()),
                    )
                })
                .collect(),
        }
    }

    /// The raw value of `name`; when a field repeats, the last one wins (as a map would).
    #[must_use]
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields.as_slice().raw(name)
    }
}

impl WireEntry for StreamEntry {
    fn raw(&self, name: &str) -> Option<&[u8]> {
        self.field(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_parse_print_and_order() {
        assert_eq!("0-0".parse(), Ok(EntryId::ZERO));
        assert_eq!(
            "1700000000000-12".parse(),
            Ok(EntryId::new(1_700_000_000_000, 12))
        );
        assert_eq!("5".parse(), Ok(EntryId::new(5, 0)));
        assert!(EntryId::new(1, 9) < EntryId::new(2, 0));
        assert!(EntryId::new(2, 0) < EntryId::new(2, 1));
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "a-1",
            "1-b",
            "1-2-3",
            "+1-2",
            "18446744073709551616-0",
            " 1-2",
        ] {
            assert!(bad.parse::<EntryId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn repeated_field_last_wins_and_absent_is_none() {
        let entry = StreamEntry::from_pairs(EntryId::ZERO, &[("a", "1"), ("a", "2")]);
        assert_eq!(entry.field("a"), Some(&b"2"[..]));
        assert_eq!(entry.field("b"), None);
    }

    proptest! {
        #[test]
        fn any_id_round_trips(ms: u64, seq: u64) {
            let id = EntryId::new(ms, seq);
            prop_assert_eq!(id.to_string().parse::<EntryId>(), Ok(id));
        }

        #[test]
        fn parsing_never_panics(s in ".*") {
            let _ = s.parse::<EntryId>();
        }
    }
}
