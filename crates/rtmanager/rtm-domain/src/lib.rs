//! Runtime Manager domain: the vocabulary of the two Runtime Manager workers this project
//! builds, as pure data and pure functions.
//!
//! - The health publisher (SPEC §RTM, seed 003) takes a [`HealthEventEnvelope`] (the
//!   contract's entry, validated on construction), upserts the [`HealthSnapshot`] that
//!   [`snapshot_mapping`] derives from it, and then appends the envelope's
//!   [`wire_fields`](HealthEventEnvelope::wire_fields) to `runtime:health_events`.
//! - The stop-jobs consumer (seed 004) decodes a [`StopJob`] from `runtime:stop_jobs`, asks
//!   the stop orchestrator to act on the game's [`Runtime`] as [`stop_plan`] says (a table
//!   over its [`RegistryStatus`]), and publishes one [`JobResult`] on `runtime:job_results`
//!   (both contracts are the `contracts` crate's, re-exported here).
//!
//! - The supervisor looks at each running engine periodically and publishes the
//!   [`events`] a [`Look`] gives after the one before (a pure table).
//!
//! The health event types are the Game Master's own [`HealthEventType`], re-exported: both
//! ends of `runtime:health_events` share one definition, so they cannot drift. Nothing here
//! does I/O; the adapters and workers that do live in other crates.

mod observe;
mod registry;
mod snapshot;

pub use contracts::health_events::{
    EMPTY_DETAILS, HealthEventEnvelope, InvalidHealthEvent, MAX_CONTAINER_ID_LEN,
};
pub use contracts::job_results::fields as job_result_fields;
pub use contracts::stop_jobs::fields as stop_job_fields;
pub use contracts::{
    ERROR_CODE_REPLAY_NO_OP, InvalidStopJob, JobOutcome, JobResult, StopJob, StopReason,
    UnknownJobOutcome, UnknownStopReason,
};
pub use contracts::{GameId, HealthEventType, InvalidGameId, UnknownEventType};
pub use observe::{EngineState, Look, events};
pub use registry::{
    ERROR_CODE_NOT_FOUND, OperationSource, Origin, RegistryStatus, Runtime, STOP_PLANS,
    StopDecision, StopPlan, UnknownOperationSource, UnknownRegistryStatus, decide_stop, stop_plan,
};
pub use snapshot::{
    HealthSnapshot, SNAPSHOT_MAPPINGS, SnapshotMapping, SnapshotSource, SnapshotStatus,
    UnknownSnapshotSource, UnknownSnapshotStatus, snapshot_mapping,
};

/// Wire field names of `runtime:health_events`.
pub use contracts::health_events::fields as health_event_fields;
