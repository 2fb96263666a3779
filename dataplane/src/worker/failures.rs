//! Backoff for failures kept in the packet cache (RFC 9520 section 3.2): a name whose
//! resolution fails again soon after its last kept failure ran out is kept twice as long
//! each time, up to `cache.failure_max_ttl_s`, so that a zone broken for hours costs its
//! servers a query every few minutes, not every `failure_ttl_s`. A success forgets it.
//!
//! Per worker, bounded: the names' strikes live in a CLOCK map of [`STRIKES_BYTES`]; a
//! name pushed out (a flood of failing names) starts again at `failure_ttl_s`, which is
//! what it would get without backoff. A strike counts kept failures, not clients: the
//! clients with other flags (their own packet-cache entries) that shared the failure get
//! what is left of it.

use crate::cache::clock::ClockCache;

/// The strikes' budget per worker (about 3,000 names).
const STRIKES_BYTES: usize = 256 * 1024;

/// A name's last kept failure.
#[derive(Debug, Clone, Copy)]
struct Strike {
    /// When it runs out (the worker's clock, seconds).
    until_s: u32,
    /// How long it was kept.
    ttl_s: u32,
}

/// The strikes of failing names, keyed by question (lowercase name, type).
#[derive(Debug)]
pub(super) struct FailureStrikes {
    strikes: ClockCache<Box<[u8]>, Strike>,
}

/// Room for a key: a name of 255 octets and the type.
const KEY_MAX: usize = 255 + 2;

/// A question's key, written into `buf`: its name in wire form, lowercased, then its type;
/// `None` for a name longer than a name can be.
fn key<'b>(qname: &[u8], qtype: u16, buf: &'b mut [u8; KEY_MAX]) -> Option<&'b [u8]> {
    let n = qname.len();
    if n + 2 > KEY_MAX {
        return None;
    }
    for (d, c) in buf.iter_mut().zip(qname) {
        *d = c.to_ascii_lowercase();
    }
    buf[n..n + 2].copy_from_slice(&qtype.to_be_bytes());
    Some(&buf[..n + 2])
}

impl FailureStrikes {
    pub(super) fn new() -> Self {
        Self { strikes: ClockCache::new(STRIKES_BYTES) }
    }

    /// Keeps the failure of (`qname`, `qtype`) through `store`, which is given how long and
    /// says whether it kept it: `base` the first time; while the name's last kept failure
    /// still runs (the same failure, for clients with other flags), what is left of it;
    /// twice the last one's TTL when this failure follows its end within as long again,
    /// up to `max` (never below `base`). Only a failure kept after the last one's end
    /// counts as a new strike.
    pub(super) fn keep(
        &mut self,
        (qname, qtype): (&[u8], u16),
        now_s: u32,
        (base, max): (u32, u32),
        store: impl FnOnce(u32) -> bool,
    ) -> bool {
        let mut buf = [0u8; KEY_MAX];
        let Some(key) = key(qname, qtype, &mut buf) else { return store(base) };
        let last = self.strikes.get(key).copied();
        let ttl_s = match last {
            Some(s) if now_s < s.until_s => return store(s.until_s - now_s),
            Some(s) if now_s <= s.until_s.saturating_add(s.ttl_s) => s.ttl_s.saturating_mul(2).min(max).max(base),
            _ => base,
        };
        if !store(ttl_s) {
            return false;
        }
        let strike = Strike { until_s: now_s.saturating_add(ttl_s), ttl_s };
        self.strikes.insert(key.into(), strike, key.len() + 16);
        true
    }

    /// A resolution of (`qname`, `qtype`) succeeded: its next failure starts again at
    /// the base.
    pub(super) fn forget(&mut self, (qname, qtype): (&[u8], u16)) {
        let mut buf = [0u8; KEY_MAX];
        if !self.strikes.is_empty()
            && let Some(key) = key(qname, qtype, &mut buf)
        {
            self.strikes.remove(key);
        }
    }

