//! Game Master ports: the traits the health-events worker and the binary talk to, the
//! validated inputs they take, and the one typed error they return.
//!
//! Inputs validate themselves on construction ([`UpdateStatus::new`] checks the transition
//! table, [`GameId`] rejects blanks), so an adapter never sees a request it would have to
//! reject, and an invalid transition is refused before any SQL runs.
//!
//! With the `mocks` feature every trait has a mockall fake (`MockRuntimeRecordStore`,
//! `MockLobbyEventsPublisher`, `MockShardLeases`, and the stream fakes re-exported from
//! `stream-consumer`).

mod error;
mod lobby;
mod records;
mod shards;

pub use error::{BoxError, Error};
#[cfg(feature = "mocks")]
pub use lobby::MockLobbyEventsPublisher;
pub use lobby::{
    LobbyEvent, LobbyEventKind, LobbyEventsPublisher, PlayerTurnStats, RuntimeSnapshot,
};
#[cfg(feature = "mocks")]
pub use records::MockRuntimeRecordStore;
pub use records::{
    HealthObservation, NewRuntime, ObservationResult, RuntimeRecordStore, UpdateEngineHealth,
    UpdateStatus,
};

#[cfg(feature = "mocks")]
pub use shards::MockShardLeases;
pub use shards::{KeeperSide, Members, OwnershipChange, ShardLeases, WorkerSide, handover};

#[cfg(feature = "mocks")]
pub use stream_consumer::MockStreamOffsetStore;
pub use stream_consumer::{EntryId, StreamError, StreamOffsetStore};
