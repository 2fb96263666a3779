//! `[resolver]`: iterative resolution.

use std::path::PathBuf;

use serde::Deserialize;

use super::{bounds, d};

/// `[resolver]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ResolverConfig {
    /// Root hints file in zone-file format (like named.root). Empty = the built-in IANA hints.
    pub root_hints: Option<PathBuf>,
    /// QNAME minimisation (RFC 9156), relaxed: falls back to the full name on odd answers.
    pub qname_minimisation: bool,
    /// QNAME minimisation without the fallback: a server that fails a minimised query is
    /// never asked the full name (Unbound's qname-minimisation-strict).
    pub qname_minimisation_strict: bool,
    /// See [`bounds::EDNS_UDP_SIZE`].
    pub edns_udp_size: u16,
    /// See [`bounds::REQUEST_TIMEOUT_MS`].
    pub request_timeout_ms: u64,
    /// See [`bounds::INITIAL_RTO_MS`].
    pub initial_rto_ms: u64,
    /// See [`bounds::MAX_QUERIES_PER_REQUEST`].
    pub max_queries_per_request: u32,
    /// See [`bounds::MAX_DEPTH`].
    pub max_depth: u32,
    /// See [`bounds::MAX_CHAIN`].
    pub max_chain: u32,
    /// See [`bounds::MAX_REFERRALS`].
    pub max_referrals: u32,
    /// See [`bounds::MAX_NS_LOOKUPS`].
    pub max_ns_lookups: u32,
    /// See [`bounds::MAX_SERVERS_PER_STEP`].
    pub max_servers_per_step: u32,
    /// See [`bounds::MAX_OUTSTANDING_PER_SERVER`].
    pub max_outstanding_per_server: u32,
    /// See [`bounds::MAX_OUTSTANDING_PER_ZONE`].
    pub max_outstanding_per_zone: u32,
    /// See [`bounds::MAX_RESOLUTIONS`].
    pub max_resolutions: u32,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            root_hints: None,
            qname_minimisation: true,
            qname_minimisation_strict: false,
            edns_udp_size: d(bounds::EDNS_UDP_SIZE),
            request_timeout_ms: d(bounds::REQUEST_TIMEOUT_MS),
            initial_rto_ms: d(bounds::INITIAL_RTO_MS),
            max_queries_per_request: d(bounds::MAX_QUERIES_PER_REQUEST),
            max_depth: d(bounds::MAX_DEPTH),
            max_chain: d(bounds::MAX_CHAIN),
            max_referrals: d(bounds::MAX_REFERRALS),
            max_ns_lookups: d(bounds::MAX_NS_LOOKUPS),
            max_servers_per_step: d(bounds::MAX_SERVERS_PER_STEP),
            max_outstanding_per_server: d(bounds::MAX_OUTSTANDING_PER_SERVER),
            max_outstanding_per_zone: d(bounds::MAX_OUTSTANDING_PER_ZONE),
            max_resolutions: d(bounds::MAX_RESOLUTIONS),
        }
    }
}
