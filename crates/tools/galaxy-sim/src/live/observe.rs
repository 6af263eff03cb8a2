//! What `galaxy-live` looks at: the three services' databases, the four streams, and the
//! engine processes themselves.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use contracts::JobResult;
use domain_runtime::GameId;
use pg_kit::Pool;
use redis_streams::RedisStreamReader;
use stream_consumer::{EntryId, StreamEntry, StreamReader};

/// Entries read per round trip.
const PAGE: usize = 10_000;

/// How long one probe of an engine may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A game's engine, as the Runtime Manager registered it.
pub struct Engine {
    /// The game.
    pub game_id: GameId,
    container_id: String,
    endpoint: SocketAddr,
    pid: u32,
}

impl Engine {
    /// Whether the engine answers its health probe.
    pub async fn answers(&self) -> bool {
        matches!(
            service_kit::http::request(self.endpoint, "GET", "/healthz", PROBE_TIMEOUT).await,
            Ok((200, _))
        )
    }

    /// Sends the engine's process `signal` (`KILL`, `STOP`, `CONT`).
    ///
    /// # Errors
    /// `kill` could not run or refused.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid.to_string()])
            .status()
            .context("run kill")?;
        if !status.success() {
            bail!("kill -{signal} {} ({}) failed", self.pid, self.game_id);
        }
        Ok(())
    }

    /// Asks the engine to hold `mib` MiB more. The Runtime Manager may kill it while it
    /// answers, so only a refused connection is an error.
    ///
    /// # Errors
    /// Nothing listens on the engine's endpoint.
    pub async fn allocate(&self, mib: u32, timeout: Duration) -> anyhow::Result<()> {
        let path = format!("/allocate/{mib}");
        match service_kit::http::request(self.endpoint, "POST", &path, timeout).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                Err(e).with_context(|| format!("ask {}'s engine to allocate", self.game_id))
            }
            _ => Ok(()),
        }
    }

    /// Whether the engine's process is gone: its pid is free or holds another process,
    /// and nothing answers on its endpoint.
    pub async fn gone(&self) -> bool {
        rtm_adapters::container_id(self.pid).as_deref() != Some(self.container_id.as_str())
            && !self.answers().await
    }
}

/// A Lobby game as `galaxy-live` checks it.
pub struct LobbyGame {
    /// Its Lobby status.
    pub status: String,
    /// `runtime_status/engine_health_summary` of its snapshot.
    pub shown: String,
    /// Its snapshot's engine-health summary.
    pub summary: String,
    /// Its last stop's outcome, once answered.
    pub stop_outcome: Option<String>,
}

/// The health events read so far, by game, and where the reading stopped.
#[derive(Default)]
struct HealthLog {
    after: EntryId,
    by_game: BTreeMap<String, Vec<String>>,
}

/// The databases and streams.
pub struct View {
    gm: Pool,
    lobby: Pool,
    rtm: Pool,
    reader: RedisStreamReader,
    health: HealthLog,
}

impl View {
    /// A view over the three databases and the streams `reader` reads.
    pub fn new(gm: Pool, lobby: Pool, rtm: Pool, reader: RedisStreamReader) -> Self {
        Self {
            gm,
            lobby,
            rtm,
            reader,
            health: HealthLog::default(),
        }
    }

