//! The consumer loop: one iteration is [`Consumer::step`]; [`Consumer::run`] repeats it.

use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::entry::{EntryId, StreamEntry};
use crate::health::ConsumerHealth;
use crate::metrics::{ConsumerMetrics, RetryLabels, label};
use crate::ports::{BoxError, DeadLetterSink, StreamError, StreamOffsetStore, StreamReader};
use contracts::dead_letters::DeadLetter;
use error_kit::error_chain;

/// What a handler reports for one batch.
#[derive(Debug)]
pub struct BatchOutcome {
    /// How many entries, from the start of the batch, are finished: their effects are
    /// durable and the offset may move past them.
    pub finished: usize,
    /// Set when the handler stopped early on a transient failure; the unfinished entries
    /// are handed to it again after a backoff.
    pub failure: Option<BoxError>,
    /// Set when the entries after `finished` are still being worked on in the background
    /// (say, their snapshots are being published while the next batch is applied). They
    /// are handed back on the next call, ahead of any new entries, without a backoff; the
    /// handler then finishes them. At shutdown they are handed back alone, so the handler
    /// finishes them before the offset is saved.
    pub in_flight: bool,
    /// Set with `failure` when the store refused the work of the first unfinished entry
    /// for a reason the handler could not pin on that entry's own values (say, rows other
    /// entries stored earlier). The runtime retries it for
    /// [`ConsumerConfig::refusal_hold`], then skips that one entry.
    pub refused: bool,
    /// Entries of the batch the handler skipped as permanently bad (it logged and counted
    /// them), each with why: the runtime keeps them, raw, in the consumer's dead-letter
    /// stream before its offset moves past them. Each is reported once, when the handler
    /// first skips it.
    pub dead_letters: Vec<(EntryId, String)>,
    /// Set when the handler needs entries it was handed before once more (say, it took
    /// over work whose entries it skipped then): after the `finished` entries, the
    /// runtime forgets what it read and goes on reading after this entry.
    pub rewind: Option<EntryId>,
}

impl BatchOutcome {
    /// Every one of `n` entries is finished.
    #[must_use]
    pub fn done(n: usize) -> Self {
        Self {
            finished: n,
            failure: None,
            in_flight: false,
            refused: false,
            dead_letters: Vec::new(),
            rewind: None,
        }
    }

    /// The first `finished` entries are done; the rest wait for a retry because of `error`.
    #[must_use]
    pub fn stopped(finished: usize, error: impl Into<BoxError>) -> Self {
        Self {
            finished,
            failure: Some(error.into()),
            in_flight: false,
            refused: false,
            dead_letters: Vec::new(),
            rewind: None,
        }
    }

    /// The first `finished` entries are done; reading goes on after `to` (see
    /// [`BatchOutcome::rewind`]), handing again the entries after it.
    #[must_use]
    pub fn rewind(finished: usize, to: EntryId) -> Self {
        Self {
            rewind: Some(to),
            ..Self::done(finished)
        }
    }

    /// The first `finished` entries are done; the store refuses the next one's work for a
    /// reason that is not in its values (see [`BatchOutcome::refused`]).
    #[must_use]
    pub fn refused(finished: usize, error: impl Into<BoxError>) -> Self {
        Self {
            refused: true,
            ..Self::stopped(finished, error)
        }
    }

    /// The first `finished` entries are done; the rest are still in flight.
    #[must_use]
    pub fn in_flight(finished: usize) -> Self {
        Self {
            finished,
            failure: None,
            in_flight: true,
            refused: false,
            dead_letters: Vec::new(),
            rewind: None,
        }
    }

    /// The same outcome, with the entries the handler skipped as permanently bad.
    #[must_use]
    pub fn with_dead_letters(mut self, dead_letters: Vec<(EntryId, String)>) -> Self {
        self.dead_letters = dead_letters;
        self
    }
}

