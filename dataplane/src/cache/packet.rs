//! Per-worker packet cache: whole responses stored as wire bytes and served by copying and
//! patching (ID, TTLs, the client's qname case). A hit parses nothing beyond the client's
//! header and question and allocates nothing: the key is built in a stack buffer and the
//! answer is written into the worker's reusable output buffer.
//!
//! The key holds everything that changes the answer: qname (lowercased), qtype, qclass,
//! RD, CD, DO and EDNS presence. The client's UDP size is applied when serving: a stored
//! answer larger than the client's limit is sent as a truncated (TC) header instead. No
//! stored answer contains a DNS cookie, so cookies are never replayed.

use crate::cache::clock::ClockCache;
use crate::wire::{self, MAX_NAME_LEN, Query, ResponseEdns, flag};

/// Largest key: 1 flags octet + 2 qtype + 2 qclass + 255 name.
const MAX_KEY: usize = 5 + MAX_NAME_LEN;

/// One stored answer in a single allocation, which is also its key in the map: the key
/// (what it is found and compared by), the TTL offsets and the wire. Layout: key length
/// and offset count (u16 each, native order), the key, the offsets (u16 each), the wire.
#[derive(Debug)]
struct Stored(Box<[u8]>);

impl Stored {
    fn new(key: &[u8], offsets: &[u16], wire: &[u8]) -> Option<Self> {
        let (klen, n) = (u16::try_from(key.len()).ok()?, u16::try_from(offsets.len()).ok()?);
        let mut b = Vec::with_capacity(4 + key.len() + 2 * offsets.len() + wire.len());
        b.extend_from_slice(&klen.to_ne_bytes());
        b.extend_from_slice(&n.to_ne_bytes());
        b.extend_from_slice(key);
        offsets.iter().for_each(|o| b.extend_from_slice(&o.to_ne_bytes()));
        b.extend_from_slice(wire);
        Some(Self(b.into_boxed_slice()))
    }

    fn lens(&self) -> (usize, usize) {
        let b = &self.0;
        (usize::from(u16::from_ne_bytes([b[0], b[1]])), usize::from(u16::from_ne_bytes([b[2], b[3]])))
    }

    fn key(&self) -> &[u8] {
        let (klen, _) = self.lens();
        &self.0[4..4 + klen]
    }

    fn ttl_offsets(&self) -> impl Iterator<Item = usize> + '_ {
        let (klen, n) = self.lens();
        self.0[4 + klen..4 + klen + 2 * n].chunks_exact(2).map(|c| usize::from(u16::from_ne_bytes([c[0], c[1]])))
    }

    fn wire(&self) -> &[u8] {
        let (klen, n) = self.lens();
        &self.0[4 + klen + 2 * n..]
    }
}

// Found, hashed and compared by the key alone, exactly as the `[u8]` it borrows as.
impl std::borrow::Borrow<[u8]> for Stored {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

impl std::hash::Hash for Stored {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.key().hash(h);
    }
}

impl PartialEq for Stored {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Stored {}

#[derive(Debug)]
struct Entry {
    /// Worker-clock second when stored.
    stored_s: u32,
    /// Seconds the entry stays valid: the smallest TTL in it.
    ttl_s: u32,
    /// A hit in the last tenth of its TTL has been reported as due for a refresh.
    prefetch_reported: bool,
}

/// Entries living shorter than this are never reported due for a refresh (a tenth of
/// their TTL is under a second).
pub const PREFETCH_MIN_TTL_S: u32 = 10;

/// Builds the cache key for a query into `buf`; returns its length.
fn key_of(q: &Query, msg: &[u8], buf: &mut [u8; MAX_KEY]) -> usize {
    let mut bits = 0u8;
    if q.rd() {
        bits |= 1;
    }
    if q.cd() {
        bits |= 2;
    }
    if q.dnssec_ok() {
        bits |= 4;
    }
    if q.edns.is_some() {
        bits |= 8;
    }
    if q.ad() {
        bits |= 16;
    }
    buf[0] = bits;
    buf[1..3].copy_from_slice(&q.qtype.to_be_bytes());
    buf[3..5].copy_from_slice(&q.qclass.to_be_bytes());
    let name = &msg[q.qname.clone()];
    let mut lower = [0u8; MAX_NAME_LEN];
    let n = wire::lowercase_name(name, &mut lower);
    buf[5..5 + n].copy_from_slice(&lower[..n]);
    5 + n
}

/// Outcome of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The answer is in the output buffer.
    Hit,
    /// The stored answer exceeded the client's UDP limit; a TC response is in the buffer.
    HitTruncated,
    /// Not cached (or expired).
    Miss,
}

