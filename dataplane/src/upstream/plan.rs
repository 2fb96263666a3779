//! The transport plan for one (zone, nameserver name, nameserver address): a pure function
//! of what the caller looked up (the matching operator override, the nameserver's signal,
//! the probe table's decisions) and the switches. It changes nothing: a signal it would
//! need is returned as a wish ([`Planned::want_signal`]) for the caller to look up.
//!
//! Precedence (requirements.md): the operator's override, else the zone's DELEG record
//! (experimental, `transport.deleg`), else the nameserver's own
//! signal (secure with TLSA: strict DANE; otherwise an opportunistic hint), else the RFC
//! 9539 probe table.

use adox_api::policy::{Auth, Mode, Policy, Transport};
use hickory_proto::rr::Name;

use super::deleg::DelegInfo;
use super::probe::ProbeDecision;
use super::signal::Signal;

/// Encrypted transports RFC 9539 probing tries, in order of preference.
pub const PROBED: [Transport; 2] = [Transport::Doq, Transport::Dot];

/// DoT port (RFC 7858 section 3.1); DoQ uses the same number over UDP (RFC 9250).
pub const DOT_PORT: u16 = 853;

/// DoH port (HTTPS).
pub const DOH_PORT: u16 = 443;

/// Where DoH queries of a plan go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DohTarget {
    /// The port (443 unless the signal's `port` key moves it).
    pub port: u16,
    /// The URI template (`dohpath`, or the policy's `doh_path`).
    pub path: std::sync::Arc<str>,
}

/// Where a transport decision came from (shown by explain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanSource {
    /// An operator override, by id.
    Override(String),
    /// The RFC 9539 probe table's decision.
    Probe(ProbeDecision),
    /// The nameserver's own `_dns` SVCB record, not DNSSEC-secure: an opportunistic hint.
    InsecureSignal,
    /// A DNSSEC-secure `_dns` SVCB record: strict with DANE where a secure TLSA RRset
    /// exists for the transport, opportunistic otherwise.
    SecureSignal,
    /// The parent's DELEG record for the zone (experimental): secure (validated against
    /// the parent's keys: strict, PKIX) or not (an opportunistic hint).
    Deleg {
        /// DNSSEC-secure.
        secure: bool,
    },
    /// Nothing matched: the configured default.
    Default,
    /// A server nothing is known of, which a signal lookup needs (directly or through a
    /// cycle of signal lookups), or whose signal did not come in time for a query that
    /// waited: encrypted first, unauthenticated, rather than cleartext (see
    /// [`encrypted_first`]).
    EncryptedFirst,
}

impl PlanSource {
    /// As explain shows it: `override:ID`, `deleg:secure`, `deleg:insecure`, `signal:insecure`, `probe:use`, `probe:probe`,
    /// `probe:skip`, `default`, `encrypted-first`.
    pub fn label(&self) -> String {
        match self {
            Self::Override(id) => format!("override:{id}"),
            Self::Probe(ProbeDecision::Use) => "probe:use".into(),
            Self::Probe(ProbeDecision::Probe) => "probe:probe".into(),
            Self::Probe(ProbeDecision::Skip) => "probe:skip".into(),
            Self::InsecureSignal => "signal:insecure".into(),
            Self::SecureSignal => "signal:secure".into(),
            Self::Deleg { secure: true } => "deleg:secure".into(),
            Self::Deleg { secure: false } => "deleg:insecure".into(),
            Self::EncryptedFirst => "encrypted-first".into(),
            Self::Default => "default".into(),
        }
    }
}

/// The policy engine's decision for one (zone, nameserver name, nameserver address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportPlan {
    /// Strict, opportunistic or cleartext.
    pub mode: Mode,
    /// Transports in order.
    pub transports: Vec<Transport>,
    /// Authentication of encrypted transports.
    pub auth: Auth,
    /// The name to authenticate (and send as SNI) when it is not the nameserver name: the
    /// TargetName of the signal, which is the TLSA base name for DANE.
    pub tls_name: Option<Name>,
    /// The port of DoT and DoQ (853 unless the signal's `port` key moves it).
    pub port: u16,
    /// Where DoH goes, when the plan lists it.
    pub doh: Option<DohTarget>,
    /// Why.
    pub source: PlanSource,
    /// What the operator should know about the deciding policy (see `Policy::warning`).
    pub warning: Option<&'static str>,
}

