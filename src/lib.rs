//! tcp-hello: a thread-per-connection TCP greeting and echo server, its client and
//! its load generator.
//!
//! - [`protocol`]: the protocol's decisions, pure and without sockets;
//! - [`connection`]: one connection's I/O over any `Read + Write` stream;
//! - [`server`]: listeners, the accept loop, connection limits and shutdown;
//! - [`tls`]: the server's TLS configuration (reloaded on SIGHUP) and handshake;
//! - [`tls_client`]: the client side of TLS, as `client` and `bench` set it up;
//! - [`tls_failure`]: why a client's TLS failed, as `client` and `bench` explain it;
//! - [`signals`]: signal handlers installed without losing a signal, and what each does;
//! - [`sync`]: locking a mutex that a panicking thread may have poisoned;
//! - [`limits`]: the system's limits on one process, read at start-up;
//! - [`metrics`]: the server's counters, served to Prometheus by `--metrics`;
//! - [`json_log`]: a log record as one line of JSON (`--log-format json`);
//! - [`client`], [`bench`](mod@bench): the bundled client and load generator;
//! - [`proxy`]: the PROXY protocol header (`--proxy-protocol`): framing and parsing,
//!   pure, and reading it byte-exactly from a socket;
//! - [`rules`]: address rules (`--allow`, `--deny`): parsing and matching, pure;
//! - [`pem`]: certificates and keys read from PEM files, errors naming the file;
//! - [`cert`]: `tcp-hello cert`, a private CA and certificates made without openssl;
//! - [`udp`]: `serve --udp-bind`: one datagram back per datagram, never an amplifier;
//! - [`config`]: each subcommand's typed, validated configuration, and the defaults;
//! - [`serve`](mod@serve): running a server as `tcp-hello serve` does, in a program or
//!   a test;
//! - [`address`]: the addresses given on the command line;
//! - [`plural`]: a count's noun in the right number.
#![forbid(unsafe_code)]

pub mod activation;
pub mod address;
pub mod bench;
pub mod cert;
pub mod client;
pub mod config;
pub mod connection;
pub mod fault;
pub mod json_log;
pub mod limits;
mod machine;
pub mod metrics;
pub mod pem;
pub mod plural;
pub mod pool;
pub mod protocol;
pub mod proxy;
pub mod rules;
pub mod serve;
pub mod server;
pub mod signals;
pub mod sync;
pub mod tls;
pub mod tls_client;
pub mod tls_failure;
pub mod trace;
pub mod udp;
