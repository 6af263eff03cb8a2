//! What a person reads: the live status line while the run goes, and the summary with the
//! verdict at the end.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use domain_runtime::{EngineHealth, RuntimeStatus};
use stream_consumer::EntryId;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::fleet::{Divergence, Fleet};
use crate::gm::GmMetrics;
use crate::lobby::{LobbyCheck, LobbyMetrics};
use crate::model::ModelCounts;
use crate::script::FlowKind;

/// `1234567` as `1,234,567`.
#[must_use]
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Per second, rounded.
fn per_second(n: u64, over: Duration) -> u64 {
    let secs = over.as_secs_f64();
    if secs <= 0.0 {
        return 0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rate = (n as f64 / secs).round() as u64;
    rate
}

/// Whole counter values from the metrics (they are integers sent as floats).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn whole(v: f64) -> u64 {
    v.max(0.0).round() as u64
}

/// The one live line: on a terminal, redrawn in place four times a second; otherwise a
/// plain line every five seconds (logs, CI).
pub fn status_line(
    fleet: Arc<Fleet>,
    duration: Duration,
    drain_target: watch::Receiver<Option<EntryId>>,
    done: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let tty = std::io::stderr().is_terminal();
        let every = if tty {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(5)
        };
        let started = Instant::now();
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                () = done.cancelled() => break,
                _ = tick.tick() => {}
            }
            let line = live_text(&fleet, started.elapsed(), duration, *drain_target.borrow());
            let mut err = std::io::stderr().lock();
            if tty {
                let _ = write!(err, "\r\x1b[2K{line}");
            } else {
                let _ = writeln!(err, "{line}");
            }
            let _ = err.flush();
        }
        if tty {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    })
}

fn live_text(
    fleet: &Fleet,
    elapsed: Duration,
    duration: Duration,
    target: Option<EntryId>,
) -> String {
    let published = fleet.counters.published.load(Ordering::Relaxed);
    let offset = *fleet.gm_offset.borrow();
    match target {
        None => format!(
            "{:>5.1}s/{:.0}s │ {} events ({}/s) │ {} direct flows │ Game Master {} ms behind (peak {} ms)",
            elapsed.as_secs_f64().min(duration.as_secs_f64()),
            duration.as_secs_f64(),
            thousands(published),
            thousands(per_second(published, elapsed.min(duration))),
            thousands(fleet.counters.flows_total()),
            fleet.progress.lag_ms(),
            fleet.progress.peak_lag_ms(),
        ),
        Some(target) => format!(
            "draining │ {} events published │ Game Master at {offset}, last entry {target} ({} ms behind)",
            thousands(published),
            target.ms.saturating_sub(offset.ms),
        ),
    }
}

/// Everything the summary shows.
#[derive(Debug)]
pub struct Report {
    /// Games in the fleet.
    pub games: u32,
    /// First and last game id.
    pub game_range: (String, String),
    /// The seed.
    pub seed: u64,
    /// Target events per second.
    pub rate: u32,
    /// How long publishing went on.
    pub publishing: Duration,
    /// Health events published.
    pub published: u64,
    /// Direct flows by kind, in [`FlowKind::ALL`] order.
    pub flows: Vec<(FlowKind, u64)>,
    /// The model's totals.
    pub model: ModelCounts,
    /// What the Game Master counted during the run (growth of its counters), when its
    /// metrics were given.
    pub gm: Option<GmMetrics>,
    /// Peak of the Game Master's own lag gauge, when its metrics were given.
    pub gm_peak_lag_ms: Option<u64>,
    /// Peak lag seen from the stored offset.
    pub peak_lag_ms: u64,
    /// From the end of publishing to the Game Master's offset reaching the last entry.
    pub drain: Duration,
    /// Growth of the lobby stream's length, when it could be read.
    pub lobby_growth: Option<u64>,
    /// `runtime_snapshot_update`s the simulator published for the Game Master's other
    /// flows (registrations and status changes).
    pub flow_snapshots: u64,
    /// `game_finished` events the simulator published for the Game Master.
    pub flow_finished: u64,
    /// Games finished after publishing stopped (`--finish-games`).
    pub end_finished: u64,
    /// Games by (status, engine health) as the Game Master holds them.
    pub table: HashMap<(RuntimeStatus, Option<EngineHealth>), u64>,
    /// Games that differ from the model.
    pub divergences: Vec<Divergence>,
    /// Games changed behind the model's back (`--tamper`).
    pub tampered: Vec<String>,
    /// The Lobby's side, when the run had a Lobby.
    pub lobby: Option<LobbyReport>,
}

