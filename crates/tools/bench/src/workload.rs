//! The event mix and the preloading of a stream.

use contracts::health_events::fields as field;
use domain_runtime::HealthEventType as E;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis_streams::{RedisClient, StreamWriter};
use stream_consumer::EntryId;

/// The realistic mix, in percent.
pub const MIX: [(E, u32); 7] = [
    (E::ProbeFailed, 30),
    (E::ProbeRecovered, 30),
    (E::InspectUnhealthy, 20),
    (E::ContainerStarted, 8),
    (E::ContainerExited, 5),
    (E::ContainerOom, 4),
    (E::ContainerDisappeared, 3),
];

/// The id of game `i` (0-based), matching `Fixture::seed_games`.
#[must_use]
pub fn game_id(i: usize) -> String {
    format!("g{:06}", i + 1)
}

/// `n` events over `games` games, reproducible from `seed`.
#[must_use]
pub fn events(n: usize, games: usize, seed: u64) -> Vec<(usize, E)> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let game = rng.random_range(0..games);
            let mut pick = rng.random_range(0..100u32);
            let kind = MIX
                .iter()
                .find(|(_, share)| {
                    if pick < *share {
                        true
                    } else {
                        pick -= share;
                        false
                    }
                })
                .map_or(E::ProbeFailed, |(k, _)| *k);
            (game, kind)
        })
        .collect()
}

/// The wire fields of one health event.
#[must_use]
pub fn fields(game: usize, kind: E, at_ms: u64) -> Vec<(&'static str, String)> {
    vec![
        (field::GAME_ID, game_id(game)),
        (field::CONTAINER_ID, format!("c-{game}")),
        (field::EVENT_TYPE, kind.as_str().to_owned()),
        (field::OCCURRED_AT_MS, at_ms.to_string()),
        (field::DETAILS, "{}".to_owned()),
    ]
}

/// Appends `events` to `stream` in pipelined chunks; returns the last id.
///
/// # Errors
/// Redis failed.
pub async fn preload(
    redis: &RedisClient,
    stream: &str,
    events: &[(usize, E)],
) -> anyhow::Result<EntryId> {
    let now = now_ms();
    preload_entries(
        redis,
        stream,
        events.iter().map(|(g, k)| fields(*g, *k, now)),
    )
    .await
}

/// Appends entries given as their fields to `stream` in pipelined chunks; returns the
/// last id.
///
/// # Errors
/// Redis failed.
pub async fn preload_entries(
    redis: &RedisClient,
    stream: &str,
    entries: impl IntoIterator<Item = Vec<(&'static str, String)>>,
) -> anyhow::Result<EntryId> {
    let ids = preload_ids(redis, stream, entries).await?;
    Ok(ids.last().copied().unwrap_or(EntryId::ZERO))
}

/// [`preload_entries`], returning every entry's id, in order.
///
/// # Errors
/// Redis failed.
pub async fn preload_ids(
    redis: &RedisClient,
    stream: &str,
    entries: impl IntoIterator<Item = Vec<(&'static str, String)>>,
) -> anyhow::Result<Vec<EntryId>> {
    let writer = StreamWriter::new(redis.clone(), stream);
    let mut ids = Vec::new();
    let mut chunk = Vec::with_capacity(1000);
    let mut entries = entries.into_iter().peekable();
    while entries.peek().is_some() {
        chunk.clear();
        chunk.extend(entries.by_ref().take(1000));
        ids.extend(writer.append(&chunk).await?);
    }
    Ok(ids)
}

/// Milliseconds since the epoch.
#[must_use]
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_adds_up_and_a_seed_reproduces_the_workload() {
        assert_eq!(MIX.iter().map(|(_, s)| s).sum::<u32>(), 100);
        assert_eq!(events(500, 10, 7), events(500, 10, 7));
        assert_ne!(events(500, 10, 7), events(500, 10, 8));
        let sample = events(100_000, 1000, 1);
        let oom = sample.iter().filter(|(_, k)| *k == E::ContainerOom).count();
        assert!((3_500..4_500).contains(&oom), "{oom}");
    }
}
