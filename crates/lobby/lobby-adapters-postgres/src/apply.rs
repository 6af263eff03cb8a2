//! The transaction body shared by `apply_snapshots` and `finish_game`: lock the games,
//! fold the run in Rust, write each touched game and each observed player once.

use std::collections::{BTreeMap, HashMap};

use lobby_domain::{PlayerStatsAggregate, UserId, apply_observations};
use lobby_ports::{Error, GameRecord, SnapshotResult, SnapshotUpdate};
use pg_kit::Transaction;

use crate::store::{Param, decode_game, game_columns, store_error};

/// Locks the run's games in `game_id` order, so two transactions sharing games queue
/// instead of deadlocking. `NO KEY`: the key never changes, and the weaker lock lets the
/// stats' foreign-key checks through.
const LOCK_GAMES: &str = concat!(
    "SELECT ",
    game_columns!(),
    " FROM games WHERE game_id = ANY($1) ORDER BY game_id FOR NO KEY UPDATE"
);

/// Writes the final snapshot of every touched game in one statement.
const WRITE_SNAPSHOTS: &str = "UPDATE games AS g \
     SET current_turn = u.current_turn, runtime_status = u.runtime_status, \
         engine_health_summary = u.engine_health_summary, \
         snapshot_observed_at_ms = u.observed_at_ms, snapshot_source_ms = u.source_ms, \
         snapshot_source_seq = u.source_seq, updated_at = now() \
     FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], \
                 $6::bigint[], $7::bigint[]) \
         AS u(game_id, current_turn, runtime_status, engine_health_summary, observed_at_ms, \
              source_ms, source_seq) \
     WHERE g.game_id = u.game_id";

/// Records the run's stats: a player new to the game gets the run's first observation as
/// the frozen initial and the run's maxima; a known player keeps the initial and has each
/// maximum raised (the per-component rule of `lobby_domain::raise_max`). Rows whose maxima
/// do not rise are not rewritten.
const UPSERT_STATS: &str = "INSERT INTO game_player_stats AS s \
         (game_id, user_id, initial_planets, initial_population, initial_ships_built, \
          max_planets, max_population, max_ships_built) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], \
                          $6::bigint[], $7::bigint[], $8::bigint[]) \
     ON CONFLICT (game_id, user_id) DO UPDATE SET \
         max_planets = GREATEST(s.max_planets, excluded.max_planets), \
         max_population = GREATEST(s.max_population, excluded.max_population), \
         max_ships_built = GREATEST(s.max_ships_built, excluded.max_ships_built), \
         updated_at = now() \
     WHERE excluded.max_planets > s.max_planets \
        OR excluded.max_population > s.max_population \
        OR excluded.max_ships_built > s.max_ships_built";

/// A game locked by the run, as the run leaves it.
pub(crate) struct LockedGame {
    /// The record, its snapshot replaced by the run's newest.
    pub(crate) record: GameRecord,
    touched: bool,
}

/// What the run did: one result per update, and the locked games by id.
pub(crate) struct Run {
    pub(crate) results: Vec<SnapshotResult>,
    pub(crate) games: HashMap<String, LockedGame>,
}

