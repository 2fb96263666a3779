//! `[xdp]`: the experimental AF_XDP path for cache hits (needs an adoxd built with the
//! `xdp` cargo feature).

use serde::Deserialize;

use super::ConfigError;

/// Queues the XDP program's socket map holds (`xsks` in `redirect.bpf.c`).
const MAX_QUEUES: usize = 64;

/// `[xdp]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct XdpConfig {
    /// Answer cache hits for UDP queries arriving on `interface` from an AF_XDP socket per
    /// queue, past the kernel's UDP stack. Default false.
    pub enabled: bool,
    /// The network interface the XDP program is attached to (the one clients' queries
    /// arrive on).
    pub interface: String,
    /// Receive queues of the interface served, 0..queues, queue N by worker N (at most
    /// `server.workers`). A queue without a socket goes to the kernel's stack as before.
    pub queues: u32,
}

impl Default for XdpConfig {
    fn default() -> Self {
        Self { enabled: false, interface: String::new(), queues: 1 }
    }
}

impl XdpConfig {
    /// Checks the section against the build, the worker count and the listen addresses.
    pub(crate) fn check(&self, workers: usize, listen: &[std::net::SocketAddr]) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        let invalid = |field: &str, reason: String| ConfigError::Invalid { field: format!("xdp.{field}"), reason };
        if !crate::xdp::BUILT {
            return Err(invalid(
                "enabled",
                "this adoxd was built without the `xdp` cargo feature (cargo build --release -p adoxd --features xdp)"
                    .into(),
            ));
        }
        if self.interface.is_empty()
            || self.interface.len() >= libc::IF_NAMESIZE
            || self.interface.contains(['/', '\0'])
        {
            return Err(invalid("interface", format!("{:?} is not a network interface name", self.interface)));
        }
        if self.queues == 0 || self.queues as usize > workers.min(MAX_QUEUES) {
            return Err(invalid(
                "queues",
                format!(
                    "{} is not within 1..={} (server.workers, at most {MAX_QUEUES})",
                    self.queues,
                    workers.min(MAX_QUEUES)
                ),
            ));
        }
        if listen.len() > crate::xdp::MAX_SERVICES {
            return Err(ConfigError::Invalid {
                field: "server.listen".into(),
                reason: format!("at most {} addresses with [xdp] on", crate::xdp::MAX_SERVICES),
            });
        }
        // A wildcard listener would have the program take every datagram to its port,
        // whatever host it is for (forwarded traffic, containers on the same NIC).
        if let Some(any) = listen.iter().find(|a| a.ip().is_unspecified()) {
            return Err(ConfigError::Invalid {
                field: "server.listen".into(),
                reason: format!("{any}: with [xdp] on, listen on the interface's own addresses, not a wildcard"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn off_by_default_and_checked_when_on() {
        Config::from_toml("").unwrap().validate().unwrap();
        let on = |extra: &str| {
            Config::from_toml(&format!("[server]\nworkers = 2\n[xdp]\nenabled = true\n{extra}"))
                .unwrap()
                .validate()
                .map_err(|e| e.to_string())
        };
        if crate::xdp::BUILT {
            on("interface = \"eth0\"\nqueues = 2\n").unwrap();
            let wildcard =
                Config::from_toml("[server]\nlisten = [\"0.0.0.0:53\"]\n[xdp]\nenabled = true\ninterface = \"eth0\"\n")
                    .unwrap()
                    .validate()
                    .unwrap_err()
                    .to_string();
            assert!(wildcard.starts_with("server.listen") && wildcard.contains("wildcard"), "{wildcard}");
            assert!(on("").unwrap_err().starts_with("xdp.interface"));
            assert!(on("interface = \"a/b\"\n").unwrap_err().starts_with("xdp.interface"));
            assert!(on("interface = \"eth0\"\nqueues = 3\n").unwrap_err().starts_with("xdp.queues"));
        } else {
            let e = on("interface = \"eth0\"\n").unwrap_err();
            assert!(e.starts_with("xdp.enabled") && e.contains("--features xdp"), "{e}");
        }
        assert!(Config::from_toml("[xdp]\nmode = \"native\"\n").is_err(), "unknown fields refused");
    }
}
