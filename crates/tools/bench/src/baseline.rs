//! The seed-shaped baseline: the Go worker's I/O pattern, one entry at a time, every call
//! awaited before the next — XREAD COUNT 1 → get → CAS (→ fallback health-only update)
//! → get → XADD → offset SET. It follows the same rules (decode, plan table, debounce), so
//! it must leave the same rows and snapshots as the worker; only the I/O shape differs.

use std::collections::HashMap;
use std::time::Duration;

use adapters_redis::RedisLobbyEventsPublisher;
use domain_runtime::{EngineHealth, GameId, RuntimeStatus};
use pg_kit::Pool;
use pg_kit::tokio_postgres::Statement;
use ports::{LobbyEvent, LobbyEventsPublisher, RuntimeSnapshot};
use redis_streams::{RedisOffsetStore, RedisSettings, RedisStreamReader};
use stream_consumer::{EntryId, StreamEntry, StreamOffsetStore, StreamReader};
use worker_healthevents::decode;

use crate::fixture::Fixture;
use crate::workload::now_ms;

const LABEL: &str = "health_events";

/// Drains `stream` up to `last`, publishing on `lobby`, offsets under service `service`.
///
/// # Errors
/// A server failed (the baseline does not retry: a benchmark run on a broken server
/// should stop).
pub async fn drain(
    fx: &Fixture,
    pool: &Pool,
    stream: &str,
    lobby: &str,
    service: &str,
    last: EntryId,
) -> anyhow::Result<()> {
    let reader =
        RedisStreamReader::connect(&fx.redis_url, RedisSettings::default(), "baseline-reader")
            .await?;
    let offsets = RedisOffsetStore::new(fx.redis.clone(), service);
    let mut worker = Baseline::prepare(
        pool,
        RedisLobbyEventsPublisher::new(fx.redis.clone(), lobby),
    )
    .await?;
    let mut position = offsets.load(LABEL).await?.unwrap_or(EntryId::ZERO);
    while position < last {
        let batch = reader
            .read_after(stream, position, 1, Duration::from_millis(100))
            .await?;
        for entry in batch {
            position = entry.id;
            worker.handle(&entry).await?;
            // 6. offset SET
            offsets.save(LABEL, position).await?;
        }
    }
    Ok(())
}

/// The seed's worker: one connection, its three statements, its publisher and its
/// debounce memory.
struct Baseline {
    db: pg_kit::Object,
    get: Statement,
    cas: Statement,
    health_only: Statement,
    publisher: RedisLobbyEventsPublisher,
    last_published: HashMap<String, String>,
}

impl Baseline {
    async fn prepare(pool: &Pool, publisher: RedisLobbyEventsPublisher) -> anyhow::Result<Self> {
        let db = pool.get().await?;
        let get = db
            .prepare_cached(
                "SELECT status, engine_health, current_turn FROM runtime_records WHERE game_id = $1",
            )
            .await?;
        let cas = db
            .prepare_cached(
                "UPDATE runtime_records SET status = $2, engine_health = $3, updated_at = now()
                 WHERE game_id = $1 AND status = $4",
            )
            .await?;
        let health_only = db
            .prepare_cached(
                "UPDATE runtime_records SET engine_health = $2, updated_at = now() WHERE game_id = $1",
            )
            .await?;
        Ok(Self {
            db,
            get,
            cas,
            health_only,
            publisher,
            last_published: HashMap::new(),
        })
    }

    /// One entry, steps 1 to 5, each awaited in turn (the offset is the caller's step 6).
    async fn handle(&mut self, entry: &StreamEntry) -> anyhow::Result<()> {
        let Ok(event) = decode(entry) else {
            return Ok(());
        };
        let game = event.game_id.as_str();
        // 1. get
        // (the seed reads the record first: it needs to know the game exists)
        if self.db.query_opt(&self.get, &[&game]).await?.is_none() {
            return Ok(());
        }
        let plan = domain_runtime::plan(event.event_type);
        let summary = plan.summary.as_str();
        // 2. CAS, or the health-only fallback
        let mut changed = false;
        if let Some(t) = plan.transition {
            let n = self
                .db
                .execute(
                    &self.cas,
                    &[&game, &t.to().as_str(), &summary, &t.from().as_str()],
                )
                .await?;
            changed = n == 1;
        }
        if !changed {
            self.db
                .execute(&self.health_only, &[&game, &summary])
                .await?;
        }
        // 3. publish when the status changed or the summary differs
        if changed || self.last_published.get(game).is_none_or(|s| s != summary) {
            let source = contracts::SourceEntryId {
                ms: entry.id.ms,
                seq: entry.id.seq,
            };
            self.publish(game, source).await?;
            self.last_published
                .insert(game.to_owned(), summary.to_owned());
        }
        Ok(())
    }

    /// 4. get again, 5. XADD.
    async fn publish(&self, game: &str, source: contracts::SourceEntryId) -> anyhow::Result<()> {
        let row = self.db.query_one(&self.get, &[&game]).await?;
        let status: String = row.get(0);
        let health: String = row.get(1);
        let turn: i32 = row.get(2);
        let snapshot = RuntimeSnapshot {
            game_id: GameId::new(game)?,
            current_turn: u32::try_from(turn)?,
            runtime_status: status.parse::<RuntimeStatus>()?,
            engine_health: EngineHealth::parse_stored(&health)?,
            occurred_at_ms: now_ms(),
            player_turn_stats: Vec::new(),
            source_entry_id: Some(source),
        };
        self.publisher
            .publish(&[LobbyEvent::SnapshotUpdate(snapshot)])
            .await?;
        Ok(())
    }
}
