//! Test fixtures shared by every crate's integration tests, so that each test gets its own
//! database, stream and key names, and so that throwaway servers for fault tests are
//! started in one place.
//!
//! Settings: `GALAXY_TEST_POSTGRES_URL` (an admin URL on the shared server, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and `GALAXY_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`).

pub mod adversarial;
pub mod bins;
pub mod http;
pub mod pg;
pub mod redis;

use std::sync::atomic::{AtomicU64, Ordering};

/// A name no other test (in this process or another) uses: `<prefix>_<pid>_<n>_<random>`,
/// lower-case ASCII, safe as a database name, a stream key or a key prefix.
#[must_use]
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let salt: u32 = rand::random();
    format!("{prefix}_{}_{n}_{salt:08x}", std::process::id())
}

/// Polls `check` every 50 ms until it returns `true` or `timeout` passes.
///
/// # Errors
/// `what` did not happen in time.
pub async fn eventually<F, Fut>(
    what: &str,
    timeout: std::time::Duration,
    mut check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("{what}: not within {timeout:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, release).
///
/// # Panics
/// When the machine cannot bind a loopback socket at all: the test cannot run.
#[must_use]
#[allow(clippy::expect_used)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port for a throwaway server")
}
