//! A single-threaded task executor and I/O reactor for one worker, built on the worker's
//! own `mio::Poll`. Resolutions are `async` code (so the iterative logic reads top to
//! bottom); they run as tasks on this executor, never on another thread, and never block.
//!
//! Readiness model: a future first tries its I/O; on `WouldBlock` it stores its waker under
//! its token and returns `Pending`. The worker loop wakes that waker when mio reports an
//! event for the token. Because events are only handled between polls on this one thread,
//! no readiness can be lost between the attempt and the registration.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::{Interest, Registry, Token};

use crate::upstream::UpstreamError;
use crate::upstream::pool::{Pool, PooledConnection, Slots, poll_slot};

/// First token handed to upstream sockets; lower tokens belong to listeners and clients.
pub(crate) const IO_TOKEN_BASE: usize = 1 << 40;

/// Timers and I/O wakers of one worker.
#[derive(Debug)]
pub(crate) struct Reactor {
    registry: Registry,
    wakers: RefCell<HashMap<usize, Waker>>,
    next_token: Cell<usize>,
    timers: RefCell<BinaryHeap<Reverse<(Instant, u64)>>>,
    timer_wakers: RefCell<HashMap<u64, Waker>>,
    next_timer: Cell<u64>,
    now: Cell<Instant>,
}

impl Reactor {
    pub(crate) fn new(registry: Registry) -> Self {
        Self {
            registry,
            wakers: RefCell::new(HashMap::new()),
            next_token: Cell::new(IO_TOKEN_BASE),
            timers: RefCell::new(BinaryHeap::new()),
            timer_wakers: RefCell::new(HashMap::new()),
            next_timer: Cell::new(0),
            now: Cell::new(Instant::now()),
        }
    }

    /// The loop's notion of now, refreshed after every poll.
    pub(crate) fn now(&self) -> Instant {
        self.now.get()
    }

    pub(crate) fn set_now(&self, now: Instant) {
        self.now.set(now);
    }

    /// Wakes the task waiting on an I/O token, if any.
    pub(crate) fn wake_io(&self, token: usize) {
        if let Some(w) = self.wakers.borrow_mut().remove(&token) {
            w.wake();
        }
    }

    /// Wakes every timer that is due.
    pub(crate) fn fire_timers(&self) {
        let now = self.now();
        loop {
            let due = {
                let mut heap = self.timers.borrow_mut();
                match heap.peek() {
                    Some(Reverse((t, id))) if *t <= now => {
                        let id = *id;
                        heap.pop();
                        Some(id)
                    }
                    _ => None,
                }
            };
            let Some(id) = due else { break };
            if let Some(w) = self.timer_wakers.borrow_mut().remove(&id) {
                w.wake();
            }
        }
    }

    /// Time until the next live timer, for the poll timeout.
    pub(crate) fn next_timeout(&self) -> Option<Duration> {
        let mut heap = self.timers.borrow_mut();
        let live = self.timer_wakers.borrow();
        while let Some(Reverse((t, id))) = heap.peek() {
            if live.contains_key(id) {
                return Some(t.saturating_duration_since(self.now()));
            }
            heap.pop();
        }
        None
    }

    fn add_timer(&self, at: Instant, waker: Waker) -> u64 {
        let id = self.next_timer.get();
        self.next_timer.set(id.wrapping_add(1));
        self.timers.borrow_mut().push(Reverse((at, id)));
        self.timer_wakers.borrow_mut().insert(id, waker);
        id
    }

    /// Registers a long-lived source; the caller deregisters it with [`Self::deregister`].
    pub(crate) fn register_source<S: Source>(&self, source: &mut S, interest: Interest) -> io::Result<usize> {
        self.register(source, interest)
    }

    /// Deregisters a source registered with [`Self::register_source`].
    pub(crate) fn deregister<S: Source>(&self, source: &mut S, token: usize) {
        self.wakers.borrow_mut().remove(&token);
        let _ = self.registry.deregister(source);
    }

    /// Wakes `waker` at `at` (a protocol timer); a stale wake-up only causes an extra poll.
    pub(crate) fn wake_at(&self, at: Instant, waker: &Waker) {
        self.add_timer(at, waker.clone());
    }

    /// Makes the next event on `token` wake `waker`.
    pub(crate) fn wait_on(&self, token: usize, waker: &Waker) {
        self.wakers.borrow_mut().insert(token, waker.clone());
    }

