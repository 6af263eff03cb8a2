//! Shard ownership between instances: the leases that divide the shards
//! ([`ShardLeases`]), and the handover of claimed shards from an instance's lease keeper
//! to its worker ([`handover`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use domain_runtime::ShardClaim;
use tokio::sync::{Notify, mpsc};

use crate::Error;

/// Membership and shard leases (decision 0024): who is alive, and who works on which shard
/// for now. A lease only says who should be working on a shard; the fencing epoch in the
/// record store decides whose writes commit.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait ShardLeases: Send + Sync {
    /// Says `member` is alive for `ttl` more; every member alive, and how soon the first
    /// other one lapses unrenewed.
    ///
    /// # Errors
    /// A server failure.
    async fn heartbeat(&self, member: &str, ttl: Duration) -> Result<Members, Error>;

    /// Takes each of `shards` that is free and renews each `member` holds, for `ttl`; the
    /// shards it holds now.
    ///
    /// # Errors
    /// A server failure.
    async fn hold(&self, member: &str, shards: &[u32], ttl: Duration) -> Result<Vec<u32>, Error>;

    /// Gives up the leases of `shards` that `member` holds, so another can take them at
    /// once.
    ///
    /// # Errors
    /// A server failure (the leases then lapse on their own).
    async fn release(&self, member: &str, shards: &[u32]) -> Result<(), Error>;

    /// Removes `member` from the members at once.
    ///
    /// # Errors
    /// A server failure (the membership then lapses on its own).
    async fn leave(&self, member: &str) -> Result<(), Error>;
}

/// What a heartbeat finds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    /// Every member alive, in name order.
    pub alive: Vec<String>,
    /// How soon the first of the other members lapses if it does not beat again (a dead
    /// one's shards are free from then on); `None` when there is no other.
    pub next_lapse: Option<Duration>,
}

/// A change of the shards an instance owns, from its lease keeper to its worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnershipChange {
    /// Shards just claimed in the record store, with their epochs and checkpoints.
    Gained(Vec<ShardClaim>),
    /// Shards to stop applying at once (their leases moved or lapsed).
    Lost(Vec<u32>),
}

/// The keeper's end of a [`handover`].
#[derive(Debug)]
pub struct KeeperSide {
    changes: mpsc::UnboundedSender<OwnershipChange>,
    fenced: mpsc::UnboundedReceiver<Vec<u32>>,
    released: mpsc::UnboundedReceiver<Vec<u32>>,
    wake: Arc<Notify>,
}

/// The worker's end of a [`handover`].
#[derive(Debug)]
pub struct WorkerSide {
    changes: mpsc::UnboundedReceiver<OwnershipChange>,
    fenced: mpsc::UnboundedSender<Vec<u32>>,
    released: mpsc::UnboundedSender<Vec<u32>>,
    wake: Arc<Notify>,
}

/// The two ends of the handover between an instance's lease keeper and its worker:
/// ownership changes go to the worker, which takes them between batches; shards the
/// worker found fenced off (claimed by another instance), and shards it let go with its
/// published mark written on them, come back to the keeper, and wake it
/// ([`KeeperSide::waker`]) so it acts on them at once.
#[must_use]
pub fn handover() -> (KeeperSide, WorkerSide) {
    let (changes_tx, changes_rx) = mpsc::unbounded_channel();
    let (fenced_tx, fenced_rx) = mpsc::unbounded_channel();
    let (released_tx, released_rx) = mpsc::unbounded_channel();
    let wake = Arc::new(Notify::new());
    (
        KeeperSide {
            changes: changes_tx,
            fenced: fenced_rx,
            released: released_rx,
            wake: Arc::clone(&wake),
        },
        WorkerSide {
            changes: changes_rx,
            fenced: fenced_tx,
            released: released_tx,
            wake,
        },
    )
}

/// Everything waiting on `receiver`, flattened.
fn drain(receiver: &mut mpsc::UnboundedReceiver<Vec<u32>>) -> Vec<u32> {
    let mut shards = Vec::new();
    while let Ok(more) = receiver.try_recv() {
        shards.extend(more);
    }
    shards
}

impl KeeperSide {
    /// Hands `change` to the worker; `false` when the worker is gone.
    pub fn send(&self, change: OwnershipChange) -> bool {
        self.changes.send(change).is_ok()
    }

    /// What the worker's reports notify: the keeper's next tick should start now. Others
    /// may notify it too (another instance announced a change).
    #[must_use]
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Returns once the worker's end is dropped (the worker stopped).
    pub async fn worker_gone(&self) {
        self.changes.closed().await;
    }

    /// The shards the worker reported fenced off since the last call.
    pub fn fenced(&mut self) -> Vec<u32> {
        drain(&mut self.fenced)
    }

    /// The shards the worker let go (after a [`OwnershipChange::Lost`]) since the last
    /// call, their snapshots out and its mark written on them: their leases may go.
    pub fn released(&mut self) -> Vec<u32> {
        drain(&mut self.released)
    }
}

impl WorkerSide {
    /// The changes sent since the last call, in order.
    pub fn changes(&mut self) -> Vec<OwnershipChange> {
        let mut changes = Vec::new();
        while let Ok(change) = self.changes.try_recv() {
            changes.push(change);
        }
        changes
    }

    /// Tells the keeper `shards` were fenced off (it no longer counts them as owned).
    pub fn report_fenced(&self, shards: Vec<u32>) {
        // A keeper that is gone has nothing left to learn.
        let _ = self.fenced.send(shards);
        self.wake.notify_one();
    }

    /// Tells the keeper `shards`, lost, are let go: whoever claims them next finds them
    /// as this worker left them.
    pub fn report_released(&self, shards: Vec<u32>) {
        // A keeper that is gone releases nothing any more.
        let _ = self.released.send(shards);
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_reach_the_worker_in_order_and_fences_reach_the_keeper() {
        let (mut keeper, mut worker) = handover();
        assert!(worker.changes().is_empty());
        assert!(keeper.send(OwnershipChange::Lost(vec![1])));
        assert!(keeper.send(OwnershipChange::Lost(vec![2])));
        assert_eq!(
            worker.changes(),
            vec![
                OwnershipChange::Lost(vec![1]),
                OwnershipChange::Lost(vec![2])
            ]
        );
        worker.report_fenced(vec![3]);
        worker.report_fenced(vec![4, 5]);
        assert_eq!(keeper.fenced(), vec![3, 4, 5]);
        assert!(keeper.fenced().is_empty());
        worker.report_released(vec![1]);
        assert_eq!(keeper.released(), vec![1]);
        assert!(keeper.fenced().is_empty(), "a release is no fence");
        drop(worker);
        assert!(
            !keeper.send(OwnershipChange::Lost(vec![1])),
            "the worker is gone"
        );
    }
}
