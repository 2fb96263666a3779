//! DNS cookies for clients (RFC 7873) with RFC 9018's interoperable server cookies: the
//! server cookie is version 1, three reserved octets, a 32-bit timestamp and a SipHash-2-4
//! of the client cookie, those eight octets and the client's address under a 16-octet
//! secret. Every node of an anycast set configured with the same secret accepts the
//! cookies of the others. A secret is replaced with the previous one still accepted, so
//! clients are not broken mid-rotation.

use std::hash::Hasher;
use std::net::IpAddr;

/// Length of a client cookie.
pub(crate) const CLIENT_COOKIE_LEN: usize = 8;
/// Length of the server cookies adox makes (RFC 9018).
pub(crate) const SERVER_COOKIE_LEN: usize = 16;
/// The COOKIE option adox sends: option header, client cookie, server cookie.
pub(crate) const OPTION_LEN: usize = 4 + CLIENT_COOKIE_LEN + SERVER_COOKIE_LEN;
/// A server cookie older than this is refused (RFC 9018 section 4.3: one hour).
const MAX_AGE_S: u32 = 3600;
/// ... or from further ahead than this (five minutes).
const MAX_AHEAD_S: u32 = 300;
/// A valid cookie older than this is replaced by a fresh one in the answer (half an hour).
const RENEW_AFTER_S: u32 = 1800;

/// The server secrets: the one cookies are made with, and the one before it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secrets {
    pub(crate) current: [u8; 16],
    pub(crate) previous: Option<[u8; 16]>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

impl Secrets {
    /// A fresh random secret (the previous one, if any, still accepted).
    pub(crate) fn random(previous: Option<[u8; 16]>) -> Self {
        Self { current: rand::random(), previous }
    }

    /// A secret file: the current secret on the first line and optionally the previous
    /// one on the second, each 32 hexadecimal digits.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
        let hex = |l: &str| -> Result<[u8; 16], String> {
            let bytes = data_encoding::HEXLOWER_PERMISSIVE
                .decode(l.as_bytes())
                .map_err(|_| "a secret is 32 hexadecimal digits".to_string())?;
            <[u8; 16]>::try_from(bytes.as_slice()).map_err(|_| "a secret is 32 hexadecimal digits (16 octets)".into())
        };
        let current = hex(lines.next().ok_or("no secret in the file")?)?;
        let previous = lines.next().map(hex).transpose()?;
        if lines.next().is_some() {
            return Err("more than two secrets (the current one and the previous one)".into());
        }
        if current == [0; 16] {
            return Err("an all-zero secret".into());
        }
        Ok(Self { current, previous })
    }

    /// What a query's COOKIE option (`option`, the option's data) is worth, and the
    /// server cookie to answer with. `None` for a malformed option (the caller has
    /// already refused those with FORMERR).
    pub(crate) fn check(&self, option: &[u8], client: IpAddr, now_s: u32) -> Option<(Verdict, [u8; OPTION_LEN])> {
        let client_cookie: &[u8; CLIENT_COOKIE_LEN] = option.get(..CLIENT_COOKIE_LEN)?.try_into().ok()?;
        let server_cookie = &option[CLIENT_COOKIE_LEN..];
        let verdict = if server_cookie.is_empty() {
            Verdict::ClientOnly
        } else {
            self.validate(client_cookie, server_cookie, client, now_s)
        };
        let mut out = [0u8; OPTION_LEN];
        out[..2].copy_from_slice(&crate::wire::OPT_COOKIE.to_be_bytes());
        out[2..4].copy_from_slice(&((CLIENT_COOKIE_LEN + SERVER_COOKIE_LEN) as u16).to_be_bytes());
        out[4..12].copy_from_slice(client_cookie);
        match verdict {
            // Fresh enough and made with the current secret: answered with itself.
            Verdict::Valid { renew: false } => out[12..].copy_from_slice(server_cookie),
            _ => out[12..].copy_from_slice(&make(&self.current, client_cookie, client, now_s)),
        }
        Some((verdict, out))
    }

    fn validate(&self, client_cookie: &[u8; 8], server_cookie: &[u8], client: IpAddr, now_s: u32) -> Verdict {
        if server_cookie.len() != SERVER_COOKIE_LEN || server_cookie[0] != 1 {
            return Verdict::Invalid;
        }
        let ts = u32::from_be_bytes([server_cookie[4], server_cookie[5], server_cookie[6], server_cookie[7]]);
        // Serial-number arithmetic (RFC 1982), as the timestamp wraps in 2106.
        let age = now_s.wrapping_sub(ts);
        let fresh = age <= MAX_AGE_S || u32::MAX - age < MAX_AHEAD_S;
        if !fresh {
            return Verdict::Invalid;
        }
        let expected = |secret: &[u8; 16]| {
            let mut probe = [0u8; 8];
            probe.copy_from_slice(&server_cookie[..8]);
            hash(secret, client_cookie, &probe, client)
        };
        let presented = &server_cookie[8..16];
        if constant_time_eq(&expected(&self.current), presented) {
            Verdict::Valid { renew: age > RENEW_AFTER_S && age <= MAX_AGE_S }
        } else if self.previous.is_some_and(|p| constant_time_eq(&expected(&p), presented)) {
            Verdict::Valid { renew: true }
        } else {
            Verdict::Invalid
        }
    }
}

