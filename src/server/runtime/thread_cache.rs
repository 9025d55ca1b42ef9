//! The thread cache: connection threads that finish park for a while, and the next
//! connection runs on one of them instead of on a new thread.
//!
//! Each connection still owns one thread for its whole life; only the thread's start
//! is saved. Starting a thread is most of what a short connection costs the server:
//! `clone3` with its kernel stack and accounting, the stack's mapping and guard page,
//! std's signal stack (three `sigaltstack`, an `mmap`, an `mprotect`, a `munmap`),
//! glibc's per-thread set-up and the `madvise` at its end, and the page faults of a
//! fresh stack (README, "Connection rate"). MySQL keeps finished connection threads
//! the same way (`thread_cache_size`).

use std::io;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use nix::sys::pthread::{Pthread, pthread_self};

use crate::sync::lock;

/// Work for a connection thread.
pub(in crate::server) type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long a parked thread waits for a connection before it ends, so that the memory
/// of a burst's threads is given back once the burst is over.
pub const PARKED_FOR: Duration = Duration::from_secs(30);

/// Threads of one stack size, parked between connections; at most `capacity` of them.
pub(super) struct ThreadCache {
    stack_size: usize,
    capacity: usize,
    /// Parked threads, the most recently parked last: the next connection takes it,
    /// whose stack and allocator cache are the likeliest still to be warm.
    parked: Mutex<Vec<Arc<Parked>>>,
}

/// A parked thread's mailbox.
struct Parked {
    job: Mutex<Option<Job>>,
    arrived: Condvar,
    thread: Pthread,
}

impl ThreadCache {
    /// A cache of at most `capacity` parked threads (0: every thread ends with its
    /// connection), each with a stack of `stack_size` bytes.
    pub(super) fn new(stack_size: usize, capacity: usize) -> Arc<ThreadCache> {
        Arc::new(ThreadCache {
            stack_size,
            capacity,
            parked: Mutex::new(Vec::with_capacity(capacity.min(1024))),
        })
    }

    /// Runs `job` on a parked thread, or on a new one if none is parked; returns the
    /// thread, so that shutdown can interrupt its reads.
    pub(super) fn run(self: &Arc<Self>, job: Job) -> io::Result<Pthread> {
        let parked = self.lock_parked().pop();
        if let Some(parked) = parked {
            *lock(&parked.job) = Some(job);
            parked.arrived.notify_one();
            return Ok(parked.thread);
        }
        let cache = Arc::clone(self);
        let handle = thread::Builder::new()
            .stack_size(self.stack_size)
            .spawn(move || cache.work(job))?;
        Ok(std::os::unix::thread::JoinHandleExt::as_pthread_t(&handle))
    }

    /// How many threads are parked now.
    #[cfg(test)]
    fn parked(&self) -> usize {
        self.lock_parked().len()
    }

    /// A cached thread's life: a job, then parking for the next, until the cache is
    /// full or no job comes for [`PARKED_FOR`].
    fn work(&self, first: Job) {
        let mut job = first;
        // Made at the first park, not before: a thread that serves one long connection
        // never needs it, and every byte allocated on its behalf is held as long.
        let mut mailbox = None;
        loop {
            job();
            let mailbox = mailbox.get_or_insert_with(|| {
                Arc::new(Parked {
                    job: Mutex::new(None),
                    arrived: Condvar::new(),
                    thread: pthread_self(),
                })
            });
            match self.park(mailbox) {
                Some(next) => job = next,
                None => return,
            }
        }
    }

    /// Waits for the next job, or returns `None` when this thread should end.
    fn park(&self, mailbox: &Arc<Parked>) -> Option<Job> {
        {
            let mut parked = self.lock_parked();
            if parked.len() >= self.capacity {
                return None;
            }
            parked.push(Arc::clone(mailbox));
        }
        let mut slot = lock(&mailbox.job);
        loop {
            if let Some(job) = slot.take() {
                return Some(job);
            }
            let (guard, wait) = mailbox
                .arrived
                .wait_timeout(slot, PARKED_FOR)
                .unwrap_or_else(PoisonError::into_inner);
            slot = guard;
            if wait.timed_out() && slot.is_none() {
                drop(slot);
                let mut parked = self.lock_parked();
                if let Some(at) = parked.iter().position(|p| Arc::ptr_eq(p, mailbox)) {
                    parked.remove(at);
                    return None;
                }
                drop(parked);
                // Taken from the cache as the wait ended: its job is on the way.
                slot = lock(&mailbox.job);
            }
        }
    }

    fn lock_parked(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Parked>>> {
        lock(&self.parked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if done() {
                return true;
            }
            thread::yield_now();
        }
        done()
    }

    #[test]
    fn a_finished_thread_runs_the_next_job() {
        let cache = ThreadCache::new(64 * 1024, 4);
        let (tx, rx) = mpsc::channel();
        let first = tx.clone();
        let t1 = cache
            .run(Box::new(move || first.send(pthread_self()).unwrap()))
            .unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), t1);
        assert!(wait_for(Duration::from_secs(10), || cache.parked() == 1));
        let t2 = cache
            .run(Box::new(move || tx.send(pthread_self()).unwrap()))
            .unwrap();
        assert_eq!(t2, t1, "the parked thread is reused");
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), t1);
    }

    #[test]
    fn no_more_than_capacity_threads_park() {
        let cache = ThreadCache::new(64 * 1024, 2);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let (done_tx, done_rx) = mpsc::channel();
        for _ in 0..5 {
            let (release, done) = (Arc::clone(&release_rx), done_tx.clone());
            cache
                .run(Box::new(move || {
                    let _ = release.lock().unwrap().recv();
                    done.send(()).unwrap();
                }))
                .unwrap();
        }
        for _ in 0..5 {
            release_tx.send(()).unwrap();
        }
        for _ in 0..5 {
            done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        assert!(wait_for(Duration::from_secs(10), || cache.parked() == 2));
        assert_eq!(cache.parked(), 2);
    }

    #[test]
    fn a_cache_of_zero_keeps_no_thread() {
        let cache = ThreadCache::new(64 * 1024, 0);
        let (tx, rx) = mpsc::channel();
        let t1 = cache.run(Box::new(move || tx.send(()).unwrap())).unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(cache.parked(), 0);
        assert_ne!(t1, 0);
    }

    #[test]
    fn a_panicking_job_ends_its_thread_only() {
        let cache = ThreadCache::new(64 * 1024, 4);
        cache
            .run(Box::new(|| panic!("deliberate panic in a job")))
            .unwrap();
        let (tx, rx) = mpsc::channel();
        cache.run(Box::new(move || tx.send(()).unwrap())).unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }
}
