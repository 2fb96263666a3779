//! adox-api: the data model shared by the data plane, the control plane and `adoxctl`.
//!
//! It holds the statistics snapshot the data plane produces and the operator's transport
//! policy model ([`policy`]); server state and explain join them with the control plane.

use serde::{Deserialize, Serialize};

/// Buckets of the resolution latency histogram (see `StatsSnapshot::resolution_latency`).
pub const LATENCY_BUCKETS: usize = 12;

/// Counters summed over all workers. Every field counts events since start, except the
/// two `packet_cache_*` gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Client queries received over UDP (including refused and malformed ones).
    pub queries_udp: u64,
    /// Client queries received over TCP.
    pub queries_tcp: u64,
    /// Responses with RCODE NOERROR.
    pub rcode_noerror: u64,
    /// Responses with RCODE NXDOMAIN.
    pub rcode_nxdomain: u64,
    /// Responses with RCODE SERVFAIL.
    pub rcode_servfail: u64,
    /// Responses with RCODE REFUSED.
    pub rcode_refused: u64,
    /// Responses with RCODE FORMERR.
    pub rcode_formerr: u64,
    /// Responses with another RCODE (NOTIMP, BADVERS).
    pub rcode_other: u64,
    /// Queries answered from the packet cache.
    pub cache_hits: u64,
    /// Queries that needed the resolver.
    pub cache_misses: u64,
    /// Client messages dropped without an answer (responses, runts).
    pub dropped: u64,
    /// Queries refused by the client ACL.
    pub refused_acl: u64,
    /// Answers sent truncated (TC) over UDP.
    pub truncated: u64,
    /// UDP queries answered on the AF_XDP path, in the query's own frame (`[xdp]`).
    #[serde(default)]
    pub xdp_answered: u64,
    /// UDP datagrams the kernel redirected to an AF_XDP socket but dropped (its RX ring
    /// full, no free frame), as the sockets count them; read every half second.
    #[serde(default)]
    pub xdp_dropped: u64,
    /// Upstream queries sent over UDP.
    pub upstream_udp: u64,
    /// Upstream queries sent over TCP.
    pub upstream_tcp: u64,
    /// Upstream queries that timed out.
    pub upstream_timeouts: u64,
    /// Upstream queries sent over DoT.
    pub upstream_dot: u64,
    /// Upstream queries sent over DoQ.
    pub upstream_doq: u64,
    /// Upstream queries sent over DoH.
    #[serde(default)]
    pub upstream_doh: u64,
    /// Encrypted upstream queries handed to the worker that owns the connection to their
    /// server (`transport.connections_per_server`).
    #[serde(default)]
    pub upstream_handoffs: u64,
    /// QUIC handshakes to upstream servers (DoQ).
    pub doq_handshakes: u64,
    /// Full TLS handshakes to upstream servers.
    pub tls_full: u64,
    /// Resumed TLS handshakes to upstream servers.
    pub tls_resumed: u64,
    /// Opportunistic plans that fell back to Do53.
    pub downgrades: u64,
    /// Upstream exchanges refused by strict mode (no cleartext sent).
    pub strict_failures: u64,
    /// RFC 9539 probes started.
    pub probes_started: u64,
    /// Probes that found a working encrypted transport.
    pub probe_successes: u64,
    /// Probes that failed (refused, TLS failure, timeout).
    pub probe_failures: u64,
    /// `_dns` SVCB signals learned with at least one usable record.
    pub signals_learned: u64,
    /// Signal lookups in which some records were refused (malformed, hostile).
    pub signals_refused: u64,
    /// Signal lookups that depended on the nameserver they decide for (R5).
    pub signal_cycles: u64,
    /// First queries to a nameserver that waited for its signal and had it in time
    /// (`transport.signal_wait`).
    pub signal_waits: u64,
    /// Such waits that ran out (`transport.signal_wait_ms`): the query went out under
    /// what was known.
    pub signal_wait_timeouts: u64,
    /// DELEG RRsets read from referrals (experimental `transport.deleg`) that validated
    /// to the parent's keys: they name the child's servers and may make them strict.
    pub deleg_secure: u64,
    /// Such RRsets under an unsigned parent (or with validation off): opportunistic hints.
    pub deleg_insecure: u64,
    /// Such RRsets that failed validation: ignored.
    pub deleg_bogus: u64,
    /// Client queries answered from expired data (serve-stale, RFC 8767; EDE 3 or 19).
    pub stale_answers: u64,
    /// Answers refreshed in the background because they were asked for in the last tenth
    /// of their TTL (prefetch).
    pub prefetches: u64,
    /// Queries asked again without EDNS after a FORMERR/NOTIMP without OPT (DNS Flag Day
    /// 2019 fallback).
    pub edns_fallbacks: u64,
    /// Negative answers synthesized from validated NSEC spans without asking anyone
    /// (RFC 8198 aggressive use of the DNSSEC-validated cache).
    pub aggressive_nsec: u64,
    /// Resolutions whose answer validated to a trust anchor (AD).
    pub dnssec_secure: u64,
    /// Resolutions whose answer is provably unsigned, unanchored or not validated.
    pub dnssec_insecure: u64,
    /// Resolutions whose answer failed validation (SERVFAIL unless CD).
    pub dnssec_bogus: u64,
    /// Client queries that joined an identical resolution already under way.
    pub coalesced: u64,
    /// Failures kept in the packet cache (RFC 9520): for `cache.failure_ttl_s`, twice as
    /// long for each repeat of the name up to `cache.failure_max_ttl_s`; one entry per
    /// question and flag set: their repeats are answered SERVFAIL from the cache, with
    /// EDE 13.
    #[serde(default)]
    pub failures_cached: u64,
    /// Cache misses answered SERVFAIL because their client, or its network, had its share
    /// of the resolver in flight already (`[limits]`).
    #[serde(default)]
    pub client_share_exceeded: u64,
    /// UDP queries over `limits.queries_per_second_per_client`.
    #[serde(default)]
    pub rate_limited_client: u64,
    /// UDP queries over `limits.queries_per_second_per_prefix`.
    #[serde(default)]
    pub rate_limited_prefix: u64,
    /// UDP queries over `limits.responses_per_second` (the same question from one network).
    #[serde(default)]
    pub rate_limited_response: u64,
    /// Queries over a rate answered with an empty truncated response (`slip`).
    #[serde(default)]
    pub rate_limit_slipped: u64,
    /// Queries over a rate dropped without an answer.
    #[serde(default)]
    pub rate_limit_dropped: u64,
    /// Queries over a rate answered REFUSED.
    #[serde(default)]
    pub rate_limit_refused: u64,
    /// Client queries with a DNS cookie but no server cookie (RFC 7873).
    #[serde(default)]
    pub cookies_client_only: u64,
    /// Client queries with a valid server cookie: their address is proven.
    #[serde(default)]
    pub cookies_valid: u64,
    /// Client queries with a server cookie that is not valid (stale, forged, another
    /// address's, another secret's): answered with a fresh one.
    #[serde(default)]
    pub cookies_invalid: u64,
    /// Do53 replies BADCOOKIE from authoritative servers (asked again with the new server
    /// cookie, then over TCP).
    #[serde(default)]
    pub upstream_badcookies: u64,
    /// Do53 replies discarded because their COOKIE option did not echo adox's client
    /// cookie (RFC 7873 section 5.3).
    #[serde(default)]
    pub upstream_cookie_mismatches: u64,
    /// dnstap messages queued for the collector.
    #[serde(default)]
    pub dnstap_queued: u64,
    /// dnstap messages dropped because the buffer was full (a slow or absent collector).
    #[serde(default)]
    pub dnstap_dropped: u64,
    /// New cache misses dropped because the worker was past its capacity (no idle time
    /// for `server.overload_after_ms`); hits were still answered.
    #[serde(default)]
    pub overload_shed: u64,
    /// Client TCP connections accepted.
    pub tcp_accepted: u64,
    /// Client TCP connections closed at accept because the cap was reached.
    pub tcp_rejected: u64,
    /// Upstream exchanges (one query to one server address) under a strict plan.
    pub upstream_strict: u64,
    /// Upstream exchanges under an opportunistic plan.
    pub upstream_opportunistic: u64,
    /// Upstream exchanges under a cleartext plan.
    pub upstream_cleartext: u64,
    /// Gauge: entries in the workers' packet caches (summed).
    pub packet_cache_entries: u64,
    /// Gauge: bytes charged to the workers' packet caches (summed).
    pub packet_cache_bytes: u64,
    /// Resolutions (cache misses) by latency, from the query's arrival to the answer, per
    /// bucket (not cumulative): <= 1, 5, 10, 25, 50, 100, 250, 500 ms, 1, 2.5, 5 s, more.
    pub resolution_latency: [u64; LATENCY_BUCKETS],
    /// Sum of resolution latencies, microseconds.
    pub resolution_latency_sum_us: u64,
}

pub mod policy;
pub mod rest;

/// The OpenAPI 3.0 description of the REST API.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");
