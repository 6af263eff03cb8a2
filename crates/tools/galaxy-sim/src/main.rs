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
        galaxy_sim::init_logging();
        galaxy_sim::run(settings).await
    })
}
