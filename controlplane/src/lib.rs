//! adox-controlplane: the REST control plane.
//!
//! It runs on one thread of its own with a single-threaded tokio runtime and axum, beside
//! the data plane's workers, and reaches them only through what they share: the policy
//! [`adox_dataplane::upstream::policy::PolicyStore`] (an `ArcSwap` it replaces), the per-worker
//! counters it sums on read, the probe, server and signal tables, and each worker's mailbox
//! for cache flushes. Nothing here runs on a worker, and nothing a worker does waits on it.
//!
//! - [`store`]: the policy store, durable in the state directory.
//! - [`routes`]: the endpoints, authentication, limits and problem+json errors.
//! - `views`: the REST bodies built out of data-plane state (the only place that does).
//! - [`metrics`]: the Prometheus exposition.

use std::net::SocketAddr;
use std::sync::Arc;

use adox_dataplane::PlaneHandle;

pub mod fleet;
pub mod metrics;
pub mod routes;
pub mod store;
pub mod tls;
mod views;

pub use store::PolicyRegistry;

/// Changes the daemon's log filter at run time (the daemon owns the logger); returns the
/// reason when the filter is refused.
pub type SetLogLevel = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Reads the configuration file again and puts what changed in force, as SIGHUP does
/// (the daemon owns the running configuration).
pub type Reload = Arc<dyn Fn() -> adox_api::rest::ReloadReport + Send + Sync>;

/// How the API runs.
#[derive(Clone)]
pub struct ApiSettings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Tokens allowed to read and write.
    pub admin_tokens: Vec<String>,
    /// Tokens allowed to read only.
    pub read_tokens: Vec<String>,
    /// Whether `/metrics` needs a token too.
    pub protect_metrics: bool,
    /// Requests per second each client address may make (sustained).
    pub rate_per_s: u32,
    /// Requests a client address may make in a burst.
    pub rate_burst: u32,
    /// Largest body for single-object endpoints.
    pub max_body_bytes: usize,
    /// Largest body for a bulk import.
    pub max_import_bytes: usize,
    /// The log filter in force at start.
    pub log_level: String,
    /// Sets the log filter.
    pub set_log_level: SetLogLevel,
    /// Reloads the configuration (`POST /v1/reload`); `None`: the route answers 503.
    pub reload: Option<Reload>,
    /// Remarks `/readyz` passes on (for example missing trust anchors).
    pub readiness_notes: Vec<String>,
    /// TLS for the API (see [`tls::server_config`]); `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Where the negative trust anchors set through the API are kept (`None`: no state
    /// directory, and changes are refused).
    pub negative_anchors_file: Option<std::path::PathBuf>,
    /// Where the zones set through the API are kept (`None`: changes are refused).
    pub zones_file: Option<std::path::PathBuf>,
    /// Names the API may be reached by besides IP literals and `localhost` (`api.hostnames`).
    pub hostnames: Vec<String>,
    /// Fleet mode: policy and negative-anchor writes go to etcd (`None`: local mode).
    pub fleet: Option<Arc<fleet::Fleet>>,
}

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("listen", &self.listen)
            .field("admin_tokens", &self.admin_tokens.len())
            .field("read_tokens", &self.read_tokens.len())
            .field("protect_metrics", &self.protect_metrics)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// The bearer tokens in force; replaced whole on reload (SIGHUP).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// May read and write.
    pub admin: Vec<String>,
    /// May only read.
    pub read: Vec<String>,
}

/// Reads a token file: one token per line, `#` starts a comment, blank lines ignored.
/// Tokens shorter than 16 characters are refused: they can be guessed. So is a file other
/// users may read, or anyone but its owner and group may write: the tokens in it are
/// secrets (as ssh refuses a private key others can read).
pub fn read_token_file(path: &std::path::Path) -> Result<Vec<String>, String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.permissions().mode();
    if mode & 0o006 != 0 || mode & 0o020 != 0 {
        return Err(format!(
            "{}: other users may read or write it (mode {:03o}); `chmod 600` it",
            path.display(),
            mode & 0o777
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.split('#').next().unwrap_or("").trim();
        if t.is_empty() {
            continue;
        }
        if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{} line {}: a token is one word of at least 16 characters", path.display(), i + 1));
        }
        out.push(t.to_string());
    }
    Ok(out)
}

