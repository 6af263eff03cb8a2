//! `galaxy-live`: the real-engine half of the demo. Where `galaxy-sim` invents health
//! traffic, this starts real engine processes through a running `rtmanager` and checks
//! that what happens to them goes all the way round: Runtime Manager → Game Master →
//! Lobby → stop job → Runtime Manager → job result → Lobby.
//!
//! 1. **Register** the games, `<prefix>-<n>`: a `running` runtime record in the Game
//!    Master's database and a `running` game in the Lobby's (as `galaxy-sim` does).
//! 2. **Start** each game's engine (`POST /games/<id>/start` on the Runtime Manager's ops
//!    server, what `rtmanager start-game` asks), then wait until every engine answers its
//!    probe and the Lobby shows every game `healthy`.
//! 3. **Disturb** three engines for real, one at a time: `kill -9` (→ `container_exited`),
//!    a memory blow-up past the limit (→ `container_oom`), `SIGSTOP` then `SIGCONT`
//!    (→ `inspect_unhealthy` and `probe_failed`, then `probe_recovered`). Each must show up as its health event
//!    and as its effect in the Game Master's record and the Lobby's snapshot.
//! 4. **Finish** every game through the Game Master's finish flow (the compare-and-swap to
//!    `finished`, then `game_finished` on the lobby events stream).
//! 5. **Close the loop**: every game finished in the Lobby, its stop answered and recorded
//!    there, its engine process gone, and exactly one job result per stop job.
//! 6. **Replay** one game's stop job: it must be answered `replay_no_op`.
//! 7. **Judge**: one line per check, then the verdict; exit 0 only when every check passed.

mod observe;
pub mod settings;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use adapters_postgres::PgRuntimeRecordStore;
use adapters_redis::RedisLobbyEventsPublisher;
use anyhow::{Context, bail};
use contracts::{StopJob, StopReason};
use domain_runtime::{GameId, RuntimeStatus};
use lobby_adapters_postgres::PgLobbyStore;
use pg_kit::PgSettings;
use ports::{LobbyEvent, LobbyEventsPublisher, NewRuntime, RuntimeRecordStore, UpdateStatus};
use redis_streams::{RedisClient, RedisSettings, RedisStreamReader, StreamWriter};
use service_kit::{StartupError, error_chain};

use self::observe::{Engine, View};
pub use self::settings::LiveSettings;
use crate::fleet::{Stored, now_ms, snapshot};

/// The binary's name, as it prefixes its lines.
pub const NAME: &str = "galaxy-live";

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(200);

/// What the run talks to.
struct Live {
    settings: LiveSettings,
    records: PgRuntimeRecordStore,
    lobby: PgLobbyStore,
    view: View,
    redis: RedisClient,
    games: Vec<GameId>,
    /// One line per check: whether it passed, and what it says.
    checks: Vec<(bool, String)>,
}

/// Runs the seven steps; the exit code is the verdict.
pub async fn run(settings: LiveSettings) -> ExitCode {
    let mut live = match Live::connect(settings).await {
        Ok(live) => live,
        Err(e) => return e.report(NAME),
    };
    if let Err(e) = live.play().await {
        live.check(false, format!("the run stopped: {e:#}"));
    }
    live.judge()
}

