//! One data-plane worker: a pinned thread with its own `mio::Poll`, its own SO_REUSEPORT
//! UDP socket and TCP listener per listen address, its packet cache, its in-flight
//! resolutions (tasks on its executor) and its upstream sockets. Nothing on the path from
//! a client packet in to a cached answer out takes a lock another worker holds.

mod clients;
mod dispatch;
mod doh;
mod doq;
mod dot;
mod failures;
mod front;
pub(crate) mod handoff;
mod mailbox;
mod outgoing;
mod policy;
pub(crate) use outgoing::Outgoing;
pub(crate) use tcp::{MAX_RBUF, take_messages};
mod reactor;
mod stale;
mod tcp;
#[cfg(feature = "xdp")]
mod xdp;

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token};

use crate::admission::{Over, cookies, cookies::Verdict as CookieVerdict};
use crate::cache::packet::{Lookup, PacketCache};
use crate::config::RateAction;
use crate::dnstap::Kind;
use crate::resolver::{Limit, ResolveError, Resolver, Shared};
use crate::respond::{self, Question};
use crate::stats::WorkerStats;
use crate::wire::{self, rcode};
use dispatch::WorkerUpstream;
use front::Verdict;
use mailbox::Mailbox;
pub(crate) use mailbox::{ExplainJob, ListenerChange, LiveSettings, WorkerHandle};
use reactor::{Executor, IO_TOKEN_BASE, Reactor};
use tcp::TcpClients;

/// Token of the cross-thread waker that asks the worker to stop.
const STOP_TOKEN: Token = Token(usize::MAX - 1);
/// Token of the worker's AF_XDP socket (`[xdp]`).
const XDP_TOKEN: usize = usize::MAX - 2;
/// First token of client TCP connections; listeners use 0..2*listeners.
const CONN_TOKEN_BASE: usize = 1 << 30;
/// Tokens of TCP listeners (slot + this); UDP sockets have their slot as token, below it.
const LISTENER_TOKEN_BASE: usize = 1 << 20;
/// How soon a listener that ran out of descriptors is tried again.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// How often idle TCP connections are swept.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// How much longer than the longest client query (`resolver.request_timeout_ms`) a
/// worker handing over to a new process waits for its clients' answers.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Per-worker settings that are not the resolver's.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSettings {
    /// Worker index (also the core it is pinned to, modulo cores).
    pub index: usize,
    /// Our EDNS UDP size.
    pub edns_udp_size: u16,
    /// Datagrams read per socket per wake-up.
    pub udp_batch: usize,
    /// No idle time for this long means overload: new misses over UDP are shed.
    pub overload_after: Duration,
    /// Packet cache size in bytes.
    pub packet_cache_bytes: usize,
    /// Prefetch refreshes started per second at most (0: no prefetch).
    pub prefetch_per_s: u32,
    /// Client resolutions in flight at most.
    pub max_resolutions: u32,
    /// Each client's share of them.
    pub limits: crate::config::LimitsConfig,
    /// TCP connection cap.
    pub tcp_max_connections: usize,
    /// Queries in flight per TCP connection.
    pub tcp_max_pipelined: usize,
    /// Idle TCP timeout.
    pub tcp_idle_timeout: Duration,
    /// TCP connections from one client address at most.
    pub tcp_max_connections_per_client: usize,
    /// Time a client has to finish a message it started.
    pub tcp_message_timeout: Duration,
    /// DoT, DoQ and DoH client configurations (each with its shared session stores).
    pub tls: crate::daemon::UpstreamTls,
    /// How DoH queries are sent.
    pub doh_method: crate::upstream::doh::DohMethod,
    /// An encrypted connection whose handshake has not completed by this is dropped.
    pub dot_timeout: Duration,
    /// Idle DoT connections are closed after this.
    pub dot_idle_timeout: Duration,
    /// Source addresses of upstream sockets.
    pub outgoing: Outgoing,
    /// Queries in flight per DoT connection.
    pub dot_max_outstanding: usize,
    /// Encrypted upstream connections kept open at most, per transport.
    pub upstream_max_connections: usize,
    /// Which worker owns the connections to which server, and every worker's inbox.
    pub router: Arc<handoff::Router>,
    /// This worker's inbox: encrypted queries other workers hand to it.
    pub inbox: crossbeam_channel::Receiver<handoff::Job>,
}

/// Where the answer to a client query goes.
#[derive(Debug, Clone, Copy)]
enum ReplyTo {
    Udp { listener: usize, peer: SocketAddr },
    Tcp { conn: usize },
}

/// What became of a client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    /// The response is in the output buffer: send it now.
    Reply,
    /// A resolution task will answer later.
    Spawned,
    /// Not answered at all.
    Dropped,
}

/// A client query waiting for a resolution.
struct Waiter {
    /// The client (its address holds a share of the resolutions).
    peer: SocketAddr,
    msg: Vec<u8>,
    q: wire::Query,
    /// The question as the client wrote it (its case is echoed).
    question: Question,
    reply_to: ReplyTo,
    /// When the query arrived (the poll turn's clock).
    start: Instant,
}

/// State shared by the worker loop and its tasks (single thread, so `Rc` and `RefCell`).
struct WorkerCtx {
    reactor: Rc<Reactor>,
    executor: Rc<Executor>,
    dot: Rc<dot::DotDriver>,
    doq: Rc<doq::DoqDriver>,
    doh: Rc<doh::DohDriver>,
    resolver: Resolver<WorkerUpstream>,
    packet_cache: RefCell<PacketCache>,
    /// Backoff of failures kept in the packet cache (RFC 9520 section 3.2).
    failure_strikes: RefCell<failures::FailureStrikes>,
    stats: Arc<WorkerStats>,
    settings: WorkerSettings,
    /// The listening UDP sockets by slot (the slot is the poll token and what a reply
    /// names); a slot whose address a reload removed stays until its replies are sent.
    udp: RefCell<Vec<Option<UdpSocket>>>,
    clients: RefCell<TcpClients>,
    resolutions: Cell<u32>,
    /// Resolutions in flight per client address and network.
    client_load: RefCell<clients::ClientLoad>,
    /// Questions being resolved, with the client queries waiting for each.
    inflight: RefCell<std::collections::HashMap<(hickory_proto::rr::Name, hickory_proto::rr::RecordType), Vec<Waiter>>>,
    /// Serve-stale's failure-recheck timers: questions whose resolution failed and was
    /// answered stale, answered stale without a new attempt until then (RFC 8767).
    stale_recheck: RefCell<stale::Recheck>,
    /// Prefetch refreshes started in the current second: (worker-clock second, count).
    prefetch_budget: Cell<(u32, u32)>,
    /// Set while reading UDP in overload: new cache misses are dropped.
    shedding: Cell<bool>,
    /// The load meter's verdict at the last read (kept between reads, unlike `shedding`):
    /// failures that end meanwhile are not kept in the packet cache.
    overloaded: Cell<bool>,
    /// Queries over a rate so far, for `limits.slip`.
    slip: Cell<u32>,
    epoch: Instant,
}

