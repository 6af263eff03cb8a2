//! Game Lobby domain: what the Lobby's `gm:lobby_events` consumer (SPEC §Lobby, seed 002)
//! decides, as pure data and pure functions.
//!
//! For each event the consumer:
//! 1. decodes it into a [`GmEvent`] ([`GmEvent::decode`]: the contract's decoder, then the
//!    Lobby's rules for player stats), whatever the stream client;
//! 2. applies its [`RuntimeSnapshot`] unless the stored one is newer
//!    ([`RuntimeSnapshot::should_replace`]);
//! 3. feeds each player's [`PlayerStatsAggregate`]: the initial frozen at the first
//!    observation, the maxima raised per component ([`raise_max`]);
//! 4. on `game_finished`, moves the game to `finished` along the [`transition`] table
//!    ([`plan_finish`]: `running` or `paused` by a runtime event; a replay finds it
//!    already finished);
//! 5. evaluates capabilities once per game: [`fold_finished_game`] into every player's
//!    [`CareerRecord`].
//!
//! The game lifecycle ([`GameStatus`]) is a table of `(from, to, triggers)` rows, so who
//! may move a game where is data that tests walk in full. Nothing here does I/O; the
//! stores, the guard that makes step 5 run once, and the stream loop live elsewhere.

mod career;
mod gm_event;
mod snapshot;
mod stats;
mod status;

pub use career::{CareerRecord, fold_finished_game, fold_finished_game_into_careers};
pub use contracts::{GameId, InvalidGameId};
pub use gm_event::{
    GmEvent, GmEventKind, InvalidGmEvent, KIND_GAME_FINISHED, KIND_RUNTIME_SNAPSHOT_UPDATE,
    MAX_LABEL_LEN, UnknownGmEventKind,
};
pub use snapshot::RuntimeSnapshot;
pub use stats::{
    InvalidPlayerStats, InvalidUserId, MAX_USER_ID_LEN, PlayerObservedStats, PlayerStatsAggregate,
    StatValues, UserId, apply_observations, raise_max,
};
pub use status::{
    FinishPlan, GameStatus, TRANSITIONS, Transition, TransitionError, Trigger, UnknownGameStatus,
    UnknownTrigger, plan_finish, transition,
};

/// Wire field names of `gm:lobby_events`.
pub use gm_event::fields as gm_event_fields;
