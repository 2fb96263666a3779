//! The iterative resolver. It is written against the [`Upstream`] trait (send bytes to a
//! server, get bytes back or an error, with `now` from the same source), so the same code
//! runs on a worker's mio loop and, in tests, against a fake authority with a fake clock.
//!
//! Shared state ([`Shared`]: record cache, server RTT table, hints, local zones, ACL) is
//! behind `Arc` and used by every worker; per-worker state (outstanding-query counters)
//! lives in the [`Resolver`] value each worker owns.

mod aggressive;
mod deleg;
mod discovery;
pub mod error;
pub(crate) mod exchange;
pub mod hints;
pub(crate) mod iterate;
pub mod local;
pub(crate) mod response;
mod select;
pub mod servers;
mod signal_wait;
#[cfg(test)]
mod tests;
pub mod trace;
pub(crate) mod validate;
pub mod zones;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::rr::{Name, Record};

use crate::acl::AccessPolicy;
use crate::cache::records::RecordCache;
use crate::config::Config;
use crate::stats::WorkerStats;
pub use crate::upstream::{PeerAuth, UpstreamError, Wire};
pub use error::{Limit, ResolveError};
pub use hints::RootHints;
pub use local::LocalZones;
pub use servers::ServerTable;

/// The resolver's clock and chance: every time and every random number the resolver,
/// the validator and the transport decisions use comes from here, never from the system
/// directly, so tests run them on a fake clock with a seeded generator.
pub trait Environment {
    /// Monotonic time, from the same clock that runs the timeouts.
    fn now(&self) -> Instant;

    /// Wall-clock time in Unix seconds (signature windows, probe and signal state that
    /// outlives a restart).
    fn unix_now(&self) -> u64;

    /// A uniformly random 64-bit number (message IDs, server order).
    fn random(&self) -> u64;

    /// A random DNS message ID.
    fn random_id(&self) -> u16 {
        (self.random() >> 48) as u16
    }

    /// A random number below `n` (`n` > 0; the modulo bias is negligible for the small
    /// ranges used here).
    fn random_below(&self, n: u64) -> u64 {
        self.random() % n.max(1)
    }
}

/// How the resolver reaches authoritative servers.
pub trait Upstream: Environment {
    /// Sends one query to `server` over `wire` and returns the first reply that came from
    /// that server, or an error; it never takes longer than `timeout`.
    fn exchange(
        &self,
        server: SocketAddr,
        query: &[u8],
        wire: Wire,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<u8>, UpstreamError>>;

    /// Runs `task` beside the current work (a probe): it must not delay the caller.
    fn spawn(&self, task: std::pin::Pin<Box<dyn Future<Output = ()>>>);

    /// Completes once `d` has passed on this clock (a query waiting for state that other
    /// tasks fill in, such as a nameserver's signal).
    fn sleep(&self, d: Duration) -> impl Future<Output = ()>;
}

/// Resolver knobs, taken from the configuration once.
#[derive(Debug, Clone)]
pub struct Settings {
    /// RFC 9156 QNAME minimisation.
    pub qname_minimisation: bool,
    /// No fallback to the full name when a minimised query fails.
    pub qname_minimisation_strict: bool,
    /// EDNS(0) UDP payload size we advertise.
    pub edns_udp_size: u16,
    /// Budget for one client query.
    pub request_timeout: Duration,
    /// Timeout for a server without RTT history.
    pub initial_rto: Duration,
    /// See `config::bounds`.
    pub max_queries_per_request: u32,
    /// See `config::bounds`.
    pub max_depth: u32,
    /// See `config::bounds`.
    pub max_chain: u32,
    /// See `config::bounds`.
    pub max_referrals: u32,
    /// See `config::bounds`.
    pub max_ns_lookups: u32,
    /// See `config::bounds`.
    pub max_servers_per_step: u32,
    /// See `config::bounds`.
    pub max_outstanding_per_server: u32,
    /// See `config::bounds`.
    pub max_outstanding_per_zone: u32,
    /// Timeout of one DoT query, connection set-up included (RFC 9539 E-timeout).
    pub dot_timeout: Duration,
    /// RFC 9539 probing of servers no policy covers.
    pub probing: bool,
    /// Probes under way at once, per worker.
    pub max_concurrent_probes: u32,
    /// Look up and use nameservers' `_dns` SVCB signals (RFC 9461).
    pub signals: bool,
    /// Which nameservers a first query waits for the signal of.
    pub signal_wait: crate::config::SignalWait,
    /// The longest such a wait lasts.
    pub signal_wait_for: Duration,
    /// Experimental DELEG: the DE bit on queries, DELEG records read from referrals.
    pub deleg: bool,
    /// Serve-stale (RFC 8767), when on.
    pub stale: Option<StaleSettings>,
    /// How long a failure the authorities caused is kept in the packet cache (seconds;
    /// 0: not at all). See `ResolveError::is_cacheable`.
    pub failure_ttl: u32,
    /// The longest a repeating failure is kept (`cache.failure_max_ttl_s`).
    pub failure_max_ttl: u32,
}

/// Serve-stale's timers (`cache.serve_stale` and the `cache.stale_*` knobs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleSettings {
    /// The TTL of a stale answer.
    pub ttl: u32,
    /// The client-response timer.
    pub client_timeout: Duration,
    /// The failure-recheck timer.
    pub recheck: Duration,
}

