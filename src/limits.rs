//! The system's limits on one process, read at start-up, so that the server says
//! "busy" before it reaches a limit it could not meet gracefully.
//!
//! Open files: one per connection. Tasks: each connection is a thread, and a thread
//! is a task, counted against `kernel.pid_max`, `kernel.threads-max`, the cgroup's
//! `pids.max` (systemd's `TasksMax=`) and `ulimit -u`. Memory: [`BYTES_PER_CONNECTION`]
//! a held connection, the kernel's included. Memory
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

/// Tasks (threads and processes) kept for everything but connections: the rest of the
/// machine (or of the user) may start some, and the thread cache parks some of ours.
pub const TASK_RESERVE: usize = 160;

/// Memory one held connection takes, user and kernel, for the estimate of how many fit,
/// as the README's "Sizing a machine" accounts it: the process's share (the thread's
/// touched stack pages and its heap), the thread's kernel stack and task structures, and
/// the socket's slab objects.
pub const BYTES_PER_CONNECTION: u64 = 40 * 1024;

/// A system limit on how many connections one process can hold, and how to raise it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Connections it leaves room for.
    pub allows: usize,
    /// What the limit is and the command that raises it.
    pub why: String,
}

/// Raises the soft open-file limit to the hard one, as nginx and Go do, then lowers
/// `wanted`, with a warning naming the tightest limit and every other one it is also
/// above, to what the system allows: open files, memory mappings, tasks
/// (`kernel.pid_max`, `kernel.threads-max`, the cgroup's `pids.max`, `ulimit -u`) and
/// memory.
pub fn connection_limit(wanted: usize, listeners: usize) -> usize {
    let limits = system_limits(listeners);
    let (allowed, message) = tightest(wanted, &limits);
    if let Some(message) = message {
        warn!("{message}");
    }
    allowed
}

/// Every limit this system puts on one process's connections that can be read. Off
/// Linux only the open-file limit: the others come from Linux's /proc, and the BSDs'
/// `ulimit -u` counts processes, not threads.
fn system_limits(listeners: usize) -> Vec<Limit> {
    let mut limits = Vec::new();
    match raise_fd_limit() {
        Ok(files) => limits.push(Limit {
            allows: connections_within_files(files, listeners),
            why: format!(
                "the open-file limit is {files} (raise it with `ulimit -n`, or LimitNOFILE= in \
                 a systemd unit)"
            ),
        }),
        Err(e) => warn!(
            "cannot read the open-file limit ({e}); it may cap connections below --max-connections"
        ),
    }
    if !cfg!(target_os = "linux") {
        return limits;
    }
    match map_count() {
        Ok((max, in_use)) => limits.push(Limit {
            allows: connections_within_maps(max, in_use),
            why: format!(
                "each connection's thread takes {MAPS_PER_CONNECTION} memory mappings and \
                 vm.max_map_count is {max} (raise it with `sysctl -w vm.max_map_count=262144`)"
            ),
        }),
        // No /proc: nothing to go by.
        Err(e) => debug!("cannot read the memory-mapping limit ({e})"),
    }
    limits.extend(task_limits());
    if let Some(available) = available_memory() {
        limits.push(Limit {
            allows: connections_within_memory(available),
            why: format!(
                "{} MiB of memory is available and a held connection takes about {} KiB, \
                 the kernel's included (add memory, or raise the cgroup's memory.max)",
                available >> 20,
                BYTES_PER_CONNECTION >> 10
            ),
        });
    }
    limits
}

/// The limit that binds first, and the warning to give when `wanted` is above it: it
/// names that limit and then every other one `wanted` is also above, so that raising
/// the first does not just reveal the next.
pub fn tightest(wanted: usize, limits: &[Limit]) -> (usize, Option<String>) {
    let mut binding: Vec<&Limit> = limits.iter().filter(|l| l.allows < wanted).collect();
    binding.sort_by_key(|l| l.allows);
    let Some(first) = binding.first() else {
        return (wanted, None);
    };
    let mut message = format!(
        "--max-connections {wanted} lowered to {}: {}",
        first.allows, first.why
    );
    for other in &binding[1..] {
        message.push_str(&format!("; then, at {}: {}", other.allows, other.why));
    }
    (first.allows, Some(message))
}

/// Connections that `available` bytes of memory hold.
pub fn connections_within_memory(available: u64) -> usize {
    usize::try_from(available / BYTES_PER_CONNECTION)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// Connections that `max` tasks leave room for when `running` exist already.
pub fn connections_within_tasks(max: u64, running: u64) -> usize {
    let free = max.saturating_sub(running);
    usize::try_from(free)
        .unwrap_or(usize::MAX)
        .saturating_sub(TASK_RESERVE)
        .max(1)
}

/// The limits on tasks: each connection is a thread, and a thread is a task with a
/// process ID of its own.
fn task_limits() -> Vec<Limit> {
    let mut limits = Vec::new();
    let running = read_number_after("/proc/loadavg", |text| {
        // "0.50 0.40 0.30 2/345 6789": the fourth field is running/total tasks.
        text.split_whitespace().nth(3)?.split('/').nth(1)
    });
    if let Some(running) = running {
        for (file, name, raise) in [
            ("/proc/sys/kernel/pid_max", "kernel.pid_max", "4194304"),
            (
                "/proc/sys/kernel/threads-max",
                "kernel.threads-max",
                "4194304",
            ),
        ] {
            if let Some(max) = read_number_after(file, |text| Some(text.trim())) {
                limits.push(Limit {
                    allows: connections_within_tasks(max, running),
                    why: format!(
                        "each connection is a thread, {name} is {max} and {running} tasks run \
                         already (raise it with `sysctl -w {name}={raise}`)"
                    ),
                });
            }
        }
    }
    if let Some((max, current)) = cgroup_pids() {
        limits.push(Limit {
            allows: connections_within_tasks(max, current),
            why: format!(
                "each connection is a thread and this cgroup's pids.max is {max} with {current} \
                 in use (systemd: TasksMax=infinity in the unit; docker: --pids-limit)"
            ),
        });
    }
    if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NPROC) {
        // Root is exempt from RLIMIT_NPROC.
        let uid = nix::unistd::geteuid();
        if soft != rlimit::INFINITY && !uid.is_root() {
            let running = tasks_of(uid.as_raw());
            limits.push(Limit {
                allows: connections_within_tasks(soft, running),
                why: format!(
                    "each connection is a thread and the per-user limit `ulimit -u` is {soft} \
                     with {running} of this user's tasks running (raise it with `ulimit -u`, or \
                     LimitNPROC= in a systemd unit)"
                ),
            });
        }
    }
    limits
}

