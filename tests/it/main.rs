//! The integration tests, in one binary: each test binary links the whole crate and its
//! dependencies, so one binary links once where one per file linked once per file.
//!
//! A module per topic; `common` is what they share. Tests run in parallel threads of one
//! process, so process-wide state is shared: a test changes the environment or the
//! current directory only in a child process, and tests that hold thousands of files in
//! this process take turns (`common::FdBudget`).

mod common;

mod bench;
mod bench_tls;
mod bench_udp;
mod cert;
mod client;
mod client_tls;
mod dead_peers;
mod drain;
mod faults;
mod haproxy;
mod in_process;
mod install;
mod interop;
mod json_log;
mod limits;
mod max_lifetime;
mod metrics;
mod missing_programs;
mod peers;
mod probes;
mod properties;
mod proxy;
mod readme;
mod reliability;
mod rules;
mod scale_out;
mod server;
mod tls;
mod trace;
mod udp;
mod unix;
mod who;
