//! Verifying one RRset's signatures against a zone's keys (RFC 4034 section 3.1.8.1, RFC
//! 4035 section 5.3), with bounded work: every signature check is charged to the client
//! query's allowance, so key-tag collisions and signature floods (CVE-2023-50387) cost a
//! fixed number of checks, never a stalled worker.

use std::cell::Cell;

use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use super::crypto;
use super::rdata::{Dnskey, Rrsig, name_wire_lower};
use crate::ede::Ede;

/// Why an RRset did not verify, most specific first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No RRSIG covers it.
    NoSignature,
    /// Only signatures whose validity ended (with the skew allowance).
    Expired,
    /// Only signatures not valid yet.
    NotYetValid,
    /// No zone key matches any signature's tag and algorithm.
    NoKey,
    /// Signatures and keys matched, the cryptography failed.
    Invalid,
    /// The query's signature-check allowance ran out.
    Budget,
}

impl Failure {
    /// Extended DNS Error INFO-CODE (RFC 8914 section 4).
    pub fn ede(self) -> Ede {
        match self {
            Self::NoSignature => Ede::RrsigsMissing,
            Self::Expired => Ede::SignatureExpired,
            Self::NotYetValid => Ede::SignatureNotYetValid,
            Self::NoKey => Ede::DnskeyMissing,
            Self::Invalid | Self::Budget => Ede::DnssecBogus,
        }
    }

    /// Short text for EXTRA-TEXT.
    pub fn text(self) -> &'static str {
        match self {
            Self::NoSignature => "RRSIG missing",
            Self::Expired => "signature expired",
            Self::NotYetValid => "signature not yet valid",
            Self::NoKey => "no DNSKEY matches the signature",
            Self::Invalid => "signature does not verify",
            Self::Budget => "signature check limit reached",
        }
    }
}

/// A verified RRset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The TTL it may be cached for: at most the signature's original TTL and the time
    /// left until the signature expires (RFC 4035 section 5.3.3).
    pub ttl_cap: u32,
    /// For a wildcard expansion: the wildcard's parent (the closest encloser), whose
    /// next-closer name must be proven absent.
    pub wildcard_parent: Option<Name>,
    /// The verifying signature's original TTL and expiration (absolute Unix time): what
    /// RFC 5011's timers are computed from (never from a signature that did not verify).
    pub signature: (u32, i64),
}

/// Allowed clock skew around a signature's validity window: a tenth of the window,
/// between an hour and a day (the bounds Unbound uses, `val-sig-skew-min/max`).
fn skew(inception: i64, expiration: i64) -> i64 {
    ((expiration - inception) / 10).clamp(3600, 86_400)
}

/// A 32-bit RRSIG time as the absolute time closest to `now` (RFC 4034 section 3.1.5:
/// serial number arithmetic).
pub(crate) fn absolute(t: u32, now: u64) -> i64 {
    let now = now as i64;
    let delta = i64::from(t.wrapping_sub(now as u32) as i32);
    now + delta
}

/// Labels of `name` without a leading wildcard label (the RRSIG Labels field's count).
/// The Labels field an RRSIG over an RRset at `name` has: a leading `*` not counted
/// (RFC 4034 section 3.1.3).
pub(crate) fn rrsig_labels(name: &Name) -> usize {
    let n = crate::names::labels(name);
    if name.is_wildcard() { n - 1 } else { n }
}

/// The RDATA of `r` in canonical form (RFC 4034 section 6.2; RFC 6840 section 5.1 takes
/// NSEC out of the lowercased types, which hickory keeps raw anyway).
pub fn canonical_rdata(r: &Record) -> Option<Vec<u8>> {
    if let RData::Unknown { code, rdata } = &r.data
        && u16::from(*code) == 39
    {
        // DNAME is raw in hickory: its target is lowercased here.
        let (target, end) = super::rdata::read_name(&rdata.anything, 0)?;
        return (end == rdata.anything.len()).then(|| name_wire_lower(&target));
    }
    let mut buf = Vec::with_capacity(64);
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_canonical_form(true);
    r.data.emit(&mut enc).ok()?;
    Some(buf)
}

