//! Driving every game: one task per game plays its script, in order, through the real
//! publisher (health events) and the Game Master's own record store (direct flows).
//!
//! Why the prediction is exact: the Game Master applies a game's health events in stream
//! order, and the only other writer of the game's status is this task. Before it changes
//! the status directly, the task waits until the Game Master's stored offset has passed
//! the last entry the task appended for the game (the offset is saved only after the batch
//! is committed), so every event published before the change has been applied, and every
//! event published after it is appended after the change is committed. Per game, the
//! database therefore sees exactly the sequence the model sees: events in publish order
//! and flows in between, each at the position it was made.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adapters_postgres::PgRuntimeRecordStore;
use anyhow::{Context, bail};
use domain_runtime::{EngineHealth, GameId, HealthState};
use ports::{RuntimeRecordStore, UpdateStatus};
use rtm_adapters::{PgHealthSnapshotStore, RtmHealthEventPublisher};
use rtm_domain::HealthEventEnvelope;
use rtm_ports::HealthEventPublisher;
use stream_consumer::EntryId;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::gm::Progress;
use crate::model::GameModel;
use crate::pacer::Pacer;
use crate::script::{Action, FlowKind, GameScript};

/// Running totals for the live status line.
#[derive(Debug, Default)]
pub struct Counters {
    /// Health events published.
    pub published: AtomicU64,
    /// Direct flows applied, by [`FlowKind::ALL`] position.
    pub flows: [AtomicU64; FlowKind::ALL.len()],
}

impl Counters {
    /// Direct flows applied so far, all kinds.
    #[must_use]
    pub fn flows_total(&self) -> u64 {
        self.flows.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn flow(&self, kind: FlowKind) {
        if let Some(i) = FlowKind::ALL.iter().position(|k| *k == kind) {
            self.flows[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What every game task shares.
#[derive(Debug)]
pub struct Fleet {
    /// The Runtime Manager's publisher: snapshot upsert, then XADD.
    pub publisher: RtmHealthEventPublisher<PgHealthSnapshotStore>,
    /// The Game Master's runtime records (for the direct flows).
    pub records: PgRuntimeRecordStore,
    /// Turns for health events.
    pub pacer: Pacer,
    /// The Game Master's offset, as last read.
    pub gm_offset: watch::Receiver<EntryId>,
    /// Newest appended entry and lag.
    pub progress: Arc<Progress>,
    /// Totals for the status line.
    pub counters: Counters,
    /// Cancelled when publishing ends (time is up, a signal, or a fatal error).
    pub stop: CancellationToken,
    /// Longest wait for the Game Master to consume a game's events.
    pub drain_timeout: Duration,
}

/// A game found in a state the model cannot have produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// The game.
    pub game_id: GameId,
    /// What the model predicts.
    pub expected: HealthState,
    /// `(status, engine_health)` as stored; `None` when the row is missing.
    pub actual: Option<(String, String)>,
    /// When it was noticed, if before the final comparison.
    pub noticed: Option<String>,
}

/// One game's run: its model at the end and, if a direct flow already found the record
/// out of step, that divergence.
#[derive(Debug)]
pub struct GameRun {
    /// The game.
    pub game_id: GameId,
    /// The oracle for it.
    pub model: GameModel,
    /// Found during the run.
    pub divergence: Option<Divergence>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Fleet {
    /// Waits until the Game Master's offset reaches `id`. `Ok(false)` when publishing
    /// ended first.
    async fn consumed(&self, game_id: &GameId, id: EntryId) -> anyhow::Result<bool> {
        let mut offset = self.gm_offset.clone();
        let reached = tokio::select! {
            () = self.stop.cancelled() => return Ok(false),
            r = tokio::time::timeout(self.drain_timeout, offset.wait_for(|o| *o >= id)) => r,
        };
        match reached {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(_)) => bail!("the offset watcher stopped"),
            Err(_) => bail!(
                "the Game Master did not consume game {game_id}'s events up to entry {id} within {:?} \
                 (its offset is {}); is it running on this Redis and stream?",
                self.drain_timeout,
                *self.gm_offset.borrow()
            ),
        }
    }

    /// Plays one game until publishing ends. A failure to publish or to reach the store
    /// is fatal for the whole run (an append that may or may not have happened would make
    /// the model guess).
    ///
    /// # Errors
    /// The publisher or the store failed, or the Game Master did not keep up within the
    /// drain timeout.
    pub async fn drive(
        &self,
        game_id: GameId,
        mut script: GameScript,
        mut model: GameModel,
    ) -> anyhow::Result<GameRun> {
        let mut last_appended: Option<EntryId> = None;
        let mut divergence = None;
        loop {
            match script.next(model.status()) {
                Action::Observe(observation) => {
                    if !self.pacer.turn().await {
                        break;
                    }
                    let envelope = HealthEventEnvelope::new(
                        game_id.as_str(),
                        observation.container_id,
                        observation.event_type,
                        now_ms(),
                        observation.details.as_deref(),
                    )
                    .with_context(|| format!("build a health event for game {game_id}"))?;
                    let id =
                        self.publisher.publish(&envelope).await.with_context(|| {
                            format!("publish a health event for game {game_id}")
                        })?;
                    model.observe(observation.event_type);
                    last_appended = Some(id);
                    self.progress.appended(id);
                    self.counters.published.fetch_add(1, Ordering::Relaxed);
                }
                Action::Flow(kind, transition) => {
                    if self.pacer.is_over() {
                        break;
                    }
                    if let Some(id) = last_appended
                        && !self.consumed(&game_id, id).await?
                    {
                        break;
                    }
                    let update = UpdateStatus::new(
                        game_id.clone(),
                        transition.from(),
                        transition.to(),
                        None,
                    )?;
                    match self.records.update_status(&update).await {
                        Ok(record) => {
                            model.apply_flow(transition)?;
                            self.counters.flow(kind);
                            if record.engine_health != model.state().engine_health {
                                divergence = Some(Divergence {
                                    game_id: game_id.clone(),
                                    expected: model.state(),
                                    actual: Some((
                                        record.status.to_string(),
                                        EngineHealth::wire(record.engine_health).to_owned(),
                                    )),
                                    noticed: Some(format!("after {}", kind.label())),
                                });
                                break;
                            }
                        }
                        Err(ports::Error::Conflict { actual, .. }) => {
                            divergence = Some(Divergence {
                                game_id: game_id.clone(),
                                expected: model.state(),
                                actual: Some((actual.to_string(), "?".to_owned())),
                                noticed: Some(format!("{} found it {actual}", kind.label())),
                            });
                            break;
                        }
                        Err(e) => {
                            return Err(e).with_context(|| {
                                format!("{} ({transition}) for game {game_id}", kind.label())
                            });
                        }
                    }
                }
            }
        }
        Ok(GameRun {
            game_id,
            model,
            divergence,
        })
    }
}