/// The tasks (threads) of processes owned by `uid`, counted in /proc.
pub fn tasks_of(uid: u32) -> u64 {
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    let mut count = 0;
    for entry in entries.flatten() {
        let Ok(status) = fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        };
        if field("Uid:") == Some(u64::from(uid)) {
            count += field("Threads:").unwrap_or(1);
        }
    }
    count
}

/// This process's cgroup's `pids.max` and `pids.current`, where it sets a maximum
/// (cgroup v2, or v1's pids controller).
fn cgroup_pids() -> Option<(u64, u64)> {
    let dir = cgroup_dir("pids")?;
    let max = read_number_after(&format!("{dir}/pids.max"), |t| Some(t.trim()))?;
    let current = read_number_after(&format!("{dir}/pids.current"), |t| Some(t.trim()))?;
    Some((max, current))
}

/// The memory this process may still take: the system's available memory, or less
/// under a cgroup's memory limit.
fn available_memory() -> Option<u64> {
    let system = read_number_after("/proc/meminfo", |text| {
        text.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))?
            .trim()
            .strip_suffix("kB")
            .map(str::trim)
    })? * 1024;
    let limited = cgroup_dir("memory").and_then(|dir| {
        let read = |name: &str| read_number_after(&format!("{dir}/{name}"), |t| Some(t.trim()));
        let (max, used) = match (read("memory.max"), read("memory.current")) {
            (Some(max), Some(used)) => (max, used),
            _ => (
                read("memory.limit_in_bytes")?,
                read("memory.usage_in_bytes")?,
            ),
        };
        Some(max.saturating_sub(used))
    });
    Some(limited.map_or(system, |l| l.min(system)))
}

/// The directory of this process's cgroup for `controller`: cgroup v2's unified
/// hierarchy, or v1's hierarchy of that controller.
fn cgroup_dir(controller: &str) -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let dir = if controllers.is_empty() {
            format!("/sys/fs/cgroup{path}")
        } else if controllers.split(',').any(|c| c == controller) {
            format!("/sys/fs/cgroup/{controller}{path}")
        } else {
            continue;
        };
        let probe = if controller == "pids" {
            "pids.max"
        } else {
            "memory.max"
        };
        let v1_probe = "memory.limit_in_bytes";
        if fs::metadata(format!("{dir}/{probe}")).is_ok()
            || (controller == "memory" && fs::metadata(format!("{dir}/{v1_probe}")).is_ok())
        {
            return Some(dir);
        }
    }
    None
}

/// The number in `file` that `pick` finds; `None` if the file, the text or the number
/// is missing (`max` in a cgroup file is no limit).
fn read_number_after(file: &str, pick: impl Fn(&str) -> Option<&str>) -> Option<u64> {
    let text = fs::read_to_string(file).ok()?;
    pick(&text)?.parse().ok()
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

    fn limit(allows: usize, why: &str) -> Limit {
        Limit {
            allows,
            why: why.to_string(),
        }
    }

    #[test]
    fn the_tightest_limit_binds_and_every_other_one_below_the_wish_is_named_after_it() {
        let limits = [
            limit(30_000, "pid_max"),
            limit(15_000, "maps"),
            limit(1_000_000, "memory"),
            limit(19_960, "files"),
        ];
        let (allowed, message) = tightest(100_000, &limits);
        assert_eq!(allowed, 15_000);
        assert_eq!(
            message.unwrap(),
            "--max-connections 100000 lowered to 15000: maps; then, at 19960: files; then, at \
             30000: pid_max"
        );
        assert_eq!(tightest(10_000, &limits), (10_000, None));
        assert_eq!(tightest(10_000, &[]), (10_000, None));
    }

    #[test]
    fn tasks_keep_a_reserve_and_memory_divides_by_a_connection_s_cost() {
        assert_eq!(
            connections_within_tasks(32_768, 300),
            32_768 - 300 - TASK_RESERVE
        );
        assert_eq!(connections_within_tasks(100, 300), 1);
        assert_eq!(connections_within_memory(BYTES_PER_CONNECTION * 1000), 1000);
        assert_eq!(connections_within_memory(0), 1);
    }

    #[test]
    fn this_machine_s_task_limits_can_be_read_on_linux() {
        if cfg!(target_os = "linux") {
            let limits = task_limits();
            assert!(limits.iter().any(|l| l.why.contains("kernel.pid_max is")));
            assert!(
                limits
                    .iter()
                    .any(|l| l.why.contains("kernel.threads-max is"))
            );
            assert!(available_memory().is_some_and(|m| m > 0));
        }
    }

    #[test]
    fn this_process_can_read_its_map_count_on_linux() {
        if cfg!(target_os = "linux") {
            let (max, in_use) = map_count().unwrap();
            assert!(max > in_use && in_use > 0, "{max} {in_use}");
        }
    }
}
