//! `adoxd`: the adox recursive resolver daemon.
//!
//! Wires the data plane (and, with its issue, the control plane) into one process. With no
//! arguments it runs on its embedded defaults: built-in IANA root hints, listening on
//! 127.0.0.1:5300 over UDP and TCP.

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

    /// PEM file of CA certificates for authenticating nameservers over DoT (PKIX);
    /// default: the built-in web PKI roots.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,

    /// Directory for persistent state.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Log level (error, warn, info, debug, trace) or a filter such as
    /// adox_dataplane=debug,info.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,

    /// Open an upstream prefix that the default deny list (loopback, private, reserved
    /// space) would block, e.g. 127.0.0.0/8 for a lab. Repeatable; adds to the config.
    #[arg(long, value_name = "PREFIX", value_parser = acl::parse_prefix)]
    allow_upstream: Vec<ipnet::IpNet>,

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
    if let Some(d) = &cli.state_dir {
        cfg.server.state_dir = d.clone();
    }
    if let Some(l) = &cli.log_level {
        cfg.server.log_level = l.clone();
    }
    cfg.access.allow_upstream.extend(cli.allow_upstream.iter().map(|p| p.to_string()));
    cfg.access.allow_clients.extend(cli.allow_client.iter().map(|p| p.to_string()));
    cfg.validate().context("invalid configuration")?;
    Ok(cfg)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::CheckConfig { file }) = &cli.command {
        return match Config::load(file) {
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
        upstream_dot = s.upstream_dot,
        upstream_doq = s.upstream_doq,
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
        record_cache_entries = plane.shared.records.len(),
        "stats"
    );
}

fn save_state(plane: &DataPlane) {
    if let Err(e) = plane.save_state() {
        tracing::warn!(error = %e, "could not save state (set --state-dir to a writable directory)");
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let cfg = build_config(cli)?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cfg.server.log_level))
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let stop = adox_dataplane::stop_on_signals().context("installing signal handlers")?;
    let hints = match &cfg.resolver.root_hints {
        Some(p) => format!("root hints from {}", p.display()),
        None => "built-in IANA root hints".to_string(),
    };
    let mut plane = DataPlane::start(&cfg)?;
    let listen: Vec<String> = plane.local_addrs.iter().map(|a| a.to_string()).collect();
    tracing::info!(
        listen = %listen.join(","),
        workers = cfg.worker_count(),
        %hints,
        allow_upstream = %cfg.access.allow_upstream.join(","),
        "adoxd ready"
    );
    // Until the control plane exposes them, the counters are logged once a minute.
    let mut last_report = std::time::Instant::now();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        if last_report.elapsed() >= STATS_EVERY {
            last_report = std::time::Instant::now();
            log_stats(&plane);
            save_state(&plane);
        }
    }
    tracing::info!("stopping");
    log_stats(&plane);
    plane.stop();
    save_state(&plane);
    Ok(())
}
