//! The one place where data-plane state becomes REST bodies: what the handlers in
//! [`crate::routes`] answer with is built here out of the [`PlaneHandle`]'s counters,
//! caches and server, probe, signal and validator tables. The handlers parse, check and
//! answer; they do not read data-plane types themselves.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use adox_api::rest::{
    Attempt, DnssecStatus, Explain, ExplainStep, NegativeAnchors, PlanView, ServerList, ServerState, SignalRecord,
    SignalState, Stats, TransportState, TransportStatus, TrustAnchorKey, WorkerLoad,
};
use adox_dataplane::PlaneHandle;
use adox_dataplane::dnssec::Security;
use adox_dataplane::resolver::trace::TraceStep;
use adox_dataplane::respond::Explained;
use adox_dataplane::upstream::probe::ProbeStatus;

/// `GET /v1/stats` (and the Prometheus exposition): the summed counters, per-worker load
/// and cache sizes; `started` is when the API started (for the uptime).
pub(crate) fn stats_of(plane: &PlaneHandle, started: Instant) -> Stats {
    let workers = plane
        .worker_stats()
        .iter()
        .enumerate()
        .map(|(worker, w)| WorkerLoad {
            worker,
            queries: w.queries_udp.get() + w.queries_tcp.get(),
            cache_hits: w.cache_hits.get(),
            cache_misses: w.cache_misses.get(),
        })
        .collect();
    let managed = plane.managed_anchors().unwrap_or_default();
    Stats {
        trust_anchor_keys: managed
            .points
            .iter()
            .flat_map(|p| {
                let zone = p.zone.to_ascii();
                p.keys.iter().map(move |(key_tag, state)| TrustAnchorKey {
                    zone: zone.clone(),
                    key_tag: *key_tag,
                    state: state.as_str().to_string(),
                })
            })
            .collect(),
        trust_anchor_refreshes_ok: managed.fetches_ok,
        trust_anchor_refreshes_failed: managed.fetches_failed,
        policy_zones: policy_zones(plane),
        rpz_notifies_accepted: plane.rpz().map_or(0, |r| r.notifies[0].load(Relaxed)),
        rpz_notifies_refused: plane.rpz().map_or(0, |r| r.notifies[1].load(Relaxed)),
        uptime_s: started.elapsed().as_secs(),
        totals: plane.stats(),
        record_cache_entries: plane.record_cache_usage().0 as u64,
        record_cache_bytes: plane.record_cache_usage().1 as u64,
        policies: plane.policy_store().load().len() as u64,
        workers,
    }
}

/// Each policy zone's state and counters.
fn policy_zones(plane: &PlaneHandle) -> Vec<adox_api::rest::PolicyZoneStats> {
    use adox_dataplane::rpz::{HIT_IP, HIT_NSDNAME, HIT_NSIP, HIT_QNAME, XFR_CURRENT, XFR_FAILED, XFR_OK};
    let Some(rpz) = plane.rpz() else { return Vec::new() };
    let content = rpz.content();
    rpz.zones
        .iter()
        .zip(content.iter())
        .map(|(z, c)| adox_api::rest::PolicyZoneStats {
            zone: z.name.to_ascii(),
            serial: c.serial,
            rules: c.table.len() as u64,
            ede: z.ede.code(),
            hits_qname: z.hits[HIT_QNAME].load(Relaxed),
            hits_ip: z.hits[HIT_IP].load(Relaxed),
            hits_nsdname: z.hits[HIT_NSDNAME].load(Relaxed),
            hits_nsip: z.hits[HIT_NSIP].load(Relaxed),
            transfers_ok: z.transfers[XFR_OK].load(Relaxed),
            transfers_failed: z.transfers[XFR_FAILED].load(Relaxed),
            transfers_current: z.transfers[XFR_CURRENT].load(Relaxed),
        })
        .collect()
}

