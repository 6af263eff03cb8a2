//! Phase 3: the real `gamemaster` binary draining the same number of events over few and
//! over many games: throughput and peak resident memory.

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

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs every game count; `Ok(false)` when the binary did not exit 0 on SIGTERM.
pub async fn run(fx: &Fixture, opts: &Options) -> anyhow::Result<bool> {
    let binary = std::env::current_exe()?.with_file_name("gamemaster");
    if !binary.is_file() {
        anyhow::bail!(
            "{} is not built (cargo build --release --bins)",
            binary.display()
        );
    }
    println!(
        "\n## Scale: the gamemaster binary draining {} events\n",
        opts.scale_events
    );
    println!("| games | events/s | peak RSS MiB |");
    println!("|---:|---:|---:|");
    let offsets = RedisOffsetStore::new(fx.redis.clone(), "gamemaster");
    let offset_key = offsets.key("health_events");
    let mut ok = true;
    for &games in &opts.scale_games {
        fx.seed_games(games).await?;
        let stream = fx.key(&format!("scale:health_{games}")).await?;
        let lobby = fx.key(&format!("scale:lobby_{games}")).await?;
        fx.del(std::slice::from_ref(&offset_key)).await?;
        let events = workload::events(opts.scale_events, games, opts.seed);
        let last = workload::preload(&fx.redis, &stream, &events).await?;

        let port = free_port()?;
        let started = Instant::now();
        let mut child = tokio::process::Command::new(&binary)
            .arg("run")
            .env("GAMEMASTER_POSTGRES_URL", &fx.db_url)
            .env("GAMEMASTER_REDIS_URL", &fx.redis_url)
            .env("GAMEMASTER_HEALTH_EVENTS_STREAM", &stream)
            .env("GAMEMASTER_LOBBY_EVENTS_STREAM", &lobby)
            .env("GAMEMASTER_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("GAMEMASTER_BATCH_SIZE", opts.batch_size.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let pid = child.id().context("gamemaster exited at once")?;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if offsets.load("health_events").await? == Some(last) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                anyhow::bail!("gamemaster exited early with {status}");
            }
            if Instant::now() > deadline {
                anyhow::bail!("gamemaster did not drain {games} games in time");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = started.elapsed();
        let rss = peak_rss_kib(pid).unwrap_or(0);
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        let code = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await??
            .code();
        ok &= code == Some(0);
        println!(
            "| {games} | {:.0} | {:.1} |",
            rate(opts.scale_events, took),
            rss as f64 / 1024.0
        );
        fx.del(&[stream, lobby, offset_key.clone()]).await?;
    }
    println!("\n(times include the binary's start-up and connection checks)");
    Ok(ok)
}
