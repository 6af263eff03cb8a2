//! A stream, an offset store and a dead-letter stream in memory, for unit tests that drive
//! the real runtime with a real worker and no server: append entries, step the
//! [`Consumer`](crate::Consumer), look at the offset and the dead letters.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use contracts::dead_letters::DeadLetter;

use crate::entry::{EntryId, StreamEntry};
use crate::ports::{DeadLetterSink, StreamError, StreamInfo, StreamOffsetStore, StreamReader};

#[derive(Debug, Default)]
struct State {
    streams: BTreeMap<String, Vec<StreamEntry>>,
    offsets: BTreeMap<String, EntryId>,
    dead: Vec<DeadLetter>,
    /// Ids given out, per stream: `<n>-0` for the n-th entry appended.
    appended: BTreeMap<String, u64>,
}

/// The in-memory server; clones share it. It is the reader, the offset store and the
/// dead-letter sink at once.
#[derive(Debug, Clone, Default)]
pub struct MemoryStreams(Arc<Mutex<State>>);

impl MemoryStreams {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends an entry of `pairs` to `stream` under the next id (`1-0`, `2-0`, …).
    pub fn append<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        stream: &str,
        pairs: &[(K, V)],
    ) -> EntryId {
        let mut state = self.state();
        let n = state.appended.entry(stream.to_owned()).or_default();
        *n += 1;
        let id = EntryId::new(*n, 0);
        let entry = StreamEntry::from_pairs(id, pairs);
        state
            .streams
            .entry(stream.to_owned())
            .or_default()
            .push(entry);
        id
    }

    /// The stored offset of `label`.
    #[must_use]
    pub fn offset(&self, label: &str) -> Option<EntryId> {
        self.state().offsets.get(label).copied()
    }

    /// Every dead letter kept so far.
    #[must_use]
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.state().dead.clone()
    }
}

#[async_trait]
impl StreamReader for MemoryStreams {
    /// Never blocks: an empty answer stands for a read that timed out.
    async fn read_after(
        &self,
        stream: &str,
        after: EntryId,
        count: usize,
        _block: Duration,
    ) -> Result<Vec<StreamEntry>, StreamError> {
        let state = self.state();
        Ok(state
            .streams
            .get(stream)
            .into_iter()
            .flatten()
            .filter(|e| e.id > after)
            .take(count.max(1))
            .cloned()
            .collect())
    }

    async fn info(&self, stream: &str) -> Result<Option<StreamInfo>, StreamError> {
        let state = self.state();
        Ok(state.streams.get(stream).map(|entries| StreamInfo {
            length: entries.len() as u64,
            first_entry: entries.first().map(|e| e.id),
            last_generated: entries.last().map_or(EntryId::ZERO, |e| e.id),
            max_deleted: None,
        }))
    }
}

#[async_trait]
impl StreamOffsetStore for MemoryStreams {
    async fn load(&self, label: &str) -> Result<Option<EntryId>, StreamError> {
        Ok(self.offset(label))
    }

    async fn save(&self, label: &str, id: EntryId) -> Result<(), StreamError> {
        self.state().offsets.insert(label.to_owned(), id);
        Ok(())
    }
}

#[async_trait]
impl DeadLetterSink for MemoryStreams {
    async fn keep(&self, letters: &[DeadLetter]) -> Result<(), StreamError> {
        self.state().dead.extend_from_slice(letters);
        Ok(())
    }
}
