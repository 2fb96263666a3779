//! Fleet mode (`[fleet] backend = "etcd"`): the API's policies and negative trust anchors
//! live in one etcd cluster shared by every adoxd of a fleet, instead of each node's state
//! directory.
//!
//! - Writes (`writes`): the REST API's policy and negative-anchor changes become etcd
//!   transactions. Ids come from a counter key bumped in the same transaction; a selector
//!   key per policy keeps selectors unique across the fleet; a policy's ETag is its key's
//!   mod revision, and `If-Match` a compare on it, so two nodes' concurrent writers get
//!   412, never a lost update. A write answers once this node's watch has applied it (so a
//!   read on the same node sees it), or 503 after `etcd_timeout_ms`.
//! - Sync (`sync`): one thread (`adox-fleet`) loads the prefix, then watches it from the
//!   next revision and applies each change to the [`PolicyRegistry`] (which publishes it
//!   to the workers through the same `ArcSwap` as local mode) and the negative anchors to
//!   the data plane. It reconnects with backoff, resumes the watch from the last revision
//!   applied, and loads everything again when etcd compacted past it. What it applied is
//!   saved to the state directory (`fleet.json`) at most once a second, and read at start:
//!   a node that cannot reach etcd starts with the last state it saw and answers queries.
//!
//! Nothing on the query path waits on etcd: the workers read the published tables only.
//!
//! Keys under the prefix: `policies/<id>` (the policy's JSON), `selectors/<hex>` (the id
//! holding a selector), `next-policy-id`, `negative-anchors` (the list's JSON).

mod learned;
mod sync;
mod writes;

pub(crate) use writes::MAX_NEGATIVE_ANCHORS;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use adox_api::policy::Policy;
use adox_api::rest::FleetStatus;
use adox_dataplane::PlaneHandle;
use serde::{Deserialize, Serialize};

use crate::PolicyRegistry;

/// File in the state directory with the fleet state last applied.
pub const SNAPSHOT_FILE: &str = "fleet.json";

/// How to reach etcd (from `[fleet]`, files read).
#[derive(Clone)]
pub struct FleetSettings {
    /// Client URLs.
    pub endpoints: Vec<String>,
    /// Key prefix, without a trailing `/`.
    pub key_prefix: String,
    /// How long a write waits for etcd.
    pub timeout: Duration,
    /// CA certificate (PEM) for the members' certificates.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key (PEM).
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// etcd user and password.
    pub user: Option<(String, String)>,
    /// Where the applied state is saved.
    pub state_dir: PathBuf,
    /// `share_probes`: the probe windows (persistence, damping) in seconds, the leases
    /// of published successes and failures; `None`: probe results are not shared.
    pub probe_windows: Option<(u64, u64)>,
}

impl std::fmt::Debug for FleetSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetSettings")
            .field("endpoints", &self.endpoints)
            .field("key_prefix", &self.key_prefix)
            .field("tls", &self.ca_pem.is_some())
            .field("user", &self.user.as_ref().map(|u| &u.0))
            .finish_non_exhaustive()
    }
}

/// What `fleet.json` keeps: the state as of `revision`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format of this file.
    pub format: u32,
    /// The fleet's key prefix: a snapshot of another fleet is never served.
    #[serde(default)]
    pub key_prefix: String,
    /// The etcd revision the state is as of.
    pub revision: i64,
    /// The API's policies.
    pub policies: Vec<Policy>,
    /// The API's negative trust anchors.
    pub negative_anchors: Vec<String>,
}

impl Snapshot {
    /// Reads `fleet.json` from the state directory; `None` when there is none. A damaged
    /// file, or one of another fleet (`key_prefix`), is an error: adox never runs on half
    /// a state, nor on another fleet's policies.
    pub fn load(state_dir: &std::path::Path, key_prefix: &str) -> Result<Option<Self>, String> {
        let path = state_dir.join(SNAPSHOT_FILE);
        let snapshot: Self = match std::fs::read(&path) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|e| format!("{}: not a fleet snapshot: {e}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        if !snapshot.key_prefix.is_empty() && snapshot.key_prefix != key_prefix {
            return Err(format!(
                "{}: the state of the fleet at key prefix {:?}, not {key_prefix:?} (fleet.key_prefix changed?): \
                 remove the file to start from what etcd holds",
                path.display(),
                snapshot.key_prefix
            ));
        }
        Ok(Some(snapshot))
    }
}

