//! The runtime registry's vocabulary and the stop orchestrator's decision (seed 004): what
//! a stop job does, as a table over the runtime's status.

use contracts::{GameId, JobResult};

contracts::wire_enum! {
    /// Where a runtime the Runtime Manager started stands, as stored in
    /// `runtimes.status`.
    pub enum RegistryStatus / UnknownRegistryStatus("runtime status") {
        /// Its engine runs (or should: the supervisor reports when it does not).
        Running = "running",
        /// Its engine was stopped on request.
        Stopped = "stopped",
        /// Its engine and everything it held are gone.
        Removed = "removed",
    }
}

contracts::wire_enum! {
    /// Who asked for an operation, as stored in `operation_log.source`.
    pub enum OperationSource / UnknownOperationSource("operation source") {
        /// A job on `runtime:stop_jobs` (the source reference is its entry id).
        LobbyStream = "lobby_stream",
        /// An operator's command.
        Admin = "admin",
    }
}

/// Who asked for an operation: the source, and its reference there (a stop job's entry
/// id; an operator's own reference). The operation log holds one operation per origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Who asked.
    pub source: OperationSource,
    /// Their reference for the request.
    pub reference: String,
}

impl Origin {
    /// A job on `runtime:stop_jobs`, known by its entry id.
    #[must_use]
    pub fn stop_job(entry_id: &impl ToString) -> Self {
        Self {
            source: OperationSource::LobbyStream,
            reference: entry_id.to_string(),
        }
    }

    /// An operator's request, known by `reference`.
    #[must_use]
    pub fn admin(reference: impl Into<String>) -> Self {
        Self {
            source: OperationSource::Admin,
            reference: reference.into(),
        }
    }
}

/// One row of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// The game.
    pub game_id: GameId,
    /// Where it stands.
    pub status: RegistryStatus,
    /// The engine's id in its container runtime.
    pub container_id: String,
    /// Where the engine answers.
    pub engine_endpoint: String,
}

/// What a stop job does to a runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopPlan {
    /// Stop the engine, then move the record `running → stopped`: `success`.
    StopEngine,
    /// Nothing to do, the runtime is already stopped or removed (also a replayed job):
    /// `success` with `replay_no_op`.
    ReplayNoOp,
    /// No runtime for the game: `failure` with [`ERROR_CODE_NOT_FOUND`].
    NotFound,
}

/// The error code of a stop job for a game the Runtime Manager has no runtime for.
pub const ERROR_CODE_NOT_FOUND: &str = "not_found";

/// The stop plan of each registry status, as data: one row per status, in declaration
/// order (checked below).
pub const STOP_PLANS: [(RegistryStatus, StopPlan); RegistryStatus::ALL.len()] = [
    (RegistryStatus::Running, StopPlan::StopEngine),
    (RegistryStatus::Stopped, StopPlan::ReplayNoOp),
    (RegistryStatus::Removed, StopPlan::ReplayNoOp),
];

const _: () = {
    let mut i = 0;
    while i < STOP_PLANS.len() {
        assert!(
            STOP_PLANS[i].0 as usize == i,
            "STOP_PLANS rows must follow RegistryStatus's declaration order"
        );
        i += 1;
    }
};

/// What a stop job does to `runtime` (`None`: the game has none).
#[must_use]
pub fn stop_plan(runtime: Option<&Runtime>) -> StopPlan {
    runtime.map_or(StopPlan::NotFound, |r| STOP_PLANS[r.status as usize].1)
}

/// What the stop orchestrator does for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopDecision {
    /// Stop this runtime's engine; the result depends on the engine.
    StopEngine(Runtime),
    /// Answer this, touching no engine: a replay, or an unknown game.
    Answer(JobResult),
}

/// The decision for a stop job about `game_id`, whose runtime is `runtime` (`None`: it
/// has none), as [`stop_plan`] says.
#[must_use]
pub fn decide_stop(game_id: &GameId, runtime: Option<Runtime>) -> StopDecision {
    match (stop_plan(runtime.as_ref()), runtime) {
        (StopPlan::StopEngine, Some(r)) => StopDecision::StopEngine(r),
        (StopPlan::ReplayNoOp, Some(r)) => StopDecision::Answer(JobResult::replay_no_op(
            game_id.clone(),
            r.container_id,
            r.engine_endpoint,
            format!("runtime already {}", r.status),
        )),
        _ => StopDecision::Answer(JobResult::failure(
            game_id.clone(),
            ERROR_CODE_NOT_FOUND,
            format!("no runtime for game '{game_id}'"),
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn runtime(status: RegistryStatus) -> Runtime {
        Runtime {
            game_id: GameId::new("g").unwrap(),
            status,
            container_id: "c-1".into(),
            engine_endpoint: "http://127.0.0.1:9000".into(),
        }
    }

    #[test]
    fn every_status_has_the_seed_s_plan() {
        let expected = [
            (Some(RegistryStatus::Running), StopPlan::StopEngine),
            (Some(RegistryStatus::Stopped), StopPlan::ReplayNoOp),
            (Some(RegistryStatus::Removed), StopPlan::ReplayNoOp),
            (None, StopPlan::NotFound),
        ];
        for (status, plan) in expected {
            let r = status.map(runtime);
            assert_eq!(stop_plan(r.as_ref()), plan, "{status:?}");
        }
    }

    #[test]
    fn decisions_are_the_contract_s() {
        let game = GameId::new("g").unwrap();
        let StopDecision::Answer(replay) =
            decide_stop(&game, Some(runtime(RegistryStatus::Stopped)))
        else {
            panic!("a stopped runtime is answered without its engine");
        };
        assert!(replay.is_replay_no_op());
        assert_eq!(replay.container_id, "c-1");
        assert_eq!(replay.error_message, "runtime already stopped");
        let StopDecision::Answer(missing) = decide_stop(&game, None) else {
            panic!("no runtime is answered without an engine");
        };
        assert_eq!(missing.error_code, ERROR_CODE_NOT_FOUND);
        assert_eq!(missing.outcome, contracts::JobOutcome::Failure);
        let running = runtime(RegistryStatus::Running);
        assert_eq!(
            decide_stop(&game, Some(running.clone())),
            StopDecision::StopEngine(running)
        );
    }
}
