//! `[cache]`: cache sizes and TTL caps.

use serde::Deserialize;

use super::{bounds, d};

/// `[cache]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct CacheConfig {
    /// See [`bounds::PACKET_CACHE_BYTES`]; 0 turns the packet cache off.
    pub packet_cache_bytes: u64,
    /// See [`bounds::RECORD_CACHE_BYTES`].
    pub record_cache_bytes: u64,
    /// See [`bounds::MIN_TTL_S`]. (`min_ttl` is accepted too.)
    #[serde(alias = "min_ttl")]
    pub min_ttl_s: u32,
    /// See [`bounds::MAX_TTL_S`].
    pub max_ttl_s: u32,
    /// See [`bounds::MAX_NEGATIVE_TTL_S`].
    pub max_negative_ttl_s: u32,
    /// Serve-stale (RFC 8767): answer from expired data when no authority answers.
    /// Default true.
    pub serve_stale: bool,
    /// See [`bounds::STALE_MAX_S`].
    pub stale_max_s: u32,
    /// See [`bounds::STALE_TTL_S`].
    pub stale_ttl_s: u32,
    /// See [`bounds::STALE_CLIENT_TIMEOUT_MS`].
    pub stale_client_timeout_ms: u64,
    /// See [`bounds::STALE_RECHECK_S`].
    pub stale_recheck_s: u32,
    /// See [`bounds::FAILURE_TTL_S`]; 0 keeps no failure.
    pub failure_ttl_s: u32,
    /// See [`bounds::FAILURE_MAX_TTL_S`].
    pub failure_max_ttl_s: u32,
    /// Prefetch: an answer asked for in the last tenth of its TTL is refreshed in the
    /// background. Default true.
    pub prefetch: bool,
    /// See [`bounds::PREFETCH_MAX_PER_S`].
    pub prefetch_max_per_s: u32,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            packet_cache_bytes: d(bounds::PACKET_CACHE_BYTES),
            record_cache_bytes: d(bounds::RECORD_CACHE_BYTES),
            min_ttl_s: d(bounds::MIN_TTL_S),
            max_ttl_s: d(bounds::MAX_TTL_S),
            max_negative_ttl_s: d(bounds::MAX_NEGATIVE_TTL_S),
            serve_stale: true,
            stale_max_s: d(bounds::STALE_MAX_S),
            stale_ttl_s: d(bounds::STALE_TTL_S),
            stale_client_timeout_ms: d(bounds::STALE_CLIENT_TIMEOUT_MS),
            stale_recheck_s: d(bounds::STALE_RECHECK_S),
            failure_ttl_s: d(bounds::FAILURE_TTL_S),
            failure_max_ttl_s: d(bounds::FAILURE_MAX_TTL_S),
            prefetch: true,
            prefetch_max_per_s: d(bounds::PREFETCH_MAX_PER_S),
        }
    }
}
