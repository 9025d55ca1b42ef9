//! The line protocol.

use super::*;

#[test]
fn pipelining_5000_lines_in_one_write() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    const N: usize = 5000;
    let mut batch = Vec::new();
    for i in 0..N {
        writeln!(batch, "name-{i}").unwrap();
    }
    batch.extend_from_slice(b"exit\n");
    // Write from another thread so that neither side can block the other.
    let mut writer = c.stream.try_clone().unwrap();
    let sender = thread::spawn(move || writer.write_all(&batch));
    for i in 0..N {
        assert_eq!(c.text_line(), format!("Hello, name-{i}!"), "reply {i}");
    }
    assert_eq!(lossy(&c.rest()), "Bye!\r\n");
    sender.join().unwrap().expect("send the batch");
}

#[test]
fn pipelining_crlf_lines_of_varying_length() {
    // Reads end at arbitrary points of a CRLF stream (between CR and LF too), and
    // later reads are shorter than earlier ones (stale bytes behind the new end).
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    const N: usize = 5000;
    let mut batch = Vec::new();
    for i in 0..N {
        let name = "x".repeat(i % 37 + 1);
        write!(batch, "{i}{name}\r\n").unwrap();
    }
    batch.extend_from_slice(b"exit\r\n");
    let mut writer = c.stream.try_clone().unwrap();
    let sender = thread::spawn(move || writer.write_all(&batch));
    for i in 0..N {
        let name = "x".repeat(i % 37 + 1);
        assert_eq!(c.text_line(), format!("Hello, {i}{name}!"), "reply {i}");
    }
    assert_eq!(lossy(&c.rest()), "Bye!\r\n");
    sender.join().unwrap().expect("send the batch");
}

#[test]
fn interactive_session_with_a_shorter_second_name() {
    // The most ordinary session: one name, its reply, then a shorter name.
    // Regression test: at 1e08f09 the server found a phantom line `e` in the leftovers
    // of `Alice\n`, and the connection thread panicked: `Bob` was never answered and
    // the socket never closed.
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    c.send("Alice\n");
    assert_eq!(c.text_line(), "Hello, Alice!");
    c.send("Bob\n");
    assert_eq!(c.text_line(), "Hello, Bob!");
    say_exit(&mut c);
}

#[test]
fn partial_line_completed_by_a_later_write() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    c.send("Alice\n");
    assert_eq!(c.text_line(), "Hello, Alice!");
    // `Bo` lands where `Alice\n` was: the server must not see `Boice`.
    c.send("Bo");
    c.send("b\n");
    assert_eq!(c.text_line(), "Hello, Bob!");
    say_exit(&mut c);
}

#[test]
fn connections_never_see_each_others_bytes() {
    // Regression test: at 1e08f09 the line scanner read past the end of the received
    // bytes, into a pooled buffer still holding the previous connection's input, and
    // B was sent `Hello, bbb…A-secret-password A-secret-password…!`.
    let server = Server::start(&["--max-line", "65536"]);
    // A sends one long line: its connection borrows a large buffer pair from the
    // pool, fills it with A's bytes, and gives it back when it leaves.
    let mut a = greeted(&server);
    let secret = "A-secret-password ".repeat(3000);
    a.send(format!("{secret}\nexit\n"));
    assert_eq!(lossy(&a.rest()), format!("Hello, {secret}!\r\nBye!\r\n"));
    drop(a);
    // B sends one 1500-byte name: more than the small buffer, so B borrows the pair.
    let mut b = greeted(&server);
    let name = "b".repeat(1500);
    b.send(format!("{name}\nexit\n"));
    let got = lossy(&b.rest());
    assert!(!got.contains("secret"), "B was sent A's data: {got:?}");
    assert_eq!(got, format!("Hello, {name}!\r\nBye!\r\n"));
}

