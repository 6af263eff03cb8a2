//! Shared test settings.

use std::time::Duration;

use redis_streams::RedisSettings;

/// Short timeouts and quick reconnects, so fault tests finish fast.
pub fn settings() -> RedisSettings {
    RedisSettings {
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(1),
        reconnect_min_delay: Duration::from_millis(50),
        reconnect_max_delay: Duration::from_millis(500),
    }
}
