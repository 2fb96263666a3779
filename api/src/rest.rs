//! The REST API's bodies (see `openapi.json` beside this crate for the whole description):
//! what the control plane sends and accepts and what `adoxctl` reads.

use serde::{Deserialize, Serialize};

use crate::StatsSnapshot;
use crate::policy::{Policy, PolicySpec, Transport};

/// An error, as RFC 9457 problem details (`application/problem+json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank` when the status says it all).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this request.
    pub detail: String,
    /// The offending field of the body, as a path (`policies[3].mode`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// `GET /v1/policies`: every policy, the configuration's (read-only) first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyList {
    /// The policies.
    pub policies: Vec<Policy>,
}

/// The body of export and import: policies as an operator writes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyBundle {
    /// The policies.
    pub policies: Vec<PolicySpec>,
}

/// How an import combines with the policies already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportMode {
    /// Every API policy is replaced by the bundle.
    Replace,
    /// The bundle is added; a policy with the selector (zone, nameserver, address) of an
    /// existing API policy replaces it in place (same id).
    Merge,
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportResult {
    /// The mode used.
    pub mode: ImportMode,
    /// Policies created.
    pub created: usize,
    /// Policies replaced in place.
    pub updated: usize,
    /// Policies removed (replace mode).
    pub removed: usize,
    /// API policies held afterwards.
    pub total: usize,
    /// Transactions the import was written in (fleet mode, where each is atomic but the
    /// import as a whole is not); absent in local mode, where the import is one change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<usize>,
}

/// RFC 9539 state of one (server address, encrypted transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportStatus {
    /// Never tried.
    Unknown,
    /// A probe is under way.
    Probing,
    /// The last attempt worked.
    Success,
    /// The last attempt failed (refused, TLS failure).
    Failed,
    /// The last attempt timed out.
    Timeout,
}

/// One encrypted transport of one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportState {
    /// `doq` or `dot`.
    pub transport: Transport,
    /// The state.
    pub state: TransportStatus,
    /// Whether the server is known to speak it: true after a success, false after a
    /// failure, absent while unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capable: Option<bool>,
    /// Last success, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<u64>,
    /// Last failure, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<u64>,
    /// Reason of the last failure (`refused`, `cert-name-mismatch`, `timeout`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_reason: Option<String>,
    /// Handshakes that were not resumptions (DoQ: all, as quinn does not report it).
    pub handshakes_full: u64,
    /// TLS session resumptions.
    pub handshakes_resumed: u64,
    /// Connections open now (all workers).
    pub open_connections: u32,
}

/// What adox knows of one authoritative server address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerState {
    /// The address.
    pub address: String,
    /// Smoothed round-trip time in microseconds (absent: never measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srtt_us: Option<u32>,
    /// Consecutive failures (timeouts, refusals, bad answers) over any transport.
    pub consecutive_failures: u32,
    /// Held back after repeated failures.
    pub held_back: bool,
    /// Encrypted transports tried or learned.
    pub transports: Vec<TransportState>,
}

/// One usable record of a `_dns` SVCB signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalRecord {
    /// SvcPriority.
    pub priority: u16,
    /// TargetName.
    pub target: String,
    /// ALPN identifiers.
    pub alpn: Vec<String>,
    /// Port, when the record sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// DNSSEC status of a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnssecStatus {
    /// Validated to a trust anchor.
    Secure,
    /// Not validated (no chain of trust, or validation off).
    Insecure,
    /// Failed validation: the signal is ignored.
    Bogus,
}

/// The `_dns` SVCB signal of one nameserver name (RFC 9461 keys signals by name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalState {
    /// The nameserver name.
    pub nameserver: String,
    /// DNSSEC status of the SVCB RRset.
    pub dnssec: DnssecStatus,
    /// Transports with a DNSSEC-secure TLSA RRset: with a secure SVCB, strict and
    /// authenticated with DANE.
    #[serde(default)]
    pub dane: Vec<Transport>,
    /// The lookup needed the nameserver it decides for (R5).
    pub cycle: bool,
    /// Usable records, in priority order (empty: no signal).
    pub records: Vec<SignalRecord>,
    /// Records refused, with reasons.
    pub refused: Vec<String>,
    /// Unix second at which it expires.
    pub expires: u64,
}

