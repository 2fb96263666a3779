//! DANE authentication of nameservers (RFC 6698, RFC 7671, SVCB-DANE): the server's
//! certificate must match a DNSSEC-secure TLSA record at `_853._tcp.<name>` (DoT),
//! `_853._quic.<name>` (DoQ) or `_443._tcp.<name>` (DoH; ports from the signal), where `<name>` is the TLSA base name, which is also the SNI.
//!
//! Usages 3 (DANE-EE: the end-entity certificate or its key, no name or expiry check,
//! RFC 7671 section 5.1) and 2 (DANE-TA: a certificate of the chain is the trust anchor,
//! and the chain must validate to it for the name, section 5.2); selectors 0 (whole
//! certificate) and 1 (SubjectPublicKeyInfo); matching types 0 (exact), 1 (SHA-256) and 2
//! (SHA-512). Usages 0 and 1 were refused when the records were read (`signal.rs`): a
//! secure TLSA RRset with no usable record makes authentication impossible.
//!
//! The TLSA records live in a [`TlsaTable`] shared by the resolver (which learns them) and
//! the TLS verifier (which reads them at handshake time), keyed by transport and host (the
//! verifier sees the SNI, not the port; the port only names the TLSA owner).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use ring::digest;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;

use super::error::TransportFailure;
use super::signal::TlsaRecord;
use super::verifier::CertificateCheck;

/// The table namespace of DoH's TLSA records. They live at `_443._tcp.<name>` (or the
/// signal's port), beside DoT's `_853._tcp.<name>`: the verifier sees only the SNI, so the
/// two are kept apart by transport, not by owner name.
pub const DOH_PROTO: &str = "https";

/// A handshake failure of DANE, as a stable reason.
pub const NO_TLSA: TransportFailure = TransportFailure::DaneNoTlsa;
/// The TLSA RRset has no record adox can use (usages 0/1 only, RFC 7671 section 4.1).
pub const NO_USABLE_TLSA: TransportFailure = TransportFailure::DaneNoUsableTlsa;
/// No record matches the certificate chain.
pub const MISMATCH: TransportFailure = TransportFailure::DaneMismatch;

/// Secure TLSA RRsets by transport and host (`tcp/ns1.example.`), with their expiry.
#[derive(Debug, Default)]
pub struct TlsaTable {
    /// The entries, and the bytes they are charged.
    map: RwLock<(HashMap<String, TlsaEntry>, usize)>,
    /// The TLS session stores whose tickets for a host are dropped when its TLSA records
    /// change: a resumed handshake checks no certificate, so a session authenticated
    /// under the old records must not outlive them.
    sessions: std::sync::OnceLock<Vec<Arc<super::sessions::SessionStore>>>,
}

/// The usable records of one secure RRset, and the Unix second it expires.
type TlsaEntry = (Arc<[TlsaRecord]>, u64);

/// Bytes of entries kept at most; past it, expired entries go first, then those closest to
/// expiry (never the whole table, which would break every strict DANE server at once).
const MAX_BYTES: usize = 32 << 20;
/// Usable records kept of one RRset: more than any server publishes.
const MAX_RECORDS: usize = 8;

/// What an entry costs: its key, its records and their association data.
fn entry_bytes(key: &str, records: &[TlsaRecord]) -> usize {
    96 + key.len() + records.iter().map(|r| size_of::<TlsaRecord>() + r.data.len() + 16).sum::<usize>()
}

/// The table namespace of a transport's TLSA records (`None` for Do53).
pub fn table_proto(t: adox_api::policy::Transport) -> Option<&'static str> {
    use adox_api::policy::Transport;
    match t {
        Transport::Dot => Some("tcp"),
        Transport::Doq => Some("quic"),
        Transport::Doh => Some(DOH_PROTO),
        Transport::Do53 => None,
    }
}

impl TlsaTable {
    /// The TLSA owner name for `host` over `proto` (`tcp` or `quic`) on `port` (RFC 6698
    /// section 3).
    pub fn owner(port: u16, proto: &str, host: &str) -> String {
        format!("_{port}._{proto}.{}.", host.trim_end_matches('.')).to_ascii_lowercase()
    }

    /// The table key of `host` over `proto`.
    pub fn key(proto: &str, host: &str) -> String {
        format!("{proto}/{}.", host.trim_end_matches('.')).to_ascii_lowercase()
    }

