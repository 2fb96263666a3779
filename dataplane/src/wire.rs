//! Wire-level helpers for the hot path: parse a client query's header, question and OPT
//! record without allocating, and build small responses (errors, truncation) directly in
//! bytes. Everything here takes untrusted input and returns an error instead of panicking.

use crate::ede::Ede;
use std::ops::Range;

/// DNS header length in octets.
pub const HEADER_LEN: usize = 12;
/// Longest domain name in wire form (RFC 1035 section 2.3.4).
pub const MAX_NAME_LEN: usize = 255;
/// Resource record type of the EDNS(0) OPT pseudo-record.
pub const TYPE_OPT: u16 = 41;
/// EDNS option code of an Extended DNS Error (RFC 8914).
pub const OPT_EDE: u16 = 15;
/// EDNS option code of a DNS cookie (RFC 7873).
pub const OPT_COOKIE: u16 = 10;
/// EDNS option code of padding (RFC 7830).
pub const OPT_PADDING: u16 = 12;

/// RCODE values used by the data plane.
pub mod rcode {
    /// No error.
    pub const NOERROR: u8 = 0;
    /// Format error: the query could not be interpreted.
    pub const FORMERR: u8 = 1;
    /// Server failure.
    pub const SERVFAIL: u8 = 2;
    /// Name does not exist.
    pub const NXDOMAIN: u8 = 3;
    /// Not implemented (an opcode other than QUERY).
    pub const NOTIMP: u8 = 4;
    /// Refused by policy.
    pub const REFUSED: u8 = 5;
    /// Bad EDNS version (extended RCODE 16: upper bits 1, lower bits 0).
    pub const BADVERS: u16 = 16;
}

/// Header flag bits (second and third octet as a big-endian u16).
pub mod flag {
    /// Response.
    pub const QR: u16 = 0x8000;
    /// Authoritative answer.
    pub const AA: u16 = 0x0400;
    /// Truncated.
    pub const TC: u16 = 0x0200;
    /// Recursion desired.
    pub const RD: u16 = 0x0100;
    /// Recursion available.
    pub const RA: u16 = 0x0080;
    /// Authentic data.
    pub const AD: u16 = 0x0020;
    /// Checking disabled.
    pub const CD: u16 = 0x0010;
}

/// Why a client query could not be parsed, and how to answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// Too short for a header, or a response (QR set): drop silently, never answer.
    #[error("not a query: drop")]
    Drop,
    /// Malformed in a way that still lets us echo the header: answer FORMERR.
    #[error("malformed query")]
    FormErr,
    /// An opcode other than QUERY: answer NOTIMP.
    #[error("opcode not implemented")]
    NotImp,
    /// EDNS version above 0: answer BADVERS (RFC 6891 section 6.1.3).
    #[error("unsupported EDNS version")]
    BadVers,
}

/// The EDNS(0) parameters a client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientEdns {
    /// Advertised UDP payload size (values below 512 are treated as 512).
    pub udp_size: u16,
    /// DNSSEC OK bit.
    pub dnssec_ok: bool,
    /// Where the query's COOKIE option data is in the message (RFC 7873: a client cookie
    /// of 8 octets, then a server cookie of 8 to 32), as (offset, length).
    pub cookie: Option<(u16, u8)>,
}

/// A parsed client query: offsets into the original datagram plus the decoded fields.
#[derive(Debug, Clone)]
pub struct Query {
    /// Message ID.
    pub id: u16,
    /// Header flags (second and third octets).
    pub flags: u16,
    /// The question's name in wire form, as the client cased it.
    pub qname: Range<usize>,
    /// Question type.
    pub qtype: u16,
    /// Question class.
    pub qclass: u16,
    /// End of the question section.
    pub question_end: usize,
    /// EDNS parameters when the query carried an OPT record.
    pub edns: Option<ClientEdns>,
}

