//! Owner signals read from raw RDATA, one record at a time: SVCB for DNS servers (RFC 9460,
//! RFC 9461) and TLSA (RFC 6698, used by SVCB-DANE). A malformed or unusable record is
//! skipped with a reason and never discards its neighbours (RFC 9460 section 2.2); hostile
//! values (unknown mandatory keys, port 0 or 53, huge `alpn` lists, a `dohpath` that is
//! not a usable URI template) are refused, never weakening anything.

use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use adox_api::policy::Transport;

/// SvcParamKeys (RFC 9460 section 14.3.2, RFC 9461 section 5).
mod key {
    pub(super) const MANDATORY: u16 = 0;
    pub(super) const ALPN: u16 = 1;
    pub(super) const NO_DEFAULT_ALPN: u16 = 2;
    pub(super) const PORT: u16 = 3;
    pub(super) const IPV4HINT: u16 = 4;
    pub(super) const ECH: u16 = 5;
    pub(super) const IPV6HINT: u16 = 6;
    pub(super) const DOHPATH: u16 = 7;
}

/// Keys this client understands (the ones a `mandatory` list may name).
const KNOWN_KEYS: [u16; 8] =
    [key::MANDATORY, key::ALPN, key::NO_DEFAULT_ALPN, key::PORT, key::IPV4HINT, key::ECH, key::IPV6HINT, key::DOHPATH];

/// More ALPN identifiers than any real server lists.
const MAX_ALPN: usize = 16;
/// A longer `dohpath` than any real URI template (RFC 9461 section 5).
const MAX_DOHPATH: usize = 512;
/// A TLSA association longer than a full certificate of any sane size (matching type 0).
const MAX_TLSA_DATA: usize = 4096;
/// Usable records kept of one SVCB RRset (in SvcPriority order): more than any server
/// publishes, and a bound on what one signal can hold.
const MAX_SVCB_RECORDS: usize = 8;

/// Why a record was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// The RDATA does not parse (truncated, bad name, a length running past the end).
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// SvcParamKeys not in strictly increasing order, or repeated.
    #[error("keys out of order or repeated")]
    KeyOrder,
    /// `mandatory` names a key this client does not understand.
    #[error("unknown mandatory key {0}")]
    UnknownMandatory(u16),
    /// A port a client must refuse (0, 53).
    #[error("forbidden port {0}")]
    ForbiddenPort(u16),
    /// An `alpn` list with more identifiers than any real one.
    #[error("alpn list too long")]
    AlpnTooLong,
    /// A `dohpath` longer than any real URI template.
    #[error("dohpath too long")]
    DohPathTooLong,
    /// A DoH record whose `dohpath` is not a template adox can expand (no `{?dns}`, not a
    /// path, characters a URI cannot hold).
    #[error("dohpath unusable")]
    BadDohPath,
    /// AliasMode (SvcPriority 0): not used for DNS server signals here.
    #[error("alias mode")]
    AliasMode,
    /// A TLSA certificate usage other than 2 and 3, or an unknown selector or matching type.
    #[error("unusable TLSA parameters {usage} {selector} {matching}")]
    UnusableTlsa {
        /// Certificate usage.
        usage: u8,
        /// Selector.
        selector: u8,
        /// Matching type.
        matching: u8,
    },
    /// The RRset failed DNSSEC validation: ignored whole, never followed.
    #[error("DNSSEC bogus: {0}")]
    Bogus(String),
}

/// One usable SVCB record for a DNS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvcbRecord {
    /// SvcPriority (lower first).
    pub priority: u16,
    /// TargetName (`.` means the owner name, RFC 9460 section 2.5.2).
    pub target: Name,
    /// ALPN identifiers, as listed.
    pub alpn: Vec<String>,
    /// Port override.
    pub port: Option<u16>,
    /// DoH URI template, if any.
    pub dohpath: Option<String>,
}

impl SvcbRecord {
    /// What the record holds on the heap, as an upper bound (cache charges).
    pub fn heap(&self) -> usize {
        let alpn: usize = self.alpn.iter().map(|a| 24 + a.len() + 16).sum();
        crate::cache::charge::name_heap(&self.target) + alpn + self.dohpath.as_ref().map_or(0, |p| p.len() + 16)
    }

    /// The encrypted transports this record offers, in adox's order of preference within
    /// one record (the `alpn` set is a set): DoQ, then DoT, then DoH.
    pub fn transports(&self) -> Vec<Transport> {
        let has = |id: &str| self.alpn.iter().any(|a| a == id);
        let mut out = Vec::new();
        if has("doq") {
            out.push(Transport::Doq);
        }
        if has("dot") {
            out.push(Transport::Dot);
        }
        // DoH over HTTP/2 only: HTTP/3 is not spoken (ARCHITECTURE.md says why).
        if has("h2") && self.dohpath.is_some() {
            out.push(Transport::Doh);
        }
        out
    }

