//! RFC 9539 unilateral probing: what adox remembers per (authoritative address, encrypted
//! transport), shared by all workers, saved to the state directory and loaded at start.
//!
//! - A server never tried, or whose failure is older than the damping window, is
//!   **probed**: the query still goes over Do53 (never delayed), and an encrypted
//!   connection is tried beside it.
//! - Within the persistence window of a success, queries to it go **encrypted only**; Do53
//!   comes back only after an encrypted failure.
//! - Within the damping window of a failure, it gets **Do53 only**: a server that does not
//!   speak the transport sees one failed probe per window (R4).
//! - At most `max_concurrent` probes run at once per worker.
//!
//! Operator overrides always win over this table (see the resolver's plan).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use adox_api::policy::Transport;
use serde::{Deserialize, Serialize};

use super::error::{TransportFailure, UpstreamError};
use crate::cache::clock::ClockCache;

const SHARDS: usize = 16;

/// The RFC 9539 state of one (address, transport), as saved in `probes.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeStatus {
    /// Never tried.
    Unknown,
    /// A probe is under way.
    Probing,
    /// The last attempt worked.
    Success,
    /// The last attempt failed (refused, TLS failure).
    Failed,
    /// The last attempt timed out.
    Timeout,
}

/// What is remembered per (address, transport). Times are Unix seconds, so that the state
/// survives a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRecord {
    /// The server address.
    pub addr: IpAddr,
    /// The encrypted transport.
    pub transport: Transport,
    /// Current status.
    pub status: ProbeStatus,
    /// Last success, Unix seconds.
    pub last_success: Option<u64>,
    /// Last failure, Unix seconds.
    pub last_failure: Option<u64>,
    /// Short reason of the last failure (`refused`, `handshake-closed`, ...).
    pub last_failure_reason: Option<String>,
    /// Handshakes that were not resumptions (DoQ: every handshake, since quinn does not
    /// say whether the session was resumed).
    #[serde(default)]
    pub handshakes_full: u64,
    /// TLS session resumptions (DoT).
    #[serde(default)]
    pub handshakes_resumed: u64,
    /// Connections open now, all workers together (filled in by `records`; not saved).
    #[serde(skip)]
    pub open_connections: u32,
}

/// A probe result as another node of a fleet learned it (fleet mode's shared learned
/// state): the outcome and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedProbe {
    /// The server address.
    pub addr: IpAddr,
    /// The encrypted transport.
    pub transport: Transport,
    /// `success`, `failed` or `timeout`.
    pub status: ProbeStatus,
    /// When, Unix seconds.
    pub at: u64,
    /// The failure's short reason.
    #[serde(default)]
    pub reason: Option<String>,
}

impl ProbeRecord {
    /// The result this record holds, for sharing: `None` while unknown or probing.
    pub fn shared(&self) -> Option<SharedProbe> {
        let at = match self.status {
            ProbeStatus::Success => self.last_success?,
            ProbeStatus::Failed | ProbeStatus::Timeout => self.last_failure?,
            ProbeStatus::Unknown | ProbeStatus::Probing => return None,
        };
        Some(SharedProbe {
            addr: self.addr,
            transport: self.transport,
            status: self.status,
            at,
            reason: self.last_failure_reason.clone().filter(|_| self.status != ProbeStatus::Success),
        })
    }
}

/// Longest failure reason taken from another node.
const SHARED_REASON_MAX: usize = 64;

/// What the table says to do for one (address, transport) now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeDecision {
    /// Known to work: use it, and only it.
    Use,
    /// Unknown or damping over: Do53 now, and probe beside it.
    Probe,
    /// Failed recently (or a probe is under way): Do53 only.
    Skip,
}

/// RFC 9539 windows.
#[derive(Debug, Clone, Copy)]
pub struct ProbeWindows {
    /// How long a success is trusted (E-persistence; default 3 days).
    pub persistence: Duration,
    /// How long a failure keeps the server on Do53 (E-damping; default 1 day).
    pub damping: Duration,
}

type Shard = ClockCache<(IpAddr, Transport), ProbeRecord>;

/// The shared table.
#[derive(Debug)]
pub struct ProbeTable {
    shards: Box<[Mutex<Shard>]>,
    windows: ProbeWindows,
    /// Connections open now per (address, transport); kept apart from the records, which
    /// may be evicted or reset while connections stay open. An entry goes at zero.
    open: Mutex<std::collections::HashMap<(IpAddr, Transport), u32>>,
}

