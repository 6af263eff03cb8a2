//! The `health_snapshots` row: its status and source vocabularies and the table that maps
//! each health event type onto them.

use contracts::{GameId, HealthEventEnvelope, HealthEventType};

contracts::wire_enum! {
    /// The health a snapshot records, as stored in `health_snapshots.status`.
    ///
    /// There is no `recovered` status: a `probe_recovered` event collapses to
    /// [`SnapshotStatus::Healthy`], overwriting the previous `probe_failed`.
    pub enum SnapshotStatus / UnknownSnapshotStatus("health snapshot status") {
        /// The container runs and answers probes.
        Healthy = "healthy",
        /// The engine's probe failed.
        ProbeFailed = "probe_failed",
        /// Docker inspect reported the container unhealthy.
        InspectUnhealthy = "inspect_unhealthy",
        /// The container exited.
        Exited = "exited",
        /// The container was killed for running out of memory.
        Oom = "oom",
        /// The container vanished from Docker.
        ContainerDisappeared = "container_disappeared",
    }
}

contracts::wire_enum! {
    /// Which Runtime Manager observer produced a snapshot, as stored in
    /// `health_snapshots.source`.
    pub enum SnapshotSource / UnknownSnapshotSource("health snapshot source") {
        /// The Docker events listener (or the start service, for `container_started`).
        DockerEvent = "docker_event",
        /// The periodic Docker inspect worker.
        Inspect = "inspect",
        /// The engine's HTTP probe.
        Probe = "probe",
    }
}

/// One row of [`SNAPSHOT_MAPPINGS`]: an event type and how a snapshot records it.
pub type SnapshotMapping = (HealthEventType, SnapshotStatus, SnapshotSource);

/// The event type → (status, source) table, as data. Rows are in the declaration order of
/// [`HealthEventType`], one per event type; a compile-time check below enforces both, so
/// [`snapshot_mapping`] can index the table directly and a new event type in
/// `contracts` fails this crate's build until it gets a row.
pub const SNAPSHOT_MAPPINGS: [SnapshotMapping; HealthEventType::ALL.len()] = [
    (
        HealthEventType::ContainerStarted,
        SnapshotStatus::Healthy,
        SnapshotSource::DockerEvent,
    ),
    (
        HealthEventType::ContainerExited,
        SnapshotStatus::Exited,
        SnapshotSource::DockerEvent,
    ),
    (
        HealthEventType::ContainerOom,
        SnapshotStatus::Oom,
        SnapshotSource::DockerEvent,
    ),
    (
        HealthEventType::ContainerDisappeared,
        SnapshotStatus::ContainerDisappeared,
        SnapshotSource::DockerEvent,
    ),
    (
        HealthEventType::InspectUnhealthy,
        SnapshotStatus::InspectUnhealthy,
        SnapshotSource::Inspect,
    ),
    (
        HealthEventType::ProbeFailed,
        SnapshotStatus::ProbeFailed,
        SnapshotSource::Probe,
    ),
    (
        HealthEventType::ProbeRecovered,
        SnapshotStatus::Healthy,
        SnapshotSource::Probe,
    ),
];

// Row `i` must describe the event type whose discriminant is `i`.
const _: () = {
    let mut i = 0;
    while i < SNAPSHOT_MAPPINGS.len() {
        assert!(
            SNAPSHOT_MAPPINGS[i].0 as usize == i,
            "SNAPSHOT_MAPPINGS rows must follow HealthEventType's declaration order"
        );
        i += 1;
    }
};

/// The snapshot status and source that `event_type` is recorded as (see
/// [`SNAPSHOT_MAPPINGS`]).
#[must_use]
pub const fn snapshot_mapping(event_type: HealthEventType) -> (SnapshotStatus, SnapshotSource) {
    let (_, status, source) = SNAPSHOT_MAPPINGS[event_type as usize];
    (status, source)
}

