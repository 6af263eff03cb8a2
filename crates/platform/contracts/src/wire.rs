//! Reading one stream entry's fields: the one helper every stream's decoder in this crate
//! is written with, whatever the stream client.
//!
//! A decoder asks for the fields it needs; everything else (extra fields, non-UTF-8 bytes
//! in fields it does not read) is left alone. Each failure names the field, so the warning
//! a consumer logs says exactly what was wrong with the entry.

/// An entry's raw field/value pairs, as any stream client holds them: the stream
/// consumer's entries implement it, and so do slices and vectors of pairs (producers and
/// tests).
pub trait WireEntry {
    /// The raw value of the field `name`, `None` when the entry lacks it. When a field
    /// repeats, the last one wins, as a map would.
    fn raw(&self, name: &str) -> Option<&[u8]>;
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> WireEntry for [(K, V)] {
    fn raw(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .rev()
            .find(|(k, _)| k.as_ref() == name.as_bytes())
            .map(|(_, v)| v.as_ref())
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> WireEntry for Vec<(K, V)> {
    fn raw(&self, name: &str) -> Option<&[u8]> {
        self.as_slice().raw(name)
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>, const N: usize> WireEntry for [(K, V); N] {
    fn raw(&self, name: &str) -> Option<&[u8]> {
        self.as_slice().raw(name)
    }
}

/// Why an entry could not be decoded. Always permanent: retrying cannot fix the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A required field is absent.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A required field is empty or whitespace.
    #[error("blank {0}")]
    Blank(&'static str),
    /// A field the decoder reads holds bytes that are not UTF-8.
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    /// A field that must be a decimal integer is not one (or does not fit 64 bits).
    #[error("{field} is not an integer: {value:?}")]
    NotInteger {
        /// Field name.
        field: &'static str,
        /// The offending text, cut to 64 characters.
        value: String,
    },
    /// A number outside the range the contract allows.
    #[error("{field} is out of range: {value} ({rule})")]
    OutOfRange {
        /// Field name.
        field: &'static str,
        /// The value.
        value: i64,
        /// The rule it breaks, e.g. "must be > 0".
        rule: &'static str,
    },
    /// A value the contract does not know (an unknown kind or event type, bad JSON…).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Typed access to one entry's fields.
#[derive(Debug)]
pub struct Fields<'a, E: WireEntry + ?Sized>(&'a E);

impl<E: WireEntry + ?Sized> Clone for Fields<'_, E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E: WireEntry + ?Sized> Copy for Fields<'_, E> {}

impl<'a, E: WireEntry + ?Sized> Fields<'a, E> {
    /// Wraps an entry.
    #[must_use]
    pub fn new(entry: &'a E) -> Self {
        Self(entry)
    }

    /// A field as text, `None` when absent.
    ///
    /// # Errors
    /// [`DecodeError::NotUtf8`] when present but not UTF-8.
    pub fn optional_text(&self, name: &'static str) -> Result<Option<&'a str>, DecodeError> {
        self.0
            .raw(name)
            .map(|raw| std::str::from_utf8(raw).map_err(|_| DecodeError::NotUtf8(name)))
            .transpose()
    }

    /// A required, non-blank text field (returned as given, not trimmed).
    ///
    /// # Errors
    /// Missing, blank or not UTF-8.
    pub fn required_text(&self, name: &'static str) -> Result<&'a str, DecodeError> {
        let text = self
            .optional_text(name)?
            .ok_or(DecodeError::Missing(name))?;
        if text.trim().is_empty() {
            return Err(DecodeError::Blank(name));
        }
        Ok(text)
    }

    /// An optional decimal `i64`; absent or blank gives `None`.
    ///
    /// # Errors
    /// Not UTF-8, or not an integer that fits 64 bits.
    pub fn optional_i64(&self, name: &'static str) -> Result<Option<i64>, DecodeError> {
        match self.optional_text(name)? {
            None => Ok(None),
            Some(text) if text.trim().is_empty() => Ok(None),
            Some(text) => text
                .parse::<i64>()
                .map(Some)
                .map_err(|_| DecodeError::NotInteger {
                    field: name,
                    value: clip(text),
                }),
        }
    }

    /// A required decimal integer that must be `> 0` (timestamps in milliseconds).
    ///
    /// # Errors
    /// Missing, blank, not an integer, or not positive.
    pub fn required_positive_i64(&self, name: &'static str) -> Result<i64, DecodeError> {
        self.required_text(name)?;
        let value = self.optional_i64(name)?.ok_or(DecodeError::Blank(name))?;
        if value <= 0 {
            return Err(DecodeError::OutOfRange {
                field: name,
                value,
                rule: "must be > 0",
            });
        }
        Ok(value)
    }
}

/// Field maps for the decoders' "never panics" property tests.
#[cfg(test)]
pub(crate) mod arbitrary {
    use proptest::prelude::*;

    /// One entry's raw pairs, up to 12 of them: names of the stream's own `fields` or any
    /// bytes; values that are one of `spellings` (the stream's enum values, a JSON
    /// payload), any integer, or any bytes.
    pub(crate) fn field_map(
        fields: &'static [&'static str],
        spellings: Vec<String>,
    ) -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
        let name = prop_oneof![
            proptest::sample::select(fields).prop_map(|name| name.as_bytes().to_vec()),
            proptest::collection::vec(any::<u8>(), 0..12),
        ];
        let value = prop_oneof![
            proptest::sample::select(spellings).prop_map(String::into_bytes),
            any::<i64>().prop_map(|n| n.to_string().into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..40),
        ];
        proptest::collection::vec((name, value), 0..12)
    }

    /// The spellings of a wire enum's values.
    pub(crate) fn spellings<T: Copy>(all: &[T], as_str: fn(T) -> &'static str) -> Vec<String> {
        all.iter().map(|v| as_str(*v).to_owned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry<'a>(pairs: &[(&'a str, &'a [u8])]) -> Vec<(&'a str, &'a [u8])> {
        pairs.to_vec()
    }

    #[test]
    fn required_text_errors_name_the_field() {
        let e = entry(&[("a", b" "), ("b", b"\xff\xfe"), ("c", b"ok")]);
        let f = Fields::new(&e);
        assert_eq!(f.required_text("a"), Err(DecodeError::Blank("a")));
        assert_eq!(f.required_text("b"), Err(DecodeError::NotUtf8("b")));
        assert_eq!(f.required_text("z"), Err(DecodeError::Missing("z")));
        assert_eq!(f.required_text("c"), Ok("ok"));
    }

    #[test]
    fn positive_integers() {
        let e = entry(&[
            ("zero", b"0"),
            ("neg", b"-5"),
            ("big", b"99999999999999999999"),
            ("float", b"1.5"),
            ("ok", b"1700000000000"),
        ]);
        let f = Fields::new(&e);
        assert!(matches!(
            f.required_positive_i64("zero"),
            Err(DecodeError::OutOfRange { .. })
        ));
        assert!(matches!(
            f.required_positive_i64("neg"),
            Err(DecodeError::OutOfRange { .. })
        ));
        assert!(matches!(
            f.required_positive_i64("big"),
            Err(DecodeError::NotInteger { .. })
        ));
        assert!(matches!(
            f.required_positive_i64("float"),
            Err(DecodeError::NotInteger { .. })
        ));
        assert_eq!(
            f.required_positive_i64("missing"),
            Err(DecodeError::Missing("missing"))
        );
        assert_eq!(f.required_positive_i64("ok"), Ok(1_700_000_000_000));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(k in proptest::collection::vec(any::<u8>(), 0..8),
                                                 v in proptest::collection::vec(any::<u8>(), 0..32)) {
            let e = vec![(k.clone(), v)];
            let f = Fields::new(&e);
            let _ = f.required_text("a");
            let _ = f.required_positive_i64("a");
            if let Ok(name) = std::str::from_utf8(&k) {
                let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
                let _ = f.required_positive_i64(name);
                let _ = f.optional_i64(name);
            }
        }
    }
}
