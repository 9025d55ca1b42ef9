//! Modes, framing, texts, delay.

use super::*;

#[test]
fn echo_mode_returns_every_byte_unchanged() {
    let server = Server::start(&["--mode", "echo"]);
    let mut c = server.connect();
    // No welcome: the first bytes back are the echo. 0xFF (IAC), NUL, CR, LF, and
    // `exit` are all just data.
    let all: Vec<u8> = (0..=255u8).collect();
    c.send(&all);
    assert_eq!(c.exact(256), all);
    c.send(b"exit\n\xff\xf4\xff\xfd\x06\0\r\n");
    assert_eq!(c.exact(13), b"exit\n\xff\xf4\xff\xfd\x06\0\r\n");
    // A megabyte, written while it is read back.
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
    let mut writer = c.stream.try_clone().unwrap();
    let expected = big.clone();
    let sender = thread::spawn(move || writer.write_all(&big));
    assert!(
        c.exact(expected.len()) == expected,
        "1 MiB echoed unchanged"
    );
    sender.join().unwrap().expect("send");
    // Until the client closes; nothing else is ever sent.
    c.finish_sending();
    assert_eq!(c.rest(), b"");
}

#[test]
fn chunk_framing_serves_the_tutorial_client() {
    // The Python tutorial's client: recv the welcome, send `Michael` without a
    // newline, recv `Hello, Michael!`. Nothing carries a line ending.
    let server = Server::start(&["--framing", "chunk"]);
    let mut c = server.connect();
    assert_eq!(c.exact(8), b"Welcome!");
    c.send("Michael");
    assert_eq!(c.exact(15), b"Hello, Michael!");
    c.send("张三");
    assert_eq!(c.exact("Hello, 张三!".len()), "Hello, 张三!".as_bytes());
    c.send("exit");
    assert_eq!(c.rest(), b"Bye!");
}

/// In chunk framing a message is one read, and `--max-line` caps the read: a longer
/// message is answered in pieces, as the tutorial's `recv(N)` would, never refused.
#[test]
fn chunk_framing_answers_a_message_longer_than_max_line_in_pieces() {
    let server = Server::start(&["--framing", "chunk", "--max-line", "5"]);
    let mut c = server.connect();
    assert_eq!(c.exact(8), b"Welcome!");
    c.send("abcdefghij");
    let want = b"Hello, abcde!Hello, fghij!";
    assert_eq!(lossy(&c.exact(want.len())), lossy(want));
}

#[test]
fn custom_welcome_reply_and_farewell() {
    let server = Server::start(&[
        "--welcome",
        "Hi there",
        "--reply",
        "<{}> and again <{}>",
        "--farewell",
        "See you",
    ]);
    let mut c = server.connect();
    assert_eq!(c.text_line(), "Hi there");
    c.send("Ann\nexit\n");
    assert_eq!(c.text_line(), "<Ann> and again <Ann>");
    assert_eq!(lossy(&c.rest()), "See you\r\n");
}

/// The host name `{host}` stands for: the kernel's, as the server reads it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("read /proc/sys/kernel/hostname")
        .trim()
        .to_string()
}

#[test]
fn placeholders_say_which_backend_answered_and_to_whom() {
    let server = Server::start(&[
        "--welcome",
        "Welcome to {host} ({pid}), conn {conn} from {peer}",
        "--reply",
        "Hello, {}! from {host}:{pid} conn {conn} via {local} for {peer}",
        "--farewell",
        "Bye from {local}, {{conn}} {conn}",
    ]);
    let (host, pid, local) = (host_name(), server.pid(), server.addr());
    for conn in 1..=2 {
        let mut c = server.connect();
        let peer = c.stream.local_addr().unwrap();
        assert_eq!(
            c.text_line(),
            format!("Welcome to {host} ({pid}), conn {conn} from {peer}")
        );
        c.send("Ann\n张三\nexit\n");
        for name in ["Ann", "张三"] {
            assert_eq!(
                c.text_line(),
                format!("Hello, {name}! from {host}:{pid} conn {conn} via {local} for {peer}")
            );
        }
        assert_eq!(
            lossy(&c.rest()),
            format!("Bye from {local}, {{conn}} {conn}\r\n")
        );
    }
}

