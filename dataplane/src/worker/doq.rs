//! DoQ connections of one worker (RFC 9250): QUIC through quinn-proto's sans-IO state
//! machine, driven by a task on the worker's own reactor (no second runtime). One
//! connection per (server address, authenticated name) with its own connected UDP socket
//! and quinn endpoint; one client-initiated bidirectional stream per query, 2-octet length
//! prefix, DNS message ID 0 on the wire (restored for the resolver), the connection closed
//! with DOQ_NO_ERROR when idle.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::Interest;
use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, Dir, Endpoint, EndpointConfig, Event, StreamEvent, StreamId,
};

use super::exec::{Executor, Reactor, until};
use super::slots::{OpenCount, Slot, SlotGuard, Slots, fail_all, forget, spawn_driver, wait};
use crate::resolver::UpstreamError;
use crate::stats::WorkerStats;
use adox_api::policy::Transport;

/// RFC 9250 section 4.3 error codes.
pub(crate) mod code {
    /// No error: used when closing an idle connection.
    pub(crate) const DOQ_NO_ERROR: u32 = 0x0;
    /// The peer violated the DoQ protocol.
    pub(crate) const DOQ_PROTOCOL_ERROR: u32 = 0x2;
}

/// Largest UDP datagram read from the server.
const MAX_DATAGRAM: usize = 65_535;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DoqKey {
    pub(crate) server: SocketAddr,
    /// How the server is authenticated (connections are never shared across these).
    pub(crate) auth: crate::resolver::PeerAuth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshaking,
    Open,
    Closing,
    Failed(&'static str),
}

struct Conn {
    endpoint: RefCell<Endpoint>,
    conn: RefCell<Connection>,
    handle: ConnectionHandle,
    sock: RefCell<mio::net::UdpSocket>,
    token: usize,
    slots: Slots<StreamId>,
    state: Cell<State>,
    driver: RefCell<Option<Waker>>,
    last_active: Cell<Instant>,
    /// Queries waiting to open a stream (before the handshake, or at the stream limit).
    open_waiters: RefCell<Vec<Waker>>,
    /// Receive and transmit buffers, kept across drives (no allocation per datagram).
    rbuf: RefCell<Vec<u8>>,
    tbuf: RefCell<Vec<u8>>,
    /// The server (the socket is connected to it: the kernel drops anything else).
    remote: SocketAddr,
    /// The name the handshake authenticated (or the address, unauthenticated), lowercase.
    sni: String,
    /// Whether the handshake resumed a TLS session.
    resumed: Cell<bool>,
    /// When the driver's timer is set to fire next.
    armed: Cell<Option<Instant>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoqConn").field("state", &self.state.get()).finish()
    }
}

impl Conn {
    fn wake_driver(&self) {
        if let Some(w) = self.driver.borrow().as_ref() {
            w.wake_by_ref();
        }
    }

