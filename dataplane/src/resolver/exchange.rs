//! One exchange with one nameserver address: the transport plan (operator override,
//! signal, probe table; see `upstream::plan`), the encrypted transports in order and Do53
//! where the mode allows, the query built and the reply checked against the question.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use super::servers::EdnsSupport;
use super::trace::{TraceAttempt, TraceStep};
use super::{Budget, Limit, PeerAuth, ResolveError, Resolver, Upstream, UpstreamError, Wire};
use crate::upstream::error::{Busy, Fault, StrictFailure};
use crate::upstream::plan::{self, PROBED, PlanInputs, PlanSource, Switches, TransportPlan};
use crate::upstream::probe::ProbeDecision;
use adox_api::policy::{Auth, Mode, Transport};

/// A per-exchange failure: `Server` moves on to the next server, `Fatal` ends the step.
pub(super) enum ExchangeError {
    Server(UpstreamError),
    Fatal(ResolveError),
}

impl<U: Upstream + Clone + 'static> Resolver<U> {
    /// One query to one nameserver address, over the transports its plan allows: the
    /// encrypted ones in order, then Do53 when the mode permits (opportunistic fallback is
    /// counted as a downgrade; strict never falls back).
    pub(super) async fn exchange(
        &self,
        zone: &Name,
        target: (IpAddr, &Name),
        sname: &Name,
        stype: RecordType,
        budget: &Budget,
    ) -> Result<Message, ExchangeError> {
        let plan = self.plan_after_signal(zone, target, budget).await;
        let mut attempts = budget.tracing().then(Vec::new);
        let result = self.exchange_planned(zone, target, &plan, sname, stype, budget, &mut attempts).await;
        if let Some(attempts) = attempts {
            budget.note(|| TraceStep::Exchange {
                zone: zone.clone(),
                nameserver: target.1.clone(),
                address: target.0,
                plan: plan.clone(),
                attempts,
            });
        }
        result
    }

    /// [`Self::exchange`] under a given plan; `attempts` (when explaining) gets each try.
    #[allow(clippy::too_many_arguments, reason = "one exchange's full context")]
    pub(super) async fn exchange_planned(
        &self,
        zone: &Name,
        target: (IpAddr, &Name),
        plan: &TransportPlan,
        sname: &Name,
        stype: RecordType,
        budget: &Budget,
        attempts: &mut Option<Vec<TraceAttempt>>,
    ) -> Result<Message, ExchangeError> {
        let (addr, ns_name) = target;
        let mut record = |transport: Transport, r: &Result<Message, ExchangeError>| {
            if let Some(a) = attempts.as_mut() {
                let outcome = match r {
                    Ok(_) => "ok".to_string(),
                    Err(ExchangeError::Server(e)) => e.reason(),
                    Err(ExchangeError::Fatal(e)) => e.to_string(),
                };
                a.push(TraceAttempt { transport, outcome });
            }
        };
        match plan.mode {
            Mode::Strict => {
                self.stats.upstream_strict.bump();
                if let Some(w) = &budget.watch {
                    w.met_strict.set(true);
                }
            }
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
        let now = self.upstream.unix_now();
        let encrypted: Vec<Transport> = plan.transports.iter().copied().filter(|t| t.encrypted()).collect();
        let live: Vec<Transport> = encrypted
            .iter()
            .copied()
            .filter(|t| self.shared.probes.decide(addr, *t, now) != ProbeDecision::Skip)
            .collect();
        let to_try = if live.is_empty() && plan.mode == Mode::Strict { encrypted } else { live };
        let mut failure: Option<(Transport, String)> = None;
        // The shared RFC 9539 state of an address speaks of its standard port, unauthenticated:
        // a port or a name to authenticate taken from a signal (anyone's zone can name any
        // address) must not switch encryption off for everyone else using that address.
        // Only a plan the operator made, or an unauthenticated one, speaks for the address:
        // a secure signal can name any address with its own TLS name, and a server that
        // rejects an unknown name says nothing about its DoT.
        let authenticated = plan.auth != Auth::None;
        let trusted = !authenticated || matches!(plan.source, PlanSource::Override(_));
        // Encrypted first for a signal lookup through its own server is an RFC 9539 probe
        // made before the query instead of beside it: counted as one, and its Do53
        // fallback is no downgrade.
        let probing = plan.source == PlanSource::EncryptedFirst;
        for t in to_try {
            let standard = plan.standard_port(t);
            if probing {
                self.stats.probes_started.bump();
            }
            let result = self.exchange_encrypted(zone, target, t, plan, sname, stype, budget).await;
            record(t, &result);
            match result {
                Ok(msg) => {
                    if standard {
                        self.shared.probes.success(addr, t, self.upstream.unix_now());
                    }
                    if probing {
                        self.stats.probe_successes.bump();
                    }
                    return Ok(msg);
                }
                Err(ExchangeError::Fatal(e)) => return Err(ExchangeError::Fatal(e)),
                Err(ExchangeError::Server(e)) => {
                    budget.note_failure(&e);
                    // Only transport failures say something about the server's encryption.
                    // A DoH query under a signal's URI template speaks of that path, not of
                    // the server's DoH (a hostile zone can name any address with a path
                    // that hangs or fails): only a failure of the connection itself counts,
                    // unless the template is the operator's.
                    let path_chosen_by_signal = t == Transport::Doh && !matches!(plan.source, PlanSource::Override(_));
                    if e.is_transport_failure()
                        && standard
                        && trusted
                        && !(authenticated && e.is_authentication_failure())
                        && (!path_chosen_by_signal || e.is_connection_failure())
                    {
                        self.shared.probes.failure(addr, t, self.upstream.unix_now(), &e);
                    }
                    if probing && e.is_transport_failure() {
                        self.stats.probe_failures.bump();
                    }
                    if failure.is_none() {
                        failure = Some((t, e.reason()));
                    }
                }
            }
        }
        if plan.mode == Mode::Strict {
            self.stats.strict_failures.bump();
            let (transport, reason) = failure.unwrap_or((Transport::Dot, "no-supported-transport".into()));
            tracing::debug!(nameserver = %ns_name, %addr, ?transport, %reason, "strict exchange failed");
            let strict = StrictFailure { nameserver: ns_name.clone(), addr, transport, reason };
            return Err(ExchangeError::Server(UpstreamError::Strict(Box::new(strict))));
        }
        if !probing {
            self.stats.downgrades.bump();
        }
        let r = self.exchange_do53(zone, addr, sname, stype, budget).await;
        record(Transport::Do53, &r);
        r
    }

    /// One query over DoT, DoQ or DoH to the plan's port for it, authenticated as the plan
    /// says.
    #[allow(clippy::too_many_arguments, reason = "one exchange's full context")]
    pub(super) async fn exchange_encrypted(
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
        let id = self.upstream.random_id();
        let rd = self.shared.zones.load().forwards(zone);
        let query = build_query(id, sname, stype, settings.query_edns(), rd).map_err(|_| {
            ExchangeError::Fatal(ResolveError::InvalidData(format!("cannot encode a query for {sname}")))
        })?;
        // Encrypted first for a signal lookup (a probe made before the query) gets half of
        // what a query waits for that signal: a server that drops port 853 must not hold
        // the lookup, and the queries waiting for it, for a whole E-timeout (such a
        // cut-short timeout blames nobody; the RFC 9539 probe beside a later query decides).
        let limit = match plan.source {
            PlanSource::EncryptedFirst => settings.dot_timeout.min(settings.signal_wait_for / 2),
            _ => settings.dot_timeout,
        };
        let timeout = limit.min(budget.deadline.saturating_duration_since(start));
        let wire = match (transport, &plan.doh) {
            (Transport::Doq, _) => Wire::Doq { auth },
            (Transport::Doh, Some(doh)) => Wire::Doh { auth, path: doh.path.clone() },
            (Transport::Doh, None) => {
                return Err(ExchangeError::Server(UpstreamError::BadResponse("DoH without a URI template")));
            }
            _ => Wire::Dot { auth },
        };
        let server = SocketAddr::new(addr, plan.port_of(transport));
        let bytes = match self.send(server, &query, wire, timeout).await {
            Ok(b) => b,
            // The client query's own budget cut the wait short: the server had less than its
            // due, so the timeout says nothing about it (and must not damp its address).
            Err(UpstreamError::Timeout) if timeout < settings.dot_timeout => {
                return Err(ExchangeError::Server(UpstreamError::Local(std::io::ErrorKind::TimedOut)));
            }
            Err(e) => return Err(ExchangeError::Server(e)),
        };
        let msg = check_reply(&bytes, id, sname, stype).map_err(ExchangeError::Server)?;
        match msg.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(msg),
            other => Err(ExchangeError::Server(UpstreamError::Rcode(u16::from(other) as u8))),
        }
    }

    /// Counts one upstream query against the outstanding limits: over the server's limit
    /// this server is skipped, over the zone's the step fails.
    #[allow(clippy::result_large_err, reason = "the same error type the async exchanges return, by value")]
    pub(super) fn reserve_exchange(
        &self,
        addr: IpAddr,
        zone: &Name,
    ) -> Result<super::OutstandingGuard<'_>, ExchangeError> {
        self.reserve(addr, zone).map_err(|l| match l {
            Limit::OutstandingPerServer => ExchangeError::Server(UpstreamError::Busy(Busy::OutstandingPerServer)),
            l => ExchangeError::Fatal(ResolveError::LimitExceeded(l)),
        })
    }

    /// One query to one server over UDP, retried over TCP when truncated; checks the reply
    /// against the question and updates the server's RTT state. EDNS as DNS Flag Day 2019
    /// left it: a FORMERR or NOTIMP without an OPT record from a server not known to speak
    /// EDNS, and not serving a zone that may be signed, gets one retry without EDNS; if that
    /// answers, the server is asked without EDNS from then on. A timeout never triggers it.
    pub(super) async fn exchange_do53(
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
        let info = self.shared.servers.get(addr);
        let rto = info.rto(settings.initial_rto).min(budget.deadline - start);
        // Without EDNS only for a server found lacking it lately, and never for a zone that
        // may be signed (its answers need DO): an address can serve both kinds.
        let lacks = matches!(info.edns, EdnsSupport::Lacks { until } if start < until) && !self.maybe_signed(zone);
        let mut edns = if lacks { QueryEdns::Off } else { settings.query_edns() };
        // A forward zone's servers recurse for us.
        let rd = self.shared.zones.load().forwards(zone);
        let fail = |e: UpstreamError| {
            // Local trouble (no descriptor, no route) says nothing about the server.
            if e.fault() == Fault::Upstream {
                self.shared.servers.update(addr, |s| s.fail(self.upstream.now(), rto));
            }
            if e == UpstreamError::Timeout {
                self.stats.upstream_timeouts.bump();
            }
            ExchangeError::Server(e)
        };
        let msg = loop {
            let (msg, rtt) =
                self.do53_attempt(addr, sname, stype, (edns, rd), rto, info, budget).await.map_err(fail)?;
            let rcode = msg.metadata.response_code;
            if edns != QueryEdns::Off
                && msg.edns.is_none()
                && matches!(rcode, ResponseCode::FormErr | ResponseCode::NotImp)
                && info.edns != EdnsSupport::Speaks
                && !self.maybe_signed(zone)
            {
                self.stats.edns_fallbacks.bump();
                edns = QueryEdns::Off;
                continue;
            }
            if matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain) {
                // Only a usable answer counts as a success for server selection.
                let shown = match (edns, msg.edns.is_some()) {
                    (QueryEdns::Off, _) if !lacks => {
                        Some(EdnsSupport::Lacks { until: self.upstream.now() + super::servers::EDNS_LACKS_FOR })
                    }
                    (QueryEdns::Off, _) => None,
                    (_, true) => Some(EdnsSupport::Speaks),
                    _ => None,
                };
                self.shared.servers.update(addr, |s| {
                    s.sample(rtt);
                    if let Some(e) = shown {
                        s.edns = e;
                    }
                });
                if edns == QueryEdns::Off && !lacks {
                    tracing::debug!(%addr, "server answers only without EDNS: remembered for a while");
                }
            }
            break msg;
        };
        match msg.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(msg),
            other => Err(fail(UpstreamError::Rcode(u16::from(other) as u8))),
        }
    }

    /// One Do53 query (UDP, then TCP when truncated or too large for our buffer, and once
    /// when a server that answered its last query with EDNS times out: large answers lost
    /// on the way, such as dropped fragments, come whole over TCP; the EDNS buffer is never
    /// lowered below our size). With `cookies.upstream`, the query carries adox's client
    /// cookie for the server and the server cookie it gave last (RFC 7873). The checked
    /// reply and the round trip of its last UDP attempt.
    #[allow(clippy::too_many_arguments, reason = "one attempt's full context")]
    async fn do53_attempt(
        &self,
        addr: IpAddr,
        sname: &Name,
        stype: RecordType,
        (edns, rd): (QueryEdns, bool),
        rto: std::time::Duration,
        info: crate::resolver::servers::ServerInfo,
        budget: &Budget,
    ) -> Result<(Message, std::time::Duration), UpstreamError> {
        let server = SocketAddr::new(addr, 53);
        // A datagram too large for our buffer counts as truncated: ask again over TCP.
        let alive = info.failures == 0 && info.edns == EdnsSupport::Speaks;
        // One more UDP query after a BADCOOKIE (with the server cookie it brought), then TCP.
        let mut badcookie_retry = true;
        let mut rto = rto;
        loop {
            let start = self.upstream.now();
            let id = self.upstream.random_id();
            let mut query = build_query(id, sname, stype, edns, rd)
                .map_err(|_| UpstreamError::BadResponse("query not encodable"))?;
            let cookie = self.add_cookie(&mut query, addr, edns);
            self.stats.upstream_udp.bump();
            let udp = self.send(server, &query, Wire::Udp, rto).await;
            let rtt = self.upstream.now().saturating_duration_since(start);
            // What the TCP query below is asked for: a reply discarded for its cookie
            // says nothing of the server's round trip (a forger chose it).
            let mut discarded = false;
            match udp {
                Ok(bytes) => {
                    let msg = check_reply(&bytes, id, sname, stype)?;
                    if let Some((sent, had)) = cookie
                        && !self.learn_cookie(addr, &msg, &sent, had)
                    {
                        // Discarded (RFC 7873 section 5.3): a forger cannot follow us to
                        // TCP, and a broken server still answers there.
                        discarded = true;
                    } else if msg.metadata.response_code == ResponseCode::BADCOOKIE {
                        self.stats.upstream_badcookies.bump();
                        if std::mem::take(&mut badcookie_retry) {
                            rto = rto.min(budget.deadline.saturating_duration_since(self.upstream.now()));
                            continue;
                        }
                        // BADCOOKIE again: TCP needs no cookie (RFC 7873 section 5.3).
                    } else if !msg.metadata.truncation {
                        return Ok((msg, rtt));
                    }
                }
                Err(UpstreamError::Oversized) => {}
                Err(UpstreamError::Timeout) if alive && edns != QueryEdns::Off => {
                    // The server's round trip is what TCP takes, not the timeout just spent.
                    self.stats.upstream_timeouts.bump();
                    discarded = true;
                }
                Err(e) => return Err(e),
            }
            // Truncated, too large, BADCOOKIE twice, a reply discarded for its cookie, or a
            // lost answer from a live server: the same query over TCP.
            let tcp_start = self.upstream.now();
            let (msg, rtt) = self.do53_tcp(server, &query, id, sname, stype, rto, budget, rtt).await?;
            if let Some((_, true)) = cookie
                && !has_cookie(&msg)
            {
                // Its answer over TCP has no cookie either: the server stopped giving them.
                self.shared.servers.update(addr, |s| s.cookie = Default::default());
            }
            let rtt = if discarded { self.upstream.now().saturating_duration_since(tcp_start) } else { rtt };
            return Ok((msg, rtt));
        }
    }

    /// One query to one server over `wire`, told to the dnstap collector
    /// ([`tapped_exchange`]).
    async fn send(
        &self,
        server: SocketAddr,
        query: &[u8],
        wire: Wire,
        timeout: std::time::Duration,
    ) -> Result<Vec<u8>, UpstreamError> {
        tapped_exchange(&self.upstream, &self.shared, &self.stats, server, query, wire, timeout).await
    }

    /// Puts adox's cookie for `addr` (and the server cookie it gave last) in a Do53
    /// query with EDNS, when `cookies.upstream` is on; the client cookie sent, and whether
    /// a server cookie went with it.
    fn add_cookie(&self, query: &mut Vec<u8>, addr: IpAddr, edns: QueryEdns) -> Option<([u8; 8], bool)> {
        if edns == QueryEdns::Off {
            return None;
        }
        let client = self.shared.admission.upstream_cookie(addr)?;
        let server = self.shared.servers.get(addr).cookie;
        crate::wire::append_option(query, &crate::admission::cookies::query_option(&client, &server))
            .then_some((client, !server.as_slice().is_empty()))
    }

    /// Checks a reply's COOKIE option against the client cookie sent and keeps the server
    /// cookie it brings; false for a reply to discard: one that does not echo ours, or has
    /// no cookie at all from a server that gave us one (`had`), or a BADCOOKIE without a
    /// cookie (off-path forgery, or a broken server).
    fn learn_cookie(&self, addr: IpAddr, msg: &Message, sent: &[u8; 8], had: bool) -> bool {
        use crate::admission::cookies::{ReplyCookie, reply_cookie};
        let verdict = match reply_cookie(cookie_option(msg), sent) {
            ReplyCookie::None if had || msg.metadata.response_code == ResponseCode::BADCOOKIE => ReplyCookie::Mismatch,
            v => v,
        };
        match verdict {
            ReplyCookie::None => true,
            ReplyCookie::Server(c) => {
                if self.shared.servers.get(addr).cookie != c {
                    self.shared.servers.update(addr, |s| s.cookie = c);
                }
                true
            }
            ReplyCookie::Mismatch => {
                self.stats.upstream_cookie_mismatches.bump();
                crate::rate_limited!(info, %addr, "a Do53 reply without our DNS cookie: discarded, asking over TCP");
                false
            }
        }
    }

    /// The same query over TCP (RFC 7766), given more time for its handshake.
    #[allow(clippy::too_many_arguments, reason = "one attempt's full context")]
    async fn do53_tcp(
        &self,
        server: SocketAddr,
        query: &[u8],
        id: u16,
        sname: &Name,
        stype: RecordType,
        rto: std::time::Duration,
        budget: &Budget,
        rtt: std::time::Duration,
    ) -> Result<(Message, std::time::Duration), UpstreamError> {
        self.stats.upstream_tcp.bump();
        let now = self.upstream.now();
        let timeout =
            (rto * 3).max(self.shared.settings.initial_rto).min(budget.deadline.saturating_duration_since(now));
        let bytes = self.send(server, query, Wire::Tcp, timeout).await?;
        Ok((check_reply(&bytes, id, sname, stype)?, rtt))
    }

    /// The transport plan for one (zone, nameserver name, address), from the operator's
    /// override, the nameserver's signal and the probe table (`upstream::plan`). A signal
    /// the plan could use but nobody has looked up yet is queued for the worker, which
    /// looks it up as its own task: this query does not wait for it.
    pub(crate) fn plan(&self, zone: &Name, ns_name: &Name, addr: IpAddr) -> TransportPlan {
        self.plan_and_wish(zone, ns_name, addr, None).0
    }

    /// [`Self::plan`], and whether this is a first contact: the plan could depend on a
    /// signal never learnt (no signal, even an expired one, only perhaps a lookup under
    /// way; an operator override that needs no signal decides alone). A signal past its
    /// TTL is refreshed beside the queries, never waited for.
    /// `walk_rule`: the DELEG rule the walk followed into `zone` (the cache's otherwise).
    pub(super) fn plan_and_wish(
        &self,
        zone: &Name,
        ns_name: &Name,
        addr: IpAddr,
        walk_rule: Option<&crate::upstream::deleg::DelegRule>,
    ) -> (TransportPlan, bool) {
        use crate::upstream::signal::Signal;
        let now = self.upstream.unix_now();
        let settings = &self.shared.settings;
        let policies = self.shared.policies.load();
        let switches = Switches { signals: settings.signals, probing: settings.probing };
        let policy = policies.lookup(zone, ns_name, addr).map(|p| &**p);
        let probes = PROBED.map(|t| self.shared.probes.decide(addr, t, now));
        let cached = if walk_rule.is_none() { self.deleg_rule(zone) } else { None };
        let deleg = walk_rule.or(cached.as_ref()).and_then(|r| match r.for_server(ns_name, addr) {
            Some((info, by_name)) => Some(plan::DelegFor::Server {
                info,
                secure: r.secure,
                tls_name: if by_name { None } else { info.names.first() },
            }),
            None if r.secure && r.asks_encryption() => Some(plan::DelegFor::Uncovered),
            None => None,
        });
        let mut live = if settings.signals { self.shared.signals.get(ns_name, now) } else { None };
        if settings.signals && live.is_none() {
            // Unknown or expired: looked up (by the worker, as its own task) when a signal
            // could change the plan (an override that needs none decides alone) or when a
            // strict one must be refreshed, which decides meanwhile until its signatures
            // expire (R5: `SignalCache::begin`).
            let strict = self.shared.signals.last(ns_name).is_some_and(|s| s.strict_at(now));
            let wanted = strict || plan::plan(PlanInputs { policy, signal: None, probes, switches, deleg }).want_signal;
            if wanted && self.shared.signals.begin(ns_name, now) {
                self.wanted_signals.borrow_mut().push(ns_name.clone());
            }
            live = self.shared.signals.get(ns_name, now);
        }
        let planned = plan::plan(PlanInputs { policy, signal: live.as_ref(), probes, switches, deleg });
        // A first contact: nothing known but a lookup under way that is no refresh (none
        // at all when the plan does not want one).
        let unknown = matches!(live, Some(Signal::Pending { refresh: false, .. }))
            && plan::plan(PlanInputs { policy, signal: None, probes, switches, deleg }).want_signal;
        (planned.plan, unknown)
    }
}

