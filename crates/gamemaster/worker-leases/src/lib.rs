//! The Game Master's lease keeper: it divides the shards among the running instances
//! (decision 0024) and hands this instance's worker the shards it claims. Every tick (a
//! quarter of the lease's time to live), the keeper:
//!
//!  1. **Heartbeats**: this instance is alive for one more lease period; every member
//!     alive comes back.
//!  2. **Assigns**: the shards this instance should own among those members (rendezvous
//!     hashing, so a member that joins or leaves moves only its share).
//!  3. **Forgets fenced shards**: those the worker found claimed by another instance are
//!     no longer owned (if their lease is still this instance's, step 6 claims them back).
//!  4. **Releases** the owned shards now assigned to another member: the worker stops
//!     applying them, settles their last snapshots and writes its published mark on them,
//!     then tells the keeper, which lets their leases go at once (the report wakes it; or
//!     they lapse after a lease period), so the new owner takes them as this instance left
//!     them.
//!  5. **Holds** the leases of the assigned shards: renews those it holds, takes the free
//!     ones. An owned shard whose lease another member holds now is lost: the worker
//!     stops applying it at once.
//!  6. **Claims** each shard newly held in the record store: its epoch rises, so the
//!     previous owner can no longer commit for it, and its checkpoint comes back. The
//!     claims go to the worker, which reads on from each checkpoint.
//!
//! A tick also comes just after another member would lapse (its heartbeat's expiry, as
//! the last heartbeat read it), when that is sooner than a period: a dead member's shards
//! are taken as soon as they are free, not up to a period later.
//!
//! Between ticks, a [`LeaseKeeper::waker`] notice starts the next tick at once: another
//! member joined, left or gave leases up (announced through Redis), or the worker let
//! shards go or found them fenced. So a stopping instance's shards, and a joiner's share,
//! move within round trips rather than tick periods.
//!
//! A tick that fails (Redis or PostgreSQL unreachable) is logged and counted, and the next
//! one tries again. When no tick has renewed the leases for a whole lease period, they may
//! have lapsed and gone to other members: the worker stops applying every shard until a
//! tick holds them again. Whatever the keeper believes, the epochs in PostgreSQL decide:
//! a write for a shard another instance claimed is fenced off.
//!
//! On stop, once the worker has stopped (its end of the handover is gone), every lease is
//! released and the instance leaves, so the others take its shards at their next tick.

mod metrics;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use domain_runtime::{ShardClaim, ShardCount, assigned};
use error_kit::error_chain;
use ports::{KeeperSide, Members, OwnershipChange, RuntimeRecordStore, ShardLeases};
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub use metrics::KeeperMetrics;

/// The lease time to live by default: a dead instance's shards move within about this
/// long plus a tick.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(2);

/// How long after another member's heartbeat would lapse the keeper looks again: its
/// leases were renewed a round trip after its heartbeat, so they lapse a moment later.
const LAPSE_MARGIN: Duration = Duration::from_millis(50);

/// The keeper of one instance. Build it with [`LeaseKeeper::new`], make the first claims
/// with [`LeaseKeeper::start`] (before the worker starts), then [`LeaseKeeper::run`] it.
pub struct LeaseKeeper<L, S> {
    leases: L,
    store: S,
    instance: String,
    count: ShardCount,
    ttl: Duration,
    side: KeeperSide,
    metrics: KeeperMetrics,
    /// Shards held by lease, claimed, and handed to the worker.
    owned: BTreeSet<u32>,
    /// Shards moving to another member, since when: their leases go once the worker has
    /// let them go.
    releasing: BTreeMap<u32, Instant>,
    /// When a tick last renewed the leases.
    renewed: Option<Instant>,
    /// Starts the next tick at once.
    wake: Arc<Notify>,
    /// When the first other member lapses if it does not beat again: the next tick comes
    /// then, if sooner than a period, so a dead member's shards move as they come free.
    next_lapse: Option<Instant>,
}

impl<L: ShardLeases, S: RuntimeRecordStore> LeaseKeeper<L, S> {
    /// The keeper of `instance`, dividing a layout of `count` shards with leases of `ttl`;
    /// it talks to the worker through `side`.
    pub fn new(
        leases: L,
        store: S,
        instance: impl Into<String>,
        count: ShardCount,
        ttl: Duration,
        side: KeeperSide,
        metrics: KeeperMetrics,
    ) -> Self {
        let wake = side.waker();
        Self {
            leases,
            store,
            instance: instance.into(),
            count,
            ttl,
            side,
            metrics,
            owned: BTreeSet::new(),
            releasing: BTreeMap::new(),
            renewed: None,
            wake,
            next_lapse: None,
        }
    }

    /// What starts the next tick at once: notify it when the members or the leases
    /// changed (a notice that comes during a tick starts one more).
    #[must_use]
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// The time between ticks.
    #[must_use]
    pub fn tick_every(&self) -> Duration {
        self.ttl / 4
    }

    /// The first tick, before the worker starts: the shards claimed come back to the
    /// caller (the worker's first ownership) instead of over the handover. Several
    /// instances starting together divide the shards over their next ticks. The layout
    /// is checked first, before this instance counts as a member.
    ///
    /// # Errors
    /// A server failure, or [`ports::Error::Invalid`] when the database is laid out in
    /// another shard count.
    pub async fn start(&mut self) -> Result<Vec<ShardClaim>, ports::Error> {
        self.store
            .claim_shards(&self.instance, self.count, &[])
            .await?;
        self.step().await
    }

    /// One tick; the shards it claims go to the worker.
    ///
    /// # Errors
    /// A server failure (the next tick tries again).
    pub async fn tick(&mut self) -> Result<(), ports::Error> {
        self.lapse_if_stale();
        let claims = self.step().await?;
        if !claims.is_empty() {
            self.metrics.took_over(claims.len());
            self.side.send(OwnershipChange::Gained(claims));
        }
        Ok(())
    }

