//! A minimal HTTP responder for `GET /metrics`: one thread, one `mio::Poll`, every
//! scraper served within its deadline and none able to block another.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use slab::Slab;

/// The longest one scraper may take, from its connection to the end of its answer,
/// however it spaces its bytes.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// Scrapers served at once. A new one beyond them takes the place of the oldest, so
/// connections that send nothing cannot keep a scraper out.
pub const MAX_SCRAPERS: usize = 64;

/// The longest request head read; the rest is ignored.
const MAX_REQUEST: usize = 4096;

/// How long the metrics thread waits before accepting again after `accept` failed for
/// another reason than an aborted connection (out of descriptors, say): it must not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The listener's token; a scraper's is its slab key plus one.
const LISTENER: Token = Token(0);

/// Binds the metrics listener; the error names the address.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen for metrics on {addr}: {e}"),
        )
    })
}

/// Serves `GET /metrics` on `listener` from a thread of its own; `scrape` renders the
/// page. The thread ends with the process.
///
/// A minimal responder rather than an HTTP library: one path, one method, no keep-alive.
/// Its scrapers are served together, without blocking on any, each within
/// [`SCRAPE_TIMEOUT`] of its connection, at most [`MAX_SCRAPERS`] at once: a slow or
/// hostile scraper holds one place for two seconds and delays no one, and never costs a
/// thread.
pub fn spawn<F>(listener: TcpListener, scrape: F) -> io::Result<thread::JoinHandle<()>>
where
    F: Fn() -> String + Send + 'static,
{
    listener.set_nonblocking(true)?;
    let mut listener = mio::net::TcpListener::from_std(listener);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut responder = Responder {
        poll,
        listener,
        scrapers: Slab::with_capacity(MAX_SCRAPERS),
        accept_after: None,
        scrape,
    };
    // The server starts it before it installs its signal handlers.
    crate::signals::spawn_blocking_stops(thread::Builder::new().name("metrics".into()), move || {
        responder.run()
    })
}

/// The metrics thread's state.
struct Responder<F> {
    poll: Poll,
    listener: mio::net::TcpListener,
    scrapers: Slab<Scraper>,
    /// When to accept again after `accept` failed.
    accept_after: Option<Instant>,
    scrape: F,
}

/// One scraper's connection: its request head as far as it came, then its answer.
struct Scraper {
    stream: mio::net::TcpStream,
    /// When it is closed, answered or not.
    deadline: Instant,
    head: Vec<u8>,
    /// The answer and how much of it is sent, once the head is read.
    answer: Option<(Vec<u8>, usize)>,
}

/// What to do with a scraper after some progress.
enum Next {
    Wait,
    Close,
}

impl<F: Fn() -> String> Responder<F> {
    fn run(&mut self) {
        let mut events = Events::with_capacity(MAX_SCRAPERS + 1);
        loop {
            let wake = self
                .scrapers
                .iter()
                .map(|(_, s)| s.deadline)
                .chain(self.accept_after)
                .min();
            let timeout = wake.map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != ErrorKind::Interrupted {
                    log::debug!("metrics poll: {e}");
                    thread::sleep(ACCEPT_BACKOFF);
                }
                continue;
            }
            for event in &events {
                match event.token() {
                    LISTENER => self.accept(),
                    Token(n) => self.progress(n - 1),
                }
            }
            let now = Instant::now();
            if self.accept_after.is_some_and(|at| at <= now) {
                self.accept_after = None;
                self.accept();
            }
            let late: Vec<usize> = self
                .scrapers
                .iter()
                .filter(|(_, s)| s.deadline <= now)
                .map(|(key, _)| key)
                .collect();
            for key in late {
                log::debug!("metrics: a scraper took longer than {SCRAPE_TIMEOUT:?}; closed");
                self.close(key);
            }
        }
    }

    /// Accepts every waiting connection: readiness is reported once per arrival.
    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    log::debug!("metrics accept: {e}");
                    self.accept_after = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    /// Takes a new scraper, in the place of the oldest when every place is taken.
    fn admit(&mut self, mut stream: mio::net::TcpStream) {
        if self.scrapers.len() >= MAX_SCRAPERS {
            let oldest = self
                .scrapers
                .iter()
                .min_by_key(|(_, s)| s.deadline)
                .map(|(key, _)| key);
            if let Some(key) = oldest {
                log::debug!("metrics: {MAX_SCRAPERS} scrapers at once; the oldest is closed");
                self.close(key);
            }
        }
        let entry = self.scrapers.vacant_entry();
        let token = Token(entry.key() + 1);
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::debug!("metrics: {e}");
            return;
        }
        let key = entry.key();
        entry.insert(Scraper {
            stream,
            deadline: Instant::now() + SCRAPE_TIMEOUT,
            head: Vec::new(),
            answer: None,
        });
        // Bytes that came with the connection were reported before it was registered.
        self.progress(key);
    }

    /// Reads what scraper `key` sent, or sends what is left of its answer.
    fn progress(&mut self, key: usize) {
        let Some(scraper) = self.scrapers.get_mut(key) else {
            return;
        };
        let next = match scraper.step(&self.scrape) {
            Ok(next) => next,
            Err(e) => {
                log::debug!("metrics: {e}");
                Next::Close
            }
        };
        if let Next::Close = next {
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(mut scraper) = self.scrapers.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut scraper.stream);
        }
    }
}

