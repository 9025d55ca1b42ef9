//! Who is at the other end of a Unix socket, as the kernel says: its user and process,
//! shown by `{peer}` and the log as `uid=1000,pid=4242`.

use std::fmt;
use std::os::unix::net::UnixStream;

/// A Unix connection's client: its user id and process id, each `None` where the
/// system does not say (shown as `?`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::server) struct Credentials {
    pub(in crate::server) uid: Option<u32>,
    pub(in crate::server) pid: Option<u32>,
}

impl Credentials {
    /// The client of `stream`: Linux's `SO_PEERCRED`, the user and process that
    /// connected.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(in crate::server) fn of(stream: &UnixStream) -> Credentials {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        match getsockopt(stream, PeerCredentials) {
            Ok(c) => Credentials {
                uid: Some(c.uid()),
                pid: u32::try_from(c.pid()).ok(),
            },
            Err(_) => Credentials::UNKNOWN,
        }
    }

    /// The client of `stream`: `getpeereid`'s user, and on macOS `LOCAL_PEERPID`'s
    /// process; the BSDs do not say which process.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(in crate::server) fn of(stream: &UnixStream) -> Credentials {
        let uid = nix::unistd::getpeereid(stream)
            .ok()
            .map(|(uid, _)| uid.as_raw());
        #[cfg(target_os = "macos")]
        let pid = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::LocalPeerPid)
            .ok()
            .and_then(|pid| u32::try_from(pid).ok());
        #[cfg(not(target_os = "macos"))]
        let pid = None;
        Credentials { uid, pid }
    }

    /// Neither known.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const UNKNOWN: Credentials = Credentials {
        uid: None,
        pid: None,
    };
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.uid {
            Some(uid) => write!(f, "uid={uid}")?,
            None => f.write_str("uid=?")?,
        }
        match self.pid {
            Some(pid) => write!(f, ",pid={pid}"),
            None => f.write_str(",pid=?"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_show_as_uid_and_pid_with_unknowns_as_question_marks() {
        let known = Credentials {
            uid: Some(1000),
            pid: Some(4242),
        };
        assert_eq!(known.to_string(), "uid=1000,pid=4242");
        let unknown = Credentials {
            uid: None,
            pid: None,
        };
        assert_eq!(unknown.to_string(), "uid=?,pid=?");
        let widest = Credentials {
            uid: Some(u32::MAX),
            pid: Some(u32::MAX),
        };
        assert!(widest.to_string().len() <= crate::protocol::ADDR_TEXT_MAX);
    }

    #[test]
    fn a_socket_pair_names_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let c = Credentials::of(&a);
        assert_eq!(c.uid, Some(nix::unistd::getuid().as_raw()));
        if cfg!(any(target_os = "linux", target_os = "macos")) {
            assert_eq!(c.pid, Some(std::process::id()));
        }
    }
}