    /// The port for `transport`: the `port` key, else 853 for DoT/DoQ and 443 for DoH.
    pub fn port_for(&self, transport: Transport) -> u16 {
        self.port.unwrap_or(if transport == Transport::Doh { 443 } else { 853 })
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

/// Walks SvcParams (RFC 9460 section 2.2) from offset `at` to the end of `rdata`, giving
/// `f` each key and value; keys must be strictly increasing. DELEG's DelegInfos use the
/// same form (`upstream::deleg`).
pub(super) fn for_each_param(
    rdata: &[u8],
    mut at: usize,
    mut f: impl FnMut(u16, &[u8]) -> Result<(), SignalError>,
) -> Result<(), SignalError> {
    let mut last_key: Option<u16> = None;
    while at < rdata.len() {
        let k = u16_at(rdata, at).ok_or(SignalError::Malformed("truncated key"))?;
        let len = usize::from(u16_at(rdata, at + 2).ok_or(SignalError::Malformed("truncated length"))?);
        let value = rdata.get(at + 4..at + 4 + len).ok_or(SignalError::Malformed("value runs past the end"))?;
        if last_key.is_some_and(|l| k <= l) {
            return Err(SignalError::KeyOrder);
        }
        last_key = Some(k);
        f(k, value)?;
        at += 4 + len;
    }
    Ok(())
}

/// A `mandatory` value: the keys it lists.
pub(super) fn mandatory_keys(value: &[u8]) -> Result<Vec<u16>, SignalError> {
    if value.is_empty() || !value.len().is_multiple_of(2) {
        return Err(SignalError::Malformed("mandatory list"));
    }
    Ok(value.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect())
}

/// Parses one SVCB RDATA.
pub fn parse_svcb(rdata: &[u8]) -> Result<SvcbRecord, SignalError> {
    let priority = u16_at(rdata, 0).ok_or(SignalError::Malformed("no SvcPriority"))?;
    let mut d = BinDecoder::new(&rdata[2..]);
    let target = Name::read(&mut d).map_err(|_| SignalError::Malformed("bad TargetName"))?;
    let at = rdata.len() - d.len();
    if priority == 0 {
        return Err(SignalError::AliasMode);
    }
    let mut rec = SvcbRecord { priority, target, alpn: Vec::new(), port: None, dohpath: None };
    let mut mandatory: Vec<u16> = Vec::new();
    for_each_param(rdata, at, |k, value| {
        match k {
            key::MANDATORY => mandatory = mandatory_keys(value)?,
            key::ALPN => {
                let mut i = 0;
                while i < value.len() {
                    let l = usize::from(value[i]);
                    let id = value.get(i + 1..i + 1 + l).ok_or(SignalError::Malformed("alpn"))?;
                    if l == 0 {
                        return Err(SignalError::Malformed("empty alpn id"));
                    }
                    if rec.alpn.len() == MAX_ALPN {
                        return Err(SignalError::AlpnTooLong);
                    }
                    rec.alpn.push(String::from_utf8_lossy(id).into_owned());
                    i += 1 + l;
                }
                if rec.alpn.is_empty() {
                    return Err(SignalError::Malformed("empty alpn"));
                }
            }
            key::NO_DEFAULT_ALPN if !value.is_empty() => return Err(SignalError::Malformed("no-default-alpn value")),
            key::PORT => {
                let p = u16_at(value, 0).filter(|_| value.len() == 2).ok_or(SignalError::Malformed("port"))?;
                if p == 0 || p == 53 {
                    return Err(SignalError::ForbiddenPort(p));
                }
                rec.port = Some(p);
            }
            key::IPV4HINT if value.is_empty() || value.len() % 4 != 0 => {
                return Err(SignalError::Malformed("ipv4hint"));
            }
            key::IPV6HINT if value.is_empty() || value.len() % 16 != 0 => {
                return Err(SignalError::Malformed("ipv6hint"));
            }
            key::DOHPATH if value.len() > MAX_DOHPATH => return Err(SignalError::DohPathTooLong),
            key::DOHPATH => {
                let t = std::str::from_utf8(value).map_err(|_| SignalError::Malformed("dohpath not UTF-8"))?;
                rec.dohpath = Some(t.to_string());
            }
            // Hints and ECH are not used for DNS server connections; unknown keys are
            // ignored unless mandatory.
            _ => {}
        }
        Ok(())
    })?;
    for m in mandatory {
        if m == key::MANDATORY || !KNOWN_KEYS.contains(&m) {
            return Err(SignalError::UnknownMandatory(m));
        }
    }
    let doh = rec.alpn.iter().any(|a| a == "h2" || a == "h3");
    // (An h3 record's template is checked too: a malformed one is refused, not ignored.)
    if doh && rec.dohpath.as_deref().is_some_and(|p| adox_api::policy::check_doh_path(p).is_err()) {
        return Err(SignalError::BadDohPath);
    }
    Ok(rec)
}

/// Parses every record of an SVCB RRset: the usable ones in SvcPriority order, and the
/// reasons the others were skipped.
pub fn parse_svcb_set<'a>(rdatas: impl IntoIterator<Item = &'a [u8]>) -> (Vec<SvcbRecord>, Vec<SignalError>) {
    let mut ok: Vec<SvcbRecord> = Vec::new();
    let mut skipped = Vec::new();
    for r in rdatas {
        match parse_svcb(r) {
            // Only the best few are kept while parsing: an RRset of thousands of records
            // never grows a buffer that the signal cache would then hold.
            Ok(rec) => {
                let at = ok.partition_point(|k| k.priority <= rec.priority);
                if at < MAX_SVCB_RECORDS {
                    ok.insert(at, rec);
                    ok.truncate(MAX_SVCB_RECORDS);
                }
            }
            Err(e) if skipped.len() < MAX_SVCB_RECORDS => skipped.push(e),
            Err(_) => {}
        }
    }
    ok.shrink_to_fit();
    skipped.shrink_to_fit();
    (ok, skipped)
}

/// One usable TLSA record (usages 2 DANE-TA and 3 DANE-EE only, as SVCB-DANE asks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsaRecord {
    /// Certificate usage (2 or 3).
    pub usage: u8,
    /// Selector: 0 full certificate, 1 SubjectPublicKeyInfo.
    pub selector: u8,
    /// Matching type: 0 exact, 1 SHA-256, 2 SHA-512.
    pub matching: u8,
    /// Certificate association data.
    pub data: Vec<u8>,
}

