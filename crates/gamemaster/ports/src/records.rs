//! The runtime record store.

use async_trait::async_trait;
use domain_runtime::{
    EngineHealth, EntryPosition, GameId, HealthPlan, Ownership, RuntimeRecord, RuntimeStatus,
    ShardClaim, ShardCount, ShardMark, Transition, transition,
};

use crate::Error;

/// A new runtime to register (`INSERT` with every other column defaulted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRuntime {
    /// The game.
    pub game_id: GameId,
    /// Its first status.
    pub status: RuntimeStatus,
    /// Its current turn.
    pub current_turn: u32,
}

/// A compare-and-swap status update, optionally writing the engine-health summary in the
/// same statement. The transition was checked against the table when this was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateStatus {
    /// The game.
    pub game_id: GameId,
    /// The checked `expected → new` pair.
    pub transition: Transition,
    /// Summary written with the status, when given.
    pub engine_health: Option<EngineHealth>,
}

impl UpdateStatus {
    /// Checks `from → to` against the transition table.
    ///
    /// # Errors
    /// [`Error::InvalidTransition`] for a self-transition or an undeclared pair.
    pub fn new(
        game_id: GameId,
        from: RuntimeStatus,
        to: RuntimeStatus,
        engine_health: Option<EngineHealth>,
    ) -> Result<Self, Error> {
        Ok(Self {
            game_id,
            transition: transition(from, to)?,
            engine_health,
        })
    }
}

/// A health-only update: writes the summary whatever the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateEngineHealth {
    /// The game.
    pub game_id: GameId,
    /// The summary to write.
    pub engine_health: EngineHealth,
}

/// One decoded health event to apply: the game, the plan its event type maps to, and the
/// entry it came from with its shard (whose checkpoint the write moves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthObservation {
    /// The game.
    pub game_id: GameId,
    /// Summary plus optional CAS (from `domain_runtime::PLANS`).
    pub plan: HealthPlan,
    /// The `runtime:health_events` entry.
    pub entry: EntryPosition,
    /// The game's shard.
    pub shard: u32,
}

/// What applying one observation of a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObservationResult {
    /// Written; `record` is the row as stored right after this observation (later
    /// observations of the same batch are not yet in it).
    Applied {
        /// The record after this observation.
        record: RuntimeRecord,
        /// The transition taken, when the compare-and-swap succeeded.
        transitioned: Option<Transition>,
        /// Whether it publishes a snapshot: its summary was news (see
        /// [`RuntimeRecordStore::apply_health_batch`]) or its transition was taken. The
        /// store kept the snapshot with the shard in the same transaction, until the
        /// shard's published mark passes it.
        publishes: bool,
    },
    /// No runtime record exists for the game; nothing was written.
    UnknownGame,
}

/// The Game Master's runtime records.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait RuntimeRecordStore: Send + Sync {
    /// One record.
    ///
    /// # Errors
    /// [`Error::NotFound`], or a store failure.
    async fn get(&self, game_id: &GameId) -> Result<RuntimeRecord, Error>;

    /// Registers a new runtime.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], or a store failure.
    async fn register(&self, new: &NewRuntime) -> Result<RuntimeRecord, Error>;

    /// Compare-and-swap of the status (plus the summary when given); sets `updated_at`.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Conflict`] when the record is not in the expected
    /// status, or a store failure.
    async fn update_status(&self, update: &UpdateStatus) -> Result<RuntimeRecord, Error>;

    /// Several records at once (one round trip); games with no record are left out.
    ///
    /// # Errors
    /// A store failure.
    async fn get_many(&self, game_ids: &[GameId]) -> Result<Vec<RuntimeRecord>, Error>;

    /// Applies a batch of observations in one transaction. For each observation, in
    /// order: with a planned transition whose source is the status the record holds at
    /// that point (after the batch's earlier observations), move the status and write the
    /// summary; otherwise write the summary alone. `news` says, per observation, whether
    /// its summary is news to the Lobby (it differs from the last one published for the
    /// game): such an observation publishes a snapshot, as does one whose transition is
    /// taken. In the same transaction, each shard of the batch must still hold the epoch
    /// `owner` claimed it under; its checkpoint moves to the batch's last entry of that
    /// shard and its published mark to `owner`'s mark on it. The snapshots of the
    /// observations that publish are kept too, tagged with `owner`'s next publish number,
    /// until a later write of this store names that publish as gone out (or, once this
    /// store is gone, until every mark of their shards has passed them), so that whoever
    /// owns a shard next can republish them exactly ([`RuntimeRecordStore::unpublished`]).
    /// Returns one result per observation, in the same order. Either the whole batch is
    /// written or none of it.
    ///
    /// # Errors
    /// [`Error::Fenced`] when a shard of the batch is not owned, or was claimed since by
    /// another instance; a store failure. Either way nothing was written.
    async fn apply_health_batch(
        &self,
        observations: &[HealthObservation],
        news: &[bool],
        owner: &Ownership,
    ) -> Result<Vec<ObservationResult>, Error>;

    /// Claims `shards` for `instance` in a layout of `count` shards: each one's epoch rises
    /// (fencing whichever instance held it), and its checkpoint is read in the same
    /// statement; the claims come back in shard order. The first claim on a database sets
    /// its layout.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the database was laid out with another shard count (or a
    /// shard is outside the layout); a store failure.
    async fn claim_shards(
        &self,
        instance: &str,
        count: ShardCount,
        shards: &[u32],
    ) -> Result<Vec<ShardClaim>, Error>;

    /// Each of `shards`' epoch and checkpoint as the database holds them now, in shard
    /// order.
    ///
    /// # Errors
    /// A store failure.
    async fn read_shards(&self, shards: &[u32]) -> Result<Vec<ShardClaim>, Error>;

    /// Moves the checkpoint of each of `shards` (with the epoch it is held under) up to
    /// `through`, where it is lower or unset: the caller has seen every entry up to there
    /// and applied those of these shards, so a shard with no recent entries does not hold
    /// a later owner's reading far back. Each one's published mark moves up to the one
    /// given (the caller's snapshots of it are out through there). Snapshots kept by
    /// stores gone whose every shard's mark has passed them are deleted. A shard held
    /// under another epoch is left alone and returned (it was claimed by another
    /// instance).
    ///
    /// # Errors
    /// A store failure (then nothing moved).
    async fn advance_checkpoints(
        &self,
        shards: &[ShardMark],
        through: EntryPosition,
    ) -> Result<Vec<u32>, Error>;

    /// The snapshots kept of `shards` after their published marks, whoever wrote them:
    /// those whose publication is not known to have happened (their writer may have
    /// stopped between its commit and its publish), in entry order. Each carries the game's current turn
    /// as stored now, and no publication time (`occurred_at_ms` is 0).
    ///
    /// # Errors
    /// A store failure.
    async fn unpublished(&self, shards: &[u32]) -> Result<Vec<crate::RuntimeSnapshot>, Error>;

    /// Every game's engine-health summary as stored (`None` before the first
    /// observation): what a new owner of a shard takes as published.
    ///
    /// # Errors
    /// A store failure.
    async fn summaries(&self) -> Result<Vec<(GameId, Option<EngineHealth>)>, Error>;

    /// Writes the summary alone, whatever the status; sets `updated_at`.
    ///
    /// # Errors
    /// [`Error::NotFound`], or a store failure.
    async fn update_engine_health(
        &self,
        update: &UpdateEngineHealth,
    ) -> Result<RuntimeRecord, Error>;
}
