//! Experimental DELEG (draft-ietf-deleg): the parent side of a delegation says, signed with
//! the parent's keys like a DS, which servers serve the child zone and how to reach them.
//! This is the one place in DNS where a zone's owner can ask for encryption for one zone
//! and not for another served by the same nameserver (R9 by the owner).
//!
//! A DELEG RDATA is one DelegInfo: SvcParams-style key/length/value fields in strictly
//! increasing key order (draft-ietf-deleg section 4): `mandatory` (0), `server-ipv4` (1),
//! `server-ipv6` (2), `server-name` (3, one or more uncompressed names) and
//! `include-delegparam` (4, not followed here). No published draft defines a transport key
//! yet, so adox reads the private-use keys the way dnspython's experimental DELEG module
//! numbers them: `alpn` as key65280 (SVCB `alpn` wire format: `dot`, `doq`, `h2`) and
//! `dohpath` as key65281. A DelegInfo whose `mandatory` names a key adox does not know is
//! skipped, as RFC 9460 section 8 asks; one malformed record never discards its
//! neighbours.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use adox_api::policy::Transport;

use super::signal::{SignalError, SvcbRecord, for_each_param, mandatory_keys};

/// The DELEG record type (IANA, draft-ietf-deleg).
pub const DELEG_TYPE: u16 = 61440;

/// DelegInfo keys.
mod key {
    pub(super) const MANDATORY: u16 = 0;
    pub(super) const SERVER_IPV4: u16 = 1;
    pub(super) const SERVER_IPV6: u16 = 2;
    pub(super) const SERVER_NAME: u16 = 3;
    pub(super) const INCLUDE_DELEGPARAM: u16 = 4;
    /// Private use: the transports, as SVCB's `alpn`.
    pub(super) const ALPN: u16 = 65280;
    /// Private use: the DoH URI template, as SVCB's `dohpath`.
    pub(super) const DOHPATH: u16 = 65281;
}

/// Keys a `mandatory` list may name (`include-delegparam` is not followed: a DelegInfo
/// that cannot be used without it is skipped).
const KNOWN_KEYS: [u16; 5] = [key::SERVER_IPV4, key::SERVER_IPV6, key::SERVER_NAME, key::ALPN, key::DOHPATH];

/// Names, or addresses of each family, kept of one DelegInfo: more than any delegation
/// lists, and a bound on what one record can make adox hold.
const MAX_SERVERS: usize = 13;

/// DELEG records read of one RRset.
pub const MAX_DELEG_RECORDS: usize = 8;

/// One usable DelegInfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegInfo {
    /// `server-name`: nameserver names (resolved like NS targets).
    pub names: Vec<Name>,
    /// `server-ipv4` and `server-ipv6`: addresses of the server(s).
    pub addrs: Vec<IpAddr>,
    /// The encrypted transports offered, in adox's order (DoQ, DoT, DoH); empty: the
    /// owner says nothing of transport (Do53, or whatever the signals and probes find).
    pub transports: Vec<Transport>,
    /// The DoH URI template, when `h2` is offered.
    pub dohpath: Option<String>,
    /// It has an `alpn` key: the owner asks for encryption, even where none of the
    /// transports it lists is one adox speaks (then nothing may be sent, not cleartext).
    pub asks_encryption: bool,
}

impl DelegInfo {
    /// Whether this DelegInfo speaks for the nameserver `ns` at `addr`.
    pub fn covers(&self, ns: &Name, addr: IpAddr) -> bool {
        self.names.iter().any(|n| n == ns) || self.addrs.contains(&addr)
    }
}