/// Parses one TLSA RDATA.
pub fn parse_tlsa(rdata: &[u8]) -> Result<TlsaRecord, SignalError> {
    let [usage, selector, matching, data @ ..] = rdata else {
        return Err(SignalError::Malformed("TLSA shorter than 4 octets"));
    };
    let (usage, selector, matching) = (*usage, *selector, *matching);
    if !matches!(usage, 2 | 3) || selector > 1 || matching > 2 {
        return Err(SignalError::UnusableTlsa { usage, selector, matching });
    }
    let want = match matching {
        1 => Some(32),
        2 => Some(64),
        _ => None,
    };
    if data.is_empty() || data.len() > MAX_TLSA_DATA || want.is_some_and(|w| data.len() != w) {
        return Err(SignalError::Malformed("TLSA data length"));
    }
    Ok(TlsaRecord { usage, selector, matching, data: data.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svcb(priority: u16, target: &[u8], params: &[(u16, &[u8])]) -> Vec<u8> {
        let mut v = priority.to_be_bytes().to_vec();
        v.extend_from_slice(target);
        for (k, val) in params {
            v.extend_from_slice(&k.to_be_bytes());
            v.extend_from_slice(&(val.len() as u16).to_be_bytes());
            v.extend_from_slice(val);
        }
        v
    }

    const NS1: &[u8] = b"\x03ns1\x03dot\x03lab\x00";

    #[test]
    fn parses_a_lab_record_and_prefers_doq_within_it() {
        let r = parse_svcb(&svcb(1, NS1, &[(1, b"\x03dot\x03doq")])).unwrap();
        assert_eq!(r.target.to_ascii(), "ns1.dot.lab.");
        assert_eq!(r.transports(), vec![Transport::Doq, Transport::Dot]);
        assert_eq!((r.port_for(Transport::Dot), r.port_for(Transport::Doh)), (853, 443));
        let p = parse_svcb(&svcb(2, b"\x00", &[(1, b"\x03dot"), (3, &8853u16.to_be_bytes())])).unwrap();
        assert_eq!(p.port_for(Transport::Dot), 8853);
        assert!(p.target.is_root());
    }

    #[test]
    fn hostile_records_are_refused_with_their_reason() {
        let cases: Vec<(Vec<u8>, SignalError)> = vec![
            (svcb(1, NS1, &[(0, &[0, 9]), (1, b"\x03dot")]), SignalError::UnknownMandatory(9)),
            (svcb(1, NS1, &[(0, &[0, 0]), (1, b"\x03dot")]), SignalError::UnknownMandatory(0)),
            (svcb(1, NS1, &[(1, b"\x03dot"), (3, &[0, 0])]), SignalError::ForbiddenPort(0)),
            (svcb(1, NS1, &[(1, b"\x03dot"), (3, &[0, 53])]), SignalError::ForbiddenPort(53)),
            (svcb(1, NS1, &[(3, &[3, 85]), (1, b"\x03dot")]), SignalError::KeyOrder),
            (svcb(1, NS1, &[(1, b"\x03dot"), (1, b"\x03doq")]), SignalError::KeyOrder),
            (svcb(1, NS1, &[(1, b"\x02h2"), (7, b"/dns-query")]), SignalError::BadDohPath),
            (svcb(1, NS1, &[(1, b"\x02h2"), (7, b"/a b{?dns}")]), SignalError::BadDohPath),
            (svcb(1, NS1, &[(1, b"\x02h2"), (7, b"https://evil.example/{?dns}")]), SignalError::BadDohPath),
            (svcb(0, NS1, &[]), SignalError::AliasMode),
            (svcb(1, NS1, &[(1, &[b"\x03dot".as_slice(); 17].concat())]), SignalError::AlpnTooLong),
        ];
        for (rdata, want) in cases {
            assert_eq!(parse_svcb(&rdata), Err(want.clone()), "{want}");
        }
        for cut in [1, 5, 20] {
            let good = svcb(1, NS1, &[(1, b"\x03dot")]);
            assert!(matches!(parse_svcb(&good[..cut.min(good.len() - 1)]), Err(SignalError::Malformed(_))));
        }
    }

    #[test]
    fn a_bad_record_never_discards_its_neighbours() {
        let good2 = svcb(2, NS1, &[(1, b"\x03dot")]);
        let bad = svcb(1, NS1, &[(0, &[0, 99]), (1, b"\x03doq")]);
        let good1 = svcb(1, NS1, &[(1, b"\x03doq"), (7, b"/q{?dns}")]);
        let (ok, skipped) = parse_svcb_set([good2.as_slice(), bad.as_slice(), good1.as_slice()]);
        assert_eq!(ok.iter().map(|r| r.priority).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(skipped, vec![SignalError::UnknownMandatory(99)]);
    }

    #[test]
    fn tlsa_usages_selectors_and_lengths() {
        let mut ee = vec![3, 1, 1];
        ee.extend_from_slice(&[7; 32]);
        assert_eq!(parse_tlsa(&ee).unwrap().usage, 3);
        let mut pkix_ee = ee.clone();
        pkix_ee[0] = 1;
        assert!(matches!(parse_tlsa(&pkix_ee), Err(SignalError::UnusableTlsa { usage: 1, .. })));
        let mut short = ee.clone();
        short.pop();
        assert!(matches!(parse_tlsa(&short), Err(SignalError::Malformed(_))));
        assert!(parse_tlsa(&[2, 0, 0]).is_err());
        assert!(parse_tlsa(&[2, 0, 0, 1, 2, 3]).is_ok());
    }
}

/// What is known of one nameserver's `_dns` SVCB signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A lookup is under way.
    Pending {
        /// The Unix second it started.
        since: u64,
        /// Whether the signal was known before (it expired): a refresh, not a first
        /// contact.
        refresh: bool,
    },
    /// Usable records, in SvcPriority order; empty when the name has none (NODATA,
    /// NXDOMAIN, or every record was refused).
    Known {
        /// The usable records.
        records: Vec<SvcbRecord>,
        /// Whether the RRset validated to a trust anchor.
        secure: bool,
        /// Transports with a DNSSEC-secure TLSA RRset at their TLSA base name (the
        /// record's TargetName), with that name: with a secure SVCB, these are strict and
        /// authenticated with DANE. A secure TLSA RRset without a usable record still
        /// counts (authentication is then impossible, and strict fails).
        dane: Vec<(Transport, Name)>,
        /// Whether the lookup needed the very nameserver it decides for (R5): it was
        /// fetched over that server's transport of the moment, and is reported.
        cycle: bool,
        /// Records refused, with their reasons.
        refused: Vec<SignalError>,
        /// Valid until this Unix second (the RRset's TTL).
        until: u64,
        /// For a strict signal: the Unix second its strict state ends whatever happens to
        /// its refreshes, when the first RRSIG over the SVCB RRset or one of its TLSA
        /// RRsets expires (an owner who withdraws encryption is never locked out longer).
        /// 0 for other signals.
        strict_until: u64,
    },
}

impl Signal {
    /// What an entry for `ns` costs the cache: its inline size and everything it holds on
    /// the heap (records, their names, ALPN lists and paths, refusal reasons), so a flood
    /// of hostile signals is charged for what it really takes.
    fn charge(&self, ns: &Name) -> usize {
        let base = 64 + size_of::<Self>() + crate::cache::charge::name_heap(ns);
        match self {
            Self::Known { records, dane, refused, .. } => {
                base + (records.capacity() - records.len()) * size_of::<SvcbRecord>()
                    + records.iter().map(|r| size_of::<SvcbRecord>() + r.heap()).sum::<usize>()
                    + dane.iter().map(|(_, n)| 48 + crate::cache::charge::name_heap(n)).sum::<usize>()
                    + refused.iter().map(|e| 48 + e.to_string().len()).sum::<usize>()
            }
            Self::Pending { .. } => base,
        }
    }

    /// Secure, with DANE for some transport: the nameserver is strict.
    pub fn is_strict(&self) -> bool {
        matches!(self, Self::Known { secure: true, dane, .. } if !dane.is_empty())
    }

    /// Strict and still within the validity of the signatures it was learned from: a
    /// strict state past its TTL holds until then (while refreshes fail or are blocked),
    /// never longer.
    pub fn strict_at(&self, now: u64) -> bool {
        self.is_strict() && matches!(self, Self::Known { strict_until, .. } if now < *strict_until)
    }
}

/// Signals per nameserver name, shared by all workers.
#[derive(Debug)]
pub struct SignalCache {
    shards: Box<[std::sync::Mutex<crate::cache::clock::ClockCache<Name, Signal>>]>,
    /// Strict signals again, outside the evicting cache: memory pressure must not turn a
    /// strict server back into an opportunistic one (few servers are strict). With the
    /// bytes they are charged.
    strict: std::sync::Mutex<(std::collections::HashMap<Name, Signal>, usize)>,
    /// A strict signal was stored or dropped since the state was last saved.
    strict_changed: std::sync::atomic::AtomicBool,
    /// Which signal lookup waits for which nameserver's signal (see [`Self::start_wait`]).
    waits: std::sync::Mutex<WaitGraph>,
}

/// Waits of signal lookups for other signals, across workers.
#[derive(Debug, Default)]
struct WaitGraph {
    /// Waiter (the nameserver whose signal a lookup is for) -> the nameserver it waits
    /// for, with the token of the wait that recorded it.
    edges: std::collections::HashMap<Name, (Name, u64)>,
    /// How many signal lookups wait, one for the next, before a lookup of this name (a
    /// lookup nobody waits for is at depth 0), and how many waits point at it: the entry
    /// goes with the last of them (its depth is the deepest seen meanwhile: it errs on
    /// the side of refusing a wait).
    depth: std::collections::HashMap<Name, (u8, u32)>,
    next_token: u64,
}

/// Why a signal lookup must not wait for another signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitRefused {
    /// The wait would close a cycle of signal lookups (R5).
    Cycle,
    /// Already [`MAX_WAIT_DEPTH`] lookups wait one for the next before this one (a
    /// hostile zone naming ever new nameservers cannot chain waits without end).
    TooDeep,
}

/// A registered wait of one signal lookup; the edge goes when it is dropped (also when
/// the waiting resolution is cancelled), but only its own: a second lookup of the same
/// name recorded later keeps its edge.
#[derive(Debug)]
pub struct WaitGuard<'a> {
    cache: &'a SignalCache,
    edge: Option<(Name, u64)>,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if let Some((waiter, token)) = &self.edge {
            let mut g = self.cache.waits.lock().unwrap_or_else(|p| p.into_inner());
            if matches!(g.edges.get(waiter), Some((_, t)) if t == token)
                && let Some((on, _)) = g.edges.remove(waiter)
                && let Some((_, n)) = g.depth.get_mut(&on)
            {
                *n -= 1;
                if *n == 0 {
                    g.depth.remove(&on);
                }
            }
        }
    }
}

