//! What the supervisor publishes: the health events one look at an engine gives, as a pure
//! function of what it saw last time and what it sees now.

use contracts::HealthEventType;

use crate::snapshot::SnapshotStatus;

/// What the container runtime says of an engine (one inspection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngineState {
    /// It runs.
    Running,
    /// It exists but is not running as it should: stopped by a signal (SIGSTOP), or
    /// reported unhealthy by the runtime's inspection.
    Unhealthy,
    /// It exited on its own.
    Exited,
    /// It was killed for going over its memory limit.
    OutOfMemory,
    /// It was stopped on request (a stop job): not an event.
    Stopped,
    /// It is not there, and nothing says how it went.
    Gone,
}

impl EngineState {
    /// Whether the engine is over: it will not come back under this container id.
    #[must_use]
    pub const fn is_over(self) -> bool {
        matches!(
            self,
            Self::Exited | Self::OutOfMemory | Self::Stopped | Self::Gone
        )
    }
}

/// One look at an engine: its state, and whether it answered its probe (`None` when it
/// was not probed: it is over).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Look {
    /// What the runtime says.
    pub state: EngineState,
    /// Whether its HTTP probe answered.
    pub probe_ok: Option<bool>,
    /// Whether this supervisor saw it (`false`: it is what the last published snapshot
    /// says, read back after a restart; an engine gone since was not seen going).
    pub seen: bool,
}

impl Look {
    /// A look this supervisor took.
    #[must_use]
    pub const fn seen(state: EngineState, probe_ok: Option<bool>) -> Self {
        Self {
            state,
            probe_ok,
            seen: true,
        }
    }

    /// What a published snapshot says of its engine, as a look not taken here.
    #[must_use]
    pub const fn recorded(status: SnapshotStatus) -> Self {
        let (state, probe_ok) = match status {
            SnapshotStatus::Healthy => (EngineState::Running, Some(true)),
            SnapshotStatus::ProbeFailed => (EngineState::Running, Some(false)),
            SnapshotStatus::InspectUnhealthy => (EngineState::Unhealthy, Some(false)),
            SnapshotStatus::Exited => (EngineState::Exited, None),
            SnapshotStatus::Oom => (EngineState::OutOfMemory, None),
            SnapshotStatus::ContainerDisappeared => (EngineState::Gone, None),
        };
        Self {
            state,
            probe_ok,
            seen: false,
        }
    }
}

/// The event of an engine found over, by how it went, and whether the supervisor saw it
/// alive before (`false`: the first look, or the first after a restart).
const ENDINGS: [(EngineState, bool, Option<HealthEventType>); 8] = [
    (
        EngineState::Exited,
        true,
        Some(HealthEventType::ContainerExited),
    ),
    (
        EngineState::Exited,
        false,
        Some(HealthEventType::ContainerExited),
    ),
    (
        EngineState::OutOfMemory,
        true,
        Some(HealthEventType::ContainerOom),
    ),
    (
        EngineState::OutOfMemory,
        false,
        Some(HealthEventType::ContainerOom),
    ),
    // Asked to stop: the stop job's result says so; no health event.
    (EngineState::Stopped, true, None),
    (EngineState::Stopped, false, None),
    // Seen going: it exited, though the runtime cannot say how (not its child).
    (
        EngineState::Gone,
        true,
        Some(HealthEventType::ContainerExited),
    ),
    // Never seen alive and not there: it disappeared.
    (
        EngineState::Gone,
        false,
        Some(HealthEventType::ContainerDisappeared),
    ),
];

