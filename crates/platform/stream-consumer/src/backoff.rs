//! Capped exponential backoff with jitter.

use std::time::Duration;

/// Backoff between retries of a transient failure: the `n`-th consecutive failure waits
/// between half and all of `min(initial × 2ⁿ⁻¹, max)` ("equal jitter"), so a fleet of
/// consumers does not retry in lockstep, and no wait exceeds `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first wait.
    pub initial: Duration,
    /// Ceiling of every wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The wait after the `attempt`-th consecutive failure (1-based); `jitter` in `[0, 1)`
    /// picks where in the upper half of the window the wait falls.
    #[must_use]
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let ceiling = self.initial.saturating_mul(1u32 << exponent).min(self.max);
        let jitter = jitter.clamp(0.0, 1.0);
        ceiling.div_f64(2.0) + ceiling.div_f64(2.0).mul_f64(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_until_the_cap_and_stays_in_the_upper_half() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        let ceilings = [100, 200, 400, 800, 1600, 2000, 2000];
        for (i, ceiling) in ceilings.into_iter().enumerate() {
            let attempt = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let ceiling = Duration::from_millis(ceiling);
            assert_eq!(b.delay(attempt, 0.0), ceiling / 2, "attempt {attempt}");
            assert_eq!(b.delay(attempt, 1.0), ceiling, "attempt {attempt}");
            let mid = b.delay(attempt, 0.5);
            assert!(mid > ceiling / 2 && mid < ceiling, "attempt {attempt}");
        }
        assert_eq!(b.delay(u32::MAX, 1.0), Duration::from_secs(2));
    }
}
