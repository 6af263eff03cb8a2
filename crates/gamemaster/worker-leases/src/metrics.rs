//! The keeper's metrics: `gamemaster_shard_takeovers_total` (shards claimed while
//! running), `gamemaster_lease_errors_total` (ticks that failed) and `gamemaster_members`
//! (instances alive, as the last heartbeat saw them).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The keeper's metric handles; cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct KeeperMetrics {
    takeovers: Counter,
    errors: Counter,
    members: Gauge,
}

impl KeeperMetrics {
    /// Creates the metrics and registers them in `registry` (which carries the
    /// `gamemaster` prefix).
    #[must_use]
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "shard_takeovers",
            "Shards this instance claimed while running (from a member that left, died or was assigned elsewhere)",
            m.takeovers.clone(),
        );
        registry.register(
            "lease_errors",
            "Lease ticks that failed (Redis or PostgreSQL unreachable); the next tick tries again",
            m.errors.clone(),
        );
        registry.register(
            "members",
            "Game Master instances alive, as this instance's last heartbeat saw them",
            m.members.clone(),
        );
        m
    }

    pub(crate) fn took_over(&self, shards: usize) {
        self.takeovers.inc_by(shards as u64);
    }

    pub(crate) fn failed(&self) {
        self.errors.inc();
    }

    pub(crate) fn members(&self, n: usize) {
        self.members.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Shards claimed while running so far.
    #[must_use]
    pub fn takeovers(&self) -> u64 {
        self.takeovers.get()
    }

    /// Ticks failed so far.
    #[must_use]
    pub fn errors(&self) -> u64 {
        self.errors.get()
    }
}
