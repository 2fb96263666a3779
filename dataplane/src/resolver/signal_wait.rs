//! Waiting for a nameserver's `_dns` signal before the first query to it
//! (`transport.signal_wait`), so that a server that demands encryption never sees even
//! that query in cleartext; and the cycles such waits could close (R5).
//!
//! The lookup itself is an ordinary task (`discovery.rs`); a query that needs the signal
//! waits for it here, woken when this worker's lookup ends, and looks at the shared cache
//! again every [`LOOK_AGAIN`] in case the lookup runs on another worker. Waits of signal
//! lookups for each other are recorded in the shared wait graph
//! (`SignalCache::start_wait`): a lookup that would wait, directly or through others, for
//! itself does not wait, and asks the server it needs encrypted first
//! (`plan::encrypted_first`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hickory_proto::rr::{Name, RecordType};

use super::trace::TraceStep;
use super::{Budget, Resolver, Upstream};
use crate::cache::records::Kind;
use crate::config::SignalWait;
use crate::dnssec::Security;
use crate::names::{canonical, parent};
use crate::upstream::plan::{TransportPlan, encrypted_first};
use crate::upstream::signal::{Signal, WaitRefused};
use adox_api::policy::Transport;

/// How often a waiting query looks at the shared cache again (the lookup it waits for may
/// run on another worker, which cannot wake it).
const LOOK_AGAIN: Duration = Duration::from_millis(20);

/// Queries one worker lets wait for signals at once; past it a query goes out under what
/// is known at once: a flood of fresh nameserver names cannot pile up waiters.
pub(crate) const MAX_WAITERS: usize = 1024;
/// Nameservers a worker remembers having waited for in vain (while their lookup is still
/// under way, further queries do not wait for it again); past it the memory starts over.
const MAX_GAVE_UP: usize = 4096;
/// How long a wait given up on stops later queries from waiting for the same lookup (a
/// lookup is started again after as long: `signal::PENDING_FOR`).
const GAVE_UP_FOR: Duration = Duration::from_secs(30);

/// The queries of one worker waiting for signals, by nameserver name, woken when this
/// worker's lookup of that signal ends.
#[derive(Debug, Default)]
pub(crate) struct SignalWaiters {
    waiting: RefCell<HashMap<Name, Vec<(u64, Waker)>>>,
    /// Waiters registered now (across names).
    count: Cell<usize>,
    next_id: Cell<u64>,
    /// Nameservers whose signal a query of this worker waited for until its bound: a
    /// lookup that slow (a server that drops the queries) is not waited for again.
    gave_up: RefCell<HashMap<Name, std::time::Instant>>,
}

impl SignalWaiters {
    /// Wakes every query of this worker waiting for `ns`'s signal (its lookup ended).
    pub(crate) fn wake(&self, ns: &Name) {
        self.gave_up.borrow_mut().remove(ns);
        let woken = self.waiting.borrow_mut().remove(ns);
        for (_, w) in woken.into_iter().flatten() {
            self.count.set(self.count.get() - 1);
            w.wake();
        }
    }

    fn register(&self, ns: &Name, id: u64, waker: &Waker) {
        let mut waiting = self.waiting.borrow_mut();
        let list = waiting.entry(ns.clone()).or_default();
        match list.iter_mut().find(|(i, _)| *i == id) {
            Some((_, w)) => w.clone_from(waker),
            None => {
                list.push((id, waker.clone()));
                self.count.set(self.count.get() + 1);
            }
        }
    }

    /// Whether `id` is still registered (not woken yet); unregisters it when `drop`.
    fn registered(&self, ns: &Name, id: u64, drop: bool) -> bool {
        let mut waiting = self.waiting.borrow_mut();
        let Some(list) = waiting.get_mut(ns) else { return false };
        let Some(at) = list.iter().position(|(i, _)| *i == id) else { return false };
        if drop {
            list.swap_remove(at);
            self.count.set(self.count.get() - 1);
            if list.is_empty() {
                waiting.remove(ns);
            }
        }
        true
    }
}

