//! The shared record cache: RRsets (with the RRSIGs that cover them), negative answers
//! (RFC 2308) and, through NS RRsets at zone cuts, the delegation cache. Shared by every
//! worker behind shard locks; it is read only on the miss path (hits are served from the
//! per-worker packet cache), so its locks never sit on the hot path.
//!
//! Every entry carries a trust rank (RFC 2181 section 5.4.1): data from an authoritative
//! answer is never replaced by glue or referral data while it lives, and only answer data
//! is served to clients.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::rr::{Name, Record};

use crate::cache::clock::ClockCache;
use crate::cache::nsec_spans::NsecSpans;
use crate::cache::packed::Packed;
use crate::dnssec::Security;

/// Type value used as the key of an NXDOMAIN entry (no real type is 0).
pub const NXDOMAIN_KEY: u16 = 0;

/// Type value used as the key of a parent's delegation NS RRset, kept beside the NS RRset
/// (which the child's own, higher-ranked one replaces). OPT (41) is never data, and
/// clients may not ask for it (the front door refuses it): nothing else is cached under it.
pub const DELEGATION_KEY: u16 = 41;

/// The DS type: its denial at a zone cut can carry the insecure-delegation mark.
const DS_TYPE: u16 = 43;

/// Type value used as the key of the parent side's DELEG RRset (or its absence) at a child
/// zone (experimental DELEG). IXFR (251) is never data, and clients may not ask for it
/// (the front door refuses it): a client's query for DELEG itself cannot replace it.
pub const DELEG_KEY: u16 = 251;

/// Shards of the cache; a power of two.
const SHARDS: usize = 64;

/// Trust in cached data, lowest first (RFC 2181 section 5.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// From the configured root hints.
    Hint,
    /// From the additional section (glue).
    Glue,
    /// From the authority section of a referral.
    Referral,
    /// From the answer section of a non-authoritative response.
    NonAuthAnswer,
    /// From the answer or authority section of an authoritative response.
    AuthAnswer,
}

impl Rank {
    /// Whether data of this rank may be served to a client as an answer.
    pub fn answerable(self) -> bool {
        self >= Self::NonAuthAnswer
    }
}

/// What a cache entry holds.
#[derive(Debug, Clone)]
pub enum CachedData {
    /// An RRset, followed by the RRSIGs covering it.
    RRset(Arc<[Record]>),
    /// NODATA for the key's (name, type): the authority records (SOA, proofs).
    NoData(Arc<[Record]>),
    /// NXDOMAIN for the key's name: the authority records.
    NxDomain(Arc<[Record]>),
}

impl CachedData {
    /// The records held: the RRset with its RRSIGs, or a denial's authority records.
    pub fn records(&self) -> &[Record] {
        match self {
            Self::RRset(r) | Self::NoData(r) | Self::NxDomain(r) => r,
        }
    }
}

/// The keys [`RecordCache::inspect`] reads at a name when no type is given: the types
/// resolvers meet most, then the NXDOMAIN and delegation keys and DELEG.
pub const INSPECTED_TYPES: [u16; 22] =
    [1, 28, 5, 39, 2, 6, 15, 16, 12, 33, 257, 43, 48, 46, 47, 50, 64, 65, 52, NXDOMAIN_KEY, DELEGATION_KEY, DELEG_KEY];

/// One entry as an operator sees it.
#[derive(Debug, Clone)]
pub struct Inspected {
    /// Its type key ([`NXDOMAIN_KEY`] for an NXDOMAIN, [`DELEGATION_KEY`] for a parent's
    /// delegation).
    pub rtype: u16,
    /// The data.
    pub data: CachedData,
    /// Its trust rank.
    pub rank: Rank,
    /// Its DNSSEC status.
    pub security: Security,
    /// Seconds of TTL left (0 when stale).
    pub ttl_left: u32,
    /// Past its TTL, kept for serve-stale.
    pub stale: bool,
    /// The server it came from, when known.
    pub from: Option<IpAddr>,
}

/// A live cache entry as read.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The data.
    pub data: CachedData,
    /// Its trust rank.
    pub rank: Rank,
    /// Its DNSSEC status.
    pub security: Security,
    /// Seconds of TTL left (at least 1).
    pub ttl_left: u32,
    /// For an RRset synthesized from a wildcard: the NSEC/NSEC3 records (with their
    /// RRSIGs) proving that the name itself does not exist, for DO clients (RFC 4035
    /// section 3.1.3.3).
    pub proofs: Option<Arc<[Record]>>,
    /// Past its TTL, read by [`RecordCache::get_stale`] (RFC 8767): `ttl_left` is then the
    /// stale answer's TTL.
    pub stale: bool,
}

/// Which of [`CachedData`]'s kinds an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An RRset.
    RRset,
    /// NODATA.
    NoData,
    /// NXDOMAIN.
    NxDomain,
}

/// A live entry as [`RecordCache::meta`] reads it: everything but its records.
#[derive(Debug, Clone)]
pub struct Meta {
    /// What it holds.
    pub kind: Kind,
    /// Its trust rank.
    pub rank: Rank,
    /// Its DNSSEC status.
    pub security: Security,
}

