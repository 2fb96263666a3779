//! A Response Policy Zone's records read as triggers and rules (the format BIND, Unbound
//! and PowerDNS share): the owner name says what triggers (relative to the zone's origin:
//! `name`, `*.name`, `<prefix>.rpz-ip`, `name.rpz-nsdname`, `<prefix>.rpz-nsip`), the
//! record says what happens (a CNAME to `.`, `*.`, `rpz-passthru.`, `rpz-drop.`,
//! `rpz-tcp-only.`, or local data).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::table::{Key, Rule, Table, Tag};

/// A trigger read from an owner name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Matched against names (QNAME, NSDNAME), the lowercased wire name.
    Name(Tag, Vec<u8>),
    /// Matched against addresses (RPZ-IP, NSIP).
    Net(Tag, IpAddr, u8),
}

impl Trigger {
    fn key(&self) -> Option<Key> {
        match self {
            Self::Name(tag, wire) => Key::name(*tag, wire),
            Self::Net(tag, addr, len) => Some(Key::net(*tag, *addr, *len)),
        }
    }
}

/// Why an owner name is no trigger adox applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The zone's apex (its SOA and NS).
    Apex,
    /// Outside the zone.
    Outside,
    /// A trigger kind adox does not apply (`rpz-client-ip`).
    Unsupported(&'static str),
    /// A malformed address trigger.
    Malformed(String),
}

/// The lowercased, uncompressed wire form of labels.
fn wire_of<'a>(labels: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    for l in labels {
        out.push(l.len() as u8);
        out.extend(l.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out
}

/// Reads an address trigger's labels (leftmost first: the prefix length, then the address
/// in reverse order; IPv6 as 16-bit hex words with one `zz` for a run of zeros).
fn parse_net(labels: &[&[u8]]) -> Result<(IpAddr, u8), String> {
    let text: Vec<&str> = labels.iter().map(|l| std::str::from_utf8(l).unwrap_or("?")).collect();
    let bad = || format!("`{}` is not an RPZ address trigger", text.join("."));
    let (len, rest) = text.split_first().ok_or_else(bad)?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if rest.len() == 4 && !rest.contains(&"zz") {
        let mut octets = [0u8; 4];
        for (i, l) in rest.iter().rev().enumerate() {
            octets[i] = l.parse().map_err(|_| bad())?;
        }
        if len == 0 || len > 32 {
            return Err(bad());
        }
        return Ok((IpAddr::V4(Ipv4Addr::from(octets)), len));
    }
    if len == 0 || len > 128 || rest.is_empty() || rest.len() > 8 {
        return Err(bad());
    }
    let words: Vec<&str> = rest.iter().rev().copied().collect();
    let zz = words.iter().filter(|w| w.eq_ignore_ascii_case("zz")).count();
    if zz > 1 || (zz == 0 && words.len() != 8) {
        return Err(bad());
    }
    let mut out = [0u16; 8];
    let mut i = 0;
    for w in &words {
        if w.eq_ignore_ascii_case("zz") {
            i += 8 - (words.len() - 1);
            continue;
        }
        *out.get_mut(i).ok_or_else(bad)? = u16::from_str_radix(w, 16).map_err(|_| bad())?;
        i += 1;
    }
    Ok((IpAddr::V6(Ipv6Addr::from(out)), len))
}

/// The trigger an owner name makes in the policy zone `origin`.
pub fn trigger_of(owner: &Name, origin: &Name) -> Result<Trigger, Skip> {
    if !origin.zone_of(owner) {
        return Err(Skip::Outside);
    }
    // (Not `num_labels`, which does not count a leading `*`.)
    let n = owner.iter().count() - origin.iter().count();
    let labels: Vec<&[u8]> = owner.iter().take(n).collect();
    let Some((last, inner)) = labels.split_last() else { return Err(Skip::Apex) };
    let last = last.to_ascii_lowercase();
    let name_trigger = |exact: Tag, wild: Tag, labels: &[&[u8]]| match labels.split_first() {
        Some((first, rest)) if *first == b"*" => Trigger::Name(wild, wire_of(rest.iter().copied())),
        _ => Trigger::Name(exact, wire_of(labels.iter().copied())),
    };
    match last.as_slice() {
        b"rpz-ip" => parse_net(inner).map(|(a, l)| Trigger::Net(Tag::Ip, a, l)).map_err(Skip::Malformed),
        b"rpz-nsip" => parse_net(inner).map(|(a, l)| Trigger::Net(Tag::Nsip, a, l)).map_err(Skip::Malformed),
        b"rpz-nsdname" => Ok(name_trigger(Tag::Nsdname, Tag::NsdnameWild, inner)),
        b"rpz-client-ip" => Err(Skip::Unsupported("rpz-client-ip")),
        _ => Ok(name_trigger(Tag::Qname, Tag::QnameWild, &labels)),
    }
}

