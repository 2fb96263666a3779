//! Entry points for fuzzing, also used to replay the fuzz corpora as ordinary tests. Each
//! takes arbitrary bytes from the network side and must never panic; the fuzz targets in
//! `dataplane/fuzz` call them, and `tests` below replays every corpus file.

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RecordType};

use crate::cache::packet::{Lookup, PacketCache};
use crate::resolver::{Limit, ResolveError, exchange, iterate, response};
use crate::{respond, wire};

/// A client message through everything the worker does with one before resolution:
/// parsing, the packet cache (store and hit, truncation), and building responses.
pub fn client_query(data: &[u8]) {
    let mut out = Vec::new();
    wire::header_only_response(&mut out, data, wire::HEADER_LEN, wire::rcode::FORMERR, 0, None);
    let _ = wire::ttl_offsets(data);
    let Ok(q) = wire::parse_query(data) else { return };
    assert!(q.qname.end <= data.len() && q.question_end <= data.len());
    let mut cache = PacketCache::new(1 << 16);
    assert_eq!(cache.lookup(&q, data, 0, Some(q.udp_limit(1232)), 1232, &mut out), Lookup::Miss);
    // A question hickory cannot read gets FORMERR at the door, before any resolution.
    let Some(question) = respond::Question::parse(data, &q) else { return };
    let err: Result<crate::resolver::Answer, ResolveError> = Err(ResolveError::LimitExceeded(Limit::Depth));
    respond::build(&mut out, data, &q, &question, &err, 1232);
    let answer = Ok(crate::resolver::Answer {
        rcode: 0,
        answers: vec![],
        authority: vec![],
        cache_ttl: 60,
        security: crate::dnssec::Security::Secure,
        stale: false,
    });
    let ttl = respond::build(&mut out, data, &q, &question, &answer, 1232);
    cache.store(&q, data, &out, 0, ttl);
    // Stored only when cacheable.
    let stored_ok = ttl > 0 && wire::ttl_offsets(&out).is_some();
    let stored = out.clone();
    for limit in [Some(512), Some(q.udp_limit(1232)), None] {
        let hit = cache.lookup(&q, data, 1, limit, 1232, &mut out);
        assert_eq!(hit != Lookup::Miss, stored_ok, "a stored answer must be found again");
        if hit == Lookup::Hit {
            assert_eq!(out.len(), stored.len());
        }
    }
    let mut small = stored;
    respond::fit_udp(&mut small, data, &q, 512, 1232);
}

/// A client's TCP stream as the worker reads it: the bytes arrive cut into pieces at the
/// positions the input's first octets name, reading pauses at the buffer cap and takes at
/// most a pipelining window of messages at a time (from the fifth octet), and every message
/// taken goes through [`client_query`].
pub fn tcp_client_stream(data: &[u8]) {
    use crate::worker::{MAX_RBUF, take_messages};
    let cuts: Vec<usize> = data.iter().take(4).map(|b| usize::from(*b) * 64 + 1).collect();
    let window = data.get(4).map_or(1, |b| usize::from(b % 8) + 1);
    let (mut rbuf, mut at, mut taken) = (Vec::new(), 0, 0usize);
    for piece in cuts.iter().cycle() {
        if at >= data.len() && rbuf.len() < 2 {
            break;
        }
        if at < data.len() && rbuf.len() < MAX_RBUF {
            let end = (at + piece).min(data.len());
            rbuf.extend_from_slice(&data[at..end]);
            at = end;
        }
        let before = rbuf.len();
        let msgs = take_messages(&mut rbuf, window);
        assert!(msgs.len() <= window, "never more than the window");
        for m in &msgs {
            taken += 2 + m.len();
            client_query(m);
        }
        if msgs.is_empty() && at >= data.len() {
            break; // a message that never completes stays buffered (its deadline closes it)
        }
        assert_eq!(before - rbuf.len(), msgs.iter().map(|m| 2 + m.len()).sum::<usize>());
    }
    assert_eq!(taken + rbuf.len(), at, "every octet read is in a message or still buffered");
}

