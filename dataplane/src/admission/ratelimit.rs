//! Query rates per client address, per client network and per (network, question): token
//! buckets in fixed tables of atomics shared by every worker. A table never grows (a flood
//! from random spoofed sources only reuses its slots), takes no lock (a compare-and-swap on
//! one word), and is keyed by a hash seeded at random, so nobody can aim collisions at a
//! victim. Each key has two slots and is limited only when both are empty: a client that
//! shares one slot with a heavy sender still has the other (a count-min sketch's idea).

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Token buckets for one rate, in `2^k` slots of one word: the last refill's time in
/// milliseconds (high 32 bits, wrapping) and the tokens in thousandths (low 32 bits).
#[derive(Debug)]
pub(crate) struct RateTable {
    slots: Box<[AtomicU64]>,
    mask: usize,
    /// Tokens added per millisecond, in thousandths: the rate per second.
    per_ms: u64,
    /// The bucket's depth, in thousandths: one second's worth.
    full: u64,
}

/// One token, in thousandths.
const TOKEN: u64 = 1000;
/// How far behind a slot's stamp a worker's clock reading may be (its loop turn began
/// earlier than another worker's) and still count as the same moment.
const MAX_SKEW_MS: u32 = 60_000;

impl RateTable {
    /// A table for `per_second` (at least 1), with `slots` rounded up to a power of two.
    pub(crate) fn new(per_second: u32, slots: u32) -> Self {
        let n = (slots.max(2) as usize).next_power_of_two();
        let per_ms = u64::from(per_second.max(1));
        Self {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            mask: n - 1,
            per_ms,
            full: (per_ms * TOKEN).min(u64::from(u32::MAX)),
        }
    }

    /// Takes a token for the key hashed to `hash` at `now_ms`: false when both its slots
    /// are empty. Both are charged (when they have a token), so a client over its rate
    /// empties both.
    pub(crate) fn take(&self, hash: u64, now_ms: u32) -> bool {
        let first = hash as usize & self.mask;
        let mut second = (hash >> 32) as usize & self.mask;
        if second == first {
            // Two distinct slots, or the key would be charged twice per query.
            second ^= 1;
        }
        let a = self.take_slot(first, now_ms);
        let b = self.take_slot(second, now_ms);
        a | b
    }

    fn take_slot(&self, i: usize, now_ms: u32) -> bool {
        let slot = &self.slots[i];
        let mut v = slot.load(Ordering::Relaxed);
        // Bounded: another worker can win the swap only so often while this one retries.
        for _ in 0..8 {
            let (stamp, tokens) = if v == 0 {
                (now_ms, self.full)
            } else {
                let (then, tokens) = ((v >> 32) as u32, v & u64::from(u32::MAX));
                let elapsed = now_ms.wrapping_sub(then);
                if elapsed > u32::MAX - MAX_SKEW_MS {
                    // A reading a little older than the slot's (another worker's turn
                    // started later): no time passed, and the later stamp stays.
                    (then, tokens)
                } else {
                    // Any other distance is time that passed (a slot idle past the 49-day
                    // wrap is full again, never stuck empty).
                    (now_ms, (tokens + u64::from(elapsed).saturating_mul(self.per_ms)).min(self.full))
                }
            };
            if tokens < TOKEN {
                return false;
            }
            let next = (u64::from(stamp) << 32) | (tokens - TOKEN);
            // Never store 0: it means a fresh slot.
            let next = next.max(1);
            match slot.compare_exchange_weak(v, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(seen) => v = seen,
            }
        }
        // Lost every race: the key is busy on other workers at this very moment; count the
        // query as over rather than spin.
        false
    }

    /// Octets the table holds.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.slots.len() * size_of::<AtomicU64>()
    }
}

/// The random-keyed hashes of the tables: addresses by a folded multiply under two
/// per-process random keys (a handful of instructions, on every UDP query while a rate is
/// on), questions by std's SipHash-1-3 with per-process keys. Nobody outside knows the
/// keys, so nobody can aim collisions at a victim's slots.
#[derive(Debug)]
pub(crate) struct KeyHash {
    keys: [u64; 2],
    sip: std::collections::hash_map::RandomState,
}

impl Default for KeyHash {
    fn default() -> Self {
        Self { keys: [rand::random::<u64>() | 1, rand::random::<u64>() | 1], sip: Default::default() }
    }
}

/// The high and low halves of a 64 x 64 bit product, folded (also the policy zones'
/// key hash, `rpz::table`).
pub(crate) fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a).wrapping_mul(u128::from(b));
    (p as u64) ^ ((p >> 64) as u64)
}

impl KeyHash {
    /// The hash of an address (or a network's address) for table `kind`.
    pub(crate) fn addr(&self, kind: u8, ip: IpAddr) -> u64 {
        let x = match ip {
            IpAddr::V4(a) => u128::from(u32::from(a)) | (1 << 127),
            IpAddr::V6(a) => u128::from(a),
        };
        let lo = fold((x as u64) ^ self.keys[0], u64::from(kind).wrapping_add(self.keys[1]));
        fold(lo ^ ((x >> 64) as u64), self.keys[1] ^ self.keys[0].rotate_left(32))
    }

