//! `galaxy-sim`: simulated Runtime Manager traffic against a running Game Master, with a
//! convergence verdict. See the library documentation for the steps.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use galaxy_sim::{NAME, Settings};
use service_kit::StartupError;

fn main() -> ExitCode {
    service_kit::main(NAME, Settings::command(), |matches| async move {
        let settings = match Settings::from_arg_matches(&matches) {
            Ok(s) => s,
            Err(e) => return StartupError::new(e.to_string()).report(NAME),
        };
        init_logging();
        galaxy_sim::run(settings).await
    })
}

/// Warnings and errors only, unless `RUST_LOG` asks for more: the simulator's output is
/// its status line and its summary.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
