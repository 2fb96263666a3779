//! The resolver against a fake authority: a handful of in-memory zones behind fake server
//! addresses, answering as an authoritative server would, with a fake clock and a log of
//! every query. It shows what the lab cannot show exactly: which names each server was
//! asked (QNAME minimisation), how much work a hostile delegation can cause, and what was
//! cached. The lab tests cover the same code against real servers.
//!
//! Submodules: `signed` signs the fake zones (DNSSEC), `dnssec` validates against them,
//! `transport` runs probing and signals on the fake clock, `scenario` replays scripted
//! servers from text files (`scenarios/*.scn`).

mod deleg;
mod dnssec;
mod managed;
mod scenario;
mod signed;
mod stale;
mod transport;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, NS, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::*;
use crate::config::{Config, LocalZonesConfig};
use crate::names::is_at_or_below;

fn n(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One zone served by some addresses.
struct Zone {
    apex: Name,
    servers: Vec<IpAddr>,
    records: Vec<Record>,
}

/// The fake network: zones, dead servers, a clock, and the log of queries.
struct FakeNet {
    zones: Vec<Zone>,
    dead: HashSet<IpAddr>,
    /// Queries still to be lost, per server (a timeout each).
    drops: RefCell<HashMap<IpAddr, u32>>,
    now: Cell<Instant>,
    /// When the fake clock started, and the Unix second it started at.
    epoch: (Instant, u64),
    /// The state of the fake random generator (xorshift, seeded: runs repeat).
    rng: Cell<u64>,
    log: RefCell<Vec<(IpAddr, Name, RecordType)>>,
    /// Servers that speak DoT; DoT queries to the others are refused.
    dot_capable: HashSet<IpAddr>,
    /// The port they speak it on.
    dot_port: Cell<u16>,
    /// DoT queries seen: (server, name).
    dot_log: RefCell<Vec<(IpAddr, Name)>>,
    /// Run whenever a resolution sleeps (see `run_signal_lookups_while_sleeping`).
    on_sleep: RefCell<Option<std::rc::Rc<dyn Fn()>>>,
}

impl FakeNet {
    fn answer(&self, server: IpAddr, query: &Message) -> Message {
        let q = &query.queries[0];
        let (qname, qtype) = (q.name().clone(), q.query_type());
        // RRSIGs and denial proofs go only to queries with DO (RFC 4035 section 3.1).
        let dnssec = query.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        let mut m = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
        m.add_query(q.clone());
        // The most specific zone this server serves for the name.
        let Some(zone) = self
            .zones
            .iter()
            .filter(|z| z.servers.contains(&server) && is_at_or_below(&qname, &z.apex))
            .max_by_key(|z| z.apex.num_labels())
        else {
            m.metadata.response_code = ResponseCode::Refused;
            return m;
        };
        let soa = zone.records.iter().find(|r| r.record_type() == RecordType::SOA).cloned();
        // A delegation below the apex at or above the name (the parent answers DS itself).
        let cut = zone
            .records
            .iter()
            .filter(|r| {
                r.record_type() == RecordType::NS
                    && r.name != zone.apex
                    && is_at_or_below(&qname, &r.name)
                    && !(qtype == RecordType::DS && r.name == qname)
            })
            .map(|r| r.name.clone())
            .max_by_key(|c| c.num_labels());
        if let Some(cut) = cut {
            let ns: Vec<Record> =
                zone.records.iter().filter(|r| r.record_type() == RecordType::NS && r.name == cut).cloned().collect();
            for r in &ns {
                if let RData::NS(NS(target)) = &r.data {
                    m.additionals.extend(
                        zone.records.iter().filter(|g| g.name == *target && g.record_type() == RecordType::A).cloned(),
                    );
                }
            }
            m.authorities = ns;
            if dnssec {
                m.authorities.extend(signed::referral_proof(zone, &cut));
            }
            // A DELEG-aware parent adds the child's DELEG RRset for a DE query.
            let de = query.edns.as_ref().is_some_and(|e| e.flags().z & exchange::EDNS_DE != 0);
            if de {
                let deleg = u16::from(RecordType::from(crate::upstream::deleg::DELEG_TYPE));
                m.authorities.extend(
                    zone.records
                        .iter()
                        .filter(|r| {
                            r.name == cut
                                && (u16::from(r.record_type()) == deleg
                                    || (dnssec && signed::covered(r).map(u16::from) == Some(deleg)))
                        })
                        .cloned(),
                );
            }
            return m;
        }
        m.metadata.authoritative = true;
        let exact: Vec<Record> =
            zone.records.iter().filter(|r| r.name == qname && r.record_type() == qtype).cloned().collect();
        if !exact.is_empty() {
            m.answers = exact;
        } else if let Some(c) = zone.records.iter().find(|r| r.name == qname && r.record_type() == RecordType::CNAME) {
            m.answers.push(c.clone());
        }
        if !m.answers.is_empty() {
            if dnssec {
                m.answers.extend(signed::signatures_over(zone, &m.answers));
            }
            return m;
        }
        let exists = zone.records.iter().any(|r| is_at_or_below(&r.name, &qname));
        if !exists {
            m.metadata.response_code = ResponseCode::NXDomain;
        }
        m.authorities.extend(soa);
        if dnssec {
            m.authorities.extend(signed::signatures_over(zone, &m.authorities));
            m.authorities.extend(signed::denial(zone, &qname, !exists));
        }
        m
    }
}

/// A handle on the fake net: the resolver owns one, the test keeps another.
#[derive(Clone)]
struct Fake(std::rc::Rc<FakeNet>);

impl std::ops::Deref for Fake {
    type Target = FakeNet;
    fn deref(&self) -> &FakeNet {
        &self.0
    }
}

impl Upstream for Fake {
    async fn exchange(
        &self,
        server: SocketAddr,
        query: &[u8],
        wire: Wire,
        timeout: Duration,
    ) -> Result<Vec<u8>, UpstreamError> {
        let msg = Message::from_vec(query).map_err(|_| UpstreamError::BadResponse("fake: bad query"))?;
        let q = &msg.queries[0];
        if let Wire::Doq { .. } = wire {
            // No fake server speaks DoQ.
            return Err(UpstreamError::Transport(crate::upstream::error::TransportFailure::Refused));
        }
        if let Wire::Dot { .. } = wire {
            self.dot_log.borrow_mut().push((server.ip(), q.name().clone()));
            if server.port() != self.dot_port.get() || !self.dot_capable.contains(&server.ip()) {
                return Err(UpstreamError::Transport(crate::upstream::error::TransportFailure::Refused));
            }
            return Ok(self.answer(server.ip(), &msg).to_vec().unwrap());
        }
        self.log.borrow_mut().push((server.ip(), q.name().clone(), q.query_type()));
        let dropped = match self.drops.borrow_mut().get_mut(&server.ip()) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        if dropped || self.dead.contains(&server.ip()) {
            self.now.set(self.now.get() + timeout);
            return Err(UpstreamError::Timeout);
        }
        self.now.set(self.now.get() + Duration::from_millis(1));
        Ok(self.answer(server.ip(), &msg).to_vec().unwrap())
    }

    fn spawn(&self, task: std::pin::Pin<Box<dyn Future<Output = ()>>>) {
        // The fake network answers at once: a spawned probe completes in one poll.
        block_on(task);
    }

    async fn sleep(&self, d: Duration) {
        self.now.set(self.now.get() + d);
        let hook = self.on_sleep.borrow().clone();
        if let Some(hook) = hook {
            hook();
        }
    }
}

impl Environment for Fake {
    fn now(&self) -> Instant {
        self.now.get()
    }

    fn unix_now(&self) -> u64 {
        self.epoch.1 + self.now.get().duration_since(self.epoch.0).as_secs()
    }

    fn random(&self) -> u64 {
        xorshift(&self.rng)
    }
}

/// The fake nets' random generator: xorshift, seeded, so runs repeat.
fn xorshift(state: &Cell<u64>) -> u64 {
    let mut x = state.get();
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    state.set(x);
    x
}

/// The Unix second the fake clock starts at (2026-12-01).
const FAKE_UNIX_START: u64 = 1_796_083_200;

fn soa(zone: &str) -> Record {
    Record::from_rdata(n(zone), 3600, RData::SOA(SOA::new(n("ns."), n("h."), 1, 2, 3, 4, 300)))
}
fn ns(owner: &str, target: &str) -> Record {
    Record::from_rdata(n(owner), 3600, RData::NS(NS(n(target))))
}
fn a(owner: &str, addr: &str) -> Record {
    let IpAddr::V4(v4) = ip(addr) else { unreachable!() };
    Record::from_rdata(n(owner), 3600, RData::A(A(v4)))
}
fn cname(owner: &str, target: &str) -> Record {
    Record::from_rdata(n(owner), 3600, RData::CNAME(CNAME(n(target))))
}

/// root (10.0.0.1) -> example. (10.0.1.1) -> sub.example. (10.0.2.1)
fn base_zones() -> Vec<Zone> {
    vec![
        Zone {
            apex: Name::root(),
            servers: vec![ip("10.0.0.1")],
            records: vec![
                soa("."),
                ns(".", "a.root."),
                a("a.root.", "10.0.0.1"),
                ns("example.", "ns.example."),
                a("ns.example.", "10.0.1.1"),
            ],
        },
        Zone {
            apex: n("example."),
            servers: vec![ip("10.0.1.1")],
            records: vec![
                soa("example."),
                ns("example.", "ns.example."),
                a("ns.example.", "10.0.1.1"),
                a("www.example.", "192.0.2.1"),
                a("x.ent.example.", "192.0.2.2"),
                ns("sub.example.", "ns.sub.example."),
                a("ns.sub.example.", "10.0.2.1"),
                cname("loop1.example.", "loop2.example."),
                cname("loop2.example.", "loop1.example."),
            ],
        },
        Zone {
            apex: n("sub.example."),
            servers: vec![ip("10.0.2.1")],
            records: vec![
                soa("sub.example."),
                ns("sub.example.", "ns.sub.example."),
                a("a.b.c.sub.example.", "192.0.2.3"),
            ],
        },
    ]
}

/// A resolver over the fake net, Do53 only (the probing tests use `probing_resolver`).
fn resolver(zones: Vec<Zone>, cfg: &Config) -> (Resolver<Fake>, Fake) {
    let mut cfg = cfg.clone();
    cfg.transport.probing = false;
    resolver_with_dead(zones, HashSet::new(), &cfg)
}

fn probing_resolver(zones: Vec<Zone>, cfg: &Config) -> (Resolver<Fake>, Fake) {
    resolver_with_dead(zones, HashSet::new(), cfg)
}

fn resolver_with_dead(zones: Vec<Zone>, dead: HashSet<IpAddr>, cfg: &Config) -> (Resolver<Fake>, Fake) {
    let start = Instant::now();
    let net = Fake(std::rc::Rc::new(FakeNet {
        zones,
        dead,
        drops: RefCell::new(Default::default()),
        now: Cell::new(start),
        epoch: (start, FAKE_UNIX_START),
        rng: Cell::new(0x9E37_79B9_7F4A_7C15),
        log: RefCell::new(Vec::new()),
        dot_capable: [ip("10.0.1.1"), ip("10.0.9.1")].into_iter().collect(),
        dot_port: Cell::new(853),
        dot_log: RefCell::new(Vec::new()),
        on_sleep: RefCell::new(None),
    }));
    let hints = RootHints::parse(". NS a.root.\na.root. A 10.0.0.1\n").unwrap();
    (Resolver::new(shared_state(cfg, hints), net.clone(), Arc::new(WorkerStats::default())), net)
}

/// Makes the fake net do what a worker's loop does while a query waits: look up the
/// signals the resolver asked for (each in full, nested as deep as the lookups wait).
fn run_signal_lookups_while_sleeping(r: Resolver<Fake>, net: &Fake) -> std::rc::Rc<Resolver<Fake>> {
    let r = std::rc::Rc::new(r);
    let weak = std::rc::Rc::downgrade(&r);
    net.on_sleep.replace(Some(std::rc::Rc::new(move || {
        let Some(r) = weak.upgrade() else { return };
        for ns in r.take_wanted_signals() {
            block_on(r.learn_signal(&ns));
        }
    })));
    r
}

/// The state the workers share, for a test resolver with these root hints.
fn shared_state(cfg: &Config, hints: RootHints) -> Arc<Shared> {
    Arc::new(Shared {
        records: RecordCache::new(1 << 24, cfg.cache.max_ttl_s, cfg.cache.max_negative_ttl_s)
            .with_min_ttl(cfg.cache.min_ttl_s)
            .with_stale(if cfg.cache.serve_stale { cfg.cache.stale_max_s } else { 0 })
            .with_nsec_spans(cfg.dnssec.nsec_span_bytes(1 << 24)),
        servers: ServerTable::default(),
        hints: arc_swap::ArcSwap::from_pointee(hints),
        local: arc_swap::ArcSwap::from_pointee(LocalZones::new(&LocalZonesConfig::default())),
        access: arc_swap::ArcSwap::from_pointee(AccessPolicy::new(
            &[],
            &[crate::acl::parse_prefix("10.0.0.0/8").unwrap()],
        )),
        admission: Default::default(),
        dnstap: None,
        rpz: None,
        policies: Default::default(),
        signals: crate::upstream::signal::SignalCache::new(1000),
        // Validation only where a test gives a trust anchor (the fake root is not the real
        // one: the built-in anchors would make every answer bogus).
        validator: match cfg.dnssec.trust_anchor_file {
            Some(_) => crate::daemon::validator_settings(cfg).unwrap(),
            None => crate::dnssec::ValidatorSettings::off(),
        },
        managed: None,
        tlsa: Default::default(),
        zones: arc_swap::ArcSwap::from_pointee(cfg.zone_table().unwrap()),
        probes: Arc::new(crate::upstream::probe::ProbeTable::new(
            1000,
            crate::upstream::probe::ProbeWindows {
                persistence: Duration::from_secs(cfg.transport.probe_persistence_s),
                damping: Duration::from_secs(cfg.transport.probe_damping_s),
            },
        )),
        settings: {
            let mut settings = Settings::from_config(cfg);
            // The fake nets have no worker loop to start the wanted signal lookups: a wait
            // for one could only run out. The default is off here; tests of the wait ask
            // for `all`.
            if settings.signal_wait == crate::config::SignalWait::Signed {
                settings.signal_wait = crate::config::SignalWait::None;
            }
            settings
        },
    })
}

/// Runs a future that never waits (the fake network answers at once).
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the fake network never leaves a future pending"),
    }
}