/// `GET /v1/servers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerList {
    /// Servers, by address.
    pub servers: Vec<ServerState>,
    /// Signals, by nameserver name.
    pub signals: Vec<SignalState>,
}

/// Load of one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerLoad {
    /// Worker index.
    pub worker: usize,
    /// Client queries received (UDP and TCP).
    pub queries: u64,
    /// Answered from the packet cache.
    pub cache_hits: u64,
    /// Sent to the resolver.
    pub cache_misses: u64,
}

/// `GET /v1/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Seconds since start.
    pub uptime_s: u64,
    /// Counters summed over workers.
    pub totals: StatsSnapshot,
    /// Entries in the shared record cache.
    pub record_cache_entries: u64,
    /// Bytes charged to the shared record cache.
    pub record_cache_bytes: u64,
    /// Operator policies in force (configuration and API).
    pub policies: u64,
    /// Per worker.
    pub workers: Vec<WorkerLoad>,
    /// The keys of each trust anchor RFC 5011 maintains (none when the anchors stand as
    /// configured).
    #[serde(default)]
    pub trust_anchor_keys: Vec<TrustAnchorKey>,
    /// RFC 5011 fetches of anchored zones' keys that a trusted key signed.
    #[serde(default)]
    pub trust_anchor_refreshes_ok: u64,
    /// RFC 5011 fetches that failed or that no trusted key signed.
    #[serde(default)]
    pub trust_anchor_refreshes_failed: u64,
    /// Each Response Policy Zone, in the order they are tried (`[rpz]`).
    #[serde(default)]
    pub policy_zones: Vec<PolicyZoneStats>,
    /// NOTIFY messages for policy zones taken from their primaries.
    #[serde(default)]
    pub rpz_notifies_accepted: u64,
    /// NOTIFY messages refused (not a policy zone of that sender).
    #[serde(default)]
    pub rpz_notifies_refused: u64,
}

/// One Response Policy Zone's state and counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyZoneStats {
    /// The zone's name.
    pub zone: String,
    /// The SOA serial in force (absent before the first load or transfer).
    pub serial: Option<u32>,
    /// Triggers in force.
    pub rules: u64,
    /// The EDE its rewrites carry (15, 16 or 17).
    pub ede: u16,
    /// Queries rewritten (or passed through) by a QNAME trigger.
    pub hits_qname: u64,
    /// Answers rewritten (or passed through) by an RPZ-IP trigger.
    pub hits_ip: u64,
    /// Answers rewritten (or passed through) by an RPZ-NSDNAME trigger.
    #[serde(default)]
    pub hits_nsdname: u64,
    /// Answers rewritten (or passed through) by an RPZ-NSIP trigger.
    #[serde(default)]
    pub hits_nsip: u64,
    /// Loads and transfers that brought a new copy.
    pub transfers_ok: u64,
    /// Loads and transfers that failed.
    pub transfers_failed: u64,
    /// Transfers that found the zone current.
    pub transfers_current: u64,
}

/// One key of a managed trust anchor (RFC 5011).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustAnchorKey {
    /// The anchored zone.
    pub zone: String,
    /// The key's tag (without the REVOKE bit).
    pub key_tag: u16,
    /// `addpend` (waiting out the add hold-down), `valid`, `missing` (trusted, not
    /// published) or `revoked`.
    pub state: String,
}

/// `POST /v1/cache/flush`: give `name` (that name, every type), `zone` (the name and
/// everything below it), or neither (everything).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlushRequest {
    /// A name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// `GET /v1/cache?name=N[&type=T]`: what the shared record cache holds for a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheView {
    /// The name, normalized.
    pub name: String,
    /// One entry per type held (without `type`: the common types, NXDOMAIN and the
    /// parent's delegation).
    pub entries: Vec<CacheEntry>,
}

