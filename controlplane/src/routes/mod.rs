//! The endpoints. Every `/v1` route needs a bearer token (admin tokens may write, read-only
//! tokens may only read); `/livez`, `/readyz` and `/metrics` need none unless
//! `protect_metrics` is set. Each client address has a token-bucket rate limit. Errors are
//! RFC 9457 problem details naming the offending field: 400 when the body is not JSON of
//! the right shape, 422 when a value means something adox refuses.
//!
//! The route table is [`ROUTES`]; a test checks it against `openapi.json`, so the
//! description cannot drift from the code.
//!
//! Here: the route table and [`router`], the state the handlers share, and the rate limit
//! and token checks in front of them. Beside it: `problem` (errors as problem details),
//! `body` (reading and taking apart request bodies), and one module per resource with its
//! handlers: `policies`, `servers`, `cache` (flush), `explain`, `dnssec` (negative trust
//! anchors), `zones` (forward, stub and local zones), `log_level`, `fleet` (`/v1/fleet`), `health` (`/livez`, `/readyz`) and `stats` (`/v1/stats`,
//! `/metrics`). The bodies they answer with out of data-plane state are built in `views`.

mod body;
mod cache;
mod dnssec;
mod explain;
mod fleet;
mod health;
mod log_level;
mod policies;
mod problem;
mod servers;
mod stats;
mod zones;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use adox_dataplane::PlaneHandle;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use self::problem::ApiError;
use crate::ApiSettings;
use crate::store::PolicyRegistry;

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
    ("get", "/v1/cache"),
    ("post", "/v1/cache/flush"),
    ("get", "/v1/log-level"),
    ("put", "/v1/log-level"),
    ("get", "/v1/dnssec/negative-anchors"),
    ("put", "/v1/dnssec/negative-anchors"),
    ("get", "/v1/zones"),
    ("put", "/v1/zones"),
    ("post", "/v1/reload"),
    ("get", "/v1/fleet"),
];

/// Clients remembered by the rate limiter; beyond this, idle ones are forgotten.
const RATE_CLIENTS: usize = 65_536;

/// What the handlers share.
pub struct AppState {
    settings: ApiSettings,
    plane: PlaneHandle,
    registry: Arc<PolicyRegistry>,
    started: Instant,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    log_level: Mutex<String>,
    tokens: Arc<std::sync::RwLock<crate::Tokens>>,
    /// What `/readyz` says an operator should know (a reload may change it).
    notes: Arc<std::sync::RwLock<Vec<String>>>,
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
        let notes = Arc::new(std::sync::RwLock::new(settings.readiness_notes.clone()));
        Self {
            settings,
            plane,
            registry,
            started: Instant::now(),
            buckets: Mutex::new(HashMap::new()),
            log_level,
            tokens,
            notes,
        }
    }

    /// The tokens in force, shared with the [`crate::ControlPlane`] that reloads them.
    pub fn tokens(&self) -> Arc<std::sync::RwLock<crate::Tokens>> {
        self.tokens.clone()
    }

    /// The readiness notes in force, shared with the [`crate::ControlPlane`] that
    /// replaces them on a reload.
    pub fn notes(&self) -> Arc<std::sync::RwLock<Vec<String>>> {
        self.notes.clone()
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

/// A JSON response (pretty, with a final newline).
fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Runs a blocking store operation (it fsyncs) off the runtime thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the operation was interrupted"))
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
        .route("/stats", get(stats::stats))
        .route("/policies", get(policies::list_policies).post(policies::create_policy))
        .route("/policies/export", get(policies::export_policies))
        .route("/policies/import", post(policies::import_policies))
        .route("/policies/{id}", get(policies::get_policy).put(policies::put_policy).delete(policies::delete_policy))
        .route("/servers", get(servers::list_servers))
        .route("/servers/{ip}", get(servers::get_server).delete(servers::reset_server))
        .route("/explain", get(explain::explain))
        .route("/cache", get(cache::show))
        .route("/cache/flush", post(cache::flush))
        .route("/log-level", get(log_level::get_log_level).put(log_level::put_log_level))
        .route("/dnssec/negative-anchors", get(dnssec::get_negative_anchors).put(dnssec::put_negative_anchors))
        .route("/zones", get(zones::get_zones).put(zones::put_zones))
        .route("/reload", post(log_level::reload))
        .route("/fleet", get(fleet::status))
        .route_layer(axum::middleware::from_fn_with_state(st.clone(), guard));
    Router::new()
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route(
            "/metrics",
            get(stats::prometheus).route_layer(axum::middleware::from_fn_with_state(st.clone(), metrics_guard)),
        )
        .nest("/v1", v1)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "method not allowed on this endpoint")
        })
        .layer(axum::middleware::from_fn_with_state(st.clone(), host_check))
        .with_state(st)
}

/// Whether a `Host` header names this API: an IP literal (with or without a port),
/// `localhost`, or one of `api.hostnames`.
fn host_allowed(host: &str, names: &[String]) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal, `[::1]:5380`.
        return rest.split_once(']').is_some_and(|(a, _)| a.parse::<std::net::Ipv6Addr>().is_ok());
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => host,
        }
    };
    let name = name.trim_end_matches('.');
    name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || names.iter().any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(name))
}

/// Refuses a request whose `Host` names another site (DNS rebinding: a page that makes
/// its own name point at the API's address must not reach it). Requests without a `Host`
/// header (HTTP/1.0 tools) pass.
async fn host_check(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).map(|h| h.to_str().unwrap_or(""));
    if let Some(h) = host
        && !host_allowed(h, &st.settings.hostnames)
    {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "unknown-host",
            format!("`{h}` is not a name of this API (IP literals, localhost and api.hostnames are)"),
        )
        .field("Host".to_string())
        .into_response();
    }
    next.run(req).await
}

/// `GET /v1/openapi.json`: the description [`ROUTES`] is checked against.
async fn openapi() -> Response {
    let mut r = (StatusCode::OK, adox_api::OPENAPI_JSON).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// The OpenAPI description lists exactly the routes the router serves.
    #[test]
    fn host_header_names_this_api_or_is_refused() {
        let names = vec!["api.resolver.example".to_string()];
        for ok in ["127.0.0.1:5380", "127.0.0.1", "[::1]:5380", "localhost:5380", "API.resolver.example", "192.0.2.1"] {
            assert!(host_allowed(ok, &names), "{ok}");
        }
        for bad in ["evil.example", "evil.example:5380", "127.0.0.1.evil.example", "[::1", ""] {
            assert!(!host_allowed(bad, &names), "{bad}");
        }
    }

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
                reload: None,
                negative_anchors_file: None,
                zones_file: None,
                readiness_notes: vec![],
                tls: None,
                hostnames: vec!["x".into()],
                fleet: None,
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