/// The Lobby's side of the summary.
#[derive(Debug, Clone)]
pub struct LobbyReport {
    /// What the checks found.
    pub check: LobbyCheck,
    /// Game Master records by status, to set beside the Lobby's snapshots.
    pub gm_statuses: BTreeMap<String, u64>,
    /// What the Lobby counted during the run (growth of its counters), when its metrics
    /// were given.
    pub metrics: Option<LobbyMetrics>,
    /// Peak of the Lobby's own lag gauge, when its metrics were given.
    pub peak_lag_ms: Option<u64>,
    /// From the Game Master's drain to the Lobby's offset reaching the stream's last entry.
    pub drain: Duration,
}

/// How many differing games the summary names.
pub const NAMED: usize = 5;

/// `✔` or `✘`.
fn mark(ok: bool) -> &'static str {
    if ok { "✔" } else { "✘" }
}

/// "; and N more" when `total` exceeds [`NAMED`].
fn and_more(total: usize) -> String {
    let more = total.saturating_sub(NAMED);
    if more > 0 {
        format!("; and {more} more")
    } else {
        String::new()
    }
}

impl Report {
    /// Whether every game matches the model and, with a Lobby, the Lobby matches too.
    #[must_use]
    pub fn converged(&self) -> bool {
        self.divergences.is_empty() && self.lobby.as_ref().is_none_or(|l| l.check.passed())
    }

    /// One line for stderr naming the first games (and players) that differ.
    #[must_use]
    pub fn failure_line(&self) -> String {
        let mut parts = Vec::new();
        if !self.divergences.is_empty() {
            let named: Vec<String> = self
                .divergences
                .iter()
                .take(NAMED)
                .map(|d| format!("{} ({})", d.game_id, describe(d)))
                .collect();
            parts.push(format!(
                "{} of {} games diverged from the model: {}{}",
                self.divergences.len(),
                self.games,
                named.join("; "),
                and_more(self.divergences.len())
            ));
        }
        if let Some(lobby) = self.lobby.as_ref().filter(|l| !l.check.passed()) {
            let total = lobby.check.mismatches().count();
            let named: Vec<String> = lobby
                .check
                .mismatches()
                .take(NAMED)
                .map(|m| format!("{} ({})", m.subject, m.detail))
                .collect();
            parts.push(format!(
                "{total} Lobby {}: {}{}",
                if total == 1 { "mismatch" } else { "mismatches" },
                named.join("; "),
                and_more(total)
            ));
        }
        parts.join("; ")
    }
}

fn describe(d: &Divergence) -> String {
    let expected = format!(
        "{}/{}",
        d.expected.status,
        health_label(d.expected.engine_health)
    );
    let actual = d.actual.as_ref().map_or_else(
        || "no runtime record".to_owned(),
        |(status, health)| {
            format!(
                "{status}/{}",
                if health.is_empty() { "none" } else { health }
            )
        },
    );
    let noticed = d
        .noticed
        .as_ref()
        .map(|n| format!(", noticed {n}"))
        .unwrap_or_default();
    let turns = d
        .turns
        .map(|(model, stored)| format!(" (turn: model {model}, Game Master {stored})"))
        .unwrap_or_default();
    format!("model {expected}, Game Master {actual}{turns}{noticed}")
}

