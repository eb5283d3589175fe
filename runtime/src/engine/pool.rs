//! The threads one model runs on: started at load, kept for the model's life. A step split
//! into tasks is handed to every worker at once; the calling thread takes tasks too. Workers
//! spin briefly between steps (a layer of a small network takes tens of microseconds, less
//! than a sleeping thread takes to wake) and sleep when the model is idle.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A job's tasks, as the workers see it: the closure with its lifetime erased (the caller
/// waits until every worker has let go of it).
type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// Incremented for each job; a worker runs a job when it sees a new value.
    generation: AtomicUsize,
    job: Mutex<Option<SendJob>>,
    tasks: AtomicUsize,
    next: AtomicUsize,
    /// Workers that have not finished the current job.
    busy: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    sleep: Mutex<()>,
    wake: Condvar,
}

#[derive(Clone, Copy)]
struct SendJob(Job);
// SAFETY: the closure is `Sync`, and `Pool::run` keeps it alive until every worker is done.
unsafe impl Send for SendJob {}

/// Worker threads for one model.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Held while a job runs: a second caller (another thread sharing the model) runs its
    /// job on its own thread instead of waiting.
    running: Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} threads)", self.threads())
    }
}

/// How long an idle worker spins before sleeping.
const SPIN: Duration = Duration::from_micros(200);

impl Pool {
    /// `threads` in all: the caller plus `threads - 1` workers.
    pub fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            job: Mutex::new(None),
            tasks: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("edgekd-worker-{i}"))
                    .spawn(move || worker(&s))
                    .expect("the OS refused to start a thread")
            })
            .collect();
        Pool {
            shared,
            workers,
            running: Mutex::new(()),
        }
    }

    /// Threads a job may use.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(0..tasks)`, each task once, across the threads; returns when all are done.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let guard = if self.workers.is_empty() || tasks <= 1 {
            None
        } else {
            self.running.try_lock().ok()
        };
        let Some(_guard) = guard else {
            (0..tasks).for_each(f);
            return;
        };
        let s = &*self.shared;
        // SAFETY (lifetime erasure): this function does not return before `busy` is zero,
        // after which no worker touches the job.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(SendJob(job));
        s.tasks.store(tasks, Ordering::Relaxed);
        s.next.store(0, Ordering::Relaxed);
        s.busy.store(self.workers.len(), Ordering::Relaxed);
        s.generation.fetch_add(1, Ordering::Release);
        {
            let _l = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        // The workers must be done with `f` before this returns, even when a task panics.
        let mine = catch_unwind(AssertUnwindSafe(|| take_tasks(s, f)));
        while s.busy.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::Relaxed) {
            panic!("a worker thread panicked");
        }
    }
}

fn take_tasks(s: &Shared, f: &(dyn Fn(usize) + Sync)) {
    let tasks = s.tasks.load(Ordering::Relaxed);
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= tasks {
            break;
        }
        f(i);
    }
}

fn worker(s: &Shared) {
    let mut seen = 0;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.shutdown.load(Ordering::Acquire) {
                return;
            }
            if s.generation.load(Ordering::Acquire) != seen {
                break;
            }
            spins += 1;
            if !spins.is_multiple_of(64) || start.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let l = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            if s.generation.load(Ordering::Acquire) == seen && !s.shutdown.load(Ordering::Acquire) {
                let _l = s.wake.wait_timeout(l, Duration::from_millis(50));
            }
        }
        seen = s.generation.load(Ordering::Acquire);
        let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(SendJob(job)) = job {
            // SAFETY: the job outlives this use (see `Pool::run`).
            let f = unsafe { &*job };
            if catch_unwind(AssertUnwindSafe(|| take_tasks(s, f))).is_err() {
                s.panicked.store(true, Ordering::Relaxed);
            }
        }
        s.busy.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        {
            let _l = self.shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_across_threads_and_jobs() {
        let pool = Pool::new(3);
        for tasks in [0, 1, 2, 7, 100] {
            let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            pool.run(tasks, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn a_panicking_task_reaches_the_caller_and_the_pool_still_works() {
        let pool = Pool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(8, &|i| assert!(i != 5, "task 5"))
        }));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        pool.run(8, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 8);
    }
}
