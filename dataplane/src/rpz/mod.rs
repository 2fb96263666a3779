//! Response Policy Zones: policy feeds (court orders, malware and phishing lists) as DNS
//! zones, loaded from files (`zone.rs`) or transferred from a primary by AXFR and IXFR and
//! kept fresh by NOTIFY and the SOA refresh (`xfr.rs`, its own thread), each zone's
//! triggers in a bucketed table (`table.rs`).
//!
//! Where policy applies (as Unbound does): QNAME triggers on the query name before the
//! packet cache, on every query, so a change reaches names already cached at once;
//! QNAME triggers on the names of the answer's CNAME chain, RPZ-IP triggers on its
//! addresses, NSDNAME and NSIP on the nameservers of its zone (as the record cache holds
//! them) when an answer is made, before the packet cache keeps it, and every worker
//! empties its packet cache when a policy zone changes (the shared record cache keeps
//! what the authorities said, so a refill costs no upstream query). Zones are tried in
//! the configured order, the first that matches decides; within a zone QNAME, RPZ-IP,
//! NSDNAME, NSIP, an exact name before a wildcard, the longest wildcard and the longest
//! prefix first. A rewritten answer is never marked authentic (AD) and carries the zone's EDE.

pub mod table;
pub mod xfr;
pub mod zone;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use self::table::{Action, Key, Rule, Tag};
pub use self::zone::PolicyZone;
use crate::ede::Ede;
use crate::resolver::Answer;

/// Where a policy zone comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A master file, read at start and on every reload.
    File(PathBuf),
    /// Primaries asked by AXFR then IXFR, in order.
    Primaries(Vec<SocketAddr>),
}

/// One configured policy zone: what it is, and its counters (they outlive its content).
#[derive(Debug)]
pub struct ZoneInfo {
    /// The zone's name.
    pub name: Name,
    /// The EDE its rewrites carry (15 Blocked, 16 Censored, 17 Filtered).
    pub ede: Ede,
    /// Where it comes from.
    pub source: Source,
    /// `refresh_s` (0: the SOA's refresh).
    pub refresh_s: u32,
    /// Rewrites (and passthrus) per trigger: qname, ip, nsdname, nsip.
    pub hits: [AtomicU64; 4],
    /// Transfers and loads: succeeded, failed, found the zone current.
    pub transfers: [AtomicU64; 3],
}

/// Index of [`ZoneInfo::hits`].
pub const HIT_QNAME: usize = 0;
/// Index of [`ZoneInfo::hits`].
pub const HIT_IP: usize = 1;
/// Index of [`ZoneInfo::hits`].
pub const HIT_NSDNAME: usize = 2;
/// Index of [`ZoneInfo::hits`].
pub const HIT_NSIP: usize = 3;

/// The names of the triggers, by hit index.
pub const TRIGGERS: [&str; 4] = ["qname", "rpz-ip", "rpz-nsdname", "rpz-nsip"];

/// The nameservers of the zone an answer came from (names, and the addresses cached for
/// them), for RPZ-NSDNAME and RPZ-NSIP triggers; asked for only when a zone has one.
pub type NameserversOf<'a> = &'a dyn Fn(&Name) -> (Vec<Name>, Vec<IpAddr>);
/// Index of [`ZoneInfo::transfers`].
pub const XFR_OK: usize = 0;
/// Index of [`ZoneInfo::transfers`].
pub const XFR_FAILED: usize = 1;
/// Index of [`ZoneInfo::transfers`].
pub const XFR_CURRENT: usize = 2;

/// Every policy zone: the shared state workers read per query.
#[derive(Debug)]
pub struct Rpz {
    /// The zones in the configured order.
    pub zones: Vec<ZoneInfo>,
    /// Their content, index for index (swapped whole; each zone's table shares buckets).
    content: ArcSwap<Vec<Arc<PolicyZone>>>,
    /// Bumped on every change: each worker empties its packet cache when it sees a new one.
    generation: AtomicU64,
    /// NOTIFY messages: accepted, refused.
    pub notifies: [AtomicU64; 2],
    /// The transfer thread, when a zone has primaries.
    transfers: std::sync::Mutex<Option<xfr::Transfers>>,
}

