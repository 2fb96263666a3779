//! The chain of trust (RFC 4035 section 5): which keys sign a zone, found from the trust
//! anchor down through DS and DNSKEY RRsets that are themselves looked up (and cached
//! with their status) like any other data; and the validation of answers and denials
//! that servers send. Keys are not kept apart: a zone's validated DNSKEY RRset and its
//! validated DS RRset (or proof of none) sit in the record cache with their status, so a
//! zone's keys cost one cache read once known, and a cache hit costs no signature check.

use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::{Budget, Limit, ResolveError, Resolver, Upstream};
use crate::dnssec::anchors::{Anchor, vouched_keys};
use crate::dnssec::denial::{self, Insecure, Nsec3Limits, Proof};
use crate::dnssec::rdata::{Dnskey, Ds, Nsec, Nsec3, Rrsig};
use crate::dnssec::verify::{Failure, Verified, verify_rrset};
use crate::dnssec::{Security, crypto};
use crate::ede::Ede;

/// The RDATA octets of a DNSSEC record, which hickory keeps raw.
pub(super) fn raw(r: &Record) -> Option<&[u8]> {
    match &r.data {
        RData::Unknown { rdata, .. } => Some(&rdata.anything),
        _ => None,
    }
}

/// The DNSKEYs of `zone` among `records`, parsed.
pub(super) fn dnskeys_of(records: &[Record], zone: &Name) -> Vec<Dnskey> {
    records
        .iter()
        .filter(|r| r.record_type() == RecordType::DNSKEY && r.name == *zone)
        .filter_map(|r| Dnskey::parse(raw(r)?))
        .collect()
}

/// The RRSIGs among `set`, parsed.
pub(super) fn signatures(set: &[Record]) -> Vec<Rrsig> {
    set.iter().filter(|r| r.record_type() == RecordType::RRSIG).filter_map(|r| Rrsig::parse(raw(r)?)).collect()
}

/// What a zone's keys are, as far as validation is concerned.
#[derive(Debug)]
pub(crate) enum Keys {
    /// Validated zone keys.
    Secure(Vec<Dnskey>),
    /// The zone is insecure (or the status is bogus): its data has this status.
    Not(Security),
}

type KeysFuture<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Keys, ResolveError>> + 'a>>;

/// What vouches for a zone's DNSKEY RRset.
enum Trust {
    Anchor(Anchor),
    Ds(Vec<Ds>),
    Not(Security),
}

/// DS records worth using: supported digest and algorithm, and SHA-1 ones only when no
/// SHA-256 or SHA-384 DS is there (RFC 4509 section 3).
fn usable_ds(all: Vec<Ds>, sha1_algorithms: bool) -> Vec<Ds> {
    let mut ds: Vec<Ds> = all
        .into_iter()
        .filter(|d| {
            crypto::digest_supported(d.digest_type) && crypto::algorithm_supported(d.algorithm, sha1_algorithms)
        })
        .collect();
    if ds.iter().any(|d| d.digest_type != 1) {
        ds.retain(|d| d.digest_type != 1);
    }
    ds
}

/// The zone whose keys must have signed data at `owner`: the signer an RRSIG names if it
/// is the owner or above it (strictly above for a DS, which the parent signs); without
/// such a signature, the zone whose server answered.
fn signer_of(sigs: &[Rrsig], owner: &Name, rtype: RecordType, zone: &Name) -> Name {
    sigs.iter()
        .map(|s| &s.signer)
        .find(|s| s.zone_of(owner) && !(rtype == RecordType::DS && *s == owner))
        .cloned()
        .unwrap_or_else(|| zone.clone())
}

/// The records of a negative answer's authority section that validation speaks for: those
/// at or below the zone whose keys signed the denial (as `validate_negative` picks it), and
/// only that zone's RRSIGs. Whatever else a server put there (NSEC3 records of another
/// zone, which the proof never checked) must not be cached beside a secure denial: later
/// readers take the proof from the cache.
pub(crate) fn vouched_denial(authority: Vec<Record>, qname: &Name, qtype: RecordType, zone: &Name) -> Vec<Record> {
    let signer = signer_of(&signatures(&authority), qname, qtype, zone);
    authority
        .into_iter()
        .filter(|r| {
            signer.zone_of(&r.name)
                && (r.record_type() != RecordType::RRSIG
                    || raw(r).and_then(Rrsig::parse).is_some_and(|s| s.signer == signer))
        })
        .collect()
}

/// Whether the cached RRset holds exactly the records of `data` (RRSIGs aside).
fn same_data(cached: &[Record], data: &[&Record], rtype: RecordType) -> bool {
    let a: Vec<&RData> = cached.iter().filter(|r| r.record_type() == rtype).map(|r| &r.data).collect();
    // RRsets are a handful of records: a quadratic check allocates nothing.
    a.len() == data.len()
        && data.iter().all(|r| a.contains(&&r.data))
        && a.iter().all(|d| data.iter().any(|r| r.data == **d))
}

