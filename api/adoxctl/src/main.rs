//! `adoxctl`: the operator's command line over the adox REST API.
//!
//! The API address, token and CA file come from `--url`/`--token`/`--ca-file` or from
//! `ADOX_API_URL`, `ADOX_API_TOKEN` and `ADOX_API_CA`. Output is a table, or the API's JSON with `--json`. Exit status: 0 on
//! success, 1 when the API refused the request (its problem details are printed), 2 on
//! usage or connection errors.

use std::process::ExitCode;

/// `println!` that ends quietly when the reader went away (`adoxctl ... | head`).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($t)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

use adox_api::policy::Policy;
use adox_api::rest::{
    Explain, ExplainStep, FleetStatus, FlushResult, ImportResult, PolicyList, Problem, ServerList, ServerState, Stats,
};
use adoxctl::{Client, Reply};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

/// Command-line client for the adox REST API.
#[derive(Debug, Parser)]
#[command(name = "adoxctl", version, about, long_about = None)]
struct Cli {
    /// API base URL [env: ADOX_API_URL; default http://127.0.0.1:5380].
    #[arg(long, global = true)]
    url: Option<String>,
    /// Bearer token [env: ADOX_API_TOKEN].
    #[arg(long, global = true)]
    token: Option<String>,
    /// PEM CA file for an https:// API [env: ADOX_API_CA; default: the web PKI roots].
    #[arg(long, global = true)]
    ca_file: Option<std::path::PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Every node of a fleet, side by side: their API URLs, comma-separated (the same
    /// token and CA for each) [env: ADOX_FLEET_URLS]. Shows each node's readiness, fleet
    /// backend, the etcd revision it applied, policies and counters, so drift shows.
    #[arg(long, value_delimiter = ',', conflicts_with = "url")]
    fleet: Vec<String>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Operator transport policies.
    #[command(subcommand)]
    Policies(PolicyCmd),
    /// Authoritative servers: transport state per address (or one address).
    Servers {
        /// One server address.
        ip: Option<String>,
        /// Forget what is known of that address (probe state, RTT).
        #[arg(long, requires = "ip")]
        reset: bool,
    },
    /// How a name is resolved: zone cuts, nameservers, transport plans and their source,
    /// what was tried, the outcome.
    Explain {
        /// The name.
        name: String,
        /// The type (mnemonic or number).
        #[arg(default_value = "A")]
        qtype: String,
    },
    /// Counters.
    Stats,
    /// What the record cache holds for a name: `cache show NAME [TYPE]`.
    Cache {
        /// `show`.
        #[arg(value_parser = ["show"])]
        action: String,
        /// The name.
        name: String,
        /// The type (mnemonic or number); default: the common types.
        qtype: Option<String>,
    },
    /// Flush the cache: everything, one name, or a zone.
    Flush {
        /// Every type at this name.
        #[arg(long, conflicts_with = "zone")]
        name: Option<String>,
        /// This name and everything below it.
        #[arg(long)]
        zone: Option<String>,
    },
    /// Read the configuration file again and put what changed in force (as SIGHUP).
    Reload,
    /// Show or set the log level.
    LogLevel {
        /// New level or filter (error, warn, info, debug, trace, or target=level,...).
        level: Option<String>,
    },
    /// Show the negative trust anchors (RFC 7646), or with `set`, replace those set
    /// through the API (`set` with no name removes them all).
    NegativeAnchors {
        /// `set` to replace the list with NAMES.
        #[arg(value_parser = ["set"])]
        action: Option<String>,
        /// Zones below which nothing is validated.
        names: Vec<String>,
    },
    /// Show the forward, stub and local zones, or with `set FILE`, replace those set
    /// through the API with the JSON list in FILE (`-`: standard input; `[]` removes them).
    Zones {
        /// `set` to replace the list.
        #[arg(value_parser = ["set"])]
        action: Option<String>,
        /// The JSON file: a list of zones, as `GET /v1/zones` shows them.
        file: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCmd {
    /// List every policy.
    List,
    /// Show one policy.
    Get {
        /// Policy id.
        id: String,
    },
    /// Create a policy.
    Create(PolicyArgs),
    /// Replace a policy.
    Update {
        /// Policy id.
        id: String,
        #[command(flatten)]
        args: PolicyArgs,
        /// Only if the policy is still at this ETag.
        #[arg(long)]
        if_match: Option<String>,
    },
    /// Delete a policy.
    Delete {
        /// Policy id.
        id: String,
    },
    /// Print the API's policies as a bundle (JSON) for `import`.
    Export,
    /// Import a bundle file (JSON `{"policies": [...]}`), all or nothing.
    Import {
        /// The file (`-` for standard input).
        file: String,
        /// Replace every API policy instead of merging.
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Debug, Args)]
struct PolicyArgs {
    /// Zone suffix.
    #[arg(long)]
    zone: Option<String>,
    /// Nameserver name suffix.
    #[arg(long)]
    nameserver: Option<String>,
    /// Nameserver address or prefix.
    #[arg(long)]
    address: Option<String>,
    /// strict, opportunistic or cleartext.
    #[arg(long)]
    mode: String,
    /// Transports in order, comma-separated (doq,dot,do53).
    #[arg(long, value_delimiter = ',')]
    transports: Vec<String>,
    /// dane, pkix or none.
    #[arg(long)]
    auth: Option<String>,
    /// DoH URI template (with `doh` in transports), e.g. /dns-query{?dns}.
    #[arg(long)]
    doh_path: Option<String>,
    /// Free text.
    #[arg(long)]
    comment: Option<String>,
}

impl PolicyArgs {
    /// The JSON body, with only the fields given (the API fills the defaults).
    fn body(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("mode".into(), json!(self.mode));
        let optional = [
            ("zone", &self.zone),
            ("nameserver", &self.nameserver),
            ("address", &self.address),
            ("auth", &self.auth),
            ("doh_path", &self.doh_path),
            ("comment", &self.comment),
        ];
        for (k, val) in optional {
            if let Some(val) = val {
                m.insert(k.into(), json!(val));
            }
        }
        if !self.transports.is_empty() {
            m.insert("transports".into(), json!(self.transports));
        }
        Value::Object(m)
    }
}

/// An error: refused by the API (exit 1) or not sent (exit 2).
enum Failure {
    Refused(String),
    Usage(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(m)) => {
            eprintln!("adoxctl: {m}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(m)) => {
            eprintln!("adoxctl: {m}");
            ExitCode::from(2)
        }
    }
}

fn call(
    c: &Client,
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Result<Reply, Failure> {
    let bytes = body.map(Value::to_string);
    let r = c
        .request(method, path, headers, bytes.as_deref().map(str::as_bytes))
        .map_err(|e| Failure::Usage(format!("cannot reach the API: {e}")))?;
    if r.status >= 400 {
        let msg = match serde_json::from_slice::<Problem>(&r.body) {
            Ok(p) => match p.field {
                Some(f) => format!("{} {}: {} (field {f})", p.status, p.title, p.detail),
                None => format!("{} {}: {}", p.status, p.title, p.detail),
            },
            Err(_) => format!("HTTP {}: {}", r.status, r.text()),
        };
        return Err(Failure::Refused(msg));
    }
    Ok(r)
}

fn parse<T: serde::de::DeserializeOwned>(r: &Reply) -> Result<T, Failure> {
    serde_json::from_slice(&r.body).map_err(|e| Failure::Usage(format!("unexpected reply ({e}): {}", r.text())))
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

fn policy_table(ps: &[Policy]) {
    let rows: Vec<[String; 7]> = ps
        .iter()
        .map(|p| {
            [
                p.id.clone(),
                opt(&p.zone).into(),
                opt(&p.nameserver).into(),
                opt(&p.address).into(),
                format!("{:?}", p.mode).to_lowercase(),
                p.transports.iter().map(|t| format!("{t:?}").to_lowercase()).collect::<Vec<_>>().join(","),
                format!("{:?}{}", p.auth, if p.read_only { " (config)" } else { "" }).to_lowercase(),
            ]
        })
        .collect();
    table(&["ID", "ZONE", "NAMESERVER", "ADDRESS", "MODE", "TRANSPORTS", "AUTH"], &rows);
}

fn table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<width$}", width = w[i])).collect();
        out!("{}", s.join("  ").trim_end());
    };
    line(head.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn server_rows(servers: &[ServerState]) {
    let mut rows = Vec::new();
    for s in servers {
        let srtt = s.srtt_us.map_or("-".into(), |us| format!("{:.1}ms", f64::from(us) / 1000.0));
        if s.transports.is_empty() {
            rows.push([s.address.clone(), srtt.clone(), "-".into(), "-".into(), "-".into()]);
        }
        for t in &s.transports {
            rows.push([
                s.address.clone(),
                srtt.clone(),
                format!("{:?}", t.transport).to_lowercase(),
                format!("{:?}", t.state).to_lowercase(),
                t.last_failure_reason.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    table(&["ADDRESS", "SRTT", "TRANSPORT", "STATE", "LAST FAILURE"], &rows);
}

/// Percent-encodes a query parameter value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print_explain(e: &Explain) {
    let dnssec = match e.dnssec {
        Some(adox_api::rest::DnssecStatus::Secure) => ", dnssec secure",
        Some(adox_api::rest::DnssecStatus::Insecure) => ", dnssec insecure",
        Some(adox_api::rest::DnssecStatus::Bogus) => ", dnssec bogus",
        None => "",
    };
    out!(
        "{} {}: {}{dnssec}{}",
        e.name,
        e.qtype,
        e.rcode,
        e.error.as_ref().map(|x| format!(" ({x})")).unwrap_or_default()
    );
    for a in &e.answers {
        out!("  {a}");
    }
    for s in &e.steps {
        match s {
            ExplainStep::Lookup { name, qtype, depth, from_cache } => {
                let pad = "  ".repeat(*depth as usize);
                out!("{pad}lookup {name} {qtype}{}", if *from_cache { " (cache)" } else { "" });
            }
            ExplainStep::Zone { zone, qname, qtype, nameservers } => {
                out!("  zone {zone}: ask {qname} {qtype} of {}", nameservers.join(" "));
            }
            ExplainStep::Exchange { nameserver, address, plan, attempts, .. } => {
                let tried: Vec<String> = attempts
                    .iter()
                    .map(|a| format!("{}={}", format!("{:?}", a.transport).to_lowercase(), a.outcome))
                    .collect();
                out!(
                    "    {nameserver}@{address} {} [{}] by {}: {}",
                    format!("{:?}", plan.mode).to_lowercase(),
                    plan.transports.iter().map(|t| format!("{t:?}").to_lowercase()).collect::<Vec<_>>().join(","),
                    plan.source,
                    tried.join(" ")
                );
            }
            ExplainStep::SignalWait { nameserver, outcome } => {
                out!("    wait for the _dns signal of {nameserver}: {outcome}");
            }
        }
    }
}

/// `adoxctl --fleet`: one row per node, from its own API. A node that cannot be reached
/// is a row saying so (and exit status 1), not the end of the table.
fn fleet_view(
    urls: &[String],
    token: Option<String>,
    ca: Option<&std::path::Path>,
    as_json: bool,
) -> Result<(), Failure> {
    let mut rows = Vec::new();
    let mut all = Vec::new();
    let mut failed = 0;
    for url in urls {
        let node = (|| -> Result<(bool, FleetStatus, Stats), String> {
            let c = Client::with_ca(url, token.clone(), ca)?;
            let ready = c.get("/readyz").map_err(|e| e.to_string())?.status == 200;
            let get = |path: &str| -> Result<Reply, String> {
                let r = c.get(path).map_err(|e| e.to_string())?;
                if r.status != 200 {
                    return Err(format!("{path}: HTTP {}", r.status));
                }
                Ok(r)
            };
            let fleet: FleetStatus = serde_json::from_slice(&get("/v1/fleet")?.body).map_err(|e| e.to_string())?;
            let stats: Stats = serde_json::from_slice(&get("/v1/stats")?.body).map_err(|e| e.to_string())?;
            Ok((ready, fleet, stats))
        })();
        match node {
            Ok((ready, f, s)) => {
                let t = &s.totals;
                let queries = t.queries_udp + t.queries_tcp;
                let hits = if queries == 0 {
                    "-".into()
                } else {
                    format!("{:.1}%", 100.0 * t.cache_hits as f64 / queries as f64)
                };
                rows.push([
                    url.clone(),
                    if ready { "ready".into() } else { "not ready".into() },
                    f.backend.clone(),
                    if f.backend == "local" {
                        "-".into()
                    } else if f.connected {
                        "up".into()
                    } else {
                        "DOWN".into()
                    },
                    if f.backend == "local" { "-".into() } else { f.applied_revision.to_string() },
                    f.policies.to_string(),
                    f.negative_anchors.to_string(),
                    queries.to_string(),
                    hits,
                    t.rcode_servfail.to_string(),
                    f.last_error.clone().filter(|_| !f.connected).unwrap_or_else(|| "-".into()),
                ]);
                all.push(json!({"url": url, "ready": ready, "fleet": f, "stats": s}));
            }
            Err(e) => {
                failed += 1;
                let mut row: [String; 11] = std::array::from_fn(|_| "-".to_string());
                row[0].clone_from(url);
                row[1] = "UNREACHABLE".into();
                row[10] = e.clone();
                rows.push(row);
                all.push(json!({"url": url, "error": e}));
            }
        }
    }
    if as_json {
        out!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
    } else {
        table(
            &[
                "NODE", "HEALTH", "BACKEND", "ETCD", "REVISION", "POLICIES", "NTAS", "QUERIES", "HITS", "SERVFAIL",
                "ERROR",
            ],
            &rows,
        );
        let revisions: std::collections::BTreeSet<&str> =
            rows.iter().filter(|r| r[2] == "etcd").map(|r| r[4].as_str()).collect();
        if revisions.len() > 1 {
            out!(
                "drift: the nodes applied different revisions ({})",
                revisions.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
    }
    if failed > 0 {
        return Err(Failure::Refused(format!("{failed} of {} nodes could not be read", urls.len())));
    }
    Ok(())
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let url = cli
        .url
        .clone()
        .or_else(|| std::env::var("ADOX_API_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:5380".into());
    let token = cli.token.clone().or_else(|| std::env::var("ADOX_API_TOKEN").ok());
    let ca = cli.ca_file.clone().or_else(|| std::env::var_os("ADOX_API_CA").map(Into::into));
    let mut fleet = cli.fleet.clone();
    if fleet.is_empty()
        && cli.command.is_none()
        && let Ok(v) = std::env::var("ADOX_FLEET_URLS")
    {
        fleet = v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    }
    let Some(command) = &cli.command else {
        if fleet.is_empty() {
            return Err(Failure::Usage("a command is needed, or --fleet URL,URL,... (see --help)".into()));
        }
        return fleet_view(&fleet, token, ca.as_deref(), cli.json);
    };
    if !fleet.is_empty() {
        return Err(Failure::Usage("--fleet shows the nodes side by side and takes no command".into()));
    }
    let c = Client::with_ca(&url, token, ca.as_deref()).map_err(Failure::Usage)?;
    let print_json = |r: &Reply| out!("{}", r.text().trim_end());
    match command {
        Cmd::Policies(p) => match p {
            PolicyCmd::List => {
                let r = call(&c, "GET", "/v1/policies", None, &[])?;
                if cli.json {
                    print_json(&r);
                } else {
                    policy_table(&parse::<PolicyList>(&r)?.policies);
                }
            }
            PolicyCmd::Get { id } => {
                let r = call(&c, "GET", &format!("/v1/policies/{id}"), None, &[])?;
                if cli.json {
                    print_json(&r);
                } else {
                    policy_table(&[parse::<Policy>(&r)?]);
                    out!("etag: {}", r.header("etag").unwrap_or("-"));
                }
            }
            PolicyCmd::Create(a) => {
                let r = call(&c, "POST", "/v1/policies", Some(&a.body()), &[])?;
                if cli.json {
                    print_json(&r);
                } else {
                    policy_table(&[parse::<Policy>(&r)?]);
                }
            }
            PolicyCmd::Update { id, args, if_match } => {
                let headers: Vec<(&str, &str)> = if_match.iter().map(|m| ("If-Match", m.as_str())).collect();
                let r = call(&c, "PUT", &format!("/v1/policies/{id}"), Some(&args.body()), &headers)?;
                if cli.json {
                    print_json(&r);
                } else {
                    policy_table(&[parse::<Policy>(&r)?]);
                }
            }
            PolicyCmd::Delete { id } => {
                call(&c, "DELETE", &format!("/v1/policies/{id}"), None, &[])?;
                if !cli.json {
                    out!("deleted {id}");
                }
            }
            PolicyCmd::Export => print_json(&call(&c, "GET", "/v1/policies/export", None, &[])?),
            PolicyCmd::Import { file, replace } => {
                let text = read_input(file)?;
                // Checked here first, so a typo is reported before anything is sent.
                let body: Value =
                    serde_json::from_str(&text).map_err(|e| Failure::Usage(format!("{file}: not JSON: {e}")))?;
                let mode = if *replace { "replace" } else { "merge" };
                let r = call(&c, "POST", &format!("/v1/policies/import?mode={mode}"), Some(&body), &[])?;
                if cli.json {
                    print_json(&r);
                } else {
                    let res: ImportResult = parse(&r)?;
                    out!(
                        "{mode}: {} created, {} updated, {} removed; {} API policies now",
                        res.created,
                        res.updated,
                        res.removed,
                        res.total
                    );
                }
            }
        },
        Cmd::Servers { ip: Some(ip), reset: true } => {
            call(&c, "DELETE", &format!("/v1/servers/{ip}"), None, &[])?;
            if !cli.json {
                out!("reset {ip}");
            }
        }
        Cmd::Servers { ip, .. } => {
            let path = ip.as_ref().map_or("/v1/servers".to_string(), |ip| format!("/v1/servers/{ip}"));
            let r = call(&c, "GET", &path, None, &[])?;
            if cli.json {
                print_json(&r);
            } else if ip.is_some() {
                server_rows(&[parse::<ServerState>(&r)?]);
            } else {
                let list: ServerList = parse(&r)?;
                server_rows(&list.servers);
                if !list.signals.is_empty() {
                    out!();
                    let rows: Vec<[String; 4]> = list
                        .signals
                        .iter()
                        .map(|s| {
                            let alpn: Vec<String> = s.records.iter().map(|r| r.alpn.join(",")).collect();
                            [
                                s.nameserver.clone(),
                                format!("{:?}", s.dnssec).to_lowercase(),
                                alpn.join(" "),
                                s.refused.join("; "),
                            ]
                        })
                        .collect();
                    table(&["NAMESERVER", "DNSSEC", "ALPN", "REFUSED"], &rows);
                }
            }
        }
        Cmd::Explain { name, qtype } => {
            let path = format!("/v1/explain?name={}&type={}", encode(name), encode(qtype));
            let r = call(&c, "GET", &path, None, &[])?;
            if cli.json {
                print_json(&r);
            } else {
                print_explain(&parse(&r)?);
            }
        }
        Cmd::Cache { action: _, name, qtype } => {
            let mut path = format!("/v1/cache?name={}", encode(name));
            if let Some(t) = qtype {
                path.push_str(&format!("&type={}", encode(t)));
            }
            let r = call(&c, "GET", &path, None, &[])?;
            if cli.json {
                print_json(&r);
            } else {
                let v: adox_api::rest::CacheView = parse(&r)?;
                if v.entries.is_empty() {
                    out!("nothing cached for {}", v.name);
                }
                for e in &v.entries {
                    let state = if e.stale { "stale".to_string() } else { format!("{} s left", e.ttl_left) };
                    let from = e.server.as_deref().map(|s| format!(", from {s}")).unwrap_or_default();
                    out!("{} {} ({}, {}, {}, {}{})", v.name, e.rtype, e.kind, state, e.dnssec, e.rank, from);
                    for rec in &e.records {
                        out!("    {rec}");
                    }
                }
            }
        }
        Cmd::Stats => {
            let r = call(&c, "GET", "/v1/stats", None, &[])?;
            if cli.json {
                print_json(&r);
            } else {
                let s: Stats = parse(&r)?;
                let t = s.totals;
                let rows = [
                    ("uptime_s", s.uptime_s),
                    ("queries_udp", t.queries_udp),
                    ("queries_tcp", t.queries_tcp),
                    ("cache_hits", t.cache_hits),
                    ("cache_misses", t.cache_misses),
                    ("servfail", t.rcode_servfail),
                    ("nxdomain", t.rcode_nxdomain),
                    ("upstream_do53_udp", t.upstream_udp),
                    ("upstream_do53_tcp", t.upstream_tcp),
                    ("upstream_dot", t.upstream_dot),
                    ("upstream_doq", t.upstream_doq),
                    ("upstream_doh", t.upstream_doh),
                    ("tls_full", t.tls_full),
                    ("tls_resumed", t.tls_resumed),
                    ("downgrades", t.downgrades),
                    ("strict_failures", t.strict_failures),
                    ("dnssec_secure", t.dnssec_secure),
                    ("dnssec_insecure", t.dnssec_insecure),
                    ("dnssec_bogus", t.dnssec_bogus),
                    ("record_cache_entries", s.record_cache_entries),
                    ("policies", s.policies),
                ];
                let rows: Vec<[String; 2]> = rows.iter().map(|(k, v)| [k.to_string(), v.to_string()]).collect();
                table(&["COUNTER", "VALUE"], &rows);
            }
        }
        Cmd::Flush { name, zone } => {
            let mut body = serde_json::Map::new();
            if let Some(n) = name {
                body.insert("name".into(), json!(n));
            }
            if let Some(z) = zone {
                body.insert("zone".into(), json!(z));
            }
            let r = call(&c, "POST", "/v1/cache/flush", Some(&Value::Object(body)), &[])?;
            if cli.json {
                print_json(&r);
            } else {
                let f: FlushResult = parse(&r)?;
                out!("flushed {}{}", f.scope, f.name.map(|n| format!(" {n}")).unwrap_or_default());
            }
        }
        Cmd::NegativeAnchors { action, names } => {
            let r = match action {
                Some(_) => call(&c, "PUT", "/v1/dnssec/negative-anchors", Some(&json!({ "anchors": names })), &[])?,
                None => call(&c, "GET", "/v1/dnssec/negative-anchors", None, &[])?,
            };
            if cli.json {
                print_json(&r);
            } else {
                let a: adox_api::rest::NegativeAnchors = parse(&r)?;
                let rows: Vec<[String; 2]> = a
                    .config
                    .iter()
                    .map(|n| [n.clone(), "config".to_string()])
                    .chain(a.api.iter().map(|n| [n.clone(), "api".to_string()]))
                    .collect();
                table(&["NAME", "SOURCE"], &rows);
            }
        }
        Cmd::Zones { action, file } => {
            let r = match (action, file) {
                (Some(_), Some(file)) => {
                    let text = read_input(file)?;
                    let zones: Value =
                        serde_json::from_str(&text).map_err(|e| Failure::Usage(format!("{file}: not JSON: {e}")))?;
                    call(&c, "PUT", "/v1/zones", Some(&json!({ "zones": zones })), &[])?
                }
                (Some(_), None) => return Err(Failure::Usage("zones set FILE: give the file (- for stdin)".into())),
                (None, _) => call(&c, "GET", "/v1/zones", None, &[])?,
            };
            if cli.json {
                print_json(&r);
            } else {
                let z: adox_api::rest::Zones = parse(&r)?;
                let rows: Vec<[String; 4]> = z
                    .config
                    .iter()
                    .map(|z| (z, "config"))
                    .chain(z.api.iter().map(|z| (z, "api")))
                    .map(|(z, source)| {
                        let kind = serde_json::to_value(z.kind).ok().and_then(|v| v.as_str().map(String::from));
                        let what = if z.servers.is_empty() {
                            format!("{} records", z.records.len())
                        } else {
                            z.servers.join(" ")
                        };
                        [z.name.clone(), kind.unwrap_or_default(), what, source.to_string()]
                    })
                    .collect();
                table(&["ZONE", "KIND", "SERVERS/DATA", "SOURCE"], &rows);
            }
        }
        Cmd::Reload => {
            let r = call(&c, "POST", "/v1/reload", None, &[])?;
            if cli.json {
                print_json(&r);
            } else {
                let rep: adox_api::rest::ReloadReport = parse(&r)?;
                out!("applied: {}", if rep.applied.is_empty() { "-".into() } else { rep.applied.join(", ") });
                for f in &rep.refused {
                    out!("refused: {}: {}", f.section, f.reason);
                }
                if !rep.needs_restart.is_empty() {
                    out!("needs a restart: {}", rep.needs_restart.join(", "));
                }
            }
        }
        Cmd::LogLevel { level } => {
            let r = match level {
                Some(l) => call(&c, "PUT", "/v1/log-level", Some(&json!({ "level": l })), &[])?,
                None => call(&c, "GET", "/v1/log-level", None, &[])?,
            };
            if cli.json {
                print_json(&r);
            } else {
                out!("{}", parse::<Value>(&r)?.get("level").and_then(Value::as_str).unwrap_or("?"));
            }
        }
    }
    Ok(())
}

/// The text of FILE, or of standard input for `-`.
fn read_input(file: &str) -> Result<String, Failure> {
    if file == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|e| Failure::Usage(e.to_string()))?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).map_err(|e| Failure::Usage(format!("{file}: {e}")))
    }
}
