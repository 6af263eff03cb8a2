//! `gamemaster`: the Game Master service. `gamemaster migrate` applies the schema;
//! `gamemaster run` consumes `runtime:health_events` until SIGTERM or SIGINT.

fn main() -> std::process::ExitCode {
    service_kit::main(app::SERVICE, app::command(), app::main)
}
