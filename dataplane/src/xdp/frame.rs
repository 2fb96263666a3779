//! Ethernet frames on the AF_XDP path: the UDP datagram a frame carries (checked as
//! strictly as the XDP program that redirected it, and then some: nothing here trusts the
//! wire), and the same buffer turned into the answer's frame, with addresses and ports
//! swapped and the IP and UDP lengths and checksums made anew. Plain safe code with no
//! dependency on the `xdp` feature, so that its tests run in every build.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const UDP_LEN: usize = 8;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_UDP: u8 = 17;
/// TTL and hop limit of an answer (what Linux uses by default).
const HOPS: u8 = 64;

/// The UDP datagram in a frame: who sent it, to which of our addresses, and where its
/// payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Datagram {
    /// The client.
    pub peer: SocketAddr,
    /// The address and port it was sent to.
    pub local: SocketAddr,
    /// Ethernet, IP and UDP headers: where the DNS message starts.
    pub payload_at: usize,
    /// Length of the DNS message.
    pub payload_len: usize,
}

impl Datagram {
    /// The DNS message in `frame`.
    pub(crate) fn payload<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        &frame[self.payload_at..self.payload_at + self.payload_len]
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The UDP datagram `frame` carries, if it is one this path answers: IPv4 without options
/// or fragments, or IPv6 with UDP as the first next header, lengths that agree with each
/// other and fit the frame (an Ethernet frame may be padded past the IP packet), from a
/// source a reply can go to.
pub(crate) fn parse(frame: &[u8]) -> Option<Datagram> {
    if frame.len() < ETH_LEN {
        return None;
    }
    let ip = &frame[ETH_LEN..];
    let (peer, local, ip_len, udp_at) = match be16(frame, 12) {
        ETH_P_IP => {
            if ip.len() < IPV4_LEN || ip[0] != 0x45 || ip[9] != IPPROTO_UDP || be16(ip, 6) & 0x3fff != 0 {
                return None;
            }
            let total = usize::from(be16(ip, 2));
            if total < IPV4_LEN + UDP_LEN || total > ip.len() {
                return None;
            }
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            if martian_v4(src) || martian_v4(dst) || src == dst {
                return None;
            }
            (IpAddr::V4(src), IpAddr::V4(dst), total, ETH_LEN + IPV4_LEN)
        }
        ETH_P_IPV6 => {
            if ip.len() < IPV6_LEN || ip[0] >> 4 != 6 || ip[6] != IPPROTO_UDP {
                return None;
            }
            let total = IPV6_LEN + usize::from(be16(ip, 4));
            if total < IPV6_LEN + UDP_LEN || total > ip.len() {
                return None;
            }
            let octets = |at: usize| -> [u8; 16] {
                let mut a = [0; 16];
                a.copy_from_slice(&ip[at..at + 16]);
                a
            };
            let (src, dst) = (Ipv6Addr::from(octets(8)), Ipv6Addr::from(octets(24)));
            if martian_v6(src) || martian_v6(dst) || src == dst {
                return None;
            }
            (IpAddr::V6(src), IpAddr::V6(dst), total, ETH_LEN + IPV6_LEN)
        }
        _ => return None,
    };
    let udp = &frame[udp_at..ETH_LEN + ip_len];
    let udp_len = usize::from(be16(udp, 4));
    if udp_len < UDP_LEN || udp_len > udp.len() {
        return None;
    }
    let (sport, dport) = (be16(udp, 0), be16(udp, 2));
    if sport == 0 {
        return None;
    }
    Some(Datagram {
        peer: SocketAddr::new(peer, sport),
        local: SocketAddr::new(local, dport),
        payload_at: udp_at + UDP_LEN,
        payload_len: udp_len - UDP_LEN,
    })
}

/// An IPv4 address no datagram from the wire may carry as source or (here, where only
/// unicast service addresses are served) destination: the kernel drops such "martians"
/// before any socket sees them, and so must this path, which bypasses it: loopback
/// (127/8: the default ACL allows it), "this network" (0/8), multicast, and 240/4 with the
/// limited broadcast.
fn martian_v4(a: Ipv4Addr) -> bool {
    let first = a.octets()[0];
    first == 127 || first == 0 || a.is_multicast() || first >= 240
}

/// The same for IPv6: loopback, unspecified, multicast, and IPv4-mapped addresses (an
/// IPv4 address in disguise, which the ACL would see as the IPv4 one).
fn martian_v6(a: Ipv6Addr) -> bool {
    a.is_loopback() || a.is_unspecified() || a.is_multicast() || a.to_ipv4_mapped().is_some()
}

/// One's complement sum of `data` as big-endian 16-bit words (an odd last octet padded
/// with zero), added to `sum`; not yet folded.
fn sum16(data: &[u8], mut sum: u64) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    #[allow(clippy::cast_possible_truncation, reason = "folded to 16 bits above")]
    let s = sum as u16;
    !s
}