#[test]
fn line_endings_lf_crlf_and_telnet_cr_nul() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    c.send("lf\ncrlf\r\ncrnul\r\0a\rb\nnul\0inside\nexit\r\n");
    // Everything the server sends ends in CRLF (text_line checks it).
    assert_eq!(c.text_line(), "Hello, lf!");
    assert_eq!(c.text_line(), "Hello, crlf!");
    assert_eq!(c.text_line(), "Hello, crnul!");
    // A lone CR and a NUL without CR are data.
    assert_eq!(c.line(), b"Hello, a\rb!\r\n");
    assert_eq!(c.line(), b"Hello, nul\0inside!\r\n");
    assert_eq!(lossy(&c.rest()), "Bye!\r\n");
}

#[test]
fn utf8_and_invalid_bytes_pass_through_verbatim() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    let mut input = Vec::new();
    input.extend_from_slice("张三\n".as_bytes());
    input.extend_from_slice("Zoë 🦀\n".as_bytes());
    input.extend_from_slice(b"bad\xc3\x28\xfe\x80end\n");
    // 0xFF is telnet IAC: a literal 0xFF is sent doubled.
    input.extend_from_slice(b"lit\xff\xffbyte\n");
    input.extend_from_slice(b"exit\n");
    c.send(&input);
    assert_eq!(c.line(), "Hello, 张三!\r\n".as_bytes());
    assert_eq!(c.line(), "Hello, Zoë 🦀!\r\n".as_bytes());
    assert_eq!(c.line(), b"Hello, bad\xc3\x28\xfe\x80end!\r\n");
    // ... and comes back doubled in the reply.
    assert_eq!(c.line(), b"Hello, lit\xff\xffbyte!\r\n");
    assert_eq!(c.rest(), b"Bye!\r\n");
}

#[test]
fn telnet_commands_are_removed_and_options_refused() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    // Telnet's Ctrl-C (IAC IP, IAC DO TIMING-MARK) in the middle of a name, then
    // IAC WILL ECHO and a subnegotiation (IAC SB ... IAC SE).
    c.send(b"Bo\xff\xf4\xff\xfd\x06b\r\n");
    // The refusal (IAC WONT TIMING-MARK) comes first, then the reply without the commands.
    assert_eq!(c.exact(3), b"\xff\xfc\x06");
    assert_eq!(c.line(), b"Hello, Bob!\r\n");
    c.send(b"\xff\xfb\x01Carol\xff\xfa\x18\x01xterm\xff\xf0\r\nexit\r\n");
    assert_eq!(
        c.exact(3),
        b"\xff\xfe\x01",
        "IAC WILL ECHO gets IAC DONT ECHO"
    );
    assert_eq!(c.line(), b"Hello, Carol!\r\n");
    assert_eq!(c.rest(), b"Bye!\r\n");
}

#[test]
fn ctrl_c_on_its_own_line_gets_no_reply() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    // What telnet sends for Ctrl-C, then the next typed line.
    c.send(b"\xff\xf4\xff\xfd\x06");
    assert_eq!(c.exact(3), b"\xff\xfc\x06");
    c.send(b"\xff\xfb\x01");
    assert_eq!(
        c.exact(3),
        b"\xff\xfe\x01",
        "IAC WILL ECHO gets IAC DONT ECHO"
    );
    c.send(b"\xff\xfd\x03");
    assert_eq!(c.exact(3), b"\xff\xfc\x03", "IAC DO SGA gets IAC WONT SGA");
    // Refusals are not answered (no option negotiation loop).
    c.send(b"\xff\xfc\x01\xff\xfe\x03");
    c.send(b"\r\nDave\r\nexit\r\n");
    assert_eq!(c.line(), b"Hello, Dave!\r\n");
    assert_eq!(c.rest(), b"Bye!\r\n");
}

#[test]
fn blank_lines_get_no_reply() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    c.send("\n\r\n   \n\t\r\n \r\0Alice\n\n\nexit\n");
    // Exactly one reply, then the farewell: nothing for the blanks.
    assert_eq!(lossy(&c.rest()), "Hello, Alice!\r\nBye!\r\n");
}

#[test]
fn exit_variants_end_the_session() {
    let server = Server::start(&[]);
    for word in ["exit", "QUIT", "  Exit  ", "quit\t", "eXiT\r"] {
        let mut c = greeted(&server);
        c.send(format!("{word}\n"));
        assert_eq!(lossy(&c.rest()), "Bye!\r\n", "{word:?}");
    }
    // Not exit: names that only contain the word.
    let mut c = greeted(&server);
    c.send("exits\nex it\nquit now\nexit\n");
    assert_eq!(
        lossy(&c.rest()),
        "Hello, exits!\r\nHello, ex it!\r\nHello, quit now!\r\nBye!\r\n"
    );
}

