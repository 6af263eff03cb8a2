//! `GET` for probing the services' ops endpoints in tests: the service kit's one client.

use std::net::SocketAddr;
use std::time::Duration;

/// `GET path` on `addr`; the status code and the body.
///
/// # Errors
/// The connection failed, no reply came within 10 s, or the reply is not HTTP.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    Ok(service_kit::http::request(addr, "GET", path, Duration::from_secs(10)).await?)
}

/// The value of the sample `series` (a metric name with its labels, as exposed) in the
/// exposition `text`; 0 when it is absent.
#[must_use]
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
