//! Reading the services' `/metrics` pages: one fetch and one parser of the Prometheus /
//! OpenMetrics text for both the Game Master's summary and the Lobby's.

use anyhow::{Context, bail};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::settings::MetricsUrl;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    /// The series name, e.g. `gamemaster_health_events_consumed_total`.
    pub name: &'a str,
    /// What is between the braces, `""` when there are none.
    pub labels: &'a str,
    /// The value.
    pub value: f64,
}

/// The sample lines of an exposition, comments and lines that are not samples left out.
pub fn samples(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value = value.trim().parse::<f64>().ok()?;
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            Some(Sample {
                name,
                labels: labels.trim_end_matches('}'),
                value,
            })
        })
}

/// The value of label `name` in a sample's `labels`.
#[must_use]
pub fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &labels[start..];
    rest.find('"').map(|end| &rest[..end])
}

/// Fetches a metrics page (the Game Master's or the Lobby's).
///
/// # Errors
/// The server cannot be reached, does not answer 200 within two seconds, or the reply is
/// not HTTP.
pub async fn fetch(url: &MetricsUrl) -> anyhow::Result<String> {
    tokio::time::timeout(Duration::from_secs(2), http_get(url))
        .await
        .with_context(|| format!("GET {url}: no answer within 2s"))?
}

/// A plain HTTP/1.0 GET (so the server answers with the whole body and closes, never
/// chunked): enough for a metrics page on the loopback interface, without an HTTP client
/// library.
async fn http_get(url: &MetricsUrl) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(&url.authority)
        .await
        .with_context(|| format!("GET {url}"))?;
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nAccept: text/plain\r\n\r\n",
        url.path, url.authority
    );
    stream.write_all(request.as_bytes()).await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    let reply = String::from_utf8_lossy(&reply);
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {url}: the reply is not HTTP"))?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        bail!("GET {url}: status {status}");
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_lines_are_read_and_the_rest_left_out() {
        let text = "# TYPE x counter\nx_total{a=\"1\",b=\"two\"} 3\nplain 4.5\nnot a sample\n# EOF";
        let all: Vec<Sample<'_>> = samples(text).collect();
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].name, all[0].value), ("x_total", 3.0));
        assert_eq!(label(all[0].labels, "b"), Some("two"));
        assert_eq!(label(all[0].labels, "c"), None);
        assert_eq!(
            (all[1].name, all[1].labels, all[1].value),
            ("plain", "", 4.5)
        );
    }
}
