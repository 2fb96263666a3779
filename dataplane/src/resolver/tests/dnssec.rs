//! DNSSEC validation against signed fake zones (`signed.rs`): root `.` and `example.`
//! signed with algorithm 13, `sub.example.` an unsigned delegation, the resolver anchored
//! at the fake root's DS. Signature windows run on the fake clock.

use hickory_proto::rr::rdata::A;

use super::signed::{SignedZones, ZoneKey, covered, raw, window};
use super::*;
use crate::dnssec::Security;
use crate::resolver::trace::TraceStep;

/// The base zones, `.` and `example.` to be signed.
fn zones() -> SignedZones {
    SignedZones::new(base_zones(), &[".", "example."])
}

fn resolve(r: &Resolver<Fake>, name: &str, rtype: RecordType) -> Answer {
    block_on(r.resolve(&n(name), rtype)).unwrap()
}

/// The EDE code and text of a bogus status.
fn bogus(s: &Security) -> (u16, String) {
    match s {
        Security::Bogus(b) => (b.ede.code(), b.text.clone()),
        other => panic!("not bogus: {other:?}"),
    }
}

fn of_type(ans: &Answer, rtype: RecordType) -> Vec<&Record> {
    ans.answers.iter().filter(|r| r.record_type() == rtype).collect()
}

/// The status the record cache holds for `name`/`rtype`.
fn cached(r: &Resolver<Fake>, name: &str, rtype: RecordType) -> Option<(Security, u32)> {
    let hit = r.shared().records.get(&n(name), u16::from(rtype), r.upstream().now())?;
    Some((hit.security, hit.ttl_left))
}

/// RFC 4035 section 5: the answer's RRset verifies with the zone's DNSKEY, that key
/// matches the DS the root signed, and the root's key matches the trust anchor: secure.
#[test]
fn rfc4035_5_a_signed_answer_is_secure_through_the_chain_of_trust() {
    let (r, net) = zones().sign().resolver(&Config::default());
    let ans = resolve(&r, "www.example.", RecordType::A);
    assert_eq!(ans.security, Security::Secure);
    assert_eq!(of_type(&ans, RecordType::A).len(), 1);
    assert_eq!(of_type(&ans, RecordType::RRSIG).len(), 1, "the RRSIG goes along for DO clients");
    // Each link was fetched from the right zone and cached as secure.
    assert!(asked(&net, "10.0.0.1").iter().any(|q| q == ". DNSKEY"));
    // The root's referral carried the signed DS (RFC 4035 section 3.1.4): no DS query.
    assert!(!asked(&net, "10.0.0.1").iter().any(|q| q == "example. DS"), "the referral's DS was used");
    assert!(asked(&net, "10.0.1.1").iter().any(|q| q == "example. DNSKEY"));
    for (name, rtype) in [(".", RecordType::DNSKEY), ("example.", RecordType::DS), ("example.", RecordType::DNSKEY)] {
        assert_eq!(cached(&r, name, rtype).map(|c| c.0), Some(Security::Secure), "{name} {rtype}");
    }
    // Again: from the cache, still secure, no query and no signature check.
    let before = net.log.borrow().len();
    assert_eq!(resolve(&r, "www.example.", RecordType::A).security, Security::Secure);
    assert_eq!(net.log.borrow().len(), before);
}

/// RFC 4035 section 5.4 with NSEC (section 3.1.3): a name covered by an NSEC span (and
/// its wildcard too) is a secure NXDOMAIN; an NSEC at the name without the type, or one
/// whose next name lies below an empty non-terminal, is a secure NODATA.
#[test]
fn rfc4035_5_4_nsec_proves_nxdomain_and_nodata_securely() {
    let (r, _net) = zones().sign().resolver(&Config::default());
    let nx = resolve(&r, "nothing.example.", RecordType::A);
    assert_eq!((nx.rcode, nx.security.clone()), (crate::wire::rcode::NXDOMAIN, Security::Secure));
    assert_eq!(nx.authority.iter().filter(|r| r.record_type() == RecordType::NSEC).count(), 2, "name and wildcard");
    for (name, rtype) in [("www.example.", RecordType::TXT), ("ent.example.", RecordType::A)] {
        let nodata = resolve(&r, name, rtype);
        assert_eq!((nodata.rcode, nodata.answers.len()), (crate::wire::rcode::NOERROR, 0), "{name}");
        assert_eq!(nodata.security, Security::Secure, "{name} {rtype}");
    }
}