/// Moves the fake clock (monotonic and Unix time together) `secs` ahead.
fn advance(net: &Fake, secs: u64) {
    net.now.set(net.now.get() + Duration::from_secs(secs));
}

/// Do53 queries a server saw (probes and DoT queries are in `dot_log`).
fn asked(net: &Fake, server: &str) -> Vec<String> {
    net.log
        .borrow()
        .iter()
        .filter(|(s, _, _)| *s == ip(server))
        .map(|(_, name, t)| format!("{} {t}", name.to_ascii()))
        .collect()
}

#[test]
fn rfc9156_each_server_sees_only_one_more_label() {
    let (r, net) = resolver(base_zones(), &Config::default());
    let ans = block_on(r.resolve(&n("a.b.c.sub.example."), RecordType::A)).unwrap();
    assert_eq!(ans.answers.len(), 1);
    // Priming, then the minimised name at the root.
    assert_eq!(asked(&net, "10.0.0.1"), [". NS", "example. A"]);
    assert_eq!(asked(&net, "10.0.1.1"), ["sub.example. A"]);
    // Within sub.example. the remaining labels are added one at a time, then the full name.
    assert_eq!(asked(&net, "10.0.2.1"), ["c.sub.example. A", "b.c.sub.example. A", "a.b.c.sub.example. A"]);
}

