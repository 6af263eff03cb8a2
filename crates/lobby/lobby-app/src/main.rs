//! `lobby`: the Game Lobby's `gm:lobby_events` consumer. `lobby migrate` applies the
//! schema; `lobby seed-game` creates games; `lobby run` consumes the Game Master's events
//! until SIGTERM or SIGINT.

fn main() -> std::process::ExitCode {
    service_kit::main(lobby_app::SERVICE, lobby_app::command(), lobby_app::main)
}
