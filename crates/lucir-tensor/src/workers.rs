//! Keeping rayon's workers awake through a stretch of parallel regions (a training step).
//!
//! A step runs a few hundred parallel regions (a convolution pass, a batch norm, an add), most
//! of them well under a millisecond. Between two regions a worker with nothing to do yields a
//! few dozen times and then sleeps; the next region wakes it (a futex call, and where the CPU
//! it ran on went idle, that CPU's wake-up as well), and the region waits on the slowest
//! worker, so every region pays that latency. [`with_workers_awake`] runs the step on one worker
//! while the others poll for work (`rayon::yield_now`) instead of sleeping.
//!
//! Only who runs which job changes: every op splits its work and combines the parts in an
//! order fixed by the thread count alone, so the results are the same bits either way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::Device;

/// How long a polling worker goes on without finding work before it stops polling (and falls
/// back to rayon's own idling): a bound on the core time a long serial stretch can cost.
const GIVE_UP: Duration = Duration::from_millis(1);

/// Runs `f` on a worker of the current rayon pool while the pool's other workers poll for work
/// instead of sleeping, and returns its result. With one thread, `f` just runs on that worker.
///
/// Each other worker runs a poller: it executes whatever job it finds (`rayon::yield_now`),
/// yields its CPU between looks (`std::thread::yield_now`: no sleep, but any other runnable
/// thread goes first), and stops when `f` has returned or after 1 ms without a job. The
/// pollers are queued on the calling worker before `f` starts, so idle workers, which steal
/// the oldest job first, take them before any of `f`'s jobs. Should the calling worker itself
/// run one (it may, while it waits inside `f` for a job another worker took), that poller too
/// executes only pending work and returns once there has been none for 1 ms: a delay, never a
/// deadlock.
pub fn with_workers_awake<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let others = rayon::current_num_threads().saturating_sub(1);
    let done = AtomicBool::new(false);
    rayon::scope(|s| {
        for _ in 0..others {
            s.spawn(|_| poll(&done));
        }
        let result = f();
        done.store(true, Ordering::Release);
        result
    })
}

/// `f` on the pool as [`with_workers_awake`] runs it when `device` is the CPU; on a CUDA device
/// `f` as it is (the host only queues the device's work, and a polling core would be spent for
/// nothing).
pub fn with_workers_awake_on<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    match device {
        Device::Cpu => with_workers_awake(f),
        Device::Cuda(_) => f(),
    }
}

/// A poller of [`with_workers_awake`]: runs pending jobs until `done`, or until none has come
/// for [`GIVE_UP`].
fn poll(done: &AtomicBool) {
    let mut last_job = Instant::now();
    while !done.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => last_job = Instant::now(),
            _ if last_job.elapsed() > GIVE_UP => return,
            // Any other runnable thread on this CPU (more threads than cores, another
            // process) gets it; with none, the call returns at once and the CPU stays awake.
            _ => std::thread::yield_now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    /// `f` runs on a worker of the pool, its result comes back with its parallel work done in
    /// full, and the call returns (the pollers end): at 1, 2 and 3 threads, twice in a row.
    #[test]
    fn runs_f_on_the_pool_and_returns() {
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for _ in 0..2 {
                let (on_worker, sum) = pool.install(|| {
                    with_workers_awake(|| {
                        let on_worker = rayon::current_thread_index().is_some();
                        let sum: u64 = (0..100_000u64).into_par_iter().map(|i| i * i).sum();
                        (on_worker, sum)
                    })
                });
                assert!(on_worker, "{threads} threads");
                assert_eq!(sum, (0..100_000u64).map(|i| i * i).sum::<u64>());
            }
        }
    }

    /// Called from outside any pool (as a program's main thread does), `f` still runs on a
    /// worker of the global pool, also through `with_workers_awake_on` the CPU.
    #[test]
    fn from_outside_the_pool_f_runs_on_a_worker() {
        assert!(rayon::current_thread_index().is_none());
        assert!(with_workers_awake(
            || rayon::current_thread_index().is_some()
        ));
        assert!(with_workers_awake_on(&Device::Cpu, || {
            rayon::current_thread_index().is_some()
        }));
    }

    /// A poller stops on its own after [`GIVE_UP`] without work, even though `done` is never
    /// set (the case of the calling worker running one).
    #[test]
    fn a_poller_without_work_gives_up() {
        let done = AtomicBool::new(false);
        let t = Instant::now();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        pool.install(|| poll(&done));
        assert!(t.elapsed() >= GIVE_UP);
    }
}
