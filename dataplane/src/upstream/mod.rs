//! The encrypted-upstream wing: everything that decides how a query reaches an
//! authoritative server and carries it there encrypted.
//!
//! - Decisions: [`policy`] (operator overrides), [`probe`] (RFC 9539 state per address
//!   and transport), [`signal`] (the nameserver's own `_dns` SVCB and TLSA records),
//!   [`deleg`] (the parent's experimental DELEG records for a child zone), and
//!   [`plan`], the pure function that turns them into a [`plan::TransportPlan`].
//! - Security: [`tls`] (rustls client configurations, TLS 1.3 only), [`dane`] (TLSA table
//!   and verifier), [`sessions`] (the shared resumption stores).
//! - Protocols as sans-IO state: [`dot`] (a TLS session with RFC 7858 framing and
//!   padding), [`doq`] (RFC 9250 stream framing over quinn-proto), [`doh`] (RFC 8484
//!   requests and answer checks; HTTP/2 is the `h2` crate's), and [`pool`], the one
//!   connection pool all three use, with the slots queries wait in.
//!
//! Nothing here owns a socket or reads a clock: the worker's drivers (`worker/dot.rs`,
//! `worker/doq.rs`, `worker/doh.rs`) move the bytes, and `now` is an argument.

pub mod dane;
pub mod deleg;
pub mod doh;
pub(crate) mod doq;
pub(crate) mod dot;
pub mod error;
pub mod plan;
pub mod policy;
pub(crate) mod pool;
pub mod probe;
pub(crate) mod sessions;
pub mod signal;
pub mod strict_state;
pub mod tls;
pub(crate) mod verifier;

use hickory_proto::rr::Name;

pub use error::UpstreamError;

/// The wire an upstream query travels on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wire {
    /// Do53 over UDP (a fresh, connected socket).
    Udp,
    /// Do53 over TCP (after truncation).
    Tcp,
    /// DNS over TLS, authenticated as `auth` says.
    Dot {
        /// How the server is authenticated.
        auth: PeerAuth,
    },
    /// DNS over QUIC, authenticated like DoT.
    Doq {
        /// How the server is authenticated.
        auth: PeerAuth,
    },
    /// DNS over HTTPS (HTTP/2), authenticated like DoT.
    Doh {
        /// How the server is authenticated.
        auth: PeerAuth,
        /// The URI template (`dohpath`), checked by `adox_api::policy::check_doh_path`.
        path: std::sync::Arc<str>,
    },
}

/// How an encrypted connection authenticates the server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerAuth {
    /// Not at all (opportunistic): no SNI, any certificate.
    None,
    /// PKIX: a certificate for this name from the configured CA set (SNI = the name).
    Pkix(Name),
    /// DANE: the certificate matches the secure TLSA records of this name (the TLSA base
    /// name, also the SNI).
    Dane(Name),
}

impl PeerAuth {
    /// The name sent as SNI and authenticated, if any.
    pub fn name(&self) -> Option<&Name> {
        match self {
            Self::None => None,
            Self::Pkix(n) | Self::Dane(n) => Some(n),
        }
    }
}
