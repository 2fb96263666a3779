//! Backoff for failures kept in the packet cache (RFC 9520 section 3.2): a name whose
//! resolution fails again soon after its last kept failure ran out is kept twice as long
//! each time, up to `cache.failure_max_ttl_s`, so that a zone broken for hours costs its
//! servers a query every few minutes, not every `failure_ttl_s`. A success forgets it.
//!
//! Per worker, bounded: the names' strikes live in a CLOCK map of [`STRIKES_BYTES`]; a
//! name pushed out (a flood of failing names) starts again at `failure_ttl_s`, which is
//! what it would get without backoff.

use crate::cache::clock::ClockCache;

/// The strikes' budget per worker (about 4,000 names).
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

/// A question's key: its name in wire form, lowercased, then its type.
fn key(qname: &[u8], qtype: u16) -> Vec<u8> {
    let mut k: Vec<u8> = qname.iter().map(u8::to_ascii_lowercase).collect();
    k.extend_from_slice(&qtype.to_be_bytes());
    k
}

impl FailureStrikes {
    pub(super) fn new() -> Self {
        Self { strikes: ClockCache::new(STRIKES_BYTES) }
    }

    /// How long to keep the failure of (`qname`, `qtype`) that is being kept now, and
    /// notes it: `base` the first time, and twice the last one's when this failure follows
    /// its end within as long again, up to `max` (never below `base`).
    pub(super) fn keep(&mut self, (qname, qtype): (&[u8], u16), now_s: u32, base: u32, max: u32) -> u32 {
        let key = key(qname, qtype);
        let ttl_s = match self.strikes.get(key.as_slice()) {
            Some(s) if now_s <= s.until_s.saturating_add(s.ttl_s) => s.ttl_s.saturating_mul(2).min(max).max(base),
            _ => base,
        };
        let strike = Strike { until_s: now_s.saturating_add(ttl_s), ttl_s };
        let cost = key.len() + 16;
        self.strikes.insert(key.into_boxed_slice(), strike, cost);
        ttl_s
    }

    /// A resolution of (`qname`, `qtype`) succeeded: its next failure starts again at
    /// the base.
    pub(super) fn forget(&mut self, (qname, qtype): (&[u8], u16)) {
        if !self.strikes.is_empty() {
            self.strikes.remove(key(qname, qtype).as_slice());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Failures that follow each other are kept 5, 10, 20, 40 s and then the cap; a gap
    /// longer than the last one's TTL, or a success, starts again at the base; a cap at or
    /// below the base means no growth.
    #[test]
    fn repeated_failures_are_kept_twice_as_long_up_to_the_cap() {
        let mut s = FailureStrikes::new();
        let k: (&[u8], u16) = (b"\x03www\x04Lab\x00", 1);
        assert_eq!(key(k.0, k.1), key(b"\x03WWW\x04lab\x00", 1), "one key whatever the case");
        let mut now = 1000;
        let mut kept = Vec::new();
        for _ in 0..6 {
            let ttl = s.keep(k, now, 5, 60);
            kept.push(ttl);
            now += ttl + ttl / 2; // asked again within as long again after it ran out
        }
        assert_eq!(kept, [5, 10, 20, 40, 60, 60]);
        // A gap longer than the last TTL after its end: from the base.
        now += 61 + 60 + 1;
        assert_eq!(s.keep(k, now, 5, 60), 5);
        assert_eq!(s.keep(k, now + 5, 5, 60), 10);
        // A success forgets; another name is apart.
        s.forget(k);
        assert_eq!(s.keep(k, now + 15, 5, 60), 5);
        assert_eq!(s.keep((b"\x03www\x04lab\x00", 28), now + 15, 5, 60), 5, "AAAA is its own");
        // No growth with the cap at or below the base.
        let mut flat = FailureStrikes::new();
        assert_eq!((flat.keep(k, 0, 5, 0), flat.keep(k, 5, 5, 0), flat.keep(k, 10, 5, 5)), (5, 5, 5));
    }

    /// The map stays within its budget under a flood of failing names.
    #[test]
    fn strikes_are_bounded() {
        let mut s = FailureStrikes::new();
        for i in 0..100_000u32 {
            s.keep((format!("\x08{i:08}\x00").as_bytes(), 1), i, 5, 60);
        }
        assert!(s.strikes.used_bytes() <= STRIKES_BYTES, "{}", s.strikes.used_bytes());
        assert!(s.strikes.len() > 1_000, "{}", s.strikes.len());
    }
}