/// The data an RRSIG signs over `records` (all of one RRset): its header, then each
/// record in canonical form and order, duplicates once.
fn signed_data(sig: &Rrsig, owner: &Name, records: &[&Record]) -> Option<Vec<u8>> {
    let owner_labels = rrsig_labels(owner);
    let labels = usize::from(sig.labels);
    let owner_wire = if labels < owner_labels {
        let base = owner.trim_to(labels);
        let mut w = vec![1, b'*'];
        w.extend(name_wire_lower(&base));
        w
    } else {
        name_wire_lower(owner)
    };
    let mut rdatas: Vec<Vec<u8>> = records.iter().map(|r| canonical_rdata(r)).collect::<Option<_>>()?;
    rdatas.sort();
    rdatas.dedup();
    let mut out = sig.signed_header.clone();
    for rd in rdatas {
        out.extend_from_slice(&owner_wire);
        out.extend_from_slice(&sig.type_covered.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes()); // class IN
        out.extend_from_slice(&sig.original_ttl.to_be_bytes());
        out.extend_from_slice(&u16::try_from(rd.len()).ok()?.to_be_bytes());
        out.extend_from_slice(&rd);
    }
    Some(out)
}

/// Verifies the RRset `records` at `owner` of type `rtype` (no RRSIGs among them) with
/// the RRSIGs `sigs`, against the zone keys `keys` of `signer`. `checks_left` is the
/// query's remaining signature-check allowance.
#[allow(clippy::too_many_arguments, reason = "the whole of RFC 4035 section 5.3's inputs")]
pub fn verify_rrset(
    owner: &Name,
    rtype: u16,
    records: &[&Record],
    sigs: &[Rrsig],
    signer: &Name,
    keys: &[Dnskey],
    now: u64,
    sha1: bool,
    checks_left: &Cell<u32>,
) -> Result<Verified, Failure> {
    verify_with(owner, rtype, records, sigs, signer, keys, Dnskey::usable, now, sha1, checks_left)
}

/// RFC 5011 section 2.1: a revoked key counts only through its own signature over the
/// DNSKEY RRset of its zone that carries it (with the REVOKE bit set), and is good for
/// nothing else. Verifies that self-signature (`revoked` must have the bit set).
pub fn verify_revocation(
    zone: &Name,
    records: &[&Record],
    sigs: &[Rrsig],
    revoked: &Dnskey,
    now: u64,
    sha1: bool,
    checks_left: &Cell<u32>,
) -> Result<Verified, Failure> {
    let keys = std::slice::from_ref(revoked);
    verify_with(zone, 48, records, sigs, zone, keys, |k| k.is_revoked_zone_key(), now, sha1, checks_left)
}

#[allow(clippy::too_many_arguments, reason = "verify_rrset's inputs and which keys may sign")]
fn verify_with(
    owner: &Name,
    rtype: u16,
    records: &[&Record],
    sigs: &[Rrsig],
    signer: &Name,
    keys: &[Dnskey],
    key_ok: impl Fn(&Dnskey) -> bool,
    now: u64,
    sha1: bool,
    checks_left: &Cell<u32>,
) -> Result<Verified, Failure> {
    if sigs.is_empty() || records.is_empty() {
        return Err(Failure::NoSignature);
    }
    let mut failure = Failure::NoKey;
    let owner_labels = rrsig_labels(owner);
    for sig in sigs {
        if sig.type_covered != rtype
            || sig.signer != *signer
            || !signer.zone_of(owner)
            || usize::from(sig.labels) > owner_labels
            || !crypto::algorithm_supported(sig.algorithm, sha1)
        {
            continue;
        }
        let (inception, expiration) = (absolute(sig.inception, now), absolute(sig.expiration, now));
        if inception > expiration {
            failure = worse(failure, Failure::Invalid);
            continue;
        }
        let skew = skew(inception, expiration);
        let t = now as i64;
        if t > expiration + skew {
            failure = worse(failure, Failure::Expired);
            continue;
        }
        if t < inception - skew {
            failure = worse(failure, Failure::NotYetValid);
            continue;
        }
        let candidates = keys.iter().filter(|k| {
            k.key_tag == sig.key_tag
                && k.algorithm == sig.algorithm
                && key_ok(k)
                && crypto::key_supported(k.algorithm, &k.public_key)
        });
        let mut data: Option<Vec<u8>> = None;
        for key in candidates {
            if checks_left.get() == 0 {
                return Err(Failure::Budget);
            }
            checks_left.set(checks_left.get() - 1);
            if data.is_none() {
                data = signed_data(sig, owner, records);
            }
            let Some(d) = &data else { break };
            if crypto::verify(sig.algorithm, &key.public_key, d, &sig.signature) {
                let left = u32::try_from((expiration - t).max(0)).unwrap_or(u32::MAX);
                let wildcard_parent =
                    (usize::from(sig.labels) < owner_labels).then(|| owner.trim_to(usize::from(sig.labels)));
                return Ok(Verified {
                    ttl_cap: sig.original_ttl.min(left),
                    wildcard_parent,
                    signature: (sig.original_ttl, expiration),
                });
            }
            failure = worse(failure, Failure::Invalid);
        }
    }
    Err(failure)
}