/// A worker's logic, plugged into the runtime.
#[async_trait]
pub trait BatchHandler: Send {
    /// Handles `batch` (entries in stream order). Permanent problems with an entry (it
    /// cannot be decoded, it names an unknown game) are the handler's to log and count;
    /// the entry still counts as finished. Only transient failures stop the batch.
    async fn handle(&mut self, batch: &[StreamEntry]) -> BatchOutcome;

    /// The runtime is skipping `entry`: the handler reported a refusal of its work
    /// ([`BatchOutcome::refused`]) for longer than the refusal hold. The handler logs and
    /// counts it as its own outcome and forgets any state it kept for it; the entry is
    /// never handed to it again.
    fn abandon(&mut self, entry: &StreamEntry, reason: &str);

    /// Called before the consumer reads new entries with nothing pending (so also before
    /// each wait for entries), with its position: a handler whose work changed meanwhile
    /// (it took over entries it passed before) returns the entry to read after instead.
    /// By default reading goes on.
    async fn before_read(&mut self, position: EntryId) -> Option<EntryId> {
        let _ = position;
        None
    }

    /// Called once when the consumer stops, after what the handler had in flight was
    /// finished and the offset stored: a handler may write down its final state. By
    /// default nothing.
    async fn stopped(&mut self) {}

    /// The stream's last entry, each time the runtime looks at the stream's bounds (for
    /// its lag): a handler that tracks progress of its own (per shard, say) may report
    /// its lag from it. By default nothing.
    fn stream_head(&mut self, last: EntryId) {
        let _ = last;
    }
}

/// A boxed handler is a handler, so one process can run consumers of different workers
/// through the same code (the service kit's `Work`).
#[async_trait]
impl<H: BatchHandler + ?Sized> BatchHandler for Box<H> {
    async fn handle(&mut self, batch: &[StreamEntry]) -> BatchOutcome {
        (**self).handle(batch).await
    }

    fn abandon(&mut self, entry: &StreamEntry, reason: &str) {
        (**self).abandon(entry, reason);
    }

    async fn before_read(&mut self, position: EntryId) -> Option<EntryId> {
        (**self).before_read(position).await
    }

    async fn stopped(&mut self) {
        (**self).stopped().await;
    }

    fn stream_head(&mut self, last: EntryId) {
        (**self).stream_head(last);
    }
}

/// How long a refusal the handler cannot pin holds the stream by default.
pub const DEFAULT_REFUSAL_HOLD: Duration = Duration::from_secs(30);

/// Settings of one consumer.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Stream key to read.
    pub stream: String,
    /// Offset label (stable across stream renames), also the `consumer` metric label.
    pub label: String,
    /// Entries per `XREAD`.
    pub batch_size: usize,
    /// How long one `XREAD` may block; bounds how long a stop request waits for a read.
    pub block: Duration,
    /// Backoff between retries of transient failures.
    pub backoff: Backoff,
    /// How often to look at the stream's bounds (lag and trimmed-offset detection).
    pub info_interval: Duration,
    /// How long a refusal the handler could not pin on an entry's values holds the stream
    /// (retried with backoff, readiness failing) before that entry is skipped.
    pub refusal_hold: Duration,
}

impl ConsumerConfig {
    /// Defaults for `stream` and `label`: batches of 1000, 2 s block, 100 ms–5 s backoff,
    /// stream bounds checked every second, refusals held for 30 s.
    #[must_use]
    pub fn new(stream: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            stream: stream.into(),
            label: label.into(),
            batch_size: 1000,
            block: Duration::from_secs(2),
            backoff: Backoff::default(),
            info_interval: Duration::from_secs(1),
            refusal_hold: DEFAULT_REFUSAL_HOLD,
        }
    }
}

contracts::wire_enum! {
    /// Where a transient failure happened.
    pub enum Stage {
        /// Loading the stored offset.
        LoadOffset = "load_offset",
        /// Reading a batch.
        Read = "read",
        /// The handler.
        Handle = "handle",
        /// Saving the offset.
        SaveOffset = "save_offset",
        /// Keeping skipped entries in the dead-letter stream.
        DeadLetter = "dead_letter",
    }
}

