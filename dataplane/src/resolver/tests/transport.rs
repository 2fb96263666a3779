//! Transport discovery on the fake clock: RFC 9539 probing and its damping window, and
//! RFC 9461 `_dns` SVCB signals, their use and their TTL.

use super::*;
use crate::upstream::plan::PlanSource;
use crate::upstream::probe::ProbeDecision;
use adox_api::policy::Transport;

#[test]
fn rfc9539_probe_beside_do53_then_encrypted_only_and_damping() {
    let (r, net) = probing_resolver(base_zones(), &Config::default());
    // First query: every server is unknown, so Do53 answers and a probe runs beside it.
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    let do53_to_example = asked(&net, "10.0.1.1").len();
    assert!(do53_to_example >= 1);
    let probed: Vec<IpAddr> = net.dot_log.borrow().iter().map(|(s, _)| *s).collect();
    assert!(probed.contains(&ip("10.0.1.1")) && probed.contains(&ip("10.0.0.1")), "{probed:?}");
    let probes = &r.shared().probes;
    let now = net.unix_now();
    assert_eq!(probes.decide(ip("10.0.1.1"), Transport::Dot, now), ProbeDecision::Use);
    assert_eq!(probes.decide(ip("10.0.0.1"), Transport::Dot, now), ProbeDecision::Skip, "root refused");
    // Next queries to example.'s server go over DoT only (R2); the root is damped (R4):
    // no second probe, Do53 only.
    let dot_before = net.dot_log.borrow().len();
    for i in 0..10 {
        block_on(r.resolve(&n(&format!("n{i}.example.")), RecordType::A)).unwrap();
    }
    assert_eq!(asked(&net, "10.0.1.1").len(), do53_to_example, "no more Do53 to a server that speaks DoT");
    let dot_after: Vec<(IpAddr, Name)> = net.dot_log.borrow()[dot_before..].to_vec();
    assert_eq!(dot_after.len(), 10);
    assert!(dot_after.iter().all(|(s, _)| *s == ip("10.0.1.1")), "the refused root is not probed again");
}

#[test]
fn operator_cleartext_wins_over_the_probe_table() {
    let cfg = Config {
        policies: vec![adox_api::policy::PolicySpec {
            zone: Some("example.".into()),
            mode: Some(adox_api::policy::Mode::Cleartext),
            ..Default::default()
        }],
        ..Config::default()
    };
    let (r, net) = probing_resolver(base_zones(), &cfg);
    r.shared().policies.store(crate::upstream::policy::PolicyTable::compile(&cfg.policies().unwrap()).unwrap());
    r.shared().probes.success(ip("10.0.1.1"), Transport::Dot, net.unix_now());
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    assert!(!net.dot_log.borrow().iter().any(|(s, _)| *s == ip("10.0.1.1")), "DoT despite the cleartext override");
}

fn svcb(owner: &str, target_wire: &[u8], alpn: &[u8]) -> Record {
    let mut rdata = 1u16.to_be_bytes().to_vec();
    rdata.extend_from_slice(target_wire);
    rdata.extend_from_slice(&1u16.to_be_bytes());
    rdata.extend_from_slice(&(alpn.len() as u16).to_be_bytes());
    rdata.extend_from_slice(alpn);
    Record::from_rdata(
        n(owner),
        3600,
        RData::Unknown { code: RecordType::SVCB, rdata: hickory_proto::rr::rdata::NULL::with(rdata) },
    )
}