    /// Wakes the queries waiting to open a stream (streams became available, or the
    /// connection failed and they must see it).
    fn wake_openers(&self) {
        for w in self.open_waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    fn fail(&self, reason: &'static str) {
        self.state.set(State::Failed(reason));
        self.wake_openers();
        fail_all(&self.slots, reason);
    }

    /// Feeds datagrams, timers and events through quinn and sends what it wants sent.
    /// Ready when the connection is over.
    fn drive(&self, now: Instant, stats: &WorkerStats, reactor: &Reactor, waker: &Waker) -> Poll<()> {
        if matches!(self.state.get(), State::Failed(_)) {
            return Poll::Ready(());
        }
        let mut conn = self.conn.borrow_mut();
        let mut endpoint = self.endpoint.borrow_mut();
        let sock = self.sock.borrow();
        let mut buf = self.rbuf.borrow_mut();
        let mut response = self.tbuf.borrow_mut();
        response.clear();
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    let remote = self.remote;
                    let data = BytesMut::from(&buf[..n]);
                    match endpoint.handle(now, remote, None, None, data, &mut response) {
                        Some(quinn_proto::DatagramEvent::ConnectionEvent(_, ev)) => conn.handle_event(ev),
                        Some(quinn_proto::DatagramEvent::Response(t)) => {
                            let _ = sock.send(&response[..t.size]);
                        }
                        _ => {}
                    }
                    response.clear();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    drop((conn, endpoint, sock, buf, response));
                    self.fail("refused");
                    return Poll::Ready(());
                }
                Err(_) => break,
            }
        }
        if conn.poll_timeout().is_some_and(|t| t <= now) {
            conn.handle_timeout(now);
        }
        while let Some(ev) = conn.poll_endpoint_events() {
            if let Some(back) = endpoint.handle_event(self.handle, ev) {
                conn.handle_event(back);
            }
        }
        let mut lost: Option<&'static str> = None;
        let mut streams_available = false;
        while let Some(ev) = conn.poll() {
            match ev {
                Event::Stream(StreamEvent::Available { dir: Dir::Bi }) => streams_available = true,
                Event::Connected => {
                    streams_available = true;
                    if self.state.get() == State::Handshaking {
                        self.state.set(State::Open);
                        stats.doq_handshakes.bump();
                        // quinn reports no handshake kind: a resumed TLS 1.3 handshake is
                        // one that verified no certificate (see `tls::take_verified`).
                        if crate::transport::tls::take_verified(&self.sni) {
                            stats.tls_full.bump();
                        } else {
                            self.resumed.set(true);
                            stats.tls_resumed.bump();
                        }
                    }
                }
                Event::ConnectionLost { reason } => {
                    lost = Some(match reason {
                        quinn_proto::ConnectionError::TimedOut => "timeout",
                        quinn_proto::ConnectionError::TransportError(_) => "quic-transport-error",
                        quinn_proto::ConnectionError::ConnectionClosed(_) => "closed",
                        quinn_proto::ConnectionError::ApplicationClosed(_) => "closed",
                        _ => "quic-error",
                    });
                }
                Event::Stream(StreamEvent::Readable { id }) => self.read_stream(&mut conn, id),
                _ => {}
            }
        }
        // Streams whose answer may have arrived without a Readable event of their own.
        let ids: Vec<StreamId> = self.slots.borrow().keys().copied().collect();
        for id in ids {
            self.read_stream(&mut conn, id);
        }
        loop {
            response.clear();
            match conn.poll_transmit(now, 1, &mut response) {
                Some(t) => {
                    let _ = sock.send(&response[..t.size]);
                }
                None => break,
            }
        }
        // One armed timer per connection: a new one only when quinn wants to be woken
        // earlier than the armed one (timers re-armed on every drive piled up by the
        // tens of thousands).
        if self.armed.get().is_some_and(|a| a <= now) {
            self.armed.set(None);
        }
        if let Some(t) = conn.poll_timeout()
            && self.armed.get().is_none_or(|a| t < a)
        {
            self.armed.set(Some(t));
            reactor.wake_at(t, waker);
        }
        if streams_available {
            self.wake_openers();
        }
        let done = conn.is_drained() || (self.state.get() == State::Closing && conn.is_closed());
        drop((conn, endpoint, sock, buf, response));
        if let Some(reason) = lost {
            self.fail(reason);
            return Poll::Ready(());
        }
        if done { Poll::Ready(()) } else { Poll::Pending }
    }

    /// Reads what stream `id` has; a complete answer (FIN seen) goes to its slot.
    fn read_stream(&self, conn: &mut Connection, id: StreamId) {
        let mut slots = self.slots.borrow_mut();
        let Some(slot) = slots.get_mut(&id) else { return };
        if slot.done() {
            return;
        }
        let mut recv = conn.recv_stream(id);
        let Ok(mut chunks) = recv.read(true) else { return };
        let mut finished = false;
        let mut reset = None;
        loop {
            match chunks.next(usize::MAX) {
                Ok(Some(chunk)) => slot.buf.extend_from_slice(&chunk.bytes),
                Ok(None) => {
                    finished = true;
                    break;
                }
                Err(quinn_proto::ReadError::Blocked) => break,
                Err(quinn_proto::ReadError::Reset(code)) => {
                    reset = Some(code);
                    break;
                }
            }
        }
        let _ = chunks.finalize();
        let result = if let Some(code) = reset {
            Some(Err(UpstreamError::Tls(if u64::from(code) == 0x1 {
                "doq-internal-error"
            } else {
                "doq-stream-reset"
            })))
        } else if finished {
            let answer = answer_of(&slot.buf, slot.client_id);
            if answer.is_err() {
                // RFC 9250 section 4.3: a malformed answer is a protocol error of the peer.
                conn.close(
                    Instant::now(),
                    quinn_proto::VarInt::from_u32(code::DOQ_PROTOCOL_ERROR),
                    bytes::Bytes::new(),
                );
            }
            Some(answer)
        } else {
            None
        };
        if let Some(r) = result {
            slot.complete(r);
            self.last_active.set(Instant::now());
        }
    }
}

