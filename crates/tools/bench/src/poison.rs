//! Phase 4: entries PostgreSQL refuses among valid ones. The drain's stream, once as it
//! is and once with bad entries put in, drained alternately by the worker as built: the
//! bad ones must cost no more than their share, and leave rows and snapshot sequences
//! identical to the clean stream's.
//!
//! Two kinds of bad entry, each in a stream of its own:
//! - *undecodable* (`--poison-percent`, default 1 %): a game id that is a NUL byte, a real
//!   id with a NUL byte after it, or one past the length limit. Before issue 11 the first
//!   of these stopped the Game Master for good; now decoding rejects them.
//! - *refused by the database* (`--refused-percent`, default 0.1 %): events for games
//!   whose writes a trigger refuses, as a constraint an operator added would. Decoding
//!   cannot know; the worker isolates them by applying the batch in halves.

use domain_runtime::HealthEventType as E;
use stream_consumer::EntryId;

use crate::drain::{Side, drain_side, worker_drain};
use crate::fixture::Fixture;
use crate::{Options, median, rate, workload};

/// Games whose writes the database refuses during this phase.
const REFUSED_GAMES: usize = 10;

/// The refusing trigger: only writes of a summary (so `reset_games` still passes).
const INSTALL_TRIGGER: &str = "
    CREATE FUNCTION bench_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'game % is refused', NEW.game_id USING ERRCODE = '23514'; END $$;
    CREATE TRIGGER bench_refuse BEFORE UPDATE ON runtime_records FOR EACH ROW
      WHEN (NEW.game_id LIKE 'refused-%' AND NEW.engine_health <> '')
      EXECUTE FUNCTION bench_refuse();";

const REMOVE_TRIGGER: &str = "
    DROP TRIGGER bench_refuse ON runtime_records;
    DROP FUNCTION bench_refuse();
    DELETE FROM runtime_records WHERE game_id LIKE 'refused-%';";