/// An upstream reply through the checks and the classification the resolver applies.
pub fn upstream_response(data: &[u8]) {
    let Ok(zone) = Name::from_ascii("lab.") else { return };
    let Ok(sname) = Name::from_ascii("www.alpha.lab.") else { return };
    let id = if data.len() >= 2 { u16::from_be_bytes([data[0], data[1]]) } else { 0 };
    for stype in [RecordType::A, RecordType::NS, RecordType::DS, RecordType::CNAME] {
        if let Ok(msg) = exchange::check_reply(data, id, &sname, stype) {
            let _ = response::classify(&msg, &zone, &sname, stype);
        }
    }
    // Classification must also hold up for messages that fail the question check.
    if let Ok(msg) = Message::from_vec(data) {
        for z in [Name::root(), zone] {
            let _ = response::classify(&msg, &z, &sname, RecordType::A);
        }
        for r in msg.answers.iter() {
            let _ = response::dname_target(r);
            let _ = response::rrsig_covers(r);
        }
    }
}

/// Signature checks the validator fuzz target allows per input.
const FUZZ_SIG_CHECKS: u32 = 16;

/// A reply's DNSSEC material through the validator's pure parts: the RDATA readers, RRset
/// verification of every RRset against the DNSKEYs in the same message (bounded by the
/// check allowance, which must never be overspent), the NSEC/NSEC3 proofs for the
/// question, and the trust-anchor file reader on the same bytes as text.
pub fn validator(data: &[u8]) {
    use crate::dnssec::{anchors, denial, rdata, verify};
    use hickory_proto::rr::RData;
    use std::cell::Cell;
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = anchors::parse(text);
    }
    let hidden = wire::hide_raw_types(data);
    let Ok(msg) = Message::from_vec(hidden.as_deref().unwrap_or(data)) else { return };
    let raw = |r: &hickory_proto::rr::Record| match &r.data {
        RData::Unknown { rdata, .. } => Some(rdata.anything.clone()),
        _ => None,
    };
    let all: Vec<_> = msg.answers.iter().chain(msg.authorities.iter()).chain(msg.additionals.iter()).cloned().collect();
    let keys: Vec<rdata::Dnskey> = all
        .iter()
        .filter(|r| r.record_type() == RecordType::DNSKEY)
        .filter_map(|r| rdata::Dnskey::parse(&raw(r)?))
        .collect();
    let left = Cell::new(FUZZ_SIG_CHECKS);
    let (mut nsecs, mut nsec3s) = (Vec::new(), Vec::new());
    for (owner, rtype, set) in iterate::group_rrsets(&all) {
        let sigs: Vec<rdata::Rrsig> = set
            .iter()
            .filter(|r| r.record_type() == RecordType::RRSIG)
            .filter_map(|r| rdata::Rrsig::parse(&raw(r)?))
            .collect();
        let data: Vec<&hickory_proto::rr::Record> = set.iter().filter(|r| r.record_type() == rtype).collect();
        for r in &data {
            let _ = rdata::Ds::parse(&raw(r).unwrap_or_default());
            let _ = verify::canonical_rdata(r);
            match rtype {
                RecordType::NSEC => {
                    nsecs.extend(raw(r).and_then(|b| rdata::Nsec::parse(&b)).map(|n| (owner.clone(), n)))
                }
                RecordType::NSEC3 => {
                    nsec3s.extend(raw(r).and_then(|b| rdata::Nsec3::parse(&b)).map(|n| (owner.clone(), n)))
                }
                _ => {}
            }
        }
        for signer in sigs.iter().map(|s| s.signer.clone()) {
            let before = left.get();
            let _ = verify::verify_rrset(
                &owner,
                u16::from(rtype),
                &data,
                &sigs,
                &signer,
                &keys,
                1_800_000_000,
                true,
                &left,
            );
            assert!(left.get() <= before);
        }
    }
    let Some(q) = msg.queries.first() else { return };
    let hashes = Cell::new(8);
    let limits = denial::Nsec3Limits { max_iterations: 150, hashes_left: &hashes };
    let (qname, qtype) = (q.name(), u16::from(q.query_type()));
    let zone = qname.base_name();
    let _ = denial::nsec_nxdomain(qname, &nsecs);
    let _ = denial::nsec_nodata(qname, qtype, &nsecs);
    let _ = denial::nsec_wildcard_answer(qname, &zone, &nsecs);
    let _ = denial::nsec3_nxdomain(qname, &zone, &nsec3s, &limits);
    let _ = denial::nsec3_nodata(qname, qtype, &zone, &nsec3s, &limits);
    let _ = denial::nsec3_wildcard_answer(qname, &zone, &zone, &nsec3s, &limits);
    assert!(hashes.get() <= 8);
}

