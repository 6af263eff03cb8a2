//! Turning SIGTERM and SIGINT into a cancellation token.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT (Ctrl-C). Spawn it once per process; a
/// second signal while draining is left to the caller's shutdown timeout.
pub async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => tracing::info!("SIGINT received; draining"),
                    _ = term.recv() => tracing::info!("SIGTERM received; draining"),
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the service");
                let _ = ctrl_c.await;
                tracing::info!("SIGINT received; draining");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
        tracing::info!("Ctrl-C received; draining");
    }
    token.cancel();
}
