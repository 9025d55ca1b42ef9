//! A minimal HTTP responder for `GET /metrics`, `/healthz` and `/readyz`: one thread,
//! one `mio::Poll`, every client served within its deadline and none able to block
//! another.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
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

/// The token of [`Responding`]'s waker, past every scraper's.
const STOP: Token = Token(usize::MAX);

/// What the responder serves, read afresh for every request.
pub trait Pages: Send + 'static {
    /// The Prometheus text of `/metrics`, or why there is none yet.
    fn metrics(&self) -> Result<String, String>;
    /// `/readyz`: whether the server takes new connections, or why not.
    fn ready(&self) -> Result<(), String>;
}

/// A responder [`spawn`]ed; dropping it stops its thread (and closes its listener).
pub struct Responding {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
}

impl Drop for Responding {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Err(e) = self.waker.wake() {
            log::debug!("metrics: cannot wake the thread to stop it: {e}");
        }
    }
}

/// Binds the metrics listener; the error names the address.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen for metrics on {addr}: {e}"),
        )
    })
}

/// Serves `GET /metrics`, `/healthz` and `/readyz` on `listener` from a thread of its
/// own, each answer made by `pages` when asked; the thread ends when what this returns is
/// dropped.
///
/// A minimal responder rather than an HTTP library: three paths, one method, no
/// keep-alive. Its clients are served together, without blocking on any, each within
/// [`SCRAPE_TIMEOUT`] of its connection, at most [`MAX_SCRAPERS`] at once: a slow or
/// hostile client holds one place for two seconds and delays no one, and never costs a
/// thread. Nothing it answers is logged above debug: probes come every few seconds.
pub fn spawn<P: Pages>(listener: TcpListener, pages: P) -> io::Result<Responding> {
    listener.set_nonblocking(true)?;
    let mut listener = mio::net::TcpListener::from_std(listener);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), STOP)?);
    let stop = Arc::new(AtomicBool::new(false));
    let mut responder = Responder {
        poll,
        listener,
        scrapers: Slab::with_capacity(MAX_SCRAPERS),
        accept_after: None,
        stop: Arc::clone(&stop),
        pages,
    };
    // The server starts it before it installs its signal handlers.
    crate::signals::spawn_blocking_stops(
        thread::Builder::new().name("metrics".into()),
        move || responder.run(),
    )?;
    Ok(Responding { waker, stop })
}

