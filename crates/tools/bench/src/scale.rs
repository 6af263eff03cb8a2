//! Phase 3: the real `gamemaster` binary draining the same number of events over few and
//! over many games: throughput and peak resident memory. Also the process the latency
//! phase measures.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use redis_streams::RedisOffsetStore;
use stream_consumer::StreamOffsetStore;

use crate::fixture::Fixture;
use crate::{Options, rate, workload};

/// Peak resident set size of `pid` in KiB (`VmHWM`), Linux only.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The `gamemaster` binary built beside this one, running on the bench's database and
/// Redis with the given streams.
pub struct Gamemaster {
    child: tokio::process::Child,
    pid: u32,
    http: SocketAddr,
}

impl Gamemaster {
    /// Starts `gamemaster run` on the bench's database and Redis and waits until
    /// `/readyz` answers 200.
    ///
    /// # Errors
    /// The binary is missing, does not start, or is not ready within 30 s.
    pub async fn start(
        fx: &Fixture,
        stream: &str,
        lobby: &str,
        batch_size: usize,
    ) -> anyhow::Result<Self> {
        let streams = (stream, lobby);
        Self::start_as(&fx.db_url, &fx.redis_url, streams, batch_size, &[]).await
    }

    /// [`Gamemaster::start`] on `redis_url` with `streams` (health, lobby), and `env` on
    /// top (an instance id, say).
    ///
    /// # Errors
    /// The binary is missing, does not start, or is not ready within 30 s.
    pub async fn start_as(
        db_url: &str,
        redis_url: &str,
        (stream, lobby): (&str, &str),
        batch_size: usize,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let binary = std::env::current_exe()?.with_file_name("gamemaster");
        if !binary.is_file() {
            anyhow::bail!(
                "{} is not built (cargo build --release --bins)",
                binary.display()
            );
        }
        let http: SocketAddr = format!("127.0.0.1:{}", testkit::free_port()).parse()?;
        let child = tokio::process::Command::new(&binary)
            .arg("run")
            .env("GAMEMASTER_POSTGRES_URL", db_url)
            .env("GAMEMASTER_REDIS_URL", redis_url)
            .env("GAMEMASTER_HEALTH_EVENTS_STREAM", stream)
            .env("GAMEMASTER_LOBBY_EVENTS_STREAM", lobby)
            .env("GAMEMASTER_HTTP_ADDR", http.to_string())
            .env("GAMEMASTER_BATCH_SIZE", batch_size.to_string())
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let pid = child.id().context("gamemaster exited at once")?;
        let mut gm = Self { child, pid, http };
        testkit::eventually("gamemaster ready", Duration::from_secs(30), || async {
            matches!(testkit::http::get(http, "/readyz").await, Ok((200, _)))
        })
        .await?;
        gm.check_running()?;
        Ok(gm)
    }

    /// Peak resident set size so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        peak_rss_kib(self.pid).unwrap_or(0)
    }

    /// CPU time used so far (user and system), from `/proc/<pid>/stat` in clock ticks of
    /// 1/100 s (Linux's `USER_HZ`).
    pub fn cpu(&self) -> Duration {
        let ticks = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|stat| {
                // Fields after the command name, which ends with the last ')': utime and
                // stime are the 14th and 15th of the line.
                let rest = stat.rsplit_once(')')?.1;
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let user: u64 = fields.get(11)?.parse().ok()?;
                let system: u64 = fields.get(12)?.parse().ok()?;
                Some(user + system)
            })
            .unwrap_or(0);
        Duration::from_millis(ticks * 10)
    }

    /// The `/metrics` exposition.
    ///
    /// # Errors
    /// The ops server did not answer.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let (_, body) = testkit::http::get(self.http, "/metrics").await?;
        Ok(body)
    }

    /// Fails when the process has already exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => anyhow::bail!("gamemaster ({}) exited early with {status}", self.http),
            None => Ok(()),
        }
    }

    /// SIGTERM, then the exit code.
    pub async fn stop(mut self) -> anyhow::Result<Option<i32>> {
        std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()?;
        Ok(
            tokio::time::timeout(Duration::from_secs(30), self.child.wait())
                .await??
                .code(),
        )
    }
}

/// The runs of the scale phase: (games in the table, games the events name). Every count
/// runs with events over all its games; the largest also runs with events over only the
/// drain phase's number of games, which keeps the share of distinct games per batch of
/// the smallest run and so separates the size of the table from the shape of the load.
fn runs(opts: &Options) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = opts.scale_games.iter().map(|&g| (g, g)).collect();
    if let Some(&largest) = opts.scale_games.iter().max()
        && largest > opts.games
    {
        runs.push((largest, opts.games));
    }
    runs
}

/// Runs every game count; `Ok(false)` when the binary did not exit 0 on SIGTERM.
pub async fn run(fx: &Fixture, opts: &Options) -> anyhow::Result<bool> {
    println!(
        "\n## Scale: the gamemaster binary draining {} events, batch {}\n",
        opts.scale_events, opts.batch_size
    );
    println!("| games in the table | games with events | events/s | peak RSS MiB |");
    println!("|---:|---:|---:|---:|");
    let offsets = RedisOffsetStore::new(fx.redis.clone(), "gamemaster");
    let offset_key = offsets.key("health_events");
    let mut ok = true;
    for (games, active) in runs(opts) {
        fx.seed_games(games).await?;
        let stream = fx.key(&format!("scale:health_{games}_{active}")).await?;
        let lobby = fx.key(&format!("scale:lobby_{games}_{active}")).await?;
        fx.del(std::slice::from_ref(&offset_key)).await?;
        let events = workload::events(opts.scale_events, active, opts.seed);
        let last = workload::preload(&fx.redis, &stream, &events).await?;

        // Timed from the spawn: the binary's start-up is counted against it.
        let started = Instant::now();
        let mut gm = Gamemaster::start(fx, &stream, &lobby, opts.batch_size).await?;
        let deadline = started + Duration::from_secs(600);
        while offsets.load("health_events").await? != Some(last) {
            gm.check_running()?;
            if Instant::now() > deadline {
                anyhow::bail!("gamemaster did not drain {games} games in time");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = started.elapsed();
        let rss = gm.peak_rss_kib();
        ok &= gm.stop().await? == Some(0);
        println!(
            "| {games} | {active} | {:.0} | {:.1} |",
            rate(opts.scale_events, took),
            rss as f64 / 1024.0
        );
        fx.del(&[stream, lobby, offset_key.clone()]).await?;
    }
    println!("\n(timed from the spawn of the binary: its start-up and connection checks count)");
    Ok(ok)
}
