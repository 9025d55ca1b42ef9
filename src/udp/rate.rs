//! `--udp-rate`: datagrams per second per address, a token bucket per address in a
//! table of bounded size. Pure: the caller gives the time.
//!
//! The table has two generations of at most [`TABLE_CAP`] addresses each. New
//! addresses go into the current one; when it is full it becomes the previous one and
//! the previous one is forgotten; an address found in the previous generation moves to
//! the current one. So memory stays bounded (at most twice [`TABLE_CAP`] buckets) under
//! a flood from spoofed sources, at O(1) per datagram, and an address active within the
//! last generation keeps its bucket. The cost: an address forgotten under such a flood
//! starts again with a full bucket, one second's worth of datagrams.
//!
//! Addresses count as [`source_key`] says, as for `--max-per-source`: IPv6 addresses by
//! their /64, IPv4-mapped IPv6 addresses as IPv4.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use crate::rules::source_key;

/// Most addresses in one generation of the table (see the module's documentation).
pub const TABLE_CAP: usize = 16_384;

/// One address's bucket: tokens left, as of `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Per-address token buckets: `rate` datagrams per second, bursts of up to `rate`.
#[derive(Debug)]
pub struct TokenBuckets {
    rate: f64,
    cap: usize,
    current: HashMap<IpAddr, Bucket>,
    previous: HashMap<IpAddr, Bucket>,
}

impl TokenBuckets {
    /// `rate` datagrams per second per address (0 = no limit), [`TABLE_CAP`] addresses
    /// per generation.
    pub fn new(rate: u32) -> TokenBuckets {
        TokenBuckets::with_cap(rate, TABLE_CAP)
    }

    /// As [`TokenBuckets::new`] with `cap` addresses per generation (at least 1).
    pub fn with_cap(rate: u32, cap: usize) -> TokenBuckets {
        TokenBuckets {
            rate: f64::from(rate),
            cap: cap.max(1),
            current: HashMap::new(),
            previous: HashMap::new(),
        }
    }

    /// Whether a datagram from `ip` at `now` is within the rate; takes its token if so.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let key = source_key(ip);
        let bucket = match self.current.get_mut(&key) {
            Some(bucket) => bucket,
            None => {
                let old = self.previous.remove(&key);
                if self.current.len() >= self.cap {
                    self.previous = std::mem::take(&mut self.current);
                }
                let fresh = Bucket {
                    tokens: self.rate,
                    at: now,
                };
                self.current.entry(key).or_insert(old.unwrap_or(fresh))
            }
        };
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.rate);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Addresses held now, both generations.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether no address is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_of_rate_then_one_per_interval() {
        let mut limit = TokenBuckets::new(10);
        let t = Instant::now();
        let a = ip("192.0.2.1");
        assert_eq!((0..20).filter(|_| limit.allow(a, t)).count(), 10);
        assert!(!limit.allow(a, t + Duration::from_millis(50)));
        assert!(limit.allow(a, t + Duration::from_millis(100)));
        // Another address has its own bucket.
        assert!(limit.allow(ip("192.0.2.2"), t));
        // A long pause refills to the burst, not beyond.
        let later = t + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| limit.allow(a, later)).count(), 10);
    }

    #[test]
    fn zero_is_no_limit_and_holds_nothing() {
        let mut limit = TokenBuckets::new(0);
        let t = Instant::now();
        assert!((0..10_000).all(|_| limit.allow(ip("192.0.2.1"), t)));
        assert!(limit.is_empty());
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_as_ipv4() {
        let mut limit = TokenBuckets::new(2);
        let t = Instant::now();
        assert!(limit.allow(ip("2001:db8::1"), t));
        assert!(limit.allow(ip("2001:db8::ffff:2"), t));
        assert!(!limit.allow(ip("2001:db8::3"), t));
        assert!(limit.allow(ip("2001:db8:0:1::1"), t));
        assert!(limit.allow(ip("192.0.2.9"), t));
        assert!(limit.allow(ip("::ffff:192.0.2.9"), t));
        assert!(!limit.allow(ip("192.0.2.9"), t));
    }

    #[test]
    fn the_table_stays_bounded_under_spoofed_sources() {
        let mut limit = TokenBuckets::with_cap(5, 100);
        let t = Instant::now();
        for i in 0..100_000u32 {
            limit.allow(IpAddr::from(i.to_be_bytes()), t);
            assert!(limit.len() <= 200);
        }
        // A recent address survives one rotation with its bucket.
        let mut limit = TokenBuckets::with_cap(1, 4);
        let a = ip("198.51.100.1");
        assert!(limit.allow(a, t));
        for i in 0..4u8 {
            limit.allow(IpAddr::from([10, 0, 0, i]), t);
        }
        assert!(!limit.allow(a, t), "still limited after moving generations");
    }
}
