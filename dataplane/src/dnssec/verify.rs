//! Verifying one RRset's signatures against a zone's keys (RFC 4034 section 3.1.8.1, RFC
//! 4035 section 5.3), with bounded work: every signature check is charged to the client
//! query's allowance, so key-tag collisions and signature floods (CVE-2023-50387) cost a
//! fixed number of checks, never a stalled worker.

use std::cell::Cell;

use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use super::crypto;
use super::rdata::{Dnskey, Rrsig, name_wire_lower};

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
    pub fn ede(self) -> u16 {
        match self {
            Failure::NoSignature => 10,
            Failure::Expired => 7,
            Failure::NotYetValid => 8,
            Failure::NoKey => 9,
            Failure::Invalid | Failure::Budget => 6,
        }
    }

    /// Short text for EXTRA-TEXT.
    pub fn text(self) -> &'static str {
        match self {
            Failure::NoSignature => "RRSIG missing",
            Failure::Expired => "signature expired",
            Failure::NotYetValid => "signature not yet valid",
            Failure::NoKey => "no DNSKEY matches the signature",
            Failure::Invalid => "signature does not verify",
            Failure::Budget => "signature check limit reached",
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
}

/// Allowed clock skew around a signature's validity window: a tenth of the window,
/// between an hour and a day (the bounds Unbound uses, `val-sig-skew-min/max`).
fn skew(inception: i64, expiration: i64) -> i64 {
    ((expiration - inception) / 10).clamp(3600, 86_400)
}

/// A 32-bit RRSIG time as the absolute time closest to `now` (RFC 4034 section 3.1.5:
/// serial number arithmetic).
fn absolute(t: u32, now: u64) -> i64 {
    let now = now as i64;
    let delta = i64::from(t.wrapping_sub(now as u32) as i32);
    now + delta
}

/// Labels of `name` without a leading wildcard label (the RRSIG Labels field's count).
fn rrsig_labels(name: &Name) -> usize {
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
        let candidates = keys.iter().filter(|k| k.key_tag == sig.key_tag && k.algorithm == sig.algorithm && k.usable());
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
                return Ok(Verified { ttl_cap: sig.original_ttl.min(left), wildcard_parent });
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
}
