//! Iterative resolution: from the closest cached zone cut (or the root, primed lazily),
//! follow referrals down, minimising the QNAME (RFC 9156, relaxed), chase CNAME/DNAME
//! chains, cache what is learnt by trust rank, and answer negatives per RFC 2308/8020.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use rand::RngExt;

use super::response::{Reply, apply_dname, classify, dname_target, rrsig_covers};
use super::{
    Answer, Budget, Limit, PeerAuth, PlanSource, ResolveError, Resolver, TransportPlan, Upstream, UpstreamError, Wire,
};
use crate::cache::records::{CachedData, Hit, NXDOMAIN_KEY, Rank, with_ttl};
use crate::dnssec::Security;
use crate::names::{canonical, is_below, labels, parent};
use crate::probe::{ProbeDecision, unix_now};
use crate::signal::Signal;
use crate::wire::rcode;
use adox_api::policy::{Auth, Mode, Transport};
use adox_api::rest::{Attempt, ExplainStep, PlanView};

/// Servers whose score is within this of the best are chosen among at random (Unbound
/// uses the same 400 ms band): microseconds.
const RTT_BAND_US: u64 = 400_000;

/// Encrypted transports RFC 9539 probing tries, in order of preference.
const PROBED: [Transport; 2] = [Transport::Doq, Transport::Dot];

/// DoT port (RFC 7858 section 3.1); DoQ uses the same number over UDP (RFC 9250).
const DOT_PORT: u16 = 853;

/// The short reason of a transport failure, for EXTRA-TEXT.
fn failure_text(e: &UpstreamError) -> String {
    match e {
        UpstreamError::Tls(r) => (*r).to_string(),
        UpstreamError::Timeout => "timeout".into(),
        UpstreamError::Refused => "refused".into(),
        other => other.to_string(),
    }
}

/// RFC 9156 MAX_MINIMISE_COUNT: minimised queries before sending the full name.
const MAX_MINIMISE: u32 = 10;

/// Seconds a TLSA table entry outlives its TTL, covering the refresh of its signal.
const TLSA_GRACE_S: u64 = 120;

/// What a signal's TLSA lookups found.
struct TlsaLearnt {
    /// Transports with a secure TLSA RRset, with its base name.
    dane: Vec<(Transport, Name)>,
    /// Whether every lookup came back secure (present or absent): otherwise a strict state
    /// in force must not be dropped on this evidence.
    certain: bool,
    /// When the first TLSA RRset expires (the signal is refreshed then).
    until: u64,
}

/// A nameserver address with the name it was found under (the policy key needs both).
type Target = (IpAddr, Name);

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
}

/// A per-exchange failure: `Server` moves on to the next server, `Fatal` ends the step.
enum ExchangeError {
    Server(UpstreamError),
    Fatal(ResolveError),
}

type StepFuture<'a> = Pin<Box<dyn Future<Output = Result<Step, ResolveError>> + 'a>>;

fn rrset_records(hit: &CachedData) -> Option<&[Record]> {
    match hit {
        CachedData::RRset(r) => Some(r),
        _ => None,
    }
}

fn ns_names(records: &[Record]) -> Vec<Name> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::NS(n) => Some(canonical(&n.0)),
            _ => None,
        })
        .collect()
}

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

fn min_ttl(records: &[Record]) -> Option<u32> {
    records.iter().map(|r| r.ttl).min()
}

