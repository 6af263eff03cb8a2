//! Driving every game: one task per game plays its script, in order, through the real
//! publisher (health events) and the Game Master's own record store (direct flows). Each
//! direct flow then publishes on the lobby events stream, through the Game Master's own
//! publisher ([`adapters_redis::RedisLobbyEventsPublisher`]), what the real flow would: a
//! `runtime_snapshot_update` carrying the row as stored after the change (with the
//! players' stats when a turn was generated), or a `game_finished` with the final stats.
//!
//! Why the prediction is exact: the Game Master applies a game's health events in stream
//! order, and the only other writer of the game's status is this task. Before it changes
//! the status directly, the task waits until the Game Master's stored offset has passed
//! the last entry the task appended for the game (the offset is saved only after the batch
//! is committed), so every event published before the change has been applied, and every
//! event published after it is appended after the change is committed. Per game, the
//! database therefore sees exactly the sequence the model sees: events in publish order
//! and flows in between, each at the position it was made.
//!
//! The same serialisation orders the game's lobby events. The Game Master publishes a
//! health event's snapshot before it saves the offset past the event, so a flow's event is
//! appended after the snapshots of every earlier health event of the game and before
//! those of every later one, and it is stamped later than the first and earlier than the
//! second (one machine, one clock). The Lobby, which keeps the newest snapshot by
//! `occurred_at_ms`, therefore ends on the row as it was last written.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adapters_postgres::PgRuntimeRecordStore;
use adapters_redis::RedisLobbyEventsPublisher;
use anyhow::{Context, bail};
use domain_runtime::{EngineHealth, GameId, HealthState, RuntimeRecord, RuntimeStatus, Transition};
use pg_kit::Pool;
use ports::{LobbyEvent, LobbyEventsPublisher, RuntimeRecordStore, RuntimeSnapshot, UpdateStatus};
use rtm_adapters::{PgHealthSnapshotStore, RtmHealthEventPublisher};
use rtm_domain::HealthEventEnvelope;
use rtm_ports::HealthEventPublisher;
use stream_consumer::EntryId;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::gm::Progress;
use crate::model::{GameModel, generates_turn};
use crate::pacer::Pacer;
use crate::players::Roster;
use crate::script::{Action, FlowKind, GameScript};

/// Running totals for the live status line.
#[derive(Debug, Default)]
pub struct Counters {
    /// Health events published.
    pub published: AtomicU64,
    /// Direct flows applied, by [`FlowKind::ALL`] position.
    pub flows: [AtomicU64; FlowKind::ALL.len()],
    /// `runtime_snapshot_update`s the direct flows (and the registration) published.
    pub lobby_snapshots: AtomicU64,
    /// `game_finished` events the direct flows published.
    pub lobby_finished: AtomicU64,
}

