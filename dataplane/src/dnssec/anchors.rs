//! Trust anchors: the built-in root KSKs, or DS/DNSKEY records from a file in zone-file
//! format (`--trust-anchor FILE`), and negative trust anchors (RFC 7646).

use hickory_proto::rr::Name;

use std::cell::Cell;
use std::collections::HashSet;

use super::rdata::{Dnskey, Ds, name_wire_lower};
use super::verify::Failure;

/// The root zone's KSKs as IANA publishes them (https://data.iana.org/root-anchors/):
/// KSK-2017 (20326) and KSK-2024 (38696), algorithm 8, SHA-256 digests.
const BUILT_IN_ROOT: &str = "\
. IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D
. IN DS 38696 8 2 683D2D0ACB8C9B712A1948B27F741219298D0A450D612C483AF444A4C0FB2B16
";

/// The anchors of one zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// The zone (lowercase).
    pub zone: Name,
    /// DS records: a DNSKEY of the zone matching one is trusted.
    pub ds: Vec<Ds>,
    /// DNSKEY records trusted as they are.
    pub keys: Vec<Dnskey>,
}

/// Where the anchors came from (shown at start and in `/readyz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Compiled in.
    BuiltIn,
    /// Read from this file.
    File(String),
}

/// The configured anchors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustAnchors {
    anchors: Vec<Anchor>,
    /// Where they came from.
    pub source: Source,
}

impl TrustAnchors {
    /// The built-in root anchors.
    pub fn built_in() -> Self {
        #[allow(clippy::expect_used, reason = "a compiled-in constant, covered by a test")]
        let anchors = parse(BUILT_IN_ROOT).expect("built-in anchors parse");
        Self { anchors, source: Source::BuiltIn }
    }

    /// Anchors read from `path`.
    pub fn from_file(path: &str) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("trust anchor file {path}: {e}"))?;
        let anchors = parse(&text).map_err(|e| format!("trust anchor file {path}: {e}"))?;
        if anchors.is_empty() {
            return Err(format!("trust anchor file {path}: no DS or DNSKEY record"));
        }
        Ok(Self { anchors, source: Source::File(path.to_string()) })
    }

    /// Anchors from elsewhere (RFC 5011 maintenance).
    pub fn new(anchors: Vec<Anchor>, source: Source) -> Self {
        Self { anchors, source }
    }

    /// Every zone's anchor.
    pub fn iter(&self) -> impl Iterator<Item = &Anchor> {
        self.anchors.iter()
    }

    /// The anchor closest above (or at) `name`.
    pub fn closest(&self, name: &Name) -> Option<&Anchor> {
        self.anchors.iter().filter(|a| a.zone.zone_of(name)).max_by_key(|a| a.zone.num_labels())
    }

    /// The anchor of exactly `zone`.
    pub fn at(&self, zone: &Name) -> Option<&Anchor> {
        self.anchors.iter().find(|a| a.zone == crate::names::canonical(zone))
    }

    /// Zones with anchors.
    pub fn zones(&self) -> impl Iterator<Item = &Name> {
        self.anchors.iter().map(|a| &a.zone)
    }
}

/// Reads DS and DNSKEY lines (`owner [TTL] [CLASS] DS|DNSKEY ...`; `;` comments,
/// parentheses across lines). Other record types are an error: a typo must not pass for
/// an anchor.
pub fn parse(text: &str) -> Result<Vec<Anchor>, String> {
    let mut out: Vec<Anchor> = Vec::new();
    let mut pending = String::new();
    let mut depth = 0i32;
    let mut start_line = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split(';').next().unwrap_or("");
        if depth == 0 {
            start_line = i + 1;
        }
        depth += line.matches('(').count() as i32 - line.matches(')').count() as i32;
        pending.push(' ');
        pending.push_str(&line.replace(['(', ')'], " "));
        if depth > 0 {
            continue;
        }
        if depth < 0 {
            return Err(format!("line {start_line}: unbalanced parentheses"));
        }
        let record = std::mem::take(&mut pending);
        if record.trim().is_empty() {
            continue;
        }
        let (zone, item) = parse_record(&record).map_err(|e| format!("line {start_line}: {e}"))?;
        let entry = match out.iter_mut().find(|a| a.zone == zone) {
            Some(a) => a,
            None => {
                out.push(Anchor { zone, ds: Vec::new(), keys: Vec::new() });
                out.last_mut().ok_or("unreachable")?
            }
        };
        match item {
            Item::Ds(d) => entry.ds.push(d),
            Item::Key(k) => entry.keys.push(k),
        }
    }
    if depth != 0 {
        return Err(format!("line {start_line}: unbalanced parentheses"));
    }
    Ok(out)
}

