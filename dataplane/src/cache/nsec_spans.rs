//! Validated NSEC spans for aggressive negative caching (RFC 8198): the NSEC records (with
//! their RRSIGs) of secure denials, kept in canonical order per signed zone beside the
//! zone's SOA, so that a name inside a span already proven empty can be denied without
//! asking anyone. This is the answer to random-subdomain floods under a signed zone: after
//! one denial per span, the rest of the flood stays here.
//!
//! Only what validation already proved is stored (the resolver feeds it secure denials);
//! what the spans prove for a new name is decided by `dnssec::denial`, not here. Bounded
//! in bytes (charged as the record cache charges RRsets); over the budget, the span after
//! a rotating cursor goes, which spreads eviction over every zone at O(log n).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hickory_proto::rr::{Name, Record};

use crate::dnssec::rdata::Nsec;
use crate::names::canonical;

/// A name in canonical DNS order as bytes (RFC 4034 section 6.1): labels from the root
/// down, each lowercased and ended by 0x00, with 0x00 and 0x01 inside a label escaped as
/// 0x01 0x01 and 0x01 0x02, so plain byte order is canonical order.
fn order_key(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.iter().rev() {
        for &b in label {
            match b.to_ascii_lowercase() {
                0 => out.extend_from_slice(&[1, 1]),
                1 => out.extend_from_slice(&[1, 2]),
                b => out.push(b),
            }
        }
        out.push(0);
    }
    out
}

/// A span as learnt from a denial: the NSEC's owner, its RDATA, and the NSEC record with
/// the RRSIGs covering it.
pub type NewSpan = (Name, Nsec, Vec<Record>);

/// One proven-empty span: an NSEC at `owner` with its RRSIGs.
#[derive(Debug, Clone)]
pub struct Span {
    /// The NSEC's owner.
    pub owner: Name,
    /// Its next name and type bitmap.
    pub nsec: Nsec,
    /// The NSEC record and the RRSIGs covering it.
    pub records: Arc<[Record]>,
    /// Seconds of TTL left when read (at least 1).
    pub ttl_left: u32,
}

#[derive(Debug)]
struct Stored {
    zone: Name,
    owner: Name,
    nsec: Nsec,
    records: Arc<[Record]>,
    expires: Instant,
    cost: usize,
}

/// A zone's SOA (with its RRSIGs) from its latest secure denial, and how long it may
/// carry a negative answer.
#[derive(Debug)]
struct ZoneSoa {
    records: Arc<[Record]>,
    expires: Instant,
    cost: usize,
    /// Spans stored under this zone: the SOA goes with the last one.
    spans: usize,
}

#[derive(Debug, Default)]
struct Inner {
    zones: HashMap<Name, ZoneSoa>,
    /// (zone key, owner key) → span: a zone's spans are contiguous, in canonical order.
    spans: BTreeMap<(Vec<u8>, Vec<u8>), Stored>,
    used: usize,
    /// Where the next eviction looks.
    cursor: Option<(Vec<u8>, Vec<u8>)>,
}

/// Overhead charged per span besides its records and keys (tree node, names).
const SPAN_OVERHEAD: usize = 160;

/// The store. Zero budget: off, nothing is kept.
#[derive(Debug)]
pub struct NsecSpans {
    inner: Mutex<Inner>,
    budget: std::sync::atomic::AtomicUsize,
}

/// What a denial synthesized from spans may use: the zone, its SOA, and its spans read on
/// demand.
#[derive(Debug)]
pub struct ZoneView<'a> {
    guard: MutexGuard<'a, Inner>,
    zone: Name,
    zone_key: Vec<u8>,
    now: Instant,
    /// The SOA records and their TTL left.
    pub soa: (Arc<[Record]>, u32),
}

fn ttl_left(expires: Instant, now: Instant) -> u32 {
    u32::try_from(expires.saturating_duration_since(now).as_secs()).unwrap_or(u32::MAX)
}

