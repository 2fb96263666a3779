//! Server selection for one step: the addresses of a zone's nameservers (glue, cache,
//! bounded nested lookups), ordered by smoothed RTT with a random band, tried until one
//! gives a usable reply.

use std::net::IpAddr;

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::exchange::ExchangeError;
use super::iterate::{group_rrsets, ns_names, rrset_records};
use super::response::{Reply, classify, classify_forwarded};
use super::trace::TraceStep;
use super::zones::Served;
use super::{Budget, Limit, ResolveError, Resolver, Upstream, UpstreamError};
use crate::cache::records::Rank;
use crate::names::canonical;

/// Tries of one server address in one step, when it times out.
const MAX_TRIES_PER_SERVER: u32 = 3;

/// Servers whose score is within this of the best are chosen among at random (Unbound
/// uses the same 400 ms band): microseconds.
const RTT_BAND_US: u64 = 400_000;

/// A nameserver address with the name it was found under (the policy key needs both).
pub(super) type Target = (IpAddr, Name);

/// Addresses used per nameserver name at most (A and AAAA together).
const MAX_ADDRESSES_PER_NS: usize = 8;

impl<U: Upstream + Clone + 'static> Resolver<U> {
    /// Addresses of the nameservers already known: from the referral's own glue (used even
    /// when it could not be cached, e.g. TTL 0) and from the cache (any rank); only those
    /// the upstream ACL allows.
    pub(super) fn known_addresses(&self, ns: &[Name], glue: &[Record], blocked: &mut bool) -> (Vec<Target>, Vec<Name>) {
        self.addresses_of(ns, glue, true, blocked)
    }

    /// [`Self::known_addresses`], from the glue alone unless `cached` (a forward or stub
    /// zone's servers are the addresses the operator gave, never what a name of theirs
    /// resolves to elsewhere).
    fn addresses_of(&self, ns: &[Name], glue: &[Record], cached: bool, blocked: &mut bool) -> (Vec<Target>, Vec<Name>) {
        let now = self.upstream.now();
        let mut addrs: Vec<Target> = Vec::new();
        let mut seen: std::collections::HashSet<IpAddr> = std::collections::HashSet::new();
        let mut unknown = Vec::new();
        for n in ns {
            let mut found = false;
            let mut taken = 0usize;
            let mut consider = |r: &Record| {
                let ip = match &r.data {
                    RData::A(a) => IpAddr::V4(a.0),
                    RData::AAAA(a) => IpAddr::V6(a.0),
                    _ => return,
                };
                found = true;
                if !self.shared.access.load().upstream_allowed(ip) {
                    *blocked = true;
                } else if taken < MAX_ADDRESSES_PER_NS && seen.insert(ip) {
                    // A hostile name with thousands of addresses gives a few, in linear time.
                    taken += 1;
                    addrs.push((ip, n.clone()));
                }
            };
            glue.iter().filter(|g| canonical(&g.name) == *n).for_each(&mut consider);
            for rtype in [RecordType::A, RecordType::AAAA].into_iter().filter(|_| cached) {
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
    pub(super) fn order_by_rtt(&self, addrs: &mut [Target]) {
        let now = self.upstream.now();
        let servers = &self.shared.servers;
        let mut scored: Vec<(u64, Target)> = addrs
            .iter()
            .map(|t| (servers.score(t.0, now, self.upstream.random_below(5_000) as u32), t.clone()))
            .collect();
        let best = scored.iter().map(|(s, _)| *s).min().unwrap_or(0);
        for (score, _) in scored.iter_mut() {
            if *score <= best + RTT_BAND_US {
                // Inside the band: a random rank below every score outside it (those are
                // above best + RTT_BAND_US, so at least RTT_BAND_US).
                *score = self.upstream.random_below(RTT_BAND_US);
            }
        }
        scored.sort_by_key(|(s, _)| *s);
        for (slot, (_, t)) in addrs.iter_mut().zip(scored) {
            *slot = t;
        }
    }

    /// Sends (`sname`, `stype`) to the servers of `zone` until one gives a usable reply,
    /// resolving nameserver addresses (bounded) when the known ones are exhausted. Returns
    /// the reply, its AA bit and the address that gave it.
    #[allow(clippy::too_many_arguments, reason = "one step's full context; a struct would only rename it")]
    pub(super) async fn query_zone(
        &self,
        zone: &Name,
        ns: &[Name],
        glue: &[Record],
        sname: &Name,
        stype: RecordType,
        budget: &Budget,
        depth: u32,
    ) -> Result<(Reply, bool, IpAddr), ResolveError> {
        let settings = &self.shared.settings;
        budget.step(self.upstream.now())?;
        budget.note(|| TraceStep::Zone {
            zone: zone.clone(),
            qname: sname.clone(),
            qtype: stype,
            nameservers: ns.to_vec(),
        });
        let mut blocked = false;
        // A forward or stub zone asked at its own servers (not a child it referred to).
        let (configured, forwarded) = match self.shared.zones.load().get(zone).map(|z| &z.served) {
            Some(Served::Forward(_)) => (true, true),
            Some(Served::Stub(_)) => (true, false),
            _ => (false, false),
        };
        let (mut candidates, unknown) = self.addresses_of(ns, glue, !configured, &mut blocked);
        self.order_by_rtt(&mut candidates);
        // Names inside the zone without glue can only be found through the zone itself.
        // Names that already failed in this client query are not tried again.
        let mut to_resolve: Vec<Name> =
            unknown.into_iter().filter(|n| !zone.zone_of(n) && !budget.failed_ns.borrow().contains(n)).collect();
        to_resolve.reverse();
        // Each address tried, with its number of tries.
        let mut tried: Vec<(IpAddr, u32)> = Vec::new();
        let mut attempts = 0u32;
        let mut last: Option<(IpAddr, UpstreamError)> = None;
        let mut replied = false;
        let mut lookups = 0u32;
        let mut queue: std::collections::VecDeque<Target> = candidates.into();
        // Third tries, kept for when nothing else is left.
        let mut last_resort: Vec<Target> = Vec::new();
        loop {
            while let Some((addr, ns_name)) = queue.pop_front() {
                if attempts >= settings.max_servers_per_step {
                    return Err(self.unreachable(zone, last, replied));
                }
                attempts += 1;
                let tries = match tried.iter_mut().find(|(a, _)| *a == addr) {
                    Some((_, n)) => {
                        *n += 1;
                        *n
                    }
                    None => {
                        tried.push((addr, 1));
                        1
                    }
                };
                match self.exchange(zone, (addr, &ns_name), sname, stype, budget).await {
                    Ok(msg) => match self.shared.zones.load().wall_off(
                        zone,
                        if forwarded {
                            classify_forwarded(&msg, zone, sname, stype)
                        } else {
                            classify(&msg, zone, sname, stype)
                        },
                    ) {
                        Reply::Lame => {
                            self.shared.servers.update(addr, |s| s.fail(self.upstream.now(), settings.initial_rto));
                            last = Some((addr, UpstreamError::Lame));
                            replied = true;
                        }
                        reply => {
                            if stype == RecordType::NS
                                && let Reply::Answer { data, .. } = &reply
                            {
                                self.take_ns_answer_glue(&msg, zone, data);
                            }
                            return Ok((reply, msg.metadata.authoritative, addr));
                        }
                    },
                    Err(ExchangeError::Fatal(e)) => return Err(e),
                    Err(ExchangeError::Server(e)) => {
                        budget.note_failure(&e);
                        replied |= matches!(e, UpstreamError::Rcode(_));
                        // A timeout may be a lost datagram or a slow server: it is tried again,
                        // after the others, with the longer timeout its failure just earned
                        // (0.8, then 1.6 s); a third try (3.2 s, so that a server 2 s away
                        // still answers) only once every other address and nameserver name
                        // has had its turn.
                        if e.retry_same_server() && tries < MAX_TRIES_PER_SERVER {
                            if tries + 1 < MAX_TRIES_PER_SERVER {
                                queue.push_back((addr, ns_name));
                            } else {
                                last_resort.push((addr, ns_name));
                            }
                        }
                        last = Some((addr, e));
                    }
                }
            }
            let next = if lookups < settings.max_ns_lookups { to_resolve.pop() } else { None };
            let Some(name) = next else {
                if last_resort.is_empty() {
                    break;
                }
                queue.extend(last_resort.drain(..));
                continue;
            };
            lookups += 1;
            if depth + 1 > settings.max_depth {
                return Err(ResolveError::LimitExceeded(Limit::Depth));
            }
            let found = self.ns_addresses(&name, budget, depth + 1).await?;
            if found.is_empty() {
                budget.failed_ns.borrow_mut().push(name.clone());
            }
            for ip in found {
                if !self.shared.access.load().upstream_allowed(ip) {
                    blocked = true;
                } else if !tried.iter().any(|(a, _)| *a == ip) && !queue.iter().any(|(a, _)| *a == ip) {
                    queue.push_back((ip, name.clone()));
                }
            }
        }
        if tried.is_empty() && blocked {
            return Err(ResolveError::NoAllowedAddress { zone: zone.clone() });
        }
        Err(self.unreachable(zone, last, replied))
    }

    pub(super) fn unreachable(
        &self,
        zone: &Name,
        last: Option<(IpAddr, UpstreamError)>,
        replied: bool,
    ) -> ResolveError {
        let (server, last) = match last {
            // Under strict mode the text is the fixed grammar operators parse.
            Some((_, UpstreamError::Strict(strict))) => {
                return ResolveError::StrictUnreachable { zone: zone.clone(), detail: strict };
            }
            Some((a, e)) => (Some(a), format!("{a}: {e}")),
            None => (None, "no nameserver address".to_string()),
        };
        ResolveError::NoReachableAuthority { zone: zone.clone(), server, last, replied }
    }

    /// Caches the addresses of the NS targets found in the additional section of an NS
    /// answer (inside the zone's bailiwick) as glue.
    pub(super) fn take_ns_answer_glue(&self, msg: &Message, zone: &Name, data: &[Record]) {
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
    pub(super) async fn ns_addresses(
        &self,
        name: &Name,
        budget: &Budget,
        depth: u32,
    ) -> Result<Vec<IpAddr>, ResolveError> {
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
}
