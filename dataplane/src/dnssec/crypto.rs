//! Signature algorithms, DS digests and the NSEC3 hash, on ring (the crypto provider
//! rustls and quinn already use, so nothing new is compiled).

use ring::digest;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};

/// Algorithms validated (RFC 8624 section 3.1, as updated by the IANA "DNSSEC Algorithm
/// Numbers" registry's validation recommendations): RSASHA256 (8), RSASHA512 (10),
/// ECDSAP256SHA256 (13), ECDSAP384SHA384 (14), ED25519 (15), and the SHA-1 ones RSASHA1
/// (5) and RSASHA1-NSEC3-SHA1 (7) unless switched off. ED448 (16) is not in ring: a zone
/// signed only with it is insecure (RFC 4035 section 5.2).
pub fn algorithm_supported(algorithm: u8, sha1: bool) -> bool {
    matches!(algorithm, 8 | 10 | 13 | 14 | 15) || (sha1 && matches!(algorithm, 5 | 7))
}

/// DS digest types used: SHA-1 (1), SHA-256 (2), SHA-384 (4).
pub fn digest_supported(digest_type: u8) -> bool {
    matches!(digest_type, 1 | 2 | 4)
}

/// The DS digest of a DNSKEY: digest(owner name in canonical wire form | DNSKEY RDATA).
pub fn ds_digest(digest_type: u8, owner_wire: &[u8], dnskey_rdata: &[u8]) -> Option<Vec<u8>> {
    let alg = match digest_type {
        1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        2 => &digest::SHA256,
        4 => &digest::SHA384,
        _ => return None,
    };
    let mut ctx = digest::Context::new(alg);
    ctx.update(owner_wire);
    ctx.update(dnskey_rdata);
    Some(ctx.finish().as_ref().to_vec())
}

/// RFC 5155 section 5: IH(salt, x, 0) = H(x | salt), IH(salt, x, k) = H(IH(salt, x, k-1) | salt).
pub fn nsec3_hash(owner_wire: &[u8], salt: &[u8], iterations: u16) -> Vec<u8> {
    let h = |data: &[u8]| {
        let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
        ctx.update(data);
        ctx.update(salt);
        ctx.finish()
    };
    let mut out = h(owner_wire);
    for _ in 0..iterations {
        out = h(out.as_ref());
    }
    out.as_ref().to_vec()
}

/// Verifies `sig` over `message` with a DNSKEY's public key of `algorithm`. False for an
/// unsupported algorithm or a malformed key.
pub fn verify(algorithm: u8, public_key: &[u8], message: &[u8], sig: &[u8]) -> bool {
    match algorithm {
        5 | 7 => verify_rsa(&signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY, public_key, message, sig),
        8 => verify_rsa(&signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY, public_key, message, sig),
        10 => verify_rsa(&signature::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY, public_key, message, sig),
        13 => verify_ec(&signature::ECDSA_P256_SHA256_FIXED, 64, public_key, message, sig),
        14 => verify_ec(&signature::ECDSA_P384_SHA384_FIXED, 96, public_key, message, sig),
        15 => {
            public_key.len() == 32
                && UnparsedPublicKey::new(&signature::ED25519, public_key).verify(message, sig).is_ok()
        }
        _ => false,
    }
}

/// Shortest RSA modulus verified, in octets (1024 bits: ring's floor).
const RSA_MIN_MODULUS: usize = 128;

/// Whether a DNSKEY of a supported `algorithm` can be used at all. RSA moduli shorter than
/// 1024 bits (RFC 3110 allows 512; old test zones and RFC 5155's examples use them) are not:
/// ring refuses them, and a key that size can be factored, so a zone vouched for only by
/// such keys is treated like one with an unsupported algorithm (insecure, EDE 1), never as
/// a failed signature.
pub fn key_supported(algorithm: u8, public_key: &[u8]) -> bool {
    match algorithm {
        5 | 7 | 8 | 10 => rsa_parts(public_key).is_some_and(|(_, n)| n.len() >= RSA_MIN_MODULUS),
        _ => true,
    }
}

/// An RSA key in RFC 3110 form (exponent length: one octet, or zero then two; exponent;
/// modulus) as (exponent, modulus), leading zero octets dropped (ring refuses them).
fn rsa_parts(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let (exp_len, rest) = match key {
        [0, hi, lo, rest @ ..] => (usize::from(u16::from_be_bytes([*hi, *lo])), rest),
        [len, rest @ ..] => (usize::from(*len), rest),
        [] => return None,
    };
    if exp_len == 0 || rest.len() <= exp_len {
        return None;
    }
    let (e, n) = rest.split_at(exp_len);
    let (e, n) = (without_leading_zeros(e), without_leading_zeros(n));
    (!e.is_empty() && !n.is_empty()).then_some((e, n))
}

fn without_leading_zeros(b: &[u8]) -> &[u8] {
    let zeros = b.iter().take_while(|x| **x == 0).count();
    &b[zeros..]
}

fn verify_rsa(params: &'static signature::RsaParameters, key: &[u8], message: &[u8], sig: &[u8]) -> bool {
    rsa_parts(key).is_some_and(|(e, n)| RsaPublicKeyComponents { n, e }.verify(params, message, sig).is_ok())
}

/// ECDSA keys are the bare point (x | y); ring wants the uncompressed SEC1 form.
fn verify_ec(
    alg: &'static signature::EcdsaVerificationAlgorithm,
    len: usize,
    key: &[u8],
    message: &[u8],
    sig: &[u8],
) -> bool {
    if key.len() != len {
        return false;
    }
    let mut point = Vec::with_capacity(len + 1);
    point.push(4);
    point.extend_from_slice(key);
    UnparsedPublicKey::new(alg, &point).verify(message, sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_ksk_2017_matches_its_published_ds() {
        let key = crate::dnssec::anchors::tests::root_ksk_2017();
        let d = ds_digest(2, &[0], &key).unwrap();
        let hex: String = d.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(hex, "E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D");
    }

    #[test]
    fn nsec3_hash_of_rfc_5155_appendix_a() {
        // H(example) with salt aabbccdd and 12 iterations = 0p9mhaveqvm6t7vbl5lop2u3t2rp3tom.
        let wire = b"\x07example\x00";
        let h = nsec3_hash(wire, &[0xaa, 0xbb, 0xcc, 0xdd], 12);
        assert_eq!(h, crate::dnssec::rdata::base32hex_decode(b"0p9mhaveqvm6t7vbl5lop2u3t2rp3tom").unwrap());
    }

    #[test]
    fn malformed_keys_do_not_verify() {
        for alg in [5, 8, 10, 13, 14, 15, 16, 200] {
            assert!(!verify(alg, &[], b"m", b"s"));
            assert!(!verify(alg, &[3, 1, 0, 1], b"m", &[0; 64]));
        }
    }
}