#[test]
fn rfc9461_signal_is_learned_beside_and_used_from_the_next_query() {
    let mut zones = base_zones();
    zones[1].records.push(svcb("_dns.ns.example.", b"\x02ns\x07example\x00", b"\x03dot"));
    let (r, net) = resolver(zones, &Config::default());
    // The first query does not wait for the signal: Do53, and the lookup is queued.
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    assert!(net.dot_log.borrow().is_empty());
    let wanted = r.take_wanted_signals();
    assert!(wanted.contains(&n("ns.example.")), "{wanted:?}");
    for ns in wanted {
        block_on(r.learn_signal(&ns));
    }
    // The signal lives in the zone the nameserver serves: a circular dependency, reported
    // (the root's own `_dns.a.root.` lookup is one too).
    let known = r.shared().signals.get(&n("ns.example."), net.unix_now());
    assert!(
        matches!(known, Some(crate::upstream::signal::Signal::Known { cycle: true, ref records, .. }) if records.len() == 1),
        "{known:?}"
    );
    assert!(r.stats.signal_cycles.get() >= 1);
    assert_eq!(r.stats.signals_learned.get(), 1);
    let do53_before = asked(&net, "10.0.1.1").len();
    block_on(r.resolve(&n("x.ent.example."), RecordType::A)).unwrap();
    assert_eq!(asked(&net, "10.0.1.1").len(), do53_before, "no Do53 after the signal");
    assert!(net.dot_log.borrow().iter().any(|(s, _)| *s == ip("10.0.1.1")), "DoT after the signal (R3)");
    assert_eq!(r.plan(&n("example."), &n("ns.example."), ip("10.0.1.1")).source, PlanSource::InsecureSignal);
}

/// RFC 9460 section 7.2: a `port` key moves the transport off its default port, and the
/// resolver follows it (the connection still goes to the delegation's address).
#[test]
fn rfc9460_7_2_a_signal_port_key_is_followed() {
    let mut zones = base_zones();
    let mut rec = svcb("_dns.ns.example.", b"\x02ns\x07example\x00", b"\x03dot");
    if let RData::Unknown { rdata, .. } = &mut rec.data {
        rdata.anything.extend_from_slice(&[0, 3, 0, 2, 0x22, 0x95]); // port=8853
    }
    zones[1].records.push(rec);
    let (r, net) = resolver(zones, &Config::default());
    net.dot_port.set(8853);
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    for ns in r.take_wanted_signals() {
        block_on(r.learn_signal(&ns));
    }
    let plan = r.plan(&n("example."), &n("ns.example."), ip("10.0.1.1"));
    assert_eq!((plan.port, plan.source), (8853, PlanSource::InsecureSignal));
    let do53_before = asked(&net, "10.0.1.1").len();
    block_on(r.resolve(&n("x.ent.example."), RecordType::A)).unwrap();
    assert_eq!(asked(&net, "10.0.1.1").len(), do53_before, "DoT on 8853 answered: no Do53");
    assert!(net.dot_log.borrow().iter().any(|(s, _)| *s == ip("10.0.1.1")));
}

#[test]
fn a_hostile_signal_is_refused_and_changes_nothing() {
    let mut zones = base_zones();
    // port 53 is refused: the record is not used, the server stays on Do53.
    let mut bad = svcb("_dns.ns.example.", b"\x02ns\x07example\x00", b"\x03dot");
    if let RData::Unknown { rdata, .. } = &mut bad.data {
        rdata.anything.extend_from_slice(&[0, 3, 0, 2, 0, 53]);
    }
    zones[1].records.push(bad);
    let (r, net) = resolver(zones, &Config::default());
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    for ns in r.take_wanted_signals() {
        block_on(r.learn_signal(&ns));
    }
    assert_eq!((r.stats.signals_refused.get(), r.stats.signals_learned.get()), (1, 0));
    block_on(r.resolve(&n("x.ent.example."), RecordType::A)).unwrap();
    assert!(net.dot_log.borrow().is_empty());
}