/// The TTL a cached RRset of `rtype` was stored with (its records keep theirs).
fn stored_life(cached: &[Record], rtype: RecordType) -> u32 {
    cached.iter().filter(|r| r.record_type() == rtype).map(|r| r.ttl).min().unwrap_or(0)
}

/// Largest proof RRset recognised from the cache instead of verified again.
const MAX_RECOGNISED_RRSET: usize = 16;

/// Whether a cached proof RRset has enough of its life left to stand for the same records
/// in a new answer: more than a tenth of the `life` it was given when stored (its records'
/// TTL after the signature and cache caps), and more than its last second or two. Past
/// that it is verified afresh and kept for a full TTL again (as Unbound refreshes an RRset
/// it receives again). Reused to its end, every denial in its last second carried a TTL
/// of about 1 s, taught the NSEC spans nothing lasting, and sent each name of the span
/// upstream until the copy was gone: at 15,000 misses a second under signed zones, about
/// 11,000 upstream queries within two seconds of each span's expiry.
fn fresh_enough(ttl_left: u32, life: u32) -> bool {
    ttl_left > 1 && u64::from(ttl_left) * 10 > u64::from(life)
}

/// Names looked at between a secure zone and unsigned data below it, at most.
const MAX_CUT_WALK: usize = 8;

fn bogus_of(f: Failure, zone: &Name, what: &str) -> Security {
    Security::bogus(f.ede(), format!("{}: {what}: {}", zone.to_ascii(), f.text()))
}

/// A verification failure as a status, except running out of the query's allowance: that
/// is a limit of this query (SERVFAIL, nothing cached), not a property of the data, or an
/// attacker could spend a query's checks and get a victim zone cached as bogus.
fn status_of(f: Failure, zone: &Name, what: &str) -> Result<Security, ResolveError> {
    match f {
        Failure::Budget => Err(ResolveError::LimitExceeded(Limit::SigChecks)),
        f => Ok(bogus_of(f, zone, what)),
    }
}

/// NSEC and NSEC3 records with their owners.
type Denials = (Vec<(Name, Nsec)>, Vec<(Name, Nsec3)>);

/// The NSEC and NSEC3 records among `records` (not verified here), parsed.
fn denial_records(records: &[Record]) -> Denials {
    let (mut nsecs, mut nsec3s) = (Vec::new(), Vec::new());
    for r in records {
        let Some(bytes) = raw(r) else { continue };
        match r.record_type() {
            RecordType::NSEC => nsecs.extend(Nsec::parse(bytes).map(|n| (r.name.clone(), n))),
            RecordType::NSEC3 => nsec3s.extend(Nsec3::parse(bytes).map(|n| (r.name.clone(), n))),
            _ => {}
        }
    }
    (nsecs, nsec3s)
}

