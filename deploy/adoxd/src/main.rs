//! `adoxd`: the adox recursive resolver daemon.
//!
//! Wires the data plane and the control plane into one process. With no arguments it runs
//! on its embedded defaults: built-in IANA root hints, DNS on 127.0.0.1:5300 over UDP and
//! TCP, the REST API on 127.0.0.1:5380.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use adox_dataplane::config::{Config, parse_listen};
use adox_dataplane::{DataPlane, acl};
use anyhow::Context;
use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// adox: a recursive DNS resolver for ISPs.
///
/// With no options it runs on embedded defaults: the IANA root hints and
/// 127.0.0.1:5300 (UDP and TCP). Options override the configuration file.
#[derive(Debug, Parser)]
#[command(name = "adoxd", version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML). Fields it omits keep their defaults.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    /// Listen address for UDP and TCP, IPv6 as [::1]:5300. Repeatable; replaces the
    /// configuration's list.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
    listen: Vec<std::net::SocketAddr>,

    /// Worker threads (0 = one per core).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,

    /// Root hints file in zone-file format (like named.root), replacing the built-in
    /// IANA hints.
    #[arg(long, value_name = "FILE")]
    root_hints: Option<PathBuf>,

    /// DNSSEC trust anchors: DS or DNSKEY records in zone-file format, replacing the
    /// built-in root KSKs (needed with --root-hints of a private root).
    #[arg(long, value_name = "FILE")]
    trust_anchor: Option<PathBuf>,

    /// DNSSEC validation: validate (default) or off.
    #[arg(long, value_name = "MODE", value_parser = ["validate", "off"])]
    dnssec: Option<String>,

    /// Aggressive use of validated NSEC records (RFC 8198): on (default) or off.
    #[arg(long, value_name = "ON|OFF", value_parser = ["on", "off"])]
    aggressive_nsec: Option<String>,

    /// PEM file of CA certificates for authenticating nameservers over DoT (PKIX);
    /// default: the built-in web PKI roots.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,

    /// Directory for persistent state.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Take over the listening sockets of the adoxd running with the same state
    /// directory (zero-downtime restart or upgrade): it stops its API, hands its sockets
    /// over, answers what it still owes and exits; no query is dropped.
    #[arg(long)]
    takeover: bool,

    /// Log level (error, warn, info, debug, trace) or a filter such as
    /// adox_dataplane=debug,info.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,

    /// Started as root: the user to run as once the sockets are bound (no capability is
    /// kept). Sets server.user.
    #[arg(long, value_name = "USER")]
    user: Option<String>,

    /// With --user: the group to run as (default the user's primary group). Sets
    /// server.group.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,

    /// Log line format: text, or json (one object per line, for log shippers).
    #[arg(long, value_name = "FORMAT", value_parser = str::parse::<adox_dataplane::config::LogFormat>)]
    log_format: Option<adox_dataplane::config::LogFormat>,

    /// Open an upstream prefix that the default deny list (loopback, private, reserved
    /// space) would block, e.g. 127.0.0.0/8 for a lab. Repeatable; adds to the config.
    #[arg(long, value_name = "PREFIX", value_parser = acl::parse_prefix)]
    allow_upstream: Vec<ipnet::IpNet>,

    /// Source address of queries to authoritative servers, one per family (IPv4 and/or
    /// IPv6); replaces the configuration's transport.outgoing_v4 / outgoing_v6.
    #[arg(long, value_name = "ADDR")]
    outgoing_address: Vec<std::net::IpAddr>,

    /// REST API listen address, or `off` (default 127.0.0.1:5380).
    #[arg(long, value_name = "ADDR:PORT")]
    api: Option<String>,

    /// File of admin API tokens (read and write), one per line; `#` starts a comment.
    #[arg(long, value_name = "FILE")]
    api_token_file: Option<PathBuf>,

    /// File of read-only API tokens, one per line.
    #[arg(long, value_name = "FILE")]
    api_read_token_file: Option<PathBuf>,

    /// Allow clients from a prefix (default: loopback and private ranges). Repeatable;
    /// adds to the config.
    #[arg(long, value_name = "PREFIX", value_parser = acl::parse_prefix)]
    allow_client: Vec<ipnet::IpNet>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file and exit (non-zero, with the reason, if invalid).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