/// What one [`Consumer::step`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The read timed out with nothing new.
    Idle,
    /// `entries` were finished; the consumer's position is `offset`.
    Handled {
        /// Entries finished in this step.
        entries: usize,
        /// The last finished entry. It is stored during the next step: before that step
        /// waits for entries, or while it handles the next batch (or at shutdown).
        offset: EntryId,
    },
    /// A transient failure at `stage`; call `step` again after `delay`.
    Retry {
        /// Where it failed.
        stage: Stage,
        /// Suggested wait (capped exponential backoff with jitter).
        delay: Duration,
    },
    /// Cancelled while waiting for entries; nothing was in flight.
    Cancelled,
}

/// A stream consumer: the reader, the offset store and the handler, driven one batch at a
/// time. See the crate documentation for the steps.
pub struct Consumer<R, O, H> {
    reader: R,
    offsets: O,
    handler: H,
    config: ConsumerConfig,
    health: ConsumerHealth,
    cancel: CancellationToken,
    m: Handles,
    /// Last finished entry; `None` until the stored offset is loaded.
    position: Option<EntryId>,
    /// Last offset known to be stored.
    saved: Option<EntryId>,
    /// Entries read but not finished: the next batch, read ahead while the handler worked
    /// on the previous one, what the handler still has in flight, or what is left of a
    /// batch after a transient failure.
    pending: Vec<StreamEntry>,
    /// How many leading entries of `pending` the handler has in flight.
    in_flight: usize,
    /// Whether the last read found fewer entries than it asked for: the consumer has caught
    /// up with the stream, so entries arrive while a batch is handled rather than waiting
    /// in a backlog.
    caught_up: bool,
    /// Consecutive failures.
    attempt: u32,
    last_info: Option<Instant>,
    /// Highest deleted id already reported, so one trim is counted once.
    reported_deleted: Option<EntryId>,
    /// The entry whose work the handler reports refused, and since when.
    refusal: Option<(EntryId, Instant)>,
    /// Where skipped entries are kept; `None` keeps them only in the log.
    dead_letters: Option<Box<dyn DeadLetterSink>>,
    /// Skipped entries not kept yet: the offset is not stored past them until they are.
    unkept: Vec<DeadLetter>,
}

/// `entry`, skipped on `stream` for `reason`, as a dead letter.
fn dead_letter(stream: &str, entry: &StreamEntry, reason: String) -> DeadLetter {
    DeadLetter {
        source_stream: stream.to_owned(),
        source_id: entry.id.to_string(),
        reason,
        fields: entry
            .fields
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect(),
    }
}

/// What the read-ahead of step 4 returned: `None` when it did not read.
type ReadAhead = Option<Result<Vec<StreamEntry>, StreamError>>;

/// What the offset save of step 4 did: the offset it stored, if it stored one.
type SaveResult = Result<Option<EntryId>, StreamError>;

struct Handles {
    metrics: ConsumerMetrics,
    entries: Counter,
    dead_lettered: Counter,
    trimmed: Counter,
    abandoned: Counter,
    lag_ms: Gauge,
    batch_size: Histogram,
    handle_seconds: Histogram,
}