/// `GET /v1/servers` and `GET /v1/servers/{ip}`: what is known of each authoritative
/// server (RTT, failures, transports) and, for the whole list, the nameservers' transport
/// signals; `only` looks one address up, `limit` caps each list.
pub(crate) fn servers_of(plane: &PlaneHandle, only: Option<IpAddr>, limit: usize) -> ServerList {
    let now = Instant::now();
    let mut by_addr: BTreeMap<IpAddr, ServerState> = BTreeMap::new();
    let blank = |a: IpAddr| ServerState {
        address: a.to_string(),
        srtt_us: None,
        consecutive_failures: 0,
        held_back: false,
        transports: vec![],
    };
    // One address is looked up, not found by walking every table.
    let (servers, records) = (plane.servers(only), plane.probe_records(only));
    for (addr, info) in servers {
        let s = by_addr.entry(addr).or_insert_with(|| blank(addr));
        s.srtt_us = (info.srtt_us > 0).then_some(info.srtt_us);
        s.consecutive_failures = info.failures;
        s.held_back = info.held_until.is_some_and(|t| t > now);
    }
    for r in records {
        let s = by_addr.entry(r.addr).or_insert_with(|| blank(r.addr));
        let state = transport_status(r.status);
        let capable = match state {
            TransportStatus::Success => Some(true),
            TransportStatus::Failed | TransportStatus::Timeout => Some(false),
            _ => None,
        };
        s.transports.push(TransportState {
            transport: r.transport,
            state,
            capable,
            last_success: r.last_success,
            last_failure: r.last_failure,
            last_failure_reason: r.last_failure_reason,
            handshakes_full: r.handshakes_full,
            handshakes_resumed: r.handshakes_resumed,
            open_connections: r.open_connections,
        });
    }
    for s in by_addr.values_mut() {
        s.transports.sort_by_key(|t| t.transport);
    }
    let signals = if only.is_some() {
        vec![]
    } else {
        let mut v: Vec<SignalState> = plane
            .signals(adox_dataplane::clock::unix_now())
            .into_iter()
            .filter_map(|(name, sig)| match sig {
                adox_dataplane::upstream::signal::Signal::Known {
                    records,
                    secure,
                    dane,
                    cycle,
                    refused,
                    until,
                    ..
                } => Some(SignalState {
                    nameserver: name.to_ascii(),
                    dnssec: if secure {
                        DnssecStatus::Secure
                    } else if refused
                        .iter()
                        .any(|e| matches!(e, adox_dataplane::upstream::signal::SignalError::Bogus(_)))
                    {
                        DnssecStatus::Bogus
                    } else {
                        DnssecStatus::Insecure
                    },
                    dane: dane.iter().map(|(t, _)| *t).collect(),
                    cycle,
                    records: records
                        .iter()
                        .map(|r| SignalRecord {
                            priority: r.priority,
                            target: r.target.to_ascii(),
                            alpn: r.alpn.clone(),
                            port: r.port,
                        })
                        .collect(),
                    refused: refused.iter().map(ToString::to_string).collect(),
                    expires: until,
                }),
                adox_dataplane::upstream::signal::Signal::Pending { .. } => None,
            })
            .collect();
        v.sort_by(|a, b| a.nameserver.cmp(&b.nameserver));
        v.truncate(limit);
        v
    };
    ServerList { servers: by_addr.into_values().take(limit).collect(), signals }
}

/// `GET /v1/dnssec/negative-anchors`: the configuration's negative trust anchors and the
/// API's.
pub(crate) fn negative_anchors_view(plane: &PlaneHandle) -> NegativeAnchors {
    let (config, api) = plane.negative_anchors();
    NegativeAnchors {
        config: config.iter().map(|n| n.to_ascii()).collect(),
        api: api.iter().map(|n| n.to_ascii()).collect(),
    }
}

/// The REST form of an RFC 9539 state.
fn transport_status(s: ProbeStatus) -> TransportStatus {
    match s {
        ProbeStatus::Unknown => TransportStatus::Unknown,
        ProbeStatus::Probing => TransportStatus::Probing,
        ProbeStatus::Success => TransportStatus::Success,
        ProbeStatus::Failed => TransportStatus::Failed,
        ProbeStatus::Timeout => TransportStatus::Timeout,
    }
}

