//! `--metrics`: the server's counters, and the Prometheus text format over HTTP, with
//! the probes `/healthz` and `/readyz` beside it.
//!
//! The counters are relaxed atomics bumped where each event happens; per-connection
//! counts (replies, bytes) are folded in once, when the connection closes. A scrape
//! reads them, and the live-connection count once under the registry's lock, on the
//! metrics thread of its own: it never holds up accepting or serving.
//!
//! One job per file: `counters` (the counters and a scrape's snapshot of them),
//! `text_format` (the Prometheus text writer), `responder` (the HTTP side, the probes
//! included), and `proc_status` (the thread count from `/proc`).

mod counters;
mod proc_status;
mod responder;
mod text_format;

pub use counters::{Counters, Refusal, Snapshot};
pub use proc_status::{threads, threads_in_status};
pub use responder::{MAX_SCRAPERS, Pages, Responding, SCRAPE_TIMEOUT, listen, spawn};
pub use text_format::{MetricType, TextFormat};
