//! TLS for upstream connections: TLS 1.3 only (rustls is built without TLS 1.2, so no
//! downgrade is possible, R11), the ring provider, ALPN per transport, and two ways to
//! treat the server's certificate: not at all (opportunistic, RFC 9539) or PKIX against
//! the configured CA set for the nameserver name (RFC 8310 strict, RFC 9461).
//!
//! Sessions are resumed through the shared [`SessionStore`] of each transport.

use std::collections::VecDeque;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::dane::{DaneError, DaneVerifier, TlsaTable};
use super::error::TransportFailure;
use super::sessions::SessionStore;

/// Accepts any certificate but still checks that the server holds the key it presents
/// (the handshake signature): opportunistic encryption protects against passive
/// observers, not against an active attacker (RFC 9539 section 4.6).
#[derive(Debug)]
struct Unauthenticated(Arc<CryptoProvider>);

impl ServerCertVerifier for Unauthenticated {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // TLS 1.2 is not built in; a TLS 1.2 handshake never gets this far.
        Err(rustls::Error::General("TLS 1.2 is not allowed".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

thread_local! {
    /// Server names whose certificate was verified on this thread, most recent last: a
    /// TLS 1.3 handshake that resumes a session verifies no certificate, which is how a
    /// DoQ connection (quinn reports no handshake kind) learns whether it resumed. Each
    /// worker drives its connections on its own thread, so no other worker's handshakes
    /// mix in.
    static VERIFIED: std::cell::RefCell<VecDeque<String>> = const { std::cell::RefCell::new(VecDeque::new()) };
}

/// Names remembered at most (a handful of handshakes are ever in progress per worker).
const VERIFIED_KEPT: usize = 64;

/// Whether a certificate for `name` was verified on this thread since the last call for it
/// (and forgets it): true after a full handshake, false after a resumed one.
pub fn take_verified(name: &str) -> bool {
    VERIFIED.with(|v| {
        let mut v = v.borrow_mut();
        match v.iter().position(|n| n == name) {
            Some(i) => {
                v.remove(i);
                true
            }
            None => false,
        }
    })
}

fn name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_ascii_lowercase(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => String::new(),
    }
}

/// Wraps a verifier and notes each certificate it accepts in [`take_verified`]'s list.
#[derive(Debug)]
struct NoteVerified(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for NoteVerified {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let r = self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        VERIFIED.with(|v| {
            let mut v = v.borrow_mut();
            if v.len() >= VERIFIED_KEPT {
                v.pop_front();
            }
            v.push_back(name_text(server_name));
        });
        Ok(r)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Why the TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The CA file could not be read or holds no certificate.
    #[error("--ca-file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

/// Reads PEM certificates from a file into a root store.
pub fn roots_from_file(path: &std::path::Path) -> Result<RootCertStore, TlsSetupError> {
    use rustls::pki_types::pem::PemObject;
    let err = |reason: String| TlsSetupError::CaFile { path: path.display().to_string(), reason };
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| err(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| err(e.to_string()))?;
        roots.add(cert).map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("no certificate found".into()));
    }
    Ok(roots)
}

/// The web PKI roots built into the binary (Mozilla's set, via webpki-roots).
pub fn builtin_roots() -> RootCertStore {
    RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }
}

/// The client configurations of one transport (one ALPN), sharing one session store.
#[derive(Debug, Clone)]
pub struct TlsConfigs {
    /// No certificate checks: opportunistic.
    pub unauthenticated: Arc<ClientConfig>,
    /// PKIX against the configured roots, for the nameserver name.
    pub pkix: Arc<ClientConfig>,
    /// DANE against the secure TLSA records of the nameserver name.
    pub dane: Arc<ClientConfig>,
}

impl TlsConfigs {
    /// Builds the configurations for `alpn` with `roots`, a shared `sessions` store and the
    /// TLSA table read by DANE connections of `proto` (`tcp` for DoT, `quic` for DoQ).
    pub fn new(
        alpn: &[u8],
        roots: Arc<RootCertStore>,
        sessions: Arc<SessionStore>,
        tlsa: Arc<TlsaTable>,
        proto: &'static str,
    ) -> Result<Self, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // DoQ notes full handshakes (see `take_verified`); DoT asks rustls directly.
        let note = proto == "quic";
        let build = |verifier: Arc<dyn ServerCertVerifier>| -> Result<Arc<ClientConfig>, TlsSetupError> {
            let builder = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
            let verifier: Arc<dyn ServerCertVerifier> = if note { Arc::new(NoteVerified(verifier)) } else { verifier };
            let mut cfg = builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
            cfg.alpn_protocols = vec![alpn.to_vec()];
            cfg.resumption = Resumption::store(sessions.clone());
            cfg.enable_sni = true;
            Ok(Arc::new(cfg))
        };
        let dane = Arc::new(DaneVerifier::new(provider.clone(), tlsa, proto));
        let pkix = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
        Ok(Self {
            unauthenticated: build(Arc::new(Unauthenticated(provider.clone())))?,
            pkix: build(pkix)?,
            dane: build(dane)?,
        })
    }
}

/// What a TLS failure means for the transport (its stable short name goes into
/// EXTRA-TEXT and server state).
pub fn failure_reason(e: &rustls::Error) -> TransportFailure {
    use rustls::{AlertDescription, CertificateError, Error};
    match e {
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            TransportFailure::CertNameMismatch
        }
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => TransportFailure::CertUntrusted,
        Error::InvalidCertificate(CertificateError::Expired)
        | Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => TransportFailure::CertExpired,
        Error::InvalidCertificate(_) => TransportFailure::CertInvalid,
        Error::AlertReceived(AlertDescription::ProtocolVersion) | Error::PeerIncompatible(_) => {
            TransportFailure::TlsVersion
        }
        Error::NoApplicationProtocol | Error::AlertReceived(AlertDescription::NoApplicationProtocol) => {
            TransportFailure::Alpn
        }
        Error::AlertReceived(_) => TransportFailure::TlsAlert,
        Error::Other(o) => o.0.downcast_ref::<DaneError>().map_or(TransportFailure::TlsError, |d| d.0),
        _ => TransportFailure::TlsError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_carry_the_alpn() {
        let store = Arc::new(SessionStore::new(1000));
        let tlsa = Arc::new(TlsaTable::default());
        let c = TlsConfigs::new(b"dot", Arc::new(builtin_roots()), store, tlsa, "tcp").unwrap();
        for cfg in [&c.unauthenticated, &c.pkix, &c.dane] {
            assert_eq!(cfg.alpn_protocols, vec![b"dot".to_vec()]);
        }
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let e = roots_from_file(std::path::Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"));
    }
}