    /// Stores the usable records of a secure TLSA RRset (possibly none) under `key` until
    /// `until`.
    pub fn put(&self, key: &str, mut records: Vec<TlsaRecord>, until: u64, now: u64) {
        records.truncate(MAX_RECORDS);
        let changed = self.get(key, 0).is_some_and(|old| *old != records[..]);
        if changed
            && let Some(host) = key.split_once('/').map(|(_, h)| h.trim_end_matches('.').to_string())
            && let Ok(name) = ServerName::try_from(host)
        {
            for store in self.sessions.get().into_iter().flatten() {
                store.forget(&name);
            }
        }
        let key = key.to_ascii_lowercase();
        let cost = entry_bytes(&key, &records);
        let mut guard = self.map.write().unwrap_or_else(|p| p.into_inner());
        let (map, bytes) = &mut *guard;
        if let Some((old, _)) = map.remove(&key) {
            *bytes -= entry_bytes(&key, &old);
        }
        if *bytes + cost > MAX_BYTES {
            map.retain(|k, (r, u)| {
                let keep = *u > now;
                if !keep {
                    *bytes -= entry_bytes(k, r);
                }
                keep
            });
        }
        while *bytes + cost > MAX_BYTES {
            let Some(k) = map.iter().min_by_key(|(_, (_, u))| *u).map(|(k, _)| k.clone()) else { break };
            if let Some((r, _)) = map.remove(&k) {
                *bytes -= entry_bytes(&k, &r);
            }
        }
        *bytes += cost;
        map.insert(key, (records.into(), until));
    }

    /// Registers the session stores to purge when a host's records change (once, at start).
    pub fn attach_sessions(&self, stores: Vec<Arc<super::sessions::SessionStore>>) {
        let _ = self.sessions.set(stores);
    }

    /// The records under `key` and when they stop authenticating, live or not (the state
    /// file).
    pub fn entry(&self, key: &str) -> Option<(Arc<[TlsaRecord]>, u64)> {
        let guard = self.map.read().unwrap_or_else(|p| p.into_inner());
        guard.0.get(&key.to_ascii_lowercase()).cloned()
    }

    /// The live records under `key`, if a secure RRset is known.
    pub fn get(&self, key: &str, now: u64) -> Option<Arc<[TlsaRecord]>> {
        let guard = self.map.read().unwrap_or_else(|p| p.into_inner());
        guard.0.get(&key.to_ascii_lowercase()).filter(|(_, until)| *until > now).map(|(r, _)| r.clone())
    }
}

/// A DANE failure as rustls carries it out of the verifier; `tls::failure_reason` reads it
/// back by type.
fn dane_error(f: TransportFailure) -> rustls::Error {
    rustls::Error::Other(rustls::OtherError(Arc::new(DaneError(f))))
}

/// The typed reason inside [`dane_error`].
#[derive(Debug)]
pub(crate) struct DaneError(pub(crate) TransportFailure);

impl std::fmt::Display for DaneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl std::error::Error for DaneError {}

/// The certificate association data of `cert` for a selector and matching type.
fn association(cert: &CertificateDer<'_>, selector: u8, matching: u8) -> Option<Vec<u8>> {
    let data = match selector {
        0 => cert.as_ref().to_vec(),
        1 => ParsedCertificate::try_from(cert).ok()?.subject_public_key_info().as_ref().to_vec(),
        _ => return None,
    };
    Some(match matching {
        0 => data,
        1 => digest::digest(&digest::SHA256, &data).as_ref().to_vec(),
        2 => digest::digest(&digest::SHA512, &data).as_ref().to_vec(),
        _ => return None,
    })
}

/// Checks a server's chain against TLSA records; the reason of the failure otherwise.
pub fn check(
    records: &[TlsaRecord],
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
    now: UnixTime,
    provider: &CryptoProvider,
) -> Result<(), TransportFailure> {
    let usable: Vec<&TlsaRecord> =
        records.iter().filter(|r| matches!(r.usage, 2 | 3) && r.selector <= 1 && r.matching <= 2).collect();
    if usable.is_empty() {
        return Err(NO_USABLE_TLSA);
    }
    for r in usable.iter().filter(|r| r.usage == 3) {
        if association(end_entity, r.selector, r.matching).is_some_and(|a| a == r.data) {
            return Ok(());
        }
    }
    for r in usable.iter().filter(|r| r.usage == 2) {
        for ta in intermediates {
            if association(ta, r.selector, r.matching).is_none_or(|a| a != r.data) {
                continue;
            }
            let mut roots = RootCertStore::empty();
            if roots.add(ta.clone()).is_err() {
                continue;
            }
            let Ok(leaf) = ParsedCertificate::try_from(end_entity) else { return Err(MISMATCH) };
            let chain_ok = rustls::client::verify_server_cert_signed_by_trust_anchor(
                &leaf,
                &roots,
                intermediates,
                now,
                provider.signature_verification_algorithms.all,
            )
            .is_ok();
            if chain_ok && rustls::client::verify_server_name(&leaf, server_name).is_ok() {
                return Ok(());
            }
        }
    }
    Err(MISMATCH)
}