impl Kind {
    fn with(self, records: Arc<[Record]>) -> CachedData {
        match self {
            Self::RRset => CachedData::RRset(records),
            Self::NoData => CachedData::NoData(records),
            Self::NxDomain => CachedData::NxDomain(records),
        }
    }
}

/// An entry.
#[derive(Debug)]
struct Entry {
    kind: Kind,
    held: Held,
    rank: Rank,
    security: Security,
    expires: Instant,
    /// The server it came from, where the resolver said (answers and denials).
    from: Option<IpAddr>,
    /// A secure DS denial the validator found to prove an insecure delegation.
    insecure_cut: bool,
}

/// An entry's records and its proofs, parsed.
type RecordsAndProofs = (Arc<[Record]>, Option<Arc<[Record]>>);

/// An entry's records and proofs: in wire form as stored (`packed.rs`: about half the
/// memory of a cached name), parsed when read, and kept parsed from their second read on.
/// What is read again and again is what every miss under a zone reads (its delegation, its
/// servers' addresses, its keys or the proof that it has none); a name's own answer is
/// mostly never read again, since the packet cache serves it.
#[derive(Debug)]
enum Held {
    Packed { records: Packed, proofs: Option<Packed>, read_before: bool },
    Parsed { records: Arc<[Record]>, proofs: Option<Arc<[Record]>> },
}

/// Entries whose wire form is larger than this are held parsed from the start: parsing
/// them on a read would hold their shard's lock for long (an RRset of hundreds of records).
const PACKED_MAX: usize = 4096;

/// A parsed entry is kept parsed only while it takes at most this share of its shard's
/// budget: parsed records can take twenty times their wire size (an A record: 16 octets on
/// the wire, 272 parsed), and one entry charged anew must not empty its shard.
const PARSED_SHARE_OF_SHARD: usize = 16;

impl Held {
    /// `records` and `proofs` in wire form; parsed when the wire form is too large to parse
    /// on every read, or cannot be written (a buffer past 64 KiB: hickory stops
    /// compressing after 120 names).
    fn new(records: &[Record], proofs: &[Record]) -> Self {
        let packed = Packed::pack(records).zip(match proofs {
            [] => Some(None),
            p => Packed::pack(p).map(Some),
        });
        match packed {
            Some((records, proofs)) if records.len() + proofs.as_ref().map_or(0, Packed::len) <= PACKED_MAX => {
                Self::Packed { records, proofs, read_before: false }
            }
            _ => Self::Parsed { records: records.into(), proofs: (!proofs.is_empty()).then(|| proofs.into()) },
        }
    }

    /// The heap held (`charge.rs` for the parsed form).
    fn heap(&self) -> usize {
        match self {
            Self::Packed { records, proofs, .. } => records.heap() + proofs.as_ref().map_or(0, Packed::heap),
            Self::Parsed { records, proofs } => charge(records) + proofs.as_deref().map_or(0, charge),
        }
    }

    /// The records and the proofs, parsed, and whether this read kept them parsed (the
    /// heap held changed: only on a second read, and only if the parsed form's charge is at
    /// most `keep_parsed_max`); `None` if the wire does not parse (never, for what
    /// [`Packed::pack`] wrote).
    fn read(&mut self, keep_parsed_max: usize) -> Option<(RecordsAndProofs, bool)> {
        match self {
            Self::Parsed { records, proofs } => Some(((records.clone(), proofs.clone()), false)),
            Self::Packed { records, proofs, read_before } => {
                let records: Arc<[Record]> = records.unpack()?.into();
                let proofs: Option<Arc<[Record]>> = match proofs {
                    Some(p) => Some(p.unpack()?.into()),
                    None => None,
                };
                let parsed = charge(&records) + proofs.as_deref().map_or(0, charge);
                if !*read_before || parsed > keep_parsed_max {
                    *read_before = true;
                    return Some(((records, proofs), false));
                }
                *self = Self::Parsed { records: records.clone(), proofs: proofs.clone() };
                Some(((records, proofs), true))
            }
        }
    }
}

/// An entry's key: the type (big-endian), then the owner name in lowercase wire form. Held
/// once per entry (16 bytes and a small allocation, where a `(Name, u16)` took 88 inline).
type Key = Box<[u8]>;

/// What an entry is charged beside the cache's own overhead: the key's allocation (with
/// its allocator header) and the heap its records hold.
fn entry_cost(key: &[u8], heap: usize) -> usize {
    key.len() + 16 + heap
}

/// Room for the longest key: the type, and a name of 255 octets.
const KEY_MAX: usize = 2 + 255;

/// Writes the key of (`name`, `rtype`) into `buf`; `None` for a name longer than a name
/// can be (nothing such is cached).
fn key_of<'b>(name: &Name, rtype: u16, buf: &'b mut [u8; KEY_MAX]) -> Option<&'b [u8]> {
    buf[..2].copy_from_slice(&rtype.to_be_bytes());
    let mut at = 2;
    for label in name.iter() {
        let end = at + 1 + label.len();
        if end >= KEY_MAX {
            return None;
        }
        buf[at] = u8::try_from(label.len()).ok()?;
        for (d, c) in buf[at + 1..end].iter_mut().zip(label) {
            *d = c.to_ascii_lowercase();
        }
        at = end;
    }
    buf[at] = 0;
    Some(&buf[..at + 1])
}

