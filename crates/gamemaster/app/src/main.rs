//! `gamemaster`: the Game Master service. `gamemaster migrate` applies the schema;
//! `gamemaster run` consumes `runtime:health_events` until SIGTERM or SIGINT.

use std::process::ExitCode;

fn main() -> ExitCode {
    let matches = match service_kit::settings::parse(app::command()) {
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
                .report(app::SERVICE);
        }
    };
    runtime.block_on(app::main(matches))
}
