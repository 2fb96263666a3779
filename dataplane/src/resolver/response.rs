//! Reading an upstream response: is it an answer (possibly through a CNAME/DNAME chain), a
//! referral, a negative answer, or lame? Only records inside the bailiwick of the zone that
//! was asked are ever taken from it. Pure functions: no I/O, no cache.

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::names::labels;

use crate::names::{is_at_or_below, is_below};

/// RRSIG type code.
const RRSIG: u16 = 46;

/// What a response means for the question we sent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    /// Data for the name (or for the end of a chain that started at it).
    Answer {
        /// CNAME/DNAME records (and synthesized CNAMEs) leading from the asked name.
        chain: Vec<Record>,
        /// The RRset at the end of the chain, with its RRSIGs; empty when the chain leaves
        /// the zone or ends without data.
        data: Vec<Record>,
        /// Where to continue when `data` is empty: the end of the chain.
        next: Option<Name>,
        /// NSEC/NSEC3 records (with RRSIGs) of the authority section inside the zone: the
        /// proof that a wildcard-expanded name does not exist itself.
        proofs: Vec<Record>,
    },
    /// A delegation to a child zone.
    Referral {
        /// The child zone.
        child: Name,
        /// Its NS RRset.
        ns: Vec<Record>,
        /// Addresses for those NS names found in the additional section, inside bailiwick.
        glue: Vec<Record>,
        /// What a signed parent adds (RFC 4035 section 3.1.4): the child's DS RRset with
        /// its RRSIGs, or the NSEC/NSEC3 records (with RRSIGs) proving there is none.
        ds: Vec<Record>,
        /// The child's DELEG records with their RRSIGs (a DE query to a DELEG-aware
        /// parent), at most a few.
        deleg: Vec<Record>,
    },
    /// The name exists, the type does not.
    NoData {
        /// SOA and proofs, with TTLs set to the negative TTL.
        authority: Vec<Record>,
        /// Negative TTL (0 when no SOA came: not cached).
        neg_ttl: u32,
    },
    /// The name does not exist.
    NxDomain {
        /// SOA and proofs, with TTLs set to the negative TTL.
        authority: Vec<Record>,
        /// Negative TTL.
        neg_ttl: u32,
    },
    /// Not authoritative for the zone: try another server.
    Lame,
}

/// NS records taken from one referral (with an address or two each as glue): more than any
/// real delegation has, few enough that a hostile one costs nothing.
const MAX_REFERRAL_NS: usize = 20;

/// The type an RRSIG covers, read from its raw RDATA.
pub(crate) fn rrsig_covers(r: &Record) -> Option<u16> {
    if u16::from(r.record_type()) != RRSIG {
        return None;
    }
    match &r.data {
        RData::Unknown { rdata, .. } => rdata.anything.get(0..2).map(|b| u16::from_be_bytes([b[0], b[1]])),
        _ => None,
    }
}

/// The records of the RRset (`owner`, `rtype`) in `section`, followed by their RRSIGs.
pub(crate) fn rrset_with_sigs(section: &[Record], owner: &Name, rtype: RecordType) -> Vec<Record> {
    let code = u16::from(rtype);
    let mut out: Vec<Record> = section
        .iter()
        .filter(|r| {
            r.dns_class == DNSClass::IN && r.name == *owner && (r.record_type() == rtype || rtype == RecordType::ANY)
        })
        .cloned()
        .collect();
    if out.is_empty() {
        return out;
    }
    out.extend(
        section
            .iter()
            .filter(|r| r.dns_class == DNSClass::IN && r.name == *owner && rrsig_covers(r) == Some(code))
            .cloned(),
    );
    out
}

/// The target of a DNAME record (RFC 6672), whose RDATA hickory keeps raw.
pub(crate) fn dname_target(r: &Record) -> Option<Name> {
    use hickory_proto::serialize::binary::BinDecodable;
    match &r.data {
        RData::Unknown { code: RecordType::DNAME, rdata } => Name::from_bytes(&rdata.anything).ok(),
        _ => None,
    }
}

