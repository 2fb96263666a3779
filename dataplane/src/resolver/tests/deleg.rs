//! Experimental DELEG (`transport.deleg`) against signed fake zones: `example.` (signed)
//! delegates `enc.example.` and `clear.example.` to one nameserver, ns.shared.example.
//! (10.0.9.1, DoT-capable), with a DELEG RRset for each: `alpn=dot` for enc, no transport
//! for clear. The fake parent adds them to referrals for DE queries only.

use adox_api::policy::Mode;

use super::signed::{self, SignedZones, raw, window};
use super::*;

const SHARED: &str = "10.0.9.1";

/// A DELEG RDATA: server-name=ns.shared.example., and alpn (key65280) when given.
fn deleg_rdata(alpn: Option<&str>) -> Vec<u8> {
    let name = b"\x02ns\x06shared\x07example\x00";
    let mut out = vec![0, 3, 0, name.len() as u8];
    out.extend_from_slice(name);
    if let Some(id) = alpn {
        out.extend_from_slice(&[0xff, 0x00, 0, id.len() as u8 + 1, id.len() as u8]);
        out.extend_from_slice(id.as_bytes());
    }
    out
}

/// `.` and `example.` signed; enc/clear delegated from example. to the shared server,
/// each with its DELEG RRset (TTL `deleg_ttl`).
fn zones(deleg_ttl: u32) -> SignedZones {
    let mut zones = base_zones();
    let ex = zones.iter_mut().find(|z| z.apex == n("example.")).unwrap();
    for child in ["enc.example.", "clear.example."] {
        ex.records.push(ns(child, "ns.shared.example."));
    }
    ex.records.push(a("ns.shared.example.", SHARED));
    let deleg = RecordType::from(crate::upstream::deleg::DELEG_TYPE);
    ex.records.push(raw(&n("enc.example."), deleg_ttl, deleg, deleg_rdata(Some("dot"))));
    ex.records.push(raw(&n("clear.example."), deleg_ttl, deleg, deleg_rdata(None)));
    for (child, addr) in [("enc.example.", "192.0.2.51"), ("clear.example.", "192.0.2.52")] {
        zones.push(Zone {
            apex: n(child),
            servers: vec![ip(SHARED)],
            records: vec![soa(child), ns(child, "ns.shared.example."), a(&format!("www.{child}"), addr)],
        });
    }
    SignedZones::new(zones, &[".", "example."])
}

fn deleg_config(on: bool) -> Config {
    let mut cfg = Config::default();
    cfg.transport.deleg = on;
    cfg.transport.signals = false;
    cfg.transport.probing = false;
    cfg
}

/// Names asked of `server` over DoT, and over Do53.
fn seen(net: &Fake, server: &str) -> (Vec<String>, Vec<String>) {
    let dot = net.dot_log.borrow().iter().filter(|(s, _)| *s == ip(server)).map(|(_, q)| q.to_string()).collect();
    (dot, asked(net, server))
}

#[test]
fn a_secure_deleg_record_makes_one_zone_strict_and_leaves_its_sibling_alone() {
    let (r, net) = zones(3600).sign().resolver(&deleg_config(true));
    let enc = block_on(r.resolve(&n("www.enc.example."), RecordType::A)).unwrap();
    assert_eq!(enc.answers.len(), 1);
    let clear = block_on(r.resolve(&n("www.clear.example."), RecordType::A)).unwrap();
    assert_eq!(clear.answers.len(), 1);
    let (dot, do53) = seen(&net, SHARED);
    assert!(dot.iter().all(|q| q.contains("enc.example")) && !dot.is_empty(), "DoT: {dot:?}");
    assert!(!do53.iter().any(|q| q.contains("enc.example")), "cleartext for the DoT zone: {do53:?}");
    assert!(do53.iter().any(|q| q.contains("clear.example")), "Do53 for the other: {do53:?}");
    assert_eq!((r.stats.deleg_secure.get(), r.stats.deleg_bogus.get()), (2, 0));
    let plan = r.plan(&n("enc.example."), &n("ns.shared.example."), ip(SHARED));
    assert_eq!((plan.mode, plan.source.label().as_str()), (Mode::Strict, "deleg:secure"));
}

#[test]
fn without_the_switch_no_de_bit_goes_out_and_no_deleg_is_used() {
    let (r, net) = zones(3600).sign().resolver(&deleg_config(false));
    block_on(r.resolve(&n("www.enc.example."), RecordType::A)).unwrap();
    let (dot, do53) = seen(&net, SHARED);
    assert!(dot.is_empty() && do53.iter().any(|q| q.contains("enc.example")), "{dot:?} {do53:?}");
    assert_eq!(r.stats.deleg_secure.get() + r.stats.deleg_insecure.get(), 0);
}

/// A DELEG RRset whose signature does not validate fails the delegation, as a bogus DS
/// does: no fallback to the NS RRset beside it (that would be the downgrade an attacker
/// on the path to the parent wants).
#[test]
fn a_bogus_deleg_record_fails_the_delegation() {
    let mut z = zones(3600).sign();
    z.resign("enc.example.", RecordType::from(crate::upstream::deleg::DELEG_TYPE), window(-20 * 86_400, -3 * 86_400));
    let (r, net) = z.resolver(&deleg_config(true));
    assert!(matches!(block_on(r.resolve(&n("www.enc.example."), RecordType::A)), Err(ResolveError::InvalidData(_))));
    assert_eq!((r.stats.deleg_secure.get(), r.stats.deleg_insecure.get(), r.stats.deleg_bogus.get()), (0, 0, 1));
    let (dot, do53) = seen(&net, SHARED);
    assert!(dot.is_empty() && do53.is_empty(), "nothing went to the child's server: {dot:?} {do53:?}");
}

