//! `galaxy-sim`: a fleet of game engines played through the Runtime Manager's real health
//! publisher against a running Game Master, with an oracle that says what the Game Master
//! must end up holding.
//!
//! 1. **Connect and prepare**: the Game Master's database (both the Game Master's and the
//!    Runtime Manager's migrations are applied; each is idempotent and runs under its own
//!    advisory lock) and Redis.
//! 2. **Register** the fleet: one `running` runtime record per game, ids
//!    `<prefix>-<n>` with a prefix of the run's own.
//! 3. **Play** every game at once for the run's duration ([`fleet`]): health observations
//!    through [`rtm_adapters::RtmHealthEventPublisher`] (snapshot upsert, then XADD),
//!    paced to the target rate, and direct status changes standing in for the Game
//!    Master's other flows (turn generation, admin stops and restarts, finished games),
//!    each made only once the Game Master has consumed the game's earlier events. The
//!    [`model`] follows both, per game, in the same order.
//!    Each direct flow also publishes, through the Game Master's own lobby events
//!    publisher, the `runtime_snapshot_update` or `game_finished` the real flow would.
//! 4. **Drain**: optionally finish a few more games (`--finish-games`), then wait until
//!    the Game Master's offset reaches the health stream's last entry and, with a Lobby,
//!    until the Lobby's offset reaches the lobby events stream's last entry.
//! 5. **Judge**: compare every runtime record (status, engine health, turn) with the
//!    model; with a Lobby, also every Lobby game's snapshot with its runtime record, the
//!    Lobby statuses and every player's career ([`lobby`]). Print the [`report`]:
//!    throughput, lag, the fleet by status × health, the Lobby's view beside the Game
//!    Master's, one line per check, the verdict. Exit 0 only when everything matches.
//!
//! With `--lobby-postgres-url`, the simulator creates the fleet's games in the Lobby
//! (`running`, through the Lobby's own store) as it registers them with the Game Master,
//! and announces each registration with a first `runtime_snapshot_update` carrying the
//! players' opening stats.

pub mod fleet;
pub mod gm;
pub mod live;
pub mod lobby;
pub mod metrics;
pub mod model;
pub mod pacer;
pub mod players;
pub mod report;
mod run;
pub mod script;
pub mod settings;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adapters_postgres::PgRuntimeRecordStore;
use adapters_redis::RedisLobbyEventsPublisher;
use anyhow::{Context, bail};
use domain_runtime::{GameId, RuntimeStatus};
use pg_kit::Pool;
use ports::{LobbyEvent, LobbyEventsPublisher, NewRuntime, RuntimeRecordStore};
use redis_streams::RedisStreamReader;
use service_kit::{StartupError, error_chain};
use stream_consumer::{EntryId, StreamReader};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::fleet::{Counters, Fleet, GameRun, Stored};
use crate::lobby::GmRow;
use crate::model::GameModel;
use crate::players::Roster;
use crate::script::{FlowKind, GameScript};
pub use crate::settings::Settings;

/// Warnings and errors only, unless `RUST_LOG` asks for more: the tools' output is their
/// status lines and their verdict.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The binary's name, as it prefixes its stderr lines.
pub const NAME: &str = "galaxy-sim";

/// Exit code of a run in which a game diverged or that could not finish.
pub const EXIT_FAILED: u8 = 1;

/// Why a run ends without a verdict.
#[derive(Debug)]
enum Failure {
    /// Before anything was published: exit 2.
    Startup(StartupError),
    /// During the run: exit 1.
    Run(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::Run(e)
    }
}

