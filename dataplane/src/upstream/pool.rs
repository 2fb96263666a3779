//! The one connection pool of the encrypted transports, and the slots queries wait in.
//!
//! A [`Pool`] keeps one connection per key (server address and port, authentication) and
//! knows nothing of sockets or tasks: the worker's drivers (`worker/dot.rs`,
//! `worker/doq.rs`) open connections, drive them and tell the pool when one is gone. A
//! query takes a [`Slot`] on its connection and waits there until the connection's driver
//! hands it the answer or the connection's failure.
//!
//! The seam for connection ownership: everything a query needs is its key, its bytes and
//! its deadline, and a pool serves whoever calls it on its own thread. Handing queries to
//! the worker that owns the connection to a server is a dispatcher in front of the pools;
//! the pool does not change.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use adox_api::policy::Transport;

use super::UpstreamError;
use super::error::TransportFailure;
use super::probe::ProbeTable;

/// What the pool asks of a connection.
pub(crate) trait PooledConnection {
    /// Whether new queries may use it at `now` (not failed, not closing, not stuck in a
    /// handshake past its deadline).
    fn accepts_queries(&self, now: Instant) -> bool;

    /// When its last query ended, if it is open with no query in flight (else `None`).
    fn idle_since(&self) -> Option<Instant>;

    /// Closes it gracefully (close_notify, DOQ_NO_ERROR).
    fn close_idle(&self, now: Instant);

    /// When it was opened, if its handshake is still under way.
    fn handshaking_since(&self) -> Option<Instant>;

    /// Drops it at once (the pool needs its place); its queries fail without blaming the
    /// server.
    fn evict(&self);
}

/// One connection per key, at most `max` of them (a flood of fresh server addresses cannot
/// take every descriptor).
#[derive(Debug)]
pub(crate) struct Pool<K, C> {
    conns: RefCell<HashMap<K, Rc<C>>>,
    max: usize,
}

impl<K: Hash + Eq + Clone, C: PooledConnection> Pool<K, C> {
    /// An empty pool of at most `max` connections.
    pub(crate) fn new(max: usize) -> Self {
        Self { conns: RefCell::new(HashMap::new()), max: max.max(1) }
    }

    /// The connection for `key` that accepts queries, or a new one from `open` (which
    /// replaces one that no longer does; that one finishes on its own). At the cap, the
    /// longest-idle connection is asked to close and the query is refused as busy (a
    /// local limit: the server is not blamed).
    pub(crate) fn get_or_open(
        &self,
        key: &K,
        now: Instant,
        open: impl FnOnce() -> Result<Rc<C>, UpstreamError>,
    ) -> Result<Rc<C>, UpstreamError> {
        if let Some(c) = self.conns.borrow().get(key).filter(|c| c.accepts_queries(now)) {
            return Ok(c.clone());
        }
        let full = {
            let conns = self.conns.borrow();
            conns.len() >= self.max && !conns.contains_key(key)
        };
        if full {
            // Room is made for the next query: the longest-idle connection closes, or, with
            // none idle, the oldest handshake is dropped (handshakes that stall must not
            // hold every place, e.g. toward ports a hostile signal named).
            let (idlest, oldest_handshake) = {
                let conns = self.conns.borrow();
                let idlest = conns.values().filter_map(|c| Some((c.idle_since()?, c.clone()))).min_by_key(|(t, _)| *t);
                let oldest =
                    conns.values().filter_map(|c| Some((c.handshaking_since()?, c.clone()))).min_by_key(|(t, _)| *t);
                (idlest, oldest)
            };
            if let Some((_, c)) = idlest {
                c.close_idle(now);
            } else if let Some((_, c)) = oldest_handshake {
                c.evict();
            }
            return Err(UpstreamError::Busy(super::error::Busy::Connections));
        }
        let conn = open()?;
        self.conns.borrow_mut().insert(key.clone(), conn.clone());
        Ok(conn)
    }

    /// Removes `conn` (it is over), unless a newer connection already took its place.
    pub(crate) fn forget(&self, key: &K, conn: &Rc<C>) {
        let mut map = self.conns.borrow_mut();
        if map.get(key).is_some_and(|c| Rc::ptr_eq(c, conn)) {
            map.remove(key);
        }
    }

    /// Whether no connection is pooled.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.conns.borrow().is_empty()
    }

    /// Closes connections idle for longer than `idle_timeout`.
    pub(crate) fn sweep_idle(&self, now: Instant, idle_timeout: Duration) {
        for conn in self.conns.borrow().values() {
            if conn.idle_since().is_some_and(|t| now.saturating_duration_since(t) > idle_timeout) {
                conn.close_idle(now);
            }
        }
    }
}

/// One connection as the shared probe table counts it: opened once its handshake is done,
/// closed when this is dropped (with the driver task that owns it).
#[derive(Debug)]
pub(crate) struct OpenCount {
    probes: Arc<ProbeTable>,
    addr: IpAddr,
    transport: Transport,
    counted: Cell<bool>,
}

