//! Starting engines on an operator's request: `POST /games/<id>/start` on the running
//! Runtime Manager's ops server, and the `rtmanager start-game` command that asks for it.
//!
//! A start runs the engine through the driver and registers the runtime `running` with
//! the start logged; a game whose runtime runs already is left as it is (the request
//! answers what it has), so asking twice is harmless.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use contracts::{GameId, HealthEventEnvelope, HealthEventType};
use rtm_domain::{Origin, RegistryStatus, Runtime};
use rtm_ports::{EngineDriver, HealthEventPublisher, RuntimeRegistry};

/// How long `start-game` waits for the running service to answer one game.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What a start did.
enum Started {
    /// The engine was started and the runtime registered.
    Now(Runtime),
    /// The game's runtime ran already.
    Already(Runtime),
}

/// The registry, the driver and the health publisher a start uses.
struct Starter<R, E, P> {
    registry: R,
    engine: E,
    publisher: P,
}

impl<R: RuntimeRegistry, E: EngineDriver, P: HealthEventPublisher> Starter<R, E, P> {
    async fn start(&self, game_id: &GameId) -> Result<Started, String> {
        let describe = |e: &dyn std::fmt::Display| format!("game '{game_id}': {e}");
        if let Some(r) = self.registry.get(game_id).await.map_err(|e| describe(&e))?
            && r.status == RegistryStatus::Running
        {
            return Ok(Started::Already(r));
        }
        let engine = self.engine.start(game_id).await.map_err(|e| describe(&e))?;
        let runtime = Runtime {
            game_id: game_id.clone(),
            status: RegistryStatus::Running,
            container_id: engine.container_id,
            engine_endpoint: engine.engine_endpoint,
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let origin = Origin::admin(format!("start-game {game_id} {}", now.as_millis()));
        if let Err(e) = self.registry.register(&runtime, &origin).await {
            // Not recorded: an engine nobody knows of must not keep running.
            let _ = self
                .engine
                .stop(&runtime.container_id, Duration::from_secs(5))
                .await;
            return Err(describe(&e));
        }
        tracing::info!(game_id = %game_id, container_id = %runtime.container_id, engine_endpoint = %runtime.engine_endpoint, "engine started");
        self.announce(&runtime).await;
        Ok(Started::Now(runtime))
    }

    /// Publishes `container_started` for a runtime just registered. A failure is logged,
    /// not the start's: the engine runs and is recorded, and the supervisor reports what
    /// becomes of it.
    async fn announce(&self, runtime: &Runtime) {
        let started = HealthEventEnvelope::new(
            runtime.game_id.as_str(),
            runtime.container_id.as_str(),
            HealthEventType::ContainerStarted,
            now_ms(),
            None,
        );
        let published = match started {
            Ok(envelope) => self
                .publisher
                .publish(&envelope)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = published {
            tracing::warn!(game_id = %runtime.game_id, error = %e, "container_started not published");
        }
    }
}

/// Milliseconds since the epoch, the time a start is logged and announced with.
fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX).max(1)
}

async fn start_route<R, E, P>(
    State(starter): State<Arc<Starter<R, E, P>>>,
    Path(game): Path<String>,
) -> (StatusCode, String)
where
    R: RuntimeRegistry + 'static,
    E: EngineDriver + 'static,
    P: HealthEventPublisher + 'static,
{
    let Ok(game_id) = GameId::new(game.as_str()) else {
        return (
            StatusCode::BAD_REQUEST,
            format!("not a game id: {game:?}\n"),
        );
    };
    match starter.start(&game_id).await {
        Ok(Started::Now(r)) => (StatusCode::OK, line("started", &r)),
        Ok(Started::Already(r)) => (StatusCode::OK, line("running", &r)),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

fn line(word: &str, r: &Runtime) -> String {
    format!(
        "{word} {} {} {}\n",
        r.game_id, r.container_id, r.engine_endpoint
    )
}

/// The route the running service serves beside its ops endpoints; a start publishes
/// `container_started` through `publisher`.
pub fn routes<R, E, P>(registry: R, engine: E, publisher: P) -> Router
where
    R: RuntimeRegistry + 'static,
    E: EngineDriver + 'static,
    P: HealthEventPublisher + 'static,
{
    let starter = Starter {
        registry,
        engine,
        publisher,
    };
    Router::new()
        .route("/games/{game_id}/start", post(start_route::<R, E, P>))
        .with_state(Arc::new(starter))
}

/// `start-game`: asks the Runtime Manager on `addr` to start each game, in order; prints
/// one line per game. Stops at the first that fails.
///
/// # Errors
/// A line naming the game and why it did not start (or why the service did not answer).
pub async fn start_games(addr: SocketAddr, games: &[String]) -> Result<(), String> {
    for game in games {
        let path = format!("/games/{}/start", service_kit::http::path_segment(game));
        let (code, body) = service_kit::http::request(addr, "POST", &path, REQUEST_TIMEOUT)
            .await
            .map_err(|e| format!("the Runtime Manager on {addr} did not answer: {e}"))?;
        if code != 200 {
            return Err(body.trim().to_owned());
        }
        print!("{body}");
    }
    Ok(())
}
