//! A connection's input and output buffers: small ones on its thread's stack, a large
//! pair borrowed from the pool while a burst lasts.

use crate::pool::{BigBuffers, BufferPool};

/// Bytes of input kept on the thread's stack. Together with [`SMALL_OUTPUT`] it fits in
/// the stack pages every thread touches anyway (see the README's memory figures).
pub const SMALL_INPUT: usize = 512;
/// Bytes of output kept on the thread's stack.
pub const SMALL_OUTPUT: usize = 512;

/// Input and output buffers: small ones on the stack, a large pair from the pool
/// while a burst lasts.
pub(super) struct Buffers<'s> {
    pub(super) small_input: &'s mut [u8],
    pub(super) small_output: &'s mut [u8],
    pub(super) big: Option<BigBuffers>,
    /// Unprocessed input is `input()[start..end]`.
    pub(super) start: usize,
    pub(super) end: usize,
    /// Output waiting to be written is `output()[..out_len]`.
    pub(super) out_len: usize,
}

impl Buffers<'_> {
    pub(super) fn input(&mut self) -> &mut [u8] {
        match &mut self.big {
            Some(big) => &mut big.input,
            None => self.small_input,
        }
    }

    pub(super) fn output(&mut self) -> &mut [u8] {
        match &mut self.big {
            Some(big) => &mut big.output,
            None => self.small_output,
        }
    }

    /// The input buffer, read-only, beside the output buffer, writable.
    pub(super) fn split(&mut self) -> (&[u8], &mut [u8]) {
        match &mut self.big {
            Some(big) => (&big.input, &mut big.output),
            None => (self.small_input, self.small_output),
        }
    }

    pub(super) fn is_big(&self) -> bool {
        self.big.is_some()
    }

    /// Moves to a large pair from the pool; pending bytes keep their offsets, so
    /// indices into the input stay valid.
    pub(super) fn grow(&mut self, pool: &BufferPool) {
        if self.big.is_some() {
            return;
        }
        let mut big = pool.take();
        big.input[..self.end].copy_from_slice(&self.small_input[..self.end]);
        big.output[..self.out_len].copy_from_slice(&self.small_output[..self.out_len]);
        self.big = Some(big);
    }

    /// Goes back to the stack buffers, if what is pending fits there.
    pub(super) fn shrink(&mut self, pool: &BufferPool) {
        if self.big.is_none() {
            return;
        }
        self.compact();
        if self.end > self.small_input.len() / 2 || self.out_len > self.small_output.len() {
            return;
        }
        if let Some(big) = self.big.take() {
            self.small_input[..self.end].copy_from_slice(&big.input[..self.end]);
            self.small_output[..self.out_len].copy_from_slice(&big.output[..self.out_len]);
            pool.give(big);
        }
    }

    /// Moves pending input to the front of the buffer.
    pub(super) fn compact(&mut self) {
        let (start, end) = (self.start, self.end);
        if start > 0 {
            self.input().copy_within(start..end, 0);
            (self.start, self.end) = (0, end - start);
        }
    }
}
