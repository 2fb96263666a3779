//! RFC 5011: trust anchors that follow their zone's key rollovers. The built-in root
//! anchors (and an anchor file set as managed) only seed the state; from then on each
//! anchored zone's DNSKEY RRset is fetched again at the interval of section 2.3 and, when
//! a key the resolver already trusts signs it:
//!
//! - a new SEP key is pending (AddPend) until it has been seen for the add hold-down
//!   (section 2.4.1: 30 days, or the RRset's original TTL if longer), then trusted (Valid);
//!   one that disappears meanwhile is forgotten;
//! - a trusted key that disappears is Missing, and still trusted (section 4, event 7);
//! - a trusted key published with the REVOKE bit and signing the RRset itself (section
//!   2.1) is Revoked at once, trusted no more, and forgotten after the remove hold-down.
//!
//! The first fetch comes `min_refresh` after the start (an hour by default; the seed
//! anchors validate meanwhile), so a resolver started and stopped again sends nothing.
//! A seed DS vouches only for the first fetch: the keys it matches then are Valid, and
//! the zone is anchored by its keys from then on. A zone whose keys are all revoked has
//! no anchor any more (its names are insecure, as in Unbound), and that is logged as an
//! error. The state goes to `state_dir` ([`MANAGED_STATE_FILE`]) whenever it changes and
//! is read at start, so a rollover learned before a restart holds after it; a different
//! seed (the operator changed the anchors) starts afresh from that seed.
//!
//! Bounds: at most [`MAX_KEYS`] keys tracked per zone (more new keys wait for a slot),
//! at most [`MAX_REVOCATIONS`] revocation checks and the usual signature allowance per
//! fetch, and never a fetch more often than `min_refresh` seconds.

use std::cell::Cell;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde::{Deserialize, Serialize};

use super::anchors::{Anchor, Source, TrustAnchors, vouched_keys};
use super::rdata::{Dnskey, Rrsig};
use super::verify::{verify_revocation, verify_rrset};

/// The file, in `state_dir`.
pub const MANAGED_STATE_FILE: &str = "managed-anchors.json";
/// Keys tracked per zone at most (a root zone has two or three).
pub const MAX_KEYS: usize = 32;
/// Revoked keys checked per fetch at most.
pub const MAX_REVOCATIONS: usize = 8;
/// Signature checks one fetch may make.
const SIG_CHECKS: u32 = 64;
/// A larger state file is not read (what [`MAX_KEYS`] allows is far smaller).
const MAX_FILE_BYTES: u64 = 1 << 20;
/// A fetch not reported back after this long is given up (it is started again).
const FETCH_ABANDONED_S: u64 = 120;

/// The timers (seconds): RFC 5011's 30-day hold-downs, and the floor of the refresh and
/// retry intervals of section 2.3 (one hour there); shorter only for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Add hold-down.
    pub add_holddown: u64,
    /// Remove hold-down.
    pub remove_holddown: u64,
    /// The least time between two fetches of one zone's keys.
    pub min_refresh: u64,
}

impl Default for Timers {
    fn default() -> Self {
        Self { add_holddown: 30 * 86_400, remove_holddown: 30 * 86_400, min_refresh: 3_600 }
    }
}

/// A tracked key's state (RFC 5011 section 4; Start and Removed are not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Seen in a trusted RRset, waiting out the add hold-down.
    AddPend,
    /// A trust anchor.
    Valid,
    /// A trust anchor no longer in the RRset.
    Missing,
    /// Revoked by its owner: not trusted, remembered until the remove hold-down ends.
    Revoked,
}

impl KeyState {
    /// Whether the key anchors its zone.
    pub fn trusted(self) -> bool {
        matches!(self, Self::Valid | Self::Missing)
    }

    /// The name used in the state file and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AddPend => "addpend",
            Self::Valid => "valid",
            Self::Missing => "missing",
            Self::Revoked => "revoked",
        }
    }
}

/// One tracked key (the REVOKE bit clear: as it was trusted).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tracked {
    key: Dnskey,
    state: KeyState,
    /// When it entered its state.
    since: u64,
    /// AddPend: trusted from then on; Revoked: forgotten from then on.
    until: u64,
}

