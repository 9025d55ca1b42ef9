//! Telnet (RFC 854) on the wire: commands removed from what clients send, options
//! refused, and 0xFF data bytes doubled in what the server sends.

use memchr::memchr;

/// Telnet's "interpret as command" byte; a data byte of this value is sent doubled.
pub const IAC: u8 = 255;

const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
const SB: u8 = 250;
const SE: u8 = 240;

/// Where a [`TelnetFilter`] is within a telnet command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum TelnetState {
    #[default]
    Data,
    /// After IAC.
    Command,
    /// After IAC and one of WILL, WONT, DO, DONT (the byte kept), awaiting the option.
    Option(u8),
    /// Inside a subnegotiation (IAC SB ... IAC SE), whose bytes are dropped.
    Sub,
    /// After IAC inside a subnegotiation.
    SubCommand,
}

/// Removes telnet command sequences (RFC 854) from a byte stream, across reads, and
/// refuses every option the client offers or asks for, so that a telnet client's
/// Ctrl-C (IAC IP, IAC DO TIMING-MARK) neither reaches the protocol nor leaves the
/// client waiting for an answer. `IAC IAC` is a literal 0xFF byte.
#[derive(Debug, Clone, Default)]
pub struct TelnetFilter {
    state: TelnetState,
}

impl TelnetFilter {
    /// Filters `data` in place and returns the length of the data left at its start.
    /// Refusals to send back to the client are appended to `answers`, three bytes each.
    pub fn filter(&mut self, data: &mut [u8], answers: &mut Vec<u8>) -> usize {
        if self.state == TelnetState::Data && memchr(IAC, data).is_none() {
            return data.len();
        }
        let mut kept = 0;
        for i in 0..data.len() {
            let byte = data[i];
            self.state = match (self.state, byte) {
                (TelnetState::Data, IAC) => TelnetState::Command,
                (TelnetState::Data, _) => {
                    data[kept] = byte;
                    kept += 1;
                    TelnetState::Data
                }
                (TelnetState::Command, IAC) => {
                    data[kept] = IAC;
                    kept += 1;
                    TelnetState::Data
                }
                (TelnetState::Command, WILL..=DONT) => TelnetState::Option(byte),
                (TelnetState::Command, SB) => TelnetState::Sub,
                (TelnetState::Command, _) => TelnetState::Data,
                (TelnetState::Option(verb), option) => {
                    // Refuse what is offered or asked; never answer a refusal (RFC 1143).
                    match verb {
                        WILL => answers.extend_from_slice(&[IAC, DONT, option]),
                        DO => answers.extend_from_slice(&[IAC, WONT, option]),
                        _ => {}
                    }
                    TelnetState::Data
                }
                (TelnetState::Sub, IAC) => TelnetState::SubCommand,
                (TelnetState::Sub, _) => TelnetState::Sub,
                (TelnetState::SubCommand, SE) => TelnetState::Data,
                (TelnetState::SubCommand, _) => TelnetState::Sub,
            };
        }
        kept
    }
}

/// The length of `data` once every 0xFF in it is doubled.
pub fn telnet_len(data: &[u8]) -> usize {
    data.len() + memchr::memchr_iter(IAC, data).count()
}

/// Copies `data` to the start of `out` with every 0xFF doubled (`IAC IAC`, RFC 854), so
/// that a telnet client shows the byte instead of reading a command from it (`IAC WILL
/// ECHO` would make it stop echoing what its user types). `out` must have room for
/// [`telnet_len`]`(data)` bytes; returns the bytes written.
pub fn telnet_escape(data: &[u8], out: &mut [u8]) -> usize {
    let mut at = 0;
    let mut rest = data;
    while let Some(i) = memchr(IAC, rest) {
        out[at..at + i].copy_from_slice(&rest[..i]);
        out[at + i..at + i + 2].copy_from_slice(&[IAC, IAC]);
        at += i + 2;
        rest = &rest[i + 1..];
    }
    out[at..at + rest.len()].copy_from_slice(rest);
    at + rest.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn telnet(chunks: &[&[u8]]) -> (Vec<u8>, Vec<u8>) {
        let mut f = TelnetFilter::default();
        let (mut data, mut answers) = (Vec::new(), Vec::new());
        for chunk in chunks {
            let mut c = chunk.to_vec();
            let n = f.filter(&mut c, &mut answers);
            data.extend_from_slice(&c[..n]);
        }
        (data, answers)
    }

    #[test]
    fn telnet_ctrl_c_is_removed_and_timing_mark_refused() {
        // What BSD telnet sends for Ctrl-C: IAC IP, IAC DO TIMING-MARK.
        let (data, answers) = telnet(&[b"Bob\xff\xf4\xff\xfd\x06\r\n"]);
        assert_eq!(data, b"Bob\r\n");
        assert_eq!(answers, [IAC, WONT, 6]);
    }

    #[test]
    fn telnet_sequences_split_across_reads() {
        let (data, answers) = telnet(&[b"a\xff", b"\xfb", b"\x01b\xff", b"\xff", b"c"]);
        assert_eq!(data, b"ab\xffc");
        assert_eq!(answers, [IAC, DONT, 1]);
        // Subnegotiation is dropped whole, including an escaped IAC inside it.
        let (data, answers) = telnet(&[b"x\xff\xfa\x18\x01\xff\xff", b"zz\xff\xf0y"]);
        assert_eq!(data, b"xy");
        assert!(answers.is_empty());
        // Refusals are never answered.
        let (data, answers) = telnet(&[b"\xff\xfc\x01\xff\xfe\x01q"]);
        assert_eq!(data, b"q");
        assert!(answers.is_empty());
    }
}