impl Settings {
    /// The EDNS(0) of an upstream query to a server that speaks it.
    pub(crate) fn query_edns(&self) -> exchange::QueryEdns {
        exchange::QueryEdns::On { udp_size: self.edns_udp_size, deleg: self.deleg }
    }

    /// Reads the resolver section of a validated configuration.
    pub fn from_config(cfg: &Config) -> Self {
        let r = &cfg.resolver;
        Self {
            qname_minimisation: r.qname_minimisation,
            qname_minimisation_strict: r.qname_minimisation_strict,
            edns_udp_size: r.edns_udp_size,
            request_timeout: Duration::from_millis(r.request_timeout_ms),
            initial_rto: Duration::from_millis(r.initial_rto_ms),
            max_queries_per_request: r.max_queries_per_request,
            max_depth: r.max_depth,
            max_chain: r.max_chain,
            max_referrals: r.max_referrals,
            max_ns_lookups: r.max_ns_lookups,
            max_servers_per_step: r.max_servers_per_step,
            max_outstanding_per_server: r.max_outstanding_per_server,
            max_outstanding_per_zone: r.max_outstanding_per_zone,
            dot_timeout: Duration::from_millis(cfg.transport.dot_timeout_ms),
            probing: cfg.transport.probing,
            max_concurrent_probes: cfg.transport.max_concurrent_probes,
            signals: cfg.transport.signals,
            signal_wait: cfg.transport.signal_wait,
            signal_wait_for: Duration::from_millis(cfg.transport.signal_wait_ms),
            deleg: cfg.transport.deleg,
            stale: cfg.cache.serve_stale.then(|| StaleSettings {
                ttl: cfg.cache.stale_ttl_s,
                client_timeout: Duration::from_millis(cfg.cache.stale_client_timeout_ms),
                recheck: Duration::from_secs(u64::from(cfg.cache.stale_recheck_s)),
            }),
            failure_ttl: cfg.cache.failure_ttl_s,
            failure_max_ttl: cfg.cache.failure_max_ttl_s,
        }
    }
}

