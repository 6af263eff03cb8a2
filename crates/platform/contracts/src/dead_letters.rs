//! The dead-letter streams (one per consumer, `<service>:dead_letters:<label>`): each entry
//! a stream entry a consumer skipped as permanently bad, kept raw, with why and where it
//! came from, so an operator can look at it, and replay or purge it.
//!
//! An entry holds three fields of its own first, then the skipped entry's fields exactly
//! as they were (bytes that are not UTF-8, repeated fields and all). A dead letter is
//! appended under its source entry's id, so keeping one twice is a no-op.

/// The stream a consumer labelled `label` of `service` keeps its dead letters in.
#[must_use]
pub fn stream_for(service: &str, label: &str) -> String {
    format!("{service}:dead_letters:{label}")
}

/// Wire field names a dead letter adds before the skipped entry's own fields.
pub mod fields {
    /// The stream the entry was skipped on.
    pub const SOURCE_STREAM: &str = "dead_letter_source_stream";
    /// The skipped entry's id on that stream.
    pub const SOURCE_ID: &str = "dead_letter_source_id";
    /// Why the consumer skipped it.
    pub const REASON: &str = "dead_letter_reason";

    /// The three, in the order they are written.
    pub const ALL: [&str; 3] = [SOURCE_STREAM, SOURCE_ID, REASON];
}

/// A skipped entry, with why and where from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The stream it was skipped on.
    pub source_stream: String,
    /// Its id there.
    pub source_id: String,
    /// Why it was skipped.
    pub reason: String,
    /// Its fields, raw, in order.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A dead-letter entry whose first three fields are not the dead letter's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a dead letter: field {position} should be {expected}")]
pub struct NotADeadLetter {
    /// Which of the first three fields is wrong (0-based).
    pub position: usize,
    /// The name it should have.
    pub expected: &'static str,
}

impl DeadLetter {
    /// The exact field/value pairs to XADD: the three of its own, then the entry's.
    #[must_use]
    pub fn wire_fields(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let own = [&self.source_stream, &self.source_id, &self.reason];
        fields::ALL
            .iter()
            .zip(own)
            .map(|(name, value)| (name.as_bytes().to_vec(), value.as_bytes().to_vec()))
            .chain(self.fields.iter().cloned())
            .collect()
    }

    /// Reads a dead letter back from its pairs, in order.
    ///
    /// # Errors
    /// [`NotADeadLetter`] when the first three pairs are not its own fields.
    pub fn decode<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        pairs: &[(K, V)],
    ) -> Result<Self, NotADeadLetter> {
        let mut own = Vec::with_capacity(3);
        for (position, expected) in fields::ALL.iter().enumerate() {
            match pairs.get(position) {
                Some((k, v)) if k.as_ref() == expected.as_bytes() => {
                    own.push(String::from_utf8_lossy(v.as_ref()).into_owned());
                }
                _ => return Err(NotADeadLetter { position, expected }),
            }
        }
        let reason = own.pop().unwrap_or_default();
        let source_id = own.pop().unwrap_or_default();
        let source_stream = own.pop().unwrap_or_default();
        Ok(Self {
            source_stream,
            source_id,
            reason,
            fields: pairs
                .iter()
                .skip(3)
                .map(|(k, v)| (k.as_ref().to_vec(), v.as_ref().to_vec()))
                .collect(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_stream_is_named_like_the_offset_keys() {
        assert_eq!(
            stream_for("gamemaster", "health_events"),
            "gamemaster:dead_letters:health_events"
        );
    }

    #[test]
    fn a_letter_keeps_its_entry_raw_even_when_it_uses_the_letters_own_names() {
        let letter = DeadLetter {
            source_stream: "runtime:health_events".into(),
            source_id: "5-1".into(),
            reason: "event_type: unknown".into(),
            fields: vec![
                (b"dead_letter_reason".to_vec(), b"mine".to_vec()),
                (b"k".to_vec(), vec![0xff, 0x00]),
                (b"k".to_vec(), b"again".to_vec()),
            ],
        };
        let wire = letter.wire_fields();
        assert_eq!(wire[0].0, b"dead_letter_source_stream");
        assert_eq!(DeadLetter::decode(&wire).unwrap(), letter);
    }

    #[test]
    fn an_entry_without_the_three_fields_is_no_letter() {
        let err =
            DeadLetter::decode(&[("dead_letter_source_stream", "s"), ("other", "x")]).unwrap_err();
        assert_eq!(
            err,
            NotADeadLetter {
                position: 1,
                expected: fields::SOURCE_ID
            }
        );
    }

    proptest! {
        #[test]
        fn any_letter_round_trips(
            stream in ".{0,20}", id in "[0-9]{1,5}-[0-9]{1,3}", reason in ".{0,40}",
            pairs in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..8), proptest::collection::vec(any::<u8>(), 0..8)), 0..6),
        ) {
            let letter = DeadLetter { source_stream: stream, source_id: id, reason, fields: pairs };
            prop_assert_eq!(DeadLetter::decode(&letter.wire_fields()).unwrap(), letter);
        }
    }
}
