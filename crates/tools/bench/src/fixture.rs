//! The bench's own database and Redis keys.

use contracts::lobby_events::fields as field;
use std::collections::BTreeMap;

use anyhow::Context;
use pg_kit::{PgSettings, Pool};
use redis_streams::{RedisClient, RedisSettings, RedisStreamReader};
use stream_consumer::{EntryId, StreamReader};

use crate::Options;

/// Per-game sequence of published snapshots: (status, summary, current turn).
pub type Snapshots = BTreeMap<String, Vec<(String, String, String)>>;
/// Final rows: game → (status, engine_health).
pub type Rows = BTreeMap<String, (String, String)>;

/// Connections to the bench's database and Redis.
pub struct Fixture {
    pub pool: Pool,
    pub redis: RedisClient,
    pub db_url: String,
    pub redis_url: String,
    admin_url: String,
    database: String,
    keys: std::sync::Mutex<Vec<String>>,
}

async fn admin(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| "connect to the PostgreSQL admin URL")?;
    tokio::spawn(conn);
    Ok(client)
}

impl Fixture {
    /// Drops and re-creates the bench database, migrates it, connects Redis.
    pub async fn create(opts: &Options) -> anyhow::Result<Self> {
        let admin_client = admin(&opts.postgres_admin_url).await?;
        let db = &opts.database;
        if !db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            anyhow::bail!("database name {db:?}: use letters, digits and _");
        }
        for statement in [
            format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
            format!("CREATE DATABASE {db}"),
        ] {
            admin_client
                .batch_execute(&statement)
                .await
                .context("re-create the bench database")?;
        }
        let db_url = testkit::pg::url_with_database(&opts.postgres_admin_url, db);
        let pool = pg_kit::connect(&db_url, &PgSettings::default().max_connections(4))
            .await
            .context("connect to the bench database")?;
        adapters_postgres::migrate(&pool).await.context("migrate")?;
        let redis = redis_streams::connect(&opts.redis_url, RedisSettings::default(), "bench")
            .await
            .context("connect to Redis")?;
        Ok(Self {
            pool,
            redis,
            db_url,
            redis_url: opts.redis_url.clone(),
            admin_url: opts.postgres_admin_url.clone(),
            database: db.clone(),
            keys: std::sync::Mutex::default(),
        })
    }

    /// A Redis key the bench uses (deleted now and at cleanup).
    pub async fn key(&self, name: &str) -> anyhow::Result<String> {
        let key = format!("bench:{name}");
        self.del(std::slice::from_ref(&key)).await?;
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(key.clone());
        Ok(key)
    }

    /// Deletes keys.
    pub async fn del(&self, keys: &[String]) -> anyhow::Result<()> {
        self.redis.delete(keys).await.context("delete bench keys")?;
        Ok(())
    }

    /// Replaces the games with `n` fresh ones (`g000001`…, `running`, turn 0).
    pub async fn seed_games(&self, n: usize) -> anyhow::Result<()> {
        let c = self.pool.get().await?;
        c.batch_execute("TRUNCATE runtime_records, gm_shards, gm_unpublished")
            .await?;
        let n = i64::try_from(n)?;
        c.execute(
            "INSERT INTO runtime_records (game_id, status, current_turn)
             SELECT 'g' || lpad(g::text, 6, '0'), 'running', 0 FROM generate_series(1, $1::bigint) g",
            &[&n],
        )
        .await?;
        c.batch_execute("VACUUM ANALYZE runtime_records").await?;
        Ok(())
    }

    /// Puts every game back to `running` with no summary, and forgets the shards'
    /// checkpoints, published marks and unpublished snapshots, so the same entries are
    /// applied again as if for the first time (between runs; a run's last snapshots
    /// would otherwise be published again at the start of the next).
    pub async fn reset_games(&self) -> anyhow::Result<()> {
        let c = self.pool.get().await?;
        c.batch_execute(
            "UPDATE runtime_records SET status = 'running', engine_health = '', updated_at = now();
             UPDATE gm_shards SET checkpoint_ms = NULL, checkpoint_seq = NULL,
                                  published_ms = NULL, published_seq = NULL;
             TRUNCATE gm_unpublished",
        )
        .await?;
        c.batch_execute("VACUUM ANALYZE runtime_records").await?;
        Ok(())
    }

    /// Every row.
    pub async fn rows(&self) -> anyhow::Result<Rows> {
        let c = self.pool.get().await?;
        Ok(c.query(
            "SELECT game_id, status, engine_health FROM runtime_records",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
    }

    /// Every snapshot on `stream`, grouped by game in stream order.
    pub async fn snapshots(&self, stream: &str) -> anyhow::Result<Snapshots> {
        let reader =
            RedisStreamReader::connect(&self.redis_url, RedisSettings::default(), "bench-check")
                .await?;
        let mut out = Snapshots::new();
        let mut after = EntryId::ZERO;
        loop {
            let batch = reader
                .read_after(stream, after, 5000, std::time::Duration::ZERO)
                .await?;
            let Some(last) = batch.last() else { break };
            after = last.id;
            for e in &batch {
                let text =
                    |f: &str| String::from_utf8_lossy(e.field(f).unwrap_or_default()).into_owned();
                out.entry(text(field::GAME_ID)).or_default().push((
                    text(field::RUNTIME_STATUS),
                    text(field::ENGINE_HEALTH_SUMMARY),
                    text(field::CURRENT_TURN),
                ));
            }
        }
        Ok(out)
    }

    /// Drops the database and deletes the keys.
    pub async fn cleanup(&self) -> anyhow::Result<()> {
        let keys = std::mem::take(
            &mut *self
                .keys
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.del(&keys).await?;
        self.pool.close();
        admin(&self.admin_url)
            .await?
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.database
            ))
            .await?;
        Ok(())
    }
}
