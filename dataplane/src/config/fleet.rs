//! `[fleet]`: where a fleet of adoxd nodes keeps what an operator sets through the API
//! (policies, negative trust anchors): each node's own state directory (`local`, the
//! default) or one etcd cluster that every node watches (`etcd`).

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, bounds, d};

/// `[fleet]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct FleetConfig {
    /// `local` (this node's state directory) or `etcd`.
    pub backend: String,
    /// The etcd cluster's client URLs, `http://HOST:PORT` or `https://HOST:PORT`.
    pub etcd_endpoints: Vec<String>,
    /// Every key adox writes starts with this (one prefix per fleet).
    pub key_prefix: String,
    /// CA certificate (PEM) the etcd members' certificates are checked against.
    pub etcd_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's client-certificate authentication.
    pub etcd_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub etcd_key_file: Option<PathBuf>,
    /// etcd user (etcd's own authentication), with `etcd_password_file`.
    pub etcd_user: Option<String>,
    /// File holding that user's password (first line).
    pub etcd_password_file: Option<PathBuf>,
    /// See [`bounds::FLEET_ETCD_TIMEOUT_MS`].
    pub etcd_timeout_ms: u64,
    /// Publish this node's RFC 9539 probe results in etcd (with a lease of the probe
    /// window) and take the other nodes', so a server one node probed is not probed again
    /// by the rest. Off by default: one etcd key per server and transport.
    pub share_probes: bool,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            backend: "local".into(),
            etcd_endpoints: Vec::new(),
            key_prefix: "/adox".into(),
            etcd_ca_file: None,
            etcd_cert_file: None,
            etcd_key_file: None,
            etcd_user: None,
            etcd_password_file: None,
            etcd_timeout_ms: d(bounds::FLEET_ETCD_TIMEOUT_MS),
            share_probes: false,
        }
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: format!("fleet.{field}"), reason: reason.into() }
}

impl FleetConfig {
    /// True when the fleet's state is in etcd.
    pub fn is_etcd(&self) -> bool {
        self.backend == "etcd"
    }

    /// Checks the table; the error names the first bad field.
    pub fn check(&self) -> Result<(), ConfigError> {
        match self.backend.as_str() {
            "local" => return Ok(()),
            "etcd" => {}
            other => return Err(invalid("backend", format!("{other:?}: expected \"local\" or \"etcd\""))),
        }
        if self.etcd_endpoints.is_empty() {
            return Err(invalid("etcd_endpoints", "backend \"etcd\" needs at least one endpoint"));
        }
        let tls = self.etcd_ca_file.is_some() || self.etcd_cert_file.is_some();
        for (i, e) in self.etcd_endpoints.iter().enumerate() {
            let field = format!("etcd_endpoints[{i}]");
            let rest = if let Some(r) = e.strip_prefix("https://") {
                // Members' certificates are checked against etcd_ca_file only (no web PKI).
                if self.etcd_ca_file.is_none() {
                    return Err(invalid(
                        "etcd_ca_file",
                        format!("`{e}` is https://: the CA of the members' certificates is needed"),
                    ));
                }
                r
            } else if let Some(r) = e.strip_prefix("http://") {
                if tls {
                    return Err(invalid(&field, format!("`{e}`: TLS files are set, so endpoints are https://")));
                }
                r
            } else {
                return Err(invalid(&field, format!("`{e}` is not http://HOST:PORT or https://HOST:PORT")));
            };
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| invalid(&field, format!("`{e}`: the port is missing (etcd's is 2379)")))?;
            let bracketed = host.starts_with('[') && host.ends_with(']');
            if host.is_empty()
                || host.contains('/')
                || (host.contains(':') && !bracketed)
                || port.parse::<u16>().map_or(true, |p| p == 0)
            {
                return Err(invalid(&field, format!("`{e}` is not http://HOST:PORT or https://HOST:PORT")));
            }
        }
        let p = &self.key_prefix;
        if !p.starts_with('/') || p.ends_with('/') || p.len() > 128 || p.chars().any(|c| c.is_control()) {
            return Err(invalid(
                "key_prefix",
                format!("{p:?}: starts with `/`, does not end with one, at most 128 characters"),
            ));
        }
        if self.etcd_cert_file.is_some() != self.etcd_key_file.is_some() {
            return Err(invalid("etcd_key_file", "etcd_cert_file and etcd_key_file go together"));
        }
        if self.etcd_user.is_some() != self.etcd_password_file.is_some() {
            return Err(invalid("etcd_password_file", "etcd_user and etcd_password_file go together"));
        }
        if self.etcd_user.as_deref().is_some_and(|u| u.is_empty() || u.chars().any(|c| c.is_control())) {
            return Err(invalid("etcd_user", "not a user name"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(), ConfigError> {
        crate::config::Config::from_toml(text)?.validate()
    }

    #[test]
    fn the_default_is_local_and_etcd_needs_good_endpoints_and_paired_credentials() {
        assert!(!FleetConfig::default().is_etcd());
        parse("[fleet]\nbackend = \"etcd\"\netcd_endpoints = [\"http://127.0.0.1:2379\"]\n").unwrap();
        let cases = [
            ("backend = \"zk\"", "fleet.backend"),
            ("backend = \"etcd\"", "fleet.etcd_endpoints"),
            ("backend = \"etcd\"\netcd_endpoints = [\"127.0.0.1:2379\"]", "fleet.etcd_endpoints[0]"),
            ("backend = \"etcd\"\netcd_endpoints = [\"http://127.0.0.1\"]", "fleet.etcd_endpoints[0]"),
            ("backend = \"etcd\"\netcd_endpoints = [\"http://h:1\", \"http://h:0\"]", "fleet.etcd_endpoints[1]"),
            ("backend = \"etcd\"\netcd_endpoints = [\"http://h:1\"]\nkey_prefix = \"adox\"", "fleet.key_prefix"),
            ("backend = \"etcd\"\netcd_endpoints = [\"http://h:1\"]\nkey_prefix = \"/adox/\"", "fleet.key_prefix"),
            (
                "backend = \"etcd\"\netcd_endpoints = [\"http://h:1\"]\netcd_cert_file = \"/c\"",
                "fleet.etcd_endpoints[0]",
            ),
            (
                "backend = \"etcd\"\netcd_endpoints = [\"https://h:1\"]\netcd_ca_file = \"/a\"\netcd_cert_file = \"/c\"",
                "fleet.etcd_key_file",
            ),
            ("backend = \"etcd\"\netcd_endpoints = [\"http://h:1\"]\netcd_user = \"u\"", "fleet.etcd_password_file"),
            ("backend = \"etcd\"\netcd_endpoints = [\"https://h:1\"]", "fleet.etcd_ca_file"),
            ("backend = \"etcd\"\netcd_endpoints = [\"http://::1:2379\"]", "fleet.etcd_endpoints[0]"),
            ("backend = \"etcd\"\netcd_endpoints = [\"http://h:1\"]\netcd_timeout_ms = 10", "fleet.etcd_timeout_ms"),
        ];
        for (body, field) in cases {
            let e = parse(&format!("[fleet]\n{body}\n")).unwrap_err().to_string();
            assert!(e.starts_with(field), "{body}: {e}");
        }
    }
}