/// One anchored zone (a trust point).
#[derive(Debug, Clone)]
struct Point {
    zone: Name,
    /// The configured anchor: used until the first trusted fetch.
    seed: Anchor,
    /// Whether a fetch has turned the seed into tracked keys.
    initialized: bool,
    keys: Vec<Tracked>,
    next_fetch: u64,
    /// A fetch under way since then.
    fetching: Option<u64>,
    /// The last trusted RRset's original TTL and signature expiry (for the retry time).
    last_ttl: Option<u64>,
    last_expiry: Option<u64>,
    last_success: Option<u64>,
}

/// What one fetch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// A key the trusted RRset signed with.
    pub validated: bool,
    /// (key tag, new state) of each key whose state changed; `None`: forgotten.
    pub changes: Vec<(u16, Option<KeyState>)>,
    /// Seconds until the next fetch.
    pub next_in: u64,
}

/// One zone's state, for `/metrics` and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointView {
    /// The zone.
    pub zone: Name,
    /// (key tag, state) of each tracked key; empty before the first trusted fetch.
    pub keys: Vec<(u16, KeyState)>,
    /// When its keys are fetched next (Unix seconds).
    pub next_fetch: u64,
    /// When a fetch last succeeded.
    pub last_success: Option<u64>,
}

/// Every zone's state and the fetches so far, for `/v1/stats` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Each anchored zone.
    pub points: Vec<PointView>,
    /// Fetches that a trusted key signed.
    pub fetches_ok: u64,
    /// Fetches that failed or that no trusted key signed.
    pub fetches_failed: u64,
}

/// The managed trust anchors of a running resolver.
#[derive(Debug)]
pub struct ManagedAnchors {
    timers: Timers,
    sha1: bool,
    points: Mutex<Vec<Point>>,
    /// A digest of the seed anchors (kept in the state file), and where they came from.
    /// Locked after `points` when both are.
    seed: Mutex<(String, Source)>,
    /// The anchors in force, read by every validation.
    published: std::sync::Arc<arc_swap::ArcSwapOption<TrustAnchors>>,
    /// The state changed since the last save.
    changed: AtomicBool,
    /// An anchored zone lost its last trusted key (the caches hold data validated under it).
    zone_dropped: AtomicBool,
    /// Fetches that validated, and fetches that failed or did not validate.
    fetches_ok: AtomicU64,
    /// See `fetches_ok`.
    fetches_failed: AtomicU64,
}

