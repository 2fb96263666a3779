//! Shared learned state (`[fleet] share_probes`): each node publishes its RFC 9539 probe
//! results under `learned/probes/<addr>/<transport>`, with an etcd lease as long as the
//! probe window (a success lasts `probe_persistence_s`, a failure `probe_damping_s`), and
//! takes the other nodes' results from its watch when they are newer than its own, so a
//! server one node probed is not probed again by the rest of the fleet.
//!
//! Bounded: at most [`PUBLISH_MAX`] results per round (every [`PUBLISH_EVERY`]), the
//! table of what etcd already holds at most [`KNOWN_MAX`] entries (then forgotten: the
//! worst is a result published twice), a record at most [`RECORD_MAX`] octets, and what a
//! record can do to the probe table is what a probe could (`ProbeTable::merge_shared`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use adox_api::policy::Transport;
use adox_dataplane::upstream::probe::{ProbeStatus, SharedProbe};
use etcd_client::{Client, PutOptions, Txn, TxnOp};

use super::Fleet;

/// How often this node's new results are published.
pub(super) const PUBLISH_EVERY: Duration = Duration::from_secs(2);
/// Results published per round at most (the rest wait for the next).
const PUBLISH_MAX: usize = 1000;
/// Puts per transaction (etcd allows 128 operations).
const PER_TXN: usize = 100;
/// Results remembered as already in etcd.
const KNOWN_MAX: usize = 1_000_000;
/// Largest record taken.
const RECORD_MAX: usize = 512;
/// A lease is reused this long at most (half its time to live if that is shorter).
const LEASE_REUSE: Duration = Duration::from_secs(600);

/// What the sync thread keeps about shared probe results.
#[derive(Debug, Default)]
pub(super) struct Learned {
    /// The newest result per (address, transport) that etcd holds (ours or theirs): its
    /// status and time.
    known: HashMap<(IpAddr, Transport), (ProbeStatus, u64)>,
    /// Leases for successes and failures, with when they were granted.
    leases: [Option<(i64, Instant)>; 2],
    pub(super) published: u64,
    pub(super) taken: u64,
}

fn now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn transport_name(t: Transport) -> String {
    format!("{t:?}").to_lowercase()
}

/// The key of one result.
fn key(prefix: &str, p: &SharedProbe) -> String {
    format!("{prefix}/learned/probes/{}/{}", p.addr, transport_name(p.transport))
}

impl Learned {
    fn remember(&mut self, p: &SharedProbe) {
        if self.known.len() >= KNOWN_MAX {
            self.known.clear();
        }
        let e = self.known.entry((p.addr, p.transport)).or_insert((p.status, p.at));
        if p.at >= e.1 {
            *e = (p.status, p.at);
        }
    }

    /// Whether etcd should hear of `p`: a new outcome, or the same one again once half its
    /// window has passed (its lease then still outlives it). Not every success: each
    /// encrypted query that works renews one.
    fn worth_publishing(&self, p: &SharedProbe, windows: (u64, u64)) -> bool {
        let window = if p.status == ProbeStatus::Success { windows.0 } else { windows.1 };
        match self.known.get(&(p.addr, p.transport)) {
            None => true,
            Some((status, at)) => (*status != p.status && p.at > *at) || p.at > at.saturating_add(window / 2),
        }
    }
}

/// Takes a record another node published (from the full load or the watch).
pub(super) fn take(fleet: &Fleet, value: &[u8]) {
    if value.len() > RECORD_MAX {
        return;
    }
    let Ok(p) = serde_json::from_slice::<SharedProbe>(value) else {
        tracing::debug!("fleet: a shared probe record in etcd is not valid; ignored");
        return;
    };
    let now = now();
    if p.at > now.saturating_add(60) {
        return; // From the future: neither taken nor remembered.
    }
    let mut l = fleet.learned.lock().unwrap_or_else(|e| e.into_inner());
    l.remember(&p);
    if fleet.plane.merge_shared_probe(&p, now) {
        l.taken += 1;
    }
}

/// Publishes the results this node learned since the last round; errors are the watch's
/// business (the next round tries again).
pub(super) async fn publish(fleet: &Fleet, client: &mut Client) -> Result<(), String> {
    let Some((persistence, damping)) = fleet.settings.probe_windows else { return Ok(()) };
    let plane = fleet.plane.clone();
    let records = tokio::task::spawn_blocking(move || plane.probe_records(None)).await.map_err(|e| e.to_string())?;
    let fresh: Vec<SharedProbe> = {
        let l = fleet.learned.lock().unwrap_or_else(|e| e.into_inner());
        records
            .iter()
            .filter_map(adox_dataplane::upstream::probe::ProbeRecord::shared)
            .filter(|p| l.worth_publishing(p, (persistence, damping)))
            .take(PUBLISH_MAX)
            .collect()
    };
    for chunk in fresh.chunks(PER_TXN) {
        let mut ops = Vec::with_capacity(chunk.len());
        for p in chunk {
            let success = p.status == ProbeStatus::Success;
            let lease =
                lease(fleet, client, usize::from(!success), if success { persistence } else { damping }).await?;
            let value = serde_json::to_vec(p).map_err(|e| e.to_string())?;
            ops.push(TxnOp::put(key(&fleet.settings.key_prefix, p), value, Some(PutOptions::new().with_lease(lease))));
        }
        if let Err(e) = client.txn(Txn::new().and_then(ops)).await {
            // A lease etcd no longer has (expired, or etcd restored): new ones next round.
            fleet.learned.lock().unwrap_or_else(|e| e.into_inner()).leases = [None, None];
            return Err(e.to_string());
        }
        let mut l = fleet.learned.lock().unwrap_or_else(|e| e.into_inner());
        for p in chunk {
            l.remember(p);
        }
        l.published += chunk.len() as u64;
    }
    Ok(())
}

/// The lease for successes (`kind` 0) or failures (1), granted anew every [`LEASE_REUSE`].
async fn lease(fleet: &Fleet, client: &mut Client, kind: usize, ttl_s: u64) -> Result<i64, String> {
    let ttl_s = ttl_s.max(60);
    // Reused for at most half its life, so a key put under it lives at least that long.
    let reuse = LEASE_REUSE.min(Duration::from_secs(ttl_s / 2));
    if let Some((id, at)) = fleet.learned.lock().unwrap_or_else(|e| e.into_inner()).leases[kind]
        && at.elapsed() < reuse
    {
        return Ok(id);
    }
    let ttl = i64::try_from(ttl_s).unwrap_or(i64::MAX);
    let id = client.lease_grant(ttl, None).await.map_err(|e| e.to_string())?.id();
    fleet.learned.lock().unwrap_or_else(|e| e.into_inner()).leases[kind] = Some((id, Instant::now()));
    Ok(id)
}