impl Counters {
    /// Direct flows applied so far, all kinds.
    #[must_use]
    pub fn flows_total(&self) -> u64 {
        self.flows.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Lobby events the simulator published for the Game Master's other flows so far.
    #[must_use]
    pub fn lobby_events_total(&self) -> u64 {
        self.lobby_snapshots.load(Ordering::Relaxed) + self.lobby_finished.load(Ordering::Relaxed)
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
    /// The Game Master's database, for the one write its ports do not offer yet: moving
    /// the current turn on when a turn is generated.
    pub pool: Pool,
    /// The Game Master's lobby events publisher, for what the direct flows publish.
    pub lobby_events: RedisLobbyEventsPublisher,
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

/// What a flow that found the record elsewhere than the model has it reports: the model's
/// state, the record's (when it was read), and what noticed it.
fn divergence(
    game_id: &GameId,
    model: &GameModel,
    actual: Option<Stored>,
    noticed: String,
) -> Divergence {
    Divergence {
        game_id: game_id.clone(),
        expected: model.state(),
        actual: actual.map(|a| {
            (
                a.status.to_string(),
                EngineHealth::wire(a.engine_health).to_owned(),
            )
        }),
        turns: actual
            .filter(|a| a.current_turn != model.current_turn())
            .map(|a| (model.current_turn(), a.current_turn)),
        noticed: Some(noticed),
    }
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
    /// `(model, stored)` current turns, when they differ.
    pub turns: Option<(u32, u32)>,
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
    /// Its players, as the last turn left them.
    pub roster: Roster,
    /// The last health event appended for the game.
    pub last_appended: Option<EntryId>,
    /// Found during the run.
    pub divergence: Option<Divergence>,
}

/// The part of a runtime record a lobby event carries, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Runtime status.
    pub status: RuntimeStatus,
    /// Engine-health summary.
    pub engine_health: Option<EngineHealth>,
    /// Current turn.
    pub current_turn: u32,
}

impl From<RuntimeRecord> for Stored {
    fn from(r: RuntimeRecord) -> Self {
        Self {
            status: r.status,
            engine_health: r.engine_health,
            current_turn: r.current_turn,
        }
    }
}

/// Moves a running game's turn on, after the turn-generation flow's compare-and-swap.
const NEXT_TURN: &str = "UPDATE runtime_records SET current_turn = current_turn + 1, updated_at = now() \
     WHERE game_id = $1 AND status = 'running' RETURNING status, engine_health, current_turn";

/// Milliseconds since the Unix epoch (the clock the Game Master stamps its events with).
#[must_use]
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The lobby event snapshot of `record`, stamped now.
#[must_use]
pub fn snapshot(
    game_id: &GameId,
    record: Stored,
    player_turn_stats: Vec<ports::PlayerTurnStats>,
    at_ms: i64,
) -> RuntimeSnapshot {
    RuntimeSnapshot {
        game_id: game_id.clone(),
        current_turn: record.current_turn,
        runtime_status: record.status,
        engine_health: record.engine_health,
        occurred_at_ms: u64::try_from(at_ms).unwrap_or(1),
        player_turn_stats,
        // The Game Master's other flows reflect no health entry.
        source_entry_id: None,
    }
}

impl Fleet {
    /// Waits until the Game Master's offset reaches `id`. `Ok(false)` when publishing
    /// ended first.
    async fn consumed(&self, game_id: &GameId, id: EntryId) -> anyhow::Result<bool> {
        tokio::select! {
            () = self.stop.cancelled() => Ok(false),
            r = self.wait_consumed(game_id, id) => r.map(|()| true),
        }
    }

    /// Waits until the Game Master's offset reaches `id`, at most the drain timeout.
    ///
    /// # Errors
    /// The Game Master did not get there in time, or the offset watcher stopped.
    pub async fn wait_consumed(&self, game_id: &GameId, id: EntryId) -> anyhow::Result<()> {
        let mut offset = self.gm_offset.clone();
        let reached = tokio::time::timeout(self.drain_timeout, offset.wait_for(|o| *o >= id)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => bail!("the offset watcher stopped"),
            Err(_) => bail!(
                "the Game Master did not consume game {game_id}'s events up to entry {id} within {:?} \
                 (its offset is {}); is it running on this Redis and stream?",
                self.drain_timeout,
                *self.gm_offset.borrow()
            ),
        }
    }

    /// Moves the game's turn on in the Game Master's table; `None` when the record is not
    /// `running` (it always is, straight after the turn-generation flow).
    async fn next_turn(&self, game_id: &GameId) -> anyhow::Result<Option<Stored>> {
        let client = self
            .pool
            .get()
            .await
            .context("generate a turn: no connection")?;
        let Some(row) = client
            .query_opt(NEXT_TURN, &[&game_id.as_str()])
            .await
            .with_context(|| format!("generate a turn for game {game_id}"))?
        else {
            return Ok(None);
        };
        let status: String = row.try_get(0)?;
        let health: String = row.try_get(1)?;
        let turn: i32 = row.try_get(2)?;
        Ok(Some(Stored {
            status: status
                .parse()
                .with_context(|| format!("game {game_id}: stored status {status:?}"))?,
            engine_health: EngineHealth::parse_stored(&health)
                .with_context(|| format!("game {game_id}: stored engine health {health:?}"))?,
            current_turn: u32::try_from(turn)
                .with_context(|| format!("game {game_id}: stored turn {turn}"))?,
        }))
    }

    /// Plays one direct flow on a game whose earlier health events the Game Master has
    /// consumed: the compare-and-swap through the Game Master's store (and the turn, when
    /// one is generated), then the lobby event the real flow publishes. Returns the
    /// divergence when the record was not where the model has it.
    ///
    /// # Errors
    /// The store or the publisher failed.
    pub async fn flow(
        &self,
        game_id: &GameId,
        kind: FlowKind,
        transition: Transition,
        model: &mut GameModel,
        roster: &mut Roster,
    ) -> anyhow::Result<Option<Divergence>> {
        let diverged = |model: &GameModel, actual: Option<Stored>, noticed: String| {
            divergence(game_id, model, actual, noticed)
        };
        let update = UpdateStatus::new(game_id.clone(), transition.from(), transition.to(), None)?;
        let mut record = match self.records.update_status(&update).await {
            Ok(record) => Stored::from(record),
            Err(ports::Error::Conflict { actual, .. }) => {
                let mut d = diverged(model, None, format!("{} found it {actual}", kind.label()));
                d.actual = Some((actual.to_string(), "?".to_owned()));
                return Ok(Some(d));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("{} ({transition}) for game {game_id}", kind.label())
                });
            }
        };
        if generates_turn(transition) {
            match self.next_turn(game_id).await? {
                Some(stored) => record = stored,
                None => {
                    return Ok(Some(diverged(
                        model,
                        None,
                        format!("{}: the record was no longer running", kind.label()),
                    )));
                }
            }
        }
        model.apply_flow(transition)?;
        self.counters.flow(kind);
        let expected = model.state();
        if record.status != expected.status
            || record.engine_health != expected.engine_health
            || record.current_turn != model.current_turn()
        {
            return Ok(Some(diverged(
                model,
                Some(record),
                format!("after {}", kind.label()),
            )));
        }

        self.publish_flow(game_id, kind, transition, record, model, roster)
            .await?;
        Ok(None)
    }

