//! The endpoints. Every `/v1` route needs a bearer token (admin tokens may write, read-only
//! tokens may only read); `/livez`, `/readyz` and `/metrics` need none unless
//! `protect_metrics` is set. Each client address has a token-bucket rate limit. Errors are
//! RFC 9457 problem details naming the offending field: 400 when the body is not JSON of
//! the right shape, 422 when a value means something adox refuses.
//!
//! The route table is [`ROUTES`]; a test checks it against `openapi.json`, so the
//! description cannot drift from the code.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use adox_api::policy::{Auth, Mode, PolicySpec, Transport};
use adox_api::rest::{
    DnssecStatus, FlushRequest, FlushResult, Health, ImportMode, LogLevel, PolicyBundle, PolicyList, Problem,
    ServerList, ServerState, SignalRecord, SignalState, Stats, TransportState, TransportStatus, WorkerLoad,
};
use adox_dataplane::PlaneHandle;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

use crate::store::{PolicyRegistry, StoreError, etag};
use crate::{ApiSettings, metrics};

/// Every route, as (method, path in OpenAPI form). `openapi.json` must describe exactly
/// these.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/livez"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
    ("get", "/v1/stats"),
    ("get", "/v1/policies"),
    ("post", "/v1/policies"),
    ("get", "/v1/policies/export"),
    ("post", "/v1/policies/import"),
    ("get", "/v1/policies/{id}"),
    ("put", "/v1/policies/{id}"),
    ("delete", "/v1/policies/{id}"),
    ("get", "/v1/servers"),
    ("get", "/v1/servers/{ip}"),
    ("delete", "/v1/servers/{ip}"),
    ("get", "/v1/explain"),
    ("post", "/v1/cache/flush"),
    ("get", "/v1/log-level"),
    ("put", "/v1/log-level"),
    ("get", "/v1/dnssec/negative-anchors"),
    ("put", "/v1/dnssec/negative-anchors"),
];

/// Negative trust anchors settable through the API at most.
const MAX_NEGATIVE_ANCHORS: usize = 10_000;

/// Clients remembered by the rate limiter; beyond this, idle ones are forgotten.
const RATE_CLIENTS: usize = 65_536;
/// Policies in one import (a bundle larger than this is split by the operator's tooling).
const MAX_IMPORT_POLICIES: usize = 1_000_000;
/// Servers listed by default by `GET /v1/servers`.
const DEFAULT_SERVER_LIMIT: usize = 1_000;

