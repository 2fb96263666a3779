//! `[dnssec]`: validation.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, bounds, d};

/// `[dnssec]`: validation (RFC 4033-4035, 5155, 6840).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct DnssecConfig {
    /// `validate` (default) or `off`.
    pub mode: String,
    /// DS or DNSKEY records in zone-file format that replace the built-in root anchors.
    pub trust_anchor_file: Option<PathBuf>,
    /// Negative trust anchors (RFC 7646): names at or below them are not validated.
    pub negative_trust_anchors: Vec<String>,
    /// Validate RSASHA1 (5) and RSASHA1-NSEC3-SHA1 (7) signatures; when false, zones
    /// signed only with them are insecure. Default true (validators may still validate
    /// them, RFC 8624 section 3.1).
    pub sha1_algorithms: bool,
    /// See [`bounds::NSEC3_MAX_ITERATIONS`].
    pub nsec3_max_iterations: u16,
    /// See [`bounds::MAX_SIG_CHECKS`].
    pub max_sig_checks: u32,
    /// See [`bounds::MAX_NSEC3_HASHES`].
    pub max_nsec3_hashes: u32,
    /// See [`bounds::BOGUS_TTL_S`].
    pub bogus_ttl_s: u32,
    /// Aggressive use of validated NSEC records (RFC 8198): names inside a span a secure
    /// denial proved empty are denied from the cache. Default true.
    pub aggressive_nsec: bool,
    /// RFC 5011 maintenance of the built-in root anchors, and of the anchor file's when
    /// `trust_anchor_managed`. Default true.
    pub rfc5011: bool,
    /// The anchors of `trust_anchor_file` follow their zones' key rollovers (RFC 5011)
    /// instead of standing as written. Default false.
    pub trust_anchor_managed: bool,
    /// See [`bounds::RFC5011_ADD_HOLDDOWN_S`].
    pub rfc5011_add_holddown_s: u64,
    /// See [`bounds::RFC5011_REMOVE_HOLDDOWN_S`].
    pub rfc5011_remove_holddown_s: u64,
    /// See [`bounds::RFC5011_MIN_REFRESH_S`].
    pub rfc5011_min_refresh_s: u64,
}

impl Default for DnssecConfig {
    fn default() -> Self {
        Self {
            mode: "validate".into(),
            trust_anchor_file: None,
            negative_trust_anchors: Vec::new(),
            sha1_algorithms: true,
            nsec3_max_iterations: d(bounds::NSEC3_MAX_ITERATIONS),
            max_sig_checks: d(bounds::MAX_SIG_CHECKS),
            max_nsec3_hashes: d(bounds::MAX_NSEC3_HASHES),
            bogus_ttl_s: d(bounds::BOGUS_TTL_S),
            aggressive_nsec: true,
            rfc5011: true,
            trust_anchor_managed: false,
            rfc5011_add_holddown_s: d(bounds::RFC5011_ADD_HOLDDOWN_S),
            rfc5011_remove_holddown_s: d(bounds::RFC5011_REMOVE_HOLDDOWN_S),
            rfc5011_min_refresh_s: d(bounds::RFC5011_MIN_REFRESH_S),
        }
    }
}

impl DnssecConfig {
    /// Whether answers are validated.
    pub fn validating(&self) -> bool {
        self.mode == "validate"
    }

    /// Bytes kept for validated NSEC spans (RFC 8198): a sixteenth of the record cache's
    /// budget, besides it; none when aggressive use or validation is off.
    pub fn nsec_span_bytes(&self, record_cache_bytes: u64) -> usize {
        if self.aggressive_nsec && self.validating() { (record_cache_bytes / 16) as usize } else { 0 }
    }

    /// Whether RFC 5011 maintains the anchors in use: the built-in ones (no anchor file)
    /// or a file set as managed.
    pub fn anchors_managed(&self) -> bool {
        self.validating() && self.rfc5011 && (self.trust_anchor_file.is_none() || self.trust_anchor_managed)
    }

    /// RFC 5011's timers.
    pub fn rfc5011_timers(&self) -> crate::dnssec::managed::Timers {
        crate::dnssec::managed::Timers {
            add_holddown: self.rfc5011_add_holddown_s,
            remove_holddown: self.rfc5011_remove_holddown_s,
            min_refresh: self.rfc5011_min_refresh_s,
        }
    }

    /// The negative trust anchors, parsed.
    pub fn negative_anchors(&self) -> Result<Vec<hickory_proto::rr::Name>, ConfigError> {
        self.negative_trust_anchors
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut n = hickory_proto::rr::Name::from_ascii(s).map_err(|e| ConfigError::Invalid {
                    field: format!("dnssec.negative_trust_anchors[{i}]"),
                    reason: e.to_string(),
                })?;
                n.set_fqdn(true);
                Ok(crate::names::canonical(&n))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn dnssec_section_is_checked() {
        let c = Config::from_toml("[dnssec]\nmode = \"maybe\"\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().starts_with("dnssec.mode"));
        let c = Config::from_toml("[dnssec]\nnegative_trust_anchors = [\"ok.lab\", \"bad..name\"]\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().starts_with("dnssec.negative_trust_anchors[1]"));
        let c = Config::from_toml("[dnssec]\nnsec3_max_iterations = 3000\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().starts_with("dnssec.nsec3_max_iterations"));
        assert!(Config::default().dnssec.validating());
    }
}
