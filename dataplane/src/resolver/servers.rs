//! Per-server round-trip state shared by all workers: smoothed RTT and variance (RFC 6298
//! arithmetic), consecutive failures, and exponential back-off for servers that stop
//! answering. Server choice prefers the lowest SRTT; servers never tried get a small random
//! score so that each is explored once.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cache::clock::ClockCache;

const SHARDS: usize = 16;
/// Servers remembered (all shards); the least recently useful are forgotten first.
const CAPACITY: usize = 200_000;
/// Smallest and largest retransmission timeout.
const MIN_RTO: Duration = Duration::from_millis(50);
const MAX_RTO: Duration = Duration::from_secs(5);
/// Consecutive failures after which a server is held back.
const FAILURES_BEFORE_BACKOFF: u32 = 3;
/// Longest hold-back.
const MAX_BACKOFF: Duration = Duration::from_secs(120);

/// What we know of one server address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerInfo {
    /// Smoothed RTT in microseconds (0 = never measured).
    pub srtt_us: u32,
    /// RTT variance in microseconds.
    pub rttvar_us: u32,
    /// Consecutive failures (timeouts, refusals, bad answers).
    pub failures: u32,
    /// Not tried again before this instant, unless every other choice is worse.
    pub held_until: Option<Instant>,
    /// What the server has shown of EDNS(0).
    pub edns: EdnsSupport,
    /// The server cookie it gave last (RFC 7873), sent back with the next query.
    pub cookie: crate::admission::cookies::ServerCookie,
}

/// A server's EDNS(0) support, as its replies have shown it (DNS Flag Day 2019).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EdnsSupport {
    /// Nothing known yet.
    #[default]
    Unknown,
    /// It has answered with an OPT record: never asked without EDNS.
    Speaks,
    /// It answered FORMERR or NOTIMP without an OPT record, then answered the same query
    /// without EDNS: asked without EDNS until then (and tried with EDNS again after; never
    /// for a zone that may be signed).
    Lacks {
        /// When the server is tried with EDNS again.
        until: Instant,
    },
}

/// How long a server found to lack EDNS is asked without it before it is tried with EDNS
/// again (as Unbound keeps it, about a quarter of an hour): a spoofed FORMERR cannot
/// strip EDNS from an address for good.
pub const EDNS_LACKS_FOR: Duration = Duration::from_secs(900);

impl ServerInfo {
    /// Retransmission timeout for the next query: SRTT + 4 * RTTVAR, clamped.
    pub fn rto(&self, initial: Duration) -> Duration {
        if self.srtt_us == 0 {
            return initial;
        }
        let us = u64::from(self.srtt_us) + 4 * u64::from(self.rttvar_us);
        Duration::from_micros(us).clamp(MIN_RTO, MAX_RTO)
    }

    /// Folds one RTT sample in (RFC 6298 section 2 with alpha 1/8, beta 1/4).
    pub fn sample(&mut self, rtt: Duration) {
        let r = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX).max(1);
        if self.srtt_us == 0 {
            self.srtt_us = r;
            self.rttvar_us = r / 2;
        } else {
            let diff = self.srtt_us.abs_diff(r);
            self.rttvar_us = ((u64::from(self.rttvar_us) * 3 + u64::from(diff)) / 4) as u32;
            self.srtt_us = ((u64::from(self.srtt_us) * 7 + u64::from(r)) / 8) as u32;
        }
        self.failures = 0;
        self.held_until = None;
    }

    /// Records a failure; after a few in a row the server is held back, twice as long
    /// each time, up to a cap.
    pub fn fail(&mut self, now: Instant, rto: Duration) {
        self.failures = self.failures.saturating_add(1);
        // A timeout means the RTT is at least the timeout: grow the estimate.
        let floor = u32::try_from(rto.as_micros()).unwrap_or(u32::MAX);
        self.srtt_us = self.srtt_us.max(floor).saturating_mul(2).min(MAX_RTO.as_micros() as u32);
        if self.failures >= FAILURES_BEFORE_BACKOFF {
            let shift = (self.failures - FAILURES_BEFORE_BACKOFF).min(16);
            let hold = (Duration::from_secs(1) * (1u32 << shift)).min(MAX_BACKOFF);
            self.held_until = Some(now + hold);
        }
    }
}

/// The shared table.
#[derive(Debug)]
pub struct ServerTable {
    shards: Box<[Mutex<ClockCache<IpAddr, ServerInfo>>]>,
}

