//! The stop outbox and the stop answers of `PgLobbyStore`, against a real server, each test
//! on a fresh database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contracts::{JobResult, StopReason};
use lobby_adapters_postgres::{PgLobbyStore, migrate};
use lobby_domain::{GameId, GameStatus};
use lobby_ports::{AnswerRecorded, Error, GameStore, NewGame, StopAnswer, StopRequests};
use pg_kit::PgSettings;
use testkit::pg::TestDb;

async fn store_with(games: &[&str]) -> (TestDb, PgLobbyStore) {
    let db = TestDb::create().await.unwrap();
    let pool = pg_kit::connect(db.url(), &PgSettings::default())
        .await
        .unwrap();
    migrate(&pool).await.unwrap();
    let store = PgLobbyStore::new(pool);
    for id in games {
        let new = NewGame {
            game_id: game(id),
            status: GameStatus::Running,
        };
        store.create(&new).await.unwrap();
    }
    (db, store)
}

fn game(id: &str) -> GameId {
    GameId::new(id).unwrap()
}

fn answer(ms: u64, seq: u64, result: JobResult) -> StopAnswer {
    StopAnswer {
        entry: (ms, seq),
        result,
    }
}

/// The game's last stop as stored: outcome, code, message, and whether it has a stop time.
async fn last_stop(store: &PgLobbyStore, id: &str) -> Option<(String, String, String, bool)> {
    let client = store.pool().get().await.unwrap();
    let row = client
        .query_one(
            "SELECT stop_outcome, stop_error_code, stop_error_message, stopped_at IS NOT NULL \
             FROM games WHERE game_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let outcome: Option<String> = row.get(0);
    outcome.map(|o| (o, row.get(1), row.get(2), row.get(3)))
}

async fn stopped_at_of(store: &PgLobbyStore, id: &str) -> Option<String> {
    let client = store.pool().get().await.unwrap();
    client
        .query_one(
            "SELECT stopped_at::text FROM games WHERE game_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn requests_are_pending_until_marked_sent_and_unknown_games_are_refused() {
    let (_db, store) = store_with(&["g1", "g2"]).await;
    store
        .request_stop(&game("g1"), StopReason::AdminRequest)
        .await
        .unwrap();
    store
        .request_stop(&game("g2"), StopReason::Cancelled)
        .await
        .unwrap();
    let missing = store
        .request_stop(&game("nobody"), StopReason::AdminRequest)
        .await;
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");

    let pending = store.pending_stops(10).await.unwrap();
    let games: Vec<&str> = pending.iter().map(|p| p.job.game_id.as_str()).collect();
    assert_eq!(games, ["g1", "g2"], "oldest first");
    assert_eq!(pending[1].job.reason, StopReason::Cancelled);
    store
        .mark_sent(&[(pending[0].id, "5-0".into())])
        .await
        .unwrap();
    let left = store.pending_stops(10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].job.game_id.as_str(), "g2");
}

#[tokio::test]
async fn the_latest_answer_is_the_games_last_stop_whatever_order_they_are_recorded_in() {
    let (_db, store) = store_with(&["g1", "g2"]).await;
    let recorded = store
        .record_answers(&[
            answer(
                10,
                0,
                JobResult::failure(game("g1"), "engine_stop_failed", "alive"),
            ),
            answer(20, 1, JobResult::success(game("g1"), "c1", "http://e1")),
            answer(30, 0, JobResult::success(game("nobody"), "c", "http://e")),
            answer(
                40,
                0,
                JobResult::replay_no_op(game("g2"), "c2", "http://e2", "stopped"),
            ),
        ])
        .await
        .unwrap();
    assert_eq!(
        recorded,
        [
            AnswerRecorded::Recorded,
            AnswerRecorded::Recorded,
            AnswerRecorded::UnknownGame,
            AnswerRecorded::Recorded,
        ]
    );
    assert_eq!(
        last_stop(&store, "g1").await,
        Some(("success".into(), String::new(), String::new(), true))
    );
    assert_eq!(
        last_stop(&store, "g2").await,
        Some((
            "success".into(),
            "replay_no_op".into(),
            "stopped".into(),
            true
        ))
    );

    // A replay of the older one, and the same one again, change nothing.
    let again = store
        .record_answers(&[
            answer(
                10,
                0,
                JobResult::failure(game("g1"), "engine_stop_failed", "alive"),
            ),
            answer(20, 1, JobResult::success(game("g1"), "c1", "http://e1")),
        ])
        .await
        .unwrap();
    assert_eq!(again, [AnswerRecorded::Stale, AnswerRecorded::Stale]);
    // A later stop that found the engine stopped keeps when it stopped.
    let stopped_at = stopped_at_of(&store, "g1").await;
    assert!(stopped_at.is_some());
    let replay = JobResult::replay_no_op(game("g1"), "c1", "http://e1", "stopped");
    store
        .record_answers(&[answer(25, 0, replay)])
        .await
        .unwrap();
    assert_eq!(stopped_at_of(&store, "g1").await, stopped_at);
    let failure = store
        .record_answers(&[answer(26, 0, JobResult::failure(game("g1"), "x", "y"))])
        .await
        .unwrap();
    assert_eq!(failure, [AnswerRecorded::Recorded]);
    assert_eq!(
        last_stop(&store, "g1").await,
        Some(("failure".into(), "x".into(), "y".into(), false)),
        "a failed stop has no stop time"
    );
}

#[tokio::test]
async fn an_answer_the_database_cannot_hold_is_refused_and_nothing_of_its_call_is_kept() {
    let (_db, store) = store_with(&["g1", "g2"]).await;
    let result = store
        .record_answers(&[
            answer(1, 0, JobResult::success(game("g1"), "c1", "http://e1")),
            answer(2, 0, JobResult::failure(game("g2"), "x", "a NUL \0 byte")),
        ])
        .await;
    assert!(matches!(result, Err(Error::Refused(_))), "{result:?}");
    assert_eq!(last_stop(&store, "g1").await, None, "one transaction");
}
