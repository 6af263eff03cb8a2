#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use domain_runtime::ShardClaim;
use ports::{MockRuntimeRecordStore, WorkerSide, handover};

use super::*;

/// Leases in memory: members (alive as long as listed) and each lease's holder.
#[derive(Debug, Default)]
struct Leases {
    members: Vec<String>,
    holders: HashMap<u32, String>,
    down: bool,
    left: Vec<String>,
    /// What heartbeats say of the next lapse of another member, while there is one.
    lapse: Option<Duration>,
}

#[derive(Debug, Clone, Default)]
struct FakeLeases(Arc<Mutex<Leases>>);

fn unavailable() -> ports::Error {
    ports::Error::Unavailable("connection refused".into())
}

#[async_trait]
impl ShardLeases for FakeLeases {
    async fn heartbeat(&self, member: &str, _: Duration) -> Result<ports::Members, ports::Error> {
        let mut l = self.0.lock().unwrap();
        if l.down {
            return Err(unavailable());
        }
        if !l.members.iter().any(|m| m == member) {
            l.members.push(member.to_owned());
        }
        let mut alive = l.members.clone();
        alive.sort();
        let next_lapse = l.lapse.filter(|_| alive.len() > 1);
        Ok(ports::Members { alive, next_lapse })
    }

    async fn hold(
        &self,
        member: &str,
        shards: &[u32],
        _: Duration,
    ) -> Result<Vec<u32>, ports::Error> {
        let mut l = self.0.lock().unwrap();
        if l.down {
            return Err(unavailable());
        }
        Ok(shards
            .iter()
            .copied()
            .filter(|s| l.holders.entry(*s).or_insert_with(|| member.to_owned()) == member)
            .collect())
    }

    async fn release(&self, member: &str, shards: &[u32]) -> Result<(), ports::Error> {
        let mut l = self.0.lock().unwrap();
        if l.down {
            return Err(unavailable());
        }
        l.holders
            .retain(|s, h| !(h == member && shards.contains(s)));
        Ok(())
    }

    async fn leave(&self, member: &str) -> Result<(), ports::Error> {
        let mut l = self.0.lock().unwrap();
        l.members.retain(|m| m != member);
        l.left.push(member.to_owned());
        Ok(())
    }
}

impl FakeLeases {
    fn state(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.0.lock().unwrap()
    }

    fn held_by(&self, member: &str) -> usize {
        self.state()
            .holders
            .values()
            .filter(|h| *h == member)
            .count()
    }
}

/// A store whose claims raise each shard's epoch by one and keep no checkpoint.
fn store() -> MockRuntimeRecordStore {
    let epochs: Arc<Mutex<HashMap<u32, u64>>> = Arc::default();
    let mut store = MockRuntimeRecordStore::new();
    store.expect_claim_shards().returning(move |_, _, shards| {
        let mut epochs = epochs.lock().unwrap();
        Ok(shards
            .iter()
            .map(|&shard| {
                let epoch = epochs.entry(shard).or_default();
                *epoch += 1;
                ShardClaim {
                    shard,
                    epoch: *epoch,
                    checkpoint: None,
                    published: None,
                }
            })
            .collect())
    });
    store
}

const TTL: Duration = Duration::from_secs(2);

fn keeper(
    leases: &FakeLeases,
    me: &str,
) -> (LeaseKeeper<FakeLeases, MockRuntimeRecordStore>, WorkerSide) {
    let (keeper, worker) = handover();
    let k = LeaseKeeper::new(
        leases.clone(),
        store(),
        me,
        ShardCount::default(),
        TTL,
        keeper,
        KeeperMetrics::default(),
    );
    (k, worker)
}

fn gained(changes: &[OwnershipChange]) -> Vec<u32> {
    changes
        .iter()
        .flat_map(|c| match c {
            OwnershipChange::Gained(claims) => claims.iter().map(|c| c.shard).collect(),
            OwnershipChange::Lost(_) => Vec::new(),
        })
        .collect()
}

