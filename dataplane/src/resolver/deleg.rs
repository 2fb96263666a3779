//! Experimental DELEG on the resolver's side (`transport.deleg`; the records are read in
//! `upstream::deleg`): a referral's DELEG RRset is validated against the parent's keys
//! like a DS, cached at the child under its type (referral-ranked, never served to
//! clients), and read back by the transport plan of every exchange with the child's
//! servers. A referral without one leaves that absence in its place, for as long as the
//! delegation, so that a cut is asked of its parent again when neither is known.

use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::iterate::MAX_NS_NAMES;
use super::{Budget, ResolveError, Resolver, Upstream};
use crate::cache::records::{CachedData, Rank};
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

impl<U: Upstream + Clone + 'static> Resolver<U> {
    /// Takes the DELEG records (with RRSIGs) of a referral from `zone` to `child`: validated
    /// and cached (or their absence cached, as long as the NS RRset's `ns_ttl`). Returns
    /// the servers to follow when the RRset is secure and names some.
    pub(super) async fn take_referral_deleg(
        &self,
        zone: &Name,
        child: &Name,
        mut records: Vec<Record>,
        ns_ttl: u32,
        budget: &Budget,
    ) -> Result<Option<DelegServers>, ResolveError> {
        let cache = &self.shared.records;
        if rdatas(&records).next().is_none() {
            cache.put_referral_absence(child, DELEG_TYPE, ns_ttl, Security::insecure(), self.upstream.now());
            return Ok(None);
        }
        let (security, cap) =
            self.validate_rrset(zone, child, RecordType::from(DELEG_TYPE), &records, &[], budget).await?;
        let now = self.upstream.now();
        if let Security::Bogus(why) = &security {
            // Ignored, as a bogus signal is: the delegation stands on its NS RRset, and the
            // absence is kept briefly, like bogus data.
            self.stats.deleg_bogus.bump();
            tracing::debug!(%child, reason = %why.text, "bogus DELEG RRset ignored");
            let ttl = ns_ttl.min(self.shared.validator.bogus_ttl);
            cache.put_referral_absence(child, DELEG_TYPE, ttl, Security::insecure(), now);
            return Ok(None);
        }
        let secure = security == Security::Secure;
        if secure {
            self.stats.deleg_secure.bump()
        } else {
            self.stats.deleg_insecure.bump()
        }
        if let Some(cap) = cap {
            for r in &mut records {
                r.ttl = r.ttl.min(cap);
            }
        }
        let (infos, refused) = parse_deleg_set(rdatas(&records));
        if !refused.is_empty() {
            tracing::debug!(%child, ?refused, "DELEG records skipped");
        }
        let rule = DelegRule { infos, secure };
        cache.put_checked(child, DELEG_TYPE, records.clone(), Rank::Referral, security, now);
        // As many names as a referral's NS RRset may contribute.
        let names: Vec<Name> = rule.server_names().into_iter().take(MAX_NS_NAMES).collect();
        if !secure || names.is_empty() {
            return Ok(None);
        }
        // A DelegInfo's addresses belong to its names when it gives both (as many as a
        // referral's glue may hold).
        let ttl = records.iter().map(|r| r.ttl).min().unwrap_or(0);
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
        Ok(Some(DelegServers { names, glue }))
    }

    /// The cached DELEG rule of `zone`, if its parent gave one (with `transport.deleg`).
    pub(super) fn deleg_rule(&self, zone: &Name) -> Option<DelegRule> {
        if !self.shared.settings.deleg {
            return None;
        }
        let hit = self.shared.records.get(zone, DELEG_TYPE, self.upstream.now())?;
        let CachedData::RRset(records) = &hit.data else { return None };
        let (infos, _) = parse_deleg_set(rdatas(records));
        (!infos.is_empty()).then_some(DelegRule { infos, secure: hit.security == Security::Secure })
    }
}
