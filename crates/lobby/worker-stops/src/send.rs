//! Sending the Lobby's stop requests: the running Lobby appends each pending request to
//! `runtime:stop_jobs` and records the entry it became, every interval.
//!
//! A request is marked sent only after its append succeeded, so none is lost. A crash (or
//! a lost reply) between the append and the mark sends it again; the Runtime Manager
//! answers that second job `replay_no_op`, so a stop is never done twice.

use std::time::Duration;

use lobby_ports::StopRequests;
use redis_streams::StreamWriter;
use tokio_util::sync::CancellationToken;

/// How often pending requests are looked for.
pub const SEND_INTERVAL: Duration = Duration::from_millis(200);

/// Requests sent per round trip.
const BATCH: usize = 100;

/// Sends what is pending, in batches, until nothing is; returns how many were sent.
///
/// # Errors
/// The first failure, as one line (what was sent before it stays sent).
pub async fn send_pending<S: StopRequests>(
    store: &S,
    writer: &StreamWriter,
) -> Result<usize, String> {
    let mut sent = 0;
    loop {
        let pending = store
            .pending_stops(BATCH)
            .await
            .map_err(|e| e.to_string())?;
        if pending.is_empty() {
            return Ok(sent);
        }
        let entries: Vec<_> = pending.iter().map(|p| p.job.wire_fields()).collect();
        let ids = writer.append(&entries).await.map_err(|e| e.to_string())?;
        let marks: Vec<(i64, String)> = pending
            .iter()
            .zip(&ids)
            .map(|(p, id)| (p.id, id.to_string()))
            .collect();
        store.mark_sent(&marks).await.map_err(|e| e.to_string())?;
        for (p, id) in pending.iter().zip(&ids) {
            tracing::info!(game_id = %p.job.game_id, reason = p.job.reason.as_str(), stream_entry_id = %id, "stop job sent");
        }
        sent += pending.len();
    }
}

/// Sends pending requests every [`SEND_INTERVAL`] until `cancel` fires; a failure is
/// logged and retried at the next interval.
pub async fn run<S: StopRequests>(store: S, writer: StreamWriter, cancel: CancellationToken) {
    let mut ticks = tokio::time::interval(SEND_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Err(e) = send_pending(&store, &writer).await {
            tracing::warn!(error = %e, "stop jobs not sent; again at the next interval");
        }
    }
}