impl ZoneView<'_> {
    /// The zone.
    pub fn zone(&self) -> &Name {
        &self.zone
    }

    /// The live span whose owner is `name` or the closest before it in canonical order,
    /// within the zone: the only one that can cover `name`.
    pub fn at_or_before(&self, name: &Name) -> Option<Span> {
        let lo = Bound::Included((self.zone_key.clone(), Vec::new()));
        let hi = Bound::Included((self.zone_key.clone(), order_key(name)));
        let (_, s) = self.guard.spans.range((lo, hi)).next_back()?;
        let ttl_left = ttl_left(s.expires, self.now);
        (ttl_left > 0).then(|| Span {
            owner: s.owner.clone(),
            nsec: s.nsec.clone(),
            records: s.records.clone(),
            ttl_left,
        })
    }
}

impl NsecSpans {
    /// A store of about `budget` bytes (0: off).
    pub fn new(budget: usize) -> Self {
        Self { inner: Mutex::default(), budget: std::sync::atomic::AtomicUsize::new(budget) }
    }

    fn budget(&self) -> usize {
        self.budget.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A new budget (a reload; 0 turns spans off); spans beyond it are evicted now.
    pub fn set_budget(&self, budget: usize) {
        self.budget.store(budget, std::sync::atomic::Ordering::Relaxed);
        let mut inner = self.lock();
        while inner.used > budget && !inner.spans.is_empty() {
            inner.evict_one();
        }
    }

    /// Whether spans are kept at all.
    pub fn enabled(&self) -> bool {
        self.budget() > 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another worker panicked mid-update; the maps are
        // still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the spans of a secure denial from `zone`, with the zone's SOA, for `ttl`
    /// seconds at most (each record's own TTL, capped by the resolver to what its
    /// signatures allow, may be shorter).
    pub fn learn(&self, zone: &Name, soa: Vec<Record>, spans: Vec<NewSpan>, ttl: u32, now: Instant) {
        if !self.enabled() || spans.is_empty() || ttl == 0 {
            return;
        }
        let zone = canonical(zone);
        let zone_key = order_key(&zone);
        let expires_of = |records: &[Record]| {
            let t = records.iter().map(|r| r.ttl).min().unwrap_or(0).min(ttl);
            now + Duration::from_secs(u64::from(t))
        };
        let mut inner = self.lock();
        let soa_cost = super::records::charge(&soa);
        let soa = ZoneSoa { expires: expires_of(&soa), records: Arc::from(soa), cost: soa_cost, spans: 0 };
        let kept = match inner.zones.insert(zone.clone(), soa) {
            Some(old) => {
                inner.used -= old.cost;
                old.spans
            }
            None => 0,
        };
        inner.used += soa_cost;
        let mut added = 0;
        for (owner, nsec, records) in spans {
            let owner = canonical(&owner);
            if !zone.zone_of(&owner) {
                continue;
            }
            let key = (zone_key.clone(), order_key(&owner));
            // The records, and about as much again for the parsed NSEC (next name, bitmap),
            // the keys and the zone's name.
            let cost = SPAN_OVERHEAD + 2 * key.1.len() + zone.len() + 2 * super::records::charge(&records);
            let expires = expires_of(&records);
            let stored = Stored { zone: zone.clone(), owner, nsec, records: Arc::from(records), expires, cost };
            inner.used += cost;
            match inner.spans.insert(key, stored) {
                Some(old) => inner.used -= old.cost,
                None => added += 1,
            }
        }
        if let Some(z) = inner.zones.get_mut(&zone) {
            z.spans = kept + added;
            if z.spans == 0 {
                let cost = z.cost;
                inner.zones.remove(&zone);
                inner.used -= cost;
            }
        }
        while inner.used > self.budget() && !inner.spans.is_empty() {
            inner.evict_one();
        }
    }

    /// The deepest zone at or above `name` with a live SOA and spans, to synthesize from.
    pub fn zone_for(&self, name: &Name, now: Instant) -> Option<ZoneView<'_>> {
        if !self.enabled() {
            return None;
        }
        if self.lock().zones.is_empty() {
            return None;
        }
        // The names to look for, built before the lock is taken (deepest first).
        let mut ancestors = vec![canonical(name)];
        while let Some(n) = ancestors.last().filter(|n| !n.is_root()) {
            let up = n.base_name();
            ancestors.push(up);
        }
        let guard = self.lock();
        let (zone, soa) = ancestors.into_iter().find_map(|n| {
            let z = guard.zones.get(&n).filter(|z| z.expires > now && z.spans > 0)?;
            let soa = (z.records.clone(), ttl_left(z.expires, now));
            Some((n, soa))
        })?;
        let zone_key = order_key(&zone);
        Some(ZoneView { guard, zone, zone_key, now, soa })
    }

    /// Drops the spans of every zone at or below `name` and of every zone above it (whose
    /// spans could deny names at or below it); everything when `None`.
    pub fn flush(&self, name: Option<&Name>) {
        let mut inner = self.lock();
        let Some(name) = name.map(canonical) else {
            *inner = Inner::default();
            return;
        };
        let gone: Vec<Name> = inner.zones.keys().filter(|z| name.zone_of(z) || z.zone_of(&name)).cloned().collect();
        for z in gone {
            inner.remove_zone(&z);
        }
    }

    /// Spans held.
    pub fn len(&self) -> usize {
        self.lock().spans.len()
    }

    /// True when no span is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes charged.
    pub fn used_bytes(&self) -> usize {
        self.lock().used
    }
}

impl Inner {
    /// Drops the span after the cursor (wrapping), and its zone's SOA with its last span.
    fn evict_one(&mut self) {
        let after = self
            .cursor
            .take()
            .and_then(|c| self.spans.range((Bound::Excluded(c), Bound::Unbounded)).next().map(|(k, _)| k.clone()));
        let Some(key) = after.or_else(|| self.spans.keys().next().cloned()) else { return };
        if let Some(s) = self.spans.remove(&key) {
            self.used -= s.cost;
            if let Some(z) = self.zones.get_mut(&s.zone) {
                z.spans -= 1;
                if z.spans == 0 {
                    let cost = z.cost;
                    self.zones.remove(&s.zone);
                    self.used -= cost;
                }
            }
        }
        self.cursor = Some(key);
    }

