//! Game statuses, the triggers that move them, and the table of allowed transitions.

use std::fmt;

contracts::wire_enum! {
    /// A game's status in the Lobby, from creation to its end.
    ///
    /// The Lobby owns a game before its engine exists, so most statuses describe recruiting
    /// and starting; the runtime phase is `running` ⇄ `paused`. Which runtime status the Game
    /// Master reports is a separate field of the runtime snapshot, not this status.
    pub enum GameStatus / UnknownGameStatus("game status") {
        /// Created, being configured, not yet visible to players.
        Draft = "draft",
        /// Published and recruiting: players may join and leave.
        Open = "open",
        /// Enrollment closed with a full enough roster; waiting to start.
        Ready = "ready",
        /// The Lobby asked the Runtime Manager to start the engine and waits to hear back.
        Starting = "starting",
        /// The engine runs and turns are being played.
        Running = "running",
        /// Play is suspended; the game keeps its state and can resume.
        Paused = "paused",
        /// The game ended normally (the Game Master said so); terminal.
        Finished = "finished",
        /// The game was called off; terminal.
        Cancelled = "cancelled",
    }
}

impl GameStatus {
    /// Whether no transition leaves this status (read from [`TRANSITIONS`]).
    #[must_use]
    pub fn is_terminal(self) -> bool {
        !TRANSITIONS.iter().any(|(from, _, _)| *from == self)
    }
}

contracts::wire_enum! {
    /// Who or what asks for a status change. Recorded with every transition, and checked
    /// against the table: a pair that is allowed for one trigger may be refused for another.
    pub enum Trigger / UnknownTrigger("transition trigger") {
        /// An administrator or operator acting through the admin interface.
        Admin = "admin",
        /// A player's own action: the owner publishing or withdrawing a draft, a player whose
        /// join fills the roster or whose leave reopens it.
        Player = "player",
        /// The Lobby's scheduler: enrollment deadlines and scheduled start times.
        Scheduler = "scheduler",
        /// A runtime event: the Game Master's `gm:lobby_events` or the Runtime Manager's job
        /// results.
        RuntimeEvent = "runtime_event",
    }
}

use GameStatus::{Cancelled, Draft, Finished, Open, Paused, Ready, Running, Starting};
use Trigger::{Admin, Player, RuntimeEvent, Scheduler};

/// Every allowed `from → to` pair with the triggers that may take it. Anything not listed,
/// every self-transition and every unlisted trigger is rejected by [`transition`].
/// `finished` and `cancelled` are terminal: they appear only as targets.
pub const TRANSITIONS: &[(GameStatus, GameStatus, &[Trigger])] = &[
    // Setting up and recruiting.
    (Draft, Open, &[Admin, Player]),
    (Open, Ready, &[Admin, Player, Scheduler]),
    (Ready, Open, &[Admin, Player]),
    // Starting the engine; a failed start returns the game to `ready` for another try.
    (Ready, Starting, &[Admin, Scheduler]),
    (Starting, Running, &[RuntimeEvent]),
    (Starting, Ready, &[Admin, RuntimeEvent]),
    // Play.
    (Running, Paused, &[Admin, RuntimeEvent]),
    (Paused, Running, &[Admin, RuntimeEvent]),
    // The normal end: only the Game Master decides a game is over.
    (Running, Finished, &[RuntimeEvent]),
    (Paused, Finished, &[RuntimeEvent]),
    // Calling it off.
    (Draft, Cancelled, &[Admin, Player]),
    (Open, Cancelled, &[Admin, Scheduler]),
    (Ready, Cancelled, &[Admin]),
    (Starting, Cancelled, &[Admin]),
    (Running, Cancelled, &[Admin]),
    (Paused, Cancelled, &[Admin]),
];

/// A transition the table allows for its trigger. It can only be built through
/// [`transition`], so a value of this type is proof that the triple was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transition {
    from: GameStatus,
    to: GameStatus,
    trigger: Trigger,
}

impl Transition {
    /// The status the compare-and-swap expects.
    #[must_use]
    pub const fn from(self) -> GameStatus {
        self.from
    }

    /// The status the compare-and-swap writes.
    #[must_use]
    pub const fn to(self) -> GameStatus {
        self.to
    }

    /// Who asked.
    #[must_use]
    pub const fn trigger(self) -> Trigger {
        self.trigger
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} → {} by {}", self.from, self.to, self.trigger)
    }
}

/// Why a transition is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// `from` and `to` are the same status.
    #[error("self-transition {0} → {0} is not allowed")]
    SelfTransition(GameStatus),
    /// The table does not declare the pair for any trigger.
    #[error("transition {from} → {to} is not declared")]
    Undeclared {
        /// Source status.
        from: GameStatus,
        /// Target status.
        to: GameStatus,
    },
    /// The pair is declared, but not for this trigger.
    #[error("transition {from} → {to} is not allowed by trigger {trigger}")]
    TriggerNotAllowed {
        /// Source status.
        from: GameStatus,
        /// Target status.
        to: GameStatus,
        /// The refused trigger.
        trigger: Trigger,
    },
}