impl<R, O, H> Consumer<R, O, H>
where
    R: StreamReader,
    O: StreamOffsetStore,
    H: BatchHandler,
{
    /// Assembles a consumer. `metrics` are the process's shared families (see
    /// [`ConsumerMetrics::register`]); `health` is what readiness reads.
    pub fn new(
        reader: R,
        offsets: O,
        handler: H,
        config: ConsumerConfig,
        metrics: ConsumerMetrics,
        health: ConsumerHealth,
    ) -> Self {
        let l = label(&config.label);
        let entries = metrics.entries.get_or_create(&l).clone();
        let dead_lettered = metrics.dead_letters.get_or_create(&l).clone();
        let trimmed = metrics.trimmed.get_or_create(&l).clone();
        let abandoned = metrics.abandoned.get_or_create(&l).clone();
        let lag_ms = metrics.lag_ms.get_or_create(&l).clone();
        let batch_size = metrics.batch_size.get_or_create(&l).clone();
        let handle_seconds = metrics.handle_seconds.get_or_create(&l).clone();
        let m = Handles {
            metrics,
            entries,
            dead_lettered,
            trimmed,
            abandoned,
            lag_ms,
            batch_size,
            handle_seconds,
        };
        Self {
            reader,
            offsets,
            handler,
            config,
            health,
            cancel: CancellationToken::new(),
            m,
            position: None,
            saved: None,
            pending: Vec::new(),
            in_flight: 0,
            caught_up: true,
            attempt: 0,
            last_info: None,
            reported_deleted: None,
            refusal: None,
            dead_letters: None,
            unkept: Vec::new(),
        }
    }

    /// The same consumer, keeping the entries its handler skips in `sink`.
    #[must_use]
    pub fn with_dead_letters(mut self, sink: impl DeadLetterSink + 'static) -> Self {
        self.dead_letters = Some(Box::new(sink));
        self
    }

    /// The same consumer, reading after `position` instead of the stored offset: for a
    /// handler that keeps its own positions (the Game Master's shard checkpoints). The
    /// offset is still stored as the consumer moves, for operators.
    #[must_use]
    pub fn starting_at(mut self, position: EntryId) -> Self {
        tracing::info!(consumer = %self.config.label, offset = %position, "starting where the handler's own positions say");
        self.position = Some(position);
        self
    }

    /// The handler (tests inspect it).
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The last finished entry, once the offset has been loaded.
    pub fn position(&self) -> Option<EntryId> {
        self.position
    }

    /// Runs [`Self::step`] until `cancel` fires, sleeping the suggested backoff after
    /// each transient failure. On cancellation no new batch is read; the batch in the
    /// handler finishes and its offset is saved before this returns.
    pub async fn run(mut self, cancel: CancellationToken) {
        self.cancel = cancel.clone();
        tracing::info!(stream = %self.config.stream, consumer = %self.config.label, "consumer started");
        while !cancel.is_cancelled() {
            match self.step().await {
                Step::Retry { delay, .. } => {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                Step::Idle | Step::Handled { .. } | Step::Cancelled => {}
            }
        }
        // Work the handler still has in flight is finished before the offset is saved; the
        // entries read ahead behind it are left for the next start.
        if self.in_flight > 0 {
            self.pending.truncate(self.in_flight);
            let mut outcome = self.handler.handle(&self.pending).await;
            self.collect_dead_letters(std::mem::take(&mut outcome.dead_letters));
            let finished = outcome.finished.min(self.pending.len());
            if let Some(last) = finished.checked_sub(1).map(|i| self.pending[i].id) {
                self.position = Some(last);
                self.m.entries.inc_by(finished as u64);
            }
            if let Some(error) = outcome.failure {
                tracing::warn!(error = %error_chain(&*error), "in-flight work did not finish at shutdown; it will be redone after the stored offset");
            }
        }
        // Skipped entries are kept before the offset moves past them; if they cannot be,
        // the entries after the stored offset are handled (and skipped) again.
        if self.keep_dead_letters().await.is_err() {
            tracing::warn!(consumer = %self.config.label, "dead letters not kept at shutdown; offset left where it was stored");
            self.handler.stopped().await;
            return;
        }
        // A batch finished just before the stop but whose offset save failed: one more try.
        if let Some(position) = self.position.filter(|p| self.saved != Some(*p))
            && let Err(error) = self.offsets.save(&self.config.label, position).await
        {
            tracing::warn!(error = %error, offset = %position, "offset not saved at shutdown; the entries after the stored offset will be handled again");
        }
        self.handler.stopped().await;
        tracing::info!(consumer = %self.config.label, offset = ?self.position, "consumer stopped");
    }

    /// One iteration: load the offset if needed; store progress not yet stored if the
    /// consumer is about to wait for entries or recovering from a failure; read a batch
    /// unless unfinished entries are waiting (then, when caught up, top them up with what
    /// arrived since); hand it to the handler while the previous batch's offset is saved
    /// (and, behind a backlog, the next batch is read ahead). Never sleeps: a transient
    /// failure returns [`Step::Retry`] with the wait.
    pub async fn step(&mut self) -> Step {
        // 1. The stored offset, once.
        let position = match self.load_position().await {
            Ok(position) => position,
            Err(step) => return step,
        };
        // 2. Skipped entries kept, then progress not yet stored, when about to wait or
        //    recovering.
        if let Err(step) = self.keep_dead_letters().await {
            return step;
        }
        if let Err(step) = self.store_progress_first(position).await {
            return step;
        }
        // 3. A new batch, unless entries are waiting.
        if let Some(step) = self.next_entries(position).await {
            return step;
        }
        // The handler may have moved the position back before the read.
        let position = self.position.unwrap_or(position);
        // 4. The handler, beside the read-ahead and the previous batch's offset save.
        let (outcome, ahead, saved) = self.handle_pending(position).await;
        let refused = outcome.refused;
        let rewind = outcome.rewind;
        let (finished, failure) = self.take_finished(outcome);
        match rewind.filter(|_| failure.is_none()) {
            Some(to) => self.rewind_to(to),
            None => self.keep_read_ahead(ahead, failure.is_none()),
        }
        // 5. What the step came to.
        self.conclude(position, finished, failure, refused, saved)
    }

    /// Step 1: the position, loading the stored offset the first time (`0-0` when none).
    async fn load_position(&mut self) -> Result<EntryId, Step> {
        if let Some(position) = self.position {
            return Ok(position);
        }
        match self.offsets.load(&self.config.label).await {
            Ok(stored) => {
                let p = stored.unwrap_or(EntryId::ZERO);
                tracing::info!(consumer = %self.config.label, offset = %p, stored = stored.is_some(), "offset loaded");
                self.position = Some(p);
                self.saved = Some(p);
                self.probe_stream(stored.is_some()).await;
                Ok(p)
            }
            Err(e) => Err(self.retry(Stage::LoadOffset, &e.into())),
        }
    }

    /// Step 2: the entries the handler skipped go to the dead-letter stream before any
    /// offset past them is stored (a failure holds the offset and is retried).
    async fn keep_dead_letters(&mut self) -> Result<(), Step> {
        if self.unkept.is_empty() {
            return Ok(());
        }
        let Some(sink) = &self.dead_letters else {
            tracing::warn!(consumer = %self.config.label, skipped = self.unkept.len(), "no dead-letter stream: skipped entries are only in the log");
            self.unkept.clear();
            return Ok(());
        };
        match sink.keep(&self.unkept).await {
            Ok(()) => {
                self.m.dead_lettered.inc_by(self.unkept.len() as u64);
                self.unkept.clear();
                Ok(())
            }
            Err(e) => Err(self.retry(Stage::DeadLetter, &e.into())),
        }
    }

    /// The handler's skipped entries, raw from `pending`, to keep.
    fn collect_dead_letters(&mut self, skipped: Vec<(EntryId, String)>) {
        for (id, reason) in skipped {
            match self.pending.iter().find(|e| e.id == id) {
                Some(entry) => {
                    let letter = dead_letter(&self.config.stream, entry, reason);
                    self.unkept.push(letter);
                }
                None => {
                    tracing::warn!(consumer = %self.config.label, stream_entry_id = %id, "the handler skipped an entry it was not given; no dead letter");
                }
            }
        }
    }

    /// Step 2: progress not yet stored is stored first when the consumer is about to wait
    /// for entries or is recovering from a failure; otherwise while the next batch is
    /// handled (step 4).
    async fn store_progress_first(&mut self, position: EntryId) -> Result<(), Step> {
        if self.saved == Some(position) || !(self.pending.is_empty() || self.attempt > 0) {
            return Ok(());
        }
        if let Err(e) = self.offsets.save(&self.config.label, position).await {
            return Err(self.retry(Stage::SaveOffset, &e.into()));
        }
        self.saved = Some(position);
        Ok(())
    }

    /// Step 3: looks at the stream's bounds when due, then reads a batch unless entries
    /// are waiting (read ahead, or left by a failure), after letting the handler move the
    /// position back ([`BatchHandler::before_read`]); when caught up, tops the waiting
    /// entries up with what arrived since. `Some` when the step ends here.
    async fn next_entries(&mut self, position: EntryId) -> Option<Step> {
        if self
            .last_info
            .is_none_or(|at| at.elapsed() >= self.config.info_interval)
        {
            self.probe_stream(true).await;
        }
        if !self.pending.is_empty() {
            if self.caught_up && self.attempt == 0 {
                self.top_up().await;
            }
            return None;
        }
        let position = match self.handler.before_read(position).await {
            Some(to) => {
                self.rewind_to(to);
                to
            }
            None => position,
        };
        let read = self.reader.read_after(
            &self.config.stream,
            position,
            self.config.batch_size,
            self.config.block,
        );
        let batch = tokio::select! {
            biased;
            () = self.cancel.cancelled() => return Some(Step::Cancelled),
            r = read => r,
        };
        match batch {
            Ok(entries) if entries.is_empty() => {
                self.recovered();
                self.m.lag_ms.set(0);
                Some(Step::Idle)
            }
            Ok(entries) => {
                self.caught_up = entries.len() < self.config.batch_size;
                self.pending = entries;
                None
            }
            Err(e) => Some(self.retry(Stage::Read, &e.into())),
        }
    }

    /// Caught up: what arrived while the last batch was handled joins the entries
    /// waiting, so it is applied now instead of one batch later.
    async fn top_up(&mut self) {
        let waiting = self.pending.len() - self.in_flight;
        let room = self.config.batch_size.saturating_sub(waiting);
        let Some(after) = self.pending.last().map(|e| e.id).filter(|_| room > 0) else {
            return;
        };
        match self
            .reader
            .read_after(&self.config.stream, after, room, Duration::ZERO)
            .await
        {
            Ok(more) => {
                self.caught_up = more.len() < room;
                self.pending.extend(more);
            }
            Err(error) => {
                tracing::debug!(%error, "top-up read failed; the next read will retry");
            }
        }
    }

    /// Step 4: the handler, while (behind a backlog) the next batch is read ahead without
    /// blocking on the reader's own connection, so the read overlaps the handler's
    /// database and publish work instead of following it, and while the previous batch's
    /// offset is saved. Returns the handler's outcome, the read-ahead (`None` when caught
    /// up: the next step's top-up reads what arrives meanwhile, closer to when it is
    /// handled) and the offset saved, if any.
    async fn handle_pending(&mut self, position: EntryId) -> (BatchOutcome, ReadAhead, SaveResult) {
        let started = Instant::now();
        let after = self.pending.last().map_or(position, |e| e.id);
        let read_ahead = async {
            if self.caught_up {
                return None;
            }
            let read = self.reader.read_after(
                &self.config.stream,
                after,
                self.config.batch_size,
                Duration::ZERO,
            );
            Some(read.await)
        };
        let unsaved = (self.saved != Some(position)).then_some(position);
        let save = async {
            match unsaved {
                Some(offset) => self
                    .offsets
                    .save(&self.config.label, offset)
                    .await
                    .map(|()| Some(offset)),
                None => Ok(None),
            }
        };
        let joined = tokio::join!(self.handler.handle(&self.pending), read_ahead, save);
        self.m
            .handle_seconds
            .observe(started.elapsed().as_secs_f64());
        joined
    }

    /// Step 4's result: the finished entries leave `pending` and move the position; the
    /// rest are in flight or wait for a retry. Returns how many finished, and the failure
    /// (a handler that stops short without one has failed all the same).
    fn take_finished(&mut self, mut outcome: BatchOutcome) -> (usize, Option<BoxError>) {
        self.collect_dead_letters(std::mem::take(&mut outcome.dead_letters));
        let finished = outcome.finished.min(self.pending.len());
        let failure = match outcome.failure {
            None if finished < self.pending.len()
                && !outcome.in_flight
                && outcome.rewind.is_none() =>
            {
                Some(BoxError::from(format!(
                    "handler finished {finished} of {} entries without reporting a failure",
                    self.pending.len()
                )))
            }
            other => other,
        };
        if finished > 0 {
            let last = self.pending[finished - 1].id;
            self.pending.drain(..finished);
            self.position = Some(last);
            self.m.entries.inc_by(finished as u64);
            self.m.batch_size.observe(finished as f64);
        }
        self.in_flight = if failure.is_none() && outcome.in_flight {
            self.pending.len()
        } else {
            0
        };
        (finished, failure)
    }

    /// A batch read ahead follows on from the entries given to the handler; it is kept
    /// unless the handler failed (then the unfinished entries are retried alone, and the
    /// next read starts after them).
    fn keep_read_ahead(&mut self, ahead: ReadAhead, handler_ok: bool) {
        match ahead {
            Some(Ok(next)) if handler_ok => {
                self.caught_up = next.len() < self.config.batch_size;
                self.pending.extend(next);
            }
            None | Some(Ok(_)) => {}
            Some(Err(error)) => {
                tracing::debug!(%error, "read-ahead failed; the next read will retry");
            }
        }
    }

    /// Step 4's result when the handler asked for a rewind: what was read is dropped and
    /// the next read starts after `to` (the new position, stored as usual).
    fn rewind_to(&mut self, to: EntryId) {
        tracing::info!(consumer = %self.config.label, from = ?self.position, to = %to, "rewinding: the handler needs entries after this one again");
        self.position = Some(to);
        self.pending.clear();
        self.in_flight = 0;
        self.caught_up = false;
    }

    /// Step 5: the offset of the previous batch was saved beside the handler; this
    /// batch's is saved during the next step (before it waits for entries, or beside the
    /// next batch), so the save is never on the critical path of a busy consumer. A
    /// handler failure is retried (or, refused, held), then a failed save.
    fn conclude(
        &mut self,
        position: EntryId,
        finished: usize,
        failure: Option<BoxError>,
        refused: bool,
        saved: SaveResult,
    ) -> Step {
        let position = self.position.unwrap_or(position);
        let save_failure = match saved {
            Ok(Some(offset)) => {
                self.saved = Some(offset);
                None
            }
            Ok(None) => None,
            Err(error) => Some(error),
        };
        if let Some(error) = failure {
            if refused {
                return self.refused(finished, &error);
            }
            return self.retry(Stage::Handle, &error);
        }
        self.refusal = None;
        if let Some(error) = save_failure {
            return self.retry(Stage::SaveOffset, &error.into());
        }
        self.recovered();
        Step::Handled {
            entries: finished,
            offset: position,
        }
    }

    /// A refusal of the first unfinished entry's work: retried like a transient failure
    /// while it is younger than the refusal hold, then that entry is skipped. `finished`
    /// entries of this step were finished before it.
    fn refused(&mut self, finished: usize, error: &BoxError) -> Step {
        let Some(culprit) = self.pending.first().map(|e| e.id) else {
            return self.retry(Stage::Handle, error);
        };
        let since = match self.refusal {
            Some((id, since)) if id == culprit => since,
            _ => {
                let now = Instant::now();
                self.refusal = Some((culprit, now));
                now
            }
        };
        let held = since.elapsed();
        let hold = self.config.refusal_hold;
        if held < hold {
            let message = format!(
                "entry {culprit} refused, held {:.1}s of {:.1}s before it is skipped: {}",
                held.as_secs_f64(),
                hold.as_secs_f64(),
                error_chain(&**error)
            );
            return self.retry(Stage::Handle, &BoxError::from(message));
        }
        let entry = self.pending.remove(0);
        let reason = error_chain(&**error);
        tracing::error!(
            consumer = %self.config.label,
            stream_entry_id = %entry.id,
            held_ms = held.as_millis() as u64,
            reason = %reason,
            "entry skipped: its work was refused for longer than the refusal hold"
        );
        self.handler.abandon(&entry, &reason);
        let why = format!("refused for longer than the refusal hold: {reason}");
        self.unkept
            .push(dead_letter(&self.config.stream, &entry, why));
        self.position = Some(entry.id);
        self.m.entries.inc();
        self.m.abandoned.inc();
        self.refusal = None;
        self.recovered();
        Step::Handled {
            entries: finished + 1,
            offset: entry.id,
        }
    }

    fn retry(&mut self, stage: Stage, error: &BoxError) -> Step {
        self.attempt = self.attempt.saturating_add(1);
        let delay = self
            .config
            .backoff
            .delay(self.attempt, rand::random::<f64>());
        self.m
            .metrics
            .retries
            .get_or_create(&RetryLabels {
                consumer: self.config.label.clone(),
                stage: stage.as_str().to_owned(),
            })
            .inc();
        let message = error_chain(&**error);
        tracing::warn!(
            consumer = %self.config.label,
            stage = stage.as_str(),
            attempt = self.attempt,
            retry_in_ms = delay.as_millis() as u64,
            error = %message,
            "transient failure; offset held, retrying"
        );
        self.health.failed(stage.as_str(), message);
        Step::Retry { stage, delay }
    }

    fn recovered(&mut self) {
        if self.attempt > 0 {
            tracing::info!(consumer = %self.config.label, after_attempts = self.attempt, "consumer recovered");
        }
        self.attempt = 0;
        self.health.succeeded();
    }

    /// Lag and trimmed-offset detection from `XINFO STREAM`. Best effort: a failure here
    /// is logged at debug level; the read that follows reports the real problem.
    async fn probe_stream(&mut self, detect_trim: bool) {
        self.last_info = Some(Instant::now());
        let Some(position) = self.position else {
            return;
        };
        let info = match self.reader.info(&self.config.stream).await {
            Ok(Some(info)) => info,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "stream info unavailable");
                return;
            }
        };
        let lag = info.last_generated.ms.saturating_sub(position.ms);
        self.m.lag_ms.set(i64::try_from(lag).unwrap_or(i64::MAX));
        self.handler.stream_head(info.last_generated);

        // Two signs of entries removed before being read: an `XDEL`ed id above the offset
        // (Redis reports the highest deleted id), or a first entry beyond the one right
        // after the offset (trimming moves the head; Redis 7.0 does not count trimmed ids
        // as deleted). The second can misfire only when the stream was trimmed exactly up
        // to the offset and the next entry has a later millisecond.
        let deleted_above = info.max_deleted.filter(|d| *d > position);
        let next = EntryId::new(position.ms, position.seq.saturating_add(1));
        let head_beyond = info.first_entry.filter(|first| *first > next);
        let evidence = deleted_above.max(head_beyond);
        if !detect_trim || position == EntryId::ZERO {
            // A consumer without a stored offset, or at `0-0` (a handler's positions that
            // say nothing was read yet), never claimed to have read what was removed
            // before it started: remember what is gone already.
            self.reported_deleted = evidence.max(self.reported_deleted);
            return;
        }
        let Some(evidence) = evidence else {
            return;
        };
        if self.reported_deleted.is_some_and(|r| r >= evidence) {
            return;
        }
        self.reported_deleted = Some(evidence);
        self.m.trimmed.inc();
        tracing::warn!(
            consumer = %self.config.label,
            stream = %self.config.stream,
            offset = %position,
            first_entry = ?info.first_entry.map(|id| id.to_string()),
            max_deleted = ?info.max_deleted.map(|id| id.to_string()),
            "entries after the stored offset were removed before being read; continuing from the stream's first entry"
        );
    }
}
