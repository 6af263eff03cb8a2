//! Finding the entries a store refuses inside a batch it would otherwise take whole.
//!
//! A handler applies a batch in one call (one transaction) for speed. When the store
//! refuses that call because of the values in it (a NUL byte, a number out of range, a
//! violated constraint), retrying the same call would fail forever and pin the stream.
//! [`isolate`] instead applies the batch in halves, and each refused half in halves
//! again, in stream order, until every item is either applied or refused alone. Items
//! refused alone are the ones to skip; all others are applied exactly once, in order.
//!
//! With `k` refused items among `n`, it takes about `2·k·log2(n/k)` extra calls; a batch
//! the store takes whole costs one call, as before. Items the caller already suspects (it
//! saw them, or their game, refused before) go in calls of their own from the start, so a
//! refusal that recurs costs about two extra calls instead of the search.

/// What [`isolate`] did with a batch.
#[derive(Debug)]
pub struct Isolated<R, E> {
    /// One result per item of the leading part that was handled, in order: the store's
    /// result, or the refusal that came back when the item was applied alone.
    pub results: Vec<Result<R, E>>,
    /// The failure that was not a refusal (a transient one, say) and stopped the work.
    /// Items after `results` were not applied; those in `results` were, and must not be
    /// applied again.
    pub stopped: Option<E>,
}

/// Applies `items` through `apply`, which takes a run of consecutive items in one call (with
/// the index of its first item in `items`) and returns one result per item. Items for which `suspect` is true are applied alone, the
/// runs between them each in one call. A call that fails with an error for which
/// `is_refusal` is true is split in two and each half applied in turn; an item refused
/// alone gets its refusal as its result. Any other error stops the work (see
/// [`Isolated::stopped`]).
///
/// `apply` must return exactly one result per item it was given (the workers' closures
/// check what their store returned and fail otherwise).
pub async fn isolate<'a, T, R, E, F, Fut>(
    items: &'a [T],
    mut apply: F,
    is_refusal: impl Fn(&E) -> bool,
    suspect: impl Fn(&T) -> bool,
) -> Isolated<R, E>
where
    F: FnMut(usize, &'a [T]) -> Fut,
    Fut: Future<Output = Result<Vec<R>, E>>,
{
    let mut results = Vec::with_capacity(items.len());
    // Runs still to apply, the next one on top: popping keeps stream order.
    let mut runs = first_runs(items, suspect);
    while let Some((start, end)) = runs.pop() {
        if start == end {
            continue;
        }
        match apply(start, &items[start..end]).await {
            Ok(applied) => {
                debug_assert_eq!(applied.len(), end - start, "one result per item");
                results.extend(applied.into_iter().map(Ok));
            }
            Err(error) if is_refusal(&error) && end - start > 1 => split(&mut runs, start, end),
            Err(error) if is_refusal(&error) => results.push(Err(error)),
            Err(error) => {
                return Isolated {
                    results,
                    stopped: Some(error),
                };
            }
        }
    }
    Isolated {
        results,
        stopped: None,
    }
}

/// The runs to try first, last one first: each suspect alone, the items between them
/// together (one run of everything when nothing is suspect).
fn first_runs<T>(items: &[T], suspect: impl Fn(&T) -> bool) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = 0;
    for (i, item) in items.iter().enumerate() {
        if suspect(item) {
            runs.push((start, i));
            runs.push((i, i + 1));
            start = i + 1;
        }
    }
    runs.push((start, items.len()));
    runs.retain(|(s, e)| s < e);
    runs.reverse();
    runs
}