/// Applies a DNAME: `qname` below `owner` becomes the same prefix below `target`.
pub(crate) fn apply_dname(qname: &Name, owner: &Name, target: &Name) -> Option<Name> {
    let keep = labels(qname).checked_sub(labels(owner))?;
    let prefix = Name::from_labels(qname.iter().take(keep)).ok()?;
    let mut out = prefix.append_name(target).ok()?;
    out.set_fqdn(true);
    Some(out)
}

/// Links followed within one response; a real chain inside one zone is short, and the
/// resolver's `max_chain` bounds the whole resolution anyway.
const MAX_LINKS_PER_RESPONSE: usize = 16;

/// Follows CNAMEs and DNAMEs from `sname` through the answer section, inside `zone` only.
/// Each name is visited once and each DNAME applied once, so a hostile answer section
/// (loops, thousands of CNAMEs at one name) costs at most a few passes over it.
fn follow_chain(answers: &[Record], zone: &Name, sname: &Name, stype: RecordType) -> (Vec<Record>, Name, Vec<Record>) {
    let mut chain = Vec::new();
    let mut cur = sname.clone();
    let mut visited: Vec<Name> = Vec::new();
    let mut dnames_used: Vec<Name> = Vec::new();
    for _ in 0..MAX_LINKS_PER_RESPONSE {
        if !is_at_or_below(&cur, zone) || visited.contains(&cur) {
            break;
        }
        visited.push(cur.clone());
        let data = rrset_with_sigs(answers, &cur, stype);
        if !data.is_empty() {
            return (chain, cur, data);
        }
        // A DNAME above the name wins over the CNAME a server synthesized from it: we apply
        // the DNAME ourselves (RFC 6672 section 3.4) and keep it in the chain.
        let dname = answers.iter().find(|r| {
            r.record_type() == RecordType::DNAME
                && r.dns_class == DNSClass::IN
                && is_below(&cur, &r.name)
                && is_at_or_below(&r.name, zone)
                && !dnames_used.contains(&r.name)
        });
        if let Some(d) = dname
            && let Some(target) = dname_target(d)
            && let Some(new) = apply_dname(&cur, &d.name, &target)
        {
            dnames_used.push(d.name.clone());
            // The DNAME and every RRSIG covering it (a zone rolling keys signs twice).
            chain.extend(rrset_with_sigs(answers, &d.name.clone(), RecordType::DNAME));
            chain.push(Record::from_rdata(cur.clone(), d.ttl, RData::CNAME(CNAME(new.clone()))));
            cur = new;
            continue;
        }
        if stype != RecordType::CNAME {
            // Only one CNAME may exist at a name (RFC 2181 section 10.1): the first is used,
            // with its signatures.
            let cname = rrset_with_sigs(answers, &cur, RecordType::CNAME);
            if let Some((first, target)) = cname.iter().find_map(|r| match &r.data {
                RData::CNAME(CNAME(t)) => Some((r.clone(), t.clone())),
                _ => None,
            }) {
                chain.push(first);
                chain.extend(cname.into_iter().filter(|r| r.record_type() == RecordType::RRSIG));
                cur = target;
                continue;
            }
        }
        break;
    }
    (chain, cur, Vec::new())
}

/// SOA and DNSSEC proof records from the authority section of a negative answer, inside
/// `zone`, with TTLs lowered to the negative TTL (RFC 2308 section 3); and that TTL.
fn negative_authority(msg: &Message, zone: &Name, sname: &Name) -> (Vec<Record>, u32) {
    let soa = msg.authorities.iter().find(|r| {
        r.record_type() == RecordType::SOA && is_at_or_below(&r.name, zone) && is_at_or_below(sname, &r.name)
    });
    let Some(soa) = soa else { return (Vec::new(), 0) };
    let minimum = match &soa.data {
        RData::SOA(s) => s.minimum,
        _ => 0,
    };
    let ttl = soa.ttl.min(minimum);
    let keep = |r: &&Record| {
        let t = u16::from(r.record_type());
        is_at_or_below(&r.name, zone) && (t == 6 || t == 46 || t == 47 || t == 50)
    };
    let out = msg
        .authorities
        .iter()
        .filter(keep)
        .map(|r| {
            let mut r = r.clone();
            r.ttl = r.ttl.min(ttl);
            r
        })
        .collect();
    (out, ttl)
}