#[test]
fn without_minimisation_every_server_sees_the_full_name() {
    let mut cfg = Config::default();
    cfg.resolver.qname_minimisation = false;
    let (r, net) = resolver(base_zones(), &cfg);
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    assert_eq!(asked(&net, "10.0.0.1"), [". NS", "www.example. A"]);
}

#[test]
fn nxdomain_at_a_minimised_name_falls_back_to_the_full_name() {
    let (r, net) = resolver(base_zones(), &Config::default());
    let ans = block_on(r.resolve(&n("deep.nothing.example."), RecordType::TXT)).unwrap();
    assert_eq!(ans.rcode, crate::wire::rcode::NXDOMAIN);
    assert_eq!(asked(&net, "10.0.1.1"), ["nothing.example. A", "deep.nothing.example. TXT"]);
}

#[test]
fn rfc8020_names_below_a_cached_nxdomain_need_no_query() {
    let (r, net) = resolver(base_zones(), &Config::default());
    block_on(r.resolve(&n("gone.example."), RecordType::A)).unwrap();
    let before = net.log.borrow().len();
    let ans = block_on(r.resolve(&n("a.b.gone.example."), RecordType::AAAA)).unwrap();
    assert_eq!(ans.rcode, crate::wire::rcode::NXDOMAIN);
    assert_eq!(net.log.borrow().len(), before, "answered from the cached NXDOMAIN");
}

