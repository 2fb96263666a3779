//! Daemon configuration: a TOML file whose every field has an embedded default, so `adoxd`
//! runs with no file at all. Every numeric knob has a default, a minimum and a maximum in
//! [`bounds`]; [`Config::validate`] names the first bad field.
//!
//! Here: [`Config`], the [`bounds`] table, the errors, validation and the parse helpers;
//! each `[section]` has a file of its own, its type re-exported here.

mod access;
mod api;
mod cache;
mod cookies;
mod dnssec;
mod dnstap;
mod fleet;
mod limits;
mod local_zones;
mod resolver;
mod rpz;
mod server;
mod transport;
mod xdp;

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

pub use self::access::AccessConfig;
pub use self::api::ApiConfig;
pub use self::cache::CacheConfig;
pub use self::cookies::CookiesConfig;
pub use self::dnssec::DnssecConfig;
pub use self::dnstap::DnstapConfig;
pub use self::fleet::FleetConfig;
pub use self::limits::{LimitsConfig, RateAction};
pub use self::local_zones::LocalZonesConfig;
pub use self::resolver::ResolverConfig;
pub use self::rpz::{RpzConfig, RpzZoneConfig, parse_primary};
pub use self::server::{LogFormat, ServerConfig};
pub use self::transport::{SignalWait, TransportConfig};
pub use self::xdp::XdpConfig;
use crate::acl::parse_prefix;

/// A numeric knob: its TOML path, default and inclusive range.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// Dotted TOML path, used in error messages.
    pub field: &'static str,
    /// Value when the field is absent.
    pub default: u64,
    /// Smallest accepted value.
    pub min: u64,
    /// Largest accepted value.
    pub max: u64,
}

impl Bound {
    fn check(&self, value: u64) -> Result<(), ConfigError> {
        if value < self.min || value > self.max {
            return Err(ConfigError::OutOfRange { field: self.field, value, min: self.min, max: self.max });
        }
        Ok(())
    }
}

