//! The Game Lobby's side of a run, when `--lobby-postgres-url` is given: creating the
//! fleet's games in the Lobby, waiting for the Lobby to drain the lobby events stream,
//! and checking what it ends up holding.
//!
//! The checks, after both consumers drained:
//!
//! - **snapshots**: every game's runtime snapshot in the Lobby (`runtime_status`,
//!   `engine_health_summary`, `current_turn`) equals its Game Master record as read;
//! - **statuses**: a game the model finished is `finished` in the Lobby, with the finish
//!   time its `game_finished` carried; every other game is still `running`;
//! - **careers**: every player of the run has exactly the career the model predicts
//!   ([`crate::model::expected_careers`]), and a player of no finished game has none.
//!
//! Everything is read through the Lobby's own ports ([`lobby_adapters_postgres::PgLobbyStore`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context;
use domain_runtime::{GameId, RuntimeStatus};
use lobby_adapters_postgres::PgLobbyStore;
use lobby_domain::{CareerRecord, GameStatus, UserId};
use lobby_ports::{CareerStore, GameRecord, GameStore, NewGame};
use redis_streams::{RedisClient, RedisOffsetStore};
use stream_consumer::{EntryId, StreamOffsetStore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::fleet::GameRun;
use crate::metrics::{Sample, label, samples};

/// The Lobby's offset key is `lobby:stream_offsets:gm_lobby_events` (SPEC §Wire
/// contracts): this service name and the worker's label.
const LOBBY_SERVICE: &str = "lobby";
/// See [`LOBBY_SERVICE`].
const LOBBY_LABEL: &str = worker_gmevents::OFFSET_LABEL;

/// How often the Lobby's offset is read while waiting for it.
const POLL_EVERY: Duration = Duration::from_millis(10);

/// Most Lobby round trips in flight at once when creating or reading games.
const IN_FLIGHT: usize = 16;

/// One thing that differs from the prediction: a game or a player, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The game id or user id.
    pub subject: String,
    /// Both sides, in words.
    pub detail: String,
}

/// Runs `f` on every item, at most [`IN_FLIGHT`] at a time, and returns the results in
/// the items' order.
async fn each<T, R, F, Fut>(items: Vec<T>, f: F) -> anyhow::Result<Vec<R>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: Future<Output = anyhow::Result<R>> + Send + 'static,
{
    let mut results: Vec<Option<R>> = Vec::with_capacity(items.len());
    results.resize_with(items.len(), || None);
    let mut tasks = JoinSet::new();
    for (i, item) in items.into_iter().enumerate() {
        if tasks.len() >= IN_FLIGHT
            && let Some(done) = tasks.join_next().await
        {
            let (j, r) = done.context("a Lobby task panicked")?;
            results[j] = Some(r?);
        }
        let fut = f(item);
        tasks.spawn(async move { (i, fut.await) });
    }
    while let Some(done) = tasks.join_next().await {
        let (j, r) = done.context("a Lobby task panicked")?;
        results[j] = Some(r?);
    }
    Ok(results.into_iter().flatten().collect())
}

/// Creates every game in the Lobby, `running`, as the Lobby's own start flow would before
/// the Game Master runs it.
///
/// # Errors
/// A game exists already (another run used the prefix) or the store failed.
pub async fn create_games(store: &PgLobbyStore, games: &[GameId]) -> anyhow::Result<()> {
    let store = store.clone();
    each(games.to_vec(), move |game_id| {
        let store = store.clone();
        async move {
            let new = NewGame {
                game_id: game_id.clone(),
                status: GameStatus::Running,
            };
            store
                .create(&new)
                .await
                .map(|_| ())
                .with_context(|| format!("create game {game_id} in the Lobby"))
        }
    })
    .await
    .map(|_| ())
}

