//! What a hostile or broken producer could put in a stream entry, as proptest strategies:
//! the inputs of the property tests that feed decoders and then the real stores.
//!
//! Each strategy mixes values a decoder should accept (so the store is really exercised)
//! with the ones that broke the services before: NUL bytes, bytes that are not UTF-8,
//! texts past the limits, numbers past the column types, and plain noise.

use proptest::prelude::*;

/// A printable id-like text, 1 to 24 characters.
fn id_like() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.:-]{1,24}"
}

/// A text field's bytes: one of `valid`, an id-like text, either with a NUL byte put in
/// somewhere, any characters (including controls and the highest code points), raw bytes,
/// or a text between 200 bytes and 4 kB that does not compress.
pub fn text_bytes(valid: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let chosen = proptest::sample::select(valid).prop_map(|v| v.as_bytes().to_vec());
    prop_oneof![
        3 => chosen,
        2 => id_like().prop_map(String::into_bytes),
        2 => (id_like(), any::<prop::sample::Index>()).prop_map(|(id, at)| {
            let mut bytes = id.into_bytes();
            let at = at.index(bytes.len() + 1);
            bytes.insert(at, 0);
            bytes
        }),
        1 => proptest::collection::vec(any::<char>(), 0..40)
            .prop_map(|chars| chars.into_iter().collect::<String>().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..40),
        1 => (200_usize..4_000, any::<u64>()).prop_map(|(len, seed)| incompressible(len, seed)),
    ]
}

/// A decimal field's bytes: an ordinary positive time, any 64-bit number, one past 64
/// bits, or noise.
pub fn integer_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (1_600_000_000_000_i64..1_900_000_000_000).prop_map(|n| n.to_string().into_bytes()),
        2 => any::<i64>().prop_map(|n| n.to_string().into_bytes()),
        1 => any::<u32>().prop_map(|n| n.to_string().into_bytes()),
        1 => Just(b"99999999999999999999".to_vec()),
        1 => text_bytes(&["0", "-1", " 7 ", "1.5", "1e3"]),
    ]
}

/// Like [`text_bytes`], but four times in five one of `valid`: for entries of many
/// fields, so that a good share of them is valid throughout.
pub fn mostly(valid: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::sample::select(valid).prop_map(|v| v.as_bytes().to_vec()),
        1 => text_bytes(valid),
    ]
}

/// `len` printable ASCII bytes from a fixed generator seeded with `seed`: no run repeats,
/// so PostgreSQL cannot compress them below its btree row limit.
#[must_use]
pub fn incompressible(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            b'!' + u8::try_from(x >> 58).unwrap_or(0)
        })
        .collect()
}

/// Runs `cases` inputs from `strategy` through `case`, which says whether the decoder
/// accepted the input (and the store then took it: `Ok(true)`), rejected it (`Ok(false)`),
/// or what the store refused of an accepted one (`Err`). Returns how many were accepted
/// and rejected, or the first refusal (shrunk by proptest to a smallest input).
///
/// # Errors
/// The refusal, with the input that caused it.
pub fn accepted_and_stored<S: Strategy>(
    cases: u32,
    strategy: &S,
    case: impl Fn(S::Value) -> Result<bool, String>,
) -> Result<(usize, usize), String> {
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    use std::sync::atomic::{AtomicUsize, Ordering};

    let (accepted, rejected) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(strategy, |input| {
            let counter = if case(input).map_err(TestCaseError::fail)? {
                &accepted
            } else {
                &rejected
            };
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    Ok((accepted.into_inner(), rejected.into_inner()))
}