impl<U: Upstream + Clone + 'static> Resolver<U> {
    fn validating(&self, name: &Name) -> bool {
        self.shared.validator.covers(name)
    }

    /// The validated keys of `zone` (from the cache, or looked up and validated now).
    /// Boxed: it recurses (through the parent's keys) up to the trust anchor.
    pub(crate) fn zone_keys<'a>(&'a self, zone: &'a Name, budget: &'a Budget) -> KeysFuture<'a> {
        Box::pin(async move {
            if budget.keys_in_progress.borrow().contains(zone) {
                // Hostile or broken data; not cached (the loop may come from this query's
                // path as much as from the data).
                return Err(ResolveError::InvalidData(format!("{}: chain of trust loops", zone.to_ascii())));
            }
            budget.keys_in_progress.borrow_mut().push(zone.clone());
            let result = self.zone_keys_unboxed(zone, budget).await;
            budget.keys_in_progress.borrow_mut().retain(|z| z != zone);
            result
        })
    }

    async fn zone_keys_unboxed(&self, zone: &Name, budget: &Budget) -> Result<Keys, ResolveError> {
        if !self.validating(zone) {
            return Ok(Keys::Not(Security::insecure()));
        }
        // Keys validated before (their RRset is cached as secure, for its TTL): the chain
        // above them was checked when they were.
        if let Some(hit) = self.shared.records.get(zone, u16::from(RecordType::DNSKEY), self.upstream.now())
            && hit.security == Security::Secure
            && let crate::cache::records::CachedData::RRset(records) = &hit.data
        {
            return Ok(Keys::Secure(dnskeys_of(records, zone)));
        }
        // Below an insecure delegation there is nothing to fetch: decide that first.
        if let Trust::Not(s) = self.trust_of(zone, budget).await? {
            return Ok(Keys::Not(s));
        }
        let step = match self.lookup(zone, RecordType::DNSKEY, budget, 0).await {
            Ok(s) => s,
            Err(e @ ResolveError::LimitExceeded(_)) => return Err(e),
            // Keys we could not fetch for a reason of our own (a busy server, a full pool)
            // say nothing of the zone: the query fails, and nothing is cached as bogus.
            Err(e) if budget.local_fault.get() => return Err(e),
            Err(e) => {
                return Ok(Keys::Not(Security::bogus(
                    Ede::DnskeyMissing,
                    format!("{}: DNSKEY lookup failed: {e}", zone.to_ascii()),
                )));
            }
        };
        Ok(match step.security {
            Security::Secure => Keys::Secure(dnskeys_of(&step.records, zone)),
            Security::Unchecked => {
                Keys::Not(Security::bogus(Ede::DnskeyMissing, format!("{}: DNSKEY not validated", zone.to_ascii())))
            }
            other => Keys::Not(other),
        })
    }

    /// The closest zone cut strictly above `zone` that the cache knows (from referrals).
    fn cached_cut_above(&self, zone: &Name) -> Option<Name> {
        let now = self.upstream.now();
        let mut cur = zone.base_name();
        loop {
            if self.shared.records.contains(&cur, u16::from(RecordType::NS), now) {
                return Some(cur);
            }
            if cur.is_root() {
                return None;
            }
            cur = cur.base_name();
        }
    }

    /// What vouches for `zone`'s keys: its trust anchor, or its validated DS RRset.
    async fn trust_of(&self, zone: &Name, budget: &Budget) -> Result<Trust, ResolveError> {
        let v = &self.shared.validator;
        if let Some(anchor) = v.anchors.load().as_ref().and_then(|a| a.at(zone)) {
            return Ok(Trust::Anchor(anchor.clone()));
        }
        if zone.is_root() {
            return Ok(Trust::Not(Security::insecure()));
        }
        // Proven insecure before by the DS denial still cached: what follows would only
        // read and check it again. (As Unbound's key cache: the proof stands for its TTL,
        // even should the parent's keys turn bogus meanwhile.)
        if self.shared.records.insecure_cut(zone, self.upstream.now()) {
            return Ok(Trust::Not(Security::insecure()));
        }
        // The parent's status first (top-down, as the chain is built): a child of an
        // insecure or bogus zone is insecure or bogus without a DS query of its own.
        if let Some(parent) = self.cached_cut_above(zone)
            && let Keys::Not(s) = self.zone_keys(&parent, budget).await?
        {
            return Ok(Trust::Not(s));
        }
        let step = match self.lookup(zone, RecordType::DS, budget, 0).await {
            Ok(s) => s,
            Err(e @ ResolveError::LimitExceeded(_)) => return Err(e),
            // As for the keys above: a DS we could not fetch for a reason of our own.
            Err(e) if budget.local_fault.get() => return Err(e),
            Err(e) => {
                return Ok(Trust::Not(Security::bogus(
                    Ede::DnskeyMissing,
                    format!("{}: DS lookup failed: {e}", zone.to_ascii()),
                )));
            }
        };
        match step.security {
            Security::Secure if step.rcode == crate::wire::rcode::NXDOMAIN => {
                // A signer or zone that provably does not exist.
                return Ok(Trust::Not(Security::bogus(
                    Ede::DnssecBogus,
                    format!("{}: the zone does not exist", zone.to_ascii()),
                )));
            }
            Security::Secure => {}
            Security::Unchecked => {
                return Ok(Trust::Not(Security::bogus(
                    Ede::DnssecBogus,
                    format!("{}: DS not validated", zone.to_ascii()),
                )));
            }
            other => return Ok(Trust::Not(other)),
        }
        let all: Vec<Ds> = step
            .records
            .iter()
            .filter(|r| r.record_type() == RecordType::DS && r.name == *zone)
            .filter_map(|r| Ds::parse(raw(r)?))
            .collect();
        if all.is_empty() {
            // A proven absence of DS makes an insecure delegation only at a delegation:
            // the proof must show NS (and no SOA) at the name. Anywhere else the name is no
            // zone cut, so whoever named it as a signer (an RRSIG's signer field, a
            // referral) lied (a secure "no DS" at a plain name must not unlock anything).
            let (nsecs, nsec3s) = denial_records(&step.authority);
            let proof_zone = nsec3s.first().map(|(o, _)| o.base_name()).unwrap_or_else(|| zone.base_name());
            return Ok(
                match denial::delegation_without_ds(zone, &proof_zone, &nsecs, &nsec3s, &self.nsec3_limits(budget)) {
                    Some(true) => {
                        // Marked on the cached denial, to go with it (a denial synthesized
                        // from NSEC spans, or read stale, has no live entry to mark).
                        self.shared.records.mark_insecure_cut(zone, self.upstream.now());
                        Trust::Not(Security::insecure())
                    }
                    _ => Trust::Not(Security::bogus(
                        Ede::DnssecBogus,
                        format!("{}: not a zone cut, or no proof that it is one", zone.to_ascii()),
                    )),
                },
            );
        }
        let digests_known = all.iter().any(|d| crypto::digest_supported(d.digest_type));
        let ds = usable_ds(all, v.sha1);
        if ds.is_empty() {
            // Only unsupported digests or algorithms: insecure (RFC 4035 section 5.2).
            let (code, what) = if digests_known {
                (Ede::UnsupportedDnskeyAlgorithm, "unsupported DNSKEY algorithm")
            } else {
                (Ede::UnsupportedDsDigestType, "unsupported DS digest type")
            };
            return Ok(Trust::Not(Security::insecure_because(code, format!("{}: {what}", zone.to_ascii()))));
        }
        Ok(Trust::Ds(ds))
    }

    /// A zone's own DNSKEY RRset, as its servers sent it: trusted when a key the anchor or
    /// a DS vouches for signs it.
    async fn validate_apex_keys(
        &self,
        zone: &Name,
        set: &[Record],
        budget: &Budget,
    ) -> Result<(Security, Option<u32>), ResolveError> {
        let v = &self.shared.validator;
        let keys: Vec<Dnskey> = set
            .iter()
            .filter(|r| r.record_type() == RecordType::DNSKEY)
            .filter_map(|r| Dnskey::parse(raw(r)?))
            .collect();
        let trust = self.trust_of(zone, budget).await?;
        // The (key tag, algorithm) of every DS vouching for the zone (none for an anchor).
        let ds_ids: Vec<(u16, u8)> = match &trust {
            Trust::Ds(ds) => ds.iter().map(|d| (d.key_tag, d.algorithm)).collect(),
            _ => Vec::new(),
        };
        let vouched = match trust {
            Trust::Not(s) => return Ok((s, None)),
            Trust::Anchor(a) => {
                if !a.keys.is_empty() || a.ds.iter().any(|d| crypto::algorithm_supported(d.algorithm, v.sha1)) {
                    // Keys the anchor lists as they are need no digest: they stand even when the
                    // DS path runs out of allowance.
                    let listed: Vec<Dnskey> =
                        keys.iter().filter(|k| a.keys.iter().any(|t| t.rdata == k.rdata)).cloned().collect();
                    match vouched_keys(&a.zone, &keys, &a.ds, &budget.sig_checks_left) {
                        Ok(mut ks) => {
                            ks.retain(|k| !listed.iter().any(|l| l.rdata == k.rdata));
                            ks.extend(listed);
                            Ok(ks)
                        }
                        Err(_) if !listed.is_empty() => Ok(listed),
                        Err(f) => Err(f),
                    }
                } else {
                    return Ok((
                        Security::insecure_because(
                            Ede::UnsupportedDnskeyAlgorithm,
                            format!("{}: unsupported DNSKEY algorithm in the trust anchor", zone.to_ascii()),
                        ),
                        None,
                    ));
                }
            }
            Trust::Ds(ds) => vouched_keys(zone, &keys, &ds, &budget.sig_checks_left),
        };
        let trusted = match vouched {
            Ok(t) => t,
            Err(f) => return Ok((status_of(f, zone, "DNSKEY")?, None)),
        };
        if trusted.is_empty() {
            let bogus = Security::bogus(
                Ede::DnskeyMissing,
                format!("{}: no DNSKEY matches the DS or trust anchor", zone.to_ascii()),
            );
            return Ok((bogus, None));
        }
        let every_ds_met =
            !ds_ids.is_empty() && ds_ids.iter().all(|id| trusted.iter().any(|k| (k.key_tag, k.algorithm) == *id));
        if every_ds_met && !trusted.iter().any(|k| crypto::key_supported(k.algorithm, &k.public_key)) {
            // Every key the DS set vouches for is present and too short to verify with (RSA
            // under 1024 bits): as an unsupported algorithm (RFC 4035 section 5.2), insecure
            // rather than bogus. A DS whose key is missing (stripped on the way) keeps the
            // zone on the normal path: bogus, never a downgrade.
            let text = format!("{}: RSA keys shorter than 1024 bits are not validated", zone.to_ascii());
            return Ok((Security::insecure_because(Ede::UnsupportedDnskeyAlgorithm, text), None));
        }
        let data: Vec<&Record> = set.iter().filter(|r| r.record_type() == RecordType::DNSKEY).collect();
        let sigs = signatures(set);
        match verify_rrset(
            zone,
            48,
            &data,
            &sigs,
            zone,
            &trusted,
            self.upstream.unix_now(),
            v.sha1,
            &budget.sig_checks_left,
        ) {
            // A DNSKEY RRset is never a wildcard expansion.
            Ok(v) if v.wildcard_parent.is_some() => Ok((bogus_of(Failure::Invalid, zone, "DNSKEY"), None)),
            Ok(v) => Ok((Security::Secure, Some(v.ttl_cap))),
            Err(f) => Ok((status_of(f, zone, "DNSKEY")?, None)),
        }
    }

    /// The status of one RRset (`set`: the records and their RRSIGs) that a server of
    /// `zone` sent for `owner`/`rtype`; `proofs` are the NSEC/NSEC3 records of the same
    /// response (a wildcard expansion needs them). Returns the status and the TTL the
    /// signature allows.
    pub(crate) async fn validate_rrset(
        &self,
        zone: &Name,
        owner: &Name,
        rtype: RecordType,
        set: &[Record],
        proofs: &[Record],
        budget: &Budget,
    ) -> Result<(Security, Option<u32>), ResolveError> {
        if !self.validating(owner) {
            return Ok((Security::insecure(), None));
        }
        let sigs = signatures(set);
        // A zone's own keys (at the cut we asked, or self-signed where one server serves
        // parent and child) are checked against the DS, not against themselves.
        if rtype == RecordType::DNSKEY && (owner == zone || sigs.iter().any(|s| s.signer == *owner)) {
            return self.validate_apex_keys(owner, set, budget).await;
        }
        let signer = signer_of(&sigs, owner, rtype, zone);
        let keys = match self.zone_keys(&signer, budget).await? {
            Keys::Not(s) => return Ok((s, None)),
            Keys::Secure(k) => k,
        };
        let what = format!("{} {rtype}", owner.to_ascii());
        if sigs.is_empty() {
            // Unsigned data below a secure zone: fine only below an insecure delegation
            // the zone's server did not tell us about (it serves the child too).
            if let Some(s) = self.insecure_cut_between(&signer, owner, budget).await? {
                return Ok((s, None));
            }
            return Ok((bogus_of(Failure::NoSignature, &signer, &what), None));
        }
        let data: Vec<&Record> = set.iter().filter(|r| r.record_type() == rtype).collect();
        let v = &self.shared.validator;
        let verified = verify_rrset(
            owner,
            u16::from(rtype),
            &data,
            &sigs,
            &signer,
            &keys,
            self.upstream.unix_now(),
            v.sha1,
            &budget.sig_checks_left,
        );
        match verified {
            Err(f) => Ok((status_of(f, &signer, &what)?, None)),
            Ok(Verified { ttl_cap, wildcard_parent: None, .. }) => Ok((Security::Secure, Some(ttl_cap))),
            Ok(Verified { ttl_cap, wildcard_parent: Some(parent), .. }) => {
                // RFC 4035 section 5.3.4: the expanded name itself must be proven absent,
                // by the zone's signed NSEC or NSEC3 records; none at all is bogus.
                let (nsecs, nsec3s, proof_cap, status) = self.verified_denials(&signer, &keys, proofs, budget)?;
                if let Some(bad) = status {
                    return Ok((bad, None));
                }
                if nsecs.is_empty() && nsec3s.is_empty() {
                    let text = format!("{}: {what}: a wildcard expansion without its proof", signer.to_ascii());
                    return Ok((Security::bogus(Ede::NsecMissing, text), None));
                }
                let proof = if !nsecs.is_empty() {
                    denial::nsec_wildcard_answer(owner, &parent, &nsecs)
                } else {
                    denial::nsec3_wildcard_answer(owner, &parent, &signer, &nsec3s, &self.nsec3_limits(budget))
                };
                Ok((self.proof_status(proof, &signer, &what)?, Some(ttl_cap.min(proof_cap))))
            }
        }
    }

    /// RFC 4035 section 3.1.4: a signed parent's referral to `child` carries the child's
    /// DS RRset or the NSEC/NSEC3 proof that there is none (`records`). Validated here and
    /// cached as the answer to a DS query would be, so the chain of trust needs no DS query
    /// of its own, and a parent that answers DS queries badly does not break it. Anything
    /// that does not validate as secure (or not within the query's limits) is dropped: the
    /// DS query then decides.
    pub(crate) async fn take_referral_ds(
        &self,
        zone: &Name,
        child: &Name,
        records: Vec<Record>,
        budget: &Budget,
    ) -> Result<(), ResolveError> {
        let ds_type = u16::from(RecordType::DS);
        let now = self.upstream.now();
        if !self.validating(child) || self.shared.records.contains(child, ds_type, now) {
            return Ok(());
        }
        // Only the parent's own signatures count here: anything signed by another zone is
        // left to the DS query.
        if !signatures(&records).iter().all(|s| s.signer == *zone) {
            return Ok(());
        }
        let (ds, proofs): (Vec<Record>, Vec<Record>) = records.into_iter().partition(|r| {
            r.name == *child && (r.record_type() == RecordType::DS || super::response::rrsig_covers(r) == Some(ds_type))
        });
        let cache = &self.shared.records;
        let rank = crate::cache::records::Rank::AuthAnswer;
        if ds.iter().any(|r| r.record_type() == RecordType::DS) {
            let Ok((Security::Secure, cap)) = self.validate_rrset(zone, child, RecordType::DS, &ds, &[], budget).await
            else {
                return Ok(());
            };
            let mut ds = ds;
            for r in &mut ds {
                r.ttl = r.ttl.min(cap.unwrap_or(u32::MAX));
            }
            cache.put_checked(child, ds_type, ds, rank, Security::Secure, self.upstream.now());
        } else if !proofs.is_empty() {
            let proofs = vouched_denial(proofs, child, RecordType::DS, zone);
            let Ok((Security::Secure, cap)) =
                self.validate_negative(zone, child, RecordType::DS, false, &proofs, budget).await
            else {
                return Ok(());
            };
            let ttl = proofs.iter().map(|r| r.ttl).min().unwrap_or(0).min(cap.unwrap_or(u32::MAX));
            cache.put_negative(child, ds_type, proofs, ttl, Security::Secure, self.upstream.now(), None);
        }
        Ok(())
    }

    /// Looks for an insecure delegation between the secure `zone` and `name` below it,
    /// asking the DS of each name in between, top-down (as Unbound does when a server
    /// answers for a child zone it also serves). `Some(Insecure)` when one is proven.
    async fn insecure_cut_between(
        &self,
        zone: &Name,
        name: &Name,
        budget: &Budget,
    ) -> Result<Option<Security>, ResolveError> {
        let (top, bottom) = (crate::names::labels(zone), crate::names::labels(name));
        for n in (top + 1..=bottom).take(MAX_CUT_WALK) {
            let cut = name.trim_to(n);
            // Validating this very DS (its answer came from below the cut) must not ask it
            // again: that would recurse until the budget ran out.
            if budget.cut_walks.borrow().contains(&cut) {
                return Ok(None);
            }
            budget.cut_walks.borrow_mut().push(cut.clone());
            let found = self.cut_is_insecure(&cut, budget).await;
            budget.cut_walks.borrow_mut().retain(|c| *c != cut);
            match found? {
                Some(true) => return Ok(Some(Security::insecure())),
                Some(false) => continue,
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Whether `cut` is a proven insecure delegation (`Some(true)`), provably not one
    /// (`Some(false)`: keep walking down), or neither (`None`: a signed child, or nothing
    /// is proven).
    async fn cut_is_insecure(&self, cut: &Name, budget: &Budget) -> Result<Option<bool>, ResolveError> {
        let step = match self.lookup(cut, RecordType::DS, budget, 0).await {
            Ok(s) => s,
            Err(e @ ResolveError::LimitExceeded(_)) => return Err(e),
            Err(_) => return Ok(None),
        };
        if step.rcode != crate::wire::rcode::NOERROR {
            return Ok(None);
        }
        match step.security {
            // An opt-out span: the name may be an unsigned delegation.
            Security::Insecure(_) => return Ok(Some(true)),
            Security::Secure => {}
            _ => return Ok(None),
        }
        if step.records.iter().any(|r| r.record_type() == RecordType::DS) {
            return Ok(None); // a signed child: its data must be signed
        }
        // No DS, proven: a delegation if the proof (NSEC or NSEC3) shows NS there.
        let (nsecs, nsec3s) = denial_records(&step.authority);
        let proof_zone = nsec3s.first().map(|(o, _)| o.base_name()).unwrap_or_else(|| cut.base_name());
        let delegation = denial::delegation_without_ds(cut, &proof_zone, &nsecs, &nsec3s, &self.nsec3_limits(budget));
        Ok(Some(delegation == Some(true)))
    }

    fn nsec3_limits<'a>(&self, budget: &'a Budget) -> Nsec3Limits<'a> {
        Nsec3Limits {
            max_iterations: self.shared.validator.nsec3_max_iterations,
            hashes_left: &budget.nsec3_hashes_left,
        }
    }

    fn proof_status(&self, proof: Proof, signer: &Name, what: &str) -> Result<Security, ResolveError> {
        Ok(match proof {
            Proof::Exhausted => return Err(ResolveError::LimitExceeded(Limit::Nsec3Hashes)),
            Proof::Secure => Security::Secure,
            Proof::Insecure(Insecure::Iterations(n)) => Security::insecure_because(
                Ede::UnsupportedNsec3Iterations,
                format!(
                    "{}: NSEC3 iterations {n} above the limit {}",
                    signer.to_ascii(),
                    self.shared.validator.nsec3_max_iterations
                ),
            ),
            Proof::Insecure(_) => Security::insecure(),
            Proof::Bogus(why) => Security::bogus(Ede::DnssecBogus, format!("{}: {what}: {why}", signer.to_ascii())),
        })
    }

    /// Verifies an RRset of a denial (SOA, NSEC, NSEC3) unless the very same records were
    /// validated before: negative answers from one zone carry the same few NSEC3 and SOA
    /// RRsets again and again, and those are kept in the record cache with their status
    /// (as Unbound's RRset cache does), so each costs its signature checks once per TTL
    /// (the copy is used while [`fresh_enough`]).
    fn check_proof_rrset(
        &self,
        owner: &Name,
        rtype: RecordType,
        set: &[Record],
        signer: &Name,
        keys: &[Dnskey],
        budget: &Budget,
    ) -> Result<u32, Failure> {
        let cache = &self.shared.records;
        let now = self.upstream.now();
        let data: Vec<&Record> = set.iter().filter(|r| r.record_type() == rtype).collect();
        // The shortcut holds for small RRsets signed by the same zone (a hostile proof of
        // thousands of records is simply verified, within the query's allowance).
        if data.len() <= MAX_RECOGNISED_RRSET
            && let Some(hit) = cache.get(owner, u16::from(rtype), now)
            && hit.security == Security::Secure
            && let crate::cache::records::CachedData::RRset(cached) = &hit.data
            && fresh_enough(hit.ttl_left, stored_life(cached, rtype).min(cache.max_ttl()))
            && signatures(cached).iter().any(|s| s.signer == *signer)
            && same_data(cached, &data, rtype)
        {
            return Ok(hit.ttl_left);
        }
        let v = &self.shared.validator;
        let sigs = signatures(set);
        let verified = verify_rrset(
            owner,
            u16::from(rtype),
            &data,
            &sigs,
            signer,
            keys,
            self.upstream.unix_now(),
            v.sha1,
            &budget.sig_checks_left,
        )?;
        if verified.wildcard_parent.is_some() {
            // A proof record signed as a wildcard (labels below its owner's) is a signed
            // `*.zone` record replayed at another owner: never evidence of anything.
            return Err(Failure::Invalid);
        }
        let mut kept = set.to_vec();
        for r in kept.iter_mut() {
            r.ttl = r.ttl.min(verified.ttl_cap);
        }
        cache.put_checked(
            owner,
            u16::from(rtype),
            kept,
            crate::cache::records::Rank::AuthAnswer,
            Security::Secure,
            now,
        );
        Ok(verified.ttl_cap)
    }

    /// The NSEC and NSEC3 RRsets among `records` that verify with `keys`, and the TTL
    /// their signatures allow (RFC 4035 section 5.3.3: the least of them); a status when
    /// one of them does not verify (bogus) or when none is there (`None` in that case too:
    /// the callers decide what a missing proof means).
    #[allow(clippy::type_complexity, reason = "four results of one pass")]
    fn verified_denials(
        &self,
        signer: &Name,
        keys: &[Dnskey],
        records: &[Record],
        budget: &Budget,
    ) -> Result<(Vec<(Name, Nsec)>, Vec<(Name, Nsec3)>, u32, Option<Security>), ResolveError> {
        let (mut nsecs, mut nsec3s, mut ttl_cap) = (Vec::new(), Vec::new(), u32::MAX);
        for (owner, rtype, set) in super::iterate::group_rrsets(records) {
            if !matches!(rtype, RecordType::NSEC | RecordType::NSEC3) || !signer.zone_of(&owner) {
                continue;
            }
            match self.check_proof_rrset(&owner, rtype, &set, signer, keys, budget) {
                Ok(cap) => ttl_cap = ttl_cap.min(cap),
                Err(f) => {
                    let what = format!("{} {rtype}", owner.to_ascii());
                    return Ok((nsecs, nsec3s, ttl_cap, Some(status_of(f, signer, &what)?)));
                }
            }
            let (n, n3) = denial_records(&set);
            nsecs.extend(n);
            nsec3s.extend(n3);
        }
        Ok((nsecs, nsec3s, ttl_cap, None))
    }

    /// The status of a negative answer (NXDOMAIN when `nxdomain`, else NODATA) that a
    /// server of `zone` sent for `qname`/`qtype`, from the SOA and NSEC/NSEC3 records of
    /// its authority section.
    pub(crate) async fn validate_negative(
        &self,
        zone: &Name,
        qname: &Name,
        qtype: RecordType,
        nxdomain: bool,
        authority: &[Record],
        budget: &Budget,
    ) -> Result<(Security, Option<u32>), ResolveError> {
        if !self.validating(qname) {
            return Ok((Security::insecure(), None));
        }
        let sigs = signatures(authority);
        let signer = signer_of(&sigs, qname, qtype, zone);
        if qtype == RecordType::DNSKEY && ((qname == zone && !nxdomain) || signer == *qname) {
            // A zone without keys (at the cut asked, or at a child apex its parent's server
            // answered for): fine if nothing vouches for keys, bogus otherwise.
            return Ok((
                match self.trust_of(qname, budget).await? {
                    Trust::Not(s) => s,
                    _ => Security::bogus(Ede::DnskeyMissing, format!("{}: DNSKEY missing", qname.to_ascii())),
                },
                None,
            ));
        }
        let keys = match self.zone_keys(&signer, budget).await? {
            Keys::Not(s) => return Ok((s, None)),
            Keys::Secure(k) => k,
        };
        let what = format!("{} {qtype}", qname.to_ascii());
        if sigs.is_empty()
            && let Some(s) = self.insecure_cut_between(&signer, qname, budget).await?
        {
            return Ok((s, None));
        }
        // The SOA must verify too (it carries the negative TTL), and the proofs' signatures
        // bound how long the denial may be kept.
        let mut ttl_cap = u32::MAX;
        for (owner, rtype, set) in super::iterate::group_rrsets(authority) {
            if rtype == RecordType::SOA {
                match self.check_proof_rrset(&owner, rtype, &set, &signer, &keys, budget) {
                    Ok(cap) => ttl_cap = ttl_cap.min(cap),
                    Err(f) => return Ok((status_of(f, &signer, &format!("{} SOA", owner.to_ascii()))?, None)),
                }
            }
        }
        let (nsecs, nsec3s, proof_cap, bad) = self.verified_denials(&signer, &keys, authority, budget)?;
        ttl_cap = ttl_cap.min(proof_cap);
        if let Some(bad) = bad {
            return Ok((bad, None));
        }
        if nsecs.is_empty() && nsec3s.is_empty() {
            let text = format!("{}: {what}: no NSEC or NSEC3 record", signer.to_ascii());
            return Ok((Security::bogus(Ede::NsecMissing, text), None));
        }
        let t = u16::from(qtype);
        let limits = self.nsec3_limits(budget);
        let proof = match (nsecs.is_empty(), nxdomain) {
            (false, true) => denial::nsec_nxdomain(qname, &nsecs),
            (false, false) => denial::nsec_nodata(qname, t, &nsecs),
            (true, true) => denial::nsec3_nxdomain(qname, &signer, &nsec3s, &limits),
            (true, false) => denial::nsec3_nodata(qname, t, &signer, &nsec3s, &limits),
        };
        Ok((self.proof_status(proof, &signer, &what)?, Some(ttl_cap)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(alg: u8, digest_type: u8) -> Ds {
        Ds { key_tag: 1, algorithm: alg, digest_type, digest: vec![0; 32] }
    }

    /// RFC 4509 section 3: SHA-1 DS records are ignored when a SHA-256 (or SHA-384) one is
    /// there; RFC 4035 section 5.2: unsupported digests and algorithms are dropped.
    #[test]
    fn rfc4509_3_sha1_ds_is_ignored_beside_sha256_and_unsupported_ones_are_dropped() {
        let kept = usable_ds(vec![ds(13, 1), ds(13, 2), ds(13, 4)], true);
        assert_eq!(kept.iter().map(|d| d.digest_type).collect::<Vec<_>>(), [2, 4]);
        let only_sha1 = usable_ds(vec![ds(8, 1)], true);
        assert_eq!(only_sha1.len(), 1, "SHA-1 alone is still used");
        assert!(usable_ds(vec![ds(13, 6), ds(253, 2)], true).is_empty());
        assert!(usable_ds(vec![ds(5, 2)], false).is_empty(), "algorithm 5 switched off");
        assert_eq!(usable_ds(vec![ds(5, 2)], true).len(), 1);
    }

    /// A raw record of `rtype` at `owner`.
    fn raw_record(owner: &str, rtype: RecordType, rdata: Vec<u8>) -> Record {
        use hickory_proto::rr::rdata::NULL;
        Record::from_rdata(owner.parse().unwrap(), 300, RData::Unknown { code: rtype, rdata: NULL::with(rdata) })
    }

    /// An RRSIG over `covered` by `signer` (header only: enough for the signer field).
    fn rrsig(owner: &str, covered: RecordType, signer: &str) -> Record {
        let mut rdata = u16::from(covered).to_be_bytes().to_vec();
        rdata.extend_from_slice(&[13, 2, 0, 0, 1, 44, 0, 0, 0, 2, 0, 0, 0, 1, 0, 1]);
        rdata.extend(crate::dnssec::rdata::name_wire_lower(&signer.parse().unwrap()));
        rdata.extend_from_slice(&[0; 64]);
        raw_record(owner, RecordType::RRSIG, rdata)
    }

    /// Only what the denial's signer vouches for is kept for the cache: an NSEC3 of another
    /// zone (above the signer, where an attacker answering for the parent could put one in
    /// front of a genuine proof) and signatures by other zones are dropped, wherever they
    /// stand in the section.
    #[test]
    fn a_cached_denial_keeps_only_the_signers_records() {
        let nsec3 = |owner: &str| raw_record(owner, RecordType::NSEC3, vec![1, 0, 0, 0, 0, 20]);
        let forged = "0p9mhaveqvm6t7vbl5lop2u3t2rp3tom.example.";
        let genuine = "35mthgpgcu1qg68fab165klnsnk3dpvl.sub.example.";
        let authority = vec![
            rrsig(genuine, RecordType::NSEC3, "sub.example."),
            nsec3(forged),
            rrsig(forged, RecordType::NSEC3, "example."),
            nsec3(genuine),
        ];
        let kept =
            vouched_denial(authority, &"a.sub.example.".parse().unwrap(), RecordType::DS, &"example.".parse().unwrap());
        let owners: Vec<String> = kept.iter().map(|r| format!("{} {}", r.name, r.record_type())).collect();
        assert_eq!(owners, [format!("{genuine} RRSIG"), format!("{genuine} NSEC3")]);
    }
}
