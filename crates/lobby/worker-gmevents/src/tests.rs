#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use lobby_domain::{
    CareerRecord, FinishPlan, GameStatus, PlayerObservedStats, PlayerStatsAggregate,
    RuntimeSnapshot, StatValues, Trigger, UserId, apply_observations,
    fold_finished_game_into_careers, plan_finish, transition,
};
use lobby_ports::{Error, MockCapabilityEvaluator, MockGameStore};

use super::*;

const NOW: i64 = 1_800_000_000_000;

fn gid(s: &str) -> GameId {
    GameId::new(s).unwrap()
}

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

#[derive(Debug, Clone)]
struct Game {
    status: GameStatus,
    snapshot: Option<RuntimeSnapshot>,
    finished_at_ms: Option<i64>,
}

/// The Lobby's state as the fakes keep it, with the calls made and failures to inject.
#[derive(Default)]
struct Lobby {
    games: HashMap<GameId, Game>,
    stats: BTreeMap<GameId, BTreeMap<UserId, PlayerStatsAggregate>>,
    guards: BTreeSet<GameId>,
    careers: BTreeMap<UserId, CareerRecord>,
    calls: Vec<String>,
    /// Failures still to inject, by call (`apply`, `finish`, `evaluate`).
    fail: HashMap<&'static str, usize>,
    /// Games whose writes the database refuses, as PostgreSQL refuses a value it cannot
    /// store.
    refuse: BTreeSet<GameId>,
    /// Games whose capability evaluation the database refuses (a career it cannot fold).
    refuse_evaluation: BTreeSet<GameId>,
}

impl Lobby {
    fn failing(&mut self, call: &'static str) -> bool {
        match self.fail.get_mut(call) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    /// What the real store does for one update (see `lobby-adapters-postgres`).
    fn apply(&mut self, update: &SnapshotUpdate) -> SnapshotResult {
        let Some(game) = self.games.get_mut(&update.game_id) else {
            return SnapshotResult::UnknownGame;
        };
        let result = if update.snapshot.should_replace(game.snapshot.as_ref()) {
            game.snapshot = Some(update.snapshot.clone());
            SnapshotResult::Applied
        } else {
            SnapshotResult::Stale {
                stored_observed_at_ms: game.snapshot.as_ref().map_or(0, |s| s.observed_at_ms),
            }
        };
        apply_observations(
            self.stats.entry(update.game_id.clone()).or_default(),
            &update.player_stats,
        );
        result
    }
}

type Shared = Arc<Mutex<Lobby>>;

fn unavailable() -> Error {
    Error::Unavailable("connection refused".into())
}

fn refused() -> Error {
    Error::Refused("value out of range for type bigint".into())
}

fn store_over(lobby: Shared) -> MockGameStore {
    let mut store = MockGameStore::new();
    let state = lobby.clone();
    store.expect_apply_snapshots().returning(move |updates| {
        let mut lobby = state.lock().unwrap();
        lobby.calls.push(format!("apply:{}", updates.len()));
        if lobby.failing("apply") {
            return Err(unavailable());
        }
        if updates.iter().any(|u| lobby.refuse.contains(&u.game_id)) {
            return Err(refused());
        }
        Ok(updates.iter().map(|u| lobby.apply(u)).collect())
    });
    store.expect_finish_game().returning(move |finish| {
        let mut lobby = lobby.lock().unwrap();
        let id = finish.update.game_id.clone();
        lobby.calls.push(format!("finish:{id}"));
        if lobby.failing("finish") {
            return Err(unavailable());
        }
        if lobby.refuse.contains(&id) {
            return Err(refused());
        }
        let snapshot_applied = match lobby.apply(&finish.update) {
            SnapshotResult::UnknownGame => return Ok(FinishResult::UnknownGame),
            SnapshotResult::Applied => true,
            SnapshotResult::Stale { .. } => false,
        };
        let game = lobby.games.get_mut(&id).unwrap();
        Ok(match plan_finish(game.status) {
            FinishPlan::Finish(transition) => {
                game.status = GameStatus::Finished;
                game.finished_at_ms = Some(finish.finished_at_ms);
                FinishResult::Finished {
                    transition,
                    finished_at_ms: finish.finished_at_ms,
                    snapshot_applied,
                }
            }
            FinishPlan::AlreadyFinished => FinishResult::AlreadyFinished {
                finished_at_ms: game.finished_at_ms.unwrap(),
                snapshot_applied,
            },
            FinishPlan::Ignore(status) => FinishResult::UnexpectedStatus {
                status,
                snapshot_applied,
            },
        })
    });
    store
}

fn evaluator_over(lobby: Shared) -> MockCapabilityEvaluator {
    let mut evaluator = MockCapabilityEvaluator::new();
    evaluator
        .expect_evaluate()
        .returning(move |game_id, finished_at_ms| {
            let mut lobby = lobby.lock().unwrap();
            lobby
                .calls
                .push(format!("evaluate:{game_id}@{finished_at_ms}"));
            if lobby.failing("evaluate") {
                return Err(unavailable());
            }
            if lobby.refuse_evaluation.contains(game_id) {
                return Err(refused());
            }
            if !lobby.guards.insert(game_id.clone()) {
                return Ok(Evaluation::AlreadyEvaluated);
            }
            let finals: Vec<PlayerObservedStats> = lobby
                .stats
                .get(game_id)
                .into_iter()
                .flatten()
                .map(|(user, a)| {
                    let m = a.max();
                    PlayerObservedStats::new(
                        user.as_str(),
                        m.planets(),
                        m.population(),
                        m.ships_built(),
                    )
                    .unwrap()
                })
                .collect();
            let updated = fold_finished_game_into_careers(&lobby.careers, &finals);
            let players = updated.len();
            for career in updated {
                lobby.careers.insert(career.user_id.clone(), career);
            }
            Ok(Evaluation::Evaluated { players })
        });
    evaluator
}

struct Harness {
    lobby: Shared,
    metrics: WorkerMetrics,
}

impl Harness {
    fn new(games: &[(&str, GameStatus)]) -> Self {
        let lobby = Lobby {
            games: games
                .iter()
                .map(|(g, status)| {
                    let finished_at_ms = (*status == GameStatus::Finished).then_some(1);
                    (
                        gid(g),
                        Game {
                            status: *status,
                            snapshot: None,
                            finished_at_ms,
                        },
                    )
                })
                .collect(),
            ..Lobby::default()
        };
        Self {
            lobby: Arc::new(Mutex::new(lobby)),
            metrics: WorkerMetrics::default(),
        }
    }

