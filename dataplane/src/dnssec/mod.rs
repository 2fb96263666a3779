//! DNSSEC validation primitives: RDATA readers, signature and digest algorithms, RRset
//! verification, denial-of-existence proofs and trust anchors. Pure functions over
//! records already in memory; the chain of trust (which keys to fetch, what to cache) is
//! the resolver's (`resolver/validate.rs`).

pub mod anchors;
pub mod crypto;
pub mod denial;
pub mod managed;
pub mod rdata;
pub mod verify;

use std::sync::Arc;

use hickory_proto::rr::Name;

use crate::ede::Ede;

pub use anchors::TrustAnchors;

/// The security status of data (RFC 4035 section 4.3), kept with it in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Security {
    /// Not validated (nameserver addresses learnt while iterating, referral data). A
    /// client lookup treats it as a miss.
    #[default]
    Unchecked,
    /// Provably unsigned, or outside every trust anchor, or validation is off; with the
    /// Extended DNS Error to add when the reason is worth telling (unsupported algorithm
    /// or digest, NSEC3 iterations over the limit).
    Insecure(Option<Arc<Bogus>>),
    /// Validated to a trust anchor.
    Secure,
    /// Should be signed and is not correctly: SERVFAIL unless the client set CD.
    Bogus(Arc<Bogus>),
}

/// Why data is bogus (or insecure for a reason worth telling): the Extended DNS Error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bogus {
    /// The Extended DNS Error: 1, 2, 6, 7, 8, 9, 10, 12 or 27.
    pub ede: Ede,
    /// EXTRA-TEXT naming the zone and what failed.
    pub text: String,
}

impl Security {
    /// Insecure, nothing to add.
    pub fn insecure() -> Self {
        Self::Insecure(None)
    }

    /// Insecure, with an Extended DNS Error for the client.
    pub fn insecure_because(ede: Ede, text: String) -> Self {
        Self::Insecure(Some(Arc::new(Bogus { ede, text })))
    }

    /// A bogus status with its EDE.
    pub fn bogus(ede: Ede, text: String) -> Self {
        Self::Bogus(Arc::new(Bogus { ede, text }))
    }

    /// The status of data made of parts with these statuses: bogus if any part is, then
    /// insecure if any is, secure only if all are.
    pub fn and(self, other: Self) -> Self {
        match (self, other) {
            (b @ Self::Bogus(_), _) | (_, b @ Self::Bogus(_)) => b,
            (Self::Unchecked, _) | (_, Self::Unchecked) => Self::Unchecked,
            (Self::Insecure(a), Self::Insecure(b)) => Self::Insecure(a.or(b)),
            (i @ Self::Insecure(_), _) | (_, i @ Self::Insecure(_)) => i,
            (Self::Secure, Self::Secure) => Self::Secure,
        }
    }

    /// Whether this status came out of validation (not `Unchecked`).
    pub fn is_checked(&self) -> bool {
        !matches!(self, Self::Unchecked)
    }
}

/// Validation settings, read once from the configuration.
#[derive(Debug, Clone)]
pub struct ValidatorSettings {
    /// Whether answers are validated at all.
    pub enabled: bool,
    /// Trust anchors (`None`: validation is on but nothing can be anchored, e.g. custom
    /// root hints without `--trust-anchor`: everything is insecure, as reported at start).
    /// Replaced whole when RFC 5011 maintenance ([`managed`]) learns a rollover.
    pub anchors: Arc<arc_swap::ArcSwapOption<TrustAnchors>>,
    /// Negative trust anchors (RFC 7646) from the configuration: names at or below these
    /// are not validated.
    pub negative_anchors: Arc<arc_swap::ArcSwap<Vec<Name>>>,
    /// Negative trust anchors set through the API, replaced whole (read per validation).
    pub runtime_negative_anchors: Arc<arc_swap::ArcSwap<Vec<Name>>>,
    /// Zones configured insecure (`[[zones]]` and `PUT /v1/zones` with `insecure`).
    pub zone_negative_anchors: Arc<arc_swap::ArcSwap<Vec<Name>>>,
    /// Validate RSASHA1 (5) and RSASHA1-NSEC3-SHA1 (7); when off they count as unsupported.
    pub sha1: bool,
    /// NSEC3 iterations above this make a denial insecure (EDE 27).
    pub nsec3_max_iterations: u16,
    /// Signature checks one client query may make.
    pub max_sig_checks: u32,
    /// NSEC3 hashes one client query may compute.
    pub max_nsec3_hashes: u32,
    /// Cache lifetime of bogus data, seconds.
    pub bogus_ttl: u32,
}

impl ValidatorSettings {
    /// Validation off.
    pub fn off() -> Self {
        Self {
            enabled: false,
            anchors: Default::default(),
            negative_anchors: Default::default(),
            runtime_negative_anchors: Default::default(),
            zone_negative_anchors: Default::default(),
            sha1: true,
            nsec3_max_iterations: 150,
            max_sig_checks: 64,
            max_nsec3_hashes: 64,
            bogus_ttl: 60,
        }
    }

    /// Whether data at `name` is to be validated: on, anchored, not under an NTA (RFC 7646).
    pub fn covers(&self, name: &Name) -> bool {
        self.enabled
            && self.anchors.load().as_ref().is_some_and(|a| a.closest(name).is_some())
            && !self.negative_anchors.load().iter().any(|n| n.zone_of(name))
            && !self.runtime_negative_anchors.load().iter().any(|n| n.zone_of(name))
            && !self.zone_negative_anchors.load().iter().any(|n| n.zone_of(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4035_4_3_a_chain_is_as_secure_as_its_weakest_link() {
        let bogus = Security::bogus(Ede::SignatureExpired, "x".into());
        let noted = Security::insecure_because(Ede::UnsupportedNsec3Iterations, "lab.: NSEC3 iterations".into());
        assert_eq!(Security::Secure.and(Security::Secure), Security::Secure);
        assert_eq!(Security::Secure.and(Security::insecure()), Security::insecure());
        assert_eq!(Security::insecure().and(bogus.clone()), bogus);
        assert_eq!(bogus.clone().and(Security::Secure), bogus);
        assert_eq!(Security::insecure().and(noted.clone()), noted, "the reason is kept");
        assert_eq!(Security::Secure.and(Security::Unchecked), Security::Unchecked);
    }

    #[test]
    fn negative_trust_anchors_and_unanchored_names_are_not_validated() {
        let mut v = ValidatorSettings::off();
        v.enabled = true;
        v.anchors.store(Some(Arc::new(TrustAnchors::built_in())));
        v.negative_anchors.store(Arc::new(vec!["broken.example.".parse().unwrap()]));
        assert!(v.covers(&"www.example.".parse().unwrap()));
        assert!(!v.covers(&"www.broken.example.".parse().unwrap()));
        v.anchors.store(None);
        assert!(!v.covers(&"www.example.".parse().unwrap()));
    }
}
