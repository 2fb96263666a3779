//! Discovery: what the resolver learns about a nameserver's encryption beside the
//! queries it sends. Its `_dns` SVCB signal (RFC 9461) and, for a secure one, the TLSA
//! RRsets of its targets (SVCB-DANE), each looked up as an ordinary resolution in a task
//! of its own; and RFC 9539 probes of servers no policy or signal covers.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::exchange::{build_query, check_reply};
use super::iterate::{ns_names, rrset_records};
use super::{Answer, PeerAuth, Resolver, Upstream, Wire};
use crate::dnssec::Security;
use crate::names::{canonical, parent};
use crate::upstream::plan::{DOT_PORT, PROBED};
use crate::upstream::probe::ProbeDecision;
use crate::upstream::signal::Signal;
use adox_api::policy::Transport;

/// Seconds a TLSA table entry outlives its TTL when its signatures' expiration is not
/// known (a secure answer always carries them; this is a floor for the impossible case).
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
    /// When the first RRSIG over a TLSA RRset expires.
    signatures_until: u64,
    /// A lookup skipped a wait for another signal that would have closed a cycle.
    cycle: bool,
}

/// How long a nameserver whose name cannot carry a `_dns` label is known to have no signal.
const NO_SIGNAL_POSSIBLE_S: u64 = 86_400;

/// Signature checks one expiry lookup may spend (each RRSIG of an RRset once).
const EXPIRY_CHECKS: u32 = 16;
/// The longest a strict state or a TLSA set outlives its last refresh, whatever its
/// signatures say (a hostile signed zone may sign for decades; refreshes happen at TTL).
const MAX_SIGNED_LIFE_S: u64 = 30 * 86_400;