/// The parent's DELEG RRset is its own data, like a DS: unsigned under a secure parent it
/// is bogus, not an insecure hint.
#[test]
fn an_unsigned_deleg_record_under_a_secure_parent_is_bogus() {
    let mut z = zones(3600).sign();
    let deleg = RecordType::from(crate::upstream::deleg::DELEG_TYPE);
    z.zone("example.").records.retain(|r| !(r.name == n("enc.example.") && signed::covered(r) == Some(deleg)));
    let (r, _net) = z.resolver(&deleg_config(true));
    assert!(matches!(block_on(r.resolve(&n("www.enc.example."), RecordType::A)), Err(ResolveError::InvalidData(_))));
    assert_eq!(r.stats.deleg_bogus.get(), 1);
}

/// A client asking for the DELEG type itself gets the child's answer (the child's
/// servers are asked), which never replaces the parent side's rule: the zone stays
/// strict.
#[test]
fn a_client_query_for_deleg_cannot_erase_the_parents_rule() {
    let (r, net) = zones(3600).sign().resolver(&deleg_config(true));
    block_on(r.resolve(&n("www.enc.example."), RecordType::A)).unwrap();
    let deleg = RecordType::from(crate::upstream::deleg::DELEG_TYPE);
    let _ = block_on(r.resolve(&n("enc.example."), deleg));
    block_on(r.resolve(&n("other.enc.example."), RecordType::A)).unwrap_or_default();
    let plan = r.plan(&n("enc.example."), &n("ns.shared.example."), ip(SHARED));
    assert_eq!((plan.mode, plan.source.label().as_str()), (Mode::Strict, "deleg:secure"));
    let (_, do53) = seen(&net, SHARED);
    assert!(!do53.iter().any(|q| q.contains("enc.example")), "cleartext for the DoT zone: {do53:?}");
}

/// The zone's NS RRset from the child outlives the parent's DELEG RRset: once the DELEG
/// state has expired, the cut is asked of its parent again (the rule is renewed, and
/// never silently dropped while the NS RRset lives on).
#[test]
fn an_expired_deleg_state_sends_the_walk_back_to_the_parent() {
    let (r, net) = zones(60).sign().resolver(&deleg_config(true));
    block_on(r.resolve(&n("www.enc.example."), RecordType::A)).unwrap();
    let parent_asked = |net: &Fake| asked(net, "10.0.1.1").iter().filter(|q| q.contains("enc.example")).count();
    let before = parent_asked(&net);
    // Within the DELEG TTL: straight to the child's server.
    block_on(r.resolve(&n("a.enc.example."), RecordType::A)).unwrap();
    assert_eq!(parent_asked(&net), before);
    advance(&net, 120);
    block_on(r.resolve(&n("b.enc.example."), RecordType::A)).unwrap();
    assert!(parent_asked(&net) > before, "the parent was asked again");
    let (_, do53) = seen(&net, SHARED);
    assert!(!do53.iter().any(|q| q.contains("enc.example")), "still never in cleartext: {do53:?}");
    assert_eq!(r.stats.deleg_secure.get(), 2);
}

/// A DELEG RRset naming other servers than the NS RRset beside it: the walk follows the
/// DELEG names, on the referral and from the cache later, and the zone stays strict.
#[test]
fn the_deleg_server_names_are_followed_from_the_cache_too() {
    let mut z = zones(3600);
    let ex = z.zone("example.");
    let deleg = RecordType::from(crate::upstream::deleg::DELEG_TYPE);
    ex.records.retain(|r| !(r.name == n("enc.example.") && r.record_type() == deleg));
    let name = b"\x02ns\x05deleg\x07example\x00";
    let mut rdata = vec![0, 3, 0, name.len() as u8];
    rdata.extend_from_slice(name);
    rdata.extend_from_slice(&[0xff, 0x00, 0, 4, 3, b'd', b'o', b't']);
    ex.records.push(raw(&n("enc.example."), 3600, deleg, rdata));
    ex.records.push(a("ns.deleg.example.", SHARED));
    let (r, net) = z.sign().resolver(&deleg_config(true));
    block_on(r.resolve(&n("www.enc.example."), RecordType::A)).unwrap();
    // From the cache: the cut's NS RRset is ns.shared.example.; DELEG names ns.deleg.example.
    assert_eq!(block_on(r.resolve(&n("nx.enc.example."), RecordType::A)).unwrap().rcode, crate::wire::rcode::NXDOMAIN);
    let (dot, do53) = seen(&net, SHARED);
    assert!(dot.iter().any(|q| q.contains("nx.enc.example")), "DoT to the DELEG server: {dot:?}");
    assert!(!do53.iter().any(|q| q.contains("enc.example")), "cleartext for the DoT zone: {do53:?}");
    // A server of the zone that the secure rule does not speak for gets nothing.
    let plan = r.plan(&n("enc.example."), &n("ns.shared.example."), ip("10.0.9.9"));
    assert_eq!((plan.mode, plan.transports.len()), (Mode::Strict, 0));
}
