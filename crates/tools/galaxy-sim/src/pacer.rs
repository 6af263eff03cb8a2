//! Spreading health events over time: a token bucket shared by every game.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often tokens are added.
const REFILL_EVERY: Duration = Duration::from_millis(10);

/// Hands out at most `rate` turns per second to the games that wait for one, first come
/// first served (tokio's semaphore is fair, so games take turns). Tokens that nobody
/// takes pile up only to a 50 ms burst: the rate is a ceiling, not a debt.
#[derive(Debug, Clone)]
pub struct Pacer {
    permits: Arc<Semaphore>,
}

impl Pacer {
    /// Starts refilling at `rate` tokens per second until `stop`, then closes: every game
    /// waiting for a turn is told the run is over.
    #[must_use]
    pub fn start(rate: u32, stop: CancellationToken) -> Self {
        let permits = Arc::new(Semaphore::new(0));
        let burst = usize::try_from(rate / 20).unwrap_or(usize::MAX).max(1);
        let refill = Arc::clone(&permits);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFILL_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = Instant::now();
            let mut owed = 0.0_f64;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let now = Instant::now();
                owed += f64::from(rate) * now.duration_since(last).as_secs_f64();
                last = now;
                let whole = owed.floor();
                owed -= whole;
                // `whole` is at most a few seconds' worth of `rate`: it fits.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let due = whole as usize;
                let room = burst.saturating_sub(refill.available_permits());
                refill.add_permits(due.min(room));
            }
            refill.close();
        });
        Self { permits }
    }

    /// Waits for the next turn; `false` once the run is over.
    pub async fn turn(&self) -> bool {
        match self.permits.acquire().await {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(_) => false,
        }
    }

    /// Whether the run is over (no more turns will be handed out).
    #[must_use]
    pub fn is_over(&self) -> bool {
        self.permits.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn turns_come_at_the_rate_and_stop_with_the_run() {
        let stop = CancellationToken::new();
        let pacer = Pacer::start(1_000, stop.clone());
        let started = Instant::now();
        let mut turns = 0;
        while started.elapsed() < Duration::from_secs(1) {
            assert!(pacer.turn().await);
            turns += 1;
        }
        assert!(
            (950..=1_060).contains(&turns),
            "{turns} turns in one second"
        );
        stop.cancel();
        tokio::time::sleep(REFILL_EVERY * 2).await;
        assert!(pacer.is_over());
        // Tokens already handed out may still be taken; then the run is over.
        while pacer.turn().await {}
        assert!(!pacer.turn().await);
    }
}