/// A match: the zone (its index), the trigger kind, the rule, and the name it applies at.
#[derive(Debug, Clone)]
pub struct Hit {
    /// Index into [`Rpz::zones`].
    pub zone: usize,
    /// QNAME or IP.
    pub trigger: usize,
    /// What to do.
    pub rule: Rule,
}

/// What a client gets when policy matched.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// The real answer.
    Passthru,
    /// Nothing at all.
    Drop,
    /// Over UDP an empty truncated answer (the client retries over TCP and gets the real
    /// answer).
    TcpOnly,
    /// This answer instead of the real one.
    Answer(PolicyAnswer),
}

/// A rewritten answer.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyAnswer {
    /// NOERROR or NXDOMAIN.
    pub rcode: u8,
    /// The answer section: the chain up to the name policy matched, then local data.
    pub answers: Vec<Record>,
    /// A CNAME to a name outside the policy (a walled garden): resolved, its answer
    /// appended.
    pub chase: Option<Name>,
    /// The smallest TTL in it.
    pub ttl: u32,
    /// The EDE and its text.
    pub ede: (Ede, String),
}

/// The lowercased wire form of a name (at most 255 octets).
fn lower_wire(name: &Name, buf: &mut [u8; 256]) -> usize {
    let mut n = 0;
    for l in name.iter() {
        if n + 1 + l.len() >= buf.len() {
            break;
        }
        buf[n] = l.len() as u8;
        for (d, s) in buf[n + 1..n + 1 + l.len()].iter_mut().zip(l) {
            *d = s.to_ascii_lowercase();
        }
        n += 1 + l.len();
    }
    buf[n] = 0;
    n + 1
}

/// The QNAME rule of a table for a lowercased wire name: exact, else the longest wildcard.
fn qname_rule<'a>(table: &'a table::Table, wire: &[u8]) -> Option<&'a Rule> {
    name_rule(table, Tag::Qname, Tag::QnameWild, wire)
}

/// The rule of a name trigger kind (`exact`, `wild`) for a lowercased wire name.
fn name_rule<'a>(table: &'a table::Table, exact: Tag, wild: Tag, wire: &[u8]) -> Option<&'a Rule> {
    if let Some(r) = Key::name(exact, wire).and_then(|k| table.get(&k)) {
        return Some(r);
    }
    if !table.has(wild) {
        return None;
    }
    // Each name above this one, longest first, looked up only at depths some wildcard has.
    let mut labels = table::labels_of(wire);
    let mut at = 0;
    while let Some(&len) = wire.get(at)
        && len != 0
    {
        at += 1 + usize::from(len);
        labels = labels.saturating_sub(1);
        if table.wild_at(wild, labels)
            && let Some(r) = wire.get(at..).and_then(|w| Key::name(wild, w)).and_then(|k| table.get(&k))
        {
            return Some(r);
        }
    }
    None
}

/// The rule of an address trigger kind (RPZ-IP, NSIP) for an address: the longest prefix.
/// An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, which a dual-stack client reaches
/// over IPv4) is matched as the IPv4 address it is.
fn net_rule(table: &table::Table, tag: Tag, addr: IpAddr) -> Option<&Rule> {
    let addr = addr.to_canonical();
    table.prefix_lens(tag, addr.is_ipv6()).iter().find_map(|len| table.get(&Key::net(tag, addr, *len)))
}

impl Rpz {
    /// The zones, each empty until loaded.
    pub fn new(zones: Vec<ZoneInfo>) -> Self {
        let content = zones.iter().map(|_| Arc::new(PolicyZone::default())).collect();
        Self {
            zones,
            content: ArcSwap::from_pointee(content),
            generation: AtomicU64::new(0),
            notifies: Default::default(),
            transfers: Default::default(),
        }
    }

