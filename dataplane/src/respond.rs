//! Building the response to a client: from a resolver answer, or from an error (SERVFAIL
//! with its Extended DNS Error), and fitting it to the client's UDP size.

use hickory_proto::op::{Message, MessageType, OpCode, Query as HQuery, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::dnssec::Security;
use crate::resolver::{Answer, ResolveError};
use crate::wire::{self, Query, ResponseEdns, flag, rcode};

/// DNSSEC record types a client that did not set DO never sees (RFC 4035 section 3.2.1:
/// RRSIG, NSEC, NSEC3), unless it asked for them.
const DNSSEC_TYPES: [u16; 3] = [46, 47, 50];

/// A client's question as hickory types (the name keeps the client's case): read once per
/// query that misses the packet cache, and carried to the resolver and the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The name, as the client wrote it.
    pub name: Name,
    /// The type.
    pub qtype: RecordType,
}

impl Question {
    /// Reads the question of a parsed query; `None` when hickory cannot (FORMERR).
    pub fn parse(msg: &[u8], q: &Query) -> Option<Self> {
        let mut d = BinDecoder::new(msg.get(q.qname.start..q.question_end)?);
        let hq = HQuery::read(&mut d).ok()?;
        Some(Self { name: hq.name().clone(), qtype: hq.query_type() })
    }
}

fn keep_for_client(rtype: u16, qtype: u16, dnssec_ok: bool) -> bool {
    dnssec_ok || rtype == qtype || !DNSSEC_TYPES.contains(&rtype)
}

/// The Extended DNS Error of a failure, if the client can receive one (it sent EDNS).
fn edns_for<'a>(q: &Query, udp_size: u16, ede: Option<(crate::ede::Ede, &'a str)>) -> Option<ResponseEdns<'a>> {
    q.edns.map(|c| ResponseEdns { udp_size, dnssec_ok: c.dnssec_ok, rcode_high: 0, ede })
}