/// The DE (DELEG-aware) bit of the EDNS flags (draft-ietf-deleg), below DO.
pub(crate) const EDNS_DE: u16 = 0x2000;

/// The EDNS(0) of an upstream query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueryEdns {
    /// No OPT record (a server that lacks EDNS, DNS Flag Day 2019).
    Off,
    /// Our buffer size, DO set; with `deleg`, DE set too.
    On {
        /// Advertised UDP payload size.
        udp_size: u16,
        /// The DE bit (experimental DELEG).
        deleg: bool,
    },
}

/// A query: RD clear (iterative) unless `rd` (to a forward zone's servers) and, unless `edns` is off, EDNS(0) with our buffer size and
/// DO set (so RRSIGs are there for clients that ask and for validation); with DELEG on, DE
/// set too (the parent then puts DELEG records in its referrals).
pub(crate) fn build_query(
    id: u16,
    name: &Name,
    rtype: RecordType,
    edns: QueryEdns,
    rd: bool,
) -> Result<Vec<u8>, UpstreamError> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = rd;
    let mut q = Query::query(name.clone(), rtype);
    q.set_query_class(DNSClass::IN);
    m.add_query(q);
    if let QueryEdns::On { udp_size, deleg } = edns {
        let mut opt = Edns::new();
        opt.set_max_payload(udp_size);
        opt.set_dnssec_ok(true);
        if deleg {
            opt.flags_mut().z |= EDNS_DE;
        }
        m.set_edns(opt);
    }
    m.to_vec().map_err(|_| UpstreamError::BadResponse("query not encodable"))
}

