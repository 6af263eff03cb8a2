//! The Runtime Manager's engine supervisor: health from real observations (SPEC §RTM,
//! issue 13). Every interval it:
//!
//!  1. **Lists** the runtimes the registry records `running`.
//!  2. **Looks** at each one's engine: the driver's inspection (running, paused or
//!     unhealthy, exited, killed for its memory, stopped on request, gone), and its HTTP
//!     probe while it exists.
//!  3. **Publishes** the events that look gives after the engine's last one
//!     (`rtm_domain::events`, a pure table), each through the health publisher: the
//!     snapshot upsert, then the XADD on `runtime:health_events`.
//!  4. **Remembers** the look, and forgets engines no longer listed (stopped by a job, or
//!     started again under a new container id).
//!
//! Before its first look, the supervisor reads back the last published snapshot of each
//! engine (`health_snapshots`): after a Runtime Manager restart, that is what the new looks
//! at the engines its registry lists (their re-adoption) are compared with, so a restart
//! repeats nothing already published and raises no false alarm, and an engine that went
//! while nobody watched is `container_disappeared`. A look whose events could not be published is not
//! remembered, so the next tick publishes them again; a registry that cannot be read is
//! logged and asked again at the next tick.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use contracts::{HealthEventEnvelope, HealthEventType};
use prometheus_client::registry::Registry;
use rtm_domain::{Look, Runtime, events};
use rtm_ports::{EngineDriver, Error, HealthEventPublisher, HealthSnapshotStore, RuntimeRegistry};
use stream_consumer::{CountsBy, labels};
use tokio_util::sync::CancellationToken;

/// How often engines are looked at, by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// The supervisor's counter, `rtmanager_health_events_published_total{event_type}`.
#[derive(Debug, Clone)]
pub struct SupervisorMetrics {
    published: CountsBy<HealthEventType>,
}

impl Default for SupervisorMetrics {
    /// Unregistered, every event type at 0.
    fn default() -> Self {
        Self {
            published: CountsBy::new(labels::EVENT_TYPE),
        }
    }
}

impl SupervisorMetrics {
    /// Creates the family and registers it in `registry`.
    #[must_use]
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let help = "Health events published from the supervisor's observations, by type";
        metrics
            .published
            .register(registry, "health_events_published", help);
        metrics
    }

    /// How many events of `event_type` were published.
    #[must_use]
    pub fn published(&self, event_type: HealthEventType) -> u64 {
        self.published.get(event_type)
    }
}

/// The supervisor; [`run`](Self::run) it beside the stop-jobs consumer.
pub struct Supervisor<R, E, P, S> {
    registry: R,
    engine: E,
    publisher: P,
    snapshots: S,
    metrics: SupervisorMetrics,
    /// The last look at each engine, by container id; `None` until seeded from the
    /// published snapshots.
    looks: Option<HashMap<String, Look>>,
}

