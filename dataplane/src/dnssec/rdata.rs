//! DNSSEC RDATA read from the raw octets hickory keeps for these types (RFC 4034, RFC
//! 5155). Every reader takes untrusted bytes and returns `None` for anything malformed.

use hickory_proto::rr::Name;

/// DNSKEY flag: a zone key (RFC 4034 section 2.1.1).
const ZONE_KEY: u16 = 0x0100;
/// DNSKEY flag: revoked (RFC 5011 section 3).
const REVOKE: u16 = 0x0080;
/// DNSKEY flag: Secure Entry Point (RFC 4034 section 2.1.1; RFC 3757).
const SEP: u16 = 0x0001;
/// NSEC3 flag: opt-out (RFC 5155 section 3.1.2.1).
const OPT_OUT: u8 = 0x01;

/// A DNSKEY record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dnskey {
    /// Flags.
    pub flags: u16,
    /// Protocol (3).
    pub protocol: u8,
    /// Algorithm number.
    pub algorithm: u8,
    /// The key material.
    pub public_key: Vec<u8>,
    /// Key tag (RFC 4034 appendix B).
    pub key_tag: u16,
    /// The whole RDATA (for DS digests).
    pub rdata: Vec<u8>,
}

impl Dnskey {
    /// Reads a DNSKEY RDATA.
    pub fn parse(rdata: &[u8]) -> Option<Self> {
        if rdata.len() < 5 {
            return None;
        }
        Some(Self {
            flags: u16::from_be_bytes([rdata[0], rdata[1]]),
            protocol: rdata[2],
            algorithm: rdata[3],
            public_key: rdata[4..].to_vec(),
            key_tag: key_tag(rdata),
            rdata: rdata.to_vec(),
        })
    }

    /// Whether this key may sign zone data: zone flag, protocol 3, not revoked.
    pub fn usable(&self) -> bool {
        self.flags & ZONE_KEY != 0 && self.flags & REVOKE == 0 && self.protocol == 3
    }

    /// A zone key (protocol 3) with the REVOKE bit set (RFC 5011 section 3).
    pub fn is_revoked_zone_key(&self) -> bool {
        self.flags & ZONE_KEY != 0 && self.flags & REVOKE != 0 && self.protocol == 3
    }

    /// Whether the Secure Entry Point flag is set (RFC 4034 section 2.1.1): the keys
    /// RFC 5011 tracks.
    pub fn is_sep(&self) -> bool {
        self.flags & SEP != 0
    }

    /// The same key without the REVOKE bit (what it was before its owner revoked it).
    pub fn unrevoked(&self) -> Option<Self> {
        let mut rdata = self.rdata.clone();
        rdata.get_mut(0..2)?.copy_from_slice(&(self.flags & !REVOKE).to_be_bytes());
        Self::parse(&rdata)
    }
}

/// The key tag of a DNSKEY RDATA (RFC 4034 appendix B; algorithm 1 is not supported, so
/// its special case is not needed).
pub fn key_tag(rdata: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    for (i, b) in rdata.iter().enumerate() {
        acc += if i & 1 == 0 { u32::from(*b) << 8 } else { u32::from(*b) };
    }
    acc += (acc >> 16) & 0xFFFF;
    (acc & 0xFFFF) as u16
}

/// A DS record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ds {
    /// Key tag of the DNSKEY it points at.
    pub key_tag: u16,
    /// Algorithm of that key.
    pub algorithm: u8,
    /// Digest type (1 SHA-1, 2 SHA-256, 4 SHA-384).
    pub digest_type: u8,
    /// The digest.
    pub digest: Vec<u8>,
}

impl Ds {
    /// Reads a DS RDATA.
    pub fn parse(rdata: &[u8]) -> Option<Self> {
        if rdata.len() < 5 {
            return None;
        }
        Some(Self {
            key_tag: u16::from_be_bytes([rdata[0], rdata[1]]),
            algorithm: rdata[2],
            digest_type: rdata[3],
            digest: rdata[4..].to_vec(),
        })
    }
}

/// An RRSIG record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rrsig {
    /// The type it covers.
    pub type_covered: u16,
    /// Algorithm number.
    pub algorithm: u8,
    /// Labels of the signed owner name (less than the owner's for a wildcard expansion).
    pub labels: u8,
    /// TTL of the RRset when signed.
    pub original_ttl: u32,
    /// Expiration, seconds since the epoch modulo 2^32.
    pub expiration: u32,
    /// Inception, likewise.
    pub inception: u32,
    /// Tag of the signing key.
    pub key_tag: u16,
    /// The zone that signed it.
    pub signer: Name,
    /// The signature.
    pub signature: Vec<u8>,
    /// The RDATA up to and including the signer name in canonical (lowercase) form: the
    /// start of the signed data (RFC 4034 section 3.1.8.1).
    pub signed_header: Vec<u8>,
}