fn startup(what: &str, error: &(dyn std::error::Error + 'static)) -> Failure {
    Failure::Startup(StartupError::new(format!("{what}: {}", error_chain(error))))
}

/// Runs the simulation, prints the summary on stdout, and returns the exit code: 0 when
/// every game converged, 1 when one did not or the run failed, 2 for a start-up failure.
/// SIGINT or SIGTERM ends publishing early; the drain and the verdict still happen.
pub async fn run(settings: Settings) -> ExitCode {
    let stop = CancellationToken::new();
    tokio::spawn(service_kit::shutdown::cancel_on_signal(stop.clone()));
    match run::simulate(&settings, stop).await {
        Ok(report) => {
            println!("{report}");
            if report.converged() {
                ExitCode::SUCCESS
            } else {
                eprintln!("{NAME}: {}", report.failure_line());
                ExitCode::from(EXIT_FAILED)
            }
        }
        Err(Failure::Startup(e)) => e.report(NAME),
        Err(Failure::Run(e)) => {
            eprintln!("{NAME}: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// A prefix no earlier run used: `sim-` and the start time in base 36.
fn default_prefix() -> String {
    let mut ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut digits = Vec::new();
    while ms > 0 {
        let d = u32::try_from(ms % 36).unwrap_or(0);
        digits.push(char::from_digit(d, 36).unwrap_or('0'));
        ms /= 36;
    }
    format!("sim-{}", digits.iter().rev().collect::<String>())
}

/// Game number `index` of `games`, zero-padded so ids sort in fleet order.
fn game_name(prefix: &str, index: u32, games: u32) -> String {
    let width = games.saturating_sub(1).max(1).to_string().len();
    format!("{prefix}-{index:0width$}")
}

/// One game of the fleet before it plays.
#[derive(Debug)]
struct Game {
    game_id: GameId,
    script: GameScript,
    roster: Roster,
    model: GameModel,
    current_turn: u32,
}

/// Announces every registered game on the lobby events stream, as the Game Master does
/// when it registers a runtime: a `runtime_snapshot_update` with the record as stored
/// (`running`, no summary yet, its turn) and the players' opening stats. Published in
/// chunks, each in one round trip.
async fn announce(
    publisher: &RedisLobbyEventsPublisher,
    games: &mut [Game],
    counters: &Counters,
) -> anyhow::Result<()> {
    for chunk in games.chunks_mut(500) {
        let at_ms = fleet::now_ms();
        let mut events = Vec::with_capacity(chunk.len());
        for game in chunk.iter_mut() {
            let stats = game.roster.current();
            game.model
                .observe_stats(&stats)
                .with_context(|| format!("stats of game {}", game.game_id))?;
            let stored = Stored {
                status: RuntimeStatus::Running,
                engine_health: None,
                current_turn: game.current_turn,
            };
            events.push(LobbyEvent::SnapshotUpdate(fleet::snapshot(
                &game.game_id,
                stored,
                stats,
                at_ms,
            )));
        }
        publisher
            .publish(&events)
            .await
            .context("publish the registration snapshots")?;
        counters
            .lobby_snapshots
            .fetch_add(events.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// `--finish-games`: once publishing has stopped, finishes the first `n` games that are
/// not finished (and did not diverge), in fleet order, through the same flow the scripts
/// use: wait for the Game Master to consume the game's events, compare-and-swap to
/// `finished`, publish `game_finished`. Returns how many were finished.
async fn finish_more(fleet: &Fleet, runs: &mut [GameRun], n: u32) -> anyhow::Result<u64> {
    let mut finished = 0;
    let wanted = usize::try_from(n).unwrap_or(usize::MAX);
    for run in runs
        .iter_mut()
        .filter(|r| r.divergence.is_none() && r.model.status() != RuntimeStatus::Finished)
        .take(wanted)
    {
        if let Some(id) = run.last_appended {
            fleet.wait_consumed(&run.game_id, id).await?;
        }
        let transition = domain_runtime::transition(run.model.status(), RuntimeStatus::Finished)
            .with_context(|| format!("finish game {}", run.game_id))?;
        run.divergence = fleet
            .flow(
                &run.game_id,
                FlowKind::GameFinished,
                transition,
                &mut run.model,
                &mut run.roster,
            )
            .await?;
        finished += 1;
    }
    Ok(finished)
}

fn report_whole(v: f64) -> u64 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = v.max(0.0).round() as u64;
    n
}

/// The stream's length; `Some(0)` when it does not exist yet, `None` when it cannot be
/// read.
async fn stream_length(streams: &RedisStreamReader, stream: &str) -> Option<u64> {
    match streams.info(stream).await {
        Ok(Some(info)) => Some(info.length),
        Ok(None) => Some(0),
        Err(_) => None,
    }
}

/// Registers the fleet, `running` at a seeded turn, and returns each game with its script,
/// its players and its model, in fleet order.
async fn register(
    records: &PgRuntimeRecordStore,
    prefix: &str,
    games: u32,
    seed: u64,
) -> Result<Vec<Game>, Failure> {
    let mut fleet = Vec::new();
    let mut inserts = JoinSet::new();
    let pool = players::pool_size(games);
    for index in 0..games {
        let game_id =
            GameId::new(game_name(prefix, index, games)).map_err(|e| startup("game id", &e))?;
        let mut script = GameScript::new(seed, index);
        let current_turn = script.initial_turn();
        let new = NewRuntime {
            game_id: game_id.clone(),
            status: RuntimeStatus::Running,
            current_turn,
        };
        let records = records.clone();
        inserts.spawn(async move { records.register(&new).await });
        fleet.push(Game {
            game_id,
            script,
            roster: Roster::new(seed, index, prefix, pool),
            model: GameModel::registered(RuntimeStatus::Running, current_turn),
            current_turn,
        });
    }
    while let Some(joined) = inserts.join_next().await {
        match joined {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(startup("register the fleet", &e)),
            Err(e) => return Err(startup("register the fleet", &e)),
        }
    }
    Ok(fleet)
}

/// Waits until the Game Master's offset reaches `target`.
async fn wait_for_offset(
    mut offset: watch::Receiver<EntryId>,
    target: EntryId,
    timeout: Duration,
) -> Result<(), Failure> {
    let reached = tokio::time::timeout(timeout, offset.wait_for(|o| *o >= target))
        .await
        .map(|r| r.is_ok());
    match reached {
        Ok(true) => Ok(()),
        Ok(false) => Err(anyhow::anyhow!("the offset watcher stopped").into()),
        Err(_) => Err(anyhow::anyhow!(
            "the Game Master did not drain the stream within {timeout:?}: its offset is {}, the last entry {target}",
            *offset.borrow()
        )
        .into()),
    }
}

/// `--tamper`: moves the status of the first `n` games somewhere the model does not
/// expect, straight in the table, as a bug or a stray writer would.
async fn tamper(pool: &Pool, runs: &[GameRun], n: u32) -> anyhow::Result<Vec<String>> {
    let mut tampered = Vec::new();
    if n == 0 {
        return Ok(tampered);
    }
    let client = pool.get().await.context("tamper: no connection")?;
    for run in runs.iter().take(usize::try_from(n).unwrap_or(usize::MAX)) {
        let wrong = if run.model.status() == RuntimeStatus::Stopped {
            RuntimeStatus::Running
        } else {
            RuntimeStatus::Stopped
        };
        client
            .execute(
                "UPDATE runtime_records SET status = $2, updated_at = now() WHERE game_id = $1",
                &[&run.game_id.as_str(), &wrong.as_str()],
            )
            .await
            .with_context(|| format!("tamper with {}", run.game_id))?;
        tampered.push(run.game_id.to_string());
    }
    Ok(tampered)
}

/// `(status, engine_health, current_turn)` of every game of the run, by id.
async fn read_rows(pool: &Pool, runs: &[GameRun]) -> anyhow::Result<BTreeMap<String, GmRow>> {
    let ids: Vec<&str> = runs.iter().map(|r| r.game_id.as_str()).collect();
    let client = pool
        .get()
        .await
        .context("read the runtime records: no connection")?;
    let rows = client
        .query(
            "SELECT game_id, status, engine_health, current_turn FROM runtime_records WHERE game_id = ANY($1)",
            &[&ids],
        )
        .await
        .context("read the runtime records")?;
    let mut out = BTreeMap::new();
    for row in rows {
        let game: String = row.try_get(0)?;
        let status: String = row.try_get(1)?;
        let health: String = row.try_get(2)?;
        let turn: i32 = row.try_get(3)?;
        let turn =
            u32::try_from(turn).with_context(|| format!("game {game}: stored turn {turn}"))?;
        out.insert(game, (status, health, turn));
    }
    if out.is_empty() && !runs.is_empty() {
        bail!("none of the run's runtime records were found");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn game_names_sort_in_fleet_order() {
        assert_eq!(game_name("p", 7, 200), "p-007");
        assert_eq!(game_name("p", 0, 1), "p-0");
        assert_eq!(game_name("p", 29, 30), "p-29");
        assert!(default_prefix().starts_with("sim-"));
        assert!(GameId::new(game_name(&default_prefix(), 99_999, 100_000)).is_ok());
    }
}