/// RFC 8198 aggressive use of validated NSEC: after one secure NXDOMAIN, another name in
/// the same span (whose wildcard the cached spans deny too) is a secure NXDOMAIN from the
/// cache, with the SOA and both NSECs as proof; after one secure NODATA, another type
/// missing from the same NSEC bitmap is a NODATA from the cache. Nothing is asked. A name
/// outside the cached spans, a type the bitmap lists, a name below a delegation and the
/// switch turned off all go upstream.
#[test]
fn rfc8198_names_in_a_validated_nsec_span_are_denied_from_the_cache() {
    let (r, net) = zones().sign().resolver(&Config::default());
    let example = |net: &Fake| asked(net, "10.0.1.1").len();
    assert_eq!(resolve(&r, "nothing.example.", RecordType::A).rcode, crate::wire::rcode::NXDOMAIN);
    let before = example(&net);
    let nx = resolve(&r, "nosuch.example.", RecordType::AAAA);
    assert_eq!((nx.rcode, nx.security.clone()), (crate::wire::rcode::NXDOMAIN, Security::Secure));
    assert_eq!(example(&net), before, "denied from the cached spans");
    assert_eq!(r.stats.aggressive_nsec.get(), 1);
    let types: Vec<RecordType> = nx.authority.iter().map(Record::record_type).collect();
    assert_eq!(types.iter().filter(|t| **t == RecordType::NSEC).count(), 2, "{types:?}");
    assert!(types.contains(&RecordType::SOA) && types.contains(&RecordType::RRSIG), "{types:?}");
    assert!(nx.cache_ttl > 0);
    // NODATA from the NSEC at www.example.
    assert_eq!(resolve(&r, "www.example.", RecordType::TXT).answers.len(), 0);
    let before = example(&net);
    let nodata = resolve(&r, "www.example.", RecordType::MX);
    assert_eq!(
        (nodata.rcode, nodata.answers.len(), nodata.security),
        (crate::wire::rcode::NOERROR, 0, Security::Secure)
    );
    assert_eq!(example(&net), before);
    assert_eq!(r.stats.aggressive_nsec.get(), 2);
    // ANY: no bitmap lists it, so the NSEC at the name proves nothing about it.
    let before = example(&net);
    let _ = block_on(r.resolve(&n("www.example."), RecordType::ANY));
    assert!(example(&net) > before, "ANY is asked, never denied from a span");
    assert_eq!(r.stats.aggressive_nsec.get(), 2);
    // The type the bitmap lists, and a name the cached spans do not cover (between ns.
    // and sub.; zzz. would be: the last NSEC, www. to the apex, is cached): asked.
    assert_eq!(of_type(&resolve(&r, "www.example.", RecordType::A), RecordType::A).len(), 1);
    assert!(example(&net) > before);
    let before = example(&net);
    assert_eq!(resolve(&r, "rrr.example.", RecordType::A).rcode, crate::wire::rcode::NXDOMAIN);
    assert!(example(&net) > before, "no cached span covers it");
    assert_eq!(r.stats.aggressive_nsec.get(), 2);
    // Off: asked again.
    let mut cfg = Config::default();
    cfg.dnssec.aggressive_nsec = false;
    let (r, net) = zones().sign().resolver(&cfg);
    resolve(&r, "nothing.example.", RecordType::A);
    let before = example(&net);
    assert_eq!(resolve(&r, "nosuch.example.", RecordType::A).rcode, crate::wire::rcode::NXDOMAIN);
    assert!(example(&net) > before);
    assert_eq!(r.stats.aggressive_nsec.get(), 0);
}

