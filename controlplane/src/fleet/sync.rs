//! The sync thread: load the prefix, watch it, apply each change, save what was applied;
//! reconnect with backoff, resume from the last revision, load again after a compaction.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use adox_api::policy::Policy;
use etcd_client::{Client, ConnectOptions, EventType, GetOptions, Identity, TlsOptions, WatchOptions};

use super::{Fleet, SNAPSHOT_FILE, Snapshot};
use crate::store::FleetChange;

/// Backoff between connection attempts: from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(10));
/// How often an idle watch asks etcd where it is (the applied revision then follows the
/// store's, so nodes that agree show the same one).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// The state directory's copy is written at most this often.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// How often a client that logs in as an etcd user logs in again (tokens last 300 s by
/// default, and the client does not renew them itself).
const TOKEN_REFRESH: Duration = Duration::from_secs(120);
/// Largest message etcd may send us (a full load of a large prefix).
const MAX_MESSAGE: usize = 256 << 20;

/// What one key under the prefix is.
enum Entry {
    Policy(String),
    NegativeAnchors,
    /// Another node's probe result (`share_probes`).
    Probe,
    Other,
}

fn entry(fleet: &Fleet, key: &[u8]) -> Entry {
    let Ok(key) = std::str::from_utf8(key) else { return Entry::Other };
    let Some(rest) = key.strip_prefix(fleet.settings.key_prefix.as_str()).and_then(|r| r.strip_prefix('/')) else {
        return Entry::Other;
    };
    if let Some(id) = rest.strip_prefix("policies/") {
        return Entry::Policy(id.to_string());
    }
    if rest == "negative-anchors" {
        return Entry::NegativeAnchors;
    }
    if rest.starts_with("learned/probes/") {
        return Entry::Probe;
    }
    Entry::Other
}

/// A policy as etcd holds it, checked as the API checks a body: its ETag is the key's mod
/// revision. `None` (with a warning) for a record that is not a valid policy.
fn policy_of(id: &str, value: &[u8], mod_revision: i64) -> Option<Policy> {
    let parsed: Result<Policy, String> =
        serde_json::from_slice::<Policy>(value).map_err(|e| e.to_string()).and_then(|p| {
            let mut n = p.spec().normalize(id.to_string(), false).map_err(|e| format!("{}: {}", e.field, e.reason))?;
            n.revision = u64::try_from(mod_revision).unwrap_or(0);
            Ok(n)
        });
    match parsed {
        Ok(p) if p.id == id => Some(p),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(%id, error = %e, "fleet: a policy record in etcd is not valid; ignored");
            None
        }
    }
}

/// The negative anchors in a record; `None` (with a warning) when it is not a valid list.
fn anchors_of(value: &[u8]) -> Option<Vec<hickory_proto::rr::Name>> {
    let list: adox_api::rest::NegativeAnchorsUpdate = match serde_json::from_slice(value) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "fleet: the negative-anchor record in etcd is not valid; ignored");
            return None;
        }
    };
    if list.anchors.len() > super::writes::MAX_NEGATIVE_ANCHORS {
        tracing::warn!(count = list.anchors.len(), "fleet: the negative-anchor record in etcd is too long; ignored");
        return None;
    }
    let mut names: Vec<hickory_proto::rr::Name> = Vec::with_capacity(list.anchors.len());
    let mut seen = std::collections::HashSet::new();
    for s in &list.anchors {
        let Ok(n) = hickory_proto::rr::Name::from_ascii(s) else {
            tracing::warn!("fleet: the negative-anchor record in etcd has a bad name; ignored");
            return None;
        };
        if seen.insert(n.to_lowercase()) {
            names.push(n);
        }
    }
    Some(names)
}