/// One pause of a waiting query: over when this worker's lookup of the signal ends (it
/// takes the registration away and wakes the query), or when `pause` (a sleep on the
/// resolver's clock) is.
struct Pause<'a, S> {
    waiters: &'a SignalWaiters,
    ns: &'a Name,
    id: u64,
    registered: bool,
    pause: Pin<Box<S>>,
}

impl<S: Future<Output = ()>> Future for Pause<'_, S> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.pause.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        if self.registered && !self.waiters.registered(self.ns, self.id, false) {
            return Poll::Ready(());
        }
        self.waiters.register(self.ns, self.id, cx.waker());
        self.registered = true;
        Poll::Pending
    }
}

impl<S> Drop for Pause<'_, S> {
    fn drop(&mut self) {
        if self.registered {
            self.waiters.registered(self.ns, self.id, true);
        }
    }
}

impl<U: Upstream + Clone + 'static> Resolver<U> {
    /// The plan for one exchange. Before the first query to a nameserver whose signal is
    /// not known, the query waits for the signal's lookup when `transport.signal_wait`
    /// says so, at most `signal_wait_ms` and never past its own deadline. A lookup of a
    /// signal that would wait for a signal whose lookup waits for it (a cycle of any
    /// length) goes on at once under what is known (encrypted first where nothing is:
    /// `plan::encrypted_first`), and reports the cycle.
    pub(super) async fn plan_after_signal(
        &self,
        zone: &Name,
        target: (IpAddr, &Name),
        budget: &Budget,
    ) -> TransportPlan {
        let (addr, ns) = target;
        let walk_rule = budget.deleg_rules.borrow().iter().find(|(z, _)| z == zone).map(|(_, r)| r.clone());
        let (plan, unknown) = self.plan_and_wish(zone, ns, addr, walk_rule.as_ref());
        if !unknown || budget.cache_only {
            return plan;
        }
        // Asked only at a first contact: it walks the cache up from the name.
        let wait = match self.shared.settings.signal_wait {
            SignalWait::None => false,
            SignalWait::All => true,
            SignalWait::Signed => self.maybe_signed(ns),
        };
        if !wait {
            return plan;
        }
        let _edge = match self.shared.signals.start_wait(budget.signal_for.as_ref(), ns) {
            Ok(edge) => edge,
            Err(refused) => {
                let outcome = match refused {
                    WaitRefused::Cycle => {
                        budget.signal_cycle.set(true);
                        // A zone holding its own nameserver's signal is the usual case.
                        tracing::debug!(nameserver = %ns, waiting = ?budget.signal_for.as_ref().map(Name::to_ascii),
                            "signal lookups wait for each other: going on without waiting");
                        "cycle"
                    }
                    WaitRefused::TooDeep => "too_deep",
                };
                budget.note(|| TraceStep::SignalWait { nameserver: ns.clone(), outcome });
                let dot = self.shared.probes.decide(addr, Transport::Dot, self.upstream.unix_now());
                return encrypted_first(plan, dot);
            }
        };
        let dot = |r: &Self| r.shared.probes.decide(addr, Transport::Dot, r.upstream.unix_now());
        // Not waited (too many waiting, or given up on lately): still encrypted first where
        // nothing is known, never the cleartext plan of an unknown server.
        let Some(learnt) = self.wait_for_signal(ns, budget).await else { return encrypted_first(plan, dot(self)) };
        if learnt {
            self.stats.signal_waits.bump();
        } else {
            self.stats.signal_wait_timeouts.bump();
        }
        budget.note(|| TraceStep::SignalWait {
            nameserver: ns.clone(),
            outcome: if learnt { "learnt" } else { "timeout" },
        });
        let plan = self.plan(zone, ns, addr);
        if learnt { plan } else { encrypted_first(plan, dot(self)) }
    }

    /// Waits until `ns`'s signal is known (true) or the wait's bound passes (false): at
    /// most `signal_wait_ms`, and half of what is left of the query's own time (the rest
    /// is for the query). `None` when the query does not wait: the worker has
    /// [`MAX_WAITERS`] waiting already, or a query waited for this lookup in vain.
    async fn wait_for_signal(&self, ns: &Name, budget: &Budget) -> Option<bool> {
        let known = || matches!(self.shared.signals.get(ns, self.upstream.unix_now()), Some(Signal::Known { .. }));
        let waiters = &self.signal_waiters;
        let start = self.upstream.now();
        // Given up on within the life of a pending lookup (its lookup may run elsewhere).
        let gave_up = waiters.gave_up.borrow().get(ns).is_some_and(|t| start < *t + GAVE_UP_FOR);
        if waiters.count.get() >= MAX_WAITERS || gave_up {
            return None;
        }
        let until = (start + self.shared.settings.signal_wait_for)
            .min(start + budget.deadline.saturating_duration_since(start) / 2);
        let id = waiters.next_id.get();
        waiters.next_id.set(id.wrapping_add(1));
        loop {
            if known() {
                return Some(true);
            }
            let now = self.upstream.now();
            if now >= until {
                let mut gave_up = waiters.gave_up.borrow_mut();
                if gave_up.len() >= MAX_GAVE_UP {
                    gave_up.retain(|_, t| now < *t + GAVE_UP_FOR);
                    if gave_up.len() >= MAX_GAVE_UP {
                        gave_up.clear();
                    }
                }
                gave_up.insert(ns.clone(), now);
                return Some(false);
            }
            let pause = Box::pin(self.upstream.sleep(LOOK_AGAIN.min(until - now)));
            Pause { waiters, ns, id, registered: false, pause }.await;
        }
    }

    /// Whether `name` may lie in a signed zone, where a secure signal could make its
    /// server strict: validation covers it, and the deepest DS or DNSKEY status cached on
    /// the way up from it is not an insecure one (nothing cached: its trust anchor's zone
    /// is signed). Only the cache is read.
    pub(super) fn maybe_signed(&self, name: &Name) -> bool {
        if !self.shared.validator.covers(name) {
            return false;
        }
        let now = self.upstream.now();
        let records = &self.shared.records;
        let mut cur = canonical(name);
        loop {
            for rtype in [RecordType::DS, RecordType::DNSKEY] {
                let Some(meta) = records.meta(&cur, u16::from(rtype), now) else { continue };
                match (&meta.security, meta.kind) {
                    (Security::Insecure(_), _) => return false,
                    (Security::Secure, Kind::RRset) => return true,
                    // A proven absence of DS at a zone cut: an unsigned child.
                    (Security::Secure, Kind::NoData)
                        if rtype == RecordType::DS && records.contains(&cur, u16::from(RecordType::NS), now) =>
                    {
                        return false;
                    }
                    _ => {}
                }
            }
            if cur.is_root() {
                return true;
            }
            cur = parent(&cur);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waiter is woken by its name's lookup only, and a pause that ends or is dropped
    /// leaves nothing behind (the count bounds the waiters).
    #[test]
    fn waiters_are_woken_by_name_and_never_leak() {
        let w = SignalWaiters::default();
        let (a, b) = (Name::from_ascii("ns1.a.").unwrap(), Name::from_ascii("ns1.b.").unwrap());
        let waker = Waker::noop();
        w.register(&a, 1, waker);
        w.register(&a, 1, waker);
        w.register(&a, 2, waker);
        w.register(&b, 3, waker);
        assert_eq!(w.count.get(), 3, "one registration per id");
        w.wake(&a);
        assert_eq!(w.count.get(), 1);
        assert!(!w.registered(&a, 1, false) && w.registered(&b, 3, false));
        // A pause dropped before its name's lookup ended takes its registration away.
        let mut p =
            Pause { waiters: &w, ns: &b, id: 4, registered: false, pause: Box::pin(std::future::pending::<()>()) };
        let mut cx = Context::from_waker(waker);
        assert!(Pin::new(&mut p).poll(&mut cx).is_pending());
        assert_eq!(w.count.get(), 2);
        drop(p);
        assert_eq!(w.count.get(), 1);
        // A pause whose name's lookup ended is over at its next poll.
        let mut p =
            Pause { waiters: &w, ns: &b, id: 5, registered: false, pause: Box::pin(std::future::pending::<()>()) };
        assert!(Pin::new(&mut p).poll(&mut cx).is_pending());
        w.wake(&b);
        assert!(Pin::new(&mut p).poll(&mut cx).is_ready());
        drop(p);
        assert_eq!(w.count.get(), 0);
        assert!(w.waiting.borrow().is_empty());
    }
}