/// A cached proof in its last tenth is verified afresh and kept for its full TTL again, so
/// the denial that brings it teaches the spans: in the last second of a span (its TTL left
/// rounds to 0) one name goes upstream and the next is denied from the cache again, with a
/// full TTL. Reusing the old copy to its end gave that denial a TTL of about 1 s, nothing
/// lasting was learnt, and every name of the span went upstream until the copy was gone.
/// (Whichever of the zone's NSEC and SOA copies is nearer its end is verified again.)
#[test]
fn rfc8198_a_proof_near_its_end_is_verified_again_and_the_span_learnt_afresh() {
    let (r, net) = zones().sign().resolver(&Config::default());
    let example = |net: &Fake| asked(net, "10.0.1.1").len();
    let first = resolve(&r, "nothing.example.", RecordType::A);
    let nsec_ttl = first.authority.iter().filter(|r| r.record_type() == RecordType::NSEC).map(|r| r.ttl).min();
    let span_ttl = nsec_ttl.unwrap().min(first.cache_ttl);
    assert!(span_ttl > 10, "{span_ttl}");
    // Half a second before the span and its proofs run out.
    net.now.set(net.now.get() + Duration::from_millis(u64::from(span_ttl) * 1000 - 500));
    let before = example(&net);
    let again = resolve(&r, "nosuch.example.", RecordType::A);
    assert_eq!((again.rcode, again.security.clone()), (crate::wire::rcode::NXDOMAIN, Security::Secure));
    assert_eq!(example(&net), before + 1, "the span's last second: asked once");
    assert!(again.cache_ttl + 1 >= span_ttl, "a full TTL, not the old copy's last second: {}", again.cache_ttl);
    let before = example(&net);
    let next = resolve(&r, "nope.example.", RecordType::A);
    assert_eq!((next.rcode, next.security), (crate::wire::rcode::NXDOMAIN, Security::Secure));
    assert_eq!(example(&net), before, "denied from the span learnt afresh");
    // Past the old copies' end: the span still denies, for the rest of its new TTL.
    advance(&net, 2);
    let later = resolve(&r, "nor.example.", RecordType::A);
    assert_eq!((later.rcode, later.security), (crate::wire::rcode::NXDOMAIN, Security::Secure));
    assert_eq!(example(&net), before, "the span was learnt for a full TTL");
    assert!(later.cache_ttl + 4 >= span_ttl, "{}", later.cache_ttl);
}

/// A cached proof is judged by the TTL it was stored with, not by the one in the new
/// answer: with `cache.max_ttl_s` below a tenth of the zone's NSEC TTL, a copy with most
/// of its (capped) life left is still used (not verified and stored again), and one in
/// its last tenth is verified and stored afresh.
#[test]
fn a_cached_proof_is_judged_by_the_ttl_it_was_stored_with() {
    let mut cfg = Config::default();
    cfg.cache.max_ttl_s = 20;
    // Every denial from upstream, so that each one checks its proofs.
    cfg.dnssec.aggressive_nsec = false;
    let (r, net) = zones().sign().resolver(&cfg);
    let first = resolve(&r, "nothing.example.", RecordType::A);
    let nsec = first.authority.iter().find(|r| r.record_type() == RecordType::NSEC).unwrap();
    assert!(nsec.ttl > 200, "the zone's NSEC TTL, far above ten times the cap: {}", nsec.ttl);
    let owner = nsec.name.to_ascii();
    // (The fake network's round trips move the clock by milliseconds: a TTL left reads
    // one second short of the whole seconds advanced.)
    let left = |r: &Resolver<Fake>| cached(r, &owner, RecordType::NSEC).map(|(s, ttl)| (s == Security::Secure, ttl));
    assert!(matches!(left(&r), Some((true, 19 | 20))), "stored for the cap: {:?}", left(&r));
    advance(&net, 5);
    assert_eq!(resolve(&r, "nosuch.example.", RecordType::A).rcode, crate::wire::rcode::NXDOMAIN);
    assert!(matches!(left(&r), Some((true, 14 | 15))), "the copy was used: {:?}", left(&r));
    advance(&net, 14);
    assert_eq!(resolve(&r, "nope.example.", RecordType::A).rcode, crate::wire::rcode::NXDOMAIN);
    assert!(matches!(left(&r), Some((true, 19 | 20))), "its last tenth: stored afresh: {:?}", left(&r));
}

