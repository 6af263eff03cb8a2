//! `galaxy-bench` works: a tiny run of every phase (a few hundred events). Not a timed
//! test: it proves the benchmark runs and that its semantic check passes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use testkit::bins::Process;
use testkit::redis::ThrowawayRedis;

#[tokio::test]
async fn a_tiny_benchmark_runs_every_phase_and_finds_the_worker_and_baseline_identical() {
    let redis = ThrowawayRedis::start().await.unwrap();
    let database = testkit::unique_name("bench_smoke");
    let redis_url = redis.url();
    let mut bench = Process::spawn(
        "galaxy-bench",
        &[
            "--events",
            "300",
            "--games",
            "20",
            "--rounds",
            "1",
            "--latency-rates",
            "200",
            "--latency-seconds",
            "1",
            "--latency-runs",
            "2",
            "--scale-games",
            "20,40",
            "--scale-events",
            "300",
            "--refused-percent",
            "2",
            "--stop-jobs",
            "50",
            "--stop-live-engines",
            "2",
            "--scale-out-events",
            "2000",
            "--scale-out-games",
            "50",
            "--scale-out-instances",
            "2",
            "--database",
            &database,
            "--redis-url",
            &redis_url,
        ],
        &[],
    )
    .unwrap();
    let code = bench.wait(Duration::from_secs(180)).await.unwrap();
    let report = bench.stdout();
    assert_eq!(code, 0, "{report}\n{}", bench.stderr());
    for expected in [
        "identical runtime_records rows and identical per-game snapshot sequences",
        "| median |",
        "| 200 | 1 | 200 |",
        "| 200 | 2 | 200 |",
        "| 200 | median | 200 |",
        "Floor, same machine",
        "nothing between them but Redis",
        "| 20 | 20 |",
        "| 40 | 40 |",
        "| 40 | 20 |",
        "3 undecodable entries",
        "6 entries for 10 games the database refuses",
        "both poisoned streams drained completely and left the clean stream's",
        "## Stop jobs: a backlog of 50 jobs for stopped runtimes",
        "Both sides answered all 50 jobs replay_no_op, identically and in order.",
        "XADD → result for 2 live engines, one at a time",
        "## Scale-out: 2 gamemaster instances on a local Redis Cluster draining 2000 events over 50 games",
        "the 2 instances left the same runtime_records rows as the lone one",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
}
