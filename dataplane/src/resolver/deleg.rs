//! Experimental DELEG on the resolver's side (`transport.deleg`; the records are read in
//! `upstream::deleg`): a referral's DELEG RRset is the parent's data, validated against
//! the parent's keys like a DS (signed by the parent and by nothing else; unsigned under a
//! secure parent, or bogus, fails the resolution), and cached at the child under a private
//! key clients cannot ask for ([`DELEG_KEY`]), referral-ranked. It is read back by the
//! transport plan of every exchange with the child's servers and by the walk, which
//! follows its server names. A referral without one leaves that absence in its place, for
//! as long as the delegation, so that a cut is asked of its parent again when neither is
//! known; a live secure rule outlasts referrals that come without it.

use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::iterate::MAX_NS_NAMES;
use super::validate::{Keys, signatures};
use super::{Budget, ResolveError, Resolver, Upstream};
use crate::cache::records::{CachedData, DELEG_KEY, Rank};
use crate::dnssec::Security;
use crate::upstream::deleg::{DELEG_TYPE, DelegRule, parse_deleg_set};

/// Addresses taken from a DELEG RRset per server name (glue holds no more in practice).
const MAX_GLUE_PER_NAME: usize = 4;

/// The servers a secure DELEG RRset names for a child zone, in place of its NS RRset.
pub(crate) struct DelegServers {
    /// The nameserver names.
    pub(crate) names: Vec<Name>,
    /// Addresses the RRset gives for those names (kept for this walk, not cached).
    pub(crate) glue: Vec<Record>,
}

fn rdatas(records: &[Record]) -> impl Iterator<Item = &[u8]> {
    records.iter().filter(|r| u16::from(r.record_type()) == DELEG_TYPE).filter_map(|r| match &r.data {
        RData::Unknown { rdata, .. } => Some(rdata.anything.as_slice()),
        _ => None,
    })
}

/// The servers a rule names: at most as many names as an NS RRset contributes, and a few
/// addresses per name from the DelegInfos that give both (`ttl` for those).
pub(crate) fn servers_of(rule: &DelegRule, ttl: u32) -> DelegServers {
    let names: Vec<Name> = rule.server_names().into_iter().take(MAX_NS_NAMES).collect();
    let mut glue = Vec::new();
    for info in rule.infos.iter().filter(|i| !i.names.is_empty()) {
        for name in info.names.iter().filter(|n| names.contains(n)) {
            for addr in info.addrs.iter().take(MAX_GLUE_PER_NAME) {
                let data = match addr {
                    IpAddr::V4(a) => RData::A(A(*a)),
                    IpAddr::V6(a) => RData::AAAA(AAAA(*a)),
                };
                glue.push(Record::from_rdata(name.clone(), ttl, data));
            }
        }
    }
    DelegServers { names, glue }
}

impl<U: Upstream + Clone + 'static> Resolver<U> {
    /// Takes the DELEG records (with RRSIGs) of a referral from `zone` to `child`: validated
    /// and cached (or their absence cached, as long as the NS RRset's `ns_ttl`). Returns
    /// the rule and the servers to follow when the child has a secure rule that names
    /// some (this referral's, or a live one a referral without DELEG cannot end).
    pub(super) async fn take_referral_deleg(
        &self,
        zone: &Name,
        child: &Name,
        mut records: Vec<Record>,
        ns_ttl: u32,
        budget: &Budget,
    ) -> Result<Option<(DelegRule, DelegServers)>, ResolveError> {
        let cache = &self.shared.records;
        if rdatas(&records).next().is_none() {
            // Stripped on the way, or dropped by the parent before the TTL of what it
            // signed: the rule in force stays until then.
            if let Some(rule) = self.deleg_rule(child).filter(|r| r.secure) {
                let servers = servers_of(&rule, ns_ttl);
                return Ok((!servers.names.is_empty()).then_some((rule, servers)));
            }
            cache.put_referral_absence(child, DELEG_KEY, ns_ttl, Security::insecure(), self.upstream.now());
            return Ok(None);
        }
        let security = self.deleg_security(zone, child, &mut records, budget).await?;
        if let Security::Bogus(why) = &security {
            // The parent's signed word on the child cannot be read: as with a bogus DS,
            // the delegation is not followed (no downgrade to the NS RRset beside it).
            self.stats.deleg_bogus.bump();
            crate::rate_limited!(info, %child, reason = %why.text, "bogus DELEG RRset: delegation not followed");
            return Err(ResolveError::InvalidData(format!("DELEG for {child} is DNSSEC-bogus: {}", why.text)));
        }
        let secure = security == Security::Secure;
        if secure {
            self.stats.deleg_secure.bump()
        } else {
            self.stats.deleg_insecure.bump()
        }
        let (infos, refused) = parse_deleg_set(rdatas(&records));
        if !refused.is_empty() {
            tracing::debug!(%child, ?refused, "DELEG records skipped");
        }
        let rule = DelegRule { infos, secure };
        let now = self.upstream.now();
        // At least a second: a zero TTL must not leave this walk's exchanges without the
        // rule it just followed.
        for r in &mut records {
            r.ttl = r.ttl.max(1);
        }
        let ttl = records.iter().map(|r| r.ttl).min().unwrap_or(1);
        cache.put_checked(child, DELEG_KEY, records, Rank::Referral, security, now);
        if !secure {
            return Ok(None);
        }
        let servers = servers_of(&rule, ttl);
        Ok((!servers.names.is_empty()).then_some((rule, servers)))
    }

    /// The DNSSEC status of a referral's DELEG RRset: the parent's data, so signed by the
    /// parent only (another signer, or none under a secure parent, is bogus), its TTLs
    /// capped at the signatures' expiry.
    async fn deleg_security(
        &self,
        zone: &Name,
        child: &Name,
        records: &mut [Record],
        budget: &Budget,
    ) -> Result<Security, ResolveError> {
        let bogus = |what: &str| Security::bogus(crate::ede::Ede::DnssecBogus, format!("{child}: DELEG {what}"));
        let sigs = signatures(records);
        if sigs.iter().any(|s| s.signer != *zone) {
            return Ok(bogus("signed by another zone than its parent"));
        }
        if sigs.is_empty() {
            // Unsigned: fine only where the parent itself is not secure.
            if !self.shared.validator.covers(zone) {
                return Ok(Security::insecure());
            }
            return Ok(match self.zone_keys(zone, budget).await? {
                Keys::Secure(_) => bogus("unsigned under a secure parent"),
                Keys::Not(status) => status,
            });
        }
        let (security, cap) =
            self.validate_rrset(zone, child, RecordType::from(DELEG_TYPE), records, &[], budget).await?;
        if let Some(cap) = cap {
            for r in records.iter_mut() {
                r.ttl = r.ttl.min(cap);
            }
        }
        Ok(security)
    }

    /// The cached DELEG rule of `zone`, if its parent gave one (with `transport.deleg`):
    /// only the parent side's entry counts.
    pub(crate) fn deleg_rule(&self, zone: &Name) -> Option<DelegRule> {
        if !self.shared.settings.deleg {
            return None;
        }
        let hit = self.shared.records.get(zone, DELEG_KEY, self.upstream.now())?;
        if hit.rank != Rank::Referral {
            return None;
        }
        let CachedData::RRset(records) = &hit.data else { return None };
        let (infos, _) = parse_deleg_set(rdatas(records));
        (!infos.is_empty()).then_some(DelegRule { infos, secure: hit.security == Security::Secure })
    }
}