/// A policy zone's content: its triggers and the serial they are at.
#[derive(Debug, Clone, Default)]
pub struct PolicyZone {
    /// The triggers.
    pub table: Table,
    /// The SOA serial (`None` before the first load).
    pub serial: Option<u32>,
    /// The SOA's refresh and retry, seconds (for zones transferred from a primary).
    pub refresh_retry: (u32, u32),
    /// Records that are no trigger adox applies (unsupported kinds, malformed), so far.
    pub skipped: u64,
}

/// The most records one policy zone may hold; a primary that sends more is refused.
pub const MAX_RECORDS: usize = 20_000_000;

/// A load or transfer that did not produce a zone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ZoneError(pub String);

impl PolicyZone {
    /// Applies one record, added or removed.
    pub fn apply(&mut self, origin: &Name, record: &Record, add: bool) {
        let rtype = record.record_type();
        if matches!(rtype, RecordType::SOA | RecordType::RRSIG | RecordType::NSEC | RecordType::NSEC3)
            || (rtype == RecordType::NS && record.name == *origin)
        {
            if let (RData::SOA(soa), true) = (&record.data, add) {
                self.serial = Some(soa.serial);
                self.refresh_retry = (soa.refresh.max(0) as u32, soa.retry.max(0) as u32);
            }
            return;
        }
        let key = match trigger_of(&record.name, origin) {
            Ok(t) => t.key(),
            Err(Skip::Apex | Skip::Outside) => None,
            Err(skip) => {
                if add {
                    self.skipped += 1;
                    crate::rate_limited!(info, owner = %record.name, reason = ?skip, "policy zone record skipped");
                }
                None
            }
        };
        let Some(key) = key else { return };
        // Local data of the kinds policy answers with, each small: a primary cannot make a
        // trigger hold kilobytes.
        let local_ok = match &record.data {
            RData::CNAME(_) | RData::A(_) | RData::AAAA(_) | RData::MX(_) | RData::SRV(_) | RData::PTR(_) => true,
            RData::TXT(t) => t.txt_data.iter().map(|d| d.len() + 1).sum::<usize>() <= 512,
            _ => false,
        };
        if !local_ok {
            if add {
                self.skipped += 1;
                crate::rate_limited!(info, owner = %record.name, rtype = %rtype, "policy zone record skipped: local data of this kind or size is not applied");
            }
            return;
        }
        let mut rule = Rule::of(record.ttl, &record.data);
        // The legacy PASSTHRU: a CNAME to the trigger's own name.
        if let RData::CNAME(c) = &record.data
            && c.0.iter().count() + origin.iter().count() == record.name.iter().count()
            && c.0.iter().zip(record.name.iter()).all(|(a, b)| a.eq_ignore_ascii_case(b))
        {
            rule = Rule::Action(super::table::Action::Passthru, record.ttl);
        }
        if add {
            self.table.add(&key, rule);
        } else {
            self.table.remove(&key, &rule);
        }
    }

