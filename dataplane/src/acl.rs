//! Address access control: which clients may query (default: loopback and private ranges,
//! so adox is never an open resolver by accident) and which upstream addresses may be
//! queried (default: none in loopback, private or reserved space, as PowerDNS's
//! `dont-query`; an operator opens ranges explicitly).

use std::net::IpAddr;

use ipnet::IpNet;

/// Clients allowed by default: loopback, RFC 1918, RFC 4193.
pub const DEFAULT_CLIENT_PREFIXES: &[&str] =
    &["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"];

/// Upstream ranges never queried unless opened: loopback, private, link-local, shared,
/// documentation, benchmarking, multicast and reserved space (IANA special-purpose registries).
pub const DEFAULT_UPSTREAM_DENY: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// Parses `ADDR/LEN` or a bare address (a host prefix). The host bits must be zero, so a
/// typo such as `10.1.2.3/8` is caught rather than silently widened.
pub fn parse_prefix(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        if net.trunc() != net {
            return Err(format!("`{s}` has host bits set (did you mean {}?)", net.trunc()));
        }
        return Ok(net);
    }
    s.parse::<IpAddr>().map(IpNet::from).map_err(|_| format!("`{s}` is not an IP prefix (ADDR/LEN) or address"))
}

/// A set of prefixes answering "does this address fall in any of them". Lists are short
/// (tens of entries), so a linear scan over per-family vectors beats a trie here.
#[derive(Debug, Clone, Default)]
pub struct PrefixSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl PrefixSet {
    /// Builds a set from parsed prefixes.
    pub fn new(prefixes: &[IpNet]) -> Self {
        let mut set = Self::default();
        for p in prefixes {
            match p {
                IpNet::V4(n) => set.v4.push((u32::from(n.network()), u32::from(n.netmask()))),
                IpNet::V6(n) => set.v6.push((u128::from(n.network()), u128::from(n.netmask()))),
            }
        }
        set
    }

    /// Whether `addr` is inside one of the prefixes. IPv4-mapped IPv6 addresses are checked
    /// as IPv4, so `::ffff:10.0.0.1` cannot slip past an IPv4 rule.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().any(|&(net, mask)| a & mask == net)
            }
            IpAddr::V6(a) => {
                if let Some(v4) = a.to_ipv4_mapped() {
                    return self.contains(IpAddr::V4(v4));
                }
                let a = u128::from(a);
                self.v6.iter().any(|&(net, mask)| a & mask == net)
            }
        }
    }
}

/// The two address policies of the data plane.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    clients: PrefixSet,
    upstream_deny: PrefixSet,
    upstream_allow: PrefixSet,
    /// The resolver's own DNS service addresses: never queried as an authority (a
    /// delegation naming them would make the resolver ask itself, query after query).
    own: Vec<IpAddr>,
}

impl AccessPolicy {
    /// Builds the policy from the configured client prefixes and opened upstream prefixes.
    pub fn new(allow_clients: &[IpNet], allow_upstream: &[IpNet]) -> Self {
        let deny: Vec<IpNet> = DEFAULT_UPSTREAM_DENY.iter().filter_map(|s| parse_prefix(s).ok()).collect();
        Self {
            clients: PrefixSet::new(allow_clients),
            upstream_deny: PrefixSet::new(&deny),
            upstream_allow: PrefixSet::new(allow_upstream),
            own: Vec::new(),
        }
    }

    /// The same policy, never querying `addrs` (the resolver's own service addresses on
    /// port 53) whatever the upstream prefixes say.
    pub fn with_own_addresses(mut self, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.own.extend(addrs.into_iter().filter(|a| !a.is_unspecified()));
        self
    }

    /// The same policy with `addrs` as the resolver's own service addresses (a reload
    /// changed the listen addresses).
    pub fn with_own_replaced(&self, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut p = self.clone();
        p.own.clear();
        p.with_own_addresses(addrs)
    }

    /// The resolver's own service addresses (never queried as authorities).
    pub fn own_addresses(&self) -> &[IpAddr] {
        &self.own
    }

    /// May this client query us?
    pub fn client_allowed(&self, addr: IpAddr) -> bool {
        self.clients.contains(addr)
    }

    /// May we send a query to this authoritative address?
    pub fn upstream_allowed(&self, addr: IpAddr) -> bool {
        !self.own.contains(&addr) && (self.upstream_allow.contains(addr) || !self.upstream_deny.contains(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A delegation naming the resolver's own service address is never followed to it,
    /// even where upstream queries to its range are opened.
    #[test]
    fn own_service_addresses_are_never_upstreams() {
        let acl = AccessPolicy::new(&[], &[parse_prefix("0.0.0.0/0").unwrap()])
            .with_own_addresses([ip("198.51.100.53"), ip("0.0.0.0")]);
        assert!(!acl.upstream_allowed(ip("198.51.100.53")));
        assert!(acl.upstream_allowed(ip("198.51.100.54")));
    }

    #[test]
    fn default_clients_are_local_and_private_only() {
        let p: Vec<IpNet> = DEFAULT_CLIENT_PREFIXES.iter().map(|s| parse_prefix(s).unwrap()).collect();
        let acl = AccessPolicy::new(&p, &[]);
        for ok in ["127.0.0.1", "10.1.2.3", "172.31.0.1", "192.168.1.1", "::1", "fd00::1", "::ffff:10.0.0.1"] {
            assert!(acl.client_allowed(ip(ok)), "{ok}");
        }
        for no in ["8.8.8.8", "172.32.0.1", "2001:4860::1", "::ffff:8.8.8.8", "fe80::1"] {
            assert!(!acl.client_allowed(ip(no)), "{no}");
        }
    }

    #[test]
    fn upstream_deny_list_and_opening() {
        let acl = AccessPolicy::new(&[], &[]);
        for no in ["127.53.0.1", "10.0.0.1", "192.0.2.1", "::1", "fe80::1", "::ffff:127.0.0.1", "0.1.2.3"] {
            assert!(!acl.upstream_allowed(ip(no)), "{no}");
        }
        for ok in ["198.41.0.4", "2001:503:ba3e::2:30"] {
            assert!(acl.upstream_allowed(ip(ok)), "{ok}");
        }
        let opened = AccessPolicy::new(&[], &[parse_prefix("127.0.0.0/8").unwrap()]);
        assert!(opened.upstream_allowed(ip("127.53.0.1")));
        assert!(!opened.upstream_allowed(ip("10.0.0.1")));
    }

    #[test]
    fn prefix_parsing_is_strict() {
        assert!(parse_prefix("10.1.2.3/8").unwrap_err().contains("host bits"));
        assert!(parse_prefix("foo").is_err());
        assert!(parse_prefix("10.0.0.0/33").is_err());
        assert_eq!(parse_prefix("192.0.2.1").unwrap().prefix_len(), 32);
        assert_eq!(parse_prefix(" 2001:db8::/32 ").unwrap().prefix_len(), 32);
    }
}