/// State shared by all workers.
#[derive(Debug)]
pub struct Shared {
    /// RRsets, negative answers and delegations.
    pub records: RecordCache,
    /// RTT and failure state per server address.
    pub servers: ServerTable,
    /// Root hints (replaced whole on a reload).
    pub hints: arc_swap::ArcSwap<RootHints>,
    /// Locally answered special-use names (`[local_zones]`, swapped on reload).
    pub local: arc_swap::ArcSwap<LocalZones>,
    /// Client and upstream address policy.
    pub access: arc_swap::ArcSwap<AccessPolicy>,
    /// Client query rates and DNS cookies, read at the front door.
    pub admission: crate::admission::Admission,
    /// The dnstap stream, when `[dnstap]` names a collector.
    pub dnstap: Option<Arc<crate::dnstap::Dnstap>>,
    /// Response Policy Zones, when `[rpz]` lists any.
    pub rpz: Option<Arc<crate::rpz::Rpz>>,
    /// Operator transport overrides.
    pub policies: Arc<crate::upstream::policy::PolicyStore>,
    /// RFC 9539 state per (address, encrypted transport).
    pub probes: Arc<crate::upstream::probe::ProbeTable>,
    /// `_dns` SVCB signals per nameserver name.
    pub signals: crate::upstream::signal::SignalCache,
    /// DNSSEC validation: switches, trust anchors, limits.
    pub validator: crate::dnssec::ValidatorSettings,
    /// RFC 5011 maintenance of the trust anchors (`None`: they stand as configured).
    pub managed: Option<Arc<crate::dnssec::managed::ManagedAnchors>>,
    /// Forward, stub and local zones (configuration and API), replaced whole.
    pub zones: arc_swap::ArcSwap<zones::ZoneTable>,
    /// Secure TLSA records learnt from nameservers' signals, read by DANE handshakes.
    pub tlsa: Arc<crate::upstream::dane::TlsaTable>,
    /// Knobs.
    pub settings: Settings,
}

/// The outcome of resolving one question: what goes into the response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// NOERROR or NXDOMAIN.
    pub rcode: u8,
    /// Answer section: the CNAME/DNAME chain, then the data (with RRSIGs).
    pub answers: Vec<Record>,
    /// Authority section: SOA (and proofs) of a negative answer.
    pub authority: Vec<Record>,
    /// How long the whole response may be served from the packet cache.
    pub cache_ttl: u32,
    /// DNSSEC status of the whole answer (every link of a chain): AD when secure,
    /// SERVFAIL with its EDE when bogus (unless the client set CD).
    pub security: crate::dnssec::Security,
    /// Some link came from expired data (serve-stale, RFC 8767): EDE 3 (19 for an
    /// NXDOMAIN), and never kept in the packet cache.
    pub stale: bool,
}

/// Work allowed for one client query; shared by every nested step.
#[derive(Debug)]
pub(crate) struct Budget {
    queries_left: Cell<u32>,
    /// Steps (cache walks, server selections, nested lookups), whether or not they send
    /// anything: bounds work that never reaches the network.
    steps_left: Cell<u32>,
    deadline: Instant,
    /// Nameserver names whose addresses could not be found during this client query.
    failed_ns: RefCell<Vec<Name>>,
    /// The path, recorded only for explain.
    trace: Option<RefCell<Vec<trace::TraceStep>>>,
    /// DNSSEC signature checks left (`dnssec.max_sig_checks`).
    pub(crate) sig_checks_left: Cell<u32>,
    /// NSEC3 hashes left (`dnssec.max_nsec3_hashes`).
    pub(crate) nsec3_hashes_left: Cell<u32>,
    /// Zones whose keys are being established: a zone met again inside its own chain is
    /// a loop (hostile or broken data), not something to recurse into.
    pub(crate) keys_in_progress: RefCell<Vec<Name>>,
    /// Names whose DS is being asked by an insecure-cut walk (see `validate.rs`).
    pub(crate) cut_walks: RefCell<Vec<Name>>,
    /// Answer from the cache (and local zones) only: a name not cached ends the
    /// resolution with `ResolveError::NotInCache` instead of going out.
    cache_only: bool,
    /// For the lookup of a nameserver's signal (its SVCB and TLSA RRsets): that
    /// nameserver, so that a wait for another signal can be checked for a cycle.
    signal_for: Option<Name>,
    /// A wait for a signal was skipped because it would have closed a cycle.
    signal_cycle: Cell<bool>,
    /// Serve-stale's cache-only reading: expired entries count, with this TTL.
    stale_ttl: Option<u32>,
    /// A prefetch: the client's own lookups of this type (each link of a chain) go to
    /// the authorities even when cached.
    refresh: Option<hickory_proto::rr::RecordType>,
    /// What whoever watches the resolution (the worker) learns of its way.
    watch: Option<std::rc::Rc<Watch>>,
    /// An exchange of this resolution failed for a reason of our own
    /// (`UpstreamError::is_local_load`).
    local_fault: Cell<bool>,
    /// The secure DELEG rules this walk followed, per child zone (at most one per
    /// referral): its exchanges plan with them even if the cache could not keep them.
    pub(crate) deleg_rules: RefCell<Vec<(Name, crate::upstream::deleg::DelegRule)>>,
}

