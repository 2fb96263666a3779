//! Extended DNS Errors (RFC 8914): every INFO-CODE adox emits, in this one file. Each error
//! type says which one applies to it (`ResolveError::ede`, `verify::Failure::ede`, the
//! validator's bogus and insecure statuses); the wire writer takes an [`Ede`].

/// An Extended DNS Error INFO-CODE adox emits (RFC 8914 section 4; 27 from RFC 9276).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ede {
    /// 0: Other (a limit of the resolver tripped, a CNAME loop).
    Other,
    /// 1: Unsupported DNSKEY Algorithm (the zone is treated as insecure).
    UnsupportedDnskeyAlgorithm,
    /// 2: Unsupported DS Digest Type (the zone is treated as insecure).
    UnsupportedDsDigestType,
    /// 3: Stale Answer (RFC 8767: expired data served because no authority answered).
    StaleAnswer,
    /// 6: DNSSEC Bogus.
    DnssecBogus,
    /// 7: Signature Expired.
    SignatureExpired,
    /// 8: Signature Not Yet Valid.
    SignatureNotYetValid,
    /// 9: DNSKEY Missing.
    DnskeyMissing,
    /// 10: RRSIGs Missing.
    RrsigsMissing,
    /// 12: NSEC Missing.
    NsecMissing,
    /// 13: Cached Error (a failure kept for `cache.failure_ttl_s`, RFC 9520; beside the
    /// failure's own code).
    CachedError,
    /// 15: Blocked (a policy zone of the operator's own policy).
    Blocked,
    /// 16: Censored (a policy zone for an external requirement, such as a court order).
    Censored,
    /// 17: Filtered (a policy zone of filtering the client asked for).
    Filtered,
    /// 18: Prohibited (the client is not allowed).
    Prohibited,
    /// 19: Stale NXDOMAIN Answer (RFC 8767, a stale NXDOMAIN).
    StaleNxdomainAnswer,
    /// 20: Not Authoritative (a non-recursive query for a name not in the cache).
    NotAuthoritative,
    /// 22: No Reachable Authority (also: strict transport allowed no server).
    NoReachableAuthority,
    /// 23: Network Error.
    NetworkError,
    /// 24: Invalid Data.
    InvalidData,
    /// 27: Unsupported NSEC3 Iterations Value (RFC 9276 section 3.2).
    UnsupportedNsec3Iterations,
}

impl Ede {
    /// The INFO-CODE on the wire.
    pub fn code(self) -> u16 {
        match self {
            Self::Other => 0,
            Self::UnsupportedDnskeyAlgorithm => 1,
            Self::UnsupportedDsDigestType => 2,
            Self::StaleAnswer => 3,
            Self::DnssecBogus => 6,
            Self::SignatureExpired => 7,
            Self::SignatureNotYetValid => 8,
            Self::DnskeyMissing => 9,
            Self::RrsigsMissing => 10,
            Self::NsecMissing => 12,
            Self::CachedError => 13,
            Self::Blocked => 15,
            Self::Censored => 16,
            Self::Filtered => 17,
            Self::Prohibited => 18,
            Self::StaleNxdomainAnswer => 19,
            Self::NotAuthoritative => 20,
            Self::NoReachableAuthority => 22,
            Self::NetworkError => 23,
            Self::InvalidData => 24,
            Self::UnsupportedNsec3Iterations => 27,
        }
    }
}

impl std::fmt::Display for Ede {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_rfc_8914_registry_values() {
        let all = [
            (Ede::Other, 0),
            (Ede::UnsupportedDnskeyAlgorithm, 1),
            (Ede::UnsupportedDsDigestType, 2),
            (Ede::StaleAnswer, 3),
            (Ede::DnssecBogus, 6),
            (Ede::SignatureExpired, 7),
            (Ede::SignatureNotYetValid, 8),
            (Ede::DnskeyMissing, 9),
            (Ede::RrsigsMissing, 10),
            (Ede::NsecMissing, 12),
            (Ede::CachedError, 13),
            (Ede::Blocked, 15),
            (Ede::Censored, 16),
            (Ede::Filtered, 17),
            (Ede::Prohibited, 18),
            (Ede::NotAuthoritative, 20),
            (Ede::NoReachableAuthority, 22),
            (Ede::NetworkError, 23),
            (Ede::InvalidData, 24),
            (Ede::UnsupportedNsec3Iterations, 27),
        ];
        for (ede, code) in all {
            assert_eq!(ede.code(), code, "{ede:?}");
        }
    }
}