impl TransportPlan {
    /// The port `transport` uses under this plan.
    pub fn port_of(&self, transport: Transport) -> u16 {
        match transport {
            Transport::Doh => self.doh.as_ref().map_or(DOH_PORT, |d| d.port),
            _ => self.port,
        }
    }

    /// Whether `transport` goes to its standard port (whose RFC 9539 state is shared).
    pub fn standard_port(&self, transport: Transport) -> bool {
        self.port_of(transport) == if transport == Transport::Doh { DOH_PORT } else { DOT_PORT }
    }

    /// Do53 only.
    fn cleartext(source: PlanSource) -> Self {
        Self {
            mode: Mode::Cleartext,
            transports: vec![Transport::Do53],
            auth: Auth::None,
            tls_name: None,
            port: DOT_PORT,
            doh: None,
            source,
            warning: None,
        }
    }
}

/// Which sources of decision are switched on (`transport.signals`, `transport.probing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switches {
    /// Nameservers' `_dns` SVCB signals (RFC 9461) are looked up and followed.
    pub signals: bool,
    /// Servers no policy covers are probed (RFC 9539).
    pub probing: bool,
}

/// What [`plan`] is made of, looked up by the caller for one target.
#[derive(Debug, Clone, Copy)]
pub struct PlanInputs<'a> {
    /// The operator override matching (zone, nameserver, address), if any.
    pub policy: Option<&'a Policy>,
    /// The nameserver's live signal: `None` when unknown (or expired).
    pub signal: Option<&'a Signal>,
    /// The probe table's decision for each of [`PROBED`], in that order.
    pub probes: [ProbeDecision; 2],
    /// The switches.
    pub switches: Switches,
    /// What the zone's DELEG RRset says of this nameserver (only with `transport.deleg`).
    pub deleg: Option<DelegFor<'a>>,
}

/// What a zone's DELEG RRset says of one of the servers a query may go to.
#[derive(Debug, Clone, Copy)]
pub enum DelegFor<'a> {
    /// The DelegInfo that speaks for it; whether the RRset is DNSSEC-secure; the name to
    /// authenticate (`None`: the nameserver's own, which the DelegInfo names).
    Server {
        /// The DelegInfo.
        info: &'a DelegInfo,
        /// DNSSEC-secure.
        secure: bool,
        /// A DelegInfo that gives only the server's address authenticates its own first
        /// server name, not whatever name an NS RRset put at that address.
        tls_name: Option<&'a Name>,
    },
    /// A secure RRset that asks for encryption and speaks for other servers only: this one
    /// is not the zone's, and gets nothing (not cleartext).
    Uncovered,
}

/// A plan, and whether the nameserver's signal should be looked up (it is unknown and a
/// decision could use it). Whether the query that planned waits for that lookup is the
/// resolver's choice (`transport.signal_wait`); otherwise the signal applies from the next
/// query (RFC 9461).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The plan.
    pub plan: TransportPlan,
    /// Look the signal up.
    pub want_signal: bool,
}

/// The plan for one target.
pub fn plan(inputs: PlanInputs<'_>) -> Planned {
    let want_signal = inputs.switches.signals && inputs.signal.is_none();
    if let Some(p) = inputs.policy {
        // DANE under an override needs the TLSA records, which come with the signal; any
        // other override does not need the signal.
        let want_signal = want_signal && p.auth == Auth::Dane;
        let plan = TransportPlan {
            mode: p.mode,
            transports: p.transports.clone(),
            auth: p.auth,
            tls_name: None,
            port: DOT_PORT,
            doh: p.transports.contains(&Transport::Doh).then(|| DohTarget {
                port: DOH_PORT,
                path: p.doh_path.as_deref().unwrap_or(adox_api::policy::DEFAULT_DOH_PATH).into(),
            }),
            source: PlanSource::Override(p.id.clone()),
            warning: p.warning(),
        };
        return Planned { plan, want_signal };
    }
    // The zone's owner, through its parent's secure DELEG record, decides alone where it
    // asks for encryption: no signal is needed. An insecure one is a hint, after the
    // nameserver's own signal.
    let deleg = inputs.deleg.and_then(deleg_plan);
    if let Some(plan) = deleg.clone().filter(|p| p.mode == Mode::Strict) {
        return Planned { plan, want_signal: false };
    }
    if inputs.switches.signals
        && let Some(mut plan) = inputs.signal.and_then(signal_plan)
    {
        if matches!(inputs.signal, Some(Signal::Known { cycle: true, .. })) {
            plan.warning = Some(
                "the signal's lookup depended on this nameserver (a cycle, R5): it was fetched before \
                 the server's transport was known",
            );
        }
        return Planned { plan, want_signal };
    }
    if let Some(plan) = deleg {
        return Planned { plan, want_signal };
    }
    Planned { plan: probe_plan(inputs.probes, inputs.switches.probing), want_signal }
}