impl Query {
    /// Recursion desired.
    pub fn rd(&self) -> bool {
        self.flags & flag::RD != 0
    }
    /// Checking disabled.
    pub fn cd(&self) -> bool {
        self.flags & flag::CD != 0
    }

    /// AD set: the client understands the AD bit without DO (RFC 6840 section 5.7).
    pub fn ad(&self) -> bool {
        self.flags & flag::AD != 0
    }
    /// DNSSEC OK.
    pub fn dnssec_ok(&self) -> bool {
        self.edns.is_some_and(|e| e.dnssec_ok)
    }
    /// Largest response the client can take over UDP (RFC 6891 section 6.2.5), capped by
    /// our own advertised size.
    pub fn udp_limit(&self, our_max: u16) -> usize {
        match self.edns {
            None => 512,
            Some(e) => usize::from(e.udp_size.clamp(512, our_max.max(512))),
        }
    }
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Reads an uncompressed name starting at `at`; returns the end offset. Compression is
/// refused: a question at offset 12 has nothing earlier to point to.
fn skip_plain_name(buf: &[u8], mut at: usize) -> Result<usize, QueryError> {
    let start = at;
    loop {
        let len = *buf.get(at).ok_or(QueryError::FormErr)? as usize;
        if len == 0 {
            at += 1;
            break;
        }
        if len & 0xC0 != 0 {
            return Err(QueryError::FormErr);
        }
        at += 1 + len;
        if at - start > MAX_NAME_LEN {
            return Err(QueryError::FormErr);
        }
    }
    if at - start > MAX_NAME_LEN || at > buf.len() {
        return Err(QueryError::FormErr);
    }
    Ok(at)
}

/// Parses a client query. The caller answers according to the error kind; on `Drop` it
/// must not answer at all.
pub fn parse_query(buf: &[u8]) -> Result<Query, QueryError> {
    if buf.len() < HEADER_LEN {
        return Err(QueryError::Drop);
    }
    let id = u16::from_be_bytes([buf[0], buf[1]]);
    let flags = u16::from_be_bytes([buf[2], buf[3]]);
    if flags & flag::QR != 0 {
        return Err(QueryError::Drop);
    }
    let opcode = (flags >> 11) & 0xF;
    let qdcount = u16::from_be_bytes([buf[4], buf[5]]);
    let ancount = u16::from_be_bytes([buf[6], buf[7]]);
    let nscount = u16::from_be_bytes([buf[8], buf[9]]);
    let arcount = u16::from_be_bytes([buf[10], buf[11]]);
    if opcode != 0 {
        return Err(QueryError::NotImp);
    }
    if qdcount != 1 || ancount != 0 || nscount != 0 || arcount > 1 {
        return Err(QueryError::FormErr);
    }
    let qname_end = skip_plain_name(buf, HEADER_LEN)?;
    let qtype = u16_at(buf, qname_end).ok_or(QueryError::FormErr)?;
    let qclass = u16_at(buf, qname_end + 2).ok_or(QueryError::FormErr)?;
    let question_end = qname_end + 4;
    let mut edns = None;
    if arcount == 1 {
        // The only additional record a query may carry here is OPT with the root owner.
        let mut at = question_end;
        if buf.get(at) != Some(&0) {
            return Err(QueryError::FormErr);
        }
        at += 1;
        let rtype = u16_at(buf, at).ok_or(QueryError::FormErr)?;
        if rtype != TYPE_OPT {
            return Err(QueryError::FormErr);
        }
        let udp_size = u16_at(buf, at + 2).ok_or(QueryError::FormErr)?;
        let ttl_hi = u16_at(buf, at + 4).ok_or(QueryError::FormErr)?;
        let ttl_lo = u16_at(buf, at + 6).ok_or(QueryError::FormErr)?;
        let rdlen = usize::from(u16_at(buf, at + 8).ok_or(QueryError::FormErr)?);
        at += 10;
        let rdata = buf.get(at..at + rdlen).ok_or(QueryError::FormErr)?;
        if at + rdlen != buf.len() {
            return Err(QueryError::FormErr);
        }
        let version = (ttl_hi & 0xFF) as u8;
        let mut cookie = None;
        let mut o = 0;
        while o < rdata.len() {
            let code = u16_at(rdata, o).ok_or(QueryError::FormErr)?;
            let olen = usize::from(u16_at(rdata, o + 2).ok_or(QueryError::FormErr)?);
            if o + 4 + olen > rdata.len() {
                return Err(QueryError::FormErr);
            }
            if code == OPT_COOKIE {
                // RFC 7873 section 5.2.2: any other length, or a second cookie, is FORMERR.
                if !(olen == 8 || (16..=40).contains(&olen)) || cookie.is_some() {
                    return Err(QueryError::FormErr);
                }
                cookie = Some(((at + o + 4) as u16, olen as u8));
            }
            o += 4 + olen;
        }
        let parsed = ClientEdns { udp_size: udp_size.max(512), dnssec_ok: ttl_lo & 0x8000 != 0, cookie };
        if version != 0 {
            return Err(QueryError::BadVers);
        }
        edns = Some(parsed);
    } else if question_end != buf.len() {
        return Err(QueryError::FormErr);
    }
    Ok(Query { id, flags, qname: HEADER_LEN..qname_end, qtype, qclass, question_end, edns })
}

/// An EDNS OPT record to append to a response we build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseEdns<'a> {
    /// Our advertised UDP payload size.
    pub udp_size: u16,
    /// Echo of the client's DO bit.
    pub dnssec_ok: bool,
    /// Upper 8 bits of a 12-bit RCODE (1 for BADVERS).
    pub rcode_high: u8,
    /// Extended DNS Error: INFO-CODE and EXTRA-TEXT.
    pub ede: Option<(Ede, &'a str)>,
}

/// Appends an OPT record to a message in `buf` and bumps ARCOUNT.
pub fn append_opt(buf: &mut Vec<u8>, edns: &ResponseEdns<'_>) {
    let ede_len = edns.ede.map_or(0, |(_, t)| 4 + 2 + t.len().min(512));
    buf.push(0);
    buf.extend_from_slice(&TYPE_OPT.to_be_bytes());
    buf.extend_from_slice(&edns.udp_size.to_be_bytes());
    buf.push(edns.rcode_high);
    buf.push(0); // version
    buf.extend_from_slice(&(if edns.dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
    buf.extend_from_slice(&(ede_len as u16).to_be_bytes());
    if let Some((code, text)) = edns.ede {
        push_ede(buf, code, text);
    }
    bump_count(buf, 10);
}

/// Writes an Extended DNS Error option (RFC 8914); the text is cut at 512 octets.
fn push_ede(buf: &mut Vec<u8>, code: Ede, text: &str) {
    let text = &text.as_bytes()[..text.len().min(512)];
    buf.extend_from_slice(&OPT_EDE.to_be_bytes());
    buf.extend_from_slice(&((2 + text.len()) as u16).to_be_bytes());
    buf.extend_from_slice(&code.code().to_be_bytes());
    buf.extend_from_slice(text);
}

/// An Extended DNS Error option (RFC 8914) in wire form, for [`append_option`].
pub fn ede_option(code: Ede, text: &str) -> Vec<u8> {
    let mut o = Vec::with_capacity(6 + text.len().min(512));
    push_ede(&mut o, code, text);
    o
}

/// Appends an EDNS option (code, length and data, in wire form) to the OPT record of a
/// response, when the OPT record is its last record (as in every response adox builds);
/// false, and nothing changed, otherwise.
pub fn append_option(msg: &mut Vec<u8>, option: &[u8]) -> bool {
    let Some(opt_at) = last_record(msg) else { return false };
    if u16_at(msg, opt_at + 1) != Some(TYPE_OPT) || msg.get(opt_at) != Some(&0) {
        return false;
    }
    let rdlen_at = opt_at + 9;
    let Some(rdlen) = u16_at(msg, rdlen_at) else { return false };
    let Some(new_len) = usize::from(rdlen).checked_add(option.len()).and_then(|n| u16::try_from(n).ok()) else {
        return false;
    };
    // A DNS message is at most 65,535 octets (TCP's length prefix).
    if msg.len() + option.len() > usize::from(u16::MAX) {
        return false;
    }
    msg[rdlen_at..rdlen_at + 2].copy_from_slice(&new_len.to_be_bytes());
    msg.extend_from_slice(option);
    true
}

/// Where the last resource record of a message starts, if the message parses to its end.
fn last_record(msg: &[u8]) -> Option<usize> {
    let qd = u16_at(msg, 4)?;
    let rr = u32::from(u16_at(msg, 6)?) + u32::from(u16_at(msg, 8)?) + u32::from(u16_at(msg, 10)?);
    let mut at = HEADER_LEN;
    for _ in 0..qd {
        at = skip_name(msg, at)? + 4;
    }
    let mut last = None;
    for _ in 0..rr {
        last = Some(at);
        let end = skip_name(msg, at)?;
        let rdlen = usize::from(u16_at(msg, end + 8)?);
        at = end + 10 + rdlen;
    }
    (at == msg.len()).then_some(last?)
}

fn bump_count(buf: &mut [u8], at: usize) {
    let n = u16::from_be_bytes([buf[at], buf[at + 1]]).saturating_add(1);
    buf[at..at + 2].copy_from_slice(&n.to_be_bytes());
}

/// Builds a response that carries only the header and (when parsed) the question: used for
/// REFUSED, FORMERR, NOTIMP, SERVFAIL and truncated answers. `query_wire` is the client's
/// message; `question_end` is where its question ends (HEADER_LEN when it had none usable).
pub fn header_only_response(
    out: &mut Vec<u8>,
    query_wire: &[u8],
    question_end: usize,
    rcode: u8,
    extra_flags: u16,
    edns: Option<&ResponseEdns<'_>>,
) {
    out.clear();
    let keep = question_end.min(query_wire.len()).max(HEADER_LEN);
    out.extend_from_slice(&query_wire[..keep.min(query_wire.len())]);
    out.resize(keep, 0);
    let req_flags = u16::from_be_bytes([out[2], out[3]]);
    // Keep opcode, RD and CD from the request; set QR and RA.
    let flags =
        (req_flags & (0x7800 | flag::RD | flag::CD)) | flag::QR | flag::RA | extra_flags | u16::from(rcode & 0xF);
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    let qd: u16 = if question_end > HEADER_LEN { 1 } else { 0 };
    out[4..6].copy_from_slice(&qd.to_be_bytes());
    out[6..12].fill(0);
    if let Some(e) = edns {
        append_opt(out, e);
    }
}

/// Lowercases a wire-form name into `out`, returning the length. The name must come from
/// `parse_query`, so it is well formed and at most 255 octets.
pub fn lowercase_name(name: &[u8], out: &mut [u8; MAX_NAME_LEN]) -> usize {
    let n = name.len().min(MAX_NAME_LEN);
    for (d, s) in out.iter_mut().zip(&name[..n]) {
        *d = s.to_ascii_lowercase();
    }
    n
}

/// Skips a possibly compressed name in a message; returns the offset after it.
pub fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(at + 1),
            0x00 => at += 1 + usize::from(len),
            0xC0 => return if at + 2 <= msg.len() { Some(at + 2) } else { None },
            _ => return None,
        }
    }
}