    /// An operator's flush (the packet cache's, with the same arguments): the names it
    /// covers start again at the base, as their kept failures are gone with it. `name` is
    /// lowercase wire form; `None` flushes all.
    pub(super) fn flush(&mut self, name: Option<&[u8]>, subtree: bool) {
        if self.strikes.is_empty() {
            return;
        }
        fn owner(key: &[u8]) -> &[u8] {
            &key[..key.len() - 2]
        }
        match name {
            None => self.strikes.retain(|_, _| false),
            Some(n) if subtree => self.strikes.retain(|k, _| !crate::names::wire_is_subdomain(owner(k), n)),
            Some(n) => self.strikes.retain(|k, _| owner(k) != n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `keep` gives when the store keeps everything.
    fn kept(s: &mut FailureStrikes, q: (&[u8], u16), now: u32, base: u32, max: u32) -> u32 {
        let mut ttl = 0;
        assert!(s.keep(q, now, (base, max), |t| {
            ttl = t;
            true
        }));
        ttl
    }

    /// Failures that follow each other are kept 5, 10, 20, 40 s and then the cap; a gap
    /// longer than the last one's TTL, or a success, starts again at the base; a cap at or
    /// below the base means no growth.
    #[test]
    fn repeated_failures_are_kept_twice_as_long_up_to_the_cap() {
        let mut s = FailureStrikes::new();
        let k: (&[u8], u16) = (b"\x03www\x03Lab\x00", 1);
        let (mut b1, mut b2) = ([0u8; KEY_MAX], [0u8; KEY_MAX]);
        assert_eq!(key(k.0, k.1, &mut b1), key(b"\x03WWW\x03lab\x00", 1, &mut b2), "one key whatever the case");
        let mut now = 1000;
        let mut lives = Vec::new();
        for _ in 0..6 {
            let ttl = kept(&mut s, k, now, 5, 60);
            lives.push(ttl);
            now += ttl + ttl / 2; // asked again within as long again after it ran out
        }
        assert_eq!(lives, [5, 10, 20, 40, 60, 60]);
        // A gap longer than the last TTL after its end: from the base.
        now += 61 + 60 + 1;
        assert_eq!(kept(&mut s, k, now, 5, 60), 5);
        assert_eq!(kept(&mut s, k, now + 5, 5, 60), 10);
        // A success forgets; another type is apart.
        s.forget(k);
        assert_eq!(kept(&mut s, k, now + 15, 5, 60), 5);
        assert_eq!(kept(&mut s, (b"\x03www\x03lab\x00", 28), now + 15, 5, 60), 5, "AAAA is its own");
        // No growth with the cap at or below the base.
        let mut flat = FailureStrikes::new();
        assert_eq!((kept(&mut flat, k, 0, 5, 0), kept(&mut flat, k, 5, 5, 0), kept(&mut flat, k, 10, 5, 5)), (5, 5, 5));
    }

    /// A flush of a name, of its subtree, or of all starts the names it covers again at
    /// the base, and leaves the others' backoff alone.
    #[test]
    fn a_flush_starts_the_names_it_covers_again() {
        let mut s = FailureStrikes::new();
        type Question = (&'static [u8], u16);
        let (www, mail, other): (Question, Question, Question) =
            ((b"\x03www\x03lab\x00", 1), (b"\x04mail\x03lab\x00", 28), (b"\x03www\x05other\x00", 1));
        // Each phase starts long after the last one's strikes ran out: two failures (5 s,
        // 10 s), then a flush, then the third failure, at `t + 15`: 20 s unless flushed.
        let third_after = |s: &mut FailureStrikes, t: u32, flush: &dyn Fn(&mut FailureStrikes)| {
            for q in [www, mail, other] {
                assert_eq!((kept(s, q, t, 5, 60), kept(s, q, t + 5, 5, 60)), (5, 10));
            }
            flush(s);
            [www, mail, other].map(|q| kept(s, q, t + 15, 5, 60))
        };
        assert_eq!(third_after(&mut s, 0, &|s| s.flush(Some(b"\x03www\x03lab\x00"), false)), [5, 20, 20], "the name");
        assert_eq!(third_after(&mut s, 100, &|s| s.flush(Some(b"\x03lab\x00"), false)), [20, 20, 20], "not below it");
        assert_eq!(third_after(&mut s, 200, &|s| s.flush(Some(b"\x03lab\x00"), true)), [5, 5, 20], "the subtree");
        assert_eq!(third_after(&mut s, 300, &|s| s.flush(None, false)), [5, 5, 5], "all");
    }

    /// One failure shared by clients with other flags (each its own packet-cache entry) is
    /// one strike: they get what is left of it, and the next failure grows from it once.
    /// A failure the store did not keep is no strike.
    #[test]
    fn one_failure_is_one_strike_whatever_the_clients_flags() {
        let mut s = FailureStrikes::new();
        let k: (&[u8], u16) = (b"\x03www\x03lab\x00", 1);
        assert_eq!(kept(&mut s, k, 100, 5, 60), 5);
        assert_eq!(kept(&mut s, k, 100, 5, 60), 5, "CD set, same second: the same 5 s");
        assert_eq!(kept(&mut s, k, 103, 5, 60), 2, "DO set, later: what is left");
        assert_eq!(kept(&mut s, k, 105, 5, 60), 10, "the next failure: one step up");
        let mut t = FailureStrikes::new();
        assert!(!t.keep(k, 100, (5, 60), |_| false));
        assert_eq!(kept(&mut t, k, 106, 5, 60), 5, "nothing was kept before");
    }

    /// The map stays within its budget under a flood of failing names.
    #[test]
    fn strikes_are_bounded() {
        let mut s = FailureStrikes::new();
        for i in 0..100_000u32 {
            kept(&mut s, (format!("\x08{i:08}\x00").as_bytes(), 1), i, 5, 60);
        }
        assert!(s.strikes.used_bytes() <= STRIKES_BYTES, "{}", s.strikes.used_bytes());
        assert!(s.strikes.len() > 1_000, "{}", s.strikes.len());
    }
}