fn lost(changes: &[OwnershipChange]) -> Vec<u32> {
    changes
        .iter()
        .flat_map(|c| match c {
            OwnershipChange::Lost(shards) => shards.clone(),
            OwnershipChange::Gained(_) => Vec::new(),
        })
        .collect()
}

#[tokio::test]
async fn a_lone_instance_claims_every_shard_at_start_and_then_only_renews() {
    let leases = FakeLeases::default();
    let (mut k, mut worker) = keeper(&leases, "gm-a");
    let claims = k.start().await.unwrap();
    assert_eq!(claims.len(), 64);
    assert!(claims.iter().all(|c| c.epoch == 1));
    k.tick().await.unwrap();
    assert!(worker.changes().is_empty(), "nothing moves");
    assert_eq!(leases.held_by("gm-a"), 64);
    assert_eq!(k.metrics.takeovers(), 0, "the start is no takeover");
}

#[tokio::test]
async fn a_member_that_joins_gets_its_share_released_to_it_and_claims_it() {
    let leases = FakeLeases::default();
    let (mut a, mut a_worker) = keeper(&leases, "gm-a");
    a.start().await.unwrap();
    let (mut b, mut b_worker) = keeper(&leases, "gm-b");
    assert!(
        b.start().await.unwrap().is_empty(),
        "gm-a holds every lease yet"
    );
    // gm-a sees gm-b: its worker stops applying gm-b's share; the leases stay until the
    // worker has let the shards go.
    a.tick().await.unwrap();
    let released = lost(&a_worker.changes());
    let share = assigned(
        ShardCount::default(),
        &["gm-a".into(), "gm-b".into()],
        "gm-b",
    );
    assert_eq!(released, share);
    b.tick().await.unwrap();
    assert!(
        b_worker.changes().is_empty(),
        "not before gm-a's worker let go"
    );
    a_worker.report_released(released);
    a.tick().await.unwrap();
    // gm-b takes them at its next tick.
    b.tick().await.unwrap();
    assert_eq!(gained(&b_worker.changes()), share);
    assert_eq!(b.metrics.takeovers(), share.len() as u64);
    assert_eq!(leases.held_by("gm-a") + leases.held_by("gm-b"), 64);
    assert_eq!(leases.held_by("gm-b"), share.len());
}

#[tokio::test]
async fn a_shard_whose_lease_another_member_holds_is_lost_at_once() {
    let leases = FakeLeases::default();
    let (mut k, mut worker) = keeper(&leases, "gm-a");
    k.start().await.unwrap();
    // A Redis fail-over lost the lease, and another member took it.
    leases.state().holders.insert(9, "gm-z".into());
    k.tick().await.unwrap();
    assert_eq!(worker.changes(), [OwnershipChange::Lost(vec![9])]);
}

#[tokio::test]
async fn a_shard_the_worker_found_fenced_is_claimed_again_while_its_lease_is_ours() {
    let leases = FakeLeases::default();
    let (mut k, mut worker) = keeper(&leases, "gm-a");
    k.start().await.unwrap();
    worker.report_fenced(vec![4]);
    k.tick().await.unwrap();
    let changes = worker.changes();
    assert_eq!(gained(&changes), [4]);
    let OwnershipChange::Gained(claims) = &changes[0] else {
        panic!("{changes:?}")
    };
    assert_eq!(claims[0].epoch, 2, "claimed under a new epoch");
}

#[tokio::test(start_paused = true)]
async fn leases_not_renewed_for_a_lease_period_stop_the_worker_until_a_tick_holds_them() {
    let leases = FakeLeases::default();
    let (mut k, mut worker) = keeper(&leases, "gm-a");
    k.start().await.unwrap();
    leases.state().down = true;
    assert!(k.tick().await.is_err());
    assert!(
        worker.changes().is_empty(),
        "one failed tick is not a lapse"
    );
    tokio::time::advance(TTL).await;
    assert!(k.tick().await.is_err());
    assert_eq!(lost(&worker.changes()).len(), 64);
    leases.state().down = false;
    k.tick().await.unwrap();
    assert_eq!(
        gained(&worker.changes()).len(),
        64,
        "held again, claimed again"
    );
}