#[test]
fn empty_non_terminal_is_nodata_and_the_child_resolves() {
    let (r, _net) = resolver(base_zones(), &Config::default());
    let ent = block_on(r.resolve(&n("ent.example."), RecordType::A)).unwrap();
    assert_eq!((ent.rcode, ent.answers.len()), (crate::wire::rcode::NOERROR, 0));
    assert_eq!(ent.authority.len(), 1, "the SOA for negative caching");
    let x = block_on(r.resolve(&n("x.ent.example."), RecordType::A)).unwrap();
    assert_eq!(x.answers.len(), 1);
}

#[test]
fn cname_loop_is_an_error_not_a_hang() {
    let (r, _net) = resolver(base_zones(), &Config::default());
    let e = block_on(r.resolve(&n("loop1.example."), RecordType::A)).unwrap_err();
    assert!(matches!(e, ResolveError::ChainLoop(_)), "{e:?}");
}

#[test]
fn second_query_is_answered_from_the_record_cache() {
    let (r, net) = resolver(base_zones(), &Config::default());
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    let before = net.log.borrow().len();
    let again = block_on(r.resolve(&n("WWW.example."), RecordType::A)).unwrap();
    assert_eq!(again.answers.len(), 1);
    assert_eq!(net.log.borrow().len(), before);
}

