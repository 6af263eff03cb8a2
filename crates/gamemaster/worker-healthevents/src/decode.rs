//! Step 1: decoding one `runtime:health_events` entry, with the contract's one decoder.

pub use contracts::health_events::{HealthEvent, UndecodableHealthEvent as SkipReason, decode};

use crate::metrics::Outcome;

impl Outcome {
    /// The metric outcome of an entry that could not be decoded.
    #[must_use]
    pub fn of(reason: &SkipReason) -> Self {
        match reason {
            SkipReason::Malformed { .. } => Self::Malformed,
            SkipReason::UnknownEventType { .. } => Self::UnknownEventType,
        }
    }
}