#[tokio::test]
async fn on_stop_every_lease_is_released_once_the_worker_is_gone_and_the_instance_leaves() {
    let leases = FakeLeases::default();
    let (mut k, worker) = keeper(&leases, "gm-a");
    k.start().await.unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(k.run(stop.clone()));
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(leases.held_by("gm-a"), 64, "the worker still runs");
    drop(worker);
    run.await.unwrap();
    assert_eq!(leases.held_by("gm-a"), 0);
    assert_eq!(leases.state().left, ["gm-a"]);
    assert!(leases.state().members.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_notice_starts_the_next_tick_at_once_instead_of_a_period_later() {
    let leases = FakeLeases::default();
    let (mut b, _b_worker) = keeper(&leases, "gm-b");
    assert_eq!(b.start().await.unwrap().len(), 64);
    let (mut a, mut a_worker) = keeper(&leases, "gm-a");
    assert!(a.start().await.unwrap().is_empty(), "b holds every lease");
    let (every, wake) = (a.tick_every(), a.waker());
    let stop = CancellationToken::new();
    let run = tokio::spawn(a.run(stop.clone()));

    // b stops: its leases go, it leaves, and the notice reaches a.
    let all: Vec<u32> = (0..64).collect();
    leases.release("gm-b", &all).await.unwrap();
    leases.leave("gm-b").await.unwrap();
    let noticed = Instant::now();
    wake.notify_one();
    let mut taken = Vec::new();
    while taken.len() < 64 && noticed.elapsed() < every {
        tokio::time::sleep(Duration::from_millis(10)).await;
        taken.extend(gained(&a_worker.changes()));
    }
    assert_eq!(taken.len(), 64, "a took b's shards within {every:?}");
    assert!(noticed.elapsed() < every);
    stop.cancel();
    drop(a_worker);
    run.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_worker_letting_shards_go_wakes_the_keeper_to_release_their_leases_at_once() {
    let leases = FakeLeases::default();
    let (mut a, mut a_worker) = keeper(&leases, "gm-a");
    a.start().await.unwrap();
    let (mut b, _b_worker) = keeper(&leases, "gm-b");
    b.start().await.unwrap();
    a.tick().await.unwrap();
    let moving = lost(&a_worker.changes());
    assert!(!moving.is_empty(), "gm-b's share moves");
    let every = a.tick_every();
    let stop = CancellationToken::new();
    let run = tokio::spawn(a.run(stop.clone()));

    let reported = Instant::now();
    a_worker.report_released(moving.clone());
    while leases.held_by("gm-a") > 64 - moving.len() && reported.elapsed() < every {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(leases.held_by("gm-a"), 64 - moving.len());
    assert!(reported.elapsed() < every, "released before the next tick");
    stop.cancel();
    drop(a_worker);
    run.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_dead_members_shards_are_taken_just_after_it_lapses_not_a_period_later() {
    let leases = FakeLeases::default();
    let (mut b, _b_worker) = keeper(&leases, "gm-b");
    assert_eq!(b.start().await.unwrap().len(), 64);
    // gm-b dies now: its heartbeat lapses in 300 ms, and its leases with it.
    leases.state().lapse = Some(Duration::from_millis(300));
    let (mut a, mut a_worker) = keeper(&leases, "gm-a");
    assert!(
        a.start().await.unwrap().is_empty(),
        "gm-b holds every lease"
    );
    let every = a.tick_every();
    let stop = CancellationToken::new();
    let run = tokio::spawn(a.run(stop.clone()));
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        let mut state = leases.state();
        state.members.retain(|m| m != "gm-b");
        state.holders.clear();
    }
    let mut taken = Vec::new();
    while taken.len() < 64 && started.elapsed() < every {
        tokio::time::sleep(Duration::from_millis(10)).await;
        taken.extend(gained(&a_worker.changes()));
    }
    assert_eq!(taken.len(), 64, "taken within {:?}", started.elapsed());
    assert!(started.elapsed() < every);
    stop.cancel();
    drop(a_worker);
    run.await.unwrap();
}