/// What the handlers share.
pub struct AppState {
    settings: ApiSettings,
    plane: PlaneHandle,
    registry: Arc<PolicyRegistry>,
    started: Instant,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    log_level: Mutex<String>,
    tokens: Arc<std::sync::RwLock<crate::Tokens>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl AppState {
    /// The state of a new server.
    pub fn new(settings: ApiSettings, plane: PlaneHandle, registry: Arc<PolicyRegistry>) -> Self {
        let log_level = Mutex::new(settings.log_level.clone());
        let tokens = Arc::new(std::sync::RwLock::new(crate::Tokens {
            admin: settings.admin_tokens.clone(),
            read: settings.read_tokens.clone(),
        }));
        Self {
            settings,
            plane,
            registry,
            started: Instant::now(),
            buckets: Mutex::new(HashMap::new()),
            log_level,
            tokens,
        }
    }

    /// The tokens in force, shared with the [`crate::ControlPlane`] that reloads them.
    pub fn tokens(&self) -> Arc<std::sync::RwLock<crate::Tokens>> {
        self.tokens.clone()
    }

    /// Whether `token` may read, and whether it may write.
    fn role(&self, token: &str) -> (bool, bool) {
        let t = self.tokens.read().unwrap_or_else(|p| p.into_inner());
        let admin = t.admin.iter().any(|k| same(k, token));
        (admin || t.read.iter().any(|k| same(k, token)), admin)
    }

    /// Takes one request from `ip`'s bucket; false when it is empty.
    fn admit(&self, ip: IpAddr) -> bool {
        let (rate, burst) = (f64::from(self.settings.rate_per_s), f64::from(self.settings.rate_burst));
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() >= RATE_CLIENTS && !b.contains_key(&ip) {
            // Forget clients whose bucket has refilled: they lose nothing.
            b.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = b.entry(ip).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

type Shared = Arc<AppState>;

/// An error response: problem details.
#[derive(Debug)]
pub struct ApiError(Problem);

impl ApiError {
    fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Self {
        Self(Problem {
            kind: format!("https://adox.invalid/problems/{kind}"),
            title: status.canonical_reason().unwrap_or("error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
        })
    }

    fn field(mut self, field: impl Into<String>) -> Self {
        self.0.field = Some(field.into());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.0).unwrap_or_default();
        let mut r = (status, body).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"adox\""));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

fn path_error(e: PathRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad-path", e.body_text())
}

fn query_error(e: QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad-query", e.body_text())
}

fn store_error(e: StoreError) -> ApiError {
    let prefix = |i: Option<usize>| i.map(|i| format!("policies[{i}].")).unwrap_or_default();
    match e {
        StoreError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not-found", e.to_string()),
        StoreError::ReadOnly(_) => ApiError::new(StatusCode::CONFLICT, "read-only", e.to_string()),
        StoreError::Conflict { index, .. } => {
            let field = index.map(|i| format!("policies[{i}]"));
            let err = ApiError::new(StatusCode::CONFLICT, "duplicate", e.to_string());
            match field {
                Some(f) => err.field(f),
                None => err,
            }
        }
        StoreError::Stale { .. } => ApiError::new(StatusCode::PRECONDITION_FAILED, "stale-etag", e.to_string()),
        StoreError::Invalid(pe, i) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-policy",
            pe.reason.clone(),
        )
        .field(format!("{}{}", prefix(i), pe.field)),
        StoreError::Io(_) => {
            tracing::error!(error = %e, "policy store");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "persistence", e.to_string())
        }
    }
}

fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Reads a body of at most `limit` bytes (413 beyond, whether declared or not).
async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    let too_big =
        || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", format!("body larger than {limit} bytes"));
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_big());
    }
    axum::body::to_bytes(body, limit).await.map_err(|_| too_big())
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad-json", format!("body is not valid JSON: {e}")))
}

/// A JSON body of at most `limit` bytes (400 when it is not JSON).
async fn read_json(headers: &HeaderMap, body: Body, limit: usize) -> Result<Value, ApiError> {
    parse_json(&read_limited(headers, body, limit).await?)
}

/// Like [`read_json`], but an empty body is an empty object.
async fn read_json_or_empty(headers: &HeaderMap, body: Body, limit: usize) -> Result<Value, ApiError> {
    let bytes = read_limited(headers, body, limit).await?;
    // JSON's whitespace only (RFC 8259 section 2), not a form feed.
    if bytes.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        return Ok(Value::Object(Default::default()));
    }
    parse_json(&bytes)
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a serde_json::Map<String, Value>, ApiError> {
    v.as_object().ok_or_else(|| {
        let e = ApiError::new(StatusCode::BAD_REQUEST, "bad-shape", "expected a JSON object");
        if path.is_empty() { e } else { e.field(path.to_string()) }
    })
}

fn typed<T: serde::de::DeserializeOwned>(v: &Value, field: String) -> Result<T, ApiError> {
    T::deserialize(v)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-field", e.to_string()).field(field))
}

/// A policy from JSON, field by field, so that an error names its field (`prefix` is the
/// path of the object, such as `policies[3].`).
fn spec_from(v: &Value, prefix: &str) -> Result<PolicySpec, ApiError> {
    let obj = object(v, prefix.trim_end_matches('.'))?;
    let mut spec = PolicySpec::default();
    for (k, val) in obj {
        let f = format!("{prefix}{k}");
        match k.as_str() {
            "zone" => spec.zone = typed::<Option<String>>(val, f)?,
            "nameserver" => spec.nameserver = typed::<Option<String>>(val, f)?,
            "address" => spec.address = typed::<Option<String>>(val, f)?,
            "mode" => spec.mode = typed::<Option<Mode>>(val, f)?,
            "transports" => spec.transports = typed::<Option<Vec<Transport>>>(val, f)?,
            "auth" => spec.auth = typed::<Option<Auth>>(val, f)?,
            "comment" => spec.comment = typed::<Option<String>>(val, f)?,
            // What GET returns may be sent back as it is (these are ignored, but must have
            // their types).
            "id" => {
                typed::<String>(val, f)?;
            }
            "read_only" => {
                typed::<bool>(val, f)?;
            }
            "revision" => {
                if val.as_i64().is_none_or(|r| r < 0) {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid-field",
                        "a revision is a whole number from 0 to 2^63-1",
                    )
                    .field(f));
                }
            }
            _ => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown-field",
                    format!("unknown field `{k}`"),
                )
                .field(f));
            }
        }
    }
    Ok(spec)
}