/// The DNS answer in a finished stream (2-octet length, then the message), with the
/// resolver's ID put back in place of the 0 DoQ uses (RFC 9250 section 4.2.1).
pub(crate) fn answer_of(buf: &[u8], client_id: u16) -> Result<Vec<u8>, UpstreamError> {
    if buf.len() < 2 {
        return Err(UpstreamError::BadResponse("empty DoQ stream"));
    }
    let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
    if buf.len() != 2 + len || len < 12 {
        return Err(UpstreamError::BadResponse("DoQ stream length mismatch"));
    }
    let mut msg = buf[2..].to_vec();
    if msg[0..2] != [0, 0] {
        return Err(UpstreamError::BadResponse("DoQ answer with a nonzero message ID"));
    }
    msg[0..2].copy_from_slice(&client_id.to_be_bytes());
    Ok(msg)
}

/// The two QUIC client configurations (ALPN doq, TLS 1.3, shared session store).
#[derive(Clone)]
pub(crate) struct DoqConfigs {
    pub(crate) unauthenticated: ClientConfig,
    pub(crate) pkix: ClientConfig,
    pub(crate) dane: ClientConfig,
}

impl std::fmt::Debug for DoqConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DoqConfigs")
    }
}

impl DoqConfigs {
    pub(crate) fn new(tls: &crate::transport::tls::TlsConfigs, idle: Duration) -> Option<Self> {
        let make = |cfg: &Arc<rustls::ClientConfig>| -> Option<ClientConfig> {
            let quic = quinn_proto::crypto::rustls::QuicClientConfig::try_from(cfg.clone()).ok()?;
            let mut c = ClientConfig::new(Arc::new(quic));
            let mut transport = quinn_proto::TransportConfig::default();
            transport.max_idle_timeout(quinn_proto::IdleTimeout::try_from(idle.max(Duration::from_secs(1))).ok());
            c.transport_config(Arc::new(transport));
            Some(c)
        };
        Some(Self { unauthenticated: make(&tls.unauthenticated)?, pkix: make(&tls.pkix)?, dane: make(&tls.dane)? })
    }
}

/// The worker's DoQ connections.
#[derive(Debug)]
pub(crate) struct DoqPool {
    reactor: Rc<Reactor>,
    executor: Rc<Executor>,
    configs: Option<DoqConfigs>,
    stats: Arc<WorkerStats>,
    /// Per-server connection counts live in the shared probe table.
    shared: Arc<crate::resolver::Shared>,
    idle_timeout: Duration,
    conns: RefCell<HashMap<DoqKey, Rc<Conn>>>,
}

impl DoqPool {
    pub(crate) fn new(
        reactor: Rc<Reactor>,
        executor: Rc<Executor>,
        configs: Option<DoqConfigs>,
        stats: Arc<WorkerStats>,
        shared: Arc<crate::resolver::Shared>,
        idle_timeout: Duration,
    ) -> Rc<Self> {
        Rc::new(Self { reactor, executor, configs, stats, shared, idle_timeout, conns: RefCell::new(HashMap::new()) })
    }