fn health_label(h: Option<EngineHealth>) -> &'static str {
    h.map_or("none", EngineHealth::as_str)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = "─".repeat(100);
        writeln!(f, "\n galaxy-sim summary\n{rule}")?;
        self.run_lines(f)?;
        self.flow_lines(f)?;
        self.game_master_lines(f)?;
        if let Some(lobby) = &self.lobby {
            self.lobby_lines(f, lobby)?;
        }
        if !self.tampered.is_empty() {
            writeln!(
                f,
                "  tampered       {} changed behind the model's back (--tamper)",
                self.tampered.join(", ")
            )?;
        }
        self.table_lines(f)?;
        self.verdict_lines(f)?;
        writeln!(f, "{rule}")
    }
}

impl Report {
    /// The fleet, what was published, and what the Game Master consumed.
    fn run_lines(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  fleet          {} games ({} … {}), seed {}",
            thousands(u64::from(self.games)),
            self.game_range.0,
            self.game_range.1,
            self.seed
        )?;
        writeln!(
            f,
            "  published      {} health events in {:.1} s = {}/s (ceiling {}/s), each upserted to health_snapshots first",
            thousands(self.published),
            self.publishing.as_secs_f64(),
            thousands(per_second(self.published, self.publishing)),
            thousands(u64::from(self.rate)),
        )?;
        match &self.gm {
            Some(gm) => writeln!(
                f,
                "  consumed       {} by the Game Master ({} applied)",
                thousands(whole(gm.consumed)),
                thousands(whole(gm.applied)),
            )?,
            None => writeln!(
                f,
                "  consumed       all of them (its offset reached the last entry); pass --gamemaster-metrics-url for its counters"
            )?,
        }
        Ok(())
    }

    /// The direct flows the simulator played for the Game Master's other flows.
    fn flow_lines(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flows: Vec<String> = self
            .flows
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(kind, n)| format!("{} {}", kind.label(), thousands(*n)))
            .collect();
        let at_end = if self.end_finished > 0 {
            format!(
                " ({} of the finishes after publishing stopped, --finish-games)",
                thousands(self.end_finished)
            )
        } else {
            String::new()
        };
        writeln!(
            f,
            "  direct flows   {}: {}{at_end}",
            thousands(self.model.flows),
            if flows.is_empty() {
                "none".to_owned()
            } else {
                flows.join(" · ")
            }
        )?;
        Ok(())
    }

    /// What the Game Master did with the events: status changes, snapshots, flows' events, lag.
    fn game_master_lines(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gm_transitions = self
            .gm
            .map(|gm| {
                format!(
                    " (Game Master counted {})",
                    thousands(whole(gm.transitions))
                )
            })
            .unwrap_or_default();
        writeln!(
            f,
            "  health CAS     {} status changes by health events{gm_transitions}; {} fell back to a summary-only write (another flow held the status)",
            thousands(self.model.health_transitions),
            thousands(self.model.cas_conflicts),
        )?;
        let snapshots = self
            .gm
            .map(|gm| {
                (
                    whole(gm.snapshots),
                    "gamemaster_lobby_events_published_total",
                )
            })
            .or(self.lobby_growth.map(|n| {
                (
                    n.saturating_sub(self.flow_snapshots + self.flow_finished),
                    "growth of the lobby stream, less the flows' events",
                )
            }));
        match snapshots {
            Some((n, source)) => {
                let mark = if n == self.model.snapshots {
                    "✔"
                } else {
                    "≠"
                };
                writeln!(
                    f,
                    "  snapshots      {} runtime_snapshot_update published ({source}); model predicts {} {mark}",
                    thousands(n),
                    thousands(self.model.snapshots),
                )?;
            }
            None => writeln!(
                f,
                "  snapshots      model predicts {} runtime_snapshot_update",
                thousands(self.model.snapshots)
            )?,
        }
        writeln!(
            f,
            "  flow events    {} published through the Game Master's lobby publisher for its other flows: {} runtime_snapshot_update (registrations and status changes) · {} game_finished",
            thousands(self.flow_snapshots + self.flow_finished),
            thousands(self.flow_snapshots),
            thousands(self.flow_finished),
        )?;
        let gauge = self
            .gm_peak_lag_ms
            .map(|ms| format!(" (its lag gauge peaked at {ms} ms)"))
            .unwrap_or_default();
        writeln!(
            f,
            "  consumer lag   peak {} ms: the longest an entry waited for the Game Master{gauge}; drained {:.2} s after publishing stopped",
            thousands(self.peak_lag_ms),
            self.drain.as_secs_f64(),
        )?;
        Ok(())
    }

    /// The tables of games by status and summary (and the Lobby's view, with its checks).
    fn table_lines(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "\n  games by runtime status × engine health (as the Game Master holds them)"
        )?;
        f.write_str(&self.table_text())?;
        if let Some(lobby) = &self.lobby {
            writeln!(
                f,
                "\n  games by runtime status: the Game Master's records beside the Lobby's view of them"
            )?;
            f.write_str(&lobby_table_text(lobby))?;
            writeln!(f)?;
            self.check_lines(f, lobby)?;
        }
        Ok(())
    }

    /// The verdict, naming the first games that diverged.
    fn verdict_lines(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f)?;
        if self.converged() {
            let lobby = if self.lobby.is_some() {
                "; the Lobby mirrors every one of them, and every career is as predicted"
            } else {
                ""
            };
            writeln!(
                f,
                "  verdict        ✔ CONVERGED: all {} runtime records match the model (status, engine health and turn){lobby}",
                thousands(u64::from(self.games))
            )?;
        } else {
            let mut what = Vec::new();
            if !self.divergences.is_empty() {
                what.push(format!(
                    "{} of {} games differ from the model",
                    thousands(self.divergences.len() as u64),
                    thousands(u64::from(self.games))
                ));
            }
            if let Some(lobby) = self.lobby.as_ref().filter(|l| !l.check.passed()) {
                let n = lobby.check.mismatches().count();
                what.push(format!(
                    "{} Lobby {}",
                    thousands(n as u64),
                    if n == 1 { "mismatch" } else { "mismatches" }
                ));
            }
            writeln!(f, "  verdict        ✘ DIVERGED: {}", what.join("; "))?;
            for d in self.divergences.iter().take(NAMED) {
                writeln!(f, "                   {}: {}", d.game_id, describe(d))?;
            }
            let more = self.divergences.len().saturating_sub(NAMED);
            if more > 0 {
                writeln!(f, "                   … and {more} more")?;
            }
            if let Some(lobby) = &self.lobby {
                for m in lobby.check.mismatches().take(NAMED) {
                    writeln!(f, "                   {}: {}", m.subject, m.detail)?;
                }
                let more = lobby.check.mismatches().count().saturating_sub(NAMED);
                if more > 0 {
                    writeln!(f, "                   … and {more} more")?;
                }
            }
        }
        Ok(())
    }
}