fn build_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut cfg = match &cli.config {
        Some(p) => Config::load(p).with_context(|| format!("config file {}", p.display()))?,
        None => Config::default(),
    };
    if !cli.listen.is_empty() {
        cfg.server.listen = cli.listen.iter().map(|a| a.to_string()).collect();
    }
    if let Some(n) = cli.workers {
        cfg.server.workers = n;
    }
    if let Some(p) = &cli.root_hints {
        cfg.resolver.root_hints = Some(p.clone());
    }
    if let Some(f) = &cli.ca_file {
        cfg.transport.ca_file = Some(f.clone());
    }
    if let Some(f) = &cli.trust_anchor {
        cfg.dnssec.trust_anchor_file = Some(f.clone());
    }
    if let Some(m) = &cli.dnssec {
        cfg.dnssec.mode = m.clone();
    }
    if let Some(a) = &cli.aggressive_nsec {
        cfg.dnssec.aggressive_nsec = a == "on";
    }
    if let Some(d) = &cli.state_dir {
        cfg.server.state_dir = d.clone();
    }
    if let Some(f) = cli.log_format {
        cfg.server.log_format = f;
    }
    if let Some(u) = &cli.user {
        cfg.server.user = Some(u.clone());
    }
    if let Some(g) = &cli.group {
        cfg.server.group = Some(g.clone());
    }
    if let Some(l) = &cli.log_level {
        cfg.server.log_level = l.clone();
    }
    if let Some(a) = &cli.api {
        cfg.api.listen = a.clone();
    }
    if let Some(f) = &cli.api_token_file {
        cfg.api.token_file = Some(f.clone());
    }
    if let Some(f) = &cli.api_read_token_file {
        cfg.api.read_token_file = Some(f.clone());
    }
    let (v4, v6): (Vec<&std::net::IpAddr>, Vec<&std::net::IpAddr>) =
        cli.outgoing_address.iter().partition(|a| a.is_ipv4());
    for (family, given, field) in
        [("IPv4", &v4, &mut cfg.transport.outgoing_v4), ("IPv6", &v6, &mut cfg.transport.outgoing_v6)]
    {
        match given.as_slice() {
            [] => {}
            [a] => *field = Some(a.to_string()),
            _ => anyhow::bail!("--outgoing-address: one {family} address at most, got {}", given.len()),
        }
    }
    cfg.access.allow_upstream.extend(cli.allow_upstream.iter().map(|p| p.to_string()));
    cfg.access.allow_clients.extend(cli.allow_client.iter().map(|p| p.to_string()));
    cfg.validate().context("invalid configuration")?;
    Ok(cfg)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::CheckConfig { file }) = &cli.command {
        return match Config::load(file).and_then(|c| c.check_zone_servers().map(|()| c)) {
            Ok(_) => {
                println!("{}: ok", file.display());
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                std::process::ExitCode::FAILURE
            }
        };
    }
    match run(&cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("adoxd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// How often the counters are logged.
const STATS_EVERY: Duration = Duration::from_secs(60);

fn log_stats(plane: &DataPlane) {
    let s = plane.stats();
    tracing::info!(
        queries_udp = s.queries_udp,
        queries_tcp = s.queries_tcp,
        cache_hits = s.cache_hits,
        cache_misses = s.cache_misses,
        noerror = s.rcode_noerror,
        nxdomain = s.rcode_nxdomain,
        servfail = s.rcode_servfail,
        refused = s.rcode_refused,
        formerr = s.rcode_formerr,
        refused_acl = s.refused_acl,
        dropped = s.dropped,
        truncated = s.truncated,
        upstream_udp = s.upstream_udp,
        upstream_tcp = s.upstream_tcp,
        upstream_timeouts = s.upstream_timeouts,
        coalesced = s.coalesced,
        failures_cached = s.failures_cached,
        client_share_exceeded = s.client_share_exceeded,
        rate_limited = s.rate_limited_client + s.rate_limited_prefix + s.rate_limited_response,
        dnstap_queued = s.dnstap_queued,
        dnstap_dropped = s.dnstap_dropped,
        overload_shed = s.overload_shed,
        upstream_strict = s.upstream_strict,
        upstream_opportunistic = s.upstream_opportunistic,
        upstream_cleartext = s.upstream_cleartext,
        upstream_dot = s.upstream_dot,
        upstream_doq = s.upstream_doq,
        upstream_doh = s.upstream_doh,
        upstream_handoffs = s.upstream_handoffs,
        doq_handshakes = s.doq_handshakes,
        tls_full = s.tls_full,
        tls_resumed = s.tls_resumed,
        downgrades = s.downgrades,
        strict_failures = s.strict_failures,
        probes_started = s.probes_started,
        probe_successes = s.probe_successes,
        probe_failures = s.probe_failures,
        signals_learned = s.signals_learned,
        signals_refused = s.signals_refused,
        signal_cycles = s.signal_cycles,
        signal_waits = s.signal_waits,
        signal_wait_timeouts = s.signal_wait_timeouts,
        deleg_secure = s.deleg_secure,
        deleg_insecure = s.deleg_insecure,
        deleg_bogus = s.deleg_bogus,
        stale_answers = s.stale_answers,
        prefetches = s.prefetches,
        edns_fallbacks = s.edns_fallbacks,
        aggressive_nsec = s.aggressive_nsec,
        dnssec_secure = s.dnssec_secure,
        dnssec_insecure = s.dnssec_insecure,
        dnssec_bogus = s.dnssec_bogus,
        record_cache_entries = plane.record_cache_usage().0,
        "stats"
    );
}

fn save_state(plane: &DataPlane) {
    if let Err(e) = plane.save_state() {
        tracing::warn!(error = %e, "could not save state (set --state-dir to a writable directory)");
    }
}

/// Installs the logger; returns the function the API uses to change its filter.
fn init_logging(level: &str, format: adox_dataplane::config::LogFormat) -> adox_controlplane::SetLogLevel {
    // The two formats are two builder types: the same steps for each.
    macro_rules! install {
        ($builder:expr) => {{
            let builder = $builder
                .with_env_filter(tracing_subscriber::EnvFilter::new(level))
                .with_target(false)
                .with_writer(std::io::stderr)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            std::sync::Arc::new(move |filter: &str| {
                let f = tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
                handle.reload(f).map_err(|e| e.to_string())
            })
        }};
    }
    match format {
        adox_dataplane::config::LogFormat::Text => {
            install!(tracing_subscriber::fmt().with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
        }
        adox_dataplane::config::LogFormat::Json => install!(
            tracing_subscriber::fmt().json().flatten_event(true).with_current_span(false).with_span_list(false)
        ),
    }
}

/// SIGHUP: reads the configuration again (the same file and command line) and applies what
/// can change while running: the client and upstream address policies (`[access]`), the
/// log level, and the API token files (rotation). A file that does not load or validate is
/// refused with the reason and the running configuration stays whole. Other changed
/// sections are reported as needing a restart.
fn reload_config(
    cli: &Cli,
    running: &mut Config,
    data_plane: &mut DataPlane,
    registry: &adox_controlplane::PolicyRegistry,
    api: Option<&adox_controlplane::ControlPlane>,
    set_log_level: &adox_controlplane::SetLogLevel,
) -> adox_api::rest::ReloadReport {
    let mut report = adox_api::rest::ReloadReport::default();
    let plane = &data_plane.handle();
    let new = match build_config(cli).and_then(|c| c.validate().map(|()| c).map_err(anyhow::Error::from)) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "configuration not reloaded; the running one stays");
            report.error = Some(format!("{e:#}"));
            return report;
        }
    };
    let refuse = |report: &mut adox_api::rest::ReloadReport, section: &str, reason: String| {
        tracing::warn!(error = %reason, "{section} not reloaded; the running one stays");
        report.refused.push(adox_api::rest::RefusedSection { section: section.to_string(), reason });
    };
    if let Some(api) = api {
        // A bad token file keeps the old tokens (and the rest of the reload goes on).
        match read_tokens(&new) {
            Ok(t) => {
                tracing::info!(admin = t.admin.len(), read = t.read.len(), "API tokens reloaded");
                api.set_tokens(t);
                report.applied.push("api tokens".into());
            }
            Err(e) => refuse(&mut report, "api tokens", format!("{e:#}")),
        }
        // The certificate and key are read again (a renewal keeps their paths); a pair
        // that does not load keeps the running one.
        if let (Some(cert), Some(key)) = (&new.api.tls_cert_file, &new.api.tls_key_file) {
            match api.reload_tls(cert, key) {
                Ok(served) => {
                    if let Some(changed) = served {
                        running.api.tls_cert_file = new.api.tls_cert_file.clone();
                        running.api.tls_key_file = new.api.tls_key_file.clone();
                        if changed {
                            report.applied.push("api TLS certificate".into());
                        }
                    }
                }
                Err(e) => refuse(&mut report, "api TLS certificate", e),
            }
        }
    }
    if format!("{:?}", new.access) != format!("{:?}", running.access) {
        match plane.reload_access(&new) {
            Ok(()) => {
                running.access = new.access.clone();
                report.applied.push("access".into());
            }
            Err(e) => refuse(&mut report, "access", e.to_string()),
        }
    }
    if new.zones != running.zones {
        match plane.reload_config_zones(&new.zones) {
            Ok(_) => {
                running.zones = new.zones.clone();
                report.applied.push("zones".into());
            }
            Err(e) => refuse(&mut report, "zones", e.to_string()),
        }
    }
    if format!("{:?}", new.local_zones) != format!("{:?}", running.local_zones) {
        plane.reload_local_zones(&new.local_zones);
        running.local_zones = new.local_zones.clone();
        report.applied.push("local_zones".into());
    }
    if new.dnssec.negative_trust_anchors != running.dnssec.negative_trust_anchors {
        // Validated with the file: the names parse.
        plane.reload_config_negative_anchors(new.dnssec.negative_anchors().unwrap_or_default());
        running.dnssec.negative_trust_anchors = new.dnssec.negative_trust_anchors.clone();
        report.applied.push("dnssec.negative_trust_anchors".into());
    }
    if new.policies != running.policies {
        // Validated with the file: every policy normalizes.
        match new
            .policies()
            .map_err(|e| e.to_string())
            .and_then(|p| registry.replace_config(p).map_err(|e| e.to_string()))
        {
            Ok(_) => {
                running.policies = new.policies.clone();
                report.applied.push("policy".into());
            }
            Err(e) => refuse(&mut report, "policy", e),
        }
    }
    // Cookies: the secret file is read again on every reload. A bad one keeps the running
    // secret.
    match plane.reload_cookies(&new) {
        Ok(changed) => {
            if changed || new.cookies != running.cookies {
                report.applied.push("cookies".into());
            }
            running.cookies = new.cookies.clone();
        }
        Err(e) => refuse(&mut report, "cookies", e.to_string()),
    }
    // Policy zone files are read again on every reload ([rpz] itself needs a restart). A
    // file that does not load keeps that zone's running content.
    if new.rpz == running.rpz {
        match plane.reload_rpz_files() {
            Ok(0) => {}
            Ok(_) => report.applied.push("rpz".into()),
            Err(e) => refuse(&mut report, "rpz", e),
        }
    }
    // Query rates, rebuilt only when [limits] changed (their counts start over). Refused
    // whole: the running rates and shares stay.
    let mut limits_refused = false;
    if new.limits != running.limits
        && let Err(e) = plane.reload_rates(&new)
    {
        refuse(&mut report, "limits", e.to_string());
        limits_refused = true;
    }
    if new.cache.record_cache_bytes != running.cache.record_cache_bytes
        || new.cache.packet_cache_bytes != running.cache.packet_cache_bytes
        || (new.limits != running.limits && !limits_refused)
    {
        // The NSEC spans' share follows the running [dnssec] (a change there needs a restart).
        let mut sized = new.clone();
        sized.dnssec = running.dnssec.clone();
        if !plane.reload_caches_and_limits(&sized) {
            tracing::warn!(
                "a worker did not confirm its new cache budget and shares in time; it applies them when it can"
            );
        }
        running.cache.record_cache_bytes = new.cache.record_cache_bytes;
        running.cache.packet_cache_bytes = new.cache.packet_cache_bytes;
        if !limits_refused {
            running.limits = new.limits.clone();
        }
        report.applied.push("cache sizes and limits".into());
    }
    // Root hints and trust anchors are files: read again on every reload (an operator may
    // have changed the file, not its name).
    match plane.reload_root_and_anchors(&new) {
        Ok((hints, anchors)) => {
            running.resolver.root_hints = new.resolver.root_hints.clone();
            running.dnssec.trust_anchor_file = new.dnssec.trust_anchor_file.clone();
            if hints {
                report.applied.push("resolver.root_hints".into());
            }
            if anchors {
                report.applied.push("dnssec trust anchors".into());
            }
            if hints || anchors {
                let notes = dnssec_notes(&new);
                for note in &notes {
                    tracing::warn!("{note}");
                }
                if let Some(api) = api {
                    api.set_readiness_notes(notes);
                }
            }
        }
        Err(e) => refuse(&mut report, "root hints and trust anchors", e),
    }
    match plane.reload_upstream_roots(&new) {
        Ok(changed) => {
            running.transport.ca_file = new.transport.ca_file.clone();
            if changed {
                report.applied.push("transport.ca_file".into());
            }
        }
        Err(e) => refuse(&mut report, "transport.ca_file", e.to_string()),
    }
    if new.server.listen != running.server.listen {
        match data_plane.reload_listen(&new) {
            Ok(_) => {
                let listen: Vec<String> = data_plane.local_addrs().iter().map(|a| a.to_string()).collect();
                tracing::info!(listen = %listen.join(","), "listen addresses reloaded");
                running.server.listen = new.server.listen.clone();
                report.applied.push("server.listen".into());
            }
            Err(e) => refuse(&mut report, "server.listen", e.to_string()),
        }
    }
    if new.server.log_level != running.server.log_level {
        match set_log_level(&new.server.log_level) {
            Ok(()) => {
                running.server.log_level = new.server.log_level.clone();
                report.applied.push("server.log_level".into());
            }
            Err(e) => refuse(&mut report, "server.log_level", e),
        }
    }
    // What this version cannot change while running: said, not silently ignored.
    let same = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
    let mut server = new.server.clone();
    server.log_level = running.server.log_level.clone();
    let mut api_cfg = new.api.clone();
    api_cfg.token_file = running.api.token_file.clone();
    api_cfg.read_token_file = running.api.read_token_file.clone();
    let mut dnssec = new.dnssec.clone();
    dnssec.negative_trust_anchors = running.dnssec.negative_trust_anchors.clone();
    for (section, unchanged) in [
        ("server", same(&server, &running.server)),
        ("resolver", same(&new.resolver, &running.resolver)),
        ("cache", same(&new.cache, &running.cache)),
        ("limits", limits_refused || same(&new.limits, &running.limits)),
        ("transport", same(&new.transport, &running.transport)),
        ("api", same(&api_cfg, &running.api)),
        ("dnssec", same(&dnssec, &running.dnssec)),
        ("policy", same(&new.policies, &running.policies)),
        ("dnstap", same(&new.dnstap, &running.dnstap)),
        ("rpz", same(&new.rpz, &running.rpz)),
        ("fleet", same(&new.fleet, &running.fleet)),
        ("xdp", same(&new.xdp, &running.xdp)),
    ] {
        if !unchanged {
            report.needs_restart.push(section.into());
        }
    }
    if report.needs_restart.is_empty() && report.refused.is_empty() {
        tracing::info!(applied = %report.applied.join(","), "configuration reloaded");
    } else {
        tracing::warn!(applied = %report.applied.join(","), needs_restart = %report.needs_restart.join(","),
            refused = %report.refused.iter().map(|r| r.section.as_str()).collect::<Vec<_>>().join(","),
            "configuration reloaded in part: sections refused keep their running values, the others take effect at the next restart");
    }
    report
}

