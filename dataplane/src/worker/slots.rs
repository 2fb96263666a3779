//! What the DoT and DoQ pools share: the slot a query waits in until its connection's
//! driver hands it the answer (or the connection's failure), the driver task itself, and
//! the count of the connection in the shared per-server table.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::Hash;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use super::exec::{Executor, Reactor, until};
use crate::resolver::UpstreamError;

/// One connection as the shared probe table counts it: opened once its handshake is done,
/// closed when this is dropped (with the driver task that owns it).
pub(super) struct OpenCount {
    shared: std::sync::Arc<crate::resolver::Shared>,
    addr: std::net::IpAddr,
    transport: adox_api::policy::Transport,
    counted: Cell<bool>,
}

impl OpenCount {
    pub(super) fn new(
        shared: std::sync::Arc<crate::resolver::Shared>,
        addr: std::net::IpAddr,
        transport: adox_api::policy::Transport,
    ) -> Self {
        Self { shared, addr, transport, counted: Cell::new(false) }
    }

    /// Called after each drive: counts the connection the first time `open` holds, as a
    /// resumption when `resumed()` says so.
    pub(super) fn observe(&self, open: bool, resumed: impl FnOnce() -> bool) {
        if open && !self.counted.get() {
            self.counted.set(true);
            self.shared.probes.connection_opened(self.addr, self.transport, resumed());
        }
    }
}

impl Drop for OpenCount {
    fn drop(&mut self) {
        if self.counted.get() {
            self.shared.probes.connection_closed(self.addr, self.transport);
        }
    }
}

/// One query in flight on a connection.
#[derive(Debug)]
pub(super) struct Slot {
    /// The resolver's message ID, restored in the answer.
    pub(super) client_id: u16,
    /// Bytes received so far (DoQ streams).
    pub(super) buf: Vec<u8>,
    result: Option<Result<Vec<u8>, UpstreamError>>,
    waker: Option<Waker>,
}

impl Slot {
    pub(super) fn new(client_id: u16) -> Self {
        Self { client_id, buf: Vec::new(), result: None, waker: None }
    }

    /// Whether the slot already holds its outcome.
    pub(super) fn done(&self) -> bool {
        self.result.is_some()
    }

    /// Hands the outcome to the waiting query.
    pub(super) fn complete(&mut self, result: Result<Vec<u8>, UpstreamError>) {
        self.result = Some(result);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// A connection's slots, by wire ID (DoT) or stream ID (DoQ).
pub(super) type Slots<K> = RefCell<HashMap<K, Slot>>;

/// Fails every slot still waiting (the connection is gone).
pub(super) fn fail_all<K>(slots: &Slots<K>, reason: &'static str) {
    for slot in slots.borrow_mut().values_mut().filter(|s| !s.done()) {
        slot.complete(Err(UpstreamError::Tls(reason)));
    }
}

/// Removes a query's slot when its future ends (answered, timed out or dropped).
pub(super) struct SlotGuard<'a, K: Hash + Eq> {
    pub(super) slots: &'a Slots<K>,
    pub(super) key: K,
    pub(super) last_active: &'a Cell<Instant>,
}

impl<K: Hash + Eq> Drop for SlotGuard<'_, K> {
    fn drop(&mut self) {
        self.slots.borrow_mut().remove(&self.key);
        self.last_active.set(Instant::now());
    }
}

/// Waits until the slot of `key` holds its outcome, or `at`.
pub(super) async fn wait<K: Hash + Eq>(
    reactor: &Reactor,
    at: Instant,
    slots: &Slots<K>,
    key: &K,
) -> Result<Vec<u8>, UpstreamError> {
    let answer = until(reactor, at, async {
        std::future::poll_fn(|cx| {
            let mut slots = slots.borrow_mut();
            let Some(slot) = slots.get_mut(key) else { return Poll::Ready(Err(UpstreamError::Tls("closed"))) };
            if let Some(r) = slot.result.take() {
                return Poll::Ready(r);
            }
            slot.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    })
    .await;
    answer.unwrap_or(Err(UpstreamError::Timeout))
}

/// Runs a connection's driver as a task: `drive` is polled whenever the connection's
/// socket (`token`) is ready or the driver is woken, until it is Ready; then `done` runs.
pub(super) fn spawn_driver(
    executor: &Executor,
    reactor: Rc<Reactor>,
    token: usize,
    mut drive: impl FnMut(&Waker) -> Poll<()> + 'static,
    done: impl FnOnce() + 'static,
) {
    executor.spawn(async move {
        std::future::poll_fn(|cx| {
            reactor.wait_on(token, cx.waker());
            drive(cx.waker())
        })
        .await;
        done();
    });
}

/// Removes `conn` from its pool, unless a newer connection already took its place.
pub(super) fn forget<K: Hash + Eq, C>(conns: &RefCell<HashMap<K, Rc<C>>>, key: &K, conn: &Rc<C>) {
    let mut map = conns.borrow_mut();
    if map.get(key).is_some_and(|c| Rc::ptr_eq(c, conn)) {
        map.remove(key);
    }
}