/// The plan a known signal asks for, if it offers a transport adox speaks.
fn signal_plan(signal: &Signal) -> Option<TransportPlan> {
    let Signal::Known { records, secure, dane, .. } = signal else { return None };
    // SvcPriority orders the records; within one, adox prefers DoQ, then DoT, then DoH.
    // DoT and DoQ use the port of the first record that offers one of them (its `port`
    // key, else 853; records on other ports are left: one such port per plan); DoH goes
    // where the first record offering it says (port, else 443, and `dohpath`).
    let offered: Vec<(Transport, u16, usize)> = records
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.transports().into_iter().map(move |t| (t, r.port_for(t), i)))
        .collect();
    let port = offered.iter().find(|(t, ..)| *t != Transport::Doh).map_or(DOT_PORT, |(_, p, _)| *p);
    let doh_record = offered.iter().find(|(t, ..)| *t == Transport::Doh).map(|(.., i)| *i);
    let doh = doh_record.and_then(|i| {
        let r = &records[i];
        Some(DohTarget { port: r.port_for(Transport::Doh), path: r.dohpath.as_deref()?.into() })
    });
    let mut transports: Vec<Transport> = Vec::new();
    for (t, p, i) in &offered {
        let usable = if *t == Transport::Doh { Some(*i) == doh_record } else { *p == port };
        if usable && !transports.contains(t) {
            transports.push(*t);
        }
    }
    if *secure && !dane.is_empty() {
        // Secure SVCB and secure TLSA: strict with DANE over the transports that have TLSA
        // records, never cleartext (SVCB-DANE; R5).
        let strict: Vec<Transport> = transports.iter().copied().filter(|t| dane.iter().any(|(d, _)| d == t)).collect();
        if let Some((_, name)) = dane.iter().find(|(t, _)| strict.first() == Some(t)) {
            return Some(TransportPlan {
                mode: Mode::Strict,
                transports: strict,
                auth: Auth::Dane,
                tls_name: Some(name.clone()),
                port,
                doh,
                source: PlanSource::SecureSignal,
                warning: None,
            });
        }
    }
    // DoH from a signal that DANE does not authenticate goes to port 443 only: anyone's zone
    // can name any address, and an unauthenticated HTTP request to a port of its choice is
    // more than a DNS query (a secure signal with TLSA may name any port).
    if doh.as_ref().is_some_and(|d| d.port != DOH_PORT) {
        transports.retain(|t| *t != Transport::Doh);
    }
    if transports.is_empty() {
        return None;
    }
    transports.push(Transport::Do53);
    // Without DANE: an opportunistic hint, no authentication.
    Some(TransportPlan {
        mode: Mode::Opportunistic,
        transports,
        auth: Auth::None,
        tls_name: None,
        port,
        doh,
        source: if *secure { PlanSource::SecureSignal } else { PlanSource::InsecureSignal },
        warning: None,
    })
}

