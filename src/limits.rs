//! The system's limits on one process, read at start-up, so that the server says
//! "busy" before it reaches a limit it could not meet gracefully.
//!
//! Two limits matter to a thread per connection. Open files: one per connection. Memory
//! mappings (`vm.max_map_count`, 65,530 by default): every connection thread maps its
//! stack and std's signal stack, each with a guard page, and when a mapping fails inside
//! std's thread start-up, after `spawn` has already succeeded, std cannot unwind and the
//! whole process aborts ("failed to set up alternative stack guard page").

use std::fs;
use std::io;

use log::{debug, warn};

/// File descriptors kept for everything but connections: stdio, logs, what std and
/// glibc open. Each listener takes one more.
pub const FD_RESERVE: u64 = 32;

/// Memory mappings each connection thread adds: its stack and that stack's guard page
/// (glibc), and its signal stack and that one's guard page (std's stack-overflow
/// handler). Measured: 65,530 mappings ran out at 16,366 connections.
pub const MAPS_PER_CONNECTION: usize = 4;

/// Mappings kept for everything but connections: malloc arenas (two mappings each, up
/// to eight arenas per CPU), the buffer pool's large buffers, the signal thread.
pub const MAP_RESERVE: usize = 2048;

/// Raises the soft open-file limit to the hard one, so that one process can hold as
/// many connections as the system lets it (Go's runtime does the same at start-up).
pub fn raise_fd_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Raises the soft open-file limit to the hard one, as nginx and Go do, then lowers
/// `wanted`, with a warning naming the tighter limit, to what the open-file limit and
/// the memory-mapping limit allow.
pub fn connection_limit(wanted: usize, listeners: usize) -> usize {
    let mut limits: Vec<(usize, String)> = Vec::new();
    match raise_fd_limit() {
        Ok(files) => limits.push((
            connections_within_files(files, listeners),
            format!("the open-file limit is {files} (raise it with `ulimit -n`)"),
        )),
        Err(e) => warn!(
            "cannot read the open-file limit ({e}); it may cap connections below --max-connections"
        ),
    }
    match map_count() {
        Ok((max, in_use)) => limits.push((
            connections_within_maps(max, in_use),
            format!(
                "each connection's thread takes {MAPS_PER_CONNECTION} memory mappings and \
                 vm.max_map_count is {max} (raise it with `sysctl -w vm.max_map_count=262144`)"
            ),
        )),
        // Not Linux, or no /proc: nothing to go by.
        Err(e) => debug!("cannot read the memory-mapping limit ({e})"),
    }
    match limits.into_iter().min_by_key(|(allowed, _)| *allowed) {
        Some((allowed, why)) if allowed < wanted => {
            warn!("--max-connections {wanted} lowered to {allowed}: {why}");
            allowed
        }
        _ => wanted,
    }
}

/// Connections that `files` open files leave room for, with `listeners` listening.
pub fn connections_within_files(files: u64, listeners: usize) -> usize {
    let allowed = files.saturating_sub(FD_RESERVE + listeners as u64).max(1);
    usize::try_from(allowed).unwrap_or(usize::MAX)
}

/// Connections that fit under a `max` of memory mappings when `in_use` are taken.
pub fn connections_within_maps(max: usize, in_use: usize) -> usize {
    (max.saturating_sub(in_use + MAP_RESERVE) / MAPS_PER_CONNECTION).max(1)
}

/// `vm.max_map_count`, and the mappings this process has now.
fn map_count() -> io::Result<(usize, usize)> {
    let max = fs::read_to_string("/proc/sys/vm/max_map_count")?;
    let max = max
        .trim()
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("max_map_count: {e}")))?;
    let in_use = fs::read_to_string("/proc/self/maps")?.lines().count();
    Ok((max, in_use))
}

/// Warns when an address-space limit (`ulimit -v`) is set. glibc reserves 64 MiB of it
/// per malloc arena (up to 8 per CPU) and every connection thread maps its stack and
/// signal stack, so such a limit runs out long before memory does; and when it runs out
/// inside std's thread start-up, std cannot refuse the connection: it hangs or aborts.
pub fn warn_of_address_space_limit() {
    if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::AS) {
        if soft != rlimit::INFINITY {
            warn!(
                "the address-space limit (`ulimit -v`) is {} MiB: glibc reserves 64 MiB per \
                 malloc arena and each connection thread about 85 KiB, and a thread that runs out \
                 while starting can hang its client or abort the server; raise it \
                 (`ulimit -v unlimited`) or set MALLOC_ARENA_MAX=2",
                soft >> 20
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_keep_a_reserve_and_one_per_listener() {
        assert_eq!(connections_within_files(1024, 1), 1024 - 33);
        assert_eq!(connections_within_files(1024, 3), 1024 - 35);
        assert_eq!(connections_within_files(10, 1), 1);
    }

    #[test]
    fn the_default_map_count_holds_15000_connections_but_not_16400() {
        let allowed = connections_within_maps(65_530, 40);
        assert!((15_000..16_366).contains(&allowed), "{allowed}");
        assert_eq!(allowed, (65_530 - 40 - MAP_RESERVE) / 4);
        assert_eq!(connections_within_maps(1_000, 40), 1);
        assert_eq!(connections_within_maps(262_144, 40), 65_014);
    }

    #[test]
    fn this_process_can_read_its_map_count_on_linux() {
        if cfg!(target_os = "linux") {
            let (max, in_use) = map_count().unwrap();
            assert!(max > in_use && in_use > 0, "{max} {in_use}");
        }
    }
}