/// The client's address, for the rate limiter (axum's connect info, over TCP or TLS).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tls::TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tls::TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// How long requests in progress may run on after a stop.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    /// The address actually bound.
    pub local_addr: SocketAddr,
    tokens: Arc<std::sync::RwLock<Tokens>>,
    /// What `/readyz` says an operator should know.
    notes: Arc<std::sync::RwLock<Vec<String>>>,
    /// The TLS configuration in force (`None`: plain HTTP).
    tls: Option<tls::CurrentConfig>,
    /// The certificate and key files' contents last loaded by a reload.
    tls_files: std::sync::Mutex<Option<Vec<u8>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlPlane {
    /// Binds the API (in the calling thread, so that a busy port is an error at start) and
    /// serves it on a thread of its own.
    pub fn start(settings: ApiSettings, plane: PlaneHandle, registry: Arc<PolicyRegistry>) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(settings.listen)
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {} (api): {e}", settings.listen)))?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let tls: Option<tls::CurrentConfig> = settings.tls.clone().map(|c| Arc::new(std::sync::RwLock::new(c)));
        let tls_in_force = tls.clone();
        let state = Arc::new(routes::AppState::new(settings, plane, registry));
        let tokens = state.tokens();
        let notes = state.notes();
        let app = routes::router(state);
        let thread = std::thread::Builder::new().name("adox-api".into()).spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "api listener");
                        return;
                    }
                };
                match tls {
                    Some(config) => match tls::TlsListener::new(listener, config) {
                        Ok(l) => serve(l, app, rx).await,
                        Err(e) => tracing::error!(error = %e, "api listener"),
                    },
                    None => serve(listener, app, rx).await,
                }
            });
        })?;
        Ok(Self {
            local_addr,
            tokens,
            tls: tls_in_force,
            tls_files: std::sync::Mutex::new(None),
            notes,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// Replaces what `/readyz` says an operator should know (a reload changed it).
    pub fn set_readiness_notes(&self, notes: Vec<String>) {
        *self.notes.write().unwrap_or_else(|p| p.into_inner()) = notes;
    }

    /// Replaces the tokens (a reload): requests from now on are checked against these.
    pub fn set_tokens(&self, tokens: Tokens) {
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = tokens;
    }

    /// Reads the TLS certificate and key again (a reload, e.g. after a renewal): when
    /// their contents changed, handshakes from now on use them; connections already open
    /// keep theirs. `Ok(None)` when the API serves plain HTTP (turning TLS on takes a
    /// restart), `Ok(Some(false))` when the files are the ones in force; an error (and the
    /// running pair stays) when they do not load.
    pub fn reload_tls(&self, cert: &std::path::Path, key: &std::path::Path) -> Result<Option<bool>, String> {
        let Some(current) = &self.tls else { return Ok(None) };
        let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let mut files = read(cert)?;
        files.extend(read(key)?);
        let mut loaded = self.tls_files.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.as_ref() == Some(&files) {
            return Ok(Some(false));
        }
        let config = tls::server_config(cert, key)?;
        *current.write().unwrap_or_else(|p| p.into_inner()) = config;
        *loaded = Some(files);
        Ok(Some(true))
    }

    /// Stops serving and waits for the thread.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves until `stop` fires; then requests in progress get [`SHUTDOWN_GRACE`] to finish,
/// and idle keep-alive connections do not hold the daemon up.
async fn serve<L>(listener: L, app: axum::Router, stop: tokio::sync::oneshot::Receiver<()>)
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    Peer: for<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    let drain = Arc::new(tokio::sync::Notify::new());
    let drain2 = drain.clone();
    let serve = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
        .with_graceful_shutdown(async move { drain2.notified().await });
    tokio::select! {
        r = IntoFuture::into_future(serve) => {
            if let Err(e) = r {
                tracing::error!(error = %e, "api server stopped");
            }
        }
        () = async {
            let _ = stop.await;
            drain.notify_one();
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {}
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}
