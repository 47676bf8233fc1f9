//! Plugin calls off the async workers.
//!
//! A plugin call is synchronous CPU work bounded by its deadline (50 ms by default). Run on a
//! tokio worker, a plugin spinning to its deadline holds that worker for the whole deadline, and
//! with two workers two such calls stop every listener of the engine: MLLP connections of
//! unrelated pipelines wait for their ACKs. [`offload`] runs the call on a small pool of
//! threads of its own instead, and the async task waits for the answer without holding a
//! worker.
//!
//! * **Bounded.** The pool has as many threads as the machine has cores (at least two), so
//!   spinning plugins can use the cores but never more threads than there are cores; calls
//!   beyond that wait in a queue (the runner's per-pipeline concurrency bounds how many).
//! * **Below the listeners.** On Linux the pool's threads run at a lower scheduling priority
//!   (nice +5, best effort): when plugins keep every core busy, the tokio workers that accept
//!   connections, commit to the journal and send ACKs still get the CPU first.
//! * **Outside a runtime** (tests, the CLI's `plugin test`) the call simply runs on the caller's
//!   thread.
//!
//! The cost is one hand-over each way (a few microseconds), paid only by messages that go
//! through a plugin.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The pool's queue (its threads share the receiving end).
struct Pool {
    jobs: Mutex<Sender<Job>>,
    threads: usize,
}

/// The niceness of the pool's threads (Linux; ignored elsewhere).
const NICE: i32 = 5;

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(2);
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("hz-plugin-{i}"))
                .spawn(move || worker(&rx))
                .expect("spawning a plugin call thread");
        }
        Pool {
            jobs: Mutex::new(tx),
            threads,
        }
    })
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    lower_priority();
    loop {
        // The lock is held only while waiting for the next job, never while running it.
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // On Linux, setpriority(PRIO_PROCESS, tid) sets one thread's niceness. Best effort: a
    // refusal (a container that forbids it) leaves the thread at the default priority.
    let tid = rustix::thread::gettid();
    let _ = rustix::process::setpriority_process(Some(tid), NICE);
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// How many threads the pool has (made on first use).
pub fn threads() -> usize {
    pool().threads
}

/// Runs `f` on the plugin call pool and waits for it without holding an async worker. Outside
/// a tokio runtime, runs `f` here. A panic in `f` is raised again in the caller.
pub async fn offload<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(out);
    });
    let sent = match pool().jobs.lock() {
        Ok(jobs) => jobs.send(job),
        Err(poisoned) => poisoned.into_inner().send(job),
    };
    if let Err(std::sync::mpsc::SendError(job)) = sent {
        // The pool's threads are gone (they never exit while the process runs): run here.
        job();
    }
    match rx.await {
        Ok(Ok(v)) => v,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => unreachable!("a plugin pool job always answers before it is dropped"),
    }
}

/// For synchronous callers (a domain port called from async code): inside a multi-threaded
/// tokio runtime, tells the runtime that this worker is about to block so its other tasks move
/// to another thread, then runs `f`; anywhere else runs `f` directly.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_and_raises_panics_again() {
        assert_eq!(offload(|| 6 * 7).await, 42);
        let r = tokio::spawn(offload(|| -> u8 { panic!("boom") })).await;
        assert!(r.unwrap_err().is_panic());
        assert!(threads() >= 2);
        assert_eq!(blocking(|| 1), 1);
    }

    #[test]
    fn runs_on_the_caller_outside_a_runtime() {
        let here = std::thread::current().id();
        let there = futures::executor::block_on(offload(move || std::thread::current().id()));
        assert_eq!(here, there);
    }
}