    /// The policy zones of `[rpz]` (`None` when it lists none): files read now (an error
    /// names the zone's field), the NOTIFY socket bound, and the transfer thread started
    /// for zones with primaries (they apply once their first transfer is in).
    pub fn start(cfg: &crate::config::RpzConfig) -> Result<Option<Arc<Self>>, crate::config::ConfigError> {
        let zones = cfg.zones()?;
        if zones.is_empty() {
            return Ok(None);
        }
        let rpz = Arc::new(Self::new(zones));
        if let Err((i, e)) = rpz.reload_files() {
            return Err(crate::config::ConfigError::Invalid { field: format!("rpz.zone[{i}].file"), reason: e.0 });
        }
        // SO_REUSEPORT: during a hand-over (`--takeover`) the old process still holds it.
        let notify = cfg.notify()?.map(bind_notify).transpose().map_err(|e| crate::config::ConfigError::Invalid {
            field: "rpz.notify_listen".into(),
            reason: e.to_string(),
        })?;
        let limits = xfr::Limits {
            max_records: usize::try_from(cfg.max_records).unwrap_or(usize::MAX),
            timeout: std::time::Duration::from_secs(cfg.transfer_timeout_s),
        };
        let transfers = xfr::Transfers::start(Arc::clone(&rpz), notify, limits)
            .map_err(|e| crate::config::ConfigError::Invalid { field: "rpz".into(), reason: e.to_string() })?;
        *rpz.transfers.lock().unwrap_or_else(|p| p.into_inner()) = transfers;
        Ok(Some(rpz))
    }

    /// Reads every file zone again and publishes each (at start and on a reload). The
    /// first that does not load is returned with its index; it keeps its running content,
    /// and the zones before it are in force.
    pub fn reload_files(&self) -> Result<usize, (usize, zone::ZoneError)> {
        let mut loaded = 0;
        for (i, z) in self.zones.iter().enumerate() {
            let Source::File(path) = &z.source else { continue };
            match PolicyZone::from_file(&z.name, path) {
                Ok(content) => {
                    z.transfers[XFR_OK].fetch_add(1, Ordering::Relaxed);
                    tracing::info!(zone = %z.name, file = %path.display(), serial = content.serial.unwrap_or_default(),
                        rules = content.table.len(), skipped = content.skipped, "policy zone loaded");
                    self.publish(i, Arc::new(content), true);
                    loaded += 1;
                }
                Err(e) => {
                    z.transfers[XFR_FAILED].fetch_add(1, Ordering::Relaxed);
                    return Err((i, e));
                }
            }
        }
        Ok(loaded)
    }

