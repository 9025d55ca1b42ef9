//! The connection handler against a simple reference model, over an in-memory stream:
//! any bytes, cut into any reads (1 byte to megabytes), give exactly the model's output.
//! No sockets: `connection::serve` works over any `Read + Write`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::Duration;

use proptest::prelude::*;
use tcp_hello::connection::{self, CloseReason, Context, Peer};
use tcp_hello::protocol::{Framing, Machine, Mode, ReplyTemplate, Settings, TemplateField};

/// Reads return the scripted chunks (split further if the reader's buffer is smaller),
/// then EOF; writes are collected.
struct Script {
    chunks: VecDeque<Vec<u8>>,
    out: Vec<u8>,
}

impl Read for Script {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(mut chunk) = self.chunks.pop_front() else {
            return Ok(0);
        };
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        if n < chunk.len() {
            chunk.drain(..n);
            self.chunks.push_front(chunk);
        }
        Ok(n)
    }
}

impl connection::Transport for Script {
    // No socket: its reads never wait.
    fn set_read_timeout(&self, _: Option<std::time::Duration>) -> io::Result<()> {
        Ok(())
    }
}

impl Write for Script {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn settings(max_line: usize) -> Settings {
    Settings {
        max_line,
        ..Settings::default()
    }
}

/// Runs the real handler over `input` cut at `cuts` (chunk sizes, cycled).
fn run(settings: Settings, input: &[u8], cuts: &[usize]) -> (Vec<u8>, CloseReason) {
    let mut chunks = VecDeque::new();
    let mut rest = input;
    for &cut in cuts.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let n = cut.clamp(1, rest.len());
        chunks.push_back(rest[..n].to_vec());
        rest = &rest[n..];
    }
    let mut script = Script {
        chunks,
        out: Vec::new(),
    };
    let ctx = Context::new(settings, None, Duration::ZERO);
    let peer = Peer {
        id: 1,
        addr: "127.0.0.1:1".parse().unwrap(),
        local: "127.0.0.1:9999".parse().unwrap(),
    };
    let summary = connection::serve(&mut script, &ctx, peer);
    (script.out, summary.reason)
}

/// Telnet commands removed the simple way, over the whole input at once. Sequences that
/// ask for an answer (DO, WILL) are left out of the generated inputs.
fn model_telnet(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        if input[i] != 0xff {
            out.push(input[i]);
            i += 1;
            continue;
        }
        match input.get(i + 1) {
            None => break,
            Some(0xff) => {
                out.push(0xff);
                i += 2;
            }
            Some(251..=254) => i += 3,
            Some(250) => {
                // Skip to IAC SE.
                let mut j = i + 2;
                loop {
                    match (input.get(j), input.get(j + 1)) {
                        (None, _) => return out,
                        (Some(0xff), Some(240)) => break,
                        (Some(0xff), _) => j += 2,
                        _ => j += 1,
                    }
                }
                i = j + 2;
            }
            Some(_) => i += 2,
        }
    }
    out
}

/// The message without its surrounding spaces and tabs, the only blanks (README,
/// protocol rule 4).
fn model_word(line: &[u8]) -> &[u8] {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    match line.iter().position(|b| !blank(b)) {
        Some(start) => &line[start..=line.iter().rposition(|b| !blank(b)).unwrap_or(start)],
        None => &line[..0],
    }
}

fn model_is_exit(line: &[u8]) -> bool {
    let word = model_word(line);
    word.eq_ignore_ascii_case(b"exit") || word.eq_ignore_ascii_case(b"quit")
}

/// `Hello, <line>!` with every 0xFF of the line doubled, as telnet requires.
fn model_reply(line: &[u8], eol: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"Hello, ");
    for &b in line {
        out.push(b);
        if b == 0xff {
            out.push(0xff);
        }
    }
    out.extend_from_slice(b"!");
    out.extend_from_slice(eol);
}

