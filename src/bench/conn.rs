//! One bench connection: where it is in its life ([`State`]) and what it holds
//! ([`Conn`]: socket, TLS state, buffers, names awaiting replies).

use std::collections::VecDeque;
use std::time::Instant;

use rustls::ClientConnection;

use super::stream::Stream;

use crate::protocol::ConnectionValues;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Not opened yet (in churn: between two connections).
    Pending,
    Connecting,
    /// Connected, in the TLS handshake (`--tls`).
    Handshake,
    /// Connected (and through the handshake), waiting for the welcome line.
    Welcome,
    /// Welcome received, waiting for the start.
    Ready,
    Running,
    /// `exit` sent, waiting for the server to close.
    Closing,
    Done,
}

pub(super) struct Conn {
    /// Number among all connections: sets its start time and its names.
    pub(super) id: u64,
    pub(super) state: State,
    /// When the current state began (for the connect, handshake, welcome and close
    /// timeouts).
    pub(super) since: Instant,
    /// When the connect began: the connect and the first reply are timed from here.
    pub(super) opened: Instant,
    pub(super) stream: Option<Stream>,
    /// With `--tls`: the connection's TLS state, beside its socket.
    pub(super) tls: Option<Box<ClientConnection>>,
    /// The server's first bytes were looked at and can begin TLS.
    pub(super) peeked: bool,
    /// The handshake's time in ns and whether it resumed a session, counted once the
    /// welcome shows that the server took it.
    pub(super) handshake: Option<(u64, bool)>,
    pub(super) rbuf: Box<[u8]>,
    pub(super) rlen: usize,
    pub(super) wbuf: Vec<u8>,
    pub(super) wpos: usize,
    /// When each name awaiting its reply was sent (in the open loop: was due), oldest
    /// first: its latency counts from there.
    pub(super) sent: VecDeque<Instant>,
    /// Number of the next name to send.
    pub(super) next_seq: u64,
    /// Churn: connections begun in this slot.
    pub(super) cycles: u64,
    /// Churn: nothing has gone wrong in this slot's current connection.
    pub(super) good: bool,
    /// It has a timer set (see `schedule`).
    pub(super) timer: bool,
    /// Its `{peer}` and `{local}`, when `--expect` shows them.
    pub(super) values: Option<Box<ConnectionValues>>,
}
