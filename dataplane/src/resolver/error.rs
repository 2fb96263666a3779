//! Resolution errors, named after what tripped, and the one place that maps them to an
//! RCODE and an Extended DNS Error (RFC 8914).

use std::net::IpAddr;

use hickory_proto::rr::Name;

use crate::ede::Ede;

/// A named limit of the resolver (see `config::bounds` for their values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// `resolver.max_queries_per_request`.
    QueriesPerRequest,
    /// `resolver.max_depth`.
    Depth,
    /// `resolver.max_chain`.
    Chain,
    /// `resolver.max_referrals`.
    Referrals,
    /// `resolver.max_outstanding_per_server`.
    OutstandingPerServer,
    /// `resolver.max_outstanding_per_zone`.
    OutstandingPerZone,
    /// `resolver.max_resolutions`.
    Resolutions,
    /// `limits.max_resolutions_per_client`.
    ResolutionsPerClient,
    /// `limits.max_resolutions_per_prefix`.
    ResolutionsPerPrefix,
    /// `resolver.request_timeout_ms`.
    RequestTimeout,
    /// `dnssec.max_sig_checks`.
    SigChecks,
    /// `dnssec.max_nsec3_hashes`.
    Nsec3Hashes,
}

impl Limit {
    /// The configuration field that sets this limit.
    pub fn field(self) -> &'static str {
        match self {
            Self::QueriesPerRequest => "max_queries_per_request",
            Self::Depth => "max_depth",
            Self::Chain => "max_chain",
            Self::Referrals => "max_referrals",
            Self::OutstandingPerServer => "max_outstanding_per_server",
            Self::OutstandingPerZone => "max_outstanding_per_zone",
            Self::Resolutions => "max_resolutions",
            Self::ResolutionsPerClient => "max_resolutions_per_client",
            Self::ResolutionsPerPrefix => "max_resolutions_per_prefix",
            Self::RequestTimeout => "request_timeout_ms",
            Self::SigChecks => "max_sig_checks",
            Self::Nsec3Hashes => "max_nsec3_hashes",
        }
    }
}

/// Why a client query could not be answered from the DNS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// Every usable nameserver of a zone failed.
    #[error("no reachable authority for {zone}: {last}")]
    NoReachableAuthority {
        /// The zone.
        zone: Name,
        /// The last server tried, if any.
        server: Option<IpAddr>,
        /// What happened with it.
        last: String,
        /// Some server replied, with an error RCODE or a reply that was no answer (lame),
        /// rather than every one timing out.
        replied: bool,
    },
    /// Every nameserver address of a zone is outside the upstream ACL.
    #[error("no allowed nameserver address for {zone}")]
    NoAllowedAddress {
        /// The zone.
        zone: Name,
    },
    /// A named limit tripped.
    #[error("limit {} exceeded", .0.field())]
    LimitExceeded(Limit),
    /// Strict transport policy: no allowed nameserver could be reached encrypted and
    /// authenticated; nothing was sent in cleartext.
    #[error("{detail}")]
    StrictUnreachable {
        /// The zone.
        zone: Name,
        /// The last server tried, shown as `strict NS@ADDR TRANSPORT: REASON`.
        detail: Box<crate::upstream::error::StrictFailure>,
    },
    /// A CNAME or DNAME chain came back to a name already seen.
    #[error("CNAME/DNAME loop at {0}")]
    ChainLoop(Name),
    /// A non-recursive query for a name the cache does not hold.
    #[error("recursion not desired and not in the cache")]
    NotInCache,
    /// A response could not be used (for example a DNAME that cannot be applied).
    #[error("invalid data from upstream: {0}")]
    InvalidData(String),
}

impl ResolveError {
    /// The Extended DNS Error for this failure: INFO-CODE and EXTRA-TEXT.
    pub fn ede(&self) -> (Ede, String) {
        let code = match self {
            Self::NoReachableAuthority { .. } | Self::NoAllowedAddress { .. } | Self::StrictUnreachable { .. } => {
                Ede::NoReachableAuthority
            }
            Self::LimitExceeded(Limit::RequestTimeout) => Ede::NoReachableAuthority,
            Self::LimitExceeded(_) | Self::ChainLoop(_) => Ede::Other,
            Self::InvalidData(_) => Ede::InvalidData,
            Self::NotInCache => Ede::NotAuthoritative,
        };
        (code, self.to_string())
    }

    /// Whether this failure says something about the name's authorities or data rather
    /// than about this resolver's load or this query: such a failure is kept in the packet
    /// cache for `cache.failure_ttl_s` (RFC 9520 section 3), so clients repeating a name
    /// that cannot be resolved (dead or lame servers, a strict server that fails
    /// authentication, a zone that exhausts the signature budget) cost a cache hit, not a
    /// new walk, handshake or burst of upstream queries each. Not kept: the limits that
    /// measure our own load or a client's share (they lift as soon as the load does), and a
    /// non-recursive query's miss.
    pub fn is_cacheable(&self) -> bool {
        match self {
            Self::NoReachableAuthority { .. }
            | Self::NoAllowedAddress { .. }
            | Self::StrictUnreachable { .. }
            | Self::ChainLoop(_)
            | Self::InvalidData(_) => true,
            Self::LimitExceeded(limit) => match limit {
                Limit::QueriesPerRequest
                | Limit::Depth
                | Limit::Chain
                | Limit::Referrals
                | Limit::RequestTimeout
                | Limit::SigChecks
                | Limit::Nsec3Hashes => true,
                Limit::OutstandingPerServer
                | Limit::OutstandingPerZone
                | Limit::Resolutions
                | Limit::ResolutionsPerClient
                | Limit::ResolutionsPerPrefix => false,
            },
            Self::NotInCache => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ede_mapping() {
        let z: Name = "lab.".parse().unwrap();
        let e = ResolveError::NoReachableAuthority {
            zone: z.clone(),
            server: None,
            last: "timeout".into(),
            replied: false,
        };
        assert_eq!(e.ede(), (Ede::NoReachableAuthority, "no reachable authority for lab.: timeout".into()));
        assert_eq!(ResolveError::LimitExceeded(Limit::Depth).ede().0, Ede::Other);
        assert!(ResolveError::LimitExceeded(Limit::Depth).ede().1.contains("max_depth"));
        assert_eq!(ResolveError::NoAllowedAddress { zone: z }.ede().0, Ede::NoReachableAuthority);
    }

    #[test]
    fn failures_of_the_authorities_are_cached_those_of_our_load_are_not() {
        let z: Name = "lab.".parse().unwrap();
        let lame = ResolveError::NoReachableAuthority { zone: z, server: None, last: "timeout".into(), replied: false };
        assert!(lame.is_cacheable());
        assert!(ResolveError::LimitExceeded(Limit::SigChecks).is_cacheable());
        assert!(ResolveError::LimitExceeded(Limit::RequestTimeout).is_cacheable());
        assert!(!ResolveError::LimitExceeded(Limit::OutstandingPerZone).is_cacheable());
        assert!(!ResolveError::LimitExceeded(Limit::ResolutionsPerClient).is_cacheable());
        assert!(!ResolveError::NotInCache.is_cacheable());
    }
}