impl WorkerCtx {
    fn now_s(&self) -> u32 {
        u32::try_from(self.reactor.now().duration_since(self.epoch).as_secs()).unwrap_or(u32::MAX)
    }

    fn shared(&self) -> &Shared {
        self.resolver.shared()
    }

    /// Handles one client message: answers it into `out`, spawns its resolution, or drops it.
    fn handle(self: &Rc<Self>, msg: &[u8], peer: SocketAddr, reply_to: ReplyTo, out: &mut Vec<u8>) -> Handled {
        let udp_size = self.settings.edns_udp_size;
        let allowed = self.shared().access.load().client_allowed(peer.ip());
        let q = match front::classify(msg, allowed, udp_size) {
            Verdict::Query(q) => q,
            Verdict::Drop => {
                self.stats.dropped.bump();
                return Handled::Dropped;
            }
            Verdict::Reject(r) => {
                if r.refused_acl {
                    self.stats.refused_acl.bump();
                }
                self.tap_client(Kind::ClientQuery, reply_to, peer, msg, None, self.reactor.now());
                // Refusals cost the address and network rates too (no cookie proves a
                // sender here), past which they are not sent: no free reflection.
                if let ReplyTo::Udp { .. } = reply_to
                    && let Some(rates) = self.shared().admission.rates().as_ref()
                    && let Err(over) = rates.check_addr(peer.ip(), self.reactor.now())
                {
                    self.count_over(over);
                    self.stats.rate_limit_dropped.bump();
                    return Handled::Dropped;
                }
                wire::header_only_response(out, msg, r.question_end, r.rcode, 0, r.edns.as_ref());
                self.tap_client(Kind::ClientResponse, reply_to, peer, msg, Some(out), self.reactor.now());
                return Handled::Reply;
            }
        };
        self.tap_client(Kind::ClientQuery, reply_to, peer, msg, None, self.reactor.now());
        let cookie = self.client_cookie(msg, &q, peer.ip());
        if let Some((verdict, _)) = &cookie {
            match verdict {
                CookieVerdict::ClientOnly => self.stats.cookies_client_only.bump(),
                CookieVerdict::Valid { .. } => self.stats.cookies_valid.bump(),
                CookieVerdict::Invalid => self.stats.cookies_invalid.bump(),
            }
        }
        let proven =
            matches!(reply_to, ReplyTo::Tcp { .. }) || matches!(cookie, Some((CookieVerdict::Valid { .. }, _)));
        let handled = match self.over_rate(msg, &q, peer.ip(), proven, out) {
            Some(h) => h,
            None => self.handle_query(msg, &q, peer, reply_to, out, cookie.is_some()),
        };
        if handled == Handled::Reply {
            self.finish(out, msg, &q, reply_to, cookie.as_ref().map(|(_, o)| o));
            self.tap_client(Kind::ClientResponse, reply_to, peer, msg, Some(out), self.reactor.now());
        }
        handled
    }

    /// Tells the dnstap collector of a client query (`response` `None`) or of the answer
    /// to it, when dnstap is on and wants that type. `asked`: when the query arrived.
    fn tap_client(
        &self,
        kind: Kind,
        reply_to: ReplyTo,
        peer: SocketAddr,
        query: &[u8],
        response: Option<&[u8]>,
        asked: Instant,
    ) {
        let Some(tap) = self.shared().dnstap.as_deref() else { return };
        if !tap.wants(kind) {
            return;
        }
        let now = std::time::SystemTime::now();
        let query_time = now.checked_sub(self.reactor.now().saturating_duration_since(asked)).unwrap_or(now);
        let event = crate::dnstap::Event {
            kind,
            protocol: match reply_to {
                ReplyTo::Udp { .. } => crate::dnstap::Protocol::Udp,
                ReplyTo::Tcp { .. } => crate::dnstap::Protocol::Tcp,
            },
            query_addr: Some(peer),
            response_addr: None,
            query_time: Some(query_time),
            response_time: response.map(|_| now),
            query: response.is_none().then_some(query),
            response,
        };
        match tap.offer(&event) {
            crate::dnstap::Offered::Queued => self.stats.dnstap_queued.bump(),
            crate::dnstap::Offered::Dropped => self.stats.dnstap_dropped.bump(),
            crate::dnstap::Offered::Off => {}
        }
    }

    /// The client's COOKIE option judged (when cookies are on and it sent one), with the
    /// option to answer with.
    fn client_cookie(
        &self,
        msg: &[u8],
        q: &wire::Query,
        client: std::net::IpAddr,
    ) -> Option<(CookieVerdict, [u8; cookies::OPTION_LEN])> {
        let (at, len) = q.edns?.cookie?;
        let jar = self.shared().admission.cookies();
        let option = msg.get(usize::from(at)..usize::from(at) + usize::from(len))?;
        jar.as_ref()?.secrets.check(option, client, crate::clock::unix_now() as u32)
    }

    /// A UDP query from a client whose address nothing proves (TCP and a valid server
    /// cookie do), over one of `[limits]`' rates: what it gets instead of an answer.
    fn over_rate(
        &self,
        msg: &[u8],
        q: &wire::Query,
        client: std::net::IpAddr,
        proven: bool,
        out: &mut Vec<u8>,
    ) -> Option<Handled> {
        if proven {
            return None;
        }
        let rates = self.shared().admission.rates();
        let rates = rates.as_ref()?;
        let over = rates.check(client, &msg[q.qname.clone()], q.qtype, self.reactor.now()).err()?;
        self.count_over(over);
        let edns = |ede| {
            q.edns.map(|c| wire::ResponseEdns {
                udp_size: self.settings.edns_udp_size,
                dnssec_ok: c.dnssec_ok,
                rcode_high: 0,
                ede,
            })
        };
        match rates.action {
            RateAction::Slip(every) => {
                let n = self.slip.get().wrapping_add(1);
                self.slip.set(n);
                if !n.is_multiple_of(every) {
                    self.stats.rate_limit_dropped.bump();
                    return Some(Handled::Dropped);
                }
                // Empty and truncated: the size of the query (its question, our OPT and
                // the client's cookie if it sent one), and a real client asks again over
                // TCP, which no rate limits.
                self.stats.rate_limit_slipped.bump();
                wire::header_only_response(
                    out,
                    msg,
                    q.question_end,
                    rcode::NOERROR,
                    wire::flag::TC,
                    edns(None).as_ref(),
                );
                Some(Handled::Reply)
            }
            RateAction::Drop => {
                self.stats.rate_limit_dropped.bump();
                Some(Handled::Dropped)
            }
            RateAction::Refused => {
                self.stats.rate_limit_refused.bump();
                let e = edns(Some((crate::ede::Ede::Prohibited, "query rate limit")));
                wire::header_only_response(out, msg, q.question_end, rcode::REFUSED, 0, e.as_ref());
                Some(Handled::Reply)
            }
        }
    }

