//! `galaxy-live`: real engines through a running Runtime Manager, Game Master and Lobby,
//! disturbed for real, with a verdict. See `galaxy_sim::live` for the steps.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use galaxy_sim::live::{self, LiveSettings, NAME};
use service_kit::StartupError;

fn main() -> ExitCode {
    service_kit::main(NAME, LiveSettings::command(), |matches| async move {
        let settings = match LiveSettings::from_arg_matches(&matches) {
            Ok(s) => s,
            Err(e) => return StartupError::new(e.to_string()).report(NAME),
        };
        galaxy_sim::init_logging();
        live::run(settings).await
    })
}