/// The cache.
#[derive(Debug)]
pub struct PacketCache {
    map: ClockCache<Stored, Entry>,
    enabled: bool,
    /// Report hits in the last tenth of an entry's TTL (`cache.prefetch`).
    prefetch: bool,
    /// See [`Self::take_due`].
    due: bool,
}

impl PacketCache {
    /// A cache of about `budget` bytes; 0 disables it.
    pub fn new(budget: usize) -> Self {
        Self { map: ClockCache::new(budget), enabled: budget > 0, prefetch: false, due: false }
    }

    /// A new budget (a reload; 0 disables the cache); a smaller one evicts now.
    pub fn set_budget(&mut self, budget: usize) {
        if let Some(old) = self.map.set_budget(budget) {
            crate::cache::drop_elsewhere(old);
        }
        self.enabled = budget > 0;
    }

    /// Reporting the first hit of an entry in the last tenth of its TTL (prefetch).
    #[must_use]
    pub fn with_prefetch(mut self, on: bool) -> Self {
        self.prefetch = on;
        self
    }

    /// Whether the last [`Self::lookup`] hit an entry in the last tenth of its TTL, for the
    /// first time: the caller may refresh it in the background (prefetch). Reading it
    /// clears it.
    pub fn take_due(&mut self) -> bool {
        std::mem::take(&mut self.due)
    }

    /// Serves `q` (parsed from `msg`) into `out` if a live entry exists. `udp_limit` is the
    /// client's UDP size limit, or `None` over TCP.
    /// `udp_size` is our advertised EDNS size, for the OPT record of a truncated answer.
    pub fn lookup(
        &mut self,
        q: &Query,
        msg: &[u8],
        now_s: u32,
        udp_limit: Option<usize>,
        udp_size: u16,
        out: &mut Vec<u8>,
    ) -> Lookup {
        if !self.enabled {
            return Lookup::Miss;
        }
        let mut kbuf = [0u8; MAX_KEY];
        let klen = key_of(q, msg, &mut kbuf);
        let key = &kbuf[..klen];
        let Some((stored, e)) = self.map.get_key_value(key) else {
            return Lookup::Miss;
        };
        let age = now_s.saturating_sub(e.stored_s);
        if age >= e.ttl_s {
            self.map.remove(key);
            return Lookup::Miss;
        }
        if self.prefetch && !e.prefetch_reported && e.ttl_s >= PREFETCH_MIN_TTL_S && (e.ttl_s - age) * 10 <= e.ttl_s {
            e.prefetch_reported = true;
            self.due = true;
        }
        let wire = stored.wire();
        if udp_limit.is_some_and(|limit| wire.len() > limit) {
            let edns = q.edns.map(|c| ResponseEdns { udp_size, dnssec_ok: c.dnssec_ok, rcode_high: 0, ede: None });
            let rcode = wire[3] & 0x0F;
            wire::header_only_response(out, msg, q.question_end, rcode, flag::TC, edns.as_ref());
            return Lookup::HitTruncated;
        }
        out.clear();
        out.extend_from_slice(wire);
        out[0..2].copy_from_slice(&q.id.to_be_bytes());
        // Echo the client's qname case (stored wire holds the first asker's case).
        out[q.qname.clone()].copy_from_slice(&msg[q.qname.clone()]);
        for o in stored.ttl_offsets() {
            let ttl = u32::from_be_bytes([out[o], out[o + 1], out[o + 2], out[o + 3]]);
            out[o..o + 4].copy_from_slice(&ttl.saturating_sub(age).to_be_bytes());
        }
        Lookup::Hit
    }

