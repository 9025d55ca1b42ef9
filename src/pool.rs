//! Large I/O buffers shared by all connections.
//!
//! An idle connection owns no heap buffer: it waits in `read` with small buffers on
//! its thread's stack (pages the thread touches anyway). Only while a client sends
//! faster than a small buffer holds does its connection borrow a large pair from this
//! pool, and it gives the pair back as soon as the burst is over. Memory for buffers
//! therefore follows the number of busy connections, not the number of open ones.

use std::sync::Mutex;

use crate::sync::lock;

/// An input and an output buffer, borrowed together from a [`BufferPool`].
#[derive(Debug)]
pub struct BigBuffers {
    /// Received bytes.
    pub input: Box<[u8]>,
    /// Bytes waiting to be sent.
    pub output: Box<[u8]>,
}

/// A pool of [`BigBuffers`] of fixed sizes; at most `max_idle` pairs are kept while unused.
#[derive(Debug)]
pub struct BufferPool {
    input_size: usize,
    output_size: usize,
    max_idle: usize,
    idle: Mutex<Vec<BigBuffers>>,
}

impl BufferPool {
    /// A pool handing out pairs of `input_size` and `output_size` bytes.
    pub fn new(input_size: usize, output_size: usize, max_idle: usize) -> Self {
        BufferPool {
            input_size,
            output_size,
            max_idle,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The size of every input buffer.
    pub fn input_size(&self) -> usize {
        self.input_size
    }

    /// The size of every output buffer.
    pub fn output_size(&self) -> usize {
        self.output_size
    }

    /// Takes an idle pair, or allocates one.
    pub fn take(&self) -> BigBuffers {
        // A panic while the lock was held cannot leave the Vec inconsistent, so a
        // poisoned lock is still usable.
        let idle = lock(&self.idle).pop();
        idle.unwrap_or_else(|| BigBuffers {
            input: vec![0; self.input_size].into_boxed_slice(),
            output: vec![0; self.output_size].into_boxed_slice(),
        })
    }

    /// Returns a pair; it is freed if enough pairs are idle already.
    pub fn give(&self, buffers: BigBuffers) {
        let mut idle = lock(&self.idle);
        if idle.len() < self.max_idle {
            idle.push(buffers);
        }
    }

    /// How many pairs are idle in the pool.
    pub fn idle(&self) -> usize {
        lock(&self.idle).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_reused_up_to_max_idle() {
        let pool = BufferPool::new(16, 32, 1);
        let a = pool.take();
        assert_eq!((a.input.len(), a.output.len()), (16, 32));
        let b = pool.take();
        pool.give(a);
        pool.give(b);
        assert_eq!(pool.idle(), 1);
        let _c = pool.take();
        assert_eq!(pool.idle(), 0);
    }
}