    fn register<S: Source>(&self, source: &mut S, interest: Interest) -> io::Result<usize> {
        let token = self.next_token.get();
        self.next_token.set(token.wrapping_add(1).max(IO_TOKEN_BASE));
        self.registry.register(source, Token(token), interest)?;
        Ok(token)
    }
}

/// A deadline as a future.
struct Sleep<'a> {
    reactor: &'a Reactor,
    at: Instant,
    timer: Option<u64>,
}

impl Future for Sleep<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.reactor.now() >= self.at {
            return Poll::Ready(());
        }
        match self.timer {
            Some(id) => {
                self.reactor.timer_wakers.borrow_mut().insert(id, cx.waker().clone());
            }
            None => {
                let id = self.reactor.add_timer(self.at, cx.waker().clone());
                self.timer = Some(id);
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.timer {
            self.reactor.timer_wakers.borrow_mut().remove(&id);
        }
    }
}

/// A socket registered with the reactor, and closed with it: dropping it closes the only
/// descriptor of the socket, which takes it out of the epoll set (epoll(7)), so no
/// `EPOLL_CTL_DEL` is made (one system call fewer per upstream query).
pub(super) struct Registered<'a, S: Source> {
    reactor: &'a Reactor,
    pub(super) source: S,
    token: usize,
}

impl<'a, S: Source> Registered<'a, S> {
    /// `source` must be the socket's only descriptor (never duplicated): its close is
    /// what deregisters it.
    pub(super) fn new(reactor: &'a Reactor, mut source: S, interest: Interest) -> io::Result<Self> {
        let token = reactor.register(&mut source, interest)?;
        Ok(Self { reactor, source, token })
    }

    pub(super) fn wait(&self, cx: &Context<'_>) {
        self.reactor.wakers.borrow_mut().insert(self.token, cx.waker().clone());
    }
}

impl<S: Source> Drop for Registered<'_, S> {
    fn drop(&mut self) {
        // The waker goes now; the registration goes with the descriptor, closed when
        // `source` is dropped right after this.
        self.reactor.wakers.borrow_mut().remove(&self.token);
    }
}

/// Runs `fut` until `at`; `None` when the deadline passed first.
pub(crate) async fn until<F: Future>(reactor: &Reactor, at: Instant, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut sleep = std::pin::pin!(Sleep { reactor, at, timer: None });
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

type Task = Pin<Box<dyn Future<Output = ()>>>;

struct TaskWaker {
    id: usize,
    ready: Arc<Mutex<Vec<usize>>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).push(self.id);
    }
}

/// Runs this worker's tasks.
#[derive(Default)]
pub(crate) struct Executor {
    tasks: RefCell<HashMap<usize, (Task, Waker)>>,
    ready: Arc<Mutex<Vec<usize>>>,
    next_id: Cell<usize>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("tasks", &self.tasks.borrow().len()).finish()
    }
}

impl Executor {
    /// Queues a task; it first runs at the next `run_ready`.
    pub(crate) fn spawn(&self, fut: impl Future<Output = ()> + 'static) {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        let waker = Waker::from(Arc::new(TaskWaker { id, ready: self.ready.clone() }));
        self.tasks.borrow_mut().insert(id, (Box::pin(fut), waker));
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).push(id);
    }

    /// Polls every woken task until none is left ready.
    pub(crate) fn run_ready(&self) {
        loop {
            let batch = std::mem::take(&mut *self.ready.lock().unwrap_or_else(|p| p.into_inner()));
            if batch.is_empty() {
                return;
            }
            for id in batch {
                // Take the task out while it runs, so that it may spawn others.
                let Some((mut task, waker)) = self.tasks.borrow_mut().remove(&id) else { continue };
                let mut cx = Context::from_waker(&waker);
                if task.as_mut().poll(&mut cx).is_pending() {
                    self.tasks.borrow_mut().insert(id, (task, waker));
                }
            }
        }
    }
}

/// Waits until the slot of `key` holds its outcome, or `at`.
pub(crate) async fn wait_slot<K: std::hash::Hash + Eq>(
    reactor: &Reactor,
    at: Instant,
    slots: &Slots<K>,
    key: &K,
) -> Result<Vec<u8>, UpstreamError> {
    let answer = until(reactor, at, std::future::poll_fn(|cx| poll_slot(slots, key, cx))).await;
    answer.unwrap_or(Err(UpstreamError::Timeout))
}