    /// Whether a live entry answers `q` (parsed from `msg`); it is not marked used.
    pub fn holds(&mut self, q: &Query, msg: &[u8], now_s: u32) -> bool {
        if !self.enabled {
            return false;
        }
        let mut kbuf = [0u8; MAX_KEY];
        let klen = key_of(q, msg, &mut kbuf);
        self.map.peek(&kbuf[..klen]).is_some_and(|e| now_s.saturating_sub(e.stored_s) < e.ttl_s)
    }

    /// Stores a complete response to `q`. `ttl_s` is how long it may be served (smallest
    /// TTL in it, or the negative TTL); 0 stores nothing. Returns whether it was stored.
    pub fn store(&mut self, q: &Query, msg: &[u8], response: &[u8], now_s: u32, ttl_s: u32) -> bool {
        if !self.enabled || ttl_s == 0 {
            return false;
        }
        let Some(offsets) = wire::ttl_offsets(response) else {
            return false;
        };
        let mut kbuf = [0u8; MAX_KEY];
        let klen = key_of(q, msg, &mut kbuf);
        let Some(stored) = Stored::new(&kbuf[..klen], &offsets, response) else {
            return false;
        };
        // Heap owned: the one allocation (its allocator header included).
        let cost = stored.0.len() + 16;
        self.map.insert(stored, Entry { stored_s: now_s, ttl_s, prefetch_reported: false }, cost);
        true
    }