impl Default for ServerTable {
    fn default() -> Self {
        let per = CAPACITY / SHARDS * (ClockCache::<IpAddr, ServerInfo>::overhead() + 1);
        Self { shards: (0..SHARDS).map(|_| Mutex::new(ClockCache::new(per))).collect() }
    }
}

impl ServerTable {
    fn shard(&self, addr: &IpAddr) -> std::sync::MutexGuard<'_, ClockCache<IpAddr, ServerInfo>> {
        let mut h = DefaultHasher::new();
        addr.hash(&mut h);
        self.shards[(h.finish() as usize) % SHARDS].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Current state of a server (default when unknown).
    pub fn get(&self, addr: IpAddr) -> ServerInfo {
        self.shard(&addr).get(&addr).copied().unwrap_or_default()
    }

    /// Applies `f` to a server's state.
    pub fn update(&self, addr: IpAddr, f: impl FnOnce(&mut ServerInfo)) {
        self.shard(&addr).upsert(addr, 1, ServerInfo::default, f);
    }

    /// Every server remembered, with its state (for the API; locks one shard at a time).
    pub fn entries(&self) -> Vec<(IpAddr, ServerInfo)> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            s.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, v| {
                out.push((*k, *v));
                true
            });
        }
        out
    }

    /// The state of a server, if it is remembered.
    pub fn find(&self, addr: IpAddr) -> Option<ServerInfo> {
        self.shard(&addr).get(&addr).copied()
    }

    /// Forgets a server (an operator's reset): it is explored afresh.
    pub fn forget(&self, addr: IpAddr) -> bool {
        self.shard(&addr).remove(&addr).is_some()
    }

    /// Sort key for server choice: held-back servers last, then by SRTT; unknown servers
    /// get `jitter_us` (small and random) so they are explored early.
    pub fn score(&self, addr: IpAddr, now: Instant, jitter_us: u32) -> u64 {
        let info = self.get(addr);
        let held = info.held_until.is_some_and(|t| t > now);
        let rtt = if info.srtt_us == 0 { jitter_us } else { info.srtt_us };
        (u64::from(held) << 40) | u64::from(rtt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srtt_converges_and_rto_is_clamped() {
        let mut s = ServerInfo::default();
        assert_eq!(s.rto(Duration::from_millis(800)), Duration::from_millis(800));
        for _ in 0..50 {
            s.sample(Duration::from_millis(10));
        }
        assert!((9_000..=11_000).contains(&s.srtt_us), "{}", s.srtt_us);
        assert_eq!(
            s.rto(Duration::from_millis(800)),
            MIN_RTO.max(Duration::from_micros(u64::from(s.srtt_us) + 4 * u64::from(s.rttvar_us)))
        );
        let mut slow = ServerInfo::default();
        slow.sample(Duration::from_secs(30));
        assert_eq!(slow.rto(Duration::ZERO), MAX_RTO);
    }

    #[test]
    fn backoff_doubles_and_is_capped_and_success_clears_it() {
        let now = Instant::now();
        let mut s = ServerInfo::default();
        for _ in 0..2 {
            s.fail(now, Duration::from_millis(100));
        }
        assert_eq!(s.held_until, None);
        s.fail(now, Duration::from_millis(100));
        assert_eq!(s.held_until, Some(now + Duration::from_secs(1)));
        s.fail(now, Duration::from_millis(100));
        assert_eq!(s.held_until, Some(now + Duration::from_secs(2)));
        for _ in 0..40 {
            s.fail(now, Duration::from_millis(100));
        }
        assert_eq!(s.held_until, Some(now + MAX_BACKOFF));
        assert!(s.srtt_us <= MAX_RTO.as_micros() as u32);
        s.sample(Duration::from_millis(5));
        assert_eq!((s.failures, s.held_until), (0, None));
    }

    #[test]
    fn score_orders_held_servers_last() {
        let t = ServerTable::default();
        let now = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        t.update(a, |s| s.sample(Duration::from_millis(1)));
        t.update(b, |s| s.sample(Duration::from_millis(50)));
        assert!(t.score(a, now, 0) < t.score(b, now, 0));
        for _ in 0..3 {
            t.update(a, |s| s.fail(now, Duration::from_millis(100)));
        }
        assert!(t.score(a, now, 0) > t.score(b, now, 0));
    }
}
