//! Rate-limited logging for events a client or an authoritative server on the internet can
//! repeat at will (a bogus answer, a zone's broken signal): each call site logs at most
//! [`PER_WINDOW`] events per [`WINDOW_S`] seconds, and the first event of a window says how
//! many the last one suppressed. A flood of broken zones costs a few lines a minute, never
//! a full disk.
//!
//! ```ignore
//! crate::rate_limited!(info, %name, reason = %text, "DNSSEC bogus");
//! ```

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Seconds of one window.
pub const WINDOW_S: u64 = 10;
/// Events logged per window and call site.
pub const PER_WINDOW: u32 = 10;

/// One call site's state; lock-free, shared by every worker.
#[derive(Debug, Default)]
pub struct RateLimit {
    window: AtomicU64,
    count: AtomicU32,
    suppressed: AtomicU64,
}

impl RateLimit {
    /// A limiter with nothing logged yet.
    pub const fn new() -> Self {
        Self { window: AtomicU64::new(0), count: AtomicU32::new(0), suppressed: AtomicU64::new(0) }
    }

    /// Whether an event at Unix second `now` may be logged: `Some(n)` with the number of
    /// events suppressed since the last one logged, `None` to drop it (and count it).
    pub fn check(&self, now: u64) -> Option<u64> {
        let window = now / WINDOW_S;
        if self.window.swap(window, Ordering::Relaxed) != window {
            self.count.store(0, Ordering::Relaxed);
        }
        if self.count.fetch_add(1, Ordering::Relaxed) < PER_WINDOW {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// `tracing::$level!(...)`, at most [`PER_WINDOW`] times per [`WINDOW_S`] seconds from this
/// call site; a line after suppressed ones carries `suppressed = N`.
#[macro_export]
macro_rules! rate_limited {
    ($level:ident, $($arg:tt)+) => {{
        static LIMIT: $crate::log_limit::RateLimit = $crate::log_limit::RateLimit::new();
        if let Some(suppressed) = LIMIT.check($crate::clock::unix_now()) {
            if suppressed > 0 {
                tracing::$level!(suppressed, $($arg)+);
            } else {
                tracing::$level!($($arg)+);
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_logs_a_few_lines_per_window_and_counts_the_rest() {
        let l = RateLimit::new();
        let logged: Vec<Option<u64>> = (0..25).map(|_| l.check(1_000)).collect();
        assert_eq!(logged.iter().filter(|x| x.is_some()).count(), PER_WINDOW as usize);
        assert!(logged[..PER_WINDOW as usize].iter().all(|x| *x == Some(0)));
        // The next window's first line tells how many were dropped.
        assert_eq!(l.check(1_000 + WINDOW_S), Some(15));
        assert_eq!(l.check(1_000 + WINDOW_S), Some(0));
    }
}