#[test]
fn ttl_caps_apply_to_positive_and_negative_answers() {
    let mut cfg = Config::default();
    cfg.cache.max_ttl_s = 60;
    cfg.cache.max_negative_ttl_s = 5;
    let (r, net) = resolver(base_zones(), &cfg);
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    let hit = block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    assert!(hit.answers[0].ttl <= 60, "{}", hit.answers[0].ttl);
    block_on(r.resolve(&n("none.example."), RecordType::A)).unwrap();
    let neg = block_on(r.resolve(&n("none.example."), RecordType::A)).unwrap();
    assert!(neg.cache_ttl <= 5, "{}", neg.cache_ttl);
    // After the negative TTL the name is asked again.
    let before = net.log.borrow().len();
    net.now.set(net.now.get() + Duration::from_secs(6));
    block_on(r.resolve(&n("none.example."), RecordType::A)).unwrap();
    assert_eq!(net.log.borrow().len(), before + 1);
}

#[test]
fn out_of_bailiwick_glue_is_not_cached() {
    let mut zones = base_zones();
    // example.'s servers slip an address for a name outside their bailiwick into referrals.
    zones[1].records.push(ns("sub.example.", "www.victim."));
    zones[1].records.push(a("www.victim.", "10.6.6.6"));
    let (r, _net) = resolver(zones, &Config::default());
    block_on(r.resolve(&n("a.b.c.sub.example."), RecordType::A)).unwrap();
    let now = r.upstream().now();
    assert!(r.shared().records.get(&n("www.victim."), 1, now).is_none(), "poisoned by glue");
}

#[test]
fn nxns_style_delegation_is_bounded() {
    let mut zones = base_zones();
    // A delegation to 30 nameserver names without glue, each in a zone that does not exist.
    let mut evil = vec![soa("evil.example.")];
    for i in 0..30 {
        evil.push(ns("victim.example.", &format!("ns{i}.target.invalid-zone.example.")));
    }
    zones[1].records.extend(evil.into_iter().skip(1));
    let (r, net) = resolver(zones, &Config::default());
    let e = block_on(r.resolve(&n("www.victim.example."), RecordType::A)).unwrap_err();
    assert!(matches!(e, ResolveError::NoReachableAuthority { .. }), "{e:?}");
    let settings = &r.shared().settings;
    let lookups =
        net.log.borrow().iter().filter(|(_, name, _)| name.to_ascii().contains("target.invalid-zone")).count();
    // Each nameserver name costs at most an A and an AAAA lookup, and only max_ns_lookups
    // names are tried; the whole client query stays within its query budget.
    assert!(lookups <= 2 * settings.max_ns_lookups as usize, "{lookups} lookups of nameserver names");
    assert!(net.log.borrow().len() <= settings.max_queries_per_request as usize);
}

