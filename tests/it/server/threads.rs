//! Connection threads and closing: a finished thread parks for the next connection
//! (`--thread-cache`), and a closing connection waits for the client at most `--linger`.

use super::*;

/// Runs `clients` connections at once to their end, and returns the server's thread
/// count while they were all open.
fn served_at_once(server: &Server, clients: usize) -> u64 {
    let mut open: Vec<Conn> = (0..clients).map(|_| greeted(server)).collect();
    // Each connection's thread wrote its welcome, so each one exists now.
    let threads = server.proc_status("Threads");
    for c in &mut open {
        say_exit(c);
    }
    threads
}

#[test]
fn finished_connection_threads_park_for_the_next_connections_up_to_the_cache_size() {
    let server = Server::start(&["--thread-cache", "2"]);
    let all_open = served_at_once(&server, 5);
    assert!(
        eventually(IO_TIMEOUT, || server.proc_status("Threads") == all_open - 3),
        "two of the five threads should stay parked: {} threads, {all_open} with all open",
        server.proc_status("Threads")
    );
    // The next connections run on the parked threads: no thread starts.
    let mut next: Vec<Conn> = (0..2).map(|_| greeted(&server)).collect();
    assert_eq!(server.proc_status("Threads"), all_open - 3);
    for c in &mut next {
        say_exit(c);
    }
}

#[test]
fn a_thread_cache_of_zero_ends_every_thread_with_its_connection() {
    let server = Server::start(&["--thread-cache", "0"]);
    let all_open = served_at_once(&server, 5);
    assert!(
        eventually(IO_TIMEOUT, || server.proc_status("Threads") == all_open - 5),
        "{} threads, {all_open} with five open",
        server.proc_status("Threads")
    );
}

/// The connection's socket stays open on the server while the client keeps its end, for
/// at most `--linger`: at once closed with `--linger 0`, still open with `--linger 30`.
#[test]
fn linger_bounds_how_long_a_closing_connection_waits_for_the_client() {
    let (quick, patient) = (
        Server::start(&["--linger", "0"]),
        Server::start(&["--linger", "30"]),
    );
    let idle = (quick.fd_count(), patient.fd_count());
    let mut held = Vec::new();
    for server in [&quick, &patient] {
        let mut c = greeted(server);
        c.send("exit\n");
        assert_eq!(lossy(&c.rest()), "Bye!\r\n");
        // The client keeps its end open: no FIN from it.
        held.push(c);
    }
    assert!(
        eventually(Duration::from_millis(1500), || quick.fd_count() == idle.0),
        "--linger 0 kept the socket open"
    );
    assert_eq!(
        patient.fd_count(),
        idle.1 + 1,
        "--linger 30 closed before the client did"
    );
    drop(held);
    assert!(eventually(IO_TIMEOUT, || patient.fd_count() == idle.1));
}
