//! `[access]`: who may query us, and which upstream addresses we may query.

use serde::Deserialize;

use crate::acl::DEFAULT_CLIENT_PREFIXES;

/// `[access]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct AccessConfig {
    /// Client prefixes allowed to query; others get REFUSED with EDE 18. Default: loopback,
    /// RFC 1918 and RFC 4193 ranges.
    pub allow_clients: Vec<String>,
    /// Upstream prefixes opened inside the default deny list (loopback, private, reserved).
    /// Default empty.
    pub allow_upstream: Vec<String>,
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            allow_clients: DEFAULT_CLIENT_PREFIXES.iter().map(|s| (*s).to_string()).collect(),
            allow_upstream: Vec::new(),
        }
    }
}
