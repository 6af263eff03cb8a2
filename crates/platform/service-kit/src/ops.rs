//! The ops HTTP server: `/healthz` (the process is alive), `/readyz` (its dependencies
//! answer and its consumers are not stuck retrying) and `/metrics` (Prometheus text).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The future a readiness check returns.
pub type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// One named readiness check.
pub struct Check {
    name: String,
    run: Box<dyn Fn() -> CheckFuture + Send + Sync>,
}

impl Check {
    /// A check called `name` (shown in the 503 reason) running `run`.
    pub fn new<F, Fut>(name: impl Into<String>, run: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self {
            name: name.into(),
            run: Box::new(move || Box::pin(run())),
        }
    }
}

impl Check {
    /// A check that runs `run` on a fresh clone of `value` (a pool, a client, a health
    /// handle) each time it is asked: the usual shape of a readiness probe, without the
    /// clone-into-closure boilerplate.
    pub fn with<T, F, Fut>(name: impl Into<String>, value: T, run: F) -> Self
    where
        T: Clone + Send + Sync + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self::new(name, move || run(value.clone()))
    }
}

/// A named part of `/readyz`'s body beside the checks: what the running instance wants an
/// operator to see (the Game Master's owned shards and their lags), read on every request.
pub struct Detail {
    name: String,
    read: Box<dyn Fn() -> serde_json::Value + Send + Sync>,
}

impl Detail {
    /// A detail called `name` whose value `read` gives.
    pub fn new(
        name: impl Into<String>,
        read: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            read: Box::new(read),
        }
    }
}

/// How long one readiness check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

struct Ops {
    registry: Registry,
    checks: Vec<Check>,
    details: Vec<Detail>,
}

/// A bound ops server, not yet serving (bind first, so a taken port is a start-up error).
pub struct OpsServer {
    listener: TcpListener,
    state: Arc<Ops>,
    routes: Router,
}

impl OpsServer {
    /// Binds `addr`.
    ///
    /// # Errors
    /// The address cannot be bound (taken, not local, no permission).
    pub async fn bind(
        addr: SocketAddr,
        registry: Registry,
        checks: Vec<Check>,
    ) -> Result<Self, crate::StartupError> {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            crate::StartupError::new(format!(
                "cannot serve the ops HTTP endpoints on {addr}: {e}"
            ))
        })?;
        Ok(Self {
            listener,
            state: Arc::new(Ops {
                registry,
                checks,
                details: Vec::new(),
            }),
            routes: Router::new(),
        })
    }

    /// Adds `details` to every `/readyz` answer.
    #[must_use]
    pub fn with_details(mut self, details: Vec<Detail>) -> Self {
        if let Some(ops) = Arc::get_mut(&mut self.state) {
            ops.details = details;
        }
        self
    }

    /// Serves `routes` beside the ops endpoints: a service's operator commands (the
    /// Runtime Manager's `start-game` asks it over this server).
    #[must_use]
    pub fn with_routes(mut self, routes: Router) -> Self {
        self.routes = routes;
        self
    }

    /// The bound address (useful with port 0).
    ///
    /// # Errors
    /// The OS cannot tell the socket's address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `cancel` fires.
    pub async fn serve(self, cancel: CancellationToken) {
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self.state)
            .merge(self.routes);
        let addr = self.listener.local_addr().ok();
        tracing::info!(addr = ?addr, "ops HTTP server listening");
        if let Err(error) = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
        {
            tracing::error!(%error, "ops HTTP server failed");
        }
    }
}

async fn healthz() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "alive"}))
}

async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
    // Checks are few (two or three) and each is bounded by CHECK_TIMEOUT, so they run one
    // after another.
    let mut failures = serde_json::Map::new();
    for check in &ops.checks {
        let result = tokio::time::timeout(CHECK_TIMEOUT, (check.run)())
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {CHECK_TIMEOUT:?}")));
        if let Err(reason) = result {
            failures.insert(check.name.clone(), serde_json::Value::String(reason));
        }
    }
    let (code, mut body) = if failures.is_empty() {
        (StatusCode::OK, serde_json::json!({"status": "ready"}))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "not_ready", "reasons": failures}),
        )
    };
    for detail in &ops.details {
        body[detail.name.as_str()] = (detail.read)();
    }
    json(code, &body)
}

async fn metrics(State(ops): State<Arc<Ops>>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &ops.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {error}"),
        )
            .into_response(),
    }
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        testkit::http::get(addr, path).await.unwrap()
    }

    #[tokio::test]
    async fn endpoints_answer_and_readiness_follows_the_checks() {
        let mut registry = Registry::with_prefix("kit");
        let counter = prometheus_client::metrics::counter::Counter::<u64>::default();
        registry.register("things", "Things", counter.clone());
        counter.inc();
        let healthy = Arc::new(AtomicBool::new(true));
        let h = healthy.clone();
        let checks = vec![
            Check::new("postgres", move || {
                let ok = h.load(Ordering::SeqCst);
                async move {
                    if ok {
                        Ok(())
                    } else {
                        Err("connection refused".into())
                    }
                }
            }),
            Check::with("redis", Arc::new(()), |_unit| async { Ok(()) }),
        ];
        let server = OpsServer::bind("127.0.0.1:0".parse().unwrap(), registry, checks)
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(server.serve(cancel.clone()));

        assert_eq!(get(addr, "/healthz").await.0, 200);
        assert_eq!(
            get(addr, "/readyz").await,
            (200, r#"{"status":"ready"}"#.into())
        );
        healthy.store(false, Ordering::SeqCst);
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(
            body.contains(r#""postgres":"connection refused""#),
            "{body}"
        );
        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("kit_things_total 1"), "{body}");

        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn readiness_carries_the_details_whether_ready_or_not() {
        let up = Arc::new(AtomicBool::new(true));
        let u = up.clone();
        let checks = vec![Check::new("redis", move || {
            let ok = u.load(Ordering::SeqCst);
            async move { if ok { Ok(()) } else { Err("down".into()) } }
        })];
        let reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let r = reads.clone();
        let server = OpsServer::bind("127.0.0.1:0".parse().unwrap(), Registry::default(), checks)
            .await
            .unwrap()
            .with_details(vec![Detail::new("shards", move || {
                let n = r.fetch_add(1, Ordering::SeqCst);
                serde_json::json!({"owned": [3, 5], "read": n})
            })]);
        let addr = server.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(server.serve(cancel.clone()));
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(
            (code, body.as_str()),
            (
                200,
                r#"{"shards":{"owned":[3,5],"read":0},"status":"ready"}"#
            )
        );
        up.store(false, Ordering::SeqCst);
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(
            body.contains(r#""shards":{"owned":[3,5],"read":1}"#),
            "read afresh: {body}"
        );
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_taken_port_is_a_startup_error() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let err = OpsServer::bind(addr, Registry::default(), vec![])
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains(&addr.to_string()));
    }
}