type Entry = Vec<(&'static str, String)>;

/// The `i`-th undecodable entry: the three shapes in turn.
fn undecodable(i: usize, at_ms: u64) -> Entry {
    let game = match i % 3 {
        0 => "\0".to_owned(),
        1 => format!("{}\0", workload::game_id(i)),
        _ => "g".repeat(300),
    };
    let mut fields = workload::fields(0, E::ProbeFailed, at_ms);
    fields[0].1 = game;
    fields
}

/// The `i`-th event for a game the database refuses.
fn refused(i: usize, at_ms: u64) -> Entry {
    let mut fields = workload::fields(0, E::ProbeFailed, at_ms);
    fields[0].1 = format!("refused-{}", i % REFUSED_GAMES);
    fields
}

/// `events` with one entry from `bad` after every `every`-th; with how many were put in.
fn mixed(events: &[(usize, E)], every: usize, bad: fn(usize, u64) -> Entry) -> (Vec<Entry>, usize) {
    let now = workload::now_ms();
    let mut out = Vec::with_capacity(events.len() + events.len() / every + 1);
    let mut added = 0;
    for (i, (g, k)) in events.iter().enumerate() {
        out.push(workload::fields(*g, *k, now));
        if (i + 1) % every == 0 {
            out.push(bad(added, now));
            added += 1;
        }
    }
    (out, added)
}

/// One stream drained from scratch by the worker, the refused games' rows left out.
async fn drain_once(
    fx: &Fixture,
    stream: &str,
    last: EntryId,
    tag: &str,
    opts: &Options,
) -> anyhow::Result<Side> {
    let mut side = drain_side(fx, &format!("poison-{tag}"), async |lobby, service| {
        worker_drain(fx, stream, lobby, service, last, opts.batch_size).await
    })
    .await?;
    side.rows.retain(|game, _| !game.starts_with("refused-"));
    Ok(side)
}

fn every(percent: f64) -> usize {
    // A share of p % of the stream is one bad entry after every (100 / p - 1) good ones.
    ((100.0 / percent.max(0.001)) - 1.0).round().max(1.0) as usize
}

/// A preloaded stream: its key, its last id, and how many of its entries are bad.
struct Stream {
    key: String,
    last: EntryId,
    bad: usize,
}

/// Preloads the three streams and makes the database refuse the `refused-*` games.
async fn prepare(fx: &Fixture, opts: &Options) -> anyhow::Result<[Stream; 3]> {
    let events = workload::events(opts.events, opts.games, opts.seed);
    let (undecodable_entries, n_undecodable) =
        mixed(&events, every(opts.poison_percent), undecodable);
    let (refused_entries, n_refused) = mixed(&events, every(opts.refused_percent), refused);
    let clean = fx.key("poison:clean").await?;
    let last_clean = workload::preload(&fx.redis, &clean, &events).await?;
    let undecodable_key = fx.key("poison:undecodable").await?;
    let last_undecodable =
        workload::preload_entries(&fx.redis, &undecodable_key, undecodable_entries).await?;
    let refused_key = fx.key("poison:refused").await?;
    let last_refused = workload::preload_entries(&fx.redis, &refused_key, refused_entries).await?;

    let c = fx.pool.get().await?;
    let n_games = i64::try_from(REFUSED_GAMES)?;
    c.execute(
        "INSERT INTO runtime_records (game_id, status, current_turn)
         SELECT 'refused-' || g, 'running', 0 FROM generate_series(0, $1::bigint - 1) g",
        &[&n_games],
    )
    .await?;
    c.batch_execute(INSTALL_TRIGGER).await?;
    Ok([
        Stream {
            key: clean,
            last: last_clean,
            bad: 0,
        },
        Stream {
            key: undecodable_key,
            last: last_undecodable,
            bad: n_undecodable,
        },
        Stream {
            key: refused_key,
            last: last_refused,
            bad: n_refused,
        },
    ])
}

/// One round: each stream drained once; every stream's entries per second, or `None`
/// when a poisoned stream left other rows or snapshots than the clean one.
async fn round(
    fx: &Fixture,
    streams: &[Stream; 3],
    opts: &Options,
) -> anyhow::Result<Option<[f64; 3]>> {
    let mut drained = Vec::with_capacity(3);
    for (stream, tag) in streams.iter().zip(["clean", "undecodable", "refused"]) {
        drained.push(drain_once(fx, &stream.key, stream.last, tag, opts).await?);
    }
    let clean = &drained[0];
    if drained[1..]
        .iter()
        .any(|d| d.rows != clean.rows || d.snapshots != clean.snapshots)
    {
        return Ok(None);
    }
    let rates = [0, 1, 2].map(|i| rate(opts.events + streams[i].bad, drained[i].took));
    Ok(Some(rates))
}

/// Runs the rounds and prints the table; `Ok(false)` when a poisoned stream left other
/// rows or snapshots than the clean one.
pub async fn run(fx: &Fixture, opts: &Options) -> anyhow::Result<bool> {
    let streams = prepare(fx, opts).await?;
    println!(
        "\n## Refused entries: {} valid events over {} games, batch {}, {} rounds\n",
        opts.events, opts.games, opts.batch_size, opts.rounds
    );
    println!(
        "Beside the clean stream: {} undecodable entries ({} %: NUL game ids, overlong ids) in one, \
         {} entries for {REFUSED_GAMES} games the database refuses ({} %) in another. Rates count every entry of the stream.\n",
        streams[1].bad, opts.poison_percent, streams[2].bad, opts.refused_percent
    );
    println!(
        "| round | clean entries/s | undecodable entries/s | ratio | refused entries/s | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut rows: Vec<[f64; 3]> = Vec::new();
    let mut identical = true;
    for n in 1..=opts.rounds {
        match round(fx, &streams, opts).await? {
            Some(r) => {
                println!(
                    "| {n} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} |",
                    r[0],
                    r[1],
                    r[1] / r[0],
                    r[2],
                    r[2] / r[0]
                );
                rows.push(r);
            }
            None => {
                identical = false;
                println!(
                    "| {n} | FAILED: a poisoned stream left other rows or snapshots than the clean one | | | | |"
                );
            }
        }
    }
    fx.pool.get().await?.batch_execute(REMOVE_TRIGGER).await?;
    fx.del(&streams.map(|s| s.key)).await?;
    if identical {
        let column = |f: fn(&[f64; 3]) -> f64| median(&rows.iter().map(f).collect::<Vec<_>>());
        println!(
            "| median | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} |",
            column(|r| r[0]),
            column(|r| r[1]),
            column(|r| r[1] / r[0]),
            column(|r| r[2]),
            column(|r| r[2] / r[0])
        );
        println!(
            "\nEvery round: both poisoned streams drained completely and left the clean stream's runtime_records rows and per-game snapshot sequences."
        );
    }
    Ok(identical)
}