/// The latest health observation of one game's engine container: the row the publisher
/// upserts into `health_snapshots` before it appends the event to the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSnapshot {
    /// The game the container runs.
    pub game_id: GameId,
    /// The engine container's id.
    pub container_id: String,
    /// The observed health.
    pub status: SnapshotStatus,
    /// The observer that saw it.
    pub source: SnapshotSource,
    /// Observer-specific details: JSON object text, `{}` when there are none.
    pub details: String,
    /// When it was observed, in milliseconds since the Unix epoch.
    pub observed_at_ms: i64,
}

impl HealthSnapshot {
    /// The snapshot an envelope upserts: status and source from [`snapshot_mapping`],
    /// everything else copied.
    #[must_use]
    pub fn from_envelope(envelope: &HealthEventEnvelope) -> Self {
        let (status, source) = snapshot_mapping(envelope.event_type());
        Self {
            game_id: envelope.game_id().clone(),
            container_id: envelope.container_id().to_owned(),
            status,
            source,
            details: envelope.details().to_owned(),
            observed_at_ms: envelope.occurred_at_ms(),
        }
    }
}

impl From<&HealthEventEnvelope> for HealthSnapshot {
    fn from(envelope: &HealthEventEnvelope) -> Self {
        Self::from_envelope(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_maps_as_the_seed_publisher_does() {
        use HealthEventType as E;
        use SnapshotSource as Src;
        use SnapshotStatus as St;
        let expected = [
            (E::ContainerStarted, St::Healthy, Src::DockerEvent),
            (E::ContainerExited, St::Exited, Src::DockerEvent),
            (E::ContainerOom, St::Oom, Src::DockerEvent),
            (
                E::ContainerDisappeared,
                St::ContainerDisappeared,
                Src::DockerEvent,
            ),
            (E::InspectUnhealthy, St::InspectUnhealthy, Src::Inspect),
            (E::ProbeFailed, St::ProbeFailed, Src::Probe),
            (E::ProbeRecovered, St::Healthy, Src::Probe),
        ];
        assert_eq!(expected.len(), HealthEventType::ALL.len());
        for (event, status, source) in expected {
            assert_eq!(snapshot_mapping(event), (status, source), "{event}");
            let rows = SNAPSHOT_MAPPINGS
                .iter()
                .filter(|(e, _, _)| *e == event)
                .count();
            assert_eq!(rows, 1, "{event}");
        }
    }

    #[test]
    fn every_status_is_reachable_from_some_event_type() {
        for status in SnapshotStatus::ALL {
            assert!(
                HealthEventType::ALL
                    .into_iter()
                    .any(|e| snapshot_mapping(e).0 == status),
                "{status}"
            );
        }
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn the_snapshot_copies_the_envelope_and_maps_the_event_type() {
        let env = HealthEventEnvelope::new(
            "g-1",
            "c-9",
            HealthEventType::ContainerOom,
            42,
            Some(r#"{"exit_code":137}"#),
        )
        .unwrap();
        let snapshot = HealthSnapshot::from_envelope(&env);
        assert_eq!(snapshot.game_id.as_str(), "g-1");
        assert_eq!(snapshot.container_id, "c-9");
        assert_eq!(snapshot.status, SnapshotStatus::Oom);
        assert_eq!(snapshot.source, SnapshotSource::DockerEvent);
        assert_eq!(snapshot.details, r#"{"exit_code":137}"#);
        assert_eq!(snapshot.observed_at_ms, 42);
        assert_eq!(HealthSnapshot::from(&env), snapshot);
    }

    #[test]
    fn wire_strings_round_trip_and_unknown_is_a_typed_error() {
        for status in SnapshotStatus::ALL {
            assert_eq!(status.as_str().parse::<SnapshotStatus>(), Ok(status));
            assert_eq!(status.to_string(), status.as_str());
        }
        for source in SnapshotSource::ALL {
            assert_eq!(source.as_str().parse::<SnapshotSource>(), Ok(source));
            assert_eq!(source.to_string(), source.as_str());
        }
        assert_eq!(
            "disappeared".parse::<SnapshotStatus>(),
            Err(UnknownSnapshotStatus("disappeared".into()))
        );
        assert_eq!(
            "docker".parse::<SnapshotSource>(),
            Err(UnknownSnapshotSource("docker".into()))
        );
    }
}