/// The cache.
#[derive(Debug)]
pub struct RecordCache {
    shards: Box<[Mutex<ClockCache<Key, Entry>>]>,
    /// Every shard's hasher: a key is hashed once, for its shard and within it. Keyed at
    /// random, so that nobody can aim names at one shard (a sixty-fourth of the budget,
    /// and one lock).
    hasher: RandomState,
    /// Each shard's budget (changed by a reload).
    shard_budget: AtomicUsize,
    min_ttl: u32,
    max_ttl: u32,
    max_negative_ttl: u32,
    /// How long past its TTL an entry is kept for serve-stale (zero: dropped when read
    /// expired).
    stale_for: Duration,
    /// Validated NSEC spans for aggressive negative caching (RFC 8198).
    spans: NsecSpans,
}

/// What an RRset costs the cache: the shared record slice (its `Arc` header and the
/// records' inline parts) and everything the records hold on the heap (`charge.rs`: an
/// upper bound, whatever shape a server sends).
pub fn charge(records: &[Record]) -> usize {
    const ARC_HEADER: usize = 16;
    ARC_HEADER + size_of_val(records) + records.iter().map(super::charge::record_heap).sum::<usize>()
}

/// Copies of `records` with every TTL set to `ttl`.
pub fn with_ttl(records: &[Record], ttl: u32) -> Vec<Record> {
    records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.ttl = ttl;
            r
        })
        .collect()
}

impl RecordCache {
    /// A cache of about `budget` bytes with the given TTL caps (seconds).
    pub fn new(budget: usize, max_ttl: u32, max_negative_ttl: u32) -> Self {
        let per = (budget / SHARDS).max(1);
        let hasher = RandomState::new();
        let shards = (0..SHARDS).map(|_| Mutex::new(ClockCache::with_hasher(per, hasher.clone()))).collect();
        Self {
            shards,
            hasher,
            shard_budget: AtomicUsize::new(per),
            min_ttl: 0,
            max_ttl,
            max_negative_ttl,
            stale_for: Duration::ZERO,
            spans: NsecSpans::new(0),
        }
    }

    /// Keeping validated NSEC spans in up to `bytes` besides the budget
    /// (`dnssec.aggressive_nsec`: a sixteenth of the record cache's budget).
    #[must_use]
    pub fn with_nsec_spans(mut self, bytes: usize) -> Self {
        self.spans = NsecSpans::new(bytes);
        self
    }

    /// The validated NSEC spans (RFC 8198).
    pub fn spans(&self) -> &NsecSpans {
        &self.spans
    }

    /// Keeping expired entries up to `secs` past their TTL for serve-stale (RFC 8767;
    /// `cache.stale_max_s`). They still count against the budget and are evicted like any
    /// other entry.
    #[must_use]
    pub fn with_stale(mut self, secs: u32) -> Self {
        self.stale_for = Duration::from_secs(u64::from(secs));
        self
    }

    /// With a floor under positive TTLs (`cache.min_ttl_s`; at most the cap).
    #[must_use]
    pub fn with_min_ttl(mut self, min_ttl: u32) -> Self {
        self.min_ttl = min_ttl.min(self.max_ttl);
        self
    }

    /// How long positive data with `ttl` from an authoritative answer is kept and handed
    /// out: raised to the floor, lowered to the cap (before validation may lower it again).
    /// Negative answers keep their own TTL (RFC 2308), capped only.
    pub fn positive_ttl(&self, ttl: u32) -> u32 {
        ttl.clamp(self.min_ttl, self.max_ttl)
    }