/// What the worker learns of a resolution's way besides its result
/// (`Resolver::resolve_watching`).
#[derive(Debug, Default)]
pub struct Watch {
    /// An exchange of it ran under a strict plan: serve-stale must not stand in for it.
    pub met_strict: Cell<bool>,
    /// An exchange of it failed for a reason of this resolver's own (an outstanding limit,
    /// a full connection pool, no descriptor or route; `UpstreamError::is_local_load`): its
    /// failure may say nothing about the name, and is not kept (`cache.failure_ttl_s`).
    pub local_fault: Cell<bool>,
}

/// Steps allowed per upstream query of the budget.
const STEPS_PER_QUERY: u32 = 4;

impl Budget {
    fn new(shared: &Shared, now: Instant) -> Self {
        let settings = &shared.settings;
        Self {
            sig_checks_left: Cell::new(shared.validator.max_sig_checks),
            nsec3_hashes_left: Cell::new(shared.validator.max_nsec3_hashes),
            queries_left: Cell::new(settings.max_queries_per_request),
            steps_left: Cell::new(settings.max_queries_per_request.saturating_mul(STEPS_PER_QUERY)),
            deadline: now + settings.request_timeout,
            failed_ns: RefCell::new(Vec::new()),
            trace: None,
            cache_only: false,
            keys_in_progress: RefCell::new(Vec::new()),
            cut_walks: RefCell::new(Vec::new()),
            stale_ttl: None,
            refresh: None,
            watch: None,
            local_fault: Cell::new(false),
            deleg_rules: RefCell::new(Vec::new()),
            signal_for: None,
            signal_cycle: Cell::new(false),
        }
    }

    /// Notes an exchange's failure: one of our own load marks the resolution, and tells
    /// its watcher.
    fn note_failure(&self, e: &UpstreamError) {
        if e.is_local_load() {
            self.local_fault.set(true);
            if let Some(w) = &self.watch {
                w.local_fault.set(true);
            }
        }
    }

    /// Whether this resolution records its path (explain).
    fn tracing(&self) -> bool {
        self.trace.is_some()
    }

    /// Records one step of the path when tracing; `step` is not built otherwise.
    fn note(&self, step: impl FnOnce() -> trace::TraceStep) {
        if let Some(t) = &self.trace {
            t.borrow_mut().push(step());
        }
    }

    /// Charges one step of work; fails once the work allowance or the deadline is spent.
    fn step(&self, now: Instant) -> Result<(), ResolveError> {
        if now >= self.deadline {
            return Err(ResolveError::LimitExceeded(Limit::RequestTimeout));
        }
        let left = self.steps_left.get();
        if left == 0 {
            return Err(ResolveError::LimitExceeded(Limit::QueriesPerRequest));
        }
        self.steps_left.set(left - 1);
        Ok(())
    }

    fn spend(&self, now: Instant) -> Result<(), ResolveError> {
        if now >= self.deadline {
            return Err(ResolveError::LimitExceeded(Limit::RequestTimeout));
        }
        let left = self.queries_left.get();
        if left == 0 {
            return Err(ResolveError::LimitExceeded(Limit::QueriesPerRequest));
        }
        self.queries_left.set(left - 1);
        Ok(())
    }
}