/// The more telling of two failures: a failed check beats a time window, which beats a
/// missing key.
fn worse(a: Failure, b: Failure) -> Failure {
    let rank = |f: Failure| match f {
        Failure::NoKey | Failure::NoSignature => 0,
        Failure::NotYetValid => 1,
        Failure::Expired => 2,
        Failure::Invalid | Failure::Budget => 3,
    };
    if rank(b) > rank(a) { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::dnssec::rdata::{Dnskey, key_tag};
    use hickory_proto::rr::rdata::A;
    use ring::rand::SystemRandom;
    use ring::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
    };

    const NOW: u64 = 1_800_000_000;

    fn n(s: &str) -> Name {
        s.parse().unwrap()
    }

    /// A signing key and its DNSKEY (zone key, the SEP bit as given).
    enum Signer {
        Ecdsa(EcdsaKeyPair),
        Ed(Ed25519KeyPair),
    }

    fn signer(alg: u8) -> (Signer, Dnskey) {
        let rng = SystemRandom::new();
        let (s, public) = if alg == 13 || alg == 14 {
            let curve = if alg == 13 { &ECDSA_P256_SHA256_FIXED_SIGNING } else { &ECDSA_P384_SHA384_FIXED_SIGNING };
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(curve, &rng).unwrap();
            let kp = EcdsaKeyPair::from_pkcs8(curve, pkcs8.as_ref(), &rng).unwrap();
            let public = kp.public_key().as_ref()[1..].to_vec(); // drop the 0x04 prefix
            (Signer::Ecdsa(kp), public)
        } else {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
            let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
            let public = kp.public_key().as_ref().to_vec();
            (Signer::Ed(kp), public)
        };
        let mut rdata = vec![1, 1, 3, alg];
        rdata.extend(public);
        (s, Dnskey::parse(&rdata).unwrap())
    }

    /// An RRSIG over `records` (owner `owner`, type A) by `key` of `zone`.
    fn sign(
        s: &Signer,
        key: &Dnskey,
        zone: &Name,
        owner: &Name,
        labels: u8,
        window: (u32, u32),
        records: &[&Record],
    ) -> Rrsig {
        let mut head = Vec::new();
        head.extend_from_slice(&1u16.to_be_bytes());
        head.push(key.algorithm);
        head.push(labels);
        head.extend_from_slice(&300u32.to_be_bytes());
        head.extend_from_slice(&window.1.to_be_bytes());
        head.extend_from_slice(&window.0.to_be_bytes());
        head.extend_from_slice(&key_tag(&key.rdata).to_be_bytes());
        head.extend(name_wire_lower(zone));
        let unsigned = Rrsig::parse(&head).unwrap();
        let data = signed_data(&unsigned, owner, records).unwrap();
        let sig = match s {
            Signer::Ecdsa(k) => k.sign(&SystemRandom::new(), &data).unwrap().as_ref().to_vec(),
            Signer::Ed(k) => k.sign(&data).as_ref().to_vec(),
        };
        head.extend(sig);
        Rrsig::parse(&head).unwrap()
    }

    fn a(owner: &str, last: u8) -> Record {
        Record::from_rdata(n(owner), 300, RData::A(A::new(192, 0, 2, last)))
    }

    const VALID: (u32, u32) = ((NOW - 3600) as u32, (NOW + 86_400) as u32);

    #[test]
    fn rfc_4035_5_3_signatures_verify_for_ecdsa_p256_p384_and_ed25519() {
        for alg in [13, 14, 15] {
            let (s, key) = signer(alg);
            let zone = n("lab.");
            let (r1, r2) = (a("www.lab.", 1), a("WWW.lab.", 2));
            // Signed in one order, verified in another: canonical order and case.
            let sig = sign(&s, &key, &zone, &n("www.lab."), 2, VALID, &[&r1, &r2]);
            let left = Cell::new(10);
            let ok = verify_rrset(
                &n("www.lab."),
                1,
                &[&r2, &r1],
                std::slice::from_ref(&sig),
                &zone,
                std::slice::from_ref(&key),
                NOW,
                true,
                &left,
            );
            assert!(matches!(ok, Ok(Verified { ttl_cap: 300, wildcard_parent: None, .. })), "alg {alg}: {ok:?}");
            // One changed record: the signature fails.
            let r3 = a("www.lab.", 3);
            let bad = verify_rrset(
                &n("www.lab."),
                1,
                &[&r1, &r3],
                std::slice::from_ref(&sig),
                &zone,
                std::slice::from_ref(&key),
                NOW,
                true,
                &left,
            );
            assert_eq!(bad, Err(Failure::Invalid));
            // Another zone's signer name or another type: not even tried.
            let other = verify_rrset(&n("www.lab."), 28, &[&r1, &r2], &[sig], &zone, &[key], NOW, true, &left);
            assert_eq!(other, Err(Failure::NoKey));
        }
    }

    #[test]
    fn rfc_4034_3_1_5_validity_window_with_skew() {
        let (s, key) = signer(13);
        let zone = n("lab.");
        let r = a("www.lab.", 1);
        let left = Cell::new(10);
        // Expired two days ago (beyond the day of skew): expired.
        let old = ((NOW - 30 * 86_400) as u32, (NOW - 2 * 86_400) as u32);
        let sig = sign(&s, &key, &zone, &n("www.lab."), 2, old, &[&r]);
        let got = verify_rrset(&n("www.lab."), 1, &[&r], &[sig], &zone, std::slice::from_ref(&key), NOW, true, &left);
        assert_eq!(got, Err(Failure::Expired));
        // Expired an hour ago with a 30-day window: within the skew, still valid.
        let recent = ((NOW - 30 * 86_400) as u32, (NOW - 3600) as u32);
        let sig = sign(&s, &key, &zone, &n("www.lab."), 2, recent, &[&r]);
        assert!(
            verify_rrset(&n("www.lab."), 1, &[&r], &[sig], &zone, std::slice::from_ref(&key), NOW, true, &left).is_ok()
        );
        // Not valid for another two days: not yet valid.
        let future = ((NOW + 2 * 86_400) as u32, (NOW + 30 * 86_400) as u32);
        let sig = sign(&s, &key, &zone, &n("www.lab."), 2, future, &[&r]);
        let got = verify_rrset(&n("www.lab."), 1, &[&r], &[sig], &zone, &[key], NOW, true, &left);
        assert_eq!(got, Err(Failure::NotYetValid));
    }

    #[test]
    fn rfc_4035_5_3_4_wildcard_expansion_is_reported() {
        let (s, key) = signer(15);
        let zone = n("lab.");
        let r = a("x.wild.lab.", 1);
        // Signed as *.wild.lab. (labels 2): the answer for x.wild.lab. is an expansion.
        let sig = sign(&s, &key, &zone, &n("x.wild.lab."), 2, VALID, &[&r]);
        let left = Cell::new(10);
        let got = verify_rrset(&n("x.wild.lab."), 1, &[&r], &[sig], &zone, &[key], NOW, true, &left).unwrap();
        assert_eq!(got.wildcard_parent, Some(n("wild.lab.")));
    }

    /// CVE-2023-50387 (KeyTrap): many keys sharing a tag and many signatures cost at most
    /// the query's allowance of checks, then fail.
    #[test]
    fn keytrap_collisions_are_bounded_by_the_check_allowance() {
        let (s, real) = signer(13);
        let zone = n("lab.");
        let r = a("www.lab.", 1);
        let sig = sign(&s, &real, &zone, &n("www.lab."), 2, VALID, &[&r]);
        // 40 different keys claiming the real key's tag, and 40 copies of the signature
        // with a broken last octet.
        let keys: Vec<Dnskey> = (0..40)
            .map(|_| {
                let (_, mut k) = signer(13);
                k.key_tag = real.key_tag;
                k
            })
            .collect();
        let mut broken = sig;
        *broken.signature.last_mut().unwrap() ^= 1;
        let sigs = vec![broken; 40];
        let left = Cell::new(64);
        let got = verify_rrset(&n("www.lab."), 1, &[&r], &sigs, &zone, &keys, NOW, true, &left);
        assert_eq!(got, Err(Failure::Budget));
        assert_eq!(left.get(), 0, "exactly the allowance was spent, not 1600 checks");
    }

    /// Signatures over a huge RRset: each check rebuilds the canonical data of the whole
    /// set, so the allowance, not the set's size, bounds the work.
    #[test]
    fn a_huge_rrset_with_many_bad_signatures_costs_the_allowance_only() {
        let (s, key) = signer(13);
        let zone = n("lab.");
        let records: Vec<Record> = (0..3000u32)
            .map(|i| Record::from_rdata(n("big.lab."), 300, RData::A(A::from(std::net::Ipv4Addr::from(i)))))
            .collect();
        let refs: Vec<&Record> = records.iter().collect();
        let mut sig = sign(&s, &key, &zone, &n("big.lab."), 2, VALID, &refs[..1]);
        *sig.signature.last_mut().unwrap() ^= 1;
        let left = Cell::new(64);
        let got = verify_rrset(&n("big.lab."), 1, &refs, &vec![sig; 500], &zone, &[key], NOW, true, &left);
        assert_eq!((got, left.get()), (Err(Failure::Budget), 0));
    }

    #[test]
    fn serial_arithmetic_finds_the_nearest_time() {
        let now = 1_800_000_000u64;
        assert_eq!(absolute(now as u32 + 10, now), now as i64 + 10);
        assert_eq!(absolute((now as u32).wrapping_sub(10), now), now as i64 - 10);
        // Past 2106 the 32-bit value wraps and still maps next to now.
        let later = (1u64 << 32) + 100;
        assert_eq!(absolute(150, later), later as i64 + 50);
    }

    #[test]
    fn skew_is_a_tenth_clamped_to_an_hour_and_a_day() {
        assert_eq!(skew(0, 1000), 3600);
        assert_eq!(skew(0, 100_000), 10_000);
        assert_eq!(skew(0, 60 * 86_400), 86_400);
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// `example. MX` as the zones made by `dnssec-keygen -a RSASHA1 -b 1024` + `dnssec-signzone`
    /// and by `ldns-keygen -a RSASHA1 -b 512` + `ldns-signzone` (BIND 9.18, ldns 1.8, Debian 12)
    /// hold it: mixed-case targets, signed from 1796315053 on.
    fn rsasha1_mx() -> [Record; 2] {
        use hickory_proto::rr::rdata::MX;
        [
            Record::from_rdata(n("example."), 3600, RData::MX(MX::new(10, n("Mail.EXAMPLE.")))),
            Record::from_rdata(n("example."), 3600, RData::MX(MX::new(20, n("mx2.Example.NET.")))),
        ]
    }

    const RSASHA1_NOW: u64 = 1_796_400_000;

    fn verify_mx(key_hex: &str, sig_hex: &str) -> Result<Verified, Failure> {
        let key = Dnskey::parse(&unhex(key_hex)).unwrap();
        let sig = Rrsig::parse(&unhex(sig_hex)).unwrap();
        let [r1, r2] = rsasha1_mx();
        let left = Cell::new(10);
        verify_rrset(&n("example."), 15, &[&r2, &r1], &[sig], &n("example."), &[key], RSASHA1_NOW, true, &left)
    }

    /// RFC 8624 section 3.1: RSASHA1 (5) is validated. Real keys and signatures from
    /// BIND's tools: a 1024-bit key, and the same key with a leading zero octet before its
    /// modulus (RFC 3110 does not forbid one; ring refuses it unless it is dropped).
    #[test]
    fn rsasha1_1024_bit_signatures_from_bind_verify() {
        let key = "0100030503010001c6c376b6c6e12fed7431fb324dc4f21bffd4198bcf7a9b82b31ae55737ce7f8a7fff628db3d998544713908f162828eece8cc510e6dcddf0fde6e3800414367af8800cfb03a58ab317caef130f0cad6022f558d8a6b92f04c2de0aee3d5b5434fb36f1061ffb0ac298c2c63e782f5abf826b4947ddd11d70025027ec6363c20f";
        let sig = "000f050100000e106b3924ad6b1197ade029076578616d706c65006edc0763fe5b816c93f9cd5e10300a16dcd385876dd40846a10984ea1d564aa1a7d39dcc19553b4b88817f6e61dee0706e1de28bfb94b6fcd15fb374862abc2de7b2ccff327a26c3e75f2bcdad195a5c6c8c4cc7f07882b0f652a53ce62dcc06f6fedcc48c2efdad6db21c467efbb41f69c6b809a59683906bdb35d00c46ccaa";
        assert!(matches!(verify_mx(key, sig), Ok(Verified { wildcard_parent: None, .. })));
        let zero_key = "010003050301000100c6c376b6c6e12fed7431fb324dc4f21bffd4198bcf7a9b82b31ae55737ce7f8a7fff628db3d998544713908f162828eece8cc510e6dcddf0fde6e3800414367af8800cfb03a58ab317caef130f0cad6022f558d8a6b92f04c2de0aee3d5b5434fb36f1061ffb0ac298c2c63e782f5abf826b4947ddd11d70025027ec6363c20f";
        let zero_sig = "000f050100000e106b3933476b11983729e0076578616d706c6500afe94d20592b184834191f66696e99c1bef45dea61c41616858d074496177dd943e1a5bb2236fd77cfa911b0432a73706034e52c0dce8bee0bd6b755e4a22b93e7431dc0c76b9b3350f34375d00c6b8a9be1e4e70c145f9cc3d13c9ad5e9d6380e58874eb24709d8c97e947c8b784b1a43f6690950f4ec3fc0b18e9b279b55d7";
        assert!(verify_mx(zero_key, zero_sig).is_ok(), "a leading zero octet in the modulus is dropped");
    }

    /// A 512-bit RSASHA1 key (ldns-keygen; RFC 5155's examples use such keys) is not used:
    /// no key to verify with, never a signature that "does not verify".
    #[test]
    fn rsa_keys_under_1024_bits_are_unsupported_not_failed() {
        let key = "0100030503010001f737f69d50e3654af84886bce148d270712fded335b94f6ec6464ab398bf119d212a7ff721079b58b275a460b5737beeddd7ae7499b408e55bef66c3c8567ae3";
        let sig = "000f050100000e106b39330a6b1197fa88d8076578616d706c6500c7f6f45d1d8c8cb2b849272ba6221cfc5918c69d8e736ee6ee1c404ad15ef197c3c1233c343f2ac6f449fee76de747bef54503b8a41908bedb97ace724fc316f";
        assert!(!crypto::key_supported(5, &Dnskey::parse(&unhex(key)).unwrap().public_key));
        assert_eq!(verify_mx(key, sig), Err(Failure::NoKey));
    }
}