/// DANE: the certificate chain matches the secure TLSA records of the SNI name, for one
/// transport (`tcp` for DoT, `quic` for DoQ); a failure carries its typed reason.
#[derive(Debug)]
pub(crate) struct DaneCheck {
    provider: Arc<CryptoProvider>,
    table: Arc<TlsaTable>,
    proto: &'static str,
}

impl DaneCheck {
    /// A check reading `table` for `proto`.
    pub(crate) fn new(provider: Arc<CryptoProvider>, table: Arc<TlsaTable>, proto: &'static str) -> Self {
        Self { provider, table, proto }
    }
}

impl CertificateCheck for DaneCheck {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let ServerName::DnsName(host) = server_name else {
            return Err(dane_error(NO_TLSA));
        };
        let key = TlsaTable::key(self.proto, host.as_ref());
        let records = self.table.get(&key, now.as_secs()).ok_or_else(|| dane_error(NO_TLSA))?;
        check(&records, end_entity, intermediates, server_name, now, &self.provider).map_err(dane_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flood of the largest TLSA RRsets stays within the table's byte budget, dropping
    /// the entries closest to expiry first.
    #[test]
    fn a_flood_of_large_tlsa_rrsets_stays_within_the_budget() {
        let t = TlsaTable::default();
        let big = TlsaRecord { usage: 3, selector: 0, matching: 0, data: vec![7; 4096] };
        t.put(&TlsaTable::key("tcp", "ns1.dot.lab"), vec![big.clone()], 1_000_000, 0);
        for i in 0..20_000u64 {
            t.put(&TlsaTable::key("tcp", &format!("ns{i}.evil")), vec![big.clone(); 100], 1_000 + i, 0);
        }
        let bytes = t.map.read().unwrap().1;
        assert!(bytes <= MAX_BYTES, "{bytes} bytes");
        assert!(t.map.read().unwrap().0.values().all(|(r, _)| r.len() <= MAX_RECORDS));
        assert!(t.get(&TlsaTable::key("tcp", "ns1.dot.lab"), 10).is_some(), "the longest-lived entry stays");
    }

    #[test]
    fn owner_names_and_expiry() {
        assert_eq!(TlsaTable::owner(853, "tcp", "NS1.dot.lab."), "_853._tcp.ns1.dot.lab.");
        assert_eq!(TlsaTable::owner(8853, "quic", "ns1.doq.lab"), "_8853._quic.ns1.doq.lab.");
        let t = TlsaTable::default();
        t.put(&TlsaTable::key("tcp", "ns1.dot.lab."), vec![], 100, 0);
        assert!(t.get(&TlsaTable::key("tcp", "NS1.dot.lab"), 99).is_some());
        assert!(t.get(&TlsaTable::key("quic", "ns1.dot.lab"), 99).is_none(), "per transport");
        assert!(t.get(&TlsaTable::key("tcp", "ns1.dot.lab"), 100).is_none(), "expired");
        // New records for a host drop the TLS sessions made under the old ones.
        let store = Arc::new(super::super::sessions::SessionStore::new(16));
        t.attach_sessions(vec![store.clone()]);
        let name = ServerName::try_from("ns1.dot.lab").unwrap().to_owned();
        let rec = TlsaRecord { usage: 3, selector: 1, matching: 1, data: vec![1; 32] };
        t.put(&TlsaTable::key("tcp", "ns1.dot.lab"), vec![rec.clone()], 200, 0);
        rustls::client::ClientSessionStore::set_kx_hint(&*store, name.clone(), rustls::NamedGroup::X25519);
        t.put(&TlsaTable::key("tcp", "ns1.dot.lab"), vec![rec.clone()], 300, 0);
        assert_eq!(store.len(), 1, "the same records keep the sessions");
        let other = TlsaRecord { data: vec![2; 32], ..rec };
        t.put(&TlsaTable::key("tcp", "ns1.dot.lab"), vec![other], 400, 0);
        assert_eq!(store.len(), 0, "changed records drop them");
    }

    /// A CA and a leaf for `ns1.example` made with openssl for these tests (P-256, valid
    /// until 2126; the leaf's key is there too, for a test server); the association data
    /// below was computed with openssl too.
    const CA: &[u8] = include_bytes!("testdata/ca.der");
    const LEAF: &[u8] = include_bytes!("testdata/leaf.der");
    const LEAF_SPKI_SHA256: &str = "dcb7270a5e296634b943602d76b871ff07f9722ecbf15fee6a3ba012bd28b88f";
    const LEAF_SHA512: &str = "d77ba036d38eb7b8cf184dd1238d4b1b8120fd15ae0cc252b9e6e27fb64afc95d4371a500bbd35b0fedf14a3e2efdb1e67d18a79b86a85cb855d560064a5c085";
    const CA_SHA256: &str = "f89291b13c5b6a527e4e29d9603a1204e3a0cab514913836319f7674eb0269af";
    const CA_SPKI_SHA256: &str = "acf65f3cb2b1b9a95b6c1543ea0694584ebf208e79e306698e3faf0a886c80d8";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn tlsa(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> TlsaRecord {
        TlsaRecord { usage, selector, matching, data }
    }

    fn run(records: &[TlsaRecord], chain: &[&[u8]], name: &str) -> Result<(), TransportFailure> {
        let provider = rustls::crypto::ring::default_provider();
        let leaf = CertificateDer::from(chain[0].to_vec());
        let rest: Vec<CertificateDer<'_>> = chain[1..].iter().map(|c| CertificateDer::from(c.to_vec())).collect();
        let name = ServerName::try_from(name.to_string()).unwrap();
        check(records, &leaf, &rest, &name, UnixTime::now(), &provider)
    }

    /// RFC 7671 section 5.1: DANE-EE matches the leaf (any selector and matching type) and
    /// checks neither the name nor the issuer.
    #[test]
    fn rfc7671_5_1_dane_ee_matches_the_leaf_whatever_its_name() {
        for r in [tlsa(3, 1, 1, hex(LEAF_SPKI_SHA256)), tlsa(3, 0, 2, hex(LEAF_SHA512)), tlsa(3, 0, 0, LEAF.to_vec())] {
            assert_eq!(run(std::slice::from_ref(&r), &[LEAF], "other.example"), Ok(()), "{r:?}");
        }
        // Another key: no match, whatever else the RRset holds.
        let wrong = tlsa(3, 1, 1, hex(CA_SPKI_SHA256));
        assert_eq!(run(&[wrong], &[LEAF, CA], "ns1.example"), Err(MISMATCH));
    }

    /// RFC 7671 section 5.2: DANE-TA matches a certificate of the chain, which must then
    /// validate to it for the TLSA base name.
    #[test]
    fn rfc7671_5_2_dane_ta_needs_the_chain_to_validate_to_it_for_the_name() {
        for r in [tlsa(2, 0, 1, hex(CA_SHA256)), tlsa(2, 1, 1, hex(CA_SPKI_SHA256))] {
            assert_eq!(run(std::slice::from_ref(&r), &[LEAF, CA], "ns1.example"), Ok(()), "{r:?}");
            assert_eq!(run(std::slice::from_ref(&r), &[LEAF, CA], "ns2.example"), Err(MISMATCH), "name checked");
            assert_eq!(run(std::slice::from_ref(&r), &[LEAF], "ns1.example"), Err(MISMATCH), "TA not sent");
        }
        // The leaf's own hash as a TA: it did not issue itself.
        assert_eq!(run(&[tlsa(2, 1, 1, hex(LEAF_SPKI_SHA256))], &[LEAF, CA], "ns1.example"), Err(MISMATCH));
    }

    #[test]
    fn records_that_cannot_authenticate_fail_before_any_match() {
        let provider = rustls::crypto::ring::default_provider();
        let cert = CertificateDer::from(vec![0x30, 0x00]);
        let name = ServerName::try_from("ns1.dot.lab").unwrap();
        let r = check(&[], &cert, &[], &name, UnixTime::now(), &provider);
        assert_eq!(r, Err(NO_USABLE_TLSA));
        // DANE-EE over the whole certificate, exact match: matches these very bytes.
        let exact = TlsaRecord { usage: 3, selector: 0, matching: 0, data: vec![0x30, 0x00] };
        assert_eq!(check(&[exact], &cert, &[], &name, UnixTime::now(), &provider), Ok(()));
        let other = TlsaRecord { usage: 3, selector: 0, matching: 1, data: vec![0; 32] };
        assert_eq!(check(&[other], &cert, &[], &name, UnixTime::now(), &provider), Err(MISMATCH));
    }
}