/// A delegation's NSEC in the parent says nothing about names below the cut (RFC 6840
/// section 4.1), so the cached spans never deny them; and a flush drops the spans.
#[test]
fn rfc8198_spans_never_deny_below_a_delegation_and_a_flush_drops_them() {
    let (r, net) = zones().sign().resolver(&Config::default());
    // Learn the span at sub.example. (the unsigned delegation) through a NODATA next to it.
    assert_eq!(resolve(&r, "sub.example.", RecordType::DS).answers.len(), 0);
    assert_eq!(resolve(&r, "nothing.example.", RecordType::A).rcode, crate::wire::rcode::NXDOMAIN);
    let sub = |net: &Fake| asked(net, "10.0.2.1").len();
    let before = sub(&net);
    let ans = resolve(&r, "a.b.c.sub.example.", RecordType::A);
    assert_eq!(of_type(&ans, RecordType::A).len(), 1, "the child's data, not a synthesized denial");
    assert!(sub(&net) > before);
    // A flush of a name in the zone drops its spans: the next denial is asked for.
    r.shared().records.flush(Some(&n("nosuch.example.")), false);
    let before = asked(&net, "10.0.1.1").len();
    resolve(&r, "nosuch.example.", RecordType::A);
    assert!(asked(&net, "10.0.1.1").len() > before);
}

/// RFC 4035 section 5.3.1 and RFC 8914 EDE 6 (DNSSEC Bogus): a record changed after
/// signing, or a signature altered, does not verify. The data is bogus, cached as bogus
/// for `bogus_ttl` only, and never served as secure.
#[test]
fn rfc4035_5_3_tampered_data_or_signature_is_bogus_with_ede_6_and_never_cached_secure() {
    let mut s = zones().sign();
    let example = s.zone("example.");
    for rec in example.records.iter_mut() {
        if rec.name == n("www.example.") && rec.record_type() == RecordType::A {
            rec.data = RData::A(A::new(192, 0, 2, 66));
        }
        if rec.name == n("x.ent.example.")
            && covered(rec) == Some(RecordType::A)
            && let RData::Unknown { rdata, .. } = &mut rec.data
        {
            *rdata.anything.last_mut().unwrap() ^= 1;
        }
    }
    let (r, _net) = s.resolver(&Config::default());
    let bogus_ttl = r.shared().validator.bogus_ttl;
    for name in ["www.example.", "x.ent.example."] {
        let ans = resolve(&r, name, RecordType::A);
        let (ede, text) = bogus(&ans.security);
        assert_eq!(ede, 6, "{name}: {text}");
        assert!(text.contains("signature does not verify"), "{text}");
        assert!(ans.cache_ttl <= bogus_ttl);
        let (status, ttl_left) = cached(&r, name, RecordType::A).unwrap();
        assert_eq!(bogus(&status).0, 6);
        assert!(ttl_left <= bogus_ttl, "{ttl_left}");
        // Asked again (from the cache): still bogus.
        assert_eq!(bogus(&resolve(&r, name, RecordType::A).security).0, 6);
    }
    // The chain above is intact: the zone's other data is secure.
    assert_eq!(resolve(&r, "ns.example.", RecordType::A).security, Security::Secure);
}

/// RFC 4034 section 3.1.5 and RFC 8914 EDE 7 (Signature Expired), on the fake clock: a
/// signature is accepted until its expiration plus the skew allowance (a tenth of its
/// window, at least an hour), and a fresh lookup after that is bogus.
#[test]
fn rfc4034_3_1_5_an_expired_signature_is_bogus_with_ede_7_past_the_skew() {
    let mut s = zones().sign();
    // Valid from an hour ago to two hours ahead: a three-hour window, an hour of skew.
    s.resign("www.example.", RecordType::A, window(-3600, 7200));
    let (r, net) = s.resolver(&Config::default());
    assert_eq!(resolve(&r, "www.example.", RecordType::A).security, Security::Secure);
    // Expired 50 minutes ago (every cached record expired too: a fresh lookup), within
    // the skew: still secure.
    advance(&net, 7200 + 3000);
    assert_eq!(resolve(&r, "www.example.", RecordType::A).security, Security::Secure);
    // Expired an hour and a bit ago: bogus, signature expired.
    advance(&net, 700);
    let before = asked(&net, "10.0.1.1").len();
    let ans = resolve(&r, "www.example.", RecordType::A);
    assert!(asked(&net, "10.0.1.1")[before..].iter().any(|q| q == "www.example. A"), "a fresh lookup");
    let (ede, text) = bogus(&ans.security);
    assert_eq!(ede, 7, "{text}");
    assert!(text.contains("www.example. A: signature expired"), "{text}");
    assert_ne!(cached(&r, "www.example.", RecordType::A).map(|c| c.0), Some(Security::Secure));
}