    /// Drops a zone's SOA and every span of it.
    fn remove_zone(&mut self, zone: &Name) {
        if let Some(z) = self.zones.remove(zone) {
            self.used -= z.cost;
        }
        let k = order_key(zone);
        let keys: Vec<_> = self
            .spans
            .range((k.clone(), Vec::new())..)
            .take_while(|((zk, _), _)| *zk == k)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some(s) = self.spans.remove(&key) {
                self.used -= s.cost;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dnssec::rdata::{TypeBitmap, canonical_cmp};

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn span(owner: &str, next: &str) -> (Name, Nsec, Vec<Record>) {
        let rec = Record::from_rdata(
            n(owner),
            300,
            hickory_proto::rr::RData::A(std::net::Ipv4Addr::new(192, 0, 2, 1).into()),
        );
        let nsec = Nsec { next: n(next), types: TypeBitmap::parse(&[0, 1, 0x40]).unwrap() };
        (n(owner), nsec, vec![rec])
    }

    fn soa(zone: &str) -> Vec<Record> {
        vec![Record::from_rdata(
            n(zone),
            300,
            hickory_proto::rr::RData::A(std::net::Ipv4Addr::new(192, 0, 2, 2).into()),
        )]
    }

    /// Byte order of the keys is RFC 4034 canonical order, octets 0 and 1 in labels and
    /// case included.
    #[test]
    fn order_keys_sort_as_canonical_order() {
        let raw = |labels: &[&[u8]]| Name::from_labels(labels.iter().map(|l| l.to_vec())).unwrap();
        let mut names: Vec<Name> = [
            "example.",
            "a.example.",
            "yljkjljk.a.example.",
            "Z.a.example.",
            "zABC.a.EXAMPLE.",
            "z.example.",
            "*.z.example.",
            "a.",
            "zz.",
        ]
        .iter()
        .map(|s| n(s))
        .collect();
        for labels in [
            &[b"\x01" as &[u8], b"z", b"example"][..],
            &[b"\x00", b"z", b"example"],
            &[b"\xc8", b"z", b"example"],
            &[b"\x00\x01", b"z", b"example"],
            &[b"\x01\x00", b"z", b"example"],
            &[b"\x01\x01", b"z", b"example"],
            &[b"a\x00", b"example"],
            &[b"a\x00", b"\x00example"],
        ] {
            names.push(raw(labels));
        }
        names.reverse();
        let mut by_key = names.clone();
        by_key.sort_by_key(order_key);
        let mut by_cmp = names;
        by_cmp.sort_by(canonical_cmp);
        assert_eq!(by_key, by_cmp);
    }

    #[test]
    fn the_span_at_or_before_a_name_is_found_within_its_zone_only() {
        let s = NsecSpans::new(1 << 20);
        let now = Instant::now();
        s.learn(&n("lab."), soa("lab."), vec![span("lab.", "b.lab."), span("m.lab.", "q.lab.")], 60, now);
        s.learn(&n("sub.lab."), soa("sub.lab."), vec![span("sub.lab.", "x.sub.lab.")], 60, now);
        let v = s.zone_for(&n("c.lab."), now).unwrap();
        assert_eq!(v.zone(), &n("lab."));
        assert_eq!(v.at_or_before(&n("c.lab.")).unwrap().owner, n("lab."));
        assert_eq!(v.at_or_before(&n("n.lab.")).unwrap().owner, n("m.lab."));
        assert_eq!(v.at_or_before(&n("M.lab.")).unwrap().owner, n("m.lab."));
        drop(v);
        let v = s.zone_for(&n("deep.a.sub.lab."), now).unwrap();
        assert_eq!(v.zone(), &n("sub.lab."));
        drop(v);
        // Expired: nothing to synthesize from.
        assert!(s.zone_for(&n("c.lab."), now + Duration::from_secs(61)).is_none());
        assert!(s.zone_for(&n("c.other."), now).is_none());
    }

    #[test]
    fn the_budget_holds_and_flush_drops_zones_above_and_below() {
        let s = NsecSpans::new(16 * 1024);
        let now = Instant::now();
        for i in 0..2_000 {
            s.learn(&n("lab."), soa("lab."), vec![span(&format!("n{i}.lab."), &format!("n{i}a.lab."))], 60, now);
        }
        assert!(s.used_bytes() <= 16 * 1024, "{}", s.used_bytes());
        assert!(s.len() > 10, "eviction keeps most of the budget used: {}", s.len());
        s.learn(&n("sub.lab."), soa("sub.lab."), vec![span("sub.lab.", "x.sub.lab.")], 60, now);
        s.learn(&n("other."), soa("other."), vec![span("other.", "x.other.")], 60, now);
        s.flush(Some(&n("www.sub.lab.")));
        assert!(s.zone_for(&n("y.sub.lab."), now).is_none());
        assert!(s.zone_for(&n("c.lab."), now).is_none(), "lab. could deny names below the flushed one");
        assert!(s.zone_for(&n("a.other."), now).is_some());
        s.flush(None);
        assert!(s.is_empty());
        assert_eq!(s.used_bytes(), 0);
        let off = NsecSpans::new(0);
        off.learn(&n("lab."), soa("lab."), vec![span("lab.", "b.lab.")], 60, now);
        assert!(off.is_empty());
    }
}