/// Applies `updates` inside `tx` (which the caller commits).
pub(crate) async fn apply_run(
    tx: &Transaction<'_>,
    updates: &[SnapshotUpdate],
) -> Result<Run, Error> {
    let mut ids: Vec<&str> = updates.iter().map(|u| u.game_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();

    // 1. Lock the run's known games.
    let lock = tx.prepare_cached(LOCK_GAMES).await.map_err(store_error)?;
    let rows = tx.query(&lock, &[&ids]).await.map_err(store_error)?;
    let mut games = HashMap::with_capacity(rows.len());
    for row in &rows {
        let record = decode_game(row)?;
        games.insert(
            record.game_id.as_str().to_owned(),
            LockedGame {
                record,
                touched: false,
            },
        );
    }

    // 2. Fold in stream order: each snapshot is compared with the newest so far; each
    //    game's stats accumulate into one aggregate per player for the run.
    let mut results = Vec::with_capacity(updates.len());
    let mut stats: BTreeMap<&str, BTreeMap<UserId, PlayerStatsAggregate>> = BTreeMap::new();
    for update in updates {
        let id = update.game_id.as_str();
        let Some(game) = games.get_mut(id) else {
            results.push(SnapshotResult::UnknownGame);
            continue;
        };
        let stored = game.record.snapshot.as_ref();
        if update.snapshot.should_replace(stored) {
            game.record.snapshot = Some(update.snapshot.clone());
            game.touched = true;
            results.push(SnapshotResult::Applied);
        } else {
            results.push(SnapshotResult::Stale {
                stored_observed_at_ms: stored.map_or(0, |s| s.observed_at_ms),
            });
        }
        if !update.player_stats.is_empty() {
            apply_observations(stats.entry(id).or_default(), &update.player_stats);
        }
    }

    // 3. One write for the snapshots, one for the stats.
    write_snapshots(tx, &games).await?;
    write_stats(tx, &stats).await?;
    Ok(Run { results, games })
}

async fn write_snapshots(
    tx: &Transaction<'_>,
    games: &HashMap<String, LockedGame>,
) -> Result<(), Error> {
    let mut ids = Vec::new();
    let mut turns = Vec::new();
    let mut statuses = Vec::new();
    let mut summaries = Vec::new();
    let mut observed = Vec::new();
    let (mut source_ms, mut source_seq) = (Vec::new(), Vec::new());
    for (id, game) in games {
        let Some(snapshot) = game.record.snapshot.as_ref().filter(|_| game.touched) else {
            continue;
        };
        ids.push(id.as_str());
        turns.push(i64::from(snapshot.current_turn));
        statuses.push(snapshot.runtime_status.as_str());
        summaries.push(snapshot.engine_health_summary.as_str());
        observed.push(snapshot.observed_at_ms);
        // Redis never makes an id past i64::MAX; one that claims to is stored as none.
        let source = snapshot
            .source
            .and_then(|s| Some((i64::try_from(s.ms).ok()?, i64::try_from(s.seq).ok()?)));
        source_ms.push(source.map(|(ms, _)| ms));
        source_seq.push(source.map(|(_, seq)| seq));
    }
    if ids.is_empty() {
        return Ok(());
    }
    let write = tx
        .prepare_cached(WRITE_SNAPSHOTS)
        .await
        .map_err(store_error)?;
    let params: [Param<'_>; 7] = [
        &ids,
        &turns,
        &statuses,
        &summaries,
        &observed,
        &source_ms,
        &source_seq,
    ];
    tx.execute(&write, &params).await.map_err(store_error)?;
    Ok(())
}

async fn write_stats(
    tx: &Transaction<'_>,
    stats: &BTreeMap<&str, BTreeMap<UserId, PlayerStatsAggregate>>,
) -> Result<(), Error> {
    let rows = stats.values().map(BTreeMap::len).sum::<usize>();
    if rows == 0 {
        return Ok(());
    }
    let mut columns = StatColumns::with_capacity(rows);
    for (game_id, players) in stats {
        for (user_id, aggregate) in players {
            columns.push(game_id, user_id.as_str(), aggregate);
        }
    }
    let upsert = tx.prepare_cached(UPSERT_STATS).await.map_err(store_error)?;
    tx.execute(&upsert, &columns.params())
        .await
        .map_err(store_error)?;
    Ok(())
}

/// The eight parallel arrays `unnest` turns into `game_player_stats` rows.
#[derive(Default)]
pub(crate) struct StatColumns<'a> {
    game_ids: Vec<&'a str>,
    user_ids: Vec<&'a str>,
    initial: [Vec<i64>; 3],
    max: [Vec<i64>; 3],
}

impl<'a> StatColumns<'a> {
    pub(crate) fn with_capacity(n: usize) -> Self {
        let column = || Vec::with_capacity(n);
        Self {
            game_ids: Vec::with_capacity(n),
            user_ids: Vec::with_capacity(n),
            initial: [column(), column(), column()],
            max: [column(), column(), column()],
        }
    }

    pub(crate) fn push(
        &mut self,
        game_id: &'a str,
        user_id: &'a str,
        aggregate: &PlayerStatsAggregate,
    ) {
        self.game_ids.push(game_id);
        self.user_ids.push(user_id);
        for (column, values) in [
            (&mut self.initial, aggregate.initial()),
            (&mut self.max, aggregate.max()),
        ] {
            column[0].push(values.planets());
            column[1].push(values.population());
            column[2].push(values.ships_built());
        }
    }

    pub(crate) fn params(&self) -> [Param<'_>; 8] {
        [
            &self.game_ids,
            &self.user_ids,
            &self.initial[0],
            &self.initial[1],
            &self.initial[2],
            &self.max[0],
            &self.max[1],
            &self.max[2],
        ]
    }
}