    /// Stops the transfer thread (at shutdown).
    pub fn stop(&self) {
        if let Some(mut t) = self.transfers.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.stop();
        }
    }

    /// Each zone's content now.
    pub fn content(&self) -> Arc<Vec<Arc<PolicyZone>>> {
        self.content.load_full()
    }

    /// Publishes zone `i`'s new content; workers see it on their next query and, when
    /// `changed` (its rules, not only its serial), empty their packet caches.
    pub fn publish(&self, i: usize, zone: Arc<PolicyZone>, changed: bool) {
        self.content.rcu(|cur| {
            let mut next = Vec::clone(cur);
            if let Some(slot) = next.get_mut(i) {
                *slot = Arc::clone(&zone);
            }
            next
        });
        if changed {
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// The change number (see [`Rpz::publish`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Counts a hit.
    fn count(&self, zone: usize, trigger: usize) {
        if let Some(z) = self.zones.get(zone) {
            z.hits[trigger].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Policy for a query name (`wire`: lowercased wire form), before any cache: the first
    /// zone with a QNAME trigger for it. Counted.
    pub fn check_qname(&self, wire: &[u8]) -> Option<Hit> {
        let hit = self.find_qname(wire)?;
        self.count(hit.zone, hit.trigger);
        Some(hit)
    }

    fn find_qname(&self, wire: &[u8]) -> Option<Hit> {
        let content = self.content.load();
        content
            .iter()
            .enumerate()
            .find_map(|(i, z)| qname_rule(&z.table, wire).map(|r| Hit { zone: i, trigger: HIT_QNAME, rule: r.clone() }))
    }

    /// Policy for an answer to `qname`: QNAME triggers on its CNAME chain, RPZ-IP on its
    /// addresses, zone by zone. Returns the hit and how many answer records stay before
    /// the rewrite (the chain up to the matched name). A PASSTHRU for the query name
    /// itself ends the search (nothing applies). Counted.
    pub fn check_answer(&self, qname: &Name, answer: &Answer, ns: NameserversOf<'_>) -> Option<(Hit, Name, usize)> {
        let found = self.find_answer(qname, answer, ns)?;
        self.count(found.0.zone, found.0.trigger);
        (!matches!(found.0.rule, Rule::Action(Action::Passthru, _))).then_some(found)
    }

    /// [`Rpz::check_answer`]'s search, uncounted, a PASSTHRU included.
    fn find_answer(&self, qname: &Name, answer: &Answer, ns: NameserversOf<'_>) -> Option<(Hit, Name, usize)> {
        let content = self.content.load();
        if content.iter().all(|z| z.table.is_empty()) {
            return None;
        }
        // The chain's names: the query name, then each CNAME target, with the index of the
        // first answer record owned by each.
        let mut names: Vec<(Name, usize)> = vec![(qname.clone(), 0)];
        for (i, r) in answer.answers.iter().enumerate() {
            if let RData::CNAME(c) = &r.data
                && !names.iter().any(|(n, _)| n == &c.0)
            {
                let first = answer.answers.iter().position(|x| x.name == c.0).unwrap_or(answer.answers.len());
                names.push((c.0.clone(), first.max(i + 1)));
            }
        }
        let mut buf = [0u8; 256];
        let mut servers: Option<(Vec<Name>, Vec<IpAddr>)> = None;
        for (zi, z) in content.iter().enumerate() {
            for (name, at) in &names {
                let len = lower_wire(name, &mut buf);
                if let Some(rule) = qname_rule(&z.table, &buf[..len]) {
                    return Some((Hit { zone: zi, trigger: HIT_QNAME, rule: rule.clone() }, name.clone(), *at));
                }
            }
            if z.table.has(Tag::Ip) {
                for (i, r) in answer.answers.iter().enumerate() {
                    let addr = match &r.data {
                        RData::A(a) => IpAddr::V4(a.0),
                        RData::AAAA(a) => IpAddr::V6(a.0),
                        _ => continue,
                    };
                    if let Some(rule) = net_rule(&z.table, Tag::Ip, addr) {
                        let first = answer.answers.iter().position(|x| x.name == r.name).unwrap_or(i);
                        return Some((Hit { zone: zi, trigger: HIT_IP, rule: rule.clone() }, r.name.clone(), first));
                    }
                }
            }
            // The nameservers of the zone that holds the answer's last name (looked up once,
            // for the first zone that has such triggers); the whole answer is rewritten.
            let ns_triggers = z.table.has(Tag::Nsdname) || z.table.has(Tag::NsdnameWild) || z.table.has(Tag::Nsip);
            if ns_triggers {
                let (names_ns, addrs) = servers.get_or_insert_with(|| ns(&names[names.len() - 1].0));
                for n in names_ns.iter() {
                    let len = lower_wire(n, &mut buf);
                    if let Some(rule) = name_rule(&z.table, Tag::Nsdname, Tag::NsdnameWild, &buf[..len]) {
                        return Some((Hit { zone: zi, trigger: HIT_NSDNAME, rule: rule.clone() }, qname.clone(), 0));
                    }
                }
                for a in addrs.iter() {
                    if let Some(rule) = net_rule(&z.table, Tag::Nsip, *a) {
                        return Some((Hit { zone: zi, trigger: HIT_NSIP, rule: rule.clone() }, qname.clone(), 0));
                    }
                }
            }
        }
        None
    }

    /// For explain: the policy that decides what a client asking `name` gets (the query
    /// name's QNAME triggers first, then the answer's), in words; `None` when none applies.
    /// Not counted.
    pub fn explain(
        &self,
        name: &Name,
        result: &Result<Answer, crate::resolver::ResolveError>,
        ns: NameserversOf<'_>,
    ) -> Option<String> {
        let (hit, at) = match self.find_qname(&wire_name(name)) {
            Some(hit) => (hit, name.clone()),
            None => {
                let (hit, at, _) = self.find_answer(name, result.as_ref().ok()?, ns)?;
                (hit, at)
            }
        };
        let action = match &hit.rule {
            Rule::Action(Action::Nxdomain, _) => "NXDOMAIN".to_string(),
            Rule::Action(Action::Nodata, _) => "NODATA".to_string(),
            Rule::Action(Action::Passthru, _) => "PASSTHRU (the real answer)".to_string(),
            Rule::Action(Action::Drop, _) => "DROP (no answer)".to_string(),
            Rule::Action(Action::TcpOnly, _) => "TCP-only (truncated over UDP)".to_string(),
            Rule::Local(list) => match list.iter().find_map(|(_, d)| match d {
                RData::CNAME(c) => Some(c),
                _ => None,
            }) {
                Some(c) => format!("local data: CNAME {}", c.0),
                None => format!("local data: {} records", list.len()),
            },
        };
        let zone = &self.zones[hit.zone];
        let trigger = TRIGGERS[hit.trigger];
        Some(format!("policy zone {} ({trigger} trigger at {at}, EDE {}): {action}", zone.name, zone.ede.code()))
    }

    /// What a hit does to the question `(owner, qtype)`; `prefix`: answer records kept
    /// before it (the chain that led there).
    pub fn disposition(&self, hit: &Hit, owner: &Name, qtype: RecordType, prefix: Vec<Record>) -> Disposition {
        let zone = &self.zones[hit.zone];
        let what = TRIGGERS[hit.trigger];
        let ede = (zone.ede, format!("policy zone {} ({what})", zone.name));
        let prefix_ttl = prefix.iter().map(|r| r.ttl).min();
        let answer = |rcode: u8, answers: Vec<Record>, ttl: u32, chase: Option<Name>| {
            let ttl = prefix_ttl.map_or(ttl, |p| p.min(ttl));
            Disposition::Answer(PolicyAnswer { rcode, answers, chase, ttl, ede: ede.clone() })
        };
        match &hit.rule {
            Rule::Action(Action::Passthru, _) => Disposition::Passthru,
            Rule::Action(Action::Drop, _) => Disposition::Drop,
            Rule::Action(Action::TcpOnly, _) => Disposition::TcpOnly,
            Rule::Action(Action::Nxdomain, ttl) => answer(crate::wire::rcode::NXDOMAIN, prefix, *ttl, None),
            Rule::Action(Action::Nodata, ttl) => answer(crate::wire::rcode::NOERROR, prefix, *ttl, None),
            Rule::Local(list) => {
                let mut answers = prefix;
                let cname = list.iter().find_map(|(ttl, d)| match d {
                    RData::CNAME(c) => Some((*ttl, c.0.clone())),
                    _ => None,
                });
                if let Some((ttl, target)) = cname {
                    // `CNAME *.garden.`: the query name below the garden.
                    let target = if target.is_wildcard() {
                        owner.clone().append_domain(&target.base_name()).unwrap_or(target.base_name())
                    } else {
                        target
                    };
                    answers.push(Record::from_rdata(owner.clone(), ttl, RData::CNAME(CNAME(target.clone()))));
                    let chase = (qtype != RecordType::CNAME).then_some(target);
                    return answer(crate::wire::rcode::NOERROR, answers, ttl, chase);
                }
                let mut ttl = u32::MAX;
                for (t, d) in list.iter().filter(|(_, d)| d.record_type() == qtype) {
                    ttl = ttl.min(*t);
                    answers.push(Record::from_rdata(owner.clone(), *t, d.clone()));
                }
                let ttl = if ttl == u32::MAX { list.iter().map(|(t, _)| *t).min().unwrap_or(0) } else { ttl };
                answer(crate::wire::rcode::NOERROR, answers, ttl, None)
            }
        }
    }
}

/// The NOTIFY socket, shared with a process handing over (SO_REUSEPORT). Port 0 is
/// resolved first by [`crate::daemon::free_port`], so as not to join another's port.
fn bind_notify(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let mut tries = 0;
    loop {
        let mut at = addr;
        if addr.port() == 0 {
            at.set_port(crate::daemon::free_port(addr, false)?);
        }
        let s =
            socket2::Socket::new(socket2::Domain::for_address(at), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        s.set_reuse_port(true)?;
        if at.is_ipv6() {
            s.set_only_v6(true)?;
        }
        match s.bind(&at.into()) {
            Ok(()) => return Ok(s.into()),
            Err(e) if addr.port() == 0 && crate::daemon::port_taken_meanwhile(&e, tries) => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// The lowercased wire form of a name, for [`Rpz::check_qname`].
pub fn wire_name(name: &Name) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let n = lower_wire(name, &mut buf);
    buf[..n].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn rr(owner: &str, data: RData) -> Record {
        Record::from_rdata(n(owner), 300, data)
    }

    fn zone(records: &[(&str, RData)]) -> Arc<PolicyZone> {
        let origin = n("rpz.lab.");
        let soa = hickory_proto::rr::rdata::SOA::new(n("ns.rpz.lab."), n("a.rpz.lab."), 1, 3600, 600, 86400, 60);
        let mut all = vec![Record::from_rdata(origin.clone(), 60, RData::SOA(soa))];
        all.extend(records.iter().map(|(o, d)| rr(&format!("{o}.rpz.lab."), d.clone())));
        Arc::new(PolicyZone::from_records(&origin, &all).unwrap())
    }

    fn info(name: &str, ede: Ede) -> ZoneInfo {
        ZoneInfo {
            name: n(name),
            ede,
            source: Source::Primaries(vec![]),
            refresh_s: 0,
            hits: Default::default(),
            transfers: Default::default(),
        }
    }

    fn set(rpz: &Rpz, i: usize, z: Arc<PolicyZone>) {
        rpz.publish(i, z, true);
    }

    fn cname(t: &str) -> RData {
        RData::CNAME(CNAME(n(t)))
    }

    fn a(s: &str) -> RData {
        RData::A(hickory_proto::rr::rdata::A(s.parse().unwrap()))
    }

    #[test]
    fn the_first_zone_that_matches_decides_and_exact_names_beat_wildcards() {
        let rpz = Rpz::new(vec![info("first.", Ede::Censored), info("second.", Ede::Blocked)]);
        set(&rpz, 0, zone(&[("court.example", cname(".")), ("*.wild.example", cname("*."))]));
        set(
            &rpz,
            1,
            zone(&[
                ("court.example", cname("rpz-passthru.")),
                ("*.example", cname("rpz-drop.")),
                ("x.wild.example", cname("rpz-tcp-only.")),
            ]),
        );
        let check = |s: &str| rpz.check_qname(&wire_name(&n(s))).map(|h| (h.zone, h.rule));
        assert_eq!(check("Court.Example."), Some((0, Rule::Action(Action::Nxdomain, 300))));
        assert_eq!(check("a.b.wild.example."), Some((0, Rule::Action(Action::Nodata, 300))));
        assert_eq!(check("wild.example."), Some((1, Rule::Action(Action::Drop, 300))), "*.x does not match x itself");
        assert_eq!(check("x.wild.example."), Some((0, Rule::Action(Action::Nodata, 300))), "the first zone decides");
        assert_eq!(check("example."), None);
        assert_eq!(check("other."), None);
        assert_eq!(rpz.zones[0].hits[HIT_QNAME].load(Ordering::Relaxed), 3);
        let g = rpz.generation();
        set(&rpz, 0, zone(&[]));
        assert!(rpz.generation() > g);
        assert_eq!(check("court.example."), Some((1, Rule::Action(Action::Passthru, 300))));
    }

    fn none(_: &Name) -> (Vec<Name>, Vec<IpAddr>) {
        (Vec::new(), Vec::new())
    }

    #[test]
    fn nameserver_triggers_match_the_servers_of_the_answers_zone() {
        let rpz = Rpz::new(vec![info("rpz.lab.", Ede::Blocked)]);
        set(&rpz, 0, zone(&[("ns1.evil.rpz-nsdname", cname(".")), ("24.0.100.51.198.rpz-nsip", cname("*."))]));
        let answer = Answer {
            answers: vec![rr("www.example.", cname("cdn.example.")), rr("cdn.example.", a("203.0.113.1"))],
            ..Default::default()
        };
        let asked = std::cell::RefCell::new(Vec::new());
        let evil = |q: &Name| {
            asked.borrow_mut().push(q.clone());
            (vec![n("ns1.evil.")], vec![])
        };
        let (hit, at, keep) = rpz.check_answer(&n("www.example."), &answer, &evil).unwrap();
        assert_eq!((hit.trigger, at, keep), (HIT_NSDNAME, n("www.example."), 0), "the whole answer is rewritten");
        assert_eq!(*asked.borrow(), [n("cdn.example.")], "the servers of the zone of the chain's last name");
        let by_addr = |_: &Name| (vec![n("ns.ok.")], vec!["198.51.100.77".parse().unwrap()]);
        let (hit, _, _) = rpz.check_answer(&n("www.example."), &answer, &by_addr).unwrap();
        assert_eq!(hit.trigger, HIT_NSIP);
        let clean = |_: &Name| (vec![n("ns.ok.")], vec!["192.0.2.1".parse().unwrap()]);
        assert!(rpz.check_answer(&n("www.example."), &answer, &clean).is_none());
        assert_eq!(rpz.zones[0].hits[HIT_NSDNAME].load(Ordering::Relaxed), 1);
    }

    #[test]
    fn answers_are_checked_along_the_chain_and_by_address() {
        let rpz = Rpz::new(vec![info("rpz.lab.", Ede::Blocked)]);
        set(
            &rpz,
            0,
            zone(&[
                ("evil.cdn", cname(".")),
                ("24.0.2.0.192.rpz-ip", cname("*.")),
                ("32.7.2.0.192.rpz-ip", cname("rpz-passthru.")),
                ("allowed.example", cname("rpz-passthru.")),
            ]),
        );
        let chain = Answer {
            answers: vec![rr("www.example.", cname("evil.cdn.")), rr("evil.cdn.", a("198.51.100.1"))],
            ..Default::default()
        };
        let (hit, at, keep) = rpz.check_answer(&n("www.example."), &chain, &none).unwrap();
        assert_eq!((hit.rule.clone(), at.clone(), keep), (Rule::Action(Action::Nxdomain, 300), n("evil.cdn."), 1));
        match rpz.disposition(&hit, &at, RecordType::A, chain.answers[..keep].to_vec()) {
            Disposition::Answer(p) => {
                assert_eq!(p.rcode, crate::wire::rcode::NXDOMAIN);
                assert_eq!(p.answers.len(), 1, "the CNAME that led there stays");
                assert_eq!(p.ede.0, Ede::Blocked);
            }
            other => panic!("{other:?}"),
        }
        let by_addr = Answer { answers: vec![rr("host.example.", a("192.0.2.9"))], ..Default::default() };
        let (hit, _, keep) = rpz.check_answer(&n("host.example."), &by_addr, &none).unwrap();
        assert_eq!((hit.trigger, keep), (HIT_IP, 0));
        let longest = Answer { answers: vec![rr("host.example.", a("192.0.2.7"))], ..Default::default() };
        assert!(rpz.check_answer(&n("host.example."), &longest, &none).is_none(), "the /32 passthru beats the /24");
        assert!(
            rpz.check_answer(&n("allowed.example."), &by_addr, &none).is_none(),
            "a passthru on the name ends the search"
        );
        let mapped = RData::AAAA(hickory_proto::rr::rdata::AAAA("::ffff:192.0.2.9".parse().unwrap()));
        let mapped = Answer { answers: vec![rr("host.example.", mapped)], ..Default::default() };
        assert!(rpz.check_answer(&n("host.example."), &mapped, &none).is_some(), "an IPv4-mapped AAAA is its IPv4");
        let clean = Answer { answers: vec![rr("host.example.", a("203.0.113.1"))], ..Default::default() };
        assert!(rpz.check_answer(&n("host.example."), &clean, &none).is_none());
    }

    #[test]
    fn local_data_answers_its_type_and_a_cname_is_chased() {
        let rpz = Rpz::new(vec![info("rpz.lab.", Ede::Filtered)]);
        set(
            &rpz,
            0,
            zone(&[
                ("addr.example", a("192.0.2.53")),
                ("garden.example", cname("walled.garden.lab.")),
                ("*.wg.example", cname("*.garden.lab.")),
            ]),
        );
        let d = |q: &str, t| {
            let hit = rpz.check_qname(&wire_name(&n(q))).unwrap();
            rpz.disposition(&hit, &n(q), t, vec![])
        };
        let Disposition::Answer(p) = d("addr.example.", RecordType::A) else { panic!() };
        assert_eq!((p.answers.len(), p.chase), (1, None));
        let Disposition::Answer(p) = d("addr.example.", RecordType::AAAA) else { panic!() };
        assert!(p.answers.is_empty() && p.rcode == 0, "NODATA for a type the local data lacks");
        let Disposition::Answer(p) = d("garden.example.", RecordType::A) else { panic!() };
        assert_eq!(p.chase, Some(n("walled.garden.lab.")));
        assert_eq!(p.ede.0, Ede::Filtered);
        let Disposition::Answer(p) = d("x.wg.example.", RecordType::AAAA) else { panic!() };
        assert_eq!(p.chase, Some(n("x.wg.example.garden.lab.")));
    }
}