/// Waits until the Lobby's stored offset reaches `target`, and returns how long that took.
///
/// # Errors
/// It did not within `timeout` (the message gives both ids), or the offset cannot be
/// read.
pub async fn wait_for_lobby(
    client: RedisClient,
    target: EntryId,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let offsets = RedisOffsetStore::new(client, LOBBY_SERVICE);
    let started = Instant::now();
    let mut last = None;
    loop {
        match offsets.load(LOBBY_LABEL).await {
            Ok(offset) => {
                if offset.is_some_and(|o| o >= target) {
                    return Ok(started.elapsed());
                }
                last = offset;
            }
            Err(error) => tracing::debug!(%error, "cannot read the Lobby's offset"),
        }
        if started.elapsed() >= timeout {
            anyhow::bail!(
                "the Lobby did not drain the lobby events stream within {timeout:?}: its offset ({}) is {}, the last entry {target}; \
                 is `lobby run` consuming this Redis and stream?",
                offsets.key(LOBBY_LABEL),
                last.map_or_else(|| "not set".to_owned(), |o| o.to_string()),
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The Lobby's record of every game of the run, by id (a game it lacks is absent).
///
/// # Errors
/// The store failed.
pub async fn read_games(
    store: &PgLobbyStore,
    runs: &[GameRun],
) -> anyhow::Result<BTreeMap<String, GameRecord>> {
    let ids: Vec<GameId> = runs.iter().map(|r| r.game_id.clone()).collect();
    let store = store.clone();
    let records = each(ids, move |game_id| {
        let store = store.clone();
        async move {
            match store.get(&game_id).await {
                Ok(record) => Ok(Some(record)),
                Err(lobby_ports::Error::NotFound(_)) => Ok(None),
                Err(e) => Err(e).with_context(|| format!("read game {game_id} from the Lobby")),
            }
        }
    })
    .await?;
    Ok(records
        .into_iter()
        .flatten()
        .map(|r| (r.game_id.to_string(), r))
        .collect())
}

/// The careers the Lobby holds for `players`.
///
/// # Errors
/// The store failed.
pub async fn read_careers(
    store: &PgLobbyStore,
    players: &BTreeSet<UserId>,
) -> anyhow::Result<BTreeMap<UserId, CareerRecord>> {
    let users: Vec<UserId> = players.iter().cloned().collect();
    let mut out = BTreeMap::new();
    for chunk in users.chunks(1_000) {
        for career in store
            .careers(chunk)
            .await
            .context("read the careers from the Lobby")?
        {
            out.insert(career.user_id.clone(), career);
        }
    }
    Ok(out)
}

/// A Game Master record as the simulator read it: `(status, engine_health, current_turn)`.
pub type GmRow = (String, String, u32);

/// What the Lobby holds, next to what it should.
#[derive(Debug, Clone, Default)]
pub struct LobbyCheck {
    /// Games checked.
    pub games: u64,
    /// Games by (Lobby status, runtime status of the Lobby's snapshot).
    pub table: BTreeMap<(String, String), u64>,
    /// Games whose snapshot differs from their Game Master record.
    pub snapshots: Vec<Mismatch>,
    /// Games whose Lobby status (or finish time) is not what the model says.
    pub statuses: Vec<Mismatch>,
    /// Games the model finished (each folded into the careers once).
    pub finished: u64,
    /// Players with a career, as predicted.
    pub careers: u64,
    /// Players whose career differs from the model.
    pub career_mismatches: Vec<Mismatch>,
}

impl LobbyCheck {
    /// Whether everything matched.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.snapshots.is_empty() && self.statuses.is_empty() && self.career_mismatches.is_empty()
    }

    /// Every mismatch, snapshots first.
    pub fn mismatches(&self) -> impl Iterator<Item = &Mismatch> {
        self.snapshots
            .iter()
            .chain(&self.statuses)
            .chain(&self.career_mismatches)
    }
}

fn health_text(stored: &str) -> &str {
    if stored.is_empty() { "none" } else { stored }
}

fn career_text(c: Option<&CareerRecord>) -> String {
    c.map_or_else(
        || "no career".to_owned(),
        |c| {
            format!(
                "{} finished, best planets {}, best population {}, most ships {}",
                c.games_finished, c.best_planets, c.best_population, c.most_ships_built
            )
        },
    )
}

/// Compares the Lobby's games and careers with the Game Master's records and the model.
#[must_use]
pub fn check(
    runs: &[GameRun],
    gm_rows: &BTreeMap<String, GmRow>,
    lobby_games: &BTreeMap<String, GameRecord>,
    expected_careers: &BTreeMap<UserId, CareerRecord>,
    actual_careers: &BTreeMap<UserId, CareerRecord>,
) -> LobbyCheck {
    let mut out = LobbyCheck::default();
    for run in runs {
        out.games += 1;
        let id = run.game_id.as_str();
        let Some(game) = lobby_games.get(id) else {
            out.snapshots.push(Mismatch {
                subject: id.to_owned(),
                detail: "the Lobby has no such game".to_owned(),
            });
            continue;
        };
        check_snapshot(&mut out, id, game, gm_rows.get(id));
        check_status(&mut out, id, game, run.model.finished_at_ms());
    }
    check_careers(&mut out, expected_careers, actual_careers);
    out
}

/// The game's snapshot against the Game Master's record (and its row in the table).
fn check_snapshot(out: &mut LobbyCheck, id: &str, game: &GameRecord, gm: Option<&GmRow>) {
    let (runtime_status, summary, turn) = game.snapshot.as_ref().map_or_else(
        || (String::new(), String::new(), None),
        |s| {
            (
                s.runtime_status.clone(),
                s.engine_health_summary.clone(),
                Some(s.current_turn),
            )
        },
    );
    *out.table
        .entry((game.status.as_str().to_owned(), runtime_status.clone()))
        .or_insert(0) += 1;
    let lobby_side = turn.map_or_else(
        || "no snapshot".to_owned(),
        |t| format!("{runtime_status}/{} @ turn {t}", health_text(&summary)),
    );
    match gm {
        Some((status, health, gm_turn)) => {
            if turn.is_none()
                || runtime_status != *status
                || summary != *health
                || turn != Some(*gm_turn)
            {
                out.snapshots.push(Mismatch {
                    subject: id.to_owned(),
                    detail: format!(
                        "Lobby snapshot {lobby_side}, Game Master {status}/{} @ turn {gm_turn}",
                        health_text(health)
                    ),
                });
            }
        }
        None => out.snapshots.push(Mismatch {
            subject: id.to_owned(),
            detail: format!("Lobby snapshot {lobby_side}, no Game Master record"),
        }),
    }
}

/// The Lobby's own status, and the finish time, against the model's (`expected`: when
/// the model finished the game).
fn check_status(out: &mut LobbyCheck, id: &str, game: &GameRecord, expected: Option<i64>) {
    out.finished += u64::from(expected.is_some());
    let (want_status, want_finish) = match expected {
        Some(at) => (GameStatus::Finished, Some(at)),
        None => (GameStatus::Running, None),
    };
    if game.status != want_status || game.finished_at_ms != want_finish {
        let at = |ms: Option<i64>| ms.map(|ms| format!(" at {ms}")).unwrap_or_default();
        out.statuses.push(Mismatch {
            subject: id.to_owned(),
            detail: format!(
                "Lobby {}{}, model {want_status}{}",
                game.status,
                at(game.finished_at_ms),
                at(want_finish)
            ),
        });
    }
}

/// Careers: every player either side knows of.
fn check_careers(
    out: &mut LobbyCheck,
    expected_careers: &BTreeMap<UserId, CareerRecord>,
    actual_careers: &BTreeMap<UserId, CareerRecord>,
) {
    out.careers = u64::try_from(expected_careers.len()).unwrap_or(u64::MAX);
    let players: BTreeSet<&UserId> = expected_careers
        .keys()
        .chain(actual_careers.keys())
        .collect();
    for user in players {
        let (want, got) = (expected_careers.get(user), actual_careers.get(user));
        if want != got {
            out.career_mismatches.push(Mismatch {
                subject: user.to_string(),
                detail: format!("Lobby {}, model {}", career_text(got), career_text(want)),
            });
        }
    }
}

/// The statuses a Game Master record can hold, by name (for the side-by-side table).
#[must_use]
pub fn gm_status_counts(gm_rows: &BTreeMap<String, GmRow>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (status, _, _) in gm_rows.values() {
        *out.entry(status.clone()).or_insert(0) += 1;
    }
    out
}

/// Every player of the run.
#[must_use]
pub fn players(runs: &[GameRun]) -> BTreeSet<UserId> {
    runs.iter()
        .flat_map(|r| r.roster.current())
        .filter_map(|p| UserId::new(&p.user_id).ok())
        .collect()
}

/// The runtime statuses in the order the summary lists them, then any other name.
#[must_use]
pub fn status_order(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut known: Vec<String> = RuntimeStatus::ALL
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    let mut others: BTreeSet<String> = names.into_iter().collect();
    for k in &known {
        others.remove(k);
    }
    known.extend(others);
    known
}

/// What the Lobby's `/metrics` said at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LobbyMetrics {
    /// `lobby_gm_events_consumed_total`, by outcome.
    pub consumed: BTreeMap<String, f64>,
    /// `lobby_capability_evaluations_total{outcome="evaluated"}`.
    pub evaluated: f64,
    /// `lobby_capability_evaluations_total{outcome="already_evaluated"}`.
    pub already_evaluated: f64,
    /// `lobby_stream_consumer_lag_milliseconds{consumer="gm_lobby_events"}`.
    pub lag_ms: f64,
}

impl LobbyMetrics {
    /// Reads the series the summary uses out of Prometheus / OpenMetrics text; a series
    /// the text lacks counts as zero.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let mut m = Self::default();
        for Sample {
            name,
            labels,
            value,
        } in samples(text)
        {
            match (name, label(labels, "outcome")) {
                ("lobby_gm_events_consumed_total", Some(outcome)) => {
                    *m.consumed.entry(outcome.to_owned()).or_insert(0.0) += value;
                }
                ("lobby_capability_evaluations_total", Some("evaluated")) => m.evaluated += value,
                ("lobby_capability_evaluations_total", Some("already_evaluated")) => {
                    m.already_evaluated += value;
                }
                ("lobby_stream_consumer_lag_milliseconds", _)
                    if label(labels, "consumer") == Some(LOBBY_LABEL) =>
                {
                    m.lag_ms = value;
                }
                _ => {}
            }
        }
        m
    }

    /// Counter growth from `before` to `self` (the lag is `self`'s).
    #[must_use]
    pub fn since(&self, before: &Self) -> Self {
        Self {
            consumed: self
                .consumed
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v - before.consumed.get(k).copied().unwrap_or(0.0),
                    )
                })
                .collect(),
            evaluated: self.evaluated - before.evaluated,
            already_evaluated: self.already_evaluated - before.already_evaluated,
            lag_ms: self.lag_ms,
        }
    }

    /// Entries consumed, every outcome.
    #[must_use]
    pub fn consumed_total(&self) -> f64 {
        self.consumed.values().sum()
    }

    /// Entries consumed with `outcome`.
    #[must_use]
    pub fn outcome(&self, outcome: &str) -> f64 {
        self.consumed.get(outcome).copied().unwrap_or(0.0)
    }
}

