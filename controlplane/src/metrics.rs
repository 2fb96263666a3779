//! Prometheus text exposition (format 0.0.4) of the counters, summed from the workers'
//! own counters at each scrape. Labels have small fixed sets of values (protocol, RCODE,
//! transport, mode, worker index); per-server detail is in `/v1/servers`, never in labels.
//!
//! Which counters move with what is documented in `deploy/README.md` ("Metrics").

use std::fmt::Write;

use adox_api::rest::Stats;

/// One metric family: HELP and TYPE lines, then samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Self { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    Family::new(out, name, "counter", help).sample(name, &[], value);
}

fn labelled(out: &mut String, name: &str, kind: &str, help: &str, label: &str, values: &[(&str, u64)]) {
    let mut f = Family::new(out, name, kind, help);
    for (v, n) in values {
        f.sample(name, &[(label, v)], n);
    }
}

/// The fleet backend's metrics (fleet mode only).
pub fn render_fleet(out: &mut String, f: &adox_api::rest::FleetStatus) {
    Family::new(out, "adox_fleet_connected", "gauge", "1 while the watch on etcd is up.").sample(
        "adox_fleet_connected",
        &[],
        u8::from(f.connected),
    );
    Family::new(out, "adox_fleet_applied_revision", "gauge", "The etcd revision this node's API state is as of.")
        .sample("adox_fleet_applied_revision", &[], f.applied_revision);
    labelled(
        out,
        "adox_fleet_writes_total",
        "counter",
        "API writes through this node: accepted by etcd, or refused for want of it (503).",
        "result",
        &[("ok", f.writes_ok), ("unavailable", f.writes_failed)],
    );
    counter(
        out,
        "adox_fleet_watch_restarts_total",
        "Times the watch on etcd was set up again after an error.",
        f.watch_restarts,
    );
    counter(out, "adox_fleet_full_loads_total", "Times the whole fleet state was loaded from etcd.", f.full_loads);
    counter(out, "adox_fleet_events_total", "Changes applied from the etcd watch.", f.events_applied);
    labelled(
        out,
        "adox_fleet_shared_probes_total",
        "counter",
        "RFC 9539 probe results shared through etcd (share_probes): published by this node, taken from others.",
        "direction",
        &[("published", f.probes_published), ("taken", f.probes_taken)],
    );
}