fn split(runs: &mut Vec<(usize, usize)>, start: usize, end: usize) {
    let middle = start + (end - start) / 2;
    runs.push((middle, end));
    runs.push((start, middle));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, PartialEq)]
    enum Fail {
        Refused(u32),
        Down,
    }

    /// A store that refuses every call holding a "bad" item and records what it applied.
    fn run(
        items: &[u32],
        bad: &[u32],
        down_after: Option<usize>,
    ) -> (Isolated<u32, Fail>, Vec<u32>, usize) {
        run_suspecting(items, bad, down_after, &[])
    }

    /// [`run`], with `suspects` applied alone from the start.
    fn run_suspecting(
        items: &[u32],
        bad: &[u32],
        down_after: Option<usize>,
        suspects: &[u32],
    ) -> (Isolated<u32, Fail>, Vec<u32>, usize) {
        let mut applied = Vec::new();
        let mut calls = 0;
        let outcome = block_on(isolate(
            items,
            |start, run: &[u32]| {
                assert_eq!(run.first(), items.get(start), "the run starts at its index");
                calls += 1;
                let result = if down_after.is_some_and(|n| applied.len() >= n) {
                    Err(Fail::Down)
                } else if let Some(b) = run.iter().find(|i| bad.contains(i)) {
                    Err(Fail::Refused(*b))
                } else {
                    applied.extend_from_slice(run);
                    Ok(run.iter().map(|i| i * 10).collect())
                };
                std::future::ready(result)
            },
            |e| matches!(e, Fail::Refused(_)),
            |i| suspects.contains(i),
        ));
        (outcome, applied, calls)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .map(|rt| rt.block_on(f))
            .unwrap_or_else(|e| panic!("runtime: {e}"))
    }

    #[test]
    fn a_batch_the_store_takes_costs_one_call() {
        let (outcome, applied, calls) = run(&[1, 2, 3], &[], None);
        assert_eq!(calls, 1);
        assert_eq!(applied, [1, 2, 3]);
        assert!(outcome.stopped.is_none());
        assert_eq!(outcome.results, [Ok(10), Ok(20), Ok(30)]);
    }

    #[test]
    fn refused_items_are_pinned_and_the_rest_applied_once_in_order() {
        let items: Vec<u32> = (0..16).collect();
        let (outcome, applied, _) = run(&items, &[3, 4, 15], None);
        assert!(outcome.stopped.is_none());
        let expected: Vec<u32> = items
            .iter()
            .copied()
            .filter(|i| ![3, 4, 15].contains(i))
            .collect();
        assert_eq!(applied, expected);
        let refused: Vec<usize> = outcome
            .results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_err())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(refused, [3, 4, 15]);
        assert_eq!(outcome.results[3], Err(Fail::Refused(3)));
    }

    #[test]
    fn another_failure_stops_after_what_was_applied() {
        let items: Vec<u32> = (0..8).collect();
        let (outcome, applied, _) = run(&items, &[6], Some(4));
        assert_eq!(applied, [0, 1, 2, 3]);
        assert_eq!(outcome.results, [Ok(0), Ok(10), Ok(20), Ok(30)]);
        assert_eq!(outcome.stopped, Some(Fail::Down));
    }

    #[test]
    fn suspects_go_alone_from_the_start_so_a_recurring_refusal_costs_no_search() {
        let items: Vec<u32> = (0..1000).collect();
        let (outcome, applied, calls) = run_suspecting(&items, &[10, 500], None, &[10, 500]);
        assert_eq!(calls, 5, "before, 10, between, 500, after");
        assert_eq!(applied.len(), 998);
        assert!(outcome.results[10].is_err() && outcome.results[500].is_err());
        // A suspect the store takes now is simply applied, in its place.
        let (outcome, applied, _) = run_suspecting(&items[..5], &[], None, &[2]);
        assert_eq!(applied, [0, 1, 2, 3, 4]);
        assert!(outcome.results.iter().all(Result::is_ok));
    }

    proptest! {
        #[test]
        fn every_item_is_applied_once_or_refused_alone(
            n in 0_u32..200,
            bad in proptest::collection::vec(0_u32..200, 0..20),
            suspects in proptest::collection::vec(0_u32..200, 0..10),
        ) {
            let items: Vec<u32> = (0..n).collect();
            let (outcome, applied, calls) = run_suspecting(&items, &bad, None, &suspects);
            prop_assert!(outcome.stopped.is_none());
            prop_assert_eq!(outcome.results.len(), items.len());
            let good: Vec<u32> = items.iter().copied().filter(|i| !bad.contains(i)).collect();
            prop_assert_eq!(&applied, &good);
            for (item, result) in items.iter().zip(&outcome.results) {
                prop_assert_eq!(result.is_err(), bad.contains(item));
            }
            let k = items.iter().filter(|i| bad.contains(i)).count();
            let depth = usize::try_from(n.max(1).ilog2()).unwrap_or(0) + 1;
            let s = items.iter().filter(|i| suspects.contains(i)).count();
            prop_assert!(calls <= 1 + 2 * s + 2 * k * depth, "{} calls for {} refused of {}", calls, k, n);
        }
    }
}
