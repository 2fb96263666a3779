//! The DoQ driver of one worker (RFC 9250): each connection is an
//! [`upstream::doq::DoqSession`](crate::upstream::doq::DoqSession) in the upstream pool
//! with its own connected UDP socket, driven by a task on the worker's reactor (its
//! datagrams, its timers through `Reactor::wake_at`; no second runtime). One connection per
//! (server address, authentication); one stream per query; idle connections are closed
//! with DOQ_NO_ERROR.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use mio::Interest;
use quinn_proto::StreamId;

use super::reactor::{ConnectionLimits, DrivenConnection, Executor, Reactor, Wiring, spawn_pooled, until, wait_slot};
use crate::stats::WorkerStats;
use crate::upstream::doq::{DoqConfigs, DoqEvent, DoqSession, DoqState};
use crate::upstream::error::{Busy, TransportFailure};
use crate::upstream::pool::{OpenCount, Pool, PooledConnection, Slot, SlotGuard, Slots, fail_all};
use crate::upstream::probe::ProbeTable;
use crate::upstream::{PeerAuth, UpstreamError};
use adox_api::policy::Transport;

/// Largest UDP datagram read from the server.
const MAX_DATAGRAM: usize = 65_535;

/// What identifies a pooled connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DoqKey {
    /// Server address and port.
    pub(crate) server: SocketAddr,
    /// How the server is authenticated (connections are never shared across these).
    pub(crate) auth: PeerAuth,
}

struct Conn {
    session: RefCell<DoqSession>,
    wiring: Wiring<mio::net::UdpSocket>,
    slots: Slots<StreamId>,
    last_active: Cell<Instant>,
    /// Queries waiting to open a stream (before the handshake, or at the stream limit).
    open_waiters: RefCell<Vec<Waker>>,
    /// Receive and transmit buffers, kept across drives (no allocation per datagram).
    rbuf: RefCell<Vec<u8>>,
    tbuf: RefCell<Vec<u8>>,
    /// When the driver's timer is set to fire next.
    armed: Cell<Option<Instant>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoqConn").field("session", &self.session.borrow()).finish()
    }
}

impl Conn {
    fn state(&self) -> DoqState {
        self.session.borrow().state()
    }

    fn wake_driver(&self) {
        self.wiring.wake_driver();
    }

    /// Wakes the queries waiting to open a stream (streams became available, or the
    /// connection failed and they must see it).
    fn wake_openers(&self) {
        for w in self.open_waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    fn fail(&self, reason: TransportFailure) {
        self.wake_openers();
        fail_all(&self.slots, reason);
    }

    /// Gives the connection up: its queries fail, its driver ends.
    fn abandon(&self, reason: TransportFailure) {
        self.session.borrow_mut().abandon(reason);
        self.fail(reason);
        self.wake_driver();
    }

    /// Moves datagrams between the socket and the session, hands out answers and arms the
    /// session's timer. Ready when the connection is over.
    fn drive(&self, now: Instant, stats: &WorkerStats, reactor: &Reactor, waker: &Waker) -> Poll<()> {
        if let DoqState::Failed(_) = self.state() {
            return Poll::Ready(());
        }
        if self.state() == DoqState::Handshaking && now >= self.wiring.handshake_deadline {
            self.session.borrow_mut().abandon(TransportFailure::HandshakeTimeout);
            self.fail(TransportFailure::HandshakeTimeout);
            return Poll::Ready(());
        }
        let mut session = self.session.borrow_mut();
        let sock = self.wiring.sock.borrow();
        let mut buf = self.rbuf.borrow_mut();
        let mut out = self.tbuf.borrow_mut();
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    if let Some(size) = session.receive(now, &buf[..n], &mut out) {
                        let _ = sock.send(&out[..size]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    session.abandon(TransportFailure::Refused);
                    drop((session, sock, buf, out));
                    self.fail(TransportFailure::Refused);
                    return Poll::Ready(());
                }
                Err(_) => break,
            }
        }
        // Queries that timed out or were dropped took their slots with them.
        session.retain_streams(|id| self.slots.borrow().contains_key(id));
        let mut lost = None;
        let mut streams_available = false;
        for event in session.poll_events(now) {
            match event {
                DoqEvent::Connected { resumed } => {
                    stats.doq_handshakes.bump();
                    if resumed { stats.tls_resumed.bump() } else { stats.tls_full.bump() }
                }
                DoqEvent::StreamsAvailable => streams_available = true,
                DoqEvent::Answer(id, answer) => {
                    if let Some(slot) = self.slots.borrow_mut().get_mut(&id) {
                        slot.complete(answer);
                        self.last_active.set(now);
                        self.wiring.last_answer.set(now);
                    }
                }
                DoqEvent::Lost(reason) => lost = Some(reason),
            }
        }
        while let Some(size) = session.poll_transmit(now, &mut out) {
            let _ = sock.send(&out[..size]);
        }
        // One armed timer per connection: a new one only when the session wants to be
        // woken earlier than the armed one (timers re-armed on every drive piled up by the
        // tens of thousands).
        if self.armed.get().is_some_and(|a| a <= now) {
            self.armed.set(None);
        }
        if let Some(t) = session.poll_timeout()
            && self.armed.get().is_none_or(|a| t < a)
        {
            self.armed.set(Some(t));
            reactor.wake_at(t, waker);
        }
        let done = session.is_finished();
        drop((session, sock, buf, out));
        if streams_available {
            self.wake_openers();
        }
        if let Some(reason) = lost {
            self.fail(reason);
            return Poll::Ready(());
        }
        if done { Poll::Ready(()) } else { Poll::Pending }
    }
}

