//! One connection's I/O: reads bytes, lets [`crate::protocol`] decide, writes replies.
//!
//! [`serve`] works over any `Read + Write` stream (a `TcpStream`, a TLS stream, a test
//! double) and learns everything else (peer, timeouts, shutdown) from its caller.
//! Replies to everything one read brought are sent in one write, and nothing is
//! allocated per line.
//!
//! One job per file: `context` (what connections share and are told), `outcome` (how
//! one ended), `transport` (what it speaks over), `buffers` (stack and pooled
//! buffers), `serve` (the entry points and the three serving loops), `answer` (what is
//! said to each message), `output` (queueing and writing it), `fault` (where
//! `--fault` acts), `lifetime` (`--max-lifetime`'s end of life), `traced` (a transport
//! shown in `--trace`).

mod answer;
mod buffers;
mod context;
mod fault;
mod lifetime;
mod outcome;
mod output;
mod serve;
mod traced;
mod transport;

pub use buffers::{SMALL_INPUT, SMALL_OUTPUT};
pub use context::{Context, OUTPUT_MAX, POOL_IDLE_BYTES, Peer};
pub use outcome::{CloseReason, Summary};
pub use serve::{
    SHUTDOWN_READ_BUDGET, SHUTDOWN_READ_TIMEOUT, serve, serve_welcomed, serve_who,
    serve_with_values, welcome,
};
pub use traced::Traced;
pub use transport::Transport;