    fn worker(&self) -> GmEventsWorker<MockGameStore, MockCapabilityEvaluator> {
        GmEventsWorker::new(
            store_over(self.lobby.clone()),
            evaluator_over(self.lobby.clone()),
            Arc::new(|| NOW),
            self.metrics.clone(),
        )
    }

    fn fail(&self, call: &'static str, times: usize) {
        self.lobby.lock().unwrap().fail.insert(call, times);
    }

    fn refuse(&self, g: &str) {
        self.lobby.lock().unwrap().refuse.insert(gid(g));
    }

    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut self.lobby.lock().unwrap().calls)
    }

    fn game(&self, g: &str) -> Game {
        self.lobby.lock().unwrap().games[&gid(g)].clone()
    }

    fn career(&self, u: &str) -> Option<CareerRecord> {
        self.lobby.lock().unwrap().careers.get(&uid(u)).cloned()
    }

    fn count(&self, outcome: Outcome) -> u64 {
        self.metrics.consumed_count(outcome)
    }
}

fn entry(seq: u64, pairs: &[(&str, &[u8])]) -> StreamEntry {
    StreamEntry::from_pairs(EntryId::new(1, seq), pairs)
}

/// A `runtime_snapshot_update` as the Game Master writes it.
fn update(seq: u64, game: &str, summary: &str, at: i64) -> StreamEntry {
    let at = at.to_string();
    entry(
        seq,
        &[
            ("kind", b"runtime_snapshot_update"),
            ("game_id", game.as_bytes()),
            ("current_turn", b"4"),
            ("runtime_status", b"running"),
            ("engine_health_summary", summary.as_bytes()),
            ("occurred_at_ms", at.as_bytes()),
        ],
    )
}