/// Every numeric knob in one table (unit in the name).
pub mod bounds {
    use super::Bound;
    const fn b(field: &'static str, default: u64, min: u64, max: u64) -> Bound {
        Bound { field, default, min, max }
    }
    /// Worker threads; 0 means one per available core.
    pub const WORKERS: Bound = b("server.workers", 0, 0, 1024);
    /// Idle time after which a client TCP connection is closed (RFC 7766 section 6.2.3).
    pub const TCP_IDLE_TIMEOUT_MS: Bound = b("server.tcp_idle_timeout_ms", 10_000, 100, 600_000);
    /// Client TCP connections per worker; further connections are refused at accept.
    pub const TCP_MAX_CONNECTIONS: Bound = b("server.tcp_max_connections", 1024, 1, 1_000_000);
    /// Client TCP connections from one address, per worker (clients behind one NAT share
    /// it; the kernel spreads connections over workers).
    pub const TCP_MAX_CONNECTIONS_PER_CLIENT: Bound = b("server.tcp_max_connections_per_client", 64, 1, 1_000_000);
    /// Time a client has to finish a message it started sending: a trickle of bytes does
    /// not keep a connection open (the idle timeout counts from the last whole message).
    pub const TCP_MESSAGE_TIMEOUT_MS: Bound = b("server.tcp_message_timeout_ms", 5_000, 100, 600_000);
    /// Queries in flight on one client TCP connection; more are read only as answers leave.
    pub const TCP_MAX_PIPELINED: Bound = b("server.tcp_max_pipelined", 64, 1, 65_535);
    /// Datagrams read per socket per wake-up before other work gets a turn.
    pub const UDP_BATCH: Bound = b("server.udp_batch", 64, 1, 1024);
    /// A worker with (almost) no idle time for this long is past its capacity: new cache
    /// misses it reads over UDP are dropped (hits are still answered) until it has idle
    /// time again.
    pub const OVERLOAD_AFTER_MS: Bound = b("server.overload_after_ms", 200, 100, 60_000);
    /// Cache misses one client address may have in flight per worker; past it, its further
    /// misses get SERVFAIL until one ends (hits are always answered).
    pub const MAX_RESOLUTIONS_PER_CLIENT: Bound = b("limits.max_resolutions_per_client", 500, 1, 1_000_000);
    /// Cache misses one client network (see the prefix lengths) may have in flight per worker.
    pub const MAX_RESOLUTIONS_PER_PREFIX: Bound = b("limits.max_resolutions_per_prefix", 2_000, 1, 1_000_000);
    /// IPv4 prefix length that makes one client network.
    pub const CLIENT_PREFIX_V4: Bound = b("limits.client_prefix_v4", 24, 0, 32);
    /// IPv6 prefix length that makes one client network.
    pub const CLIENT_PREFIX_V6: Bound = b("limits.client_prefix_v6", 56, 0, 128);
    /// UDP queries per second one client address may send (0: no limit); TCP and clients
    /// with a valid DNS cookie are exempt (their source address is proven).
    pub const QUERIES_PER_SECOND_PER_CLIENT: Bound = b("limits.queries_per_second_per_client", 0, 0, 1_000_000);
    /// UDP queries per second one client network (the prefix lengths above) may send (0: no
    /// limit).
    pub const QUERIES_PER_SECOND_PER_PREFIX: Bound = b("limits.queries_per_second_per_prefix", 0, 0, 1_000_000);
    /// Identical answers (same question) per second to one client network over UDP (0: no
    /// limit): response-rate limiting against reflection at a spoofed victim.
    pub const RESPONSES_PER_SECOND: Bound = b("limits.responses_per_second", 0, 0, 1_000_000);
    /// With `rate_limit_action = "slip"`: one query in this many over a rate gets an empty
    /// truncated answer (1: every one; a TC answer is no larger than the query).
    pub const SLIP: Bound = b("limits.slip", 1, 1, 100);
    /// Slots of each rate table (rounded up to a power of two; 8 octets each, fixed at
    /// start: a flood from random addresses cannot grow it).
    pub const RATE_TABLE_SLOTS: Bound = b("limits.rate_table_slots", 65_536, 1_024, 16_777_216);
    /// How often a generated cookie secret is replaced (the previous one is still
    /// accepted until the next replacement).
    pub const COOKIE_ROTATE_S: Bound = b("cookies.rotate_s", 86_400, 3_600, 31_536_000);
    /// Encoded dnstap messages waiting for the collector at most; past it new messages are
    /// dropped (and counted), so a slow collector never slows answers.
    pub const DNSTAP_BUFFER_BYTES: Bound = b("dnstap.buffer_bytes", 16 << 20, 64 << 10, 4 << 30);
    /// Longest one policy zone transfer may take (`[rpz]`), connection included.
    pub const RPZ_TRANSFER_TIMEOUT_S: Bound = b("rpz.transfer_timeout_s", 120, 1, 3_600);
    /// Records one policy zone transfer may carry; a primary that sends more is refused.
    pub const RPZ_MAX_RECORDS: Bound = b("rpz.max_records", 5_000_000, 1, 20_000_000);
    /// How long an API write waits for etcd (fleet mode) before it answers 503.
    pub const FLEET_ETCD_TIMEOUT_MS: Bound = b("fleet.etcd_timeout_ms", 3_000, 100, 60_000);
    /// Per-worker packet cache size.
    pub const PACKET_CACHE_BYTES: Bound = b("cache.packet_cache_bytes", 32 << 20, 0, 64 << 30);
    /// Shared record cache size.
    pub const RECORD_CACHE_BYTES: Bound = b("cache.record_cache_bytes", 256 << 20, 1 << 20, 256 << 30);
    /// Shortest TTL kept (and handed out) for positive data: shorter TTLs are raised. 0
    /// keeps the owner's TTLs; anything else serves data longer than its owner said.
    pub const MIN_TTL_S: Bound = b("cache.min_ttl_s", 0, 0, 3_600);
    /// Longest TTL kept for positive data.
    pub const MAX_TTL_S: Bound = b("cache.max_ttl_s", 86_400, 1, 604_800);
    /// Longest TTL kept for negative answers (RFC 2308 section 5).
    pub const MAX_NEGATIVE_TTL_S: Bound = b("cache.max_negative_ttl_s", 3_600, 0, 86_400);
    /// Serve-stale (RFC 8767): how long past its TTL a cached answer may still be served
    /// when no authority answers (seconds; the cache keeps expired entries that long).
    pub const STALE_MAX_S: Bound = b("cache.stale_max_s", 86_400, 1, 604_800);
    /// The TTL of a stale answer (RFC 8767 section 4: 30 s).
    pub const STALE_TTL_S: Bound = b("cache.stale_ttl_s", 30, 1, 3_600);
    /// The client-response timer (RFC 8767 section 5: 1.8 s): a query still resolving
    /// after this long is answered stale if it can be (0: stale at once, refreshed
    /// behind the answer).
    pub const STALE_CLIENT_TIMEOUT_MS: Bound = b("cache.stale_client_timeout_ms", 1_800, 0, 60_000);
    /// The failure-recheck timer (RFC 8767 section 5: 30 s): after a resolution failed and
    /// was answered stale, that question is answered stale without a new attempt.
    pub const STALE_RECHECK_S: Bound = b("cache.stale_recheck_s", 30, 1, 3_600);
    /// How long a resolution failure is kept in the packet cache (RFC 9520 section 3: at
    /// least 1 s, at most 5 minutes; Unbound keeps one 5 s, BIND 1 s): a name that cannot
    /// be resolved costs a cache hit per repeat, not a new walk. 0 keeps none.
    pub const FAILURE_TTL_S: Bound = b("cache.failure_ttl_s", 5, 0, 300);
    /// The longest a failure is kept once it repeats: each failure of a name that follows
    /// the end of its last kept one within as long again is kept twice as long, up to this
    /// (RFC 9520 section 3.2: backoff, at most 5 minutes). At or below `failure_ttl_s`,
    /// no growth.
    pub const FAILURE_MAX_TTL_S: Bound = b("cache.failure_max_ttl_s", 60, 0, 300);
    /// Prefetch refreshes started per second, per worker, at most (the rest of the due
    /// entries simply expire and are resolved when next asked).
    pub const PREFETCH_MAX_PER_S: Bound = b("cache.prefetch_max_per_s", 100, 1, 100_000);
    /// EDNS(0) UDP payload size advertised upstream and to clients (DNS flag day 2020).
    pub const EDNS_UDP_SIZE: Bound = b("resolver.edns_udp_size", 1232, 512, 4096);
    /// Wall-clock budget for resolving one client query.
    pub const REQUEST_TIMEOUT_MS: Bound = b("resolver.request_timeout_ms", 8_000, 100, 60_000);
    /// Timeout of one upstream query to a server with no RTT history.
    pub const INITIAL_RTO_MS: Bound = b("resolver.initial_rto_ms", 800, 10, 10_000);
    /// Upstream queries (all servers, all steps) spent on one client query.
    pub const MAX_QUERIES_PER_REQUEST: Bound = b("resolver.max_queries_per_request", 64, 1, 1024);
    /// Nested resolutions (nameserver addresses, chains) below one client query.
    pub const MAX_DEPTH: Bound = b("resolver.max_depth", 8, 1, 32);
    /// CNAME and DNAME links followed for one client query.
    pub const MAX_CHAIN: Bound = b("resolver.max_chain", 12, 1, 64);
    /// Referrals followed in one resolution.
    pub const MAX_REFERRALS: Bound = b("resolver.max_referrals", 32, 1, 128);
    /// Nameserver names without addresses resolved per zone cut (NXNS defence).
    pub const MAX_NS_LOOKUPS: Bound = b("resolver.max_ns_lookups", 4, 1, 32);
    /// Servers tried for one step before giving up.
    pub const MAX_SERVERS_PER_STEP: Bound = b("resolver.max_servers_per_step", 6, 1, 32);
    /// Upstream queries outstanding to one server address, per worker.
    pub const MAX_OUTSTANDING_PER_SERVER: Bound = b("resolver.max_outstanding_per_server", 256, 1, 100_000);
    /// Upstream queries outstanding into one zone, per worker (random-subdomain defence).
    pub const MAX_OUTSTANDING_PER_ZONE: Bound = b("resolver.max_outstanding_per_zone", 512, 1, 100_000);
    /// Client queries being resolved at once, per worker; more get SERVFAIL at once.
    pub const MAX_RESOLUTIONS: Bound = b("resolver.max_resolutions", 10_000, 1, 1_000_000);
    /// One DoT query, connection and TLS handshake included (RFC 9539 E-timeout: 4 s).
    pub const DOT_TIMEOUT_MS: Bound = b("transport.dot_timeout_ms", 4_000, 100, 60_000);
    /// The longest a query waits for a nameserver's `_dns` signal before its first query
    /// to it (`transport.signal_wait`).
    pub const SIGNAL_WAIT_MS: Bound = b("transport.signal_wait_ms", 1_000, 10, 10_000);
    /// A DoT connection with no query for this long is closed.
    pub const DOT_IDLE_TIMEOUT_MS: Bound = b("transport.dot_idle_timeout_ms", 30_000, 100, 3_600_000);
    /// Queries in flight on one DoT or DoQ connection (for DoQ also the receive window,
    /// in answers of 65,537 octets).
    pub const DOT_MAX_OUTSTANDING: Bound = b("transport.dot_max_outstanding", 128, 1, 65_535);
    /// Encrypted upstream connections one worker keeps open at most, per transport (DoT,
    /// DoQ): a flood of fresh server addresses cannot take every descriptor.
    pub const UPSTREAM_MAX_CONNECTIONS: Bound = b("transport.max_connections", 4_096, 16, 1_000_000);
    /// Workers that own encrypted connections to one server (address and port): queries
    /// starting on the others are handed to them. The number of workers or more: every
    /// worker keeps its own connections.
    pub const CONNECTIONS_PER_SERVER: Bound = b("transport.connections_per_server", 1, 1, 1024);
    /// Servers whose TLS session tickets are kept (shared by all workers).
    pub const SESSION_CACHE_SERVERS: Bound = b("transport.session_cache_servers", 100_000, 16, 10_000_000);
    /// RFC 9539 E-persistence: how long a working encrypted transport is trusted (3 days).
    pub const PROBE_PERSISTENCE_S: Bound = b("transport.probe_persistence_s", 259_200, 60, 31_536_000);
    /// RFC 9539 E-damping: how long a failed one is not tried again (1 day).
    pub const PROBE_DAMPING_S: Bound = b("transport.probe_damping_s", 86_400, 10, 31_536_000);
    /// Probes under way at once, per worker.
    pub const MAX_CONCURRENT_PROBES: Bound = b("transport.max_concurrent_probes", 64, 1, 100_000);
    /// Sustained REST API requests per second per client address.
    pub const API_RATE_PER_S: Bound = b("api.rate_per_s", 200, 1, 1_000_000);
    /// REST API requests a client address may make in a burst.
    pub const API_RATE_BURST: Bound = b("api.rate_burst", 2_000, 1, 10_000_000);
    /// Largest REST request body for single objects (a policy, a flush).
    pub const API_MAX_BODY_BYTES: Bound = b("api.max_body_bytes", 64 << 10, 1 << 10, 16 << 20);
    /// Largest REST request body for a bulk policy import.
    pub const API_MAX_IMPORT_BYTES: Bound = b("api.max_import_bytes", 64 << 20, 1 << 10, 1 << 30);
    /// NSEC3 iterations above which a denial is insecure (RFC 9276 section 3.2; Unbound
    /// and BIND use 150).
    pub const NSEC3_MAX_ITERATIONS: Bound = b("dnssec.nsec3_max_iterations", 150, 0, 2500);
    /// Signature checks one client query may make (KeyTrap, CVE-2023-50387).
    pub const MAX_SIG_CHECKS: Bound = b("dnssec.max_sig_checks", 64, 1, 10_000);
    /// NSEC3 hashes one client query may compute (CVE-2023-50868).
    pub const MAX_NSEC3_HASHES: Bound = b("dnssec.max_nsec3_hashes", 64, 1, 10_000);
    /// How long bogus data is cached before it is fetched again.
    pub const BOGUS_TTL_S: Bound = b("dnssec.bogus_ttl_s", 60, 1, 86_400);
    /// RFC 5011 add hold-down: a new key of an anchored zone is trusted once it has been
    /// seen this long (30 days; or the DNSKEY RRset's original TTL if longer).
    pub const RFC5011_ADD_HOLDDOWN_S: Bound = b("dnssec.rfc5011_add_holddown_s", 2_592_000, 1, 31_536_000);
    /// RFC 5011 remove hold-down: a revoked key is remembered this long (30 days).
    pub const RFC5011_REMOVE_HOLDDOWN_S: Bound = b("dnssec.rfc5011_remove_holddown_s", 2_592_000, 1, 31_536_000);
    /// RFC 5011 section 2.3: the floor of the refresh and retry intervals of an anchored
    /// zone's keys (one hour; the intervals themselves follow the RRset's TTL).
    pub const RFC5011_MIN_REFRESH_S: Bound = b("dnssec.rfc5011_min_refresh_s", 3_600, 1, 86_400);

