//! What a consumer tells readiness probes.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// Shared view of whether a consumer is making progress. Cloned into the HTTP readiness
/// handler; the consumer marks every failure and every success.
#[derive(Debug, Clone, Default)]
pub struct ConsumerHealth(Arc<Mutex<State>>);

#[derive(Debug, Default)]
struct State {
    failing: Option<Failing>,
}

#[derive(Debug, Clone)]
struct Failing {
    since: Instant,
    stage: &'static str,
    error: String,
}

impl ConsumerHealth {
    /// `Ok` while the consumer's last attempt succeeded; otherwise why it is retrying
    /// (stage, last error, for how long).
    ///
    /// # Errors
    /// A one-line reason when the consumer is retrying a transient failure.
    pub fn check(&self) -> Result<(), String> {
        let state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match &state.failing {
            None => Ok(()),
            Some(f) => Err(format!(
                "consumer retrying {} for {:.1}s: {}",
                f.stage,
                f.since.elapsed().as_secs_f64(),
                f.error
            )),
        }
    }

    pub(crate) fn failed(&self, stage: &'static str, error: String) {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let since = state
            .failing
            .as_ref()
            .map_or_else(Instant::now, |f| f.since);
        state.failing = Some(Failing {
            since,
            stage,
            error,
        });
    }

    pub(crate) fn succeeded(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .failing = None;
    }
}
