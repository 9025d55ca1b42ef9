//! Datagrams in batches: `recvmmsg` takes up to [`BATCH`] waiting datagrams in one
//! system call, `sendmmsg` sends their replies in one. nix wraps both safely.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};

/// Most datagrams taken, and replies sent, in one system call.
pub const BATCH: usize = 32;

/// Buffers for a batch of datagrams received and of replies to send.
pub struct Batch {
    slot: usize,
    bufs: Vec<u8>,
    received: Vec<(usize, SocketAddr)>,
    recv_headers: MultiHeaders<SockaddrStorage>,
    send_headers: MultiHeaders<SockaddrStorage>,
    /// The replies, one buffer each, and where they go.
    pub replies: Vec<Vec<u8>>,
    to: Vec<Option<SockaddrStorage>>,
    pending: usize,
}

impl Batch {
    /// Room for [`BATCH`] datagrams of up to `slot` bytes each (a longer one is cut to
    /// `slot`, as by `recv_from`), and their replies of up to `reply` bytes.
    pub fn new(slot: usize, reply: usize) -> Batch {
        Batch {
            slot,
            bufs: vec![0; slot * BATCH],
            received: Vec::with_capacity(BATCH),
            recv_headers: MultiHeaders::preallocate(BATCH, None),
            send_headers: MultiHeaders::preallocate(BATCH, None),
            replies: (0..BATCH).map(|_| Vec::with_capacity(reply)).collect(),
            to: Vec::with_capacity(BATCH),
            pending: 0,
        }
    }

    /// Waits (up to the socket's read timeout) for at least one datagram, and takes
    /// every one waiting, up to [`BATCH`]; returns how many.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.received.clear();
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
            .bufs
            .chunks_mut(self.slot)
            .map(|chunk| [IoSliceMut::new(chunk)])
            .collect();
        let results = recvmmsg(
            socket.as_raw_fd(),
            &mut self.recv_headers,
            iovs.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        )
        .map_err(io::Error::from)?;
        for msg in results {
            let peer = msg.address.as_ref().and_then(socket_addr);
            // A datagram with no usable source address (not IP) cannot be answered.
            if let Some(peer) = peer {
                self.received.push((msg.bytes.min(self.slot), peer));
            }
        }
        Ok(self.received.len())
    }

    /// The `i`th datagram received, and its sender.
    pub fn datagram(&self, i: usize) -> (&[u8], SocketAddr) {
        let (n, peer) = self.received[i];
        let start = i * self.slot;
        (&self.bufs[start..start + n], peer)
    }

    /// The `i`th datagram received, its sender, and the buffer for the next reply
    /// (cleared), to be queued with [`Batch::queue`].
    pub fn split(&mut self, i: usize) -> (&[u8], SocketAddr, &mut Vec<u8>) {
        let (n, peer) = self.received[i];
        let start = i * self.slot;
        let out = &mut self.replies[self.pending];
        out.clear();
        (&self.bufs[start..start + n], peer, out)
    }

    /// Queues the reply just written into [`Batch::next_reply`] for `peer`.
    pub fn queue(&mut self, peer: SocketAddr) {
        self.to.push(Some(SockaddrStorage::from(peer)));
        self.pending += 1;
    }

    /// Sends every queued reply; returns how many went out and the errors of those that
    /// did not (a failed one is skipped, the rest are still sent).
    pub fn send(&mut self, socket: &UdpSocket, failed: &mut Vec<(SocketAddr, io::Error)>) -> usize {
        let mut sent = 0;
        let mut from = 0;
        let cmsgs: [ControlMessage<'_>; 0] = [];
        while from < self.pending {
            let slices: Vec<[IoSlice<'_>; 1]> = self.replies[from..self.pending]
                .iter()
                .map(|r| [IoSlice::new(r)])
                .collect();
            match sendmmsg(
                socket.as_raw_fd(),
                &mut self.send_headers,
                slices.iter(),
                &self.to[from..self.pending],
                cmsgs,
                MsgFlags::empty(),
            ) {
                Ok(results) => {
                    let n = results.count().max(1);
                    sent += n;
                    from += n;
                }
                Err(e) => {
                    let peer = self.to[from]
                        .as_ref()
                        .and_then(socket_addr)
                        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                    failed.push((peer, io::Error::from(e)));
                    from += 1;
                }
            }
        }
        self.to.clear();
        self.pending = 0;
        sent
    }
}

/// The IP socket address of a received datagram's sender.
fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    addr.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_batch_takes_every_waiting_datagram_and_answers_each() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let to = server.local_addr().unwrap();
        for name in ["a", "bb", "ccc"] {
            client.send_to(name.as_bytes(), to).unwrap();
        }
        let mut batch = Batch::new(4, 16);
        let mut got = 0;
        while got < 3 {
            let n = batch.recv(&server).unwrap();
            for i in 0..n {
                let (datagram, peer, out) = batch.split(i);
                assert_eq!(peer, client.local_addr().unwrap());
                out.extend_from_slice(datagram);
                batch.queue(peer);
            }
            let mut failed = Vec::new();
            assert_eq!(batch.send(&server, &mut failed), n);
            assert!(failed.is_empty());
            got += n;
        }
        let mut buf = [0u8; 8];
        for name in ["a", "bb", "ccc"] {
            let n = client.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], name.as_bytes());
        }
        // A datagram longer than the slot is cut to it, as recv_from would.
        client.send_to(b"toolong", to).unwrap();
        assert_eq!(batch.recv(&server).unwrap(), 1);
        assert_eq!(batch.datagram(0).0, b"tool");
    }
}