/// Turns the query frame `buf[..]` described by `d` into the frame of the answer `dns`,
/// in place: Ethernet addresses, IP addresses and UDP ports swapped, the IP and UDP
/// lengths set, the IPv4 header checksum and the UDP checksum computed in full (it is
/// mandatory over IPv6, and a receiver's stack checks it). `buf` is the frame's whole
/// buffer. The answer's frame length, or `None` when the answer does not fit (it then goes
/// out through the socket).
pub(crate) fn answer_in_place(buf: &mut [u8], d: &Datagram, dns: &[u8]) -> Option<usize> {
    let udp_at = d.payload_at - UDP_LEN;
    let frame_len = d.payload_at + dns.len();
    // Room for the IPv4 header in a 16-bit total length too.
    let udp_len = u16::try_from(IPV4_LEN + UDP_LEN + dns.len()).ok()? - IPV4_LEN as u16;
    if frame_len > buf.len() {
        return None;
    }
    let (dst_mac, src_mac) = buf[..12].split_at_mut(6);
    dst_mac.swap_with_slice(src_mac);
    buf[d.payload_at..frame_len].copy_from_slice(dns);
    // The UDP checksum's pseudo-header: the two addresses (their sum does not depend on
    // their order), the protocol and the UDP length.
    let pseudo = match d.peer {
        SocketAddr::V4(_) => {
            let ip = &mut buf[ETH_LEN..udp_at];
            let total = IPV4_LEN as u16 + udp_len;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            // Not the query's DSCP and ECN mark (a CE would be reflected); no fragment id,
            // DF set (the answer fits the link's MTU, checked by the caller).
            ip[1] = 0;
            ip[4..8].copy_from_slice(&[0, 0, 0x40, 0]);
            ip[8] = HOPS;
            let (src, dst) = ip[12..20].split_at_mut(4);
            src.swap_with_slice(dst);
            ip[10..12].fill(0);
            let check = fold(sum16(ip, 0));
            ip[10..12].copy_from_slice(&check.to_be_bytes());
            sum16(&ip[12..20], u64::from(IPPROTO_UDP) + u64::from(udp_len))
        }
        SocketAddr::V6(_) => {
            let ip = &mut buf[ETH_LEN..udp_at];
            ip[4..6].copy_from_slice(&udp_len.to_be_bytes());
            // Not the query's traffic class (DSCP and ECN); the flow label stays.
            ip[0] &= 0xf0;
            ip[1] &= 0x0f;
            ip[7] = HOPS;
            let (src, dst) = ip[8..40].split_at_mut(16);
            src.swap_with_slice(dst);
            sum16(&ip[8..40], u64::from(IPPROTO_UDP) + u64::from(udp_len))
        }
    };
    let udp = &mut buf[udp_at..frame_len];
    let (sport, dport) = udp[..4].split_at_mut(2);
    sport.swap_with_slice(dport);
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].fill(0);
    // A computed zero is sent as all ones (RFC 768; zero means "none" over IPv4).
    let check = match fold(sum16(udp, pseudo)) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&check.to_be_bytes());
    Some(frame_len)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const SERVER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

    /// A frame as a client's stack would send it: `ip` is 4 or 6; the UDP checksum left
    /// zero, as some senders do over IPv4 (it is not checked on the way in).
    fn query_frame(client: SocketAddr, server: SocketAddr, dns: &[u8], pad: usize) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&SERVER_MAC);
        f.extend_from_slice(&CLIENT_MAC);
        let udp_len = u16::try_from(8 + dns.len()).unwrap();
        match (client.ip(), server.ip()) {
            (IpAddr::V4(c), IpAddr::V4(s)) => {
                f.extend_from_slice(&ETH_P_IP.to_be_bytes());
                f.extend_from_slice(&[0x45, 0]);
                f.extend_from_slice(&(20 + udp_len).to_be_bytes());
                f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, 17, 0, 0]);
                f.extend_from_slice(&c.octets());
                f.extend_from_slice(&s.octets());
            }
            (IpAddr::V6(c), IpAddr::V6(s)) => {
                f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&udp_len.to_be_bytes());
                f.extend_from_slice(&[17, 64]);
                f.extend_from_slice(&c.octets());
                f.extend_from_slice(&s.octets());
            }
            _ => unreachable!(),
        }
        f.extend_from_slice(&client.port().to_be_bytes());
        f.extend_from_slice(&server.port().to_be_bytes());
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(dns);
        f.resize(f.len() + pad, 0);
        f
    }

    /// The UDP checksum of a frame recomputed the way a receiving stack checks it: the
    /// sum over pseudo-header, header and data, checksum included, is all ones.
    fn udp_checks_out(frame: &[u8]) -> bool {
        let d = parse(frame).unwrap();
        let udp = &frame[d.payload_at - 8..d.payload_at + d.payload_len];
        let (addrs, proto_at) = match d.peer {
            SocketAddr::V4(_) => (&frame[26..34], 23),
            SocketAddr::V6(_) => (&frame[22..54], 20),
        };
        let mut words: Vec<u8> = addrs.to_vec();
        words.extend_from_slice(&[0, frame[proto_at]]);
        words.extend_from_slice(&u16::try_from(udp.len()).unwrap().to_be_bytes());
        words.extend_from_slice(udp);
        if words.len() % 2 == 1 {
            words.push(0);
        }
        let mut sum: u32 = words.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum == 0xffff
    }

    #[test]
    fn a_query_frame_gives_its_datagram_and_its_answer_frame_goes_back_with_good_checksums() {
        for (client, server) in [
            ("192.0.2.7:40000".parse().unwrap(), "198.51.100.53:53".parse().unwrap()),
            ("[2001:db8::7]:40000".parse().unwrap(), "[2001:db8::53]:53".parse().unwrap()),
        ] {
            let query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01";
            // Padding past the IP packet (short frames are padded to 60 octets) is not payload.
            let mut frame = query_frame(client, server, query, 5);
            // A CE mark on the query (IPv4 TOS, IPv6 traffic class): not on the answer.
            if client.is_ipv4() {
                frame[15] |= 0x03;
            } else {
                frame[15] |= 0x30;
            }
            let d = parse(&frame).unwrap();
            assert_eq!((d.peer, d.local), (client, server));
            assert_eq!(d.payload(&frame), query);
            // Odd length, to cover the padded last word of the checksum.
            let answer: Vec<u8> = (0..301u16).map(|i| (i % 251) as u8).collect();
            frame.resize(2048, 0xee);
            let len = answer_in_place(&mut frame, &d, &answer).unwrap();
            let out = &frame[..len];
            assert_eq!((&out[..6], &out[6..12]), (&CLIENT_MAC[..], &SERVER_MAC[..]));
            let back = parse(out).unwrap();
            assert_eq!((back.peer, back.local), (server, client), "addresses and ports swapped");
            assert_eq!(back.payload(out), &answer[..]);
            assert!(udp_checks_out(out), "UDP checksum of {client}");
            if client.is_ipv4() {
                assert_eq!(out[15], 0, "TOS cleared");
            } else {
                assert_eq!((out[14] & 0x0f, out[15] & 0xf0), (0, 0), "traffic class cleared");
            }
            if client.is_ipv4() {
                let mut sum: u32 = out[14..34].chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
                while sum > 0xffff {
                    sum = (sum & 0xffff) + (sum >> 16);
                }
                assert_eq!(sum, 0xffff, "IPv4 header checksum");
                assert_eq!(be16(out, 16), 20 + 8 + 301);
            }
        }
    }

    #[test]
    fn frames_this_path_does_not_answer_are_refused_and_an_answer_too_big_is_left_to_the_socket() {
        let client: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let server: SocketAddr = "198.51.100.53:53".parse().unwrap();
        let good = query_frame(client, server, b"0123456789ab", 0);
        assert!(parse(&good).is_some());
        let bad = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut x = good.clone();
            f(&mut x);
            parse(&x)
        };
        assert_eq!(bad(&|f| f.truncate(13)), None, "short Ethernet header");
        assert_eq!(bad(&|f| f[12] = 0x81), None, "VLAN-tagged or other ethertype");
        assert_eq!(bad(&|f| f[14] = 0x46), None, "IPv4 options");
        assert_eq!(bad(&|f| f[23] = 6), None, "TCP");
        assert_eq!(bad(&|f| f[20] = 0x20), None, "more fragments");
        assert_eq!(bad(&|f| f[21] = 0x01), None, "a fragment's offset");
        assert_eq!(bad(&|f| f[16..18].copy_from_slice(&2000u16.to_be_bytes())), None, "IP length past the frame");
        assert_eq!(bad(&|f| f[38..40].copy_from_slice(&7u16.to_be_bytes())), None, "UDP length under its header");
        assert_eq!(bad(&|f| f[38..40].copy_from_slice(&100u16.to_be_bytes())), None, "UDP length past IP");
        assert_eq!(bad(&|f| f[34..36].fill(0)), None, "source port zero");
        assert_eq!(bad(&|f| f[26..30].copy_from_slice(&[255; 4])), None, "broadcast source");
        assert_eq!(bad(&|f| f[26..30].copy_from_slice(&[127, 0, 0, 1])), None, "loopback source (the ACL allows it)");
        assert_eq!(bad(&|f| f[26..30].copy_from_slice(&[0, 1, 2, 3])), None, "this-network source");
        assert_eq!(bad(&|f| f[26..30].copy_from_slice(&[198, 51, 100, 53])), None, "our own address as source");
        assert_eq!(bad(&|f| f[30..34].copy_from_slice(&[224, 0, 0, 251])), None, "multicast destination");
        let v6 = query_frame("[2001:db8::7]:1".parse().unwrap(), "[2001:db8::53]:53".parse().unwrap(), b"x", 0);
        let mut ext = v6.clone();
        ext[20] = 0; // hop-by-hop options first
        assert_eq!(parse(&ext), None, "IPv6 extension header");
        let mut mcast = v6.clone();
        mcast[22] = 0xff;
        assert_eq!(parse(&mcast), None, "multicast source");
        let mut mapped = v6.clone();
        mapped[22..38].copy_from_slice(&"::ffff:127.0.0.1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(parse(&mapped), None, "an IPv4-mapped source");
        let mut lo = v6;
        lo[22..38].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        assert_eq!(parse(&lo), None, "loopback source");
        // An answer larger than the frame's buffer is not written: the socket sends it.
        let d = parse(&good).unwrap();
        let mut buf = good.clone();
        buf.resize(256, 0);
        assert_eq!(answer_in_place(&mut buf, &d, &[0; 256]), None);
        assert_eq!(buf[..good.len()], good[..], "and the frame is left as it was");
    }
}
