//! systemd socket activation: serving on the listening sockets a service manager opened
//! and passed down (sd_listen_fds(3): `LISTEN_FDS` sockets from fd 3 on, for the process
//! `LISTEN_PID`, named by `LISTEN_FDNAMES`), instead of binding our own.

use std::fmt;
use std::io;
use std::net::TcpListener;

/// The name (`FileDescriptorName=tls` in the `.socket` unit) that makes an inherited
/// socket a TLS listener; every other name is plain text.
pub const TLS_NAME: &str = "tls";

/// What the environment says about inherited sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// No `LISTEN_FDS`, or `LISTEN_FDS=0`: bind as usual.
    NotActivated,
    /// `LISTEN_FDS` is set for another process, or for none (`LISTEN_PID` is missing or
    /// another process id), e.g. left in the environment by a parent: bind as usual.
    NotOurs {
        /// What `LISTEN_PID` said, if anything.
        pid: Option<String>,
    },
    /// Serve on the inherited sockets, in order.
    Sockets(Vec<Inherited>),
}

/// One socket the service manager passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inherited {
    /// Its name from `LISTEN_FDNAMES` (systemd's default is the socket unit's name;
    /// `unknown` when nothing names it).
    pub name: String,
    /// Connections to it begin with a TLS handshake: its name is [`TLS_NAME`].
    pub tls: bool,
}

/// A socket-activation environment that cannot be served as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationError(String);

impl fmt::Display for ActivationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ActivationError {}

/// Decides from the values of `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES` (each
/// `None` when unset) which sockets, if any, this process (`our_pid`, whose hard
/// open-file limit is `fd_limit`) inherited.
pub fn plan(
    listen_fds: Option<&str>,
    listen_pid: Option<&str>,
    fd_names: Option<&str>,
    our_pid: u32,
    fd_limit: u64,
) -> Result<Plan, ActivationError> {
    let Some(fds) = listen_fds else {
        return Ok(Plan::NotActivated);
    };
    // systemd always sets LISTEN_PID; without it the sockets may belong to anyone.
    if listen_pid.and_then(|p| p.trim().parse::<u32>().ok()) != Some(our_pid) {
        return Ok(Plan::NotOurs {
            pid: listen_pid.map(str::to_owned),
        });
    }
    let count: usize = fds.trim().parse().map_err(|_| {
        ActivationError(format!(
            "LISTEN_FDS={fds:?} is not a number of sockets (socket activation)"
        ))
    })?;
    if count == 0 {
        return Ok(Plan::NotActivated);
    }
    // Checked before anything is sized by the count: the sockets are descriptors 3 on,
    // and no process holds descriptors past its hard limit.
    if count as u64 > fd_limit.saturating_sub(3) {
        return Err(ActivationError(format!(
            "LISTEN_FDS={count} is more sockets than this process can hold (its open-file \
             limit, `ulimit -Hn`, is {fd_limit}): it was not set by a service manager for \
             us; unset it (socket activation)"
        )));
    }
    let names: Vec<&str> = match fd_names {
        Some(names) => names.split(':').collect(),
        None => vec!["unknown"; count],
    };
    if names.len() != count {
        return Err(ActivationError(format!(
            "LISTEN_FDNAMES names {} sockets but LISTEN_FDS={count} (socket activation)",
            names.len()
        )));
    }
    Ok(Plan::Sockets(
        names
            .into_iter()
            .map(|name| Inherited {
                name: name.to_owned(),
                tls: name == TLS_NAME,
            })
            .collect(),
    ))
}

/// [`plan`] for this process, from its environment.
pub fn plan_from_env() -> Result<Plan, ActivationError> {
    let var = |name| std::env::var(name).ok();
    // Descriptors are C ints: none is numbered past that, whatever a limit that cannot
    // be read, or an unlimited one, would allow.
    let fd_limit = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map_or(i32::MAX as u64, |(_, hard)| hard.min(i32::MAX as u64));
    plan(
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
        fd_limit,
    )
}

/// Takes the `count` inherited sockets as listeners, in order, and removes `LISTEN_FDS`
/// and `LISTEN_PID` from the environment (`LISTEN_FDNAMES` stays: without the other two
/// it means nothing). Call it only after [`plan`] said they are ours, and before the
/// process starts threads: it changes the environment.
pub fn take_listeners(count: usize) -> io::Result<Vec<TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    (0..count)
        .map(|i| {
            let fd = 3 + i;
            match fds.take_tcp_listener(i) {
                Ok(Some(listener)) => Ok(listener),
                Ok(None) => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("inherited socket fd {fd} is missing (socket activation)"),
                )),
                Err(e) => Err(io::Error::new(
                    e.kind(),
                    format!("inherited socket fd {fd} is not a TCP socket: {e}"),
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A usual hard open-file limit.
    const LIMIT: u64 = 4096;

    fn sockets(names: &[(&str, bool)]) -> Plan {
        Plan::Sockets(
            names
                .iter()
                .map(|&(name, tls)| Inherited {
                    name: name.into(),
                    tls,
                })
                .collect(),
        )
    }

    #[test]
    fn no_listen_fds_or_none_of_them_binds_as_usual() {
        assert_eq!(plan(None, None, None, 42, LIMIT), Ok(Plan::NotActivated));
        assert_eq!(
            plan(None, Some("42"), None, 42, LIMIT),
            Ok(Plan::NotActivated)
        );
        assert_eq!(
            plan(Some("0"), Some("42"), None, 42, LIMIT),
            Ok(Plan::NotActivated)
        );
    }

    #[test]
    fn sockets_for_another_process_or_no_process_are_not_ours() {
        assert_eq!(
            plan(Some("1"), Some("41"), None, 42, LIMIT),
            Ok(Plan::NotOurs {
                pid: Some("41".into())
            })
        );
        assert_eq!(
            plan(Some("1"), None, None, 42, LIMIT),
            Ok(Plan::NotOurs { pid: None })
        );
        assert_eq!(
            plan(Some("1"), Some("x"), None, 42, LIMIT),
            Ok(Plan::NotOurs {
                pid: Some("x".into())
            })
        );
    }

    #[test]
    fn only_a_socket_named_tls_is_tls() {
        assert_eq!(
            plan(Some("2"), Some("42"), None, 42, LIMIT),
            Ok(sockets(&[("unknown", false), ("unknown", false)]))
        );
        assert_eq!(
            plan(
                Some("3"),
                Some("42"),
                Some("hello.socket:tls:TLS"),
                42,
                LIMIT
            ),
            Ok(sockets(&[
                ("hello.socket", false),
                ("tls", true),
                ("TLS", false)
            ]))
        );
    }

    #[test]
    fn a_bad_count_or_names_that_do_not_match_it_are_errors() {
        assert!(plan(Some("two"), Some("42"), None, 42, LIMIT).is_err());
        assert!(plan(Some("2"), Some("42"), Some("tls"), 42, LIMIT).is_err());
    }

    #[test]
    fn a_count_past_the_open_file_limit_is_an_error_not_an_allocation() {
        for fds in ["99999999999", "18446744073709551615", "4094"] {
            let e = plan(Some(fds), Some("42"), None, 42, LIMIT).unwrap_err();
            assert!(e.to_string().contains("`ulimit -Hn`, is 4096"), "{e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        // Descriptors 3 to 4095: the most a limit of 4096 leaves room for.
        let Ok(Plan::Sockets(all)) = plan(Some("4093"), Some("42"), None, 42, LIMIT) else {
            panic!("4093 sockets fit under a limit of 4096");
        };
        assert_eq!(all.len(), 4093);
    }
}