    /// The hash of a network and a question (its name lowercased).
    pub(crate) fn question(&self, net: IpAddr, qname: &[u8], qtype: u16) -> u64 {
        let mut lower = [0u8; crate::wire::MAX_NAME_LEN];
        let n = crate::wire::lowercase_name(qname, &mut lower);
        let mut h = self.sip.build_hasher();
        h.write_u64(self.addr(2, net));
        h.write(&lower[..n]);
        h.write_u16(qtype);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_rate_per_second_and_refills_with_time() {
        let t = RateTable::new(10, 1024);
        let h = 0x1234_5678_9abc_def0;
        let ok = (0..15).filter(|_| t.take(h, 1000)).count();
        assert_eq!(ok, 10, "a full bucket holds one second's worth");
        assert!(!t.take(h, 1050), "50 ms give half a token");
        assert!(t.take(h, 1100), "100 ms give one");
        let ok = (0..15).filter(|_| t.take(h, 3000)).count();
        assert_eq!(ok, 10, "never more than one second's worth, however long the wait");
        // A reading from a worker whose turn began a little earlier takes no time back,
        // and does not move the slot's stamp back (which would count time twice).
        assert!(!t.take(h, 2990));
        assert!(!t.take(h, 3050), "50 ms after the latest stamp: half a token");
        assert!(t.take(h, 3100));
    }

    /// A slot left empty and idle for longer than the millisecond clock's half range
    /// (24.9 days) is full again, not stuck.
    #[test]
    fn a_slot_idle_past_the_clock_wrap_is_full_again() {
        let t = RateTable::new(3, 1024);
        let h = 42;
        while t.take(h, 1_000) {}
        for later in [1_000 + u32::MAX / 2 + 10, 1_000u32.wrapping_add(u32::MAX - 120_000)] {
            assert!(t.take(h, later), "{later}");
        }
    }

    /// A key whose two hashes name the same slot still gets its full rate.
    #[test]
    fn a_key_whose_two_slots_coincide_gets_its_whole_rate() {
        let t = RateTable::new(4, 1024);
        let h = (5u64 << 32) | 5;
        assert_eq!((0..10).filter(|_| t.take(h, 0)).count(), 4);
    }

    /// A heavy sender sharing one slot with a quiet client does not limit it: the quiet
    /// client's other slot still has tokens.
    #[test]
    fn a_client_sharing_one_slot_with_a_flooder_keeps_its_rate() {
        let t = RateTable::new(5, 1024);
        let (flooder, quiet) = (0x0000_0001_0000_0007u64, 0x0000_0002_0000_0007u64);
        assert_eq!(flooder as usize & t.mask, quiet as usize & t.mask, "same first slot");
        for _ in 0..100 {
            t.take(flooder, 0);
        }
        assert!(!t.take(flooder, 0));
        assert_eq!((0..5).filter(|_| t.take(quiet, 0)).count(), 5);
    }

    /// Any number of distinct sources fits in the same fixed table.
    #[test]
    fn the_table_never_grows() {
        let t = RateTable::new(1, 1024);
        let keys = KeyHash::default();
        let before = t.bytes();
        for i in 0..200_000u32 {
            t.take(keys.addr(0, IpAddr::from(i.to_be_bytes())), 0);
        }
        assert_eq!((before, t.bytes()), (1024 * 8, 1024 * 8));
    }

    /// Neighbouring addresses (a /24's hosts, a /64's) spread over the table's slots.
    #[test]
    fn address_hashes_spread_neighbours_over_the_slots() {
        let k = KeyHash::default();
        let mask = 1023u64;
        for (kind, base) in [(0u8, "192.0.2.0"), (1, "2001:db8::")] {
            let base: IpAddr = base.parse().unwrap();
            let mut slots = std::collections::HashSet::new();
            for i in 0..256u32 {
                let ip = match base {
                    IpAddr::V4(a) => IpAddr::from(std::net::Ipv4Addr::from(u32::from(a) + i)),
                    IpAddr::V6(a) => IpAddr::from(std::net::Ipv6Addr::from(u128::from(a) + u128::from(i))),
                };
                slots.insert(k.addr(kind, ip) & mask);
            }
            assert!(slots.len() > 200, "{base}: 256 addresses in {} of 1024 slots", slots.len());
        }
        assert_ne!(k.addr(0, "192.0.2.1".parse().unwrap()), k.addr(1, "192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn question_hashes_ignore_case_but_not_the_network_or_type() {
        let k = KeyHash::default();
        let net: IpAddr = "192.0.2.0".parse().unwrap();
        let other: IpAddr = "192.0.3.0".parse().unwrap();
        assert_eq!(k.question(net, b"\x03WwW\x00", 1), k.question(net, b"\x03www\x00", 1));
        assert_ne!(k.question(net, b"\x03www\x00", 1), k.question(net, b"\x03www\x00", 28));
        assert_ne!(k.question(net, b"\x03www\x00", 1), k.question(other, b"\x03www\x00", 1));
    }
}