impl ManagedAnchors {
    /// Manages `seed` (every zone in it) and publishes it into `published` at once.
    pub fn new(
        seed: &TrustAnchors,
        timers: Timers,
        sha1: bool,
        published: std::sync::Arc<arc_swap::ArcSwapOption<TrustAnchors>>,
        now: u64,
    ) -> Self {
        let m = Self {
            timers,
            sha1,
            points: Mutex::new(points_of(seed, now + timers.min_refresh)),
            seed: Mutex::new((seed_digest(seed), seed.source.clone())),
            published,
            changed: AtomicBool::new(false),
            zone_dropped: AtomicBool::new(false),
            fetches_ok: AtomicU64::new(0),
            fetches_failed: AtomicU64::new(0),
        };
        m.publish(&m.lock());
        m
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Point>> {
        self.points.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn seed(&self) -> std::sync::MutexGuard<'_, (String, Source)> {
        self.seed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// New seed anchors (a reload): when they differ from the running seed, the state
    /// starts afresh from them, as a start with other anchors would, and is published at
    /// once; `false` when they are the same.
    pub fn reseed(&self, seed: &TrustAnchors, now: u64) -> bool {
        let digest = seed_digest(seed);
        let mut points = self.lock();
        {
            let mut current = self.seed();
            if current.0 == digest {
                return false;
            }
            *current = (digest, seed.source.clone());
        }
        *points = points_of(seed, now + self.timers.min_refresh);
        self.changed.store(true, Ordering::Release);
        self.publish(&points);
        true
    }

    /// Puts the anchors of `points` in force.
    fn publish(&self, points: &[Point]) {
        let anchors = points
            .iter()
            .filter_map(|p| {
                if !p.initialized {
                    return Some(p.seed.clone());
                }
                let keys: Vec<Dnskey> = p.keys.iter().filter(|t| t.state.trusted()).map(|t| t.key.clone()).collect();
                (!keys.is_empty()).then(|| Anchor { zone: p.zone.clone(), ds: Vec::new(), keys })
            })
            .collect();
        let source = self.seed().1.clone();
        self.published.store(Some(std::sync::Arc::new(TrustAnchors::new(anchors, source))));
    }

    /// The zone whose keys are due to be fetched at `now`, marked as being fetched (one
    /// at a time per zone); [`Self::observe`] must follow.
    pub fn due(&self, now: u64) -> Option<Name> {
        let mut points = self.lock();
        let p = points.iter_mut().find(|p| {
            p.next_fetch <= now && p.fetching.is_none_or(|since| now.saturating_sub(since) > FETCH_ABANDONED_S)
        })?;
        p.fetching = Some(now);
        Some(p.zone.clone())
    }

    /// Takes in a fetch of `zone`'s DNSKEY RRset (`records`: the answer, RRSIGs
    /// included; `None`: the fetch failed) at `now`.
    pub fn observe(&self, zone: &Name, records: Option<&[Record]>, now: u64) -> Observed {
        let mut points = self.lock();
        let Some(p) = points.iter_mut().find(|p| p.zone == *zone) else { return Observed::default() };
        p.fetching = None;
        let before = p.keys.clone();
        let was_anchored = !p.initialized || p.keys.iter().any(|t| t.state.trusted());
        let mut observed = match records {
            Some(records) => p.apply(records, now, &self.timers, self.sha1),
            None => Observed::default(),
        };
        p.forget_revoked(now);
        if observed.validated {
            self.fetches_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.fetches_failed.fetch_add(1, Ordering::Relaxed);
        }
        observed.next_in = if observed.validated {
            p.last_success = Some(now);
            refresh_interval(p.last_ttl, p.last_expiry.map(|e| e.saturating_sub(now)), &self.timers)
        } else {
            retry_interval(p.last_ttl, p.last_expiry.map(|e| e.saturating_sub(now)), &self.timers)
        };
        p.next_fetch = now + observed.next_in;
        observed.changes = changes(&before, &p.keys);
        if !observed.changes.is_empty() || observed.validated {
            // Saved after every trusted fetch too (the next fetch time, the last success).
            self.changed.store(true, Ordering::Release);
        }
        if !observed.changes.is_empty() {
            if was_anchored && p.initialized && !p.keys.iter().any(|t| t.state.trusted()) {
                self.zone_dropped.store(true, Ordering::Release);
                tracing::error!(
                    zone = %zone,
                    "every trust anchor key of this zone is revoked (RFC 5011): names at and below it are insecure now"
                );
            }
            self.publish(&points);
        }
        observed
    }

    /// Whether the state changed since the last call (then it is to be saved).
    pub fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::AcqRel)
    }

    /// Marks the state as not saved (a save failed).
    pub fn mark_changed(&self) {
        self.changed.store(true, Ordering::Release);
    }

    /// Whether an anchored zone lost its last trusted key since the last call.
    pub fn take_zone_dropped(&self) -> bool {
        self.zone_dropped.swap(false, Ordering::AcqRel)
    }

    /// Each zone's state.
    pub fn view(&self) -> Vec<PointView> {
        self.lock()
            .iter()
            .map(|p| PointView {
                zone: p.zone.clone(),
                keys: p.keys.iter().map(|t| (t.key.key_tag, t.state)).collect(),
                next_fetch: p.next_fetch,
                last_success: p.last_success,
            })
            .collect()
    }

    /// Each zone's state and the fetches so far.
    pub fn summary(&self) -> Summary {
        Summary {
            points: self.view(),
            fetches_ok: self.fetches_ok.load(Ordering::Relaxed),
            fetches_failed: self.fetches_failed.load(Ordering::Relaxed),
        }
    }

