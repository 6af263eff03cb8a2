//! `lobby`: the Game Lobby's `gm:lobby_events` consumer. `lobby migrate` applies the
//! schema; `lobby seed-game` creates games; `lobby run` consumes the Game Master's events
//! until SIGTERM or SIGINT.

use std::process::ExitCode;

fn main() -> ExitCode {
    let matches = match service_kit::settings::parse(lobby_app::command()) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return service_kit::StartupError::new(format!("cannot start the async runtime: {e}"))
                .report(lobby_app::SERVICE);
        }
    };
    runtime.block_on(lobby_app::main(matches))
}