impl<U: Upstream + Clone + 'static> Resolver<U> {
    /// When the signatures that make the `rtype` RRset of a secure answer valid expire
    /// (Unix seconds): only RRSIGs that verify with the signer's validated keys count (an
    /// RRSIG merely present in the answer proves nothing: anyone on the path can add one
    /// expiring in a second, or in a century), the latest of them, if it lies ahead.
    fn signatures_expire(&self, answers: &[Record], rtype: RecordType) -> Option<u64> {
        let now = self.upstream.unix_now();
        let data: Vec<&Record> = answers.iter().filter(|r| r.record_type() == rtype).collect();
        let owner = data.first()?.name.clone();
        let checks = std::cell::Cell::new(EXPIRY_CHECKS);
        let mut latest: Option<u64> = None;
        for sig in super::validate::signatures(answers).into_iter().filter(|s| s.type_covered == u16::from(rtype)) {
            let Some(hit) = self.shared.records.get(&sig.signer, u16::from(RecordType::DNSKEY), self.upstream.now())
            else {
                continue;
            };
            let (Security::Secure, Some(records)) = (&hit.security, rrset_records(&hit.data)) else { continue };
            let keys = super::validate::dnskeys_of(records, &sig.signer);
            let expires = crate::dnssec::verify::absolute(sig.expiration, now);
            let signer = sig.signer.clone();
            let verified = crate::dnssec::verify::verify_rrset(
                &owner,
                u16::from(rtype),
                &data,
                &[sig],
                &signer,
                &keys,
                now,
                self.shared.validator.sha1,
                &checks,
            );
            if verified.is_ok()
                && let Ok(t) = u64::try_from(expires)
                && t > now
            {
                latest = Some(latest.map_or(t, |l| l.max(t)));
            }
        }
        latest.map(|t| t.min(now + MAX_SIGNED_LIFE_S))
    }

    /// Looks up and stores the `_dns` SVCB signal of `ns` (run by the worker as its own
    /// task). A lookup that needed `ns` itself (the zone holding the signal is served by
    /// `ns`), or that would have waited for a signal whose lookup waits, through any
    /// number of others, for this one (`transport.signal_wait`), is a circular dependency
    /// (R5): it went on under what was known of that server, and it is reported.
    pub async fn learn_signal(&self, ns: &Name) {
        self.learn_signal_unannounced(ns).await;
        // Queries of this worker waiting for it go on now (others look again shortly).
        self.signal_waiters.wake(ns);
    }

    async fn learn_signal_unannounced(&self, ns: &Name) {
        let Ok(qname) = Name::from_ascii("_dns").and_then(|l| l.append_name(ns)) else {
            // A name too long to carry a `_dns` label has no signal: known as none (a
            // pending mark left behind would make queries wait for nothing).
            let until = self.upstream.unix_now() + NO_SIGNAL_POSSIBLE_S;
            let none = Signal::Known {
                records: Vec::new(),
                secure: false,
                dane: Vec::new(),
                cycle: false,
                refused: Vec::new(),
                until,
                strict_until: 0,
            };
            self.shared.signals.put(ns, none);
            return;
        };
        let (result, svcb_cycle) = self.resolve_for_signal(&qname, RecordType::SVCB, ns).await;
        let now = self.upstream.unix_now();
        let secure = matches!(&result, Ok(a) if a.security == Security::Secure);
        let mut bogus = None;
        let (rdatas, ttl): (Vec<Vec<u8>>, u32) = match &result {
            Ok(Answer { security: Security::Bogus(b), .. }) => {
                // A bogus signal is ignored (and reported in server state and metrics),
                // never followed.
                crate::rate_limited!(info, nameserver = %ns, reason = %b.text, "SVCB signal is DNSSEC-bogus: ignored");
                bogus = Some(crate::upstream::signal::SignalError::Bogus(b.text.clone()));
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
        let (records, mut refused) = crate::upstream::signal::parse_svcb_set(rdatas.iter().map(Vec::as_slice));
        refused.extend(bogus);
        if !refused.is_empty() {
            self.stats.signals_refused.bump();
            crate::rate_limited!(info, nameserver = %ns, refused = ?refused, "SVCB records refused");
        }
        if !records.is_empty() {
            self.stats.signals_learned.bump();
        }
        let mut until = now + u64::from(ttl.max(1));
        let svcb_signatures = match &result {
            Ok(a) if secure => self.signatures_expire(&a.answers, RecordType::SVCB),
            _ => None,
        };
        let tlsa = if secure { Some(self.learn_tlsa(ns, &records).await) } else { None };
        let (dane, tlsa_certain, tlsa_signatures, tlsa_cycle) = match tlsa {
            Some(TlsaLearnt { dane, certain, until: tlsa_until, signatures_until, cycle }) => {
                // Refreshed when the first of SVCB and TLSA expires.
                until = until.min(tlsa_until);
                (dane, certain, signatures_until, cycle)
            }
            None => (Vec::new(), true, u64::MAX, false),
        };
        let cycle = self.served_by(&qname, ns) || svcb_cycle || tlsa_cycle;
        if cycle {
            self.stats.signal_cycles.bump();
            // The ordinary case of a zone served by its own nameserver: not news.
            tracing::debug!(nameserver = %ns, "signal lookup depends on the nameserver it decides for");
        }
        // A strict state lasts while every signature it rests on is valid.
        let strict_until =
            if secure && !dane.is_empty() { svcb_signatures.unwrap_or(until).min(tlsa_signatures) } else { 0 };
        if (!secure || !tlsa_certain)
            && let Some(last) = self.shared.signals.last(ns)
            && last.strict_at(now)
        {
            // A strict state learned from a secure signal holds until a secure answer says
            // otherwise: a refresh that failed, or came back unsigned or bogus (blocked or
            // forged), for the SVCB or for a TLSA RRset, does not downgrade the server.
            // Tried again in a minute.
            crate::rate_limited!(warn, nameserver = %ns, "signal refresh not secure: the strict DANE state stays");
            if let Signal::Known { records, secure, dane, cycle, refused, strict_until, .. } = last {
                let until = (now + 60).min(strict_until);
                self.shared
                    .signals
                    .put(ns, Signal::Known { records, secure, dane, cycle, refused, until, strict_until });
            }
            return;
        }
        self.shared.signals.put(ns, Signal::Known { records, secure, dane, cycle, refused, until, strict_until });
    }

    /// For a secure signal: the TLSA RRset of each offered DoT/DoQ/DoH target (`_853._tcp`,
    /// `_853._quic` and `_443._tcp` at the TargetName, the TLSA base name; ports from the
    /// record), looked up and validated like any
    /// data; secure ones go into the TLSA table read by DANE handshakes.
    async fn learn_tlsa(&self, ns: &Name, records: &[crate::upstream::signal::SvcbRecord]) -> TlsaLearnt {
        let mut out: Vec<(Transport, Name)> = Vec::new();
        let mut certain = true;
        let mut first_expiry = u64::MAX;
        let mut signatures_until = u64::MAX;
        let mut cycle = false;
        for r in records {
            let target = if r.target.is_root() { ns.clone() } else { canonical(&r.target) };
            for t in r.transports() {
                // The TLSA owner's protocol label, and the table namespace the verifier of
                // the transport reads (DoT and DoH both run over TCP).
                let Some(table) = crate::upstream::dane::table_proto(t) else { continue };
                let proto = if t == Transport::Doq { "quic" } else { "tcp" };
                if out.iter().any(|(d, _)| *d == t) {
                    continue;
                }
                let host = target.to_ascii();
                let owner = crate::upstream::dane::TlsaTable::owner(r.port_for(t), proto, &host);
                let Ok(qname) = Name::from_ascii(&owner) else { continue };
                let (answer, tlsa_cycle) = self.resolve_for_signal(&qname, RecordType::TLSA, ns).await;
                cycle |= tlsa_cycle;
                let Ok(answer) = answer else {
                    certain = false;
                    continue;
                };
                match &answer.security {
                    Security::Secure => {}
                    Security::Bogus(b) => {
                        self.stats.signals_refused.bump();
                        crate::rate_limited!(info, nameserver = %ns, tlsa = %owner, reason = %b.text, "TLSA is DNSSEC-bogus: ignored");
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
                        match crate::upstream::signal::parse_tlsa(&rdata.anything) {
                            Ok(t) => usable.push(t),
                            Err(e) => crate::rate_limited!(info, tlsa = %owner, reason = %e, "TLSA record not usable"),
                        }
                    }
                }
                if usable.is_empty() {
                    crate::rate_limited!(warn, tlsa = %owner, "secure TLSA RRset without a usable record: DANE cannot authenticate");
                }
                let now = self.upstream.unix_now();
                let expiry = now + u64::from(ttl.max(1));
                first_expiry = first_expiry.min(expiry);
                let key = crate::upstream::dane::TlsaTable::key(table, &host);
                // Refreshed at its TTL (the signal's `until`), but usable to authenticate
                // until its signatures expire, never beyond: a zone served only by its own
                // strict nameserver, idle past the TTL with no session to resume, can
                // only refresh its TLSA over a handshake that needs the TLSA (R5's "no
                // circular dependencies").
                let valid = self.signatures_expire(&answer.answers, RecordType::TLSA).unwrap_or(expiry + TLSA_GRACE_S);
                signatures_until = signatures_until.min(valid);
                self.shared.tlsa.put(&key, usable, valid, now);
                out.push((t, target.clone()));
            }
        }
        TlsaLearnt { dane: out, certain, until: first_expiry, signatures_until, cycle }
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
    pub(super) fn start_probe(&self, addr: IpAddr, sname: &Name, stype: RecordType) {
        for transport in PROBED {
            self.start_probe_over(addr, transport, sname, stype);
        }
    }

    fn start_probe_over(&self, addr: IpAddr, transport: Transport, sname: &Name, stype: RecordType) {
        let settings = &self.shared.settings;
        let now = self.upstream.unix_now();
        if self.probes_in_flight.get() >= settings.max_concurrent_probes
            || self.shared.probes.decide(addr, transport, now) != ProbeDecision::Probe
            || !self.shared.probes.start_probe(addr, transport, now)
        {
            return;
        }
        let id = self.upstream.random_id();
        let Ok(query) = build_query(id, sname, stype, settings.query_edns(), false) else { return };
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
            let server = SocketAddr::new(addr, DOT_PORT);
            let result =
                super::exchange::tapped_exchange(&upstream, &shared, &stats, server, &query, wire, timeout).await;
            let checked = result.and_then(|b| check_reply(&b, id, &sname, stype));
            match checked {
                Ok(_) => {
                    stats.probe_successes.bump();
                    shared.probes.success(addr, transport, upstream.unix_now());
                }
                Err(e) => {
                    stats.probe_failures.bump();
                    shared.probes.failure(addr, transport, upstream.unix_now(), &e);
                }
            }
            in_flight.set(in_flight.get().saturating_sub(1));
        }));
    }
}
