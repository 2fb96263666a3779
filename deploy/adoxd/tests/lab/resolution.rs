//! Iterative resolution over the lab: each scenario of the lab, named after what it proves.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::{Adoxd, Ask};

#[test]
fn a_aaaa_mx_txt_from_a_signed_zone() {
    let d = Adoxd::lab(&[]);
    assert_eq!(d.query("www.alpha.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.10"]);
    assert_eq!(d.query("www.alpha.lab.", RecordType::AAAA).rdata(RecordType::AAAA), ["2001:db8::10"]);
    assert_eq!(d.query("alpha.lab.", RecordType::MX).rdata(RecordType::MX), ["10 mail.alpha.lab."]);
    assert_eq!(d.query("txt.alpha.lab.", RecordType::TXT).rdata(RecordType::TXT), ["hello adox"]);
}

#[test]
fn ns_soa_ds_dnskey_come_from_the_right_side_of_the_cut() {
    let d = Adoxd::lab(&[]);
    // NS from the child (authoritative), DS from the parent.
    assert_eq!(d.query("alpha.lab.", RecordType::NS).rdata(RecordType::NS), ["ns1.alpha.lab.", "ns2.alpha.lab."]);
    assert_eq!(d.query("alpha.lab.", RecordType::DS).rdata(RecordType::DS).len(), 1);
    assert_eq!(d.query("alpha.lab.", RecordType::DNSKEY).rdata(RecordType::DNSKEY).len(), 2);
    let soa = d.query("beta.lab.", RecordType::SOA);
    assert_eq!(soa.rcode(), ResponseCode::NoError);
    assert_eq!(soa.rdata(RecordType::SOA).len(), 1);
    // An unsigned child: the parent proves there is no DS (NODATA), it is not a referral.
    let ds = d.query("deep.lab.", RecordType::DS);
    assert_eq!(ds.rcode(), ResponseCode::NoError);
    assert!(ds.msg.answers.is_empty());
}