/// Offsets of the TTL field of every resource record in a message, OPT excluded (its TTL
/// field holds flags). Used to count TTLs down when answering from stored wire bytes.
pub fn ttl_offsets(msg: &[u8]) -> Option<Vec<u16>> {
    if msg.len() < HEADER_LEN || msg.len() > usize::from(u16::MAX) {
        return None;
    }
    let qd = u16_at(msg, 4)?;
    let rr = u32::from(u16_at(msg, 6)?) + u32::from(u16_at(msg, 8)?) + u32::from(u16_at(msg, 10)?);
    let mut at = HEADER_LEN;
    for _ in 0..qd {
        at = skip_name(msg, at)? + 4;
    }
    let mut out = Vec::with_capacity(rr as usize);
    for _ in 0..rr {
        at = skip_name(msg, at)?;
        let rtype = u16_at(msg, at)?;
        let rdlen = usize::from(u16_at(msg, at + 8)?);
        if rtype != TYPE_OPT {
            out.push(u16::try_from(at + 4).ok()?);
        }
        at += 10 + rdlen;
        if at > msg.len() {
            return None;
        }
    }
    Some(out)
}

/// Record types kept as raw RDATA, each mapped to a private-use type (RFC 6895) for
/// parsing and back after: SVCB, HTTPS and TLSA, which adox reads itself (hickory would
/// reject a whole message for one record it cannot parse, where RFC 9460 asks to skip
/// only that record); CAA and CERT, which hickory does not write back octet for octet
/// (a DNSSEC signature is over the original octets).
pub const RAW_TYPES: [(u16, u16); 5] = [(64, 65_400), (65, 65_401), (52, 65_402), (257, 65_403), (37, 65_404)];