impl<R, E, P, S> Supervisor<R, E, P, S>
where
    R: RuntimeRegistry,
    E: EngineDriver + Clone + 'static,
    P: HealthEventPublisher,
    S: HealthSnapshotStore,
{
    /// A supervisor listing runtimes in `registry`, looking through `engine`, publishing
    /// through `publisher`, and starting from what `snapshots` last recorded.
    pub fn new(
        registry: R,
        engine: E,
        publisher: P,
        snapshots: S,
        metrics: SupervisorMetrics,
    ) -> Self {
        Self {
            registry,
            engine,
            publisher,
            snapshots,
            metrics,
            looks: None,
        }
    }

    /// Step 0, once: the last published snapshot of each engine stands in for its last
    /// look, so a restart repeats nothing it published before.
    async fn seed(&self) -> Result<HashMap<String, Look>, Error> {
        Ok(self
            .snapshots
            .all()
            .await?
            .into_iter()
            .map(|s| (s.container_id, Look::recorded(s.status)))
            .collect())
    }

    /// Looks at every engine once (steps 1–4) and returns the events published.
    ///
    /// # Errors
    /// The registry could not be listed; nothing was looked at.
    pub async fn tick(&mut self) -> Result<Vec<(Runtime, HealthEventType)>, Error> {
        let last = match self.looks.take() {
            Some(looks) => looks,
            None => self.seed().await?,
        };
        let running = match self.registry.running().await {
            Ok(running) => running,
            Err(e) => {
                self.looks = Some(last);
                return Err(e);
            }
        };
        let mut published = Vec::new();
        let mut looks = HashMap::with_capacity(running.len());
        let taken = self.look_all(&running).await;
        for (runtime, now) in running.into_iter().zip(taken) {
            let before = last.get(&runtime.container_id).copied();
            let Some(now) = now else {
                if let Some(before) = before {
                    looks.insert(runtime.container_id.clone(), before);
                }
                continue;
            };
            match self.publish(&runtime, &events(before, now)).await {
                Ok(sent) => {
                    published.extend(sent.into_iter().map(|e| (runtime.clone(), e)));
                    looks.insert(runtime.container_id.clone(), now);
                }
                Err(e) => {
                    tracing::warn!(game_id = %runtime.game_id, error = %e, "health event not published; again at the next look");
                    if let Some(before) = before {
                        looks.insert(runtime.container_id.clone(), before);
                    }
                }
            }
        }
        self.looks = Some(looks);
        Ok(published)
    }

    /// Step 2 for every engine at once, so one that does not answer its probe (a paused
    /// one waits out the probe's timeout) does not delay the others' looks. In `running`'s
    /// order; `None` where the runtime could not say.
    async fn look_all(&self, running: &[Runtime]) -> Vec<Option<Look>> {
        let mut tasks = tokio::task::JoinSet::new();
        for (index, runtime) in running.iter().enumerate() {
            let engine = self.engine.clone();
            let runtime = runtime.clone();
            tasks.spawn(async move { (index, look(&engine, &runtime).await) });
        }
        let mut taken = vec![None; running.len()];
        while let Some(done) = tasks.join_next().await {
            if let Ok((index, found)) = done {
                taken[index] = found;
            }
        }
        taken
    }

    /// Step 3 for one engine: its events, in order, until one fails.
    async fn publish(
        &self,
        runtime: &Runtime,
        events: &[HealthEventType],
    ) -> Result<Vec<HealthEventType>, Error> {
        for event in events {
            let envelope = HealthEventEnvelope::new(
                runtime.game_id.as_str(),
                runtime.container_id.as_str(),
                *event,
                now_ms(),
                None,
            )
            .map_err(|e| Error::Refused(Box::new(e)))?;
            self.publisher.publish(&envelope).await?;
            self.metrics.published.inc(*event);
            tracing::info!(game_id = %runtime.game_id, container_id = %runtime.container_id, event_type = event.as_str(), "health event published");
        }
        Ok(events.to_vec())
    }

    /// Ticks every `interval` until `cancel` fires.
    pub async fn run(mut self, interval: Duration, cancel: CancellationToken) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "runtimes not listed; engines looked at again at the next tick");
            }
        }
    }
}

/// Step 2 for one engine; `None` when the runtime cannot say (logged).
async fn look<E: EngineDriver>(engine: &E, runtime: &Runtime) -> Option<Look> {
    let state = match engine.inspect(&runtime.container_id).await {
        Ok(state) => state,
        Err(e) => {
            tracing::warn!(game_id = %runtime.game_id, container_id = %runtime.container_id, error = %e, "engine not inspected");
            return None;
        }
    };
    let probe_ok = if state.is_over() {
        None
    } else {
        Some(engine.probe(&runtime.engine_endpoint).await)
    };
    Some(Look::seen(state, probe_ok))
}

/// The wall clock, in ms since the epoch (always positive).
fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX).max(1)
}

#[cfg(test)]
mod tests;
