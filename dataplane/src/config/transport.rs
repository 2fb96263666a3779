//! `[transport]`: encrypted upstream transports.

use std::path::PathBuf;

use serde::Deserialize;

use super::{bounds, d};

/// `[transport]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TransportConfig {
    /// PEM file of CA certificates for PKIX authentication of nameservers; absent: the
    /// built-in web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// See [`bounds::DOT_TIMEOUT_MS`].
    pub dot_timeout_ms: u64,
    /// See [`bounds::DOT_IDLE_TIMEOUT_MS`].
    pub dot_idle_timeout_ms: u64,
    /// See [`bounds::DOT_MAX_OUTSTANDING`].
    pub dot_max_outstanding: usize,
    /// See [`bounds::UPSTREAM_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`bounds::SESSION_CACHE_SERVERS`].
    pub session_cache_servers: usize,
    /// RFC 9539 opportunistic probing of servers that no policy covers. Default true.
    pub probing: bool,
    /// See [`bounds::PROBE_PERSISTENCE_S`].
    pub probe_persistence_s: u64,
    /// See [`bounds::PROBE_DAMPING_S`].
    pub probe_damping_s: u64,
    /// See [`bounds::MAX_CONCURRENT_PROBES`].
    pub max_concurrent_probes: u32,
    /// Look up nameservers' `_dns` SVCB records (RFC 9461) and follow them. Default true.
    pub signals: bool,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            ca_file: None,
            dot_timeout_ms: d(bounds::DOT_TIMEOUT_MS),
            dot_idle_timeout_ms: d(bounds::DOT_IDLE_TIMEOUT_MS),
            dot_max_outstanding: d(bounds::DOT_MAX_OUTSTANDING),
            max_connections: d(bounds::UPSTREAM_MAX_CONNECTIONS),
            session_cache_servers: d(bounds::SESSION_CACHE_SERVERS),
            probing: true,
            probe_persistence_s: d(bounds::PROBE_PERSISTENCE_S),
            probe_damping_s: d(bounds::PROBE_DAMPING_S),
            max_concurrent_probes: d(bounds::MAX_CONCURRENT_PROBES),
            signals: true,
        }
    }
}
