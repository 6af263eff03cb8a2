//! Watching the Game Master from outside: its stored offset (how far it has consumed the
//! health events stream) and, when it serves them, its Prometheus metrics.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis_streams::{RedisClient, RedisOffsetStore};
use stream_consumer::{EntryId, StreamOffsetStore};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Sample, label, samples};
use crate::settings::MetricsUrl;

/// The Game Master's offset key is `gamemaster:stream_offsets:health_events` (SPEC §Wire
/// contracts): this service name and this label.
const GM_SERVICE: &str = "gamemaster";
/// See [`GM_SERVICE`].
const GM_LABEL: &str = "health_events";

/// How often the offset is read.
const POLL_EVERY: Duration = Duration::from_millis(5);

/// What this run appended and the Game Master has not consumed yet, shared between the
/// publishing games and the offset watcher: the basis of the lag the summary reports.
#[derive(Debug, Default)]
pub struct Progress {
    state: Mutex<Appended>,
    peak_lag_ms: AtomicU64,
    lag_ms: AtomicU64,
}

#[derive(Debug, Default)]
struct Appended {
    newest: EntryId,
    /// Appended entries above the last offset seen, with when they were appended (in
    /// about id order: games append concurrently).
    waiting: VecDeque<(EntryId, Instant)>,
}

impl Progress {
    /// Records an appended entry.
    pub fn appended(&self, id: EntryId) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.newest = state.newest.max(id);
        state.waiting.push_back((id, Instant::now()));
    }

    /// The newest entry appended so far.
    #[must_use]
    pub fn newest(&self) -> EntryId {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .newest
    }

    /// How long the oldest entry the Game Master had not consumed at the last look had
    /// been waiting, in ms (0 when it had consumed everything).
    #[must_use]
    pub fn lag_ms(&self) -> u64 {
        self.lag_ms.load(Ordering::Relaxed)
    }

    /// The largest [`lag_ms`](Self::lag_ms) seen.
    #[must_use]
    pub fn peak_lag_ms(&self) -> u64 {
        self.peak_lag_ms.load(Ordering::Relaxed)
    }

    fn observe_offset(&self, offset: EntryId) {
        let lag = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            while state.waiting.front().is_some_and(|(id, _)| *id <= offset) {
                state.waiting.pop_front();
            }
            state
                .waiting
                .front()
                .map_or(Duration::ZERO, |(_, at)| at.elapsed())
        };
        let lag = u64::try_from(lag.as_millis()).unwrap_or(u64::MAX);
        self.lag_ms.store(lag, Ordering::Relaxed);
        self.peak_lag_ms.fetch_max(lag, Ordering::Relaxed);
    }
}

/// Polls the Game Master's offset until `stop`, publishing each advance on the returned
/// channel and updating `progress`'s lag. Read failures are retried at the next poll; the
/// waits that depend on the offset have their own deadlines.
pub fn watch_offset(
    client: RedisClient,
    progress: Arc<Progress>,
    stop: CancellationToken,
) -> watch::Receiver<EntryId> {
    let (tx, rx) = watch::channel(EntryId::ZERO);
    let offsets = RedisOffsetStore::new(client, GM_SERVICE);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            match offsets.load(GM_LABEL).await {
                Ok(Some(offset)) => {
                    tx.send_if_modified(|current| {
                        let advanced = offset > *current;
                        if advanced {
                            *current = offset;
                        }
                        advanced
                    });
                    progress.observe_offset(offset);
                }
                Ok(None) => progress.observe_offset(EntryId::ZERO),
                Err(error) => tracing::debug!(%error, "cannot read the Game Master's offset"),
            }
        }
    });
    rx
}

/// What the Game Master's `/metrics` said at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GmMetrics {
    /// `gamemaster_health_events_consumed_total`, every outcome.
    pub consumed: f64,
    /// `gamemaster_health_events_consumed_total{outcome="applied"}`.
    pub applied: f64,
    /// `gamemaster_lobby_events_published_total{kind="runtime_snapshot_update"}`.
    pub snapshots: f64,
    /// `gamemaster_runtime_status_transitions_total`, every pair.
    pub transitions: f64,
    /// `gamemaster_stream_consumer_lag_milliseconds{consumer="health_events"}`.
    pub lag_ms: f64,
}