    /// All knobs, for documentation and `--help`.
    pub const ALL: &[Bound] = &[
        WORKERS,
        TCP_IDLE_TIMEOUT_MS,
        TCP_MAX_CONNECTIONS,
        TCP_MAX_PIPELINED,
        TCP_MAX_CONNECTIONS_PER_CLIENT,
        TCP_MESSAGE_TIMEOUT_MS,
        MAX_RESOLUTIONS_PER_CLIENT,
        MAX_RESOLUTIONS_PER_PREFIX,
        CLIENT_PREFIX_V4,
        CLIENT_PREFIX_V6,
        QUERIES_PER_SECOND_PER_CLIENT,
        QUERIES_PER_SECOND_PER_PREFIX,
        RESPONSES_PER_SECOND,
        SLIP,
        RATE_TABLE_SLOTS,
        COOKIE_ROTATE_S,
        DNSTAP_BUFFER_BYTES,
        RPZ_TRANSFER_TIMEOUT_S,
        RPZ_MAX_RECORDS,
        FLEET_ETCD_TIMEOUT_MS,
        UDP_BATCH,
        OVERLOAD_AFTER_MS,
        PACKET_CACHE_BYTES,
        RECORD_CACHE_BYTES,
        MAX_TTL_S,
        MAX_NEGATIVE_TTL_S,
        STALE_MAX_S,
        STALE_TTL_S,
        STALE_CLIENT_TIMEOUT_MS,
        STALE_RECHECK_S,
        FAILURE_TTL_S,
        PREFETCH_MAX_PER_S,
        EDNS_UDP_SIZE,
        REQUEST_TIMEOUT_MS,
        INITIAL_RTO_MS,
        MAX_QUERIES_PER_REQUEST,
        MAX_DEPTH,
        MAX_CHAIN,
        MAX_REFERRALS,
        MAX_NS_LOOKUPS,
        MAX_SERVERS_PER_STEP,
        MAX_OUTSTANDING_PER_SERVER,
        MAX_OUTSTANDING_PER_ZONE,
        MAX_RESOLUTIONS,
        DOT_TIMEOUT_MS,
        DOT_IDLE_TIMEOUT_MS,
        DOT_MAX_OUTSTANDING,
        UPSTREAM_MAX_CONNECTIONS,
        CONNECTIONS_PER_SERVER,
        SESSION_CACHE_SERVERS,
        PROBE_PERSISTENCE_S,
        PROBE_DAMPING_S,
        MAX_CONCURRENT_PROBES,
        API_RATE_PER_S,
        API_RATE_BURST,
        API_MAX_BODY_BYTES,
        API_MAX_IMPORT_BYTES,
        NSEC3_MAX_ITERATIONS,
        MAX_SIG_CHECKS,
        MAX_NSEC3_HASHES,
        BOGUS_TTL_S,
        RFC5011_ADD_HOLDDOWN_S,
        RFC5011_REMOVE_HOLDDOWN_S,
        RFC5011_MIN_REFRESH_S,
    ];
}