impl<U: Upstream + Clone + 'static> Resolver<U> {
    /// Resolves a client question. Local zones first, then cache and upstream.
    pub async fn resolve(&self, qname: &Name, qtype: RecordType) -> Result<Answer, ResolveError> {
        let budget = Budget::new(&self.shared, self.upstream.now());
        self.resolve_in(qname, qtype, &budget).await
    }

    /// Resolves like [`Self::resolve`] and records the path: each lookup, each zone cut
    /// asked with its nameservers, and each exchange with its transport plan, the plan's
    /// source and what was tried (the API's explain).
    pub async fn explain(&self, qname: &Name, qtype: RecordType) -> (Result<Answer, ResolveError>, Vec<ExplainStep>) {
        let mut budget = Budget::new(&self.shared, self.upstream.now());
        budget.trace = Some(Default::default());
        let result = self.resolve_in(qname, qtype, &budget).await;
        (result, budget.trace.map(|t| t.into_inner()).unwrap_or_default())
    }

    async fn resolve_in(&self, qname: &Name, qtype: RecordType, budget: &Budget) -> Result<Answer, ResolveError> {
        let qname = canonical(qname);
        if let Some(a) = self.shared.local.answer(&qname, qtype) {
            return Ok(a);
        }
        let settings = &self.shared.settings;
        let mut answers: Vec<Record> = Vec::new();
        let mut seen = vec![qname.clone()];
        let mut name = qname;
        let mut security = Security::Secure;
        for _ in 0..=settings.max_chain {
            let step = self.lookup(&name, qtype, budget, 0).await?;
            answers.extend(step.records);
            security = security.and(step.security);
            match step.next {
                None => {
                    let cache_ttl = min_ttl(&answers).into_iter().chain(min_ttl(&step.authority)).min().unwrap_or(0);
                    if !security.is_checked() {
                        security = Security::insecure();
                    }
                    // A bogus answer (SERVFAIL, or the data for CD) is kept as briefly as
                    // the bogus data itself.
                    let cache_ttl = match security {
                        Security::Bogus(_) => cache_ttl.min(self.shared.validator.bogus_ttl),
                        _ => cache_ttl,
                    };
                    return Ok(Answer { rcode: step.rcode, answers, authority: step.authority, cache_ttl, security });
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
            // The client's own lookups (depth 0) need validated data; nameserver-address
            // lookups take whatever is cached.
            let cached = self.cached_step(name, qtype, depth == 0);
            budget.note(|| ExplainStep::Lookup {
                name: name.to_ascii(),
                qtype: qtype.to_string(),
                depth,
                from_cache: cached.is_some(),
            });
            if let Some(step) = cached {
                return Ok(step);
            }
            self.iterate(name, qtype, budget, depth).await
        })
    }

    /// Answers from the record cache: the RRset, a CNAME, a negative entry, an NXDOMAIN at
    /// the name or above it (RFC 8020), or a DNAME above it. With `checked`, data not
    /// validated yet counts as a miss.
    fn cached_step(&self, name: &Name, qtype: RecordType, checked: bool) -> Option<Step> {
        let cache = &self.shared.records;
        let now = self.upstream.now();
        let usable = |hit: &Hit| hit.rank.answerable() && (!checked || hit.security.is_checked());
        if let Some(hit) = cache.get(name, u16::from(qtype), now)
            && usable(&hit)
        {
            let security = hit.security;
            return Some(match hit.data {
                CachedData::RRset(r) => Step { records: with_ttl(&r, hit.ttl_left), security, ..Step::default() },
                CachedData::NoData(a) => Step { authority: with_ttl(&a, hit.ttl_left), security, ..Step::default() },
                CachedData::NxDomain(a) => {
                    Step { rcode: rcode::NXDOMAIN, authority: with_ttl(&a, hit.ttl_left), security, ..Step::default() }
                }
            });
        }
        if qtype != RecordType::CNAME
            && let Some(hit) = cache.get(name, u16::from(RecordType::CNAME), now)
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
                ..Step::default()
            });
        }
        let mut anc = name.clone();
        loop {
            // RFC 8020 below a cached NXDOMAIN; above the name itself only a secure one
            // counts where validation applies (one forged or unprovable NXDOMAIN must not
            // black out a whole subtree), as Unbound's harden-below-nxdomain.
            let below_ok =
                |hit: &Hit| anc == *name || hit.security == Security::Secure || !self.shared.validator.covers(&anc);
            if let Some(hit) = cache.get(&anc, NXDOMAIN_KEY, now)
                && (!checked || hit.security.is_checked())
                && below_ok(&hit)
                && let CachedData::NxDomain(a) = &hit.data
            {
                return Some(Step {
                    rcode: rcode::NXDOMAIN,
                    authority: with_ttl(a, hit.ttl_left),
                    security: hit.security.clone(),
                    ..Step::default()
                });
            }
            if anc != *name
                && let Some(hit) = cache.get(&anc, u16::from(RecordType::DNAME), now)
                && usable(&hit)
                && let Some(recs) = rrset_records(&hit.data)
                && let Some(target) = recs.iter().find_map(dname_target)
                && let Some(new) = apply_dname(name, &anc, &target)
            {
                let mut records = with_ttl(recs, hit.ttl_left);
                records.push(Record::from_rdata(name.clone(), hit.ttl_left, RData::CNAME(CNAME(new.clone()))));
                return Some(Step { records, next: Some(new), security: hit.security.clone(), ..Step::default() });
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
        let (mut zone, mut ns) = self.closest_delegation(name, qtype, budget, depth).await?;
        let target_labels = labels(name);
        let mut minimise = settings.qname_minimisation;
        let mut minimised_sent = 0u32;
        let mut cursor = labels(&zone);
        let mut referrals = 0u32;
        let (max_ttl, max_neg_ttl) = (self.shared.records.max_ttl(), self.shared.records.max_negative_ttl());
        // The current referral's glue, used even if the cache could not keep it.
        let mut glue: Vec<Record> = Vec::new();
        loop {
            let next_labels = cursor.max(labels(&zone)) + 1;
            let minimised = minimise && minimised_sent < MAX_MINIMISE && next_labels < target_labels;
            let (sname, stype) = if minimised {
                minimised_sent += 1;
                cursor = next_labels;
                (name.trim_to(next_labels), RecordType::A)
            } else {
                (name.clone(), qtype)
            };
            let (reply, aa) = self.query_zone(&zone, &ns, &glue, &sname, stype, budget, depth).await?;
            let rank = if aa { Rank::AuthAnswer } else { Rank::NonAuthAnswer };
            let now = self.upstream.now();
            let cache = &self.shared.records;
            // The client's own lookups (and those validation makes for it) are validated;
            // nameserver-address lookups are not (RFC 4035 section 4.5 leaves that open;
            // their data is validated when a client asks for it).
            let validate = depth == 0;
            match reply {
                Reply::Referral { child, ns: ns_records, glue: referral_glue } => {
                    referrals += 1;
                    if referrals > settings.max_referrals {
                        return Err(ResolveError::LimitExceeded(Limit::Referrals));
                    }
                    ns = ns_names(&ns_records);
                    cache.put_rrset(&child, u16::from(RecordType::NS), ns_records, Rank::Referral, now);
                    for (owner, rtype, set) in group_rrsets(&referral_glue) {
                        cache.put_rrset(&owner, u16::from(rtype), set, Rank::Glue, now);
                    }
                    glue = referral_glue;
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
                    let (mut chain, mut data) = (cap_ttls(chain, max_ttl), cap_ttls(data, max_ttl));
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
                        if cache_it {
                            cache.put_checked(&owner, u16::from(rtype), set, rank, status.clone(), self.upstream.now());
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
                    return Ok(Step { rcode: rcode::NOERROR, records, authority: Vec::new(), next, security });
                }
                Reply::NoData { authority, neg_ttl } => {
                    let (authority, neg_ttl) = (cap_ttls(authority, max_neg_ttl), neg_ttl.min(max_neg_ttl));
                    let (security, cap) = if validate {
                        self.validate_negative(&zone, name, qtype, false, &authority, budget).await?
                    } else {
                        (self.unvalidated(name), None)
                    };
                    let neg_ttl = self.negative_ttl(neg_ttl.min(cap.unwrap_or(u32::MAX)), &security);
                    cache.put_negative(
                        name,
                        u16::from(qtype),
                        authority.clone(),
                        neg_ttl,
                        security.clone(),
                        self.upstream.now(),
                    );
                    return Ok(Step { rcode: rcode::NOERROR, authority, security, ..Step::default() });
                }
                Reply::NxDomain { authority, neg_ttl } => {
                    let (authority, neg_ttl) = (cap_ttls(authority, max_neg_ttl), neg_ttl.min(max_neg_ttl));
                    let (security, cap) = if validate {
                        self.validate_negative(&zone, name, qtype, true, &authority, budget).await?
                    } else {
                        (self.unvalidated(name), None)
                    };
                    let neg_ttl = self.negative_ttl(neg_ttl.min(cap.unwrap_or(u32::MAX)), &security);
                    cache.put_negative(
                        name,
                        NXDOMAIN_KEY,
                        authority.clone(),
                        neg_ttl,
                        security.clone(),
                        self.upstream.now(),
                    );
                    return Ok(Step { rcode: rcode::NXDOMAIN, authority, security, ..Step::default() });
                }
            }
        }
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
            if let Some(hit) = self.shared.records.get(&cur, u16::from(RecordType::NS), now)
                && let Some(recs) = rrset_records(&hit.data)
            {
                let names = ns_names(recs);
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
        let (ns, addrs) = self.shared.hints.records(self.shared.records.max_ttl());
        let names = ns_names(&ns);
        self.shared.records.put_rrset(&Name::root(), u16::from(RecordType::NS), ns, Rank::Hint, now);
        for (owner, rtype, set) in addrs {
            self.shared.records.put_rrset(&owner, u16::from(rtype), set, Rank::Hint, now);
        }
        self.prime(budget, depth, names).await
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
            Ok((Reply::Answer { data, .. }, _)) => {
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

    /// Addresses of the nameservers already known: from the referral's own glue (used even
    /// when it could not be cached, e.g. TTL 0) and from the cache (any rank); only those
    /// the upstream ACL allows.
    fn known_addresses(&self, ns: &[Name], glue: &[Record], blocked: &mut bool) -> (Vec<Target>, Vec<Name>) {
        let now = self.upstream.now();
        let mut addrs: Vec<Target> = Vec::new();
        let mut unknown = Vec::new();
        for n in ns {
            let mut found = false;
            let mut consider = |r: &Record| {
                let ip = match &r.data {
                    RData::A(a) => IpAddr::V4(a.0),
                    RData::AAAA(a) => IpAddr::V6(a.0),
                    _ => return,
                };
                found = true;
                if !self.shared.access.upstream_allowed(ip) {
                    *blocked = true;
                } else if !addrs.iter().any(|(a, _)| *a == ip) {
                    addrs.push((ip, n.clone()));
                }
            };
            glue.iter().filter(|g| canonical(&g.name) == *n).for_each(&mut consider);
            for rtype in [RecordType::A, RecordType::AAAA] {
                if let Some(hit) = self.shared.records.get(n, u16::from(rtype), now)
                    && let Some(recs) = rrset_records(&hit.data)
                {
                    recs.iter().for_each(&mut consider);
                }
            }
            if !found {
                unknown.push(n.clone());
            }
        }
        (addrs, unknown)
    }

    /// Orders candidate servers: those within [`RTT_BAND_US`] of the best score come first in
    /// random order (load spreads over a zone's healthy servers, and servers never tried
    /// are explored), then the slower and held-back ones by score.
    fn order_by_rtt(&self, addrs: &mut [Target]) {
        let now = self.upstream.now();
        let mut rng = rand::rng();
        let servers = &self.shared.servers;
        let mut scored: Vec<(u64, Target)> =
            addrs.iter().map(|t| (servers.score(t.0, now, rng.random_range(0..5_000)), t.clone())).collect();
        let best = scored.iter().map(|(s, _)| *s).min().unwrap_or(0);
        for (score, _) in scored.iter_mut() {
            if *score <= best + RTT_BAND_US {
                // Inside the band: a random rank below every score outside it (those are
                // above best + RTT_BAND_US, so at least RTT_BAND_US).
                *score = rng.random_range(0..RTT_BAND_US);
            }
        }
        scored.sort_by_key(|(s, _)| *s);
        for (slot, (_, t)) in addrs.iter_mut().zip(scored) {
            *slot = t;
        }
    }

    /// Sends (`sname`, `stype`) to the servers of `zone` until one gives a usable reply,
    /// resolving nameserver addresses (bounded) when the known ones are exhausted.
    #[allow(clippy::too_many_arguments, reason = "one step's full context; a struct would only rename it")]
    async fn query_zone(
        &self,
        zone: &Name,
        ns: &[Name],
        glue: &[Record],
        sname: &Name,
        stype: RecordType,
        budget: &Budget,
        depth: u32,
    ) -> Result<(Reply, bool), ResolveError> {
        let settings = &self.shared.settings;
        budget.step(self.upstream.now())?;
        budget.note(|| ExplainStep::Zone {
            zone: zone.to_ascii(),
            qname: sname.to_ascii(),
            qtype: stype.to_string(),
            nameservers: ns.iter().map(Name::to_ascii).collect(),
        });
        let mut blocked = false;
        let (mut candidates, unknown) = self.known_addresses(ns, glue, &mut blocked);
        self.order_by_rtt(&mut candidates);
        // Names inside the zone without glue can only be found through the zone itself.
        // Names that already failed in this client query are not tried again.
        let mut to_resolve: Vec<Name> =
            unknown.into_iter().filter(|n| !zone.zone_of(n) && !budget.failed_ns.borrow().contains(n)).collect();
        to_resolve.reverse();
        let mut tried: Vec<IpAddr> = Vec::new();
        let mut attempts = 0u32;
        let mut last: Option<(IpAddr, UpstreamError)> = None;
        let mut lookups = 0u32;
        let mut queue: std::collections::VecDeque<Target> = candidates.into();
        loop {
            while let Some((addr, ns_name)) = queue.pop_front() {
                if attempts >= settings.max_servers_per_step {
                    return Err(self.unreachable(zone, last));
                }
                attempts += 1;
                let first_try = !tried.contains(&addr);
                if first_try {
                    tried.push(addr);
                }
                match self.exchange(zone, (addr, &ns_name), sname, stype, budget).await {
                    Ok(msg) => match classify(&msg, zone, sname, stype) {
                        Reply::Lame => {
                            self.shared.servers.update(addr, |s| s.fail(self.upstream.now(), settings.initial_rto));
                            last = Some((addr, UpstreamError::Lame));
                        }
                        reply => {
                            if stype == RecordType::NS
                                && let Reply::Answer { data, .. } = &reply
                            {
                                self.take_ns_answer_glue(&msg, zone, data);
                            }
                            return Ok((reply, msg.metadata.authoritative));
                        }
                    },
                    Err(ExchangeError::Fatal(e)) => return Err(e),
                    Err(ExchangeError::Server(e)) => {
                        // A timeout may be a lost datagram: the server gets one more try, after
                        // the others, with the longer timeout its failure just earned.
                        if e == UpstreamError::Timeout && first_try {
                            queue.push_back((addr, ns_name));
                        }
                        last = Some((addr, e));
                    }
                }
            }
            let Some(name) = to_resolve.pop() else { break };
            if lookups >= settings.max_ns_lookups {
                break;
            }
            lookups += 1;
            if depth + 1 > settings.max_depth {
                return Err(ResolveError::LimitExceeded(Limit::Depth));
            }
            let found = self.ns_addresses(&name, budget, depth + 1).await?;
            if found.is_empty() {
                budget.failed_ns.borrow_mut().push(name.clone());
            }
            for ip in found {
                if !self.shared.access.upstream_allowed(ip) {
                    blocked = true;
                } else if !tried.contains(&ip) && !queue.iter().any(|(a, _)| *a == ip) {
                    queue.push_back((ip, name.clone()));
                }
            }
        }
        if tried.is_empty() && blocked {
            return Err(ResolveError::NoAllowedAddress { zone: zone.clone() });
        }
        Err(self.unreachable(zone, last))
    }

    fn unreachable(&self, zone: &Name, last: Option<(IpAddr, UpstreamError)>) -> ResolveError {
        let (server, last) = match last {
            // Under strict mode the text is the fixed grammar operators parse.
            Some((_, UpstreamError::Strict(detail))) => {
                return ResolveError::StrictUnreachable { zone: zone.clone(), detail };
            }
            Some((a, e)) => (Some(a), format!("{a}: {e}")),
            None => (None, "no nameserver address".to_string()),
        };
        ResolveError::NoReachableAuthority { zone: zone.clone(), server, last }
    }

    /// Caches the addresses of the NS targets found in the additional section of an NS
    /// answer (inside the zone's bailiwick) as glue.
    fn take_ns_answer_glue(&self, msg: &Message, zone: &Name, data: &[Record]) {
        let targets = ns_names(data);
        let glue: Vec<Record> = msg
            .additionals
            .iter()
            .filter(|r| {
                matches!(r.record_type(), RecordType::A | RecordType::AAAA)
                    && zone.zone_of(&r.name)
                    && targets.contains(&canonical(&r.name))
            })
            .cloned()
            .collect();
        let now = self.upstream.now();
        for (owner, rtype, set) in group_rrsets(&glue) {
            self.shared.records.put_rrset(&owner, u16::from(rtype), set, Rank::Glue, now);
        }
    }

    /// Addresses of a nameserver name, resolved as a nested lookup (A, then AAAA).
    async fn ns_addresses(&self, name: &Name, budget: &Budget, depth: u32) -> Result<Vec<IpAddr>, ResolveError> {
        let mut out = Vec::new();
        for rtype in [RecordType::A, RecordType::AAAA] {
            match self.lookup(name, rtype, budget, depth).await {
                Ok(step) => out.extend(step.records.iter().filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })),
                Err(e @ ResolveError::LimitExceeded(_)) => return Err(e),
                Err(_) => {}
            }
            if !out.is_empty() {
                break;
            }
        }
        Ok(out)
    }

    /// One query to one nameserver address, over the transports its plan allows: the
    /// encrypted ones in order, then Do53 when the mode permits (opportunistic fallback is
    /// counted as a downgrade; strict never falls back).
    async fn exchange(
        &self,
        zone: &Name,
        target: (IpAddr, &Name),
        sname: &Name,
        stype: RecordType,
        budget: &Budget,
    ) -> Result<Message, ExchangeError> {
        let plan = self.plan(zone, target.1, target.0);
        let mut attempts = budget.tracing().then(Vec::new);
        let result = self.exchange_planned(zone, target, &plan, sname, stype, budget, &mut attempts).await;
        if let Some(attempts) = attempts {
            budget.note(|| ExplainStep::Exchange {
                zone: zone.to_ascii(),
                nameserver: target.1.to_ascii(),
                address: target.0.to_string(),
                plan: PlanView {
                    mode: plan.mode,
                    transports: plan.transports.clone(),
                    auth: plan.auth,
                    source: plan.source.label(),
                },
                attempts,
            });
        }
        result
    }

    /// [`Self::exchange`] under a given plan; `attempts` (when explaining) gets each try.
    #[allow(clippy::too_many_arguments, reason = "one exchange's full context")]
    async fn exchange_planned(
        &self,
        zone: &Name,
        target: (IpAddr, &Name),
        plan: &TransportPlan,
        sname: &Name,
        stype: RecordType,
        budget: &Budget,
        attempts: &mut Option<Vec<Attempt>>,
    ) -> Result<Message, ExchangeError> {
        let (addr, ns_name) = target;
        let mut record = |transport: Transport, r: &Result<Message, ExchangeError>| {
            if let Some(a) = attempts.as_mut() {
                let outcome = match r {
                    Ok(_) => "ok".to_string(),
                    Err(ExchangeError::Server(e)) => failure_text(e),
                    Err(ExchangeError::Fatal(e)) => e.to_string(),
                };
                a.push(Attempt { transport, outcome });
            }
        };
        match plan.mode {
            Mode::Strict => self.stats.upstream_strict.bump(),
            Mode::Opportunistic => self.stats.upstream_opportunistic.bump(),
            Mode::Cleartext => self.stats.upstream_cleartext.bump(),
        }
        if plan.mode == Mode::Cleartext {
            if plan.source == PlanSource::Probe(ProbeDecision::Probe) {
                self.start_probe(addr, sname, stype);
            }
            let r = self.exchange_do53(zone, addr, sname, stype, budget).await;
            record(Transport::Do53, &r);
            return r;
        }
        // Failure state and damping apply per encrypted transport: one that failed within
        // the damping window is skipped (an opportunistic plan then falls back to Do53; a
        // strict one tries its other transports, and all of them if every one is damped).
        let now = unix_now();
        let encrypted: Vec<Transport> =
            plan.transports.iter().copied().filter(|t| t.encrypted() && t.supported()).collect();
        let live: Vec<Transport> = encrypted
            .iter()
            .copied()
            .filter(|t| self.shared.probes.decide(addr, *t, now) != ProbeDecision::Skip)
            .collect();
        let to_try = if live.is_empty() && plan.mode == Mode::Strict { encrypted } else { live };
        let mut failure: Option<(Transport, String)> = None;
        for t in to_try {
            let result = self.exchange_encrypted(zone, target, t, plan, sname, stype, budget).await;
            record(t, &result);
            match result {
                Ok(msg) => {
                    self.shared.probes.success(addr, t, unix_now());
                    return Ok(msg);
                }
                Err(ExchangeError::Fatal(e)) => return Err(ExchangeError::Fatal(e)),
                Err(ExchangeError::Server(e)) => {
                    // Only transport failures say something about the server's encryption.
                    if matches!(e, UpstreamError::Tls(_) | UpstreamError::Timeout | UpstreamError::Refused) {
                        self.shared.probes.failure(addr, t, unix_now(), &failure_text(&e));
                    }
                    if failure.is_none() {
                        failure = Some((t, failure_text(&e)));
                    }
                }
            }
        }
        if plan.mode == Mode::Strict {
            self.stats.strict_failures.bump();
            let (t, reason) = failure.unwrap_or((Transport::Dot, "no-supported-transport".into()));
            let t = format!("{t:?}").to_ascii_lowercase();
            let detail = format!("strict {}@{addr} {t}: {reason}", ns_name.to_ascii());
            return Err(ExchangeError::Server(UpstreamError::Strict(detail)));
        }
        self.stats.downgrades.bump();
        let r = self.exchange_do53(zone, addr, sname, stype, budget).await;
        record(Transport::Do53, &r);
        r
    }

    /// One query over DoT or DoQ to port 853 of the address, authenticated as the plan says.
    #[allow(clippy::too_many_arguments, reason = "one exchange's full context")]
    async fn exchange_encrypted(
        &self,
        zone: &Name,
        target: (IpAddr, &Name),
        transport: Transport,
        plan: &TransportPlan,
        sname: &Name,
        stype: RecordType,
        budget: &Budget,
    ) -> Result<Message, ExchangeError> {
        let (addr, ns_name) = target;
        let settings = &self.shared.settings;
        let start = self.upstream.now();
        budget.spend(start).map_err(ExchangeError::Fatal)?;
        let name = plan.tls_name.clone().unwrap_or_else(|| ns_name.clone());
        let auth = match plan.auth {
            Auth::None => PeerAuth::None,
            Auth::Pkix => PeerAuth::Pkix(name),
            Auth::Dane => PeerAuth::Dane(name),
        };
        let _guard = self.reserve_exchange(addr, zone)?;
        let id: u16 = rand::rng().random();
        let query = build_query(id, sname, stype, settings.edns_udp_size).map_err(|_| {
            ExchangeError::Fatal(ResolveError::InvalidData(format!("cannot encode a query for {sname}")))
        })?;
        let timeout = settings.dot_timeout.min(budget.deadline.saturating_duration_since(start));
        let wire = match transport {
            Transport::Doq => Wire::Doq { auth },
            _ => Wire::Dot { auth },
        };
        let bytes = self
            .upstream
            .exchange(SocketAddr::new(addr, plan.port), &query, wire, timeout)
            .await
            .map_err(ExchangeError::Server)?;
        let msg = check_reply(&bytes, id, sname, stype).map_err(ExchangeError::Server)?;
        match msg.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(msg),
            other => Err(ExchangeError::Server(UpstreamError::Rcode(u16::from(other) as u8))),
        }
    }

    /// Counts one upstream query against the outstanding limits: over the server's limit
    /// this server is skipped, over the zone's the step fails.
    #[allow(clippy::result_large_err, reason = "the same error type the async exchanges return, by value")]
    fn reserve_exchange(&self, addr: IpAddr, zone: &Name) -> Result<super::OutstandingGuard<'_>, ExchangeError> {
        self.reserve(addr, zone).map_err(|l| match l {
            Limit::OutstandingPerServer => {
                ExchangeError::Server(UpstreamError::Io("outstanding limit for this server reached".into()))
            }
            l => ExchangeError::Fatal(ResolveError::LimitExceeded(l)),
        })
    }

    /// The transport plan for one (zone, nameserver name, address): the operator's
    /// override when one matches, else the nameserver's own signal, else RFC 9539 probing.
    pub(crate) fn plan(&self, zone: &Name, ns_name: &Name, addr: IpAddr) -> TransportPlan {
        if let Some(p) = self.shared.policies.load().lookup(zone, ns_name, addr) {
            if p.auth == Auth::Dane && self.shared.settings.signals {
                // DANE needs the TLSA records, which come with the nameserver's signal.
                let _ = self.signal_plan(ns_name);
            }
            return TransportPlan {
                mode: p.mode,
                transports: p.transports.clone(),
                auth: p.auth,
                tls_name: None,
                port: DOT_PORT,
                source: PlanSource::Override(p.id.clone()),
            };
        }
        if self.shared.settings.signals
            && let Some(plan) = self.signal_plan(ns_name)
        {
            return plan;
        }
        let cleartext = |source| TransportPlan {
            mode: Mode::Cleartext,
            transports: vec![Transport::Do53],
            auth: Auth::None,
            tls_name: None,
            port: DOT_PORT,
            source,
        };
        if !self.shared.settings.probing {
            return cleartext(PlanSource::Default);
        }
        let now = unix_now();
        let decisions = PROBED.map(|t| (t, self.shared.probes.decide(addr, t, now)));
        let usable: Vec<Transport> =
            decisions.iter().filter(|(_, d)| *d == ProbeDecision::Use).map(|(t, _)| *t).collect();
        if !usable.is_empty() {
            // Known to work: encrypted only (DoQ before DoT); Do53 comes back only after a
            // failure.
            let mut transports = usable;
            transports.push(Transport::Do53);
            return TransportPlan {
                mode: Mode::Opportunistic,
                transports,
                auth: Auth::None,
                tls_name: None,
                port: DOT_PORT,
                source: PlanSource::Probe(ProbeDecision::Use),
            };
        }
        if decisions.iter().any(|(_, d)| *d == ProbeDecision::Probe) {
            return cleartext(PlanSource::Probe(ProbeDecision::Probe));
        }
        cleartext(PlanSource::Probe(ProbeDecision::Skip))
    }

    /// The plan a nameserver's own `_dns` SVCB signal asks for, if it is known and offers a
    /// transport adox speaks. An unknown signal is queued for lookup: this query does not
    /// wait for it (RFC 9461 signals apply from the next query).
    fn signal_plan(&self, ns_name: &Name) -> Option<TransportPlan> {
        let now = unix_now();
        match self.shared.signals.get(ns_name, now) {
            Some(Signal::Known { records, secure, dane, .. }) => {
                // SvcPriority orders the records; within one, adox prefers DoQ, then DoT.
                // The port is the first usable record's (its `port` key, else 853); records
                // on other ports are left for now (one port per plan).
                let offered: Vec<(Transport, u16)> = records
                    .iter()
                    .flat_map(|r| r.transports().into_iter().map(move |t| (t, r.port_for(t))))
                    .filter(|(t, _)| t.supported())
                    .collect();
                let port = offered.first().map_or(DOT_PORT, |(_, p)| *p);
                let mut transports: Vec<Transport> =
                    offered.iter().filter(|(_, p)| *p == port).map(|(t, _)| *t).collect();
                transports.dedup();
                if secure && !dane.is_empty() {
                    // Secure SVCB and secure TLSA: strict with DANE over the transports
                    // that have TLSA records, never cleartext (SVCB-DANE; R5).
                    let strict: Vec<Transport> =
                        transports.iter().copied().filter(|t| dane.iter().any(|(d, _)| d == t)).collect();
                    if let Some((_, name)) = dane.iter().find(|(t, _)| strict.first() == Some(t)) {
                        return Some(TransportPlan {
                            mode: Mode::Strict,
                            transports: strict,
                            auth: Auth::Dane,
                            tls_name: Some(name.clone()),
                            port,
                            source: PlanSource::SecureSignal,
                        });
                    }
                }
                if transports.is_empty() {
                    return None;
                }
                transports.push(Transport::Do53);
                // Without DANE: an opportunistic hint, no authentication.
                Some(TransportPlan {
                    mode: Mode::Opportunistic,
                    transports,
                    auth: Auth::None,
                    tls_name: None,
                    port,
                    source: if secure { PlanSource::SecureSignal } else { PlanSource::InsecureSignal },
                })
            }
            Some(Signal::Pending(_)) => None,
            None => {
                if self.shared.signals.begin(ns_name, now) {
                    self.wanted_signals.borrow_mut().push(ns_name.clone());
                }
                None
            }
        }
    }

    /// Looks up and stores the `_dns` SVCB signal of `ns` (run by the worker as its own
    /// task). A lookup that needed `ns` itself (the zone holding the signal is served by
    /// `ns`) is a circular dependency (R5): it resolved without waiting, because a plan
    /// never waits on a pending signal, and it is reported.
    pub async fn learn_signal(&self, ns: &Name) {
        let Ok(qname) = Name::from_ascii("_dns").and_then(|l| l.append_name(ns)) else { return };
        let result = self.resolve(&qname, RecordType::SVCB).await;
        let now = unix_now();
        let secure = matches!(&result, Ok(a) if a.security == Security::Secure);
        let mut bogus = None;
        let (rdatas, ttl): (Vec<Vec<u8>>, u32) = match &result {
            Ok(Answer { security: Security::Bogus(b), .. }) => {
                // A bogus signal is ignored (and reported in server state and metrics),
                // never followed.
                tracing::info!(nameserver = %ns, reason = %b.text, "SVCB signal is DNSSEC-bogus: ignored");
                bogus = Some(crate::signal::SignalError::Bogus(b.text.clone()));
                (Vec::new(), self.shared.validator.bogus_ttl)
            }
            Ok(a) => {
                let svcb: Vec<&Record> = a.answers.iter().filter(|r| r.record_type() == RecordType::SVCB).collect();
                let ttl = svcb.iter().map(|r| r.ttl).min().unwrap_or(a.cache_ttl);
                let raw = svcb
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::Unknown { rdata, .. } => Some(rdata.anything.clone()),
                        _ => None,
                    })
                    .collect();
                (raw, ttl)
            }
            // A failed lookup is tried again after a minute, not remembered as "none".
            Err(_) => (Vec::new(), 60),
        };
        let (records, mut refused) = crate::signal::parse_svcb_set(rdatas.iter().map(Vec::as_slice));
        refused.extend(bogus);
        if !refused.is_empty() {
            self.stats.signals_refused.bump();
            tracing::info!(nameserver = %ns, refused = ?refused, "SVCB records refused");
        }
        let cycle = self.served_by(&qname, ns);
        if cycle {
            self.stats.signal_cycles.bump();
            tracing::info!(nameserver = %ns, "signal lookup depends on the nameserver it decides for");
        }
        if !records.is_empty() {
            self.stats.signals_learned.bump();
        }
        let mut until = now + u64::from(ttl.max(1));
        let tlsa = if secure { Some(self.learn_tlsa(ns, &records).await) } else { None };
        let (dane, tlsa_certain) = match tlsa {
            Some(TlsaLearnt { dane, certain, until: tlsa_until }) => {
                // Refreshed when the first of SVCB and TLSA expires.
                until = until.min(tlsa_until);
                (dane, certain)
            }
            None => (Vec::new(), true),
        };
        if (!secure || !tlsa_certain)
            && let Some(Signal::Known { secure: true, dane: old, .. }) = self.shared.signals.last(ns)
            && !old.is_empty()
        {
            // A strict state learned from a secure signal holds until a secure answer says
            // otherwise: a refresh that failed, or came back unsigned or bogus (blocked or
            // forged), for the SVCB or for a TLSA RRset, does not downgrade the server.
            // Tried again in a minute.
            tracing::warn!(nameserver = %ns, "signal refresh not secure: the strict DANE state stays");
            if let Some(Signal::Known { records, secure, dane, cycle, refused, .. }) = self.shared.signals.last(ns) {
                let until = now + 60;
                self.shared.signals.put(ns, Signal::Known { records, secure, dane, cycle, refused, until });
            }
            return;
        }
        self.shared.signals.put(ns, Signal::Known { records, secure, dane, cycle, refused, until });
    }

    /// For a secure signal: the TLSA RRset of each offered DoT/DoQ target (`_853._tcp` and
    /// `_853._quic` at the TargetName, the TLSA base name), looked up and validated like any
    /// data; secure ones go into the TLSA table read by DANE handshakes.
    async fn learn_tlsa(&self, ns: &Name, records: &[crate::signal::SvcbRecord]) -> TlsaLearnt {
        let mut out: Vec<(Transport, Name)> = Vec::new();
        let mut certain = true;
        let mut first_expiry = u64::MAX;
        for r in records {
            let target = if r.target.is_root() { ns.clone() } else { canonical(&r.target) };
            for t in r.transports() {
                let proto = match t {
                    Transport::Dot => "tcp",
                    Transport::Doq => "quic",
                    _ => continue,
                };
                if out.iter().any(|(d, _)| *d == t) {
                    continue;
                }
                let host = target.to_ascii();
                let owner = crate::transport::dane::TlsaTable::owner(r.port_for(t), proto, &host);
                let Ok(qname) = Name::from_ascii(&owner) else { continue };
                let Ok(answer) = self.resolve(&qname, RecordType::TLSA).await else {
                    certain = false;
                    continue;
                };
                match &answer.security {
                    Security::Secure => {}
                    Security::Bogus(b) => {
                        self.stats.signals_refused.bump();
                        tracing::info!(nameserver = %ns, tlsa = %owner, reason = %b.text, "TLSA is DNSSEC-bogus: ignored");
                        certain = false;
                        continue;
                    }
                    _ => {
                        // Below a secure SVCB an insecure TLSA answer is unexpected: no
                        // evidence either way.
                        certain = false;
                        continue;
                    }
                }
                // At the owner, or at the end of a CNAME chain from it (RFC 7671 section 7;
                // the answer's status covers every link).
                let tlsa: Vec<&Record> =
                    answer.answers.iter().filter(|r| r.record_type() == RecordType::TLSA).collect();
                if tlsa.is_empty() {
                    continue; // no TLSA (securely): no DANE for this transport
                }
                let ttl = tlsa.iter().map(|r| r.ttl).min().unwrap_or(answer.cache_ttl);
                let mut usable = Vec::new();
                for r in &tlsa {
                    if let RData::Unknown { rdata, .. } = &r.data {
                        match crate::signal::parse_tlsa(&rdata.anything) {
                            Ok(t) => usable.push(t),
                            Err(e) => tracing::info!(tlsa = %owner, reason = %e, "TLSA record not usable"),
                        }
                    }
                }
                if usable.is_empty() {
                    tracing::warn!(tlsa = %owner, "secure TLSA RRset without a usable record: DANE cannot authenticate");
                }
                let now = unix_now();
                let expiry = now + u64::from(ttl.max(1));
                first_expiry = first_expiry.min(expiry);
                let key = crate::transport::dane::TlsaTable::key(proto, &host);
                // Kept a little past its TTL: the signal is refreshed when the TLSA expires,
                // and handshakes during that refresh still need the records.
                self.shared.tlsa.put(&key, usable, expiry + TLSA_GRACE_S, now);
                out.push((t, target.clone()));
            }
        }
        TlsaLearnt { dane: out, certain, until: first_expiry }
    }

    /// Whether the zone holding `name` (the deepest cached cut above it) lists `ns`.
    fn served_by(&self, name: &Name, ns: &Name) -> bool {
        let now = self.upstream.now();
        let mut cur = parent(name);
        loop {
            if let Some(hit) = self.shared.records.get(&cur, u16::from(RecordType::NS), now)
                && let Some(recs) = rrset_records(&hit.data)
            {
                return ns_names(recs).contains(&canonical(ns));
            }
            if cur.is_root() {
                return false;
            }
            cur = parent(&cur);
        }
    }

    /// Starts an RFC 9539 probe of `addr` over DoT beside a Do53 query, if the table wants
    /// one and the worker's probe budget allows; it never delays the query.
    fn start_probe(&self, addr: IpAddr, sname: &Name, stype: RecordType) {
        for transport in PROBED {
            self.start_probe_over(addr, transport, sname, stype);
        }
    }

    fn start_probe_over(&self, addr: IpAddr, transport: Transport, sname: &Name, stype: RecordType) {
        let settings = &self.shared.settings;
        let now = unix_now();
        if self.probes_in_flight.get() >= settings.max_concurrent_probes
            || self.shared.probes.decide(addr, transport, now) != ProbeDecision::Probe
            || !self.shared.probes.start_probe(addr, transport, now)
        {
            return;
        }
        let id: u16 = rand::rng().random();
        let Ok(query) = build_query(id, sname, stype, settings.edns_udp_size) else { return };
        self.stats.probes_started.bump();
        self.probes_in_flight.set(self.probes_in_flight.get() + 1);
        let (upstream, shared, stats, in_flight) =
            (self.upstream.clone(), self.shared.clone(), self.stats.clone(), self.probes_in_flight.clone());
        let (sname, timeout) = (sname.clone(), settings.dot_timeout);
        self.upstream.spawn(Box::pin(async move {
            let wire = match transport {
                Transport::Doq => Wire::Doq { auth: PeerAuth::None },
                _ => Wire::Dot { auth: PeerAuth::None },
            };
            let result = upstream.exchange(SocketAddr::new(addr, DOT_PORT), &query, wire, timeout).await;
            let checked = result.and_then(|b| check_reply(&b, id, &sname, stype));
            match checked {
                Ok(_) => {
                    stats.probe_successes.bump();
                    shared.probes.success(addr, transport, unix_now());
                }
                Err(e) => {
                    stats.probe_failures.bump();
                    shared.probes.failure(addr, transport, unix_now(), &failure_text(&e));
                }
            }
            in_flight.set(in_flight.get().saturating_sub(1));
        }));
    }

    /// One query to one server over UDP, retried over TCP when truncated; checks the reply
    /// against the question and updates the server's RTT state.
    async fn exchange_do53(
        &self,
        zone: &Name,
        addr: IpAddr,
        sname: &Name,
        stype: RecordType,
        budget: &Budget,
    ) -> Result<Message, ExchangeError> {
        let settings = &self.shared.settings;
        let start = self.upstream.now();
        budget.spend(start).map_err(ExchangeError::Fatal)?;
        let _guard = self.reserve_exchange(addr, zone)?;
        let rto = self.shared.servers.get(addr).rto(settings.initial_rto).min(budget.deadline - start);
        let id: u16 = rand::rng().random();
        let query = build_query(id, sname, stype, settings.edns_udp_size).map_err(|_| {
            ExchangeError::Fatal(ResolveError::InvalidData(format!("cannot encode a query for {sname}")))
        })?;
        let server = SocketAddr::new(addr, 53);
        self.stats.upstream_udp.bump();
        let fail = |e: UpstreamError| {
            // Local trouble (no descriptor, no route) says nothing about the server.
            if !matches!(e, UpstreamError::Io(_)) {
                self.shared.servers.update(addr, |s| s.fail(self.upstream.now(), rto));
            }
            if e == UpstreamError::Timeout {
                self.stats.upstream_timeouts.bump();
            }
            ExchangeError::Server(e)
        };
        let udp = self.upstream.exchange(server, &query, Wire::Udp, rto).await;
        let rtt = self.upstream.now().saturating_duration_since(start);
        // A datagram too large for our buffer counts as truncated: ask again over TCP.
        let (mut msg, truncated) = match udp {
            Ok(bytes) => {
                let msg = check_reply(&bytes, id, sname, stype).map_err(fail)?;
                let tc = msg.metadata.truncation;
                (Some(msg), tc)
            }
            Err(UpstreamError::Oversized) => (None, true),
            Err(e) => return Err(fail(e)),
        };
        if truncated {
            // RFC 7766: retry the same server over TCP. TCP needs a handshake: allow more time.
            self.stats.upstream_tcp.bump();
            let now = self.upstream.now();
            let tcp_timeout = (rto * 3).max(settings.initial_rto).min(budget.deadline.saturating_duration_since(now));
            let bytes = self.upstream.exchange(server, &query, Wire::Tcp, tcp_timeout).await.map_err(fail)?;
            msg = Some(check_reply(&bytes, id, sname, stype).map_err(fail)?);
        }
        let Some(msg) = msg else { return Err(fail(UpstreamError::BadResponse("no reply"))) };
        match msg.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => {
                // Only a usable answer counts as a success for server selection.
                self.shared.servers.update(addr, |s| s.sample(rtt));
                Ok(msg)
            }
            other => Err(fail(UpstreamError::Rcode(u16::from(other) as u8))),
        }
    }
}