enum Item {
    Ds(Ds),
    Key(Dnskey),
}

fn parse_record(record: &str) -> Result<(Name, Item), String> {
    let mut tokens = record.split_whitespace().peekable();
    let owner = tokens.next().ok_or("empty record")?;
    let mut zone = Name::from_ascii(owner).map_err(|e| format!("owner {owner:?}: {e}"))?;
    if !zone.is_fqdn() {
        return Err(format!("owner {owner:?} must end with a dot"));
    }
    zone = crate::names::canonical(&zone);
    // Optional TTL and class, in either order.
    while let Some(t) = tokens.peek() {
        if t.bytes().all(|b| b.is_ascii_digit()) || t.eq_ignore_ascii_case("IN") {
            tokens.next();
        } else {
            break;
        }
    }
    let rtype = tokens.next().ok_or("no record type")?;
    let num = |t: Option<&str>, what: &str| -> Result<u32, String> {
        t.ok_or(format!("missing {what}"))?.parse::<u32>().map_err(|_| format!("bad {what}"))
    };
    if rtype.eq_ignore_ascii_case("DS") {
        let key_tag = num(tokens.next(), "key tag")?;
        let algorithm = algorithm(tokens.next())?;
        let digest_type = digest_type(tokens.next())?;
        let hex: String = tokens.collect();
        let digest = hex_decode(&hex).ok_or("bad digest (hex)")?;
        if digest.is_empty() || key_tag > 0xFFFF || algorithm > 255 || digest_type > 255 {
            return Err("bad DS".into());
        }
        return Ok((
            zone,
            Item::Ds(Ds {
                key_tag: key_tag as u16,
                algorithm: algorithm as u8,
                digest_type: digest_type as u8,
                digest,
            }),
        ));
    }
    if rtype.eq_ignore_ascii_case("DNSKEY") {
        let flags = num(tokens.next(), "flags")?;
        let protocol = num(tokens.next(), "protocol")?;
        let algorithm = algorithm(tokens.next())?;
        let b64: String = tokens.collect();
        let key = base64_decode(&b64).ok_or("bad public key (base64)")?;
        if flags > 0xFFFF || protocol > 255 || algorithm > 255 || key.is_empty() {
            return Err("bad DNSKEY".into());
        }
        let mut rdata = (flags as u16).to_be_bytes().to_vec();
        rdata.extend_from_slice(&[protocol as u8, algorithm as u8]);
        rdata.extend_from_slice(&key);
        return Ok((zone, Item::Key(Dnskey::parse(&rdata).ok_or("bad DNSKEY")?)));
    }
    Err(format!("record type {rtype}: only DS and DNSKEY are trust anchors"))
}

/// An algorithm field: a number or its mnemonic (RFC 4034 section 5.3 and appendix A.1,
/// and the IANA registry's later ones), in any case.
fn algorithm(token: Option<&str>) -> Result<u32, String> {
    const MNEMONICS: [(&str, u32); 16] = [
        ("RSAMD5", 1),
        ("DH", 2),
        ("DSA", 3),
        ("RSASHA1", 5),
        ("DSA-NSEC3-SHA1", 6),
        ("RSASHA1-NSEC3-SHA1", 7),
        ("RSASHA256", 8),
        ("RSASHA512", 10),
        ("ECC-GOST", 12),
        ("ECDSAP256SHA256", 13),
        ("ECDSAP384SHA384", 14),
        ("ED25519", 15),
        ("ED448", 16),
        ("INDIRECT", 252),
        ("PRIVATEDNS", 253),
        ("PRIVATEOID", 254),
    ];
    number_or_mnemonic(token, "algorithm", &MNEMONICS)
}

/// A DS digest type: a number or the registry's name (`SHA-256`, also `SHA256`).
fn digest_type(token: Option<&str>) -> Result<u32, String> {
    const MNEMONICS: [(&str, u32); 7] =
        [("SHA-1", 1), ("SHA1", 1), ("SHA-256", 2), ("SHA256", 2), ("GOST", 3), ("SHA-384", 4), ("SHA384", 4)];
    number_or_mnemonic(token, "digest type", &MNEMONICS)
}

