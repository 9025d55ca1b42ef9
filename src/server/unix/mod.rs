//! Unix stream sockets (`--bind unix:PATH`): the protocol, the limits and graceful
//! shutdown of TCP connections, on a socket file instead of a port, for a sidecar or a
//! local test harness. A Unix connection is served by
//! [`serve_with_values`](crate::connection::serve_with_values) over a `&UnixStream`, on a
//! thread of the same runtime; it has its place in the same registry, so shutdown tells
//! it as it tells a TCP one, and the metrics count it as one.
//!
//! - `listener`: the socket file: created with its mode, a stale one replaced only if
//!   nothing listens on it, removed when the server stops;
//! - `credentials`: who the client is (`{peer}`), as the kernel says;
//! - `lifecycle`: ONE Unix connection's life, top to bottom, as `super::lifecycle`
//!   tells a TCP connection's.
//!
//! Address rules, `--max-per-source`, PROXY headers and TLS are about IP addresses and
//! do not apply here: who may connect is the socket file's mode (`--unix-mode`).

mod credentials;
mod lifecycle;
mod listener;

pub(super) use credentials::Credentials;
pub(super) use lifecycle::start;
pub(super) use listener::{Listener, listen};