/// What a client's COOKIE option proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A client cookie alone (a first query, or a client that dropped our cookie).
    ClientOnly,
    /// A server cookie we made for this client address within the hour: its source is
    /// not spoofed. `renew`: answer with a fresh one.
    Valid { renew: bool },
    /// A server cookie that is not ours, is stale, or was made for another address.
    Invalid,
}

/// The server cookie for `client_cookie` from `client` at `now_s` (RFC 9018 section 4.2).
fn make(secret: &[u8; 16], client_cookie: &[u8; 8], client: IpAddr, now_s: u32) -> [u8; SERVER_COOKIE_LEN] {
    let mut head = [1u8, 0, 0, 0, 0, 0, 0, 0];
    head[4..].copy_from_slice(&now_s.to_be_bytes());
    let mut out = [0u8; SERVER_COOKIE_LEN];
    out[..8].copy_from_slice(&head);
    out[8..].copy_from_slice(&hash(secret, client_cookie, &head, client));
    out
}

/// SipHash-2-4 over client cookie | version | reserved | timestamp | client address.
fn hash(secret: &[u8; 16], client_cookie: &[u8; 8], head: &[u8; 8], client: IpAddr) -> [u8; 8] {
    let mut h = siphasher::sip::SipHasher24::new_with_key(secret);
    h.write(client_cookie);
    h.write(head);
    match client {
        IpAddr::V4(a) => h.write(&a.octets()),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            // A v4 client seen on a dual-stack socket is the same client as on a v4 one.
            Some(v4) => h.write(&v4.octets()),
            None => h.write(&a.octets()),
        },
    }
    h.finish().to_le_bytes()
}

/// The client cookie adox sends to the authoritative server `server` (RFC 7873 section
/// 4.1, RFC 9018 section 3): a SipHash-2-4 of the server's address under adox's own
/// client secret. One per server, so no server can link adox's queries to another
/// server's; stable while the process lives, so a server's cookie for it stays valid.
pub(crate) fn client_cookie(secret: &[u8; 16], server: IpAddr) -> [u8; CLIENT_COOKIE_LEN] {
    let mut h = siphasher::sip::SipHasher24::new_with_key(secret);
    match server.to_canonical() {
        IpAddr::V4(a) => h.write(&a.octets()),
        IpAddr::V6(a) => h.write(&a.octets()),
    }
    h.finish().to_le_bytes()
}

/// A server cookie an authoritative server gave adox (8 to 32 octets), kept per server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerCookie {
    len: u8,
    bytes: [u8; 32],
}

