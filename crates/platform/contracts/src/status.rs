//! The Game Master's runtime statuses, as every service spells them.

crate::wire_enum! {
    /// A game runtime's status, as stored in `runtime_records.status` and carried in the
    /// `runtime_status` field of `gm:lobby_events`. Which moves between them are allowed
    /// is the Game Master's rule (`domain_runtime::TRANSITIONS`), not the contract's.
    pub enum RuntimeStatus / UnknownStatus("runtime status") {
        /// The engine is up and the game is between turns.
        Running = "running",
        /// Turn generation holds the runtime.
        GenerationInProgress = "generation_in_progress",
        /// The last turn generation failed.
        GenerationFailed = "generation_failed",
        /// The engine container exited, was killed or vanished.
        EngineUnreachable = "engine_unreachable",
        /// An administrator stopped the runtime.
        Stopped = "stopped",
        /// The game is over; terminal.
        Finished = "finished",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip_and_an_unknown_one_is_named() {
        for status in RuntimeStatus::ALL {
            assert_eq!(status.as_str().parse::<RuntimeStatus>(), Ok(status));
            assert_eq!(status.to_string(), status.as_str());
        }
        assert_eq!(
            "paused".parse::<RuntimeStatus>(),
            Err(UnknownStatus("paused".into()))
        );
        assert_eq!(
            UnknownStatus("x".into()).to_string(),
            r#"unknown runtime status "x""#
        );
    }
}
