//! `galaxy-sim`: simulated Runtime Manager traffic against a running Game Master, with a
//! convergence verdict. See the library documentation for the steps.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use galaxy_sim::{NAME, Settings};
use service_kit::StartupError;

fn main() -> ExitCode {
    let matches = match service_kit::settings::parse(Settings::command()) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let settings = match Settings::from_arg_matches(&matches) {
        Ok(s) => s,
        Err(e) => return StartupError::new(e.to_string()).report(NAME),
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return StartupError::new(format!("cannot start the async runtime: {e}")).report(NAME);
        }
    };
    runtime.block_on(galaxy_sim::run(settings))
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