/// RFC 9539 section 4.1 (R4, E-damping) on the fake clock: after a failed probe the
/// server gets Do53 only for the damping window, even when it is asked again; once the
/// window has passed it is probed again beside the next Do53 query.
#[test]
fn rfc9539_a_failed_probe_is_damped_for_the_window_then_probed_again() {
    let cfg = Config::default();
    let damping = cfg.transport.probe_damping_s;
    let (r, net) = probing_resolver(base_zones(), &cfg);
    let root = ip("10.0.0.1");
    let probes_of_root = || net.dot_log.borrow().iter().filter(|(s, _)| *s == root).count();
    let decide = || r.shared().probes.decide(root, Transport::Dot, net.unix_now());
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    assert_eq!(probes_of_root(), 1);
    let failed_at = r.shared().probes.get(root, Transport::Dot).unwrap().last_failure.unwrap();
    // Ten seconds before the window ends (every cached record has long expired, so the
    // root is asked again): Do53 only, no probe.
    advance(&net, failed_at + damping - 10 - net.unix_now());
    assert_eq!(decide(), ProbeDecision::Skip);
    let do53 = asked(&net, "10.0.0.1").len();
    block_on(r.resolve(&n("www.first."), RecordType::A)).unwrap();
    assert!(asked(&net, "10.0.0.1").len() > do53, "the root was asked again, over Do53");
    assert_eq!(probes_of_root(), 1, "no probe within the damping window");
    // Past the window: probed again beside the Do53 query, and damped again when it fails.
    advance(&net, 20);
    assert_eq!(decide(), ProbeDecision::Probe);
    block_on(r.resolve(&n("www.second."), RecordType::A)).unwrap();
    assert_eq!(probes_of_root(), 2, "probed again once the damping window passed");
    assert_eq!(decide(), ProbeDecision::Skip);
    assert!(r.shared().probes.get(root, Transport::Dot).unwrap().last_failure.unwrap() > failed_at);
}

/// RFC 9461 section 3 (the signal is an SVCB RRset, kept for its TTL), on the fake clock:
/// a learned signal is followed until its TTL runs out; after that the server is back on
/// its default transport and a new lookup of the signal is wanted.
#[test]
fn rfc9461_a_signal_is_followed_for_its_ttl_then_looked_up_again() {
    let mut zones = base_zones();
    let mut signal = svcb("_dns.ns.example.", b"\x02ns\x07example\x00", b"\x03dot");
    signal.ttl = 300;
    zones[1].records.push(signal);
    let (r, net) = resolver(zones, &Config::default());
    let ns = n("ns.example.");
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    for wanted in r.take_wanted_signals() {
        block_on(r.learn_signal(&wanted));
    }
    let until = match r.shared().signals.get(&ns, net.unix_now()) {
        Some(crate::upstream::signal::Signal::Known { until, .. }) => until,
        other => panic!("{other:?}"),
    };
    assert_eq!(until, FAKE_UNIX_START + 300, "kept for the RRset's TTL");
    // A second before it expires: followed (DoT), nothing to look up.
    advance(&net, until - 1 - net.unix_now());
    let (do53, dot) = (asked(&net, "10.0.1.1").len(), net.dot_log.borrow().len());
    block_on(r.resolve(&n("n1.example."), RecordType::A)).unwrap();
    assert_eq!(asked(&net, "10.0.1.1").len(), do53, "DoT while the signal lives");
    assert!(net.dot_log.borrow().len() > dot);
    assert!(r.take_wanted_signals().is_empty());
    // Past its TTL: no longer used (Do53 again, the delegation is still cached) and wanted.
    advance(&net, 2);
    assert!(r.shared().signals.get(&ns, net.unix_now()).is_none());
    let dot = net.dot_log.borrow().len();
    block_on(r.resolve(&n("n2.example."), RecordType::A)).unwrap();
    assert!(asked(&net, "10.0.1.1").len() > do53, "Do53 once the signal expired");
    assert_eq!(net.dot_log.borrow().len(), dot);
    assert_ne!(r.plan(&n("example."), &ns, ip("10.0.1.1")).source, PlanSource::InsecureSignal);
    assert_eq!(r.take_wanted_signals(), std::slice::from_ref(&ns), "the signal is looked up again");
    // Learned again: followed again.
    block_on(r.learn_signal(&ns));
    assert_eq!(r.plan(&n("example."), &ns, ip("10.0.1.1")).source, PlanSource::InsecureSignal);
}