/// An iterative query: RD clear, EDNS(0) with our buffer size and DO set (so RRSIGs are
/// there for clients that ask and for validation).
pub(crate) fn build_query(id: u16, name: &Name, rtype: RecordType, udp_size: u16) -> Result<Vec<u8>, UpstreamError> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = false;
    let mut q = Query::query(name.clone(), rtype);
    q.set_query_class(DNSClass::IN);
    m.add_query(q);
    let mut edns = Edns::new();
    edns.set_max_payload(udp_size);
    edns.set_dnssec_ok(true);
    m.set_edns(edns);
    m.to_vec().map_err(|_| UpstreamError::BadResponse("query not encodable"))
}

/// Parses a reply and checks that it answers our query: QR, ID, opcode and question.
pub(crate) fn check_reply(bytes: &[u8], id: u16, sname: &Name, stype: RecordType) -> Result<Message, UpstreamError> {
    // SVCB, HTTPS and TLSA records are kept as raw RDATA (read one by one by `signal`).
    let hidden = crate::wire::hide_raw_types(bytes);
    let mut msg =
        Message::from_vec(hidden.as_deref().unwrap_or(bytes)).map_err(|_| UpstreamError::BadResponse("unparsable"))?;
    if hidden.is_some() {
        for r in msg.answers.iter_mut().chain(msg.authorities.iter_mut()).chain(msg.additionals.iter_mut()) {
            if let RData::Unknown { code, .. } = &mut r.data
                && let Some(real) = crate::wire::raw_type_of(u16::from(*code))
            {
                *code = RecordType::from(real);
            }
        }
    }
    if msg.metadata.message_type != MessageType::Response || msg.metadata.op_code != OpCode::Query {
        return Err(UpstreamError::BadResponse("not a query response"));
    }
    if msg.metadata.id != id {
        return Err(UpstreamError::BadResponse("id mismatch"));
    }
    match msg.queries.as_slice() {
        [q] if q.name() == sname && q.query_type() == stype && q.query_class() == DNSClass::IN => {}
        _ => return Err(UpstreamError::BadResponse("question mismatch")),
    }
    // RFC 2181 section 8: a TTL with the top bit set is read as zero.
    for r in msg.answers.iter_mut().chain(msg.authorities.iter_mut()).chain(msg.additionals.iter_mut()) {
        if r.ttl >= 1 << 31 {
            r.ttl = 0;
        }
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_has_no_rd_and_edns_do() {
        let q = build_query(7, &"www.lab.".parse().unwrap(), RecordType::A, 1232).unwrap();
        let m = Message::from_vec(&q).unwrap();
        assert!(!m.metadata.recursion_desired);
        let e = m.edns.unwrap();
        assert_eq!(e.max_payload(), 1232);
        assert!(e.flags().dnssec_ok);
    }

    #[test]
    fn reply_checks() {
        let name: Name = "www.lab.".parse().unwrap();
        let q = build_query(7, &name, RecordType::A, 1232).unwrap();
        assert_eq!(
            check_reply(&q, 7, &name, RecordType::A).unwrap_err(),
            UpstreamError::BadResponse("not a query response")
        );
        let mut r = Message::from_vec(&q).unwrap();
        r.metadata.message_type = MessageType::Response;
        let bytes = r.to_vec().unwrap();
        assert!(check_reply(&bytes, 7, &"WWW.Lab.".parse().unwrap(), RecordType::A).is_ok());
        assert_eq!(
            check_reply(&bytes, 8, &name, RecordType::A).unwrap_err(),
            UpstreamError::BadResponse("id mismatch")
        );
        assert_eq!(
            check_reply(&bytes, 7, &name, RecordType::AAAA).unwrap_err(),
            UpstreamError::BadResponse("question mismatch")
        );
        assert_eq!(
            check_reply(&bytes[..5], 7, &name, RecordType::A).unwrap_err(),
            UpstreamError::BadResponse("unparsable")
        );
    }
}
