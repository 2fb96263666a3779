//! The dnstap protobuf schema (dnstap.proto), written by hand for the few fields adox
//! sends: `Dnstap { identity = 1, version = 2, message = 14, type = 15 (MESSAGE) }` and
//! `Message { type = 1, socket_family = 2, socket_protocol = 3, query_address = 4,
//! response_address = 5, query_port = 6, response_port = 7, query_time_sec = 8,
//! query_time_nsec = 9 (fixed32), query_message = 10, response_time_sec = 12,
//! response_time_nsec = 13 (fixed32), response_message = 14 }`. Each frame is one
//! Frame Streams data frame: a 32-bit big-endian length, then the message.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use super::Event;

/// `Message.Type`, the values adox sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// RESOLVER_QUERY (3): a query adox sent an authoritative server.
    ResolverQuery = 3,
    /// RESOLVER_RESPONSE (4): its reply.
    ResolverResponse = 4,
    /// CLIENT_QUERY (5): a query a client sent adox.
    ClientQuery = 5,
    /// CLIENT_RESPONSE (6): adox's answer to it.
    ClientResponse = 6,
}

/// `SocketProtocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// UDP (1).
    Udp = 1,
    /// TCP (2).
    Tcp = 2,
    /// DNS over TLS (3).
    Dot = 3,
    /// DNS over HTTPS (4).
    Doh = 4,
    /// DNS over QUIC (7).
    Doq = 7,
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
    key(out, field, 0);
    varint(out, v);
}

fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn fixed32(out: &mut Vec<u8>, field: u32, v: u32) {
    key(out, field, 5);
    out.extend_from_slice(&v.to_le_bytes());
}

fn time(out: &mut Vec<u8>, sec_field: u32, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    uint(out, sec_field, d.as_secs());
    fixed32(out, sec_field + 1, d.subsec_nanos());
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a.to_canonical() {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// The `Message` of `e`.
fn message(e: &Event<'_>) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + e.query.map_or(0, <[u8]>::len) + e.response.map_or(0, <[u8]>::len));
    uint(&mut m, 1, e.kind as u64);
    if let Some(a) = e.query_addr.or(e.response_addr) {
        uint(&mut m, 2, if a.ip().to_canonical().is_ipv4() { 1 } else { 2 });
    }
    uint(&mut m, 3, e.protocol as u64);
    if let Some(a) = e.query_addr {
        bytes(&mut m, 4, &addr_bytes(a.ip()));
    }
    if let Some(a) = e.response_addr {
        bytes(&mut m, 5, &addr_bytes(a.ip()));
    }
    if let Some(a) = e.query_addr {
        uint(&mut m, 6, u64::from(a.port()));
    }
    if let Some(a) = e.response_addr {
        uint(&mut m, 7, u64::from(a.port()));
    }
    if let Some(t) = e.query_time {
        time(&mut m, 8, t);
    }
    if let Some(q) = e.query {
        bytes(&mut m, 10, q);
    }
    if let Some(t) = e.response_time {
        time(&mut m, 12, t);
    }
    if let Some(r) = e.response {
        bytes(&mut m, 14, r);
    }
    m
}

/// The Frame Streams data frame of one `Dnstap` message.
pub(super) fn frame(identity: &[u8], version: &[u8], e: &Event<'_>) -> Vec<u8> {
    let m = message(e);
    let mut d = Vec::with_capacity(m.len() + identity.len() + version.len() + 16);
    d.extend_from_slice(&[0; 4]);
    if !identity.is_empty() {
        bytes(&mut d, 1, identity);
    }
    bytes(&mut d, 2, version);
    bytes(&mut d, 14, &m);
    uint(&mut d, 15, 1);
    let len = (d.len() - 4) as u32;
    d[..4].copy_from_slice(&len.to_be_bytes());
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_a_client_query_frame() {
        let mut v = Vec::new();
        varint(&mut v, 300);
        assert_eq!(v, [0xAC, 0x02]);
        let t = UNIX_EPOCH + std::time::Duration::new(1_609_664_398, 355_231_260);
        let e = Event {
            kind: Kind::ClientQuery,
            protocol: Protocol::Udp,
            query_addr: Some("10.0.0.210:55142".parse().unwrap()),
            response_addr: Some("10.0.0.210:53".parse().unwrap()),
            query_time: Some(t),
            response_time: None,
            query: Some(&[0xAB; 3]),
            response: None,
        };
        let f = frame(b"dnstappb", b"dnstappb 0.0.0", &e);
        let len = u32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize;
        assert_eq!(len, f.len() - 4);
        let d = &f[4..];
        // identity (1), version (2), then the message (14) and type (15) = MESSAGE.
        assert_eq!(&d[..10], b"\x0a\x08dnstappb");
        assert_eq!(&d[10..26], b"\x12\x0ednstappb 0.0.0");
        assert_eq!(d[26], 14 << 3 | 2);
        assert_eq!(&d[d.len() - 2..], &[15 << 3, 1]);
        let m = &d[28..d.len() - 2];
        assert_eq!(usize::from(d[27]), m.len());
        // type 5, family INET, protocol UDP, addresses, ports 55142 and 53, the time.
        assert_eq!(&m[..6], &[8, 5, 16, 1, 24, 1]);
        assert_eq!(&m[6..12], &[34, 4, 10, 0, 0, 210]);
        assert_eq!(&m[12..18], &[42, 4, 10, 0, 0, 210]);
        assert_eq!(&m[18..22], &[48, 0xE6, 0xAE, 0x03]);
        assert_eq!(&m[22..24], &[56, 53]);
        assert_eq!(&m[24..30], &[64, 0x8E, 0x8F, 0xC6, 0xFF, 0x05]);
        assert_eq!(&m[30..35], &[77, 0x1C, 0x66, 0x2C, 0x15]);
        assert_eq!(&m[35..], &[82, 3, 0xAB, 0xAB, 0xAB]);
    }
}
