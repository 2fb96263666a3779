//! The client front door: one pure decision per client message, before any cache or
//! resolver work. A message is dropped (a response, a runt), rejected at once with a
//! header-only answer (REFUSED for a client outside the ACL or a question a recursive
//! resolver does not serve, NOTIMP, FORMERR, BADVERS), or let in as a query, whose parsed
//! form is carried from here to the packet cache, the resolver and the response. Also the
//! overload signal (`LoadMeter`): a worker with no idle time left, busy resolving.

use crate::ede::Ede;
use crate::wire::{self, QueryError, ResponseEdns, rcode};

/// A header-only answer given at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rejection {
    /// The RCODE's low 4 bits.
    pub(crate) rcode: u8,
    /// Where the question ends in the message (the header only when it did not parse).
    pub(crate) question_end: usize,
    /// The OPT record to send, if any.
    pub(crate) edns: Option<ResponseEdns<'static>>,
    /// The client is outside `access.allow_clients` (counted as `refused_acl`).
    pub(crate) refused_acl: bool,
}

/// What the door decided.
#[derive(Debug, Clone)]
pub(crate) enum Verdict {
    /// Not answered at all (a response, a runt).
    Drop,
    /// Answered at once with a header-only response.
    Reject(Rejection),
    /// A query for the packet cache and, on a miss, the resolver.
    Query(wire::Query),
}

/// Decides what to do with one client message. `allowed`: the client ACL's word on the
/// sender; `udp_size`: our advertised EDNS size.
pub(crate) fn classify(msg: &[u8], allowed: bool, udp_size: u16) -> Verdict {
    let q = match wire::parse_query(msg) {
        Ok(q) => q,
        Err(QueryError::Drop) => return Verdict::Drop,
        Err(e) => {
            // Malformed queries from refused clients get REFUSED too: nothing but REFUSED.
            let (rc, hi) = match (allowed, e) {
                (false, _) => (rcode::REFUSED, 0),
                (true, QueryError::NotImp) => (rcode::NOTIMP, 0),
                (true, QueryError::BadVers) => ((rcode::BADVERS & 0xF) as u8, (rcode::BADVERS >> 4) as u8),
                (true, _) => (rcode::FORMERR, 0),
            };
            let edns = (e == QueryError::BadVers && allowed).then_some(ResponseEdns {
                udp_size,
                dnssec_ok: false,
                rcode_high: hi,
                ede: None,
            });
            return Verdict::Reject(Rejection {
                rcode: rc,
                question_end: wire::HEADER_LEN,
                edns,
                refused_acl: !allowed,
            });
        }
    };
    let edns = |ede: Option<(Ede, &'static str)>| {
        q.edns.map(|c| ResponseEdns { udp_size, dnssec_ok: c.dnssec_ok, rcode_high: 0, ede })
    };
    if !allowed {
        let edns = edns(Some((Ede::Prohibited, "client address not allowed")));
        return Verdict::Reject(Rejection {
            rcode: rcode::REFUSED,
            question_end: q.question_end,
            edns,
            refused_acl: true,
        });
    }
    // Zone transfers and meta queries are not a recursive resolver's business, nor is OPT
    // (a pseudo-record, never data: the record cache keys delegations by it); only class
    // IN is resolved.
    if q.qclass != 1 || matches!(q.qtype, 41 | 251..=254) {
        return Verdict::Reject(Rejection {
            rcode: rcode::REFUSED,
            question_end: q.question_end,
            edns: edns(None),
            refused_acl: false,
        });
    }
    Verdict::Query(q)
}

/// How busy the worker's thread is, per window of [`LoadMeter::WINDOW`]: the time it waits
/// for events (idle) and the time it runs resolutions (tasks and timers). A worker with no
/// idle time to speak of, most of it spent resolving, for longer than the overload
/// threshold is past its capacity (CPU, or a CPU quota) for cache misses: more admitted
/// misses would only make every resolution late. Slow or silent authoritative servers cost
/// waiting, not CPU, and a flood of junk or hits costs time outside resolution, so neither
/// makes the worker drop other clients' misses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadMeter {
    window_start: std::time::Instant,
    idle: std::time::Duration,
    resolving: std::time::Duration,
    saturated_since: Option<std::time::Instant>,
}

impl LoadMeter {
    /// The measuring window.
    pub(crate) const WINDOW: std::time::Duration = std::time::Duration::from_millis(50);
    /// Idle time below this share of a window counts as saturated (1/20: 5 %).
    const IDLE_SHARE: u32 = 20;

    pub(crate) fn new(now: std::time::Instant) -> Self {
        Self {
            window_start: now,
            idle: std::time::Duration::ZERO,
            resolving: std::time::Duration::ZERO,
            saturated_since: None,
        }
    }