/// Parses one DELEG RDATA.
pub fn parse_deleg(rdata: &[u8]) -> Result<DelegInfo, SignalError> {
    let mut info = DelegInfo {
        names: Vec::new(),
        addrs: Vec::new(),
        transports: Vec::new(),
        dohpath: None,
        asks_encryption: false,
    };
    let mut alpn: Vec<String> = Vec::new();
    let mut mandatory: Vec<u16> = Vec::new();
    let mut include = false;
    for_each_param(rdata, 0, |k, value| {
        match k {
            key::MANDATORY => mandatory = mandatory_keys(value)?,
            key::SERVER_IPV4 => {
                if value.is_empty() || value.len() % 4 != 0 {
                    return Err(SignalError::Malformed("server-ipv4"));
                }
                let v4 = value.chunks(4).map(|c| IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3])));
                info.addrs.extend(v4.take(MAX_SERVERS));
            }
            key::SERVER_IPV6 => {
                if value.is_empty() || value.len() % 16 != 0 {
                    return Err(SignalError::Malformed("server-ipv6"));
                }
                let v6 = value.chunks(16).map(|c| {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(c);
                    IpAddr::V6(Ipv6Addr::from(b))
                });
                info.addrs.extend(v6.take(MAX_SERVERS));
            }
            key::SERVER_NAME => {
                let mut d = BinDecoder::new(value);
                while !d.is_empty() {
                    let n = Name::read(&mut d).map_err(|_| SignalError::Malformed("server-name"))?;
                    if info.names.len() < MAX_SERVERS {
                        info.names.push(crate::names::canonical(&n));
                    }
                }
                if info.names.is_empty() {
                    return Err(SignalError::Malformed("empty server-name"));
                }
            }
            key::INCLUDE_DELEGPARAM => include = true,
            key::ALPN => {
                // The SVCB parser reads the list (lengths, empty ids, a bound on its size).
                alpn = parse_alpn(value)?;
                info.asks_encryption = true;
            }
            key::DOHPATH => {
                let t = std::str::from_utf8(value).map_err(|_| SignalError::Malformed("dohpath not UTF-8"))?;
                if adox_api::policy::check_doh_path(t).is_err() {
                    return Err(SignalError::BadDohPath);
                }
                info.dohpath = Some(t.to_string());
            }
            _ => {}
        }
        Ok(())
    })?;
    for m in mandatory {
        if !KNOWN_KEYS.contains(&m) {
            return Err(SignalError::UnknownMandatory(m));
        }
    }
    if info.names.is_empty() && info.addrs.is_empty() {
        // Only an include (not followed here), or nothing at all: no server to speak of.
        return Err(SignalError::Malformed(if include { "include-delegparam is not followed" } else { "no server" }));
    }
    let record = SvcbRecord { priority: 1, target: Name::root(), alpn, port: None, dohpath: info.dohpath.clone() };
    info.transports = record.transports();
    Ok(info)
}

/// An `alpn` value (length-prefixed identifiers), read as SVCB's is.
fn parse_alpn(value: &[u8]) -> Result<Vec<String>, SignalError> {
    // An SVCB RDATA of priority 1, root target and this one key.
    let mut rdata = vec![0, 1, 0, 0, 1];
    rdata.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
    rdata.extend_from_slice(value);
    Ok(super::signal::parse_svcb(&rdata)?.alpn)
}

/// The usable DelegInfos of a DELEG RRset's RDATAs (at most [`MAX_DELEG_RECORDS`]), and the
/// reasons the others were skipped.
pub fn parse_deleg_set<'a>(rdatas: impl IntoIterator<Item = &'a [u8]>) -> (Vec<DelegInfo>, Vec<SignalError>) {
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for rdata in rdatas.into_iter().take(MAX_DELEG_RECORDS) {
        match parse_deleg(rdata) {
            Ok(i) => ok.push(i),
            Err(e) => bad.push(e),
        }
    }
    (ok, bad)
}

/// The parent's word on one child zone, as the transport plan reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegRule {
    /// The DelegInfos.
    pub infos: Vec<DelegInfo>,
    /// DNSSEC-secure (validated against the parent's keys): only then can it make a server
    /// strict, as a secure signal does.
    pub secure: bool,
}

impl DelegRule {
    /// The DelegInfo that speaks for the nameserver `ns` at `addr`, if one does, and whether
    /// it names `ns` (rather than only its address). Of several, the strongest: one naming
    /// the server before one giving its address, one asking for encryption before one that
    /// does not (record order is not signed).
    pub fn for_server(&self, ns: &Name, addr: IpAddr) -> Option<(&DelegInfo, bool)> {
        self.infos
            .iter()
            .filter(|i| i.covers(ns, addr))
            .map(|i| (i, i.names.contains(ns)))
            .max_by_key(|(i, by_name)| (*by_name, i.asks_encryption))
    }

    /// Whether some DelegInfo asks for encryption.
    pub fn asks_encryption(&self) -> bool {
        self.infos.iter().any(|i| i.asks_encryption)
    }