/// Classifies a response (already checked to match our question and to carry NOERROR or
/// NXDOMAIN) from a server of `zone` to the question (`sname`, `stype`).
pub(crate) fn classify(msg: &Message, zone: &Name, sname: &Name, stype: RecordType) -> Reply {
    let rcode = msg.metadata.response_code;
    let aa = msg.metadata.authoritative;
    let (chain, cur, data) = follow_chain(&msg.answers, zone, sname, stype);
    let proofs = || {
        msg.authorities
            .iter()
            .filter(|r| {
                let t = u16::from(r.record_type());
                (t == 47 || t == 50 || rrsig_covers(r).is_some_and(|c| c == 47 || c == 50))
                    && is_at_or_below(&r.name, zone)
            })
            .cloned()
            .collect()
    };
    if !data.is_empty() {
        return Reply::Answer { chain, data, next: None, proofs: proofs() };
    }
    if !chain.is_empty() {
        // The chain ends without data here: continue at its end (from the cache or from
        // that name's own servers), which also yields the right negative answer.
        return Reply::Answer { chain, data, next: Some(cur), proofs: proofs() };
    }
    if rcode == ResponseCode::NXDomain {
        let (authority, neg_ttl) = negative_authority(msg, zone, sname);
        if !aa && authority.is_empty() {
            // Not authoritative and no SOA of the zone: not an answer we can trust.
            return Reply::Lame;
        }
        return Reply::NxDomain { authority, neg_ttl };
    }
    // A referral: NS records for a zone strictly below ours, at or above the asked name.
    let child = msg
        .authorities
        .iter()
        .find(|r| r.record_type() == RecordType::NS && is_below(&r.name, zone) && is_at_or_below(sname, &r.name))
        .map(|r| r.name.clone());
    if let Some(child) = child {
        if stype == RecordType::DS && child == *sname {
            // The parent holds the DS; a referral to the child itself means this server
            // does not serve the parent side.
            return Reply::Lame;
        }
        let ns: Vec<Record> = msg
            .authorities
            .iter()
            .filter(|r| r.record_type() == RecordType::NS && r.name == child)
            .take(MAX_REFERRAL_NS)
            .cloned()
            .collect();
        let targets: Vec<Name> = ns
            .iter()
            .filter_map(|r| match &r.data {
                RData::NS(n) => Some(n.0.clone()),
                _ => None,
            })
            .collect();
        let glue = msg
            .additionals
            .iter()
            .filter(|r| {
                matches!(r.record_type(), RecordType::A | RecordType::AAAA)
                    && r.dns_class == DNSClass::IN
                    && targets.contains(&r.name)
                    && is_at_or_below(&r.name, zone)
            })
            .take(2 * MAX_REFERRAL_NS)
            .cloned()
            .collect();
        let ds = msg
            .authorities
            .iter()
            .filter(|r| {
                let t = u16::from(r.record_type());
                let covered = rrsig_covers(r);
                (r.name == child && (t == 43 || covered == Some(43)))
                    || ((t == 47 || t == 50 || covered.is_some_and(|c| c == 47 || c == 50))
                        && is_at_or_below(&r.name, zone))
            })
            .cloned()
            .collect();
        // The child's DELEG records and the RRSIGs over them, a few of each (counted apart,
        // so that many records cannot push the signatures out).
        let (deleg_type, most) = (crate::upstream::deleg::DELEG_TYPE, crate::upstream::deleg::MAX_DELEG_RECORDS);
        let at_child = || msg.authorities.iter().filter(|r| r.name == child);
        let deleg = at_child()
            .filter(|r| u16::from(r.record_type()) == deleg_type)
            .take(most)
            .chain(at_child().filter(|r| rrsig_covers(r) == Some(deleg_type)).take(most))
            .cloned()
            .collect();
        return Reply::Referral { child, ns, glue, ds, deleg };
    }
    let (authority, neg_ttl) = negative_authority(msg, zone, sname);
    // NS records left in the authority section are not below the zone: an upward (or
    // sideways) referral, lame whatever AA says, unless the SOA makes it a NODATA answer.
    let upward = msg.authorities.iter().any(|r| r.record_type() == RecordType::NS);
    if authority.is_empty() && (!aa || upward) {
        // Neither authoritative nor a referral down: lame, or an upward referral.
        return Reply::Lame;
    }
    Reply::NoData { authority, neg_ttl }
}

