//! Iterative resolution: from the closest cached zone cut (or the root, primed lazily),
//! follow referrals down, minimising the QNAME (RFC 9156, relaxed), chase CNAME/DNAME
//! chains, cache what is learnt by trust rank, and answer negatives per RFC 2308/8020.

use std::future::Future;
use std::pin::Pin;

use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::response::{Reply, apply_dname, dname_target, rrsig_covers};
use super::trace::TraceStep;
use super::zones::Served;
use super::{Answer, Budget, Limit, ResolveError, Resolver, Upstream};
use crate::cache::records::{CachedData, DELEGATION_KEY, Hit, NXDOMAIN_KEY, Rank, RecordCache, with_ttl};
use crate::dnssec::Security;
use crate::names::{canonical, is_below, labels, parent};
use crate::wire::rcode;

/// RFC 9156 MAX_MINIMISE_COUNT: minimised queries before sending the full name.
const MAX_MINIMISE: u32 = 10;

/// NSEC/NSEC3 records (RRSIGs included) kept as the proof of one wildcard expansion: a
/// proof needs one or two RRsets; a server's extra ones are not carried along.
const MAX_PROOF_RECORDS: usize = 8;

/// One step of a resolution: records for the answer section, and either a terminal
/// disposition (`next` empty) or the name the chain continues at.
#[derive(Debug, Default)]
pub(crate) struct Step {
    pub(crate) rcode: u8,
    pub(crate) records: Vec<Record>,
    pub(crate) authority: Vec<Record>,
    pub(crate) next: Option<Name>,
    /// DNSSEC status of this step's records (or of its denial).
    pub(crate) security: Security,
    /// For records synthesized from a wildcard: the NSEC/NSEC3 proof (with RRSIGs) that
    /// the name itself does not exist, for the authority section of a DO client's answer.
    pub(crate) proofs: Vec<Record>,
    /// Read from expired data (serve-stale).
    pub(crate) stale: bool,
}

type StepFuture<'a> = Pin<Box<dyn Future<Output = Result<Step, ResolveError>> + 'a>>;

pub(super) fn rrset_records(hit: &CachedData) -> Option<&[Record]> {
    match hit {
        CachedData::RRset(r) => Some(r),
        _ => None,
    }
}

/// The nameserver names of an NS RRset: at most [`MAX_NS_NAMES`] of them, wherever the
/// RRset came from (a referral, or an NS answer a client asked for and the cache kept).
pub(super) fn ns_names(records: &[Record]) -> Vec<Name> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::NS(n) => Some(canonical(&n.0)),
            _ => None,
        })
        .take(MAX_NS_NAMES)
        .collect()
}

/// Nameserver names of one zone used at most (as many as a referral contributes).
pub(super) const MAX_NS_NAMES: usize = 20;

/// Splits records into RRsets keyed by (owner, type), RRSIGs attached to what they cover.
pub(crate) fn group_rrsets(records: &[Record]) -> Vec<(Name, RecordType, Vec<Record>)> {
    let mut sets: Vec<(Name, RecordType, Vec<Record>)> = Vec::new();
    for r in records {
        let rtype = match rrsig_covers(r) {
            Some(covered) => RecordType::from(covered),
            None => r.record_type(),
        };
        match sets.iter_mut().find(|(n, t, _)| *n == r.name && *t == rtype) {
            Some((_, _, v)) => v.push(r.clone()),
            None => sets.push((r.name.clone(), rtype, vec![r.clone()])),
        }
    }
    sets
}

/// Caps every TTL at `max` (records fresh from upstream, before they reach a client or
/// the packet cache; the record cache caps its own copies too).
fn cap_ttls(mut records: Vec<Record>, max: u32) -> Vec<Record> {
    for r in records.iter_mut() {
        r.ttl = r.ttl.min(max);
    }
    records
}

/// TTLs as the cache keeps positive data (`cache.min_ttl_s` to `cache.max_ttl_s`).
fn positive_ttls(mut records: Vec<Record>, cache: &RecordCache) -> Vec<Record> {
    for r in records.iter_mut() {
        r.ttl = cache.positive_ttl(r.ttl);
    }
    records
}

