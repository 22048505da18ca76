//! `par_map`: a map over a vector on up to one scoped thread per core, keeping the order. The plan
//! loader parses files with it and the planner compiles, keys and stats tasks with it, so a large
//! no-op build uses both cores. And [`blocking`]: blocking work run from the async runtime.

/// Maps `f` over `items` on up to one thread per core, keeping the order.
pub(crate) fn par_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(items.len());
    if threads <= 1 {
        return items.into_iter().map(f).collect();
    }
    let len = items.len();
    let mut buckets: Vec<Vec<(usize, T)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        buckets[i % threads].push((i, item));
    }
    let mut out: Vec<Option<R>> = (0..len).map(|_| None).collect();
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> = buckets
            .into_iter()
            .map(|bucket| {
                scope.spawn(move || {
                    bucket
                        .into_iter()
                        .map(|(i, item)| (i, f(item)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for worker in workers {
            let done = worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            for (i, result) in done {
                out[i] = Some(result);
            }
        }
    });
    out.into_iter()
        .map(|r| r.expect("every item was given to a worker"))
        .collect()
}

/// Runs blocking work (planning: SQLite reads, hashing files) without holding an async worker: on
/// the multi-threaded runtime the worker hands its other tasks to the rest of the pool while `f`
/// runs (`block_in_place`). Planning borrows the project and returns what borrows it, so it cannot
/// move to a `spawn_blocking` thread, which needs `'static`. Outside such a runtime `f` just runs.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