/// Offsets of the TYPE field of every record (not the question) whose type is one of
/// `RAW_TYPES`; empty (and no allocation) when there is none or the message is too broken
/// to walk.
pub fn raw_type_offsets(msg: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    if msg.len() < HEADER_LEN {
        return out;
    }
    let count = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]) as usize;
    let (qd, rr) = (count(4), count(6) + count(8) + count(10));
    let mut at = HEADER_LEN;
    for _ in 0..qd {
        let Some(end) = skip_name(msg, at) else { return out };
        at = end + 4;
    }
    for _ in 0..rr {
        let Some(end) = skip_name(msg, at) else { return out };
        if end + 10 > msg.len() {
            return out;
        }
        let rtype = u16::from_be_bytes([msg[end], msg[end + 1]]);
        if RAW_TYPES.iter().any(|(t, _)| *t == rtype) {
            out.push(end);
        }
        at = end + 10 + usize::from(u16::from_be_bytes([msg[end + 8], msg[end + 9]]));
    }
    out
}

/// A copy of `msg` with every `RAW_TYPES` record's type replaced by its private-use
/// stand-in, so the RDATA survives parsing as opaque bytes; `None` when there is none.
pub fn hide_raw_types(msg: &[u8]) -> Option<Vec<u8>> {
    let offsets = raw_type_offsets(msg);
    if offsets.is_empty() {
        return None;
    }
    let mut out = msg.to_vec();
    for at in offsets {
        let rtype = u16::from_be_bytes([out[at], out[at + 1]]);
        if let Some((_, private)) = RAW_TYPES.iter().find(|(t, _)| *t == rtype) {
            out[at..at + 2].copy_from_slice(&private.to_be_bytes());
        }
    }
    Some(out)
}

