//! The one rustls certificate verifier of upstream connections. What differs between
//! opportunistic, PKIX and DANE connections is only how the certificate is judged (a
//! [`CertificateCheck`]); the handshake signature is always checked the same way, with
//! TLS 1.3 only (TLS 1.2 is not built in, so a TLS 1.2 handshake never gets that far).

use std::collections::VecDeque;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// How a server's certificate chain is judged for `server_name`.
pub(crate) trait CertificateCheck: std::fmt::Debug + Send + Sync {
    /// Ok when the chain is acceptable; the rustls error (possibly carrying a typed
    /// reason) otherwise.
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), rustls::Error>;
}

/// A verifier: the certificate by `check`, the handshake signature by the provider.
#[derive(Debug)]
pub(crate) struct Verifier<C> {
    provider: Arc<CryptoProvider>,
    check: C,
    /// Note each accepted certificate for [`take_verified`] (DoQ learns from it whether a
    /// handshake resumed).
    note: bool,
}

impl<C: CertificateCheck> Verifier<C> {
    pub(crate) fn new(provider: Arc<CryptoProvider>, check: C, note: bool) -> Self {
        Self { provider, check, note }
    }
}

impl<C: CertificateCheck> ServerCertVerifier for Verifier<C> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check.check(end_entity, intermediates, server_name, now)?;
        if self.note {
            note_verified(server_name);
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not allowed".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
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

fn name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_ascii_lowercase(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => String::new(),
    }
}

fn note_verified(name: &ServerName<'_>) {
    VERIFIED.with(|v| {
        let mut v = v.borrow_mut();
        if v.len() >= VERIFIED_KEPT {
            v.pop_front();
        }
        v.push_back(name_text(name));
    });
}

/// Whether a certificate for `name` was verified on this thread since the last call for it
/// (and forgets it): true after a full handshake, false after a resumed one.
pub(crate) fn take_verified(name: &str) -> bool {
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