impl OpenCount {
    pub(crate) fn new(probes: Arc<ProbeTable>, addr: IpAddr, transport: Transport) -> Self {
        Self { probes, addr, transport, counted: Cell::new(false) }
    }

    /// Called after each drive: counts the connection the first time `open` holds, as a
    /// resumption when `resumed()` says so.
    pub(crate) fn observe(&self, open: bool, resumed: impl FnOnce() -> bool) {
        if open && !self.counted.get() {
            self.counted.set(true);
            self.probes.connection_opened(self.addr, self.transport, resumed());
        }
    }
}

impl Drop for OpenCount {
    fn drop(&mut self) {
        if self.counted.get() {
            self.probes.connection_closed(self.addr, self.transport);
        }
    }
}

/// One query in flight on a connection.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The resolver's message ID, restored in the answer.
    pub(crate) client_id: u16,
    result: Option<Result<Vec<u8>, UpstreamError>>,
    waker: Option<Waker>,
}

impl Slot {
    pub(crate) fn new(client_id: u16) -> Self {
        Self { client_id, result: None, waker: None }
    }

    /// Hands the outcome to the waiting query, with the resolver's ID put back in an
    /// answer.
    pub(crate) fn complete(&mut self, mut result: Result<Vec<u8>, UpstreamError>) {
        if let Ok(msg) = &mut result
            && msg.len() >= 2
        {
            msg[0..2].copy_from_slice(&self.client_id.to_be_bytes());
        }
        self.result = Some(result);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn done(&self) -> bool {
        self.result.is_some()
    }
}

/// A connection's slots, by wire ID (DoT) or stream ID (DoQ).
pub(crate) type Slots<K> = RefCell<HashMap<K, Slot>>;

/// Fails every slot still waiting (the connection is gone).
pub(crate) fn fail_all<K>(slots: &Slots<K>, reason: TransportFailure) {
    for slot in slots.borrow_mut().values_mut().filter(|s| !s.done()) {
        slot.complete(Err(UpstreamError::Transport(reason)));
    }
}

/// The outcome of the query in slot `key`, once there (a slot that is gone was closed).
pub(crate) fn poll_slot<K: Hash + Eq>(
    slots: &Slots<K>,
    key: &K,
    cx: &Context<'_>,
) -> Poll<Result<Vec<u8>, UpstreamError>> {
    let mut slots = slots.borrow_mut();
    let Some(slot) = slots.get_mut(key) else {
        return Poll::Ready(Err(UpstreamError::Transport(TransportFailure::Closed)));
    };
    if let Some(r) = slot.result.take() {
        return Poll::Ready(r);
    }
    slot.waker = Some(cx.waker().clone());
    Poll::Pending
}

/// Removes a query's slot when its future ends (answered, timed out or dropped), and marks
/// the connection active then (`now` is the driver's clock).
pub(crate) struct SlotGuard<'a, K: Hash + Eq, N: Fn() -> Instant> {
    pub(crate) slots: &'a Slots<K>,
    pub(crate) key: K,
    pub(crate) last_active: &'a Cell<Instant>,
    pub(crate) now: N,
}

