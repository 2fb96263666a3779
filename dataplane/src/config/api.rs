//! `[api]`: the REST control plane.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, bounds, d, parse_listen};

/// `[api]`: the REST control plane.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ApiConfig {
    /// Listen address (`ADDR:PORT`), or `off`. Default `127.0.0.1:5380`.
    pub listen: String,
    /// File of admin tokens (read and write), one per line, `#` comments. Without any
    /// token file every `/v1` request is refused.
    pub token_file: Option<PathBuf>,
    /// File of read-only tokens.
    pub read_token_file: Option<PathBuf>,
    /// Whether `/metrics` needs a token too. Default false.
    pub protect_metrics: bool,
    /// PEM certificate chain for TLS on the API (with `tls_key_file`); absent: plain HTTP.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// See [`bounds::API_RATE_PER_S`].
    pub rate_per_s: u32,
    /// See [`bounds::API_RATE_BURST`].
    pub rate_burst: u32,
    /// See [`bounds::API_MAX_BODY_BYTES`].
    pub max_body_bytes: usize,
    /// See [`bounds::API_MAX_IMPORT_BYTES`].
    pub max_import_bytes: usize,
    /// Names the API may be reached by (the `Host` header), besides IP literals and
    /// `localhost`: a request naming any other host is refused (421), so a web page cannot
    /// reach the API through a name it rebinds to the API's address. Default none.
    pub hostnames: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:5380".into(),
            token_file: None,
            read_token_file: None,
            protect_metrics: false,
            tls_cert_file: None,
            tls_key_file: None,
            rate_per_s: d(bounds::API_RATE_PER_S),
            rate_burst: d(bounds::API_RATE_BURST),
            max_body_bytes: d(bounds::API_MAX_BODY_BYTES),
            max_import_bytes: d(bounds::API_MAX_IMPORT_BYTES),
            hostnames: Vec::new(),
        }
    }
}

impl ApiConfig {
    /// The listen address; `None` when the API is `off`.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.listen == "off" {
            return Ok(None);
        }
        parse_listen(&self.listen)
            .map(Some)
            .map_err(|reason| ConfigError::Invalid { field: "api.listen".into(), reason })
    }
}