    /// A zone made of `records` (a file's or an AXFR's), which must hold its SOA.
    pub fn from_records<'a>(origin: &Name, records: impl IntoIterator<Item = &'a Record>) -> Result<Self, ZoneError> {
        let mut zone = Self::default();
        for r in records {
            zone.apply(origin, r, true);
        }
        if zone.serial.is_none() {
            return Err(ZoneError(format!("policy zone {origin} has no SOA record")));
        }
        Ok(zone)
    }

    /// Reads a policy zone from a master file.
    pub fn from_file(origin: &Name, path: &Path) -> Result<Self, ZoneError> {
        let text = std::fs::read_to_string(path).map_err(|e| ZoneError(format!("{}: {e}", path.display())))?;
        let parser = hickory_proto::serialize::txt::Parser::new(text, Some(path.to_path_buf()), Some(origin.clone()));
        let (_, sets) = parser.parse().map_err(|e| ZoneError(format!("{}: {e}", path.display())))?;
        let count: usize = sets.values().map(|s| s.records_without_rrsigs().count()).sum();
        if count > MAX_RECORDS {
            return Err(ZoneError(format!("{}: {count} records, more than {MAX_RECORDS}", path.display())));
        }
        Self::from_records(origin, sets.values().flat_map(|s| s.records_without_rrsigs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn owner_names_make_the_triggers_of_the_rpz_format() {
        let o = n("rpz.lab.");
        let t = |s: &str| trigger_of(&n(s), &o);
        assert_eq!(t("Bad.Example.rpz.lab."), Ok(Trigger::Name(Tag::Qname, b"\x03bad\x07example\x00".to_vec())));
        assert_eq!(t("*.example.rpz.lab."), Ok(Trigger::Name(Tag::QnameWild, b"\x07example\x00".to_vec())));
        assert_eq!(t("32.1.2.0.192.rpz-ip.rpz.lab."), Ok(Trigger::Net(Tag::Ip, "192.0.2.1".parse().unwrap(), 32)));
        assert_eq!(
            t("128.1.zz.db8.2001.rpz-ip.rpz.lab."),
            Ok(Trigger::Net(Tag::Ip, "2001:db8::1".parse().unwrap(), 128))
        );
        assert_eq!(
            t("48.zz.2.db8.2001.rpz-ip.rpz.lab."),
            Ok(Trigger::Net(Tag::Ip, "2001:db8:2::".parse().unwrap(), 48))
        );
        assert_eq!(t("ns.evil.rpz-nsdname.rpz.lab."), Ok(Trigger::Name(Tag::Nsdname, b"\x02ns\x04evil\x00".to_vec())));
        assert_eq!(t("*.evil.rpz-nsdname.rpz.lab."), Ok(Trigger::Name(Tag::NsdnameWild, b"\x04evil\x00".to_vec())));
        assert_eq!(t("24.0.2.0.192.rpz-nsip.rpz.lab."), Ok(Trigger::Net(Tag::Nsip, "192.0.2.0".parse().unwrap(), 24)));
        assert_eq!(t("rpz.lab."), Err(Skip::Apex));
        assert_eq!(t("other.lab."), Err(Skip::Outside));
        assert_eq!(t("32.1.2.0.192.rpz-client-ip.rpz.lab."), Err(Skip::Unsupported("rpz-client-ip")));
        for bad in [
            "33.1.2.0.192.rpz-ip.rpz.lab.",
            "x.1.2.0.192.rpz-ip.rpz.lab.",
            "32.1.2.0.rpz-ip.rpz.lab.",
            "64.zz.zz.1.rpz-ip.rpz.lab.",
            "32.300.2.0.192.rpz-ip.rpz.lab.",
            "rpz-ip.rpz.lab.",
        ] {
            assert!(matches!(t(bad), Err(Skip::Malformed(_))), "{bad}: {:?}", t(bad));
        }
    }

    #[test]
    fn a_zone_file_loads_its_rules_and_skips_what_it_cannot_apply() {
        let dir = std::env::temp_dir().join(format!("adox-rpz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rpz.zone");
        std::fs::write(
            &path,
            "$TTL 60\n@ SOA ns.rpz.lab. admin.rpz.lab. 7 3600 600 86400 60\n@ NS ns.rpz.lab.\n\
             bad.example CNAME .\n*.bad.example CNAME *.\nok.bad.example CNAME rpz-passthru.\n\
             garden.example CNAME walled.garden.lab.\naddr.example A 192.0.2.1\naddr.example AAAA 2001:db8::1\n\
             32.1.2.0.192.rpz-ip CNAME rpz-drop.\n32.9.2.0.192.rpz-client-ip CNAME rpz-drop.\n\
             legacy.example CNAME legacy.example.\nhinfo.example HINFO \"cpu\" \"os\"\n",
        )
        .unwrap();
        let z = PolicyZone::from_file(&n("rpz.lab."), &path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(z.serial, Some(7));
        assert_eq!(z.refresh_retry, (3600, 600));
        assert_eq!(z.table.len(), 7, "bad, *.bad, ok.bad, garden, addr, legacy and one address trigger");
        let legacy = Key::name(Tag::Qname, b"\x06legacy\x07example\x00").unwrap();
        assert!(
            matches!(z.table.get(&legacy), Some(Rule::Action(super::super::table::Action::Passthru, _))),
            "a CNAME to the trigger's own name is the legacy PASSTHRU"
        );
        assert_eq!(z.skipped, 2, "the client-ip trigger, and local data of a kind policy does not answer with");
        let addr = Key::name(Tag::Qname, b"\x04addr\x07example\x00").unwrap();
        assert!(matches!(z.table.get(&addr), Some(Rule::Local(l)) if l.len() == 2));
        assert!(PolicyZone::from_file(&n("rpz.lab."), Path::new("/nonexistent/rpz")).is_err());
    }
}