fn with_stats(seq: u64, kind: &str, game: &str, at: i64, stats: &str) -> StreamEntry {
    let at = at.to_string();
    entry(
        seq,
        &[
            ("kind", kind.as_bytes()),
            ("game_id", game.as_bytes()),
            ("current_turn", b"9"),
            ("runtime_status", b"running"),
            ("engine_health_summary", b"healthy"),
            ("occurred_at_ms", at.as_bytes()),
            ("player_turn_stats", stats.as_bytes()),
        ],
    )
}

fn finished(seq: u64, game: &str, at: i64, finished_at: Option<&str>) -> StreamEntry {
    let at = at.to_string();
    let mut pairs: Vec<(&str, &[u8])> = vec![
        ("kind", b"game_finished"),
        ("game_id", game.as_bytes()),
        ("current_turn", b"40"),
        ("runtime_status", b"finished"),
        ("engine_health_summary", b"healthy"),
        ("occurred_at_ms", at.as_bytes()),
        (
            "player_turn_stats",
            br#"[{"user_id":"alice","planets":7,"population":70,"ships_built":3}]"#,
        ),
    ];
    if let Some(f) = finished_at {
        pairs.push(("finished_at_ms", f.as_bytes()));
    }
    entry(seq, &pairs)
}

fn values(planets: i64, population: i64, ships: i64) -> StatValues {
    StatValues::new(planets, population, ships).unwrap()
}

#[tokio::test]
async fn a_run_of_snapshot_updates_is_one_store_call_and_each_entry_counts() {
    let h = Harness::new(&[("g1", GameStatus::Running), ("g2", GameStatus::Paused)]);
    let mut w = h.worker();
    let outcome = w
        .handle(&[
            update(1, "g1", "healthy", 10),
            update(2, "g2", "probe_failed", 10),
            update(3, "g1", "oom", 11),
        ])
        .await;
    assert_eq!(outcome.finished, 3);
    assert!(outcome.failure.is_none());
    assert_eq!(h.calls(), ["apply:3"]);
    assert_eq!(h.count(Outcome::Applied), 3);
    let g1 = h.game("g1").snapshot.unwrap();
    assert_eq!(
        (g1.engine_health_summary.as_str(), g1.observed_at_ms),
        ("oom", 11)
    );
    assert_eq!(g1.current_turn, 4);
    assert_eq!(h.game("g2").status, GameStatus::Paused);
}