/// RFC 4034 section 3.1.5 and RFC 8914 EDE 8 (Signature Not Yet Valid), on the fake
/// clock: a signature whose inception is in the future (beyond the skew) is bogus, and
/// the same data validates once the clock reaches the skew before its inception.
#[test]
fn rfc4034_3_1_5_a_signature_not_yet_valid_is_bogus_with_ede_8_until_its_inception() {
    let mut s = zones();
    s.zone("example.").records.push(a("soon.example.", "192.0.2.7"));
    let mut s = s.sign();
    // Valid from two days ahead for 28 days: the skew is a day.
    s.resign("soon.example.", RecordType::A, window(2 * 86_400, 30 * 86_400));
    let (r, net) = s.resolver(&Config::default());
    let (ede, text) = bogus(&resolve(&r, "soon.example.", RecordType::A).security);
    assert_eq!(ede, 8, "{text}");
    assert!(text.contains("signature not yet valid"), "{text}");
    // A day and a minute later (the bogus entry has expired): within the skew, secure.
    advance(&net, 86_400 + 60);
    assert_eq!(resolve(&r, "soon.example.", RecordType::A).security, Security::Secure);
}

/// RFC 4035 section 5.3.3: a validated RRset is kept no longer than its signature is
/// valid, whatever its TTL.
#[test]
fn rfc4035_5_3_3_validated_ttl_is_capped_by_the_signature_expiration() {
    let mut s = zones().sign();
    s.resign("www.example.", RecordType::A, window(-3600, 600));
    let (r, net) = s.resolver(&Config::default());
    let ans = resolve(&r, "www.example.", RecordType::A);
    assert_eq!(ans.security, Security::Secure);
    let a_ttl = of_type(&ans, RecordType::A)[0].ttl;
    assert_eq!(a_ttl, 600, "the record's TTL is 3600, its signature expires in 600 s");
    assert!(ans.cache_ttl <= 600);
    assert!(cached(&r, "www.example.", RecordType::A).unwrap().1 <= 600);
    // After 601 s it is fetched again: the 3600 s TTL would have kept it.
    advance(&net, 601);
    let before = asked(&net, "10.0.1.1").len();
    resolve(&r, "www.example.", RecordType::A);
    assert_eq!(asked(&net, "10.0.1.1")[before..], ["www.example. A"]);
}

/// RFC 4035 section 5.2: a delegation the parent proves unsigned (its NSEC at the cut
/// lists NS and no DS) leads to an insecure child: its unsigned answers are insecure, not
/// bogus.
#[test]
fn rfc4035_5_2_an_unsigned_delegation_proven_by_nsec_is_insecure() {
    let (r, net) = zones().sign().resolver(&Config::default());
    let ans = resolve(&r, "a.b.c.sub.example.", RecordType::A);
    assert_eq!(ans.answers.len(), 1);
    assert_eq!(ans.security, Security::insecure());
    // RFC 4035 section 3.1.4: the referral carried the NSEC proof; no DS query needed.
    assert!(!asked(&net, "10.0.1.1").iter().any(|q| q == "sub.example. DS"), "the referral's proof was used");
    assert_eq!(cached(&r, "sub.example.", RecordType::DS).map(|c| c.0), Some(Security::Secure), "no DS, securely");
}

