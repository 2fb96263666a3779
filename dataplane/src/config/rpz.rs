//! `[rpz]`: Response Policy Zones, from files or transferred from primaries, in order.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use hickory_proto::rr::Name;
use serde::Deserialize;

use super::{ConfigError, bounds, d};
use crate::ede::Ede;
use crate::rpz::{Source, ZoneInfo};

/// `[rpz]`: off while it lists no zone.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RpzConfig {
    /// Where primaries' NOTIFY messages arrive, `ADDR:PORT` (none: zones are refreshed at
    /// their SOA refresh interval only).
    pub notify_listen: Option<String>,
    /// See [`bounds::RPZ_TRANSFER_TIMEOUT_S`].
    pub transfer_timeout_s: u64,
    /// See [`bounds::RPZ_MAX_RECORDS`].
    pub max_records: u64,
    /// The policy zones, in the order they are tried (`[[rpz.zone]]`).
    pub zone: Vec<RpzZoneConfig>,
}

impl Default for RpzConfig {
    fn default() -> Self {
        Self {
            notify_listen: None,
            transfer_timeout_s: d(bounds::RPZ_TRANSFER_TIMEOUT_S),
            max_records: d(bounds::RPZ_MAX_RECORDS),
            zone: Vec::new(),
        }
    }
}

/// One `[[rpz.zone]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RpzZoneConfig {
    /// The policy zone's name.
    pub name: String,
    /// A master file to read it from (at start and on every reload).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Primaries to transfer it from, `ADDR` or `ADDR:PORT` (port 53), tried in order.
    #[serde(default)]
    pub primaries: Vec<String>,
    /// The EDE a rewrite carries: `blocked` (15, the operator's own policy; default),
    /// `censored` (16, an external requirement such as a court order) or `filtered` (17,
    /// filtering the client asked for).
    #[serde(default = "blocked")]
    pub ede: String,
    /// Seconds between refreshes from the primary (0: the SOA's refresh, at least 30 s).
    #[serde(default)]
    pub refresh_s: u32,
}

fn blocked() -> String {
    "blocked".into()
}

fn invalid(field: String, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, reason: reason.into() }
}

/// Parses a primary: `ADDR` (port 53) or `ADDR:PORT` (IPv6 with a port as `[::1]:53`).
pub fn parse_primary(s: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    s.parse::<SocketAddr>().map_err(|_| format!("`{s}` is not ADDR or ADDR:PORT"))
}

impl RpzConfig {
    /// The zones as the data plane keeps them; an error names the first bad field.
    pub fn zones(&self) -> Result<Vec<ZoneInfo>, ConfigError> {
        let mut out: Vec<ZoneInfo> = Vec::new();
        for (i, z) in self.zone.iter().enumerate() {
            let at = |f: &str| format!("rpz.zone[{i}].{f}");
            let name = Name::from_ascii(&z.name)
                .ok()
                .filter(|n| !z.name.is_empty() && !n.is_root())
                .map(|mut n| {
                    n.set_fqdn(true);
                    n
                })
                .ok_or_else(|| invalid(at("name"), format!("`{}` is not a zone name", z.name)))?;
            if out.iter().any(|o| o.name == name) {
                return Err(invalid(at("name"), format!("{name} is listed twice")));
            }
            let ede = match z.ede.as_str() {
                "blocked" => Ede::Blocked,
                "censored" => Ede::Censored,
                "filtered" => Ede::Filtered,
                other => return Err(invalid(at("ede"), format!("`{other}`: one of blocked, censored, filtered"))),
            };
            let source = match (&z.file, z.primaries.is_empty()) {
                (Some(f), true) => Source::File(f.clone()),
                (None, false) => Source::Primaries(
                    z.primaries
                        .iter()
                        .enumerate()
                        .map(|(j, p)| parse_primary(p).map_err(|r| invalid(format!("rpz.zone[{i}].primaries[{j}]"), r)))
                        .collect::<Result<_, _>>()?,
                ),
                _ => return Err(invalid(at("file"), "give either file or primaries")),
            };
            if z.refresh_s > 86_400 {
                return Err(invalid(at("refresh_s"), format!("{} is out of range (0..=86400)", z.refresh_s)));
            }
            out.push(ZoneInfo {
                name,
                ede,
                source,
                refresh_s: z.refresh_s,
                hits: Default::default(),
                transfers: Default::default(),
            });
        }
        Ok(out)
    }

    /// The NOTIFY address, if any.
    pub fn notify(&self) -> Result<Option<SocketAddr>, ConfigError> {
        self.notify_listen
            .as_deref()
            .map(|s| super::parse_listen(s).map_err(|r| invalid("rpz.notify_listen".into(), r)))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Result<Vec<ZoneInfo>, ConfigError> {
        let c: RpzConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        c.notify()?;
        c.zones()
    }

    #[test]
    fn zones_parse_with_their_defaults_and_bad_ones_name_their_field() {
        let z = cfg("notify_listen = \"127.0.0.1:5301\"\n[[zone]]\nname = \"rpz.lab\"\nprimaries = [\"127.0.0.1\", \"[::1]:5353\"]\n[[zone]]\nname = \"court.\"\nfile = \"/x\"\nede = \"censored\"\n").unwrap();
        assert_eq!(z.len(), 2);
        assert_eq!(z[0].name.to_ascii(), "rpz.lab.");
        assert_eq!(z[0].ede, Ede::Blocked);
        assert_eq!(
            z[0].source,
            Source::Primaries(vec!["127.0.0.1:53".parse().unwrap(), "[::1]:5353".parse().unwrap()])
        );
        assert_eq!(z[1].ede, Ede::Censored);
        for (text, field) in [
            ("[[zone]]\nname = \"a.\"\n", "rpz.zone[0].file"),
            ("[[zone]]\nname = \"a.\"\nfile = \"/x\"\nprimaries = [\"127.0.0.1\"]\n", "rpz.zone[0].file"),
            ("[[zone]]\nname = \"a.\"\nprimaries = [\"nowhere\"]\n", "rpz.zone[0].primaries[0]"),
            ("[[zone]]\nname = \"a.\"\nfile = \"/x\"\nede = \"red\"\n", "rpz.zone[0].ede"),
            ("[[zone]]\nname = \"\"\nfile = \"/x\"\n", "rpz.zone[0].name"),
            ("[[zone]]\nname = \"a.\"\nfile = \"/x\"\n[[zone]]\nname = \"A\"\nfile = \"/y\"\n", "rpz.zone[1].name"),
            ("[[zone]]\nname = \"a.\"\nfile = \"/x\"\nrefresh_s = 100000\n", "rpz.zone[0].refresh_s"),
            ("notify_listen = \"here\"\n", "rpz.notify_listen"),
        ] {
            match cfg(text) {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(cfg("[[zone]]\nname = \"a.\"\nfile = \"/x\"\ncolour = 1\n").is_err(), "unknown fields are errors");
    }
}