impl ServerCookie {
    /// From a COOKIE option's server part; `None` unless 8 to 32 octets.
    pub(crate) fn new(data: &[u8]) -> Option<Self> {
        if !(8..=32).contains(&data.len()) {
            return None;
        }
        let mut bytes = [0u8; 32];
        bytes[..data.len()].copy_from_slice(data);
        Some(Self { len: data.len() as u8, bytes })
    }

    /// The cookie's octets (empty when none was learnt).
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The COOKIE option of a query to a server: its client cookie, then the server cookie
/// it gave last (if any).
pub(crate) fn query_option(client: &[u8; CLIENT_COOKIE_LEN], server: &ServerCookie) -> Vec<u8> {
    let len = CLIENT_COOKIE_LEN + server.as_slice().len();
    let mut o = Vec::with_capacity(4 + len);
    o.extend_from_slice(&crate::wire::OPT_COOKIE.to_be_bytes());
    o.extend_from_slice(&(len as u16).to_be_bytes());
    o.extend_from_slice(client);
    o.extend_from_slice(server.as_slice());
    o
}

/// What a server's reply says about the cookie adox sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyCookie {
    /// No COOKIE option: a server without cookies.
    None,
    /// Our client cookie echoed with a server cookie to keep.
    Server(ServerCookie),
    /// A COOKIE option that does not echo our client cookie, or is malformed: a forged
    /// or broken reply (RFC 7873 section 5.3: discarded).
    Mismatch,
}