/// One query to one server over `wire` (`Upstream::exchange`), told to the dnstap
/// collector as a RESOLVER_QUERY and, when answered, a RESOLVER_RESPONSE, each with the
/// transport it took. Every upstream query goes through here (RFC 9539 probes included).
pub(super) async fn tapped_exchange<U: Upstream>(
    upstream: &U,
    shared: &super::Shared,
    stats: &crate::stats::WorkerStats,
    server: SocketAddr,
    query: &[u8],
    wire: Wire,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, UpstreamError> {
    use crate::dnstap::{Event, Kind, Offered, Protocol};
    let Some(tap) = shared.dnstap.as_deref() else {
        return upstream.exchange(server, query, wire, timeout).await;
    };
    let count = |o: Offered| match o {
        Offered::Queued => stats.dnstap_queued.bump(),
        Offered::Dropped => stats.dnstap_dropped.bump(),
        Offered::Off => {}
    };
    let protocol = match wire {
        Wire::Udp => Protocol::Udp,
        Wire::Tcp => Protocol::Tcp,
        Wire::Dot { .. } => Protocol::Dot,
        Wire::Doq { .. } => Protocol::Doq,
        Wire::Doh { .. } => Protocol::Doh,
    };
    // The wall clock, for the collector's timestamps only (nothing here decides by it).
    let sent = std::time::SystemTime::now();
    let mut event = Event {
        kind: Kind::ResolverQuery,
        protocol,
        query_addr: None,
        response_addr: Some(server),
        query_time: Some(sent),
        response_time: None,
        query: Some(query),
        response: None,
    };
    count(tap.offer(&event));
    let reply = upstream.exchange(server, query, wire, timeout).await;
    if let Ok(bytes) = &reply
        && tap.wants(Kind::ResolverResponse)
    {
        event.kind = Kind::ResolverResponse;
        event.response_time = Some(std::time::SystemTime::now());
        event.response = Some(bytes);
        count(tap.offer(&event));
    }
    reply
}

/// The data of a message's COOKIE option, if it has one.
fn cookie_option(msg: &Message) -> Option<&[u8]> {
    msg.edns.as_ref().and_then(|e| {
        e.options().options.iter().find_map(|(_, o)| match o {
            hickory_proto::rr::rdata::opt::EdnsOption::Unknown(10, data) => Some(data.as_slice()),
            _ => None,
        })
    })
}

fn has_cookie(msg: &Message) -> bool {
    cookie_option(msg).is_some()
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
    pub(super) fn query_has_no_rd_and_edns_do() {
        let on = |deleg| QueryEdns::On { udp_size: 1232, deleg };
        let q = build_query(7, &"www.lab.".parse().unwrap(), RecordType::A, on(false), false).unwrap();
        let m = Message::from_vec(&q).unwrap();
        assert!(!m.metadata.recursion_desired);
        let e = m.edns.unwrap();
        assert_eq!(e.max_payload(), 1232);
        assert!(e.flags().dnssec_ok);
        assert_eq!(e.flags().z & EDNS_DE, 0, "DE only with transport.deleg");
        let q = build_query(7, &"www.lab.".parse().unwrap(), RecordType::A, on(true), false).unwrap();
        // The flags field of the OPT record: its last 4 bytes before RDLENGTH 0 are the TTL.
        let flags = u16::from_be_bytes([q[q.len() - 4], q[q.len() - 3]]);
        assert_eq!(flags, 0x8000 | EDNS_DE, "DO and DE on the wire");
        let q = build_query(7, &"www.lab.".parse().unwrap(), RecordType::A, QueryEdns::Off, false).unwrap();
        assert!(Message::from_vec(&q).unwrap().edns.is_none(), "no OPT for a server without EDNS");
    }

    #[test]
    pub(super) fn reply_checks() {
        let name: Name = "www.lab.".parse().unwrap();
        let q = build_query(7, &name, RecordType::A, QueryEdns::On { udp_size: 1232, deleg: false }, false).unwrap();
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
