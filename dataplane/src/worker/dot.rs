//! The DoT driver of one worker: long-lived TLS connections in the upstream pool, one per (server
//! address and port, authentication), each driven by its own task on the worker's
//! executor. Queries share a connection (pipelining, answers in any order, RFC 7766); the
//! connection assigns its own message IDs so that the resolver's random IDs never collide
//! on it, and restores them in the answers. Idle connections are closed with close_notify.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use hickory_proto::rr::Name;
use mio::Interest;
use rustls::pki_types::ServerName;

use super::reactor::{ConnectionLimits, DrivenConnection, Executor, Reactor, Wiring, spawn_pooled};
use crate::stats::WorkerStats;
use crate::upstream::dot::{DotSession, TlsError, pad_query};
use crate::upstream::error::{Busy, TransportFailure};
use crate::upstream::pool::{OpenCount, Pool, PooledConnection, Slot, SlotGuard, Slots, fail_all};
use crate::upstream::tls::TlsConfigs;
use crate::upstream::{PeerAuth, UpstreamError};
use adox_api::policy::Transport;

/// What identifies a pooled connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DotKey {
    /// Server address and port.
    pub(crate) server: SocketAddr,
    /// How the server is authenticated (connections are never shared across these).
    pub(crate) auth: PeerAuth,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Handshaking,
    Open,
    Closing,
    Failed(TransportFailure),
}

#[derive(Debug)]
struct Conn {
    session: RefCell<DotSession>,
    wiring: Wiring<mio::net::TcpStream>,
    slots: Slots<u16>,
    next_id: Cell<u16>,
    state: RefCell<State>,
    last_active: Cell<Instant>,
}

impl Conn {
    fn wake_driver(&self) {
        self.wiring.wake_driver();
    }

    fn fail(&self, f: TransportFailure) {
        *self.state.borrow_mut() = State::Failed(f);
        fail_all(&self.slots, f);
    }