/// Rate limit, then authentication, for `/v1`.
async fn guard(
    State(st): State<Shared>,
    ConnectInfo(peer): ConnectInfo<crate::Peer>,
    req: Request,
    next: Next,
) -> Response {
    if !st.admit(peer.0.ip()) {
        return ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "too many requests; retry in a second")
            .into_response();
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an `Authorization: Bearer TOKEN` header is needed",
        )
        .into_response();
    };
    let (reader, admin) = st.role(token);
    if !reader {
        return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown token").into_response();
    }
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if writes && !admin {
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this token may only read").into_response();
    }
    next.run(req).await
}

/// `/metrics` when `protect_metrics` is set: any valid token.
async fn metrics_guard(State(st): State<Shared>, req: Request, next: Next) -> Response {
    if st.settings.protect_metrics {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = token.is_some_and(|t| st.role(t.trim()).0);
        if !ok {
            return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "metrics are protected: a token is needed")
                .into_response();
        }
    }
    next.run(req).await
}

/// Compares tokens in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// Builds the router.
pub fn router(st: Shared) -> Router {
    let v1 = Router::new()
        .route("/openapi.json", get(openapi))
        .route("/stats", get(stats))
        .route("/policies", get(list_policies).post(create_policy))
        .route("/policies/export", get(export_policies))
        .route("/policies/import", post(import_policies))
        .route("/policies/{id}", get(get_policy).put(put_policy).delete(delete_policy))
        .route("/servers", get(list_servers))
        .route("/servers/{ip}", get(get_server).delete(reset_server))
        .route("/explain", get(explain))
        .route("/cache/flush", post(flush))
        .route("/log-level", get(get_log_level).put(put_log_level))
        .route("/dnssec/negative-anchors", get(get_negative_anchors).put(put_negative_anchors))
        .route_layer(axum::middleware::from_fn_with_state(st.clone(), guard));
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus).route_layer(axum::middleware::from_fn_with_state(st.clone(), metrics_guard)))
        .nest("/v1", v1)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "method not allowed on this endpoint")
        })
        .with_state(st)
}

async fn livez() -> Response {
    json(StatusCode::OK, &Health { status: "ok".into(), detail: vec![] })
}

async fn readyz(State(st): State<Shared>) -> Response {
    // The control plane starts once every worker runs, so it is ready when it answers;
    // the notes say what an operator should know (they do not make it unready).
    json(StatusCode::OK, &Health { status: "ready".into(), detail: st.settings.readiness_notes.clone() })
}

