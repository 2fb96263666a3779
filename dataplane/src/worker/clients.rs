//! Per-client fairness: the resolutions each client address, and each client prefix, has
//! in flight on this worker. A client (or a network of them) past its share gets SERVFAIL
//! for further cache misses while its earlier ones run, so one customer flooding misses
//! cannot starve the misses of others; cache hits are never counted. The table holds an
//! entry only while a client has something in flight, so it never holds more entries than
//! the worker has resolutions (`resolver.max_resolutions`). The query rates of the same
//! `[limits]` section, on the same keys, are in `crate::admission`.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::config::LimitsConfig;
use crate::resolver::Limit;

/// The shares, from `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shares {
    /// Resolutions in flight per client address.
    pub(super) per_client: u32,
    /// Resolutions in flight per client prefix.
    pub(super) per_prefix: u32,
    /// IPv4 prefix length that makes one network.
    pub(super) prefix_v4: u8,
    /// IPv6 prefix length that makes one network.
    pub(super) prefix_v6: u8,
}

impl Shares {
    pub(super) fn from_config(l: &LimitsConfig) -> Self {
        Self {
            per_client: l.max_resolutions_per_client,
            per_prefix: l.max_resolutions_per_prefix,
            prefix_v4: l.client_prefix_v4,
            prefix_v6: l.client_prefix_v6,
        }
    }
}

/// In-flight resolutions by client address and prefix.
#[derive(Debug)]
pub(super) struct ClientLoad {
    shares: Shares,
    per_client: HashMap<IpAddr, u32>,
    per_prefix: HashMap<IpAddr, u32>,
}

impl ClientLoad {
    pub(super) fn new(shares: Shares) -> Self {
        Self { shares, per_client: HashMap::new(), per_prefix: HashMap::new() }
    }

    /// New shares (a reload). The in-flight counts stay; with new prefix lengths the
    /// networks are counted again from the addresses, so every release still finds its
    /// entry.
    pub(super) fn set_shares(&mut self, shares: Shares) {
        self.shares = shares;
        let mut per_prefix: HashMap<IpAddr, u32> = HashMap::new();
        for (ip, n) in &self.per_client {
            *per_prefix.entry(self.prefix(*ip)).or_insert(0) += n;
        }
        self.per_prefix = per_prefix;
    }

    /// The network `ip` belongs to.
    fn prefix(&self, ip: IpAddr) -> IpAddr {
        crate::admission::network_of(ip, self.shares.prefix_v4, self.shares.prefix_v6)
    }

    /// Takes one resolution for `ip`, or says which share it has used up. Shares are
    /// enforced only while the worker is `contended`: a spoofer filling a victim's share
    /// then costs the victim nothing while there is room for everyone.
    pub(super) fn take(&mut self, ip: IpAddr, contended: bool) -> Result<(), Limit> {
        let net = self.prefix(ip);
        if contended {
            if self.per_client.get(&ip).copied().unwrap_or(0) >= self.shares.per_client {
                return Err(Limit::ResolutionsPerClient);
            }
            if self.per_prefix.get(&net).copied().unwrap_or(0) >= self.shares.per_prefix {
                return Err(Limit::ResolutionsPerPrefix);
            }
        }
        *self.per_client.entry(ip).or_insert(0) += 1;
        *self.per_prefix.entry(net).or_insert(0) += 1;
        Ok(())
    }

    /// Gives back one resolution of `ip`.
    pub(super) fn release(&mut self, ip: IpAddr) {
        let net = self.prefix(ip);
        for (map, key) in [(&mut self.per_client, ip), (&mut self.per_prefix, net)] {
            if let Some(n) = map.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
    }

    /// Client addresses with something in flight (tests, metrics).
    #[cfg(test)]
    fn clients(&self) -> usize {
        self.per_client.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const SHARES: Shares = Shares { per_client: 2, per_prefix: 3, prefix_v4: 24, prefix_v6: 56 };

    #[test]
    fn a_client_and_its_network_get_their_share_and_no_more() {
        let mut t = ClientLoad::new(SHARES);
        assert!(t.take(ip("192.0.2.1"), true).is_ok());
        assert!(t.take(ip("192.0.2.1"), true).is_ok());
        assert_eq!(t.take(ip("192.0.2.1"), true), Err(Limit::ResolutionsPerClient));
        // A neighbour in the same /24 has one left of the network's three.
        assert!(t.take(ip("192.0.2.2"), true).is_ok());
        assert_eq!(t.take(ip("192.0.2.3"), true), Err(Limit::ResolutionsPerPrefix));
        // Another network is untouched.
        assert!(t.take(ip("198.51.100.1"), true).is_ok());
        // IPv6: a /56 is one network.
        assert!(t.take(ip("2001:db8:0:ff::1"), true).is_ok());
        assert!(t.take(ip("2001:db8:0:12::1"), true).is_ok());
        assert!(t.take(ip("2001:db8:0:34::1"), true).is_ok());
        assert_eq!(t.take(ip("2001:db8:0:56::1"), true), Err(Limit::ResolutionsPerPrefix));
        assert!(t.take(ip("2001:db8:1::1"), true).is_ok());
    }

    /// While the worker has room for everyone, a client past its share is still served
    /// (and counted, so its share applies as soon as the worker is busy).
    #[test]
    fn shares_bind_only_while_the_worker_is_contended() {
        let mut t = ClientLoad::new(SHARES);
        for _ in 0..5 {
            assert!(t.take(ip("192.0.2.1"), false).is_ok());
        }
        assert_eq!(t.take(ip("192.0.2.1"), true), Err(Limit::ResolutionsPerClient));
    }

    /// New shares on a reload: the counts in flight stay and bind at once, and with a new
    /// prefix length every release still finds its network (the table drains to empty).
    #[test]
    fn new_shares_apply_to_what_is_in_flight() {
        let mut t = ClientLoad::new(SHARES);
        for a in ["192.0.2.1", "192.0.2.2", "192.0.3.1"] {
            t.take(ip(a), true).unwrap();
        }
        t.set_shares(Shares { per_client: 1, per_prefix: 3, prefix_v4: 16, prefix_v6: 56 });
        assert_eq!(t.take(ip("192.0.2.1"), true), Err(Limit::ResolutionsPerClient));
        assert_eq!(t.take(ip("192.0.4.1"), true), Err(Limit::ResolutionsPerPrefix), "one /16 now");
        for a in ["192.0.2.1", "192.0.2.2", "192.0.3.1"] {
            t.release(ip(a));
        }
        assert_eq!((t.clients(), t.per_prefix.len()), (0, 0));
    }

    #[test]
    fn entries_live_only_while_something_is_in_flight() {
        let mut t = ClientLoad::new(SHARES);
        for i in 0..200u8 {
            let a = IpAddr::V4(std::net::Ipv4Addr::new(10, i, 0, 1));
            t.take(a, true).unwrap();
            t.release(a);
        }
        assert_eq!((t.clients(), t.per_prefix.len()), (0, 0));
        t.take(ip("192.0.2.1"), true).unwrap();
        t.take(ip("192.0.2.1"), true).unwrap();
        t.release(ip("192.0.2.1"));
        assert!(t.take(ip("192.0.2.1"), true).is_ok(), "a released share can be taken again");
    }
}
