//! `--trace`: every byte each way of every connection, as hex dumps with direction,
//! connection number and time since the connection began (see [`hexdump`]).
//!
//! A [`Trace`] is the one destination all connections share (a file, or stderr); a
//! [`ConnTrace`] is one connection's view of it, which counts what it has shown so that
//! no connection traces more than `--trace-bytes`. Off by default: without `--trace`
//! nothing here exists, and connections are served over their transport unwrapped.

pub mod hexdump;

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use hexdump::Direction;
use hexdump::{Block, write_block, write_stop};

/// Bytes traced per connection, both directions together, by default.
pub const TRACE_BYTES: usize = 4096;

/// Where the trace goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceTarget {
    /// `-`: stderr, apart from anything printed on stdout.
    Stderr,
    /// A file, created or truncated at start-up.
    File(PathBuf),
}

impl TraceTarget {
    /// `-` is stderr, anything else a file.
    pub fn parse(arg: &std::ffi::OsStr) -> TraceTarget {
        if arg == "-" {
            TraceTarget::Stderr
        } else {
            TraceTarget::File(PathBuf::from(arg))
        }
    }
}

/// `--trace` and `--trace-bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceConfig {
    pub target: TraceTarget,
    /// Most bytes traced per connection.
    pub bytes: usize,
}

/// The destination every connection's blocks go to, whole blocks at a time.
pub struct Trace {
    /// A file is written unbuffered: each block is formatted whole first and goes out
    /// in one write, so it is on disk as soon as its read or write is done, and the
    /// lock is held for that one write only.
    out: Mutex<Output>,
    /// A write failed: tracing has stopped.
    failed: AtomicBool,
    limit: usize,
    /// How the target is named in the message of a failed write.
    name: String,
}

enum Output {
    Stderr,
    File(File),
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace")
            .field("name", &self.name)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Trace {
    /// Opens the target; a file that cannot be created fails, naming it.
    pub fn open(config: &TraceConfig) -> io::Result<Arc<Trace>> {
        let (out, name) = match &config.target {
            TraceTarget::Stderr => (Output::Stderr, "stderr".to_string()),
            TraceTarget::File(path) => {
                let file = File::create(path).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot open --trace {}: {e}", path.display()),
                    )
                })?;
                (Output::File(file), path.display().to_string())
            }
        };
        Ok(Arc::new(Trace {
            out: Mutex::new(out),
            failed: AtomicBool::new(false),
            limit: config.bytes,
            name,
        }))
    }

    /// One connection's trace, its time offsets counted from `started`; `tls`: what it
    /// traces is the plaintext of a TLS session.
    pub fn connection(self: &Arc<Self>, conn: u64, started: Instant, tls: bool) -> ConnTrace {
        ConnTrace {
            trace: Arc::clone(self),
            conn,
            started,
            tls,
            shown: AtomicUsize::new(0),
        }
    }

    /// Writes `text`, whole blocks, in one write; the first failure is logged and ends
    /// all tracing.
    fn write(&self, text: &str) {
        let mut out = crate::sync::lock(&self.out);
        if self.failed.load(Ordering::Relaxed) {
            return;
        }
        let written = match &mut *out {
            Output::Stderr => io::stderr().lock().write_all(text.as_bytes()),
            Output::File(file) => file.write_all(text.as_bytes()),
        };
        if let Err(e) = written {
            self.failed.store(true, Ordering::Relaxed);
            log::error!(
                "cannot write the trace to {}: {e}; tracing stops",
                self.name
            );
        }
    }
}

/// One connection's trace; shared by the halves of a connection read and written on
/// two threads (the client's).
#[derive(Debug)]
pub struct ConnTrace {
    trace: Arc<Trace>,
    conn: u64,
    started: Instant,
    tls: bool,
    /// Bytes shown so far, both ways.
    shown: AtomicUsize,
}

impl ConnTrace {
    /// Traces `bytes`, just received or sent: up to the connection's limit, with the
    /// line that says so when it is reached, and nothing after that.
    pub fn record(&self, direction: Direction, bytes: &[u8]) {
        if bytes.is_empty() || self.trace.failed.load(Ordering::Relaxed) {
            return;
        }
        let limit = self.trace.limit;
        let Ok(before) = self
            .shown
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |shown| {
                (shown < limit).then(|| shown + bytes.len().min(limit - shown))
            })
        else {
            return;
        };
        let take = bytes.len().min(limit - before);
        let mut text = String::with_capacity(96 + take * 4 + take / 16 * 12);
        write_block(
            &mut text,
            &Block {
                conn: self.conn,
                offset: self.started.elapsed(),
                direction,
                len: bytes.len(),
                bytes: &bytes[..take],
                tls: self.tls,
            },
        );
        if before + take == limit {
            write_stop(&mut text, self.conn, limit);
        }
        self.trace.write(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace_to(path: &std::path::Path, bytes: usize) -> Arc<Trace> {
        let config = TraceConfig {
            target: TraceTarget::File(path.to_path_buf()),
            bytes,
        };
        Trace::open(&config).expect("open")
    }

    #[test]
    fn a_connection_stops_at_its_limit_with_one_line_and_others_go_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("trace");
        let trace = trace_to(&path, 10);
        let one = trace.connection(1, Instant::now(), false);
        let two = trace.connection(2, Instant::now(), false);
        one.record(Direction::Received, b"abcdef");
        one.record(Direction::Sent, b"ghijkl");
        one.record(Direction::Received, b"never");
        two.record(Direction::Sent, b"");
        two.record(Direction::Sent, b"0123456789");
        let text = std::fs::read_to_string(&path).expect("read");
        let headers: Vec<&str> = text.lines().filter(|l| l.starts_with("conn")).collect();
        assert_eq!(headers.len(), 5, "{text}");
        assert!(headers[0].starts_with("conn 1 +") && headers[0].ends_with(" < 6 bytes"));
        assert!(headers[1].ends_with(" > 6 bytes, first 4 shown"));
        assert_eq!(headers[2], "conn 1: trace stops after 10 bytes");
        assert!(headers[3].starts_with("conn 2 +") && headers[3].ends_with(" > 10 bytes"));
        assert_eq!(headers[4], "conn 2: trace stops after 10 bytes");
        assert!(!text.contains("never") && !text.contains("6e 65 76"));
    }

    #[test]
    fn a_file_that_cannot_be_created_is_named() {
        let config = TraceConfig {
            target: TraceTarget::File(PathBuf::from("/nonexistent-dir/trace.txt")),
            bytes: 1,
        };
        let e = Trace::open(&config).expect_err("opened");
        assert!(
            e.to_string()
                .starts_with("cannot open --trace /nonexistent-dir/trace.txt: "),
            "{e}"
        );
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_failed_write_stops_all_tracing() {
        let trace = trace_to(std::path::Path::new("/dev/full"), 100);
        let conn = trace.connection(1, Instant::now(), false);
        conn.record(Direction::Received, b"abc");
        assert!(trace.failed.load(Ordering::Relaxed));
        // Nothing more is counted, let alone written.
        conn.record(Direction::Received, b"def");
        assert_eq!(conn.shown.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn dash_is_stderr() {
        assert_eq!(TraceTarget::parse("-".as_ref()), TraceTarget::Stderr);
        assert_eq!(
            TraceTarget::parse("t.txt".as_ref()),
            TraceTarget::File(PathBuf::from("t.txt"))
        );
    }
}
