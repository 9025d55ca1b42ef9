//! Process signals: handlers installed without losing a signal that arrives meanwhile,
//! and the server's answer to each signal.
//!
//! signal-hook-registry installs the operating system's handler before it records the
//! action the handler should run. A signal that arrives in between runs the handler with
//! nothing to do and is lost: a supervisor that stops a service while it starts would see
//! it neither stop nor die. So every handler is installed with its signals blocked; one
//! that arrives meanwhile stays pending and is delivered, to the installed action, when
//! they are unblocked.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

use log::{error, info, warn};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::rules::LiveRules;
use crate::server::ShutdownHandle;
use crate::tls::Tls;

/// Runs `install` with `signals` blocked on the calling thread, then unblocks them, so
/// that one arriving meanwhile is delivered to what `install` set up.
///
/// Call it before the process starts other threads, or after starting only threads that
/// block them ([`spawn_blocking_stops`]): the kernel gives a process-wide signal to any
/// thread that does not block it.
pub fn install_blocking<T>(
    signals: &[Signal],
    install: impl FnOnce() -> io::Result<T>,
) -> io::Result<T> {
    let mut set = SigSet::empty();
    for &signal in signals {
        set.add(signal);
    }
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).map_err(io::Error::from)?;
    let installed = install();
    // Only what this call blocked is unblocked: a signal the caller had blocked stays so.
    let mut unblock = SigSet::empty();
    for &signal in signals {
        if !old.contains(signal) {
            unblock.add(signal);
        }
    }
    pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&unblock), None).map_err(io::Error::from)?;
    installed
}

/// The signals that a thread started before their handlers blocks: the server's own
/// (SIGINT, SIGTERM, SIGHUP), and SIGQUIT.
const BLOCKED_EARLY: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// Starts `f` on a thread of `builder` with the server's signals (and SIGQUIT) blocked
/// from its first instruction, for the rest of its life. Every thread the server starts
/// before it installs their handlers ([`serve_signals`]) starts here: a signal that
/// arrives while a handler is being installed is delivered to a thread that does not
/// block it, where it runs the handler before the handler has its action, and is lost.
pub fn spawn_blocking_stops<F, T>(
    builder: thread::Builder,
    f: F,
) -> io::Result<thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let mut set = SigSet::empty();
    for signal in BLOCKED_EARLY {
        set.add(signal);
    }
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).map_err(io::Error::from)?;
    // The new thread inherits this thread's mask.
    let spawned = builder.spawn(f);
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None).map_err(io::Error::from)?;
    spawned
}

/// What the server does on a signal, by how many stop signals came before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The first SIGINT or SIGTERM: drain (with `--drain-delay`), then graceful shutdown.
    Shutdown,
    /// A later SIGINT or SIGTERM during the drain delay: the rest of it is skipped.
    SkipDelay,
    /// A later SIGINT or SIGTERM: exit at once, with this status.
    Exit(i32),
    /// SIGHUP: reload the TLS files and the rule files, if there are any; never a stop.
    Reload,
}

/// The server's answer to `signal` when `stops_before` SIGINT or SIGTERM came before it;
/// `delaying`: the drain delay is under way.
pub fn action(signal: i32, stops_before: u32, delaying: bool) -> Action {
    match signal {
        SIGHUP => Action::Reload,
        _ if stops_before == 0 => Action::Shutdown,
        _ if delaying => Action::SkipDelay,
        _ => Action::Exit(128 + signal),
    }
}

/// Installs the server's signal handling: the first SIGINT or SIGTERM drains `server`
/// for its drain delay and then stops it gracefully ([`ShutdownHandle::drain`]); a second
/// during the delay skips the rest of it, and one after that exits at once; SIGHUP
/// reloads the TLS certificate, key and client CA (`tls`) and the address rule files
/// (`rules`), and is logged and ignored without either; it never stops the server. Under
/// systemd (Type=notify), stopping is announced with `STOPPING=1` as the drain begins.
/// The signals are read on a thread of their own.
pub fn serve_signals(
    server: ShutdownHandle,
    tls: Option<Arc<Tls>>,
    rules: Option<Arc<LiveRules>>,
) -> io::Result<()> {
    let wanted = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];
    let mut signals = install_blocking(&wanted, || Signals::new([SIGINT, SIGTERM, SIGHUP]))?;
    let reloads = (tls.is_some() || rules.is_some()).then(|| Reloads::new(tls, rules));
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stops = 0;
            for signal in signals.forever() {
                match action(signal, stops, server.in_drain_delay()) {
                    Action::Reload => match &reloads {
                        None => info!(
                            "signal {signal} (SIGHUP): ignored, there is nothing to reload \
                             without TLS or a rule file; SIGTERM or SIGINT stops the server"
                        ),
                        Some(reloads) => reloads.request(signal),
                    },
                    Action::Shutdown => {
                        stops += 1;
                        match server.drain_delay().as_secs() {
                            0 => info!("signal {signal}: stopping; a second signal exits at once"),
                            secs => info!(
                                "signal {signal}: stopping after a drain delay of {secs} s; a \
                                 second signal skips the rest of it"
                            ),
                        }
                        // So that systemd shows the unit deactivating while it drains; a
                        // no-op unless it runs us as Type=notify.
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                        server.drain();
                    }
                    Action::SkipDelay => {
                        stops += 1;
                        info!(
                            "signal {signal} again: the rest of the drain delay skipped; \
                             stopping; another signal exits at once"
                        );
                        server.skip_drain_delay();
                    }
                    Action::Exit(status) => {
                        warn!(
                            "signal {signal} again: exiting with {} connections open",
                            server.connections()
                        );
                        std::process::exit(status);
                    }
                }
            }
        })?;
    Ok(())
}

