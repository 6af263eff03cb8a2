//! Helpers for the end-to-end tests that are about the services' shared contracts (rows,
//! stream entries); fixtures and servers come from `testkit`.

use std::collections::BTreeMap;

use anyhow::Context;

/// An entry of `gm:lobby_events` as text fields.
pub type Fields = BTreeMap<String, String>;

/// Every entry of `stream` as (id, text fields), in stream order.
///
/// # Errors
/// Redis cannot be reached or a field is not UTF-8.
pub async fn entries(
    redis: &testkit::redis::TestRedis,
    stream: &str,
) -> anyhow::Result<Vec<(String, Fields)>> {
    redis
        .xrange(stream)
        .await?
        .into_iter()
        .map(|(id, pairs)| {
            let fields = pairs
                .into_iter()
                .map(|(k, v)| {
                    Ok((
                        String::from_utf8(k.to_vec())?,
                        String::from_utf8(v.to_vec())?,
                    ))
                })
                .collect::<anyhow::Result<Fields>>()?;
            Ok((id, fields))
        })
        .collect()
}

/// `(status, engine_health)` of every runtime record, by game id.
///
/// # Errors
/// The query failed.
pub async fn runtime_rows(
    client: &tokio_postgres::Client,
) -> anyhow::Result<BTreeMap<String, (String, String)>> {
    let rows = client
        .query(
            "SELECT game_id, status, engine_health FROM runtime_records",
            &[],
        )
        .await
        .context("read runtime_records")?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

/// `(status, engine_health, current_turn)` of every runtime record, by game id.
///
/// # Errors
/// The query failed.
pub async fn gm_records(
    client: &tokio_postgres::Client,
) -> anyhow::Result<BTreeMap<String, (String, String, i64)>> {
    let rows = client
        .query(
            "SELECT game_id, status, engine_health, current_turn::bigint FROM runtime_records",
            &[],
        )
        .await
        .context("read runtime_records")?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect())
}

/// The whole `/metrics` page of the ops server at `addr`.
///
/// # Errors
/// The server cannot be reached or does not answer 200.
pub async fn metrics(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    let (code, text) = testkit::http::get(addr, "/metrics").await?;
    anyhow::ensure!(code == 200, "/metrics answered {code}: {text}");
    Ok(text)
}