    /// Drops every entry whose qname equals `name` (wire form, lowercase), and with
    /// `subtree` every entry below it too; `None` drops everything.
    pub fn flush(&mut self, name: Option<&[u8]>, subtree: bool) {
        match name {
            None => self.map.retain(|_, _| false),
            Some(n) if subtree => self.map.retain(|k, _| !crate::names::wire_is_subdomain(&k.key()[5..], n)),
            Some(n) => self.map.retain(|k, _| &k.key()[5..] != n),
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes charged.
    pub fn used_bytes(&self) -> usize {
        self.map.used_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse_query;

    fn query(id: u16, name: &[u8], edns: bool) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
        q.extend_from_slice(name);
        q.extend_from_slice(&[0, 1, 0, 1]);
        if edns {
            q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        }
        q
    }

    fn response(q: &[u8], qend: usize, ttl: u32, records: usize) -> Vec<u8> {
        let mut r = q[..qend].to_vec();
        r[2] = 0x81;
        r[3] = 0x80;
        r[6..8].copy_from_slice(&(records as u16).to_be_bytes());
        r[10..12].fill(0);
        for i in 0..records {
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            r.extend_from_slice(&ttl.to_be_bytes());
            r.extend_from_slice(&[0, 4, 192, 0, 2, i as u8]);
        }
        r
    }

    #[test]
    fn hit_patches_id_ttl_and_case() {
        let mut c = PacketCache::new(1 << 20);
        let q1 = query(1, b"\x03WwW\x03lab\x00", false);
        let p1 = parse_query(&q1).unwrap();
        let r = response(&q1, p1.question_end, 300, 1);
        c.store(&p1, &q1, &r, 100, 300);

        let q2 = query(0xBEEF, b"\x03www\x03LAB\x00", false);
        let p2 = parse_query(&q2).unwrap();
        let mut out = Vec::new();
        assert_eq!(c.lookup(&p2, &q2, 130, Some(512), 1232, &mut out), Lookup::Hit);
        assert_eq!(&out[0..2], &[0xBE, 0xEF]);
        assert_eq!(&out[12..21], b"\x03www\x03LAB\x00");
        let ttl_at = out.len() - 10;
        assert_eq!(u32::from_be_bytes(out[ttl_at..ttl_at + 4].try_into().unwrap()), 270);
        // expired
        assert_eq!(c.lookup(&p2, &q2, 400, Some(512), 1232, &mut out), Lookup::Miss);
        assert!(c.is_empty());
    }

    /// Prefetch: the first hit in the last tenth of an entry's TTL is reported due, once;
    /// short-lived entries and a cache without prefetch never are.
    #[test]
    fn the_first_hit_in_the_last_tenth_of_the_ttl_is_due_once() {
        let mut c = PacketCache::new(1 << 20).with_prefetch(true);
        let q = query(1, b"\x03www\x03lab\x00", false);
        let p = parse_query(&q).unwrap();
        c.store(&p, &q, &response(&q, p.question_end, 100, 1), 0, 100);
        let mut out = Vec::new();
        assert_eq!(c.lookup(&p, &q, 89, Some(512), 1232, &mut out), Lookup::Hit);
        assert!(!c.take_due(), "11 s of 100 left");
        assert_eq!(c.lookup(&p, &q, 90, Some(512), 1232, &mut out), Lookup::Hit);
        assert!(c.take_due(), "10 s of 100 left");
        assert!(!c.take_due(), "reading clears it");
        c.lookup(&p, &q, 95, Some(512), 1232, &mut out);
        assert!(!c.take_due(), "reported once per entry");
        // Stored again (the refresh): due again in its own last tenth.
        c.store(&p, &q, &response(&q, p.question_end, 100, 1), 95, 100);
        c.lookup(&p, &q, 186, Some(512), 1232, &mut out);
        assert!(c.take_due());
        let q2 = query(1, b"\x05short\x03lab\x00", false);
        let p2 = parse_query(&q2).unwrap();
        c.store(&p2, &q2, &response(&q2, p2.question_end, 9, 1), 0, 9);
        c.lookup(&p2, &q2, 8, Some(512), 1232, &mut out);
        assert!(!c.take_due(), "a 9 s entry is never due");
        let mut off = PacketCache::new(1 << 20);
        off.store(&p, &q, &response(&q, p.question_end, 100, 1), 0, 100);
        off.lookup(&p, &q, 95, Some(512), 1232, &mut out);
        assert!(!off.take_due(), "prefetch off");
    }

    #[test]
    fn holds_sees_a_live_entry_under_the_same_flags_only() {
        let mut c = PacketCache::new(1 << 20);
        let q = query(1, b"\x01a\x00", false);
        let p = parse_query(&q).unwrap();
        assert!(!c.holds(&p, &q, 0));
        assert!(c.store(&p, &q, &response(&q, p.question_end, 5, 1), 0, 5));
        assert!(c.holds(&p, &q, 4));
        assert!(!c.holds(&p, &q, 5), "expired");
        let q2 = query(1, b"\x01a\x00", true);
        assert!(!c.holds(&parse_query(&q2).unwrap(), &q2, 1), "other EDNS, other entry");
        assert!(!PacketCache::new(0).holds(&p, &q, 0), "a cache that is off holds nothing");
    }

    #[test]
    fn key_separates_edns_and_rd() {
        let mut c = PacketCache::new(1 << 20);
        let q1 = query(1, b"\x01a\x00", false);
        let p1 = parse_query(&q1).unwrap();
        c.store(&p1, &q1, &response(&q1, p1.question_end, 60, 1), 0, 60);
        let q2 = query(1, b"\x01a\x00", true);
        let p2 = parse_query(&q2).unwrap();
        let mut out = Vec::new();
        assert_eq!(c.lookup(&p2, &q2, 0, Some(1232), 1232, &mut out), Lookup::Miss);
        let mut q3 = q1.clone();
        q3[2] = 0; // RD off
        let p3 = parse_query(&q3).unwrap();
        assert_eq!(c.lookup(&p3, &q3, 0, Some(512), 1232, &mut out), Lookup::Miss);
    }

    #[test]
    fn oversized_answer_is_truncated_for_small_buffers() {
        let mut c = PacketCache::new(1 << 20);
        let q = query(7, b"\x03big\x00", false);
        let p = parse_query(&q).unwrap();
        let r = response(&q, p.question_end, 60, 40); // 40 * 16 bytes > 512
        c.store(&p, &q, &r, 0, 60);
        let mut out = Vec::new();
        assert_eq!(c.lookup(&p, &q, 1, Some(512), 1232, &mut out), Lookup::HitTruncated);
        assert!(u16::from_be_bytes([out[2], out[3]]) & flag::TC != 0);
        assert_eq!(out.len(), p.question_end);
        // Over TCP the whole answer is served.
        assert_eq!(c.lookup(&p, &q, 1, None, 1232, &mut out), Lookup::Hit);
        assert_eq!(out.len(), r.len());
    }
}
