//! One simulation, in the order of the crate documentation's steps: connect and prepare,
//! register the fleet, play, drain, judge. [`simulate`] calls one function per step.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use adapters_postgres::PgRuntimeRecordStore;
use adapters_redis::RedisLobbyEventsPublisher;
use anyhow::Context;
use domain_runtime::{EngineHealth, GameId, RuntimeStatus};
use lobby_adapters_postgres::PgLobbyStore;
use pg_kit::{PgSettings, Pool};
use redis_streams::{RedisClient, RedisSettings, RedisStreamReader, StreamWriter};
use rtm_adapters::{PgHealthSnapshotStore, RtmHealthEventPublisher};
use stream_consumer::{EntryId, StreamReader};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::fleet::{Counters, Divergence, Fleet, GameRun};
use crate::gm::{GmMetrics, Progress};
use crate::lobby::{GmRow, LobbyMetrics};
use crate::model::{self, ModelCounts};
use crate::pacer::Pacer;
use crate::report::{self, LobbyReport, Report};
use crate::script::FlowKind;
use crate::{
    Failure, Game, NAME, Settings, announce, finish_more, gm, lobby, read_rows, register,
    report_whole, startup, stream_length, tamper, wait_for_offset,
};

/// Runs the five steps and returns the report.
pub(crate) async fn simulate(
    settings: &Settings,
    stop: CancellationToken,
) -> Result<Report, Failure> {
    // 1. Connect and prepare.
    let backends = connect(settings).await?;
    // 2. Register the fleet.
    let seed = settings.seed.unwrap_or_else(rand::random);
    let (games, counters) = register_fleet(settings, &backends, seed).await?;
    // 3. Play until the duration is up (or a signal, or a failed game).
    let play = Play::start(settings, &backends, counters, stop.clone());
    let started = Instant::now();
    let runs = match play.drive(games, settings.duration, &stop).await {
        Ok(runs) => runs,
        Err(e) => return Err(play.abort(e).await),
    };
    let publishing = started.elapsed();
    // 4. Finish a few more games, then drain.
    let drained = drain(settings, &backends, play, runs).await?;
    // 5. Judge.
    let report = judge(settings, &backends, drained, seed, publishing).await?;
    backends.streams.quit().await;
    backends.redis.quit().await;
    Ok(report)
}

/// What step 1 opened, and the counters read before anything was published.
struct Backends {
    pool: Pool,
    redis: RedisClient,
    /// A reader of its own, for stream bounds.
    streams: RedisStreamReader,
    lobby_store: Option<PgLobbyStore>,
    lobby_events: RedisLobbyEventsPublisher,
    gm_before: Option<GmMetrics>,
    lobby_metrics_before: Option<LobbyMetrics>,
    lobby_stream_before: Option<u64>,
}

/// Step 1: connects to PostgreSQL (migrating the Game Master's and the Runtime Manager's
/// schemas), Redis, and, when given, the Lobby's database and both services' metrics.
async fn connect(settings: &Settings) -> Result<Backends, Failure> {
    let pg = PgSettings::default()
        .max_connections(usize::try_from(settings.postgres_pool_size).unwrap_or(16))
        .application_name(NAME);
    let pool = pg_kit::connect(&settings.postgres_url, &pg)
        .await
        .map_err(|e| startup("PostgreSQL", &e))?;
    adapters_postgres::migrate(&pool)
        .await
        .map_err(|e| startup("Game Master migrations", &e))?;
    rtm_adapters::migrate(&pool)
        .await
        .map_err(|e| startup("Runtime Manager migrations", &e))?;
    let redis = redis_streams::connect(&settings.redis_url, RedisSettings::default(), NAME)
        .await
        .map_err(|e| startup("Redis", &e))?;
    let streams = RedisStreamReader::connect(
        &settings.redis_url,
        RedisSettings::default(),
        &format!("{NAME}-info"),
    )
    .await
    .map_err(|e| startup("Redis", &e))?;
    let gm_before = match &settings.gamemaster_metrics_url {
        Some(url) => Some(
            gm::scrape(url)
                .await
                .map_err(|e| startup("Game Master metrics", e.as_ref()))?,
        ),
        None => None,
    };
    let lobby_store = connect_lobby(settings, &pg).await?;
    let lobby_metrics_before = match &settings.lobby_metrics_url {
        Some(url) => Some(
            lobby::scrape(url)
                .await
                .map_err(|e| startup("Lobby metrics", e.as_ref()))?,
        ),
        None => None,
    };
    let lobby_stream_before = stream_length(&streams, &settings.lobby_events_stream).await;
    let lobby_events =
        RedisLobbyEventsPublisher::new(redis.clone(), settings.lobby_events_stream.clone());
    Ok(Backends {
        pool,
        redis,
        streams,
        lobby_store,
        lobby_events,
        gm_before,
        lobby_metrics_before,
        lobby_stream_before,
    })
}

