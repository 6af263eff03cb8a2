//! Connection settings shared by every Redis client of a service.

use std::time::Duration;

/// The longest `BLOCK` a read will ask the server for.
///
/// A blocking `XREAD` holds its connection (and the reading task) until an entry arrives or
/// the block runs out, so a long block delays shutdown and hides a dead server. Five seconds
/// keeps shutdown prompt while costing an idle consumer one round trip per five seconds.
/// Longer requests are cut to this.
pub const MAX_BLOCK: Duration = Duration::from_secs(5);

/// How a Redis client connects, times out and reconnects.
///
/// Every field has a sensible default ([`RedisSettings::default`]); services expose the ones
/// operators care about as settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisSettings {
    /// How long one TCP connect (plus the handshake) may take, at start-up and on every
    /// reconnection. Also bounds the start-up connection check.
    pub connect_timeout: Duration,
    /// How long a command may wait for its reply. A blocking read gets its block on top of
    /// this. A connection that leaves a (non-blocking) command unanswered this long is
    /// considered dead, closed and reconnected.
    pub command_timeout: Duration,
    /// First delay before reconnecting after a lost connection; it doubles on every failed
    /// attempt up to [`Self::reconnect_max_delay`]. Reconnection never gives up.
    pub reconnect_min_delay: Duration,
    /// Longest delay between two reconnection attempts. Kept well under a shard lease
    /// (2 s by default): while any one node of a cluster is being reconnected, fred fails
    /// every command of the client, so after a Redis master fails over the client stays
    /// down until its next attempt, however soon the cluster is whole again.
    pub reconnect_max_delay: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            reconnect_min_delay: Duration::from_millis(100),
            reconnect_max_delay: Duration::from_millis(500),
        }
    }
}

/// Milliseconds as the `u32` fred's reconnect policy takes (saturating; at least 1).
pub(crate) fn millis_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_saturate_and_never_reach_zero() {
        assert_eq!(millis_u32(Duration::ZERO), 1);
        assert_eq!(millis_u32(Duration::from_millis(250)), 250);
        assert_eq!(millis_u32(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
