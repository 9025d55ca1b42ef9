//! `tcp-hello bench --tls` against the real `tcp-hello serve --tls-bind`, with
//! certificates made at run time (`common::tls`; no key is committed):
//! replies verified and handshakes timed, resumption, mutual TLS, and each way a
//! handshake fails named by its kind.

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use crate::common::tls::{make_certs, tls_server};
use crate::common::*;
use serde_json::Value;

/// Longest run of one command before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// A path as an argument.
fn arg(path: &Path) -> String {
    path.display().to_string()
}

/// `tcp-hello bench --tls --connect ADDR ARGS`, run to its end.
fn bench_tls(addr: &str, args: &[&str]) -> Finished {
    let mut all = vec!["--tls", "--connect", addr];
    all.extend_from_slice(args);
    run_tool(&mut hello_cmd("bench", &all), None, RUN_LIMIT)
}

/// The JSON report of a run that passed: no error, every reply verified, every
/// connection established and its handshake timed.
fn clean_report(run: &Finished, connections: u64) -> Value {
    assert_eq!(
        run.code,
        Some(0),
        "bench failed: stdout {:?}, stderr {:?}",
        run.stdout,
        run.stderr
    );
    let r: Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {:?}", run.stdout));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["errors_total"], 0, "{r}");
    assert_eq!(r["mismatches"], 0, "{r}");
    assert_eq!(r["established"], connections, "{r}");
    assert_eq!(r["tls"], true, "{r}");
    let h = &r["handshake"];
    assert_eq!(h["count"], connections, "{r}");
    assert_eq!(h["protocol"], "TLSv1_3", "{r}");
    let q: Vec<f64> = ["p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|k| {
            h["latency_us"][k]
                .as_f64()
                .unwrap_or_else(|| panic!("handshake.latency_us.{k} missing: {r}"))
        })
        .collect();
    assert!(q[0] > 0.0, "{r}");
    assert!(q.windows(2).all(|w| w[0] <= w[1]), "out of order: {r}");
    // The same distribution under the name every setup phase has.
    assert_eq!(r["handshake_us"], h["latency_us"], "{r}");
    assert_eq!(r["handshake_us"]["count"], connections, "{r}");
    r
}

/// The server's debug open lines of TLS connections so far, once there are `n`: at `-v`
/// each says how its handshake went.
fn open_lines(server: &Server, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let seen = eventually(IO_TIMEOUT, || {
        lines = server
            .logs_so_far()
            .lines()
            .filter(|l| l.contains(" open: ") && l.contains("TLSv1_"))
            .map(str::to_string)
            .collect();
        lines.len() >= n
    });
    assert!(seen, "{n} TLS opens expected, the server logged {lines:?}");
    lines
}

/// The line a run where no connection could be set up ended with, checked to name
/// `kind` (a progress line may come before it on a slow machine).
fn refusal(run: &Finished, kind: &str) -> String {
    assert_eq!(run.code, Some(2), "{run:?}");
    assert_eq!(run.stdout, "", "{run:?}");
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("tcp-hello: no connection to ") && last.contains(&format!(": {kind} (")),
        "{kind} expected: {}",
        run.stderr
    );
    last.to_string()
}