impl Rrsig {
    /// Reads an RRSIG RDATA.
    pub fn parse(rdata: &[u8]) -> Option<Self> {
        let fixed = rdata.get(..18)?;
        let (signer, end) = read_name(rdata, 18)?;
        let mut signed_header = fixed.to_vec();
        signed_header.extend_from_slice(&name_wire_lower(&signer));
        let u32_at = |i: usize| u32::from_be_bytes([fixed[i], fixed[i + 1], fixed[i + 2], fixed[i + 3]]);
        Some(Self {
            type_covered: u16::from_be_bytes([fixed[0], fixed[1]]),
            algorithm: fixed[2],
            labels: fixed[3],
            original_ttl: u32_at(4),
            expiration: u32_at(8),
            inception: u32_at(12),
            key_tag: u16::from_be_bytes([fixed[16], fixed[17]]),
            signer,
            signature: rdata[end..].to_vec(),
            signed_header,
        })
    }
}

/// An NSEC record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nsec {
    /// The next owner name in the zone.
    pub next: Name,
    /// The type bitmap.
    pub types: TypeBitmap,
}

impl Nsec {
    /// Reads an NSEC RDATA.
    pub fn parse(rdata: &[u8]) -> Option<Self> {
        let (next, end) = read_name(rdata, 0)?;
        Some(Self { next, types: TypeBitmap::parse(&rdata[end..])? })
    }
}

/// An NSEC3 record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nsec3 {
    /// Hash algorithm (1: SHA-1).
    pub hash_algorithm: u8,
    /// Flags.
    pub flags: u8,
    /// Additional hash iterations.
    pub iterations: u16,
    /// Salt.
    pub salt: Vec<u8>,
    /// The next hashed owner name, raw.
    pub next_hash: Vec<u8>,
    /// The type bitmap.
    pub types: TypeBitmap,
}

impl Nsec3 {
    /// Reads an NSEC3 RDATA.
    pub fn parse(rdata: &[u8]) -> Option<Self> {
        let head = rdata.get(..5)?;
        let salt_len = usize::from(head[4]);
        let salt = rdata.get(5..5 + salt_len)?.to_vec();
        let at = 5 + salt_len;
        let hash_len = usize::from(*rdata.get(at)?);
        let next_hash = rdata.get(at + 1..at + 1 + hash_len)?.to_vec();
        if next_hash.is_empty() {
            return None;
        }
        Some(Self {
            hash_algorithm: head[0],
            flags: head[1],
            iterations: u16::from_be_bytes([head[2], head[3]]),
            salt,
            next_hash,
            types: TypeBitmap::parse(&rdata[at + 1 + hash_len..])?,
        })
    }

    /// Whether the opt-out flag is set.
    pub fn opt_out(&self) -> bool {
        self.flags & OPT_OUT != 0
    }
}

/// The type bitmap of NSEC and NSEC3 (RFC 4034 section 4.1.2), checked on parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeBitmap(Vec<u8>);

impl TypeBitmap {
    /// Checks the window structure: increasing window numbers, lengths 1..=32.
    pub fn parse(raw: &[u8]) -> Option<Self> {
        let mut at = 0;
        let mut last: Option<u8> = None;
        while at < raw.len() {
            let window = raw[at];
            let len = usize::from(*raw.get(at + 1)?);
            if !(1..=32).contains(&len) || last.is_some_and(|l| window <= l) || raw.len() < at + 2 + len {
                return None;
            }
            last = Some(window);
            at += 2 + len;
        }
        Some(Self(raw.to_vec()))
    }

    /// Whether `rtype` is present.
    pub fn has(&self, rtype: u16) -> bool {
        let [window, low] = rtype.to_be_bytes();
        let mut at = 0;
        while at + 1 < self.0.len() {
            let len = usize::from(self.0[at + 1]);
            if self.0[at] == window {
                let octet = usize::from(low / 8);
                return octet < len && self.0[at + 2 + octet] & (0x80 >> (low % 8)) != 0;
            }
            at += 2 + len;
        }
        false
    }
}

