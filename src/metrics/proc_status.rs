//! The process's thread count, read from `/proc/self/status` at scrape time.

/// The `Threads:` count of a `/proc/PID/status` text.
pub fn threads_in_status(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

/// The process's threads now (Linux; `None` elsewhere).
pub fn threads() -> Option<u64> {
    // FreeBSD's procfs, where mounted, has a status file of another format.
    if !cfg!(target_os = "linux") {
        return None;
    }
    threads_in_status(&std::fs::read_to_string("/proc/self/status").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_threads_from_proc_status() {
        let status = "Name:\ttcp-hello\nState:\tS (sleeping)\nThreads:\t17\nSigQ:\t0/1\n";
        assert_eq!(threads_in_status(status), Some(17));
        assert_eq!(threads_in_status("Name:\tx\n"), None);
        if cfg!(target_os = "linux") {
            assert!(threads().is_some_and(|n| n >= 1));
        }
    }
}
