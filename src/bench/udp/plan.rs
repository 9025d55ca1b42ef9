//! `bench --udp`'s configuration, checked: the TCP bench's checks, and what datagrams
//! add to them.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use super::window::{history_len, name_horizon};
use crate::bench::TICK;
use crate::bench::config::Plan;
use crate::bench::stream::Endpoint;
use crate::config::BenchConfig;
use crate::udp::reply::MAX_PAYLOAD;

/// [`BenchConfig`] with `--udp`, checked and resolved.
#[derive(Debug)]
pub(in crate::bench) struct UdpPlan {
    /// What the TCP bench would make of the same flags; `connections` is the number of
    /// sockets, `messages` of datagrams sent, `rate` (`--rate`) datagrams per second.
    pub(in crate::bench) base: Plan,
    /// The server's address (`base.server`'s).
    pub(in crate::bench) addr: SocketAddr,
    /// Datagrams each socket remembers ([`super::window::Window`]).
    pub(in crate::bench) history: usize,
    /// Receive buffer: one byte more than the longest expected reply.
    pub(in crate::bench) recv_len: usize,
    /// How often workers look for datagrams past their timeout.
    pub(in crate::bench) tick: Duration,
}

impl UdpPlan {
    pub(in crate::bench) fn from_args(a: &BenchConfig) -> io::Result<UdpPlan> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        let base = Plan::from_args(a)?;
        let Endpoint::Tcp(addr) = base.server else {
            return Err(invalid(
                "--udp sends datagrams to HOST:PORT, and a unix: socket is a stream: drop --udp"
                    .into(),
            ));
        };
        if base.size > MAX_PAYLOAD {
            return Err(invalid(format!(
                "--size {} with --udp is more than a datagram holds ({MAX_PAYLOAD} bytes): \
                 lower --size",
                base.size
            )));
        }
        let reply_len = base.template.reply_len(base.size);
        if reply_len > MAX_PAYLOAD {
            return Err(invalid(format!(
                "--expect {:?} with --size {} expects {reply_len}-byte replies, more than a \
                 datagram holds ({MAX_PAYLOAD} bytes): lower --size",
                a.expect, base.size
            )));
        }
        if base.template.name_offset(None).is_none() {
            return Err(invalid(format!(
                "--expect {:?} with --udp: replies are matched to their datagrams by the name \
                 in them, so --expect needs a {{}}, before any {{conn}} (e.g. --expect \
                 'Hello, {{}}!', or '{{}}' for an echo server)",
                a.expect
            )));
        }
        let Some(history) = history_len(base.pipeline, base.size) else {
            // Past 19 bytes names never repeat.
            let needed = (1..=20).find(|&s| history_len(base.pipeline, s).is_some());
            let fix = match needed {
                Some(s) => format!("give --size {s} or more, or a smaller --pipeline"),
                None => "give a smaller --pipeline".to_string(),
            };
            return Err(invalid(format!(
                "--size {} with --udp --pipeline {}: names of {} bytes repeat every {} \
                 datagrams, too soon to tell which datagram a reply is for; {fix}",
                base.size,
                base.pipeline,
                base.size,
                name_horizon(base.size)
            )));
        };
        Ok(UdpPlan {
            addr,
            history,
            recv_len: reply_len + 1,
            // Often enough that a slot is not held much past its timeout.
            tick: (base.timeout / 4).clamp(Duration::from_millis(1), TICK),
            base,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(change: &dyn Fn(&mut BenchConfig)) -> io::Result<UdpPlan> {
        let mut c = BenchConfig {
            connect: "127.0.0.1:1".into(),
            udp: true,
            timeout: crate::config::BENCH_UDP_TIMEOUT,
            ..BenchConfig::default()
        };
        change(&mut c);
        UdpPlan::from_args(&c)
    }

    #[test]
    fn udp_limits_are_checked() {
        let p = plan(&|_| {}).unwrap();
        assert_eq!(p.history, 1024);
        assert_eq!(p.recv_len, "Hello, !".len() + 8 + 1);
        assert_eq!(p.tick, TICK);
        assert_eq!(p.base.rate, None);
        let p = plan(&|c| c.timeout = Duration::from_millis(20)).unwrap();
        assert_eq!(p.tick, Duration::from_millis(5));

        let e = plan(&|c| c.size = 65_508).unwrap_err().to_string();
        assert_eq!(
            e,
            "--size 65508 with --udp is more than a datagram holds (65507 bytes): lower --size"
        );
        let e = plan(&|c| c.size = 65_500).unwrap_err().to_string();
        assert!(
            e.contains("expects 65508-byte replies, more than a datagram holds"),
            "{e}"
        );
        for expect in ["OK", "#{conn}: {}"] {
            let e = plan(&|c| c.expect = expect.into()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert!(
                e.to_string()
                    .contains("--expect needs a {}, before any {conn}"),
                "{e}"
            );
        }
        assert!(plan(&|c| c.expect = "{} #{conn}".into()).is_ok());
        let e = plan(&|c| {
            c.size = 2;
            c.pipeline = 100;
        })
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "--size 2 with --udp --pipeline 100: names of 2 bytes repeat every 100 datagrams, \
             too soon to tell which datagram a reply is for; give --size 3 or more, or a \
             smaller --pipeline"
        );
        assert!(
            plan(&|c| {
                c.size = 1;
                c.pipeline = 2;
            })
            .is_ok()
        );
        // What the TCP bench refuses, --udp refuses too.
        assert!(plan(&|c| c.connections = 0).is_err());
    }
}