    /// The nameserver names the DELEG RRset gives, in order, without repeats.
    pub fn server_names(&self) -> Vec<Name> {
        let mut out: Vec<Name> = Vec::new();
        for n in self.infos.iter().flat_map(|i| &i.names) {
            if !out.contains(n) {
                out.push(n.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(k: u16, v: &[u8]) -> Vec<u8> {
        let mut out = k.to_be_bytes().to_vec();
        out.extend_from_slice(&(v.len() as u16).to_be_bytes());
        out.extend_from_slice(v);
        out
    }

    fn name_wire(n: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in n.trim_end_matches('.').split('.') {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    #[test]
    fn the_drafts_test_vector_parses() {
        // draft-ietf-deleg: DELEG mandatory=server-ipv4 server-ipv4=192.0.2.1,192.0.2.2
        let rdata = [0, 0, 0, 2, 0, 1, 0, 1, 0, 8, 192, 0, 2, 1, 192, 0, 2, 2];
        let info = parse_deleg(&rdata).unwrap();
        assert_eq!(info.addrs, ["192.0.2.1".parse::<IpAddr>().unwrap(), "192.0.2.2".parse().unwrap()]);
        assert!(info.names.is_empty());
        assert!(info.transports.is_empty());
    }

    #[test]
    fn a_server_name_with_alpn_offers_its_transports() {
        let mut rdata = field(0, &[0xff, 0x00]);
        rdata.extend(field(3, &[name_wire("ns.shared.lab."), name_wire("NS2.Shared.lab.")].concat()));
        rdata.extend(field(65280, b"\x03dot\x03doq"));
        let info = parse_deleg(&rdata).unwrap();
        let ns: Name = "ns2.shared.lab.".parse().unwrap();
        assert_eq!(info.names.len(), 2);
        assert!(info.covers(&ns, "192.0.2.9".parse().unwrap()), "names are compared canonically");
        assert_eq!(info.transports, [Transport::Doq, Transport::Dot]);
    }

    #[test]
    fn hostile_records_are_refused_with_their_reason() {
        let name = field(3, &name_wire("ns.lab."));
        let cases: Vec<(Vec<u8>, SignalError)> = vec![
            ([field(3, &name_wire("a.")), field(1, &[1, 2, 3, 4])].concat(), SignalError::KeyOrder),
            ([field(0, &[0, 9]), name.clone()].concat(), SignalError::UnknownMandatory(9)),
            ([field(0, &[0, 4]), name.clone()].concat(), SignalError::UnknownMandatory(4)),
            (field(1, &[1, 2, 3]), SignalError::Malformed("server-ipv4")),
            (field(2, &[0; 15]), SignalError::Malformed("server-ipv6")),
            (field(3, &[3, b'a']), SignalError::Malformed("server-name")),
            (field(4, &name_wire("x.lab.")), SignalError::Malformed("include-delegparam is not followed")),
            (Vec::new(), SignalError::Malformed("no server")),
            ([name.clone(), field(65280, b"\x00")].concat(), SignalError::Malformed("empty alpn id")),
            ([name.clone(), field(65281, b"/no-template")].concat(), SignalError::BadDohPath),
            ([name.clone(), vec![0xff, 0x00, 0x00]].concat(), SignalError::Malformed("truncated length")),
            ([name, vec![0xff, 0x00, 0x00, 0x09, 1]].concat(), SignalError::Malformed("value runs past the end")),
        ];
        for (rdata, want) in cases {
            assert_eq!(parse_deleg(&rdata), Err(want.clone()), "{rdata:?}");
        }
    }

    #[test]
    fn a_bad_record_never_discards_its_neighbours_and_the_set_is_bounded() {
        let good = field(3, &name_wire("ns.lab."));
        let bad = field(1, &[1]);
        let mut set: Vec<&[u8]> = vec![&bad, &good];
        let (ok, errs) = parse_deleg_set(set.clone());
        assert_eq!((ok.len(), errs.len()), (1, 1));
        set.extend(std::iter::repeat_n(good.as_slice(), 20));
        assert_eq!(parse_deleg_set(set).0.len(), MAX_DELEG_RECORDS - 1);
        let many: Vec<u8> = (0..40u8).flat_map(|i| [10, 0, 0, i]).collect();
        assert_eq!(parse_deleg(&field(1, &many)).unwrap().addrs.len(), MAX_SERVERS);
    }

    #[test]
    fn a_rule_finds_the_info_of_a_server_by_name_or_address() {
        let a = parse_deleg(&[field(3, &name_wire("a.lab.")), field(65280, b"\x03dot")].concat()).unwrap();
        let b = parse_deleg(&field(1, &[192, 0, 2, 7])).unwrap();
        let rule = DelegRule { infos: vec![b.clone(), a.clone()], secure: true };
        let other: Name = "b.lab.".parse().unwrap();
        let a_name: Name = "a.lab.".parse().unwrap();
        assert_eq!(rule.for_server(&a_name, "192.0.2.1".parse().unwrap()), Some((&a, true)));
        assert_eq!(rule.for_server(&other, "192.0.2.7".parse().unwrap()), Some((&b, false)));
        assert_eq!(rule.for_server(&other, "192.0.2.8".parse().unwrap()), None);
        assert_eq!(rule.server_names(), std::slice::from_ref(&a_name));
        // The info naming the server wins over one that only gives its address, whatever
        // the order of the records.
        assert_eq!(rule.for_server(&a_name, "192.0.2.7".parse().unwrap()), Some((&a, true)));
        assert!(rule.asks_encryption() && !DelegRule { infos: vec![b], secure: true }.asks_encryption());
    }
}