/// Checks `from → to` by `trigger` against [`TRANSITIONS`].
///
/// # Errors
/// [`TransitionError::SelfTransition`] when `from == to`, [`TransitionError::Undeclared`]
/// when the table lacks the pair, [`TransitionError::TriggerNotAllowed`] when the pair is
/// declared for other triggers only.
pub fn transition(
    from: GameStatus,
    to: GameStatus,
    trigger: Trigger,
) -> Result<Transition, TransitionError> {
    if from == to {
        return Err(TransitionError::SelfTransition(from));
    }
    let (_, _, triggers) = TRANSITIONS
        .iter()
        .find(|(f, t, _)| *f == from && *t == to)
        .ok_or(TransitionError::Undeclared { from, to })?;
    if triggers.contains(&trigger) {
        Ok(Transition { from, to, trigger })
    } else {
        Err(TransitionError::TriggerNotAllowed { from, to, trigger })
    }
}

/// What a `game_finished` event does to a game in a given status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishPlan {
    /// Compare-and-swap the status along this transition.
    Finish(Transition),
    /// The game is already finished: a replay, nothing to move (capability evaluation
    /// still runs, behind its guard).
    AlreadyFinished,
    /// The game is in a status the event cannot finish (for example `cancelled`, or a game
    /// that never started): leave it alone.
    Ignore(GameStatus),
}

/// Decides, from the table, what a `game_finished` event does to a game in `current`.
#[must_use]
pub fn plan_finish(current: GameStatus) -> FinishPlan {
    match transition(current, Finished, RuntimeEvent) {
        Ok(t) => FinishPlan::Finish(t),
        Err(TransitionError::SelfTransition(_)) => FinishPlan::AlreadyFinished,
        Err(_) => FinishPlan::Ignore(current),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_unknown_is_a_typed_error() {
        for status in GameStatus::ALL {
            assert_eq!(status.as_str().parse::<GameStatus>(), Ok(status));
            assert_eq!(status.to_string(), status.as_str());
        }
        for trigger in Trigger::ALL {
            assert_eq!(trigger.as_str().parse::<Trigger>(), Ok(trigger));
            assert_eq!(trigger.to_string(), trigger.as_str());
        }
        assert_eq!(
            "Running".parse::<GameStatus>(),
            Err(UnknownGameStatus("Running".into()))
        );
        assert_eq!("gm".parse::<Trigger>(), Err(UnknownTrigger("gm".into())));
    }

    #[test]
    fn every_triple_is_allowed_exactly_when_the_table_declares_it() {
        for from in GameStatus::ALL {
            for to in GameStatus::ALL {
                let row = TRANSITIONS.iter().find(|(f, t, _)| *f == from && *t == to);
                for trigger in Trigger::ALL {
                    let result = transition(from, to, trigger);
                    match (from == to, row) {
                        (true, _) => {
                            assert_eq!(result, Err(TransitionError::SelfTransition(from)));
                        }
                        (false, None) => {
                            assert_eq!(result, Err(TransitionError::Undeclared { from, to }));
                        }
                        (false, Some((_, _, triggers))) if triggers.contains(&trigger) => {
                            let t = result.unwrap_or_else(|e| panic!("{e}"));
                            assert_eq!((t.from(), t.to(), t.trigger()), (from, to, trigger));
                        }
                        (false, Some(_)) => assert_eq!(
                            result,
                            Err(TransitionError::TriggerNotAllowed { from, to, trigger })
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn the_table_is_well_formed() {
        for (i, (from, to, triggers)) in TRANSITIONS.iter().enumerate() {
            assert_ne!(from, to, "row {i} is a self-transition");
            assert!(!triggers.is_empty(), "row {i} allows no trigger");
            let duplicates = TRANSITIONS
                .iter()
                .filter(|(f, t, _)| f == from && t == to)
                .count();
            assert_eq!(duplicates, 1, "{from} → {to} is declared twice");
        }
    }

    #[test]
    fn only_finished_and_cancelled_are_terminal() {
        for status in GameStatus::ALL {
            assert_eq!(
                status.is_terminal(),
                matches!(status, Finished | Cancelled),
                "{status}"
            );
        }
    }

    #[test]
    fn only_the_game_master_finishes_a_running_or_paused_game() {
        for from in [Running, Paused] {
            assert!(transition(from, Finished, RuntimeEvent).is_ok(), "{from}");
            for trigger in [Admin, Player, Scheduler] {
                assert!(
                    transition(from, Finished, trigger).is_err(),
                    "{from} by {trigger}"
                );
            }
        }
    }

    #[test]
    fn finish_plan_follows_the_table() {
        for status in GameStatus::ALL {
            let expected = match status {
                Running | Paused => FinishPlan::Finish(Transition {
                    from: status,
                    to: Finished,
                    trigger: RuntimeEvent,
                }),
                Finished => FinishPlan::AlreadyFinished,
                other => FinishPlan::Ignore(other),
            };
            assert_eq!(plan_finish(status), expected, "{status}");
        }
    }

    #[test]
    fn errors_read_clearly() {
        let err = transition(Running, Finished, Admin).unwrap_err();
        assert_eq!(
            err.to_string(),
            "transition running → finished is not allowed by trigger admin"
        );
        let ok = transition(Paused, Finished, RuntimeEvent).map(|t| t.to_string());
        assert_eq!(ok.as_deref(), Ok("paused → finished by runtime_event"));
    }
}