impl ProbeTable {
    /// A table for about `servers` (address, transport) pairs.
    pub fn new(servers: usize, windows: ProbeWindows) -> Self {
        let per = servers.div_ceil(SHARDS).max(1) * (Shard::overhead() + 64);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(ClockCache::new(per))).collect(),
            windows,
            open: Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn shard(
        &self,
        key: &(IpAddr, Transport),
    ) -> std::sync::MutexGuard<'_, ClockCache<(IpAddr, Transport), ProbeRecord>> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        self.shards[(h.finish() as usize) % SHARDS].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, addr: IpAddr, transport: Transport, f: impl FnOnce(&mut ProbeRecord)) {
        let key = (addr, transport);
        let fresh = || ProbeRecord {
            addr,
            transport,
            status: ProbeStatus::Unknown,
            last_success: None,
            last_failure: None,
            last_failure_reason: None,
            handshakes_full: 0,
            handshakes_resumed: 0,
            open_connections: 0,
        };
        self.shard(&key).upsert(key, 32, fresh, f);
    }

    /// The record of one (address, transport), if any.
    pub fn get(&self, addr: IpAddr, transport: Transport) -> Option<ProbeRecord> {
        let key = (addr, transport);
        self.shard(&key).get(&key).cloned()
    }

    /// What to do now (`now`: Unix seconds).
    pub fn decide(&self, addr: IpAddr, transport: Transport, now: u64) -> ProbeDecision {
        let Some(r) = self.get(addr, transport) else { return ProbeDecision::Probe };
        let within = |t: Option<u64>, w: Duration| t.is_some_and(|t| now.saturating_sub(t) < w.as_secs());
        match r.status {
            ProbeStatus::Success if within(r.last_success, self.windows.persistence) => ProbeDecision::Use,
            ProbeStatus::Failed | ProbeStatus::Timeout if within(r.last_failure, self.windows.damping) => {
                ProbeDecision::Skip
            }
            // A probe under way for longer than a minute was lost (worker restart): retry.
            ProbeStatus::Probing if within(r.last_failure.max(r.last_success), Duration::from_secs(60)) => {
                ProbeDecision::Skip
            }
            _ => ProbeDecision::Probe,
        }
    }

    /// Marks a probe as started; false when one is already under way (only one at a time
    /// per server and transport, across workers).
    pub fn start_probe(&self, addr: IpAddr, transport: Transport, now: u64) -> bool {
        let mut started = false;
        self.update(addr, transport, |r| {
            if r.status != ProbeStatus::Probing
                || r.last_failure.max(r.last_success).is_none_or(|t| now.saturating_sub(t) >= 60)
            {
                r.status = ProbeStatus::Probing;
                // The probe's start time rides in last_failure until it ends.
                r.last_failure = Some(now);
                started = true;
            }
        });
        started
    }

    /// Records a working encrypted exchange (probe or query).
    pub fn success(&self, addr: IpAddr, transport: Transport, now: u64) {
        self.update(addr, transport, |r| {
            if r.status == ProbeStatus::Probing {
                r.last_failure = None;
            }
            r.status = ProbeStatus::Success;
            r.last_success = Some(now);
        });
    }

    /// Counts a connection whose handshake finished; `resumed` when the TLS session was
    /// resumed.
    pub fn connection_opened(&self, addr: IpAddr, transport: Transport, resumed: bool) {
        self.update(addr, transport, |r| {
            if resumed {
                r.handshakes_resumed += 1;
            } else {
                r.handshakes_full += 1;
            }
        });
        *self.open.lock().unwrap_or_else(|p| p.into_inner()).entry((addr, transport)).or_default() += 1;
    }

    /// Counts the end of a connection [`ProbeTable::connection_opened`] counted.
    pub fn connection_closed(&self, addr: IpAddr, transport: Transport) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&(addr, transport)) {
            *n -= 1;
            if *n == 0 {
                open.remove(&(addr, transport));
            }
        }
    }

    /// Records a failed encrypted exchange.
    pub fn failure(&self, addr: IpAddr, transport: Transport, now: u64, error: &UpstreamError) {
        let timed_out =
            matches!(error, UpstreamError::Timeout | UpstreamError::Transport(TransportFailure::QuicTimeout));
        self.update(addr, transport, |r| {
            r.status = if timed_out { ProbeStatus::Timeout } else { ProbeStatus::Failed };
            r.last_failure = Some(now);
            r.last_failure_reason = Some(error.reason());
        });
    }

    /// Takes another node's result where this node would probe now (nothing known, or
    /// what it saw itself is out of its window) and the result is newer than what it
    /// knows; false when it was not taken. What this node saw itself within its window
    /// stands (so one node's blocked path cannot switch the others, and two nodes' results
    /// cannot chase each other). A result from the future (beyond a minute of clock skew
    /// at `now`) or without an outcome is refused.
    pub fn merge_shared(&self, p: &SharedProbe, now: u64) -> bool {
        if p.at > now.saturating_add(60)
            || !matches!(p.status, ProbeStatus::Success | ProbeStatus::Failed | ProbeStatus::Timeout)
            || self.decide(p.addr, p.transport, now) != ProbeDecision::Probe
        {
            return false;
        }
        let mut taken = false;
        self.update(p.addr, p.transport, |r| {
            let known = r.last_success.max(r.last_failure).unwrap_or(0);
            if r.status == ProbeStatus::Probing || p.at <= known {
                return;
            }
            r.status = p.status;
            if p.status == ProbeStatus::Success {
                r.last_success = Some(p.at);
            } else {
                r.last_failure = Some(p.at);
                r.last_failure_reason =
                    Some(p.reason.as_deref().unwrap_or("shared").chars().take(SHARED_REASON_MAX).collect());
            }
            taken = true;
        });
        taken
    }

    /// Every record (for the API and for saving), with its open connections.
    pub fn records(&self) -> Vec<ProbeRecord> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
            s.retain(|_, r| {
                out.push(r.clone());
                true
            });
        }
        self.with_open_counts(out)
    }

    /// The records of one address (each encrypted transport), with open connections.
    pub fn records_of(&self, addr: IpAddr) -> Vec<ProbeRecord> {
        let out =
            [Transport::Doq, Transport::Dot, Transport::Doh].into_iter().filter_map(|t| self.get(addr, t)).collect();
        self.with_open_counts(out)
    }

    fn with_open_counts(&self, mut records: Vec<ProbeRecord>) -> Vec<ProbeRecord> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for r in &mut records {
            r.open_connections = open.get(&(r.addr, r.transport)).copied().unwrap_or(0);
        }
        records
    }

    /// Forgets every transport of `addr` (an operator's reset): it is probed afresh.
    /// True when something was known.
    pub fn forget(&self, addr: IpAddr) -> bool {
        let mut found = false;
        for t in [Transport::Doq, Transport::Dot, Transport::Doh] {
            let key = (addr, t);
            found |= self.shard(&key).remove(&key).is_some();
        }
        found
    }

    /// Saves the table atomically: written to a temporary file, synced, renamed over
    /// `path`, so a crash leaves either the old file or the new one, never half of one.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut records = self.records();
        // A probe under way is not a result: it is saved as the state before it.
        records.retain(|r| r.status != ProbeStatus::Probing);
        let text = serde_json::to_string(&records).map_err(std::io::Error::other)?;
        crate::state_file::write_atomic(path, text.as_bytes())
    }

    /// Loads a saved table; a missing file is an empty table, a damaged one an error.
    pub fn load(&self, path: &Path) -> std::io::Result<usize> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let records: Vec<ProbeRecord> = serde_json::from_str(&text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
        let n = records.len();
        for r in records {
            let key = (r.addr, r.transport);
            self.shard(&key).insert(key, r, 32);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> ProbeTable {
        ProbeTable::new(
            1000,
            ProbeWindows { persistence: Duration::from_secs(259_200), damping: Duration::from_secs(86_400) },
        )
    }

    #[test]
    fn open_connections_survive_a_reset_of_the_record() {
        let t = table();
        let a = ip("192.0.2.1");
        t.connection_opened(a, Transport::Dot, false);
        t.connection_opened(a, Transport::Dot, true);
        let r = t.get(a, Transport::Dot).unwrap();
        assert_eq!((r.handshakes_full, r.handshakes_resumed), (1, 1));
        assert_eq!(t.records()[0].open_connections, 2);
        assert!(t.forget(a), "an operator's reset");
        t.connection_opened(a, Transport::Dot, true);
        assert_eq!(t.records()[0].open_connections, 3, "the two older connections are still open");
        for _ in 0..3 {
            t.connection_closed(a, Transport::Dot);
        }
        t.connection_closed(a, Transport::Dot);
        assert_eq!(t.records()[0].open_connections, 0, "no drift, no underflow");
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_shared_result_is_taken_only_where_this_node_would_probe() {
        let t = table();
        let a = ip("192.0.2.7");
        let ok =
            SharedProbe { addr: a, transport: Transport::Dot, status: ProbeStatus::Success, at: 1000, reason: None };
        assert!(t.merge_shared(&ok, 1000), "nothing known here");
        assert_eq!(t.decide(a, Transport::Dot, 1001), ProbeDecision::Use, "another node's success spares the probe");
        let fail = SharedProbe { status: ProbeStatus::Timeout, at: 1100, ..ok.clone() };
        assert!(!t.merge_shared(&fail, 1200), "what this node knows within its window stands");
        assert_eq!(t.decide(a, Transport::Dot, 1201), ProbeDecision::Use);
        // Our own failure, within the damping window, is not undone by another's success.
        t.failure(a, Transport::Dot, 1300, &UpstreamError::Timeout);
        assert!(!t.merge_shared(&SharedProbe { at: 1400, ..ok.clone() }, 1400));
        // Out of the window (a day later) this node would probe: a newer result is taken.
        let later = 1300 + 86_400 + 10;
        assert!(!t.merge_shared(&SharedProbe { at: 1200, ..ok.clone() }, later), "older than what is known");
        assert!(!t.merge_shared(&SharedProbe { at: later + 3600, ..ok.clone() }, later), "from the future");
        assert!(t.merge_shared(&SharedProbe { at: later, ..ok.clone() }, later));
        let b = ip("192.0.2.8");
        assert!(t.start_probe(b, Transport::Doq, 1200));
        assert!(
            !t.merge_shared(&SharedProbe { addr: b, transport: Transport::Doq, ..ok.clone() }, 1200),
            "our probe runs"
        );
        let bad = SharedProbe { addr: b, status: ProbeStatus::Probing, ..ok };
        assert!(!t.merge_shared(&bad, 1200), "no outcome");
        let long = SharedProbe {
            addr: b,
            transport: Transport::Dot,
            status: ProbeStatus::Failed,
            at: 1200,
            reason: Some("x".repeat(500)),
        };
        assert!(t.merge_shared(&long, 1200));
        assert_eq!(t.get(b, Transport::Dot).unwrap().last_failure_reason.unwrap().len(), SHARED_REASON_MAX);
        assert_eq!(t.decide(b, Transport::Dot, 1201), ProbeDecision::Skip, "a shared failure damps here too");
    }

    #[test]
    fn rfc9539_windows() {
        let t = table();
        let a = ip("192.0.2.1");
        assert_eq!(t.decide(a, Transport::Dot, 1000), ProbeDecision::Probe, "unknown: probe");
        assert!(t.start_probe(a, Transport::Dot, 1000));
        assert!(!t.start_probe(a, Transport::Dot, 1001), "one probe at a time");
        assert_eq!(t.decide(a, Transport::Dot, 1001), ProbeDecision::Skip, "probe under way");
        t.success(a, Transport::Dot, 1002);
        assert_eq!(t.decide(a, Transport::Dot, 1002 + 259_199), ProbeDecision::Use, "within persistence");
        assert_eq!(t.decide(a, Transport::Dot, 1002 + 259_200), ProbeDecision::Probe, "persistence over");
        t.failure(a, Transport::Dot, 5000, &UpstreamError::Refused);
        assert_eq!(t.decide(a, Transport::Dot, 5000 + 86_399), ProbeDecision::Skip, "within damping");
        assert_eq!(t.decide(a, Transport::Dot, 5000 + 86_400), ProbeDecision::Probe, "damping over");
        t.failure(a, Transport::Dot, 9000, &UpstreamError::Timeout);
        assert_eq!(t.get(a, Transport::Dot).unwrap().status, ProbeStatus::Timeout);
        assert_eq!(t.decide(ip("192.0.2.2"), Transport::Dot, 9000), ProbeDecision::Probe);
    }

    #[test]
    fn save_and_load_round_trip_atomically() {
        let dir = std::env::temp_dir().join(format!("adox-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("probes.json");
        let t = table();
        t.success(ip("192.0.2.1"), Transport::Dot, 100);
        t.failure(ip("2001:db8::1"), Transport::Dot, 200, &TransportFailure::HandshakeClosed.into());
        assert!(t.start_probe(ip("192.0.2.9"), Transport::Dot, 300));
        t.save(&path).unwrap();
        assert!(!dir.join("probes.json.tmp").exists());
        let u = table();
        assert_eq!(u.load(&path).unwrap(), 2, "a probe under way is not saved");
        assert_eq!(u.get(ip("192.0.2.1"), Transport::Dot).unwrap().status, ProbeStatus::Success);
        assert_eq!(
            u.get(ip("2001:db8::1"), Transport::Dot).unwrap().last_failure_reason.as_deref(),
            Some("handshake-closed")
        );
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(u.load(&path).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(table().load(&dir.join("missing.json")).unwrap(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