    /// The stream the Game Master publishes on (the demo's default).
    pub fn lobby_events_stream(&self) -> &'static str {
        contracts::lobby_events::DEFAULT_STREAM
    }

    /// The stream the Lobby sends stop jobs on (the demo's default).
    pub fn stop_jobs_stream(&self) -> &'static str {
        contracts::stop_jobs::DEFAULT_STREAM
    }

    /// The game's running engine, from the Runtime Manager's registry.
    ///
    /// # Errors
    /// The registry has none, or holds one this driver did not make.
    pub async fn engine(&self, game_id: &GameId) -> anyhow::Result<Engine> {
        let client = self.rtm.get().await?;
        let row = client
            .query_opt("SELECT container_id, engine_endpoint FROM runtimes WHERE game_id = $1 AND status = 'running'", &[&game_id.as_str()])
            .await?
            .with_context(|| format!("no running runtime for {game_id}"))?;
        let (container_id, endpoint): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        let pid = container_id
            .split_once('.')
            .and_then(|(pid, _)| pid.parse().ok())
            .with_context(|| {
                format!("{game_id}: container id {container_id:?} is not <pid>.<start>")
            })?;
        let endpoint = endpoint
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("{game_id}: endpoint {endpoint:?} is not http://host:port"))?;
        Ok(Engine {
            game_id: game_id.clone(),
            container_id,
            endpoint,
            pid,
        })
    }

    /// The game as the Lobby holds it.
    ///
    /// # Errors
    /// The Lobby has no such game, or cannot be asked.
    pub async fn lobby(&self, game_id: &GameId) -> anyhow::Result<LobbyGame> {
        let client = self.lobby.get().await?;
        let row = client
            .query_one("SELECT status, runtime_status, engine_health_summary, stop_outcome FROM games WHERE game_id = $1", &[&game_id.as_str()])
            .await?;
        let (runtime, summary): (String, String) = (row.try_get(1)?, row.try_get(2)?);
        Ok(LobbyGame {
            status: row.try_get(0)?,
            shown: format!("{runtime}/{summary}"),
            summary,
            stop_outcome: row.try_get(3)?,
        })
    }

    /// `status/engine_health` of the game's runtime record.
    async fn gm(&self, game_id: &GameId) -> anyhow::Result<String> {
        let client = self.gm.get().await?;
        let row = client
            .query_one(
                "SELECT status, engine_health FROM runtime_records WHERE game_id = $1",
                &[&game_id.as_str()],
            )
            .await?;
        let (status, health): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        Ok(format!("{status}/{health}"))
    }

    /// The game's health events so far, the Game Master's `status/health` and the Lobby's.
    ///
    /// # Errors
    /// A server cannot be asked.
    pub async fn effects(
        &mut self,
        game_id: &GameId,
    ) -> anyhow::Result<(Vec<String>, String, String)> {
        self.read_health().await?;
        let events = self
            .health
            .by_game
            .get(game_id.as_str())
            .cloned()
            .unwrap_or_default();
        Ok((
            events,
            self.gm(game_id).await?,
            self.lobby(game_id).await?.shown,
        ))
    }

    /// Reads the health events appended since the last call.
    async fn read_health(&mut self) -> anyhow::Result<()> {
        let stream = contracts::health_events::DEFAULT_STREAM;
        loop {
            let page = self.page(stream, self.health.after).await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            self.health.after = last.id;
            for entry in &page {
                if let Ok(event) = contracts::health_events::decode(entry) {
                    let events = self
                        .health
                        .by_game
                        .entry(event.game_id.as_str().to_owned())
                        .or_default();
                    events.push(event.event_type.as_str().to_owned());
                }
            }
        }
    }

    async fn page(&self, stream: &str, after: EntryId) -> anyhow::Result<Vec<StreamEntry>> {
        Ok(self
            .reader
            .read_after(stream, after, PAGE, Duration::ZERO)
            .await?)
    }

    /// Every entry of `stream`.
    async fn all(&self, stream: &str) -> anyhow::Result<Vec<StreamEntry>> {
        let mut all: Vec<StreamEntry> = Vec::new();
        loop {
            let after = all.last().map_or(EntryId::ZERO, |e| e.id);
            let page = self.page(stream, after).await?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }

    /// `(stop jobs, job results, results under a job's id)`, over the whole streams.
    ///
    /// # Errors
    /// Redis cannot be asked.
    pub async fn jobs_and_results(&self) -> anyhow::Result<(usize, usize, usize)> {
        let jobs: BTreeSet<EntryId> = self
            .all(contracts::stop_jobs::DEFAULT_STREAM)
            .await?
            .iter()
            .map(|e| e.id)
            .collect();
        let results = self.all(contracts::job_results::DEFAULT_STREAM).await?;
        let matched = results.iter().filter(|r| jobs.contains(&r.id)).count();
        Ok((jobs.len(), results.len(), matched))
    }

    /// The result answering stop job `job`, once there is one.
    ///
    /// # Errors
    /// Redis cannot be asked, or the result does not decode.
    pub async fn result_of(&self, job: EntryId) -> anyhow::Result<Option<JobResult>> {
        let before = if job.seq > 0 {
            EntryId::new(job.ms, job.seq - 1)
        } else {
            EntryId::new(job.ms.saturating_sub(1), u64::MAX)
        };
        let page = self
            .reader
            .read_after(
                contracts::job_results::DEFAULT_STREAM,
                before,
                1,
                Duration::ZERO,
            )
            .await?;
        match page.first() {
            Some(entry) if entry.id == job => Ok(Some(JobResult::decode(entry)?)),
            _ => Ok(None),
        }
    }
}