/// The protocol as the README states it, written as plainly as possible.
fn model(input: &[u8], max_line: usize) -> Vec<u8> {
    let data = model_telnet(input);
    let mut out = b"Welcome!\r\n".to_vec();
    // Returns false once the session is over.
    let answer = |line: &[u8], out: &mut Vec<u8>| -> bool {
        // An exit word of up to 64 bytes with its blanks is one whatever --max-line is.
        let exit_word = model_is_exit(line) && line.len() <= max_line.max(64);
        if line.len() > max_line && !exit_word {
            out.extend_from_slice(
                format!("ERROR line too long (max {max_line} bytes), skipped\r\n").as_bytes(),
            );
            return true;
        }
        if model_word(line).is_empty() {
            return true;
        }
        if exit_word {
            out.extend_from_slice(b"Bye!\r\n");
            return false;
        }
        model_reply(line, b"\r\n", out);
        true
    };
    let mut line = Vec::new();
    for &b in &data {
        let ends = b == b'\n' || (b == 0 && line.last() == Some(&b'\r'));
        if !ends {
            line.push(b);
            continue;
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if !answer(&line, &mut out) {
            return out;
        }
        line.clear();
    }
    if !line.is_empty() {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        answer(&line, &mut out);
    }
    out
}

/// Pieces that make up interesting inputs.
fn token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-zA-Z0-9 ]{1,12}".prop_map(String::into_bytes),
        1 => Just("张三".as_bytes().to_vec()),
        1 => prop::collection::vec(0u8..0xff, 1..40),
        3 => Just(b"\n".to_vec()),
        2 => Just(b"\r\n".to_vec()),
        1 => Just(b"\r\0".to_vec()),
        1 => Just(b"\r".to_vec()),
        1 => Just(b"\0".to_vec()),
        1 => Just(b"  eXit \n".to_vec()),
        1 => Just(b"quit\r\n".to_vec()),
        1 => Just(vec![0xff, 0xf4]),            // IAC IP (telnet's Ctrl-C)
        1 => Just(vec![0xff, 0xff]),            // a literal 0xFF
        1 => Just(vec![0xff, 0xfc, 0x06]),      // IAC WONT TM: no answer
        1 => Just(vec![0xff, 0xfa, 0x18, 0x00, b'x', 0xff, 0xf0]), // subnegotiation
        1 => (1usize..3000).prop_map(|n| vec![b'L'; n]),
    ]
}

/// Pieces of chunk-framed input: no telnet commands, whose removal could empty a read.
fn chunk_token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-zA-Z0-9 ]{1,12}".prop_map(String::into_bytes),
        1 => prop::collection::vec(0u8..0xff, 1..40),
        2 => Just(b"\n".to_vec()),
        1 => Just(b"\r\n".to_vec()),
        1 => Just(b"exit".to_vec()),
        1 => Just(b"  QUIT \n".to_vec()),
        1 => (1usize..300).prop_map(|n| vec![b'L'; n]),
    ]
}

/// Chunk framing as the README states it: each read (the client's writes, `cuts`, as
/// read at most 1,024 bytes or --max-line at a time, but at least 64 so that an exit
/// word arrives whole) is one message, trailing CR and LF removed; a read that is not an
/// exit word is answered in pieces of --max-line, as separate reads would have been.
fn model_chunks(input: &[u8], cuts: &[usize], max_line: usize) -> Vec<u8> {
    let piece = max_line.min(1024);
    let read = piece.max(64);
    let strip = |m: &[u8]| -> usize {
        m.iter()
            .rposition(|&b| b != b'\n' && b != b'\r')
            .map_or(0, |i| i + 1)
    };
    let mut out = b"Welcome!".to_vec();
    let mut rest = input;
    for &cut in cuts.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let mut write = &rest[..cut.clamp(1, rest.len())];
        rest = &rest[write.len()..];
        while !write.is_empty() {
            let got = &write[..read.min(write.len())];
            write = &write[got.len()..];
            if model_is_exit(&got[..strip(got)]) {
                out.extend_from_slice(b"Bye!");
                return out;
            }
            for message in got.chunks(piece) {
                let message = &message[..strip(message)];
                if model_is_exit(message) {
                    out.extend_from_slice(b"Bye!");
                    return out;
                }
                if !model_word(message).is_empty() {
                    model_reply(message, b"", &mut out);
                }
            }
        }
    }
    out
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![1usize..4, 1usize..200, 1usize..70_000], 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn lines_match_the_model(
        tokens in prop::collection::vec(token(), 0..80),
        cuts in cuts(),
        max_line in prop_oneof![
            3 => 1usize..=20,
            1 => Just(64usize),
            1 => Just(100),
            1 => Just(2000),
            1 => Just(8192),
        ],
    ) {
        let input = tokens.concat();
        // A TLS handshake's first bytes close the connection (no model of that here).
        prop_assume!(!tcp_hello::protocol::looks_like_tls(&input));
        let (out, _) = run(settings(max_line), &input, &cuts);
        prop_assert_eq!(out, model(&input, max_line));
    }

    #[test]
    fn any_bytes_without_telnet_match_the_model(
        input in prop::collection::vec(0u8..0xff, 0..5000),
        cuts in cuts(),
        max_line in prop_oneof![2 => 1usize..=20, 1 => Just(64), 1 => Just(8192)],
    ) {
        prop_assume!(!tcp_hello::protocol::looks_like_tls(&input));
        let (out, _) = run(settings(max_line), &input, &cuts);
        prop_assert_eq!(out, model(&input, max_line));
    }

    #[test]
    fn chunks_match_the_model(
        tokens in prop::collection::vec(chunk_token(), 0..40),
        cuts in prop::collection::vec(1usize..200, 1..8),
        max_line in prop_oneof![3 => 1usize..=20, 1 => Just(64), 1 => Just(8192)],
    ) {
        let input = tokens.concat();
        prop_assume!(!tcp_hello::protocol::looks_like_tls(&input));
        let s = Settings { framing: Framing::Chunk, max_line, ..Settings::default() };
        let (out, _) = run(s, &input, &cuts);
        prop_assert_eq!(out, model_chunks(&input, &cuts, max_line));
    }

    #[test]
    fn any_bytes_at_all_never_panic_and_stay_bounded(
        input in prop::collection::vec(any::<u8>(), 0..5000),
        cuts in cuts(),
    ) {
        let (out, reason) = run(settings(64), &input, &cuts);
        prop_assert!(matches!(reason, CloseReason::Exit | CloseReason::ClientClosed));
        // Every input byte yields at most one reply's worth of output (or a 3-byte
        // telnet refusal), so output cannot grow without bound.
        prop_assert!(out.len() <= 10 + input.len() * (64 + 10));
    }

    #[test]
    fn echo_returns_every_byte(
        input in prop::collection::vec(any::<u8>(), 0..100_000),
        cuts in cuts(),
    ) {
        let s = Settings { mode: Mode::Echo, ..Settings::default() };
        let (out, reason) = run(s, &input, &cuts);
        prop_assert_eq!(out, input);
        prop_assert_eq!(reason, CloseReason::ClientClosed);
    }
}