#[test]
fn placeholders_in_chunk_framing_and_0xff_still_doubled() {
    let server = Server::start(&[
        "--framing",
        "chunk",
        "--welcome",
        "{conn}@{host}",
        "--reply",
        "[{}|{peer}]",
        "--farewell",
        "{pid}",
    ]);
    let mut c = server.connect();
    let peer = c.stream.local_addr().unwrap();
    let welcome = format!("1@{}", host_name());
    assert_eq!(lossy(&c.exact(welcome.len())), welcome);
    c.send("Michael");
    let want = format!("[Michael|{peer}]");
    assert_eq!(lossy(&c.exact(want.len())), want);
    // IAC IAC is one 0xFF data byte, sent back doubled; the placeholder's text is not.
    c.send(b"a\xff\xffb");
    let mut want = b"[a\xff\xffb|".to_vec();
    want.extend_from_slice(format!("{peer}]").as_bytes());
    assert_eq!(c.exact(want.len()), want);
    c.send("exit");
    assert_eq!(lossy(&c.rest()), server.pid().to_string());
}

#[test]
fn a_reply_with_placeholders_larger_than_any_buffer_is_sent_in_pieces() {
    let template = "{}<{conn}{peer}>".repeat(1000) + "!";
    let server = Server::start(&["--max-line", "16777216", "--reply", &template]);
    let mut c = greeted(&server);
    let peer = c.stream.local_addr().unwrap();
    let name = "ab".repeat(1000);
    c.send(format!("{name}\nBob\n"));
    let want = format!("{name}<1{peer}>").repeat(1000) + "!\r\n";
    assert!(
        lossy(&c.exact(want.len())) == want,
        "the 2 MB reply differs"
    );
    assert_eq!(c.text_line(), format!("Bob<1{peer}>").repeat(1000) + "!");
    say_exit(&mut c);
}

#[test]
fn placeholders_show_ipv6_addresses_in_brackets() {
    if let Err(e) = TcpListener::bind("[::1]:0") {
        eprintln!("SKIPPED placeholders_show_ipv6_addresses_in_brackets: no [::1] ({e})");
        return;
    }
    let server = Server::start_with_binds(
        &["--bind", "[::1]:0", "--reply", "{}: {peer} -> {local}"],
        1,
    );
    let mut c = greeted(&server);
    let peer = c.stream.local_addr().unwrap();
    c.send("Ann\n");
    let line = c.text_line();
    assert_eq!(line, format!("Ann: {peer} -> {}", server.addr()));
    assert!(line.starts_with("Ann: [::1]:"), "{line}");
    say_exit(&mut c);
}

#[test]
fn an_unknown_placeholder_or_a_line_outside_reply_is_refused_at_start_up() {
    let cases: [(&[&str], &[&str]); 5] = [
        (&["--reply", "Hello, {nmae}!"], &["--reply", "{nmae}"]),
        (&["--welcome", "Hi {host} {port}"], &["--welcome", "{port}"]),
        (&["--farewell", "Bye {}"], &["--farewell", "{}", "--reply"]),
        (&["--welcome", "Hi {}"], &["--welcome", "{}", "--reply"]),
        (&["--reply", "Hello, {"], &["--reply", "lone {", "{{"]),
    ];
    for (args, says) in cases {
        let mut all = vec!["--bind", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let (code, out, err) = run_with_deadline(
            hello_cmd("serve", &all).stdin(Stdio::null()),
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}: nothing is announced");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        for word in says {
            assert!(err.contains(word), "{args:?}: {word} in {err}");
        }
        for known in ["{peer}", "{local}", "{host}", "{pid}", "{conn}"] {
            assert!(err.contains(known), "{args:?}: lists {known}: {err}");
        }
    }
}

#[test]
fn doubled_braces_are_sent_as_single_ones() {
    let server = Server::start(&["--welcome", "{{}} {{host}}", "--reply", "{{{}}}"]);
    let mut c = server.connect();
    assert_eq!(c.text_line(), "{} {host}");
    c.send("Ann\n");
    assert_eq!(c.text_line(), "{Ann}");
    say_exit(&mut c);
}

#[test]
fn empty_farewell_sends_nothing() {
    let server = Server::start(&["--farewell", ""]);
    let mut c = greeted(&server);
    c.send("Ann\nquit\n");
    assert_eq!(lossy(&c.rest()), "Hello, Ann!\r\n");
}

#[test]
fn delay_waits_before_each_reply() {
    let server = Server::start(&["--delay", "300"]);
    let mut c = greeted(&server);
    let started = Instant::now();
    c.send("a\nb\n");
    assert_eq!(c.text_line(), "Hello, a!");
    let first = started.elapsed();
    assert_eq!(c.text_line(), "Hello, b!");
    let second = started.elapsed();
    assert!(
        first >= Duration::from_millis(280),
        "first reply after {first:?}"
    );
    assert!(
        second >= Duration::from_millis(580),
        "second reply after {second:?}"
    );
}