#[test]
fn query_budget_stops_runaway_work() {
    let mut cfg = Config::default();
    cfg.resolver.max_queries_per_request = 2;
    let (r, _net) = resolver(base_zones(), &cfg);
    let e = block_on(r.resolve(&n("a.b.c.sub.example."), RecordType::A)).unwrap_err();
    assert_eq!(e, ResolveError::LimitExceeded(Limit::QueriesPerRequest));
}

#[test]
fn dead_server_is_held_back_after_repeated_timeouts() {
    let dead = ip("10.0.1.2");
    let mut zones = base_zones();
    zones[1].servers.push(dead);
    zones[0].records.push(ns("example.", "ns2.example."));
    zones[0].records.push(a("ns2.example.", "10.0.1.2"));
    let mut cfg = Config::default();
    cfg.transport.probing = false;
    let (r, net) = resolver_with_dead(zones, [dead].into_iter().collect(), &cfg);
    for i in 0..20 {
        let ans = block_on(r.resolve(&n(&format!("n{i}.example.")), RecordType::A)).unwrap();
        assert_eq!(ans.rcode, crate::wire::rcode::NXDOMAIN, "query {i} failed despite a live server");
    }
    let to_dead = net.log.borrow().iter().filter(|(s, _, _)| *s == dead).count();
    // After a timeout its SRTT estimate is raised past the live server's, so it is not
    // chosen again while the live one answers (three in a row would also put it on hold).
    assert!(to_dead <= 3, "the dead server was asked {to_dead} times in 20 queries");
    // Whether it was tried at all depends on the random exploration of unknown servers.
    assert_eq!(r.shared().servers.get(dead).failures >= 1, to_dead >= 1);
}

#[test]
fn outstanding_limits_per_server_and_per_zone() {
    let mut cfg = Config::default();
    cfg.resolver.max_outstanding_per_server = 2;
    cfg.resolver.max_outstanding_per_zone = 3;
    let (r, _net) = resolver(base_zones(), &cfg);
    let zone = n("example.");
    let (s1, s2) = (ip("10.0.1.1"), ip("10.0.1.2"));
    let g1 = r.reserve(s1, &zone).unwrap();
    let _g2 = r.reserve(s1, &zone).unwrap();
    assert_eq!(r.reserve(s1, &zone).err(), Some(Limit::OutstandingPerServer));
    let _g3 = r.reserve(s2, &zone).unwrap();
    assert_eq!(r.reserve(s2, &zone).err(), Some(Limit::OutstandingPerZone));
    // Another zone on another server is not affected, and a finished query frees its place.
    assert!(r.reserve(ip("10.0.2.1"), &n("sub.example.")).is_ok());
    drop(g1);
    assert!(r.reserve(s1, &n("other.")).is_ok());
    assert!(r.reserve(s2, &zone).is_ok());
}

#[test]
fn a_lost_datagram_is_retried_on_the_only_server() {
    let (r, net) = resolver(base_zones(), &Config::default());
    // Warm the delegation, then lose the next query to example.'s only server.
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    net.drops.borrow_mut().insert(ip("10.0.1.1"), 1);
    let ans = block_on(r.resolve(&n("x.ent.example."), RecordType::A)).unwrap();
    assert_eq!(ans.answers.len(), 1);
    let to_example = asked(&net, "10.0.1.1");
    assert_eq!(to_example.iter().filter(|q| q.as_str() == "ent.example. A").count(), 2, "{to_example:?}");
}

#[test]
fn referral_glue_with_ttl_zero_is_still_used() {
    let mut zones = base_zones();
    for r in zones[1].records.iter_mut().filter(|r| r.name == n("ns.sub.example.")) {
        r.ttl = 0;
    }
    let (r, _net) = resolver(zones, &Config::default());
    let ans = block_on(r.resolve(&n("a.b.c.sub.example."), RecordType::A)).unwrap();
    assert_eq!(ans.answers.len(), 1);
}