#[test]
fn thousands_of_lines_in_one_read_get_one_reply_each_in_order() {
    let input: Vec<u8> = (0..20_000)
        .flat_map(|i| format!("n{i}\n").into_bytes())
        .collect();
    let (out, _) = run(settings(8192), &input, &[input.len()]);
    assert_eq!(out, model(&input, 8192));
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 20_001);
}

#[test]
fn a_huge_line_is_skipped_with_one_notice_and_the_next_line_answered() {
    let mut input = vec![b'x'; 3_000_000];
    input.extend_from_slice(b"\nBob\n");
    for cuts in [&[1usize << 20][..], &[65_536], &[7, 100_000]] {
        let (out, _) = run(settings(8192), &input, cuts);
        assert_eq!(
            out,
            b"Welcome!\r\nERROR line too long (max 8192 bytes), skipped\r\nHello, Bob!\r\n"
        );
    }
}

#[test]
fn telnet_option_requests_are_refused_in_place() {
    // Ctrl-C from BSD telnet: IAC IP, IAC DO TIMING-MARK; then a name.
    let (out, _) = run(settings(8192), b"\xff\xf4\xff\xfd\x06Bob\r\n", &[100]);
    assert_eq!(out, b"Welcome!\r\n\xff\xfc\x06Hello, Bob!\r\n");
}

#[test]
fn chunk_framing_answers_each_read_without_line_endings() {
    let s = Settings {
        framing: Framing::Chunk,
        reply: ReplyTemplate::parse("Hello,{}!", TemplateField::Reply, &Machine::current())
            .unwrap(),
        ..Settings::default()
    };
    let mut script_chunks = vec![b"Michael".to_vec(), b"Tracy\n".to_vec(), b"exit".to_vec()];
    let input = script_chunks.concat();
    let cuts: Vec<usize> = script_chunks.drain(..).map(|c| c.len()).collect();
    let (out, reason) = run(s, &input, &cuts);
    assert_eq!(out, b"Welcome!Hello,Michael!Hello,Tracy!Bye!");
    assert_eq!(reason, CloseReason::Exit);
}

/// A fuzz-style run of the line decoder: a million pseudo-random bytes, biased towards
/// line endings, CR, NUL and long lines, in pseudo-random reads; output equals the model.
#[test]
fn fuzz_line_decoder_against_the_model() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..20 {
        let len = 50_000;
        let input: Vec<u8> = (0..len)
            .map(|_| match next() % 16 {
                0 => b'\n',
                1 => b'\r',
                2 => 0,
                3 => b' ',
                _ => (next() % 0xff) as u8,
            })
            .collect();
        let cuts: Vec<usize> = (0..16).map(|_| 1 + (next() % 5000) as usize).collect();
        let max_line = [8, 100, 8192][round % 3];
        let (out, _) = run(settings(max_line), &input, &cuts);
        assert_eq!(out, model(&input, max_line), "round {round}");
    }
}