/// An unsigned delegation is decided once, and the decision kept on its cached DS denial
/// for as long as that lives: the next miss below it reads neither the parent's keys nor
/// the denial again (no DS lookup in its path), and once the denial has expired the next
/// miss decides afresh.
#[test]
fn an_unsigned_delegation_is_decided_once_for_as_long_as_its_denial_lives() {
    let (r, net) = zones().sign().resolver(&Config::default());
    let records = &r.shared().records;
    let sub = n("sub.example.");
    assert!(!records.insecure_cut(&sub, net.now.get()));
    assert_eq!(resolve(&r, "a.b.c.sub.example.", RecordType::A).security, Security::insecure());
    assert!(records.insecure_cut(&sub, net.now.get()), "decided");
    let ds_lookups = |name: &str| {
        let (ans, path) = block_on(r.explain(&n(name), RecordType::A));
        assert_eq!(ans.unwrap().security, Security::insecure());
        path.iter()
            .filter(|s| matches!(s, TraceStep::Lookup { name, qtype: RecordType::DS, .. } if *name == sub))
            .count()
    };
    assert_eq!(ds_lookups("nothing.sub.example."), 0, "the decision stands in for the denial");
    // Past the denial's TTL the mark is gone with it, and the next miss decides again.
    let (_, denial_ttl) = cached(&r, "sub.example.", RecordType::DS).unwrap();
    advance(&net, u64::from(denial_ttl) + 1);
    assert!(!records.insecure_cut(&sub, net.now.get()));
    assert_eq!(ds_lookups("nothing2.sub.example."), 1, "decided afresh");
    assert!(records.insecure_cut(&sub, net.now.get()), "and kept again");
    // A flush of the zone drops the denial and the mark with it.
    records.flush(Some(&sub), false);
    assert!(!records.insecure_cut(&sub, net.now.get()));
}

/// RFC 4035 section 5.2, the other way round: a DS in the parent says the child is signed;
/// a child serving unsigned data (no DNSKEY at all) is bogus (EDE 9: DNSKEY missing).
#[test]
fn rfc4035_5_2_a_ds_for_a_child_without_keys_makes_its_answers_bogus() {
    let mut s = zones();
    let stray = ZoneKey::new(n("sub.example."));
    s.zone("example.").records.push(raw(&n("sub.example."), 3600, RecordType::DS, stray.ds_rdata()));
    let (r, _net) = s.sign().resolver(&Config::default());
    let (ede, text) = bogus(&resolve(&r, "a.b.c.sub.example.", RecordType::A).security);
    assert_eq!(ede, 9, "{text}");
}

/// RFC 4035 section 5 (and RFC 8914 EDE 9, DNSKEY Missing): a root key that matches no
/// configured trust anchor anchors nothing: answers are bogus, not secure and not insecure.
#[test]
fn rfc4035_5_a_root_key_that_matches_no_trust_anchor_is_bogus() {
    let other = ZoneKey::new(Name::root());
    let (r, _net) = zones().sign().resolver_anchored(&Config::default(), &other.ds_text());
    let (ede, text) = bogus(&resolve(&r, "www.example.", RecordType::A).security);
    assert_eq!(ede, 9, "{text}");
    assert!(text.contains("no DNSKEY matches"), "{text}");
}

/// RFC 4035 section 5.3.3 for denials: the NSEC records of a negative answer are
/// validated RRsets too, so the negative answer is kept no longer than their signatures
/// are valid, whatever the SOA's negative TTL (300 s here).
#[test]
fn rfc4035_5_3_3_a_denial_is_kept_no_longer_than_its_nsec_signature() {
    let mut s = zones().sign();
    // The NSEC covering nothing.example. (loop2.example. to ns.example.) expires in 100 s.
    s.resign("loop2.example.", RecordType::NSEC, window(-3600, 100));
    let (r, net) = s.resolver(&Config::default());
    let nx = resolve(&r, "nothing.example.", RecordType::A);
    assert_eq!((nx.rcode, nx.security.clone()), (crate::wire::rcode::NXDOMAIN, Security::Secure));
    assert!(nx.cache_ttl <= 100, "cache_ttl {}", nx.cache_ttl);
    let now = r.upstream().now();
    let entry = r.shared().records.get(&n("nothing.example."), crate::cache::records::NXDOMAIN_KEY, now).unwrap();
    assert!(entry.ttl_left <= 100, "negative entry kept {} s", entry.ttl_left);
    // After 101 s the name is asked again.
    advance(&net, 101);
    let before = asked(&net, "10.0.1.1").len();
    resolve(&r, "nothing.example.", RecordType::A);
    assert!(asked(&net, "10.0.1.1")[before..].iter().any(|q| q == "nothing.example. A"));
}