/// Waits of signal lookups recorded at most: each is one lookup under way (bounded by the
/// workers' resolution caps); this bounds the graph whatever happens. Past it a wait is
/// not recorded, and a cycle through it ends by the wait's timeout.
const MAX_WAIT_EDGES: usize = 65_536;
/// Links followed at most when looking for a cycle; a longer chain is treated as one.
const MAX_WAIT_CHAIN: usize = 64;
/// Signal lookups that may wait one for the next (client query -> lookup -> lookup ...).
pub const MAX_WAIT_DEPTH: u8 = 4;

/// Bytes of strict signals kept outside the cache at most. A strict signal in force is
/// never dropped for room: past the budget, new strict signals live in the evicting cache
/// only (and a flood of them cannot push an existing one out).
const STRICT_BYTES: usize = 32 << 20;

const SIGNAL_SHARDS: usize = 16;
/// A lookup that has not finished after this long is started again.
const PENDING_FOR: u64 = 30;

/// Whether `sig` still decides at `now`: a lookup under way for less than [`PENDING_FOR`],
/// or a signal within its TTL.
fn live_at(sig: &Signal, now: u64) -> bool {
    match sig {
        Signal::Pending { since, .. } => now.saturating_sub(*since) < PENDING_FOR,
        Signal::Known { until, .. } => now < *until,
    }
}