/// Judges a reply's COOKIE option data (`None`: the reply had none).
pub(crate) fn reply_cookie(option: Option<&[u8]>, sent: &[u8; CLIENT_COOKIE_LEN]) -> ReplyCookie {
    let Some(data) = option else { return ReplyCookie::None };
    if data.len() < 16 || data.len() > 40 || !constant_time_eq(&data[..CLIENT_COOKIE_LEN], sent) {
        return ReplyCookie::Mismatch;
    }
    ServerCookie::new(&data[CLIENT_COOKIE_LEN..]).map_or(ReplyCookie::Mismatch, ReplyCookie::Server)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        data_encoding::HEXLOWER_PERMISSIVE.decode(s.as_bytes()).unwrap()
    }

    /// RFC 9018 appendix A.1: the first query's server cookie, from the RFC's client
    /// cookie, address, secret and time.
    #[test]
    fn rfc9018_appendix_a1_vector() {
        let secret: [u8; 16] = unhex("e5e973e5a6b2a43f48e7dc849e37bfcf").try_into().unwrap();
        let cc: [u8; 8] = unhex("2464c4abcf10c957").try_into().unwrap();
        let got = make(&secret, &cc, "198.51.100.100".parse().unwrap(), 1_559_731_985);
        assert_eq!(got.to_vec(), unhex("010000005cf79f111f8130c3eee29480"));
    }

    fn option(cc: &[u8; 8], sc: &[u8]) -> Vec<u8> {
        [cc.as_slice(), sc].concat()
    }

    #[test]
    fn a_cookie_we_made_is_valid_for_its_client_only_and_within_the_hour() {
        let s = Secrets::random(None);
        let (ip, other) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let cc = [7u8; 8];
        let (v, opt) = s.check(&cc, ip, 1_000_000).unwrap();
        assert_eq!(v, Verdict::ClientOnly);
        assert_eq!(&opt[..4], &[0, 10, 0, 24]);
        let sc = opt[12..].to_vec();
        let again = option(&cc, &sc);
        let (v, opt2) = s.check(&again, ip, 1_000_010).unwrap();
        assert_eq!(v, Verdict::Valid { renew: false });
        assert_eq!(&opt2[12..], sc.as_slice(), "a fresh cookie is answered with itself");
        assert_eq!(s.check(&again, ip, 1_002_000).unwrap().0, Verdict::Valid { renew: true });
        assert_eq!(s.check(&again, other, 1_000_010).unwrap().0, Verdict::Invalid, "made for another address");
        assert_eq!(s.check(&again, ip, 1_003_601).unwrap().0, Verdict::Invalid, "older than an hour");
        assert_eq!(s.check(&again, ip, 999_000).unwrap().0, Verdict::Invalid, "from too far ahead");
        assert_eq!(s.check(&option(&[8u8; 8], &sc), ip, 1_000_010).unwrap().0, Verdict::Invalid, "other client cookie");
        let mut forged = sc;
        forged[15] ^= 1;
        assert_eq!(s.check(&option(&cc, &forged), ip, 1_000_010).unwrap().0, Verdict::Invalid);
        assert_eq!(s.check(&option(&cc, &[1; 8]), ip, 1_000_010).unwrap().0, Verdict::Invalid, "8-octet server cookie");
    }

    /// Rotation: a cookie made under the previous secret is still valid (and renewed); one
    /// made two secrets ago is not.
    #[test]
    fn a_rotation_keeps_the_previous_secrets_cookies_valid() {
        let (ip, cc) = ("2001:db8::1".parse().unwrap(), [3u8; 8]);
        let first = Secrets::random(None);
        let sc = first.check(&cc, ip, 5000).unwrap().1[12..].to_vec();
        let second = Secrets::random(Some(first.current));
        let (v, opt) = second.check(&option(&cc, &sc), ip, 5001).unwrap();
        assert_eq!(v, Verdict::Valid { renew: true });
        assert_ne!(&opt[12..], sc.as_slice(), "renewed under the new secret");
        let third = Secrets::random(Some(second.current));
        assert_eq!(third.check(&option(&cc, &sc), ip, 5002).unwrap().0, Verdict::Invalid);
    }

    #[test]
    fn client_cookies_differ_per_server_and_replies_must_echo_them() {
        let secret = [5u8; 16];
        let (a, b) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let ca = client_cookie(&secret, a);
        assert_ne!(ca, client_cookie(&secret, b));
        assert_eq!(ca, client_cookie(&secret, "::ffff:192.0.2.1".parse().unwrap()));
        assert_eq!(reply_cookie(None, &ca), ReplyCookie::None);
        let good = [ca.as_slice(), &[1; 16]].concat();
        assert_eq!(reply_cookie(Some(&good), &ca), ReplyCookie::Server(ServerCookie::new(&[1; 16]).unwrap()));
        let other = [client_cookie(&secret, b).as_slice(), &[1; 16]].concat();
        assert_eq!(reply_cookie(Some(&other), &ca), ReplyCookie::Mismatch, "another client cookie");
        assert_eq!(reply_cookie(Some(&ca), &ca), ReplyCookie::Mismatch, "no server cookie in a reply");
        assert_eq!(reply_cookie(Some(&[ca.as_slice(), &[1; 33]].concat()), &ca), ReplyCookie::Mismatch);
        let o = query_option(&ca, &ServerCookie::new(&[7; 16]).unwrap());
        assert_eq!((&o[..4], o.len()), (&[0u8, 10, 0, 24][..], 28));
        assert_eq!(query_option(&ca, &ServerCookie::default()).len(), 12, "a first contact: the client cookie");
    }

    #[test]
    fn secret_files_are_checked() {
        let s = Secrets::parse("# adox\n00112233445566778899aabbccddeeff\nffeeddccbbaa99887766554433221100\n").unwrap();
        assert_eq!(s.current[0], 0x00);
        assert_eq!(s.previous.map(|p| p[0]), Some(0xff));
        for bad in [
            "",
            "0011",
            "zz112233445566778899aabbccddeeff",
            "00000000000000000000000000000000",
            "00112233445566778899aabbccddeeff\n00112233445566778899aabbccddeeff\n00112233445566778899aabbccddeeff",
        ] {
            assert!(Secrets::parse(bad).is_err(), "{bad:?}");
        }
    }
}
