//! Operator-configured zones (`[[zones]]`, `PUT /v1/zones`): forward zones (questions go
//! to given recursive servers with RD set), stub zones (iteration starts at given
//! authoritative servers) and local zones (answered here from given records, as internal
//! names and walled gardens need). One compiled table, swapped whole when the API changes
//! it; a lookup walks the name's ancestors through a map, so many zones cost nothing per
//! question.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;

use adox_api::rest::{LocalKind, ZoneKind, ZoneSpec};
use hickory_proto::rr::rdata::{CNAME, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::iterate::Step;
use super::response::Reply;
use crate::names::canonical;
use crate::wire::rcode;

/// Zones in one table at most (configuration and API together).
pub const MAX_ZONES: usize = 1_000;
/// Servers of one forward or stub zone at most.
pub const MAX_SERVERS: usize = 16;
/// Records of one local zone at most.
pub const MAX_RECORDS: usize = 1_000;
/// TTL of local records that give none, and of a local zone's SOA.
const LOCAL_TTL: u32 = 3_600;
/// Types local data may hold: DNSSEC types cannot be signed here, and the rest are kept
/// to what internal zones and walled gardens use.
const LOCAL_TYPES: [RecordType; 8] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::CNAME,
    RecordType::MX,
    RecordType::TXT,
    RecordType::PTR,
    RecordType::SRV,
    RecordType::NS,
];

/// A bad zone: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneError {
    /// The field, relative to the zone list (`[2].servers[0]`).
    pub field: String,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for ZoneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// The servers of a forward or stub zone, as a delegation: their names (given, or made up
/// under `server.invalid.`) with the addresses as glue.
#[derive(Debug, Clone, PartialEq)]
pub struct Servers {
    /// Nameserver names.
    pub names: Vec<Name>,
    /// Their addresses.
    pub glue: Vec<Record>,
}

/// What a configured zone does.
#[derive(Debug, Clone, PartialEq)]
pub enum Served {
    /// Questions go to these servers with RD set.
    Forward(Servers),
    /// Iteration starts at these servers.
    Stub(Servers),
    /// Answered from these records.
    Local {
        /// Names without records: the apex's records (a walled garden) instead of NXDOMAIN.
        redirect: bool,
        /// The records (owner names canonical).
        records: Vec<Record>,
    },
}

/// One configured zone.
#[derive(Debug, Clone)]
pub struct ConfiguredZone {
    /// Its name (canonical).
    pub name: Name,
    /// What it does.
    pub served: Served,
    /// Not validated (a negative trust anchor at the zone).
    pub insecure: bool,
    /// Where it stands in its list, for errors (`[2]`).
    pub at: String,
}

/// The compiled table.
#[derive(Debug, Clone, Default)]
pub struct ZoneTable {
    zones: Vec<ConfiguredZone>,
    by_name: HashMap<Name, usize>,
    /// What it was compiled from: the configuration's zones and the API's.
    specs: (Vec<ZoneSpec>, Vec<ZoneSpec>),
}

impl PartialEq for ConfiguredZone {
    /// The same zone doing the same thing (where it stands in its list aside).
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.served == other.served && self.insecure == other.insecure
    }
}

fn bad(field: String, reason: impl Into<String>) -> ZoneError {
    ZoneError { field, reason: reason.into() }
}

fn parse_name(s: &str, field: &str) -> Result<Name, ZoneError> {
    let mut n = Name::from_ascii(s).map_err(|e| bad(field.into(), format!("`{s}` is not a domain name: {e}")))?;
    n.set_fqdn(true);
    Ok(canonical(&n))
}

/// `ADDRESS` or `ADDRESS#NAME`.
fn parse_server(s: &str, field: &str) -> Result<(Name, IpAddr), ZoneError> {
    let (addr, name) = match s.split_once('#') {
        Some((a, n)) => (a, Some(n)),
        None => (s, None),
    };
    let addr: IpAddr = addr.trim().parse().map_err(|_| {
        bad(
            field.into(),
            format!(
                "`{addr}` is not an IP address (give ADDRESS or ADDRESS#NAME; queries go to port 53, or 853 for DoT)"
            ),
        )
    })?;
    let name = match name {
        Some(n) if n.trim().is_empty() => return Err(bad(field.into(), "empty server name after `#`")),
        Some(n) => parse_name(n.trim(), field)?,
        None => {
            let label = addr.to_string().replace(['.', ':'], "-");
            parse_name(&format!("ip-{label}.server.invalid."), field)?
        }
    };
    Ok((name, addr))
}