/// Bytes from an encrypted upstream connection through the framing that reads answers: a
/// DoT stream (cut into TLS-record-sized pieces at the positions the input's first octets
/// name), and a finished DoQ stream (RFC 9250: length, message ID 0).
pub fn transport_framing(data: &[u8]) {
    use crate::upstream::dot::take_frame;
    let cuts: Vec<usize> = data.iter().take(4).map(|b| usize::from(*b) + 1).collect();
    let mut stream = Vec::new();
    let (mut at, mut taken) = (0, 0usize);
    for piece in cuts.iter().cycle() {
        if at >= data.len() {
            break;
        }
        let end = (at + piece).min(data.len());
        stream.extend_from_slice(&data[at..end]);
        at = end;
        loop {
            match take_frame(&mut stream) {
                Ok(Some(msg)) => {
                    assert!(msg.len() >= 12);
                    taken += 2 + msg.len();
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    assert_eq!(taken + stream.len(), data.len(), "every octet is in a frame or still buffered");
    if let Ok(msg) = crate::upstream::doq::answer_of(data) {
        assert_eq!((msg.len() + 2, &msg[..2]), (data.len(), &[0, 0][..]));
    }
}

/// Owner-signal RDATA (SVCB, TLSA) through the one-record-at-a-time parsers. The input
/// is also split at its first zero octet into several records, as an RRset would be.
pub fn signals(data: &[u8]) {
    if let Ok(r) = crate::upstream::signal::parse_svcb(data) {
        assert!(r.priority > 0, "AliasMode never parses as a usable record");
        assert!(r.port.is_none_or(|p| p != 0 && p != 53));
        let _ = r.transports();
    }
    let _ = crate::upstream::signal::parse_tlsa(data);
    let parts: Vec<&[u8]> = data.splitn(4, |b| *b == 0xff).collect();
    let (ok, skipped) = crate::upstream::signal::parse_svcb_set(parts.iter().copied());
    assert_eq!(ok.len() + skipped.len(), parts.len(), "every record is either used or reported");
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn replay(target: &str, f: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            f(&std::fs::read(&path).unwrap());
            n += 1;
        }
        assert!(n > 0, "empty corpus {}", dir.display());
    }

    #[test]
    fn replay_client_query_corpus() {
        replay("client_query", super::client_query);
    }

    #[test]
    fn replay_upstream_response_corpus() {
        replay("upstream_response", super::upstream_response);
    }

    #[test]
    fn replay_transport_framing_corpus() {
        replay("transport_framing", super::transport_framing);
    }

    #[test]
    fn replay_validator_corpus() {
        replay("validator", super::validator);
    }

    #[test]
    fn replay_tcp_client_stream_corpus() {
        replay("tcp_client_stream", super::tcp_client_stream);
    }

    #[test]
    fn replay_signals_corpus() {
        replay("signals", super::signals);
    }
}
