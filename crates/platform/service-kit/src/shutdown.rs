//! Turning SIGTERM and SIGINT into a cancellation token, and draining the service's work
//! within a bounded time once it fires.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::ops::OpsServer;

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

/// How a service's work ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// The work returned: on its own, or within the timeout after the stop.
    Finished,
    /// The stop fired and the work was still running when the timeout passed.
    TimedOut,
    /// The work panicked.
    Panicked,
}

/// Serves `ops` while `work` runs. `work` is expected to watch `stop` itself (a consumer's
/// `run(stop)`); once `stop` fires, it gets at most `timeout` to drain. Then the ops server
/// stops and the result says whether the work finished.
///
/// This is the whole "run until a signal, then drain" of a binary:
/// spawn [`cancel_on_signal`] on the same token, then call this.
pub async fn serve_and_drain<W>(
    ops: OpsServer,
    stop: CancellationToken,
    timeout: Duration,
    work: W,
) -> Drain
where
    W: Future<Output = ()> + Send + 'static,
{
    let ops_stop = CancellationToken::new();
    let ops_task = tokio::spawn(ops.serve(ops_stop.clone()));
    let work_task = tokio::spawn(work);
    let drained = tokio::select! {
        joined = work_task => match joined {
            Ok(()) => Drain::Finished,
            Err(error) => {
                tracing::error!(%error, "the service's work ended abnormally");
                Drain::Panicked
            }
        },
        () = async {
            stop.cancelled().await;
            tokio::time::sleep(timeout).await;
        } => {
            tracing::error!(?timeout, "drain did not finish in time; exiting with the offset at the last finished batch");
            Drain::TimedOut
        }
    };
    ops_stop.cancel();
    let _ = ops_task.await;
    drained
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use prometheus_client::registry::Registry;

    async fn ops() -> OpsServer {
        OpsServer::bind("127.0.0.1:0".parse().unwrap(), Registry::default(), vec![])
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn work_that_stops_when_asked_drains() {
        let stop = CancellationToken::new();
        let watched = stop.clone();
        let work = async move { watched.cancelled().await };
        stop.cancel();
        let drain = serve_and_drain(ops().await, stop, Duration::from_secs(5), work).await;
        assert_eq!(drain, Drain::Finished);
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_ignores_the_stop_times_out() {
        let stop = CancellationToken::new();
        let work = std::future::pending::<()>();
        stop.cancel();
        let drain = serve_and_drain(ops().await, stop, Duration::from_millis(50), work).await;
        assert_eq!(drain, Drain::TimedOut);
    }
}