/// One record cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The type (`A`, `TYPE65280`), or `NXDOMAIN` for a cached NXDOMAIN, `delegation` for
    /// the parent's NS RRset kept beside the zone's own.
    #[serde(rename = "type")]
    pub rtype: String,
    /// `rrset`, `nodata` or `nxdomain`.
    pub kind: String,
    /// The records (for a denial: its SOA and proofs), in presentation form.
    pub records: Vec<String>,
    /// Seconds of TTL left; 0 when stale.
    pub ttl_left: u32,
    /// Past its TTL, kept for serve-stale (RFC 8767).
    pub stale: bool,
    /// `secure`, `insecure`, `bogus` or `unchecked` (not validated yet).
    pub dnssec: String,
    /// Trust rank (RFC 2181 section 5.4.1): `answer-authoritative`, `answer`, `referral`,
    /// `glue` or `hint`.
    pub rank: String,
    /// The authoritative server it came from, when the resolver recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

/// What a flush dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushResult {
    /// `all`, `name` or `zone`.
    pub scope: String,
    /// The name or zone, normalized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `GET /v1/dnssec/negative-anchors` (and the answer to `PUT`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NegativeAnchors {
    /// From the configuration (`dnssec.negative_trust_anchors`): read-only here.
    pub config: Vec<String>,
    /// Set through the API; kept in the state directory across restarts.
    pub api: Vec<String>,
}

/// `GET /v1/fleet`: where this node's API state lives and how current it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// `local` (the state directory) or `etcd`.
    pub backend: String,
    /// etcd client URLs (etcd only).
    pub endpoints: Vec<String>,
    /// Key prefix (etcd only).
    pub key_prefix: String,
    /// Whether the watch on etcd is up (always true for `local`).
    pub connected: bool,
    /// Since when, seconds since the epoch.
    pub connected_since_unix: Option<u64>,
    /// The etcd revision this node's state is as of: nodes with the same one agree.
    pub applied_revision: i64,
    /// API policies in force.
    pub policies: usize,
    /// API negative trust anchors in force.
    pub negative_anchors: usize,
    /// The last error talking to etcd.
    pub last_error: Option<String>,
    /// When, seconds since the epoch.
    pub last_error_unix: Option<u64>,
    /// Times the whole prefix was loaded (start, compaction).
    pub full_loads: u64,
    /// Times the watch was set up again after an error.
    pub watch_restarts: u64,
    /// Changes applied from the watch.
    pub events_applied: u64,
    /// API writes etcd accepted through this node.
    pub writes_ok: u64,
    /// API writes refused for want of etcd (503).
    pub writes_failed: u64,
    /// Probe results this node published for the others (`share_probes`).
    #[serde(default)]
    pub probes_published: u64,
    /// Other nodes' probe results this node took (newer than its own).
    #[serde(default)]
    pub probes_taken: u64,
}

/// `PUT /v1/dnssec/negative-anchors`: the new list of API-set anchors (replaces it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NegativeAnchorsUpdate {
    /// Names (zones) below which nothing is validated (RFC 7646).
    pub anchors: Vec<String>,
}

/// What a configured zone does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZoneKind {
    /// Questions at and below the zone go to `servers` with RD set (they recurse).
    Forward,
    /// Resolution at and below the zone starts at `servers` (authoritative), without RD.
    Stub,
    /// Answered from `records` here.
    Local,
}

/// How a local zone answers names it has no records for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalKind {
    /// NXDOMAIN (NODATA for a name that has other types), as Unbound's `static`.
    #[default]
    Static,
    /// Every name in the zone gets the apex's records (a walled garden), as Unbound's
    /// `redirect`.
    Redirect,
}

/// One forward, stub or local zone (`[[zones]]` in the configuration, or through
/// `PUT /v1/zones`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSpec {
    /// The zone's name.
    pub name: String,
    /// `forward`, `stub` or `local`.
    pub kind: ZoneKind,
    /// Forward and stub: server addresses, each `ADDRESS` or `ADDRESS#NAME` (the name
    /// authenticates the server under an encrypted transport policy and appears in
    /// explain output).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// Not validated (a negative trust anchor at the zone): for internal zones the public
    /// chain of trust denies.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// Local: how names without records are answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalKind>,
    /// Local: records in zone-file syntax, `NAME [TTL] [IN] TYPE RDATA`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<String>,
}

/// `GET /v1/zones` (and the answer to `PUT`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zones {
    /// From the configuration (`[[zones]]`): read-only here.
    pub config: Vec<ZoneSpec>,
    /// Set through the API; kept in the state directory across restarts.
    pub api: Vec<ZoneSpec>,
}

