#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use contracts::GameId;
use lobby_ports::PendingStop;
use stream_consumer::EntryId;

use super::*;

/// The games' last answers, in memory, with the same rules as the table: a later entry
/// wins, an unknown game changes nothing, a NUL byte in a message is refused.
#[derive(Clone, Default)]
struct Answers {
    games: Arc<Mutex<BTreeMap<String, Option<StopAnswer>>>>,
    /// Calls to fail transiently before answering.
    unavailable: Arc<Mutex<usize>>,
    calls: Arc<Mutex<usize>>,
}

impl Answers {
    fn with(games: &[&str]) -> Self {
        let answers = Self::default();
        for game in games {
            answers
                .games
                .lock()
                .unwrap()
                .insert((*game).to_owned(), None);
        }
        answers
    }

    fn last(&self, game: &str) -> Option<StopAnswer> {
        self.games.lock().unwrap()[game].clone()
    }
}

#[async_trait]
impl StopRequests for Answers {
    async fn request_stop(&self, _: &GameId, _: contracts::StopReason) -> Result<(), Error> {
        unreachable!("the results worker asks for no stop")
    }

    async fn pending_stops(&self, _: usize) -> Result<Vec<PendingStop>, Error> {
        unreachable!("the results worker sends nothing")
    }

    async fn mark_sent(&self, _: &[(i64, String)]) -> Result<(), Error> {
        unreachable!("the results worker sends nothing")
    }

    async fn record_answers(&self, answers: &[StopAnswer]) -> Result<Vec<AnswerRecorded>, Error> {
        *self.calls.lock().unwrap() += 1;
        {
            let mut unavailable = self.unavailable.lock().unwrap();
            if *unavailable > 0 {
                *unavailable -= 1;
                return Err(Error::Unavailable("connection refused".into()));
            }
        }
        if answers
            .iter()
            .any(|a| a.result.error_message.contains('\0'))
        {
            return Err(Error::Refused("invalid byte sequence 0x00".into()));
        }
        let mut games = self.games.lock().unwrap();
        Ok(answers
            .iter()
            .map(
                |answer| match games.get_mut(answer.result.game_id.as_str()) {
                    None => AnswerRecorded::UnknownGame,
                    Some(Some(last)) if last.entry >= answer.entry => AnswerRecorded::Stale,
                    Some(last) => {
                        *last = Some(answer.clone());
                        AnswerRecorded::Recorded
                    }
                },
            )
            .collect())
    }
}

fn game(id: &str) -> GameId {
    GameId::new(id).unwrap()
}

fn entry(seq: u64, result: &JobResult) -> StreamEntry {
    let pairs: Vec<(&str, String)> = result.wire_fields();
    StreamEntry::from_pairs(EntryId::new(1, seq), &pairs)
}

fn worker(answers: &Answers) -> JobResultsWorker<Answers> {
    JobResultsWorker::new(answers.clone(), WorkerMetrics::new("outcome"))
}