/// The Lobby's store, migrated, when the run has a Lobby.
async fn connect_lobby(
    settings: &Settings,
    pg: &PgSettings,
) -> Result<Option<PgLobbyStore>, Failure> {
    let Some(url) = &settings.lobby_postgres_url else {
        return Ok(None);
    };
    let lobby_pool = pg_kit::connect(url, pg)
        .await
        .map_err(|e| startup("Lobby PostgreSQL", &e))?;
    lobby_adapters_postgres::migrate(&lobby_pool)
        .await
        .map_err(|e| startup("Lobby migrations", &e))?;
    Ok(Some(PgLobbyStore::new(lobby_pool)))
}

/// Step 2: registers the fleet with the Game Master (and creates it in the Lobby), and
/// announces it on the lobby events stream as the Game Master would.
async fn register_fleet(
    settings: &Settings,
    backends: &Backends,
    seed: u64,
) -> Result<(Vec<Game>, Counters), Failure> {
    let prefix = settings
        .game_prefix
        .clone()
        .unwrap_or_else(crate::default_prefix);
    let records = PgRuntimeRecordStore::new(backends.pool.clone());
    let mut games = register(&records, &prefix, settings.games, seed).await?;
    if let Some(store) = &backends.lobby_store {
        let ids: Vec<GameId> = games.iter().map(|g| g.game_id.clone()).collect();
        lobby::create_games(store, &ids)
            .await
            .map_err(|e| startup("create the fleet in the Lobby", e.as_ref()))?;
    }
    let counters = Counters::default();
    announce(&backends.lobby_events, &mut games, &counters)
        .await
        .map_err(|e| startup("announce the fleet to the Lobby", e.as_ref()))?;
    println!(
        "{NAME}: {} games registered ({} … {}), seed {seed}; publishing for {:?} at up to {}/s",
        report::thousands(u64::from(settings.games)),
        games.first().map_or("", |g| g.game_id.as_str()),
        games.last().map_or("", |g| g.game_id.as_str()),
        settings.duration,
        report::thousands(u64::from(settings.rate)),
    );
    Ok((games, counters))
}

/// The peaks of the services' own lag gauges, as sampled during the run.
#[derive(Default)]
struct Peaks {
    gm: Arc<AtomicU64>,
    lobby: Arc<AtomicU64>,
}

/// Step 3's machinery, alive from the start of play to the end of the drain.
struct Play {
    fleet: Arc<Fleet>,
    progress: Arc<Progress>,
    gm_offset: watch::Receiver<EntryId>,
    peaks: Peaks,
    /// Stops the watchers (offset, metrics, status line) once the run is over.
    watch_stop: CancellationToken,
    /// The status line; `None` once it has been stopped.
    status: Option<JoinHandle<()>>,
    drain_target: watch::Sender<Option<EntryId>>,
}

impl Play {
    /// Starts the watchers (the Game Master's offset, the services' lag gauges, the status
    /// line) and builds the fleet that drives the games.
    fn start(
        settings: &Settings,
        backends: &Backends,
        counters: Counters,
        stop: CancellationToken,
    ) -> Self {
        let watch_stop = CancellationToken::new();
        let progress = Arc::new(Progress::default());
        let gm_offset = gm::watch_offset(
            backends.redis.clone(),
            Arc::clone(&progress),
            watch_stop.clone(),
        );
        let peaks = Peaks::default();
        watch_peaks(settings, &peaks, watch_stop.clone());
        let fleet = Arc::new(Fleet {
            publisher: RtmHealthEventPublisher::new(
                PgHealthSnapshotStore::new(backends.pool.clone()),
                StreamWriter::new(
                    backends.redis.clone(),
                    settings.health_events_stream.clone(),
                ),
            ),
            records: PgRuntimeRecordStore::new(backends.pool.clone()),
            pool: backends.pool.clone(),
            lobby_events: backends.lobby_events.clone(),
            pacer: Pacer::start(settings.rate, stop.clone()),
            gm_offset: gm_offset.clone(),
            progress: Arc::clone(&progress),
            counters,
            stop,
            drain_timeout: settings.drain_timeout,
        });
        let (drain_target, drain_rx) = watch::channel(None);
        let status = report::status_line(
            Arc::clone(&fleet),
            settings.duration,
            drain_rx,
            watch_stop.clone(),
        );
        Self {
            fleet,
            progress,
            gm_offset,
            peaks,
            watch_stop,
            status: Some(status),
            drain_target,
        }
    }

