//! Starting the data plane: build the shared state, bind every worker's sockets (in the
//! calling thread, so that a busy port is an error before any thread starts), then run
//! one pinned thread per worker.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;

use socket2::{Domain, Protocol, Socket, Type};

use crate::acl::AccessPolicy;
use crate::cache::records::RecordCache;
use crate::config::Config;
use crate::resolver::zones::{ZoneError, ZoneTable};
use crate::resolver::{LocalZones, RootHints, ServerTable, Settings, Shared};
use crate::stats::WorkerStats;
use crate::upstream::policy::{PolicyStore, PolicyTable};
use crate::upstream::probe::{ProbeTable, ProbeWindows};
use crate::upstream::sessions::SessionStore;
use crate::upstream::tls::TlsConfigs;
use crate::worker::{Worker, WorkerHandle, WorkerSettings};
use adox_api::rest::ZoneSpec;

/// Why the data plane could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The root hints could not be loaded.
    #[error("{0}")]
    Hints(#[from] crate::resolver::hints::HintsError),
    /// The TLS settings (CA file) could not be loaded.
    #[error("{0}")]
    Tls(#[from] crate::upstream::tls::TlsSetupError),
    /// An operator policy could not be compiled.
    #[error("policy: {0}")]
    Policy(adox_api::policy::PolicyError),
    /// The trust anchor file could not be read.
    #[error("dnssec: {0}")]
    TrustAnchor(String),
    /// A socket could not be opened or bound.
    #[error("cannot listen on {addr} ({proto}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// udp or tcp.
        proto: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// An outgoing source address is not one of this host's.
    #[error("cannot send queries from {addr} (transport.outgoing_v4/v6): {source}")]
    Outgoing {
        /// The address.
        addr: IpAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The switch to `server.user` failed.
    #[error("server.user: {0}")]
    Privileges(String),
    /// The sockets taken over from a running adoxd do not fit this configuration.
    #[error("takeover: {0}")]
    Takeover(String),
    /// The AF_XDP path (`[xdp]`) could not be set up.
    #[error("xdp: {0}")]
    Xdp(std::io::Error),
    /// A worker could not be created.
    #[error("worker {index}: {source}")]
    Worker {
        /// Worker index.
        index: usize,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The running data plane.
#[derive(Debug)]
pub struct DataPlane {
    /// State shared by the workers (caches, server table).
    shared: Arc<Shared>,
    /// Each worker's counters.
    stats: Vec<Arc<WorkerStats>>,
    /// Addresses actually bound (with the real port when 0 was asked).
    local_addrs: Vec<SocketAddr>,
    /// The listen addresses as configured (port 0 kept), in the order of `local_addrs`.
    listen_conf: Vec<SocketAddr>,
    stops: Vec<WorkerHandle>,
    threads: Vec<JoinHandle<()>>,
    state_path: std::path::PathBuf,
    /// Copies of the workers' listening sockets, handed to a new adoxd on request.
    listening: crate::handover::ListenSet,
    /// The upstream PKIX verifier (replaced on a reload).
    pkix: Arc<crate::upstream::tls::PkixRoots>,
    /// The XDP program while `[xdp]` is on: it leaves the interface when dropped.
    xdp: Option<crate::xdp::Program>,
}

/// The sockets an old process's workers read, spread over `workers` new ones: each old
/// worker's sockets go to one new worker (several to one when there are fewer), and new
/// workers beyond the old count read copies of an old worker's (every socket is read by
/// someone; no socket joins or leaves a SO_REUSEPORT group).
fn spread(
    old: Vec<crate::handover::WorkerSockets>,
    workers: usize,
) -> std::io::Result<Vec<crate::handover::WorkerSockets>> {
    let have = old.len();
    let mut out: Vec<crate::handover::WorkerSockets> = (0..workers).map(|_| (Vec::new(), Vec::new())).collect();
    for (j, (udp, tcp)) in old.into_iter().enumerate() {
        out[j % workers].0.extend(udp);
        out[j % workers].1.extend(tcp);
    }
    for i in have..workers {
        out[i] = crate::handover::dup(&out[i % have])?;
    }
    Ok(out)
}

/// Whether `wanted` (a listen address of a new configuration) names the listener
/// configured as `conf` and bound at `bound`: as written, as bound (an `IP:0` that got
/// port P, now written `IP:P`), or as `IP:0` again.
fn same_listener(conf: SocketAddr, bound: SocketAddr, wanted: &SocketAddr) -> bool {
    *wanted == conf || *wanted == bound || (wanted.port() == 0 && wanted.ip() == bound.ip())
}

/// What a cache flush drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flush {
    /// Everything.
    All,
    /// Every type at one name.
    Name(hickory_proto::rr::Name),
    /// A name and everything below it.
    Zone(hickory_proto::rr::Name),
}

/// What another thread (the control plane) holds of the running data plane: methods over
/// the shared state, the counters and each worker's mailbox. Everything it returns is the
/// data plane's own types; the control plane converts them into REST bodies.
#[derive(Debug, Clone)]
pub struct PlaneHandle {
    shared: Arc<Shared>,
    stats: Vec<Arc<WorkerStats>>,
    workers: Vec<WorkerHandle>,
    pkix: Arc<crate::upstream::tls::PkixRoots>,
}

/// How long a flush waits for every worker to confirm it.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl PlaneHandle {
    /// Replaces the negative trust anchors set through the API, then flushes the caches
    /// below each name added or removed (their validation status changes at once).
    pub fn set_negative_anchors(&self, names: Vec<hickory_proto::rr::Name>) -> bool {
        self.swap_anchors(&self.shared.validator.runtime_negative_anchors, names)
    }

    /// Puts `names` in `slot` (one list of negative trust anchors) and flushes the caches
    /// below each name added or removed.
    fn swap_anchors(
        &self,
        slot: &arc_swap::ArcSwap<Vec<hickory_proto::rr::Name>>,
        names: Vec<hickory_proto::rr::Name>,
    ) -> bool {
        let names: Vec<hickory_proto::rr::Name> = names.iter().map(crate::names::canonical).collect();
        let old = slot.swap(Arc::new(names.clone()));
        let mut done = true;
        for n in names.iter().filter(|n| !old.contains(n)).chain(old.iter().filter(|n| !names.contains(n))) {
            done &= self.flush(&Flush::Zone(n.clone()));
        }
        done
    }

    /// Replaces the zones set through the API (`PUT /v1/zones`): compiled with the
    /// configuration's first (a bad list changes nothing), then in force
    /// ([`Self::install_zones`]). `Ok(false)` when some worker did not confirm its flush in
    /// time.
    pub fn set_zones(&self, api: Vec<ZoneSpec>) -> Result<bool, ZoneError> {
        let table = self.check_zones(&self.shared.zones.load().specs().0, &api)?;
        Ok(self.install_zones(table))
    }

    /// Puts a reloaded `[local_zones]` in force; every packet cache is dropped (local
    /// answers live there).
    pub fn reload_local_zones(&self, cfg: &crate::config::LocalZonesConfig) -> bool {
        self.shared.local.store(Arc::new(LocalZones::new(cfg)));
        self.flush_packet_caches()
    }

    /// Puts the configuration's negative trust anchors (reloaded) in force, flushing the
    /// caches below each name added or removed.
    pub fn reload_config_negative_anchors(&self, names: Vec<hickory_proto::rr::Name>) -> bool {
        self.swap_anchors(&self.shared.validator.negative_anchors, names)
    }

    /// Puts the configuration's `[[zones]]` (read again on SIGHUP) in force beside the
    /// API's, or says why not (the running zones stay).
    pub fn reload_config_zones(&self, config: &[ZoneSpec]) -> Result<bool, ZoneError> {
        let table = self.check_zones(config, &self.shared.zones.load().specs().1)?;
        Ok(self.install_zones(table))
    }

    /// The table the configuration's zones `config` and the API's `api` make, checked
    /// against the upstream ACL in force, or why they cannot be.
    pub fn check_zones(&self, config: &[ZoneSpec], api: &[ZoneSpec]) -> Result<ZoneTable, ZoneError> {
        let table = ZoneTable::compile(config, api)?;
        let access = self.shared.access.load();
        table.check_servers(|ip| access.upstream_allowed(ip))?;
        Ok(table)
    }

    /// Puts a checked zone table in force: the insecure zones become negative trust
    /// anchors, the record cache at and below every zone added, removed or changed is
    /// flushed, and every packet cache whole (an answer may reach a changed zone through a
    /// CNAME). Resolutions that started under the old table may still store what it gave
    /// them, so the same flush runs again once the longest of them has ended. False when
    /// some worker did not confirm the flush in time.
    pub fn install_zones(&self, table: ZoneTable) -> bool {
        let old = self.shared.zones.load_full();
        let changed: Vec<hickory_proto::rr::Name> =
            old.names().into_iter().chain(table.names()).filter(|n| old.get(n) != table.get(n)).collect();
        self.shared.validator.zone_negative_anchors.store(Arc::new(table.insecure()));
        self.shared.zones.store(Arc::new(table));
        if changed.is_empty() {
            return true;
        }
        let done = self.flush_zones(&changed);
        let (again, wait) = (self.clone(), self.shared.settings.request_timeout);
        let _ = std::thread::Builder::new().name("adox-zone-flush".into()).spawn(move || {
            std::thread::sleep(wait);
            again.flush_zones(&changed);
        });
        done
    }

    /// Drops the record cache at and below each zone, and every packet cache.
    fn flush_zones(&self, zones: &[hickory_proto::rr::Name]) -> bool {
        for z in zones {
            self.shared.records.flush(Some(z), true);
        }
        self.flush_packet_caches()
    }

    /// Drops every worker's packet cache whole.
    fn flush_packet_caches(&self) -> bool {
        let tickets: Vec<u64> = self.workers.iter().map(|w| w.flush_packet_cache(None)).collect();
        self.flushed_within(&tickets)
    }

    /// Waits until every worker applied its flush request (true), or [`FLUSH_WAIT`].
    fn flushed_within(&self, tickets: &[u64]) -> bool {
        let deadline = std::time::Instant::now() + FLUSH_WAIT;
        loop {
            if self.workers.iter().zip(tickets).all(|(w, n)| w.flushed(*n)) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// The zones: from the configuration, and set through the API.
    pub fn zones(&self) -> (Vec<ZoneSpec>, Vec<ZoneSpec>) {
        self.shared.zones.load().specs().clone()
    }

    /// A reload's cache budgets and client shares: the record cache's (and its NSEC
    /// spans') here, each worker's packet cache and shares through its mailbox; a smaller
    /// budget evicts at once. False when a worker did not confirm within [`FLUSH_WAIT`].
    pub fn reload_caches_and_limits(&self, cfg: &Config) -> bool {
        let bytes = cfg.cache.record_cache_bytes;
        self.shared.records.set_budget(bytes as usize, cfg.dnssec.nsec_span_bytes(bytes));
        let live = crate::worker::LiveSettings {
            packet_cache_bytes: cfg.cache.packet_cache_bytes as usize,
            limits: cfg.limits.clone(),
        };
        let tickets: Vec<u64> = self.workers.iter().map(|w| w.set_live(live.clone())).collect();
        self.flushed_within(&tickets)
    }

    /// A reload's client query rates (`[limits]`, when changed): in force from the next
    /// query, their counts started over. An error changes nothing.
    pub fn reload_rates(&self, cfg: &Config) -> Result<(), StartError> {
        Ok(self.shared.admission.reload_rates(cfg)?)
    }

    /// The Response Policy Zones, when `[rpz]` lists any.
    pub fn rpz(&self) -> Option<&crate::rpz::Rpz> {
        self.shared.rpz.as_deref()
    }

    /// A reload's policy zone files, read again: how many loaded, or the first that did
    /// not (it keeps its running content).
    pub fn reload_rpz_files(&self) -> Result<usize, String> {
        match &self.shared.rpz {
            Some(r) => r.reload_files().map_err(|(i, e)| format!("rpz.zone[{i}].file: {e}")),
            None => Ok(0),
        }
    }

    /// A reload's `[cookies]` (the secret file read again): whether the secrets in force
    /// changed. An error changes nothing.
    pub fn reload_cookies(&self, cfg: &Config) -> Result<bool, StartError> {
        Ok(self.shared.admission.reload_cookies(cfg, crate::clock::unix_now())?)
    }

    /// `transport.ca_file` read again (a reload; absent: the built-in roots): upstream
    /// PKIX handshakes from now on are checked against these roots, and no TLS session
    /// made under the old ones is resumed. Connections already open keep going until they
    /// close. `Ok(false)` when they are the roots in force; an unreadable file changes
    /// nothing.
    pub fn reload_upstream_roots(&self, cfg: &Config) -> Result<bool, StartError> {
        let roots = match &cfg.transport.ca_file {
            Some(p) => crate::upstream::tls::roots_from_file(p)?,
            None => crate::upstream::tls::builtin_roots(),
        };
        Ok(self.pkix.replace(Arc::new(roots))?)
    }

    /// The root hints and the trust anchors read again (a reload), checked together and
    /// applied together (new hints under the old anchors, or the reverse, would make every
    /// answer bogus): when either changed it is in force at once (managed anchors start
    /// their RFC 5011 state afresh from a new seed) and every cache is flushed. Returns
    /// whether the hints and whether the anchors changed; an error, and nothing changed,
    /// when a file cannot be read or RFC 5011 maintenance would start or stop (that takes
    /// a restart).
    pub fn reload_root_and_anchors(&self, cfg: &Config) -> Result<(bool, bool), String> {
        let hints = match &cfg.resolver.root_hints {
            Some(p) => RootHints::load(p).map_err(|e| e.to_string())?,
            None => RootHints::builtin(),
        };
        let anchors = configured_anchors(cfg).map_err(|e| e.to_string())?;
        let managed_now = anchors.is_some() && cfg.dnssec.anchors_managed();
        if self.shared.managed.is_some() != managed_now {
            return Err("RFC 5011 maintenance would start or stop, which takes a restart: the root hints and the \
                        trust anchors stay as they are"
                .into());
        }
        let hints_changed = **self.shared.hints.load() != hints;
        if hints_changed {
            self.shared.hints.store(Arc::new(hints));
        }
        let anchors_changed = match (&self.shared.managed, anchors) {
            (Some(m), Some(seed)) => m.reseed(&seed, crate::clock::unix_now()),
            (_, anchors) => {
                let slot = &self.shared.validator.anchors;
                let changed = slot.load().as_deref() != anchors.as_ref();
                if changed {
                    slot.store(anchors.map(Arc::new));
                }
                changed
            }
        };
        if (hints_changed || anchors_changed) && !self.flush(&Flush::All) {
            tracing::warn!("a worker did not confirm the flush after new root hints or trust anchors");
        }
        Ok((hints_changed, anchors_changed))
    }

    /// The RFC 5011 state of the managed trust anchors (`None`: the anchors stand as
    /// configured).
    pub fn managed_anchors(&self) -> Option<crate::dnssec::managed::Summary> {
        self.shared.managed.as_ref().map(|m| m.summary())
    }

    /// The negative trust anchors: from the configuration, and set through the API.
    pub fn negative_anchors(&self) -> (Vec<hickory_proto::rr::Name>, Vec<hickory_proto::rr::Name>) {
        let v = &self.shared.validator;
        (v.negative_anchors.load().as_ref().clone(), v.runtime_negative_anchors.load().as_ref().clone())
    }

    /// Counters summed over workers.
    pub fn stats(&self) -> adox_api::StatsSnapshot {
        crate::stats::snapshot(&self.stats)
    }

    /// Each worker's counters, in worker order.
    pub fn worker_stats(&self) -> &[Arc<WorkerStats>] {
        &self.stats
    }

    /// The record cache's entries and bytes in use.
    pub fn record_cache_usage(&self) -> (usize, usize) {
        (self.shared.records.len(), self.shared.records.used_bytes())
    }

    /// The operator policy table the workers read (the control plane publishes into it).
    pub fn policy_store(&self) -> Arc<PolicyStore> {
        self.shared.policies.clone()
    }

    /// RTT and failure state per authoritative address: one address, or all.
    pub fn servers(&self, only: Option<IpAddr>) -> Vec<(IpAddr, crate::resolver::servers::ServerInfo)> {
        match only {
            Some(a) => self.shared.servers.find(a).map(|i| (a, i)).into_iter().collect(),
            None => self.shared.servers.entries(),
        }
    }

    /// RFC 9539 state per (address, encrypted transport): one address, or all.
    pub fn probe_records(&self, only: Option<IpAddr>) -> Vec<crate::upstream::probe::ProbeRecord> {
        match only {
            Some(a) => self.shared.probes.records_of(a),
            None => self.shared.probes.records(),
        }
    }

    /// Takes a probe result another node of the fleet learned (see
    /// [`crate::upstream::probe::ProbeTable::merge_shared`]).
    pub fn merge_shared_probe(&self, p: &crate::upstream::probe::SharedProbe, now: u64) -> bool {
        self.shared.probes.merge_shared(p, now)
    }

    /// The nameservers' known `_dns` signals at Unix second `now`.
    pub fn signals(&self, now: u64) -> Vec<(hickory_proto::rr::Name, crate::upstream::signal::Signal)> {
        self.shared.signals.entries(now)
    }

    /// Forgets what is known of one server (RTT, failures, probe state); true if anything
    /// was.
    pub fn forget_server(&self, addr: IpAddr) -> bool {
        let a = self.shared.servers.forget(addr);
        let b = self.shared.probes.forget(addr);
        a || b
    }

    /// What the record cache holds at `name` (one type, or the common ones), live or kept
    /// for serve-stale.
    pub fn cache_entries(
        &self,
        name: &hickory_proto::rr::Name,
        rtype: Option<u16>,
    ) -> Vec<crate::cache::records::Inspected> {
        self.shared.records.inspect(name, rtype, std::time::Instant::now())
    }

    /// Applies what of `cfg` can change while running (a reload): the client and upstream
    /// address policies, swapped at once for every worker (each check reads the policy in
    /// force at that moment). The resolver's own addresses are those it is bound to, not
    /// the new file's (listen addresses change only with a restart). `cfg` must be valid.
    pub fn reload_access(&self, cfg: &Config) -> Result<(), StartError> {
        let own = self.shared.access.load().own_addresses().to_vec();
        let policy = AccessPolicy::new(&cfg.client_prefixes()?, &cfg.upstream_prefixes()?).with_own_addresses(own);
        // A forward or stub zone whose servers the new ACL would forbid could never be
        // asked: the reload is refused rather than the zone silently broken.
        self.shared.zones.load().check_servers(|ip| policy.upstream_allowed(ip)).map_err(|e| {
            crate::config::ConfigError::Invalid { field: format!("zones{}", e.field), reason: e.reason }
        })?;
        self.shared.access.store(Arc::new(policy));
        Ok(())
    }

    /// How long one client query may take (`resolver.request_timeout_ms`).
    pub fn request_timeout(&self) -> std::time::Duration {
        self.shared.settings.request_timeout
    }

    /// Drops cached data: from the shared record cache at once, from every worker's
    /// packet cache at the worker's next loop turn. Blocks until every worker confirmed
    /// (true), or [`FLUSH_WAIT`] passed (false: a worker is stuck, which the caller
    /// reports). A packet-cache answer that reached `name` through a CNAME from another
    /// name is not dropped by a name flush (as in other resolvers): flush the zone or all.
    pub fn flush(&self, what: &Flush) -> bool {
        let (name, subtree) = match what {
            Flush::All => (None, true),
            Flush::Name(n) => (Some(crate::names::canonical(n)), false),
            Flush::Zone(z) => (Some(crate::names::canonical(z)), true),
        };
        self.shared.records.flush(name.as_ref(), subtree);
        let wire = name.map(|n| {
            let mut v = Vec::new();
            for label in n.iter() {
                v.push(label.len() as u8);
                v.extend(label.iter().map(u8::to_ascii_lowercase));
            }
            v.push(0);
            (v, subtree)
        });
        let tickets: Vec<u64> = self.workers.iter().map(|w| w.flush_packet_cache(wire.clone())).collect();
        self.flushed_within(&tickets)
    }

    /// Resolves `name` on a worker with the path recorded (the API's explain); `None` when
    /// no result came within `wait`.
    pub fn explain(
        &self,
        name: hickory_proto::rr::Name,
        qtype: hickory_proto::rr::RecordType,
        wait: std::time::Duration,
    ) -> Option<crate::respond::Explained> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        let worker = self.workers.get((h.finish() as usize) % self.workers.len().max(1))?;
        let (tx, rx) = std::sync::mpsc::channel();
        worker.explain(crate::worker::ExplainJob { name, qtype, reply: tx });
        rx.recv_timeout(wait).ok()
    }
}

/// File in the state directory holding the RFC 9539 probe table.
pub const PROBE_STATE_FILE: &str = "probes.json";

fn bind(addr: SocketAddr, ty: Type, proto: Protocol) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    s.set_reuse_port(true)?;
    // SO_REUSEADDR lets a listener bind over connections in TIME_WAIT. On a UDP socket it
    // would let any other user's SO_REUSEADDR socket share the port; SO_REUSEPORT (the
    // same user only) is all the workers and a restart need.
    if ty == Type::STREAM {
        s.set_reuse_address(true)?;
    }
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    if ty == Type::DGRAM {
        // Larger buffers ride out bursts; the kernel caps them at rmem_max/wmem_max.
        let _ = s.set_recv_buffer_size(4 << 20);
        let _ = s.set_send_buffer_size(4 << 20);
    }
    s.bind(&addr.into())?;
    if ty == Type::STREAM {
        s.listen(1024)?;
    }
    Ok(s)
}

/// A free port at `addr`'s address for a UDP socket (and a TCP listener too, with
/// `with_tcp`), found by plain sockets (no SO_REUSEPORT, no SO_REUSEADDR) closed again at
/// once. The kernel's choice of port 0 for a SO_REUSEPORT socket counts every port held
/// with SO_REUSEPORT by the same user as free, so another process could end up sharing
/// (and answering) this one's queries; a plain socket is given a port no one holds. The
/// caller binds the port it gets, and takes another if it was taken in between
/// (`AddrInUse`).
pub(crate) fn free_port(addr: SocketAddr, with_tcp: bool) -> std::io::Result<u16> {
    let plain = |ty: Type, proto: Protocol, port: u16| -> std::io::Result<Socket> {
        // `addr` with the port changed: an IPv6 scope (link-local) stays.
        let mut at = addr;
        at.set_port(port);
        let s = Socket::new(Domain::for_address(at), ty, Some(proto))?;
        if at.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.bind(&at.into())?;
        Ok(s)
    };
    let udp = plain(Type::DGRAM, Protocol::UDP, 0)?;
    let port = udp.local_addr()?.as_socket().map_or(0, |a| a.port());
    if port == 0 {
        return Err(std::io::Error::other("the kernel gave no port"));
    }
    if with_tcp {
        plain(Type::STREAM, Protocol::TCP, port)?;
    }
    Ok(port)
}

/// Whether a bind to a port [`free_port`] found failed because someone took the port in
/// between, and another may be tried (at most `MAX_PORT_TRIES` times).
pub(crate) fn port_taken_meanwhile(e: &std::io::Error, tries: u32) -> bool {
    e.kind() == std::io::ErrorKind::AddrInUse && tries < MAX_PORT_TRIES
}

/// Ports tried for one "any free port" listener before its bind error is reported.
const MAX_PORT_TRIES: u32 = 32;

/// Binds the UDP socket and TCP listener of one listen address. Port 0 means "any free
/// port": [`free_port`] picks one (a port taken before both sockets hold it is given up
/// and another tried); `addr` then holds the port for later workers.
fn bind_pair(addr: &mut SocketAddr) -> Result<(std::net::UdpSocket, std::net::TcpListener), StartError> {
    let any_port = addr.port() == 0;
    // One try: a free port when any will do, then UDP and TCP on it; a failure names
    // the protocol it is about.
    let attempt = |a: &mut SocketAddr| -> Result<(Socket, Socket), (&'static str, std::io::Error)> {
        if any_port {
            a.set_port(free_port(*a, true).map_err(|e| ("udp", e))?);
        }
        let u = bind(*a, Type::DGRAM, Protocol::UDP).map_err(|e| ("udp", e))?;
        let t = bind(*a, Type::STREAM, Protocol::TCP).map_err(|e| ("tcp", e))?;
        Ok((u, t))
    };
    let mut tries = 0;
    loop {
        let mut a = *addr;
        match attempt(&mut a) {
            Ok((u, t)) => {
                *addr = a;
                return Ok((u.into(), t.into()));
            }
            Err((_, e)) if any_port && port_taken_meanwhile(&e, tries) => tries += 1,
            Err((proto, source)) => return Err(StartError::Bind { addr: a, proto, source }),
        }
    }
}

/// The client and upstream address policy of a configuration.
fn access_policy(cfg: &Config) -> Result<AccessPolicy, StartError> {
    Ok(AccessPolicy::new(&cfg.client_prefixes()?, &cfg.upstream_prefixes()?)
        .with_own_addresses(cfg.listen_addrs()?.into_iter().filter(|a| a.port() == 53).map(|a| a.ip())))
}

/// Builds the shared state from a validated configuration.
pub fn shared_state(cfg: &Config) -> Result<Shared, StartError> {
    let hints = match &cfg.resolver.root_hints {
        Some(p) => RootHints::load(p)?,
        None => RootHints::builtin(),
    };
    let zones = cfg.zone_table()?;
    let access = access_policy(cfg)?;
    zones
        .check_servers(|ip| access.upstream_allowed(ip))
        .map_err(|e| crate::config::ConfigError::Invalid { field: format!("zones{}", e.field), reason: e.reason })?;
    let validator = validator_settings(cfg)?;
    validator.zone_negative_anchors.store(Arc::new(zones.insecure()));
    let managed = managed_anchors(cfg, &validator)?;
    Ok(Shared {
        managed,
        records: RecordCache::new(
            cfg.cache.record_cache_bytes as usize,
            cfg.cache.max_ttl_s,
            cfg.cache.max_negative_ttl_s,
        )
        .with_min_ttl(cfg.cache.min_ttl_s)
        .with_stale(if cfg.cache.serve_stale { cfg.cache.stale_max_s } else { 0 })
        .with_nsec_spans(cfg.dnssec.nsec_span_bytes(cfg.cache.record_cache_bytes)),
        servers: ServerTable::default(),
        hints: arc_swap::ArcSwap::from_pointee(hints),
        local: arc_swap::ArcSwap::from_pointee(LocalZones::new(&cfg.local_zones)),
        access: arc_swap::ArcSwap::from_pointee(access),
        admission: crate::admission::Admission::new(cfg, crate::clock::unix_now())?,
        dnstap: match cfg.dnstap.collector()? {
            Some(c) => Some(
                crate::dnstap::Dnstap::start(
                    c,
                    cfg.dnstap.types(),
                    cfg.dnstap.identity.clone(),
                    cfg.dnstap.buffer_bytes as usize,
                )
                .map_err(|e| crate::config::ConfigError::Invalid { field: "dnstap".into(), reason: e.to_string() })?,
            ),
            None => None,
        },
        rpz: crate::rpz::Rpz::start(&cfg.rpz)?,
        policies: Arc::new(PolicyStore::new(PolicyTable::compile(&cfg.policies()?).map_err(StartError::Policy)?)),
        signals: crate::upstream::signal::SignalCache::new(cfg.transport.session_cache_servers),
        validator,
        tlsa: Default::default(),
        probes: Arc::new(ProbeTable::new(
            cfg.transport.session_cache_servers,
            ProbeWindows {
                persistence: std::time::Duration::from_secs(cfg.transport.probe_persistence_s),
                damping: std::time::Duration::from_secs(cfg.transport.probe_damping_s),
            },
        )),
        zones: arc_swap::ArcSwap::from_pointee(zones),
        settings: Settings::from_config(cfg),
    })
}

/// DNSSEC settings: the anchors from `dnssec.trust_anchor_file`, else the built-in root
/// anchors unless custom root hints make them useless (then none: nothing validates, and
/// [`Config::dnssec_unanchored`] says so at start and in `/readyz`).
pub fn validator_settings(cfg: &Config) -> Result<crate::dnssec::ValidatorSettings, StartError> {
    let d = &cfg.dnssec;
    let anchors = configured_anchors(cfg)?;
    Ok(crate::dnssec::ValidatorSettings {
        enabled: d.validating(),
        anchors: Arc::new(arc_swap::ArcSwapOption::from(anchors.map(Arc::new))),
        negative_anchors: Arc::new(arc_swap::ArcSwap::from_pointee(d.negative_anchors()?)),
        runtime_negative_anchors: Default::default(),
        zone_negative_anchors: Default::default(),
        sha1: d.sha1_algorithms,
        nsec3_max_iterations: d.nsec3_max_iterations,
        max_sig_checks: d.max_sig_checks,
        max_nsec3_hashes: d.max_nsec3_hashes,
        bogus_ttl: d.bogus_ttl_s,
    })
}

/// The anchors `cfg` names: `dnssec.trust_anchor_file`'s, else the built-in root anchors
/// unless custom root hints make them useless (then none).
fn configured_anchors(cfg: &Config) -> Result<Option<crate::dnssec::TrustAnchors>, StartError> {
    Ok(match &cfg.dnssec.trust_anchor_file {
        Some(p) => {
            Some(crate::dnssec::TrustAnchors::from_file(&p.display().to_string()).map_err(StartError::TrustAnchor)?)
        }
        None if cfg.resolver.root_hints.is_some() => None,
        None => Some(crate::dnssec::TrustAnchors::built_in()),
    })
}

/// RFC 5011 maintenance of the anchors in `validator` when the configuration asks for it
/// ([`crate::config::DnssecConfig::anchors_managed`]), with the state saved in
/// `state_dir` loaded: a rollover learned before a restart holds after it. A damaged
/// state file stops the start (adox never guesses which keys to trust).
pub fn managed_anchors(
    cfg: &Config,
    validator: &crate::dnssec::ValidatorSettings,
) -> Result<Option<Arc<crate::dnssec::managed::ManagedAnchors>>, StartError> {
    let Some(seed) = validator.anchors.load_full() else { return Ok(None) };
    if !cfg.dnssec.anchors_managed() {
        return Ok(None);
    }
    let now = crate::clock::unix_now();
    let managed = crate::dnssec::managed::ManagedAnchors::new(
        &seed,
        cfg.dnssec.rfc5011_timers(),
        cfg.dnssec.sha1_algorithms,
        validator.anchors.clone(),
        now,
    );
    let path = cfg.server.state_dir.join(crate::dnssec::managed::MANAGED_STATE_FILE);
    match managed.load(&path, now) {
        Ok(true) => tracing::info!(path = %path.display(), "managed trust anchor state loaded (RFC 5011)"),
        Ok(false) => {}
        Err(e) => {
            return Err(StartError::TrustAnchor(format!(
                "{e} (remove the file to start again from the configured anchors)"
            )));
        }
    }
    Ok(Some(Arc::new(managed)))
}

/// The client configurations of the encrypted transports, one per ALPN.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// DoT (`dot`).
    pub dot: TlsConfigs,
    /// DoQ (`doq`).
    pub doq: TlsConfigs,
    /// DoH over HTTP/2 (`h2`).
    pub doh: TlsConfigs,
    /// The PKIX verifier the three share (replaced on a reload).
    pub pkix: Arc<crate::upstream::tls::PkixRoots>,
}

/// The DoT, DoQ and DoH client configurations: PKIX roots from `transport.ca_file` (or the
/// built-in web PKI set) and, per transport, one session store shared by every worker
/// (RFC 9539: resumption state is kept per transport).
pub fn tls_configs(cfg: &Config, tlsa: &Arc<crate::upstream::dane::TlsaTable>) -> Result<UpstreamTls, StartError> {
    let roots = Arc::new(match &cfg.transport.ca_file {
        Some(p) => crate::upstream::tls::roots_from_file(p)?,
        None => crate::upstream::tls::builtin_roots(),
    });
    let store = || Arc::new(SessionStore::new(cfg.transport.session_cache_servers));
    let (dot_store, doq_store, doh_store) = (store(), store(), store());
    let (dot_dane, doq_dane, doh_dane) = (store(), store(), store());
    // A changed TLSA RRset drops the sessions DANE authenticated under the old one, new
    // roots those of the other two kinds (they share a store).
    tlsa.attach_sessions(vec![dot_dane.clone(), doq_dane.clone(), doh_dane.clone()]);
    let pkix = Arc::new(crate::upstream::tls::PkixRoots::new(roots)?);
    pkix.attach_sessions(vec![dot_store.clone(), doq_store.clone(), doh_store.clone()]);
    let doh_proto = crate::upstream::dane::DOH_PROTO;
    Ok(UpstreamTls {
        dot: TlsConfigs::with_pkix(b"dot", pkix.clone(), dot_store, dot_dane, tlsa.clone(), "tcp")?,
        doq: TlsConfigs::with_pkix(b"doq", pkix.clone(), doq_store, doq_dane, tlsa.clone(), "quic")?,
        doh: TlsConfigs::with_pkix(b"h2", pkix.clone(), doh_store, doh_dane, tlsa.clone(), doh_proto)?,
        pkix,
    })
}

impl DataPlane {
    /// Validates the configuration, binds every socket and starts the workers, with the
    /// configuration's policies.
    pub fn start(cfg: &Config) -> Result<Self, StartError> {
        cfg.validate()?;
        Self::start_with_policies(cfg, &cfg.policies()?)
    }

    /// Starts with `policies` in force from the first query (the configuration's and those
    /// the control plane saved), so that a restart never runs a moment without them.
    pub fn start_with_policies(cfg: &Config, policies: &[adox_api::policy::Policy]) -> Result<Self, StartError> {
        Self::start_inheriting(cfg, policies, None)
    }

    /// [`Self::start_with_policies`], reading the listening sockets a running adoxd handed
    /// over (its listen addresses must be this configuration's) instead of binding.
    pub fn start_inheriting(
        cfg: &Config,
        policies: &[adox_api::policy::Policy],
        inherited: Option<crate::handover::Inherited>,
    ) -> Result<Self, StartError> {
        cfg.validate()?;
        let shared = Arc::new(shared_state(cfg)?);
        shared.policies.store(PolicyTable::compile(policies).map_err(StartError::Policy)?);
        let tls = tls_configs(cfg, &shared.tlsa)?;
        let state_path = cfg.server.state_dir.join(PROBE_STATE_FILE);
        match shared.probes.load(&state_path) {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, path = %state_path.display(), "probe state loaded"),
            // A damaged file loses only learned state: start afresh, and say so.
            Err(e) => tracing::warn!(error = %e, "probe state not loaded"),
        }
        let strict_path = cfg.server.state_dir.join(crate::upstream::strict_state::STRICT_STATE_FILE);
        match crate::upstream::strict_state::load(&shared.signals, &shared.tlsa, &strict_path, crate::clock::unix_now())
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(nameservers = n, path = %strict_path.display(), "strict signal state loaded"),
            Err(e) => tracing::warn!(error = %e, "strict signal state not loaded"),
        }
        let (v4, v6) = cfg.transport.outgoing_addrs()?;
        let outgoing = crate::worker::Outgoing { v4, v6 };
        outgoing.check().map_err(|(addr, source)| StartError::Outgoing { addr, source })?;
        let workers = cfg.worker_count();
        let listen_conf = cfg.listen_addrs()?;
        let mut listen = listen_conf.clone();
        // The sockets in groups of one per listen address: those of each worker the old
        // process started with, or those bound here, one group per worker. The groups
        // are what a later hand-over passes on, whatever the worker count now.
        let taking_over = inherited.is_some();
        let groups = match inherited {
            Some(inherited) => {
                if !crate::handover::same_listen(&listen, &inherited.listen) {
                    return Err(StartError::Takeover(format!(
                        "the running adoxd listens on {:?}, this configuration on {:?}: restart instead",
                        inherited.listen, listen
                    )));
                }
                listen = inherited.listen;
                inherited.workers
            }
            None => {
                let mut sockets = Vec::with_capacity(workers);
                for _ in 0..workers {
                    let mut udp = Vec::new();
                    let mut tcp = Vec::new();
                    for addr in listen.iter_mut() {
                        let (u, t) = bind_pair(addr)?;
                        udp.push(u);
                        tcp.push(t);
                    }
                    sockets.push((udp, tcp));
                }
                sockets
            }
        };
        let listening = groups
            .iter()
            .map(crate::handover::dup)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StartError::Takeover(format!("cannot keep copies of the listening sockets: {e}")))?;
        let sockets = spread(groups, workers).map_err(|e| StartError::Takeover(e.to_string()))?;
        // The program and sockets are made while this process still has its capabilities.
        // A takeover cannot share the interface's XDP program with the running adoxd.
        let (xdp, mut xdp_ports) = if cfg.xdp.enabled {
            if taking_over {
                return Err(StartError::Takeover("[xdp] is on: restart instead".into()));
            }
            let (program, ports) =
                crate::xdp::start(&cfg.xdp.interface, cfg.xdp.queues, &listen).map_err(StartError::Xdp)?;
            (Some(program), ports.into_iter().map(Some).collect())
        } else {
            (None, Vec::new())
        };
        // Every socket of the data plane is bound: root is no longer needed, and no worker
        // thread has started yet.
        if let Some(user) = &cfg.server.user {
            // adoxd's own state files that root owns (the policy store, opened before this;
            // an earlier run as root) become the user's, so a later start as that user
            // alone (`User=` in a unit) can write them.
            let hand_over = |uid, gid| {
                crate::state_file::hand_over(&cfg.server.state_dir, uid, gid);
                Ok(())
            };
            match crate::sys::drop_privileges(user, cfg.server.group.as_deref(), hand_over)
                .map_err(StartError::Privileges)?
            {
                crate::sys::PrivilegeDrop::Switched { uid, gid } => {
                    // Learned state is saved there from now on, as this user: a directory
                    // root made (or owns) would lose it silently.
                    let dir = &cfg.server.state_dir;
                    let probe = dir.join(format!(".adox-write-check-{}", std::process::id()));
                    std::fs::write(&probe, b"").and_then(|()| std::fs::remove_file(&probe)).map_err(|e| {
                        StartError::Privileges(format!(
                            "user {user:?} cannot write the state directory {}: {e} (make it theirs: chown {user} {})",
                            dir.display(),
                            dir.display()
                        ))
                    })?;
                    tracing::info!(user = %user, uid, gid, "switched from root; no capability kept");
                }
                crate::sys::PrivilegeDrop::AlreadyThatUser => {}
            }
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (router, mut inboxes) = crate::worker::handoff::Router::new(workers, cfg.transport.connections_per_server);
        let mut stats = Vec::new();
        let mut stops = Vec::new();
        let mut threads = Vec::new();
        for (index, (udp, tcp)) in sockets.into_iter().enumerate() {
            let ws = Arc::new(WorkerStats::default());
            let settings = WorkerSettings {
                index,
                edns_udp_size: cfg.resolver.edns_udp_size,
                udp_batch: cfg.server.udp_batch,
                overload_after: std::time::Duration::from_millis(cfg.server.overload_after_ms),
                packet_cache_bytes: cfg.cache.packet_cache_bytes as usize,
                prefetch_per_s: if cfg.cache.prefetch { cfg.cache.prefetch_max_per_s } else { 0 },
                max_resolutions: cfg.resolver.max_resolutions,
                limits: cfg.limits.clone(),
                tcp_max_connections: cfg.server.tcp_max_connections,
                tcp_max_pipelined: cfg.server.tcp_max_pipelined,
                tcp_idle_timeout: std::time::Duration::from_millis(cfg.server.tcp_idle_timeout_ms),
                tcp_max_connections_per_client: cfg.server.tcp_max_connections_per_client,
                tcp_message_timeout: std::time::Duration::from_millis(cfg.server.tcp_message_timeout_ms),
                tls: tls.clone(),
                doh_method: cfg.transport.doh_method,
                dot_timeout: std::time::Duration::from_millis(cfg.transport.dot_timeout_ms),
                dot_idle_timeout: std::time::Duration::from_millis(cfg.transport.dot_idle_timeout_ms),
                dot_max_outstanding: cfg.transport.dot_max_outstanding,
                outgoing,
                upstream_max_connections: cfg.transport.max_connections,
                router: router.clone(),
                inbox: inboxes.remove(0),
            };
            let pin = cfg.server.pin_workers;
            let shared = shared.clone();
            let ws2 = ws.clone();
            let xsk = xdp_ports.get_mut(index).and_then(Option::take);
            // The worker is built on its own thread (it holds Rc state); a channel reports
            // whether construction worked.
            let (tx, rx) = std::sync::mpsc::channel();
            let handle = std::thread::Builder::new()
                .name(format!("adox-worker-{index}"))
                .spawn(move || {
                    if pin && let Err(e) = crate::sys::pin_current_thread(index % cores) {
                        tracing::warn!(worker = index, error = %e, "could not pin worker to a core");
                    }
                    match Worker::new(settings, shared, ws2, udp, tcp, xsk) {
                        Ok((worker, stop)) => {
                            let _ = tx.send(Ok(stop));
                            // A worker that dies would leave its SO_REUSEPORT socket open and
                            // unread, silently dropping 1/N of clients: end the process
                            // instead, so the supervisor restarts it whole.
                            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run())) {
                                Ok(Ok(())) => {}
                                Ok(Err(e)) => {
                                    tracing::error!(worker = index, error = %e, "worker failed; aborting");
                                    std::process::abort();
                                }
                                Err(_) => {
                                    tracing::error!(worker = index, "worker panicked; aborting");
                                    std::process::abort();
                                }
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                })
                .map_err(|source| StartError::Worker { index, source })?;
            let stop = rx
                .recv()
                .map_err(|_| StartError::Worker {
                    index,
                    source: std::io::Error::other("worker thread died at start"),
                })?
                .map_err(|source| StartError::Worker { index, source })?;
            stats.push(ws);
            stops.push(stop);
            threads.push(handle);
        }
        let listening = Arc::new(std::sync::Mutex::new((listen.clone(), listening)));
        Ok(Self {
            shared,
            stats,
            local_addrs: listen,
            listen_conf,
            stops,
            threads,
            state_path,
            listening,
            pkix: tls.pkix,
            xdp,
        })
    }

    /// Counters summed over workers.
    pub fn stats(&self) -> adox_api::StatsSnapshot {
        crate::stats::snapshot(&self.stats)
    }

    /// Addresses actually bound (with the real port when 0 was asked).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The record cache's entries and bytes in use.
    pub fn record_cache_usage(&self) -> (usize, usize) {
        (self.shared.records.len(), self.shared.records.used_bytes())
    }

    /// A handle for the control plane.
    pub fn handle(&self) -> PlaneHandle {
        PlaneHandle {
            shared: self.shared.clone(),
            stats: self.stats.clone(),
            workers: self.stops.clone(),
            pkix: self.pkix.clone(),
        }
    }

    /// Saves learned state (the probe table and the strict signals) into the state
    /// directory, creating it if needed; atomic, so a crash never leaves a half-written
    /// file.
    pub fn save_state(&self) -> std::io::Result<()> {
        if let Some(dir) = self.state_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        self.shared.probes.save(&self.state_path)?;
        self.save_strict_state()?;
        self.save_managed_anchors()
    }

    /// Saves what changed since the last save (called often: a restart must find what was
    /// learned just before it): the strict signals, if one was learned or dropped, and the
    /// RFC 5011 anchor state, if a fetch of an anchored zone's keys changed it. When an
    /// anchored zone lost its last trusted key, every cache is flushed too (it holds data
    /// validated under that zone's keys).
    pub fn save_changed_state(&self) -> std::io::Result<()> {
        let strict = if self.shared.signals.take_strict_changed() {
            let saved = self.save_strict_state();
            if saved.is_err() {
                self.shared.signals.mark_strict_changed();
            }
            saved
        } else {
            Ok(())
        };
        let managed = match &self.shared.managed {
            Some(m) => {
                if m.take_zone_dropped() && !self.handle().flush(&Flush::All) {
                    tracing::warn!("a worker did not confirm the flush after a trust anchor was revoked");
                }
                if m.take_changed() {
                    let saved = self.save_managed_anchors();
                    if saved.is_err() {
                        m.mark_changed();
                    }
                    saved
                } else {
                    Ok(())
                }
            }
            None => Ok(()),
        };
        strict.and(managed)
    }

    fn save_managed_anchors(&self) -> std::io::Result<()> {
        let Some(m) = &self.shared.managed else { return Ok(()) };
        let dir = self.state_path.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir)?;
        m.save(&dir.join(crate::dnssec::managed::MANAGED_STATE_FILE))
    }

    fn save_strict_state(&self) -> std::io::Result<()> {
        self.shared.signals.purge_expired_strict(crate::clock::unix_now());
        let dir = self.state_path.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir)?;
        let path = dir.join(crate::upstream::strict_state::STRICT_STATE_FILE);
        crate::upstream::strict_state::save(&self.shared.signals, &self.shared.tlsa, &path, crate::clock::unix_now())
            .map(|_| ())
    }

    /// Serves hand-over requests at `path` (see [`crate::handover`]): once the state
    /// returned says `done`, a new adoxd has taken the sockets and is ready, and this one
    /// must [`Self::drain_and_stop`].
    pub fn serve_handover(&self, path: &std::path::Path) -> std::io::Result<Arc<crate::handover::Handover>> {
        crate::handover::serve(path, self.listening.clone())
    }

    /// The listen addresses of `cfg` (a reload): new ones are bound first, in every
    /// worker (as at start: one socket pair per group, SO_REUSEPORT) and read from then
    /// on; then the removed ones stop being read (a UDP socket closes once every query
    /// read from it can have had its answer; a TCP listener at once, its connections go
    /// on). The resolver's own addresses follow. `Ok(false)` when nothing changed; an
    /// address that cannot be bound changes nothing.
    pub fn reload_listen(&mut self, cfg: &Config) -> Result<bool, StartError> {
        let wanted = cfg.listen_addrs()?;
        // A listener stays when the new list names it as configured or as bound (an
        // `IP:0` that got port P, now written `IP:P`, or the reverse).
        let n = self.listen_conf.len();
        let named = |i: usize, w: &SocketAddr| same_listener(self.listen_conf[i], self.local_addrs[i], w);
        let added: Vec<SocketAddr> = wanted.iter().filter(|w| !(0..n).any(|i| named(i, w))).copied().collect();
        let removed: Vec<usize> = (0..n).filter(|i| !wanted.iter().any(|w| named(*i, w))).collect();
        if added.is_empty() && removed.is_empty() {
            if self.listen_conf != wanted {
                // The same listeners, written or ordered otherwise: kept in the new order (a
                // later takeover compares them in order).
                let listening = self.listening.clone();
                let mut set = listening.lock().unwrap_or_else(|p| p.into_inner());
                self.put_in_order(&wanted, &mut set);
                return Ok(true);
            }
            return Ok(false);
        }
        if self.xdp.is_some() {
            // The XDP program serves the addresses it was given at start.
            return Err(StartError::Xdp(std::io::Error::other(
                "[xdp] is on: a change of server.listen needs a restart",
            )));
        }
        let workers = self.stops.len();
        let listening = self.listening.clone();
        let mut set = listening.lock().unwrap_or_else(|p| p.into_inner());
        let groups = set.1.len();
        // Bind everything before anything changes: (bound address, sockets per group).
        let mut bound: Vec<(SocketAddr, Vec<(std::net::UdpSocket, std::net::TcpListener)>)> = Vec::new();
        for addr in &added {
            let mut at = *addr;
            let mut pairs = Vec::with_capacity(groups);
            for _ in 0..groups {
                pairs.push(bind_pair(&mut at)?);
            }
            bound.push((at, pairs));
        }
        // Worker w reads the groups j with j % workers == w, and a copy of group w % groups
        // when there are more workers than groups (as `spread` gave them out at start).
        let mut changes: Vec<Vec<crate::worker::ListenerChange>> = (0..workers).map(|_| Vec::new()).collect();
        for (at, pairs) in &bound {
            for (j, (u, t)) in pairs.iter().enumerate() {
                let mut to: Vec<usize> = vec![j % workers];
                to.extend((groups..workers).filter(|w| w % groups == j));
                for w in to {
                    let copy = |e| StartError::Bind { addr: *at, proto: "copy", source: e };
                    let (u, t) = (u.try_clone().map_err(copy)?, t.try_clone().map_err(copy)?);
                    changes[w].push(crate::worker::ListenerChange::Add(u, t));
                }
            }
        }
        for &i in &removed {
            for c in &mut changes {
                c.push(crate::worker::ListenerChange::Remove(self.local_addrs[i]));
            }
        }
        for (at, pairs) in bound {
            for (j, (u, t)) in pairs.into_iter().enumerate() {
                set.1[j].0.push(u);
                set.1[j].1.push(t);
            }
            self.local_addrs.push(at);
        }
        self.listen_conf.extend(added);
        for &i in removed.iter().rev() {
            for g in &mut set.1 {
                g.0.remove(i);
                g.1.remove(i);
            }
            self.local_addrs.remove(i);
            self.listen_conf.remove(i);
        }
        self.put_in_order(&wanted, &mut set);
        drop(set);
        let tickets: Vec<u64> = self.stops.iter().zip(changes).map(|(w, c)| w.change_listeners(c)).collect();
        if !self.handle().flushed_within(&tickets) {
            tracing::warn!("a worker did not confirm its new listeners in time; it takes them when it can");
        }
        // Never an upstream: the addresses this resolver serves on port 53 now.
        let own = self.local_addrs.iter().filter(|a| a.port() == 53).map(|a| a.ip());
        let access = self.shared.access.load().with_own_replaced(own);
        self.shared.access.store(Arc::new(access));
        Ok(true)
    }

    /// Puts the listeners (configured and bound addresses, and every group's sockets) in
    /// the order of `wanted`, which names each of them once; the configured form becomes
    /// `wanted`'s.
    fn put_in_order(
        &mut self,
        wanted: &[SocketAddr],
        set: &mut (Vec<SocketAddr>, Vec<crate::handover::WorkerSockets>),
    ) {
        fn pick<T>(v: Vec<T>, order: &[usize]) -> Vec<T> {
            let mut slots: Vec<Option<T>> = v.into_iter().map(Some).collect();
            order.iter().filter_map(|i| slots.get_mut(*i).and_then(Option::take)).collect()
        }
        let n = self.listen_conf.len();
        let order: Vec<usize> = wanted
            .iter()
            .filter_map(|w| (0..n).find(|i| same_listener(self.listen_conf[*i], self.local_addrs[*i], w)))
            .collect();
        let mut distinct = order.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if order.len() != n || distinct.len() != n {
            // Not one name per listener (cannot happen for a valid list): order kept.
            set.0 = self.local_addrs.clone();
            return;
        }
        self.local_addrs = pick(std::mem::take(&mut self.local_addrs), &order);
        self.listen_conf = wanted.to_vec();
        for g in &mut set.1 {
            g.0 = pick(std::mem::take(&mut g.0), &order);
            g.1 = pick(std::mem::take(&mut g.1), &order);
        }
        set.0 = self.local_addrs.clone();
    }

    /// After a hand-over: every worker stops reading, answers the clients still waiting
    /// on it, and stops; this waits for them.
    pub fn drain_and_stop(&mut self) {
        for s in &self.stops {
            s.drain();
        }
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        self.stop_dnstap();
    }

    /// Stops every worker and waits for them (the state stays readable afterwards).
    pub fn stop(&mut self) {
        for s in &self.stops {
            s.stop();
        }
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        self.stop_dnstap();
    }

    /// Writes out what the dnstap queue holds and closes the stream (STOP, FINISH).
    fn stop_dnstap(&self) {
        if let Some(d) = &self.shared.dnstap {
            d.shutdown();
        }
        if let Some(r) = &self.shared.rpz {
            r.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports held with SO_REUSEPORT by "another process" (the same user, which is all the
    /// kernel compares) are never handed out for port 0: before `free_port`, about one
    /// port-0 bind in 36 landed on one of 800 such ports, so 400 binds met one almost
    /// surely (the chance of none is about 1e-5).
    #[test]
    fn port_zero_never_joins_a_port_someone_else_holds_with_reuseport() {
        let at: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut others = Vec::new();
        let mut held = std::collections::HashSet::new();
        for _ in 0..800 {
            let s = bind(at, Type::DGRAM, Protocol::UDP).unwrap();
            held.insert(s.local_addr().unwrap().as_socket().unwrap().port());
            others.push(s);
        }
        for _ in 0..400 {
            let mut a = at;
            let (u, _t) = bind_pair(&mut a).unwrap();
            let port = u.local_addr().unwrap().port();
            assert_eq!(port, a.port());
            assert!(!held.contains(&port), "port {port} is another socket's");
        }
    }

    #[test]
    fn a_named_port_is_bound_as_given() {
        let mut a: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (u, t) = bind_pair(&mut a).unwrap();
        let mut again = a;
        // The same port again joins the group (this is how later workers bind it).
        let (u2, t2) = bind_pair(&mut again).unwrap();
        assert_eq!(again, a);
        assert_eq!(u2.local_addr().unwrap(), u.local_addr().unwrap());
        assert_eq!(t2.local_addr().unwrap(), t.local_addr().unwrap());
    }
}