/// Asserts that each of `lines` is a whole line of the exposition `text` (so `… 3` does
/// not match `… 30`).
///
/// # Panics
/// A line is missing (the message shows the whole page).
pub fn assert_metrics(text: &str, lines: &[impl AsRef<str>]) {
    for line in lines {
        let line = line.as_ref();
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
}

pub use testkit::http::metric_value;

/// Opens a plain client on `url`, its connection driven by a background task.
///
/// # Errors
/// The server cannot be reached.
pub async fn pg_client(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connect to {url}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// A tracing line on stderr: `2026-11-22T08:08:37.475391Z  INFO …`.
fn is_log_line(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 20 && b[4] == b'-' && b[10] == b'T'
}

/// One start-up failure case: arguments, environment, a word the error line must contain.
pub type StartupCase<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);

/// Asserts that `<binary> run --help` succeeds and mentions each of `expected` (setting
/// names with their environment variables, and defaults).
///
/// # Errors
/// The binary is not built or cannot be run; the expectations themselves are asserted.
pub fn assert_help_lists(binary: &str, expected: &[&str]) -> anyhow::Result<()> {
    let output = std::process::Command::new(testkit::bins::binary(binary)?)
        .args(["run", "--help"])
        .output()?;
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for item in expected {
        assert!(text.contains(item), "--help lacks {item}:\n{text}");
    }
    Ok(())
}

/// Runs `binary` with `args` and `env`, expecting a start-up failure: exit code 2, and,
/// after any log lines, exactly one plain line on stderr that mentions `mentions`, with no
/// panic and no password (`secret`) in it.
///
/// # Errors
/// The binary could not be run; the expectations themselves are asserted.
pub async fn assert_startup_error(
    binary: &str,
    args: &[&str],
    env: &[(&str, &str)],
    mentions: &str,
) -> anyhow::Result<()> {
    let (code, stderr) =
        testkit::bins::run(binary, args, env, std::time::Duration::from_secs(30)).await?;
    assert_eq!(code, 2, "{args:?} {env:?}: {stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !is_log_line(l))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?} {env:?}: one line expected, got:\n{stderr}"
    );
    assert!(stderr.trim_end().ends_with(lines[0]), "{stderr}");
    assert!(lines[0].contains(mentions), "{args:?}: {stderr}");
    assert!(!stderr.contains("secret"), "the password leaked: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    Ok(())
}

/// Appends a `runtime:health_events` entry for `game` (container `c-1`, observed at
/// 1700000000000), encoded by the contract as the Runtime Manager's publisher writes it.
/// Returns the entry id.
///
/// # Errors
/// The event type is not one of the seven, or Redis cannot be reached.
pub async fn health_event(
    redis: &testkit::redis::TestRedis,
    game: &str,
    event_type: &str,
) -> anyhow::Result<String> {
    let at = 1_700_000_000_000;
    let wire =
        contracts::HealthEventEnvelope::parse(game, "c-1", event_type, at, None)?.wire_fields();
    redis
        .xadd(contracts::health_events::DEFAULT_STREAM, &wire)
        .await
}

/// A service binary running `run`, with its ops address.
pub struct Service {
    /// The process (its stderr holds the logs).
    pub process: testkit::bins::Process,
    /// Where `/healthz`, `/readyz` and `/metrics` answer.
    pub http: std::net::SocketAddr,
}

/// Starts `<name> run` with `env`, its `<PREFIX>_HTTP_ADDR` on a free port and a 200 ms
/// `<PREFIX>_READ_BLOCK`, and waits (up to 30 s) until `/readyz` answers 200.
///
/// # Panics
/// The binary does not start or never gets ready (with its logs).
pub async fn start_service(name: &str, prefix: &str, env: &[(&str, &str)]) -> Service {
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", testkit::free_port())
        .parse()
        .unwrap_or_else(|e| panic!("a loopback address: {e}"));
    let addr = http.to_string();
    let http_var = format!("{prefix}_HTTP_ADDR");
    let read_block = format!("{prefix}_READ_BLOCK");
    let mut all: Vec<(&str, &str)> = vec![(http_var.as_str(), addr.as_str())];
    all.push((read_block.as_str(), "200ms"));
    all.extend_from_slice(env);
    let process = testkit::bins::Process::spawn(name, &["run"], &all)
        .unwrap_or_else(|e| panic!("{name} run: {e}"));
    let wait = std::time::Duration::from_secs(30);
    testkit::eventually(&format!("{name} ready"), wait, || async {
        matches!(testkit::http::get(http, "/readyz").await, Ok((200, _)))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", process.stderr()));
    Service { process, http }
}

/// [`start_service`] on `postgres_url` and `redis_url` (its `<PREFIX>_POSTGRES_URL` and
/// `<PREFIX>_REDIS_URL`), with `extra` settings.
pub async fn start_service_on(
    name: &str,
    prefix: &str,
    postgres_url: &str,
    redis_url: &str,
    extra: &[(&str, &str)],
) -> Service {
    let (pg, redis) = (
        format!("{prefix}_POSTGRES_URL"),
        format!("{prefix}_REDIS_URL"),
    );
    let mut env = vec![(pg.as_str(), postgres_url), (redis.as_str(), redis_url)];
    env.extend_from_slice(extra);
    start_service(name, prefix, &env).await
}

/// SIGTERM, and the exit code must be 0; returns the logs.
///
/// # Panics
/// The service does not exit 0 within 15 s.
pub async fn stop_service(service: Service) -> String {
    let mut process = service.process;
    if let Err(e) = process.terminate() {
        panic!("SIGTERM: {e}");
    }
    let code = process.wait(std::time::Duration::from_secs(15)).await;
    let logs = process.stderr();
    assert_eq!(code.ok(), Some(0), "SIGTERM must exit 0:\n{logs}");
    logs
}

/// The dead letters `service`'s consumer `label` kept on `redis_url`, read raw and
/// decoded by the contract; and `<service> dead-letters list` must show each of them.
///
/// # Panics
/// The stream cannot be read, an entry is no dead letter, or the command fails or leaves
/// one out.
pub async fn dead_letters(
    service: &str,
    label: &str,
    redis: &testkit::redis::TestRedis,
    redis_url: &str,
) -> Vec<contracts::dead_letters::DeadLetter> {
    let stream = contracts::dead_letters::stream_for(service, label);
    let letters: Vec<contracts::dead_letters::DeadLetter> = redis
        .xrange(&stream)
        .await
        .unwrap_or_else(|e| panic!("XRANGE {stream}: {e}"))
        .into_iter()
        .map(|(_, pairs)| {
            contracts::dead_letters::DeadLetter::decode(&pairs)
                .unwrap_or_else(|e| panic!("{stream}: {e}"))
        })
        .collect();
    let args = [
        "dead-letters",
        "list",
        "--consumer",
        label,
        "--redis-url",
        redis_url,
    ];
    let mut list = testkit::bins::Process::spawn(service, &args, &[])
        .unwrap_or_else(|e| panic!("{service} dead-letters list: {e}"));
    let code = list.wait(std::time::Duration::from_secs(30)).await;
    let out = list.stdout();
    assert_eq!(code.ok(), Some(0), "{out}\n{}", list.stderr());
    assert!(
        out.contains(&format!(
            "consumer {label} ({stream}): {} shown",
            letters.len()
        )),
        "{out}"
    );
    for letter in &letters {
        assert!(
            out.contains(&format!("{} {}: ", letter.source_stream, letter.source_id)),
            "{} missing in:\n{out}",
            letter.source_id
        );
    }
    letters
}

/// `<service> status --json` (with `args`), parsed; it must exit 0.
///
/// # Panics
/// The command fails or prints something that is not JSON.
pub async fn status(service: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["status", "--json"];
    all.extend_from_slice(args);
    json_output(service, &all).await
}

/// `<service> <args>` run to its end, its stdout parsed as JSON; it must exit 0.
///
/// # Panics
/// The command fails or prints something that is not JSON.
pub async fn json_output(service: &str, args: &[&str]) -> serde_json::Value {
    let mut p = testkit::bins::Process::spawn(service, args, &[])
        .unwrap_or_else(|e| panic!("{service} {args:?}: {e}"));
    let code = p.wait(std::time::Duration::from_secs(30)).await;
    let out = p.stdout();
    assert_eq!(code.ok(), Some(0), "{out}\n{}", p.stderr());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A database of its own, migrated by `<service> migrate` (its URL in `url_var`).
///
/// # Panics
/// The database cannot be created or the migration fails (with its stderr).
pub async fn migrated(service: &str, url_var: &str) -> testkit::pg::TestDb {
    let db = testkit::pg::TestDb::create()
        .await
        .unwrap_or_else(|e| panic!("a test database: {e}"));
    let wait = std::time::Duration::from_secs(30);
    let (code, stderr) = testkit::bins::run(service, &["migrate"], &[(url_var, db.url())], wait)
        .await
        .unwrap_or_else(|e| panic!("{service} migrate: {e}"));
    assert_eq!(code, 0, "{service} migrate: {stderr}");
    db
}

/// `n` games registered `running` at turn 1 on `client`'s Game Master database (`g-000`,
/// `g-001`, …, as many digits as the largest needs): their ids.
///
/// # Panics
/// The insert fails.
pub async fn running_games(client: &tokio_postgres::Client, n: usize) -> Vec<String> {
    let width = n.saturating_sub(1).to_string().len().max(3);
    client
        .batch_execute(&format!(
            "INSERT INTO runtime_records (game_id, status, current_turn)
             SELECT 'g-' || lpad(n::text, {width}, '0'), 'running', 1
               FROM generate_series(0, {}) n",
            n.saturating_sub(1)
        ))
        .await
        .unwrap_or_else(|e| panic!("register {n} running games: {e}"));
    (0..n).map(|n| format!("g-{n:0width$}")).collect()
}

/// `gamemaster run` as instance `id` on `db_url` and `redis_url`, with leases of
/// `lease_ttl`, once ready.
pub async fn start_instance(db_url: &str, redis_url: &str, id: &str, lease_ttl: &str) -> Service {
    let instance = [
        ("GAMEMASTER_INSTANCE_ID", id),
        ("GAMEMASTER_LEASE_TTL", lease_ttl),
    ];
    start_service_on("gamemaster", "GAMEMASTER", db_url, redis_url, &instance).await
}