/// The plan a zone's DELEG RRset asks for. Secure and asking for encryption: strict over
/// the transports it lists that adox speaks (none: nothing is sent, never cleartext), PKIX
/// authentication of the server's name (the DELEG record is the parent's signed word, as a
/// DS is; DANE would need the server's own TLSA records); a server the RRset does not
/// speak for, when it asks for encryption for others: nothing. Insecure: an opportunistic
/// hint with Do53 after its transports. `None`: nothing said of transport.
fn deleg_plan(deleg: DelegFor<'_>) -> Option<TransportPlan> {
    let strict = |transports: Vec<Transport>, tls_name: Option<Name>, doh: Option<DohTarget>| TransportPlan {
        mode: Mode::Strict,
        transports,
        auth: Auth::Pkix,
        tls_name,
        port: DOT_PORT,
        doh,
        source: PlanSource::Deleg { secure: true },
        warning: None,
    };
    let DelegFor::Server { info, secure, tls_name } = deleg else {
        return Some(strict(Vec::new(), None, None));
    };
    let doh = info.dohpath.as_deref().map(|p| DohTarget { port: DOH_PORT, path: p.into() });
    if secure && info.asks_encryption {
        return Some(strict(info.transports.clone(), tls_name.cloned(), doh));
    }
    if secure || info.transports.is_empty() {
        return None;
    }
    let mut transports = info.transports.clone();
    transports.push(Transport::Do53);
    Some(TransportPlan {
        mode: Mode::Opportunistic,
        transports,
        auth: Auth::None,
        tls_name: None,
        port: DOT_PORT,
        doh,
        source: PlanSource::Deleg { secure: false },
        warning: None,
    })
}

/// The RFC 9539 plan from the probe table's decisions.
fn probe_plan(decisions: [ProbeDecision; 2], probing: bool) -> TransportPlan {
    if !probing {
        return TransportPlan::cleartext(PlanSource::Default);
    }
    let usable: Vec<Transport> =
        PROBED.iter().zip(decisions).filter(|(_, d)| *d == ProbeDecision::Use).map(|(t, _)| *t).collect();
    if !usable.is_empty() {
        // Known to work: encrypted only (DoQ before DoT); Do53 comes back only after a
        // failure.
        let mut transports = usable;
        transports.push(Transport::Do53);
        return TransportPlan {
            mode: Mode::Opportunistic,
            transports,
            auth: Auth::None,
            tls_name: None,
            port: DOT_PORT,
            doh: None,
            source: PlanSource::Probe(ProbeDecision::Use),
            warning: None,
        };
    }
    if decisions.contains(&ProbeDecision::Probe) {
        return TransportPlan::cleartext(PlanSource::Probe(ProbeDecision::Probe));
    }
    TransportPlan::cleartext(PlanSource::Probe(ProbeDecision::Skip))
}

