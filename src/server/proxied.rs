//! With `--proxy-protocol`: a connection's PROXY header, read first thing on its own
//! thread, and the checks that need the client's address it names: the address rules
//! and `--max-per-source`, the very ones the accept loop applies without a header.

use std::net::TcpStream;

use super::Shared;
use super::registry::Registered;
use crate::metrics::Refusal;
use crate::proxy::{self, HeaderError, ProxyProtocol, Source};
use crate::rules::source_key;

impl Shared {
    /// Reads the connection's PROXY header and admits the client it names: `registered`
    /// then carries the client's address, with the proxy's as `via`. A `LOCAL` or
    /// `UNKNOWN` header (a health check) has no client: the connection is served with
    /// the socket's peer, and no client rule or limit applies. False if the connection
    /// is to be closed now: refused (counted and logged as the accept loop does), or
    /// without a usable header (counted, logged at debug: scanners and plain TCP probes
    /// must not fill the logs).
    pub(super) fn admit_proxied(
        &self,
        registered: &mut Registered,
        stream: &TcpStream,
        proxy: &ProxyProtocol,
        tls: bool,
    ) -> bool {
        let (id, peer) = (registered.id, registered.peer);
        match proxy::read_header(stream, proxy.header_timeout, &self.ctx.shutting_down) {
            // Not the peer's fault: nothing to count.
            Err(HeaderError::Shutdown) => return false,
            Err(e) => {
                self.counters.refused(Refusal::ProxyHeader);
                log::debug!("conn {id} refused: {peer}: {e}");
                return false;
            }
            Ok(Source::Local) => {}
            Ok(Source::Client(client)) => {
                if !self.let_in(client) {
                    return false;
                }
                let mut registry = self.lock();
                if !self.take_source_place(&mut registry, client.ip()) {
                    drop(registry);
                    self.refuse_per_source(stream, client, tls);
                    return false;
                }
                drop(registry);
                registered.counted =
                    (self.config.max_per_source > 0).then_some(source_key(client.ip()));
                registered.via = Some(peer);
                registered.peer = client;
            }
        }
        if let Err(e) = self.restore_read_timeout(stream) {
            log::debug!("conn {id} closed: {peer}: cannot set its read timeout: {e}");
            return false;
        }
        self.counters.admitted();
        // A TLS connection's open line comes after its handshake.
        if !tls {
            match registered.via {
                Some(via) => log::debug!("conn {id} open: {} (via {via})", registered.peer),
                None => log::debug!("conn {id} open: {peer} (no client address in its header)"),
            }
        }
        true
    }
}
