//! Special-use names answered locally (RFC 6761 `localhost.`, `invalid.`, `test.`;
//! RFC 7686 `onion.`; RFC 8375 `home.arpa.`; the RFC 6303 locally served reverse zones).
//! Each family can be switched off in `[local_zones]`, after which the names are resolved
//! normally.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA, NS, PTR, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::Answer;
use crate::config::LocalZonesConfig;
use crate::wire::rcode;

/// TTL of local data and negative TTL of local zones (RFC 6303 section 3).
const LOCAL_TTL: u32 = 10_800;

/// RFC 6303 section 4 zones (IPv4 and IPv6).
const RFC6303: &[&str] = &[
    "0.in-addr.arpa.",
    "127.in-addr.arpa.",
    "10.in-addr.arpa.",
    "16.172.in-addr.arpa.",
    "17.172.in-addr.arpa.",
    "18.172.in-addr.arpa.",
    "19.172.in-addr.arpa.",
    "20.172.in-addr.arpa.",
    "21.172.in-addr.arpa.",
    "22.172.in-addr.arpa.",
    "23.172.in-addr.arpa.",
    "24.172.in-addr.arpa.",
    "25.172.in-addr.arpa.",
    "26.172.in-addr.arpa.",
    "27.172.in-addr.arpa.",
    "28.172.in-addr.arpa.",
    "29.172.in-addr.arpa.",
    "30.172.in-addr.arpa.",
    "31.172.in-addr.arpa.",
    "168.192.in-addr.arpa.",
    "254.169.in-addr.arpa.",
    "2.0.192.in-addr.arpa.",
    "100.51.198.in-addr.arpa.",
    "113.0.203.in-addr.arpa.",
    "255.255.255.255.in-addr.arpa.",
    "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.",
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.",
    "d.f.ip6.arpa.",
    "8.e.f.ip6.arpa.",
    "9.e.f.ip6.arpa.",
    "a.e.f.ip6.arpa.",
    "b.e.f.ip6.arpa.",
    "8.b.d.0.1.0.0.2.ip6.arpa.",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Loopback addresses for the apex and every name below it.
    Localhost,
    /// An empty zone: SOA and NS at the apex, NXDOMAIN below, except the fixed PTRs.
    Empty,
}

/// The configured local zones.
#[derive(Debug, Clone)]
pub struct LocalZones {
    zones: Vec<(Name, Kind)>,
}

fn name(s: &str) -> Name {
    match Name::from_ascii(s) {
        Ok(n) => n,
        Err(e) => unreachable!("built-in local zone name {s} is valid: {e}"),
    }
}

impl LocalZones {
    /// Builds the table from the switches.
    pub fn new(cfg: &LocalZonesConfig) -> Self {
        let mut zones = Vec::new();
        if cfg.localhost {
            zones.push((name("localhost."), Kind::Localhost));
        }
        for (on, z) in
            [(cfg.invalid, "invalid."), (cfg.test, "test."), (cfg.onion, "onion."), (cfg.home_arpa, "home.arpa.")]
        {
            if on {
                zones.push((name(z), Kind::Empty));
            }
        }
        if cfg.rfc6303 {
            zones.extend(RFC6303.iter().map(|z| (name(z), Kind::Empty)));
        }
        Self { zones }
    }

    /// The local answer for a question, if a local zone covers its name.
    pub fn answer(&self, qname: &Name, qtype: RecordType) -> Option<Answer> {
        let (apex, kind) = self.zones.iter().find(|(z, _)| z.zone_of(qname))?;
        let at_apex = crate::names::labels(qname) == crate::names::labels(apex);
        let soa = Record::from_rdata(
            apex.clone(),
            LOCAL_TTL,
            RData::SOA(SOA::new(name("localhost."), name("nobody.invalid."), 1, 3600, 1200, 604_800, LOCAL_TTL)),
        );
        let data: Vec<RData> = match (kind, qtype) {
            (_, RecordType::SOA) if at_apex => vec![soa.data.clone()],
            (_, RecordType::NS) if at_apex => vec![RData::NS(NS(apex.clone()))],
            (Kind::Localhost, RecordType::A) => vec![RData::A(A(Ipv4Addr::LOCALHOST))],
            (Kind::Localhost, RecordType::AAAA) => vec![RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))],
            (Kind::Empty, RecordType::PTR) if is_loopback_ptr(qname) => vec![RData::PTR(PTR(name("localhost.")))],
            _ => Vec::new(),
        };
        let exists = at_apex || *kind == Kind::Localhost || is_loopback_ptr(qname);
        let answers: Vec<Record> = data.into_iter().map(|d| Record::from_rdata(qname.clone(), LOCAL_TTL, d)).collect();
        let (rc, authority) = match (answers.is_empty(), exists) {
            (false, _) => (rcode::NOERROR, Vec::new()),
            (true, true) => (rcode::NOERROR, vec![soa]),
            (true, false) => (rcode::NXDOMAIN, vec![soa]),
        };
        Some(Answer {
            rcode: rc,
            answers,
            authority,
            cache_ttl: LOCAL_TTL,
            security: crate::dnssec::Security::insecure(),
            stale: false,
        })
    }
}

fn is_loopback_ptr(qname: &Name) -> bool {
    let s = qname.to_ascii().to_ascii_lowercase();
    s == "1.0.0.127.in-addr.arpa." || s == "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa."
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> LocalZones {
        LocalZones::new(&LocalZonesConfig::default())
    }

    #[test]
    fn localhost_answers_loopback_everywhere_below() {
        let z = all();
        let a = z.answer(&name("LocalHost."), RecordType::A).unwrap();
        assert_eq!(a.rcode, rcode::NOERROR);
        assert_eq!(a.answers[0].data, RData::A(A(Ipv4Addr::LOCALHOST)));
        let a = z.answer(&name("foo.localhost."), RecordType::AAAA).unwrap();
        assert_eq!(a.answers[0].data, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)));
        let a = z.answer(&name("localhost."), RecordType::MX).unwrap();
        assert!(a.answers.is_empty() && a.rcode == rcode::NOERROR && a.authority.len() == 1);
    }

    #[test]
    fn special_use_names_are_nxdomain_and_apex_has_soa() {
        let z = all();
        for n in ["x.invalid.", "www.test.", "abc.onion.", "printer.home.arpa.", "1.1.168.192.in-addr.arpa."] {
            assert_eq!(z.answer(&name(n), RecordType::A).unwrap().rcode, rcode::NXDOMAIN, "{n}");
        }
        let soa = z.answer(&name("10.in-addr.arpa."), RecordType::SOA).unwrap();
        assert_eq!(soa.answers.len(), 1);
        let ptr = z.answer(&name("1.0.0.127.in-addr.arpa."), RecordType::PTR).unwrap();
        assert_eq!(ptr.answers[0].data, RData::PTR(PTR(name("localhost."))));
        assert!(z.answer(&name("www.lab."), RecordType::A).is_none());
        assert!(z.answer(&name("8.8.8.in-addr.arpa."), RecordType::PTR).is_none());
    }

    #[test]
    fn switches_turn_families_off() {
        let cfg = LocalZonesConfig { test: false, rfc6303: false, ..LocalZonesConfig::default() };
        let z = LocalZones::new(&cfg);
        assert!(z.answer(&name("www.test."), RecordType::A).is_none());
        assert!(z.answer(&name("1.10.in-addr.arpa."), RecordType::PTR).is_none());
        assert!(z.answer(&name("x.invalid."), RecordType::A).is_some());
    }
}