    fn count_over(&self, over: Over) {
        match over {
            Over::Client => self.stats.rate_limited_client.bump(),
            Over::Prefix => self.stats.rate_limited_prefix.bump(),
            Over::Response => self.stats.rate_limited_response.bump(),
        }
    }

    /// Last touches to a response about to leave: over UDP it is cut to the client's size
    /// (leaving room for the cookie), then the client's cookie option goes in.
    fn finish(
        &self,
        out: &mut Vec<u8>,
        msg: &[u8],
        q: &wire::Query,
        reply_to: ReplyTo,
        cookie: Option<&[u8; cookies::OPTION_LEN]>,
    ) {
        let room = if cookie.is_some() { cookies::OPTION_LEN } else { 0 };
        if let ReplyTo::Udp { .. } = reply_to {
            let udp_size = self.settings.edns_udp_size;
            if respond::fit_udp(out, msg, q, q.udp_limit(udp_size) - room, udp_size) {
                self.stats.truncated.bump();
            }
        }
        if let Some(option) = cookie {
            wire::append_option(out, option);
        }
    }

    /// A query let in: answered from the packet cache, locally, or by a resolution.
    /// `cookie`: room for a cookie option must be left in a UDP answer.
    fn handle_query(
        self: &Rc<Self>,
        msg: &[u8],
        q: &wire::Query,
        peer: SocketAddr,
        reply_to: ReplyTo,
        out: &mut Vec<u8>,
        cookie: bool,
    ) -> Handled {
        let q = q.clone();
        let udp_size = self.settings.edns_udp_size;
        let room = if cookie { cookies::OPTION_LEN } else { 0 };
        let limit = match reply_to {
            ReplyTo::Udp { .. } => Some(q.udp_limit(udp_size) - room),
            ReplyTo::Tcp { .. } => None,
        };
        if let Some(rpz) = self.shared().rpz.as_deref()
            && let Some(handled) = self.query_policy(rpz, msg, &q, peer, reply_to, out)
        {
            return handled;
        }
        let lookup = self.packet_cache.borrow_mut().lookup(&q, msg, self.now_s(), limit, udp_size, out);
        match lookup {
            Lookup::Hit | Lookup::HitTruncated => {
                self.stats.cache_hits.bump();
                if lookup == Lookup::HitTruncated {
                    self.stats.truncated.bump();
                }
                if self.packet_cache.borrow_mut().take_due() {
                    self.prefetch(msg, &q, peer.ip());
                }
                return Handled::Reply;
            }
            Lookup::Miss => self.stats.cache_misses.bump(),
        }
        let Some(question) = Question::parse(msg, &q) else {
            wire::header_only_response(out, msg, wire::HEADER_LEN, rcode::FORMERR, 0, None);
            return Handled::Reply;
        };
        if !q.rd() {
            // A non-recursive query is answered from the cache only: it must not make the
            // resolver go out (nor fetch names to probe other clients' traffic with).
            match poll_once(self.resolver.resolve_from_cache(&question.name, question.qtype)) {
                Some(Err(ResolveError::NotInCache)) | None => {
                    let edns = q.edns.map(|c| wire::ResponseEdns {
                        udp_size,
                        dnssec_ok: c.dnssec_ok,
                        rcode_high: 0,
                        ede: Some((crate::ede::Ede::NotAuthoritative, "recursion not desired and not in the cache")),
                    });
                    wire::header_only_response(out, msg, q.question_end, rcode::REFUSED, 0, edns.as_ref());
                }
                Some(result) => {
                    let udp = matches!(reply_to, ReplyTo::Udp { .. });
                    if self.respond(out, msg, &q, &question, &result, udp).is_none() {
                        return Handled::Dropped;
                    }
                }
            }
            return Handled::Reply;
        }
        let (name, qtype) = (question.name.clone(), question.qtype);
        let key = (crate::names::canonical(&name), qtype);
        // Failed lately and answered stale: stale again, without a new attempt, until the
        // failure-recheck timer runs out (RFC 8767 section 5).
        if self.stale_recheck.borrow_mut().pending(&key, self.reactor.now())
            && let Some(answer) = self.stale_answer(&name, qtype, 1)
        {
            let udp = matches!(reply_to, ReplyTo::Udp { .. });
            if self.respond(out, msg, &q, &question, &Ok(answer), udp).is_none() {
                return Handled::Dropped;
            }
            return Handled::Reply;
        }
        // Past capacity, a miss that would start a resolution is dropped at once (as Unbound
        // and PowerDNS drop past theirs): its client retries, the queue drains, and the work
        // already taken in finishes in time. Joining a resolution under way costs nothing.
        // (Before any share is taken: a dropped query holds nothing.)
        if self.shedding.get() && !self.inflight.borrow().contains_key(&key) {
            self.stats.overload_shed.bump();
            return Handled::Dropped;
        }
        if let Err(limit) = self.take_resolution(peer.ip()) {
            respond::build(out, msg, &q, &question, &Err(ResolveError::LimitExceeded(limit)), udp_size);
            return Handled::Reply;
        }
        let waiter = Waiter { peer, msg: msg.to_vec(), q, question, reply_to, start: self.reactor.now() };
        // Identical questions already being resolved on this worker wait for that result
        // instead of sending their own upstream queries.
        if let Some(waiters) = self.inflight.borrow_mut().get_mut(&key) {
            waiters.push(waiter);
            self.stats.coalesced.bump();
            return Handled::Spawned;
        }
        self.inflight.borrow_mut().insert(key.clone(), vec![waiter]);
        let ctx = Rc::clone(self);
        self.executor.spawn(async move {
            let (result, failure_is_the_names) = ctx.resolve_or_stale(&key, &name, qtype, false).await;
            match &result {
                Err(e) => tracing::debug!(%name, ?qtype, error = %e, "resolution failed"),
                Ok(a) => match &a.security {
                    crate::dnssec::Security::Secure => ctx.stats.dnssec_secure.bump(),
                    crate::dnssec::Security::Bogus(b) => {
                        ctx.stats.dnssec_bogus.bump();
                        crate::rate_limited!(info, %name, ?qtype, ede = b.ede.code(), reason = %b.text, "DNSSEC bogus");
                    }
                    _ => ctx.stats.dnssec_insecure.bump(),
                },
            }
            let waiters = ctx.inflight.borrow_mut().remove(&key).unwrap_or_default();
            ctx.answer(waiters, &result, failure_is_the_names);
        });
        Handled::Spawned
    }

