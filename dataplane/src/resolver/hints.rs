//! Root hints: the built-in IANA set or a file in zone-file format (like named.root).
//! Only NS records at the root and A/AAAA records for those names are used.

use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, NS};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::names::canonical;

/// The IANA root hints embedded in the binary.
pub const BUILTIN: &str = include_str!("named.root");

/// Address RRsets of the root servers: (owner, A or AAAA, records).
pub type AddressSets = Vec<(Name, RecordType, Vec<Record>)>;

/// Parsed root hints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootHints {
    /// Root nameserver names.
    pub names: Vec<Name>,
    /// Their addresses.
    pub addresses: Vec<(Name, IpAddr)>,
}

/// A hints file error naming the line.
#[derive(Debug, thiserror::Error)]
#[error("root hints line {line}: {reason}")]
pub struct HintsError {
    /// 1-based line number (0 for whole-file problems).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

fn err(line: usize, reason: impl Into<String>) -> HintsError {
    HintsError { line, reason: reason.into() }
}

impl RootHints {
    /// The built-in IANA hints.
    pub fn builtin() -> Self {
        match Self::parse(BUILTIN) {
            Ok(h) => h,
            Err(e) => unreachable!("embedded root hints are valid: {e}"),
        }
    }

    /// Parses zone-file text. Accepts `OWNER [TTL] [IN] TYPE RDATA` lines, `;` comments,
    /// and ignores `$TTL` / `$ORIGIN` directives and record types other than NS, A, AAAA.
    pub fn parse(text: &str) -> Result<Self, HintsError> {
        let mut names = Vec::new();
        let mut addresses = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.split(';').next().unwrap_or("").trim();
            if content.is_empty() || content.starts_with('$') {
                continue;
            }
            let mut tok: Vec<&str> = content.split_whitespace().collect();
            let owner = tok.remove(0);
            // Optional TTL and class, in either order.
            while let Some(t) = tok.first() {
                if t.chars().all(|c| c.is_ascii_digit()) || t.eq_ignore_ascii_case("IN") {
                    tok.remove(0);
                } else {
                    break;
                }
            }
            let (Some(rtype), Some(rdata)) = (tok.first(), tok.get(1)) else {
                return Err(err(line, "expected OWNER [TTL] [IN] TYPE RDATA"));
            };
            let owner = Name::from_ascii(owner).map_err(|e| err(line, format!("bad owner name: {e}")))?;
            let owner = canonical(&owner);
            match rtype.to_ascii_uppercase().as_str() {
                "NS" => {
                    if !owner.is_root() {
                        return Err(err(line, "NS records must be owned by the root `.`"));
                    }
                    let ns = Name::from_ascii(rdata).map_err(|e| err(line, format!("bad NS name: {e}")))?;
                    names.push(canonical(&ns));
                }
                "A" => {
                    let a: std::net::Ipv4Addr =
                        rdata.parse().map_err(|_| err(line, format!("bad IPv4 address `{rdata}`")))?;
                    addresses.push((owner, IpAddr::V4(a)));
                }
                "AAAA" => {
                    let a: std::net::Ipv6Addr =
                        rdata.parse().map_err(|_| err(line, format!("bad IPv6 address `{rdata}`")))?;
                    addresses.push((owner, IpAddr::V6(a)));
                }
                _ => {}
            }
        }
        if names.is_empty() {
            return Err(err(0, "no NS records for the root"));
        }
        if !addresses.iter().any(|(n, _)| names.contains(n)) {
            return Err(err(0, "no A or AAAA record for any root nameserver"));
        }
        Ok(Self { names, addresses })
    }

    /// Reads and parses a file.
    pub fn load(path: &std::path::Path) -> Result<Self, HintsError> {
        let text = std::fs::read_to_string(path).map_err(|e| err(0, format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text)
    }

    /// The hints as records: the root NS RRset and the address RRsets, with `ttl`.
    pub fn records(&self, ttl: u32) -> (Vec<Record>, AddressSets) {
        let ns = self.names.iter().map(|n| Record::from_rdata(Name::root(), ttl, RData::NS(NS(n.clone())))).collect();
        let mut addrs: AddressSets = Vec::new();
        for (name, ip) in &self.addresses {
            let (rtype, rdata) = match ip {
                IpAddr::V4(a) => (RecordType::A, RData::A(A(*a))),
                IpAddr::V6(a) => (RecordType::AAAA, RData::AAAA(AAAA(*a))),
            };
            let rec = Record::from_rdata(name.clone(), ttl, rdata);
            match addrs.iter_mut().find(|(n, t, _)| n == name && *t == rtype) {
                Some((_, _, v)) => v.push(rec),
                None => addrs.push((name.clone(), rtype, vec![rec])),
            }
        }
        (ns, addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_has_thirteen_roots_with_both_families() {
        let h = RootHints::builtin();
        assert_eq!(h.names.len(), 13);
        assert_eq!(h.addresses.len(), 26);
        assert!(h.addresses.contains(&("a.root-servers.net.".parse().unwrap(), "198.41.0.4".parse().unwrap())));
    }

    #[test]
    fn parses_minimal_file_and_names_bad_lines() {
        let h = RootHints::parse(". NS a.root.lab.\na.root.lab. 3600 IN A 127.53.0.1 ; comment\n").unwrap();
        assert_eq!(h.names, vec!["a.root.lab.".parse::<Name>().unwrap()]);
        let e = RootHints::parse(". NS a.\na. A 300.1.1.1\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(RootHints::parse("lab. NS a.\n").unwrap_err().reason.contains("root"));
        assert!(RootHints::parse(". NS a.\nb. A 1.2.3.4\n").unwrap_err().reason.contains("no A or AAAA"));
        assert!(RootHints::parse("").is_err());
        assert!(RootHints::parse(". NS\n").is_err());
    }
}