#[test]
fn lines_after_exit_are_ignored() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    c.send("Alice\nexit\nBob\nCarol\n");
    assert_eq!(lossy(&c.rest()), "Hello, Alice!\r\nBye!\r\n");
}

#[test]
fn lines_after_exit_in_a_later_write_do_not_reset_the_farewell() {
    // The client keeps sending after `exit`; the farewell must still arrive whole
    // (the server lingers instead of resetting the connection on unread input).
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    c.send("exit\n");
    let _ = c.stream.write_all(&[b'x'; 4096]);
    assert_eq!(lossy(&c.rest()), "Bye!\r\n");
}

#[test]
fn half_close_answers_a_final_unterminated_line() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    c.send("Bob");
    c.finish_sending();
    assert_eq!(lossy(&c.rest()), "Hello, Bob!\r\n");

    // An unterminated `exit` still says goodbye.
    let mut c = greeted(&server);
    c.send("exit");
    c.finish_sending();
    assert_eq!(lossy(&c.rest()), "Bye!\r\n");

    // Earlier lines in the same write come first.
    let mut c = greeted(&server);
    c.send("Alice\nBob");
    c.finish_sending();
    assert_eq!(lossy(&c.rest()), "Hello, Alice!\r\nHello, Bob!\r\n");
}

#[test]
fn half_close_after_a_final_line_ending_in_cr() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    c.send("Bob\r");
    c.finish_sending();
    assert_eq!(lossy(&c.rest()), "Hello, Bob!\r\n");
}

#[test]
fn half_close_after_earlier_writes() {
    // `printf 'Alice\n'; sleep; printf Bob` then EOF: the last line must be answered
    // (at 1e08f09 the leftovers of `Alice\n` made a phantom line and a panic).
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    c.send("Alice\n");
    assert_eq!(c.text_line(), "Hello, Alice!");
    c.send("Bob");
    c.finish_sending();
    assert_eq!(lossy(&c.rest()), "Hello, Bob!\r\n");
}

#[test]
fn over_long_line_gets_an_error_and_the_connection_goes_on() {
    let server = Server::start(&["--max-line", "16"]);
    let mut c = greeted(&server);
    // Exactly 16 bytes is fine, with LF or CRLF; 17 is not.
    c.send("0123456789abcdef\n0123456789abcdef\r\n0123456789abcdefg\nBob\n");
    assert_eq!(c.text_line(), "Hello, 0123456789abcdef!");
    assert_eq!(c.text_line(), "Hello, 0123456789abcdef!");
    assert_eq!(c.text_line(), "ERROR line too long (max 16 bytes), skipped");
    assert_eq!(c.text_line(), "Hello, Bob!");
    // A long line arriving in pieces gets one error, however long it is.
    let mut long = vec![b'y'; 100_000];
    long.extend_from_slice(b"\nCarol\nexit\n");
    c.send(&long);
    assert_eq!(c.text_line(), "ERROR line too long (max 16 bytes), skipped");
    assert_eq!(c.text_line(), "Hello, Carol!");
    assert_eq!(lossy(&c.rest()), "Bye!\r\n");
}

/// An exit word ends the session whatever --max-line is, with blanks around it, in
/// both framings; other lines over the limit are still refused.
#[test]
fn exit_words_work_whatever_max_line_is() {
    for (max, exit) in [
        ("3", "exit"),
        ("3", "QUIT"),
        ("8", "   exit   "),
        ("1", "\tquit "),
    ] {
        let server = Server::start(&["--max-line", max]);
        let mut c = greeted(&server);
        c.send(format!("abcdefghi\n{exit}\nnever\n"));
        assert_eq!(
            c.text_line(),
            format!("ERROR line too long (max {max} bytes), skipped")
        );
        assert_eq!(lossy(&c.rest()), "Bye!\r\n", "--max-line {max}, {exit:?}");
    }
    // Also as a last line ended by a half-close.
    let server = Server::start(&["--max-line", "2"]);
    let mut c = greeted(&server);
    c.send("quit");
    c.finish_sending();
    assert_eq!(lossy(&c.rest()), "Bye!\r\n");
    // Chunk framing reads an exit word whole, not as `exi` then `t`.
    let server = Server::start(&["--framing", "chunk", "--max-line", "3"]);
    let mut c = server.connect();
    assert_eq!(c.exact(8), b"Welcome!");
    c.send("abcde");
    assert_eq!(lossy(&c.exact(21)), "Hello, abc!Hello, de!");
    c.send("exit");
    assert_eq!(lossy(&c.rest()), "Bye!");
}