/// Renders every metric.
pub fn render(s: &Stats) -> String {
    let t = &s.totals;
    let mut out = String::with_capacity(8192);
    let o = &mut out;
    labelled(
        o,
        "adox_client_queries_total",
        "counter",
        "Client queries received, by protocol.",
        "protocol",
        &[("udp", t.queries_udp), ("tcp", t.queries_tcp)],
    );
    labelled(
        o,
        "adox_responses_total",
        "counter",
        "Responses sent to clients, by RCODE.",
        "rcode",
        &[
            ("noerror", t.rcode_noerror),
            ("nxdomain", t.rcode_nxdomain),
            ("servfail", t.rcode_servfail),
            ("refused", t.rcode_refused),
            ("formerr", t.rcode_formerr),
            ("other", t.rcode_other),
        ],
    );
    counter(o, "adox_cache_hits_total", "Client queries answered from the packet cache.", t.cache_hits);
    counter(o, "adox_cache_misses_total", "Client queries that needed the resolver.", t.cache_misses);
    labelled(
        o,
        "adox_cache_entries",
        "gauge",
        "Entries held, by cache.",
        "cache",
        &[("packet", t.packet_cache_entries), ("record", s.record_cache_entries)],
    );
    labelled(
        o,
        "adox_cache_size_bytes",
        "gauge",
        "Bytes charged, by cache.",
        "cache",
        &[("packet", t.packet_cache_bytes), ("record", s.record_cache_bytes)],
    );
    {
        let name = "adox_resolution_duration_seconds";
        let mut f = Family::new(o, name, "histogram", "Time from a cache-missing query's arrival to its answer.");
        let mut cumulative = 0;
        let bucket = format!("{name}_bucket");
        for (i, n) in t.resolution_latency.iter().enumerate() {
            cumulative += n;
            let le = adox_dataplane::stats::LATENCY_BOUNDS_US
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |us| format!("{}", *us as f64 / 1e6));
            f.sample(&bucket, &[("le", &le)], cumulative);
        }
        f.sample(&format!("{name}_sum"), &[], t.resolution_latency_sum_us as f64 / 1e6);
        f.sample(&format!("{name}_count"), &[], cumulative);
    }
    labelled(
        o,
        "adox_upstream_queries_total",
        "counter",
        "Queries sent to authoritative servers, by transport.",
        "transport",
        &[
            ("do53_udp", t.upstream_udp),
            ("do53_tcp", t.upstream_tcp),
            ("dot", t.upstream_dot),
            ("doq", t.upstream_doq),
            ("doh", t.upstream_doh),
        ],
    );
    counter(
        o,
        "adox_upstream_handoffs_total",
        "Encrypted upstream queries handed to the worker that owns the connection to their server.",
        t.upstream_handoffs,
    );
    labelled(
        o,
        "adox_upstream_exchanges_total",
        "counter",
        "Exchanges with one server address, by the mode of their transport plan.",
        "mode",
        &[
            ("strict", t.upstream_strict),
            ("opportunistic", t.upstream_opportunistic),
            ("cleartext", t.upstream_cleartext),
        ],
    );
    counter(o, "adox_upstream_timeouts_total", "Do53 upstream queries that timed out.", t.upstream_timeouts);
    labelled(
        o,
        "adox_tls_handshakes_total",
        "counter",
        "TLS handshakes with authoritative servers (DoT, DoQ and DoH), full or resumed.",
        "kind",
        &[("full", t.tls_full), ("resumed", t.tls_resumed)],
    );
    counter(
        o,
        "adox_quic_handshakes_total",
        "QUIC connections established to authoritative servers.",
        t.doq_handshakes,
    );
    counter(o, "adox_downgrades_total", "Opportunistic plans that fell back to Do53.", t.downgrades);
    counter(
        o,
        "adox_strict_failures_total",
        "Exchanges refused by strict mode (nothing sent in cleartext).",
        t.strict_failures,
    );
    counter(o, "adox_probes_started_total", "RFC 9539 probes started.", t.probes_started);
    labelled(
        o,
        "adox_probe_results_total",
        "counter",
        "RFC 9539 probe outcomes.",
        "result",
        &[("success", t.probe_successes), ("failure", t.probe_failures)],
    );
    labelled(
        o,
        "adox_signals_total",
        "counter",
        "_dns SVCB signal lookups, by what they found.",
        "event",
        &[
            ("learned", t.signals_learned),
            ("refused_records", t.signals_refused),
            ("cycle", t.signal_cycles),
            ("waited", t.signal_waits),
            ("wait_timeout", t.signal_wait_timeouts),
        ],
    );
    labelled(
        o,
        "adox_deleg_total",
        "counter",
        "DELEG RRsets read from referrals (experimental transport.deleg), by DNSSEC status.",
        "status",
        &[("secure", t.deleg_secure), ("insecure", t.deleg_insecure), ("bogus", t.deleg_bogus)],
    );
    labelled(
        o,
        "adox_dnssec_answers_total",
        "counter",
        "Resolutions by the DNSSEC status of their answer.",
        "status",
        &[("secure", t.dnssec_secure), ("insecure", t.dnssec_insecure), ("bogus", t.dnssec_bogus)],
    );
    counter(
        o,
        "adox_stale_answers_total",
        "Client queries answered from expired data because no authority answered (RFC 8767).",
        t.stale_answers,
    );
    counter(
        o,
        "adox_prefetches_total",
        "Answers refreshed in the background, asked for in the last tenth of their TTL.",
        t.prefetches,
    );
    counter(
        o,
        "adox_edns_fallbacks_total",
        "Queries asked again without EDNS after a FORMERR or NOTIMP without OPT.",
        t.edns_fallbacks,
    );
    counter(
        o,
        "adox_aggressive_nsec_total",
        "Negative answers synthesized from validated NSEC spans without an upstream query (RFC 8198).",
        t.aggressive_nsec,
    );
    counter(o, "adox_coalesced_total", "Client queries that joined a resolution already under way.", t.coalesced);
    counter(
        o,
        "adox_failures_cached_total",
        "Failures kept in the packet cache (RFC 9520): for cache.failure_ttl_s, twice as long for each repeat of the name up to cache.failure_max_ttl_s; one entry per question and flag set.",
        t.failures_cached,
    );
    counter(o, "adox_dropped_total", "Client messages dropped without an answer.", t.dropped);
    counter(
        o,
        "adox_client_share_exceeded_total",
        "Cache misses answered SERVFAIL because their client or its network had its share in flight.",
        t.client_share_exceeded,
    );
    labelled(
        o,
        "adox_rate_limited_total",
        "counter",
        "UDP queries over a rate of [limits], by the rate (a query over several counts once).",
        "limit",
        &[("client", t.rate_limited_client), ("prefix", t.rate_limited_prefix), ("response", t.rate_limited_response)],
    );
    labelled(
        o,
        "adox_rate_limit_actions_total",
        "counter",
        "What queries over a rate got: an empty truncated answer (slip), nothing, or REFUSED.",
        "action",
        &[("slip", t.rate_limit_slipped), ("drop", t.rate_limit_dropped), ("refused", t.rate_limit_refused)],
    );
    labelled(
        o,
        "adox_client_cookies_total",
        "counter",
        "Client queries with a DNS cookie, by what it proved (RFC 7873, RFC 9018).",
        "result",
        &[("client_only", t.cookies_client_only), ("valid", t.cookies_valid), ("invalid", t.cookies_invalid)],
    );
    labelled(
        o,
        "adox_upstream_cookie_events_total",
        "counter",
        "Do53 replies from authoritative servers that answered BADCOOKIE, or did not echo adox's client cookie (discarded).",
        "event",
        &[("badcookie", t.upstream_badcookies), ("mismatch", t.upstream_cookie_mismatches)],
    );
    labelled(
        o,
        "adox_dnstap_messages_total",
        "counter",
        "dnstap messages queued for the collector, or dropped because its buffer was full.",
        "result",
        &[("queued", t.dnstap_queued), ("dropped", t.dnstap_dropped)],
    );
    if !s.policy_zones.is_empty() {
        let zones = &s.policy_zones;
        let mut f = Family::new(
            o,
            "adox_rpz_hits_total",
            "counter",
            "Queries rewritten (or passed through) by a Response Policy Zone, by zone and trigger.",
        );
        for z in zones {
            f.sample("adox_rpz_hits_total", &[("zone", &z.zone), ("trigger", "qname")], z.hits_qname);
            f.sample("adox_rpz_hits_total", &[("zone", &z.zone), ("trigger", "ip")], z.hits_ip);
            f.sample("adox_rpz_hits_total", &[("zone", &z.zone), ("trigger", "nsdname")], z.hits_nsdname);
            f.sample("adox_rpz_hits_total", &[("zone", &z.zone), ("trigger", "nsip")], z.hits_nsip);
        }
        let mut f = Family::new(o, "adox_rpz_rules", "gauge", "Triggers in force, by policy zone.");
        for z in zones {
            f.sample("adox_rpz_rules", &[("zone", &z.zone)], z.rules);
        }
        let mut f = Family::new(
            o,
            "adox_rpz_serial",
            "gauge",
            "SOA serial in force, by policy zone (absent before its first load).",
        );
        for z in zones.iter().filter(|z| z.serial.is_some()) {
            f.sample("adox_rpz_serial", &[("zone", &z.zone)], z.serial.unwrap_or_default());
        }
        let mut f = Family::new(
            o,
            "adox_rpz_transfers_total",
            "counter",
            "Policy zone loads and transfers, by zone and result (updated, failed, current).",
        );
        for z in zones {
            f.sample("adox_rpz_transfers_total", &[("zone", &z.zone), ("result", "updated")], z.transfers_ok);
            f.sample("adox_rpz_transfers_total", &[("zone", &z.zone), ("result", "failed")], z.transfers_failed);
            f.sample("adox_rpz_transfers_total", &[("zone", &z.zone), ("result", "current")], z.transfers_current);
        }
        labelled(
            o,
            "adox_rpz_notifies_total",
            "counter",
            "NOTIFY messages for policy zones: accepted from a zone's primary, or refused.",
            "result",
            &[("accepted", s.rpz_notifies_accepted), ("refused", s.rpz_notifies_refused)],
        );
    }
    counter(
        o,
        "adox_overload_shed_total",
        "New cache misses dropped because the worker was past its capacity; hits were still answered.",
        t.overload_shed,
    );
    counter(o, "adox_refused_acl_total", "Client queries refused by the access list.", t.refused_acl);
    counter(o, "adox_truncated_total", "Answers sent truncated over UDP.", t.truncated);
    counter(
        o,
        "adox_xdp_answered_total",
        "UDP queries answered on the AF_XDP path, in the query's own frame.",
        t.xdp_answered,
    );
    counter(
        o,
        "adox_xdp_dropped_total",
        "UDP datagrams redirected to an AF_XDP socket that the kernel dropped (RX ring full, no free frame).",
        t.xdp_dropped,
    );
    labelled(
        o,
        "adox_tcp_connections_total",
        "counter",
        "Client TCP connections, accepted or closed at the cap.",
        "result",
        &[("accepted", t.tcp_accepted), ("rejected", t.tcp_rejected)],
    );
    {
        let mut f = Family::new(o, "adox_worker_queries_total", "counter", "Client queries per worker thread.");
        for w in &s.workers {
            f.sample("adox_worker_queries_total", &[("worker", &w.worker.to_string())], w.queries);
        }
    }
    {
        let mut f = Family::new(
            o,
            "adox_worker_cache_misses_total",
            "counter",
            "Cache-missing client queries per worker thread.",
        );
        for w in &s.workers {
            f.sample("adox_worker_cache_misses_total", &[("worker", &w.worker.to_string())], w.cache_misses);
        }
    }
    {
        let name = "adox_trust_anchor_keys";
        let mut f = Family::new(o, name, "gauge", "Keys of the trust anchors RFC 5011 maintains, by zone and state.");
        let mut counts: Vec<(&str, &str, u64)> = Vec::new();
        for k in &s.trust_anchor_keys {
            match counts.iter_mut().find(|(z, st, _)| *z == k.zone && *st == k.state) {
                Some(c) => c.2 += 1,
                None => counts.push((&k.zone, &k.state, 1)),
            }
        }
        for (zone, state, n) in counts {
            f.sample(name, &[("zone", zone), ("state", state)], n);
        }
    }
    labelled(
        o,
        "adox_trust_anchor_refreshes_total",
        "counter",
        "RFC 5011 fetches of anchored zones' keys: signed by a trusted key, or failed or not signed so.",
        "result",
        &[("validated", s.trust_anchor_refreshes_ok), ("failed", s.trust_anchor_refreshes_failed)],
    );
    Family::new(o, "adox_policies", "gauge", "Operator transport policies in force.").sample(
        "adox_policies",
        &[],
        s.policies,
    );
    Family::new(o, "adox_uptime_seconds", "gauge", "Seconds since the control plane started.").sample(
        "adox_uptime_seconds",
        &[],
        s.uptime_s,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions_and_histograms_are_cumulative() {
        let mut s = Stats {
            uptime_s: 1,
            totals: adox_api::StatsSnapshot::default(),
            record_cache_entries: 0,
            record_cache_bytes: 0,
            policies: 0,
            workers: vec![],
            trust_anchor_keys: vec![],
            trust_anchor_refreshes_ok: 0,
            trust_anchor_refreshes_failed: 0,
            policy_zones: vec![adox_api::rest::PolicyZoneStats {
                zone: "rpz.example.".into(),
                serial: Some(9),
                rules: 3,
                ede: 15,
                hits_qname: 4,
                hits_ip: 1,
                hits_nsdname: 0,
                hits_nsip: 0,
                transfers_ok: 2,
                transfers_failed: 0,
                transfers_current: 5,
            }],
            rpz_notifies_accepted: 2,
            rpz_notifies_refused: 0,
        };
        s.totals.resolution_latency[0] = 2;
        s.totals.resolution_latency[3] = 1;
        s.totals.queries_udp = 7;
        let text = render(&s);
        assert!(text.contains("adox_client_queries_total{protocol=\"udp\"} 7\n"));
        assert!(text.contains("adox_rpz_hits_total{zone=\"rpz.example.\",trigger=\"qname\"} 4\n"));
        assert!(text.contains("adox_rpz_serial{zone=\"rpz.example.\"} 9\n"));
        assert!(text.contains("adox_rpz_transfers_total{zone=\"rpz.example.\",result=\"current\"} 5\n"));
        assert!(text.contains("adox_resolution_duration_seconds_bucket{le=\"0.001\"} 2\n"));
        assert!(text.contains("adox_resolution_duration_seconds_bucket{le=\"0.025\"} 3\n"));
        assert!(text.contains("adox_resolution_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("adox_resolution_duration_seconds_count 3\n"));
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let mut parts = line.split(' ').skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(name.starts_with("adox_"), "{line}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
        }
    }
}