/// The events `now` gives after `before` (`None`: the first look at this engine, with no
/// snapshot published of it). An engine over is reported once; later looks give nothing.
#[must_use]
pub fn events(before: Option<Look>, now: Look) -> Vec<HealthEventType> {
    if before.is_some_and(|b| b.state.is_over()) {
        return Vec::new();
    }
    if now.state.is_over() {
        let seen_alive = before.is_some_and(|b| b.seen);
        return ENDINGS
            .iter()
            .find(|(state, alive, _)| *state == now.state && *alive == seen_alive)
            .and_then(|(_, _, event)| *event)
            .into_iter()
            .collect();
    }
    let mut out = Vec::new();
    let was_unhealthy = before.is_some_and(|b| b.state == EngineState::Unhealthy);
    if now.state == EngineState::Unhealthy && !was_unhealthy {
        out.push(HealthEventType::InspectUnhealthy);
    }
    let probe_before = before.and_then(|b| b.probe_ok).unwrap_or(true);
    match (probe_before, now.probe_ok) {
        (true, Some(false)) => out.push(HealthEventType::ProbeFailed),
        (false, Some(true)) => out.push(HealthEventType::ProbeRecovered),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use EngineState as S;
    use HealthEventType as E;

    fn look(state: EngineState, probe_ok: Option<bool>) -> Look {
        Look::seen(state, probe_ok)
    }

    #[test]
    fn every_change_gives_the_event_issue_13_names() {
        let healthy = look(S::Running, Some(true));
        let cases = [
            (None, healthy, vec![]),
            (Some(healthy), healthy, vec![]),
            (
                Some(healthy),
                look(S::Running, Some(false)),
                vec![E::ProbeFailed],
            ),
            (
                Some(look(S::Running, Some(false))),
                healthy,
                vec![E::ProbeRecovered],
            ),
            (
                Some(healthy),
                look(S::Unhealthy, Some(false)),
                vec![E::InspectUnhealthy, E::ProbeFailed],
            ),
            (
                Some(look(S::Unhealthy, Some(false))),
                look(S::Unhealthy, Some(false)),
                vec![],
            ),
            (
                Some(look(S::Unhealthy, Some(false))),
                healthy,
                vec![E::ProbeRecovered],
            ),
            (
                Some(healthy),
                look(S::Exited, None),
                vec![E::ContainerExited],
            ),
            (
                Some(healthy),
                look(S::OutOfMemory, None),
                vec![E::ContainerOom],
            ),
            (Some(healthy), look(S::Stopped, None), vec![]),
            (Some(healthy), look(S::Gone, None), vec![E::ContainerExited]),
            (None, look(S::Gone, None), vec![E::ContainerDisappeared]),
            (None, look(S::Stopped, None), vec![]),
            (
                None,
                look(S::Unhealthy, Some(false)),
                vec![E::InspectUnhealthy, E::ProbeFailed],
            ),
            (Some(look(S::Exited, None)), look(S::Gone, None), vec![]),
            (Some(look(S::Gone, None)), look(S::Gone, None), vec![]),
        ];
        for (before, now, expected) in cases {
            assert_eq!(events(before, now), expected, "{before:?} → {now:?}");
        }
    }

    #[test]
    fn after_a_restart_the_last_snapshot_stands_in_for_the_last_look() {
        use crate::snapshot::SnapshotStatus as St;
        let healthy = look(S::Running, Some(true));
        let cases = [
            (St::Healthy, healthy, vec![]),
            (
                St::Healthy,
                look(S::Gone, None),
                vec![E::ContainerDisappeared],
            ),
            (St::ProbeFailed, look(S::Running, Some(false)), vec![]),
            (St::ProbeFailed, healthy, vec![E::ProbeRecovered]),
            (
                St::InspectUnhealthy,
                look(S::Unhealthy, Some(false)),
                vec![],
            ),
            (St::Exited, look(S::Gone, None), vec![]),
            (St::Oom, look(S::Gone, None), vec![]),
            (St::ContainerDisappeared, look(S::Gone, None), vec![]),
        ];
        for (status, now, expected) in cases {
            assert_eq!(
                events(Some(Look::recorded(status)), now),
                expected,
                "{status} → {now:?}"
            );
        }
    }

    #[test]
    fn every_ending_has_one_row_for_each_history() {
        for state in [S::Exited, S::OutOfMemory, S::Stopped, S::Gone] {
            for alive in [true, false] {
                let rows = ENDINGS
                    .iter()
                    .filter(|(s, a, _)| *s == state && *a == alive)
                    .count();
                assert_eq!(rows, 1, "{state:?} seen alive: {alive}");
            }
        }
    }
}