impl Live {
    /// Connects the three databases and Redis; each failure is one start-up line.
    async fn connect(settings: LiveSettings) -> Result<Self, StartupError> {
        let pool = |url: String, what: &'static str| async move {
            pg_kit::connect(&url, &PgSettings::default().application_name(NAME))
                .await
                .map_err(|e| StartupError::new(format!("{what}: {}", error_chain(&e))))
        };
        let gm = pool(
            settings.postgres_url.clone(),
            "the Game Master's PostgreSQL",
        )
        .await?;
        let lobby = pool(
            settings.lobby_postgres_url.clone(),
            "the Lobby's PostgreSQL",
        )
        .await?;
        let rtm = pool(
            settings.rtmanager_postgres_url.clone(),
            "the Runtime Manager's PostgreSQL",
        )
        .await?;
        let redis_error = |e: redis_streams::ConnectError| {
            StartupError::new(format!("Redis: {}", error_chain(&e)))
        };
        let redis = redis_streams::connect(&settings.redis_url, RedisSettings::default(), NAME)
            .await
            .map_err(redis_error)?;
        let reader =
            RedisStreamReader::connect(&settings.redis_url, RedisSettings::default(), NAME)
                .await
                .map_err(redis_error)?;
        Ok(Self {
            records: PgRuntimeRecordStore::new(gm.clone()),
            lobby: PgLobbyStore::new(lobby.clone()),
            view: View::new(gm, lobby, rtm, reader),
            redis,
            games: Vec::new(),
            checks: Vec::new(),
            settings,
        })
    }

    async fn play(&mut self) -> anyhow::Result<()> {
        self.register().await?;
        let engines = self.start().await?;
        self.disturb(&engines).await?;
        self.finish().await?;
        self.close_the_loop(&engines).await?;
        self.replay().await
    }

    fn check(&mut self, passed: bool, line: String) {
        self.checks.push((passed, line));
    }

    /// Step 1.
    async fn register(&mut self) -> anyhow::Result<()> {
        let prefix = self
            .settings
            .game_prefix
            .clone()
            .unwrap_or_else(|| format!("live-{}", now_ms()));
        for n in 0..self.settings.games {
            let game_id = GameId::new(format!("{prefix}-{n:03}"))?;
            let new = NewRuntime {
                game_id: game_id.clone(),
                status: RuntimeStatus::Running,
                current_turn: 1,
            };
            self.records
                .register(&new)
                .await
                .context("register in the Game Master")?;
            self.games.push(game_id);
        }
        crate::lobby::create_games(&self.lobby, &self.games).await?;
        println!(
            "{NAME}: {} games registered ({} … {})",
            self.games.len(),
            self.games[0],
            self.games[self.games.len() - 1]
        );
        Ok(())
    }

    /// Step 2: the engines, in game order.
    async fn start(&mut self) -> anyhow::Result<Vec<Engine>> {
        let started = Instant::now();
        for game_id in &self.games {
            let path = format!(
                "/games/{}/start",
                service_kit::http::path_segment(game_id.as_str())
            );
            let (code, body) = service_kit::http::request(
                self.settings.rtmanager_http_addr,
                "POST",
                &path,
                self.settings.timeout,
            )
            .await
            .with_context(|| {
                format!(
                    "ask the Runtime Manager on {} to start {game_id}",
                    self.settings.rtmanager_http_addr
                )
            })?;
            if code != 200 {
                bail!(
                    "the Runtime Manager did not start {game_id}: {code} {}",
                    body.trim()
                );
            }
        }
        let mut engines = Vec::new();
        for game_id in &self.games {
            engines.push(self.view.engine(game_id).await?);
        }
        let mut answering = 0;
        for engine in &engines {
            answering += u32::from(engine.answers().await);
        }
        let healthy = self.wait_all_lobby("healthy").await;
        let n = self.games.len();
        self.check(answering as usize == n && healthy, format!(
            "engines: {n} started in {:.1}s, {answering} answer their probe, the Lobby shows {} healthy",
            started.elapsed().as_secs_f64(), if healthy { n.to_string() } else { "not all".into() }
        ));
        Ok(engines)
    }

    /// Waits until the Lobby shows every game with `summary`.
    async fn wait_all_lobby(&self, summary: &str) -> bool {
        let deadline = Instant::now() + self.settings.timeout;
        while Instant::now() < deadline {
            let mut all = true;
            for game_id in &self.games {
                all &= self
                    .view
                    .lobby(game_id)
                    .await
                    .is_ok_and(|g| g.summary == summary);
            }
            if all {
                return true;
            }
            tokio::time::sleep(POLL).await;
        }
        false
    }

    /// Step 3: each disturbance and what it must cause.
    async fn disturb(&mut self, engines: &[Engine]) -> anyhow::Result<()> {
        let unreachable = RuntimeStatus::EngineUnreachable.as_str();
        let running = RuntimeStatus::Running.as_str();
        engines[0].signal("KILL")?;
        self.expect(
            &engines[0],
            "kill -9",
            &["container_exited"],
            (unreachable, "exited"),
        )
        .await;
        let mib = self
            .settings
            .engine_memory_limit_mib
            .saturating_mul(2)
            .max(64);
        engines[1].allocate(mib, self.settings.timeout).await?;
        let what = format!(
            "{mib} MiB allocated past the {} MiB limit",
            self.settings.engine_memory_limit_mib
        );
        self.expect(&engines[1], &what, &["container_oom"], (unreachable, "oom"))
            .await;
        // A paused engine is both seen paused and silent on its probe.
        engines[2].signal("STOP")?;
        let paused = ["inspect_unhealthy", "probe_failed"];
        self.expect(&engines[2], "SIGSTOP", &paused, (running, "probe_failed"))
            .await;
        engines[2].signal("CONT")?;
        let resumed = ["inspect_unhealthy", "probe_failed", "probe_recovered"];
        self.expect(&engines[2], "SIGCONT", &resumed, (running, "healthy"))
            .await;
        Ok(())
    }

    /// Waits until `engine`'s game has the health `events` (in order, after its start)
    /// and both the Game Master and the Lobby show `(status, summary)`; one check line.
    async fn expect(&mut self, engine: &Engine, what: &str, events: &[&str], effect: (&str, &str)) {
        let started = Instant::now();
        let deadline = started + self.settings.timeout;
        let mut seen = (Vec::new(), String::new(), String::new());
        while Instant::now() < deadline {
            seen = self.view.effects(&engine.game_id).await.unwrap_or_default();
            let events_ok = seen
                .0
                .iter()
                .map(String::as_str)
                .filter(|e| *e != "container_started")
                .eq(events.iter().copied());
            let shown = format!("{}/{}", effect.0, effect.1);
            if events_ok && seen.1 == shown && seen.2 == shown {
                self.check(
                    true,
                    format!(
                        "{what} on {}: {} published, Game Master and Lobby show {shown} ({:.1}s)",
                        engine.game_id,
                        events.join(" then "),
                        started.elapsed().as_secs_f64()
                    ),
                );
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        self.check(
            false,
            format!(
                "{what} on {}: expected {} and {}/{}, saw events {:?}, Game Master {}, Lobby {}",
                engine.game_id,
                events.join(" then "),
                effect.0,
                effect.1,
                seen.0,
                seen.1,
                seen.2
            ),
        );
    }

    /// Step 4: the Game Master's finish flow for every game.
    async fn finish(&mut self) -> anyhow::Result<()> {
        let publisher =
            RedisLobbyEventsPublisher::new(self.redis.clone(), self.view.lobby_events_stream());
        for game_id in &self.games {
            let record = self.records.get(game_id).await?;
            let update = UpdateStatus::new(
                game_id.clone(),
                record.status,
                RuntimeStatus::Finished,
                None,
            )?;
            let finished = Stored::from(self.records.update_status(&update).await?);
            let at_ms = now_ms();
            let event = LobbyEvent::GameFinished {
                snapshot: snapshot(game_id, finished, Vec::new(), at_ms),
                finished_at_ms: u64::try_from(at_ms).unwrap_or(1),
            };
            publisher.publish(std::slice::from_ref(&event)).await?;
        }
        println!(
            "{NAME}: {} games finished through the Game Master's flow",
            self.games.len()
        );
        Ok(())
    }

    /// Step 5.
    async fn close_the_loop(&mut self, engines: &[Engine]) -> anyhow::Result<()> {
        let started = Instant::now();
        let deadline = started + self.settings.timeout;
        let mut recorded = 0;
        while Instant::now() < deadline {
            recorded = 0;
            for game_id in &self.games {
                let game = self.view.lobby(game_id).await?;
                recorded += usize::from(
                    game.status == "finished" && game.stop_outcome.as_deref() == Some("success"),
                );
            }
            if recorded == self.games.len() {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let n = self.games.len();
        self.check(recorded == n, format!(
            "finished games: {n}, {recorded} with their stop answered success and recorded in the Lobby ({:.1}s)",
            started.elapsed().as_secs_f64()
        ));
        let mut gone = 0;
        for engine in engines {
            gone += usize::from(engine.gone().await);
        }
        self.check(gone == n, format!("engine processes gone: {gone} of {n}"));
        let (jobs, results, matched) = self.view.jobs_and_results().await?;
        self.check(jobs == results && results == matched, format!(
            "stop jobs: {jobs}, job results: {results}, {matched} under their job's id (exactly one each)"
        ));
        Ok(())
    }

    /// Step 6: a second stop job for the first game.
    async fn replay(&mut self) -> anyhow::Result<()> {
        let game_id = &self.games[0];
        let job = StopJob::new(game_id.as_str(), StopReason::AdminRequest, Some(now_ms()))?;
        let writer = StreamWriter::new(self.redis.clone(), self.view.stop_jobs_stream());
        let ids = writer.append(&[job.wire_fields()]).await?;
        let Some(id) = ids.first().copied() else {
            bail!("the replayed stop job was not appended");
        };
        let deadline = Instant::now() + self.settings.timeout;
        while Instant::now() < deadline {
            if let Some(result) = self.view.result_of(id).await? {
                let line = format!(
                    "replayed stop job {id} for {game_id}: answered {} {}",
                    result.outcome, result.error_code
                );
                self.check(result.is_replay_no_op(), line);
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
        self.check(
            false,
            format!("replayed stop job {id} for {game_id}: no answer"),
        );
        Ok(())
    }

    /// Step 7.
    fn judge(&self) -> ExitCode {
        for (passed, line) in &self.checks {
            println!("{NAME}: {} {line}", if *passed { "✔" } else { "✘" });
        }
        let failed = self.checks.iter().filter(|(passed, _)| !passed).count();
        if failed == 0 && !self.checks.is_empty() {
            println!("{NAME}: verdict: every real engine's story went round the loop ✔");
            ExitCode::SUCCESS
        } else {
            println!("{NAME}: verdict: {failed} check(s) failed ✘");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_are_well_formed() {
        use clap::CommandFactory;
        LiveSettings::command().debug_assert();
    }
}