/// R5 (SVCB-DANE): a strict signal past its TTL still decides the next query, which goes
/// encrypted and authenticated, never over the probe table's plan or Do53, while the
/// signal is refreshed beside it. (The next query was once planned from the probe table.)
#[test]
fn r5_an_expired_strict_signal_keeps_deciding_until_it_is_refreshed() {
    let (r, net) = resolver(base_zones(), &Config::default());
    let ns = n("ns.example.");
    // Prime the delegation, then learn a strict (secure, DANE) signal by hand.
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    let _ = r.take_wanted_signals();
    let record = crate::upstream::signal::parse_svcb(b"\x00\x01\x00\x00\x01\x00\x04\x03dot").unwrap();
    let until = net.unix_now() + 60;
    let strict = crate::upstream::signal::Signal::Known {
        records: vec![record],
        secure: true,
        dane: vec![(Transport::Dot, ns.clone())],
        cycle: false,
        refused: Vec::new(),
        until,
        strict_until: until + 3600,
    };
    r.shared().signals.put(&ns, strict);
    assert_eq!(r.plan(&n("example."), &ns, ip("10.0.1.1")).mode, adox_api::policy::Mode::Strict);
    // Past its TTL.
    advance(&net, 61);
    assert!(r.shared().signals.get(&ns, net.unix_now()).is_none(), "expired");
    let plan = r.plan(&n("example."), &ns, ip("10.0.1.1"));
    assert_eq!((plan.mode, plan.auth), (adox_api::policy::Mode::Strict, adox_api::policy::Auth::Dane), "{plan:?}");
    assert_eq!(r.take_wanted_signals(), std::slice::from_ref(&ns), "refreshed beside the query");
    let do53 = asked(&net, "10.0.1.1").len();
    block_on(r.resolve(&n("n7.example."), RecordType::A)).unwrap();
    assert_eq!(asked(&net, "10.0.1.1").len(), do53, "nothing in cleartext to a strict server");
}

/// R5 and issue 12: a strict state past its TTL holds while the signatures it rests on are
/// valid, never longer: past them the server is no longer strict (an owner who withdrew
/// encryption is not locked out), and the signal is looked up again.
#[test]
fn r5_an_expired_strict_signal_ends_with_its_signatures() {
    let (r, net) = resolver(base_zones(), &Config::default());
    let ns = n("ns.example.");
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    let _ = r.take_wanted_signals();
    let record = crate::upstream::signal::parse_svcb(b"\x00\x01\x00\x00\x01\x00\x04\x03dot").unwrap();
    let until = net.unix_now() + 60;
    r.shared().signals.put(
        &ns,
        crate::upstream::signal::Signal::Known {
            records: vec![record],
            secure: true,
            dane: vec![(Transport::Dot, ns.clone())],
            cycle: false,
            refused: Vec::new(),
            until,
            strict_until: until + 100,
        },
    );
    advance(&net, 61);
    assert_eq!(r.plan(&n("example."), &ns, ip("10.0.1.1")).mode, adox_api::policy::Mode::Strict, "past its TTL");
    let _ = r.take_wanted_signals();
    advance(&net, 100);
    let plan = r.plan(&n("example."), &ns, ip("10.0.1.1"));
    assert_ne!(plan.mode, adox_api::policy::Mode::Strict, "past its signatures: {plan:?}");
    assert_eq!(r.take_wanted_signals(), std::slice::from_ref(&ns), "looked up again");
}

/// A signal names the port (and for DANE the name) an attempt uses, and anyone's zone can
/// name any address: a failure on a port a signal chose is not recorded against the
/// address, so one query cannot switch encryption off for everyone using that server.
#[test]
fn a_failure_on_a_signalled_port_is_not_held_against_the_address() {
    let mut zones = base_zones();
    let mut rec = svcb("_dns.ns.example.", b"\x02ns\x07example\x00", b"\x03dot");
    if let RData::Unknown { rdata, .. } = &mut rec.data {
        rdata.anything.extend_from_slice(&[0, 3, 0, 2, 0x27, 0x0F]); // port=9999
    }
    zones[1].records.push(rec);
    let (r, net) = resolver(zones, &Config::default());
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    for ns in r.take_wanted_signals() {
        block_on(r.learn_signal(&ns));
    }
    assert_eq!(r.plan(&n("example."), &n("ns.example."), ip("10.0.1.1")).port, 9999);
    // DoT to port 9999 is refused (the server speaks it on 853 only); Do53 answers.
    block_on(r.resolve(&n("x.ent.example."), RecordType::A)).unwrap();
    assert!(net.dot_log.borrow().iter().any(|(s, _)| *s == ip("10.0.1.1")), "DoT to the signalled port was tried");
    let decision = r.shared().probes.decide(ip("10.0.1.1"), Transport::Dot, net.unix_now());
    assert_ne!(decision, ProbeDecision::Skip, "the address is not damped");
}