    /// Drives every game until `duration` is up or `stop` fires (a signal, or a game that
    /// failed); returns the games' runs in fleet order, or the first failure.
    async fn drive(
        &self,
        games: Vec<Game>,
        duration: Duration,
        stop: &CancellationToken,
    ) -> anyhow::Result<Vec<GameRun>> {
        let mut tasks = JoinSet::new();
        for game in games {
            let fleet = Arc::clone(&self.fleet);
            tasks.spawn(async move {
                let result = fleet
                    .drive(game.game_id, game.script, game.roster, game.model)
                    .await;
                if result.is_err() {
                    fleet.stop.cancel();
                }
                result
            });
        }
        tokio::select! {
            () = tokio::time::sleep(duration) => {}
            () = stop.cancelled() => {}
        }
        stop.cancel();
        let mut runs = Vec::new();
        let mut failure = None;
        while let Some(joined) = tasks.join_next().await {
            match joined.context("a game task panicked") {
                Ok(Ok(run)) => runs.push(run),
                Ok(Err(e)) | Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        runs.sort_by(|a, b| a.game_id.cmp(&b.game_id));
        Ok(runs)
    }

    /// Stops the watchers and waits for the status line's last word.
    async fn stop_watching(&mut self) {
        self.watch_stop.cancel();
        if let Some(status) = self.status.take() {
            let _ = status.await;
        }
    }

    /// Ends the run on `error`: the watchers stop, then the failure is returned.
    async fn abort(mut self, error: anyhow::Error) -> Failure {
        self.stop_watching().await;
        Failure::Run(error)
    }
}

/// Samples the services' lag gauges every 500 ms into `peaks`, when their metrics were
/// given, until `stop`.
fn watch_peaks(settings: &Settings, peaks: &Peaks, stop: CancellationToken) {
    if settings.gamemaster_metrics_url.is_none() && settings.lobby_metrics_url.is_none() {
        return;
    }
    let (gm_url, lobby_url) = (
        settings.gamemaster_metrics_url.clone(),
        settings.lobby_metrics_url.clone(),
    );
    let (gm_peak, lobby_peak) = (Arc::clone(&peaks.gm), Arc::clone(&peaks.lobby));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Some(url) = &gm_url
                && let Ok(m) = gm::scrape(url).await
            {
                gm_peak.fetch_max(report_whole(m.lag_ms), Ordering::Relaxed);
            }
            if let Some(url) = &lobby_url
                && let Ok(m) = lobby::scrape(url).await
            {
                lobby_peak.fetch_max(report_whole(m.lag_ms), Ordering::Relaxed);
            }
        }
    });
}

/// What step 4 leaves for the verdict.
struct Drained {
    play: Play,
    runs: Vec<GameRun>,
    end_finished: u64,
    /// From the end of publishing to the Game Master's offset reaching the last entry.
    drain: Duration,
    /// The same for the Lobby, after the Game Master, when the run has a Lobby.
    lobby_drain: Option<Duration>,
}

/// Step 4: finishes `--finish-games` more games, then waits for the Game Master (and the
/// Lobby) to reach the last entry of its stream. The watchers stop here.
async fn drain(
    settings: &Settings,
    backends: &Backends,
    mut play: Play,
    mut runs: Vec<GameRun>,
) -> Result<Drained, Failure> {
    let end_finished = match finish_more(&play.fleet, &mut runs, settings.finish_games).await {
        Ok(n) => n,
        Err(e) => return Err(play.abort(e).await),
    };
    let drained_from = Instant::now();
    let target = match backends.streams.info(&settings.health_events_stream).await {
        Ok(Some(info)) => info.last_generated.max(play.progress.newest()),
        _ => play.progress.newest(),
    };
    play.drain_target.send_replace(Some(target));
    let drained = wait_for_offset(play.gm_offset.clone(), target, settings.drain_timeout).await;
    let drain = drained_from.elapsed();
    play.stop_watching().await;
    drained?;
    let lobby_drain = match &backends.lobby_store {
        Some(_) => Some(drain_lobby(settings, backends).await?),
        None => None,
    };
    Ok(Drained {
        play,
        runs,
        end_finished,
        drain,
        lobby_drain,
    })
}

/// Waits for the Lobby to reach the last entry of the lobby events stream.
async fn drain_lobby(settings: &Settings, backends: &Backends) -> Result<Duration, Failure> {
    let target = match backends.streams.info(&settings.lobby_events_stream).await {
        Ok(Some(info)) => info.last_generated,
        Ok(None) => EntryId::ZERO,
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context("read the lobby events stream's last entry")
                .into());
        }
    };
    Ok(lobby::wait_for_lobby(backends.redis.clone(), target, settings.drain_timeout).await?)
}

/// Every game's record against the model: the divergences, the (status, summary) table
/// and the model's totals.
struct Verdict {
    divergences: Vec<Divergence>,
    table: HashMap<(RuntimeStatus, Option<EngineHealth>), u64>,
    counts: ModelCounts,
}