async fn openapi() -> Response {
    let mut r = (StatusCode::OK, adox_api::OPENAPI_JSON).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn stats_of(st: &AppState) -> Stats {
    let workers = st
        .plane
        .stats
        .iter()
        .enumerate()
        .map(|(worker, w)| WorkerLoad {
            worker,
            queries: w.queries_udp.get() + w.queries_tcp.get(),
            cache_hits: w.cache_hits.get(),
            cache_misses: w.cache_misses.get(),
        })
        .collect();
    Stats {
        uptime_s: st.started.elapsed().as_secs(),
        totals: st.plane.stats(),
        record_cache_entries: st.plane.shared.records.len() as u64,
        record_cache_bytes: st.plane.shared.records.used_bytes() as u64,
        policies: st.plane.shared.policies.load().len() as u64,
        workers,
    }
}

async fn stats(State(st): State<Shared>) -> Response {
    json(StatusCode::OK, &stats_of(&st))
}

async fn prometheus(State(st): State<Shared>) -> Response {
    let text = metrics::render(&stats_of(&st));
    let mut r = (StatusCode::OK, text).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    r
}

fn with_etag(mut r: Response, p: &adox_api::policy::Policy) -> Response {
    if let Ok(v) = HeaderValue::from_str(&etag(p)) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

fn if_match(h: &HeaderMap) -> Option<String> {
    h.get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Runs a blocking store operation (it fsyncs) off the runtime thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the operation was interrupted"))
}

// Reads take the store's lock, which a compaction can hold for a while: they run on the
// blocking pool, so /livez, /metrics and the rest never wait behind one.
async fn list_policies(State(st): State<Shared>) -> Result<Response, ApiError> {
    let reg = st.registry.clone();
    let policies = blocking(move || reg.all()).await?;
    Ok(json(StatusCode::OK, &PolicyList { policies }))
}

async fn get_policy(State(st): State<Shared>, id: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(path_error)?;
    let reg = st.registry.clone();
    let wanted = id.clone();
    let p = blocking(move || reg.get(&wanted)).await?.ok_or_else(|| store_error(StoreError::NotFound(id)))?;
    Ok(with_etag(json(StatusCode::OK, &p), &p))
}

async fn create_policy(State(st): State<Shared>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let v = read_json(&headers, body, st.settings.max_body_bytes).await?;
    let spec = spec_from(&v, "")?;
    let reg = st.registry.clone();
    let p = blocking(move || reg.create(&spec)).await?.map_err(store_error)?;
    let mut r = with_etag(json(StatusCode::CREATED, &p), &p);
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/policies/{}", p.id)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

async fn put_policy(
    State(st): State<Shared>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(path_error)?;
    let v = read_json(&headers, body, st.settings.max_body_bytes).await?;
    let spec = spec_from(&v, "")?;
    if let Some(body_id) = v.get("id").and_then(Value::as_str)
        && body_id != id
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "id-mismatch",
            "the body's id differs from the path's",
        )
        .field("id"));
    }
    let reg = st.registry.clone();
    let m = if_match(&headers);
    let p = blocking(move || reg.replace(&id, &spec, m.as_deref())).await?.map_err(store_error)?;
    Ok(with_etag(json(StatusCode::OK, &p), &p))
}

async fn delete_policy(
    State(st): State<Shared>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(path_error)?;
    let reg = st.registry.clone();
    let m = if_match(&headers);
    blocking(move || reg.delete(&id, m.as_deref())).await?.map_err(store_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn export_policies(State(st): State<Shared>) -> Result<Response, ApiError> {
    let reg = st.registry.clone();
    let policies = blocking(move || reg.export()).await?;
    Ok(json(StatusCode::OK, &PolicyBundle { policies }))
}

async fn import_policies(
    State(st): State<Shared>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let q = q.map_err(query_error)?;
    let mode = match q.get("mode").map(String::as_str) {
        None | Some("merge") => ImportMode::Merge,
        Some("replace") => ImportMode::Replace,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad-query",
                format!("mode `{other}`: merge or replace"),
            )
            .field("mode"));
        }
    };
    let v = read_json(&headers, body, st.settings.max_import_bytes).await?;
    let obj = object(&v, "")?;
    if let Some(k) = obj.keys().find(|k| *k != "policies") {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown-field", format!("unknown field `{k}`"))
            .field(k.clone()));
    }
    let list = obj.get("policies").and_then(Value::as_array).ok_or_else(|| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-shape", "`policies` must be a list").field("policies")
    })?;
    if list.len() > MAX_IMPORT_POLICIES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-many",
            format!("at most {MAX_IMPORT_POLICIES} policies per import"),
        )
        .field("policies"));
    }
    let specs = list
        .iter()
        .enumerate()
        .map(|(i, p)| spec_from(p, &format!("policies[{i}].")))
        .collect::<Result<Vec<_>, _>>()?;
    let reg = st.registry.clone();
    let res = blocking(move || reg.import(mode, &specs)).await?.map_err(store_error)?;
    Ok(json(StatusCode::OK, &res))
}

