//! Aggressive use of the DNSSEC-validated cache (RFC 8198), for NSEC: secure denials leave
//! their NSEC spans in the record cache (`cache/nsec_spans.rs`); a later question for a
//! name inside a span already proven empty is denied from them (NXDOMAIN, or NODATA at a
//! name whose NSEC lacks the type), with the zone's SOA and the spans as the proof, and
//! nobody is asked. The proof is checked by the same code that checks a server's denial
//! (`dnssec::denial`), so a synthesized answer proves no more than a served one would.
//!
//! NSEC3 spans are not used: their owners are hashes, so each question would cost hashes
//! (bounded, but an attacker picks the names), and opt-out spans prove nothing (RFC 8198
//! section 5.1 leaves NSEC3 optional; Unbound does NSEC only too).

use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::iterate::Step;
use super::{Resolver, Upstream};
use crate::cache::nsec_spans::NewSpan;
use crate::cache::records::{CachedData, with_ttl};
use crate::dnssec::Security;
use crate::dnssec::denial::{self, Proof};
use crate::dnssec::rdata::{Nsec, Rrsig};
use crate::names::canonical;
use crate::wire::rcode;

/// From a secure denial's authority records (as cached: vouched for and TTL-capped): the
/// signing zone, its SOA records and the NSEC spans with their RRSIGs. `None` when the
/// records do not form one zone's NSEC denial (NSEC3, or a SOA from another zone).
pub(super) fn spans_of(authority: &[Record]) -> Option<(Name, Vec<Record>, Vec<NewSpan>)> {
    let covering = |r: &Record, t: RecordType| {
        r.record_type() == RecordType::RRSIG
            && super::validate::raw(r).and_then(Rrsig::parse).is_some_and(|s| s.type_covered == u16::from(t))
    };
    let zone = canonical(&authority.iter().find(|r| r.record_type() == RecordType::SOA)?.name);
    let soa: Vec<Record> = authority
        .iter()
        .filter(|r| canonical(&r.name) == zone && (r.record_type() == RecordType::SOA || covering(r, RecordType::SOA)))
        .cloned()
        .collect();
    let mut spans = Vec::new();
    for r in authority.iter().filter(|r| r.record_type() == RecordType::NSEC) {
        let owner = canonical(&r.name);
        let nsec = Nsec::parse(super::validate::raw(r)?)?;
        if !zone.zone_of(&owner) {
            return None;
        }
        let mut records = vec![r.clone()];
        records
            .extend(authority.iter().filter(|s| canonical(&s.name) == owner && covering(s, RecordType::NSEC)).cloned());
        spans.push((owner, nsec, records));
    }
    (!spans.is_empty()).then_some((zone, soa, spans))
}

/// Whether the cached records hold exactly the `rtype` records of `set`.
fn same_data(cached: &[Record], set: &[Record], rtype: RecordType) -> bool {
    let of = |s: &[Record]| -> Vec<RData> {
        let mut v: Vec<RData> = s.iter().filter(|r| r.record_type() == rtype).map(|r| r.data.clone()).collect();
        v.sort_by_key(|d| format!("{d:?}"));
        v
    };
    of(cached) == of(set)
}

impl<U: Upstream + Clone + 'static> Resolver<U> {
    /// The record cache's secure copy of (`owner`, `rtype`) when it holds the same data as
    /// `set`, with its TTL left: validation leaves every proof RRset there with the
    /// signatures it verified, while the response's own RRSIGs may not have been checked
    /// (a proof recognised from the cache is not verified again).
    fn verified_copy(&self, owner: &Name, rtype: RecordType, set: &[Record]) -> Option<Vec<Record>> {
        let hit = self.shared.records.get(owner, u16::from(rtype), self.upstream.now())?;
        match &hit.data {
            CachedData::RRset(cached) if hit.security == Security::Secure && same_data(cached, set, rtype) => {
                Some(with_ttl(cached, hit.ttl_left))
            }
            _ => None,
        }
    }

    /// Keeps the NSEC spans of a secure denial for later questions, each with the
    /// signatures validation verified (spans whose verified copy is gone are skipped).
    pub(super) fn learn_spans(&self, authority: &[Record], ttl: u32, now: std::time::Instant) {
        let spans = self.shared.records.spans();
        if !spans.enabled() {
            return;
        }
        let Some((zone, soa, found)) = spans_of(authority) else { return };
        let Some(soa) = self.verified_copy(&zone, RecordType::SOA, &soa) else { return };
        let found: Vec<NewSpan> = found
            .into_iter()
            .filter_map(|(owner, nsec, records)| {
                let verified = self.verified_copy(&owner, RecordType::NSEC, &records)?;
                Some((owner, nsec, verified))
            })
            .collect();
        spans.learn(&zone, soa, found, ttl, now);
    }

    /// A denial of (`name`, `qtype`) proven by validated NSEC spans, if the cache holds
    /// enough of them: the covering span and, for an NXDOMAIN, the one covering the
    /// wildcard at the closest encloser.
    pub(super) fn synthesized_denial(&self, name: &Name, qtype: RecordType) -> Option<Step> {
        let spans = self.shared.records.spans();
        if !spans.enabled() || !self.shared.validator.covers(name) {
            return None;
        }
        // A DS (and a DELEG) is the parent zone's data.
        let parent_side = qtype == RecordType::DS || u16::from(qtype) == crate::upstream::deleg::DELEG_TYPE;
        let home = if parent_side && !name.is_root() { name.base_name() } else { name.clone() };
        let view = spans.zone_for(&home, self.upstream.now())?;
        // Spans of a zone above a forward or stub zone (the public side) deny nothing in it.
        if self.shared.zones.load().configured_apex(name).is_some_and(|apex| crate::names::is_below(apex, view.zone()))
        {
            return None;
        }
        let mut used = vec![view.at_or_before(name)?];
        if used[0].owner != *name
            && let Some(wild) = denial::nsec_wildcard_to_deny(name, &used[0].owner, &used[0].nsec.next)
            && view.zone().zone_of(&wild)
            && let Some(w) = view.at_or_before(&wild)
            && w.owner != used[0].owner
        {
            used.push(w);
        }
        let (soa, soa_ttl) = view.soa.clone();
        drop(view);
        // No bitmap lists a meta type (ANY above all): an NSEC at the name says nothing of
        // what ANY would return, so only NXDOMAIN is synthesized for them (as Unbound).
        let meta = (128..=255).contains(&u16::from(qtype));
        let nsecs: Vec<(Name, Nsec)> = used.iter().map(|s| (s.owner.clone(), s.nsec.clone())).collect();
        let rcode = if denial::nsec_nxdomain(name, &nsecs) == Proof::Secure {
            rcode::NXDOMAIN
        } else if !meta && denial::nsec_nodata(name, u16::from(qtype), &nsecs) == Proof::Secure {
            rcode::NOERROR
        } else {
            return None;
        };
        let ttl = used.iter().map(|s| s.ttl_left).min()?.min(soa_ttl);
        if ttl == 0 {
            return None;
        }
        let mut authority = with_ttl(&soa, ttl);
        for s in &used {
            authority.extend(with_ttl(&s.records, ttl));
        }
        self.stats.aggressive_nsec.bump();
        Some(Step { rcode, authority, security: Security::Secure, ..Step::default() })
    }
}