    /// Writes the state atomically to `path`.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let file = {
            let points = self.lock();
            StateFile {
                seed: self.seed().0.clone(),
                zones: points
                    .iter()
                    .map(|p| SavedPoint {
                        zone: p.zone.to_ascii(),
                        initialized: p.initialized,
                        next_fetch: p.next_fetch,
                        last_success: p.last_success,
                        last_ttl: p.last_ttl,
                        last_expiry: p.last_expiry,
                        keys: p
                            .keys
                            .iter()
                            .map(|t| SavedKey {
                                key_tag: t.key.key_tag,
                                rdata: hex(&t.key.rdata),
                                state: t.state,
                                since: t.since,
                                until: t.until,
                            })
                            .collect(),
                    })
                    .collect(),
            }
        };
        let text = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        crate::state_file::write_atomic(path, &text)
    }

    /// Reads the state saved at `path`: `Ok(false)` when there is none or it was made
    /// from other seed anchors (then the seed stands); a damaged file is an error and
    /// changes nothing.
    pub fn load(&self, path: &Path, now: u64) -> std::io::Result<bool> {
        let bad =
            |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {what}", path.display()));
        match std::fs::metadata(path) {
            Ok(m) if m.len() > MAX_FILE_BYTES => {
                return Err(bad(format!("{} octets, more than any real state", m.len())));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        let file: StateFile = serde_json::from_str(&std::fs::read_to_string(path)?).map_err(|e| bad(e.to_string()))?;
        let mut points = self.lock();
        if file.seed != self.seed().0 {
            tracing::warn!(
                path = %path.display(),
                "managed trust anchor state made from other anchors than the configured ones: starting again from \
                 the configured anchors (what was learned, revocations included, is forgotten)"
            );
            return Ok(false);
        }
        {
            use std::os::unix::fs::MetadataExt;
            let mode = std::fs::metadata(path)?.mode() & 0o777;
            if mode & 0o022 != 0 {
                return Err(bad(format!("others may write it (mode {mode:o}): it decides which keys are trusted")));
            }
        }
        // Everything is checked before anything is applied.
        let mut loaded = Vec::new();
        for saved in &file.zones {
            let zone = Name::from_ascii(&saved.zone).map_err(|e| bad(format!("{}: {e}", saved.zone)))?;
            let zone = crate::names::canonical(&zone);
            let Some(p) = points.iter().find(|p| p.zone == zone) else {
                return Err(bad(format!("{}: not an anchored zone", saved.zone)));
            };
            if saved.keys.len() > MAX_KEYS {
                return Err(bad(format!("{}: {} keys, at most {MAX_KEYS}", saved.zone, saved.keys.len())));
            }
            if !saved.initialized && !saved.keys.is_empty() {
                return Err(bad(format!("{}: keys before the first fetch", saved.zone)));
            }
            let mut keys: Vec<Tracked> = Vec::new();
            for k in &saved.keys {
                let key = unhex(&k.rdata)
                    .and_then(|r| Dnskey::parse(&r))
                    .filter(|d| d.usable() && d.key_tag == k.key_tag)
                    .ok_or_else(|| bad(format!("{}: key {}: not that DNSKEY", saved.zone, k.key_tag)))?;
                if keys.iter().any(|t| t.key.rdata == key.rdata) {
                    return Err(bad(format!("{}: key {} twice", saved.zone, k.key_tag)));
                }
                // A pending key's hold-down cannot have been shorter than the configured one.
                let pending_too_short =
                    k.state == KeyState::AddPend && k.until < k.since.saturating_add(self.timers.add_holddown);
                if k.since > now + 86_400 || pending_too_short {
                    return Err(bad(format!("{}: key {}: timers that no fetch set", saved.zone, k.key_tag)));
                }
                keys.push(Tracked { key, state: k.state, since: k.since, until: k.until });
            }
            if saved.initialized && !keys.iter().any(|t| t.state.trusted()) {
                tracing::error!(
                    zone = %saved.zone,
                    "managed trust anchor state: no trusted key left for this zone (all revoked): names at and below \
                     it are insecure; remove the state file to start again from the configured anchors"
                );
            }
            let mut point = p.clone();
            point.initialized = saved.initialized;
            point.keys = keys;
            // Never later than the saved time, never before now (a fetch at once after a
            // long stop).
            point.next_fetch = saved
                .next_fetch
                .min(now + refresh_interval(None, None, &self.timers))
                .max(now + self.timers.min_refresh);
            point.last_success = saved.last_success;
            point.last_ttl = saved.last_ttl;
            point.last_expiry = saved.last_expiry;
            loaded.push(point);
        }
        for point in loaded {
            if let Some(p) = points.iter_mut().find(|p| p.zone == point.zone) {
                *p = point;
            }
        }
        for p in points.iter_mut() {
            p.forget_revoked(now);
        }
        self.publish(&points);
        Ok(true)
    }
}

impl Point {
    /// The keys trusted to sign the RRset: the seed's, or the tracked trusted keys.
    fn trusted_keys(&self, published: &[Dnskey], allowance: &Cell<u32>) -> Vec<Dnskey> {
        if self.initialized {
            return self.keys.iter().filter(|t| t.state.trusted()).map(|t| t.key.clone()).collect();
        }
        let mut keys = vouched_keys(&self.zone, published, &self.seed.ds, allowance).unwrap_or_default();
        keys.extend(published.iter().filter(|k| self.seed.keys.iter().any(|s| s.rdata == k.rdata)).cloned());
        keys.dedup_by(|a, b| a.rdata == b.rdata);
        keys
    }

    /// Whether the seed (before the first trusted fetch) vouches for `key`.
    fn seed_trusts(&self, key: &Dnskey, allowance: &Cell<u32>) -> bool {
        !self.initialized
            && (self.seed.keys.iter().any(|s| s.rdata == key.rdata)
                || vouched_keys(&self.zone, std::slice::from_ref(key), &self.seed.ds, allowance)
                    .is_ok_and(|v| !v.is_empty()))
    }

    /// One fetched RRset (RFC 5011 sections 2.1, 2.4 and 4).
    fn apply(&mut self, records: &[Record], now: u64, timers: &Timers, sha1: bool) -> Observed {
        let set: Vec<&Record> =
            records.iter().filter(|r| r.record_type() == RecordType::DNSKEY && r.name == self.zone).collect();
        let published: Vec<Dnskey> = set.iter().filter_map(|r| Dnskey::parse(raw(r)?)).collect();
        let sigs: Vec<Rrsig> = records
            .iter()
            .filter(|r| r.record_type() == RecordType::RRSIG && r.name == self.zone)
            .filter_map(|r| Rrsig::parse(raw(r)?))
            .filter(|s| s.type_covered == u16::from(RecordType::DNSKEY))
            .collect();
        let allowance = Cell::new(SIG_CHECKS);
        let trusted = self.trusted_keys(&published, &allowance);

        // Revocations first: a key revoked by its owner is not trusted from now on,
        // whether or not the rest of the RRset validates.
        // Only revocations of keys this point tracks (or its seed vouches for) are checked,
        // so junk revoked keys ahead of a real one cannot use up the checks.
        let revocations = published.iter().filter(|k| k.is_revoked_zone_key()).filter_map(|revoked| {
            let plain = revoked.unrevoked()?;
            let tracked = self.keys.iter().position(|t| t.key.rdata == plain.rdata && t.state != KeyState::Revoked);
            (tracked.is_some() || self.seed_trusts(&plain, &allowance)).then_some((revoked, plain, tracked))
        });
        let revocations: Vec<_> = revocations.take(MAX_REVOCATIONS).collect();
        for (revoked, plain, tracked) in revocations {
            if verify_revocation(&self.zone, &set, &sigs, revoked, now, sha1, &allowance).is_err() {
                continue;
            }
            match tracked {
                Some(i) if self.keys[i].state == KeyState::AddPend => {
                    self.keys.remove(i);
                }
                Some(i) => {
                    self.keys[i] = Tracked {
                        key: plain,
                        state: KeyState::Revoked,
                        since: now,
                        until: now + timers.remove_holddown,
                    };
                }
                None => {
                    // A seed key revoked before the first trusted fetch: the other seed
                    // keys become the tracked ones now.
                    self.initialize(&trusted, &published, now);
                    if let Some(t) = self.keys.iter_mut().find(|t| t.key.rdata == plain.rdata) {
                        *t = Tracked {
                            key: plain,
                            state: KeyState::Revoked,
                            since: now,
                            until: now + timers.remove_holddown,
                        };
                    } else if self.keys.len() < MAX_KEYS {
                        self.keys.push(Tracked {
                            key: plain,
                            state: KeyState::Revoked,
                            since: now,
                            until: now + timers.remove_holddown,
                        });
                    }
                }
            }
        }

        let signers: Vec<Dnskey> = if self.initialized {
            self.keys.iter().filter(|t| t.state.trusted()).map(|t| t.key.clone()).collect()
        } else {
            trusted.clone()
        };
        let dnskey = u16::from(RecordType::DNSKEY);
        let Ok(verified) = verify_rrset(&self.zone, dnskey, &set, &sigs, &self.zone, &signers, now, sha1, &allowance)
        else {
            return Observed::default();
        };
        if !self.initialized {
            self.initialize(&trusted, &published, now);
        }
        // The timers come from the signature that verified, never from one that did not.
        let (original_ttl, expiration) = verified.signature;
        let ttl = u64::from(original_ttl);
        let expiry = u64::try_from(expiration).ok().filter(|e| *e > now);
        self.last_ttl = Some(ttl);
        self.last_expiry = expiry;

        let present: Vec<&Dnskey> = published.iter().filter(|k| k.usable() && k.is_sep()).collect();
        let is_present = |k: &Dnskey| present.iter().any(|p| p.rdata == k.rdata);
        let add_until = now + timers.add_holddown.max(ttl);
        self.keys.retain_mut(|t| match t.state {
            KeyState::AddPend if !is_present(&t.key) => false, // back to Start
            KeyState::AddPend if now >= t.until => {
                *t = Tracked { key: t.key.clone(), state: KeyState::Valid, since: now, until: 0 };
                true
            }
            KeyState::Valid if !is_present(&t.key) => {
                *t = Tracked { key: t.key.clone(), state: KeyState::Missing, since: now, until: 0 };
                true
            }
            KeyState::Missing if is_present(&t.key) => {
                *t = Tracked { key: t.key.clone(), state: KeyState::Valid, since: now, until: 0 };
                true
            }
            _ => true,
        });
        for k in present {
            if self.keys.iter().any(|t| t.key.rdata == k.rdata) {
                continue;
            }
            if self.keys.len() >= MAX_KEYS {
                crate::rate_limited!(warn, zone = %self.zone, key_tag = k.key_tag,
                    "trust anchor (RFC 5011): a new key is not tracked, the zone has its most keys tracked already");
                break;
            }
            self.keys.push(Tracked { key: k.clone(), state: KeyState::AddPend, since: now, until: add_until });
        }
        Observed { validated: true, ..Observed::default() }
    }

    /// Turns the seed into tracked keys: those of `published` it vouches for are Valid.
    fn initialize(&mut self, trusted: &[Dnskey], published: &[Dnskey], now: u64) {
        if self.initialized {
            return;
        }
        self.initialized = true;
        for k in published.iter().filter(|k| trusted.iter().any(|t| t.rdata == k.rdata)).take(MAX_KEYS) {
            self.keys.push(Tracked { key: k.clone(), state: KeyState::Valid, since: now, until: 0 });
        }
    }

    /// Revoked keys past their remove hold-down are forgotten (Removed).
    fn forget_revoked(&mut self, now: u64) {
        self.keys.retain(|t| !(t.state == KeyState::Revoked && now >= t.until));
    }
}

/// One point per anchored zone of `seed`, due for its first fetch at `first`.
fn points_of(seed: &TrustAnchors, first: u64) -> Vec<Point> {
    seed.iter()
        .map(|a| Point {
            zone: a.zone.clone(),
            seed: a.clone(),
            initialized: false,
            keys: Vec::new(),
            next_fetch: first,
            fetching: None,
            last_ttl: None,
            last_expiry: None,
            last_success: None,
        })
        .collect()
}

/// Section 2.3: the active refresh interval, MAX(1 hour, MIN(15 days, 1/2 original TTL,
/// 1/2 time to signature expiry)), with `min_refresh` in place of the hour.
pub fn refresh_interval(ttl: Option<u64>, to_expiry: Option<u64>, timers: &Timers) -> u64 {
    let bound = [Some(15 * 86_400), ttl.map(|t| t / 2), to_expiry.map(|e| e / 2)].into_iter().flatten().min();
    bound.unwrap_or(15 * 86_400).max(timers.min_refresh)
}

/// Section 2.3: the retry time after a failed fetch, MAX(1 hour, MIN(1 day, 1/10
/// original TTL, 1/10 time to expiry)), with `min_refresh` in place of the hour.
pub fn retry_interval(ttl: Option<u64>, to_expiry: Option<u64>, timers: &Timers) -> u64 {
    if ttl.is_none() && to_expiry.is_none() {
        // Nothing fetched yet (e.g. at boot before the network is up): the floor.
        return timers.min_refresh;
    }
    let bound = [Some(86_400), ttl.map(|t| t / 10), to_expiry.map(|e| e / 10)].into_iter().flatten().min();
    bound.unwrap_or(86_400).max(timers.min_refresh)
}

/// Each key whose state differs between `before` and `after`.
fn changes(before: &[Tracked], after: &[Tracked]) -> Vec<(u16, Option<KeyState>)> {
    let mut out: Vec<(u16, Option<KeyState>)> = after
        .iter()
        .filter(|a| !before.iter().any(|b| b.key.rdata == a.key.rdata && b.state == a.state))
        .map(|a| (a.key.key_tag, Some(a.state)))
        .collect();
    out.extend(
        before.iter().filter(|b| !after.iter().any(|a| a.key.rdata == b.key.rdata)).map(|b| (b.key.key_tag, None)),
    );
    out
}

fn raw(r: &Record) -> Option<&[u8]> {
    match &r.data {
        RData::Unknown { rdata, .. } => Some(&rdata.anything),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// A digest of the seed anchors: the state file is theirs only while it matches.
fn seed_digest(seed: &TrustAnchors) -> String {
    let mut text = String::new();
    for a in seed.iter() {
        text.push_str(&a.zone.to_ascii());
        for d in &a.ds {
            text.push_str(&format!(" DS {} {} {} {}", d.key_tag, d.algorithm, d.digest_type, hex(&d.digest)));
        }
        for k in &a.keys {
            text.push_str(&format!(" DNSKEY {}", hex(&k.rdata)));
        }
        text.push('\n');
    }
    hex(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref())
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    seed: String,
    zones: Vec<SavedPoint>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedPoint {
    zone: String,
    initialized: bool,
    next_fetch: u64,
    last_success: Option<u64>,
    last_ttl: Option<u64>,
    last_expiry: Option<u64>,
    keys: Vec<SavedKey>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedKey {
    key_tag: u16,
    rdata: String,
    state: KeyState,
    since: u64,
    until: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_and_retry_intervals_follow_section_2_3() {
        let t = Timers::default();
        // The root: DNSKEY TTL 2 days, signatures for 2 weeks: half the TTL (1 day).
        assert_eq!(refresh_interval(Some(172_800), Some(14 * 86_400), &t), 86_400);
        // A long TTL is capped at 15 days, a short one floored at an hour.
        assert_eq!(refresh_interval(Some(100 * 86_400), None, &t), 15 * 86_400);
        assert_eq!(refresh_interval(Some(60), Some(86_400), &t), 3_600);
        // Signatures about to expire bring the next fetch closer.
        assert_eq!(refresh_interval(Some(172_800), Some(20_000), &t), 10_000);
        assert_eq!(retry_interval(Some(172_800), Some(14 * 86_400), &t), 17_280);
        assert_eq!(retry_interval(None, None, &t), 3_600, "nothing known yet: the floor");
        assert_eq!(retry_interval(Some(600), None, &t), 3_600);
        let short = Timers { min_refresh: 1, ..t };
        assert_eq!(refresh_interval(Some(2), None, &short), 1);
    }

    #[test]
    fn hex_round_trips_and_refuses_junk() {
        assert_eq!(unhex(&hex(&[0, 1, 0xfe])), Some(vec![0, 1, 0xfe]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("é1"), None);
    }
}
