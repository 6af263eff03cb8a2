//! One counter per value of a wire enum: the shape of every worker's "by outcome" (or "by
//! kind", "by event type") metric, written once.

use std::marker::PhantomData;

use contracts::WireEnum;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The metric label names the workers count by. They are metric vocabulary, not stream
/// fields, though two are spelled like fields of the contracts.
pub mod labels {
    /// How an entry or an operation ended.
    pub const OUTCOME: &str = "outcome";
    /// Which kind of event was published.
    pub const KIND: &str = "kind";
    /// Which health event type was published.
    pub const EVENT_TYPE: &str = "event_type";
}

/// The label set: one label, whose value is an enum's spelling.
type Label = [(&'static str, &'static str); 1];

/// A counter family with one label (`outcome`, `kind`, …) whose values are `E`'s
/// spellings. Every value is there from the start, at 0, and its counter is looked up once
/// here rather than on every increment (a lock and a hash each, on a worker's hot path).
/// Cheap to clone: clones share the counters.
#[derive(Debug, Clone)]
pub struct CountsBy<E> {
    family: Family<Label, Counter>,
    by_value: Vec<Counter>,
    _values: PhantomData<E>,
}

impl<E: WireEnum> CountsBy<E> {
    /// Unregistered counters labelled `label`.
    #[must_use]
    pub fn new(label: &'static str) -> Self {
        let family = Family::<Label, Counter>::default();
        let by_value = E::ALL
            .iter()
            .map(|value| family.get_or_create(&[(label, value.as_str())]).clone())
            .collect();
        Self {
            family,
            by_value,
            _values: PhantomData,
        }
    }

    /// Registers the family in `registry` as `name` (the registry adds its prefix and
    /// `_total`).
    pub fn register(&self, registry: &mut Registry, name: &str, help: &str) {
        registry.register(name, help, self.family.clone());
    }

    /// Counts one `value`.
    pub fn inc(&self, value: E) {
        if let Some(counter) = self.by_value.get(value.index()) {
            counter.inc();
        }
    }

    /// How many `value`s were counted (tests and the simulator).
    #[must_use]
    pub fn get(&self, value: E) -> u64 {
        self.by_value.get(value.index()).map_or(0, Counter::get)
    }
}