    /// Ticks until `stop`, every [`Self::tick_every`], at once when woken, or just after
    /// another member would lapse; then hands every shard back (see the crate
    /// documentation).
    pub async fn run(mut self, stop: CancellationToken) {
        let wake = self.waker();
        loop {
            let pause = self.pause();
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(pause) => {}
                () = wake.notified() => {}
            }
            if let Err(error) = self.tick().await {
                self.metrics.failed();
                tracing::warn!(error = %error_chain(&error), instance = %self.instance, "lease tick failed; trying again at the next");
            }
        }
        self.leave().await;
    }

    /// The wait before the next tick: a period, or until just after the first other
    /// member would lapse when that is sooner.
    fn pause(&self) -> Duration {
        let every = self.tick_every();
        self.next_lapse.map_or(every, |at| {
            (at + LAPSE_MARGIN)
                .saturating_duration_since(Instant::now())
                .min(every)
        })
    }

    /// Steps 1–6; the claims step 6 made.
    async fn step(&mut self) -> Result<Vec<ShardClaim>, ports::Error> {
        // 1–2. Who is alive; what is this instance's share.
        let Members {
            alive: mut members,
            next_lapse,
        } = self.leases.heartbeat(&self.instance, self.ttl).await?;
        self.next_lapse = next_lapse.map(|d| Instant::now() + d);
        if !members.contains(&self.instance) {
            members.push(self.instance.clone());
        }
        self.metrics.members(members.len());
        let wanted = assigned(self.count, &members, &self.instance);
        // 3. Shards fenced off are not owned.
        for shard in self.side.fenced() {
            self.owned.remove(&shard);
        }
        // 4. Release what moved to another member, once the worker let it go.
        self.release_let_go().await?;
        let moving = self.owned_outside(&wanted);
        self.lose(&moving, "assigned to another member");
        let now = Instant::now();
        self.releasing.extend(moving.iter().map(|&s| (s, now)));
        // 5. Hold the share; an owned shard whose lease another holds is lost.
        let held = self.leases.hold(&self.instance, &wanted, self.ttl).await?;
        self.renewed = Some(Instant::now());
        let lost = self.owned_outside(&held);
        self.lose(&lost, "its lease is another member's");
        // 6. Claim what is newly held (a shard moving away that is this member's again
        //    included).
        let new: Vec<u32> = held
            .into_iter()
            .filter(|s| !self.owned.contains(s))
            .collect();
        for shard in &new {
            self.releasing.remove(shard);
        }
        if new.is_empty() {
            return Ok(Vec::new());
        }
        let claims = self
            .store
            .claim_shards(&self.instance, self.count, &new)
            .await?;
        self.owned.extend(claims.iter().map(|c| c.shard));
        tracing::info!(instance = %self.instance, shards = ?new, "shards claimed");
        Ok(claims)
    }

    /// The owned shards not in `shards` (ascending, as `assigned` and `hold` give them).
    fn owned_outside(&self, shards: &[u32]) -> Vec<u32> {
        self.owned
            .iter()
            .copied()
            .filter(|s| shards.binary_search(s).is_err())
            .collect()
    }

    /// Step 4's first half: the leases of the moving shards the worker let go are
    /// released; those it has not let go within a lease period have lapsed by now.
    async fn release_let_go(&mut self) -> Result<(), ports::Error> {
        let let_go: Vec<u32> = self
            .side
            .released()
            .into_iter()
            .filter(|s| self.releasing.contains_key(s))
            .collect();
        self.leases.release(&self.instance, &let_go).await?;
        for shard in &let_go {
            self.releasing.remove(shard);
        }
        let ttl = self.ttl;
        self.releasing.retain(|_, since| since.elapsed() < ttl);
        Ok(())
    }

    /// The worker stops applying `shards` (owned ones), which are no longer owned.
    fn lose(&mut self, shards: &[u32], why: &str) {
        if shards.is_empty() {
            return;
        }
        for shard in shards {
            self.owned.remove(shard);
        }
        tracing::info!(instance = %self.instance, shards = ?shards, why, "shards given up");
        self.side.send(OwnershipChange::Lost(shards.to_vec()));
    }

    /// No tick renewed the leases for a whole lease period: they may be other members' by
    /// now, so the worker stops applying every shard until a tick holds them again.
    fn lapse_if_stale(&mut self) {
        if self.renewed.is_some_and(|at| at.elapsed() >= self.ttl) && !self.owned.is_empty() {
            let all: Vec<u32> = self.owned.iter().copied().collect();
            self.lose(&all, "its lease was not renewed for a whole lease period");
        }
    }

    /// On stop: once the worker has stopped (bounded by one lease period), releases every
    /// lease and leaves. A failure only means the others wait for the leases to lapse.
    async fn leave(&mut self) {
        if tokio::time::timeout(self.ttl, self.side.worker_gone())
            .await
            .is_err()
        {
            tracing::warn!(instance = %self.instance, "the worker did not stop within a lease period; handing the shards over anyway (its late writes are fenced off)");
        }
        let mut owned: Vec<u32> = std::mem::take(&mut self.owned).into_iter().collect();
        owned.extend(std::mem::take(&mut self.releasing).into_keys());
        let released = self.leases.release(&self.instance, &owned).await;
        let left = self.leases.leave(&self.instance).await;
        if let Err(error) = released.and(left) {
            tracing::warn!(error = %error_chain(&error), instance = %self.instance, "leases not released; the others take the shards once they lapse");
            return;
        }
        tracing::info!(instance = %self.instance, shards = owned.len(), "shards handed over");
    }
}

#[cfg(test)]
mod tests;