/// The real type behind a private-use stand-in of [`hide_raw_types`].
pub fn raw_type_of(private: u16) -> Option<u16> {
    RAW_TYPES.iter().find(|(_, p)| *p == private).map(|(t, _)| *t)
}

/// The private-use stand-in of one of `RAW_TYPES`.
pub fn raw_stand_in(rtype: u16) -> Option<u16> {
    RAW_TYPES.iter().find(|(t, _)| *t == rtype).map(|(_, p)| *p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], qtype: u16, opt: Option<&[u8]>) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(opt.is_some())];
        q.extend_from_slice(name);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        if let Some(o) = opt {
            q.extend_from_slice(o);
        }
        q
    }

    #[test]
    fn parses_plain_query() {
        let q = query(b"\x03www\x05alpha\x03lab\x00", 1, None);
        let p = parse_query(&q).unwrap();
        assert_eq!(p.id, 0x1234);
        assert!(p.rd());
        assert_eq!(&q[p.qname.clone()], b"\x03www\x05alpha\x03lab\x00");
        assert_eq!(p.qtype, 1);
        assert_eq!(p.edns, None);
        assert_eq!(p.udp_limit(1232), 512);
    }

    #[test]
    fn parses_edns_with_do_and_cookie() {
        let opt = [0, 0, 41, 0x10, 0x00, 0, 0, 0x80, 0, 0, 12, 0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
        let q = query(b"\x00", 2, Some(&opt));
        let p = parse_query(&q).unwrap();
        let e = p.edns.unwrap();
        assert_eq!(e.udp_size, 4096);
        assert!(e.dnssec_ok);
        let (at, len) = e.cookie.unwrap();
        assert_eq!(&q[usize::from(at)..usize::from(at) + usize::from(len)], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(p.udp_limit(1232), 1232);
    }

    /// RFC 7873 section 5.2.2: a COOKIE option of a length other than 8 or 16 to 40, or
    /// two of them, is FORMERR.
    #[test]
    fn malformed_cookies_are_formerr() {
        let with = |lens: &[usize]| {
            let mut rdata = Vec::new();
            for &l in lens {
                rdata.extend_from_slice(&[0, 10, 0, l as u8]);
                rdata.extend(std::iter::repeat_n(7u8, l));
            }
            let mut opt = vec![0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0];
            opt.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            opt.extend_from_slice(&rdata);
            parse_query(&query(b"\x00", 1, Some(&opt)))
        };
        for ok in [8, 16, 40] {
            assert!(with(&[ok]).is_ok(), "{ok}");
        }
        for bad in [0, 7, 9, 15, 41] {
            assert_eq!(with(&[bad]).unwrap_err(), QueryError::FormErr, "{bad}");
        }
        assert_eq!(with(&[8, 8]).unwrap_err(), QueryError::FormErr);
    }

    #[test]
    fn an_option_goes_into_the_responses_opt_record() {
        let mut out = Vec::new();
        let q = query(b"\x01a\x00", 1, None);
        let edns = ResponseEdns { udp_size: 1232, dnssec_ok: false, rcode_high: 0, ede: Some((Ede::Prohibited, "x")) };
        header_only_response(&mut out, &q, q.len(), rcode::REFUSED, 0, Some(&edns));
        let before = out.len();
        assert!(append_option(&mut out, &[0, 10, 0, 2, 0xAB, 0xCD]));
        assert_eq!(out.len(), before + 6);
        let m = hickory_proto::op::Message::from_vec(&out).unwrap();
        let opt = m.edns.as_ref().unwrap();
        assert!(opt.options().options.iter().any(|(c, _)| u16::from(*c) == 10));
        assert!(opt.options().options.iter().any(|(c, _)| u16::from(*c) == 15), "the EDE is kept");
        // No OPT record: nothing changes.
        header_only_response(&mut out, &q, q.len(), rcode::REFUSED, 0, None);
        let plain = out.clone();
        assert!(!append_option(&mut out, &[0, 10, 0, 0]));
        assert_eq!(out, plain);
    }

    #[test]
    fn rejects_bad_queries_with_the_right_kind() {
        assert_eq!(parse_query(&[0; 5]).unwrap_err(), QueryError::Drop);
        let mut r = query(b"\x00", 1, None);
        r[2] |= 0x80;
        assert_eq!(parse_query(&r).unwrap_err(), QueryError::Drop);
        let mut n = query(b"\x00", 1, None);
        n[2] |= 0x10; // opcode 2
        assert_eq!(parse_query(&n).unwrap_err(), QueryError::NotImp);
        // compression pointer in the question
        assert_eq!(parse_query(&query(b"\xc0\x0c", 1, None)).unwrap_err(), QueryError::FormErr);
        // label running past the end
        let mut t = query(b"\x3fabc", 1, None);
        t.truncate(16);
        assert_eq!(parse_query(&t).unwrap_err(), QueryError::FormErr);
        // trailing garbage
        let mut g = query(b"\x00", 1, None);
        g.push(0);
        assert_eq!(parse_query(&g).unwrap_err(), QueryError::FormErr);
        // EDNS version 1
        let opt = [0, 0, 41, 0x04, 0xd0, 0, 1, 0, 0, 0, 0];
        assert_eq!(parse_query(&query(b"\x00", 1, Some(&opt))).unwrap_err(), QueryError::BadVers);
        // name longer than 255 octets
        let mut long = Vec::new();
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.push(0);
        assert_eq!(parse_query(&query(&long, 1, None)).unwrap_err(), QueryError::FormErr);
    }

    #[test]
    fn header_only_response_sets_flags_and_ede() {
        let q = query(b"\x01a\x00", 1, None);
        let p = parse_query(&q).unwrap();
        let mut out = Vec::new();
        let edns = ResponseEdns { udp_size: 1232, dnssec_ok: false, rcode_high: 0, ede: Some((Ede::Prohibited, "x")) };
        header_only_response(&mut out, &q, p.question_end, rcode::REFUSED, 0, Some(&edns));
        let flags = u16::from_be_bytes([out[2], out[3]]);
        assert_eq!(flags & 0xF, 5);
        assert!(flags & flag::QR != 0 && flags & flag::RA != 0 && flags & flag::RD != 0);
        assert_eq!(&out[4..12], &[0, 1, 0, 0, 0, 0, 0, 1]);
        // OPT follows the question; its option is EDE 18 with text "x".
        let opt = &out[p.question_end..];
        assert_eq!(&opt[opt.len() - 7..], &[0, 15, 0, 3, 0, 18, b'x']);
    }

    #[test]
    fn raw_types_are_hidden_in_records_only() {
        // question SVCB, one SVCB answer with a compressed owner
        let mut m = query(b"\x04_dns\x01a\x00", 64, None);
        m[2] = 0x81;
        m[7] = 1;
        m.extend_from_slice(&[0xc0, 12, 0, 64, 0, 1, 0, 0, 0, 60, 0, 3, 0, 1, 0]);
        let m = hide_raw_types(&m).unwrap();
        let qt = p_qtype(&m);
        assert_eq!(qt, 64, "the question keeps its type");
        let rr_type = u16::from_be_bytes([m[m.len() - 13], m[m.len() - 12]]);
        assert_eq!(raw_type_of(rr_type), Some(64));
        assert!(hide_raw_types(&[0u8; 5]).is_none());
    }

    fn p_qtype(m: &[u8]) -> u16 {
        let end = skip_name(m, HEADER_LEN).unwrap();
        u16::from_be_bytes([m[end], m[end + 1]])
    }

    #[test]
    fn ttl_offsets_skip_opt() {
        // header + question + one A record (compressed owner) + OPT
        let mut m = query(b"\x01a\x00", 1, None);
        m[2] = 0x81;
        m[7] = 1;
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 1, 2, 3, 4]);
        append_opt(&mut m, &ResponseEdns { udp_size: 1232, dnssec_ok: false, rcode_high: 0, ede: None });
        let offs = ttl_offsets(&m).unwrap();
        assert_eq!(offs.len(), 1);
        let o = usize::from(offs[0]);
        assert_eq!(&m[o..o + 4], &[0, 0, 0x0e, 0x10]);
        assert!(ttl_offsets(&m[..m.len() - 3]).is_none());
    }
}