    /// Takes a turn of the worker's capacity for a resolution, then the client's and its
    /// network's share of it: one customer flooding misses cannot take the others' turns.
    /// Shares bind once half the worker's capacity is in use.
    fn take_resolution(&self, client: std::net::IpAddr) -> Result<(), Limit> {
        let contended = self.resolutions.get() >= self.settings.max_resolutions / 2;
        let share = if self.resolutions.get() >= self.settings.max_resolutions {
            Err(Limit::Resolutions)
        } else {
            self.client_load.borrow_mut().take(client, contended)
        };
        match share {
            Ok(()) => {
                self.resolutions.set(self.resolutions.get() + 1);
                Ok(())
            }
            Err(limit) => {
                if limit != Limit::Resolutions {
                    self.stats.client_share_exceeded.bump();
                }
                Err(limit)
            }
        }
    }

    /// Prefetch: refreshes the answer to `msg` (a hit in the last tenth of its TTL) in the
    /// background and stores the new answer, within `cache.prefetch_max_per_s` and never
    /// under load (overload shedding, or half the worker's resolutions in use). It is
    /// charged like the asking client's own resolution (a slot and the client's share), so
    /// a client cannot run more through prefetches than its share. Clients asking meanwhile
    /// join the refresh once their cached answer has expired, with serve-stale's timers.
    fn prefetch(self: &Rc<Self>, msg: &[u8], q: &wire::Query, client: std::net::IpAddr) {
        let now_s = self.now_s();
        let (second, started) = self.prefetch_budget.get();
        let started = if second == now_s { started } else { 0 };
        if started >= self.settings.prefetch_per_s
            || self.shedding.get()
            || self.resolutions.get() >= self.settings.max_resolutions / 2
        {
            return;
        }
        let Some(question) = Question::parse(msg, q) else { return };
        let key = (crate::names::canonical(&question.name), question.qtype);
        if self.inflight.borrow().contains_key(&key) || self.client_load.borrow_mut().take(client, true).is_err() {
            return;
        }
        self.resolutions.set(self.resolutions.get() + 1);
        self.prefetch_budget.set((now_s, started + 1));
        self.stats.prefetches.bump();
        self.inflight.borrow_mut().insert(key.clone(), Vec::new());
        let (msg, q) = (msg.to_vec(), q.clone());
        let ctx = Rc::clone(self);
        self.executor.spawn(async move {
            let (result, _) = ctx.resolve_or_stale(&key, &question.name, question.qtype, true).await;
            if let Err(e) = &result {
                tracing::debug!(name = %question.name, qtype = ?question.qtype, error = %e, "prefetch failed");
            }
            let mut out = Vec::new();
            if let Some(ttl) = ctx.respond(&mut out, &msg, &q, &question, &result, true) {
                ctx.packet_cache.borrow_mut().store(&q, &msg, &out, ctx.now_s(), ttl);
            }
            // A refresh's failure is never kept: the clients that joined it may have a
            // live answer in the record cache that the refresh did not read.
            let waiters = ctx.inflight.borrow_mut().remove(&key).unwrap_or_default();
            ctx.answer(waiters, &result, false);
            ctx.resolutions.set(ctx.resolutions.get() - 1);
            ctx.client_load.borrow_mut().release(client);
        });
    }

    /// RFC 5011 active refresh (section 2.3), on the first worker: fetches the keys of an
    /// anchored zone whose refresh time has come, from its servers (not the cache), and
    /// hands the answer to the managed anchors, which check it against the keys they trust.
    fn refresh_trust_anchors(self: &Rc<Self>) {
        let Some(managed) = &self.shared().managed else { return };
        if self.settings.index != 0 {
            return;
        }
        let Some(zone) = managed.due(crate::clock::unix_now()) else { return };
        use crate::dnssec::managed::KeyState;
        let (ctx, managed) = (Rc::clone(self), managed.clone());
        self.executor.spawn(async move {
            let result = ctx.resolver.refresh(&zone, hickory_proto::rr::RecordType::DNSKEY).await;
            let records = match &result {
                Ok(a) => Some(a.answers.as_slice()),
                Err(e) => {
                    crate::rate_limited!(warn, zone = %zone, error = %e, "trust anchor refresh (RFC 5011) failed");
                    None
                }
            };
            let observed = managed.observe(&zone, records, crate::clock::unix_now());
            for (tag, state) in &observed.changes {
                match state {
                    Some(s @ (KeyState::AddPend | KeyState::Valid)) => {
                        tracing::info!(zone = %zone, key_tag = tag, state = s.as_str(), "trust anchor key (RFC 5011)");
                    }
                    Some(s) => {
                        tracing::warn!(zone = %zone, key_tag = tag, state = s.as_str(), "trust anchor key (RFC 5011)");
                    }
                    None => tracing::info!(zone = %zone, key_tag = tag, "trust anchor key forgotten (RFC 5011)"),
                }
            }
            if records.is_some() && !observed.validated {
                crate::rate_limited!(warn, zone = %zone, "trust anchor refresh (RFC 5011): no trusted key signs the DNSKEY RRset");
            }
        });
    }

    /// Answers the client queries that waited for `result`, releasing their shares.
    /// `keep_failure`: a failure may be kept in the packet cache (see [`Self::keep_failure`]).
    fn answer(&self, waiters: Vec<Waiter>, result: &Result<crate::resolver::Answer, ResolveError>, keep_failure: bool) {
        for w in waiters {
            self.resolutions.set(self.resolutions.get() - 1);
            self.client_load.borrow_mut().release(w.peer.ip());
            self.reply(w, result, keep_failure);
        }
    }

    /// Answers one waiting client query (its share is the caller's business).
    fn reply(&self, w: Waiter, result: &Result<crate::resolver::Answer, ResolveError>, keep_failure: bool) {
        let mut out = Vec::new();
        let udp = matches!(w.reply_to, ReplyTo::Udp { .. });
        let Some(ttl) = self.respond(&mut out, &w.msg, &w.q, &w.question, result, udp) else {
            // DROP: no answer; a TCP connection's query no longer holds it.
            self.stats.observe_latency(self.reactor.now().saturating_duration_since(w.start));
            if let ReplyTo::Tcp { conn } = w.reply_to {
                self.clients.borrow_mut().abandon(conn);
            }
            return;
        };
        // Stored without the client's cookie: each asker gets its own.
        self.packet_cache.borrow_mut().store(&w.q, &w.msg, &out, self.now_s(), ttl);
        match result {
            Err(e) if keep_failure => self.keep_failure(&w, &out, e),
            Err(_) => {}
            // A stale answer says nothing of the name's servers: its backoff goes on.
            Ok(a) if a.stale => {}
            Ok(_) => self.failure_strikes.borrow_mut().forget((&w.msg[w.q.qname.clone()], w.q.qtype)),
        }
        self.deliver(w, out);
    }