impl Scraper {
    /// Reads until the head is complete (or [`MAX_REQUEST`] bytes, or the end), then
    /// writes the answer until it is sent or the socket is full.
    fn step<F: Fn() -> String>(&mut self, scrape: &F) -> io::Result<Next> {
        if self.answer.is_none() {
            let mut buf = [0u8; MAX_REQUEST];
            let mut ended = false;
            while self.head.len() < MAX_REQUEST && !self.head.windows(4).any(|w| w == b"\r\n\r\n") {
                let room = MAX_REQUEST - self.head.len();
                match self.stream.read(&mut buf[..room]) {
                    Ok(0) => {
                        ended = true;
                        break;
                    }
                    Ok(n) => self.head.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Next::Wait),
                    Err(e) => return Err(e),
                }
            }
            if ended && self.head.is_empty() {
                return Ok(Next::Close);
            }
            self.answer = Some((answer(&self.head, scrape).into_bytes(), 0));
        }
        let Some((answer, sent)) = &mut self.answer else {
            return Ok(Next::Close);
        };
        while *sent < answer.len() {
            match self.stream.write(&answer[*sent..]) {
                Ok(0) => return Ok(Next::Close),
                Ok(n) => *sent += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Next::Wait),
                Err(e) => return Err(e),
            }
        }
        Ok(Next::Close)
    }
}

/// The whole HTTP response to a request head.
fn answer<F: Fn() -> String>(head: &[u8], scrape: &F) -> String {
    let (status, body) = respond(head, scrape);
    let content_type = if status == "200 OK" {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The status line's text and the body for a request head.
fn respond<F: Fn() -> String>(head: &[u8], scrape: &F) -> (&'static str, String) {
    let line = head
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or(&[]);
    let mut words = line.split(|&b| b == b' ');
    let (method, target) = (words.next(), words.next());
    let Some(target) = target else {
        return ("400 Bad Request", "bad request\n".into());
    };
    let path = target.split(|&b| b == b'?').next().unwrap_or(target);
    if path != b"/metrics" {
        return ("404 Not Found", "not found: try /metrics\n".into());
    }
    if method != Some(b"GET".as_slice()) {
        return ("405 Method Not Allowed", "only GET\n".into());
    }
    ("200 OK", scrape())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_metrics_404_elsewhere_and_400_for_garbage() {
        let scrape = || "x 1\n".to_string();
        let req = |head: &str| respond(head.as_bytes(), &scrape);
        assert_eq!(
            req("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("200 OK", "x 1\n".into())
        );
        assert_eq!(req("GET /metrics?a=b HTTP/1.0\r\n\r\n").0, "200 OK");
        assert_eq!(req("GET /other HTTP/1.1\r\n\r\n").0, "404 Not Found");
        assert_eq!(req("GET / HTTP/1.1\r\n\r\n").0, "404 Not Found");
        assert_eq!(
            req("POST /metrics HTTP/1.1\r\n\r\n").0,
            "405 Method Not Allowed"
        );
        assert_eq!(req("").0, "400 Bad Request");
        assert_eq!(req("garbage\r\n\r\n").0, "400 Bad Request");
    }
}
