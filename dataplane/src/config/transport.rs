//! `[transport]`: encrypted upstream transports.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, bounds, d};

/// `[transport]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TransportConfig {
    /// PEM file of CA certificates for PKIX authentication of nameservers; absent: the
    /// built-in web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// See [`bounds::DOT_TIMEOUT_MS`].
    pub dot_timeout_ms: u64,
    /// See [`bounds::DOT_IDLE_TIMEOUT_MS`].
    pub dot_idle_timeout_ms: u64,
    /// See [`bounds::DOT_MAX_OUTSTANDING`].
    pub dot_max_outstanding: usize,
    /// See [`bounds::UPSTREAM_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`bounds::CONNECTIONS_PER_SERVER`].
    pub connections_per_server: usize,
    /// See [`bounds::SESSION_CACHE_SERVERS`].
    pub session_cache_servers: usize,
    /// RFC 9539 opportunistic probing of servers that no policy covers. Default true.
    pub probing: bool,
    /// See [`bounds::PROBE_PERSISTENCE_S`].
    pub probe_persistence_s: u64,
    /// See [`bounds::PROBE_DAMPING_S`].
    pub probe_damping_s: u64,
    /// See [`bounds::MAX_CONCURRENT_PROBES`].
    pub max_concurrent_probes: u32,
    /// Look up nameservers' `_dns` SVCB records (RFC 9461) and follow them. Default true.
    pub signals: bool,
    /// Whether a query to a nameserver whose signal is not known yet waits for it (at
    /// most [`bounds::SIGNAL_WAIT_MS`]) instead of going out beside its lookup.
    pub signal_wait: SignalWait,
    /// See [`bounds::SIGNAL_WAIT_MS`].
    pub signal_wait_ms: u64,
    /// Experimental DELEG (draft-ietf-deleg): queries carry the DE bit, and a DELEG RRset
    /// in a referral (validated against the parent's keys) names the child zone's servers
    /// and, through the private-use `alpn` key, their transports. Default false.
    pub deleg: bool,
    /// How DoH queries are sent: `"post"` (the message as the body, the default) or
    /// `"get"` (base64url in the URI template's `dns` variable, RFC 8484 section 4.1).
    pub doh_method: crate::upstream::doh::DohMethod,
    /// Source address of queries to IPv4 authorities (one of this host's addresses);
    /// absent: the kernel's choice.
    pub outgoing_v4: Option<String>,
    /// Source address of queries to IPv6 authorities; absent: the kernel's choice.
    pub outgoing_v6: Option<String>,
}

/// Which nameservers a first query waits for the `_dns` signal of (`transport.signal_wait`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalWait {
    /// None: the first queries go out beside the lookup, as the probe table says.
    None,
    /// Nameservers whose names lie in a zone not proven unsigned: only a secure signal
    /// can make a server strict, so only there can a first query leak what the owner
    /// wants encrypted.
    Signed,
    /// Every nameserver.
    All,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            ca_file: None,
            dot_timeout_ms: d(bounds::DOT_TIMEOUT_MS),
            dot_idle_timeout_ms: d(bounds::DOT_IDLE_TIMEOUT_MS),
            dot_max_outstanding: d(bounds::DOT_MAX_OUTSTANDING),
            max_connections: d(bounds::UPSTREAM_MAX_CONNECTIONS),
            connections_per_server: d(bounds::CONNECTIONS_PER_SERVER),
            session_cache_servers: d(bounds::SESSION_CACHE_SERVERS),
            probing: true,
            probe_persistence_s: d(bounds::PROBE_PERSISTENCE_S),
            probe_damping_s: d(bounds::PROBE_DAMPING_S),
            max_concurrent_probes: d(bounds::MAX_CONCURRENT_PROBES),
            signals: true,
            signal_wait: SignalWait::Signed,
            signal_wait_ms: d(bounds::SIGNAL_WAIT_MS),
            deleg: false,
            doh_method: crate::upstream::doh::DohMethod::Post,
            outgoing_v4: None,
            outgoing_v6: None,
        }
    }
}

impl TransportConfig {
    /// The outgoing source addresses, parsed: each must be a unicast address of its
    /// field's family.
    pub fn outgoing_addrs(&self) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), ConfigError> {
        fn parse<A: std::str::FromStr>(
            field: &str,
            value: Option<&String>,
            family: &str,
            usable: impl Fn(&A) -> bool,
        ) -> Result<Option<A>, ConfigError> {
            let Some(v) = value else { return Ok(None) };
            let invalid = |reason: String| ConfigError::Invalid { field: field.into(), reason };
            let a = v.parse::<A>().map_err(|_| invalid(format!("{v:?} is not an {family} address")))?;
            if !usable(&a) {
                return Err(invalid(format!(
                    "{v:?} cannot be a source address (unspecified, multicast, broadcast, IPv4-mapped or link-local)"
                )));
            }
            Ok(Some(a))
        }
        let v4 = parse("transport.outgoing_v4", self.outgoing_v4.as_ref(), "IPv4", |a: &Ipv4Addr| {
            !a.is_unspecified() && !a.is_multicast() && !a.is_broadcast()
        })?;
        // An IPv4-mapped address cannot send IPv6, and a link-local one needs an interface
        // that one address cannot name.
        let v6 = parse("transport.outgoing_v6", self.outgoing_v6.as_ref(), "IPv6", |a: &Ipv6Addr| {
            !a.is_unspecified() && !a.is_multicast() && a.to_ipv4_mapped().is_none() && !a.is_unicast_link_local()
        })?;
        Ok((v4, v6))
    }
}