/// The API token files, read now (at start, and again on SIGHUP).
fn read_tokens(cfg: &Config) -> anyhow::Result<adox_controlplane::Tokens> {
    let read = |p: &Option<PathBuf>| -> anyhow::Result<Vec<String>> {
        match p {
            Some(p) => adox_controlplane::read_token_file(p).map_err(anyhow::Error::msg),
            None => Ok(vec![]),
        }
    };
    Ok(adox_controlplane::Tokens {
        admin: read(&cfg.api.token_file).context("api.token_file")?,
        read: read(&cfg.api.read_token_file).context("api.read_token_file")?,
    })
}

/// The API's settings from the configuration (token files read now: a bad file stops
/// the start, with its line).
fn build_api_settings(
    cfg: &Config,
    listen: std::net::SocketAddr,
    set_log_level: adox_controlplane::SetLogLevel,
    reload: adox_controlplane::Reload,
) -> anyhow::Result<adox_controlplane::ApiSettings> {
    let adox_controlplane::Tokens { admin: admin_tokens, read: read_tokens } = read_tokens(cfg)?;
    let tls = match (&cfg.api.tls_cert_file, &cfg.api.tls_key_file) {
        (Some(cert), Some(key)) => {
            Some(adox_controlplane::tls::server_config(cert, key).map_err(anyhow::Error::msg).context("api TLS")?)
        }
        _ => None,
    };
    if admin_tokens.is_empty() && read_tokens.is_empty() {
        tracing::warn!("no API tokens configured (--api-token-file): every /v1 request will be refused");
    }
    if !listen.ip().is_loopback() && tls.is_none() {
        tracing::warn!(
            %listen,
            "the API listens beyond loopback without TLS: tokens and policies cross the network in clear \
             (set api.tls_cert_file and api.tls_key_file)"
        );
    }
    Ok(adox_controlplane::ApiSettings {
        listen,
        admin_tokens,
        read_tokens,
        protect_metrics: cfg.api.protect_metrics,
        rate_per_s: cfg.api.rate_per_s,
        rate_burst: cfg.api.rate_burst,
        max_body_bytes: cfg.api.max_body_bytes,
        max_import_bytes: cfg.api.max_import_bytes,
        log_level: cfg.server.log_level.clone(),
        set_log_level,
        reload: Some(reload),
        readiness_notes: dnssec_notes(cfg),
        tls,
        negative_anchors_file: Some(negative_anchors_file(cfg)),
        zones_file: Some(zones_file(cfg)),
        hostnames: cfg.api.hostnames.clone(),
        fleet: None,
    })
}

