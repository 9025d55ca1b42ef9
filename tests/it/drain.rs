//! `--drain-delay`: on SIGTERM `/readyz` turns 503 at once, systemd hears `STOPPING=1`,
//! and the server goes on accepting and serving for the delay before the usual graceful
//! shutdown; a second signal skips the rest of the delay.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// One whole session: welcome, a name, `exit`, the close.
fn greet(addr: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(b"Ann\nexit\n")?;
    let mut all = String::new();
    stream.read_to_string(&mut all)?;
    if all != "Welcome!\r\nHello, Ann!\r\nBye!\r\n" {
        return Err(std::io::Error::other(format!("got {all:?}")));
    }
    Ok(())
}

/// A session attempted: when it began and ended, and whether it went through.
struct Attempt {
    began: Instant,
    ended: Instant,
    ok: bool,
}

#[test]
fn sigterm_turns_readyz_503_at_once_and_serves_on_for_the_drain_delay() {
    let dir = temp_dir("drain");
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("bind NOTIFY_SOCKET");
    notify.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut cmd = Command::new(bin());
    cmd.env("NOTIFY_SOCKET", &notify_path).args([
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--drain-delay",
        "2",
    ]);
    let server = Server::start_cmd(&mut cmd, 1);
    let metrics = metrics_addr(&server);
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    assert_eq!(probe(metrics, "/readyz"), (200, "ok\n".to_string()));

    // A client connecting over and over until it is refused.
    let addr = server.addr();
    let (done, served) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (stop, count) = (Arc::clone(&done), Arc::clone(&served));
    let client = thread::spawn(move || {
        let mut attempts = Vec::new();
        let started = Instant::now();
        while !stop.load(Ordering::Relaxed) && started.elapsed() < 4 * IO_TIMEOUT {
            let began = Instant::now();
            let ok = greet(addr).is_ok();
            attempts.push(Attempt {
                began,
                ended: Instant::now(),
                ok,
            });
            if !ok {
                break;
            }
            count.fetch_add(1, Ordering::Relaxed);
            thread::sleep(Duration::from_millis(10));
        }
        attempts
    });
    assert!(
        eventually(IO_TIMEOUT, || served.load(Ordering::Relaxed) >= 3),
        "sessions before the signal"
    );

    let signalled = Instant::now();
    server.signal("TERM");
    let n = notify.recv(&mut buf).expect("STOPPING=1");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    let stopping_heard = signalled.elapsed();
    assert!(
        eventually(Duration::from_secs(1), || probe(metrics, "/readyz").0
            == 503),
        "/readyz still ready after SIGTERM"
    );
    let readyz_turned = signalled.elapsed();
    assert_eq!(
        probe(metrics, "/readyz"),
        (503, "not ready: draining\n".to_string())
    );
    assert_eq!(probe(metrics, "/healthz").0, 200, "alive while draining");

    let attempts = client.join().unwrap();
    done.store(true, Ordering::Relaxed);
    let (code, logs) = server.wait(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("draining"), "{logs}");

    let refused: Vec<_> = attempts.iter().filter(|a| !a.ok).collect();
    assert_eq!(refused.len(), 1, "the client stops at its first refusal");
    // The server's delay begins after the signal was sent: no refusal can come sooner.
    let delay = Duration::from_secs(2);
    let refused_at = refused[0].ended.duration_since(signalled);
    assert!(
        refused_at >= delay,
        "refused {refused_at:?} after SIGTERM, within the drain delay"
    );
    assert!(stopping_heard < delay && readyz_turned < delay);
    let during = attempts
        .iter()
        .filter(|a| a.ok && a.began > signalled && a.began.duration_since(signalled) < delay)
        .count();
    assert!(
        during >= 3,
        "only {during} sessions served during the drain delay"
    );
}

#[test]
fn a_second_signal_skips_the_rest_of_the_drain_delay() {
    let server = Server::start(&["--metrics", "127.0.0.1:0", "--drain-delay", "60"]);
    let metrics = metrics_addr(&server);
    let signalled = Instant::now();
    server.signal("TERM");
    assert!(
        eventually(IO_TIMEOUT, || probe(metrics, "/readyz").0 == 503),
        "not draining"
    );
    greet(server.addr()).expect("still serving while draining");
    server.signal("INT");
    let (code, logs) = server.wait(IO_TIMEOUT);
    // Gracefully (0), not the at-once exit of a second signal without a delay (130).
    assert_eq!(code, Some(0), "{logs}");
    assert!(signalled.elapsed() < Duration::from_secs(30));
    assert!(logs.contains("drain delay skipped"), "{logs}");
}

#[test]
fn without_a_drain_delay_sigterm_stops_at_once_and_readyz_says_so() {
    let server = Server::start(&["--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    // Held open, so that the server lingers for its close and still answers probes.
    let mut held = server.connect();
    assert_eq!(held.text_line(), "Welcome!");
    server.signal("TERM");
    // At once: the held connection hears the shutdown.
    assert_eq!(held.text_line(), "server shutting down");
    assert_eq!(
        probe(metrics, "/readyz"),
        (503, "not ready: stopping\n".to_string())
    );
    drop(held);
    let (code, logs) = server.wait(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{logs}");
    assert!(!logs.contains("draining"), "{logs}");
}

#[test]
fn bad_drain_delays_are_refused_at_start_up_naming_the_flag() {
    for (value, says) in [
        ("-1", "negative"),
        ("soon", "whole number"),
        ("3601", "0 to 3600"),
    ] {
        let done = run_tool(
            &mut hello_cmd("serve", &["--drain-delay", value]),
            None,
            IO_TIMEOUT,
        );
        assert_eq!(done.code, Some(2), "{value}: {}", done.stderr);
        assert!(
            done.stderr.contains("--drain-delay") && done.stderr.contains(says),
            "{value}: {}",
            done.stderr
        );
    }
}