    /// Keeps a failed resolution's SERVFAIL in the packet cache for `cache.failure_ttl_s`
    /// when the failure is the name's own (RFC 9520 section 3), with EDE 13 (Cached Error)
    /// after its own code: repeats of the name are cache hits until it runs out. A failure
    /// that repeats is kept longer each time, up to `cache.failure_max_ttl_s`
    /// ([`failures`]). Never
    /// while the worker is overloaded or has half its resolutions in use (a failure then
    /// may be ours), nor for a resolution whose way met a fault of ours (the caller's
    /// `keep_failure`), nor for a refresh.
    fn keep_failure(&self, w: &Waiter, response: &[u8], e: &ResolveError) {
        let settings = &self.resolver.shared().settings;
        let ttl = settings.failure_ttl;
        let loaded = self.overloaded.get() || self.resolutions.get() >= self.settings.max_resolutions / 2;
        // Clients that waited for the same resolution with the same flags share one entry:
        // kept once, counted once.
        if ttl == 0 || !e.is_cacheable() || loaded || self.packet_cache.borrow_mut().holds(&w.q, &w.msg, self.now_s()) {
            return;
        }
        let mut kept = response.to_vec();
        // Without EDNS the client gets the bare SERVFAIL, as the first time.
        wire::append_option(&mut kept, &wire::ede_option(crate::ede::Ede::CachedError, "cached failure"));
        let (question, now_s) = ((&w.msg[w.q.qname.clone()], w.q.qtype), self.now_s());
        let store = |ttl| self.packet_cache.borrow_mut().store(&w.q, &w.msg, &kept, now_s, ttl);
        if self.failure_strikes.borrow_mut().keep(question, now_s, (ttl, settings.failure_max_ttl), store) {
            self.stats.failures_cached.bump();
        }
    }

    /// Sends a finished answer to a client that waited for it: its cookie, its UDP size,
    /// dnstap.
    fn deliver(&self, w: Waiter, mut out: Vec<u8>) {
        // Counted before the answer leaves, so that a client that reads the metrics right
        // after its answer sees this resolution.
        self.stats.observe_latency(self.reactor.now().saturating_duration_since(w.start));
        let cookie = self.client_cookie(&w.msg, &w.q, w.peer.ip());
        self.finish(&mut out, &w.msg, &w.q, w.reply_to, cookie.as_ref().map(|(_, o)| o));
        self.tap_client(Kind::ClientResponse, w.reply_to, w.peer, &w.msg, Some(&out), w.start);
        self.send(w.reply_to, &out);
    }

    /// Sends a finished response to where the query came from.
    fn send(&self, reply_to: ReplyTo, out: &[u8]) {
        match reply_to {
            ReplyTo::Udp { listener, peer } => {
                self.stats.count_rcode(out);
                // UDP is best effort: a full socket buffer drops the answer, as it would the query.
                if let Some(sock) = self.udp.borrow().get(listener).and_then(Option::as_ref) {
                    let _ = sock.send_to(out, peer);
                }
            }
            ReplyTo::Tcp { conn } => {
                self.stats.count_rcode(out);
                self.clients.borrow_mut().deliver(conn, out, true);
            }
        }
    }
}

/// Polls a future once: its output if it completed without waiting (a cache-only
/// resolution always does).
fn poll_once<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// A worker, ready to run on its own thread.
pub(crate) struct Worker {
    poll: Poll,
    recv: crate::sys::RecvBatch,
    send: crate::sys::SendBatch,
    /// How busy this worker's thread is (overload).
    load: front::LoadMeter,
    ctx: Rc<WorkerCtx>,
    /// The TCP listeners by slot (token [`LISTENER_TOKEN_BASE`] + slot); `None` once a
    /// reload removed its address.
    tcp_listeners: Vec<Option<TcpListener>>,
    /// UDP slots whose address a reload removed: not read any more, closed at the instant
    /// given (when every query read from them has had its answer).
    udp_retiring: Vec<(usize, Instant)>,
    stop: Arc<AtomicBool>,
    /// Hand-over to a new process: read no more, finish what is under way, then stop.
    drain: Arc<AtomicBool>,
    mailbox: Arc<Mailbox>,
    /// Queries other workers handed to this one, being sent now.
    handoff_tasks: Rc<Cell<u32>>,
    /// The AF_XDP queue this worker serves (`[xdp]`).
    #[cfg(feature = "xdp")]
    xdp: Option<xdp::XdpQueue>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("index", &self.ctx.settings.index).finish()
    }
}