impl SignalCache {
    /// A cache for about `names` nameserver names.
    pub fn new(names: usize) -> Self {
        let per = names.div_ceil(SIGNAL_SHARDS).max(1) * 512;
        Self {
            shards: (0..SIGNAL_SHARDS)
                .map(|_| std::sync::Mutex::new(crate::cache::clock::ClockCache::new(per)))
                .collect(),
            strict: Default::default(),
            strict_changed: std::sync::atomic::AtomicBool::new(false),
            waits: Default::default(),
        }
    }

    /// Registers that a resolution is about to wait for the signal of `on`: the lookup of
    /// `waiter`'s signal, or a client query (`None`), which nothing waits for. A lookup
    /// that would wait for itself, directly or through the lookups `on` waits for (any
    /// number of zones: A's signal served by B whose signal is served by A), would wait
    /// until its timeout: that is a [`WaitRefused::Cycle`], and it must go on without
    /// waiting; so must a lookup that [`MAX_WAIT_DEPTH`] others already wait for one after
    /// the other. The check and the record are one step under one lock, so of two
    /// lookups closing a cycle at once one sees it, across workers.
    pub fn start_wait(&self, waiter: Option<&Name>, on: &Name) -> Result<WaitGuard<'_>, WaitRefused> {
        let Some(waiter) = waiter else { return Ok(WaitGuard { cache: self, edge: None }) };
        let mut g = self.waits.lock().unwrap_or_else(|p| p.into_inner());
        let mut cur = on;
        let mut links = 0;
        while cur != waiter {
            match g.edges.get(cur) {
                Some((next, _)) if links < MAX_WAIT_CHAIN => {
                    cur = next;
                    links += 1;
                }
                Some(_) => return Err(WaitRefused::Cycle),
                None => break,
            }
        }
        if cur == waiter {
            return Err(WaitRefused::Cycle);
        }
        let depth = g.depth.get(waiter).map_or(0, |(d, _)| *d);
        if depth >= MAX_WAIT_DEPTH {
            return Err(WaitRefused::TooDeep);
        }
        if g.edges.len() >= MAX_WAIT_EDGES {
            return Ok(WaitGuard { cache: self, edge: None });
        }
        g.next_token += 1;
        let token = g.next_token;
        g.edges.insert(waiter.clone(), (on.clone(), token));
        let (d, n) = g.depth.entry(on.clone()).or_insert((0, 0));
        *d = (*d).max(depth + 1);
        *n += 1;
        Ok(WaitGuard { cache: self, edge: Some((waiter.clone(), token)) })
    }

    /// Whether a strict signal was stored or dropped since the last call (the state file
    /// is written then).
    pub fn take_strict_changed(&self) -> bool {
        self.strict_changed.swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    /// Drops the strict signals whose signatures have expired from the table kept outside
    /// the evicting cache (they no longer decide anything, and must not hold its budget).
    pub fn purge_expired_strict(&self, now: u64) {
        let mut guard = self.strict.lock().unwrap_or_else(|p| p.into_inner());
        let (strict, bytes) = &mut *guard;
        let before = strict.len();
        strict.retain(|ns, s| {
            let keep = s.strict_at(now);
            if !keep {
                *bytes -= s.charge(ns);
            }
            keep
        });
        if strict.len() != before {
            self.strict_changed.store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Marks the strict state as changed again (a save that failed is retried).
    pub fn mark_strict_changed(&self) {
        self.strict_changed.store(true, std::sync::atomic::Ordering::Release);
    }

    /// The strict signals kept outside the evicting cache (what the state file holds).
    pub fn strict_entries(&self) -> Vec<(Name, Signal)> {
        let guard = self.strict.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.iter().map(|(n, s)| (n.clone(), s.clone())).collect()
    }

    fn shard(&self, name: &Name) -> std::sync::MutexGuard<'_, crate::cache::clock::ClockCache<Name, Signal>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        self.shards[(h.finish() as usize) % SIGNAL_SHARDS].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live signal of `ns`; `None` when unknown or expired.
    pub fn get(&self, ns: &Name, now: u64) -> Option<Signal> {
        let mut s = self.shard(ns);
        match s.get(ns) {
            Some(sig) => live_at(sig, now).then(|| sig.clone()),
            // Evicted: a strict signal is still known.
            None => {
                self.strict.lock().unwrap_or_else(|p| p.into_inner()).0.get(ns).filter(|s| live_at(s, now)).cloned()
            }
        }
    }

    /// Marks a lookup as started; false when one is already under way or the signal is
    /// known (so each name is looked up once at a time, across workers: the check and the
    /// mark are one step under the name's shard lock). An expired strict signal (secure,
    /// with DANE) stays in force while it is refreshed: a refresh that is blocked or slow
    /// must not downgrade the server to cleartext. Another expired signal gives way to a
    /// pending lookup marked as a refresh (no first contact for queries to wait on).
    pub fn begin(&self, ns: &Name, now: u64) -> bool {
        // Lock order as in `get`: the shard, then the strict table.
        let mut s = self.shard(ns);
        let mut strict = self.strict.lock().unwrap_or_else(|p| p.into_inner());
        let current = s.get(ns).cloned().or_else(|| strict.0.get(ns).cloned());
        if current.as_ref().is_some_and(|c| live_at(c, now)) {
            return false;
        }
        let next = match current {
            Some(Signal::Known { records, secure, dane, cycle, refused, strict_until, .. }) if now < strict_until => {
                let until = (now + PENDING_FOR).min(strict_until);
                let kept = Signal::Known { records, secure, dane, cycle, refused, until, strict_until };
                // The same signal with another TTL: the same charge in the strict table.
                if let Some(entry) = strict.0.get_mut(ns) {
                    *entry = kept.clone();
                }
                kept
            }
            last => Signal::Pending { since: now, refresh: matches!(last, Some(Signal::Known { .. })) },
        };
        drop(strict);
        let cost = next.charge(ns);
        s.insert(ns.clone(), next, cost);
        true
    }

    /// Forgets that a lookup of `ns`'s signal is under way (it will not run): the next
    /// query that needs it asks again.
    pub fn abandon(&self, ns: &Name) {
        let mut s = self.shard(ns);
        if matches!(s.get(ns), Some(Signal::Pending { .. })) {
            s.remove(ns);
        }
    }

    /// The signal of `ns` even if expired (for the no-downgrade rule of strict signals).
    pub fn last(&self, ns: &Name) -> Option<Signal> {
        let cached = self.shard(ns).get(ns).cloned();
        cached.or_else(|| self.strict.lock().unwrap_or_else(|p| p.into_inner()).0.get(ns).cloned())
    }

    /// Every known (finished, unexpired) signal, for the API.
    pub fn entries(&self, now: u64) -> Vec<(Name, Signal)> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            s.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, v| {
                if matches!(v, Signal::Known { until, .. } if now < *until) {
                    out.push((k.clone(), v.clone()));
                }
                true
            });
        }
        out
    }

    /// Stores a finished lookup.
    pub fn put(&self, ns: &Name, signal: Signal) {
        let cost = signal.charge(ns);
        {
            let mut guard = self.strict.lock().unwrap_or_else(|p| p.into_inner());
            let (strict, bytes) = &mut *guard;
            let old = strict.get(ns).map_or(0, |s| s.charge(ns));
            if signal.is_strict() {
                if *bytes - old + cost <= STRICT_BYTES {
                    let replaced = strict.insert(ns.clone(), signal.clone());
                    *bytes = *bytes - old + cost;
                    // A refresh that only moves the TTL changes nothing worth saving.
                    let same = matches!((&replaced, &signal), (
                        Some(Signal::Known { records: r0, dane: d0, strict_until: s0, .. }),
                        Signal::Known { records: r1, dane: d1, strict_until: s1, .. },
                    ) if r0 == r1 && d0 == d1 && s0 == s1);
                    if !same {
                        self.strict_changed.store(true, std::sync::atomic::Ordering::Release);
                    }
                } else if old == 0 {
                    crate::rate_limited!(warn, nameserver = %ns, "strict signal table full: this one is kept in the evicting cache only");
                }
            } else if strict.remove(ns).is_some() {
                *bytes -= old;
                self.strict_changed.store(true, std::sync::atomic::Ordering::Release);
            }
        }
        self.shard(ns).insert(ns.clone(), signal, cost);
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    fn known(secure: bool, dane: bool, until: u64) -> Signal {
        let ns: Name = "ns1.dot.lab.".parse().unwrap();
        Signal::Known {
            records: vec![],
            secure,
            dane: if dane { vec![(Transport::Dot, ns)] } else { vec![] },
            cycle: false,
            refused: vec![],
            until,
            strict_until: if secure && dane { 10_000 } else { 0 },
        }
    }

    /// A strict state outlives its TTL only within its signatures' validity: once they
    /// have expired, the server is not strict any more, refreshed or not.
    #[test]
    fn a_strict_state_ends_when_its_signatures_expire() {
        let c = SignalCache::new(100);
        let ns: Name = "ns1.dot.lab.".parse().unwrap();
        c.put(&ns, known(true, true, 100));
        assert!(c.last(&ns).is_some_and(|s| s.strict_at(5_000)), "past the TTL, within the signatures");
        assert!(c.last(&ns).is_some_and(|s| !s.strict_at(10_000)), "past the signatures");
        assert!(c.begin(&ns, 10_000), "a refresh starts");
        assert!(
            matches!(c.get(&ns, 10_000), Some(Signal::Pending { refresh: true, .. })),
            "and the strict state is gone meanwhile"
        );
    }

    /// A strict state learned from a secure signal stays in force while it is refreshed,
    /// so a refresh that is slow or blocked cannot downgrade the server; other expired
    /// signals give way to a pending lookup, marked as a refresh.
    #[test]
    fn an_expired_strict_signal_stays_in_force_during_its_refresh() {
        let c = SignalCache::new(100);
        let (strict, hint): (Name, Name) = ("ns1.dot.lab.".parse().unwrap(), "ns1.bdot.lab.".parse().unwrap());
        c.put(&strict, known(true, true, 100));
        c.put(&hint, known(false, false, 100));
        assert!(c.begin(&strict, 200), "the refresh starts");
        assert!(matches!(c.get(&strict, 200), Some(Signal::Known { secure: true, ref dane, .. }) if !dane.is_empty()));
        assert!(!c.begin(&strict, 201), "one refresh at a time");
        assert!(c.begin(&hint, 200));
        assert!(matches!(c.get(&hint, 200), Some(Signal::Pending { refresh: true, .. })));
        let new: Name = "ns1.new.lab.".parse().unwrap();
        assert!(c.begin(&new, 200));
        assert!(matches!(c.get(&new, 200), Some(Signal::Pending { refresh: false, .. })), "a first contact");
    }

    /// Workers racing to start the lookup of one name: exactly one of them does.
    #[test]
    fn a_lookup_is_begun_once_whatever_the_race() {
        let c = std::sync::Arc::new(SignalCache::new(4096));
        let names: std::sync::Arc<Vec<Name>> =
            std::sync::Arc::new((0..2000).map(|i| format!("ns{i}.race.lab.").parse().unwrap()).collect());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (c, names) = (c.clone(), names.clone());
                std::thread::spawn(move || {
                    let mut order: Vec<usize> = (0..names.len()).collect();
                    if t % 2 == 1 {
                        order.reverse();
                    }
                    order.into_iter().filter(|&i| c.begin(&names[i], 100)).collect::<Vec<usize>>()
                })
            })
            .collect();
        let mut begun = vec![0u32; names.len()];
        for t in threads {
            for i in t.join().unwrap() {
                begun[i] += 1;
            }
        }
        assert!(begun.iter().all(|&n| n == 1), "names begun twice: {}", begun.iter().filter(|&&n| n > 1).count());
    }

    /// Filling the cache evicts signals, but never a strict one.
    #[test]
    fn a_strict_signal_survives_eviction() {
        let c = SignalCache::new(16);
        let strict: Name = "ns1.dot.lab.".parse().unwrap();
        c.put(&strict, known(true, true, 1_000));
        for i in 0..5_000 {
            c.put(&format!("ns{i}.other.").parse().unwrap(), known(false, false, 1_000));
        }
        assert!(c.get(&strict, 10).is_some_and(|s| s.is_strict()));
        // A secure answer saying otherwise does replace it.
        c.put(&strict, known(true, false, 1_000));
        assert!(!c.get(&strict, 10).unwrap().is_strict());
    }

    /// The largest signal a hostile zone can publish: every record at the cap, every ALPN
    /// list and path at its longest.
    fn hostile(until: u64) -> Signal {
        let alpn: Vec<String> = (0..MAX_ALPN).map(|i| format!("{i:0>250}")).collect();
        let rec = SvcbRecord {
            priority: 1,
            target: format!("{}evil.", "a.".repeat(120)).parse().unwrap(),
            alpn,
            port: None,
            dohpath: Some(format!("/{}{{?dns}}", "p".repeat(MAX_DOHPATH - 8))),
        };
        Signal::Known {
            records: vec![rec; MAX_SVCB_RECORDS],
            secure: true,
            dane: vec![(Transport::Dot, "ns.evil.".parse().unwrap())],
            cycle: false,
            refused: vec![],
            until,
            strict_until: until,
        }
    }

    /// A flood of the largest strict signals fills the strict table to its byte budget and
    /// no further, and never pushes out a strict server already in force.
    #[test]
    fn a_flood_of_hostile_strict_signals_is_bounded_and_evicts_no_strict_server() {
        let c = SignalCache::new(1_000);
        let strict: Name = "ns1.dot.lab.".parse().unwrap();
        c.put(&strict, known(true, true, 1_000_000));
        let one = hostile(1_000_000).charge(&"ns0.evil.".parse().unwrap());
        assert!(one > 8 * 16 * 250, "the hostile shape is charged for what it holds: {one}");
        for i in 0..(2 * STRICT_BYTES / one) {
            c.put(&format!("ns{i}.evil.").parse().unwrap(), hostile(1_000_000));
        }
        let bytes = c.strict.lock().unwrap().1;
        assert!(bytes <= STRICT_BYTES, "{bytes} bytes of strict signals");
        assert!(c.get(&strict, 10).is_some_and(|s| s.is_strict()), "the strict server stays strict");
    }

    /// Parsing keeps at most a few records of one RRset.
    #[test]
    fn an_rrset_of_many_records_keeps_the_first_few() {
        let rdata = [0, 1, 0, 0, 1, 0, 4, 3, b'd', b'o', b't'];
        let (ok, _) = parse_svcb_set(std::iter::repeat_n(&rdata[..], 5_000));
        assert_eq!(ok.len(), MAX_SVCB_RECORDS);
        assert!(ok.capacity() <= MAX_SVCB_RECORDS, "no spare capacity held: {}", ok.capacity());
    }

    /// Waits between signal lookups: a wait that would close a cycle of any length is
    /// refused, the others are recorded while their guard lives, chains of waits are
    /// bounded, and a guard removes only its own edge.
    #[test]
    fn a_wait_that_closes_a_cycle_of_signal_lookups_is_refused() {
        let c = SignalCache::new(16);
        let n = |s: &str| Name::from_ascii(s).unwrap();
        let (a, b, z) = (n("ns1.a.lab."), n("ns1.b.lab."), n("ns1.z.lab."));
        let cycle = Err(WaitRefused::Cycle);
        assert_eq!(c.start_wait(Some(&a), &a).map(|_| ()), cycle, "a lookup needing itself");
        // Two zones: A waits for B; B would wait for A.
        let ab = c.start_wait(Some(&a), &b).unwrap();
        assert_eq!(c.start_wait(Some(&b), &a).map(|_| ()), cycle);
        // Three: A -> B -> Z, Z would wait for A.
        let bz = c.start_wait(Some(&b), &z).unwrap();
        assert_eq!(c.start_wait(Some(&z), &a).map(|_| ()), cycle);
        // A client query waits for anyone, and is never part of a cycle.
        drop(c.start_wait(None, &a).unwrap());
        // Once B's wait is over, Z may wait for A (A waits for B, which waits for nothing).
        drop(bz);
        let za = c.start_wait(Some(&z), &a).unwrap();
        drop((ab, za));
        assert!(c.waits.lock().unwrap().edges.is_empty(), "every edge goes with its guard");
        assert!(c.waits.lock().unwrap().depth.is_empty());
        // A second lookup of the same name: the first one's guard leaves its edge alone.
        let first = c.start_wait(Some(&a), &b).unwrap();
        let second = c.start_wait(Some(&a), &z).unwrap();
        drop(first);
        assert_eq!(c.start_wait(Some(&z), &a).map(|_| ()), cycle, "A still waits for Z");
        drop(second);
        // A chain of ever new nameservers: each lookup waits for the next, MAX_WAIT_DEPTH
        // deep at most.
        let names: Vec<Name> = (0..10).map(|i| n(&format!("ns{i}.chain.lab."))).collect();
        let mut guards = Vec::new();
        let mut refused = None;
        for (i, w) in names.windows(2).enumerate() {
            match c.start_wait(Some(&w[0]), &w[1]) {
                Ok(g) => guards.push(g),
                Err(e) => {
                    refused = Some((i, e));
                    break;
                }
            }
        }
        assert_eq!(refused, Some((usize::from(MAX_WAIT_DEPTH), WaitRefused::TooDeep)));
        drop(guards);
        // Two waits on one lookup: the end of one leaves the other's depth in place.
        let (x, y, w) = (n("ns1.x.lab."), n("ns1.y.lab."), n("ns1.w.lab."));
        let deep: Vec<Name> = (0..usize::from(MAX_WAIT_DEPTH)).map(|i| n(&format!("d{i}.lab."))).collect();
        let mut chain: Vec<_> = deep.windows(2).map(|p| c.start_wait(Some(&p[0]), &p[1]).unwrap()).collect();
        chain.push(c.start_wait(Some(deep.last().unwrap()), &x).unwrap());
        let sibling = c.start_wait(Some(&y), &x).unwrap();
        drop(sibling);
        assert_eq!(c.start_wait(Some(&x), &w).map(|_| ()), Err(WaitRefused::TooDeep), "x is still deep");
        drop(chain);
    }
}