/// A secure signal can give any address a TLS name of its own choosing (its zone names the
/// address): a failure under such a plan is not held against the address (one query could
/// otherwise switch DoT off for everyone using that server for a day).
#[test]
fn a_failure_under_a_signalled_dane_plan_is_not_held_against_the_address() {
    let (r, net) = resolver(base_zones(), &Config::default());
    let root_ns = n("a.root.");
    let record = crate::upstream::signal::parse_svcb(b"\x00\x01\x00\x00\x01\x00\x04\x03dot").unwrap();
    r.shared().signals.put(
        &root_ns,
        crate::upstream::signal::Signal::Known {
            records: vec![record],
            secure: true,
            dane: vec![(Transport::Dot, n("ns.evil."))],
            cycle: false,
            refused: Vec::new(),
            until: net.unix_now() + 600,
            strict_until: net.unix_now() + 600,
        },
    );
    // The root server speaks no DoT: strict DANE fails, nothing goes in cleartext.
    assert!(block_on(r.resolve(&n("www.example."), RecordType::A)).is_err());
    assert!(net.dot_log.borrow().iter().any(|(s, _)| *s == ip("10.0.0.1")));
    let decision = r.shared().probes.decide(ip("10.0.0.1"), Transport::Dot, net.unix_now());
    assert_ne!(decision, ProbeDecision::Skip, "the address is not damped by a signal's plan");
}

/// `transport.signal_wait`: the first query to a nameserver waits for its signal (the fake
/// net runs the wanted lookups while a query sleeps, as a worker's loop does) and goes
/// out over the transport the signal names, never in cleartext first. The signal's own
/// lookup needs that nameserver (its zone holds the signal): it does not wait for itself.
#[test]
fn signal_wait_the_first_query_already_follows_the_signal() {
    let mut zones = base_zones();
    zones[1].records.push(svcb("_dns.ns.example.", b"\x02ns\x07example\x00", b"\x03dot"));
    let mut cfg = Config::default();
    cfg.transport.signal_wait = crate::config::SignalWait::All;
    let (r, net) = probing_resolver(zones, &cfg);
    let r = run_signal_lookups_while_sleeping(r, &net);
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    let do53 = asked(&net, "10.0.1.1");
    assert!(!do53.iter().any(|q| q.starts_with("www.example.")), "cleartext before the signal: {do53:?}");
    assert!(net.dot_log.borrow().iter().any(|(s, q)| *s == ip("10.0.1.1") && *q == n("www.example.")));
    assert!(r.stats.signal_waits.get() >= 1);
    assert_eq!(r.stats.signal_wait_timeouts.get(), 0);
    assert!(r.stats.signal_cycles.get() >= 1, "the signal's lookup needed its own server");
    // ... and asked it over DoT first, unauthenticated, nothing being known of it yet.
    assert!(net.dot_log.borrow().iter().any(|(s, q)| *s == ip("10.0.1.1") && *q == n("_dns.ns.example.")));
    assert!(!do53.iter().any(|q| q.starts_with("_dns.ns.example.")), "{do53:?}");
}

/// Without the wait (the default on the fake net, `none` in a config), the same first
/// query goes out beside the lookup, and a wait that nobody answers ends at its bound.
#[test]
fn signal_wait_is_bounded_and_can_be_off() {
    let mut cfg = Config::default();
    cfg.transport.signal_wait = crate::config::SignalWait::None;
    let (r, net) = resolver(base_zones(), &cfg);
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    assert_eq!(r.stats.signal_waits.get() + r.stats.signal_wait_timeouts.get(), 0);
    // All, and nobody runs the lookups: each wait runs out after signal_wait_ms.
    cfg.transport.signal_wait = crate::config::SignalWait::All;
    cfg.transport.signal_wait_ms = 250;
    let (r, net2) = resolver(base_zones(), &cfg);
    let start = net2.now();
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    let timeouts = r.stats.signal_wait_timeouts.get();
    assert!(timeouts >= 1);
    let waited = net2.now().duration_since(start);
    assert!(waited >= Duration::from_millis(250) * timeouts as u32, "{waited:?} for {timeouts}");
    assert!(waited < Duration::from_millis(250) * timeouts as u32 + Duration::from_millis(100), "{waited:?}");
    assert_eq!(asked(&net, "10.0.1.1"), asked(&net2, "10.0.1.1"), "the same queries, later");
}