/// An RCODE as explain shows it.
fn rcode_text(rc: u8) -> String {
    match rc {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        5 => "REFUSED".into(),
        other => format!("RCODE{other}"),
    }
}

/// `GET /v1/explain`: one resolution's outcome and path.
/// The record cache's entries at one name, as `GET /v1/cache` shows them.
pub(crate) fn cache_view(
    name: String,
    entries: Vec<adox_dataplane::cache::records::Inspected>,
) -> adox_api::rest::CacheView {
    use adox_dataplane::cache::records::{CachedData, DELEGATION_KEY, NXDOMAIN_KEY, Rank};
    use adox_dataplane::dnssec::Security;
    let entries = entries
        .into_iter()
        .map(|e| adox_api::rest::CacheEntry {
            rtype: match e.rtype {
                NXDOMAIN_KEY => "NXDOMAIN".into(),
                DELEGATION_KEY => "delegation".into(),
                t => hickory_proto::rr::RecordType::from(t).to_string(),
            },
            kind: match &e.data {
                CachedData::RRset(_) => "rrset",
                CachedData::NoData(_) => "nodata",
                CachedData::NxDomain(_) => "nxdomain",
            }
            .into(),
            records: e.data.records().iter().map(|r| r.to_string()).collect(),
            ttl_left: e.ttl_left,
            stale: e.stale,
            dnssec: match e.security {
                Security::Secure => "secure",
                Security::Insecure(_) => "insecure",
                Security::Bogus(_) => "bogus",
                Security::Unchecked => "unchecked",
            }
            .into(),
            rank: match e.rank {
                Rank::AuthAnswer => "answer-authoritative",
                Rank::NonAuthAnswer => "answer",
                Rank::Referral => "referral",
                Rank::Glue => "glue",
                Rank::Hint => "hint",
            }
            .into(),
            server: e.from.map(|a| a.to_string()),
        })
        .collect();
    adox_api::rest::CacheView { name, entries }
}

pub(crate) fn explain_body(e: Explained) -> Explain {
    let dnssec = e.dnssec.map(|s| match s {
        Security::Secure => DnssecStatus::Secure,
        Security::Bogus(_) => DnssecStatus::Bogus,
        _ => DnssecStatus::Insecure,
    });
    let steps = e
        .steps
        .into_iter()
        .map(|step| match step {
            TraceStep::Lookup { name, qtype, depth, from_cache } => {
                ExplainStep::Lookup { name: name.to_ascii(), qtype: qtype.to_string(), depth, from_cache }
            }
            TraceStep::Zone { zone, qname, qtype, nameservers } => ExplainStep::Zone {
                zone: zone.to_ascii(),
                qname: qname.to_ascii(),
                qtype: qtype.to_string(),
                nameservers: nameservers.iter().map(|n| n.to_ascii()).collect(),
            },
            TraceStep::Exchange { zone, nameserver, address, plan, attempts } => ExplainStep::Exchange {
                zone: zone.to_ascii(),
                nameserver: nameserver.to_ascii(),
                address: address.to_string(),
                plan: PlanView {
                    mode: plan.mode,
                    transports: plan.transports,
                    auth: plan.auth,
                    source: plan.source.label(),
                    warning: plan.warning.map(String::from),
                },
                attempts: attempts
                    .into_iter()
                    .map(|a| Attempt { transport: a.transport, outcome: a.outcome })
                    .collect(),
            },
            TraceStep::SignalWait { nameserver, outcome } => {
                ExplainStep::SignalWait { nameserver: nameserver.to_ascii(), outcome: outcome.to_string() }
            }
        })
        .collect();
    Explain {
        name: e.name.to_ascii(),
        qtype: e.qtype.to_string(),
        rcode: rcode_text(e.rcode),
        error: e.error.map(|(ede, text)| format!("EDE {ede}: {text}")),
        dnssec,
        answers: e.answers.iter().map(ToString::to_string).collect(),
        steps,
        policy: e.policy,
    }
}