/// Writes a response policy's answer (RPZ) into `out`: never AD (policy, not the zone's
/// owner, wrote it), with the policy zone's EDE. It is not kept in the packet cache.
pub fn policy(
    out: &mut Vec<u8>,
    msg: &[u8],
    q: &Query,
    question: &Question,
    p: &crate::rpz::PolicyAnswer,
    udp_size: u16,
) {
    let dnssec_ok = q.dnssec_ok();
    let mut m = Message::new(q.id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = q.rd();
    m.metadata.recursion_available = true;
    m.metadata.checking_disabled = q.cd();
    m.metadata.response_code = ResponseCode::from(0, p.rcode);
    let mut hq = HQuery::query(question.name.clone(), question.qtype);
    hq.set_query_class(hickory_proto::rr::DNSClass::from(q.qclass));
    m.add_query(hq);
    let qt = u16::from(question.qtype);
    m.answers =
        p.answers.iter().filter(|r| keep_for_client(u16::from(r.record_type()), qt, dnssec_ok)).cloned().collect();
    match m.to_vec() {
        // The OPT record with the EDE option: 11 + 4 + 2 + the text.
        Ok(bytes) if bytes.len() + 17 + p.ede.1.len() <= usize::from(u16::MAX) => {
            *out = bytes;
            if let Some(e) = edns_for(q, udp_size, Some((p.ede.0, &p.ede.1))) {
                wire::append_opt(out, &e);
            }
        }
        _ => {
            let edns = edns_for(q, udp_size, Some((p.ede.0, &p.ede.1)));
            wire::header_only_response(out, msg, q.question_end, rcode::SERVFAIL, 0, edns.as_ref());
        }
    }
}

/// Writes the response for `result` into `out`; returns how long it may be cached (0:
/// not at all). `udp_size` is our advertised EDNS size.
pub fn build(
    out: &mut Vec<u8>,
    msg: &[u8],
    q: &Query,
    question: &Question,
    result: &Result<Answer, ResolveError>,
    udp_size: u16,
) -> u32 {
    let answer = match result {
        Ok(a) => a,
        Err(e) => {
            let (code, text) = e.ede();
            let edns = edns_for(q, udp_size, Some((code, &text)));
            wire::header_only_response(out, msg, q.question_end, rcode::SERVFAIL, 0, edns.as_ref());
            return 0;
        }
    };
    if let Security::Bogus(b) = &answer.security
        && !q.cd()
    {
        // RFC 4035 section 5.5: bogus data is not given out; with CD the client validates.
        // The SERVFAIL is cached like the bogus data (dnssec.bogus_ttl_s), so a client
        // repeating a bogus name costs a packet-cache hit, as in Unbound.
        let edns = edns_for(q, udp_size, Some((b.ede, &b.text)));
        wire::header_only_response(out, msg, q.question_end, rcode::SERVFAIL, 0, edns.as_ref());
        return answer.cache_ttl;
    }
    let (name, qtype) = (question.name.clone(), question.qtype);
    let dnssec_ok = q.dnssec_ok();
    let mut m = Message::new(q.id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = q.rd();
    m.metadata.recursion_available = true;
    m.metadata.checking_disabled = q.cd();
    // AD only for secure data and a client that shows it understands it (DO or AD set,
    // RFC 6840 section 5.7).
    m.metadata.authentic_data = answer.security == Security::Secure && (dnssec_ok || q.ad());
    m.metadata.response_code = ResponseCode::from(0, answer.rcode);
    let mut hq = HQuery::query(name, qtype);
    hq.set_query_class(hickory_proto::rr::DNSClass::from(q.qclass));
    m.add_query(hq);
    let qt = u16::from(qtype);
    m.answers =
        answer.answers.iter().filter(|r| keep_for_client(u16::from(r.record_type()), qt, dnssec_ok)).cloned().collect();
    m.authorities = answer
        .authority
        .iter()
        .filter(|r| keep_for_client(u16::from(r.record_type()), qt, dnssec_ok))
        .cloned()
        .collect();
    match m.to_vec() {
        Ok(bytes) if bytes.len() + 11 <= usize::from(u16::MAX) => {
            *out = bytes;
            // A stale answer says so (RFC 8767 section 6, RFC 8914); an insecure one may
            // say why (unsupported algorithm, NSEC3 iterations).
            let note = match &answer.security {
                _ if answer.stale && answer.rcode == rcode::NXDOMAIN => {
                    Some((crate::ede::Ede::StaleNxdomainAnswer, "stale NXDOMAIN: no authority answered"))
                }
                _ if answer.stale => Some((crate::ede::Ede::StaleAnswer, "stale answer: no authority answered")),
                Security::Insecure(Some(n)) => Some((n.ede, n.text.as_str())),
                _ => None,
            };
            if let Some(e) = edns_for(q, udp_size, note) {
                wire::append_opt(out, &e);
            }
            // A stale answer is never kept: the next query tries the authorities again.
            let cacheable = !answer.stale && (answer.rcode == rcode::NOERROR || answer.rcode == rcode::NXDOMAIN);
            if cacheable { answer.cache_ttl } else { 0 }
        }
        _ => {
            let edns =
                edns_for(q, udp_size, Some((crate::ede::Ede::Other, "response could not be encoded in 65535 octets")));
            wire::header_only_response(out, msg, q.question_end, rcode::SERVFAIL, 0, edns.as_ref());
            0
        }
    }
}

/// An empty truncated answer (TC): the client asks again over TCP (an RPZ TCP-only rule).
pub fn truncated(out: &mut Vec<u8>, msg: &[u8], q: &Query, udp_size: u16) {
    let edns = edns_for(q, udp_size, None);
    wire::header_only_response(out, msg, q.question_end, rcode::NOERROR, flag::TC, edns.as_ref());
}

/// If `out` is larger than the client's UDP limit, replaces it with a truncated response
/// (header, question, OPT; TC set) and returns true.
pub fn fit_udp(out: &mut Vec<u8>, msg: &[u8], q: &Query, limit: usize, udp_size: u16) -> bool {
    if out.len() <= limit {
        return false;
    }
    let rc = out.get(3).map_or(rcode::SERVFAIL, |b| b & 0x0F);
    let edns = edns_for(q, udp_size, None);
    wire::header_only_response(out, msg, q.question_end, rc, flag::TC, edns.as_ref());
    true
}

/// What explain reports of one resolution: what a client without DO would get, and the
/// path. The control plane turns it into the REST body.
#[derive(Debug, Clone, PartialEq)]
pub struct Explained {
    /// The name, normalized.
    pub name: Name,
    /// The type.
    pub qtype: RecordType,
    /// The RCODE a client would get.
    pub rcode: u8,
    /// Why it failed, when it did: the Extended DNS Error and its text.
    pub error: Option<(crate::ede::Ede, String)>,
    /// The answer's DNSSEC status (absent when resolution failed before one).
    pub dnssec: Option<Security>,
    /// The answer records a client without DO would get (no RRSIGs).
    pub answers: Vec<hickory_proto::rr::Record>,
    /// The path, in order. Empty when the whole answer came from the cache.
    pub steps: Vec<crate::resolver::trace::TraceStep>,
    /// The response policy (RPZ) that rewrites what a client gets, in words.
    pub policy: Option<String>,
}

/// The explain result of one resolution.
pub fn explain(
    name: &Name,
    qtype: RecordType,
    result: &Result<Answer, ResolveError>,
    steps: Vec<crate::resolver::trace::TraceStep>,
) -> Explained {
    let (rcode, error, answers) = match result {
        Ok(Answer { security: Security::Bogus(b), .. }) => (rcode::SERVFAIL, Some((b.ede, b.text.clone())), vec![]),
        Ok(a) => (
            a.rcode,
            None,
            a.answers
                .iter()
                .filter(|r| keep_for_client(u16::from(r.record_type()), u16::from(qtype), false))
                .cloned()
                .collect(),
        ),
        Err(e) => (rcode::SERVFAIL, Some(e.ede()), vec![]),
    };
    Explained {
        name: crate::names::canonical(name),
        qtype,
        rcode,
        error,
        dnssec: result.as_ref().ok().map(|a| a.security.clone()),
        answers,
        steps,
        policy: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolver::Limit;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record};

    fn query(edns: bool) -> Vec<u8> {
        let mut q = vec![0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)];
        q.extend_from_slice(b"\x03WwW\x03lab\x00\x00\x01\x00\x01");
        if edns {
            q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        }
        q
    }

    #[test]
    fn answer_keeps_case_sets_ra_and_filters_dnssec() {
        let msg = query(true);
        let q = wire::parse_query(&msg).unwrap();
        let rrsig = Record::from_rdata(
            "www.lab.".parse().unwrap(),
            60,
            RData::Unknown { code: RecordType::RRSIG, rdata: hickory_proto::rr::rdata::NULL::with(vec![0, 1, 2]) },
        );
        let a = Answer {
            rcode: 0,
            answers: vec![Record::from_rdata("www.lab.".parse().unwrap(), 60, RData::A(A::new(192, 0, 2, 1))), rrsig],
            authority: vec![],
            cache_ttl: 60,
            security: Security::insecure(),
            stale: false,
        };
        let mut out = Vec::new();
        let question = Question::parse(&msg, &q).unwrap();
        assert_eq!(build(&mut out, &msg, &q, &question, &Ok(a), 1232), 60);
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.id, 0xABCD);
        assert!(m.metadata.recursion_available && m.metadata.recursion_desired);
        assert_eq!(m.answers.len(), 1, "RRSIG stripped for a client without DO");
        assert_eq!(m.queries[0].name().to_ascii(), "WwW.lab.");
        assert_eq!(m.edns.unwrap().max_payload(), 1232);
    }

    #[test]
    fn error_is_servfail_with_ede_only_when_client_has_edns() {
        let err: Result<Answer, ResolveError> = Err(ResolveError::LimitExceeded(Limit::Depth));
        for edns in [true, false] {
            let msg = query(edns);
            let q = wire::parse_query(&msg).unwrap();
            let mut out = Vec::new();
            let question = Question::parse(&msg, &q).unwrap();
            assert_eq!(build(&mut out, &msg, &q, &question, &err, 1232), 0);
            let m = Message::from_vec(&out).unwrap();
            assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
            assert_eq!(m.edns.is_some(), edns);
            if edns {
                let text = String::from_utf8_lossy(&out);
                assert!(text.contains("max_depth"), "EXTRA-TEXT names the limit");
            }
        }
    }

    /// RFC 8767 section 6 and RFC 8914: a stale answer carries EDE 3 (19 for an NXDOMAIN)
    /// and is never kept in the packet cache.
    #[test]
    fn stale_answers_say_so_and_are_not_cached() {
        for (rc, code) in [(rcode::NOERROR, 3u8), (rcode::NXDOMAIN, 19)] {
            let msg = query(true);
            let q = wire::parse_query(&msg).unwrap();
            let question = Question::parse(&msg, &q).unwrap();
            let a = Answer { rcode: rc, cache_ttl: 30, stale: true, ..Answer::default() };
            let mut out = Vec::new();
            assert_eq!(build(&mut out, &msg, &q, &question, &Ok(a), 1232), 0);
            // The OPT record's last option: code 15 (EDE), then the INFO-CODE.
            let at = out.windows(2).rposition(|w| w == [0, 15]).expect("an EDE option");
            assert_eq!(out[at + 4..at + 6], [0, code], "{out:?}");
            assert_eq!(Message::from_vec(&out).unwrap().metadata.response_code, ResponseCode::from(0, rc));
        }
    }

    /// RFC 4035 section 3.2.3 and 5.5, RFC 6840 section 5.7: AD for secure data to a
    /// client that set DO or AD; bogus data is SERVFAIL with its EDE unless CD is set.
    #[test]
    fn ad_bit_and_bogus_answers() {
        let answer = |security| Answer {
            rcode: 0,
            answers: vec![Record::from_rdata("www.lab.".parse().unwrap(), 60, RData::A(A::new(192, 0, 2, 1)))],
            authority: vec![],
            cache_ttl: 60,
            security,
            stale: false,
        };
        let run = |flags_byte: u8, do_bit: bool, security: Security| {
            let mut msg = query(true);
            msg[3] = flags_byte;
            if do_bit {
                let at = msg.len() - 4;
                msg[at] = 0x80;
            }
            let q = wire::parse_query(&msg).unwrap();
            let mut out = Vec::new();
            let question = Question::parse(&msg, &q).unwrap();
            let ttl = build(&mut out, &msg, &q, &question, &Ok(answer(security)), 1232);
            (Message::from_vec(&out).unwrap(), ttl, out)
        };
        let (m, _, _) = run(0, true, Security::Secure);
        assert!(m.metadata.authentic_data, "DO client, secure");
        let (m, _, _) = run(0x20, false, Security::Secure);
        assert!(m.metadata.authentic_data, "AD client, secure");
        let (m, _, _) = run(0, false, Security::Secure);
        assert!(!m.metadata.authentic_data, "plain client");
        let (m, _, _) = run(0, true, Security::insecure());
        assert!(!m.metadata.authentic_data, "insecure");
        let bogus = Security::bogus(crate::ede::Ede::SignatureExpired, "lab.: www.lab. A: signature expired".into());
        let (m, ttl, out) = run(0, true, bogus.clone());
        assert_eq!((m.metadata.response_code, ttl), (ResponseCode::ServFail, 60), "cached as long as the data");
        assert!(String::from_utf8_lossy(&out).contains("signature expired"));
        let (m, _, _) = run(0x10, true, bogus);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "CD: the data, no AD");
        assert!(!m.metadata.authentic_data && m.answers.len() == 1);
    }

    #[test]
    fn fit_udp_truncates() {
        let msg = query(false);
        let q = wire::parse_query(&msg).unwrap();
        let mut out = vec![0u8; 600];
        out[3] = 0x80;
        assert!(fit_udp(&mut out, &msg, &q, 512, 1232));
        assert_eq!(out.len(), q.question_end);
        assert!(u16::from_be_bytes([out[2], out[3]]) & flag::TC != 0);
        let mut small = vec![0u8; 100];
        assert!(!fit_udp(&mut small, &msg, &q, 512, 1232));
    }
}