fn servers_of(st: &AppState, only: Option<IpAddr>, limit: usize) -> ServerList {
    let shared = &st.plane.shared;
    let now = Instant::now();
    let mut by_addr: std::collections::BTreeMap<IpAddr, ServerState> = std::collections::BTreeMap::new();
    let blank = |a: IpAddr| ServerState {
        address: a.to_string(),
        srtt_us: None,
        consecutive_failures: 0,
        held_back: false,
        transports: vec![],
    };
    // One address is looked up, not found by walking every table.
    let (servers, records) = match only {
        Some(a) => (shared.servers.find(a).map(|i| (a, i)).into_iter().collect(), shared.probes.records_of(a)),
        None => (shared.servers.entries(), shared.probes.records()),
    };
    for (addr, info) in servers {
        let s = by_addr.entry(addr).or_insert_with(|| blank(addr));
        s.srtt_us = (info.srtt_us > 0).then_some(info.srtt_us);
        s.consecutive_failures = info.failures;
        s.held_back = info.held_until.is_some_and(|t| t > now);
    }
    for r in records {
        let s = by_addr.entry(r.addr).or_insert_with(|| blank(r.addr));
        let state = r.status;
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
        let mut v: Vec<SignalState> = shared
            .signals
            .entries(adox_dataplane::clock::unix_now())
            .into_iter()
            .filter_map(|(name, sig)| match sig {
                adox_dataplane::upstream::signal::Signal::Known { records, secure, dane, cycle, refused, until } => {
                    Some(SignalState {
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
                    })
                }
                adox_dataplane::upstream::signal::Signal::Pending(_) => None,
            })
            .collect();
        v.sort_by(|a, b| a.nameserver.cmp(&b.nameserver));
        v.truncate(limit);
        v
    };
    ServerList { servers: by_addr.into_values().take(limit).collect(), signals }
}

async fn list_servers(
    State(st): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let limit = match q.get("limit") {
        None => DEFAULT_SERVER_LIMIT,
        Some(l) => l.parse::<usize>().ok().filter(|n| (1..=1_000_000).contains(n)).ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad-query", "limit: a number from 1 to 1000000").field("limit")
        })?,
    };
    Ok(json(StatusCode::OK, &servers_of(&st, None, limit)))
}

fn parse_ip(ip: &str) -> Result<IpAddr, ApiError> {
    ip.parse().map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-address", format!("`{ip}` is not an IP address")).field("ip")
    })
}

async fn get_server(State(st): State<Shared>, ip: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let Path(ip) = ip.map_err(path_error)?;
    let addr = parse_ip(&ip)?;
    let list = servers_of(&st, Some(addr), 1);
    let s = list
        .servers
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not-found", format!("nothing known of {addr}")))?;
    Ok(json(StatusCode::OK, &s))
}

async fn reset_server(State(st): State<Shared>, ip: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let Path(ip) = ip.map_err(path_error)?;
    let addr = parse_ip(&ip)?;
    let a = st.plane.shared.servers.forget(addr);
    let b = st.plane.shared.probes.forget(addr);
    if !a && !b {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not-found", format!("nothing known of {addr}")));
    }
    tracing::info!(%addr, "server state reset through the API");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn flush(State(st): State<Shared>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let v = read_json_or_empty(&headers, body, st.settings.max_body_bytes).await?;
    let obj = object(&v, "")?;
    let mut req = FlushRequest::default();
    for (k, val) in obj {
        match k.as_str() {
            "name" => req.name = typed(val, k.clone())?,
            "zone" => req.zone = typed(val, k.clone())?,
            _ => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown-field",
                    format!("unknown field `{k}`"),
                )
                .field(k.clone()));
            }
        }
    }
    let parse = |field: &'static str, s: &str| {
        adox_api::policy::normalize_name(field, s)
            .ok()
            .and_then(|n| hickory_proto::rr::Name::from_ascii(&n).ok().map(|name| (n, name)))
            .ok_or_else(|| {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-field", format!("`{s}` is not a domain name"))
                    .field(field)
            })
    };
    let (what, result) = match (&req.name, &req.zone) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-field",
                "give `name` or `zone`, not both",
            )
            .field("zone"));
        }
        (Some(n), None) => {
            let (text, name) = parse("name", n)?;
            (adox_dataplane::Flush::Name(name), FlushResult { scope: "name".into(), name: Some(text) })
        }
        (None, Some(z)) => {
            let (text, name) = parse("zone", z)?;
            (adox_dataplane::Flush::Zone(name), FlushResult { scope: "zone".into(), name: Some(text) })
        }
        (None, None) => (adox_dataplane::Flush::All, FlushResult { scope: "all".into(), name: None }),
    };
    let plane = st.plane.clone();
    let done = blocking(move || plane.flush(&what)).await?;
    if !done {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "worker-busy",
            "a worker did not confirm the flush in time; the shared cache was flushed",
        ));
    }
    tracing::info!(scope = %result.scope, name = ?result.name, "cache flushed through the API");
    Ok(json(StatusCode::OK, &result))
}