impl GmMetrics {
    /// Reads the series the summary uses out of Prometheus / OpenMetrics text; a series
    /// the text lacks counts as zero.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let mut m = Self::default();
        for Sample {
            name,
            labels,
            value,
        } in samples(text)
        {
            match name {
                "gamemaster_health_events_consumed_total" => {
                    m.consumed += value;
                    if label(labels, "outcome") == Some("applied") {
                        m.applied += value;
                    }
                }
                "gamemaster_lobby_events_published_total"
                    if label(labels, "kind") == Some("runtime_snapshot_update") =>
                {
                    m.snapshots += value;
                }
                "gamemaster_runtime_status_transitions_total" => m.transitions += value,
                "gamemaster_stream_consumer_lag_milliseconds"
                    if label(labels, "consumer") == Some("health_events") =>
                {
                    m.lag_ms = value;
                }
                _ => {}
            }
        }
        m
    }

    /// Counter growth from `before` to `self` (the lag is `self`'s).
    #[must_use]
    pub fn since(&self, before: &Self) -> Self {
        Self {
            consumed: self.consumed - before.consumed,
            applied: self.applied - before.applied,
            snapshots: self.snapshots - before.snapshots,
            transitions: self.transitions - before.transitions,
            lag_ms: self.lag_ms,
        }
    }
}

/// Fetches and parses the Game Master's metrics.
///
/// # Errors
/// The server cannot be reached, does not answer 200 within two seconds, or the reply is
/// not HTTP.
pub async fn scrape(url: &MetricsUrl) -> anyhow::Result<GmMetrics> {
    Ok(GmMetrics::parse(&crate::metrics::fetch(url).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_series_the_summary_uses_are_read_and_others_ignored() {
        let text = r#"# HELP gamemaster_health_events_consumed Entries consumed.
# TYPE gamemaster_health_events_consumed counter
gamemaster_health_events_consumed_total{outcome="applied"} 40
gamemaster_health_events_consumed_total{outcome="malformed"} 2
gamemaster_lobby_events_published_total{kind="runtime_snapshot_update"} 17
gamemaster_lobby_events_published_total{kind="game_finished"} 3
gamemaster_runtime_status_transitions_total{from="running",to="engine_unreachable"} 5
gamemaster_runtime_status_transitions_total{from="engine_unreachable",to="running"} 4
gamemaster_stream_consumer_lag_milliseconds{consumer="health_events"} 12
gamemaster_stream_consumer_lag_milliseconds{consumer="other"} 999
not a metric line
# EOF"#;
        let m = GmMetrics::parse(text);
        assert_eq!(
            m,
            GmMetrics {
                consumed: 42.0,
                applied: 40.0,
                snapshots: 17.0,
                transitions: 9.0,
                lag_ms: 12.0,
            }
        );
        let later = GmMetrics {
            consumed: 50.0,
            lag_ms: 0.0,
            ..m
        };
        assert_eq!(later.since(&m).consumed, 8.0);
        assert_eq!(later.since(&m).snapshots, 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_lag_is_how_long_the_oldest_unconsumed_entry_has_waited() {
        let p = Progress::default();
        p.appended(EntryId::new(100, 3));
        tokio::time::advance(Duration::from_millis(20)).await;
        p.appended(EntryId::new(100, 1));
        p.appended(EntryId::new(130, 0));
        assert_eq!(p.newest(), EntryId::new(130, 0));
        tokio::time::advance(Duration::from_millis(10)).await;
        p.observe_offset(EntryId::ZERO);
        assert_eq!((p.lag_ms(), p.peak_lag_ms()), (30, 30));
        p.observe_offset(EntryId::new(100, 3));
        assert_eq!((p.lag_ms(), p.peak_lag_ms()), (10, 30));
        p.observe_offset(EntryId::new(130, 0));
        assert_eq!((p.lag_ms(), p.peak_lag_ms()), (0, 30));
    }
}