impl<K: Hash + Eq, N: Fn() -> Instant> Drop for SlotGuard<'_, K, N> {
    fn drop(&mut self) {
        self.slots.borrow_mut().remove(&self.key);
        self.last_active.set((self.now)());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fake {
        open: Cell<bool>,
        idle: Cell<Option<Instant>>,
        closed: Cell<bool>,
        /// Still handshaking, with this deadline.
        handshake_until: Cell<Option<Instant>>,
    }

    impl PooledConnection for Fake {
        fn accepts_queries(&self, now: Instant) -> bool {
            self.open.get() && !self.closed.get() && self.handshake_until.get().is_none_or(|d| now < d)
        }
        fn handshaking_since(&self) -> Option<Instant> {
            self.handshake_until.get().filter(|_| !self.closed.get())
        }
        fn evict(&self) {
            self.closed.set(true);
        }
        fn idle_since(&self) -> Option<Instant> {
            self.idle.get()
        }
        fn close_idle(&self, _: Instant) {
            self.closed.set(true);
        }
    }

    fn fake(idle: Option<Instant>) -> Rc<Fake> {
        Rc::new(Fake {
            open: Cell::new(true),
            idle: Cell::new(idle),
            closed: Cell::new(false),
            handshake_until: Cell::new(None),
        })
    }

    #[test]
    fn a_connection_is_reused_until_it_stops_accepting_queries() {
        let now = Instant::now();
        let pool: Pool<u8, Fake> = Pool::new(16);
        let a = pool.get_or_open(&1, now, || Ok(fake(None))).unwrap();
        let again = pool.get_or_open(&1, now, || panic!("must reuse")).unwrap();
        assert!(Rc::ptr_eq(&a, &again));
        a.open.set(false);
        let b = pool.get_or_open(&1, now, || Ok(fake(None))).unwrap();
        assert!(!Rc::ptr_eq(&a, &b));
        // The old connection ending does not remove its successor.
        pool.forget(&1, &a);
        assert!(Rc::ptr_eq(&pool.get_or_open(&1, now, || panic!("must reuse")).unwrap(), &b));
        pool.forget(&1, &b);
        assert!(pool.get_or_open(&1, now, || Err(UpstreamError::Timeout)).is_err());
    }

    /// A server that accepts the connection and never completes the handshake holds its
    /// key only until the handshake deadline; then a fresh connection replaces it.
    #[test]
    fn a_connection_stuck_in_its_handshake_is_replaced_after_the_deadline() {
        let t0 = Instant::now();
        let pool: Pool<u8, Fake> = Pool::new(16);
        let stuck = pool.get_or_open(&1, t0, || Ok(fake(None))).unwrap();
        stuck.handshake_until.set(Some(t0 + Duration::from_secs(4)));
        let before = pool.get_or_open(&1, t0 + Duration::from_secs(3), || panic!("still within its deadline")).unwrap();
        assert!(Rc::ptr_eq(&stuck, &before));
        let after = pool.get_or_open(&1, t0 + Duration::from_secs(4), || Ok(fake(None))).unwrap();
        assert!(!Rc::ptr_eq(&stuck, &after), "replaced at the deadline");
    }

    /// Fresh addresses cannot grow the pool past its cap: the longest-idle connection is
    /// asked to close and the query is refused as busy (adox's limit, not the server's
    /// fault).
    #[test]
    fn the_pool_is_capped_and_closes_its_idlest_connection_when_full() {
        let t0 = Instant::now();
        let pool: Pool<u32, Fake> = Pool::new(3);
        let idle_old = pool.get_or_open(&1, t0, || Ok(fake(Some(t0)))).unwrap();
        let idle_new = pool.get_or_open(&2, t0, || Ok(fake(Some(t0 + Duration::from_secs(5))))).unwrap();
        let _busy = pool.get_or_open(&3, t0, || Ok(fake(None))).unwrap();
        let refused = pool.get_or_open(&4, t0, || panic!("no room")).err();
        assert_eq!(refused, Some(UpstreamError::Busy(super::super::error::Busy::Connections)));
        assert_eq!(refused.map(|e| e.fault()), Some(super::super::error::Fault::Local));
        assert_eq!((idle_old.closed.get(), idle_new.closed.get()), (true, false));
        // Once the closed one is gone, there is room again; an existing key still works.
        pool.forget(&1, &idle_old);
        assert!(pool.get_or_open(&4, t0, || Ok(fake(None))).is_ok());
        assert!(pool.get_or_open(&2, t0, || panic!("must reuse")).is_ok());
    }

    /// A pool full of stalling handshakes drops the oldest one to make room, instead of
    /// refusing every query until they time out.
    #[test]
    fn a_pool_full_of_handshakes_drops_the_oldest() {
        let t0 = Instant::now();
        let pool: Pool<u32, Fake> = Pool::new(2);
        let older = pool.get_or_open(&1, t0, || Ok(fake(None))).unwrap();
        older.handshake_until.set(Some(t0 + Duration::from_secs(4)));
        let newer = pool.get_or_open(&2, t0, || Ok(fake(None))).unwrap();
        newer.handshake_until.set(Some(t0 + Duration::from_secs(5)));
        assert!(pool.get_or_open(&3, t0, || panic!("no room yet")).is_err());
        assert_eq!((older.closed.get(), newer.closed.get()), (true, false), "the oldest handshake goes");
    }

    #[test]
    fn only_connections_idle_past_the_timeout_are_closed() {
        let t0 = Instant::now();
        let pool: Pool<u8, Fake> = Pool::new(16);
        let old = pool.get_or_open(&1, t0, || Ok(fake(Some(t0)))).unwrap();
        let recent = pool.get_or_open(&2, t0, || Ok(fake(Some(t0 + Duration::from_secs(9))))).unwrap();
        let busy = pool.get_or_open(&3, t0, || Ok(fake(None))).unwrap();
        pool.sweep_idle(t0 + Duration::from_secs(11), Duration::from_secs(10));
        assert_eq!((old.closed.get(), recent.closed.get(), busy.closed.get()), (true, false, false));
    }

    #[test]
    fn a_slot_restores_the_resolver_id_and_fails_with_its_connection() {
        let slots: Slots<u16> = RefCell::new(HashMap::new());
        slots.borrow_mut().insert(7, Slot::new(0xABCD));
        slots.borrow_mut().insert(8, Slot::new(1));
        slots.borrow_mut().get_mut(&7).unwrap().complete(Ok(vec![0, 7, 0x81]));
        fail_all(&slots, TransportFailure::Closed);
        let cx = Context::from_waker(Waker::noop());
        assert_eq!(poll_slot(&slots, &7, &cx), Poll::Ready(Ok(vec![0xAB, 0xCD, 0x81])));
        assert_eq!(poll_slot(&slots, &8, &cx), Poll::Ready(Err(UpstreamError::Transport(TransportFailure::Closed))));
        assert_eq!(poll_slot(&slots, &9, &cx), Poll::Ready(Err(UpstreamError::Transport(TransportFailure::Closed))));
    }
}