    /// The key's hash and its shard, locked. The shard comes from hash bits that the
    /// shard's own table does not use for anything below 2^40 buckets (it takes the low
    /// bits for the bucket and the top seven for its control bytes).
    fn shard(&self, key: &[u8]) -> (u64, std::sync::MutexGuard<'_, ClockCache<Key, Entry>>) {
        let hash = self.hasher.hash_one(key);
        let idx = (hash >> 40) as usize & (SHARDS - 1);
        // A poisoned shard only means another worker panicked mid-update of a plain map;
        // the map itself is still consistent, so keep serving.
        (hash, self.shards[idx].lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reads a live entry.
    pub fn get(&self, name: &Name, rtype: u16, now: Instant) -> Option<Hit> {
        self.read(name, rtype, now, None)
    }

    /// Reads an entry, live or expired within the stale window (RFC 8767): an expired one
    /// comes with `stale` set and `stale_ttl` as its TTL. Bogus data never comes stale.
    pub fn get_stale(&self, name: &Name, rtype: u16, now: Instant, stale_ttl: u32) -> Option<Hit> {
        self.read(name, rtype, now, Some(stale_ttl))
    }

    /// What a live entry is, without parsing its records: for the callers that only ask
    /// whether something is cached, or how trusted it is.
    pub fn meta(&self, name: &Name, rtype: u16, now: Instant) -> Option<Meta> {
        self.lookup(name, rtype, now, None, |e| {
            Some((Meta { kind: e.kind, rank: e.rank, security: e.security.clone() }, None))
        })
        .map(|(meta, _, _)| meta)
    }

    /// Whether a live entry is cached at (`name`, `rtype`).
    pub fn contains(&self, name: &Name, rtype: u16, now: Instant) -> bool {
        self.lookup(name, rtype, now, None, |_| Some(((), None))).is_some()
    }

    fn read(&self, name: &Name, rtype: u16, now: Instant, stale_ttl: Option<u32>) -> Option<Hit> {
        let keep_parsed_max = self.shard_budget.load(Ordering::Relaxed) / PARSED_SHARE_OF_SHARD;
        let ((data, proofs, rank, security), stale, ttl_left) = self.lookup(name, rtype, now, stale_ttl, |e| {
            let ((records, proofs), reheld) = e.held.read(keep_parsed_max)?;
            let view = (e.kind.with(records), proofs, e.rank, e.security.clone());
            Some((view, reheld.then(|| e.held.heap())))
        })?;
        Some(Hit { data, rank, security, ttl_left, proofs, stale })
    }

    /// Finds the entry at (`name`, `rtype`), live or (with `stale_ttl`) stale, and gives
    /// `f`'s view of it with whether it is stale and its TTL left. An entry past the stale
    /// window, or that `f` cannot read, is dropped; one that serves is marked used. `f`
    /// may change how the entry holds its records, and then says the heap it holds now.
    fn lookup<R>(
        &self,
        name: &Name,
        rtype: u16,
        now: Instant,
        stale_ttl: Option<u32>,
        f: impl FnOnce(&mut Entry) -> Option<(R, Option<usize>)>,
    ) -> Option<(R, bool, u32)> {
        let mut kbuf = [0u8; KEY_MAX];
        let key = key_of(name, rtype, &mut kbuf)?;
        let (hash, mut shard) = self.shard(key);
        let mut e = shard.peek_hashed(hash, key)?;
        let (stale, ttl_left) = if e.expires > now {
            (false, u32::try_from(e.expires.duration_since(now).as_secs().max(1)).unwrap_or(u32::MAX))
        } else if now < e.expires + self.stale_for {
            match stale_ttl {
                Some(ttl) if !matches!(e.security, Security::Bogus(_)) => (true, ttl),
                _ => return None,
            }
        } else {
            shard.remove_hashed(hash, key);
            return None;
        };
        let Some((view, heap)) = f(e.value_mut()) else {
            shard.remove_hashed(hash, key);
            return None;
        };
        if let Some(heap) = heap {
            e.recharge(entry_cost(key, heap));
        }
        e.mark();
        shard.settle();
        Some((view, stale, ttl_left))
    }

    #[allow(clippy::too_many_arguments, reason = "one entry's fields")]
    fn put(
        &self,
        name: &Name,
        rtype: u16,
        (kind, records, proofs): (Kind, &[Record], &[Record]),
        rank: Rank,
        security: Security,
        ttl: u32,
        (now, from): (Instant, Option<IpAddr>),
    ) {
        let mut kbuf = [0u8; KEY_MAX];
        let Some(key) = key_of(name, rtype, &mut kbuf) else { return };
        if ttl == 0 {
            // Nothing to keep; but newer data must not leave older expired data to be
            // served stale in its place.
            let (hash, mut shard) = self.shard(key);
            if shard.peek_hashed(hash, key).is_some_and(|old| old.expires <= now) {
                shard.remove_hashed(hash, key);
            }
            return;
        }
        let held = Held::new(records, proofs);
        let cost = entry_cost(key, held.heap());
        let (hash, mut shard) = self.shard(key);
        // Live data is never replaced by data of a lower rank, nor validated data by the
        // same data unvalidated (a nameserver-address lookup re-fetching a validated name),
        // nor secure data by anything but secure data (a forged reply to another question
        // must not evict it; RFC 4035 section 4.5, as Unbound).
        if let Some(old) = shard.peek_hashed(hash, key)
            && old.expires > now
            && (old.rank > rank
                || (old.rank == rank && old.security.is_checked() && !security.is_checked())
                || (old.rank == rank && old.security == Security::Secure && security != Security::Secure))
        {
            old.mark();
            return;
        }
        let expires = now + Duration::from_secs(u64::from(ttl));
        shard.insert_hashed(
            hash,
            key.into(),
            Entry { kind, held, rank, security, expires, from, insecure_cut: false },
            cost,
        );
    }

    /// Stores an RRset (plus covering RRSIGs), not validated; its TTL is the smallest in
    /// the set, capped.
    pub fn put_rrset(&self, name: &Name, rtype: u16, records: Vec<Record>, rank: Rank, now: Instant) {
        self.put_checked(name, rtype, records, rank, Security::Unchecked, now);
    }

    /// Stores an RRset with its DNSSEC status.
    pub fn put_checked(
        &self,
        name: &Name,
        rtype: u16,
        records: Vec<Record>,
        rank: Rank,
        security: Security,
        now: Instant,
    ) {
        self.put_answer(name, rtype, records, Vec::new(), rank, security, now, None);
    }

    /// Like [`Self::put_checked`], with the proofs a wildcard expansion came with (kept
    /// and served with the RRset; empty for any other RRset).
    #[allow(clippy::too_many_arguments, reason = "one entry's fields")]
    pub fn put_answer(
        &self,
        name: &Name,
        rtype: u16,
        records: Vec<Record>,
        proofs: Vec<Record>,
        rank: Rank,
        security: Security,
        now: Instant,
        from: Option<IpAddr>,
    ) {
        // The floor (cache.min_ttl_s) was applied by the resolver before any cap (bogus
        // data, signature expiry) lowered a TTL: here only the cap.
        let ttl = records.iter().map(|r| r.ttl).min().unwrap_or(0).min(self.max_ttl);
        self.put(name, rtype, (Kind::RRset, &records, &proofs), rank, security, ttl, (now, from));
    }

    /// Stores that a referral carried no `rtype` records at `name` (a parent without DELEG
    /// for its child): referral-ranked, so never served to a client, and never replacing
    /// live secure data of the same rank. `ttl` is capped like positive data.
    pub fn put_referral_absence(&self, name: &Name, rtype: u16, ttl: u32, security: Security, now: Instant) {
        let ttl = ttl.min(self.max_ttl);
        self.put(name, rtype, (Kind::NoData, &[], &[]), Rank::Referral, security, ttl, (now, None));
    }

    /// Stores a negative answer: NODATA for (name, rtype), or NXDOMAIN when `rtype` is
    /// [`NXDOMAIN_KEY`]. `ttl` is capped by the negative TTL cap.
    #[allow(clippy::too_many_arguments, reason = "one entry's fields")]
    pub fn put_negative(
        &self,
        name: &Name,
        rtype: u16,
        authority: Vec<Record>,
        ttl: u32,
        security: Security,
        now: Instant,
        from: Option<IpAddr>,
    ) {
        let ttl = ttl.min(self.max_negative_ttl);
        let kind = if rtype == NXDOMAIN_KEY { Kind::NxDomain } else { Kind::NoData };
        self.put(name, rtype, (kind, &authority, &[]), Rank::AuthAnswer, security, ttl, (now, from));
    }

    /// What the cache holds at `name` for `rtype`, or for each of [`INSPECTED_TYPES`]
    /// (and the NXDOMAIN and delegation keys) when `None`: live entries, and expired ones
    /// kept for serve-stale (marked stale). For operators (`GET /v1/cache`): nothing is
    /// marked used, and no scan of the whole cache is made.
    pub fn inspect(&self, name: &Name, rtype: Option<u16>, now: Instant) -> Vec<Inspected> {
        let types: Vec<u16> = match rtype {
            Some(t) => vec![t],
            None => INSPECTED_TYPES.to_vec(),
        };
        let mut out = Vec::new();
        for rtype in types {
            let mut kbuf = [0u8; KEY_MAX];
            let Some(key) = key_of(name, rtype, &mut kbuf) else { continue };
            let (hash, mut shard) = self.shard(key);
            let Some(e) = shard.peek_hashed(hash, key) else { continue };
            let stale = e.expires <= now;
            if stale && now >= e.expires + self.stale_for {
                continue;
            }
            let data = match &e.held {
                Held::Parsed { records, .. } => records.clone(),
                Held::Packed { records, .. } => match records.unpack() {
                    Some(r) => r.into(),
                    None => continue,
                },
            };
            out.push(Inspected {
                rtype,
                data: e.kind.with(data),
                rank: e.rank,
                security: e.security.clone(),
                ttl_left: if stale { 0 } else { e.expires.duration_since(now).as_secs().max(1) as u32 },
                stale,
                from: e.from,
            });
        }
        out
    }

    /// Drops everything at `name` (every type), with `subtree` everything below it too,
    /// or everything when `None`; NSEC spans of the zones that could deny such names too.
    pub fn flush(&self, name: Option<&Name>, subtree: bool) {
        self.spans.flush(name);
        let mut zbuf = [0u8; KEY_MAX];
        let zone = match name {
            Some(n) => match key_of(n, 0, &mut zbuf) {
                Some(k) => Some(&k[2..]),
                None => return, // no name that long is cached
            },
            None => None,
        };
        for s in self.shards.iter() {
            let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
            match zone {
                None => s.retain(|_, _| false),
                Some(z) if subtree => s.retain(|k, _| !crate::names::wire_is_subdomain(&k[2..], z)),
                Some(z) => s.retain(|k, _| &k[2..] != z),
            }
        }
    }

    /// Whether `zone` is proven insecure: its DS denial is cached, secure, and was found
    /// to prove a delegation without DS ([`Self::mark_insecure_cut`]). Every miss below an
    /// unsigned zone asks this; reading the parent's keys and checking the denial again
    /// cost about a tenth of such a miss. The mark lives in the denial's own entry, so it
    /// goes with it: expiry, eviction, a flush, or a DS stored in its place.
    pub fn insecure_cut(&self, zone: &Name, now: Instant) -> bool {
        self.lookup(zone, DS_TYPE, now, None, |e| Some((e.insecure_cut, None))).is_some_and(|(cut, _, _)| cut)
    }

    /// Marks the live secure DS denial cached at `zone` as proving an insecure delegation
    /// (the validator checked that it does); nothing when there is none.
    pub fn mark_insecure_cut(&self, zone: &Name, now: Instant) {
        self.lookup(zone, DS_TYPE, now, None, |e| {
            e.insecure_cut = e.kind == Kind::NoData && e.security == Security::Secure;
            Some(((), None))
        });
    }

    /// Entries held (all shards).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A new budget (a reload), spread over the shards as at start, and the NSEC spans'
    /// beside it; a smaller one evicts now.
    pub fn set_budget(&self, budget: usize, nsec_span_bytes: usize) {
        let per = (budget / SHARDS).max(1);
        self.shard_budget.store(per, Ordering::Relaxed);
        let mut emptied = Vec::new();
        for s in self.shards.iter() {
            emptied.extend(s.lock().unwrap_or_else(|p| p.into_inner()).set_budget(per));
        }
        self.spans.set_budget(nsec_span_bytes);
        if !emptied.is_empty() {
            crate::cache::drop_elsewhere(emptied);
        }
    }

    /// Bytes charged (all shards).
    pub fn used_bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).used_bytes()).sum()
    }

    /// The configured positive TTL cap.
    pub fn max_ttl(&self) -> u32 {
        self.max_ttl
    }

    /// The configured negative TTL cap.
    pub fn max_negative_ttl(&self) -> u32 {
        self.max_negative_ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::RData;
    use hickory_proto::rr::rdata::A;

    fn a(name: &str, ttl: u32) -> Record {
        Record::from_rdata(name.parse().unwrap(), ttl, RData::A(A::new(192, 0, 2, 1)))
    }

    /// RFC 8767: an expired entry stays readable as stale for the stale window only, with
    /// the stale TTL; a plain read never sees it; bogus data is never stale.
    #[test]
    fn expired_entries_are_kept_for_serve_stale_within_the_window() {
        let c = RecordCache::new(1 << 20, 3600, 10).with_stale(100);
        let now = Instant::now();
        let name: Name = "a.lab.".parse().unwrap();
        c.put_rrset(&name, 1, vec![a("a.lab.", 60)], Rank::AuthAnswer, now);
        let bogus =
            Security::Bogus(Arc::new(crate::dnssec::Bogus { ede: crate::ede::Ede::DnssecBogus, text: "test".into() }));
        c.put_checked(&name, 28, vec![a("a.lab.", 60)], Rank::AuthAnswer, bogus, now);
        let live = c.get_stale(&name, 1, now, 30).unwrap();
        assert!(!live.stale && live.ttl_left == 60);
        let later = now + Duration::from_secs(90);
        assert!(c.get(&name, 1, later).is_none(), "expired for plain reads");
        let stale = c.get_stale(&name, 1, later, 30).unwrap();
        assert!(stale.stale && stale.ttl_left == 30);
        assert!(c.get_stale(&name, 28, later, 30).is_none(), "bogus data is never served stale");
        // Newer data with TTL 0 is not kept, but the older expired data goes with it.
        let other: Name = "b.lab.".parse().unwrap();
        c.put_rrset(&other, 1, vec![a("b.lab.", 60)], Rank::AuthAnswer, now);
        c.put_rrset(&other, 1, vec![a("b.lab.", 0)], Rank::AuthAnswer, later);
        assert!(c.get_stale(&other, 1, later, 30).is_none(), "a TTL-0 answer displaces stale data");
        assert!(c.get_stale(&name, 1, now + Duration::from_secs(161), 30).is_none(), "past the window");
        assert_eq!(c.len(), 1, "the entry past the window was dropped when read");
        // Without the window, an expired entry is dropped at once.
        let off = RecordCache::new(1 << 20, 3600, 10);
        off.put_rrset(&name, 1, vec![a("a.lab.", 60)], Rank::AuthAnswer, now);
        assert!(off.get_stale(&name, 1, later, 30).is_none());
    }

    #[test]
    fn inspection_shows_every_type_at_a_name_with_its_source_and_staleness() {
        let c = RecordCache::new(1 << 20, 3600, 600).with_stale(100);
        let now = Instant::now();
        let name: Name = "a.lab.".parse().unwrap();
        let server: IpAddr = "192.0.2.53".parse().unwrap();
        c.put_answer(&name, 1, vec![a("a.lab.", 60)], vec![], Rank::AuthAnswer, Security::Secure, now, Some(server));
        c.put_negative(&name, 28, vec![], 300, Security::insecure(), now, None);
        let seen = c.inspect(&name, None, now + Duration::from_secs(70));
        assert_eq!(seen.len(), 2);
        let a_rr = seen.iter().find(|e| e.rtype == 1).unwrap();
        assert!(a_rr.stale && a_rr.ttl_left == 0 && a_rr.from == Some(server));
        let aaaa = seen.iter().find(|e| e.rtype == 28).unwrap();
        assert!(!aaaa.stale && aaaa.ttl_left == 230 && matches!(aaaa.data, CachedData::NoData(_)));
        assert_eq!(c.inspect(&name, Some(28), now).len(), 1);
        assert!(c.inspect(&name, None, now + Duration::from_secs(400)).is_empty(), "past the stale window");
    }

    /// The insecure-delegation mark rides on a live secure DS denial only, and goes with
    /// it: a DS stored in its place (a newly signed child) or its expiry ends it.
    #[test]
    fn the_insecure_cut_mark_lives_and_dies_with_its_ds_denial() {
        let c = RecordCache::new(1 << 20, 3600, 300);
        let now = Instant::now();
        let zone: Name = "child.lab.".parse().unwrap();
        c.mark_insecure_cut(&zone, now);
        assert!(!c.insecure_cut(&zone, now), "no denial, no mark");
        c.put_negative(&zone, DS_TYPE, vec![], 100, Security::insecure(), now, None);
        c.mark_insecure_cut(&zone, now);
        assert!(!c.insecure_cut(&zone, now), "an insecure denial proves nothing");
        c.put_negative(&zone, DS_TYPE, vec![], 100, Security::Secure, now, None);
        c.mark_insecure_cut(&zone, now);
        assert!(c.insecure_cut(&zone, now));
        assert!(c.insecure_cut(&zone, now + Duration::from_secs(99)));
        assert!(!c.insecure_cut(&zone, now + Duration::from_secs(101)), "expired with its denial");
        let ds = Record::from_rdata(
            zone.clone(),
            100,
            RData::Unknown {
                code: hickory_proto::rr::RecordType::DS,
                rdata: hickory_proto::rr::rdata::NULL::with(vec![1; 36]),
            },
        );
        c.put_checked(&zone, DS_TYPE, vec![ds], Rank::AuthAnswer, Security::Secure, now);
        assert!(!c.insecure_cut(&zone, now), "a DS in its place ends it");
    }

    fn rrsig(owner: &str) -> Record {
        let rdata = hickory_proto::rr::rdata::NULL::with((0..100u8).collect());
        Record::from_rdata(
            owner.parse().unwrap(),
            60,
            RData::Unknown { code: hickory_proto::rr::RecordType::RRSIG, rdata },
        )
    }

    /// A stored RRset is held in wire form (a signed name's A record and RRSIG in about a
    /// third of their parsed charge), read back whole, and kept parsed from its second read
    /// on, charged as such; `meta` and `contains` read without parsing.
    #[test]
    fn entries_are_held_as_wire_and_kept_parsed_once_read_again() {
        let c = RecordCache::new(1 << 24, 3600, 10);
        let now = Instant::now();
        let name: Name = "n123456.smem.".parse().unwrap();
        let set = vec![a("n123456.smem.", 60), rrsig("n123456.smem.")];
        let proofs = vec![rrsig("*.smem.")];
        let base = c.used_bytes();
        c.put_answer(&name, 1, set.clone(), proofs.clone(), Rank::AuthAnswer, Security::Secure, now, None);
        let packed = c.used_bytes() - base;
        let parsed = charge(&set) + charge(&proofs);
        let wire = Packed::pack(&set).unwrap().heap() + Packed::pack(&proofs).unwrap().heap();
        assert!(wire * 3 < parsed, "records held in {wire} bytes, parsed {parsed}");
        let meta = c.meta(&name, 1, now).unwrap();
        assert_eq!((meta.kind, meta.rank, meta.security), (Kind::RRset, Rank::AuthAnswer, Security::Secure));
        assert!(c.contains(&name, 1, now) && !c.contains(&name, 28, now));
        assert_eq!(c.used_bytes() - base, packed, "meta and contains parse nothing");
        for read in 1..=3 {
            let hit = c.get(&name, 1, now).unwrap();
            assert_eq!(hit.data.records(), &set[..]);
            assert_eq!(hit.proofs.as_deref(), Some(&proofs[..]));
            let held = c.used_bytes() - base;
            if read == 1 {
                assert_eq!(held, packed, "read once: still wire");
            } else {
                assert_eq!(held, packed - wire + parsed, "read again: parsed, charged as such");
            }
        }
        // Negative entries and an empty one come back as stored too.
        let soa = vec![a("smem.", 30)];
        c.put_negative(&name, NXDOMAIN_KEY, soa.clone(), 30, Security::Secure, now, None);
        assert!(matches!(c.get(&name, NXDOMAIN_KEY, now).unwrap().data, CachedData::NxDomain(r) if *r == soa[..]));
        c.put_referral_absence(&name, DELEG_KEY, 30, Security::Secure, now);
        assert!(matches!(c.get(&name, DELEG_KEY, now).unwrap().data, CachedData::NoData(r) if r.is_empty()));
    }

    /// What is not held as wire: an entry too large to parse under the shard's lock on every
    /// read (held parsed from the start, charged as such), and, in a small cache, an entry
    /// whose parsed form would take more than its share of the shard (read again and again,
    /// it stays wire).
    #[test]
    fn large_entries_are_held_parsed_and_small_shards_keep_entries_as_wire() {
        let c = RecordCache::new(1 << 24, 3600, 10);
        let now = Instant::now();
        let name: Name = "big.lab.".parse().unwrap();
        let big: Vec<Record> = (0..300u32)
            .map(|i| Record::from_rdata(name.clone(), 60, RData::A(A::from(std::net::Ipv4Addr::from(i)))))
            .collect();
        assert!(Packed::pack(&big).unwrap().len() > PACKED_MAX);
        c.put_rrset(&name, 1, big.clone(), Rank::AuthAnswer, now);
        let held = c.used_bytes();
        assert!(held > charge(&big), "held parsed: {held} bytes");
        assert_eq!(c.get(&name, 1, now).unwrap().data.records(), &big[..]);
        assert_eq!(c.used_bytes(), held);

        let small = RecordCache::new(64 * 8192, 3600, 10);
        let set = vec![a("a.lab.", 60), rrsig("a.lab.")];
        assert!(charge(&set) > 8192 / PARSED_SHARE_OF_SHARD);
        let a_lab: Name = "a.lab.".parse().unwrap();
        small.put_rrset(&a_lab, 1, set.clone(), Rank::AuthAnswer, now);
        let wire = small.used_bytes();
        for _ in 0..3 {
            assert_eq!(small.get(&a_lab, 1, now).unwrap().data.records(), &set[..]);
        }
        assert_eq!(small.used_bytes(), wire, "kept as wire");
    }

    #[test]
    fn ttl_counts_down_and_is_capped() {
        let c = RecordCache::new(1 << 20, 100, 10);
        let t0 = Instant::now();
        let n: Name = "WWW.lab.".parse().unwrap();
        c.put_rrset(&n, 1, vec![a("www.lab.", 3600)], Rank::AuthAnswer, t0);
        let h = c.get(&"www.LAB.".parse().unwrap(), 1, t0 + Duration::from_secs(30)).unwrap();
        assert_eq!(h.ttl_left, 70);
        assert!(c.get(&n, 1, t0 + Duration::from_secs(100)).is_none());
        c.put_negative(&n, 28, vec![], 3600, Security::insecure(), t0, None);
        assert_eq!(c.get(&n, 28, t0).unwrap().ttl_left, 10);
    }

    #[test]
    fn lower_rank_never_replaces_live_higher_rank() {
        let c = RecordCache::new(1 << 20, 3600, 10);
        let t0 = Instant::now();
        let n: Name = "ns1.lab.".parse().unwrap();
        c.put_rrset(&n, 1, vec![a("ns1.lab.", 300)], Rank::AuthAnswer, t0);
        c.put_rrset(&n, 1, vec![a("ns1.lab.", 900)], Rank::Glue, t0);
        let h = c.get(&n, 1, t0).unwrap();
        assert_eq!(h.rank, Rank::AuthAnswer);
        assert_eq!(h.ttl_left, 300);
        // Higher rank replaces lower.
        c.put_rrset(&n, 28, vec![a("ns1.lab.", 300)], Rank::Glue, t0);
        c.put_rrset(&n, 28, vec![a("ns1.lab.", 60)], Rank::AuthAnswer, t0);
        assert_eq!(c.get(&n, 28, t0).unwrap().rank, Rank::AuthAnswer);
    }

    #[test]
    fn validated_data_is_not_replaced_by_unchecked_data() {
        let c = RecordCache::new(1 << 20, 3600, 10);
        let t0 = Instant::now();
        let n: Name = "www.lab.".parse().unwrap();
        c.put_checked(&n, 1, vec![a("www.lab.", 300)], Rank::AuthAnswer, Security::Secure, t0);
        c.put_rrset(&n, 1, vec![a("www.lab.", 900)], Rank::AuthAnswer, t0);
        let h = c.get(&n, 1, t0).unwrap();
        assert_eq!((h.security, h.ttl_left), (Security::Secure, 300));
        // Nor by an insecure or bogus result while it lives (a forged reply to another
        // question); only by another secure one.
        c.put_checked(&n, 1, vec![a("www.lab.", 60)], Rank::AuthAnswer, Security::insecure(), t0);
        assert_eq!(c.get(&n, 1, t0).unwrap().security, Security::Secure);
        c.put_checked(&n, 1, vec![a("www.lab.", 60)], Rank::AuthAnswer, Security::Secure, t0);
        assert_eq!(c.get(&n, 1, t0).unwrap().ttl_left, 60);
        // Insecure data is replaced by a newer result of any kind.
        let m: Name = "ftp.lab.".parse().unwrap();
        c.put_checked(&m, 1, vec![a("ftp.lab.", 300)], Rank::AuthAnswer, Security::insecure(), t0);
        c.put_checked(
            &m,
            1,
            vec![a("ftp.lab.", 60)],
            Rank::AuthAnswer,
            Security::bogus(crate::ede::Ede::SignatureExpired, "x".into()),
            t0,
        );
        assert!(matches!(c.get(&m, 1, t0).unwrap().security, Security::Bogus(_)));
    }

    #[test]
    fn flush_by_zone() {
        let c = RecordCache::new(1 << 20, 3600, 10);
        let t0 = Instant::now();
        for n in ["a.lab.", "b.a.lab.", "xa.lab.", "a.other."] {
            c.put_rrset(&n.parse().unwrap(), 1, vec![a(n, 60)], Rank::AuthAnswer, t0);
        }
        // One name (any case): only it goes; below it and beside it stay.
        c.flush(Some(&"A.Lab.".parse().unwrap()), false);
        assert!(c.get(&"a.lab.".parse().unwrap(), 1, t0).is_none());
        assert_eq!(c.len(), 3);
        c.put_rrset(&"a.lab.".parse().unwrap(), 1, vec![a("a.lab.", 60)], Rank::AuthAnswer, t0);
        // A subtree: the name and what lies below it, on label boundaries only.
        c.flush(Some(&"a.LAB.".parse().unwrap()), true);
        assert!(c.get(&"xa.lab.".parse().unwrap(), 1, t0).is_some());
        assert_eq!(c.len(), 2);
        c.flush(None, true);
        assert!(c.is_empty());
    }
}
