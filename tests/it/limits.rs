//! The system's limits on one process (`src/limits.rs`): what the server does when a
//! limit it cannot meet gracefully would be reached.

use std::time::Duration;

use crate::common::*;

/// Connections opened before their welcomes are read.
const BATCH: usize = 256;

/// `vm.max_map_count`: how many memory mappings one process may have.
fn max_map_count() -> usize {
    let text = std::fs::read_to_string("/proc/sys/vm/max_map_count").expect("read max_map_count");
    text.trim().parse().expect("max_map_count is a number")
}

/// Each connection thread takes 4 memory mappings (stack and signal stack, each with a
/// guard page), and a mapping that fails inside std's thread start-up aborts the whole
/// process. The server lowers its limit to fit: the next client gets the busy line,
/// and everyone else goes on being served.
#[test]
fn more_connections_than_memory_mappings_allow_get_the_busy_line_not_an_abort() {
    let max_maps = max_map_count();
    let fits = max_maps / 4;
    if fits > 40_000 {
        eprintln!(
            "SKIPPED: vm.max_map_count {max_maps} allows more connections than this test opens"
        );
        return;
    }
    // The server inherits the hard limit: it must be the mappings, not the files, that bind.
    let _fds = FdBudget::take();
    let files = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    if files < fits as u64 + 500 {
        eprintln!(
            "SKIPPED: the open-file hard limit {files} binds before vm.max_map_count {max_maps} \
             does; raise it (ulimit -Hn {}) to run this test",
            fits + 500
        );
        return;
    }
    let server = Server::start(&["-q", "--max-connections", "100000000"]);
    // Connections open in batches, each connected before any welcome is read, so that a
    // loaded machine does not pay a scheduling round trip per connection.
    let mut conns = Vec::with_capacity(fits);
    let mut refusals = Vec::new();
    while refusals.is_empty() {
        assert!(
            conns.len() <= fits,
            "{} connections held: more than {max_maps} mappings allow",
            conns.len()
        );
        let batch: Vec<Lean> = (0..BATCH)
            .map(|k| {
                Lean::open(server.addr())
                    .unwrap_or_else(|e| panic!("connect {}: {e}", conns.len() + k))
            })
            .collect();
        for mut c in batch {
            let line = c
                .line()
                .unwrap_or_else(|e| panic!("a connection's first line: {e}"));
            if line == "Welcome!\r\n" && refusals.is_empty() {
                conns.push(c);
            } else {
                refusals.push(line);
            }
        }
    }
    let held = conns.len();
    let busy = &refusals[0];
    assert!(refusals.iter().all(|line| line == busy), "{refusals:?}");
    assert_eq!(
        *busy,
        format!("ERROR server busy ({held} connections), try again later\r\n")
    );
    assert!(held > (max_maps - 4096) / 4, "only {held} connections held");
    for i in [0, held / 2, held - 1] {
        conns[i].send(&format!("still{i}\n")).unwrap();
        assert_eq!(conns[i].line().unwrap(), format!("Hello, still{i}!\r\n"));
    }
    conns.truncate(held - 10);
    let served_again = eventually(Duration::from_secs(10), || {
        Lean::open(server.addr())
            .and_then(|mut c| c.line())
            .is_ok_and(|l| l == "Welcome!\r\n")
    });
    assert!(served_again, "a newcomer is served once connections leave");
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", server.pid())).unwrap();
    eprintln!(
        "mappings: {held} connections held under vm.max_map_count {max_maps} ({} mappings in use), \
         then the busy line; served again after 10 left",
        maps.lines().count()
    );
    let logs = server.stop_and_logs();
    assert!(
        logs.contains("vm.max_map_count"),
        "the lowered limit is explained: {logs}"
    );
}