/// A configuration error, naming the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML did not parse or did not match the schema (unknown field, wrong type).
    #[error("{0}")]
    Syntax(String),
    /// A numeric field outside its range.
    #[error("{field} = {value} is out of range ({min}..={max})")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value given.
        value: u64,
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
    /// A field whose value is not valid for another reason.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, with an index for list items (`access.allow_clients[2]`).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A file named by the configuration could not be read.
    #[error("{field}: cannot read {path}: {source}")]
    File {
        /// The field naming the file.
        field: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn d<T: TryFrom<u64>>(b: Bound) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(b.default).unwrap_or_else(|_| unreachable!("default of {} fits its type", b.field))
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Config {
    /// Listeners, threads, client connections.
    pub server: ServerConfig,
    /// Who may query us, and which upstream addresses we may query.
    pub access: AccessConfig,
    /// Iterative resolution.
    pub resolver: ResolverConfig,
    /// Cache sizes and TTL caps.
    pub cache: CacheConfig,
    /// Each client's share of the resolver and its query rates.
    pub limits: LimitsConfig,
    /// DNS cookies for clients.
    pub cookies: CookiesConfig,
    /// Message logging to a dnstap collector.
    pub dnstap: DnstapConfig,
    /// Response Policy Zones.
    pub rpz: RpzConfig,
    /// Where a fleet keeps what is set through the API.
    pub fleet: FleetConfig,
    /// The experimental AF_XDP path for cache hits.
    pub xdp: XdpConfig,
    /// Special-use names answered locally.
    pub local_zones: LocalZonesConfig,
    /// Encrypted upstream transports.
    pub transport: TransportConfig,
    /// The REST control plane.
    pub api: ApiConfig,
    /// DNSSEC validation.
    pub dnssec: DnssecConfig,
    /// Operator transport overrides, as `[[policy]]` tables (the REST API's field names).
    #[serde(rename = "policy")]
    pub policies: Vec<adox_api::policy::PolicySpec>,
    /// Forward, stub and local zones, as `[[zones]]` tables (the REST API's field names).
    pub zones: Vec<adox_api::rest::ZoneSpec>,
}
/// Parses a listen address: `ADDR:PORT`, IPv6 as `[::1]:5300`.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>().map_err(|_| format!("`{s}` is not ADDR:PORT (IPv6 as [::1]:5300)"))
}