/// Outstanding upstream queries of one worker, per server and per zone.
#[derive(Debug, Default)]
struct Outstanding {
    per_server: HashMap<IpAddr, u32>,
    per_zone: HashMap<Name, u32>,
}

/// Releases the outstanding counts of one upstream query when dropped (also when the
/// resolution is cancelled mid-flight).
pub(crate) struct OutstandingGuard<'a> {
    table: &'a RefCell<Outstanding>,
    server: IpAddr,
    zone: Name,
}

impl Drop for OutstandingGuard<'_> {
    fn drop(&mut self) {
        let mut t = self.table.borrow_mut();
        if let Some(n) = t.per_server.get_mut(&self.server) {
            *n -= 1;
            if *n == 0 {
                t.per_server.remove(&self.server);
            }
        }
        if let Some(n) = t.per_zone.get_mut(&self.zone) {
            *n -= 1;
            if *n == 0 {
                t.per_zone.remove(&self.zone);
            }
        }
    }
}

/// Signal lookups one worker keeps queued for lack of capacity.
pub const MAX_DEFERRED_SIGNALS: usize = 4096;

/// One worker's resolver.
#[derive(Debug)]
pub struct Resolver<U> {
    shared: Arc<Shared>,
    upstream: U,
    outstanding: RefCell<Outstanding>,
    stats: Arc<WorkerStats>,
    /// Probes this worker has under way.
    probes_in_flight: std::rc::Rc<Cell<u32>>,
    /// Nameserver names whose `_dns` signal the worker should look up next.
    wanted_signals: RefCell<Vec<Name>>,
    /// Queries waiting for a signal (`signal_wait.rs`).
    signal_waiters: signal_wait::SignalWaiters,
}

impl<U: Upstream> Resolver<U> {
    /// A resolver over `upstream`, counting into `stats`.
    pub fn new(shared: Arc<Shared>, upstream: U, stats: Arc<WorkerStats>) -> Self {
        Self {
            shared,
            upstream,
            outstanding: RefCell::new(Outstanding::default()),
            stats,
            probes_in_flight: std::rc::Rc::new(Cell::new(0)),
            wanted_signals: RefCell::new(Vec::new()),
            signal_waiters: Default::default(),
        }
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The upstream.
    pub fn upstream(&self) -> &U {
        &self.upstream
    }

    /// Signal lookups the plan asked for since the last call; the worker runs each as an
    /// ordinary resolution beside the queries (never waited on).
    pub fn take_wanted_signals(&self) -> Vec<Name> {
        std::mem::take(&mut *self.wanted_signals.borrow_mut())
    }

    /// Puts back signal lookups the worker had no capacity for, to start at a later turn;
    /// past [`MAX_DEFERRED_SIGNALS`] the rest are given up (their pending mark cleared,
    /// so that a later query asks again and no query waits for a lookup that never runs).
    pub fn defer_wanted_signals(&self, names: Vec<Name>) {
        let mut wanted = self.wanted_signals.borrow_mut();
        for ns in names {
            if wanted.len() < MAX_DEFERRED_SIGNALS {
                wanted.push(ns);
            } else {
                self.shared.signals.abandon(&ns);
            }
        }
    }

    fn reserve(&self, server: IpAddr, zone: &Name) -> Result<OutstandingGuard<'_>, Limit> {
        let s = &self.shared.settings;
        let mut t = self.outstanding.borrow_mut();
        let on_server = t.per_server.get(&server).copied().unwrap_or(0);
        if on_server >= s.max_outstanding_per_server {
            return Err(Limit::OutstandingPerServer);
        }
        let in_zone = t.per_zone.get(zone).copied().unwrap_or(0);
        if in_zone >= s.max_outstanding_per_zone {
            return Err(Limit::OutstandingPerZone);
        }
        *t.per_server.entry(server).or_insert(0) += 1;
        *t.per_zone.entry(zone.clone()).or_insert(0) += 1;
        Ok(OutstandingGuard { table: &self.outstanding, server, zone: zone.clone() })
    }
}
