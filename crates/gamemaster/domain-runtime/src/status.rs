//! The table of allowed transitions between runtime statuses (the statuses themselves are
//! the contract's: `contracts::RuntimeStatus`).

use std::fmt;

pub use contracts::{RuntimeStatus, UnknownStatus};

use RuntimeStatus::{
    EngineUnreachable, Finished, GenerationFailed, GenerationInProgress, Running, Stopped,
};

/// Every allowed `from → to` pair. Anything not listed, and every self-transition, is
/// rejected by [`transition`]. `finished` is terminal: it appears only as a target.
pub const TRANSITIONS: &[(RuntimeStatus, RuntimeStatus)] = &[
    // Turn generation.
    (Running, GenerationInProgress),
    (GenerationInProgress, Running),
    (GenerationInProgress, GenerationFailed),
    (GenerationFailed, GenerationInProgress),
    (GenerationFailed, Running),
    // Engine health (the health-events consumer).
    (Running, EngineUnreachable),
    (EngineUnreachable, Running),
    // Administrative stop and restart.
    (Running, Stopped),
    (GenerationInProgress, Stopped),
    (GenerationFailed, Stopped),
    (EngineUnreachable, Stopped),
    (Stopped, Running),
    // Game finish.
    (Running, Finished),
    (GenerationInProgress, Finished),
    (GenerationFailed, Finished),
    (EngineUnreachable, Finished),
    (Stopped, Finished),
];

/// A transition that the table allows. It can only be built through [`transition`], so a
/// value of this type is proof that the pair was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transition {
    from: RuntimeStatus,
    to: RuntimeStatus,
}

impl Transition {
    /// The status the compare-and-swap expects.
    #[must_use]
    pub const fn from(self) -> RuntimeStatus {
        self.from
    }

    /// The status the compare-and-swap writes.
    #[must_use]
    pub const fn to(self) -> RuntimeStatus {
        self.to
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} → {}", self.from, self.to)
    }
}

/// Why a pair of statuses is not an allowed transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// `from` and `to` are the same status.
    #[error("self-transition {0} → {0} is not allowed")]
    SelfTransition(RuntimeStatus),
    /// The table does not declare the pair.
    #[error("transition {from} → {to} is not declared")]
    Undeclared {
        /// Source status.
        from: RuntimeStatus,
        /// Target status.
        to: RuntimeStatus,
    },
}

/// Checks `from → to` against [`TRANSITIONS`].
///
/// # Errors
/// [`TransitionError::SelfTransition`] when `from == to`, [`TransitionError::Undeclared`]
/// when the table lacks the pair.
pub const fn transition(
    from: RuntimeStatus,
    to: RuntimeStatus,
) -> Result<Transition, TransitionError> {
    if from as u8 == to as u8 {
        return Err(TransitionError::SelfTransition(from));
    }
    let mut i = 0;
    while i < TRANSITIONS.len() {
        let (f, t) = TRANSITIONS[i];
        if f as u8 == from as u8 && t as u8 == to as u8 {
            return Ok(Transition { from, to });
        }
        i += 1;
    }
    Err(TransitionError::Undeclared { from, to })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_unknown_is_a_typed_error() {
        for status in RuntimeStatus::ALL {
            assert_eq!(status.as_str().parse::<RuntimeStatus>(), Ok(status));
            assert_eq!(status.to_string(), status.as_str());
        }
        assert_eq!(
            "Running".parse::<RuntimeStatus>(),
            Err(UnknownStatus("Running".into()))
        );
        assert!("".parse::<RuntimeStatus>().is_err());
    }

    #[test]
    fn every_pair_is_allowed_exactly_when_the_table_declares_it() {
        for from in RuntimeStatus::ALL {
            for to in RuntimeStatus::ALL {
                let declared = TRANSITIONS.contains(&(from, to));
                match transition(from, to) {
                    Ok(t) => {
                        assert!(declared, "{from} → {to} accepted but not declared");
                        assert_eq!((t.from(), t.to()), (from, to));
                    }
                    Err(TransitionError::SelfTransition(s)) => {
                        assert_eq!(from, to);
                        assert_eq!(s, from);
                    }
                    Err(TransitionError::Undeclared { .. }) => {
                        assert!(!declared, "{from} → {to} declared but rejected");
                        assert_ne!(from, to);
                    }
                }
            }
        }
    }

    #[test]
    fn the_table_has_the_pairs_the_spec_requires_and_finished_is_terminal() {
        for (from, to) in [
            (Running, EngineUnreachable),
            (EngineUnreachable, Running),
            (Running, GenerationInProgress),
            (GenerationInProgress, Running),
            (GenerationInProgress, GenerationFailed),
            (Running, Stopped),
            (Running, Finished),
        ] {
            assert!(transition(from, to).is_ok(), "{from} → {to}");
        }
        assert!(TRANSITIONS.iter().all(|(from, _)| *from != Finished));
        assert!(TRANSITIONS.iter().all(|(from, to)| from != to));
    }
}