/// How to reach etcd (`[fleet]`), its files read now: a missing one stops the start.
fn fleet_settings(cfg: &Config) -> anyhow::Result<adox_controlplane::fleet::FleetSettings> {
    let f = &cfg.fleet;
    let read =
        |p: &std::path::Path, field: &str| std::fs::read(p).with_context(|| format!("fleet.{field}: {}", p.display()));
    let identity = match (&f.etcd_cert_file, &f.etcd_key_file) {
        (Some(c), Some(k)) => Some((read(c, "etcd_cert_file")?, read(k, "etcd_key_file")?)),
        _ => None,
    };
    let user = match (&f.etcd_user, &f.etcd_password_file) {
        (Some(u), Some(p)) => {
            let text =
                String::from_utf8(read(p, "etcd_password_file")?).context("fleet.etcd_password_file: not UTF-8")?;
            let password = text.lines().next().unwrap_or("").to_string();
            anyhow::ensure!(!password.is_empty(), "fleet.etcd_password_file: {}: empty", p.display());
            Some((u.clone(), password))
        }
        _ => None,
    };
    Ok(adox_controlplane::fleet::FleetSettings {
        endpoints: f.etcd_endpoints.clone(),
        key_prefix: f.key_prefix.clone(),
        timeout: Duration::from_millis(f.etcd_timeout_ms),
        ca_pem: f.etcd_ca_file.as_deref().map(|p| read(p, "etcd_ca_file")).transpose()?,
        identity_pem: identity,
        user,
        state_dir: cfg.server.state_dir.clone(),
        probe_windows: f.share_probes.then_some((cfg.transport.probe_persistence_s, cfg.transport.probe_damping_s)),
    })
}