/// The limits of one worker's DoT or DoQ connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    /// Close connections without queries for this long.
    pub(crate) idle_timeout: Duration,
    /// Queries in flight on one connection at most.
    pub(crate) max_outstanding: usize,
    /// A handshake not over by this is given up (`transport.dot_timeout_ms`).
    pub(crate) handshake_timeout: Duration,
    /// Connections of this worker at most (`transport.max_connections`).
    pub(crate) max_connections: usize,
}

/// What the driver task of a pooled connection holds: its socket, its reactor token, the
/// task's waker (queries wake the driver when they have something to send), and when the
/// handshake must be over.
#[derive(Debug)]
pub(crate) struct Wiring<S> {
    pub(crate) sock: RefCell<S>,
    pub(crate) token: usize,
    driver: RefCell<Option<Waker>>,
    /// A connection still handshaking at this moment is dropped (a server that accepts the
    /// connection and never answers must not hold its address hostage).
    pub(crate) handshake_deadline: Instant,
    /// When the connection was opened.
    pub(crate) opened: Instant,
    deadline_armed: Cell<bool>,
    /// When the connection last delivered an answer (or opened): a query that times out
    /// with nothing delivered since it was sent marks the connection stalled.
    pub(crate) last_answer: Cell<Instant>,
}

impl<S> Wiring<S> {
    pub(crate) fn new(sock: S, token: usize, now: Instant, handshake_timeout: Duration) -> Self {
        Self {
            sock: RefCell::new(sock),
            token,
            driver: RefCell::new(None),
            handshake_deadline: now + handshake_timeout,
            opened: now,
            deadline_armed: Cell::new(false),
            last_answer: Cell::new(now),
        }
    }

    /// Has the driver woken at the handshake deadline (once).
    pub(crate) fn arm_handshake_deadline(&self, reactor: &Reactor, waker: &Waker) {
        if !self.deadline_armed.replace(true) {
            reactor.wake_at(self.handshake_deadline, waker);
        }
    }

    /// Waits for the answer in slot `key` of a query sent at `sent`, until `sent + timeout`.
    /// Only a query sent on an established connection and given the full timeout
    /// (`fair_test`) can show that the connection is stuck (not one cut short by its
    /// client's budget, nor one that waited for the handshake: the handshake deadline
    /// covers that): when it times out with nothing delivered on the connection since it
    /// went out (a server that stopped reading, a middlebox that dropped the flow),
    /// `stalled` drops the connection, and the next query opens a fresh one.
    pub(crate) async fn wait_answer<K: std::hash::Hash + Eq>(
        &self,
        reactor: &Reactor,
        slots: &Slots<K>,
        key: &K,
        (sent, timeout): (Instant, Duration),
        fair_test: bool,
        stalled: impl FnOnce(),
    ) -> Result<Vec<u8>, UpstreamError> {
        let answer = wait_slot(reactor, sent + timeout, slots, key).await;
        if fair_test && answer == Err(UpstreamError::Timeout) && self.last_answer.get() < sent {
            stalled();
        }
        answer
    }

    /// Wakes the driver task (something to send, or the connection to close).
    pub(crate) fn wake_driver(&self) {
        if let Some(w) = self.driver.borrow().as_ref() {
            w.wake_by_ref();
        }
    }
}

/// A pooled connection with a driver task.
pub(crate) trait DrivenConnection: PooledConnection + 'static {
    /// The connection's socket.
    type Socket: Source;
    /// Its socket, token and driver waker.
    fn wiring(&self) -> &Wiring<Self::Socket>;
}

/// Runs a pooled connection's driver as a task: `drive` is polled whenever the
/// connection's socket is ready or the driver is woken, until it is Ready; then the
/// connection leaves `pool` (unless a newer one took its key) and its socket is
/// deregistered.
pub(crate) fn spawn_pooled<K, C>(
    executor: &Executor,
    reactor: Rc<Reactor>,
    pool: Rc<Pool<K, C>>,
    key: K,
    conn: Rc<C>,
    mut drive: impl FnMut(&C, &Waker) -> Poll<()> + 'static,
) where
    K: std::hash::Hash + Eq + Clone + 'static,
    C: DrivenConnection,
{
    let token = conn.wiring().token;
    executor.spawn(async move {
        std::future::poll_fn(|cx| {
            reactor.wait_on(token, cx.waker());
            *conn.wiring().driver.borrow_mut() = Some(cx.waker().clone());
            drive(&conn, cx.waker())
        })
        .await;
        pool.forget(&key, &conn);
        reactor.deregister(&mut *conn.wiring().sock.borrow_mut(), token);
    });
}
