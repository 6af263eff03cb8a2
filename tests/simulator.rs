//! `galaxy-sim` against the real `gamemaster` binary: a short run must converge, and a row
//! changed behind the model's back must be caught and named. PostgreSQL is a fresh
//! database on the shared server; Redis is a throwaway server, so the fixed offset key
//! `gamemaster:stream_offsets:health_events` belongs to this test alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use e2e::pg_client;
use testkit::bins::{Process, binary, run};
use testkit::pg::TestDb;
use testkit::redis::ThrowawayRedis;
use testkit::{eventually, free_port, http, unique_name};

/// Runs galaxy-sim to the end, keeping stdout (the summary) and stderr.
async fn simulate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(binary("galaxy-sim").unwrap());
    command
        .args(args)
        .envs(env.iter().copied())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("galaxy-sim finished within 2 minutes")
        .expect("galaxy-sim ran")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_converges_and_a_tampered_row_is_named() {
    let db = TestDb::create().await.unwrap();
    let redis = ThrowawayRedis::start().await.unwrap();
    let redis_url = redis.url();
    let (code, stderr) = run(
        "gamemaster",
        &["migrate"],
        &[("GAMEMASTER_POSTGRES_URL", db.url())],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{stderr}");

    let http_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let addr_text = http_addr.to_string();
    let mut gm = Process::spawn(
        "gamemaster",
        &["run"],
        &[
            ("GAMEMASTER_POSTGRES_URL", db.url()),
            ("GAMEMASTER_REDIS_URL", &redis_url),
            ("GAMEMASTER_HTTP_ADDR", &addr_text),
            ("GAMEMASTER_READ_BLOCK", "200ms"),
            ("RUST_LOG", "warn"),
        ],
    )
    .unwrap();
    eventually("gamemaster ready", Duration::from_secs(20), || async {
        matches!(http::get(http_addr, "/readyz").await, Ok((200, _)))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gm.stderr()));

    let metrics_url = format!("http://{addr_text}/metrics");
    let env = [
        ("GALAXY_SIM_POSTGRES_URL", db.url()),
        ("GALAXY_SIM_REDIS_URL", redis_url.as_str()),
        ("GALAXY_SIM_GAMEMASTER_METRICS_URL", metrics_url.as_str()),
        ("GALAXY_SIM_DRAIN_TIMEOUT", "30s"),
    ];

    // A short run converges.
    let prefix = unique_name("simtest");
    let out = simulate(
        &[
            "--games",
            "30",
            "--duration",
            "3s",
            "--rate",
            "400",
            "--seed",
            "42",
            "--game-prefix",
            &prefix,
        ],
        &env,
    )
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}\ngamemaster:\n{}",
        gm.stderr()
    );
    assert!(
        stdout.contains("✔ CONVERGED: all 30 runtime records match the model"),
        "{stdout}"
    );
    assert!(stdout.contains("model predicts"), "{stdout}");
    assert!(!stderr.contains("diverged"), "{stderr}");

    // Every game has its health snapshot, next to its runtime record, in the same database.
    let client = pg_client(db.url()).await.unwrap();
    let like = format!("{prefix}-%");
    let snapshots: i64 = client
        .query_one(
            "SELECT count(*) FROM health_snapshots WHERE game_id LIKE $1",
            &[&like],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(snapshots, 30);

    // The same run with one row changed behind the model's back: exit 1, the game named.
    let tampered = unique_name("simtamper");
    let out = simulate(
        &[
            "--games",
            "30",
            "--duration",
            "2s",
            "--rate",
            "400",
            "--seed",
            "42",
            "--game-prefix",
            &tampered,
            "--tamper",
            "1",
        ],
        &env,
    )
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let first = format!("{tampered}-00");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("galaxy-sim: 1 of 30 games diverged from the model"))
        .unwrap_or_else(|| panic!("no divergence line in:\n{stderr}"));
    assert!(line.contains(&first), "{line}");
    assert!(
        stdout.contains("✘ DIVERGED: 1 of 30 games differ from the model"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("{first}: model ")), "{stdout}");

    gm.terminate().unwrap();
    assert_eq!(
        gm.wait(Duration::from_secs(15)).await.unwrap(),
        0,
        "{}",
        gm.stderr()
    );
    db.drop_db().await.unwrap();
}

#[tokio::test]
async fn bad_settings_and_unreachable_servers_are_one_line_and_exit_2() {
    let closed = format!("127.0.0.1:{}", free_port());
    let pg_closed = format!("postgres://postgres:secret@{closed}/gm");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--games", "0"], "games"),
        (vec!["--duration", "soon"], "duration"),
        (vec!["--gamemaster-metrics-url", "https://x"], "metrics"),
        (vec!["--postgres-url", pg_closed.as_str()], "PostgreSQL"),
    ];
    for (args, mentions) in cases {
        let out = simulate(&args, &[]).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "{args:?}: one line expected, got:\n{stderr}"
        );
        assert!(lines[0].starts_with("galaxy-sim: "), "{stderr}");
        assert!(lines[0].contains(mentions), "{args:?}: {stderr}");
        assert!(!stderr.contains("secret"), "the password leaked: {stderr}");
    }
}