impl Report {
    /// What the Lobby consumed and how fast, from its metrics when given.
    fn lobby_lines(&self, f: &mut fmt::Formatter<'_>, lobby: &LobbyReport) -> fmt::Result {
        match &lobby.metrics {
            Some(m) => {
                let outcomes: Vec<String> = m
                    .consumed
                    .iter()
                    .filter(|(outcome, n)| **n > 0.0 || outcome.as_str() == "stale")
                    .map(|(outcome, n)| format!("{outcome} {}", thousands(whole(*n))))
                    .collect();
                let total = whole(m.consumed_total());
                let growth = self
                    .lobby_growth
                    .map(|g| {
                        format!(
                            "; the stream grew by {} {}",
                            thousands(g),
                            if g == total { "✔" } else { "≠" }
                        )
                    })
                    .unwrap_or_default();
                writeln!(
                    f,
                    "  Lobby          consumed {} entries (lobby_gm_events_consumed_total): {}{growth}",
                    thousands(total),
                    outcomes.join(" · "),
                )?;
                let finished = lobby.check.finished;
                writeln!(
                    f,
                    "  evaluations    {} career evaluations (lobby_capability_evaluations_total{{outcome=\"evaluated\"}}), {} found already done; the model finished {} games {}",
                    thousands(whole(m.evaluated)),
                    thousands(whole(m.already_evaluated)),
                    thousands(finished),
                    mark(whole(m.evaluated) == finished),
                )?;
            }
            None => writeln!(
                f,
                "  Lobby          consumed the lobby events stream to its last entry; pass --lobby-metrics-url for its counters"
            )?,
        }
        let gauge = lobby
            .peak_lag_ms
            .map(|ms| format!("; its lag gauge peaked at {ms} ms"))
            .unwrap_or_default();
        writeln!(
            f,
            "  Lobby lag      drained {:.2} s after the Game Master{gauge}",
            lobby.drain.as_secs_f64()
        )
    }