/// `PUT /v1/zones`: the new list of API-set zones (replaces it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZonesUpdate {
    /// The zones.
    pub zones: Vec<ZoneSpec>,
}

/// `POST /v1/reload` (and what a SIGHUP did, in the log): the configuration file read
/// again and what changed put in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Why nothing was reloaded (the file is unreadable or invalid: the running
    /// configuration stays whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Sections (or parts) changed and now in force.
    pub applied: Vec<String>,
    /// Sections changed but refused, each with the reason (the running one stays).
    pub refused: Vec<RefusedSection>,
    /// Sections changed that take effect at the next restart only.
    pub needs_restart: Vec<String>,
}

/// A section a reload did not put in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedSection {
    /// The section.
    pub section: String,
    /// Why.
    pub reason: String,
}

/// `GET` and `PUT /v1/log-level`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLevel {
    /// A level (`error` ... `trace`) or a filter (`adox_dataplane=debug,info`).
    pub level: String,
}

/// `/livez` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`, `ready` or `not-ready`.
    pub status: String,
    /// Remarks an operator should see (for example missing trust anchors).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detail: Vec<String>,
}

/// The transport plan for one (zone, nameserver, address), as explain shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanView {
    /// The mode.
    pub mode: crate::policy::Mode,
    /// Transports in order.
    pub transports: Vec<Transport>,
    /// Authentication.
    pub auth: crate::policy::Auth,
    /// Where the decision came from: `override:ID`, `signal:insecure`, `probe:use`,
    /// `probe:probe`, `probe:skip`, or `default`.
    pub source: String,
    /// What the operator should know about the deciding policy (a strict PKIX policy
    /// without a nameserver pin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// One try over one transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// `doq`, `dot`, `do53`.
    pub transport: Transport,
    /// `ok`, or the failure reason (`refused`, `cert-name-mismatch`, `timeout`, ...).
    pub outcome: String,
}

/// One step of a resolution, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum ExplainStep {
    /// A name and type looked up (the question, a CNAME target, a nameserver address).
    Lookup {
        /// The name.
        name: String,
        /// The type.
        qtype: String,
        /// Nesting: 0 for the question and its chain, more for nameserver addresses.
        depth: u32,
        /// Answered from the record cache without asking anyone.
        from_cache: bool,
    },
    /// A zone cut asked: the closest known delegation for the name.
    Zone {
        /// The zone.
        zone: String,
        /// The name asked of it (QNAME minimisation may shorten it).
        qname: String,
        /// The type asked.
        qtype: String,
        /// Its nameservers.
        nameservers: Vec<String>,
    },
    /// One query to one nameserver address.
    Exchange {
        /// The zone.
        zone: String,
        /// The nameserver name.
        nameserver: String,
        /// The address.
        address: String,
        /// The plan and why.
        plan: PlanView,
        /// What was tried, in order.
        attempts: Vec<Attempt>,
    },
    /// A wait for a nameserver's `_dns` signal before the first query to it
    /// (`transport.signal_wait`).
    SignalWait {
        /// The nameserver.
        nameserver: String,
        /// `learnt`, `timeout`, `cycle` (not waited: the signal's lookup waits, through
        /// other signal lookups, for the one this resolution serves) or `too_deep` (not
        /// waited: signal lookups already wait one for the next as deep as allowed).
        outcome: String,
    },
}

/// `GET /v1/explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explain {
    /// The name, normalized.
    pub name: String,
    /// The type.
    pub qtype: String,
    /// The RCODE a client would get (`NOERROR`, `NXDOMAIN`, `SERVFAIL`, ...).
    pub rcode: String,
    /// Why it failed, when it did (the Extended DNS Error's text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The DNSSEC status of the answer (absent when resolution failed before one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dnssec: Option<DnssecStatus>,
    /// The answer records, in presentation format.
    pub answers: Vec<String>,
    /// The path, in order. Empty when the whole answer came from the cache: flush the name
    /// first to see the path again.
    pub steps: Vec<ExplainStep>,
    /// The response policy (RPZ) that rewrites what a client gets: the policy zone, the
    /// trigger and where it matched, and the action (absent when none applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}
