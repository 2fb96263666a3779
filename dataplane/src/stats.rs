//! Per-worker counters. Each worker writes only its own (no shared cache line is written
//! on the hot path); readers sum them. A counter is a relaxed atomic with one writer, so
//! an increment is a plain load and store, not a locked read-modify-write.

use std::sync::atomic::{AtomicU64, Ordering};

use adox_api::StatsSnapshot;

/// One counter with a single writer thread.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one. Only the owning worker calls this.
    #[inline]
    pub fn bump(&self) {
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// Adds `n`. Only the owning worker calls this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Sets a gauge. Only the owning worker calls this.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

macro_rules! worker_stats {
    ($($field:ident),* $(,)?) => {
        /// The counters of one worker; field meanings as in [`StatsSnapshot`].
        #[derive(Debug, Default)]
        #[allow(missing_docs, reason = "documented on StatsSnapshot, field for field")]
        pub struct WorkerStats {
            $(pub $field: Counter,)*
            /// Resolution latency (cache misses), bucketed by [`LATENCY_BOUNDS_US`].
            pub latency: [Counter; LATENCY_BUCKETS],
            /// Sum of those latencies in microseconds.
            pub latency_sum_us: Counter,
        }

        impl WorkerStats {
            /// Adds this worker's values into `into`.
            pub fn add_to(&self, into: &mut StatsSnapshot) {
                $(into.$field += self.$field.get();)*
                for (i, c) in self.latency.iter().enumerate() {
                    into.resolution_latency[i] += c.get();
                }
                into.resolution_latency_sum_us += self.latency_sum_us.get();
            }
        }
    };
}

/// Upper bounds of the resolution latency buckets, in microseconds (the last is +Inf).
pub const LATENCY_BOUNDS_US: [u64; LATENCY_BUCKETS - 1] =
    [1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000];
/// Buckets, +Inf included.
pub const LATENCY_BUCKETS: usize = adox_api::LATENCY_BUCKETS;

worker_stats!(
    queries_udp,
    queries_tcp,
    rcode_noerror,
    rcode_nxdomain,
    rcode_servfail,
    rcode_refused,
    rcode_formerr,
    rcode_other,
    cache_hits,
    cache_misses,
    dropped,
    refused_acl,
    truncated,
    xdp_answered,
    xdp_dropped,
    upstream_udp,
    upstream_tcp,
    upstream_timeouts,
    upstream_dot,
    upstream_doq,
    upstream_doh,
    upstream_handoffs,
    doq_handshakes,
    tls_full,
    tls_resumed,
    downgrades,
    strict_failures,
    probes_started,
    probe_successes,
    probe_failures,
    signals_learned,
    signals_refused,
    signal_cycles,
    signal_waits,
    signal_wait_timeouts,
    deleg_secure,
    deleg_insecure,
    deleg_bogus,
    stale_answers,
    prefetches,
    edns_fallbacks,
    aggressive_nsec,
    dnssec_secure,
    dnssec_insecure,
    dnssec_bogus,
    coalesced,
    failures_cached,
    client_share_exceeded,
    rate_limited_client,
    rate_limited_prefix,
    rate_limited_response,
    rate_limit_slipped,
    rate_limit_dropped,
    rate_limit_refused,
    cookies_client_only,
    cookies_valid,
    cookies_invalid,
    upstream_badcookies,
    upstream_cookie_mismatches,
    dnstap_queued,
    dnstap_dropped,
    overload_shed,
    tcp_accepted,
    tcp_rejected,
    upstream_strict,
    upstream_opportunistic,
    upstream_cleartext,
    packet_cache_entries,
    packet_cache_bytes,
);

impl WorkerStats {
    /// Records one resolution's latency (non-cumulative bucket; the exposition sums them).
    pub fn observe_latency(&self, d: std::time::Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(LATENCY_BUCKETS - 1);
        self.latency[i].bump();
        self.latency_sum_us.add(us);
    }

    /// Counts a response by its RCODE (low four bits of the header's fourth octet).
    pub fn count_rcode(&self, response: &[u8]) {
        match response.get(3).map(|b| b & 0x0F) {
            Some(0) => self.rcode_noerror.bump(),
            Some(1) => self.rcode_formerr.bump(),
            Some(2) => self.rcode_servfail.bump(),
            Some(3) => self.rcode_nxdomain.bump(),
            Some(5) => self.rcode_refused.bump(),
            _ => self.rcode_other.bump(),
        }
    }
}

/// Sums the counters of all workers.
pub fn snapshot(workers: &[std::sync::Arc<WorkerStats>]) -> StatsSnapshot {
    let mut s = StatsSnapshot::default();
    for w in workers {
        w.add_to(&mut s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_sum_over_workers() {
        let a = Arc::new(WorkerStats::default());
        let b = Arc::new(WorkerStats::default());
        a.cache_hits.bump();
        b.cache_hits.bump();
        b.count_rcode(&[0, 0, 0x81, 0x83]);
        a.observe_latency(std::time::Duration::from_millis(3));
        b.observe_latency(std::time::Duration::from_secs(60));
        let s = snapshot(&[a, b]);
        assert_eq!(s.cache_hits, 2);
        assert_eq!((s.resolution_latency[1], s.resolution_latency[LATENCY_BUCKETS - 1]), (1, 1));
        assert_eq!(s.resolution_latency_sum_us, 60_003_000);
        assert_eq!(s.rcode_nxdomain, 1);
    }
}