fn number_or_mnemonic(token: Option<&str>, what: &str, mnemonics: &[(&str, u32)]) -> Result<u32, String> {
    let t = token.ok_or(format!("missing {what}"))?;
    if let Ok(n) = t.parse::<u32>() {
        return Ok(n);
    }
    mnemonics
        .iter()
        .find(|(m, _)| m.eq_ignore_ascii_case(t))
        .map(|(_, n)| *n)
        .ok_or_else(|| format!("bad {what} {t:?} (a number or a mnemonic such as RSASHA256)"))
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok()).collect()
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().take_while(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The keys of `zone` that a DS record (of the parent, or of a trust anchor) vouches for.
/// Work is bounded whatever a server sends (duplicate DS records, thousands of keys with
/// one key tag: a KeyTrap variant): each distinct key is hashed at most once per digest
/// type its DS candidates use, and every hash is charged to the query's signature-check
/// allowance (`Failure::Budget` when it runs out).
pub fn vouched_keys(zone: &Name, keys: &[Dnskey], ds: &[Ds], allowance: &Cell<u32>) -> Result<Vec<Dnskey>, Failure> {
    let owner = name_wire_lower(zone);
    let mut seen: HashSet<&[u8]> = HashSet::new();
    let mut out = Vec::new();
    for k in keys {
        if !seen.insert(&k.rdata) {
            continue;
        }
        let candidates: Vec<&Ds> = ds.iter().filter(|d| d.key_tag == k.key_tag && d.algorithm == k.algorithm).collect();
        // Digest types adox cannot compute cost nothing (they could never match).
        let mut types: Vec<u8> =
            candidates.iter().map(|d| d.digest_type).filter(|t| super::crypto::digest_supported(*t)).collect();
        types.sort_unstable();
        types.dedup();
        for t in types {
            let left = allowance.get();
            if left == 0 {
                return Err(Failure::Budget);
            }
            allowance.set(left - 1);
            let Some(digest) = super::crypto::ds_digest(t, &owner, &k.rdata) else { continue };
            if candidates.iter().any(|d| d.digest_type == t && d.digest == digest) {
                out.push(k.clone());
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// KSK-2017's RDATA, from the DNSKEY IANA publishes.
    pub(crate) fn root_ksk_2017() -> Vec<u8> {
        let b64 = "AwEAAaz/tAm8yTn4Mfeh5eyI96WSVexTBAvkMgJzkKTOiW1vkIbzxeF3+/4RgWOq7HrxRixHlFlExOLAJr5emLvN7SWXgnLh4+B5xQlNVz8Og8kvArMtNROxVQuCaSnIDdD5LKyWbRd2n9WGe2R8PzgCmr3EgVLrjyBxWezF0jLHwVN8efS3rCj/EWgvIWgb9tarpVUDK/b58Da+sqqls3eNbuv7pr+eoZG+SrDK6nWeL3c6H5Apxz7LjVc1uTIdsIXxuOLYA4/ilBmSVIzuDWfdRUfhHdY6+cn8HFRm+2hM8AnXGXws9555KrUB5qihylGa8subX2Nn6UwNR1AkUTV74bU=";
        let mut rdata = vec![1, 1, 3, 8];
        rdata.extend(base64_decode(b64).unwrap());
        rdata
    }

    #[test]
    fn built_in_anchors_trust_the_root_ksk() {
        let a = TrustAnchors::built_in();
        let root = a.closest(&"www.example.".parse().unwrap()).unwrap();
        assert!(root.zone.is_root());
        assert_eq!(root.ds.len(), 2);
        let ksk = Dnskey::parse(&root_ksk_2017()).unwrap();
        let allowance = Cell::new(10);
        assert_eq!(vouched_keys(&root.zone, std::slice::from_ref(&ksk), &root.ds, &allowance), Ok(vec![ksk]));
        let mut other = root_ksk_2017();
        other[40] ^= 1;
        let other = Dnskey::parse(&other).unwrap();
        assert_eq!(vouched_keys(&root.zone, &[other], &root.ds, &allowance), Ok(vec![]));
    }

    /// A KeyTrap variant: duplicate DS records and many keys with one key tag cost a
    /// bounded number of digests, charged to the query's allowance.
    #[test]
    fn duplicate_ds_and_colliding_keys_cost_bounded_digests() {
        let a = TrustAnchors::built_in();
        let root = a.closest(&"www.example.".parse().unwrap()).unwrap();
        let ksk = Dnskey::parse(&root_ksk_2017()).unwrap();
        // 1,000 copies of each DS; 500 copies of the key and 500 keys that differ in one
        // octet but keep the tag (a forged key tag is cheap to find).
        let ds: Vec<Ds> = root.ds.iter().flat_map(|d| std::iter::repeat_n(d.clone(), 1000)).collect();
        let mut keys = vec![ksk.clone(); 500];
        for i in 0..500u32 {
            let mut k = ksk.clone();
            k.rdata.extend_from_slice(&i.to_be_bytes());
            keys.push(k);
        }
        let allowance = Cell::new(64);
        let r = vouched_keys(&root.zone, &keys, &ds, &allowance);
        assert_eq!(r, Err(Failure::Budget), "the allowance runs out instead of 1,000,000 digests");
        assert_eq!(allowance.get(), 0);
        // Duplicates alone cost one digest.
        let allowance = Cell::new(64);
        assert_eq!(vouched_keys(&root.zone, &vec![ksk.clone(); 500], &ds, &allowance), Ok(vec![ksk.clone()]));
        assert_eq!(allowance.get(), 63);
        // Digest types adox cannot compute cost nothing.
        let unknown: Vec<Ds> = root.ds.iter().map(|d| Ds { digest_type: 99, ..d.clone() }).collect();
        let allowance = Cell::new(64);
        assert_eq!(vouched_keys(&root.zone, &[ksk], &unknown, &allowance), Ok(vec![]));
        assert_eq!(allowance.get(), 64);
    }

    #[test]
    fn anchor_files_parse_or_name_the_bad_line() {
        let ok = "; comment\nlab. 3600 IN DS 1234 13 2 ( AABB\n CCDD )\nlab. IN DNSKEY 257 3 13 AAEC\n";
        let a = parse(ok).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].ds[0].digest, vec![0xAA, 0xBB, 0xCC, 0xDD]);
        assert_eq!(a[0].keys[0].public_key, vec![0, 1, 2]);
        assert_eq!(
            parse("\nlab. IN A 192.0.2.1\n").unwrap_err(),
            "line 2: record type A: only DS and DNSKEY are trust anchors"
        );
        assert!(parse("lab IN DS 1 13 2 AA").unwrap_err().contains("end with a dot"));
        assert!(parse("lab. IN DS 1 13 2 AZ").unwrap_err().contains("hex"));
        assert!(parse("lab. IN DS 1 13 2 ( AA").unwrap_err().contains("parentheses"));
        assert!(parse("lab. IN DNSKEY 257 3 13 !!").unwrap_err().contains("base64"));
    }

    /// RFC 4034 section 5.3: the algorithm may be written as its mnemonic (and, as BIND and
    /// ldns write them, the digest type too); the same anchor either way.
    #[test]
    fn anchor_files_accept_algorithm_and_digest_mnemonics() {
        let numbers = parse("example. IN DS 30899 5 1 AABB\nexample. DNSKEY 257 3 8 AAEC\n").unwrap();
        for text in [
            "example. IN DS 30899 RSASHA1 1 AABB\nexample. DNSKEY 257 3 RSASHA256 AAEC\n",
            "example. IN DS 30899 rsasha1 SHA-1 AABB\nexample. DNSKEY 257 3 rsasha256 AAEC\n",
            "example. IN DS 30899 5 SHA1 AABB\nexample. DNSKEY 257 3 8 AAEC\n",
        ] {
            assert_eq!(parse(text).unwrap(), numbers, "{text}");
        }
        let ed = parse(". IN DS 1 ED25519 SHA-384 AA\n. IN DS 2 ECDSAP384SHA384 SHA256 AA\n").unwrap();
        assert_eq!((ed[0].ds[0].algorithm, ed[0].ds[0].digest_type), (15, 4));
        assert_eq!((ed[0].ds[1].algorithm, ed[0].ds[1].digest_type), (14, 2));
        let e = parse("example. IN DS 30899 RSASHA3 1 AABB").unwrap_err();
        assert!(e.contains("bad algorithm \"RSASHA3\""), "{e}");
        assert!(parse("example. IN DS 30899 5 MD5 AABB").unwrap_err().contains("bad digest type"));
    }
}
