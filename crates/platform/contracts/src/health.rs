//! Engine-health summaries and the Runtime Manager's health event types.

crate::wire_enum! {
    /// The short summary written to `runtime_records.engine_health` and carried as
    /// `engine_health_summary` on `gm:lobby_events`.
    pub enum EngineHealth / UnknownEngineHealth("engine health summary") {
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
        /// The container disappeared.
        Disappeared = "disappeared",
    }
}

impl EngineHealth {
    /// Spelling of an optional summary: the empty string before the first observation.
    #[must_use]
    pub fn wire(summary: Option<Self>) -> &'static str {
        summary.map_or("", Self::as_str)
    }

    /// Parses the stored column, where the empty string means "no observation yet".
    ///
    /// # Errors
    /// [`UnknownEngineHealth`] for any other string that names no summary.
    pub fn parse_stored(s: &str) -> Result<Option<Self>, UnknownEngineHealth> {
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse().map(Some)
        }
    }
}

crate::wire_enum! {
    /// The `event_type` values the Runtime Manager publishes on `runtime:health_events`.
    pub enum HealthEventType / UnknownEventType("health event type") {
        /// The start service ran the container.
        ContainerStarted = "container_started",
        /// The container exited.
        ContainerExited = "container_exited",
        /// The container was OOM-killed.
        ContainerOom = "container_oom",
        /// The container vanished.
        ContainerDisappeared = "container_disappeared",
        /// Docker inspect reported it unhealthy.
        InspectUnhealthy = "inspect_unhealthy",
        /// The engine's probe failed.
        ProbeFailed = "probe_failed",
        /// The engine's probe succeeded again after failing.
        ProbeRecovered = "probe_recovered",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_round_trip() {
        for event in HealthEventType::ALL {
            assert_eq!(event.as_str().parse::<HealthEventType>(), Ok(event));
        }
        for health in EngineHealth::ALL {
            assert_eq!(
                EngineHealth::parse_stored(health.as_str()),
                Ok(Some(health))
            );
        }
        assert_eq!(EngineHealth::parse_stored(""), Ok(None));
        assert_eq!(EngineHealth::wire(None), "");
        assert!("container_restarted".parse::<HealthEventType>().is_err());
        assert!(EngineHealth::parse_stored("sick").is_err());
        assert_eq!(
            UnknownEventType("x".into()).to_string(),
            r#"unknown health event type "x""#
        );
    }
}