/// Whether an RRset (with its RRSIGs) was synthesized from a wildcard: an RRSIG's Labels
/// field counts fewer labels than the owner has (RFC 4034 section 3.1.3).
fn wildcard_expanded(set: &[Record]) -> bool {
    set.iter().any(|r| match &r.data {
        RData::Unknown { code: RecordType::RRSIG, rdata } => {
            rdata.anything.get(3).is_some_and(|l| usize::from(*l) < crate::dnssec::verify::rrsig_labels(&r.name))
        }
        _ => false,
    })
}

/// Whether every RRSIG among cached data is still within its validity (RFC 4034 section
/// 3.1.5, serial arithmetic): stale secure data stays secure only so long (RFC 8767
/// section 6 leaves AD on stale data to the validator).
fn signatures_live(records: &[Record], unix_now: u64) -> bool {
    let now = unix_now as u32;
    records.iter().all(|rec| match &rec.data {
        RData::Unknown { code: RecordType::RRSIG, rdata } => rdata
            .anything
            .get(8..12)
            .is_some_and(|b| (u32::from_be_bytes([b[0], b[1], b[2], b[3]]).wrapping_sub(now) as i32) > 0),
        _ => true,
    })
}

fn min_ttl(records: &[Record]) -> Option<u32> {
    records.iter().map(|r| r.ttl).min()
}

