//! A Unix socket's file: made with its mode (`--unix-mode`), a stale one from a run that
//! crashed replaced only if nothing listens on it, and removed when the server stops.

use std::fs;
use std::io::{self, ErrorKind};
use std::net::Shutdown;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use log::{info, warn};
use socket2::{Domain, SockAddr, SockRef, Socket, Type};

use crate::protocol::LocalName;

/// A listening Unix socket, and its file, removed when it stops or is dropped.
pub(in crate::server) struct Listener {
    socket: UnixListener,
    path: PathBuf,
    /// What `{local}` shows of it.
    name: LocalName,
    /// The device and inode of the file bound: only that file is removed, never one
    /// that another server has put at the path since.
    file: (u64, u64),
    removed: AtomicBool,
}

/// Listens on a new socket file at `path`, with `mode` (`None`: as the umask leaves
/// it) and `backlog`. Every failure is one line naming the cause and the fix: a path that
/// exists and is not a socket, one another server listens on, a directory that does not
/// exist or cannot be written.
pub(in crate::server) fn listen(
    path: &Path,
    mode: Option<u32>,
    backlog: i32,
) -> io::Result<Listener> {
    clear_stale(path)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket
        .bind(&SockAddr::unix(path)?)
        .map_err(|e| bind_error(path, &e))?;
    let file = fs::symlink_metadata(path)?;
    // From here on the file is ours: dropping the listener removes it.
    let listener = Listener {
        socket: UnixListener::from(socket),
        path: path.to_path_buf(),
        name: LocalName::new(path),
        file: (file.dev(), file.ino()),
        removed: AtomicBool::new(false),
    };
    // Before listening, so that no client connects under another mode.
    if let Some(mode) = mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| {
            io::Error::other(format!(
                "cannot set the mode of {} to {mode:o}: {e}",
                path.display()
            ))
        })?;
    }
    SockRef::from(&listener.socket).listen(backlog)?;
    Ok(listener)
}

impl Listener {
    /// The next client.
    pub(in crate::server) fn accept(&self) -> io::Result<UnixStream> {
        self.socket.accept().map(|(stream, _)| stream)
    }

    /// The socket's path.
    pub(in crate::server) fn path(&self) -> &Path {
        &self.path
    }

    /// What `{local}` shows of its connections.
    pub(in crate::server) fn name(&self) -> &LocalName {
        &self.name
    }

    /// Stops listening: a blocked `accept` returns, new clients are refused, and the file
    /// goes, so that a new server may take the path while this one's connections finish.
    pub(in crate::server) fn stop(&self) {
        let shut = SockRef::from(&self.socket).shutdown(Shutdown::Both);
        // Where a listener cannot be shut down, a client of our own wakes the accept.
        if shut.is_err() && !cfg!(target_os = "linux") {
            let woke = Socket::new(Domain::UNIX, Type::STREAM, None).and_then(|s| {
                s.set_nonblocking(true)?;
                s.connect(&SockAddr::unix(&self.path)?)
            });
            if let Err(e) = woke {
                if e.kind() != ErrorKind::WouldBlock {
                    warn!(
                        "cannot wake the accept loop of unix:{} to stop it: {e}",
                        self.path.display()
                    );
                }
            }
        }
        self.remove_file();
    }

    /// Removes the socket file, once, if it is still the one bound.
    fn remove_file(&self) {
        if self.removed.swap(true, Ordering::AcqRel) {
            return;
        }
        let ours = fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.file);
        if ours {
            if let Err(e) = fs::remove_file(&self.path) {
                warn!("cannot remove the socket file {}: {e}", self.path.display());
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.remove_file();
    }
}

/// Makes way for a new socket at `path`: nothing there, or a socket file nothing
/// listens on any more (a crashed run's), which is removed. Anything else is an error.
fn clear_stale(path: &Path) -> io::Result<()> {
    let shown = path.display();
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io::Error::other(format!("cannot look at {shown}: {e}"))),
    };
    let kind = meta.file_type();
    if !kind.is_socket() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_symlink() {
            "a symbolic link"
        } else if kind.is_file() {
            "a regular file"
        } else {
            "a special file"
        };
        return Err(io::Error::other(format!(
            "{shown} exists and is not a socket but {what}: remove it, or choose another path"
        )));
    }
    match listening(path) {
        Ok(true) => Err(io::Error::other(format!(
            "another server is listening on {shown}: stop it, or choose another path"
        ))),
        Ok(false) => match fs::remove_file(path) {
            Ok(()) => {
                info!("replaced the stale socket file {shown}: nothing listened on it");
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io::Error::other(format!(
                "cannot remove the stale socket file {shown}: {e}: remove it, or choose \
                 another path"
            ))),
        },
        Err(e) => Err(io::Error::other(format!(
            "cannot tell whether a server listens on {shown} ({e}): remove the file if none \
             does, or choose another path"
        ))),
    }
}

/// Whether a server listens on the socket file at `path`: a connect to it is taken or
/// waits in its backlog (never blocking here); refused, none does.
fn listening(path: &Path) -> io::Result<bool> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&SockAddr::unix(path)?) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(true),
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound) => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Why a socket could not be made at `path`, and the fix.
fn bind_error(path: &Path, e: &io::Error) -> io::Error {
    let shown = path.display();
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let dir = dir.display();
    io::Error::other(match e.kind() {
        ErrorKind::NotFound => format!(
            "the directory {dir} does not exist: create it (mkdir -p {dir}), or choose \
             another path"
        ),
        ErrorKind::NotADirectory => {
            format!("a part of {dir} is not a directory: choose another path")
        }
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
            format!("cannot create {shown}: {e}: choose a directory this user may write to")
        }
        _ => format!("cannot create {shown}: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_made_with_its_mode_and_removed_on_stop_and_not_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = listen(&path, Some(0o640), 8).unwrap();
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        let client = UnixStream::connect(&path).unwrap();
        drop(listener.accept().unwrap());
        drop(client);
        listener.stop();
        assert!(!path.exists(), "stop removes the file");
        // Another file at the path since is not ours to remove.
        fs::write(&path, b"not ours").unwrap();
        drop(listener);
        assert!(path.exists());
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let stale = UnixListener::bind(&path).unwrap();
        // Closed without removing its file, as a killed server leaves it.
        drop(stale);
        assert!(path.exists());
        let listener = listen(&path, None, 8).unwrap();
        let e = listen(&path, None, 8).err().unwrap().to_string();
        assert!(e.contains("another server is listening on"), "{e}");
        assert!(
            path.exists(),
            "the refused second one leaves the file alone"
        );
        drop(listener);
        assert!(!path.exists());
    }

    #[test]
    fn bad_paths_are_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        fs::write(&file, b"x").unwrap();
        let e = listen(&file, None, 8).err().unwrap().to_string();
        assert!(
            e.contains("exists and is not a socket but a regular file: remove it"),
            "{e}"
        );
        assert!(file.exists(), "never removed");
        let missing = dir.path().join("no/such/dir/s.sock");
        let e = listen(&missing, None, 8).err().unwrap().to_string();
        assert!(
            e.contains("does not exist: create it (mkdir -p ") && e.contains("no/such/dir"),
            "{e}"
        );
    }
}