/// Fetches and parses the Lobby's metrics.
///
/// # Errors
/// As [`crate::metrics::fetch`].
pub async fn scrape(url: &crate::settings::MetricsUrl) -> anyhow::Result<LobbyMetrics> {
    Ok(LobbyMetrics::parse(&crate::metrics::fetch(url).await?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::SystemTime;

    use lobby_domain::RuntimeSnapshot;

    use super::*;
    use crate::model::GameModel;
    use crate::players::Roster;

    fn run(id: &str, finished_at: Option<i64>) -> GameRun {
        let mut model = GameModel::registered(RuntimeStatus::Running, 3);
        if let Some(at) = finished_at {
            model.finish(at);
        }
        GameRun {
            game_id: GameId::new(id).unwrap(),
            model,
            roster: Roster::new(1, 0, "t", 4),
            last_appended: None,
            divergence: None,
        }
    }

    fn game(id: &str, status: GameStatus, snapshot: Option<(&str, &str, u32)>) -> GameRecord {
        GameRecord {
            game_id: GameId::new(id).unwrap(),
            status,
            snapshot: snapshot.map(|(s, h, t)| RuntimeSnapshot {
                current_turn: t,
                runtime_status: s.to_owned(),
                engine_health_summary: h.to_owned(),
                observed_at_ms: 1,
                source: None,
            }),
            finished_at_ms: (status == GameStatus::Finished).then_some(50),
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
        }
    }

    fn career(user: &str, games: u32) -> (UserId, CareerRecord) {
        let mut c = CareerRecord::new(UserId::new(user).unwrap());
        c.games_finished = games;
        (c.user_id.clone(), c)
    }

    #[test]
    fn a_lobby_that_mirrors_the_game_master_passes() {
        let runs = [run("g1", None), run("g2", Some(50))];
        let gm: BTreeMap<String, GmRow> = [
            ("g1".to_owned(), ("running".to_owned(), "oom".to_owned(), 3)),
            ("g2".to_owned(), ("finished".to_owned(), String::new(), 4)),
        ]
        .into();
        let lobby: BTreeMap<String, GameRecord> = [
            (
                "g1".to_owned(),
                game("g1", GameStatus::Running, Some(("running", "oom", 3))),
            ),
            (
                "g2".to_owned(),
                game("g2", GameStatus::Finished, Some(("finished", "", 4))),
            ),
        ]
        .into();
        let careers: BTreeMap<_, _> = [career("u", 1)].into();
        let c = check(&runs, &gm, &lobby, &careers, &careers);
        assert!(c.passed(), "{c:?}");
        assert_eq!((c.games, c.finished, c.careers), (2, 1, 1));
        assert_eq!(c.table[&("finished".to_owned(), "finished".to_owned())], 1);
    }

    #[test]
    fn every_kind_of_difference_is_named() {
        let runs = [run("g1", None), run("g2", Some(50)), run("g3", None)];
        let gm: BTreeMap<String, GmRow> = [
            ("g1".to_owned(), ("running".to_owned(), "oom".to_owned(), 3)),
            (
                "g2".to_owned(),
                ("finished".to_owned(), "oom".to_owned(), 4),
            ),
        ]
        .into();
        let lobby: BTreeMap<String, GameRecord> = [
            (
                "g1".to_owned(),
                game("g1", GameStatus::Running, Some(("running", "oom", 2))),
            ),
            ("g2".to_owned(), game("g2", GameStatus::Running, None)),
        ]
        .into();
        let want: BTreeMap<_, _> = [career("u1", 1), career("u2", 1)].into();
        let got: BTreeMap<_, _> = [career("u1", 2), career("u3", 1)].into();
        let c = check(&runs, &gm, &lobby, &want, &got);
        assert!(!c.passed());
        let subjects: Vec<&str> = c.mismatches().map(|m| m.subject.as_str()).collect();
        assert_eq!(subjects, ["g1", "g2", "g3", "g2", "u1", "u2", "u3"]);
        assert_eq!(
            c.snapshots[0].detail,
            "Lobby snapshot running/oom @ turn 2, Game Master running/oom @ turn 3"
        );
        assert_eq!(
            c.snapshots[1].detail,
            "Lobby snapshot no snapshot, Game Master finished/oom @ turn 4"
        );
        assert_eq!(c.snapshots[2].detail, "the Lobby has no such game");
        assert_eq!(c.statuses[0].detail, "Lobby running, model finished at 50");
        assert!(
            c.career_mismatches[0]
                .detail
                .starts_with("Lobby 2 finished")
        );
        assert!(c.career_mismatches[1].detail.starts_with("Lobby no career"));
    }

    #[test]
    fn known_statuses_come_first() {
        let order = status_order(["zz".to_owned(), "running".to_owned()]);
        assert_eq!(order.first().map(String::as_str), Some("running"));
        assert_eq!(order.last().map(String::as_str), Some("zz"));
        assert_eq!(order.len(), RuntimeStatus::ALL.len() + 1);
    }

    #[test]
    fn the_lobby_series_the_summary_uses_are_read() {
        let text = r#"# TYPE lobby_gm_events_consumed counter
lobby_gm_events_consumed_total{outcome="applied"} 40
lobby_gm_events_consumed_total{outcome="finished"} 3
lobby_gm_events_consumed_total{outcome="stale"} 0
lobby_capability_evaluations_total{outcome="evaluated"} 3
lobby_capability_evaluations_total{outcome="already_evaluated"} 1
lobby_stream_consumer_lag_milliseconds{consumer="gm_lobby_events"} 7
gamemaster_health_events_consumed_total{outcome="applied"} 99
# EOF"#;
        let m = LobbyMetrics::parse(text);
        assert_eq!(m.consumed_total(), 43.0);
        assert_eq!(m.outcome("finished"), 3.0);
        assert_eq!(m.outcome("replayed"), 0.0);
        assert_eq!(
            (m.evaluated, m.already_evaluated, m.lag_ms),
            (3.0, 1.0, 7.0)
        );
        let mut later = m.clone();
        later.consumed.insert("applied".into(), 50.0);
        later.consumed.insert("replayed".into(), 2.0);
        let grown = later.since(&m);
        assert_eq!(grown.outcome("applied"), 10.0);
        assert_eq!(grown.outcome("replayed"), 2.0);
        assert_eq!(grown.evaluated, 0.0);
    }
}