    /// One line per check, with its mark.
    fn check_lines(&self, f: &mut fmt::Formatter<'_>, lobby: &LobbyReport) -> fmt::Result {
        let games = u64::from(self.games);
        let c = &lobby.check;
        let gm_ok = games - (self.divergences.len() as u64).min(games);
        writeln!(
            f,
            "  checks         {} Game Master     {} of {} runtime records match the model (status, engine health, turn)",
            mark(self.divergences.is_empty()),
            thousands(gm_ok),
            thousands(games),
        )?;
        writeln!(
            f,
            "                 {} Lobby snapshots {} of {} games hold their Game Master record (runtime_status, engine_health_summary, current_turn)",
            mark(c.snapshots.is_empty()),
            thousands(c.games - (c.snapshots.len() as u64).min(c.games)),
            thousands(c.games),
        )?;
        writeln!(
            f,
            "                 {} Lobby statuses  {} finished (at the time their game_finished gave), {} running{}",
            mark(c.statuses.is_empty()),
            thousands(c.finished),
            thousands(c.games - c.finished.min(c.games)),
            if c.statuses.is_empty() {
                ", as the model says".to_owned()
            } else {
                format!("; {} games differ", thousands(c.statuses.len() as u64))
            },
        )?;
        writeln!(
            f,
            "                 {} careers         {} players' careers as predicted: {} finished games, each folded once{}",
            mark(c.career_mismatches.is_empty()),
            thousands(c.careers),
            thousands(c.finished),
            if c.career_mismatches.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} players differ",
                    thousands(c.career_mismatches.len() as u64)
                )
            },
        )
    }
}

/// Game Master records by status beside the Lobby's snapshots by runtime status, split
/// by the Lobby's own game status.
fn lobby_table_text(lobby: &LobbyReport) -> String {
    let statuses = crate::lobby::status_order(
        lobby
            .gm_statuses
            .keys()
            .cloned()
            .chain(lobby.check.table.keys().map(|(_, runtime)| runtime.clone())),
    );
    // The Lobby's game statuses present, in the Lobby's own order.
    let present: std::collections::BTreeSet<&str> = lobby
        .check
        .table
        .keys()
        .map(|(game, _)| game.as_str())
        .collect();
    let game_statuses: Vec<String> = lobby_domain::GameStatus::ALL
        .iter()
        .map(|g| g.as_str())
        .filter(|g| present.contains(g))
        .map(str::to_owned)
        .collect();
    let mut headers = vec!["Game Master".to_owned(), "Lobby snapshot".to_owned()];
    headers.extend(game_statuses.iter().map(|g| format!("Lobby game {g}")));
    let widths: Vec<usize> = headers.iter().map(|h| h.chars().count().max(6)).collect();
    let mut out = String::new();
    let _ = write!(out, "  {:<24}", "");
    for (h, w) in headers.iter().zip(&widths) {
        let _ = write!(out, "  {h:>w$}");
    }
    let _ = writeln!(out);
    let mut totals = vec![0_u64; headers.len()];
    for status in &statuses {
        let label = if status.is_empty() {
            "(no snapshot)"
        } else {
            status.as_str()
        };
        let mut cells = vec![
            lobby.gm_statuses.get(status).copied().unwrap_or(0),
            lobby
                .check
                .table
                .iter()
                .filter(|((_, runtime), _)| runtime == status)
                .map(|(_, n)| *n)
                .sum(),
        ];
        cells.extend(game_statuses.iter().map(|g| {
            lobby
                .check
                .table
                .get(&(g.clone(), status.clone()))
                .copied()
                .unwrap_or(0)
        }));
        if cells.iter().all(|n| *n == 0) && RuntimeStatus::ALL.iter().all(|s| s.as_str() != status)
        {
            continue;
        }
        let _ = write!(out, "  {label:<24}");
        for ((n, w), total) in cells.iter().zip(&widths).zip(totals.iter_mut()) {
            *total += n;
            let cell = if *n == 0 {
                "·".to_owned()
            } else {
                thousands(*n)
            };
            let _ = write!(out, "  {cell:>w$}");
        }
        let _ = writeln!(out);
    }
    let _ = write!(out, "  {:<24}", "total");
    for (n, w) in totals.iter().zip(&widths) {
        let _ = write!(out, "  {:>w$}", thousands(*n));
    }
    let _ = writeln!(out);
    out
}