    /// One turn of the event loop ended at `now`: it waited `waited` for events and ran
    /// resolutions for `resolving`.
    pub(crate) fn turn(
        &mut self,
        now: std::time::Instant,
        waited: std::time::Duration,
        resolving: std::time::Duration,
    ) {
        self.idle += waited;
        self.resolving += resolving;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < Self::WINDOW {
            return;
        }
        if self.idle < elapsed / Self::IDLE_SHARE && self.resolving >= elapsed / 2 {
            self.saturated_since.get_or_insert(self.window_start);
        } else {
            self.saturated_since = None;
        }
        self.window_start = now;
        self.idle = std::time::Duration::ZERO;
        self.resolving = std::time::Duration::ZERO;
    }

    /// Past capacity: saturated without a break for more than `after`.
    pub(crate) fn overloaded(&self, now: std::time::Instant, after: std::time::Duration) -> bool {
        self.saturated_since.is_some_and(|t| now.saturating_duration_since(t) > after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `a.` of `qtype`/`qclass`, with an OPT record when `edns`.
    fn query(qtype: u16, qclass: u16, edns: bool) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)];
        m.extend_from_slice(&[1, b'a', 0]);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&qclass.to_be_bytes());
        if edns {
            m.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
        }
        m
    }

    fn rejected(v: Verdict) -> Rejection {
        match v {
            Verdict::Reject(r) => r,
            other => panic!("not rejected: {other:?}"),
        }
    }

    #[test]
    fn an_allowed_in_query_goes_in() {
        assert!(matches!(classify(&query(1, 1, true), true, 1232), Verdict::Query(q) if q.qtype == 1));
    }

    #[test]
    fn a_refused_client_gets_refused_with_ede_18_whatever_it_sent() {
        let r = rejected(classify(&query(1, 1, true), false, 1232));
        assert_eq!((r.rcode, r.refused_acl), (rcode::REFUSED, true));
        assert_eq!(r.edns.and_then(|e| e.ede).map(|(e, _)| e), Some(Ede::Prohibited));
        // Malformed from a refused client: REFUSED too.
        let mut bad = query(1, 1, false);
        bad.truncate(14);
        let r = rejected(classify(&bad, false, 1232));
        assert_eq!((r.rcode, r.refused_acl), (rcode::REFUSED, true));
    }

    #[test]
    fn zone_transfers_meta_queries_and_other_classes_are_refused() {
        for (qtype, qclass) in [(252, 1), (251, 1), (253, 1), (41, 1), (1, 3)] {
            let r = rejected(classify(&query(qtype, qclass, false), true, 1232));
            assert_eq!((r.rcode, r.refused_acl, r.edns), (rcode::REFUSED, false, None), "{qtype}/{qclass}");
        }
    }

    #[test]
    fn malformed_queries_get_formerr_and_responses_are_dropped() {
        let mut bad = query(1, 1, false);
        bad.truncate(14);
        assert_eq!(rejected(classify(&bad, true, 1232)).rcode, rcode::FORMERR);
        let mut response = query(1, 1, false);
        response[2] |= 0x80;
        assert!(matches!(classify(&response, true, 1232), Verdict::Drop));
    }

    #[test]
    fn only_a_worker_busy_resolving_without_idle_time_is_overloaded() {
        use std::time::{Duration, Instant};
        let (t0, after) = (Instant::now(), Duration::from_millis(200));
        let ms = Duration::from_millis;
        let mut m = LoadMeter::new(t0);
        // 80 % busy (10 ms idle per 50 ms window) for a second: not overload.
        for i in 1..=20 {
            m.turn(t0 + ms(50 * i), ms(10), ms(35));
        }
        assert!(!m.overloaded(t0 + ms(1000), after));
        // No idle time, but the time goes to junk or hits, not resolutions: not overload.
        for i in 21..=30 {
            m.turn(t0 + ms(50 * i), Duration::ZERO, ms(10));
        }
        assert!(!m.overloaded(t0 + ms(1500), after));
        // No idle time, mostly resolving, from 1500 ms on: overload once it lasts over 200 ms.
        for i in 31..=34 {
            m.turn(t0 + ms(50 * i), Duration::ZERO, ms(40));
        }
        assert!(!m.overloaded(t0 + ms(1700), after));
        m.turn(t0 + ms(1750), Duration::ZERO, ms(40));
        assert!(m.overloaded(t0 + ms(1750), after));
        // One window with some idle time ends it.
        m.turn(t0 + ms(1800), ms(5), ms(40));
        assert!(!m.overloaded(t0 + ms(1800), after));
        // A long idle wait (nothing to do) is not overload either.
        m.turn(t0 + ms(61_800), Duration::from_secs(60), Duration::ZERO);
        assert!(!m.overloaded(t0 + ms(61_800), after));
    }
}
