//! What every connection shares ([`Context`]: settings, buffer pool, shutdown flag,
//! timeouts) and what it is told about itself ([`Peer`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::fault::Faults;
use crate::pool::BufferPool;
use crate::protocol::Settings;

/// The largest output buffer a busy connection borrows; larger replies are sent in pieces.
pub const OUTPUT_MAX: usize = 1024 * 1024;
/// Bytes of idle large buffers the pool keeps for the next burst: 64 pairs of the default
/// 64 KiB + 64 KiB. With a long `--max-line` the pairs are larger and fewer are kept.
pub const POOL_IDLE_BYTES: usize = 64 * 128 * 1024;

/// How many idle pairs of `pair_bytes` the pool keeps (none if one pair is over budget).
fn idle_pairs(pair_bytes: usize) -> usize {
    POOL_IDLE_BYTES / pair_bytes.max(1)
}

/// What every connection shares: settings, buffers, and the server's shutdown flag.
#[derive(Debug)]
pub struct Context {
    /// The protocol's settings.
    pub settings: Settings,
    /// Large buffers for bursts.
    pub pool: BufferPool,
    /// Set when the server is shutting down; reads then end once buffered input is used up.
    pub shutting_down: AtomicBool,
    /// The idle timeout the caller set on streams, for the notice; `None` if there is none.
    pub idle_timeout: Option<Duration>,
    /// Wait before each reply.
    pub delay: Duration,
    /// The write timeout the caller set on streams; `None` if there is none.
    pub write_timeout: Option<Duration>,
    /// `--fault`: misbehaving on purpose; `None` without it.
    pub faults: Option<Arc<Faults>>,
    /// `--max-lifetime`: connections end this old, less a jitter (see
    /// [`lifetime`](super::lifetime)); `None`: never.
    pub max_lifetime: Option<Duration>,
}

impl Context {
    /// A context whose buffer pool fits `settings`.
    pub fn new(settings: Settings, idle_timeout: Option<Duration>, delay: Duration) -> Self {
        let input = (64 * 1024).max(settings.max_message() + 1 + 16 * 1024);
        // Replies larger than this go out in pieces (see `send`), so a long
        // --max-line or a template with many `{}` does not grow every busy connection.
        let output = (64 * 1024).max(2 * settings.max_answer()).min(OUTPUT_MAX);
        Context {
            pool: BufferPool::new(input, output, idle_pairs(input + output)),
            settings,
            shutting_down: AtomicBool::new(false),
            idle_timeout,
            delay,
            write_timeout: None,
            faults: None,
            max_lifetime: None,
        }
    }
}

/// Who is on the other end, for log lines and the templates' `{conn}`, `{peer}` and
/// `{local}`.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The server's number for this connection.
    pub id: u64,
    /// The client's address, as the caller knows it.
    pub addr: SocketAddr,
    /// The address the client reached (the accepted socket's local address) when a
    /// template shows it ([`Settings::shows_local`](crate::protocol::Settings::shows_local)),
    /// else the unspecified address: looking it up costs a system call per connection.
    pub local: SocketAddr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_keeps_64_default_pairs_idle_and_no_oversized_ones() {
        assert_eq!(idle_pairs(128 * 1024), 64);
        assert_eq!(idle_pairs(48 << 20), 0);
        let settings = Settings {
            max_line: 16 << 20,
            ..Settings::default()
        };
        let ctx = Context::new(settings, None, Duration::ZERO);
        assert_eq!(ctx.pool.output_size(), OUTPUT_MAX);
        let ctx = Context::new(Settings::default(), None, Duration::ZERO);
        assert_eq!(ctx.pool.output_size(), 64 * 1024);
    }
}
