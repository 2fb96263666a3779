//! The system's wall clock, read by the drivers only (the worker's loop, the daemon, the
//! control plane). The resolver, the validator and the upstream logic take time as an
//! argument (`resolver::Environment`), so tests can run them on a fake clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock seconds since the Unix epoch (0 if the clock is set before it).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
