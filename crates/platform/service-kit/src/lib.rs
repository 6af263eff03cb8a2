//! What every galaxy binary (`gamemaster`, `lobby`, the Runtime Manager's) shares, so each
//! job lives in one place:
//!
//! - [`settings`]: the common settings (URLs, HTTP address, log format, shutdown timeout,
//!   batch tuning), each a flag and an environment variable under the service's prefix,
//!   with defaults shown by `--help`;
//! - [`ops`]: the HTTP server for `/healthz`, `/readyz` and `/metrics`;
//! - [`telemetry`]: logging set-up (human-readable on a terminal, JSON on request);
//! - [`shutdown`]: SIGTERM / SIGINT turned into a cancellation token;
//! - [`consumer`]: the start-up and run sequence of a stream-consumer service (connect,
//!   check, serve the ops endpoints, run the consumer, drain), and `migrate`;
//! - [`StartupError`]: a failure before the service runs, printed as one line on stderr
//!   with exit code 2;
//! - [`main`]: the whole `main` of a binary: arguments, then the async runtime, then its
//!   body.

pub mod consumer;
pub mod dead_letters;
pub mod http;
pub mod ops;
pub mod settings;
pub mod shutdown;
pub mod status;
pub mod telemetry;

use std::fmt;
use std::future::Future;
use std::process::ExitCode;

use clap::{ArgMatches, Command};

/// A failure before the service runs: a bad setting, an unreachable server. Printed as one
/// line on stderr, exit code 2; never a panic or a backtrace.
#[derive(Debug)]
pub struct StartupError(pub String);

impl StartupError {
    /// Wraps a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// The exit code for start-up failures.
    pub const EXIT_CODE: u8 = 2;

    /// Prints `<service>: <message>` on stderr and returns exit code 2.
    #[must_use]
    pub fn report(&self, service: &str) -> ExitCode {
        eprintln!("{service}: {}", self.0.replace('\n', " "));
        ExitCode::from(Self::EXIT_CODE)
    }
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartupError {}

pub use error_kit::error_chain;

/// The one start-up of every binary: parses `command`'s arguments (`--help` prints and
/// exits 0; a bad setting is one line on stderr and exit 2), starts the multi-threaded
/// runtime (a failure to is one line and exit 2, naming `name`), and runs `body` on the
/// parsed arguments until it returns the exit code.
pub fn main<F, Fut>(name: &str, command: Command, body: F) -> ExitCode
where
    F: FnOnce(ArgMatches) -> Fut,
    Fut: Future<Output = ExitCode>,
{
    let matches = match settings::parse(command) {
        Ok(m) => m,
        Err(code) => return code,
    };
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(body(matches)),
        Err(e) => StartupError::new(format!("cannot start the async runtime: {e}")).report(name),
    }
}
