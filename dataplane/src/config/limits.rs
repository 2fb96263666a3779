//! `[limits]`: each client's share of the resolver (resolutions in flight per address and
//! per network) and its query rate (per address, per network, identical answers), with
//! what a client over its rate gets.

use serde::Deserialize;

use super::{ConfigError, bounds, d};

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct LimitsConfig {
    /// See [`bounds::MAX_RESOLUTIONS_PER_CLIENT`].
    pub max_resolutions_per_client: u32,
    /// See [`bounds::MAX_RESOLUTIONS_PER_PREFIX`].
    pub max_resolutions_per_prefix: u32,
    /// See [`bounds::CLIENT_PREFIX_V4`].
    pub client_prefix_v4: u8,
    /// See [`bounds::CLIENT_PREFIX_V6`].
    pub client_prefix_v6: u8,
    /// See [`bounds::QUERIES_PER_SECOND_PER_CLIENT`].
    pub queries_per_second_per_client: u32,
    /// See [`bounds::QUERIES_PER_SECOND_PER_PREFIX`].
    pub queries_per_second_per_prefix: u32,
    /// See [`bounds::RESPONSES_PER_SECOND`].
    pub responses_per_second: u32,
    /// What a UDP query over a rate gets: `"slip"` (default: every `slip`-th gets an
    /// empty truncated answer, so a real client retries over TCP, the others nothing),
    /// `"drop"` (nothing) or `"refused"` (REFUSED with EDE 18).
    pub rate_limit_action: String,
    /// See [`bounds::SLIP`].
    pub slip: u32,
    /// Client prefixes no rate applies to (monitoring, large NATs the operator knows).
    pub rate_limit_exempt: Vec<String>,
    /// See [`bounds::RATE_TABLE_SLOTS`].
    pub rate_table_slots: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_resolutions_per_client: d(bounds::MAX_RESOLUTIONS_PER_CLIENT),
            max_resolutions_per_prefix: d(bounds::MAX_RESOLUTIONS_PER_PREFIX),
            client_prefix_v4: d(bounds::CLIENT_PREFIX_V4),
            client_prefix_v6: d(bounds::CLIENT_PREFIX_V6),
            queries_per_second_per_client: d(bounds::QUERIES_PER_SECOND_PER_CLIENT),
            queries_per_second_per_prefix: d(bounds::QUERIES_PER_SECOND_PER_PREFIX),
            responses_per_second: d(bounds::RESPONSES_PER_SECOND),
            rate_limit_action: "slip".into(),
            slip: d(bounds::SLIP),
            rate_limit_exempt: Vec::new(),
            rate_table_slots: d(bounds::RATE_TABLE_SLOTS),
        }
    }
}

/// What a UDP query over one of the rates gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateAction {
    /// Every n-th gets an empty TC answer, the others nothing.
    Slip(u32),
    /// Nothing.
    Drop,
    /// REFUSED with EDE 18.
    Refused,
}

impl LimitsConfig {
    /// `rate_limit_action` and `slip`, checked.
    pub fn rate_action(&self) -> Result<RateAction, ConfigError> {
        match self.rate_limit_action.as_str() {
            "slip" => Ok(RateAction::Slip(self.slip.max(1))),
            "drop" => Ok(RateAction::Drop),
            "refused" => Ok(RateAction::Refused),
            other => Err(ConfigError::Invalid {
                field: "limits.rate_limit_action".into(),
                reason: format!("{other:?}: expected \"slip\", \"drop\" or \"refused\""),
            }),
        }
    }

    /// `rate_limit_exempt`, parsed.
    pub fn exempt_prefixes(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        super::parse_list("limits.rate_limit_exempt", &self.rate_limit_exempt)
    }
}
