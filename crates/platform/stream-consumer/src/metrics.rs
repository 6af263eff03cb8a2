//! The consumer runtime's metrics (registered by the binary under its own prefix, e.g.
//! `gamemaster_stream_consumer_entries_total{consumer="health_events"}`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds of the batch-size histogram (entries).
pub const BATCH_SIZE_BUCKETS: [f64; 12] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];
/// Upper bounds of the batch-handling latency histogram (seconds).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

/// Label set naming the consumer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ConsumerLabel {
    /// The consumer's offset label, e.g. `health_events`.
    pub consumer: String,
}

/// Label set of the retry counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RetryLabels {
    /// The consumer's offset label.
    pub consumer: String,
    /// Where the transient failure happened: `load_offset`, `read`, `handle`, `save_offset`.
    pub stage: String,
}

type HistogramFamily = Family<ConsumerLabel, Histogram, fn() -> Histogram>;

/// Metric families shared by every consumer of a process.
#[derive(Debug, Clone)]
pub struct ConsumerMetrics {
    pub(crate) entries: Family<ConsumerLabel, Counter>,
    pub(crate) dead_letters: Family<ConsumerLabel, Counter>,
    pub(crate) retries: Family<RetryLabels, Counter>,
    pub(crate) trimmed: Family<ConsumerLabel, Counter>,
    pub(crate) abandoned: Family<ConsumerLabel, Counter>,
    pub(crate) lag_ms: Family<ConsumerLabel, Gauge>,
    pub(crate) batch_size: HistogramFamily,
    pub(crate) handle_seconds: HistogramFamily,
}

impl Default for ConsumerMetrics {
    fn default() -> Self {
        Self {
            entries: Family::default(),
            dead_letters: Family::default(),
            retries: Family::default(),
            trimmed: Family::default(),
            abandoned: Family::default(),
            lag_ms: Family::default(),
            batch_size: Family::new_with_constructor(|| Histogram::new(BATCH_SIZE_BUCKETS)),
            handle_seconds: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
        }
    }
}

impl ConsumerMetrics {
    /// Creates the families and registers them under `stream_consumer_*` in `registry`.
    #[must_use]
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let r = registry.sub_registry_with_prefix("stream_consumer");
        r.register(
            "entries",
            "Stream entries the consumer finished (offset moved past them)",
            metrics.entries.clone(),
        );
        r.register(
            "dead_letters",
            "Skipped entries kept in the consumer's dead-letter stream",
            metrics.dead_letters.clone(),
        );
        r.register(
            "retries",
            "Transient failures retried with backoff, by stage",
            metrics.retries.clone(),
        );
        r.register(
            "trimmed_offsets",
            "Times entries after the stored offset were found trimmed away unread",
            metrics.trimmed.clone(),
        );
        r.register(
            "abandoned_entries",
            "Entries skipped because the store refused their work, for a reason the worker could not pin on their values, for longer than the refusal hold",
            metrics.abandoned.clone(),
        );
        r.register_with_unit(
            "lag",
            "Milliseconds between the stream's last entry id and the consumer's offset",
            Unit::Other("milliseconds".into()),
            metrics.lag_ms.clone(),
        );
        r.register(
            "batch_size",
            "Entries finished per handled batch",
            metrics.batch_size.clone(),
        );
        r.register_with_unit(
            "batch_handling",
            "Time the handler took per batch",
            Unit::Seconds,
            metrics.handle_seconds.clone(),
        );
        metrics
    }

    /// Entries finished so far by `consumer` (tests and summaries).
    #[must_use]
    pub fn entries(&self, consumer: &str) -> u64 {
        self.entries.get_or_create(&label(consumer)).get()
    }

    /// Retries so far by `consumer` at `stage`.
    #[must_use]
    pub fn retries(&self, consumer: &str, stage: &str) -> u64 {
        self.retries
            .get_or_create(&RetryLabels {
                consumer: consumer.to_owned(),
                stage: stage.to_owned(),
            })
            .get()
    }

    /// Trimmed-offset detections so far by `consumer`.
    #[must_use]
    pub fn trimmed(&self, consumer: &str) -> u64 {
        self.trimmed.get_or_create(&label(consumer)).get()
    }

    /// Entries skipped after the refusal hold so far by `consumer`.
    #[must_use]
    pub fn abandoned(&self, consumer: &str) -> u64 {
        self.abandoned.get_or_create(&label(consumer)).get()
    }

    /// The last lag measured for `consumer`, in milliseconds.
    #[must_use]
    pub fn lag_ms(&self, consumer: &str) -> i64 {
        self.lag_ms.get_or_create(&label(consumer)).get()
    }
}

pub(crate) fn label(consumer: &str) -> ConsumerLabel {
    ConsumerLabel {
        consumer: consumer.to_owned(),
    }
}
