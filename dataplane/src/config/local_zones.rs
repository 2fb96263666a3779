//! `[local_zones]`: special-use names answered locally.

use serde::Deserialize;

/// `[local_zones]`: special-use names answered without asking anyone. All default to true.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct LocalZonesConfig {
    /// `localhost.` (RFC 6761 section 6.3): loopback addresses.
    pub localhost: bool,
    /// `invalid.` (RFC 6761 section 6.4): NXDOMAIN.
    pub invalid: bool,
    /// `test.` (RFC 6761 section 6.2): NXDOMAIN.
    pub test: bool,
    /// `onion.` (RFC 7686): NXDOMAIN.
    pub onion: bool,
    /// `home.arpa.` (RFC 8375): NXDOMAIN.
    pub home_arpa: bool,
    /// The locally served reverse zones of RFC 6303 (private and special addresses).
    pub rfc6303: bool,
}

impl Default for LocalZonesConfig {
    fn default() -> Self {
        Self { localhost: true, invalid: true, test: true, onion: true, home_arpa: true, rfc6303: true }
    }
}
