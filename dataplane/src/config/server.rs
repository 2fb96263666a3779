//! `[server]`: listeners, threads, client connections.

use std::path::PathBuf;

use serde::Deserialize;

use super::{bounds, d};

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ServerConfig {
    /// UDP and TCP listen addresses. Default `["127.0.0.1:5300"]`.
    pub listen: Vec<String>,
    /// Worker threads; 0 = one per available core.
    pub workers: usize,
    /// Pin worker N to core N mod cores. Default true.
    pub pin_workers: bool,
    /// Directory for persistent state. Default `/var/lib/adox`.
    pub state_dir: PathBuf,
    /// Log level (error, warn, info, debug, trace) or a tracing filter. Default `info`.
    pub log_level: String,
    /// `"text"` (the default) or `"json"`: one JSON object per line, for log shippers.
    pub log_format: LogFormat,
    /// Started as root: the user to switch to once the sockets are bound (no capability
    /// is kept). Unset: no switch.
    pub user: Option<String>,
    /// With `user`: the group (default the user's primary group).
    pub group: Option<String>,
    /// See [`bounds::TCP_IDLE_TIMEOUT_MS`].
    pub tcp_idle_timeout_ms: u64,
    /// See [`bounds::TCP_MAX_CONNECTIONS`].
    pub tcp_max_connections: usize,
    /// See [`bounds::TCP_MAX_PIPELINED`].
    pub tcp_max_pipelined: usize,
    /// See [`bounds::TCP_MAX_CONNECTIONS_PER_CLIENT`].
    pub tcp_max_connections_per_client: usize,
    /// See [`bounds::TCP_MESSAGE_TIMEOUT_MS`].
    pub tcp_message_timeout_ms: u64,
    /// See [`bounds::UDP_BATCH`].
    pub udp_batch: usize,
    /// See [`bounds::OVERLOAD_AFTER_MS`].
    pub overload_after_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: vec!["127.0.0.1:5300".into()],
            workers: d(bounds::WORKERS),
            pin_workers: true,
            state_dir: PathBuf::from("/var/lib/adox"),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            user: None,
            group: None,
            tcp_idle_timeout_ms: d(bounds::TCP_IDLE_TIMEOUT_MS),
            tcp_max_connections: d(bounds::TCP_MAX_CONNECTIONS),
            tcp_max_pipelined: d(bounds::TCP_MAX_PIPELINED),
            tcp_max_connections_per_client: d(bounds::TCP_MAX_CONNECTIONS_PER_CLIENT),
            tcp_message_timeout_ms: d(bounds::TCP_MESSAGE_TIMEOUT_MS),
            udp_batch: d(bounds::UDP_BATCH),
            overload_after_ms: d(bounds::OVERLOAD_AFTER_MS),
        }
    }
}

/// How log lines are written (`server.log_format`, `--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: `timestamp`, `level`, the event's fields and `message`.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("{other:?} is not a log format (text or json)")),
        }
    }
}