#[tokio::test]
async fn an_older_snapshot_is_kept_out_but_its_stats_count() {
    let h = Harness::new(&[("g", GameStatus::Running)]);
    let mut w = h.worker();
    let stats =
        |p: i64| format!(r#"[{{"user_id":"alice","planets":{p},"population":5,"ships_built":1}}]"#);
    w.handle(&[
        with_stats(1, "runtime_snapshot_update", "g", 20, &stats(2)),
        with_stats(2, "runtime_snapshot_update", "g", 10, &stats(9)),
    ])
    .await;
    assert_eq!(h.count(Outcome::Applied), 1);
    assert_eq!(h.count(Outcome::Stale), 1);
    assert_eq!(h.game("g").snapshot.unwrap().observed_at_ms, 20);
    let lobby = h.lobby.lock().unwrap();
    let alice = lobby.stats[&gid("g")][&uid("alice")];
    assert_eq!(alice.initial(), values(2, 5, 1));
    assert_eq!(alice.max(), values(9, 5, 1));
}

#[tokio::test]
async fn every_decode_failure_is_skipped_counted_and_finished() {
    let h = Harness::new(&[("g", GameStatus::Running)]);
    let cases: Vec<(StreamEntry, Outcome)> = vec![
        (
            entry(1, &[("game_id", b"g"), ("occurred_at_ms", b"5")]),
            Outcome::Malformed,
        ),
        (
            entry(
                2,
                &[
                    ("kind", b"turn_generated"),
                    ("game_id", b"g"),
                    ("occurred_at_ms", b"5"),
                ],
            ),
            Outcome::UnknownKind,
        ),
        (
            entry(
                3,
                &[
                    ("kind", b"runtime_snapshot_update"),
                    ("occurred_at_ms", b"5"),
                ],
            ),
            Outcome::Malformed,
        ),
        (
            entry(
                4,
                &[
                    ("kind", b"runtime_snapshot_update"),
                    ("game_id", b" "),
                    ("occurred_at_ms", b"5"),
                ],
            ),
            Outcome::Malformed,
        ),
        (
            entry(
                5,
                &[("kind", b"runtime_snapshot_update"), ("game_id", b"g")],
            ),
            Outcome::Malformed,
        ),
        (
            entry(
                6,
                &[
                    ("kind", b"runtime_snapshot_update"),
                    ("game_id", b"g"),
                    ("occurred_at_ms", b"0"),
                ],
            ),
            Outcome::Malformed,
        ),
        (
            entry(
                7,
                &[
                    ("kind", b"runtime_snapshot_update"),
                    ("game_id", b"g"),
                    ("occurred_at_ms", b"soon"),
                ],
            ),
            Outcome::Malformed,
        ),
        (
            entry(
                8,
                &[
                    ("kind", b"runtime_snapshot_update"),
                    ("game_id", b"g"),
                    ("occurred_at_ms", b"5"),
                    ("current_turn", b"-1"),
                ],
            ),
            Outcome::Malformed,
        ),
        (
            with_stats(9, "runtime_snapshot_update", "g", 5, "[{"),
            Outcome::Malformed,
        ),
        (
            with_stats(
                10,
                "runtime_snapshot_update",
                "g",
                5,
                r#"[{"user_id":"a","planets":-1,"population":0,"ships_built":0}]"#,
            ),
            Outcome::Malformed,
        ),
        (finished(11, "g", 5, Some("0")), Outcome::Malformed),
        (finished(12, "g", 5, Some("yesterday")), Outcome::Malformed),
        (
            entry(
                13,
                &[
                    ("kind", b"runtime_snapshot_update"),
                    ("game_id", b"\xff\xfe"),
                    ("occurred_at_ms", b"5"),
                ],
            ),
            Outcome::Malformed,
        ),
        (
            entry(
                14,
                &[
                    ("kind", b"runtime_snapshot_update"),
                    ("game_id", b"g"),
                    ("occurred_at_ms", b"5"),
                    ("player_turn_stats", b"\xff"),
                ],
            ),
            Outcome::Malformed,
        ),
    ];
    for (e, expected) in &cases {
        let reason = decode(e).unwrap_err();
        assert_eq!(reason.outcome(), *expected, "{e:?}: {reason}");
    }
    let batch: Vec<StreamEntry> = cases.iter().map(|(e, _)| e.clone()).collect();
    let mut w = h.worker();
    let outcome = w.handle(&batch).await;
    assert_eq!(outcome.finished, batch.len());
    assert!(outcome.failure.is_none());
    assert_eq!(h.count(Outcome::Malformed), 13);
    assert_eq!(h.count(Outcome::UnknownKind), 1);
    assert!(h.calls().is_empty(), "nothing reaches the store");
    assert_eq!(h.game("g").snapshot, None);
}

#[test]
fn decoding_tolerates_what_the_contract_does_not_use() {
    // Extra fields (even non-UTF-8), a non-UTF-8 finish time on an update, absent optional
    // fields.
    let e = entry(
        1,
        &[
            ("kind", b"runtime_snapshot_update"),
            ("game_id", b"g"),
            ("occurred_at_ms", b"5"),
            ("finished_at_ms", b"\xff"),
            ("trace", b"\xfe\xff"),
        ],
    );
    let event = decode(&e).unwrap();
    assert_eq!(event.snapshot().current_turn, 0);
    assert!(event.player_stats().is_empty());
    // On a game_finished the finish time matters.
    let mut f = finished(2, "g", 5, None);
    f.fields.push(("finished_at_ms".into(), b"\xff"[..].into()));
    assert_eq!(
        decode(&f),
        Err(SkipReason::NotUtf8 {
            game_id: Some("g".into()),
            field: "finished_at_ms"
        })
    );
}

#[tokio::test]
async fn an_unknown_game_is_skipped_and_counted() {
    let h = Harness::new(&[("g", GameStatus::Running)]);
    let mut w = h.worker();
    let outcome = w
        .handle(&[
            update(1, "ghost", "healthy", 5),
            finished(2, "ghost", 6, Some("7")),
        ])
        .await;
    assert_eq!(outcome.finished, 2);
    assert_eq!(h.count(Outcome::UnknownGame), 2);
    assert_eq!(h.calls(), ["apply:1", "finish:ghost"], "no evaluation");
}

#[tokio::test]
async fn a_finished_game_is_evaluated_once_even_when_replayed() {
    let h = Harness::new(&[("g", GameStatus::Running)]);
    let batch = [
        with_stats(
            1,
            "runtime_snapshot_update",
            "g",
            10,
            r#"[{"user_id":"alice","planets":2,"population":90,"ships_built":1},
                {"user_id":"bob","planets":1,"population":10,"ships_built":0}]"#,
        ),
        finished(2, "g", 20, Some("1700000000500")),
    ];
    let mut w = h.worker();
    let outcome = w.handle(&batch).await;
    assert_eq!(outcome.finished, 2);
    assert!(outcome.failure.is_none());
    assert_eq!(
        h.calls(),
        ["apply:1", "finish:g", "evaluate:g@1700000000500"]
    );
    let game = h.game("g");
    assert_eq!(game.status, GameStatus::Finished);
    assert_eq!(game.finished_at_ms, Some(1_700_000_000_500));
    assert_eq!(game.snapshot.unwrap().runtime_status, "finished");
    let t = transition(
        GameStatus::Running,
        GameStatus::Finished,
        Trigger::RuntimeEvent,
    )
    .unwrap();
    assert_eq!(h.metrics.transition_count(t), 1);
    assert_eq!(h.count(Outcome::Finished), 1);
    assert_eq!(h.metrics.evaluation_count(EvaluationOutcome::Evaluated), 1);
    let alice = h.career("alice").unwrap();
    assert_eq!(
        (
            alice.games_finished,
            alice.best_planets,
            alice.best_population,
            alice.most_ships_built
        ),
        (1, 7, 90, 3)
    );
    assert_eq!(h.career("bob").unwrap().games_finished, 1);

    // The offset was reset: the same entries again, in a fresh worker (a restart).
    let mut again = h.worker();
    let outcome = again.handle(&batch).await;
    assert_eq!(outcome.finished, 2);
    assert_eq!(h.count(Outcome::Replayed), 1);
    assert_eq!(h.count(Outcome::Finished), 1);
    assert_eq!(h.metrics.transition_count(t), 1);
    assert_eq!(
        h.metrics
            .evaluation_count(EvaluationOutcome::AlreadyEvaluated),
        1
    );
    assert_eq!(
        h.career("alice").unwrap(),
        alice,
        "a replay changes nothing"
    );
    assert_eq!(h.game("g").finished_at_ms, Some(1_700_000_000_500));
}