fn counts(w: &JobResultsWorker<Answers>) -> Vec<(Outcome, u64)> {
    Outcome::ALL
        .iter()
        .map(|o| (*o, w.metrics.get(*o)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[tokio::test]
async fn each_answer_becomes_its_games_last_stop_and_is_counted_by_what_it_says() {
    let answers = Answers::with(&["g1", "g2", "g3"]);
    let mut w = worker(&answers);
    let batch = [
        entry(1, &JobResult::success(game("g1"), "c1", "http://e1")),
        entry(
            2,
            &JobResult::replay_no_op(game("g2"), "c2", "http://e2", "stopped already"),
        ),
        entry(
            3,
            &JobResult::failure(game("g3"), "engine_stop_failed", "still alive"),
        ),
        entry(4, &JobResult::success(game("nobody"), "c9", "http://e9")),
        StreamEntry::from_pairs(EntryId::new(1, 5), &[("outcome", "success")]),
    ];
    let outcome = w.handle(&batch).await;
    assert_eq!(outcome.finished, 5);
    assert!(outcome.failure.is_none());
    let dead: Vec<EntryId> = outcome.dead_letters.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        dead,
        [EntryId::new(1, 4), EntryId::new(1, 5)],
        "unknown game, not a result"
    );
    assert_eq!(
        counts(&w),
        [
            (Outcome::Stopped, 1),
            (Outcome::AlreadyStopped, 1),
            (Outcome::Failed, 1),
            (Outcome::UnknownGame, 1),
            (Outcome::Malformed, 1),
        ]
    );
    assert_eq!(answers.last("g1").unwrap().entry, (1, 1));
    let failed = answers.last("g3").unwrap().result;
    assert_eq!(failed.error_code, "engine_stop_failed");
    assert_eq!(
        *answers.calls.lock().unwrap(),
        1,
        "one transaction per batch"
    );
}

#[tokio::test]
async fn a_replayed_older_answer_changes_nothing() {
    let answers = Answers::with(&["g1"]);
    let mut w = worker(&answers);
    let newer = entry(7, &JobResult::failure(game("g1"), "x", "y"));
    let older = entry(3, &JobResult::success(game("g1"), "c1", "http://e1"));
    w.handle(&[newer]).await;
    w.handle(&[older]).await;
    assert_eq!(answers.last("g1").unwrap().entry, (1, 7));
    assert_eq!(counts(&w), [(Outcome::Failed, 1), (Outcome::Stale, 1)]);
}

#[tokio::test]
async fn an_answer_the_database_refuses_is_skipped_alone() {
    let answers = Answers::with(&["g1", "g2", "g3"]);
    let mut w = worker(&answers);
    let batch = [
        entry(1, &JobResult::success(game("g1"), "c1", "http://e1")),
        entry(2, &JobResult::failure(game("g2"), "x", "nul \0 here")),
        entry(3, &JobResult::success(game("g3"), "c3", "http://e3")),
    ];
    let outcome = w.handle(&batch).await;
    assert_eq!(outcome.finished, 3);
    assert!(answers.last("g1").is_some() && answers.last("g3").is_some());
    assert!(answers.last("g2").is_none());
    assert_eq!(counts(&w), [(Outcome::Stopped, 2), (Outcome::Refused, 1)]);
}

#[tokio::test]
async fn a_transient_failure_finishes_nothing_and_the_retry_records_everything_once() {
    let answers = Answers::with(&["g1", "g2"]);
    *answers.unavailable.lock().unwrap() = 1;
    let mut w = worker(&answers);
    let batch = [
        StreamEntry::from_pairs(EntryId::new(1, 1), &[("game_id", "g1")]),
        entry(2, &JobResult::success(game("g1"), "c1", "http://e1")),
        entry(3, &JobResult::success(game("g2"), "c2", "http://e2")),
    ];
    let first = w.handle(&batch).await;
    assert_eq!(
        first.finished, 1,
        "the malformed entry before the failure is finished"
    );
    assert!(first.failure.is_some());
    let retry = w.handle(&batch[1..]).await;
    assert_eq!(retry.finished, 2);
    assert_eq!(counts(&w), [(Outcome::Stopped, 2), (Outcome::Malformed, 1)]);
}

/// The worker inside the real consumer runtime, on streams in memory: the answers are
/// recorded, what it skipped is kept as dead letters, and the offset passes everything.
#[tokio::test]
async fn in_the_real_runtime_answers_land_skips_become_dead_letters_and_the_offset_moves() {
    use stream_consumer::memory::MemoryStreams;
    use stream_consumer::{Consumer, ConsumerConfig, ConsumerHealth, ConsumerMetrics, Step};

    let streams = MemoryStreams::default();
    let results = "runtime:job_results";
    streams.append(
        results,
        &JobResult::success(game("g1"), "c1", "http://e1").wire_fields(),
    );
    streams.append(results, &[("game_id", "g1")]);
    let last = streams.append(
        results,
        &JobResult::failure(game("nobody"), "not_found", "none").wire_fields(),
    );
    let answers = Answers::with(&["g1"]);
    let mut consumer = Consumer::new(
        streams.clone(),
        streams.clone(),
        worker(&answers),
        ConsumerConfig::new(results, OFFSET_LABEL),
        ConsumerMetrics::default(),
        ConsumerHealth::default(),
    )
    .with_dead_letters(streams.clone());
    assert!(matches!(
        consumer.step().await,
        Step::Handled { entries: 3, .. }
    ));
    assert_eq!(consumer.step().await, Step::Idle);
    assert_eq!(streams.offset(OFFSET_LABEL), Some(last));
    assert!(answers.last("g1").is_some());
    let dead: Vec<(String, String)> = streams
        .dead_letters()
        .iter()
        .map(|d| (d.source_id.clone(), d.reason.clone()))
        .collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0].0, "2-0");
    assert!(dead[1].1.contains("no game 'nobody'"), "{dead:?}");
}
