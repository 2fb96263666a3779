//! `[limits]`: each client's share of the resolver (per address and per network).

use serde::Deserialize;

use super::{bounds, d};

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct LimitsConfig {
    /// See [`bounds::MAX_RESOLUTIONS_PER_CLIENT`].
    pub max_resolutions_per_client: u32,
    /// See [`bounds::MAX_RESOLUTIONS_PER_PREFIX`].
    pub max_resolutions_per_prefix: u32,
    /// See [`bounds::CLIENT_PREFIX_V4`].
    pub client_prefix_v4: u8,
    /// See [`bounds::CLIENT_PREFIX_V6`].
    pub client_prefix_v6: u8,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_resolutions_per_client: d(bounds::MAX_RESOLUTIONS_PER_CLIENT),
            max_resolutions_per_prefix: d(bounds::MAX_RESOLUTIONS_PER_PREFIX),
            client_prefix_v4: d(bounds::CLIENT_PREFIX_V4),
            client_prefix_v6: d(bounds::CLIENT_PREFIX_V6),
        }
    }
}