impl DrivenConnection for Conn {
    type Socket = mio::net::UdpSocket;

    fn wiring(&self) -> &Wiring<Self::Socket> {
        &self.wiring
    }
}

impl PooledConnection for Conn {
    fn accepts_queries(&self, now: Instant) -> bool {
        match self.state() {
            DoqState::Handshaking => now < self.wiring.handshake_deadline,
            DoqState::Open => true,
            DoqState::Closing | DoqState::Failed(_) => false,
        }
    }

    fn idle_since(&self) -> Option<Instant> {
        (self.state() == DoqState::Open && self.slots.borrow().is_empty()).then(|| self.last_active.get())
    }

    fn close_idle(&self, now: Instant) {
        self.session.borrow_mut().close(now);
        self.wake_driver();
    }

    fn handshaking_since(&self) -> Option<Instant> {
        (self.state() == DoqState::Handshaking).then_some(self.wiring.opened)
    }

    fn evict(&self) {
        self.abandon(TransportFailure::Evicted);
    }
}

/// The worker's DoQ connections: the pool, and how to open and drive one.
#[derive(Debug)]
pub(crate) struct DoqDriver {
    reactor: Rc<Reactor>,
    executor: Rc<Executor>,
    configs: Option<DoqConfigs>,
    stats: Arc<WorkerStats>,
    /// Per-server connection counts live in the shared probe table.
    probes: Arc<ProbeTable>,
    outgoing: super::Outgoing,
    settings: ConnectionLimits,
    pool: Rc<Pool<DoqKey, Conn>>,
}

impl DoqDriver {
    pub(crate) fn new(
        reactor: Rc<Reactor>,
        executor: Rc<Executor>,
        configs: Option<DoqConfigs>,
        stats: Arc<WorkerStats>,
        probes: Arc<ProbeTable>,
        outgoing: super::Outgoing,
        settings: ConnectionLimits,
    ) -> Rc<Self> {
        Rc::new(Self {
            reactor,
            executor,
            configs,
            stats,
            probes,
            outgoing,
            settings,
            pool: Rc::new(Pool::new(settings.max_connections)),
        })
    }