async fn explain(
    State(st): State<Shared>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = q.map_err(query_error)?;
    let bad = |field: &str, detail: String| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-query", detail).field(field.to_string())
    };
    let name_text = q.get("name").ok_or_else(|| bad("name", "`name` is required".into()))?;
    let name = adox_api::policy::normalize_name("name", name_text)
        .ok()
        .and_then(|n| hickory_proto::rr::Name::from_ascii(&n).ok())
        .ok_or_else(|| bad("name", format!("`{name_text}` is not a domain name")))?;
    let qtype = match q.get("type") {
        None => hickory_proto::rr::RecordType::A,
        Some(t) => {
            parse_qtype(t).ok_or_else(|| bad("type", format!("`{t}` is not a record type (a mnemonic or a number)")))?
        }
    };
    if matches!(u16::from(qtype), 0 | 251..=255) {
        return Err(bad("type", format!("{qtype} is not a type a resolver answers")));
    }
    let wait = st.plane.shared.settings.request_timeout + std::time::Duration::from_secs(2);
    let plane = st.plane.clone();
    let result = blocking(move || plane.explain(name, qtype, wait)).await?;
    let explain = result.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "worker-busy",
            "the worker did not finish the resolution in time",
        )
    })?;
    Ok(json(StatusCode::OK, &explain))
}

async fn get_log_level(State(st): State<Shared>) -> Response {
    let level = st.log_level.lock().unwrap_or_else(|p| p.into_inner()).clone();
    json(StatusCode::OK, &LogLevel { level })
}

async fn put_log_level(State(st): State<Shared>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let v = read_json(&headers, body, st.settings.max_body_bytes).await?;
    let obj = object(&v, "")?;
    if let Some(k) = obj.keys().find(|k| *k != "level") {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown-field", format!("unknown field `{k}`"))
            .field(k.clone()));
    }
    let level: String = typed(obj.get("level").unwrap_or(&Value::Null), "level".into())?;
    adox_dataplane::log_filter_is_valid(&level)
        .and_then(|()| (st.settings.set_log_level)(&level))
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-field", e).field("level"))?;
    *st.log_level.lock().unwrap_or_else(|p| p.into_inner()) = level.clone();
    tracing::info!(%level, "log level changed through the API");
    Ok(json(StatusCode::OK, &LogLevel { level }))
}

fn negative_anchors_view(plane: &PlaneHandle) -> adox_api::rest::NegativeAnchors {
    let (config, api) = plane.negative_anchors();
    adox_api::rest::NegativeAnchors {
        config: config.iter().map(|n| n.to_ascii()).collect(),
        api: api.iter().map(|n| n.to_ascii()).collect(),
    }
}

async fn get_negative_anchors(State(st): State<Shared>) -> Response {
    json(StatusCode::OK, &negative_anchors_view(&st.plane))
}

