//! `rtmanager`: the Runtime Manager. `rtmanager migrate` applies the schema; `rtmanager
//! run` consumes stop jobs and stops engines until SIGTERM or SIGINT.

fn main() -> std::process::ExitCode {
    service_kit::main(rtm_app::SERVICE, rtm_app::command(), rtm_app::main)
}