impl Worker {
    /// Builds a worker over already bound, non-blocking sockets (one UDP socket and one TCP
    /// listener per listen address, each with SO_REUSEPORT).
    pub(crate) fn new(
        settings: WorkerSettings,
        shared: Arc<Shared>,
        stats: Arc<WorkerStats>,
        udp: Vec<std::net::UdpSocket>,
        tcp: Vec<std::net::TcpListener>,
        xsk: Option<crate::xdp::Port>,
    ) -> io::Result<(Self, WorkerHandle)> {
        let poll = Poll::new()?;
        #[cfg(feature = "xdp")]
        let mut xdp = xsk.map(|port| xdp::XdpQueue::new(port, poll.registry())).transpose()?;
        #[cfg(not(feature = "xdp"))]
        let _ = xsk;
        let mut udp: Vec<UdpSocket> = udp.into_iter().map(UdpSocket::from_std).collect();
        let mut tcp_listeners: Vec<TcpListener> = tcp.into_iter().map(TcpListener::from_std).collect();
        for (i, s) in udp.iter_mut().enumerate() {
            poll.registry().register(s, Token(i), Interest::READABLE)?;
        }
        for (i, l) in tcp_listeners.iter_mut().enumerate() {
            poll.registry().register(l, Token(LISTENER_TOKEN_BASE + i), Interest::READABLE)?;
        }
        let udp = RefCell::new(udp.into_iter().map(Some).collect());
        let tcp_listeners = tcp_listeners.into_iter().map(Some).collect();
        let waker = Arc::new(mio::Waker::new(poll.registry(), STOP_TOKEN)?);
        settings.router.register(settings.index, waker.clone());
        let reactor = Rc::new(Reactor::new(poll.registry().try_clone()?));
        let executor = Rc::new(Executor::default());
        let limits = reactor::ConnectionLimits {
            idle_timeout: settings.dot_idle_timeout,
            max_outstanding: settings.dot_max_outstanding,
            handshake_timeout: settings.dot_timeout,
            max_connections: settings.upstream_max_connections,
        };
        let dot = dot::DotDriver::new(
            reactor.clone(),
            executor.clone(),
            settings.tls.dot.clone(),
            stats.clone(),
            shared.probes.clone(),
            settings.outgoing,
            limits,
        );
        let doq = doq::DoqDriver::new(
            reactor.clone(),
            executor.clone(),
            crate::upstream::doq::DoqConfigs::new(
                &settings.tls.doq,
                settings.dot_idle_timeout,
                settings.dot_max_outstanding as u32,
            ),
            stats.clone(),
            shared.probes.clone(),
            settings.outgoing,
            limits,
        );
        let doh = doh::DohDriver::new(
            reactor.clone(),
            executor.clone(),
            settings.tls.doh.clone(),
            settings.doh_method,
            stats.clone(),
            shared.probes.clone(),
            settings.outgoing,
            limits,
        );
        let upstream = WorkerUpstream {
            reactor: reactor.clone(),
            dot: dot.clone(),
            doq: doq.clone(),
            doh: doh.clone(),
            executor: executor.clone(),
            outgoing: settings.outgoing,
            router: settings.router.clone(),
            index: settings.index,
            stats: stats.clone(),
        };
        let clients = TcpClients::new(
            poll.registry().try_clone()?,
            CONN_TOKEN_BASE,
            tcp::TcpLimits {
                max_conns: settings.tcp_max_connections,
                max_per_client: settings.tcp_max_connections_per_client,
                max_pipelined: settings.tcp_max_pipelined,
                idle: settings.tcp_idle_timeout,
                message: settings.tcp_message_timeout,
            },
        );
        let ctx = Rc::new(WorkerCtx {
            reactor,
            executor,
            dot,
            doq,
            doh,
            resolver: Resolver::new(shared, upstream, stats.clone()),
            packet_cache: RefCell::new(
                PacketCache::new(settings.packet_cache_bytes).with_prefetch(settings.prefetch_per_s > 0),
            ),
            failure_strikes: RefCell::new(failures::FailureStrikes::new()),
            prefetch_budget: Cell::new((0, 0)),
            stats,
            udp,
            clients: RefCell::new(clients),
            resolutions: Cell::new(0),
            client_load: RefCell::new(clients::ClientLoad::new(clients::Shares::from_config(&settings.limits))),
            inflight: RefCell::new(std::collections::HashMap::new()),
            stale_recheck: RefCell::new(stale::Recheck::default()),
            shedding: Cell::new(false),
            overloaded: Cell::new(false),
            slip: Cell::new(0),
            epoch: Instant::now(),
            settings,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let drain = Arc::new(AtomicBool::new(false));
        let mailbox = Arc::new(Mailbox::default());
        let handle = WorkerHandle { stop: stop.clone(), drain: drain.clone(), waker, mailbox: mailbox.clone() };
        #[cfg(feature = "xdp")]
        if let Some(q) = &mut xdp {
            q.learn_slots(&ctx);
        }
        Ok((
            Self {
                poll,
                recv: crate::sys::RecvBatch::new(),
                load: front::LoadMeter::new(Instant::now()),
                send: crate::sys::SendBatch::new(),
                ctx,
                tcp_listeners,
                udp_retiring: Vec::new(),
                stop,
                drain,
                mailbox,
                handoff_tasks: Rc::new(Cell::new(0)),
                #[cfg(feature = "xdp")]
                xdp,
            },
            handle,
        ))
    }

    /// Runs the event loop until stopped.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut out = Vec::with_capacity(4096);
        let ctx = self.ctx.clone();
        // Sockets whose batch budget ran out before WouldBlock: with edge-triggered
        // readiness no new event will come for them, so they are read again next turn.
        let mut unfinished: Vec<usize> = Vec::new();
        let mut last_sweep = Instant::now();
        let mut policy_seen = 0u64;
        // Listeners that hit a resource limit while accepting.
        let mut accept_retry: Vec<usize> = Vec::new();
        // Time spent running resolutions (tasks and timers) since the last wait.
        let mut resolving = Duration::ZERO;
        // When the hand-over began (draining: nothing more is read).
        let mut draining_since: Option<Instant> = None;
        while !self.stop.load(Ordering::Acquire) {
            if self.drain.load(Ordering::Acquire) {
                // Closing the AF_XDP socket takes it out of the program's map: its queue's
                // queries go to the kernel's sockets, which the new process reads.
                #[cfg(feature = "xdp")]
                {
                    self.xdp = None;
                }
                let now = Instant::now();
                let since = *draining_since.get_or_insert_with(|| {
                    unfinished.clear();
                    accept_retry.clear();
                    now
                });
                // Every client waiting on this worker has had its answer (sent in the turn
                // that completed it), every TCP connection has been written out and
                // closed, no query another worker handed over is under way here; or the
                // longest a query may take has passed.
                let idle = ctx.inflight.borrow().is_empty()
                    && self.handoff_tasks.get() == 0
                    && ctx.settings.inbox.is_empty()
                    && ctx.clients.borrow_mut().wind_down();
                let limit = ctx.resolver.shared().settings.request_timeout + DRAIN_GRACE;
                if idle || now.duration_since(since) > limit {
                    break;
                }
            }
            let draining = draining_since.is_some();
            let timeout = if unfinished.is_empty() && ctx.clients.borrow().resume.is_empty() && !self.xdp_unfinished() {
                Some(ctx.reactor.next_timeout().unwrap_or(SWEEP_EVERY).min(SWEEP_EVERY))
            } else {
                Some(Duration::ZERO)
            };
            let timeout = if accept_retry.is_empty() { timeout } else { timeout.map(|t| t.min(ACCEPT_RETRY)) };
            let waiting = Instant::now();
            let polled = self.poll.poll(&mut events, timeout);
            let now = Instant::now();
            self.load.turn(now, now.saturating_duration_since(waiting), std::mem::take(&mut resolving));
            match polled {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            ctx.reactor.set_now(now);
            // Before the inbox and the tasks: a hand-off or an answer posted from now on
            // wakes this loop again.
            ctx.settings.router.awake(ctx.settings.index);
            if self.mailbox.requested.load(Ordering::Acquire) != self.mailbox.applied.load(Ordering::Relaxed) {
                self.take_mail();
                // A listener a reload removed is read no more.
                unfinished.retain(|i| self.reading_udp(*i));
                accept_retry.retain(|i| self.tcp_listeners.get(*i).is_some_and(Option::is_some));
            }
            ctx.follow_policy_changes(&mut policy_seen);
            self.take_handoffs();
            for idx in std::mem::take(&mut accept_retry) {
                if self.accept(idx) {
                    accept_retry.push(idx);
                }
            }
            let pending = if draining { Vec::new() } else { std::mem::take(&mut unfinished) };
            for idx in pending {
                if self.read_udp(idx, &mut out) {
                    unfinished.push(idx);
                }
            }
            #[cfg(feature = "xdp")]
            if !draining && self.xdp_unfinished() {
                self.read_xdp(&mut out);
            }
            for ev in events.iter() {
                let t = ev.token().0;
                if ev.token() == STOP_TOKEN {
                    continue;
                } else if t == XDP_TOKEN {
                    #[cfg(feature = "xdp")]
                    if !draining && !self.xdp_unfinished() {
                        self.read_xdp(&mut out);
                    }
                } else if draining && t < CONN_TOKEN_BASE {
                    // The new process reads these sockets now.
                    continue;
                } else if t < LISTENER_TOKEN_BASE {
                    if !unfinished.contains(&t) && self.read_udp(t, &mut out) {
                        unfinished.push(t);
                    }
                } else if t < CONN_TOKEN_BASE {
                    let idx = t - LISTENER_TOKEN_BASE;
                    if self.accept(idx) && !accept_retry.contains(&idx) {
                        accept_retry.push(idx);
                    }
                } else if t >= IO_TOKEN_BASE {
                    ctx.reactor.wake_io(t);
                } else if t >= CONN_TOKEN_BASE {
                    self.tcp_event(t - CONN_TOKEN_BASE, ev.is_readable(), ev.is_writable(), &mut out);
                }
            }
            let tasks_from = Instant::now();
            ctx.reactor.fire_timers();
            ctx.executor.run_ready();
            // Signal lookups the resolver asked for run as tasks of their own.
            for _ in 0..4 {
                let mut wanted = ctx.resolver.take_wanted_signals();
                if wanted.is_empty() {
                    break;
                }
                // A signal lookup is a resolution like any other: it takes a turn of the
                // worker's capacity; past it, the lookup waits for a later turn (queries may
                // be waiting for it).
                let free = ctx.settings.max_resolutions.saturating_sub(ctx.resolutions.get());
                let later = wanted.split_off(wanted.len().min(free as usize));
                let full = !later.is_empty();
                ctx.resolver.defer_wanted_signals(later);
                for ns in wanted {
                    ctx.resolutions.set(ctx.resolutions.get() + 1);
                    let task_ctx = ctx.clone();
                    ctx.executor.spawn(async move {
                        task_ctx.resolver.learn_signal(&ns).await;
                        task_ctx.resolutions.set(task_ctx.resolutions.get() - 1);
                    });
                }
                ctx.executor.run_ready();
                if full {
                    break;
                }
            }
            resolving += tasks_from.elapsed();
            // Connections paused by the pipelining cap read again once answers left; what
            // they start runs in the same turn.
            let resume = std::mem::take(&mut ctx.clients.borrow_mut().resume);
            if !resume.is_empty() {
                for conn in resume {
                    self.tcp_event(conn, true, false, &mut out);
                }
                ctx.executor.run_ready();
            }
            let now = ctx.reactor.now();
            if now.duration_since(last_sweep) >= SWEEP_EVERY {
                last_sweep = now;
                ctx.clients.borrow_mut().sweep_idle(now);
                let pc = ctx.packet_cache.borrow();
                ctx.stats.packet_cache_entries.set(pc.len() as u64);
                ctx.stats.packet_cache_bytes.set(pc.used_bytes() as u64);
                drop(pc);
                ctx.dot.sweep_idle(now);
                ctx.doq.sweep_idle(now);
                ctx.doh.sweep_idle(now);
                #[cfg(feature = "xdp")]
                if let Some(q) = &mut self.xdp {
                    let _ = q.flush();
                    ctx.stats.xdp_dropped.set(q.dropped());
                }
                self.close_retired_udp(now);
                if !draining {
                    ctx.refresh_trust_anchors();
                }
                if ctx.settings.index == 0 {
                    ctx.shared().admission.rotate_cookie_secret(crate::clock::unix_now());
                }
            }
        }
        Ok(())
    }

    /// The AF_XDP queue's read budget ran out before its RX ring was empty.
    fn xdp_unfinished(&self) -> bool {
        #[cfg(feature = "xdp")]
        return self.xdp.as_ref().is_some_and(|q| q.more);
        #[cfg(not(feature = "xdp"))]
        false
    }

    /// Starts the encrypted queries other workers handed to this one (it owns the
    /// connections to their servers), each a task that sends the answer back.
    /// At most [`handoff::TAKE_PER_TURN`] per turn (more: the loop turns again at once),
    /// [`handoff::MAX_TASKS`] under way; a query whose asker stopped waiting is not sent.
    fn take_handoffs(&self) {
        let ctx = &self.ctx;
        let inbox = &ctx.settings.inbox;
        let now = ctx.reactor.now();
        for job in inbox.try_iter().take(handoff::TAKE_PER_TURN) {
            if job.abandoned(now) {
                job.reply.complete(Err(crate::upstream::UpstreamError::Local(io::ErrorKind::TimedOut)));
                continue;
            }
            if self.handoff_tasks.get() >= handoff::MAX_TASKS {
                job.reply.complete(Err(crate::upstream::UpstreamError::Busy(crate::upstream::error::Busy::Handoff)));
                continue;
            }
            self.handoff_tasks.set(self.handoff_tasks.get() + 1);
            let (upstream, tasks) = (ctx.resolver.upstream().clone(), self.handoff_tasks.clone());
            ctx.executor.spawn(async move {
                let left = job.deadline.saturating_duration_since(upstream.reactor.now());
                let result = upstream.exchange_here(job.server, &job.query, job.wire, left).await;
                job.reply.complete(handoff::cut_short(result, left, job.timeout));
                tasks.set(tasks.get() - 1);
            });
        }
        if !inbox.is_empty() {
            ctx.settings.router.wake(ctx.settings.index);
        }
    }

    /// Applies the packet-cache flushes posted since the last turn and starts the explain
    /// requests (each a task of its own).
    /// Whether UDP slot `idx` is open and read (not retiring).
    fn reading_udp(&self, idx: usize) -> bool {
        self.ctx.udp.borrow().get(idx).is_some_and(Option::is_some) && !self.udp_retiring.iter().any(|(i, _)| *i == idx)
    }

    /// Listen addresses a reload added (their sockets, bound by the data plane) or
    /// removed: new sockets are read from now on; a removed address's TCP listener closes
    /// at once (its connections go on), its UDP socket is read no more and closes once
    /// every query read from it can have had its answer.
    fn change_listeners(&mut self, changes: Vec<ListenerChange>) {
        let registry = self.poll.registry();
        for change in changes {
            match change {
                ListenerChange::Add(udp, tcp) => {
                    let mut udp = UdpSocket::from_std(udp);
                    let mut tcp = TcpListener::from_std(tcp);
                    let slot = self.ctx.udp.borrow().len();
                    if let Err(e) = registry.register(&mut udp, Token(slot), Interest::READABLE) {
                        tracing::warn!(error = %e, "new UDP listener not registered");
                        continue;
                    }
                    self.ctx.udp.borrow_mut().push(Some(udp));
                    let slot = self.tcp_listeners.len();
                    if let Err(e) = registry.register(&mut tcp, Token(LISTENER_TOKEN_BASE + slot), Interest::READABLE) {
                        tracing::warn!(error = %e, "new TCP listener not registered");
                        continue;
                    }
                    self.tcp_listeners.push(Some(tcp));
                }
                ListenerChange::Remove(addr) => {
                    let close_at =
                        self.ctx.reactor.now() + self.ctx.resolver.shared().settings.request_timeout + DRAIN_GRACE;
                    for (i, slot) in self.ctx.udp.borrow_mut().iter_mut().enumerate() {
                        if let Some(sock) = slot
                            && sock.local_addr().ok() == Some(addr)
                            && !self.udp_retiring.iter().any(|(r, _)| *r == i)
                        {
                            let _ = registry.deregister(sock);
                            self.udp_retiring.push((i, close_at));
                        }
                    }
                    for slot in &mut self.tcp_listeners {
                        if let Some(l) = slot
                            && l.local_addr().ok() == Some(addr)
                        {
                            let _ = registry.deregister(l);
                            *slot = None;
                        }
                    }
                }
            }
        }
        #[cfg(feature = "xdp")]
        if let Some(q) = &mut self.xdp {
            q.learn_slots(&self.ctx);
        }
    }

    /// Closes the UDP sockets of removed addresses whose replies are all sent.
    fn close_retired_udp(&mut self, now: Instant) {
        let udp = &self.ctx.udp;
        self.udp_retiring.retain(|(i, at)| {
            if now < *at {
                return true;
            }
            if let Some(slot) = udp.borrow_mut().get_mut(*i) {
                *slot = None;
            }
            false
        });
    }

    fn take_mail(&mut self) {
        let mut list = self.mailbox.flushes.lock().unwrap_or_else(|p| p.into_inner());
        // Requests are numbered under this lock, and an explain job is queued before it is
        // numbered: every request up to `last` is in the two lists now.
        let last = self.mailbox.requested.load(Ordering::Acquire);
        for (_, name) in list.iter() {
            let name = name.as_ref().map(|(n, subtree)| (n.as_slice(), *subtree));
            let (name, subtree) = (name.map(|n| n.0), name.is_some_and(|n| n.1));
            self.ctx.packet_cache.borrow_mut().flush(name, subtree);
            self.ctx.failure_strikes.borrow_mut().flush(name, subtree);
        }
        list.clear();
        drop(list);
        let listeners = std::mem::take(&mut *self.mailbox.listeners.lock().unwrap_or_else(|p| p.into_inner()));
        if !listeners.is_empty() {
            self.change_listeners(listeners);
        }
        if let Some(live) = self.mailbox.live.lock().unwrap_or_else(|p| p.into_inner()).take() {
            self.ctx.packet_cache.borrow_mut().set_budget(live.packet_cache_bytes);
            self.ctx.client_load.borrow_mut().set_shares(clients::Shares::from_config(&live.limits));
        }
        let jobs = std::mem::take(&mut *self.mailbox.explains.lock().unwrap_or_else(|p| p.into_inner()));
        for job in jobs {
            let ctx = self.ctx.clone();
            self.ctx.executor.spawn(async move {
                let (result, steps) = ctx.resolver.explain(&job.name, job.qtype).await;
                let mut explained = respond::explain(&job.name, job.qtype, &result, steps);
                explained.policy = ctx
                    .shared()
                    .rpz
                    .as_deref()
                    .and_then(|rpz| rpz.explain(&job.name, &result, &|n| ctx.nameservers_of(n)));
                let _ = job.reply.send(explained);
            });
        }
        self.mailbox.applied.store(last, Ordering::Release);
    }

    /// Reads datagrams with recvmmsg and answers the ones it can at once with sendmmsg,
    /// up to `server.udp_batch` per turn; true when that budget ran out before the socket
    /// was drained.
    fn read_udp(&mut self, idx: usize, out: &mut Vec<u8>) -> bool {
        use std::os::fd::AsRawFd;
        let ctx = self.ctx.clone();
        if !self.reading_udp(idx) {
            return false;
        }
        let Some(fd) = ctx.udp.borrow()[idx].as_ref().map(|s| s.as_raw_fd()) else { return false };
        let mut handled = 0;
        let mut more = true;
        ctx.overloaded.set(self.load.overloaded(ctx.reactor.now(), ctx.settings.overload_after));
        ctx.shedding.set(ctx.overloaded.get());
        while handled < ctx.settings.udp_batch {
            let n = match self.recv.recv(fd) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock: drained. Other errors concern no query: try again next event.
                Err(_) => {
                    more = false;
                    break;
                }
            };
            for i in 0..n {
                let (msg, peer) = self.recv.get(i);
                let Some(peer) = peer else { continue };
                ctx.stats.queries_udp.bump();
                let Some(msg) = msg else {
                    // Longer than any query we read: not a DNS query worth an answer.
                    ctx.stats.dropped.bump();
                    continue;
                };
                if ctx.handle(msg, peer, ReplyTo::Udp { listener: idx, peer }, out) == Handled::Reply {
                    ctx.stats.count_rcode(out);
                    self.send.push(out, peer);
                    if self.send.is_full() {
                        self.send.flush(fd);
                    }
                }
            }
            handled += n;
            if n < crate::sys::MMSG_BATCH {
                more = false;
                break;
            }
        }
        ctx.shedding.set(false);
        self.send.flush(fd);
        more
    }

    /// Accepts until the backlog is empty; true when it had to stop early (out of
    /// descriptors) and must be tried again without waiting for a new event.
    fn accept(&mut self, idx: usize) -> bool {
        let ctx = &self.ctx;
        loop {
            let Some(listener) = self.tcp_listeners.get(idx).and_then(Option::as_ref) else { return false };
            match listener.accept() {
                Ok((stream, peer)) => {
                    // A client outside the ACL gets nothing, not even a connection to hold.
                    if !ctx.shared().access.load().client_allowed(peer.ip()) {
                        ctx.stats.refused_acl.bump();
                        continue;
                    }
                    if ctx.clients.borrow_mut().add(stream, peer, ctx.reactor.now()) {
                        ctx.stats.tcp_accepted.bump();
                    } else {
                        ctx.stats.tcp_rejected.bump();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                // A connection reset before accept, or a signal: the rest of the backlog waits.
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EPROTO) => continue,
                // Out of descriptors or memory: try again shortly.
                Err(e) => {
                    crate::rate_limited!(warn, error = %e, "accept failed; retrying");
                    return true;
                }
            }
        }
    }

    fn tcp_event(&self, conn: usize, readable: bool, writable: bool, out: &mut Vec<u8>) {
        let ctx = &self.ctx;
        if writable {
            ctx.clients.borrow_mut().flush(conn);
        }
        if !readable {
            return;
        }
        let now = ctx.reactor.now();
        // Read what the connection allows, then handle each complete message.
        let Some((peer, messages)) = ctx.clients.borrow_mut().read(conn, now) else { return };
        for msg in messages {
            ctx.stats.queries_tcp.bump();
            match ctx.handle(&msg, peer, ReplyTo::Tcp { conn }, out) {
                Handled::Reply => {
                    ctx.stats.count_rcode(out);
                    ctx.clients.borrow_mut().deliver(conn, out, false);
                }
                Handled::Spawned => ctx.clients.borrow_mut().note_pending(conn),
                Handled::Dropped => {}
            }
        }
        ctx.clients.borrow_mut().after_read(conn);
    }
}
