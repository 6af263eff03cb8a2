//! What a person reads: the live status line while the run goes, and the summary with the
//! verdict at the end.

use std::collections::HashMap;
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
    /// Games by (status, engine health) as the Game Master holds them.
    pub table: HashMap<(RuntimeStatus, Option<EngineHealth>), u64>,
    /// Games that differ from the model.
    pub divergences: Vec<Divergence>,
    /// Games changed behind the model's back (`--tamper`).
    pub tampered: Vec<String>,
}

/// How many differing games the summary names.
pub const NAMED: usize = 5;

impl Report {
    /// Whether every game matches the model.
    #[must_use]
    pub fn converged(&self) -> bool {
        self.divergences.is_empty()
    }

    /// One line for stderr naming the first games that differ.
    #[must_use]
    pub fn failure_line(&self) -> String {
        let named: Vec<String> = self
            .divergences
            .iter()
            .take(NAMED)
            .map(|d| format!("{} ({})", d.game_id, describe(d)))
            .collect();
        let more = self.divergences.len().saturating_sub(NAMED);
        format!(
            "{} of {} games diverged from the model: {}{}",
            self.divergences.len(),
            self.games,
            named.join("; "),
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            }
        )
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
    format!("model {expected}, Game Master {actual}{noticed}")
}

fn health_label(h: Option<EngineHealth>) -> &'static str {
    h.map_or("none", EngineHealth::as_str)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = "─".repeat(100);
        writeln!(f, "\n galaxy-sim summary\n{rule}")?;
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
        let flows: Vec<String> = self
            .flows
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(kind, n)| format!("{} {}", kind.label(), thousands(*n)))
            .collect();
        writeln!(
            f,
            "  direct flows   {}: {}",
            thousands(self.model.flows),
            if flows.is_empty() {
                "none".to_owned()
            } else {
                flows.join(" · ")
            }
        )?;
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
            .or(self.lobby_growth.map(|n| (n, "growth of the lobby stream")));
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
        if !self.tampered.is_empty() {
            writeln!(
                f,
                "  tampered       {} changed behind the model's back (--tamper)",
                self.tampered.join(", ")
            )?;
        }

        writeln!(
            f,
            "\n  games by runtime status × engine health (as the Game Master holds them)"
        )?;
        f.write_str(&self.table_text())?;

        writeln!(f)?;
        if self.converged() {
            writeln!(
                f,
                "  verdict        ✔ CONVERGED: all {} runtime records match the model (status and engine health)",
                thousands(u64::from(self.games))
            )?;
        } else {
            writeln!(
                f,
                "  verdict        ✘ DIVERGED: {} of {} games differ from the model",
                thousands(self.divergences.len() as u64),
                thousands(u64::from(self.games))
            )?;
            for d in self.divergences.iter().take(NAMED) {
                writeln!(f, "                   {}: {}", d.game_id, describe(d))?;
            }
            let more = self.divergences.len().saturating_sub(NAMED);
            if more > 0 {
                writeln!(f, "                   … and {more} more")?;
            }
        }
        writeln!(f, "{rule}")
    }
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
            table,
            divergences,
            tampered: Vec::new(),
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
}