#[test]
fn rfc2308_nxdomain_and_nodata_carry_the_soa() {
    let d = Adoxd::lab(&[]);
    let nx = d.query("nonexistent.alpha.lab.", RecordType::A);
    assert_eq!(nx.rcode(), ResponseCode::NXDomain);
    assert!(nx.msg.answers.is_empty());
    assert_eq!(nx.msg.authorities[0].record_type(), RecordType::SOA);
    // The SOA's TTL is the negative TTL: min(SOA TTL, MINIMUM) = 300 at most.
    assert!(nx.msg.authorities[0].ttl <= 300, "{}", nx.msg.authorities[0].ttl);
    let nd = d.query("nodata.alpha.lab.", RecordType::AAAA);
    assert_eq!(nd.rcode(), ResponseCode::NoError);
    assert!(nd.msg.answers.is_empty());
    assert_eq!(nd.msg.authorities[0].record_type(), RecordType::SOA);
    // Cached: the same answers again, now from cache.
    assert_eq!(d.query("nonexistent.alpha.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    assert_eq!(d.query("nonexistent.alpha.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
}

#[test]
fn rfc8020_nothing_exists_below_an_nxdomain() {
    let d = Adoxd::lab(&[]);
    assert_eq!(d.query("nonexistent.beta.lab.", RecordType::A).rcode(), ResponseCode::NXDomain);
    assert_eq!(d.query("deeper.nonexistent.beta.lab.", RecordType::TXT).rcode(), ResponseCode::NXDomain);
}

#[test]
fn wildcard_expansion_and_empty_non_terminal() {
    let d = Adoxd::lab(&[]);
    assert_eq!(d.query("foo.wild.alpha.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.99"]);
    assert_eq!(d.query("deeper.sub.wild.alpha.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.99"]);
    assert_eq!(d.query("wild.alpha.lab.", RecordType::TXT).rdata(RecordType::TXT), ["wildcard parent"]);
    // ent.alpha.lab exists (it has a child) but holds no data: NODATA, not NXDOMAIN.
    let ent = d.query("ent.alpha.lab.", RecordType::A);
    assert_eq!(ent.rcode(), ResponseCode::NoError);
    assert!(ent.msg.answers.is_empty());
    assert_eq!(d.query("x.ent.alpha.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.50"]);
}

#[test]
fn cname_chain_across_three_zones() {
    let d = Adoxd::lab(&[]);
    let r = d.query("start.alpha.lab.", RecordType::A);
    assert_eq!(
        r.answer_set(),
        [
            "end.c.b.a.deep.lab. a 192.0.2.30",
            "mid.beta.lab. cname end.c.b.a.deep.lab.",
            "start.alpha.lab. cname mid.beta.lab.",
        ]
    );
    // Asking for the CNAME itself does not follow it.
    assert_eq!(d.query("start.alpha.lab.", RecordType::CNAME).answer_set(), ["start.alpha.lab. cname mid.beta.lab."]);
}

#[test]
fn rfc6672_dname_across_zones() {
    let d = Adoxd::lab(&[]);
    for dnssec_ok in [false, true] {
        // The second round has another packet-cache key (DO), so it is answered from the
        // record cache: the DNAME is applied again there and must still be in the answer.
        let mut ask = Ask::new("www.legacy.alpha.lab.", RecordType::A);
        ask.dnssec_ok = dnssec_ok;
        let r = d.ask(&ask);
        assert_eq!(
            r.answer_set(),
            [
                "legacy.alpha.lab. dname beta.lab.",
                "www.beta.lab. a 192.0.2.20",
                "www.legacy.alpha.lab. cname www.beta.lab.",
            ],
            "dnssec_ok={dnssec_ok}"
        );
    }
    let nx = d.query("nonexistent.legacy.alpha.lab.", RecordType::A);
    assert_eq!(nx.rcode(), ResponseCode::NXDomain, "the DNAME target does not exist");
    assert_eq!(nx.msg.answers.len(), 2, "DNAME and synthesized CNAME precede the NXDOMAIN");
}

#[test]
fn deep_delegation_chain() {
    let d = Adoxd::lab(&[]);
    assert_eq!(d.query("www.c.b.a.deep.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.31"]);
    assert_eq!(d.query("c.b.a.deep.lab.", RecordType::NS).msg.answers.len(), 1);
}

#[test]
fn nameserver_without_glue_is_resolved_first() {
    let d = Adoxd::lab(&[]);
    assert_eq!(d.query("www.noglue.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.40"]);
}

#[test]
fn zone_with_an_unreachable_nameserver_still_resolves() {
    let d = Adoxd::lab(&[]);
    for i in 0..10 {
        // Distinct names so that each one needs the zone's servers again.
        let r = d.query(&format!("n{i}.dead.lab."), RecordType::A);
        assert_eq!(r.rcode(), ResponseCode::NXDomain, "query {i}");
    }
    assert_eq!(d.query("www.dead.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.50"]);
}

#[test]
fn rfc7766_truncated_upstream_answer_is_fetched_over_tcp() {
    let d = Adoxd::lab(&[]);
    // Over TCP the client gets all 12 records (about 2.7 kB): adox must have used TCP
    // upstream, since the lab truncates this answer at 1232 bytes over UDP.
    let full = d.ask_tcp(&Ask::new("big.alpha.lab.", RecordType::TXT));
    assert_eq!(full.rdata(RecordType::TXT).len(), 12);
    // Over UDP with a 1232-byte buffer the client gets TC (from cache now) ...
    let udp = d.ask(&Ask::new("big.alpha.lab.", RecordType::TXT));
    assert!(udp.tc());
    assert!(udp.msg.answers.is_empty());
    // ... and without EDNS too (512 bytes).
    assert!(d.ask(&Ask::new("big.alpha.lab.", RecordType::TXT).no_edns()).tc());
    // A client with a large buffer gets it all over UDP? No: adox caps at its own 1232.
    let mut big = Ask::new("big.alpha.lab.", RecordType::TXT);
    big.edns = Some(4096);
    assert!(d.ask(&big).tc());
}

#[test]
fn ttls_count_down_in_cached_answers() {
    let d = Adoxd::lab(&[]);
    let first = d.query("mail.alpha.lab.", RecordType::A).msg.answers[0].ttl;
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let later = d.query("mail.alpha.lab.", RecordType::A).msg.answers[0].ttl;
    assert!(later <= first - 2 && later + 10 >= first, "first {first}, later {later}");
}

#[test]
fn cached_answer_echoes_the_clients_qname_case_and_id() {
    let d = Adoxd::lab(&[]);
    d.query("www.beta.lab.", RecordType::A);
    let mut ask = Ask::new("WwW.BeTa.LaB.", RecordType::A);
    ask.id = 0x5A5A;
    let r = d.ask(&ask);
    assert_eq!(r.msg.metadata.id, 0x5A5A);
    assert_eq!(r.msg.queries[0].name().to_ascii(), "WwW.BeTa.LaB.");
    assert!(r.msg.metadata.recursion_available);
    assert_eq!(r.rdata(RecordType::A), ["192.0.2.20"]);
}

#[test]
fn dnssec_ok_clients_get_rrsigs_and_others_do_not() {
    let d = Adoxd::lab(&[]);
    let mut ask = Ask::new("www.alpha.lab.", RecordType::A);
    ask.dnssec_ok = true;
    let with = d.ask(&ask);
    assert!(with.msg.answers.iter().any(|r| r.record_type() == RecordType::RRSIG));
    let without = d.query("www.alpha.lab.", RecordType::A);
    assert!(without.msg.answers.iter().all(|r| r.record_type() != RecordType::RRSIG));
}

#[test]
fn upstream_acl_blocks_loopback_unless_opened() {
    // Without --allow-upstream the lab's 127.53/16 servers may not be queried.
    let hints = crate::support::lab_dir().join("root.hints");
    let d = Adoxd::start(&["--root-hints", hints.to_str().unwrap(), "--workers", "1"]);
    let r = d.query("www.alpha.lab.", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::ServFail);
    let (code, text) = r.ede().expect("EDE");
    assert_eq!(code, 22);
    assert!(text.contains("no allowed nameserver address"), "{text}");
}

#[test]
fn an_rrsig_query_does_not_hide_the_rrset_it_covers() {
    let d = Adoxd::lab(&[]);
    assert_eq!(d.query("www.alpha.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.10"]);
    let sigs = d.query("www.alpha.lab.", RecordType::RRSIG);
    assert!(!sigs.msg.answers.is_empty());
    // DO makes another packet-cache key: this answer comes from the record cache.
    let mut ask = Ask::new("www.alpha.lab.", RecordType::A);
    ask.dnssec_ok = true;
    assert_eq!(d.ask(&ask).rdata(RecordType::A), ["192.0.2.10"]);
}

/// RFC 1034 section 4.3.1: a query with RD clear gets what the cache holds, and nothing
/// is fetched for it (a non-recursive query must not make the resolver go out, nor let a
/// client probe what others asked by making it fetch names).
#[test]
fn a_non_recursive_query_is_answered_from_the_cache_only() {
    let d = Adoxd::lab(&[]);
    let mut cold = Ask::new("www.beta.lab.", RecordType::A);
    cold.rd = false;
    let r = d.ask(&cold);
    assert_eq!(r.rcode(), ResponseCode::Refused, "not cached: refused");
    assert_eq!(r.ede().map(|e| e.0), Some(20));
    // Once a recursive query brought it in, the non-recursive one is answered from cache.
    assert_eq!(d.query("www.beta.lab.", RecordType::A).rcode(), ResponseCode::NoError);
    let r = d.ask(&cold);
    assert_eq!(r.rcode(), ResponseCode::NoError);
    assert!(!r.rdata(RecordType::A).is_empty());
    // Another uncached name is still refused, not resolved (it would be NXDOMAIN).
    let mut other = Ask::new("nothing-here.beta.lab.", RecordType::A);
    other.rd = false;
    assert_eq!(d.ask(&other).rcode(), ResponseCode::Refused);
}

/// Prefetch: an answer asked for in the last tenth of its TTL (TTLs capped at 20 s here)
/// is refreshed in the background, so the next client after its original expiry still
/// gets a cache hit; one resolution and one prefetch for three queries.
#[test]
fn prefetch_refreshes_a_popular_answer_before_it_expires() {
    let (_dir, cfg) = crate::support::temp_config("[cache]\nmax_ttl_s = 20\n");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    let ask = || assert_eq!(d.query("www.alpha.lab.", RecordType::A).rcode(), ResponseCode::NoError);
    ask();
    std::thread::sleep(std::time::Duration::from_millis(18_400));
    ask(); // 18 s old: in the last tenth, a hit that starts the refresh
    std::thread::sleep(std::time::Duration::from_millis(3_000));
    ask(); // past the first answer's 20 s: served from the refreshed entry
    let log = d.terminate();
    assert_eq!(Adoxd::stat(&log, "prefetches"), 1);
    assert_eq!((Adoxd::stat(&log, "cache_hits"), Adoxd::stat(&log, "cache_misses")), (2, 1));
}