/// One line of local data: `NAME [TTL] [IN] TYPE RDATA`, NAME relative to the zone unless
/// it ends with a dot.
fn parse_record(line: &str, zone: &Name, field: &str) -> Result<Record, ZoneError> {
    let mut words = line.split_whitespace();
    let owner = words.next().ok_or_else(|| bad(field.into(), "empty record"))?;
    let owner = if owner == "@" {
        zone.clone()
    } else if owner.ends_with('.') {
        parse_name(owner, field)?
    } else {
        let rel = Name::from_ascii(owner).map_err(|e| bad(field.into(), format!("`{owner}`: {e}")))?;
        canonical(&rel.append_domain(zone).map_err(|e| bad(field.into(), format!("`{owner}`: {e}")))?)
    };
    if !zone.zone_of(&owner) {
        return Err(bad(field.into(), format!("{} is not in the zone {}", owner.to_ascii(), zone.to_ascii())));
    }
    let mut rest: Vec<&str> = words.collect();
    let mut ttl = LOCAL_TTL;
    if let Some(t) = rest.first().and_then(|w| w.parse::<u32>().ok()) {
        ttl = t.min(604_800);
        rest.remove(0);
    }
    if rest.first().is_some_and(|w| w.eq_ignore_ascii_case("IN")) {
        rest.remove(0);
    }
    let Some((rtype, rdata)) = rest.split_first() else {
        return Err(bad(field.into(), "expected NAME [TTL] [IN] TYPE RDATA"));
    };
    let rtype = RecordType::from_str(&rtype.to_ascii_uppercase())
        .map_err(|_| bad(field.into(), format!("unknown type `{rtype}`")))?;
    if !LOCAL_TYPES.contains(&rtype) {
        return Err(bad(field.into(), format!("type {rtype} is not served from local data")));
    }
    let text = rdata.join(" ");
    let data =
        RData::try_from_str(rtype, &text).map_err(|e| bad(field.into(), format!("bad {rtype} data `{text}`: {e}")))?;
    // Names in the data are relative to the zone unless they end with a dot.
    let absolute = |n: &Name| -> Result<Name, ZoneError> {
        if n.is_fqdn() {
            Ok(n.clone())
        } else {
            n.clone().append_domain(zone).map_err(|e| bad(field.into(), format!("`{n}`: {e}")))
        }
    };
    let data = match data {
        RData::CNAME(CNAME(t)) => RData::CNAME(CNAME(absolute(&t)?)),
        RData::NS(hickory_proto::rr::rdata::NS(t)) => RData::NS(hickory_proto::rr::rdata::NS(absolute(&t)?)),
        RData::PTR(hickory_proto::rr::rdata::PTR(t)) => RData::PTR(hickory_proto::rr::rdata::PTR(absolute(&t)?)),
        RData::MX(mx) => RData::MX(hickory_proto::rr::rdata::MX::new(mx.preference, absolute(&mx.exchange)?)),
        RData::SRV(s) => {
            RData::SRV(hickory_proto::rr::rdata::SRV::new(s.priority, s.weight, s.port, absolute(&s.target)?))
        }
        other => other,
    };
    let record = Record::from_rdata(owner, ttl, data);
    // What cannot be written out (a TXT string over 255 octets) is refused here, not at
    // every answer.
    hickory_proto::serialize::binary::BinEncodable::to_bytes(&record)
        .map_err(|e| bad(field.into(), format!("cannot be encoded: {e}")))?;
    Ok(record)
}