impl<U: Upstream + Clone + 'static> Resolver<U> {
    /// Resolves a client question. Local zones first, then cache and upstream.
    pub async fn resolve(&self, qname: &Name, qtype: RecordType) -> Result<Answer, ResolveError> {
        let budget = Budget::new(&self.shared, self.upstream.now());
        self.resolve_in(qname, qtype, &budget).await
    }

    /// Answers from the cache and the local zones only, never going out (a non-recursive
    /// query): `ResolveError::NotInCache` when some link of the answer is not cached. It
    /// completes without waiting on anything.
    pub async fn resolve_from_cache(&self, qname: &Name, qtype: RecordType) -> Result<Answer, ResolveError> {
        let mut budget = Budget::new(&self.shared, self.upstream.now());
        budget.cache_only = true;
        self.resolve_in(qname, qtype, &budget).await
    }

    /// Resolves like [`Self::resolve`] (like [`Self::refresh`] with `refresh`), telling
    /// `watch` of its way: a strict transport plan met (serve-stale then never stands in
    /// for it), an exchange failed for a reason of our own (its failure is not kept).
    pub async fn resolve_watching(
        &self,
        qname: &Name,
        qtype: RecordType,
        watch: std::rc::Rc<super::Watch>,
        refresh: bool,
    ) -> Result<Answer, ResolveError> {
        let mut budget = Budget::new(&self.shared, self.upstream.now());
        budget.watch = Some(watch);
        if refresh {
            budget.refresh = Some(qtype);
        }
        self.resolve_in(qname, qtype, &budget).await
    }

    /// Resolves from the authorities even though the answer is cached (a prefetch, before
    /// it expires): the question's own lookups skip the cache; delegations, keys and
    /// addresses still come from it.
    pub async fn refresh(&self, qname: &Name, qtype: RecordType) -> Result<Answer, ResolveError> {
        let mut budget = Budget::new(&self.shared, self.upstream.now());
        budget.refresh = Some(qtype);
        self.resolve_in(qname, qtype, &budget).await
    }

    /// Answers from the cache only, expired entries included (serve-stale, RFC 8767; with
    /// `cache.serve_stale`): `ResolveError::NotInCache` when some link is not there even
    /// stale. Bogus data is never read stale, and stale secure data is secure only while
    /// its signatures are. Completes without waiting on anything.
    pub async fn resolve_stale(&self, qname: &Name, qtype: RecordType) -> Result<Answer, ResolveError> {
        let Some(stale) = self.shared.settings.stale else { return Err(ResolveError::NotInCache) };
        // Live data first: what the cache holds fresh (a newer CNAME, NXDOMAIN or answer)
        // beats anything older at the same name.
        if let Ok(live) = self.resolve_from_cache(qname, qtype).await {
            return Ok(live);
        }
        let mut budget = Budget::new(&self.shared, self.upstream.now());
        budget.cache_only = true;
        budget.stale_ttl = Some(stale.ttl);
        self.resolve_in(qname, qtype, &budget).await
    }

    /// Resolves like [`Self::resolve`] and records the path: each lookup, each zone cut
    /// asked with its nameservers, and each exchange with its transport plan, the plan's
    /// source and what was tried (the API's explain).
    pub async fn explain(&self, qname: &Name, qtype: RecordType) -> (Result<Answer, ResolveError>, Vec<TraceStep>) {
        let mut budget = Budget::new(&self.shared, self.upstream.now());
        budget.trace = Some(Default::default());
        let result = self.resolve_in(qname, qtype, &budget).await;
        (result, budget.trace.map(|t| t.into_inner()).unwrap_or_default())
    }

    /// Resolves `qname`/`qtype` as part of the lookup of `ns`'s signal; also says whether
    /// a wait for another signal was skipped as a cycle on the way.
    pub(crate) async fn resolve_for_signal(
        &self,
        qname: &Name,
        qtype: RecordType,
        ns: &Name,
    ) -> (Result<Answer, ResolveError>, bool) {
        let mut budget = Budget::new(&self.shared, self.upstream.now());
        budget.signal_for = Some(ns.clone());
        let result = self.resolve_in(qname, qtype, &budget).await;
        (result, budget.signal_cycle.get())
    }

    async fn resolve_in(&self, qname: &Name, qtype: RecordType, budget: &Budget) -> Result<Answer, ResolveError> {
        let qname = canonical(qname);
        // A zone the operator configured (a forward zone for 10.in-addr.arpa., say) wins
        // over the built-in special-use zones.
        if self.shared.zones.load().closest(&qname).is_none()
            && let Some(a) = self.shared.local.load().answer(&qname, qtype)
        {
            return Ok(a);
        }
        let settings = &self.shared.settings;
        let mut answers: Vec<Record> = Vec::new();
        let mut seen = vec![qname.clone()];
        let mut name = qname;
        let mut security = Security::Secure;
        let mut stale = false;
        // Wildcard proofs of every link of a chain.
        let mut proofs: Vec<Record> = Vec::new();
        for _ in 0..=settings.max_chain {
            let step = self.lookup(&name, qtype, budget, 0).await?;
            stale |= step.stale;
            answers.extend(step.records);
            for p in step.proofs {
                if !proofs.contains(&p) {
                    proofs.push(p);
                }
            }
            security = security.and(step.security);
            match step.next {
                None => {
                    let mut authority = step.authority;
                    authority.extend(proofs);
                    let cache_ttl = min_ttl(&answers).into_iter().chain(min_ttl(&authority)).min().unwrap_or(0);
                    if !security.is_checked() {
                        security = Security::insecure();
                    }
                    // A bogus answer (SERVFAIL, or the data for CD) is kept as briefly as
                    // the bogus data itself.
                    let cache_ttl = match security {
                        _ if stale => 0,
                        Security::Bogus(_) => cache_ttl.min(self.shared.validator.bogus_ttl),
                        _ => cache_ttl,
                    };
                    return Ok(Answer { rcode: step.rcode, answers, authority, cache_ttl, security, stale });
                }
                Some(next) => {
                    let next = canonical(&next);
                    if seen.contains(&next) {
                        return Err(ResolveError::ChainLoop(next));
                    }
                    seen.push(next.clone());
                    name = next;
                }
            }
        }
        Err(ResolveError::LimitExceeded(Limit::Chain))
    }

    /// One name: from the cache, else by iteration. Boxed because nameserver address
    /// lookups recurse into it.
    pub(crate) fn lookup<'a>(
        &'a self,
        name: &'a Name,
        qtype: RecordType,
        budget: &'a Budget,
        depth: u32,
    ) -> StepFuture<'a> {
        Box::pin(async move {
            budget.step(self.upstream.now())?;
            // Local zones answer from their records, before any cache.
            if let Some(step) = self.shared.zones.load().local_step(name, qtype) {
                budget.note(|| TraceStep::Lookup { name: name.clone(), qtype, depth, from_cache: true });
                return Ok(step);
            }
            // The client's own lookups (depth 0) need validated data; nameserver-address
            // lookups take whatever is cached.
            let refreshing = depth == 0 && budget.refresh == Some(qtype);
            // Then a denial from validated NSEC spans (RFC 8198), but never in place of a
            // refresh or in a stale walk (which wants what the cache holds, marked stale).
            let cached = if refreshing {
                None
            } else {
                self.cached_step(name, qtype, depth == 0, budget.stale_ttl)
                    .or_else(|| budget.stale_ttl.is_none().then(|| self.synthesized_denial(name, qtype)).flatten())
            };
            budget.note(|| TraceStep::Lookup { name: name.clone(), qtype, depth, from_cache: cached.is_some() });
            if let Some(step) = cached {
                return Ok(step);
            }
            if budget.cache_only {
                return Err(ResolveError::NotInCache);
            }
            self.iterate(name, qtype, budget, depth).await
        })
    }

    /// Answers from the record cache: the RRset, a CNAME, a negative entry, an NXDOMAIN at
    /// the name or above it (RFC 8020), or a DNAME above it. With `checked`, data not
    /// validated yet counts as a miss. With `stale_ttl`, expired entries count too (marked
    /// stale, with that TTL; secure only while their signatures are).
    fn cached_step(&self, name: &Name, qtype: RecordType, checked: bool, stale_ttl: Option<u32>) -> Option<Step> {
        let cache = &self.shared.records;
        let now = self.upstream.now();
        let unix_now = self.upstream.unix_now();
        let get = |name: &Name, rtype: u16| {
            let mut hit = match stale_ttl {
                Some(ttl) => cache.get_stale(name, rtype, now, ttl)?,
                None => cache.get(name, rtype, now)?,
            };
            if hit.stale
                && hit.security == Security::Secure
                && !(signatures_live(hit.data.records(), unix_now)
                    && hit.proofs.as_deref().is_none_or(|p| signatures_live(p, unix_now)))
            {
                hit.security = Security::insecure();
            }
            Some(hit)
        };
        let usable = |hit: &Hit| hit.rank.answerable() && (!checked || hit.security.is_checked());
        if let Some(hit) = get(name, u16::from(qtype))
            && usable(&hit)
        {
            let (security, stale) = (hit.security, hit.stale);
            return Some(match hit.data {
                CachedData::RRset(r) => Step {
                    records: with_ttl(&r, hit.ttl_left),
                    proofs: hit.proofs.as_deref().map(|p| with_ttl(p, hit.ttl_left)).unwrap_or_default(),
                    security,
                    stale,
                    ..Step::default()
                },
                CachedData::NoData(a) => {
                    Step { authority: with_ttl(&a, hit.ttl_left), security, stale, ..Step::default() }
                }
                CachedData::NxDomain(a) => Step {
                    rcode: rcode::NXDOMAIN,
                    authority: with_ttl(&a, hit.ttl_left),
                    security,
                    stale,
                    ..Step::default()
                },
            });
        }
        if qtype != RecordType::CNAME
            && let Some(hit) = get(name, u16::from(RecordType::CNAME))
            && usable(&hit)
            && let Some(recs) = rrset_records(&hit.data)
        {
            let target = recs.iter().find_map(|r| match &r.data {
                RData::CNAME(CNAME(t)) => Some(t.clone()),
                _ => None,
            })?;
            return Some(Step {
                records: with_ttl(recs, hit.ttl_left),
                next: Some(target),
                security: hit.security.clone(),
                proofs: hit.proofs.as_deref().map(|p| with_ttl(p, hit.ttl_left)).unwrap_or_default(),
                stale: hit.stale,
                ..Step::default()
            });
        }
        // Nothing cached above a forward or stub zone speaks for names inside it.
        let apex = self.shared.zones.load().configured_apex(name).cloned();
        let mut anc = name.clone();
        loop {
            if apex.as_ref().is_some_and(|a| is_below(a, &anc)) {
                return None;
            }
            // RFC 8020 below a cached NXDOMAIN; above the name itself only a secure one
            // counts where validation applies (one forged or unprovable NXDOMAIN must not
            // black out a whole subtree), as Unbound's harden-below-nxdomain.
            let below_ok =
                |hit: &Hit| anc == *name || hit.security == Security::Secure || !self.shared.validator.covers(&anc);
            // A stale NXDOMAIN speaks for its own name only: the names below it may exist by
            // now (RFC 8020 walks live denials only).
            let nxdomain = if anc == *name { get(&anc, NXDOMAIN_KEY) } else { cache.get(&anc, NXDOMAIN_KEY, now) };
            if let Some(hit) = nxdomain
                && (!checked || hit.security.is_checked())
                && below_ok(&hit)
                && let CachedData::NxDomain(a) = &hit.data
            {
                return Some(Step {
                    rcode: rcode::NXDOMAIN,
                    authority: with_ttl(a, hit.ttl_left),
                    security: hit.security.clone(),
                    stale: hit.stale,
                    ..Step::default()
                });
            }
            if anc != *name
                && let Some(hit) = get(&anc, u16::from(RecordType::DNAME))
                && usable(&hit)
                && let Some(recs) = rrset_records(&hit.data)
                && let Some(target) = recs.iter().find_map(dname_target)
                && let Some(new) = apply_dname(name, &anc, &target)
            {
                let mut records = with_ttl(recs, hit.ttl_left);
                records.push(Record::from_rdata(name.clone(), hit.ttl_left, RData::CNAME(CNAME(new.clone()))));
                return Some(Step {
                    records,
                    next: Some(new),
                    security: hit.security.clone(),
                    stale: hit.stale,
                    ..Step::default()
                });
            }
            if anc.is_root() {
                return None;
            }
            anc = parent(&anc);
        }
    }

    /// Walks down from the closest known zone cut.
    async fn iterate(&self, name: &Name, qtype: RecordType, budget: &Budget, depth: u32) -> Result<Step, ResolveError> {
        let settings = &self.shared.settings;
        // A forward or stub zone starts at its configured servers (a DS, at its parent).
        let home = if qtype == RecordType::DS && !name.is_root() { parent(name) } else { name.clone() };
        let configured = self.shared.zones.load().closest(&home).and_then(|z| match &z.served {
            Served::Forward(s) => Some((z.name.clone(), s.clone(), true)),
            Served::Stub(s) => Some((z.name.clone(), s.clone(), false)),
            Served::Local { .. } => None,
        });
        let configured_start = configured.is_some();
        let (mut zone, mut ns, mut glue, forward) = match configured {
            Some((zone, servers, forward)) => (zone, servers.names, servers.glue, forward),
            None => {
                let (zone, ns) = self.closest_delegation(name, qtype, budget, depth).await?;
                (zone, ns, Vec::new(), false)
            }
        };
        let target_labels = labels(name);
        // Forwarders get the whole name: they resolve it themselves.
        let mut minimise = settings.qname_minimisation && !forward;
        let mut minimised_sent = 0u32;
        let mut cursor = labels(&zone);
        let mut referrals = 0u32;
        // Whether the parent's delegation was tried after the zone's own NS RRset failed
        // (never for a configured zone: its servers are the operator's choice).
        let mut parent_side_tried = configured_start;
        loop {
            let cursor_before = cursor;
            let next_labels = cursor.max(labels(&zone)) + 1;
            let minimised = minimise && minimised_sent < MAX_MINIMISE && next_labels < target_labels;
            let (sname, stype) = if minimised {
                minimised_sent += 1;
                cursor = next_labels;
                (name.trim_to(next_labels), RecordType::A)
            } else {
                (name.clone(), qtype)
            };
            let (reply, aa, from) = match self.query_zone(&zone, &ns, &glue, &sname, stype, budget, depth).await {
                Ok(r) => r,
                // RFC 9156 section 3: servers that answer a minimised query with an error
                // (SERVFAIL, REFUSED, FORMERR, NOTIMP) or with something that is neither an
                // answer nor a referral may mishandle minimised names: ask the full name
                // (unless resolver.qname_minimisation_strict). Timeouts are not retried so.
                Err(ResolveError::NoReachableAuthority { replied: true, .. })
                    if minimised && !settings.qname_minimisation_strict =>
                {
                    minimise = false;
                    continue;
                }
                // The NS RRset the walk started from (a cached one: no referral yet) failed
                // with every server. RFC 2181 section 5.4.1 ranks a zone's own NS RRset
                // above its parent's delegation, but the parent's servers may still work
                // (the child's set names dead servers): try those before giving up.
                Err(e @ ResolveError::NoReachableAuthority { .. }) if referrals == 0 && !parent_side_tried => {
                    parent_side_tried = true;
                    match self.parent_side_ns(&zone, &ns) {
                        Some(parent_ns) => {
                            ns = parent_ns;
                            cursor = cursor_before;
                            continue;
                        }
                        None => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            let rank = if aa { Rank::AuthAnswer } else { Rank::NonAuthAnswer };
            let now = self.upstream.now();
            let cache = &self.shared.records;
            // The client's own lookups (and those validation makes for it) are validated;
            // nameserver-address lookups are not (RFC 4035 section 4.5 leaves that open;
            // their data is validated when a client asks for it).
            let validate = depth == 0;
            match reply {
                Reply::Referral { child, ns: ns_records, glue: referral_glue, ds, deleg } => {
                    referrals += 1;
                    if referrals > settings.max_referrals {
                        return Err(ResolveError::LimitExceeded(Limit::Referrals));
                    }
                    ns = ns_names(&ns_records);
                    let ns_ttl = min_ttl(&ns_records).unwrap_or(0);
                    cache.put_rrset(&child, DELEGATION_KEY, ns_records.clone(), Rank::Referral, now);
                    cache.put_rrset(&child, u16::from(RecordType::NS), ns_records, Rank::Referral, now);
                    for (owner, rtype, set) in group_rrsets(&referral_glue) {
                        cache.put_rrset(&owner, u16::from(rtype), set, Rank::Glue, now);
                    }
                    glue = referral_glue;
                    if settings.deleg
                        && let Some((rule, servers)) =
                            self.take_referral_deleg(&zone, &child, deleg, ns_ttl, budget).await?
                    {
                        // A DELEG-aware resolver follows the secure DELEG RRset, not the NS
                        // RRset beside it (draft-ietf-deleg section 5).
                        ns = servers.names;
                        glue.extend(servers.glue);
                        budget.deleg_rules.borrow_mut().push((canonical(&child), rule));
                    }
                    if validate && !ds.is_empty() {
                        self.take_referral_ds(&zone, &child, ds, budget).await?;
                    }
                    zone = canonical(&child);
                }
                Reply::Lame => unreachable!("query_zone never returns a lame reply"),
                Reply::Answer { chain, data, .. } if minimised && chain.is_empty() => {
                    // The intermediate name has data of its own: keep it, go one label deeper.
                    self.cache_rrsets(&data, rank, now);
                }
                Reply::NoData { .. } if minimised => {
                    // An empty non-terminal or a name without A records: go one label deeper.
                }
                Reply::Answer { .. } | Reply::NxDomain { .. } if minimised => {
                    // RFC 9156 section 3 fallback: a chain or an NXDOMAIN on a minimised
                    // name; ask the full name of the same servers instead.
                    minimise = false;
                }
                Reply::Answer { chain, data, next, proofs } => {
                    let (mut chain, mut data) = (positive_ttls(chain, cache), positive_ttls(data, cache));
                    // CNAMEs synthesized from a DNAME are not cached (nor signed): the DNAME
                    // is, and a cache hit applies it again (so the answer keeps the DNAME).
                    let dnames: Vec<Name> =
                        chain.iter().filter(|r| r.record_type() == RecordType::DNAME).map(|r| r.name.clone()).collect();
                    let synthesized = |r: &Record| {
                        r.record_type() == RecordType::CNAME && dnames.iter().any(|d| is_below(&r.name, d))
                    };
                    // Each RRset (with its RRSIGs) is validated and cached with its status.
                    let mut sets: Vec<(Name, RecordType, Vec<Record>, bool)> = Vec::new();
                    for (records, cache_it) in [(&chain, true), (&data, stype != RecordType::ANY)] {
                        let kept: Vec<Record> = records.iter().filter(|r| !synthesized(r)).cloned().collect();
                        for (owner, rtype, set) in group_rrsets(&kept) {
                            // A group of RRSIGs alone (an RRSIG or ANY question) is not an RRset.
                            if set.iter().any(|r| r.record_type() == rtype) {
                                sets.push((owner, rtype, set, cache_it));
                            }
                        }
                    }
                    let mut security = Security::Secure;
                    let mut validated_any = false;
                    let mut answer_proofs: Vec<Record> = Vec::new();
                    for (owner, rtype, mut set, cache_it) in sets {
                        let (status, ttl_cap) = if validate {
                            self.validate_rrset(&zone, &owner, rtype, &set, &proofs, budget).await?
                        } else {
                            (self.unvalidated(&owner), None)
                        };
                        // RFC 4035 section 5.3.3: no longer than the signature allows; bogus
                        // data briefly.
                        let cap = match &status {
                            Security::Bogus(_) => Some(self.shared.validator.bogus_ttl),
                            _ => ttl_cap,
                        };
                        if let Some(cap) = cap {
                            for r in chain.iter_mut().chain(data.iter_mut()).chain(set.iter_mut()) {
                                if r.name == owner {
                                    r.ttl = r.ttl.min(cap);
                                }
                            }
                        }
                        // RFC 4035 section 3.1.3.3: an RRset synthesized from a wildcard goes
                        // to DO clients with the proof that the name itself does not exist,
                        // from the cache too. Only a proof that validated, a few records of
                        // it, living no longer than the data.
                        let set_proofs = if status == Security::Secure && wildcard_expanded(&set) {
                            let ttl = min_ttl(&set).unwrap_or(0);
                            cap_ttls(proofs.iter().take(MAX_PROOF_RECORDS).cloned().collect(), ttl)
                        } else {
                            Vec::new()
                        };
                        if answer_proofs.is_empty() {
                            answer_proofs.clone_from(&set_proofs);
                        }
                        if cache_it {
                            let now = self.upstream.now();
                            let source = Some(from);
                            cache.put_answer(
                                &owner,
                                u16::from(rtype),
                                set,
                                set_proofs,
                                rank,
                                status.clone(),
                                now,
                                source,
                            );
                        }
                        security = security.and(status);
                        validated_any = true;
                    }
                    if !validated_any {
                        // Nothing but RRSIGs (an RRSIG or ANY question): no RRset vouched for.
                        security = Security::insecure();
                    }
                    let mut records = chain;
                    records.extend(data);
                    return Ok(Step {
                        rcode: rcode::NOERROR,
                        records,
                        authority: Vec::new(),
                        next,
                        security,
                        proofs: answer_proofs,
                        stale: false,
                    });
                }
                Reply::NoData { authority, neg_ttl } => {
                    let denial = (false, authority, neg_ttl, from);
                    return self.negative_step(&zone, name, qtype, denial, validate, budget).await;
                }
                Reply::NxDomain { authority, neg_ttl } => {
                    let denial = (true, authority, neg_ttl, from);
                    return self.negative_step(&zone, name, qtype, denial, validate, budget).await;
                }
            }
        }
    }

    /// A NODATA or NXDOMAIN answer for (`name`, `qtype`) from `zone`: TTLs capped, the
    /// denial validated (for the client's own lookups), cached no longer than its proof
    /// allows, and the step built with records that do not outlive the cached denial.
    #[allow(clippy::too_many_arguments, reason = "one negative answer's full context")]
    async fn negative_step(
        &self,
        zone: &Name,
        name: &Name,
        qtype: RecordType,
        (nxdomain, authority, neg_ttl, from): (bool, Vec<Record>, u32, std::net::IpAddr),
        validate: bool,
        budget: &Budget,
    ) -> Result<Step, ResolveError> {
        let max_neg_ttl = self.shared.records.max_negative_ttl();
        let (authority, neg_ttl) = (cap_ttls(authority, max_neg_ttl), neg_ttl.min(max_neg_ttl));
        let (security, cap) = if validate {
            self.validate_negative(zone, name, qtype, nxdomain, &authority, budget).await?
        } else {
            (self.unvalidated(name), None)
        };
        let neg_ttl = self.negative_ttl(neg_ttl.min(cap.unwrap_or(u32::MAX)), &security);
        // The records too: the response must not outlive the cached denial. Validated, only
        // what the validation spoke for is kept.
        let authority =
            if validate { super::validate::vouched_denial(authority, name, qtype, zone) } else { authority };
        let authority = cap_ttls(authority, neg_ttl);
        // The parent side's NXDOMAIN for a forward or stub zone's apex (its DS, asked of
        // the public tree) is kept for the DS only: it must not deny the zone itself.
        let public_side =
            nxdomain && qtype == RecordType::DS && self.shared.zones.load().configured_apex(name) == Some(name);
        let key = if nxdomain && !public_side { NXDOMAIN_KEY } else { u16::from(qtype) };
        let now = self.upstream.now();
        self.shared.records.put_negative(name, key, authority.clone(), neg_ttl, security.clone(), now, Some(from));
        if validate && security == Security::Secure {
            self.learn_spans(&authority, neg_ttl, now);
        }
        let rcode = if nxdomain { rcode::NXDOMAIN } else { rcode::NOERROR };
        Ok(Step { rcode, authority, security, ..Step::default() })
    }

    /// Caches the RRsets in `records`, not validated. A group made only of RRSIGs (from an
    /// RRSIG or ANY question) is not an RRset and would hide the real one: it is never
    /// stored.
    fn cache_rrsets(&self, records: &[Record], rank: Rank, now: std::time::Instant) {
        for (owner, rtype, set) in group_rrsets(records) {
            if set.iter().any(|r| r.record_type() == rtype) {
                let security = self.unvalidated(&owner);
                self.shared.records.put_checked(&owner, u16::from(rtype), set, rank, security, now);
            }
        }
    }

    /// The status of data stored without validation: insecure where nothing would
    /// validate it anyway (validation off, no trust anchor, a negative trust anchor),
    /// unchecked otherwise.
    fn unvalidated(&self, name: &Name) -> Security {
        if self.shared.validator.covers(name) { Security::Unchecked } else { Security::insecure() }
    }

    /// A negative TTL, shortened for bogus data.
    fn negative_ttl(&self, ttl: u32, security: &Security) -> u32 {
        match security {
            Security::Bogus(_) => ttl.min(self.shared.validator.bogus_ttl),
            _ => ttl,
        }
    }

    /// The deepest zone cut with a cached NS RRset at or above `name` (above it, for DS);
    /// falls back to the root hints, priming them first.
    async fn closest_delegation(
        &self,
        name: &Name,
        qtype: RecordType,
        budget: &Budget,
        depth: u32,
    ) -> Result<(Name, Vec<Name>), ResolveError> {
        let now = self.upstream.now();
        let mut cur = if qtype == RecordType::DS && !name.is_root() { parent(name) } else { name.clone() };
        loop {
            // With DELEG, a cut whose parent side (its DELEG RRset, or that there is none) is
            // not known any more is fetched again from the parent: its NS RRset alone must
            // not outlive what the parent says of the zone's transports.
            let parent_side_known = !self.shared.settings.deleg
                || cur.is_root()
                || self.shared.records.contains(&cur, crate::cache::records::DELEG_KEY, now);
            if parent_side_known
                && let Some(hit) = self.shared.records.get(&cur, u16::from(RecordType::NS), now)
                && let Some(recs) = rrset_records(&hit.data)
            {
                // A live secure DELEG rule names the zone's servers, not its NS RRset.
                let names = match self.deleg_rule(&cur).filter(|r| r.secure) {
                    Some(rule) => super::deleg::servers_of(&rule, 0).names,
                    None => ns_names(recs),
                };
                // A cut is usable if some nameserver has an address, or can be looked up
                // outside the zone. Otherwise (in-zone names whose glue expired or was
                // evicted) start from the cut above and fetch the referral again.
                let mut blocked = false;
                let usable = !self.known_addresses(&names, &[], &mut blocked).0.is_empty()
                    || names.iter().any(|n| !cur.zone_of(n));
                if !names.is_empty() && (usable || cur.is_root()) {
                    if cur.is_root() && hit.rank == Rank::Hint {
                        return self.prime(budget, depth, names).await;
                    }
                    return Ok((cur, names));
                }
            }
            if cur.is_root() {
                break;
            }
            cur = parent(&cur);
        }
        // Nothing cached for the root: load the hints, then prime (RFC 8109).
        let (ns, addrs) = self.shared.hints.load().records(self.shared.records.max_ttl());
        let names = ns_names(&ns);
        self.shared.records.put_rrset(&Name::root(), u16::from(RecordType::NS), ns, Rank::Hint, now);
        for (owner, rtype, set) in addrs {
            self.shared.records.put_rrset(&owner, u16::from(rtype), set, Rank::Hint, now);
        }
        self.prime(budget, depth, names).await
    }

    /// The nameservers of the parent's delegation of `zone`, if it is cached and names a
    /// server that `failed` (the NS names just tried) does not.
    fn parent_side_ns(&self, zone: &Name, failed: &[Name]) -> Option<Vec<Name>> {
        let hit = self.shared.records.get(zone, DELEGATION_KEY, self.upstream.now())?;
        let names = ns_names(rrset_records(&hit.data)?);
        names.iter().any(|n| !failed.contains(n)).then_some(names)
    }

    /// Asks the hinted root servers for the root NS RRset; on failure keeps the hints.
    async fn prime(
        &self,
        budget: &Budget,
        depth: u32,
        hint_names: Vec<Name>,
    ) -> Result<(Name, Vec<Name>), ResolveError> {
        let root = Name::root();
        match self.query_zone(&root, &hint_names, &[], &root, RecordType::NS, budget, depth).await {
            Ok((Reply::Answer { data, .. }, _, _)) => {
                let names = ns_names(&data);
                if names.is_empty() {
                    return Ok((root, hint_names));
                }
                self.cache_rrsets(&data, Rank::AuthAnswer, self.upstream.now());
                Ok((root, names))
            }
            Ok(_) => Ok((root, hint_names)),
            Err(e @ ResolveError::LimitExceeded(_)) => Err(e),
            Err(_) => Ok((root, hint_names)),
        }
    }
}