/// Signal lookups that wait for each other through two zones (a.cyc.'s signal is served
/// by ns.b.cyc., whose own signal is served by ns.a.cyc.) and through three: each ends
/// without running out its wait, and the cycle is reported on the signal that closed it.
#[test]
fn signal_wait_cycles_through_two_and_three_zones_resolve_and_are_reported() {
    for ring in [&["a", "b"][..], &["x", "y", "z"][..]] {
        // Zone k is served by the nameserver of zone k+1 (mod the ring).
        let addr = |i: usize| format!("10.0.{}.1", 10 + i);
        let mut root = vec![soa("."), ns(".", "a.root."), a("a.root.", "10.0.0.1")];
        let mut zones = Vec::new();
        for (i, z) in ring.iter().enumerate() {
            let next = ring[(i + 1) % ring.len()];
            let apex = format!("{z}.cyc.");
            root.push(ns(&apex, &format!("ns.{next}.cyc.")));
            root.push(a(&format!("ns.{z}.cyc."), &addr(i)));
            let target = format!("\x02ns\x01{z}\x03cyc\x00");
            zones.push(Zone {
                apex: n(&apex),
                // Served at the address of the next zone's nameserver.
                servers: vec![ip(&addr((i + 1) % ring.len()))],
                records: vec![
                    soa(&apex),
                    ns(&apex, &format!("ns.{next}.cyc.")),
                    a(&format!("www.{apex}"), "192.0.2.9"),
                    svcb(&format!("_dns.ns.{apex}"), target.as_bytes(), b"\x03dot"),
                ],
            });
        }
        zones.insert(0, Zone { apex: Name::root(), servers: vec![ip("10.0.0.1")], records: root });
        let mut cfg = Config::default();
        cfg.transport.signal_wait = crate::config::SignalWait::All;
        let (r, net) = resolver(zones, &cfg);
        let r = run_signal_lookups_while_sleeping(r, &net);
        let answer = block_on(r.resolve(&n(&format!("www.{}.cyc.", ring[0])), RecordType::A)).unwrap();
        assert_eq!(answer.answers.len(), 1, "{ring:?} {answer:?}");
        assert_eq!(r.stats.signal_wait_timeouts.get(), 0, "{ring:?}: a wait ran out (a deadlock undone by time)");
        let now = net.unix_now();
        let mut cycles = 0;
        for z in ring {
            match r.shared().signals.get(&n(&format!("ns.{z}.cyc.")), now) {
                Some(crate::upstream::signal::Signal::Known { records, cycle, .. }) => {
                    assert_eq!(records.len(), 1, "{ring:?} {z}");
                    cycles += usize::from(cycle);
                }
                other => panic!("{ring:?} {z}: {other:?}"),
            }
        }
        assert!(cycles >= 1, "{ring:?}: the cycle is reported on a signal");
        assert!(r.stats.signal_cycles.get() >= 1, "{ring:?}");
    }
}

/// Only a first contact waits: a signal past its TTL is refreshed beside the queries.
#[test]
fn signal_wait_a_refresh_is_never_waited_for() {
    let mut zones = base_zones();
    zones[1].records.push(svcb("_dns.ns.example.", b"\x02ns\x07example\x00", b"\x03dot"));
    let mut cfg = Config::default();
    cfg.transport.signal_wait = crate::config::SignalWait::All;
    let (r, net) = resolver(zones, &cfg);
    let r = run_signal_lookups_while_sleeping(r, &net);
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    let waits = r.stats.signal_waits.get();
    assert!(waits >= 1);
    // Past every TTL (signals and records: 3600 s), by a minute.
    net.now.set(net.now.get() + Duration::from_secs(3660));
    block_on(r.resolve(&n("x.ent.example."), RecordType::A)).unwrap();
    assert_eq!((r.stats.signal_waits.get(), r.stats.signal_wait_timeouts.get()), (waits, 0));
    assert!(r.take_wanted_signals().contains(&n("ns.example.")), "refreshed beside the query");
}
