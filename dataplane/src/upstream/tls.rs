//! TLS for upstream connections: TLS 1.3 only (rustls is built without TLS 1.2, so no
//! downgrade is possible, R11), the ring provider, ALPN per transport, and two ways to
//! treat the server's certificate: not at all (opportunistic, RFC 9539) or PKIX against
//! the configured CA set for the nameserver name (RFC 8310 strict, RFC 9461).
//!
//! Sessions are resumed through the shared [`SessionStore`] of each transport.

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, RootCertStore};

use super::dane::{DaneCheck, DaneError, TlsaTable};
use super::error::TransportFailure;
use super::sessions::SessionStore;
use super::verifier::{CertificateCheck, Verifier};

/// Accepts any certificate (the handshake signature is still checked): opportunistic
/// encryption protects against passive observers, not against an active attacker (RFC
/// 9539 section 4.6).
#[derive(Debug)]
struct AnyCertificate;

impl CertificateCheck for AnyCertificate {
    fn check(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: UnixTime,
    ) -> Result<(), rustls::Error> {
        Ok(())
    }
}

/// PKIX: a chain to the configured roots, valid for the name (webpki).
#[derive(Debug)]
struct Pkix(Arc<PkixRoots>);

/// The PKIX verifier of every DoT, DoQ and DoH configuration, replaced whole when a reload
/// reads `transport.ca_file` again; the session stores whose tickets it vouched for are
/// emptied then (a resumed handshake checks no certificate).
#[derive(Debug)]
pub struct PkixRoots {
    verifier: arc_swap::ArcSwap<rustls::client::WebPkiServerVerifier>,
    sessions: std::sync::Mutex<Vec<Arc<SessionStore>>>,
    /// The roots in force, as text (to tell whether a reload changes them).
    roots: std::sync::Mutex<String>,
}

impl PkixRoots {
    /// A verifier for `roots`.
    pub fn new(roots: Arc<RootCertStore>) -> Result<Self, TlsSetupError> {
        Ok(Self {
            roots: std::sync::Mutex::new(format!("{:?}", roots.roots)),
            verifier: arc_swap::ArcSwap::new(verifier(roots)?),
            sessions: Default::default(),
        })
    }

    /// The stores to empty when the roots change.
    pub fn attach_sessions(&self, stores: Vec<Arc<SessionStore>>) {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).extend(stores);
    }

    /// New roots: handshakes from now on are checked against them, and no session made
    /// under the old ones is resumed. Connections already open keep going. `Ok(false)`
    /// (and nothing cleared) when they are the roots in force.
    pub fn replace(&self, roots: Arc<RootCertStore>) -> Result<bool, TlsSetupError> {
        let text = format!("{:?}", roots.roots);
        let mut current = self.roots.lock().unwrap_or_else(|p| p.into_inner());
        if *current == text {
            return Ok(false);
        }
        self.verifier.store(verifier(roots)?);
        *current = text;
        for s in self.sessions.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            s.clear();
        }
        Ok(true)
    }
}

fn verifier(roots: Arc<RootCertStore>) -> Result<Arc<rustls::client::WebPkiServerVerifier>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))
}

impl CertificateCheck for Pkix {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        self.0.verifier.load().verify_server_cert(end_entity, intermediates, server_name, &[], now).map(|_| ())
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
    ///
    /// DANE connections keep their tickets in `dane_sessions`, apart from the others: a
    /// resumed handshake checks no certificate, so a session DANE authenticated must never
    /// resume a connection a PKIX policy asked for (or the reverse) under the same name.
    pub fn new(
        alpn: &[u8],
        roots: Arc<RootCertStore>,
        sessions: Arc<SessionStore>,
        dane_sessions: Arc<SessionStore>,
        tlsa: Arc<TlsaTable>,
        proto: &'static str,
    ) -> Result<Self, TlsSetupError> {
        Self::with_pkix(alpn, Arc::new(PkixRoots::new(roots)?), sessions, dane_sessions, tlsa, proto)
    }