/// For a signal lookup that must ask the nameserver it decides for before anything is
/// known of it (the usual case: a nameserver's own zone holds its `_dns` record), and for
/// a query whose wait for a signal ran out: in place of a cleartext plan made while the
/// server is unknown to the probe table, DoT first, unauthenticated, then Do53. A strict server that speaks DoT then never sees
/// even that first query in cleartext; one that does not costs a refused connection (or
/// one E-timeout, then its damping window) of a lookup nobody waits for past
/// `signal_wait_ms`. Any other plan stays as it is.
pub fn encrypted_first(plan: TransportPlan, dot: ProbeDecision) -> TransportPlan {
    if plan.source != PlanSource::Probe(ProbeDecision::Probe) || dot != ProbeDecision::Probe {
        return plan;
    }
    TransportPlan {
        mode: Mode::Opportunistic,
        transports: vec![Transport::Dot, Transport::Do53],
        source: PlanSource::EncryptedFirst,
        ..plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::signal::parse_svcb;

    const ON: Switches = Switches { signals: true, probing: true };
    const NEW: [ProbeDecision; 2] = [ProbeDecision::Probe, ProbeDecision::Probe];

    fn n(s: &str) -> Name {
        s.parse().unwrap()
    }

    /// An SVCB record `1 . alpn=dot,doq` (port 853).
    fn dot_doq_record() -> crate::upstream::signal::SvcbRecord {
        // priority 1, target root, key 1 (alpn) = "dot","doq"
        let rdata = [0, 1, 0, 0, 1, 0, 8, 3, b'd', b'o', b't', 3, b'd', b'o', b'q'];
        parse_svcb(&rdata).unwrap()
    }

    fn known(secure: bool, dane: Vec<(Transport, Name)>) -> Signal {
        Signal::Known {
            records: vec![dot_doq_record()],
            secure,
            dane,
            cycle: false,
            refused: Vec::new(),
            until: 100,
            strict_until: 100,
        }
    }

    fn policy(mode: Mode, auth: Auth) -> Policy {
        Policy {
            id: "p-1".into(),
            zone: Some("example.".into()),
            nameserver: None,
            address: None,
            mode,
            transports: vec![Transport::Dot],
            auth,
            doh_path: None,
            comment: None,
            read_only: false,
            revision: 1,
        }
    }

    #[test]
    fn an_override_wins_over_signal_and_probes() {
        let sig = known(true, vec![(Transport::Doq, n("ns.example."))]);
        let p = policy(Mode::Opportunistic, Auth::None);
        let planned = plan(PlanInputs { policy: Some(&p), signal: Some(&sig), probes: NEW, switches: ON, deleg: None });
        assert_eq!(planned.plan.source, PlanSource::Override("p-1".into()));
        assert_eq!(
            (planned.plan.mode, planned.plan.transports.as_slice()),
            (Mode::Opportunistic, &[Transport::Dot][..])
        );
        assert!(!planned.want_signal);
    }

    /// A strict PKIX override without a nameserver pin is flagged in the plan (explain
    /// shows it) and when it is loaded; a pinned one is not.
    #[test]
    fn a_zone_only_strict_pkix_override_carries_a_warning() {
        let mut p = policy(Mode::Strict, Auth::Pkix);
        let planned = plan(PlanInputs { policy: Some(&p), signal: None, probes: NEW, switches: ON, deleg: None });
        assert!(planned.plan.warning.is_some_and(|w| w.contains("nameserver")));
        p.nameserver = Some("ns1.example.".into());
        assert_eq!(
            plan(PlanInputs { policy: Some(&p), signal: None, probes: NEW, switches: ON, deleg: None }).plan.warning,
            None
        );
    }

    #[test]
    fn a_dane_override_asks_for_the_signal_it_needs() {
        let p = policy(Mode::Strict, Auth::Dane);
        let planned = plan(PlanInputs { policy: Some(&p), signal: None, probes: NEW, switches: ON, deleg: None });
        assert!(planned.want_signal);
        let off = Switches { signals: false, probing: true };
        assert!(
            !plan(PlanInputs { policy: Some(&p), signal: None, probes: NEW, switches: off, deleg: None }).want_signal
        );
    }

    #[test]
    fn a_secure_signal_with_tlsa_is_strict_dane_over_the_transports_with_records() {
        let sig = known(true, vec![(Transport::Dot, n("ns.example."))]);
        let p = plan(PlanInputs { policy: None, signal: Some(&sig), probes: NEW, switches: ON, deleg: None }).plan;
        assert_eq!((p.mode, p.auth, p.source.clone()), (Mode::Strict, Auth::Dane, PlanSource::SecureSignal));
        assert_eq!(p.transports, vec![Transport::Dot]);
        assert_eq!(p.tls_name, Some(n("ns.example.")));
    }

    #[test]
    fn an_insecure_signal_is_an_opportunistic_hint_that_keeps_do53() {
        let sig = known(false, vec![(Transport::Dot, n("ns.example."))]);
        let p = plan(PlanInputs { policy: None, signal: Some(&sig), probes: NEW, switches: ON, deleg: None }).plan;
        assert_eq!((p.mode, p.auth, p.source), (Mode::Opportunistic, Auth::None, PlanSource::InsecureSignal));
        assert_eq!(p.transports, vec![Transport::Doq, Transport::Dot, Transport::Do53]);
    }

    /// A record offering DoH (alpn h2 with a dohpath) puts DoH in the plan with its own
    /// port and template, beside DoT on 853; h3 alone is not DoH adox speaks.
    #[test]
    fn a_doh_signal_plans_doh_with_its_port_and_template() {
        // 1 . alpn=h2,dot dohpath=/q{?dns}
        let mut rdata = vec![0, 1, 0, 0, 1, 0, 7, 2, b'h', b'2', 3, b'd', b'o', b't', 0, 7, 0, 8];
        rdata.extend_from_slice(b"/q{?dns}");
        let rec = parse_svcb(&rdata).unwrap();
        let sig = Signal::Known {
            records: vec![rec.clone()],
            secure: true,
            dane: vec![(Transport::Doh, n("ns.example."))],
            cycle: false,
            refused: Vec::new(),
            until: 100,
            strict_until: 100,
        };
        let p = plan(PlanInputs { policy: None, signal: Some(&sig), probes: NEW, switches: ON, deleg: None }).plan;
        assert_eq!((p.mode, p.auth, p.transports.as_slice()), (Mode::Strict, Auth::Dane, &[Transport::Doh][..]));
        assert_eq!(p.doh, Some(DohTarget { port: 443, path: "/q{?dns}".into() }));
        assert_eq!((p.port_of(Transport::Doh), p.port_of(Transport::Dot)), (443, 853));
        assert!(p.standard_port(Transport::Doh));
        let insecure = Signal::Known {
            records: vec![rec],
            secure: false,
            dane: Vec::new(),
            cycle: false,
            refused: Vec::new(),
            until: 100,
            strict_until: 100,
        };
        let p = plan(PlanInputs { policy: None, signal: Some(&insecure), probes: NEW, switches: ON, deleg: None }).plan;
        assert_eq!(p.transports, vec![Transport::Dot, Transport::Doh, Transport::Do53]);
        // h3 only: nothing adox speaks.
        let mut h3 = vec![0, 1, 0, 0, 1, 0, 3, 2, b'h', b'3', 0, 7, 0, 8];
        h3.extend_from_slice(b"/q{?dns}");
        let only_h3 = Signal::Known {
            records: vec![parse_svcb(&h3).unwrap()],
            secure: false,
            dane: Vec::new(),
            cycle: false,
            refused: Vec::new(),
            until: 100,
            strict_until: 100,
        };
        let p = plan(PlanInputs { policy: None, signal: Some(&only_h3), probes: NEW, switches: ON, deleg: None }).plan;
        assert_eq!(p.source, PlanSource::Probe(ProbeDecision::Probe));
    }

    /// An override listing DoH carries its template, or the default one.
    #[test]
    fn a_doh_override_carries_its_template() {
        let mut p = policy(Mode::Strict, Auth::Pkix);
        p.transports = vec![Transport::Doh];
        let planned = plan(PlanInputs { policy: Some(&p), signal: None, probes: NEW, switches: ON, deleg: None }).plan;
        assert_eq!(planned.doh, Some(DohTarget { port: 443, path: adox_api::policy::DEFAULT_DOH_PATH.into() }));
        p.doh_path = Some("/x{?dns}".into());
        let planned = plan(PlanInputs { policy: Some(&p), signal: None, probes: NEW, switches: ON, deleg: None }).plan;
        assert_eq!(planned.doh.map(|d| d.path), Some("/x{?dns}".into()));
    }

    #[test]
    fn an_unknown_signal_is_wanted_and_probing_decides_meanwhile() {
        let planned = plan(PlanInputs { policy: None, signal: None, probes: NEW, switches: ON, deleg: None });
        assert!(planned.want_signal);
        assert_eq!(planned.plan.source, PlanSource::Probe(ProbeDecision::Probe));
        assert_eq!(planned.plan.mode, Mode::Cleartext);
        // A pending lookup is not wanted again.
        let pending = Signal::Pending { since: 5, refresh: false };
        assert!(
            !plan(PlanInputs { policy: None, signal: Some(&pending), probes: NEW, switches: ON, deleg: None })
                .want_signal
        );
    }

    #[test]
    fn rfc9539_decisions_make_the_plan() {
        let use_dot = [ProbeDecision::Skip, ProbeDecision::Use];
        let p = plan(PlanInputs { policy: None, signal: None, probes: use_dot, switches: ON, deleg: None }).plan;
        assert_eq!((p.mode, p.transports.as_slice()), (Mode::Opportunistic, &[Transport::Dot, Transport::Do53][..]));
        let damped = [ProbeDecision::Skip, ProbeDecision::Skip];
        let p = plan(PlanInputs { policy: None, signal: None, probes: damped, switches: ON, deleg: None }).plan;
        assert_eq!((p.mode, p.source), (Mode::Cleartext, PlanSource::Probe(ProbeDecision::Skip)));
        let off = Switches { signals: false, probing: false };
        let p = plan(PlanInputs { policy: None, signal: None, probes: use_dot, switches: off, deleg: None }).plan;
        assert_eq!((p.mode, p.source), (Mode::Cleartext, PlanSource::Default));
    }

    /// A signal lookup through the server it decides for goes encrypted first only where
    /// nothing is known: a known probe result, an operator's or a signal's plan, and
    /// probing switched off all stay as they are.
    #[test]
    fn encrypted_first_only_replaces_an_unknown_cleartext_plan() {
        let unknown = plan(PlanInputs { policy: None, signal: None, probes: NEW, switches: ON, deleg: None }).plan;
        let first = encrypted_first(unknown.clone(), ProbeDecision::Probe);
        assert_eq!(
            (first.mode, first.transports.as_slice()),
            (Mode::Opportunistic, &[Transport::Dot, Transport::Do53][..])
        );
        assert_eq!((first.auth, first.source.label().as_str()), (Auth::None, "encrypted-first"));
        assert_eq!(encrypted_first(unknown, ProbeDecision::Skip).mode, Mode::Cleartext, "DoT failed lately");
        let off = Switches { signals: true, probing: false };
        let default = plan(PlanInputs { policy: None, signal: None, probes: NEW, switches: off, deleg: None }).plan;
        assert_eq!(encrypted_first(default.clone(), ProbeDecision::Probe), default, "probing is off");
        let p = policy(Mode::Cleartext, Auth::None);
        let op = plan(PlanInputs { policy: Some(&p), signal: None, probes: NEW, switches: ON, deleg: None }).plan;
        assert_eq!(encrypted_first(op.clone(), ProbeDecision::Probe), op, "the operator's cleartext");
    }

    /// The zone's secure DELEG record decides after the operator and before the
    /// nameserver's signal; an insecure one after the signal; one that names no transport
    /// leaves the decision to the others; one that asks for encryption fails closed.
    #[test]
    fn a_deleg_record_decides_after_the_override_and_before_the_signal() {
        use crate::upstream::deleg::parse_deleg;
        // server-name=ns.lab. key65280 (alpn)=dot
        let dot = parse_deleg(b"\x00\x03\x00\x08\x02ns\x03lab\x00\xff\x00\x00\x04\x03dot").unwrap();
        let plain = parse_deleg(b"\x00\x03\x00\x08\x02ns\x03lab\x00").unwrap();
        // alpn=h3 only: asks for encryption adox cannot give.
        let h3 = parse_deleg(b"\x00\x03\x00\x08\x02ns\x03lab\x00\xff\x00\x00\x03\x02h3").unwrap();
        let server = |info, secure| Some(DelegFor::Server { info, secure, tls_name: None });
        let with = |deleg, signal, policy| plan(PlanInputs { policy, signal, probes: NEW, switches: ON, deleg });
        let strict = with(server(&dot, true), None, None);
        assert!(!strict.want_signal, "the owner's DELEG decides alone");
        let p = strict.plan;
        assert_eq!((p.mode, p.transports.as_slice(), p.auth), (Mode::Strict, &[Transport::Dot][..], Auth::Pkix));
        assert_eq!(p.source.label(), "deleg:secure");
        let p = with(server(&dot, false), None, None).plan;
        assert_eq!((p.mode, p.transports.as_slice()), (Mode::Opportunistic, &[Transport::Dot, Transport::Do53][..]));
        assert_eq!((p.auth, p.source.label().as_str()), (Auth::None, "deleg:insecure"));
        let sig = known(true, vec![(Transport::Dot, n("ns.lab."))]);
        assert_eq!(with(server(&dot, true), Some(&sig), None).plan.auth, Auth::Pkix, "secure DELEG before the signal");
        assert_eq!(with(server(&dot, false), Some(&sig), None).plan.source, PlanSource::SecureSignal, "insecure after");
        assert_eq!(with(server(&plain, true), Some(&sig), None).plan.source, PlanSource::SecureSignal);
        let op = policy(Mode::Cleartext, Auth::None);
        assert_eq!(with(server(&dot, true), None, Some(&op)).plan.mode, Mode::Cleartext, "the operator first");
        // Failing closed: encryption asked in a form adox cannot speak, or by a rule that
        // speaks for other servers only.
        for closed in [with(server(&h3, true), None, None).plan, with(Some(DelegFor::Uncovered), None, None).plan] {
            assert_eq!((closed.mode, closed.transports.len()), (Mode::Strict, 0), "{closed:?}");
        }
    }
}