#[tokio::test]
async fn a_paused_game_finishes_and_a_missing_finish_time_is_the_lobbys_clock() {
    let h = Harness::new(&[("g", GameStatus::Paused)]);
    let mut w = h.worker();
    w.handle(&[finished(1, "g", 20, None)]).await;
    assert_eq!(h.game("g").finished_at_ms, Some(NOW));
    assert_eq!(
        h.calls(),
        ["finish:g".to_owned(), format!("evaluate:g@{NOW}")]
    );
    let t = transition(
        GameStatus::Paused,
        GameStatus::Finished,
        Trigger::RuntimeEvent,
    )
    .unwrap();
    assert_eq!(h.metrics.transition_count(t), 1);
}

#[tokio::test]
async fn a_game_in_an_unexpected_status_is_left_alone() {
    for status in [
        GameStatus::Cancelled,
        GameStatus::Open,
        GameStatus::Starting,
    ] {
        let h = Harness::new(&[("g", status)]);
        let mut w = h.worker();
        let outcome = w.handle(&[finished(1, "g", 20, Some("30"))]).await;
        assert_eq!(outcome.finished, 1);
        assert!(outcome.failure.is_none());
        assert_eq!(h.count(Outcome::UnexpectedStatus), 1, "{status}");
        assert_eq!(h.calls(), ["finish:g"], "{status}: no evaluation");
        let game = h.game("g");
        assert_eq!(game.status, status);
        assert_eq!(game.finished_at_ms, None);
        // The snapshot is still the Game Master's latest.
        assert_eq!(game.snapshot.unwrap().observed_at_ms, 20);
    }
}