async fn connect(fleet: &Fleet) -> Result<Client, String> {
    let s = &fleet.settings;
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(s.timeout)
        .with_timeout(s.timeout)
        .with_keep_alive(Duration::from_secs(5), s.timeout)
        // A member cut off from the quorum ends our watch instead of keeping it silent.
        .with_require_leader(true);
    if let Some((user, password)) = &s.user {
        opts = opts.with_user(user.clone(), password.clone());
    }
    if s.ca_pem.is_some() || s.identity_pem.is_some() {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &s.ca_pem {
            tls = tls.ca_certificate(etcd_client::Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &s.identity_pem {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        opts = opts.with_tls(tls);
    }
    tokio::time::timeout(s.timeout, Client::connect(&s.endpoints, Some(opts)))
        .await
        .map_err(|_| "connecting to etcd timed out".to_string())?
        .map_err(|e| e.to_string())
}

/// Loads the whole prefix and replaces the node's state with it; the revision it is as of.
async fn full_load(fleet: &Fleet, client: &mut Client) -> Result<i64, String> {
    let prefix = format!("{}/", fleet.settings.key_prefix);
    let resp = tokio::time::timeout(
        fleet.settings.timeout.max(Duration::from_secs(30)),
        client.kv_client().max_decoding_message_size(MAX_MESSAGE).get(prefix, Some(GetOptions::new().with_prefix())),
    )
    .await
    .map_err(|_| "loading the fleet state timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let mut policies = Vec::new();
    // No record: none set. A bad one is ignored here as by the watch (the list stays).
    let mut anchors = Some(Vec::new());
    for kv in resp.kvs() {
        match entry(fleet, kv.key()) {
            Entry::Policy(id) => policies.extend(policy_of(&id, kv.value(), kv.mod_revision()).map(FleetChange::Put)),
            Entry::NegativeAnchors => anchors = anchors_of(kv.value()),
            Entry::Probe if fleet.settings.probe_windows.is_some() => super::learned::take(fleet, kv.value()),
            Entry::Probe | Entry::Other => {}
        }
    }
    let count = policies.len();
    let registry = fleet.registry.clone();
    tokio::task::spawn_blocking(move || registry.apply_fleet(true, policies)).await.map_err(|e| e.to_string())?;
    if let Some(a) = anchors {
        set_anchors(fleet, a).await;
    }
    {
        let mut s = fleet.state();
        s.full_loads += 1;
        s.event_revision = revision;
        s.applied_revision = revision;
    }
    fleet.applied.send_replace(revision);
    tracing::info!(revision, policies = count, "fleet: state loaded from etcd");
    Ok(revision)
}

/// Puts negative anchors in force off this thread: it flushes the caches below each
/// changed name, which can take a while on a large cache.
async fn set_anchors(fleet: &Fleet, names: Vec<hickory_proto::rr::Name>) {
    let plane = fleet.plane.clone();
    let _ = tokio::task::spawn_blocking(move || plane.set_negative_anchors(names)).await;
}

/// Saves the applied state to the state directory (atomically).
async fn save(fleet: &Arc<Fleet>) {
    let snapshot = Snapshot {
        format: 1,
        key_prefix: fleet.settings.key_prefix.clone(),
        revision: fleet.event_revision(),
        policies: fleet.registry.api_policies(),
        negative_anchors: fleet.plane.negative_anchors().1.iter().map(|n| n.to_ascii()).collect(),
    };
    let path = fleet.settings.state_dir.join(SNAPSHOT_FILE);
    let saved = tokio::task::spawn_blocking(move || {
        let body = serde_json::to_vec(&snapshot).map_err(std::io::Error::other)?;
        crate::store::write_atomic(&path, &body)
    })
    .await;
    if let Ok(Err(e)) = saved {
        tracing::warn!(error = %e, "fleet: could not save the fleet state to the state directory");
    }
}

/// How a watch ended.
enum WatchEnd {
    Stopped,
    /// etcd compacted past the revision we need, or went back: load everything again.
    Compacted,
    /// Time to log in again (etcd users' tokens expire, 5 minutes by default): a new
    /// client, and the watch resumes where it was.
    Refresh,
    Failed(String),
}

/// Watches the prefix from `from` (inclusive) and applies what it delivers.
async fn watch(
    fleet: &Arc<Fleet>,
    client: &mut Client,
    from: i64,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> WatchEnd {
    let prefix = format!("{}/", fleet.settings.key_prefix);
    let opts = WatchOptions::new().with_prefix().with_start_revision(from).with_progress_notify();
    let mut watcher = client.watch_client().max_decoding_message_size(MAX_MESSAGE);
    let mut stream = match tokio::time::timeout(fleet.settings.timeout, watcher.watch(prefix, Some(opts))).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return WatchEnd::Failed(e.to_string()),
        Err(_) => return WatchEnd::Failed("setting up the watch timed out".into()),
    };
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    // After a slow round (publishing), no burst of missed ticks ahead of waiting messages.
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut last_publish = Instant::now();
    let mut last_message = Instant::now();
    let mut dirty = false;
    let mut last_save = Instant::now();
    loop {
        let msg = tokio::select! {
            _ = stop.changed() => {
                if dirty { save(fleet).await; }
                return WatchEnd::Stopped;
            }
            _ = progress.tick() => {
                // A quiet watch on a member that lost its peers says nothing: ask, and
                // give up on it when no answer came for a while.
                if last_message.elapsed() > fleet.settings.timeout + PROGRESS_EVERY {
                    return WatchEnd::Failed("etcd stopped answering the watch".into());
                }
                if let Err(e) = stream.request_progress().await {
                    return WatchEnd::Failed(e.to_string());
                }
                if dirty && last_save.elapsed() >= SAVE_EVERY {
                    save(fleet).await;
                    dirty = false;
                    last_save = Instant::now();
                }
                if fleet.settings.probe_windows.is_some() && last_publish.elapsed() >= super::learned::PUBLISH_EVERY {
                    last_publish = Instant::now();
                    match tokio::time::timeout(fleet.settings.timeout, super::learned::publish(fleet, client)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::debug!(error = %e, "fleet: probe results not published; next round"),
                        Err(_) => tracing::debug!("fleet: publishing probe results timed out; next round"),
                    }
                }
                if fleet.settings.user.is_some() && started.elapsed() >= TOKEN_REFRESH {
                    if dirty { save(fleet).await; }
                    return WatchEnd::Refresh;
                }
                continue;
            }
            m = stream.message() => m,
        };
        let resp = match msg {
            Ok(Some(r)) => r,
            Ok(None) => return WatchEnd::Failed("etcd closed the watch".into()),
            Err(e) => return WatchEnd::Failed(e.to_string()),
        };
        last_message = Instant::now();
        if resp.compact_revision() > 0 {
            return WatchEnd::Compacted;
        }
        // etcd's revision behind ours: restored from a backup (revisions we wait for may
        // never come), or only a member a little behind the one the full load read from.
        // A quorum read tells them apart. (A created reply's header is not checked: it is
        // the serving member's.)
        if let Some(h) = resp.header()
            && !resp.created()
            && h.revision() < fleet.event_revision()
        {
            let key = format!("{}/next-policy-id", fleet.settings.key_prefix);
            let current = tokio::time::timeout(fleet.settings.timeout, client.get(key, None)).await;
            if let Ok(Ok(r)) = current
                && r.header().is_some_and(|h| h.revision() < fleet.event_revision())
            {
                tracing::warn!(
                    etcd = r.header().map_or(0, |h| h.revision()),
                    ours = fleet.event_revision(),
                    "fleet: etcd's revision went back (restored from a backup?); loading the whole state again"
                );
                return WatchEnd::Compacted;
            }
        }
        if resp.canceled() {
            return WatchEnd::Failed(format!("etcd cancelled the watch: {}", resp.cancel_reason()));
        }
        if resp.created() {
            let mut s = fleet.state();
            s.connected = true;
            s.connected_since = Some(SystemTime::now());
        }
        let mut changes = Vec::new();
        let mut anchors = None;
        // Whether fleet.json needs saving (shared probe results are not in it).
        let mut state_changed = false;
        let mut top = 0;
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            top = top.max(kv.mod_revision());
            let e = entry(fleet, kv.key());
            state_changed |= matches!(e, Entry::Policy(_) | Entry::NegativeAnchors);
            match (e, ev.event_type()) {
                // A record that is not a valid policy takes the place of the old one: gone.
                (Entry::Policy(id), EventType::Put) => changes.push(
                    policy_of(&id, kv.value(), kv.mod_revision()).map_or(FleetChange::Delete(id), FleetChange::Put),
                ),
                (Entry::Policy(id), EventType::Delete) => changes.push(FleetChange::Delete(id)),
                (Entry::NegativeAnchors, EventType::Put) => anchors = anchors_of(kv.value()).or(anchors),
                (Entry::NegativeAnchors, EventType::Delete) => anchors = Some(vec![]),
                (Entry::Probe, EventType::Put) if fleet.settings.probe_windows.is_some() => {
                    super::learned::take(fleet, kv.value());
                }
                (Entry::Probe | Entry::Other, _) => {}
            }
        }
        let events = resp.events().len() as u64;
        if !changes.is_empty() {
            let registry = fleet.registry.clone();
            if tokio::task::spawn_blocking(move || registry.apply_fleet(false, changes)).await.is_err() {
                return WatchEnd::Failed("applying a change failed".into());
            }
        }
        if let Some(a) = anchors {
            set_anchors(fleet, a).await;
        }
        let mut s = fleet.state();
        s.events_applied += events;
        if events > 0 && top > s.event_revision {
            // Applied through `top`: the watch resumes after it, writers waiting see it.
            s.event_revision = top;
            s.applied_revision = s.applied_revision.max(top);
            drop(s);
            fleet.applied.send_replace(top);
        } else if events == 0 && !resp.created() {
            // A progress report: nothing under the prefix changed up to its revision (the
            // created reply's header is etcd's current revision, not a promise: skipped).
            let progress = resp.header().map_or(0, |h| h.revision());
            s.applied_revision = s.applied_revision.max(progress);
        }
        dirty |= state_changed;
    }
}

/// The sync thread's body.
pub(super) async fn run(fleet: Arc<Fleet>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut backoff = BACKOFF.0;
    let mut need_load = true;
    let mut client: Option<Client> = None;
    while !*stop.borrow() {
        if client.is_none() {
            let connected = tokio::select! {
                r = connect(&fleet) => r,
                _ = stop.changed() => break,
            };
            match connected {
                Ok(c) => {
                    *fleet.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
                    client = Some(c);
                }
                Err(e) => {
                    fail(&fleet, &e, backoff, &mut stop).await;
                    backoff = (backoff * 2).min(BACKOFF.1);
                    continue;
                }
            }
        }
        let Some(c) = client.as_mut() else { continue };
        if need_load {
            let loaded = tokio::select! {
                r = full_load(&fleet, c) => r,
                _ = stop.changed() => break,
            };
            match loaded {
                Ok(_) => {
                    need_load = false;
                    save(&fleet).await;
                }
                Err(e) => {
                    fail(&fleet, &e, backoff, &mut stop).await;
                    backoff = (backoff * 2).min(BACKOFF.1);
                    client = None;
                    continue;
                }
            }
        }
        let from = fleet.event_revision() + 1;
        match watch(&fleet, c, from, &mut stop).await {
            WatchEnd::Stopped => break,
            WatchEnd::Compacted => {
                tracing::warn!(from, "fleet: etcd cannot replay from our revision; loading the whole state again");
                need_load = true;
                // Not a tight loop of full loads if etcd keeps saying so.
                tokio::select! {
                    _ = stop.changed() => {}
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF.1);
            }
            WatchEnd::Refresh => client = None,
            WatchEnd::Failed(e) => {
                let was_up = fleet.connected();
                fleet.state().watch_restarts += 1;
                if was_up {
                    backoff = BACKOFF.0;
                }
                fail(&fleet, &e, backoff, &mut stop).await;
                backoff = (backoff * 2).min(BACKOFF.1);
                // A new client: a new connection, and with etcd users a new token.
                client = None;
            }
        }
    }
    save(&fleet).await;
}

/// Records a failure and waits `backoff` (or until stopped).
async fn fail(fleet: &Fleet, e: &str, backoff: Duration, stop: &mut tokio::sync::watch::Receiver<bool>) {
    let (was_up, new_error) = {
        let mut s = fleet.state();
        (std::mem::replace(&mut s.connected, false), s.last_error.as_deref() != Some(e))
    };
    fleet.note_error(e);
    if was_up {
        tracing::warn!(error = %e, revision = fleet.event_revision(), "fleet: lost etcd; serving the state as of this revision");
    } else if new_error {
        // Each new reason once (a bad endpoint, certificate or password shows at start).
        tracing::warn!(error = %e, "fleet: etcd not reachable; retrying");
    } else {
        tracing::debug!(error = %e, "fleet: etcd not reachable");
    }
    tokio::select! {
        _ = stop.changed() => {}
        () = tokio::time::sleep(backoff) => {}
    }
}
