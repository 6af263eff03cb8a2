//! `galaxy-engine`: the engine process the Runtime Manager's process driver starts, one
//! per game. It stands in for a real game engine with the behaviour a supervisor
//! observes:
//!
//! 1. binds its HTTP endpoint (`--listen`, port 0 for any) and prints
//!    `listening <address>` as its first line on stdout, so the driver learns the
//!    endpoint without guessing a free port;
//! 2. answers `GET /healthz` with `200 ok <game id>`: the supervisor's probe (a stopped,
//!    SIGSTOPped engine answers nothing);
//! 3. on `POST /allocate/<MiB>` takes and touches that much more memory and holds it:
//!    how a test or the demo makes an engine outgrow its memory limit;
//! 4. exits 0 on SIGTERM or SIGINT, after closing its listener.
//!
//! A bad argument is one line on stderr and exit 2.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use clap::Parser;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "galaxy-engine",
    version,
    about = "A game engine stand-in for the Runtime Manager"
)]
struct Args {
    /// The game this engine runs.
    #[arg(long)]
    game_id: String,
    /// The HTTP address to answer on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

/// What the handlers share: the game and the memory held so far.
#[derive(Clone)]
struct Engine {
    game_id: Arc<str>,
    held: Arc<Mutex<Vec<Vec<u8>>>>,
}

async fn healthz(State(engine): State<Engine>) -> String {
    format!("ok {}\n", engine.game_id)
}

async fn allocate(State(engine): State<Engine>, Path(mib): Path<usize>) -> (StatusCode, String) {
    let Some(bytes) = mib.checked_mul(1 << 20) else {
        return (StatusCode::BAD_REQUEST, "too large\n".to_owned());
    };
    // Touch every page, so the memory is resident and a limit on it is reached.
    let block = vec![1_u8; bytes];
    let Ok(mut held) = engine.held.lock() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "poisoned\n".to_owned());
    };
    held.push(block);
    let total: usize = held.iter().map(Vec::len).sum();
    (StatusCode::OK, format!("holding {} MiB\n", total >> 20))
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

async fn serve(args: Args) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let address = listener
        .local_addr()
        .map_err(|e| format!("no local address: {e}"))?;
    let engine = Engine {
        game_id: args.game_id.into(),
        held: Arc::default(),
    };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/allocate/{mib}", post(allocate))
        .with_state(engine);
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening {address}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot report the address: {e}"))?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("serving: {e}"))
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            print!("{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            eprintln!(
                "galaxy-engine: {}",
                text.lines().next().unwrap_or("bad arguments")
            );
            return ExitCode::from(2);
        }
    };
    if args.game_id.trim().is_empty() {
        eprintln!("galaxy-engine: --game-id is blank");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("galaxy-engine: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("galaxy-engine: {e}");
            ExitCode::from(2)
        }
    }
}