    fn connect(self: &Rc<Self>, key: &DoqKey) -> Result<Rc<Conn>, UpstreamError> {
        let configs = self.configs.as_ref().ok_or(UpstreamError::Tls("doq-unavailable"))?;
        use crate::resolver::PeerAuth;
        let host = |n: &hickory_proto::rr::Name| n.to_ascii().trim_end_matches('.').to_string();
        let (config, name) = match &key.auth {
            PeerAuth::Pkix(n) => (configs.pkix.clone(), host(n)),
            PeerAuth::Dane(n) => (configs.dane.clone(), host(n)),
            PeerAuth::None => (configs.unauthenticated.clone(), key.server.ip().to_string()),
        };
        let io_err = |e: io::Error| UpstreamError::Io(e.kind().to_string());
        let bind: SocketAddr = if key.server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let mut sock = mio::net::UdpSocket::bind(bind).map_err(io_err)?;
        sock.connect(key.server).map_err(io_err)?;
        let mut endpoint = Endpoint::new(Arc::new(EndpointConfig::default()), None, true, None);
        let now = self.reactor.now();
        let (handle, conn) =
            endpoint.connect(now, config, key.server, &name).map_err(|_| UpstreamError::Tls("quic-connect"))?;
        let token = self.reactor.register_source(&mut sock, Interest::READABLE).map_err(io_err)?;
        let conn = Rc::new(Conn {
            endpoint: RefCell::new(endpoint),
            conn: RefCell::new(conn),
            handle,
            sock: RefCell::new(sock),
            token,
            slots: RefCell::new(HashMap::new()),
            state: Cell::new(State::Handshaking),
            driver: RefCell::new(None),
            last_active: Cell::new(now),
            open_waiters: RefCell::new(Vec::new()),
            rbuf: RefCell::new(vec![0u8; MAX_DATAGRAM]),
            remote: key.server,
            sni: name.to_ascii_lowercase(),
            resumed: Cell::new(false),
            armed: Cell::new(None),
            tbuf: RefCell::new(Vec::with_capacity(1500)),
        });
        self.conns.borrow_mut().insert(key.clone(), conn.clone());
        let (pool, driven, key) = (self.clone(), conn.clone(), key.clone());
        let (driving, reactor, stats) = (conn.clone(), self.reactor.clone(), self.stats.clone());
        let count = OpenCount::new(self.shared.clone(), key.server.ip(), Transport::Doq);
        spawn_driver(
            &self.executor,
            self.reactor.clone(),
            token,
            move |waker| {
                *driving.driver.borrow_mut() = Some(waker.clone());
                let poll = driving.drive(reactor.now(), &stats, &reactor, waker);
                // quinn does not report resumption: every DoQ handshake counts as full.
                count.observe(driving.state.get() == State::Open, || driving.resumed.get());
                poll
            },
            move || {
                forget(&pool.conns, &key, &driven);
                pool.reactor.deregister(&mut *driven.sock.borrow_mut(), driven.token);
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
        let existing = self.conns.borrow().get(&key).cloned();
        let conn = match existing {
            Some(c) if matches!(c.state.get(), State::Handshaking | State::Open) => c,
            _ => self.connect(&key)?,
        };
        let at = self.reactor.now() + timeout;
        // Before the handshake completes (or at the peer's stream limit) no stream can be
        // opened yet: wait for the driver to say streams may be available.
        let opened = until(&self.reactor, at, async {
            std::future::poll_fn(|cx| {
                if let State::Failed(reason) = conn.state.get() {
                    return Poll::Ready(Err(UpstreamError::Tls(reason)));
                }
                match conn.conn.borrow_mut().streams().open(Dir::Bi) {
                    Some(id) => Poll::Ready(Ok(id)),
                    None => {
                        // The driver wakes us when the handshake completes or streams free up.
                        conn.open_waiters.borrow_mut().push(cx.waker().clone());
                        Poll::Pending
                    }
                }
            })
            .await
        })
        .await;
        let id = opened.unwrap_or(Err(UpstreamError::Timeout))?;
        let mut msg = query.to_vec();
        // RFC 9250 section 4.2.1: the message ID is 0 on the wire.
        msg[0..2].copy_from_slice(&[0, 0]);
        let mut frame = (msg.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(&msg);
        {
            let mut c = conn.conn.borrow_mut();
            let mut send = c.send_stream(id);
            let written = send.write(&frame).map_err(|_| UpstreamError::Tls("doq-write"))?;
            if written != frame.len() {
                return Err(UpstreamError::Tls("doq-flow-control"));
            }
            send.finish().map_err(|_| UpstreamError::Tls("doq-write"))?;
        }
        let client_id = u16::from_be_bytes([query[0], query[1]]);
        conn.slots.borrow_mut().insert(id, Slot::new(client_id));
        let _guard = SlotGuard { slots: &conn.slots, key: id, last_active: &conn.last_active };
        self.stats.upstream_doq.bump();
        conn.wake_driver();
        wait(&self.reactor, at, &conn.slots, &id).await
    }

    /// Closes idle connections with DOQ_NO_ERROR.
    pub(crate) fn sweep_idle(&self, now: Instant) {
        for conn in self.conns.borrow().values() {
            let idle = conn.slots.borrow().is_empty()
                && now.saturating_duration_since(conn.last_active.get()) > self.idle_timeout;
            if idle && conn.state.get() == State::Open {
                conn.state.set(State::Closing);
                conn.conn.borrow_mut().close(
                    now,
                    quinn_proto::VarInt::from_u32(code::DOQ_NO_ERROR),
                    bytes::Bytes::new(),
                );
                conn.wake_driver();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_need_id_zero_and_exact_length() {
        let mut buf = vec![0, 12];
        buf.extend_from_slice(&[0, 0, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&answer_of(&buf, 0xABCD).unwrap()[0..2], &[0xAB, 0xCD]);
        let mut nonzero = buf.clone();
        nonzero[2] = 1;
        assert!(answer_of(&nonzero, 1).is_err());
        assert!(answer_of(&buf[..10], 1).is_err());
        let mut long = buf.clone();
        long.push(0);
        assert!(answer_of(&long, 1).is_err());
        assert_eq!(code::DOQ_PROTOCOL_ERROR, 2);
    }
}
