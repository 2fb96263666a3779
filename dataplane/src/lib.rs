//! adox-dataplane: the resolver's data plane.
//!
//! Architecture, in the order a query meets it:
//! - [`worker`]: N pinned threads, each with its own `mio::Poll` and SO_REUSEPORT UDP and
//!   TCP sockets; the kernel spreads clients over them. No lock between packet in and
//!   cached answer out: the [`cache::packet`] cache is per worker.
//! - [`wire`]: allocation-free parsing of the client's header, question and OPT record.
//! - [`resolver`]: iterative resolution as `async` code over an [`resolver::Upstream`]
//!   (the worker's Do53 sockets in production, a fake authority in tests).
//! - [`cache::records`]: the shared, sharded RRset/negative/delegation cache below.
//! - [`upstream`]: the encrypted-upstream wing: transport policy, RFC 9539 probing,
//!   signals, the plan, TLS/DANE, and the DoT/DoQ protocols and their connection pool.
//! - [`respond`]: the response, its RCODE and Extended DNS Error, sized to the client.
//! - [`acl`], [`config`], [`stats`], [`daemon`] (start and stop).
//!
//! Invariants: nothing from the network can panic a worker (parsers return errors); the
//! only `unsafe` is in `sys` (and, with the `xdp` feature, in `xdp`'s rings and libbpf calls).

pub mod acl;
pub mod admission;
pub mod cache {
    //! Caches: the per-worker packet cache over the shared record cache.
    pub mod charge;
    pub mod clock;
    pub mod nsec_spans;
    pub mod packed;
    pub mod packet;
    pub mod records;

    /// Frees `what` (a cache emptied at once by a reload, possibly gigabytes) on a thread
    /// of its own, away from the locks and event loops that emptied it.
    pub(crate) fn drop_elsewhere<T: Send + 'static>(what: T) {
        let spawned = std::thread::Builder::new().name("adox-free".into()).spawn(move || drop(what));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no thread to free an emptied cache on; it is freed here");
        }
    }
}
pub mod clock;
pub mod config;
pub mod daemon;
pub mod dnssec;
pub mod dnstap;
pub mod ede;
#[doc(hidden)]
pub mod fuzzing;
pub mod handover;
pub mod log_limit;
pub(crate) mod names;
pub mod resolver;
pub mod respond;
pub mod rpz;
pub mod state_file;
pub mod stats;
mod sys;
pub mod upstream;
pub mod wire;
pub(crate) mod worker;
pub mod xdp;

pub use config::Config;
pub use daemon::{DataPlane, Flush, PlaneHandle};

/// Checks a log level or tracing filter (`info`, `adox_dataplane=debug,warn`) without
/// depending on a logging crate: every directive is a level or `target=level`.
pub fn log_filter_is_valid(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    if filter.trim().is_empty() {
        return Err("empty log level".into());
    }
    for directive in filter.split(',') {
        let (target, level) = match directive.split_once('=') {
            Some((t, l)) => (Some(t.trim()), l.trim()),
            None => (None, directive.trim()),
        };
        let target_ok = target
            .is_none_or(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'));
        if !target_ok || !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!("`{directive}` is not a level (off, error, warn, info, debug, trace) or target=level"));
        }
    }
    Ok(())
}

/// Installs SIGINT and SIGTERM handlers that set a flag; returns the flag.
pub fn stop_on_signals() -> std::io::Result<&'static std::sync::atomic::AtomicBool> {
    sys::install_stop_signals()
}

/// Installs a SIGHUP handler that sets a flag (the daemon clears it when it has reloaded).
pub fn reload_on_sighup() -> std::io::Result<&'static std::sync::atomic::AtomicBool> {
    sys::install_reload_signal()
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_filters() {
        for ok in ["info", "WARN", "adox_dataplane=debug,warn", "off"] {
            assert!(super::log_filter_is_valid(ok).is_ok(), "{ok}");
        }
        for bad in ["", "loud", "x=loud", "=info", "info,,"] {
            assert!(super::log_filter_is_valid(bad).is_err(), "{bad}");
        }
    }
}