#[tokio::test]
async fn runs_split_at_each_game_finished_in_stream_order() {
    let h = Harness::new(&[("g1", GameStatus::Running), ("g2", GameStatus::Running)]);
    let mut w = h.worker();
    let outcome = w
        .handle(&[
            update(1, "g1", "healthy", 10),
            entry(2, &[("kind", b"nope")]),
            update(3, "g2", "healthy", 10),
            finished(4, "g1", 11, Some("12")),
            finished(5, "g2", 11, Some("13")),
            update(6, "g1", "exited", 12),
        ])
        .await;
    assert_eq!(outcome.finished, 6);
    assert_eq!(
        h.calls(),
        [
            "apply:2",
            "finish:g1",
            "evaluate:g1@12",
            "finish:g2",
            "evaluate:g2@13",
            "apply:1"
        ]
    );
    assert_eq!(h.count(Outcome::Applied), 3);
    assert_eq!(h.count(Outcome::Finished), 2);
    assert_eq!(h.count(Outcome::UnknownKind), 1);
    // An update after the finish still refreshes the snapshot of the finished game.
    assert_eq!(
        h.game("g1").snapshot.unwrap().engine_health_summary,
        "exited"
    );
}

#[tokio::test]
async fn a_store_failure_holds_the_offset_before_the_entry_it_hit() {
    let h = Harness::new(&[("g", GameStatus::Running)]);
    let mut w = h.worker();
    let batch = [
        update(1, "g", "healthy", 10),
        finished(2, "g", 11, Some("12")),
        update(3, "g", "oom", 13),
    ];

    h.fail("apply", 1);
    let outcome = w.handle(&batch).await;
    assert_eq!(outcome.finished, 0);
    assert!(outcome.failure.unwrap().to_string().contains("unavailable"));
    assert_eq!(h.metrics.error_count("apply"), 1);
    assert_eq!(
        h.count(Outcome::Applied),
        0,
        "nothing counted before it is written"
    );

    h.fail("finish", 1);
    let outcome = w.handle(&batch).await;
    assert_eq!(
        outcome.finished, 1,
        "the first run is written; the finish is not"
    );
    assert!(outcome.failure.is_some());
    assert_eq!(h.game("g").status, GameStatus::Running);
    assert_eq!(h.metrics.error_count("finish"), 1);

    // The runtime hands back the unfinished entries.
    h.calls();
    let outcome = w.handle(&batch[1..]).await;
    assert_eq!(outcome.finished, 2);
    assert!(outcome.failure.is_none());
    assert_eq!(h.calls(), ["finish:g", "evaluate:g@12", "apply:1"]);
    assert_eq!(h.count(Outcome::Applied), 2);
    assert_eq!(h.count(Outcome::Finished), 1);
}

#[tokio::test]
async fn a_failed_evaluation_holds_the_offset_and_the_retry_only_evaluates() {
    let h = Harness::new(&[("g", GameStatus::Running)]);
    let mut w = h.worker();
    let batch = [
        update(1, "g", "healthy", 10),
        finished(2, "g", 11, Some("12")),
        update(3, "g", "oom", 13),
    ];
    h.fail("evaluate", 2);
    let outcome = w.handle(&batch).await;
    assert_eq!(outcome.finished, 1);
    assert!(outcome.failure.is_some());
    assert_eq!(
        h.game("g").status,
        GameStatus::Finished,
        "the finish is written"
    );
    assert_eq!(h.count(Outcome::Finished), 0, "counted once evaluated");
    assert_eq!(h.metrics.error_count("evaluate"), 1);

    // Still failing: nothing moves.
    h.calls();
    let outcome = w.handle(&batch[1..]).await;
    assert_eq!(outcome.finished, 0);
    assert_eq!(h.calls(), ["evaluate:g@12"]);

    // Recovered: evaluates without finishing again, then carries on.
    let outcome = w.handle(&batch[1..]).await;
    assert_eq!(outcome.finished, 2);
    assert!(outcome.failure.is_none());
    assert_eq!(h.calls(), ["evaluate:g@12", "apply:1"]);
    assert_eq!(h.count(Outcome::Finished), 1);
    assert_eq!(h.count(Outcome::Replayed), 0);
    assert_eq!(h.career("alice").unwrap().games_finished, 1);
    let t = transition(
        GameStatus::Running,
        GameStatus::Finished,
        Trigger::RuntimeEvent,
    )
    .unwrap();
    assert_eq!(h.metrics.transition_count(t), 1);
}