/// The metrics thread's state.
struct Responder<P> {
    poll: Poll,
    listener: mio::net::TcpListener,
    scrapers: Slab<Scraper>,
    /// When to accept again after `accept` failed.
    accept_after: Option<Instant>,
    /// Set when the [`Responding`] is dropped.
    stop: Arc<AtomicBool>,
    pages: P,
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

impl<P: Pages> Responder<P> {
    fn run(&mut self) {
        let mut events = Events::with_capacity(MAX_SCRAPERS + 1);
        while !self.stop.load(Ordering::Acquire) {
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
                    STOP => {}
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
        let next = match scraper.step(&self.pages) {
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
    fn step<P: Pages>(&mut self, pages: &P) -> io::Result<Next> {
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
            self.answer = Some((answer(&self.head, pages).into_bytes(), 0));
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
fn answer<P: Pages>(head: &[u8], pages: &P) -> String {
    let (status, page) = respond(head, pages);
    let content_type = match page {
        Page::Metrics => "text/plain; version=0.0.4; charset=utf-8",
        Page::Text => "text/plain; charset=utf-8",
    };
    let body = match &status {
        Status::Ok(body) | Status::Refused(_, body) => body,
    };
    format!(
        "HTTP/1.1 {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        status.line(),
        body.len()
    )
}

/// An answer's status and body.
#[derive(Debug, PartialEq, Eq)]
enum Status {
    Ok(String),
    /// Another status line's text, and the body that says why.
    Refused(&'static str, String),
}

impl Status {
    fn line(&self) -> &'static str {
        match self {
            Status::Ok(_) => "200 OK",
            Status::Refused(line, _) => line,
        }
    }
}

/// What an answer's body is.
#[derive(Debug, PartialEq, Eq)]
enum Page {
    /// The Prometheus text format.
    Metrics,
    /// A line of text.
    Text,
}

/// The status and body for a request head: `/metrics`, `/healthz` (200 while the
/// process answers) and `/readyz` (200, or 503 saying why not), as podinfo answers them.
fn respond<P: Pages>(head: &[u8], pages: &P) -> (Status, Page) {
    let refused = |line, body: &str| (Status::Refused(line, body.to_string()), Page::Text);
    let line = head
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or(&[]);
    let mut words = line.split(|&b| b == b' ');
    let (method, target) = (words.next(), words.next());
    let Some(target) = target else {
        return refused("400 Bad Request", "bad request\n");
    };
    let path = target.split(|&b| b == b'?').next().unwrap_or(target);
    if ![b"/metrics".as_slice(), b"/healthz", b"/readyz"].contains(&path) {
        return refused(
            "404 Not Found",
            "not found: try /metrics, /healthz or /readyz\n",
        );
    }
    if method != Some(b"GET".as_slice()) {
        return refused("405 Method Not Allowed", "only GET\n");
    }
    let unavailable =
        |why: String| refused("503 Service Unavailable", &format!("not ready: {why}\n"));
    match path {
        b"/metrics" => match pages.metrics() {
            Ok(text) => (Status::Ok(text), Page::Metrics),
            Err(why) => unavailable(why),
        },
        b"/readyz" => match pages.ready() {
            Ok(()) => (Status::Ok("ok\n".into()), Page::Text),
            Err(why) => unavailable(why),
        },
        _ => (Status::Ok("ok\n".into()), Page::Text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages with a fixed metrics text and readiness.
    struct Fixed(Result<(), String>);

    impl Pages for Fixed {
        fn metrics(&self) -> Result<String, String> {
            self.0.clone().map(|()| "x 1\n".to_string())
        }

        fn ready(&self) -> Result<(), String> {
            self.0.clone()
        }
    }

    #[test]
    fn answers_metrics_404_elsewhere_and_400_for_garbage() {
        let pages = Fixed(Ok(()));
        let req = |head: &str| respond(head.as_bytes(), &pages);
        assert_eq!(
            req("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            (Status::Ok("x 1\n".into()), Page::Metrics)
        );
        assert_eq!(req("GET /metrics?a=b HTTP/1.0\r\n\r\n").0.line(), "200 OK");
        assert_eq!(req("GET /other HTTP/1.1\r\n\r\n").0.line(), "404 Not Found");
        assert_eq!(req("GET / HTTP/1.1\r\n\r\n").0.line(), "404 Not Found");
        assert_eq!(
            req("POST /metrics HTTP/1.1\r\n\r\n").0.line(),
            "405 Method Not Allowed"
        );
        assert_eq!(req("").0.line(), "400 Bad Request");
        assert_eq!(req("garbage\r\n\r\n").0.line(), "400 Bad Request");
    }

    #[test]
    fn healthz_is_200_while_answering_and_readyz_503_says_why_not() {
        let ready = Fixed(Ok(()));
        let draining = Fixed(Err("draining".into()));
        for pages in [&ready, &draining] {
            assert_eq!(
                respond(b"GET /healthz HTTP/1.1\r\n\r\n", pages),
                (Status::Ok("ok\n".into()), Page::Text)
            );
        }
        assert_eq!(
            respond(b"GET /readyz HTTP/1.1\r\n\r\n", &ready),
            (Status::Ok("ok\n".into()), Page::Text)
        );
        let (status, page) = respond(b"GET /readyz?verbose HTTP/1.1\r\n\r\n", &draining);
        assert_eq!(
            status,
            Status::Refused("503 Service Unavailable", "not ready: draining\n".into())
        );
        assert_eq!(page, Page::Text);
        assert_eq!(
            respond(b"POST /readyz HTTP/1.1\r\n\r\n", &ready).0.line(),
            "405 Method Not Allowed"
        );
        // Metrics not made yet: 503, said in text rather than as an empty scrape.
        let response = answer(
            b"GET /metrics HTTP/1.1\r\n\r\n",
            &Fixed(Err("starting".into())),
        );
        assert!(
            response.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{response}"
        );
        assert!(
            response.ends_with("\r\n\r\nnot ready: starting\n"),
            "{response}"
        );
    }
}