    /// The end of a direct flow: what the real flow publishes for the Lobby (a snapshot
    /// of the record, with the players' stats when a turn was generated or the game
    /// finished; `game_finished` for a finish), counted.
    async fn publish_flow(
        &self,
        game_id: &GameId,
        kind: FlowKind,
        transition: Transition,
        record: Stored,
        model: &mut GameModel,
        roster: &mut Roster,
    ) -> anyhow::Result<()> {
        let finished = transition.to() == RuntimeStatus::Finished;
        let stats = if generates_turn(transition) {
            roster.play_turn()
        } else if finished {
            roster.current()
        } else {
            Vec::new()
        };
        model
            .observe_stats(&stats)
            .with_context(|| format!("stats of game {game_id}"))?;
        let at_ms = now_ms();
        let snapshot = snapshot(game_id, record, stats, at_ms);
        let event = if finished {
            model.finish(at_ms);
            LobbyEvent::GameFinished {
                snapshot,
                finished_at_ms: u64::try_from(at_ms).unwrap_or(1),
            }
        } else {
            LobbyEvent::SnapshotUpdate(snapshot)
        };
        self.lobby_events
            .publish(std::slice::from_ref(&event))
            .await
            .with_context(|| format!("publish the {} event of game {game_id}", kind.label()))?;
        if finished {
            self.counters.lobby_finished.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters
                .lobby_snapshots
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
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
        mut roster: Roster,
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
                    divergence = self
                        .flow(&game_id, kind, transition, &mut model, &mut roster)
                        .await?;
                    if divergence.is_some() {
                        break;
                    }
                }
            }
        }
        Ok(GameRun {
            game_id,
            model,
            roster,
            last_appended,
            divergence,
        })
    }
}