    fn connect(self: &Rc<Self>, key: &DoqKey) -> Result<Rc<Conn>, UpstreamError> {
        let configs = self.configs.as_ref().ok_or(UpstreamError::Transport(TransportFailure::DoqUnavailable))?;
        let host = |n: &hickory_proto::rr::Name| n.to_ascii().trim_end_matches('.').to_string();
        let (config, name) = match &key.auth {
            PeerAuth::Pkix(n) => (configs.pkix.clone(), host(n)),
            PeerAuth::Dane(n) => (configs.dane.clone(), host(n)),
            PeerAuth::None => (configs.unauthenticated.clone(), key.server.ip().to_string()),
        };
        let io_err = |e: io::Error| UpstreamError::Local(e.kind());
        let mut sock = self.outgoing.udp(key.server).map_err(io_err)?;
        let now = self.reactor.now();
        let session = DoqSession::connect(config, key.server, &name, now)?;
        let token = self.reactor.register_source(&mut sock, Interest::READABLE).map_err(io_err)?;
        let conn = Rc::new(Conn {
            session: RefCell::new(session),
            wiring: Wiring::new(sock, token, now, self.settings.handshake_timeout),
            slots: RefCell::new(HashMap::new()),
            last_active: Cell::new(now),
            open_waiters: RefCell::new(Vec::new()),
            rbuf: RefCell::new(vec![0u8; MAX_DATAGRAM]),
            tbuf: RefCell::new(Vec::with_capacity(1500)),
            armed: Cell::new(None),
        });
        let (reactor, stats) = (self.reactor.clone(), self.stats.clone());
        let count = OpenCount::new(self.probes.clone(), key.server.ip(), Transport::Doq);
        spawn_pooled(
            &self.executor,
            self.reactor.clone(),
            self.pool.clone(),
            key.clone(),
            conn.clone(),
            move |c, waker| {
                c.wiring.arm_handshake_deadline(&reactor, waker);
                let poll = c.drive(reactor.now(), &stats, &reactor, waker);
                count.observe(c.state() == DoqState::Open, || c.session.borrow().resumed());
                poll
            },
        );
        Ok(conn)
    }

    /// One query over DoQ: a new stream on the pooled connection (opened if needed).
    pub(crate) async fn exchange(
        self: &Rc<Self>,
        key: DoqKey,
        query: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, UpstreamError> {
        if query.len() < 12 {
            return Err(UpstreamError::BadResponse("short query"));
        }
        let conn = self.pool.get_or_open(&key, self.reactor.now(), || self.connect(&key))?;
        if conn.slots.borrow().len() >= self.settings.max_outstanding {
            return Err(UpstreamError::Busy(Busy::ConnectionFull));
        }
        let at = self.reactor.now() + timeout;
        // Before the handshake completes (or at the peer's stream limit) no stream can be
        // opened yet: wait for the driver to say streams may be available.
        let opened = until(&self.reactor, at, async {
            std::future::poll_fn(|cx| match conn.session.borrow_mut().open_query(query) {
                Ok(Some(id)) => Poll::Ready(Ok(id)),
                Ok(None) => {
                    // The driver wakes us when the handshake completes or streams free up.
                    conn.open_waiters.borrow_mut().push(cx.waker().clone());
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(e)),
            })
            .await
        })
        .await;
        let id = opened.unwrap_or(Err(UpstreamError::Timeout))?;
        let client_id = u16::from_be_bytes([query[0], query[1]]);
        conn.slots.borrow_mut().insert(id, Slot::new(client_id));
        let _guard =
            SlotGuard { slots: &conn.slots, key: id, last_active: &conn.last_active, now: || self.reactor.now() };
        self.stats.upstream_doq.bump();
        conn.wake_driver();
        let sent = self.reactor.now();
        // Only a query that had the full timeout after it was sent can show that the
        // connection is stuck (not one that waited for the handshake or for a stream).
        let fair_test = at.saturating_duration_since(sent) >= self.settings.handshake_timeout;
        let answer = wait_slot(&self.reactor, at, &conn.slots, &id).await;
        if fair_test && answer == Err(UpstreamError::Timeout) && conn.wiring.last_answer.get() < sent {
            // Nothing came back on this connection since the query went out: drop it, the
            // next query opens a fresh one.
            conn.abandon(TransportFailure::Stalled);
        }
        answer
    }

    /// Closes idle connections with DOQ_NO_ERROR.
    pub(crate) fn sweep_idle(&self, now: Instant) {
        self.pool.sweep_idle(now, self.settings.idle_timeout);
    }
}
