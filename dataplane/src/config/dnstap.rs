//! `[dnstap]`: what adox receives and sends, streamed to a collector.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, bounds, d};

/// `[dnstap]`: off unless `socket_path` or `tcp` names a collector.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
#[allow(clippy::struct_excessive_bools, reason = "one switch per dnstap message type")]
pub struct DnstapConfig {
    /// A collector's unix socket (`fstrm_capture -u PATH`).
    pub socket_path: Option<PathBuf>,
    /// A collector's TCP address, `ADDR:PORT`.
    pub tcp: Option<String>,
    /// The `identity` field of every message (default: none).
    pub identity: String,
    /// Send CLIENT_QUERY messages. Default true.
    pub client_queries: bool,
    /// Send CLIENT_RESPONSE messages. Default true.
    pub client_responses: bool,
    /// Send RESOLVER_QUERY messages (with the upstream transport). Default true.
    pub resolver_queries: bool,
    /// Send RESOLVER_RESPONSE messages. Default true.
    pub resolver_responses: bool,
    /// See [`bounds::DNSTAP_BUFFER_BYTES`].
    pub buffer_bytes: u64,
}

impl Default for DnstapConfig {
    fn default() -> Self {
        Self {
            socket_path: None,
            tcp: None,
            identity: String::new(),
            client_queries: true,
            client_responses: true,
            resolver_queries: true,
            resolver_responses: true,
            buffer_bytes: d(bounds::DNSTAP_BUFFER_BYTES),
        }
    }
}

impl DnstapConfig {
    /// The collector, if one is configured.
    pub fn collector(&self) -> Result<Option<crate::dnstap::Collector>, ConfigError> {
        match (&self.socket_path, &self.tcp) {
            (Some(_), Some(_)) => Err(ConfigError::Invalid {
                field: "dnstap.tcp".into(),
                reason: "one collector: socket_path or tcp, not both".into(),
            }),
            (Some(p), None) => Ok(Some(crate::dnstap::Collector::Unix(p.clone()))),
            (None, Some(a)) => a.parse().map(|a| Some(crate::dnstap::Collector::Tcp(a))).map_err(|_| {
                ConfigError::Invalid { field: "dnstap.tcp".into(), reason: format!("`{a}` is not ADDR:PORT") }
            }),
            (None, None) => Ok(None),
        }
    }

    /// The message types switched on.
    pub fn types(&self) -> crate::dnstap::Types {
        crate::dnstap::Types {
            client_query: self.client_queries,
            client_response: self.client_responses,
            resolver_query: self.resolver_queries,
            resolver_response: self.resolver_responses,
        }
    }
}