/// Reads an uncompressed name at `at`; returns it and the offset after it.
pub fn read_name(buf: &[u8], mut at: usize) -> Option<(Name, usize)> {
    let mut labels: Vec<&[u8]> = Vec::new();
    let mut total = 1;
    loop {
        let len = usize::from(*buf.get(at)?);
        if len == 0 {
            at += 1;
            break;
        }
        if len > 63 {
            return None; // compression or an extended label type: not allowed here
        }
        total += len + 1;
        if total > 255 {
            return None;
        }
        labels.push(buf.get(at + 1..at + 1 + len)?);
        at += 1 + len;
    }
    let mut name = Name::from_labels(labels).ok()?;
    name.set_fqdn(true);
    Some((name, at))
}

/// `name` in uncompressed wire form with ASCII letters lowercased (RFC 4034 section 6.2).
pub fn name_wire_lower(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 1);
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out
}

/// Canonical DNS name order (RFC 4034 section 6.1): labels compared from the right, as
/// lowercase octet strings.
pub fn canonical_cmp(a: &Name, b: &Name) -> std::cmp::Ordering {
    let la: Vec<&[u8]> = a.iter().collect();
    let lb: Vec<&[u8]> = b.iter().collect();
    for (x, y) in la.iter().rev().zip(lb.iter().rev()) {
        let o = x.iter().map(u8::to_ascii_lowercase).cmp(y.iter().map(u8::to_ascii_lowercase));
        if o != std::cmp::Ordering::Equal {
            return o;
        }
    }
    la.len().cmp(&lb.len())
}

/// Decodes base32hex without padding (RFC 4648 section 7), as NSEC3 owner labels use.
pub fn base32hex_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s {
        let v = match c.to_ascii_lowercase() {
            c @ b'0'..=b'9' => c - b'0',
            c @ b'a'..=b'v' => c - b'a' + 10,
            _ => return None,
        };
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        s.parse().unwrap()
    }

    #[test]
    fn key_tag_of_the_root_ksk_2017() {
        // . DNSKEY 257 3 8 AwEAAaz/... (KSK-2017, tag 20326)
        let key = crate::dnssec::anchors::tests::root_ksk_2017();
        assert_eq!(key_tag(&key), 20326);
    }

    #[test]
    fn type_bitmap() {
        // A(1) MX(15) RRSIG(46) NSEC(47) in window 0; TYPE1234 in window 4.
        let raw = [
            0u8, 6, 0x40, 0x01, 0, 0, 0, 0x03, 4, 27, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0x20,
        ];
        let b = TypeBitmap::parse(&raw).unwrap();
        for t in [1u16, 15, 46, 47, 1234] {
            assert!(b.has(t), "{t}");
        }
        for t in [2u16, 28, 43, 1233, 65535] {
            assert!(!b.has(t), "{t}");
        }
        assert!(TypeBitmap::parse(&[0, 0]).is_none(), "empty window");
        assert!(TypeBitmap::parse(&[1, 1, 0xff, 0, 1, 0xff]).is_none(), "windows out of order");
        assert!(TypeBitmap::parse(&[0, 5, 1]).is_none(), "short");
    }

    #[test]
    fn canonical_order_of_rfc_4034_section_6_1() {
        let raw = |first: &[u8]| {
            let mut n = Name::from_labels(vec![first, b"z", b"example"]).unwrap();
            n.set_fqdn(true);
            n
        };
        let mut names: Vec<Name> =
            ["example.", "a.example.", "yljkjljk.a.example.", "Z.a.example.", "zABC.a.EXAMPLE.", "z.example."]
                .iter()
                .map(|s| n(s))
                .collect();
        names.extend([raw(b"\x01"), raw(b"*"), raw(b"\xC8")]);
        for w in names.windows(2) {
            assert_eq!(canonical_cmp(&w[0], &w[1]), std::cmp::Ordering::Less, "{} < {}", w[0], w[1]);
        }
    }

    #[test]
    fn hostile_rdata_is_refused() {
        assert!(Rrsig::parse(&[0; 17]).is_none());
        let mut r = vec![0u8; 18];
        r.extend_from_slice(&[0xC0, 0x0C]); // a compression pointer as signer
        assert!(Rrsig::parse(&r).is_none());
        assert!(Nsec3::parse(&[1, 0, 0, 1, 200, 1]).is_none(), "salt past the end");
        assert!(Nsec::parse(&[3, b'a']).is_none());
        assert!(Dnskey::parse(&[1, 0, 3]).is_none());
    }

    #[test]
    fn base32hex() {
        assert_eq!(base32hex_decode(b"CPNMUOG").unwrap(), b"foob");
        assert_eq!(base32hex_decode(b"cpnmuoj1").unwrap(), b"fooba");
        assert!(base32hex_decode(b"xyz").is_none());
    }
}