#[test]
fn every_reply_is_verified_over_tls_and_every_handshake_timed() {
    let certs = make_certs();
    let server = tls_server(&certs, &["-v"]);
    let addr = server.addr().to_string();
    let ca = arg(&certs.ca);

    let run = bench_tls(&addr, &["--tls-ca", &ca, "-n", "4", "-m", "200", "--json"]);
    let r = clean_report(&run, 4);
    assert_eq!(r["messages"], 200, "{r}");
    assert_eq!(r["handshake"]["resumed"], 0, "{r}");
    assert!(
        run.stderr
            .contains("  tls         4 handshakes (0 resumed), TLSv1_3 ")
            && run.stderr.contains("\n    handshake            4 "),
        "{}",
        run.stderr
    );

    // Pipelined, with longer names: every reply still checked byte for byte.
    let run = bench_tls(
        &addr,
        &[
            "--tls-ca", &ca, "-n", "2", "-p", "16", "-s", "24", "-m", "5000", "--json",
        ],
    );
    assert_eq!(clean_report(&run, 2)["messages"], 5000);

    // Duration mode, with the human report on stdout.
    let run = bench_tls(&addr, &["--tls-ca", &ca, "-n", "2", "-d", "0.5"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains("2 connections (2 established)")
            && run.stdout.contains("errors      none")
            && run
                .stdout
                .contains("  tls         2 handshakes (0 resumed)"),
        "{}",
        run.stdout
    );

    // Without --tls-resume, every handshake was a full one.
    let opens = open_lines(&server, 8);
    assert!(opens.iter().all(|l| !l.contains("resumed")), "{opens:?}");
}

#[test]
fn with_tls_resume_the_later_handshakes_resume_the_first_one_s_session() {
    let certs = make_certs();
    let server = tls_server(&certs, &["-v"]);
    let addr = server.addr().to_string();
    let ca = arg(&certs.ca);
    let run = bench_tls(
        &addr,
        &[
            "--tls-ca",
            &ca,
            "--tls-resume",
            "-n",
            "4",
            "-m",
            "40",
            "--json",
        ],
    );
    let r = clean_report(&run, 4);
    // The first connection's full handshake left two tickets (the server sends two per
    // handshake) before the others started: at least two of them resume.
    let resumed = r["handshake"]["resumed"].as_u64().unwrap_or(0);
    assert!((2..=3).contains(&resumed), "{r}");
    let opens = open_lines(&server, 4);
    let said = opens
        .iter()
        .filter(|l| l.contains("TLSv1_3 resumed"))
        .count();
    assert_eq!(said as u64, resumed, "{opens:?}");
}

#[test]
fn mutual_tls_takes_the_client_certificate_and_names_its_absence_or_refusal() {
    let certs = make_certs();
    let ca = arg(&certs.ca);
    let server = tls_server(&certs, &["-v", "--tls-client-ca", &ca]);
    let addr = server.addr().to_string();
    let (cert, key) = (arg(&certs.client.cert), arg(&certs.client.key));

    let run = bench_tls(
        &addr,
        &[
            "--tls-ca",
            &ca,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "-n",
            "2",
            "-m",
            "50",
            "--json",
        ],
    );
    clean_report(&run, 2);
    let opens = open_lines(&server, 2);
    assert!(
        opens.iter().all(|l| l.ends_with(", client alice")),
        "{opens:?}"
    );

    let run = bench_tls(&addr, &["--tls-ca", &ca, "-n", "2", "-m", "50"]);
    let said = refusal(&run, "tls_client_cert_required");
    assert!(said.contains("--tls-cert and --tls-key"), "{said}");

    // A certificate from another CA.
    let (cert, key) = (arg(&certs.other_client.cert), arg(&certs.other_client.key));
    let run = bench_tls(
        &addr,
        &[
            "--tls-ca",
            &ca,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "-n",
            "2",
            "-m",
            "50",
        ],
    );
    let said = refusal(&run, "tls_client_cert_refused");
    assert!(said.contains(&format!("--tls-cert {cert}")), "{said}");
}

#[test]
fn an_unknown_issuer_a_wrong_name_and_a_plain_server_are_named() {
    let certs = make_certs();
    let server = tls_server(&certs, &["-v"]);
    let addr = server.addr().to_string();
    let ca = arg(&certs.ca);

    // The system's roots do not know a CA made a moment ago.
    let run = bench_tls(&addr, &["-n", "2", "-m", "10"]);
    let said = refusal(&run, "tls_unknown_issuer");
    assert!(said.contains("--tls-ca FILE"), "{said}");

    let run = bench_tls(
        &addr,
        &[
            "--tls-ca",
            &ca,
            "--tls-server-name",
            "example.test",
            "-n",
            "2",
            "-m",
            "10",
        ],
    );
    let said = refusal(&run, "tls_bad_name");
    assert!(
        said.contains("not valid for example.test, the name given to --tls-server-name (it is for localhost, 127.0.0.1, ::1)"),
        "{said}"
    );

    let plain = Server::start(&["-q"]);
    let run = bench_tls(
        &plain.addr().to_string(),
        &["--tls-ca", &ca, "-n", "2", "-m", "10"],
    );
    let said = refusal(&run, "tls_not_tls");
    assert!(
        said.contains("does not speak TLS on that port (it answered in plain text: \"Welcome!\")"),
        "{said}"
    );
}

/// A port where nothing answers the ClientHello (the kernel accepts the connection into
/// the backlog; nobody reads): the handshake times out.
#[test]
fn a_server_that_never_answers_the_handshake_is_a_tls_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = listener.local_addr().expect("local addr").to_string();
    let run = bench_tls(&addr, &["-n", "1", "-m", "1", "--timeout", "0.5"]);
    refusal(&run, "tls_timeout");
    drop(listener);
}