/// Replaces the API's negative trust anchors (RFC 7646): saved to the state directory
/// first (atomically), then in force, with the caches below each changed name flushed.
async fn put_negative_anchors(State(st): State<Shared>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let v = read_json(&headers, body, st.settings.max_body_bytes).await?;
    let obj = object(&v, "")?;
    if let Some(k) = obj.keys().find(|k| *k != "anchors") {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown-field", format!("unknown field `{k}`"))
            .field(k.clone()));
    }
    let list: Vec<String> = typed(obj.get("anchors").unwrap_or(&Value::Null), "anchors".into())?;
    if list.len() > MAX_NEGATIVE_ANCHORS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field",
            format!("at most {MAX_NEGATIVE_ANCHORS} negative trust anchors"),
        )
        .field("anchors"));
    }
    let mut names: Vec<hickory_proto::rr::Name> = Vec::with_capacity(list.len());
    let mut texts: Vec<String> = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let field = format!("anchors[{i}]");
        let text = adox_api::policy::normalize_name("anchors", s).map_err(|_| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-field", format!("`{s}` is not a domain name"))
                .field(field.clone())
        })?;
        let name = hickory_proto::rr::Name::from_ascii(&text).map_err(|_| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-field", format!("`{s}` is not a domain name"))
                .field(field)
        })?;
        if !texts.contains(&text) {
            texts.push(text);
            names.push(name);
        }
    }
    let Some(path) = st.settings.negative_anchors_file.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "persistence",
            "no writable state directory: negative trust anchors cannot be kept, so changes are refused",
        ));
    };
    let body = serde_json::to_vec_pretty(&adox_api::rest::NegativeAnchorsUpdate { anchors: texts.clone() })
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let plane = st.plane.clone();
    let saved = blocking(move || {
        crate::store::write_atomic(&path, &body)?;
        plane.set_negative_anchors(names);
        Ok::<(), std::io::Error>(())
    })
    .await?;
    saved.map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "persistence", e.to_string()))?;
    tracing::info!(anchors = %texts.join(","), "negative trust anchors set through the API");
    Ok(json(StatusCode::OK, &negative_anchors_view(&st.plane)))
}

/// Parses a type as a mnemonic (`AAAA`, `svcb`) or a number (`28`, `TYPE28`).
fn parse_qtype(s: &str) -> Option<hickory_proto::rr::RecordType> {
    use std::str::FromStr;
    let upper = s.trim().to_ascii_uppercase();
    let number = upper.strip_prefix("TYPE").unwrap_or(&upper);
    if let Ok(n) = number.parse::<u16>() {
        return Some(hickory_proto::rr::RecordType::from(n));
    }
    hickory_proto::rr::RecordType::from_str(&upper).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OpenAPI description lists exactly the routes the router serves.
    #[test]
    fn openapi_describes_exactly_the_routes() {
        let doc: Value = serde_json::from_str(adox_api::OPENAPI_JSON).unwrap();
        assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.0")), Some(true));
        let mut described = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "put", "post", "delete", "patch", "head", "options"].contains(&method.as_str()) {
                    described.insert((method.clone(), path.clone()));
                }
            }
        }
        let served: std::collections::BTreeSet<(String, String)> =
            ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        assert_eq!(described, served);
    }

    /// ROUTES is what the router serves: every listed route answers something other than
    /// the 404/405 fallbacks.
    #[test]
    fn routes_table_matches_the_router() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = std::env::temp_dir().join(format!("adox-routes-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let cfg = adox_dataplane::Config::default();
            let (registry, _) = PolicyRegistry::open(&dir, vec![]).unwrap();
            let mut plane = adox_dataplane::DataPlane::start(&{
                let mut c = cfg.clone();
                c.server.listen = vec!["127.0.0.1:0".into()];
                c.server.workers = 1;
                c.server.pin_workers = false;
                c
            })
            .unwrap();
            let settings = ApiSettings {
                listen: "127.0.0.1:0".parse().unwrap(),
                admin_tokens: vec!["t".repeat(20)],
                read_tokens: vec![],
                protect_metrics: false,
                rate_per_s: 1000,
                rate_burst: 1000,
                max_body_bytes: 1 << 16,
                max_import_bytes: 1 << 20,
                log_level: "info".into(),
                set_log_level: Arc::new(|_| Ok(())),
                negative_anchors_file: None,
                readiness_notes: vec![],
                tls: None,
            };
            let mut api = crate::ControlPlane::start(settings, plane.handle(), Arc::new(registry)).unwrap();
            let addr = api.local_addr;
            for (method, path) in ROUTES {
                let path = path.replace("{id}", "p-1").replace("{ip}", "192.0.2.1");
                let req = format!(
                    "{} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    method.to_uppercase(),
                    "t".repeat(20)
                );
                let reply = tokio::task::spawn_blocking(move || {
                    use std::io::{Read, Write};
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    s.write_all(req.as_bytes()).unwrap();
                    let mut out = String::new();
                    s.read_to_string(&mut out).unwrap();
                    out
                })
                .await
                .unwrap();
                assert!(!reply.contains("no such endpoint") && !reply.contains("method-not-allowed"), "{method} {path}: {reply}");
            }
            api.stop();
            plane.stop();
            let _ = std::fs::remove_dir_all(&dir);
        });
    }
}