#[tokio::test]
async fn metrics_register_every_outcome_at_zero() {
    let mut registry = prometheus_client::registry::Registry::with_prefix("lobby");
    let _metrics = WorkerMetrics::register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for outcome in Outcome::ALL {
        let line = format!(
            "lobby_gm_events_consumed_total{{outcome=\"{}\"}} 0",
            outcome.as_str()
        );
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }
    assert!(text.contains(r#"lobby_capability_evaluations_total{outcome="evaluated"} 0"#));
}

#[tokio::test]
async fn updates_and_finishes_the_database_refuses_are_pinned_and_skipped_the_rest_applied() {
    let h = Harness::new(&[
        ("g1", GameStatus::Running),
        ("bad", GameStatus::Running),
        ("g2", GameStatus::Running),
    ]);
    h.refuse("bad");
    let mut w = h.worker();
    let outcome = w
        .handle(&[
            update(1, "g1", "healthy", 10),
            update(2, "bad", "healthy", 10),
            update(3, "g2", "probe_failed", 10),
            finished(4, "bad", 11, Some("1700000000000")),
            update(5, "g1", "oom", 12),
        ])
        .await;
    assert!(outcome.failure.is_none());
    assert_eq!(outcome.finished, 5);
    assert_eq!(h.count(Outcome::Refused), 2);
    assert_eq!(h.count(Outcome::Applied), 3);
    let summary = |g: &str| h.game(g).snapshot.map(|s| s.engine_health_summary);
    assert_eq!(summary("g1").as_deref(), Some("oom"));
    assert_eq!(summary("g2").as_deref(), Some("probe_failed"));
    assert_eq!(h.game("bad").snapshot, None);
    assert_eq!(h.game("bad").status, GameStatus::Running);
    // The first run was refused whole, then applied in halves until "bad" stood alone.
    assert_eq!(
        h.calls(),
        [
            "apply:3",
            "apply:1",
            "apply:2",
            "apply:1",
            "apply:1",
            "finish:bad",
            "apply:1"
        ]
    );
}

#[tokio::test]
async fn a_refused_evaluation_is_an_unpinned_refusal_and_abandoning_it_is_counted() {
    let h = Harness::new(&[("g1", GameStatus::Running)]);
    h.lobby.lock().unwrap().refuse_evaluation.insert(gid("g1"));
    let mut w = h.worker();
    let batch = [
        finished(1, "g1", 11, Some("1700000000000")),
        update(2, "g1", "oom", 12),
    ];
    let outcome = w.handle(&batch).await;
    assert_eq!(outcome.finished, 0);
    assert!(
        outcome.refused,
        "an evaluation's refusal is not this entry's values"
    );
    assert!(
        outcome
            .failure
            .is_some_and(|e| e.to_string().contains("out of range"))
    );
    assert_eq!(
        h.game("g1").status,
        GameStatus::Finished,
        "the finish is written"
    );

    // The runtime retries (evaluation only), then gives up on the entry.
    let again = w.handle(&batch).await;
    assert!(again.refused);
    assert_eq!(
        h.calls(),
        [
            "finish:g1",
            "evaluate:g1@1700000000000",
            "evaluate:g1@1700000000000"
        ]
    );
    w.abandon(&batch[0], "value out of range for type bigint");
    assert_eq!(h.count(Outcome::Refused), 1);
    assert_eq!(h.metrics.evaluation_count(EvaluationOutcome::Refused), 1);
    let rest = w.handle(&batch[1..]).await;
    assert!(rest.failure.is_none());
    assert_eq!(rest.finished, 1);
    assert_eq!(
        h.calls(),
        ["apply:1"],
        "nothing left of the abandoned evaluation"
    );
}
