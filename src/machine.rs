//! What the server learns about its machine at start-up for `{host}` and `{pid}`:
//! reading the host name is I/O, so it lives here, outside the pure protocol.

use crate::protocol::Machine;

impl Machine {
    /// This machine's host name and this process's id. The host name is the kernel's
    /// (`/proc/sys/kernel/hostname`), else `/etc/hostname`'s, else `localhost`: std has
    /// no `gethostname`, and this needs no `unsafe` and no crate. A name that is empty
    /// or holds a control character is passed over, so that it can never break a line.
    pub fn current() -> Self {
        let read = |path: &str| {
            let text = std::fs::read_to_string(path).ok()?;
            let name = text.trim();
            (!name.is_empty() && !name.chars().any(char::is_control)).then(|| name.to_string())
        };
        let host = read("/proc/sys/kernel/hostname")
            .or_else(|| read("/etc/hostname"))
            .unwrap_or_else(|| "localhost".to_string());
        Machine {
            host,
            pid: std::process::id(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_name_is_one_line_of_text() {
        let m = Machine::current();
        assert!(!m.host.is_empty());
        assert!(!m.host.chars().any(char::is_control), "{:?}", m.host);
        assert_eq!(m.pid, std::process::id());
    }
}