fn compare(runs: &[GameRun], rows: &BTreeMap<String, GmRow>) -> Verdict {
    let mut verdict = Verdict {
        divergences: Vec::new(),
        table: HashMap::new(),
        counts: ModelCounts::default(),
    };
    for run in runs {
        verdict.counts += run.model.counts();
        let actual = rows.get(run.game_id.as_str());
        if let Some((status, health, _)) = actual
            && let (Ok(s), Ok(h)) = (
                status.parse::<RuntimeStatus>(),
                EngineHealth::parse_stored(health),
            )
        {
            *verdict.table.entry((s, h)).or_insert(0_u64) += 1;
        }
        let expected = run.model.state();
        let matches = actual.is_some_and(|(status, health, turn)| {
            status == expected.status.as_str()
                && health == EngineHealth::wire(expected.engine_health)
                && *turn == run.model.current_turn()
        });
        if !matches {
            verdict.divergences.push(Divergence {
                game_id: run.game_id.clone(),
                expected,
                actual: actual.map(|(status, health, _)| (status.clone(), health.clone())),
                turns: actual
                    .filter(|(_, _, turn)| *turn != run.model.current_turn())
                    .map(|(_, _, turn)| (run.model.current_turn(), *turn)),
                noticed: run.divergence.as_ref().and_then(|d| d.noticed.clone()),
            });
        }
    }
    verdict
}

/// The Lobby's side of the verdict, when the run had a Lobby and it drained.
async fn lobby_report(
    settings: &Settings,
    backends: &Backends,
    drained: &Drained,
    rows: &BTreeMap<String, GmRow>,
) -> Result<Option<LobbyReport>, Failure> {
    let (Some(store), Some(drain)) = (&backends.lobby_store, drained.lobby_drain) else {
        return Ok(None);
    };
    let runs = &drained.runs;
    let games = lobby::read_games(store, runs).await?;
    let careers = lobby::read_careers(store, &lobby::players(runs)).await?;
    let expected = model::expected_careers(runs.iter().map(|r| &r.model));
    let metrics = match (&settings.lobby_metrics_url, &backends.lobby_metrics_before) {
        (Some(url), Some(before)) => lobby::scrape(url)
            .await
            .ok()
            .map(|after| after.since(before)),
        _ => None,
    };
    Ok(Some(LobbyReport {
        check: lobby::check(runs, rows, &games, &expected, &careers),
        gm_statuses: lobby::gm_status_counts(rows),
        metrics,
        peak_lag_ms: settings
            .lobby_metrics_url
            .as_ref()
            .map(|_| drained.play.peaks.lobby.load(Ordering::Relaxed)),
        drain,
    }))
}

/// Step 5: tampers when asked, reads every record, compares it with the model, checks the
/// Lobby, and assembles the report.
async fn judge(
    settings: &Settings,
    backends: &Backends,
    drained: Drained,
    seed: u64,
    publishing: Duration,
) -> Result<Report, Failure> {
    let runs = &drained.runs;
    let tampered = tamper(&backends.pool, runs, settings.tamper).await?;
    let rows = read_rows(&backends.pool, runs).await?;
    let Verdict {
        divergences,
        table,
        counts,
    } = compare(runs, &rows);
    let lobby = lobby_report(settings, backends, &drained, &rows).await?;
    let gm = match (&settings.gamemaster_metrics_url, &backends.gm_before) {
        (Some(url), Some(before)) => gm::scrape(url).await.ok().map(|after| after.since(before)),
        _ => None,
    };
    let lobby_after = stream_length(&backends.streams, &settings.lobby_events_stream).await;
    let fleet = &drained.play.fleet;
    let id = |run: Option<&GameRun>| run.map(|r| r.game_id.to_string()).unwrap_or_default();
    Ok(Report {
        games: settings.games,
        game_range: (id(runs.first()), id(runs.last())),
        seed,
        rate: settings.rate,
        publishing,
        published: fleet.counters.published.load(Ordering::Relaxed),
        flows: FlowKind::ALL
            .iter()
            .zip(&fleet.counters.flows)
            .map(|(kind, n)| (*kind, n.load(Ordering::Relaxed)))
            .collect(),
        model: counts,
        gm,
        gm_peak_lag_ms: settings
            .gamemaster_metrics_url
            .as_ref()
            .map(|_| drained.play.peaks.gm.load(Ordering::Relaxed)),
        peak_lag_ms: drained.play.progress.peak_lag_ms(),
        drain: drained.drain,
        lobby_growth: backends
            .lobby_stream_before
            .zip(lobby_after)
            .map(|(before, after)| after.saturating_sub(before)),
        flow_snapshots: fleet.counters.lobby_snapshots.load(Ordering::Relaxed),
        flow_finished: fleet.counters.lobby_finished.load(Ordering::Relaxed),
        end_finished: drained.end_finished,
        table,
        divergences,
        tampered,
        lobby,
    })
}
