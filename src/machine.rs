//! What the server learns about its machine at start-up for `{host}` and `{pid}`:
//! reading the host name is I/O, so it lives here, outside the pure protocol.

use crate::protocol::Machine;

impl Machine {
    /// This machine's host name and this process's id. The host name is the kernel's
    /// (`/proc/sys/kernel/hostname` on Linux, `gethostname` elsewhere), else
    /// `/etc/hostname`'s, else `localhost`. A name that is empty or holds a control
    /// character is passed over, so that it can never break a line.
    pub fn current() -> Self {
        let usable = |text: &str| {
            let name = text.trim();
            (!name.is_empty() && !name.chars().any(char::is_control)).then(|| name.to_string())
        };
        let read = |path: &str| usable(&std::fs::read_to_string(path).ok()?);
        let kernel = if cfg!(target_os = "linux") {
            read("/proc/sys/kernel/hostname")
        } else {
            // macOS and the BSDs have no such file, and seldom an /etc/hostname.
            nix::unistd::gethostname()
                .ok()
                .and_then(|name| usable(name.to_str()?))
        };
        let host = kernel
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