#[test]
fn rfc2181_ttls_are_capped_on_the_first_answer_too() {
    let mut zones = base_zones();
    zones[1].records.push(Record::from_rdata(n("long.example."), 100_000, RData::A(A::new(192, 0, 2, 9))));
    zones[1].records.push(Record::from_rdata(n("huge.example."), 0x8000_0001, RData::A(A::new(192, 0, 2, 10))));
    let mut cfg = Config::default();
    cfg.cache.max_ttl_s = 60;
    let (r, _net) = resolver(zones, &cfg);
    let first = block_on(r.resolve(&n("long.example."), RecordType::A)).unwrap();
    assert_eq!(first.answers[0].ttl, 60);
    assert!(first.cache_ttl <= 60);
    // A TTL with the top bit set means zero (RFC 2181 section 8): not cached at all.
    let huge = block_on(r.resolve(&n("huge.example."), RecordType::A)).unwrap();
    assert_eq!((huge.answers[0].ttl, huge.cache_ttl), (0, 0));
}

#[test]
fn expired_in_zone_glue_is_fetched_again_from_the_parent() {
    let mut zones = base_zones();
    // The child's own (authoritative) address record lives shorter than the delegation.
    for r in zones[1].records.iter_mut().filter(|r| r.name == n("ns.example.") && r.record_type() == RecordType::A) {
        r.ttl = 60;
    }
    let (r, net) = resolver(zones, &Config::default());
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    // Asking for the nameserver's address replaces the glue with the child's answer...
    block_on(r.resolve(&n("ns.example."), RecordType::A)).unwrap();
    // ... which expires long before the cached NS RRset of example.
    net.now.set(net.now.get() + Duration::from_secs(120));
    let ans = block_on(r.resolve(&n("x.ent.example."), RecordType::A)).unwrap();
    assert_eq!(ans.answers.len(), 1);
}

#[test]
fn glueless_delegation_chains_are_bounded_work() {
    // z1 is served by names in z2, z2 by names in z3, ..., z6 by names inside itself
    // (without glue): nothing can ever be reached, and finding that out must stay cheap.
    let mut zones = base_zones();
    for i in 1..=6 {
        for k in 0..4 {
            let next = if i == 6 { format!("ns{k}.z6.example.") } else { format!("ns{k}.z{}.example.", i + 1) };
            zones[1].records.push(ns(&format!("z{i}.example."), &next));
        }
    }
    let (r, net) = resolver(zones, &Config::default());
    let e = block_on(r.resolve(&n("www.z1.example."), RecordType::A)).unwrap_err();
    assert!(matches!(e, ResolveError::NoReachableAuthority { .. } | ResolveError::LimitExceeded(_)), "{e:?}");
    assert!(net.log.borrow().len() <= r.shared().settings.max_queries_per_request as usize);
}

#[test]
fn healthy_servers_within_the_rtt_band_share_the_load() {
    let mut zones = base_zones();
    zones[1].servers.push(ip("10.0.1.2"));
    zones[0].records.push(ns("example.", "ns2.example."));
    zones[0].records.push(a("ns2.example.", "10.0.1.2"));
    let (r, net) = resolver(zones, &Config::default());
    for i in 0..40 {
        block_on(r.resolve(&n(&format!("n{i}.example.")), RecordType::A)).unwrap();
    }
    let (one, two) = (asked(&net, "10.0.1.1").len(), asked(&net, "10.0.1.2").len());
    assert!(one >= 5 && two >= 5, "load not spread: {one} / {two}");
}

/// A nameserver name with hundreds of addresses, and an NS RRset of a thousand names (as a
/// client's NS query can put in the cache), cost a bounded, linear amount of work.
#[test]
fn hostile_address_and_ns_sets_are_capped() {
    let (r, _net) = resolver(base_zones(), &Config::default());
    let now = r.upstream().now();
    let many: Vec<Record> = (0..200u32)
        .map(|i| {
            let [_, _, x, y] = i.to_be_bytes();
            Record::from_rdata(n("ns.example."), 300, RData::A(A::new(10, 9, x, y)))
        })
        .collect();
    r.shared().records.put_rrset(&n("ns.example."), 1, many, crate::cache::records::Rank::AuthAnswer, now);
    let (addrs, _) = r.known_addresses(&[n("ns.example.")], &[], &mut false);
    assert_eq!(addrs.len(), 8);
    let nss: Vec<Record> = (0..1000).map(|i| ns("example.", &format!("ns{i}.example."))).collect();
    assert_eq!(iterate::ns_names(&nss).len(), iterate::MAX_NS_NAMES);
}