    /// Moves bytes both ways and hands out answers. Ready when the connection is over.
    fn drive(&self, now: Instant, stats: &WorkerStats) -> Poll<()> {
        if matches!(*self.state.borrow(), State::Failed(_)) {
            return Poll::Ready(());
        }
        if *self.state.borrow() == State::Handshaking && now >= self.wiring.handshake_deadline {
            self.fail(TransportFailure::HandshakeTimeout);
            return Poll::Ready(());
        }
        let mut session = self.session.borrow_mut();
        let mut sock = self.wiring.sock.borrow_mut();
        for _ in 0..2 {
            if let Err(e) = session.write_to(&mut *sock)
                && !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected)
            {
                drop((session, sock));
                self.fail(io_failure(&e, false));
                return Poll::Ready(());
            }
            match session.read_from(&mut *sock) {
                Ok(true) => {
                    // Acknowledge at once (Linux re-enables delayed ACKs by itself): a
                    // server writing under Nagle holds each answer until its previous one is
                    // acknowledged, which with delayed ACKs means until our next query (or
                    // 40 ms): answers would wait one query interval.
                    let _ = socket2::SockRef::from(&*sock).set_tcp_quickack(true);
                }
                Ok(false) => {
                    let after = session.handshake_done();
                    drop((session, sock));
                    self.fail(if after { TransportFailure::Closed } else { TransportFailure::HandshakeClosed });
                    return Poll::Ready(());
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                Err(e) => {
                    let after = session.handshake_done();
                    // Let an alert rustls queued reach the server before giving up.
                    let _ = session.write_to(&mut *sock);
                    drop((session, sock));
                    self.fail(io_failure(&e, after));
                    return Poll::Ready(());
                }
            }
        }
        if *self.state.borrow() == State::Handshaking && session.handshake_done() {
            *self.state.borrow_mut() = State::Open;
            if session.resumed() {
                stats.tls_resumed.bump();
            } else {
                stats.tls_full.bump();
            }
        }
        loop {
            match session.next_message() {
                Ok(Some(msg)) => {
                    let id = u16::from_be_bytes([msg[0], msg[1]]);
                    if let Some(slot) = self.slots.borrow_mut().get_mut(&id) {
                        slot.complete(Ok(msg));
                        self.wiring.last_answer.set(now);
                    }
                }
                Ok(None) => break,
                Err(f) => {
                    drop((session, sock));
                    self.fail(f);
                    return Poll::Ready(());
                }
            }
        }
        // Closing: close_notify went out with the writes above, or the server is not
        // reading (a zero window): either way the connection ends now, never waiting on a
        // peer that will not take the last record.
        if *self.state.borrow() == State::Closing {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// What an I/O error of a TLS connection means (a TLS failure carried inside it, else the
/// socket's error).
pub(super) fn io_failure(e: &io::Error, after_handshake: bool) -> TransportFailure {
    if let Some(t) = e.get_ref().and_then(|i| i.downcast_ref::<TlsError>()) {
        return t.0;
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => TransportFailure::Refused,
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof => {
            if after_handshake { TransportFailure::Closed } else { TransportFailure::HandshakeClosed }
        }
        _ => TransportFailure::IoError,
    }
}

impl DrivenConnection for Conn {
    type Socket = mio::net::TcpStream;

    fn wiring(&self) -> &Wiring<Self::Socket> {
        &self.wiring
    }
}

impl PooledConnection for Conn {
    fn accepts_queries(&self, now: Instant) -> bool {
        match *self.state.borrow() {
            State::Failed(_) | State::Closing => false,
            State::Handshaking => now < self.wiring.handshake_deadline,
            State::Open => true,
        }
    }

    fn idle_since(&self) -> Option<Instant> {
        (*self.state.borrow() == State::Open && self.slots.borrow().is_empty()).then(|| self.last_active.get())
    }

    fn close_idle(&self, _: Instant) {
        *self.state.borrow_mut() = State::Closing;
        self.session.borrow_mut().close();
        self.wake_driver();
    }

    fn handshaking_since(&self) -> Option<Instant> {
        (*self.state.borrow() == State::Handshaking).then_some(self.wiring.opened)
    }

    fn evict(&self) {
        self.fail(TransportFailure::Evicted);
        self.wake_driver();
    }
}

/// The client configuration and server name (SNI) of a connection to `server`
/// authenticated as `auth` (an IP address, which sends no SNI, when unauthenticated).
pub(super) fn tls_client(
    configs: &TlsConfigs,
    auth: &PeerAuth,
    server: SocketAddr,
) -> Result<(Arc<rustls::ClientConfig>, ServerName<'static>), TransportFailure> {
    let sni = |n: &Name| {
        let ascii = n.to_ascii();
        ServerName::try_from(ascii.trim_end_matches('.').to_string()).map_err(|_| TransportFailure::BadName)
    };
    Ok(match auth {
        PeerAuth::Pkix(n) => (configs.pkix.clone(), sni(n)?),
        PeerAuth::Dane(n) => (configs.dane.clone(), sni(n)?),
        PeerAuth::None => (configs.unauthenticated.clone(), ServerName::IpAddress(server.ip().into())),
    })
}

/// A non-blocking TCP connection to `server` for a long-lived encrypted session: no Nagle
/// delay, and keepalives so that a peer that vanishes with queries in flight is noticed by
/// the kernel too.
pub(super) fn tcp_connect(outgoing: super::Outgoing, server: SocketAddr) -> Result<mio::net::TcpStream, UpstreamError> {
    let sock = outgoing.tcp(server).map_err(|e| UpstreamError::Local(e.kind()))?;
    let _ = sock.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(15))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    let _ = socket2::SockRef::from(&sock).set_tcp_keepalive(&keepalive);
    Ok(sock)
}

/// The worker's DoT connections: the pool, and how to open and drive one.
#[derive(Debug)]
pub(crate) struct DotDriver {
    reactor: Rc<Reactor>,
    executor: Rc<Executor>,
    configs: TlsConfigs,
    stats: Arc<WorkerStats>,
    /// Per-server connection counts live in the shared probe table.
    probes: Arc<crate::upstream::probe::ProbeTable>,
    outgoing: super::Outgoing,
    settings: ConnectionLimits,
    pool: Rc<Pool<DotKey, Conn>>,
}

impl DotDriver {
    pub(crate) fn new(
        reactor: Rc<Reactor>,
        executor: Rc<Executor>,
        configs: TlsConfigs,
        stats: Arc<WorkerStats>,
        probes: Arc<crate::upstream::probe::ProbeTable>,
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

    fn connect(self: &Rc<Self>, key: &DotKey) -> Result<Rc<Conn>, UpstreamError> {
        let (config, server_name) = tls_client(&self.configs, &key.auth, key.server)?;
        let session = DotSession::new(config, server_name)?;
        let mut sock = tcp_connect(self.outgoing, key.server)?;
        let token = self
            .reactor
            .register_source(&mut sock, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| UpstreamError::Local(e.kind()))?;
        let conn = Rc::new(Conn {
            session: RefCell::new(session),
            wiring: Wiring::new(sock, token, self.reactor.now(), self.settings.handshake_timeout),
            slots: RefCell::new(HashMap::new()),
            next_id: Cell::new(rand::random()),
            state: RefCell::new(State::Handshaking),
            last_active: Cell::new(self.reactor.now()),
        });
        let _ = socket2::SockRef::from(&*conn.wiring.sock.borrow()).set_tcp_quickack(true);
        let stats = self.stats.clone();
        let count = OpenCount::new(self.probes.clone(), key.server.ip(), Transport::Dot);
        let reactor = self.reactor.clone();
        spawn_pooled(
            &self.executor,
            self.reactor.clone(),
            self.pool.clone(),
            key.clone(),
            conn.clone(),
            move |c, waker| {
                c.wiring.arm_handshake_deadline(&reactor, waker);
                let poll = c.drive(reactor.now(), &stats);
                let open = matches!(*c.state.borrow(), State::Open | State::Closing);
                count.observe(open, || c.session.borrow_mut().resumed());
                poll
            },
        );
        Ok(conn)
    }

    /// One query over DoT: the pooled connection to `key` (opened if needed), padded, with
    /// the answer or an error within `timeout`.
    pub(crate) async fn exchange(
        self: &Rc<Self>,
        key: DotKey,
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
        let mut id = conn.next_id.get();
        while conn.slots.borrow().contains_key(&id) {
            id = id.wrapping_add(1);
        }
        conn.next_id.set(id.wrapping_add(1));
        let mut msg = query.to_vec();
        msg[0..2].copy_from_slice(&id.to_be_bytes());
        pad_query(&mut msg);
        let client_id = u16::from_be_bytes([query[0], query[1]]);
        conn.slots.borrow_mut().insert(id, Slot::new(client_id));
        let _guard =
            SlotGuard { slots: &conn.slots, key: id, last_active: &conn.last_active, now: || self.reactor.now() };
        conn.session.borrow_mut().send(&msg)?;
        self.stats.upstream_dot.bump();
        conn.wake_driver();
        let fair_test = *conn.state.borrow() == State::Open && timeout >= self.settings.handshake_timeout;
        let sent = (self.reactor.now(), timeout);
        conn.wiring
            .wait_answer(&self.reactor, &conn.slots, &id, sent, fair_test, || {
                conn.fail(TransportFailure::Stalled);
                conn.wake_driver();
            })
            .await
    }

    /// Whether no connection is pooled (tests).
    #[cfg(test)]
    fn pool_is_empty(&self) -> bool {
        self.pool.is_empty()
    }

    /// Closes connections idle longer than the idle timeout.
    pub(crate) fn sweep_idle(&self, now: Instant) {
        self.pool.sweep_idle(now, self.settings.idle_timeout);
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::upstream::sessions::SessionStore;

    /// Runs the worker's reactor and executor until `done` holds or `limit` passes.
    fn run_until(
        poll: &mut mio::Poll,
        reactor: &Reactor,
        executor: &Executor,
        limit: Duration,
        done: impl Fn() -> bool,
    ) {
        let mut events = mio::Events::with_capacity(64);
        let end = Instant::now() + limit;
        while !done() && Instant::now() < end {
            let timeout = reactor.next_timeout().unwrap_or(Duration::from_millis(10)).min(Duration::from_millis(10));
            let _ = poll.poll(&mut events, Some(timeout));
            reactor.set_now(Instant::now());
            for ev in events.iter() {
                reactor.wake_io(ev.token().0);
            }
            reactor.fire_timers();
            executor.run_ready();
        }
    }

    /// A server that accepts TCP and never answers the ClientHello holds its address only
    /// until the handshake deadline: the query fails, and the next one opens a fresh
    /// connection (it once reused the stuck one until restart, blackholing the server).
    #[test]
    fn a_stalled_handshake_is_dropped_and_replaced() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming().flatten().take(4) {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(s); // never read, never written
            }
            std::thread::sleep(Duration::from_secs(5));
        });
        let mut poll = mio::Poll::new().unwrap();
        let reactor = Rc::new(Reactor::new(poll.registry().try_clone().unwrap()));
        let executor = Rc::new(Executor::default());
        let tls = TlsConfigs::new(
            b"dot",
            Arc::new(crate::upstream::tls::builtin_roots()),
            Arc::new(SessionStore::new(16)),
            Arc::new(SessionStore::new(16)),
            Arc::default(),
            "tcp",
        )
        .unwrap();
        let settings = ConnectionLimits {
            idle_timeout: Duration::from_secs(30),
            max_outstanding: 16,
            handshake_timeout: Duration::from_millis(300),
            max_connections: 16,
        };
        let probes = Arc::new(crate::upstream::probe::ProbeTable::new(
            16,
            crate::upstream::probe::ProbeWindows {
                persistence: Duration::from_secs(60),
                damping: Duration::from_secs(60),
            },
        ));
        let driver = DotDriver::new(
            reactor.clone(),
            executor.clone(),
            tls,
            Arc::new(WorkerStats::default()),
            probes,
            crate::worker::Outgoing::default(),
            settings,
        );
        let key = DotKey { server, auth: PeerAuth::None };
        let query = [0xAB, 0xCD, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
        type Outcomes = Rc<RefCell<Vec<Result<Vec<u8>, UpstreamError>>>>;
        let results: Outcomes = Rc::default();
        let ask = |timeout_ms: u64| {
            let (driver, key, results) = (driver.clone(), key.clone(), results.clone());
            executor.spawn(async move {
                let r = driver.exchange(key, &query, Duration::from_millis(timeout_ms)).await;
                results.borrow_mut().push(r);
            });
        };
        // A first query: it times out, and at the handshake deadline the connection goes.
        ask(200);
        run_until(&mut poll, &reactor, &executor, Duration::from_secs(3), || {
            results.borrow().len() == 1 && driver.pool_is_empty()
        });
        assert_eq!(results.borrow()[0], Err(UpstreamError::Timeout));
        assert!(driver.pool_is_empty(), "the stuck connection was dropped");
        // The next query opens a new connection instead of waiting on the stuck one.
        ask(200);
        run_until(&mut poll, &reactor, &executor, Duration::from_secs(3), || results.borrow().len() == 2);
        run_until(&mut poll, &reactor, &executor, Duration::from_millis(100), || accepted.load(Ordering::SeqCst) >= 2);
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "a fresh connection for the second query");
    }
}
