//! Logging set-up.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (with colours on a terminal).
    Text,
    /// One JSON object per line, fields included (`game_id`, `stream_entry_id`, …).
    Json,
}

/// Installs the global subscriber: the filter comes from `RUST_LOG` (default `info`).
/// Calling it twice is harmless (the second call changes nothing).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    // Already installed (tests, or a second init): keep the first one.
    drop(result);
}