/// A 0xFF byte of a name (sent as `IAC IAC`) comes back doubled: sent bare, a telnet
/// client would read `IAC WILL ECHO` in `Hello, a\xff\xfb\x01!`, negotiate, and hide what
/// its user types.
#[test]
fn a_0xff_in_a_reply_is_sent_doubled_as_telnet_requires() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    c.send(b"a\xff\xff\xfb\x01\n");
    assert_eq!(c.line(), b"Hello, a\xff\xff\xfb\x01!\r\n");
    say_exit(&mut c);
    // In chunk framing too, and through a template with several `{}`.
    let server = Server::start(&["--framing", "chunk", "--reply", "{}-{}"]);
    let mut c = server.connect();
    assert_eq!(c.exact(8), b"Welcome!");
    c.send(b"\xff\xffz");
    assert_eq!(c.exact(7), b"\xff\xffz-\xff\xffz");
    // A reply longer than the output buffer goes out in pieces, escaped alike.
    let template = "{}".repeat(100);
    let server = Server::start(&["--max-line", "100000", "--reply", &template]);
    let mut c = greeted(&server);
    // A name of 2,000 bytes 0xFF, each sent as IAC IAC; each copy comes back the same.
    let doubled = vec![0xFF; 4000];
    c.send([&doubled[..], b"\n"].concat());
    let want: Vec<u8> = doubled.repeat(100);
    assert!(
        c.exact(want.len()) == want,
        "the long escaped reply differs"
    );
    assert_eq!(c.exact(2), b"\r\n");
}

/// The output buffer used to be sized for the largest possible reply: with a thousand
/// `{}` and a 16 MiB --max-line that was 32 GB, and the first long line aborted the
/// process. Replies larger than the buffer now go out in pieces.
#[test]
fn a_reply_larger_than_any_buffer_is_sent_in_pieces() {
    let template = "{}".repeat(1000) + "!";
    let server = Server::start(&["--max-line", "16777216", "--reply", &template]);
    let mut c = greeted(&server);
    let name = "ab".repeat(1000);
    c.send(format!("{name}\nBob\n"));
    let want = name.repeat(1000) + "!\r\n";
    assert!(
        lossy(&c.exact(want.len())) == want,
        "the 2 MB reply differs"
    );
    assert_eq!(c.text_line(), "Bob".repeat(1000) + "!");
    say_exit(&mut c);
    let mut other = greeted(&server);
    other.send("x\n");
    assert_eq!(other.text_line(), "x".repeat(1000) + "!");
}

#[test]
fn endless_line_keeps_memory_bounded() {
    let server = Server::start(&[]);
    let mut warm = greeted(&server);
    warm.send("warm\n");
    assert_eq!(warm.text_line(), "Hello, warm!");
    let before = server.proc_status("VmRSS");

    let mut c = greeted(&server);
    let chunk = vec![b'z'; 1 << 20];
    for _ in 0..64 {
        c.send(&chunk); // 64 MiB without a newline
    }
    c.send("\nBob\n");
    assert_eq!(
        c.text_line(),
        "ERROR line too long (max 8192 bytes), skipped"
    );
    assert_eq!(c.text_line(), "Hello, Bob!");
    let peak = server.proc_status("VmHWM");
    eprintln!("RSS before {before} kB, peak {peak} kB");
    assert!(
        peak < before + 8 * 1024,
        "peak RSS {peak} kB after a 64 MiB line, {before} kB before"
    );
    say_exit(&mut c);
}