/// A file the API keeps in the state directory: its text, `None` when there is none yet.
fn read_state_file(path: &std::path::Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

/// Where the negative trust anchors set through the API are kept.
fn negative_anchors_file(cfg: &Config) -> PathBuf {
    cfg.server.state_dir.join("negative-anchors.json")
}

/// The negative trust anchors an operator set through the API before the last stop; a
/// damaged file stops the start (adox never runs without anchors an operator set).
fn load_negative_anchors(cfg: &Config) -> anyhow::Result<Vec<hickory_proto::rr::Name>> {
    let path = negative_anchors_file(cfg);
    let Some(text) = read_state_file(&path)? else { return Ok(vec![]) };
    let list: adox_api::rest::NegativeAnchorsUpdate =
        serde_json::from_str(&text).with_context(|| format!("{}: not a negative trust anchor list", path.display()))?;
    list.anchors
        .iter()
        .map(|s| hickory_proto::rr::Name::from_ascii(s).map_err(|e| anyhow::anyhow!("{}: `{s}`: {e}", path.display())))
        .collect()
}

/// Where the zones set through the API are kept.
fn zones_file(cfg: &Config) -> PathBuf {
    cfg.server.state_dir.join("zones.json")
}

/// The zones an operator set through the API before the last stop; a damaged file stops
/// the start (adox never runs without zones an operator set).
fn load_zones(cfg: &Config) -> anyhow::Result<Vec<adox_api::rest::ZoneSpec>> {
    let path = zones_file(cfg);
    let Some(text) = read_state_file(&path)? else { return Ok(vec![]) };
    let list: adox_api::rest::ZonesUpdate =
        serde_json::from_str(&text).with_context(|| format!("{}: not a zone list", path.display()))?;
    Ok(list.zones)
}

/// What the operator must know about validation: said at start and in `/readyz`.
fn dnssec_notes(cfg: &Config) -> Vec<String> {
    let mut notes = Vec::new();
    if cfg.dnssec_unanchored() {
        notes.push(
            "dnssec: custom root hints and no trust anchor (--trust-anchor): the built-in root anchors cannot \
             validate this root, so nothing is validated"
                .to_string(),
        );
    }
    let d = &cfg.dnssec;
    let month = 30 * 86_400;
    if d.anchors_managed()
        && (d.rfc5011_add_holddown_s < month || d.rfc5011_remove_holddown_s < month || d.rfc5011_min_refresh_s < 3_600)
    {
        notes.push(format!(
            "dnssec: RFC 5011 timers below the RFC's (add hold-down {} s, remove hold-down {} s, refresh floor {} s; \
             the RFC's are 30 days, 30 days and an hour): a key stolen from an anchored zone could become a trust \
             anchor that soon; for tests only",
            d.rfc5011_add_holddown_s, d.rfc5011_remove_holddown_s, d.rfc5011_min_refresh_s
        ));
    }
    notes
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let cfg = build_config(cli)?;
    let set_log_level = init_logging(&cfg.server.log_level, cfg.server.log_format);
    let stop = adox_dataplane::stop_on_signals().context("installing signal handlers")?;
    let reload = adox_dataplane::reload_on_sighup().context("installing signal handlers")?;
    let hints = match &cfg.resolver.root_hints {
        Some(p) => format!("root hints from {}", p.display()),
        None => "built-in IANA root hints".to_string(),
    };
    let dnssec = if !cfg.dnssec.validating() {
        "off".to_string()
    } else {
        match &cfg.dnssec.trust_anchor_file {
            Some(p) => format!("validating, anchors from {}", p.display()),
            None if cfg.dnssec_unanchored() => "validating, no usable anchor".to_string(),
            None => "validating, built-in root anchors".to_string(),
        }
    };
    for note in dnssec_notes(&cfg) {
        tracing::warn!("{note}");
    }
    // Everything that can be checked without the running adoxd's state is checked before
    // a takeover asks it to stop its API: a bad file fails here, and it carries on.
    cfg.validate()?;
    // Token files are read before anything starts: a bad one stops the start.
    // `POST /v1/reload` asks the main loop (which owns the running configuration) and
    // waits for its report.
    let (reload_tx, reload_rx) = std::sync::mpsc::channel::<std::sync::mpsc::Sender<adox_api::rest::ReloadReport>>();
    let reload_tx = std::sync::Mutex::new(reload_tx);
    let api_reload: adox_controlplane::Reload = std::sync::Arc::new(move || {
        let (tx, rx) = std::sync::mpsc::channel();
        let sent = reload_tx.lock().unwrap_or_else(|p| p.into_inner()).send(tx).is_ok();
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(report) if sent => report,
            _ => adox_api::rest::ReloadReport {
                error: Some("the daemon did not answer the reload request".into()),
                ..Default::default()
            },
        }
    });
    let api_settings = cfg
        .api
        .listen_addr()?
        .map(|addr| build_api_settings(&cfg, addr, set_log_level.clone(), api_reload.clone()))
        .transpose()?;
    // A takeover comes first: the running adoxd stops its API and saves its state before
    // handing its sockets over, so everything read below is what it last had.
    let handover_path = cfg.server.state_dir.join(adox_dataplane::handover::HANDOVER_SOCKET);
    // The interface holds one XDP program: a takeover would fail only after the running
    // adoxd stopped its API. Refused before anything is asked of it.
    if cli.takeover && cfg.xdp.enabled {
        anyhow::bail!("--takeover with [xdp] on: the interface holds one XDP program; restart instead");
    }
    let (inherited, link) = if cli.takeover {
        let (inherited, link) =
            adox_dataplane::handover::take_over(&handover_path, &cfg.listen_addrs()?).context("takeover")?;
        tracing::info!(
            workers = inherited.workers.len(),
            listen = ?inherited.listen,
            "took over the listening sockets of the running adoxd"
        );
        (Some(inherited), Some(link))
    } else {
        (None, None)
    };
    // Fleet mode: the state last applied from etcd, read before anything starts (a node
    // that cannot reach etcd serves it); the settings' files are read now, so a bad one
    // stops the start.
    let fleet_start = if cfg.fleet.is_etcd() {
        let settings = fleet_settings(&cfg)?;
        std::fs::create_dir_all(&cfg.server.state_dir)
            .with_context(|| format!("{} (state directory, fleet mode)", cfg.server.state_dir.display()))?;
        let snapshot = adox_controlplane::fleet::Snapshot::load(&cfg.server.state_dir, &settings.key_prefix)
            .map_err(anyhow::Error::msg)
            .context("fleet state (state directory)")?
            .unwrap_or_default();
        tracing::info!(
            endpoints = %settings.endpoints.join(","),
            key_prefix = %settings.key_prefix,
            revision = snapshot.revision,
            policies = snapshot.policies.len(),
            "fleet mode: API policies and negative trust anchors live in etcd; starting with the state last applied"
        );
        Some((settings, snapshot))
    } else {
        None
    };
    // Saved policies are in force from the first query: the store is opened first.
    let opened = match &fleet_start {
        Some((_, snapshot)) => adox_controlplane::PolicyRegistry::for_fleet(cfg.policies()?, snapshot.policies.clone())
            .map(|r| (r, adox_controlplane::store::LoadReport::default()))
            .map_err(|e| std::io::Error::other(format!("fleet state: {e}"))),
        None => adox_controlplane::PolicyRegistry::open(&cfg.server.state_dir, cfg.policies()?),
    };
    let registry = match opened {
        Ok((registry, loaded)) => {
            if loaded.policies > 0 || loaded.dropped_torn_line {
                tracing::info!(
                    policies = loaded.policies,
                    journal_lines = loaded.replayed,
                    dropped_unacknowledged_line = loaded.dropped_torn_line,
                    "API policies loaded"
                );
            }
            registry
        }
        // No state directory to write to (a newcomer's first run as a user): run, and say
        // that policy changes will be refused. A damaged file is another matter: stop.
        Err(e) if matches!(e.kind(), std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem) => {
            tracing::warn!(error = %e, "state directory not writable (set --state-dir): API policy changes will be refused");
            adox_controlplane::PolicyRegistry::without_state(cfg.policies()?).context("policies")?
        }
        Err(e) => return Err(anyhow::Error::new(e).context("policy store (state directory)")),
    };
    let registry = std::sync::Arc::new(registry);
    let negative_anchors = match &fleet_start {
        Some((_, snapshot)) => snapshot
            .negative_anchors
            .iter()
            .map(|s| hickory_proto::rr::Name::from_ascii(s).map_err(|e| anyhow::anyhow!("fleet state: `{s}`: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?,
        None => load_negative_anchors(&cfg).context("negative trust anchors (state directory)")?,
    };
    let api_zones = load_zones(&cfg).context("zones (state directory)")?;
    let mut plane = DataPlane::start_inheriting(&cfg, &registry.all(), inherited)?;
    if let Some(user) = &cfg.server.user {
        // Running as `user` now: what SIGHUP reads again must be readable, or a reload
        // (a token revocation) would fail with the old state kept.
        let again = [cli.config.as_ref(), cfg.api.token_file.as_ref(), cfg.api.read_token_file.as_ref()];
        for f in again.into_iter().flatten() {
            std::fs::File::open(f).with_context(|| {
                format!(
                    "user {user:?} cannot read {} (read again on SIGHUP): make it readable by that user",
                    f.display()
                )
            })?;
        }
    }
    registry.attach(plane.handle().policy_store());
    if !negative_anchors.is_empty() {
        tracing::info!(count = negative_anchors.len(), "negative trust anchors set through the API loaded");
        plane.handle().set_negative_anchors(negative_anchors);
    }
    if !api_zones.is_empty() {
        tracing::info!(count = api_zones.len(), "zones set through the API loaded");
        plane.handle().set_zones(api_zones).map_err(|e| anyhow::anyhow!("zones (state directory): {e}"))?;
    }
    let fleet = match fleet_start {
        Some((settings, snapshot)) => Some(
            adox_controlplane::fleet::Fleet::start(settings, registry.clone(), plane.handle(), snapshot.revision)
                .context("fleet sync thread")?,
        ),
        None => None,
    };
    let api_settings = api_settings.map(|mut s| {
        s.fleet = fleet.clone();
        s
    });
    // Kept to start the API again if a takeover of this process fails half-way.
    let (api_settings_again, registry_again) = (api_settings.clone(), registry.clone());
    let mut api = match api_settings {
        Some(s) => Some(adox_controlplane::ControlPlane::start(s, plane.handle(), registry)?),
        None => None,
    };
    if let Some(link) = link {
        // Serving now, API included: the old process stops reading, answers what it owes
        // and exits. If it cannot be told (it died meanwhile), this one serves anyway.
        if let Err(e) = link.confirm() {
            tracing::warn!(error = %e, "takeover: could not tell the old adoxd (gone?); serving");
        }
    }
    // Ready to hand the sockets on in turn (after a takeover, once the old process has let
    // go of the socket file).
    let mut handover = None;
    for _ in 0..100 {
        match plane.serve_handover(&handover_path) {
            Ok(h) => {
                handover = Some(h);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && cli.takeover => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %handover_path.display(), "no takeover socket: a restart with --takeover will not find this process");
                break;
            }
        }
    }
    let listen: Vec<String> = plane.local_addrs().iter().map(|a| a.to_string()).collect();
    tracing::info!(
        listen = %listen.join(","),
        api = %api.as_ref().map_or("off".to_string(), |a| a.local_addr.to_string()),
        api_tls = cfg.api.tls_cert_file.is_some(),
        workers = cfg.worker_count(),
        %hints,
        %dnssec,
        allow_upstream = %cfg.access.allow_upstream.join(","),
        outgoing_v4 = cfg.transport.outgoing_v4.as_deref().unwrap_or("any"),
        outgoing_v6 = cfg.transport.outgoing_v6.as_deref().unwrap_or("any"),
        "adoxd ready"
    );
    // The counters are also logged once a minute, for hosts that do not scrape /metrics.
    let mut last_report = std::time::Instant::now();
    // The strict state is saved within a second of a change (a restart right after must
    // find it), at most once a second (a flood of strict signals cannot turn into a
    // stream of rewrites), with one warning per minute when it cannot be written.
    let (mut last_strict_save, mut last_strict_warning) = (std::time::Instant::now(), None::<std::time::Instant>);
    let mut running = cfg.clone();
    let mut handed_over = false;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(25));
        if let Some(h) = &handover {
            if h.failed.swap(false, Ordering::SeqCst) {
                // The takeover failed after this process went quiet: its API again.
                h.requested.store(false, Ordering::SeqCst);
                h.quiet.store(false, Ordering::SeqCst);
                // With what the reloads since the start put in force (tokens, TLS files),
                // or as started if that no longer loads.
                let rebuilt = match running.api.listen_addr() {
                    Ok(Some(addr)) => build_api_settings(&running, addr, set_log_level.clone(), api_reload.clone())
                        .ok()
                        .map(|mut s| {
                            s.fleet = fleet.clone();
                            s
                        }),
                    _ => None,
                };
                if let Some(s) = rebuilt.or_else(|| api_settings_again.clone()) {
                    match adox_controlplane::ControlPlane::start(s, plane.handle(), registry_again.clone()) {
                        Ok(a) => {
                            tracing::info!(api = %a.local_addr, "API started again after the failed takeover");
                            api = Some(a);
                        }
                        Err(e) => tracing::error!(error = %e, "API not started again after the failed takeover"),
                    }
                }
            }
            if h.requested.load(Ordering::SeqCst) && !h.quiet.load(Ordering::SeqCst) {
                // A new adoxd is taking over: no API change from here on that it would not
                // read, and the learned state as of now for it to load.
                if let Some(mut a) = api.take() {
                    a.stop();
                }
                save_state(&plane);
                h.quiet.store(true, Ordering::SeqCst);
            }
            if h.done.load(Ordering::SeqCst) {
                handed_over = true;
                break;
            }
        }
        // While a new process takes over, it owns the state files.
        let quiet = handover.as_ref().is_some_and(|h| h.quiet.load(Ordering::SeqCst));
        if !quiet && last_strict_save.elapsed() >= Duration::from_secs(1) {
            last_strict_save = std::time::Instant::now();
            if let Err(e) = plane.save_changed_state()
                && last_strict_warning.is_none_or(|t| t.elapsed() >= STATS_EVERY)
            {
                last_strict_warning = Some(std::time::Instant::now());
                tracing::warn!(error = %e, "could not save learned state (strict signals, managed trust anchors)");
            }
        }
        // A takeover under way owns the sockets and the state files: no reload meanwhile.
        let taking_over =
            handover.as_ref().is_some_and(|h| h.requested.load(Ordering::SeqCst) || h.quiet.load(Ordering::SeqCst));
        if taking_over {
            if reload.swap(false, Ordering::SeqCst) {
                tracing::warn!("configuration not reloaded: a takeover is under way");
            }
            while let Ok(reply) = reload_rx.try_recv() {
                let report = adox_api::rest::ReloadReport {
                    error: Some("a takeover is under way: nothing reloaded".into()),
                    ..Default::default()
                };
                let _ = reply.send(report);
            }
        }
        if reload.swap(false, Ordering::SeqCst) {
            reload_config(cli, &mut running, &mut plane, &registry_again, api.as_ref(), &set_log_level);
        }
        while let Ok(reply) = reload_rx.try_recv() {
            let _ =
                reply.send(reload_config(cli, &mut running, &mut plane, &registry_again, api.as_ref(), &set_log_level));
        }
        if last_report.elapsed() >= STATS_EVERY {
            last_report = std::time::Instant::now();
            log_stats(&plane);
            if !quiet {
                save_state(&plane);
            }
        }
    }
    if handed_over {
        // The new process reads the sockets and saves the state from now on.
        tracing::info!("handed over: answering what is under way, then stopping");
        plane.drain_and_stop();
        log_stats(&plane);
        return Ok(());
    }
    tracing::info!("stopping");
    if handover.is_some() {
        // Nobody serves takeovers here any more.
        let _ = std::fs::remove_file(&handover_path);
    }
    if let Some(mut api) = api {
        api.stop();
    }
    if let Some(f) = &fleet {
        f.stop();
    }
    log_stats(&plane);
    plane.stop();
    save_state(&plane);
    Ok(())
}