/// A bad certificate file stops the bench before it connects (nothing listens at the
/// address given), in one line naming the flag and the file.
#[test]
fn bad_tls_files_and_flags_stop_the_bench_before_it_connects() {
    let certs = make_certs();
    let missing = arg(&certs.dir.join("missing.pem"));
    let (ca, ca_key) = (arg(&certs.ca), arg(&certs.ca_key));
    let (alice, server_key) = (arg(&certs.client.cert), arg(&certs.server.key));
    let cases: [(Vec<&str>, String); 5] = [
        (
            vec!["--tls", "--tls-ca", &missing],
            format!("--tls-ca {missing}: no such file; check the path"),
        ),
        (
            vec!["--tls", "--tls-ca", &ca_key],
            format!("--tls-ca {ca_key}: no certificate found in it"),
        ),
        (
            vec!["--tls", "--tls-cert", &alice, "--tls-key", &server_key],
            format!("--tls-key {server_key}: not the key of the certificate in --tls-cert {alice}"),
        ),
        (
            vec!["--tls", "--tls-cert", &ca_key, "--tls-key", &server_key],
            format!("--tls-cert {ca_key}: no certificate found in it"),
        ),
        (
            vec!["--tls-ca", &ca],
            "--tls-ca is for TLS, which is off: add --tls".to_string(),
        ),
    ];
    for (args, says) in cases {
        let mut all = vec!["--connect", "127.0.0.1:1", "-n", "1", "-m", "1"];
        all.extend_from_slice(&args);
        let run = run_tool(&mut hello_cmd("bench", &all), None, RUN_LIMIT);
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert!(
            run.stderr.starts_with(&format!("tcp-hello: {says}"))
                && run.stderr.lines().count() == 1,
            "{args:?}: {}",
            run.stderr
        );
    }
    // Half a client certificate is a usage error from the command line's parser.
    let run = run_tool(
        &mut hello_cmd("bench", &["--tls", "--tls-cert", &alice]),
        None,
        RUN_LIMIT,
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("--tls-key <FILE>"), "{}", run.stderr);
}

/// Churn over TLS is the handshake-rate test: every connection's handshake is timed, and
/// with --tls-resume the connections after the first resume its session.
#[test]
fn churn_over_tls_times_every_handshake_and_resumes_with_tls_resume() {
    let certs = make_certs();
    let server = tls_server(&certs, &["-q"]);
    let addr = server.addr().to_string();
    let ca = arg(&certs.ca);
    let dir = temp_dir("churn-hgrm");
    let hgrm = dir.path().join("lat.hgrm");
    let hgrm_arg = arg(&hgrm);

    let run = bench_tls(
        &addr,
        &[
            "--tls-ca", &ca, "--mode", "churn", "-n", "2", "-m", "20", "--json", "--hgrm",
            &hgrm_arg,
        ],
    );
    let r = clean_report(&run, 20);
    assert_eq!(r["completed"], 20, "{r}");
    assert_eq!(r["handshake"]["resumed"], 0, "{r}");
    for key in ["connect_us", "first_reply_us"] {
        assert_eq!(r[key]["count"], 20, "{key}: {r}");
    }
    let text = std::fs::read_to_string(dir.path().join("lat.handshake.hgrm"))
        .expect("the handshakes beside the latencies");
    assert!(
        text.contains(&format!(", Total count    = {:>12}]", 20)),
        "{text}"
    );

    let run = bench_tls(
        &addr,
        &[
            "--tls-ca",
            &ca,
            "--tls-resume",
            "--mode",
            "churn",
            "-n",
            "2",
            "-m",
            "20",
            "--json",
        ],
    );
    let r = clean_report(&run, 20);
    assert_eq!(r["completed"], 20, "{r}");
    // The first connection's full handshake fills the cache; each resumed one brings
    // new tickets.
    let resumed = r["handshake"]["resumed"].as_u64().unwrap_or(0);
    assert!(resumed >= 10, "{r}");
    assert!(
        run.stderr
            .contains(&format!("  tls         20 handshakes ({resumed} resumed)")),
        "{}",
        run.stderr
    );
}