impl Config {
    /// Parses a TOML document; unknown fields are errors.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))
    }

    /// Reads and parses a file, then validates it.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
            field: "--config",
            path: path.to_path_buf(),
            source,
        })?;
        let cfg = Self::from_toml(&text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        let r = &self.resolver;
        let c = &self.cache;
        let t = &self.transport;
        let a = &self.api;
        let v = &self.dnssec;
        let checks: [(Bound, u64); 67] = [
            (bounds::WORKERS, s.workers as u64),
            (bounds::TCP_IDLE_TIMEOUT_MS, s.tcp_idle_timeout_ms),
            (bounds::TCP_MAX_CONNECTIONS, s.tcp_max_connections as u64),
            (bounds::TCP_MAX_PIPELINED, s.tcp_max_pipelined as u64),
            (bounds::TCP_MAX_CONNECTIONS_PER_CLIENT, s.tcp_max_connections_per_client as u64),
            (bounds::TCP_MESSAGE_TIMEOUT_MS, s.tcp_message_timeout_ms),
            (bounds::MAX_RESOLUTIONS_PER_CLIENT, u64::from(self.limits.max_resolutions_per_client)),
            (bounds::MAX_RESOLUTIONS_PER_PREFIX, u64::from(self.limits.max_resolutions_per_prefix)),
            (bounds::CLIENT_PREFIX_V4, u64::from(self.limits.client_prefix_v4)),
            (bounds::CLIENT_PREFIX_V6, u64::from(self.limits.client_prefix_v6)),
            (bounds::QUERIES_PER_SECOND_PER_CLIENT, u64::from(self.limits.queries_per_second_per_client)),
            (bounds::QUERIES_PER_SECOND_PER_PREFIX, u64::from(self.limits.queries_per_second_per_prefix)),
            (bounds::RESPONSES_PER_SECOND, u64::from(self.limits.responses_per_second)),
            (bounds::SLIP, u64::from(self.limits.slip)),
            (bounds::RATE_TABLE_SLOTS, u64::from(self.limits.rate_table_slots)),
            (bounds::COOKIE_ROTATE_S, self.cookies.rotate_s),
            (bounds::DNSTAP_BUFFER_BYTES, self.dnstap.buffer_bytes),
            (bounds::RPZ_TRANSFER_TIMEOUT_S, self.rpz.transfer_timeout_s),
            (bounds::RPZ_MAX_RECORDS, self.rpz.max_records),
            (bounds::FLEET_ETCD_TIMEOUT_MS, self.fleet.etcd_timeout_ms),
            (bounds::UDP_BATCH, s.udp_batch as u64),
            (bounds::OVERLOAD_AFTER_MS, s.overload_after_ms),
            (bounds::PACKET_CACHE_BYTES, c.packet_cache_bytes),
            (bounds::RECORD_CACHE_BYTES, c.record_cache_bytes),
            (bounds::MIN_TTL_S, u64::from(c.min_ttl_s)),
            (bounds::MAX_TTL_S, u64::from(c.max_ttl_s)),
            (bounds::MAX_NEGATIVE_TTL_S, u64::from(c.max_negative_ttl_s)),
            (bounds::STALE_MAX_S, u64::from(c.stale_max_s)),
            (bounds::STALE_TTL_S, u64::from(c.stale_ttl_s)),
            (bounds::STALE_CLIENT_TIMEOUT_MS, c.stale_client_timeout_ms),
            (bounds::STALE_RECHECK_S, u64::from(c.stale_recheck_s)),
            (bounds::FAILURE_TTL_S, u64::from(c.failure_ttl_s)),
            (bounds::FAILURE_MAX_TTL_S, u64::from(c.failure_max_ttl_s)),
            (bounds::PREFETCH_MAX_PER_S, u64::from(c.prefetch_max_per_s)),
            (bounds::EDNS_UDP_SIZE, u64::from(r.edns_udp_size)),
            (bounds::REQUEST_TIMEOUT_MS, r.request_timeout_ms),
            (bounds::INITIAL_RTO_MS, r.initial_rto_ms),
            (bounds::MAX_QUERIES_PER_REQUEST, u64::from(r.max_queries_per_request)),
            (bounds::MAX_DEPTH, u64::from(r.max_depth)),
            (bounds::MAX_CHAIN, u64::from(r.max_chain)),
            (bounds::MAX_REFERRALS, u64::from(r.max_referrals)),
            (bounds::MAX_NS_LOOKUPS, u64::from(r.max_ns_lookups)),
            (bounds::MAX_SERVERS_PER_STEP, u64::from(r.max_servers_per_step)),
            (bounds::MAX_OUTSTANDING_PER_SERVER, u64::from(r.max_outstanding_per_server)),
            (bounds::MAX_OUTSTANDING_PER_ZONE, u64::from(r.max_outstanding_per_zone)),
            (bounds::MAX_RESOLUTIONS, u64::from(r.max_resolutions)),
            (bounds::DOT_TIMEOUT_MS, t.dot_timeout_ms),
            (bounds::SIGNAL_WAIT_MS, t.signal_wait_ms),
            (bounds::DOT_IDLE_TIMEOUT_MS, t.dot_idle_timeout_ms),
            (bounds::DOT_MAX_OUTSTANDING, t.dot_max_outstanding as u64),
            (bounds::UPSTREAM_MAX_CONNECTIONS, t.max_connections as u64),
            (bounds::CONNECTIONS_PER_SERVER, t.connections_per_server as u64),
            (bounds::SESSION_CACHE_SERVERS, t.session_cache_servers as u64),
            (bounds::PROBE_PERSISTENCE_S, t.probe_persistence_s),
            (bounds::PROBE_DAMPING_S, t.probe_damping_s),
            (bounds::MAX_CONCURRENT_PROBES, u64::from(t.max_concurrent_probes)),
            (bounds::API_RATE_PER_S, u64::from(a.rate_per_s)),
            (bounds::API_RATE_BURST, u64::from(a.rate_burst)),
            (bounds::API_MAX_BODY_BYTES, a.max_body_bytes as u64),
            (bounds::API_MAX_IMPORT_BYTES, a.max_import_bytes as u64),
            (bounds::NSEC3_MAX_ITERATIONS, u64::from(v.nsec3_max_iterations)),
            (bounds::MAX_SIG_CHECKS, u64::from(v.max_sig_checks)),
            (bounds::MAX_NSEC3_HASHES, u64::from(v.max_nsec3_hashes)),
            (bounds::BOGUS_TTL_S, u64::from(v.bogus_ttl_s)),
            (bounds::RFC5011_ADD_HOLDDOWN_S, v.rfc5011_add_holddown_s),
            (bounds::RFC5011_REMOVE_HOLDDOWN_S, v.rfc5011_remove_holddown_s),
            (bounds::RFC5011_MIN_REFRESH_S, v.rfc5011_min_refresh_s),
        ];
        for (b, v) in checks {
            b.check(v)?;
        }
        if c.min_ttl_s > c.max_ttl_s {
            return Err(ConfigError::Invalid {
                field: "cache.min_ttl_s".into(),
                reason: format!("{} is above cache.max_ttl_s ({})", c.min_ttl_s, c.max_ttl_s),
            });
        }
        if s.listen.is_empty() {
            return Err(ConfigError::Invalid {
                field: "server.listen".into(),
                reason: "needs at least one address".into(),
            });
        }
        for (i, l) in s.listen.iter().enumerate() {
            parse_listen(l).map_err(|reason| ConfigError::Invalid { field: format!("server.listen[{i}]"), reason })?;
        }
        crate::log_filter_is_valid(&s.log_level)
            .map_err(|reason| ConfigError::Invalid { field: "server.log_level".into(), reason })?;
        if s.group.is_some() && s.user.is_none() {
            return Err(ConfigError::Invalid { field: "server.group".into(), reason: "needs server.user".into() });
        }
        if s.user.as_deref().is_some_and(|u| u.is_empty() || u.contains('\0')) {
            return Err(ConfigError::Invalid { field: "server.user".into(), reason: "not a user name".into() });
        }
        self.client_prefixes()?;
        self.upstream_prefixes()?;
        self.limits.rate_action()?;
        self.dnstap.collector()?;
        self.rpz.zones()?;
        self.rpz.notify()?;
        self.fleet.check()?;
        self.xdp.check(self.worker_count(), &self.listen_addrs()?)?;
        self.limits.exempt_prefixes()?;
        t.outgoing_addrs()?;
        self.policies()?;
        self.zone_table()?;
        self.api.listen_addr()?;
        if !matches!(v.mode.as_str(), "validate" | "off") {
            return Err(ConfigError::Invalid {
                field: "dnssec.mode".into(),
                reason: format!("{:?}: expected \"validate\" or \"off\"", v.mode),
            });
        }
        v.negative_anchors()?;
        if self.api.tls_cert_file.is_some() != self.api.tls_key_file.is_some() {
            return Err(ConfigError::Invalid {
                field: "api.tls_key_file".into(),
                reason: "tls_cert_file and tls_key_file go together".into(),
            });
        }
        Ok(())
    }

    /// A forward or stub zone whose servers the upstream ACL forbids could never be asked:
    /// checked on the whole configuration (file and command line), by `check-config` and
    /// at start, not on the file alone (`--allow-upstream` may open them).
    pub fn check_zone_servers(&self) -> Result<(), ConfigError> {
        let upstream = crate::acl::AccessPolicy::new(&self.client_prefixes()?, &self.upstream_prefixes()?);
        self.zone_table()?
            .check_servers(|ip| upstream.upstream_allowed(ip))
            .map_err(|e| ConfigError::Invalid { field: format!("zones{}", e.field), reason: e.reason })
    }

    /// The `[[zones]]` tables, compiled.
    pub fn zone_table(&self) -> Result<crate::resolver::zones::ZoneTable, ConfigError> {
        crate::resolver::zones::ZoneTable::compile(&self.zones, &[])
            .map_err(|e| ConfigError::Invalid { field: format!("zones{}", e.field), reason: e.reason })
    }

    /// The `[[policy]]` tables, validated and normalized; ids are `cfg-N` (N from 1, in
    /// file order) and they are read-only for the API.
    pub fn policies(&self) -> Result<Vec<adox_api::policy::Policy>, ConfigError> {
        self.policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.normalize(format!("cfg-{}", i + 1), true)
                    .map_err(|e| ConfigError::Invalid { field: format!("policy[{i}].{}", e.field), reason: e.reason })
            })
            .collect()
    }

    /// The listen addresses, parsed.
    pub fn listen_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.server
            .listen
            .iter()
            .enumerate()
            .map(|(i, l)| {
                parse_listen(l).map_err(|reason| ConfigError::Invalid { field: format!("server.listen[{i}]"), reason })
            })
            .collect()
    }

    /// The allowed client prefixes, parsed.
    pub fn client_prefixes(&self) -> Result<Vec<IpNet>, ConfigError> {
        parse_list("access.allow_clients", &self.access.allow_clients)
    }

    /// The opened upstream prefixes, parsed.
    pub fn upstream_prefixes(&self) -> Result<Vec<IpNet>, ConfigError> {
        parse_list("access.allow_upstream", &self.access.allow_upstream)
    }

    /// Whether validation is on but nothing can anchor it: custom root hints (a private
    /// root) and no `dnssec.trust_anchor_file`. Everything is then insecure.
    pub fn dnssec_unanchored(&self) -> bool {
        self.dnssec.validating() && self.dnssec.trust_anchor_file.is_none() && self.resolver.root_hints.is_some()
    }

    /// Worker count with 0 resolved to the number of available cores.
    pub fn worker_count(&self) -> usize {
        if self.server.workers > 0 {
            self.server.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

fn parse_list(field: &str, items: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    items
        .iter()
        .enumerate()
        .map(|(i, s)| parse_prefix(s).map_err(|reason| ConfigError::Invalid { field: format!("{field}[{i}]"), reason }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
        let empty = Config::from_toml("").unwrap();
        assert_eq!(empty.server.listen, vec!["127.0.0.1:5300".to_string()]);
    }

    /// A forward zone whose server the upstream ACL forbids is refused by check-config,
    /// and accepted once the ACL opens it.
    #[test]
    fn zone_servers_must_be_allowed_upstream() {
        let zone = "[[zones]]\nname = \"corp.example.\"\nkind = \"forward\"\nservers = [\"10.53.0.1\"]\n";
        let e = Config::from_toml(zone).unwrap().check_zone_servers().unwrap_err().to_string();
        assert!(e.starts_with("zones[0].servers[0]") && e.contains("allow_upstream"), "{e}");
        let open = format!("[access]\nallow_upstream = [\"10.53.0.0/24\"]\n\n{zone}");
        Config::from_toml(&open).unwrap().check_zone_servers().unwrap();
    }

    #[test]
    fn unknown_field_is_an_error_naming_it() {
        let e = Config::from_toml("[server]\nlisten_on = []\n").unwrap_err().to_string();
        assert!(e.contains("listen_on"), "{e}");
    }

    #[test]
    fn out_of_range_names_the_field() {
        let c = Config::from_toml("[resolver]\nmax_depth = 0\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("resolver.max_depth = 0"), "{e}");
    }

    #[test]
    fn bad_prefix_names_the_item() {
        let c = Config::from_toml("[access]\nallow_clients = [\"10.0.0.0/8\", \"nonsense\"]\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("access.allow_clients[1]"), "{e}");
    }

    #[test]
    fn bad_listen_names_the_item() {
        let c = Config::from_toml("[server]\nlisten = [\"::1:53\"]\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("server.listen[0]"), "{e}");
    }

    #[test]
    fn policy_tables_are_validated_with_indexed_fields() {
        let c = Config::from_toml(
            "[[policy]]\nzone = \"alpha.lab\"\nmode = \"strict\"\n[[policy]]\nzone = \"beta.lab\"\nmode = \"cleartext\"\nauth = \"pkix\"\n",
        )
        .unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("policy[1].auth"), "{e}");
        let ok = Config::from_toml("[[policy]]\nzone = \"Alpha.Lab\"\nmode = \"opportunistic\"\n").unwrap();
        let p = ok.policies().unwrap();
        assert_eq!((p[0].id.as_str(), p[0].zone.as_deref(), p[0].read_only), ("cfg-1", Some("alpha.lab."), true));
        let unknown = Config::from_toml("[[policy]]\nzone = \"x\"\nmode = \"strict\"\nsni = \"y\"\n").unwrap_err();
        assert!(unknown.to_string().contains("sni"));
        let bad_mode = Config::from_toml("[[policy]]\nmode = \"paranoid\"\n").unwrap_err();
        assert!(bad_mode.to_string().contains("paranoid"));
    }

    #[test]
    fn every_default_is_within_its_bounds() {
        for b in bounds::ALL {
            assert!(b.min <= b.default && b.default <= b.max, "{}", b.field);
        }
    }
}