/// Issue 12 item 3 (R5, no self-lock): a secure TLSA RRset authenticates its server past
/// its TTL, until its signatures expire and never beyond. A zone served only by its own
/// strict DANE nameserver, idle past the TLSA's TTL with no session to resume, can only
/// refresh that TLSA over a handshake that needs it (the entry once lasted TTL + 120 s).
#[test]
fn a_secure_tlsa_set_authenticates_until_its_signatures_expire_not_its_ttl() {
    let mut s = zones();
    let ns = n("ns.example.");
    let mut svcb = 1u16.to_be_bytes().to_vec();
    svcb.extend_from_slice(b"\x02ns\x07example\x00\x00\x01\x00\x04\x03dot");
    s.zone("example.").records.push(raw(&n("_dns.ns.example."), 60, RecordType::SVCB, svcb));
    let mut tlsa = vec![3, 1, 1];
    tlsa.extend_from_slice(&[0xAB; 32]);
    s.zone("example.").records.push(raw(&n("_853._tcp.ns.example."), 60, RecordType::TLSA, tlsa));
    let mut s = s.sign();
    s.resign("_853._tcp.ns.example.", RecordType::TLSA, window(-3600, 7200));
    // An on-path attacker adds RRSIGs expiring in 10 s beside the genuine ones: the RRsets
    // still validate (the genuine signatures verify), and the forgeries must not shorten
    // anything (they once did: the earliest expiry present was taken).
    let forged: Vec<Record> = s
        .zone("example.")
        .records
        .iter()
        .filter(|r| matches!(covered(r), Some(RecordType::TLSA | RecordType::SVCB)))
        .map(|r| {
            let mut f = r.clone();
            if let RData::Unknown { rdata, .. } = &mut f.data {
                rdata.anything[8..12].copy_from_slice(&window(-3600, 10).1.to_be_bytes());
            }
            f
        })
        .collect();
    assert_eq!(forged.len(), 2);
    s.zone("example.").records.extend(forged);
    let (r, net) = s.resolver(&Config::default());
    block_on(r.learn_signal(&ns));
    let signal = r.shared().signals.get(&ns, net.unix_now());
    assert!(
        matches!(&signal, Some(crate::upstream::signal::Signal::Known { secure: true, dane, .. }) if dane.len() == 1),
        "{signal:?}"
    );
    let key = crate::upstream::dane::TlsaTable::key("tcp", "ns.example.");
    let t0 = net.unix_now();
    let table = &r.shared().tlsa;
    assert!(table.get(&key, t0 + 61).is_some(), "past its TTL");
    assert!(table.get(&key, t0 + 60 + 121).is_some(), "past its TTL and the old grace");
    assert!(table.get(&key, t0 + 7199).is_some(), "until its signatures expire");
    assert!(table.get(&key, t0 + 7200).is_none(), "never past them");
    // The strict state rests on the same signatures (the SVCB's last 30 days).
    match r.shared().signals.last(&ns) {
        Some(crate::upstream::signal::Signal::Known { strict_until, .. }) => assert_eq!(strict_until, t0 + 7200),
        other => panic!("{other:?}"),
    }
}

/// `signal_wait = "signed"` waits for nameservers that may lie in a signed zone: under a
/// signed zone while nothing says otherwise, and not below a delegation proven unsigned
/// (`sub.example.`), nor where validation does not reach.
#[test]
fn signal_wait_signed_waits_only_where_a_signal_could_be_secure() {
    let (r, _net) = zones().sign().resolver(&Config::default());
    assert!(r.maybe_signed(&n("ns.example.")), "nothing cached yet: the anchored root is signed");
    resolve(&r, "www.example.", RecordType::A);
    assert!(r.maybe_signed(&n("ns.example.")), "example. has a secure DS");
    resolve(&r, "a.b.c.sub.example.", RecordType::A);
    assert!(!r.maybe_signed(&n("ns.sub.example.")), "sub.example. is proven unsigned");
    assert!(!r.maybe_signed(&n("deeper.ns.sub.example.")));
    assert!(r.maybe_signed(&n("ns.other.example.")), "beside it, still under signed example.");
    let (off, _) = resolver(base_zones(), &Config::default());
    assert!(!off.maybe_signed(&n("ns.example.")), "no trust anchor, no secure signal");
}