/// Counters and the connection's state, for `/v1/fleet` and the metrics.
#[derive(Debug, Default)]
struct State {
    connected: bool,
    /// The revision through which changes are applied: a full load's, or the last event's.
    /// The watch resumes after it, and writers wait for it.
    event_revision: i64,
    /// What `/v1/fleet` shows: `event_revision`, or a progress report's revision (etcd says
    /// no change under the prefix came since), whichever is later. Display only: etcd 3.4
    /// can report progress ahead of events still queued (etcd#15220).
    applied_revision: i64,
    last_error: Option<String>,
    last_error_at: Option<SystemTime>,
    connected_since: Option<SystemTime>,
    full_loads: u64,
    watch_restarts: u64,
    events_applied: u64,
    writes_ok: u64,
    writes_failed: u64,
}

/// The fleet backend of one node.
pub struct Fleet {
    settings: FleetSettings,
    registry: Arc<PolicyRegistry>,
    plane: PlaneHandle,
    state: Mutex<State>,
    /// The revision applied, for writers waiting to see their change.
    applied: tokio::sync::watch::Sender<i64>,
    /// The client, once the sync thread made it (writes before that answer 503).
    client: Mutex<Option<etcd_client::Client>>,
    /// The sync thread's runtime: every etcd call runs there.
    runtime: Mutex<Option<tokio::runtime::Handle>>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Shared probe results (`share_probes`).
    learned: Mutex<learned::Learned>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Fleet {
    /// Starts the sync thread; `revision` is the snapshot's the registry was built from.
    pub fn start(
        settings: FleetSettings,
        registry: Arc<PolicyRegistry>,
        plane: PlaneHandle,
        revision: i64,
    ) -> std::io::Result<Arc<Self>> {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let fleet = Arc::new(Self {
            settings,
            registry,
            plane,
            state: Mutex::new(State { event_revision: revision, applied_revision: revision, ..State::default() }),
            applied: tokio::sync::watch::channel(revision).0,
            client: Mutex::new(None),
            runtime: Mutex::new(None),
            stop,
            thread: Mutex::new(None),
            learned: Mutex::new(learned::Learned::default()),
        });
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        *fleet.runtime.lock().unwrap_or_else(|p| p.into_inner()) = Some(runtime.handle().clone());
        let me = fleet.clone();
        let thread = std::thread::Builder::new().name("adox-fleet".into()).spawn(move || {
            runtime.block_on(sync::run(me, stop_rx));
        })?;
        *fleet.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
        Ok(fleet)
    }

    /// Stops the sync thread (the daemon's stop), saving what it applied.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The revision through which this node applied etcd's changes.
    pub fn event_revision(&self) -> i64 {
        self.state().event_revision
    }

    /// Whether the watch on etcd is up.
    pub fn connected(&self) -> bool {
        self.state().connected
    }

    /// `/v1/fleet`.
    pub fn status(&self) -> FleetStatus {
        // One lock at a time (a second guard of the same mutex in one expression would
        // wait for the first forever).
        let (probes_published, probes_taken) = {
            let l = self.learned.lock().unwrap_or_else(|e| e.into_inner());
            (l.published, l.taken)
        };
        let s = self.state();
        let unix =
            |t: Option<SystemTime>| t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map(|d| d.as_secs());
        FleetStatus {
            backend: "etcd".into(),
            endpoints: self.settings.endpoints.clone(),
            key_prefix: self.settings.key_prefix.clone(),
            connected: s.connected,
            connected_since_unix: unix(s.connected_since),
            applied_revision: s.applied_revision,
            policies: self.registry.api_policy_count(),
            negative_anchors: self.plane.negative_anchors().1.len(),
            last_error: s.last_error.clone(),
            last_error_unix: unix(s.last_error_at),
            full_loads: s.full_loads,
            watch_restarts: s.watch_restarts,
            events_applied: s.events_applied,
            writes_ok: s.writes_ok,
            writes_failed: s.writes_failed,
            probes_published,
            probes_taken,
        }
    }

    /// What `/readyz` adds: readiness stays about DNS service, this only informs.
    pub fn readiness_note(&self) -> Option<String> {
        let s = self.state();
        (!s.connected).then(|| {
            format!(
                "fleet: etcd not reachable ({}); serving the state as of revision {}, API writes refused",
                s.last_error.as_deref().unwrap_or("connecting"),
                s.applied_revision
            )
        })
    }

    fn note_error(&self, e: &str) {
        let mut s = self.state();
        s.last_error = Some(e.to_string());
        s.last_error_at = Some(SystemTime::now());
    }

    /// The client and the runtime to run a call on, or why there is none yet.
    fn client(&self) -> Result<(etcd_client::Client, tokio::runtime::Handle), String> {
        let c = self.client.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let r = self.runtime.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match (c, r) {
            (Some(c), Some(r)) => Ok((c, r)),
            _ => Err("not connected to etcd yet".into()),
        }
    }
}

/// The hex form of a selector, for its key.
fn selector_key(p: &Policy) -> String {
    let sel = crate::store::selector(p);
    let text = serde_json::to_string(&sel).unwrap_or_default();
    text.bytes().map(|b| format!("{b:02x}")).collect()
}