impl Report {
    fn table_text(&self) -> String {
        let columns: Vec<Option<EngineHealth>> = EngineHealth::ALL
            .into_iter()
            .map(Some)
            .chain(std::iter::once(None))
            .collect();
        let header = |c: &Option<EngineHealth>| health_label(*c);
        let widths: Vec<usize> = columns.iter().map(|c| header(c).len().max(5)).collect();
        let mut out = String::new();
        let _ = write!(out, "  {:<24}", "");
        for (c, w) in columns.iter().zip(&widths) {
            let _ = write!(out, " {:>w$}", header(c));
        }
        let _ = writeln!(out, " {:>6}", "total");
        let mut column_totals = vec![0_u64; columns.len()];
        for status in RuntimeStatus::ALL {
            let _ = write!(out, "  {:<24}", status.as_str());
            let mut row_total = 0;
            for (i, (c, w)) in columns.iter().zip(&widths).enumerate() {
                let n = self.table.get(&(status, *c)).copied().unwrap_or(0);
                row_total += n;
                column_totals[i] += n;
                let cell = if n == 0 {
                    "·".to_owned()
                } else {
                    thousands(n)
                };
                let _ = write!(out, " {cell:>w$}");
            }
            let _ = writeln!(out, " {:>6}", thousands(row_total));
        }
        let _ = write!(out, "  {:<24}", "total");
        for (n, w) in column_totals.iter().zip(&widths) {
            let _ = write!(out, " {:>w$}", thousands(*n));
        }
        let _ = writeln!(out, " {:>6}", thousands(column_totals.iter().sum()));
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use domain_runtime::{GameId, HealthState};

    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    fn report(divergences: Vec<Divergence>) -> Report {
        let mut table = HashMap::new();
        table.insert((RuntimeStatus::Running, Some(EngineHealth::Healthy)), 2);
        table.insert((RuntimeStatus::Stopped, None), 1);
        Report {
            games: 3,
            game_range: ("s-0".into(), "s-2".into()),
            seed: 7,
            rate: 100,
            publishing: Duration::from_secs(2),
            published: 200,
            flows: vec![(FlowKind::TurnStarted, 3)],
            model: ModelCounts {
                events: 200,
                snapshots: 50,
                flows: 3,
                ..ModelCounts::default()
            },
            gm: None,
            gm_peak_lag_ms: None,
            peak_lag_ms: 12,
            drain: Duration::from_millis(30),
            lobby_growth: Some(50),
            flow_snapshots: 0,
            flow_finished: 0,
            end_finished: 0,
            table,
            divergences,
            tampered: Vec::new(),
            lobby: None,
        }
    }

    #[test]
    fn a_converged_run_says_so_and_counts_the_table() {
        let r = report(Vec::new());
        let text = r.to_string();
        assert!(r.converged());
        assert!(
            text.contains("✔ CONVERGED: all 3 runtime records"),
            "{text}"
        );
        assert!(text.contains("100/s"), "{text}");
        assert!(text.contains("model predicts 50 ✔"), "{text}");
        let running = text
            .lines()
            .find(|l| l.trim_start().starts_with("running"))
            .unwrap_or("");
        assert!(running.trim_end().ends_with('2'), "{running}");
        let total = text
            .lines()
            .rfind(|l| l.trim_start().starts_with("total"))
            .unwrap_or("");
        assert!(total.trim_end().ends_with('3'), "{total}");
    }

    #[test]
    fn a_diverged_run_names_the_games() {
        let d = Divergence {
            game_id: GameId::new("s-1").unwrap(),
            expected: HealthState {
                status: RuntimeStatus::Running,
                engine_health: Some(EngineHealth::Healthy),
            },
            actual: Some(("stopped".into(), "healthy".into())),
            turns: None,
            noticed: None,
        };
        let r = report(vec![d]);
        assert!(!r.converged());
        let text = r.to_string();
        assert!(text.contains("✘ DIVERGED: 1 of 3"), "{text}");
        assert!(
            text.contains("s-1: model running/healthy, Game Master stopped/healthy"),
            "{text}"
        );
        assert!(
            r.failure_line()
                .starts_with("1 of 3 games diverged from the model: s-1 (")
        );
    }

    fn with_lobby(check: LobbyCheck) -> Report {
        let mut r = report(Vec::new());
        r.flow_snapshots = 8;
        r.flow_finished = 1;
        r.lobby_growth = Some(59);
        let mut consumed = BTreeMap::new();
        consumed.insert("applied".to_owned(), 58.0);
        consumed.insert("finished".to_owned(), 1.0);
        r.lobby = Some(LobbyReport {
            check,
            gm_statuses: [("running".to_owned(), 2), ("finished".to_owned(), 1)].into(),
            metrics: Some(LobbyMetrics {
                consumed,
                evaluated: 1.0,
                already_evaluated: 0.0,
                lag_ms: 0.0,
            }),
            peak_lag_ms: Some(4),
            drain: Duration::from_millis(20),
        });
        r
    }

    fn lobby_check() -> LobbyCheck {
        LobbyCheck {
            games: 3,
            table: [
                (("running".to_owned(), "running".to_owned()), 2),
                (("finished".to_owned(), "finished".to_owned()), 1),
            ]
            .into(),
            finished: 1,
            careers: 2,
            ..LobbyCheck::default()
        }
    }

    #[test]
    fn the_lobby_view_sits_beside_the_game_masters() {
        let r = with_lobby(lobby_check());
        assert!(r.converged());
        let text = r.to_string();
        assert!(
            text.contains("model predicts 50 ✔"),
            "the flows' events are not the Game Master's: {text}"
        );
        assert!(text.contains("consumed 59 entries"), "{text}");
        assert!(text.contains("the stream grew by 59 ✔"), "{text}");
        assert!(text.contains("✔ Lobby snapshots 3 of 3"), "{text}");
        assert!(text.contains("✔ careers         2 players"), "{text}");
        assert!(
            text.contains("the Lobby mirrors every one of them"),
            "{text}"
        );
        let header = text
            .lines()
            .find(|l| l.contains("Lobby snapshot") && l.contains("Lobby game"))
            .unwrap();
        assert!(
            header.find("Lobby game running") < header.find("Lobby game finished"),
            "{header}"
        );
        let table: Vec<usize> = lobby_table_text(r.lobby.as_ref().unwrap())
            .lines()
            .map(|l| l.chars().count())
            .collect();
        assert!(table.windows(2).all(|w| w[0] == w[1]), "{table:?}");
        let finished = text
            .lines()
            .rfind(|l| l.trim_start().starts_with("finished"))
            .unwrap();
        assert_eq!(
            finished.split_whitespace().collect::<Vec<_>>(),
            ["finished", "1", "1", "·", "1"]
        );
    }

    #[test]
    fn a_lobby_mismatch_fails_the_run_and_is_named() {
        let mut check = lobby_check();
        check.career_mismatches.push(crate::lobby::Mismatch {
            subject: "p-u1".into(),
            detail: "Lobby 2 finished, model 1 finished".into(),
        });
        let r = with_lobby(check);
        assert!(!r.converged());
        assert_eq!(
            r.failure_line(),
            "1 Lobby mismatch: p-u1 (Lobby 2 finished, model 1 finished)"
        );
        let text = r.to_string();
        assert!(text.contains("✘ DIVERGED: 1 Lobby mismatch"), "{text}");
        assert!(text.contains("✘ careers"), "{text}");
        assert!(text.contains("p-u1: Lobby 2 finished"), "{text}");
    }
}