/// SIGHUP's reloads, run off the thread that reads the signals: reading the files can
/// hang (a FIFO in a file's place, a hung network mount), and that thread must stay free
/// to stop the server. One reload runs at a time, on a thread of its own; SIGHUPs that
/// arrive meanwhile make one more run after it, so that the files are read as they are
/// now, and a hung reload holds one thread, however many SIGHUPs follow.
struct Reloads {
    tls: Option<Arc<Tls>>,
    rules: Option<Arc<LiveRules>>,
    state: Mutex<ReloadState>,
}

#[derive(Default)]
struct ReloadState {
    /// A reload thread is running.
    running: bool,
    /// A SIGHUP came while it ran: it reloads once more.
    again: bool,
}

impl Reloads {
    fn new(tls: Option<Arc<Tls>>, rules: Option<Arc<LiveRules>>) -> Arc<Reloads> {
        Arc::new(Reloads {
            tls,
            rules,
            state: Mutex::new(ReloadState::default()),
        })
    }

    /// Starts a reload for `signal`; with one running, has it reload once more after.
    fn request(self: &Arc<Self>, signal: i32) {
        {
            let mut state = self.lock();
            if state.running {
                state.again = true;
                warn!(
                    "signal {signal} (SIGHUP): the last reload is still reading the files (is \
                     one a FIFO, or on a network mount that hangs?); reloading again once it \
                     has finished"
                );
                return;
            }
            state.running = true;
        }
        let reloads = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name("reload".into())
            .spawn(move || reloads.run(signal));
        if let Err(e) = spawned {
            self.lock().running = false;
            error!(
                "signal {signal} (SIGHUP): cannot start a thread to reload ({e}); still \
                 serving with the files loaded before; send SIGHUP again to retry"
            );
        }
    }

    /// The reload thread: reloads until no SIGHUP came during the last reload.
    fn run(&self, signal: i32) {
        loop {
            // Each on its own: a broken certificate does not keep new rules out.
            if let Some(tls) = &self.tls {
                reload(tls, signal);
            }
            if let Some(rules) = &self.rules {
                reload_rules(rules, signal);
            }
            let mut state = self.lock();
            if !state.again {
                state.running = false;
                return;
            }
            state.again = false;
        }
    }

    fn lock(&self) -> MutexGuard<'_, ReloadState> {
        // Every update is a single assignment: consistent even after a panic elsewhere.
        crate::sync::lock(&self.state)
    }
}

/// Reloads the TLS files for `signal`, and logs the outcome.
fn reload(tls: &Tls, signal: i32) {
    match tls.reload() {
        Ok(()) => info!(
            "signal {signal} (SIGHUP): reloaded {} and {}{}; new connections use them",
            tls.files().cert.display(),
            tls.files().key.display(),
            tls.files()
                .client_ca
                .as_ref()
                .map_or(String::new(), |ca| format!(" and {}", ca.display()))
        ),
        Err(e) => error!(
            "signal {signal} (SIGHUP): reload failed, still serving the certificates loaded \
             before: {e}"
        ),
    }
}

/// Reloads the address rule files for `signal`, and logs the outcome: what changed, or
/// why the rules in force stay.
fn reload_rules(rules: &LiveRules, signal: i32) {
    match rules.reload() {
        Ok(reloaded) if reloaded.refuses_everyone => {
            warn!("signal {signal} (SIGHUP): {reloaded}")
        }
        Ok(reloaded) => info!("signal {signal} (SIGHUP): {reloaded}"),
        Err(e) => error!(
            "signal {signal} (SIGHUP): address rules not reloaded, the rules loaded before \
             stay in force: {e}; fix the file and send SIGHUP again"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_stop_signal_shuts_down_second_exits_and_sighup_never_stops() {
        assert_eq!(action(SIGTERM, 0, false), Action::Shutdown);
        assert_eq!(action(SIGINT, 0, false), Action::Shutdown);
        assert_eq!(action(SIGINT, 1, false), Action::Exit(130));
        assert_eq!(action(SIGTERM, 1, false), Action::Exit(143));
        assert_eq!(action(SIGHUP, 0, false), Action::Reload);
        assert_eq!(action(SIGHUP, 1, true), Action::Reload);
    }

    #[test]
    fn a_second_stop_signal_during_the_drain_delay_skips_it_and_a_third_exits() {
        assert_eq!(action(SIGTERM, 1, true), Action::SkipDelay);
        assert_eq!(action(SIGINT, 1, true), Action::SkipDelay);
        assert_eq!(action(SIGTERM, 2, false), Action::Exit(143));
        // A drain delay does not turn the first signal into anything but the drain.
        assert_eq!(action(SIGTERM, 0, true), Action::Shutdown);
    }

    #[test]
    fn a_signal_raised_while_installing_reaches_the_handler() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        // SIGUSR2 is not used elsewhere in the tests. Raised before its handler exists
        // (where unblocked it would kill the test process), it must wait and then reach
        // the handler installed after it.
        let seen = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&seen);
        install_blocking(&[Signal::SIGUSR2], || {
            nix::sys::signal::raise(Signal::SIGUSR2).map_err(io::Error::from)?;
            signal_hook::flag::register(signal_hook::consts::SIGUSR2, flag)
        })
        .unwrap();
        assert!(seen.load(Ordering::SeqCst));
    }
}
