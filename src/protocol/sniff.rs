//! Recognising a client that speaks TLS to a plain port, from its first bytes.

/// Whether the first bytes a client sent begin a TLS handshake (a handshake record of
/// TLS 1.0 to 1.3: 0x16 0x03 0x01..=0x04): no name, typed or piped, starts that way.
pub fn looks_like_tls(first: &[u8]) -> bool {
    matches!(first, [0x16, 0x03, 0x00..=0x04, ..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_client_hellos_are_recognised() {
        assert!(looks_like_tls(b"\x16\x03\x01\x02\x00"));
        assert!(looks_like_tls(b"\x16\x03\x03"));
        assert!(!looks_like_tls(b"\x16\x03"));
        assert!(!looks_like_tls(b"Alice\n"));
        assert!(!looks_like_tls(b"\x16\x04\x01"));
    }
}
