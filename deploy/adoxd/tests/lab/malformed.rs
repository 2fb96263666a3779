//! Malformed queries get FORMERR, NOTIMP or BADVERS as the RFCs say, responses and runts
//! are dropped, and a flood of garbage neither crashes nor wedges a worker.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::{Adoxd, Ask, udp_exchange};

fn header(flags: [u8; 2], counts: [u16; 4]) -> Vec<u8> {
    let mut h = vec![0x12, 0x34, flags[0], flags[1]];
    for c in counts {
        h.extend_from_slice(&c.to_be_bytes());
    }
    h
}

#[test]
fn formerr_notimp_badvers_and_drops() {
    let d = Adoxd::lab(&[]);
    let wait = Duration::from_secs(2);
    // Two questions: FORMERR.
    let mut two = header([1, 0], [2, 0, 0, 0]);
    two.extend_from_slice(b"\x01a\x00\x00\x01\x00\x01\x01b\x00\x00\x01\x00\x01");
    let r = udp_exchange(d.addr, &two, wait).expect("FORMERR answer");
    assert_eq!(r[3] & 0x0F, 1);
    assert_eq!(&r[0..2], &[0x12, 0x34]);
    assert!(r[2] & 0x80 != 0, "QR set");
    // A label running past the end: FORMERR.
    let mut cut = header([1, 0], [1, 0, 0, 0]);
    cut.extend_from_slice(b"\x3fabc");
    assert_eq!(udp_exchange(d.addr, &cut, wait).expect("answer")[3] & 0x0F, 1);
    // Opcode STATUS (2): NOTIMP.
    let mut status = header([0x10, 0], [1, 0, 0, 0]);
    status.extend_from_slice(b"\x01a\x00\x00\x01\x00\x01");
    assert_eq!(udp_exchange(d.addr, &status, wait).expect("answer")[3] & 0x0F, 4);
    // EDNS version 1: BADVERS (extended RCODE 16: OPT TTL high octet 1).
    let mut v1 = header([1, 0], [1, 0, 0, 1]);
    v1.extend_from_slice(b"\x01a\x00\x00\x01\x00\x01");
    v1.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 1, 0, 0, 0, 0]);
    let r = udp_exchange(d.addr, &v1, wait).expect("BADVERS answer");
    assert_eq!(r[3] & 0x0F, 0);
    let opt = &r[r.len() - 11..];
    assert_eq!((opt[2], opt[5]), (41, 1), "OPT with extended RCODE high bits 1");
    // A response (QR set) and a runt: dropped, no answer.
    let mut resp = header([0x81, 0x80], [1, 0, 0, 0]);
    resp.extend_from_slice(b"\x01a\x00\x00\x01\x00\x01");
    assert!(udp_exchange(d.addr, &resp, Duration::from_millis(300)).is_none());
    assert!(udp_exchange(d.addr, &[1, 2, 3], Duration::from_millis(300)).is_none());
    // Zone transfer over UDP: REFUSED.
    let r = d.query("alpha.lab.", RecordType::AXFR);
    assert_eq!(r.rcode(), ResponseCode::Refused);
}

#[test]
fn garbage_flood_does_not_crash_or_wedge() {
    let mut d = Adoxd::lab(&[]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // A deterministic pseudo-random stream of malformed and semi-valid messages.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let valid = Ask::new("www.alpha.lab.", RecordType::A).wire();
    for i in 0..20_000 {
        let mut m = valid.clone();
        match i % 4 {
            0 => m.truncate((next() % m.len() as u64) as usize),
            1 => {
                for _ in 0..4 {
                    let at = (next() % m.len() as u64) as usize;
                    m[at] = next() as u8;
                }
            }
            2 => m = (0..(next() % 600) as usize).map(|_| next() as u8).collect(),
            _ => m.extend((0..(next() % 40) as usize).map(|_| next() as u8)),
        }
        let _ = sock.send_to(&m, d.addr);
    }
    // Over TCP too: a bogus length prefix and junk, then close.
    let mut t = std::net::TcpStream::connect(d.addr).unwrap();
    use std::io::Write;
    let _ = t.write_all(&[0x00, 0x05, 1, 2, 3, 4, 5, 0xff, 0xff, 9, 9]);
    drop(t);
    assert!(d.alive(), "adoxd died; log:\n{}", d.log());
    assert_eq!(d.query("www.alpha.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.10"]);
    assert_eq!(d.ask_tcp(&Ask::new("www.beta.lab.", RecordType::A)).rdata(RecordType::A), ["192.0.2.20"]);
}