/// A reply from a forward zone's server (asked with RD: it recursed for us). Its
/// negative answers are not authoritative and may carry the SOA of a zone above the
/// forward zone (a forward zone for `dev.corp.example` on a server whose zone is
/// `corp.example`): any SOA at or above the name makes them answers. A referral means
/// the server did not recurse: lame.
pub(crate) fn classify_forwarded(msg: &Message, zone: &Name, sname: &Name, stype: RecordType) -> Reply {
    match classify(msg, zone, sname, stype) {
        Reply::Referral { .. } => Reply::Lame,
        Reply::Lame if msg.answers.is_empty() => {
            let soa_owner = msg
                .authorities
                .iter()
                .find(|r| r.record_type() == RecordType::SOA && is_at_or_below(sname, &r.name))
                .map(|r| r.name.clone());
            let (authority, neg_ttl) = match &soa_owner {
                Some(owner) => negative_authority(msg, owner, sname),
                None => (Vec::new(), 0),
            };
            match msg.metadata.response_code {
                ResponseCode::NXDomain => Reply::NxDomain { authority, neg_ttl },
                ResponseCode::NoError => Reply::NoData { authority, neg_ttl },
                _ => Reply::Lame,
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, OpCode};
    use hickory_proto::rr::rdata::{A, NS, NULL, SOA};

    fn n(s: &str) -> Name {
        s.parse().unwrap()
    }
    fn a(name: &str, last: u8) -> Record {
        Record::from_rdata(n(name), 300, RData::A(A::new(192, 0, 2, last)))
    }
    fn msg(aa: bool, rcode: ResponseCode) -> Message {
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.metadata.authoritative = aa;
        m.metadata.response_code = rcode;
        m
    }
    fn soa(zone: &str, ttl: u32, min: u32) -> Record {
        Record::from_rdata(n(zone), ttl, RData::SOA(SOA::new(n("ns."), n("h."), 1, 2, 3, 4, min)))
    }

    #[test]
    fn answer_with_in_zone_cname_chain() {
        let mut m = msg(true, ResponseCode::NoError);
        m.answers.push(Record::from_rdata(n("a.lab."), 300, RData::CNAME(CNAME(n("b.lab.")))));
        m.answers.push(a("b.lab.", 1));
        let r = classify(&m, &n("lab."), &n("a.lab."), RecordType::A);
        let Reply::Answer { chain, data, next, .. } = r else { panic!("{r:?}") };
        assert_eq!((chain.len(), data.len(), next), (1, 1, None));
    }

    #[test]
    fn out_of_bailiwick_chain_target_is_not_trusted() {
        let mut m = msg(true, ResponseCode::NoError);
        m.answers.push(Record::from_rdata(n("a.lab."), 300, RData::CNAME(CNAME(n("x.other.")))));
        m.answers.push(a("x.other.", 66)); // a poisoning attempt
        let r = classify(&m, &n("lab."), &n("a.lab."), RecordType::A);
        assert_eq!(
            r,
            Reply::Answer {
                chain: vec![m.answers[0].clone()],
                data: vec![],
                next: Some(n("x.other.")),
                proofs: vec![]
            }
        );
    }

    #[test]
    fn dname_is_applied_and_synthesizes_a_cname() {
        let mut m = msg(true, ResponseCode::NoError);
        let raw = NULL::with(b"\x04beta\x03lab\x00".to_vec());
        m.answers.push(Record::from_rdata(
            n("legacy.alpha.lab."),
            300,
            RData::Unknown { code: RecordType::DNAME, rdata: raw },
        ));
        let r = classify(&m, &n("alpha.lab."), &n("www.legacy.alpha.lab."), RecordType::A);
        let Reply::Answer { chain, data, next, .. } = r else { panic!("{r:?}") };
        assert!(data.is_empty());
        assert_eq!(next, Some(n("www.beta.lab.")));
        assert_eq!(chain[1].data, RData::CNAME(CNAME(n("www.beta.lab."))));
        assert_eq!(chain[1].name, n("www.legacy.alpha.lab."));
    }

    #[test]
    fn referral_takes_only_in_bailiwick_glue() {
        let mut m = msg(false, ResponseCode::NoError);
        m.authorities.push(Record::from_rdata(n("alpha.lab."), 300, RData::NS(NS(n("ns1.alpha.lab.")))));
        m.authorities.push(Record::from_rdata(n("alpha.lab."), 300, RData::NS(NS(n("ns.evil.")))));
        m.additionals.push(a("ns1.alpha.lab.", 1));
        m.additionals.push(a("ns.evil.", 2));
        let r = classify(&m, &n("lab."), &n("www.alpha.lab."), RecordType::A);
        let Reply::Referral { child, ns, glue, .. } = r else { panic!("{r:?}") };
        assert_eq!(child, n("alpha.lab."));
        assert_eq!(ns.len(), 2);
        assert_eq!(glue, vec![a("ns1.alpha.lab.", 1)]);
    }

    /// A hostile referral with a thousand NS names contributes only the first twenty
    /// (each one could cost a nested address lookup).
    #[test]
    fn a_referral_contributes_at_most_twenty_ns_names() {
        let mut m = msg(false, ResponseCode::NoError);
        for i in 0..1000 {
            m.authorities.push(Record::from_rdata(n("alpha.lab."), 300, RData::NS(NS(n(&format!("ns{i}.evil."))))));
        }
        let r = classify(&m, &n("lab."), &n("www.alpha.lab."), RecordType::A);
        let Reply::Referral { ns, .. } = r else { panic!("{r:?}") };
        assert_eq!(ns.len(), MAX_REFERRAL_NS);
    }

    #[test]
    fn upward_referral_is_lame() {
        let mut m = msg(false, ResponseCode::NoError);
        m.authorities.push(Record::from_rdata(Name::root(), 300, RData::NS(NS(n("a.root.")))));
        assert_eq!(classify(&m, &n("lab."), &n("www.lab."), RecordType::A), Reply::Lame);
    }

    #[test]
    fn negative_answers_use_soa_minimum() {
        let mut m = msg(true, ResponseCode::NXDomain);
        m.authorities.push(soa("lab.", 3600, 300));
        let r = classify(&m, &n("lab."), &n("nope.lab."), RecordType::A);
        let Reply::NxDomain { authority, neg_ttl } = r else { panic!("{r:?}") };
        assert_eq!(neg_ttl, 300);
        assert_eq!(authority[0].ttl, 300);
        let mut m = msg(true, ResponseCode::NoError);
        m.authorities.push(soa("lab.", 60, 300));
        let r = classify(&m, &n("lab."), &n("www.lab."), RecordType::AAAA);
        assert!(matches!(r, Reply::NoData { neg_ttl: 60, .. }));
        // An SOA of some other zone is not used.
        let mut m = msg(true, ResponseCode::NoError);
        m.authorities.push(soa("other.", 60, 300));
        assert!(matches!(classify(&m, &n("lab."), &n("www.lab."), RecordType::AAAA), Reply::NoData { neg_ttl: 0, .. }));
    }

    #[test]
    fn hostile_cname_loops_and_floods_cost_little() {
        let mut m = msg(true, ResponseCode::NoError);
        for _ in 0..2000 {
            m.answers.push(Record::from_rdata(n("a.lab."), 1, RData::CNAME(CNAME(n("b.lab.")))));
            m.answers.push(Record::from_rdata(n("b.lab."), 1, RData::CNAME(CNAME(n("a.lab.")))));
        }
        let r = classify(&m, &n("lab."), &n("a.lab."), RecordType::A);
        let Reply::Answer { chain, data, next, .. } = r else { panic!("{r:?}") };
        assert_eq!(chain.len(), 2, "one CNAME per visited name");
        assert!(data.is_empty());
        assert_eq!(next, Some(n("a.lab.")), "the loop is left to the resolver's loop check");
    }

    #[test]
    fn nxdomain_without_aa_or_soa_is_lame() {
        let m = msg(false, ResponseCode::NXDomain);
        assert_eq!(classify(&m, &n("lab."), &n("x.lab."), RecordType::A), Reply::Lame);
    }

    #[test]
    fn other_classes_are_ignored() {
        let mut m = msg(true, ResponseCode::NoError);
        let mut ch = a("www.lab.", 9);
        ch.dns_class = DNSClass::CH;
        m.answers.push(ch);
        m.authorities.push(soa("lab.", 60, 60));
        assert!(matches!(classify(&m, &n("lab."), &n("www.lab."), RecordType::A), Reply::NoData { .. }));
    }

    #[test]
    fn dname_keeps_a_leading_wildcard_label() {
        let out = apply_dname(&n("*.x.legacy.alpha.lab."), &n("legacy.alpha.lab."), &n("beta.lab.")).unwrap();
        assert_eq!(out, n("*.x.beta.lab."));
    }

    #[test]
    fn ds_referral_to_itself_is_lame() {
        let mut m = msg(false, ResponseCode::NoError);
        m.authorities.push(Record::from_rdata(n("alpha.lab."), 300, RData::NS(NS(n("ns1.alpha.lab.")))));
        assert_eq!(classify(&m, &n("lab."), &n("alpha.lab."), RecordType::DS), Reply::Lame);
    }

    /// A forwarder's negative answers are not authoritative and may carry the SOA of a
    /// zone above the forward zone: still answers. A referral from it is lame.
    #[test]
    fn forwarded_negatives_are_answers_and_referrals_lame() {
        let soa = Record::from_rdata(
            n("corp.example."),
            300,
            RData::SOA(SOA::new(n("ns.corp.example."), n("h.corp.example."), 1, 2, 3, 4, 60)),
        );
        let mut m = msg(false, ResponseCode::NXDomain);
        m.add_authority(soa.clone());
        let zone = n("dev.corp.example.");
        assert!(matches!(classify(&m, &zone, &n("x.dev.corp.example."), RecordType::A), Reply::Lame));
        match classify_forwarded(&m, &zone, &n("x.dev.corp.example."), RecordType::A) {
            Reply::NxDomain { authority, neg_ttl } => assert_eq!((authority.len(), neg_ttl), (1, 60)),
            other => panic!("{other:?}"),
        }
        let mut m = msg(false, ResponseCode::NoError);
        m.add_authority(soa);
        assert!(matches!(
            classify_forwarded(&m, &zone, &n("x.dev.corp.example."), RecordType::A),
            Reply::NoData { .. }
        ));
        let mut m = msg(false, ResponseCode::NoError);
        m.add_authority(Record::from_rdata(n("x.dev.corp.example."), 60, RData::NS(NS(n("ns.x.dev.corp.example.")))));
        assert!(matches!(classify_forwarded(&m, &zone, &n("a.x.dev.corp.example."), RecordType::A), Reply::Lame));
    }
}