impl ConfiguredZone {
    /// Compiles one zone; `at` names it in errors (`[3]`).
    pub fn compile(spec: &ZoneSpec, at: &str) -> Result<Self, ZoneError> {
        let name = parse_name(&spec.name, &format!("{at}.name"))?;
        let servers = |kind: &str| -> Result<Servers, ZoneError> {
            if spec.servers.is_empty() || spec.servers.len() > MAX_SERVERS {
                return Err(bad(format!("{at}.servers"), format!("a {kind} zone needs 1 to {MAX_SERVERS} servers")));
            }
            if !spec.records.is_empty() || spec.local.is_some() {
                return Err(bad(format!("{at}.records"), format!("records and local are for local zones, not {kind}")));
            }
            let mut out = Servers { names: Vec::new(), glue: Vec::new() };
            for (i, s) in spec.servers.iter().enumerate() {
                let (n, addr) = parse_server(s, &format!("{at}.servers[{i}]"))?;
                let data = match addr {
                    IpAddr::V4(a) => RData::A(a.into()),
                    IpAddr::V6(a) => RData::AAAA(a.into()),
                };
                if !out.names.contains(&n) {
                    out.names.push(n.clone());
                }
                out.glue.push(Record::from_rdata(n, LOCAL_TTL, data));
            }
            Ok(out)
        };
        let served = match spec.kind {
            ZoneKind::Forward => Served::Forward(servers("forward")?),
            ZoneKind::Stub => Served::Stub(servers("stub")?),
            ZoneKind::Local => {
                if !spec.servers.is_empty() {
                    return Err(bad(format!("{at}.servers"), "a local zone has records, not servers"));
                }
                if spec.records.len() > MAX_RECORDS {
                    return Err(bad(format!("{at}.records"), format!("at most {MAX_RECORDS} records")));
                }
                let records = spec
                    .records
                    .iter()
                    .enumerate()
                    .map(|(i, r)| parse_record(r, &name, &format!("{at}.records[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                let owners_with_cname: Vec<&Name> =
                    records.iter().filter(|r| r.record_type() == RecordType::CNAME).map(|r| &r.name).collect();
                if let Some(o) =
                    owners_with_cname.iter().find(|o| records.iter().filter(|r| r.name == ***o).count() > 1)
                {
                    return Err(bad(format!("{at}.records"), format!("{} has a CNAME and other data", o.to_ascii())));
                }
                Served::Local { redirect: spec.local == Some(LocalKind::Redirect), records }
            }
        };
        Ok(Self { name, served, insecure: spec.insecure, at: at.to_string() })
    }

    fn soa(&self) -> Record {
        let name = |s: &str| Name::from_ascii(s).unwrap_or_else(|_| Name::root());
        Record::from_rdata(
            self.name.clone(),
            LOCAL_TTL,
            RData::SOA(SOA::new(name("localhost."), name("nobody.invalid."), 1, 3600, 1200, 604_800, LOCAL_TTL)),
        )
    }

    /// A local zone's answer for (`qname`, `qtype`).
    fn local_step(&self, qname: &Name, qtype: RecordType) -> Option<Step> {
        let Served::Local { redirect, records } = &self.served else { return None };
        fn at<'a>(records: &'a [Record], owner: &'a Name) -> impl Iterator<Item = &'a Record> {
            records.iter().filter(move |r| r.name == *owner)
        }
        // A redirect zone answers every name with the apex's records.
        let owner = if *redirect && at(records, qname).next().is_none() { &self.name } else { qname };
        let rename = |r: &Record| Record::from_rdata(qname.clone(), r.ttl, r.data.clone());
        if let Some(c) = at(records, owner).find(|r| r.record_type() == RecordType::CNAME)
            && qtype != RecordType::CNAME
        {
            let next = match &c.data {
                RData::CNAME(CNAME(t)) => Some(t.clone()),
                _ => None,
            };
            return Some(Step {
                records: vec![rename(c)],
                next,
                security: crate::dnssec::Security::insecure(),
                ..Step::default()
            });
        }
        let data: Vec<Record> =
            at(records, owner).filter(|r| qtype == RecordType::ANY || r.record_type() == qtype).map(rename).collect();
        let insecure = crate::dnssec::Security::insecure();
        if !data.is_empty() {
            return Some(Step { records: data, security: insecure, ..Step::default() });
        }
        if qtype == RecordType::SOA && *qname == self.name {
            return Some(Step { records: vec![self.soa()], security: insecure, ..Step::default() });
        }
        // The name exists if it, or a name below it, has records (an empty non-terminal).
        let exists = *owner == self.name || records.iter().any(|r| owner.zone_of(&r.name));
        let rcode = if exists { rcode::NOERROR } else { rcode::NXDOMAIN };
        Some(Step { rcode, authority: vec![self.soa()], security: insecure, ..Step::default() })
    }
}

impl ZoneTable {
    /// Compiles the zones of the configuration and of the API; a name given twice is an
    /// error (`api` names the API's list in errors).
    pub fn compile(config: &[ZoneSpec], api: &[ZoneSpec]) -> Result<Self, ZoneError> {
        if config.len() + api.len() > MAX_ZONES {
            return Err(bad(String::new(), format!("at most {MAX_ZONES} zones")));
        }
        let mut t = Self::default();
        for (i, spec) in config.iter().map(|s| ("zones", s)).chain(api.iter().map(|s| ("api", s))).enumerate() {
            let (list, spec) = spec;
            let at = if list == "zones" { format!("[{i}]") } else { format!("[{}]", i - config.len()) };
            let z = ConfiguredZone::compile(spec, &at)?;
            if let Some(&first) = t.by_name.get(&z.name) {
                let both = if first < config.len() && list != "zones" {
                    "in the configuration's [[zones]] and through the API"
                } else {
                    "twice in the same list"
                };
                return Err(bad(format!("{at}.name"), format!("{} is configured {both}", z.name.to_ascii())));
            }
            t.by_name.insert(z.name.clone(), t.zones.len());
            t.zones.push(z);
        }
        t.specs = (config.to_vec(), api.to_vec());
        Ok(t)
    }

    /// The zones as given: the configuration's and the API's.
    pub fn specs(&self) -> &(Vec<ZoneSpec>, Vec<ZoneSpec>) {
        &self.specs
    }

    /// The configured zone named `name` exactly.
    pub fn get(&self, name: &Name) -> Option<&ConfiguredZone> {
        self.by_name.get(name).and_then(|&i| self.zones.get(i))
    }

    /// No zone configured.
    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    /// The deepest configured zone at or above `name`.
    pub fn closest(&self, name: &Name) -> Option<&ConfiguredZone> {
        if self.zones.is_empty() {
            return None;
        }
        let mut n = canonical(name);
        loop {
            if let Some(&i) = self.by_name.get(&n) {
                return self.zones.get(i);
            }
            if n.is_root() {
                return None;
            }
            n = n.base_name();
        }
    }

    /// The apex of the closest forward or stub zone at or above `name`: what the cache
    /// holds above it (a public NXDOMAIN for `internal.`, NSEC spans of the public zone
    /// that denies the internal one) never speaks for names inside it.
    pub fn configured_apex(&self, name: &Name) -> Option<&Name> {
        let z = self.closest(name)?;
        matches!(z.served, Served::Forward(_) | Served::Stub(_)).then_some(&z.name)
    }

    /// A reply from a server of `zone`, with what it says about names inside a forward or
    /// stub zone that `zone` is not part of cut off: only that zone's own servers speak for it
    /// (a public zone's CNAME into an internal one ends at the internal name, which is
    /// then asked of the internal servers).
    pub(crate) fn wall_off(&self, zone: &Name, reply: Reply) -> Reply {
        if self.zones.is_empty() {
            return reply;
        }
        // Inside a configured zone, only its servers (or those of zones below it) speak;
        // the DS at its apex is the parent's to give.
        let walled = |r: &Record| {
            self.configured_apex(&r.name).is_some_and(|apex| {
                let ds = r.record_type() == RecordType::DS || super::response::rrsig_covers(r) == Some(43);
                let parent_side = ds && r.name == *apex;
                !(apex.zone_of(zone) || parent_side)
            })
        };
        match reply {
            Reply::Answer { mut chain, mut data, mut next, proofs } => {
                if let Some(cut) = chain.iter().position(walled) {
                    next = Some(chain[cut].name.clone());
                    chain.truncate(cut);
                    data.clear();
                } else if data.iter().any(walled) {
                    next = data.first().map(|r| r.name.clone());
                    data.clear();
                }
                Reply::Answer { chain, data, next, proofs }
            }
            other => other,
        }
    }

    /// The local answer for (`name`, `qtype`), if a local zone is the closest zone.
    pub(crate) fn local_step(&self, name: &Name, qtype: RecordType) -> Option<Step> {
        self.closest(name)?.local_step(&canonical(name), qtype)
    }

    /// Whether `zone` is a forward zone (its queries carry RD).
    pub fn forwards(&self, zone: &Name) -> bool {
        !self.zones.is_empty()
            && self
                .by_name
                .get(zone)
                .and_then(|&i| self.zones.get(i))
                .is_some_and(|z| matches!(z.served, Served::Forward(_)))
    }

    /// A server address the upstream ACL forbids, with its field: a zone whose servers
    /// can never be asked is refused rather than left to fail every query.
    pub fn check_servers(&self, allowed: impl Fn(IpAddr) -> bool) -> Result<(), ZoneError> {
        for z in &self.zones {
            let (Served::Forward(s) | Served::Stub(s)) = &z.served else { continue };
            for (j, g) in s.glue.iter().enumerate() {
                let ip = match &g.data {
                    RData::A(a) => IpAddr::V4(a.0),
                    RData::AAAA(a) => IpAddr::V6(a.0),
                    _ => continue,
                };
                if !allowed(ip) {
                    return Err(bad(
                        format!("{}.servers[{j}]", z.at),
                        format!(
                            "server {ip} is not allowed by access.allow_upstream (or is one of our own addresses): add it there"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The zones set insecure (negative trust anchors).
    pub fn insecure(&self) -> Vec<Name> {
        self.zones.iter().filter(|z| z.insecure).map(|z| z.name.clone()).collect()
    }

    /// The zone names.
    pub fn names(&self) -> Vec<Name> {
        self.zones.iter().map(|z| z.name.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, kind: ZoneKind) -> ZoneSpec {
        ZoneSpec { name: name.into(), kind, servers: Vec::new(), insecure: false, local: None, records: Vec::new() }
    }

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn zones_compile_with_clear_errors() {
        let mut fwd = spec("corp.example", ZoneKind::Forward);
        fwd.servers = vec!["10.1.1.1".into(), "2001:db8::53#dns.corp.example".into()];
        let mut local = spec("intra.example.", ZoneKind::Local);
        local.records = vec![
            "www 300 IN A 192.0.2.7".into(),
            "@ MX 10 mail.intra.example.".into(),
            "alias CNAME www.intra.example.".into(),
        ];
        let t = ZoneTable::compile(&[fwd.clone()], &[local.clone()]).unwrap();
        assert!(t.forwards(&n("corp.example.")));
        assert!(!t.forwards(&n("intra.example.")));
        let z = t.closest(&n("a.b.CORP.example.")).unwrap();
        let Served::Forward(s) = &z.served else { panic!() };
        assert_eq!(s.names, [n("ip-10-1-1-1.server.invalid."), n("dns.corp.example.")]);
        assert_eq!(s.glue.len(), 2);
        for (bad_spec, needle) in [
            (ZoneSpec { servers: vec![], ..fwd.clone() }, "[0].servers: a forward zone needs 1 to 16 servers"),
            (
                ZoneSpec { servers: vec!["10.1.1.1:53".into()], ..fwd.clone() },
                "[0].servers[0]: `10.1.1.1:53` is not an IP address",
            ),
            (
                ZoneSpec { records: vec!["x A 1.2.3.4".into()], ..fwd.clone() },
                "[0].records: records and local are for local zones",
            ),
            (
                ZoneSpec { records: vec!["www.other. A 192.0.2.1".into()], ..local.clone() },
                "[0].records[0]: www.other. is not in the zone",
            ),
            (
                ZoneSpec { records: vec!["www RRSIG x".into()], ..local.clone() },
                "[0].records[0]: type RRSIG is not served",
            ),
            (ZoneSpec { records: vec!["www A not-an-address".into()], ..local.clone() }, "[0].records[0]: bad A data"),
            (ZoneSpec { records: vec!["www".into()], ..local.clone() }, "[0].records[0]: expected NAME"),
            (ZoneSpec { name: "bad..name".into(), ..local }, "[0].name: `bad..name` is not a domain name"),
        ] {
            let e = ZoneTable::compile(&[bad_spec], &[]).unwrap_err().to_string();
            assert!(e.starts_with(needle), "{e}");
        }
        let e = ZoneTable::compile(&[fwd.clone()], &[ZoneSpec { name: "CORP.example.".into(), ..fwd }]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "[0].name: corp.example. is configured in the configuration's [[zones]] and through the API"
        );
        // IPv6 servers, names in data relative to the zone, what cannot be encoded.
        let v6 = ZoneSpec { servers: vec!["::1".into(), "fe80::1#".into()], ..spec("six.example.", ZoneKind::Stub) };
        assert!(
            ZoneTable::compile(std::slice::from_ref(&v6), &[]).unwrap_err().to_string().contains("empty server name")
        );
        ZoneTable::compile(&[ZoneSpec { servers: vec!["::1".into()], ..v6 }], &[]).unwrap();
        let mut rel = spec("intra.example.", ZoneKind::Local);
        rel.records = vec!["alias CNAME www".into(), "@ MX 10 mail".into()];
        let t = ZoneTable::compile(&[rel.clone()], &[]).unwrap();
        let s = t.local_step(&n("alias.intra.example."), RecordType::A).unwrap();
        assert_eq!(s.next, Some(n("www.intra.example.")));
        rel.records = vec![format!("long TXT {}", "x".repeat(300))];
        let e = ZoneTable::compile(&[rel], &[]).unwrap_err().to_string();
        assert!(e.starts_with("[0].records[0]"), "{e}");
    }

    /// A public zone's answer that leads into a forward zone ends at the internal name:
    /// only the forward zone's servers speak for it.
    #[test]
    fn answers_from_outside_stop_at_a_forward_zone() {
        let mut fwd = spec("corp.internal.", ZoneKind::Forward);
        fwd.servers = vec!["10.1.1.1".into()];
        let t = ZoneTable::compile(&[fwd], &[]).unwrap();
        let cname = |from: &str, to: &str| Record::from_rdata(n(from), 60, RData::CNAME(CNAME(n(to))));
        let a = |owner: &str| {
            Record::from_rdata(n(owner), 60, RData::A("192.0.2.1".parse::<std::net::Ipv4Addr>().unwrap().into()))
        };
        let reply = Reply::Answer {
            chain: vec![cname("www.example.", "host.corp.internal.")],
            data: vec![a("host.corp.internal.")],
            next: None,
            proofs: vec![],
        };
        let Reply::Answer { chain, data, next, .. } = t.wall_off(&n("example."), reply) else { panic!() };
        assert_eq!((chain.len(), data.len(), next), (1, 0, Some(n("host.corp.internal."))));
        let reply = Reply::Answer {
            chain: vec![cname("www.example.", "x.corp.internal."), cname("x.corp.internal.", "y.example.")],
            data: vec![a("y.example.")],
            next: None,
            proofs: vec![],
        };
        let Reply::Answer { chain, data, next, .. } = t.wall_off(&Name::root(), reply) else { panic!() };
        assert_eq!((chain.len(), data.len(), next), (1, 0, Some(n("x.corp.internal."))));
        // The forward zone's own servers are believed.
        let reply = Reply::Answer { chain: vec![], data: vec![a("host.corp.internal.")], next: None, proofs: vec![] };
        let Reply::Answer { data, .. } = t.wall_off(&n("corp.internal."), reply) else { panic!() };
        assert_eq!(data.len(), 1);
        assert_eq!(t.configured_apex(&n("a.b.corp.internal.")), Some(&n("corp.internal.")));
    }

    #[test]
    fn local_zones_answer_static_and_redirect() {
        let mut local = spec("intra.example.", ZoneKind::Local);
        local.records =
            vec!["www A 192.0.2.7".into(), "a.b A 192.0.2.8".into(), "alias CNAME www.intra.example.".into()];
        let mut garden = spec("garden.example.", ZoneKind::Local);
        garden.local = Some(LocalKind::Redirect);
        garden.records = vec!["@ A 192.0.2.80".into()];
        let t = ZoneTable::compile(&[local, garden], &[]).unwrap();
        let s = t.local_step(&n("WWW.intra.example."), RecordType::A).unwrap();
        assert_eq!((s.rcode, s.records.len()), (rcode::NOERROR, 1));
        let s = t.local_step(&n("www.intra.example."), RecordType::AAAA).unwrap();
        assert_eq!((s.rcode, s.records.len(), s.authority.len()), (rcode::NOERROR, 0, 1), "NODATA with the SOA");
        assert_eq!(
            t.local_step(&n("b.intra.example."), RecordType::A).unwrap().rcode,
            rcode::NOERROR,
            "empty non-terminal"
        );
        assert_eq!(t.local_step(&n("nope.intra.example."), RecordType::A).unwrap().rcode, rcode::NXDOMAIN);
        let s = t.local_step(&n("alias.intra.example."), RecordType::A).unwrap();
        assert_eq!(s.next, Some(n("www.intra.example.")));
        let s = t.local_step(&n("anything.garden.example."), RecordType::A).unwrap();
        assert_eq!(s.records[0].name, n("anything.garden.example."));
        assert_eq!(s.records[0].data, RData::A("192.0.2.80".parse::<std::net::Ipv4Addr>().unwrap().into()));
        assert!(t.local_step(&n("www.other.example."), RecordType::A).is_none());
    }
}