    /// [`Self::new`] with a PKIX verifier shared with other configurations (and replaced
    /// for all of them on a reload).
    pub fn with_pkix(
        alpn: &[u8],
        pkix: Arc<PkixRoots>,
        sessions: Arc<SessionStore>,
        dane_sessions: Arc<SessionStore>,
        tlsa: Arc<TlsaTable>,
        proto: &'static str,
    ) -> Result<Self, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // DoQ notes full handshakes (see `verifier::take_verified`); DoT asks rustls directly.
        let note = proto == "quic";
        let build = |verifier: Arc<dyn ServerCertVerifier>,
                     sessions: &Arc<SessionStore>|
         -> Result<Arc<ClientConfig>, TlsSetupError> {
            let builder = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
            let mut cfg = builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
            cfg.alpn_protocols = vec![alpn.to_vec()];
            cfg.resumption = Resumption::store(sessions.clone());
            cfg.enable_sni = true;
            Ok(Arc::new(cfg))
        };
        let dane = DaneCheck::new(provider.clone(), tlsa, proto);
        Ok(Self {
            unauthenticated: build(Arc::new(Verifier::new(provider.clone(), AnyCertificate, note)), &sessions)?,
            pkix: build(Arc::new(Verifier::new(provider.clone(), Pkix(pkix), note)), &sessions)?,
            dane: build(Arc::new(Verifier::new(provider.clone(), dane, note)), &dane_sessions)?,
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
        let c = TlsConfigs::new(b"dot", Arc::new(builtin_roots()), store.clone(), store, tlsa, "tcp").unwrap();
        for cfg in [&c.unauthenticated, &c.pkix, &c.dane] {
            assert_eq!(cfg.alpn_protocols, vec![b"dot".to_vec()]);
        }
    }

    /// Runs a handshake in memory between `client` (for `name`) and a server holding the
    /// test certificate, then lets the client read the session tickets the server sends
    /// afterwards. Ok(resumed) or the client's error.
    fn handshake(
        client: &Arc<ClientConfig>,
        name: &str,
        server: &Arc<rustls::ServerConfig>,
    ) -> Result<bool, rustls::Error> {
        use std::io::Cursor;
        let mut c = rustls::ClientConnection::new(client.clone(), ServerName::try_from(name.to_string()).unwrap())?;
        let mut s = rustls::ServerConnection::new(server.clone()).unwrap();
        for _ in 0..20 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            let mut rd = Cursor::new(buf);
            while (rd.position() as usize) < rd.get_ref().len() {
                s.read_tls(&mut rd).unwrap();
                if s.process_new_packets().is_err() {
                    break;
                }
            }
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            let mut rd = Cursor::new(buf);
            while (rd.position() as usize) < rd.get_ref().len() {
                c.read_tls(&mut rd).unwrap();
                c.process_new_packets()?;
            }
            if !c.is_handshaking() && !s.is_handshaking() && !s.wants_write() {
                break;
            }
        }
        Ok(matches!(c.handshake_kind(), Some(rustls::HandshakeKind::Resumed)))
    }

    /// A session a DANE connection established (no PKIX check) must not resume a
    /// connection a PKIX policy asks for under the same name: resumption checks no
    /// certificate, so a shared store would let the DANE ticket stand in for a PKIX
    /// validation the server never passed.
    #[test]
    fn a_dane_session_never_resumes_a_pkix_connection() {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert = CertificateDer::from(include_bytes!("testdata/leaf.der").to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(include_bytes!("testdata/leaf.key.der").to_vec()));
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        server.alpn_protocols = vec![b"dot".to_vec()];
        let server = Arc::new(server);
        // DANE-EE for the test leaf: the certificate itself (usage 3, selector 0, matching 0).
        let tlsa = Arc::new(TlsaTable::default());
        let record = super::super::signal::TlsaRecord { usage: 3, selector: 0, matching: 0, data: cert.to_vec() };
        tlsa.put(&TlsaTable::key("tcp", "ns1.example"), vec![record], u64::MAX, 0);
        let configs = TlsConfigs::new(
            b"dot",
            Arc::new(builtin_roots()),
            Arc::new(SessionStore::new(16)),
            Arc::new(SessionStore::new(16)),
            tlsa,
            "tcp",
        )
        .unwrap();
        assert_eq!(handshake(&configs.dane, "ns1.example", &server), Ok(false), "DANE authenticates the leaf");
        assert_eq!(handshake(&configs.dane, "ns1.example", &server), Ok(true), "and resumes its own session");
        // The leaf does not chain to the web PKI: a PKIX connection must do a full
        // handshake and fail, whatever DANE sessions exist for the name.
        let pkix = handshake(&configs.pkix, "ns1.example", &server);
        assert_eq!(pkix.as_ref().map_err(failure_reason), Err(TransportFailure::CertUntrusted), "{pkix:?}");
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let e = roots_from_file(std::path::Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"));
    }
}
